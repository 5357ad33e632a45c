using Custos.ControlPlane;
using Custos.Policy;

namespace Custos.Reports;

/// <summary>Recent ledger activity, accumulated request entry by request entry, for the posture report.</summary>
/// <param name="now">The report's instant: activity is counted over the 30 and 90 days before it.</param>
/// <param name="revokedAt">When each credential was revoked (from its <c>credential.revoked</c> ledger entry).</param>
public sealed class LedgerActivity(DateTimeOffset now, IReadOnlyDictionary<string, DateTimeOffset> revokedAt)
{
    private readonly Dictionary<string, HashSet<string>> _credentialConsumers = new(StringComparer.Ordinal);
    private readonly Dictionary<string, HashSet<string>> _credentialServices = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (int Count, string First)> _afterRevocation = new(StringComparer.Ordinal);

    /// <summary>Start of the 90-day period (credential use); read entries from here.</summary>
    public DateTimeOffset Since { get; } = now.AddDays(-90);

    /// <summary>Start of the 30-day period (traffic statistics).</summary>
    public DateTimeOffset Since30 { get; } = now.AddDays(-30);

    /// <summary>Request entries of the last 30 days.</summary>
    public long Requests30 { get; private set; }

    /// <summary>Of those, refused.</summary>
    public long Refused30 { get; private set; }

    /// <summary>Of those, from callers that could not be identified (no consumer).</summary>
    public long Unidentified30 { get; private set; }

    /// <summary>Allowed requests with no consumer or credential (should never happen).</summary>
    public long AllowedUnattributed30 { get; private set; }

    /// <summary>Requests the provider failed or cut short.</summary>
    public long UpstreamFailures30 { get; private set; }

    /// <summary>Requests whose tokens are the gateway's estimate.</summary>
    public long Estimated30 { get; private set; }

    /// <summary>The newest request entry seen.</summary>
    public DateTimeOffset? LastRequest { get; private set; }

    /// <summary>Policy versions named by the entries.</summary>
    public HashSet<long> PolicyVersions { get; } = [];

    /// <summary>Consumers each credential acted for in the last 90 days.</summary>
    public IReadOnlyDictionary<string, HashSet<string>> CredentialConsumers => _credentialConsumers;

    /// <summary>Services each credential acted for in the last 90 days.</summary>
    public IReadOnlyDictionary<string, HashSet<string>> CredentialServices => _credentialServices;

    /// <summary>Allowed requests made with a credential after its revocation, and the first of them.</summary>
    public IReadOnlyDictionary<string, (int Count, string First)> AllowedAfterRevocation => _afterRevocation;

    /// <summary>Counts one request entry (of the last 90 days).</summary>
    public void Add(RequestEntry entry)
    {
        if (LastRequest is null || entry.Timestamp > LastRequest)
        {
            LastRequest = entry.Timestamp;
        }

        PolicyVersions.Add(entry.PolicyVersion);
        if (entry.CredentialId is { } credential)
        {
            if (entry.Consumer is { } consumer)
            {
                Set(_credentialConsumers, credential).Add(consumer);
            }

            if (entry.Service is { } service)
            {
                Set(_credentialServices, credential).Add(service);
            }

            if (entry.Decision == "allow" && revokedAt.TryGetValue(credential, out var revoked) && entry.Timestamp > revoked)
            {
                var (count, first) = _afterRevocation.GetValueOrDefault(credential);
                _afterRevocation[credential] = (count + 1, first ?? entry.RequestId);
            }
        }

        if (entry.Timestamp < Since30)
        {
            return;
        }

        Requests30++;
        Refused30 += entry.Refused ? 1 : 0;
        Unidentified30 += entry.Consumer is null ? 1 : 0;
        AllowedUnattributed30 += entry.Decision == "allow" && (entry.Consumer is null || entry.CredentialId is null) ? 1 : 0;
        UpstreamFailures30 += entry.Outcome is "upstream_error" or "interrupted" ? 1 : 0;
        Estimated30 += entry.TokensEstimated ? 1 : 0;

        static HashSet<string> Set(Dictionary<string, HashSet<string>> map, string key)
        {
            if (!map.TryGetValue(key, out var set))
            {
                set = new HashSet<string>(StringComparer.Ordinal);
                map[key] = set;
            }

            return set;
        }
    }
}

/// <summary>Everything the posture report is built from, loaded by the caller.</summary>
public sealed record PostureInput
{
    /// <summary>The report's instant.</summary>
    public required DateTimeOffset GeneratedAt { get; init; }

    /// <summary>Every policy version, oldest first; the last is in force.</summary>
    public required IReadOnlyList<PolicyVersion> History { get; init; }

    /// <summary>Every administrative ledger entry.</summary>
    public IReadOnlyList<AdminEntry> AdminEntries { get; init; } = [];

    /// <summary>Every access request.</summary>
    public IReadOnlyList<AccessRequest> AccessRequests { get; init; } = [];

    /// <summary>The newest owner notifications.</summary>
    public IReadOnlyList<Notification> Notifications { get; init; } = [];

