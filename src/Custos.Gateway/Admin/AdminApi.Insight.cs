using System.Globalization;
using System.Threading.RateLimiting;
using Custos.Gateway.Hosting;
using Custos.Ledger;
using Custos.Policy;
using Custos.Reports;
using DiffPlex.DiffBuilder;
using DiffPlex.DiffBuilder.Model;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Custos.Gateway.Admin;

/// <summary>
/// What the console reads beside the resources themselves: the overview (spend against budgets, requests and refusals
/// over time, top consumers), one policy version and the diff of any two, and the evidence reports.
/// </summary>
internal static partial class AdminApi
{
    private static void MapInsight(RouteGroupBuilder api, CustosGateway gateway)
    {
        api.MapGet("/overview", async (HttpContext context, string? window) =>
        {
            var admin = Admin(context);
            if (!AdminAccess.Grants(admin.Role, AdminPermission.ReadSpend) && !AdminAccess.Grants(admin.Role, AdminPermission.ReadLedger))
            {
                throw await DeniedAsync(context, gateway, "overview.read", "overview", null, $"role {PolicyNames.Of(admin.Role)} may not do this");
            }

            var (span, bucket) = window switch
            {
                "1h" => (TimeSpan.FromHours(1), TimeSpan.FromMinutes(1)),
                null or "24h" => (TimeSpan.FromHours(24), TimeSpan.FromHours(1)),
                "7d" => (TimeSpan.FromDays(7), TimeSpan.FromHours(6)),
                "30d" => (TimeSpan.FromDays(30), TimeSpan.FromDays(1)),
                _ => throw AdminProblemException.Invalid($"'window' must be 1h, 24h, 7d or 30d, not '{window}'."),
            };
            using var turn = await TurnAsync(context, gateway, "overview.read", "overview", null);
            return Json(await AdminReadGate.RunAsync(() => OverviewAsync(context, gateway, span, bucket)));
        }).WithSummary("Spend against budgets this month, requests and refusals by reason over a window (1h, 24h, 7d, 30d), top consumers, open alerts; in scope.")
            .Produces<OverviewView>();

        api.MapGet("/policy/versions/{number:long}", async (HttpContext context, long number) =>
        {
            var history = await gateway.Store.GetHistoryAsync(context.RequestAborted);
            var version = FindVersion(history, number);
            var previous = history.Where(v => v.Number < number).MaxBy(v => v.Number);
            var admin = Admin(context);
            var document = AdminAccess.ScopedView(admin, version.Document);
            return Json(new PolicyVersionDetail(VersionViews(admin, history)(version), PolicyYamlWriter.Write(document),
                [.. PolicyDiff.Compute(previous is null ? null : AdminAccess.ScopedView(admin, previous.Document), document).Select(c => c.ToString())]));
        }).WithSummary("One policy version: who, why, when, its YAML, and what it changed from the version before.").Produces<PolicyVersionDetail>();

        api.MapGet("/policy/diff", async (HttpContext context, long from, long to) =>
        {
            var history = await gateway.Store.GetHistoryAsync(context.RequestAborted);
            var (before, after) = (FindVersion(history, from), FindVersion(history, to));
            var admin = Admin(context);
            var (beforeDocument, afterDocument) = (AdminAccess.ScopedView(admin, before.Document), AdminAccess.ScopedView(admin, after.Document));
            var diff = InlineDiffBuilder.Diff(PolicyYamlWriter.Write(beforeDocument), PolicyYamlWriter.Write(afterDocument), ignoreWhiteSpace: false);
            var lines = diff.Lines.Select(l => new DiffLine(l.Type switch
            {
                ChangeType.Inserted => "added",
                ChangeType.Deleted => "removed",
                _ => "same",
            }, l.Text)).ToArray();
            var view = VersionViews(admin, history);
            return Json(new PolicyDiffView(view(before), view(after),
                [.. PolicyDiff.Compute(beforeDocument, afterDocument).Select(c => c.ToString())], lines));
        }).WithSummary("What changed between two policy versions: the changes by path, and a line diff of their YAML.").Produces<PolicyDiffView>();

        api.MapGet("/reports/incident", async (HttpContext context, string? subject, string? id, DateTimeOffset? from, DateTimeOffset? to, string? format) =>
        {
            var kind = subject ?? "consumer";
            if (kind is not ("consumer" or "credential" or "service" or "tenant") || string.IsNullOrWhiteSpace(id))
            {
                throw AdminProblemException.Invalid("Name the subject: 'subject' (consumer, credential, service or tenant) and its 'id'.");
            }

            var now = gateway.Time.GetUtcNow();
            var end = to ?? now;
            var start = from ?? end.AddHours(-24);
            if (end <= start)
            {
                throw AdminProblemException.Invalid($"'to' ({LedgerTime.Format(end)}) must be after 'from' ({LedgerTime.Format(start)}).");
            }

            var reportFormat = ReportFormatOf(format);
            var (tenant, service) = SubjectScope(gateway.Policy.Current.Document, kind, id);
            await RequireAsync(context, gateway, AdminPermission.ReadReports, tenant, service, "report.incident", kind + ":" + id, scoped: false);
            if (!AdminAccess.InScope(Admin(context), tenant, service)) // a subject the policy no longer names: gateway-wide admins only
            {
                throw await DeniedAsync(context, gateway, "report.incident", kind + ":" + id, tenant, $"{kind}:{id} is outside the scope of '{Admin(context).Id}'");
            }

            using var turn = await TurnAsync(context, gateway, "report.incident", kind + ":" + id, tenant);
            try
            {
                var report = await AdminReadGate.RunAsync(() => ReportSources.IncidentAsync(gateway.Store, gateway.DataDirectory, new IncidentSubject(kind, id),
                    start, end, now, null, context.RequestAborted));
                return Report(context, ReportWriter.Write(report, reportFormat), reportFormat, $"incident-{kind}-{id}-{now:yyyyMMdd-HHmm}", report.Chain);
            }
            catch (ReportSubjectNotFoundException ex)
            {
                throw new AdminProblemException(StatusCodes.Status404NotFound, "admin.not_found", "Not found", ex.Message + ".");
            }
        }).WithSummary("The incident evidence pack of a consumer, credential, service or tenant over a window (default the last 24 hours), as json, md or html.");

        api.MapGet("/reports/posture", async (HttpContext context, string? format) =>
        {
            var reportFormat = ReportFormatOf(format);
            await RequireAsync(context, gateway, AdminPermission.ReadPosture, null, null, "report.posture", "posture", scoped: false);
            if (!AdminAccess.InScope(Admin(context), null, null))
            {
                throw await DeniedAsync(context, gateway, "report.posture", "posture", null, "the posture report covers the whole gateway; it is for gateway-wide admins");
            }

            using var turn = await TurnAsync(context, gateway, "report.posture", "posture", null);
            var now = gateway.Time.GetUtcNow();
            var report = await AdminReadGate.RunAsync(() => ReportSources.PostureAsync(gateway.Store, gateway.DataDirectory, now, null, context.RequestAborted));
            return Report(context, ReportWriter.Write(report, reportFormat), reportFormat, $"posture-{now:yyyyMMdd-HHmm}", report.Chain);
        }).WithSummary("The NIST CSF 2.0 / AI RMF posture report from live evidence, as json, md or html (gateway-wide admins).");
    }

