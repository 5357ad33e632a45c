using System.Globalization;
using System.Net;
using System.Text.Json;
using Custos.Gateway.Hosting;
using Custos.Policy;

namespace Custos.Gateway.Tests.Functional;

/// <summary>
/// The in-process counters start from the ledger: a restart forgot every quota and budget used so far (a consumer at its
/// daily quota was served again), and so did a policy version that brought a counter (a budget added mid-month).
/// </summary>
public sealed class CounterSeedTests
{
    private const string Chat = """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Count me"}]}""";

    private static async Task<(HttpStatusCode Status, string? Code)> ChatAsync(TestGateway g)
    {
        using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat));
        using var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return (response.StatusCode, response.IsSuccessStatusCode ? null : body.RootElement.GetProperty("error").GetProperty("code").GetString());
    }

    private static JsonElement Control(JsonElement entry, string control)
        => entry.GetProperty("controls").EnumerateArray().Single(c => c.GetProperty("control").GetString() == control && c.GetProperty("scope").GetString() == "consumer:web");

    private static decimal Money(JsonElement value) => decimal.Parse(value.ValueKind == JsonValueKind.String ? value.GetString()! : value.GetRawText(), CultureInfo.InvariantCulture);

    [Fact]
    public async Task ARestart_KeepsWhatTheDaysQuotaAndBudgetHaveUsed()
    {
        CustosGatewayOptions? loaded = null;
        await using var g = await TestGateway.StartAsync((_, policy) => policy with
        {
            Consumers = [.. policy.Consumers.Select(c => c.Id == "web"
                ? c with { Limits = new LimitsConfig { RequestsPerDay = 3, TokensPerMonth = 1_000_000, Budget = new BudgetConfig { Amount = 100m, Period = BudgetPeriod.Day } } }
                : c)],
        }, options: o => loaded = o);
        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g)).Status);
        }

        Assert.Equal("deny.quota_exhausted", (await ChatAsync(g)).Code);
        var allowed = (await g.LedgerAsync()).Where(e => e.GetProperty("decision").GetString() == "allow").ToList();
        var spent = allowed.Sum(e => Money(e.GetProperty("cost")));
        var tokens = allowed.Sum(e => e.GetProperty("input_tokens").GetInt64() + e.GetProperty("output_tokens").GetInt64());
        Assert.True(spent > 0 && tokens > 0);

        await g.RestartAsync(loaded!);
        Assert.Equal("deny.quota_exhausted", (await ChatAsync(g)).Code);
        var refused = (await g.LedgerAsync()).Last();
        Assert.Equal(3, Control(refused, "quota.requests_per_day").GetProperty("used").GetInt64());
        Assert.Equal(spent, Money(Control(refused, "budget").GetProperty("used")));
        Assert.Equal(tokens, Control(refused, "quota.tokens_per_month").GetProperty("used").GetInt64());
        Assert.Contains(g.Logs.Lines, m => m.Contains("Quotas and budgets start from what the ledger holds", StringComparison.Ordinal));
    }

    [Fact]
    public async Task AQuotaAddedMidDay_CountsTheDaysRequestsSoFar()
    {
        await using var g = await TestGateway.StartAsync();
        for (var i = 0; i < 2; i++)
        {
            Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g)).Status);
        }

        await g.Gateway.Ledger.FlushAsync();
        await g.Gateway.ChangePolicyAsync(doc => doc with
        {
            Consumers = [.. doc.Consumers.Select(c => c.Id == "web" ? c with { Limits = new LimitsConfig { RequestsPerDay = 3 } } : c)],
        }, "test", "a daily quota, mid-day");

        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g)).Status);
        Assert.Equal("deny.quota_exhausted", (await ChatAsync(g)).Code);
    }
}
