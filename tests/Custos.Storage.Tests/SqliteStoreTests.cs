using Custos.Ledger;
using Custos.Storage;
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
}
