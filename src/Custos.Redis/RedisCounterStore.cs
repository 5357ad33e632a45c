using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;
using Custos.Controls;
using StackExchange.Redis;

namespace Custos.Redis;

/// <summary>Settings of <see cref="RedisCounterStore"/>.</summary>
public sealed record RedisCounterOptions
{
    /// <summary>Put before every key, so that several deployments can share one server. Default <c>custos:</c>.</summary>
    public string KeyPrefix { get; init; } = "custos:";

    /// <summary>
    /// How long a reservation may stay unsettled before the counters take it back, as if its request had used
    /// nothing. Longer than any request may run, streaming included; a request that settles later still adds its
    /// use. Default 15 minutes.
    /// </summary>
    public TimeSpan ReservationLease { get; init; } = TimeSpan.FromMinutes(15);

    /// <summary>
    /// One reservation in this many also takes back the lapsed reservations that nodes of a version before
    /// 2026-11-30 left beside each counter (see <see cref="RedisCounterStore"/>); 0 never. Default 64.
    /// </summary>
    public int LegacySweepEvery { get; init; } = 64;
}

/// <summary>
/// Counters in Redis (or any server that speaks its protocol and runs Lua), shared by every gateway node: the
/// reservation and the settlement of a request are each one Lua script, which Redis runs atomically, so the
/// all-or-nothing contract of <see cref="ICounterStore"/> holds across nodes as it does in one process.
/// </summary>
/// <remarks>
/// <para>
/// Layout. Per counter key <c>K</c> (for example <c>acme|consumer|web|rate_limit.requests|29384756</c>), a hash
/// <c>{prefix}{acme}|consumer|web|…</c> with fields <c>used</c>, <c>reserved</c> and <c>end</c> (the window's end, Unix
/// milliseconds), carrying <c>PEXPIREAT</c> at the window's end, so Redis forgets a counter when its window is over.
/// Per tenant, the open reservations: a sorted set <c>{prefix}{acme}|leases</c> of reservation ids scored by their
/// deadline (now + <see cref="RedisCounterOptions.ReservationLease"/>), and a hash <c>{prefix}{acme}|leases|held</c>
/// saying what each one holds, one line per counter: <c>amount end key</c>. Final charges (<see cref="CounterCharge.Final"/>:
/// a request's request counters) go to <c>used</c> when reserved and are not held; a reservation of final charges only
/// is not recorded, and its settlement does not run. Nodes of earlier versions reserved them as they reserve the
/// others and settled them to the same amount, so nodes of both kinds share the counters during a rolling upgrade.
/// </para>
/// <para>
/// Unsettled reservations: the reservation script first takes back the tenant's reservations whose deadline has passed,
/// up to 256 at a time (their amounts leave <c>reserved</c> of each counter they held that is still in the same window). The settlement removes its own
/// reservation; only if it was still there does it lower <c>reserved</c>, so a request that settles after its lease ran
/// out adds its use without taking back a reservation twice. Expiry is thus checked when the tenant next reserves. The
/// reservations taken back are remembered for one more lease in a sorted set <c>{prefix}{acme}|leases|lapsed</c>
/// (scored by when they are forgotten; the key expires a lease after the last one), and a settlement adds its use only
/// if its reservation is open or there: a reservation settles once, so a settlement sent again (one that timed out in
/// a stalled Redis, which ran it on resuming, replayed by <c>ResilientCounterStore</c>) changes nothing. A
/// reservation whose caller stopped waiting (cancellation) may still have been made; it is one of those and is taken
/// back the same way.
/// </para>
/// <para>
/// Before 2026-11-30 the open reservations were a sorted set beside each counter (<c>…|r</c>, members
/// <c>amount:reservation:index</c>): four commands per counter to reserve and four to settle, where this layout needs
/// two and two (docs/performance.md, "The shared counters: a third less work per request in Redis"). The counters
/// themselves are unchanged, so nodes of both versions share them during a rolling upgrade, each settling its own
/// reservations. Every <see cref="RedisCounterOptions.LegacySweepEvery"/>th reservation also takes back the lapsed
/// members of the old sets, which only a node of the old version that died before settling leaves behind.
/// </para>
/// <para>
/// Time: windows and leases are judged by the gateway's <see cref="TimeProvider"/> (a window whose <c>end</c> has
/// passed starts over), so node clocks should agree to well under a lease; <c>PEXPIREAT</c> by the server's clock only
/// frees memory.
/// </para>
/// <para>
/// Redis Cluster: a script may only touch keys of one hash slot. A request's counters all belong to one tenant (its
/// consumer, service and tenant scopes), so the tenant, the first segment of every key, is written as a hash tag
/// (<c>{acme}</c>) and each tenant's counters and reservations live in one slot. Single nodes and Sentinel need nothing
/// of this.
/// </para>
/// </remarks>
public sealed class RedisCounterStore : ICounterStore, ISeededCounterStore
{
    // KEYS: each charge's counter hash, then the tenant's leases, held and lapsed, then (sweeping) each charge's old set.
    // ARGV: now (ms), deadline (ms), reservation, sweep ('1' or '0'); then per charge amount, limit, flags, end (ms),
    // flags a digit: 1 to enforce the limit, plus 2 for a final charge (added to used at once, not held by the reservation).
    // Returns { failed index or -1, used and reserved of each counter before the charge }. A reservation of final
    // charges only holds nothing, and is not recorded among the tenant's leases.
    // The window's end and the expiry are written only to a hash that does not have them yet: each key's window, and
    // so its end, is part of its name, so a key that has them keeps them.
    // The lapsed reservations taken back are remembered for a lease in the tenant's lapsed set (scored by when they are
    // forgotten), so that their request's settlement, if it still comes, adds its use once (see SettleScript).
    internal const string ReserveScript = """
        local now, deadline, id, sweep = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4] == '1'
        local count = sweep and (#KEYS - 3) / 2 or #KEYS - 3
        local leases, held, gone = KEYS[count + 1], KEYS[count + 2], KEYS[count + 3]
        local first = redis.call('ZRANGE', leases, 0, 0, 'WITHSCORES')
        if #first > 0 and tonumber(first[2]) <= now then
          local lapsed = redis.call('ZRANGEBYSCORE', leases, '-inf', now, 'LIMIT', 0, 256)
          local holding = redis.call('HMGET', held, unpack(lapsed))
          for j = 1, #lapsed do
            for amount, ends, key in string.gmatch(holding[j] or '', '(%d+) (%d+) ([^\n]+)') do
              if redis.call('HGET', key, 'end') == ends and redis.call('HINCRBY', key, 'reserved', '-' .. amount) < 0 then
                redis.call('HSET', key, 'reserved', 0)
              end
            end
          end
          redis.call('ZREM', leases, unpack(lapsed))
          redis.call('HDEL', held, unpack(lapsed))
          redis.call('ZREMRANGEBYSCORE', gone, '-inf', now)
          for j = 1, #lapsed do
            redis.call('ZADD', gone, deadline, lapsed[j])
          end
          redis.call('PEXPIREAT', gone, deadline)
        end
        if sweep then
          for i = 1, count do
            local counter, old = KEYS[i], KEYS[count + 3 + i]
            local oldest = redis.call('ZRANGE', old, 0, 0, 'WITHSCORES')
            if #oldest > 0 and tonumber(oldest[2]) <= now then
              local back = 0
              for _, member in ipairs(redis.call('ZRANGEBYSCORE', old, '-inf', now)) do
                back = back + tonumber(string.match(member, '^(%d+):'))
              end
              redis.call('ZREMRANGEBYSCORE', old, '-inf', now)
              if redis.call('EXISTS', counter) == 1 and redis.call('HINCRBY', counter, 'reserved', string.format('-%d', back)) < 0 then
                redis.call('HSET', counter, 'reserved', 0)
              end
            end
          end
        end
        local result, failed, new = {}, -1, {}
        for i = 1, count do
          local counter, a = KEYS[i], 4 + (i - 1) * 4
          local amount, limit, flags = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), ARGV[a + 3]
          local state = redis.call('HMGET', counter, 'used', 'reserved', 'end')
          local used, reserved = tonumber(state[1]) or 0, tonumber(state[2]) or 0
          new[i] = state[3] ~= ARGV[a + 4]
          if state[3] and tonumber(state[3]) <= now then
            redis.call('DEL', counter)
            used, reserved, new[i] = 0, 0, true
          end
          result[2 * i], result[2 * i + 1] = used, reserved
          if failed < 0 and (flags == '1' or flags == '3') and used + reserved + amount > limit then
            failed = i - 1
          end
        end
        result[1] = failed
        if failed >= 0 then
          return result
        end
        local holding = {}
        for i = 1, count do
          local counter, a = KEYS[i], 4 + (i - 1) * 4
          local amount, ends = ARGV[a + 1], ARGV[a + 4]
          if ARGV[a + 3] >= '2' then
            redis.call('HINCRBY', counter, 'used', amount)
          else
            redis.call('HINCRBY', counter, 'reserved', amount)
            holding[#holding + 1] = amount .. ' ' .. ends .. ' ' .. counter
          end
          if new[i] then
            redis.call('HSET', counter, 'end', ends)
            redis.call('PEXPIREAT', counter, ends)
          end
        end
        if #holding > 0 then
          redis.call('ZADD', leases, deadline, id)
          redis.call('HSET', held, id, table.concat(holding, '\n'))
        end
        return result
        """;

