using System.Threading.Channels;
using Custos.Ledger;
using Microsoft.Extensions.Logging;

namespace Custos.Gateway.Ledger;

/// <summary>Sees every ledger batch once it is stored: detectors and metrics feed from the ledger, not from the request path.</summary>
public interface ILedgerObserver
{
    /// <summary>
    /// Called on the ledger's drain task with each stored batch, in order. Must return quickly: the next batch waits.
    /// The list is reused after the call returns; keep the records, not the list.
    /// </summary>
    void OnPersisted(IReadOnlyList<ChainedRecord> batch);
}

/// <summary>
/// The recording stage: a bounded queue in front of the store, drained by one task that seals records
/// into this node's hash chain and appends them in batches, one transaction per batch. Request threads
/// only enqueue. The queue is bounded, so memory is: once it is <see cref="IsBacklogged">seven-eighths full</see>
/// the data plane sheds new requests (503, and a record of that), and the last eighth absorbs the records of
/// requests already in flight. Should even that fill, the records of served requests wait for room
/// (back-pressure), and shed requests are counted into one <see cref="ShedRecord"/> written as soon as there is
/// room: nothing is dropped. <see cref="DisposeAsync"/> drains everything before returning.
/// </summary>
public sealed partial class LedgerWriter : IAsyncDisposable
{
    /// <summary>Records per transaction at most.</summary>
    public const int MaxBatch = 512;

    /// <summary>Default queue capacity: about 20 MB of records at most, and 1.5 s of a store stall at 5,000 requests/s.</summary>
    public const int DefaultCapacity = 8192;

    private readonly Channel<LedgerRecord> _queue;
    private readonly ILedgerStore _store;
    private readonly HashChain _chain;
    private readonly ILogger _logger;
    private readonly Task _drain;
    private readonly List<ChainedRecord> _batch = new(MaxBatch);
    private readonly int _shedAt;
    private long _enqueued;
    private long _transactions;
    private long _persisted;
    private int _failing;
    private readonly Lock _shedLock = new();
    private Dictionary<string, long>? _shed; // null while nothing is counted
    private DateTimeOffset _shedFirst;
    private DateTimeOffset _shedLast;
    private long _shedPolicyVersion;
    private TaskCompletionSource _progress = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private ILedgerObserver[] _observers = [];

    private LedgerWriter(ILedgerStore store, HashChain chain, int capacity, ILogger logger)
    {
        _store = store;
        _chain = chain;
        _logger = logger;
        Capacity = capacity;
        _shedAt = capacity - Math.Max(1, capacity / 8);
        _queue = Channel.CreateBounded<LedgerRecord>(new BoundedChannelOptions(capacity)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
        _drain = Task.Run(DrainAsync);
    }

    /// <summary>Continues this node's chain in <paramref name="store"/> and starts draining.</summary>
    public static async Task<LedgerWriter> StartAsync(ILedgerStore store, string chainId, ILogger logger, int capacity = DefaultCapacity,
        CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 2);
        var (seq, hash) = await store.GetChainHeadAsync(chainId, cancellationToken);
        return new LedgerWriter(store, new HashChain(chainId, seq, hash), capacity, logger);
    }

    /// <summary>Records appended to the store so far.</summary>
    public long Persisted => Interlocked.Read(ref _persisted);

    /// <summary>False while appends are failing (and being retried), or once the writer has stopped.</summary>
    public bool IsHealthy => !_drain.IsCompleted && Volatile.Read(ref _failing) == 0;

    /// <summary>Records waiting in the queue.</summary>
    public int Pending => _queue.Reader.Count;

    /// <summary>How many records the queue holds at most.</summary>
    public int Capacity { get; }

    /// <summary>True while the queue is seven-eighths full or more: new requests should be shed, not served.</summary>
    public bool IsBacklogged => _queue.Reader.Count >= _shedAt;

    /// <summary>
    /// Adds an observer that sees every batch once it is stored (detectors, metrics). Observers run on the drain task,
    /// in ledger order, one batch at a time: they must be quick and must not block.
    /// </summary>
    public void AddObserver(ILedgerObserver observer)
    {
        ArgumentNullException.ThrowIfNull(observer);
        lock (_shedLock)
        {
            _observers = [.. _observers, observer];
        }
    }

    /// <summary>Queues <paramref name="record"/>; completes at once unless the queue is full.</summary>
    public ValueTask EnqueueAsync(LedgerRecord record)
    {
        Interlocked.Increment(ref _enqueued);
        return _queue.Writer.TryWrite(record) ? ValueTask.CompletedTask : _queue.Writer.WriteAsync(record);
    }

