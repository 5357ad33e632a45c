using System.Globalization;
using System.Text;
using System.Text.Json;
using Custos.Alerts;
using Custos.ControlPlane;
using Custos.Policy;

namespace Custos.Reports;

/// <summary>The subject's use in the period before an incident window, accumulated entry by entry.</summary>
/// <param name="from">Start of the baseline period.</param>
/// <param name="to">End of the baseline period (the window's start).</param>
public sealed class BaselineStats(DateTimeOffset from, DateTimeOffset to)
{
    /// <summary>Start of the baseline period.</summary>
    public DateTimeOffset From { get; } = from;

    /// <summary>End of the baseline period.</summary>
    public DateTimeOffset To { get; } = to;

    /// <summary>Request entries.</summary>
    public long Requests { get; private set; }

    /// <summary>Of those, refused.</summary>
    public long Refused { get; private set; }

    /// <summary>Their spend.</summary>
    public decimal Spend { get; private set; }

    /// <summary>Counts one request entry of the baseline period.</summary>
    public void Add(RequestEntry entry)
    {
        Requests++;
        Refused += entry.Refused ? 1 : 0;
        Spend += entry.Cost ?? 0m;
    }
}

/// <summary>Everything an incident pack is built from, loaded by the caller (the CLI reads it from the store).</summary>
public sealed record IncidentInput
{
    /// <summary>What the pack is about.</summary>
    public required IncidentSubject Subject { get; init; }

    /// <summary>Start of the window (inclusive).</summary>
    public required DateTimeOffset From { get; init; }

    /// <summary>End of the window (exclusive).</summary>
    public required DateTimeOffset To { get; init; }

    /// <summary>When the pack is made.</summary>
    public required DateTimeOffset GeneratedAt { get; init; }

    /// <summary>Every policy version, oldest first.</summary>
    public required IReadOnlyList<PolicyVersion> History { get; init; }

    /// <summary>The subject's request entries in the window, taken in oldest first.</summary>
    public required IncidentWindow Window { get; init; }

    /// <summary>The subject's use before the window.</summary>
    public required BaselineStats Baseline { get; init; }

    /// <summary>Administrative entries up to the end of the window (the builder picks the subject's).</summary>
    public IReadOnlyList<AdminEntry> AdminEntries { get; init; } = [];

    /// <summary>Every access request.</summary>
    public IReadOnlyList<AccessRequest> AccessRequests { get; init; } = [];

    /// <summary>Owner notifications (the builder picks the subject's services and the window).</summary>
    public IReadOnlyList<Notification> Notifications { get; init; } = [];

    /// <summary>Stored alerts, at most <see cref="IncidentReportBuilder.AlertLimit"/> (the builder picks the subject's, raised in the window).</summary>
    public IReadOnlyList<Alert> Alerts { get; init; } = [];

    /// <summary>When each credential was last used.</summary>
    public IReadOnlyDictionary<string, DateTimeOffset> CredentialLastUsed { get; init; } = new Dictionary<string, DateTimeOffset>();

    /// <summary>The ledger verification over the window.</summary>
    public required ChainCheck Chain { get; init; }

    /// <summary>Requests shed in the window without an entry of their own.</summary>
    public long ShedInWindow { get; init; }
}

/// <summary>Builds the incident evidence pack from loaded data: pure logic, no store.</summary>
public static partial class IncidentReportBuilder
{
    /// <summary>Requests listed one by one in the timeline, at most.</summary>
    public const int DefaultTimelineLimit = 5000;

    /// <summary>The newest alerts the caller loads, at most; the pack says so when that may have left some of the window out.</summary>
    public const int AlertLimit = 100_000;

    /// <summary>The policy versions in force at some instant of [<paramref name="from"/>, <paramref name="to"/>), with when (clipped to the window).</summary>
    public static IReadOnlyList<(PolicyVersion Version, DateTimeOffset From, DateTimeOffset To)> VersionsInForce(IReadOnlyList<PolicyVersion> history,
        DateTimeOffset from, DateTimeOffset to)
    {
        var result = new List<(PolicyVersion, DateTimeOffset, DateTimeOffset)>();
        for (var i = 0; i < history.Count; i++)
        {
            var version = history[i];
            var end = i + 1 < history.Count ? history[i + 1].CreatedAt : DateTimeOffset.MaxValue;
            if (version.CreatedAt < to && end > from)
            {
                result.Add((version, version.CreatedAt > from ? version.CreatedAt : from, end < to ? end : to));
            }
        }

        return result;
    }

    /// <summary>True when <paramref name="entry"/> belongs to <paramref name="subject"/>.</summary>
    public static bool Matches(IncidentSubject subject, RequestEntry entry) => subject.Kind switch
    {
        "consumer" => entry.Consumer == subject.Id,
        "credential" => entry.CredentialId == subject.Id,
        "service" => entry.Service == subject.Id,
        _ => entry.Tenant == subject.Id,
    };

