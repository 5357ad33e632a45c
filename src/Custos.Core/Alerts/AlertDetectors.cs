using System.Globalization;
using Custos.Controls;
using Custos.Errors;
using Custos.Ledger;
using Custos.Policy;

namespace Custos.Alerts;

/// <summary>
/// The detectors, fed with every request entry as the ledger stores it: budget thresholds, quota exhaustion, denial
/// spikes, authentication-failure bursts per source, usage far above a consumer's own moving baseline (thresholds and
/// automatic actions per category), first use of a model, agent fan-out, and traffic outside a declared schedule.
/// Time is the entries' own timestamps, so staged traffic with a fake clock behaves exactly like real traffic.
/// </summary>
/// <remarks>Not thread-safe: one caller at a time (the ledger's drain task). Memory is bounded by sweeping idle keys.</remarks>
public sealed class AlertDetectors
{
    private const double BaselineAlpha = 2.0 / (60 + 1); // an exponential moving average over about an hour of minutes
    private const double HourlyAlpha = 2.0 / (24 + 1); // and over about a day of hours
    private static readonly TimeSpan Minute = TimeSpan.FromMinutes(1);
    private readonly Dictionary<string, BurstWindow> _authFailures = new(StringComparer.Ordinal);
    private readonly Dictionary<string, BurstWindow> _denials = new(StringComparer.Ordinal);
    private readonly Dictionary<string, AgentRun> _agentRuns = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Baseline> _baselines = new(StringComparer.Ordinal); // per minute
    private readonly Dictionary<string, Baseline> _hourly = new(StringComparer.Ordinal); // per hour
    private readonly Dictionary<string, HashSet<string>> _modelsUsed = new(StringComparer.Ordinal); // consumer → models
    private readonly Dictionary<string, string> _scheduleFired = new(StringComparer.Ordinal);
    private readonly Dictionary<string, (string Window, decimal Spent)> _budgetSpend = new(StringComparer.Ordinal); // scope → its running spend
    private long _version = -1;
    private AlertRules _rules = AlertRules.Default;
    private Dictionary<string, ScheduleConfig> _schedules = new(StringComparer.Ordinal);
    private Dictionary<string, (BudgetPeriod Period, TimeZoneInfo Zone, string Currency)> _budgetPeriods = new(StringComparer.Ordinal);
    private DateTimeOffset _nextSweep = DateTimeOffset.MinValue;

    /// <summary>
    /// The most client addresses failing authentication, and agent runs, tracked at once. Both are named by callers
    /// (a source address, an <c>X-Custos-Agent-Run</c> header), so a caller could otherwise make the gateway track
    /// without end; past the bound, new ones are not tracked until the sweep frees idle ones (docs/alerts.md).
    /// </summary>
    internal int MaxCallerNamedKeys { get; init; } = 50_000;

    /// <summary>Keys currently tracked (sources, consumers, agent runs): bounded by sweeping idle ones.</summary>
    public int TrackedKeys => _authFailures.Count + _denials.Count + _agentRuns.Count + _baselines.Count;

    /// <summary>Remembers models consumers used before this process started, so their next use is not a "first".</summary>
    public void SeedModelsUsed(IEnumerable<(string Consumer, string Model)> pairs)
    {
        foreach (var (consumer, model) in pairs)
        {
            UsedBefore(consumer, model);
        }
    }

