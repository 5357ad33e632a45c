using Custos.Metering;

namespace Custos.Controls;

/// <summary>One amount to reserve against one counter, in one window.</summary>
/// <param name="Key">The counter and its window, for example <c>acme|consumer|web|rpm|29384756</c>. Keys include the tenant.</param>
/// <param name="Amount">What this request reserves: 1 request, estimated tokens, or worst-case cost in nano-units.</param>
/// <param name="Limit">The limit of the window.</param>
/// <param name="Enforce">False for soft limits: the reservation is made whatever the reading.</param>
/// <param name="ExpiresAt">When the window ends and the counter may be forgotten.</param>
public readonly record struct CounterCharge(string Key, long Amount, long Limit, bool Enforce, DateTimeOffset ExpiresAt)
{
    /// <summary>What to do with this charge when the shared counters cannot be reached. Default <see cref="Policy.FailMode.Closed"/>.</summary>
    public Policy.FailMode FailMode { get; init; }

    /// <summary>
    /// True when <see cref="Amount"/> is already what the request uses, whatever becomes of it: a request counts as one
    /// request whether the provider answers or not. Such a charge goes to <c>used</c> at once, is not held as a
    /// reservation, and settling leaves it alone. The same end as reserving it and settling it to its amount, with
    /// nothing to settle.
    /// </summary>
    public bool Final { get; init; }
}

/// <summary>A counter as it stood when a charge was evaluated, before the charge.</summary>
public readonly record struct CounterReading(long Used, long Reserved)
{
    /// <summary>
    /// Set when the shared counters could not be reached and the charge's <see cref="CounterCharge.FailMode"/> decided
    /// instead: <see cref="Policy.FailMode.LocalShare"/> (counted on this node), <see cref="Policy.FailMode.Open"/>
    /// (not counted) or <see cref="Policy.FailMode.Closed"/> (refused). Null when the counters answered.
    /// </summary>
    public Policy.FailMode? Degraded { get; init; }

    /// <summary>The limit applied instead of the charge's when it was counted on this node (<see cref="Policy.FailMode.LocalShare"/>).</summary>
    public long? AppliedLimit { get; init; }
}

/// <summary>
/// Shared counters behind rate limits, quotas and budgets, with reserve-then-settle: a request reserves its
/// worst case before it is forwarded and settles to what it really used afterwards. A reservation is all or
/// nothing across every counter of the request, and atomic against concurrent requests, so the sum of what
/// is used and reserved never passes an enforced limit. The in-process implementation is the default; the
/// Redis one (multi-node) runs the same contract in Lua.
/// </summary>
/// <remarks>
/// Every reservation carries an identity, made by the caller once per request and passed again to
/// <see cref="SettleAsync"/>: a shared store needs it to tell a settlement from a reservation whose request never
/// settled (its node died), which it must give back on its own.
/// </remarks>
public interface ICounterStore
{
    /// <summary>
    /// Reserves every charge, or none: fails at the first enforced charge whose counter cannot take its amount
    /// (<c>used + reserved + amount &gt; limit</c>). <paramref name="readings"/> receives each counter's state before
    /// the charge, whichever way it went.
    /// </summary>
    /// <param name="reservation">The request's reservation, unique per request; settle with the same value.</param>
    /// <param name="charges">What to reserve, one charge per counter.</param>
    /// <param name="readings">Receives each counter's state before its charge; as long as <paramref name="charges"/>.</param>
    /// <param name="cancellationToken">Stops waiting for the store.</param>
    /// <returns>-1 when all were reserved, else the index of the charge that failed.</returns>
    ValueTask<int> TryReserveAsync(Guid reservation, IReadOnlyList<CounterCharge> charges, CounterReading[] readings, CancellationToken cancellationToken = default);

    /// <summary>
    /// Turns reservations into use: each counter drops <c>reserved</c> by the charge's amount and adds <c>actual</c> to
    /// <c>used</c>. <paramref name="charges"/> are the ones reserved under <paramref name="reservation"/>; the
    /// <see cref="CounterCharge.Final"/> ones among them were counted when reserved and are left alone.
    /// </summary>
    ValueTask SettleAsync(Guid reservation, IReadOnlyList<CounterCharge> charges, IReadOnlyList<long> actual, CancellationToken cancellationToken = default);

    /// <summary>
    /// Undoes a reservation whose <see cref="TryReserveAsync"/> failed after it may have reached the store (a command
    /// timeout: the store may run it later), so that a request decided otherwise consumes nothing: what it holds goes
    /// back, and so do its <see cref="CounterCharge.Final"/> charges. A reservation that was never made, or was already
    /// settled, released or taken back, is left alone wherever the store can tell (see each implementation).
    /// </summary>
    /// <param name="reservation">The reservation that failed.</param>
    /// <param name="charges">The charges it was made with.</param>
    /// <param name="cancellationToken">Stops waiting for the store.</param>
    ValueTask ReleaseAsync(Guid reservation, IReadOnlyList<CounterCharge> charges, CancellationToken cancellationToken = default);
}

