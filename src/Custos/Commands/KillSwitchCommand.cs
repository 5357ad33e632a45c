using System.CommandLine;

namespace Custos.Cli.Commands;

/// <summary>
/// <c>custos kill-switch engage|release|list</c>: refuse every request of a consumer, service or tenant from the next
/// request on, and release it again; each with a reason, recorded and notified to the owners.
/// </summary>
internal static class KillSwitchCommand
{
    public static Command Create(TextWriter output) => new("kill-switch", "Kill switches: refuse every request of a consumer, a service or a tenant, at once.")
    {
        Switch("engage", engaged: true, output), Switch("release", engaged: false, output), List(output),
    };

    private static Command Switch(string verb, bool engaged, TextWriter output)
    {
        var reason = new Option<string>("--reason") { Description = "Why: recorded in the ledger and sent to the owners.", Required = true };
        var command = new Command(verb, engaged
            ? "Engage a kill switch: every request of the consumer, service or tenant is refused from the next one on."
            : "Release a kill switch: requests are served again.") { reason };
        var scopes = AdminClient.AddScope(command, "A consumer (platform_admin, service_owner).", "A service (platform_admin, service_owner).", "A whole tenant (platform_admin).");
        return AdminClient.Define(command, output, (parse, admin, cancellationToken) =>
        {
            var (scope, id) = AdminClient.ScopeOf(parse, scopes);
            return admin.PostAsync("/admin/v1/kill-switches", new
            {
                scope,
                id,
                engaged,
                reason = parse.GetValue(reason),
            }, cancellationToken);
        }, (_, root) => AdminClient.WriteChange(output, root));
    }

    private static Command List(TextWriter output)
    {
        var command = new Command("list", "Kill switches engaged now, in scope: since when, the policy version that engaged each, by whom and why.");
        return AdminClient.Define(command, output, (_, admin, cancellationToken) => admin.GetAsync("/admin/v1/kill-switches", cancellationToken), (_, root) =>
            AdminClient.WriteTable(output, ["SCOPE", "ID", "SINCE", "VERSION", "BY", "REASON"], root.EnumerateArray().Select(k => new[]
            {
                AdminClient.Text(k, "scope"), AdminClient.Text(k, "id"), AdminClient.Time(k, "since"), AdminClient.Scalar(k, "policy_version"),
                AdminClient.Text(k, "engaged_by"), AdminClient.Text(k, "reason"),
            }), "No kill switch is engaged."));
    }
}
