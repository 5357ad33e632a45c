using Custos.Alerts;
using Custos.Controls;
using Custos.Errors;
using Custos.Ledger;
using Custos.Policy;

namespace Custos.Core.Tests;

/// <summary>Each detector fires on staged traffic and stays silent on normal traffic; time is the entries' own clock.</summary>
public sealed class AlertDetectorTests
{
    private static readonly DateTimeOffset Start = new(2026, 11, 30, 9, 0, 0, TimeSpan.Zero); // a Monday

    private readonly AlertDetectors _detectors = new();
    private readonly List<AlertSignal> _signals = [];
    private int _sequence;

    private static PolicySnapshot Compile(string alerts = "", string consumerExtra = "")
    {
        var yaml = $$"""
            tenants:
              - id: acme
                time_zone: Europe/Paris
                providers: [{ id: p, type: openai, base_url: http://127.0.0.1:1/v1 }]
                models: [{ name: small, provider: p }, { name: large, provider: p }]
            services:
              - id: svc
                tenant: acme
            consumers:
              - { id: web, service: svc, category: external, models: [small, large] }
              - { id: team, service: svc, category: internal, models: [small, large] }
              - { id: batch, service: svc, category: automation, models: [small] }
              - id: bot
                service: svc
                category: agent
                models: [small]
            {{consumerExtra}}
            {{alerts}}
            """;
        var result = PolicyYaml.Read(yaml);
        Assert.True(result.IsValid, string.Join("\n", result.Diagnostics.Select(d => d.Format("test"))));
        var document = result.Document!;
        return PolicySnapshot.Compile(new PolicyVersion(1, PolicyVersion.HashOf(document), "t", "t", Start, document), _ => null);
    }

    private RequestRecord Record(DateTimeOffset at, string? consumer = "team", ReasonCode? refused = null, string model = "small", long tokens = 100,
        decimal cost = 0.01m, string? agentRun = null, string address = "10.0.0.1", params ControlResult[] controls)
    {
        var record = new RequestRecord
        {
            RequestId = $"req-{++_sequence}",
            NodeId = "n",
            Method = "POST",
            Endpoint = "/v1/chat/completions",
            Timestamp = at,
            Consumer = consumer,
            Service = consumer is null ? null : "svc",
            Tenant = consumer is null ? null : "acme",
            CredentialId = consumer is null ? null : "cred-" + consumer,
            Model = model,
            ClientAddress = address,
            AgentRun = agentRun,
            PolicyVersion = 1,
            Status = 200,
            InputTokens = tokens / 2,
            OutputTokens = tokens / 2,
            Cost = cost,
            Currency = "USD",
            Controls = controls,
        };
        if (refused is not null)
        {
            record.Fail(refused, Outcome.Denied);
            record.Status = refused.Status;
            record.Cost = null;
            record.InputTokens = record.OutputTokens = null;
        }

        return record;
    }

    private List<AlertSignal> Feed(PolicySnapshot snapshot, IEnumerable<RequestRecord> records)
    {
        foreach (var record in records)
        {
            _detectors.Observe(record, snapshot, _signals);
        }

        return _signals;
    }

    /// <summary>A steady <paramref name="perMinute"/> requests a minute for <paramref name="minutes"/> minutes from <paramref name="from"/>.</summary>
    private IEnumerable<RequestRecord> Steady(DateTimeOffset from, int minutes, int perMinute, string consumer, string? agentRun = null)
    {
        for (var m = 0; m < minutes; m++)
        {
            for (var i = 0; i < perMinute; i++)
            {
                yield return Record(from.AddMinutes(m).AddSeconds(i * 60.0 / perMinute), consumer, agentRun: agentRun);
            }
        }
    }

    private static ControlResult Budget(decimal used, decimal limit = 10m, string decision = ControlDecisions.Pass)
        => new("budget", "consumer:team", decision) { Limit = limit, Used = used, Reserved = 0, Requested = 0.5m };

