using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Custos.Cli.Commands;

/// <summary><c>custos services list|show</c>: services in scope, their owners, governance gaps, model choice, approvers and budget.</summary>
internal static class ServicesCommand
{
    public static Command Create(TextWriter output) => new("services", "Services (the unit of ownership) of the running gateway: list, show, and the prompt admin's part, prompt rules and model choice.")
    {
        List(output), Show(output), SetPromptRules(output), SetModels(output),
    };

    private static Command List(TextWriter output)
    {
        var command = new Command("list", "Services in scope: tenant, how many owner roles are named, governance gaps, kill switch.");
        return AdminClient.Define(command, output, (_, admin, cancellationToken) => admin.GetAsync("/admin/v1/services", cancellationToken), (_, root) =>
        {
            var services = root.EnumerateArray().ToList();
            AdminClient.WriteTable(output, ["ID", "TENANT", "OWNERS SET", "GAPS", "SUSPENDED"], services.Select(s => new[]
            {
                AdminClient.Text(s, "id"), AdminClient.Text(s, "tenant"),
                $"{s.GetProperty("owners").EnumerateObject().Count(o => o.Value.ValueKind == JsonValueKind.Object)} of {OwnersCommand.Roles.Length}",
                AdminClient.Strings(s, "governance_gaps").Count.ToString(System.Globalization.CultureInfo.InvariantCulture),
                s.GetProperty("suspended").GetBoolean() ? "yes" : "no",
            }), "No services in scope.");
            var gaps = services.SelectMany(s => AdminClient.Strings(s, "governance_gaps")).ToList();
            if (gaps.Count > 0)
            {
                output.WriteLine();
                output.WriteLine("Governance gaps:");
                foreach (var gap in gaps)
                {
                    output.WriteLine("  " + gap);
                }
            }
        });
    }

