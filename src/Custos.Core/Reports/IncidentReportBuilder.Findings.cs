using System.Globalization;
using Custos.Alerts;
using Custos.ControlPlane;
using Custos.Policy;

namespace Custos.Reports;

/// <summary>The findings and the classification of an incident pack.</summary>
public static partial class IncidentReportBuilder
{
    /// <summary>The order of classes whose scores tie: a cause in configuration or governance is what made apparent misuse possible.</summary>
    private static readonly string[] ClassOrder = [Classification.Misconfiguration, Classification.MissingGovernance, Classification.Misuse];

    private const int MaxRequestEvidence = 10;

    /// <summary>A finding being assembled; the same finding under several policy versions is one, naming them all.</summary>
    private sealed class Draft(string @class, string code, string severity, string title, string detail)
    {
        public string Class { get; } = @class;

        public string Code { get; } = code;

        public string Severity { get; } = severity;

        public string Title { get; } = title;

        public string Detail { get; set; } = detail;

        public SortedSet<long> Versions { get; } = [];

        public List<Evidence> Evidence { get; } = [];

        public Finding ToFinding()
        {
            var evidence = new List<Evidence>();
            if (Versions.Count > 0)
            {
                evidence.Add(new Evidence("policy_version", Ranges(Versions), $"in force during the window with this setting ({ReportText.Plural(Versions.Count, "version")})"));
            }

            evidence.AddRange(Evidence.Distinct());
            return new Finding(Class, Code, Severity, Weight(Severity), Title, Detail, evidence);
        }
    }

    private static int Weight(string severity) => severity switch
    {
        "high" => 3,
        "medium" => 2,
        _ => 1,
    };

    /// <summary><c>v2</c>, <c>v2-v4</c>, <c>v2, v5</c>.</summary>
    private static string Ranges(IEnumerable<long> numbers)
    {
        var parts = new List<string>();
        long? start = null, end = null;
        foreach (var n in numbers.Order())
        {
            if (end is { } e && n == e + 1)
            {
                end = n;
                continue;
            }

            if (start is not null)
            {
                parts.Add(start == end ? $"v{start}" : $"v{start}-v{end}");
            }

            (start, end) = (n, n);
        }

        if (start is not null)
        {
            parts.Add(start == end ? $"v{start}" : $"v{start}-v{end}");
        }

        return string.Join(", ", parts);
    }

    private static List<Finding> Findings(Context context)
    {
        var drafts = new Dictionary<string, Draft>(StringComparer.Ordinal);
        Draft Add(string key, string @class, string code, string severity, string title, string detail)
        {
            if (!drafts.TryGetValue(code + "|" + key, out var draft))
            {
                draft = new Draft(@class, code, severity, title, detail);
                drafts[code + "|" + key] = draft;
            }

            return draft;
        }

        MisuseFindings(context, Add);
        ConfigurationFindings(context, Add);
        SharedCredentialFindings(context, Add);
        AlertFindings(context, Add);
        if (context.Input.Chain.HasProblems)
        {
            var draft = Add("chain", Classification.MissingGovernance, "chain_problem", "high", "The ledger's chain is broken",
                "Verification found the record altered, incomplete or not sealed as signed. Until that is explained, no entry of the window can be taken as proof: " +
                "whoever administers the database could have rewritten it.");
            draft.Evidence.AddRange(context.Input.Chain.Problems.Select(p => new Evidence("verification", p.Split(':')[0], p)));
        }

        return [.. drafts.Values.Select(d => d.ToFinding())
            .OrderByDescending(f => f.Weight).ThenBy(f => Array.IndexOf(ClassOrder, f.Class)).ThenBy(f => f.Code, StringComparer.Ordinal)];
    }

    private static Evidence RequestEvidence(RequestEntry r, string? why = null)
        => new("request", r.RequestId, $"{ReportText.Time(r.Timestamp)} {r.Decision} {RequestWhat(r)} under v{r.PolicyVersion}, ledger {r.Position}" + (why is null ? "" : "; " + why));

    private static void AddRequests(Draft draft, IncidentWindow.Sample requests, Func<RequestEntry, string?>? why = null)
    {
        draft.Evidence.AddRange(requests.Head.Take(MaxRequestEvidence).Select(r => RequestEvidence(r.Entry, why?.Invoke(r.Entry))));
        if (requests.Count > MaxRequestEvidence)
        {
            draft.Evidence.Add(new Evidence("request", $"+{requests.Count - MaxRequestEvidence}",
                $"{requests.Count - MaxRequestEvidence} more, from {requests.Head[MaxRequestEvidence].Entry.RequestId} to {requests.Tail.Entry.RequestId} (see the timeline)"));
        }
    }

