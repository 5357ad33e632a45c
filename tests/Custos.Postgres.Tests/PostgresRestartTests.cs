using Custos.Ledger;
using Npgsql;

namespace Custos.Postgres.Tests;

/// <summary>The fixture's stop and start (what fault tests use), and what the store does while the server is away.</summary>
[Collection(PostgresCollection.Name)]
public sealed class PostgresRestartTests(PostgresServerFixture server)
{
    [Fact]
    public async Task StopThenStart_SameServerAndData_TheStoreWorksAgain()
    {
        var database = await server.CreateDatabaseAsync();
        try
        {
            await using var store = await PostgresStore.OpenAsync(database);
            var chain = new HashChain("n1", 0, HashChain.Genesis);
            await store.AppendAsync([chain.Append(new AdminRecord { Timestamp = DateTimeOffset.UtcNow, Actor = "x", Action = "a", Target = "t" })]);

            await server.StopAsync();
            Assert.False(server.IsRunning);
            await Assert.ThrowsAnyAsync<NpgsqlException>(() => store.GetChainHeadAsync("n1"));
            var down = await Assert.ThrowsAsync<InvalidOperationException>(() => PostgresStore.OpenAsync(database));
            Assert.Contains("Cannot open the PostgreSQL store", down.Message, StringComparison.Ordinal);

            await server.StartAsync();
            Assert.True(server.IsRunning);
            // The pool drops the broken connections; the next call reconnects.
            var head = await RetryAsync(() => store.GetChainHeadAsync("n1"));
            Assert.Equal((1, chain.LastHash), head);
            await store.AppendAsync([chain.Append(new AdminRecord { Timestamp = DateTimeOffset.UtcNow, Actor = "x", Action = "b", Target = "t" })]);
            Assert.Equal((2, chain.LastHash), await store.GetChainHeadAsync("n1"));
        }
        finally
        {
            await server.StartAsync();
            await server.DropDatabaseAsync(database);
        }
    }

    private static async Task<T> RetryAsync<T>(Func<Task<T>> call)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return await call();
            }
            catch (NpgsqlException) when (attempt < 3)
            {
            }
        }
    }
}
