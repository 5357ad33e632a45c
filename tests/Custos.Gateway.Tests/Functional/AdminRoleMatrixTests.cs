using System.Net;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.AspNetCore.Routing;
using static Custos.Gateway.Tests.Functional.ControlPlaneFixture;

namespace Custos.Gateway.Tests.Functional;

/// <summary>
/// Least privilege as a matrix: every admin endpoint, called by every admin (each role, in and out of scope). Allowed
/// where the table says, 403 <c>admin.forbidden</c> elsewhere, and every refused attempt is itself a ledger entry.
/// The expectations are written out by hand, not derived from the code under test.
/// </summary>
public sealed class AdminRoleMatrixTests
{
    private static readonly string[] All = Admins;

    /// <summary>Method, path, body, and the admins allowed to do it.</summary>
    private static IEnumerable<(HttpMethod Method, string Path, object? Body, string[] Allowed)> Endpoints(string currentYaml, JsonElement supportOwners, string alertId) =>
    [
        (HttpMethod.Get, "/admin/v1/whoami", null, All),
        (HttpMethod.Get, "/admin/v1/policy", null, All),
        (HttpMethod.Get, "/admin/v1/policy/versions", null, All),
        (HttpMethod.Post, "/admin/v1/policy/versions", new { yaml = currentYaml, reason = "matrix", dry_run = true }, ["root"]),
        (HttpMethod.Get, "/admin/v1/services", null, All),
        (HttpMethod.Get, "/admin/v1/owners", null, All),
        // One service, or a list filtered to a subject, outside the scope: refused as such, not "does not exist" or empty.
        (HttpMethod.Get, "/admin/v1/services/support", null, ["root", "support-owner", "support-lead", "prompts", "auditor", "finance"]),
        (HttpMethod.Get, "/admin/v1/consumers", null, All),
        (HttpMethod.Get, "/admin/v1/kill-switches", null, All),
        (HttpMethod.Get, "/admin/v1/access-requests", null, All),
        (HttpMethod.Put, "/admin/v1/services/support/owners", new { owners = supportOwners, reason = "matrix" }, ["root", "support-owner", "support-lead"]),
        (HttpMethod.Put, "/admin/v1/services/support/owners/billing", new { owner = new { name = "support finance", email = "billing@example.test" }, reason = "matrix" },
            ["root", "support-owner", "support-lead"]),
        (HttpMethod.Put, "/admin/v1/services/support/prompt-rules", new { prompt_rules = Array.Empty<object>(), reason = "matrix" }, ["root", "prompts"]),
        (HttpMethod.Put, "/admin/v1/services/support/models", new { models = (string[]?)null, reason = "matrix" }, ["root", "prompts"]),
        (HttpMethod.Put, "/admin/v1/budgets", new { scope = "service", id = "support", budget = new { amount = 100, period = "month" }, reason = "matrix" },
            ["root", "finance"]),
        (HttpMethod.Put, "/admin/v1/budgets", new { scope = "service", id = "globex-app", budget = new { amount = 100, period = "month" }, reason = "matrix" },
            ["root"]),
        (HttpMethod.Get, "/admin/v1/credentials", null, ["root", "support-owner", "support-lead", "agents-owner", "auditor", "globex-owner"]),
        (HttpMethod.Get, "/admin/v1/credentials?service=support", null, ["root", "support-owner", "support-lead", "auditor"]),
        (HttpMethod.Post, "/admin/v1/credentials", new { consumer = "web", reason = "matrix" }, ["root", "support-owner", "support-lead"]),
        (HttpMethod.Post, "/admin/v1/credentials/cred-agent/rotate", new { reason = "matrix", overlap_seconds = 3600 }, ["root", "agents-owner"]),
        (HttpMethod.Post, "/admin/v1/credentials/cred-suspended/suspend", new { reason = "matrix" }, ["root", "support-owner", "support-lead"]),
        (HttpMethod.Post, "/admin/v1/credentials/cred-revoked/resume", new { reason = "matrix" }, ["root", "support-owner", "support-lead"]),
        (HttpMethod.Post, "/admin/v1/credentials/cred-revoked/revoke", new { reason = "matrix" }, ["root", "support-owner", "support-lead"]),
        (HttpMethod.Post, "/admin/v1/credentials/cred-globex/expire", new { reason = "matrix" }, ["root", "globex-owner"]),
        (HttpMethod.Post, "/admin/v1/kill-switches", new { scope = "consumer", id = "web", engaged = false, reason = "matrix" }, ["root", "support-owner", "support-lead"]),
        (HttpMethod.Post, "/admin/v1/kill-switches", new { scope = "service", id = "agents", engaged = false, reason = "matrix" }, ["root", "agents-owner"]),
        (HttpMethod.Post, "/admin/v1/kill-switches", new { scope = "tenant", id = "acme", engaged = false, reason = "matrix" }, ["root"]),
        (HttpMethod.Post, "/admin/v1/access-requests", new { consumer = "web", models = new[] { "gpt-4o" }, justification = "matrix" },
            ["root", "support-owner", "support-lead"]),
        (HttpMethod.Get, "/admin/v1/ledger", null, ["root", "support-owner", "support-lead", "agents-owner", "auditor", "globex-owner"]),
        (HttpMethod.Get, "/admin/v1/ledger?service=support", null, ["root", "support-owner", "support-lead", "auditor"]),
        (HttpMethod.Get, "/admin/v1/ledger?consumer=web", null, ["root", "support-owner", "support-lead", "auditor"]),
        (HttpMethod.Get, "/admin/v1/ledger?tenant=globex", null, ["root", "auditor", "globex-owner"]),
        (HttpMethod.Get, "/admin/v1/spend", null, ["root", "auditor", "finance"]),
        (HttpMethod.Get, "/admin/v1/spend/lines", null, ["root", "auditor", "finance"]),
        (HttpMethod.Get, "/admin/v1/notifications", null, ["root", "auditor"]),
        (HttpMethod.Get, "/admin/v1/alerts", null, All),
        (HttpMethod.Get, $"/admin/v1/alerts/{alertId}", null, ["root", "support-owner", "support-lead", "prompts", "auditor", "finance"]),
        (HttpMethod.Post, $"/admin/v1/alerts/{alertId}/ack", new { note = "matrix" }, ["root", "support-owner", "support-lead", "finance"]),
        (HttpMethod.Post, $"/admin/v1/alerts/{alertId}/resume", new { reason = "matrix" }, ["root", "support-owner", "support-lead"]), // 409: it took no action
        (HttpMethod.Post, $"/admin/v1/alerts/{alertId}/resolve", new { reason = "matrix" }, ["root", "support-owner", "support-lead", "finance"]),
        (HttpMethod.Get, "/admin/v1/overview", null, ["root", "support-owner", "support-lead", "agents-owner", "auditor", "finance", "globex-owner"]),
        (HttpMethod.Get, "/admin/v1/policy/versions/1", null, All),
        (HttpMethod.Get, "/admin/v1/policy/diff?from=1&to=1", null, All),
        (HttpMethod.Get, "/admin/v1/reports/incident?subject=consumer&id=web", null, ["root", "support-owner", "support-lead", "auditor"]),
        (HttpMethod.Get, "/admin/v1/reports/posture", null, ["root", "auditor"]),
        (HttpMethod.Get, "/admin/v1/store", null, All),
        (HttpMethod.Put, "/admin/v1/store/record-format", new { format = "zstd", reason = "matrix" }, ["root"]), // 409 on the embedded store
    ];