    /// <summary>True when the alert <paramref name="signal"/> raised belongs to <paramref name="subject"/>, as a request would.</summary>
    public static bool Matches(IncidentSubject subject, AlertSignal signal) => subject.Kind switch
    {
        "consumer" => signal.Consumer == subject.Id,
        "credential" => signal.CredentialId == subject.Id,
        "service" => signal.Service == subject.Id,
        _ => signal.Tenant == subject.Id,
    };

    /// <summary>True when some policy version names the subject.</summary>
    public static bool Exists(IncidentSubject subject, IEnumerable<PolicyVersion> history) => history.Any(v => subject.Kind switch
    {
        "consumer" => v.Document.Consumers.Any(c => c.Id == subject.Id),
        "credential" => v.Document.Credentials.Any(c => c.Id == subject.Id),
        "service" => v.Document.Services.Any(s => s.Id == subject.Id),
        _ => v.Document.Tenants.Any(t => t.Id == subject.Id),
    });

    /// <summary>
    /// The baseline period of a window: the same length immediately before it, at most 30 days, and starting no earlier
    /// than the earliest time there is (a window near year 1 has a shorter baseline, or none).
    /// </summary>
    public static (DateTimeOffset From, DateTimeOffset To) BaselineWindow(DateTimeOffset from, DateTimeOffset to)
    {
        var length = to - from;
        if (length > TimeSpan.FromDays(30))
        {
            length = TimeSpan.FromDays(30);
        }

        var room = TimeSpan.FromTicks(Math.Min(from.Ticks, from.UtcTicks)); // from the earliest time, on its clock and in UTC
        return (from - (length < room ? length : room), from);
    }

    /// <summary>Builds the pack.</summary>
    public static IncidentReport Build(IncidentInput input)
    {
        var (from, to) = (input.From, input.To);
        var window = input.Window;
        var inForce = VersionsInForce(input.History, from, to).ToList();
        foreach (var number in window.ByVersion.Keys.Where(n => inForce.All(v => v.Version.Number != n)))
        {
            // A request that started just before a version changed names the older one: it was in force for that request.
            if (input.History.FirstOrDefault(v => v.Number == number) is { } named)
            {
                inForce.Add((named, from, from));
            }
        }

        inForce.Sort((a, b) => a.Version.Number.CompareTo(b.Version.Number));
        var scope = ResolveScope(input.Subject, inForce.Select(v => v.Version.Document), window);
        var context = new Context(input, inForce, scope);
        var findings = Findings(context);
        var notes = new List<string>();
        if (inForce.Count == 0)
        {
            notes.Add("No policy version was in force during the window: there are no controls to report.");
        }

        if (input.Chain.Status == ChainCheck.NotVerified)
        {
            notes.Add("The ledger was not verified: " + input.Chain.Detail);
        }

        if (input.ShedInWindow > 0)
        {
            notes.Add($"{ReportText.Plural(input.ShedInWindow, "request was", "requests were")} shed with 503 in the window while the ledger queue was full and counted without an entry of their own; they cannot be attributed to a subject.");
        }

        if (input.Alerts.Count >= AlertLimit && input.Alerts.Min(a => a.RaisedAt) > from)
        {
            notes.Add($"Only the newest {ReportText.Count(AlertLimit)} alerts were read and the oldest of them was raised after the window started: " +
                "earlier alerts of the window may be missing (custos alerts lists them all).");
        }

        var timeline = BuildTimeline(context);
        if (timeline.OmittedRequests > 0)
        {
            notes.Add($"The timeline lists the first {ReportText.Count(window.TimelineLimit)} requests one by one; {ReportText.Count(timeline.OmittedRequests)} more are counted in its activity buckets (custos requests lists them all).");
        }

        return new IncidentReport
        {
            GeneratedAt = input.GeneratedAt,
            Subject = input.Subject,
            From = from,
            To = to,
            Scope = scope,
            Summary = Summarise(input),
            Classification = Classify(findings, context),
            Findings = findings,
            Timeline = timeline,
            PolicyVersions = [.. inForce.Select(v => VersionView(context, v.Version, v.From, v.To))],
            ControlsObserved = [.. window.Controls.Select(c => new ControlObservation(c.Key.Control, c.Key.Scope, c.Key.Decision, c.Value.Count, c.Value.Limit))
                .OrderBy(o => o.Control, StringComparer.Ordinal).ThenBy(o => o.Scope, StringComparer.Ordinal).ThenBy(o => o.Decision, StringComparer.Ordinal)],
            Entitlements = EntitlementViews(context),
            AccessRequests = [.. input.AccessRequests.Where(a => scope.Consumers.Contains(a.Consumer))],
            Credentials = CredentialViews(context),
            Spend = SpendView(context),
            Alerts = AlertViews(context),
            Notifications = NotificationViews(context),
            Interventions = InterventionViews(context),
            Owners = OwnerViews(context),
            Chain = input.Chain,
            Baseline = BaselineViewOf(input),
            Notes = notes,
        };
    }