    [Fact]
    public void BudgetThresholds_FireOncePerThresholdAndWindow()
    {
        var snapshot = Compile("alerts: { disabled: [model.first_use] }");
        var spent = 0m;
        var records = new List<RequestRecord>();
        for (var i = 0; i < 12; i++)
        {
            records.Add(Record(Start.AddMinutes(i), cost: 1m, controls: Budget(spent)));
            spent += 1m;
        }

        var signals = Feed(snapshot, records);

        Assert.Collection(signals.Where(s => s.Type is AlertTypes.BudgetThreshold or AlertTypes.BudgetExhausted),
            s => Assert.Equal(("50", "5.00", "4.00"), (s.Evidence["threshold_percent"], s.Evidence["spent_after"], s.Evidence["spent_before"])),
            s => Assert.Equal(("80", AlertSeverity.Warning), (s.Evidence["threshold_percent"], s.Severity)),
            s => Assert.Equal((AlertTypes.BudgetExhausted, "100", AlertSeverity.Critical), (s.Type, s.Evidence["threshold_percent"], s.Severity)));
        Assert.All(signals, s => Assert.Equal("consumer:team", s.Subject));
        Assert.Equal(["budget|consumer:team|50|2026-11|10.00", "budget|consumer:team|80|2026-11|10.00", "budget|consumer:team|100|2026-11|10.00"],
            signals.Select(s => s.Fingerprint));
    }

    [Fact]
    public void BudgetThresholds_CrossedByRequestsAdmittedTogether_FireOnceEach()
    {
        // Four requests admitted at once all read 0 spent; together they spend 8 of 10. Each entry alone went from 0 to 2,
        // so no threshold was crossed, and the next entry, admitted at 8, started above both.
        var snapshot = Compile("alerts: { disabled: [model.first_use] }");
        var records = Enumerable.Range(0, 4).Select(i => Record(Start.AddSeconds(i), cost: 2m, controls: Budget(0m))).ToList();
        records.Add(Record(Start.AddMinutes(1), cost: 1m, controls: Budget(8m)));
        records.Add(Record(Start.AddMinutes(2), cost: 0.5m, controls: Budget(8m))); // admitted before the last one settled

        var signals = Feed(snapshot, records);

        Assert.Collection(signals,
            s => Assert.Equal(("50", "4.00", "6.00", "req-3"), (s.Evidence["threshold_percent"], s.Evidence["spent_before"], s.Evidence["spent_after"], s.RequestId)),
            s => Assert.Equal(("80", "6.00", "8.00", "req-4"), (s.Evidence["threshold_percent"], s.Evidence["spent_before"], s.Evidence["spent_after"], s.RequestId)));

        // The counter's reading wins when it is ahead (spend this detector did not see), and a new window starts from its reading.
        Feed(snapshot, [Record(Start.AddMinutes(3), cost: 0.1m, controls: Budget(9.95m))]);
        Assert.Equal(AlertTypes.BudgetExhausted, _signals[^1].Type);
        Feed(snapshot, [Record(Start.AddMonths(1), cost: 1m, controls: Budget(0m))]);
        Assert.Equal(3, _signals.Count);
    }

    [Fact]
    public void BudgetRefusal_IsExhaustion_AndSpendUnderThresholds_IsSilent()
    {
        var snapshot = Compile("alerts: { disabled: [model.first_use] }");

        Feed(snapshot, Enumerable.Range(0, 10).Select(i => Record(Start.AddMinutes(i), cost: 0.1m, controls: Budget(0.1m * i))));
        Assert.Empty(_signals);

        Feed(snapshot, [Record(Start.AddHours(1), refused: Reasons.BudgetExhausted, controls: Budget(9.9m, decision: ControlDecisions.Deny))]);
        var signal = Assert.Single(_signals);
        Assert.Equal(AlertTypes.BudgetExhausted, signal.Type);
        Assert.Contains("exhausted", signal.Summary, StringComparison.Ordinal);
    }

