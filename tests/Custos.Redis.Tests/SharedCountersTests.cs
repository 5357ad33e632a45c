using System.Net;
using System.Net.Http.Headers;
using System.Text;
using Custos.Gateway.Demo;
using Custos.Gateway.Hosting;
using Custos.Policy;
using Custos.Testing;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;

namespace Custos.Redis.Tests;

/// <summary>Two gateway nodes on loopback sharing one real Redis for their counters: a limit holds across both.</summary>
[Collection(RedisCollection.Name)]
public sealed class SharedCountersTests(RedisServerFixture redis)
{
    [Fact]
    public async Task ARateLimitHoldsAcrossTwoNodes_NeverAdmittingMoreThanTheLimit()
    {
        var clock = new FakeTimeProvider(TestTime.MinuteAhead(5)); // one minute window throughout, ending after the real clock (Redis expires by it)
        await using var upstream = await DemoUpstream.StartAsync();
        var keys = DemoPolicy.CreateKeys(new Uri("http://127.0.0.1:1"), new Uri("http://127.0.0.1:2"), null);
        var demo = DemoPolicy.Create(upstream.BaseUri, keys);
        var policy = demo with
        {
            Consumers = [.. demo.Consumers.Select(c => c.Id == "support-web" ? c with { Limits = new LimitsConfig { RequestsPerMinute = 10 } } : c)],
        };
        var counters = new RedisCounterStore(redis.Connection.GetDatabase(), clock, new RedisCounterOptions { KeyPrefix = $"test-{Guid.NewGuid():N}:" });
        var directories = new List<string>();
        async Task<CustosGateway> NodeAsync(string id)
        {
            var directory = Path.Combine(Path.GetTempPath(), "custos-node-" + Guid.NewGuid().ToString("N"));
            directories.Add(directory);
            return await CustosGateway.StartAsync(new CustosGatewayOptions
            {
                Policy = policy,
                DataDirectory = directory,
                DataPlaneUrl = "http://127.0.0.1:0",
                AdminUrl = "http://127.0.0.1:0",
                NodeId = id,
                TimeProvider = clock,
                Counters = counters,
                ConfigureLogging = logging => logging.SetMinimumLevel(LogLevel.Warning),
            });
        }

        await using var a = await NodeAsync("node-a");
        await using var b = await NodeAsync("node-b");
        try
        {
            var key = keys.Consumers.Single(c => c.Name == "support-web").Key;
            using var clientA = new HttpClient { BaseAddress = a.DataPlaneUri };
            using var clientB = new HttpClient { BaseAddress = b.DataPlaneUri };
            var statuses = await Task.WhenAll(Enumerable.Range(0, 40).Select(async i =>
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
                {
                    Content = new StringContent("""{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":8}""", Encoding.UTF8, "application/json"),
                };
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
                using var response = await (i % 2 == 0 ? clientA : clientB).SendAsync(request);
                return response.StatusCode;
            }));

            // Ten in all, not ten per node: with counters in each process the two nodes would admit up to twenty.
            Assert.Equal(10, statuses.Count(s => s == HttpStatusCode.OK));
            Assert.Equal(30, statuses.Count(s => s == HttpStatusCode.TooManyRequests));
        }
        finally
        {
            await a.DisposeAsync();
            await b.DisposeAsync();
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            foreach (var directory in directories)
            {
                Directory.Delete(directory, recursive: true);
            }
        }
    }
}
