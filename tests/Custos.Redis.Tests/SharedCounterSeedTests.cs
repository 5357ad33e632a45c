using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Custos.Gateway.Demo;
using Custos.Gateway.Hosting;
using Custos.Policy;
using Custos.Testing;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;

namespace Custos.Redis.Tests;

/// <summary>
/// A quota or budget that a policy version brings starts, in Redis as in process, from what the ledger holds of its
/// current day or month: it started from zero in Redis, so a budget added mid-month let a consumer spend it all again.
/// </summary>
[Collection(RedisCollection.Name)]
public sealed class SharedCounterSeedTests(RedisServerFixture redis)
{
    [Fact]
    public async Task AQuotaAndBudgetAddedByAVersion_StartFromTheLedgersCount_NotFromZero()
    {
        var clock = new FakeTimeProvider(TestTime.MinuteAhead(5));
        await using var upstream = await DemoUpstream.StartAsync();
        var keys = DemoPolicy.CreateKeys(new Uri("http://127.0.0.1:1"), new Uri("http://127.0.0.1:2"), null);
        var policy = DemoPolicy.Create(upstream.BaseUri, keys);
        var directory = Path.Combine(Path.GetTempPath(), "custos-node-" + Guid.NewGuid().ToString("N"));
        var gateway = await CustosGateway.StartAsync(new CustosGatewayOptions
        {
            Policy = policy,
            DataDirectory = directory,
            DataPlaneUrl = "http://127.0.0.1:0",
            AdminUrl = "http://127.0.0.1:0",
            NodeId = "node-a",
            TimeProvider = clock,
            Counters = new RedisCounterStore(redis.Connection.GetDatabase(), clock, new RedisCounterOptions { KeyPrefix = $"test-{Guid.NewGuid():N}:" }),
            ConfigureLogging = logging => logging.SetMinimumLevel(LogLevel.Warning),
        });
        try
        {
            var key = keys.Consumers.Single(c => c.Name == "data-team").Key;
            using var client = new HttpClient { BaseAddress = gateway.DataPlaneUri };
            async Task<(HttpStatusCode Status, string? Code)> ChatAsync()
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
                {
                    Content = new StringContent("""{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":8}""", Encoding.UTF8, "application/json"),
                };
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
                using var response = await client.SendAsync(request);
                using var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
                return (response.StatusCode, response.IsSuccessStatusCode ? null : body.RootElement.GetProperty("error").GetProperty("code").GetString());
            }

            for (var i = 0; i < 2; i++)
            {
                Assert.Equal(HttpStatusCode.OK, (await ChatAsync()).Status);
            }

            await gateway.Ledger.FlushAsync();
            var spent = (await EntriesAsync(gateway)).Where(e => e.GetProperty("decision").GetString() == "allow").Sum(e => Money(e.GetProperty("cost")));
            Assert.True(spent > 0);

            // A daily quota of three and a month's budget, added mid-day: two requests of the day are on record already.
            await gateway.ChangePolicyAsync(doc => doc with
            {
                Consumers = [.. doc.Consumers.Select(c => c.Id == "data-team"
                    ? c with { Limits = new LimitsConfig { RequestsPerDay = 3, Budget = new BudgetConfig { Amount = 100m, Period = BudgetPeriod.Month } } }
                    : c)],
            }, "test", "a daily quota and a budget, mid-day");

            Assert.Equal(HttpStatusCode.OK, (await ChatAsync()).Status);
            Assert.Equal("deny.quota_exhausted", (await ChatAsync()).Code);
            await gateway.Ledger.FlushAsync();
            var entries = await EntriesAsync(gateway);
            var third = entries[^2];
            Assert.Equal(spent, Money(Control(third, "budget").GetProperty("used")));
            Assert.Equal(3, Control(entries[^1], "quota.requests_per_day").GetProperty("used").GetInt64());
        }
        finally
        {
            await gateway.DisposeAsync();
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            Directory.Delete(directory, recursive: true);
        }
    }

    private static async Task<List<JsonElement>> EntriesAsync(CustosGateway gateway)
    {
        var entries = new List<JsonElement>();
        await foreach (var entry in gateway.Store.QueryAsync(new Custos.Ledger.LedgerQuery { Kind = "request", Limit = 1000 }))
        {
            entries.Add(JsonDocument.Parse(entry.Json).RootElement.Clone());
        }

        return entries;
    }

    private static JsonElement Control(JsonElement entry, string control)
        => entry.GetProperty("controls").EnumerateArray().Single(c => c.GetProperty("control").GetString() == control && c.GetProperty("scope").GetString() == "consumer:data-team");

    private static decimal Money(JsonElement value)
        => decimal.Parse(value.ValueKind == JsonValueKind.String ? value.GetString()! : value.GetRawText(), CultureInfo.InvariantCulture);
}
