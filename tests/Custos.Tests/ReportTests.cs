using System.Net;
using System.Text.Json;
using Custos.Alerts;
using Custos.ControlPlane;
using Custos.Ledger;
using Custos.Policy;
using Custos.Reports;

namespace Custos.Tests;

/// <summary>
/// <c>custos report incident|posture</c> over real gateways: three staged incidents (misuse, misconfiguration, missing
/// governance), each classified correctly with its evidence in the pack; the formats; and the posture of a known policy.
/// </summary>
public sealed class ReportTests
{
    private static readonly DateTimeOffset Epoch = DateTimeOffset.UtcNow;

    private static string Iso(DateTimeOffset time) => time.UtcDateTime.ToString("yyyy-MM-ddTHH:mm:ss.fffffffZ", System.Globalization.CultureInfo.InvariantCulture);

    private static IEnumerable<JsonElement> Findings(JsonElement pack, string cls)
        => pack.GetProperty("findings").EnumerateArray().Where(f => f.GetProperty("class").GetString() == cls);

    private static int Score(JsonElement pack, string cls)
        => pack.GetProperty("classification").GetProperty("ranking").EnumerateArray().Single(r => r.GetProperty("class").GetString() == cls).GetProperty("score").GetInt32();

    private static JsonElement Finding(JsonElement pack, string code)
        => pack.GetProperty("findings").EnumerateArray().Single(f => f.GetProperty("code").GetString() == code);

    private static List<string> Refs(JsonElement finding, string kind)
        => [.. finding.GetProperty("evidence").EnumerateArray().Where(e => e.GetProperty("kind").GetString() == kind).Select(e => e.GetProperty("ref").GetString()!)];

    /// <summary>A consumer with every control set, entitled through an approved access request, then a burst.</summary>
    private static Task<ReportGateway> MisuseGatewayAsync() => ReportGateway.StartAsync("misuse", (g, upstream) => new PolicyDocument
    {
        Tenants = [ReportGateway.AcmeTenant(upstream, new LimitsConfig { Budget = new BudgetConfig { Amount = 1000m } })],
        Services =
        [
            new ServiceConfig
            {
                Id = "chat-app",
                Tenant = ReportGateway.Tenant,
                Description = "Customer chat",
                Owners = ReportGateway.FullOwners("chat-app"),
                Models = ["gpt-4o-mini", "gpt-4o"],
                Limits = new LimitsConfig { Budget = new BudgetConfig { Amount = 100m } },
                PromptRules = [new PromptRuleConfig { Id = "no-secrets", Detector = PromptDetector.Secrets, Action = PromptAction.Deny }],
            },
        ],
        Consumers =
        [
            new ConsumerConfig
            {
                Id = "web-bot",
                Service = "chat-app",
                Category = ConsumerCategory.External,
                Limits = new LimitsConfig
                {
                    RequestsPerMinute = 5, TokensPerMinute = 100_000, RequestsPerDay = 1000, MaxInputTokens = 4000, MaxOutputTokens = 256, MaxN = 1,
                    Budget = new BudgetConfig { Amount = 10m },
                },
            },
        ],
        Credentials = [new CredentialConfig { Id = "cred-web-bot", Consumer = "web-bot", KeySha256 = g.Key("web-bot"), ExpiresAt = Epoch.AddDays(30), Prefix = "csk_webbot" }],
        Admins = g.Admins(),
    });

    /// <summary>Asks for <paramref name="models"/> as root and approves as the policy owner: ar-1.</summary>
    private static async Task ApproveAccessAsync(ReportGateway g, string consumer, params string[] models)
    {
        var created = await g.AdminAsync("root", HttpMethod.Post, "/access-requests", new { consumer, models, justification = "the product launch needs it" });
        Assert.Equal("ar-1", created.GetProperty("id").GetString());
        await g.AdminAsync("owner-admin", HttpMethod.Post, "/access-requests/ar-1/approve", new { reason = "ticket OPS-7" });
    }

    /// <summary>The incident input of <paramref name="subject"/> over the hour from <paramref name="t0"/>, its chain not checked.</summary>
    private static IncidentInput HourFrom(DateTimeOffset t0, IncidentSubject subject, IReadOnlyList<PolicyVersion> history, IncidentWindow window) => new()
    {
        Subject = subject,
        From = t0,
        To = t0.AddHours(1),
        GeneratedAt = t0.AddHours(2),
        History = history,
        Window = window,
        Baseline = new BaselineStats(t0.AddHours(-1), t0),
        Chain = ChainCheck.NotRun("test"),
    };

