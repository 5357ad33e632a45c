using System.Diagnostics;
using System.Text;
using Custos.Policy;
using Custos.Testing;

namespace Custos.Gateway.Tests.Functional;

/// <summary>
/// A kill switch, suspension or revocation that comes into force while a request runs cuts it: the client's stream ends
/// with the gateway's error event, and the ledger says the request was interrupted and by which version.
/// </summary>
public sealed class InFlightCutTests
{
    private const string FirstEvent = """data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello there, how are you today?"},"finish_reason":null}]}""";

    /// <summary>A gateway whose OpenAI provider is <paramref name="provider"/>; <paramref name="applied"/> gets the policy it starts with.</summary>
    private static Task<TestGateway> StartAsync(ScriptedProvider provider, Action<PolicyDocument> applied)
        => TestGateway.StartAsync((_, policy) =>
        {
            policy = policy with
            {
                Tenants = [.. policy.Tenants.Select(t => t with
                {
                    Providers = [.. t.Providers.Select(p => p.Id is "openai" ? p with { BaseUrl = new Uri(provider.BaseUri + "v1") } : p)],
                })],
            };
            applied(policy);
            return policy;
        });

    /// <summary>One event of a chat stream, then nothing: the provider holds the stream open, as a slow model does.</summary>
    private static Reply SlowStream()
    {
        var body = Encoding.UTF8.GetBytes(FirstEvent + "\n\n");
        return new Reply("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            Encoding.Latin1.GetBytes(FormattableString.Invariant($"{body.Length:x}\r\n") + Encoding.Latin1.GetString(body) + "\r\n"), Close: false);
    }

    public static TheoryData<string> Stops => new() { "consumer", "credential" };

    /// <summary>Puts in force a version that stops consumer <c>web</c>: suspended (<c>consumer</c>) or its credentials revoked.</summary>
    private static async Task<PolicyVersion> StopWebAsync(TestGateway g, PolicyDocument policy, string stop)
    {
        var stopped = stop == "consumer"
            ? policy with { Consumers = [.. policy.Consumers.Select(c => c.Id == "web" ? c with { Suspended = true } : c)] }
            : policy with { Credentials = [.. policy.Credentials.Select(c => c.Consumer == "web" ? c with { Status = CredentialStatus.Revoked } : c)] };
        var (version, _, _) = await g.Gateway.ApplyPolicyAsync(stopped, "test", "incident", null);
        return version;
    }

    [Theory]
    [MemberData(nameof(Stops))]
    public async Task AKillSwitchOrRevocationMidStream_EndsTheStreamWithTheGatewaysErrorEvent_AndTheEntryIsInterrupted(string stop)
    {
        await using var provider = ScriptedProvider.Start();
        provider.Next.Enqueue(SlowStream());
        PolicyDocument policy = null!;
        await using var g = await StartAsync(provider, p => policy = p);
        using var response = await g.Client.SendAsync(
            g.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"""),
            HttpCompletionOption.ResponseHeadersRead);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        Assert.Equal(FirstEvent, await reader.ReadLineAsync()); // the stream runs

        var version = await StopWebAsync(g, policy, stop);
        var cut = Stopwatch.StartNew();
        var rest = await reader.ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(10)); // without the cut: until the provider ends it

        Assert.True(cut.Elapsed < TimeSpan.FromSeconds(5), $"the stream ended {cut.Elapsed} after the version came into force");
        var error = rest.Split('\n').Single(l => l.StartsWith("data: ", StringComparison.Ordinal));
        using (var json = System.Text.Json.JsonDocument.Parse(error["data: ".Length..]))
        {
            var body = json.RootElement.GetProperty("error");
            Assert.Equal("deny.killed_in_flight", body.GetProperty("code").GetString());
            Assert.Equal("permission_error", body.GetProperty("type").GetString());
            Assert.Equal(TestGateway.RequestIdOf(response), body.GetProperty("request_id").GetString());
        }

        var entry = await g.EntryAsync(TestGateway.RequestIdOf(response));
        Assert.Equal("interrupted", entry.GetProperty("outcome").GetString());
        Assert.Equal("allow", entry.GetProperty("decision").GetString()); // admitted: its tokens count
        Assert.Equal(["deny.killed_in_flight"], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
        Assert.Equal(version.Number, entry.GetProperty("cut_by_policy_version").GetInt64());
        Assert.Equal(200, entry.GetProperty("status").GetInt32());
        Assert.True(entry.GetProperty("output_tokens").GetInt64() > 0, "the tokens seen before the cut are recorded");
        Assert.Contains(g.Logs.Lines, l => l.Contains("cut while it ran", StringComparison.Ordinal));
    }

    [Theory]
    [MemberData(nameof(Stops))]
    public async Task AStopWhileTheProviderHasNotAnsweredYet_RefusesTheRequestAtOnce_InsteadOfWaitingForTheAnswer(string stop)
    {
        // The request waited for the provider's whole answer (a long completion: minutes, billed to the gateway) and was
        // refused only then; now the provider's request is cancelled and the client is refused as the version comes in.
        await using var provider = ScriptedProvider.Start();
        var never = new TaskCompletionSource<Reply>(TaskCreationOptions.RunContinuationsAsynchronously);
        provider.Answer = (_, _) => never.Task;
        PolicyDocument policy = null!;
        await using var g = await StartAsync(provider, p => policy = p);
        try
        {
            var sent = g.Client.SendAsync(g.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"""));
            await Eventually.TrueAsync(() => !provider.Received.IsEmpty, "the provider got the request");

            var version = await StopWebAsync(g, policy, stop);
            var cut = Stopwatch.StartNew();
            using var response = await sent.WaitAsync(TimeSpan.FromSeconds(20));

            Assert.True(cut.Elapsed < TimeSpan.FromSeconds(5), $"the request was refused {cut.Elapsed} after the version came into force");
            Assert.Equal(System.Net.HttpStatusCode.Forbidden, response.StatusCode);
            using (var json = System.Text.Json.JsonDocument.Parse(await response.Content.ReadAsStringAsync()))
            {
                var body = json.RootElement.GetProperty("error");
                Assert.Equal("deny.killed_in_flight", body.GetProperty("code").GetString());
                Assert.Equal(TestGateway.RequestIdOf(response), body.GetProperty("request_id").GetString());
            }

            var entry = await g.EntryAsync(TestGateway.RequestIdOf(response));
            Assert.Equal(("interrupted", 403), (entry.GetProperty("outcome").GetString(), entry.GetProperty("status").GetInt32()));
            Assert.Equal(["deny.killed_in_flight"], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
            Assert.Equal(version.Number, entry.GetProperty("cut_by_policy_version").GetInt64());
        }
        finally
        {
            never.TrySetCanceled();
        }
    }

    [Fact]
    public async Task ARequestStillRunsUnderAVersionThatChangesNothingOfItsCaller()
    {
        await using var provider = ScriptedProvider.Start();
        provider.Next.Enqueue(SlowStream());
        PolicyDocument policy = null!;
        await using var g = await StartAsync(provider, p => policy = p);
        using var response = await g.Client.SendAsync(
            g.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"""),
            HttpCompletionOption.ResponseHeadersRead);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        Assert.Equal(FirstEvent, await reader.ReadLineAsync());

        Assert.Equal("", await reader.ReadLineAsync()); // the first event's end

        // Another consumer switched off: this stream goes on.
        await g.Gateway.ApplyPolicyAsync(policy with { Consumers = [.. policy.Consumers.Select(c => c.Id != "web" ? c with { Suspended = true } : c)] },
            "test", "incident", null);

        var next = reader.ReadLineAsync();
        Assert.NotSame(next, await Task.WhenAny(next, Task.Delay(500))); // no error event, no end: the stream of a consumer still allowed runs
    }
}
