using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Text.Json;
using Custos.Gateway.Hosting;
using Custos.Gateway.Ledger;
using Custos.Gateway.Tests.Ledger;
using Custos.Ledger;
using Custos.Testing;

namespace Custos.Gateway.Tests.Functional;

/// <summary>
/// No response without its evidence: a client never holds a complete response whose ledger record is not durable, in
/// the store or in the local spool; when the store goes away the spool takes over, and when nothing can take records the
/// gateway refuses requests instead of serving them unrecorded.
/// </summary>
public sealed class LedgerDurabilityTests
{
    private const string Chat = """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}""";
    private const string Stream = """{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hello"}]}""";
    private const string AnthropicStream = """{"model":"claude-sonnet","max_tokens":20,"stream":true,"messages":[{"role":"user","content":"hello"}]}""";
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    private static LedgerWriterOptions Fast(LedgerWriterOptions options) => options with
    {
        RetryDelay = TimeSpan.FromMilliseconds(20),
        RetryInterval = TimeSpan.FromMilliseconds(100),
        StopTimeout = TimeSpan.FromSeconds(1),
    };

    private static async Task<(TestGateway Gateway, FailableLedgerStore Store)> StartAsync(Func<LedgerWriterOptions, LedgerWriterOptions>? ledger = null,
        Action<CustosGatewayOptions>? capture = null)
    {
        FailableLedgerStore? store = null;
        var g = await TestGateway.StartAsync(null, options: o =>
        {
            var changed = o with { LedgerStore = s => store = new FailableLedgerStore(s), LedgerOptions = ledger ?? Fast };
            capture?.Invoke(changed);
            return changed;
        });
        await g.Gateway.Ledger.FlushAsync();
        return (g, store!);
    }

    [Fact]
    public async Task WhileTheStoreIsDown_EveryServedRequestIsRecorded_AndTheSpoolDrainsIntoAnUnbrokenChain()
    {
        var (g, store) = await StartAsync();
        await using var _ = g;
        store.Failing = true;

        var ids = new ConcurrentBag<string>();
        async Task OneAsync(int i)
        {
            var refused = i % 7 == 0;
            var stream = i % 3 == 0;
            using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions", stream ? Stream : Chat, refused ? "revoked-user" : "web"));
            var body = await response.Content.ReadAsStringAsync();
            Assert.Equal(refused ? HttpStatusCode.Unauthorized : HttpStatusCode.OK, response.StatusCode);
            if (stream && !refused)
            {
                Assert.EndsWith("data: [DONE]\n\n", body, StringComparison.Ordinal);
            }

            ids.Add(TestGateway.RequestIdOf(response));
        }

        for (var wave = 0; wave < 6; wave++)
        {
            await Task.WhenAll(Enumerable.Range(wave * 8, 8).Select(OneAsync)).WaitAsync(Bound);
        }

        // Served while the store was down: every record is durable in the spool, and the node stays ready.
        Assert.True(g.Gateway.Ledger.Spooled >= 48, $"{g.Gateway.Ledger.Spooled} spooled");
        Assert.True(g.Gateway.Ledger.IsHealthy);
        using (var admin = new HttpClient { BaseAddress = g.Gateway.AdminUri })
        using (var ready = await admin.GetAsync("/readyz"))
        {
            Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
            using var json = JsonDocument.Parse(await ready.Content.ReadAsStringAsync());
            Assert.Equal("ready", json.RootElement.GetProperty("status").GetString());
            Assert.True(json.RootElement.GetProperty("ledger_spooled").GetInt64() >= 48);
        }

        Assert.Contains(g.Logs.Lines, l => l.Contains("LedgerWriter[103]", StringComparison.Ordinal));

        store.Failing = false;
        await g.Gateway.Ledger.WaitForSpoolDrainedAsync().WaitAsync(Bound);

        Assert.Contains(g.Logs.Lines, l => l.Contains("LedgerWriter[104]", StringComparison.Ordinal));
        var entries = await g.LedgerAsync();
        foreach (var id in ids)
        {
            Assert.Single(entries, e => e.GetProperty("request_id").GetString() == id);
        }

        await AssertChainVerifiesAsync(g.Gateway.Store, g.DataDirectory);
        Assert.Empty(Directory.GetFiles(Path.Combine(g.DataDirectory, "spool"), "*.jsonl", SearchOption.AllDirectories));
    }

