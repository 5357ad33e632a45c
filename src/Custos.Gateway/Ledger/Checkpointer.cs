using System.Text.Json;
using Custos.ControlPlane;
using Custos.Ledger;
using Microsoft.Extensions.Logging;

namespace Custos.Gateway.Ledger;

/// <summary>Where checkpoints go besides the store, and how often they are made.</summary>
public sealed record CheckpointOptions
{
    /// <summary>Seal after this many new entries. Default 1024.</summary>
    public int Every { get; init; } = 1024;

    /// <summary>Seal at least this often while there are new entries. Default 10 s.</summary>
    public TimeSpan Interval { get; init; } = TimeSpan.FromSeconds(10);

    /// <summary>A directory witness: each checkpoint also becomes <c>DIR/CHAIN/TOSEQ.json</c>. Null: none.</summary>
    public string? WitnessDirectory { get; init; }

    /// <summary>A webhook witness: each checkpoint is also POSTed here, through the durable outbox. Null: none.</summary>
    public Uri? WitnessWebhook { get; init; }
}

/// <summary>
/// Seals this node's chain with signed checkpoints, off the request path: every <see cref="CheckpointOptions.Every"/>
/// entries or <see cref="CheckpointOptions.Interval"/>, it reads the new entries' hashes back from the store, computes
/// their Merkle root, signs, stores the checkpoint and hands it to the witnesses outside the database. The last
/// checkpoint is made on shutdown, after the ledger has drained.
/// </summary>
public sealed partial class Checkpointer : IAsyncDisposable
{
    /// <summary>The most entries one checkpoint seals; a longer backlog is sealed in several.</summary>
    public const int MaxPerCheckpoint = 65_536;

    private static readonly JsonWriterOptions WitnessJson = new() { Indented = true };

    /// <summary>How many checkpoints wait, at most, for a witness directory that cannot be written.</summary>
    private const int MaxUnwitnessed = 10_000;
    private readonly IEvidenceStore _store;
    private readonly IRegistryStore _outbox;
    private readonly LedgerWriter _ledger;
    private readonly CheckpointKey _key;
    private readonly string _chainId;
    private readonly CheckpointOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stopping = new();
    private readonly SemaphoreSlim _sealLock = new(1, 1);
    private readonly Task _loop;
    private readonly Queue<(Checkpoint Checkpoint, SignedCheckpoint Signed)> _unwitnessed = new(); // under _sealLock
    private long _lastSeq;
    private string _lastHash;

    private Checkpointer(IEvidenceStore store, IRegistryStore outbox, LedgerWriter ledger, CheckpointKey key, string chainId, CheckpointOptions options,
        TimeProvider time, ILogger logger, long lastSeq, string lastHash)
    {
        _store = store;
        _outbox = outbox;
        _ledger = ledger;
        _key = key;
        _chainId = chainId;
        _options = options;
        _time = time;
        _logger = logger;
        _lastSeq = lastSeq;
        _lastHash = lastHash;
        _loop = Task.Run(LoopAsync);
    }

    /// <summary>The last sequence number sealed.</summary>
    public long SealedSeq => Interlocked.Read(ref _lastSeq);

    /// <summary>Continues after this chain's last checkpoint, <paramref name="last"/> (<see cref="LastSealedAsync"/>).</summary>
    public static Checkpointer Start(IEvidenceStore store, IRegistryStore outbox, LedgerWriter ledger, CheckpointKey key, string chainId,
        CheckpointOptions options, TimeProvider time, ILogger<Checkpointer> logger, Checkpoint? last)
        => new(store, outbox, ledger, key, chainId, options, time, logger, last?.ToSeq ?? 0, last?.HeadHash ?? HashChain.Genesis);

