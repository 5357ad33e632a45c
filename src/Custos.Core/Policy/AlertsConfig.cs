namespace Custos.Policy;

/// <summary>What the gateway does by itself when a consumer's usage is far above its own baseline.</summary>
public enum AlertAction
{
    /// <summary>Only alert the owners.</summary>
    None,

    /// <summary>Suspend the credential that made the requests (agents, by default).</summary>
    Suspend,

    /// <summary>Put a requests-per-minute limit on the consumer (external customers, by default).</summary>
    Throttle,
}

/// <summary>How a webhook receives its messages.</summary>
public enum WebhookFormat
{
    /// <summary>Custos's own JSON document (the default).</summary>
    Json,

    /// <summary>A Slack-compatible incoming-webhook payload (<c>text</c> and <c>blocks</c>).</summary>
    Slack,
}

/// <summary>
/// Detection and response: which detectors run, their thresholds, per-category anomaly thresholds and automatic actions,
/// and who is told when an alert is not acknowledged in time. Every field is optional; absent fields take the defaults
/// documented in <c>docs/alerts.md</c>.
/// </summary>
public sealed record AlertsConfig
{
    /// <summary>Per cent of a budget at which an alert is raised, ascending. Default 50, 80, 100.</summary>
    public IReadOnlyList<long>? BudgetThresholds { get; init; }

    /// <summary>Minutes an alert may stay unacknowledged before it escalates. Default 30.</summary>
    public long? EscalateAfterMinutes { get; init; }

    /// <summary>Security's contact: told of every escalation, and of authentication-failure bursts no service owns.</summary>
    public OwnerConfig? Security { get; init; }

    /// <summary>Failed authentications from one source address within a minute that make a burst. Default 20.</summary>
    public long? AuthFailuresPerMinute { get; init; }

    /// <summary>Denied or throttled requests of one consumer within a minute that make a spike. Default 30.</summary>
    public long? DenialsPerMinute { get; init; }

    /// <summary>Requests under one <c>X-Custos-Agent-Run</c> within a minute that make a fan-out. Default 120.</summary>
    public long? AgentRunRequestsPerMinute { get; init; }

    /// <summary>Minutes of a consumer's traffic observed before its baseline is trusted. Default 15.</summary>
    public long? BaselineWarmupMinutes { get; init; }

    /// <summary>Hours of a consumer's traffic observed before its hourly baseline is trusted. Default 24.</summary>
    public long? BaselineWarmupHours { get; init; }

    /// <summary>Detectors switched off, by name (for example <c>model.first_use</c>).</summary>
    public IReadOnlyList<string>? Disabled { get; init; }

    /// <summary>Anomaly thresholds and automatic actions per consumer category.</summary>
    public CategoryAlertsSet? Categories { get; init; }
}

/// <summary>Anomaly settings per consumer category.</summary>
public sealed record CategoryAlertsSet
{
    /// <summary>Products serving external customers. Default: alert at 5×, throttle to 60 requests/minute at 20×.</summary>
    public CategoryAlertConfig? External { get; init; }

    /// <summary>Internal teams. Default: alert at 5×, no automatic action.</summary>
    public CategoryAlertConfig? Internal { get; init; }

    /// <summary>Automation jobs. Default: alert at 3×, no automatic action.</summary>
    public CategoryAlertConfig? Automation { get; init; }

    /// <summary>Agents. Default: alert at 3×, suspend the credential at 10×.</summary>
    public CategoryAlertConfig? Agent { get; init; }
}

/// <summary>The anomaly thresholds of one category, as multiples of a consumer's own moving baseline.</summary>
public sealed record CategoryAlertConfig
{
    /// <summary>Usage at this multiple of the baseline raises an alert.</summary>
    public decimal? AlertAt { get; init; }

    /// <summary>Usage at this multiple of the baseline takes <see cref="Action"/>.</summary>
    public decimal? ActAt { get; init; }

    /// <summary>What to do at <see cref="ActAt"/>.</summary>
    public AlertAction? Action { get; init; }

    /// <summary>The requests-per-minute limit a throttle puts on the consumer.</summary>
    public long? ThrottleRequestsPerMinute { get; init; }

    /// <summary>Requests in a minute below which usage is never called anomalous (small numbers are noisy). Default 20.</summary>
    public long? MinRequestsPerMinute { get; init; }
}

/// <summary>When a consumer is expected to call, in its tenant's time zone; traffic outside raises <c>schedule.outside</c>.</summary>
public sealed record ScheduleConfig
{
    /// <summary>Days, as <c>mon</c> … <c>sun</c>. Empty means every day.</summary>
    public IReadOnlyList<string> Days { get; init; } = [];

    /// <summary>Hours as <c>HH:mm-HH:mm</c> (end exclusive; may wrap past midnight). Null means all day.</summary>
    public string? Hours { get; init; }
}