    /// <summary>
    /// A turn to build one heavy read (<see cref="AdminReadGate"/>), asked for once the admin may have it: dispose it when
    /// the read is done. A full queue is 429 <c>admin.busy</c> with a <c>Retry-After</c>, recorded as a refused attempt
    /// (<c>ACTION_denied</c>) under the policy version that set the limit.
    /// </summary>
    private static async Task<RateLimitLease> TurnAsync(HttpContext context, CustosGateway gateway, string action, string target, string? tenant)
    {
        var snapshot = gateway.Policy.Current;
        var limit = snapshot.Document.Gateway.MaxConcurrentReports ?? AdminReadGate.DefaultLimit;
        var turn = await gateway.AdminReads.EnterAsync(limit, context.RequestAborted);
        if (turn.IsAcquired)
        {
            return turn;
        }

        turn.Dispose();
        var busy = $"building {limit} overview(s) or report(s) (gateway.max_concurrent_reports, policy version {snapshot.Version}) " +
            $"and {AdminReadGate.QueueLimit} more are waiting";
        await gateway.RecordAdminAsync(Admin(context).Id, action + "_denied", target, null, null, "busy: this node is " + busy, tenant);
        context.Response.Headers.RetryAfter = AdminReadGate.RetryAfterSeconds.ToString(CultureInfo.InvariantCulture);
        throw new AdminProblemException(StatusCodes.Status429TooManyRequests, "admin.busy", "Busy",
            $"This node is {busy}; try again in {AdminReadGate.RetryAfterSeconds} s.");
    }

