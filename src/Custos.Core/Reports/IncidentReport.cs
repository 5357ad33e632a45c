using Custos.ControlPlane;

namespace Custos.Reports;

/// <summary>
/// The incident evidence pack of one subject (consumer, credential, service or tenant) over a window: what happened,
/// under which policy and controls, who approved and who can act, whether the record is intact, and a classification
/// (misuse, misconfiguration, missing governance) with the evidence behind each finding.
/// </summary>
public sealed record IncidentReport
{
    /// <summary>Always <c>incident</c>.</summary>
    public string Report => "incident";

    /// <summary>When the pack was made.</summary>
    public required DateTimeOffset GeneratedAt { get; init; }

    /// <summary>What the pack is about.</summary>
    public required IncidentSubject Subject { get; init; }

    /// <summary>Start of the window (inclusive).</summary>
    public required DateTimeOffset From { get; init; }

    /// <summary>End of the window (exclusive).</summary>
    public required DateTimeOffset To { get; init; }

    /// <summary>The tenants, services, consumers and credentials the subject covers in the window.</summary>
    public required IncidentScope Scope { get; init; }

    /// <summary>Counts and totals of the window.</summary>
    public required IncidentSummary Summary { get; init; }

    /// <summary>The classes that apply, ranked, with the reasoning.</summary>
    public required Classification Classification { get; init; }

    /// <summary>Every finding, strongest first, each with its evidence.</summary>
    public required IReadOnlyList<Finding> Findings { get; init; }

    /// <summary>Requests, decisions and administrative actions in time order.</summary>
    public required Timeline Timeline { get; init; }

    /// <summary>The policy versions in force during the window and the controls each one set for the subject.</summary>
    public required IReadOnlyList<VersionInForce> PolicyVersions { get; init; }

    /// <summary>What the controls recorded in the ledger decided in the window, by control, scope and decision.</summary>
    public required IReadOnlyList<ControlObservation> ControlsObserved { get; init; }

    /// <summary>Entitlements of the subject's consumers and who approved them.</summary>
    public required IReadOnlyList<EntitlementView> Entitlements { get; init; }

    /// <summary>Access requests of the subject's consumers, in any state.</summary>
    public required IReadOnlyList<AccessRequest> AccessRequests { get; init; }

    /// <summary>The subject's credentials with their administrative history.</summary>
    public required IReadOnlyList<CredentialHistory> Credentials { get; init; }

    /// <summary>Spend in the window against the budgets that applied.</summary>
    public required SpendSection Spend { get; init; }

    /// <summary>Alerts about the subject raised in the window.</summary>
    public required AlertsSection Alerts { get; init; }

    /// <summary>Messages to owners raised in the window for the subject's services.</summary>
    public required IReadOnlyList<NotificationView> Notifications { get; init; }

    /// <summary>Revocations, suspensions, kill switches and the refusals they caused.</summary>
    public required InterventionsSection Interventions { get; init; }

    /// <summary>Who to contact for each service, from the newest policy version.</summary>
    public required OwnersSection Owners { get; init; }

    /// <summary>The ledger verification over the window.</summary>
    public required ChainCheck Chain { get; init; }

    /// <summary>The subject's use in the period before the window, to compare with.</summary>
    public required BaselineView Baseline { get; init; }

    /// <summary>Limits of the pack worth knowing (truncation, shed requests, missing data).</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];
}

/// <summary>What an incident pack is about.</summary>
/// <param name="Kind"><c>consumer</c>, <c>credential</c>, <c>service</c> or <c>tenant</c>.</param>
/// <param name="Id">Its id.</param>
public sealed record IncidentSubject(string Kind, string Id)
{
    /// <inheritdoc/>
    public override string ToString() => Kind + " " + Id;
}

/// <summary>The tenants, services, consumers and credentials a subject covers.</summary>
public sealed record IncidentScope(IReadOnlyList<string> Tenants, IReadOnlyList<string> Services, IReadOnlyList<string> Consumers, IReadOnlyList<string> Credentials);

