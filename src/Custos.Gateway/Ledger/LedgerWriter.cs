using System.Collections.Concurrent;
using System.Diagnostics;
using System.Threading.Channels;
using System.Threading.Tasks.Sources;
using Custos.Ledger;
using Microsoft.Extensions.Logging;

namespace Custos.Gateway.Ledger;

/// <summary>Sees every ledger batch once it is stored: detectors and metrics feed from the ledger, not from the request path.</summary>
public interface ILedgerObserver
{
    /// <summary>
    /// Called on the ledger's drain task with each durable batch (stored, or spooled while the store is away), in order.
    /// Must return quickly: the next batch waits. The list is reused after the call returns; keep the records, not the list.
    /// </summary>
    void OnPersisted(IReadOnlyList<ChainedRecord> batch);
}

/// <summary>How a <see cref="LedgerWriter"/> runs.</summary>
public sealed record LedgerWriterOptions
{
    /// <summary>How many records the queue holds at most. Default <see cref="LedgerWriter.DefaultCapacity"/>.</summary>
    public int Capacity { get; init; } = LedgerWriter.DefaultCapacity;

    /// <summary>
    /// The local spool's folder (each chain gets a subfolder): where batches go, flushed to disk, while the store does
    /// not answer. Null: no spool; records then wait in memory until the store answers, and new requests are refused
    /// meanwhile.
    /// </summary>
    public string? SpoolDirectory { get; init; }

    /// <summary>Pause between the two attempts to append a batch before it is spooled. Default 100 ms.</summary>
    public TimeSpan RetryDelay { get; init; } = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// An append (or chain-head read) the store has not answered after this long counts as failed; should it commit
    /// later, nothing is stored twice (the next attempt reads the chain head first). Default 5 s.
    /// </summary>
    public TimeSpan AppendTimeout { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>How often the store is tried again while records are spooled, or while nothing accepts them. Default 1 s.</summary>
    public TimeSpan RetryInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// How long <see cref="LedgerWriter.DisposeAsync"/> keeps trying to move the spool into the store (and, should even the
    /// spool refuse writes, to store what is queued) before it stops anyway. Default 10 s.
    /// </summary>
    public TimeSpan StopTimeout { get; init; } = TimeSpan.FromSeconds(10);
}

/// <summary>A store's chain and this node's records do not fit together: another writer uses the chain id, or the store lost entries.</summary>
/// <param name="message">What does not fit.</param>
public sealed class LedgerChainConflictException(string message) : InvalidOperationException(message);

/// <summary>
/// The recording stage: a bounded queue in front of the store, drained by one task that seals records into this
/// node's hash chain and appends them in batches, one transaction per batch. Request threads enqueue, and wait with
/// <see cref="RecordAsync"/> until their record is durable: concurrent requests share one commit (group commit).
/// <para>
/// When the store fails (twice within about 100 ms, or does not answer within <see cref="LedgerWriterOptions.AppendTimeout"/>),
/// the already-chained batch goes to the local spool (<see cref="LedgerWriterOptions.SpoolDirectory"/>), flushed to disk,
/// and counts as durable; so do later batches while anything is spooled, keeping the order. Every
/// <see cref="LedgerWriterOptions.RetryInterval"/> the store is tried again, and the spool is moved into it in order,
/// segment by segment, deleting a segment only once all of it is committed. When neither the store nor the spool accepts
/// records the writer is not <see cref="IsHealthy">healthy</see>: the data plane refuses new requests, and requests in
/// flight wait.
/// </para>
/// <para>
/// The queue is bounded, so memory is: once it is <see cref="IsBacklogged">seven-eighths full</see> the data plane sheds
/// new requests (503, and a record of that), and the last eighth absorbs the records of requests already in flight.
/// Should even that fill, the records of served requests wait for room (back-pressure), and shed requests are counted
/// into one <see cref="ShedRecord"/> written as soon as there is room: nothing is dropped. <see cref="DisposeAsync"/>
/// stores or spools everything queued before returning.
/// </para>
/// </summary>
public sealed partial class LedgerWriter : IAsyncDisposable
{
    /// <summary>Records per transaction at most.</summary>
    public const int MaxBatch = 512;

    /// <summary>Default queue capacity: about 20 MB of records at most, and 1.5 s of a store stall at 5,000 requests/s.</summary>
    public const int DefaultCapacity = 8192;

    private const int MaxPooledWaits = 4096;

