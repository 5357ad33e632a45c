using System.Diagnostics;
using Custos.Errors;
using Custos.Ledger;
using Xunit.Abstractions;

namespace Custos.Postgres.Tests;

/// <summary>
/// Append throughput into the local test server: batches of 512 realistic request records, binary COPY against one
/// INSERT of arrays. A measurement (printed), with a floor far below what either reaches so a broken append fails.
/// </summary>
[Collection(PostgresCollection.Name)]
public sealed class PostgresAppendThroughputTests(PostgresServerFixture server, ITestOutputHelper output)
{
    private const int BatchSize = 512;
    private const int Batches = 40;

    [Fact]
    public async Task AppendAsync_BatchesOf512_RecordsPerSecond()
    {
        // Alternating, best of three each: the server warms up, and the machine is shared.
        var (copy, batch) = (0d, 0d);
        for (var round = 0; round < 3; round++)
        {
            batch = Math.Max(batch, await MeasureAsync(AppendMode.Batch));
            copy = Math.Max(copy, await MeasureAsync(AppendMode.Copy));
        }

        var size = new HashChain("n", 0, HashChain.Genesis).Append(Record(DateTimeOffset.UtcNow, 1)).Canonical.Length;
        output.WriteLine($"binary COPY: {copy:N0} records/s; INSERT … unnest: {batch:N0} records/s ({Batches} batches of {BatchSize} records of {size} bytes, after warm-up)");
        Assert.True(copy > 2_000, $"binary COPY appended only {copy:N0} records/s");
        Assert.True(batch > 2_000, $"INSERT … unnest appended only {batch:N0} records/s");
    }

    private async Task<double> MeasureAsync(AppendMode mode)
    {
        var database = await server.CreateDatabaseAsync();
        try
        {
            await using var store = await PostgresStore.OpenAsync(database);
            store.Mode = mode;
            var chain = new HashChain("node-1", 0, HashChain.Genesis);
            var start = DateTimeOffset.UtcNow;
            List<ChainedRecord> Next(int batch) => [.. Enumerable.Range(0, BatchSize).Select(i => chain.Append(Record(start.AddMilliseconds((batch * BatchSize) + i), i)))];

            for (var warm = 0; warm < 5; warm++)
            {
                await store.AppendAsync(Next(-warm - 1));
            }

            var prepared = Enumerable.Range(0, Batches).Select(Next).ToList(); // sealing is not the store's work
            var clock = Stopwatch.StartNew();
            foreach (var records in prepared)
            {
                await store.AppendAsync(records);
            }

            var rate = Batches * BatchSize / clock.Elapsed.TotalSeconds;
            Assert.Equal(((5 + Batches) * BatchSize, (5L + Batches) * BatchSize, (long)((5 + Batches) * BatchSize)),
                ((int)(await store.GetChainHeadAsync("node-1")).Seq, (await store.GetChainsAsync())[0].LastSeq, (await store.GetChainsAsync())[0].Count));
            return rate;
        }
        finally
        {
            await server.DropDatabaseAsync(database);
        }
    }

    private static RequestRecord Record(DateTimeOffset at, int i)
    {
        var record = new RequestRecord
        {
            RequestId = Guid.NewGuid().ToString("N"),
            NodeId = "node-1",
            Method = "POST",
            Endpoint = "/v1/chat/completions",
            Timestamp = at,
            Tenant = "acme",
            Service = "support",
            Consumer = $"bot-{i % 20}",
            Category = "agent",
            CredentialId = $"key-{i % 50}",
            Model = "gpt-4o",
            ModelServed = "gpt-4o-2024-08-06",
            Provider = "openai",
            PolicyVersion = 12,
            PolicyHash = new string('c', 64),
            InputTokens = 1200 + i,
            OutputTokens = 300,
            Cost = 0.0123m + (i / 100000m),
            Currency = "USD",
            UpstreamStatus = 200,
            Status = 200,
            GatewayMs = 1.234,
            UpstreamMs = 812.5,
            ClientAddress = "203.0.113.7",
            PromptSha256 = new string('d', 64),
            RequestBytes = 4096,
            ResponseBytes = 2048,
        };
        if (i % 10 == 0)
        {
            record.Fail(Reasons.ModelNotEntitled, Outcome.Denied);
        }

        return record;
    }
}