    [Fact]
    public async Task StoppingWhileTheStoreIsDown_KeepsTheSpoolOnDisk_AndTheNextStartDrainsIt_WithoutAFork()
    {
        CustosGatewayOptions? options = null;
        var (g, store) = await StartAsync(capture: o => options = o);
        await using var _ = g;
        store.Failing = true;
        var ids = new List<string>();
        for (var i = 0; i < 6; i++)
        {
            using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions", i % 2 == 0 ? Chat : Stream));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            ids.Add(TestGateway.RequestIdOf(response));
        }

        var stopping = Stopwatch.StartNew();
        await g.Gateway.DisposeAsync().AsTask().WaitAsync(Bound); // bounded although the store never came back
        Assert.True(stopping.Elapsed < TimeSpan.FromSeconds(20), $"stopping took {stopping.Elapsed}");
        var spool = Path.Combine(g.DataDirectory, "spool", "test-node");
        Assert.NotEmpty(Directory.GetFiles(spool, "*.jsonl"));
        Assert.Contains(g.Logs.Lines, l => l.Contains("LedgerWriter[113]", StringComparison.Ordinal));

        // The next start, with the store back, moves the spool into it first; the chain continues after it.
        await using var again = await CustosGateway.StartAsync(options! with { LedgerStore = null, LedgerOptions = null });
        Assert.Equal(0, again.Ledger.Spooled);
        Assert.Empty(Directory.GetFiles(spool, "*.jsonl"));
        using var client = new HttpClient { BaseAddress = again.DataPlaneUri };
        using (var after = await client.SendAsync(g.Post("/v1/chat/completions", Chat)))
        {
            Assert.Equal(HttpStatusCode.OK, after.StatusCode);
            ids.Add(TestGateway.RequestIdOf(after));
        }

        await again.Ledger.FlushAsync();
        var stored = new List<string?>();
        await foreach (var row in again.Store.QueryAsync(new LedgerQuery { Limit = 100_000 }))
        {
            stored.Add(JsonDocument.Parse(row.Json).RootElement.GetProperty("request_id").GetString());
        }

        Assert.All(ids, id => Assert.Single(stored, s => s == id));
        await AssertChainVerifiesAsync(again.Store, g.DataDirectory);
    }

