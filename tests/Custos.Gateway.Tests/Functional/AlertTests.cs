using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Custos.Gateway.ControlPlane;
using Custos.Policy;
using Custos.Testing;
using Microsoft.Extensions.Time.Testing;
using static Custos.Gateway.Tests.Functional.ControlPlaneFixture;

namespace Custos.Gateway.Tests.Functional;

/// <summary>
/// Detection and response end to end: real traffic through a real gateway raises alerts, routed to the owner role
/// responsible, signed, delivered through the outbox exactly once per alert across a receiver outage, escalated when
/// not acknowledged; an agent far above its baseline is suspended automatically and an owner's resume restores it.
/// </summary>
public sealed class AlertTests
{
    private const string Hooks = "http://hooks.test/";

    /// <summary>Every owner role of every service gets its own webhook, so routing is visible in the URL.</summary>
    private static PolicyDocument WithWebhooks(PolicyDocument policy, AlertsConfig alerts) => policy with
    {
        Alerts = alerts,
        Services =
        [
            .. policy.Services.Select(s => s with
            {
                Owners = new ServiceOwners
                {
                    Policy = Hook(s.Id, "policy", s.Owners.Policy?.Admin),
                    Billing = Hook(s.Id, "billing"),
                    Technical = Hook(s.Id, "technical"),
                    AgentOperator = s.Id == "agents" ? Hook(s.Id, "agent_operator") : null,
                    BusinessSponsor = s.Id == "agents" ? Hook(s.Id, "business_sponsor") : null,
                },
            }),
        ],
    };

    private static OwnerConfig Hook(string service, string role, string? admin = null)
        => new() { Name = $"{service} {role}", Webhook = new Uri($"{Hooks}{service}/{role}"), Admin = admin };

    private static readonly OwnerConfig Security = new() { Name = "secops", Webhook = new Uri(Hooks + "security"), WebhookFormat = WebhookFormat.Slack };

    private static Task<TestGateway> StartAsync(WebhookReceiver hooks, AlertsConfig alerts, TimeProvider? time = null)
        => TestGateway.StartAsync((test, policy) => WithWebhooks(Customize(test, policy), alerts), notificationHandler: hooks, time: time);

    private static async Task<(HttpStatusCode Status, string? Code)> ChatAsync(TestGateway test, string key, string model = "gpt-4o-mini", string? agentRun = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent($$"""{"model":"{{model}}","messages":[{"role":"user","content":"hello there"}],"max_tokens":16}""", Encoding.UTF8, "application/json"),
        };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        if (agentRun is not null)
        {
            request.Headers.Add("X-Custos-Agent-Run", agentRun);
        }