    [Fact]
    public void RefusalLargerThanTheWholeBudget_IsNoExhaustion_AndARealOneReportsRealFigures()
    {
        var snapshot = Compile("alerts: { disabled: [model.first_use, denials.spike] }");
        Feed(snapshot, [Record(Start, cost: 1m, controls: Budget(0m))]);

        // One request whose worst case is more than the whole budget: refused as such, the budget is not exhausted.
        Feed(snapshot, [Record(Start.AddMinutes(1), refused: Reasons.ExceedsLimit, controls: Budget(1m, decision: ControlDecisions.Deny) with { Requested = 10_000m })]);
        Feed(snapshot, [Record(Start.AddMinutes(2), refused: Reasons.CountersUnavailable, controls: Budget(1m, decision: ControlDecisions.Deny))]);
        Assert.Empty(_signals);

        // Exhausted: the evidence is what was spent and reserved, in the models' currency, and the amount in force.
        Feed(snapshot, [Record(Start.AddMinutes(3), refused: Reasons.BudgetExhausted, controls: Budget(9.8m, decision: ControlDecisions.Deny) with { Reserved = 0.1m })]);
        var signal = Assert.Single(_signals);
        Assert.Equal((AlertTypes.BudgetExhausted, "9.80", "9.80", "10.00", "USD", "0.10", "0.50"),
            (signal.Type, signal.Evidence["spent_before"], signal.Evidence["spent_after"], signal.Evidence["limit"], signal.Evidence["currency"],
                signal.Evidence["reserved"], signal.Evidence["requested"]));
        Assert.Equal("The budget of consumer:team (10.00 USD) is exhausted: 9.80 spent and 0.10 reserved by requests in flight, a request needing up to 0.50 was refused.",
            signal.Summary);

        // The budget raised and exhausted again is a new alert, not one more occurrence of the old one.
        Feed(snapshot, [Record(Start.AddMinutes(4), refused: Reasons.BudgetExhausted, controls: Budget(19.8m, limit: 20m, decision: ControlDecisions.Deny))]);
        Assert.Equal(["budget|consumer:team|100|2026-11|10.00", "budget|consumer:team|100|2026-11|20.00"], _signals.Select(s => s.Fingerprint));
        // Nothing in flight: no "0.00 reserved" to puzzle over.
        Assert.Equal("The budget of consumer:team (20.00 USD) is exhausted: 19.80 spent, a request needing up to 0.50 was refused.", _signals[^1].Summary);
    }

    [Fact]
    public void QuotaExhaustion_Fires()
    {
        var snapshot = Compile("alerts: { disabled: [model.first_use] }");
        var quota = new ControlResult("quota.requests_per_day", "consumer:team", ControlDecisions.Deny) { Limit = 100, Used = 100, Requested = 1 };

        Feed(snapshot, [Record(Start, controls: new ControlResult("quota.requests_per_day", "consumer:team", ControlDecisions.Pass) { Limit = 100, Used = 5 })]);
        Assert.Empty(_signals);
        Feed(snapshot, [Record(Start.AddMinutes(1), refused: Reasons.QuotaExhausted, controls: quota)]);

        var signal = Assert.Single(_signals);
        Assert.Equal((AlertTypes.QuotaExhausted, "quota|consumer:team|quota.requests_per_day|2026-11-30"), (signal.Type, signal.Fingerprint));
    }

    [Fact]
    public void QuotaRefusal_LargerThanTheWholeQuotaOrWithTheCountersDown_IsNoExhaustion()
    {
        var snapshot = Compile("alerts: { disabled: [model.first_use, denials.spike] }");
        var quota = new ControlResult("quota.tokens_per_day", "consumer:team", ControlDecisions.Deny) { Limit = 1000, Used = 0, Requested = 5000 };

        // A request larger than the whole quota is the request's matter; a quota refused while Redis is unreachable
        // (fail mode closed) has used nothing: neither is a quota used up, and owners are not told it is.
        Feed(snapshot, [Record(Start, refused: Reasons.ExceedsLimit, controls: quota)]);
        Feed(snapshot, [Record(Start.AddMinutes(1), refused: Reasons.CountersUnavailable, controls: quota with { Requested = 10, Degraded = "closed" })]);
        Assert.Empty(_signals);

        Feed(snapshot, [Record(Start.AddMinutes(2), refused: Reasons.QuotaExhausted, controls: quota with { Used = 995, Requested = 10 })]);
        Assert.Equal(AlertTypes.QuotaExhausted, Assert.Single(_signals).Type);
    }

