using System.Runtime.CompilerServices;
using System.Text;
using Custos.Ledger;
using Custos.Policy;
using Microsoft.Data.Sqlite;
using SQLitePCL;

namespace Custos.Storage;

/// <summary>
/// The embedded store: policy versions and the ledger in one SQLite file in WAL mode.
/// Appends go through one connection (the ledger writer is the only writer of its chain); reads
/// open pooled connections of their own, so readers never block the writer.
/// </summary>
public sealed partial class SqliteStore : ICustosStore
{
    /// <summary>The schema version this code writes. Bump with a migration step in <see cref="MigrateAsync"/>.</summary>
    public const int SchemaVersion = 7;

    private readonly string _connectionString;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private SqliteConnection? _writer;
    private sqlite3_stmt? _insert;
    private sqlite3_stmt? _usage;
    private sqlite3_stmt? _dictionary;
    private sqlite3_stmt? _total;
    private sqlite3_stmt? _minuteTotal;
    private RecordEncoder? _encoder; // the writer's, under _writeLock; null after a failed append (its dictionary may not exist)
    private readonly RecordDictionaries _dictionaries;
    private readonly Dictionary<string, DateTimeOffset> _lastUsed = new(StringComparer.Ordinal);
    private readonly RequestTotals _totals = new(); // the writer's, under _writeLock
    private readonly RequestTotals _minuteTotals = new(RequestTotals.MinuteSeconds); // the writer's, under _writeLock
    private byte[] _scratch = new byte[1024];
    private readonly TimeSpan _checkpointInterval;
    private readonly int _writerCheckpointFrames;
    private WalCheckpointer? _checkpointer; // started by the first ledger append