    /// <summary>
    /// This chain's last checkpoint, once the chain is seen to still hold what it sealed. Read before anything is written to
    /// the chain: entries deleted from its end (or a store restored from a copy older than the checkpoint) would otherwise
    /// be numbered again by new ones, under a checkpoint that never saw them, and the deletion would no longer show as what
    /// it is.
    /// </summary>
    public static async Task<Checkpoint?> LastSealedAsync(IEvidenceStore store, string chainId, CancellationToken cancellationToken = default)
    {
        var existing = await store.GetCheckpointsAsync(chainId, cancellationToken);
        Checkpoint? last;
        try
        {
            last = existing.Count > 0 ? existing[^1].Checkpoint : null;
        }
        catch (Exception ex) when (ex is JsonException or FormatException)
        {
            // The next checkpoint continues this one; sealing after one that cannot be read would leave a gap no one can explain.
            throw new InvalidDataException($"The last stored checkpoint of chain {chainId} cannot be read ({ex.Message}): the store was altered. Run custos audit verify.", ex);
        }

        if (last is null)
        {
            return null;
        }

        byte[]? head = null;
        try
        {
            await foreach (var (_, hash) in store.ReadChainHashesAsync(chainId, last.ToSeq, last.ToSeq, cancellationToken))
            {
                head = hash;
            }
        }
        catch (FormatException)
        {
            throw new InvalidDataException($"The ledger's chain {chainId} holds entry {last.ToSeq}, which its last checkpoint sealed, with a stored hash " +
                "that is not a SHA-256: the store was altered. Run custos audit verify.");
        }

        if (head is null || !string.Equals(Convert.ToHexStringLower(head), last.HeadHash, StringComparison.OrdinalIgnoreCase))
        {
            throw new InvalidDataException($"Chain {chainId} of the ledger {(head is null ? "ends before" : "differs at")} entry {last.ToSeq}, which its last " +
                $"checkpoint (signed {LedgerTime.Format(last.Timestamp)}) sealed: entries were {(head is null ? "deleted from its end" : "altered")}, or the " +
                "store was restored from an older copy. The gateway writes nothing after it, as new entries would take their place; run custos audit verify.");
        }

        return last;
    }

    /// <summary>Seals every entry stored so far; returns the checkpoints made.</summary>
    public async Task<int> SealAsync(CancellationToken cancellationToken = default)
    {
        await _sealLock.WaitAsync(cancellationToken);
        try
        {
            var made = 0;
            while (true)
            {
                var leaves = new List<byte[]>();
                var lastSeq = 0L;
                var from = _lastSeq + 1;
                await foreach (var (seq, hash) in _store.ReadChainHashesAsync(_chainId, from, _lastSeq + MaxPerCheckpoint, cancellationToken))
                {
                    leaves.Add(hash);
                    lastSeq = seq;
                }

                if (leaves.Count == 0)
                {
                    return made;
                }

                var checkpoint = new Checkpoint
                {
                    ChainId = _chainId,
                    FromSeq = from,
                    ToSeq = lastSeq,
                    PrevHash = _lastHash,
                    HeadHash = Convert.ToHexStringLower(leaves[^1]), // as the chain writes hashes (HashChain.IsHash)
                    MerkleRoot = Convert.ToHexStringLower(MerkleTree.Root(leaves)),
                    Timestamp = _time.GetUtcNow(),
                    LastEntryAt = await LastEntryAtAsync(lastSeq, cancellationToken),
                    KeyId = _key.KeyId,
                };
                var signed = _key.Sign(checkpoint);
                await _store.AppendCheckpointAsync(signed, cancellationToken);
                Interlocked.Exchange(ref _lastSeq, checkpoint.ToSeq);
                _lastHash = checkpoint.HeadHash;
                made++;
                await WitnessAsync(checkpoint, signed);
                if (leaves.Count < MaxPerCheckpoint)
                {
                    // The head as of the read is sealed. Entries stored since wait for the next round: reading on would
                    // chase the writer under load, one checkpoint (a signature, a witness copy) for every batch.
                    return made;
                }
            }
        }
        finally
        {
            _sealLock.Release();
        }
    }

    /// <summary>
    /// When entry <paramref name="seq"/> happened, as the entry itself says: the signed checkpoint carries it, and windowed
    /// verification picks intervals by it, so it is not taken from the row's <c>ts</c> column, which the hash does not cover.
    /// </summary>
    private async Task<DateTimeOffset> LastEntryAtAsync(long seq, CancellationToken cancellationToken)
    {
        await foreach (var entry in _store.ReadChainAsync(_chainId, seq, seq, cancellationToken))
        {
            if (LedgerColumns.Read(entry.Json) is { } recorded && LedgerTime.TryParse(recorded.Timestamp, out var at))
            {
                return at;
            }
        }

        throw new InvalidDataException($"Entry {seq} of chain {_chainId} cannot be read for its time: the store was altered. Run custos audit verify.");
    }