    /// <summary>
    /// The overview from the request totals (<see cref="RequestTotals"/>), from the earliest of the window, this month and the
    /// current period of every budget in scope: each quarter hour's totals are read once and counted wherever they belong.
    /// A window in minutes (the last hour) counts its requests from the totals by minute.
    /// </summary>
    private static async Task<OverviewView> OverviewAsync(HttpContext context, CustosGateway gateway, TimeSpan span, TimeSpan bucket)
    {
        var admin = Admin(context);
        var document = gateway.Policy.Current.Document;
        var now = gateway.Time.GetUtcNow();
        var bucketTicks = bucket.Ticks;
        var to = new DateTimeOffset((now.UtcTicks / bucketTicks + 1) * bucketTicks, TimeSpan.Zero);
        var from = to - span;
        var zone = ZoneInView(admin, document);
        var monthStart = PeriodStart(BudgetPeriod.Month, zone, now);
        var days = TimeZoneInfo.ConvertTime(now, zone).Day;

        var buckets = new OverviewCounts[(int)(span.Ticks / bucketTicks)];
        for (var i = 0; i < buckets.Length; i++)
        {
            buckets[i] = new OverviewCounts(from.AddTicks(i * bucketTicks));
        }

        // What each budget's current period has spent, per distinct period start: summed per tenant, service and consumer.
        var budgets = BudgetsInScope(admin, document, now);
        var spentSince = budgets.Select(b => b.PeriodStart).Distinct().ToDictionary(start => start, _ => new Dictionary<string, decimal>(StringComparer.Ordinal));

        var reasons = new Dictionary<string, long>(StringComparer.Ordinal);
        var consumers = new Dictionary<string, ConsumerCounts>(StringComparer.Ordinal);
        var dailyByService = new Dictionary<string, (string? Tenant, string? Currency, decimal[] Daily)>(StringComparer.Ordinal);

        // Each tenant prices in one currency (the policy refuses two); a view of tenants pricing in different currencies
        // keeps each currency's spend apart instead of adding them into one figure.
        var currencyOf = document.Tenants.ToDictionary(t => t.Id, CurrencyOf, StringComparer.Ordinal);
        var currencies = new SortedSet<string>(TenantsInView(admin, document).Select(CurrencyOf), StringComparer.Ordinal);

        long scanned = 0;

        // Buckets of a quarter hour or more are made of whole slots (every bucket and period starts on a slot's boundary).
        var windowFromTotals = bucketTicks % (RequestTotals.SlotSeconds * TimeSpan.TicksPerSecond) == 0;
        var start = RequestTotals.SlotStart(RequestTotals.SlotOf(spentSince.Keys.Append(from).Append(monthStart).Min()));
        await foreach (var total in gateway.Store.ReadTotalsAsync(RequestTotals.SlotSeconds, start, to, context.RequestAborted))
        {
            scanned += total.Requests;
            if (total.Spend != 0)
            {
                foreach (var (periodStart, spent) in spentSince)
                {
                    if (total.Slot >= periodStart)
                    {
                        foreach (var key in (ReadOnlySpan<string>)["tenant:" + total.Tenant, "service:" + total.Service, "consumer:" + total.Consumer])
                        {
                            spent[key] = spent.GetValueOrDefault(key) + total.Spend;
                        }
                    }
                }
            }

            if (!AdminAccess.InScope(admin, total.Tenant, total.Service))
            {
                continue;
            }

            if (total.Spend != 0 && total.Currency is { } spentIn)
            {
                currencies.Add(spentIn);
            }

            if (total.Slot >= monthStart && total.Service is { } service)
            {
                if (!dailyByService.TryGetValue(service, out var spentBy))
                {
                    dailyByService[service] = spentBy = (total.Tenant, total.Currency, new decimal[days]);
                }

                spentBy.Daily[Math.Min(TimeZoneInfo.ConvertTime(total.Slot, zone).Day, days) - 1] += total.Spend;
            }

            if (windowFromTotals && total.Slot >= from)
            {
                Count(total);
            }
        }

        if (!windowFromTotals)
        {
            // The last hour's minutes.
            await foreach (var total in gateway.Store.ReadTotalsAsync(RequestTotals.MinuteSeconds, from, to, context.RequestAborted))
            {
                if (AdminAccess.InScope(admin, total.Tenant, total.Service))
                {
                    Count(total);
                }
            }
        }

        void Count(RequestTotal total)
        {
            var counts = buckets[Math.Min((int)((total.Slot - from).Ticks / bucketTicks), buckets.Length - 1)];
            counts.Add(total);
            if (total.Decision != "allow")
            {
                foreach (var reason in total.Reasons)
                {
                    reasons[reason] = reasons.GetValueOrDefault(reason) + total.Requests;
                    counts.Reasons[reason] = counts.Reasons.GetValueOrDefault(reason) + total.Requests;
                }
            }

            var consumerId = total.Consumer ?? "(unidentified)";
            if (!consumers.TryGetValue(consumerId, out var consumer))
            {
                consumers[consumerId] = consumer = new ConsumerCounts(consumerId, total.Service, total.Tenant);
            }

            consumer.Add(total);
        }

        // Spend this month, day by day and cumulative, for every service in scope that spent or has a budget; a service
        // removed from the policy since it spent this month stays, retired, so that the lines add up to the month's spend.
        decimal[] Cumulative(string service)
        {
            var daily = dailyByService.TryGetValue(service, out var spentBy) ? spentBy.Daily : new decimal[days];
            var cumulative = new decimal[days];
            var sum = 0m;
            for (var d = 0; d < days; d++)
            {
                cumulative[d] = sum += daily[d];
            }

            return cumulative;
        }

        var spendSeries = document.Services
            .Where(s => AdminAccess.InScope(admin, s.Tenant, s.Id) && (dailyByService.ContainsKey(s.Id) || s.Limits.Budget is not null))
            .Select(s => new SpendSeries(s.Tenant, s.Id, s.Limits.Budget is { Period: BudgetPeriod.Month } b ? PolicyNames.Normalize(b.Amount) : null,
                Cumulative(s.Id), TenantCurrency(s.Tenant)))
            .Concat(dailyByService
                .Where(d => !document.Services.Any(s => s.Id == d.Key))
                .OrderBy(d => d.Key, StringComparer.Ordinal)
                .Select(d => new SpendSeries(d.Value.Tenant ?? "", d.Key, null, Cumulative(d.Key), d.Value.Currency ?? TenantCurrency(d.Value.Tenant)) { Retired = true }))
            .ToArray();

        var budgetUse = budgets.Select(w =>
        {
            var amount = PolicyNames.Normalize(w.Budget.Amount);
            var used = spentSince[w.PeriodStart].GetValueOrDefault(w.Scope + ":" + w.Id);
            return new BudgetUse(w.Scope, w.Id, w.Tenant, w.Service, amount, PolicyNames.Of(w.Budget.Period), PolicyNames.Of(w.Budget.Mode), w.PeriodStart, used,
                amount == 0 ? 0 : Math.Round(used / amount, 9), TenantCurrency(w.Tenant));
        }).OrderByDescending(b => b.Fraction).ThenBy(b => b.Id, StringComparer.Ordinal).ToArray();
        var openAlerts = (await gateway.Store.ListAlertsAsync(Custos.Alerts.AlertStatus.Open, 10_000, context.RequestAborted))
            .Count(a => AdminAccess.InScope(admin, a.Signal.Tenant, a.Signal.Service));
        var single = currencies.Count <= 1;
        return new OverviewView(from, to, (int)bucket.TotalSeconds, single ? currencies.FirstOrDefault() ?? "USD" : null, [.. buckets.Select(b => b.View(single))],
            monthStart, [.. Enumerable.Range(0, days).Select(d => monthStart.AddDays(d))], spendSeries, budgetUse,
            [.. consumers.Values.OrderByDescending(c => c.Spend).ThenByDescending(c => c.Requests).Take(10).Select(c => c.View(TenantCurrency(c.Tenant)))],
            reasons.OrderByDescending(r => r.Value).ToDictionary(r => r.Key, r => r.Value), openAlerts, scanned)
        {
            TimeZone = zone.Id,
            Currencies = single && currencies.Count == 0 ? ["USD"] : [.. currencies],
        };

        string TenantCurrency(string? tenant) => tenant is not null && currencyOf.TryGetValue(tenant, out var c) ? c : "USD";
    }

