using System.Globalization;
using Custos.Policy;

namespace Custos.Reports;

/// <summary>One entitlement of a consumer as the policy states it (before the service's model choice narrows it).</summary>
/// <param name="Models">Models, as written (names or aliases).</param>
/// <param name="Source"><c>entitlement</c>, <c>models</c> (shorthand without approver) or <c>category_default</c>.</param>
/// <param name="ApprovedBy">Who approved it.</param>
/// <param name="Ticket">The approval reference.</param>
/// <param name="ValidFrom">Start of validity.</param>
/// <param name="ValidUntil">End of validity.</param>
public sealed record StatedEntitlement(IReadOnlyList<string> Models, string Source, string? ApprovedBy, string? Ticket, DateTimeOffset? ValidFrom,
    DateTimeOffset? ValidUntil);

/// <summary>
/// Reads a policy document the way the gateway evaluates it: the effective limits of a consumer (its category's
/// defaults narrowed by its own), its entitlements, and the controls active for it at every level, in words.
/// </summary>
public static class PolicyControls
{
    private static readonly (string Control, Func<LimitsConfig, long?> Get, string Unit)[] Counters =
    [
        ("rate_limit.requests", l => l.RequestsPerMinute, "requests per minute"),
        ("rate_limit.tokens", l => l.TokensPerMinute, "tokens per minute"),
        ("quota.requests_per_day", l => l.RequestsPerDay, "requests per day"),
        ("quota.tokens_per_day", l => l.TokensPerDay, "tokens per day"),
        ("quota.requests_per_month", l => l.RequestsPerMonth, "requests per month"),
        ("quota.tokens_per_month", l => l.TokensPerMonth, "tokens per month"),
    ];

    /// <summary>The service of <paramref name="consumer"/>, or null.</summary>
    public static ServiceConfig? ServiceOf(PolicyDocument document, ConsumerConfig consumer) => document.Services.FirstOrDefault(s => s.Id == consumer.Service);

    /// <summary>The tenant of <paramref name="service"/>, or null.</summary>
    public static TenantConfig? TenantOf(PolicyDocument document, ServiceConfig? service) => service is null ? null : document.Tenants.FirstOrDefault(t => t.Id == service.Tenant);

    /// <summary>
    /// The limits the gateway applies at the consumer level: its category's defaults narrowed by its own, and its token
    /// ceilings by its service's and tenant's where those are tighter (as <see cref="ConsumerEntry.Limits"/>).
    /// </summary>
    public static LimitsConfig EffectiveLimits(PolicyDocument document, ConsumerConfig consumer)
    {
        var service = ServiceOf(document, consumer);
        return (document.Defaults.For(consumer.Category)?.Limits ?? LimitsConfig.Empty).Narrow(consumer.Limits)
            .WithCeilingsOf(service?.Limits ?? LimitsConfig.Empty).WithCeilingsOf(TenantOf(document, service)?.Limits ?? LimitsConfig.Empty);
    }

    /// <summary>The currency of a tenant's prices (its first model's), or null.</summary>
    public static string? CurrencyOf(TenantConfig? tenant) => tenant?.Models.FirstOrDefault()?.Currency;

    /// <summary>The consumer's entitlements as stated: shorthand models, explicit entitlements, or its category's default models.</summary>
    public static IReadOnlyList<StatedEntitlement> Entitlements(PolicyDocument document, ConsumerConfig consumer)
    {
        var result = new List<StatedEntitlement>();
        if (consumer.Models.Count > 0)
        {
            result.Add(new StatedEntitlement(consumer.Models, "models", null, null, null, null));
        }

        result.AddRange(consumer.Entitlements.Select(e => new StatedEntitlement(e.Models, "entitlement", e.ApprovedBy, e.Ticket, e.ValidFrom, e.ValidUntil)));
        if (result.Count == 0 && document.Defaults.For(consumer.Category)?.Models is { } inherited)
        {
            result.Add(new StatedEntitlement(inherited, "category_default", null, null, null, null));
        }

        return result;
    }

    /// <summary>The canonical name of a model name or alias in <paramref name="tenant"/>, or the name itself when unknown.</summary>
    public static string CanonicalModel(TenantConfig? tenant, string model)
        => tenant?.Models.FirstOrDefault(m => m.Name == model || m.Aliases.Contains(model))?.Name ?? model;

    /// <summary>True when a budget, a quota or a rate limit is set at the consumer (effective), service or tenant level.</summary>
    public static bool HasBudget(PolicyDocument document, ConsumerConfig consumer)
    {
        var service = ServiceOf(document, consumer);
        return EffectiveLimits(document, consumer).Budget is not null || service?.Limits.Budget is not null || TenantOf(document, service)?.Limits.Budget is not null;
    }

