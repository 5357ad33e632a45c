using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace Custos.Gateway.Demo;

/// <summary>The Anthropic Messages endpoint of the demo upstream, in Anthropic's exact wire format.</summary>
internal static class AnthropicEndpoints
{
    /// <summary><c>POST /v1/messages</c>.</summary>
    public static async Task MessagesAsync(HttpContext context, JsonElement root, string model, MockMode mode)
    {
        if (Refused(root) is { } refused)
        {
            await Wire.BadRequestAsync(context, WireFlavor.Anthropic, refused);
            return;
        }

        var prompt = new PromptText();
        if (root.TryGetProperty("system", out var system) && system.ValueKind is JsonValueKind.String or JsonValueKind.Array)
        {
            prompt.AddMessage(DemoText.ContentText(system), isUser: false);
        }

        prompt.AddMessages(root);

        var reply = DemoText.Limit(DemoText.Reply(prompt.LastUserText),
            root.TryGetProperty("max_tokens", out var max) && max.ValueKind == JsonValueKind.Number && max.TryGetInt64(out var limit) ? limit : null, out var cut);
        var stopReason = cut ? "max_tokens" : "end_turn";
        var inputTokens = prompt.CountTokens();
        var outputTokens = DemoText.Count(reply);
        var id = Wire.NewId("msg_");
        Wire.SetProviderHeaders(context, WireFlavor.Anthropic);

        var stream = root.TryGetProperty("stream", out var streamValue) && streamValue.ValueKind == JsonValueKind.True;
        if (!stream)
        {
            await Wire.WriteJsonAsync(
                context,
                StatusCodes.Status200OK,
                w =>
                {
                    w.WriteStartObject();
                    WriteMessageHeader(w, id, model);
                    w.WriteStartArray("content");
                    w.WriteStartObject();
                    w.WriteString("type", "text");
                    w.WriteString("text", reply);
                    w.WriteEndObject();
                    w.WriteEndArray();
                    w.WriteString("stop_reason", stopReason);
                    w.WriteNull("stop_sequence");
                    if (mode != MockMode.NoUsage)
                    {
                        WriteUsage(w, inputTokens, outputTokens);
                    }

                    w.WriteEndObject();
                },
                cut: mode == MockMode.CutStream);
            return;
        }

        using var sse = new SseWriter(context);
        await sse.SendAsync("message_start", w =>
        {
            w.WriteStartObject();
            w.WriteString("type", "message_start");
            w.WriteStartObject("message");
            WriteMessageHeader(w, id, model);
            w.WriteStartArray("content");
            w.WriteEndArray();
            w.WriteNull("stop_reason");
            w.WriteNull("stop_sequence");
            WriteUsage(w, inputTokens, 1);
            w.WriteEndObject();
            w.WriteEndObject();
        });
        await sse.SendAsync("content_block_start", w =>
        {
            w.WriteStartObject();
            w.WriteString("type", "content_block_start");
            w.WriteNumber("index", 0);
            w.WriteStartObject("content_block");
            w.WriteString("type", "text");
            w.WriteString("text", string.Empty);
            w.WriteEndObject();
            w.WriteEndObject();
        });
        await sse.SendAsync("ping", w =>
        {
            w.WriteStartObject();
            w.WriteString("type", "ping");
            w.WriteEndObject();
        });

        var chunks = DemoText.Chunks(reply);
        for (var c = 0; c < chunks.Count; c++)
        {
            if (mode == MockMode.CutStream && c == 2)
            {
                await MockModes.CutAsync(context);
                return;
            }

            var chunk = chunks[c];
            await sse.SendAsync("content_block_delta", w =>
            {
                w.WriteStartObject();
                w.WriteString("type", "content_block_delta");
                w.WriteNumber("index", 0);
                w.WriteStartObject("delta");
                w.WriteString("type", "text_delta");
                w.WriteString("text", chunk);
                w.WriteEndObject();
                w.WriteEndObject();
            });
        }

        await sse.SendAsync("content_block_stop", w =>
        {
            w.WriteStartObject();
            w.WriteString("type", "content_block_stop");
            w.WriteNumber("index", 0);
            w.WriteEndObject();
        });
        await sse.SendAsync("message_delta", w =>
        {
            w.WriteStartObject();
            w.WriteString("type", "message_delta");
            w.WriteStartObject("delta");
            w.WriteString("stop_reason", stopReason);
            w.WriteNull("stop_sequence");
            w.WriteEndObject();
            w.WriteStartObject("usage");
            w.WriteNumber("output_tokens", outputTokens);
            w.WriteEndObject();
            w.WriteEndObject();
        });
        await sse.SendAsync("message_stop", w =>
        {
            w.WriteStartObject();
            w.WriteString("type", "message_stop");
            w.WriteEndObject();
        });
    }

    /// <summary>
    /// What Anthropic refuses in a Messages request before a model sees it, in its words: <c>max_tokens</c> missing, not
    /// a whole number or below 1, and <c>messages</c> missing, not a list or empty. Null when none of these.
    /// </summary>
    internal static string? Refused(JsonElement root)
    {
        if (!root.TryGetProperty("max_tokens", out var maxTokens))
        {
            return "max_tokens: Field required";
        }

        if (maxTokens.ValueKind != JsonValueKind.Number || !maxTokens.TryGetInt64(out var limit))
        {
            return "max_tokens: Input should be a valid integer";
        }

        if (limit < 1)
        {
            return "max_tokens: Input should be greater than or equal to 1";
        }

        if (!root.TryGetProperty("messages", out var messages))
        {
            return "messages: Field required";
        }

        if (messages.ValueKind != JsonValueKind.Array)
        {
            return "messages: Input should be a valid list";
        }

        return messages.GetArrayLength() == 0 ? "messages: at least one message is required" : null;
    }

    private static void WriteMessageHeader(Utf8JsonWriter w, string id, string model)
    {
        w.WriteString("id", id);
        w.WriteString("type", "message");
        w.WriteString("role", "assistant");
        w.WriteString("model", model);
    }

    private static void WriteUsage(Utf8JsonWriter w, int inputTokens, int outputTokens)
    {
        w.WriteStartObject("usage");
        w.WriteNumber("input_tokens", inputTokens);
        w.WriteNumber("cache_creation_input_tokens", 0);
        w.WriteNumber("cache_read_input_tokens", 0);
        w.WriteNumber("output_tokens", outputTokens);
        w.WriteEndObject();
    }
}
