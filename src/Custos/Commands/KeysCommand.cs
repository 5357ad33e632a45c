using System.CommandLine;
using System.Text.Json;
using Custos.Identity;
using Custos.Policy;

namespace Custos.Cli.Commands;

/// <summary>
/// <c>custos keys</c>. <c>generate</c> makes a new key offline and prints it once, with the hash to put in the policy;
/// <c>issue</c>, <c>list</c>, <c>rotate</c>, <c>suspend</c>, <c>resume</c>, <c>revoke</c> and <c>expire</c> manage the
/// credentials of a running gateway through its admin API, each change with a reason. A key is never stored anywhere.
/// </summary>
internal static class KeysCommand
{
    public static Command Create(TextWriter output)
    {
        var consumer = new Option<string?>("--consumer") { Description = "The consumer the key is for (consumer keys)." };
        var admin = new Option<string?>("--admin") { Description = "The admin identity the key is for (admin keys, cak_…)." };
        var role = new Option<string>("--role") { Description = "Role of the admin identity.", DefaultValueFactory = _ => "security_auditor" };
        var id = new Option<string?>("--id") { Description = "Credential id to write in the policy. Default: cred-CONSUMER-yyyymmdd." };
        var generate = new Command("generate", "Generate a new API key offline; prints the key once and the policy entry holding its hash.")
        {
            consumer, admin, role, id,
        };
        generate.SetAction(parse => Generate(parse.GetValue(consumer), parse.GetValue(admin), parse.GetValue(role)!, parse.GetValue(id), output));
        var keys = new Command("keys", "API keys: issue, list, rotate, suspend, resume, revoke and expire them on a running gateway; or generate one offline.")
        {
            generate, Issue(output), List(output), Rotate(output),
        };
        foreach (var (verb, description) in new[]
                 {
                     ("suspend", "Suspend a credential: refused (deny.credential_suspended) from the next request until resumed."),
                     ("resume", "Resume a suspended credential."),
                     ("revoke", "Revoke a credential, permanently."),
                     ("expire", "Expire a credential now."),
                 })
        {
            keys.Subcommands.Add(Lifecycle(verb, description, output));
        }

        return keys;
    }

    private static Option<string> Reason() => new("--reason") { Description = "Why: recorded in the ledger with the change.", Required = true };

    private static Argument<string> Id() => new("id") { Description = "The credential id (cred-…), as keys list shows it." };

    private static Command Issue(TextWriter output)
    {
        var consumer = new Option<string>("--consumer") { Description = "The consumer the key is bound to.", Required = true };
        var reason = Reason();
        var expiresAt = new Option<string?>("--expires-at") { Description = "When the key expires: ISO 8601, or a duration from now such as 90d. Default: never." };
        var command = new Command("issue", "Issue an API key for a consumer on the running gateway; the key is printed this once.") { consumer, reason, expiresAt };
        return AdminClient.Define(command, output, (parse, admin, cancellationToken) => admin.PostAsync("/admin/v1/credentials", new
        {
            consumer = parse.GetValue(consumer),
            reason = parse.GetValue(reason),
            expires_at = AdminClient.ParseFutureTime(parse.GetValue(expiresAt), "--expires-at"),
        }, cancellationToken), (_, root) => WriteIssued(output, root));
    }

    private static Command List(TextWriter output)
    {
        var consumer = new Option<string?>("--consumer") { Description = "Only this consumer's credentials." };
        var service = new Option<string?>("--service") { Description = "Only the credentials of this service's consumers." };
        var command = new Command("list", "List credentials: prefix, status, created, last used and expiry; never a key.") { consumer, service };
        return AdminClient.Define(command, output, (parse, admin, cancellationToken) =>
        {
            var query = new List<string>();
            if (parse.GetValue(consumer) is { } c)
            {
                query.Add("consumer=" + Uri.EscapeDataString(c));
            }

            if (parse.GetValue(service) is { } s)
            {
                query.Add("service=" + Uri.EscapeDataString(s));
            }

            return admin.GetAsync("/admin/v1/credentials" + (query.Count == 0 ? "" : "?" + string.Join("&", query)), cancellationToken);
        }, (_, root) =>
        {
            AdminClient.WriteTable(output, ["ID", "CONSUMER", "SERVICE", "KIND", "PREFIX", "STATUS", "CREATED", "LAST USED", "EXPIRES"],
                root.EnumerateArray().Select(c => new[]
                {
                    AdminClient.Text(c, "id"), AdminClient.Text(c, "consumer"), AdminClient.Text(c, "service"), AdminClient.Text(c, "kind"),
                    AdminClient.Text(c, "prefix"), AdminClient.Text(c, "status"), AdminClient.Time(c, "created_at"), AdminClient.Time(c, "last_used", "never"),
                    AdminClient.Time(c, "expires_at", "never"),
                }), "No credentials match.");
            var count = root.GetArrayLength();
            if (count > 0)
            {
                output.WriteLine($"{count} credential(s); times in UTC.");
            }
        });
    }