/// <summary>Counts and totals of the window.</summary>
public sealed record IncidentSummary
{
    /// <summary>Request entries.</summary>
    public int Requests { get; init; }

    /// <summary>Allowed.</summary>
    public int Allowed { get; init; }

    /// <summary>Denied.</summary>
    public int Denied { get; init; }

    /// <summary>Throttled.</summary>
    public int Throttled { get; init; }

    /// <summary>Spend of the window.</summary>
    public decimal Spend { get; init; }

    /// <summary>Currency of the spend (the first seen).</summary>
    public string? Currency { get; init; }

    /// <summary>Requests by reason code.</summary>
    public IReadOnlyDictionary<string, int> Reasons { get; init; } = new Dictionary<string, int>();

    /// <summary>Requests by model asked for.</summary>
    public IReadOnlyDictionary<string, int> Models { get; init; } = new Dictionary<string, int>();

    /// <summary>The first request of the window.</summary>
    public DateTimeOffset? FirstRequest { get; init; }

    /// <summary>The last request of the window.</summary>
    public DateTimeOffset? LastRequest { get; init; }

    /// <summary>The busiest minute.</summary>
    public DateTimeOffset? PeakMinute { get; init; }

    /// <summary>Requests in the busiest minute.</summary>
    public int PeakMinuteRequests { get; init; }

    /// <summary>Requests shed in the window and counted without an entry of their own (not attributable).</summary>
    public long ShedInWindow { get; init; }
}

/// <summary>The classes of an incident, ranked by the weight of their evidence.</summary>
/// <param name="Primary">The top class, or null when nothing was found.</param>
/// <param name="Ranking">Every class, ranked.</param>
/// <param name="Explanation">How the ranking was made, in words.</param>
public sealed record Classification(string? Primary, IReadOnlyList<ClassRanking> Ranking, string Explanation)
{
    /// <summary>A properly entitled credential, controls enforced, anomalous use.</summary>
    public const string Misuse = "misuse";

    /// <summary>A control absent or set beyond the service's declared intent.</summary>
    public const string Misconfiguration = "misconfiguration";

    /// <summary>An owner role unfilled, a shared credential, no budget, a gap in the chain.</summary>
    public const string MissingGovernance = "missing_governance";
}

/// <summary>One class's place in the ranking.</summary>
/// <param name="Rank">1 for the strongest; classes without findings share the last rank.</param>
/// <param name="Class">The class.</param>
/// <param name="Score">Sum of the weights of its findings (high 3, medium 2, low 1).</param>
/// <param name="Findings">How many findings support it.</param>
/// <param name="Explanation">Why it applies (or that nothing supports it).</param>
public sealed record ClassRanking(int Rank, string Class, int Score, int Findings, string Explanation);

/// <summary>One thing found, with the evidence that supports it.</summary>
/// <param name="Class">misuse, misconfiguration or missing_governance.</param>
/// <param name="Code">A stable code, for example <c>no_output_ceiling</c>.</param>
/// <param name="Severity">high, medium or low.</param>
/// <param name="Weight">3, 2 or 1.</param>
/// <param name="Title">One line.</param>
/// <param name="Detail">What it means, in words.</param>
/// <param name="Evidence">Request ids, policy versions, ledger entries, access requests.</param>
public sealed record Finding(string Class, string Code, string Severity, int Weight, string Title, string Detail, IReadOnlyList<Evidence> Evidence);

/// <summary>One piece of evidence.</summary>
/// <param name="Kind"><c>request</c>, <c>policy_version</c>, <c>ledger_entry</c>, <c>access_request</c>, <c>alert</c>, <c>reason_count</c>, <c>verification</c>, <c>credential</c>.</param>
/// <param name="Ref">What to look up: a request id, <c>v3</c>, <c>node#42</c>, <c>ar-1</c>, <c>al-5</c>, a reason code.</param>
/// <param name="Detail">What it shows.</param>
public sealed record Evidence(string Kind, string Ref, string? Detail);

