using System.Collections.Concurrent;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using Custos.Ledger;
using Custos.Policy;
using Npgsql;
using NpgsqlTypes;

namespace Custos.Postgres;

/// <summary>
/// The store many gateway nodes share: policy versions, the ledger (partitioned by month), the registry, evidence and
/// alerts in one PostgreSQL database. Every method is safe with callers on other nodes: each node appends only its
/// own chain, and whatever must be serialised across nodes (migrations, policy versions, new partitions) is, with
/// PostgreSQL advisory locks.
/// </summary>
public sealed partial class PostgresStore : ICustosStore, IRecordFormatSetting
{
    private const string LedgerColumns = "chain_id, seq, kind, ts, request_id, tenant, service, consumer, decision, model, cost, record, prev_hash, hash";

    private readonly NpgsqlDataSource _dataSource;
    private readonly ConcurrentDictionary<int, bool> _months = new();
    private readonly Dictionary<int, long> _retryAfter = [];
    private readonly SemaphoreSlim _partitionLock = new(1, 1);
    private readonly RecordDictionaries _dictionaries;
    private RecordEncoder? _encoder; // between appends; an append takes it for its batch, so two appends at once never share one

    private PostgresStore(NpgsqlDataSource dataSource, string description)
    {
        _dataSource = dataSource;
        Description = description;
        _dictionaries = new RecordDictionaries(description);
    }

    /// <summary>Where the store is: <c>postgresql://host:port/database</c>, never the user's password.</summary>
    public string Description { get; }

    /// <summary>How a batch reaches the ledger table: binary COPY (the default, measured faster) or one INSERT of arrays.</summary>
    internal AppendMode Mode { get; set; } = AppendMode.Copy;

    /// <summary>
    /// Opens the store in the database <paramref name="connectionString"/> names (an Npgsql connection string), brings
    /// its schema up to date and makes sure the ledger has partitions for this month and the next.
    /// </summary>
    /// <exception cref="InvalidOperationException">
    /// The server cannot be reached or refuses the login, the database is not UTF8, or its schema is newer than this
    /// code. The message names the server and database, never the password.
    /// </exception>
    /// <exception cref="FormatException">The string is not a connection string Npgsql reads; the message names the option, never a value.</exception>
    public static Task<PostgresStore> OpenAsync(string connectionString, CancellationToken cancellationToken = default)
        => OpenAsync(connectionString, null, cancellationToken);

    /// <summary>
    /// Opens the store as <see cref="OpenAsync(string, CancellationToken)"/>; when the migration takes long (a database made
    /// before the request totals, which are filled in from its entries once), <paramref name="upgrade"/> hears how it goes.
    /// </summary>
    public static async Task<PostgresStore> OpenAsync(string connectionString, Action<string>? upgrade, CancellationToken cancellationToken = default)
    {
        NpgsqlDataSourceBuilder builder;
        try
        {
            builder = new NpgsqlDataSourceBuilder(connectionString);
        }
        catch (ArgumentException e)
        {
            // Named by its option, never its value: the string may hold a password.
            throw new FormatException(e.ParamName is { Length: > 0 } option
                ? $"its option '{option}' is not one Npgsql accepts, or its value is not valid"
                : "it is not Key=Value pairs separated by ';', such as Host=db;Database=custos;Username=custos;Password=…", e);
        }

        var settings = builder.ConnectionStringBuilder;
        if (string.IsNullOrEmpty(settings.ApplicationName))
        {
            settings.ApplicationName = "custos";
        }

        var description = string.Create(CultureInfo.InvariantCulture,
            $"postgresql://{settings.Host ?? "localhost"}:{settings.Port}/{settings.Database ?? settings.Username ?? "postgres"}");
        var store = new PostgresStore(builder.Build(), description);
        try
        {
            await store.MigrateAsync(upgrade, cancellationToken);
            await store.LoadPartitionsAsync(cancellationToken);
            var month = MonthOf(DateTime.UtcNow);
            await store.EnsurePartitionsAsync([month, month + 1], cancellationToken);
            return store;
        }
        catch (Exception e) when (e is NpgsqlException or TimeoutException)
        {
            await store.DisposeAsync();
            throw new InvalidOperationException($"Cannot open the PostgreSQL store {description}: {e.Message}", e);
        }
        catch
        {
            await store.DisposeAsync();
            throw;
        }
    }

