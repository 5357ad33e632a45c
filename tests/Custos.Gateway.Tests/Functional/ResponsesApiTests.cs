using System.ClientModel;
using System.ClientModel.Primitives;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using Custos.Policy;
using OpenAI.Responses;

#pragma warning disable OPENAI001 // the SDK marks its Responses client experimental

namespace Custos.Gateway.Tests.Functional;

/// <summary>OpenAI's Responses API (<c>POST /v1/responses</c>) through the gateway, with the official OpenAI SDK, governed and metered as chat is.</summary>
public sealed class ResponsesApiTests(GatewayFixture fixture) : IClassFixture<GatewayFixture>
{
    private TestGateway G => fixture.Gateway;

    private static ResponsesClient Client(TestGateway g, string consumer = "web")
        => new(new ApiKeyCredential(g.KeyOf(consumer)), new ResponsesClientOptions { Endpoint = g.OpenAIEndpoint, RetryPolicy = new ClientRetryPolicy(0) });

    private static CreateResponseOptions Options(string model, string text, bool stream = false) => new()
    {
        Model = model,
        Instructions = "Be brief.",
        InputItems = { ResponseItem.CreateUserMessageItem(text) },
        StreamingEnabled = stream,
    };

    private static decimal Cost(JsonElement entry) => decimal.Parse(entry.GetProperty("cost").GetString()!, CultureInfo.InvariantCulture);

    [Fact]
    public async Task CreateResponse_OpenAISdk_AnswersAndLedgerHasEndpointModelTokensAndCost()
    {
        ResponseResult response = null!;
        var entry = await G.NextEntryAsync(async () => response = await Client(G).CreateResponseAsync(Options("fast", "Hello through the Responses API")));

        Assert.Contains("Custos demo upstream", response.GetOutputText(), StringComparison.Ordinal);
        Assert.Equal("POST /v1/responses", G.Upstream.Received[^1].Method + " " + G.Upstream.Received[^1].Path);
        Assert.Equal("/v1/responses", entry.GetProperty("endpoint").GetString());
        Assert.Equal("allow", entry.GetProperty("decision").GetString());
        Assert.Equal("completed", entry.GetProperty("outcome").GetString());
        Assert.Equal("fast", entry.GetProperty("model").GetString());
        Assert.Equal("gpt-4o-mini", entry.GetProperty("model_served").GetString());
        Assert.False(entry.GetProperty("stream").GetBoolean());
        Assert.Equal(response.Usage.InputTokenCount, entry.GetProperty("input_tokens").GetInt64());
        Assert.Equal(response.Usage.OutputTokenCount, entry.GetProperty("output_tokens").GetInt64());
        Assert.False(entry.GetProperty("tokens_estimated").GetBoolean());
        Assert.Equal(((response.Usage.InputTokenCount * 1m) + (response.Usage.OutputTokenCount * 2m)) / 1_000_000m, Cost(entry));
        Assert.Equal(G.Gateway.Policy.Current.Version, entry.GetProperty("policy_version").GetInt64());
    }

    [Fact]
    public async Task CreateResponseStreaming_OpenAISdk_StreamsEventByEvent_AndLedgerMatchesCompletedUsage()
    {
        var text = new StringBuilder();
        var deltas = 0;
        ResponseTokenUsage? usage = null;
        var kinds = new List<string>();

        var entry = await G.NextEntryAsync(async () =>
        {
            await foreach (var update in await Client(G).CreateResponseStreamingAsync(Options("gpt-4o-mini", "Stream to me, please", stream: true)))
            {
                kinds.Add(update.GetType().Name);
                if (update is StreamingResponseOutputTextDeltaUpdate delta)
                {
                    deltas++;
                    text.Append(delta.Delta);
                }
                else if (update is StreamingResponseCompletedUpdate completed)
                {
                    usage = completed.Response.Usage;
                }
            }
        });

        Assert.True(deltas > 3, "the text arrived in several deltas");
        Assert.Contains("Custos demo upstream", text.ToString(), StringComparison.Ordinal);
        Assert.Equal(nameof(StreamingResponseCreatedUpdate), kinds[0]);
        Assert.Equal(nameof(StreamingResponseCompletedUpdate), kinds[^1]);
        Assert.NotNull(usage);
        Assert.Equal("/v1/responses", entry.GetProperty("endpoint").GetString());
        Assert.True(entry.GetProperty("stream").GetBoolean());
        Assert.Equal("completed", entry.GetProperty("outcome").GetString());
        Assert.Equal(usage.InputTokenCount, entry.GetProperty("input_tokens").GetInt64());
        Assert.Equal(usage.OutputTokenCount, entry.GetProperty("output_tokens").GetInt64());
        Assert.False(entry.GetProperty("tokens_estimated").GetBoolean());
        Assert.Equal(((usage.InputTokenCount * 1m) + (usage.OutputTokenCount * 2m)) / 1_000_000m, Cost(entry));
    }

