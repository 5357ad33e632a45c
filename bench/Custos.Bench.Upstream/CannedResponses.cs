using System.Globalization;
using System.Text;

namespace Custos.Bench.Upstream;

/// <summary>
/// The mock's answers, in OpenAI's chat completions wire format, encoded once at startup: a
/// <c>chat.completion</c> object, and a stream of <c>chat.completion.chunk</c> events with and without
/// <c>stream_options.include_usage</c>.
/// </summary>
internal sealed class CannedResponses
{
    /// <summary>The reply, in the pieces the stream sends as content deltas.</summary>
    internal static readonly string[] ReplyPieces =
    [
        "This is",
        " a canned",
        " reply from",
        " the Custos",
        " bench upstream",
        ", sent as",
        " fast as",
        " it can.",
    ];

    internal const int PromptTokens = 28;
    internal const int CompletionTokens = 17;

    private const string Id = "chatcmpl-BenchUpstream0000000000001";
    private const long Created = 1767225600;
    private const string Model = "gpt-4o-mini-2024-07-18";
    private const string Fingerprint = "fp_bench0001";

    private CannedResponses(byte[] completion, byte[][] stream, byte[][] streamWithUsage)
    {
        Completion = completion;
        Stream = stream;
        StreamWithUsage = streamWithUsage;
    }

    /// <summary>The non-streaming <c>chat.completion</c> JSON body.</summary>
    public byte[] Completion { get; }

    /// <summary>The SSE events of a stream without usage, one array item per event, ending with <c>data: [DONE]</c>.</summary>
    public byte[][] Stream { get; }

    /// <summary>The SSE events of a stream with <c>include_usage</c>: <c>"usage":null</c> on each chunk and a final usage chunk.</summary>
    public byte[][] StreamWithUsage { get; }

    /// <summary>Encodes every answer.</summary>
    public static CannedResponses Build()
    {
        var reply = string.Concat(ReplyPieces);
        var completion = "{" + Header("chat.completion")
            + ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"" + reply
            + "\",\"refusal\":null,\"annotations\":[]},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
            + Usage() + ",\"service_tier\":\"default\",\"system_fingerprint\":\"" + Fingerprint + "\"}";
        return new CannedResponses(Encoding.UTF8.GetBytes(completion), StreamEvents(includeUsage: false), StreamEvents(includeUsage: true));
    }

    private static byte[][] StreamEvents(bool includeUsage)
    {
        var events = new List<string> { Chunk("{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}", "null", includeUsage) };
        foreach (var piece in ReplyPieces)
        {
            events.Add(Chunk("{\"content\":\"" + piece + "\"}", "null", includeUsage));
        }

        events.Add(Chunk("{}", "\"stop\"", includeUsage));
        if (includeUsage)
        {
            events.Add(Event("{" + Header("chat.completion.chunk") + ",\"service_tier\":\"default\",\"system_fingerprint\":\""
                + Fingerprint + "\",\"choices\":[]," + Usage() + "}"));
        }

        events.Add("data: [DONE]\n\n");
        return [.. events.Select(Encoding.UTF8.GetBytes)];
    }

    private static string Chunk(string delta, string finishReason, bool includeUsage) =>
        Event("{" + Header("chat.completion.chunk") + ",\"service_tier\":\"default\",\"system_fingerprint\":\"" + Fingerprint
            + "\",\"choices\":[{\"index\":0,\"delta\":" + delta + ",\"logprobs\":null,\"finish_reason\":" + finishReason + "}]"
            + (includeUsage ? ",\"usage\":null" : string.Empty) + "}");

    private static string Event(string json) => "data: " + json + "\n\n";

    private static string Header(string type) => string.Create(CultureInfo.InvariantCulture,
        $"\"id\":\"{Id}\",\"object\":\"{type}\",\"created\":{Created},\"model\":\"{Model}\"");

    private static string Usage() => string.Create(CultureInfo.InvariantCulture,
        $"\"usage\":{{\"prompt_tokens\":{PromptTokens},\"completion_tokens\":{CompletionTokens},\"total_tokens\":{PromptTokens + CompletionTokens},\"prompt_tokens_details\":{{\"cached_tokens\":0,\"audio_tokens\":0}},\"completion_tokens_details\":{{\"reasoning_tokens\":0,\"audio_tokens\":0,\"accepted_prediction_tokens\":0,\"rejected_prediction_tokens\":0}}}}");
}
