using System.Globalization;
using System.Net;
using System.Text.Json;
using Custos.Ledger;
using Custos.Tests;
using Microsoft.Playwright;
using static Microsoft.Playwright.Assertions;

namespace Custos.Browser.Tests;

/// <summary>
/// The console in real headless Chromium against a real demo gateway with data: sign-in and the overview's chart of the
/// seeded spend, revoking a key and approving access through the UI (then calling the data plane with the OpenAI wire
/// format to see the effect), what a security auditor sees and cannot do, and every page at laptop and wide-screen
/// sizes. Each test saves screenshots into <c>artifacts/screenshots/</c>.
/// </summary>
[Collection(BrowserCollection.Name)]
public sealed class ConsoleTests(BrowserFixture browser)
{
    private static readonly string[] Pages = ["overview", "services", "consumers", "access", "alerts", "ledger", "policy", "reports"];

    [Fact]
    public async Task SignIn_ThenTheOverviewChartRendersTheSeededSpend()
    {
        await using var demo = await SeededAsync("console-overview");
        var page = await browser.NewPageAsync();
        await SignInAsync(page, demo, "platform-admin");
        await Expect(page.Locator("[data-testid=who]")).ToContainTextAsync("demo-platform-admin");

        // The chart's last point for the support service is its spend this month, as the ledger records it.
        var expected = await SpendAsync(demo, "support-assistant");
        Assert.True(expected > 0);
        var chart = await page.EvaluateAsync<JsonElement>("""
            () => {
              const chart = Chart.getChart(document.getElementById('spend-chart'));
              return { drawn: !!chart && chart.chartArea.width > 0,
                       series: chart.data.datasets.map(d => ({ label: d.label, last: d.data.at(-1), hidden: !!d.hidden })) };
            }
            """);
        Assert.True(chart.GetProperty("drawn").GetBoolean(), "the spend chart was not drawn");
        var support = chart.GetProperty("series").EnumerateArray().Single(s => s.GetProperty("label").GetString() == "support-assistant");
        Assert.Equal((double)expected, support.GetProperty("last").GetDouble(), 12);
        Assert.Contains(chart.GetProperty("series").EnumerateArray(), s => s.GetProperty("label").GetString()!.StartsWith("support-assistant budget", StringComparison.Ordinal));

        // The cards and tables say the same: 4 requests, 1 refused, and the refusal's reason.
        await Expect(page.Locator("[data-testid=card-requests]")).ToHaveTextAsync("4");
        await Expect(page.Locator("[data-testid=card-refused]")).ToHaveTextAsync("1");
        await Expect(page.Locator("[data-testid=reasons]")).ToContainTextAsync("deny.model_not_entitled");
        await Expect(page.Locator("[data-testid=top-consumers]")).ToContainTextAsync("support-web");
        await Expect(page.Locator("[data-testid=budget-spent-service-support-assistant]"))
            .ToHaveTextAsync(expected.ToString("0.000000", CultureInfo.InvariantCulture) + " USD");
        await browser.ScreenshotAsync(page, "console-overview");
        browser.AssertNoErrors(page);
    }

    [Fact]
    public async Task TenantsPricingInTwoCurrencies_GetASpendCardEach()
    {
        // Globex in EUR beside acme in USD: the overview's one "Spend" card added euros to dollars.
        await using var demo = await DemoGateway.StartAsync("console-currencies", doc => doc with
        {
            Tenants = [.. doc.Tenants.Select(t => t.Id == "globex" ? t with { Models = [.. t.Models.Select(m => m with { Currency = "EUR" })] } : t)],
        });
        Assert.Equal(HttpStatusCode.OK, (await DemoGateway.ChatAsync(demo.Gateway.DataPlaneUri, demo.ConsumerKey("support-web"))).Status);
        Assert.Equal(HttpStatusCode.OK, (await DemoGateway.ChatAsync(demo.Gateway.DataPlaneUri, demo.ConsumerKey("globex-dev"))).Status);
        await demo.Gateway.Ledger.FlushAsync();
        var (dollars, euros) = (await SpendAsync(demo, "support-assistant"), await SpendAsync(demo, "globex-copilot"));
        Assert.True(dollars > 0 && euros > 0);

        var page = await browser.NewPageAsync();
        await SignInAsync(page, demo, "platform-admin");
        await Expect(page.Locator("[data-testid=card-spend]")).ToHaveCountAsync(0);
        await Expect(page.Locator("[data-testid=card-spend-USD]")).ToHaveTextAsync(dollars.ToString("0.000000", CultureInfo.InvariantCulture) + " USD");
        await Expect(page.Locator("[data-testid=card-spend-EUR]")).ToHaveTextAsync(euros.ToString("0.000000", CultureInfo.InvariantCulture) + " EUR");
        var labels = await page.EvaluateAsync<string[]>("() => Chart.getChart(document.getElementById('spend-chart')).data.datasets.map(d => d.label)");
        Assert.Contains("globex-copilot (EUR)", labels);
        await browser.ScreenshotAsync(page, "console-overview-currencies");
        browser.AssertNoErrors(page);
    }