    /// <summary>Every budget in scope (tenant, service, and each consumer's own or its category's), with the start of its current period in its tenant's time zone.</summary>
    private static List<(string Scope, string Id, string Tenant, string? Service, BudgetConfig Budget, DateTimeOffset PeriodStart)> BudgetsInScope(
        AdminConfig admin, PolicyDocument document, DateTimeOffset now)
    {
        var zones = document.Tenants.ToDictionary(t => t.Id, t => TimeZoneInfo.FindSystemTimeZoneById(t.TimeZone), StringComparer.Ordinal);
        var wanted = new List<(string Scope, string Id, string Tenant, string? Service, BudgetConfig Budget)>();
        wanted.AddRange(document.Tenants.Where(t => t.Limits.Budget is not null && AdminAccess.InScope(admin, t.Id, null))
            .Select(t => ("tenant", t.Id, t.Id, (string?)null, t.Limits.Budget!)));
        wanted.AddRange(document.Services.Where(s => s.Limits.Budget is not null && AdminAccess.InScope(admin, s.Tenant, s.Id))
            .Select(s => ("service", s.Id, s.Tenant, (string?)s.Id, s.Limits.Budget!)));
        foreach (var consumer in document.Consumers)
        {
            // A consumer's own budget, else its category's default (each consumer of the category has one of its own).
            var budget = consumer.Limits.Budget ?? document.Defaults.For(consumer.Category)?.Limits.Budget;
            var service = document.Services.FirstOrDefault(s => s.Id == consumer.Service);
            if (budget is not null && service is not null && AdminAccess.InScope(admin, service.Tenant, service.Id))
            {
                wanted.Add(("consumer", consumer.Id, service.Tenant, service.Id, budget));
            }
        }

        return [.. wanted.Select(w => (w.Scope, w.Id, w.Tenant, w.Service, w.Budget, PeriodStart(w.Budget.Period, zones.GetValueOrDefault(w.Tenant) ?? TimeZoneInfo.Utc, now)))];
    }

