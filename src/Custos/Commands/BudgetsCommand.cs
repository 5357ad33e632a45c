using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using Custos.Ledger;

namespace Custos.Cli.Commands;

/// <summary>
/// <c>custos budgets set|remove</c> and <c>custos spend</c>: finance's part of the control plane through the admin API.
/// A budget is set or removed at one scope (a consumer, a service or a tenant) as a new policy version with a reason,
/// recorded as <c>budget.set</c>; spend is each service's in a window beside its budget.
/// </summary>
internal static class BudgetsCommand
{
    public static Command Create(TextWriter output) => new("budgets", "Budgets of consumers, services and tenants on the running gateway (finance, platform_admin).")
    {
        Set(output), Remove(output),
    };

    /// <summary><c>custos spend [--from T] [--to T]</c>: spend per service in the window, beside its budget.</summary>
    public static Command Spend(TextWriter output)
    {
        var from = new Option<string?>("--from") { Description = "Start of the window: ISO 8601 or an age such as 2h, 7d. Default: the start of this calendar month." };
        var to = new Option<string?>("--to") { Description = "End of the window (exclusive), same forms. Default: now." };
        var command = new Command("spend", "Spend and requests per service in a window (default this calendar month), beside each service's budget (finance, platform_admin, security_auditor).")
        {
            from, to,
        };
        return AdminClient.Define(command, output, (parse, admin, cancellationToken) =>
        {
            var (start, end) = RequestsCommand.ParseWindow(parse.GetValue(from), parse.GetValue(to), DateTimeOffset.UtcNow);
            var query = new List<string>();
            if (start is { } s)
            {
                query.Add("from=" + Uri.EscapeDataString(LedgerTime.Format(s)));
            }

            if (end is { } e)
            {
                query.Add("to=" + Uri.EscapeDataString(LedgerTime.Format(e)));
            }

            return admin.GetAsync("/admin/v1/spend" + (query.Count == 0 ? "" : "?" + string.Join('&', query)), cancellationToken);
        }, (_, root) =>
        {
            var rows = root.EnumerateArray().ToList();
            AdminClient.WriteTable(output, ["TENANT", "SERVICE", "SPEND", "CURRENCY", "REQUESTS", "BUDGET"], rows.Select(s => new[]
            {
                AdminClient.Text(s, "tenant"),
                AdminClient.Text(s, "service") + (s.TryGetProperty("retired", out var r) && r.ValueKind == JsonValueKind.True ? " (retired)" : ""), AdminClient.Scalar(s, "spend"), AdminClient.Text(s, "currency"),
                AdminClient.Scalar(s, "requests"), Budget(s),
            }), "No services in scope.");
            foreach (var currency in rows.GroupBy(s => AdminClient.Text(s, "currency") ?? "").Where(g => g.Count() > 1))
            {
                var total = currency.Sum(s => s.GetProperty("spend").GetDecimal());
                output.WriteLine(FormattableString.Invariant($"total {currency.Key}: {total} over {currency.Count()} services"));
            }
        });
    }

    private static string Budget(JsonElement service)
        => service.TryGetProperty("budget", out var b) && b.ValueKind == JsonValueKind.Object
            ? $"{AdminClient.Scalar(b, "amount")} per {AdminClient.Text(b, "period")} ({AdminClient.Text(b, "mode")})"
            : "-";

    private static Command Set(TextWriter output)
    {
        var amount = new Option<decimal>("--amount") { Description = "The amount, in the currency of the models' prices.", Required = true };
        var period = new Option<string>("--period") { Description = "day or month: the calendar period in the tenant's time zone.", DefaultValueFactory = _ => "month" };
        period.AcceptOnlyFromAmong("day", "month");
        var mode = new Option<string>("--mode")
        {
            Description = "hard: a request that would exceed it is refused (402); soft: it is served, and the owners are alerted.",
            DefaultValueFactory = _ => "hard",
        };
        mode.AcceptOnlyFromAmong("hard", "soft");
        var reason = Reason();
        var command = new Command("set", "Set the budget of one consumer, service or tenant, replacing its budget if it has one.") { amount, period, mode, reason };
        return Define(command, reason, output, parse => new JsonObject
        {
            ["amount"] = parse.GetValue(amount),
            ["period"] = parse.GetValue(period),
            ["mode"] = parse.GetValue(mode),
        });
    }

    private static Command Remove(TextWriter output)
    {
        var reason = Reason();
        var command = new Command("remove", "Remove the budget of one consumer, service or tenant: the budgets above and below it still apply.") { reason };
        return Define(command, reason, output, _ => null);
    }

    private static Option<string> Reason() => new("--reason") { Description = "Why: recorded in the ledger with the change.", Required = true };

    private static Command Define(Command command, Option<string> reason, TextWriter output, Func<ParseResult, JsonObject?> budget)
    {
        var scopes = AdminClient.AddScope(command, "A consumer.", "A service.", "A tenant.");
        return AdminClient.Define(command, output, (parse, admin, cancellationToken) =>
        {
            var (scope, id) = AdminClient.ScopeOf(parse, scopes);
            return admin.PutAsync("/admin/v1/budgets", new JsonObject
            {
                ["scope"] = scope,
                ["id"] = id,
                ["budget"] = budget(parse),
                ["reason"] = parse.GetValue(reason),
            }, cancellationToken);
        }, (_, root) => AdminClient.WriteChange(output, root));
    }
}
