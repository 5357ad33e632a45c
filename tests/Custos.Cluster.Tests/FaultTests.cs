using System.Collections.Concurrent;
using System.Diagnostics;
using Custos.Gateway.Demo;
using Custos.Gateway.Hosting;
using Custos.Gateway.Policy;
using Custos.Ledger;
using Custos.Policy;
using Custos.Postgres.Tests;
using Custos.Redis.Tests;
using Custos.Tests;
using Xunit.Abstractions;

namespace Custos.Cluster.Tests;

/// <summary>Nodes killed and engines stopped under load: nothing served goes unrecorded, and the ledger still verifies.</summary>
[Collection(ClusterCollection.Name)]
public sealed class FaultTests(RedisServerFixture redis, PostgresServerFixture postgres, ITestOutputHelper output)
{
    /// <summary>Requests from <paramref name="loops"/> concurrent callers per client until <paramref name="stop"/>; every response kept.</summary>
    private static Task LoadAsync(IReadOnlyList<HttpClient> clients, string key, int loops, CancellationToken stop,
        ConcurrentBag<(int Client, int Status, string? RequestId)> responses)
        => Task.WhenAll(clients.SelectMany((client, index) => Enumerable.Range(0, loops).Select(_ => Task.Run(async () =>
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    var (status, requestId, _) = await Cluster.ChatAsync(client, key);
                    responses.Add((index, status, requestId));
                }
                catch (HttpRequestException)
                {
                    // The node is gone: this request got no response.
                    await Task.Delay(10);
                }
            }
        }))));

    /// <summary>The demo policy with the internal consumers' rate limit (data-team's) out of the way, so that the load is served, not throttled.</summary>
    private static PolicyDocument Unlimited(PolicyDocument policy) => policy with
    {
        // A consumer's limits only narrow its category's defaults: raise the internal category's.
        Defaults = policy.Defaults with { Internal = new CategoryDefaults { Limits = new LimitsConfig { RequestsPerMinute = 10_000_000 } } },
    };

    [Fact]
    public async Task PostgresStoppedFor30SecondsUnderLoad_LosesNoLedgerEntry_AndServesThroughout()
    {
        // FeedConfirmsFor shortened to 5 s: the policy in force stays confirmed by the version the nodes vouched for in
        // Redis, not by that grace (at its default of 60 s, an outage longer than a minute refused every request).
        await using var cluster = await Cluster.StartAsync(3, await postgres.CreateDatabaseAsync(), redis.ConnectionString, Unlimited,
            sync: new PolicySyncOptions { FeedConfirmsFor = TimeSpan.FromSeconds(5) });
        var clients = cluster.Nodes.Select(n => new HttpClient { BaseAddress = n.DataPlaneUri }).ToArray();
        var responses = new ConcurrentBag<(int Client, int Status, string? RequestId)>();
        using var stop = new CancellationTokenSource();
        var load = LoadAsync(clients, cluster.KeyOf("data-team"), 2, stop.Token, responses);
        try
        {
            await Task.Delay(1000);
            await postgres.StopAsync();
            var outage = Stopwatch.StartNew();
            await Task.Delay(TimeSpan.FromSeconds(30));
            var servedDuringOutage = responses.Count;
            await postgres.StartAsync();
            output.WriteLine($"PostgreSQL stopped for {outage.Elapsed.TotalSeconds:0.0} s; {servedDuringOutage} responses by then, spooled: " +
                string.Join(", ", cluster.Nodes.Select(n => $"{n.NodeId} {n.Ledger.Spooled}")));
            await Task.Delay(1000);
        }
        finally
        {
            await stop.CancelAsync();
            await load;
            if (!postgres.IsRunning)
            {
                await postgres.StartAsync();
            }
        }

        var drain = Stopwatch.StartNew();
        foreach (var node in cluster.Nodes)
        {
            await node.Ledger.FlushAsync();
            await node.Ledger.WaitForSpoolDrainedAsync().WaitAsync(TimeSpan.FromSeconds(120));
        }

        output.WriteLine($"every spool drained into PostgreSQL {drain.Elapsed.TotalSeconds:0.0} s after the load stopped.");

        var entries = await cluster.RequestEntriesAsync();
        var allowed = entries.Count(e => e.GetProperty("decision").GetString() == "allow");
        output.WriteLine($"{responses.Count} responses, {cluster.Upstream.RequestCount} served by the provider, {allowed} allowed entries after recovery.");
        var refused = responses.Where(r => r.Status != 200).GroupBy(r => r.Status).Select(g => $"{g.Count()} × {g.Key}").ToList();
        Assert.True(refused.Count == 0, "the load should have been served through the outage; refused: " + string.Join(", ", refused));
        Assert.Equal(cluster.Upstream.RequestCount, allowed);
        Assert.Empty(responses.Select(r => r.RequestId).Except(entries.Select(e => e.GetProperty("request_id").GetString())));
        foreach (var client in clients)
        {
            client.Dispose();
        }
    }

    [Fact]
    public async Task RedisAndPostgresBothDown_TheRevocationCheckFailsClosed_AndServiceReturnsWithThem()
    {
        await using var cluster = await Cluster.StartAsync(2, await postgres.CreateDatabaseAsync(), redis.ConnectionString, Unlimited);
        using var client = new HttpClient { BaseAddress = cluster.Nodes[0].DataPlaneUri };
        var key = cluster.KeyOf("data-team");
        Assert.Equal(200, (await Cluster.ChatAsync(client, key)).Status);
        try
        {
            await redis.StopAsync();
            await postgres.StopAsync();

            // Nothing can tell this node about a revocation now: once its last read of the store is 5 s old (StaleAfter),
            // it stops serving.
            var down = Stopwatch.StartNew();
            (int Status, string? RequestId, string? Code) result;
            while ((result = await Cluster.ChatAsync(client, key)).Status == 200)
            {
                Assert.True(down.Elapsed < TimeSpan.FromSeconds(10), "still serving 10 s after both engines went down");
                await Task.Delay(100);
            }

            output.WriteLine($"refused {down.Elapsed.TotalSeconds:0.0} s after both engines went down: {result.Status} {result.Code}");
            Assert.Equal((503, "unavailable.policy_unconfirmed"), (result.Status, result.Code));

            // The load balancer is told too: the node is not ready while it would refuse everything.
            using var ready = await client.GetAsync("/readyz");
            var body = await ready.Content.ReadAsStringAsync();
            Assert.Equal(System.Net.HttpStatusCode.ServiceUnavailable, ready.StatusCode);
            Assert.Contains("\"status\":\"policy_unconfirmed\"", body, StringComparison.Ordinal);
            Assert.Contains("\"counters\":\"degraded\"", body, StringComparison.Ordinal);
        }
        finally
        {
            await redis.StartAsync();
            await postgres.StartAsync();
        }

        var back = Stopwatch.StartNew();
        while ((await Cluster.ChatAsync(client, key)).Status != 200)
        {
            Assert.True(back.Elapsed < TimeSpan.FromSeconds(10), "not serving 10 s after both engines returned");
            await Task.Delay(100);
        }

        output.WriteLine($"serving again {back.Elapsed.TotalSeconds:0.0} s after both engines returned.");
        // A request may be served on a local share for up to a second before the counters are shared again; then
        // /readyz says everything is back.
        string readiness;
        while (true)
        {
            await Cluster.ChatAsync(client, key);
            using var ready = await client.GetAsync("/readyz");
            readiness = await ready.Content.ReadAsStringAsync();
            if (ready.IsSuccessStatusCode && readiness.Contains("\"policy\":\"confirmed\",\"counters\":\"shared\"", StringComparison.Ordinal))
            {
                break;
            }

            Assert.True(back.Elapsed < TimeSpan.FromSeconds(10), "/readyz not back to normal 10 s after both engines returned: " + readiness);
            await Task.Delay(100);
        }

        foreach (var node in cluster.Nodes)
        {
            await node.Ledger.WaitForSpoolDrainedAsync().WaitAsync(TimeSpan.FromSeconds(60));
        }

        var refused = (await cluster.RequestEntriesAsync()).Where(e => e.GetProperty("reasons").EnumerateArray().Any(r => r.GetString() == "unavailable.policy_unconfirmed"));
        Assert.NotEmpty(refused); // the refusals themselves are on record (spooled while PostgreSQL was down)
    }

    [Fact]
    public async Task RedisRestartedWithoutItsData_QuotasGoOnFromTheLedger_NotFromZero()
    {
        // Three requests a day for data-team (the internal category's default).
        static PolicyDocument ThreeADay(PolicyDocument policy) => policy with
        {
            Defaults = policy.Defaults with { Internal = new CategoryDefaults { Limits = new LimitsConfig { RequestsPerMinute = 10_000_000, RequestsPerDay = 3 } } },
        };
        await using var cluster = await Cluster.StartAsync(2, await postgres.CreateDatabaseAsync(), redis.ConnectionString, ThreeADay);
        using var clientA = new HttpClient { BaseAddress = cluster.Nodes[0].DataPlaneUri };
        using var clientB = new HttpClient { BaseAddress = cluster.Nodes[1].DataPlaneUri };
        var key = cluster.KeyOf("data-team");
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(200, (await Cluster.ChatAsync(i % 2 == 0 ? clientA : clientB, key)).Status);
        }

        Assert.Equal(429, (await Cluster.ChatAsync(clientB, key)).Status);
        var marker = cluster.Prefix + "seeded";
        Assert.True(await redis.Connection.GetDatabase().KeyExistsAsync(marker), "the nodes seeded the counters of a Redis that started empty");

        await redis.StopAsync(); // no persistence: every counter is gone
        await redis.StartAsync();

        // One node finds the marker missing when its connection comes back, and seeds the counters from the ledger.
        var back = Stopwatch.StartNew();
        while (!await MarkerAsync())
        {
            Assert.True(back.Elapsed < TimeSpan.FromSeconds(15), "no node seeded the counters of the restarted Redis");
            await Task.Delay(50);
        }

        (int Status, string? RequestId, string? Code) result;
        while ((result = await Cluster.ChatAsync(clientA, key)).Status == 503)
        {
            Assert.True(back.Elapsed < TimeSpan.FromSeconds(15), "the counters did not answer again");
            await Task.Delay(50);
        }

        Assert.Equal(429, result.Status);
        Assert.Equal(429, (await Cluster.ChatAsync(clientB, key)).Status);

        async Task<bool> MarkerAsync()
        {
            try
            {
                return await redis.Connection.GetDatabase().KeyExistsAsync(marker);
            }
            catch (StackExchange.Redis.RedisConnectionException)
            {
                return false; // the test's own connection is not back yet
            }
        }
    }

    [Fact]
    public async Task ANodeKilledWithSigkillUnderLoad_EveryAnsweredRequestIsInTheLedger_AndAuditVerifyPasses()
    {
        var database = await postgres.CreateDatabaseAsync();
        await using var upstream = await DemoUpstream.StartAsync();
        var keys = DemoPolicy.CreateKeys(new Uri("http://127.0.0.1:1"), new Uri("http://127.0.0.1:2"), null);
        var folder = Directory.CreateTempSubdirectory("custos-sigkill-").FullName;
        var config = Path.Combine(folder, "custos.yaml");
        File.WriteAllText(config, "server:\n  storage: postgres\n  counters: redis\n" + PolicyYamlWriter.Write(Unlimited(DemoPolicy.Create(upstream.BaseUri, keys))));
        var environment = new Dictionary<string, string> { ["CUSTOS_POSTGRES"] = database, ["CUSTOS_REDIS"] = redis.ConnectionString };
        var nodes = new List<(CustosProcess Process, string Data, int Port)>();
        try
        {
            foreach (var id in new[] { "node-a", "node-b", "node-c" })
            {
                var data = Path.Combine(folder, id);
                for (var attempt = 1; ; attempt++)
                {
                    // A free port found here may be taken by another test's server before the node binds it: start again.
                    var port = CustosProcess.FreePort();
                    var process = CustosProcess.Start("Custos serving", environment, "serve", "--config", config, "--node-id", id,
                        "--port", port.ToString(System.Globalization.CultureInfo.InvariantCulture),
                        "--admin-port", CustosProcess.FreePort().ToString(System.Globalization.CultureInfo.InvariantCulture), "--data", data);
                    try
                    {
                        await process.WaitReadyAsync();
                        nodes.Add((process, data, port));
                        break;
                    }
                    catch (InvalidOperationException) when (attempt < 3 && process.Output.Contains("address already in use", StringComparison.Ordinal))
                    {
                        await process.DisposeAsync();
                    }
                }
            }

            var clients = nodes.Select(n => new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{n.Port}") }).ToArray();
            var responses = new ConcurrentBag<(int Client, int Status, string? RequestId)>();
            using var stop = new CancellationTokenSource();
            var load = LoadAsync(clients, keys.Consumers.Single(c => c.Name == "data-team").Key, 4, stop.Token, responses);
            // Kill node-b once it has answered a fair share of the load (on a loaded machine that takes longer than 2 s).
            var warm = System.Diagnostics.Stopwatch.StartNew();
            while (responses.Count(r => r.Client == 1) <= 20 && warm.Elapsed < TimeSpan.FromSeconds(30))
            {
                await Task.Delay(100);
            }

            var beforeKill = responses.Count(r => r.Client == 1);
            nodes[1].Process.Kill(); // SIGKILL: no shutdown, no drain
            await Task.Delay(1500);
            await stop.CancelAsync();
            await load;
            Assert.Equal(0, await nodes[0].Process.StopAsync());
            Assert.Equal(0, await nodes[2].Process.StopAsync());

            await using var store = await Postgres.PostgresStore.OpenAsync(database);
            var recorded = new HashSet<string>();
            await foreach (var row in store.QueryAsync(new LedgerQuery { Limit = 1_000_000 }))
            {
                recorded.Add(System.Text.Json.JsonDocument.Parse(row.Json).RootElement.GetProperty("request_id").GetString()!);
            }

            var answered = responses.Select(r => r.RequestId!).ToList();
            output.WriteLine($"{answered.Count} answered ({beforeKill} by node-b before it was killed), {recorded.Count} request entries.");
            Assert.True(beforeKill > 20, "node-b should have answered requests before it was killed");
            Assert.Empty(answered.Except(recorded));

            var verify = CustosProcess.Start("never", environment, ["audit", "verify", "--config", config, "--data", nodes[0].Data,
                .. nodes.SelectMany(n => new[] { "--public-key", CheckpointKey.PublicPath(n.Data) })]);
            var exit = await verify.WaitForExitAsync();
            output.WriteLine(verify.Output);
            Assert.True(exit == 0, verify.Output);
            Assert.Contains("in 3 chain(s)", verify.Output, StringComparison.Ordinal);
            foreach (var client in clients)
            {
                client.Dispose();
            }
        }
        finally
        {
            foreach (var node in nodes)
            {
                await node.Process.DisposeAsync();
            }

            Directory.Delete(folder, recursive: true);
        }
    }
}
