using BenchmarkDotNet.Attributes;
using Custos.Identity;
using Custos.Metering;

namespace Custos.Benchmarks;

/// <summary>
/// The cost of one full decision with 10,000 consumers and 100 models: key format check, SHA-256, credential
/// look-up, entitlement, ceilings, two prompt detectors, nine counters reserved and settled.
/// </summary>
[MemoryDiagnoser]
public class DecisionBenchmark
{
    private DecisionFixture _fixture = null!;

    [GlobalSetup]
    public void Setup() => _fixture = new DecisionFixture();

    [Benchmark(Baseline = true, Description = "credential look-up")]
    public bool CredentialLookup()
        => ApiKey.Validate(_fixture.Key, out _) == ApiKeyFormatError.None && _fixture.Snapshot.TryGetCredential(KeyHash.Of(_fixture.Key), out _);

    [Benchmark(Description = "request parse")]
    public bool Parse() => ChatRequest.TryParse(_fixture.Body, out _) == ParseError.None;

    [Benchmark(Description = "full decision")]
    public ValueTask<bool> FullDecision() => _fixture.DecideAsync();
}
