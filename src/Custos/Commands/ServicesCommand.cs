using System.CommandLine;
using System.Text.Json;

namespace Custos.Cli.Commands;

/// <summary><c>custos services list|show</c>: services in scope, their owners, governance gaps, model choice, approvers and budget.</summary>
internal static class ServicesCommand
{
    public static Command Create(TextWriter output) => new("services", "Services (the unit of ownership) of the running gateway.")
    {
        List(output), Show(output),
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
        });
    }
}