    private static void MisuseFindings(Context context, Func<string, string, string, string, string, string, Draft> add)
    {
        var window = context.Window;
        var limited = window.Limited;
        if (limited.Count >= 3)
        {
            var deciding = window.LimitedBy.OrderByDescending(g => g.Value.Count)
                .Select(g => $"{g.Key.Control} of {g.Key.Scope} (limit {Number(g.Value.Limit)}) {g.Value.Count}x").ToList();
            var severity = limited.Count >= 10 || limited.Count * 4 >= window.Count ? "high" : "medium";
            var draft = add("limits", Classification.Misuse, "limit_refusals", severity,
                $"{limited.Count} of {window.Count} requests refused by rate limits, quotas or budgets",
                $"Between {ReportText.Time(limited.FirstEntry.Timestamp)} and {ReportText.Time(limited.Tail.Entry.Timestamp)} the caller kept sending after the limits refused it: " +
                (deciding.Count > 0 ? string.Join("; ", deciding) : string.Join(", ", window.LimitedReasons)) +
                ". The controls held; the use itself was beyond what the policy allows.");
            foreach (var (reason, count) in IncidentWindow.Sorted(window.Reasons, IncidentWindow.LimitReasons.Contains))
            {
                draft.Evidence.Add(new Evidence("reason_count", reason, $"{count} request(s)"));
            }

            AddRequests(draft, limited);
        }

        var (promptDenied, redacted) = (window.PromptDenied, window.PromptRedacted);
        if (promptDenied > 0 || redacted > 0)
        {
            var rules = window.PromptRules;
            var severity = promptDenied >= 3 ? "high" : promptDenied > 0 ? "medium" : "low";
            var draft = add("prompt", Classification.Misuse, "prompt_restrictions_hit", severity,
                $"Prompt restrictions hit: {promptDenied} refused, {redacted} redacted",
                $"Prompts matched restricted content ({(rules.Count > 0 ? string.Join(", ", rules) : "rules named in the entries")}). The gateway refused or redacted them; " +
                "the text itself is not stored, only the rule and the prompt's SHA-256.");
            draft.Evidence.Add(new Evidence("reason_count", "deny.prompt_restricted", $"{promptDenied} request(s)"));
            AddRequests(draft, window.PromptHit);
        }

        var probing = window.Probing;
        if (probing.Count >= 3)
        {
            var models = window.ProbedModels;
            var draft = add("probing", Classification.Misuse, "entitlement_probing", "medium",
                $"{probing.Count} requests for models outside the entitlement",
                $"The caller asked for models it is not entitled to ({string.Join(", ", models)}); the entitlement control refused each one.");
            foreach (var (reason, count) in IncidentWindow.Sorted(window.Reasons, IncidentWindow.EntitlementReasons.Contains))
            {
                draft.Evidence.Add(new Evidence("reason_count", reason, $"{count} request(s)"));
            }

            AddRequests(draft, probing);
        }

        var stopped = window.Stopped;
        if (stopped.Count > 0)
        {
            var draft = add("stopped", Classification.Misuse, "stopped_credential_presented", stopped.Count >= 3 ? "medium" : "low",
                $"A stopped credential was still presented {ReportText.Plural(stopped.Count, "time")}",
                "Requests kept arriving with a revoked, suspended or expired credential: whoever holds the key did not stop (a leaked key, or a client nobody told).");
            foreach (var (reason, count) in IncidentWindow.Sorted(window.Reasons, IncidentWindow.StoppedCredentialReasons.Contains))
            {
                draft.Evidence.Add(new Evidence("reason_count", reason, $"{count} request(s)"));
            }

            AddRequests(draft, stopped);
        }

        var baseline = BaselineViewOf(context.Input);
        if (baseline.Ratio is { } ratio && window.Count >= 20 && ratio >= 5)
        {
            var draft = add("baseline", Classification.Misuse, "above_baseline", ratio >= 20 ? "high" : "medium",
                $"Use {ratio.ToString("0.#", CultureInfo.InvariantCulture)}x the subject's earlier rate",
                $"{ReportText.Plural(window.Count, "request")} in the window ({baseline.WindowRequestsPerHour.ToString("0.##", CultureInfo.InvariantCulture)} per hour) " +
                $"against {ReportText.Plural(baseline.Requests, "request")} in the {Describe(baseline.To - baseline.From)} before it " +
                $"({baseline.RequestsPerHour.ToString("0.##", CultureInfo.InvariantCulture)} per hour); spend {ReportText.Money(window.Spend)} against {ReportText.Money(baseline.Spend)}.");
            draft.Evidence.Add(new Evidence("baseline", $"{ReportText.Time(baseline.From)} to {ReportText.Time(baseline.To)}", $"{baseline.Requests} request(s), {ReportText.Money(baseline.Spend)}"));
            var summary = Summarise(context.Input);
            if (summary.PeakMinute is { } peak)
            {
                draft.Evidence.Add(new Evidence("peak_minute", ReportText.Time(peak), $"{summary.PeakMinuteRequests} request(s) in the busiest minute"));
            }
        }
        else if (baseline.Requests == 0 && window.Count >= 100)
        {
            var draft = add("baseline", Classification.Misuse, "no_baseline", "low", $"{window.Count} requests with no earlier use",
                $"The subject made no request in the {Describe(baseline.To - baseline.From)} before the window, then {window.Count} in it: new activity with nothing to compare with.");
            draft.Evidence.Add(new Evidence("baseline", $"{ReportText.Time(baseline.From)} to {ReportText.Time(baseline.To)}", "no request"));
        }
    }

    private static void ConfigurationFindings(Context context, Func<string, string, string, string, string, string, Draft> add)
    {
        var scope = context.Scope;
        var history = context.Input.History;
        foreach (var (version, _, _) in context.InForce)
        {
            var doc = version.Document;
            foreach (var consumer in doc.Consumers.Where(c => scope.Consumers.Contains(c.Id)))
            {
                var service = PolicyControls.ServiceOf(doc, consumer);
                var tenant = PolicyControls.TenantOf(doc, service);
                var currency = PolicyControls.CurrencyOf(tenant);
                var effective = PolicyControls.EffectiveLimits(doc, consumer);
                var category = PolicyNames.Of(consumer.Category);
                if (effective.MaxOutputTokens is null)
                {
                    var largest = context.Window.LargestAllowed.GetValueOrDefault((consumer.Id, version.Number));
                    var draft = add(consumer.Id, Classification.Misconfiguration, "no_output_ceiling", "high", $"No output ceiling for consumer '{consumer.Id}'",
                        $"Neither consumer '{consumer.Id}' nor its category ({category}) sets max_output_tokens: each request may ask the provider for as much output as it likes " +
                        "(a request naming none reserves 4,096 tokens per choice), so cost per request is bounded only by the client.");
                    draft.Versions.Add(version.Number);
                    if (largest is not null && draft.Evidence.Count < MaxRequestEvidence)
                    {
                        draft.Evidence.Add(RequestEvidence(largest, $"allowed with no output ceiling from policy (asked for {(largest.MaxOutputTokens is { } m ? m.ToString(CultureInfo.InvariantCulture) : "none")}, got {largest.OutputTokens?.ToString(CultureInfo.InvariantCulture) ?? "-"})"));
                    }
                }

                if (effective.Budget is { } consumerBudget && service?.Limits.Budget is { } serviceBudget && Above(consumerBudget, serviceBudget))
                {
                    var draft = add(consumer.Id + consumerBudget + serviceBudget, Classification.Misconfiguration, "consumer_budget_above_service", "high",
                        $"Consumer '{consumer.Id}' has a budget above its service's",
                        $"Consumer '{consumer.Id}' may spend {ReportText.Budget(consumerBudget, currency)}, more than service '{service.Id}' as a whole " +
                        $"({ReportText.Budget(serviceBudget, currency)}): the consumer's budget says more than the service declared it can spend." +
                        (consumerBudget.Period != serviceBudget.Period ? " (Periods differ; compared as 30 days to a month.)" : ""));
                    draft.Versions.Add(version.Number);
                    AddBudgetChange(context, draft, "consumer:" + consumer.Id);
                }

                if (effective.Budget is { } cb && tenant?.Limits.Budget is { } tb && Above(cb, tb))
                {
                    var draft = add(consumer.Id + cb + tb, Classification.Misconfiguration, "consumer_budget_above_tenant", "medium",
                        $"Consumer '{consumer.Id}' has a budget above its tenant's",
                        $"Consumer '{consumer.Id}' may spend {ReportText.Budget(cb, currency)}, more than tenant '{tenant.Id}' ({ReportText.Budget(tb, currency)}).");
                    draft.Versions.Add(version.Number);
                }

                if (doc.Defaults.For(consumer.Category)?.Limits.Budget is { } defaultBudget && consumer.Limits.Budget is { } ownBudget
                    && effective.Budget == ownBudget && Above(ownBudget, defaultBudget))
                {
                    var draft = add(consumer.Id + ownBudget, Classification.Misconfiguration, "budget_above_category_default", "medium",
                        $"Consumer '{consumer.Id}' replaced its category's budget with a larger one",
                        $"Category {category} defaults to {ReportText.Budget(defaultBudget, currency)}; consumer '{consumer.Id}' sets {ReportText.Budget(ownBudget, currency)} " +
                        "over a different period, which replaces the default instead of narrowing it.");
                    draft.Versions.Add(version.Number);
                }

                var stated = PolicyControls.Entitlements(doc, consumer);
                if (service?.Models is { } choice)
                {
                    var allowed = choice.Select(m => PolicyControls.CanonicalModel(tenant, m)).ToHashSet(StringComparer.Ordinal);
                    foreach (var model in stated.Where(e => e.Source != "category_default").SelectMany(e => e.Models).Select(m => PolicyControls.CanonicalModel(tenant, m))
                        .Distinct(StringComparer.Ordinal).Where(m => !allowed.Contains(m)))
                    {
                        var draft = add(consumer.Id + "|" + model, Classification.Misconfiguration, "model_outside_service_choice", "medium",
                            $"Consumer '{consumer.Id}' is entitled to '{model}', outside its service's model choice",
                            $"Service '{service.Id}' chose {string.Join(", ", choice)}; the entitlement names '{model}'. The gateway refuses it (the choice bounds " +
                            "every entitlement), but the entitlement says more than the service intends, and widening the choice would silently open it.");
                        draft.Versions.Add(version.Number);
                    }
                }

                foreach (var entitlement in stated.Where(e => e.Source == "entitlement"))
                {
                    EntitlementFindings(context, add, version, consumer, service, tenant, entitlement);
                }

                if (!PolicyControls.HasBudget(doc, consumer))
                {
                    var draft = add(consumer.Id, Classification.MissingGovernance, "no_budget", "high", $"No budget at any level for consumer '{consumer.Id}'",
                        $"Neither consumer '{consumer.Id}', its category ({category}), its service '{consumer.Service}' nor its tenant has a budget: nobody declared " +
                        "what this use may cost, so nothing stops it and nobody is accountable for the bill.");
                    draft.Versions.Add(version.Number);
                    if (context.Window.Spent.GetValueOrDefault((consumer.Id, version.Number)) is { } spent)
                    {
                        draft.Evidence.Add(new Evidence("spend", "v" + version.Number.ToString(CultureInfo.InvariantCulture),
                            $"{ReportText.Plural(spent.Count, "priced request")} under it spent {ReportText.Money(spent.Sum, spent.FirstEntry.Currency)} with no budget"));
                        AddRequests(draft, spent);
                    }
                }
            }

            foreach (var service in doc.Services.Where(s => scope.Services.Contains(s.Id)))
            {
                var tenant = doc.Tenants.FirstOrDefault(t => t.Id == service.Tenant);
                foreach (var gap in Governance.Gaps(doc, service))
                {
                    var draft = add(service.Id + gap.Field + gap.Message, Classification.MissingGovernance, "owner_gap", "high",
                        gap.Message.Replace(": missing governance", "", StringComparison.Ordinal),
                        $"{gap.Message} ({gap.Field}). Without every owner role filled by a distinct contact, nobody answers for access ({"policy"}), " +
                        "the bill (billing) or whether the controls were active and who can stop the traffic (technical).");
                    draft.Versions.Add(version.Number);
                    if (context.Input.AdminEntries.LastOrDefault(a => a.Action == "policy.version_created" && a.PolicyVersion == version.Number) is { } created)
                    {
                        draft.Evidence.Add(new Evidence("ledger_entry", created.Position, context.VersionConcerns(version.Number)
                            ? $"policy version {version.Number} put in force by {created.Actor}: {created.Reason}"
                            : $"policy version {version.Number} in force, by a change outside this subject"));
                    }

                    foreach (var set in context.Input.AdminEntries.Where(a => a.Action == "service.owners_set" && a.Target == "service:" + service.Id && a.Timestamp < context.Input.To))
                    {
                        draft.Evidence.Add(new Evidence("ledger_entry", set.Position, $"{ReportText.Time(set.Timestamp)} service.owners_set by {set.Actor}: {set.Before} -> {set.After}"));
                    }

                    if (context.Window.Served.GetValueOrDefault((service.Id, version.Number)) is { } served && draft.Evidence.All(e => e.Kind != "request"))
                    {
                        draft.Evidence.Add(new Evidence("reason_count", "allow", $"{ReportText.Plural(served.Count, "request")} of the service served under v{version.Number} without that owner"));
                        AddRequests(draft, served);
                    }
                }

                if (service.Limits.Budget is { } sb && tenant?.Limits.Budget is { } tb && Above(sb, tb))
                {
                    var draft = add(service.Id + sb + tb, Classification.Misconfiguration, "service_budget_above_tenant", "medium",
                        $"Service '{service.Id}' has a budget above its tenant's",
                        $"Service '{service.Id}' may spend {ReportText.Budget(sb, PolicyControls.CurrencyOf(tenant))}, more than tenant '{tenant.Id}' ({ReportText.Budget(tb, PolicyControls.CurrencyOf(tenant))}).");
                    draft.Versions.Add(version.Number);
                }
            }

            RemovedControls(context, add, version, history.LastOrDefault(v => v.Number < version.Number));
        }

        // Traffic of an agent under a consumer of another category escapes the agent defaults.
        foreach (var (consumer, list) in context.Window.AgentTraffic)
        {
            var draft = add(consumer, Classification.Misconfiguration, "category_mismatch", "medium",
                $"Agent traffic under {list.FirstEntry.Category} consumer '{consumer}'",
                $"{ReportText.Plural(list.Count, "request")} carried an agent run (X-Custos-Agent-Run) but consumer '{consumer}' is registered as {list.FirstEntry.Category}: " +
                "the agent category's defaults (limits, ceilings, budget) and its owner roles (agent operator, business sponsor) do not apply to it.");
            AddRequests(draft, list);
        }
    }

    private static void EntitlementFindings(Context context, Func<string, string, string, string, string, string, Draft> add, PolicyVersion version,
        ConsumerConfig consumer, ServiceConfig? service, TenantConfig? tenant, StatedEntitlement entitlement)
    {
        var ticket = entitlement.Ticket;
        if (entitlement.ApprovedBy is null)
        {
            var draft = add(consumer.Id + "|" + string.Join(",", entitlement.Models), Classification.MissingGovernance, "entitlement_without_approver", "low",
                $"An entitlement of '{consumer.Id}' names no approver",
                $"The entitlement to {string.Join(", ", entitlement.Models)} records no approved_by: nobody is on record as having approved this access.");
            draft.Versions.Add(version.Number);
        }
        else if (service is not null && !IsApprover(service, entitlement.ApprovedBy))
        {
            var draft = add(consumer.Id + "|" + entitlement.ApprovedBy, Classification.MissingGovernance, "approver_not_policy_owner", "low",
                $"Access of '{consumer.Id}' approved by '{entitlement.ApprovedBy}', not the service's policy owner",
                $"'{entitlement.ApprovedBy}' is neither the policy owner of service '{service.Id}' ({service.Owners.Policy?.Name ?? "none named"}) nor a delegate the policy names.");
            draft.Versions.Add(version.Number);
        }

        if (ticket is null || !ticket.StartsWith("ar-", StringComparison.Ordinal))
        {
            return;
        }

        var request = context.Input.AccessRequests.FirstOrDefault(a => a.Id == ticket);
        if (request is null || request.Status != AccessRequestStatus.Approved)
        {
            var draft = add(consumer.Id + "|" + ticket, Classification.MissingGovernance, "entitlement_not_approved", "high",
                $"Entitlement of '{consumer.Id}' cites {ticket}, which was never approved",
                request is null
                    ? $"The entitlement names access request {ticket}, which Custos does not hold: the approval it claims cannot be shown."
                    : $"The entitlement names access request {ticket}, which is {request.Status.ToString().ToLowerInvariant()}: the access was put in the policy without its approval.");
            draft.Versions.Add(version.Number);
            if (request is not null)
            {
                draft.Evidence.Add(new Evidence("access_request", request.Id, $"{request.Status.ToString().ToLowerInvariant()}; asked by {request.RequestedBy} for {string.Join(", ", request.Models)}"));
            }

            return;
        }

        var requested = request.Models.Select(m => PolicyControls.CanonicalModel(tenant, m)).ToHashSet(StringComparer.Ordinal);
        var granted = entitlement.Models.Select(m => PolicyControls.CanonicalModel(tenant, m)).Distinct(StringComparer.Ordinal).ToList();
        var extra = granted.Where(m => !requested.Contains(m)).ToList();
        var longer = request.ValidUntil is { } until && (entitlement.ValidUntil is null || entitlement.ValidUntil > until);
        var otherConsumer = request.Consumer != consumer.Id;
        if (extra.Count == 0 && !longer && !otherConsumer)
        {
            return;
        }

        var what = new List<string>();
        if (extra.Count > 0)
        {
            what.Add($"models {string.Join(", ", extra)} were never requested (the request asked for {string.Join(", ", request.Models)})");
        }

        if (longer)
        {
            what.Add($"it is valid {(entitlement.ValidUntil is { } u ? "until " + ReportText.Time(u) : "without end")}, the request asked until {ReportText.Time(request.ValidUntil)}");
        }

        if (otherConsumer)
        {
            what.Add($"the request was for consumer '{request.Consumer}'");
        }

        var finding = add(consumer.Id + "|" + ticket, Classification.Misconfiguration, "entitlement_broader_than_requested", "high",
            $"Entitlement of '{consumer.Id}' is broader than access request {ticket}",
            $"The entitlement citing {ticket} (approved by {entitlement.ApprovedBy}) grants more than was asked and approved: {string.Join("; ", what)}.");
        finding.Versions.Add(version.Number);
        if (finding.Evidence.All(e => e.Ref != request.Id))
        {
            finding.Evidence.Add(new Evidence("access_request", request.Id,
                $"asked by {request.RequestedBy} at {ReportText.Time(request.RequestedAt)} for {string.Join(", ", request.Models)}" +
                $"{(request.ValidUntil is { } v ? " until " + ReportText.Time(v) : "")}; approved by {request.DecidedBy} at {ReportText.Time(request.DecidedAt)} as v{request.PolicyVersion}"));
            var widened = context.Input.History.FirstOrDefault(v => v.Number > (request.PolicyVersion ?? 0)
                && v.Document.Consumers.FirstOrDefault(c => c.Id == consumer.Id)?.Entitlements.Any(e => e.Ticket == ticket
                    && e.Models.Select(m => PolicyControls.CanonicalModel(tenant, m)).Any(m => !requested.Contains(m))) == true);
            if (widened is not null)
            {
                finding.Evidence.Add(new Evidence("policy_version", "v" + widened.Number, $"widened by {widened.Author} at {ReportText.Time(widened.CreatedAt)}: {widened.Reason}"));
            }

            var used = context.AllowedFor(consumer.Id, tenant, extra.Contains);
            AddRequests(finding, used, _ => "used a model that was never requested");
        }
    }

    private static void RemovedControls(Context context, Func<string, string, string, string, string, string, Draft> add, PolicyVersion version, PolicyVersion? previous)
    {
        if (previous is null)
        {
            return;
        }

        var (before, after) = (previous.Document, version.Document);
        var lost = new List<(string Scope, string Control, string Was)>();
        foreach (var consumer in after.Consumers.Where(c => context.Scope.Consumers.Contains(c.Id)))
        {
            if (before.Consumers.FirstOrDefault(c => c.Id == consumer.Id) is not { } old)
            {
                continue;
            }

            Compare("consumer:" + consumer.Id, PolicyControls.EffectiveLimits(before, old), PolicyControls.EffectiveLimits(after, consumer), ceilings: true);
        }

        foreach (var service in after.Services.Where(s => context.Scope.Services.Contains(s.Id)))
        {
            if (before.Services.FirstOrDefault(s => s.Id == service.Id) is { } old)
            {
                Compare("service:" + service.Id, old.Limits, service.Limits, ceilings: false);
                lost.AddRange(old.PromptRules.Where(r => service.PromptRules.All(n => n.Id != r.Id)).Select(r => ("service:" + service.Id, "prompt_restriction", "rule " + r.Id)));
            }
        }

        foreach (var tenant in after.Tenants.Where(t => context.Scope.Tenants.Contains(t.Id)))
        {
            if (before.Tenants.FirstOrDefault(t => t.Id == tenant.Id) is { } old)
            {
                Compare("tenant:" + tenant.Id, old.Limits, tenant.Limits, ceilings: false);
                lost.AddRange(old.PromptRules.Where(r => tenant.PromptRules.All(n => n.Id != r.Id)).Select(r => ("tenant:" + tenant.Id, "prompt_restriction", "rule " + r.Id)));
            }
        }

        var record = context.Input.AdminEntries.LastOrDefault(a => a.Action == "policy.version_created" && a.PolicyVersion == version.Number);
        foreach (var (scope, control, was) in lost)
        {
            var draft = add(scope + control + was + version.Number, Classification.Misconfiguration, "control_removed", "medium",
                // A prompt rule by its id: two rules removed at once made two findings of the same title.
                control == "prompt_restriction" ? $"{control} of {scope} removed in v{version.Number}: {was}" : $"{control} of {scope} removed in v{version.Number}",
                $"Version {version.Number} (by {version.Author}, {ReportText.Time(version.CreatedAt)}: {version.Reason}) removed {control} of {scope}, which v{previous.Number} set ({was}).");
            draft.Versions.Add(version.Number);
            if (record is not null)
            {
                draft.Evidence.Add(new Evidence("ledger_entry", record.Position, $"policy.version_created by {record.Actor}"));
            }
        }

        void Compare(string scope, LimitsConfig was, LimitsConfig now, bool ceilings)
        {
            (string Control, long? Was, long? Now)[] fields =
            [
                ("rate_limit.requests", was.RequestsPerMinute, now.RequestsPerMinute),
                ("rate_limit.tokens", was.TokensPerMinute, now.TokensPerMinute),
                ("quota.requests_per_day", was.RequestsPerDay, now.RequestsPerDay),
                ("quota.tokens_per_day", was.TokensPerDay, now.TokensPerDay),
                ("quota.requests_per_month", was.RequestsPerMonth, now.RequestsPerMonth),
                ("quota.tokens_per_month", was.TokensPerMonth, now.TokensPerMonth),
                .. (ceilings
                    ? new (string, long?, long?)[] { ("token_ceiling.input", was.MaxInputTokens, now.MaxInputTokens), ("token_ceiling.output", was.MaxOutputTokens, now.MaxOutputTokens), ("token_ceiling.n", was.MaxN, now.MaxN) }
                    : []),
            ];
            lost.AddRange(fields.Where(f => f.Was is not null && f.Now is null).Select(f => (scope, f.Control, f.Was!.Value.ToString("N0", CultureInfo.InvariantCulture))));
            if (was.Budget is { } budget && now.Budget is null)
            {
                lost.Add((scope, "budget", ReportText.Budget(budget, null)));
            }
        }
    }

    private static void SharedCredentialFindings(Context context, Func<string, string, string, string, string, string, Draft> add)
    {
        var versions = context.Input.History.Where(v => v.CreatedAt < context.Input.To).ToList();
        foreach (var id in context.Scope.Credentials)
        {
            var bindings = versions.SelectMany(v => v.Document.Credentials.Where(c => c.Id == id).Select(c => (v.Number, c.Consumer, c.KeySha256))).ToList();
            var consumers = bindings.Select(b => b.Consumer).Distinct(StringComparer.Ordinal).ToList();
            var hashes = bindings.Select(b => b.KeySha256).Where(h => h is not null).ToHashSet(StringComparer.Ordinal);
            var twins = versions.SelectMany(v => v.Document.Credentials.Where(c => c.Id != id && c.KeySha256 is not null && hashes.Contains(c.KeySha256)).Select(c => (v.Number, c.Id, c.Consumer)))
                .ToList();
            var used = context.Window.Credentials.GetValueOrDefault(id);
            var usedBy = used?.Consumers ?? [];
            var usedFrom = used?.Services ?? [];
            var twinConsumers = twins.Select(t => t.Consumer).Where(c => !consumers.Contains(c)).Distinct(StringComparer.Ordinal).ToList();
            if (consumers.Count <= 1 && twinConsumers.Count == 0 && usedBy.Count <= 1 && usedFrom.Count <= 1)
            {
                continue;
            }

            var who = consumers.Union(twinConsumers).Union(usedBy).Distinct(StringComparer.Ordinal).ToList();
            var draft = add(id, Classification.MissingGovernance, "shared_credential", "high", $"Credential '{id}' is shared by several consumers",
                $"Credential '{id}' has acted for {string.Join(", ", who)}" + (usedFrom.Count > 1 ? $" and from services {string.Join(", ", usedFrom)}" : "") +
                ": a request made with it cannot be pinned on one accountable consumer and owner.");
            foreach (var group in bindings.GroupBy(b => b.Consumer))
            {
                draft.Evidence.Add(new Evidence("policy_version", Ranges(group.Select(g => g.Number)), $"binds {id} to consumer '{group.Key}'"));
            }

            foreach (var group in twins.GroupBy(t => (t.Id, t.Consumer)))
            {
                draft.Evidence.Add(new Evidence("policy_version", Ranges(group.Select(g => g.Number)), $"binds the same key to credential '{group.Key.Id}' of consumer '{group.Key.Consumer}'"));
            }

            if (usedBy.Count > 1 || usedFrom.Count > 1)
            {
                AddRequests(draft, IncidentWindow.Sample.Of([.. used!.FirstAs.Values]), r => $"as consumer '{r.Consumer}' of service '{r.Service}'");
            }
        }
    }

    private static void AlertFindings(Context context, Func<string, string, string, string, string, string, Draft> add)
    {
        foreach (var alert in context.Alerts)
        {
            var signal = alert.Signal;
            if (alert.ActionPolicyVersion is { } actionVersion)
            {
                // The detector's rule acted on its own: the use was anomalous enough to stop. An owner undoing it says it was explained.
                // Undone through the alert (resolved), or by another route: `keys resume`, or the throttle lifted by hand.
                var undoneBy = context.Input.AdminEntries.FirstOrDefault(a => a.Timestamp >= alert.RaisedAt
                    && ((signal.CredentialId is { } credential && a.Action == "credential.resumed" && a.Target == "credential:" + credential)
                        || (signal.Consumer is { } consumer && a.Action == "consumer.unthrottled" && a.Target == "consumer:" + consumer)));
                var undone = alert.Status == AlertStatus.Resolved || undoneBy is not null;
                var how = undoneBy is not null
                    ? $"; {undoneBy.Actor} undid it at {ReportText.Time(undoneBy.Timestamp)} ({undoneBy.Action}: {undoneBy.Reason})."
                    : alert.Status == AlertStatus.Resolved ? $"; {alert.ResolvedBy} undid it at {ReportText.Time(alert.ResolvedAt)} ({alert.Note})." : ", still in force when the pack was made.";
                var draft = add(alert.Id, Classification.Misuse, "automatic_action", undone ? "medium" : "high", $"Alert {alert.Id} {alert.ActionTaken} automatically",
                    $"The {signal.Type} detector raised {alert.Id} at {ReportText.Time(alert.RaisedAt)}: {signal.Summary} Its rule ({signal.Rule ?? "no rule recorded"}) acted on its own " +
                    $"as policy version {actionVersion}" + how);
                draft.Evidence.Add(AlertEvidence(alert));
                AddRaisingRequest(context, draft, signal);
                draft.Evidence.Add(new Evidence("policy_version", "v" + actionVersion.ToString(CultureInfo.InvariantCulture), $"made by custos:alerts: {alert.ActionTaken}"));
                foreach (var entry in context.Input.AdminEntries.Where(a => a.Actor == "custos:alerts" && a.Action is "credential.suspended" or "consumer.throttled"
                    && a.Reason?.StartsWith(alert.Id + ":", StringComparison.Ordinal) == true))
                {
                    draft.Evidence.Add(new Evidence("ledger_entry", entry.Position, $"{ReportText.Time(entry.Timestamp)} {entry.Action} of {entry.Target} by {entry.Actor}, with the rule and the evidence"));
                }
            }

            if (alert.EscalatedAt is { } escalatedAt)
            {
                var told = alert.Recipients.Count == 0 ? "nobody" : string.Join(", ", alert.Recipients);
                var draft = add(alert.Id, Classification.MissingGovernance, "alert_escalated", "medium", $"Alert {alert.Id} was not acknowledged in time",
                    $"{signal.Type} alert {alert.Id} ({PolicyNames.Of(signal.Severity)}), raised at {ReportText.Time(alert.RaisedAt)}, was not acknowledged before it escalated at " +
                    $"{ReportText.Time(escalatedAt)}" + (alert.AcknowledgedBy is null ? "; nobody had acknowledged it when the pack was made" : $"; {alert.AcknowledgedBy} acknowledged it at {ReportText.Time(alert.AcknowledgedAt)}") +
                    $". Told: {told}. The owners were named but did not answer in the time the policy sets (alerts.escalate_after_minutes).");
                draft.Evidence.Add(AlertEvidence(alert));
                foreach (var entry in context.Input.AdminEntries.Where(a => a.Target == "alert:" + alert.Id && a.Action is "alert.escalated" or "alert.acknowledged"))
                {
                    draft.Evidence.Add(new Evidence("ledger_entry", entry.Position, $"{ReportText.Time(entry.Timestamp)} {entry.Action} by {entry.Actor}: {entry.Before ?? "-"} -> {entry.After ?? "-"}"));
                }
            }
        }

        static Evidence AlertEvidence(Alert alert) => new("alert", alert.Id,
            $"{alert.Signal.Type} ({PolicyNames.Of(alert.Signal.Severity)}) raised {ReportText.Time(alert.RaisedAt)}, {PolicyNames.Of(alert.Status)}" +
            (alert.Signal.Evidence.Count == 0 ? "" : "; " + string.Join(", ", alert.Signal.Evidence.Select(e => $"{e.Key} {e.Value}"))));

        static void AddRaisingRequest(Context context, Draft draft, AlertSignal signal)
        {
            if (signal.RequestId is not { } id)
            {
                return;
            }

            draft.Evidence.Add(context.Window.Found.GetValueOrDefault(id) is { } request
                ? RequestEvidence(request, "raised the alert")
                : new Evidence("request", id, "raised the alert"));
        }
    }

    /// <summary>Whether a budget allows more than another: same period by amount; otherwise a day counts as a thirtieth of a month.</summary>
    private static bool Above(BudgetConfig a, BudgetConfig b)
    {
        static decimal Monthly(BudgetConfig x) => x.Period == BudgetPeriod.Day ? x.Amount * 30 : x.Amount;
        return a.Period == b.Period ? a.Amount > b.Amount : Monthly(a) > Monthly(b);
    }

    private static void AddBudgetChange(Context context, Draft draft, string target)
    {
        foreach (var entry in context.Input.AdminEntries.Where(a => a.Action == "budget.set" && a.Target == target && a.Timestamp < context.Input.To))
        {
            draft.Evidence.Add(new Evidence("ledger_entry", entry.Position, $"{ReportText.Time(entry.Timestamp)} budget.set by {entry.Actor}: {entry.Before ?? "none"} -> {entry.After ?? "none"}; reason: {entry.Reason}"));
        }
    }

    /// <summary>True when <paramref name="who"/> is the service's policy owner (its admin, e-mail or name) or a delegate the policy names.</summary>
    private static bool IsApprover(ServiceConfig service, string who)
    {
        var owner = service.Owners.Policy;
        return (owner is not null && (string.Equals(owner.Admin, who, StringComparison.Ordinal) || string.Equals(owner.Email, who, StringComparison.OrdinalIgnoreCase)
                || string.Equals(owner.Name, who, StringComparison.Ordinal)))
            || (service.Approvers ?? []).Contains(who, StringComparer.Ordinal);
    }

    private static string Number(decimal? value) => value is { } v ? PolicyNames.Normalize(v).ToString(CultureInfo.InvariantCulture) : "-";

    private static string Describe(TimeSpan span) => span.TotalDays >= 1 ? $"{span.TotalDays:0.#} days" : span.TotalHours >= 1 ? $"{span.TotalHours:0.#} hours"
        : span.TotalMinutes >= 1 ? $"{span.TotalMinutes:0.#} minutes" : $"{span.TotalSeconds:0.#} seconds";

    private static Classification Classify(IReadOnlyList<Finding> findings, Context context)
    {
        var ranked = ClassOrder.Select(c => (Class: c, Findings: findings.Where(f => f.Class == c).ToList()))
            .Select(x => (x.Class, x.Findings, Score: x.Findings.Sum(f => f.Weight)))
            .OrderByDescending(x => x.Score).ThenBy(x => Array.IndexOf(ClassOrder, x.Class)).ToList();
        var rankings = new List<ClassRanking>();
        var rank = 0;
        foreach (var (cls, list, score) in ranked)
        {
            rank = score == 0 ? ranked.Count(r => r.Score > 0) + 1 : rank + 1;
            string explanation;
            if (list.Count == 0)
            {
                explanation = cls switch
                {
                    Classification.Misuse => "No anomalous use found: no burst of refusals, prompt restrictions, entitlement probing, stopped credential, use far above the baseline or automatic action by an alert rule.",
                    Classification.Misconfiguration => "No control found absent or set beyond the declared intent for the subject in the window.",
                    _ => "Owners named, budgets set, credentials not shared, alerts acknowledged in time and the chain intact for the subject in the window.",
                };
            }
            else
            {
                var titles = string.Join("; ", list.Select(f => f.Title));
                explanation = cls switch
                {
                    Classification.Misuse => $"Anomalous use: {titles}. " + MisusePreconditions(context),
                    Classification.Misconfiguration => $"A control was absent or set beyond the declared intent: {titles}.",
                    _ => $"Accountability was missing: {titles}.",
                };
            }

            rankings.Add(new ClassRanking(rank, cls, score, list.Count, explanation));
        }

        var applying = rankings.Where(r => r.Score > 0).ToList();
        if (applying.Count == 0)
        {
            return new Classification(null, rankings,
                $"No finding in the window: {ReportText.Plural(context.Window.Count, "request")} under controls that held, owners named, budget set and the chain " +
                (context.Input.Chain.Status == ChainCheck.Verified ? "intact." : "not verified.") + " Nothing here points to misuse, misconfiguration or missing governance.");
        }

        var order = string.Join(", then ", applying.Select(r => $"{Name(r.Class)} (score {r.Score}, {ReportText.Plural(r.Findings, "finding")})"));
        var tie = applying.Count > 1 && applying[0].Score == applying[1].Score
            ? $" {Name(applying[0].Class)} and {Name(applying[1].Class)} tie; a cause in configuration or governance is ranked first, because it is what made the rest possible."
            : "";
        var why = applying.Count > 1
            ? $" Several classes apply: fix the first to remove the cause, and read the others as what else the incident shows."
            : "";
        return new Classification(applying[0].Class, rankings,
            $"Classified {Name(applying[0].Class)}. Ranked by the weight of the evidence (each finding high 3, medium 2, low 1): {order}.{tie}{why}");
    }

    private static string MisusePreconditions(Context context)
    {
        var window = context.Window;
        var approvals = string.Join(", ", window.Approvals.Select(a => $"{a.Requests} {a.Detail}"))
            + (window.OtherApprovals > 0 ? $", {window.OtherApprovals} under other approvals" : "");
        return $"The credential was entitled ({ReportText.Plural(window.Allowed, "request")} allowed{(approvals.Length == 0 ? "" : ": " + approvals)}) and the controls were enforced " +
            $"({ReportText.Plural(window.Enforced, "request")} evaluated, {window.RefusedByControls} refused by a control), so the anomaly is in the use, not in the setup.";
    }

    /// <summary>A class in words.</summary>
    public static string Name(string cls) => cls switch
    {
        Classification.MissingGovernance => "missing governance",
        _ => cls,
    };
}