    [Fact]
    public async Task WhenNeitherTheStoreNorTheSpoolTakesRecords_NewRequestsAre503_AndNothingIsServedUnrecorded()
    {
        var (g, store) = await StartAsync();
        await using var _ = g;
        File.WriteAllText(Path.Combine(g.DataDirectory, "spool"), "in the way"); // the spool folder cannot be created
        var upstreamBefore = g.Upstream.RequestCount;
        store.Failing = true;

        var inFlight = g.Client.SendAsync(g.Post("/v1/chat/completions", Chat));
        await Eventually.TrueAsync(() => !g.Gateway.Ledger.IsHealthy, "the ledger reports itself unhealthy");

        var refused = new List<string>();
        for (var i = 0; i < 5; i++)
        {
            using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat));
            Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
            Assert.Equal("1", Assert.Single(response.Headers.GetValues("Retry-After")));
            using var error = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            Assert.Equal("unavailable.ledger", error.RootElement.GetProperty("error").GetProperty("code").GetString());
            var id = TestGateway.RequestIdOf(response);
            Assert.Equal(id, error.RootElement.GetProperty("error").GetProperty("request_id").GetString());
            refused.Add(id);
        }

        using (var ready = await g.Client.GetAsync("/readyz"))
        {
            Assert.Equal(HttpStatusCode.ServiceUnavailable, ready.StatusCode);
            Assert.Contains("\"ledger_unavailable\"", await ready.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        // The request in flight reached the provider, and waits for its record; the refused ones reached nothing.
        Assert.False(inFlight.IsCompleted, "a response completed without a durable record");
        Assert.Equal(upstreamBefore + 1, g.Upstream.RequestCount);

        store.Failing = false;
        using var served = await inFlight.WaitAsync(Bound);
        Assert.Equal(HttpStatusCode.OK, served.StatusCode);
        Assert.True(g.Gateway.Ledger.IsHealthy);
        Assert.Equal("completed", (await g.EntryAsync(TestGateway.RequestIdOf(served))).GetProperty("outcome").GetString());
        foreach (var id in refused)
        {
            var entry = await g.EntryAsync(id);
            Assert.Equal("unavailable.ledger", Assert.Single(entry.GetProperty("reasons").EnumerateArray()).GetString());
            Assert.Equal("throttle", entry.GetProperty("decision").GetString());
            Assert.Equal(503, entry.GetProperty("status").GetInt32());
        }
    }

    [Fact]
    public async Task WhenTheWriterStopsBeforeTheRecordIsDurable_TheConnectionIsAborted()
    {
        var (g, store) = await StartAsync(o => Fast(o) with { StopTimeout = TimeSpan.FromMilliseconds(300) });
        await using var _ = g;
        File.WriteAllText(Path.Combine(g.DataDirectory, "spool"), "in the way");
        store.Failing = true;
        var inFlight = g.Client.SendAsync(g.Post("/v1/chat/completions", Chat));
        await Eventually.TrueAsync(() => !g.Gateway.Ledger.IsHealthy, "the ledger reports itself unhealthy");

        await g.Gateway.Ledger.DisposeAsync().AsTask().WaitAsync(Bound); // gives up: nothing takes the record

        var error = await Assert.ThrowsAnyAsync<Exception>(() => inFlight.WaitAsync(Bound));
        Assert.True(error is HttpRequestException or IOException, error.ToString());
        Assert.Equal(1, g.Gateway.Ledger.Lost);
        Assert.Contains(g.Logs.Lines, l => l.Contains("DataPlane[5]", StringComparison.Ordinal));
    }

    [Fact]
    public async Task AResponseCompletesOnlyOnceItsRecordIsStored_JsonStreamsAndRefusals()
    {
        var (g, store) = await StartAsync(o => Fast(o) with { AppendTimeout = TimeSpan.FromMinutes(1) });
        await using var _ = g;
        store.CloseGate(); // the store takes appends, but does not answer
        try
        {
            await ProveHoldBackAsync(g, store);
        }
        finally
        {
            store.OpenGate();
        }
    }

    private static async Task ProveHoldBackAsync(TestGateway g, FailableLedgerStore store)
    {
        // JSON with a Content-Length: the write that completes the body (here all of it) waits for the record.
        var json = g.Client.SendAsync(g.Post("/v1/chat/completions", Chat));
        await store.AppendWaiting.WaitAsync(Bound);

        // Streams: events flow as they come (time to first byte unchanged); the end of the final event waits, so a
        // client cannot read its data line (nor the end of the chunked body).
        using var openAi = await g.Client.SendAsync(g.Post("/v1/chat/completions", Stream), HttpCompletionOption.ResponseHeadersRead);
        var openAiReader = new StreamReader(await openAi.Content.ReadAsStreamAsync());
        Assert.StartsWith("data: {", await openAiReader.ReadLineAsync().WaitAsync(Bound), StringComparison.Ordinal);
        var openAiRest = ReadUntilAsync(openAiReader, "data: [DONE]");
        using var anthropic = await g.Client.SendAsync(g.Post("/v1/messages", AnthropicStream, anthropicHeader: true), HttpCompletionOption.ResponseHeadersRead);
        var anthropicReader = new StreamReader(await anthropic.Content.ReadAsStreamAsync());
        Assert.Equal("event: message_start", await anthropicReader.ReadLineAsync().WaitAsync(Bound));
        var anthropicRest = ReadUntilAsync(anthropicReader, "data: {\"type\":\"message_stop\"");

        // A refusal written by the gateway itself.
        var denied = g.Client.SendAsync(g.Post("/v1/chat/completions", Chat, "revoked-user"));

        // Let anything that would complete show itself, then check that nothing did.
        await Task.WhenAny(Task.WhenAll(json, openAiRest, anthropicRest, denied), Task.Delay(TimeSpan.FromMilliseconds(500)));
        Assert.False(json.IsCompleted, "the JSON response completed before its record was stored");
        Assert.False(openAiRest.IsCompleted, "the OpenAI stream completed before its record was stored");
        Assert.False(anthropicRest.IsCompleted, "the Anthropic stream completed before its record was stored");
        Assert.False(denied.IsCompleted, "the refusal completed before its record was stored");
        Assert.Equal(0, g.Gateway.Ledger.Spooled);

        store.OpenGate();
        using var jsonResponse = await json.WaitAsync(Bound);
        Assert.Equal(HttpStatusCode.OK, jsonResponse.StatusCode);
        var bytes = await jsonResponse.Content.ReadAsByteArrayAsync();
        Assert.Equal(jsonResponse.Content.Headers.ContentLength, bytes.Length);
        using (var parsed = JsonDocument.Parse(bytes))
        {
            Assert.True(parsed.RootElement.TryGetProperty("choices", out var _));
        }

        await openAiRest.WaitAsync(Bound);
        Assert.Equal("", await openAiReader.ReadToEndAsync().WaitAsync(Bound));
        await anthropicRest.WaitAsync(Bound);
        Assert.Equal("", await anthropicReader.ReadToEndAsync().WaitAsync(Bound));
        using var deniedResponse = await denied.WaitAsync(Bound);
        Assert.Equal(HttpStatusCode.Unauthorized, deniedResponse.StatusCode);
        using (var error = JsonDocument.Parse(await deniedResponse.Content.ReadAsStringAsync()))
        {
            Assert.Equal("deny.credential_revoked", error.RootElement.GetProperty("error").GetProperty("code").GetString());
        }

        foreach (var response in new[] { jsonResponse, openAi, anthropic, deniedResponse })
        {
            await g.EntryAsync(TestGateway.RequestIdOf(response));
        }
    }

    /// <summary>Reads lines until one starts with <paramref name="prefix"/>, and the blank line that ends its event.</summary>
    private static async Task ReadUntilAsync(StreamReader reader, string prefix)
    {
        while (await reader.ReadLineAsync() is { } line)
        {
            if (line.StartsWith(prefix, StringComparison.Ordinal))
            {
                Assert.Equal("", await reader.ReadLineAsync());
                return;
            }
        }

        Assert.Fail($"the stream ended without a line starting with {prefix}");
    }

    internal static async Task AssertChainVerifiesAsync(ICustosStore store, string dataDirectory)
    {
        using var key = CheckpointKey.LoadPublic(CheckpointKey.PublicPath(dataDirectory));
        var result = await LedgerVerifier.VerifyAsync(store, new VerificationOptions { PublicKeys = [key] });
        Assert.True(result.Ok, string.Join("; ", result.Problems));
        Assert.True(result.Entries > 0);
    }
}
