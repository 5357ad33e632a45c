using System.Net;
using System.Text.Json;

namespace Custos.Gateway.Tests.Functional;

/// <summary>Provider failures become gateway errors with a code; the ledger records what the client received.</summary>
public sealed class UpstreamFailureTests(GatewayFixture fixture) : IClassFixture<GatewayFixture>
{
    private TestGateway G => fixture.Gateway;

    private static string ChatBody(string model, bool stream = false)
        => $$"""{"model":"{{model}}","stream":{{(stream ? "true" : "false")}},"messages":[{"role":"user","content":"hi"}]}""";

    private async Task<(HttpResponseMessage Response, string Body, JsonElement Entry)> SendAsync(HttpRequestMessage request)
    {
        var response = await G.Client.SendAsync(request);
        var body = await response.Content.ReadAsStringAsync();
        var entry = await G.EntryAsync(TestGateway.RequestIdOf(response));
        return (response, body, entry);
    }

    private static void AssertError(string body, string code)
    {
        using var json = JsonDocument.Parse(body);
        Assert.Equal(code, json.RootElement.GetProperty("error").GetProperty("code").GetString());
    }

    [Fact]
    public async Task Upstream500_Is502WithoutTheProvidersBody()
    {
        var (response, body, entry) = await SendAsync(G.Post("/v1/chat/completions", ChatBody("mock-error-500")));

        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        AssertError(body, "upstream.error");
        Assert.DoesNotContain("SECRET", body, StringComparison.Ordinal);
        Assert.Equal(500, entry.GetProperty("upstream_status").GetInt32());
        Assert.Equal(502, entry.GetProperty("status").GetInt32());
        Assert.Equal("upstream_error", entry.GetProperty("outcome").GetString());
        Assert.Equal("allow", entry.GetProperty("decision").GetString());
    }

    [Fact]
    public async Task Upstream401_Is502AuthFailedAndLeaksNoKeyFragment()
    {
        var (response, body, entry) = await SendAsync(G.Post("/v1/chat/completions", ChatBody("mock-error-401")));

        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        AssertError(body, "upstream.auth_failed");
        Assert.DoesNotContain("sk-", body, StringComparison.Ordinal);
        Assert.Equal(401, entry.GetProperty("upstream_status").GetInt32());
    }

    [Fact]
    public async Task Upstream400_PassesTheMessageOn()
    {
        var (response, body, _) = await SendAsync(G.Post("/v1/chat/completions", ChatBody("mock-error-400")));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        AssertError(body, "upstream.rejected");
        Assert.Contains("max_tokens is too large", body, StringComparison.Ordinal);
        using var json = JsonDocument.Parse(body);
        Assert.Equal("max_tokens", json.RootElement.GetProperty("error").GetProperty("param").GetString()); // the provider's param, passed on
    }

