using System.Collections.Concurrent;
using Custos.Cluster;
using Custos.Policy;

namespace Custos.Controls;

/// <summary>
/// Shared counters (Redis) with the declared fail modes applied when they cannot be reached. Each charge carries its
/// control's <see cref="CounterCharge.FailMode"/>: <see cref="FailMode.LocalShare"/> counts on this node against its
/// share of the limit among the live nodes (the shares add up to the limit, never more), <see cref="FailMode.Open"/> lets the charge through uncounted, and
/// <see cref="FailMode.Closed"/> refuses. Every charge decided that way carries <see cref="CounterReading.Degraded"/>,
/// so the ledger says so.
/// </summary>
/// <remarks>
/// After a failure the shared store is left alone for <see cref="RetryAfter"/> (requests do not each wait for a
/// timeout), then tried again by the next request; the first success ends the degraded mode. Settlements that fail
/// are kept (bounded) and retried when the store answers again, so reservations made before an outage do not stay
/// held until their lease expires. A reservation that fails after it may have reached the store (a command timeout:
/// the store runs it when it resumes) is released the same way (<see cref="ICounterStore.ReleaseAsync"/>), since the
/// request is decided by the fail modes instead and must not also hold or use the shared counters.
/// </remarks>
public sealed class ResilientCounterStore : ICounterStore
{
    /// <summary>Settlements and releases kept for retry at most; beyond it the oldest are left to expire with their lease.</summary>
    public const int MaxPendingSettlements = 100_000;

    private readonly ICounterStore _shared;
    private readonly InMemoryCounterStore _local;
    private readonly TimeProvider _time;
    private readonly Func<LiveNodes> _liveNodes;
    private readonly ConcurrentDictionary<Guid, LocalReservation> _localReservations = new();
    private readonly ConcurrentQueue<Pending> _pendingSettlements = new();
    private long _unavailableUntil; // UTC ticks; 0 while the shared store answers
    private int _degraded;
    private int _retrying;

    private sealed record LocalReservation(CounterCharge[] Charges, int[] Indexes);

    /// <summary>A settlement to retry, or a release when <see cref="Actual"/> is null.</summary>
    private readonly record struct Pending(Guid Reservation, IReadOnlyList<CounterCharge> Charges, IReadOnlyList<long>? Actual);

    /// <summary>Wraps <paramref name="shared"/>, for a node that knows how many nodes share the counters but not its rank.</summary>
    /// <param name="shared">The shared counters.</param>
    /// <param name="time">The clock.</param>
    /// <param name="liveNodes">How many gateway nodes share the counters (the last count known); at least 1 is used.</param>
    /// <remarks>Each node's share is the limit divided by the nodes, rounded down: a limit below the node count admits nothing.</remarks>
    public ResilientCounterStore(ICounterStore shared, TimeProvider time, Func<int> liveNodes)
        : this(shared, time, () => new LiveNodes(liveNodes(), -1))
    {
    }

    /// <summary>Wraps <paramref name="shared"/>.</summary>
    /// <param name="shared">The shared counters.</param>
    /// <param name="time">The clock.</param>
    /// <param name="liveNodes">
    /// How many gateway nodes share the counters and this node's rank among them (the last heartbeat's); at least 1 node
    /// is used. Each node's share is the limit divided by the nodes, rounded down, plus one for the nodes ranked below the
    /// remainder, so the shares add up to the limit.
    /// </param>
    public ResilientCounterStore(ICounterStore shared, TimeProvider time, Func<LiveNodes> liveNodes)
    {
        _shared = shared;
        _time = time;
        _liveNodes = liveNodes;
        _local = new InMemoryCounterStore(time);
    }

