using System.Buffers;
using System.Text;
using System.Text.Json;
using Custos.Metering;
using Custos.Policy;

namespace Custos.Core.Tests;

/// <summary>Usage capture replayed over recorded provider wire traffic (Cassettes/).</summary>
public sealed class ResponseMeterTests
{
    private static byte[] Cassette(string name) => File.ReadAllBytes(Path.Combine(AppContext.BaseDirectory, "Cassettes", name));

    /// <summary>Feeds <paramref name="body"/> in chunks of <paramref name="chunkSize"/> bytes, as a network would.</summary>
    private static (ResponseMeter Meter, byte[] Output) Run(ProviderKind provider, bool stream, bool hide, byte[] body, int chunkSize, bool readsLikeTheLast = true)
    {
        var meter = new ResponseMeter(provider, stream, hide) { ReadsChunksLikeTheLast = readsLikeTheLast };
        var output = new ArrayBufferWriter<byte>();
        for (var offset = 0; offset < body.Length; offset += chunkSize)
        {
            meter.Process(body.AsSpan(offset, Math.Min(chunkSize, body.Length - offset)), output);
        }

        meter.Complete(output);
        return (meter, output.WrittenSpan.ToArray());
    }

    /// <summary>The stream reached the client as it came, whole, and its usage was read.</summary>
    private static void AssertPassedWholeAndMetered(byte[] body, byte[] output, ResponseMeter meter, long input, long outputTokens)
    {
        Assert.Equal(body, output);
        Assert.Equal(input, meter.InputTokens);
        Assert.Equal(outputTokens, meter.OutputTokens);
        Assert.True(meter.StreamCompleted);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(100)]
    [InlineData(100_000)]
    public void Process_OpenAIStreamWithInjectedUsage_ClientSeesExactlyTheStreamItAskedFor(int chunkSize)
    {
        var (meter, output) = Run(ProviderKind.OpenAI, stream: true, hide: true, Cassette("openai-chat-stream-include-usage.sse"), chunkSize);

        Assert.Equal(Encoding.UTF8.GetString(Cassette("openai-chat-stream.sse")), Encoding.UTF8.GetString(output));
        Assert.Equal(9, meter.InputTokens);
        Assert.Equal(4, meter.OutputTokens);
        Assert.True(meter.StreamCompleted);
        Assert.Equal(output.Length, meter.BytesOut);
        Assert.Equal(2, meter.ChunksReadLikeTheLast); // after the role's chunk and "Hello", read whole: " there" and "!"
    }

    [Theory]
    [InlineData(3)]
    [InlineData(4096)]
    public void Process_OpenAIStreamClientAskedForUsage_PassesThroughUnchanged(int chunkSize)
    {
        var body = Cassette("openai-chat-stream-include-usage.sse");

        var (meter, output) = Run(ProviderKind.OpenAI, stream: true, hide: false, body, chunkSize);

        Assert.Equal(body, output);
        Assert.Equal(9, meter.InputTokens);
        Assert.Equal(4, meter.OutputTokens);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(5)]
    [InlineData(4096)]
    public void Process_StreamWithCrLfLineEnds_FindsEveryEvent(int chunkSize)
    {
        // SSE allows CRLF line ends: events then end in "\r\n\r\n", which may be split across reads anywhere.
        var body = Encoding.UTF8.GetBytes(Encoding.UTF8.GetString(Cassette("openai-chat-stream-include-usage.sse")).Replace("\n", "\r\n", StringComparison.Ordinal));

        var (meter, output) = Run(ProviderKind.OpenAI, stream: true, hide: false, body, chunkSize);

        AssertPassedWholeAndMetered(body, output, meter, 9, 4);
    }

    [Theory]
    [InlineData(ProviderKind.Anthropic, """{"usage":{"input_tokens":9223372036854775807,"cache_read_input_tokens":5,"output_tokens":3}}""")]
    [InlineData(ProviderKind.Anthropic, """{"usage":{"input_tokens":1,"cache_creation_input_tokens":9223372036854775807,"cache_read_input_tokens":9223372036854775807,"output_tokens":3}}""")]
    public void Complete_InputCountsTooLargeToAdd_StayTheLargestCount(ProviderKind provider, string body)
    {
        // Input and cached input added up once wrapped around into a negative count: a refund to every budget.
        var (meter, _) = Run(provider, stream: false, hide: false, Encoding.UTF8.GetBytes(body), 100_000);

        Assert.Equal(long.MaxValue, meter.InputTokens);
        Assert.Equal(3, meter.OutputTokens);
    }

