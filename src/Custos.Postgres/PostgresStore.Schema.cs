using System.Globalization;
using Custos.Ledger;
using Npgsql;

namespace Custos.Postgres;

/// <summary>
/// The schema: numbered migration steps applied on open, and the ledger's monthly partitions.
/// </summary>
public sealed partial class PostgresStore
{
    /// <summary>The schema version this code writes: the number of the last step in <see cref="Migrations"/>.</summary>
    public const int SchemaVersion = 6;

    // Advisory lock keys (64-bit, database-wide): "Custos" in ASCII, then a number per purpose.
    internal const long MigrationLock = 0x4375_7374_6F73_0001;
    internal const long PolicyLock = 0x4375_7374_6F73_0002;
    internal const long PartitionLock = 0x4375_7374_6F73_0003;

    /// <summary>
    /// The migration steps, in order: step N (1-based) brings the schema from version N-1 to N. Never edit a step
    /// that has shipped; add the next one and bump <see cref="SchemaVersion"/>.
    /// </summary>
    /// <remarks>
    /// Identifiers and instants sort byte-wise (<c>COLLATE "C"</c>), as they do in the SQLite store, whatever the
    /// database's locale. Canonical ledger JSON is stored as <c>bytea</c>: the exact bytes that were hashed.
    /// </remarks>
    internal static readonly string[] Migrations =
    [
        """
        CREATE TABLE policy_versions (
            number     bigint PRIMARY KEY,
            sha256     text NOT NULL,
            author     text NOT NULL,
            reason     text NOT NULL,
            created_at timestamptz NOT NULL,
            canonical  text NOT NULL,
            source     text
        );

        CREATE TABLE ledger (
            chain_id   text COLLATE "C" NOT NULL,
            seq        bigint NOT NULL,
            kind       text NOT NULL,
            ts         timestamptz NOT NULL,
            request_id text,
            tenant     text,
            service    text,
            consumer   text,
            decision   text,
            model      text,
            cost       numeric,
            record     bytea NOT NULL,
            prev_hash  text NOT NULL,
            hash       text NOT NULL,
            CONSTRAINT ledger_chain_seq UNIQUE (chain_id, seq, ts)
        ) PARTITION BY RANGE (ts);
        CREATE TABLE ledger_default PARTITION OF ledger DEFAULT;
        CREATE INDEX ledger_ts ON ledger (ts);
        CREATE INDEX ledger_request ON ledger (request_id);
        CREATE INDEX ledger_tenant_ts ON ledger (tenant, ts);
        CREATE INDEX ledger_consumer_ts ON ledger (consumer, ts);

        CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the ledger is append-only' USING ERRCODE = 'insufficient_privilege';
        END
        $$;
        CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
        CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
        CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
        CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON ledger_default FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

        CREATE TABLE checkpoints (
            chain_id   text COLLATE "C" NOT NULL,
            to_seq     bigint NOT NULL,
            from_seq   bigint NOT NULL,
            checkpoint text NOT NULL,
            signature  text NOT NULL,
            PRIMARY KEY (chain_id, to_seq)
        );

        CREATE TABLE access_requests (
            number          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            tenant          text NOT NULL,
            service         text NOT NULL,
            consumer        text NOT NULL,
            models          text NOT NULL,
            valid_until     timestamptz,
            justification   text NOT NULL,
            requested_by    text NOT NULL,
            requested_at    timestamptz NOT NULL,
            status          text NOT NULL,
            decided_by      text,
            decided_at      timestamptz,
            decision_reason text,
            policy_version  bigint
        );

        CREATE TABLE notifications (
            id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            created_at   timestamptz NOT NULL,
            role         text NOT NULL,
            recipient    text NOT NULL,
            channel      text NOT NULL,
            target       text NOT NULL,
            payload      text NOT NULL,
            status       text NOT NULL,
            attempts     integer NOT NULL DEFAULT 0,
            next_attempt timestamptz NOT NULL,
            last_error   text
        );
        CREATE INDEX notifications_due ON notifications (status, next_attempt);

        CREATE TABLE credential_usage (
            credential_id text PRIMARY KEY,
            last_used     timestamptz NOT NULL
        );

        CREATE TABLE alerts (
            number      bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            status      text NOT NULL,
            fingerprint text NOT NULL,
            raised_at   timestamptz NOT NULL,
            alert       text NOT NULL
        );
        CREATE INDEX alerts_status ON alerts (status, number);
        """,

        // 2: checkpoints are append-only like the entries they seal.
        """
        CREATE TRIGGER checkpoints_no_update BEFORE UPDATE ON checkpoints FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
        CREATE TRIGGER checkpoints_no_delete BEFORE DELETE ON checkpoints FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
        CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON checkpoints FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
        """,

        // 3: records may be stored compressed against a dictionary (RecordCompression); schema_info says whether new
        // ones are. 'json' here: a database made before this step may have nodes of an earlier version running, which
        // cannot read compressed records. A database created at this version is switched to 'zstd' by MigrateAsync.
        """
        CREATE TABLE record_dictionaries (
            id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            created_at timestamptz NOT NULL,
            chain_id   text COLLATE "C" NOT NULL,
            bytes      bytea NOT NULL
        );
        CREATE TRIGGER record_dictionaries_no_update BEFORE UPDATE ON record_dictionaries FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
        CREATE TRIGGER record_dictionaries_no_delete BEFORE DELETE ON record_dictionaries FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
        CREATE TRIGGER record_dictionaries_no_truncate BEFORE TRUNCATE ON record_dictionaries FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
        ALTER TABLE schema_info ADD COLUMN record_format text NOT NULL DEFAULT 'json';
        """,

        // 4: the requests of each quarter hour summed by who and how they were decided (RequestTotals): what the console's
        // overview reads. Kept in each append's transaction; a database with entries gets them filled in (TokensStep).
        """
        CREATE TABLE request_totals (
            slot     bigint NOT NULL,
            tenant   text COLLATE "C" NOT NULL,
            service  text COLLATE "C" NOT NULL,
            consumer text COLLATE "C" NOT NULL,
            decision text COLLATE "C" NOT NULL,
            reasons  text COLLATE "C" NOT NULL,
            currency text COLLATE "C" NOT NULL,
            requests bigint NOT NULL,
            spend    numeric NOT NULL,
            PRIMARY KEY (slot, tenant, service, consumer, decision, reasons, currency)
        );
        """,

        // 5: the same by minute (columns, collations and key as request_totals'): what the overview of the last hour reads.
        // Filled in the same way (TokensStep).
        """
        CREATE TABLE request_minute_totals (LIKE request_totals INCLUDING ALL);
        """,

        // 6: the totals' tokens (input and output of the entries), which the quotas' counters start from. A database with
        // entries gets both widths filled in again (TokensStep).
        """
        ALTER TABLE request_totals ADD COLUMN IF NOT EXISTS tokens bigint NOT NULL DEFAULT 0;
        ALTER TABLE request_minute_totals ADD COLUMN IF NOT EXISTS tokens bigint NOT NULL DEFAULT 0;
        """,
    ];

