using Custos.Ledger;

namespace Custos.Gateway.Tests.Ledger;

/// <summary>
/// A real ledger store that fails on demand: <see cref="Failing"/> makes appends and chain-head reads throw (the
/// database is down), <see cref="CloseGate"/> makes appends wait (the database hangs), and
/// <see cref="CommitThenFail"/> commits the next append, then goes down before answering (the answer is lost).
/// </summary>
public sealed class FailableLedgerStore(ILedgerStore inner) : ILedgerStore
{
    private readonly Lock _lock = new();
    private TaskCompletionSource? _gate;
    private TaskCompletionSource _appendWaiting = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _appends;
    private int _failures;

    public ILedgerStore Inner { get; } = inner;

    /// <summary>Appends and chain-head reads throw while true.</summary>
    public bool Failing { get; set; }

    /// <summary>The next append commits, then the store goes down (<see cref="Failing"/>) before answering.</summary>
    public bool CommitThenFail { get; set; }

    /// <summary>Appends that reached the inner store.</summary>
    public int Appends => Volatile.Read(ref _appends);

    /// <summary>Calls that failed on purpose.</summary>
    public int Failures => Volatile.Read(ref _failures);

    /// <summary>Appends wait until <see cref="OpenGate"/>.</summary>
    public void CloseGate()
    {
        lock (_lock)
        {
            _gate ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _appendWaiting = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }
    }

    public void OpenGate()
    {
        TaskCompletionSource? gate;
        lock (_lock)
        {
            (gate, _gate) = (_gate, null);
        }

        gate?.TrySetResult();
    }

    /// <summary>Completes once an append waits at the closed gate.</summary>
    public Task AppendWaiting
    {
        get
        {
            lock (_lock)
            {
                return _appendWaiting.Task;
            }
        }
    }

    public Task<(long Seq, string Hash)> GetChainHeadAsync(string chainId, CancellationToken cancellationToken = default)
    {
        if (Failing)
        {
            Interlocked.Increment(ref _failures);
            throw new IOException("the ledger store is down (test)");
        }

        return Inner.GetChainHeadAsync(chainId, cancellationToken);
    }

    public async Task AppendAsync(IReadOnlyList<ChainedRecord> batch, CancellationToken cancellationToken = default)
    {
        Task? gate;
        lock (_lock)
        {
            gate = _gate?.Task;
            if (gate is not null)
            {
                _appendWaiting.TrySetResult();
            }
        }

        if (gate is not null)
        {
            await gate;
        }

        if (Failing)
        {
            Interlocked.Increment(ref _failures);
            throw new IOException("the ledger store is down (test)");
        }

        await Inner.AppendAsync(batch, cancellationToken);
        Interlocked.Increment(ref _appends);
        if (CommitThenFail)
        {
            CommitThenFail = false;
            Failing = true;
            Interlocked.Increment(ref _failures);
            throw new IOException("the ledger store's answer was lost (test)");
        }
    }

    public IAsyncEnumerable<StoredRecord> QueryAsync(LedgerQuery query, CancellationToken cancellationToken = default)
        => Inner.QueryAsync(query, cancellationToken);
}