    /// <summary>
    /// Queues the record of a shed request if there is room; otherwise counts it into the next <see cref="ShedRecord"/>.
    /// Never waits: shedding must stay cheap exactly when the gateway is overloaded.
    /// </summary>
    public void RecordShed(RequestRecord record)
    {
        if (_queue.Writer.TryWrite(record))
        {
            Interlocked.Increment(ref _enqueued);
            return;
        }

        lock (_shedLock)
        {
            if (_shed is null)
            {
                _shed = new Dictionary<string, long>(StringComparer.Ordinal);
                _shedFirst = record.Timestamp;
            }

            var reason = record.Reasons.Count > 0 ? record.Reasons[0] : "unknown";
            _shed[reason] = _shed.GetValueOrDefault(reason) + 1;
            _shedLast = record.Timestamp;
            _shedPolicyVersion = record.PolicyVersion;
        }
    }

    /// <summary>Takes the shed requests counted so far as one record, or null when there are none.</summary>
    private ShedRecord? TakeShedSummary()
    {
        lock (_shedLock)
        {
            if (_shed is null)
            {
                return null;
            }

            var summary = new ShedRecord
            {
                Timestamp = _shedLast,
                First = _shedFirst,
                NodeId = _chain.ChainId,
                Reasons = _shed,
                PolicyVersion = _shedPolicyVersion,
            };
            _shed = null;
            return summary;
        }
    }

    /// <summary>Waits until every record queued before this call is in the store.</summary>
    public Task FlushAsync(CancellationToken cancellationToken = default)
        => WaitForPersistedAsync(Interlocked.Read(ref _enqueued), cancellationToken);

    /// <summary>Waits until at least <paramref name="count"/> records have been stored since start.</summary>
    public async Task WaitForPersistedAsync(long count, CancellationToken cancellationToken = default)
    {
        while (true)
        {
            // Take the signal before checking, so a batch stored in between is never missed.
            var progress = Volatile.Read(ref _progress).Task;
            if (Interlocked.Read(ref _persisted) >= count)
            {
                return;
            }

            if (_drain.IsCompleted)
            {
                await _drain; // surfaces a fault instead of waiting forever
                throw new InvalidOperationException($"The ledger writer has stopped with {Persisted} of {count} records stored.");
            }

            await progress.WaitAsync(cancellationToken);
        }
    }

    private async Task DrainAsync()
    {
        var reader = _queue.Reader;
        while (await reader.WaitToReadAsync())
        {
            while (_batch.Count < MaxBatch && reader.TryRead(out var record))
            {
                _batch.Add(_chain.Append(record));
            }

            // Requests shed while the queue was full are sealed right after the records that were ahead of them.
            if (_batch.Count < MaxBatch && TakeShedSummary() is { } summary)
            {
                Interlocked.Increment(ref _enqueued);
                _batch.Add(_chain.Append(summary));
            }

            await AppendWithRetryAsync();
            Notify();
            Interlocked.Add(ref _persisted, _batch.Count);
            _transactions++;
            _batch.Clear();
            Interlocked.Exchange(ref _progress, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();
        }
    }

    private void Notify()
    {
        foreach (var observer in Volatile.Read(ref _observers))
        {
            try
            {
                observer.OnPersisted(_batch);
            }
            catch (Exception ex)
            {
                // An observer's fault must never stop the ledger.
                Log.ObserverFailed(_logger, observer.GetType().Name, ex);
            }
        }
    }

    private async Task AppendWithRetryAsync()
    {
        // A failed append keeps its batch, already chained, and retries it: nothing is dropped or reordered.
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await _store.AppendAsync(_batch);
                Volatile.Write(ref _failing, 0);
                return;
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                Volatile.Write(ref _failing, 1);
                Log.AppendFailed(_logger, _batch.Count, attempt, ex);
                await Task.Delay(TimeSpan.FromMilliseconds(Math.Min(5000, 50 * attempt * attempt)));
            }
        }
    }

    /// <summary>Stops accepting records and waits until all queued ones are stored.</summary>
    public async ValueTask DisposeAsync()
    {
        if (TakeShedSummary() is { } summary)
        {
            await EnqueueAsync(summary);
        }

        _queue.Writer.TryComplete();
        await _drain;
        Log.Drained(_logger, Persisted, _transactions, _chain.ChainId, _chain.LastSeq);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 102, Level = LogLevel.Error, Message = "Ledger observer {Observer} failed on a batch; the batch is stored.")]
        public static partial void ObserverFailed(ILogger logger, string observer, Exception exception);

        [LoggerMessage(EventId = 100, Level = LogLevel.Error, Message = "Appending {Count} ledger records failed (attempt {Attempt}); retrying.")]
        public static partial void AppendFailed(ILogger logger, int count, int attempt, Exception exception);

        [LoggerMessage(EventId = 101, Level = LogLevel.Information, Message = "Ledger drained: {Persisted} records stored this run in {Transactions} transactions; chain {ChainId} at seq {Seq}.")]
        public static partial void Drained(ILogger logger, long persisted, long transactions, string chainId, long seq);
    }
}
