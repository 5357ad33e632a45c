using System.Globalization;
using System.IO.Compression;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Custos.Policy;
using Custos.Testing;

namespace Custos.Gateway.Tests.Functional;

/// <summary>
/// What the gateway takes from a provider's answer, over a scripted provider on loopback that speaks the providers'
/// wire formats byte for byte: an error event in the middle of a stream is not passed on; a provider free to write as much
/// as it likes is given the ceiling the gateway reserved for.
/// </summary>
public sealed partial class ProviderTrustTests
{
    private const string Organization = "org-Zq81mWcustomer7";

    /// <summary>A gateway whose OpenAI and Anthropic providers are <paramref name="provider"/>.</summary>
    private static Task<TestGateway> StartAsync(ScriptedProvider provider, Func<PolicyDocument, PolicyDocument>? customize = null)
        => TestGateway.StartAsync((_, policy) =>
        {
            policy = policy with
            {
                Tenants = [.. policy.Tenants.Select(t => t with
                {
                    Providers = [.. t.Providers.Select(p => p.Id is "openai" or "anthropic"
                        ? p with { BaseUrl = new Uri(provider.BaseUri + (p.Kind == ProviderKind.OpenAI ? "v1" : "")) }
                        : p)],
                })],
            };
            return customize is null ? policy : customize(policy);
        });

    /// <summary>A chunked 200 of <paramref name="body"/>, as a provider streams it; the provider then closes the connection.</summary>
    private static Reply Streamed(string body)
    {
        var bytes = Encoding.UTF8.GetBytes(body.ReplaceLineEndings("\n"));
        var chunked = new StringBuilder();
        foreach (var piece in bytes.Chunk(61)) // events cut across chunks, as a network may
        {
            chunked.Append(FormattableString.Invariant($"{piece.Length:x}\r\n")).Append(Encoding.Latin1.GetString(piece)).Append("\r\n");
        }

        return new Reply("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            Encoding.Latin1.GetBytes(chunked + "0\r\n\r\n"), Close: false);
    }

    public static TheoryData<bool> Apis => new() { false, true };

    [Theory]
    [MemberData(nameof(Apis))]
    public async Task AnErrorEventMidStream_ReachesTheClientAsTheGatewaysError_WithoutTheProvidersKeyOrAccount(bool anthropic)
    {
        await using var provider = ScriptedProvider.Start();
        await using var g = await StartAsync(provider);
        var key = anthropic ? TestGateway.AnthropicUpstreamKey : TestGateway.OpenAIUpstreamKey;
        provider.Next.Enqueue(Streamed(anthropic
            ? $$$$"""
                event: message_start
                data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":9,"output_tokens":1}}}

                event: content_block_delta
                data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}

                event: error
                data: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded for key {{{{key}}}} of organization {{{{Organization}}}}"}}


                """
            : $$$$"""
                data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}

                data: {"error":{"message":"The server had an error processing key {{{{key}}}} for organization {{{{Organization}}}}.","type":"server_error","param":null,"code":null}}


                """));
        using var request = anthropic
            ? g.Post("/v1/messages", """{"model":"claude-sonnet","max_tokens":50,"stream":true,"messages":[{"role":"user","content":"hi"}]}""", anthropicHeader: true)
            : g.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}""");

        using var response = await g.Client.SendAsync(request);
        var received = await response.Content.ReadAsStringAsync();
        var id = TestGateway.RequestIdOf(response);

        Assert.DoesNotContain(key, received, StringComparison.Ordinal);
        Assert.DoesNotContain(Organization, received, StringComparison.Ordinal);
        Assert.Contains("Hello", received, StringComparison.Ordinal); // what came before the error went on
        var errorEvent = received.Split("\n\n").Single(e => e.Contains("error", StringComparison.Ordinal) && !e.Contains("Hello", StringComparison.Ordinal));
        Assert.Equal(anthropic ? "event: error" : null, anthropic ? errorEvent.Split('\n')[0] : null);
        using var json = JsonDocument.Parse(errorEvent.Split('\n').Single(l => l.StartsWith("data: ", StringComparison.Ordinal))["data: ".Length..]);
        if (anthropic)
        {
            Assert.Equal("error", json.RootElement.GetProperty("type").GetString());
        }

        var error = json.RootElement.GetProperty("error");
        Assert.Equal("upstream.stream_error", error.GetProperty("code").GetString());
        Assert.Equal(id, error.GetProperty("request_id").GetString());
        Assert.False(string.IsNullOrEmpty(error.GetProperty("message").GetString()));
        Assert.False(string.IsNullOrEmpty(error.GetProperty("type").GetString()));

        var entry = await g.EntryAsync(id);
        Assert.Equal(["upstream.stream_error"], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
        Assert.Equal("interrupted", entry.GetProperty("outcome").GetString());
        var logged = Assert.Single(g.Logs.Lines, l => l.Contains(id, StringComparison.Ordinal) && l.Contains("in its stream", StringComparison.Ordinal));
        Assert.DoesNotContain(key, logged, StringComparison.Ordinal); // the operator gets the provider's words, its key redacted
        Assert.Contains(anthropic ? "overloaded_error" : "server_error", logged, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task A200WhoseJsonIsCutShort_IsRecordedMalformed_NotCompleted_AndGoesOnAsItCame(bool chunked)
    {
        await using var provider = ScriptedProvider.Start();
        await using var g = await StartAsync(provider);
        var cut = Encoding.UTF8.GetBytes("""{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Once upon""");
        provider.Next.Enqueue(chunked
            ? new Reply("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
                [.. Encoding.ASCII.GetBytes(FormattableString.Invariant($"{cut.Length:x}\r\n")), .. cut, .. "\r\n0\r\n\r\n"u8], Close: false)
            : new Reply(FormattableString.Invariant($"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {cut.Length}\r\n\r\n"), cut, Close: false));

        using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"""));
        var received = await response.Content.ReadAsByteArrayAsync();

        Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(cut, received);
        var entry = await g.EntryAsync(TestGateway.RequestIdOf(response));
        Assert.Equal("interrupted", entry.GetProperty("outcome").GetString());
        Assert.Equal(["upstream.malformed_response"], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
        Assert.Equal("allow", entry.GetProperty("decision").GetString());
        Assert.True(entry.GetProperty("tokens_estimated").GetBoolean());
    }

