using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace Custos.Gateway.Tests.Functional;

/// <summary>
/// Admin requests that are wrong in shape. Query values that do not read as their type: each a 400
/// <c>admin.invalid_request</c> naming the parameter, with the request id; before, an empty 400 without either.
/// Bodies of admin changes that are wrong in shape: each a 400 <c>admin.invalid_request</c> with the request id, and no
/// new policy version. Before, five of them were 500s (a null where the code expects none, in a list or as the list), and
/// a member the body does not have was ignored: a budget change with "amount" instead of "budget" removed the budget.
/// </summary>
public sealed class AdminBadInputTests
{
    [Theory]
    [InlineData("/admin/v1/ledger?limit=99999999999", "limit")]
    [InlineData("/admin/v1/ledger?from=garbage", "from")]
    [InlineData("/admin/v1/alerts?limit=ten", "limit")]
    [InlineData("/admin/v1/spend?to=yesterday", "to")]
    [InlineData("/admin/v1/reports/incident?subject=consumer&id=web&from=last%20week", "from")]
    [InlineData("/admin/v1/policy/diff?to=1", "from")]
    public async Task AQueryValueThatDoesNotRead_Is400NamingIt(string path, string parameter)
    {
        await using var g = await ControlPlaneFixture.StartAsync();
        using var http = new HttpClient { BaseAddress = g.Gateway.AdminUri };
        using var request = new HttpRequestMessage(HttpMethod.Get, path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", ControlPlaneFixture.AdminKey(g, "root"));

        using var response = await http.SendAsync(request);

        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest && text.Length > 0, $"{(int)response.StatusCode}: {text}");
        using var problem = JsonDocument.Parse(text);
        Assert.Equal("admin.invalid_request", problem.RootElement.GetProperty("code").GetString());
        Assert.Equal(TestGateway.RequestIdOf(response), problem.RootElement.GetProperty("request_id").GetString());
        Assert.Contains(parameter, problem.RootElement.GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("GET", "/admin/v1/nonexistent")]
    [InlineData("GET", "/admin/v1/policy/versions/latest")] // a version is a number
    [InlineData("DELETE", "/admin/v1/services")]
    public async Task ARouteTheAdminApiDoesNotHave_Is404WithCodeAndRequestId_NotAnEmptyAnswer(string method, string path)
    {
        await using var g = await ControlPlaneFixture.StartAsync();
        using var http = new HttpClient { BaseAddress = g.Gateway.AdminUri };
        using var request = new HttpRequestMessage(new HttpMethod(method), path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", ControlPlaneFixture.AdminKey(g, "root"));

        using var response = await http.SendAsync(request);

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        using var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal("admin.not_found", problem.RootElement.GetProperty("code").GetString());
        Assert.Equal(TestGateway.RequestIdOf(response), problem.RootElement.GetProperty("request_id").GetString());
        Assert.Equal($"There is no admin API route {method} {path}; the routes are listed at /admin/v1/openapi.json.", problem.RootElement.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task ALedgerRowAlteredBehindTheGateway_IsAnsweredAsStoreDamaged_NotTakenForWhatItsColumnsSay()
    {
        await using var g = await ControlPlaneFixture.StartAsync();
        using (var served = await g.Client.SendAsync(g.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}""")))
        {
            Assert.Equal(HttpStatusCode.OK, served.StatusCode); // released only once its ledger entry is committed
        }

        await using (var db = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={Path.Combine(g.DataDirectory, "custos.db")};Pooling=false"))
        {
            await db.OpenAsync();
            await using var command = db.CreateCommand();
            command.CommandText = "DROP TRIGGER ledger_no_update; UPDATE ledger SET tenant = 'globex' WHERE kind = 'request';";
            Assert.Equal(1, await command.ExecuteNonQueryAsync());
        }

        using var http = new HttpClient { BaseAddress = g.Gateway.AdminUri };
        using var request = new HttpRequestMessage(HttpMethod.Get, "/admin/v1/ledger?tenant=globex");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", ControlPlaneFixture.AdminKey(g, "root"));
        using var response = await http.SendAsync(request);

        Assert.Equal(HttpStatusCode.InternalServerError, response.StatusCode);
        using var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal("admin.store_damaged", problem.RootElement.GetProperty("code").GetString());
        Assert.Equal(TestGateway.RequestIdOf(response), problem.RootElement.GetProperty("request_id").GetString());
        Assert.Contains("was selected by its tenant column, but the entry says 'acme'", problem.RootElement.GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("POST", "/admin/v1/policy/versions", """{"reason":"no yaml"}""", "yaml")]
    [InlineData("POST", "/admin/v1/access-requests", """{"consumer":"web","models":null,"justification":"x"}""", "models")]
    [InlineData("POST", "/admin/v1/access-requests", """{"consumer":"web","models":[null],"justification":"x"}""", "models")]
    [InlineData("POST", "/admin/v1/access-requests", """{"consumer":"web","models":["gpt-4o"],"justification":"x","valid_until":"2001-01-01T00:00:00Z"}""", "valid_until")]
    [InlineData("PUT", "/admin/v1/services/support/owners", """{"owners":null,"reason":"x"}""", "owners")]
    [InlineData("PUT", "/admin/v1/services/support/prompt-rules", """{"prompt_rules":null,"reason":"x"}""", "prompt_rules")]
    [InlineData("PUT", "/admin/v1/services/support/prompt-rules", """{"prompt_rules":[null],"reason":"x"}""", "prompt_rules")]
    [InlineData("PUT", "/admin/v1/services/support/models", """{"models":[null],"reason":"x"}""", "models")]
    [InlineData("POST", "/admin/v1/kill-switches", """{"scope":"consumer","id":"web","engaged":null,"reason":"x"}""", "engaged")]
    [InlineData("PUT", "/admin/v1/budgets", """{"scope":"service","id":"support","amount":5,"reason":"typo for budget"}""", "amount")]
    public async Task AMalformedChange_Is400NamingTheField_AndChangesNothing(string method, string path, string body, string field)
    {
        await using var g = await ControlPlaneFixture.StartAsync();
        var before = g.Gateway.Policy.Current.Info.Number;
        using var http = new HttpClient { BaseAddress = g.Gateway.AdminUri };
        using var request = new HttpRequestMessage(new HttpMethod(method), path) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", ControlPlaneFixture.AdminKey(g, "root"));

        using var response = await http.SendAsync(request);

        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.BadRequest, $"{(int)response.StatusCode}: {text}");
        using var problem = JsonDocument.Parse(text);
        Assert.Equal("admin.invalid_request", problem.RootElement.GetProperty("code").GetString());
        Assert.Equal(TestGateway.RequestIdOf(response), problem.RootElement.GetProperty("request_id").GetString());
        Assert.Contains($"'{field}'", problem.RootElement.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal(before, g.Gateway.Policy.Current.Info.Number);
    }
}
