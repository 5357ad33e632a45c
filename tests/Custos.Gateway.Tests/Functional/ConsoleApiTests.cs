using System.Globalization;
using System.Net;
using System.Text.Json;
using static Custos.Gateway.Tests.Functional.ControlPlaneFixture;

namespace Custos.Gateway.Tests.Functional;

/// <summary>
/// What the console reads beyond the resources: the overview's figures against the ledger's, the diff of two policy
/// versions, the evidence reports over HTTP, and the console's files with their security headers.
/// </summary>
public sealed class ConsoleApiTests
{
    [Fact]
    public async Task Overview_CountsAndSpend_MatchTheLedger_InScope()
    {
        await using var g = await StartAsync(more: doc => doc with
        {
            Services = [.. doc.Services.Select(s => s.Id == "support"
                ? s with { Limits = s.Limits with { Budget = new Custos.Policy.BudgetConfig { Amount = 50m, Period = Custos.Policy.BudgetPeriod.Month } } } : s)],
        });
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("web"))).Status);
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("web"))).Status);
        Assert.Equal("deny.model_not_entitled", (await ChatAsync(g, g.KeyOf("web"), "gpt-4o")).Code);
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("globex-user"), "globex-only")).Status);
        var ledger = await g.LedgerAsync();
        decimal CostOf(string consumer) => ledger.Where(e => e.GetProperty("consumer").GetString() == consumer && e.GetProperty("cost").ValueKind == JsonValueKind.String)
            .Sum(e => decimal.Parse(e.GetProperty("cost").GetString()!, CultureInfo.InvariantCulture));
        var webSpend = CostOf("web");
        Assert.True(webSpend > 0);

        var root = await JsonAsync(await AdminAsync(g, "root", HttpMethod.Get, "/admin/v1/overview?window=1h"));
        var buckets = root.GetProperty("buckets").EnumerateArray().ToList();
        Assert.Equal(60, buckets.Count);
        Assert.Equal(4, buckets.Sum(b => b.GetProperty("requests").GetInt64()));
        Assert.Equal(1, buckets.Sum(b => b.GetProperty("denied").GetInt64()));
        Assert.Equal(1, root.GetProperty("reasons").GetProperty("deny.model_not_entitled").GetInt64());
        // From the totals by minute: each request in the bucket of the minute it started in.
        Assert.Equal(ledger.Where(e => e.GetProperty("kind").GetString() == "request")
                .GroupBy(e => { var at = DateTimeOffset.Parse(e.GetProperty("timestamp").GetString()!, CultureInfo.InvariantCulture); return at.AddTicks(-(at.UtcTicks % TimeSpan.TicksPerMinute)); })
                .Select(m => (m.Key, (long)m.Count())).OrderBy(m => m.Key),
            buckets.Where(b => b.GetProperty("requests").GetInt64() > 0).Select(b => (b.GetProperty("start").GetDateTimeOffset(), b.GetProperty("requests").GetInt64())));
        var web = root.GetProperty("top_consumers").EnumerateArray().Single(c => c.GetProperty("consumer").GetString() == "web");
        Assert.Equal(3, web.GetProperty("requests").GetInt64());
        Assert.Equal(1, web.GetProperty("refused").GetInt64());
        Assert.Equal(webSpend, web.GetProperty("spend").GetDecimal());

        // This month's spend against the monthly budget: the last cumulative point is what the ledger says was spent.
        var support = root.GetProperty("spend_this_month").EnumerateArray().Single(s => s.GetProperty("service").GetString() == "support");
        Assert.Equal(50m, support.GetProperty("monthly_budget").GetDecimal());
        Assert.Equal(webSpend, support.GetProperty("cumulative").EnumerateArray().Last().GetDecimal());
        var budget = root.GetProperty("budgets").EnumerateArray().Single(b => b.GetProperty("id").GetString() == "support");
        Assert.Equal(webSpend, budget.GetProperty("spent").GetDecimal());
        Assert.Equal(Math.Round(webSpend / 50m, 9), budget.GetProperty("fraction").GetDecimal());

        // The longer windows count the same requests from the quarter hours' totals, not from the entries.
        foreach (var window in (string[])["24h", "7d", "30d"])
        {
            var longer = await JsonAsync(await AdminAsync(g, "root", HttpMethod.Get, "/admin/v1/overview?window=" + window));
            Assert.Equal((4L, 1L, 3L), (longer.GetProperty("buckets").EnumerateArray().Sum(b => b.GetProperty("requests").GetInt64()),
                longer.GetProperty("buckets").EnumerateArray().Sum(b => b.GetProperty("denied").GetInt64()),
                longer.GetProperty("buckets").EnumerateArray().Sum(b => b.GetProperty("allowed").GetInt64())));
            Assert.Equal(1, longer.GetProperty("reasons").GetProperty("deny.model_not_entitled").GetInt64());
            var webInWindow = longer.GetProperty("top_consumers").EnumerateArray().Single(c => c.GetProperty("consumer").GetString() == "web");
            Assert.Equal((3L, 1L, webSpend), (webInWindow.GetProperty("requests").GetInt64(), webInWindow.GetProperty("refused").GetInt64(), webInWindow.GetProperty("spend").GetDecimal()));
            Assert.Equal(4, longer.GetProperty("scanned").GetInt64());
        }

        // Scope: the globex owner sees globex's request only, and no acme budget.
        var globex = await JsonAsync(await AdminAsync(g, "globex-owner", HttpMethod.Get, "/admin/v1/overview?window=24h"));
        Assert.Equal(1, globex.GetProperty("buckets").EnumerateArray().Sum(b => b.GetProperty("requests").GetInt64()));
        Assert.Equal(["globex-user"], globex.GetProperty("top_consumers").EnumerateArray().Select(c => c.GetProperty("consumer").GetString()));
        Assert.Empty(globex.GetProperty("budgets").EnumerateArray());

        using var bad = await AdminAsync(g, "root", HttpMethod.Get, "/admin/v1/overview?window=2y");
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        Assert.Equal("admin.invalid_request", (await JsonDocument.ParseAsync(await bad.Content.ReadAsStreamAsync())).RootElement.GetProperty("code").GetString());
    }

    [Fact]
    public async Task Overview_OfTenantsPricingInTwoCurrencies_NeverAddsThemTogether()
    {
        // Globex prices in EUR: the overview added its euros to acme's dollars and labelled the sum with the first currency it met.
        await using var g = await StartAsync(more: doc => doc with
        {
            Tenants = [.. doc.Tenants.Select(t => t.Id == "globex" ? t with { Models = [.. t.Models.Select(m => m with { Currency = "EUR" })] } : t)],
        });
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("web"))).Status);
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("globex-user"), "globex-only")).Status);
        var ledger = await g.LedgerAsync();
        decimal CostOf(string consumer) => ledger.Where(e => e.GetProperty("consumer").GetString() == consumer && e.GetProperty("cost").ValueKind == JsonValueKind.String)
            .Sum(e => decimal.Parse(e.GetProperty("cost").GetString()!, CultureInfo.InvariantCulture));
        var (dollars, euros) = (CostOf("web"), CostOf("globex-user"));
        Assert.True(dollars > 0 && euros > 0);

        foreach (var window in (string[])["1h", "24h"])
        {
            var root = await JsonAsync(await AdminAsync(g, "root", HttpMethod.Get, "/admin/v1/overview?window=" + window));
            Assert.Equal(JsonValueKind.Null, root.GetProperty("currency").ValueKind);
            Assert.Equal(["EUR", "USD"], root.GetProperty("currencies").EnumerateArray().Select(c => c.GetString()));
            var buckets = root.GetProperty("buckets").EnumerateArray().ToList();
            Assert.All(buckets, b => Assert.Equal(JsonValueKind.Null, b.GetProperty("spend").ValueKind));
            decimal SpentIn(string currency) => buckets.Sum(b => b.GetProperty("spend_by_currency").TryGetProperty(currency, out var v) ? v.GetDecimal() : 0);
            Assert.Equal((dollars, euros), (SpentIn("USD"), SpentIn("EUR")));
            var consumers = root.GetProperty("top_consumers").EnumerateArray().ToDictionary(c => c.GetProperty("consumer").GetString()!, c => c.GetProperty("currency").GetString());
            Assert.Equal(("USD", "EUR"), (consumers["web"], consumers["globex-user"]));
        }

        // One tenant's view has one currency, its own, and its spend as one figure.
        var globex = await JsonAsync(await AdminAsync(g, "globex-owner", HttpMethod.Get, "/admin/v1/overview?window=1h"));
        Assert.Equal("EUR", globex.GetProperty("currency").GetString());
        Assert.Equal(["EUR"], globex.GetProperty("currencies").EnumerateArray().Select(c => c.GetString()));
        Assert.Equal(euros, globex.GetProperty("buckets").EnumerateArray().Sum(b => b.GetProperty("spend").GetDecimal()));

        // GET /spend names each service's currency too.
        var spend = (await JsonAsync(await AdminAsync(g, "root", HttpMethod.Get, "/admin/v1/spend"))).EnumerateArray()
            .ToDictionary(s => s.GetProperty("service").GetString()!, s => (s.GetProperty("spend").GetDecimal(), s.GetProperty("currency").GetString()));
        Assert.Equal((dollars, "USD"), spend["support"]);
        Assert.Equal((euros, "EUR"), spend.Single(s => s.Value.Item2 == "EUR").Value);
    }

    [Fact]
    public async Task Spend_OfAServiceRemovedFromThePolicy_StaysInSpendAndTheOverview_AsRetired()
    {
        // A service retired mid-month dropped out of GET /spend and the overview's month: finance's chargeback for the
        // month came to less than the ledger's entries, and the service's spend went unbilled.
        await using var g = await StartAsync();
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("web"))).Status);
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("agent"), "gpt-4o")).Status);
        var ledger = await g.LedgerAsync();
        decimal CostOf(string consumer) => ledger.Where(e => e.GetProperty("consumer").GetString() == consumer && e.GetProperty("cost").ValueKind == JsonValueKind.String)
            .Sum(e => decimal.Parse(e.GetProperty("cost").GetString()!, CultureInfo.InvariantCulture));
        var agentSpend = CostOf("agent");
        Assert.True(agentSpend > 0);

        var document = g.Gateway.Policy.Current.Document;
        var retired = document with
        {
            Services = [.. document.Services.Where(s => s.Id != "agents")],
            Consumers = [.. document.Consumers.Where(c => c.Service != "agents")],
            Credentials = [.. document.Credentials.Where(c => c.Consumer != "agent")],
            Admins = [.. document.Admins.Where(a => a.Id != "agents-owner")],
        };
        await JsonAsync(await AdminAsync(g, "root", HttpMethod.Post, "/admin/v1/policy/versions",
            new Dictionary<string, object?> { ["yaml"] = Custos.Policy.PolicyYamlWriter.Write(retired), ["reason"] = "retire agents" }));
        Assert.DoesNotContain(g.Gateway.Policy.Current.Document.Services, s => s.Id == "agents");

        var spend = (await JsonAsync(await AdminAsync(g, "finance", HttpMethod.Get, "/admin/v1/spend"))).EnumerateArray()
            .ToDictionary(s => s.GetProperty("service").GetString()!);
        var agents = spend["agents"];
        Assert.Equal(("acme", agentSpend, 1L, true, JsonValueKind.Null, "USD"), (agents.GetProperty("tenant").GetString(), agents.GetProperty("spend").GetDecimal(),
            agents.GetProperty("requests").GetInt64(), agents.GetProperty("retired").GetBoolean(), agents.GetProperty("budget").ValueKind,
            agents.GetProperty("currency").GetString()));
        Assert.False(spend["support"].GetProperty("retired").GetBoolean());
        Assert.Equal(CostOf("web") + agentSpend, spend.Values.Sum(s => s.GetProperty("spend").GetDecimal()));

        var overview = await JsonAsync(await AdminAsync(g, "finance", HttpMethod.Get, "/admin/v1/overview?window=24h"));
        var series = overview.GetProperty("spend_this_month").EnumerateArray().Single(s => s.GetProperty("service").GetString() == "agents");
        Assert.Equal((agentSpend, true, JsonValueKind.Null), (series.GetProperty("cumulative").EnumerateArray().Last().GetDecimal(),
            series.GetProperty("retired").GetBoolean(), series.GetProperty("monthly_budget").ValueKind));

        // Still within scope: another tenant's admin sees neither.
        var globex = await JsonAsync(await AdminAsync(g, "globex-owner", HttpMethod.Get, "/admin/v1/overview?window=24h"));
        Assert.DoesNotContain(globex.GetProperty("spend_this_month").EnumerateArray(), s => s.GetProperty("service").GetString() == "agents");
    }

    [Fact]
    public async Task Overview_OfOneTenant_CountsTheMonthInItsTimeZone_LikeItsBudgets()
    {
        // The month was UTC's while the tenant's budgets use its own zone: at UTC+14, the overview's month began 14 hours late.
        await using var g = await StartAsync(more: doc => doc with
        {
            Tenants = [.. doc.Tenants.Select(t => t.Id == "globex" ? t with { TimeZone = "Pacific/Kiritimati" } : t)],
        });
        var zone = TimeZoneInfo.FindSystemTimeZoneById("Pacific/Kiritimati");
        var local = TimeZoneInfo.ConvertTime(g.Gateway.Time.GetUtcNow(), zone);
        var localMonth = new DateTimeOffset(local.Year, local.Month, 1, 0, 0, 0, TimeSpan.FromHours(14));

        var globex = await JsonAsync(await AdminAsync(g, "globex-owner", HttpMethod.Get, "/admin/v1/overview?window=24h"));
        Assert.Equal(localMonth, globex.GetProperty("month_start").GetDateTimeOffset());
        Assert.Equal(local.Day, globex.GetProperty("days").GetArrayLength());
        Assert.Equal("Pacific/Kiritimati", globex.GetProperty("time_zone").GetString()); // the console labels the days in it

        // A view of tenants in different zones keeps UTC's month.
        var now = g.Gateway.Time.GetUtcNow();
        var root = await JsonAsync(await AdminAsync(g, "root", HttpMethod.Get, "/admin/v1/overview?window=24h"));
        Assert.Equal(new DateTimeOffset(now.Year, now.Month, 1, 0, 0, 0, TimeSpan.Zero), root.GetProperty("month_start").GetDateTimeOffset());
        Assert.Equal("UTC", root.GetProperty("time_zone").GetString());
    }

    /// <summary>
    /// Overviews and reports read the ledger on the gateway's own cores. Beyond <c>gateway.max_concurrent_reports</c> they
    /// wait their turn; beyond the queue they are refused at once, with a code, the request id and a Retry-After. A read
    /// the admin may not have is refused as before, without taking a turn.
    /// </summary>
    [Fact]
    public async Task HeavyReads_BeyondTheLimit_WaitTheirTurn_AndBeyondTheQueue_Are429Busy()
    {
        await using var g = await StartAsync(more: doc => doc with { Gateway = doc.Gateway with { MaxConcurrentReports = 1 } });
        var gate = g.Gateway.AdminReads;
        var held = await gate.EnterAsync(1, CancellationToken.None); // a report being built
        Assert.True(held.IsAcquired);

        var waiting = Enumerable.Range(0, Custos.Gateway.Admin.AdminReadGate.QueueLimit)
            .Select(i => AdminAsync(g, "root", HttpMethod.Get, i % 2 == 0 ? "/admin/v1/overview?window=1h" : "/admin/v1/reports/incident?subject=consumer&id=web&format=json"))
            .ToList();
        Assert.True(SpinWait.SpinUntil(() => gate.Queued == Custos.Gateway.Admin.AdminReadGate.QueueLimit, TimeSpan.FromSeconds(20)), $"{gate.Queued} queued");
        Assert.DoesNotContain(waiting, t => t.IsCompleted);

        using (var busy = await AdminAsync(g, "root", HttpMethod.Get, "/admin/v1/reports/posture"))
        {
            Assert.Equal(HttpStatusCode.TooManyRequests, busy.StatusCode);
            Assert.Equal(TimeSpan.FromSeconds(Custos.Gateway.Admin.AdminReadGate.RetryAfterSeconds), busy.Headers.RetryAfter?.Delta);
            using var problem = await JsonDocument.ParseAsync(await busy.Content.ReadAsStreamAsync());
            Assert.Equal("admin.busy", problem.RootElement.GetProperty("code").GetString());
            Assert.StartsWith("req_", problem.RootElement.GetProperty("request_id").GetString(), StringComparison.Ordinal);
        }

        // A refused attempt is on record, under the policy version that set the limit.
        var refused = Assert.Single(await AdminEntriesAsync(g), e => e.GetProperty("action").GetString() == "report.posture_denied");
        Assert.Equal("root", refused.GetProperty("actor").GetString());
        Assert.StartsWith("busy: this node is building 1 overview(s) or report(s)", refused.GetProperty("reason").GetString(), StringComparison.Ordinal);
        Assert.Equal(g.Gateway.Policy.Current.Version, refused.GetProperty("policy_version").GetInt64());

        using (var forbidden = await AdminAsync(g, "finance", HttpMethod.Get, "/admin/v1/reports/posture"))
        {
            Assert.Equal(HttpStatusCode.Forbidden, forbidden.StatusCode);
        }

        held.Dispose();
        foreach (var response in await Task.WhenAll(waiting))
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            response.Dispose();
        }

        Assert.Equal(0, gate.Queued);
    }

    [Fact]
    public async Task ConsumersAndServices_UnderAKillSwitch_AreSuspended_NamingWhich_WithNoModelsNow()
    {
        // A tenant's kill switch refuses every request of its services' consumers: they read "active", with models, before.
        await using var g = await StartAsync();
        await JsonAsync(await AdminAsync(g, "root", HttpMethod.Post, "/admin/v1/kill-switches", new { scope = "tenant", id = "globex", engaged = true, reason = "x" }));
        await JsonAsync(await AdminAsync(g, "root", HttpMethod.Post, "/admin/v1/kill-switches", new { scope = "service", id = "agents", engaged = true, reason = "x" }));
        await JsonAsync(await AdminAsync(g, "root", HttpMethod.Post, "/admin/v1/kill-switches", new { scope = "consumer", id = "web", engaged = true, reason = "x" }));
        Assert.Equal("deny.tenant_suspended", (await ChatAsync(g, g.KeyOf("globex-user"), "globex-only")).Code);

        var consumers = (await JsonAsync(await AdminAsync(g, "root", HttpMethod.Get, "/admin/v1/consumers"))).EnumerateArray()
            .ToDictionary(c => c.GetProperty("id").GetString()!);
        static string? By(JsonElement e) => e.GetProperty("suspended_by").GetString();
        foreach (var (id, by) in new[] { ("globex-user", "tenant"), ("agent", "service"), ("web", "consumer") })
        {
            Assert.True(consumers[id].GetProperty("suspended").GetBoolean(), id);
            Assert.Equal(by, By(consumers[id]));
            Assert.Equal(0, consumers[id].GetProperty("models").GetArrayLength());
        }

        Assert.False(consumers["expired-user"].GetProperty("suspended").GetBoolean());
        Assert.Null(By(consumers["expired-user"]));
        Assert.NotEqual(0, consumers["expired-user"].GetProperty("models").GetArrayLength());

        var services = (await JsonAsync(await AdminAsync(g, "finance", HttpMethod.Get, "/admin/v1/services"))).EnumerateArray()
            .ToDictionary(s => s.GetProperty("id").GetString()!);
        Assert.Equal("service", By(services["agents"]));
        Assert.False(services["support"].GetProperty("suspended").GetBoolean());
        var globex = await JsonAsync(await AdminAsync(g, "root", HttpMethod.Get, "/admin/v1/services/globex-app"));
        Assert.True(globex.GetProperty("suspended").GetBoolean());
        Assert.Equal("tenant", By(globex));
    }

    [Fact]
    public async Task PolicyDiff_ShowsWhatChangedBetweenAnyTwoVersions()
    {
        await using var g = await StartAsync();
        var first = g.Gateway.Policy.Current.Info.Number;
        var change = await JsonAsync(await AdminAsync(g, "finance", HttpMethod.Put, "/admin/v1/budgets",
            new { scope = "service", id = "support", budget = new { amount = 75, period = "month" }, reason = "Q4 plan" }));
        var second = change.GetProperty("policy_version").GetInt64();
        Assert.Equal(first + 1, second);

        var diff = await JsonAsync(await AdminAsync(g, "auditor", HttpMethod.Get, $"/admin/v1/policy/diff?from={first}&to={second}"));
        Assert.Equal(first, diff.GetProperty("from").GetProperty("version").GetInt64());
        Assert.Equal("finance", diff.GetProperty("to").GetProperty("author").GetString());
        Assert.Contains(diff.GetProperty("changes").EnumerateArray(), c => c.GetString()!.Contains("budget", StringComparison.Ordinal));
        var lines = diff.GetProperty("lines").EnumerateArray().ToList();
        Assert.Contains(lines, l => l.GetProperty("kind").GetString() == "added" && l.GetProperty("text").GetString()!.Contains("75", StringComparison.Ordinal));
        Assert.DoesNotContain(lines, l => l.GetProperty("kind").GetString() == "removed" && l.GetProperty("text").GetString()!.Contains("75", StringComparison.Ordinal));
        Assert.Contains(lines, l => l.GetProperty("kind").GetString() == "same");

        // The same pair the other way round: what was added is now removed.
        var back = await JsonAsync(await AdminAsync(g, "auditor", HttpMethod.Get, $"/admin/v1/policy/diff?from={second}&to={first}"));
        Assert.Contains(back.GetProperty("lines").EnumerateArray(), l => l.GetProperty("kind").GetString() == "removed" && l.GetProperty("text").GetString()!.Contains("75", StringComparison.Ordinal));

        var version = await JsonAsync(await AdminAsync(g, "prompts", HttpMethod.Get, $"/admin/v1/policy/versions/{second}"));
        Assert.Equal("Q4 plan", version.GetProperty("version").GetProperty("reason").GetString());
        Assert.Contains("75", version.GetProperty("yaml").GetString(), StringComparison.Ordinal);
        Assert.NotEmpty(version.GetProperty("changes").EnumerateArray());

        using var missing = await AdminAsync(g, "root", HttpMethod.Get, "/admin/v1/policy/diff?from=1&to=999");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
    }

    [Fact]
    public async Task PolicyVersions_ToATenantScopedAdmin_ShowWhoAndWhyOnlyOfChangesInItsScope()
    {
        await using var g = await StartAsync();
        var acme = await JsonAsync(await AdminAsync(g, "root", HttpMethod.Post, "/admin/v1/credentials/cred-web/suspend",
            new { reason = "ACME SECRET: investigating fraud" }));
        var acmeVersion = acme.GetProperty("policy_version").GetInt64();
        var globex = await JsonAsync(await AdminAsync(g, "globex-owner", HttpMethod.Post, "/admin/v1/credentials/cred-globex/suspend",
            new { reason = "globex rotation drill" }));
        var globexVersion = globex.GetProperty("policy_version").GetInt64();

        // The list, one version, a diff and the policy in force: acme's change shows its number and hash, not who or why.
        var list = (await JsonAsync(await AdminAsync(g, "globex-owner", HttpMethod.Get, "/admin/v1/policy/versions"))).EnumerateArray().ToList();
        var hidden = list.Single(v => v.GetProperty("version").GetInt64() == acmeVersion);
        Assert.Equal(JsonValueKind.Null, hidden.GetProperty("author").ValueKind);
        Assert.Equal(JsonValueKind.Null, hidden.GetProperty("reason").ValueKind);
        Assert.Equal(64, hidden.GetProperty("sha256").GetString()!.Length);
        var own = list.Single(v => v.GetProperty("version").GetInt64() == globexVersion);
        Assert.Equal("globex rotation drill", own.GetProperty("reason").GetString());
        Assert.Equal("globex-owner", own.GetProperty("author").GetString());
        Assert.NotNull(list.Single(v => v.GetProperty("version").GetInt64() == 1).GetProperty("author").GetString()); // the first version made everything
        using var one = await AdminAsync(g, "globex-owner", HttpMethod.Get, $"/admin/v1/policy/versions/{acmeVersion}");
        using var diff = await AdminAsync(g, "globex-owner", HttpMethod.Get, $"/admin/v1/policy/diff?from={acmeVersion - 1}&to={acmeVersion}");
        foreach (var response in new[] { one, diff })
        {
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            Assert.DoesNotContain("ACME SECRET", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        // A gateway-wide auditor, and acme's own finance admin, see acme's reason.
        foreach (var admin in new[] { "auditor", "finance" })
        {
            var version = await JsonAsync(await AdminAsync(g, admin, HttpMethod.Get, $"/admin/v1/policy/versions/{acmeVersion}"));
            Assert.Equal("ACME SECRET: investigating fraud", version.GetProperty("version").GetProperty("reason").GetString());
        }

        // The incident pack of tenant globex: globex's change in its timeline, acme's nowhere.
        using var pack = await AdminAsync(g, "globex-owner", HttpMethod.Get, "/admin/v1/reports/incident?subject=tenant&id=globex");
        var text = await pack.Content.ReadAsStringAsync();
        Assert.Equal(HttpStatusCode.OK, pack.StatusCode);
        Assert.Contains("globex rotation drill", text, StringComparison.Ordinal);
        Assert.DoesNotContain("ACME SECRET", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Reports_OverHttp_AreTheSamePacksAsTheCli_AndScoped()
    {
        await using var g = await StartAsync();
        await ChatAsync(g, g.KeyOf("web"));
        await ChatAsync(g, g.KeyOf("web"), "gpt-4o");
        await g.Gateway.Ledger.FlushAsync();

        var pack = await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Get, "/admin/v1/reports/incident?subject=consumer&id=web"));
        Assert.Equal("incident", pack.GetProperty("report").GetString());
        Assert.Equal(2, pack.GetProperty("summary").GetProperty("requests").GetInt32());
        Assert.Equal(1, pack.GetProperty("summary").GetProperty("denied").GetInt32());

        using var markdown = await AdminAsync(g, "auditor", HttpMethod.Get, "/admin/v1/reports/incident?subject=credential&id=cred-web&format=md");
        Assert.Equal(HttpStatusCode.OK, markdown.StatusCode);
        Assert.StartsWith("text/markdown", markdown.Content.Headers.ContentType!.ToString(), StringComparison.Ordinal);
        Assert.StartsWith("# ", await markdown.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Contains("incident-credential-cred-web-", markdown.Content.Headers.ContentDisposition!.FileName, StringComparison.Ordinal);

        // Out of scope, and not a subject at all.
        using var outside = await AdminAsync(g, "globex-owner", HttpMethod.Get, "/admin/v1/reports/incident?subject=consumer&id=web");
        Assert.Equal(HttpStatusCode.Forbidden, outside.StatusCode);
        using var unknown = await AdminAsync(g, "root", HttpMethod.Get, "/admin/v1/reports/incident?subject=consumer&id=nobody");
        Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
        using var badFormat = await AdminAsync(g, "root", HttpMethod.Get, "/admin/v1/reports/incident?subject=consumer&id=web&format=pdf");
        Assert.Equal(HttpStatusCode.BadRequest, badFormat.StatusCode);

        // The posture report is gateway-wide: a scoped service owner may read incident packs but not it.
        var posture = await JsonAsync(await AdminAsync(g, "auditor", HttpMethod.Get, "/admin/v1/reports/posture"));
        Assert.Equal("posture", posture.GetProperty("report").GetString());
        Assert.NotEmpty(posture.GetProperty("controls").EnumerateArray());
        using var scoped = await AdminAsync(g, "support-owner", HttpMethod.Get, "/admin/v1/reports/posture");
        Assert.Equal(HttpStatusCode.Forbidden, scoped.StatusCode);
    }

    [Fact]
    public async Task PostureReport_IsForPlatformAdminsAndAuditors_NotAGatewayWideServiceOwner()
    {
        // A service owner scoped to nothing reads incident packs of every subject, but the posture report is not its role's.
        await using var g = await TestGateway.StartAsync((test, policy) =>
        {
            var document = Customize(test, policy);
            return document with
            {
                Admins = [.. document.Admins, new Custos.Policy.AdminConfig
                {
                    Id = "ops-owner", Role = Custos.Policy.AdminRole.ServiceOwner, KeySha256 = test.IssueKey("ops-owner", Custos.Identity.ApiKeyKind.Admin),
                }],
            };
        });

        using var posture = await AdminAsync(g, "ops-owner", HttpMethod.Get, "/admin/v1/reports/posture");
        using var pack = await AdminAsync(g, "ops-owner", HttpMethod.Get, "/admin/v1/reports/incident?subject=consumer&id=web");
        var owner = await JsonAsync(await AdminAsync(g, "ops-owner", HttpMethod.Get, "/admin/v1/whoami"));
        var auditor = await JsonAsync(await AdminAsync(g, "auditor", HttpMethod.Get, "/admin/v1/whoami"));

        Assert.Equal(HttpStatusCode.Forbidden, posture.StatusCode);
        Assert.Equal("admin.forbidden", JsonDocument.Parse(await posture.Content.ReadAsStringAsync()).RootElement.GetProperty("code").GetString());
        Assert.Contains(await AdminEntriesAsync(g), e => e.GetProperty("action").GetString() == "report.posture_denied" && e.GetProperty("actor").GetString() == "ops-owner");
        Assert.Equal(HttpStatusCode.OK, pack.StatusCode);
        var permissions = owner.GetProperty("permissions").EnumerateArray().Select(p => p.GetString()).ToList();
        Assert.Contains("read_reports", permissions);
        Assert.DoesNotContain("read_posture", permissions); // the console shows the posture button only with it
        Assert.Contains("read_posture", auditor.GetProperty("permissions").EnumerateArray().Select(p => p.GetString()));
    }

    [Fact]
    public async Task Console_IsServedOnTheAdminListener_WithStrictHeaders_AndWhoAmINamesPermissions()
    {
        await using var g = await StartAsync();
        using var http = new HttpClient(new HttpClientHandler { AllowAutoRedirect = false }) { BaseAddress = g.Gateway.AdminUri };
        using var root = await http.GetAsync("/");
        Assert.Equal(HttpStatusCode.Redirect, root.StatusCode);
        Assert.Equal("/console/", root.Headers.Location!.OriginalString);

        using var page = await http.GetAsync("/console/");
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.Contains("script-src 'self'", page.Headers.GetValues("Content-Security-Policy").Single(), StringComparison.Ordinal);
        Assert.Equal("DENY", page.Headers.GetValues("X-Frame-Options").Single());
        Assert.Contains("app.js", await page.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        using var script = await http.GetAsync("/console/app.js");
        Assert.Equal("text/javascript", script.Content.Headers.ContentType!.MediaType);
        using var chart = await http.GetAsync("/console/lib/chart.umd.min.js");
        Assert.Equal(HttpStatusCode.OK, chart.StatusCode);
        using var none = await http.GetAsync("/console/nope.js");
        Assert.Equal(HttpStatusCode.NotFound, none.StatusCode);

        // The data plane does not serve it.
        using var dataPlane = await g.Client.GetAsync("/console/");
        Assert.NotEqual(HttpStatusCode.OK, dataPlane.StatusCode);

        var auditor = await JsonAsync(await AdminAsync(g, "auditor", HttpMethod.Get, "/admin/v1/whoami"));
        var permissions = auditor.GetProperty("permissions").EnumerateArray().Select(p => p.GetString()).ToList();
        Assert.Contains("read_ledger", permissions);
        Assert.Contains("read_reports", permissions);
        Assert.DoesNotContain("manage_credentials", permissions);
    }
}