    [Fact]
    public async Task EveryEndpoint_EveryRole_AllowedOnlyWhereTheTableSays_AndRefusalsAreAudited()
    {
        await using var g = await StartAsync();
        var yaml = (await JsonAsync(await AdminAsync(g, "root", HttpMethod.Get, "/admin/v1/policy"))).GetProperty("yaml").GetString()!;
        var support = await JsonAsync(await AdminAsync(g, "root", HttpMethod.Get, "/admin/v1/services/support"));
        var owners = support.GetProperty("owners").Clone();
        var alert = await g.StoreAlertAsync("denials.spike", Custos.Alerts.AlertSeverity.Warning, "denials.spike|web", "30 requests of web refused or throttled within a minute.");

        var refused = new List<(string Admin, string Path)>();
        foreach (var (method, path, body, allowed) in Endpoints(yaml, owners, alert.Id))
        {
            foreach (var admin in All)
            {
                using var response = await AdminAsync(g, admin, method, path, body);
                var text = await response.Content.ReadAsStringAsync();
                if (allowed.Contains(admin))
                {
                    // Allowed: anything but a refusal of authority (a 409 for an action already done is fine).
                    Assert.True(response.StatusCode is not (HttpStatusCode.Forbidden or HttpStatusCode.Unauthorized) && (int)response.StatusCode < 500,
                        $"{admin} {method} {path}: expected allowed, got {(int)response.StatusCode} {text}");
                }
                else
                {
                    Assert.True(response.StatusCode == HttpStatusCode.Forbidden, $"{admin} {method} {path}: expected 403, got {(int)response.StatusCode} {text}");
                    using var problem = JsonDocument.Parse(text);
                    Assert.Equal("admin.forbidden", problem.RootElement.GetProperty("code").GetString());
                    Assert.StartsWith("req_", problem.RootElement.GetProperty("request_id").GetString(), StringComparison.Ordinal);
                    refused.Add((admin, path));
                }
            }
        }

        // Every refused attempt is a "…_denied" ledger entry naming the actor.
        var denied = (await AdminEntriesAsync(g)).Where(e => e.GetProperty("action").GetString()!.EndsWith("_denied", StringComparison.Ordinal)).ToList();
        Assert.Equal(refused.Count, denied.Count);
        foreach (var group in refused.GroupBy(r => r.Admin))
        {
            Assert.Equal(group.Count(), denied.Count(d => d.GetProperty("actor").GetString() == group.Key));
        }
    }

