using System.Buffers;
using System.Text;
using Custos.Errors;
using Custos.Metering;
using Custos.Policy;

namespace Custos.Core.Tests;

/// <summary>
/// Usage capture of OpenAI's Responses API (<c>POST /v1/responses</c>): a response object, or a stream of named events
/// whose <c>response.completed</c> carries the usage. The cassettes follow the documented wire format event for event.
/// </summary>
public sealed class ResponsesMeterTests
{
    private static byte[] Cassette(string name) => File.ReadAllBytes(Path.Combine(AppContext.BaseDirectory, "Cassettes", name));

    private static (ResponseMeter Meter, byte[] Output) Run(bool stream, byte[] body, int chunkSize)
    {
        var meter = new ResponseMeter(ProviderKind.OpenAI, stream, hideInjectedUsage: false) { ResponsesApi = true, RequestId = "req_1" };
        var output = new ArrayBufferWriter<byte>();
        for (var offset = 0; offset < body.Length; offset += chunkSize)
        {
            meter.Process(body.AsSpan(offset, Math.Min(chunkSize, body.Length - offset)), output);
        }

        meter.Complete(output);
        return (meter, output.WrittenSpan.ToArray());
    }

    /// <summary>The stream up to (not including) its event of <paramref name="type"/>.</summary>
    private static byte[] Before(byte[] stream, string type)
    {
        var at = Encoding.UTF8.GetString(stream).IndexOf("event: " + type, StringComparison.Ordinal);
        Assert.True(at > 0);
        return stream[..Encoding.UTF8.GetByteCount(Encoding.UTF8.GetString(stream)[..at])];
    }

    [Fact]
    public void Complete_ResponseObject_ReadsInputOutputCachedAndReasoningTokens()
    {
        var (meter, output) = Run(stream: false, Cassette("openai-responses.json"), 4096);

        Assert.Equal(Cassette("openai-responses.json"), output);
        Assert.Equal(37, meter.InputTokens);
        Assert.Equal(11, meter.OutputTokens);
        Assert.Equal(12, meter.CachedInputTokens);
        Assert.Equal(3, meter.ReasoningTokens);
        Assert.False(meter.JsonMalformed);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(100)]
    [InlineData(100_000)]
    public void Process_Stream_SplitAnywhere_PassesThroughWhole_AndReadsTheCompletedUsage(int chunkSize)
    {
        var body = Cassette("openai-responses-stream.sse");

        var (meter, output) = Run(stream: true, body, chunkSize);

        Assert.Equal(body, output);
        Assert.Equal(37, meter.InputTokens);
        Assert.Equal(11, meter.OutputTokens);
        Assert.Equal(12, meter.CachedInputTokens);
        Assert.Equal(3, meter.ReasoningTokens);
        Assert.True(meter.StreamCompleted);
        Assert.False(meter.StreamFailed);
        Assert.Equal(body.Length, meter.BytesOut);
    }

    [Fact]
    public void Process_EachEvent_GoesOutAsSoonAsItIsComplete_NotAtTheEnd()
    {
        var body = Cassette("openai-responses-stream.sse");
        var firstDelta = Before(body, "response.output_text.delta").Length;
        var meter = new ResponseMeter(ProviderKind.OpenAI, stream: true, hideInjectedUsage: false) { ResponsesApi = true };
        var output = new ArrayBufferWriter<byte>();

        meter.Process(body.AsSpan(0, firstDelta + 10), output); // the events before the first delta, and part of it

        Assert.Equal(body.AsSpan(0, firstDelta).ToArray(), output.WrittenSpan.ToArray());
        Assert.False(meter.StreamCompleted);
    }

    [Theory]
    [InlineData("response.output_text.done", 1)]
    [InlineData("response.completed", 1)]
    [InlineData("response.completed", 64)]
    public void Process_StreamCutBeforeCompleted_IsNotComplete_HasNoUsage_AndEstimatesTheTextSeen(string cutAt, int chunkSize)
    {
        var body = Before(Cassette("openai-responses-stream.sse"), cutAt);

        var (meter, output) = Run(stream: true, body, chunkSize);

        Assert.Equal(body, output);
        Assert.False(meter.StreamCompleted);
        Assert.False(meter.HasUsage);
        Assert.Equal(TokenCounter.Count("Hi there! How can I help?"), meter.EstimateOutputTokens()); // the deltas, not the done event's repeat
    }

