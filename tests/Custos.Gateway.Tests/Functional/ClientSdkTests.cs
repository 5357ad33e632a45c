using System.ClientModel;
using System.ClientModel.Primitives;
using System.Globalization;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Anthropic;
using Anthropic.Models.Messages;
using OpenAI;
using OpenAI.Chat;
using OpenAI.Embeddings;
using OpenAI.Models;

namespace Custos.Gateway.Tests.Functional;

public sealed class GatewayFixture : IAsyncLifetime
{
    public TestGateway Gateway { get; private set; } = null!;

    public async Task InitializeAsync() => Gateway = await TestGateway.StartAsync();

    public async Task DisposeAsync() => await Gateway.DisposeAsync();
}

/// <summary>The official OpenAI and Anthropic SDKs, through the gateway, streaming and not.</summary>
public sealed class ClientSdkTests(GatewayFixture fixture) : IClassFixture<GatewayFixture>
{
    private TestGateway G => fixture.Gateway;

    private OpenAIClientOptions OpenAIOptions() => new() { Endpoint = G.OpenAIEndpoint, RetryPolicy = new ClientRetryPolicy(0) };

    private AnthropicClient Anthropic(string consumer = "web")
        => new() { ApiKey = G.KeyOf(consumer), BaseUrl = G.BaseUri.ToString(), MaxRetries = 0 };

    [Fact]
    public async Task CompleteChat_OpenAISdk_AnswersAndLedgerHasProviderUsage()
    {
        var client = new ChatClient("gpt-4o-mini", new ApiKeyCredential(G.KeyOf("web")), OpenAIOptions());

        ChatCompletion completion = null!;
        var entry = await G.NextEntryAsync(async () => completion = await client.CompleteChatAsync([new SystemChatMessage("Be brief."), new UserChatMessage("Hello through Custos")]));

        Assert.Contains("Custos demo upstream", completion.Content[0].Text, StringComparison.Ordinal);
        Assert.Equal("allow", entry.GetProperty("decision").GetString());
        Assert.Equal(completion.Usage.InputTokenCount, entry.GetProperty("input_tokens").GetInt64());
        Assert.Equal(completion.Usage.OutputTokenCount, entry.GetProperty("output_tokens").GetInt64());
        Assert.False(entry.GetProperty("tokens_estimated").GetBoolean());
        Assert.Equal("web", entry.GetProperty("consumer").GetString());
        Assert.Equal("external", entry.GetProperty("category").GetString());
        Assert.Equal("cred-web", entry.GetProperty("credential_id").GetString());
        Assert.Equal(200, entry.GetProperty("upstream_status").GetInt32());
        Assert.Equal("completed", entry.GetProperty("outcome").GetString());
        Assert.Equal(G.Gateway.Policy.Current.Hash, entry.GetProperty("policy_hash").GetString());
        var expectedCost = ((completion.Usage.InputTokenCount * 1m) + (completion.Usage.OutputTokenCount * 2m)) / 1_000_000m;
        Assert.Equal(expectedCost, decimal.Parse(entry.GetProperty("cost").GetString()!, System.Globalization.CultureInfo.InvariantCulture));
    }

    [Fact]
    public async Task CompleteChatStreaming_OpenAISdk_StreamsAndLedgerMatchesStreamedUsage()
    {
        var client = new ChatClient("gpt-4o-mini", new ApiKeyCredential(G.KeyOf("web")), OpenAIOptions());
        var text = new StringBuilder();
        ChatTokenUsage? usage = null;
        var updates = 0;

        var entry = await G.NextEntryAsync(async () =>
        {
            await foreach (var update in client.CompleteChatStreamingAsync([new UserChatMessage("Stream to me")]))
            {
                updates++;
                foreach (var part in update.ContentUpdate)
                {
                    text.Append(part.Text);
                }

                usage ??= update.Usage;
            }
        });

        Assert.True(updates > 3, "the stream arrived in several chunks");
        Assert.Contains("Custos demo upstream", text.ToString(), StringComparison.Ordinal);
        Assert.NotNull(usage);
        Assert.True(entry.GetProperty("stream").GetBoolean());
        Assert.Equal(usage.InputTokenCount, entry.GetProperty("input_tokens").GetInt64());
        Assert.Equal(usage.OutputTokenCount, entry.GetProperty("output_tokens").GetInt64());
        Assert.Equal("completed", entry.GetProperty("outcome").GetString());
    }