    [Fact]
    public async Task InABrowserWestOfUtc_TheMonthsDaysAreTheApisDates()
    {
        // The month is UTC's here (two tenants of two zones): its first day, at 00:00 UTC, was labelled the day before in Los Angeles.
        await using var demo = await SeededAsync("console-west");
        var page = await browser.NewPageAsync(timeZone: "America/Los_Angeles");
        await SignInAsync(page, demo, "platform-admin");
        var labels = await page.EvaluateAsync<string[]>("() => Chart.getChart(document.getElementById('spend-chart')).data.labels");
        var now = DateTimeOffset.UtcNow;
        Assert.Equal(now.ToString("MMM", CultureInfo.InvariantCulture) + " 1", labels[0]);
        Assert.Equal(now.Day, labels.Length);
        browser.AssertNoErrors(page);
    }

    [Fact]
    public async Task Times_NameTheirZone()
    {
        // Times were the browser's zone's without saying so, beside server text in UTC (an incident pack's facts).
        await using var demo = await SeededAsync("console-time-zone");
        var page = await browser.NewPageAsync(timeZone: "America/Los_Angeles");
        await SignInAsync(page, demo, "platform-admin");
        await GoAsync(page, demo, "ledger");
        var when = await page.Locator("table[data-testid=ledger] tbody tr:first-child td").First.InnerTextAsync();
        Assert.Matches(@"P[SD]T$", when);
        browser.AssertNoErrors(page);
    }

    [Fact]
    public async Task TopConsumers_LinkToTheLedger_OnlyWhereItCanBeReadAndSearched()
    {
        await using var demo = await SeededAsync("console-top-consumers");
        var page = await browser.NewPageAsync();
        await SignInAsync(page, demo, "platform-admin");
        await Expect(page.Locator("[data-testid=top-consumers] a", new() { HasText = "support-web" })).ToHaveCountAsync(1);

        // Finance reads spend, not the ledger: a link fell back to the overview without a word.
        var finance = await browser.NewPageAsync();
        await SignInAsync(finance, demo, "finance");
        await Expect(finance.Locator("[data-testid=top-consumers]")).ToContainTextAsync("support-web");
        await Expect(finance.Locator("[data-testid=top-consumers] a")).ToHaveCountAsync(0);
        browser.AssertNoErrors(page);
        browser.AssertNoErrors(finance);
    }

    [Fact]
    public async Task SignIn_WithAnUnknownKey_IsRefusedWithItsCode()
    {
        await using var demo = await DemoGateway.StartAsync("console-signin");
        var page = await browser.NewPageAsync();
        await page.GotoAsync(new Uri(demo.Gateway.AdminUri, "/").ToString());
        await page.FillAsync("input[name=key]", "not a key");
        await page.ClickAsync("button[type=submit]");
        await Expect(page.Locator(".error")).ToContainTextAsync("admin.unauthenticated");

        // A well-formed admin key this gateway does not know.
        await page.FillAsync("input[name=key]", Custos.Identity.ApiKey.Generate(Custos.Identity.ApiKeyKind.Admin));
        await page.ClickAsync("button[type=submit]");
        await Expect(page.Locator(".error")).ToContainTextAsync("admin.unknown_key");
        await Expect(page.Locator(".error")).ToContainTextAsync("req_");
        await Expect(page.Locator("[data-testid=who]")).ToHaveCountAsync(0);
        await browser.ScreenshotAsync(page, "console-signin-refused");
        browser.AssertNoErrors(page, "status of 401");
    }

