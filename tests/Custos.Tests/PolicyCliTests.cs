using System.Net.Http.Headers;
using System.Text;
using Custos.Gateway.Hosting;
using Custos.Identity;
using Custos.Policy;

namespace Custos.Tests;

/// <summary><c>custos policy apply|history|show|diff|simulate</c> against a running gateway and its store.</summary>
public sealed class PolicyCliTests : IAsyncLifetime
{
    private DemoGateway _demo = null!;
    private CustosGateway _gateway = null!;
    private DemoKeys _keys = null!;
    private string _directory = null!;

    public async Task InitializeAsync()
    {
        _demo = await DemoGateway.StartAsync("policy");
        (_gateway, _keys, _directory) = (_demo.Gateway, _demo.Keys, _demo.Directory);
    }

    public async Task DisposeAsync() => await _demo.DisposeAsync();

    private async Task<HttpResponseMessage> ChatAsync(string consumer, string model)
    {
        using var client = new HttpClient { BaseAddress = _gateway.DataPlaneUri };
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent($$"""{"model":"{{model}}","messages":[{"role":"user","content":"hello"}]}""", Encoding.UTF8, "application/json"),
        };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _keys.Consumers.Single(c => c.Name == consumer).Key);
        return await client.SendAsync(request);
    }

    [Fact]
    public async Task ApplyHistoryShowDiffSimulate_EndToEnd()
    {
        for (var i = 0; i < 3; i++)
        {
            using var ok = await ChatAsync("support-web", "gpt-4o-mini");
            Assert.True(ok.IsSuccessStatusCode);
        }

        var beforeApply = DateTimeOffset.UtcNow;
        var candidate = _gateway.Policy.Current.Document;
        candidate = candidate with
        {
            Consumers = [.. candidate.Consumers.Select(c => c.Id == "support-web" ? c with { Models = ["claude-sonnet"], Entitlements = [] } : c)],
        };
        var file = Path.Combine(_directory, "candidate.yaml");
        await File.WriteAllTextAsync(file, PolicyYamlWriter.Write(candidate));
        await Task.Delay(10); // distinct timestamps for --at

        // Simulate first: the three recorded requests would now be refused.
        var (simExit, simulated, simError) = await Cli.RunAsync("policy", "simulate", "-f", file, "--from", "1h", "--data", _directory);
        Assert.True(simExit == 0, simError);
        Assert.Contains("3 would be refused that were allowed", simulated, StringComparison.Ordinal);
        Assert.Contains("support-web", simulated, StringComparison.Ordinal);
        Assert.Contains("entitlement", simulated, StringComparison.Ordinal);

        // A dry run changes nothing.
        var admin = _keys.Admins.Single(a => a.Role == "platform-admin").Key;
        var (dryExit, dry, dryError) = await Cli.RunAsync("policy", "apply", "-f", file, "--reason", "narrow support-web", "--server", _gateway.AdminUri.ToString(), "--admin-key", admin, "--dry-run");
        Assert.True(dryExit == 0, dryError);
        Assert.Contains("~ consumers[support-web].models: [] -> [\"claude-sonnet\"]", dry, StringComparison.Ordinal);
        Assert.Contains("~ consumers[support-web].entitlements: [{", dry, StringComparison.Ordinal);
        Assert.Equal(1, _gateway.Policy.Current.Version);

        // Apply, through the admin API.
        var (exit, applied, error) = await Cli.RunAsync("policy", "apply", "-f", file, "--reason", "narrow support-web", "--server", _gateway.AdminUri.ToString(), "--admin-key", admin);
        Assert.True(exit == 0, error);
        Assert.Contains("Applied: policy version 2", applied, StringComparison.Ordinal);
        Assert.Contains("by demo-platform-admin", applied, StringComparison.Ordinal);
        using (var denied = await ChatAsync("support-web", "gpt-4o-mini"))
        {
            Assert.Equal(System.Net.HttpStatusCode.Forbidden, denied.StatusCode);
        }

        var (_, history, _) = await Cli.RunAsync("policy", "history", "--data", _directory);
        Assert.Contains("system:demo", history, StringComparison.Ordinal);
        Assert.Contains("demo-platform-admin", history, StringComparison.Ordinal);
        Assert.Contains("narrow support-web", history, StringComparison.Ordinal);

        var (_, diff, _) = await Cli.RunAsync("policy", "diff", "1", "2", "--data", _directory);
        Assert.Contains("2 change(s)", diff, StringComparison.Ordinal);
        Assert.Contains("consumers[support-web].models", diff, StringComparison.Ordinal);

        var (_, atBefore, _) = await Cli.RunAsync("policy", "show", "--at", beforeApply.ToString("O"), "--data", _directory);
        var (_, now, _) = await Cli.RunAsync("policy", "show", "--data", _directory);
        Assert.Contains("# policy version 1,", atBefore, StringComparison.Ordinal);
        Assert.Contains("# policy version 2,", now, StringComparison.Ordinal);
        var shown = now[(now.IndexOf('\n', now.IndexOf('\n') + 1) + 1)..];
        var reread = PolicyYaml.Read(shown).Document!;
        Assert.True(PolicyVersion.HashOf(candidate) == PolicyVersion.HashOf(reread), string.Join("\n", PolicyDiff.Compute(candidate, reread)));

        // A version and a time each name one: both is a question with two answers, refused rather than one ignored.
        var (bothExit, _, both) = await Cli.RunAsync("policy", "show", "--version", "2", "--at", beforeApply.ToString("O"), "--data", _directory);
        Assert.Equal(1, bothExit);
        Assert.Contains("--version and --at each name a version; give one of them", both, StringComparison.Ordinal);
    }

    [Fact]
    public async Task HistoryShowDiff_WithServer_ReadThroughTheAdminApi_AsTheStoreHasThem()
    {
        // They opened the local store only: from another machine, or against a deployment whose store is PostgreSQL
        // behind the nodes, there was no way to read the versions but the console.
        var admin = _keys.Admins.Single(a => a.Role == "platform-admin").Key;
        await _gateway.ChangePolicyAsync(doc => doc with
        {
            Consumers = [.. doc.Consumers.Select(c => c.Id == "support-web" ? c with { Models = ["claude-sonnet"], Entitlements = [] } : c)],
        }, "ops", "narrow support-web");
        string[] server = ["--server", _gateway.AdminUri.ToString(), "--admin-key", admin];
        string[] store = ["--data", _directory];

        foreach (var args in new[] { new[] { "history" }, ["show"], ["show", "--version", "1"], ["show", "--version", "2", "--json"], ["diff", "1", "2"] })
        {
            var (localExit, local, localError) = await Cli.RunAsync(["policy", .. args, .. store]);
            var (exit, remote, error) = await Cli.RunAsync(["policy", .. args, .. server]);

            Assert.True(localExit == 0, localError);
            Assert.True(exit == 0, error);
            Assert.Equal(local, remote);
        }

        var (_, shown, _) = await Cli.RunAsync(["policy", "show", .. server]);
        Assert.StartsWith("# policy version 2, sha256 " + _gateway.Policy.Current.Info.Sha256 + "\n# by ops at ", shown.ReplaceLineEndings("\n"), StringComparison.Ordinal);
        var (wrongExit, _, wrong) = await Cli.RunAsync("policy", "history", "--server", _gateway.AdminUri.ToString(), "--admin-key", ApiKey.Generate(ApiKeyKind.Admin));
        Assert.Equal(1, wrongExit);
        Assert.Contains("401", wrong, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Show_WithServer_AsAScopedAdmin_ShowsItsPartOfTheVersionInForceThen()
    {
        // A scoped admin's view leaves out the other admins, whom its services' owners and approvers name: the CLI
        // validated it as a whole policy and refused it ("a policy this CLI cannot read"), so no scoped auditor or
        // service owner could ask what policy was in force at the time of an event.
        var beforeScoping = DateTimeOffset.UtcNow;
        await Task.Delay(10); // distinct timestamps for --at
        await _gateway.ChangePolicyAsync(doc => doc with
        {
            Admins = [.. doc.Admins.Select(a => a.Role == AdminRole.SecurityAuditor ? a with { Tenants = ["acme"] } : a)],
        }, "ops", "auditor of acme only");
        string[] server = ["--server", _gateway.AdminUri.ToString(), "--admin-key", _demo.AdminKey("security-auditor")];

        var (exit, shown, error) = await Cli.RunAsync(["policy", "show", "--at", beforeScoping.ToString("O"), .. server]);
        Assert.True(exit == 0, error);
        Assert.StartsWith("# policy version 1, sha256 ", shown, StringComparison.Ordinal);
        Assert.Contains("id: support-assistant", shown, StringComparison.Ordinal);
        Assert.DoesNotContain("globex-copilot", shown, StringComparison.Ordinal);
        Assert.Contains("# as the admin API shows it to your admin key: the part in your scope", shown, StringComparison.Ordinal);

        var (jsonExit, json, jsonError) = await Cli.RunAsync(["policy", "show", "--json", .. server]);
        Assert.True(jsonExit == 0, jsonError);
        Assert.StartsWith("# policy version 2, sha256 ", json, StringComparison.Ordinal);

        // A gateway-wide admin sees the whole policy, which hashes to the version's sha256: no note.
        var (_, whole, _) = await Cli.RunAsync("policy", "show", "--server", _gateway.AdminUri.ToString(), "--admin-key", _demo.AdminKey("platform-admin"));
        Assert.DoesNotContain("# as the admin API shows it", whole, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Apply_WithABadFileOrAWrongKey_FailsClearly()
    {
        var broken = Path.Combine(_directory, "broken.yaml");
        await File.WriteAllTextAsync(broken, "tenants: [{ id: acme, time_zone: Nowhere/City }]\n");

        var (exit, output, error) = await Cli.RunAsync("policy", "apply", "-f", broken, "--reason", "x", "--server", _gateway.AdminUri.ToString(), "--admin-key", ApiKey.Generate(ApiKeyKind.Admin));
        Assert.Equal(1, exit);
        Assert.Contains("broken.yaml:1:", output, StringComparison.Ordinal);
        Assert.Contains("not valid; nothing was applied", error, StringComparison.Ordinal);

        var good = Path.Combine(_directory, "good.yaml");
        await File.WriteAllTextAsync(good, PolicyYamlWriter.Write(_gateway.Policy.Current.Document));
        var (exit2, _, error2) = await Cli.RunAsync("policy", "apply", "-f", good, "--reason", "x", "--server", _gateway.AdminUri.ToString(), "--admin-key", ApiKey.Generate(ApiKeyKind.Admin));
        Assert.Equal(1, exit2);
        Assert.Contains("401", error2, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Apply_DryRunOfAFileReviving_ARevokedKey_FailsAsTheApplyWould()
    {
        // The dry run skipped the revocation check: it printed the changes and exited 0, the apply then got a 409.
        var admin = _keys.Admins.Single(a => a.Role == "platform-admin").Key;
        var server = _gateway.AdminUri.ToString();
        var stale = Path.Combine(_directory, "stale.yaml");
        await File.WriteAllTextAsync(stale, PolicyYamlWriter.Write(_gateway.Policy.Current.Document));
        var read = _gateway.Policy.Current.Version;
        var revoked = _gateway.Policy.Current.Document.Credentials.First(c => c.Status == CredentialStatus.Active).Id;
        await _gateway.ChangePolicyAsync(doc => doc with
        {
            Credentials = [.. doc.Credentials.Select(c => c.Id == revoked ? c with { Status = CredentialStatus.Revoked } : c)],
        }, "test", "leaked");

        var (dryExit, _, dryError) = await Cli.RunAsync("policy", "apply", "-f", stale, "--reason", "tweak", "--server", server, "--admin-key", admin, "--dry-run");
        Assert.Equal(1, dryExit);
        Assert.Contains("(409 admin.revocation_permanent)", dryError, StringComparison.Ordinal);
        var (exit, _, error) = await Cli.RunAsync("policy", "apply", "-f", stale, "--reason", "tweak", "--server", server, "--admin-key", admin);
        Assert.Equal(1, exit);
        Assert.Contains("(409 admin.revocation_permanent)", error, StringComparison.Ordinal);

        // Named, the version the file was read at is checked too, in a dry run as in the apply.
        var (baseExit, _, baseError) = await Cli.RunAsync("policy", "apply", "-f", stale, "--reason", "tweak", "--server", server, "--admin-key", admin,
            "--dry-run", "--base-version", read.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(1, baseExit);
        Assert.Contains("(412 admin.policy_changed)", baseError, StringComparison.Ordinal);
    }
}