    /// <summary>What the builder works from, resolved once.</summary>
    private sealed class Context(IncidentInput input, IReadOnlyList<(PolicyVersion Version, DateTimeOffset From, DateTimeOffset To)> inForce, IncidentScope scope)
    {
        public IncidentInput Input { get; } = input;

        public IReadOnlyList<(PolicyVersion Version, DateTimeOffset From, DateTimeOffset To)> InForce { get; } = inForce;

        public IncidentScope Scope { get; } = scope;

        public IncidentWindow Window => Input.Window;

        /// <summary>The allowed requests of a consumer for the models (canonical names in <paramref name="tenant"/>) <paramref name="models"/> keeps.</summary>
        public IncidentWindow.Sample AllowedFor(string consumer, TenantConfig? tenant, Func<string, bool> models)
            => IncidentWindow.Sample.Merge(Window.AllowedByConsumerModel.Where(a => a.Key.Consumer == consumer && models(PolicyControls.CanonicalModel(tenant, a.Key.Model)))
                .Select(a => a.Value));

        /// <summary>The newest version in force, or null.</summary>
        public PolicyDocument? Last => InForce.Count == 0 ? null : InForce[^1].Version.Document;

        /// <summary>Access request ids of the subject's consumers.</summary>
        public HashSet<string> AccessRequestIds { get; } = [.. input.AccessRequests.Where(a => scope.Consumers.Contains(a.Consumer)).Select(a => a.Id)];

        /// <summary>The subject's alerts raised in the window, oldest first.</summary>
        public IReadOnlyList<Alert> Alerts { get; } = [.. input.Alerts.Where(a => a.RaisedAt >= input.From && a.RaisedAt < input.To && Matches(input.Subject, a.Signal))
            .OrderBy(a => a.RaisedAt).ThenBy(a => a.Id.Length).ThenBy(a => a.Id, StringComparer.Ordinal)];

        private HashSet<string>? _alertIds;

        private readonly Dictionary<long, bool> _versionConcerns = [];

        /// <summary>
        /// True when an administrative entry concerns the subject: an action on it, or a policy version that changed its part
        /// of the policy (<see cref="ChangesInScope"/>). Another tenant's change, and the reason given for it, is that
        /// tenant's business; so is a refused attempt to apply a whole policy, which changed nothing.
        /// </summary>
        public bool Concerns(AdminEntry entry)
        {
            var colon = entry.Target.IndexOf(':', StringComparison.Ordinal);
            if (colon < 0)
            {
                return entry.Target == "policy" && entry.Action == "policy.version_created" && entry.PolicyVersion is { } number
                    && VersionConcerns(number);
            }

            var id = entry.Target[(colon + 1)..];
            return entry.Target[..colon] switch
            {
                "credential" => Scope.Credentials.Contains(id),
                "consumer" => Scope.Consumers.Contains(id),
                "service" => Scope.Services.Contains(id),
                "tenant" => Scope.Tenants.Contains(id),
                "access_request" => AccessRequestIds.Contains(id),
                "alert" => (_alertIds ??= [.. Alerts.Select(a => a.Id)]).Contains(id),
                _ => false,
            };
        }

        /// <summary>True when policy version <paramref name="number"/> changed the subject's part of the policy.</summary>
        public bool VersionConcerns(long number)
        {
            if (!_versionConcerns.TryGetValue(number, out var concerns))
            {
                var version = Input.History.FirstOrDefault(v => v.Number == number);
                _versionConcerns[number] = concerns = version is not null && ChangesInScope(Input.History, Scope, version).Count > 0;
            }

            return concerns;
        }

        /// <summary>Administrative entries of the window that concern the subject.</summary>
        public IEnumerable<AdminEntry> AdminInWindow => Input.AdminEntries.Where(a => a.Timestamp >= Input.From && a.Timestamp < Input.To && Concerns(a));
    }

