using System.Text.Json;
using Custos.Benchmarks;
using Custos.Identity;
using Custos.Metering;

namespace Custos.Core.Tests;

/// <summary>
/// Holds the hot path to the allocation budgets in bench/allocation-budgets.json. Allocated bytes are counted, not
/// timed, so the check is stable on any machine; speed is measured in bench/, never here.
/// </summary>
public sealed class AllocationBudgetTests
{
    private static readonly DecisionFixture Fixture = new();

    /// <summary>The budget of <paramref name="name"/>, as measured in Release; Debug builds box async state machines, so they get 20% more.</summary>
    private static long Budget(string name)
    {
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "allocation-budgets.json")));
        var budget = json.RootElement.GetProperty(name).GetInt64();
#if DEBUG
        budget += budget / 5;
#endif
        return budget;
    }

    private static long AllocatedPerCall(Action action, int calls = 2000)
    {
        for (var i = 0; i < 200; i++)
        {
            action(); // warm up: tiering, caches, first windows
        }

        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < calls; i++)
        {
            action();
        }

        return (GC.GetAllocatedBytesForCurrentThread() - before) / calls;
    }

    [Fact]
    public void FullDecision_StaysWithinItsAllocationBudget()
    {
        var perCall = AllocatedPerCall(() => Assert.True(Decide()));

        Assert.True(perCall <= Budget("full_decision"), $"a full decision allocates {perCall} B; the budget is {Budget("full_decision")} B");
    }

    private static bool Decide()
    {
        // Every counter store call completes synchronously in-process, so the ValueTask is already done.
        var decision = Fixture.DecideAsync();
        Assert.True(decision.IsCompletedSuccessfully);
        return decision.Result;
    }

    [Fact]
    public void CredentialLookup_AllocatesNothing()
    {
        var perCall = AllocatedPerCall(() => Assert.True(ApiKey.Validate(Fixture.Key, out _) == ApiKeyFormatError.None
            && Fixture.Snapshot.TryGetCredential(KeyHash.Of(Fixture.Key), out _)));

        Assert.True(perCall <= Budget("credential_lookup"), $"{perCall} B");
    }

    [Fact]
    public void RequestParse_StaysWithinItsAllocationBudget()
    {
        var perCall = AllocatedPerCall(() => ChatRequest.TryParse(Fixture.Body, out _));

        Assert.True(perCall <= Budget("request_parse"), $"{perCall} B");
    }

    private static readonly MeteringFixture Metering = new();

    [Theory]
    [InlineData(false, "sse_pass_through")]
    [InlineData(true, "sse_hiding_usage")]
    public void SseUsageExtraction_StaysWithinItsAllocationBudget(bool hide, string budget)
    {
        long outputTokens = 0;
        var perCall = AllocatedPerCall(() => outputTokens = Metering.MeterStream(hide)); // Assert.Equal itself allocates

        Assert.Equal(10, outputTokens);

        Assert.True(perCall <= Budget(budget), $"{perCall} B; the budget is {Budget(budget)} B");
    }

    [Fact]
    public void ChainAppend_StaysWithinItsAllocationBudget()
    {
        var perCall = AllocatedPerCall(() => Metering.Append());

        Assert.True(perCall <= Budget("chain_append"), $"{perCall} B; the budget is {Budget("chain_append")} B");
    }

    private static readonly PromptFixture Prompt = new();

    [Fact]
    public void LongPromptChecks_StayWithinTheirAllocationBudget()
    {
        // Steady state: until the runtime has recompiled the regex search loops (tier 1), their generic searches box a char
        // per call, and in a busy test run that can take a while. So measure in rounds, and give tiering time in between.
        // Release allocates nothing (BenchmarkDotNet); the budget leaves room for a regex runner made while a test running
        // in parallel holds the cached one.
        var budget = Budget("long_prompt_checks");
        var perCall = long.MaxValue;
        for (var round = 0; round < 20 && perCall > budget; round++)
        {
            Thread.Sleep(round == 0 ? 0 : 200);
            perCall = Math.Min(perCall, AllocatedPerCall(() =>
            {
                Assert.True(Prompt.CountTokens() > 2_000);
                Assert.Equal(0, Prompt.Detect());
            }, calls: 100));
        }

        Assert.True(perCall <= budget, $"{perCall} B; the budget is {budget} B");
    }
}
