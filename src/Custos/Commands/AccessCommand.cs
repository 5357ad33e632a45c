using System.CommandLine;
using System.Text.Json;

namespace Custos.Cli.Commands;

/// <summary>
/// <c>custos access request|list|approve|reject|explain</c>: a consumer's access to models is asked for, decided by the
/// service's policy owner (or a delegate the policy names) into a new policy version, and explained afterwards from
/// any recorded request.
/// </summary>
internal static class AccessCommand
{
    public static Command Create(TextWriter output) => new("access", "Access requests: ask for a consumer's access to models, decide, and explain who approved a call.")
    {
        Request(output), List(output), Decide("approve", output), Decide("reject", output), Explain(output),
    };

    private static Command Request(TextWriter output)
    {
        var consumer = new Option<string>("--consumer") { Description = "The consumer that needs access.", Required = true };
        var models = new Option<string[]>("--model") { Description = "A model (name or alias of the consumer's tenant); repeat for several.", Required = true };
        var justification = new Option<string>("--justification") { Description = "Why the access is needed; the decider reads it.", Required = true };
        var validUntil = new Option<string?>("--valid-until") { Description = "End of the access: ISO 8601, or a duration from now such as 30d. Default: open-ended." };
        var command = new Command("request", "Ask for a consumer's access to models; it stays pending until the service's policy owner decides.")
        {
            consumer, models, justification, validUntil,
        };
        return AdminClient.Define(command, output, (parse, admin, cancellationToken) => admin.PostAsync("/admin/v1/access-requests", new
        {
            consumer = parse.GetValue(consumer),
            models = parse.GetValue(models),
            justification = parse.GetValue(justification),
            valid_until = AdminClient.ParseFutureTime(parse.GetValue(validUntil), "--valid-until"),
        }, cancellationToken), (_, r) => output.WriteLine(
            $"access request {AdminClient.Text(r, "id")} is {AdminClient.Text(r, "status")}: consumer {AdminClient.Text(r, "consumer")} -> " +
            $"{string.Join(", ", AdminClient.Strings(r, "models"))} ({AdminClient.Time(r, "valid_until", "open-ended", seconds: true) switch { "open-ended" => "open-ended", var t => "until " + t }}). " +
            $"The policy owner of service {AdminClient.Text(r, "service")} (or an approver it names) decides: custos access approve|reject {AdminClient.Text(r, "id")}."));
    }

    private static Command List(TextWriter output)
    {
        var status = new Option<string?>("--status") { Description = "Only requests of this status." };
        status.AcceptOnlyFromAmong("pending", "approved", "rejected");
        var command = new Command("list", "Access requests in scope, oldest first.") { status };
        return AdminClient.Define(command, output, (parse, admin, cancellationToken) => admin.GetAsync(
            "/admin/v1/access-requests" + (parse.GetValue(status) is { } s ? "?status=" + s : ""), cancellationToken), (_, root) =>
        {
            AdminClient.WriteTable(output, ["ID", "STATUS", "CONSUMER", "SERVICE", "MODELS", "UNTIL", "REQUESTED BY", "REQUESTED", "DECIDED BY", "JUSTIFICATION"],
                root.EnumerateArray().Select(r => new[]
                {
                    AdminClient.Text(r, "id"), AdminClient.Text(r, "status"), AdminClient.Text(r, "consumer"), AdminClient.Text(r, "service"),
                    string.Join(",", AdminClient.Strings(r, "models")), AdminClient.Time(r, "valid_until", "open"), AdminClient.Text(r, "requested_by"),
                    AdminClient.Time(r, "requested_at"), AdminClient.Text(r, "decided_by"), AdminClient.Text(r, "justification"),
                }), "No access requests match.");
        });
    }

    private static Command Decide(string verb, TextWriter output)
    {
        var id = new Argument<string>("id") { Description = "The access request id (ar-…)." };
        var reason = new Option<string>("--reason") { Description = "Why: recorded with the decision.", Required = true };
        var command = new Command(verb, verb == "approve"
            ? "Approve an access request: its entitlement takes effect as a new policy version naming you as approver."
            : "Reject an access request: nothing changes but its status.") { id, reason };
        return AdminClient.Define(command, output, (parse, admin, cancellationToken) => admin.PostAsync(
            $"/admin/v1/access-requests/{AdminClient.Segment(parse.GetValue(id)!)}/{verb}", new { reason = parse.GetValue(reason) }, cancellationToken), (_, r) =>
        {
            var version = AdminClient.Scalar(r, "policy_version");
            output.WriteLine($"access request {AdminClient.Text(r, "id")} {AdminClient.Text(r, "status")} by {AdminClient.Text(r, "decided_by")}: consumer " +
                $"{AdminClient.Text(r, "consumer")} -> {string.Join(", ", AdminClient.Strings(r, "models"))}" +
                (version is null ? "; nothing changed." : $"; in force as policy version {version}."));
        });
    }

