using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;
using Custos.Gateway.Hosting;
using Custos.Policy;
using static Custos.Gateway.Tests.Functional.ControlPlaneFixture;

namespace Custos.Gateway.Tests.Functional;

/// <summary>
/// A whole policy applied through the admin API (or loaded from a file) against what was done since its copy was taken:
/// revocations stay permanent, a stale copy is refused when its version is named, and containment is not lifted unsaid.
/// </summary>
public sealed class PolicyApplyTests
{
    private static Task<HttpResponseMessage> ApplyAsync(TestGateway g, PolicyDocument document, object? extra = null, string? ifMatch = null)
    {
        var body = new Dictionary<string, object?> { ["yaml"] = PolicyYamlWriter.Write(document), ["reason"] = "routine edit" };
        foreach (var property in JsonSerializer.SerializeToElement(extra ?? new { }).EnumerateObject())
        {
            body[property.Name] = property.Value;
        }

        return ifMatch is null ? AdminAsync(g, "root", HttpMethod.Post, "/admin/v1/policy/versions", body) : SendIfMatchAsync(g, body, ifMatch);
    }

    private static async Task<HttpResponseMessage> SendIfMatchAsync(TestGateway g, object body, string ifMatch)
    {
        using var http = new HttpClient { BaseAddress = g.Gateway.AdminUri };
        using var request = new HttpRequestMessage(HttpMethod.Post, "/admin/v1/policy/versions") { Content = System.Net.Http.Json.JsonContent.Create(body) };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", AdminKey(g, "root"));
        request.Headers.TryAddWithoutValidation("If-Match", ifMatch);
        var response = await http.SendAsync(request);
        await response.Content.LoadIntoBufferAsync();
        return response;
    }

    private static async Task<(HttpStatusCode Status, string? Code, string Detail)> ProblemAsync(HttpResponseMessage response)
    {
        using (response)
        {
            var root = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
            return (response.StatusCode, root.TryGetProperty("code", out var code) ? code.GetString() : null,
                root.TryGetProperty("detail", out var detail) ? detail.GetString() ?? "" : "");
        }
    }

    private static PolicyDocument Without(PolicyDocument document, string credential)
        => document with { Credentials = [.. document.Credentials.Where(c => c.Id != credential)] };