    /// <summary>While the queue has records, a spool drain gives the next batch its turn after this long.</summary>
    private static readonly TimeSpan DrainSlice = TimeSpan.FromMilliseconds(100);

    private readonly Channel<Entry> _queue;
    private readonly ILedgerStore _store;
    private readonly string _chainId;
    private readonly LedgerWriterOptions _options;
    private readonly LedgerSpool? _spool;
    private readonly ILogger _logger;
    private readonly List<DurableWait> _waits = new(MaxBatch);
    private readonly ConcurrentQueue<DurableWait> _pool = new();
    private readonly int _shedAt;
    private readonly Lock _shedLock = new();
    private readonly Func<Task> _appendBatch; // appends _appending: one delegate for the writer's life
    private List<ChainedRecord>? _appending; // the batch _appendBatch appends; replaced only while no append runs
    private HashChain _chain = null!;
    private Task _drain = Task.CompletedTask;
    private List<ChainedRecord> _batch = new(MaxBatch);
    private bool _batchDonated; // a timed-out append still reads _batch: the next batch gets a new list
    private CanonicalArena _arena = new(); // the batch's canonical bytes
    private bool _arenaDonated; // a timed-out append may still read records of this batch: the next gets a new arena
    private int _pooled;
    private long _enqueued;
    private long _transactions;
    private long _persisted;
    private long _lost;
    private int _unavailable;
    private long _stopDeadline = long.MaxValue; // Stopwatch timestamp; set by DisposeAsync

    // Drain-task state.
    private bool _storeHeadKnown; // false after any failure: the next append reads the store's chain head first
    private bool _storeDown;
    private bool _spoolFailing;
    private bool _lostAny;
    private Task? _orphan; // an append that timed out and may still commit
    private long _nextStoreAttempt;
    private long _episodeStarted; // Stopwatch timestamp when spooling started; 0 when not spooling
    private long _episodeRecords;
    private (string Path, List<ChainedRecord> Records)? _segment; // the spool segment being moved into the store
    private int _segmentIndex;
    private int _segmentUncounted; // records of _segment committed but not yet taken off the spool's count
    private Exception? _lastDrainError;

    private Dictionary<string, long>? _shed; // null while nothing is counted
    private DateTimeOffset _shedFirst;
    private DateTimeOffset _shedLast;
    private long _shedPolicyVersion;
    private TaskCompletionSource _progress = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private ILedgerObserver[] _observers = [];

    private readonly record struct Entry(LedgerRecord Record, DurableWait? Wait);

    private LedgerWriter(ILedgerStore store, string chainId, LedgerSpool? spool, LedgerWriterOptions options, ILogger logger)
    {
        _store = store;
        _chainId = chainId;
        _spool = spool;
        _options = options;
        _logger = logger;
        Capacity = options.Capacity;
        _shedAt = Capacity - Math.Max(1, Capacity / 8);
        _queue = Channel.CreateBounded<Entry>(new BoundedChannelOptions(Capacity)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
        _appendBatch = () => _store.AppendAsync(_appending!);
    }

    /// <summary>Continues this node's chain in <paramref name="store"/> and starts draining.</summary>
    /// <param name="store">Where records are appended.</param>
    /// <param name="chainId">This node's chain id.</param>
    /// <param name="logger">Where the writer says what it does.</param>
    /// <param name="capacity">How many records the queue holds at most.</param>
    /// <param name="spoolDirectory">The local spool's folder (see <see cref="LedgerWriterOptions.SpoolDirectory"/>); null for none.</param>
    /// <param name="cancellationToken">Cancels the start.</param>
    public static Task<LedgerWriter> StartAsync(ILedgerStore store, string chainId, ILogger logger, int capacity = DefaultCapacity,
        string? spoolDirectory = null, CancellationToken cancellationToken = default)
        => StartAsync(store, chainId, logger, new LedgerWriterOptions { Capacity = capacity, SpoolDirectory = spoolDirectory }, cancellationToken);

    /// <summary>
    /// Continues this node's chain and starts draining. A spool left by an earlier run is moved into the store first;
    /// should the store not take it, the chain continues after the spool's last record and the spool keeps filling.
    /// </summary>
    /// <param name="store">Where records are appended.</param>
    /// <param name="chainId">This node's chain id.</param>
    /// <param name="logger">Where the writer says what it does.</param>
    /// <param name="options">Capacity, spool and timings.</param>
    /// <param name="cancellationToken">Cancels the start.</param>
    public static async Task<LedgerWriter> StartAsync(ILedgerStore store, string chainId, ILogger logger, LedgerWriterOptions options,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Capacity, 2);
        var spool = options.SpoolDirectory is null ? null : LedgerSpool.Open(options.SpoolDirectory, chainId);
        var writer = new LedgerWriter(store, chainId, spool, options, logger);
        try
        {
            await writer.InitializeAsync(cancellationToken);
        }
        catch
        {
            spool?.Dispose();
            throw;
        }

        return writer;
    }