    private static Command Explain(TextWriter output)
    {
        var requestId = new Argument<string>("request-id") { Description = "The id of a recorded request (its x-request-id)." };
        var command = new Command("explain", "Who approved the access a recorded request used: policy version, entitlement, approver, access request.") { requestId };
        return AdminClient.Define(command, output, (parse, admin, cancellationToken) => admin.GetAsync(
            $"/admin/v1/requests/{AdminClient.Segment(parse.GetValue(requestId)!)}/approval", cancellationToken),
            (parse, a) => output.WriteLine(Explanation(a, parse.GetValue<string>("--server")!)));
    }

    /// <summary>
    /// The approval of a request in one sentence; a request refused for another reason points to its entry through the
    /// same admin API (<paramref name="server"/>), since whoever asks may not hold the store.
    /// </summary>
    private static string Explanation(JsonElement a, string server)
    {
        var decision = AdminClient.Text(a, "decision");
        var model = AdminClient.Text(a, "model") ?? "(none)";
        var version = AdminClient.Scalar(a, "policy_version");
        var opening = decision == "allow"
            ? $"request {AdminClient.Text(a, "request_id")} used model {model} under policy version {version}"
            : $"request {AdminClient.Text(a, "request_id")} ({decision}) asked for model {model} under policy version {version}";
        var consumer = AdminClient.Text(a, "consumer") ?? "(unidentified)";
        var approvedBy = AdminClient.Text(a, "approved_by");
        var (from, until) = (AdminClient.Time(a, "valid_from", "", seconds: true), AdminClient.Time(a, "valid_until", "", seconds: true));
        var validity = (from, until) switch
        {
            ("", "") => "valid with no time limit",
            (_, "") => $"valid from {from}, open-ended",
            ("", _) => $"valid until {until}",
            _ => $"valid from {from} until {until}",
        };
        var refused = decision == "allow" ? ""
            : a.TryGetProperty("valid_at_request", out var valid) && valid.ValueKind == JsonValueKind.False
            ? $" (the request was refused: the approval {(Before(a, "valid_until", "timestamp") ? "had expired" : "was not valid yet")} at the request's time)"
            : $" (the request was refused for another reason: custos requests --request-id {AdminClient.Text(a, "request_id")} --server {server})";
        switch (AdminClient.Text(a, "source"))
        {
            case null when a.TryGetProperty("service_models", out var offered) && offered.ValueKind == JsonValueKind.Array:
                return $"{opening}; an entitlement of consumer {consumer} named that model, but its service's models " +
                    $"({string.Join(", ", offered.EnumerateArray().Select(m => m.GetString()))}) excluded it.";
            case null:
                return $"{opening}; no entitlement of consumer {consumer} covered that model.";
            case "category_default":
                return $"{opening}; the access came from the default models of consumer {consumer}'s category, with no named approver{refused}.";
            case var _ when approvedBy is null:
                return $"{opening}; the access came from the policy (consumer {consumer}'s models, policy version {version}" +
                    $"{(AdminClient.Text(a, "policy_author") is { } author ? " by " + author : "")}) without a named approver{refused}.";
        }

        var ticket = AdminClient.Text(a, "ticket");
        var details = ticket is null ? "" : $"ticket {ticket}";
        if (a.TryGetProperty("access_request", out var request) && request.ValueKind == JsonValueKind.Object)
        {
            details += $", requested by {AdminClient.Text(request, "requested_by")}: {AdminClient.Text(request, "justification")}";
        }

        return $"{opening}; access approved by {approvedBy}{(details.Length == 0 ? "" : $" ({details})")}, {validity}{refused}.";
    }

    /// <summary>True when the time <paramref name="first"/> of <paramref name="a"/> is at or before its time <paramref name="second"/>.</summary>
    private static bool Before(JsonElement a, string first, string second)
        => a.TryGetProperty(first, out var x) && x.ValueKind == JsonValueKind.String && x.TryGetDateTimeOffset(out var one)
            && a.TryGetProperty(second, out var y) && y.ValueKind == JsonValueKind.String && y.TryGetDateTimeOffset(out var two) && one <= two;
}