    private static IncidentScope ResolveScope(IncidentSubject subject, IEnumerable<PolicyDocument> documents, IncidentWindow window)
    {
        var docs = documents.ToList();
        var tenants = new SortedSet<string>(StringComparer.Ordinal);
        var services = new SortedSet<string>(StringComparer.Ordinal);
        var consumers = new SortedSet<string>(StringComparer.Ordinal);
        var credentials = new SortedSet<string>(StringComparer.Ordinal);
        switch (subject.Kind)
        {
            case "consumer":
                consumers.Add(subject.Id);
                break;
            case "credential":
                credentials.Add(subject.Id);
                consumers.UnionWith(docs.SelectMany(d => d.Credentials.Where(c => c.Id == subject.Id).Select(c => c.Consumer)));
                break;
            case "service":
                services.Add(subject.Id);
                consumers.UnionWith(docs.SelectMany(d => d.Consumers.Where(c => c.Service == subject.Id).Select(c => c.Id)));
                break;
            default:
                tenants.Add(subject.Id);
                services.UnionWith(docs.SelectMany(d => d.Services.Where(s => s.Tenant == subject.Id).Select(s => s.Id)));
                consumers.UnionWith(docs.SelectMany(d => d.Consumers.Where(c => services.Contains(c.Service)).Select(c => c.Id)));
                break;
        }

        consumers.UnionWith(window.Consumers);
        services.UnionWith(window.Services);
        tenants.UnionWith(window.Tenants);
        if (subject.Kind != "credential")
        {
            credentials.UnionWith(window.Credentials.Keys);
        }

        foreach (var doc in docs)
        {
            foreach (var consumer in doc.Consumers.Where(c => consumers.Contains(c.Id)))
            {
                services.Add(consumer.Service);
                if (subject.Kind != "credential")
                {
                    credentials.UnionWith(doc.Credentials.Where(c => c.Consumer == consumer.Id).Select(c => c.Id));
                }
            }

            tenants.UnionWith(doc.Services.Where(s => services.Contains(s.Id)).Select(s => s.Tenant));
        }

        return new IncidentScope([.. tenants], [.. services], [.. consumers], [.. credentials]);
    }

    private static IncidentSummary Summarise(IncidentInput input)
    {
        var window = input.Window;
        var peak = window.PeakMinute();
        return new IncidentSummary
        {
            Requests = window.Count,
            Allowed = window.Allowed,
            Denied = window.Denied,
            Throttled = window.Throttled,
            Spend = window.Spend,
            Currency = window.Currency,
            Reasons = IncidentWindow.Sorted(window.Reasons),
            Models = IncidentWindow.Sorted(window.Models),
            FirstRequest = window.First,
            LastRequest = window.Last,
            PeakMinute = peak?.Minute,
            PeakMinuteRequests = peak?.Requests ?? 0,
            ShedInWindow = input.ShedInWindow,
        };
    }

    private static Timeline BuildTimeline(Context context)
    {
        var window = context.Window;
        var events = new List<TimelineEvent>();
        var listed = window.Listed;
        events.AddRange(listed.Select(r => new TimelineEvent(r.Timestamp, "request", r.RequestId, $"{r.Consumer ?? "unidentified caller"} / {r.CredentialId ?? "no credential"}",
            RequestWhat(r), r.Decision, r.Reasons, r.PolicyVersion)));
        events.AddRange(context.AdminInWindow.Select(a => new TimelineEvent(a.Timestamp, "admin", a.Position, a.Actor, AdminWhat(a), a.Action, [], a.PolicyVersion)));
        events.Sort((a, b) => a.At.CompareTo(b.At));

        return new Timeline(events, window.Count - listed.Count, window.BucketSeconds, window.Activity());
    }

    /// <summary>
    /// A request in words: model, status, outcome, cost, and the version that cut it while it ran (the entry is at its start,
    /// so before that version's change in the timeline).
    /// </summary>
    internal static string RequestWhat(RequestEntry r)
        => $"{r.Model ?? "(no model)"}: {r.Status} {r.Outcome}" + (r.Cost is { } cost && cost > 0 ? $", {ReportText.Money(cost, r.Currency)}" : "")
            + (r.Reasons.Count > 0 ? " [" + string.Join(", ", r.Reasons) + "]" : "")
            + (r.CutByPolicyVersion is { } cutBy ? ", cut by v" + cutBy.ToString(CultureInfo.InvariantCulture) : "");

    /// <summary>An administrative entry in words (without its action, which the timeline shows beside it).</summary>
    internal static string AdminWhat(AdminEntry a)
    {
        var change = a.Action == "policy.version_created"
            ? $"policy version {a.PolicyVersion} ({Short(a.After)})"
            : $"{a.Target}" + (a.Before is null && a.After is null ? "" : $": {a.Before ?? "-"} -> {a.After ?? "-"}");
        return change + (a.Reason is null ? "" : $"; reason: {a.Reason}");

        static string Short(string? hash) => hash is { Length: > 12 } ? hash[..12] : hash ?? "-";
    }

