using BenchmarkDotNet.Attributes;
using Custos.Ledger;
using Custos.Storage;

namespace Custos.Benchmarks;

/// <summary>
/// How many ledger entries per second the embedded SQLite store takes: 512 sealed request records (about 2 KB each,
/// with the controls of a policy that has every control on) appended in transactions of 1, 16 or 512, as the ledger
/// writer does at low, moderate and high load. Entries per second = 512 / mean time.
/// </summary>
[MemoryDiagnoser]
public class LedgerStoreBenchmark
{
    private const int Records = 512;
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "custos-ledger-bench-" + Guid.NewGuid().ToString("N"));
    private SqliteStore _store = null!;
    private HashChain _chain = null!;
    private ChainedRecord[][] _batches = [];

    /// <summary>Records per transaction.</summary>
    [Params(1, 16, 512)]
    public int Batch { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _store = SqliteStore.OpenAsync(_directory).GetAwaiter().GetResult();
        _chain = new HashChain("bench-" + Batch, 0, HashChain.Genesis);
    }

    [IterationSetup]
    public void Seal()
    {
        // Sealing (canonical JSON + SHA-256) is measured by MeteringBenchmark; here only the store's work is timed.
        var records = Enumerable.Range(0, Records).Select(i => _chain.Append(Sample(i))).ToArray();
        _batches = [.. records.Chunk(Batch)];
    }

    [Benchmark(Description = "append 512 ledger entries")]
    public async Task Append()
    {
        foreach (var batch in _batches)
        {
            await _store.AppendAsync(batch);
        }
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _store.DisposeAsync().AsTask().GetAwaiter().GetResult();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(_directory, recursive: true);
    }

    /// <summary>A realistic request entry of a policy with every control on (also used by the verification benchmark).</summary>
    internal static RequestRecord Sample(int i)
    {
        var record = MeteringFixture.SampleRecord($"req_01JDQ{i:D21}", DateTimeOffset.UnixEpoch.AddMilliseconds(i));
        record.Provider = "mock";
        record.PolicyVersion = 1;
        record.PromptSha256 = new string('b', 64);
        record.ClientAddress = "127.0.0.1";
        record.RequestBytes = 271;
        record.ResponseBytes = 610;
        string[] counters = ["rate_limit.requests", "rate_limit.tokens", "quota.tokens_per_day", "budget"];
        record.Controls =
        [
            new Controls.ControlResult("tenant_isolation", "tenant:acme", "pass") { Detail = "model resolved among tenant acme only" },
            new Controls.ControlResult("entitlement", "consumer:support-web", "pass") { Detail = "approved by bench-policy@example.com (BENCH-1)" },
            new Controls.ControlResult("token_ceiling.input", "consumer:support-web", "pass") { Limit = 8000, Requested = 41 },
            new Controls.ControlResult("token_ceiling.output", "consumer:support-web", "pass") { Limit = 512, Requested = 256 },
            new Controls.ControlResult("prompt_restriction", "tenant:no-secrets", "pass"),
            new Controls.ControlResult("prompt_restriction", "service:card-numbers", "pass"),
            new Controls.ControlResult("prompt_restriction", "service:e-mail", "pass"),
            .. counters.Select(c => new Controls.ControlResult(c, "consumer:support-web", "pass") { Limit = 1000000000, Used = 12345 + i, Reserved = 297, Requested = 297 }),
            .. counters.Select(c => new Controls.ControlResult(c, "service:support-assistant", "pass") { Limit = 1000000000, Used = 12345 + i, Reserved = 297, Requested = 297 }),
        ];
        return record;
    }
}