    /// <summary>How long the shared store is left alone after it failed. Default 1 s.</summary>
    public TimeSpan RetryAfter { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>The shared counters.</summary>
    public ICounterStore Shared => _shared;

    /// <summary>True while the shared counters are unreachable and the fail modes decide.</summary>
    public bool IsDegraded => Volatile.Read(ref _degraded) == 1;

    /// <summary>Settlements and releases waiting for the shared store to come back.</summary>
    public int PendingSettlements => _pendingSettlements.Count;

    /// <summary>Raised when the shared counters become unreachable (true) or answer again (false), with the failure if any.</summary>
    public event Action<bool, Exception?>? DegradedChanged;

    /// <inheritdoc/>
    public async ValueTask<int> TryReserveAsync(Guid reservation, IReadOnlyList<CounterCharge> charges, CounterReading[] readings,
        CancellationToken cancellationToken = default)
    {
        if (_time.GetUtcNow().UtcTicks >= Interlocked.Read(ref _unavailableUntil))
        {
            try
            {
                var failed = await _shared.TryReserveAsync(reservation, charges, readings, cancellationToken);
                Recovered();
                return failed;
            }
            catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
            {
                Failed(ex);
                if (ex is not CounterStoreNotReachedException)
                {
                    Keep(new Pending(reservation, charges, null)); // it may run when the store resumes: undo it then
                }
            }
        }

        return await ReserveDegradedAsync(reservation, charges, readings, cancellationToken);
    }

    /// <inheritdoc/>
    public async ValueTask SettleAsync(Guid reservation, IReadOnlyList<CounterCharge> charges, IReadOnlyList<long> actual, CancellationToken cancellationToken = default)
    {
        if (_localReservations.TryRemove(reservation, out var local))
        {
            var localActual = new long[local.Indexes.Length];
            for (var i = 0; i < localActual.Length; i++)
            {
                localActual[i] = actual[local.Indexes[i]];
            }

            await _local.SettleAsync(reservation, local.Charges, localActual, cancellationToken);
            return;
        }

        try
        {
            await _shared.SettleAsync(reservation, charges, actual, cancellationToken);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            Failed(ex);
            Keep(new Pending(reservation, charges, actual));
        }
    }

    /// <inheritdoc/>
    public async ValueTask ReleaseAsync(Guid reservation, IReadOnlyList<CounterCharge> charges, CancellationToken cancellationToken = default)
    {
        if (_localReservations.ContainsKey(reservation))
        {
            return; // decided on this node: the shared store never held it
        }

        try
        {
            await _shared.ReleaseAsync(reservation, charges, cancellationToken);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            Failed(ex);
            Keep(new Pending(reservation, charges, null));
        }
    }

    private void Keep(Pending pending)
    {
        _pendingSettlements.Enqueue(pending);
        while (_pendingSettlements.Count > MaxPendingSettlements && _pendingSettlements.TryDequeue(out _))
        {
        }
    }

    private async ValueTask<int> ReserveDegradedAsync(Guid reservation, IReadOnlyList<CounterCharge> charges, CounterReading[] readings,
        CancellationToken cancellationToken)
    {
        var live = _liveNodes();
        var nodes = Math.Max(1, live.Count);
        List<CounterCharge>? local = null;
        List<int>? indexes = null;
        var closed = -1;
        for (var i = 0; i < charges.Count; i++)
        {
            var charge = charges[i];
            var mode = !charge.Enforce ? FailMode.Open : charge.FailMode; // a soft limit never refuses: count nothing rather than guess
            readings[i] = new CounterReading(0, 0) { Degraded = mode };
            if (mode == FailMode.Closed && closed < 0)
            {
                closed = i;
            }
            else if (mode == FailMode.LocalShare)
            {
                var share = Share(charge.Limit, nodes, live.Rank);
                readings[i] = readings[i] with { AppliedLimit = share };
                (local ??= []).Add(charge with { Limit = share });
                (indexes ??= []).Add(i);
            }
        }

        if (closed >= 0)
        {
            return closed;
        }

        if (local is null || indexes is null)
        {
            return -1;
        }

        var localReadings = new CounterReading[local.Count];
        var failed = await _local.TryReserveAsync(reservation, local, localReadings, cancellationToken);
        for (var j = 0; j < local.Count; j++)
        {
            readings[indexes[j]] = localReadings[j] with { Degraded = FailMode.LocalShare, AppliedLimit = local[j].Limit };
        }

        if (failed >= 0)
        {
            return indexes[failed];
        }

        _localReservations[reservation] = new LocalReservation([.. local], [.. indexes]);
        return -1;
    }

    /// <summary>
    /// This node's part of <paramref name="limit"/>: the quotient for every node, and one more for the nodes ranked below
    /// the remainder, so that the parts of all nodes add up to the limit. Without a rank (negative), the quotient only.
    /// </summary>
    internal static long Share(long limit, int nodes, int rank)
    {
        var (share, remainder) = Math.DivRem(Math.Max(0, limit), nodes);
        return rank >= 0 && rank < remainder ? share + 1 : share;
    }

    private void Failed(Exception ex)
    {
        Interlocked.Exchange(ref _unavailableUntil, (_time.GetUtcNow() + RetryAfter).UtcTicks);
        if (Interlocked.Exchange(ref _degraded, 1) == 0)
        {
            DegradedChanged?.Invoke(true, ex);
        }
    }

    private void Recovered()
    {
        Interlocked.Exchange(ref _unavailableUntil, 0);
        if (Interlocked.Exchange(ref _degraded, 0) == 1)
        {
            DegradedChanged?.Invoke(false, null);
            _ = Task.Run(RetrySettlementsAsync);
        }
    }

    /// <summary>Retries the settlements and releases kept while the shared store was unreachable; stops at the first failure.</summary>
    public async Task RetrySettlementsAsync()
    {
        if (Interlocked.Exchange(ref _retrying, 1) == 1)
        {
            return; // one retry loop at a time: a settlement is applied once
        }

        try
        {
            while (_pendingSettlements.TryPeek(out var pending))
            {
                try
                {
                    if (pending.Actual is { } actual)
                    {
                        await _shared.SettleAsync(pending.Reservation, pending.Charges, actual);
                    }
                    else
                    {
                        await _shared.ReleaseAsync(pending.Reservation, pending.Charges);
                    }
                }
                catch (Exception ex)
                {
                    Failed(ex);
                    return;
                }

                _pendingSettlements.TryDequeue(out _);
            }
        }
        finally
        {
            Volatile.Write(ref _retrying, 0);
        }
    }
}
