using System.Text.Json.Serialization;

namespace Custos.Policy;

/// <summary>What happens when a request asks for more output than its ceiling, or names none.</summary>
public enum OutputCeilingMode
{
    /// <summary>Over the ceiling: rewrite the request down to it. Missing: inject the ceiling.</summary>
    Clamp,

    /// <summary>Over the ceiling: deny (<c>deny.token_ceiling</c>). Missing: inject the ceiling.</summary>
    Deny,
}

/// <summary>Whether exhausting a budget refuses requests or only raises an event.</summary>
public enum BudgetMode
{
    /// <summary>Deny a request whose worst-case cost the budget cannot cover.</summary>
    Hard,

    /// <summary>Allow it and record a <c>budget.soft_exceeded</c> event.</summary>
    Soft,
}

/// <summary>A calendar period in the tenant's time zone.</summary>
public enum BudgetPeriod
{
    /// <summary>From local midnight to local midnight.</summary>
    Day,

    /// <summary>From the first of the month, local midnight.</summary>
    Month,
}

/// <summary>A spending limit in the tenant's currency for one calendar period.</summary>
public sealed record BudgetConfig
{
    /// <summary>
    /// The largest amount a budget may have: the counters hold spend as a 64-bit count of billionths, so
    /// 9,223,372,036.85 is the most they hold; whole units below it.
    /// </summary>
    public const decimal MaxAmount = 9_223_372_036m;

    /// <summary>Required. The amount, in the currency of the models' prices.</summary>
    public required decimal Amount { get; init; }

    /// <summary>Day or month (default).</summary>
    public BudgetPeriod Period { get; init; } = BudgetPeriod.Month;

    /// <summary>Hard (default) or soft.</summary>
    public BudgetMode Mode { get; init; } = BudgetMode.Hard;
}

/// <summary>
/// Limits of one scope (a category default, a consumer, a service or a tenant). Every field is optional;
/// an absent field is no limit at that scope. A consumer's limits narrow its category's defaults: the
/// tighter of the two applies.
/// </summary>
public sealed record LimitsConfig
{
    /// <summary>Requests per minute (fixed one-minute windows).</summary>
    public long? RequestsPerMinute { get; init; }

    /// <summary>Tokens (input and output) per minute.</summary>
    public long? TokensPerMinute { get; init; }

    /// <summary>Requests per calendar day in the tenant's time zone.</summary>
    public long? RequestsPerDay { get; init; }

    /// <summary>Tokens per calendar day.</summary>
    public long? TokensPerDay { get; init; }

    /// <summary>Requests per calendar month.</summary>
    public long? RequestsPerMonth { get; init; }

    /// <summary>Tokens per calendar month.</summary>
    public long? TokensPerMonth { get; init; }

    /// <summary>A spending limit.</summary>
    public BudgetConfig? Budget { get; init; }

    /// <summary>Largest prompt, in tokens counted by the gateway.</summary>
    public long? MaxInputTokens { get; init; }

    /// <summary>Largest output a request may ask for.</summary>
    public long? MaxOutputTokens { get; init; }

    /// <summary>Clamp (default) or deny requests over <see cref="MaxOutputTokens"/>.</summary>
    public OutputCeilingMode? OutputCeiling { get; init; }

    /// <summary>Largest <c>n</c> (choices per request).</summary>
    public long? MaxN { get; init; }

    /// <summary>True when nothing is set.</summary>
    [JsonIgnore]
    public bool IsEmpty => this == Empty;

    /// <summary>No limits.</summary>
    public static LimitsConfig Empty { get; } = new();

    /// <summary>The tighter of two limits, field by field (a consumer narrowing its category's defaults).</summary>
    public LimitsConfig Narrow(LimitsConfig? inner)
    {
        if (inner is null || inner.IsEmpty)
        {
            return this;
        }

        return new LimitsConfig
        {
            RequestsPerMinute = Min(RequestsPerMinute, inner.RequestsPerMinute),
            TokensPerMinute = Min(TokensPerMinute, inner.TokensPerMinute),
            RequestsPerDay = Min(RequestsPerDay, inner.RequestsPerDay),
            TokensPerDay = Min(TokensPerDay, inner.TokensPerDay),
            RequestsPerMonth = Min(RequestsPerMonth, inner.RequestsPerMonth),
            TokensPerMonth = Min(TokensPerMonth, inner.TokensPerMonth),
            Budget = Budget is null ? inner.Budget : inner.Budget is null ? Budget
                : inner.Budget.Period == Budget.Period && inner.Budget.Amount > Budget.Amount ? Budget : inner.Budget,
            MaxInputTokens = Min(MaxInputTokens, inner.MaxInputTokens),
            MaxOutputTokens = Min(MaxOutputTokens, inner.MaxOutputTokens),
            OutputCeiling = inner.OutputCeiling ?? OutputCeiling,
            MaxN = Min(MaxN, inner.MaxN),
        };
    }

