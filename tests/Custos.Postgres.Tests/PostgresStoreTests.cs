using Custos.Errors;
using Custos.Ledger;
using Custos.Storage.Tests;
using Npgsql;

namespace Custos.Postgres.Tests;

/// <summary>The store contract against a real PostgreSQL (a database per test), plus what only PostgreSQL has to do.</summary>
[Collection(PostgresCollection.Name)]
public sealed class PostgresStoreTests(PostgresServerFixture server) : StoreContract
{
    private string? _connectionString;

    private string ConnectionString => _connectionString ?? throw new InvalidOperationException("No database yet.");

    protected override async Task<ICustosStore> CreateStoreAsync()
    {
        _connectionString = await server.CreateDatabaseAsync();
        return await PostgresStore.OpenAsync(_connectionString);
    }

    protected override async Task<ICustosStore> OpenSameStoreAsync() => await PostgresStore.OpenAsync(ConnectionString);

    protected override string BeforeRequestTotalsSql => "DROP TABLE request_totals; DROP TABLE request_minute_totals; UPDATE schema_info SET version = 3";

    protected override string BeforeMinuteTotalsSql => "DROP TABLE request_minute_totals; ALTER TABLE request_totals DROP COLUMN tokens; UPDATE schema_info SET version = 4";

    protected override string BeforeTokensSql => "ALTER TABLE request_totals DROP COLUMN tokens; ALTER TABLE request_minute_totals DROP COLUMN tokens; UPDATE schema_info SET version = 5";

    protected override Task AlterLedgerAsync(string sql) => ExecuteRawAsync("SET session_replication_role = replica; " + sql); // ordinary triggers do not fire

    protected override async Task ExecuteRawAsync(string sql)
    {
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }

    protected override async Task CleanUpAsync()
    {
        if (_connectionString is not null)
        {
            await server.DropDatabaseAsync(_connectionString);
        }
    }

    private async Task<T> ScalarAsync<T>(string sql)
    {
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        return (T)(await command.ExecuteScalarAsync())!;
    }

    private async Task<List<(string Partition, long Rows)>> RowsPerPartitionAsync()
    {
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT tableoid::regclass::text, count(*) FROM ledger GROUP BY 1 ORDER BY 1", connection);
        await using var reader = await command.ExecuteReaderAsync();
        var result = new List<(string, long)>();
        while (await reader.ReadAsync())
        {
            result.Add((reader.GetString(0), reader.GetInt64(1)));
        }

        return result;
    }

    private async Task<string[]> PartitionsAsync()
    {
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'ledger'::regclass ORDER BY 1", connection);
        await using var reader = await command.ExecuteReaderAsync();
        var result = new List<string>();
        while (await reader.ReadAsync())
        {
            result.Add(reader.GetString(0));
        }

        return [.. result];
    }

    [Fact]
    public async Task Verify_FindsAnAlteredCostColumn_WhichTheSpendFiguresSum()
    {
        await Store.AppendAsync(EveryKind(new HashChain("n1", 0, HashChain.Genesis)));
        using var key = System.Security.Cryptography.ECDsa.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP256);
        var options = new VerificationOptions { PublicKeys = [key] };
        Assert.True((await LedgerVerifier.VerifyAsync(Store, options)).Ok);

        await AlterLedgerAsync("UPDATE ledger SET cost = 0 WHERE chain_id = 'n1' AND seq = 1");

