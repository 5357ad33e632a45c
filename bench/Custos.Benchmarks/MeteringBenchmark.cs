using BenchmarkDotNet.Attributes;

namespace Custos.Benchmarks;

/// <summary>
/// The per-response and per-record work off the decision path: reading usage from an OpenAI SSE stream as it
/// passes (with and without hiding the usage the gateway asked for), and sealing a ledger record into the chain.
/// </summary>
[MemoryDiagnoser]
public class MeteringBenchmark
{
    private readonly MeteringFixture _fixture = new();

    [Benchmark(Description = "SSE usage extraction, pass-through")]
    public long SsePassThrough() => _fixture.MeterStream(hide: false);

    [Benchmark(Description = "SSE usage extraction, hiding injected usage")]
    public long SseHidingUsage() => _fixture.MeterStream(hide: true);

    [Benchmark(Description = "chain append (canonical JSON + SHA-256)")]
    public long ChainAppend() => _fixture.Append();
}
