using Custos.Controls;
using Microsoft.Extensions.Time.Testing;

namespace Custos.Core.Tests;

/// <summary>
/// What every <see cref="ICounterStore"/> must do, whatever keeps the counters: each implementation's tests derive
/// from this class and supply a store on <see cref="Clock"/> (runtime's <c>BaseRateLimiterTests</c>). Linked into
/// the Redis tests, so it stays free of anything but Core and the fake clock.
/// </summary>
public abstract class CounterStoreContract
{
    /// <summary>Close to the real time: a Redis store also expires keys by the server's clock.</summary>
    protected FakeTimeProvider Clock { get; } = new(DateTimeOffset.UtcNow);

    /// <summary>The store under test, on <see cref="Clock"/>; a fresh set of counters for every test.</summary>
    protected abstract ICounterStore Store { get; }

    /// <summary>A counter name no other test uses, in tenant <c>acme</c>.</summary>
    protected static string NewKey(string control = "rate_limit.requests") => $"acme|consumer|c-{Guid.NewGuid():N}|{control}|1";

    protected CounterCharge Charge(string key, long amount, long limit, bool enforce = true, TimeSpan? window = null) =>
        new(key, amount, limit, enforce, Clock.GetUtcNow() + (window ?? TimeSpan.FromMinutes(1)));

    /// <summary>A final charge (<see cref="CounterCharge.Final"/>), as a request counter is charged.</summary>
    protected CounterCharge FinalCharge(string key, long amount, long limit, TimeSpan? window = null) =>
        Charge(key, amount, limit, window: window) with { Final = true };

    protected async Task<(int Failed, CounterReading[] Readings)> ReserveAsync(Guid reservation, params CounterCharge[] charges)
    {
        var readings = new CounterReading[charges.Length];
        var failed = await Store.TryReserveAsync(reservation, charges, readings);
        return (failed, readings);
    }

    protected Task<(int Failed, CounterReading[] Readings)> ReserveAsync(params CounterCharge[] charges) => ReserveAsync(Guid.NewGuid(), charges);

    /// <summary>The counter's state, read by a zero soft charge (which reserves nothing).</summary>
    protected async Task<CounterReading> ReadAsync(string key)
    {
        var (_, readings) = await ReserveAsync(Charge(key, 0, 0, enforce: false));
        return readings[0];
    }

    [Theory]
    [InlineData(3, 10, -1)] // under
    [InlineData(10, 10, -1)] // at: used + reserved + amount may equal the limit
    [InlineData(11, 10, 0)] // over
    public async Task TryReserve_AgainstLimit_AdmitsUpToTheLimit(long amount, long limit, int expected)
    {
        var key = NewKey();

        var (failed, readings) = await ReserveAsync(Charge(key, amount, limit));

        Assert.Equal(expected, failed);
        Assert.Equal(new CounterReading(0, 0), readings[0]);
        Assert.Equal(new CounterReading(0, expected < 0 ? amount : 0), await ReadAsync(key));
    }

    [Fact]
    public async Task TryReserve_Repeated_ReadingsShowTheStateBeforeEachCharge()
    {
        var key = NewKey();

        var first = await ReserveAsync(Charge(key, 4, 10));
        var second = await ReserveAsync(Charge(key, 5, 10));
        var third = await ReserveAsync(Charge(key, 2, 10));

        Assert.Equal((-1, new CounterReading(0, 0)), (first.Failed, first.Readings[0]));
        Assert.Equal((-1, new CounterReading(0, 4)), (second.Failed, second.Readings[0]));
        Assert.Equal((0, new CounterReading(0, 9)), (third.Failed, third.Readings[0]));
    }

    [Fact]
    public async Task TryReserve_OneChargeFails_NoCounterIsCharged()
    {
        var (a, b, c) = (NewKey(), NewKey("quota.tokens_per_day"), NewKey("budget"));
        await ReserveAsync(Charge(b, 8, 10));

        var (failed, readings) = await ReserveAsync(Charge(a, 1, 5), Charge(b, 3, 10), Charge(c, 100, 1000));

        Assert.Equal(1, failed);
        Assert.Equal([new(0, 0), new(0, 8), new(0, 0)], readings); // every counter read, the ones after the failure too
        Assert.Equal(new CounterReading(0, 0), await ReadAsync(a));
        Assert.Equal(new CounterReading(0, 8), await ReadAsync(b));
        Assert.Equal(new CounterReading(0, 0), await ReadAsync(c));
    }

    [Fact]
    public async Task TryReserve_SeveralFail_ReportsTheFirstEnforcedFailure()
    {
        var (a, b, c) = (NewKey(), NewKey("budget"), NewKey("quota.requests_per_day"));

        var (failed, _) = await ReserveAsync(Charge(a, 1, 5), Charge(b, 50, 10, enforce: false), Charge(c, 2, 1));

        Assert.Equal(2, failed);
    }

    [Fact]
    public async Task TryReserve_SoftChargeOverItsLimit_IsReservedAnyway()
    {
        var key = NewKey("budget");
        await ReserveAsync(Charge(key, 9, 10, enforce: false));

        var (failed, readings) = await ReserveAsync(Charge(key, 5, 10, enforce: false));

        Assert.Equal(-1, failed);
        Assert.Equal(new CounterReading(0, 9), readings[0]);
        Assert.Equal(new CounterReading(0, 14), await ReadAsync(key));
    }

