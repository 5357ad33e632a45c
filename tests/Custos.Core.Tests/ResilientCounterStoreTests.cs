using Custos.Controls;
using Custos.Policy;
using Custos.Testing;
using Microsoft.Extensions.Time.Testing;

namespace Custos.Core.Tests;

/// <summary>The declared fail modes when the shared counters cannot be reached, and the return to normal.</summary>
public sealed class ResilientCounterStoreTests
{
    private readonly FakeTimeProvider _clock = new(new DateTimeOffset(2026, 11, 30, 9, 0, 0, TimeSpan.Zero));
    private readonly SwitchableStore _shared;
    private readonly ResilientCounterStore _store;
    private int _nodes = 3;

    public ResilientCounterStoreTests()
    {
        _shared = new SwitchableStore(new InMemoryCounterStore(_clock));
        _store = new ResilientCounterStore(_shared, _clock, () => _nodes);
    }

    /// <summary>
    /// The shared counters, which can be made unreachable, or to time out after they made the reservation (as Redis
    /// does when it stalls with the script already on its socket). Releases undo what they held, as Redis does.
    /// </summary>
    private sealed class SwitchableStore(ICounterStore inner) : ICounterStore
    {
        private readonly HashSet<Guid> _made = [];

        public bool Down { get; set; }

        public bool TimeOutAfterReserving { get; set; }

        public int Calls { get; private set; }

        public List<Guid> Released { get; } = [];

        public async ValueTask<int> TryReserveAsync(Guid reservation, IReadOnlyList<CounterCharge> charges, CounterReading[] readings, CancellationToken cancellationToken = default)
        {
            Calls++;
            if (Down)
            {
                throw new CounterStoreNotReachedException("redis: no connection");
            }

            var failed = await inner.TryReserveAsync(reservation, charges, readings, cancellationToken);
            if (failed < 0)
            {
                _made.Add(reservation);
            }

            return TimeOutAfterReserving ? throw new TimeoutException("redis: timeout") : failed;
        }

        public ValueTask SettleAsync(Guid reservation, IReadOnlyList<CounterCharge> charges, IReadOnlyList<long> actual, CancellationToken cancellationToken = default)
            => Down ? throw new TimeoutException("redis: no connection") : inner.SettleAsync(reservation, charges, actual, cancellationToken);

        public async ValueTask ReleaseAsync(Guid reservation, IReadOnlyList<CounterCharge> charges, CancellationToken cancellationToken = default)
        {
            if (Down)
            {
                throw new TimeoutException("redis: no connection");
            }

            Released.Add(reservation);
            if (_made.Remove(reservation))
            {
                await inner.SettleAsync(reservation, charges, new long[charges.Count], cancellationToken);
            }
        }
    }

    private CounterCharge Charge(string control, long amount, long limit, FailMode mode) =>
        new($"acme|consumer|web|{control}|1", amount, limit, Enforce: true, _clock.GetUtcNow().AddMinutes(1)) { FailMode = mode };

    private async Task<(int Failed, CounterReading[] Readings)> ReserveAsync(Guid reservation, params CounterCharge[] charges)
    {
        var readings = new CounterReading[charges.Length];
        return (await _store.TryReserveAsync(reservation, charges, readings), readings);
    }

    [Theory]
    [InlineData(10, new[] { 4, 3, 3 })]
    [InlineData(1, new[] { 1, 0, 0 })]
    [InlineData(2, new[] { 1, 1, 0 })]
    [InlineData(3, new[] { 1, 1, 1 })]
    public async Task LocalShare_EachNodeCountsItsShareOfTheLimit_AndTheSharesAddUpToTheLimit(long limit, int[] expected)
    {
        var admittedByRank = new int[3];
        for (var rank = 0; rank < 3; rank++)
        {
            var node = new ResilientCounterStore(_shared, _clock, () => new Cluster.LiveNodes(3, rank));
            _shared.Down = true;
            for (var i = 0; i < 10; i++)
            {
                var readings = new CounterReading[1];
                var failed = await node.TryReserveAsync(Guid.NewGuid(), [Charge("rate_limit.requests", 1, limit, FailMode.LocalShare)], readings);
                Assert.Equal(FailMode.LocalShare, readings[0].Degraded);
                Assert.Equal(expected[rank], readings[0].AppliedLimit);
                admittedByRank[rank] += failed < 0 ? 1 : 0;
            }
        }

        Assert.Equal(expected, admittedByRank);
        Assert.Equal(limit, admittedByRank.Sum()); // the three nodes together admit the limit, not more
    }

    [Fact]
    public async Task LocalShare_WithoutARank_CountsTheLimitDividedByTheNodesRoundedDown()
    {
        _shared.Down = true;
        var admitted = 0;
        for (var i = 0; i < 10; i++)
        {
            var (failed, _) = await ReserveAsync(Guid.NewGuid(), Charge("rate_limit.requests", 1, 10, FailMode.LocalShare));
            admitted += failed < 0 ? 1 : 0;
        }

        Assert.Equal(3, admitted); // floor(10 / 3): the three nodes together stay within the limit
        Assert.True(_store.IsDegraded);

        var (belowNodes, small) = await ReserveAsync(Guid.NewGuid(), Charge("rate_limit.requests", 1, 2, FailMode.LocalShare));
        Assert.Equal(0, belowNodes); // a limit below the node count admits nothing on a node that does not know its rank
        Assert.Equal(0, small[0].AppliedLimit);
    }