    private async Task InitializeAsync(CancellationToken cancellationToken)
    {
        long seq;
        string hash;
        if (_spool is { Segments.Count: > 0 } spool)
        {
            Log.SpoolFound(_logger, spool.Count, _chainId, spool.Directory);
            _episodeStarted = Stopwatch.GetTimestamp();
            _episodeRecords = spool.Count;
            if (!await DrainSpoolAsync(Timeout.InfiniteTimeSpan) && _lastDrainError is LedgerChainConflictException conflict)
            {
                throw conflict; // continuing would fork the chain
            }

            // Drained or not, the chain continues after the last record spooled: the store has nothing beyond it.
            (seq, hash) = (spool.TailSeq, spool.TailHash!);
        }
        else
        {
            (seq, hash) = await _store.GetChainHeadAsync(_chainId, cancellationToken);
            _storeHeadKnown = true;
            if (!HashChain.IsHash(hash))
            {
                // Chaining onto it would write entries no verification can follow; the store needs an operator first.
                throw new InvalidDataException(
                    $"The ledger's chain {_chainId} ends at entry {seq}, whose stored hash is not a SHA-256: the store was altered. Run custos audit verify.");
            }
        }

        _chain = new HashChain(_chainId, seq, hash);
        _drain = Task.Run(DrainAsync, CancellationToken.None);
    }

    /// <summary>Records durable so far this run: appended to the store, or written to the spool.</summary>
    public long Persisted => Interlocked.Read(ref _persisted);

    /// <summary>Records in the local spool that are not in the store yet.</summary>
    public long Spooled => _spool?.Count ?? 0;

    /// <summary>Records that could be neither stored nor spooled before the writer stopped (their requests were aborted).</summary>
    public long Lost => Interlocked.Read(ref _lost);

    /// <summary>
    /// False while records can be made durable nowhere (the store fails and the spool refuses writes, or there is no
    /// spool), or once the writer has stopped. True while spooling: records are durable on the local disk.
    /// </summary>
    public bool IsHealthy => !_drain.IsCompleted && Volatile.Read(ref _unavailable) == 0;

    /// <summary>Records waiting in the queue.</summary>
    public int Pending => _queue.Reader.Count;

    /// <summary>How many records the queue holds at most.</summary>
    public int Capacity { get; }

    /// <summary>True while the queue is seven-eighths full or more: new requests should be shed, not served.</summary>
    public bool IsBacklogged => _queue.Reader.Count >= _shedAt;

    /// <summary>
    /// Adds an observer that sees every batch once it is durable (detectors, metrics). Observers run on the drain task,
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

    /// <summary>Queues <paramref name="record"/>; completes at once unless the queue is full. Does not wait for it to be durable.</summary>
    public ValueTask EnqueueAsync(LedgerRecord record)
    {
        var entry = new Entry(record, null);
        Interlocked.Increment(ref _enqueued);
        return _queue.Writer.TryWrite(entry) ? ValueTask.CompletedTask : _queue.Writer.WriteAsync(entry);
    }

    /// <summary>
    /// Queues <paramref name="record"/> and completes once the batch holding it is durable: committed to the store, or
    /// flushed to the local spool. Throws when the writer stops before that. Concurrent callers share one commit. The
    /// completion object is pooled: await the result exactly once.
    /// </summary>
    public ValueTask RecordAsync(LedgerRecord record)
    {
        ArgumentNullException.ThrowIfNull(record);
        var wait = RentWait();
        var durable = wait.Task;
        var entry = new Entry(record, wait);
        Interlocked.Increment(ref _enqueued);
        return _queue.Writer.TryWrite(entry) ? durable : WriteThenWaitAsync(entry, durable);
    }

    private async ValueTask WriteThenWaitAsync(Entry entry, ValueTask durable)
    {
        await _queue.Writer.WriteAsync(entry);
        await durable;
    }

