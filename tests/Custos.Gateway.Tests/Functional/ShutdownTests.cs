using System.Net;
using System.Text;
using System.Text.Json;
using Custos.Ledger;
using Custos.Testing;

namespace Custos.Gateway.Tests.Functional;

/// <summary>
/// A gateway that stops (SIGTERM, a rolling restart) says so to a load balancer at once, lets the requests in flight
/// finish for its drain time, and ends those still running after it with a code the client and the ledger both get.
/// </summary>
public sealed class ShutdownTests
{
    private const string FirstEvent = """data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello there, how are you today?"},"finish_reason":null}]}""";

    /// <summary>A gateway whose OpenAI provider is <paramref name="provider"/>, which stops within <paramref name="drain"/>.</summary>
    private static Task<TestGateway> StartAsync(ScriptedProvider provider, TimeSpan drain)
        => TestGateway.StartAsync((_, policy) => policy with
        {
            Tenants = [.. policy.Tenants.Select(t => t with
            {
                Providers = [.. t.Providers.Select(p => p.Id is "openai" ? p with { BaseUrl = new Uri(provider.BaseUri + "v1") } : p)],
            })],
        }, options: o => o with { ShutdownDrain = drain });

    /// <summary>One event of a chat stream, then nothing: the provider holds the stream open, as a slow model does.</summary>
    private static Reply SlowStream()
    {
        var body = Encoding.UTF8.GetBytes(FirstEvent + "\n\n");
        return new Reply("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            Encoding.Latin1.GetBytes(FormattableString.Invariant($"{body.Length:x}\r\n") + Encoding.Latin1.GetString(body) + "\r\n"), Close: false);
    }

    /// <summary>The stored entry of <paramref name="requestId"/>, read from the stopped gateway's folder.</summary>
    private static async Task<JsonElement> StoredEntryAsync(string directory, string requestId)
    {
        await using var store = await Storage.SqliteStore.OpenExistingAsync(directory);
        var entries = new List<JsonElement>();
        await foreach (var row in store.QueryAsync(new LedgerQuery { RequestId = requestId }))
        {
            entries.Add(JsonDocument.Parse(row.Json).RootElement.Clone());
        }

        return Assert.Single(entries);
    }

    [Fact]
    public async Task Readyz_AnswersStoppingOnTheAdminListener_WhileTheRequestsInFlightDrain()
    {
        // The admin listener said ready (200) until the data plane had drained, though the data plane already refused
        // new connections: a balancer checking it kept sending traffic to a node that was going away.
        await using var provider = ScriptedProvider.Start();
        var answer = new TaskCompletionSource<Reply>(TaskCreationOptions.RunContinuationsAsynchronously);
        provider.Answer = (_, _) => answer.Task;
        await using var g = await StartAsync(provider, TimeSpan.FromSeconds(20));
        using var admin = new HttpClient { BaseAddress = g.Gateway.AdminUri };
        try
        {
            var sent = g.Client.SendAsync(g.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"""));
            await Eventually.TrueAsync(() => !provider.Received.IsEmpty, "the provider got the request");
            using (var before = await admin.GetAsync("/readyz"))
            {
                Assert.Equal(HttpStatusCode.OK, before.StatusCode);
            }

            var stopping = g.Gateway.DisposeAsync().AsTask();
            var deadline = DateTime.UtcNow + Eventually.DefaultWithin;
            HttpStatusCode code;
            string? status;
            do
            {
                await Task.Delay(10);
                using var response = await admin.GetAsync("/readyz");
                using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
                (code, status) = (response.StatusCode, json.RootElement.GetProperty("status").GetString());
            }
            while (code == HttpStatusCode.OK && DateTime.UtcNow < deadline);

            Assert.Equal((HttpStatusCode.ServiceUnavailable, "stopping"), (code, status));
            Assert.False(stopping.IsCompleted, "the request in flight still runs");

            answer.SetResult(new Reply("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n", "{}"u8.ToArray(), Close: true));
            await sent.WaitAsync(TimeSpan.FromSeconds(20));
            await stopping.WaitAsync(TimeSpan.FromSeconds(30));
        }
        finally
        {
            answer.TrySetCanceled();
        }
    }

    [Fact]
    public async Task AStreamStillRunningWhenTheDrainEnds_EndsWithTheGatewaysErrorEvent_AndIsRecordedAsShutDown()
    {
        // It was cut with nothing said when the listener's limit closed its connection, and recorded as client.cancelled.
        await using var provider = ScriptedProvider.Start();
        provider.Next.Enqueue(SlowStream());
        await using var g = await StartAsync(provider, TimeSpan.FromMilliseconds(500));
        var directory = g.DataDirectory;
        using var response = await g.Client.SendAsync(
            g.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"""),
            HttpCompletionOption.ResponseHeadersRead);
        using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
        Assert.Equal(FirstEvent, await reader.ReadLineAsync()); // the stream runs

        var stopping = g.Gateway.DisposeAsync().AsTask();
        var rest = await reader.ReadToEndAsync().WaitAsync(TimeSpan.FromSeconds(20)); // the listener's own limit is 30 s
        await stopping.WaitAsync(TimeSpan.FromSeconds(30));

        var error = rest.Split('\n').Single(l => l.StartsWith("data: ", StringComparison.Ordinal));
        using (var json = JsonDocument.Parse(error["data: ".Length..]))
        {
            var body = json.RootElement.GetProperty("error");
            Assert.Equal("unavailable.shutting_down", body.GetProperty("code").GetString());
            Assert.Equal(TestGateway.RequestIdOf(response), body.GetProperty("request_id").GetString());
        }

        var entry = await StoredEntryAsync(directory, TestGateway.RequestIdOf(response));
        Assert.Equal(("allow", "interrupted"), (entry.GetProperty("decision").GetString(), entry.GetProperty("outcome").GetString()));
        Assert.Equal(["unavailable.shutting_down"], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
        Assert.False(entry.TryGetProperty("cut_by_policy_version", out _), "no policy version cut it");
        Assert.True(entry.GetProperty("output_tokens").GetInt64() > 0, "the tokens seen before the cut are recorded");
    }

    [Fact]
    public async Task ARequestStillWaitingForTheProviderWhenTheDrainEnds_Gets503ShuttingDown_AndIsRecorded()
    {
        // The client's connection was closed without an answer, and the entry said the client had cancelled (499).
        await using var provider = ScriptedProvider.Start();
        var never = new TaskCompletionSource<Reply>(TaskCreationOptions.RunContinuationsAsynchronously);
        provider.Answer = (_, _) => never.Task;
        await using var g = await StartAsync(provider, TimeSpan.FromMilliseconds(500));
        var directory = g.DataDirectory;
        try
        {
            var sent = g.Client.SendAsync(g.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"""));
            await Eventually.TrueAsync(() => !provider.Received.IsEmpty, "the provider got the request");

            var stopping = g.Gateway.DisposeAsync().AsTask();
            using var response = await sent.WaitAsync(TimeSpan.FromSeconds(20));
            await stopping.WaitAsync(TimeSpan.FromSeconds(30));

            Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
            using (var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync()))
            {
                var body = json.RootElement.GetProperty("error");
                Assert.Equal("unavailable.shutting_down", body.GetProperty("code").GetString());
                Assert.Equal(TestGateway.RequestIdOf(response), body.GetProperty("request_id").GetString());
            }

            var entry = await StoredEntryAsync(directory, TestGateway.RequestIdOf(response));
            Assert.Equal(("interrupted", 503), (entry.GetProperty("outcome").GetString(), entry.GetProperty("status").GetInt32()));
            Assert.Equal(["unavailable.shutting_down"], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
        }
        finally
        {
            never.TrySetCanceled();
        }
    }
}
