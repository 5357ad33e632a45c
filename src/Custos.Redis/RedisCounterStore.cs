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
}

/// <summary>
/// Counters in Redis (or any server that speaks its protocol and runs Lua), shared by every gateway node: the
/// reservation and the settlement of a request are each one Lua script, which Redis runs atomically, so the
/// all-or-nothing contract of <see cref="ICounterStore"/> holds across nodes as it does in one process.
/// </summary>
/// <remarks>
/// <para>
/// Layout, per counter key <c>K</c> (for example <c>acme|consumer|web|rate_limit.requests|29384756</c>):
/// a hash <c>{prefix}{acme}|consumer|web|…</c> with fields <c>used</c>, <c>reserved</c> and <c>end</c> (the window's end,
/// Unix milliseconds), and a sorted set beside it (<c>…|r</c>) holding one member per open reservation,
/// <c>amount:reservation:index</c>, scored by the reservation's deadline (now + <see cref="RedisCounterOptions.ReservationLease"/>).
/// Both keys carry <c>PEXPIREAT</c> at the window's end, so Redis forgets a counter when its window is over.
/// </para>
/// <para>
/// Unsettled reservations: the reservation script first takes back, from each counter it charges, the members
/// of the sorted set whose deadline has passed (their amounts leave <c>reserved</c>). The settlement removes its own
/// members; only if one was still there does it lower <c>reserved</c>, so a request that settles after its lease ran
/// out adds its use without taking back a reservation twice. Expiry is thus checked when a counter is next
/// charged, which is the only time it matters. A reservation whose caller stopped waiting (cancellation) may still
/// have been made; it is one of those and is taken back the same way.
/// </para>
/// <para>
/// Time: windows and leases are judged by the gateway's <see cref="TimeProvider"/> (a window whose <c>end</c> has
/// passed starts over), so node clocks should agree to well under a lease; <c>PEXPIREAT</c> by the server's clock only
/// frees memory.
/// </para>
/// <para>
/// Redis Cluster: a script may only touch keys of one hash slot. A request's counters all belong to one tenant (its
/// consumer, service and tenant scopes), so the tenant, the first segment of every key, is written as a hash tag
/// (<c>{acme}</c>) and each tenant's counters live in one slot. Single nodes and Sentinel need nothing of this.
/// </para>
/// </remarks>
public sealed class RedisCounterStore : ICounterStore
{
    // KEYS: hash and set per charge. ARGV: now (ms), deadline (ms), reservation; then per charge amount, limit, enforce, end (ms).
    // Returns { failed index or -1, used and reserved of each counter before the charge }.
    // The window's end and the expiry are written only to a hash that does not have them yet, and the set's expiry only
    // when the set is new (ZRANGE of its first member, which the lease check needs anyway, says whether it exists): each
    // key's window, and so its end, is part of its name, so a key that has them keeps them. That is 27 fewer writes per
    // request with nine counters, each of which Redis also sends to its AOF and replicas (docs/performance.md, "Fewer
    // writes per reservation").
    internal const string ReserveScript = """
        local now, deadline, id = tonumber(ARGV[1]), ARGV[2], ARGV[3]
        local count = #KEYS / 2
        local result, failed, newHash, newSet = {}, -1, {}, {}
        for i = 1, count do
          local counter, open, a = KEYS[2 * i - 1], KEYS[2 * i], 3 + (i - 1) * 4
          local amount, limit, enforce = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), ARGV[a + 3]
          local state = redis.call('HMGET', counter, 'used', 'reserved', 'end')
          local used, reserved = tonumber(state[1]) or 0, tonumber(state[2]) or 0
          newHash[i], newSet[i] = state[3] ~= ARGV[a + 4], false
          if state[3] and tonumber(state[3]) <= now then
            redis.call('DEL', counter, open)
            used, reserved = 0, 0
            newHash[i], newSet[i] = true, true
          else
            local first = redis.call('ZRANGE', open, 0, 0, 'WITHSCORES')
            if #first == 0 then
              newSet[i] = true
            elseif tonumber(first[2]) <= now then
              local lapsed = redis.call('ZRANGEBYSCORE', open, '-inf', now)
              local back = 0
              for _, member in ipairs(lapsed) do
                back = back + tonumber(string.match(member, '^(%d+):'))
              end
              redis.call('ZREMRANGEBYSCORE', open, '-inf', now)
              reserved = math.max(0, reserved - back)
              redis.call('HSET', counter, 'reserved', string.format('%d', reserved))
              newSet[i] = true -- it may have been emptied, and so removed
            end
          end
          result[2 * i], result[2 * i + 1] = used, reserved
          if failed < 0 and enforce == '1' and used + reserved + amount > limit then
            failed = i - 1
          end
        end
        result[1] = failed
        if failed >= 0 then
          return result
        end
        for i = 1, count do
          local counter, open, a = KEYS[2 * i - 1], KEYS[2 * i], 3 + (i - 1) * 4
          local amount, ends = ARGV[a + 1], ARGV[a + 4]
          redis.call('HINCRBY', counter, 'reserved', amount)
          if newHash[i] then
            redis.call('HSET', counter, 'end', ends)
            redis.call('PEXPIREAT', counter, ends)
          end
          redis.call('ZADD', open, deadline, amount .. ':' .. id .. ':' .. (i - 1))
          if newSet[i] then
            redis.call('PEXPIREAT', open, ends)
          end
        end
        return result
        """;