    private static Command Show(TextWriter output)
    {
        var id = new Argument<string>("id") { Description = "The service id." };
        var command = new Command("show", "One service: owners per role with contacts and acting admin, governance gaps, model choice, approvers, budget.") { id };
        return AdminClient.Define(command, output, (parse, admin, cancellationToken) => admin.GetAsync("/admin/v1/services/" + AdminClient.Segment(parse.GetValue(id)!),
            cancellationToken), (_, s) =>
        {
            output.WriteLine($"service {AdminClient.Text(s, "id")} (tenant {AdminClient.Text(s, "tenant")}){(AdminClient.Text(s, "description") is { } d ? ": " + d : "")}");
            output.WriteLine($"kill switch: {(s.GetProperty("suspended").GetBoolean() ? "ENGAGED (every request is refused)" : "released")}");
            output.WriteLine();
            output.WriteLine("owners:");
            var owners = s.GetProperty("owners");
            var required = s.TryGetProperty("required_owner_roles", out var r) && r.ValueKind == JsonValueKind.Array ? AdminClient.Strings(s, "required_owner_roles") : null;
            AdminClient.WriteTable(output, ["  ROLE", "NAME", "CONTACT", "ADMIN"], OwnersCommand.Roles.Select(role =>
            {
                var (name, contact, acting) = OwnersCommand.Describe(owners.TryGetProperty(role.Replace('-', '_'), out var o) ? o : default,
                    required?.Contains(role.Replace('-', '_')) ?? true);
                return new[] { "  " + role, name, contact, acting };
            }), "");
            output.WriteLine();
            var gaps = AdminClient.Strings(s, "governance_gaps");
            output.WriteLine(gaps.Count == 0 ? "governance gaps: none" : "governance gaps:");
            foreach (var gap in gaps)
            {
                output.WriteLine("  " + gap);
            }

            var models = s.TryGetProperty("models", out var m) && m.ValueKind == JsonValueKind.Array ? AdminClient.Strings(s, "models") : null;
            output.WriteLine($"model choice: {(models is null ? "every model of the tenant" : models.Count == 0 ? "none" : string.Join(", ", models))}");
            var approvers = AdminClient.Strings(s, "approvers");
            output.WriteLine($"approvers: {(approvers.Count == 0 ? "the policy owner's admin only" : string.Join(", ", approvers) + " (besides the policy owner's admin)")}");
            output.WriteLine($"budget: {(s.TryGetProperty("budget", out var b) && b.ValueKind == JsonValueKind.Object
                ? $"{AdminClient.Scalar(b, "amount")} per {AdminClient.Text(b, "period")} ({AdminClient.Text(b, "mode")})"
                : "none")}");
            WriteRules(output, "prompt rules", s, "prompt_rules");
            WriteRules(output, "the tenant's prompt rules (every request of the service passes them too)", s, "tenant_prompt_rules");
        });
    }

    private static void WriteRules(TextWriter output, string title, JsonElement service, string name)
    {
        var rules = service.TryGetProperty(name, out var r) && r.ValueKind == JsonValueKind.Array ? r.EnumerateArray().ToList() : [];
        output.WriteLine(rules.Count == 0 ? title + ": none" : title + ":");
        foreach (var rule in rules)
        {
            var match = AdminClient.Text(rule, "detector") is { } detector ? "detector " + detector : "pattern " + AdminClient.Text(rule, "pattern");
            output.WriteLine($"  {AdminClient.Text(rule, "id")}: {match} -> {AdminClient.Text(rule, "action") ?? "deny"}");
        }
    }

    /// <summary>
    /// <c>custos services set-prompt-rules ID --file RULES --reason WHY</c>: replaces the service's prompt rules with those of a
    /// YAML (or JSON) file, written as the policy writes a service's <c>prompt_rules</c>: a list of rules, or a mapping with
    /// <c>prompt_rules:</c>. The gateway validates them (a pattern that does not compile is a 422 naming the rule).
    /// </summary>
    private static Command SetPromptRules(TextWriter output)
    {
        var id = new Argument<string>("id") { Description = "The service id." };
        var file = new Option<FileInfo>("--file")
        {
            Description = "YAML or JSON: a list of rules (id, pattern or detector, action), as under a service's prompt_rules in the policy; an empty list removes the service's own rules.",
            Required = true,
        };
        var reason = new Option<string>("--reason") { Description = "Why: recorded in the ledger with the change.", Required = true };
        var command = new Command("set-prompt-rules", "Replace a service's prompt restrictions (prompt_admin, platform_admin) with the rules of a file.") { id, file, reason };
        return AdminClient.Define(command, output, async (parse, admin, cancellationToken) =>
        {
            var rules = ReadRules(parse.GetValue(file)!);
            return await admin.PutAsync($"/admin/v1/services/{AdminClient.Segment(parse.GetValue(id)!)}/prompt-rules",
                new JsonObject { ["prompt_rules"] = rules, ["reason"] = parse.GetValue(reason) }, cancellationToken);
        }, (_, root) => AdminClient.WriteChange(output, root));
    }

    /// <summary><c>custos services set-models ID --model M [--model N …] | --every-model --reason WHY</c>: the service's model choice.</summary>
    private static Command SetModels(TextWriter output)
    {
        var id = new Argument<string>("id") { Description = "The service id." };
        var models = new Option<string[]>("--model")
        {
            Description = "A model (name or alias) of the tenant the service's consumers may use; repeat it, or separate names with commas.",
            AllowMultipleArgumentsPerToken = true,
        };
        var every = new Option<bool>("--every-model") { Description = "Remove the choice: the service's consumers may use every model of the tenant their entitlements name." };
        var reason = new Option<string>("--reason") { Description = "Why: recorded in the ledger with the change.", Required = true };
        var command = new Command("set-models", "Set a service's model choice (prompt_admin, platform_admin): the models its consumers' entitlements may name.")
        {
            id, models, every, reason,
        };
        return AdminClient.Define(command, output, async (parse, admin, cancellationToken) =>
        {
            var names = (parse.GetValue(models) ?? []).SelectMany(m => m.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToList();
            var all = parse.GetValue(every);
            if (all == (names.Count > 0))
            {
                throw new CliException(all ? "--every-model removes the choice; give it without --model" : "name the models: --model NAME (repeat it), or --every-model");
            }

            var list = all ? null : new JsonArray([.. names.Select(n => (JsonNode)JsonValue.Create(n))]);
            return await admin.PutAsync($"/admin/v1/services/{AdminClient.Segment(parse.GetValue(id)!)}/models",
                new JsonObject { ["models"] = list, ["reason"] = parse.GetValue(reason) }, cancellationToken);
        }, (_, root) => AdminClient.WriteChange(output, root));
    }

    /// <summary>The rules of <paramref name="file"/> as the API's JSON: YAML scalars as strings, which every field of a rule is.</summary>
    internal static JsonArray ReadRules(FileInfo file)
    {
        string text;
        try
        {
            text = File.ReadAllText(file.FullName);
        }
        catch (FileNotFoundException)
        {
            throw new CliException($"--file {file.FullName} does not exist");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new CliException($"--file {file.FullName} could not be read: {e.Message}");
        }

        var stream = new YamlStream();
        try
        {
            stream.Load(new StringReader(text));
        }
        catch (YamlException e)
        {
            throw new CliException($"--file {file.Name} is not valid YAML or JSON (line {e.Start.Line}, column {e.Start.Column}): {e.InnerException?.Message ?? e.Message}");
        }

        var root = stream.Documents.Count == 0 ? null : stream.Documents[0].RootNode;
        if (root is YamlMappingNode mapping && mapping.Children.TryGetValue(new YamlScalarNode("prompt_rules"), out var inner))
        {
            root = inner;
        }

        return root is YamlSequenceNode sequence
            ? new JsonArray([.. sequence.Children.Select(ToJson)])
            : throw new CliException($"--file {file.Name} holds no list of rules: write them as under a service's prompt_rules in the policy " +
                "(- id: card-numbers / detector: payment_card / action: redact), or as a mapping with prompt_rules:");
    }

    private static JsonNode? ToJson(YamlNode node) => node switch
    {
        YamlMappingNode m => new JsonObject(m.Children.Select(c => KeyValuePair.Create((c.Key as YamlScalarNode)?.Value ?? "", ToJson(c.Value)))),
        YamlSequenceNode s => new JsonArray([.. s.Children.Select(ToJson)]),
        YamlScalarNode { Value: null or "~" or "null", Style: ScalarStyle.Plain } => null,
        YamlScalarNode scalar => JsonValue.Create(scalar.Value),
        _ => null,
    };
}
