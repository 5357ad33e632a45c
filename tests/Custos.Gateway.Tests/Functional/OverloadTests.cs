using System.Net;
using System.Text.Json;
using Custos.Gateway.Tests.Ledger;
using Custos.Ledger;
using Custos.Testing;
using Microsoft.Data.Sqlite;

namespace Custos.Gateway.Tests.Functional;

/// <summary>
/// Under overload the gateway sheds with 503 and records that it did, its memory stays bounded, and no record is
/// lost: too many requests in flight, a ledger that falls behind, and a store that hangs while the spool is unwritable.
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
        await Eventually.TrueAsync(() => g.Upstream.RequestCount == 2, "both requests at the upstream");

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
    public async Task WhenTheLedgerFallsBehind_NewRequestsAreShedWith503Backlog_AndTheOnesInFlightWaitForTheirRecords()
    {
        const int capacity = 16;
        FailableLedgerStore? store = null;
        await using var g = await TestGateway.StartAsync(null, capacity, options: o => o with
        {
            LedgerStore = s => store = new FailableLedgerStore(s),
            LedgerOptions = l => l with { AppendTimeout = TimeSpan.FromMinutes(1) },
        });
        await g.Gateway.Ledger.FlushAsync();
        store!.CloseGate(); // the store is slow, not down: nothing is spooled, records queue up
        try
        {
            await ShedWhenBackloggedAsync(g, store, capacity);
        }
        finally
        {
            store.OpenGate();
        }
    }

    private static async Task ShedWhenBackloggedAsync(TestGateway g, FailableLedgerStore store, int capacity)
    {
        // Requests served one after another, each waiting for its record, until the queue is seven-eighths full.
        var inFlight = new List<Task<HttpResponseMessage>>();
        while (!g.Gateway.Ledger.IsBacklogged)
        {
            Assert.True(inFlight.Count < 2 * capacity, "the queue never filled");
            var pending = g.Gateway.Ledger.Pending;
            inFlight.Add(g.Client.SendAsync(g.Post("/v1/chat/completions", Chat)));
            await Eventually.TrueAsync(() => g.Gateway.Ledger.Pending > pending || (inFlight.Count == 1 && store.AppendWaiting.IsCompleted), "the request's record queued");
        }

        using (var shed = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat)))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, shed.StatusCode);
            using var error = JsonDocument.Parse(await shed.Content.ReadAsStringAsync());
            Assert.Equal("unavailable.ledger_backlog", error.RootElement.GetProperty("error").GetProperty("code").GetString());
            using var ready = await new HttpClient { BaseAddress = g.Gateway.AdminUri }.GetAsync("/readyz");
            Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
            Assert.Contains("\"ledger_backlog\"", await ready.Content.ReadAsStringAsync(), StringComparison.Ordinal);
            Assert.All(inFlight, t => Assert.False(t.IsCompleted, "a response completed before its record was stored"));

            store.OpenGate();
            foreach (var response in await Task.WhenAll(inFlight).WaitAsync(TimeSpan.FromSeconds(30)))
            {
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                response.Dispose();
            }

            Assert.Equal("unavailable.ledger_backlog", Assert.Single((await g.EntryAsync(TestGateway.RequestIdOf(shed))).GetProperty("reasons").EnumerateArray()).GetString());
        }
    }

    [Fact]
    public async Task WhileTheStoreIsLockedAndTheSpoolUnwritable_NewRequestsAreRefused_TheQueueStaysBounded_AndEveryRecordIsStoredAfterwards()
    {
        const int capacity = 16;
        await using var g = await TestGateway.StartAsync(null, capacity, options: o => o with
        {
            LedgerOptions = l => l with
            {
                AppendTimeout = TimeSpan.FromMilliseconds(300),
                RetryDelay = TimeSpan.FromMilliseconds(20),
                RetryInterval = TimeSpan.FromMilliseconds(100),
            },
        });
        await g.Gateway.Ledger.FlushAsync();
        var upstreamBefore = g.Upstream.RequestCount;
        File.WriteAllText(Path.Combine(g.DataDirectory, "spool"), "in the way"); // the spool folder cannot be created

        // Another process holds the database's write lock: appends hang until it lets go.
        await using var locker = new SqliteConnection($"Data Source={Path.Combine(g.DataDirectory, "custos.db")}");
        await locker.OpenAsync();
        await using (var begin = locker.CreateCommand())
        {
            begin.CommandText = "BEGIN IMMEDIATE";
            await begin.ExecuteNonQueryAsync();
        }

        // A request served meanwhile waits for its record: the writer gives up on the hung append, cannot spool, and says so.
        var served = g.Client.SendAsync(g.Post("/v1/chat/completions", Chat));
        await Eventually.TrueAsync(() => !g.Gateway.Ledger.IsHealthy, "the ledger reports itself unhealthy");

        var ids = new List<string>();
        var maxPending = 0;
        for (var i = 0; i < 3 * capacity; i++)
        {
            using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat));
            Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
            using var error = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            Assert.Equal("unavailable.ledger", error.RootElement.GetProperty("error").GetProperty("code").GetString());
            ids.Add(TestGateway.RequestIdOf(response));
            maxPending = Math.Max(maxPending, g.Gateway.Ledger.Pending);
        }

        using (var ready = await new HttpClient { BaseAddress = g.Gateway.AdminUri }.GetAsync("/readyz"))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
            Assert.Contains("\"ledger_unavailable\"", await ready.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        Assert.False(served.IsCompleted, "a response completed before its record was stored");
        Assert.InRange(maxPending, 1, capacity);
        Assert.Equal(upstreamBefore + 1, g.Upstream.RequestCount); // refused requests never reached the provider

        await using (var rollback = locker.CreateCommand())
        {
            rollback.CommandText = "ROLLBACK";
            await rollback.ExecuteNonQueryAsync();
        }

        // The hung append commits once the lock is gone; the writer finds it there and stores it once.
        using var servedResponse = await served.WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(HttpStatusCode.OK, servedResponse.StatusCode);
        await g.Gateway.Ledger.FlushAsync().WaitAsync(TimeSpan.FromSeconds(60));
        var entries = await g.LedgerAsync(new LedgerQuery { Kind = null, Limit = 100_000 });
        Assert.Single(entries, e => e.GetProperty("kind").GetString() == "request" && e.GetProperty("request_id").GetString() == TestGateway.RequestIdOf(servedResponse));

        // Nothing was dropped: a refused request has its own entry while the queue had room, and is counted in a "shed"
        // summary entry once it had none.
        var individual = 0;
        foreach (var id in ids)
        {
            var entry = entries.SingleOrDefault(e => e.GetProperty("kind").GetString() == "request" && e.GetProperty("request_id").GetString() == id);
            if (entry.ValueKind != JsonValueKind.Undefined)
            {
                individual++;
                Assert.Equal(503, entry.GetProperty("status").GetInt32());
            }
        }

        var summaries = entries.Where(e => e.GetProperty("kind").GetString() == "shed").ToList();
        var counted = summaries.Sum(e => e.GetProperty("reasons").GetProperty("unavailable.ledger").GetInt64());
        Assert.Equal(ids.Count, individual + counted);
        Assert.True(counted > 0, "the queue never filled: the test did not reach the last resort");
        Assert.All(summaries, e => Assert.Equal("test-node", e.GetProperty("node_id").GetString()));
        await LedgerDurabilityTests.AssertChainVerifiesAsync(g.Gateway.Store, g.DataDirectory);

        using var afterwards = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat));
        Assert.Equal(HttpStatusCode.OK, afterwards.StatusCode);
    }
}