    [Theory]
    [InlineData("\"10\"")]
    [InlineData("1.5")]
    [InlineData("-1")]
    [InlineData("null")]
    [InlineData("18446744073709551616")]
    public void Complete_AnOpenAIOutputCountThatIsNoCount_StaysUnknown_NotZero(string count)
    {
        // Read as an embedding's missing count, it once recorded no output at all, as reported, not estimated.
        var body = $$$"""{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there"}}],"usage":{"prompt_tokens":10,"completion_tokens":{{{count}}},"total_tokens":15}}""";
        var (meter, _) = Run(ProviderKind.OpenAI, stream: false, hide: false, Encoding.UTF8.GetBytes(body), 100_000);

        Assert.Equal(10, meter.InputTokens);
        Assert.Null(meter.OutputTokens);
        Assert.True(meter.EstimateOutputTokens() > 0);
    }

    [Fact]
    public void Process_AnAnthropicFinalOutputCountThatIsNoCount_IsUnknown_NotTheStartsPlaceholder()
    {
        var body = Encoding.UTF8.GetBytes(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n" +
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello there\"}}\n\n" +
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":true}}\n\n" +
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
        var (meter, output) = Run(ProviderKind.Anthropic, stream: true, hide: false, body, 100_000);

        Assert.Equal(body, output);
        Assert.Equal(10, meter.InputTokens);
        Assert.Null(meter.OutputTokens);
    }

    [Fact]
    public void Process_AnAnthropicStreamCutBeforeItsFinalCount_IsEstimated_NotMeteredAsTheStartsPlaceholder()
    {
        // message_start says output_tokens 1 before anything is written; a stream cut after fifty deltas is not one token.
        var sse = new StringBuilder("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n");
        for (var i = 0; i < 50; i++)
        {
            sse.Append("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"word \"}}\n\n");
        }

        var (meter, _) = Run(ProviderKind.Anthropic, stream: true, hide: false, Encoding.UTF8.GetBytes(sse.ToString()), 100_000);

        Assert.Equal(10, meter.InputTokens);
        Assert.Null(meter.OutputTokens);
        Assert.InRange(meter.EstimateOutputTokens(), 40, 60);
    }

    [Fact]
    public void EstimateOutputTokens_WithoutUsage_CountsToolCallArgumentsRefusalsAndThinking_NotOnlyText()
    {
        // A provider that sends no usage (a cut stream, a server that ignores stream_options): what it generated is still
        // output, whether text, a tool call's arguments, a refusal or Anthropic's tool input and thinking.
        var stream = new StringBuilder("data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"lookup\",\"arguments\":\"\"}}]}}]}\n\n");
        for (var i = 0; i < 40; i++)
        {
            stream.Append("data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\": \\\"Berlin\\\"} \"}}]}}]}\n\n");
        }

        var (openAIStream, _) = Run(ProviderKind.OpenAI, stream: true, hide: false, Encoding.UTF8.GetBytes(stream.ToString()), 100_000);
        var refusal = """{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":null,"refusal":"I cannot help with that request because it asks for something I may not provide, sorry."}}]}""";
        var (openAIBody, _) = Run(ProviderKind.OpenAI, stream: false, hide: false, Encoding.UTF8.GetBytes(refusal), 100_000);
        var anthropic = new StringBuilder("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":10,\"output_tokens\":1}}}\n\n");
        for (var i = 0; i < 30; i++)
        {
            anthropic.Append("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"q\\\": \\\"weather\\\"} \"}}\n\n");
        }

        var (anthropicStream, _) = Run(ProviderKind.Anthropic, stream: true, hide: false, Encoding.UTF8.GetBytes(anthropic.ToString()), 100_000);

        Assert.Null(openAIStream.OutputTokens);
        Assert.InRange(openAIStream.EstimateOutputTokens(), 100, 400);
        Assert.InRange(openAIBody.EstimateOutputTokens(), 10, 40);
        Assert.InRange(anthropicStream.EstimateOutputTokens(), 60, 300);
    }

    [Fact]
    public void EstimateOutputTokens_AnAnthropicBodyWithoutUsage_CountsItsToolInputAndThinking()
    {
        // Not streamed, a tool_use block's input is an object, not partial_json strings: estimated at 0 tokens, the request
        // was charged no output at all.
        var details = string.Concat(Enumerable.Repeat("weather in Paris tomorrow ", 20));
        var body = "{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":["
            + "{\"type\":\"thinking\",\"thinking\":\"" + details + "\",\"signature\":\"c2ln\"},"
            + "{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{\"city\":\"Paris\",\"details\":\"" + details + "\"}}],"
            + "\"stop_reason\":\"tool_use\",\"stop_sequence\":null}";

        var (meter, output) = Run(ProviderKind.Anthropic, stream: false, hide: false, Encoding.UTF8.GetBytes(body), 100_000);

        Assert.Equal(body, Encoding.UTF8.GetString(output));
        Assert.False(meter.HasUsage);
        Assert.InRange(meter.EstimateOutputTokens(), 2 * TokenCounter.Count(details), (2 * TokenCounter.Count(details)) + 30);
    }

    [Fact]
    public void Complete_AnOpenAIEmbeddingsBody_HasNoOutput()
    {
        var body = """{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1]}],"usage":{"prompt_tokens":4,"total_tokens":4}}""";
        var (meter, _) = Run(ProviderKind.OpenAI, stream: false, hide: false, Encoding.UTF8.GetBytes(body), 100_000);

        Assert.Equal((4L, 0L), (meter.InputTokens!.Value, meter.OutputTokens!.Value));
    }

    [Fact]
    public void Process_OpenAIStreamWithoutUsage_EstimatesFromTheText()
    {
        var (meter, _) = Run(ProviderKind.OpenAI, stream: true, hide: false, Cassette("openai-chat-stream.sse"), 50);

        Assert.False(meter.HasUsage);
        Assert.True(meter.StreamCompleted);
        Assert.Equal(TokenCounter.Count("Hello there!"), meter.EstimateOutputTokens());
    }

    [Fact]
    public void Process_OpenAIStreamWithALoneSurrogateInItsText_PassesThroughAndStillReadsUsage()
    {
        // "\ud83d" alone is valid JSON but no text: the reader cannot unescape it. The stream goes on as it is.
        var body = Encoding.UTF8.GetBytes(Encoding.UTF8.GetString(Cassette("openai-chat-stream-include-usage.sse"))
            .Replace("\"content\":\"Hello\"", "\"content\":\"Hello \\ud83d\"", StringComparison.Ordinal));

        var (meter, output) = Run(ProviderKind.OpenAI, stream: true, hide: false, body, 4096);

        AssertPassedWholeAndMetered(body, output, meter, 9, 4);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(4096)]
    public void Process_ChunksOfTextReadAsTheirText_AreInTheEstimate(int chunkSize)
    {
        var withoutUsage = Encoding.UTF8.GetString(Cassette("openai-chat-stream-include-usage.sse")).Replace("\"usage\":{", "\"x\":{", StringComparison.Ordinal);

        var (estimated, _) = Run(ProviderKind.OpenAI, stream: true, hide: false, Encoding.UTF8.GetBytes(withoutUsage), chunkSize);

        Assert.False(estimated.HasUsage);
        Assert.Equal(2, estimated.ChunksReadLikeTheLast);
        Assert.Equal(TokenCounter.Count(TextOf(Cassette("openai-chat-stream.sse"))), estimated.EstimateOutputTokens());
    }

    /// <summary>
    /// Random OpenAI streams, read with chunks like the last read as their text and with every chunk read whole, must
    /// come out the same: output byte for byte, usage, completion, the estimate from the text. The strings of text include
    /// runs that are not one JSON string (two strings, a number, an unterminated one, white space after), which must not be
    /// taken for one, and the chunks' shape, head and usage change as they go.
    /// </summary>
    [Fact]
    public void Process_RandomStreams_ReadTheSame_WithOrWithoutReadingChunksAsTheirText()
    {
        string[] texts =
        [
            "\"Hello\"", "\" world\"", "\"\"", "\"\\\"quoted\\\"\"", "\"back\\\\slash\"", "\"\\ud83d\"", "\"\\ude00 after\"", "\"\\ud83d\\ude00\"",
            "\"é ü 中文\"", "\"line\\nbreak\"", "\"\\u0041\"", "\"a\",\"content\":\"b\"", "\"a\",\"x\":1,\"y\":\"b\"", "null", "42", "\"a\" ", " \"a\"",
            "\"unterminated", "\"bad \\q escape\"", "\"a\"}},{\"index\":1,\"delta\":{\"content\":\"b\"", "\"usage\\\":null\"",
        ];
        string[] heads = ["{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",", "{\"id\":\"c2\",\"object\":\"chat.completion.chunk\",\"created\":2,\"model\":\"m\","];
        var random = new Random(20261201);
        var taken = 0;
        for (var round = 0; round < 600; round++)
        {
            var sse = new StringBuilder();
            var head = heads[random.Next(heads.Length)];
            var usage = random.Next(4) > 0 ? ",\"usage\":null" : "";
            sse.Append("data: ").Append(head).Append("\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]").Append(usage).Append("}\n\n");
            for (var i = random.Next(12); i > 0; i--)
            {
                if (random.Next(10) == 0)
                {
                    head = heads[random.Next(heads.Length)];
                }

                var text = texts[random.Next(texts.Length)];
                var chunk = random.Next(8) switch
                {
                    0 => "\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":" + text + "}}]},\"finish_reason\":null}]" + usage,
                    1 => "\"usage\":null,\"choices\":[{\"index\":0,\"delta\":{\"content\":" + text + "},\"finish_reason\":null}]",
                    2 => "\"choices\":[{\"index\":0,\"delta\":{\"content\":" + text + "},\"logprobs\":null,\"finish_reason\":null}]" + usage,
                    _ => "\"choices\":[{\"index\":0,\"delta\":{\"content\":" + text + "},\"finish_reason\":null}]" + usage,
                };
                sse.Append("data: ").Append(head).Append(chunk).Append(random.Next(20) == 0 ? ",}" : "}").Append(random.Next(10) == 0 ? "\r\n\r\n" : "\n\n");
            }

            sse.Append("data: ").Append(head).Append("\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]").Append(usage).Append("}\n\n");
            if (random.Next(3) > 0)
            {
                sse.Append("data: ").Append(head).Append("\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":").Append(random.Next(100)).Append(",\"total_tokens\":9}}\n\n");
            }

            sse.Append("data: [DONE]\n\n");
            var body = Encoding.UTF8.GetBytes(sse.ToString());
            var hide = random.Next(2) == 0;
            var chunkSize = random.Next(1, 300);

            var (fast, fastOutput) = Run(ProviderKind.OpenAI, stream: true, hide, body, chunkSize, readsLikeTheLast: true);
            var (whole, wholeOutput) = Run(ProviderKind.OpenAI, stream: true, hide, body, chunkSize, readsLikeTheLast: false);

            Assert.True(wholeOutput.AsSpan().SequenceEqual(fastOutput), $"round {round}:\n{sse}\nwhole:\n{Encoding.UTF8.GetString(wholeOutput)}\nas text:\n{Encoding.UTF8.GetString(fastOutput)}");
            Assert.Equal((whole.InputTokens, whole.OutputTokens, whole.StreamCompleted, whole.BytesOut), (fast.InputTokens, fast.OutputTokens, fast.StreamCompleted, fast.BytesOut));
            Assert.True(whole.EstimateOutputTokens() == fast.EstimateOutputTokens(), $"round {round}: estimate {whole.EstimateOutputTokens()} whole, {fast.EstimateOutputTokens()} as text\n{sse}");
            Assert.Equal(0, whole.ChunksReadLikeTheLast);
            taken += fast.ChunksReadLikeTheLast;
        }

