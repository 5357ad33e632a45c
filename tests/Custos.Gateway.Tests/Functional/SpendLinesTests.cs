using System.Globalization;
using System.Net;
using System.Text.Json;
using Custos.Policy;
using static Custos.Gateway.Tests.Functional.ControlPlaneFixture;

namespace Custos.Gateway.Tests.Functional;

/// <summary>
/// The chargeback lines of <c>GET /admin/v1/spend/lines</c>: spend per tenant, service, consumer and model, from the
/// request entries, within the admin's scope, with the policy versions whose prices costed them; as JSON and CSV.
/// </summary>
public sealed class SpendLinesTests
{
    [Fact]
    public async Task SpendLines_PerConsumerAndModel_AddUpToTheEntries_NameThePricingVersions_InScope()
    {
        // Finance had the spend per service only (GET /spend) and no ledger: a month's spend per consumer or model, the
        // chargeback, could not be had from the gateway at all.
        await using var g = await StartAsync();
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("web"))).Status);
        var first = g.Gateway.Policy.Current.Version;
        var document = g.Gateway.Policy.Current.Document;
        var dearer = document with
        {
            Tenants = [.. document.Tenants.Select(t => t.Id != "acme" ? t : t with
            {
                Models = [.. t.Models.Select(m => m.Name == "gpt-4o-mini" ? m with { InputPerMillion = m.InputPerMillion * 10 + 1, OutputPerMillion = m.OutputPerMillion * 10 + 1 } : m)],
            })],
        };
        await JsonAsync(await AdminAsync(g, "root", HttpMethod.Post, "/admin/v1/policy/versions",
            new Dictionary<string, object?> { ["yaml"] = PolicyYamlWriter.Write(dearer), ["reason"] = "new prices" }));
        var second = g.Gateway.Policy.Current.Version;
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("web"))).Status);
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("agent"), "gpt-4o")).Status);
        Assert.Equal("deny.model_not_entitled", (await ChatAsync(g, g.KeyOf("web"), "gpt-4o")).Code);
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("globex-user"), "globex-only")).Status);
        var ledger = await g.LedgerAsync();
        decimal CostOf(string consumer, string model) => ledger.Where(e => e.GetProperty("consumer").GetString() == consumer && e.GetProperty("model").GetString() == model
                && e.GetProperty("cost").ValueKind == JsonValueKind.String)
            .Sum(e => decimal.Parse(e.GetProperty("cost").GetString()!, CultureInfo.InvariantCulture));

        // Finance of acme: acme's lines only, each adding up to its entries, the price change named by the versions.
        var root = await JsonAsync(await AdminAsync(g, "finance", HttpMethod.Get, "/admin/v1/spend/lines"));
        var lines = root.GetProperty("lines").EnumerateArray().ToDictionary(l => (l.GetProperty("consumer").GetString(), l.GetProperty("model").GetString()));
        Assert.Equal([("agent", "gpt-4o"), ("web", "gpt-4o"), ("web", "gpt-4o-mini")], lines.Keys.Order());
        var mini = lines[("web", "gpt-4o-mini")];
        Assert.Equal(("acme", "support", "USD", 2L, 2L, CostOf("web", "gpt-4o-mini")), (mini.GetProperty("tenant").GetString(), mini.GetProperty("service").GetString(),
            mini.GetProperty("currency").GetString(), mini.GetProperty("requests").GetInt64(), mini.GetProperty("priced").GetInt64(), mini.GetProperty("spend").GetDecimal()));
        Assert.Equal([first, second], mini.GetProperty("policy_versions").EnumerateArray().Select(v => v.GetInt64()));
        Assert.Equal((CostOf("agent", "gpt-4o"), "agents"), (lines[("agent", "gpt-4o")].GetProperty("spend").GetDecimal(), lines[("agent", "gpt-4o")].GetProperty("service").GetString()));
        var refused = lines[("web", "gpt-4o")];
        Assert.Equal((1L, 0L, 0m, JsonValueKind.Null), (refused.GetProperty("requests").GetInt64(), refused.GetProperty("priced").GetInt64(),
            refused.GetProperty("spend").GetDecimal(), refused.GetProperty("currency").ValueKind));

        // The lines of a service add up to GET /spend's figure for it.
        var spend = (await JsonAsync(await AdminAsync(g, "finance", HttpMethod.Get, "/admin/v1/spend"))).EnumerateArray()
            .Single(s => s.GetProperty("service").GetString() == "support").GetProperty("spend").GetDecimal();
        Assert.Equal(spend, lines.Values.Where(l => l.GetProperty("service").GetString() == "support").Sum(l => l.GetProperty("spend").GetDecimal()));

        // The same lines as CSV, for a spreadsheet.
        using var csv = await AdminAsync(g, "finance", HttpMethod.Get, "/admin/v1/spend/lines?format=csv");
        Assert.Equal("text/csv", csv.Content.Headers.ContentType?.MediaType);
        var rows = (await csv.Content.ReadAsStringAsync()).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("tenant,service,consumer,model,currency,requests,priced,input_tokens,output_tokens,spend,policy_versions", rows[0]);
        var row = rows.Single(r => r.StartsWith("acme,support,web,gpt-4o-mini,", StringComparison.Ordinal)).Split(',');
        Assert.Equal((CostOf("web", "gpt-4o-mini"), $"{first} {second}"), (decimal.Parse(row[9], CultureInfo.InvariantCulture), row[10]));
        Assert.Equal(4, rows.Length);

        // Roles without spend are refused, with a code; a format it does not make is a 400.
        using var owner = await AdminAsync(g, "support-owner", HttpMethod.Get, "/admin/v1/spend/lines");
        Assert.Equal(HttpStatusCode.Forbidden, owner.StatusCode);
        using var xml = await AdminAsync(g, "finance", HttpMethod.Get, "/admin/v1/spend/lines?format=xml");
        Assert.Equal(HttpStatusCode.BadRequest, xml.StatusCode);
        Assert.Equal("admin.invalid_request", JsonDocument.Parse(await xml.Content.ReadAsStringAsync()).RootElement.GetProperty("code").GetString());
    }
}