    /// <summary>True when a quota or a rate limit is set at the consumer (effective), service or tenant level.</summary>
    public static bool HasQuotaOrRateLimit(PolicyDocument document, ConsumerConfig consumer)
    {
        var service = ServiceOf(document, consumer);
        LimitsConfig[] levels = [EffectiveLimits(document, consumer), service?.Limits ?? LimitsConfig.Empty, TenantOf(document, service)?.Limits ?? LimitsConfig.Empty];
        return levels.Any(l => Counters.Any(c => c.Get(l) is not null));
    }

    /// <summary>Every control active for <paramref name="consumer"/> under <paramref name="document"/>, in evaluation order, and those set nowhere.</summary>
    public static ScopeControls ForConsumer(PolicyDocument document, ConsumerConfig consumer)
    {
        var service = ServiceOf(document, consumer);
        var tenant = TenantOf(document, service);
        var currency = CurrencyOf(tenant);
        var scope = "consumer:" + consumer.Id;
        var active = new List<ActiveControl>();
        var notSet = new List<string>();
        KillSwitches(active, tenant, service, consumer);
        if (tenant is not null)
        {
            active.Add(new ActiveControl("tenant_isolation", "tenant:" + tenant.Id,
                $"models resolved among tenant {tenant.Id}'s {tenant.Models.Count} model(s) and {tenant.Providers.Count} provider(s) only; counters and ledger queries per tenant"));
        }

        foreach (var e in Entitlements(document, consumer))
        {
            active.Add(new ActiveControl("entitlement", scope, EntitlementText(e)));
        }

        if (service?.Models is { } choice)
        {
            active.Add(new ActiveControl("entitlement", "service:" + service.Id, $"model choice of the service bounds every entitlement: {string.Join(", ", choice)}"));
        }

        var own = consumer.Limits;
        var effective = EffectiveLimits(document, consumer);
        var category = document.Defaults.For(consumer.Category)?.Limits;

        // The level a ceiling in force comes from: the consumer, its category, or the service or tenant around it.
        string Origin(Func<LimitsConfig, long?> field)
            => field(own) == field(effective) ? "consumer's own"
                : category is not null && field(category) == field(effective) ? $"default of category {PolicyNames.Of(consumer.Category)}"
                : service is not null && field(service.Limits) == field(effective) ? $"service {service.Id}'s"
                : $"tenant {tenant?.Id}'s";
        Ceiling(active, notSet, scope, "token_ceiling.n", effective.MaxN, v => $"n at most {v}", () => Origin(l => l.MaxN));
        Ceiling(active, notSet, scope, "token_ceiling.input", effective.MaxInputTokens, v => $"{Count(v)} input tokens", () => Origin(l => l.MaxInputTokens));
        Ceiling(active, notSet, scope, "token_ceiling.output", effective.MaxOutputTokens,
            v => $"{Count(v)} output tokens ({PolicyNames.Of(effective.OutputCeiling ?? OutputCeilingMode.Clamp)})", () => Origin(l => l.MaxOutputTokens));
        var rules = (tenant?.PromptRules.Select(r => ("tenant:" + tenant.Id, r)) ?? []).Concat(service?.PromptRules.Select(r => ("service:" + service.Id, r)) ?? []).ToList();
        foreach (var (ruleScope, rule) in rules)
        {
            active.Add(new ActiveControl("prompt_restriction", ruleScope, RuleText(rule)));
        }

        if (rules.Count == 0)
        {
            notSet.Add("prompt_restriction");
        }

        (string Scope, LimitsConfig Limits, Func<string, long?, string> Origin)[] levels =
        [
            (scope, effective, (control, value) => Counters.First(c => c.Control == control).Get(own) == value ? "consumer's own" : $"default of category {PolicyNames.Of(consumer.Category)}"),
            ("service:" + consumer.Service, service?.Limits ?? LimitsConfig.Empty, (_, _) => "service"),
            ("tenant:" + (tenant?.Id ?? "?"), tenant?.Limits ?? LimitsConfig.Empty, (_, _) => "tenant"),
        ];
        foreach (var (control, get, unit) in Counters)
        {
            var any = false;
            foreach (var level in levels)
            {
                if (get(level.Limits) is { } value)
                {
                    any = true;
                    var origin = level.Scope == scope ? " (" + level.Origin(control, value) + ")" : "";
                    active.Add(new ActiveControl(control, level.Scope, $"{Count(value)} {unit}{origin}"));
                }
            }

            if (!any)
            {
                notSet.Add(control);
            }
        }

        var budgets = 0;
        foreach (var level in levels)
        {
            if (level.Limits.Budget is { } budget)
            {
                budgets++;
                var origin = level.Scope != scope ? "" : own.Budget is not null && own.Budget == budget ? " (consumer's own)" : $" (default of category {PolicyNames.Of(consumer.Category)})";
                active.Add(new ActiveControl("budget", level.Scope, ReportText.Budget(budget, currency) + origin));
            }
        }

        if (budgets == 0)
        {
            notSet.Add("budget");
        }

        return new ScopeControls(scope, active, notSet);
    }