    private string _recordFormat = IRecordFormatSetting.Json;
    private long _recordFormatReadAt; // Environment.TickCount64 of the last reading

    /// <inheritdoc/>
    /// <remarks>As <c>schema_info.record_format</c> said at open, read again once a minute by the appends. Every node reads both formats.</remarks>
    public string RecordFormat => Volatile.Read(ref _recordFormat);

    /// <summary>How often the appends read <c>schema_info.record_format</c> again: a minute (tests: shorter).</summary>
    internal TimeSpan RecordFormatReadEvery { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>The step that added <c>schema_info.record_format</c>: a database migrated from empty through it stores records compressed from the start.</summary>
    private const int RecordFormatStep = 3;

    /// <summary>
    /// The last step that changed the request totals (4 added them, 5 those by minute, 6 their tokens): a database migrated
    /// from an earlier version gets both widths filled in from its entries there.
    /// </summary>
    private const int TokensStep = 6;

    /// <summary>
    /// Brings the schema to <see cref="SchemaVersion"/>. A session advisory lock serialises nodes starting together:
    /// the first applies the missing steps (each in its own transaction, with the new version), the others wait and
    /// then find nothing to do.
    /// </summary>
    private async Task MigrateAsync(Action<string>? upgrade, CancellationToken cancellationToken)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await CheckEncodingAsync(connection, cancellationToken);
        await ExecuteAsync(connection, $"SELECT pg_advisory_lock({MigrationLock})", cancellationToken);
        try
        {
            await ExecuteAsync(connection, "CREATE TABLE IF NOT EXISTS schema_info (version integer NOT NULL)", cancellationToken);
            await using (var read = new NpgsqlCommand("SELECT version FROM schema_info", connection))
            {
                var stored = await read.ExecuteScalarAsync(cancellationToken);
                if (stored is null)
                {
                    await ExecuteAsync(connection, "INSERT INTO schema_info (version) VALUES (0)", cancellationToken);
                }

                var version = stored is null ? 0 : Convert.ToInt32(stored, CultureInfo.InvariantCulture);
                if (version > SchemaVersion)
                {
                    throw new InvalidOperationException(
                        $"The PostgreSQL store {Description} has schema version {version}, newer than this Custos understands ({SchemaVersion}). Upgrade Custos.");
                }

                for (var step = version + 1; step <= SchemaVersion; step++)
                {
                    await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
                    await ExecuteAsync(connection, Migrations[step - 1], cancellationToken);
                    await ExecuteAsync(connection, $"UPDATE schema_info SET version = {step}", cancellationToken);
                    if (step == TokensStep && version > 0)
                    {
                        // From every entry, in the step's transaction; nodes of this version wait on the migration lock meanwhile.
                        // Only the last step that changed the totals fills them (both widths, again): the earlier ones' tables,
                        // made in this migration, lack its columns. A step that changes the totals again must take this over.
                        await ExecuteAsync(connection, "DELETE FROM request_totals; DELETE FROM request_minute_totals", cancellationToken);
                        await RequestTotals.FillAsync(this, Description, RequestTotals.Widths, async (totals, ct) =>
                        {
                            await using var fill = new NpgsqlBatch(connection) { BatchCommands = { TotalsCommand(totals) } };
                            await fill.ExecuteNonQueryAsync(ct);
                        }, upgrade, cancellationToken);
                    }

                    if (step == RecordFormatStep && version == 0)
                    {
                        // A new database: no node of an earlier version can run on it (they refuse its schema version).
                        await ExecuteAsync(connection, $"UPDATE schema_info SET record_format = '{IRecordFormatSetting.Compressed}'", cancellationToken);
                    }

                    await transaction.CommitAsync(cancellationToken);
                }
            }

            await using (var format = new NpgsqlCommand("SELECT record_format FROM schema_info", connection))
            {
                var stored = await format.ExecuteScalarAsync(cancellationToken) as string;
                _recordFormat = IRecordFormatSetting.IsFormat(stored) ? stored! : throw new InvalidOperationException(
                    $"The PostgreSQL store {Description} stores ledger records as '{stored}', which this Custos does not write. Upgrade Custos.");
                _recordFormatReadAt = Environment.TickCount64;
            }
        }
        finally
        {
            // A pooled connection stays open: release the lock explicitly (a broken one has lost it with its session).
            try
            {
                await ExecuteAsync(connection, $"SELECT pg_advisory_unlock({MigrationLock})", CancellationToken.None);
            }
            catch (NpgsqlException)
            {
            }
        }
    }