/// <summary>Events of the window in time order.</summary>
/// <param name="Events">Requests and administrative actions (requests up to a limit; every administrative action).</param>
/// <param name="OmittedRequests">Requests left out of <paramref name="Events"/> because of the limit.</param>
/// <param name="BucketSeconds">The width of the activity buckets.</param>
/// <param name="Activity">Requests per bucket (non-empty buckets only), with decisions and reasons.</param>
public sealed record Timeline(IReadOnlyList<TimelineEvent> Events, int OmittedRequests, int BucketSeconds, IReadOnlyList<ActivityBucket> Activity);

/// <summary>One event of the timeline.</summary>
/// <param name="At">When.</param>
/// <param name="Kind"><c>request</c> or <c>admin</c>.</param>
/// <param name="Ref">The request id, or the ledger position (<c>node#seq</c>) of an administrative entry.</param>
/// <param name="Who">The consumer and credential, or the admin.</param>
/// <param name="What">The model and outcome, or the action, target and change.</param>
/// <param name="Decision">allow, deny, throttle; or the action.</param>
/// <param name="Reasons">Reason codes of a request.</param>
/// <param name="PolicyVersion">The policy version it names.</param>
public sealed record TimelineEvent(DateTimeOffset At, string Kind, string Ref, string Who, string What, string Decision, IReadOnlyList<string> Reasons, long PolicyVersion);

/// <summary>Requests of one time bucket.</summary>
public sealed record ActivityBucket(DateTimeOffset Start, int Requests, int Allowed, int Denied, int Throttled, decimal Spend,
    IReadOnlyDictionary<string, int> Reasons, string FirstRequestId, string LastRequestId);

/// <summary>A policy version in force during the window.</summary>
public sealed record VersionInForce
{
    /// <summary>Version number.</summary>
    public required long Number { get; init; }

    /// <summary>SHA-256 of its canonical form.</summary>
    public required string Sha256 { get; init; }

    /// <summary>Who made it; null when it changed nothing of the subject's (another tenant's or service's change).</summary>
    public required string? Author { get; init; }

    /// <summary>Why; null when it changed nothing of the subject's.</summary>
    public required string? Reason { get; init; }

    /// <summary>When it was made.</summary>
    public required DateTimeOffset CreatedAt { get; init; }

    /// <summary>From when it was in force within the window.</summary>
    public required DateTimeOffset InForceFrom { get; init; }

    /// <summary>Until when it was in force within the window.</summary>
    public required DateTimeOffset InForceTo { get; init; }

    /// <summary>Request entries of the subject that name it.</summary>
    public int Requests { get; init; }

    /// <summary>What it changed from the version before it, limited to the subject's scope and the defaults.</summary>
    public IReadOnlyList<string> Changes { get; init; } = [];

    /// <summary>The controls it set for each of the subject's consumers (or its services and tenant when it has none).</summary>
    public IReadOnlyList<ScopeControls> Controls { get; init; } = [];
}

/// <summary>The controls active for one consumer (or service or tenant) under one policy version.</summary>
/// <param name="Scope"><c>consumer:ID</c>, <c>service:ID</c> or <c>tenant:ID</c>.</param>
/// <param name="Active">Each control set, in the order the gateway evaluates them.</param>
/// <param name="NotSet">Controls set at no level.</param>
public sealed record ScopeControls(string Scope, IReadOnlyList<ActiveControl> Active, IReadOnlyList<string> NotSet);

/// <summary>One control in force.</summary>
/// <param name="Control">As the ledger names it: <c>budget</c>, <c>rate_limit.requests</c>, <c>token_ceiling.output</c>, <c>kill_switch</c>, ….</param>
/// <param name="Scope">Whose: <c>consumer:ID</c>, <c>service:ID</c>, <c>tenant:ID</c>.</param>
/// <param name="Setting">Its value in words, and where it comes from.</param>
public sealed record ActiveControl(string Control, string Scope, string Setting);

