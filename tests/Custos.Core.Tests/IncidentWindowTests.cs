using Custos.Policy;
using Custos.Reports;

namespace Custos.Core.Tests;

/// <summary>
/// An incident window taken in entry by entry, as the pack reads it: what each finding lists is the first requests of
/// its kind, the count and the last, with nothing kept per request beyond that.
/// </summary>
public sealed class IncidentWindowTests
{
    private static readonly DateTimeOffset T0 = new(2026, 3, 1, 10, 0, 0, TimeSpan.Zero);

    private static PolicyDocument Doc() => new()
    {
        Tenants = [new TenantConfig { Id = "t", Models = [new ModelConfig { Name = "m", Provider = "p" }], Providers = [new ProviderConfig { Id = "p", Kind = ProviderKind.OpenAI, BaseUrl = new Uri("http://127.0.0.1:9/v1") }] }],
        Services = [new ServiceConfig { Id = "s", Tenant = "t", Limits = new LimitsConfig { Budget = new BudgetConfig { Amount = 5m } } }],
        Consumers = [new ConsumerConfig { Id = "c", Service = "s", Category = ConsumerCategory.Internal, Models = ["m"] }],
        Credentials = [new CredentialConfig { Id = "cred-c", Consumer = "c", KeySha256 = new string('a', 64) }],
    };

    /// <summary>Odd requests are allowed; even ones throttled by the rate limit, with two refusing readings of one budget.</summary>
    private static RequestEntry Request(int i) => new()
    {
        ChainId = "n",
        Seq = i,
        RequestId = "req_" + i,
        Timestamp = T0.AddSeconds(i),
        Tenant = "t",
        Service = "s",
        Consumer = "c",
        CredentialId = "cred-c",
        Model = "m",
        PolicyVersion = 1,
        Decision = i % 2 == 1 ? "allow" : "throttle",
        Status = i % 2 == 1 ? 200 : 429,
        Cost = i % 2 == 1 ? 0.01m : null,
        MaxOutputTokens = i % 97,
        Reasons = i % 2 == 1 ? [] : ["throttle.rate_limit"],
        Controls = i % 2 == 1
            ? [new ControlReading("budget", "service:s", "pass", 5m, null)]
            : [new ControlReading("rate_limit.requests", "consumer:c", "throttle", 5m, null), new ControlReading("budget", "service:s", "deny", 5m, null),
                new ControlReading("budget", "service:s", "deny", 5m, null)],
        BudgetsUsed = i % 2 == 1 ? [i / 1000m] : [4.99m, 5m],
    };

    /// <summary>The incident input of consumer <c>c</c> over the hour from <see cref="T0"/>, under <paramref name="history"/> (default: version 1 of <c>Doc()</c>).</summary>
    private static IncidentInput Input(IncidentWindow window, PolicyVersion[]? history = null) => new()
    {
        Subject = new IncidentSubject("consumer", "c"),
        From = T0,
        To = T0.AddHours(1),
        GeneratedAt = T0.AddHours(2),
        History = history ?? [new PolicyVersion(1, "h1", "a", "first", T0.AddDays(-1), Doc())],
        Window = window,
        Baseline = new BaselineStats(T0.AddHours(-1), T0),
        Chain = ChainCheck.NotRun("test"),
    };

