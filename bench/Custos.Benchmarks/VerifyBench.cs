using System.Diagnostics;
using System.Globalization;
using Custos.Ledger;
using Custos.Storage;

namespace Custos.Benchmarks;

/// <summary>
/// <c>dotnet run -c Release --project bench/Custos.Benchmarks -- verify [ENTRIES]</c>: builds a ledger of realistic
/// request entries (default one million) sealed every 1,024 entries, then times <c>custos audit verify</c>'s work
/// against a baseline measured in the same run on the same store: reading every row in chain order and nothing else.
/// A long run, not a BenchmarkDotNet job; it prints a markdown table.
/// </summary>
internal static class VerifyBench
{
    public static async Task<int> RunAsync(string[] args)
    {
        var entries = args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 1_000_000;
        using var temp = new BenchDirectory("verify");
        var directory = temp.Path;
        await using var store = await SqliteStore.OpenAsync(directory);
        using var key = CheckpointKey.LoadOrCreate(directory, out _);

        // Build: seal and append in the writer's batches, checkpoint every 1,024 entries.
        var build = Stopwatch.StartNew();
        await SampleLedger.BuildAsync(store, key, entries);
        build.Stop();
        var size = new FileInfo(Path.Combine(directory, "custos.db")).Length + (File.Exists(Path.Combine(directory, "custos.db-wal")) ? new FileInfo(Path.Combine(directory, "custos.db-wal")).Length : 0);

        // Baseline: read every row in chain order, as verification must, and do nothing with it.
        var read = Stopwatch.StartNew();
        long rows = 0, bytes = 0;
        await foreach (var entry in store.ReadChainAsync("bench-node", 1, long.MaxValue))
        {
            rows++;
            bytes += entry.Json.Length;
        }

        read.Stop();

        using var publicKey = CheckpointKey.LoadPublic(CheckpointKey.PublicPath(directory));
        var verify = Stopwatch.StartNew();
        var result = await LedgerVerifier.VerifyAsync(store, new VerificationOptions { PublicKeys = [publicKey] });
        verify.Stop();
        if (!result.Ok || result.Entries != entries)
        {
            Console.Error.WriteLine("verification failed: " + string.Join("; ", result.Problems));
            return 1;
        }

        // The same with more request totals than verification keeps in memory: added up again a day at a time afterwards.
        var byDay = Stopwatch.StartNew();
        var dayResult = await LedgerVerifier.VerifyAsync(store, new VerificationOptions { PublicKeys = [publicKey], TotalsKeptInMemory = 0 });
        byDay.Stop();
        if (!dayResult.Ok || dayResult.TotalsCompared != result.TotalsCompared || result.TotalsCompared == 0)
        {
            Console.Error.WriteLine($"verification a day at a time: {string.Join("; ", dayResult.Problems)}; totals compared {dayResult.TotalsCompared:N0} against {result.TotalsCompared:N0}");
            return 1;
        }

        double Rate(long n, Stopwatch s) => n / s.Elapsed.TotalSeconds;
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"""
            | {entries:N0} entries ({bytes / (double)rows:N0} B each, store {size / 1048576.0:N0} MiB), {result.Checkpoints:N0} checkpoints | seconds | entries/s | vs. reading only |
            |---|---|---|---|
            | build: seal, append in batches of 512, checkpoint every 1,024 | {build.Elapsed.TotalSeconds:N1} | {Rate(entries, build):N0} | |
            | baseline: read every row in chain order | {read.Elapsed.TotalSeconds:N1} | {Rate(rows, read):N0} | 1.00× |
            | `audit verify`: read, recompute every hash, Merkle roots, signatures | {verify.Elapsed.TotalSeconds:N1} | {Rate(result.Entries, verify):N0} | {verify.Elapsed.TotalSeconds / read.Elapsed.TotalSeconds:N2}× |
            | the same, the request totals added up again a day at a time from the entries (a ledger with more than `TotalsKeptInMemory`) | {byDay.Elapsed.TotalSeconds:N1} | {Rate(dayResult.Entries, byDay):N0} | {byDay.Elapsed.TotalSeconds / read.Elapsed.TotalSeconds:N2}× |
            """));
        return 0;
    }
}
