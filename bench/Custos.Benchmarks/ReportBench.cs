using System.Diagnostics;
using System.Globalization;
using Custos.Ledger;
using Custos.Reports;
using Custos.Storage;

namespace Custos.Benchmarks;

/// <summary>
/// <c>dotnet run -c Release --project bench/Custos.Benchmarks -- report [ENTRIES]</c>: builds a ledger of realistic
/// request entries of one consumer (default 200,000), then measures an incident pack's read of its window against a
/// baseline measured in the same run on the same store (reading the window's rows and nothing else): parsing each entry,
/// taking it into the pack's window, and the whole pack; and what the window keeps in memory per entry against holding
/// the entries in a list, as the pack did before. A long run, not a BenchmarkDotNet job; it prints a markdown table.
/// </summary>
internal static class ReportBench
{
    public static async Task<int> RunAsync(string[] args)
    {
        var entries = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 200_000;
        using var temp = new BenchDirectory("report");
        var directory = temp.Path;
        await using var store = await SqliteStore.OpenAsync(directory);
        using (var key = CheckpointKey.LoadOrCreate(directory, out _))
        {
            await SampleLedger.BuildAsync(store, key, entries); // sealed, so that the pack's verification checks its checkpoints
        }

        var (from, to) = (DateTimeOffset.UnixEpoch, DateTimeOffset.UnixEpoch.AddMilliseconds(entries));
        var query = new LedgerQuery { Consumer = "support-web", From = from, To = to, Limit = int.MaxValue };

        // Each pass twice, the first as a warm-up of the JIT and the store's pages; the second is measured.
        var (read, rows) = await TimeAsync(store, query, _ => { });
        (read, rows) = await TimeAsync(store, query, _ => { });
        var (parse, _) = await TimeAsync(store, query, row => RequestEntry.Parse(row));
        (parse, _) = await TimeAsync(store, query, row => RequestEntry.Parse(row));

        // What the console's overview reads instead of the entries since 2026-12-01: the window's request totals.
        var (totals, totalled) = await TotalsAsync(store, from, to);
        (totals, totalled) = await TotalsAsync(store, from, to);
        var (minutes, minuteTotalled) = await TotalsAsync(store, from, to, byMinute: true);
        (minutes, minuteTotalled) = await TotalsAsync(store, from, to, byMinute: true);

        var held = new List<RequestEntry>();
        var heldBytes = await RetainedAsync(store, query, row => held.Add(RequestEntry.Parse(row)));
        GC.KeepAlive(held);
        held = null;

        var window = new IncidentWindow(from, to);
        var windowBytes = await RetainedAsync(store, query, row => window.Add(RequestEntry.Parse(row)));
        GC.KeepAlive(window);
        var kept = window.Count;
        window = null;

        var subject = new IncidentSubject("consumer", "support-web");
        await ReportSources.IncidentAsync(store, directory, subject, from, to, to, null, CancellationToken.None);
        var allocated = GC.GetTotalAllocatedBytes(precise: true);
        var pack = Stopwatch.StartNew();
        var report = await ReportSources.IncidentAsync(store, directory, subject, from, to, to, null, CancellationToken.None);
        pack.Stop();
        allocated = GC.GetTotalAllocatedBytes(precise: true) - allocated;
        if (report.Summary.Requests != entries || kept != entries || rows != entries || totalled != entries || minuteTotalled != entries)
        {
            Console.Error.WriteLine($"expected {entries:N0} requests; read {rows:N0}, the window took {kept:N0}, the pack counted {report.Summary.Requests:N0}, the totals {totalled:N0}, by minute {minuteTotalled:N0}");
            return 1;
        }

        double Rate(TimeSpan s) => entries / s.TotalSeconds;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"""
            | {entries:N0} request entries of one consumer | seconds | entries/s | vs. reading only |
            |---|---:|---:|---:|
            | baseline: read the window's rows from the store | {read.TotalSeconds:N2} | {Rate(read):N0} | 1.00× |
            | read and parse each entry (`RequestEntry.Parse`) | {parse.TotalSeconds:N2} | {Rate(parse):N0} | {parse / read:N2}× |
            | the whole incident pack (`ReportSources.IncidentAsync`: the window, the baseline period, the verification, the build) | {pack.Elapsed.TotalSeconds:N2} | {Rate(pack.Elapsed):N0} | {pack.Elapsed / read:N2}× |
            | the window's request totals (`ReadTotalsAsync` by quarter hour, what the console's overview reads; the same {totalled:N0} requests) | {totals.TotalSeconds:N4} | {Rate(totals):N0} | {totals / read:N4}× |
            | the window's request totals by minute (`ReadTotalsAsync` by minute, what the overview's last hour reads; the same requests) | {minutes.TotalSeconds:N4} | {Rate(minutes):N0} | {minutes / read:N4}× |

            | memory kept while reading the window | bytes per entry |
            |---|---:|
            | baseline: the parsed entries held in a list (what the pack did before 2026-12-01) | {heldBytes / (double)entries:N0} |
            | the pack's window (`IncidentWindow`: counts, sums, samples, the timeline's first 5,000, the chart's points) | {windowBytes / (double)entries:N0} |

            The whole pack allocated {allocated / (double)entries:N0} bytes per entry.
            """));
        return 0;
    }

    private static async Task<(TimeSpan Elapsed, long Rows)> TimeAsync(SqliteStore store, LedgerQuery query, Action<StoredRecord> each)
    {
        var watch = Stopwatch.StartNew();
        long rows = 0;
        await foreach (var row in store.QueryAsync(query))
        {
            each(row);
            rows++;
        }

        return (watch.Elapsed, rows);
    }

    private static async Task<(TimeSpan Elapsed, long Requests)> TotalsAsync(SqliteStore store, DateTimeOffset from, DateTimeOffset to, bool byMinute = false)
    {
        var watch = Stopwatch.StartNew();
        long requests = 0;
        await foreach (var total in store.ReadTotalsAsync(byMinute ? RequestTotals.MinuteSeconds : RequestTotals.SlotSeconds, from, to))
        {
            requests += total.Requests;
        }

        return (watch.Elapsed, requests);
    }

    /// <summary>The heap that remains after reading the window with <paramref name="each"/> (what it kept), after full collections.</summary>
    private static async Task<long> RetainedAsync(SqliteStore store, LedgerQuery query, Action<StoredRecord> each)
    {
        var before = GC.GetTotalMemory(forceFullCollection: true);
        await TimeAsync(store, query, each);
        return GC.GetTotalMemory(forceFullCollection: true) - before;
    }
}