/// <summary>
/// Thrown by a shared <see cref="ICounterStore"/> when a call failed before it was sent (no connection): the store
/// never saw it, so there is nothing to undo.
/// </summary>
public sealed class CounterStoreNotReachedException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// Counters in this process: one lock, held for a few dictionary operations per request. Reservations are not
/// tracked one by one: in one process every admitted request is settled exactly once, and a crash loses the
/// counters with the reservations, so there is nothing to expire.
/// </summary>
public sealed class InMemoryCounterStore(TimeProvider time) : ICounterStore
{
    private readonly Dictionary<string, Counter> _counters = new(StringComparer.Ordinal);
    private readonly Lock _lock = new();
    private DateTimeOffset _nextSweep = DateTimeOffset.MinValue;

    private sealed class Counter
    {
        public long Used;
        public long Reserved;
        public DateTimeOffset ExpiresAt;
    }

    /// <summary>Counters currently held (for tests and metrics).</summary>
    public int Count
    {
        get
        {
            lock (_lock)
            {
                return _counters.Count;
            }
        }
    }

    /// <summary>True when the store holds a counter under <paramref name="key"/>.</summary>
    public bool Holds(string key)
    {
        lock (_lock)
        {
            return _counters.ContainsKey(key);
        }
    }

    /// <summary>
    /// Starts each counter of <paramref name="seeds"/> that the store does not hold yet at what the ledger says its window
    /// has used (<see cref="CounterSeeds"/>); a counter held already has counted since, and is left alone. Returns how many
    /// it started.
    /// </summary>
    public int Seed(IEnumerable<CounterSeed> seeds)
    {
        ArgumentNullException.ThrowIfNull(seeds);
        var seeded = 0;
        lock (_lock)
        {
            foreach (var seed in seeds)
            {
                if (seed.End > time.GetUtcNow() && _counters.TryAdd(seed.Key, new Counter { Used = seed.Used, ExpiresAt = seed.End }))
                {
                    seeded++;
                }
            }
        }

        return seeded;
    }

    /// <inheritdoc/>
    public ValueTask<int> TryReserveAsync(Guid reservation, IReadOnlyList<CounterCharge> charges, CounterReading[] readings, CancellationToken cancellationToken = default)
    {
        lock (_lock)
        {
            SweepIfDue();
            var failed = -1;
            for (var i = 0; i < charges.Count; i++)
            {
                var charge = charges[i];
                var counter = _counters.GetValueOrDefault(charge.Key);
                var reading = counter is null ? default : new CounterReading(counter.Used, counter.Reserved);
                readings[i] = reading;
                if (failed < 0 && charge.Enforce && Saturating.Add(Saturating.Add(reading.Used, reading.Reserved), charge.Amount) > charge.Limit)
                {
                    failed = i;
                }
            }

            if (failed >= 0)
            {
                return ValueTask.FromResult(failed);
            }

            foreach (var charge in charges)
            {
                if (!_counters.TryGetValue(charge.Key, out var counter))
                {
                    counter = new Counter { ExpiresAt = charge.ExpiresAt };
                    _counters[charge.Key] = counter;
                }

                if (charge.Final)
                {
                    counter.Used = Saturating.Add(counter.Used, charge.Amount);
                }
                else
                {
                    counter.Reserved += charge.Amount;
                }
            }

            return ValueTask.FromResult(-1);
        }
    }

    /// <inheritdoc/>
    public ValueTask SettleAsync(Guid reservation, IReadOnlyList<CounterCharge> charges, IReadOnlyList<long> actual, CancellationToken cancellationToken = default)
    {
        lock (_lock)
        {
            for (var i = 0; i < charges.Count; i++)
            {
                if (!charges[i].Final && _counters.TryGetValue(charges[i].Key, out var counter))
                {
                    counter.Reserved = Math.Max(0, counter.Reserved - charges[i].Amount);
                    counter.Used = Saturating.Add(counter.Used, actual[i]);
                }
            }
        }

        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// Nothing: a reservation in this process is made or refused within the call that makes it, never left in doubt,
    /// and reservations are not tracked one by one, so there is nothing this could tell apart.
    /// </summary>
    public ValueTask ReleaseAsync(Guid reservation, IReadOnlyList<CounterCharge> charges, CancellationToken cancellationToken = default) =>
        ValueTask.CompletedTask;

    private void SweepIfDue()
    {
        var now = time.GetUtcNow();
        if (now < _nextSweep)
        {
            return;
        }

        _nextSweep = now.AddMinutes(1);
        List<string>? expired = null;
        foreach (var (key, counter) in _counters)
        {
            if (counter.ExpiresAt <= now && counter.Reserved == 0)
            {
                (expired ??= []).Add(key);
            }
        }

        expired?.ForEach(key => _counters.Remove(key));
    }
}