    [Fact]
    public async Task AKeyRemovedMidSession_SignsTheTabOut_NamingTheApisCodeAndRequestId()
    {
        await using var demo = await DemoGateway.StartAsync("console-signed-out");
        var page = await browser.NewPageAsync();
        await SignInAsync(page, demo, "platform-admin");

        // The admin's key leaves the policy while the console is open: its next call is refused.
        await demo.Gateway.ChangePolicyAsync(doc => doc with { Admins = [.. doc.Admins.Where(a => a.Id != "demo-platform-admin")] }, "test", "the key leaked");
        await page.ClickAsync("a[data-nav=services]");

        var signedOut = page.Locator("[data-testid=signed-out]");
        await Expect(signedOut).ToContainTextAsync("Your session is no longer valid");
        await Expect(signedOut).ToContainTextAsync("admin.unknown_key");
        await Expect(signedOut).ToContainTextAsync("req_");
        await Expect(page.Locator("input[name=key]")).ToBeVisibleAsync();
        var text = await signedOut.InnerTextAsync();
        var requestId = text[text.IndexOf("req_", StringComparison.Ordinal)..].Split(' ', '\n')[0].Trim();
        await demo.Gateway.Ledger.FlushAsync();
        var denied = await demo.AdminEntriesAsync("admin.sign_in_denied");
        Assert.Contains(denied, e => e.GetProperty("reason").GetString()!.EndsWith($"(request {requestId})", StringComparison.Ordinal));
        await browser.ScreenshotAsync(page, "console-signed-out");
        browser.AssertNoErrors(page, "status of 401");
    }

    [Fact]
    public async Task SignIn_WithAnOidcToken_OfTheConfiguredIdentityProvider()
    {
        using var signer = System.Security.Cryptography.ECDsa.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP256);
        await using var demo = await DemoGateway.StartAsync("console-oidc", policy => policy with
        {
            IdentityProviders = [new Custos.Policy.IdentityProviderConfig { Id = "corp", Issuer = "https://login.acme.test/", Audience = "custos-console", Keys = [signer.ExportSubjectPublicKeyInfoPem()] }],
            Admins = [.. policy.Admins, new Custos.Policy.AdminConfig { Id = "dana", Role = Custos.Policy.AdminRole.SecurityAuditor, Issuer = "corp", Subject = "dana@acme.test" }],
        });
        string Token(TimeSpan expiresIn)
        {
            var expires = DateTime.UtcNow + expiresIn;
            var issued = expires.AddMinutes(-60);
            return new Microsoft.IdentityModel.JsonWebTokens.JsonWebTokenHandler { SetDefaultTimesOnTokenCreation = false }.CreateToken(new Microsoft.IdentityModel.Tokens.SecurityTokenDescriptor
            {
                Issuer = "https://login.acme.test/",
                Audience = "custos-console",
                IssuedAt = issued,
                NotBefore = issued,
                Expires = expires,
                Claims = new Dictionary<string, object> { ["sub"] = "dana@acme.test" },
                SigningCredentials = new Microsoft.IdentityModel.Tokens.SigningCredentials(new Microsoft.IdentityModel.Tokens.ECDsaSecurityKey(signer) { KeyId = "k1" },
                    Microsoft.IdentityModel.Tokens.SecurityAlgorithms.EcdsaSha256),
            });
        }

        var page = await browser.NewPageAsync();
        await page.GotoAsync(new Uri(demo.Gateway.AdminUri, "/").ToString());
        await page.FillAsync("input[name=key]", Token(TimeSpan.FromMinutes(-5)));
        await page.ClickAsync("button[type=submit]");
        await Expect(page.Locator(".error")).ToContainTextAsync("deny.token_expired");