    [Fact]
    public void DenialSpike_FiresAtThreshold_AndClassifiesEntitlementProblems()
    {
        var snapshot = Compile("alerts: { denials_per_minute: 10, disabled: [model.first_use] }");

        // Normal: a few refusals spread over minutes.
        Feed(snapshot, Enumerable.Range(0, 20).Select(i => Record(Start.AddSeconds(i * 20), refused: Reasons.RateLimited)));
        Assert.Empty(_signals);

        Feed(snapshot, Enumerable.Range(0, 10).Select(i => Record(Start.AddMinutes(30).AddSeconds(i), "web", refused: Reasons.RateLimited)));
        var spike = Assert.Single(_signals);
        Assert.Equal((AlertTypes.DenialSpike, "consumer:web"), (spike.Type, spike.Subject));
        Assert.Contains("throttle.rate_limit ×10", spike.Evidence["reasons"], StringComparison.Ordinal);

        _signals.Clear();
        Feed(snapshot, Enumerable.Range(0, 10).Select(i => Record(Start.AddMinutes(40).AddSeconds(i), "batch", refused: Reasons.ModelNotEntitled, model: "large")));
        Assert.Equal(AlertTypes.EntitlementDenials, Assert.Single(_signals).Type);
        Assert.Equal([OwnerRoles.Policy], AlertTypes.RolesFor(AlertTypes.EntitlementDenials, ConsumerCategory.Automation));
    }

    [Fact]
    public void AdminSignInsDenied_CountTowardTheSourcesAuthFailures_NamingTheirRequestIds()
    {
        var snapshot = Compile("alerts: { auth_failures_per_minute: 3 }");

        // The path is the caller's to choose: one that looks like the end of a reason must not be taken for a request id.
        for (var i = 0; i < 3; i++)
        {
            var record = Custos.Ledger.AdminSignIn.Record(Start.AddSeconds(i), "198.51.100.9", "admin.unknown_key", "an unknown admin key (cak_abcdefgh…)", "GET",
                "/admin/v1/whoami (request req_forged)", $"req_{i}", snapshot.Version);
            _detectors.ObserveSignInDenied(record, snapshot, _signals);
        }

        var burst = Assert.Single(_signals);
        Assert.Equal((AlertTypes.AuthFailures, "source:198.51.100.9", "req_2"), (burst.Type, burst.Subject, burst.RequestId));
        Assert.Equal("req_2,req_1,req_0", burst.Evidence["recent_requests"]);
    }

    [Fact]
    public void AuthFailureBurst_PerSource()
    {
        var snapshot = Compile("alerts: { auth_failures_per_minute: 15 }");

        // Fourteen failures in a minute from one source, and failures spread out from another: silent.
        Feed(snapshot, Enumerable.Range(0, 14).Select(i => Record(Start.AddSeconds(i), null, Reasons.CredentialUnknown, address: "198.51.100.7")));
        Feed(snapshot, Enumerable.Range(0, 10).Select(i => Record(Start.AddSeconds(i * 10), null, Reasons.CredentialUnknown, address: "198.51.100.8")));
        Assert.Empty(_signals);

        Feed(snapshot, [Record(Start.AddSeconds(30), null, Reasons.CredentialRevoked, address: "198.51.100.7")]);
        var burst = Assert.Single(_signals);
        Assert.Equal((AlertTypes.AuthFailures, "source:198.51.100.7", AlertSeverity.Critical), (burst.Type, burst.Subject, burst.Severity));
        Assert.Null(burst.Service); // no service owns it: security's
        Assert.Contains("deny.credential_unknown ×14", burst.Evidence["reasons"], StringComparison.Ordinal);

        // Still bursting within the minute: not raised again by the detector.
        Feed(snapshot, Enumerable.Range(0, 20).Select(i => Record(Start.AddSeconds(31 + i), null, Reasons.CredentialUnknown, address: "198.51.100.7")));
        Assert.Single(_signals);
    }