    /// <inheritdoc/>
    public async Task<(long Seq, string Hash)> GetChainHeadAsync(string chainId, CancellationToken cancellationToken = default)
    {
        await using var command = _dataSource.CreateCommand("SELECT seq, hash FROM ledger WHERE chain_id = $1 ORDER BY seq DESC LIMIT 1");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = chainId });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        return await reader.ReadAsync(cancellationToken) ? (reader.GetInt64(0), reader.GetString(1)) : (0, HashChain.Genesis);
    }

    /// <inheritdoc/>
    /// <remarks>
    /// On every request's path (through the ledger writer): one transaction per batch, the rows sent by binary COPY
    /// (the canonical JSON as the bytes that were hashed), then one upsert of the batch's credentials (the latest use
    /// wins, whichever node writes last). A batch reaching into a month without a partition creates it first.
    /// </remarks>
    public async Task AppendAsync(IReadOnlyList<ChainedRecord> batch, CancellationToken cancellationToken = default)
    {
        if (batch.Count == 0)
        {
            return;
        }

        List<int>? missing = null;
        var last = -1;
        foreach (var item in batch)
        {
            var month = MonthOf(item.Record.Timestamp.UtcDateTime);
            if (month != last && !_months.ContainsKey(month))
            {
                (missing ??= []).Add(month);
                missing.Add(month + 1);
            }

            last = month;
        }

        if (missing is not null)
        {
            await EnsurePartitionsAsync(missing.Distinct().Order(), cancellationToken);
        }

        await RefreshRecordFormatAsync(cancellationToken);
        var encoder = RecordFormat == IRecordFormatSetting.Compressed ? Interlocked.Exchange(ref _encoder, null) ?? new RecordEncoder() : null;
        try
        {
            await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
            await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
            var dictionary = encoder is { WantsDictionary: true } ? await AddDictionaryAsync(connection, encoder, batch, cancellationToken) : default;
            var compressing = encoder is { HasDictionary: true } ? encoder : null; // none before the first request entry: stored as they are
            var usage = Mode == AppendMode.Copy
                ? await CopyAsync(connection, batch, compressing, cancellationToken)
                : await InsertAsync(connection, batch, compressing, cancellationToken);
            var totals = new RequestTotals();
            var minuteTotals = new RequestTotals(RequestTotals.MinuteSeconds);
            foreach (var item in batch)
            {
                RequestTotals.AddToEach(item.Record, totals, minuteTotals);
            }

            // The credentials' last use and the request totals in one round trip: each trip is a switch to PostgreSQL and back.
            await using (var statements = new NpgsqlBatch(connection))
            {
                if (usage is not null)
                {
                    statements.BatchCommands.Add(UsageCommand(usage));
                }

                if (totals.Count > 0)
                {
                    statements.BatchCommands.Add(TotalsCommand(totals));
                    statements.BatchCommands.Add(TotalsCommand(minuteTotals));
                }

                if (statements.BatchCommands.Count > 0)
                {
                    await statements.PrepareAsync(cancellationToken); // parsed and planned once per connection, not per batch
                    await statements.ExecuteNonQueryAsync(cancellationToken);
                }
            }

            await transaction.CommitAsync(cancellationToken);
            if (dictionary.Bytes is not null)
            {
                _dictionaries.Add(dictionary.Id, dictionary.Bytes); // this node reads its own records without fetching it
            }
        }
        catch
        {
            encoder?.Dispose(); // a dictionary it took in this transaction is gone
            encoder = null;
            throw;
        }
        finally
        {
            if (encoder is not null && Interlocked.CompareExchange(ref _encoder, encoder, null) is not null)
            {
                encoder.Dispose();
            }
        }
    }

    /// <summary>
    /// Stores a new record dictionary in the append's transaction and compresses against it from now on: made of the batch's
    /// first request entry (<see cref="RecordEncoder.MayBeDictionary"/>). A batch without one leaves the encoder as it was.
    /// </summary>
    private static async Task<(uint Id, byte[]? Bytes)> AddDictionaryAsync(NpgsqlConnection connection, RecordEncoder encoder,
        IReadOnlyList<ChainedRecord> batch, CancellationToken cancellationToken)
    {
        ChainedRecord? found = null;
        foreach (var item in batch)
        {
            if (RecordEncoder.MayBeDictionary(item.Record))
            {
                found = item;
                break;
            }
        }

        if (found is not { } sample)
        {
            return default;
        }

        var bytes = encoder.DictionaryFor(sample.Canonical.Span).ToArray();
        await using var command = new NpgsqlCommand("INSERT INTO record_dictionaries (created_at, chain_id, bytes) VALUES ($1, $2, $3) RETURNING id", connection);
        command.Parameters.Add(new NpgsqlParameter { Value = Utc(sample.Record.Timestamp) });
        command.Parameters.Add(new NpgsqlParameter { Value = sample.ChainId });
        command.Parameters.Add(new NpgsqlParameter { Value = bytes });
        var id = (long)(await command.ExecuteScalarAsync(cancellationToken))!;
        encoder.UseDictionary(id, bytes);
        return ((uint)id, bytes);
    }

    private static async Task<SortedDictionary<string, DateTime>?> CopyAsync(NpgsqlConnection connection, IReadOnlyList<ChainedRecord> batch,
        RecordEncoder? encoder, CancellationToken cancellationToken)
    {
        SortedDictionary<string, DateTime>? usage = null;
        await using var importer = await connection.BeginBinaryImportAsync($"COPY ledger ({LedgerColumns}) FROM STDIN (FORMAT BINARY)", cancellationToken);
        foreach (var item in batch)
        {
            var record = item.Record;
            var request = record as RequestRecord;
            var ts = Utc(record.Timestamp);
            if (request is { UsedCredential: true, CredentialId: { } credentialId }) // not a refusal of the credential itself
            {
                Use(ref usage, credentialId, ts);
            }

            await importer.StartRowAsync(cancellationToken);
            await importer.WriteAsync(item.ChainId, NpgsqlDbType.Text, cancellationToken);
            await importer.WriteAsync(item.Seq, NpgsqlDbType.Bigint, cancellationToken);
            await importer.WriteAsync(record.Kind, NpgsqlDbType.Text, cancellationToken);
            await importer.WriteAsync(ts, NpgsqlDbType.TimestampTz, cancellationToken);
            await WriteTextAsync(importer, request?.RequestId, cancellationToken);
            await WriteTextAsync(importer, record.Tenant, cancellationToken);
            await WriteTextAsync(importer, request?.Service, cancellationToken);
            await WriteTextAsync(importer, request?.Consumer, cancellationToken);
            await WriteTextAsync(importer, request is null ? null : Names.Of(request.Decision), cancellationToken);
            await WriteTextAsync(importer, request?.Model, cancellationToken);
            if (request?.Cost is { } cost)
            {
                await importer.WriteAsync(RequestRecord.CanonicalCost(cost), NpgsqlDbType.Numeric, cancellationToken);
            }
            else
            {
                await importer.WriteNullAsync(cancellationToken);
            }

            await importer.WriteAsync(encoder is null ? item.Canonical : encoder.Encode(item.Canonical.Span), NpgsqlDbType.Bytea, cancellationToken);
            await importer.WriteAsync(item.PrevHash, NpgsqlDbType.Text, cancellationToken);
            await importer.WriteAsync(item.Hash, NpgsqlDbType.Text, cancellationToken);
        }

        await importer.CompleteAsync(cancellationToken);
        return usage;
    }

    private static async Task<SortedDictionary<string, DateTime>?> InsertAsync(NpgsqlConnection connection, IReadOnlyList<ChainedRecord> batch,
        RecordEncoder? encoder, CancellationToken cancellationToken)
    {
        SortedDictionary<string, DateTime>? usage = null;
        var n = batch.Count;
        var (chain, seq, kind, ts) = (new string[n], new long[n], new string[n], new DateTime[n]);
        var (requestId, tenant, service, consumer, decision, model) = (new string?[n], new string?[n], new string?[n], new string?[n], new string?[n], new string?[n]);
        var (cost, record, prev, hash) = (new decimal?[n], new byte[n][], new string[n], new string[n]);
        for (var i = 0; i < n; i++)
        {
            var item = batch[i];
            var request = item.Record as RequestRecord;
            (chain[i], seq[i], kind[i], ts[i]) = (item.ChainId, item.Seq, item.Record.Kind, Utc(item.Record.Timestamp));
            (requestId[i], tenant[i], service[i], consumer[i]) = (request?.RequestId, item.Record.Tenant, request?.Service, request?.Consumer);
            (decision[i], model[i]) = (request is null ? null : Names.Of(request.Decision), request?.Model);
            (cost[i], record[i], prev[i], hash[i]) = (request?.Cost is { } c ? RequestRecord.CanonicalCost(c) : null, (encoder is null ? item.Canonical : encoder.Encode(item.Canonical.Span)).ToArray(), item.PrevHash, item.Hash);
            if (request is { UsedCredential: true, CredentialId: { } credentialId }) // not a refusal of the credential itself
            {
                Use(ref usage, credentialId, ts[i]);
            }
        }

        await using var command = new NpgsqlCommand($"""
            INSERT INTO ledger ({LedgerColumns})
            SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::text[], $8::text[],
                $9::text[], $10::text[], $11::numeric[], $12::bytea[], $13::text[], $14::text[])
            """, connection);
        foreach (var values in new object[] { chain, seq, kind, ts, requestId, tenant, service, consumer, decision, model, cost, record, prev, hash })
        {
            command.Parameters.Add(new NpgsqlParameter { Value = values });
        }

        await command.ExecuteNonQueryAsync(cancellationToken);
        return usage;
    }

    private static void Use(ref SortedDictionary<string, DateTime>? usage, string credentialId, DateTime at)
    {
        usage ??= new SortedDictionary<string, DateTime>(StringComparer.Ordinal);
        if (!usage.TryGetValue(credentialId, out var known) || known < at)
        {
            usage[credentialId] = at;
        }
    }

    /// <summary>
    /// When each credential of a batch was last used: one row per credential, never moved back. Rows are written in
    /// one order on every node, so two nodes' batches naming the same credentials wait for each other, never deadlock.
    /// </summary>
    private static NpgsqlBatchCommand UsageCommand(SortedDictionary<string, DateTime> usage)
    {
        var command = new NpgsqlBatchCommand("""
            INSERT INTO credential_usage (credential_id, last_used)
            SELECT id, at FROM unnest($1::text[], $2::timestamptz[]) AS u (id, at) ORDER BY id COLLATE "C"
            ON CONFLICT (credential_id) DO UPDATE SET last_used = GREATEST(credential_usage.last_used, excluded.last_used)
            """);
        command.Parameters.Add(new NpgsqlParameter { Value = usage.Keys.ToArray() });
        command.Parameters.Add(new NpgsqlParameter { Value = usage.Values.ToArray() });
        return command;
    }

    /// <summary>
    /// Adds <paramref name="totals"/> to the stored request totals of their width. Rows are written in one order on every
    /// node (the quarter hours' before the minutes'), so two nodes' batches adding to the same totals wait for each other,
    /// never deadlock.
    /// </summary>
    private static NpgsqlBatchCommand TotalsCommand(RequestTotals totals)
    {
        var n = totals.Count;
        var (slot, tenant, service, consumer, decision, reasons, currency) = (new long[n], new string[n], new string[n], new string[n], new string[n], new string[n], new string[n]);
        var (requests, spend, tokens) = (new long[n], new decimal[n], new long[n]);
        var i = 0;
        foreach (var (key, total) in totals)
        {
            (slot[i], tenant[i], service[i], consumer[i], decision[i], reasons[i], currency[i]) = (key.Slot, key.Tenant, key.Service, key.Consumer, key.Decision, key.Reasons, key.Currency);
            (requests[i], spend[i], tokens[i]) = (total.Requests, total.Spend, total.Tokens);
            i++;
        }

        var command = new NpgsqlBatchCommand($"""
            INSERT INTO {RequestTotals.TableOf(totals.Width)} AS t (slot, tenant, service, consumer, decision, reasons, currency, requests, spend, tokens)
            SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::numeric[], $10::bigint[])
                AS u (slot, tenant, service, consumer, decision, reasons, currency, requests, spend, tokens)
            ORDER BY slot, tenant COLLATE "C", service COLLATE "C", consumer COLLATE "C", decision COLLATE "C", reasons COLLATE "C", currency COLLATE "C"
            ON CONFLICT (slot, tenant, service, consumer, decision, reasons, currency)
            DO UPDATE SET requests = t.requests + excluded.requests, spend = t.spend + excluded.spend, tokens = LEAST(t.tokens::numeric + excluded.tokens, 9223372036854775807)::bigint
            """);
        foreach (var values in new object[] { slot, tenant, service, consumer, decision, reasons, currency, requests, spend, tokens })
        {
            command.Parameters.Add(new NpgsqlParameter { Value = values });
        }

        return command;
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<RequestTotal> ReadTotalsAsync(int width, DateTimeOffset from, DateTimeOffset to,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await using var command = _dataSource.CreateCommand($"""
            SELECT slot, tenant, service, consumer, decision, reasons, currency, requests, spend, tokens FROM {RequestTotals.TableOf(width)}
            WHERE slot >= $1 AND slot < $2 ORDER BY slot, tenant, service, consumer, decision, reasons, currency
            """);
        command.Parameters.Add(new NpgsqlParameter { Value = RequestTotals.SecondsAtOrAfter(from) });
        command.Parameters.Add(new NpgsqlParameter { Value = RequestTotals.SecondsAtOrAfter(to) });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            yield return new RequestTotalKey(reader.GetInt64(0), reader.GetString(1), reader.GetString(2), reader.GetString(3), reader.GetString(4),
                reader.GetString(5), reader.GetString(6)).ToTotal(reader.GetInt64(7), reader.GetDecimal(8), reader.GetInt64(9));
        }
    }

    private static Task WriteTextAsync(NpgsqlBinaryImporter importer, string? value, CancellationToken cancellationToken)
        => value is null ? importer.WriteNullAsync(cancellationToken) : importer.WriteAsync(value, NpgsqlDbType.Text, cancellationToken);

    /// <summary>An instant as PostgreSQL stores it: UTC, whole microseconds (truncated, as <see cref="LedgerTime"/> writes it).</summary>
    internal static DateTime Utc(DateTimeOffset time)
    {
        var ticks = time.UtcTicks;
        return new DateTime(ticks - (ticks % 10), DateTimeKind.Utc);
    }

    /// <summary>A stored instant back as the gateway knows it.</summary>
    private static DateTimeOffset Time(System.Data.Common.DbDataReader reader, int ordinal) => new(reader.GetDateTime(ordinal), TimeSpan.Zero);

    /// <inheritdoc/>
    public async IAsyncEnumerable<StoredRecord> QueryAsync(LedgerQuery query, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        // One snapshot for the statements, so they see the same ledger.
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var snapshot = await connection.BeginTransactionAsync(System.Data.IsolationLevel.RepeatableRead, cancellationToken);
        await using var command = new NpgsqlCommand { Connection = connection, Transaction = snapshot };
        var where = new List<string>();
        foreach (var (column, value) in query.ColumnFilters())
        {
            command.Parameters.Add(new NpgsqlParameter { Value = value });
            where.Add($"{column} = ${command.Parameters.Count}");
        }

        foreach (var (column, values) in query.ScopeFilters())
        {
            // One array parameter: = ANY of it, which an empty array no row meets.
            command.Parameters.Add(new NpgsqlParameter { Value = values.ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
            where.Add($"{column} = ANY(${command.Parameters.Count})");
        }

        if (query.From is { } from)
        {
            command.Parameters.Add(new NpgsqlParameter { Value = Utc(from) });
            where.Add($"ts >= ${command.Parameters.Count}");
        }

        if (query.To is { } to)
        {
            command.Parameters.Add(new NpgsqlParameter { Value = Utc(to) });
            where.Add($"ts < ${command.Parameters.Count}");
        }

        await foreach (var reader in StoreRows.NewestInOrderAsync(command, where, query.Limit, cut =>
        {
            command.Parameters.Add(new NpgsqlParameter { Value = cut, NpgsqlDbType = NpgsqlDbType.TimestampTz });
            return "$" + command.Parameters.Count.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }, cancellationToken))
        {
            yield return query.Checked(new StoredRecord(reader.GetString(0), reader.GetInt64(1), reader.GetString(2),
                await JsonAsync((NpgsqlDataReader)reader, 3, cancellationToken), reader.GetString(4), reader.GetString(5)));
        }
    }

    /// <summary>The canonical JSON of a ledger row: its exact bytes, or decompressed against the dictionary it names (fetched once).</summary>
    /// <exception cref="InvalidDataException">A compressed record cannot be read: unknown format, missing dictionary, damaged data.</exception>
    private async ValueTask<string> JsonAsync(NpgsqlDataReader reader, int ordinal, CancellationToken cancellationToken)
    {
        var stored = reader.GetFieldValue<byte[]>(ordinal);
        if (!RecordCompression.IsCompressed(stored))
        {
            return Encoding.UTF8.GetString(stored);
        }

        if (RecordCompression.DictionaryOf(stored) is var id and not 0 && !_dictionaries.Contains(id))
        {
            // On a connection of its own: the caller's is busy reading rows.
            await using var command = _dataSource.CreateCommand("SELECT bytes FROM record_dictionaries WHERE id = $1");
            command.Parameters.Add(new NpgsqlParameter { Value = (long)id });
            _dictionaries.Add(id, await command.ExecuteScalarAsync(cancellationToken) as byte[]);
        }

        return _dictionaries.Decode(stored);
    }

    /// <inheritdoc/>
    public async Task<PolicyVersion?> GetLatestAsync(CancellationToken cancellationToken = default)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        var latest = await ReadVersionsAsync(connection, "ORDER BY number DESC LIMIT 1", cancellationToken);
        return latest.Count == 0 ? null : latest[0];
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<PolicyVersion>> GetHistoryAsync(CancellationToken cancellationToken = default)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        return await ReadVersionsAsync(connection, "ORDER BY number", cancellationToken);
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Writers on every node are serialised by a transaction-scoped advisory lock: the latest version is read, compared
    /// (same document, <paramref name="basedOn"/>) and followed inside it, so two nodes never store the same number.
    /// </remarks>
    public async Task<(PolicyVersion Version, bool Created)> SaveAsync(PolicyDocument document, string author, string reason,
        DateTimeOffset now, string? source, long? basedOn = null, CancellationToken cancellationToken = default)
    {
        var canonical = PolicyVersion.CanonicalJson(document);
        var sha = PolicyVersion.HashOf(document);
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        await ExecuteAsync(connection, $"SELECT pg_advisory_xact_lock({PolicyLock})", cancellationToken);
        var found = await ReadVersionsAsync(connection, "ORDER BY number DESC LIMIT 1", cancellationToken);
        var latest = found.Count == 0 ? null : found[0];
        var (version, created) = PolicyVersion.Next(latest, document, sha, author, reason, now, basedOn);
        if (!created)
        {
            return (version, false);
        }

        await using (var command = new NpgsqlCommand("""
            INSERT INTO policy_versions (number, sha256, author, reason, created_at, canonical, source) VALUES ($1, $2, $3, $4, $5, $6, $7)
            """, connection))
        {
            command.Parameters.Add(new NpgsqlParameter { Value = version.Number });
            command.Parameters.Add(new NpgsqlParameter { Value = sha });
            command.Parameters.Add(new NpgsqlParameter { Value = author });
            command.Parameters.Add(new NpgsqlParameter { Value = reason });
            command.Parameters.Add(new NpgsqlParameter { Value = Utc(now) });
            command.Parameters.Add(new NpgsqlParameter { Value = canonical });
            command.Parameters.Add(new NpgsqlParameter { Value = (object?)source ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Text });
            await command.ExecuteNonQueryAsync(cancellationToken);
        }

        await transaction.CommitAsync(cancellationToken);
        return (version, true);
    }

    private static async Task<IReadOnlyList<PolicyVersion>> ReadVersionsAsync(NpgsqlConnection connection, string order, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand("SELECT number, sha256, author, reason, created_at, canonical FROM policy_versions " + order, connection);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var result = new List<PolicyVersion>();
        while (await reader.ReadAsync(cancellationToken))
        {
            // Checked against its stored hash: a document edited behind the gateway is refused, never put in force.
            result.Add(PolicyVersion.FromStored(reader.GetInt64(0), reader.GetString(1), reader.GetString(2), reader.GetString(3),
                Time(reader, 4), reader.GetString(5)));
        }

        return result;
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<StoredPolicyVersion> ReadPolicyVersionsAsync([EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await using var command = _dataSource.CreateCommand("SELECT number, sha256, author, reason, created_at, canonical FROM policy_versions ORDER BY number");
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            yield return new StoredPolicyVersion(reader.GetInt64(0), reader.GetString(1), reader.GetString(2), reader.GetString(3), Time(reader, 4), reader.GetString(5));
        }
    }

    private static async Task ExecuteAsync(NpgsqlConnection connection, string sql, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    private async Task<int> ExecuteAsync(string sql, Action<NpgsqlParameterCollection> bind, CancellationToken cancellationToken)
    {
        await using var command = _dataSource.CreateCommand(sql);
        bind(command.Parameters);
        return await command.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        await _dataSource.DisposeAsync();
        _partitionLock.Dispose();
    }
}

/// <summary>How <see cref="PostgresStore.AppendAsync"/> sends a batch.</summary>
internal enum AppendMode
{
    /// <summary>Binary COPY into the partitioned table.</summary>
    Copy,

    /// <summary>One <c>INSERT … SELECT FROM unnest(arrays)</c>.</summary>
    Batch,
}