/// <summary>What one control decided, as the ledger recorded it, over the window.</summary>
/// <param name="Control">The control.</param>
/// <param name="Scope">Its scope.</param>
/// <param name="Decision">pass, deny, throttle, modify, warn, not_evaluated.</param>
/// <param name="Count">How many requests.</param>
/// <param name="Limit">The last limit recorded with it.</param>
public sealed record ControlObservation(string Control, string? Scope, string Decision, int Count, decimal? Limit);

/// <summary>An entitlement of one of the subject's consumers, with its approval.</summary>
public sealed record EntitlementView
{
    /// <summary>The consumer.</summary>
    public required string Consumer { get; init; }

    /// <summary>The newest policy version of the window that holds it.</summary>
    public required long PolicyVersion { get; init; }

    /// <summary>Models it opens.</summary>
    public required IReadOnlyList<string> Models { get; init; }

    /// <summary><c>entitlement</c>, <c>models</c> (policy shorthand, no approver) or <c>category_default</c>.</summary>
    public required string Source { get; init; }

    /// <summary>Who approved it.</summary>
    public string? ApprovedBy { get; init; }

    /// <summary>The approval reference (an access request id for approvals through Custos).</summary>
    public string? Ticket { get; init; }

    /// <summary>Start of validity.</summary>
    public DateTimeOffset? ValidFrom { get; init; }

    /// <summary>End of validity.</summary>
    public DateTimeOffset? ValidUntil { get; init; }

    /// <summary>The access request named by the ticket, when Custos holds it.</summary>
    public AccessRequest? AccessRequest { get; init; }

    /// <summary>Allowed requests of the window that used one of its models.</summary>
    public int AllowedRequests { get; init; }
}

/// <summary>A credential of the subject and what was done to it.</summary>
public sealed record CredentialHistory
{
    /// <summary>The id.</summary>
    public required string Id { get; init; }

    /// <summary>The consumer it is bound to (newest version of the window).</summary>
    public string? Consumer { get; init; }

    /// <summary>Every consumer any policy version bound it to.</summary>
    public IReadOnlyList<string> BoundConsumers { get; init; } = [];

    /// <summary><c>api_key</c> or <c>workload_identity</c>.</summary>
    public string? Kind { get; init; }

    /// <summary>The first characters of the key.</summary>
    public string? Prefix { get; init; }

    /// <summary>Status at the end of the window: active, suspended, revoked, expired, or unknown.</summary>
    public required string StatusAtEnd { get; init; }

    /// <summary>When it was issued.</summary>
    public DateTimeOffset? CreatedAt { get; init; }

    /// <summary>When it expires.</summary>
    public DateTimeOffset? ExpiresAt { get; init; }

    /// <summary>When it was last used (any time).</summary>
    public DateTimeOffset? LastUsed { get; init; }

    /// <summary>Requests of the window made with it.</summary>
    public int RequestsInWindow { get; init; }

    /// <summary>Of those, refused.</summary>
    public int RefusedInWindow { get; init; }

    /// <summary>Administrative entries on it, up to the end of the window.</summary>
    public IReadOnlyList<AdminEntry> History { get; init; } = [];
}

/// <summary>Spend against budget.</summary>
public sealed record SpendSection
{
    /// <summary>Currency.</summary>
    public string? Currency { get; init; }

    /// <summary>Spend of the subject in the window.</summary>
    public decimal Total { get; init; }

    /// <summary>Requests with a cost.</summary>
    public int PricedRequests { get; init; }

    /// <summary>Each budget that applied to the subject (newest version of the window).</summary>
    public IReadOnlyList<BudgetView> Budgets { get; init; } = [];

    /// <summary>The cumulative spend series of the chart.</summary>
    public required SpendChart Chart { get; init; }
}

/// <summary>One budget that applied, and what was spent against it.</summary>
public sealed record BudgetView
{
    /// <summary><c>consumer:ID</c>, <c>service:ID</c> or <c>tenant:ID</c>.</summary>
    public required string Scope { get; init; }

    /// <summary>Amount per period.</summary>
    public required decimal Amount { get; init; }