    /// <summary>The file a directory witness keeps a checkpoint in.</summary>
    public static string WitnessPath(string directory, string chainId, long toSeq)
        => Path.Combine(directory, chainId, toSeq.ToString("D12", System.Globalization.CultureInfo.InvariantCulture) + ".json");

    /// <summary>The witness document of a checkpoint: the checkpoint object and its signature.</summary>
    public static string WitnessDocument(SignedCheckpoint signed)
    {
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer, WitnessJson))
        {
            writer.WriteStartObject();
            writer.WriteString("checkpoint", signed.Json);
            writer.WriteString("signature", signed.Signature);
            writer.WriteEndObject();
        }

        return System.Text.Encoding.UTF8.GetString(buffer.ToArray());
    }

    private async Task WitnessAsync(Checkpoint checkpoint, SignedCheckpoint signed)
    {
        var document = WitnessDocument(signed);
        if (_options.WitnessDirectory is { } directory)
        {
            // Checkpoints whose write failed before (a full disk, a witness mount gone) go first, oldest first: a witness
            // with a gap vouches for nothing in it, and the failure was only logged.
            _unwitnessed.Enqueue((checkpoint, signed));
            while (_unwitnessed.TryPeek(out var next))
            {
                var sealedNext = next.Checkpoint;
                try
                {
                    var path = WitnessPath(directory, sealedNext.ChainId, sealedNext.ToSeq);
                    Directory.CreateDirectory(Path.GetDirectoryName(path)!);
                    var temporary = path + ".tmp";
                    await File.WriteAllTextAsync(temporary, ReferenceEquals(next.Signed, signed) ? document : WitnessDocument(next.Signed));
                    File.Move(temporary, path, overwrite: true);
                    _unwitnessed.Dequeue();
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
                {
                    // The store has the checkpoint; the witness gets it with the next checkpoint's write. Say it loudly.
                    Log.WitnessFailed(_logger, sealedNext.ToSeq, directory, ex);
                    while (_unwitnessed.Count > MaxUnwitnessed)
                    {
                        _unwitnessed.Dequeue(); // bounded: audit verify --witness names what the witness lacks
                    }

                    break;
                }
            }
        }

        if (_options.WitnessWebhook is { } webhook)
        {
            await _outbox.EnqueueNotificationsAsync(
            [
                new Notification
                {
                    CreatedAt = checkpoint.Timestamp,
                    Role = "witness",
                    Recipient = "checkpoint witness",
                    Channel = "webhook",
                    Target = webhook.ToString(),
                    Payload = document,
                },
            ]);
        }
    }

    private async Task LoopAsync()
    {
        var token = _stopping.Token;
        var target = _ledger.Persisted + _options.Every;
        while (!token.IsCancellationRequested)
        {
            try
            {
                try
                {
                    await _ledger.WaitForPersistedAsync(target, token).WaitAsync(_options.Interval, _time, token);
                }
                catch (TimeoutException)
                {
                    // Interval elapsed: seal whatever is new.
                }

                target = _ledger.Persisted + _options.Every;
                await SealAsync(token);
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
                return;
            }
            catch (InvalidOperationException) when (token.IsCancellationRequested || !_ledger.IsHealthy)
            {
                // The ledger writer stopped; the final seal happens on dispose.
                await Task.Delay(_options.Interval, _time, token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            }
            catch (Exception ex)
            {
                Log.SealFailed(_logger, ex);
                await Task.Delay(TimeSpan.FromSeconds(1), _time, token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            }
        }
    }

    /// <summary>Stops the loop and seals what is left; call after the ledger writer has drained.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync();
        await _loop;
        try
        {
            await SealAsync();
        }
        catch (Exception ex)
        {
            Log.SealFailed(_logger, ex);
        }

        _stopping.Dispose();
        _sealLock.Dispose();
        _key.Dispose();
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 110, Level = LogLevel.Error, Message = "Sealing the ledger with a checkpoint failed; retrying.")]
        public static partial void SealFailed(ILogger logger, Exception exception);

        [LoggerMessage(EventId = 111, Level = LogLevel.Error, Message = "Writing checkpoint {ToSeq} to the witness directory {Directory} failed.")]
        public static partial void WitnessFailed(ILogger logger, long toSeq, string directory, Exception exception);
    }
}