    [Fact]
    public void Build_TwoPromptRulesRemovedInOneVersion_TwoFindingsEachTitledByItsRule()
    {
        // Both findings were titled "prompt_restriction of service:s removed in v2": a list of findings named the same
        // thing twice, and only their details told which rule each was.
        var rules = Doc() with
        {
            Services = [.. Doc().Services.Select(s => s with
            {
                PromptRules = [new PromptRuleConfig { Id = "cards", Detector = PromptDetector.PaymentCard }, new PromptRuleConfig { Id = "secrets", Detector = PromptDetector.Secrets }],
            })],
        };
        var window = new IncidentWindow(T0, T0.AddHours(1), [], timelineLimit: 100);
        window.Add(Request(1) with { PolicyVersion = 2 });

        var report = IncidentReportBuilder.Build(Input(window, [new PolicyVersion(1, "h1", "a", "first", T0.AddDays(-1), rules), new PolicyVersion(2, "h2", "b", "quieter", T0.AddMinutes(-1), Doc())]));

        Assert.Equal(["prompt_restriction of service:s removed in v2: rule cards", "prompt_restriction of service:s removed in v2: rule secrets"],
            report.Findings.Where(f => f.Code == "control_removed").Select(f => f.Title).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Build_AllowedUnderTwoApprovals_TheMisuseExplanationNamesEachWithItsCount()
    {
        // It named the first approval an allowed request used: the requests for the model another owner approved later
        // read as approved by the first.
        var window = new IncidentWindow(T0, T0.AddHours(1), [], timelineLimit: 100);
        for (var i = 1; i <= 20; i++)
        {
            var entry = Request(i);
            window.Add(entry.Decision == "allow"
                ? entry with { Controls = [new ControlReading("entitlement", "consumer:c", "pass", null, i < 5 ? "approved by dana (DEMO-1)" : "approved by sam (ar-1)")] }
                : entry);
        }

        var report = IncidentReportBuilder.Build(Input(window));

        var misuse = Assert.Single(report.Classification.Ranking, r => r.Class == Classification.Misuse);
        Assert.Contains("The credential was entitled (10 requests allowed: 2 approved by dana (DEMO-1), 8 approved by sam (ar-1))", misuse.Explanation, StringComparison.Ordinal);
    }

    [Fact]
    public void Build_OverTwoThousandRequests_FindingsListTheFirstTenTheCountAndTheLast_BudgetRefusalsCountedOncePerRequest()
    {
        var window = new IncidentWindow(T0, T0.AddHours(1), ["req_5"], timelineLimit: 100); // req_5 raised an alert
        for (var i = 1; i <= 2000; i++)
        {
            window.Add(Request(i));
        }

        var report = IncidentReportBuilder.Build(Input(window) with
        {
            Alerts = [Raised("req_5")],
        });

        // What the window keeps of a kind of request: the first eleven (ten listed, the first left out) and the last.
        Assert.Equal(IncidentWindow.Sample.Keep, window.Limited.Head.Count);
        Assert.Equal(("req_2000", 1000), (window.Limited.Tail.Entry.RequestId, window.Limited.Count));

        var limits = Assert.Single(report.Findings, f => f.Code == "limit_refusals");
        Assert.Equal("1000 of 2000 requests refused by rate limits, quotas or budgets", limits.Title);
        Assert.Contains("budget of service:s (limit 5) 2000x; rate_limit.requests of consumer:c (limit 5) 1000x", limits.Detail, StringComparison.Ordinal);
        var requests = limits.Evidence.Where(e => e.Kind == "request").ToList();
        Assert.Equal([.. Enumerable.Range(1, 10).Select(k => "req_" + (2 * k)), "+990"], requests.Select(e => e.Ref));
        Assert.Equal("990 more, from req_22 to req_2000 (see the timeline)", requests[^1].Detail);

        // The allowed request that asked for the most output: the first of those with the most (i % 97 == 96, odd).
        var ceiling = Assert.Single(report.Findings, f => f.Code == "no_output_ceiling");
        Assert.Equal("req_193", Assert.Single(ceiling.Evidence, e => e.Kind == "request").Ref);

        // Two refusing readings of one budget in a request are one refused request; the last reading's spend is kept.
        var budget = Assert.Single(report.Spend.Budgets, b => b.Scope == "service:s");
        Assert.Equal((1000, 10.00m, 5m), (budget.Refused, budget.SpendInWindow, budget.LastUsed!.Value));

        Assert.Equal((2000, 1000, 1000), (report.Summary.Requests, report.Summary.Allowed, report.Summary.Throttled));
        Assert.Equal((100, 1900), (report.Timeline.Events.Count(e => e.Kind == "request"), report.Timeline.OmittedRequests));
        var points = report.Spend.Chart.Points; // the start and 1,000 priced requests, thinned to every other point and the last
        Assert.Equal((501, T0, T0.AddSeconds(1999), 10.00m), (points.Count, points[0].At, points[^1].At, points[^1].Cumulative));
        Assert.Equal(1000, report.Spend.PricedRequests);

        // The service names no owner: each gap lists the requests it served, the first ten, the count and the last.
        var gap = report.Findings.First(f => f.Code == "owner_gap");
        Assert.Equal([.. Enumerable.Range(0, 10).Select(k => "req_" + ((2 * k) + 1)), "+990"], gap.Evidence.Where(e => e.Kind == "request").Select(e => e.Ref));
        Assert.Contains(gap.Evidence, e => e.Detail == "990 more, from req_21 to req_1999 (see the timeline)");

        // The request that raised the alert, found while the window was read, is the alert's evidence with what it was.
        var action = Assert.Single(report.Findings, f => f.Code == "automatic_action");
        var raising = Assert.Single(action.Evidence, e => e.Kind == "request");
        Assert.Equal("req_5", raising.Ref);
        Assert.Equal("2026-03-01 10:00:05 UTC allow m: 200 , 0.01 under v1, ledger n#5; raised the alert", raising.Detail);
    }

    [Fact]
    public void AnAutomaticAction_UndoneByAnotherRoute_IsReportedUndone_NotStillInForce()
    {
        // The alert still open (nobody resumed it through the alert), but an owner ran `keys resume` on the credential:
        // the pack said "still in force" and kept the finding high, while its own revocations section showed the resume.
        Custos.Reports.IncidentReport Build(params AdminEntry[] entries) => IncidentReportBuilder.Build(Input(new IncidentWindow(T0, T0.AddHours(1), [], timelineLimit: 100)) with
        {
            Alerts = [Raised("req_5") with { ActionTaken = "suspended credential cred-c", Signal = Raised("req_5").Signal with { Action = Custos.Policy.AlertAction.Suspend } }],
            AdminEntries = entries,
        });

        var inForce = Assert.Single(Build().Findings, f => f.Code == "automatic_action");
        Assert.Equal("high", inForce.Severity);
        Assert.EndsWith("still in force when the pack was made.", inForce.Detail, StringComparison.Ordinal);

        var resumed = new AdminEntry
        {
            ChainId = "n",
            Seq = 9,
            Timestamp = T0.AddMinutes(5),
            Actor = "agents-owner",
            Action = "credential.resumed",
            Target = "credential:cred-c",
            Before = "suspended",
            After = "active",
            Reason = "checked by hand",
        };
        var undone = Assert.Single(Build(resumed).Findings, f => f.Code == "automatic_action");
        Assert.Equal("medium", undone.Severity);
        Assert.Contains("agents-owner undid it at", undone.Detail, StringComparison.Ordinal);
        Assert.Contains("credential.resumed: checked by hand", undone.Detail, StringComparison.Ordinal);

        // A resume of another credential, or one before the alert, undoes nothing of it.
        Assert.Equal("high", Assert.Single(Build(resumed with { Target = "credential:cred-other" }).Findings, f => f.Code == "automatic_action").Severity);
        Assert.Equal("high", Assert.Single(Build(resumed with { Timestamp = T0 }).Findings, f => f.Code == "automatic_action").Severity);
    }

    private static Custos.Alerts.Alert Raised(string requestId) => new()
    {
        Id = "al-1",
        RaisedAt = T0.AddMinutes(1),
        LastSeenAt = T0.AddMinutes(1),
        ActionTaken = "throttled consumer c",
        ActionPolicyVersion = 1,
        Signal = new Custos.Alerts.AlertSignal
        {
            Type = "usage.anomaly",
            Severity = Custos.Alerts.AlertSeverity.Critical,
            Fingerprint = "usage.anomaly:c",
            Subject = "consumer:c",
            Summary = "c sent ten times its usual rate.",
            At = T0.AddMinutes(1),
            Tenant = "t",
            Service = "s",
            Consumer = "c",
            CredentialId = "cred-c",
            RequestId = requestId,
            PolicyVersion = 1,
        },
    };

    [Fact]
    public void Add_TenThousandRequests_KeepsOnlyTheTimelinesAndTheSamplesEntries()
    {
        var window = new IncidentWindow(T0, T0.AddHours(1), timelineLimit: 100);
        var taken = TakeIn(window, 10_000);
        GC.Collect(2, GCCollectionMode.Forced, blocking: true);
        GC.WaitForPendingFinalizers();
        GC.Collect(2, GCCollectionMode.Forced, blocking: true);

        // The timeline's first 100 and a dozen per kind of evidence; a window that held its entries would keep all 10,000.
        var alive = taken.Count(w => w.IsAlive);
        Assert.InRange(alive, 100, 200);
        Assert.Equal(10_000, window.Count);
    }

    /// <summary>Takes <paramref name="count"/> requests into <paramref name="window"/>, returning weak references to them.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.NoInlining)]
    private static List<WeakReference> TakeIn(IncidentWindow window, int count)
    {
        var taken = new List<WeakReference>(count);
        for (var i = 1; i <= count; i++)
        {
            var entry = Request(i);
            window.Add(entry);
            taken.Add(new WeakReference(entry));
        }

        return taken;
    }

    [Fact]
    public void PricedRequests_PastTheLimit_ShareAPointPerSecondThenPerMinute_TheSpendKept()
    {
        // 1,200 priced requests, ten a second for two minutes; a limit of 100 points.
        var window = new IncidentWindow(T0, T0.AddHours(1)) { ChartPointLimit = 100 };
        for (var i = 0; i < 1200; i++)
        {
            window.Add(Request(1) with { RequestId = "req_p" + i, Timestamp = T0.AddMilliseconds(i * 100), Cost = 0.001m });
        }

        var points = window.PricedRequests().ToList();

        // Past 100 points, a point per second; past 100 seconds, a point per minute: each minute's last request and its spend.
        Assert.Equal([(T0.AddMilliseconds(59_900), 0.6m), (T0.AddMilliseconds(119_900), 0.6m)], points);
        Assert.Equal(1.2m, window.Spend);

        var exact = new IncidentWindow(T0, T0.AddHours(1)) { ChartPointLimit = 2000 };
        for (var i = 0; i < 1200; i++)
        {
            exact.Add(Request(1) with { RequestId = "req_p" + i, Timestamp = T0.AddMilliseconds(i * 100), Cost = 0.001m });
        }

        Assert.Equal(1200, exact.PricedRequests().Count()); // under the limit, a point per request as before
    }

    [Fact]
    public void SampleMerge_KindsInterleaved_GivesTheFirstInWindowOrderTheCountAndTheLast()
    {
        var (a, b) = (new IncidentWindow.Sample(), new IncidentWindow.Sample());
        for (var i = 0; i < 30; i++)
        {
            (i % 3 == 0 ? a : b).Add(Request(i + 1), i);
        }

        var merged = IncidentWindow.Sample.Merge([a, b]);

        Assert.Equal(30, merged.Count);
        Assert.Equal(Enumerable.Range(1, IncidentWindow.Sample.Keep).Select(i => "req_" + i), merged.Head.Select(h => h.Entry.RequestId));
        Assert.Equal("req_30", merged.Tail.Entry.RequestId);
    }

    [Theory]
    [InlineData("0001-01-01T00:00:00Z", "0001-01-02T00:00:00Z", "0001-01-01T00:00:00Z")] // nothing before the window
    [InlineData("0001-01-01T12:00:00Z", "0001-01-03T00:00:00Z", "0001-01-01T00:00:00Z")] // what there is of it
    [InlineData("2026-11-30T00:00:00Z", "2026-12-01T00:00:00Z", "2026-11-29T00:00:00Z")] // the same length before
    public void BaselineWindow_NearTheEarliestTime_StartsThere(string from, string to, string baselineFrom)
    {
        var start = DateTimeOffset.Parse(from, System.Globalization.CultureInfo.InvariantCulture);

        var baseline = IncidentReportBuilder.BaselineWindow(start, DateTimeOffset.Parse(to, System.Globalization.CultureInfo.InvariantCulture));

        Assert.Equal((DateTimeOffset.Parse(baselineFrom, System.Globalization.CultureInfo.InvariantCulture), start), baseline);
    }
}