    private async Task CheckEncodingAsync(NpgsqlConnection connection, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand("SHOW server_encoding", connection);
        var encoding = (string?)await command.ExecuteScalarAsync(cancellationToken);
        if (!string.Equals(encoding, "UTF8", StringComparison.OrdinalIgnoreCase))
        {
            throw new InvalidOperationException(
                $"The PostgreSQL database {Description} uses encoding {encoding}; Custos needs UTF8 (CREATE DATABASE … ENCODING 'UTF8').");
        }
    }

    /// <summary>The month of an instant as one number, year * 12 + month - 1: the key of its partition.</summary>
    internal static int MonthOf(DateTime utc) => (utc.Year * 12) + utc.Month - 1;

    /// <summary>The partition holding month <paramref name="month"/>, for example <c>ledger_2026_11</c>.</summary>
    internal static string PartitionName(int month)
        => string.Create(CultureInfo.InvariantCulture, $"ledger_{month / 12:D4}_{(month % 12) + 1:D2}");

    private static string MonthStart(int month)
        => string.Create(CultureInfo.InvariantCulture, $"{month / 12:D4}-{(month % 12) + 1:D2}-01 00:00:00+00");

    /// <inheritdoc/>
    /// <remarks>In a transaction holding the row, so two operators switching at once each get the format the other left.</remarks>
    public async Task<string> SetRecordFormatAsync(string format, CancellationToken cancellationToken = default)
    {
        if (!IRecordFormatSetting.IsFormat(format))
        {
            throw new ArgumentException($"'{format}' is not a record format: '{IRecordFormatSetting.Json}' or '{IRecordFormatSetting.Compressed}'.", nameof(format));
        }

        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await using var read = new NpgsqlCommand("SELECT record_format FROM schema_info FOR UPDATE", connection);
        var before = (string)(await read.ExecuteScalarAsync(cancellationToken))!;
        await using var write = new NpgsqlCommand("UPDATE schema_info SET record_format = $1", connection);
        write.Parameters.Add(new NpgsqlParameter { Value = format });
        await write.ExecuteNonQueryAsync(cancellationToken);
        await transaction.CommitAsync(cancellationToken);
        Volatile.Write(ref _recordFormat, format);
        return before;
    }

