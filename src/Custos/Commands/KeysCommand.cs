using System.CommandLine;
using Custos.Identity;
using Custos.Policy;

namespace Custos.Cli.Commands;

/// <summary>
/// <c>custos keys generate</c>: makes a new key offline and prints it once, with the hash to put in the policy.
/// The key itself is never stored anywhere.
/// </summary>
internal static class KeysCommand
{
    public static Command Create(TextWriter output)
    {
        var consumer = new Option<string?>("--consumer") { Description = "The consumer the key is for (consumer keys)." };
        var admin = new Option<string?>("--admin") { Description = "The admin identity the key is for (admin keys, cak_…)." };
        var role = new Option<string>("--role") { Description = "Role of the admin identity.", DefaultValueFactory = _ => "security-auditor" };
        var id = new Option<string?>("--id") { Description = "Credential id to write in the policy. Default: cred-CONSUMER-yyyymmdd." };
        var generate = new Command("generate", "Generate a new API key offline; prints the key once and the policy entry holding its hash.")
        {
            consumer, admin, role, id,
        };
        generate.SetAction(parse => Generate(parse.GetValue(consumer), parse.GetValue(admin), parse.GetValue(role)!, parse.GetValue(id), output));
        return new Command("keys", "API keys: generate (offline). Issue, list, rotate, suspend and revoke arrive with the admin API.") { generate };
    }

    private static int Generate(string? consumer, string? admin, string role, string? id, TextWriter output)
    {
        if ((consumer is null) == (admin is null))
        {
            throw new CliException("name exactly one of --consumer NAME or --admin NAME");
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
        }
        else
        {
            if (!Enum.TryParse<AdminRole>(role.Replace("-", "", StringComparison.Ordinal).Replace("_", "", StringComparison.Ordinal), true, out _))
            {
                throw new CliException($"unknown role '{role}': use platform-admin, service-owner, prompt-admin, security-auditor or finance");
            }

            output.WriteLine("Add to the admins of your policy:");
            output.WriteLine($"  - id: {admin}");
            output.WriteLine($"    role: {role.Replace('-', '_')}");
            output.WriteLine($"    key_sha256: {hash}");
        }

        return 0;
    }
}