    [Fact]
    public void UsageAnomaly_PerCategoryThresholds_AgentSuspendsAtTenTimes()
    {
        var snapshot = Compile("alerts: { disabled: [model.first_use] }");

        // Twenty minutes of a steady 4 requests a minute: the baseline. Normal traffic at the same rate is silent.
        Feed(snapshot, Steady(Start, 40, 4, "bot"));
        Assert.Empty(_signals);

        // Then 60 in one minute: 3× raises an alert (after 20 requests, the minimum), 10× takes the agent's action.
        Feed(snapshot, Enumerable.Range(0, 60).Select(i => Record(Start.AddMinutes(40).AddSeconds(i), "bot")));

        Assert.Collection(_signals,
            alert =>
            {
                Assert.Equal((AlertTypes.UsageAnomaly, AlertSeverity.Warning, AlertAction.None), (alert.Type, alert.Severity, alert.Action));
                Assert.Equal("20", alert.Evidence["observed_per_minute"]); // the twentieth request
                Assert.Equal("4", alert.Evidence["baseline_per_minute"]);
            },
            act =>
            {
                Assert.Equal((AlertSeverity.Critical, AlertAction.Suspend), (act.Severity, act.Action));
                Assert.Equal("40", act.Evidence["observed_per_minute"]);
                Assert.Equal("cred-bot", act.CredentialId);
                Assert.Contains("10× its baseline suspends the credential", act.Rule, StringComparison.Ordinal);
            });
    }

    [Fact]
    public void UsageAnomaly_AgainstABaselineBelowItsFloor_NamesTheFloorItWasJudgedBy()
    {
        // Forty minutes of free requests: a spend baseline of 0. Then a minute of requests costing a little.
        var snapshot = Compile("alerts: { disabled: [model.first_use] }");
        Feed(snapshot, Enumerable.Range(0, 160).Select(i => Record(Start.AddSeconds(i * 15), "bot", cost: 0m)));
        Assert.Empty(_signals);
        Feed(snapshot, Enumerable.Range(0, 20).Select(i => Record(Start.AddMinutes(40).AddSeconds(i), "bot", cost: 0.0001m)));

        // 2000× follows from the figures shown: "0.002 vs 0" alone read as a ratio out of nowhere.
        var alert = Assert.Single(_signals);
        Assert.Equal(("spend", "0.002", "0", "0.000001", "2000"), (alert.Evidence["metric"], alert.Evidence["observed_per_minute"], alert.Evidence["baseline_per_minute"],
            alert.Evidence["baseline_floor"], alert.Evidence["ratio"]));
        Assert.Contains("is at 2000× its baseline spend per minute (0.002 vs 0, a baseline below 0.000001 judged as 0.000001).", alert.Summary, StringComparison.Ordinal);
    }

    [Fact]
    public void UsageAnomaly_InternalOnlyAlerts_ExternalThrottles_AndWarmupIsSilent()
    {
        var snapshot = Compile("alerts: { disabled: [model.first_use], categories: { external: { alert_at: 4, act_at: 8, throttle_requests_per_minute: 7 } } }");

        // A spike during warm-up (first 15 minutes) is not judged.
        Feed(snapshot, Steady(Start, 5, 2, "web").Concat(Enumerable.Range(0, 60).Select(i => Record(Start.AddMinutes(5).AddSeconds(i), "web"))));
        Assert.Empty(_signals);

        Feed(snapshot, Steady(Start.AddMinutes(6), 30, 2, "web").Concat(Steady(Start, 36, 2, "team")));
        _signals.Clear();
        Feed(snapshot, Enumerable.Range(0, 100).Select(i => Record(Start.AddMinutes(36).AddSeconds(i * 0.5), "web"))
            .Concat(Enumerable.Range(0, 100).Select(i => Record(Start.AddMinutes(36).AddSeconds(i * 0.5), "team"))));

        var web = _signals.Where(s => s.Consumer == "web").ToList();
        Assert.Equal([AlertAction.None, AlertAction.Throttle], web.Select(s => s.Action));
        Assert.Equal(7, web[1].ThrottleRequestsPerMinute);
        var team = Assert.Single(_signals, s => s.Consumer == "team");
        Assert.Equal(AlertAction.None, team.Action); // internal teams: alert only
    }