    /// <summary>Feeds one ledger entry; adds what it raises to <paramref name="signals"/>.</summary>
    public void Observe(RequestRecord record, PolicySnapshot snapshot, List<AlertSignal> signals)
    {
        if (snapshot.Version != _version)
        {
            Compile(snapshot);
        }

        var at = record.Timestamp;
        if (at >= _nextSweep)
        {
            Sweep(at);
            _nextSweep = at + TimeSpan.FromMinutes(5);
        }

        if (record.Status == 401)
        {
            ConsumerEntry? failed = null;
            if (record.Consumer is { } id)
            {
                snapshot.Consumers.TryGetValue(id, out failed);
            }

            DetectAuthFailure(record.ClientAddress ?? "unknown", record.Timestamp, record.RequestId, record.Reasons.Count > 0 ? record.Reasons[0] : "unknown",
                failed, record.CredentialId, record.PolicyVersion, signals);
            return;
        }

        if (record.Consumer is null || !snapshot.Consumers.TryGetValue(record.Consumer, out var consumer))
        {
            return;
        }

        if (_rules.IsEnabled(AlertTypes.BudgetThreshold) || _rules.IsEnabled(AlertTypes.QuotaExhausted))
        {
            DetectLimits(record, consumer, signals);
        }

        if (record.Decision != Decision.Allow)
        {
            DetectDenial(record, consumer, signals);
        }
        else if (record.Model is { } model && _rules.IsEnabled(AlertTypes.FirstModelUse) && !UsedBefore(consumer.Id, model))
        {
            signals.Add(Signal(record, consumer, AlertTypes.FirstModelUse, AlertSeverity.Info, $"model.first_use|{consumer.Id}|{model}",
                $"{consumer.Id} used model {model} for the first time.", new() { ["model"] = model }));
        }

        if (_rules.IsEnabled(AlertTypes.UsageAnomaly))
        {
            DetectAnomaly(record, consumer, signals);
        }

        if (record.AgentRun is { } run && _rules.IsEnabled(AlertTypes.AgentFanOut))
        {
            DetectFanOut(record, consumer, run, signals);
        }

        if (_schedules.TryGetValue(consumer.Id, out var schedule) && _rules.IsEnabled(AlertTypes.OutsideSchedule))
        {
            var local = TimeZoneInfo.ConvertTime(at, consumer.Service.Tenant.TimeZone).DateTime;
            var hour = local.ToString("yyyy-MM-dd'T'HH", CultureInfo.InvariantCulture);
            if (!Schedules.IsWithin(schedule, local) && _scheduleFired.GetValueOrDefault(consumer.Id) != hour)
            {
                _scheduleFired[consumer.Id] = hour;
                signals.Add(Signal(record, consumer, AlertTypes.OutsideSchedule, AlertSeverity.Warning, $"schedule.outside|{consumer.Id}|{hour}",
                    $"{consumer.Id} called at {local:ddd HH:mm} ({consumer.Service.Tenant.TimeZone.Id}), outside its schedule.",
                    new()
                    {
                        ["local_time"] = local.ToString("yyyy-MM-dd'T'HH:mm:ss", CultureInfo.InvariantCulture),
                        ["schedule_days"] = schedule.Days.Count == 0 ? "every day" : string.Join(",", schedule.Days),
                        ["schedule_hours"] = schedule.Hours ?? "all day",
                    }));
            }
        }
    }

    /// <summary>True when <paramref name="consumer"/> used <paramref name="model"/> before; remembers it either way.</summary>
    private bool UsedBefore(string consumer, string model)
    {
        if (!_modelsUsed.TryGetValue(consumer, out var models))
        {
            models = new HashSet<string>(StringComparer.Ordinal);
            _modelsUsed[consumer] = models;
        }

        return !models.Add(model);
    }

    private void Compile(PolicySnapshot snapshot)
    {
        _version = snapshot.Version;
        _rules = new AlertRules(snapshot.Document.Alerts);
        _schedules = new Dictionary<string, ScheduleConfig>(StringComparer.Ordinal);
        foreach (var consumer in snapshot.Document.Consumers)
        {
            if (consumer.Schedule is { } schedule)
            {
                _schedules[consumer.Id] = schedule;
            }
        }

        _budgetPeriods = new(StringComparer.Ordinal);
        foreach (var tenant in snapshot.Tenants)
        {
            Remember(tenant.Scope, tenant.Limits, tenant);
        }

        foreach (var service in snapshot.Services.Values)
        {
            Remember(service.Scope, service.Limits, service.Tenant);
        }

        foreach (var consumer in snapshot.Consumers.Values)
        {
            Remember(consumer.Scope, consumer.Limits, consumer.Service.Tenant);
        }

        foreach (var scope in _budgetSpend.Keys)
        {
            if (!_budgetPeriods.ContainsKey(scope))
            {
                _budgetSpend.Remove(scope); // its budget is gone from the policy
            }
        }

        void Remember(string scope, LimitsConfig limits, TenantEntry tenant)
        {
            if (limits.Budget is { } budget)
            {
                // A tenant's models share one currency (the policy validator sees to it): its budgets are in it.
                var currency = tenant.CanonicalModels.Count > 0 ? tenant.CanonicalModels[0].Currency : "USD";
                _budgetPeriods[scope] = (budget.Period, tenant.TimeZone, currency);
            }
        }
    }

    /// <summary>The alerts rules in force for the last entry seen.</summary>
    public AlertRules Rules => _rules;