    /// <summary>
    /// Reads <c>schema_info.record_format</c> again when a minute has passed since the last reading, so that a switch made
    /// on another node reaches this one. A format this version does not know (written by a newer one) is ignored here:
    /// the appends go on as they were.
    /// </summary>
    private async ValueTask RefreshRecordFormatAsync(CancellationToken cancellationToken)
    {
        var now = Environment.TickCount64;
        if (now - Volatile.Read(ref _recordFormatReadAt) < (long)RecordFormatReadEvery.TotalMilliseconds)
        {
            return;
        }

        Volatile.Write(ref _recordFormatReadAt, now);
        await using var command = _dataSource.CreateCommand("SELECT record_format FROM schema_info");
        if (await command.ExecuteScalarAsync(cancellationToken) is string format && IRecordFormatSetting.IsFormat(format))
        {
            Volatile.Write(ref _recordFormat, format);
        }
    }

    /// <summary>Reads which monthly partitions exist, so the appender creates only missing ones.</summary>
    private async Task LoadPartitionsAsync(CancellationToken cancellationToken)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var command = new NpgsqlCommand(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'ledger'::regclass", connection);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            var name = reader.GetString(0);
            if (name.Length == 14 && name.StartsWith("ledger_", StringComparison.Ordinal)
                && int.TryParse(name.AsSpan(7, 4), NumberStyles.None, CultureInfo.InvariantCulture, out var year)
                && int.TryParse(name.AsSpan(12, 2), NumberStyles.None, CultureInfo.InvariantCulture, out var month))
            {
                _months[(year * 12) + month - 1] = true;
            }
        }
    }

    /// <summary>
    /// Creates the partitions of <paramref name="months"/> that do not exist yet, each in its own transaction under
    /// an advisory lock (nodes crossing into a new month together create it once). Rows of a month whose partition
    /// cannot be made land in the DEFAULT partition: the append goes on.
    /// </summary>
    private async Task EnsurePartitionsAsync(IEnumerable<int> months, CancellationToken cancellationToken)
    {
        await _partitionLock.WaitAsync(cancellationToken);
        try
        {
            await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
            foreach (var month in months)
            {
                if (_months.ContainsKey(month) || (_retryAfter.TryGetValue(month, out var after) && Environment.TickCount64 < after))
                {
                    continue;
                }

                var name = PartitionName(month);
                try
                {
                    await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
                    // Creating a partition locks the whole ledger briefly: never queue appends behind a long report for it.
                    await ExecuteAsync(connection, $"SET LOCAL lock_timeout = '5s'; SELECT pg_advisory_xact_lock({PartitionLock})", cancellationToken);
                    await using var exists = new NpgsqlCommand($"SELECT to_regclass('{name}') IS NOT NULL", connection);
                    if (!(bool)(await exists.ExecuteScalarAsync(cancellationToken))!)
                    {
                        await ExecuteAsync(connection, $"""
                            CREATE TABLE {name} PARTITION OF ledger FOR VALUES FROM ('{MonthStart(month)}') TO ('{MonthStart(month + 1)}');
                            CREATE TRIGGER ledger_no_truncate BEFORE TRUNCATE ON {name} FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
                            """, cancellationToken);
                    }

                    await transaction.CommitAsync(cancellationToken);
                    _months[month] = true;
                }
                catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.CheckViolation)
                {
                    // The DEFAULT partition already holds rows of this month (its partition could not be made in
                    // time once): they stay there, and so do the next ones.
                    _months[month] = true;
                }
                catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.LockNotAvailable)
                {
                    // Busy: this batch goes to the DEFAULT partition; a batch a minute later tries again.
                    _retryAfter[month] = Environment.TickCount64 + 60_000;
                }
            }
        }
        finally
        {
            _partitionLock.Release();
        }
    }
}