    [Fact]
    public async Task WhatTheProviderRefuses_IsRefusedInItsWords_AndRecordedWithItsStatus()
    {
        // The gateway checks what it needs to enforce policy; the rest of a request's form is the provider's to judge
        // (docs/decisions.md). Anthropic requires max_tokens: its refusal reaches the caller and the ledger.
        var (response, body, entry) = await SendAsync(G.Post("/v1/messages", """{"model":"claude-sonnet","messages":[{"role":"user","content":"hi"}]}""", anthropicHeader: true));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        using var json = JsonDocument.Parse(body);
        Assert.Equal("upstream.rejected", json.RootElement.GetProperty("error").GetProperty("code").GetString());
        Assert.Contains("max_tokens: Field required", json.RootElement.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Equal(400, entry.GetProperty("upstream_status").GetInt32());
        Assert.Equal(400, entry.GetProperty("status").GetInt32());
        Assert.Equal("allow", entry.GetProperty("decision").GetString());
        Assert.Equal("upstream_error", entry.GetProperty("outcome").GetString());
        Assert.Equal(JsonValueKind.Null, json.RootElement.GetProperty("error").GetProperty("param").ValueKind); // Anthropic names no param

        // OpenAI requires at least one message, and names the field.
        (response, body, _) = await SendAsync(G.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[]}"""));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        using var openAi = JsonDocument.Parse(body);
        Assert.Equal("upstream.rejected", openAi.RootElement.GetProperty("error").GetProperty("code").GetString());
        Assert.Contains("Invalid 'messages': empty array.", openAi.RootElement.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Equal("messages", openAi.RootElement.GetProperty("error").GetProperty("param").GetString());
    }

    [Fact]
    public async Task Upstream429_Is429WithRetryAfter()
    {
        var (response, body, entry) = await SendAsync(G.Post("/v1/chat/completions", ChatBody("mock-error-429")));

        Assert.Equal(HttpStatusCode.TooManyRequests, response.StatusCode);
        AssertError(body, "upstream.rate_limited");
        Assert.Equal(TimeSpan.FromSeconds(1), response.Headers.RetryAfter?.Delta);
        Assert.Equal(429, entry.GetProperty("upstream_status").GetInt32());
    }

    [Theory]
    [InlineData("/v1/chat/completions", "mock-overloaded", 503)]
    [InlineData("/v1/messages", "claude-overloaded", 529)]
    public async Task UpstreamOverloaded_Is502_WithTheProvidersRetryAfter(string path, string model, int upstreamStatus)
    {
        // The SDKs retry a 502 and wait as Retry-After says: the provider's delay reaches them, its body does not.
        var body = path == "/v1/messages"
            ? $$"""{"model":"{{model}}","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"""
            : ChatBody(model);
        var (response, text, entry) = await SendAsync(G.Post(path, body, anthropicHeader: path == "/v1/messages"));

        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        AssertError(text, "upstream.error");
        Assert.DoesNotContain("overloaded", text, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(TimeSpan.FromSeconds(2), response.Headers.RetryAfter?.Delta);
        Assert.Equal(upstreamStatus, entry.GetProperty("upstream_status").GetInt32());
    }

    [Theory]
    [InlineData("mock-redirect", 307)]
    [InlineData("mock-no-content", 204)]
    public async Task UpstreamRedirectOrNoContent_Is502_AndTheRedirectIsNotPassedOn(string model, int upstreamStatus)
    {
        // A redirect passed on would send the client, key and all, to wherever the provider pointed, around the gateway;
        // a 204 is no completion. Both went to the client as they came (and a 204 with a length, as a 500 from Kestrel).
        var (response, body, entry) = await SendAsync(G.Post("/v1/chat/completions", ChatBody(model)));

        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        AssertError(body, "upstream.error");
        Assert.Null(response.Headers.Location);
        Assert.DoesNotContain("elsewhere.example", body, StringComparison.Ordinal);
        Assert.Equal(upstreamStatus, entry.GetProperty("upstream_status").GetInt32());
        Assert.Equal(502, entry.GetProperty("status").GetInt32());
        Assert.Equal("upstream_error", entry.GetProperty("outcome").GetString());
    }

    [Fact]
    public async Task UpstreamRefused_Is502Unreachable()
    {
        var (response, body, entry) = await SendAsync(G.Post("/v1/chat/completions", ChatBody("offline-model")));

        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        AssertError(body, "upstream.unreachable");
        Assert.Equal(JsonValueKind.Null, entry.GetProperty("upstream_status").ValueKind);
        Assert.Equal(["upstream.unreachable"], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
    }

    /// <summary>
    /// A provider that takes the whole request and then drops the connection without a byte of answer was reached: it
    /// may have billed the request. The record says its answer was cut off, not that it could not be reached. (The same
    /// happens to <c>mock-cut-stream</c> on a loaded machine, when the reset overtakes the headers.)
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task UpstreamResetAfterTheRequest_Is502Interrupted_NotUnreachable(bool stream)
    {
        var calls = G.Upstream.RequestCount;

        var (response, body, entry) = await SendAsync(G.Post("/v1/chat/completions", ChatBody("mock-reset", stream)));

        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        AssertError(body, "upstream.stream_interrupted");
        Assert.True(G.Upstream.RequestCount > calls, "the request never reached the provider");
        Assert.Equal(["upstream.stream_interrupted"], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
        Assert.Equal("interrupted", entry.GetProperty("outcome").GetString());
        Assert.Equal(JsonValueKind.Null, entry.GetProperty("upstream_status").ValueKind);
    }

    [Fact]
    public async Task UpstreamSilent_Is504Timeout()
    {
        var (response, body, entry) = await SendAsync(G.Post("/v1/chat/completions", ChatBody("mock-slow")));

        Assert.Equal(HttpStatusCode.GatewayTimeout, response.StatusCode);
        AssertError(body, "upstream.timeout");
        Assert.Equal(504, entry.GetProperty("status").GetInt32());
        Assert.True(entry.GetProperty("upstream_ms").GetDouble() >= 1900);
    }

    [Fact]
    public async Task ProviderKeyNotConfigured_Is502WithoutCallingIt()
    {
        var calls = G.Upstream.RequestCount;

        var (response, body, _) = await SendAsync(G.Post("/v1/chat/completions", ChatBody("unconfigured-model")));

        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        AssertError(body, "upstream.not_configured");
        Assert.Equal(calls, G.Upstream.RequestCount);
    }

    /// <summary>
    /// Sends a request whose provider stream breaks. The gateway then aborts the client connection, so that no
    /// client mistakes a cut stream for a whole one; depending on timing the client sees part of the stream or
    /// only the reset. On a loaded machine the provider's reset can also reach the gateway before it read any of the
    /// stream (a reset discards what the socket had not delivered), or even its headers: then nothing went out, and the
    /// answer is the gateway's own 502 with <c>upstream.stream_interrupted</c>.
    /// </summary>
    private async Task<(string Received, JsonElement Entry)> SendCutAsync(HttpRequestMessage request)
    {
        var received = "";
        var entry = await G.NextEntryAsync(async () =>
        {
            try
            {
                using var response = await G.Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
                received = await response.Content.ReadAsStringAsync();
                if (response.StatusCode != HttpStatusCode.OK)
                {
                    Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
                    AssertError(received, "upstream.stream_interrupted");
                }
            }
            catch (HttpRequestException)
            {
                // The reset.
            }
        });
        return (received, entry);
    }

    [Fact]
    public async Task OpenAIStreamCut_ClientNeverSeesAnEnd_LedgerSaysInterrupted()
    {
        var (received, entry) = await SendCutAsync(G.Post("/v1/chat/completions", ChatBody("mock-cut-stream", stream: true)));

        Assert.DoesNotContain("[DONE]", received, StringComparison.Ordinal);
        Assert.Equal("interrupted", entry.GetProperty("outcome").GetString());
        Assert.Equal(["upstream.stream_interrupted"], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
        Assert.Equal(200, entry.GetProperty("upstream_status").GetInt32());
        Assert.True(entry.GetProperty("tokens_estimated").GetBoolean());
        Assert.True(entry.GetProperty("output_tokens").GetInt64() > 0 || !received.Contains("data:", StringComparison.Ordinal));
    }

    [Fact]
    public async Task AnthropicStreamCut_LedgerSaysInterruptedWithReportedInput()
    {
        var (received, entry) = await SendCutAsync(G.Post("/v1/messages",
            """{"model":"claude-cut","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hi"}]}""", anthropicHeader: true));

        Assert.DoesNotContain("message_stop", received, StringComparison.Ordinal);
        Assert.Equal("interrupted", entry.GetProperty("outcome").GetString());
        Assert.True(entry.GetProperty("input_tokens").GetInt64() > 0);
    }

    [Fact]
    public async Task NoUsageReported_LedgerHasTokenizerEstimateMarkedEstimated()
    {
        var (response, _, entry) = await SendAsync(G.Post("/v1/chat/completions", ChatBody("mock-no-usage")));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.True(entry.GetProperty("tokens_estimated").GetBoolean());
        Assert.True(entry.GetProperty("input_tokens").GetInt64() > 0);
        Assert.True(entry.GetProperty("output_tokens").GetInt64() > 0);
        Assert.NotEqual(JsonValueKind.Null, entry.GetProperty("cost").ValueKind);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task StreamWithAnEmojiSplitAcrossChunks_ReachesTheClientWhole_AndItsUsageIsRecorded(bool clientAsksForUsage)
    {
        // Each chunk carries half of the emoji's surrogate pair: valid JSON, but neither half is text on its own.
        var body = clientAsksForUsage
            ? """{"model":"mock-split-emoji","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"""
            : ChatBody("mock-split-emoji", stream: true);

        var (response, received, entry) = await SendAsync(G.Post("/v1/chat/completions", body));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Contains("""{"content":"\ud83d"}""", received, StringComparison.Ordinal);
        Assert.Contains("""{"content":"\ude00"}""", received, StringComparison.Ordinal);
        Assert.EndsWith("data: [DONE]\n\n", received, StringComparison.Ordinal);
        Assert.Equal(clientAsksForUsage, received.Contains("\"usage\":{", StringComparison.Ordinal));
        Assert.Equal("completed", entry.GetProperty("outcome").GetString());
        Assert.False(entry.GetProperty("tokens_estimated").GetBoolean());
        Assert.True(entry.GetProperty("output_tokens").GetInt64() > 0);
    }

    [Fact]
    public async Task StreamSentWithAContentLength_EndsForTheClient()
    {
        // A server that buffers its responses sends the stream whole with a Content-Length. The end of the final event,
        // held back until the record was durable, once stayed in Kestrel's buffer until the client gave up. The client
        // asks for usage, so the gateway passes the stream on as it came, Content-Length and all.
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
        var body = """{"model":"mock-sized-stream","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}""";
        var response = await G.Client.SendAsync(G.Post("/v1/chat/completions", body), timeout.Token);
        var received = await response.Content.ReadAsByteArrayAsync(timeout.Token);
        var entry = await G.EntryAsync(TestGateway.RequestIdOf(response));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(received.Length, response.Content.Headers.ContentLength);
        Assert.EndsWith("data: [DONE]\n\n", System.Text.Encoding.UTF8.GetString(received), StringComparison.Ordinal);
        Assert.Equal("completed", entry.GetProperty("outcome").GetString());
        Assert.Equal(received.Length, entry.GetProperty("response_bytes").GetInt64());
    }

    /// <summary>
    /// A stream that fails before any of it went out is answered with the gateway's error alone. With
    /// <c>mock-ignores-stream</c> the provider ignored "stream": its whole body waited, held, and the error written in its
    /// place went out after it, past the provider's Content-Length: Kestrel threw and answered an empty 500 without the
    /// request id. With <c>mock-cut-first-event</c>, the client did not ask for usage, so the gateway edits the stream and
    /// held the unfinished first event; the forwarder answered 502 before anything went out, and that held part followed
    /// as the body of the 502, without the gateway's error or the request id.
    /// </summary>
    [Theory]
    [InlineData("""{"model":"mock-ignores-stream","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}""", "chat.completion")]
    [InlineData("""{"model":"mock-cut-first-event","stream":true,"messages":[{"role":"user","content":"hi"}]}""", "data:")]
    public async Task StreamThatFailsBeforeAnyOfItWentOut_IsA502WithItsCode_AndNoneOfTheProvidersBytes(string body, string providersBytes)
    {
        var (response, received, entry) = await SendAsync(G.Post("/v1/chat/completions", body));

        Assert.Equal(HttpStatusCode.BadGateway, response.StatusCode);
        AssertError(received, "upstream.stream_interrupted");
        Assert.DoesNotContain(providersBytes, received, StringComparison.Ordinal);
        Assert.Equal(502, entry.GetProperty("status").GetInt32());
        Assert.Equal("interrupted", entry.GetProperty("outcome").GetString());
        if (providersBytes == "chat.completion")
        {
            // The provider generated, and bills, what its JSON says: metered as it reported, not estimated.
            Assert.False(entry.TryGetProperty("tokens_estimated", out var estimated) && estimated.ValueKind == JsonValueKind.True, entry.GetRawText());
            Assert.True(entry.GetProperty("output_tokens").GetInt64() > 0);
        }
    }

    [Fact]
    public async Task ClientCancelsMidRequest_LedgerSaysCancelled()
    {
        await G.Gateway.Ledger.FlushAsync();
        var before = (await G.LedgerAsync()).Count;
        var persisted = G.Gateway.Ledger.Persisted;
        var calls = G.Upstream.RequestCount;
        using var cancel = new CancellationTokenSource();

        // Cancel once the request has really reached the provider (and so passed every gateway stage).
        var send = G.Client.SendAsync(G.Post("/v1/chat/completions", ChatBody("mock-slow")), cancel.Token);
        Assert.True(SpinWait.SpinUntil(() => G.Upstream.RequestCount > calls, TimeSpan.FromSeconds(10)), "the request never reached the provider");
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => send);

        // The gateway notices the disconnect and records the request once it has unwound.
        await G.Gateway.Ledger.WaitForPersistedAsync(persisted + 1).WaitAsync(TimeSpan.FromSeconds(10));
        var entry = Assert.Single((await G.LedgerAsync()).Skip(before));

        Assert.Equal("cancelled", entry.GetProperty("outcome").GetString());
        Assert.Equal(["client.cancelled"], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
        Assert.Equal(499, entry.GetProperty("status").GetInt32());
        Assert.Equal(0, entry.GetProperty("response_bytes").GetInt64()); // the error written for no one was recorded as sent

        // The provider read the prompt and bills it: charged its counted input, estimated (it was recorded at no cost, so a
        // client timing out again and again spent without limit).
        var input = entry.GetProperty("input_tokens").GetInt64();
        Assert.True(input > 0, entry.GetRawText());
        Assert.Equal((0L, true), (entry.GetProperty("output_tokens").GetInt64(), entry.GetProperty("tokens_estimated").GetBoolean()));
        Assert.Equal(input * 1m / 1_000_000m, decimal.Parse(entry.GetProperty("cost").GetString()!, System.Globalization.CultureInfo.InvariantCulture));
    }

    /// <summary>
    /// A client that hangs up mid-body is recorded once, as cancelled. Kestrel left the body's unread bytes in the
    /// connection's input and, once the data plane was done, parsed them as a next request: "Invalid request line", which
    /// was recorded too, as an <c>invalid.http</c> refusal of a request nobody sent. That refusal comes right after the data
    /// plane's record is durable; the test waits a moment past it before it reads the ledger.
    /// </summary>
    [Fact]
    public async Task ClientHangsUpMidBody_IsRecordedOnceAsCancelledNotAsBadJson()
    {
        await G.Gateway.Ledger.FlushAsync();
        var before = (await G.LedgerAsync()).Count;
        var persisted = G.Gateway.Ledger.Persisted;
        var calls = G.Upstream.RequestCount;

        using (var tcp = new System.Net.Sockets.TcpClient())
        {
            await tcp.ConnectAsync(G.BaseUri.Host, G.BaseUri.Port);
            var stream = tcp.GetStream();
            var head = $"POST /v1/chat/completions HTTP/1.1\r\nHost: {G.BaseUri.Authority}\r\nAuthorization: Bearer {G.KeyOf("web")}\r\n" +
                "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"model\":\"gpt-4o-mini\",";
            await stream.WriteAsync(System.Text.Encoding.ASCII.GetBytes(head));
            await stream.FlushAsync();
        }

        await G.Gateway.Ledger.WaitForPersistedAsync(persisted + 1).WaitAsync(TimeSpan.FromSeconds(10));
        await Task.Delay(TimeSpan.FromMilliseconds(300));
        await G.Gateway.Ledger.FlushAsync();
        var entry = Assert.Single((await G.LedgerAsync()).Skip(before));
        Assert.Equal("cancelled", entry.GetProperty("outcome").GetString());
        Assert.Equal(["client.cancelled"], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
        Assert.Equal(calls, G.Upstream.RequestCount);
    }
}