    /// <summary>What <paramref name="version"/> changed from the version before of the subject's scope, defaults and gateway settings.</summary>
    private static List<string> ChangesInScope(IReadOnlyList<PolicyVersion> history, IncidentScope scope, PolicyVersion version)
    {
        var previous = history.LastOrDefault(v => v.Number < version.Number);
        var ids = scope.Consumers.Select(c => $"consumers[{c}]").Concat(scope.Services.Select(s => $"services[{s}]"))
            .Concat(scope.Tenants.Select(t => $"tenants[{t}]")).Concat(scope.Credentials.Select(c => $"credentials[{c}]")).ToList();
        // Webhooks masked, as in the owners' contacts: a webhook's change is shown, not its secret.
        return [.. PolicyDiff.Compute(previous is null ? null : WebhookAddress.Masked(previous.Document), WebhookAddress.Masked(version.Document))
            .Where(c => c.Path.StartsWith("defaults", StringComparison.Ordinal) || c.Path.StartsWith("gateway", StringComparison.Ordinal)
                || ids.Any(id => c.Path.StartsWith(id, StringComparison.Ordinal)))
            .Select(c => c.ToString())];
    }

    private static VersionInForce VersionView(Context context, PolicyVersion version, DateTimeOffset from, DateTimeOffset to)
    {
        var doc = version.Document;
        var scope = context.Scope;
        var previous = context.Input.History.LastOrDefault(v => v.Number < version.Number);
        var changes = ChangesInScope(context.Input.History, scope, version);
        var concerns = previous is null || changes.Count > 0; // else who made it and why is another scope's business
        var controls = new List<ScopeControls>();
        foreach (var consumer in doc.Consumers.Where(c => scope.Consumers.Contains(c.Id)))
        {
            controls.Add(PolicyControls.ForConsumer(doc, consumer));
        }

        if (controls.Count == 0)
        {
            controls.AddRange(doc.Services.Where(s => scope.Services.Contains(s.Id)).Select(s => PolicyControls.ForService(doc, s)));
        }

        return new VersionInForce
        {
            Number = version.Number,
            Sha256 = version.Sha256,
            Author = concerns ? version.Author : null,
            Reason = concerns ? version.Reason : null,
            CreatedAt = version.CreatedAt,
            InForceFrom = from,
            InForceTo = to,
            Requests = context.Window.ByVersion.GetValueOrDefault(version.Number),
            Changes = previous is null ? ["(the first version)"] : changes,
            Controls = controls,
        };
    }

    private static List<EntitlementView> EntitlementViews(Context context)
    {
        var result = new List<EntitlementView>();
        foreach (var consumerId in context.Scope.Consumers)
        {
            var holder = context.InForce.LastOrDefault(v => v.Version.Document.Consumers.Any(c => c.Id == consumerId)).Version;
            if (holder is null)
            {
                continue;
            }

            var doc = holder.Document;
            var consumer = doc.Consumers.First(c => c.Id == consumerId);
            var tenant = PolicyControls.TenantOf(doc, PolicyControls.ServiceOf(doc, consumer));
            foreach (var e in PolicyControls.Entitlements(doc, consumer))
            {
                var models = e.Models.Select(m => PolicyControls.CanonicalModel(tenant, m)).ToHashSet(StringComparer.Ordinal);
                result.Add(new EntitlementView
                {
                    Consumer = consumerId,
                    PolicyVersion = holder.Number,
                    Models = e.Models,
                    Source = e.Source,
                    ApprovedBy = e.ApprovedBy,
                    Ticket = e.Ticket,
                    ValidFrom = e.ValidFrom,
                    ValidUntil = e.ValidUntil,
                    AccessRequest = e.Ticket is null ? null : context.Input.AccessRequests.FirstOrDefault(a => a.Id == e.Ticket),
                    AllowedRequests = context.AllowedFor(consumerId, tenant, models.Contains).Count,
                });
            }
        }

        return result;
    }

    private static List<CredentialHistory> CredentialViews(Context context)
    {
        var input = context.Input;
        var result = new List<CredentialHistory>();
        foreach (var id in context.Scope.Credentials)
        {
            var holder = context.InForce.LastOrDefault(v => v.Version.Document.Credentials.Any(c => c.Id == id)).Version
                ?? input.History.LastOrDefault(v => v.CreatedAt < input.To && v.Document.Credentials.Any(c => c.Id == id));
            var config = holder?.Document.Credentials.First(c => c.Id == id);
            var used = context.Window.Credentials.GetValueOrDefault(id);
            result.Add(new CredentialHistory
            {
                Id = id,
                Consumer = config?.Consumer,
                BoundConsumers = [.. input.History.Where(v => v.CreatedAt < input.To).SelectMany(v => v.Document.Credentials.Where(c => c.Id == id).Select(c => c.Consumer))
                    .Distinct(StringComparer.Ordinal)],
                Kind = config is null ? null : config.KeySha256 is null ? "workload_identity" : "api_key",
                Prefix = config?.Prefix,
                StatusAtEnd = config is null ? "unknown (in no policy version)" : StatusAt(config, input.To),
                CreatedAt = config?.CreatedAt,
                ExpiresAt = config?.ExpiresAt,
                LastUsed = input.CredentialLastUsed.TryGetValue(id, out var last) ? last : null,
                RequestsInWindow = used?.Count ?? 0,
                RefusedInWindow = used?.Refused ?? 0,
                History = [.. input.AdminEntries.Where(a => IsCredentialTarget(a, id) && a.Timestamp < input.To)],
            });
        }

        return result;
    }