    private static Command Rotate(TextWriter output)
    {
        var id = Id();
        var reason = Reason();
        var overlap = new Option<string?>("--overlap")
        {
            Description = "How long the old key keeps working beside the new one: 24h, 90m, 3600s, 0 (ends it now)… Default: the gateway's (one day).",
        };
        var command = new Command("rotate", "Replace a key: a new key now (printed this once), the old one working for an overlap window.") { id, reason, overlap };
        return AdminClient.Define(command, output, (parse, admin, cancellationToken) =>
        {
            long? seconds = parse.GetValue(overlap) is { } text ? (long)AdminClient.ParseDuration(text, "--overlap").TotalSeconds : null;
            return admin.PostAsync($"/admin/v1/credentials/{AdminClient.Segment(parse.GetValue(id)!)}/rotate",
                new { reason = parse.GetValue(reason), overlap_seconds = seconds }, cancellationToken);
        }, (_, root) => WriteIssued(output, root));
    }

    private static Command Lifecycle(string verb, string description, TextWriter output)
    {
        var id = Id();
        var reason = Reason();
        var command = new Command(verb, description) { id, reason };
        return AdminClient.Define(command, output, (parse, admin, cancellationToken) => admin.PostAsync(
            $"/admin/v1/credentials/{AdminClient.Segment(parse.GetValue(id)!)}/{verb}", new { reason = parse.GetValue(reason) }, cancellationToken),
            (_, root) => AdminClient.WriteChange(output, root));
    }

    /// <summary>Prints an issued (or rotated-in) key once, with the notice, then what identifies it from now on.</summary>
    private static void WriteIssued(TextWriter output, JsonElement issued)
    {
        var credential = issued.GetProperty("credential");
        output.WriteLine($"key (shown once, store it in your secret manager): {AdminClient.Text(issued, "key")}");
        output.WriteLine(AdminClient.Text(issued, "notice"));
        output.WriteLine($"credential: {AdminClient.Text(credential, "id")} (prefix {AdminClient.Text(credential, "prefix")}), consumer " +
            $"{AdminClient.Text(credential, "consumer")} of service {AdminClient.Text(credential, "service")}, {AdminClient.Text(credential, "status")}, " +
            $"expires {AdminClient.Time(credential, "expires_at", "never", seconds: true)}; policy version {AdminClient.Scalar(issued, "policy_version")}.");
    }

    private static int Generate(string? consumer, string? admin, string role, string? id, TextWriter output)
    {
        if ((consumer is null) == (admin is null))
        {
            throw new CliException("name exactly one of --consumer NAME or --admin NAME");
        }

        // Checked before the key is made: a key printed and then refused would be shown once for nothing.
        // platform_admin as the policy file, the API and the ledger spell it; platform-admin, as these docs once did, read as the same.
        var normalized = role.Replace("-", "", StringComparison.Ordinal).Replace("_", "", StringComparison.Ordinal);
        var known = Enum.TryParse<AdminRole>(normalized, ignoreCase: true, out var parsed) && Enum.IsDefined(parsed) && !normalized.All(char.IsAsciiDigit);
        if (admin is not null && !known)
        {
            throw new CliException($"unknown role '{role}': use platform_admin, service_owner, prompt_admin, security_auditor or finance");
        }

        var key = ApiKey.Generate(admin is null ? ApiKeyKind.Consumer : ApiKeyKind.Admin);
        var hash = KeyHash.Of(key).ToHex();
        output.WriteLine($"key (shown once, store it in your secret manager): {key}");
        output.WriteLine();
        if (consumer is not null)
        {
            output.WriteLine("Add to the credentials of your policy:");
            output.WriteLine($"  - id: {id ?? $"cred-{consumer}-{DateTime.UtcNow:yyyyMMdd}"}");
            output.WriteLine($"    consumer: {consumer}");
            output.WriteLine($"    key_sha256: {hash}");
            output.WriteLine($"    prefix: {key[..12]}");
        }
        else
        {
            output.WriteLine("Add to the admins of your policy:");
            output.WriteLine($"  - id: {admin}");
            output.WriteLine($"    role: {PolicyNames.Of(parsed)}");
            output.WriteLine($"    key_sha256: {hash}");
        }

        return 0;
    }
}
