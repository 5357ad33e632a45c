using System.Threading.RateLimiting;

namespace Custos.Gateway.Admin;

/// <summary>
/// Bounds how many of the admin API's heavy reads (the console's overview, incident packs, the posture report) one node
/// builds at once. Each reads the ledger of its window on one of the gateway's own threads for as long as that takes
/// (10–28 s over 743,441 entries), so several at once take the cores that model requests run on. At most
/// <c>gateway.max_concurrent_reports</c> run (policy; default <see cref="DefaultLimit"/>); up to
/// <see cref="QueueLimit"/> more wait their turn, oldest first; beyond that a read is refused at once with 429
/// <c>admin.busy</c> and a <c>Retry-After</c>.
/// </summary>
internal sealed class AdminReadGate
{
    /// <summary>Heavy reads one node builds at once when the policy does not say.</summary>
    public const int DefaultLimit = 2;

    /// <summary>Heavy reads that may wait for a turn; beyond, they are refused.</summary>
    public const int QueueLimit = 8;

    /// <summary>The seconds a refused read is told to wait (<c>Retry-After</c>).</summary>
    public const int RetryAfterSeconds = 5;

    private readonly Lock _lock = new();
    private Turns? _turns;

    /// <summary>Reads waiting for a turn now.</summary>
    public long Queued => Volatile.Read(ref _turns)?.Limiter.GetStatistics()?.CurrentQueuedCount ?? 0;

    /// <summary>
    /// Waits for a turn under the limit in force, <paramref name="limit"/>. The lease
    /// returned is the turn: dispose it when the read is done. When the queue is full, the lease is not acquired.
    /// A new limit applies to the reads that ask after it; those already running or waiting finish under the old one.
    /// </summary>
    public ValueTask<RateLimitLease> EnterAsync(int limit, CancellationToken cancellationToken)
        => TurnsOf(limit).AcquireAsync(1, cancellationToken);

    /// <summary>
    /// Runs <paramref name="read"/> on a thread of its own, outside the thread pool. A heavy read keeps its thread busy
    /// for as long as it reads (the embedded store's reads complete synchronously); on the pool, two of them held both
    /// threads a two-core machine starts with, and model requests queued behind them until the pool added threads.
    /// </summary>
    public static Task<T> RunAsync<T>(Func<Task<T>> read)
        => Task.Factory.StartNew(() => read().GetAwaiter().GetResult(), CancellationToken.None,
            TaskCreationOptions.LongRunning | TaskCreationOptions.DenyChildAttach, TaskScheduler.Default);

    private ConcurrencyLimiter TurnsOf(int limit)
    {
        if (Volatile.Read(ref _turns) is { } turns && turns.Limit == limit)
        {
            return turns.Limiter;
        }

        lock (_lock)
        {
            if (_turns is null || _turns.Limit != limit)
            {
                Volatile.Write(ref _turns, new Turns(limit, new ConcurrencyLimiter(new ConcurrencyLimiterOptions
                {
                    PermitLimit = limit,
                    QueueLimit = QueueLimit,
                    QueueProcessingOrder = QueueProcessingOrder.OldestFirst,
                })));
            }

            return _turns!.Limiter;
        }
    }

    private sealed record Turns(int Limit, ConcurrencyLimiter Limiter);
}