    [Fact]
    public async Task Lists_ShowOnlyWhatIsInScope()
    {
        await using var g = await StartAsync();
        await ChatAsync(g, g.KeyOf("web"));
        await ChatAsync(g, g.KeyOf("globex-user"), "globex-only");

        var services = await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Get, "/admin/v1/services"));
        Assert.Equal(["support"], services.EnumerateArray().Select(s => s.GetProperty("id").GetString()));

        // The policy itself: a service owner sees its service, its consumers and their credentials, not the other tenant's
        // services and contacts, nor the other admins and their keys' hashes.
        var policy = (await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Get, "/admin/v1/policy"))).GetProperty("yaml").GetString()!;
        var whole = (await JsonAsync(await AdminAsync(g, "root", HttpMethod.Get, "/admin/v1/policy"))).GetProperty("yaml").GetString()!;
        var document = g.Gateway.Policy.Current.Document;
        Assert.Contains("globex", whole, StringComparison.Ordinal);
        Assert.DoesNotContain("globex", policy, StringComparison.Ordinal);
        Assert.Contains("cred-web", policy, StringComparison.Ordinal);
        Assert.All(document.Admins.Where(a => a.Id != "support-owner" && a.KeySha256 is not null), a => Assert.DoesNotContain(a.KeySha256!, policy, StringComparison.Ordinal));
        Assert.Contains(document.Admins.Single(a => a.Id == "support-owner").KeySha256!, policy, StringComparison.Ordinal);
        var version = await JsonAsync(await AdminAsync(g, "globex-owner", HttpMethod.Get, $"/admin/v1/policy/versions/{g.Gateway.Policy.Current.Version}"));
        Assert.DoesNotContain("support", version.GetProperty("yaml").GetString()!, StringComparison.Ordinal);

        var credentials = await JsonAsync(await AdminAsync(g, "globex-owner", HttpMethod.Get, "/admin/v1/credentials"));
        Assert.Equal(["cred-globex"], credentials.EnumerateArray().Select(c => c.GetProperty("id").GetString()));

        await g.Gateway.Ledger.FlushAsync();
        var ledger = await JsonAsync(await AdminAsync(g, "globex-owner", HttpMethod.Get, "/admin/v1/ledger"));
        Assert.NotEmpty(ledger.EnumerateArray());
        Assert.All(ledger.EnumerateArray(), e => Assert.Equal("globex", e.GetProperty("tenant").GetString()));

        var all = await JsonAsync(await AdminAsync(g, "auditor", HttpMethod.Get, "/admin/v1/ledger"));
        Assert.Contains(all.EnumerateArray(), e => e.GetProperty("tenant").GetString() == "acme");

        // An unknown or missing admin key is 401, with a code.
        using var http = new HttpClient { BaseAddress = g.Gateway.AdminUri };
        using var anonymous = await http.GetAsync("/admin/v1/whoami");
        Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
        Assert.Equal("admin.unauthenticated", JsonDocument.Parse(await anonymous.Content.ReadAsStringAsync()).RootElement.GetProperty("code").GetString());
    }

    [Fact]
    public async Task Ledger_ScopedAdmin_LimitCountsOnlyEntriesInScope()
    {
        // A service owner's last 100 requests: the scope narrows before the limit counts, so newer entries of other
        // services do not push its own out of the answer.
        await using var g = await StartAsync();
        for (var i = 0; i < 3; i++)
        {
            await ChatAsync(g, g.KeyOf("web"));
        }

        for (var i = 0; i < 110; i++)
        {
            await ChatAsync(g, g.KeyOf("globex-user"), "globex-only");
        }

        await g.Gateway.Ledger.FlushAsync();
        var ledger = await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Get, "/admin/v1/ledger"));
        Assert.Equal(3, ledger.GetArrayLength());
        Assert.All(ledger.EnumerateArray(), e => Assert.Equal("support", e.GetProperty("service").GetString()));
        var two = await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Get, "/admin/v1/ledger?limit=2"));
        Assert.Equal(ledger.EnumerateArray().Skip(1).Select(e => e.GetProperty("request_id").GetString()),
            two.EnumerateArray().Select(e => e.GetProperty("request_id").GetString()));

        // A tenant-scoped admin likewise, and a gateway-wide one still gets the newest 100 of the gateway.
        var acme = await JsonAsync(await AdminAsync(g, "globex-owner", HttpMethod.Get, "/admin/v1/ledger?limit=5"));
        Assert.Equal(5, acme.GetArrayLength());
        Assert.All(acme.EnumerateArray(), e => Assert.Equal("globex", e.GetProperty("tenant").GetString()));
        var all = await JsonAsync(await AdminAsync(g, "auditor", HttpMethod.Get, "/admin/v1/ledger"));
        Assert.Equal(100, all.GetArrayLength());
        Assert.DoesNotContain(all.EnumerateArray(), e => e.GetProperty("service").GetString() == "support");
    }

    [Fact]
    public async Task Ledger_ServiceOwner_SeesAdminEntriesAboutItsService_NotOthers()
    {
        // Admin entries carry a tenant, not a service: a service owner saw none of them, not even its own suspensions.
        await using var g = await StartAsync();
        await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/credentials/cred-web/suspend", new { reason = "leaked" }));
        await JsonAsync(await AdminAsync(g, "agents-owner", HttpMethod.Post, "/admin/v1/credentials/cred-agent/suspend", new { reason = "the agents' business" }));
        await JsonAsync(await AdminAsync(g, "root", HttpMethod.Post, "/admin/v1/kill-switches", new { scope = "service", id = "support", engaged = true, reason = "incident" }));
        await ChatAsync(g, g.KeyOf("web"));
        await g.Gateway.Ledger.FlushAsync();

        static string Target(JsonElement e) => e.GetProperty("target").GetString()!;
        var admin = await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Get, "/admin/v1/ledger?kind=admin"));
        Assert.Contains(admin.EnumerateArray(), e => e.GetProperty("action").GetString() == "credential.suspended" && Target(e) == "credential:cred-web");
        Assert.Contains(admin.EnumerateArray(), e => e.GetProperty("action").GetString() == "kill_switch.engaged" && Target(e) == "service:support");
        Assert.DoesNotContain(admin.EnumerateArray(), e => Target(e) is "credential:cred-agent" or "policy");

        // Beside its requests, in time order, when it asks for every kind.
        var any = (await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Get, "/admin/v1/ledger?kind=any"))).EnumerateArray().ToList();
        Assert.Equal(2, any.Count(e => e.GetProperty("kind").GetString() == "admin"));
        Assert.Equal("request", any[^1].GetProperty("kind").GetString());
        Assert.Equal(any.Select(e => e.GetProperty("timestamp").GetString()).Order(StringComparer.Ordinal), any.Select(e => e.GetProperty("timestamp").GetString()));

        // The agents' owner sees its own suspension only.
        var agents = await JsonAsync(await AdminAsync(g, "agents-owner", HttpMethod.Get, "/admin/v1/ledger?kind=admin"));
        Assert.Equal(["credential:cred-agent"], agents.EnumerateArray().Select(Target));
    }

    [Fact]
    public async Task OpenApiDocument_DescribesTheAdminApi()
    {
        await using var g = await StartAsync();
        using var http = new HttpClient { BaseAddress = g.Gateway.AdminUri };
        var text = await http.GetStringAsync("/admin/v1/openapi.json");
        using var document = JsonDocument.Parse(text);
        var paths = document.RootElement.GetProperty("paths");
        foreach (var path in new[] { "/admin/v1/credentials", "/admin/v1/credentials/{id}/revoke", "/admin/v1/access-requests/{id}/approve", "/admin/v1/kill-switches",
                     "/admin/v1/services/{id}/owners", "/admin/v1/policy/versions" })
        {
            Assert.True(paths.TryGetProperty(path, out _), $"{path} is missing from the OpenAPI document");
        }

        Assert.Equal("Custos admin API", document.RootElement.GetProperty("info").GetProperty("title").GetString());

        // Generated once, from a second host that is never started: it names no server, and is the same every time.
        Assert.False(document.RootElement.TryGetProperty("servers", out _));
        using var again = await http.GetAsync("/admin/v1/openapi.json");
        Assert.Equal("application/json; charset=utf-8", again.Content.Headers.ContentType!.ToString());
        Assert.Equal(text, await again.Content.ReadAsStringAsync());

        // Every route of the admin API's own is in it (not the fallback that answers a route that does not exist).
        var routes = g.Gateway.AdminEndpoints.OfType<RouteEndpoint>()
            .Select(e => "/" + Regex.Replace(e.RoutePattern.RawText!.TrimStart('/'), @"\{([^}:=?]+)[^}]*\}", "{$1}"))
            .Where(p => p.StartsWith("/admin/v1/", StringComparison.Ordinal) && p != "/admin/v1/openapi.json" && !p.Contains("{*", StringComparison.Ordinal))
            .Distinct()
            .ToList();
        Assert.True(routes.Count > 30, $"only {routes.Count} admin routes found");
        Assert.All(routes, route => Assert.True(paths.TryGetProperty(route, out _), $"{route} is missing from the OpenAPI document"));
    }

    [Fact]
    public async Task OpenApiDocument_NamesEveryPropertyAsTheApiReadsAndWritesIt()
    {
        // The API reads bodies and writes views in snake_case (AdminJson.Options): a document that says expiresAt
        // describes a body the API refuses ("it takes no field 'expiresAt'").
        await using var g = await StartAsync();
        using var http = new HttpClient { BaseAddress = g.Gateway.AdminUri };
        using var document = JsonDocument.Parse(await http.GetStringAsync("/admin/v1/openapi.json"));
        var schemas = document.RootElement.GetProperty("components").GetProperty("schemas");
        var types = typeof(global::Custos.Gateway.Admin.AdminJson).Assembly.GetTypes().Where(t => t.IsPublic && t.Namespace == "Custos.Gateway.Admin").ToDictionary(t => t.Name);

        var compared = new List<string>();
        foreach (var schema in schemas.EnumerateObject())
        {
            if (!types.TryGetValue(schema.Name, out var type) || !schema.Value.TryGetProperty("properties", out var properties))
            {
                continue;
            }

            var api = global::Custos.Gateway.Admin.AdminJson.Options.GetTypeInfo(type).Properties.Select(p => p.Name).Order(StringComparer.Ordinal);
            Assert.Equal(string.Join(", ", api), string.Join(", ", properties.EnumerateObject().Select(p => p.Name).Order(StringComparer.Ordinal)));
            compared.Add(schema.Name);
        }

        Assert.Superset(new HashSet<string> { "IssueCredentialBody", "RotateCredentialBody", "PromptRulesBody", "CredentialView" }, compared.ToHashSet());
        Assert.True(schemas.GetProperty("IssueCredentialBody").GetProperty("properties").TryGetProperty("expires_at", out _));
    }
}
