using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Custos.Ledger;

namespace Custos.Cli.Commands;

/// <summary><c>custos requests</c>: lists and filters the ledger's request entries, as a table or JSON lines.</summary>
internal static class RequestsCommand
{
    public static Command Create(TextWriter output)
    {
        var data = CommonOptions.Data();
        var config = CommonOptions.Config();
        var tenant = new Option<string?>("--tenant") { Description = "Only this tenant." };
        var service = new Option<string?>("--service") { Description = "Only this service." };
        var consumer = new Option<string?>("--consumer") { Description = "Only this consumer." };
        var decision = new Option<string?>("--decision") { Description = "Only this decision: allow, deny or throttle." };
        var model = new Option<string?>("--model") { Description = "Only this requested model." };
        var requestId = new Option<string?>("--request-id") { Description = "Only this request." };
        var since = new Option<string?>("--since") { Description = "From this time: ISO 8601 (2026-11-28T10:00:00Z) or an age such as 15m, 2h, 7d." };
        var until = new Option<string?>("--until") { Description = "Before this time, same forms as --since." };
        var limit = CommonOptions.WholeNumber(new Option<int>("--limit") { Description = "At most this many, the newest.", DefaultValueFactory = _ => 100 }, 1, int.MaxValue);
        var json = new Option<bool>("--json") { Description = "One JSON object per line, every ledger field (see docs/ledger.md)." };
        var command = new Command("requests", "List request entries from the ledger.")
        {
            data, config, tenant, service, consumer, decision, model, requestId, since, until, limit, json,
        };
        var remote = RemoteOptions.Add(command, "Read through this gateway's admin API (GET /admin/v1/ledger, e.g. http://127.0.0.1:8081) instead of the store, "
            + $"within the admin key's scope (at most {RemoteLimit:N0} entries); needs an admin key.");
        command.SetAction(async (parse, cancellationToken) =>
        {
            var decisionValue = parse.GetValue(decision);
            if (decisionValue is not null and not ("allow" or "deny" or "throttle"))
            {
                throw new CliException($"--decision must be allow, deny or throttle, not '{decisionValue}'");
            }

            var window = ParseWindow(parse.GetValue(since), parse.GetValue(until), DateTimeOffset.UtcNow, "--since", "--until");
            var query = new LedgerQuery
            {
                Tenant = parse.GetValue(tenant),
                Service = parse.GetValue(service),
                Consumer = parse.GetValue(consumer),
                Decision = decisionValue,
                Model = parse.GetValue(model),
                RequestId = parse.GetValue(requestId),
                From = window.From,
                To = window.To,
                Limit = Math.Max(1, parse.GetValue(limit)),
            };
            if (remote.Open(parse) is { } admin)
            {
                using (admin)
                {
                    RemoteOptions.RefuseStore(parse, data, config, "reads the ledger through the gateway's admin API");
                    if (query.Limit > RemoteLimit)
                    {
                        throw new CliException($"--limit {query.Limit} is more than the admin API answers at once ({RemoteLimit:N0}); narrow the window with --since and --until, or read the store");
                    }

                    var entries = (await admin.GetAsync(LedgerPath(query, "request"), cancellationToken)).Root;
                    var shed = (await admin.GetAsync(LedgerPath(query with { Limit = RemoteLimit }, "shed"), cancellationToken)).Root;
                    return await PrintAsync(Rows(entries), Rows(shed), parse.GetValue(json), output, cancellationToken);
                }
            }

            var directory = CommonOptions.ResolveDataDirectory(parse.GetValue(data), parse.GetValue(config));
            await using var store = await CommonOptions.OpenStoreAsync(directory, parse.GetValue(config), cancellationToken);
            return await PrintAsync(store.QueryAsync(query, cancellationToken).Select(r => r.Json),
                store.QueryAsync(new LedgerQuery { Kind = "shed", From = query.From, To = query.To, Limit = int.MaxValue }, cancellationToken).Select(r => r.Json),
                parse.GetValue(json), output, cancellationToken);
        });
        return command;
    }

    /// <summary>The most entries <c>GET /admin/v1/ledger</c> answers at once.</summary>
    private const int RemoteLimit = 10_000;

    /// <summary>The admin API's ledger query for <paramref name="query"/>'s filters, of entries of <paramref name="kind"/>.</summary>
    private static string LedgerPath(LedgerQuery query, string kind)
    {
        var parts = new List<string> { "kind=" + kind, "limit=" + query.Limit.ToString(CultureInfo.InvariantCulture) };
        void Add(string name, string? value)
        {
            if (value is not null)
            {
                parts.Add(name + "=" + Uri.EscapeDataString(value));
            }
        }

        if (kind == "request")
        {
            Add("tenant", query.Tenant);
            Add("service", query.Service);
            Add("consumer", query.Consumer);
            Add("decision", query.Decision);
            Add("model", query.Model);
            Add("request_id", query.RequestId);
        }

        Add("from", query.From is { } from ? LedgerTime.Format(from) : null);
        Add("to", query.To is { } to ? LedgerTime.Format(to) : null);
        return "/admin/v1/ledger?" + string.Join("&", parts);
    }

    /// <summary>The entries of an admin API answer (a JSON array), each as its JSON text.</summary>
    private static IAsyncEnumerable<string> Rows(JsonElement entries) => entries.EnumerateArray().Select(e => e.GetRawText()).ToArray().ToAsyncEnumerable();

