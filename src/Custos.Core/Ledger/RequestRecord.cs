using System.Text.Json;
using Custos.Errors;

namespace Custos.Ledger;

/// <summary>How a request ended, from the client's side.</summary>
public enum Outcome
{
    /// <summary>The provider answered and the client received all of it.</summary>
    Completed,

    /// <summary>Refused by the gateway; no provider was called.</summary>
    Denied,

    /// <summary>The provider failed (unreachable, timeout, error status).</summary>
    UpstreamError,

    /// <summary>The provider's stream ended early; the client received part of the response.</summary>
    Interrupted,

    /// <summary>The client went away first.</summary>
    Cancelled,

    /// <summary>The gateway itself failed (<c>gateway.internal_error</c>).</summary>
    Failed,
}

/// <summary>
/// The ledger entry of one data-plane request: exactly one per request, whatever happened to it.
/// Every field is documented in <c>docs/ledger.md</c>. Filled in as the request moves through the
/// pipeline, then handed to the ledger writer and never touched again.
/// </summary>
public sealed class RequestRecord : LedgerRecord
{
    /// <inheritdoc/>
    public override string Kind => "request";

    /// <summary>Unique id, also sent to the client as <c>x-request-id</c>.</summary>
    public required string RequestId { get; init; }

    /// <summary>The gateway node that served it.</summary>
    public required string NodeId { get; init; }

    /// <summary>The owning service of the consumer.</summary>
    public string? Service { get; set; }

    /// <summary>The consumer the credential is bound to.</summary>
    public string? Consumer { get; set; }

    /// <summary>external, internal, automation or agent.</summary>
    public string? Category { get; set; }

    /// <summary>The credential id (never the key).</summary>
    public string? CredentialId { get; set; }

    /// <summary>HTTP method.</summary>
    public required string Method { get; init; }

    /// <summary>The path the client called, for example <c>/v1/chat/completions</c>.</summary>
    public required string Endpoint { get; init; }

    /// <summary>Whether the client asked for a stream.</summary>
    public bool Stream { get; set; }

    /// <summary>The model the client asked for (name or alias).</summary>
    public string? Model { get; set; }

    /// <summary>The model name sent upstream.</summary>
    public string? ModelServed { get; set; }

    /// <summary>The provider id within the tenant.</summary>
    public string? Provider { get; set; }

    /// <summary>allow, deny or throttle.</summary>
    public Decision Decision { get; set; } = Decision.Allow;

    /// <summary>Reason codes: why it was denied, or what went wrong after it was allowed.</summary>
    public List<string> Reasons { get; } = new(2);

    /// <summary>
    /// True when the request names a credential that was accepted: not refused for the credential itself (revoked,
    /// suspended, expired). Only such requests are the credential's use, which stores keep as its last use.
    /// </summary>
    public bool UsedCredential
    {
        get
        {
            if (CredentialId is null)
            {
                return false;
            }

            foreach (var reason in Reasons)
            {
                if (reason.StartsWith("deny.credential_", StringComparison.Ordinal))
                {
                    return false;
                }
            }

            return true;
        }
    }

    /// <summary>The policy version in force.</summary>
    public long PolicyVersion { get; set; }

    /// <summary>SHA-256 of that version's canonical form.</summary>
    public string? PolicyHash { get; set; }

    /// <summary>Input (prompt) tokens.</summary>
    public long? InputTokens { get; set; }

    /// <summary>Output (completion) tokens.</summary>
    public long? OutputTokens { get; set; }

    /// <summary>
    /// Of <see cref="InputTokens"/>, those the provider read from its prompt cache (priced at the model's
    /// <c>cached_input_per_mtok</c>); written only when more than 0, so entries without them are as before.
    /// </summary>
    public long? CachedInputTokens { get; set; }

    /// <summary>
    /// Of <see cref="InputTokens"/>, those the provider wrote to its prompt cache (Anthropic; priced at the model's
    /// <c>cache_write_input_per_mtok</c>); written only when more than 0.
    /// </summary>
    public long? CacheWriteInputTokens { get; set; }

    /// <summary>True when the counts are the gateway's tokenizer estimate because the provider reported none.</summary>
    public bool TokensEstimated { get; set; }

    /// <summary>Cost at the price table of the policy version.</summary>
    public decimal? Cost { get; set; }

