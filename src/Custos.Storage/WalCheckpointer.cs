using Microsoft.Data.Sqlite;
using SQLitePCL;

namespace Custos.Storage;

/// <summary>
/// Copies the write-ahead log into the database file on a thread of its own, so that a ledger append never waits for it.
/// </summary>
/// <remarks>
/// SQLite's own checkpoint runs inside the commit that grows the log past 1,000 pages, on the committing connection. For
/// the ledger writer under the load harness that was a checkpoint (a thousand page writes and two fsyncs) three times a
/// second, each holding a batch of requests. Here the writer's automatic checkpoint is off. Once the writer has written
/// <see cref="CheckpointFrames"/> pages since the last one, and at least every <see cref="DefaultInterval"/> while
/// anything was committed, this thread checkpoints what it can without waiting for anyone (<c>PASSIVE</c>) on a connection
/// of its own. Since ledger records are stored compressed a commit writes a few pages, mostly the same ones again, so the
/// checkpoints are small and frequent: a long log between them made the latency tail longer, not the CPU lower.
/// <para>
/// SQLite starts the log again from its beginning only when a transaction begins after a checkpoint has copied all of
/// it, which under continuous load the thread rarely manages: the writer commits while it copies. So once the log holds
/// <see cref="WriterCheckpointFrames"/> frames the writer copies the few pages committed since the thread's last round
/// itself, after its next commit, and its next transaction restarts the log. It does so at most once per round of the
/// thread: every checkpoint syncs the log and the database file, and the writer's runs on the requests' path (each
/// request waits for its record), so a sync that the disk makes slow stalls every request in flight
/// (<c>docs/performance.md</c>, "The writer's own checkpoints"). A checkpoint that fails loses nothing: the log keeps
/// every frame until one succeeds.
/// </para>
/// </remarks>
internal sealed class WalCheckpointer : IDisposable
{
    /// <summary>How often the thread checkpoints at least, while anything was committed.</summary>
    /// <remarks>
    /// 250 ms and <see cref="CheckpointFrames"/> of 1,024 since ledger records are stored compressed (a few pages per
    /// commit, most of them the same pages again): against 1 s and 4,096, the p99 at one connection went from 2.4–2.5 to
    /// 1.7–1.9 ms and the p99 under load from about 10 to 9 ms, at the same CPU per request (docs/performance.md).
    /// </remarks>
    internal static readonly TimeSpan DefaultInterval = TimeSpan.FromMilliseconds(250);

    /// <summary>Pages (4 KB) written by the writer after which the thread checkpoints: 4 MB.</summary>
    internal const int CheckpointFrames = 1_024;

    /// <summary>Frames in the log (4 KB each) from which the writer copies the rest of it itself, so that it starts again: 64 MB.</summary>
    internal const int WriterCheckpointFrames = 16_384;

    private readonly SqliteConnection _connection;
    private readonly TimeSpan _interval;
    private readonly int _writerCheckpointFrames;
    private readonly Thread? _thread;
    private readonly ManualResetEventSlim _wake = new(false);
    private volatile bool _stopping;
    private long _commits; // written by the writer only, under its lock
    private long _written; // pages the writer wrote since it last woke the thread; the writer's only
    private long _caughtUpAt = -1; // the commit count at the last checkpoint that copied the whole log
    private long _seen; // the commit count at the thread's last round; the thread's only
    private int _logFrames; // the log's length at the last checkpoint; the writer's own sets what it left
    private long _writerCheckpoints;

    private WalCheckpointer(SqliteConnection connection, TimeSpan interval, int writerCheckpointFrames)
    {
        _connection = connection;
        _interval = interval;
        _writerCheckpointFrames = writerCheckpointFrames;
        if (interval != Timeout.InfiniteTimeSpan)
        {
            _thread = new Thread(Run) { IsBackground = true, Name = "Custos WAL checkpoint" };
        }
    }