    private void DetectLimits(RequestRecord record, ConsumerEntry consumer, List<AlertSignal> signals)
    {
        // Index loops: this runs for every request, and foreach over the interfaces boxes an enumerator each time.
        var controls = record.Controls;
        for (var c = 0; c < controls.Count; c++)
        {
            var control = controls[c];
            if (control.Control == "budget" && control.Limit is > 0 && control.Scope is { } scope && _rules.IsEnabled(AlertTypes.BudgetThreshold))
            {
                var limit = control.Limit.Value;
                var window = WindowKey(scope, record.Timestamp);
                // Refused because the budget cannot cover the request: exhausted. Other refusals (larger than the whole
                // budget, counters unreachable) are the request's or the gateway's matter, not the budget's.
                var denied = control.Decision == ControlDecisions.Deny && record.Reasons.Count > 0 && record.Reasons[0] == Reasons.BudgetExhausted.Code;
                if (control.Decision == ControlDecisions.Deny && !denied)
                {
                    continue;
                }

                var before = SpentBefore(scope, window, control.Used ?? 0);
                var after = before + (record.Cost ?? 0);
                Spent(scope, window, after);
                var currency = record.Currency ?? CurrencyOf(scope);
                var thresholds = _rules.BudgetThresholds;
                for (var t = 0; t < (denied ? 1 : thresholds.Count); t++)
                {
                    var percent = denied ? Math.Max(100, thresholds[^1]) : thresholds[t];

                    // after >= limit × percent / 100, and before below it, compared in hundredths: no decimal division.
                    var thresholdTimes100 = limit * percent;
                    if (!denied && !(after * 100 >= thresholdTimes100 && before * 100 < thresholdTimes100))
                    {
                        continue;
                    }

                    var exhausted = percent >= 100;
                    var evidence = new Dictionary<string, string>
                    {
                        ["scope"] = scope,
                        ["threshold_percent"] = percent.ToString(CultureInfo.InvariantCulture),
                        ["limit"] = Money(limit),
                        ["spent_before"] = Money(before),
                        ["spent_after"] = Money(after),
                        ["currency"] = currency,
                        ["window"] = window,
                    };
                    if (denied)
                    {
                        evidence["reserved"] = Money(control.Reserved ?? 0);
                        evidence["requested"] = Money(control.Requested ?? 0);
                    }

                    // The amount is part of the fingerprint: a budget raised and exhausted again is a new alert, not an
                    // occurrence of the one its old amount raised.
                    signals.Add(Signal(record, consumer, exhausted ? AlertTypes.BudgetExhausted : AlertTypes.BudgetThreshold,
                        exhausted ? AlertSeverity.Critical : AlertSeverity.Warning, $"budget|{scope}|{percent}|{window}|{Money(limit)}",
                        denied
                            ? $"The budget of {scope} ({Money(limit)} {currency}) is exhausted: {Money(before)} spent{(control.Reserved is > 0 ? $" and {Money(control.Reserved.Value)} reserved by requests in flight" : "")}, a request needing up to {Money(control.Requested ?? 0)} was refused."
                            : $"The budget of {scope} crossed {percent}%: {Money(after)} of {Money(limit)} {currency} spent.",
                        evidence) with
                    { Subject = scope });
                }
            }
            else if (control.Control.StartsWith("quota.", StringComparison.Ordinal) && control.Decision == ControlDecisions.Deny
                && control.Scope is { } quotaScope && _rules.IsEnabled(AlertTypes.QuotaExhausted)
                // Refused because the quota is used up, as for a budget: a request larger than the whole quota
                // (deny.exceeds_limit), or one refused while the counters are unreachable (unavailable.counters), used none of it.
                && record.Reasons.Count > 0 && record.Reasons[0] == Reasons.QuotaExhausted.Code)
            {
                var local = TimeZoneInfo.ConvertTime(record.Timestamp, consumer.Service.Tenant.TimeZone);
                var window = control.Control.EndsWith("_month", StringComparison.Ordinal)
                    ? local.ToString("yyyy-MM", CultureInfo.InvariantCulture)
                    : local.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture);
                signals.Add(Signal(record, consumer, AlertTypes.QuotaExhausted, AlertSeverity.Warning, $"quota|{quotaScope}|{control.Control}|{window}",
                    $"Quota {control.Control} of {quotaScope} ({control.Limit}) is used up; requests are refused until it renews.",
                    new() { ["scope"] = quotaScope, ["quota"] = control.Control, ["limit"] = Number(control.Limit), ["used"] = Number(control.Used), ["window"] = window })
                    with
                { Subject = quotaScope });
            }
        }
    }

    /// <summary>
    /// What <paramref name="scope"/> had spent in <paramref name="window"/> before this entry: the running spend of the
    /// entries seen so far, or the counter's reading at admission when that is more (this node's first entry of the
    /// window, or spend this node's ledger did not see: other nodes, a restart). The reading alone would not do: requests
    /// admitted together all read the same spend, so none of them crossed a threshold on its own.
    /// </summary>
    private decimal SpentBefore(string scope, string window, decimal reading)
        => _budgetSpend.TryGetValue(scope, out var running) && running.Window == window ? Math.Max(running.Spent, reading) : reading;

    /// <summary>Advances the running spend of <paramref name="scope"/>; an entry of a window older than the one tracked changes nothing.</summary>
    private void Spent(string scope, string window, decimal spent)
    {
        if (_budgetSpend.TryGetValue(scope, out var running) && running.Window != window && running.Window.Length == window.Length
            && string.CompareOrdinal(running.Window, window) > 0)
        {
            return; // an entry finished late, after the window turned: the new window's spend does not include it
        }

        _budgetSpend[scope] = (window, spent);
    }

    private string CurrencyOf(string scope) => _budgetPeriods.TryGetValue(scope, out var budget) ? budget.Currency : "USD";

    private string WindowKey(string scope, DateTimeOffset at)
    {
        var (period, zone, _) = _budgetPeriods.GetValueOrDefault(scope, (BudgetPeriod.Month, TimeZoneInfo.Utc, "USD"));
        var local = TimeZoneInfo.ConvertTime(at, zone);
        return local.ToString(period == BudgetPeriod.Day ? "yyyy-MM-dd" : "yyyy-MM", CultureInfo.InvariantCulture);
    }

    /// <summary>
    /// Feeds one refused sign-in to the admin API (<see cref="AdminSignIn"/>): it counts toward its source's
    /// <c>auth.failures</c> with the data plane's refused credentials.
    /// </summary>
    public void ObserveSignInDenied(AdminRecord record, PolicySnapshot snapshot, List<AlertSignal> signals)
    {
        if (snapshot.Version != _version)
        {
            Compile(snapshot);
        }

        if (record.Timestamp >= _nextSweep)
        {
            Sweep(record.Timestamp);
            _nextSweep = record.Timestamp + TimeSpan.FromMinutes(5);
        }

        DetectAuthFailure(AdminSignIn.SourceOf(record), record.Timestamp, record.RequestId ?? "", record.After ?? "admin.unauthenticated", null, null,
            record.PolicyVersion, signals);
    }

    private void DetectAuthFailure(string source, DateTimeOffset at, string requestId, string reason, ConsumerEntry? consumer, string? credentialId,
        long policyVersion, List<AlertSignal> signals)
    {
        if (!_rules.IsEnabled(AlertTypes.AuthFailures))
        {
            return;
        }

        if (!_authFailures.TryGetValue(source, out var window))
        {
            if (_authFailures.Count >= MaxCallerNamedKeys)
            {
                return;
            }

            window = new BurstWindow(_rules.AuthFailuresPerMinute);
            _authFailures[source] = window;
        }

        if (!window.Add(at, requestId, reason))
        {
            return;
        }

        signals.Add(new AlertSignal
        {
            Type = AlertTypes.AuthFailures,
            Severity = AlertSeverity.Critical,
            // One alert per source and, when the refused key was a known consumer's, per tenant and consumer: a burst with
            // another tenant's key from the same address is that tenant's alert, told to its owners, not an occurrence of the first.
            Fingerprint = consumer is null ? "auth.failures|" + source : $"auth.failures|{source}|{consumer.Service.Tenant.Id}|{consumer.Id}",
            Subject = "source:" + source,
            Summary = $"{window.Count} failed authentications from {source} within a minute (possible credential stuffing).",
            At = at,
            Tenant = consumer?.Service.Tenant.Id,
            Service = consumer?.Service.Id,
            Consumer = consumer?.Id,
            Category = consumer?.Category,
            CredentialId = credentialId,
            RequestId = requestId,
            PolicyVersion = policyVersion,
            Rule = $"{_rules.AuthFailuresPerMinute} failed authentications per source per minute",
            Evidence = new Dictionary<string, string>
            {
                ["source"] = source,
                ["failures"] = window.Count.ToString(CultureInfo.InvariantCulture),
                ["threshold_per_minute"] = _rules.AuthFailuresPerMinute.ToString(CultureInfo.InvariantCulture),
                ["reasons"] = window.Reasons,
                ["recent_requests"] = window.RecentRequests,
            },
        });
    }

    private void DetectDenial(RequestRecord record, ConsumerEntry consumer, List<AlertSignal> signals)
    {
        if (!_rules.IsEnabled(AlertTypes.DenialSpike) || record.Reasons.Count == 0)
        {
            return;
        }

        var reason = record.Reasons[0];
        if (reason is "deny.budget_exhausted" or "deny.quota_exhausted" || reason.StartsWith("unavailable.", StringComparison.Ordinal))
        {
            return; // their own alerts, or the gateway's load rather than the consumer's behaviour
        }

        if (!_denials.TryGetValue(consumer.Id, out var window))
        {
            window = new BurstWindow(_rules.DenialsPerMinute);
            _denials[consumer.Id] = window;
        }

        if (!window.Add(record.Timestamp, record.RequestId, reason))
        {
            return;
        }

        var entitlement = window.CountOf(r => r is "deny.model_not_entitled" or "deny.entitlement_expired" or "deny.entitlement_not_yet_valid" or "deny.model_not_found");
        var type = entitlement * 2 > window.Count ? AlertTypes.EntitlementDenials : AlertTypes.DenialSpike;
        signals.Add(Signal(record, consumer, type, AlertSeverity.Warning, $"{type}|{consumer.Id}",
            type == AlertTypes.EntitlementDenials
                ? $"{window.Count} requests of {consumer.Id} refused within a minute, mostly for entitlement: check what it is entitled to."
                : $"{window.Count} requests of {consumer.Id} refused or throttled within a minute.",
            new()
            {
                ["denials"] = window.Count.ToString(CultureInfo.InvariantCulture),
                ["threshold_per_minute"] = _rules.DenialsPerMinute.ToString(CultureInfo.InvariantCulture),
                ["reasons"] = window.Reasons,
                ["recent_requests"] = window.RecentRequests,
            }) with
        { Rule = $"{_rules.DenialsPerMinute} refusals per consumer per minute" });
    }

    private void DetectAnomaly(RequestRecord record, ConsumerEntry consumer, List<AlertSignal> signals)
    {
        var minute = record.Timestamp.ToUnixTimeSeconds() / 60;
        if (!_baselines.TryGetValue(consumer.Id, out var baseline))
        {
            baseline = new Baseline(BaselineAlpha) { Bucket = minute, FirstBucket = minute };
            _baselines[consumer.Id] = baseline;
        }

        baseline.Advance(minute);
        baseline.Requests++;
        baseline.Tokens += (double)(record.InputTokens ?? 0) + (record.OutputTokens ?? 0); // as doubles: no sum of counts wraps
        baseline.Spend += (double)(record.Cost ?? 0);
        baseline.Remember(record.RequestId);

        var rule = _rules.For(consumer.Category);
        DetectHourlyAnomaly(record, consumer, rule, signals);
        if (minute - baseline.FirstBucket < _rules.BaselineWarmupMinutes || baseline.Requests < rule.MinRequestsPerMinute)
        {
            return;
        }

        var (metric, observed, average, floor, ratio) = Judge(baseline);
        var level = rule.ActAt is { } actAt && ratio >= (double)actAt ? 2 : ratio >= (double)rule.AlertAt ? 1 : 0;
        if (level <= baseline.FiredLevel)
        {
            return;
        }

        baseline.FiredLevel = level;
        var acting = level == 2;
        var category = PolicyNames.Of(consumer.Category);
        var action = acting ? rule.Action : AlertAction.None;
        var ruleText = acting
            ? $"{category}: usage at {rule.ActAt}× its baseline {ActionText(rule)}"
            : $"{category}: usage at {rule.AlertAt}× its baseline raises an alert";
        signals.Add(Signal(record, consumer, AlertTypes.UsageAnomaly, acting ? AlertSeverity.Critical : AlertSeverity.Warning,
            $"usage.anomaly|{consumer.Id}|{(acting ? "act" : "alert")}",
            $"{consumer.Id} ({category}) is at {ratio:0.#}× its baseline {metric} per minute ({Versus(observed, average, floor)}).",
            new()
            {
                ["metric"] = metric,
                ["observed_per_minute"] = Format(observed),
                ["baseline_per_minute"] = Format(average),
                ["baseline_floor"] = Format(floor),
                ["ratio"] = ratio.ToString("0.##", CultureInfo.InvariantCulture),
                ["alert_at"] = rule.AlertAt.ToString(CultureInfo.InvariantCulture),
                ["act_at"] = rule.ActAt?.ToString(CultureInfo.InvariantCulture) ?? "none",
                ["minutes_observed"] = (minute - baseline.FirstBucket).ToString(CultureInfo.InvariantCulture),
                ["recent_requests"] = baseline.RecentRequests,
            }) with
        {
            Rule = ruleText,
            Action = action,
            ThrottleRequestsPerMinute = action == AlertAction.Throttle ? rule.ThrottleRequestsPerMinute : null,
        });
    }

    /// <summary>
    /// The largest ratio of the three measures to their baselines. A baseline below its floor (0.1 requests, 1 token,
    /// 0.000001 of spend) is judged as the floor, so that a near-zero baseline does not divide by nothing; the summary and
    /// the evidence then name the floor (<see cref="Versus"/>), or the ratio would not follow from the figures shown.
    /// </summary>
    private static (string Metric, double Observed, double Average, double Floor, double Ratio) Judge(Baseline baseline) => Max(
        ("requests", baseline.Requests, baseline.AverageRequests, 0.1),
        ("tokens", baseline.Tokens, baseline.AverageTokens, 1),
        ("spend", baseline.Spend, baseline.AverageSpend, 1e-6));

    /// <summary>"observed vs baseline", and the floor when the baseline was below it and the ratio was measured against it.</summary>
    private static string Versus(double observed, double average, double floor)
        => $"{Format(observed)} vs {Format(average)}" + (average < floor ? $", a baseline below {Format(floor)} judged as {Format(floor)}" : "");

    /// <summary>
    /// The same judgement per hour, for consumers too quiet for minutes to tell (a job calling a few times an hour): an
    /// alert only, never an action, once an hour of history per <c>baseline_warmup_hours</c> is there and the hour has
    /// at least five times the category's minimum per minute.
    /// </summary>
    private void DetectHourlyAnomaly(RequestRecord record, ConsumerEntry consumer, CategoryRule rule, List<AlertSignal> signals)
    {
        var hour = record.Timestamp.ToUnixTimeSeconds() / 3600;
        if (!_hourly.TryGetValue(consumer.Id, out var baseline))
        {
            baseline = new Baseline(HourlyAlpha) { Bucket = hour, FirstBucket = hour };
            _hourly[consumer.Id] = baseline;
        }

        baseline.Advance(hour);
        baseline.Requests++;
        baseline.Tokens += (double)(record.InputTokens ?? 0) + (record.OutputTokens ?? 0); // as doubles: no sum of counts wraps
        baseline.Spend += (double)(record.Cost ?? 0);
        baseline.Remember(record.RequestId);
        if (hour - baseline.FirstBucket < _rules.BaselineWarmupHours || baseline.Requests < rule.MinRequestsPerMinute * 5 || baseline.FiredLevel > 0)
        {
            return;
        }

        var (metric, observed, average, floor, ratio) = Judge(baseline);
        if (ratio < (double)rule.AlertAt)
        {
            return;
        }

        baseline.FiredLevel = 1;
        var category = PolicyNames.Of(consumer.Category);
        signals.Add(Signal(record, consumer, AlertTypes.UsageAnomaly, AlertSeverity.Warning, $"usage.anomaly|{consumer.Id}|hour",
            $"{consumer.Id} ({category}) is at {ratio:0.#}× its baseline {metric} per hour ({Versus(observed, average, floor)}).",
            new()
            {
                ["metric"] = metric,
                ["observed_per_hour"] = Format(observed),
                ["baseline_per_hour"] = Format(average),
                ["baseline_floor"] = Format(floor),
                ["ratio"] = ratio.ToString("0.##", CultureInfo.InvariantCulture),
                ["alert_at"] = rule.AlertAt.ToString(CultureInfo.InvariantCulture),
                ["hours_observed"] = (hour - baseline.FirstBucket).ToString(CultureInfo.InvariantCulture),
                ["recent_requests"] = baseline.RecentRequests,
            }) with
        { Rule = $"{category}: usage at {rule.AlertAt}× its hourly baseline raises an alert" });
    }

    private static string ActionText(CategoryRule rule) => rule.Action switch
    {
        AlertAction.Suspend => "suspends the credential",
        AlertAction.Throttle => $"throttles the consumer to {rule.ThrottleRequestsPerMinute} requests per minute",
        _ => "raises an alert",
    };

    private static (string, double, double, double, double) Max(params ReadOnlySpan<(string Metric, double Observed, double Average, double Floor)> candidates)
    {
        (string, double, double, double, double) best = default;
        foreach (var (metric, observed, average, floor) in candidates)
        {
            var ratio = observed / Math.Max(average, floor);
            if (best.Item1 is null || ratio > best.Item5 * 1.0001) // on a tie, the first (requests) names it
            {
                best = (metric, observed, average, floor, ratio);
            }
        }

        return best;
    }

    private void DetectFanOut(RequestRecord record, ConsumerEntry consumer, string run, List<AlertSignal> signals)
    {
        var key = consumer.Id + "|" + run;
        if (!_agentRuns.TryGetValue(key, out var state))
        {
            if (_agentRuns.Count >= MaxCallerNamedKeys)
            {
                return;
            }

            state = new AgentRun(_rules.AgentRunRequestsPerMinute);
            _agentRuns[key] = state;
        }

        var burst = state.Window.Add(record.Timestamp, record.RequestId, "request");
        var growing = state.Grow(record.Timestamp);
        if (!burst && !growing)
        {
            return;
        }

        signals.Add(Signal(record, consumer, AlertTypes.AgentFanOut, AlertSeverity.Warning, $"agent.fanout|{consumer.Id}|{run}",
            burst
                ? $"Agent run {run} of {consumer.Id} made {state.Window.Count} requests within a minute."
                : $"Agent run {run} of {consumer.Id} is growing faster than linearly: {state.Buckets} requests per 10 s.",
            new()
            {
                ["agent_run"] = run,
                ["requests_last_minute"] = state.Window.Count.ToString(CultureInfo.InvariantCulture),
                ["threshold_per_minute"] = _rules.AgentRunRequestsPerMinute.ToString(CultureInfo.InvariantCulture),
                ["requests_per_10s"] = state.Buckets,
                ["recent_requests"] = state.Window.RecentRequests,
            }) with
        { Subject = "agent_run:" + run, Rule = burst ? $"{_rules.AgentRunRequestsPerMinute} requests per agent run per minute" : "requests per 10 s doubling twice in a row (to 8 or more)" });
    }

    private static AlertSignal Signal(RequestRecord record, ConsumerEntry consumer, string type, AlertSeverity severity, string fingerprint, string summary,
        Dictionary<string, string> evidence) => new()
        {
            Type = type,
            Severity = severity,
            Fingerprint = fingerprint,
            Subject = consumer.Scope,
            Summary = summary,
            At = record.Timestamp,
            Tenant = consumer.Service.Tenant.Id,
            Service = consumer.Service.Id,
            Consumer = consumer.Id,
            Category = consumer.Category,
            CredentialId = record.CredentialId,
            RequestId = record.RequestId,
            PolicyVersion = record.PolicyVersion,
            Evidence = evidence,
        };

    private void Sweep(DateTimeOffset now)
    {
        Remove(_authFailures, w => now - w.Last > TimeSpan.FromMinutes(2));
        Remove(_denials, w => now - w.Last > TimeSpan.FromMinutes(2));
        Remove(_agentRuns, r => now - r.Window.Last > TimeSpan.FromMinutes(10));
        var minute = now.ToUnixTimeSeconds() / 60;
        Remove(_baselines, b => minute - b.Bucket > 24 * 60); // a day idle: start again
        Remove(_hourly, b => minute / 60 - b.Bucket > 7 * 24); // a week idle

        static void Remove<T>(Dictionary<string, T> map, Func<T, bool> idle)
        {
            foreach (var (key, value) in map)
            {
                if (idle(value))
                {
                    map.Remove(key);
                }
            }
        }
    }

    private static string Money(decimal value) => value.ToString("0.00####", CultureInfo.InvariantCulture);

    private static string Number(decimal? value) => value?.ToString("0.##", CultureInfo.InvariantCulture) ?? "";

    /// <summary>A figure for people: whole from 100, three decimals below, and as many as it takes below 0.001 (a spend baseline of 0.000001 read as 0).</summary>
    private static string Format(double value)
        => value.ToString(value >= 100 ? "0" : value >= 0.001 || value == 0 ? "0.###" : "0.##########", CultureInfo.InvariantCulture);

    /// <summary>The last <c>threshold</c> events of one key; a burst is <c>threshold</c> of them within a minute.</summary>
    private sealed class BurstWindow(int threshold)
    {
        // Grown as events come, not sized to the threshold up front: most keys (one agent run, one source) see a few events.
        private readonly Queue<(DateTimeOffset At, string RequestId, string Reason)> _events = new();
        private DateTimeOffset _quietUntil = DateTimeOffset.MinValue;

        public DateTimeOffset Last { get; private set; }

        public int Count => _events.Count;

        /// <summary>Adds an event; true when it completes a burst (at most once a minute per key).</summary>
        public bool Add(DateTimeOffset at, string requestId, string reason)
        {
            Last = at;
            _events.Enqueue((at, requestId, reason));
            while (_events.Count > threshold || (_events.Count > 0 && at - _events.Peek().At > Minute))
            {
                _events.Dequeue();
            }

            if (_events.Count < threshold || at < _quietUntil)
            {
                return false;
            }

            _quietUntil = at + Minute;
            return true;
        }

        public int CountOf(Func<string, bool> match) => _events.Count(e => match(e.Reason));

        public string Reasons => string.Join(", ", _events.GroupBy(e => e.Reason).OrderByDescending(g => g.Count()).Select(g => $"{g.Key} ×{g.Count()}"));

        public string RecentRequests => string.Join(",", _events.Reverse().Take(5).Select(e => e.RequestId));
    }

    /// <summary>A consumer's usage this minute (or hour) and its moving averages per minute (or hour).</summary>
    private sealed class Baseline(double alpha)
    {
        private readonly string[] _recent = new string[5];
        private int _next;
        private long _folded;

        public long Bucket;
        public long FirstBucket;
        public double Requests;
        public double Tokens;
        public double Spend;
        public double AverageRequests;
        public double AverageTokens;
        public double AverageSpend;
        public int FiredLevel;

        /// <summary>
        /// Folds the finished minute (and any idle minutes after it) into the averages. The first minutes are averaged
        /// plainly (weight 1/n), so a young baseline is not biased towards zero; after that it moves with about an hour's memory.
        /// </summary>
        public void Advance(long bucket)
        {
            if (bucket <= Bucket)
            {
                return;
            }

            Fold(Requests, Tokens, Spend);
            var idle = Math.Min(bucket - Bucket - 1, 24 * 60);
            for (var i = 0; i < idle; i++)
            {
                Fold(0, 0, 0);
            }

            Bucket = bucket;
            Requests = Tokens = Spend = 0;
            FiredLevel = 0;
        }

        private void Fold(double requests, double tokens, double spend)
        {
            var weight = Math.Max(alpha, 1.0 / ++_folded);
            AverageRequests += weight * (requests - AverageRequests);
            AverageTokens += weight * (tokens - AverageTokens);
            AverageSpend += weight * (spend - AverageSpend);
        }

        public void Remember(string requestId)
        {
            _recent[_next] = requestId;
            _next = (_next + 1) % _recent.Length;
        }

        public string RecentRequests => string.Join(",", _recent.Where(r => r is not null));
    }

    /// <summary>An agent run: requests in the last minute, and per 10-second bucket to see growth.</summary>
    private sealed class AgentRun(int threshold)
    {
        private readonly long[] _buckets = new long[3]; // two before, and the current one
        private long _bucket = long.MinValue;
        private bool _grewAlready;

        public BurstWindow Window { get; } = new(threshold);

        public string Buckets => string.Join(" → ", _buckets);

        /// <summary>Counts a request; true once per run when each 10 s has at least doubled twice in a row (to 8 or more).</summary>
        public bool Grow(DateTimeOffset at)
        {
            var bucket = at.ToUnixTimeSeconds() / 10;
            if (bucket != _bucket)
            {
                var shift = _bucket == long.MinValue ? 3 : Math.Min(bucket - _bucket, 3);
                for (var i = 0; i < shift; i++)
                {
                    _buckets[0] = _buckets[1];
                    _buckets[1] = _buckets[2];
                    _buckets[2] = 0;
                }

                _bucket = bucket;
            }

            _buckets[2]++;
            if (_grewAlready || _buckets[0] < 2 || _buckets[1] < 2 * _buckets[0] || _buckets[2] < 2 * _buckets[1] || _buckets[2] < 8)
            {
                return false;
            }

            _grewAlready = true;
            return true;
        }
    }
}
