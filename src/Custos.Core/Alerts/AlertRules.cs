using Custos.Policy;

namespace Custos.Alerts;

/// <summary>The anomaly thresholds of one category, defaults filled in.</summary>
public sealed record CategoryRule(decimal AlertAt, decimal? ActAt, AlertAction Action, long ThrottleRequestsPerMinute, long MinRequestsPerMinute);

/// <summary>The detection settings of a policy version, every default filled in (see <c>docs/alerts.md</c>).</summary>
public sealed class AlertRules
{
    private readonly HashSet<string> _disabled;
    private readonly CategoryRule[] _categories = new CategoryRule[4];

    /// <summary>The defaults, as a policy without an <c>alerts</c> section gets them.</summary>
    public static AlertRules Default { get; } = new(null);

    /// <summary>Fills in the defaults of <paramref name="config"/>.</summary>
    public AlertRules(AlertsConfig? config)
    {
        BudgetThresholds = config?.BudgetThresholds is { Count: > 0 } thresholds ? [.. thresholds] : [50, 80, 100];
        EscalateAfter = TimeSpan.FromMinutes(config?.EscalateAfterMinutes ?? 30);
        Security = config?.Security;
        AuthFailuresPerMinute = (int)Math.Min(config?.AuthFailuresPerMinute ?? 20, 100_000);
        DenialsPerMinute = (int)Math.Min(config?.DenialsPerMinute ?? 30, 100_000);
        AgentRunRequestsPerMinute = (int)Math.Min(config?.AgentRunRequestsPerMinute ?? 120, 100_000);
        BaselineWarmupMinutes = config?.BaselineWarmupMinutes ?? 15;
        BaselineWarmupHours = config?.BaselineWarmupHours ?? 24;
        _disabled = new HashSet<string>(config?.Disabled ?? [], StringComparer.Ordinal);
        var categories = config?.Categories;
        _categories[(int)ConsumerCategory.External] = Fill(categories?.External, new CategoryRule(5, 20, AlertAction.Throttle, 60, 20));
        _categories[(int)ConsumerCategory.Internal] = Fill(categories?.Internal, new CategoryRule(5, null, AlertAction.None, 60, 20));
        _categories[(int)ConsumerCategory.Automation] = Fill(categories?.Automation, new CategoryRule(3, null, AlertAction.None, 60, 20));
        _categories[(int)ConsumerCategory.Agent] = Fill(categories?.Agent, new CategoryRule(3, 10, AlertAction.Suspend, 60, 20));
    }

    /// <summary>Per cent thresholds of budgets, ascending.</summary>
    public IReadOnlyList<long> BudgetThresholds { get; }

    /// <summary>How long an alert may stay unacknowledged.</summary>
    public TimeSpan EscalateAfter { get; }

    /// <summary>Security's contact, if the policy names one.</summary>
    public OwnerConfig? Security { get; }

    /// <summary>Failed authentications per source per minute that make a burst.</summary>
    public int AuthFailuresPerMinute { get; }

    /// <summary>Denials per consumer per minute that make a spike.</summary>
    public int DenialsPerMinute { get; }

    /// <summary>Requests per agent run per minute that make a fan-out.</summary>
    public int AgentRunRequestsPerMinute { get; }

    /// <summary>Minutes observed before a consumer's baseline is trusted.</summary>
    public long BaselineWarmupMinutes { get; }

    /// <summary>Hours observed before a consumer's hourly baseline is trusted.</summary>
    public long BaselineWarmupHours { get; }

    /// <summary>True unless the detector is switched off.</summary>
    public bool IsEnabled(string detector) => !_disabled.Contains(detector);

    /// <summary>The anomaly rule of <paramref name="category"/>.</summary>
    public CategoryRule For(ConsumerCategory category) => _categories[(int)category];

    private static CategoryRule Fill(CategoryAlertConfig? config, CategoryRule defaults)
    {
        if (config is null)
        {
            return defaults;
        }

        var action = config.Action ?? defaults.Action;
        return new CategoryRule(
            config.AlertAt ?? defaults.AlertAt,
            action == AlertAction.None ? null : config.ActAt ?? defaults.ActAt ?? 10,
            action,
            config.ThrottleRequestsPerMinute ?? defaults.ThrottleRequestsPerMinute,
            config.MinRequestsPerMinute ?? defaults.MinRequestsPerMinute);
    }
}
