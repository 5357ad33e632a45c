namespace Custos.Alerts;

/// <summary>Where an alert stands.</summary>
public enum AlertStatus
{
    /// <summary>Raised and not yet acknowledged: it escalates when left too long.</summary>
    Open,

    /// <summary>An owner has taken it; it no longer escalates.</summary>
    Acknowledged,

    /// <summary>Closed: the automatic action was undone by an owner (resume), or an owner resolved it.</summary>
    Resolved,
}

/// <summary>How bad an alert is.</summary>
public enum AlertSeverity
{
    /// <summary>Worth knowing (a first use of a model).</summary>
    Info,

    /// <summary>Needs an owner's look.</summary>
    Warning,

    /// <summary>Needs action now; an automatic action may have been taken.</summary>
    Critical,
}

/// <summary>What a detector saw: the raw material of an alert, before de-duplication and routing.</summary>
public sealed record AlertSignal
{
    /// <summary>One of <see cref="AlertTypes"/>.</summary>
    public required string Type { get; init; }

    /// <summary>How bad.</summary>
    public required AlertSeverity Severity { get; init; }

    /// <summary>Signals with the same fingerprint are one alert while it is open: later ones only count as occurrences.</summary>
    public required string Fingerprint { get; init; }

    /// <summary>What the alert is about, for example <c>consumer:support-bot</c> or <c>source:203.0.113.7</c>.</summary>
    public required string Subject { get; init; }

    /// <summary>One line for people.</summary>
    public required string Summary { get; init; }

    /// <summary>When (the time of the request that raised it).</summary>
    public required DateTimeOffset At { get; init; }

    /// <summary>The tenant, when known.</summary>
    public string? Tenant { get; init; }

    /// <summary>The service, when known: its owners get the alert.</summary>
    public string? Service { get; init; }

    /// <summary>The consumer, when known.</summary>
    public string? Consumer { get; init; }

    /// <summary>The consumer's category, when known.</summary>
    public Policy.ConsumerCategory? Category { get; init; }

    /// <summary>The credential of the request that raised it, when known.</summary>
    public string? CredentialId { get; init; }

    /// <summary>The request that raised it.</summary>
    public string? RequestId { get; init; }

    /// <summary>The policy version in force for that request.</summary>
    public long PolicyVersion { get; init; }

    /// <summary>The rule that fired, for example <c>agent: usage at 10× the baseline suspends the credential</c>.</summary>
    public string? Rule { get; init; }

    /// <summary>What was measured: metric, observed value, baseline, threshold, recent request ids.</summary>
    public IReadOnlyDictionary<string, string> Evidence { get; init; } = new Dictionary<string, string>();

    /// <summary>The automatic action the rule takes, if any.</summary>
    public Policy.AlertAction Action { get; init; }

    /// <summary>For a throttle: the requests-per-minute limit to put on the consumer.</summary>
    public long? ThrottleRequestsPerMinute { get; init; }
}

/// <summary>An alert as stored: the signal that raised it, who was told, and what owners and the gateway did about it.</summary>
public sealed record Alert
{
    /// <summary>The id, <c>al-N</c>.</summary>
    public string Id { get; init; } = "";

    /// <summary>The id of the <paramref name="number"/>th alert a store keeps: <c>al-N</c>.</summary>
    public static string IdOf(long number) => "al-" + number.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>The number in an alert id (<c>al-N</c>), or null when <paramref name="id"/> is not one.</summary>
    public static long? NumberOf(string id)
        => id.StartsWith("al-", StringComparison.Ordinal)
            && long.TryParse(id.AsSpan(3), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var n) ? n : null;

    /// <summary>The first signal.</summary>
    public required AlertSignal Signal { get; init; }

    /// <summary>Open, acknowledged or resolved.</summary>
    public AlertStatus Status { get; init; }

    /// <summary>When it was raised (gateway clock).</summary>
    public required DateTimeOffset RaisedAt { get; init; }

    /// <summary>Signals with the same fingerprint so far, the first included.</summary>
    public long Occurrences { get; init; } = 1;

    /// <summary>The last of them.</summary>
    public DateTimeOffset LastSeenAt { get; init; }

    /// <summary>The roles told so far (owner roles and <c>security</c>), in order.</summary>
    public IReadOnlyList<string> NotifiedRoles { get; init; } = [];

    /// <summary>The contacts told so far (name and role), for people.</summary>
    public IReadOnlyList<string> Recipients { get; init; } = [];

    /// <summary>Who acknowledged it.</summary>
    public string? AcknowledgedBy { get; init; }

    /// <summary>When.</summary>
    public DateTimeOffset? AcknowledgedAt { get; init; }

    /// <summary>When it escalated (not acknowledged in time), if it did.</summary>
    public DateTimeOffset? EscalatedAt { get; init; }

    /// <summary>The automatic action taken: <c>suspended credential …</c>, <c>throttled consumer …</c>, or null.</summary>
    public string? ActionTaken { get; init; }

    /// <summary>For a throttle: the consumer's requests-per-minute limit before it (null when there was none).</summary>
    public long? ActionBefore { get; init; }

    /// <summary>The policy version the automatic action created.</summary>
    public long? ActionPolicyVersion { get; init; }

    /// <summary>Who resolved it (resumed the credential, lifted the throttle).</summary>
    public string? ResolvedBy { get; init; }

    /// <summary>When.</summary>
    public DateTimeOffset? ResolvedAt { get; init; }

    /// <summary>Why: acknowledgement or resolution note.</summary>
    public string? Note { get; init; }
}

/// <summary>One row of the alerts table as it reads.</summary>
/// <param name="Number">The row's number (the alert id is <c>al-N</c>).</param>
/// <param name="Alert">The alert, or null when the row does not read as one.</param>
/// <param name="Error">Why it does not, when it does not.</param>
public sealed record StoredAlert(long Number, Alert? Alert, string? Error);

/// <summary>Stored alerts.</summary>
public interface IAlertStore
{
    /// <summary>Stores a new alert and returns it with its id.</summary>
    Task<Alert> CreateAlertAsync(Alert alert, CancellationToken cancellationToken = default);

    /// <summary>Replaces a stored alert (same id).</summary>
    Task UpdateAlertAsync(Alert alert, CancellationToken cancellationToken = default);

    /// <summary>One alert, or null.</summary>
    Task<Alert?> GetAlertAsync(string id, CancellationToken cancellationToken = default);

    /// <summary>
    /// The newest open or acknowledged alert with <paramref name="fingerprint"/>, or null: with several nodes on one store,
    /// the alert that another node raised for the same thing, or a row one node's copy no longer matches.
    /// </summary>
    Task<Alert?> FindActiveAlertAsync(string fingerprint, CancellationToken cancellationToken = default);

    /// <summary>Alerts, newest first, optionally of one status; a row that does not read as an alert (altered by hand) is left out.</summary>
    Task<IReadOnlyList<Alert>> ListAlertsAsync(AlertStatus? status, int limit, CancellationToken cancellationToken = default);

    /// <summary>
    /// Every stored alert row, oldest first, optionally of one status, each with its number: one that does not read as an
    /// alert has <see cref="StoredAlert.Alert"/> null and says why (the alert engine warns of it, <c>audit verify</c> names it).
    /// </summary>
    IAsyncEnumerable<StoredAlert> ReadAlertsAsync(AlertStatus? status, CancellationToken cancellationToken = default);

    /// <summary>Every (consumer, model) pair of allowed requests in the ledger: the models each consumer has used.</summary>
    Task<IReadOnlyList<(string Consumer, string Model)>> GetConsumerModelsAsync(CancellationToken cancellationToken = default);
}