    // KEYS: each charge's counter hash, then the tenant's leases, held and lapsed. ARGV: reservation; then per charge
    // amount, actual. Returns 1 when it settled, 0 when there was nothing to settle.
    // A reservation settles once: while its lease is open (reserved drops, used grows), or once after its lease ran out
    // and the reservation script took it back (it is in the lapsed set: used grows). One in neither was settled already,
    // so a settlement sent again (its first attempt timed out in a stalled Redis, which ran it on resuming, and the node
    // replayed it) changes nothing.
    // A counter whose window ended while its request ran is gone (expired); an increment would make it again, without
    // its end or expiry, so one that comes back from nothing is looked at and, if it lacks its end, deleted.
    internal const string SettleScript = """
        local id = ARGV[1]
        local count = #KEYS - 3
        local open = redis.call('ZREM', KEYS[count + 1], id) == 1
        if open then
          redis.call('HDEL', KEYS[count + 2], id)
        elseif redis.call('ZREM', KEYS[count + 3], id) == 0 then
          return 0
        end
        for i = 1, count do
          local counter, a = KEYS[i], 1 + (i - 1) * 2
          local amount, actual = ARGV[a + 1], ARGV[a + 2]
          if open then
            local reserved = amount ~= '0' and redis.call('HINCRBY', counter, 'reserved', '-' .. amount)
            local used = actual ~= '0' and redis.call('HINCRBY', counter, 'used', actual)
            if (reserved and reserved < 0) or (not reserved and used == tonumber(actual)) then
              if redis.call('HEXISTS', counter, 'end') == 0 then
                redis.call('DEL', counter)
              elseif reserved and reserved < 0 then
                redis.call('HSET', counter, 'reserved', 0)
              end
            end
          elseif actual ~= '0' and redis.call('EXISTS', counter) == 1 then
            redis.call('HINCRBY', counter, 'used', actual)
          end
        end
        return 1
        """;

