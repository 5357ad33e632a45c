using Custos.Errors;
using Custos.Ledger;
using Custos.Storage;
using Custos.Testing;
using Microsoft.Data.Sqlite;

namespace Custos.Storage.Tests;

/// <summary>The store contract against the embedded SQLite store, plus what only a file store has to do.</summary>
public sealed class SqliteStoreTests : StoreContract
{
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "custos-store-" + Guid.NewGuid().ToString("N"));

    protected override async Task<ICustosStore> CreateStoreAsync() => await SqliteStore.OpenAsync(_directory);

    protected override async Task<ICustosStore> OpenSameStoreAsync() => await SqliteStore.OpenAsync(_directory);

    protected override string BeforeRequestTotalsSql => "DROP TABLE request_totals; DROP TABLE request_minute_totals; UPDATE schema_info SET version = 4";

    protected override string BeforeMinuteTotalsSql => "DROP TABLE request_minute_totals; ALTER TABLE request_totals DROP COLUMN tokens; UPDATE schema_info SET version = 5";

    protected override string BeforeTokensSql => "ALTER TABLE request_totals DROP COLUMN tokens; ALTER TABLE request_minute_totals DROP COLUMN tokens; UPDATE schema_info SET version = 6";

    protected override Task AlterLedgerAsync(string sql) => ExecuteRawAsync("DROP TRIGGER IF EXISTS ledger_no_update; " + sql);

    protected override async Task ExecuteRawAsync(string sql)
    {
        await using var connection = new SqliteConnection($"Data Source={((SqliteStore)Store).Path}");
        await connection.OpenAsync();
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        await command.ExecuteNonQueryAsync();
    }

    protected override Task CleanUpAsync()
    {
        SqliteConnection.ClearAllPools();
        Directory.Delete(_directory, recursive: true);
        return Task.CompletedTask;
    }

    [Fact]
    public async Task OpenExistingAsync_NoStoreInTheFolder_FailsClearly()
    {
        var empty = Path.Combine(_directory, "empty");

        var error = await Assert.ThrowsAsync<FileNotFoundException>(() => SqliteStore.OpenExistingAsync(empty));

        Assert.Contains("No Custos store", error.Message, StringComparison.Ordinal);
        Assert.False(Directory.Exists(empty));
    }

    [Fact]
    public async Task OpenReadOnlyAsync_ReadsATamperedStore_WithoutChangingAByte_NorPuttingBackItsTriggers()
    {
        // Reading evidence must not change it: opening for a listing used to run the migrations, which put back the
        // append-only triggers someone had dropped, and checkpointed the log into the file.
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        await Store.AppendAsync([chain.Append(Admin(T0)), chain.Append(Admin(T0.AddSeconds(1)))]);
        await ExecuteRawAsync("DROP TRIGGER ledger_no_delete");
        await Store.DisposeAsync();
        SqliteConnection.ClearAllPools();
        var path = Path.Combine(_directory, "custos.db");
        var before = Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(await File.ReadAllBytesAsync(path)));

        await using (var reader = await SqliteStore.OpenReadOnlyAsync(_directory, null))
        {
            Assert.Equal((2, chain.LastHash), await reader.GetChainHeadAsync("n1"));
            await Assert.ThrowsAnyAsync<Exception>(() => reader.AppendAsync([chain.Append(Admin(T0.AddSeconds(2)))]));
        }

        SqliteConnection.ClearAllPools();
        Assert.Equal(before, Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(await File.ReadAllBytesAsync(path))));
        await using var connection = new SqliteConnection($"Data Source={path};Mode=ReadOnly");
        await connection.OpenAsync();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND name = 'ledger_no_delete'";
        Assert.Equal(0L, await command.ExecuteScalarAsync());
    }

    [Fact]
    public async Task OpenAsync_Again_KeepsTheData_AndTheSchemaVersion()
    {
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        await Store.AppendAsync([chain.Append(Admin(T0))]);

        await using var reopened = await SqliteStore.OpenAsync(_directory);

        Assert.Equal((1, chain.LastHash), await reopened.GetChainHeadAsync("n1"));
        await using var connection = new SqliteConnection($"Data Source={reopened.Path}");
        await connection.OpenAsync();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT version FROM schema_info";
        Assert.Equal((long)SqliteStore.SchemaVersion, await command.ExecuteScalarAsync());
    }

    [Fact]
    public async Task AppendAsync_CommitsWithoutCheckpointing_TheLogStaysUntilTheCheckpointThreadCopiesIt()
    {
        // With the thread never running, a commit of far more than SQLite's 1,000-page checkpoint threshold leaves
        // everything in the log: the database file does not grow inside the commit.
        var directory = Path.Combine(_directory, "never");
        await using (var store = await SqliteStore.OpenAsync(directory, Timeout.InfiniteTimeSpan))
        {
            var before = new FileInfo(store.Path).Length;

            await store.AppendAsync(Records(new HashChain("n1", 0, HashChain.Genesis), 3_000));

            Assert.Equal(before, new FileInfo(store.Path).Length);
            Assert.True(new FileInfo(store.Path + "-wal").Length > 4L * 1024 * 1024, "the commit's pages are in the log");
            Assert.Equal(3_000, await CountAsync(store.Path));
        }
    }

    [Fact]
    public async Task AppendAsync_TheCheckpointThreadCopiesTheLogIntoTheDatabaseFile()
    {
        var store = (SqliteStore)Store;
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        var before = new FileInfo(store.Path).Length;

        for (var i = 0; i < 10; i++)
        {
            await store.AppendAsync(Records(chain, 300));
        }

        await Eventually.TrueAsync(() => store.CheckpointCaughtUp, "the checkpoint thread caught up with the log", TimeSpan.FromSeconds(30));
        Assert.True(new FileInfo(store.Path).Length > before + (2L * 1024 * 1024), $"the thread copied the log into the database file: {before} -> {new FileInfo(store.Path).Length} bytes, log {new FileInfo(store.Path + "-wal").Length}");
        Assert.Equal(3_000, await CountAsync(store.Path));
    }

    [Fact]
    public async Task OpenAsync_OfAStoreMadeBeforeTheTotals_SaysWhatItIsDoing_AndHowManyEntriesItAddedUp()
    {
        var directory = Path.Combine(_directory, "upgrade");
        await using (var store = await SqliteStore.OpenAsync(directory))
        {
            var chain = new HashChain("n1", 0, HashChain.Genesis);
            await store.AppendAsync([.. Enumerable.Range(0, 5).Select(i => chain.Append(Request($"r{i}", "acme", "a", Decision.Allow, T0.AddMinutes(i))))]);
            await store.AppendAsync([chain.Append(Admin(T0))]);
        }

        await using (var connection = new SqliteConnection($"Data Source={Path.Combine(directory, "custos.db")};Pooling=False"))
        {
            await connection.OpenAsync();
            using var command = connection.CreateCommand();
            command.CommandText = BeforeRequestTotalsSql;
            await command.ExecuteNonQueryAsync();
        }

        var heard = new List<string>();
        await using (await SqliteStore.OpenAsync(directory, heard.Add))
        {
        }

        Assert.Equal(2, heard.Count);
        Assert.StartsWith("Upgrading the store " + Path.Combine(directory, "custos.db") + ": adding up its request entries", heard[0], StringComparison.Ordinal);
        Assert.Matches(@"^Request totals filled in from 5 request entries in \d+\.\d s\.$", heard[1]);

        heard.Clear();
        await using (await SqliteStore.OpenAsync(directory, heard.Add))
        {
        }

        Assert.Empty(heard); // once
    }

    [Fact]
    public async Task AppendAsync_AfterACheckpointCopiedTheWholeLog_TheLogStartsAgainFromItsBeginning()
    {
        // The thread's rounds run here, between appends: with the thread running, whether a round finishes between two
        // transactions or inside one (when the log goes on) depends on the machine's speed.
        var directory = Path.Combine(_directory, "rounds");
        await using var store = await SqliteStore.OpenAsync(directory, Timeout.InfiniteTimeSpan);
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        for (var i = 0; i < 10; i++)
        {
            await store.AppendAsync(Records(chain, 300));
        }

        var log = new FileInfo(store.Path + "-wal").Length;
        var database = new FileInfo(store.Path).Length;
        store.CheckpointRound();
        Assert.True(store.CheckpointCaughtUp, "the round copied the whole log");
        Assert.True(new FileInfo(store.Path).Length > database + (2L * 1024 * 1024), "the round copied the log into the database file");

        // As much again: had the log not started again from its beginning, it would have doubled.
        for (var i = 0; i < 10; i++)
        {
            await store.AppendAsync(Records(chain, 300));
        }

        Assert.True(new FileInfo(store.Path + "-wal").Length < log * 3 / 2, $"the log grew from {log} to {new FileInfo(store.Path + "-wal").Length} bytes");
        Assert.Equal(6_000, await CountAsync(store.Path));
    }

    [Fact]
    public async Task AppendAsync_OnceTheLogIsLong_TheWriterCopiesTheRestItselfOnce_NotAfterEveryCommit()
    {
        // The writer's own checkpoint syncs the disk on the requests' path, so it must happen once per long log. A reader
        // holds the log while the thread's round runs, so the round copies only part of it and finds it long; then the
        // writer copies the rest after its next commit, and the transaction after that starts the log again.
        var directory = Path.Combine(_directory, "writer");
        await using var store = await SqliteStore.OpenAsync(directory, Timeout.InfiniteTimeSpan, writerCheckpointFrames: 512);
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        for (var i = 0; i < 10; i++)
        {
            await store.AppendAsync(Records(chain, 300));
        }

        await using (var reader = new SqliteConnection($"Data Source={store.Path};Mode=ReadOnly;Pooling=False"))
        {
            await reader.OpenAsync();
            await using var snapshot = await reader.BeginTransactionAsync();
            using (var read = reader.CreateCommand())
            {
                read.CommandText = "SELECT count(*) FROM ledger";
                Assert.Equal(3_000L, await read.ExecuteScalarAsync());
            }

            await store.AppendAsync(Records(chain, 300));
            store.CheckpointRound();
            Assert.False(store.CheckpointCaughtUp, "the reader kept the round from copying the whole log");
        }

        Assert.Equal(0, store.WriterCheckpoints);
        await store.AppendAsync(Records(chain, 300)); // appended to the log's end, then the writer copies the rest
        Assert.Equal(1, store.WriterCheckpoints);
        var log = new FileInfo(store.Path + "-wal").Length;
        for (var i = 0; i < 4; i++)
        {
            await store.AppendAsync(Records(chain, 300));
        }

        Assert.Equal(1, store.WriterCheckpoints);
        Assert.True(new FileInfo(store.Path + "-wal").Length <= log, $"the log started again from its beginning: {log} -> {new FileInfo(store.Path + "-wal").Length} bytes");
        Assert.Equal(4_800, await CountAsync(store.Path));
    }

    [Fact]
    public async Task AppendAsync_StoresRecordsCompressed_AgainstTheFirstAsAZstdDictionary_AndEveryReaderGetsTheCanonicalBytesBack()
    {
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        var records = Enumerable.Range(0, 20)
            .Select(i => chain.Append(Request($"req-{i}", "acme", "support-web", Decision.Allow, T0.AddSeconds(i), cost: 0.0001m * i)))
            .ToArray();
        await Store.AppendAsync(records);

        await using var connection = new SqliteConnection($"Data Source={((SqliteStore)Store).Path};Mode=ReadOnly;Pooling=False");
        await connection.OpenAsync();
        using (var command = connection.CreateCommand())
        {
            command.CommandText = "SELECT typeof(record), max(length(record)), sum(length(record)) FROM ledger";
            await using var reader = await command.ExecuteReaderAsync();
            Assert.True(await reader.ReadAsync());
            Assert.Equal("blob", reader.GetString(0));
            var canonical = records.Sum(r => r.Canonical.Length);
            Assert.True(reader.GetInt64(2) * 4 < canonical, $"{reader.GetInt64(2)} bytes stored for {canonical} canonical bytes");
        }

        using (var command = connection.CreateCommand())
        {
            command.CommandText = "SELECT count(*), bytes FROM record_dictionaries";
            await using var reader = await command.ExecuteReaderAsync();
            Assert.True(await reader.ReadAsync());
            Assert.Equal(1L, reader.GetInt64(0)); // the first record, in the same transaction
            var dictionary = reader.GetFieldValue<byte[]>(1); // in zstd's format, with entropy tables drawn from the record
            Assert.Equal([0x37, 0xA4, 0x30, 0xEC], dictionary[..4]); // zstd's dictionary magic number, little-endian
            Assert.True(dictionary.AsSpan().EndsWith(records[0].Canonical.Span), "the first record is the dictionary's content");
            Assert.InRange(dictionary.Length - records[0].Canonical.Length, 8, 1024); // the id and the entropy tables before it
        }

        var read = new List<ChainEntry>();
        await foreach (var entry in Store.ReadChainAsync("n1", 1, 20))
        {
            read.Add(entry);
        }

        Assert.Equal(records.Select(r => System.Text.Encoding.UTF8.GetString(r.Canonical.Span)), read.Select(e => e.Json));
        Assert.All(read.Zip(records), pair => Assert.Equal(pair.Second.Hash, HashChain.Link(pair.Second.PrevHash, System.Text.Encoding.UTF8.GetBytes(pair.First.Json))));

        // Tools read them with SQL through custos_record(), on a connection without pooling (this one).
        LedgerRecordCodec.AddFunctions(connection);
        using var cost = connection.CreateCommand();
        cost.CommandText = "SELECT json_extract(custos_record(record), '$.cost') FROM ledger WHERE seq = 3";
        Assert.Equal("0.000200000", await cost.ExecuteScalarAsync());
    }

    [Fact]
    public async Task AnEntryBeforeTheFirstRequest_IsStoredAsItIs_AndTheDictionaryIsMadeOfTheRequest()
    {
        // A start records the policy version first: a dictionary made of it would leave the requests compressed poorly.
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        var admin = chain.Append(Admin(T0));
        var requests = Enumerable.Range(1, 10).Select(i => chain.Append(Request($"req-{i}", "acme", "support-web", Decision.Allow, T0.AddSeconds(i)))).ToArray();
        await Store.AppendAsync([admin, .. requests]);

        await using var connection = new SqliteConnection($"Data Source={((SqliteStore)Store).Path};Mode=ReadOnly;Pooling=False");
        await connection.OpenAsync();
        using (var command = connection.CreateCommand())
        {
            command.CommandText = "SELECT typeof(record), length(record) FROM ledger ORDER BY seq";
            await using var reader = await command.ExecuteReaderAsync();
            var rows = new List<(string Type, long Length)>();
            while (await reader.ReadAsync())
            {
                rows.Add((reader.GetString(0), reader.GetInt64(1)));
            }

            Assert.Equal(["text", .. Enumerable.Repeat("blob", 10)], rows.Select(r => r.Type));
            Assert.All(rows.Skip(1).Zip(requests), pair => Assert.True(pair.First.Length * 4 < pair.Second.Canonical.Length));
        }

        using (var command = connection.CreateCommand())
        {
            command.CommandText = "SELECT bytes FROM record_dictionaries";
            var dictionary = (byte[])(await command.ExecuteScalarAsync())!;
            Assert.True(dictionary.AsSpan().EndsWith(requests[0].Canonical.Span), "the first request is the dictionary's content");
        }

        var read = new List<ChainEntry>();
        await foreach (var entry in Store.ReadChainAsync("n1", 1, 11))
        {
            read.Add(entry);
        }

        Assert.Equal(new[] { admin }.Concat(requests).Select(r => System.Text.Encoding.UTF8.GetString(r.Canonical.Span)), read.Select(e => e.Json));
    }

    [Theory]
    [InlineData("{}")]
    [InlineData("{\"kind\":\"x\"}")]
    public void EvenATinyRecord_MakesADictionaryThatRecordsCompressAgainst_AndDecompressFrom(string first)
    {
        using var encoder = new RecordEncoder();
        var dictionary = encoder.DictionaryFor(System.Text.Encoding.UTF8.GetBytes(first)).ToArray();
        encoder.UseDictionary(1, dictionary);
        var canonical = new HashChain("n1", 0, HashChain.Genesis).Append(Request("req-1", "acme", "support-web", Decision.Allow, T0)).Canonical.ToArray();
        var stored = encoder.Encode(canonical).ToArray();

        using var decompressor = new ZstdSharp.Decompressor();
        decompressor.LoadDictionary(dictionary);
        Assert.Equal(canonical, decompressor.Unwrap(stored.AsSpan(5)).ToArray());
    }

    [Fact]
    public async Task RecordsCompressedAgainstARawDictionary_AsBefore_AreStillRead()
    {
        // What the previous version wrote: the first record itself as the dictionary, and no dictionary id in the frames.
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        var records = Enumerable.Range(0, 3).Select(i => chain.Append(Request($"req-{i}", "acme", "support-web", Decision.Allow, T0.AddSeconds(i)))).ToArray();
        await Store.AppendAsync([records[0]]); // creates the schema (and a dictionary of the new kind, id 1)
        await using (var connection = new SqliteConnection($"Data Source={((SqliteStore)Store).Path};Pooling=False"))
        {
            await connection.OpenAsync();
            using var command = connection.CreateCommand();
            command.CommandText = "INSERT INTO record_dictionaries (created_at, bytes) VALUES ('2026-11-29T00:00:00.000Z', $bytes) RETURNING id";
            command.Parameters.AddWithValue("$bytes", records[0].Canonical.ToArray());
            var id = (long)(await command.ExecuteScalarAsync())!;
            using var old = new ZstdSharp.Compressor(-3);
            old.LoadDictionary(records[0].Canonical.Span);
            foreach (var record in records.Skip(1))
            {
                var frame = old.Wrap(record.Canonical.Span).ToArray();
                byte[] blob = [LedgerRecordCodec.ZstdWithDictionary, .. BitConverter.GetBytes((uint)id), .. frame];
                using var insert = connection.CreateCommand();
                insert.CommandText = $"""
                    INSERT INTO ledger (chain_id, seq, kind, ts, request_id, tenant, record, prev_hash, hash)
                    VALUES ('n1', {record.Seq}, 'request', '{LedgerTime.Format(record.Record.Timestamp)}', 'req-{record.Seq - 1}', 'acme', $record, '{record.PrevHash}', '{record.Hash}')
                    """;
                insert.Parameters.AddWithValue("$record", blob);
                await insert.ExecuteNonQueryAsync();
            }
        }

        var read = new List<ChainEntry>();
        await foreach (var entry in Store.ReadChainAsync("n1", 1, 3))
        {
            read.Add(entry);
        }

        Assert.Equal(records.Select(r => System.Text.Encoding.UTF8.GetString(r.Canonical.Span)), read.Select(e => e.Json));
    }

    [Fact]
    public async Task EntriesStoredAsText_BeforeSchemaVersion4_AreReadBesideCompressedOnes()
    {
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        var old = chain.Append(Request("req-old", "acme", "support-web", Decision.Allow, T0));
        var json = System.Text.Encoding.UTF8.GetString(old.Canonical.Span);
        await ExecuteRawAsync($"""
            INSERT INTO ledger (chain_id, seq, kind, ts, request_id, tenant, record, prev_hash, hash)
            VALUES ('n1', 1, 'request', '{LedgerTime.Format(T0)}', 'req-old', 'acme', '{json.Replace("'", "''", StringComparison.Ordinal)}', '{old.PrevHash}', '{old.Hash}')
            """);
        var next = chain.Append(Request("req-new", "acme", "support-web", Decision.Deny, T0.AddSeconds(1)));
        await Store.AppendAsync([next]);

        var read = new List<StoredRecord>();
        await foreach (var row in Store.QueryAsync(new LedgerQuery { Tenant = "acme" }))
        {
            read.Add(row);
        }

        Assert.Equal([json, System.Text.Encoding.UTF8.GetString(next.Canonical.Span)], read.Select(r => r.Json));
    }

    [Fact]
    public async Task ARecordThatCannotBeRead_FailsClearly_NamingWhy()
    {
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        var record = chain.Append(Request("req-1", "acme", "support-web", Decision.Allow, T0));
        await Store.AppendAsync([record]);
        byte[] stored;
        await using (var connection = new SqliteConnection($"Data Source={((SqliteStore)Store).Path};Mode=ReadOnly;Pooling=False"))
        {
            await connection.OpenAsync();
            using var command = connection.CreateCommand();
            command.CommandText = "SELECT record FROM ledger WHERE seq = 1";
            stored = (byte[])(await command.ExecuteScalarAsync())!;
        }

        var dictionaries = LedgerRecordCodec.Dictionaries(((SqliteStore)Store).Path);
        Assert.Equal(System.Text.Encoding.UTF8.GetString(record.Canonical.Span), dictionaries.Decode(stored));

        var unknown = Assert.Throws<InvalidDataException>(() => dictionaries.Decode([9, 1, 0, 0, 0, 7]));
        Assert.Contains("format 9", unknown.Message, StringComparison.Ordinal);

        var missing = stored.ToArray();
        missing[1] = 99;
        Assert.Contains("dictionary 99", Assert.Throws<InvalidDataException>(() => dictionaries.Decode(missing)).Message, StringComparison.Ordinal);

        Assert.Throws<InvalidDataException>(() => dictionaries.Decode(stored[..^4]));
        Assert.Contains("ends after 3 bytes, before its data", Assert.Throws<InvalidDataException>(() => dictionaries.Decode(stored[..3])).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void RecordEncoder_TakesANewDictionary_OnceAQuarterOfTheRecordsCompressPoorly()
    {
        using var encoder = new RecordEncoder();
        Assert.True(encoder.WantsDictionary);
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        var first = chain.Append(Request("req-0", "acme", "support-web", Decision.Allow, T0)).Canonical.Span;
        encoder.UseDictionary(1, first);

        for (var i = 1; i <= RecordEncoder.MinRecordsPerDictionary; i++)
        {
            var canonical = chain.Append(Request($"req-{i}", "acme", "support-web", Decision.Allow, T0.AddSeconds(i))).Canonical.Span;
            Assert.True(encoder.Encode(canonical).Length * 4 < canonical.Length);
        }

        Assert.False(encoder.WantsDictionary); // alike records compress well: the dictionary stays

        for (var i = 0; i < RecordEncoder.MinRecordsPerDictionary / 2; i++)
        {
            // Records unlike the dictionary (another deployment's names, random ones).
            static string Name() => Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(200));
            encoder.Encode(chain.Append(Request(Name(), Name(), Name(), Decision.Deny, T0, Name(), Name())).Canonical.Span);
        }

        Assert.True(encoder.WantsDictionary);
    }

    private static ChainedRecord[] Records(HashChain chain, int count)
    {
        var records = new ChainedRecord[count];
        for (var i = 0; i < count; i++)
        {
            // About two kilobytes stored each, as a request's record was before records were compressed: random, so it
            // does not compress. In the model, which the request totals do not sum by: every request adds to one total.
            var model = Convert.ToHexString(System.Security.Cryptography.RandomNumberGenerator.GetBytes(450));
            records[i] = chain.Append(Request("r-" + Guid.NewGuid().ToString("N"), "acme", "a", Decision.Allow, T0.AddSeconds(i), model: model));
        }

        return records;
    }

    private static async Task<long> CountAsync(string path)
    {
        await using var connection = new SqliteConnection($"Data Source={path};Mode=ReadOnly;Pooling=False");
        await connection.OpenAsync();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT count(*) FROM ledger";
        return (long)(await command.ExecuteScalarAsync())!;
    }
}