        using var response = await test.Client.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        return (response.StatusCode, response.IsSuccessStatusCode ? null : JsonDocument.Parse(text).RootElement.GetProperty("error").GetProperty("code").GetString());
    }

    /// <summary>Ten requests with a key that is no key, a minute's burst at <c>AuthFailuresPerMinute = 10</c>, and the alerts settled.</summary>
    private static async Task AuthFailureBurstAsync(TestGateway test)
    {
        for (var i = 0; i < 10; i++)
        {
            Assert.Equal(HttpStatusCode.Unauthorized, (await ChatAsync(test, "csk_" + new string('x', 40))).Status);
        }

        await SettleAsync(test);
    }

    /// <summary>The <c>auth.failures</c> alerts among <paramref name="alerts"/>.</summary>
    private static List<JsonElement> AuthFailureAlerts(JsonElement[] alerts) => [.. alerts.Where(a => a.GetProperty("type").GetString() == "auth.failures")];

    private static async Task SettleAsync(TestGateway test)
    {
        await test.Gateway.Ledger.FlushAsync();
        await test.Gateway.Alerts.WaitIdleAsync();
    }

    private static async Task<JsonElement[]> AlertsAsync(TestGateway test, string admin = "root")
        => [.. (await JsonAsync(await AdminAsync(test, admin, HttpMethod.Get, "/admin/v1/alerts"))).EnumerateArray()];

    [Fact]
    public async Task RefusedAdminSignIns_AreOnRecord_WithoutTheKey_AndCountTowardTheSourcesAuthFailures()
    {
        // Guessing admin keys left no trace: no ledger entry, no log line, no alert. Now each refusal is an entry, and the
        // admin API's and the data plane's refusals from one source add up to one auth.failures alert.
        var hooks = new WebhookReceiver();
        await using var g = await StartAsync(hooks, new AlertsConfig { Security = Security, AuthFailuresPerMinute = 10 }, time: null);
        var guessed = Custos.Identity.ApiKey.Generate(Custos.Identity.ApiKeyKind.Admin);
        using var admin = new HttpClient { BaseAddress = g.Gateway.AdminUri };
        async Task<HttpStatusCode> SignIn(string? key)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "/admin/v1/whoami");
            if (key is not null)
            {
                request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", key);
            }

            using var response = await admin.SendAsync(request);
            return response.StatusCode;
        }

        for (var i = 0; i < 4; i++)
        {
            Assert.Equal(HttpStatusCode.Unauthorized, await SignIn(guessed));
        }

        Assert.Equal(HttpStatusCode.Unauthorized, await SignIn(g.KeyOf("web")));
        Assert.Equal(HttpStatusCode.Unauthorized, await SignIn(null));
        await SettleAsync(g);
        Assert.DoesNotContain(await AlertsAsync(g), a => a.GetProperty("type").GetString() == "auth.failures");

        var denied = (await AdminEntriesAsync(g)).Where(e => e.GetProperty("action").GetString() == "admin.sign_in_denied").ToList();
        Assert.Equal(6, denied.Count);
        Assert.All(denied, e => Assert.Equal(("unauthenticated", "source:127.0.0.1"), (e.GetProperty("actor").GetString(), e.GetProperty("target").GetString())));
        Assert.Equal(["admin.unknown_key", "admin.unknown_key", "admin.unknown_key", "admin.unknown_key", "admin.unauthenticated", "admin.unauthenticated"],
            denied.Select(e => e.GetProperty("after").GetString()));
        Assert.StartsWith($"an unknown admin key ({guessed[..12]}…) on GET /admin/v1/whoami (request req_", denied[0].GetProperty("reason").GetString(), StringComparison.Ordinal);
        Assert.StartsWith($"a consumer key ({g.KeyOf("web")[..12]}…)", denied[4].GetProperty("reason").GetString(), StringComparison.Ordinal);
        Assert.StartsWith("no credential", denied[5].GetProperty("reason").GetString(), StringComparison.Ordinal);
        var ledger = string.Join("\n", (await AdminEntriesAsync(g)).Select(e => e.GetRawText()));
        Assert.DoesNotContain(guessed, ledger, StringComparison.Ordinal);
        Assert.DoesNotContain(g.KeyOf("web"), ledger, StringComparison.Ordinal);

        // Four bad keys on the data plane make ten from this source within the minute.
        for (var i = 0; i < 4; i++)
        {
            Assert.Equal(HttpStatusCode.Unauthorized, (await ChatAsync(g, "csk_" + new string('x', 40))).Status);
        }

        await SettleAsync(g);
        var stuffing = Assert.Single(await AlertsAsync(g), a => a.GetProperty("type").GetString() == "auth.failures");
        Assert.Equal("source:127.0.0.1", stuffing.GetProperty("subject").GetString());
        Assert.Contains("admin.unknown_key ×4", stuffing.GetProperty("evidence").GetProperty("reasons").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task ARefusedSignIns_Path_IsRecordedCutAndWithoutSecrets()
    {
        // The path of a refused sign-in was quoted whole: anyone could write kilobytes, or a key in the path, into the ledger.
        await using var g = await StartAsync(new WebhookReceiver(), new AlertsConfig { Security = Security }, time: null);
        using var admin = new HttpClient { BaseAddress = g.Gateway.AdminUri };
        const string Secret = "sk-proj-abcdefghijklmnopqrstuvwx0123456789";
        using (var response = await admin.GetAsync($"/admin/v1/{Secret}/{new string('a', 4000)}"))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        }

        await SettleAsync(g);
        var reason = (await AdminEntriesAsync(g)).Single(e => e.GetProperty("action").GetString() == "admin.sign_in_denied").GetProperty("reason").GetString()!;
        Assert.StartsWith("no credential on GET /admin/v1/", reason, StringComparison.Ordinal);
        Assert.DoesNotContain(Secret, reason, StringComparison.Ordinal);
        Assert.True(reason.Length < 400, $"{reason.Length} characters recorded");
    }

    [Fact]
    public async Task EachAlertGoesToTheOwnerRoleResponsible_SignedWithHmac()
    {
        var hooks = new WebhookReceiver();
        await using var g = await StartAsync(hooks, new AlertsConfig { Security = Security, AuthFailuresPerMinute = 10, AgentRunRequestsPerMinute = 5 },
            time: null);
        await g.Gateway.ChangePolicyAsync(doc => doc with
        {
            Consumers = [.. doc.Consumers.Select(c => c.Id == "web" ? c with { Limits = new LimitsConfig { Budget = new BudgetConfig { Amount = 0.0002m, Mode = BudgetMode.Soft } } } : c)],
        }, "test", "a tiny soft budget");

        // Spend: web's soft budget crosses 50, 80 and 100 per cent. Entitlement: its first use of a model.
        for (var i = 0; i < 12; i++)
        {
            Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("web"))).Status);
        }

        // Abuse: a burst of bad keys from one source. Agents: one run fanning out.
        for (var i = 0; i < 10; i++)
        {
            Assert.Equal(HttpStatusCode.Unauthorized, (await ChatAsync(g, "csk_" + new string('x', 40))).Status);
        }

        for (var i = 0; i < 5; i++)
        {
            Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("agent"), "gpt-4o", agentRun: "run-42")).Status);
        }

        await SettleAsync(g);
        var alerts = await AlertsAsync(g);
        string[] types = ["budget.threshold", "budget.exhausted", "model.first_use", "auth.failures", "agent.fanout"];
        Assert.Equal(types.Order(), alerts.Select(a => a.GetProperty("type").GetString()).Distinct().Order());

        var signer = WebhookSigner.LoadOrCreate(g.DataDirectory, _ => null, out _);
        var expected = new Dictionary<string, string[]>
        {
            ["budget.threshold"] = ["support/billing"],
            ["budget.exhausted"] = ["support/billing"],
            ["model.first_use"] = ["support/policy", "agents/policy", "agents/agent_operator"],
            ["auth.failures"] = ["security"],
            ["agent.fanout"] = ["agents/technical", "agents/agent_operator"],
        };
        foreach (var alert in alerts)
        {
            var id = alert.GetProperty("id").GetString()!;
            var type = alert.GetProperty("type").GetString()!;
            var consumer = alert.GetProperty("consumer").ValueKind == JsonValueKind.String ? alert.GetProperty("consumer").GetString() : null;
            var messages = await hooks.WaitForAlertAsync(id, expected[type].Count(p => consumer is null || !p.StartsWith(consumer == "web" ? "agents" : "support", StringComparison.Ordinal)));
            foreach (var message in messages)
            {
                Assert.Contains(message.Uri.AbsolutePath.TrimStart('/'), expected[type]);
                Assert.True(signer.Verify(message.Timestamp, Encoding.UTF8.GetBytes(message.Body), message.Signature), $"bad signature on {message.Uri}");
            }
        }

        // The budget alerts name the thresholds crossed; security's Slack message carries the alert id in its text.
        Assert.Equal(["100", "50", "80"], alerts.Where(a => a.GetProperty("type").GetString()!.StartsWith("budget", StringComparison.Ordinal))
            .Select(a => a.GetProperty("evidence").GetProperty("threshold_percent").GetString()).Order());
        var stuffing = Assert.Single(alerts, a => a.GetProperty("type").GetString() == "auth.failures");
        var slack = Assert.Single(hooks.Received, m => m.Uri.AbsolutePath == "/security");
        using (var body = JsonDocument.Parse(slack.Body))
        {
            Assert.Contains(stuffing.GetProperty("id").GetString()!, body.RootElement.GetProperty("text").GetString(), StringComparison.Ordinal);
            Assert.Equal("section", body.RootElement.GetProperty("blocks")[0].GetProperty("type").GetString());
        }

        // A tampered body does not verify.
        var any = hooks.Received.First();
        Assert.False(signer.Verify(any.Timestamp, Encoding.UTF8.GetBytes(any.Body + " "), any.Signature));

        // And counted in the metrics, by type and severity.
        using (var http = new HttpClient { BaseAddress = g.Gateway.AdminUri })
        {
            var metrics = await http.GetStringAsync("/metrics");
            Assert.Matches("custos_alerts_total\\{[^}]*custos_alert_severity=\"critical\"[^}]*custos_alert_type=\"auth.failures\"[^}]*\\} 1", metrics);
        }

        // Every alert is in the ledger too, raised by the gateway itself.
        var raised = (await AdminEntriesAsync(g)).Where(e => e.GetProperty("action").GetString() == "alert.raised").ToList();
        Assert.Equal(alerts.Select(a => "alert:" + a.GetProperty("id").GetString()).Order(), raised.Select(e => e.GetProperty("target").GetString()).Order());
        Assert.All(raised, e => Assert.Equal("custos:alerts", e.GetProperty("actor").GetString()));

        // The entry names the request that raised the alert and the version it ran under: the alerts table, which can be
        // edited, was the only record of either.
        foreach (var alert in alerts.Where(a => a.GetProperty("request_id").ValueKind == JsonValueKind.String))
        {
            var entry = raised.Single(e => e.GetProperty("target").GetString() == "alert:" + alert.GetProperty("id").GetString());
            Assert.Contains($"Raised by request {alert.GetProperty("request_id").GetString()} (policy version {alert.GetProperty("policy_version").GetInt64()}).",
                entry.GetProperty("reason").GetString(), StringComparison.Ordinal);
        }
    }

    [Fact]
    public void SlackText_EscapesWhatCallersSent_SoAMentionOrALinkShowsAsTheCharactersSent()
    {
        var alert = new Custos.Alerts.Alert
        {
            Id = "al-7",
            Signal = new Custos.Alerts.AlertSignal
            {
                Type = "agent.fanout",
                Severity = Custos.Alerts.AlertSeverity.Warning,
                Fingerprint = "f",
                Subject = "run:x",
                Summary = "Agent run '<!channel> <https://evil.example/ack|Acknowledge here>' & co made 120 requests within a minute.",
                At = DateTimeOffset.UnixEpoch,
                Service = "agents",
                Consumer = "agent<@U123>",
                RequestId = "req_1",
            },
            RaisedAt = DateTimeOffset.UnixEpoch,
            ActionTaken = "throttled <b>",
        };

        var text = Custos.Gateway.Alerts.AlertEngine.SlackText(alert, "alert.raised");

        Assert.DoesNotContain("<!channel>", text, StringComparison.Ordinal);
        Assert.DoesNotContain("<https://evil.example", text, StringComparison.Ordinal);
        Assert.DoesNotContain("<@U123>", text, StringComparison.Ordinal);
        Assert.Contains("'&lt;!channel&gt; &lt;https://evil.example/ack|Acknowledge here&gt;' &amp; co made", text, StringComparison.Ordinal);
        Assert.Contains("Consumer: agent&lt;@U123&gt;", text, StringComparison.Ordinal);
        Assert.Contains("*Action taken:* throttled &lt;b&gt;", text, StringComparison.Ordinal);
        Assert.Contains("`custos alerts ack al-7`", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AnAuthBurstWithAnotherTenantsKey_FromTheSameAddress_IsThatTenantsAlert_AndEachContactIsListedOnce()
    {
        // Arrange: globex's key revoked; a burst with it from 127.0.0.1 raises globex's alert.
        var hooks = new WebhookReceiver();
        var clock = new FakeTimeProvider(new DateTimeOffset(2026, 11, 30, 9, 0, 0, TimeSpan.Zero));
        await using var g = await StartAsync(hooks, new AlertsConfig { Security = Security, AuthFailuresPerMinute = 10 }, clock);
        await g.Gateway.ChangePolicyAsync(doc => doc with
        {
            Credentials = [.. doc.Credentials.Select(c => c.Id == "cred-globex" ? c with { Status = CredentialStatus.Revoked } : c)],
        }, "test", "globex's key revoked");
        for (var i = 0; i < 10; i++)
        {
            Assert.Equal(HttpStatusCode.Unauthorized, (await ChatAsync(g, g.KeyOf("globex-user"), "globex-only")).Status);
        }

        await SettleAsync(g);
        var globex = Assert.Single(await AlertsAsync(g), a => a.GetProperty("type").GetString() == "auth.failures");
        Assert.Equal("globex", globex.GetProperty("tenant").GetString());

        // Act: two minutes later, a burst with acme's suspended key from the same address.
        clock.Advance(TimeSpan.FromMinutes(2));
        for (var i = 0; i < 10; i++)
        {
            Assert.Equal(HttpStatusCode.Unauthorized, (await ChatAsync(g, g.KeyOf("suspended-user"))).Status);
        }

        await SettleAsync(g);

        // Assert: acme's own alert, told to acme's technical owner and security; globex's alert is unchanged.
        var bursts = (await AlertsAsync(g)).Where(a => a.GetProperty("type").GetString() == "auth.failures").ToList();
        Assert.Equal(2, bursts.Count);
        var acme = Assert.Single(bursts, a => a.GetProperty("tenant").GetString() == "acme");
        Assert.Equal("suspended-user", acme.GetProperty("consumer").GetString());
        var told = await hooks.WaitForAlertAsync(acme.GetProperty("id").GetString()!, 2);
        Assert.Equal(["/security", "/support/technical"], told.Select(m => m.Uri.AbsolutePath).Order());
        var globexId = globex.GetProperty("id").GetString()!;
        Assert.Equal(1, (await JsonAsync(await AdminAsync(g, "root", HttpMethod.Get, $"/admin/v1/alerts/{globexId}"))).GetProperty("occurrences").GetInt64());

        // Security, told when it was raised, is told again when it escalates, but listed once.
        Assert.Equal(2, await g.Gateway.Alerts.EscalateDueAsync(clock.GetUtcNow().AddMinutes(31)));
        var view = await JsonAsync(await AdminAsync(g, "root", HttpMethod.Get, $"/admin/v1/alerts/{globexId}"));
        var recipients = view.GetProperty("recipients").EnumerateArray().Select(r => r.GetString()).ToList();
        Assert.Equal(["globex-app technical (technical)", "secops (security)", "globex-app policy (policy)"], recipients);
        Assert.Equal(["technical", "security", "policy"], view.GetProperty("notified_roles").EnumerateArray().Select(r => r.GetString()));
    }

    [Fact]
    public async Task AnAcknowledgedAlert_AbsorbsRepeatsForAnHourFromItsAcknowledgement_ThenARepeatIsANewAlert()
    {
        var hooks = new WebhookReceiver();
        var clock = new FakeTimeProvider(new DateTimeOffset(2026, 11, 30, 9, 0, 0, TimeSpan.Zero));
        await using var g = await StartAsync(hooks, new AlertsConfig { Security = Security, AuthFailuresPerMinute = 10 }, clock);
        await AuthFailureBurstAsync(g);
        var first = Assert.Single(AuthFailureAlerts(await AlertsAsync(g))).GetProperty("id").GetString()!;
        await JsonAsync(await AdminAsync(g, "root", HttpMethod.Post, $"/admin/v1/alerts/{first}/ack", new { note = "on it" }));

        // A burst every 25 minutes: the first two within the hour after the acknowledgement are occurrences, though each
        // moves the alert's last occurrence; the third, 75 minutes after it, is a new alert (it was muted for good).
        clock.Advance(TimeSpan.FromMinutes(25));
        await AuthFailureBurstAsync(g);
        clock.Advance(TimeSpan.FromMinutes(25));
        await AuthFailureBurstAsync(g);
        var bursts = AuthFailureAlerts(await AlertsAsync(g));
        Assert.Equal(3, Assert.Single(bursts).GetProperty("occurrences").GetInt64());
        clock.Advance(TimeSpan.FromMinutes(25));
        await AuthFailureBurstAsync(g);
        bursts = AuthFailureAlerts(await AlertsAsync(g));
        Assert.Equal(2, bursts.Count);
        Assert.Equal("open", bursts.Single(a => a.GetProperty("id").GetString() != first).GetProperty("status").GetString());
    }

    [Fact]
    public async Task AnAlertAcknowledgedOrResolvedThroughAnotherNode_IsNotReopenedByARepeatHere()
    {
        // With two nodes on one store, an acknowledgement made through the other node's admin API was written over by this
        // node's next occurrence (its copy still said open): the alert read open again and escalated, and a resolved one
        // came back to life. Now a repeat counts on the alert as the store has it.
        var hooks = new WebhookReceiver();
        var clock = new FakeTimeProvider(new DateTimeOffset(2026, 11, 30, 9, 0, 0, TimeSpan.Zero));
        await using var g = await StartAsync(hooks, new AlertsConfig { Security = Security, AuthFailuresPerMinute = 10 }, clock);
        await AuthFailureBurstAsync(g);
        var id = Assert.Single(AuthFailureAlerts(await AlertsAsync(g))).GetProperty("id").GetString()!;
        var stored = (await g.Gateway.Store.GetAlertAsync(id))!;
        await g.Gateway.Store.UpdateAlertAsync(stored with
        {
            Status = Custos.Alerts.AlertStatus.Acknowledged,
            AcknowledgedBy = "other-node-admin",
            AcknowledgedAt = clock.GetUtcNow(),
        });

        clock.Advance(TimeSpan.FromMinutes(2));
        await AuthFailureBurstAsync(g);
        var alert = Assert.Single(AuthFailureAlerts(await AlertsAsync(g)));
        Assert.Equal(("acknowledged", "other-node-admin", 2L), (alert.GetProperty("status").GetString(), alert.GetProperty("acknowledged_by").GetString(),
            alert.GetProperty("occurrences").GetInt64()));

        stored = (await g.Gateway.Store.GetAlertAsync(id))!;
        await g.Gateway.Store.UpdateAlertAsync(stored with { Status = Custos.Alerts.AlertStatus.Resolved, ResolvedBy = "other-node-admin", ResolvedAt = clock.GetUtcNow() });
        clock.Advance(TimeSpan.FromMinutes(2));
        await AuthFailureBurstAsync(g);
        var bursts = AuthFailureAlerts(await AlertsAsync(g));
        Assert.Equal(2, bursts.Count);
        Assert.Equal("resolved", bursts.Single(a => a.GetProperty("id").GetString() == id).GetProperty("status").GetString());
        Assert.Equal("open", bursts.Single(a => a.GetProperty("id").GetString() != id).GetProperty("status").GetString());
    }

    [Fact]
    public async Task ASignalAnotherNodeRaisedAlready_CountsOnItsAlert_InsteadOfASecondAlertAndMessage()
    {
        // Each node judges the traffic it serves, so two nodes raised one alert each for the same thing (a consumer's first
        // use of a model served by both, a budget both saw exhausted), and its owners were told twice.
        var hooks = new WebhookReceiver();
        await using var g = await StartAsync(hooks, new AlertsConfig { Security = Security });
        var other = await g.StoreAlertAsync("model.first_use", Custos.Alerts.AlertSeverity.Info, "model.first_use|web|gpt-4o-mini", "web used model gpt-4o-mini for the first time.");

        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("web"))).Status);
        await SettleAsync(g);

        var alert = Assert.Single(await AlertsAsync(g), a => a.GetProperty("consumer").GetString() == "web");
        Assert.Equal((other.Id, 2L), (alert.GetProperty("id").GetString(), alert.GetProperty("occurrences").GetInt64()));
        await Task.Delay(300);
        Assert.DoesNotContain(hooks.Received, m => m.AlertId == other.Id);
    }

    [Fact]
    public async Task AnAlertWithoutAnAction_IsResolvedWithAReason_ByWhoMayAcknowledgeIt_AndARepeatIsThenANewAlert()
    {
        var hooks = new WebhookReceiver();
        await using var g = await StartAsync(hooks, new AlertsConfig { Security = Security });
        await ChatAsync(g, g.KeyOf("web"));
        await SettleAsync(g);
        var id = Assert.Single(await AlertsAsync(g), a => a.GetProperty("consumer").GetString() == "web").GetProperty("id").GetString()!;

        // Resume has nothing to undo; resolve closes it, with the admin and the reason, in the ledger too.
        Assert.Equal(HttpStatusCode.Conflict, (await AdminAsync(g, "support-owner", HttpMethod.Post, $"/admin/v1/alerts/{id}/resume", new { reason = "x" })).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await AdminAsync(g, "auditor", HttpMethod.Post, $"/admin/v1/alerts/{id}/resolve", new { reason = "x" })).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await AdminAsync(g, "support-owner", HttpMethod.Post, $"/admin/v1/alerts/{id}/resolve", new { reason = "" })).StatusCode);
        var resolved = await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, $"/admin/v1/alerts/{id}/resolve", new { reason = "expected: a new release" }));
        Assert.Equal(("resolved", "support-owner", "expected: a new release"),
            (resolved.GetProperty("status").GetString(), resolved.GetProperty("resolved_by").GetString(), resolved.GetProperty("note").GetString()));
        Assert.Equal(HttpStatusCode.Conflict, (await AdminAsync(g, "support-owner", HttpMethod.Post, $"/admin/v1/alerts/{id}/resolve", new { reason = "again" })).StatusCode);
        var entry = Assert.Single(await AdminEntriesAsync(g), e => e.GetProperty("action").GetString() == "alert.resolved");
        Assert.Equal(("support-owner", "alert:" + id, "open", "resolved", "expected: a new release"), (entry.GetProperty("actor").GetString(), entry.GetProperty("target").GetString(),
            entry.GetProperty("before").GetString(), entry.GetProperty("after").GetString(), entry.GetProperty("reason").GetString()));
    }

    [Fact]
    public async Task UnacknowledgedAlertsEscalate_ToTheNextContactAndSecurity()
    {
        var hooks = new WebhookReceiver();
        await using var g = await StartAsync(hooks, new AlertsConfig { Security = Security, EscalateAfterMinutes = 30 });
        await ChatAsync(g, g.KeyOf("web"));
        await ChatAsync(g, g.KeyOf("agent"), "gpt-4o");
        await SettleAsync(g);
        var alerts = await AlertsAsync(g);
        var web = Assert.Single(alerts, a => a.GetProperty("consumer").GetString() == "web").GetProperty("id").GetString()!;
        var agent = Assert.Single(alerts, a => a.GetProperty("consumer").GetString() == "agent").GetProperty("id").GetString()!;
        await hooks.WaitForAlertAsync(agent, 2);

        // The scope narrows before the limit: the support owner's last alert is web's, though the gateway's last is agent's.
        Assert.True(string.CompareOrdinal(agent, web) > 0 && agent.Length >= web.Length, $"{agent} after {web}");
        var mine = await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Get, "/admin/v1/alerts?limit=1"));
        Assert.Equal(web, Assert.Single(mine.EnumerateArray()).GetProperty("id").GetString());

        // An owner acknowledges the web alert; finance may not acknowledge an alert outside its tenants' scope... but is in acme.
        var acked = await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, $"/admin/v1/alerts/{web}/ack", new { note = "looking" }));
        Assert.Equal(("acknowledged", "support-owner"), (acked.GetProperty("status").GetString(), acked.GetProperty("acknowledged_by").GetString()));
        var outOfScope = await AdminAsync(g, "globex-owner", HttpMethod.Post, $"/admin/v1/alerts/{agent}/ack", new { note = "not mine" });
        Assert.Equal(HttpStatusCode.Forbidden, outOfScope.StatusCode);
        var auditor = await AdminAsync(g, "auditor", HttpMethod.Post, $"/admin/v1/alerts/{agent}/ack", new { });
        Assert.Equal(HttpStatusCode.Forbidden, auditor.StatusCode);

        // Before the deadline nothing escalates; after it, only the unacknowledged alert, once.
        var now = g.Gateway.Time.GetUtcNow();
        Assert.Equal(0, await g.Gateway.Alerts.EscalateDueAsync(now.AddMinutes(29)));
        Assert.Equal(1, await g.Gateway.Alerts.EscalateDueAsync(now.AddMinutes(31)));
        Assert.Equal(0, await g.Gateway.Alerts.EscalateDueAsync(now.AddMinutes(90)));

        // It was with the agents' policy owner and agent operator: next on the ladder is the technical owner, and security.
        var escalated = await hooks.WaitForAlertAsync(agent, 4);
        Assert.Equal(["/agents/technical", "/security"], escalated.Where(m => m.Event == "alert.escalated" || m.Uri.AbsolutePath == "/security")
            .Select(m => m.Uri.AbsolutePath).Order());
        var view = await JsonAsync(await AdminAsync(g, "root", HttpMethod.Get, $"/admin/v1/alerts/{agent}"));
        Assert.Equal(JsonValueKind.String, view.GetProperty("escalated_at").ValueKind);
        Assert.Equal(["policy", "agent_operator", "technical", "security"], view.GetProperty("notified_roles").EnumerateArray().Select(r => r.GetString()));
        Assert.DoesNotContain(hooks.Received, m => m.AlertId == web && m.Event == "alert.escalated");

        var entries = await AdminEntriesAsync(g);
        Assert.Contains(entries, e => e.GetProperty("action").GetString() == "alert.escalated" && e.GetProperty("target").GetString() == "alert:" + agent
            && e.GetProperty("reason").GetString() == "not acknowledged within 30 minutes");
        Assert.Contains(entries, e => e.GetProperty("action").GetString() == "alert.acknowledged" && e.GetProperty("actor").GetString() == "support-owner");
    }

    [Fact]
    public async Task AgentAtTenTimesItsBaseline_IsSuspended_AndAnOwnersResumeRestoresIt()
    {
        var clock = new FakeTimeProvider(new DateTimeOffset(2026, 11, 30, 9, 0, 0, TimeSpan.Zero));
        var hooks = new WebhookReceiver();
        await using var g = await StartAsync(hooks, new AlertsConfig
        {
            BaselineWarmupMinutes = 3,
            Disabled = ["model.first_use"],
            Categories = new CategoryAlertsSet { Agent = new CategoryAlertConfig { MinRequestsPerMinute = 5 } },
        }, clock);
        var key = g.KeyOf("agent");

        // Its baseline: one request a minute for five minutes.
        for (var minute = 0; minute < 5; minute++)
        {
            Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, key, "gpt-4o")).Status);
            clock.Advance(TimeSpan.FromMinutes(1));
        }

        // Then a burst: the tenth request in the minute is 10× the baseline.
        var served = 0;
        (HttpStatusCode Status, string? Code) last = default;
        for (var i = 0; i < 15; i++)
        {
            last = await ChatAsync(g, key, "gpt-4o");
            if (last.Status != HttpStatusCode.OK)
            {
                break;
            }

            served++;
            await SettleAsync(g);
        }

        Assert.Equal(10, served);
        Assert.Equal((HttpStatusCode.Unauthorized, "deny.credential_suspended"), last);

        var alert = Assert.Single(await AlertsAsync(g), a => a.GetProperty("severity").GetString() == "critical");
        var id = alert.GetProperty("id").GetString()!;
        Assert.Equal("suspended credential cred-agent", alert.GetProperty("action_taken").GetString());
        Assert.Equal("10", alert.GetProperty("evidence").GetProperty("observed_per_minute").GetString());

        // The suspension is a ledger entry by the gateway with the rule and the evidence, and a new policy version.
        var suspend = Assert.Single(await AdminEntriesAsync(g), e => e.GetProperty("action").GetString() == "credential.suspended");
        Assert.Equal(("custos:alerts", "credential:cred-agent"), (suspend.GetProperty("actor").GetString(), suspend.GetProperty("target").GetString()));
        Assert.Contains("10× its baseline suspends the credential", suspend.GetProperty("reason").GetString(), StringComparison.Ordinal);
        Assert.Contains("observed_per_minute", suspend.GetProperty("reason").GetString(), StringComparison.Ordinal);

        // Resuming takes an owner in scope, with a reason; someone else's owner, or no reason, is refused.
        Assert.Equal(HttpStatusCode.Forbidden, (await AdminAsync(g, "support-owner", HttpMethod.Post, $"/admin/v1/alerts/{id}/resume", new { reason = "x" })).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await AdminAsync(g, "agents-owner", HttpMethod.Post, $"/admin/v1/alerts/{id}/resume", new { reason = "" })).StatusCode);

        // An admin lifts the suspension by another route while the alert is open, and the agent goes on: it is stopped
        // again, by a new alert; the first is closed, saying why. (Counting occurrences of the open alert left it running.)
        await JsonAsync(await AdminAsync(g, "agents-owner", HttpMethod.Post, "/admin/v1/credentials/cred-agent/resume", new { reason = "checked by hand" }));
        clock.Advance(TimeSpan.FromMinutes(1)); // the detector judges each minute once per level: the next minute's burst
        var again = 0;
        for (; again < 80 && (await ChatAsync(g, key, "gpt-4o")).Status == HttpStatusCode.OK; again++)
        {
            await SettleAsync(g);
        }

        Assert.True(again < 80, "the agent should have been suspended again");
        var alerts = await AlertsAsync(g);
        var first = Assert.Single(alerts, a => a.GetProperty("id").GetString() == id);
        Assert.Equal(("resolved", "custos:alerts"), (first.GetProperty("status").GetString(), first.GetProperty("resolved_by").GetString()));
        var second = Assert.Single(alerts, a => a.GetProperty("severity").GetString() == "critical" && a.GetProperty("status").GetString() == "open");
        Assert.Equal("suspended credential cred-agent", second.GetProperty("action_taken").GetString());
        Assert.Equal(2, (await AdminEntriesAsync(g)).Count(e => e.GetProperty("action").GetString() == "credential.suspended"));
        Assert.Equal(HttpStatusCode.Conflict, (await AdminAsync(g, "agents-owner", HttpMethod.Post, $"/admin/v1/alerts/{id}/resume", new { reason = "the old one" })).StatusCode);

        var secondId = second.GetProperty("id").GetString()!;
        var resumed = await JsonAsync(await AdminAsync(g, "agents-owner", HttpMethod.Post, $"/admin/v1/alerts/{secondId}/resume",
            new { reason = "batch job was a planned backfill" }));
        Assert.Equal(("resolved", "agents-owner"), (resumed.GetProperty("alert").GetProperty("status").GetString(),
            resumed.GetProperty("alert").GetProperty("resolved_by").GetString()));

        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, key, "gpt-4o")).Status);
        var entries = await AdminEntriesAsync(g);
        Assert.Contains(entries, e => e.GetProperty("action").GetString() == "credential.resumed" && e.GetProperty("actor").GetString() == "agents-owner"
            && e.GetProperty("reason").GetString()!.Contains("planned backfill", StringComparison.Ordinal));
        Assert.Equal(HttpStatusCode.Conflict, (await AdminAsync(g, "agents-owner", HttpMethod.Post, $"/admin/v1/alerts/{secondId}/resume", new { reason = "again" })).StatusCode);

        // Like any credential action, the undo is told to the service's technical owner.
        await Eventually.TrueAsync(() => hooks.Received.Any(d => d.Event == "credential.resumed" && d.Uri.AbsolutePath == "/agents/technical"
            && d.Body.Contains("planned backfill", StringComparison.Ordinal)), "the technical owner told of the alert's resume");
    }

    /// <summary>
    /// A gateway whose external consumer <c>web</c> is throttled to 7 a minute at 6× its baseline, with that baseline
    /// made: one request a minute for three minutes.
    /// </summary>
    private static async Task<TestGateway> StartThrottlingAsync()
    {
        var clock = new FakeTimeProvider(new DateTimeOffset(2026, 11, 30, 9, 0, 0, TimeSpan.Zero));
        var g = await StartAsync(new WebhookReceiver(), new AlertsConfig
        {
            BaselineWarmupMinutes = 2,
            Disabled = ["model.first_use"],
            Categories = new CategoryAlertsSet { External = new CategoryAlertConfig { MinRequestsPerMinute = 4, AlertAt = 3, ActAt = 6, ThrottleRequestsPerMinute = 7 } },
        }, clock);
        for (var minute = 0; minute < 3; minute++)
        {
            await ChatAsync(g, g.KeyOf("web"));
            clock.Advance(TimeSpan.FromMinutes(1));
        }

        return g;
    }

    /// <summary>Sets <c>web</c>'s own requests-per-minute limit by hand, as an admin's policy change would.</summary>
    private static Task SetWebLimitAsync(TestGateway g, long? limit) => g.Gateway.ChangeAndRecordAsync("root", "consumer.limits_set", "consumer:web", "by hand", doc => (doc with
    {
        Consumers = [.. doc.Consumers.Select(c => c.Id == "web" ? c with { Limits = c.Limits with { RequestsPerMinute = limit } } : c)],
    }, null, null), _ => null);

    [Fact]
    public async Task ExternalCustomerFarAboveBaseline_IsThrottled_AndResumeLiftsIt()
    {
        await using var g = await StartThrottlingAsync();
        var key = g.KeyOf("web");

        var statuses = new List<HttpStatusCode>();
        for (var i = 0; i < 16; i++)
        {
            statuses.Add((await ChatAsync(g, key)).Status);
            await SettleAsync(g);
        }

        // Throttled at the sixth request (6× the baseline) to 7 a minute from then on: 6 + 7 served, then the limit holds.
        Assert.Equal(13, statuses.Count(s => s == HttpStatusCode.OK));
        Assert.Equal(HttpStatusCode.TooManyRequests, statuses[^1]);
        Assert.Equal(7, g.Gateway.Policy.Current.Document.Consumers.Single(c => c.Id == "web").Limits.RequestsPerMinute);

        var alert = Assert.Single(await AlertsAsync(g), a => a.GetProperty("action_taken").ValueKind == JsonValueKind.String);
        var path = $"/admin/v1/alerts/{alert.GetProperty("id").GetString()}/resume";

        // A tighter limit set by hand since the throttle is not undone by lifting the throttle: a conflict, naming it.
        await SetWebLimitAsync(g, 2);
        using (var overruled = await AdminAsync(g, "support-owner", HttpMethod.Post, path, new { reason = "launch-day traffic" }))
        {
            Assert.Equal(HttpStatusCode.Conflict, overruled.StatusCode);
            Assert.Contains("its limit is 2 now", await overruled.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        Assert.Equal(2, g.Gateway.Policy.Current.Document.Consumers.Single(c => c.Id == "web").Limits.RequestsPerMinute);

        // Back at the throttle's own limit, the resume lifts it.
        await SetWebLimitAsync(g, 7);
        await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, path, new { reason = "launch-day traffic, expected" }));
        Assert.Null(g.Gateway.Policy.Current.Document.Consumers.Single(c => c.Id == "web").Limits.RequestsPerMinute);
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, key)).Status);
    }

    [Fact]
    public async Task AThrottleLiftedByHand_ResolvesItsAlertOnResume_WithoutANewPolicyVersion()
    {
        await using var g = await StartThrottlingAsync();
        var key = g.KeyOf("web");

        for (var i = 0; i < 8; i++)
        {
            await ChatAsync(g, key);
            await SettleAsync(g);
        }

        var alert = Assert.Single(await AlertsAsync(g), a => a.GetProperty("action_taken").ValueKind == JsonValueKind.String);
        await SetWebLimitAsync(g, null);
        var version = g.Gateway.Policy.Current.Version;

        // Undone already: the resume resolves the alert (it stayed open for good before) and makes no policy version.
        var resumed = await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, $"/admin/v1/alerts/{alert.GetProperty("id").GetString()}/resume",
            new { reason = "seen to" }));
        Assert.Equal("resolved", resumed.GetProperty("alert").GetProperty("status").GetString());
        Assert.Equal(version, resumed.GetProperty("policy_version").GetInt64());
        Assert.Equal(version, g.Gateway.Policy.Current.Version);
        Assert.DoesNotContain(await AdminEntriesAsync(g), e => e.GetProperty("action").GetString() == "consumer.unthrottled");
        Assert.Contains(await AdminEntriesAsync(g), e => e.GetProperty("action").GetString() == "alert.resolved"
            && e.GetProperty("reason").GetString()!.Contains("undone already", StringComparison.Ordinal));
    }

    [Fact]
    public async Task AReceiverDownForAWhile_StillGetsEveryAlert_ExactlyOncePerAlertId()
    {
        var hooks = new WebhookReceiver { Down = true };
        await using var g = await StartAsync(hooks, new AlertsConfig { Security = Security });

        // Three first uses (three alerts to the support policy owner) while the receiver answers 503.
        foreach (var model in new[] { "gpt-4o-mini", "mock-no-usage", "mock-error-500" })
        {
            await ChatAsync(g, g.KeyOf("web"), model);
        }

        await SettleAsync(g);
        var ids = (await AlertsAsync(g)).Select(a => a.GetProperty("id").GetString()!).ToList();
        Assert.Equal(3, ids.Count);

        // Down until every alert was refused at least once (the first attempts, then retries with back-off), then up.
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (hooks.Refused < 4 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        hooks.Down = false;
        foreach (var id in ids)
        {
            await hooks.WaitForAlertAsync(id, 1, TimeSpan.FromSeconds(20));
        }

        Assert.True(hooks.Refused >= 4, $"the receiver refused only {hooks.Refused}");
        await Task.Delay(500);
        Assert.Equal(ids.Order(), hooks.Received.Select(m => m.AlertId).Order());
    }

    [Fact]
    public async Task AlertsQueuedWhileTheReceiverIsDown_AreDeliveredAfterARestart_AndFirstUsesAreRemembered()
    {
        var hooks = new WebhookReceiver { Down = true };
        var g = await StartAsync(hooks, new AlertsConfig());
        try
        {
            foreach (var model in new[] { "gpt-4o-mini", "mock-no-usage" })
            {
                await ChatAsync(g, g.KeyOf("web"), model);
            }

            await SettleAsync(g);
            var ids = (await AlertsAsync(g)).Select(a => a.GetProperty("id").GetString()!).Order().ToList();
            Assert.Equal(2, ids.Count);
            var deadline = DateTime.UtcNow.AddSeconds(20);
            while (hooks.Refused < 2 && DateTime.UtcNow < deadline)
            {
                await Task.Delay(50);
            }

            // Stop with both undelivered; start again on the same folder with the receiver back.
            var policy = g.Gateway.Policy.Current.Document;
            await g.Gateway.DisposeAsync();
            hooks.Down = false;
            await using var again = await Hosting.CustosGateway.StartAsync(new Hosting.CustosGatewayOptions
            {
                Policy = policy,
                PolicyAuthor = "test",
                DataDirectory = g.DataDirectory,
                DataPlaneUrl = "http://127.0.0.1:0",
                AdminUrl = "http://127.0.0.1:0",
                NotificationHandler = hooks,
                Secrets = name => name == "TEST_OPENAI_KEY" ? TestGateway.OpenAIUpstreamKey : null,
            });
            foreach (var id in ids)
            {
                await hooks.WaitForAlertAsync(id, 1, TimeSpan.FromSeconds(20));
            }

            // The same first uses after the restart raise nothing new: the detectors start from the ledger's history.
            using var client = new HttpClient { BaseAddress = again.DataPlaneUri };
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
            {
                Content = new StringContent("""{"model":"gpt-4o-mini","messages":[{"role":"user","content":"again"}],"max_tokens":16}""", Encoding.UTF8, "application/json"),
            };
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", g.KeyOf("web"));
            Assert.Equal(HttpStatusCode.OK, (await client.SendAsync(request)).StatusCode);
            await again.Ledger.FlushAsync();
            await again.Alerts.WaitIdleAsync();
            Assert.Equal(2, (await again.Store.ListAlertsAsync(null, 100)).Count);
            await Task.Delay(300);
            Assert.Equal(ids, hooks.Received.Select(m => m.AlertId).Order());
        }
        finally
        {
            await g.DisposeAsync();
        }
    }
}