        var problem = Assert.Single((await LedgerVerifier.VerifyAsync(Store, options)).Problems);
        Assert.Equal(("altered_columns", 1L, "r1"), (problem.Kind, problem.Seq, problem.RequestId));
        Assert.StartsWith("its cost column says '0' but the entry says '0.000123400'", problem.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task OpenAsync_CreatesPartitionsForThisMonthAndTheNext_AndTheDefault()
    {
        var now = DateTime.UtcNow;
        var next = now.AddMonths(1);

        var partitions = await PartitionsAsync();

        Assert.Contains($"ledger_{now:yyyy_MM}", partitions);
        Assert.Contains($"ledger_{next:yyyy_MM}", partitions);
        Assert.Contains("ledger_default", partitions);
        Assert.Equal(3, partitions.Length);
    }

    [Fact]
    public async Task AppendAsync_BatchSpanningNewMonths_LandsInTheirOwnPartitions()
    {
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        var lastOfMarch = new DateTimeOffset(2031, 3, 31, 23, 59, 59, TimeSpan.Zero).AddTicks(9_999_990);
        await Store.AppendAsync(
        [
            chain.Append(Request("r1", "acme", "a", Decision.Allow, lastOfMarch)),
            chain.Append(Request("r2", "acme", "a", Decision.Allow, lastOfMarch.AddTicks(10))), // 2031-04-01T00:00:00Z exactly
            chain.Append(Request("r3", "acme", "a", Decision.Allow, lastOfMarch.AddDays(1))),
        ]);

        var rows = await RowsPerPartitionAsync();

        Assert.Equal([("ledger_2031_03", 1L), ("ledger_2031_04", 2L)], rows);
        Assert.Contains("ledger_2031_05", await PartitionsAsync()); // the month after, ready before it starts
        await using var other = await PostgresStore.OpenAsync(ConnectionString); // a node that has not seen them
        var chainTwo = new HashChain("n2", 0, HashChain.Genesis);
        await other.AppendAsync([chainTwo.Append(Request("r4", "acme", "a", Decision.Allow, lastOfMarch))]);
        Assert.Equal([("ledger_2031_03", 2L), ("ledger_2031_04", 2L)], await RowsPerPartitionAsync());
    }

    [Fact]
    public async Task AppendAsync_RowsInTheDefaultPartition_DoNotStopTheAppender()
    {
        // Rows of a month land in DEFAULT (as when its partition could not be made in time); the partition for that
        // month then cannot be created, and the appender keeps writing there instead of failing.
        await ExecuteRawAsync("""
            INSERT INTO ledger (chain_id, seq, kind, ts, record, prev_hash, hash)
            VALUES ('old', 1, 'admin', '2035-01-15T00:00:00Z', '\x7b7d', 'p', 'h')
            """);
        var chain = new HashChain("n1", 0, HashChain.Genesis);

        await Store.AppendAsync([chain.Append(Request("r1", "acme", "a", Decision.Allow, new DateTimeOffset(2035, 1, 20, 0, 0, 0, TimeSpan.Zero)))]);

        Assert.Equal([("ledger_default", 2L)], await RowsPerPartitionAsync());
        Assert.Equal((1, chain.LastHash), await Store.GetChainHeadAsync("n1"));
    }

    [Fact]
    public async Task Ledger_Truncate_IsRefused_OnTheTableAndOnAPartition()
    {
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        await Store.AppendAsync([chain.Append(Request("r1", "acme", "a", Decision.Allow, DateTimeOffset.UtcNow))]);

        var whole = await Assert.ThrowsAsync<PostgresException>(() => ExecuteRawAsync("TRUNCATE ledger"));
        var partition = await Assert.ThrowsAsync<PostgresException>(() => ExecuteRawAsync($"TRUNCATE ledger_{DateTime.UtcNow:yyyy_MM}"));
        var direct = await Assert.ThrowsAsync<PostgresException>(() => ExecuteRawAsync($"DELETE FROM ledger_{DateTime.UtcNow:yyyy_MM}"));

        Assert.All([whole, partition, direct], e => Assert.Contains("append-only", e.MessageText, StringComparison.Ordinal));
        Assert.Equal(1L, await ScalarAsync<long>("SELECT count(*) FROM ledger"));
    }

    [Theory]
    [InlineData("SELECT seq, hash FROM ledger WHERE chain_id = 'n1' ORDER BY seq DESC LIMIT 1", "chain_id_seq_ts")]
    [InlineData("SELECT seq FROM ledger WHERE chain_id = 'n1' AND seq >= 5 AND seq <= 9 ORDER BY seq", "chain_id_seq_ts")]
    [InlineData("SELECT seq FROM ledger WHERE request_id = 'r1'", "request_id")]
    [InlineData("SELECT seq FROM ledger WHERE tenant = 'acme' AND ts >= '2026-11-02Z' AND ts < '2026-11-03Z'", "tenant_ts")]
    [InlineData("SELECT seq FROM ledger WHERE consumer = 'a' AND ts >= '2026-11-02Z'", "consumer_ts")]
    [InlineData("SELECT seq FROM ledger WHERE ts >= '2026-11-02Z' AND ts < '2026-11-03Z'", "ts_idx")]
    public async Task LedgerQueries_UseTheirIndexes(string query, string index)
    {
        await using var connection = new NpgsqlConnection(ConnectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SET enable_seqscan = off; SET enable_bitmapscan = off; EXPLAIN " + query, connection);
        var plan = new List<string>();
        await using (var reader = await command.ExecuteReaderAsync())
        {
            while (await reader.ReadAsync())
            {
                plan.Add(reader.GetString(0));
            }
        }

        Assert.Contains(plan, line => line.Contains("Index", StringComparison.Ordinal) && line.Contains(index, StringComparison.Ordinal));
        Assert.DoesNotContain(plan, line => line.Contains("Seq Scan", StringComparison.Ordinal));
    }

    [Fact]
    public async Task OpenAsync_Again_IsIdempotent()
    {
        await using (await PostgresStore.OpenAsync(ConnectionString))
        {
        }

        await using var again = await PostgresStore.OpenAsync(ConnectionString);

        Assert.Equal(1L, await ScalarAsync<long>("SELECT count(*) FROM schema_info"));
        Assert.Equal(PostgresStore.SchemaVersion, await ScalarAsync<int>("SELECT version FROM schema_info"));
        Assert.Equal(3, (await PartitionsAsync()).Length);
    }

    [Fact]
    public async Task OpenAsync_ThreeNodesAtOnceOnAnEmptyDatabase_MigrateOnce()
    {
        var fresh = await server.CreateDatabaseAsync();
        try
        {
            for (var round = 0; round < 3; round++)
            {
                var stores = await Task.WhenAll(Enumerable.Range(0, 3).Select(_ => Task.Run(() => PostgresStore.OpenAsync(fresh))));
                foreach (var store in stores)
                {
                    await store.DisposeAsync();
                }
            }

            await using var connection = new NpgsqlConnection(fresh);
            await connection.OpenAsync();
            await using var command = new NpgsqlCommand("SELECT (SELECT count(*) FROM schema_info), (SELECT max(version) FROM schema_info)", connection);
            await using var reader = await command.ExecuteReaderAsync();
            Assert.True(await reader.ReadAsync());
            Assert.Equal((1L, PostgresStore.SchemaVersion), (reader.GetInt64(0), reader.GetInt32(1)));
        }
        finally
        {
            await server.DropDatabaseAsync(fresh);
        }
    }

    [Fact]
    public async Task OpenAsync_SchemaNewerThanTheCode_FailsClearly()
    {
        await ExecuteRawAsync($"UPDATE schema_info SET version = {PostgresStore.SchemaVersion + 1}");

        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => PostgresStore.OpenAsync(ConnectionString));

        Assert.Contains($"schema version {PostgresStore.SchemaVersion + 1}", error.Message, StringComparison.Ordinal);
        Assert.Contains("newer than this Custos understands", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(server.Password, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Description_NamesHostPortAndDatabase_NeverThePassword()
    {
        var database = new NpgsqlConnectionStringBuilder(ConnectionString).Database;

        Assert.Equal($"postgresql://127.0.0.1:{server.Port}/{database}", Store.Description);
        Assert.DoesNotContain(server.Password, Store.Description, StringComparison.Ordinal);
    }

    [Fact]
    public async Task OpenAsync_NoServer_FailsClearly_WithoutThePassword()
    {
        var nowhere = new NpgsqlConnectionStringBuilder(ConnectionString) { Port = FreePort(), Timeout = 2 }.ConnectionString;

        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => PostgresStore.OpenAsync(nowhere));

        Assert.StartsWith("Cannot open the PostgreSQL store postgresql://127.0.0.1:", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(server.Password, error.Message, StringComparison.Ordinal);
        Assert.IsAssignableFrom<NpgsqlException>(error.InnerException);
    }

    [Fact]
    public async Task OpenAsync_WrongPassword_FailsClearly_WithoutEitherPassword()
    {
        var wrong = new NpgsqlConnectionStringBuilder(ConnectionString) { Password = "not-the-password-42" }.ConnectionString;

        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => PostgresStore.OpenAsync(wrong));

        Assert.Contains("password authentication failed", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("not-the-password-42", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("Host=db;Password=s3cret-pg;Timeout=soon", "its option 'timeout' is not one Npgsql accepts, or its value is not valid")]
    [InlineData("Host=db;Password=s3cret-pg;Colour=blue", "its option 'colour' is not one Npgsql accepts, or its value is not valid")]
    [InlineData("s3cret-pg", "it is not Key=Value pairs separated by ';', such as Host=db;Database=custos;Username=custos;Password=…")]
    public async Task OpenAsync_NoConnectionString_IsAFormatException_NamingTheOptionNeverAValue(string connectionString, string message)
    {
        // Was Npgsql's ArgumentException ("Format of the initialization string does not conform to specification…").
        var error = await Assert.ThrowsAsync<FormatException>(() => PostgresStore.OpenAsync(connectionString));

        Assert.Equal(message, error.Message);
        Assert.DoesNotContain("s3cret-pg", error.Message, StringComparison.Ordinal);
    }

    private static int FreePort()
    {
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        return ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
    }
}