    /// <summary>
    /// <paramref name="cost"/> as the canonical JSON states it: to nine decimals, whatever its scale. What the stores' cost
    /// columns and request totals hold, so that they add up to what the entries say.
    /// </summary>
    public static decimal CanonicalCost(decimal cost)
    {
        Span<char> text = stackalloc char[64];
        cost.TryFormat(text, out var written, CostFormat, System.Globalization.CultureInfo.InvariantCulture);
        return decimal.Parse(text[..written], System.Globalization.NumberStyles.Number, System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>How the canonical JSON writes <see cref="Cost"/>: a fixed scale, so that it does not depend on how the decimal was computed.</summary>
    private const string CostFormat = "0.000000000";

    /// <summary>Currency of <see cref="Cost"/>.</summary>
    public string? Currency { get; set; }

    /// <summary>HTTP status the provider answered with, if it was called and answered.</summary>
    public int? UpstreamStatus { get; set; }

    /// <summary>HTTP status the client received.</summary>
    public int Status { get; set; }

    /// <summary>How the request ended.</summary>
    public Outcome Outcome { get; set; } = Outcome.Completed;

    /// <summary>Time spent in the gateway itself, milliseconds.</summary>
    public double GatewayMs { get; set; }

    /// <summary>Time from sending upstream to the end of the upstream response, milliseconds.</summary>
    public double? UpstreamMs { get; set; }

    /// <summary>Client IP address.</summary>
    public string? ClientAddress { get; set; }

    /// <summary>The <c>X-Custos-Agent-Run</c> header, when an agent sent one.</summary>
    public string? AgentRun { get; set; }

    /// <summary>The <c>X-On-Behalf-Of</c> header: the human or system an agent acts for.</summary>
    public string? OnBehalfOf { get; set; }

    /// <summary>SHA-256 of the prompt (messages, prompt or input), lower-case hex. The text itself is not stored.</summary>
    public string? PromptSha256 { get; set; }

    /// <summary>Request body size in bytes.</summary>
    public long RequestBytes { get; set; }

    /// <summary>Response body bytes sent to the client.</summary>
    public long ResponseBytes { get; set; }

    /// <summary>The output ceiling the client asked for (<c>max_tokens</c> or <c>max_completion_tokens</c>), if any.</summary>
    public long? MaxOutputTokens { get; set; }

    /// <summary>Choices the client asked for (<c>n</c>), if any.</summary>
    public long? N { get; set; }

    /// <summary>Every control evaluated, in order, with what it saw and decided (the admission's list, not a copy).</summary>
    public IReadOnlyList<Controls.ControlResult> Controls { get; set; } = [];

    /// <summary>
    /// What was degraded when this request was decided, when anything was: <c>counters</c> (the shared counters were
    /// unreachable and the controls' declared fail modes decided), <c>policy_unconfirmed</c> (this node could not confirm
    /// it held the latest policy version). Null on a normal decision; the canonical JSON has the field only when set.
    /// </summary>
    public List<string>? Degraded { get; set; }

    /// <summary>
    /// The policy version that cut this request while it ran (<c>deny.killed_in_flight</c>: it refuses the request's
    /// credential, consumer, service or tenant); null for every other request, and then not written.
    /// </summary>
    public long? CutByPolicyVersion { get; set; }

    /// <summary>Adds <paramref name="what"/> to <see cref="Degraded"/> once.</summary>
    public void MarkDegraded(string what)
    {
        Degraded ??= new(2);
        if (!Degraded.Contains(what))
        {
            Degraded.Add(what);
        }
    }

    /// <summary>Records a refusal or failure.</summary>
    public void Fail(ReasonCode reason, Outcome outcome)
    {
        Decision = reason.Decision;
        Reasons.Add(reason.Code);
        Outcome = outcome;
    }

    /// <inheritdoc/>
    public override void WriteCanonical(Utf8JsonWriter writer)
    {
        writer.WriteStartObject();
        writer.WriteNumber(Field.V, LedgerFormat.Version);
        writer.WriteString(Field.Kind, Kind);
        writer.WriteString(Field.RequestId, RequestId);
        WriteTime(writer, Field.Timestamp, Timestamp);
        writer.WriteString(Field.NodeId, NodeId);
        WriteNullable(writer, Field.Tenant, Tenant);
        WriteNullable(writer, Field.Service, Service);
        WriteNullable(writer, Field.Consumer, Consumer);
        WriteNullable(writer, Field.Category, Category);
        WriteNullable(writer, Field.CredentialId, CredentialId);
        writer.WriteString(Field.Method, Method);
        writer.WriteString(Field.Endpoint, Endpoint);
        writer.WriteBoolean(Field.Stream, Stream);
        WriteNullable(writer, Field.Model, Model);
        WriteNullable(writer, Field.ModelServed, ModelServed);
        WriteNullable(writer, Field.Provider, Provider);
        writer.WriteString(Field.Decision, Names.Of(Decision));
        writer.WriteStartArray(Field.Reasons);
        foreach (var reason in Reasons)
        {
            writer.WriteStringValue(reason);
        }

        writer.WriteEndArray();
        writer.WriteNumber(Field.PolicyVersion, PolicyVersion);
        WriteNullable(writer, Field.PolicyHash, PolicyHash);
        WriteNumber(writer, Field.InputTokens, InputTokens);
        WriteNumber(writer, Field.OutputTokens, OutputTokens);
        writer.WriteBoolean(Field.TokensEstimated, TokensEstimated);
        if (Cost is { } cost)
        {
            // Fixed scale: the canonical form must not depend on how the decimal was computed.
            Span<byte> text = stackalloc byte[64];
            cost.TryFormat(text, out var written, CostFormat, System.Globalization.CultureInfo.InvariantCulture);
            writer.WriteString(Field.Cost, text[..written]);
        }
        else
        {
            writer.WriteNull(Field.Cost);
        }

        WriteNullable(writer, Field.Currency, Currency);
        WriteNumber(writer, Field.UpstreamStatus, UpstreamStatus);
        writer.WriteNumber(Field.Status, Status);
        writer.WriteString(Field.Outcome, Names.Of(Outcome));
        writer.WriteNumber(Field.GatewayMs, Math.Round(GatewayMs, 3));
        if (UpstreamMs is { } upstreamMs)
        {
            writer.WriteNumber(Field.UpstreamMs, Math.Round(upstreamMs, 3));
        }
        else
        {
            writer.WriteNull(Field.UpstreamMs);
        }

        WriteNullable(writer, Field.ClientAddress, ClientAddress);
        WriteNullable(writer, Field.AgentRun, AgentRun);
        WriteNullable(writer, Field.OnBehalfOf, OnBehalfOf);
        WriteNullable(writer, Field.PromptSha256, PromptSha256);
        writer.WriteNumber(Field.RequestBytes, RequestBytes);
        writer.WriteNumber(Field.ResponseBytes, ResponseBytes);

        // Format version 2 appends the request's ceilings and the controls.
        WriteNumber(writer, Field.MaxOutputTokens, MaxOutputTokens);
        WriteNumber(writer, Field.N, N);
        writer.WriteStartArray(Field.Controls);
        var controls = Controls;
        for (var i = 0; i < controls.Count; i++)
        {
            controls[i].WriteTo(writer); // not foreach: it would box the list's enumerator for every entry
        }

        writer.WriteEndArray();
        if (Degraded is { Count: > 0 } degraded)
        {
            writer.WriteStartArray(Field.Degraded);
            foreach (var what in degraded)
            {
                writer.WriteStringValue(what);
            }

            writer.WriteEndArray();
        }

        if (CutByPolicyVersion is { } cutBy)
        {
            writer.WriteNumber(Field.CutByPolicyVersion, cutBy);
        }

        // Added 2026-12-02, after every other field and only when there are some: entries before them are unchanged.
        if (CachedInputTokens is { } cachedInput && cachedInput > 0)
        {
            writer.WriteNumber(Field.CachedInputTokens, cachedInput);
        }

        if (CacheWriteInputTokens is { } cacheWrite && cacheWrite > 0)
        {
            writer.WriteNumber(Field.CacheWriteInputTokens, cacheWrite);
        }

        writer.WriteEndObject();
    }

    private static void WriteNumber(Utf8JsonWriter writer, JsonEncodedText name, long? value)
    {
        if (value is { } v)
        {
            writer.WriteNumber(name, v);
        }
        else
        {
            writer.WriteNull(name);
        }
    }

    /// <summary>Property names of the canonical form, encoded once.</summary>
    private static class Field
    {
        public static readonly JsonEncodedText V = JsonEncodedText.Encode("v");
        public static readonly JsonEncodedText Kind = JsonEncodedText.Encode("kind");
        public static readonly JsonEncodedText RequestId = JsonEncodedText.Encode("request_id");
        public static readonly JsonEncodedText NodeId = JsonEncodedText.Encode("node_id");
        public static readonly JsonEncodedText Method = JsonEncodedText.Encode("method");
        public static readonly JsonEncodedText Endpoint = JsonEncodedText.Encode("endpoint");
        public static readonly JsonEncodedText Stream = JsonEncodedText.Encode("stream");
        public static readonly JsonEncodedText Decision = JsonEncodedText.Encode("decision");
        public static readonly JsonEncodedText Reasons = JsonEncodedText.Encode("reasons");
        public static readonly JsonEncodedText PolicyVersion = JsonEncodedText.Encode("policy_version");
        public static readonly JsonEncodedText TokensEstimated = JsonEncodedText.Encode("tokens_estimated");
        public static readonly JsonEncodedText Cost = JsonEncodedText.Encode("cost");
        public static readonly JsonEncodedText Status = JsonEncodedText.Encode("status");
        public static readonly JsonEncodedText Outcome = JsonEncodedText.Encode("outcome");
        public static readonly JsonEncodedText GatewayMs = JsonEncodedText.Encode("gateway_ms");
        public static readonly JsonEncodedText UpstreamMs = JsonEncodedText.Encode("upstream_ms");
        public static readonly JsonEncodedText RequestBytes = JsonEncodedText.Encode("request_bytes");
        public static readonly JsonEncodedText ResponseBytes = JsonEncodedText.Encode("response_bytes");
        public static readonly JsonEncodedText Controls = JsonEncodedText.Encode("controls");
        public static readonly JsonEncodedText Degraded = JsonEncodedText.Encode("degraded");
        public static readonly JsonEncodedText CutByPolicyVersion = JsonEncodedText.Encode("cut_by_policy_version");
        public static readonly JsonEncodedText CachedInputTokens = JsonEncodedText.Encode("cached_input_tokens");
        public static readonly JsonEncodedText CacheWriteInputTokens = JsonEncodedText.Encode("cache_write_input_tokens");
        public static readonly JsonEncodedText Timestamp = JsonEncodedText.Encode("timestamp");
        public static readonly JsonEncodedText Tenant = JsonEncodedText.Encode("tenant");
        public static readonly JsonEncodedText Service = JsonEncodedText.Encode("service");
        public static readonly JsonEncodedText Consumer = JsonEncodedText.Encode("consumer");
        public static readonly JsonEncodedText Category = JsonEncodedText.Encode("category");
        public static readonly JsonEncodedText CredentialId = JsonEncodedText.Encode("credential_id");
        public static readonly JsonEncodedText Model = JsonEncodedText.Encode("model");
        public static readonly JsonEncodedText ModelServed = JsonEncodedText.Encode("model_served");
        public static readonly JsonEncodedText Provider = JsonEncodedText.Encode("provider");
        public static readonly JsonEncodedText PolicyHash = JsonEncodedText.Encode("policy_hash");
        public static readonly JsonEncodedText InputTokens = JsonEncodedText.Encode("input_tokens");
        public static readonly JsonEncodedText OutputTokens = JsonEncodedText.Encode("output_tokens");
        public static readonly JsonEncodedText Currency = JsonEncodedText.Encode("currency");
        public static readonly JsonEncodedText UpstreamStatus = JsonEncodedText.Encode("upstream_status");
        public static readonly JsonEncodedText ClientAddress = JsonEncodedText.Encode("client_address");
        public static readonly JsonEncodedText AgentRun = JsonEncodedText.Encode("agent_run");
        public static readonly JsonEncodedText OnBehalfOf = JsonEncodedText.Encode("on_behalf_of");
        public static readonly JsonEncodedText PromptSha256 = JsonEncodedText.Encode("prompt_sha256");
        public static readonly JsonEncodedText MaxOutputTokens = JsonEncodedText.Encode("max_output_tokens");
        public static readonly JsonEncodedText N = JsonEncodedText.Encode("n");
    }
}

/// <summary>Ledger spellings of enums.</summary>
public static class Names
{
    /// <summary>allow, deny, throttle.</summary>
    public static string Of(Decision decision) => decision switch
    {
        Decision.Allow => "allow",
        Decision.Deny => "deny",
        Decision.Throttle => "throttle",
        _ => throw new ArgumentOutOfRangeException(nameof(decision)),
    };

    /// <summary>completed, denied, upstream_error, interrupted, cancelled.</summary>
    public static string Of(Outcome outcome) => outcome switch
    {
        Outcome.Completed => "completed",
        Outcome.Denied => "denied",
        Outcome.UpstreamError => "upstream_error",
        Outcome.Interrupted => "interrupted",
        Outcome.Cancelled => "cancelled",
        Outcome.Failed => "failed",
        _ => throw new ArgumentOutOfRangeException(nameof(outcome)),
    };
}
