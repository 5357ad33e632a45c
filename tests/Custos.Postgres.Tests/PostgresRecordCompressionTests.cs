using System.Text;
using Custos.Errors;
using Custos.Ledger;
using Npgsql;

namespace Custos.Postgres.Tests;

/// <summary>Ledger records stored compressed against a dictionary of the store (schema version 3), and the databases made before it.</summary>
[Collection(PostgresCollection.Name)]
public sealed class PostgresRecordCompressionTests(PostgresServerFixture server) : IAsyncLifetime
{
    private static readonly DateTimeOffset T0 = new(2026, 11, 1, 0, 0, 0, TimeSpan.Zero);
    private static readonly System.Security.Cryptography.ECDsa Key = System.Security.Cryptography.ECDsa.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP256);
    private static readonly VerificationOptions Options = new() { PublicKeys = [Key] };
    private string _connectionString = "";

    public async Task InitializeAsync() => _connectionString = await server.CreateDatabaseAsync();

    public async Task DisposeAsync()
    {
        NpgsqlConnection.ClearAllPools();
        await server.DropDatabaseAsync(_connectionString);
    }

    private static RequestRecord Request(int i, string chain = "n1") => new()
    {
        RequestId = $"req-{chain}-{i}",
        NodeId = chain,
        Method = "POST",
        Endpoint = "/v1/chat/completions",
        Timestamp = T0.AddSeconds(i),
        Tenant = "acme",
        Consumer = "support-web",
        Service = "support-日本語-Ünï",
        Model = "gpt-4o-mini",
        Cost = 0.000123m * i,
    };

    private static List<ChainedRecord> Requests(HashChain chain, int from, int count)
        => [.. Enumerable.Range(from, count).Select(i => chain.Append(Request(i, chain.ChainId)))];

    private async Task<List<(long Seq, byte First, int Length)>> StoredAsync()
    {
        await using var connection = new NpgsqlConnection(_connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT seq, get_byte(record, 0), octet_length(record) FROM ledger ORDER BY chain_id, seq", connection);
        await using var reader = await command.ExecuteReaderAsync();
        var rows = new List<(long, byte, int)>();
        while (await reader.ReadAsync())
        {
            rows.Add((reader.GetInt64(0), (byte)reader.GetInt32(1), reader.GetInt32(2)));
        }

        return rows;
    }

    private async Task ExecuteAsync(string sql)
    {
        await using var connection = new NpgsqlConnection(_connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand(sql, connection);
        await command.ExecuteNonQueryAsync();
    }

    private static async Task<List<ChainEntry>> ReadAsync(ICustosStore store, string chain = "n1")
    {
        var entries = new List<ChainEntry>();
        await foreach (var entry in store.ReadChainAsync(chain, 1, long.MaxValue))
        {
            entries.Add(entry);
        }

        return entries;
    }

    private static string[] Json(IEnumerable<ChainedRecord> records) => [.. records.Select(r => Encoding.UTF8.GetString(r.Canonical.Span))];

    /// <summary>Brings an empty database to schema version 2, as the Custos before record compression left it.</summary>
    private async Task MakeVersion2Async()
    {
        await ExecuteAsync("CREATE TABLE schema_info (version integer NOT NULL); INSERT INTO schema_info (version) VALUES (2);");
        await ExecuteAsync(PostgresStore.Migrations[0]);
        await ExecuteAsync(PostgresStore.Migrations[1]);
    }

    [Fact]
    public async Task ANewDatabase_StoresRecordsCompressed_ReadBackExactly_ByThisNodeAndAnother()
    {
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        var records = Requests(chain, 1, 40);
        await using (var store = await PostgresStore.OpenAsync(_connectionString))
        {
            Assert.Equal(IRecordFormatSetting.Compressed, store.RecordFormat);
            await store.AppendAsync(records[..20]);
            await store.AppendAsync(records[20..]);
            Assert.Equal(Json(records), (await ReadAsync(store)).Select(e => e.Json));
        }

        var stored = await StoredAsync();
        Assert.All(stored, row => Assert.Equal(RecordCompression.ZstdWithDictionary, row.First));
        Assert.All(stored.Zip(records), pair => Assert.True(pair.First.Length * 4 < pair.Second.Canonical.Length,
            $"entry {pair.First.Seq}: {pair.First.Length} bytes stored for {pair.Second.Canonical.Length}"));

        // One dictionary for both batches, named by the node that took it; a node started afterwards fetches it to read.
        await using var other = await PostgresStore.OpenAsync(_connectionString);
        await using (var connection = new NpgsqlConnection(_connectionString))
        {
            await connection.OpenAsync();
            await using var command = new NpgsqlCommand("SELECT count(*), min(chain_id) FROM record_dictionaries", connection);
            await using var reader = await command.ExecuteReaderAsync();
            Assert.True(await reader.ReadAsync());
            Assert.Equal((1L, "n1"), (reader.GetInt64(0), reader.GetString(1)));
        }

        var read = await ReadAsync(other);
        Assert.Equal(Json(records), read.Select(e => e.Json));
        Assert.All(read.Zip(records), pair => Assert.Equal(pair.Second.Hash, HashChain.Link(pair.Second.PrevHash, Encoding.UTF8.GetBytes(pair.First.Json))));
        var queried = new List<string>();
        await foreach (var row in other.QueryAsync(new LedgerQuery { Consumer = "support-web" }))
        {
            queried.Add(row.Json);
        }

        Assert.Equal(Json(records), queried);
        Assert.True((await LedgerVerifier.VerifyAsync(other, Options)).Ok);
    }

    [Fact]
    public async Task EntriesBeforeTheFirstRequest_AreStoredAsTheyAre_AndTheDictionaryIsMadeOfARequest()
    {
        // A start records the policy version first: a dictionary made of it would leave the requests compressed poorly.
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        var admin = chain.Append(new AdminRecord { Timestamp = T0, Tenant = "acme", Actor = "ops", Action = "policy.version_created", Target = "policy" });
        var records = Requests(chain, 1, 10);
        await using var store = await PostgresStore.OpenAsync(_connectionString);
        await store.AppendAsync([admin]);
        await store.AppendAsync([chain.Append(new AdminRecord { Timestamp = T0, Tenant = "acme", Actor = "ops", Action = "credential.issued", Target = "c" }), .. records]);

        var stored = await StoredAsync();
        // The first batch as it is; the second compressed whole, against a dictionary made of its first request.
        Assert.Equal([(byte)'{', .. Enumerable.Repeat(RecordCompression.ZstdWithDictionary, 11)], stored.Select(r => r.First));
        Assert.All(stored.Skip(2).Zip(records), pair => Assert.True(pair.First.Length * 4 < pair.Second.Canonical.Length));
        await using var connection = new NpgsqlConnection(_connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand("SELECT bytes FROM record_dictionaries", connection);
        var dictionary = (byte[])(await command.ExecuteScalarAsync())!;
        Assert.True(dictionary.AsSpan().EndsWith(records[0].Canonical.Span), "the first request is the dictionary's content");
        Assert.Equal(12, (await ReadAsync(store)).Count);
    }

    [Fact]
    public async Task TwoNodesAppendingAtOnce_EachCompressAgainstTheirOwnDictionary_AndBothChainsVerify()
    {
        await using var a = await PostgresStore.OpenAsync(_connectionString);
        await using var b = await PostgresStore.OpenAsync(_connectionString);
        var (chainA, chainB) = (new HashChain("node-a", 0, HashChain.Genesis), new HashChain("node-b", 0, HashChain.Genesis));
        var (recordsA, recordsB) = (Requests(chainA, 1, 60), Requests(chainB, 1, 60));

        await Task.WhenAll(
            Task.Run(async () => { for (var i = 0; i < 60; i += 6) { await a.AppendAsync(recordsA[i..(i + 6)]); } }),
            Task.Run(async () => { for (var i = 0; i < 60; i += 6) { await b.AppendAsync(recordsB[i..(i + 6)]); } }));

        Assert.Equal(Json(recordsA), (await ReadAsync(b, "node-a")).Select(e => e.Json));
        Assert.Equal(Json(recordsB), (await ReadAsync(a, "node-b")).Select(e => e.Json));
        Assert.True((await LedgerVerifier.VerifyAsync(a, Options)).Ok);
        Assert.All(await StoredAsync(), row => Assert.Equal(RecordCompression.ZstdWithDictionary, row.First));
    }

    [Fact]
    public async Task ADatabaseUpgradedFromVersion2_KeepsStoringJson_UntilSwitched_ThenEveryNodeCompresses_AndAllIsRead()
    {
        await MakeVersion2Async();
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        var other = new HashChain("n2", 0, HashChain.Genesis);
        var records = Requests(chain, 1, 30);
        var others = Requests(other, 1, 20);
        await using var store = await PostgresStore.OpenAsync(_connectionString);
        await using var second = await PostgresStore.OpenAsync(_connectionString); // another node, reading the setting once a minute
        await using var third = await PostgresStore.OpenAsync(_connectionString); // and one reading it at every batch
        third.RecordFormatReadEvery = TimeSpan.Zero;

        // Nodes of the earlier version may still be running on it, and they cannot read compressed records.
        Assert.Equal(IRecordFormatSetting.Json, store.RecordFormat);
        await store.AppendAsync(records[..10]);
        Assert.All(await StoredAsync(), row => Assert.Equal((byte)'{', row.First));

        Assert.Equal(IRecordFormatSetting.Json, await store.SetRecordFormatAsync(IRecordFormatSetting.Compressed));
        Assert.Equal(IRecordFormatSetting.Compressed, await store.SetRecordFormatAsync(IRecordFormatSetting.Compressed));
        await store.AppendAsync(records[10..]);
        await second.AppendAsync(others[..10]);
        await third.AppendAsync(others[10..]);

        var stored = await StoredAsync();
        Assert.Equal([.. Enumerable.Repeat((byte)'{', 10), .. Enumerable.Repeat(RecordCompression.ZstdWithDictionary, 20)], stored.Take(30).Select(r => r.First));
        Assert.Equal([.. Enumerable.Repeat((byte)'{', 10), .. Enumerable.Repeat(RecordCompression.ZstdWithDictionary, 10)], stored.Skip(30).Select(r => r.First));
        Assert.Equal(IRecordFormatSetting.Json, second.RecordFormat); // until its minute is up
        await using var reopened = await PostgresStore.OpenAsync(_connectionString);
        Assert.Equal(IRecordFormatSetting.Compressed, reopened.RecordFormat);
        Assert.Equal(Json(records), (await ReadAsync(reopened)).Select(e => e.Json));
        Assert.Equal(Json(others), (await ReadAsync(reopened, "n2")).Select(e => e.Json));
        Assert.True((await LedgerVerifier.VerifyAsync(reopened, Options)).Ok);

        await Assert.ThrowsAsync<ArgumentException>(() => store.SetRecordFormatAsync("lz4"));
    }

    [Fact]
    public async Task AnAlteredCompressedRecord_OrItsDictionaryGone_IsReportedByVerify_NamingTheEntry()
    {
        await using var store = await PostgresStore.OpenAsync(_connectionString);
        await store.AppendAsync(Requests(new HashChain("n1", 0, HashChain.Genesis), 1, 5));
        Assert.True((await LedgerVerifier.VerifyAsync(store, Options)).Ok);

        // A flipped byte inside the zstd frame of entry 3 (the triggers are off for the owner who does it).
        await ExecuteAsync("SET session_replication_role = replica; UPDATE ledger SET record = set_byte(record, octet_length(record) - 3, get_byte(record, octet_length(record) - 3) # 255) WHERE seq = 3");
        var problem = Assert.Single((await LedgerVerifier.VerifyAsync(store, Options)).Problems);
        Assert.Equal(3L, problem.Seq);
        Assert.Contains(problem.Kind, (string[])["unreadable", "modified"]);

        // Entry 4 names a dictionary the store does not hold.
        await ExecuteAsync("SET session_replication_role = replica; UPDATE ledger SET record = set_byte(record, 1, 99) WHERE seq = 4");
        await using var fresh = await PostgresStore.OpenAsync(_connectionString); // a node that has not read any dictionary yet
        var entries = new List<ChainEntry>();
        var error = await Assert.ThrowsAsync<InvalidDataException>(async () =>
        {
            await foreach (var entry in fresh.ReadChainAsync("n1", 4, 4))
            {
                entries.Add(entry);
            }
        });
        Assert.Contains("dictionary 99", error.Message, StringComparison.Ordinal);
        Assert.Contains(fresh.Description, error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("UPDATE record_dictionaries SET bytes = '\\x00'")]
    [InlineData("DELETE FROM record_dictionaries")]
    [InlineData("TRUNCATE record_dictionaries")]
    public async Task RecordDictionaries_AreAppendOnly(string sql)
    {
        await using var store = await PostgresStore.OpenAsync(_connectionString);
        await store.AppendAsync(Requests(new HashChain("n1", 0, HashChain.Genesis), 1, 2));

        var error = await Assert.ThrowsAsync<PostgresException>(() => ExecuteAsync(sql));

        Assert.Contains("append-only", error.MessageText, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ARecordFormatThisVersionDoesNotWrite_FailsTheOpenClearly()
    {
        await using (await PostgresStore.OpenAsync(_connectionString))
        {
        }

        await ExecuteAsync("UPDATE schema_info SET record_format = 'brotli'");

        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => PostgresStore.OpenAsync(_connectionString));
        Assert.Contains("'brotli'", error.Message, StringComparison.Ordinal);
        Assert.Contains("Upgrade Custos", error.Message, StringComparison.Ordinal);
    }
}