    /// <summary>
    /// The time zone of the one tenant in <paramref name="admin"/>'s view, whose budgets' months are its own; UTC when the
    /// view spans tenants in different zones.
    /// </summary>
    internal static TimeZoneInfo ZoneInView(AdminConfig admin, PolicyDocument document)
    {
        string? zone = null;
        foreach (var tenant in TenantsInView(admin, document))
        {
            if (zone is not null && zone != tenant.TimeZone)
            {
                return TimeZoneInfo.Utc;
            }

            zone = tenant.TimeZone;
        }

        return zone is not null && TimeZoneInfo.TryFindSystemTimeZoneById(zone, out var found) ? found : TimeZoneInfo.Utc;
    }

    /// <summary>The tenants <paramref name="admin"/> sees: its own, and those of the services in its scope.</summary>
    private static IEnumerable<TenantConfig> TenantsInView(AdminConfig admin, PolicyDocument document)
        => document.Tenants.Where(t => AdminAccess.InScope(admin, t.Id, null) || document.Services.Any(s => s.Tenant == t.Id && AdminAccess.InScope(admin, s.Tenant, s.Id)));

    /// <summary>The currency <paramref name="tenant"/> prices its models in (the policy allows one per tenant); USD when it has none.</summary>
    internal static string CurrencyOf(TenantConfig tenant) => PolicyControls.CurrencyOf(tenant) ?? "USD";

    internal static DateTimeOffset PeriodStart(BudgetPeriod period, TimeZoneInfo zone, DateTimeOffset now)
    {
        var local = TimeZoneInfo.ConvertTime(now, zone);
        var start = period == BudgetPeriod.Day ? local.Date : new DateTime(local.Year, local.Month, 1, 0, 0, 0, DateTimeKind.Unspecified);
        return new DateTimeOffset(start, zone.GetUtcOffset(start)).ToUniversalTime();
    }

