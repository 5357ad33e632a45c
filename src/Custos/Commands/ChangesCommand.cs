using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Custos.Ledger;

namespace Custos.Cli.Commands;

/// <summary>
/// <c>custos changes</c>: the ledger's administrative entries, who did what to what, under which policy version and why,
/// the refused attempts and sign-ins among them; as a table or JSON lines, from the store or through the admin API.
/// </summary>
internal static class ChangesCommand
{
    /// <summary>The most entries <c>GET /admin/v1/ledger</c> answers at once.</summary>
    private const int RemoteLimit = 10_000;

    public static Command Create(TextWriter output)
    {
        var data = CommonOptions.Data();
        var config = CommonOptions.Config();
        var tenant = new Option<string?>("--tenant") { Description = "Only entries of this tenant." };
        var actor = new Option<string?>("--actor") { Description = "Only what this admin identity (or system:…, custos:alerts) did." };
        var action = new Option<string?>("--action")
        {
            Description = "Only this action (credential.revoked), or every action it begins (credential, credential., budget); _denied entries are the refused attempts.",
        };
        var target = new Option<string?>("--target") { Description = "Only entries about this target, such as credential:cred-web or service:support." };
        var since = new Option<string?>("--since") { Description = "From this time: ISO 8601 (2026-11-28T10:00:00Z) or an age such as 15m, 2h, 7d." };
        var until = new Option<string?>("--until") { Description = "Before this time, same forms as --since." };
        var limit = CommonOptions.WholeNumber(new Option<int>("--limit") { Description = "At most this many, the newest.", DefaultValueFactory = _ => 100 }, 1, int.MaxValue);
        var json = new Option<bool>("--json") { Description = "One JSON object per line, every ledger field (see docs/ledger.md)." };
        var command = new Command("changes", "List the ledger's administrative entries: every change, refused attempt and sign-in, by whom, why and under which policy version.")
        {
            data, config, tenant, actor, action, target, since, until, limit, json,
        };
        var remote = RemoteOptions.Add(command, "Read through this gateway's admin API (GET /admin/v1/ledger?kind=admin, e.g. http://127.0.0.1:8081) instead of the store, "
            + $"within the admin key's scope (among the newest {RemoteLimit:N0} entries); needs an admin key that reads the ledger.");
        command.SetAction(async (parse, cancellationToken) =>
        {
            var window = RequestsCommand.ParseWindow(parse.GetValue(since), parse.GetValue(until), DateTimeOffset.UtcNow, "--since", "--until");
            var filter = new Filter(parse.GetValue(actor), parse.GetValue(action), parse.GetValue(target));
            var count = Math.Max(1, parse.GetValue(limit));
            var query = new LedgerQuery { Kind = "admin", Tenant = parse.GetValue(tenant), From = window.From, To = window.To, Limit = filter.Any ? int.MaxValue : count };
            if (remote.Open(parse) is { } admin)
            {
                using (admin)
                {
                    RemoteOptions.RefuseStore(parse, data, config, "reads the ledger through the gateway's admin API");
                    if (count > RemoteLimit)
                    {
                        throw new CliException($"--limit {count} is more than the admin API answers at once ({RemoteLimit:N0}); narrow the window with --since and --until, or read the store");
                    }

                    var path = Path(query with { Limit = filter.Any ? RemoteLimit : count });
                    var entries = (await admin.GetAsync(path, cancellationToken)).Root.EnumerateArray().Select(e => e.GetRawText()).ToArray();
                    return Print(Newest(entries, filter, count), parse.GetValue(json), output);
                }
            }

            var directory = CommonOptions.ResolveDataDirectory(parse.GetValue(data), parse.GetValue(config));
            await using var store = await CommonOptions.OpenStoreAsync(directory, parse.GetValue(config), cancellationToken);
            // Read in one pass, oldest first, keeping only the newest matches: a ledger may hold a great many sign-in refusals.
            var kept = new Queue<string>();
            await foreach (var row in store.QueryAsync(query, cancellationToken))
            {
                Keep(kept, row.Json, filter, count);
            }

            return Print(kept, parse.GetValue(json), output);
        });
        return command;
    }

