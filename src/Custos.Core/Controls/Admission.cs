using System.Text.Json;
using Custos.Errors;
using Custos.Metering;
using Custos.Policy;

namespace Custos.Controls;

/// <summary>
/// What one control evaluated and decided for one request, as the ledger records it: for example
/// <c>rate_limit.requests consumer:web 57 of 60 → pass</c>, or <c>budget tenant:acme 12.40 of 50.00 with 0.03 reserved</c>.
/// </summary>
public sealed record ControlResult(string Control, string? Scope, string Decision)
{
    /// <summary>The limit in force.</summary>
    public decimal? Limit { get; init; }

    /// <summary>What was used in the window before this request.</summary>
    public decimal? Used { get; init; }

    /// <summary>What other in-flight requests had reserved.</summary>
    public decimal? Reserved { get; init; }

    /// <summary>What this request asked for or reserved.</summary>
    public decimal? Requested { get; init; }

    /// <summary>A short explanation: the rule that matched, the approver, the clamped value. Never prompt text.</summary>
    public string? Detail { get; init; }

    /// <summary>
    /// Set when the control was decided in a degraded mode because a shared engine was unreachable: the declared fail
    /// mode that applied (<c>local_share</c>, <c>open</c>, <c>closed</c>). Null when the control ran normally.
    /// </summary>
    public string? Degraded { get; init; }

    /// <summary>Writes the canonical JSON object (part of the ledger's persisted format).</summary>
    public void WriteTo(Utf8JsonWriter writer)
    {
        writer.WriteStartObject();
        writer.WriteString(Field.Control, Control);
        if (Scope is not null)
        {
            writer.WriteString(Field.Scope, Scope);
        }

        writer.WriteString(Field.Decision, Decision);
        Number(writer, Field.Limit, Limit);
        Number(writer, Field.Used, Used);
        Number(writer, Field.Reserved, Reserved);
        Number(writer, Field.Requested, Requested);
        if (Detail is not null)
        {
            writer.WriteString(Field.Detail, Detail);
        }

        if (Degraded is not null)
        {
            writer.WriteString(Field.Degraded, Degraded);
        }

        writer.WriteEndObject();
    }

    private static void Number(Utf8JsonWriter writer, JsonEncodedText name, decimal? value)
    {
        if (value is { } v)
        {
            WriteNumber(writer, name, v);
        }
    }

    /// <summary>
    /// Writes <paramref name="value"/> without trailing zeros (12.40 and 12.4 are the same reading): the same bytes as
    /// <c>writer.WriteNumber(name, PolicyNames.Normalize(value))</c>, which stays the path for what is not covered here.
    /// </summary>
    /// <remarks>
    /// A ledger entry writes about 35 of these. Counts and limits are whole; amounts have up to a dozen digits. Both
    /// fit a 64-bit mantissa, where the zeros come off with 64-bit arithmetic and the digits are placed directly,
    /// instead of the 128-bit divisions of a general decimal and the decimal formatter (2 % of a request's CPU, perf).
    /// </remarks>
    private static void WriteNumber(Utf8JsonWriter writer, JsonEncodedText name, decimal value)
    {
        Span<int> bits = stackalloc int[4];
        decimal.GetBits(value, bits);
        var mantissa = ((ulong)(uint)bits[1] << 32) | (uint)bits[0];
        if (bits[2] != 0 || bits[3] < 0 || mantissa == 0)
        {
            // Beyond 64 bits, negative, or zero (whose spelling the general path decides): rare in the ledger.
            writer.WriteNumber(name, PolicyNames.Normalize(value));
            return;
        }

        var scale = (bits[3] >> 16) & 0xFF;
        while (scale > 0 && mantissa % 10 == 0)
        {
            mantissa /= 10;
            scale--;
        }

        if (scale == 0)
        {
            writer.WriteNumber(name, mantissa);
            return;
        }

        // At most 20 digits and 28 places: "0." and 27 zeros before one digit is the longest.
        Span<byte> digits = stackalloc byte[20];
        Span<byte> text = stackalloc byte[32];
        mantissa.TryFormat(digits, out var count, default, System.Globalization.CultureInfo.InvariantCulture);
        int length;
        if (count > scale)
        {
            // 12.345: the integer digits, the point, the rest.
            var whole = count - scale;
            digits[..whole].CopyTo(text);
            text[whole] = (byte)'.';
            digits.Slice(whole, scale).CopyTo(text[(whole + 1)..]);
            length = count + 1;
        }
        else
        {
            // 0.00123: "0.", the zeros the scale asks for, the digits.
            text[0] = (byte)'0';
            text[1] = (byte)'.';
            var zeros = scale - count;
            text.Slice(2, zeros).Fill((byte)'0');
            digits[..count].CopyTo(text[(2 + zeros)..]);
            length = 2 + scale;
        }

        writer.WritePropertyName(name);
        writer.WriteRawValue(text[..length], skipInputValidation: true);
    }