    // KEYS: hash and set per charge. ARGV: reservation; then per charge amount, actual.
    internal const string SettleScript = """
        local id = ARGV[1]
        for i = 1, #KEYS / 2 do
          local counter, open, a = KEYS[2 * i - 1], KEYS[2 * i], 1 + (i - 1) * 2
          if redis.call('EXISTS', counter) == 1 then
            if redis.call('ZREM', open, ARGV[a + 1] .. ':' .. id .. ':' .. (i - 1)) == 1 then
              if ARGV[a + 1] ~= '0' and redis.call('HINCRBY', counter, 'reserved', '-' .. ARGV[a + 1]) < 0 then
                redis.call('HSET', counter, 'reserved', 0)
              end
            end
            redis.call('HINCRBY', counter, 'used', ARGV[a + 2])
          end
        end
        return 0
        """;

    private static readonly byte[] ReserveHash = SHA1.HashData(Encoding.UTF8.GetBytes(ReserveScript));
    private static readonly byte[] SettleHash = SHA1.HashData(Encoding.UTF8.GetBytes(SettleScript));

    private readonly IDatabaseAsync _database;
    private readonly TimeProvider _time;
    private readonly RedisCounterOptions _options;

    /// <summary>Counters in <paramref name="database"/>, on the gateway's clock.</summary>
    public RedisCounterStore(IDatabaseAsync database, TimeProvider time, RedisCounterOptions? options = null)
    {
        _database = database;
        _time = time;
        _options = options ?? new RedisCounterOptions();
        if (_options.ReservationLease <= TimeSpan.Zero)
        {
            throw new ArgumentOutOfRangeException(nameof(options), "The reservation lease must be positive.");
        }
    }

    /// <inheritdoc/>
    public async ValueTask<int> TryReserveAsync(Guid reservation, IReadOnlyList<CounterCharge> charges, CounterReading[] readings,
        CancellationToken cancellationToken = default)
    {
        if (charges.Count == 0)
        {
            return -1;
        }

        var now = _time.GetUtcNow();
        var keys = Keys(charges);
        var values = new RedisValue[3 + charges.Count * 4];
        values[0] = now.ToUnixTimeMilliseconds();
        values[1] = (now + _options.ReservationLease).ToUnixTimeMilliseconds();
        values[2] = reservation.ToString("N");
        for (var i = 0; i < charges.Count; i++)
        {
            var charge = charges[i];
            ArgumentOutOfRangeException.ThrowIfNegative(charge.Amount);
            values[3 + i * 4] = charge.Amount;
            values[4 + i * 4] = charge.Limit;
            values[5 + i * 4] = charge.Enforce ? 1 : 0;
            values[6 + i * 4] = charge.ExpiresAt.ToUnixTimeMilliseconds();
        }

        var result = (RedisResult[])(await EvaluateAsync(ReserveHash, ReserveScript, keys, values, cancellationToken))!;
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

        var values = new RedisValue[1 + charges.Count * 2];
        values[0] = reservation.ToString("N");
        for (var i = 0; i < charges.Count; i++)
        {
            values[1 + i * 2] = charges[i].Amount;
            values[2 + i * 2] = actual[i];
        }

        await EvaluateAsync(SettleHash, SettleScript, Keys(charges), values, cancellationToken);
    }

    /// <summary>The hash and the set of reservations of each charge's counter, the tenant as hash tag.</summary>
    internal RedisKey[] Keys(IReadOnlyList<CounterCharge> charges)
    {
        var keys = new RedisKey[charges.Count * 2];
        for (var i = 0; i < charges.Count; i++)
        {
            var key = charges[i].Key;
            var tenant = key.IndexOf('|', StringComparison.Ordinal);
            var counter = tenant > 0
                ? $"{_options.KeyPrefix}{{{key.AsSpan(0, tenant)}}}{key.AsSpan(tenant)}"
                : _options.KeyPrefix + key;
            keys[i * 2] = counter;
            keys[i * 2 + 1] = counter + "|r";
        }

        return keys;
    }

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
