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
        prompt.AddTools(root);
        long? maxTokens = root.TryGetProperty("max_tokens", out var max) && max.ValueKind == JsonValueKind.Number && max.TryGetInt64(out var limit) ? limit : null;
        var calls = DemoTools.AnthropicCalls(root, prompt.LastUserText, maxTokens);

        var reply = DemoText.Limit(DemoText.Stop(DemoText.Reply(prompt.LastUserText), root, "stop_sequences", out var stopSequence), maxTokens, out var cut);
        stopSequence = calls is null && !cut ? stopSequence : null;
        var stopReason = calls is not null ? "tool_use" : cut ? "max_tokens" : stopSequence is not null ? "stop_sequence" : "end_turn";
        var inputTokens = prompt.CountTokens();
        var outputTokens = calls is not null ? DemoTools.CountTokens(calls) : DemoText.Count(reply);
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
                    if (calls is null)
                    {
                        w.WriteStartObject();
                        w.WriteString("type", "text");
                        w.WriteString("text", reply);
                        w.WriteEndObject();
                    }
                    else
                    {
                        foreach (var call in calls)
                        {
                            w.WriteStartObject();
                            WriteToolUse(w, call);
                            w.WritePropertyName("input");
                            w.WriteRawValue(call.Arguments);
                            w.WriteEndObject();
                        }
                    }

                    w.WriteEndArray();
                    w.WriteString("stop_reason", stopReason);
                    Wire.WriteStringOrNull(w, "stop_sequence", stopSequence);
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
        if (calls is not null)
        {
            await ToolUsesAsync(sse, calls);
        }
        else if (await TextBlockAsync(sse, reply, mode, context))
        {
            return; // cut
        }

        await sse.SendAsync("message_delta", w =>
        {
            w.WriteStartObject();
            w.WriteString("type", "message_delta");
            w.WriteStartObject("delta");
            w.WriteString("stop_reason", stopReason);
            Wire.WriteStringOrNull(w, "stop_sequence", stopSequence);
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
    /// Streams <paramref name="calls"/> as Anthropic does: for each, a <c>tool_use</c> block started with empty input,
    /// its input in <c>input_json_delta</c> pieces, and the block's stop.
    /// </summary>
    private static async Task ToolUsesAsync(SseWriter sse, List<DemoToolCall> calls)
    {
        for (var i = 0; i < calls.Count; i++)
        {
            var (call, index) = (calls[i], i);
            await sse.SendAsync("content_block_start", w =>
            {
                w.WriteStartObject();
                w.WriteString("type", "content_block_start");
                w.WriteNumber("index", index);
                w.WriteStartObject("content_block");
                WriteToolUse(w, call);
                w.WriteStartObject("input");
                w.WriteEndObject();
                w.WriteEndObject();
                w.WriteEndObject();
            });
            foreach (var piece in DemoTools.Chunks(call.Arguments))
            {
                await sse.SendAsync("content_block_delta", w =>
                {
                    w.WriteStartObject();
                    w.WriteString("type", "content_block_delta");
                    w.WriteNumber("index", index);
                    w.WriteStartObject("delta");
                    w.WriteString("type", "input_json_delta");
                    w.WriteString("partial_json", piece);
                    w.WriteEndObject();
                    w.WriteEndObject();
                });
            }

            await sse.SendAsync("content_block_stop", w =>
            {
                w.WriteStartObject();
                w.WriteString("type", "content_block_stop");
                w.WriteNumber("index", index);
                w.WriteEndObject();
            });
        }
    }

    /// <summary>A <c>tool_use</c> block's type, id and name.</summary>
    private static void WriteToolUse(Utf8JsonWriter w, DemoToolCall call)
    {
        w.WriteString("type", "tool_use");
        w.WriteString("id", call.Id);
        w.WriteString("name", call.Name);
    }

    /// <summary>
    /// Streams the text block of <paramref name="reply"/>; <see cref="MockMode.CutStream"/> cuts it at its third piece, and
    /// then the result is true.
    /// </summary>
    private static async Task<bool> TextBlockAsync(SseWriter sse, string reply, MockMode mode, HttpContext context)
    {
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
                return true;
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
        return false;
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