    [Fact]
    public void TokensFarAboveBaseline_IsAnAnomalyEvenAtTheSameRequestRate()
    {
        var snapshot = Compile("alerts: { disabled: [model.first_use] }");
        Feed(snapshot, Steady(Start, 30, 25, "team"));
        Assert.Empty(_signals);

        Feed(snapshot, Enumerable.Range(0, 25).Select(i => Record(Start.AddMinutes(30).AddSeconds(i), "team", tokens: 10_000, cost: 1m)));

        var signal = Assert.Single(_signals);
        Assert.Contains(signal.Evidence["metric"], new[] { "tokens", "spend" });
    }

    [Fact]
    public void AQuietJobFarAboveItsHourlyBaseline_RaisesAnAlert_ThatMinutesCouldNotSee()
    {
        var snapshot = Compile("alerts: { disabled: [model.first_use] }");

        // Thirty hours of four calls an hour: never 20 in a minute, so per-minute judgement has nothing to say.
        Feed(snapshot, Enumerable.Range(0, 30 * 4).Select(i => Record(Start.AddMinutes(i * 15), "batch")));
        Assert.Empty(_signals);

        // Then two calls a minute for an hour: 120 in the hour, 30× its hourly baseline; still quiet per minute.
        Feed(snapshot, Enumerable.Range(0, 120).Select(i => Record(Start.AddHours(30).AddSeconds(i * 30), "batch")));

        var signal = Assert.Single(_signals);
        Assert.Equal((AlertTypes.UsageAnomaly, "usage.anomaly|batch|hour", AlertAction.None), (signal.Type, signal.Fingerprint, signal.Action));
        Assert.Equal(("100", "4"), (signal.Evidence["observed_per_hour"], signal.Evidence["baseline_per_hour"]));
    }

    [Fact]
    public void FirstModelUse_FiresOncePerConsumerAndModel_AndRemembersSeededHistory()
    {
        var snapshot = Compile();
        _detectors.SeedModelsUsed([("team", "small")]);

        Feed(snapshot, [Record(Start, "team"), Record(Start.AddSeconds(1), "team", model: "large"), Record(Start.AddSeconds(2), "team", model: "large"),
            Record(Start.AddSeconds(3), "web", refused: Reasons.ModelNotEntitled, model: "large")]);

        var signal = Assert.Single(_signals);
        Assert.Equal((AlertTypes.FirstModelUse, "large", AlertSeverity.Info), (signal.Type, signal.Evidence["model"], signal.Severity));
    }

    [Fact]
    public void AgentFanOut_BurstUnderOneRun_AndSuperlinearGrowth()
    {
        var snapshot = Compile("alerts: { agent_run_requests_per_minute: 50, disabled: [model.first_use, usage.anomaly] }");

        // Normal: 30 requests a minute under one run, for five minutes.
        Feed(snapshot, Steady(Start, 5, 30, "bot", agentRun: "run-calm"));
        Assert.Empty(_signals);

        Feed(snapshot, Enumerable.Range(0, 50).Select(i => Record(Start.AddMinutes(10).AddSeconds(i), "bot", agentRun: "run-wide")));
        var burst = Assert.Single(_signals);
        Assert.Equal((AlertTypes.AgentFanOut, "agent_run:run-wide"), (burst.Type, burst.Subject));

        // Doubling every 10 s: 2, 4, 8 — well under 50 a minute, but growing faster than linearly.
        _signals.Clear();
        var t = Start.AddMinutes(20);
        var records = new List<RequestRecord>();
        foreach (var (bucket, count) in new[] { (0, 2), (1, 4), (2, 8) })
        {
            for (var i = 0; i < count; i++)
            {
                records.Add(Record(t.AddSeconds(bucket * 10 + i), "bot", agentRun: "run-growing"));
            }
        }

        Feed(snapshot, records);
        var growth = Assert.Single(_signals);
        Assert.Equal("2 → 4 → 8", growth.Evidence["requests_per_10s"]);
    }