    /// <summary>When each credential was last used.</summary>
    public IReadOnlyDictionary<string, DateTimeOffset> CredentialLastUsed { get; init; } = new Dictionary<string, DateTimeOffset>();

    /// <summary>Request entries of the last 90 days, accumulated.</summary>
    public required LedgerActivity Activity { get; init; }

    /// <summary>Requests shed in the last 30 days without an entry of their own.</summary>
    public long Shed30 { get; init; }

    /// <summary>The ledger verification.</summary>
    public required ChainCheck Chain { get; init; }
}

/// <summary>Maps NIST CSF 2.0 and NIST AI RMF controls to live evidence: pure logic over loaded data (docs/compliance.md).</summary>
public static class PostureReportBuilder
{
    /// <summary>A credential not used for this long counts as unused.</summary>
    public static readonly TimeSpan UnusedAfter = TimeSpan.FromDays(90);

    /// <summary>A policy unchanged for this long counts as not reviewed.</summary>
    public static readonly TimeSpan ReviewEvery = TimeSpan.FromDays(365);

    /// <summary>An access request pending this long counts as neglected.</summary>
    public static readonly TimeSpan PendingTooLong = TimeSpan.FromDays(7);

    /// <summary>A suspension or kill switch engaged this long is containment without a decision.</summary>
    public static readonly TimeSpan StoppedTooLong = TimeSpan.FromDays(30);

    private const string Csf = "NIST CSF 2.0";
    private const string Rmf = "NIST AI RMF 1.0";
    /// <summary>Gaps in detection and response: detectors switched off, no security contact for escalations.</summary>
    private static List<PostureItem> AlertingGaps(PolicyDocument doc)
    {
        var gaps = new List<PostureItem>();
        var rules = new Alerts.AlertRules(doc.Alerts);
        foreach (var detector in Alerts.AlertTypes.Detectors.Where(d => !rules.IsEnabled(d)))
        {
            gaps.Add(new PostureItem("warn", "alerts.disabled", $"detector {detector} is switched off: those adverse events are recorded but nobody is told"));
        }

        if (rules.Security is null)
        {
            gaps.Add(new PostureItem("warn", "alerts.security", "no security contact (alerts.security): escalations and authentication bursts no service owns reach nobody"));
        }

        return gaps;
    }

    private static string AlertingText(PolicyDocument doc)
    {
        var rules = new Alerts.AlertRules(doc.Alerts);
        return $"{Alerts.AlertTypes.Detectors.Count(rules.IsEnabled)} of {Alerts.AlertTypes.Detectors.Count} detectors run on every ledger entry; " +
            $"alerts go to the owner role responsible through a signed, durable outbox and escalate after {rules.EscalateAfter.TotalMinutes:0} minutes unacknowledged.";
    }

    /// <summary>When each credential was (last) revoked, from the administrative entries.</summary>
    public static IReadOnlyDictionary<string, DateTimeOffset> RevocationTimes(IEnumerable<AdminEntry> entries)
        => entries.Where(e => e.Action == "credential.revoked" && e.Target.StartsWith("credential:", StringComparison.Ordinal))
            .GroupBy(e => e.Target["credential:".Length..]).ToDictionary(g => g.Key, g => g.Max(e => e.Timestamp), StringComparer.Ordinal);

    /// <summary>
    /// A notification's address as the report names it: a webhook as the notifier's failed-delivery log line names it
    /// (<see cref="WebhookAddress.Masked(string)"/>: scheme, host and port; a Slack webhook's path and a receiver's
    /// <c>?token=…</c> are secrets); an e-mail address as it is.
    /// </summary>
    internal static string Redacted(string target)
        => target.Contains("://", StringComparison.Ordinal) ? WebhookAddress.Masked(target) : target;

    /// <summary>Builds the report.</summary>
    public static PostureReport Build(PostureInput input)
    {
        var current = input.History.Count == 0 ? null : input.History[^1];
        var controls = current is null ? NoPolicy() : Evaluate(input, current);
        var notes = new List<string>();
        if (input.Chain.Status == ChainCheck.NotVerified)
        {
            notes.Add("The ledger was not verified: " + input.Chain.Detail);
        }

        notes.Add("Traffic statistics cover the last 30 days of request entries; credential use the last 90 days and the credential usage table.");
        return new PostureReport
        {
            GeneratedAt = input.GeneratedAt,
            PolicyVersion = current?.Number,
            PolicySha256 = current?.Sha256,
            PolicyCreatedAt = current?.CreatedAt,
            Summary = new PostureSummary(controls.Count(c => c.Status == "pass"), controls.Count(c => c.Status == "warn"), controls.Count(c => c.Status == "fail")),
            Controls = controls,
            Chain = input.Chain,
            Notes = notes,
        };
    }

    private static List<PostureControl> NoPolicy()
        => [.. Catalogue.Select(c => new PostureControl(c.Id, c.Framework, c.Asks, "No policy version is stored: nothing is governed yet.", "fail",
            [new PostureItem("fail", "policy", "no policy version in the store; start the gateway with a policy")]))];

