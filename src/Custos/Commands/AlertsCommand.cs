using System.CommandLine;
using System.Globalization;
using System.Text.Json;

namespace Custos.Cli.Commands;

/// <summary>
/// <c>custos alerts list|show|ack|resume|resolve</c>: what the detectors raised, its evidence, who was told and what the
/// gateway did by itself; acknowledge an alert (it stops escalating), undo its automatic action with a reason, or resolve it.
/// </summary>
internal static class AlertsCommand
{
    /// <summary>Summaries longer than this are cut in the list; <c>alerts show</c> prints them whole.</summary>
    private const int SummaryWidth = 72;

    /// <summary>The same for the automatic action.</summary>
    private const int ActionWidth = 40;

    public static Command Create(TextWriter output) => new("alerts", "Alerts: what the detectors raised, who was told and what was done; acknowledge them, undo an automatic action.")
    {
        List(output), Show(output), Acknowledge(output), Resume(output), Resolve(output),
    };

    private static Argument<string> Id() => new("id") { Description = "The alert id (al-…), as alerts list shows it." };

    private static Command List(TextWriter output)
    {
        var status = new Option<string?>("--status") { Description = "Only alerts of this status." };
        status.AcceptOnlyFromAmong("open", "acknowledged", "resolved");
        var limit = CommonOptions.WholeNumber(new Option<int?>("--limit") { Description = "At most this many, newest first. Default: the gateway's (100)." }, 1, int.MaxValue);
        var command = new Command("list", "Alerts in scope, newest first: when, how bad, what, about whom, where they stand, what was done.") { status, limit };
        return AdminClient.Define(command, output, (parse, admin, cancellationToken) =>
        {
            var query = new List<string>();
            if (parse.GetValue(status) is { } s)
            {
                query.Add("status=" + s);
            }

            if (parse.GetValue(limit) is { } n)
            {
                query.Add("limit=" + n.ToString(CultureInfo.InvariantCulture));
            }

            return admin.GetAsync("/admin/v1/alerts" + (query.Count == 0 ? "" : "?" + string.Join("&", query)), cancellationToken);
        }, (_, root) =>
        {
            AdminClient.WriteTable(output, ["ID", "RAISED", "SEVERITY", "TYPE", "SUBJECT", "STATUS", "ACTION", "SUMMARY"],
                root.EnumerateArray().Select(a => new[]
                {
                    AdminClient.Text(a, "id"), AdminClient.Time(a, "raised_at"), AdminClient.Text(a, "severity"), AdminClient.Text(a, "type"),
                    AdminClient.Text(a, "subject"), AdminClient.Text(a, "status"), Cut(AdminClient.Text(a, "action_taken"), ActionWidth),
                    Cut(AdminClient.Text(a, "summary"), SummaryWidth),
                }), "No alerts.");
            var count = root.GetArrayLength();
            if (count > 0)
            {
                output.WriteLine($"{count} alert(s); times in UTC. The evidence of one: custos alerts show ID.");
            }
        });
    }

    private static Command Show(TextWriter output)
    {
        var id = Id();
        var command = new Command("show", "One alert: the signal and its evidence, the rule, who was told, escalation, acknowledgement and the automatic action.") { id };
        return AdminClient.Define(command, output, (parse, admin, cancellationToken) => admin.GetAsync(
            $"/admin/v1/alerts/{AdminClient.Segment(parse.GetValue(id)!)}", cancellationToken), (_, a) => WriteAlert(output, a));
    }

    private static Command Acknowledge(TextWriter output)
    {
        var id = Id();
        var note = new Option<string?>("--note") { Description = "A note kept with the alert and in the ledger, for example what you are doing about it." };
        var command = new Command("ack", "Acknowledge an alert: you have it, so it stops escalating. An automatic action stays in force (see alerts resume).") { id, note };
        return AdminClient.Define(command, output, (parse, admin, cancellationToken) => admin.PostAsync(
            $"/admin/v1/alerts/{AdminClient.Segment(parse.GetValue(id)!)}/ack", new { note = parse.GetValue(note) }, cancellationToken), (_, a) =>
        {
            var (alertId, by, at) = (AdminClient.Text(a, "id"), AdminClient.Text(a, "acknowledged_by"), AdminClient.Time(a, "acknowledged_at", seconds: true));
            output.WriteLine(AdminClient.Text(a, "status") switch
            {
                "acknowledged" => $"alert {alertId} acknowledged by {by} at {at}; it no longer escalates." +
                    (AdminClient.Text(a, "action_taken") is { } action ? $" Its automatic action ({action}) stays until: custos alerts resume {alertId} --reason …" : ""),
                var status => $"alert {alertId} is {status} (by {AdminClient.Text(a, "resolved_by") ?? by}); nothing to acknowledge.",
            });
        });
    }