    [Fact]
    public async Task CreateResponse_AnthropicModel_IsRefusedWithItsCode_OnRecord_AndNeverSentToTheProvider()
    {
        var calls = G.Upstream.RequestCount;

        var refused = await Assert.ThrowsAsync<ClientResultException>(() => Client(G).CreateResponseAsync(Options("claude-sonnet", "hi")));

        Assert.Equal(400, refused.Status);
        Assert.Equal(calls, G.Upstream.RequestCount);
        var raw = refused.GetRawResponse()!;
        using var error = JsonDocument.Parse(raw.Content.ToString());
        Assert.Equal("invalid.model_endpoint", error.RootElement.GetProperty("error").GetProperty("code").GetString());
        Assert.Contains("/v1/responses", error.RootElement.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
        var requestId = raw.Headers.TryGetValue("x-request-id", out var id) ? id! : throw new InvalidOperationException("no request id");
        Assert.Equal(requestId, error.RootElement.GetProperty("error").GetProperty("request_id").GetString());
        var entry = await G.EntryAsync(requestId);
        Assert.Equal("/v1/responses", entry.GetProperty("endpoint").GetString());
        Assert.Equal(["invalid.model_endpoint"], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
    }

    [Theory]
    [InlineData("""{"model":"gpt-4o-mini"}""", "invalid.field", "input")]
    [InlineData("""{"model":"gpt-4o-mini","input":42}""", "invalid.field", "input")]
    [InlineData("""{"model":"gpt-4o-mini","input":[{"role":"user","content":7}]}""", "invalid.field", "input[0].content")]
    [InlineData("""{"model":"gpt-4o-mini","input":"hi","instructions":["no"]}""", "invalid.field", "instructions")]
    [InlineData("""{"model":"gpt-4o-mini","input":"hi","max_output_tokens":"many"}""", "invalid.field", "max_output_tokens")]
    [InlineData("""{"input":"hi"}""", "invalid.model_missing", "model")]
    public async Task CreateResponse_InvalidBody_IsRefusedAsChatIs_AndNeverSentToTheProvider(string body, string code, string param)
    {
        var calls = G.Upstream.RequestCount;

        using var response = await G.Client.SendAsync(G.Post("/v1/responses", body));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        using var error = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal(code, error.RootElement.GetProperty("error").GetProperty("code").GetString());
        Assert.Equal(param, error.RootElement.GetProperty("error").GetProperty("param").GetString());
        Assert.Equal(calls, G.Upstream.RequestCount);
        var entry = await G.EntryAsync(TestGateway.RequestIdOf(response));
        Assert.Equal("/v1/responses", entry.GetProperty("endpoint").GetString());
        Assert.Equal([code], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
    }

    [Fact]
    public async Task CreateResponseStreaming_CutBeforeCompleted_IsInterrupted_AndChargedItsEstimate()
    {
        var received = new StringBuilder();
        var entry = await G.NextEntryAsync(async () =>
        {
            try
            {
                using var response = await G.Client.SendAsync(G.Post("/v1/responses", """{"model":"mock-cut-stream","input":"cut me off","stream":true}"""),
                    HttpCompletionOption.ResponseHeadersRead);
                using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
                while (await reader.ReadLineAsync() is { } line)
                {
                    received.AppendLine(line);
                }
            }
            catch (HttpRequestException)
            {
                // The reset, passed on: the client never sees an end.
            }
            catch (IOException)
            {
            }
        });

        Assert.Contains("event: response.output_text.delta", received.ToString(), StringComparison.Ordinal);
        Assert.DoesNotContain("response.completed", received.ToString(), StringComparison.Ordinal);
        Assert.Equal("/v1/responses", entry.GetProperty("endpoint").GetString());
        Assert.Equal("interrupted", entry.GetProperty("outcome").GetString());
        Assert.Equal(["upstream.stream_interrupted"], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
        Assert.True(entry.GetProperty("tokens_estimated").GetBoolean());
        Assert.True(entry.GetProperty("input_tokens").GetInt64() > 0);
        Assert.True(entry.GetProperty("output_tokens").GetInt64() > 0, "the text streamed before the cut is charged");
        Assert.True(Cost(entry) > 0);
    }

    [Fact]
    public async Task CreateResponse_ConsumerOutputCeiling_IsSentAsMaxOutputTokens_AndBoundsTheReservation()
    {
        await using var g = await TestGateway.StartAsync(p => p with
        {
            Consumers = [.. p.Consumers.Select(c => c.Id != "web" ? c : c with { Limits = new LimitsConfig { MaxOutputTokens = 12 } })],
        });

        using var injected = await g.Client.SendAsync(g.Post("/v1/responses", """{"model":"gpt-4o-mini","input":"a long answer please"}"""));
        var sent = g.Upstream.Received[^1].Body;
        using var clamped = await g.Client.SendAsync(g.Post("/v1/responses", """{"model":"gpt-4o-mini","input":"hi","max_output_tokens":4000}"""));
        var sentClamped = g.Upstream.Received[^1].Body;

        Assert.Equal(HttpStatusCode.OK, injected.StatusCode);
        Assert.Contains("\"max_output_tokens\":12", sent, StringComparison.Ordinal);
        Assert.DoesNotContain("max_tokens", sent, StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.OK, clamped.StatusCode);
        Assert.Contains("\"max_output_tokens\":12", sentClamped, StringComparison.Ordinal);
        var entry = await g.EntryAsync(TestGateway.RequestIdOf(clamped));
        Assert.Equal(4000, entry.GetProperty("max_output_tokens").GetInt64());
        Assert.True(entry.GetProperty("output_tokens").GetInt64() <= 12);
    }

    [Fact]
    public async Task CreateResponse_PromptRuleAndBudget_RefuseAsForChat_WithoutCallingTheProvider()
    {
        await using var g = await TestGateway.StartAsync(p => p with
        {
            Services = [.. p.Services.Select(s => s.Id != "support" ? s : s with
            {
                PromptRules = [new PromptRuleConfig { Id = "no-secrets", Detector = PromptDetector.Secrets, Action = PromptAction.Deny }],
            })],
            Consumers = [.. p.Consumers.Select(c => c.Id != "agent" ? c : c with
            {
                Limits = new LimitsConfig { Budget = new BudgetConfig { Amount = 0.000001m, Period = BudgetPeriod.Month } },
            })],
        });
        var calls = g.Upstream.RequestCount;

        // A secret in a content part, in the instructions, in a tool's description: each is what the model reads.
        var inPart = await Assert.ThrowsAsync<ClientResultException>(() => Client(g).CreateResponseAsync(new CreateResponseOptions
        {
            Model = "gpt-4o-mini",
            InputItems = { ResponseItem.CreateUserMessageItem([ResponseContentPart.CreateInputTextPart("use key AKIAIOSFODNN7EXAMPLE")]) },
        }));
        using var inInstructions = await g.Client.SendAsync(g.Post("/v1/responses", """{"model":"gpt-4o-mini","input":"hi","instructions":"key AKIAIOSFODNN7EXAMPLE"}"""));
        using var inTool = await g.Client.SendAsync(g.Post("/v1/responses", """
            {"model":"gpt-4o-mini","input":"hi","tools":[{"type":"function","name":"f","description":"key AKIAIOSFODNN7EXAMPLE","parameters":{}}]}
            """));
        var overBudget = await Assert.ThrowsAsync<ClientResultException>(() => Client(g, "agent").CreateResponseAsync(Options("gpt-4o", "a question")));
        using var overBudgetChat = await g.Client.SendAsync(g.Post("/v1/chat/completions", """{"model":"gpt-4o","messages":[{"role":"user","content":"a question"}]}""", "agent"));

        Assert.Equal(calls, g.Upstream.RequestCount);
        Assert.Equal(400, inPart.Status);
        Assert.Equal(HttpStatusCode.BadRequest, inInstructions.StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, inTool.StatusCode);
        foreach (var requestId in new[] { RequestIdOf(inPart), TestGateway.RequestIdOf(inInstructions), TestGateway.RequestIdOf(inTool) })
        {
            var entry = await g.EntryAsync(requestId);
            Assert.Equal("/v1/responses", entry.GetProperty("endpoint").GetString());
            Assert.Equal(["deny.prompt_restricted"], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
            Assert.DoesNotContain("AKIA", entry.GetRawText(), StringComparison.Ordinal);
        }

        // The budget refuses the Responses request as it refuses the same chat request: same status, reason and control.
        Assert.Equal((int)overBudgetChat.StatusCode, overBudget.Status);
        var budget = await g.EntryAsync(RequestIdOf(overBudget));
        var chatBudget = await g.EntryAsync(TestGateway.RequestIdOf(overBudgetChat));
        Assert.Equal(chatBudget.GetProperty("reasons").GetRawText(), budget.GetProperty("reasons").GetRawText());
        Assert.StartsWith("deny.", budget.GetProperty("reasons")[0].GetString(), StringComparison.Ordinal);
        Assert.Contains(budget.GetProperty("controls").EnumerateArray(),
            c => c.GetProperty("control").GetString() == "budget" && c.GetProperty("decision").GetString() == "deny");
        Assert.Equal(g.Gateway.Policy.Current.Version, budget.GetProperty("policy_version").GetInt64());
    }

    [Theory]
    [InlineData("agent", "gpt-4o-mini")] // not entitled
    [InlineData("globex-user", "gpt-4o-mini")] // another tenant's
    [InlineData("web", "text-embedding-3-small")] // an embedding model
    [InlineData("revoked-user", "gpt-4o-mini")]
    [InlineData("suspended-user", "gpt-4o-mini")]
    [InlineData("expired-user", "gpt-4o-mini")]
    public async Task CreateResponse_RefusedCaller_IsRefusedExactlyAsTheSameChatRequest(string consumer, string model)
    {
        var calls = G.Upstream.RequestCount;

        using var chat = await G.Client.SendAsync(G.Post("/v1/chat/completions", $$"""{"model":"{{model}}","messages":[{"role":"user","content":"hi"}]}""", consumer));
        using var responses = await G.Client.SendAsync(G.Post("/v1/responses", $$"""{"model":"{{model}}","input":"hi"}""", consumer));

        Assert.Equal(calls, G.Upstream.RequestCount);
        Assert.False(chat.IsSuccessStatusCode);
        Assert.Equal(chat.StatusCode, responses.StatusCode);
        var chatEntry = await G.EntryAsync(TestGateway.RequestIdOf(chat));
        var entry = await G.EntryAsync(TestGateway.RequestIdOf(responses));
        Assert.Equal(chatEntry.GetProperty("reasons").GetRawText(), entry.GetProperty("reasons").GetRawText());
        Assert.Equal("/v1/responses", entry.GetProperty("endpoint").GetString());
    }

    [Fact]
    public async Task CreateResponse_RateLimitAndRedaction_ApplyAsForChat()
    {
        await using var g = await TestGateway.StartAsync(p => p with
        {
            Services = [.. p.Services.Select(s => s.Id != "support" ? s : s with
            {
                PromptRules = [new PromptRuleConfig { Id = "cards", Detector = PromptDetector.PaymentCard, Action = PromptAction.Redact }],
            })],
            Consumers = [.. p.Consumers.Select(c => c.Id != "web" ? c : c with { Limits = new LimitsConfig { RequestsPerMinute = 1 } })],
        });

        using var first = await g.Client.SendAsync(g.Post("/v1/responses", """
            {"model":"gpt-4o-mini","input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"refund card 4111 1111 1111 1111 please"}]}]}
            """));
        var sent = g.Upstream.Received[^1].Body;
        using var second = await g.Client.SendAsync(g.Post("/v1/responses", """{"model":"gpt-4o-mini","input":"again"}"""));

        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        Assert.Contains("refund card [REDACTED:cards] please", sent, StringComparison.Ordinal);
        Assert.DoesNotContain("4111", sent, StringComparison.Ordinal);
        Assert.Equal("1", Assert.Single(first.Headers.GetValues("x-ratelimit-limit-requests")));
        Assert.Equal(HttpStatusCode.TooManyRequests, second.StatusCode);
        Assert.NotNull(second.Headers.RetryAfter);
        var entry = await g.EntryAsync(TestGateway.RequestIdOf(second));
        Assert.Equal(["throttle.rate_limit"], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
        Assert.Equal("/v1/responses", entry.GetProperty("endpoint").GetString());
    }

    [Fact]
    public async Task CreateResponseStreaming_ProviderFailsMidStream_TheSdkReadsTheGatewaysErrorEvent_AndNothingOfTheProviders()
    {
        const string stream = """
            event: response.created
            data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","created_at":1,"status":"in_progress","model":"gpt-4o-mini","output":[],"usage":null}}

            event: response.output_text.delta
            data: {"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Half an answer","logprobs":[]}

            event: response.failed
            data: {"type":"response.failed","sequence_number":2,"response":{"id":"resp_1","object":"response","created_at":1,"status":"failed","error":{"code":"server_error","message":"account org-SECRET failed"},"model":"gpt-4o-mini","output":[],"usage":{"input_tokens":9,"output_tokens":3,"total_tokens":12}}}


            """;
        await using var provider = ScriptedProvider.Start();
        var body = Encoding.UTF8.GetBytes(stream.ReplaceLineEndings("\n"));
        provider.Next.Enqueue(new Reply(
            $"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {body.Length}\r\n\r\n", body, Close: true));
        await using var g = await TestGateway.StartAsync((_, policy) => policy with
        {
            Tenants = [.. policy.Tenants.Select(t => t with
            {
                Providers = [.. t.Providers.Select(p => p.Id is "openai" ? p with { BaseUrl = new Uri(provider.BaseUri + "v1") } : p)],
            })],
        });
        var updates = new List<StreamingResponseUpdate>();

        var entry = await g.NextEntryAsync(async () =>
        {
            try
            {
                await foreach (var update in await Client(g).CreateResponseStreamingAsync(Options("gpt-4o-mini", "hi", stream: true)))
                {
                    updates.Add(update);
                }
            }
            catch (ClientResultException)
            {
                // An SDK may also raise the error event.
            }
        });

        Assert.Equal("POST /v1/responses", provider.Received.Single().Head.Split(" HTTP")[0]);
        var error = Assert.IsType<StreamingResponseErrorUpdate>(updates[^1]);
        Assert.Equal("upstream.stream_error", error.Code);
        Assert.Equal(2, error.SequenceNumber);
        Assert.DoesNotContain("SECRET", error.Message, StringComparison.Ordinal);
        Assert.Equal("interrupted", entry.GetProperty("outcome").GetString());
        Assert.Equal(["upstream.stream_error"], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
        Assert.Equal(9, entry.GetProperty("input_tokens").GetInt64());
        Assert.Equal(3, entry.GetProperty("output_tokens").GetInt64());
        Assert.Contains(g.Logs.Lines, l => l.Contains("SECRET", StringComparison.Ordinal)); // the operator's log has it
    }

    [Fact]
    public async Task CreateResponse_OtherTenantsModel_IsNotFound()
    {
        var refused = await Assert.ThrowsAsync<ClientResultException>(() => Client(G).CreateResponseAsync(Options("globex-only", "hi")));

        Assert.Equal(404, refused.Status);
        var entry = await G.EntryAsync(RequestIdOf(refused));
        Assert.Equal(["deny.model_not_found"], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
    }

    private static string RequestIdOf(ClientResultException e)
        => e.GetRawResponse()!.Headers.TryGetValue("x-request-id", out var id) ? id! : throw new InvalidOperationException("no request id");
}