    /// <summary>True when <paramref name="entry"/> acts on credential <paramref name="id"/> (target <c>credential:ID</c>).</summary>
    private static bool IsCredentialTarget(AdminEntry entry, string id) => entry.Target == "credential:" + id;

    /// <summary>A credential's status at an instant: revoked, suspended, expired or active.</summary>
    internal static string StatusAt(CredentialConfig credential, DateTimeOffset at) => credential.Status switch
    {
        CredentialStatus.Revoked => "revoked",
        CredentialStatus.Suspended => "suspended",
        _ when credential.ExpiresAt is { } e && e <= at => "expired",
        _ => "active",
    };

    private static SpendSection SpendView(Context context)
    {
        var window = context.Window;
        var currency = window.Currency;
        var doc = context.Last;
        var budgets = new List<BudgetView>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        (string Scope, BudgetConfig Budget, TenantConfig? Tenant)? chartBudget = null;
        if (doc is not null)
        {
            currency ??= PolicyControls.CurrencyOf(doc.Tenants.FirstOrDefault(t => context.Scope.Tenants.Contains(t.Id)));
            var levels = new List<(string Scope, BudgetConfig Budget, TenantConfig? Tenant)>();
            foreach (var consumer in doc.Consumers.Where(c => context.Scope.Consumers.Contains(c.Id)))
            {
                var tenant = PolicyControls.TenantOf(doc, PolicyControls.ServiceOf(doc, consumer));
                if (PolicyControls.EffectiveLimits(doc, consumer).Budget is { } b)
                {
                    levels.Add(("consumer:" + consumer.Id, b, tenant));
                }
            }

            foreach (var service in doc.Services.Where(s => context.Scope.Services.Contains(s.Id) && s.Limits.Budget is not null))
            {
                levels.Add(("service:" + service.Id, service.Limits.Budget!, doc.Tenants.FirstOrDefault(t => t.Id == service.Tenant)));
            }

            foreach (var tenant in doc.Tenants.Where(t => context.Scope.Tenants.Contains(t.Id) && t.Limits.Budget is not null))
            {
                levels.Add(("tenant:" + tenant.Id, tenant.Limits.Budget!, tenant));
            }

            foreach (var (scope, budget, tenant) in levels.Where(l => seen.Add(l.Scope)))
            {
                var reading = window.LastBudget.TryGetValue(scope, out var last) ? last : default;
                budgets.Add(new BudgetView
                {
                    Scope = scope,
                    Amount = budget.Amount,
                    Period = PolicyNames.Of(budget.Period),
                    Mode = PolicyNames.Of(budget.Mode),
                    SpendInWindow = window.SpendByScope.GetValueOrDefault(scope),
                    LastUsed = reading.Used,
                    LastLimit = reading.Reading?.Limit,
                    LastReadingAt = reading.Reading is null ? null : reading.At,
                    Refused = window.BudgetRefused.GetValueOrDefault(scope),
                });
            }

            // The chart's line: the subject's own level if it has a budget, else the nearest enclosing one (never a narrower one).
            string[] order = context.Input.Subject.Kind switch
            {
                "consumer" or "credential" => ["consumer:", "service:", "tenant:"],
                "service" => ["service:", "tenant:"],
                _ => ["tenant:"],
            };
            foreach (var prefix in order)
            {
                if (levels.FirstOrDefault(l => l.Scope.StartsWith(prefix, StringComparison.Ordinal)) is { Scope: not null } level)
                {
                    chartBudget = level;
                    break;
                }
            }
        }

        var points = new List<SpendPoint>();
        var cumulative = 0m;
        var segment = 0;
        DateTimeOffset? periodEnd = null;
        TimeZoneInfo zone = TimeZoneInfo.Utc;
        if (chartBudget?.Tenant?.TimeZone is { } zoneId)
        {
            try
            {
                zone = TimeZoneInfo.FindSystemTimeZoneById(zoneId);
            }
            catch (TimeZoneNotFoundException)
            {
                zone = TimeZoneInfo.Utc;
            }
        }

        points.Add(new SpendPoint(context.Input.From, 0m, 0));
        foreach (var (at, cost) in window.PricedRequests())
        {
            if (chartBudget is { } cb)
            {
                periodEnd ??= PeriodEnd(context.Input.From, cb.Budget.Period, zone);
                if (at >= periodEnd)
                {
                    // A new budget period: the budget renews, so the line restarts from zero.
                    while (at >= periodEnd)
                    {
                        periodEnd = PeriodEnd(periodEnd.Value, cb.Budget.Period, zone);
                    }

                    segment++;
                    cumulative = 0m;
                    points.Add(new SpendPoint(at, 0m, segment));
                }
            }

            cumulative += cost;
            points.Add(new SpendPoint(at, cumulative, segment));
        }

        var total = window.Spend;
        var caption = chartBudget is { } chosen
            ? $"Cumulative spend of {context.Input.Subject} in the window against the budget of {chosen.Scope}: {ReportText.Budget(chosen.Budget, currency)}. " +
                $"By the end of the window: {ReportText.Money(cumulative, currency)} in the current period, " +
                $"{(chosen.Budget.Amount > 0 ? (cumulative / chosen.Budget.Amount * 100).ToString("0.####", System.Globalization.CultureInfo.InvariantCulture) : "-")}% of the budget." +
                (segment > 0 ? $" The line restarts at each new budget {PolicyNames.Of(chosen.Budget.Period)} ({segment} renewal(s) in the window)." : "") +
                (!chosen.Scope.StartsWith(context.Input.Subject.Kind is "credential" ? "consumer" : context.Input.Subject.Kind, StringComparison.Ordinal)
                    ? $" The subject has no budget of its own; {chosen.Scope}'s budget is shared with the rest of that scope." : "")
            : $"Cumulative spend of {context.Input.Subject} in the window. No budget applied at any level, so there is no budget line.";
        return new SpendSection
        {
            Currency = currency,
            Total = total,
            PricedRequests = window.Priced,
            Budgets = budgets,
            Chart = new SpendChart(chartBudget?.Scope, chartBudget?.Budget.Amount, chartBudget is { } c ? PolicyNames.Of(c.Budget.Period) : null, Thin(points), caption),
        };
    }