    /// <summary>The controls of a service (and its tenant) on their own, for a service without consumers.</summary>
    public static ScopeControls ForService(PolicyDocument document, ServiceConfig service)
    {
        var tenant = document.Tenants.FirstOrDefault(t => t.Id == service.Tenant);
        var currency = CurrencyOf(tenant);
        var active = new List<ActiveControl>();
        var notSet = new List<string>();
        KillSwitches(active, tenant, service, null);
        foreach (var (scope, rule) in (tenant?.PromptRules.Select(r => ("tenant:" + tenant.Id, r)) ?? []).Concat(service.PromptRules.Select(r => ("service:" + service.Id, r))))
        {
            active.Add(new ActiveControl("prompt_restriction", scope, RuleText(rule)));
        }

        (string Scope, LimitsConfig Limits)[] levels = [("service:" + service.Id, service.Limits), ("tenant:" + service.Tenant, tenant?.Limits ?? LimitsConfig.Empty)];
        foreach (var (control, get, unit) in Counters)
        {
            var set = levels.Where(l => get(l.Limits) is not null).ToList();
            active.AddRange(set.Select(l => new ActiveControl(control, l.Scope, $"{Count(get(l.Limits)!.Value)} {unit}")));
            if (set.Count == 0)
            {
                notSet.Add(control);
            }
        }

        var budgets = levels.Where(l => l.Limits.Budget is not null).ToList();
        active.AddRange(budgets.Select(l => new ActiveControl("budget", l.Scope, ReportText.Budget(l.Limits.Budget!, currency))));
        if (budgets.Count == 0)
        {
            notSet.Add("budget");
        }

        return new ScopeControls("service:" + service.Id, active, notSet);
    }

    /// <summary>An entitlement in words.</summary>
    public static string EntitlementText(StatedEntitlement e)
    {
        var text = string.Join(", ", e.Models) + e.Source switch
        {
            "models" => " (policy shorthand: no approver recorded)",
            "category_default" => " (inherited from the category's default models: no approver recorded)",
            _ => $" (approved by {e.ApprovedBy ?? "nobody named"}{(e.Ticket is null ? "" : ", ticket " + e.Ticket)})",
        };
        if (e.ValidFrom is not null || e.ValidUntil is not null)
        {
            text += $", valid {(e.ValidFrom is { } f ? "from " + ReportText.Time(f) : "")}{(e.ValidFrom is not null && e.ValidUntil is not null ? " " : "")}{(e.ValidUntil is { } u ? "until " + ReportText.Time(u) : "")}";
        }

        return text;
    }

    private static void KillSwitches(List<ActiveControl> active, TenantConfig? tenant, ServiceConfig? service, ConsumerConfig? consumer)
    {
        if (tenant?.Suspended == true)
        {
            active.Add(new ActiveControl("kill_switch", "tenant:" + tenant.Id, "engaged: every request of the tenant is refused (deny.tenant_suspended)"));
        }

        if (service?.Suspended == true)
        {
            active.Add(new ActiveControl("kill_switch", "service:" + service.Id, "engaged: every request of the service is refused (deny.service_suspended)"));
        }

        if (consumer?.Suspended == true)
        {
            active.Add(new ActiveControl("kill_switch", "consumer:" + consumer.Id, "engaged: every request of the consumer is refused (deny.consumer_suspended)"));
        }
    }

    private static void Ceiling(List<ActiveControl> active, List<string> notSet, string scope, string control, long? value, Func<long, string> text,
        Func<string> origin)
    {
        if (value is { } v)
        {
            active.Add(new ActiveControl(control, scope, $"{text(v)} ({origin()})"));
        }
        else
        {
            notSet.Add(control);
        }
    }

    private static string RuleText(PromptRuleConfig rule)
        => $"rule {rule.Id}: {(rule.Detector is { } d ? "detector " + PolicyNames.Of(d) : "pattern")} -> {PolicyNames.Of(rule.Action)}";

    private static string Count(long value) => value.ToString("N0", CultureInfo.InvariantCulture);
}