    /// <summary>The property names, encoded once: a ledger entry writes about a hundred of them.</summary>
    private static class Field
    {
        public static readonly JsonEncodedText Control = JsonEncodedText.Encode("control");
        public static readonly JsonEncodedText Scope = JsonEncodedText.Encode("scope");
        public static readonly JsonEncodedText Decision = JsonEncodedText.Encode("decision");
        public static readonly JsonEncodedText Limit = JsonEncodedText.Encode("limit");
        public static readonly JsonEncodedText Used = JsonEncodedText.Encode("used");
        public static readonly JsonEncodedText Reserved = JsonEncodedText.Encode("reserved");
        public static readonly JsonEncodedText Requested = JsonEncodedText.Encode("requested");
        public static readonly JsonEncodedText Detail = JsonEncodedText.Encode("detail");
        public static readonly JsonEncodedText Degraded = JsonEncodedText.Encode("degraded");
    }
}

/// <summary>Names of control decisions in the ledger.</summary>
public static class ControlDecisions
{
    /// <summary>The control allowed the request.</summary>
    public const string Pass = "pass";

    /// <summary>The control refused the request.</summary>
    public const string Deny = "deny";

    /// <summary>The control refused the request for now.</summary>
    public const string Throttle = "throttle";

    /// <summary>The control changed the request (clamped or injected an output ceiling, redacted text).</summary>
    public const string Modify = "modify";

    /// <summary>A soft limit was passed: allowed, and an event raised.</summary>
    public const string Warn = "warn";

    /// <summary>The control could not be evaluated (for example prompt rules in a replay, which has no prompt text).</summary>
    public const string NotEvaluated = "not_evaluated";
}

/// <summary>The facts of one request that the controls need.</summary>
public sealed class AdmissionRequest
{
    /// <summary>The authenticated consumer.</summary>
    public required ConsumerEntry Consumer { get; init; }

    /// <summary>The model route in the consumer's tenant.</summary>
    public required ModelRoute Route { get; init; }

    /// <summary>The instant of the decision.</summary>
    public required DateTimeOffset Now { get; init; }

    /// <summary>Input tokens counted by the gateway.</summary>
    public required long InputTokens { get; init; }

    /// <summary>The output ceiling the request asked for, if any.</summary>
    public long? MaxOutputTokens { get; init; }

    /// <summary>Choices asked for (<c>n</c>); 1 when absent.</summary>
    public long N { get; init; } = 1;

    /// <summary>The parsed request, for prompt rules: its prompt strings and where they sit in the body; null when there is none.</summary>
    public ChatRequest? Prompt { get; init; }

    /// <summary>False in replays, where prompt text is not available.</summary>
    public bool PromptAvailable { get; init; } = true;
}

/// <summary>A change the gateway makes to a request body: replace bytes [Start, End) with <see cref="Replacement"/>.</summary>
public readonly record struct BodyEdit(int Start, int End, byte[] Replacement);