    [Theory]
    [InlineData(40, 45)] // used more than estimated
    [InlineData(40, 12)] // used less
    [InlineData(40, 0)] // the provider never answered
    public async Task Settle_AfterReserve_MovesReservedToActualUse(long reserved, long actual)
    {
        var (key, other) = (NewKey("quota.tokens_per_day"), NewKey("rate_limit.requests"));
        var reservation = Guid.NewGuid();
        CounterCharge[] charges = [Charge(key, reserved, 100), Charge(other, 1, 10)];
        await ReserveAsync(reservation, charges);
        await ReserveAsync(Charge(key, 7, 100)); // another request, still in flight

        await Store.SettleAsync(reservation, charges, [actual, 1]);

        Assert.Equal(new CounterReading(actual, 7), await ReadAsync(key));
        Assert.Equal(new CounterReading(1, 0), await ReadAsync(other));
    }

    [Fact]
    public async Task TryReserve_FinalCharge_CountsAsUsedAtOnce_AndSettlingLeavesIt()
    {
        var (requests, tokens) = (NewKey(), NewKey("quota.tokens_per_day"));
        var reservation = Guid.NewGuid();
        CounterCharge[] charges = [FinalCharge(requests, 1, 10), Charge(tokens, 40, 100)];

        var (failed, readings) = await ReserveAsync(reservation, charges);
        var reserved = (await ReadAsync(requests), await ReadAsync(tokens));
        await Store.SettleAsync(reservation, charges, [1, 25]);

        Assert.Equal(-1, failed);
        Assert.Equal([new(0, 0), new(0, 0)], readings);
        Assert.Equal((new CounterReading(1, 0), new CounterReading(0, 40)), reserved);
        Assert.Equal(new CounterReading(1, 0), await ReadAsync(requests)); // not added a second time
        Assert.Equal(new CounterReading(25, 0), await ReadAsync(tokens));
    }

    [Fact]
    public async Task TryReserve_FinalCharges_CountAgainstTheLimitWithoutSettling()
    {
        var key = NewKey();
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(-1, (await ReserveAsync(FinalCharge(key, 1, 3))).Failed);
        }

        var (failed, readings) = await ReserveAsync(FinalCharge(key, 1, 3));

        Assert.Equal(0, failed);
        Assert.Equal(new CounterReading(3, 0), readings[0]);
    }

    [Fact]
    public async Task TryReserve_AnotherChargeFails_TheFinalChargeIsNotCounted()
    {
        var (requests, tokens) = (NewKey(), NewKey("quota.tokens_per_day"));

        var (failed, _) = await ReserveAsync(FinalCharge(requests, 1, 10), Charge(tokens, 200, 100));

        Assert.Equal(1, failed);
        Assert.Equal(new CounterReading(0, 0), await ReadAsync(requests));
    }

    [Fact]
    public async Task TryReserve_AfterSettlements_CountsUseAgainstTheLimit()
    {
        var key = NewKey();
        for (var i = 0; i < 3; i++)
        {
            var reservation = Guid.NewGuid();
            CounterCharge[] charges = [Charge(key, 1, 3)];
            Assert.Equal(-1, (await ReserveAsync(reservation, charges)).Failed);
            await Store.SettleAsync(reservation, charges, [1]);
        }

        var (failed, readings) = await ReserveAsync(Charge(key, 1, 3));

        Assert.Equal(0, failed);
        Assert.Equal(new CounterReading(3, 0), readings[0]);
    }

    [Fact]
    public async Task TryReserve_ManyConcurrentRequests_NeverAdmitsMoreThanTheLimit()
    {
        var (requests, tokens) = (NewKey(), NewKey("rate_limit.tokens"));
        var start = new TaskCompletionSource();

        var attempts = Enumerable.Range(0, 200).Select(async _ =>
        {
            await start.Task;
            return (await ReserveAsync(Charge(requests, 1, 50), Charge(tokens, 10, 1000))).Failed;
        }).ToArray();
        start.SetResult();
        var results = await Task.WhenAll(attempts);

        Assert.Equal(50, results.Count(failed => failed < 0));
        Assert.Equal(150, results.Count(failed => failed == 0));
        Assert.Equal(new CounterReading(0, 50), await ReadAsync(requests));
        Assert.Equal(new CounterReading(0, 500), await ReadAsync(tokens));
    }

    [Fact]
    public async Task TryReserve_AfterTheWindowEnds_StartsFromZero()
    {
        var key = NewKey();
        var reservation = Guid.NewGuid();
        CounterCharge[] charges = [Charge(key, 5, 5)];
        await ReserveAsync(reservation, charges);
        await Store.SettleAsync(reservation, charges, [5]);
        Assert.Equal(0, (await ReserveAsync(Charge(key, 1, 5))).Failed);

        Clock.Advance(TimeSpan.FromMinutes(2));
        var (failed, readings) = await ReserveAsync(Charge(key, 1, 5));

        Assert.Equal(-1, failed);
        Assert.Equal(new CounterReading(0, 0), readings[0]);
    }
}

/// <summary>The contract against the in-process store.</summary>
public sealed class InMemoryCounterStoreTests : CounterStoreContract
{
    public InMemoryCounterStoreTests() => Store = new InMemoryCounterStore(Clock);

    protected override ICounterStore Store { get; }
}
