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
    public async Task AppendAsync_TheCheckpointThreadCopiesTheLog_AndTheLogStartsAgainFromItsBeginning()
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
        var log = new FileInfo(store.Path + "-wal").Length;

        // As much again: had the log not started again from its beginning, it would have doubled.
        for (var i = 0; i < 10; i++)
        {
            await store.AppendAsync(Records(chain, 300));
        }

        await Eventually.TrueAsync(() => store.CheckpointCaughtUp, "the checkpoint thread caught up with the log", TimeSpan.FromSeconds(30));
        Assert.True(new FileInfo(store.Path + "-wal").Length < log * 3 / 2, $"the log grew from {log} to {new FileInfo(store.Path + "-wal").Length} bytes");
        Assert.Equal(6_000, await CountAsync(store.Path));
    }

    private static ChainedRecord[] Records(HashChain chain, int count)
    {
        var records = new ChainedRecord[count];
        for (var i = 0; i < count; i++)
        {
            // About a kilobyte each, like a request's record.
            records[i] = chain.Append(Request("r-" + Guid.NewGuid().ToString("N"), "acme", new string('c', 900), Decision.Allow, T0.AddSeconds(i)));
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