        Assert.True(taken > 400, $"only {taken} chunks were read as their text");
    }

    /// <summary>As <see cref="Process_RandomStreams_ReadTheSame_WithOrWithoutReadingChunksAsTheirText"/>, for Anthropic's events.</summary>
    [Fact]
    public void Process_RandomAnthropicStreams_ReadTheSame_WithOrWithoutReadingEventsAsTheirText()
    {
        string[] texts =
        [
            "\"Hello\"", "\" world\"", "\"\"", "\"\\\"quoted\\\"\"", "\"\\ud83d\"", "\"\\ude00 after\"", "\"é ü 中文\"", "\"a\",\"text\":\"b\"",
            "\"a\"},\"usage\":{\"output_tokens\":7}, \"x\":{\"y\":\"b\"", "\"a\"},\"type\":\"message_stop\",\"x\":{\"y\":\"b\"", "null", "42", "\"a\" ", "\"unterminated", "\"bad \\q\"",
        ];
        var random = new Random(20261202);
        var taken = 0;
        for (var round = 0; round < 400; round++)
        {
            var sse = new StringBuilder();
            sse.Append("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n");
            sse.Append("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
            for (var i = random.Next(12); i > 0; i--)
            {
                var text = texts[random.Next(texts.Length)];
                var index = random.Next(6) == 0 ? 1 : 0;
                if (random.Next(5) == 0)
                {
                    // Usage between two events alike: an event remembered with its usage would not be read again.
                    sse.Append("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":").Append(random.Next(8, 100)).Append("}}\n\n");
                }

                sse.Append(random.Next(10) == 0 ? "event: ping\ndata: {\"type\": \"ping\"}\n\n" : "")
                    .Append("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":").Append(index)
                    .Append(",\"delta\":{\"type\":\"text_delta\",\"text\":").Append(text).Append(random.Next(20) == 0 ? "}" : "}}").Append("\n\n");
            }

            sse.Append("event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n");
            if (random.Next(3) > 0)
            {
                sse.Append("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":").Append(random.Next(100)).Append("}}\n\n");
            }

            sse.Append("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
            var body = Encoding.UTF8.GetBytes(sse.ToString());
            var chunkSize = random.Next(1, 300);

            var (fast, fastOutput) = Run(ProviderKind.Anthropic, stream: true, hide: false, body, chunkSize, readsLikeTheLast: true);
            var (whole, wholeOutput) = Run(ProviderKind.Anthropic, stream: true, hide: false, body, chunkSize, readsLikeTheLast: false);

            Assert.Equal(body, fastOutput);
            Assert.Equal(body, wholeOutput);
            Assert.True((whole.InputTokens, whole.OutputTokens, whole.StreamCompleted) == (fast.InputTokens, fast.OutputTokens, fast.StreamCompleted), $"round {round}:\n{sse}");
            Assert.True(whole.EstimateOutputTokens() == fast.EstimateOutputTokens(), $"round {round}: estimate {whole.EstimateOutputTokens()} whole, {fast.EstimateOutputTokens()} as text\n{sse}");
            taken += fast.ChunksReadLikeTheLast;
        }

        Assert.True(taken > 400, $"only {taken} events were read as their text");
    }

    [Theory]
    [InlineData(ProviderKind.Anthropic)]
    [InlineData(ProviderKind.OpenAI)]
    public void Process_AnEventOfTextThatAlsoCarriesUsage_IsReadInFullEveryTime(ProviderKind provider)
    {
        // Twice the same event, with a different usage between: the second must count again, not be read as its text.
        var (withUsage, between) = provider == ProviderKind.Anthropic
            ? ("data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"a\"},\"usage\":{\"output_tokens\":7}}\n\n",
                "data: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":50}}\n\n")
            : ("data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":7}}\n\n",
                "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":50}}\n\n");
        var body = Encoding.UTF8.GetBytes(withUsage + between + withUsage);

        var (meter, _) = Run(provider, stream: true, hide: false, body, chunkSize: 4096);

        Assert.Equal(7, meter.OutputTokens);
        Assert.Equal(0, meter.ChunksReadLikeTheLast);
    }

    private static string TextOf(byte[] sse)
    {
        var text = new StringBuilder();
        foreach (var line in Encoding.UTF8.GetString(sse).Split('\n'))
        {
            if (line.StartsWith("data: {", StringComparison.Ordinal))
            {
                using var chunk = JsonDocument.Parse(line[6..]);
                foreach (var choice in chunk.RootElement.GetProperty("choices").EnumerateArray())
                {
                    if (choice.GetProperty("delta").TryGetProperty("content", out var content))
                    {
                        text.Append(content.GetString());
                    }
                }
            }
        }

        return text.ToString();
    }

    [Theory]
    [InlineData(1)]
    [InlineData(4096)]
    public void Process_OpenAIChunksThatChangeAfterTheirFirstMembers_AreReadAndCutAsWhole(int chunkSize)
    {
        // Later chunks of a stream are read from "choices" on when they start as an earlier one did; these differ from
        // that start in every way that matters: usage right after it, at the end, nothing after it, a trailing comma.
        const string head = "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",";
        var body = Encoding.UTF8.GetBytes(
            "data: " + head + "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n"
            + "data: " + head + "\"usage\":null,\"choices\":[{\"index\":0,\"delta\":{\"content\":\" you\"}}]}\n\n"
            + "data: " + head + "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"!\"}}],\"usage\":null}\n\n"
            + "data: " + head + "\"usage\":null}\n\n"
            + "data: " + head + "}\n\n"
            + "data: " + head + "\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":8}}\n\n"
            + "data: [DONE]\n\n");
        var expected = "data: " + head + "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n"
            + "data: " + head + "\"choices\":[{\"index\":0,\"delta\":{\"content\":\" you\"}}]}\n\n"
            + "data: " + head + "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"!\"}}]}\n\n"
            + "data: " + head[..^1] + "}\n\n"
            + "data: " + head + "}\n\n" // not valid JSON (a trailing comma): passed on as it came
            + "data: [DONE]\n\n";

        var (meter, output) = Run(ProviderKind.OpenAI, stream: true, hide: true, body, chunkSize);

        Assert.Equal(expected, Encoding.UTF8.GetString(output));
        Assert.Equal(5, meter.InputTokens);
        Assert.Equal(3, meter.OutputTokens);

        // The text of every chunk was seen, those read from "choices" on included.
        var withoutUsage = Encoding.UTF8.GetString(body).Replace("\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3,\"total_tokens\":8}", "\"usage\":null", StringComparison.Ordinal);
        var (unmetered, _) = Run(ProviderKind.OpenAI, stream: true, hide: false, Encoding.UTF8.GetBytes(withoutUsage), chunkSize);
        Assert.False(unmetered.HasUsage);
        Assert.Equal(TokenCounter.Count("Hi you!"), unmetered.EstimateOutputTokens());
    }

    [Theory]
    [InlineData(1)]
    [InlineData(64)]
    public void Process_AnthropicStream_ReadsInputFromStartAndOutputFromDelta(int chunkSize)
    {
        var body = Cassette("anthropic-messages-stream.sse");

        var (meter, output) = Run(ProviderKind.Anthropic, stream: true, hide: false, body, chunkSize);

        AssertPassedWholeAndMetered(body, output, meter, 25, 15);
    }

    [Fact]
    public void Process_AnthropicEventWhoseTypeIsNotAString_PassesThroughAndTheRestIsRead()
    {
        // Valid JSON, but not what Anthropic sends: comparing a number to text would throw; the stream must go on.
        var body = Encoding.UTF8.GetBytes("event: ping\ndata: {\"type\":1}\n\nevent: ping\ndata: {\"type\":{\"a\":[]}}\n\n"
            + Encoding.UTF8.GetString(Cassette("anthropic-messages-stream.sse")));

        var (meter, output) = Run(ProviderKind.Anthropic, stream: true, hide: false, body, 64);

        AssertPassedWholeAndMetered(body, output, meter, 25, 15);
    }

    [Theory]
    [InlineData(ProviderKind.Anthropic, "anthropic-messages-stream.sse", "event: ping\ndata: {\"type\":\"ping\",\"\\ude00\":1}\n\n", 25, 15)]
    [InlineData(ProviderKind.OpenAI, "openai-chat-stream-include-usage.sse", "data: {\"id\":\"x\",\"\\ud83d\":[],\"choices\":[]}\n\n", 9, 4)]
    public void Process_AnEventWithANameThatIsNotText_PassesThroughAndTheRestIsRead(ProviderKind provider, string cassette, string odd, long input, long outputTokens)
    {
        // Valid JSON whose name is half a surrogate pair: comparing it with a name throws; the stream must go on.
        var body = Encoding.UTF8.GetBytes(odd + Encoding.UTF8.GetString(Cassette(cassette)));

        var (meter, output) = Run(provider, stream: true, hide: false, body, 64);

        AssertPassedWholeAndMetered(body, output, meter, input, outputTokens);
    }

    [Theory]
    [InlineData(ProviderKind.OpenAI)]
    [InlineData(ProviderKind.Anthropic)]
    public void Complete_AJsonBodyWithANameThatIsNotText_PassesThroughWithoutUsage(ProviderKind provider)
    {
        var body = Encoding.UTF8.GetBytes("{\"\\ude00\":0," + Encoding.UTF8.GetString(Cassette("openai-chat.json")).TrimStart()[1..]);

        var (meter, output) = Run(provider, stream: false, hide: false, body, 16);

        Assert.Equal(body, output);
        Assert.False(meter.HasUsage);
    }

    [Fact]
    public void Complete_UsageBelowZero_IsNotTaken_AndTheTextIsCountedInstead()
    {
        // A negative count would refund every budget it is charged to.
        var body = Encoding.UTF8.GetBytes(Encoding.UTF8.GetString(Cassette("openai-chat.json"))
            .Replace("\"prompt_tokens\": 9", "\"prompt_tokens\": -9000", StringComparison.Ordinal)
            .Replace("\"completion_tokens\": 4", "\"completion_tokens\": -4000", StringComparison.Ordinal));

        var (meter, _) = Run(ProviderKind.OpenAI, stream: false, hide: false, body, 16);

        Assert.Contains("\"prompt_tokens\": -9000", Encoding.UTF8.GetString(body), StringComparison.Ordinal);
        Assert.False(meter.HasUsage);
        Assert.Equal(TokenCounter.Count("Hello there!"), meter.EstimateOutputTokens());
    }

    [Theory]
    [InlineData(ProviderKind.OpenAI, 1, false)]
    [InlineData(ProviderKind.OpenAI, 7, true)]
    [InlineData(ProviderKind.OpenAI, 100_000, false)]
    [InlineData(ProviderKind.Anthropic, 1, false)]
    [InlineData(ProviderKind.Anthropic, 13, false)]
    [InlineData(ProviderKind.Anthropic, 100_000, true)]
    public void Process_AProvidersErrorEventMidStream_IsReplacedByTheGatewaysWithTheRequestId(ProviderKind provider, int chunkSize, bool unterminated)
    {
        var anthropic = provider == ProviderKind.Anthropic;
        var text = Encoding.UTF8.GetString(Cassette(anthropic ? "anthropic-messages-stream.sse" : "openai-chat-stream.sse"));
        var cut = text[..text.IndexOf(anthropic ? "event: message_delta" : "data: [DONE]", StringComparison.Ordinal)];
        var error = anthropic
            ? "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded, key sk-live-SECRET123 org-abc\"}}"
            : "data: {\"error\":{\"message\":\"key sk-live-SECRET123 org-abc\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";
        var body = Encoding.UTF8.GetBytes(cut + error + (unterminated ? "" : "\n\n"));
        var meter = new ResponseMeter(provider, stream: true, hideInjectedUsage: false) { RequestId = "req_1" };
        var output = new ArrayBufferWriter<byte>();

        for (var offset = 0; offset < body.Length; offset += chunkSize)
        {
            meter.Process(body.AsSpan(offset, Math.Min(chunkSize, body.Length - offset)), output);
        }

        meter.Complete(output);

        var received = Encoding.UTF8.GetString(output.WrittenSpan);
        Assert.StartsWith(cut, received, StringComparison.Ordinal); // the events before it as they came
        Assert.DoesNotContain("SECRET", received, StringComparison.Ordinal);
        Assert.DoesNotContain("org-abc", received, StringComparison.Ordinal);
        var replacement = received[cut.Length..];
        Assert.EndsWith("\n\n", replacement, StringComparison.Ordinal);
        var data = replacement.Split('\n').Single(l => l.StartsWith("data: ", StringComparison.Ordinal))["data: ".Length..];
        Assert.Equal(anthropic, replacement.StartsWith("event: error\n", StringComparison.Ordinal));
        using var json = JsonDocument.Parse(data);
        Assert.Equal(anthropic ? "error" : null, json.RootElement.TryGetProperty("type", out var type) ? type.GetString() : null);
        Assert.Equal("upstream.stream_error", json.RootElement.GetProperty("error").GetProperty("code").GetString());
        Assert.Equal(anthropic ? "api_error" : "upstream_error", json.RootElement.GetProperty("error").GetProperty("type").GetString());
        Assert.Equal("req_1", json.RootElement.GetProperty("error").GetProperty("request_id").GetString());
        Assert.True(meter.StreamFailed);
        Assert.Contains("SECRET", meter.StreamError ?? "", StringComparison.Ordinal); // for the operator's log, which redacts it
        Assert.Equal(output.WrittenCount, meter.BytesOut);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(4096)]
    public void Complete_OpenAIsCachedTokens_ArePartOfItsPromptTokens(int chunkSize)
    {
        var body = Encoding.UTF8.GetBytes("""{"id":"c","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":100,"total_tokens":1100,"prompt_tokens_details":{"cached_tokens":800,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0}}}""");

        var (meter, _) = Run(ProviderKind.OpenAI, stream: false, hide: false, body, chunkSize);

        Assert.Equal((1000L, 100L, 800L, (long?)null), (meter.InputTokens, meter.OutputTokens, meter.CachedInputTokens, meter.CacheWriteInputTokens));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Complete_AnthropicsCacheTokens_AreAddedToItsInputTokens_WhichExcludeThem(bool stream)
    {
        const string Usage = """{"input_tokens":200,"cache_creation_input_tokens":400,"cache_read_input_tokens":800,"output_tokens":1}""";
        var body = Encoding.UTF8.GetBytes(stream
            ? "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"usage\":" + Usage + "}}\n\n"
              + "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":100}}\n\n"
              + "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
            : """{"id":"m","type":"message","role":"assistant","content":[{"type":"text","text":"Hi"}],"usage":{"input_tokens":200,"cache_creation_input_tokens":400,"cache_read_input_tokens":800,"output_tokens":100}}""");

        var (meter, _) = Run(ProviderKind.Anthropic, stream, hide: false, body, 7);

        Assert.Equal((1400L, 100L, 800L, 400L), (meter.InputTokens, meter.OutputTokens, meter.CachedInputTokens, meter.CacheWriteInputTokens));
    }

    [Theory]
    [InlineData(ProviderKind.OpenAI, "openai-chat-stream.sse")]
    [InlineData(ProviderKind.Anthropic, "anthropic-messages-stream.sse")]
    public void Process_AStreamWithoutErrors_IsNotFailed_AndPassesWhole(ProviderKind provider, string cassette)
    {
        var (meter, output) = Run(provider, stream: true, hide: false, Cassette(cassette), 5);

        Assert.Equal(Cassette(cassette), output);
        Assert.False(meter.StreamFailed);
        Assert.Null(meter.StreamError);
    }

    [Fact]
    public void Process_StreamCutBeforeTerminalEvent_IsNotCompleted()
    {
        var body = Cassette("anthropic-messages-stream.sse");
        var cut = body.AsSpan(0, Encoding.UTF8.GetString(body).IndexOf("event: message_delta", StringComparison.Ordinal)).ToArray();

        var (meter, _) = Run(ProviderKind.Anthropic, stream: true, hide: false, cut, 10);

        Assert.False(meter.StreamCompleted);
        Assert.Equal(25, meter.InputTokens);
    }

    [Fact]
    public void Complete_OpenAIJson_ReadsUsage()
    {
        var (meter, output) = Run(ProviderKind.OpenAI, stream: false, hide: false, Cassette("openai-chat.json"), 16);

        Assert.Equal(Cassette("openai-chat.json"), output);
        Assert.Equal(9, meter.InputTokens);
        Assert.Equal(4, meter.OutputTokens);
    }

    [Fact]
    public void Complete_AnthropicJson_CountsCacheTokensAsInput()
    {
        var (meter, _) = Run(ProviderKind.Anthropic, stream: false, hide: false, Cassette("anthropic-messages.json"), 1000);

        Assert.Equal(12 + 3 + 5, meter.InputTokens);
        Assert.Equal(6, meter.OutputTokens);
    }

    [Fact]
    public void Complete_Embeddings_HasInputAndZeroOutput()
    {
        var (meter, _) = Run(ProviderKind.OpenAI, stream: false, hide: false, Cassette("openai-embeddings.json"), 1000);

        Assert.Equal(8, meter.InputTokens);
        Assert.Equal(0, meter.OutputTokens);
    }

    [Fact]
    public void Complete_JsonWithoutUsage_EstimatesFromContent()
    {
        var body = Encoding.UTF8.GetBytes("""{"choices":[{"message":{"role":"assistant","content":"The quick brown fox jumps over the lazy dog."}}]}""");

        var (meter, _) = Run(ProviderKind.OpenAI, stream: false, hide: false, body, 1000);

        Assert.False(meter.HasUsage);
        Assert.Equal(TokenCounter.Count("The quick brown fox jumps over the lazy dog."), meter.EstimateOutputTokens());
    }
}
