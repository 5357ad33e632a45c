using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Text.Json;
using Custos.Controls;
using Custos.Errors;
using Custos.Gateway.Hosting;
using Custos.Gateway.Identity;
using Custos.Gateway.Ledger;
using Custos.Gateway.Policy;
using Custos.Hashing;
using Custos.Identity;
using Custos.Ledger;
using Custos.Metering;
using Custos.Policy;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;
using Microsoft.Net.Http.Headers;
using Yarp.ReverseProxy.Forwarder;

namespace Custos.Gateway.Pipeline;

/// <summary>
/// The data plane: Authenticate → Parse → Admit → Forward → Meter → Record, for every model request.
/// Each request reads the policy snapshot once, and yields exactly one ledger record, whatever happens.
/// </summary>
internal sealed partial class DataPlane(
    ActivePolicy policy,
    LedgerWriter ledger,
    IHttpForwarder forwarder,
    HttpMessageInvoker upstreamClient,
    ICounterStore counters,
    TimeProvider time,
    string nodeId,
    JwtAuthenticator jwt,
    ILogger<DataPlane> logger)
{
    private static readonly ConditionalWeakTable<ProviderEntry, Uri[]> UpstreamUris = new();
    private readonly InFlightCalls _calls = new(policy, logger);
    private int _inFlight;

    /// <summary>
    /// Cuts every call to a provider still running (<see cref="InFlightCalls.CutAll"/>) for <paramref name="reason"/>: the
    /// gateway stops, and what outlived its drain time ends now with the gateway's error, on record, rather than be
    /// dropped when the listener closes its connections. Returns how many it cut.
    /// </summary>
    internal int CutInFlight(ReasonCode reason) => _calls.CutAll(reason);

    /// <summary>
    /// The longest <c>X-Custos-Agent-Run</c> or <c>X-On-Behalf-Of</c> recorded: each names an agent run or a person, is
    /// kept in every ledger entry and keys the agent fan-out detector, so a caller may not make it as large as Kestrel's
    /// header limit allows.
    /// </summary>
    internal const int MaxIdentifyingHeaderLength = 256;

    public async Task InvokeAsync(HttpContext context)
    {
        var started = Stopwatch.GetTimestamp();
        var snapshot = policy.Current;
        var request = context.Request;
        var now = time.GetUtcNow();
        (string Name, string Problem)? badHeader = null;
        var record = new RequestRecord
        {
            RequestId = RequestId.New(now),
            NodeId = nodeId,
            Method = request.Method,
            Endpoint = RecordedText.Of(request.Path.Value) ?? "/", // as sent, but no secret and not without end
            Timestamp = now,
            PolicyVersion = snapshot.Version,
            PolicyHash = snapshot.Hash,
            ClientAddress = context.Connection.RemoteIpAddress?.ToString(),
            AgentRun = IdentifyingHeader(request.Headers, Headers.AgentRun, ref badHeader),
            OnBehalfOf = IdentifyingHeader(request.Headers, Headers.OnBehalfOf, ref badHeader),
        };
        context.Response.Headers[Headers.RequestId] = record.RequestId;

        UpstreamCall? call = null;
        var inFlight = Interlocked.Increment(ref _inFlight);
        try
        {
            call = await HandleAsync(context, snapshot, record, inFlight, badHeader);
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or BadHttpRequestException && context.RequestAborted.IsCancellationRequested)
        {
            record.Fail(Reasons.ClientCancelled, Outcome.Cancelled);
            record.Status = Reasons.ClientCancelled.Status;
            ProtocolRefusals.MarkClientGone(context);
        }
        catch (BadHttpRequestException ex) when (ex.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            await DenyAsync(context, record, Reasons.BodyTooLarge);
        }
        catch (BadHttpRequestException ex) when (IsClientGone(ex))
        {
            // The client hung up before sending its whole body; Kestrel reports that before RequestAborted fires.
            record.Fail(Reasons.ClientCancelled, Outcome.Cancelled);
            record.Status = Reasons.ClientCancelled.Status;
            ProtocolRefusals.MarkClientGone(context);
        }
        catch (BadHttpRequestException ex) when (ex.StatusCode == StatusCodes.Status408RequestTimeout)
        {
            // Below Kestrel's minimum data rate (240 bytes a second) once its grace period (5 s) passed.
            await DenyAsync(context, record, Reasons.BodyTimeout);
        }
        catch (BadHttpRequestException)
        {
            // Kestrel's other refusals while reading the body: malformed chunked framing and the like.
            await DenyAsync(context, record, Reasons.InvalidBody);
        }
        catch (Exception ex)
        {
            Log.Unexpected(logger, record.RequestId, ex);
            record.Fail(Reasons.Internal, Outcome.Failed);
            record.Status = Reasons.Internal.Status;
            await ErrorResponses.WriteAsync(context, Reasons.Internal, record.RequestId, IsAnthropic(record));
        }
        finally
        {
            var elapsed = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
            record.GatewayMs = elapsed - (record.UpstreamMs ?? 0);
            if (record.Status == 0)
            {
                record.Status = context.Response.StatusCode;
            }

            if (record.ResponseBytes == 0 && !HttpMethods.IsHead(record.Method))
            {
                // A body the gateway wrote itself (a refusal, an error in place of the provider's, the model list) is
                // what the client was sent; it was recorded as 0 bytes. A HEAD's is not sent (the server drops it).
                record.ResponseBytes = HeldBody.LengthOf(context);
            }

            // No response without its evidence: the bytes held back (the end of a body, of a stream's final event) are
            // written only once the record is durable, stored or spooled, and a chunked response ends only after this
            // block. Should the record not become durable, the connection is aborted: the client never holds a complete
            // response that is not recorded. Shed requests never wait: shedding must stay cheap.
            var durable = true;
            try
            {
                if (record.Reasons is [var reason] && (reason == Reasons.LedgerBacklog.Code || reason == Reasons.Overloaded.Code || reason == Reasons.LedgerUnavailable.Code))
                {
                    ledger.RecordShed(record);
                }
                else
                {
                    try
                    {
                        await ledger.RecordAsync(record);
                    }
                    catch (Exception ex)
                    {
                        durable = false;
                        Log.NotRecorded(logger, record.RequestId, ex);
                        context.Abort();
                    }
                }

                if (durable)
                {
                    await ReleaseHeldAsync(context, call?.Body);
                }
            }
            finally
            {
                call?.Dispose();
                Interlocked.Decrement(ref _inFlight);
            }
        }
    }

    private static async Task ReleaseHeldAsync(HttpContext context, MeteringStream? body)
    {
        try
        {
            if (body is not null)
            {
                await body.ReleaseAsync(context.RequestAborted);
            }

            await HeldBody.ReleaseAsync(context);
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException)
        {
            // The client left: the record says what it was sent.
        }
    }

    private async Task<UpstreamCall?> HandleAsync(HttpContext context, PolicySnapshot snapshot, RequestRecord record, int inFlight,
        (string Name, string Problem)? badHeader)
    {
        // A request the ledger could not record is refused before any work: the store and the spool both refuse writes.
        if (!ledger.IsHealthy)
        {
            context.Response.Headers.RetryAfter = "1";
            await DenyAsync(context, record, Reasons.LedgerUnavailable);
            return null;
        }

        var request = context.Request;
        var endpoint = ApiEndpoints.Resolve(record.Endpoint);
        if (endpoint == ApiEndpoint.Unknown)
        {
            await DenyAsync(context, record, Reasons.UnknownEndpoint);
            return null;
        }

        if (HttpMethods.IsOptions(request.Method))
        {
            // A capability probe or a CORS preflight: what the endpoint answers, with no credential asked and nothing sent
            // to a provider. No Access-Control-Allow-* header: a browser on another origin is refused as before.
            context.Response.StatusCode = StatusCodes.Status204NoContent;
            context.Response.Headers.Allow = ApiEndpoints.AllowOf(endpoint);
            record.Status = StatusCodes.Status204NoContent;
            return null;
        }

        if (!ApiEndpoints.Accepts(endpoint, request.Method))
        {
            var allowed = ApiEndpoints.MethodOf(endpoint);
            context.Response.Headers.Allow = ApiEndpoints.AllowOf(endpoint);
            await DenyAsync(context, record, Reasons.MethodNotAllowed, $"{record.Endpoint} takes {allowed}, not {request.Method}.");
            return null;
        }

        if (badHeader is { } bad)
        {
            await DenyAsync(context, record, Reasons.InvalidHeader, $"The header '{bad.Name}' {bad.Problem}.", bad.Name);
            return null;
        }

        // Authenticate.
        var credential = Authenticate(request.Headers, snapshot, record, out var authFailure, out var token);
        if (token is not null)
        {
            (credential, authFailure) = await AuthenticateTokenAsync(token, snapshot, record, context.RequestAborted);
        }

        if (credential is null)
        {
            await DenyAsync(context, record, authFailure!);
            return null;
        }

        // Shed under overload, once the caller is known (so the record names who was refused) and before any work
        // that costs memory: reading the body, reserving counters, calling the provider.
        var shed = ledger.IsBacklogged ? Reasons.LedgerBacklog
            : inFlight > snapshot.Gateway.MaxInFlightRequests ? Reasons.Overloaded
            : null;
        if (shed is not null)
        {
            context.Response.Headers.RetryAfter = "1";
            await DenyAsync(context, record, shed);
            return null;
        }

        var consumer = credential.Consumer;
        var tenant = consumer.Service.Tenant;
        if (policy.IsUnconfirmed)
        {
            // This node cannot vouch that its version is the latest: a revocation may be stored elsewhere already.
            if (tenant.FailModes.Revocation == FailMode.Closed)
            {
                context.Response.Headers.RetryAfter = "1";
                await DenyAsync(context, record, Reasons.PolicyUnconfirmed);
                return null;
            }

            record.MarkDegraded("policy_unconfirmed");
        }

        if (endpoint == ApiEndpoint.Models)
        {
            WriteModels(context, consumer, record.Timestamp);
            record.Status = StatusCodes.Status200OK;
            return null;
        }

        if (endpoint == ApiEndpoint.Model)
        {
            // One model of the consumer's list, as OpenAI's "retrieve model" answers it; any other name is the chat's 404.
            // The entry names the model in its endpoint only: a look-up is no use of the model (model.first_use).
            var name = record.Endpoint[ApiEndpoints.ModelPrefix.Length..];
            if (consumer.ModelsAt(record.Timestamp).FirstOrDefault(m => m.Name == name) is not { } listed)
            {
                await DenyAsync(context, record, Reasons.ModelNotFound, $"The model '{name}' does not exist or you do not have access to it.", "model");
                return null;
            }

            WriteModels(context, consumer, record.Timestamp, listed);
            record.Status = StatusCodes.Status200OK;
            return null;
        }

        // Parse.
        if (!IsJson(request.ContentType))
        {
            await DenyAsync(context, record, Reasons.ContentType);
            return null;
        }

        if (!StringValues.IsNullOrEmpty(request.Headers.ContentEncoding) && !IsIdentity(request.Headers.ContentEncoding))
        {
            // Read as it came, a compressed body is no JSON; a JSON body that claims a coding would be read by the
            // gateway one way and by the provider another.
            await DenyAsync(context, record, Reasons.ContentEncoding);
            return null;
        }

        var maxBody = snapshot.Gateway.MaxRequestBodyBytes;
        if (request.ContentLength > maxBody)
        {
            record.RequestBytes = request.ContentLength.Value;
            await DenyAsync(context, record, Reasons.BodyTooLarge, $"The request body is {request.ContentLength} bytes; this gateway accepts at most {maxBody}.");
            return null;
        }

        using var body = new PooledBufferWriter((int)Math.Min(request.ContentLength ?? 16 * 1024, maxBody) + 1);
        if (!await ReadBodyAsync(request.Body, body, maxBody, context.RequestAborted))
        {
            record.RequestBytes = body.WrittenCount;
            await DenyAsync(context, record, Reasons.BodyTooLarge, $"The request body is larger than the {maxBody} bytes this gateway accepts.");
            return null;
        }

        record.RequestBytes = body.WrittenCount;
        if (body.WrittenSpan.StartsWith("\uFEFF"u8))
        {
            // A UTF-8 byte order mark, as some Windows tools write before JSON: not part of the JSON (RFC 8259 lets a parser
            // ignore it), so it is skipped, and the provider gets the JSON without it.
            body.RemovePrefix(3);
        }

        if (InlineIo.ShouldLeaveSocketThread(body.WrittenCount))
        {
            await Task.Yield(); // to the thread pool: parsing and scanning a large body would hold the socket thread's other connections
        }

        var parseError = ChatRequest.TryParse(body.WrittenSpan, out var parsed, responses: endpoint == ApiEndpoint.Responses);
        record.Stream = parsed.Stream && endpoint != ApiEndpoint.Embeddings; // embeddings have no streams: providers ignore it
        record.Model = RecordedText.Of(parsed.Model);
        if (parseError != ParseError.None)
        {
            await (parseError switch
            {
                ParseError.InvalidField => DenyAsync(context, record, Reasons.InvalidField, $"The field '{parsed.ErrorField}' must be {parsed.ErrorExpectation}.", parsed.ErrorField),
                ParseError.DuplicateField => DenyAsync(context, record, Reasons.DuplicateField, $"The field '{parsed.ErrorField}' appears more than once; send it once.", parsed.ErrorField),
                _ => DenyAsync(context, record, Reasons.InvalidJson, parsed.ErrorDetail is { } detail ? $"The request body is not a valid JSON object: {detail}." : null),
            });
            return null;
        }

        record.PromptSha256 = HashPrompt(body.WrittenSpan, parsed.PromptRanges);

        // Admit.
        if (string.IsNullOrEmpty(parsed.Model))
        {
            await DenyAsync(context, record, Reasons.ModelMissing, param: "model");
            return null;
        }

        if (!tenant.Models.TryGetValue(parsed.Model, out var route))
        {
            await DenyAsync(context, record, Reasons.ModelNotFound, $"The model '{record.Model}' does not exist or you do not have access to it.", "model");
            return null;
        }

        record.ModelServed = route.UpstreamModel;
        record.Provider = route.Provider.Id;
        record.MaxOutputTokens = parsed.MaxOutputTokens;
        // A legacy completion generates best_of (or n) for each of its prompts, and is billed for all of them.
        record.N = endpoint == ApiEndpoint.Completions ? parsed.CompletionChoices : parsed.N;
        if (!Serves(route, endpoint))
        {
            await DenyAsync(context, record, Reasons.ModelWrongEndpoint,
                $"The model '{parsed.Model}' (kind {PolicyNames.Of(route.Kind)}, provider '{route.Provider.Id}' of type {PolicyNames.Of(route.Provider.Kind)}) does not serve {record.Endpoint}.", "model");
            return null;
        }

        // Admit: every control of the snapshot, reserving the worst case against rate limits, quotas and budgets.
        var admission = await AdmissionEvaluator.EvaluateAsync(new AdmissionRequest
        {
            Consumer = consumer,
            Route = route,
            Now = record.Timestamp,
            InputTokens = consumer.CountsInput ? TokenCounter.CountPrompt(parsed) : 0,
            MaxOutputTokens = parsed.MaxOutputTokens,
            N = record.N ?? 1,
            Prompt = parsed,
        }, counters, context.RequestAborted);
        record.Controls = admission.Controls;
        if (admission.Degraded)
        {
            record.MarkDegraded("counters");
        }

        if (admission.RequestRate is not null || admission.TokenRate is not null)
        {
            WriteRateLimitHeaders(context.Response.Headers, admission, record.Timestamp, endpoint == ApiEndpoint.Messages);
        }

        if (admission.Decision != Decision.Allow)
        {
            if (admission.RetryAfter is { } retryAfter)
            {
                context.Response.Headers.RetryAfter = Math.Max(1, (int)Math.Ceiling(retryAfter.TotalSeconds)).ToString(System.Globalization.CultureInfo.InvariantCulture);
            }

            await DenyAsync(context, record, admission.Reason!, admission.Message, admission.Param);
            return null;
        }

        foreach (var evt in admission.Events)
        {
            Log.SoftLimit(logger, record.RequestId, evt);
        }

        try
        {
            return await ForwardAsync(context, snapshot, record, route, endpoint, parsed, body, admission);
        }
        finally
        {
            await AdmissionEvaluator.SettleAsync(admission, counters, record.InputTokens ?? 0, record.OutputTokens ?? 0, record.Cost ?? 0);
        }
    }

    private async Task<UpstreamCall?> ForwardAsync(HttpContext context, PolicySnapshot snapshot, RequestRecord record, ModelRoute route,
        ApiEndpoint endpoint, ChatRequest parsed, PooledBufferWriter body, Admission admission)
    {
        var request = context.Request;
        if (route.Provider.IsMissingKey)
        {
            Log.UpstreamKeyMissing(logger, route.Provider.Id);
            record.Fail(Reasons.UpstreamNotConfigured, Outcome.UpstreamError);
            record.Status = Reasons.UpstreamNotConfigured.Status;
            await ErrorResponses.WriteAsync(context, Reasons.UpstreamNotConfigured, record.RequestId, IsAnthropic(record));
            return null;
        }

        // Forward, metering the response on its way back.
        // A Responses API stream always ends with its usage (response.completed): there is no include_usage to ask for.
        var forceUsage = parsed.Stream && route.Provider.Kind == ProviderKind.OpenAI && endpoint is ApiEndpoint.ChatCompletions or ApiEndpoint.Completions;
        var edits = admission.Edits;
        parsed.AddEdits(body.WrittenSpan, route.UpstreamModel, forceUsage, endpoint == ApiEndpoint.Embeddings ? null : admission.OutputCeiling, edits,
            completionTokensField: endpoint == ApiEndpoint.ChatCompletions);
        PooledBufferWriter? rewritten = null;
        if (edits.Count > 0)
        {
            rewritten = new PooledBufferWriter(body.WrittenCount + 256);
            BodyEdits.Apply(body.WrittenSpan, edits, rewritten);
        }

        using var rewrittenScope = rewritten;
        var upstreamBody = rewritten ?? body;
        // The body is read whole, so it goes upstream as one content: HttpClient sends it with the headers in one write,
        // where YARP's streamed copy would flush the headers first (a write of their own per request).
        context.Features.Set<IHttpRequestBodyDetectionFeature>(BodyReadWhole.Instance);
        request.Headers.Remove(HeaderNames.TransferEncoding);

        var meter = new ResponseMeter(route.Provider.Kind, record.Stream, hideInjectedUsage: forceUsage && parsed.IncludeUsage != true)
        {
            RequestId = record.RequestId,
            ResponsesApi = endpoint == ApiEndpoint.Responses,
        };
        var call = new UpstreamCall(record, route, UpstreamUri(route.Provider, endpoint), meter, endpoint == ApiEndpoint.Messages,
            upstreamBody.WrittenMemory);
        var config = UpstreamCall.DefaultConfig with { ActivityTimeout = snapshot.Gateway.UpstreamTimeout };
        ForwarderError error;
        _calls.Add(call, snapshot); // a kill switch, suspension or revocation that comes into force while it runs cuts it
        try
        {
            error = await forwarder.SendAsync(context, route.Provider.BaseUrl.AbsoluteUri, upstreamClient, config, call, call.CutToken);
        }
        finally
        {
            _calls.Remove(call);
            await call.CloseBodyAsync(); // before the body's buffer goes back to the pool
        }

        var errorException = error == ForwarderError.None ? null : context.Features.Get<IForwarderErrorFeature>()?.Exception;
        if (call.Body is { } meteringBody)
        {
            if (UpstreamCall.GatewayFailed(error, context.RequestAborted.IsCancellationRequested, errorException))
            {
                // The gateway's own stream failed: what the meter still holds was never checked and must not go out, and
                // the error body written below must not go through the meter again.
                meteringBody.Bypass();
            }
            else if (!context.Response.HasStarted && call.Classify(error, context.RequestAborted.IsCancellationRequested, errorException).Reason is not null)
            {
                // Nothing of the provider's answer went out, and it failed: the error written below takes its place (the
                // forwarder may have set its own 502 already). What the meter still holds of the answer, such as a
                // stream's unterminated remainder, must not follow the error, and the error must not be metered.
                meteringBody.Discard();
            }
            else
            {
                try
                {
                    if (call.WasCut)
                    {
                        await meteringBody.InterruptAsync(call.CutReason, context.RequestAborted);
                    }
                    else
                    {
                        await meteringBody.CompleteAsync(context.RequestAborted);
                    }
                }
                catch (Exception ex) when (ex is OperationCanceledException or IOException)
                {
                    // Client gone while the last bytes were written: classified below.
                }
            }
        }

        if (call.StartedAt != 0)
        {
            record.UpstreamMs = Stopwatch.GetElapsedTime(call.StartedAt).TotalMilliseconds;
        }

        var (reason, outcome) = call.Classify(error, context.RequestAborted.IsCancellationRequested, errorException);
        if (reason is not null)
        {
            if (reason == Reasons.Internal)
            {
                Log.Unexpected(logger, record.RequestId, errorException!);
            }

            record.Fail(reason, outcome);
            if (call.WasCut && call.CutReason == Reasons.KilledInFlight)
            {
                record.CutByPolicyVersion = call.CutBy;
            }

            if (!context.Response.HasStarted && reason == Reasons.ClientCancelled)
            {
                record.Status = reason.Status; // no one to answer: no error is written, so none is recorded as sent
            }
            else if (!context.Response.HasStarted && reason != Reasons.UpstreamMalformed)
            {
                record.Status = reason.Status;
                await ErrorResponses.WriteAsync(context, reason, record.RequestId, endpoint == ApiEndpoint.Messages);
            }
            else
            {
                record.Status = context.Response.StatusCode;
            }

            if (meter.StreamError is { } streamError)
            {
                Log.StreamError(logger, record.RequestId, route.Provider.Id, UpstreamCall.Redact(streamError, route.Provider.ApiKey));
            }

            if (outcome == Outcome.UpstreamError && error != ForwarderError.None)
            {
                Log.UpstreamFailed(logger, record.RequestId, route.Provider.Id, error, errorException);
            }
        }
        else
        {
            record.Outcome = outcome;
        }

        Settle(record, route, meter, parsed, endpoint == ApiEndpoint.Embeddings ? null : admission.OutputCeiling ?? parsed.MaxOutputTokens, forwarded: call.StartedAt != 0);
        if (record.TokensEstimated && meter.OutputTokens is { } implausible && record.OutputTokens != implausible)
        {
            Log.ImplausibleUsage(logger, record.RequestId, route.Provider.Id, implausible, record.OutputTokens ?? 0);
        }

        return call;
    }

    /// <summary>
    /// Records tokens and cost: the provider's usage, or the tokenizer's estimate when it reported none, or an output count
    /// the request made impossible: more than the ceiling sent upstream (<paramref name="outputCeiling"/>, per choice) for
    /// every choice. A provider's count of 10¹⁸ output tokens for a request of 50 was charged in full and exhausted its
    /// consumer's budget for the month. Input is taken as reported: the gateway's count of a prompt is an estimate
    /// (providers' tokenizers differ, images are counted at a flat rate), so it bounds nothing. A request the client
    /// cancelled after it went upstream (<paramref name="forwarded"/>), before any answer, is charged its counted input:
    /// the provider read and bills the prompt, so a client timing out again and again would otherwise spend without limit.
    /// </summary>
    private static void Settle(RequestRecord record, ModelRoute route, ResponseMeter meter, ChatRequest parsed, long? outputCeiling, bool forwarded)
    {
        record.ResponseBytes = meter.BytesOut;
        var answered = record.Outcome is Outcome.Completed or Outcome.Interrupted || (record.Outcome == Outcome.Cancelled && meter.BytesOut > 0);
        if (!answered)
        {
            if (forwarded && record.Outcome == Outcome.Cancelled)
            {
                var counted = TokenCounter.CountPrompt(parsed);
                record.InputTokens = counted;
                record.OutputTokens = 0;
                record.TokensEstimated = true;
                record.Cost = route.Cost(counted, 0);
                record.Currency = route.Currency;
            }

            return;
        }

        // With a predicted output, its rejected tokens are billed as output beyond the ceiling: no bound then.
        var most = outputCeiling is { } ceiling && !parsed.HasPrediction ? Saturating.Multiply(ceiling, Math.Max(1, record.N ?? 1)) : long.MaxValue;
        var reportedOutput = meter.OutputTokens is { } count && count <= most ? count : (long?)null;
        long input, output;
        if (meter.InputTokens is { } reportedInput && reportedOutput is { } plausible)
        {
            (input, output) = (reportedInput, plausible);
        }
        else
        {
            input = meter.InputTokens ?? TokenCounter.CountPrompt(parsed);
            output = reportedOutput ?? meter.EstimateOutputTokens();
            record.TokensEstimated = true;
        }

        record.InputTokens = input;
        record.OutputTokens = output;
        // Cached input only as the provider reported it, with the input it is part of.
        var (cached, written) = meter.InputTokens is not null ? (meter.CachedInputTokens ?? 0, meter.CacheWriteInputTokens ?? 0) : (0, 0);
        record.CachedInputTokens = cached > 0 ? cached : null;
        record.CacheWriteInputTokens = written > 0 ? written : null;
        record.Cost = route.Cost(input, output, cached, written);
        record.Currency = route.Currency;
    }

    private static CredentialEntry? Authenticate(IHeaderDictionary headers, PolicySnapshot snapshot, RequestRecord record, out ReasonCode? failure,
        out string? token)
    {
        failure = null;
        token = null;
        ReadOnlySpan<char> presented;
        var authorization = headers.Authorization;
        if (!StringValues.IsNullOrEmpty(authorization))
        {
            var value = authorization.ToString().AsSpan().Trim();
            presented = value.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? value[7..].Trim() : value;

            // Both headers, with different keys: the caller is one or the other, and a proxy or a log on the way may have
            // read the other. The same key in both (some clients send it twice) is one caller.
            if (headers.TryGetValue("x-api-key", out var second) && !StringValues.IsNullOrEmpty(second)
                && !second.ToString().AsSpan().Trim().SequenceEqual(presented))
            {
                failure = Reasons.CredentialAmbiguous;
                return null;
            }
        }
        else if (headers.TryGetValue("x-api-key", out var apiKey) && !StringValues.IsNullOrEmpty(apiKey))
        {
            presented = apiKey.ToString().AsSpan().Trim();
        }
        else
        {
            failure = Reasons.CredentialMissing;
            return null;
        }

        switch (ApiKey.Validate(presented, out var kind))
        {
            case ApiKeyFormatError.NotAKey when snapshot.IdentityProviders.Count > 0 && JwtAuthenticator.LooksLikeJwt(presented):
                token = presented.ToString(); // a workload identity: validated asynchronously (its issuer's keys may need fetching)
                return null;
            case ApiKeyFormatError.NotAKey:
                failure = Reasons.CredentialMalformed;
                return null;
            case ApiKeyFormatError.BadChecksum:
                failure = Reasons.CredentialChecksum;
                return null;
        }

        if (kind != ApiKeyKind.Consumer)
        {
            failure = Reasons.CredentialWrongKind;
            return null;
        }

        if (!snapshot.TryGetCredential(KeyHash.Of(presented), out var credential))
        {
            failure = Reasons.CredentialUnknown;
            return null;
        }

        failure = Admit(credential, record);
        return failure is null ? credential : null;
    }

    private async Task<(CredentialEntry? Credential, ReasonCode? Failure)> AuthenticateTokenAsync(string token, PolicySnapshot snapshot, RequestRecord record,
        CancellationToken cancellationToken)
    {
        var outcome = await jwt.ValidateAsync(token, snapshot.IdentityProviders, cancellationToken);
        if (outcome.Failure is { } failure)
        {
            return (null, failure);
        }

        if (!snapshot.TryGetWorkload(outcome.Provider!.Id, outcome.Subject!, out var credential))
        {
            return (null, Reasons.TokenSubjectUnknown);
        }

        var refusal = Admit(credential, record);
        return refusal is null ? (credential, null) : (null, refusal);
    }

    /// <summary>Names the caller in the record, then refuses a credential that is not active, or whose consumer, service or tenant is switched off.</summary>
    private static ReasonCode? Admit(CredentialEntry credential, RequestRecord record)
    {
        var consumer = credential.Consumer;
        record.CredentialId = credential.Id;
        record.Consumer = consumer.Id;
        record.Category = consumer.CategoryName;
        record.Service = consumer.Service.Id;
        record.Tenant = consumer.Service.Tenant.Id;
        var identity = credential.KeyHash is null; // a workload identity: its refusal says so, not "the API key"
        return credential.Status switch
        {
            CredentialStatus.Revoked => identity ? Reasons.IdentityRevoked : Reasons.CredentialRevoked,
            CredentialStatus.Suspended => identity ? Reasons.IdentitySuspended : Reasons.CredentialSuspended,
            _ when credential.ExpiresAt is { } expires && expires <= record.Timestamp => identity ? Reasons.IdentityExpired : Reasons.CredentialExpired,
            _ => consumer.Refusal,
        };
    }

    private Uri UpstreamUri(ProviderEntry provider, ApiEndpoint endpoint)
    {
        var uris = UpstreamUris.GetValue(provider, static p =>
        [
            null!,
            UpstreamCall.UriFor(p, ApiEndpoint.ChatCompletions),
            UpstreamCall.UriFor(p, ApiEndpoint.Completions),
            UpstreamCall.UriFor(p, ApiEndpoint.Embeddings),
            null!,
            UpstreamCall.UriFor(p, ApiEndpoint.Messages),
            UpstreamCall.UriFor(p, ApiEndpoint.Responses),
        ]);
        return uris[(int)endpoint];
    }

    /// <summary>
    /// Tells the client what its per-minute rate limits leave, in the headers its SDK knows: OpenAI's
    /// <c>x-ratelimit-{limit,remaining,reset}-{requests,tokens}</c> (reset as a duration, <c>17s</c>) or Anthropic's
    /// <c>anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}</c> (reset as an RFC 3339 instant). The numbers are
    /// the admission's own readings: nothing is read again, only formatted.
    /// </summary>
    private static void WriteRateLimitHeaders(IHeaderDictionary headers, Admission admission, DateTimeOffset now, bool anthropic)
    {
        if (admission.RequestRate is { } requests)
        {
            WriteRateLimit(headers, requests, now, anthropic,
                anthropic ? "anthropic-ratelimit-requests-limit" : "x-ratelimit-limit-requests",
                anthropic ? "anthropic-ratelimit-requests-remaining" : "x-ratelimit-remaining-requests",
                anthropic ? "anthropic-ratelimit-requests-reset" : "x-ratelimit-reset-requests");
        }

        if (admission.TokenRate is { } tokens)
        {
            WriteRateLimit(headers, tokens, now, anthropic,
                anthropic ? "anthropic-ratelimit-tokens-limit" : "x-ratelimit-limit-tokens",
                anthropic ? "anthropic-ratelimit-tokens-remaining" : "x-ratelimit-remaining-tokens",
                anthropic ? "anthropic-ratelimit-tokens-reset" : "x-ratelimit-reset-tokens");
        }
    }

    private static void WriteRateLimit(IHeaderDictionary headers, RateLimitHeadroom headroom, DateTimeOffset now, bool anthropic,
        string limit, string remaining, string reset)
    {
        var invariant = System.Globalization.CultureInfo.InvariantCulture;
        headers[limit] = headroom.Limit.ToString(invariant);
        headers[remaining] = headroom.Remaining.ToString(invariant);
        headers[reset] = anthropic
            ? headroom.Reset.UtcDateTime.ToString("yyyy'-'MM'-'dd'T'HH':'mm':'ss'Z'", invariant)
            : string.Create(invariant, $"{Math.Max(0, (long)Math.Ceiling((headroom.Reset - now).TotalSeconds))}s");
    }

    private static bool Serves(ModelRoute route, ApiEndpoint endpoint) => endpoint switch
    {
        ApiEndpoint.ChatCompletions or ApiEndpoint.Completions or ApiEndpoint.Responses => route.Kind == ModelKind.Chat && route.Provider.Kind == ProviderKind.OpenAI,
        ApiEndpoint.Embeddings => route.Kind == ModelKind.Embedding && route.Provider.Kind == ProviderKind.OpenAI,
        ApiEndpoint.Messages => route.Kind == ModelKind.Chat && route.Provider.Kind == ProviderKind.Anthropic,
        _ => false,
    };

    private static async Task<bool> ReadBodyAsync(Stream body, PooledBufferWriter buffer, long max, CancellationToken cancellationToken)
    {
        while (true)
        {
            var memory = buffer.GetMemory(8192);
            var read = await body.ReadAsync(memory, cancellationToken);
            if (read == 0)
            {
                return true;
            }

            buffer.Advance(read);
            if (buffer.WrittenCount > max)
            {
                return false;
            }
        }
    }

    private static string? HashPrompt(ReadOnlySpan<byte> body, List<Range> ranges)
    {
        if (ranges.Count == 0)
        {
            return null;
        }

        Span<byte> hash = stackalloc byte[32];
        Sha256.Hash(body, ranges, hash);
        return Convert.ToHexStringLower(hash);
    }

    private static bool IsJson(string? contentType)
        => contentType is not null
           && ((contentType.StartsWith("application/json", StringComparison.OrdinalIgnoreCase)
                   && (contentType.Length == 16 || contentType[16] is ';' or ' ')) // not application/jsonfoo
               || (MediaTypeHeaderValue.TryParse(contentType, out var media) && media.MediaType.Equals("application/json", StringComparison.OrdinalIgnoreCase)));

    private static bool IsIdentity(StringValues codings)
    {
        foreach (var coding in codings)
        {
            if (!string.Equals(coding?.Trim(), "identity", StringComparison.OrdinalIgnoreCase))
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>True when Kestrel stopped reading because the body ended early: the connection closed mid-request.</summary>
    private static bool IsClientGone(BadHttpRequestException ex)
        => ex.Message.Contains("Unexpected end of request content", StringComparison.Ordinal) || ex.InnerException is IOException;

    /// <summary>
    /// Whether a refusal is written in Anthropic's error shape: on <c>/v1/messages</c> and every path under it
    /// (<c>/v1/messages/count_tokens</c>, <c>/v1/messages/batches</c>), which only Anthropic's SDKs call.
    /// </summary>
    private static bool IsAnthropic(RequestRecord record) =>
        record.Endpoint.StartsWith("/v1/messages", StringComparison.Ordinal)
        && (record.Endpoint.Length == "/v1/messages".Length || record.Endpoint["/v1/messages".Length] == '/');

    /// <summary>
    /// The value of a header that names who or what a call is for (<c>X-Custos-Agent-Run</c>, <c>X-On-Behalf-Of</c>), as
    /// recorded; null when absent, or when longer than <see cref="MaxIdentifyingHeaderLength"/> or holding a control
    /// character: then <paramref name="bad"/> names the header and what is wrong, the request is refused, and the value
    /// is not recorded. An escape sequence or a bell in it reached the gateway's log, alerts and HTML reports as sent.
    /// </summary>
    private static string? IdentifyingHeader(IHeaderDictionary headers, string name, ref (string Name, string Problem)? bad)
    {
        var value = headers[name];
        if (StringValues.IsNullOrEmpty(value))
        {
            return null;
        }

        var text = value.ToString();
        if (text.Length > MaxIdentifyingHeaderLength)
        {
            bad ??= (name, $"is longer than the {MaxIdentifyingHeaderLength} characters this gateway records");
            return null;
        }

        if (RecordedText.IndexOfUnprintable(text) is var at and >= 0)
        {
            bad ??= (name, $"holds a control character (U+{(int)text[at]:X4}, at character {at + 1}); it is recorded as sent, so it must be printable text");
            return null;
        }

        return RecordedText.Of(text); // a key sent as whom a call is for is no less a key
    }

    private static Task DenyAsync(HttpContext context, RequestRecord record, ReasonCode reason, string? message = null, string? param = null)
    {
        record.Fail(reason, Outcome.Denied);
        record.Status = reason.Status;
        return ErrorResponses.WriteAsync(context, reason, record.RequestId, IsAnthropic(record), message, param);
    }

    /// <summary>
    /// The models <paramref name="consumer"/> may use at <paramref name="now"/> (<c>GET /v1/models</c>), or just
    /// <paramref name="one"/>: in Anthropic's shape when the request carries <c>anthropic-version</c>, as Anthropic's SDKs'
    /// <c>models.list()</c> and <c>models.retrieve()</c> send it, in OpenAI's otherwise.
    /// </summary>
    private static void WriteModels(HttpContext context, ConsumerEntry consumer, DateTimeOffset now, ModelRoute? one = null)
    {
        var anthropic = context.Request.Headers.ContainsKey("anthropic-version");
        var response = context.Response;
        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = "application/json";
        using var buffer = new PooledBufferWriter(1024);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            if (one is not null)
            {
                WriteModelObject(writer, consumer, one, anthropic);
            }
            else
            {
                writer.WriteStartObject();
                if (!anthropic)
                {
                    writer.WriteString("object", "list");
                }

                writer.WriteStartArray("data");
                string? first = null, last = null;
                foreach (var model in consumer.ModelsAt(now))
                {
                    WriteModelObject(writer, consumer, model, anthropic);
                    first ??= model.Name;
                    last = model.Name;
                }

                writer.WriteEndArray();
                if (anthropic)
                {
                    // One page holds them all.
                    writer.WriteBoolean("has_more", false);
                    writer.WriteString("first_id", first);
                    writer.WriteString("last_id", last);
                }

                writer.WriteEndObject();
            }
        }

        HeldBody.Hold(context, buffer.WrittenSpan);
    }

    /// <summary>
    /// A model as OpenAI's model object (its name, and who serves it: tenant/provider), or as Anthropic's (its name as
    /// its id and display name).
    /// </summary>
    private static void WriteModelObject(Utf8JsonWriter writer, ConsumerEntry consumer, ModelRoute model, bool anthropic)
    {
        writer.WriteStartObject();
        if (anthropic)
        {
            writer.WriteString("type", "model");
            writer.WriteString("id", model.Name);
            writer.WriteString("display_name", model.Name);
            writer.WriteString("created_at", DateTimeOffset.UnixEpoch);
        }
        else
        {
            writer.WriteString("id", model.Name);
            writer.WriteString("object", "model");
            writer.WriteNumber("created", 0);
            writer.WriteString("owned_by", consumer.Service.Tenant.Id + "/" + model.Provider.Id);
        }

        writer.WriteEndObject();
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 1, Level = LogLevel.Error, Message = "Request {RequestId} failed inside the gateway.")]
        public static partial void Unexpected(ILogger logger, string requestId, Exception exception);

        [LoggerMessage(EventId = 2, Level = LogLevel.Warning, Message = "Request {RequestId} to provider {Provider} failed: {Error}.")]
        public static partial void UpstreamFailed(ILogger logger, string requestId, string provider, ForwarderError error, Exception? exception);

        [LoggerMessage(EventId = 3, Level = LogLevel.Error, Message = "Provider {Provider} has no upstream key: its environment variable is not set.")]
        public static partial void UpstreamKeyMissing(ILogger logger, string provider);

        [LoggerMessage(EventId = 4, Level = LogLevel.Warning, Message = "Request {RequestId}: {Event}.")]
        public static partial void SoftLimit(ILogger logger, string requestId, string @event);

        [LoggerMessage(EventId = 5, Level = LogLevel.Error,
            Message = "Request {RequestId}: its ledger record could not be made durable; the connection was aborted so the client holds no unrecorded response.")]
        public static partial void NotRecorded(ILogger logger, string requestId, Exception exception);

        [LoggerMessage(EventId = 6, Level = LogLevel.Warning,
            Message = "Request {RequestId}: provider {Provider} reported an error in its stream, which the client got as the gateway's: {Error}")]
        public static partial void StreamError(ILogger logger, string requestId, string provider, string error);

        [LoggerMessage(EventId = 7, Level = LogLevel.Warning,
            Message = "Request {RequestId}: provider {Provider} reported {Reported} output tokens, more than the output ceiling sent for every choice allows; recorded and charged the {Estimated} estimated from the output seen.")]
        public static partial void ImplausibleUsage(ILogger logger, string requestId, string provider, long reported, long estimated);
    }
}