    [Fact]
    public async Task Closed_RefusesAtTheFirstClosedCharge_AndOpenLetsThroughUncounted()
    {
        _shared.Down = true;
        var (failed, readings) = await ReserveAsync(Guid.NewGuid(),
            Charge("rate_limit.requests", 1, 10, FailMode.LocalShare), Charge("budget", 5, 100, FailMode.Closed), Charge("quota.requests_per_day", 1, 5, FailMode.Open));
        Assert.Equal(1, failed);
        Assert.Equal([FailMode.LocalShare, FailMode.Closed, FailMode.Open], readings.Select(r => r.Degraded!.Value));

        for (var i = 0; i < 20; i++)
        {
            var (openFailed, openReadings) = await ReserveAsync(Guid.NewGuid(), Charge("quota.requests_per_day", 1, 5, FailMode.Open));
            Assert.Equal(-1, openFailed);
            Assert.Equal(FailMode.Open, openReadings[0].Degraded);
        }
    }

    [Fact]
    public async Task AfterAFailure_TheSharedStoreIsLeftAloneForASecond_ThenNormalEnforcementResumes()
    {
        _shared.Down = true;
        await ReserveAsync(Guid.NewGuid(), Charge("rate_limit.requests", 1, 10, FailMode.LocalShare));
        var calls = _shared.Calls;
        await ReserveAsync(Guid.NewGuid(), Charge("rate_limit.requests", 1, 10, FailMode.LocalShare));
        Assert.Equal(calls, _shared.Calls); // not retried on every request while it is known to be down

        _shared.Down = false;
        _clock.Advance(TimeSpan.FromSeconds(1));
        var (failed, readings) = await ReserveAsync(Guid.NewGuid(), Charge("rate_limit.requests", 1, 10, FailMode.LocalShare));
        Assert.Equal(-1, failed);
        Assert.Null(readings[0].Degraded);
        Assert.False(_store.IsDegraded);
    }

    [Fact]
    public async Task ASettlementThatFailsDuringAnOutage_IsAppliedWhenTheStoreAnswersAgain()
    {
        var budget = Charge("budget", 100, 150, FailMode.Closed);
        var reservation = Guid.NewGuid();
        Assert.Equal(-1, (await ReserveAsync(reservation, budget)).Failed);

        _shared.Down = true;
        await _store.SettleAsync(reservation, [budget], [10]); // the request used 10 of its reserved 100
        Assert.Equal(1, _store.PendingSettlements);

        _shared.Down = false;
        _clock.Advance(TimeSpan.FromSeconds(1));
        var probe = Charge("budget", 0, 0, FailMode.Closed) with { Enforce = false };
        await ReserveAsync(Guid.NewGuid(), probe); // the first success ends the outage and replays the settlement
        await Eventually.TrueAsync(() => _store.PendingSettlements == 0, "the pending settlements replayed");

        var (_, readings) = await ReserveAsync(Guid.NewGuid(), probe);
        Assert.Equal(new CounterReading(10, 0), readings[0]); // the reservation was given back, the use kept
    }

    [Fact]
    public async Task ALocalReservation_SettlesLocally_NotInTheSharedStore()
    {
        _shared.Down = true;
        var charge = Charge("rate_limit.tokens", 50, 90, FailMode.LocalShare); // 30 per node of three
        var reservation = Guid.NewGuid();
        Assert.Equal(0, (await ReserveAsync(reservation, charge)).Failed); // 50 > 30: refused on this node
        _nodes = 1;
        Assert.Equal(-1, (await ReserveAsync(reservation, charge)).Failed);
        await _store.SettleAsync(reservation, [charge], [20]);
        Assert.Equal(0, _store.PendingSettlements);

        var (_, readings) = await ReserveAsync(Guid.NewGuid(), charge with { Amount = 0 });
        Assert.Equal(20, readings[0].Used);
    }

    [Fact]
    public async Task AReservationThatTimesOutAfterReachingTheStore_IsReleasedWhenTheStoreAnswersAgain()
    {
        var budget = Charge("budget", 100, 150, FailMode.Closed);
        var reservation = Guid.NewGuid();
        _shared.TimeOutAfterReserving = true;
        Assert.Equal(0, (await ReserveAsync(reservation, budget)).Failed); // refused by the fail mode, yet made in the store
        Assert.Equal(1, _store.PendingSettlements);

        _shared.TimeOutAfterReserving = false;
        _clock.Advance(TimeSpan.FromSeconds(1));
        var probe = Charge("budget", 0, 0, FailMode.Closed) with { Enforce = false };
        await ReserveAsync(Guid.NewGuid(), probe); // the first success ends the outage and replays the release
        await Eventually.TrueAsync(() => _store.PendingSettlements == 0, "the pending release replayed");

        Assert.Equal([reservation], _shared.Released);
        var (_, readings) = await ReserveAsync(Guid.NewGuid(), probe);
        Assert.Equal(new CounterReading(0, 0), readings[0]); // the refused request holds nothing
    }

    [Fact]
    public async Task AReservationThatNeverReachedTheStore_IsNotReleased()
    {
        _shared.Down = true;
        Assert.Equal(0, (await ReserveAsync(Guid.NewGuid(), Charge("budget", 100, 150, FailMode.Closed))).Failed);

        Assert.True(_store.IsDegraded);
        Assert.Equal(0, _store.PendingSettlements);
    }
}