    /// <summary>The controls, in report order, with what each asks.</summary>
    public static IReadOnlyList<(string Id, string Framework, string Asks)> Catalogue { get; } =
    [
        ("GV.OC-01", Csf, "The organizational mission is understood and informs cybersecurity risk management."),
        ("GV.RR-02", Csf, "Roles, responsibilities and authorities for cybersecurity risk are established, communicated, understood and enforced."),
        ("GV.PO-01", Csf, "Policy for managing cybersecurity risk is established, communicated and enforced."),
        ("GV.PO-02", Csf, "Policy is reviewed, updated, communicated and enforced as requirements, threats and technology change."),
        ("ID.AM-02", Csf, "Inventories of software, services and systems are maintained."),
        ("PR.AA-01", Csf, "Identities and credentials for authorized users, services and hardware are managed."),
        ("PR.AA-05", Csf, "Access permissions, entitlements and authorizations are defined, managed, enforced and reviewed, with least privilege and separation of duties."),
        ("PR.PS-04", Csf, "Log records are generated and made available for continuous monitoring."),
        ("DE.CM-03", Csf, "Personnel activity and technology usage are monitored to find potentially adverse events."),
        ("DE.CM-09", Csf, "Computing hardware, software, runtime environments and their data are monitored to find potentially adverse events."),
        ("DE.AE-02", Csf, "Potentially adverse events are analyzed to better understand associated activities."),
        ("DE.AE-03", Csf, "Information is correlated from multiple sources."),
        ("RS.AN-07", Csf, "Incident data and metadata are collected, and their integrity and provenance are preserved."),
        ("RS.MI-01", Csf, "Incidents are contained."),
        ("RS.MI-02", Csf, "Incidents are eradicated."),
        ("GOVERN 1.5", Rmf, "Ongoing monitoring and periodic review of the risk management process are planned, with roles and review frequency defined."),
        ("GOVERN 1.6", Rmf, "Mechanisms are in place to inventory AI systems, resourced according to risk priorities."),
        ("GOVERN 2.1", Rmf, "Roles, responsibilities and lines of communication for mapping, measuring and managing AI risk are documented and clear."),
        ("MEASURE 2.4", Rmf, "The functionality and behavior of the AI system and its components are monitored in production."),
        ("MEASURE 2.7", Rmf, "AI system security and resilience are evaluated and documented."),
        ("MEASURE 2.8", Rmf, "Risks of transparency and accountability are examined and documented."),
        ("MANAGE 2.4", Rmf, "Mechanisms are in place and applied, with responsibilities assigned, to supersede, disengage or deactivate AI systems."),
        ("MANAGE 4.1", Rmf, "Post-deployment monitoring plans are implemented: user input, appeal and override, decommissioning, incident response, recovery, change management."),
    ];