    /// <summary>What <c>--actor</c>, <c>--action</c> and <c>--target</c> keep; the store selects by tenant and time only.</summary>
    private sealed record Filter(string? Actor, string? Action, string? Target)
    {
        public bool Any => Actor is not null || Action is not null || Target is not null;

        public bool Keeps(JsonElement entry)
        {
            string? Field(string name) => entry.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
            var action = Field("action") ?? "";
            return (Actor is null || Field("actor") == Actor)
                && (Target is null || Field("target") == Target)
                && (Action is null || action == Action || action.StartsWith(Action.EndsWith('.') ? Action : Action + ".", StringComparison.Ordinal));
        }
    }

    /// <summary>The newest <paramref name="count"/> of <paramref name="rows"/> (oldest first) that <paramref name="filter"/> keeps, oldest first.</summary>
    private static Queue<string> Newest(IEnumerable<string> rows, Filter filter, int count)
    {
        var kept = new Queue<string>();
        foreach (var row in rows)
        {
            Keep(kept, row, filter, count);
        }

        return kept;
    }

    private static void Keep(Queue<string> kept, string row, Filter filter, int count)
    {
        if (filter.Any)
        {
            using var document = JsonDocument.Parse(row);
            if (!filter.Keeps(document.RootElement))
            {
                return;
            }
        }

        kept.Enqueue(row);
        if (kept.Count > count)
        {
            kept.Dequeue();
        }
    }

    private static string Path(LedgerQuery query)
    {
        var parts = new List<string> { "kind=admin", "limit=" + query.Limit.ToString(CultureInfo.InvariantCulture) };
        if (query.Tenant is not null)
        {
            parts.Add("tenant=" + Uri.EscapeDataString(query.Tenant));
        }

        if (query.From is { } from)
        {
            parts.Add("from=" + Uri.EscapeDataString(LedgerTime.Format(from)));
        }

        if (query.To is { } to)
        {
            parts.Add("to=" + Uri.EscapeDataString(LedgerTime.Format(to)));
        }

        return "/admin/v1/ledger?" + string.Join("&", parts);
    }

    /// <summary>A policy hash by its first 12 digits, as the version lists show it; anything else whole.</summary>
    private static string Short(string value) => value.Length == 64 && value.All(char.IsAsciiHexDigitLower) ? value[..12] + "…" : value;

    private static int Print(IReadOnlyCollection<string> rows, bool json, TextWriter output)
    {
        if (json)
        {
            foreach (var row in rows)
            {
                output.WriteLine(row);
            }

            return 0;
        }

        output.WriteLine($"{"time (UTC)",-19}  {"actor",-22} {"action",-28} {"target",-30} {"policy",6}  change; reason");
        foreach (var row in rows)
        {
            using var document = JsonDocument.Parse(row);
            var r = document.RootElement;
            string S(string name) => r.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()! : "-";
            var version = r.TryGetProperty("policy_version", out var p) && p.ValueKind == JsonValueKind.Number ? "v" + p.GetRawText() : "-";
            var time = S("timestamp");
            var change = S("before") == "-" && S("after") == "-" ? "" : $"{Short(S("before"))} -> {Short(S("after"))}; ";
            output.WriteLine($"{(time.Length >= 19 ? time[..19].Replace('T', ' ') : time),-19}  {RequestsCommand.Trim(S("actor"), 22),-22} " +
                $"{RequestsCommand.Trim(S("action"), 28),-28} {RequestsCommand.Trim(S("target"), 30),-30} {version,6}  {RequestsCommand.Trim(change + S("reason"), 160)}");
        }

        output.WriteLine(rows.Count == 0 ? "No administrative entries match." : $"{rows.Count} entr{(rows.Count == 1 ? "y" : "ies")} (newest last).");
        return 0;
    }
}