    private static async Task<int> PrintAsync(IAsyncEnumerable<string> rows, IAsyncEnumerable<string> shedRows, bool json, TextWriter output,
        CancellationToken cancellationToken)
    {
        var count = 0;
        if (!json)
        {
            output.WriteLine($"{"time (UTC)",-19}  {"request id",-30}  {"tenant",-8} {"consumer",-16} {"model",-22} {"decision",-8} {"status",6} {"policy",6} {"in",7} {"out",7} {"cost",12}  reasons");
        }

        await foreach (var row in rows.WithCancellation(cancellationToken))
        {
            count++;
            if (json)
            {
                output.WriteLine(row);
                continue;
            }

            using var document = JsonDocument.Parse(row);
            var r = document.RootElement;
            string S(string name) => r.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()! : "-";
            string N(string name) => r.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetRawText() : "-";
            var time = S("timestamp");
            var reasons = string.Join(",", r.GetProperty("reasons").EnumerateArray().Select(e => e.GetString()));
            var estimated = r.TryGetProperty("tokens_estimated", out var e) && e.ValueKind == JsonValueKind.True ? "~" : "";
            // To the entry's own nine decimals where it has them: a cheap model's request (0.00001395) was rounded to six
            // (0.000014), and an embedding's (0.0000002) shown as costing nothing.
            var cost = S("cost") is var c && c != "-" ? decimal.Parse(c, CultureInfo.InvariantCulture).ToString("0.000000###", CultureInfo.InvariantCulture) : "-";
            output.WriteLine($"{(time.Length >= 19 ? time[..19].Replace('T', ' ') : time),-19}  {S("request_id"),-30}  {Trim(S("tenant"), 8),-8} " +
                $"{Trim(S("consumer"), 16),-16} {Trim(S("model"), 22),-22} {S("decision"),-8} {N("status"),6} {"v" + N("policy_version"),6} {estimated + N("input_tokens"),7} " +
                $"{estimated + N("output_tokens"),7} {cost,12}  {reasons}");
        }

        if (!json)
        {
            output.WriteLine(count == 0 ? "No request entries match." : $"{count} entr{(count == 1 ? "y" : "ies")} (newest last; ~ marks estimated tokens).");

            // Requests shed while the ledger queue was full have no entry of their own; say how many there were.
            long shed = 0, summaries = 0;
            await foreach (var row in shedRows.WithCancellation(cancellationToken))
            {
                using var document = JsonDocument.Parse(row);
                shed += document.RootElement.GetProperty("count").GetInt64();
                summaries++;
            }

            if (shed > 0)
            {
                output.WriteLine($"Also {shed} request(s) shed with 503 while the ledger queue was full, counted in {summaries} 'shed' entr{(summaries == 1 ? "y" : "ies")} instead of one each (docs/ledger.md).");
            }
        }

        return 0;
    }

    /// <summary>
    /// A column's text, cut to <paramref name="width"/>: a line break in it (a model name is what the caller sent) is shown
    /// as <c>\n</c>, so that no value can begin a row of its own.
    /// </summary>
    internal static string Trim(string value, int width)
    {
        value = value.ReplaceLineEndings("\\n");
        return value.Length <= width ? value : value[..(width - 1)] + "…";
    }

    /// <summary>
    /// A window's two ends (either may be absent), each as <see cref="ParseTime"/> reads it; an end that is not after the
    /// start is refused, naming both, rather than read as an empty window.
    /// </summary>
    internal static (DateTimeOffset? From, DateTimeOffset? To) ParseWindow(string? from, string? to, DateTimeOffset now, string fromOption = "--from", string toOption = "--to")
        => ParseWindow(from, to, now, defaultTo: null, fromOption, toOption);

    /// <summary>A window that has a start (a required option), and ends at <paramref name="now"/> unless <paramref name="to"/> says otherwise.</summary>
    internal static (DateTimeOffset From, DateTimeOffset To) ParseWindowToNow(string from, string? to, DateTimeOffset now)
    {
        var (start, end) = ParseWindow(from, to, now, defaultTo: now, "--from", "--to");
        return (start!.Value, end!.Value);
    }

    private static (DateTimeOffset? From, DateTimeOffset? To) ParseWindow(string? from, string? to, DateTimeOffset now, DateTimeOffset? defaultTo, string fromOption, string toOption)
    {
        var start = ParseTime(from, now, fromOption);
        var end = ParseTime(to, now, toOption) ?? defaultTo;
        if (start is { } s && end is { } e && e <= s)
        {
            throw new CliException($"{toOption} ({LedgerTime.Format(e)}) must be after {fromOption} ({LedgerTime.Format(s)})");
        }

        return (start, end);
    }

    internal static DateTimeOffset? ParseTime(string? text, DateTimeOffset now, string option)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return null;
        }

        if (text.Length >= 2 && char.IsDigit(text[0]) && "smhd".Contains(text[^1], StringComparison.Ordinal))
        {
            // An age: the same durations as everywhere else (7d, 2h, 1h30m), back from now.
            var age = AdminClient.ParseDuration(text, option);
            return age <= now - DateTimeOffset.MinValue ? now - age : throw new CliException($"{option} '{text}' reaches further back than a time can");
        }

        if (DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var time))
        {
            return time;
        }

        throw new CliException($"{option} '{text}' is neither an ISO 8601 time nor an age such as 15m, 2h or 7d");
    }
}
