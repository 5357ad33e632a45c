using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Custos.Cli;
using Custos.Cli.Commands;
using Custos.Gateway.Hosting;
using Custos.Identity;

namespace Custos.Tests;

/// <summary>
/// <c>custos keys|services|owners|access|kill-switch</c> against a real gateway on loopback: the demo policy, with the
/// policy owner of <c>support-assistant</c> acting through <c>demo-service-owner</c> so that a second admin can approve.
/// </summary>
public sealed partial class ControlPlaneCliTests : IAsyncLifetime
{
    private const string Service = "support-assistant";
    private const string Approver = "demo-service-owner";

    private DemoGateway _demo = null!;
    private CustosGateway _gateway = null!;

    public async Task InitializeAsync()
    {
        _demo = await DemoGateway.StartAsync("controlplane-cli", policy => policy with
        {
            Services =
            [
                .. policy.Services.Select(s => s.Id == Service
                    ? s with { Owners = s.Owners with { Policy = s.Owners.Policy! with { Admin = Approver } }, Approvers = null }
                    : s),
            ],
        });
        _gateway = _demo.Gateway;
    }

    public async Task DisposeAsync() => await _demo.DisposeAsync();

    [GeneratedRegex("csk_[A-Za-z0-9]+")]
    private static partial Regex ConsumerKey();

    [GeneratedRegex(@"credential: (cred-[0-9a-f]+)")]
    private static partial Regex CredentialId();

    [GeneratedRegex(@"access request (ar-\d+)")]
    private static partial Regex AccessRequestId();

    /// <summary>Runs the CLI against the gateway's admin API as the demo admin of <paramref name="role"/>; asserts success unless told otherwise.</summary>
    private async Task<string> AsAsync(string role, params string[] args)
    {
        var (exit, output, error) = await RunAsync(role, args);
        Assert.True(exit == 0, $"custos {string.Join(' ', args)} exited {exit}: {error}");
        Assert.Equal("", error);
        return output;
    }

    private Task<(int Exit, string Output, string Error)> RunAsync(string role, params string[] args)
        => Cli.RunAsync([.. args, "--server", _gateway.AdminUri.ToString(), "--admin-key", _demo.AdminKey(role)]);