    [Fact]
    public async Task ApplyPolicy_RevokedCredentialLeftOutThenAddedBack_IsRefusedAndTheKeyStaysDenied()
    {
        // Two whole policies revived a revoked key: one leaving the credential out (forgetting the revocation), then one
        // naming it active. Every revocation ever stored counts now.
        await using var g = await StartAsync();
        var beforeRevocation = g.Gateway.Policy.Current.Document;
        await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/credentials/cred-web/revoke", new { reason = "leaked" }));
        var revokedIn = g.Gateway.Policy.Current.Version;
        await JsonAsync(await ApplyAsync(g, Without(g.Gateway.Policy.Current.Document, "cred-web")));

        var (status, code, detail) = await ProblemAsync(await ApplyAsync(g, beforeRevocation));
        Assert.Equal((HttpStatusCode.Conflict, "admin.revocation_permanent"), (status, code));
        Assert.Contains($"names credential 'cred-web' (revoked in version {revokedIn}) as not revoked", detail, StringComparison.Ordinal);
        Assert.NotEqual(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("web"))).Status);

        // The same key under another id: the refusal names both, the new id and the revoked one.
        var web = beforeRevocation.Credentials.Single(c => c.Id == "cred-web");
        var rebound = g.Gateway.Policy.Current.Document with
        {
            Credentials = [.. g.Gateway.Policy.Current.Document.Credentials, web with { Id = "cred-web-2" }],
        };
        (status, code, detail) = await ProblemAsync(await ApplyAsync(g, rebound));
        Assert.Equal((HttpStatusCode.Conflict, "admin.revocation_permanent"), (status, code));
        Assert.Contains("credential 'cred-web-2' (the key of credential 'cred-web', revoked in version", detail, StringComparison.Ordinal);

        // A dry run makes the same check.
        (status, code, _) = await ProblemAsync(await ApplyAsync(g, beforeRevocation, new { dry_run = true }));
        Assert.Equal((HttpStatusCode.Conflict, "admin.revocation_permanent"), (status, code));
        Assert.NotEqual(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("web"))).Status);
    }

    [Fact]
    public async Task Serve_FileRevivingACredentialRevokedInAnEarlierVersion_RefusesToStart()
    {
        CustosGatewayOptions? loaded = null;
        var g = await TestGateway.StartAsync((test, policy) => Customize(test, policy), options: o => loaded = o);
        try
        {
            var file = loaded!.Policy;
            await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/credentials/cred-web/revoke", new { reason = "leaked" }));
            await JsonAsync(await ApplyAsync(g, Without(g.Gateway.Policy.Current.Document, "cred-web")));
            await g.Gateway.DisposeAsync();

            // The file as it was, edited for something else: it names cred-web active.
            var edited = file with { Consumers = [.. file.Consumers.Select(c => c.Id == "web" ? c with { Limits = c.Limits with { RequestsPerMinute = 5 } } : c)] };
            var refused = await Assert.ThrowsAsync<RevocationUndoneException>(() => CustosGateway.StartAsync(loaded with { Policy = edited }));
            Assert.Equal(["cred-web"], refused.Credentials);
        }
        finally
        {
            await g.DisposeAsync();
        }
    }

    [Fact]
    public async Task ApplyPolicy_EditedFromAnOlderVersion_IsRefusedWhenItsVersionIsNamed()
    {
        await using var g = await StartAsync();
        using var read = await AdminAsync(g, "root", HttpMethod.Get, "/admin/v1/policy");
        var etag = read.Headers.ETag!.Tag;
        var readVersion = g.Gateway.Policy.Current.Version;
        Assert.Equal($"\"{readVersion}\"", etag);
        var copy = g.Gateway.Policy.Current.Document;

        // Meanwhile a service owner issues a key.
        await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/credentials", new { consumer = "web", reason = "new key" }));
        var moved = g.Gateway.Policy.Current.Version;

        var (status, code, detail) = await ProblemAsync(await ApplyAsync(g, copy, ifMatch: etag));
        Assert.Equal((HttpStatusCode.PreconditionFailed, "admin.policy_changed"), (status, code));
        Assert.Contains($"made to version {readVersion}, but version {moved} is in force", detail, StringComparison.Ordinal);
        (status, code, _) = await ProblemAsync(await ApplyAsync(g, copy, new { base_version = readVersion }));
        Assert.Equal((HttpStatusCode.PreconditionFailed, "admin.policy_changed"), (status, code));
        (status, code, _) = await ProblemAsync(await ApplyAsync(g, copy, new { base_version = readVersion, dry_run = true }));
        Assert.Equal((HttpStatusCode.PreconditionFailed, "admin.policy_changed"), (status, code));
        Assert.Equal(moved, g.Gateway.Policy.Current.Version);

        // Made to the version in force, it is applied, and the answer's ETag is the new version.
        var current = g.Gateway.Policy.Current.Document;
        using var applied = await ApplyAsync(g, current with { Consumers = [.. current.Consumers.Select(c => c.Id == "web" ? c with { Limits = c.Limits with { RequestsPerMinute = 7 } } : c)] },
            ifMatch: $"\"{moved}\"");
        await JsonAsync(applied);
        Assert.Equal($"\"{moved + 1}\"", applied.Headers.ETag!.Tag);
    }

    [Fact]
    public async Task ApplyPolicy_LiftingASuspensionOrKillSwitch_IsRefusedUnlessAskedAndThenRecorded()
    {
        // A copy taken before an incident's containment, applied with a one-line edit, resumed the suspended key and
        // released the kill switch with only policy.version_created on record.
        await using var g = await StartAsync();
        var copy = g.Gateway.Policy.Current.Document;
        await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/credentials/cred-web/suspend", new { reason = "odd traffic" }));
        await JsonAsync(await AdminAsync(g, "agents-owner", HttpMethod.Post, "/admin/v1/kill-switches", new { scope = "consumer", id = "agent", engaged = true, reason = "incident" }));
        var contained = g.Gateway.Policy.Current.Version;

        var (status, code, detail) = await ProblemAsync(await ApplyAsync(g, copy));
        Assert.Equal((HttpStatusCode.Conflict, "admin.containment_lifted"), (status, code));
        Assert.Contains("credential 'cred-web' suspended, consumer 'agent' suspended (kill switch)", detail, StringComparison.Ordinal);
        Assert.Contains("lift_containment", detail, StringComparison.Ordinal);
        (status, code, _) = await ProblemAsync(await ApplyAsync(g, copy, new { dry_run = true }));
        Assert.Equal((HttpStatusCode.Conflict, "admin.containment_lifted"), (status, code));
        Assert.Equal(contained, g.Gateway.Policy.Current.Version);
        Assert.Equal("deny.credential_suspended", (await ChatAsync(g, g.KeyOf("web"))).Code);

        // Said explicitly: applied, and each lift is on record as the dedicated endpoints record it.
        var applied = await JsonAsync(await ApplyAsync(g, copy, new { lift_containment = true }));
        Assert.Equal(["credential 'cred-web' suspended", "consumer 'agent' suspended (kill switch)"],
            applied.GetProperty("lifted").EnumerateArray().Select(l => l.GetString()));
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("web"))).Status);
        var entries = await AdminEntriesAsync(g);
        var resumed = Assert.Single(entries, e => e.GetProperty("action").GetString() == "credential.resumed");
        Assert.Equal(("root", "credential:cred-web", "routine edit"),
            (resumed.GetProperty("actor").GetString(), resumed.GetProperty("target").GetString(), resumed.GetProperty("reason").GetString()));
        var released = Assert.Single(entries, e => e.GetProperty("action").GetString() == "kill_switch.released");
        Assert.Equal(("root", "consumer:agent"), (released.GetProperty("actor").GetString(), released.GetProperty("target").GetString()));
    }
}