    [Fact]
    public async Task Incident_MisuseBurst_ClassifiedMisuseWithRequestIdsAndReasonCounts()
    {
        await using var g = await MisuseGatewayAsync();
        var from = DateTimeOffset.UtcNow.AddSeconds(-1);
        await ApproveAccessAsync(g, "web-bot", "gpt-4o-mini");

        // A burst well beyond 5 requests per minute, and one prompt carrying a cloud key.
        var results = new List<(HttpStatusCode Status, string RequestId)>();
        for (var i = 0; i < 16; i++)
        {
            results.Add(await g.ChatAsync("web-bot"));
        }

        var secret = await g.ChatAsync("web-bot", text: "deploy with AKIAIOSFODNN7EXAMPLE please");
        Assert.Equal(HttpStatusCode.BadRequest, secret.Status);
        var throttled = results.Where(r => r.Status == HttpStatusCode.TooManyRequests).Select(r => r.RequestId).ToList();
        Assert.True(throttled.Count >= 6, $"expected the burst to be throttled, got {throttled.Count} 429s");
        Assert.Equal(16, throttled.Count + results.Count(r => r.Status == HttpStatusCode.OK));
        await g.StopAsync();

        var json = await g.ReportAsync("misuse.json", "report", "incident", "--consumer", "web-bot", "--from", Iso(from), "--to", Iso(DateTimeOffset.UtcNow.AddSeconds(1)), "--format", "json");
        var pack = JsonDocument.Parse(json).RootElement;

        // Classified misuse first, and only misuse: the controls were all set and the access approved.
        Assert.Equal("misuse", pack.GetProperty("classification").GetProperty("primary").GetString());
        Assert.Equal("misuse", pack.GetProperty("findings")[0].GetProperty("class").GetString());
        Assert.Equal(0, Score(pack, "misconfiguration"));
        Assert.Equal(0, Score(pack, "missing_governance"));

        // The evidence: the reason count matches what the client saw, and names the throttled requests.
        var limits = Finding(pack, "limit_refusals");
        Assert.Equal("high", limits.GetProperty("severity").GetString());
        var count = limits.GetProperty("evidence").EnumerateArray().Single(e => e.GetProperty("ref").GetString() == "throttle.rate_limit").GetProperty("detail").GetString();
        Assert.Equal($"{throttled.Count} request(s)", count);
        Assert.Equal(throttled.Take(10), Refs(limits, "request").Take(10));
        Assert.Contains("rate_limit.requests of consumer:web-bot (limit 5)", limits.GetProperty("detail").GetString(), StringComparison.Ordinal);
        var prompt = Finding(pack, "prompt_restrictions_hit");
        Assert.Equal([secret.RequestId], Refs(prompt, "request"));

        // The rest of the pack backs it up.
        Assert.Equal(17, pack.GetProperty("summary").GetProperty("requests").GetInt32());
        Assert.Equal(throttled.Count, pack.GetProperty("summary").GetProperty("reasons").GetProperty("throttle.rate_limit").GetInt32());
        var entitlement = pack.GetProperty("entitlements").EnumerateArray().Single(e => e.GetProperty("source").GetString() == "entitlement");
        Assert.Equal("owner-admin", entitlement.GetProperty("approved_by").GetString());
        Assert.Equal("ar-1", entitlement.GetProperty("access_request").GetProperty("id").GetString());
        Assert.Equal("root", entitlement.GetProperty("access_request").GetProperty("requested_by").GetString());
        Assert.Equal("verified", pack.GetProperty("chain").GetProperty("status").GetString());
        Assert.Contains("misuse", pack.GetProperty("classification").GetProperty("explanation").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Incident_MisuseJsonAndHtml_JsonHasEverySectionAndHtmlIsOneFileWithSvgChart()
    {
        await using var g = await MisuseGatewayAsync();
        var from = DateTimeOffset.UtcNow.AddSeconds(-1);
        await ApproveAccessAsync(g, "web-bot", "gpt-4o-mini");
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(HttpStatusCode.OK, (await g.ChatAsync("web-bot")).Status);
        }

        await g.AdminAsync("owner-admin", HttpMethod.Post, "/credentials/cred-web-bot/suspend", new { reason = "odd traffic" });
        Assert.Equal(HttpStatusCode.Unauthorized, (await g.ChatAsync("web-bot")).Status);
        await g.StopAsync();
        string[] args = ["report", "incident", "--credential", "cred-web-bot", "--from", Iso(from), "--to", Iso(DateTimeOffset.UtcNow.AddSeconds(1))];

        var pack = JsonDocument.Parse(await g.ReportAsync("pack.json", [.. args, "--format", "json"])).RootElement;
        foreach (var section in new[] { "subject", "scope", "summary", "classification", "findings", "timeline", "policy_versions", "controls_observed", "entitlements",
            "access_requests", "credentials", "spend", "alerts", "notifications", "interventions", "owners", "chain", "baseline" })
        {
            Assert.True(pack.TryGetProperty(section, out _), $"section {section} is missing");
        }

        Assert.Equal("credential", pack.GetProperty("subject").GetProperty("kind").GetString());
        var alerts = pack.GetProperty("alerts");
        Assert.Equal(("configured", 1), (alerts.GetProperty("status").GetString(), alerts.GetProperty("count").GetInt32()));
        var firstUse = alerts.GetProperty("alerts").EnumerateArray().Single();
        Assert.Equal(("al-1", "model.first_use", "cred-web-bot"), (firstUse.GetProperty("id").GetString(), firstUse.GetProperty("type").GetString(),
            firstUse.GetProperty("credential_id").GetString()));
        Assert.Equal(["web-bot"], pack.GetProperty("scope").GetProperty("consumers").EnumerateArray().Select(e => e.GetString()));
        var credential = pack.GetProperty("credentials").EnumerateArray().Single();
        Assert.Equal("suspended", credential.GetProperty("status_at_end").GetString());
        Assert.Contains(credential.GetProperty("history").EnumerateArray(), h => h.GetProperty("action").GetString() == "credential.suspended"
            && h.GetProperty("actor").GetString() == "owner-admin" && h.GetProperty("reason").GetString() == "odd traffic");
        Assert.Equal(1, pack.GetProperty("interventions").GetProperty("refusals").GetProperty("deny.credential_suspended").GetInt32());
        Assert.Contains(pack.GetProperty("notifications").EnumerateArray(), n => n.GetProperty("event").GetString() == "credential.suspended"
            && n.GetProperty("role").GetString() == "technical");
        var controls = pack.GetProperty("policy_versions").EnumerateArray().Last().GetProperty("controls")[0].GetProperty("active").EnumerateArray()
            .Select(c => c.GetProperty("control").GetString() + "@" + c.GetProperty("scope").GetString()).ToList();
        Assert.Contains("budget@consumer:web-bot", controls);
        Assert.Contains("token_ceiling.output@consumer:web-bot", controls);
        Assert.Contains("prompt_restriction@service:chat-app", controls);
        Assert.Contains("tenant_isolation@tenant:acme", controls);
        var owners = pack.GetProperty("owners").GetProperty("contacts").EnumerateArray().ToList();
        Assert.Equal("chat-app-oncall@acme.example", owners.Single(o => o.GetProperty("role").GetString() == "technical").GetProperty("email").GetString());
        var spend = pack.GetProperty("spend");
        Assert.Equal("consumer:web-bot", spend.GetProperty("chart").GetProperty("budget_scope").GetString());
        Assert.Equal(10m, spend.GetProperty("chart").GetProperty("budget_amount").GetDecimal());
        Assert.Equal(spend.GetProperty("total").GetDecimal(), spend.GetProperty("chart").GetProperty("points").EnumerateArray().Last().GetProperty("cumulative").GetDecimal());
        Assert.True(spend.GetProperty("total").GetDecimal() > 0m);

        var html = await g.ReportAsync("pack.html", [.. args, "--format", "html"]);
        Assert.StartsWith("<!DOCTYPE html>", html, StringComparison.Ordinal);
        Assert.Contains("<style>", html, StringComparison.Ordinal);
        Assert.Equal(1, html.Split("<svg").Length - 1);
        Assert.Contains("budget 10.00 USD per month (consumer:web-bot)", html, StringComparison.Ordinal);
        Assert.DoesNotContain("src=", html, StringComparison.Ordinal);
        Assert.DoesNotContain("<script", html, StringComparison.Ordinal);
        Assert.DoesNotContain("<link", html, StringComparison.Ordinal);
        Assert.DoesNotContain("href=\"http", html, StringComparison.Ordinal);
        Assert.Contains("<code>al-1</code>", html, StringComparison.Ordinal);

        var md = await g.ReportAsync("pack.md", [.. args]);
        Assert.StartsWith("# Incident evidence pack: credential cred-web-bot", md, StringComparison.Ordinal);
        Assert.Contains("## Owners to contact", md, StringComparison.Ordinal);
        Assert.Contains("| chat-app | technical | Tec On-call | chat-app-oncall@acme.example |", md, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Incident_SuspendedKeyKeepsKnocking_AlertsListedWithIdTypeRecipientsAndLedgerEntries()
    {
        await using var g = await MisuseGatewayAsync();
        var from = DateTimeOffset.UtcNow.AddSeconds(-1);
        await ApproveAccessAsync(g, "web-bot", "gpt-4o-mini");

        // The first allowed request of a model raises model.first_use; after the owner suspends the key, its holder keeps
        // trying: the 20th refusal within a minute from one address raises auth.failures.
        Assert.Equal(HttpStatusCode.OK, (await g.ChatAsync("web-bot")).Status);
        await g.AdminAsync("owner-admin", HttpMethod.Post, "/credentials/cred-web-bot/suspend", new { reason = "key seen in a public repository" });
        for (var i = 0; i < 20; i++)
        {
            Assert.Equal(HttpStatusCode.Unauthorized, (await g.ChatAsync("web-bot")).Status);
        }

        await g.StopAsync();
        string[] args = ["report", "incident", "--credential", "cred-web-bot", "--from", Iso(from), "--to", Iso(DateTimeOffset.UtcNow.AddSeconds(1))];
        var pack = JsonDocument.Parse(await g.ReportAsync("alerts.json", [.. args, "--format", "json"])).RootElement;

        var section = pack.GetProperty("alerts");
        Assert.Equal(("configured", 2), (section.GetProperty("status").GetString(), section.GetProperty("count").GetInt32()));
        Assert.Contains("8 of 8 detectors run under v", section.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Contains("no security contact is named (alerts.security), so escalations reach nobody in security", section.GetProperty("detail").GetString(), StringComparison.Ordinal);
        var alerts = section.GetProperty("alerts").EnumerateArray().ToList();
        Assert.Equal([("al-1", "model.first_use", "info"), ("al-2", "auth.failures", "critical")],
            alerts.Select(a => (a.GetProperty("id").GetString(), a.GetProperty("type").GetString(), a.GetProperty("severity").GetString())));
        Assert.Equal(["Pat Policy (policy)"], alerts[0].GetProperty("recipients").EnumerateArray().Select(r => r.GetString()));
        var burst = alerts[1];
        Assert.Equal("open", burst.GetProperty("status").GetString());
        Assert.Equal(["Tec On-call (technical)"], burst.GetProperty("recipients").EnumerateArray().Select(r => r.GetString()));
        Assert.StartsWith("20 failed authentications from ", burst.GetProperty("summary").GetString(), StringComparison.Ordinal);
        Assert.Contains("deny.credential_suspended", burst.GetProperty("evidence").GetProperty("reasons").GetString(), StringComparison.Ordinal);
        Assert.Equal(JsonValueKind.Null, burst.GetProperty("acknowledged_by").ValueKind);

        // Each alert is a ledger entry of the timeline; its deliveries are among the owner notifications, naming it.
        var raised = pack.GetProperty("timeline").GetProperty("events").EnumerateArray().Where(e => e.GetProperty("decision").GetString() == "alert.raised").ToList();
        Assert.Equal(["custos:alerts", "custos:alerts"], raised.Select(e => e.GetProperty("who").GetString()));
        Assert.Contains(pack.GetProperty("notifications").EnumerateArray(), n => n.GetProperty("event").GetString() == "alert.raised"
            && n.GetProperty("target").GetString() == "al-2" && n.GetProperty("role").GetString() == "technical");
        Assert.Equal("medium", Finding(pack, "stopped_credential_presented").GetProperty("severity").GetString());

        var md = await g.ReportAsync("alerts.md", [.. args]);
        Assert.Contains("> **2 alerts.**", md, StringComparison.Ordinal);
        Assert.Contains("| `al-2` | `auth.failures` | critical |", md, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Incident_Misconfiguration_NoCeilingBudgetAboveServiceBroaderEntitlement_ClassifiedMisconfiguration()
    {
        await using var g = await ReportGateway.StartAsync("misconfig", (g, upstream) => new PolicyDocument
        {
            Tenants = [ReportGateway.AcmeTenant(upstream)],
            Services =
            [
                new ServiceConfig
                {
                    Id = "docs-app", Tenant = ReportGateway.Tenant, Description = "Internal documentation helper", Owners = ReportGateway.FullOwners("docs-app"),
                    Limits = new LimitsConfig { Budget = new BudgetConfig { Amount = 20m } },
                },
            ],
            Consumers =
            [
                new ConsumerConfig
                {
                    Id = "docs-writer", Service = "docs-app", Category = ConsumerCategory.Internal,
                    Limits = new LimitsConfig { RequestsPerMinute = 100, Budget = new BudgetConfig { Amount = 5m } },
                },
            ],
            Credentials = [new CredentialConfig { Id = "cred-docs", Consumer = "docs-writer", KeySha256 = g.Key("docs-writer"), ExpiresAt = Epoch.AddDays(30) }],
            Admins = g.Admins(),
        });
        var from = DateTimeOffset.UtcNow.AddSeconds(-1);
        await ApproveAccessAsync(g, "docs-writer", "gpt-4o-mini");

        // Finance raises the consumer's budget above the whole service's; an admin widens the approved entitlement by hand.
        await g.AdminAsync("finance", HttpMethod.Put, "/budgets",
            new { scope = "consumer", id = "docs-writer", budget = new { amount = 500, period = "month", mode = "hard" }, reason = "quarter-end push" });
        var widened = g.Gateway.Policy.Current.Document;
        widened = widened with
        {
            Consumers = [.. widened.Consumers.Select(c => c with { Entitlements = [.. c.Entitlements.Select(e => e with { Models = [.. e.Models, "gpt-4o"] })] })],
        };
        var applied = await g.AdminAsync("root", HttpMethod.Post, "/policy/versions", new { yaml = PolicyYamlWriter.Write(widened), reason = "also the big model" });
        var widenedVersion = applied.GetProperty("version").GetProperty("version").GetInt64();

        Assert.Equal(HttpStatusCode.OK, (await g.ChatAsync("docs-writer", maxTokens: 2000)).Status);
        var big = new[] { await g.ChatAsync("docs-writer", "gpt-4o", maxTokens: null), await g.ChatAsync("docs-writer", "gpt-4o", maxTokens: 3000) };
        Assert.All(big, b => Assert.Equal(HttpStatusCode.OK, b.Status));
        await g.StopAsync();

        var pack = JsonDocument.Parse(await g.ReportAsync("misconfig.json", "report", "incident", "--consumer", "docs-writer", "--from", Iso(from),
            "--to", Iso(DateTimeOffset.UtcNow.AddSeconds(1)), "--format", "json")).RootElement;

        Assert.Equal("misconfiguration", pack.GetProperty("classification").GetProperty("primary").GetString());
        Assert.Equal(0, Score(pack, "misuse"));
        Assert.Equal(0, Score(pack, "missing_governance"));
        Assert.Equal(["consumer_budget_above_service", "entitlement_broader_than_requested", "no_output_ceiling"],
            Findings(pack, "misconfiguration").Select(f => f.GetProperty("code").GetString()).Order(StringComparer.Ordinal));

        var broader = Finding(pack, "entitlement_broader_than_requested");
        Assert.Contains("models gpt-4o were never requested", broader.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(["ar-1"], Refs(broader, "access_request"));
        Assert.Contains($"v{widenedVersion}", Refs(broader, "policy_version"));
        Assert.Equal(big.Select(b => b.RequestId), Refs(broader, "request"));

        var budget = Finding(pack, "consumer_budget_above_service");
        Assert.Contains("500 USD per month (hard), more than service 'docs-app' as a whole (20 USD per month (hard))", budget.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Contains(budget.GetProperty("evidence").EnumerateArray(), e => e.GetProperty("kind").GetString() == "ledger_entry"
            && e.GetProperty("detail").GetString()!.Contains("budget.set by finance: 5 per month (hard) -> 500 per month (hard); reason: quarter-end push", StringComparison.Ordinal));

        var ceiling = Finding(pack, "no_output_ceiling");
        Assert.Contains(Refs(ceiling, "request"), r => big.Any(b => b.RequestId == r));
        Assert.Contains(pack.GetProperty("policy_versions").EnumerateArray().Last().GetProperty("controls")[0].GetProperty("not_set").EnumerateArray(),
            c => c.GetString() == "token_ceiling.output");
    }

    [Fact]
    public async Task Incident_MissingGovernance_OwnerUnfilledAndNoBudget_ClassifiedMissingGovernance()
    {
        await using var g = await ReportGateway.StartAsync("governance", (g, upstream) => new PolicyDocument
        {
            Tenants = [ReportGateway.AcmeTenant(upstream)],
            Services =
            [
                new ServiceConfig
                {
                    Id = "labs", Tenant = ReportGateway.Tenant, Description = "Experiments",
                    Owners = new ServiceOwners
                    {
                        Policy = new OwnerConfig { Name = "Lab lead", Email = "labs@acme.example" },
                        Billing = new OwnerConfig { Name = "Lab lead", Email = "labs@acme.example" },
                    },
                },
            ],
            Consumers =
            [
                new ConsumerConfig
                {
                    Id = "lab-script", Service = "labs", Category = ConsumerCategory.Automation, Models = ["gpt-4o-mini"],
                    Limits = new LimitsConfig { RequestsPerMinute = 100, MaxOutputTokens = 512 },
                },
            ],
            Credentials = [new CredentialConfig { Id = "cred-lab", Consumer = "lab-script", KeySha256 = g.Key("lab-script"), ExpiresAt = Epoch.AddDays(30) }],
            Admins = g.Admins(),
        });
        var from = DateTimeOffset.UtcNow.AddSeconds(-1);
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(HttpStatusCode.OK, (await g.ChatAsync("lab-script")).Status);
        }

        await g.StopAsync();
        var pack = JsonDocument.Parse(await g.ReportAsync("governance.json", "report", "incident", "--service", "labs", "--from", Iso(from),
            "--to", Iso(DateTimeOffset.UtcNow.AddSeconds(1)), "--format", "json")).RootElement;

        Assert.Equal("missing_governance", pack.GetProperty("classification").GetProperty("primary").GetString());
        Assert.Equal(0, Score(pack, "misuse"));
        Assert.Equal(0, Score(pack, "misconfiguration"));
        Assert.Equal(["no_budget", "owner_gap"], Findings(pack, "missing_governance").Select(f => f.GetProperty("code").GetString()).Order(StringComparer.Ordinal));
        var gap = Finding(pack, "owner_gap");
        Assert.Equal("service 'labs' has no technical owner", gap.GetProperty("title").GetString());
        Assert.Equal(["v1"], Refs(gap, "policy_version"));
        Assert.Contains("lab-script", Finding(pack, "no_budget").GetProperty("title").GetString(), StringComparison.Ordinal);
        var technical = pack.GetProperty("owners").GetProperty("contacts").EnumerateArray().Single(o => o.GetProperty("role").GetString() == "technical");
        Assert.Equal(JsonValueKind.Null, technical.GetProperty("name").ValueKind);
        Assert.Equal(3, pack.GetProperty("summary").GetProperty("allowed").GetInt32());

        var md = await g.ReportAsync("governance.md", "report", "incident", "--service", "labs", "--from", Iso(from), "--to", Iso(DateTimeOffset.UtcNow.AddSeconds(1)));
        Assert.Contains("> **MISSING GOVERNANCE**", md, StringComparison.Ordinal);
        Assert.Contains("| labs | technical | MISSING |", md, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Posture_KnownPolicy_ExpectedPassWarnFailWithItems()
    {
        await using var g = await ReportGateway.StartAsync("posture", (g, upstream) => new PolicyDocument
        {
            Tenants = [ReportGateway.AcmeTenant(upstream) with
            {
                PromptRules = [new PromptRuleConfig { Id = "no-secrets", Detector = PromptDetector.Secrets, Action = PromptAction.Deny }],
            }],
            Services =
            [
                new ServiceConfig
                {
                    Id = "good", Tenant = ReportGateway.Tenant, Description = "Well governed", Owners = ReportGateway.FullOwners("good"), Models = ["gpt-4o-mini"],
                    Limits = new LimitsConfig { Budget = new BudgetConfig { Amount = 50m } },
                },
                new ServiceConfig
                {
                    Id = "ungoverned", Tenant = ReportGateway.Tenant, Description = "Missing its billing owner", Models = ["gpt-4o-mini"],
                    Owners = ReportGateway.FullOwners("ungoverned") with { Billing = null },
                    Limits = new LimitsConfig { Budget = new BudgetConfig { Amount = 50m } },
                },
            ],
            Consumers =
            [
                new ConsumerConfig { Id = "good-web", Service = "good", Category = ConsumerCategory.External, Models = ["gpt-4o-mini"],
                    Limits = new LimitsConfig { RequestsPerMinute = 60, MaxOutputTokens = 512 } },
                new ConsumerConfig { Id = "other-web", Service = "ungoverned", Category = ConsumerCategory.External, Models = ["gpt-4o-mini"],
                    Limits = new LimitsConfig { RequestsPerMinute = 60, MaxOutputTokens = 512 } },
            ],
            Credentials =
            [
                new CredentialConfig { Id = "cred-expiring", Consumer = "good-web", KeySha256 = g.Key("good-web"), ExpiresAt = Epoch.AddDays(30) },
                new CredentialConfig { Id = "cred-forever", Consumer = "other-web", KeySha256 = g.Key("other-web") },
            ],
            Admins = g.Admins(),
        });
        Assert.Equal(HttpStatusCode.OK, (await g.ChatAsync("good-web")).Status);
        Assert.Equal(HttpStatusCode.OK, (await g.ChatAsync("other-web")).Status);
        await g.StopAsync();

        var json = await g.ReportAsync("posture.json", "report", "posture", "--format", "json");
        var report = JsonDocument.Parse(json).RootElement;
        var controls = report.GetProperty("controls").EnumerateArray().ToDictionary(c => c.GetProperty("id").GetString()!);
        Assert.Equal(23, controls.Count);
        (string Status, string Items) Of(string id)
            => (controls[id].GetProperty("status").GetString()!, string.Join("\n", controls[id].GetProperty("items").EnumerateArray()
                .Select(i => $"{i.GetProperty("status").GetString()} {i.GetProperty("subject").GetString()}: {i.GetProperty("detail").GetString()}")));

        Assert.Equal(("fail", "fail service:ungoverned: service 'ungoverned' has no billing owner"), Of("GV.RR-02"));
        Assert.Equal(("warn", "warn credential:cred-forever: API key of consumer 'other-web' has no expiry (expires_at not set)"), Of("PR.AA-01"));
        Assert.Equal("pass", Of("GV.OC-01").Status);
        Assert.Equal("pass", Of("GV.PO-01").Status);
        Assert.Equal("pass", Of("GV.PO-02").Status);
        Assert.Equal("pass", Of("RS.AN-07").Status);
        Assert.Equal("pass", Of("DE.CM-09").Status);
        // Every detector runs (the policy has no alerts section), but nobody in security is named for escalations.
        const string NoSecurity = "warn alerts.security: no security contact (alerts.security): escalations and authentication bursts no service owns reach nobody";
        Assert.Equal(("warn", NoSecurity), Of("DE.AE-02"));
        Assert.Contains("8 of 8 detectors run on every ledger entry", controls["DE.AE-02"].GetProperty("evidence").GetString(), StringComparison.Ordinal);
        Assert.Equal(("warn", NoSecurity), Of("GOVERN 1.5"));
        Assert.Equal(("warn", NoSecurity), Of("MANAGE 4.1"));
        Assert.Equal("warn", Of("PR.AA-05").Status); // shorthand entitlements record no approver
        Assert.Equal("fail", Of("GOVERN 2.1").Status);
        Assert.Equal("verified", report.GetProperty("chain").GetProperty("status").GetString());
        Assert.True(report.GetProperty("chain").GetProperty("checkpoints").GetInt32() >= 1);
        var summary = report.GetProperty("summary");
        Assert.Equal(23, summary.GetProperty("pass").GetInt32() + summary.GetProperty("warn").GetInt32() + summary.GetProperty("fail").GetInt32());

        var html = await g.ReportAsync("posture.html", "report", "posture", "--format", "html");
        Assert.Contains("GV.RR-02: FAIL", html, StringComparison.Ordinal);
        Assert.DoesNotContain("src=", html, StringComparison.Ordinal);
        var md = await g.ReportAsync("posture.md", "report", "posture");
        Assert.Contains("| `GV.RR-02` | NIST CSF 2.0 | FAIL | 1 |", md, StringComparison.Ordinal);
    }

    /// <summary>
    /// The CLI verifies the chain on a thread of its own while it reads the window (an incident pack over 743,441 requests
    /// 24.5 → 16–17 s): the same packs and posture as verifying after the reads, and a subject that names nothing still
    /// fails as before, with the verification started alongside stopped.
    /// </summary>
    [Fact]
    public async Task Reports_VerifiedAlongsideTheReads_AreTheSameAsVerifiedAfter()
    {
        await using var g = await MisuseGatewayAsync();
        var from = DateTimeOffset.UtcNow.AddSeconds(-1);
        for (var i = 0; i < 8; i++)
        {
            await g.ChatAsync("web-bot");
        }

        await g.StopAsync();
        var to = DateTimeOffset.UtcNow.AddSeconds(1);
        var now = to.AddMinutes(1);
        await using var store = await Custos.Storage.SqliteStore.OpenAsync(g.Directory);
        var lines = new List<string>();

        var after = await ReportSources.IncidentAsync(store, g.Directory, new IncidentSubject("consumer", "web-bot"), from, to, now, null, CancellationToken.None);
        var alongside = await ReportSources.IncidentAsync(store, g.Directory, new IncidentSubject("consumer", "web-bot"), from, to, now, lines.Add,
            CancellationToken.None, verifyAlongside: true);
        Assert.Equal("verified", after.Chain.Status);
        Assert.Equal(8, after.Summary.Requests);
        Assert.Equal(ReportWriter.Write(after, ReportFormat.Json), ReportWriter.Write(alongside, ReportFormat.Json));

        var posture = await ReportSources.PostureAsync(store, g.Directory, now, null, CancellationToken.None);
        var postureAlongside = await ReportSources.PostureAsync(store, g.Directory, now, lines.Add, CancellationToken.None, verifyAlongside: true);
        Assert.Equal(ReportWriter.Write(posture, ReportFormat.Json), ReportWriter.Write(postureAlongside, ReportFormat.Json));

        await Assert.ThrowsAsync<ReportSubjectNotFoundException>(() => ReportSources.IncidentAsync(store, g.Directory,
            new IncidentSubject("consumer", "nobody"), from, to, now, lines.Add, CancellationToken.None, verifyAlongside: true));
    }

    [Fact]
    public async Task Reports_OnAnAlteredLedger_AreWrittenAndExit2_AndAnUnreadableKeyIsSaidNotCrashed()
    {
        await using var g = await MisuseGatewayAsync();
        var from = DateTimeOffset.UtcNow.AddSeconds(-1);
        for (var i = 0; i < 4; i++)
        {
            await g.ChatAsync("web-bot");
        }

        // A model named to restyle a terminal, or to run in a viewer that renders the Markdown's HTML.
        const string Hostile = "<img src=x onerror=alert(1)>\u001b[31m\u202e";
        await g.ChatAsync("web-bot", Hostile);
        var clean = Path.Combine(g.Directory, "clean.md");
        var (cleanExit, _, cleanError) = await Cli.RunAsync("report", "incident", "--consumer", "web-bot", "--from", Iso(from), "--data", g.Directory, "-o", clean);
        Assert.True(cleanExit == 0, cleanError);
        var markdown = await File.ReadAllTextAsync(clean);
        Assert.Contains("\\<img src=x onerror=alert(1)>\\u001B[31m\\u202E", markdown, StringComparison.Ordinal);
        Assert.DoesNotContain("\u001b", markdown, StringComparison.Ordinal);
        Assert.DoesNotContain(" <img", markdown, StringComparison.Ordinal);

        // The HTML pack the same: encoded, and the escape and the override shown as escapes, not written raw.
        var page = Path.Combine(g.Directory, "clean.html");
        (cleanExit, _, cleanError) = await Cli.RunAsync("report", "incident", "--consumer", "web-bot", "--from", Iso(from), "--data", g.Directory, "--format", "html", "-o", page);
        Assert.True(cleanExit == 0, cleanError);
        var html = await File.ReadAllTextAsync(page);
        Assert.Contains("&lt;img src=x onerror=alert(1)&gt;\\u001B[31m\\u202E", html, StringComparison.Ordinal);
        Assert.DoesNotContain("\u001b", html, StringComparison.Ordinal);
        Assert.DoesNotContain("\u202e", html, StringComparison.Ordinal);

        await g.StopAsync();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        await using (var db = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={Path.Combine(g.Directory, "custos.db")};Pooling=false"))
        {
            await db.OpenAsync();
            await using var command = db.CreateCommand();
            command.CommandText = "DROP TRIGGER ledger_no_delete; DELETE FROM ledger WHERE seq = 3";
            await command.ExecuteNonQueryAsync();
        }

        var pack = Path.Combine(g.Directory, "pack.md");
        var (exit, output, error) = await Cli.RunAsync("report", "incident", "--consumer", "web-bot", "--from", Iso(from), "--data", g.Directory, "-o", pack);
        Assert.True(exit == 2, $"exit {exit}: {error}");
        Assert.Contains("chain failed", output, StringComparison.Ordinal);
        Assert.Contains("chain_problem", await File.ReadAllTextAsync(pack), StringComparison.Ordinal);
        (exit, _, error) = await Cli.RunAsync("report", "posture", "--data", g.Directory, "-o", Path.Combine(g.Directory, "posture.md"));
        Assert.True(exit == 2, $"exit {exit}: {error}");

        // A key file that is no ECDSA key: the report says the chain was not verified, and why.
        await File.WriteAllTextAsync(Path.Combine(g.Directory, "keys", "checkpoint.pub.pem"), "");
        (exit, output, error) = await Cli.RunAsync("report", "posture", "--data", g.Directory, "-o", Path.Combine(g.Directory, "posture2.md"));
        Assert.True(exit == 0, $"exit {exit}: {error}");
        Assert.Contains("chain not verified", output, StringComparison.Ordinal);
        Assert.Contains("holds no ECDSA public key in PEM", await File.ReadAllTextAsync(Path.Combine(g.Directory, "posture2.md")), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Posture_ChainSignedByAKeyNotGiven_IsNotVerified_AndWithEveryNodesKeyVerified()
    {
        await using var g = await MisuseGatewayAsync();
        await g.ChatAsync("web-bot"); // recorded, whatever the answer
        await g.StopAsync(); // seals a checkpoint with this node's key
        var other = Path.Combine(g.Directory, "node-b");
        CheckpointKey.LoadOrCreate(other, out _).Dispose(); // another node's key: this node's chain is not signed by it

        var (exit, output, error) = await Cli.RunAsync("report", "posture", "--data", g.Directory, "--public-key", CheckpointKey.PublicPath(other),
            "--format", "json", "-o", Path.Combine(g.Directory, "posture.json"));
        Assert.True(exit == 0, $"exit {exit}: {error}");
        Assert.Contains("chain not verified", output, StringComparison.Ordinal);
        var chain = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(g.Directory, "posture.json"))).RootElement.GetProperty("chain");
        Assert.Contains("no public key given for chain", chain.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Empty(chain.GetProperty("problems").EnumerateArray());

        (exit, output, error) = await Cli.RunAsync("report", "posture", "--data", g.Directory, "--public-key", CheckpointKey.PublicPath(other),
            "--public-key", CheckpointKey.PublicPath(g.Directory), "-o", Path.Combine(g.Directory, "posture.md"));
        Assert.True(exit == 0, $"exit {exit}: {error}");
        Assert.Contains("chain verified", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Incident_WindowAtTheEarliestTime_ReportsWithoutABaseline_InOneLine()
    {
        await using var g = await MisuseGatewayAsync();
        await g.StopAsync();

        var (exit, output, error) = await Cli.RunAsync("report", "incident", "--tenant", ReportGateway.Tenant, "--from", "0001-01-01T00:00:00Z",
            "--to", "0001-01-02T00:00:00Z", "--data", g.Directory, "-o", Path.Combine(g.Directory, "year1.md"));

        Assert.True(exit == 0, $"exit {exit}: {error}");
        Assert.StartsWith("Incident pack for", output, StringComparison.Ordinal);
        Assert.Single(output.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public async Task Reports_WithServer_AreMadeByTheGateway_WithinTheAdminKeysRoleAndScope()
    {
        // They read the store only: an owner or auditor without the data folder or the database could not have the pack
        // with the CLI, only by calling the admin API by hand.
        await using var demo = await DemoGateway.StartAsync("report-remote");
        var web = demo.Keys.Consumers.Single(c => c.Name == "support-web").Key;
        Assert.Equal(HttpStatusCode.OK, (await DemoGateway.ChatAsync(demo.Gateway.DataPlaneUri, web)).Status);
        await demo.Gateway.Ledger.FlushAsync();
        string[] server = ["--server", demo.Gateway.AdminUri.ToString()];

        var (exit, pack, error) = await Cli.RunAsync(["report", "incident", "--consumer", "support-web", "--from", "1h", .. server,
            "--admin-key", demo.AdminKey("service-owner")]);
        Assert.True(exit == 0, error);
        Assert.StartsWith("# Incident evidence pack: consumer support-web", pack, StringComparison.Ordinal);
        Assert.Contains("gpt-4o-mini", pack, StringComparison.Ordinal);
        Assert.Contains("; chain verified (with that node's key).", error, StringComparison.Ordinal);

        var file = Path.Combine(demo.Directory, "pack.json");
        (exit, _, error) = await Cli.RunAsync(["report", "incident", "--consumer", "support-web", "--from", "1h", "--format", "json", "-o", file, .. server,
            "--admin-key", demo.AdminKey("security-auditor")]);
        Assert.True(exit == 0, error);
        using (var json = JsonDocument.Parse(await File.ReadAllTextAsync(file)))
        {
            Assert.Equal("support-web", json.RootElement.GetProperty("subject").GetProperty("id").GetString());
        }

        (exit, var posture, error) = await Cli.RunAsync(["report", "posture", .. server, "--admin-key", demo.AdminKey("security-auditor")]);
        Assert.True(exit == 0, error);
        Assert.Contains("GV.RR-02", posture, StringComparison.Ordinal);

        // The role decides, as on the API; and a store or keys beside --server would be ignored, so they are refused.
        (exit, _, error) = await Cli.RunAsync(["report", "incident", "--consumer", "support-web", "--from", "1h", .. server, "--admin-key", demo.AdminKey("finance")]);
        Assert.Equal(1, exit);
        Assert.Contains("forbidden (403 admin.forbidden)", error, StringComparison.Ordinal);
        (exit, _, error) = await Cli.RunAsync(["report", "posture", .. server, "--admin-key", demo.AdminKey("platform-admin"), "--data", demo.Directory]);
        Assert.Equal(1, exit);
        Assert.Contains("--data and --config name a store to read here instead", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Spend_FromTheStoreAndWithServer_IsTheSameChargeback_PerConsumerAndModel()
    {
        // custos report had incident packs and the posture only: finance had no command for a window's spend at all.
        await using var demo = await DemoGateway.StartAsync("report-spend");
        var web = demo.Keys.Consumers.Single(c => c.Name == "support-web").Key;
        Assert.Equal(HttpStatusCode.OK, (await DemoGateway.ChatAsync(demo.Gateway.DataPlaneUri, web)).Status);
        Assert.Equal(HttpStatusCode.OK, (await DemoGateway.ChatAsync(demo.Gateway.DataPlaneUri, web)).Status);
        await demo.Gateway.Ledger.FlushAsync();
        var entries = await demo.Gateway.Store.QueryAsync(new LedgerQuery { Consumer = "support-web", Limit = 100 }).ToListAsync();
        var cost = entries.Sum(e => RequestEntry.Parse(e).Cost ?? 0m) / 1.000000000000000000000000000000000m;
        Assert.True(cost > 0);
        var to = DateTimeOffset.UtcNow.AddMinutes(1);
        string[] window = ["--from", "1h", "--to", Iso(to)];

        var (exit, local, error) = await Cli.RunAsync(["report", "spend", .. window, "--data", demo.Directory]);
        Assert.True(exit == 0, error);
        var line = local.Split('\n').Single(l => l.StartsWith("acme,support-assistant,support-web,gpt-4o-mini,USD,", StringComparison.Ordinal));
        Assert.Equal($"acme,support-assistant,support-web,gpt-4o-mini,USD,2,2,{line.Split(',')[7]},{line.Split(',')[8]},{cost.ToString(System.Globalization.CultureInfo.InvariantCulture)},1", line);
        Assert.Contains($": 1 line, 2 requests, spend {cost.ToString(System.Globalization.CultureInfo.InvariantCulture)} USD.", error, StringComparison.Ordinal);

        string[] server = ["--server", demo.Gateway.AdminUri.ToString()];
        (exit, var remote, error) = await Cli.RunAsync(["report", "spend", .. window, .. server, "--admin-key", demo.AdminKey("finance")]);
        Assert.True(exit == 0, error);
        Assert.Equal(local, remote);

        // The role decides, as on the API; a store beside --server is refused; a format it does not make is one line.
        (exit, _, error) = await Cli.RunAsync(["report", "spend", .. window, .. server, "--admin-key", demo.AdminKey("service-owner")]);
        Assert.Equal(1, exit);
        Assert.Contains("forbidden (403 admin.forbidden)", error, StringComparison.Ordinal);
        (exit, _, error) = await Cli.RunAsync(["report", "spend", .. window, .. server, "--admin-key", demo.AdminKey("finance"), "--data", demo.Directory]);
        Assert.Equal(1, exit);
        Assert.Contains("--data and --config name a store to read here instead", error, StringComparison.Ordinal);
        (exit, _, error) = await Cli.RunAsync(["report", "spend", .. window, "--data", demo.Directory, "--format", "xlsx"]);
        Assert.Equal(1, exit);
        Assert.Contains("--format must be csv or json, not 'xlsx'", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Requests_WithServer_ListTheLedgerThroughTheAdminApi_WithinTheAdminKeysScope()
    {
        // custos requests read the store only: an owner or auditor without it could not list what a request was decided
        // under with the CLI.
        await using var demo = await DemoGateway.StartAsync("requests-remote", doc => doc with
        {
            Admins = [.. doc.Admins.Select(a => a.Role == AdminRole.SecurityAuditor ? a with { Tenants = ["globex"] } : a)],
        });
        var web = demo.Keys.Consumers.Single(c => c.Name == "support-web").Key;
        var call = await DemoGateway.ChatAsync(demo.Gateway.DataPlaneUri, web);
        Assert.Equal(HttpStatusCode.OK, call.Status);
        await demo.Gateway.Ledger.FlushAsync();
        string[] server = ["--server", demo.Gateway.AdminUri.ToString()];

        var (exit, table, error) = await Cli.RunAsync(["requests", "--consumer", "support-web", .. server, "--admin-key", demo.AdminKey("service-owner")]);
        Assert.True(exit == 0, error);
        Assert.Contains(call.RequestId, table, StringComparison.Ordinal);
        Assert.Contains("1 entry (newest last", table, StringComparison.Ordinal);
        (exit, var json, error) = await Cli.RunAsync(["requests", "--request-id", call.RequestId, "--json", .. server, "--admin-key", demo.AdminKey("platform-admin")]);
        Assert.True(exit == 0, error);
        using (var entry = JsonDocument.Parse(json.Trim()))
        {
            Assert.Equal(1, entry.RootElement.GetProperty("policy_version").GetInt64());
        }

        // An auditor of globex is refused acme's request, with the API's code and request id; and a store beside --server is refused.
        (exit, _, error) = await Cli.RunAsync(["requests", "--request-id", call.RequestId, .. server, "--admin-key", demo.AdminKey("security-auditor")]);
        Assert.Equal(1, exit);
        Assert.Contains("forbidden (403 admin.forbidden)", error, StringComparison.Ordinal);
        Assert.Contains("(admin request req_", error, StringComparison.Ordinal);
        (exit, _, error) = await Cli.RunAsync(["requests", .. server, "--admin-key", demo.AdminKey("platform-admin"), "--data", demo.Directory]);
        Assert.Equal(1, exit);
        Assert.Contains("--data and --config name a store to read here instead", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Incident_BadArguments_OneLineErrors()
    {
        var (exit, _, error) = await Cli.RunAsync("report", "incident", "--consumer", "a", "--service", "b", "--from", "1h", "--data", Path.GetTempPath());
        Assert.Equal(1, exit);
        Assert.Equal("error: name exactly one subject: --consumer, --credential, --service or --tenant", error.Trim());
        (exit, _, error) = await Cli.RunAsync("report", "posture", "--format", "pdf", "--data", Path.GetTempPath());
        Assert.Equal(1, exit);
        Assert.Equal("error: --format must be md, json or html, not 'pdf'", error.Trim());
    }

    [Fact]
    public void Incident_CredentialBoundToTwoConsumersAcrossVersions_SharedCredentialFinding()
    {
        // Pure builder: version 1 binds cred-x to alpha; version 2 re-binds the same credential to beta.
        static ServiceConfig Service(string id) => new() { Id = id, Tenant = "t", Owners = ReportGateway.FullOwners(id), Limits = new LimitsConfig { Budget = new BudgetConfig { Amount = 5m } } };
        PolicyDocument Doc(string consumer) => new()
        {
            Tenants = [new TenantConfig { Id = "t", Models = [new ModelConfig { Name = "m", Provider = "p" }], Providers = [new ProviderConfig { Id = "p", Kind = ProviderKind.OpenAI, BaseUrl = new Uri("http://127.0.0.1:9/v1") }] }],
            Services = [Service("s")],
            Consumers =
            [
                new ConsumerConfig { Id = "alpha", Service = "s", Category = ConsumerCategory.Internal, Models = ["m"], Limits = new LimitsConfig { MaxOutputTokens = 100 } },
                new ConsumerConfig { Id = "beta", Service = "s", Category = ConsumerCategory.Internal, Models = ["m"], Limits = new LimitsConfig { MaxOutputTokens = 100 } },
            ],
            Credentials = [new CredentialConfig { Id = "cred-x", Consumer = consumer, KeySha256 = new string('a', 64) }],
        };
        var t0 = new DateTimeOffset(2026, 3, 1, 10, 0, 0, TimeSpan.Zero);
        var history = new[]
        {
            new PolicyVersion(1, "h1", "a", "first", t0, Doc("alpha")),
            new PolicyVersion(2, "h2", "b", "moved", t0.AddMinutes(30), Doc("beta")),
        };
        RequestEntry Request(int i, string consumer) => new()
        {
            ChainId = "n",
            Seq = i,
            RequestId = "req_" + i,
            Timestamp = t0.AddMinutes(10 + ((i - 1) * 30)),
            Tenant = "t",
            Service = "s",
            Consumer = consumer,
            CredentialId = "cred-x",
            Model = "m",
            Decision = "allow",
            PolicyVersion = i == 1 ? 1 : 2,
            Status = 200,
        };

        var report = IncidentReportBuilder.Build(HourFrom(t0, new IncidentSubject("credential", "cred-x"), history, IncidentWindow.Of(t0, t0.AddHours(1), [Request(1, "alpha"), Request(2, "beta")])));

        Assert.Equal(Classification.MissingGovernance, report.Classification.Primary);
        var shared = Assert.Single(report.Findings, f => f.Code == "shared_credential");
        Assert.Equal("Credential 'cred-x' has acted for alpha, beta: a request made with it cannot be pinned on one accountable consumer and owner.", shared.Detail);
        Assert.Equal(["v1", "v2", "req_1", "req_2"], shared.Evidence.Select(e => e.Ref));
        Assert.Equal(["alpha", "beta"], report.Credentials.Single().BoundConsumers);
        Assert.Equal([1L, 2L], report.PolicyVersions.Select(v => v.Number));
    }

    [Fact]
    public void Incident_AlertsOfTheSubject_ListedInTheWindowWithSuspensionAndEscalationFindings()
    {
        // Pure builder: an agent's credential suspended by an alert rule, an alert nobody acknowledged in time, and alerts
        // that are not the subject's (another consumer's, and one raised before the window).
        var t0 = new DateTimeOffset(2026, 3, 1, 10, 0, 0, TimeSpan.Zero);
        var doc = new PolicyDocument
        {
            Tenants = [new TenantConfig { Id = "t", Models = [new ModelConfig { Name = "m", Provider = "p" }], Providers = [new ProviderConfig { Id = "p", Kind = ProviderKind.OpenAI, BaseUrl = new Uri("http://127.0.0.1:9/v1") }] }],
            Services = [new ServiceConfig { Id = "s", Tenant = "t", Owners = ReportGateway.FullOwners("s"), Limits = new LimitsConfig { Budget = new BudgetConfig { Amount = 5m } } }],
            Consumers =
            [
                new ConsumerConfig { Id = "bot", Service = "s", Category = ConsumerCategory.Internal, Models = ["m"], Limits = new LimitsConfig { MaxOutputTokens = 100 } },
                new ConsumerConfig { Id = "other", Service = "s", Category = ConsumerCategory.Internal, Models = ["m"], Limits = new LimitsConfig { MaxOutputTokens = 100 } },
            ],
            Credentials =
            [
                new CredentialConfig { Id = "cred-bot", Consumer = "bot", KeySha256 = new string('a', 64) },
                new CredentialConfig { Id = "cred-other", Consumer = "other", KeySha256 = new string('b', 64) },
            ],
            Alerts = new AlertsConfig { Disabled = ["schedule.outside"], Security = new OwnerConfig { Name = "Sec Desk", Email = "sec@t.example" } },
        };
        var history = new[] { new PolicyVersion(1, "h1", "a", "first", t0.AddDays(-1), doc), new PolicyVersion(2, "h2", "custos:alerts", "al-2", t0.AddMinutes(20), doc) };
        Alert Raised(string id, string type, string consumer, string credential, DateTimeOffset at) => new()
        {
            Id = id,
            RaisedAt = at,
            LastSeenAt = at,
            Signal = new AlertSignal
            {
                Type = type,
                Severity = AlertSeverity.Critical,
                Fingerprint = type + consumer,
                Subject = "consumer:" + consumer,
                Summary = $"{type} of {consumer}.",
                At = at,
                Tenant = "t",
                Service = "s",
                Consumer = consumer,
                CredentialId = credential,
                RequestId = "req_" + id,
                PolicyVersion = 1,
                Rule = "10x the baseline suspends the credential",
                Evidence = new Dictionary<string, string> { ["observed_per_minute"] = "10" },
            },
        };
        AdminEntry Admin(long seq, int minute, string action, string target, string? reason = null) => new()
        {
            ChainId = "n",
            Seq = seq,
            Timestamp = t0.AddMinutes(minute),
            Actor = "custos:alerts",
            Action = action,
            Target = target,
            Reason = reason,
            PolicyVersion = 1,
        };
        var alerts = new[]
        {
            Raised("al-1", "usage.anomaly", "bot", "cred-bot", t0.AddHours(-2)) with { Status = AlertStatus.Resolved },
            Raised("al-2", "usage.anomaly", "bot", "cred-bot", t0.AddMinutes(20)) with
            {
                ActionTaken = "suspended credential cred-bot", ActionPolicyVersion = 2, Recipients = ["Tec On-call (technical)"],
            },
            Raised("al-3", "denials.spike", "bot", "cred-bot", t0.AddMinutes(10)) with
            {
                Recipients = ["Tec On-call (technical)", "Pat Policy (policy)", "Sec Desk (security)"], EscalatedAt = t0.AddMinutes(40),
                Status = AlertStatus.Acknowledged, AcknowledgedBy = "owner-admin", AcknowledgedAt = t0.AddMinutes(50),
            },
            Raised("al-4", "usage.anomaly", "other", "cred-other", t0.AddMinutes(30)),
        };

        var report = IncidentReportBuilder.Build(HourFrom(t0, new IncidentSubject("consumer", "bot"), history, new IncidentWindow(t0, t0.AddHours(1))) with
        {
            Alerts = alerts,
            AdminEntries =
            [
                Admin(1, 10, "alert.raised", "alert:al-3"),
                Admin(2, 20, "alert.raised", "alert:al-2"),
                Admin(3, 21, "credential.suspended", "credential:cred-bot", "al-2: 10x the baseline suspends the credential. Evidence: {}"),
                Admin(4, 30, "alert.raised", "alert:al-4"),
                Admin(5, 40, "alert.escalated", "alert:al-3"),
            ],
        });

        // Only the subject's alerts raised in the window, oldest first.
        Assert.Equal(AlertsSection.Configured, report.Alerts.Status);
        Assert.Equal(["al-3", "al-2"], report.Alerts.Alerts.Select(a => a.Id));
        Assert.Equal(2, report.Alerts.Count);
        Assert.Equal("2 alerts about consumer bot raised in the window (2 critical). 7 of 8 detectors run under v2 (schedule.outside switched off); an alert goes to the owner role " +
            "responsible and, unacknowledged after 30 minutes, escalates to the next owner and to security (Sec Desk). Status, acknowledgement and resolution are as they stood " +
            "when the pack was made.", report.Alerts.Detail);
        var escalated = report.Alerts.Alerts[0];
        Assert.Equal(("acknowledged", "owner-admin", t0.AddMinutes(40)), (escalated.Status, escalated.AcknowledgedBy, escalated.EscalatedAt!.Value));

        // The automatic suspension is misuse evidence, with the alert, the policy version it made and its ledger entry.
        var action = Assert.Single(report.Findings, f => f.Code == "automatic_action");
        Assert.Equal((Classification.Misuse, "high", "Alert al-2 suspended credential cred-bot automatically"), (action.Class, action.Severity, action.Title));
        Assert.Equal([("alert", "al-2"), ("request", "req_al-2"), ("policy_version", "v2"), ("ledger_entry", "n#3")], action.Evidence.Select(e => (e.Kind, e.Ref)));
        Assert.Contains("observed_per_minute 10", action.Evidence[0].Detail, StringComparison.Ordinal);

        // The alert nobody acknowledged in time is missing governance, with its escalation entry.
        var late = Assert.Single(report.Findings, f => f.Code == "alert_escalated");
        Assert.Equal(Classification.MissingGovernance, late.Class);
        Assert.Equal([("alert", "al-3"), ("ledger_entry", "n#5")], late.Evidence.Select(e => (e.Kind, e.Ref)));
        Assert.Contains("owner-admin acknowledged it at 2026-03-01 10:50:00 UTC", late.Detail, StringComparison.Ordinal);

        // The engine names alerts and the suspended credential bare: those entries still reach the timeline, the credential and the interventions.
        Assert.Equal(["alert.raised", "alert.raised", "credential.suspended", "alert.escalated"], report.Timeline.Events.Select(e => e.Decision));
        Assert.Equal(["credential.suspended"], report.Credentials.Single(c => c.Id == "cred-bot").History.Select(h => h.Action));
        Assert.Equal(["credential.suspended"], report.Interventions.Actions.Select(a => a.Action));
    }

    [Fact]
    public void Incident_ARequestCutWhileItRan_IsNamedWithTheVersionThatCutIt_AndCountedAmongTheStops()
    {
        // A stream cut by a kill switch is entered at its start, before the switch, as "allow ... interrupted": the pack
        // said neither what stopped it nor counted it among what the switch did ("Requests refused because of them: none.").
        var t0 = new DateTimeOffset(2026, 3, 1, 10, 0, 0, TimeSpan.Zero);
        var doc = new PolicyDocument
        {
            Tenants = [new TenantConfig { Id = "t", Models = [new ModelConfig { Name = "m", Provider = "p" }], Providers = [new ProviderConfig { Id = "p", Kind = ProviderKind.OpenAI, BaseUrl = new Uri("http://127.0.0.1:9/v1") }] }],
            Services = [new ServiceConfig { Id = "s", Tenant = "t", Owners = ReportGateway.FullOwners("s") }],
            Consumers = [new ConsumerConfig { Id = "bot", Service = "s", Category = ConsumerCategory.Internal, Models = ["m"] }],
            Credentials = [new CredentialConfig { Id = "cred-bot", Consumer = "bot", KeySha256 = new string('a', 64) }],
        };
        var history = new[]
        {
            new PolicyVersion(1, "h1", "a", "first", t0.AddDays(-1), doc),
            new PolicyVersion(2, "h2", "oncall", "INC-1", t0.AddMinutes(5), doc with { Consumers = [doc.Consumers[0] with { Suspended = true }] }),
        };
        var window = new IncidentWindow(t0, t0.AddHours(1));
        var cut = RequestEntry.Parse("n", 1, """
            {"v":2,"kind":"request","request_id":"req_cut","timestamp":"2026-03-01T10:04:00.000000Z","tenant":"t","service":"s","consumer":"bot",
             "category":"internal","credential_id":"cred-bot","model":"m","decision":"allow","reasons":["deny.killed_in_flight"],"policy_version":1,
             "status":200,"outcome":"interrupted","cut_by_policy_version":2}
            """u8);
        window.Add(cut);

        var report = IncidentReportBuilder.Build(HourFrom(t0, new IncidentSubject("consumer", "bot"), history, window) with
        {
            Alerts = [],
            AdminEntries =
            [
                new AdminEntry
                {
                    ChainId = "n", Seq = 2, Timestamp = t0.AddMinutes(5), Actor = "oncall", Action = "kill_switch.engaged", Target = "consumer:bot",
                    Before = "released", After = "engaged", Reason = "INC-1", PolicyVersion = 2,
                },
            ],
        });

        Assert.Equal(2, cut.CutByPolicyVersion);
        var row = Assert.Single(report.Timeline.Events, e => e.Ref == "req_cut");
        Assert.EndsWith("[deny.killed_in_flight], cut by v2", row.What, StringComparison.Ordinal);
        Assert.Equal(1, report.Interventions.Refusals["deny.killed_in_flight"]);
    }
}