    // KEYS: each charge's counter hash, then the tenant's leases, held and lapsed. ARGV: reservation, '1' when a charge is
    // held (not final) or '0'; then per charge amount, flags (2 for a final charge, else 0), end (ms).
    // Undoes a reservation that may or may not have run (its caller timed out). One that holds something ran if and only
    // if its lease is still open: then what it held leaves reserved and its final charges leave used; else nothing (one
    // already taken back leaves the lapsed set, so that no settlement adds its use later). One
    // of final charges only leaves no lease to tell by, so its final charges leave used if their counter is in the same
    // window (the caller releases only a reservation that was sent; see ICounterStore.ReleaseAsync).
    internal const string ReleaseScript = """
        local id, holds = ARGV[1], ARGV[2] == '1'
        local count = #KEYS - 3
        local open = redis.call('ZREM', KEYS[count + 1], id) == 1
        if open then
          redis.call('HDEL', KEYS[count + 2], id)
        elseif holds then
          redis.call('ZREM', KEYS[count + 3], id)
          return 0
        end
        for i = 1, count do
          local counter, a = KEYS[i], 2 + (i - 1) * 3
          local amount, field = ARGV[a + 1], ARGV[a + 2] == '2' and 'used' or 'reserved'
          if amount ~= '0' and redis.call('HGET', counter, 'end') == ARGV[a + 3] and redis.call('HINCRBY', counter, field, '-' .. amount) < 0 then
            redis.call('HSET', counter, field, 0)
          end
        end
        return 1
        """;