    /// <summary>Keeps a chart to at most ~1,000 points, always with the first, the last and every period start.</summary>
    private static List<SpendPoint> Thin(List<SpendPoint> points)
    {
        if (points.Count <= 1000)
        {
            return points;
        }

        var step = (points.Count + 999) / 1000;
        return [.. points.Where((p, i) => i % step == 0 || i == points.Count - 1 || (i > 0 && points[i - 1].Segment != p.Segment))];
    }

    private static DateTimeOffset PeriodEnd(DateTimeOffset instant, BudgetPeriod period, TimeZoneInfo zone)
    {
        var local = TimeZoneInfo.ConvertTime(instant, zone);
        var start = period == BudgetPeriod.Day ? local.Date : new DateTime(local.Year, local.Month, 1, 0, 0, 0, DateTimeKind.Unspecified);
        var next = period == BudgetPeriod.Day ? start.AddDays(1) : start.AddMonths(1);
        return new DateTimeOffset(next, zone.GetUtcOffset(next)).ToUniversalTime();
    }

    private static List<NotificationView> NotificationViews(Context context)
    {
        var input = context.Input;
        var result = new List<NotificationView>();
        foreach (var n in input.Notifications.Where(n => n.CreatedAt >= input.From && n.CreatedAt < input.To).OrderBy(n => n.CreatedAt))
        {
            string? eventName = null, service = null, target = null;
            try
            {
                using var payload = JsonDocument.Parse(n.Payload);
                eventName = Json.Text(payload.RootElement, "event");
                service = Json.Text(payload.RootElement, "service");
                target = Json.Text(payload.RootElement, "target") ?? Json.Text(payload.RootElement, "alert_id");
            }
            catch (JsonException)
            {
                // A payload that is not JSON still counts as a message; it just says less.
            }

            if (service is not null && context.Scope.Services.Contains(service))
            {
                result.Add(new NotificationView(n.CreatedAt, eventName, service, n.Role, n.Recipient, n.Channel, target, n.Status, n.Attempts));
            }
        }

        return result;
    }

    private static AlertsSection AlertViews(Context context)
    {
        var alerts = context.Alerts;
        var views = alerts.Select(AlertView.Of).ToList();

        var detail = new StringBuilder($"{ReportText.Plural(views.Count, "alert")} about {context.Input.Subject} raised in the window");
        if (views.Count > 0)
        {
            detail.Append(" (").AppendJoin(", ", views.GroupBy(v => v.Severity).OrderBy(g => g.Key, StringComparer.Ordinal).Select(g => $"{g.Count()} {g.Key}")).Append(')');
        }

        detail.Append(". ");
        var status = AlertsSection.Configured;
        if (context.InForce.Count == 0)
        {
            detail.Append("No policy version was in force, so no detector settings apply. ");
        }
        else
        {
            var number = context.InForce[^1].Version.Number;
            var rules = new AlertRules(context.Last!.Alerts);
            var off = AlertTypes.Detectors.Where(d => !rules.IsEnabled(d)).ToList();
            if (off.Count == AlertTypes.Detectors.Count)
            {
                status = AlertsSection.Disabled;
                detail.Append($"Every detector is switched off (alerts.disabled) under v{number}, so nothing could be raised. ");
            }
            else
            {
                detail.Append($"{AlertTypes.Detectors.Count - off.Count} of {AlertTypes.Detectors.Count} detectors run under v{number}")
                    .Append(off.Count > 0 ? $" ({string.Join(", ", off)} switched off)" : "")
                    .Append($"; an alert goes to the owner role responsible and, unacknowledged after {rules.EscalateAfter.TotalMinutes:0} minutes, escalates to the next owner")
                    .Append(rules.Security is { } security ? $" and to security ({security.Name}). " : "; no security contact is named (alerts.security), so escalations reach nobody in security. ");
            }
        }

        detail.Append("Status, acknowledgement and resolution are as they stood when the pack was made.");
        return new AlertsSection(status, detail.ToString(), views.Count, views);
    }

