using System.Net;
using System.Text;
using System.Text.Json;
using static Custos.Gateway.Tests.Functional.ControlPlaneFixture;

namespace Custos.Gateway.Tests.Functional;

/// <summary>A service's model choice (<c>models:</c>) against its consumers' entitlements.</summary>
public sealed class ServiceModelsTests
{
    [Fact]
    public async Task ServiceModels_ExcludingAnEntitledModel_RefusalAndExplanationNameTheServiceChoice()
    {
        // The refusal said "ask the policy owner for access" and the ledger "no entitlement names claude-sonnet": both
        // false, the consumer was approved; the service's model choice left the model out.
        await using var g = await StartAsync();
        await JsonAsync(await AdminAsync(g, "prompts", HttpMethod.Put, "/admin/v1/services/support/models", new { models = new[] { "gpt-4o-mini" }, reason = "cheaper" }));

        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent("""{"model":"offline-model","messages":[{"role":"user","content":"hi"}],"max_tokens":16}""", Encoding.UTF8, "application/json"),
        };
        request.Headers.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", g.KeyOf("web"));
        using var response = await g.Client.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.Forbidden, text);
        var error = JsonDocument.Parse(text).RootElement.GetProperty("error");
        Assert.Equal(("deny.model_not_entitled", "model"), (error.GetProperty("code").GetString(), error.GetProperty("param").GetString()));
        Assert.Contains("is entitled to the model 'offline-model', but service 'support' allows its consumers only the models it names",
            error.GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.DoesNotContain("for access", error.GetProperty("message").GetString(), StringComparison.Ordinal);

        var requestId = TestGateway.RequestIdOf(response);
        var entry = await g.EntryAsync(requestId);
        var control = entry.GetProperty("controls").EnumerateArray().First(c => c.GetProperty("control").GetString() == "entitlement");
        Assert.Equal("service support's models exclude offline-model", control.GetProperty("detail").GetString());
        var approval = await JsonAsync(await AdminAsync(g, "root", HttpMethod.Get, $"/admin/v1/requests/{requestId}/approval"));
        Assert.Equal(["gpt-4o-mini"], approval.GetProperty("service_models").EnumerateArray().Select(m => m.GetString()));

        // A model no entitlement names keeps its own wording.
        Assert.Equal("deny.model_not_entitled", (await ChatAsync(g, g.KeyOf("web"), "gpt-4o")).Code);
    }

    [Fact]
    public async Task ServiceModels_EmptyList_IsRefused()
    {
        await using var g = await StartAsync();
        var version = g.Gateway.Policy.Current.Version;
        using var empty = await AdminAsync(g, "prompts", HttpMethod.Put, "/admin/v1/services/support/models", new { models = Array.Empty<string>(), reason = "oops" });
        // It was accepted, and stored as no choice at all: every model allowed.
        Assert.Equal(HttpStatusCode.BadRequest, empty.StatusCode);
        Assert.Contains("names no models, so none of its consumers could use any", await empty.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Equal(version, g.Gateway.Policy.Current.Version);
    }
}
