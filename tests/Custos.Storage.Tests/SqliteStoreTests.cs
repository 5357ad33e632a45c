using Custos.Errors;
using Custos.Ledger;
using Custos.Policy;
using Custos.Storage;
using Microsoft.Data.Sqlite;

namespace Custos.Storage.Tests;

public sealed class SqliteStoreTests : IAsyncLifetime
{
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "custos-store-" + Guid.NewGuid().ToString("N"));
    private SqliteStore _store = null!;

    public async Task InitializeAsync() => _store = await SqliteStore.OpenAsync(_directory);

    public async Task DisposeAsync()
    {
        await _store.DisposeAsync();
        SqliteConnection.ClearAllPools();
        Directory.Delete(_directory, recursive: true);
    }

    private static RequestRecord Request(string id, string tenant, string consumer, Decision decision, DateTimeOffset at)
    {
        var record = new RequestRecord { RequestId = id, NodeId = "n1", Method = "POST", Endpoint = "/v1/chat/completions", Timestamp = at, Tenant = tenant, Consumer = consumer, Model = "m" };
        if (decision == Decision.Deny)
        {
            record.Fail(Reasons.ModelNotEntitled, Outcome.Denied);
        }

        return record;
    }

    [Fact]
    public async Task AppendAsync_ThenQuery_FiltersByEveryColumnAndTime()
    {
        var t0 = new DateTimeOffset(2026, 11, 1, 0, 0, 0, TimeSpan.Zero);
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        await _store.AppendAsync(
        [
            chain.Append(Request("r1", "acme", "a", Decision.Allow, t0)),
            chain.Append(Request("r2", "acme", "b", Decision.Deny, t0.AddMinutes(1))),
            chain.Append(Request("r3", "globex", "c", Decision.Allow, t0.AddMinutes(2))),
            chain.Append(new AdminRecord { Timestamp = t0, Actor = "x", Action = "policy.version_created", Target = "policy" }),
        ]);

        async Task<string[]> Ids(LedgerQuery q)
        {
            var ids = new List<string>();
            await foreach (var row in _store.QueryAsync(q))
            {
                ids.Add(System.Text.Json.JsonDocument.Parse(row.Json).RootElement.GetProperty("request_id").GetString()!);
            }

            return [.. ids];
        }

        Assert.Equal(["r1", "r2", "r3"], await Ids(new LedgerQuery()));
        Assert.Equal(["r1", "r2"], await Ids(new LedgerQuery { Tenant = "acme" }));
        Assert.Equal(["r2"], await Ids(new LedgerQuery { Decision = "deny" }));
        Assert.Equal(["r3"], await Ids(new LedgerQuery { Consumer = "c" }));
        Assert.Equal(["r2", "r3"], await Ids(new LedgerQuery { From = t0.AddSeconds(30) }));
        Assert.Equal(["r1"], await Ids(new LedgerQuery { To = t0.AddSeconds(30) }));
        Assert.Equal(["r2", "r3"], await Ids(new LedgerQuery { Limit = 2 }));
        Assert.Equal((4, chain.LastHash), await _store.GetChainHeadAsync("n1"));
    }

    [Fact]
    public async Task Ledger_UpdateOrDelete_IsRefusedByTheStore()
    {
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        await _store.AppendAsync([chain.Append(Request("r1", "acme", "a", Decision.Allow, DateTimeOffset.UtcNow))]);
        await using var connection = new SqliteConnection($"Data Source={_store.Path}");
        await connection.OpenAsync();
        using var command = connection.CreateCommand();

        command.CommandText = "UPDATE ledger SET record = '{}'";
        var update = await Assert.ThrowsAsync<SqliteException>(() => command.ExecuteNonQueryAsync());
        command.CommandText = "DELETE FROM ledger";
        var delete = await Assert.ThrowsAsync<SqliteException>(() => command.ExecuteNonQueryAsync());

        Assert.Contains("append-only", update.Message, StringComparison.Ordinal);
        Assert.Contains("append-only", delete.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AppendAsync_DuplicateSeq_FailsWholeBatch()
    {
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        var first = chain.Append(Request("r1", "acme", "a", Decision.Allow, DateTimeOffset.UtcNow));
        await _store.AppendAsync([first]);

        var next = chain.Append(Request("r2", "acme", "a", Decision.Allow, DateTimeOffset.UtcNow));
        await Assert.ThrowsAsync<SqliteException>(() => _store.AppendAsync([next, first]));

        var count = 0;
        await foreach (var _ in _store.QueryAsync(new LedgerQuery()))
        {
            count++;
        }

        Assert.Equal(1, count);
    }

    [Fact]
    public async Task SaveAsync_SameDocumentTwice_KeepsOneVersion_ChangedDocument_AddsNext()
    {
        var document = new PolicyDocument { Tenants = [new TenantConfig { Id = "t" }] };
        var now = DateTimeOffset.UtcNow;

        var (v1, created1) = await _store.SaveAsync(document, "alice", "first", now, "tenants: [{id: t}]");
        var (again, created2) = await _store.SaveAsync(document with { }, "bob", "same", now, null);
        var (v2, created3) = await _store.SaveAsync(document with { Tenants = [new TenantConfig { Id = "t", TimeZone = "Europe/Berlin" }] }, "carol", "tz", now, null);

        Assert.True(created1);
        Assert.False(created2);
        Assert.True(created3);
        Assert.Equal(1, v1.Number);
        Assert.Equal(v1.Sha256, again.Sha256);
        Assert.Equal(2, v2.Number);
        var history = await _store.GetHistoryAsync();
        Assert.Equal(["alice", "carol"], history.Select(v => v.Author));
        Assert.Equal("Europe/Berlin", history[1].Document.Tenants[0].TimeZone);
    }
}