    // KEYS: one counter hash. ARGV: used by the ledger's count, the window's end (ms), now (ms). Raises used to the
    // ledger's count where it is lower, making the counter with its end and expiry when Redis has none. Returns 1 when
    // it raised it, else 0 (a window over, or a counter that holds as much already).
    internal const string SeedScript = """
        local seed, ends = tonumber(ARGV[1]), ARGV[2]
        if tonumber(ends) <= tonumber(ARGV[3]) or seed <= (tonumber(redis.call('HGET', KEYS[1], 'used')) or 0) then
          return 0
        end
        redis.call('HSET', KEYS[1], 'used', seed)
        if redis.call('HSETNX', KEYS[1], 'end', ends) == 1 then
          redis.call('PEXPIREAT', KEYS[1], ends)
        end
        return 1
        """;

    private static readonly byte[] ReserveHash = SHA1.HashData(Encoding.UTF8.GetBytes(ReserveScript));
    private static readonly byte[] SettleHash = SHA1.HashData(Encoding.UTF8.GetBytes(SettleScript));
    private static readonly byte[] ReleaseHash = SHA1.HashData(Encoding.UTF8.GetBytes(ReleaseScript));
    private static readonly byte[] SeedHash = SHA1.HashData(Encoding.UTF8.GetBytes(SeedScript));

    private readonly IDatabaseAsync _database;
    private readonly TimeProvider _time;
    private readonly RedisCounterOptions _options;
    private readonly ConditionalWeakTable<string, Stored> _stored = new();
    private readonly ConditionalWeakTable<string, Stored>.CreateValueCallback _store;
    private int _reservations;

    /// <summary>Counters in <paramref name="database"/>, on the gateway's clock.</summary>
    public RedisCounterStore(IDatabaseAsync database, TimeProvider time, RedisCounterOptions? options = null)
    {
        _database = database;
        _time = time;
        _options = options ?? new RedisCounterOptions();
        _store = Store;
        if (_options.ReservationLease <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(options), "The reservation lease must be positive.");
        }