/// <summary>The outcome of admitting one request: the decision, what every control did, and what to settle later.</summary>
public sealed class Admission
{
    /// <summary>Allow, deny or throttle.</summary>
    public Decision Decision { get; internal set; } = Decision.Allow;

    /// <summary>Why it was refused, or null.</summary>
    public ReasonCode? Reason { get; internal set; }

    /// <summary>A message for the caller, naming the limit or rule.</summary>
    public string? Message { get; internal set; }

    /// <summary>When a retry can succeed, for throttles and quotas.</summary>
    public TimeSpan? RetryAfter { get; internal set; }

    /// <summary>The request's field a refusal is about (the error's <c>param</c>), or null.</summary>
    public string? Param { get; internal set; }

    /// <summary>Every control evaluated, in order.</summary>
    public List<ControlResult> Controls { get; } = new(16); // every control on: 16 results

    /// <summary>The output ceiling to write into the body, when the gateway clamps or injects one.</summary>
    public long? OutputCeiling { get; internal set; }

    /// <summary>Changes to the request body before forwarding: the prompt rules' redactions; the forwarder adds its own.</summary>
    public List<BodyEdit> Edits { get; } = [];

    /// <summary>The reservations made; settle them with <see cref="AdmissionEvaluator.SettleAsync"/>.</summary>
    public CounterCharge[] Charges { get; internal set; } = [];

    /// <summary>The identity the charges were reserved under, for the settlement.</summary>
    public Guid Reservation { get; internal set; }

    /// <summary>What each charge is for, in the order of <see cref="Charges"/>: the control, its scope, what it counts.</summary>
    internal ChargePurpose[] Purposes { get; set; } = [];

    /// <summary>The entitlement that admitted the model.</summary>
    public Entitlement? Entitlement { get; internal set; }

    /// <summary>Worst-case output tokens reserved.</summary>
    public long ReservedOutputTokens { get; internal set; }

    /// <summary>Soft limits passed by this request (events to raise).</summary>
    public List<string> Events { get; } = [];

    /// <summary>True when a control was decided in a degraded mode (a shared engine was unreachable); the record says so.</summary>
    public bool Degraded { get; internal set; }

    /// <summary>
    /// The per-minute request rate limit (<c>rate_limit.requests</c>) of the consumer, service or tenant with the fewest
    /// requests left once this request is counted, or null when none is in force (or none was read: a control refused
    /// the request before the counters). The gateway answers it in <c>x-ratelimit-*-requests</c> or
    /// <c>anthropic-ratelimit-requests-*</c>.
    /// </summary>
    public RateLimitHeadroom? RequestRate { get; internal set; }

    /// <summary>As <see cref="RequestRate"/>, for the per-minute token rate limit (<c>rate_limit.tokens</c>), this request's worst case counted.</summary>
    public RateLimitHeadroom? TokenRate { get; internal set; }

    internal void Refuse(ReasonCode reason, string message, TimeSpan? retryAfter = null, string? param = null)
    {
        Decision = reason.Decision;
        Reason = reason;
        Message = message;
        RetryAfter = retryAfter;
        Param = param;
    }
}

/// <summary>
/// What a rate limit leaves a caller: its limit in the window, what is left of it once the request is counted (its
/// worst case, for tokens; nothing of a refused request), and when the window ends.
/// </summary>
public readonly record struct RateLimitHeadroom(long Limit, long Remaining, DateTimeOffset Reset)
{
    /// <summary>Keeps the tighter of <paramref name="current"/> and this: fewer left, or as few and renewed later.</summary>
    internal RateLimitHeadroom Tighter(RateLimitHeadroom? current)
        => current is not { } other || Remaining < other.Remaining || (Remaining == other.Remaining && Reset > other.Reset) ? this : other;
}

/// <summary>What one counter charge is for: the control that reads it (<c>quota.tokens_per_day</c>), the scope, what it counts.</summary>
internal readonly record struct ChargePurpose(string Control, string Scope, ChargeKind Kind);

/// <summary>What a counter counts.</summary>
internal enum ChargeKind
{
    Requests,
    Tokens,
    Cost,
}