    [Fact]
    public async Task AWhole200Json_IsCompleted()
    {
        await using var provider = ScriptedProvider.Start();
        await using var g = await StartAsync(provider);
        provider.Next.Enqueue(Completion(5));

        using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"""));
        await response.Content.ReadAsByteArrayAsync();

        var entry = await g.EntryAsync(TestGateway.RequestIdOf(response));
        Assert.Equal("completed", entry.GetProperty("outcome").GetString());
        Assert.Empty(entry.GetProperty("reasons").EnumerateArray());
    }

    [Fact]
    public async Task AnOpenAIStreamWithoutDone_AfterItsLastChunkAndUsage_IsInterrupted_WithTheReportedUsage()
    {
        await using var provider = ScriptedProvider.Start();
        await using var g = await StartAsync(provider);
        provider.Next.Enqueue(Streamed("""
            data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}

            data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

            data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}


            """));

        using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"""));
        await response.Content.ReadAsStringAsync();

        var entry = await g.EntryAsync(TestGateway.RequestIdOf(response));
        Assert.Equal("interrupted", entry.GetProperty("outcome").GetString()); // OpenAI ends every stream with [DONE]: without it, it was cut
        Assert.Equal(["upstream.stream_interrupted"], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
        Assert.Equal((9, 1), (entry.GetProperty("input_tokens").GetInt64(), entry.GetProperty("output_tokens").GetInt64()));
        Assert.False(entry.GetProperty("tokens_estimated").GetBoolean());
    }

    [Theory]
    [InlineData(false, true, "0.00048", 1000, 800, null)] // (200 × 1 + 800 × 0.1 + 100 × 2) per million
    [InlineData(false, false, "0.0012", 1000, 800, null)] // no cached price: the input price, as before
    [InlineData(true, true, "0.00098", 1400, 800, 400L)] // (200 × 1 + 800 × 0.1 + 400 × 1.25 + 100 × 2) per million
    [InlineData(true, false, "0.0016", 1400, 800, 400L)]
    public async Task CachedInputTokens_ArePricedAtTheModelsCachePrices_AndRecorded(bool anthropic, bool cachePrices, string cost, long input, long cached, long? written)
    {
        await using var provider = ScriptedProvider.Start();
        await using var g = await StartAsync(provider, p => !cachePrices ? p : p with
        {
            Tenants = [.. p.Tenants.Select(t => t with
            {
                Models = [.. t.Models.Select(m => m.Name is "gpt-4o-mini" or "claude-sonnet" ? m with { CachedInputPerMillion = 0.1m, CacheWriteInputPerMillion = 1.25m } : m)],
            })],
        });
        var body = Encoding.UTF8.GetBytes(anthropic
            ? """{"id":"m","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","usage":{"input_tokens":200,"cache_creation_input_tokens":400,"cache_read_input_tokens":800,"output_tokens":100}}"""
            : """{"id":"c","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":100,"total_tokens":1100,"prompt_tokens_details":{"cached_tokens":800}}}""");
        provider.Next.Enqueue(new Reply(FormattableString.Invariant($"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {body.Length}\r\n\r\n"), body, Close: false));

        using var response = await g.Client.SendAsync(anthropic
            ? g.Post("/v1/messages", """{"model":"claude-sonnet","max_tokens":200,"messages":[{"role":"user","content":"hi"}]}""", anthropicHeader: true)
            : g.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"""));
        await response.Content.ReadAsByteArrayAsync();

        var entry = await g.EntryAsync(TestGateway.RequestIdOf(response));
        Assert.Equal("completed", entry.GetProperty("outcome").GetString());
        Assert.Equal((input, 100L), (entry.GetProperty("input_tokens").GetInt64(), entry.GetProperty("output_tokens").GetInt64()));
        Assert.Equal(cached, entry.GetProperty("cached_input_tokens").GetInt64());
        Assert.Equal(written, entry.TryGetProperty("cache_write_input_tokens", out var w) ? w.GetInt64() : null);
        Assert.Equal(decimal.Parse(cost, CultureInfo.InvariantCulture), Cost(entry));
    }

    /// <summary>A chat completion of <paramref name="outputTokens"/> tokens, as OpenAI answers one.</summary>
    private static Reply Completion(long outputTokens)
    {
        var body = Encoding.UTF8.GetBytes(FormattableString.Invariant(
            $$$"""{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Once upon a time"},"finish_reason":"length"}],"usage":{"prompt_tokens":10,"completion_tokens":{{{outputTokens}}},"total_tokens":{{{outputTokens + 10}}}}}"""));
        return new Reply(FormattableString.Invariant($"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {body.Length}\r\n\r\n"), body, Close: false);
    }

    /// <summary>An entry's cost (the ledger writes it as a string, exactly); 0 when it has none.</summary>
    private static decimal Cost(JsonElement entry)
        => entry.GetProperty("cost").ValueKind == JsonValueKind.String ? decimal.Parse(entry.GetProperty("cost").GetString()!, CultureInfo.InvariantCulture) : 0m;

    [GeneratedRegex("\"max_(?:completion_)?tokens\":(\\d+)")]
    private static partial Regex OutputCeiling();

    [Fact]
    public async Task ConcurrentRequestsWithoutACeiling_UnderAHardBudget_SpendNoMoreThanItAndOneRequest()
    {
        // The provider writes 16,000 tokens unless told fewer; 4096 a request were reserved. The explorer's 8 requests at
        // once against a $0.01 budget spent $0.0384; here 8 against $0.05, the requests held at the provider until every
        // one is there or refused, spent 6 × $0.032.
        const decimal budget = 0.05m;
        await using var provider = ScriptedProvider.Start();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        provider.Answer = async (_, body) =>
        {
            await release.Task;
            var ceiling = OutputCeiling().Match(body);
            return Completion(ceiling.Success ? Math.Min(16_000, long.Parse(ceiling.Groups[1].Value, CultureInfo.InvariantCulture)) : 16_000);
        };
        await using var g = await StartAsync(provider, policy => policy with
        {
            Consumers = [.. policy.Consumers.Select(c => c.Id == "web" ? c with { Limits = new LimitsConfig { Budget = new BudgetConfig { Amount = budget } } } : c)],
        });

        var requests = Enumerable.Range(0, 8).Select(async _ =>
        {
            using var request = g.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Tell me a long story."}]}""");
            using var response = await g.Client.SendAsync(request);
            return (int)response.StatusCode;
        }).ToList();
        await Eventually.TrueAsync(() => provider.Received.Count + requests.Count(r => r.IsCompleted) == requests.Count, "every request at the provider or refused");
        release.SetResult();
        var statuses = await Task.WhenAll(requests);

        var entries = (await g.LedgerAsync()).Where(e => e.TryGetProperty("consumer", out var c) && c.GetString() == "web").ToList();
        var spent = entries.Sum(Cost);
        var served = statuses.Count(s => s == 200);
        Assert.True(served >= 2, $"{served} served: {string.Join(", ", statuses)}");
        var oneRequest = (10m + 4096m * 2m) / 1_000_000m; // its reservation: gpt-4o-mini costs 1 an input and 2 an output million
        Assert.True(spent <= budget + oneRequest, $"spent {spent} of a {budget} budget over {served} requests");
        Assert.All(provider.Received, r => Assert.Equal("4096", OutputCeiling().Match(r.Body).Groups[1].Value));
        Assert.All(entries.Where(e => e.GetProperty("status").GetInt32() == 200), e =>
        {
            var ceiling = Assert.Single(e.GetProperty("controls").EnumerateArray(), c => c.GetProperty("control").GetString() == "token_ceiling.output");
            Assert.Equal("modify", ceiling.GetProperty("decision").GetString());
            Assert.StartsWith("injected 4096", ceiling.GetProperty("detail").GetString(), StringComparison.Ordinal);
        });
    }

    [Fact]
    public async Task ARequestUnderNoLimitThatCountsOutput_IsSentWithoutACeiling()
    {
        await using var provider = ScriptedProvider.Start();
        provider.Next.Enqueue(Completion(100));
        await using var g = await StartAsync(provider);

        using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"""));

        Assert.Equal(200, (int)response.StatusCode);
        var (_, body) = Assert.Single(provider.Received);
        Assert.DoesNotContain("max_", body, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(50L, false)]
    [InlineData(51L, true)]
    [InlineData(1_000_000_000_000_000_000L, true)]
    public async Task OutputUsageAboveTheCeilingSent_IsEstimatedFromTheOutput_NotCharged(long reported, bool implausible)
    {
        await using var provider = ScriptedProvider.Start();
        provider.Next.Enqueue(Streamed(FormattableString.Invariant($$$"""
            data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello there, how are you today?"},"finish_reason":null}]}

            data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

            data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":{{{reported}}},"total_tokens":{{{reported}}}}}

            data: [DONE]


            """)));
        await using var g = await StartAsync(provider);

        using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions",
            """{"model":"gpt-4o-mini","max_tokens":50,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"""));
        var received = await response.Content.ReadAsStringAsync();
        var entry = await g.EntryAsync(TestGateway.RequestIdOf(response));

        Assert.Contains("[DONE]", received, StringComparison.Ordinal); // the client's stream as it came, its usage too
        Assert.Equal(12, entry.GetProperty("input_tokens").GetInt64()); // input as reported: the gateway's count bounds nothing
        Assert.Equal(implausible, entry.GetProperty("tokens_estimated").GetBoolean());
        var output = entry.GetProperty("output_tokens").GetInt64();
        Assert.Equal(implausible ? Custos.Metering.TokenCounter.Count("Hello there, how are you today?") : reported, output);
        Assert.Equal((12m + (2m * output)) / 1_000_000m, Cost(entry));
        Assert.Equal(implausible, g.Logs.Lines.Any(l => l.Contains(FormattableString.Invariant($"reported {reported} output tokens"), StringComparison.Ordinal)));
    }

    /// <summary>A chat completion gzipped, as a provider that compresses whenever the request allows it answers.</summary>
    private static Reply Gzipped(Reply plain)
    {
        using var compressed = new MemoryStream();
        using (var gzip = new GZipStream(compressed, CompressionLevel.Fastest, leaveOpen: true))
        {
            gzip.Write(plain.Body);
        }

        var body = compressed.ToArray();
        return new Reply(FormattableString.Invariant($"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\nContent-Length: {body.Length}\r\n\r\n"), body, Close: false);
    }

    [Fact]
    public async Task AProviderThatCompressesWhenAllowed_IsAskedForIdentity_AndItsAnswerMetered()
    {
        // A request without Accept-Encoding accepts any coding (RFC 9110): the gateway removed the client's and sent none.
        await using var provider = ScriptedProvider.Start();
        provider.Answer = (head, _) =>
        {
            var accepts = head.Split("\r\n").FirstOrDefault(l => l.StartsWith("Accept-Encoding:", StringComparison.OrdinalIgnoreCase));
            return Task.FromResult(accepts is not null && accepts.Contains("identity", StringComparison.OrdinalIgnoreCase) && !accepts.Contains("gzip", StringComparison.OrdinalIgnoreCase)
                ? Completion(7)
                : Gzipped(Completion(7)));
        };
        await using var g = await StartAsync(provider);
        using var request = g.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}""");
        request.Headers.AcceptEncoding.ParseAdd("gzip, br");

        using var response = await g.Client.SendAsync(request);
        var entry = await g.EntryAsync(TestGateway.RequestIdOf(response));

        Assert.Equal(200, (int)response.StatusCode);
        Assert.Contains("Once upon a time", await response.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Equal((7, false), (entry.GetProperty("output_tokens").GetInt64(), entry.GetProperty("tokens_estimated").GetBoolean()));
    }

    [Fact]
    public async Task AProviderThatCompressesAnyway_IsA502_NotAnAnswerPassedOnUnmetered()
    {
        await using var provider = ScriptedProvider.Start();
        provider.Next.Enqueue(Gzipped(Completion(7)));
        await using var g = await StartAsync(provider);

        using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"""));
        var body = await response.Content.ReadAsStringAsync();
        var id = TestGateway.RequestIdOf(response);
        var entry = await g.EntryAsync(id);

        Assert.Equal(502, (int)response.StatusCode);
        using var json = JsonDocument.Parse(body);
        Assert.Equal(("upstream.error", id), (json.RootElement.GetProperty("error").GetProperty("code").GetString(), json.RootElement.GetProperty("error").GetProperty("request_id").GetString()));
        Assert.Contains("(gzip)", json.RootElement.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.Equal(["upstream.error"], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
        Assert.Equal(200, entry.GetProperty("upstream_status").GetInt32());
    }

    [Fact]
    public async Task WhereTheClientIs_IsNotForwardedToTheProvider()
    {
        await using var provider = ScriptedProvider.Start();
        provider.Next.Enqueue(Completion(7));
        await using var g = await StartAsync(provider);
        using var request = g.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}""");
        request.Headers.TryAddWithoutValidation("X-Forwarded-For", "10.20.30.40");
        request.Headers.TryAddWithoutValidation("Forwarded", "for=10.20.30.40;proto=https");
        request.Headers.TryAddWithoutValidation("X-Real-IP", "10.20.30.40");

        using var response = await g.Client.SendAsync(request);

        Assert.Equal(200, (int)response.StatusCode);
        var (head, _) = Assert.Single(provider.Received);
        Assert.DoesNotContain("10.20.30.40", head, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("claude-unknown", 404)] // the gateway's own refusal
    [InlineData("claude-sonnet", 502)] // the provider's 500, replaced
    public async Task AGatewayErrorOnTheAnthropicEndpoint_CarriesTheRequestIdWhereAnthropicsSdkReadsIt(string model, int status)
    {
        await using var provider = ScriptedProvider.Start();
        var error = """{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"""u8.ToArray();
        provider.Next.Enqueue(new Reply(FormattableString.Invariant($"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nrequest-id: req_provider\r\nContent-Length: {error.Length}\r\n\r\n"), error, Close: false));
        await using var g = await StartAsync(provider);

        using var response = await g.Client.SendAsync(g.Post("/v1/messages",
            $$"""{"model":"{{model}}","max_tokens":20,"messages":[{"role":"user","content":"hi"}]}""", anthropicHeader: true));

        Assert.Equal(status, (int)response.StatusCode);
        Assert.Equal(TestGateway.RequestIdOf(response), Assert.Single(response.Headers.GetValues("request-id")));
    }

    [Fact]
    public async Task AStreamThatStallsPastTheUpstreamTimeout_IsRecordedAsATimeout_NotAnInterruption()
    {
        await using var provider = ScriptedProvider.Start();
        var first = Encoding.UTF8.GetBytes("""
            data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}


            """.ReplaceLineEndings("\n"));
        provider.Next.Enqueue(new Reply("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
            Encoding.Latin1.GetBytes(FormattableString.Invariant($"{first.Length:x}\r\n") + Encoding.Latin1.GetString(first) + "\r\n"), Close: false)); // and then nothing
        await using var g = await StartAsync(provider); // upstream_timeout_seconds: 2

        using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"""),
            HttpCompletionOption.ResponseHeadersRead);
        var id = TestGateway.RequestIdOf(response);
        try
        {
            await response.Content.ReadAsStringAsync();
        }
        catch (HttpRequestException)
        {
            // The broken stream breaks the client's.
        }

        var entry = await g.EntryAsync(id);
        Assert.Equal(["upstream.timeout"], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
        Assert.Equal("interrupted", entry.GetProperty("outcome").GetString());
    }
}