    /// <summary>
    /// These limits with the token ceilings of the service or tenant around them (<paramref name="outer"/>) where those are
    /// tighter: a service's or tenant's ceiling bounds every request of every consumer under it. Counters are untouched
    /// (each level counts its own); the output ceiling's mode is the consumer's, else the outer level's.
    /// </summary>
    public LimitsConfig WithCeilingsOf(LimitsConfig outer)
        => outer.MaxInputTokens is null && outer.MaxOutputTokens is null && outer.MaxN is null ? this : this with
        {
            MaxInputTokens = Min(MaxInputTokens, outer.MaxInputTokens),
            MaxOutputTokens = Min(MaxOutputTokens, outer.MaxOutputTokens),
            OutputCeiling = OutputCeiling ?? outer.OutputCeiling,
            MaxN = Min(MaxN, outer.MaxN),
        };

    private static long? Min(long? a, long? b) => a is null ? b : b is null ? a : Math.Min(a.Value, b.Value);
}

/// <summary>Defaults of one consumer category: the models and limits its consumers inherit and may narrow.</summary>
public sealed record CategoryDefaults
{
    /// <summary>The models consumers of this category may be entitled to; null means any model of their tenant.</summary>
    public IReadOnlyList<string>? Models { get; init; }

    /// <summary>Limits every consumer of the category starts from.</summary>
    public LimitsConfig Limits { get; init; } = LimitsConfig.Empty;
}

/// <summary>Approved access of one consumer to some models, for a time, with who approved it and why.</summary>
public sealed record EntitlementConfig
{
    /// <summary>Models (names or aliases of the tenant). Required.</summary>
    public IReadOnlyList<string> Models { get; init; } = [];

    /// <summary>Who approved the access: the service's policy owner or a delegate.</summary>
    public string? ApprovedBy { get; init; }

    /// <summary>A reference for the approval, such as a ticket.</summary>
    public string? Ticket { get; init; }

    /// <summary>Start of validity (inclusive). Optional.</summary>
    public DateTimeOffset? ValidFrom { get; init; }

    /// <summary>End of validity (exclusive). Optional.</summary>
    public DateTimeOffset? ValidUntil { get; init; }
}

/// <summary>What a prompt rule does when it matches.</summary>
public enum PromptAction
{
    /// <summary>Refuse the request (<c>deny.prompt_restricted</c>).</summary>
    Deny,

    /// <summary>Replace the matched text with <c>[REDACTED:rule]</c> before forwarding.</summary>
    Redact,
}

/// <summary>Built-in detectors for prompt rules.</summary>
public enum PromptDetector
{
    /// <summary>API keys and secrets: provider keys, cloud access keys, private key blocks, tokens.</summary>
    Secrets,

    /// <summary>Payment card numbers, Luhn-checked.</summary>
    PaymentCard,

    /// <summary>E-mail addresses.</summary>
    Email,

    /// <summary>International bank account numbers, mod-97 checked.</summary>
    Iban,

    /// <summary>US social security numbers.</summary>
    UsSsn,
}

/// <summary>A prompt restriction: a regular expression or a built-in detector, and its action.</summary>
public sealed record PromptRuleConfig
{
    /// <summary>Required. Names the rule in the ledger (the matched text is never recorded).</summary>
    public required string Id { get; init; }

    /// <summary>A .NET regular expression, evaluated with a timeout. Exactly one of pattern and detector.</summary>
    public string? Pattern { get; init; }

    /// <summary>A built-in detector. Exactly one of pattern and detector.</summary>
    public PromptDetector? Detector { get; init; }

    /// <summary>Deny (default) or redact.</summary>
    public PromptAction Action { get; init; } = PromptAction.Deny;
}
