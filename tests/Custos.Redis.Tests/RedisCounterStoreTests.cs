using Custos.Controls;
using Custos.Core.Tests;
using StackExchange.Redis;

namespace Custos.Redis.Tests;

/// <summary>The counter contract against a real redis-server, plus what only a shared store has to do.</summary>
[Collection(RedisCollection.Name)]
public sealed class RedisCounterStoreTests : CounterStoreContract
{
    private static readonly TimeSpan Lease = TimeSpan.FromMinutes(5);

    private readonly RedisServerFixture _redis;
    private readonly RedisCounterOptions _options = new() { KeyPrefix = $"test-{Guid.NewGuid():N}:", ReservationLease = Lease };

    public RedisCounterStoreTests(RedisServerFixture redis)
    {
        _redis = redis;
        Store = new RedisCounterStore(redis.Connection.GetDatabase(), Clock, _options);
    }

    protected override ICounterStore Store { get; }

    [Fact]
    public async Task TryReserve_ReservationNeverSettled_IsTakenBackAfterTheLease()
    {
        var key = NewKey();
        await ReserveAsync(Charge(key, 5, 5, window: TimeSpan.FromHours(1))); // its node died before settling
        Assert.Equal(0, (await ReserveAsync(Charge(key, 1, 5, window: TimeSpan.FromHours(1)))).Failed);

        Clock.Advance(Lease + TimeSpan.FromSeconds(1));
        var (failed, readings) = await ReserveAsync(Charge(key, 1, 5, window: TimeSpan.FromHours(1)));

        Assert.Equal(-1, failed);
        Assert.Equal(new CounterReading(0, 0), readings[0]);
    }

    [Fact]
    public async Task Settle_AfterTheLeaseRanOut_AddsUseWithoutTakingBackOtherReservations()
    {
        var key = NewKey("quota.tokens_per_day");
        var slow = Guid.NewGuid();
        CounterCharge[] charges = [Charge(key, 40, 100, window: TimeSpan.FromHours(1))];
        await ReserveAsync(slow, charges);
        Clock.Advance(Lease + TimeSpan.FromSeconds(1));
        await ReserveAsync(Charge(key, 30, 100, window: TimeSpan.FromHours(1))); // takes back the 40, reserves 30

        await Store.SettleAsync(slow, charges, [35]);

        Assert.Equal(new CounterReading(35, 30), await ReadAsync(key));
    }

    [Fact]
    public async Task Settle_Twice_TakesBackTheReservationOnce()
    {
        var key = NewKey("quota.tokens_per_day");
        var reservation = Guid.NewGuid();
        CounterCharge[] charges = [Charge(key, 10, 100)];
        await ReserveAsync(reservation, charges);
        await ReserveAsync(Charge(key, 20, 100));

        await Store.SettleAsync(reservation, charges, [10]);
        await Store.SettleAsync(reservation, charges, [10]);

        Assert.Equal(new CounterReading(20, 20), await ReadAsync(key));
    }

    [Fact]
    public async Task TryReserve_Keys_ExpireAtTheEndOfTheWindowInTheTenantsSlot()
    {
        var key = NewKey();
        var ends = Clock.GetUtcNow() + TimeSpan.FromMinutes(1);

        await ReserveAsync(new CounterCharge(key, 1, 10, true, ends));

        var database = _redis.Connection.GetDatabase();
        var keys = ((RedisCounterStore)Store).Keys([new CounterCharge(key, 1, 10, true, ends)]);
        Assert.StartsWith(_options.KeyPrefix + "{acme}|consumer|", keys[0].ToString());
        foreach (var stored in keys)
        {
            var expiry = await database.KeyExpireTimeAsync(stored);
            Assert.NotNull(expiry);
            Assert.InRange(expiry.Value, ends.UtcDateTime.AddSeconds(-1), ends.UtcDateTime.AddSeconds(1));
        }
    }

    [Fact]
    public async Task TryReserve_KeysEmptiedAndMadeAgain_ExpireAtTheEndOfTheWindowEachTime()
    {
        // The script writes an expiry only to a key that lacks one: the set of open reservations disappears when its
        // last member goes (settled, or its lease ran out) and must get it again when it is made anew.
        var key = NewKey();
        var ends = Clock.GetUtcNow() + TimeSpan.FromHours(1);
        CounterCharge[] charges = [new CounterCharge(key, 1, 10, true, ends)];
        var (first, second) = (Guid.NewGuid(), Guid.NewGuid());

        await ReserveAsync(first, charges);
        await ReserveAsync(second, charges); // the set exists: no new expiry written
        await AssertExpireAtAsync(charges, ends);

        await Store.SettleAsync(first, charges, [1]);
        await Store.SettleAsync(second, charges, [1]); // the set is empty, so Redis removed it
        await ReserveAsync(charges);
        await AssertExpireAtAsync(charges, ends);

        Clock.Advance(Lease + TimeSpan.FromSeconds(1)); // that reservation lapses; the next takes it back, emptying the set
        var (failed, readings) = await ReserveAsync(charges);
        Assert.Equal(-1, failed);
        Assert.Equal(new CounterReading(2, 0), readings[0]);
        await AssertExpireAtAsync(charges, ends);
        Assert.Equal(new CounterReading(2, 1), await ReadAsync(key));
    }

    private async Task AssertExpireAtAsync(CounterCharge[] charges, DateTimeOffset ends)
    {
        var database = _redis.Connection.GetDatabase();
        foreach (var stored in ((RedisCounterStore)Store).Keys(charges))
        {
            Assert.True(await database.KeyExistsAsync(stored), $"{stored} is missing");
            var expiry = await database.KeyExpireTimeAsync(stored);
            Assert.NotNull(expiry);
            Assert.InRange(expiry.Value, ends.UtcDateTime.AddSeconds(-1), ends.UtcDateTime.AddSeconds(1));
        }
    }

    [Fact]
    public async Task TryReserve_LargeCostCounters_KeepEveryUnit()
    {
        var key = NewKey("budget");
        const long Budget = 5_000_000_000_000_000; // 5 million in billionths
        var reservation = Guid.NewGuid();
        CounterCharge[] charges = [Charge(key, 1_234_567_890_123, Budget)];
        await ReserveAsync(reservation, charges);
        await ReserveAsync(Charge(key, 987_654_321_987, Budget));

        await Store.SettleAsync(reservation, charges, [1_111_111_111_111]);

        Assert.Equal(new CounterReading(1_111_111_111_111, 987_654_321_987), await ReadAsync(key));
    }

    [Fact]
    public async Task TryReserve_ScriptFlushedFromTheServer_LoadsItAgain()
    {
        var key = NewKey();
        await ReserveAsync(Charge(key, 1, 10));
        await _redis.Connection.GetServer(_redis.Connection.GetEndPoints()[0]).ScriptFlushAsync();

        var (failed, readings) = await ReserveAsync(Charge(key, 1, 10));

        Assert.Equal(-1, failed);
        Assert.Equal(new CounterReading(0, 1), readings[0]);
    }
}