    [Fact]
    public async Task Keys_IssueCallListSuspendResumeRotateRevoke_EndToEnd()
    {
        var issued = await AsAsync("service-owner", "keys", "issue", "--consumer", "support-web", "--reason", "new web release");
        Assert.Contains("shown once", issued, StringComparison.Ordinal);
        var key = ConsumerKey().Match(issued).Value;
        var id = CredentialId().Match(issued).Groups[1].Value;
        Assert.Equal(ApiKeyFormatError.None, ApiKey.Validate(key, out _));
        Assert.Contains($"(prefix {key[..12]})", issued, StringComparison.Ordinal);

        // The printed key works at once.
        Assert.Equal(HttpStatusCode.OK, (await DemoGateway.ChatAsync(_gateway.DataPlaneUri, key)).Status);
        await _gateway.Ledger.FlushAsync();

        // Listed by prefix, active, last used; never the key.
        var list = await AsAsync("service-owner", "keys", "list", "--consumer", "support-web");
        Assert.StartsWith("ID", list, StringComparison.Ordinal);
        foreach (var header in new[] { "CONSUMER", "SERVICE", "KIND", "PREFIX", "STATUS", "CREATED", "LAST USED", "EXPIRES" })
        {
            Assert.Contains(header, list, StringComparison.Ordinal);
        }

        var row = DemoGateway.Row(list, id);
        Assert.Equal(["support-web", Service, "api_key", key[..12], "active"], row[1..6]);
        Assert.Matches(@"^\d{4}-\d\d-\d\d \d\d:\d\d$", row[7]); // last used
        Assert.Equal("never", row[8]);
        Assert.DoesNotContain(key, list, StringComparison.Ordinal);
        Assert.Contains("cred-support-web", list, StringComparison.Ordinal);
        Assert.DoesNotContain("cred-data-team", list, StringComparison.Ordinal);

        // Suspend: the next call is refused; resume: served again.
        Assert.Contains("credential.suspended", await AsAsync("service-owner", "keys", "suspend", id, "--reason", "odd traffic"), StringComparison.Ordinal);
        var suspended = await DemoGateway.ChatAsync(_gateway.DataPlaneUri, key);
        Assert.Equal((HttpStatusCode.Unauthorized, "deny.credential_suspended"), (suspended.Status, suspended.Code));
        Assert.Equal("suspended", DemoGateway.Row(await AsAsync("service-owner", "keys", "list", "--service", Service), id)[5]);
        Assert.Contains("suspended -> active", await AsAsync("service-owner", "keys", "resume", id, "--reason", "explained"), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.OK, (await DemoGateway.ChatAsync(_gateway.DataPlaneUri, key)).Status);

        // Rotate with no overlap: a new key, the old one refused from now on.
        var rotated = await AsAsync("service-owner", "keys", "rotate", id, "--reason", "leaked in a log", "--overlap", "0");
        Assert.Contains("shown once", rotated, StringComparison.Ordinal);
        Assert.Contains("it is refused as expired from now on", rotated, StringComparison.Ordinal); // not "keeps working until" now
        var newKey = ConsumerKey().Matches(rotated)[0].Value;
        var newId = CredentialId().Match(rotated).Groups[1].Value;
        Assert.NotEqual(key, newKey);
        Assert.Equal("deny.credential_expired", (await DemoGateway.ChatAsync(_gateway.DataPlaneUri, key)).Code);
        Assert.Equal(HttpStatusCode.OK, (await DemoGateway.ChatAsync(_gateway.DataPlaneUri, newKey)).Status);

        // Revoke is for good.
        Assert.Contains("active -> revoked", await AsAsync("service-owner", "keys", "revoke", newId, "--reason", "device lost"), StringComparison.Ordinal);
        Assert.Equal("deny.credential_revoked", (await DemoGateway.ChatAsync(_gateway.DataPlaneUri, newKey)).Code);
        var after = await AsAsync("security-auditor", "keys", "list");
        Assert.Equal("expired", DemoGateway.Row(after, id)[5]);
        Assert.Equal("revoked", DemoGateway.Row(after, newId)[5]);

        // Deciding the state twice is a conflict, said plainly.
        var (exit, _, error) = await RunAsync("service-owner", "keys", "resume", newId, "--reason", "oops");
        Assert.Equal(1, exit);
        Assert.StartsWith("error: conflict (409 admin.conflict): credential '" + newId + "' is revoked", error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Access_RequestListApprove_ThenExplainNamesTheApprover()
    {
        var before = await DemoGateway.ChatAsync(_gateway.DataPlaneUri, _demo.ConsumerKey("support-web"), "gpt-4o");
        Assert.Equal("deny.model_not_entitled", before.Code);

        var requested = await AsAsync("platform-admin", "access", "request", "--consumer", "support-web", "--model", "gpt-4o",
            "--justification", "escalations need the larger model", "--valid-until", "30d");
        var id = AccessRequestId().Match(requested).Groups[1].Value;
        Assert.Contains("is pending", requested, StringComparison.Ordinal);

        var pending = await AsAsync("platform-admin", "access", "list", "--status", "pending");
        Assert.Equal(["pending", "support-web", Service, "gpt-4o"], DemoGateway.Row(pending, id)[1..5]);
        Assert.Contains("escalations need the larger model", pending, StringComparison.Ordinal);
        Assert.Equal("No access requests match.", (await AsAsync("platform-admin", "access", "list", "--status", "approved")).Trim());

        // The platform admin who asked is not the policy owner: refused with the API's detail, nothing changes.
        var (selfExit, selfOut, selfError) = await RunAsync("platform-admin", "access", "approve", id, "--reason", "mine");
        Assert.Equal(1, selfExit);
        Assert.Equal("", selfOut);
        Assert.Contains("forbidden (403 admin.forbidden)", selfError, StringComparison.Ordinal);
        Assert.Contains($"only the policy owner of service '{Service}' ({Approver})", selfError, StringComparison.Ordinal);

        // The policy owner's admin approves: a new policy version naming them.
        var approved = await AsAsync("service-owner", "access", "approve", id, "--reason", "justified; ticket SUP-7");
        Assert.Contains($"access request {id} approved by {Approver}", approved, StringComparison.Ordinal);
        Assert.Contains($"policy version {_gateway.Policy.Current.Version}", approved, StringComparison.Ordinal);
        Assert.Equal(Approver, DemoGateway.Row(await AsAsync("security-auditor", "access", "list"), id)[8]);

        var call = await DemoGateway.ChatAsync(_gateway.DataPlaneUri, _demo.ConsumerKey("support-web"), "gpt-4o");
        Assert.Equal(HttpStatusCode.OK, call.Status);
        await _gateway.Ledger.FlushAsync();
        var explained = await AsAsync("security-auditor", "access", "explain", call.RequestId);
        Assert.StartsWith($"request {call.RequestId} used model gpt-4o under policy version {_gateway.Policy.Current.Version}; " +
            $"access approved by {Approver} (ticket {id}, requested by demo-platform-admin: escalations need the larger model), valid from ", explained, StringComparison.Ordinal);
        Assert.Contains(" until ", explained, StringComparison.Ordinal);

        // A model of the demo's own entitlement names its approver without an access request.
        var demo = await DemoGateway.ChatAsync(_gateway.DataPlaneUri, _demo.ConsumerKey("support-web"), "claude-sonnet");
        await _gateway.Ledger.FlushAsync();
        Assert.Contains("access approved by support-assistant-policy@acme.example (ticket DEMO-101)", await AsAsync("platform-admin", "access", "explain", demo.RequestId),
            StringComparison.Ordinal);

        // A consumer whose models the policy lists directly has no named approver.
        var direct = await DemoGateway.ChatAsync(_gateway.DataPlaneUri, _demo.ConsumerKey("data-team"));
        await _gateway.Ledger.FlushAsync();
        Assert.Contains("came from the policy", await AsAsync("platform-admin", "access", "explain", direct.RequestId), StringComparison.Ordinal);

        // Refused by a prompt rule, not for want of access: the hint reads its entry through the admin API the auditor used,
        // which may be all it has (no store on its machine).
        var secret = await DemoGateway.ChatAsync(_gateway.DataPlaneUri, _demo.ConsumerKey("support-web"), prompt: "aws AKIAIOSFODNN7EXAMPLE here");
        Assert.Equal("deny.prompt_restricted", secret.Code);
        await _gateway.Ledger.FlushAsync();
        Assert.EndsWith($"(the request was refused for another reason: custos requests --request-id {secret.RequestId} --server {_gateway.AdminUri}).",
            (await AsAsync("security-auditor", "access", "explain", secret.RequestId)).Trim(), StringComparison.Ordinal);

        // A second request, rejected: nothing changes but its status.
        var second = AccessRequestId().Match(await AsAsync("platform-admin", "access", "request", "--consumer", "support-web", "--model", "gpt-4o",
            "--justification", "again")).Groups[1].Value;
        var version = _gateway.Policy.Current.Version;
        Assert.Contains($"access request {second} rejected by {Approver}", await AsAsync("service-owner", "access", "reject", second, "--reason", "has it already"),
            StringComparison.Ordinal);
        Assert.Equal(version, _gateway.Policy.Current.Version);
        var (againExit, _, againError) = await RunAsync("service-owner", "access", "approve", second, "--reason", "changed my mind");
        Assert.Equal(1, againExit);
        Assert.Contains("409", againError, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ServicesAndOwners_SetOneRole_ListAndShowIt()
    {
        var services = await AsAsync("security-auditor", "services", "list");
        Assert.Equal(["acme", "5 of 5", "0", "no"], DemoGateway.Row(services, "research-agents")[1..]);
        Assert.Equal("3 of 5", DemoGateway.Row(services, Service)[2]);

        var set = await AsAsync("platform-admin", "owners", "set", "analytics", "--role", "agent-operator", "--name", "Analytics agent desk",
            "--webhook", "http://hooks.example.test/analytics", "--admin", Approver, "--reason", "analytics runs an agent pilot");
        Assert.Contains("service.owners_set service:analytics", set, StringComparison.Ordinal);
        var owners = _gateway.Policy.Current.Document.Services.Single(s => s.Id == "analytics").Owners;
        Assert.Equal("Analytics agent desk", owners.AgentOperator?.Name);
        Assert.Equal("Analytics product lead", owners.Policy?.Name); // the other roles stay as they were

        // The role as the policy file and the API spell it is the same role.
        await AsAsync("platform-admin", "owners", "set", "analytics", "--role", "business_sponsor", "--name", "Analytics sponsor",
            "--email", "sponsor@acme.example", "--reason", "the pilot's sponsor");
        Assert.Equal("Analytics sponsor", _gateway.Policy.Current.Document.Services.Single(s => s.Id == "analytics").Owners.BusinessSponsor?.Name);

        var list = await AsAsync("security-auditor", "owners", "list");
        Assert.StartsWith("SERVICE", list, StringComparison.Ordinal);
        var lines = list.Split('\n').Select(l => Regex.Split(l.Trim(), " {2,}")).ToList();
        Assert.Contains(lines, l => l is ["analytics", "agent-operator", "Analytics agent desk", "http://hooks.example.test/…", Approver]);
        Assert.Contains(lines, l => l is ["analytics", "business-sponsor", "Analytics sponsor", "sponsor@acme.example", "-"]);
        Assert.Contains(lines, l => l is ["analytics", "policy", "Analytics product lead", "analytics-policy@acme.example", "demo-service-owner"]); // the demo names its admin

        var show = await AsAsync("security-auditor", "services", "show", Service);
        Assert.Contains($"service {Service} (tenant acme): Customer-facing support chat", show, StringComparison.Ordinal);
        Assert.Contains(show.Split('\n'), l => l.Trim().StartsWith("policy ", StringComparison.Ordinal) && l.TrimEnd().EndsWith(Approver, StringComparison.Ordinal));
        Assert.Contains("agent-operator    — (no agent consumers)", show, StringComparison.Ordinal);
        Assert.Contains("governance gaps: none", show, StringComparison.Ordinal);
        Assert.Contains("model choice: every model of the tenant", show, StringComparison.Ordinal);
        Assert.Contains("budget: 100 per month (hard)", show, StringComparison.Ordinal);

        // An owner needs a contact: refused before any call.
        var (exit, _, error) = await RunAsync("platform-admin", "owners", "set", "analytics", "--role", "technical", "--name", "x", "--reason", "y");
        Assert.Equal(1, exit);
        Assert.Contains("--email ADDRESS or --webhook URL", error, StringComparison.Ordinal);

        // An acting admin that does not exist would make the policy invalid: 422, with the validation line.
        var (invalidExit, _, invalid) = await RunAsync("platform-admin", "owners", "set", "analytics", "--role", "policy", "--name", "x", "--email", "x@acme.example",
            "--admin", "nobody", "--reason", "y");
        Assert.Equal(1, invalidExit);
        Assert.Contains("422 admin.invalid_policy", invalid, StringComparison.Ordinal);
        Assert.Contains("admin 'nobody' is not declared", invalid, StringComparison.Ordinal);

        // Unknown service: 404.
        var (missingExit, _, missing) = await RunAsync("security-auditor", "services", "show", "nope");
        Assert.Equal(1, missingExit);
        Assert.Contains("not found (404 admin.not_found): service 'nope' does not exist.", missing, StringComparison.Ordinal);
    }

    [Fact]
    public async Task PromptAdmin_SetsAServicesPromptRulesAndModelChoice_FromAFile_AndEachIsAnAuditedVersion()
    {
        var web = _demo.ConsumerKey("support-web");
        var rules = Path.Combine(_demo.Directory, "rules.yaml");
        await File.WriteAllTextAsync(rules, """
            # as under a service's prompt_rules in the policy
            prompt_rules:
              - id: card-numbers
                detector: payment_card
                action: redact
              - id: project-names
                pattern: '(?i)project\s+falcon'
            """);
        Assert.Equal(HttpStatusCode.OK, (await DemoGateway.ChatAsync(_gateway.DataPlaneUri, web, prompt: "status of Project Falcon?")).Status);

        var set = await AsAsync("prompt-admin", "services", "set-prompt-rules", Service, "--file", rules, "--reason", "DS-12 keep the project name out");
        Assert.Contains($"service.prompt_rules_set service:{Service}", set, StringComparison.Ordinal);
        Assert.Contains("before: card-numbers (payment_card, redact), no-secrets (secrets, deny)", set, StringComparison.Ordinal);
        Assert.Contains("after:  card-numbers (payment_card, redact), project-names (pattern, deny)", set, StringComparison.Ordinal);
        var refused = await DemoGateway.ChatAsync(_gateway.DataPlaneUri, web, prompt: "status of Project Falcon?");
        Assert.Equal("deny.prompt_restricted", refused.Code);
        var entry = Assert.Single(await _demo.AdminEntriesAsync("service.prompt_rules_set"));
        Assert.Equal("demo-prompt-admin", entry.GetProperty("actor").GetString());
        Assert.Equal(_gateway.Policy.Current.Version, entry.GetProperty("policy_version").GetInt64());

        // The same rules in JSON, and a list without the mapping, read the same.
        await File.WriteAllTextAsync(rules, """[{"id": "project-names", "pattern": "(?i)project\\s+falcon", "action": "redact"}]""");
        Assert.Contains("after:  project-names (pattern, redact)", await AsAsync("prompt-admin", "services", "set-prompt-rules", Service, "--file", rules, "--reason", "DS-12 redact instead"),
            StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.OK, (await DemoGateway.ChatAsync(_gateway.DataPlaneUri, web, prompt: "status of Project Falcon?")).Status);

        // A pattern that does not compile changes nothing: 422 naming where; a file that is no list is refused before any call.
        var version = _gateway.Policy.Current.Version;
        await File.WriteAllTextAsync(rules, "- id: broken\n  pattern: '(unclosed'\n");
        var (badExit, _, bad) = await RunAsync("prompt-admin", "services", "set-prompt-rules", Service, "--file", rules, "--reason", "typo");
        Assert.Equal(1, badExit);
        Assert.Contains("422 admin.invalid_policy", bad, StringComparison.Ordinal);
        Assert.Contains("prompt_rules[0].pattern", bad, StringComparison.Ordinal);
        await File.WriteAllTextAsync(rules, "card-numbers: payment_card\n");
        var (listExit, _, list) = await RunAsync("prompt-admin", "services", "set-prompt-rules", Service, "--file", rules, "--reason", "typo");
        Assert.Equal(1, listExit);
        Assert.Contains("holds no list of rules", list, StringComparison.Ordinal);
        Assert.Equal(version, _gateway.Policy.Current.Version);

        // The model choice bounds the consumers' entitlements from the next request, and is lifted as simply.
        Assert.Equal(HttpStatusCode.OK, (await DemoGateway.ChatAsync(_gateway.DataPlaneUri, web)).Status);
        var models = await AsAsync("prompt-admin", "services", "set-models", Service, "--model", "claude-sonnet", "--reason", "DS-13 one vendor");
        Assert.Contains($"service.models_set service:{Service}: all -> claude-sonnet", models, StringComparison.Ordinal);
        Assert.Equal("deny.model_not_entitled", (await DemoGateway.ChatAsync(_gateway.DataPlaneUri, web)).Code);
        var show = await AsAsync("security-auditor", "services", "show", Service);
        Assert.Contains("model choice: claude-sonnet", show, StringComparison.Ordinal);
        Assert.Contains(@"project-names: pattern (?i)project\s+falcon -> redact", show, StringComparison.Ordinal);
        Assert.Contains("the tenant's prompt rules (every request of the service passes them too): none", show, StringComparison.Ordinal);
        await AsAsync("prompt-admin", "services", "set-models", Service, "--every-model", "--reason", "DS-14 every model again");
        Assert.Equal(HttpStatusCode.OK, (await DemoGateway.ChatAsync(_gateway.DataPlaneUri, web)).Status);

        // Neither option, or both, is refused before any call; finance may not choose models.
        var (noneExit, _, none) = await RunAsync("prompt-admin", "services", "set-models", Service, "--reason", "x");
        Assert.Equal(1, noneExit);
        Assert.Contains("--model NAME (repeat it), or --every-model", none, StringComparison.Ordinal);
        var (financeExit, _, finance) = await RunAsync("finance", "services", "set-models", Service, "--model", "gpt-4o", "--reason", "x");
        Assert.Equal(1, financeExit);
        Assert.Contains("403 admin.forbidden", finance, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Finance_SetsAndRemovesBudgets_AndReadsSpendBesideThem()
    {
        var web = _demo.ConsumerKey("support-web");
        Assert.Equal(HttpStatusCode.OK, (await DemoGateway.ChatAsync(_gateway.DataPlaneUri, web)).Status);
        await _gateway.Ledger.FlushAsync();

        var spend = await AsAsync("finance", "spend");
        var support = SpendRow(spend, Service);
        Assert.True(decimal.Parse(support[2], System.Globalization.CultureInfo.InvariantCulture) > 0, spend);
        Assert.Equal(["USD", "1", "100 per month (hard)"], support[3..]);
        Assert.Contains("total USD: ", spend, StringComparison.Ordinal);

        var set = await AsAsync("finance", "budgets", "set", "--consumer", "support-web", "--amount", "0.000001", "--period", "day", "--reason", "FIN-8 pilot cap");
        Assert.Contains("budget.set consumer:support-web: - -> 0.000001 per day (hard)", set, StringComparison.Ordinal);
        var entry = Assert.Single(await _demo.AdminEntriesAsync("budget.set"));
        Assert.Equal("demo-finance", entry.GetProperty("actor").GetString());
        Assert.Equal("FIN-8 pilot cap", entry.GetProperty("reason").GetString());
        Assert.Equal("deny.exceeds_limit", (await DemoGateway.ChatAsync(_gateway.DataPlaneUri, web)).Code);

        var removed = await AsAsync("finance", "budgets", "remove", "--consumer", "support-web", "--reason", "FIN-8 over");
        Assert.Contains("budget.set consumer:support-web: 0.000001 per day (hard) -> -", removed, StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.OK, (await DemoGateway.ChatAsync(_gateway.DataPlaneUri, web)).Status);
        await AsAsync("finance", "budgets", "set", "--service", "analytics", "--amount", "250", "--mode", "soft", "--reason", "FIN-9 Q4");
        Assert.Equal("250 per month (soft)", SpendRow(await AsAsync("security-auditor", "spend", "--from", "1h"), "analytics")[5]);

        // Refusals: a negative amount is the policy's 422, an unknown scope a 404, two scopes or a prompt admin never reach a change.
        var version = _gateway.Policy.Current.Version;
        var (negativeExit, _, negative) = await RunAsync("finance", "budgets", "set", "--tenant", "acme", "--amount", "-5", "--reason", "x");
        Assert.Equal(1, negativeExit);
        Assert.Contains("422 admin.invalid_policy", negative, StringComparison.Ordinal);
        var (unknownExit, _, unknown) = await RunAsync("finance", "budgets", "set", "--tenant", "nope", "--amount", "5", "--reason", "x");
        Assert.Equal(1, unknownExit);
        Assert.Contains("tenant 'nope' does not exist", unknown, StringComparison.Ordinal);
        var (twoExit, twoOutput, two) = await RunAsync("finance", "budgets", "set", "--tenant", "acme", "--service", "analytics", "--amount", "5", "--reason", "x");
        Assert.NotEqual(0, twoExit);
        Assert.Contains("name exactly one of --consumer ID, --service ID or --tenant ID", twoOutput + two, StringComparison.Ordinal);
        var (promptExit, _, prompt) = await RunAsync("prompt-admin", "budgets", "set", "--tenant", "acme", "--amount", "5", "--reason", "x");
        Assert.Equal(1, promptExit);
        Assert.Contains("403 admin.forbidden", prompt, StringComparison.Ordinal);
        Assert.Equal(version, _gateway.Policy.Current.Version);
    }

    [Fact]
    public async Task Changes_ListTheAdministrativeEntries_WithTheirActorVersionAndReason_FromTheApiOrTheStore()
    {
        await AsAsync("finance", "budgets", "set", "--service", "analytics", "--amount", "250", "--reason", "FIN-7 Q4 cap");
        var (deniedExit, _, _) = await RunAsync("finance", "keys", "revoke", "cred-support-web", "--reason", "not mine to revoke");
        Assert.Equal(1, deniedExit);
        await AsAsync("platform-admin", "keys", "suspend", "cred-support-web", "--reason", "leak drill");
        await _gateway.Ledger.FlushAsync();

        // Every change with its actor, version and reason; the refused attempt among them.
        var all = (await AsAsync("security-auditor", "changes")).Split('\n').Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)).ToList();
        Assert.Contains(all, l => l is [_, _, "demo-finance", "budget.set", "service:analytics", "v2", ..]);
        Assert.Contains(all, l => l is [_, _, "demo-finance", "credential.revoked_denied", "credential:cred-support-web", "v2", "role", "finance", ..]);
        var budget = (await AsAsync("security-auditor", "changes", "--action", "budget.set")).Split('\n');
        Assert.Contains(budget, l => l.Contains("budget.set", StringComparison.Ordinal) && l.EndsWith("- -> 250 per month (hard); FIN-7 Q4 cap", StringComparison.Ordinal));
        Assert.Equal("1 entry (newest last).", budget.Last(l => l.Length > 0));

        // --action takes a prefix; --actor and --target narrow it further.
        var credential = await AsAsync("security-auditor", "changes", "--action", "credential", "--target", "credential:cred-support-web");
        Assert.Contains("credential.revoked_denied", credential, StringComparison.Ordinal);
        Assert.Contains("active -> suspended; leak drill", credential, StringComparison.Ordinal);
        Assert.DoesNotContain("budget.set", credential, StringComparison.Ordinal);
        Assert.Equal("2 entries (newest last).", credential.Split('\n').Last(l => l.Length > 0));
        var json = (await AsAsync("security-auditor", "changes", "--actor", "demo-platform-admin", "--json")).Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(["policy.version_created", "credential.suspended"], json.Select(e => e.GetProperty("action").GetString()));
        Assert.All(json, e => Assert.Equal(_gateway.Policy.Current.Version, e.GetProperty("policy_version").GetInt64()));

        // The store says the same without a gateway's admin API; the newest N, oldest first.
        var (exit, local, error) = await Cli.RunAsync("changes", "--data", _demo.Directory, "--limit", "2", "--action", "credential");
        Assert.True(exit == 0, error);
        var lines = local.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(4, lines.Length);
        Assert.Contains("credential.revoked_denied", lines[1], StringComparison.Ordinal);
        Assert.Contains("credential.suspended", lines[2], StringComparison.Ordinal);

        // A role that does not read the ledger is refused, and the refusal is itself an entry.
        var (financeExit, _, finance) = await RunAsync("finance", "changes");
        Assert.Equal(1, financeExit);
        Assert.Contains("403 admin.forbidden", finance, StringComparison.Ordinal);
        Assert.Single(await _demo.AdminEntriesAsync("ledger.read_denied"));
    }

    /// <summary>The row of <c>custos spend</c>'s table for <paramref name="service"/>, its second column.</summary>
    private static string[] SpendRow(string table, string service)
        => table.ReplaceLineEndings("\n").Split('\n').Select(l => Regex.Split(l.Trim(), " {2,}")).Single(cells => cells.Length > 1 && cells[1] == service);

    [Fact]
    public async Task KillSwitch_EngageAndRelease_ForAConsumerAndATenant()
    {
        var web = _demo.ConsumerKey("support-web");
        var globex = _demo.ConsumerKey("globex-dev");
        Assert.Contains("released -> engaged", await AsAsync("service-owner", "kill-switch", "engage", "--consumer", "support-web", "--reason", "drill"),
            StringComparison.Ordinal);
        Assert.Equal("deny.consumer_suspended", (await DemoGateway.ChatAsync(_gateway.DataPlaneUri, web)).Code);
        var listed = DemoGateway.Row(await AsAsync("security-auditor", "kill-switch", "list"), "consumer");
        Assert.Equal(["consumer", "support-web", _gateway.Policy.Current.Version.ToString(CultureInfo.InvariantCulture), "demo-service-owner", "drill"],
            [.. listed[..2], .. listed[3..]]);
        Assert.Matches(@"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}$", listed[2]);
        await AsAsync("service-owner", "kill-switch", "release", "--consumer", "support-web", "--reason", "drill over");
        Assert.Equal(HttpStatusCode.OK, (await DemoGateway.ChatAsync(_gateway.DataPlaneUri, web)).Status);
        Assert.Equal("No kill switch is engaged.", (await AsAsync("security-auditor", "kill-switch", "list")).Trim());

        // Only a platform admin may stop a whole tenant.
        var (deniedExit, _, denied) = await RunAsync("service-owner", "kill-switch", "engage", "--tenant", "globex", "--reason", "drill");
        Assert.Equal(1, deniedExit);
        Assert.Contains("role service_owner may not do this", denied, StringComparison.Ordinal);

        await AsAsync("platform-admin", "kill-switch", "engage", "--tenant", "globex", "--reason", "incident 42");
        Assert.Equal("deny.tenant_suspended", (await DemoGateway.ChatAsync(_gateway.DataPlaneUri, globex)).Code);
        Assert.Equal(HttpStatusCode.OK, (await DemoGateway.ChatAsync(_gateway.DataPlaneUri, web)).Status);
        await AsAsync("platform-admin", "kill-switch", "release", "--tenant", "globex", "--reason", "incident 42 resolved");
        Assert.Equal(HttpStatusCode.OK, (await DemoGateway.ChatAsync(_gateway.DataPlaneUri, globex)).Status);

        var (bothExit, _, both) = await RunAsync("platform-admin", "kill-switch", "engage", "--tenant", "globex", "--consumer", "support-web", "--reason", "x");
        Assert.Equal(1, bothExit);
        Assert.Contains("exactly one of --consumer ID, --service ID or --tenant ID", both, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Store_ShowsTheRecordFormat_AndTheEmbeddedStoreRefusesASwitch_Clearly()
    {
        var shown = await AsAsync("security-auditor", "store", "show");
        Assert.Contains("record format: zstd (fixed: the embedded store always compresses)", shown, StringComparison.Ordinal);
        Assert.Contains("custos.db", shown, StringComparison.Ordinal);

        var (exit, _, error) = await RunAsync("platform-admin", "store", "record-format", "json", "--reason", "drill");
        Assert.Equal(1, exit);
        Assert.Contains("(409 admin.record_format_fixed)", error, StringComparison.Ordinal);

        var (badExit, _, bad) = await RunAsync("platform-admin", "store", "record-format", "lz4", "--reason", "drill");
        Assert.NotEqual(0, badExit);
        Assert.Contains("lz4", bad, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Json_EveryCommandPrintsOneJsonDocument()
    {
        JsonElement Json(string output)
        {
            using var document = JsonDocument.Parse(output);
            return document.RootElement.Clone();
        }

        var issued = Json(await AsAsync("platform-admin", "keys", "issue", "--consumer", "data-team", "--reason", "script", "--expires-at", "2099-01-01T00:00:00Z", "--json"));
        var id = issued.GetProperty("credential").GetProperty("id").GetString()!;
        Assert.StartsWith("csk_", issued.GetProperty("key").GetString(), StringComparison.Ordinal);
        Assert.Equal(2099, issued.GetProperty("credential").GetProperty("expires_at").GetDateTimeOffset().Year);
        Assert.Contains(Json(await AsAsync("platform-admin", "keys", "list", "--json")).EnumerateArray(), c => c.GetProperty("id").GetString() == id);
        var rotated = Json(await AsAsync("platform-admin", "keys", "rotate", id, "--reason", "script", "--overlap", "1h30m", "--json"));
        Assert.Contains("keeps working until", rotated.GetProperty("notice").GetString(), StringComparison.Ordinal);
        Assert.Equal("credential.suspended", Json(await AsAsync("platform-admin", "keys", "suspend", id, "--reason", "script", "--json")).GetProperty("action").GetString());
        Assert.Equal("credential.expired", Json(await AsAsync("platform-admin", "keys", "expire", id, "--reason", "script", "--json")).GetProperty("action").GetString());

        var services = _gateway.Policy.Current.Document.Services.Count;
        Assert.Equal(services, Json(await AsAsync("platform-admin", "services", "list", "--json")).GetArrayLength());
        Assert.Equal(Service, Json(await AsAsync("platform-admin", "services", "show", Service, "--json")).GetProperty("id").GetString());
        Assert.Equal(services * 5, Json(await AsAsync("platform-admin", "owners", "list", "--json")).GetArrayLength());
        Assert.Equal("service.owners_set", Json(await AsAsync("platform-admin", "owners", "set", Service, "--role", "billing", "--name", "Finance desk",
            "--email", "finance@acme.example", "--reason", "script", "--json")).GetProperty("action").GetString());

        var request = Json(await AsAsync("platform-admin", "access", "request", "--consumer", "support-web", "--model", "gpt-4o", "--justification", "script", "--json"));
        var requestId = request.GetProperty("id").GetString()!;
        Assert.Single(Json(await AsAsync("platform-admin", "access", "list", "--json")).EnumerateArray());
        Assert.Equal("approved", Json(await AsAsync("service-owner", "access", "approve", requestId, "--reason", "script", "--json")).GetProperty("status").GetString());
        var call = await DemoGateway.ChatAsync(_gateway.DataPlaneUri, _demo.ConsumerKey("support-web"), "gpt-4o");
        await _gateway.Ledger.FlushAsync();
        Assert.Equal(Approver, Json(await AsAsync("platform-admin", "access", "explain", call.RequestId, "--json")).GetProperty("approved_by").GetString());

        Assert.True(Json(await AsAsync("platform-admin", "kill-switch", "engage", "--service", "analytics", "--reason", "script", "--json")).GetProperty("policy_version").GetInt64() > 1);
        Assert.Single(Json(await AsAsync("platform-admin", "kill-switch", "list", "--json")).EnumerateArray());
    }

    [Fact]
    public async Task Errors_AreOneClearLine_AndExitNonZero()
    {
        // 403: the API's detail.
        var (exit, output, error) = await RunAsync("finance", "keys", "issue", "--consumer", "support-web", "--reason", "not mine to do");
        Assert.Equal(1, exit);
        Assert.Equal("", output);
        Assert.StartsWith("error: forbidden (403 admin.forbidden): 'demo-finance' (finance): role finance may not do this.", error, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", error, StringComparison.Ordinal); // no stack trace

        // 401: the key is unknown, or missing.
        var unknown = await Cli.RunAsync("keys", "list", "--server", _gateway.AdminUri.ToString(), "--admin-key", ApiKey.Generate(ApiKeyKind.Admin));
        Assert.Equal(1, unknown.Exit);
        Assert.Contains("not signed in (401 admin.unknown_key)", unknown.Error, StringComparison.Ordinal);
        Assert.Contains("missing or unknown", unknown.Error, StringComparison.Ordinal);
        var malformed = await Cli.RunAsync("services", "list", "--server", _gateway.AdminUri.ToString(), "--admin-key", "not-a-key");
        Assert.Contains("not signed in (401 admin.unauthenticated)", malformed.Error, StringComparison.Ordinal);

        // 400: the API's validation message.
        var (badExit, _, bad) = await RunAsync("platform-admin", "keys", "suspend", "cred-support-web", "--reason", " ");
        Assert.Equal(1, badExit);
        Assert.Contains("invalid request (400 admin.invalid_request)", bad, StringComparison.Ordinal);

        // The data plane instead of the admin API, and no server at all.
        var wrong = await Cli.RunAsync("keys", "list", "--server", _gateway.DataPlaneUri.ToString(), "--admin-key", _demo.AdminKey("platform-admin"));
        Assert.Equal(1, wrong.Exit);
        Assert.Contains("admin address", wrong.Error, StringComparison.Ordinal);
        var port = CustosProcess.FreePort();
        var down = await Cli.RunAsync("keys", "list", "--server", $"http://127.0.0.1:{port}", "--admin-key", _demo.AdminKey("platform-admin"));
        Assert.Equal(1, down.Exit);
        Assert.StartsWith($"error: cannot reach the admin API at http://127.0.0.1:{port}/", down.Error, StringComparison.Ordinal);

        // Caught before any call: a bad duration.
        var (durationExit, _, duration) = await RunAsync("platform-admin", "keys", "rotate", "cred-support-web", "--reason", "x", "--overlap", "soon");
        Assert.Equal(1, durationExit);
        Assert.Contains("--overlap 'soon' is not a duration", duration, StringComparison.Ordinal);
        Assert.NotEqual("expired", DemoGateway.Row(await AsAsync("platform-admin", "keys", "list"), "cred-support-web")[5]);
    }

    [Theory]
    [InlineData("0", 0)]
    [InlineData("3600", 3600)]
    [InlineData("3600s", 3600)]
    [InlineData("90m", 5400)]
    [InlineData("24h", 86400)]
    [InlineData("7d", 604800)]
    [InlineData("1h30m", 5400)]
    public void Durations_ReadAsSeconds(string text, long seconds)
        => Assert.Equal(seconds, (long)AdminClient.ParseDuration(text, "--overlap").TotalSeconds);

    [Theory]
    [InlineData("")]
    [InlineData("h")]
    [InlineData("1x")]
    [InlineData("1h30")]
    [InlineData("-5s")]
    public void Durations_Malformed_AreRefused(string text)
        => Assert.Throws<CliException>(() => AdminClient.ParseDuration(text, "--overlap"));
}