    private static InterventionsSection InterventionViews(Context context)
    {
        var actions = context.AdminInWindow.Where(a => a.Action.StartsWith("credential.", StringComparison.Ordinal) || a.Action.StartsWith("kill_switch.", StringComparison.Ordinal)
            || a.Action is "consumer.throttled" or "consumer.unthrottled").ToList();
        string[] stops = ["deny.credential_revoked", "deny.credential_suspended", "deny.credential_expired", "deny.consumer_suspended", "deny.service_suspended",
            "deny.tenant_suspended", "deny.service_ungoverned", "deny.killed_in_flight"];
        var refusals = IncidentWindow.Sorted(context.Window.Reasons, stops.Contains);
        var atEnd = new List<string>();
        if (context.Last is { } doc)
        {
            atEnd.AddRange(doc.Tenants.Where(t => context.Scope.Tenants.Contains(t.Id) && t.Suspended == true).Select(t => $"kill switch engaged on tenant:{t.Id}"));
            atEnd.AddRange(doc.Services.Where(s => context.Scope.Services.Contains(s.Id) && s.Suspended == true).Select(s => $"kill switch engaged on service:{s.Id}"));
            atEnd.AddRange(doc.Consumers.Where(c => context.Scope.Consumers.Contains(c.Id) && c.Suspended == true).Select(c => $"kill switch engaged on consumer:{c.Id}"));
            atEnd.AddRange(doc.Credentials.Where(c => context.Scope.Credentials.Contains(c.Id)).Select(c => (c, StatusAt(c, context.Input.To)))
                .Where(x => x.Item2 != "active").Select(x => $"credential {x.c.Id} ({x.c.Consumer}) {x.Item2}"));
        }

        return new InterventionsSection(actions, refusals, atEnd);
    }

    private static OwnersSection OwnerViews(Context context)
    {
        var contacts = new List<OwnerContact>();
        var gaps = new List<string>();
        long? newest = null;
        foreach (var serviceId in context.Scope.Services)
        {
            var holder = context.Input.History.LastOrDefault(v => v.Document.Services.Any(s => s.Id == serviceId));
            if (holder is null)
            {
                continue;
            }

            newest = Math.Max(newest ?? 0, holder.Number);
            var service = holder.Document.Services.First(s => s.Id == serviceId);
            var owners = service.Owners;
            var hasAgents = holder.Document.Consumers.Any(c => c.Service == serviceId && c.Category == ConsumerCategory.Agent);
            var roles = new List<(string, OwnerConfig?)> { ("policy", owners.Policy), ("billing", owners.Billing), ("technical", owners.Technical) };
            if (hasAgents || owners.AgentOperator is not null || owners.BusinessSponsor is not null)
            {
                roles.Add(("agent_operator", owners.AgentOperator));
                roles.Add(("business_sponsor", owners.BusinessSponsor));
            }

            // A webhook as scheme and host: a pack is handed on, and an address such as Slack's is its own secret.
            contacts.AddRange(roles.Select(r => new OwnerContact(serviceId, r.Item1, r.Item2?.Name, r.Item2?.Email,
                r.Item2?.Webhook is { } webhook ? WebhookAddress.Masked(webhook) : null, r.Item2?.Admin)));
            gaps.AddRange(Governance.Gaps(holder.Document, service).Select(g => g.Message));
        }

        return new OwnersSection(newest, contacts, gaps);
    }

    private static BaselineView BaselineViewOf(IncidentInput input)
    {
        var baseline = input.Baseline;
        var baselineHours = Math.Max((baseline.To - baseline.From).TotalHours, 1.0 / 3600);
        var windowHours = Math.Max((input.To - input.From).TotalHours, 1.0 / 3600);
        var baseRate = baseline.Requests / baselineHours;
        var windowRate = input.Window.Count / windowHours;
        return new BaselineView(baseline.From, baseline.To, baseline.Requests, baseline.Refused, baseline.Spend, Math.Round(baseRate, 3), Math.Round(windowRate, 3),
            baseline.Requests == 0 ? null : Math.Round(windowRate / baseRate, 2));
    }
}