    [Fact]
    public void Process_Incomplete_EndsTheStream_WithItsUsage()
    {
        var body = Encoding.UTF8.GetBytes(Encoding.UTF8.GetString(Cassette("openai-responses-stream.sse"))
            .Replace("response.completed", "response.incomplete", StringComparison.Ordinal)
            .Replace("\"status\":\"completed\",\"background\"", "\"status\":\"incomplete\",\"background\"", StringComparison.Ordinal));

        var (meter, output) = Run(stream: true, body, 13);

        Assert.Equal(body, output);
        Assert.True(meter.StreamCompleted);
        Assert.False(meter.StreamFailed);
        Assert.Equal(37, meter.InputTokens);
        Assert.Equal(11, meter.OutputTokens);
    }

    [Fact]
    public void Process_Failed_IsTheProvidersError_ReplacedByTheGatewaysErrorEvent_AndItsUsageIsRead()
    {
        const string failed = """
            event: response.failed
            data: {"type":"response.failed","sequence_number":9,"response":{"id":"resp_1","object":"response","status":"failed","error":{"code":"server_error","message":"org-secret-account sk-live-123 failed"},"output":[],"usage":{"input_tokens":20,"output_tokens":4,"total_tokens":24}}}


            """;
        var body = Encoding.UTF8.GetBytes(Encoding.UTF8.GetString(Before(Cassette("openai-responses-stream.sse"), "response.output_text.done")) + failed.ReplaceLineEndings("\n"));

        var (meter, output) = Run(stream: true, body, 5);
        var text = Encoding.UTF8.GetString(output);

        Assert.True(meter.StreamFailed);
        Assert.False(meter.StreamCompleted);
        Assert.Equal(20, meter.InputTokens);
        Assert.Equal(4, meter.OutputTokens);
        Assert.DoesNotContain("sk-live", text, StringComparison.Ordinal);
        Assert.DoesNotContain("response.failed", text, StringComparison.Ordinal);
        Assert.Contains("sk-live", meter.StreamError, StringComparison.Ordinal); // for the operator's log only
        Assert.EndsWith($$"""
            event: error
            data: {"type":"error","code":"{{Reasons.UpstreamStreamFailed.Code}}","message":"{{Reasons.UpstreamStreamFailed.Message}}","param":null,"sequence_number":9,"request_id":"req_1"}


            """.ReplaceLineEndings("\n"), text, StringComparison.Ordinal);
    }

    [Fact]
    public void Process_ErrorEvent_IsReplaced_TakingItsSequenceNumber()
    {
        var body = Encoding.UTF8.GetBytes("""
            event: response.created
            data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","status":"in_progress","usage":null}}

            event: error
            data: {"type":"error","code":"rate_limit_exceeded","message":"Rate limit reached for org-123","param":null,"sequence_number":1}


            """.ReplaceLineEndings("\n"));

        var (meter, output) = Run(stream: true, body, 3);
        var text = Encoding.UTF8.GetString(output);

        Assert.True(meter.StreamFailed);
        Assert.DoesNotContain("org-123", text, StringComparison.Ordinal);
        Assert.Contains("\"type\":\"error\",\"code\":\"" + Reasons.UpstreamStreamFailed.Code + "\"", text, StringComparison.Ordinal);
        Assert.Contains("\"sequence_number\":1,", text, StringComparison.Ordinal);
    }

    [Fact]
    public void Interrupt_WritesTheResponsesErrorEvent_WithTheCutsReason()
    {
        var body = Before(Cassette("openai-responses-stream.sse"), "response.output_text.done");
        var meter = new ResponseMeter(ProviderKind.OpenAI, stream: true, hideInjectedUsage: false) { ResponsesApi = true, RequestId = "req_9" };
        var output = new ArrayBufferWriter<byte>();
        meter.Process(body, output);

        meter.Interrupt(Reasons.KilledInFlight, output);

        var text = Encoding.UTF8.GetString(output.WrittenSpan);
        Assert.Contains("event: error\ndata: {\"type\":\"error\",\"code\":\"" + Reasons.KilledInFlight.Code + "\"", text, StringComparison.Ordinal);
        Assert.Contains("\"request_id\":\"req_9\"", text, StringComparison.Ordinal);
    }
}
