using Custos.Controls;
using Custos.Core.Tests;
using Custos.Testing;
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
        await Store.SettleAsync(slow, charges, [35]); // sent again: its first attempt timed out after Redis ran it

        Assert.Equal(new CounterReading(35, 30), await ReadAsync(key));
    }

    [Fact]
    public async Task Settle_Twice_TakesBackTheReservationAndCountsItsUseOnce()
    {
        var key = NewKey("quota.tokens_per_day");
        var reservation = Guid.NewGuid();
        CounterCharge[] charges = [Charge(key, 10, 100)];
        await ReserveAsync(reservation, charges);
        await ReserveAsync(Charge(key, 20, 100));

        await Store.SettleAsync(reservation, charges, [10]);
        await Store.SettleAsync(reservation, charges, [10]);

        Assert.Equal(new CounterReading(10, 20), await ReadAsync(key));
    }

    [Fact]
    public async Task TryReserve_Keys_CountersExpireAtTheEndOfTheWindow_AllInTheTenantsSlot()
    {
        var key = NewKey();
        var ends = Clock.GetUtcNow() + TimeSpan.FromMinutes(1);
        CounterCharge[] charges = [new CounterCharge(key, 1, 10, true, ends)];

        await ReserveAsync(charges);

        var keys = StoredKeys(charges);
        Assert.StartsWith(_options.KeyPrefix + "{acme}|consumer|", keys[0].ToString());
        Assert.Equal(_options.KeyPrefix + "{acme}|leases", keys[1].ToString());
        Assert.Equal(_options.KeyPrefix + "{acme}|leases|held", keys[2].ToString());
        Assert.Single(keys.Select(stored => _redis.Connection.HashSlot(stored)).Distinct());
        await AssertExpireAtAsync(charges, ends);
    }

    [Fact]
    public async Task TryReserve_CounterEmptiedAndMadeAgain_ExpiresAtTheEndOfTheWindowEachTime()
    {
        // The script writes an expiry only to a counter that lacks its end: one whose window ended starts over.
        var key = NewKey();
        var ends = Clock.GetUtcNow() + TimeSpan.FromHours(1);
        CounterCharge[] charges = [new CounterCharge(key, 1, 10, true, ends)];
        var (first, second) = (Guid.NewGuid(), Guid.NewGuid());

        await ReserveAsync(first, charges);
        await ReserveAsync(second, charges); // the counter has its end: no new expiry written
        await AssertExpireAtAsync(charges, ends);
        await Store.SettleAsync(first, charges, [1]);
        await Store.SettleAsync(second, charges, [1]);
        Assert.False(await Database.KeyExistsAsync(StoredKeys(charges)[1]), "the tenant's leases stay after the last was settled");

        Clock.Advance(TimeSpan.FromHours(1) + TimeSpan.FromSeconds(1)); // the window is over: the next reservation starts a new one
        var later = Clock.GetUtcNow() + TimeSpan.FromHours(1);
        CounterCharge[] again = [new CounterCharge(key, 1, 10, true, later)];
        var (failed, readings) = await ReserveAsync(again);

        Assert.Equal(-1, failed);
        Assert.Equal(new CounterReading(0, 0), readings[0]);
        await AssertExpireAtAsync(again, later);
    }

    [Fact]
    public async Task TryReserve_LapsedReservationOfAnotherConsumer_IsTakenBackByAnyReservationOfTheTenant()
    {
        var (tenant, dead, alive) = (NewKey("quota.tokens_per_day"), NewKey(), NewKey());
        var lapsed = Guid.NewGuid();
        await ReserveAsync(lapsed, Charge(tenant, 40, 100, window: TimeSpan.FromHours(1)), Charge(dead, 1, 1, window: TimeSpan.FromHours(1)));
        Clock.Advance(Lease + TimeSpan.FromSeconds(1)); // the node that made it died before settling

        var (failed, readings) = await ReserveAsync(Charge(alive, 1, 5, window: TimeSpan.FromHours(1)));

        Assert.Equal(-1, failed);
        Assert.Equal(new CounterReading(0, 0), readings[0]);
        var leases = StoredKeys([Charge(alive, 1, 5)]);
        Assert.Null(await Database.SortedSetScoreAsync(leases[1], lapsed.ToString("N")));
        Assert.False(await Database.HashExistsAsync(leases[2], lapsed.ToString("N")), "what the lapsed reservation held was kept");
        Assert.Equal(new CounterReading(0, 0), await ReadAsync(tenant));
        Assert.Equal(new CounterReading(0, 0), await ReadAsync(dead));
    }

    [Fact]
    public async Task TryReserve_LapsedReservationOfAnEarlierWindow_IsNotTakenFromTheWindowAfter()
    {
        // Windows name their keys, so a counter that starts over under the same key is rare; even then a lapsed
        // reservation is taken back only from the window it was made in.
        var key = NewKey("quota.tokens_per_day");
        await ReserveAsync(new CounterCharge(key, 40, 100, true, Clock.GetUtcNow() + TimeSpan.FromMinutes(1))); // its node dies
        Clock.Advance(TimeSpan.FromMinutes(2));
        var ends = Clock.GetUtcNow() + TimeSpan.FromHours(1);
        Assert.Equal(new CounterReading(0, 0), (await ReserveAsync(new CounterCharge(key, 30, 100, true, ends))).Readings[0]);

        Clock.Advance(Lease - TimeSpan.FromMinutes(1)); // the first reservation has lapsed, the second not
        var (failed, readings) = await ReserveAsync(new CounterCharge(key, 0, 100, true, ends));

        Assert.Equal(-1, failed);
        Assert.Equal(new CounterReading(0, 30), readings[0]);
    }

    [Fact]
    public async Task TryReserve_ManyLapsedReservations_AreTakenBack256AtATime()
    {
        // A script holds Redis while it runs: a crash that left thousands of reservations is cleaned up in steps.
        var key = NewKey("quota.tokens_per_day");
        var ends = Clock.GetUtcNow() + TimeSpan.FromHours(1);
        for (var i = 0; i < 300; i++)
        {
            await ReserveAsync(new CounterCharge(key, 1, 1000, true, ends));
        }

        Clock.Advance(Lease + TimeSpan.FromSeconds(1));

        Assert.Equal(new CounterReading(0, 300 - 256), (await ReserveAsync(new CounterCharge(key, 0, 1000, true, ends))).Readings[0]);
        Assert.Equal(new CounterReading(0, 0), (await ReserveAsync(new CounterCharge(key, 0, 1000, true, ends))).Readings[0]);
    }

    [Fact]
    public async Task Settle_AfterTheCounterExpired_DoesNotMakeItAgainWithoutExpiry()
    {
        // A per-minute counter whose window ended while a stream ran: Redis removed it at its end.
        var (minute, day) = (NewKey(), NewKey("quota.tokens_per_day"));
        var reservation = Guid.NewGuid();
        CounterCharge[] charges = [Charge(minute, 1, 10), Charge(day, 50, 1000, window: TimeSpan.FromHours(1))];
        await ReserveAsync(reservation, charges);
        await Database.KeyDeleteAsync(StoredKeys(charges)[0]);

        await Store.SettleAsync(reservation, charges, [1, 30]);

        Assert.False(await Database.KeyExistsAsync(StoredKeys(charges)[0]), "the expired counter was made again");
        Assert.Equal(new CounterReading(30, 0), await ReadAsync(day));
    }

    [Fact]
    public async Task TryReserve_NodeOfThePreviousVersion_SharesTheCountersAndItsLapsedReservationsAreTakenBack()
    {
        // What a node of the version before 2026-11-30 writes when it reserves: the counter as now, and a member
        // amount:reservation:index in a set beside it, scored by its deadline.
        var store = new RedisCounterStore(Database, Clock, _options with { LegacySweepEvery = 1 });
        var key = NewKey("quota.tokens_per_day");
        var counter = StoredKeys([Charge(key, 1, 1)])[0].ToString();
        var ends = Clock.GetUtcNow() + TimeSpan.FromHours(1);
        async Task ReserveAsOldNodeAsync(long amount, TimeSpan lease)
        {
            await Database.HashIncrementAsync(counter, "reserved", amount);
            await Database.HashSetAsync(counter, "end", ends.ToUnixTimeMilliseconds());
            await Database.SortedSetAddAsync(counter + "|r", $"{amount}:{Guid.NewGuid():N}:0", (Clock.GetUtcNow() + lease).ToUnixTimeMilliseconds());
        }

        await ReserveAsOldNodeAsync(60, Lease); // its node dies
        await ReserveAsOldNodeAsync(30, Lease + TimeSpan.FromMinutes(10)); // a node still running, with a longer lease
        var readings = new CounterReading[1];
        Assert.Equal(0, await store.TryReserveAsync(Guid.NewGuid(), [new CounterCharge(key, 20, 100, true, ends)], readings));
        Assert.Equal(new CounterReading(0, 90), readings[0]);

        Clock.Advance(Lease + TimeSpan.FromSeconds(1));
        Assert.Equal(-1, await store.TryReserveAsync(Guid.NewGuid(), [new CounterCharge(key, 20, 100, true, ends)], readings));

        Assert.Equal(new CounterReading(0, 30), readings[0]);
        Assert.Equal(1, await Database.SortedSetLengthAsync(counter + "|r"));
    }

    [Fact]
    public async Task TryReserve_FinalCharges_AreNotHeldByTheReservation()
    {
        var (requests, tokens) = (NewKey(), NewKey("quota.tokens_per_day"));
        var keys = StoredKeys([Charge(requests, 1, 10)]); // the counter, then the tenant's leases and held
        var (onlyFinal, mixed) = (Guid.NewGuid(), Guid.NewGuid());

        CounterCharge[] finalOnly = [FinalCharge(requests, 1, 10)];
        await ReserveAsync(onlyFinal, finalOnly);
        var leasesAfterFinalOnly = await Database.SortedSetLengthAsync(keys[1]);
        await Store.SettleAsync(onlyFinal, finalOnly, [1]); // nothing to settle
        await ReserveAsync(mixed, FinalCharge(requests, 1, 10), Charge(tokens, 40, 100));

        Assert.Equal(0, leasesAfterFinalOnly);
        Assert.Equal(1, await Database.SortedSetLengthAsync(keys[1]));
        var held = (await Database.HashGetAsync(keys[2], mixed.ToString("N"))).ToString();
        Assert.StartsWith("40 ", held, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', held);
        Assert.Equal(new CounterReading(2, 0), await ReadAsync(requests));
    }

    [Fact]
    public async Task TryReserve_LapsedReservation_TakesBackWhatItHeld_NotItsFinalCharges()
    {
        var (requests, tokens) = (NewKey(), NewKey("quota.tokens_per_day"));
        var window = TimeSpan.FromHours(1);
        await ReserveAsync(FinalCharge(requests, 1, 10, window: window), Charge(tokens, 40, 100, window: window)); // its node died

        Clock.Advance(Lease + TimeSpan.FromSeconds(1));
        var (_, readings) = await ReserveAsync(FinalCharge(requests, 1, 10, window: window), Charge(tokens, 5, 100, window: window));

        Assert.Equal([new(1, 0), new(0, 0)], readings);
    }

    [Fact]
    public async Task TryReserve_RequestCounterOfAnEarlierNode_AddsUpWithFinalCharges()
    {
        // A node of an earlier version reserves a request counter like the others, then settles it to 1.
        var key = NewKey();
        var earlier = Guid.NewGuid();
        CounterCharge[] asEarlier = [Charge(key, 1, 3)];
        await ReserveAsync(earlier, asEarlier);
        await ReserveAsync(FinalCharge(key, 1, 3));

        var (failed, readings) = await ReserveAsync(FinalCharge(key, 1, 3));
        var refused = await ReserveAsync(FinalCharge(key, 1, 3));
        await Store.SettleAsync(earlier, asEarlier, [1]);

        Assert.Equal((-1, new CounterReading(1, 1)), (failed, readings[0]));
        Assert.Equal(0, refused.Failed);
        Assert.Equal(new CounterReading(3, 0), await ReadAsync(key));
    }

    [Fact]
    public async Task Release_OfAReservationThatWasMade_GivesBackWhatItHeldAndItsRequestCounter()
    {
        var (requests, budget) = (NewKey(), NewKey("budget"));
        var reservation = Guid.NewGuid();
        CounterCharge[] charges = [FinalCharge(requests, 1, 10), Charge(budget, 40, 100)];
        await ReserveAsync(reservation, charges);
        await ReserveAsync(FinalCharge(requests, 1, 10), Charge(budget, 5, 100)); // another request's, kept

        await Store.ReleaseAsync(reservation, charges);
        await Store.ReleaseAsync(reservation, charges); // a second release finds no lease: nothing more

        Assert.Equal(new CounterReading(1, 0), await ReadAsync(requests));
        Assert.Equal(new CounterReading(0, 5), await ReadAsync(budget));
        Assert.False(await Database.HashExistsAsync(StoredKeys(charges)[3], reservation.ToString("N")));
    }

    [Fact]
    public async Task Release_OfAReservationThatWasNeverMade_LeavesTheCountersAlone()
    {
        var (requests, budget) = (NewKey(), NewKey("budget"));
        await ReserveAsync(FinalCharge(requests, 1, 10), Charge(budget, 40, 100));
        CounterCharge[] refused = [FinalCharge(requests, 1, 10), Charge(budget, 80, 100)];
        Assert.Equal(1, (await ReserveAsync(Guid.NewGuid(), refused)).Failed);

        await Store.ReleaseAsync(Guid.NewGuid(), refused);

        Assert.Equal(new CounterReading(1, 0), await ReadAsync(requests));
        Assert.Equal(new CounterReading(0, 40), await ReadAsync(budget));
    }

    [Fact]
    public async Task Release_OfRequestCountersOnly_GivesThemBackInTheirWindowOnly()
    {
        var key = NewKey();
        var reservation = Guid.NewGuid();
        CounterCharge[] charges = [FinalCharge(key, 1, 10)];
        await ReserveAsync(reservation, charges);
        await ReserveAsync(FinalCharge(key, 1, 10));

        await Store.ReleaseAsync(reservation, charges);
        await Store.ReleaseAsync(reservation, [charges[0] with { ExpiresAt = charges[0].ExpiresAt.AddMinutes(1) }]); // another window

        Assert.Equal(new CounterReading(1, 0), await ReadAsync(key));
    }

    /// <summary>Redis that runs the reservation (and, with <see cref="SettlementsStalled"/>, the settlement), then makes its caller time out, as a stalled server does.</summary>
    private sealed class TimingOut(ICounterStore inner) : ICounterStore
    {
        public bool Stalled { get; set; } = true;

        public bool SettlementsStalled { get; set; }

        public async ValueTask<int> TryReserveAsync(Guid reservation, IReadOnlyList<CounterCharge> charges, CounterReading[] readings, CancellationToken cancellationToken = default)
        {
            var failed = await inner.TryReserveAsync(reservation, charges, readings, cancellationToken);
            return Stalled ? throw new RedisTimeoutException(CommandFlags.None, "Timeout awaiting response", CommandStatus.Sent) : failed;
        }

        public async ValueTask SettleAsync(Guid reservation, IReadOnlyList<CounterCharge> charges, IReadOnlyList<long> actual, CancellationToken cancellationToken = default)
        {
            await inner.SettleAsync(reservation, charges, actual, cancellationToken);
            if (SettlementsStalled)
            {
                throw new RedisTimeoutException(CommandFlags.None, "Timeout awaiting response", CommandStatus.Sent);
            }
        }

        public ValueTask ReleaseAsync(Guid reservation, IReadOnlyList<CounterCharge> charges, CancellationToken cancellationToken = default) =>
            inner.ReleaseAsync(reservation, charges, cancellationToken);
    }

    [Fact]
    public async Task ResilientStore_ReservationsThatTimedOutInRedis_AreReleasedWhenItAnswersAgain()
    {
        var stalled = new TimingOut(Store);
        var resilient = new ResilientCounterStore(stalled, Clock, () => 1) { RetryAfter = TimeSpan.Zero }; // each request tries Redis
        var (requests, budget) = (NewKey("quota.requests_per_day"), NewKey("budget"));
        var refused = new List<Guid>();
        for (var i = 0; i < 3; i++)
        {
            CounterCharge[] charges = [FinalCharge(requests, 1, 20) with { FailMode = Policy.FailMode.Closed }, Charge(budget, 40, 1000) with { FailMode = Policy.FailMode.Closed }];
            var id = Guid.NewGuid();
            Assert.Equal(0, await resilient.TryReserveAsync(id, charges, new CounterReading[2])); // refused: counters unreachable
            refused.Add(id);
        }

        Assert.Equal(new CounterReading(3, 0), await ReadAsync(requests)); // Redis made all three when it resumed
        Assert.Equal(new CounterReading(0, 120), await ReadAsync(budget));
        stalled.Stalled = false;
        Assert.Equal(-1, await resilient.TryReserveAsync(Guid.NewGuid(), [Charge(budget, 0, 0, enforce: false)], new CounterReading[1]));
        await Eventually.TrueAsync(() => resilient.PendingSettlements == 0, "the releases replayed");

        Assert.Equal(new CounterReading(0, 0), await ReadAsync(requests));
        Assert.Equal(new CounterReading(0, 0), await ReadAsync(budget));
        foreach (var id in refused)
        {
            Assert.False(await Database.HashExistsAsync(StoredKeys([Charge(budget, 1, 1)])[2], id.ToString("N")));
        }
    }

    [Fact]
    public async Task ResilientStore_SettlementsThatTimedOutInRedis_AreCountedOnceWhenReplayed()
    {
        var stalled = new TimingOut(Store) { Stalled = false, SettlementsStalled = true };
        var resilient = new ResilientCounterStore(stalled, Clock, () => 1) { RetryAfter = TimeSpan.Zero };
        var (tokens, budget) = (NewKey("quota.tokens_per_day"), NewKey("budget"));
        var settled = new List<Guid>();
        for (var i = 0; i < 3; i++)
        {
            CounterCharge[] charges = [Charge(tokens, 100, 10_000), Charge(budget, 40, 1000)];
            var id = Guid.NewGuid();
            Assert.Equal(-1, await resilient.TryReserveAsync(id, charges, new CounterReading[2]));
            await resilient.SettleAsync(id, charges, [60, 25]); // Redis runs it when it resumes; the node timed out and keeps it
            settled.Add(id);
        }

        Assert.Equal(3, resilient.PendingSettlements);
        Assert.Equal(new CounterReading(180, 0), await ReadAsync(tokens));
        stalled.SettlementsStalled = false;
        Assert.Equal(-1, await resilient.TryReserveAsync(Guid.NewGuid(), [Charge(budget, 0, 0, enforce: false)], new CounterReading[1]));
        await Eventually.TrueAsync(() => resilient.PendingSettlements == 0, "the settlements replayed");

        Assert.Equal(new CounterReading(180, 0), await ReadAsync(tokens));
        Assert.Equal(new CounterReading(75, 0), await ReadAsync(budget));
    }

    private IDatabase Database => _redis.Connection.GetDatabase();

    private RedisKey[] StoredKeys(CounterCharge[] charges) => ((RedisCounterStore)Store).Keys(charges, sweep: false);

    private async Task AssertExpireAtAsync(CounterCharge[] charges, DateTimeOffset ends)
    {
        foreach (var stored in StoredKeys(charges).Take(charges.Length))
        {
            Assert.True(await Database.KeyExistsAsync(stored), $"{stored} is missing");
            var expiry = await Database.KeyExpireTimeAsync(stored);
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