        if (database.Multiplexer is { } connection)
        {
            connection.ConnectionRestored += (_, e) =>
            {
                if (e.ConnectionType == ConnectionType.Interactive)
                {
                    Reconnected?.Invoke();
                }
            };
        }
    }

    /// <summary>
    /// The marker that says the counters were seeded from the ledger since Redis last started with nothing:
    /// <c>{prefix}seeded</c>, holding when and without expiry, so Redis loses it only with the counters.
    /// </summary>
    public RedisKey SeededMarker => _options.KeyPrefix + "seeded";

    /// <inheritdoc/>
    public event Action? Reconnected;

    /// <inheritdoc/>
    /// <remarks>One <c>SET NX</c>: of several nodes that find the marker missing at once, one sets it and seeds.</remarks>
    public Task<bool> ClaimSeedingAsync(CancellationToken cancellationToken = default)
        => _database.StringSetAsync(SeededMarker, _time.GetUtcNow().ToString("O", System.Globalization.CultureInfo.InvariantCulture), when: When.NotExists)
            .WaitAsync(cancellationToken);

    /// <inheritdoc/>
    /// <remarks>One script per counter, all sent at once (pipelined); each runs alone in Redis, so a reservation between two finds either the old or the raised count.</remarks>
    public async Task<int> SeedAsync(IReadOnlyList<CounterSeed> seeds, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(seeds);
        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        var sent = new Task<RedisResult>[seeds.Count];
        for (var i = 0; i < seeds.Count; i++)
        {
            var seed = seeds[i];
            sent[i] = EvaluateAsync(SeedHash, SeedScript, [StoredKeys(seed.Key).Counter], [seed.Used, seed.End.ToUnixTimeMilliseconds(), now], cancellationToken);
        }

        var raised = 0;
        foreach (var result in await Task.WhenAll(sent))
        {
            raised += (int)result;
        }

        return raised;
    }

    /// <inheritdoc/>
    public async ValueTask<int> TryReserveAsync(Guid reservation, IReadOnlyList<CounterCharge> charges, CounterReading[] readings,
        CancellationToken cancellationToken = default)
    {
        if (charges.Count == 0)
        {
            return -1;
        }

        var sweep = _options.LegacySweepEvery > 0 && (uint)Interlocked.Increment(ref _reservations) % (uint)_options.LegacySweepEvery == 0;
        var now = _time.GetUtcNow();
        var keys = Keys(charges, sweep);
        var values = new RedisValue[4 + charges.Count * 4];
        values[0] = now.ToUnixTimeMilliseconds();
        values[1] = (now + _options.ReservationLease).ToUnixTimeMilliseconds();
        values[2] = reservation.ToString("N");
        values[3] = sweep ? 1 : 0;
        for (var i = 0; i < charges.Count; i++)
        {
            var charge = charges[i];
            ArgumentOutOfRangeException.ThrowIfNegative(charge.Amount);
            values[4 + i * 4] = charge.Amount;
            values[5 + i * 4] = charge.Limit;
            values[6 + i * 4] = (charge.Enforce ? 1 : 0) | (charge.Final ? 2 : 0);
            values[7 + i * 4] = charge.ExpiresAt.ToUnixTimeMilliseconds();
        }

        RedisResult[] result;
        try
        {
            result = (RedisResult[])(await EvaluateAsync(ReserveHash, ReserveScript, keys, values, cancellationToken))!;
        }
        catch (Exception error) when (NotSent(error))
        {
            throw new CounterStoreNotReachedException(error.Message, error);
        }

        for (var i = 0; i < charges.Count; i++)
        {
            readings[i] = new CounterReading((long)result[1 + i * 2], (long)result[2 + i * 2]);
        }

        return (int)result[0];
    }

    /// <inheritdoc/>
    public async ValueTask SettleAsync(Guid reservation, IReadOnlyList<CounterCharge> charges, IReadOnlyList<long> actual,
        CancellationToken cancellationToken = default)
    {
        if (charges.Count == 0)
        {
            return;
        }

        // Final charges were counted when reserved and are not held by the reservation: only the others are settled.
        var keys = Keys(charges, sweep: false, heldOnly: true);
        var held = keys.Length - 3;
        if (held == 0)
        {
            return;
        }

        var values = new RedisValue[1 + held * 2];
        values[0] = reservation.ToString("N");
        for (int i = 0, j = 0; i < charges.Count; i++)
        {
            if (!charges[i].Final)
            {
                values[1 + j * 2] = charges[i].Amount;
                values[2 + j * 2] = actual[i];
                j++;
            }
        }

        await EvaluateAsync(SettleHash, SettleScript, keys, values, cancellationToken);
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Exact for a reservation that holds something (a token or cost charge): its lease says whether it was made. A
    /// reservation of final charges only (request counters) leaves nothing to tell by, so its charges are given back
    /// if their counters are still in the same window; the caller releases only a reservation that was sent
    /// (<see cref="CounterStoreNotReachedException"/> says one was not), which Redis runs unless it fails first.
    /// </remarks>
    public async ValueTask ReleaseAsync(Guid reservation, IReadOnlyList<CounterCharge> charges, CancellationToken cancellationToken = default)
    {
        if (charges.Count == 0)
        {
            return;
        }

        var keys = Keys(charges, sweep: false);
        var values = new RedisValue[2 + charges.Count * 3];
        values[0] = reservation.ToString("N");
        values[1] = 0;
        for (var i = 0; i < charges.Count; i++)
        {
            var charge = charges[i];
            values[1] = charge.Final ? values[1] : 1;
            values[2 + i * 3] = charge.Amount;
            values[3 + i * 3] = charge.Final ? 2 : 0;
            values[4 + i * 3] = charge.ExpiresAt.ToUnixTimeMilliseconds();
        }

        await EvaluateAsync(ReleaseHash, ReleaseScript, keys, values, cancellationToken);
    }

    /// <summary>True when <paramref name="error"/> says the command never left this process (no connection).</summary>
    private static bool NotSent(Exception error) => error switch
    {
        RedisConnectionException connection => connection.CommandStatus is CommandStatus.WaitingToBeSent or CommandStatus.WaitingInBacklog,
        RedisTimeoutException timeout => timeout.Commandstatus is CommandStatus.WaitingToBeSent or CommandStatus.WaitingInBacklog,
        _ => false,
    };

    /// <summary>
    /// Each charge's counter hash (only those a reservation holds, not the final ones, with <paramref name="heldOnly"/>),
    /// then the tenant's open reservations (<c>leases</c>), what they hold (<c>held</c>) and the ones taken back after their
    /// lease (<c>lapsed</c>), then, to
    /// <paramref name="sweep"/>, each counter's set of the layout before 2026-11-30. The tenant of the first charge is
    /// the hash tag of all of them.
    /// </summary>
    internal RedisKey[] Keys(IReadOnlyList<CounterCharge> charges, bool sweep, bool heldOnly = false)
    {
        var count = charges.Count;
        if (heldOnly)
        {
            foreach (var charge in charges)
            {
                count -= charge.Final ? 1 : 0;
            }
        }

        var keys = new RedisKey[sweep ? count * 2 + 3 : count + 3];
        for (int i = 0, j = 0; i < charges.Count; i++)
        {
            if (heldOnly && charges[i].Final)
            {
                continue;
            }

            var stored = StoredKeys(charges[i].Key);
            keys[j] = stored.Counter;
            if (sweep)
            {
                keys[count + 3 + j] = stored.Counter + "|r";
            }

            j++;
        }

        var tenant = StoredKeys(charges[0].Key);
        keys[count] = tenant.Leases;
        keys[count + 1] = tenant.Held;
        keys[count + 2] = tenant.Lapsed;
        return keys;
    }

    /// <summary>
    /// The Redis keys of counter key <paramref name="key"/>, its tenant (the first segment) as hash tag. A counter key is
    /// one string for its whole window (<see cref="CounterKeys"/>), so these are formatted once a window, not twice a
    /// request; they go when the window's key does.
    /// </summary>
    private Stored StoredKeys(string key) => _stored.GetValue(key, _store);

    private Stored Store(string key)
    {
        var prefix = _options.KeyPrefix;
        var tenant = key.IndexOf('|', StringComparison.Ordinal);
        var tag = tenant > 0 ? $"{prefix}{{{key.AsSpan(0, tenant)}}}" : prefix;
        var leases = tag + "|leases";
        return new Stored(tenant > 0 ? string.Concat(tag, key.AsSpan(tenant)) : prefix + key, leases, leases + "|held", leases + "|lapsed");
    }

    private sealed record Stored(string Counter, string Leases, string Held, string Lapsed);

    /// <summary>EVALSHA; the script's text only when the server does not know it yet (first use, restart, failover).</summary>
    private async Task<RedisResult> EvaluateAsync(byte[] hash, string script, RedisKey[] keys, RedisValue[] values, CancellationToken cancellationToken)
    {
        try
        {
            return await _database.ScriptEvaluateAsync(hash, keys, values).WaitAsync(cancellationToken);
        }
        catch (RedisServerException error) when (error.Message.StartsWith("NOSCRIPT", StringComparison.Ordinal))
        {
            return await _database.ScriptEvaluateAsync(script, keys, values).WaitAsync(cancellationToken);
        }
    }
}