    private SqliteStore(string path, TimeSpan checkpointInterval, int writerCheckpointFrames, bool readOnly = false, bool immutable = false)
    {
        Path = path;
        _checkpointInterval = checkpointInterval;
        _writerCheckpointFrames = writerCheckpointFrames;
        // Immutable: a URI, which SQLite reads without the log's index beside the file (a read-only file system).
        var source = immutable ? new Uri(path).AbsoluteUri + "?immutable=1" : path;
        _dictionaries = LedgerRecordCodec.Dictionaries(source);
        _connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = source,
            Mode = readOnly ? SqliteOpenMode.ReadOnly : SqliteOpenMode.ReadWriteCreate,
            Cache = SqliteCacheMode.Private,
            Pooling = true,
            DefaultTimeout = 30,
        }.ToString();
    }

    /// <summary>The database file.</summary>
    public string Path { get; }

    /// <summary>Whether the log's checkpoint thread has copied everything committed so far; false before the first append.</summary>
    internal bool CheckpointCaughtUp => _checkpointer?.CaughtUp ?? false;

    /// <summary>Runs one round of the checkpoint thread on this thread (tests; with no checkpoint thread running).</summary>
    internal void CheckpointRound() => _checkpointer?.Round();

    /// <summary>Checkpoints the ledger writer made itself, after a commit (tests).</summary>
    internal long WriterCheckpoints => _checkpointer?.WriterCheckpoints ?? 0;

    /// <inheritdoc/>
    public string Description => Path;

    /// <inheritdoc/>
    /// <remarks>
    /// SQLite's own: the database busy or locked past the busy timeout (another process writing), a disk I/O error, the
    /// file that cannot be opened, a full disk.
    /// </remarks>
    public bool IsUnavailable(Exception exception)
        => exception is SqliteException { SqliteErrorCode: raw.SQLITE_BUSY or raw.SQLITE_LOCKED or raw.SQLITE_IOERR or raw.SQLITE_CANTOPEN or raw.SQLITE_FULL }
            || StoreFailures.IsUnavailable(exception);

    /// <summary>
    /// What is wrong with the store file, in words, when <paramref name="exception"/> is SQLite's saying that it is damaged,
    /// is not a database, cannot be opened, cannot be written, or that the disk failed or is full; null for anything else.
    /// For a one-line error in place of a stack trace.
    /// </summary>
    public static string? Describe(Exception exception) => exception is SqliteException ex ? ex.SqliteErrorCode switch
    {
        raw.SQLITE_CORRUPT => "it is damaged (SQLite: database disk image is malformed): restore it from a backup; custos audit verify names the last entry it can read",
        raw.SQLITE_NOTADB => "it is not a SQLite database (SQLite: file is not a database): the wrong file, or its start overwritten",
        raw.SQLITE_CANTOPEN => "it cannot be opened (SQLite: unable to open database file): its folder is missing or cannot be written",
        raw.SQLITE_READONLY => "it cannot be written (SQLite: attempt to write a readonly database): the file or its folder is read-only",
        raw.SQLITE_IOERR => "reading or writing it failed (SQLite: disk I/O error)",
        raw.SQLITE_FULL => "the disk is full (SQLite: database or disk is full)",
        _ => null,
    } : null;

    /// <summary>Opens (creating when needed) the store in <paramref name="dataDirectory"/> as <c>custos.db</c>.</summary>
    public static Task<SqliteStore> OpenAsync(string dataDirectory, CancellationToken cancellationToken = default)
        => OpenAsync(dataDirectory, WalCheckpointer.DefaultInterval, cancellationToken);

    /// <summary>
    /// Opens the store in <paramref name="dataDirectory"/>; when it must be upgraded at length (a store made before the
    /// request totals, which are filled in from its entries once), <paramref name="upgrade"/> hears how it goes, for people.
    /// </summary>
    public static Task<SqliteStore> OpenAsync(string dataDirectory, Action<string>? upgrade, CancellationToken cancellationToken = default)
        => OpenAsync(dataDirectory, WalCheckpointer.DefaultInterval, WalCheckpointer.WriterCheckpointFrames, cancellationToken, upgrade);

    /// <summary>Opens the store with its log checkpointed at least every <paramref name="checkpointInterval"/> (infinite: never, for tests).</summary>
    internal static Task<SqliteStore> OpenAsync(string dataDirectory, TimeSpan checkpointInterval, CancellationToken cancellationToken = default)
        => OpenAsync(dataDirectory, checkpointInterval, WalCheckpointer.WriterCheckpointFrames, cancellationToken);

    /// <summary>
    /// Opens the store with its log checkpointed at least every <paramref name="checkpointInterval"/> (infinite: never, for
    /// tests), and by the ledger writer itself once the log holds <paramref name="writerCheckpointFrames"/> frames (tests).
    /// </summary>
    internal static async Task<SqliteStore> OpenAsync(string dataDirectory, TimeSpan checkpointInterval, int writerCheckpointFrames,
        CancellationToken cancellationToken = default, Action<string>? upgrade = null)
    {
        DataFolder.Create(dataDirectory);
        var store = new SqliteStore(System.IO.Path.Combine(dataDirectory, "custos.db"), checkpointInterval, writerCheckpointFrames);
        await store.MigrateAsync(upgrade, cancellationToken);
        return store;
    }

    /// <summary>Opens an existing store for reading; fails clearly when there is none.</summary>
    public static Task<SqliteStore> OpenExistingAsync(string dataDirectory, CancellationToken cancellationToken = default)
        => OpenExistingAsync(dataDirectory, null, cancellationToken);

    /// <summary>Opens an existing store, as <see cref="OpenAsync(string, Action{string}?, CancellationToken)"/>; fails clearly when there is none.</summary>
    public static async Task<SqliteStore> OpenExistingAsync(string dataDirectory, Action<string>? upgrade, CancellationToken cancellationToken = default)
    {
        ExistingPath(dataDirectory);
        return await OpenAsync(dataDirectory, upgrade, cancellationToken);
    }

    /// <summary>
    /// Opens an existing store to read it only, as the CLI's listings, verification and reports do: nothing is created,
    /// upgraded or written, not even the append-only triggers that a tampered store lacks, whose absence is evidence. A
    /// store of an older schema is upgraded first (as <see cref="OpenExistingAsync(string, Action{string}?, CancellationToken)"/>),
    /// since reading it needs the newer tables. On a read-only file system, where SQLite cannot make the log's index beside
    /// the file, a store with no log left is read as immutable.
    /// </summary>
    public static async Task<SqliteStore> OpenReadOnlyAsync(string dataDirectory, Action<string>? upgrade, CancellationToken cancellationToken = default)
    {
        var path = ExistingPath(dataDirectory);
        var store = new SqliteStore(path, Timeout.InfiniteTimeSpan, WalCheckpointer.WriterCheckpointFrames, readOnly: true);
        long? version;
        try
        {
            version = await store.SchemaVersionAsync(cancellationToken);
        }
        catch (SqliteException ex) when (ex.SqliteErrorCode == raw.SQLITE_CANTOPEN)
        {
            await store.DisposeAsync();
            var log = new FileInfo(path + "-wal");
            if (log.Exists && log.Length > 0)
            {
                throw new IOException($"The store at {path} cannot be read where it is ({ex.Message}): SQLite needs to write the index of its " +
                    $"log, {log.Name}, beside it, and the log holds entries not yet in the database. Copy the folder somewhere writable and read the copy.", ex);
            }

            store = new SqliteStore(path, Timeout.InfiniteTimeSpan, WalCheckpointer.WriterCheckpointFrames, readOnly: true, immutable: true);
            try
            {
                version = await store.SchemaVersionAsync(cancellationToken);
            }
            catch
            {
                await store.DisposeAsync();
                throw;
            }
        }
        catch
        {
            await store.DisposeAsync();
            throw;
        }

        if (version == SchemaVersion)
        {
            return store;
        }

        await store.DisposeAsync();
        return version > SchemaVersion
            ? throw NewerSchema(path, version.Value)
            : await OpenAsync(dataDirectory, upgrade, cancellationToken);
    }

    private static InvalidOperationException NewerSchema(string path, long version)
        => new($"The store at {path} has schema version {version}, newer than this Custos understands ({SchemaVersion}). Upgrade Custos.");

    /// <summary>The store's schema version; null for a database without Custos's tables.</summary>
    private async Task<long?> SchemaVersionAsync(CancellationToken cancellationToken)
    {
        await using var connection = await OpenReaderAsync(cancellationToken);
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT version FROM schema_info";
        try
        {
            return await command.ExecuteScalarAsync(cancellationToken) is { } version and not DBNull
                ? Convert.ToInt64(version, System.Globalization.CultureInfo.InvariantCulture)
                : null;
        }
        catch (SqliteException ex) when (ex.SqliteErrorCode == raw.SQLITE_ERROR)
        {
            return null; // no such table
        }
    }

    private static string ExistingPath(string dataDirectory)
    {
        var path = System.IO.Path.Combine(dataDirectory, "custos.db");
        return File.Exists(path)
            ? path
            : throw new FileNotFoundException($"No Custos store at {path}. Run the gateway with --data {dataDirectory} first, or pass the right --data.", path);
    }

    private async Task MigrateAsync(Action<string>? upgrade, CancellationToken cancellationToken)
    {
        _writer = new SqliteConnection(_connectionString);
        await _writer.OpenAsync(cancellationToken);
        raw.sqlite3_busy_timeout(_writer.Handle, 30_000); // another process holding the write lock: wait, then fail (and the writer retries)
        await ExecuteAsync(_writer, """
            PRAGMA journal_mode = WAL;
            PRAGMA synchronous = NORMAL;
            CREATE TABLE IF NOT EXISTS schema_info (version INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS policy_versions (
                number     INTEGER PRIMARY KEY,
                sha256     TEXT NOT NULL,
                author     TEXT NOT NULL,
                reason     TEXT NOT NULL,
                created_at TEXT NOT NULL,
                canonical  TEXT NOT NULL,
                source     TEXT
            );
            -- A rowid table, not WITHOUT ROWID: records are ~1-2 KB, and SQLite keeps large rows far better in a
            -- rowid b-tree (measured: 2,961 -> 3,751 req/s through the gateway on the load harness, docs/performance.md).
            CREATE TABLE IF NOT EXISTS ledger (
                chain_id   TEXT NOT NULL,
                seq        INTEGER NOT NULL,
                kind       TEXT NOT NULL,
                ts         TEXT NOT NULL,
                request_id TEXT,
                tenant     TEXT,
                service    TEXT,
                consumer   TEXT,
                decision   TEXT,
                model      TEXT,
                record     TEXT NOT NULL,
                prev_hash  TEXT NOT NULL,
                hash       TEXT NOT NULL
            );
            CREATE UNIQUE INDEX IF NOT EXISTS ledger_chain_seq ON ledger (chain_id, seq);
            CREATE INDEX IF NOT EXISTS ledger_ts ON ledger (ts);
            CREATE INDEX IF NOT EXISTS ledger_request ON ledger (request_id);
            CREATE INDEX IF NOT EXISTS ledger_tenant_ts ON ledger (tenant, ts);
            CREATE TRIGGER IF NOT EXISTS ledger_no_update BEFORE UPDATE ON ledger
                BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
            CREATE TRIGGER IF NOT EXISTS ledger_no_delete BEFORE DELETE ON ledger
                BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
            -- The requests of each quarter hour summed by who and how they were decided (RequestTotals): what the console's
            -- overview reads. Kept in each append's transaction. Spend in whole units and billionths (entries state costs to
            -- nine decimals), added up exactly by SQLite's integers.
            """ + TotalsSchema(RequestTotals.SlotSeconds) + """
            -- The same by minute: what the overview of the last hour reads.
            """ + TotalsSchema(RequestTotals.MinuteSeconds) + LedgerRecordCodec.Schema + RegistrySchema + AlertSchema, cancellationToken);

        using var command = _writer.CreateCommand();
        command.CommandText = "SELECT version FROM schema_info";
        var version = await command.ExecuteScalarAsync(cancellationToken);
        if (version is null)
        {
            await ExecuteAsync(_writer, $"INSERT INTO schema_info (version) VALUES ({SchemaVersion})", cancellationToken);
        }
        else if (Convert.ToInt32(version, System.Globalization.CultureInfo.InvariantCulture) > SchemaVersion)
        {
            throw NewerSchema(Path, Convert.ToInt64(version, System.Globalization.CultureInfo.InvariantCulture));
        }
        else if (Convert.ToInt32(version, System.Globalization.CultureInfo.InvariantCulture) < SchemaVersion)
        {
            // 1 -> 2: the registry tables; 2 -> 3: the alerts table; each created above when missing. 3 -> 4: new ledger
            // records are stored compressed (LedgerRecordCodec); the older ones stay TEXT, and both are read. 4 -> 5: the
            // request totals, filled in from every entry in one transaction with the new version (readers see the ledger
            // as committed meanwhile; no writer runs before the store is open). 5 -> 6: the request totals by minute, the same way.
            // 6 -> 7: the totals' tokens, which the quotas' counters start from; both widths filled in again, the same way.
            var widths = RequestTotals.Widths;
            await _writeLock.WaitAsync(cancellationToken);
            try
            {
                var db = _writer.Handle!;
                Check(db, raw.sqlite3_exec(db, "BEGIN IMMEDIATE"));
                try
                {
                    foreach (var width in widths)
                    {
                        if (!await HasColumnAsync(_writer, RequestTotals.TableOf(width), "tokens", cancellationToken))
                        {
                            Check(db, raw.sqlite3_exec(db, $"ALTER TABLE {RequestTotals.TableOf(width)} ADD COLUMN tokens INTEGER NOT NULL DEFAULT 0"));
                        }

                        Check(db, raw.sqlite3_exec(db, $"DELETE FROM {RequestTotals.TableOf(width)}"));
                    }

                    await RequestTotals.FillAsync(this, Path, widths, (totals, _) =>
                    {
                        WriteTotals(db, totals);
                        return Task.CompletedTask;
                    }, upgrade, cancellationToken);
                    Check(db, raw.sqlite3_exec(db, $"UPDATE schema_info SET version = {SchemaVersion}"));
                    Check(db, raw.sqlite3_exec(db, "COMMIT"));
                }
                catch
                {
                    raw.sqlite3_exec(db, "ROLLBACK");
                    throw;
                }
            }
            finally
            {
                _writeLock.Release();
            }
        }
    }

    /// <inheritdoc/>
    public async Task<(long Seq, string Hash)> GetChainHeadAsync(string chainId, CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenReaderAsync(cancellationToken);
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT seq, hash FROM ledger WHERE chain_id = $chain ORDER BY seq DESC LIMIT 1";
        command.Parameters.AddWithValue("$chain", chainId);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        return await reader.ReadAsync(cancellationToken) ? (reader.GetInt64(0), reader.GetString(1)) : (0, HashChain.Genesis);
    }

    /// <inheritdoc/>
    /// <remarks>
    /// On every request's path (through the ledger writer), so it talks to SQLite directly: one statement prepared
    /// once, values bound from UTF-8 bytes (the canonical JSON as it was hashed, never turned into a string, compressed by
    /// <see cref="LedgerRecordCodec"/>), one transaction per batch. Measured in <c>docs/performance.md</c>.
    /// </remarks>
    public async Task AppendAsync(IReadOnlyList<ChainedRecord> batch, CancellationToken cancellationToken = default)
    {
        if (batch.Count == 0)
        {
            return;
        }

        await _writeLock.WaitAsync(cancellationToken);
        try
        {
            var db = (_writer ?? throw new ObjectDisposedException(nameof(SqliteStore))).Handle!;
            var checkpointer = _checkpointer ??= WalCheckpointer.Start(db, _connectionString, _checkpointInterval, _writerCheckpointFrames);
            Check(db, raw.sqlite3_exec(db, "BEGIN IMMEDIATE"));
            try
            {
                var insert = _insert ??= Prepare(db, """
                    INSERT INTO ledger (chain_id, seq, kind, ts, request_id, tenant, service, consumer, decision, model, record, prev_hash, hash)
                    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
                    """);
                Span<byte> ts = stackalloc byte[LedgerTime.Length];
                _lastUsed.Clear();
                _totals.Clear();
                _minuteTotals.Clear();
                foreach (var item in batch)
                {
                    var record = item.Record;
                    var request = record as RequestRecord;
                    RequestTotals.AddToEach(record, _totals, _minuteTotals);
                    if (request is { UsedCredential: true, CredentialId: { } credentialId } // not a refusal of the credential itself
                        && (!_lastUsed.TryGetValue(credentialId, out var known) || known < record.Timestamp))
                    {
                        _lastUsed[credentialId] = record.Timestamp; // the latest use, whatever the order in the batch
                    }

                    LedgerTime.FormatUtf8(record.Timestamp, ts);
                    BindText(insert, 1, item.ChainId);
                    raw.sqlite3_bind_int64(insert, 2, item.Seq);
                    BindText(insert, 3, record.Kind);
                    raw.sqlite3_bind_text(insert, 4, ts);
                    BindText(insert, 5, request?.RequestId);
                    BindText(insert, 6, record.Tenant);
                    BindText(insert, 7, request?.Service);
                    BindText(insert, 8, request?.Consumer);
                    BindText(insert, 9, request is null ? null : Names.Of(request.Decision));
                    BindText(insert, 10, request?.Model);
                    var encoder = _encoder ??= new RecordEncoder();
                    if (encoder.WantsDictionary && RecordEncoder.MayBeDictionary(record))
                    {
                        var dictionary = encoder.DictionaryFor(item.Canonical.Span);
                        encoder.UseDictionary(AddDictionary(db, dictionary, ts), dictionary);
                    }

                    if (encoder.HasDictionary)
                    {
                        raw.sqlite3_bind_blob(insert, 11, encoder.Encode(item.Canonical.Span).Span);
                    }
                    else
                    {
                        raw.sqlite3_bind_text(insert, 11, item.Canonical.Span); // before the first request entry: stored as it is
                    }
                    BindText(insert, 12, item.PrevHash);
                    BindText(insert, 13, item.Hash);
                    Run(db, insert);
                }

                if (_lastUsed.Count > 0)
                {
                    // When each credential was last used: one row per credential of the batch, not per request.
                    var usage = _usage ??= Prepare(db, """
                        INSERT INTO credential_usage (credential_id, last_used) VALUES (?1, ?2)
                        ON CONFLICT (credential_id) DO UPDATE SET last_used = max(last_used, excluded.last_used)
                        """);
                    foreach (var (credentialId, at) in _lastUsed)
                    {
                        LedgerTime.FormatUtf8(at, ts);
                        BindText(usage, 1, credentialId);
                        raw.sqlite3_bind_text(usage, 2, ts);
                        Run(db, usage);
                    }
                }

                WriteTotals(db, _totals);
                WriteTotals(db, _minuteTotals);
                Check(db, raw.sqlite3_exec(db, "COMMIT"));
            }
            catch
            {
                raw.sqlite3_exec(db, "ROLLBACK");
                _encoder?.Dispose();
                _encoder = null; // a dictionary it took in this transaction is gone
                throw;
            }

            checkpointer.Committed(db);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <summary>Whether <paramref name="table"/> has a column named <paramref name="column"/>.</summary>
    private static async Task<bool> HasColumnAsync(SqliteConnection connection, string table, string column, CancellationToken cancellationToken)
    {
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT COUNT(*) FROM pragma_table_info($table) WHERE name = $column";
        command.Parameters.AddWithValue("$table", table);
        command.Parameters.AddWithValue("$column", column);
        return Convert.ToInt64(await command.ExecuteScalarAsync(cancellationToken), System.Globalization.CultureInfo.InvariantCulture) > 0;
    }

    /// <summary>The table of the request totals of slots <paramref name="width"/> seconds long, created when missing (a statement of its own lines).</summary>
    private static string TotalsSchema(int width) => $"""

        CREATE TABLE IF NOT EXISTS {RequestTotals.TableOf(width)} (
            slot     INTEGER NOT NULL,
            tenant   TEXT NOT NULL,
            service  TEXT NOT NULL,
            consumer TEXT NOT NULL,
            decision TEXT NOT NULL,
            reasons  TEXT NOT NULL,
            currency TEXT NOT NULL,
            requests INTEGER NOT NULL,
            spend_units INTEGER NOT NULL,
            spend_nanos INTEGER NOT NULL,
            tokens   INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (slot, tenant, service, consumer, decision, reasons, currency)
        ) WITHOUT ROWID;

        """;

    /// <summary>Adds <paramref name="totals"/> to the stored request totals of their width, in the caller's transaction.</summary>
    private void WriteTotals(sqlite3 db, RequestTotals totals)
    {
        if (totals.Count == 0)
        {
            return;
        }

        ref var statement = ref totals.Width == RequestTotals.MinuteSeconds ? ref _minuteTotal : ref _total;
        var upsert = statement ??= Prepare(db, $"""
            INSERT INTO {RequestTotals.TableOf(totals.Width)} (slot, tenant, service, consumer, decision, reasons, currency, requests, spend_units, spend_nanos, tokens)
            VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
            ON CONFLICT (slot, tenant, service, consumer, decision, reasons, currency)
            DO UPDATE SET requests = requests + excluded.requests, tokens = CASE WHEN tokens > 9223372036854775807 - excluded.tokens THEN 9223372036854775807 ELSE tokens + excluded.tokens END,
                spend_units = spend_units + excluded.spend_units + (spend_nanos + excluded.spend_nanos) / 1000000000,
                spend_nanos = (spend_nanos + excluded.spend_nanos) % 1000000000
            """);
        foreach (var (key, (requests, spend, tokens)) in totals)
        {
            raw.sqlite3_bind_int64(upsert, 1, key.Slot);
            BindText(upsert, 2, key.Tenant);
            BindText(upsert, 3, key.Service);
            BindText(upsert, 4, key.Consumer);
            BindText(upsert, 5, key.Decision);
            BindText(upsert, 6, key.Reasons);
            BindText(upsert, 7, key.Currency);
            raw.sqlite3_bind_int64(upsert, 8, requests);
            var (units, nanos) = Split(spend);
            raw.sqlite3_bind_int64(upsert, 9, units);
            raw.sqlite3_bind_int64(upsert, 10, nanos);
            raw.sqlite3_bind_int64(upsert, 11, tokens);
            Run(db, upsert);
        }
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<RequestTotal> ReadTotalsAsync(int width, DateTimeOffset from, DateTimeOffset to,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenReaderAsync(cancellationToken);
        using var command = connection.CreateCommand();
        command.CommandText = $"""
            SELECT slot, tenant, service, consumer, decision, reasons, currency, requests, spend_units, spend_nanos, tokens FROM {RequestTotals.TableOf(width)}
            WHERE slot >= $from AND slot < $to ORDER BY slot, tenant, service, consumer, decision, reasons, currency
            """;
        command.Parameters.AddWithValue("$from", RequestTotals.SecondsAtOrAfter(from));
        command.Parameters.AddWithValue("$to", RequestTotals.SecondsAtOrAfter(to));
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            yield return new RequestTotalKey(reader.GetInt64(0), reader.GetString(1), reader.GetString(2), reader.GetString(3), reader.GetString(4),
                reader.GetString(5), reader.GetString(6)).ToTotal(reader.GetInt64(7), reader.GetInt64(8) + new decimal(reader.GetInt32(9), 0, 0, false, 9),
                reader.GetInt64(10));
        }
    }

    /// <summary>
    /// A spend (nine decimals at most, as entries state costs) as whole units and billionths from 0 to 999,999,999, which
    /// SQLite adds up exactly; whole units beyond a 64-bit integer (9.2 × 10^18, no real spend) are kept at its limit.
    /// </summary>
    private static (long Units, long Nanos) Split(decimal spend)
    {
        var units = decimal.Floor(spend);
        var nanos = (long)((spend - units) * 1_000_000_000m);
        return (units >= long.MaxValue ? long.MaxValue : units <= long.MinValue ? long.MinValue : (long)units, nanos);
    }

    /// <summary>Stores <paramref name="dictionary"/> as a new record dictionary, in the append's transaction; its id.</summary>
    private long AddDictionary(sqlite3 db, ReadOnlySpan<byte> dictionary, ReadOnlySpan<byte> ts)
    {
        var statement = _dictionary ??= Prepare(db, "INSERT INTO record_dictionaries (created_at, bytes) VALUES (?1, ?2)");
        raw.sqlite3_bind_text(statement, 1, ts);
        raw.sqlite3_bind_blob(statement, 2, dictionary);
        Run(db, statement);
        return raw.sqlite3_last_insert_rowid(db);
    }

    private static sqlite3_stmt Prepare(sqlite3 db, string sql)
    {
        Check(db, raw.sqlite3_prepare_v2(db, sql, out var statement));
        return statement;
    }

    private void BindText(sqlite3_stmt statement, int index, string? value)
    {
        if (value is null)
        {
            raw.sqlite3_bind_null(statement, index);
            return;
        }

        var length = Encoding.UTF8.GetMaxByteCount(value.Length);
        if (_scratch.Length < length)
        {
            _scratch = new byte[Math.Max(length, _scratch.Length * 2)];
        }

        var written = Encoding.UTF8.GetBytes(value, _scratch);
        raw.sqlite3_bind_text(statement, index, _scratch.AsSpan(0, written)); // SQLite copies it (SQLITE_TRANSIENT)
    }

    /// <summary>Runs a prepared statement that returns no rows, and resets it for its next use.</summary>
    private static void Run(sqlite3 db, sqlite3_stmt statement)
    {
        var rc = raw.sqlite3_step(statement);
        raw.sqlite3_reset(statement);
        if (rc != raw.SQLITE_DONE)
        {
            Check(db, rc);
        }
    }

    private static void Check(sqlite3 db, int rc)
    {
        if (rc is not (raw.SQLITE_OK or raw.SQLITE_DONE or raw.SQLITE_ROW))
        {
            SqliteException.ThrowExceptionForRC(rc, db);
        }
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<StoredRecord> QueryAsync(LedgerQuery query, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenReaderAsync(cancellationToken);
        using var snapshot = connection.BeginTransaction(deferred: true); // one snapshot for the statements
        using var command = connection.CreateCommand();
        command.Transaction = snapshot;
        var where = new List<string>();
        foreach (var (column, value) in query.ColumnFilters())
        {
            where.Add($"{column} = ${column}");
            command.Parameters.AddWithValue("$" + column, value);
        }

        foreach (var (column, values) in query.ScopeFilters())
        {
            var names = new List<string>();
            foreach (var value in values)
            {
                var name = $"${column}_{names.Count}";
                command.Parameters.AddWithValue(name, value);
                names.Add(name);
            }

            where.Add(names.Count == 0 ? "0 = 1" : $"{column} IN ({string.Join(", ", names)})");
        }

        if (query.From is { } from)
        {
            where.Add("ts >= $from");
            command.Parameters.AddWithValue("$from", LedgerTime.Format(from));
        }

        if (query.To is { } to)
        {
            where.Add("ts < $to");
            command.Parameters.AddWithValue("$to", LedgerTime.Format(to));
        }

        await foreach (var reader in StoreRows.NewestInOrderAsync(command, where, query.Limit, cut =>
        {
            command.Parameters.AddWithValue("$cut", cut);
            return "$cut";
        }, cancellationToken))
        {
            yield return query.Checked(new StoredRecord(reader.GetString(0), reader.GetInt64(1), reader.GetString(2),
                LedgerRecordCodec.Read((SqliteDataReader)reader, 3, _dictionaries), reader.GetString(4), reader.GetString(5)));
        }
    }

    /// <inheritdoc/>
    public async Task<PolicyVersion?> GetLatestAsync(CancellationToken cancellationToken = default)
    {
        var history = await ReadVersionsAsync("ORDER BY number DESC LIMIT 1", cancellationToken);
        return history.Count == 0 ? null : history[0];
    }

    /// <inheritdoc/>
    public Task<IReadOnlyList<PolicyVersion>> GetHistoryAsync(CancellationToken cancellationToken = default)
        => ReadVersionsAsync("ORDER BY number", cancellationToken);

    /// <inheritdoc/>
    public async Task<(PolicyVersion Version, bool Created)> SaveAsync(PolicyDocument document, string author, string reason,
        DateTimeOffset now, string? source, long? basedOn = null, CancellationToken cancellationToken = default)
    {
        var canonical = PolicyVersion.CanonicalJson(document);
        var sha = PolicyVersion.HashOf(document);
        await _writeLock.WaitAsync(cancellationToken);
        try
        {
            // Read the latest and write the next in one write transaction: another process on the same file
            // (another node) waits for it, and then reads this version as the latest.
            var writer = _writer ?? throw new ObjectDisposedException(nameof(SqliteStore));
            await ExecuteAsync(writer, "BEGIN IMMEDIATE", cancellationToken);
            var committed = false;
            try
            {
                var found = await ReadVersionsAsync(writer, "ORDER BY number DESC LIMIT 1", cancellationToken);
                var latest = found.Count == 0 ? null : found[0];
                var (version, created) = PolicyVersion.Next(latest, document, sha, author, reason, now, basedOn);
                if (!created)
                {
                    return (version, false);
                }

                using var command = writer.CreateCommand();
                command.CommandText = """
                    INSERT INTO policy_versions (number, sha256, author, reason, created_at, canonical, source)
                    VALUES ($number, $sha, $author, $reason, $created, $canonical, $source)
                    """;
                command.Parameters.AddWithValue("$number", version.Number);
                command.Parameters.AddWithValue("$sha", sha);
                command.Parameters.AddWithValue("$author", author);
                command.Parameters.AddWithValue("$reason", reason);
                command.Parameters.AddWithValue("$created", LedgerTime.Format(now));
                command.Parameters.AddWithValue("$canonical", canonical);
                command.Parameters.AddWithValue("$source", (object?)source ?? DBNull.Value);
                await command.ExecuteNonQueryAsync(cancellationToken);
                await ExecuteAsync(writer, "COMMIT", cancellationToken);
                committed = true;
                return (version, true);
            }
            finally
            {
                if (!committed)
                {
                    await ExecuteAsync(writer, "ROLLBACK", CancellationToken.None);
                }
            }
        }
        finally
        {
            _writeLock.Release();
        }
    }

    private async Task<IReadOnlyList<PolicyVersion>> ReadVersionsAsync(string order, CancellationToken cancellationToken)
    {
        await using var connection = await OpenReaderAsync(cancellationToken);
        return await ReadVersionsAsync(connection, order, cancellationToken);
    }

    private static async Task<IReadOnlyList<PolicyVersion>> ReadVersionsAsync(SqliteConnection connection, string order, CancellationToken cancellationToken)
    {
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT number, sha256, author, reason, created_at, canonical FROM policy_versions " + order;
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var result = new List<PolicyVersion>();
        while (await reader.ReadAsync(cancellationToken))
        {
            // Checked against its stored hash: a document edited behind the gateway is refused, never put in force.
            result.Add(PolicyVersion.FromStored(reader.GetInt64(0), reader.GetString(1), reader.GetString(2), reader.GetString(3),
                LedgerTime.Parse(reader.GetString(4)), reader.GetString(5)));
        }

        return result;
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<StoredPolicyVersion> ReadPolicyVersionsAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenReaderAsync(cancellationToken);
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT number, sha256, author, reason, created_at, canonical FROM policy_versions ORDER BY number";
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            yield return new StoredPolicyVersion(reader.GetInt64(0), reader.GetString(1), reader.GetString(2), reader.GetString(3),
                LedgerTime.TryParse(reader.GetString(4), out var at) ? at : default, reader.GetString(5));
        }
    }

    private async Task<SqliteConnection> OpenReaderAsync(CancellationToken cancellationToken)
    {
        var connection = new SqliteConnection(_connectionString);
        await connection.OpenAsync(cancellationToken);
        return connection;
    }

    private static async Task ExecuteAsync(SqliteConnection connection, string sql, CancellationToken cancellationToken)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        await _writeLock.WaitAsync();
        try
        {
            _checkpointer?.Dispose(); // before the writer closes: closing the last connection checkpoints the rest
            _checkpointer = null;
            _insert?.Dispose();
            _insert = null;
            _usage?.Dispose();
            _usage = null;
            _dictionary?.Dispose();
            _dictionary = null;
            _total?.Dispose();
            _total = null;
            _minuteTotal?.Dispose();
            _minuteTotal = null;
            _encoder?.Dispose();
            _encoder = null;
            if (_writer is not null)
            {
                await _writer.DisposeAsync();
                _writer = null;
            }
        }
        finally
        {
            _writeLock.Release();
        }
    }
}