    /// <summary>Checkpoints on a thread of its own from now on; <paramref name="writer"/> no longer checkpoints by itself.</summary>
    /// <param name="writer">The connection that appends.</param>
    /// <param name="connectionString">The store's, for the thread's own connection.</param>
    /// <param name="interval">How often to checkpoint at least; infinite for no thread at all (tests).</param>
    /// <param name="writerCheckpointFrames">The log's length from which the writer copies the rest itself: <see cref="WriterCheckpointFrames"/>, less in tests.</param>
    public static WalCheckpointer Start(sqlite3 writer, string connectionString, TimeSpan interval, int writerCheckpointFrames)
    {
        var connection = new SqliteConnection(connectionString);
        connection.Open();
        using (var read = connection.CreateCommand())
        {
            // A connection finds the log at its first transaction; until then a checkpoint does nothing.
            read.CommandText = "SELECT count(*) FROM sqlite_schema";
            read.ExecuteScalar();
        }

        var checkpointer = new WalCheckpointer(connection, interval, writerCheckpointFrames);
        raw.sqlite3_wal_autocheckpoint(writer, 0);
        raw.sqlite3_db_status(writer, raw.SQLITE_DBSTATUS_CACHE_WRITE, out _, out _, 1);
        checkpointer._thread?.Start();
        return checkpointer;
    }

    /// <summary>True when the last checkpoint copied the whole log and nothing was committed since.</summary>
    internal bool CaughtUp => Volatile.Read(ref _caughtUpAt) == Volatile.Read(ref _commits);

    /// <summary>Checkpoints the writer made itself, on the requests' path.</summary>
    internal long WriterCheckpoints => Volatile.Read(ref _writerCheckpoints);

    /// <summary>Called by the writer after each commit, still holding the write lock.</summary>
    public void Committed(sqlite3 writer)
    {
        Volatile.Write(ref _commits, _commits + 1);
        raw.sqlite3_db_status(writer, raw.SQLITE_DBSTATUS_CACHE_WRITE, out var written, out _, 1); // pages written to the log
        _written += written;
        if (_written >= CheckpointFrames)
        {
            _written = 0;
            _wake.Set();
        }

        if (Volatile.Read(ref _logFrames) >= _writerCheckpointFrames && Checkpoint(writer, out var log, out var copied))
        {
            // What it left (nothing, unless a reader holds part of the log): so it does not sync again after every
            // commit until the log has started again, only once the thread's next round finds it still long.
            Volatile.Write(ref _logFrames, log - copied);
            Volatile.Write(ref _writerCheckpoints, _writerCheckpoints + 1);
        }
    }

    private void Run()
    {
        while (true)
        {
            _wake.Wait(_interval);
            _wake.Reset();
            if (_stopping)
            {
                return;
            }

            Round();
        }
    }

    /// <summary>One round of the thread: checkpoints when anything was committed since the last round.</summary>
    /// <remarks>Internal for tests, which run it themselves on a checkpointer without a thread.</remarks>
    internal void Round()
    {
        var commits = Volatile.Read(ref _commits);
        if (commits == _seen)
        {
            return;
        }

        _seen = commits;
        if (Checkpoint(_connection.Handle!, out var log, out var copied))
        {
            Volatile.Write(ref _logFrames, log);
            Volatile.Write(ref _caughtUpAt, log >= 0 && log == copied ? commits : -1);
        }

        // Otherwise (busy: the writer is checkpointing; an I/O error) the next round tries again.
    }

    /// <summary>Copies what it can without waiting for anyone; <paramref name="log"/> is the log's length in frames.</summary>
    private static bool Checkpoint(sqlite3 db, out int log, out int copied)
        => raw.sqlite3_wal_checkpoint_v2(db, null, raw.SQLITE_CHECKPOINT_PASSIVE, out log, out copied) == raw.SQLITE_OK;

    /// <summary>Stops the thread after its current checkpoint, and checkpoints once more (the writer holds its lock).</summary>
    public void Dispose()
    {
        _stopping = true;
        _wake.Set();
        _thread?.Join();
        Checkpoint(_connection.Handle!, out _, out _);
        _connection.Dispose();
        _wake.Dispose();
    }
}
