using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace Custos.Cli.Commands;

/// <summary>
/// <c>custos owners list|set</c>: the accountable owners of services. Setting one role reads the service's owners,
/// replaces that role and sends them all back, as one change with a reason.
/// </summary>
internal static class OwnersCommand
{
    /// <summary>The owner roles, as the CLI names them; the API writes them with underscores.</summary>
    public static readonly string[] Roles = ["policy", "billing", "technical", "agent-operator", "business-sponsor"];

    public static Command Create(TextWriter output) => new("owners", "Owners of services: who owns the policy, the bill, the technical controls and, for agents, operation and sponsorship.")
    {
        List(output), Set(output),
    };

    /// <summary>
    /// The name, contact (e-mail and/or webhook) and acting admin of an owner; when the role is unfilled, a missing marker,
    /// or, for a role not <paramref name="required"/> (an agent role of a service with no agent consumers, which the
    /// governance gaps do not count), a note saying so.
    /// </summary>
    public static (string Name, string? Contact, string? Admin) Describe(JsonElement owner, bool required)
    {
        if (AdminClient.Text(owner, "name") is not { } name)
        {
            return (required ? "— missing" : "— (no agent consumers)", null, null);
        }

        var contact = string.Join(", ", new[] { AdminClient.Text(owner, "email"), AdminClient.Text(owner, "webhook") }.Where(c => c is not null));
        return (name, contact, AdminClient.Text(owner, "admin"));
    }

    private static Command List(TextWriter output)
    {
        var command = new Command("list", "Every owner role of every service in scope; an unfilled role shows as missing.");
        return AdminClient.Define(command, output, (_, admin, cancellationToken) => admin.GetAsync("/admin/v1/owners", cancellationToken), (_, root) =>
            AdminClient.WriteTable(output, ["SERVICE", "ROLE", "NAME", "CONTACT", "ADMIN"], root.EnumerateArray().Select(o =>
            {
                var (name, contact, acting) = Describe(o, !o.TryGetProperty("required", out var required) || required.ValueKind != JsonValueKind.False);
                return new[] { AdminClient.Text(o, "service"), AdminClient.Text(o, "role")?.Replace('_', '-'), name, contact, acting };
            }), "No services in scope."));
    }

    private static Command Set(TextWriter output)
    {
        var service = new Argument<string>("service") { Description = "The service id." };
        var role = new Option<string>("--role")
        {
            Description = "The owner role to name; agent-operator and business-sponsor may also be written with underscores, as the policy file and the API write them.",
            Required = true,
        };
        role.CompletionSources.Add(Roles);
        role.CustomParser = result => result.Tokens.Count == 0 ? null : result.Tokens[0].Value.Replace('_', '-');
        role.Validators.Add(result =>
        {
            if (result.GetValueOrDefault<string>() is { } value && !Roles.Contains(value))
            {
                result.AddError($"Argument '{result.Tokens[0].Value}' not recognized. Must be one of: {string.Join(", ", Roles)}.");
            }
        });
        var name = new Option<string>("--name") { Description = "The person or team.", Required = true };
        var email = new Option<string?>("--email") { Description = "Their e-mail address." };
        var webhook = new Option<string?>("--webhook") { Description = "Their webhook URL for notifications." };
        var acting = new Option<string?>("--admin") { Description = "The admin identity that acts for this owner (for the policy owner: decides access requests)." };
        var reason = new Option<string>("--reason") { Description = "Why: recorded in the ledger with the change.", Required = true };
        var command = new Command("set", "Name the owner of one role of a service (--email and/or --webhook); the other roles stay as they are.")
        {
            service, role, name, email, webhook, acting, reason,
        };
        return AdminClient.Define(command, output, async (parse, admin, cancellationToken) =>
        {
            var (mail, hook) = (parse.GetValue(email), parse.GetValue(webhook));
            if (mail is null && hook is null)
            {
                throw new CliException("name a contact: --email ADDRESS or --webhook URL");
            }

            if (hook is not null && (!Uri.TryCreate(hook, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https")))
            {
                throw new CliException($"--webhook '{hook}' is not an http(s) URL");
            }

            // The one role only: the others are left as the gateway has them, whatever another admin set meanwhile.
            var path = $"/admin/v1/services/{AdminClient.Segment(parse.GetValue(service)!)}/owners/{AdminClient.Segment(parse.GetValue(role)!.Replace('-', '_'))}";
            var owner = new JsonObject
            {
                ["name"] = parse.GetValue(name),
                ["email"] = mail,
                ["webhook"] = hook,
                ["admin"] = parse.GetValue(acting),
            };
            return await admin.PutAsync(path, new JsonObject { ["owner"] = owner, ["reason"] = parse.GetValue(reason) }, cancellationToken);
        }, (_, root) => AdminClient.WriteChange(output, root));
    }
}
