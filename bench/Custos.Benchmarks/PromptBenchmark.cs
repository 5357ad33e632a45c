using BenchmarkDotNet.Attributes;

namespace Custos.Benchmarks;

/// <summary>
/// What a long prompt costs on the request path before it is forwarded: counting its tokens and running the prompt
/// detectors over it. Both scale with the prompt, so they matter more than anything fixed per request once prompts are
/// kilobytes long.
/// </summary>
[MemoryDiagnoser]
public class PromptBenchmark
{
    private readonly PromptFixture _fixture = new();

    [Benchmark(Description = "token count, 12 KB prompt")]
    public int CountTokens() => _fixture.CountTokens();

    [Benchmark(Description = "five prompt detectors, 12 KB prompt")]
    public int Detect() => _fixture.Detect();
}
