using System.Net;
using System.Text.Json;
using Custos.Ledger;
using Microsoft.Data.Sqlite;

namespace Custos.Gateway.Tests.Functional;

/// <summary>
/// Under overload the gateway sheds with 503 and records that it did, its memory stays bounded, and no record is
/// lost: too many requests in flight, and a ledger store that stops accepting writes.
/// </summary>
public sealed class OverloadTests
{
    private const string Chat = """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}""";
    private const string Slow = """{"model":"mock-slow","messages":[{"role":"user","content":"hello"}]}""";

    [Fact]
    public async Task BeyondMaxInFlightRequests_NewRequestsAreShedWith503_AndRecorded_WithoutReachingTheProvider()
    {
        await using var g = await TestGateway.StartAsync(p => p with { Gateway = p.Gateway with { MaxInFlightRequests = 2 } });
        var slow = new[] { g.Client.SendAsync(g.Post("/v1/chat/completions", Slow)), g.Client.SendAsync(g.Post("/v1/chat/completions", Slow)) };
        await WaitUntilAsync(() => g.Upstream.RequestCount == 2);

        using var shed = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat));

        Assert.Equal(HttpStatusCode.ServiceUnavailable, shed.StatusCode);
        Assert.Equal("1", Assert.Single(shed.Headers.GetValues("Retry-After")));
        using var error = JsonDocument.Parse(await shed.Content.ReadAsStringAsync());
        Assert.Equal("unavailable.overloaded", error.RootElement.GetProperty("error").GetProperty("code").GetString());
        var requestId = TestGateway.RequestIdOf(shed);
        Assert.Equal(requestId, error.RootElement.GetProperty("error").GetProperty("request_id").GetString());
        Assert.Equal(2, g.Upstream.RequestCount);

        var entry = await g.EntryAsync(requestId);
        Assert.Equal("throttle", entry.GetProperty("decision").GetString());
        Assert.Equal("unavailable.overloaded", Assert.Single(entry.GetProperty("reasons").EnumerateArray()).GetString());
        Assert.Equal("web", entry.GetProperty("consumer").GetString());
        Assert.Equal(503, entry.GetProperty("status").GetInt32());

        // Once the slow requests are done (the test policy times the provider out after 2 s), requests pass again.
        foreach (var response in await Task.WhenAll(slow))
        {
            response.Dispose();
        }

        using var after = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat));
        Assert.Equal(HttpStatusCode.OK, after.StatusCode);
    }

    [Fact]
    public async Task WhileTheStoreIsLocked_TheQueueStaysBounded_NewRequestsAreShed_AndEveryRecordIsStoredAfterwards()
    {
        const int capacity = 16;
        await using var g = await TestGateway.StartAsync(ledgerQueueCapacity: capacity);
        await g.Gateway.Ledger.FlushAsync();
        var upstreamBefore = g.Upstream.RequestCount;

        // Another process holds the database's write lock: the ledger writer cannot append until it lets go.
        await using var locker = new SqliteConnection($"Data Source={Path.Combine(g.DataDirectory, "custos.db")}");
        await locker.OpenAsync();
        await using (var begin = locker.CreateCommand())
        {
            begin.CommandText = "BEGIN IMMEDIATE";
            await begin.ExecuteNonQueryAsync();
        }

        var statuses = new List<HttpStatusCode>();
        var ids = new List<string>();
        var maxPending = 0;
        for (var i = 0; i < 3 * capacity; i++)
        {
            using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat));
            statuses.Add(response.StatusCode);
            ids.Add(TestGateway.RequestIdOf(response));
            if (response.StatusCode == HttpStatusCode.ServiceUnavailable)
            {
                using var error = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
                Assert.Equal("unavailable.ledger_backlog", error.RootElement.GetProperty("error").GetProperty("code").GetString());
            }

            maxPending = Math.Max(maxPending, g.Gateway.Ledger.Pending);
        }

        using (var ready = await new HttpClient { BaseAddress = g.Gateway.AdminUri }.GetAsync("/readyz"))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
            Assert.Contains("\"ledger_backlog\"", await ready.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        var served = statuses.Count(s => s == HttpStatusCode.OK);
        var shed = statuses.Count(s => s == HttpStatusCode.ServiceUnavailable);
        Assert.Equal(statuses.Count, served + shed);
        Assert.InRange(served, capacity / 2, capacity);   // about seven-eighths of the queue, plus what the writer holds
        Assert.True(shed >= capacity, $"only {shed} of {statuses.Count} requests were shed");
        Assert.InRange(maxPending, 1, capacity);
        Assert.Equal(upstreamBefore + served, g.Upstream.RequestCount); // shed requests never reached the provider

        await using (var rollback = locker.CreateCommand())
        {
            rollback.CommandText = "ROLLBACK";
            await rollback.ExecuteNonQueryAsync();
        }

        // Nothing was dropped: every served request has its entry; a shed one has its own entry while the queue had
        // room, and is counted in a "shed" summary entry once it had none.
        await g.Gateway.Ledger.FlushAsync().WaitAsync(TimeSpan.FromSeconds(60));
        var entries = await g.LedgerAsync(new LedgerQuery { Kind = null, Limit = 100_000 });
        var individual = 0;
        for (var i = 0; i < ids.Count; i++)
        {
            var entry = entries.SingleOrDefault(e => e.GetProperty("kind").GetString() == "request" && e.GetProperty("request_id").GetString() == ids[i]);
            if (entry.ValueKind == JsonValueKind.Undefined)
            {
                Assert.Equal(HttpStatusCode.ServiceUnavailable, statuses[i]);
                continue;
            }

            individual++;
            Assert.Equal((int)statuses[i], entry.GetProperty("status").GetInt32());
        }

        var summaries = entries.Where(e => e.GetProperty("kind").GetString() == "shed").ToList();
        var counted = summaries.Sum(e => e.GetProperty("reasons").GetProperty("unavailable.ledger_backlog").GetInt64());
        Assert.Equal(ids.Count, individual + counted);
        Assert.True(counted > 0, "the queue never filled: the test did not reach the last resort");
        Assert.All(summaries, e => Assert.Equal("test-node", e.GetProperty("node_id").GetString()));

        using var afterwards = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat));
        Assert.Equal(HttpStatusCode.OK, afterwards.StatusCode);
    }

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        for (var i = 0; i < 200 && !condition(); i++)
        {
            await Task.Delay(25);
        }

        Assert.True(condition(), "the condition did not become true within 5 s");
    }
}
