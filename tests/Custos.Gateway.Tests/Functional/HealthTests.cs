using System.Net;
using System.Text.Json;

namespace Custos.Gateway.Tests.Functional;

public sealed class HealthTests(GatewayFixture fixture) : IClassFixture<GatewayFixture>
{
    private TestGateway G => fixture.Gateway;

    [Fact]
    public async Task Healthz_AnswersOkWithoutCredentialAndWithoutLedgerEntry()
    {
        await G.Gateway.Ledger.FlushAsync();
        var before = G.Gateway.Ledger.Persisted;

        using var response = await G.Client.GetAsync("/healthz");

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("ok", await response.Content.ReadAsStringAsync());
        await G.Gateway.Ledger.FlushAsync();
        Assert.Equal(before, G.Gateway.Ledger.Persisted);
    }

    [Fact]
    public async Task Readyz_NamesThePolicyVersionInForce_OnBothListeners()
    {
        foreach (var baseUri in new[] { G.Gateway.DataPlaneUri, G.Gateway.AdminUri })
        {
            using var client = new HttpClient { BaseAddress = baseUri };
            using var response = await client.GetAsync("/readyz");

            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            Assert.Equal("ready", json.RootElement.GetProperty("status").GetString());
            Assert.Equal(G.Gateway.Policy.Current.Version, json.RootElement.GetProperty("policy_version").GetInt64());
            Assert.Equal(G.Gateway.Policy.Current.Hash, json.RootElement.GetProperty("policy_hash").GetString());
        }
    }
}