        await page.FillAsync("input[name=key]", Token(TimeSpan.FromMinutes(30)));
        await page.ClickAsync("button[type=submit]");
        await Expect(page.Locator("[data-testid=who]")).ToContainTextAsync("dana");
        await Expect(page.Locator("[data-testid=who]")).ToContainTextAsync("security_auditor");
        await Expect(page.Locator("a[data-nav=ledger]")).ToBeVisibleAsync();
        await browser.ScreenshotAsync(page, "console-oidc-signed-in");
        browser.AssertNoErrors(page, "status of 401");
    }

    [Fact]
    public async Task RevokeACredentialInTheConsole_TheNextApiCallIsRefusedAsRevoked()
    {
        await using var demo = await SeededAsync("console-revoke");
        var page = await browser.NewPageAsync();
        await SignInAsync(page, demo, "platform-admin");
        await GoAsync(page, demo, "consumers");

        await ConfirmWithReasonAsync(page, "button[data-action=revoke][data-credential=cred-support-web]", "key pasted in a public ticket");
        await Expect(page.Locator("table[data-testid=credentials] tr[data-key=cred-support-web]")).ToContainTextAsync("revoked");
        await browser.ScreenshotAsync(page, "console-consumers-revoked");

        var (status, code, _) = await DemoGateway.ChatAsync(demo.Gateway.DataPlaneUri, demo.ConsumerKey("support-web"));
        Assert.Equal(HttpStatusCode.Unauthorized, status);
        Assert.Equal("deny.credential_revoked", code);

        // The alert the first call raised (a first use of a model): acknowledged in the console, it stops escalating.
        await GoAsync(page, demo, "alerts");
        await page.ClickAsync("button[data-action=acknowledge]");
        await Expect(page.Locator(".toast").Last).ToContainTextAsync("acknowledged");
        await GoAsync(page, demo, "alerts", "acknowledged");
        await Expect(page.Locator("table[data-testid=alerts]")).ToContainTextAsync("acknowledged by demo-platform-admin");

        // On the record: who revoked it and why.
        var revoked = Assert.Single(await demo.AdminEntriesAsync("credential.revoked"));
        Assert.Equal("demo-platform-admin", revoked.GetProperty("actor").GetString());
        Assert.Equal("key pasted in a public ticket", revoked.GetProperty("reason").GetString());
        browser.AssertNoErrors(page);
    }

    [Fact]
    public async Task ApproveAnAccessRequestInTheConsole_ThenTheConsumerCanCallTheModel()
    {
        await using var demo = await SeededAsync("console-access");
        var key = demo.ConsumerKey("support-web");
        Assert.Equal("deny.model_not_entitled", (await DemoGateway.ChatAsync(demo.Gateway.DataPlaneUri, key, "gpt-4o")).Code);

        // The platform admin asks; the service's policy owner (demo-service-owner) decides, each in their own session.
        var asker = await browser.NewPageAsync();
        await SignInAsync(asker, demo, "platform-admin");
        await GoAsync(asker, demo, "access");
        await asker.FillAsync("input[name=consumer]", "support-web");
        await asker.FillAsync("input[name=models]", "gpt-4o");
        await asker.FillAsync("input[name=justification]", "SUP-42 harder questions");
        await asker.ClickAsync("form:has(input[name=justification]) button[type=submit]");
        await Expect(asker.Locator("table[data-testid=access-requests]")).ToContainTextAsync("SUP-42 harder questions");
        await Expect(asker.Locator("button[data-action=approve]")).ToHaveCountAsync(0); // the requester cannot decide

        var owner = await browser.NewPageAsync();
        await SignInAsync(owner, demo, "service-owner");
        await GoAsync(owner, demo, "access");
        await ConfirmWithReasonAsync(owner, "button[data-action=approve]", "fine for support");
        await Expect(owner.Locator(".toast")).ToContainTextAsync("approved");
        await GoAsync(owner, demo, "access", "all");
        await Expect(owner.Locator("table[data-testid=access-requests]")).ToContainTextAsync("demo-service-owner");

        // The new entitlement is in force, naming its approver and the access request as its ticket.
        await Expect(owner.Locator("table[data-testid=entitlements] tr:has-text('ar-1')")).ToContainTextAsync("demo-service-owner");
        await Expect(owner.Locator("table[data-testid=entitlements] tr:has-text('ar-1')")).ToContainTextAsync("in force");
        await Expect(owner.Locator("table[data-testid=entitlements] tr:has-text('DEMO-101')")).ToContainTextAsync("support-assistant-policy@acme.example");
        await browser.ScreenshotAsync(owner, "console-access-approved");

        var (status, code, _) = await DemoGateway.ChatAsync(demo.Gateway.DataPlaneUri, key, "gpt-4o");
        Assert.True(status == HttpStatusCode.OK, $"{status} {code}");
        browser.AssertNoErrors(asker);
        browser.AssertNoErrors(owner);
    }

    [Fact]
    public async Task SecurityAuditor_SeesLedgerAndReports_HasNoRevokeControl_AndAForgedRevokeIsRefused()
    {
        await using var demo = await SeededAsync("console-auditor");
        var page = await browser.NewPageAsync();
        await SignInAsync(page, demo, "security-auditor");
        await Expect(page.Locator("a[data-nav=ledger]")).ToBeVisibleAsync();
        await Expect(page.Locator("a[data-nav=reports]")).ToBeVisibleAsync();

        // The ledger, and one entry's controls with a link to the policy version in force.
        await GoAsync(page, demo, "ledger");
        await Expect(page.Locator("table[data-testid=ledger] tbody tr")).ToHaveCountAsync(4);
        await page.FillAsync("form[data-testid=ledger-filters] input[name=consumer]", "support-web");
        await page.SelectOptionAsync("form[data-testid=ledger-filters] select[name=decision]", "deny");
        await page.FillAsync("form[data-testid=ledger-filters] input[name=from]", DateTime.UtcNow.AddHours(-1).ToString("yyyy-MM-ddTHH:mm", CultureInfo.InvariantCulture));
        await page.ClickAsync("form[data-testid=ledger-filters] button[type=submit]");
        await Expect(page.Locator("table[data-testid=ledger] tbody tr")).ToHaveCountAsync(1);
        await Expect(page.Locator("form[data-testid=ledger-filters] select[name=decision]")).ToHaveValueAsync("deny");
        await page.ClickAsync("table[data-testid=ledger] tbody tr:has-text('deny')");
        await Expect(page.Locator("table[data-testid=controls]")).ToContainTextAsync("entitlement");
        await Expect(page.Locator("[data-testid=policy-link]")).ToHaveTextAsync("v1");
        await browser.ScreenshotAsync(page, "console-auditor-ledger-entry");

        // Reports: the incident pack of the consumer.
        await GoAsync(page, demo, "reports");
        await page.FillAsync("input[name=id]", "support-web");
        await page.ClickAsync("form[data-testid=incident-form] button[type=submit]");
        await Expect(page.Locator("[data-testid=card-incident-requests]")).ToHaveTextAsync("4");
        await browser.ScreenshotAsync(page, "console-auditor-reports");
        var download = await page.RunAndWaitForDownloadAsync(() => page.ClickAsync("[data-testid=incident-report] ~ div button[data-download=json]"));
        Assert.StartsWith("incident-consumer-support-web-", download.SuggestedFilename, StringComparison.Ordinal);
        Assert.EndsWith(".json", download.SuggestedFilename, StringComparison.Ordinal);
        using (var pack = JsonDocument.Parse(await File.ReadAllTextAsync((await download.PathAsync())!)))
        {
            Assert.Equal("incident", pack.RootElement.GetProperty("report").GetString());
            Assert.Equal(4, pack.RootElement.GetProperty("summary").GetProperty("requests").GetInt32());
        }

        // Credentials are listed, with no control to change them.
        await GoAsync(page, demo, "consumers");
        await Expect(page.Locator("table[data-testid=credentials]")).ToContainTextAsync("cred-support-web");
        await Expect(page.Locator("button[data-action=revoke]")).ToHaveCountAsync(0);
        await Expect(page.Locator("button[data-action=suspend]")).ToHaveCountAsync(0);

        // A request forged from this session (its own token) is refused by the API, and recorded.
        var forged = await page.EvaluateAsync<JsonElement>("""
            async () => {
              const response = await fetch('/admin/v1/credentials/cred-support-web/revoke', {
                method: 'POST',
                headers: { Authorization: 'Bearer ' + sessionStorage.getItem('custos.console.token'), 'Content-Type': 'application/json' },
                body: JSON.stringify({ reason: 'forged' }) });
              return { status: response.status, body: await response.json() };
            }
            """);
        Assert.Equal(403, forged.GetProperty("status").GetInt32());
        Assert.Equal("admin.forbidden", forged.GetProperty("body").GetProperty("code").GetString());
        Assert.Equal(HttpStatusCode.OK, (await DemoGateway.ChatAsync(demo.Gateway.DataPlaneUri, demo.ConsumerKey("support-web"))).Status);
        var denied = Assert.Single(await demo.AdminEntriesAsync("credential.revoked_denied"));
        Assert.Equal("demo-security-auditor", denied.GetProperty("actor").GetString());
        browser.AssertNoErrors(page, "status of 403");
    }

    [Fact]
    public async Task ServicesAndOwners_FlagMissingGovernance()
    {
        // The analytics service loses its billing owner; the research agents their operator and sponsor.
        await using var demo = await DemoGateway.StartAsync("console-governance", policy => policy with
        {
            Services = [.. policy.Services.Select(s => s.Id switch
            {
                "analytics" => s with { Owners = s.Owners with { Billing = null } },
                "research-agents" => s with { Owners = s.Owners with { AgentOperator = null, BusinessSponsor = null } },
                _ => s,
            })],
        });
        var page = await browser.NewPageAsync();
        await SignInAsync(page, demo, "finance");
        await GoAsync(page, demo, "services");
        await Expect(page.Locator("[data-testid=card-gaps]")).ToHaveTextAsync("2");
        var analytics = page.Locator("table[data-testid=services] tr[data-key=analytics]");
        await Expect(analytics).ToContainTextAsync("service 'analytics' has no billing owner: missing governance");
        await Expect(analytics.Locator(".badge.bad")).ToHaveTextAsync("missing");
        await Expect(page.Locator("table[data-testid=services] tr[data-key=research-agents]")).ToContainTextAsync("no agent_operator or business_sponsor");
        await Expect(page.Locator("table[data-testid=services] tr[data-key=support-assistant]")).ToContainTextAsync("complete");
        // The prompt admin's part: the model choice and the prompt rules, each with its action.
        await Expect(page.Locator("table[data-testid=services] tr[data-key=support-assistant] [data-testid=prompt-admin]"))
            .ToHaveTextAsync("every model of the tenantcard-numbers → redact, no-secrets → deny");
        await Expect(page.Locator("table[data-testid=services] tr[data-key=analytics] [data-testid=prompt-admin]")).ToContainTextAsync("no prompt rules");
        await browser.ScreenshotAsync(page, "console-services-gaps");
        browser.AssertNoErrors(page);
    }

    [Fact]
    public async Task ConsumersAndServices_UnderATenantKillSwitch_ShowSuspendedByTheTenant()
    {
        await using var demo = await DemoGateway.StartAsync("console-tenant-switch");
        using (var http = AdminClient(demo, "platform-admin"))
        {
            using var response = await http.PostAsync("/admin/v1/kill-switches", Json(new { scope = "tenant", id = "globex", engaged = true, reason = "incident" }));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        var page = await browser.NewPageAsync();
        await SignInAsync(page, demo, "platform-admin");
        await GoAsync(page, demo, "consumers");
        var consumer = page.Locator("table[data-testid=consumers] tr[data-key=globex-dev]");
        await Expect(consumer.Locator(".badge.bad")).ToHaveTextAsync("suspended");
        await Expect(consumer).ToContainTextAsync("by the tenant's kill switch");
        await Expect(consumer).Not.ToContainTextAsync("gpt-4o-mini");
        await Expect(page.Locator("table[data-testid=consumers] tr[data-key=support-web] .badge.ok")).ToHaveTextAsync("active");
        await GoAsync(page, demo, "services");
        await Expect(page.Locator("table[data-testid=services] tr[data-key=globex-copilot] .badge.bad")).ToHaveTextAsync("suspended");
        await Expect(page.Locator("table[data-testid=services] tr[data-key=globex-copilot]")).ToContainTextAsync("by the tenant's kill switch");
        await Expect(page.Locator("[data-testid=card-suspended]")).ToHaveTextAsync("1");
        await browser.ScreenshotAsync(page, "console-tenant-switch");
        browser.AssertNoErrors(page);
    }

    [Theory]
    [InlineData(1280, 800)]
    [InlineData(1920, 1080)]
    public async Task EveryPage_Renders_WithoutErrorsOrSidewaysScrolling(int width, int height)
    {
        await using var demo = await SeededAsync($"console-pages-{width}");
        using (var http = AdminClient(demo, "finance"))
        {
            using var response = await http.PutAsync("/admin/v1/budgets", Json(new { scope = "service", id = "analytics", budget = new { amount = 250, period = "month" }, reason = "Q4 plan" }));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        var page = await browser.NewPageAsync(width, height);
        await SignInAsync(page, demo, "platform-admin");
        foreach (var name in Pages)
        {
            await GoAsync(page, demo, name);
            await Expect(page.Locator("main .error")).ToHaveCountAsync(0);
            var overflow = await page.EvaluateAsync<int>("() => document.documentElement.scrollWidth - window.innerWidth");
            Assert.True(overflow <= 0, $"{name} at {width}px scrolls sideways by {overflow}px");
            await browser.ScreenshotAsync(page, $"console-{name}-{width}");
        }

        // The pages behind a selection: a version's diff, and a request's detail.
        await GoAsync(page, demo, "policy", "1", "2");
        await Expect(page.Locator("[data-testid=changes]")).ToContainTextAsync("services[analytics].limits.budget");
        await Expect(page.Locator("[data-testid=diff] .added").First).ToBeVisibleAsync();
        await browser.ScreenshotAsync(page, $"console-policy-diff-{width}");
        await GoAsync(page, demo, "ledger");
        await page.ClickAsync("table[data-testid=ledger] tbody tr:first-child");
        await Expect(page.Locator("table[data-testid=controls]")).ToBeVisibleAsync();
        await browser.ScreenshotAsync(page, $"console-ledger-entry-{width}");
        browser.AssertNoErrors(page);
    }

    /// <summary>A demo gateway with traffic: three allowed chats of support-web and one refused (a model it is not entitled to).</summary>
    private static async Task<DemoGateway> SeededAsync(string name)
    {
        var demo = await DemoGateway.StartAsync(name);
        var key = demo.ConsumerKey("support-web");
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(HttpStatusCode.OK, (await DemoGateway.ChatAsync(demo.Gateway.DataPlaneUri, key)).Status);
        }

        Assert.Equal("deny.model_not_entitled", (await DemoGateway.ChatAsync(demo.Gateway.DataPlaneUri, key, "gpt-4o")).Code);
        await demo.Gateway.Ledger.FlushAsync();
        return demo;
    }

    private static async Task SignInAsync(IPage page, DemoGateway demo, string role)
    {
        await page.GotoAsync(new Uri(demo.Gateway.AdminUri, "/").ToString());
        await page.FillAsync("input[name=key]", demo.AdminKey(role));
        await page.ClickAsync("button[type=submit]");
        await Expect(page.Locator("main[data-ready]")).ToBeVisibleAsync();
    }

    private static async Task GoAsync(IPage page, DemoGateway demo, string name, params string[] rest)
    {
        var hash = string.Join('/', [name, .. rest]);
        await page.GotoAsync(new Uri(demo.Gateway.AdminUri, "/console/#/" + hash).ToString());
        await Expect(page.Locator($"main[data-ready='{name}']")).ToBeVisibleAsync();
    }

    private static async Task<decimal> SpendAsync(DemoGateway demo, string service)
        => (await demo.LedgerAsync(new LedgerQuery { Service = service, Limit = 100_000 }))
            .Where(e => e.GetProperty("cost").ValueKind == JsonValueKind.String)
            .Sum(e => decimal.Parse(e.GetProperty("cost").GetString()!, CultureInfo.InvariantCulture));

    /// <summary>Clicks <paramref name="button"/>, gives <paramref name="reason"/> in the dialog it opens, and confirms.</summary>
    private static async Task ConfirmWithReasonAsync(IPage page, string button, string reason)
    {
        await page.ClickAsync(button);
        await page.FillAsync("dialog textarea[name=reason]", reason);
        await page.ClickAsync("dialog button[type=submit]");
    }

    private static HttpClient AdminClient(DemoGateway demo, string role)
    {
        var http = new HttpClient { BaseAddress = demo.Gateway.AdminUri };
        http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", demo.AdminKey(role));
        return http;
    }

    private static StringContent Json(object body) => new(JsonSerializer.Serialize(body), System.Text.Encoding.UTF8, "application/json");
}