    private static List<PostureControl> Evaluate(PostureInput input, PolicyVersion current)
    {
        var doc = current.Document;
        var now = input.GeneratedAt;
        var activity = input.Activity;
        var results = new Dictionary<string, (string Evidence, List<PostureItem> Items)>(StringComparer.Ordinal);
        void Set(string id, string evidence, List<PostureItem> items) => results[id] = (evidence, items);
        static PostureItem Warn(string subject, string detail) => new("warn", subject, detail);
        static PostureItem Fail(string subject, string detail) => new("fail", subject, detail);

        var services = doc.Services;
        var consumers = doc.Consumers;
        var live = doc.Credentials.Where(c => IncidentReportBuilder.StatusAt(c, now) == "active").ToList();
        var gaps = services.SelectMany(s => Governance.Gaps(doc, s).Select(g => (Service: s, Gap: g))).ToList();
        var gapItems = gaps.Select(g => Fail("service:" + g.Service.Id, g.Gap.Message.Replace(": missing governance", "", StringComparison.Ordinal))).ToList();
        var requireOwners = PolicyNames.Of(doc.Gateway.RequireOwners ?? RequireOwners.Warn);
        var inventory = $"{services.Count} service(s), {consumers.Count} consumer(s), {doc.Credentials.Count} credential(s) ({live.Count} usable), " +
            $"{doc.Tenants.Sum(t => t.Models.Count)} model(s) in {doc.Tenants.Count} tenant(s)";

        // GV.OC-01: each AI-using service states what it is for, in a tenant, with categorised consumers.
        Set("GV.OC-01", $"{services.Count(s => !string.IsNullOrWhiteSpace(s.Description))} of {services.Count} services describe their purpose; every consumer has a category " +
            "(external, internal, automation, agent) that sets its defaults.",
            services.Count == 0 ? [Fail("policy", "no service is declared: no AI use is tied to a purpose")]
                : [.. services.Where(s => string.IsNullOrWhiteSpace(s.Description)).Select(s => Warn("service:" + s.Id, "no description: what the service does, and so why it uses AI, is not stated"))]);

        // GV.RR-02: owners.
        Set("GV.RR-02", $"{services.Count - gaps.Select(g => g.Service.Id).Distinct().Count()} of {services.Count} services name a policy, billing and technical owner " +
            $"(and an agent operator and business sponsor where agents run) with distinct contacts; require_owners: {requireOwners}" +
            (requireOwners == "block" ? " (an ungoverned service serves nothing)." : " (gaps are reported, traffic is not stopped)."), gapItems);

        // GV.PO-01: policy in force; every consumer with a budget and a quota or rate limit.
        var noBudget = consumers.Where(c => !PolicyControls.HasBudget(doc, c)).ToList();
        var noQuota = consumers.Where(c => !PolicyControls.HasQuotaOrRateLimit(doc, c)).ToList();
        Set("GV.PO-01", $"Policy version {current.Number} in force since {ReportText.Time(current.CreatedAt)} (by {current.Author}); " +
            $"{consumers.Count - noBudget.Count} of {consumers.Count} consumers have a budget and {consumers.Count - noQuota.Count} a quota or rate limit at some level.",
            [.. noBudget.Select(c => Fail("consumer:" + c.Id, $"no budget at consumer, category ({PolicyNames.Of(c.Category)}), service ({c.Service}) or tenant level")),
                .. noQuota.Select(c => Warn("consumer:" + c.Id, "no quota or rate limit at any level"))]);

        // GV.PO-02: versioning, each version recorded in the ledger, reviewed recently.
        var recorded = input.AdminEntries.Where(a => a.Action == "policy.version_created").Select(a => a.After).Where(h => h is not null).ToHashSet(StringComparer.Ordinal);
        var unrecorded = input.History.Where(v => !recorded.Contains(v.Sha256)).ToList();
        var po02 = new List<PostureItem>(unrecorded.Select(v => Fail("policy:v" + v.Number,
            $"version {v.Number} ({v.Sha256[..12]}, by {v.Author}) has no policy.version_created ledger entry: it was not made through the gateway")));
        if (now - current.CreatedAt > ReviewEvery)
        {
            po02.Add(Warn("policy:v" + current.Number, $"unchanged since {ReportText.Time(current.CreatedAt)}: not reviewed in the last {ReviewEvery.TotalDays:0} days"));
        }

        Set("GV.PO-02", $"{input.History.Count} policy version(s), each numbered and hashed with its author and reason; {input.History.Count - unrecorded.Count} recorded in the ledger; " +
            $"newest v{current.Number} at {ReportText.Time(current.CreatedAt)}.", po02);

        // ID.AM-02: inventory without orphans.
        var am02 = new List<PostureItem>();
        am02.AddRange(services.Where(s => consumers.All(c => c.Service != s.Id)).Select(s => Warn("service:" + s.Id, "no consumer: an inventory entry with no use")));
        am02.AddRange(consumers.Where(c => live.All(k => k.Consumer != c.Id)).Select(c => Warn("consumer:" + c.Id, "no usable credential: inventoried but cannot call")));
        Set("ID.AM-02", $"The policy is the inventory: {inventory}; every model routes to a named provider of its tenant.", am02);

        // PR.AA-01: credentials with expiry, used, not shared.
        var shared = SharedCredentials(input, live);
        var aa01 = new List<PostureItem>(shared.Select(s => Fail("credential:" + s.Id, s.Detail)));
        foreach (var credential in live)
        {
            var subject = "credential:" + credential.Id;
            if (credential.KeySha256 is not null && credential.ExpiresAt is null)
            {
                aa01.Add(Warn(subject, $"API key of consumer '{credential.Consumer}' has no expiry (expires_at not set)"));
            }

            if (!input.CredentialLastUsed.TryGetValue(credential.Id, out var used))
            {
                aa01.Add(Warn(subject, $"never used{(credential.CreatedAt is { } c ? " since it was issued at " + ReportText.Time(c) : "")}: remove it if nobody needs it"));
            }
            else if (now - used > UnusedAfter)
            {
                aa01.Add(Warn(subject, $"not used since {ReportText.Time(used)} (over {UnusedAfter.TotalDays:0} days)"));
            }
        }

        Set("PR.AA-01", $"{live.Count} usable credential(s): {live.Count(c => c.KeySha256 is not null && c.ExpiresAt is not null)} API key(s) with expiry, " +
            $"{live.Count(c => c.KeySha256 is null)} workload identit(ies); last use from the ledger; {shared.Count} shared.", aa01);

        // PR.AA-05: entitlements approved, matching their requests, separated duties.
        var aa05 = new List<PostureItem>();
        var approvedEntitlements = 0;
        foreach (var consumer in consumers)
        {
            var service = PolicyControls.ServiceOf(doc, consumer);
            var tenant = PolicyControls.TenantOf(doc, service);
            foreach (var e in PolicyControls.Entitlements(doc, consumer))
            {
                var subject = "consumer:" + consumer.Id;
                if (e.Source != "entitlement" || e.ApprovedBy is null)
                {
                    aa05.Add(Warn(subject, $"entitled to {string.Join(", ", e.Models)} with no recorded approver ({(e.Source == "category_default" ? "inherited from the category's defaults" : "policy shorthand")})"));
                    continue;
                }

                approvedEntitlements++;
                if (service?.Models is { } choice && e.Models.Select(m => PolicyControls.CanonicalModel(tenant, m)).Except(choice.Select(m => PolicyControls.CanonicalModel(tenant, m))).ToList() is { Count: > 0 } outside)
                {
                    aa05.Add(Warn(subject, $"entitlement names {string.Join(", ", outside)}, outside service '{service.Id}''s model choice"));
                }

                if (e.Ticket is not { } ticket || !ticket.StartsWith("ar-", StringComparison.Ordinal))
                {
                    continue;
                }

                var request = input.AccessRequests.FirstOrDefault(a => a.Id == ticket);
                if (request is null || request.Status != AccessRequestStatus.Approved)
                {
                    aa05.Add(Fail(subject, $"entitlement cites access request {ticket}, which is {(request is null ? "unknown to Custos" : request.Status.ToString().ToLowerInvariant())}"));
                    continue;
                }

                var extra = e.Models.Select(m => PolicyControls.CanonicalModel(tenant, m)).Except(request.Models.Select(m => PolicyControls.CanonicalModel(tenant, m))).ToList();
                if (extra.Count > 0 || request.Consumer != consumer.Id)
                {
                    aa05.Add(Fail(subject, $"entitlement is broader than access request {ticket}: {(extra.Count > 0 ? "adds " + string.Join(", ", extra) : "the request was for " + request.Consumer)}"));
                }

                if (request.RequestedBy == e.ApprovedBy || request.RequestedBy == request.DecidedBy)
                {
                    aa05.Add(Fail(subject, $"access request {ticket} was approved by the one who asked for it ({request.RequestedBy}): no separation of duties"));
                }
            }
        }

        Set("PR.AA-05", $"{approvedEntitlements} entitlement(s) name an approver; {input.AccessRequests.Count(a => a.Status == AccessRequestStatus.Approved)} approved access request(s) " +
            "compared with what they granted; the gateway refuses anything else (deny.model_not_entitled) and never lets a requester decide their own request.", aa05);

        // PR.PS-04: log records generated and available.
        var ps04 = new List<PostureItem>();
        if (activity.Requests30 == 0)
        {
            ps04.Add(Warn("ledger", "no request entry in the last 30 days: either no traffic, or the gateway that serves it writes elsewhere"));
        }

        if (input.Shed30 > 0)
        {
            ps04.Add(Warn("ledger", $"{ReportText.Plural(input.Shed30, "request was", "requests were")} shed in the last 30 days while the ledger queue was full and counted without an entry of their own"));
        }

        Set("PR.PS-04", $"Every request yields exactly one hash-chained ledger entry; {ReportText.Count(activity.Requests30)} in the last 30 days, the newest at {ReportText.Time(activity.LastRequest)}; " +
            $"{ReportText.Count(input.Chain.Entries)} entries verified.", ps04);

        // DE.CM-03: usage monitored and attributed.
        var cm03 = new List<PostureItem>();
        if (activity.AllowedUnattributed30 > 0)
        {
            cm03.Add(Fail("ledger", $"{activity.AllowedUnattributed30} allowed request(s) in the last 30 days name no consumer or credential"));
        }

        if (activity.Requests30 == 0)
        {
            cm03.Add(Warn("ledger", "no usage recorded in the last 30 days: nothing to monitor"));
        }

        Set("DE.CM-03", $"{ReportText.Count(activity.Requests30)} request(s) in the last 30 days, each attributed to tenant, service, consumer, credential, model and policy version; " +
            $"{ReportText.Count(activity.Unidentified30)} from unidentified callers (refused and recorded), {ReportText.Count(activity.Refused30)} refused in all.", cm03);

        // DE.CM-09: runtime and data monitored: prompt restrictions and output ceilings.
        var cm09 = new List<PostureItem>();
        foreach (var service in services)
        {
            var tenant = doc.Tenants.FirstOrDefault(t => t.Id == service.Tenant);
            if (service.PromptRules.Count == 0 && (tenant?.PromptRules.Count ?? 0) == 0)
            {
                cm09.Add(Warn("service:" + service.Id, "no prompt restriction at service or tenant level: secrets and personal data in prompts go to the provider unseen"));
            }
        }

        cm09.AddRange(consumers.Where(c => PolicyControls.EffectiveLimits(doc, c).MaxOutputTokens is null)
            .Select(c => Warn("consumer:" + c.Id, "no output ceiling (max_output_tokens) for it or its category")));
        Set("DE.CM-09", $"Prompts are inspected by {doc.Services.Sum(s => s.PromptRules.Count) + doc.Tenants.Sum(t => t.PromptRules.Count)} prompt rule(s) and token use metered per request; " +
            $"{consumers.Count(c => PolicyControls.EffectiveLimits(doc, c).MaxOutputTokens is not null)} of {consumers.Count} consumers have an output ceiling.", cm09);

        // DE.AE-02: adverse events analysed, as they happen (detectors) and on demand (incident report).
        Set("DE.AE-02", $"Every refusal is recorded with its reason code and the control that decided it ({ReportText.Count(activity.Refused30)} in the last 30 days); " +
            AlertingText(doc) + " custos report incident analyses a subject's window on demand.", AlertingGaps(doc));

        // DE.AE-03: correlation across sources.
        var ae03 = new List<PostureItem>();
        foreach (var consumer in consumers)
        {
            foreach (var e in consumer.Entitlements.Where(e => e.Ticket is { } t && t.StartsWith("ar-", StringComparison.Ordinal)
                && input.AccessRequests.All(a => a.Id != t)))
            {
                ae03.Add(Warn("consumer:" + consumer.Id, $"entitlement cites {e.Ticket}, which the registry does not hold: the approval cannot be traced"));
            }
        }

        var known = input.History.Select(v => v.Number).ToHashSet();
        foreach (var missing in activity.PolicyVersions.Where(v => !known.Contains(v)).Order())
        {
            ae03.Add(Warn("policy:v" + missing, $"request entries name policy version {missing}, which the store does not hold"));
        }

        Set("DE.AE-03", "Each request entry names its policy version (and hash), credential, consumer, service and cost; entitlements name their access request; " +
            "custos access explain and the incident pack join them.", ae03);

        // RS.AN-07: integrity and provenance of incident data.
        Set("RS.AN-07", ChainEvidence(input.Chain), ChainItems(input.Chain));

        // RS.MI-01 and MANAGE 2.4: containment path per service.
        var path = RevocationPath(doc);
        var killSwitches = doc.Tenants.Count(t => t.Suspended == true) + services.Count(s => s.Suspended == true) + consumers.Count(c => c.Suspended == true);
        Set("RS.MI-01", $"Credentials can be suspended or revoked and kill switches engaged per consumer, service or tenant, effective on the next request; " +
            $"{services.Count - path.Select(p => p.Subject).Distinct().Count()} of {services.Count} services have a technical owner to notify and an admin who can act; " +
            $"{killSwitches} kill switch(es) engaged now.", path);

        // RS.MI-02: eradication: revoked stays revoked; stops are decided.
        var mi02 = new List<PostureItem>();
        foreach (var (credential, (count, first)) in activity.AllowedAfterRevocation)
        {
            mi02.Add(Fail("credential:" + credential, $"{count} request(s) allowed after its revocation, the first {first}"));
        }

        var lastSuspension = input.AdminEntries.Where(a => a.Action == "credential.suspended").GroupBy(a => a.Target).ToDictionary(g => g.Key, g => g.Max(a => a.Timestamp));
        foreach (var credential in doc.Credentials.Where(c => c.Status == CredentialStatus.Suspended))
        {
            if (lastSuspension.TryGetValue("credential:" + credential.Id, out var since) && now - since > StoppedTooLong)
            {
                mi02.Add(Warn("credential:" + credential.Id, $"suspended since {ReportText.Time(since)}: contained, neither revoked nor resumed"));
            }
        }

        var engagedAt = input.AdminEntries.Where(a => a.Action == "kill_switch.engaged").GroupBy(a => a.Target).ToDictionary(g => g.Key, g => g.Max(a => a.Timestamp));
        foreach (var target in doc.Tenants.Where(t => t.Suspended == true).Select(t => "tenant:" + t.Id)
            .Concat(services.Where(s => s.Suspended == true).Select(s => "service:" + s.Id)).Concat(consumers.Where(c => c.Suspended == true).Select(c => "consumer:" + c.Id)))
        {
            if (engagedAt.TryGetValue(target, out var since) && now - since > StoppedTooLong)
            {
                mi02.Add(Warn(target, $"kill switch engaged since {ReportText.Time(since)}: contained, not resolved"));
            }
        }

        Set("RS.MI-02", $"{doc.Credentials.Count(c => c.Status == CredentialStatus.Revoked)} revoked credential(s) refused permanently (resume is refused); " +
            $"requests of the last 90 days checked for use after revocation.", mi02);

        // GOVERN 1.5: monitoring and periodic review.
        var g15 = AlertingGaps(doc);
        g15.AddRange(input.AccessRequests.Where(a => a.Status == AccessRequestStatus.Pending && now - a.RequestedAt > PendingTooLong)
            .Select(a => Warn("access_request:" + a.Id, $"pending since {ReportText.Time(a.RequestedAt)} ({a.Consumer} -> {string.Join(", ", a.Models)}): nobody reviews it")));
        if (now - current.CreatedAt > ReviewEvery)
        {
            g15.Add(Warn("policy:v" + current.Number, $"policy unchanged since {ReportText.Time(current.CreatedAt)}: no review in {ReviewEvery.TotalDays:0} days"));
        }

        Set("GOVERN 1.5", $"Policy versions record every review and change (newest {ReportText.Time(current.CreatedAt)}); " +
            $"{input.AccessRequests.Count(a => a.Status == AccessRequestStatus.Pending)} access request(s) pending; the posture and incident reports can be run at any time.", g15);

        // GOVERN 1.6: AI system inventory.
        var g16 = new List<PostureItem>();
        if (services.Count == 0)
        {
            g16.Add(Fail("policy", "no AI system (service) is inventoried"));
        }

        g16.AddRange(services.Where(s => string.IsNullOrWhiteSpace(s.Description)).Select(s => Warn("service:" + s.Id, "no description of what the AI system does")));
        g16.AddRange(services.Where(s => s.Models is null).Select(s => Warn("service:" + s.Id, "no declared model choice: any model of its tenant may be entitled")));
        Set("GOVERN 1.6", $"Each service is an inventoried AI system with its tenant, owners, consumers and models: {inventory}.", g16);

        // GOVERN 2.1: lines of communication.
        var g21 = new List<PostureItem>(gapItems);
        foreach (var service in services)
        {
            var owners = service.Owners;
            if (owners.Policy is not null && owners.Policy.Admin is null && (service.Approvers ?? []).Count == 0)
            {
                g21.Add(Warn("service:" + service.Id, "the policy owner names no admin identity and no approver is named: nobody can decide its access requests in Custos"));
            }

            if (owners.Technical is { Webhook: null, Email: not null })
            {
                g21.Add(Warn("service:" + service.Id, $"technical owner '{owners.Technical.Name}' has only an e-mail address: without a mail relay, notifications to it wait in the outbox unsent"));
            }
        }

        var failing = input.Notifications.Where(n => n.Status == "pending" && n.Attempts > 0).ToList();
        if (failing.Count > 0)
        {
            g21.Add(Warn("notifications", $"{failing.Count} owner notification(s) failing delivery, e.g. to {failing[0].Recipient} ({Redacted(failing[0].Target)})"));
        }

        Set("GOVERN 2.1", $"Owner roles with contacts for {services.Count} service(s); {input.Notifications.Count(n => n.Status == "delivered")} of the {input.Notifications.Count} newest notifications delivered.", g21);

        // MEASURE 2.4: production behaviour monitored.
        var m24 = new List<PostureItem>();
        if (activity.Requests30 == 0)
        {
            m24.Add(Warn("ledger", "no request in the last 30 days: nothing in production is being observed"));
        }
        else
        {
            if (activity.UpstreamFailures30 * 20 > activity.Requests30)
            {
                m24.Add(Warn("providers", $"{activity.UpstreamFailures30} of {activity.Requests30} requests in the last 30 days failed at or were cut by the provider (over 5%)"));
            }

            if (activity.Estimated30 * 20 > activity.Requests30)
            {
                m24.Add(Warn("providers", $"{activity.Estimated30} of {activity.Requests30} requests in the last 30 days carry estimated token counts (the provider reported no usage)"));
            }
        }

        Set("MEASURE 2.4", $"Each request's outcome, provider status, tokens, latency and cost are recorded: {ReportText.Count(activity.Requests30)} in the last 30 days, " +
            $"{ReportText.Count(activity.UpstreamFailures30)} provider failures, {ReportText.Count(activity.Estimated30)} with estimated tokens.", m24);

        // MEASURE 2.7: security of machine credentials.
        var m27 = new List<PostureItem>();
        var machines = consumers.Where(c => c.Category is ConsumerCategory.Automation or ConsumerCategory.Agent).ToList();
        foreach (var consumer in machines)
        {
            foreach (var key in live.Where(k => k.Consumer == consumer.Id && k.KeySha256 is not null && (k.ExpiresAt is null || k.ExpiresAt - now > UnusedAfter)))
            {
                m27.Add(Warn("credential:" + key.Id, $"{PolicyNames.Of(consumer.Category)} consumer '{consumer.Id}' calls with a long-lived API key " +
                    $"({(key.ExpiresAt is { } e ? "expires " + ReportText.Time(e) : "no expiry")}); a workload identity (short-lived JWT from the identity provider) leaks less"));
            }
        }

        Set("MEASURE 2.7", $"{machines.Count} automation/agent consumer(s); {live.Count(k => k.KeySha256 is null && machines.Any(m => m.Id == k.Consumer))} authenticate with workload identities, " +
            $"{live.Count(k => k.KeySha256 is not null && machines.Any(m => m.Id == k.Consumer))} with API keys; keys are stored as SHA-256 only.", m27);

        // MEASURE 2.8: transparency and accountability.
        var m28 = ChainItems(input.Chain);
        m28.AddRange(gapItems.Select(i => i with { Status = "warn", Detail = i.Detail + ": no accountable owner for that role" }));
        if (activity.AllowedUnattributed30 > 0)
        {
            m28.Add(Fail("ledger", $"{activity.AllowedUnattributed30} allowed request(s) cannot be attributed to a consumer and credential"));
        }

        Set("MEASURE 2.8", "Who called which model, under which policy version and approval, at what cost, is recorded in a tamper-evident ledger with signed checkpoints; " +
            ChainEvidence(input.Chain), m28);

        // MANAGE 2.4: disengage and deactivate.
        Set("MANAGE 2.4", $"Kill switches per consumer, service and tenant and credential revocation take effect on the next request; {killSwitches} engaged now; " +
            $"{services.Count - path.Select(p => p.Subject).Distinct().Count()} of {services.Count} services have someone named to act and be told.", [.. path]);

        // MANAGE 4.1: post-deployment monitoring, incident response, change management.
        var m41 = AlertingGaps(doc);
        if (failing.Count > 0)
        {
            m41.Add(Warn("notifications", $"{failing.Count} owner notification(s) failing delivery"));
        }

        m41.AddRange(unrecorded.Select(v => Fail("policy:v" + v.Number, $"version {v.Number} was not made through the gateway's change path (no ledger entry)")));
        Set("MANAGE 4.1", "Changes go through versioned policy with author and reason, recorded in the ledger; credentials and kill switches notify owners; " +
            AlertingText(doc) + " Incident packs and ledger verification support response and recovery.", m41);

        return [.. Catalogue.Select(c =>
        {
            var (evidence, items) = results[c.Id];
            var ordered = items.OrderBy(i => i.Status == "fail" ? 0 : 1).ThenBy(i => i.Subject, StringComparer.Ordinal).ToList();
            var status = ordered.Any(i => i.Status == "fail") ? "fail" : ordered.Count > 0 ? "warn" : "pass";
            return new PostureControl(c.Id, c.Framework, c.Asks, evidence, status, ordered);
        })];
    }

    private static string ChainEvidence(ChainCheck chain) => chain.Status switch
    {
        ChainCheck.Verified => $"the verifier recomputed {ReportText.Count(chain.Entries)} entries and checked {chain.Checkpoints} signed checkpoint(s): intact.",
        ChainCheck.Failed => $"the verifier found {chain.Problems.Count} problem(s) in {ReportText.Count(chain.Entries)} entries.",
        _ => "the ledger was not verified: " + chain.Detail,
    };

    private static List<PostureItem> ChainItems(ChainCheck chain)
    {
        var items = chain.Problems.Select(p => new PostureItem("fail", "ledger", p)).ToList();
        if (chain.Status == ChainCheck.NotVerified)
        {
            items.Add(new PostureItem("warn", "ledger", chain.Detail));
        }
        else if (chain.Checkpoints == 0 && chain.Entries > 0)
        {
            items.Add(new PostureItem("warn", "ledger", $"no signed checkpoint seals the chain yet ({ReportText.Count(chain.Unsealed)} entries unsealed): it is chained, not yet signed"));
        }

        return items;
    }

    private static List<PostureItem> RevocationPath(PolicyDocument doc)
    {
        var items = new List<PostureItem>();
        foreach (var service in doc.Services)
        {
            var technical = service.Owners.Technical;
            if (technical is null || (technical.Email is null && technical.Webhook is null))
            {
                items.Add(new PostureItem("fail", "service:" + service.Id, "no technical owner with a contact: nobody is told when a credential is revoked or a kill switch engaged"));
            }

            var actors = doc.Admins.Where(a => a.Role is AdminRole.PlatformAdmin or AdminRole.ServiceOwner
                && (a.Tenants.Count == 0 || a.Tenants.Contains(service.Tenant)) && (a.Services.Count == 0 || a.Services.Contains(service.Id))).ToList();
            if (actors.Count == 0)
            {
                items.Add(new PostureItem("fail", "service:" + service.Id, "no admin (platform_admin or service_owner in scope) can revoke its credentials or engage its kill switch"));
            }
        }

        return items;
    }

    private static List<(string Id, string Detail)> SharedCredentials(PostureInput input, IReadOnlyList<CredentialConfig> live)
    {
        var result = new List<(string, string)>();
        foreach (var credential in live)
        {
            var bound = input.History.SelectMany(v => v.Document.Credentials.Where(c => c.Id == credential.Id).Select(c => c.Consumer)).Distinct(StringComparer.Ordinal).ToList();
            var twins = credential.KeySha256 is null ? [] : input.History.SelectMany(v => v.Document.Credentials.Where(c => c.Id != credential.Id && c.KeySha256 == credential.KeySha256)
                .Select(c => $"{c.Id} ({c.Consumer})")).Distinct(StringComparer.Ordinal).ToList();
            var usedBy = input.Activity.CredentialConsumers.GetValueOrDefault(credential.Id)?.ToList() ?? [];
            var usedFrom = input.Activity.CredentialServices.GetValueOrDefault(credential.Id)?.ToList() ?? [];
            var parts = new List<string>();
            if (bound.Count > 1)
            {
                parts.Add($"bound to consumers {string.Join(", ", bound)} across policy versions");
            }

            if (twins.Count > 0)
            {
                parts.Add($"the same key is also credential {string.Join(", ", twins)}");
            }

            if (usedBy.Count > 1 || usedFrom.Count > 1)
            {
                parts.Add($"used in the last 90 days by {string.Join(", ", usedBy.Order(StringComparer.Ordinal))} from services {string.Join(", ", usedFrom.Order(StringComparer.Ordinal))}");
            }

            if (parts.Count > 0)
            {
                result.Add((credential.Id, "shared: " + string.Join("; ", parts)));
            }
        }

        return result;
    }
}