/// <summary>An owners' webhook receiver that keeps each delivery with its signature headers; can be down for a while first.</summary>
internal sealed class WebhookReceiver : HttpMessageHandler
{
    private readonly ConcurrentQueue<Delivery> _received = new();
    private int _refused;

    public sealed record Delivery(Uri Uri, string Body, long Timestamp, string Signature, string? AlertId, string? Event);

    public volatile bool Down;

    public int Refused => Volatile.Read(ref _refused);

    public IReadOnlyCollection<Delivery> Received => _received;

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        if (Down)
        {
            Interlocked.Increment(ref _refused);
            return new HttpResponseMessage(HttpStatusCode.ServiceUnavailable);
        }

        var body = await request.Content!.ReadAsStringAsync(cancellationToken);
        using var json = JsonDocument.Parse(body);
        var root = json.RootElement;
        string? alertId = root.TryGetProperty("alert_id", out var a) ? a.GetString() : null;
        if (alertId is null && root.TryGetProperty("text", out var text))
        {
            alertId = System.Text.RegularExpressions.Regex.Match(text.GetString()!, "al-[0-9]+").Value;
        }

        _received.Enqueue(new Delivery(request.RequestUri!, body, long.Parse(request.Headers.GetValues(WebhookSigner.TimestampHeader).Single(), System.Globalization.CultureInfo.InvariantCulture),
            request.Headers.GetValues(WebhookSigner.SignatureHeader).Single(), alertId, root.TryGetProperty("event", out var e) ? e.GetString() : null));
        return new HttpResponseMessage(HttpStatusCode.OK);
    }

    public async Task<List<Delivery>> WaitForAlertAsync(string alertId, int count, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(15));
        while (true)
        {
            var matching = _received.Where(d => d.AlertId == alertId).ToList();
            if (matching.Count >= count)
            {
                return matching;
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new Xunit.Sdk.XunitException($"{matching.Count} of {count} deliveries of {alertId} arrived: "
                    + string.Join(", ", _received.Select(d => $"{d.AlertId}→{d.Uri.AbsolutePath}")));
            }

            await Task.Delay(25);
        }
    }
}