    [Fact]
    public void TrafficOutsideSchedule_FiresOncePerHour_InTheTenantsZone()
    {
        var snapshot = Compile(consumerExtra: """
              - id: nightly
                service: svc
                category: automation
                models: [small]
                schedule: { days: [mon, tue, wed, thu, fri], hours: "01:00-05:00" }
            """, alerts: "alerts: { disabled: [model.first_use] }");

        // 09:00 UTC on Monday is 10:00 in Paris: outside 01:00-05:00. 01:30 UTC is 02:30 in Paris: inside.
        Feed(snapshot, [Record(Start.AddHours(-7.5), "nightly"), Record(Start.AddHours(-7), "nightly")]);
        Assert.Empty(_signals);

        Feed(snapshot, [Record(Start, "nightly"), Record(Start.AddMinutes(10), "nightly"), Record(Start.AddHours(1), "nightly")]);
        Assert.Equal(2, _signals.Count);
        Assert.All(_signals, s => Assert.Equal(AlertTypes.OutsideSchedule, s.Type));
        Assert.Equal("2026-11-30T10:00:00", _signals[0].Evidence["local_time"]);
    }

    [Fact]
    public void DisabledDetectors_StaySilent_AndUnknownNamesAreRefused()
    {
        var snapshot = Compile("alerts: { auth_failures_per_minute: 2, disabled: [auth.failures, model.first_use] }");
        Feed(snapshot, Enumerable.Range(0, 10).Select(i => Record(Start.AddSeconds(i), null, Reasons.CredentialUnknown)));
        Assert.Empty(_signals);

        var invalid = PolicyYaml.Read("tenants: []\nalerts: { disabled: [auth.failure] }\n");
        Assert.Contains(invalid.Diagnostics, d => d.Message.Contains("'auth.failure' is not a detector", StringComparison.Ordinal));
    }

    [Fact]
    public void AgentRunsAndFailingSources_WhichCallersName_AreTrackedUpToABound_AndTrackedOnesStillAlert()
    {
        // One request each under 3,000 agent runs of their own, and one failure each from 3,000 addresses: a caller could
        // otherwise make the gateway track without end (each key held for minutes).
        var detectors = new AlertDetectors { MaxCallerNamedKeys = 500 };
        var snapshot = Compile("alerts: { agent_run_requests_per_minute: 5, disabled: [model.first_use, usage.anomaly] }");
        var signals = new List<AlertSignal>();
        for (var i = 0; i < 3000; i++)
        {
            detectors.Observe(Record(Start.AddMilliseconds(i), "bot", agentRun: $"run-{i}"), snapshot, signals);
            detectors.Observe(Record(Start.AddMilliseconds(i), null, Reasons.CredentialUnknown, address: $"10.2.{i / 256}.{i % 256}"), snapshot, signals);
        }

        Assert.InRange(detectors.TrackedKeys, 1000, 1010); // 500 runs, 500 sources, and the consumer's own few

        // A run tracked before the bound was reached still raises its alert.
        for (var i = 0; i < 5; i++)
        {
            detectors.Observe(Record(Start.AddSeconds(10 + i), "bot", agentRun: "run-0"), snapshot, signals);
        }

        Assert.Contains(signals, s => s.Type == AlertTypes.AgentFanOut && s.Subject == "agent_run:run-0");
    }

    [Fact]
    public void IdleKeysAreSwept()
    {
        var snapshot = Compile("alerts: { disabled: [model.first_use] }");
        Feed(snapshot, Enumerable.Range(0, 1000).Select(i => Record(Start.AddMilliseconds(i), null, Reasons.CredentialUnknown, address: $"10.1.{i / 256}.{i % 256}")));
        Assert.True(_detectors.TrackedKeys >= 1000);

        Feed(snapshot, [Record(Start.AddMinutes(10), "team")]);

        Assert.True(_detectors.TrackedKeys < 10, $"{_detectors.TrackedKeys} keys still tracked");
    }
}
