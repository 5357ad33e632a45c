using System.ClientModel;
using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using Anthropic;
using Anthropic.Models.Messages;
using Custos.Gateway.Demo;
using Custos.Metering;
using OpenAI;
using OpenAI.Chat;
using OpenAI.Embeddings;
using OpenAI.Models;

namespace Custos.Gateway.Tests.Demo;

public sealed class DemoUpstreamTests
{
    private const string DemoPrefix = "[Custos demo upstream — not a real model] You said: ";

    // ---- OpenAI SDK ----

    [Fact]
    public async Task CompleteChat_OpenAiSdk_ReturnsDemoTextAndConsistentUsage()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        var client = OpenAiChat(upstream, "gpt-4o-mini");

        ChatCompletion completion = await client.CompleteChatAsync(
            new SystemChatMessage("Be brief."),
            new UserChatMessage("Hello there, demo!"));

        var text = Assert.Single(completion.Content).Text;
        Assert.Equal(DemoPrefix + "Hello there, demo!. This reply is deterministic.", text);
        Assert.Equal("gpt-4o-mini", completion.Model);
        Assert.Equal(ChatFinishReason.Stop, completion.FinishReason);
        Assert.StartsWith("chatcmpl-", completion.Id, StringComparison.Ordinal);
        Assert.Equal(TokenCounter.Count(text), completion.Usage.OutputTokenCount);
        Assert.Equal(TokenCounter.Count("Be brief.\nHello there, demo!") + (2 * 4) + 2, completion.Usage.InputTokenCount);
        Assert.Equal(completion.Usage.InputTokenCount + completion.Usage.OutputTokenCount, completion.Usage.TotalTokenCount);
    }

    [Fact]
    public async Task CompleteChat_WithMaxOutputTokens_StopsThereAsAProviderDoes()
    {
        // A provider stops at max_tokens (finish_reason length): the demo wrote its whole reply and reported more output
        // than the request allowed, which the gateway now sets aside as impossible usage.
        await using var upstream = await DemoUpstream.StartAsync();
        var client = OpenAiChat(upstream, "gpt-4o-mini");

        ChatCompletion completion = await client.CompleteChatAsync([new UserChatMessage("Hello there, demo!")], new ChatCompletionOptions { MaxOutputTokenCount = 5 });

        var text = Assert.Single(completion.Content).Text;
        Assert.Equal(ChatFinishReason.Length, completion.FinishReason);
        Assert.InRange(completion.Usage.OutputTokenCount, 1, 5);
        Assert.Equal(TokenCounter.Count(text), completion.Usage.OutputTokenCount);
        Assert.StartsWith(text, DemoPrefix, StringComparison.Ordinal);
    }

    [Fact]
    public async Task CompleteChatStreaming_OpenAiSdk_StreamsSameTextAndUsageAsNonStreaming()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        var client = OpenAiChat(upstream, "gpt-4o-mini");
        ChatMessage[] messages = [new UserChatMessage("Stream me something, please")];
        ChatCompletion whole = await client.CompleteChatAsync(messages);

        var text = new StringBuilder();
        var contentUpdates = 0;
        ChatTokenUsage? usage = null;
        ChatFinishReason? finish = null;
        await foreach (var update in client.CompleteChatStreamingAsync(messages))
        {
            foreach (var part in update.ContentUpdate)
            {
                text.Append(part.Text);
                contentUpdates++;
            }

            usage ??= update.Usage;
            finish ??= update.FinishReason;
        }

        Assert.Equal(whole.Content[0].Text, text.ToString());
        Assert.True(contentUpdates > 3, $"expected several content chunks, got {contentUpdates}");
        Assert.Equal(ChatFinishReason.Stop, finish);
        Assert.NotNull(usage);
        Assert.Equal(whole.Usage.InputTokenCount, usage.InputTokenCount);
        Assert.Equal(whole.Usage.OutputTokenCount, usage.OutputTokenCount);
        Assert.Equal(whole.Usage.TotalTokenCount, usage.TotalTokenCount);

        // The SDK asks for usage itself; the demo saw it.
        var streamed = upstream.Received[^1];
        using var body = JsonDocument.Parse(streamed.Body);
        Assert.True(body.RootElement.GetProperty("stream").GetBoolean());
        Assert.True(body.RootElement.GetProperty("stream_options").GetProperty("include_usage").GetBoolean());
    }

    [Fact]
    public async Task GenerateEmbeddings_OpenAiSdk_DecodesDeterministicBase64Vectors()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        var client = new EmbeddingClient("text-embedding-3-small", new ApiKeyCredential("x"), OpenAiOptions(upstream));

        OpenAIEmbeddingCollection first = await client.GenerateEmbeddingsAsync(["alpha", "beta"]);
        OpenAIEmbeddingCollection second = await client.GenerateEmbeddingsAsync(["alpha"]);

        Assert.Equal(2, first.Count);
        Assert.Equal(0, first[0].Index);
        Assert.Equal(1, first[1].Index);
        var alpha = first[0].ToFloats().ToArray();
        Assert.Equal(8, alpha.Length);
        Assert.Equal(1.0, Math.Sqrt(alpha.Sum(v => (double)v * v)), 3);
        Assert.Equal(alpha, second[0].ToFloats().ToArray());
        Assert.NotEqual(alpha, first[1].ToFloats().ToArray());
        Assert.Equal(TokenCounter.Count("alpha") + TokenCounter.Count("beta"), first.Usage.InputTokenCount);
        Assert.Equal("text-embedding-3-small", first.Model);
        Assert.Contains("\"encoding_format\":\"base64\"", upstream.Received[0].Body, StringComparison.Ordinal);
    }

    [Fact]
    public async Task GetModels_OpenAiSdk_ListsDemoModels()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        var client = new OpenAIModelClient(new ApiKeyCredential("x"), OpenAiOptions(upstream));

        OpenAIModelCollection models = await client.GetModelsAsync();

        Assert.Contains(models, m => m.Id == "gpt-4o-mini" && m.OwnedBy == "custos-demo");
    }

    // ---- Anthropic SDK ----

    [Fact]
    public async Task MessagesCreate_AnthropicSdk_ReturnsDemoTextAndUsage()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        var client = AnthropicClientFor(upstream);

        var message = await client.Messages.Create(AnthropicParams("Hello Claude-shaped demo"));

        Assert.Equal("claude-sonnet-4-5", message.Model.Raw());
        var block = Assert.Single(message.Content);
        Assert.True(block.TryPickText(out var textBlock));
        Assert.Equal(DemoPrefix + "Hello Claude-shaped demo. This reply is deterministic.", textBlock.Text);
        Assert.StartsWith("msg_", message.ID, StringComparison.Ordinal);
        Assert.Equal(StopReason.EndTurn, message.StopReason?.Value());
        Assert.Equal(TokenCounter.Count(textBlock.Text), message.Usage.OutputTokens);
        Assert.Equal(TokenCounter.Count("You are a demo.\nHello Claude-shaped demo") + (2 * 4) + 2, message.Usage.InputTokens);
        Assert.Equal(0, message.Usage.CacheReadInputTokens);
    }

    [Fact]
    public async Task MessagesCreateStreaming_AnthropicSdk_StreamsSameTextAndUsageAsNonStreaming()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        var client = AnthropicClientFor(upstream);
        var parameters = AnthropicParams("Stream from the Anthropic side");
        var whole = await client.Messages.Create(parameters);
        Assert.True(whole.Content[0].TryPickText(out var wholeText));

        var text = new StringBuilder();
        var deltas = 0;
        long? inputTokens = null;
        long? outputTokens = null;
        var stopped = false;
        await foreach (var ev in client.Messages.CreateStreaming(parameters))
        {
            if (ev.TryPickStart(out var start))
            {
                inputTokens = start.Message.Usage.InputTokens;
            }
            else if (ev.TryPickContentBlockDelta(out var delta) && delta.Delta.TryPickText(out var textDelta))
            {
                text.Append(textDelta.Text);
                deltas++;
            }
            else if (ev.TryPickDelta(out var messageDelta))
            {
                outputTokens = messageDelta.Usage.OutputTokens;
            }
            else if (ev.TryPickStop(out _))
            {
                stopped = true;
            }
        }

        Assert.Equal(wholeText.Text, text.ToString());
        Assert.True(deltas > 3, $"expected several text deltas, got {deltas}");
        Assert.Equal(whole.Usage.InputTokens, inputTokens);
        Assert.Equal(whole.Usage.OutputTokens, outputTokens);
        Assert.True(stopped);
    }

    [Fact]
    public async Task CompleteChat_WithTools_CallsThem_ThenAnswersTheirResults_AsAnAgentLoopNeeds()
    {
        // An agent's loop: the model calls its tools (both at once), the agent feeds their results back as tool messages, and
        // the model answers in text. The demo ignored tools and always answered in text.
        await using var upstream = await DemoUpstream.StartAsync();
        var client = OpenAiChat(upstream, "gpt-4o");
        var weather = ChatTool.CreateFunctionTool("get_weather", "The weather in a city",
            BinaryData.FromString("""{"type":"object","properties":{"city":{"type":"string"},"days":{"type":"integer"}},"required":["city"]}"""));
        var time = ChatTool.CreateFunctionTool("get_time", "The time in a city", BinaryData.FromString("""{"type":"object","properties":{"city":{"type":"string"}}}"""));
        var options = new ChatCompletionOptions { Tools = { weather, time } };
        List<ChatMessage> messages = [new UserChatMessage("Paris")];

        ChatCompletion first = await client.CompleteChatAsync(messages, options);

        Assert.Equal(ChatFinishReason.ToolCalls, first.FinishReason);
        Assert.Equal(["get_weather", "get_time"], first.ToolCalls.Select(c => c.FunctionName));
        Assert.Equal("""{"city":"Paris","days":1}""", first.ToolCalls[0].FunctionArguments.ToString());
        Assert.All(first.ToolCalls, c => Assert.StartsWith("call_", c.Id, StringComparison.Ordinal));
        Assert.Equal(TokenCounter.Count("get_weather") + TokenCounter.Count("""{"city":"Paris","days":1}""")
            + TokenCounter.Count("get_time") + TokenCounter.Count("""{"city":"Paris"}"""), first.Usage.OutputTokenCount);
        Assert.True(first.Usage.InputTokenCount > 40, $"the tools' definitions are input: {first.Usage.InputTokenCount}"); // as a provider bills them

        // Streamed, the same calls arrive as deltas: each call's id and name, then its arguments in pieces.
        var arguments = new Dictionary<int, StringBuilder>();
        var names = new Dictionary<int, string>();
        ChatFinishReason? finish = null;
        await foreach (var update in client.CompleteChatStreamingAsync(messages, options))
        {
            foreach (var call in update.ToolCallUpdates)
            {
                if (call.FunctionName is { } name)
                {
                    names[call.Index] = name;
                }

                (arguments.TryGetValue(call.Index, out var text) ? text : arguments[call.Index] = new()).Append(call.FunctionArgumentsUpdate?.ToString());
            }

            finish ??= update.FinishReason;
        }

        Assert.Equal(ChatFinishReason.ToolCalls, finish);
        Assert.Equal(["get_weather", "get_time"], names.OrderBy(p => p.Key).Select(p => p.Value));
        Assert.Equal("""{"city":"Paris","days":1}""", arguments[0].ToString());

        // One call only when parallel calls are off, the named one when tool_choice names it, none with "none".
        options.AllowParallelToolCalls = false;
        Assert.Equal(["get_weather"], (await client.CompleteChatAsync(messages, options)).Value.ToolCalls.Select(c => c.FunctionName));
        options.ToolChoice = ChatToolChoice.CreateFunctionChoice("get_time");
        Assert.Equal(["get_time"], (await client.CompleteChatAsync(messages, options)).Value.ToolCalls.Select(c => c.FunctionName));
        options.ToolChoice = ChatToolChoice.CreateNoneChoice();
        Assert.Equal(ChatFinishReason.Stop, (await client.CompleteChatAsync(messages, options)).Value.FinishReason);

        // The results fed back: the answer is text.
        options.ToolChoice = null;
        messages.Add(new AssistantChatMessage(first));
        messages.Add(new ToolChatMessage(first.ToolCalls[0].Id, "Sunny, 21 °C"));
        messages.Add(new ToolChatMessage(first.ToolCalls[1].Id, "14:05"));
        ChatCompletion answer = await client.CompleteChatAsync(messages, options);
        Assert.Equal(ChatFinishReason.Stop, answer.FinishReason);
        Assert.Empty(answer.ToolCalls);
        Assert.Equal(DemoPrefix + "Paris. This reply is deterministic.", Assert.Single(answer.Content).Text);
    }

    [Fact]
    public async Task MessagesCreate_WithTools_UsesThem_ThenAnswersTheirResults_StreamedAlike()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        var client = AnthropicClientFor(upstream);
        var parameters = AnthropicParams("Paris") with
        {
            Tools =
            [
                new Tool
                {
                    Name = "get_weather",
                    InputSchema = new InputSchema { Properties = new Dictionary<string, JsonElement> { ["city"] = JsonDocument.Parse("""{"type":"string"}""").RootElement } },
                },
            ],
        };

        var message = await client.Messages.Create(parameters);

        Assert.Equal(StopReason.ToolUse, message.StopReason?.Value());
        var block = Assert.Single(message.Content);
        Assert.True(block.TryPickToolUse(out var toolUse));
        Assert.Equal("get_weather", toolUse.Name);
        Assert.StartsWith("toolu_", toolUse.ID, StringComparison.Ordinal);
        Assert.Equal("Paris", toolUse.Input["city"].GetString());
        Assert.Equal(TokenCounter.Count("get_weather") + TokenCounter.Count("""{"city":"Paris"}"""), message.Usage.OutputTokens);

        var json = new StringBuilder();
        long? outputTokens = null;
        await foreach (var ev in client.Messages.CreateStreaming(parameters))
        {
            if (ev.TryPickContentBlockDelta(out var delta) && delta.Delta.TryPickInputJson(out var input))
            {
                json.Append(input.PartialJson);
            }
            else if (ev.TryPickDelta(out var messageDelta))
            {
                outputTokens = messageDelta.Usage.OutputTokens;
                Assert.Equal(StopReason.ToolUse, messageDelta.Delta.StopReason?.Value());
            }
        }

        Assert.Equal("""{"city":"Paris"}""", json.ToString());
        Assert.Equal(message.Usage.OutputTokens, outputTokens);

        // The tool's result fed back: the answer is text. A tool_choice of "any" calls again; "none", never.
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };
        const string Conversation = """
            "model":"claude-sonnet-4-5","max_tokens":256,"tools":[{"name":"get_weather","input_schema":{"type":"object","properties":{"city":{"type":"string"}}}}],
            "messages":[{"role":"user","content":"Paris"},
              {"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}]},
              {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"Sunny"}]}]
            """;
        var (_, answer) = await PostJsonAsync(http, "/v1/messages", "{" + Conversation + "}");
        Assert.Equal("end_turn", answer.GetProperty("stop_reason").GetString());
        Assert.Equal(DemoPrefix + "Sunny. This reply is deterministic.", answer.GetProperty("content")[0].GetProperty("text").GetString());
        var (_, again) = await PostJsonAsync(http, "/v1/messages", "{" + Conversation + ""","tool_choice":{"type":"any"}}""");
        Assert.Equal("tool_use", again.GetProperty("stop_reason").GetString());
        var (_, none) = await PostJsonAsync(http, "/v1/messages", """{"model":"claude-sonnet-4-5","max_tokens":256,"tools":[{"name":"t","input_schema":{"type":"object"}}],"tool_choice":{"type":"none"},"messages":[{"role":"user","content":"hi"}]}""");
        Assert.Equal("end_turn", none.GetProperty("stop_reason").GetString());
    }

    [Fact]
    public async Task StopSequences_EndTheReplyBeforeThem_AsAProviderDoes()
    {
        // A ReAct-style agent stops the model at "Observation:"; the demo ignored stop and stop_sequences.
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };

        var (_, chat) = await PostJsonAsync(http, "/v1/chat/completions",
            """{"model":"gpt-4o","messages":[{"role":"user","content":"Think. Observation: none"}],"stop":["nowhere","Observation:"]}""");
        var (_, single) = await PostJsonAsync(http, "/v1/chat/completions",
            """{"model":"gpt-4o","messages":[{"role":"user","content":"Think"}],"stop":"deterministic"}""");
        var (_, messages) = await PostJsonAsync(http, "/v1/messages",
            """{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":"Think. Observation: none"}],"stop_sequences":["Observation:"]}""");
        var (_, unmatched) = await PostJsonAsync(http, "/v1/messages",
            """{"model":"claude-sonnet-4-5","max_tokens":100,"messages":[{"role":"user","content":"Think"}],"stop_sequences":["Observation:"]}""");

        var choice = chat.GetProperty("choices")[0];
        Assert.Equal(DemoPrefix + "Think. ", choice.GetProperty("message").GetProperty("content").GetString());
        Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());
        Assert.Equal(TokenCounter.Count(DemoPrefix + "Think. "), chat.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal(DemoPrefix + "Think. This reply is ", single.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
        Assert.Equal(DemoPrefix + "Think. ", messages.GetProperty("content")[0].GetProperty("text").GetString());
        Assert.Equal(("stop_sequence", "Observation:"), (messages.GetProperty("stop_reason").GetString(), messages.GetProperty("stop_sequence").GetString()));
        Assert.Equal(("end_turn", JsonValueKind.Null), (unmatched.GetProperty("stop_reason").GetString(), unmatched.GetProperty("stop_sequence").ValueKind));
    }

    // ---- Raw wire format ----

    [Fact]
    public async Task ChatStream_IncludeUsageOn_UsageChunkHasEmptyChoicesAndOtherChunksNullUsage()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };

        var events = await PostSseAsync(http, "/v1/chat/completions", """
            {"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},
             "messages":[{"role":"user","content":"count my usage"}]}
            """);

        Assert.Equal("[DONE]", events[^1].Data);
        var chunks = events.SkipLast(1).Select(e => JsonDocument.Parse(e.Data).RootElement).ToList();
        Assert.All(chunks, c => Assert.Equal("chat.completion.chunk", c.GetProperty("object").GetString()));
        var first = chunks[0].GetProperty("choices")[0];
        Assert.Equal("assistant", first.GetProperty("delta").GetProperty("role").GetString());
        Assert.Equal(string.Empty, first.GetProperty("delta").GetProperty("content").GetString());
        Assert.Equal(JsonValueKind.Null, first.GetProperty("finish_reason").ValueKind);

        var usageChunk = chunks[^1];
        Assert.Equal(0, usageChunk.GetProperty("choices").GetArrayLength());
        var usage = usageChunk.GetProperty("usage");
        Assert.Equal(
            usage.GetProperty("prompt_tokens").GetInt32() + usage.GetProperty("completion_tokens").GetInt32(),
            usage.GetProperty("total_tokens").GetInt32());
        Assert.All(chunks.SkipLast(1), c => Assert.Equal(JsonValueKind.Null, c.GetProperty("usage").ValueKind));

        var finish = chunks[^2].GetProperty("choices")[0];
        Assert.Equal("stop", finish.GetProperty("finish_reason").GetString());
        Assert.Empty(finish.GetProperty("delta").EnumerateObject());
    }

    [Fact]
    public async Task ChatStream_IncludeUsageOff_SendsNoUsageAnywhere()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };

        var events = await PostSseAsync(http, "/v1/chat/completions", """
            {"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"no usage please"}]}
            """);

        Assert.Equal("[DONE]", events[^1].Data);
        Assert.True(events.Count > 5);
        Assert.All(events.SkipLast(1), e =>
        {
            var chunk = JsonDocument.Parse(e.Data).RootElement;
            Assert.False(chunk.TryGetProperty("usage", out _));
            Assert.Equal(1, chunk.GetProperty("choices").GetArrayLength());
        });
    }

    [Fact]
    public async Task Chat_NChoices_ReturnsNChoicesAndMultipliesCompletionTokens()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };

        var (status, body) = await PostJsonAsync(http, "/v1/chat/completions", """
            {"model":"gpt-4o-mini","n":3,"messages":[{"role":"user","content":[{"type":"text","text":"three of them"}]}]}
            """);

        Assert.Equal(HttpStatusCode.OK, status);
        var choices = body.GetProperty("choices");
        Assert.Equal(3, choices.GetArrayLength());
        Assert.Equal(2, choices[2].GetProperty("index").GetInt32());
        var text = choices[0].GetProperty("message").GetProperty("content").GetString()!;
        Assert.Contains("You said: three of them.", text, StringComparison.Ordinal);
        Assert.Equal(JsonValueKind.Null, choices[0].GetProperty("message").GetProperty("refusal").ValueKind);
        Assert.Equal(3 * TokenCounter.Count(text), body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal(0, body.GetProperty("usage").GetProperty("prompt_tokens_details").GetProperty("cached_tokens").GetInt32());
        Assert.Equal(0, body.GetProperty("usage").GetProperty("completion_tokens_details").GetProperty("reasoning_tokens").GetInt32());
        Assert.Equal("chat.completion", body.GetProperty("object").GetString());
        Assert.True(body.TryGetProperty("system_fingerprint", out _));
    }

    [Fact]
    public async Task Completions_NonStreaming_ReturnsTextCompletion()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };

        var (status, body) = await PostJsonAsync(http, "/v1/completions", """{"model":"gpt-3.5-turbo-instruct","prompt":"Once upon a time"}""");

        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("text_completion", body.GetProperty("object").GetString());
        Assert.StartsWith("cmpl-", body.GetProperty("id").GetString(), StringComparison.Ordinal);
        var choice = Assert.Single(body.GetProperty("choices").EnumerateArray());
        var text = choice.GetProperty("text").GetString()!;
        Assert.Equal(DemoPrefix + "Once upon a time. This reply is deterministic.", text);
        Assert.Equal("stop", choice.GetProperty("finish_reason").GetString());
        Assert.Equal(JsonValueKind.Null, choice.GetProperty("logprobs").ValueKind);
        Assert.Equal(TokenCounter.Count("Once upon a time"), body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(TokenCounter.Count(text), body.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
    }

    [Fact]
    public async Task Completions_StreamingWithUsage_MatchesNonStreamingAndEndsWithUsageChunk()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };
        var (_, whole) = await PostJsonAsync(http, "/v1/completions", """{"model":"gpt-3.5-turbo-instruct","prompt":"Stream this legacy prompt"}""");

        var events = await PostSseAsync(http, "/v1/completions", """
            {"model":"gpt-3.5-turbo-instruct","prompt":"Stream this legacy prompt","stream":true,"stream_options":{"include_usage":true}}
            """);

        Assert.Equal("[DONE]", events[^1].Data);
        var chunks = events.SkipLast(1).Select(e => JsonDocument.Parse(e.Data).RootElement).ToList();
        Assert.All(chunks, c => Assert.Equal("text_completion", c.GetProperty("object").GetString()));
        var text = string.Concat(chunks.SkipLast(1).Select(c => c.GetProperty("choices")[0].GetProperty("text").GetString()));
        Assert.Equal(whole.GetProperty("choices")[0].GetProperty("text").GetString(), text);
        Assert.Equal("stop", chunks[^2].GetProperty("choices")[0].GetProperty("finish_reason").GetString());
        Assert.Equal(0, chunks[^1].GetProperty("choices").GetArrayLength());
        Assert.Equal(whole.GetProperty("usage").GetRawText(), chunks[^1].GetProperty("usage").GetRawText());
        Assert.All(chunks.SkipLast(1), c => Assert.Equal(JsonValueKind.Null, c.GetProperty("usage").ValueKind));
    }

    [Fact]
    public async Task Embeddings_FloatFormatWithDimensionsAndTokenArrays_ReturnsFloatVectors()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };

        var (status, body) = await PostJsonAsync(http, "/v1/embeddings", """{"model":"text-embedding-3-small","input":[[1,2,3],[4,5]],"dimensions":4}""");

        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("list", body.GetProperty("object").GetString());
        var data = body.GetProperty("data");
        Assert.Equal(2, data.GetArrayLength());
        Assert.Equal("embedding", data[1].GetProperty("object").GetString());
        Assert.Equal(4, data[1].GetProperty("embedding").GetArrayLength());
        Assert.Equal(5, body.GetProperty("usage").GetProperty("prompt_tokens").GetInt32());
        Assert.Equal(5, body.GetProperty("usage").GetProperty("total_tokens").GetInt32());
    }

    [Fact]
    public async Task Messages_RawStream_SendsAnthropicEventSequence()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };

        var events = await PostSseAsync(http, "/v1/messages", """
            {"model":"claude-haiku-4-5","max_tokens":100,"stream":true,
             "system":[{"type":"text","text":"System as blocks."}],
             "messages":[{"role":"user","content":[{"type":"text","text":"Blocks here"}]}]}
            """);

        var names = events.Select(e => e.Event).ToList();
        Assert.Equal(["message_start", "content_block_start", "ping"], names.Take(3));
        Assert.Equal(["content_block_stop", "message_delta", "message_stop"], names.TakeLast(3));
        Assert.All(names.Skip(3).SkipLast(3), n => Assert.Equal("content_block_delta", n));
        Assert.All(events, e => Assert.Equal(e.Event, JsonDocument.Parse(e.Data).RootElement.GetProperty("type").GetString()));

        var start = JsonDocument.Parse(events[0].Data).RootElement.GetProperty("message");
        Assert.Empty(start.GetProperty("content").EnumerateArray());
        Assert.Equal(1, start.GetProperty("usage").GetProperty("output_tokens").GetInt32());
        Assert.Equal(
            TokenCounter.Count("System as blocks.\nBlocks here") + (2 * 4) + 2,
            start.GetProperty("usage").GetProperty("input_tokens").GetInt32());

        var delta = JsonDocument.Parse(events[^2].Data).RootElement;
        Assert.Equal("end_turn", delta.GetProperty("delta").GetProperty("stop_reason").GetString());
        Assert.Equal(JsonValueKind.Null, delta.GetProperty("delta").GetProperty("stop_sequence").ValueKind);
        Assert.True(delta.GetProperty("usage").GetProperty("output_tokens").GetInt32() > 1);
    }

    [Fact]
    public async Task Responses_RawStream_SendsTheResponsesEventSequence_AndTheSameAnswerAsNonStreaming()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };
        const string request = """{"model":"gpt-4o-mini","instructions":"Be brief.","input":[{"role":"user","content":[{"type":"input_text","text":"Stream it"}]}]""";

        var events = await PostSseAsync(http, "/v1/responses", request + ""","stream":true}""");
        using var whole = await PostAsync(http, "/v1/responses", request + "}");
        var response = JsonDocument.Parse(await whole.Content.ReadAsStringAsync()).RootElement;

        var names = events.Select(e => e.Event).ToList();
        Assert.Equal(["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"], names.Take(4));
        Assert.Equal(["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"], names.TakeLast(4));
        Assert.True(names.Count > 9);
        Assert.All(names.Skip(4).SkipLast(4), n => Assert.Equal("response.output_text.delta", n));
        var data = events.Select(e => JsonDocument.Parse(e.Data).RootElement).ToList();
        Assert.All(events.Zip(data), p => Assert.Equal(p.First.Event, p.Second.GetProperty("type").GetString()));
        Assert.Equal(Enumerable.Range(0, events.Count), data.Select(d => d.GetProperty("sequence_number").GetInt32()));
        Assert.Equal(JsonValueKind.Null, data[0].GetProperty("response").GetProperty("usage").ValueKind);
        Assert.Equal("in_progress", data[0].GetProperty("response").GetProperty("status").GetString());

        var text = string.Concat(data.Where(d => d.GetProperty("type").GetString() == "response.output_text.delta").Select(d => d.GetProperty("delta").GetString()));
        Assert.Equal(DemoPrefix + "Stream it. This reply is deterministic.", text);
        Assert.Equal(text, data[^4].GetProperty("text").GetString());
        var completed = data[^1].GetProperty("response");
        Assert.Equal("completed", completed.GetProperty("status").GetString());
        Assert.Equal(text, completed.GetProperty("output")[0].GetProperty("content")[0].GetProperty("text").GetString());
        var usage = completed.GetProperty("usage");
        Assert.Equal(TokenCounter.Count("Be brief.\nStream it") + (2 * 4) + 2, usage.GetProperty("input_tokens").GetInt32());
        Assert.Equal(TokenCounter.Count(text), usage.GetProperty("output_tokens").GetInt32());
        Assert.Equal(usage.GetProperty("input_tokens").GetInt32() + usage.GetProperty("output_tokens").GetInt32(), usage.GetProperty("total_tokens").GetInt32());

        Assert.Equal("response", response.GetProperty("object").GetString());
        Assert.StartsWith("resp_", response.GetProperty("id").GetString(), StringComparison.Ordinal);
        Assert.Equal(text, response.GetProperty("output")[0].GetProperty("content")[0].GetProperty("text").GetString());
        Assert.Equal(usage.GetRawText(), response.GetProperty("usage").GetRawText());
    }

    [Fact]
    public async Task Responses_MaxOutputTokens_EndsIncomplete_AsAProviderDoes()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };

        var events = await PostSseAsync(http, "/v1/responses", """{"model":"gpt-4o-mini","input":"a long question indeed","max_output_tokens":5,"stream":true}""");

        Assert.Equal("response.incomplete", events[^1].Event);
        var response = JsonDocument.Parse(events[^1].Data).RootElement.GetProperty("response");
        Assert.Equal("incomplete", response.GetProperty("status").GetString());
        Assert.Equal("max_output_tokens", response.GetProperty("incomplete_details").GetProperty("reason").GetString());
        Assert.True(response.GetProperty("usage").GetProperty("output_tokens").GetInt32() <= 5);
    }

    // ---- Errors and behaviour switches ----

    [Theory]
    [InlineData("mock-error-500", 500, "server_error", "sk-upstream-SECRET-should-not-leak")]
    [InlineData("mock-error-401", 401, "invalid_request_error", "Incorrect API key provided: sk-upst***leak")]
    [InlineData("mock-error-400", 400, "invalid_request_error", "max_tokens is too large")]
    [InlineData("mock-error-429", 429, "requests", "Rate limit")]
    public async Task Chat_ErrorModel_ReturnsOpenAiErrorShape(string model, int status, string type, string message)
    {
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };

        using var response = await PostAsync(http, "/v1/chat/completions", $$"""{"model":"{{model}}-x","messages":[{"role":"user","content":"hi"}]}""");
        var body = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;

        Assert.Equal(status, (int)response.StatusCode);
        var error = body.GetProperty("error");
        Assert.Equal(type, error.GetProperty("type").GetString());
        Assert.Contains(message, error.GetProperty("message").GetString(), StringComparison.Ordinal);
        Assert.True(error.TryGetProperty("param", out _));
        Assert.True(error.TryGetProperty("code", out _));
        if (status == 400)
        {
            Assert.Equal("max_tokens", error.GetProperty("param").GetString());
        }

        if (status == 401)
        {
            Assert.Equal("invalid_api_key", error.GetProperty("code").GetString());
        }

        if (status == 429)
        {
            Assert.Equal("1", response.Headers.GetValues("retry-after").Single());
        }
    }

    [Theory]
    [InlineData("""{"model":"gpt-4o-mini"}""", "Missing required parameter: 'messages'.", "messages", "missing_required_parameter")]
    [InlineData("""{"model":"gpt-4o-mini","messages":null}""", "Missing required parameter: 'messages'.", "messages", "missing_required_parameter")]
    [InlineData("""{"model":"gpt-4o-mini","messages":"hi"}""", "Invalid type for 'messages': expected an array of objects, but got a string instead.", "messages", "invalid_type")]
    [InlineData("""{"model":"gpt-4o-mini","messages":[]}""", "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.", "messages", "empty_array")]
    [InlineData("""{"model":"gpt-4o-mini","max_tokens":0,"messages":[{"role":"user","content":"hi"}]}""", "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got 0 instead.", "max_tokens", "integer_below_min_value")]
    [InlineData("""{"model":"gpt-4o-mini","max_completion_tokens":-3,"messages":[{"role":"user","content":"hi"}]}""", "Invalid 'max_completion_tokens': integer below minimum value. Expected a value >= 1, but got -3 instead.", "max_completion_tokens", "integer_below_min_value")]
    [InlineData("""{"model":"text-embedding-3-small","input":[]}""", "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.", null, null, "/v1/embeddings")]
    [InlineData("""{"model":"text-embedding-3-small","input":""}""", "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.", null, null, "/v1/embeddings")]
    public async Task WhatOpenAIRefuses_IsRefusedInItsWords(string request, string message, string? param, string? code, string path = "/v1/chat/completions")
    {
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };

        var (status, body) = await PostJsonAsync(http, path, request);

        Assert.Equal(HttpStatusCode.BadRequest, status);
        var error = body.GetProperty("error");
        Assert.Equal(message, error.GetProperty("message").GetString());
        Assert.Equal("invalid_request_error", error.GetProperty("type").GetString());
        Assert.Equal(param, error.GetProperty("param").GetString());
        Assert.Equal(code, error.GetProperty("code").GetString());
    }

    [Theory]
    [InlineData("""{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}""", "max_tokens: Field required")]
    [InlineData("""{"model":"claude-sonnet-4-5","max_tokens":"10","messages":[{"role":"user","content":"hi"}]}""", "max_tokens: Input should be a valid integer")]
    [InlineData("""{"model":"claude-sonnet-4-5","max_tokens":0,"messages":[{"role":"user","content":"hi"}]}""", "max_tokens: Input should be greater than or equal to 1")]
    [InlineData("""{"model":"claude-sonnet-4-5","max_tokens":10}""", "messages: Field required")]
    [InlineData("""{"model":"claude-sonnet-4-5","max_tokens":10,"messages":"hi"}""", "messages: Input should be a valid list")]
    [InlineData("""{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[]}""", "messages: at least one message is required")]
    public async Task Messages_WhatAnthropicRefuses_IsRefusedInItsWords(string request, string message)
    {
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };

        var (status, body) = await PostJsonAsync(http, "/v1/messages", request);

        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("error", body.GetProperty("type").GetString());
        Assert.Equal("invalid_request_error", body.GetProperty("error").GetProperty("type").GetString());
        Assert.Equal(message, body.GetProperty("error").GetProperty("message").GetString());
    }

    [Theory]
    [InlineData("mock-error-500", 500, "api_error", "sk-upstream-SECRET-should-not-leak")]
    [InlineData("mock-error-401", 401, "authentication_error", "sk-upst***leak")]
    [InlineData("mock-error-400", 400, "invalid_request_error", "max_tokens is too large")]
    [InlineData("mock-error-429", 429, "rate_limit_error", "Rate limit")]
    public async Task Messages_ErrorModel_ReturnsAnthropicErrorShape(string model, int status, string type, string message)
    {
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };

        var (actual, body) = await PostJsonAsync(http, "/v1/messages", $$"""{"model":"{{model}}","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}""");

        Assert.Equal(status, (int)actual);
        Assert.Equal("error", body.GetProperty("type").GetString());
        Assert.Equal(type, body.GetProperty("error").GetProperty("type").GetString());
        Assert.Contains(message, body.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("/v1/chat/completions", "{not json")]
    [InlineData("/v1/chat/completions", """{"messages":[]}""")]
    [InlineData("/v1/embeddings", """{"input":"x"}""")]
    [InlineData("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","cont\ud83dent":"hi"}]}""")]
    public async Task OpenAiEndpoint_BadJsonOrMissingModel_Returns400InOpenAiShape(string path, string json)
    {
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };

        var (status, body) = await PostJsonAsync(http, path, json);

        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("invalid_request_error", body.GetProperty("error").GetProperty("type").GetString());
        Assert.False(string.IsNullOrEmpty(body.GetProperty("error").GetProperty("message").GetString()));
    }

    [Theory]
    [InlineData("{not json")]
    [InlineData("""{"max_tokens":10,"messages":[]}""")]
    [InlineData("""{"model":"claude-sonnet-4-5","max_tokens":10,"messages":[{"role":"user","content":"half an emoji: \ud83d"}]}""")]
    public async Task Messages_BadJsonOrMissingModel_Returns400InAnthropicShape(string json)
    {
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };

        var (status, body) = await PostJsonAsync(http, "/v1/messages", json);

        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Equal("error", body.GetProperty("type").GetString());
        Assert.Equal("invalid_request_error", body.GetProperty("error").GetProperty("type").GetString());
    }

    [Fact]
    public async Task MockSlow_ClientCancels_EndsPromptly()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
        var watch = Stopwatch.StartNew();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() =>
            PostAsync(http, "/v1/chat/completions", """{"model":"mock-slow","messages":[]}""", cts.Token));

        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5), $"took {watch.Elapsed}");
    }

    [Fact]
    public async Task MockSlow_DisposeWhileWaiting_StopsPromptly()
    {
        var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };
        var pending = PostAsync(http, "/v1/chat/completions", """{"model":"mock-slow","messages":[]}""");
        while (upstream.RequestCount == 0)
        {
            await Task.Delay(10);
        }

        var watch = Stopwatch.StartNew();
        await upstream.DisposeAsync();

        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(4), $"took {watch.Elapsed}");
        await Assert.ThrowsAnyAsync<HttpRequestException>(() => pending);
    }

    [Fact]
    public async Task MockCutStream_Chat_EndsWithoutDone()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };

        var (events, failed) = await ReadCutSseAsync(http, "/v1/chat/completions", """
            {"model":"mock-cut-stream","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"cut me"}]}
            """);

        Assert.True(failed, "the connection should be aborted");
        Assert.NotEmpty(events);
        Assert.DoesNotContain(events, e => e.Data == "[DONE]");
        Assert.Contains(events, e => e.Data.Contains("\"content\":\"[Custos", StringComparison.Ordinal));
    }

    [Fact]
    public async Task MockCutStream_Messages_EndsWithoutMessageStop()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };

        var (events, failed) = await ReadCutSseAsync(http, "/v1/messages", """
            {"model":"mock-cut-stream","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"cut me"}]}
            """);

        Assert.True(failed, "the connection should be aborted");
        Assert.Contains(events, e => e.Event == "content_block_delta");
        Assert.DoesNotContain(events, e => e.Event is "message_stop" or "message_delta");
    }

    [Fact]
    public async Task MockCutStream_NonStreaming_SendsHalfABodyThenAborts()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };

        var (events, failed) = await ReadCutSseAsync(http, "/v1/chat/completions", """{"model":"mock-cut-stream","messages":[{"role":"user","content":"cut me"}]}""");

        Assert.True(failed, "the connection should be aborted");
        Assert.Empty(events);
    }

    [Fact]
    public async Task MockNoUsage_AllEndpoints_OmitUsage()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };

        var (_, chat) = await PostJsonAsync(http, "/v1/chat/completions", """{"model":"mock-no-usage","messages":[{"role":"user","content":"x"}]}""");
        var stream = await PostSseAsync(http, "/v1/chat/completions", """
            {"model":"mock-no-usage","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"x"}]}
            """);
        var (_, completion) = await PostJsonAsync(http, "/v1/completions", """{"model":"mock-no-usage","prompt":"x"}""");
        var (_, embeddings) = await PostJsonAsync(http, "/v1/embeddings", """{"model":"mock-no-usage","input":"x"}""");
        var (_, message) = await PostJsonAsync(http, "/v1/messages", """{"model":"mock-no-usage","max_tokens":10,"messages":[{"role":"user","content":"x"}]}""");

        Assert.Contains("You said: x.", chat.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString(), StringComparison.Ordinal);
        Assert.False(chat.TryGetProperty("usage", out _));
        Assert.Equal("[DONE]", stream[^1].Data);
        Assert.DoesNotContain(stream, e => e.Data.Contains("\"usage\":", StringComparison.Ordinal));
        Assert.False(completion.TryGetProperty("usage", out _));
        Assert.False(embeddings.TryGetProperty("usage", out _));
        Assert.Equal("message", message.GetProperty("type").GetString());
        Assert.False(message.TryGetProperty("usage", out _));
    }

    // ---- Recording ----

    [Fact]
    public async Task RequestCountAndReceived_AfterRequests_RecordWhatReachedTheProvider()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };
        Assert.Equal(0, upstream.RequestCount);
        Assert.Empty(upstream.Received);

        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions?trace=1")
        {
            Content = new StringContent("""{"model":"gpt-4o-mini","messages":[]}""", Encoding.UTF8, "application/json"),
        };
        request.Headers.Add("Authorization", "Bearer sk-provider-key");
        request.Headers.Add("X-Custom", ["a", "b"]);
        using (await http.SendAsync(request))
        {
        }

        using (await http.GetAsync(new Uri("/v1/models", UriKind.Relative)))
        {
        }

        Assert.Equal(2, upstream.RequestCount);
        var received = upstream.Received;
        Assert.Equal(2, received.Count);
        var post = received[0];
        Assert.Equal("POST", post.Method);
        Assert.Equal("/v1/chat/completions", post.Path);
        Assert.Equal("?trace=1", post.Query);
        Assert.Equal("Bearer sk-provider-key", post.Headers["authorization"]);
        Assert.Equal("a, b", post.Headers["X-Custom"]);
        Assert.Equal("""{"model":"gpt-4o-mini","messages":[]}""", post.Body);
        Assert.Equal("GET", received[1].Method);
        Assert.Equal("/v1/models", received[1].Path);
        Assert.Equal(string.Empty, received[1].Body);
    }

    [Fact]
    public async Task Received_MoreThan1000Requests_KeepsTheLast1000()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };

        for (var i = 0; i < 1005; i++)
        {
            using var response = await http.GetAsync(new Uri($"/v1/models?i={i}", UriKind.Relative));
        }

        Assert.Equal(1005, upstream.RequestCount);
        Assert.Equal(1000, upstream.Received.Count);
        Assert.Equal("?i=5", upstream.Received[0].Query);
        Assert.Equal("?i=1004", upstream.Received[^1].Query);
    }

    [Fact]
    public async Task UnknownPath_Returns404InOpenAiShape()
    {
        await using var upstream = await DemoUpstream.StartAsync();
        using var http = new HttpClient { BaseAddress = upstream.BaseUri };

        var (status, body) = await PostJsonAsync(http, "/v1/nope", "{}");

        Assert.Equal(HttpStatusCode.NotFound, status);
        Assert.Equal("invalid_request_error", body.GetProperty("error").GetProperty("type").GetString());
        Assert.Equal(1, upstream.RequestCount);
    }

    [Fact]
    public async Task StartAsync_Default_BindsLoopbackEphemeralPort()
    {
        await using var upstream = await DemoUpstream.StartAsync();

        Assert.Equal("127.0.0.1", upstream.BaseUri.Host);
        Assert.NotEqual(0, upstream.BaseUri.Port);
        Assert.Equal(Uri.UriSchemeHttp, upstream.BaseUri.Scheme);
    }

    // ---- Helpers ----

    private static OpenAIClientOptions OpenAiOptions(DemoUpstream upstream) =>
        new() { Endpoint = new Uri(upstream.BaseUri, "/v1") };

    private static ChatClient OpenAiChat(DemoUpstream upstream, string model) =>
        new(model, new ApiKeyCredential("x"), OpenAiOptions(upstream));

    private static AnthropicClient AnthropicClientFor(DemoUpstream upstream) =>
        new() { ApiKey = "x", BaseUrl = upstream.BaseUri.ToString(), MaxRetries = 0 };

    private static MessageCreateParams AnthropicParams(string userText) => new()
    {
        Model = "claude-sonnet-4-5",
        MaxTokens = 256,
        System = "You are a demo.",
        Messages = [new UserMessageParam { Content = userText }],
    };

    private static Task<HttpResponseMessage> PostAsync(HttpClient http, string path, string json, CancellationToken ct = default) =>
        http.PostAsync(new Uri(path, UriKind.Relative), new StringContent(json, Encoding.UTF8, "application/json"), ct);

    private static async Task<(HttpStatusCode Status, JsonElement Body)> PostJsonAsync(HttpClient http, string path, string json)
    {
        using var response = await PostAsync(http, path, json);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        var text = await response.Content.ReadAsStringAsync();
        return (response.StatusCode, JsonDocument.Parse(text).RootElement);
    }

    private static async Task<List<SseEvent>> PostSseAsync(HttpClient http, string path, string json)
    {
        using var response = await PostAsync(http, path, json);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        return ParseSse(await response.Content.ReadAsStringAsync());
    }

    private static async Task<(List<SseEvent> Events, bool Failed)> ReadCutSseAsync(HttpClient http, string path, string json)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, new Uri(path, UriKind.Relative))
        {
            Content = new StringContent(json, Encoding.UTF8, "application/json"),
        };
        using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        var text = new StringBuilder();
        var failed = false;
        try
        {
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync());
            var buffer = new char[256];
            int read;
            while ((read = await reader.ReadAsync(buffer)) > 0)
            {
                text.Append(buffer, 0, read);
            }
        }
        catch (Exception ex) when (ex is IOException or HttpRequestException)
        {
            failed = true;
        }

        return (ParseSse(text.ToString()), failed);
    }

    private static List<SseEvent> ParseSse(string text)
    {
        Assert.DoesNotContain('\r', text);
        var events = new List<SseEvent>();
        foreach (var block in text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries))
        {
            string? name = null;
            string? data = null;
            foreach (var line in block.Split('\n'))
            {
                if (line.StartsWith("event: ", StringComparison.Ordinal))
                {
                    name = line["event: ".Length..];
                }
                else if (line.StartsWith("data: ", StringComparison.Ordinal))
                {
                    data = line["data: ".Length..];
                }
            }

            if (data is not null)
            {
                events.Add(new SseEvent(name, data));
            }
        }

        return events;
    }

    private sealed record SseEvent(string? Event, string Data);
}