    private static Command Resume(TextWriter output)
    {
        var id = Id();
        var reason = new Option<string>("--reason") { Description = "Why it is safe to undo: recorded in the ledger with the new policy version.", Required = true };
        var command = new Command("resume", "Undo an alert's automatic action (resume the suspended credential, lift the throttle) as a new policy version, and resolve the alert.")
        {
            id, reason,
        };
        return AdminClient.Define(command, output, (parse, admin, cancellationToken) => admin.PostAsync(
            $"/admin/v1/alerts/{AdminClient.Segment(parse.GetValue(id)!)}/resume", new { reason = parse.GetValue(reason) }, cancellationToken), (_, r) =>
        {
            var a = r.GetProperty("alert");
            output.WriteLine($"alert {AdminClient.Text(a, "id")} resolved by {AdminClient.Text(a, "resolved_by")}: undid \"{AdminClient.Text(a, "action_taken")}\" " +
                $"(policy version {AdminClient.Scalar(a, "action_policy_version")}); policy version {AdminClient.Scalar(r, "policy_version")} is in force.");
        });
    }

    private static Command Resolve(TextWriter output)
    {
        var id = Id();
        var reason = new Option<string>("--reason") { Description = "Why it is over: kept with the alert and in the ledger.", Required = true };
        var command = new Command("resolve", "Resolve an alert, undoing nothing: for one with no automatic action in force (else alerts resume). A repeat is then a new alert.")
        {
            id, reason,
        };
        return AdminClient.Define(command, output, (parse, admin, cancellationToken) => admin.PostAsync(
            $"/admin/v1/alerts/{AdminClient.Segment(parse.GetValue(id)!)}/resolve", new { reason = parse.GetValue(reason) }, cancellationToken), (_, a) =>
                output.WriteLine($"alert {AdminClient.Text(a, "id")} resolved by {AdminClient.Text(a, "resolved_by")} at {AdminClient.Time(a, "resolved_at", seconds: true)}."));
    }

    /// <summary>Prints one alert as aligned fields, the evidence indented below.</summary>
    private static void WriteAlert(TextWriter output, JsonElement a)
    {
        string? Text(string name) => AdminClient.Text(a, name);
        string Time(string name, string none = "-") => AdminClient.Time(a, name, none, seconds: true);

        output.WriteLine($"alert {Text("id")}: {Text("type")} ({Text("severity")}), {Text("status")}");
        output.WriteLine("  " + Text("summary"));
        var consumer = Text("consumer") is { } c ? c + (Text("category") is { } category ? $" ({category})" : "") : null;
        var acknowledged = Text("acknowledged_by") is { } by ? $"by {by} at {Time("acknowledged_at")}" : "no";
        var action = Text("action_taken") is { } taken
            ? taken + (AdminClient.Scalar(a, "action_policy_version") is { } v ? $" (policy version {v})" : "")
            : "none";
        var resolved = Text("resolved_by") is { } resolver ? $"by {resolver} at {Time("resolved_at")}" : "no";
        (string Name, string? Value)[] fields =
        [
            ("subject", Text("subject")),
            ("tenant", Text("tenant")),
            ("service", Text("service")),
            ("consumer", consumer),
            ("credential", Text("credential_id")),
            ("request", Text("request_id")),
            ("policy version", AdminClient.Scalar(a, "policy_version")),
            ("rule", Text("rule")),
            ("occurred", Time("occurred_at")),
            ("raised", Time("raised_at")),
            ("last seen", $"{Time("last_seen_at")} ({AdminClient.Scalar(a, "occurrences")} occurrence(s))"),
            ("told", AdminClient.Strings(a, "recipients") is { Count: > 0 } recipients ? string.Join(", ", recipients) : "nobody (no owner contact in those roles)"),
            ("roles notified", string.Join(", ", AdminClient.Strings(a, "notified_roles"))),
            ("escalated", Time("escalated_at", "no")),
            ("acknowledged", acknowledged),
            ("action", action),
            ("resolved", resolved),
            ("note", Text("note")),
        ];
        WriteFields(output, fields);
        if (a.TryGetProperty("evidence", out var evidence) && evidence.ValueKind == JsonValueKind.Object && evidence.EnumerateObject().Any())
        {
            output.WriteLine("  evidence:");
            WriteFields(output, [.. evidence.EnumerateObject().Select(e => (e.Name, AdminClient.Scalar(evidence, e.Name)))], indent: "    ");
        }

        output.WriteLine("Times in UTC.");
    }

    private static void WriteFields(TextWriter output, IReadOnlyList<(string Name, string? Value)> fields, string indent = "  ")
    {
        var width = fields.Max(f => f.Name.Length) + 1;
        foreach (var (name, value) in fields)
        {
            output.WriteLine($"{indent}{(name + ":").PadRight(width)} {(string.IsNullOrEmpty(value) ? "-" : value)}");
        }
    }

    /// <summary><paramref name="text"/> cut to <paramref name="width"/> characters, an ellipsis marking the cut.</summary>
    private static string? Cut(string? text, int width) => text is null || text.Length <= width ? text : text[..(width - 1)].TrimEnd() + "…";
}