    [Fact]
    public async Task GenerateEmbeddings_OpenAISdk_RecordsInputTokens()
    {
        var client = new EmbeddingClient("text-embedding-3-small", new ApiKeyCredential(G.KeyOf("web")), OpenAIOptions());

        OpenAIEmbeddingCollection embeddings = null!;
        var entry = await G.NextEntryAsync(async () => embeddings = await client.GenerateEmbeddingsAsync(["alpha", "beta gamma"]));

        Assert.Equal(2, embeddings.Count);
        Assert.Equal("/v1/embeddings", entry.GetProperty("endpoint").GetString());
        Assert.Equal(embeddings.Usage.InputTokenCount, entry.GetProperty("input_tokens").GetInt64());
        Assert.Equal(0, entry.GetProperty("output_tokens").GetInt64());
    }

    [Fact]
    public async Task GenerateEmbeddings_OpenAISdk_ABatchLargerThanTheHeldTail_ArrivesWhole()
    {
        // Eight vectors of 4,096 floats: about 300 KB of JSON with a Content-Length, far more than the 64 KB the gateway
        // holds back until the record is durable. Those held bytes once waited in Kestrel's buffer until the connection
        // closed, and the SDK with them.
        var client = new EmbeddingClient("text-embedding-3-small", new ApiKeyCredential(G.KeyOf("web")), OpenAIOptions());
        string[] inputs = ["one", "two", "three", "four", "five", "six", "seven", "eight"];
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));

        OpenAIEmbeddingCollection embeddings = null!;
        var entry = await G.NextEntryAsync(async () => embeddings = await client.GenerateEmbeddingsAsync(
            inputs, new EmbeddingGenerationOptions { Dimensions = 4096 }, timeout.Token));

        Assert.Equal(inputs.Length, embeddings.Count);
        Assert.All(embeddings, e => Assert.Equal(4096, e.ToFloats().Length));
        Assert.True(entry.GetProperty("response_bytes").GetInt64() > 128 * 1024);
        Assert.Equal("completed", entry.GetProperty("outcome").GetString());
    }

    [Fact]
    public async Task GetModels_OpenAISdk_ListsOnlyEntitledModels()
    {
        var client = new OpenAIModelClient(new ApiKeyCredential(G.KeyOf("agent")), OpenAIOptions());

        OpenAIModelCollection models = await client.GetModelsAsync();

        Assert.Equal(["claude-sonnet", "gpt-4o"], models.Select(m => m.Id).Order());
    }

    [Fact]
    public async Task GetModel_OpenAISdk_FindsAnEntitledModel_AndNotAnother_AndTheLedgerRecordsBoth()
    {
        var client = new OpenAIModelClient(new ApiKeyCredential(G.KeyOf("agent")), OpenAIOptions());

        OpenAIModel model = await client.GetModelAsync("gpt-4o");
        Assert.Equal("gpt-4o", model.Id);
        Assert.Equal("acme/openai", model.OwnedBy);

        // Offered by the tenant, but not to this consumer: the chat's own 404, in OpenAI's words, through the SDK.
        var refused = await Assert.ThrowsAsync<ClientResultException>(() => client.GetModelAsync("gpt-4o-mini"));
        Assert.Equal(404, refused.Status);
        Assert.Contains("The model 'gpt-4o-mini' does not exist or you do not have access to it.", refused.Message, StringComparison.Ordinal);

        var response = refused.GetRawResponse()!;
        var entry = await G.EntryAsync(response.Headers.TryGetValue("x-request-id", out var id) ? id! : throw new InvalidOperationException("no request id"));
        Assert.Equal("/v1/models/gpt-4o-mini", entry.GetProperty("endpoint").GetString());
        Assert.Equal("deny.model_not_found", entry.GetProperty("reasons")[0].GetString());
        Assert.Equal(JsonValueKind.Null, entry.GetProperty("model").ValueKind); // a look-up is no use of a model
    }

    [Fact]
    public async Task ModelsListAndRetrieve_AnthropicSdk_ReadTheEntitledModelsInAnthropicsShape()
    {
        // Anthropic's SDK sends anthropic-version on every call; OpenAI's list shape (object, created, owned_by) has
        // none of the fields it reads.
        var page = await Anthropic("agent").Models.List();

        Assert.Equal(["claude-sonnet", "gpt-4o"], page.Items.Select(m => m.ID).Order());
        Assert.All(page.Items, m => Assert.Equal(m.ID, m.DisplayName));
        Assert.False(page.HasNext());

        var model = await Anthropic("agent").Models.Retrieve("claude-sonnet");
        Assert.Equal("claude-sonnet", model.ID);
        Assert.Equal(DateTimeOffset.UnixEpoch, model.CreatedAt);
    }

    [Fact]
    public async Task MessagesCreate_AnthropicSdk_AnswersAndLedgerHasProviderUsage()
    {
        Message message = null!;
        var entry = await G.NextEntryAsync(async () => message = await Anthropic().Messages.Create(new MessageCreateParams
        {
            Model = "claude-sonnet",
            MaxTokens = 256,
            System = "You are terse.",
            Messages = [new UserMessageParam { Content = "Hello Claude through Custos" }],
        }));

        Assert.True(message.Content[0].TryPickText(out var text));
        Assert.Contains("Custos demo upstream", text.Text, StringComparison.Ordinal);
        Assert.Equal("/v1/messages", entry.GetProperty("endpoint").GetString());
        Assert.Equal("claude-sonnet", entry.GetProperty("model").GetString());
        Assert.Equal("claude-sonnet-4-5", entry.GetProperty("model_served").GetString());
        Assert.Equal(message.Usage.InputTokens, entry.GetProperty("input_tokens").GetInt64());
        Assert.Equal(message.Usage.OutputTokens, entry.GetProperty("output_tokens").GetInt64());
    }

    [Fact]
    public async Task MessagesCreateStreaming_AnthropicSdk_StreamsAndLedgerMatchesStreamedUsage()
    {
        long? input = null, output = null;
        var text = new StringBuilder();
        var parameters = new MessageCreateParams
        {
            Model = "claude-sonnet",
            MaxTokens = 256,
            Messages = [new UserMessageParam { Content = "Stream, Claude" }],
        };

        var entry = await G.NextEntryAsync(async () =>
        {
            await foreach (var streamEvent in Anthropic().Messages.CreateStreaming(parameters))
            {
                if (streamEvent.TryPickStart(out var start))
                {
                    input = start.Message.Usage.InputTokens;
                }
                else if (streamEvent.TryPickContentBlockDelta(out var delta) && delta.Delta.TryPickText(out var chunk))
                {
                    text.Append(chunk.Text);
                }
                else if (streamEvent.TryPickDelta(out var messageDelta))
                {
                    output = messageDelta.Usage.OutputTokens;
                }
            }
        });

        Assert.Contains("Custos demo upstream", text.ToString(), StringComparison.Ordinal);
        Assert.True(entry.GetProperty("stream").GetBoolean());
        Assert.Equal(input, entry.GetProperty("input_tokens").GetInt64());
        Assert.Equal(output, entry.GetProperty("output_tokens").GetInt64());
        Assert.Equal("completed", entry.GetProperty("outcome").GetString());
    }

    [Theory]
    [InlineData("""{"model":"fast","stream":true,"messages":[{"role":"user","content":"count for me"}]}""")]
    [InlineData("""{"model":"fast","stream":true,"stream_options":null,"messages":[{"role":"user","content":"count for me"}]}""")]
    public async Task RawStream_ClientDidNotAskForUsage_GetsNoUsageButLedgerHasIt(string body)
    {
        using var response = await G.Client.SendAsync(G.Post("/v1/chat/completions", body), HttpCompletionOption.ResponseHeadersRead);
        var text = await response.Content.ReadAsStringAsync();

        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        Assert.DoesNotContain("\"usage\"", text, StringComparison.Ordinal);
        Assert.EndsWith("data: [DONE]\n\n", text, StringComparison.Ordinal);
        var upstreamBody = G.Upstream.Received[^1].Body;
        using var sent = JsonDocument.Parse(upstreamBody);
        Assert.Single(System.Text.RegularExpressions.Regex.Matches(upstreamBody, "\"stream_options\""));
        Assert.True(sent.RootElement.GetProperty("stream_options").GetProperty("include_usage").GetBoolean());
        Assert.Equal("gpt-4o-mini", sent.RootElement.GetProperty("model").GetString());

        var entry = await G.EntryAsync(TestGateway.RequestIdOf(response));
        Assert.Equal("fast", entry.GetProperty("model").GetString());
        Assert.Equal("gpt-4o-mini", entry.GetProperty("model_served").GetString());
        Assert.True(entry.GetProperty("input_tokens").GetInt64() > 0);
        Assert.True(entry.GetProperty("output_tokens").GetInt64() > 0);
        Assert.False(entry.GetProperty("tokens_estimated").GetBoolean());
        Assert.Equal(Encoding.UTF8.GetByteCount(text), entry.GetProperty("response_bytes").GetInt64());
    }

    [Fact]
    public async Task RawStream_ClientAskedForUsage_GetsTheUsageChunk()
    {
        const string body = """{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}""";
        using var response = await G.Client.SendAsync(G.Post("/v1/chat/completions", body));
        var text = await response.Content.ReadAsStringAsync();

        Assert.Contains("\"choices\":[],\"usage\":{", text, StringComparison.Ordinal);
        var entry = await G.EntryAsync(TestGateway.RequestIdOf(response));
        Assert.Contains($"\"prompt_tokens\":{entry.GetProperty("input_tokens").GetInt64()},", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Completions_Raw_ForwardsAndMeters()
    {
        using var response = await G.Client.SendAsync(G.Post("/v1/completions", """{"model":"gpt-4o-mini","prompt":"Once upon a time"}"""));

        Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var entry = await G.EntryAsync(TestGateway.RequestIdOf(response));
        Assert.Equal(json.RootElement.GetProperty("usage").GetProperty("prompt_tokens").GetInt64(), entry.GetProperty("input_tokens").GetInt64());
    }

    [Fact]
    public async Task Forwarding_ClientKeyNeverReachesProvider_GatewayKeyDoes()
    {
        using var openai = await G.Client.SendAsync(G.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}"""));
        var openaiSeen = G.Upstream.Received[^1];
        using var anthropic = await G.Client.SendAsync(G.Post("/v1/messages", """{"model":"claude-sonnet","max_tokens":10,"messages":[{"role":"user","content":"x"}]}""", anthropicHeader: true));
        var anthropicSeen = G.Upstream.Received[^1];

        Assert.Equal("Bearer " + TestGateway.OpenAIUpstreamKey, openaiSeen.Headers["Authorization"]);
        Assert.Equal(TestGateway.AnthropicUpstreamKey, anthropicSeen.Headers["x-api-key"]);
        Assert.Equal("2023-06-01", anthropicSeen.Headers["anthropic-version"]);
        Assert.False(anthropicSeen.Headers.ContainsKey("Authorization"));
        foreach (var seen in new[] { openaiSeen, anthropicSeen })
        {
            Assert.DoesNotContain(seen.Headers.Values, v => v.Contains(G.KeyOf("web"), StringComparison.Ordinal));
        }
    }

    [Fact]
    public async Task Forwarding_NamesTheProvidersHost_LeavesTheProviderAccountToTheGateway_AndTellsItNothingOfWhoCalled()
    {
        // A client names the gateway in Host. Passed on, it would be the server name the provider's TLS is asked for,
        // which the provider's certificate does not match: every call to a real provider failed so.
        var request = G.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}""");
        request.Headers.Host = "custos.example.internal:8080";
        request.Headers.Add("OpenAI-Organization", "org-someone-elses");
        request.Headers.Add("OpenAI-Project", "proj_someone_elses");
        request.Headers.Add("X-On-Behalf-Of", "user:alice@acme.example");
        request.Headers.Add("X-Custos-Agent-Run", "run-7");
        request.Headers.Add("X-Custos-Request-Id", "req_chosen_by_the_client");

        using var response = await G.Client.SendAsync(request);

        Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
        var seen = G.Upstream.Received[^1];
        Assert.Equal(G.Upstream.BaseUri.Authority, seen.Headers["Host"]);
        Assert.False(seen.Headers.ContainsKey("OpenAI-Organization"));
        Assert.False(seen.Headers.ContainsKey("OpenAI-Project"));
        Assert.False(seen.Headers.ContainsKey("X-On-Behalf-Of")); // recorded in the ledger, not told to the provider
        Assert.False(seen.Headers.ContainsKey("X-Custos-Agent-Run"));
        Assert.Equal(TestGateway.RequestIdOf(response), seen.Headers["X-Custos-Request-Id"]);
    }

    [Theory]
    [InlineData("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}""", false)]
    [InlineData("/v1/chat/completions", """{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"x"}]}""", false)]
    [InlineData("/v1/messages", """{"model":"claude-sonnet","max_tokens":10,"messages":[{"role":"user","content":"x"}]}""", true)]
    public async Task Responses_SayNothingOfTheProviderAccount(string path, string body, bool anthropic)
    {
        using var direct = new HttpClient();
        using var fromProvider = await direct.PostAsync(new Uri(G.Upstream.BaseUri, path),
            new StringContent(body.Replace("claude-sonnet", "claude-sonnet-4-5", StringComparison.Ordinal), System.Text.Encoding.UTF8, "application/json"));

        using var response = await G.Client.SendAsync(G.Post(path, body, anthropicHeader: anthropic));

        Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
        string[] account = anthropic
            ? ["anthropic-organization-id", "anthropic-ratelimit-requests-limit", "Set-Cookie"]
            : ["openai-organization", "openai-project", "x-ratelimit-remaining-tokens", "Set-Cookie"];
        Assert.All(account, name => Assert.True(fromProvider.Headers.Contains(name), $"the mock provider sends {name}"));
        Assert.All(account, name => Assert.False(response.Headers.Contains(name), $"{name} reached the client"));
        Assert.True(response.Headers.Contains("x-upstream-request-id")); // the provider's request id is kept aside
        if (anthropic)
        {
            // Anthropic's SDKs show the request-id header as the request's id: the gateway's, which the ledger has.
            Assert.Equal(TestGateway.RequestIdOf(response), Assert.Single(response.Headers.GetValues("request-id")));
            Assert.Equal(Assert.Single(fromProvider.Headers.GetValues("request-id")).Length, Assert.Single(response.Headers.GetValues("x-upstream-request-id")).Length);
        }
    }

    [Fact]
    public async Task Embeddings_AskedAsAStream_AreOneJsonAnswer_MeteredAsReported()
    {
        // Embeddings have no streams; OpenAI ignores stream: true and answers JSON. The gateway once read that answer as a
        // stream that never ended: 502 upstream.stream_interrupted, and the provider's usage thrown away for an estimate.
        using var response = await G.Client.SendAsync(G.Post("/v1/embeddings", """{"model":"text-embedding-3-small","input":"alpha beta","stream":true}"""));
        var body = await response.Content.ReadAsStringAsync();
        var entry = await G.EntryAsync(TestGateway.RequestIdOf(response));

        Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
        using var json = JsonDocument.Parse(body);
        Assert.Equal(json.RootElement.GetProperty("usage").GetProperty("prompt_tokens").GetInt64(), entry.GetProperty("input_tokens").GetInt64());
        Assert.Equal("completed", entry.GetProperty("outcome").GetString());
        Assert.False(entry.TryGetProperty("tokens_estimated", out var estimated) && estimated.ValueKind == JsonValueKind.True);
    }

    [Theory]
    [InlineData(null, "127.0.0.1")] // no proxy trusted: anyone could write the header
    [InlineData("127.0.0.1/32", "203.0.113.7")] // the load balancer on loopback: the address it saw
    [InlineData("127.0.0.1/32,203.0.113.0/24", "198.51.100.1")] // and a proxy before it
    [InlineData("10.0.0.0/8", "127.0.0.1")] // the connection is not from a trusted proxy
    public async Task ClientAddress_ComesFromXForwardedFor_OnlyThroughTrustedProxies_NearestUntrustedFirst(string? trusted, string recorded)
    {
        var proxies = trusted?.Split(',').Select(System.Net.IPNetwork.Parse).ToList() ?? [];
        await using var g = await TestGateway.StartAsync(null, options: o => o with { TrustedProxies = proxies });
        var request = g.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}""");
        request.Headers.Add("X-Forwarded-For", "192.0.2.99, 198.51.100.1, 203.0.113.7");

        using var response = await g.Client.SendAsync(request);

        Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(recorded, (await g.EntryAsync(TestGateway.RequestIdOf(response))).GetProperty("client_address").GetString());
    }

    [Fact]
    public async Task Forwarding_SendsTheBodyWhole_WithTheClientsContentHeaders_EvenWhenTheClientStreamedIt()
    {
        const string body = """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"sent in chunks"}]}""";
        var request = G.Post("/v1/chat/completions", body);
        // No length up front: HttpClient sends the body chunked, and asks the gateway to confirm before sending it.
        request.Content = new StreamContent(new NonSeekableStream(Encoding.UTF8.GetBytes(body)));
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json") { CharSet = "utf-8" };
        request.Content.Headers.ContentLanguage.Add("en");
        request.Headers.ExpectContinue = true;

        using var response = await G.Client.SendAsync(request);

        Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
        var seen = G.Upstream.Received[^1];
        Assert.Equal(Encoding.UTF8.GetByteCount(seen.Body).ToString(CultureInfo.InvariantCulture), seen.Headers["Content-Length"]);
        Assert.False(seen.Headers.ContainsKey("Transfer-Encoding"));
        Assert.False(seen.Headers.ContainsKey("Expect"));
        Assert.Equal("application/json; charset=utf-8", seen.Headers["Content-Type"]);
        Assert.Equal("en", seen.Headers["Content-Language"]);
        using var sent = JsonDocument.Parse(seen.Body);
        Assert.Equal("sent in chunks", sent.RootElement.GetProperty("messages")[0].GetProperty("content").GetString());
    }

    /// <summary>A stream without a length, so HttpClient cannot send a Content-Length.</summary>
    private sealed class NonSeekableStream(byte[] bytes) : MemoryStream(bytes)
    {
        public override bool CanSeek => false;
    }

    [Fact]
    public async Task AgentHeadersAndPromptHash_AreRecorded()
    {
        const string messages = """[{"role":"user","content":"plan the trip"}]""";
        var request = G.Post("/v1/chat/completions", $$"""{"model":"gpt-4o","messages":{{messages}}}""", consumer: "agent");
        request.Headers.Add("X-Custos-Agent-Run", "run-42");
        request.Headers.Add("X-On-Behalf-Of", "user:alice@acme.example");

        using var response = await G.Client.SendAsync(request);

        var entry = await G.EntryAsync(TestGateway.RequestIdOf(response));
        Assert.Equal("run-42", entry.GetProperty("agent_run").GetString());
        Assert.Equal("user:alice@acme.example", entry.GetProperty("on_behalf_of").GetString());
        Assert.Equal("agent", entry.GetProperty("category").GetString());
        Assert.Equal(Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(messages))), entry.GetProperty("prompt_sha256").GetString());
        Assert.False(G.Upstream.Received[^1].Headers.ContainsKey("X-Custos-Agent-Run"));
        Assert.DoesNotContain("plan the trip", string.Concat((await G.LedgerAsync()).Select(e => e.GetRawText())), StringComparison.Ordinal);
    }
}