    /// <summary>day or month.</summary>
    public required string Period { get; init; }

    /// <summary>hard or soft.</summary>
    public required string Mode { get; init; }

    /// <summary>The spend in the window of the subject's requests that count against this budget.</summary>
    public decimal SpendInWindow { get; init; }

    /// <summary>The last reading of this budget in the ledger: spent in its period before that request.</summary>
    public decimal? LastUsed { get; init; }

    /// <summary>The limit of that reading.</summary>
    public decimal? LastLimit { get; init; }

    /// <summary>When that reading was taken.</summary>
    public DateTimeOffset? LastReadingAt { get; init; }

    /// <summary>Requests refused by this budget in the window.</summary>
    public int Refused { get; init; }
}

/// <summary>Cumulative spend over the window against one budget line.</summary>
/// <param name="BudgetScope">The budget drawn, or null when there is none.</param>
/// <param name="BudgetAmount">Its amount.</param>
/// <param name="BudgetPeriod">Its period.</param>
/// <param name="Points">Cumulative spend after each priced request; <c>segment</c> changes where a budget period starts.</param>
/// <param name="Caption">What the chart shows, in words.</param>
public sealed record SpendChart(string? BudgetScope, decimal? BudgetAmount, string? BudgetPeriod, IReadOnlyList<SpendPoint> Points, string Caption);

/// <summary>One point of the spend chart.</summary>
public sealed record SpendPoint(DateTimeOffset At, decimal Cumulative, int Segment);

/// <summary>Alerts about the subject raised in the window.</summary>
/// <param name="Status"><c>configured</c> when detectors ran under the newest version in force, <c>disabled</c> when every one was switched off.</param>
/// <param name="Detail">What ran, who escalations reach, and what the list holds, in words.</param>
/// <param name="Count">How many alerts are listed.</param>
/// <param name="Alerts">Each alert, oldest first, with who was told and what was done about it, as it stood when the pack was made.</param>
public sealed record AlertsSection(string Status, string Detail, int Count, IReadOnlyList<Custos.Alerts.AlertView> Alerts)
{
    /// <summary>Detectors ran (some may be switched off; the detail names them).</summary>
    public const string Configured = "configured";

    /// <summary>Every detector was switched off: no alert could be raised.</summary>
    public const string Disabled = "disabled";
}


/// <summary>A message to an owner.</summary>
public sealed record NotificationView(DateTimeOffset CreatedAt, string? Event, string? Service, string Role, string Recipient, string Channel, string? Target,
    string Status, int Attempts);

/// <summary>Revocations, suspensions, throttles and kill switches.</summary>
/// <param name="Actions">Credential actions, kill switches and alert throttles of the window on the subject's credentials, consumers, services and tenant (including refused attempts).</param>
/// <param name="Refusals">Requests of the window refused, or cut while they ran (<c>deny.killed_in_flight</c>), because of them, by reason code.</param>
/// <param name="InForceAtEnd">What was stopped at the end of the window.</param>
public sealed record InterventionsSection(IReadOnlyList<AdminEntry> Actions, IReadOnlyDictionary<string, int> Refusals, IReadOnlyList<string> InForceAtEnd);

/// <summary>Owners to contact.</summary>
/// <param name="PolicyVersion">The version the contacts come from (the newest).</param>
/// <param name="Contacts">Each role of each service; a missing role has no name.</param>
/// <param name="Gaps">Missing governance of those services.</param>
public sealed record OwnersSection(long? PolicyVersion, IReadOnlyList<OwnerContact> Contacts, IReadOnlyList<string> Gaps);

/// <summary>One owner role of a service.</summary>
public sealed record OwnerContact(string Service, string Role, string? Name, string? Email, string? Webhook, string? Admin);

/// <summary>The subject's use before the window.</summary>
public sealed record BaselineView(DateTimeOffset From, DateTimeOffset To, long Requests, long Refused, decimal Spend, double RequestsPerHour,
    double WindowRequestsPerHour, double? Ratio);