    private DurableWait RentWait()
    {
        if (_pool.TryDequeue(out var wait))
        {
            Interlocked.Decrement(ref _pooled);
            return wait;
        }

        return new DurableWait(this);
    }

    private void ReturnWait(DurableWait wait)
    {
        if (Interlocked.Increment(ref _pooled) <= MaxPooledWaits)
        {
            _pool.Enqueue(wait);
        }
        else
        {
            Interlocked.Decrement(ref _pooled);
        }
    }

    /// <summary>
    /// Queues the record of a shed request, or of one the HTTP server refused, if there is room; otherwise counts it into
    /// the next <see cref="ShedRecord"/>. Never waits: shedding must stay cheap exactly when the gateway is overloaded.
    /// </summary>
    public void RecordShed(RequestRecord record)
    {
        if (_queue.Writer.TryWrite(new Entry(record, null)))
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
                NodeId = _chainId,
                Reasons = _shed,
                PolicyVersion = _shedPolicyVersion,
            };
            _shed = null;
            return summary;
        }
    }

    /// <summary>Waits until every record queued before this call is durable (stored or spooled).</summary>
    public Task FlushAsync(CancellationToken cancellationToken = default)
        => WaitForPersistedAsync(Interlocked.Read(ref _enqueued), cancellationToken);

    /// <summary>Waits until at least <paramref name="count"/> records have been made durable since start.</summary>
    public Task WaitForPersistedAsync(long count, CancellationToken cancellationToken = default)
        => WaitUntilAsync(() => Interlocked.Read(ref _persisted) >= count, () => $"{Persisted} of {count} records durable", cancellationToken);

    /// <summary>Waits until the spool is empty: everything spooled is in the store.</summary>
    public Task WaitForSpoolDrainedAsync(CancellationToken cancellationToken = default)
        => WaitUntilAsync(() => Spooled == 0, () => $"{Spooled} records still in the spool", cancellationToken);

    private async Task WaitUntilAsync(Func<bool> done, Func<string> state, CancellationToken cancellationToken)
    {
        while (true)
        {
            // Take the signal before checking, so progress made in between is never missed.
            var progress = Volatile.Read(ref _progress).Task;
            if (done())
            {
                return;
            }

            if (_drain.IsCompleted)
            {
                await _drain; // surfaces a fault instead of waiting forever
                throw new InvalidOperationException($"The ledger writer has stopped with {state()}.");
            }

            await progress.WaitAsync(cancellationToken);
        }
    }

    private void Signal()
        => Interlocked.Exchange(ref _progress, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();

    private bool SpoolPending => _spool is { Segments.Count: > 0 };

    private bool StoreAttemptDue => Stopwatch.GetTimestamp() >= _nextStoreAttempt;

    private bool StopExpired => Stopwatch.GetTimestamp() >= Volatile.Read(ref _stopDeadline);

    private static long After(TimeSpan delay) => Stopwatch.GetTimestamp() + (long)(delay.TotalSeconds * Stopwatch.Frequency);

    private async Task DrainAsync()
    {
        var reader = _queue.Reader;
        try
        {
            while (true)
            {
                // The common case awaits right here, in this one long-lived state machine: nothing is allocated per
                // batch but the store call itself.
                if (!reader.TryPeek(out _) && !(SpoolPending && !_lostAny ? await WaitForWorkAsync() : await reader.WaitToReadAsync()))
                {
                    break; // completed and empty: stopping
                }

                FillBatch();
                if (_batch.Count > 0)
                {
                    var stored = false;
                    var tried = false;
                    if (!SpoolPending && _storeHeadKnown && _orphan is null && !_lostAny)
                    {
                        tried = true;
                        _appending = _batch;
                        var append = Task.Run(_appendBatch, CancellationToken.None);
                        try
                        {
                            await append.WaitAsync(_options.AppendTimeout);
                            stored = true;
                            _storeDown = false;
                            MarkAvailable();
                        }
                        catch (Exception ex)
                        {
                            if (ex is TimeoutException)
                            {
                                Orphan(append, _batch);
                            }

                            StoreFailed(ex, _batch.Count, 1);
                        }
                    }

                    if (stored || await PersistAsync(tried))
                    {
                        CompleteBatch();
                    }
                    else
                    {
                        FailBatch();
                    }
                }

                if (SpoolPending && StoreAttemptDue && !_lostAny)
                {
                    await DrainSpoolAsync(DrainSlice);
                }
            }

            // Stopping: everything queued is stored or spooled. Move the spool into the store while there is time.
            while (SpoolPending && !_lostAny && !StopExpired)
            {
                var remaining = TimeSpan.FromSeconds((double)(Volatile.Read(ref _stopDeadline) - Stopwatch.GetTimestamp()) / Stopwatch.Frequency);
                if (!await DrainSpoolAsync(remaining) && !StopExpired)
                {
                    await Task.Delay(_options.RetryInterval < remaining ? _options.RetryInterval : remaining);
                }
            }
        }
        catch (Exception ex)
        {
            Log.WriterFailed(_logger, ex);
            _queue.Writer.TryComplete();
            FailBatch();
            while (_queue.Reader.TryRead(out var entry))
            {
                Interlocked.Increment(ref _lost);
                entry.Wait?.Fail(new InvalidOperationException("The ledger writer failed.", ex));
            }

            throw;
        }
    }

    /// <summary>Waits until records are queued (true) or the queue is completed and empty (false); moves the spool meanwhile.</summary>
    private async ValueTask<bool> WaitForWorkAsync()
    {
        var reader = _queue.Reader;
        while (true)
        {
            if (reader.TryPeek(out _))
            {
                return true;
            }

            if (!SpoolPending || _lostAny)
            {
                return await reader.WaitToReadAsync();
            }

            var wait = TimeSpan.FromSeconds((double)(_nextStoreAttempt - Stopwatch.GetTimestamp()) / Stopwatch.Frequency);
            if (wait > TimeSpan.Zero)
            {
                using var timer = new CancellationTokenSource(wait);
                try
                {
                    return await reader.WaitToReadAsync(timer.Token);
                }
                catch (OperationCanceledException) when (timer.IsCancellationRequested)
                {
                    // Time to try the store again.
                }
            }

            await DrainSpoolAsync(DrainSlice);
        }
    }

    private void FillBatch()
    {
        var reader = _queue.Reader;
        while (_batch.Count < MaxBatch && reader.TryRead(out var entry))
        {
            _batch.Add(_chain.Append(entry.Record, _arena));
            if (entry.Wait is { } wait)
            {
                _waits.Add(wait);
            }
        }

        // Requests shed while the queue was full are sealed right after the records that were ahead of them.
        if (_batch.Count is > 0 and < MaxBatch && TakeShedSummary() is { } summary)
        {
            Interlocked.Increment(ref _enqueued);
            _batch.Add(_chain.Append(summary, _arena));
        }
    }

    /// <summary>
    /// Makes the batch durable: in the store (two attempts, counting one already <paramref name="tried"/>), else in the
    /// spool; while anything is spooled, in the spool, so the order holds. When neither accepts it, retries every
    /// <see cref="LedgerWriterOptions.RetryInterval"/>; false only once the writer is stopping and its time is up.
    /// </summary>
    private async Task<bool> PersistAsync(bool tried)
    {
        if (tried)
        {
            await Task.Delay(_options.RetryDelay);
        }

        for (var round = 0; ; round++)
        {
            if (_lostAny)
            {
                return false; // never store a record after one that was lost: the chain would have a hole
            }

            if (!SpoolPending && await TryStoreAsync(round == 0 && !tried ? 2 : 1))
            {
                MarkAvailable();
                return true;
            }

            if (_spool is not null && TrySpool())
            {
                MarkAvailable();
                return true;
            }

            MarkUnavailable();
            if (StopExpired)
            {
                return false;
            }

            await Task.Delay(_options.RetryInterval);
            if (SpoolPending)
            {
                await DrainSpoolAsync(Timeout.InfiniteTimeSpan); // a spool that cannot grow can still shrink
            }
        }
    }

    private async Task<bool> TryStoreAsync(int attempts)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await AppendToStoreAsync(_batch);
                _storeDown = false;
                return true;
            }
            catch (Exception ex)
            {
                StoreFailed(ex, _batch.Count, attempt);
                if (attempt >= attempts)
                {
                    return false;
                }

                await Task.Delay(_options.RetryDelay);
            }
        }
    }

    /// <summary>
    /// Appends <paramref name="records"/> (consecutive, of this chain) to the store. After a failure it first reads the
    /// store's chain head and leaves out what is already there (an append that timed out may have committed after all,
    /// or the process died between committing a spool segment and deleting it), checking that the chain continues.
    /// </summary>
    private async Task AppendToStoreAsync(List<ChainedRecord> records)
    {
        if (_orphan is { IsCompleted: false })
        {
            throw new TimeoutException("An earlier append to the ledger store has not answered yet.");
        }

        _orphan = null;
        var pending = records;
        if (!_storeHeadKnown)
        {
            var (seq, hash) = await _store.GetChainHeadAsync(_chainId).WaitAsync(_options.AppendTimeout);
            pending = NotYetStored(records, seq, hash);
            if (pending.Count == 0)
            {
                _storeHeadKnown = true;
                return;
            }
        }

        // The store may block its caller (SQLite waits for a lock), so the append runs apart and is waited for with a limit.
        var append = Task.Run(() => _store.AppendAsync(pending), CancellationToken.None);
        try
        {
            await append.WaitAsync(_options.AppendTimeout);
            _storeHeadKnown = true;
        }
        catch (TimeoutException)
        {
            Orphan(append, pending);
            throw;
        }
        catch
        {
            _storeHeadKnown = false;
            throw;
        }
    }

    /// <summary>An append timed out: it may still commit, so the store's state is unknown until it ends.</summary>
    private void Orphan(Task append, List<ChainedRecord> records)
    {
        _orphan = append;
        _ = append.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted, TaskScheduler.Default);
        _batchDonated |= ReferenceEquals(records, _batch); // it still reads the list
        _arenaDonated = true; // and may read records of this batch (a part of the list, or all of it)
        _storeHeadKnown = false;
    }

    private List<ChainedRecord> NotYetStored(List<ChainedRecord> records, long headSeq, string headHash)
    {
        var first = records[0];
        var last = records[^1];
        if (headSeq < first.Seq - 1)
        {
            throw new LedgerChainConflictException(
                $"The store's chain {_chainId} ends at seq {headSeq}, but the next records to store start at seq {first.Seq}: the store lacks seq {headSeq + 1} to {first.Seq - 1}.");
        }

        if (headSeq > last.Seq)
        {
            throw new LedgerChainConflictException(
                $"The store's chain {_chainId} goes to seq {headSeq}, past this writer's seq {last.Seq}: another writer uses chain id {_chainId}.");
        }

        var stored = (int)(headSeq - first.Seq + 1); // records of the list already in the store
        var linked = stored == 0 ? first.PrevHash : records[stored - 1].Hash;
        if (linked != headHash)
        {
            throw new LedgerChainConflictException($"The store's chain {_chainId} at seq {headSeq} has hash {headHash}, not this writer's {linked}: the chains differ.");
        }

        return stored == 0 ? records : records.GetRange(stored, records.Count - stored);
    }

    private void StoreFailed(Exception ex, int count, int attempt)
    {
        _lastDrainError = ex;
        _storeHeadKnown = false;
        _nextStoreAttempt = After(_options.RetryInterval);
        if (ex is LedgerChainConflictException)
        {
            Log.ChainConflict(_logger, ex.Message);
        }
        else if (!_storeDown)
        {
            _storeDown = true;
            Log.AppendFailed(_logger, count, attempt, ex);
        }
        else
        {
            Log.StoreStillFailing(_logger, count, ex.Message);
        }
    }

    private bool TrySpool()
    {
        var spool = _spool!;
        try
        {
            var starting = spool.Segments.Count == 0;
            spool.Append(_batch);
            if (starting)
            {
                _episodeStarted = Stopwatch.GetTimestamp();
                _episodeRecords = 0;
                Log.SpoolingStarted(_logger, _chainId, spool.Directory);
            }

            _episodeRecords += _batch.Count;
            _spoolFailing = false;
            return true;
        }
        catch (Exception ex)
        {
            if (!_spoolFailing)
            {
                _spoolFailing = true;
                Log.SpoolFailed(_logger, _batch.Count, spool.Directory, ex);
            }

            return false;
        }
    }

    /// <summary>
    /// Moves spooled records into the store, oldest first, in batches; a segment is deleted once all of it is committed.
    /// Gives up after <paramref name="budget"/> (to let queued records have their turn) or at the first failure (false).
    /// </summary>
    private async Task<bool> DrainSpoolAsync(TimeSpan budget)
    {
        var spool = _spool!;
        var started = Stopwatch.GetTimestamp();
        _nextStoreAttempt = After(_options.RetryInterval);
        try
        {
            while (true)
            {
                if (_segment is null)
                {
                    _segment = spool.ReadOldest();
                    _segmentIndex = 0;
                    if (_segment is null)
                    {
                        break;
                    }
                }

                var (path, records) = _segment.Value;
                if (_segmentIndex < records.Count)
                {
                    var count = Math.Min(MaxBatch, records.Count - _segmentIndex);
                    var chunk = records.GetRange(_segmentIndex, count);
                    try
                    {
                        await AppendToStoreAsync(chunk);
                    }
                    catch (Exception ex)
                    {
                        StoreFailed(ex, count, 1);
                        return false;
                    }

                    _storeDown = false;
                    _segmentIndex += count;
                    _segmentUncounted += count;
                    if (_segmentIndex < records.Count)
                    {
                        spool.Drained(_segmentUncounted);
                        _segmentUncounted = 0;
                        Signal();
                        if (budget != Timeout.InfiniteTimeSpan && Stopwatch.GetElapsedTime(started) >= budget)
                        {
                            _nextStoreAttempt = 0; // carry on as soon as the queue has had its turn
                            return true;
                        }

                        continue;
                    }
                }

                // All of the segment is committed: delete it (a failure here is retried without appending again), and
                // say so when it was the last, before the count reaches zero for whoever waits on it.
                spool.DeleteOldest(path);
                _segment = null;
                if (spool.Segments.Count == 0)
                {
                    EndEpisode();
                }

                spool.Drained(_segmentUncounted);
                _segmentUncounted = 0;
                Signal();
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or InvalidDataException)
        {
            _lastDrainError = ex;
            Log.SpoolUnreadable(_logger, spool.Directory, ex);
            return false;
        }

        _nextStoreAttempt = 0;
        EndEpisode();
        return true;
    }

    private void EndEpisode()
    {
        if (_episodeStarted != 0)
        {
            Log.SpoolDrained(_logger, _episodeRecords, Stopwatch.GetElapsedTime(_episodeStarted).TotalSeconds, _chainId);
            _episodeStarted = 0;
            Signal();
        }
    }

    private void MarkUnavailable()
    {
        if (Interlocked.Exchange(ref _unavailable, 1) == 0)
        {
            Log.Unavailable(_logger, _spool?.Directory ?? "(none)");
        }
    }

    private void MarkAvailable()
    {
        if (Interlocked.Exchange(ref _unavailable, 0) == 1)
        {
            Log.AvailableAgain(_logger);
        }
    }

    private void CompleteBatch()
    {
        foreach (var wait in _waits)
        {
            wait.Succeed();
        }

        _waits.Clear();
        Notify();
        Interlocked.Add(ref _persisted, _batch.Count);
        _transactions++;
        ResetBatch();
        Signal();
    }

    private void FailBatch()
    {
        if (_batch.Count > 0)
        {
            _lostAny = true;
            Interlocked.Add(ref _lost, _batch.Count);
            Log.RecordsLost(_logger, _batch.Count, _batch[0].Seq, _batch[^1].Seq);
        }

        var error = new InvalidOperationException("The ledger writer stopped before the record could be stored or spooled.");
        foreach (var wait in _waits)
        {
            wait.Fail(error);
        }

        _waits.Clear();
        ResetBatch();
        Signal();
    }

    private void ResetBatch()
    {
        if (_batchDonated)
        {
            _batch = new List<ChainedRecord>(MaxBatch);
            _batchDonated = false;
        }
        else
        {
            _batch.Clear();
        }

        if (_arenaDonated)
        {
            _arena = new CanonicalArena();
            _arenaDonated = false;
        }
        else
        {
            _arena.Reset();
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

    /// <summary>
    /// Stops accepting records, stores or spools all queued ones, and keeps moving the spool into the store for at most
    /// <see cref="LedgerWriterOptions.StopTimeout"/>: what is left in the spool then stays there, on disk, for the next
    /// start. Only when even the spool refuses writes until then are queued records lost (and their requests aborted).
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.CompareExchange(ref _stopDeadline, After(_options.StopTimeout), long.MaxValue) != long.MaxValue)
        {
            await _drain;
            return;
        }

        if (TakeShedSummary() is { } summary)
        {
            await EnqueueAsync(summary);
        }

        _queue.Writer.TryComplete();
        try
        {
            await _drain;
        }
        finally
        {
            _spool?.Dispose();
            Log.Drained(_logger, Persisted, _transactions, _chainId, _chain?.LastSeq ?? 0);
            if (Spooled > 0)
            {
                Log.StoppedWithSpool(_logger, Spooled, _spool!.Directory);
            }
        }
    }

    /// <summary>A request's wait for its record to be durable: pooled, completed by the drain task, awaited once.</summary>
    private sealed class DurableWait(LedgerWriter owner) : IValueTaskSource
    {
        private ManualResetValueTaskSourceCore<bool> _core = new() { RunContinuationsAsynchronously = true };

        public ValueTask Task => new(this, _core.Version);

        public void Succeed() => _core.SetResult(true);

        public void Fail(Exception error) => _core.SetException(error);

        public void GetResult(short token)
        {
            try
            {
                _core.GetResult(token);
            }
            finally
            {
                _core.Reset();
                owner.ReturnWait(this);
            }
        }

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
            => _core.OnCompleted(continuation, state, token, flags);
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 102, Level = LogLevel.Error, Message = "Ledger observer {Observer} failed on a batch; the batch is stored.")]
        public static partial void ObserverFailed(ILogger logger, string observer, Exception exception);

        [LoggerMessage(EventId = 100, Level = LogLevel.Error, Message = "Appending {Count} ledger records to the store failed (attempt {Attempt}).")]
        public static partial void AppendFailed(ILogger logger, int count, int attempt, Exception exception);

        [LoggerMessage(EventId = 101, Level = LogLevel.Information, Message = "Ledger drained: {Persisted} records stored this run in {Transactions} transactions; chain {ChainId} at seq {Seq}.")]
        public static partial void Drained(ILogger logger, long persisted, long transactions, string chainId, long seq);

        [LoggerMessage(EventId = 103, Level = LogLevel.Warning, Message = "The ledger store does not answer: spooling the records of chain {ChainId} to {Directory} until it does.")]
        public static partial void SpoolingStarted(ILogger logger, string chainId, string directory);

        [LoggerMessage(EventId = 104, Level = LogLevel.Information, Message = "Ledger spool drained: {Count} records moved into the store ({Seconds:F1} s after spooling started); chain {ChainId} writes to the store again.")]
        public static partial void SpoolDrained(ILogger logger, long count, double seconds, string chainId);

        [LoggerMessage(EventId = 105, Level = LogLevel.Error, Message = "The ledger can make no record durable: the store fails and the spool ({Directory}) refuses writes. New requests are refused (503 unavailable.ledger) until one of them accepts records.")]
        public static partial void Unavailable(ILogger logger, string directory);

        [LoggerMessage(EventId = 106, Level = LogLevel.Information, Message = "The ledger accepts records again.")]
        public static partial void AvailableAgain(ILogger logger);

        [LoggerMessage(EventId = 107, Level = LogLevel.Warning, Message = "Found {Count} spooled ledger records of chain {ChainId} in {Directory}; moving them into the store.")]
        public static partial void SpoolFound(ILogger logger, long count, string chainId, string directory);

        [LoggerMessage(EventId = 108, Level = LogLevel.Critical, Message = "{Count} ledger records (seq {First} to {Last}) could be neither stored nor spooled before the writer stopped; their requests were aborted.")]
        public static partial void RecordsLost(ILogger logger, int count, long first, long last);

        [LoggerMessage(EventId = 109, Level = LogLevel.Error, Message = "Writing {Count} ledger records to the spool in {Directory} failed.")]
        public static partial void SpoolFailed(ILogger logger, int count, string directory, Exception exception);

        [LoggerMessage(EventId = 112, Level = LogLevel.Critical, Message = "The ledger spool in {Directory} cannot be read back or cleaned up; its records stay there until an operator looks at it.")]
        public static partial void SpoolUnreadable(ILogger logger, string directory, Exception exception);

        [LoggerMessage(EventId = 113, Level = LogLevel.Warning, Message = "Stopping with {Count} ledger records in the spool {Directory}: the store did not take them in time. The next start moves them into the store.")]
        public static partial void StoppedWithSpool(ILogger logger, long count, string directory);

        [LoggerMessage(EventId = 114, Level = LogLevel.Critical, Message = "The ledger store's chain does not fit this node's records; they stay spooled. {Detail}")]
        public static partial void ChainConflict(ILogger logger, string detail);

        [LoggerMessage(EventId = 115, Level = LogLevel.Critical, Message = "The ledger writer failed; queued records are lost and their requests aborted.")]
        public static partial void WriterFailed(ILogger logger, Exception exception);

        [LoggerMessage(EventId = 116, Level = LogLevel.Debug, Message = "The ledger store still fails ({Count} records): {Error}")]
        public static partial void StoreStillFailing(ILogger logger, int count, string error);
    }
}
