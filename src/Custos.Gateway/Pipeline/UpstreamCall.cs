using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using System.Text.RegularExpressions;
using Custos.Controls;
using Custos.Errors;
using Custos.Ledger;
using Custos.Metering;
using Custos.Policy;
using Microsoft.AspNetCore.Http;
using Microsoft.Net.Http.Headers;
using Yarp.ReverseProxy.Forwarder;

namespace Custos.Gateway.Pipeline;

/// <summary>
/// One forwarded request: the YARP transformer that shapes the upstream request (gateway-owned credential,
/// rewritten body, no client secrets) and the client response (metering, upstream errors replaced by
/// gateway errors with secrets removed). One instance per request holds that request's state.
/// </summary>
internal sealed partial class UpstreamCall(RequestRecord record, ModelRoute route, Uri upstreamUri,
    ResponseMeter meter, bool anthropicErrors, ReadOnlyMemory<byte> body) : HttpTransformer, IDisposable
{
    private const int MaxErrorBody = 64 * 1024;

    private WholeBodyContent? _body;

    public RequestRecord Record { get; } = record;

    public ResponseMeter Meter { get; } = meter;

    public MeteringStream? Body { get; private set; }

    /// <summary>When the upstream request started, as a <see cref="Stopwatch"/> timestamp.</summary>
    public long StartedAt { get; private set; }

    /// <summary>True when the upstream answered with an error status that the gateway replaced.</summary>
    public bool UpstreamFailed { get; private set; }

    /// <summary>True when reading the provider's body failed on the provider's side (its stream broke).</summary>
    public bool UpstreamBroke { get; set; }

    /// <summary>
    /// True when a read of the provider's body was cancelled: by the forwarder's activity timeout (the provider sent nothing
    /// for <c>upstream_timeout_seconds</c>) unless the client went away.
    /// </summary>
    public bool UpstreamStalled { get; set; }

    /// <summary>True when the client's connection has gone (read as the request goes upstream).</summary>
    public bool ClientGone => _clientAborted.IsCancellationRequested;

    private CancellationToken _clientAborted;
    private CutCause? _cut;
    private int _answered;
    private Stream? _upstreamBody;

    // Cancels the provider's request while its answer has not come. Never disposed: with no timer and no linked token it
    // holds nothing to release, and a cut may race the call's end (InFlightCalls reads the calls without a lock).
    private readonly CancellationTokenSource _cutWaiting = new();

    /// <summary>
    /// Passed to the forwarder: cancelled by <see cref="Cut(long, ReasonCode)"/> while the provider has not answered, so that the request
    /// stops at once instead of waiting (minutes, for a long completion, billed all the same) for an answer it would not pass on.
    /// </summary>
    public CancellationToken CutToken => _cutWaiting.Token;

    /// <summary>
    /// The policy version that refused this call's caller while it ran (<see cref="Cut(long, ReasonCode)"/>), or the version in force when
    /// the node's shutdown cut it; 0 while none has. The call ends by it only where <see cref="WasCut"/> says so.
    /// </summary>
    public long CutBy => Volatile.Read(ref _cut)?.Version ?? 0;

    /// <summary>
    /// Why the call was cut: <see cref="Reasons.KilledInFlight"/> (a version refusing its caller) or
    /// <see cref="Reasons.ShuttingDown"/> (the node stopping, its drain time over).
    /// </summary>
    public ReasonCode CutReason => Volatile.Read(ref _cut)?.Reason ?? Reasons.KilledInFlight;

    /// <summary>
    /// True when <see cref="Cut(long, ReasonCode)"/> ended the call: the provider's stream was stopped and the client gets the gateway's
    /// error event (<see cref="Reasons.KilledInFlight"/>) after what it had, or the provider had not answered, its request
    /// was cancelled and the client gets the error in place of the answer. A JSON answer already on its way is complete at
    /// the provider and is let finish.
    /// </summary>
    public bool WasCut { get; private set; }

    /// <summary>
    /// Cuts the call, for a policy version (<paramref name="version"/>) that now refuses its caller: a call still waiting
    /// for the provider's answer has its request cancelled (<see cref="CutToken"/>) and is refused at once; a stream's
    /// read of the provider's body that is waiting ends at once (its connection is closed), and the body ends there for
    /// the forwarder, as if the provider had finished. The first cut counts; any thread may call it.
    /// </summary>
    public void Cut(long version) => Cut(version, Reasons.KilledInFlight);

    /// <summary>
    /// Cuts the call as <see cref="Cut(long)"/> does, for <paramref name="reason"/>: <see cref="Reasons.ShuttingDown"/> when
    /// the node stops and the call outlived its drain time (<paramref name="version"/> the version in force).
    /// </summary>
    public void Cut(long version, ReasonCode reason)
    {
        if (Interlocked.CompareExchange(ref _cut, new CutCause(version, reason), null) is not null)
        {
            return;
        }

        // Against TransformResponseAsync, which marks the answer come and then reads CutBy: one of the two sees the other.
        if (Volatile.Read(ref _answered) == 0)
        {
            WasCut = true;
            _ = _cutWaiting.CancelAsync(); // the forwarder's callbacks run on the pool, not on the thread bringing the version
        }
        else if (Meter.RewritesOutput)
        {
            Volatile.Read(ref _upstreamBody)?.Dispose();
        }
    }

    /// <summary>Notes the provider's body being read, so that <see cref="Cut(long, ReasonCode)"/> can stop a read of it that waits.</summary>
    internal void Observe(Stream upstreamBody) => Volatile.Write(ref _upstreamBody, upstreamBody);

    /// <summary>True, and <see cref="WasCut"/> set, when the call was cut and its body is a stream, which then ends here.</summary>
    internal bool EndsByCut()
    {
        if (CutBy == 0 || !Meter.RewritesOutput)
        {
            return false;
        }

        WasCut = true;
        return true;
    }

    public override async ValueTask TransformRequestAsync(HttpContext httpContext, HttpRequestMessage proxyRequest, string destinationPrefix,
        CancellationToken cancellationToken)
    {
        await base.TransformRequestAsync(httpContext, proxyRequest, destinationPrefix, cancellationToken);
        _clientAborted = httpContext.RequestAborted;
        proxyRequest.RequestUri = WithQuery(upstreamUri, httpContext.Request.QueryString);
        var headers = proxyRequest.Headers;
        // The provider's host, from its URI: the client's Host names the gateway, and HttpClient would send it upstream
        // and present it to the provider's TLS as the server name, which a provider's certificate does not match.
        headers.Host = null;
        // The client's credential and anything else of the client's that is not the provider's business.
        headers.Remove(HeaderNames.Authorization);
        headers.Remove("x-api-key");
        headers.Remove(HeaderNames.Cookie);
        // Where the client is, as it or a proxy before the gateway said: the consumer's network is not the provider's
        // business, and the provider's caller is the gateway, which sends none of these itself.
        headers.Remove("X-Forwarded-For");
        headers.Remove("X-Forwarded-Host");
        headers.Remove("X-Forwarded-Proto");
        headers.Remove("Forwarded");
        headers.Remove("X-Real-IP");
        // Identity, so usage can be read from the body: said outright, as a request without Accept-Encoding accepts any
        // coding (RFC 9110, 12.5.3), and a provider that gzips when it may would go unmetered.
        headers.Remove(HeaderNames.AcceptEncoding);
        headers.TryAddWithoutValidation(HeaderNames.AcceptEncoding, "identity");
        headers.Remove("OpenAI-Organization"); // the provider account billed is the gateway's, as its key is
        headers.Remove("OpenAI-Project");
        headers.Remove(Headers.AgentRun);
        headers.Remove(Headers.OnBehalfOf); // the person a call is for is the ledger's to know, not the provider's
        headers.Remove(Headers.UpstreamRequestId);
        headers.TryAddWithoutValidation(Headers.UpstreamRequestId, Record.RequestId);
        headers.ExpectContinue = null; // the body is all here: no reason to wait for a 100 Continue

        // The body, read whole, goes as one content that WholeBodyHandler attaches below YARP. The client's content
        // headers came on YARP's empty stand-in content (the client's body detection says none is left to stream).
        var content = _body = new WholeBodyContent(body);
        if (proxyRequest.Content is { } clientHeaders)
        {
            foreach (var (name, values) in clientHeaders.Headers.NonValidated)
            {
                if (!string.Equals(name, HeaderNames.ContentLength, StringComparison.OrdinalIgnoreCase))
                {
                    content.Headers.TryAddWithoutValidation(name, values);
                }
            }
        }

        proxyRequest.Content = null;
        proxyRequest.Options.Set(WholeBodyHandler.Body, content);

        var key = route.Provider.ApiKey;
        if (route.Provider.Kind == ProviderKind.Anthropic)
        {
            if (key is not null)
            {
                headers.TryAddWithoutValidation("x-api-key", key);
            }

            if (!headers.Contains("anthropic-version"))
            {
                headers.TryAddWithoutValidation("anthropic-version", "2023-06-01");
            }
        }
        else if (key is not null)
        {
            headers.TryAddWithoutValidation(HeaderNames.Authorization, "Bearer " + key);
        }

        StartedAt = Stopwatch.GetTimestamp();
    }

    /// <summary>
    /// Ends the upstream request's use of the body (pooled, returned after the call): no write of it starts after this,
    /// and one still running (HTTP/2 sends the body alongside the response) is waited for.
    /// </summary>
    public ValueTask CloseBodyAsync() => _body?.CloseAsync() ?? ValueTask.CompletedTask;

    public override async ValueTask<bool> TransformResponseAsync(HttpContext httpContext, HttpResponseMessage? proxyResponse,
        CancellationToken cancellationToken)
    {
        if (proxyResponse is null)
        {
            return await base.TransformResponseAsync(httpContext, proxyResponse, cancellationToken);
        }

        var status = (int)proxyResponse.StatusCode;
        Record.UpstreamStatus = status;
        Interlocked.Exchange(ref _answered, 1);
        if (CutBy != 0)
        {
            WasCut = true; // refused while the provider worked: its answer is not passed on, the gateway's error takes its place
            return false;
        }

        if (status >= 400 || !IsAnswer(status))
        {
            UpstreamFailed = true;
            await ReplaceUpstreamErrorAsync(httpContext, proxyResponse, status, cancellationToken);
            return false;
        }

        if (CodingOf(proxyResponse.Content.Headers) is { } coding)
        {
            // Asked for identity, answered compressed: the meter cannot read it, and an answer that is not metered is not
            // passed on (the provider may bill it: the ledger says it answered, upstream_status 200).
            UpstreamFailed = true;
            Record.Fail(Reasons.UpstreamError, Outcome.UpstreamError);
            Record.Status = Reasons.UpstreamError.Status;
            httpContext.Response.Headers.Remove(HeaderNames.ContentLength);
            await ErrorResponses.WriteAsync(httpContext, Reasons.UpstreamError, Record.RequestId, anthropicErrors,
                $"The model provider answered in a content coding ({coding}) though the gateway asked for none; an answer it cannot meter is not passed on.");
            return false;
        }

        RemoveProviderAccountHeaders(proxyResponse.Headers);
        await base.TransformResponseAsync(httpContext, proxyResponse, cancellationToken);
        var headers = httpContext.Response.Headers;
        if (headers.TryGetValue(Headers.RequestId, out var ids) && ids.Count > 1)
        {
            // Ours is the request id; the provider's own id moves aside, kept for support cases.
            headers[Headers.RequestId] = ids[0];
            headers["x-upstream-request-id"] = ids[1];
        }

        if (headers.TryGetValue("request-id", out var providerId))
        {
            // Anthropic's name for its id, which its SDKs show as the request's: ours there too, the provider's aside.
            headers["x-upstream-request-id"] = providerId;
            headers["request-id"] = Record.RequestId;
        }

        if (Meter.IsStream && proxyResponse.Content.Headers.ContentType?.MediaType is "application/json")
        {
            Meter.ReadAsJson(); // stream asked for, one JSON body answered: the 502 below, but the usage it reports is metered
        }

        if (Meter.RewritesOutput)
        {
            httpContext.Response.ContentLength = null;
        }

        // Into the response's own writer, taken before Body is replaced (after that, BodyWriter would write through Body).
        Body = new MeteringStream(httpContext.Response.BodyWriter, Meter, Meter.RewritesOutput, httpContext.Response.ContentLength);
        httpContext.Response.Body = Body;
        proxyResponse.Content = new ObservedUpstreamContent(proxyResponse.Content, this);
        return true;
    }

    /// <summary>The content coding of a provider's answer other than identity (gzip, br, …), or null when it has none.</summary>
    private static string? CodingOf(HttpContentHeaders headers)
    {
        foreach (var coding in headers.ContentEncoding)
        {
            if (!string.Equals(coding, "identity", StringComparison.OrdinalIgnoreCase))
            {
                return RecordedText.Of(coding);
            }
        }

        return null;
    }

    /// <summary>
    /// Removes what the provider says about the account the gateway called it with: the organisation and project, that
    /// account's rate limits (not the consumer's, which are the gateway's), and cookies meant for the gateway's session.
    /// A consumer, perhaps an external customer, learns nothing of the company's provider account.
    /// </summary>
    private static void RemoveProviderAccountHeaders(HttpResponseHeaders headers)
    {
        List<string>? found = null;
        foreach (var (name, _) in headers.NonValidated)
        {
            if (name.Equals(HeaderNames.SetCookie, StringComparison.OrdinalIgnoreCase)
                || name.Equals("openai-organization", StringComparison.OrdinalIgnoreCase)
                || name.Equals("openai-project", StringComparison.OrdinalIgnoreCase)
                || name.Equals("anthropic-organization-id", StringComparison.OrdinalIgnoreCase)
                || name.StartsWith("x-ratelimit-", StringComparison.OrdinalIgnoreCase)
                || name.StartsWith("anthropic-ratelimit-", StringComparison.OrdinalIgnoreCase))
            {
                (found ??= []).Add(name);
            }
        }

        if (found is null)
        {
            return;
        }

        foreach (var name in found)
        {
            headers.Remove(name);
        }
    }

    /// <summary>
    /// Whether a status other than an error carries an answer to pass on: a success with a body. A redirect is the
    /// provider's to follow, not the client's: passed on, it would send the client, with its gateway key, to wherever the
    /// provider pointed, around the gateway. A 204 or 205 has no answer in it, and a client waiting for a completion
    /// could only fail on it. Either is an upstream error.
    /// </summary>
    private static bool IsAnswer(int status) => status is >= 200 and < 300 and not (204 or 205);

    private async Task ReplaceUpstreamErrorAsync(HttpContext context, HttpResponseMessage response, int status, CancellationToken cancellationToken)
    {
        var reason = status switch
        {
            401 or 403 => Reasons.UpstreamAuth,
            429 => Reasons.UpstreamRateLimited,
            >= 400 and < 500 => Reasons.UpstreamRejected,
            _ => Reasons.UpstreamError,
        };

        string? message = null;
        string? param = null;
        int? clientStatus = null;
        if (reason == Reasons.UpstreamRejected)
        {
            // The provider's explanation helps the caller fix the request; pass its message and the field it names
            // (OpenAI's param), never its body.
            var (detail, field) = await ReadErrorMessageAsync(response, cancellationToken);
            message = detail is null ? null : $"{reason.Message} {Redact(detail, route.Provider.ApiKey)}";
            param = field is null ? null : Redact(field, route.Provider.ApiKey);
            clientStatus = status is 400 or 404 or 413 or 422 ? status : 400;
        }
        else if (status is 429 or >= 500 && response.Headers.RetryAfter is { } retryAfter)
        {
            // Rate limited or overloaded (Anthropic's 529, a 503): the provider's delay is what the SDKs' retries wait for.
            context.Response.Headers.RetryAfter = retryAfter.ToString();
        }

        Record.Fail(reason, Outcome.UpstreamError);
        Record.Status = clientStatus ?? reason.Status;
        context.Response.Headers.Remove(HeaderNames.ContentLength);
        await ErrorResponses.WriteAsync(context, reason, Record.RequestId, anthropicErrors, message, param, clientStatus);
    }

    /// <summary>The message of a provider's error body, and the field it names (OpenAI's <c>param</c>), when it has them.</summary>
    private static async Task<(string? Message, string? Param)> ReadErrorMessageAsync(HttpResponseMessage response, CancellationToken cancellationToken)
    {
        try
        {
            await using var stream = await response.Content.ReadAsStreamAsync(cancellationToken);
            using var buffer = new PooledBufferWriter(4096);
            int read;
            while (buffer.WrittenCount < MaxErrorBody && (read = await stream.ReadAsync(buffer.GetMemory(4096), cancellationToken)) > 0)
            {
                buffer.Advance(read);
            }

            using var document = JsonDocument.Parse(buffer.WrittenMemory);
            // OpenAI {"error":{"message"}} and Anthropic {"type":"error","error":{"message"}} alike.
            if (document.RootElement.TryGetProperty("error", out var error))
            {
                if (error.ValueKind == JsonValueKind.Object && error.TryGetProperty("message", out var message) && message.ValueKind == JsonValueKind.String)
                {
                    var param = error.TryGetProperty("param", out var field) && field.ValueKind == JsonValueKind.String ? field.GetString() : null;
                    return (message.GetString(), param);
                }

                if (error.ValueKind == JsonValueKind.String)
                {
                    return (error.GetString(), null);
                }
            }
        }
        catch (Exception ex) when (ex is JsonException or IOException or HttpRequestException)
        {
            // No usable message: the caller gets the generic one.
        }

        return (null, null);
    }

    /// <summary>Removes anything that looks like a credential from a provider's message.</summary>
    internal static string Redact(string text, string? providerKey)
    {
        if (!string.IsNullOrEmpty(providerKey))
        {
            text = text.Replace(providerKey, "[redacted]", StringComparison.Ordinal);
        }

        return SecretPattern().Replace(text, "[redacted]");
    }

    [GeneratedRegex(@"(?:\b(?:sk|rk|pk|csk|cak)[-_][A-Za-z0-9_\-\*\.]{3,}|\bBearer\s+\S+|\b[A-Za-z0-9_\-]{32,}\b)", RegexOptions.CultureInvariant, matchTimeoutMilliseconds: 100)]
    private static partial Regex SecretPattern();

    /// <summary>Returns the pooled buffers of the meter and the metering stream.</summary>
    public void Dispose()
    {
        Meter.Dispose();
        Body?.Dispose();
    }

    /// <summary>Maps the forwarder's outcome to the ledger's, once the call is over.</summary>
    /// <param name="error">What the forwarder reported.</param>
    /// <param name="clientAborted">Whether the client's connection has gone.</param>
    /// <param name="exception">The exception behind <paramref name="error"/>, if any (<c>IForwarderErrorFeature</c>).</param>
    public (ReasonCode? Reason, Outcome Outcome) Classify(ForwarderError error, bool clientAborted, Exception? exception)
    {
        if (WasCut)
        {
            return (CutReason, Outcome.Interrupted); // whatever the provider did after: the gateway ended it
        }

        if (UpstreamFailed)
        {
            return (null, Outcome.UpstreamError); // already recorded
        }

        if (Meter.StreamFailed)
        {
            return (Reasons.UpstreamStreamFailed, Outcome.Interrupted); // the provider said it failed, whatever came after
        }

        if (UpstreamStalled)
        {
            return (Reasons.UpstreamTimeout, Outcome.Interrupted); // its answer stopped mid-body for longer than the timeout
        }

        if (UpstreamBroke)
        {
            return (Reasons.UpstreamStreamInterrupted, Outcome.Interrupted); // the provider broke first, whatever the client did after
        }

        switch (error)
        {
            case ForwarderError.None:
                if (Record.Stream && !Meter.StreamCompleted) // a JSON answer to a stream is no stream the client can read: 502
                {
                    return (Reasons.UpstreamStreamInterrupted, Outcome.Interrupted);
                }

                if (!Record.Stream && Meter.JsonMalformed) // a 200 whose JSON is cut short or is none: no complete answer
                {
                    return (Reasons.UpstreamMalformed, Outcome.Interrupted);
                }

                return (null, Outcome.Completed);
            case ForwarderError.RequestBodyClient or ForwarderError.ResponseBodyClient when GatewayFailed(error, clientAborted, exception):
                return (Reasons.Internal, Outcome.Failed);
            case ForwarderError.RequestCanceled or ForwarderError.RequestBodyCanceled or ForwarderError.ResponseBodyCanceled
                or ForwarderError.RequestBodyClient or ForwarderError.ResponseBodyClient:
                return (Reasons.ClientCancelled, Outcome.Cancelled);
            case ForwarderError.RequestTimedOut:
                return (Reasons.UpstreamTimeout, Outcome.UpstreamError);
            case ForwarderError.ResponseBodyDestination when clientAborted:
                return (Reasons.ClientCancelled, Outcome.Cancelled);
            case ForwarderError.ResponseBodyDestination:
                return (Reasons.UpstreamStreamInterrupted, Outcome.Interrupted);
            case ForwarderError.Request when !clientAborted && LostAfterSending(exception):
                return (Reasons.UpstreamStreamInterrupted, Outcome.Interrupted);
            default:
                return clientAborted ? (Reasons.ClientCancelled, Outcome.Cancelled) : (Reasons.UpstreamUnreachable, Outcome.UpstreamError);
        }
    }

    /// <summary>
    /// True when the provider's connection was lost after the request went out, before its answer's headers came: it ended
    /// or was reset. The provider was reached and may have billed the request, so this is no <c>upstream.unreachable</c>
    /// (refused, unresolvable, no TLS: <see cref="HttpRequestError.ConnectionError"/> and its kin).
    /// </summary>
    internal static bool LostAfterSending(Exception? exception)
        => exception is HttpRequestException { HttpRequestError: HttpRequestError.ResponseEnded }
            or HttpRequestException { HttpRequestError: HttpRequestError.Unknown, InnerException: IOException };

    /// <summary>
    /// True when the forwarder reports an error on the client's side of a copy that a client going away does not explain:
    /// that side is the gateway's own stream (the metering stream), so an exception that is neither I/O nor cancellation,
    /// while the client is still there, is the gateway's failure, not the client's.
    /// </summary>
    internal static bool GatewayFailed(ForwarderError error, bool clientAborted, Exception? exception)
        => error is ForwarderError.RequestBodyClient or ForwarderError.ResponseBodyClient
            && !clientAborted
            && exception is not null and not (IOException or OperationCanceledException or BadHttpRequestException or ObjectDisposedException);

    /// <summary>
    /// The upstream URI with the client's query string as it came (Anthropic's <c>?beta=true</c>, an Azure-style
    /// <c>?api-version=</c>), after any query of the provider's base URL; the cached URI itself when there is none. Nothing
    /// the gateway decides reads the query (the route is the path, the request the body), and the ledger records the path
    /// without it: a key some clients put there stays out of the evidence.
    /// </summary>
    internal static Uri WithQuery(Uri upstream, QueryString query)
    {
        if (!query.HasValue || query.Value!.Length < 2)
        {
            return upstream;
        }

        return new Uri(upstream.Query.Length > 1 ? string.Concat(upstream.AbsoluteUri, "&", query.Value.AsSpan(1)) : upstream.AbsoluteUri + query.Value);
    }

    /// <summary>Builds the upstream URI of <paramref name="endpoint"/> on <paramref name="provider"/>.</summary>
    public static Uri UriFor(ProviderEntry provider, ApiEndpoint endpoint)
        => new(provider.BaseUrl.AbsoluteUri.TrimEnd('/') + ApiEndpoints.UpstreamPath(endpoint));

    /// <summary>The HTTP version policy for upstream requests.</summary>
    public static readonly ForwarderRequestConfig DefaultConfig = new()
    {
        Version = HttpVersion.Version11,
        VersionPolicy = HttpVersionPolicy.RequestVersionOrLower,
    };

    /// <summary>What cut a call: the version in force and why (<see cref="Cut(long, ReasonCode)"/>).</summary>
    private sealed record CutCause(long Version, ReasonCode Reason);
}

/// <summary>Header names of the Custos contract.</summary>
internal static class Headers
{
    public const string RequestId = "x-request-id";
    public const string AgentRun = "X-Custos-Agent-Run";
    public const string OnBehalfOf = "X-On-Behalf-Of";

    /// <summary>The request's id as the provider receives it, the gateway's own (a client's is replaced).</summary>
    public const string UpstreamRequestId = "X-Custos-Request-Id";
}