    private static PolicyVersion FindVersion(IReadOnlyList<PolicyVersion> history, long number)
        => history.FirstOrDefault(v => v.Number == number) ?? throw AdminProblemException.NotFound("policy version", number.ToString(CultureInfo.InvariantCulture));

    /// <summary>The tenant and service a report subject belongs to under the policy in force; (null, null) for one it no longer names.</summary>
    private static (string? Tenant, string? Service) SubjectScope(PolicyDocument document, string kind, string id)
    {
        switch (kind)
        {
            case "tenant":
                return (document.Tenants.Any(t => t.Id == id) ? id : null, null);
            case "credential":
                var credential = document.Credentials.FirstOrDefault(c => c.Id == id);
                return credential is null ? (null, null) : SubjectScope(document, "consumer", credential.Consumer);
            default:
                var serviceId = kind == "service" ? id : document.Consumers.FirstOrDefault(c => c.Id == id)?.Service;
                var service = serviceId is null ? null : document.Services.FirstOrDefault(s => s.Id == serviceId);
                return service is null ? (null, null) : (service.Tenant, service.Id);
        }
    }

    private static ReportFormat ReportFormatOf(string? format) => format?.ToLowerInvariant() switch
    {
        null or "json" => ReportFormat.Json,
        "md" or "markdown" => ReportFormat.Md,
        "html" => ReportFormat.Html,
        _ => throw AdminProblemException.Invalid($"'format' must be json, md or html, not '{format}'."),
    };

    /// <summary>
    /// A report as <paramref name="format"/>, named for a download, with its chain check in <c>X-Custos-Chain</c>
    /// (<c>verified</c>, <c>failed</c> or <c>not_verified</c>): <c>custos report --server</c> exits 2 on <c>failed</c>, as it
    /// does on the store, whatever the format.
    /// </summary>
    private static IResult Report(HttpContext context, string text, ReportFormat format, string name, ChainCheck chain)
    {
        context.Response.Headers[ChainHeader] = chain.Status;
        var (type, extension) = format switch
        {
            ReportFormat.Json => ("application/json", "json"),
            ReportFormat.Md => ("text/markdown; charset=utf-8", "md"),
            _ => ("text/html; charset=utf-8", "html"),
        };
        context.Response.Headers.ContentDisposition = $"inline; filename=\"{name}.{extension}\"";
        return Results.Text(text, type);
    }

    /// <summary>The response header naming a report's chain check.</summary>
    public const string ChainHeader = "X-Custos-Chain";

    /// <summary>Counts of one bucket of the overview.</summary>
    private sealed class OverviewCounts(DateTimeOffset start)
    {
        private long _requests, _allowed, _denied, _throttled;
        private readonly SortedDictionary<string, decimal> _spend = new(StringComparer.Ordinal);

        public Dictionary<string, long> Reasons { get; } = new(StringComparer.Ordinal);

        public void Add(RequestTotal total)
        {
            _requests += total.Requests;
            if (total.Spend != 0)
            {
                var currency = total.Currency ?? "USD";
                _spend[currency] = _spend.GetValueOrDefault(currency) + total.Spend;
            }

            switch (total.Decision)
            {
                case "allow": _allowed += total.Requests; break;
                case "throttle": _throttled += total.Requests; break;
                default: _denied += total.Requests; break;
            }
        }

        /// <param name="single">Whether the view has one currency, so its spend is one figure.</param>
        public OverviewBucket View(bool single) => new(start, _requests, _allowed, _denied, _throttled, single ? _spend.Values.Sum() : null, _spend, Reasons);
    }

    /// <summary>One consumer's counts in the overview window.</summary>
    private sealed class ConsumerCounts(string consumer, string? service, string? tenant)
    {
        public long Requests { get; private set; }

        public decimal Spend { get; private set; }

        private long _refused;

        public void Add(RequestTotal total)
        {
            Requests += total.Requests;
            Spend += total.Spend;
            if (total.Decision != "allow")
            {
                _refused += total.Requests;
            }
        }

        public string? Tenant => tenant;

        public ConsumerUse View(string currency) => new(consumer, service, tenant, Requests, _refused, Spend, currency);
    }
}
