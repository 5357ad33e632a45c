using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace Custos.Gateway.Demo;

/// <summary>
/// <c>POST /v1/responses</c> of the demo upstream: OpenAI's Responses API in its exact wire format, a response object, or
/// with <c>stream</c> its named events (<c>response.created</c>, <c>response.in_progress</c>,
/// <c>response.output_item.added</c>, <c>response.content_part.added</c>, <c>response.output_text.delta</c>…,
/// <c>response.output_text.done</c>, <c>response.content_part.done</c>, <c>response.output_item.done</c>,
/// <c>response.completed</c>), each <c>data:</c> JSON with its <c>type</c> and <c>sequence_number</c>.
/// </summary>
internal static class ResponsesEndpoint
{
    /// <summary>Answers one Responses API request.</summary>
    public static async Task RespondAsync(HttpContext context, JsonElement root, string model, MockMode mode)
    {
        var prompt = new PromptText();
        if (root.TryGetProperty("instructions", out var instructions) && instructions.ValueKind == JsonValueKind.String)
        {
            prompt.AddMessage(instructions.GetString()!, isUser: false);
        }

        AddInput(prompt, root);
        prompt.AddTools(root);
        long? maxOutput = root.TryGetProperty("max_output_tokens", out var max) && max.ValueKind == JsonValueKind.Number && max.TryGetInt64(out var limit) ? limit : null;
        var reply = DemoText.Limit(DemoText.Reply(prompt.LastUserText), maxOutput, out var cut);
        var answer = new Answer(
            Wire.NewId("resp_"),
            Wire.NewId("msg_"),
            Wire.Now(),
            model,
            reply,
            cut,
            maxOutput,
            root.TryGetProperty("instructions", out var sent) && sent.ValueKind == JsonValueKind.String ? sent.GetString() : null,
            root.TryGetProperty("previous_response_id", out var previous) && previous.ValueKind == JsonValueKind.String ? previous.GetString() : null,
            mode == MockMode.NoUsage ? null : (prompt.CountTokens(), DemoText.Count(reply)));
        Wire.SetProviderHeaders(context, WireFlavor.OpenAi);

        if (!(root.TryGetProperty("stream", out var stream) && stream.ValueKind == JsonValueKind.True) || mode == MockMode.IgnoresStream)
        {
            await Wire.WriteJsonAsync(context, StatusCodes.Status200OK, w => WriteResponse(w, answer, done: true), cut: mode == MockMode.CutStream);
            return;
        }

        using var sse = new SseWriter(context, sized: mode == MockMode.SizedStream);
        var sequence = 0;
        await sse.SendAsync("response.created", w => WriteEvent(w, "response.created", sequence++, answer, done: false));
        await sse.SendAsync("response.in_progress", w => WriteEvent(w, "response.in_progress", sequence++, answer, done: false));
        await sse.SendAsync("response.output_item.added", w =>
        {
            WriteEventStart(w, "response.output_item.added", sequence++);
            w.WriteNumber("output_index", 0);
            w.WritePropertyName("item");
            WriteMessage(w, answer, done: false);
            w.WriteEndObject();
        });
        await sse.SendAsync("response.content_part.added", w =>
        {
            WritePartEventStart(w, "response.content_part.added", sequence++, answer);
            w.WritePropertyName("part");
            WritePart(w, string.Empty);
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
            await sse.SendAsync("response.output_text.delta", w =>
            {
                WritePartEventStart(w, "response.output_text.delta", sequence++, answer);
                w.WriteString("delta", chunk);
                w.WriteStartArray("logprobs");
                w.WriteEndArray();
                w.WriteEndObject();
            });
        }

        await sse.SendAsync("response.output_text.done", w =>
        {
            WritePartEventStart(w, "response.output_text.done", sequence++, answer);
            w.WriteString("text", reply);
            w.WriteStartArray("logprobs");
            w.WriteEndArray();
            w.WriteEndObject();
        });
        await sse.SendAsync("response.content_part.done", w =>
        {
            WritePartEventStart(w, "response.content_part.done", sequence++, answer);
            w.WritePropertyName("part");
            WritePart(w, reply);
            w.WriteEndObject();
        });
        await sse.SendAsync("response.output_item.done", w =>
        {
            WriteEventStart(w, "response.output_item.done", sequence++);
            w.WriteNumber("output_index", 0);
            w.WritePropertyName("item");
            WriteMessage(w, answer, done: true);
            w.WriteEndObject();
        });
        var terminal = cut ? "response.incomplete" : "response.completed";
        await sse.SendAsync(terminal, w => WriteEvent(w, terminal, sequence++, answer, done: true));
        await sse.EndAsync();
    }

    /// <summary>Adds <c>input</c>: a string is one user message; each message item of an array one message, and the output of a function call one.</summary>
    private static void AddInput(PromptText prompt, JsonElement root)
    {
        if (!root.TryGetProperty("input", out var input))
        {
            return;
        }

        if (input.ValueKind == JsonValueKind.String)
        {
            prompt.AddMessage(input.GetString()!, isUser: true);
            return;
        }

        if (input.ValueKind != JsonValueKind.Array)
        {
            return;
        }

        foreach (var item in input.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Object)
            {
                continue;
            }

            if (item.TryGetProperty("content", out var content))
            {
                var isUser = item.TryGetProperty("role", out var role) && role.ValueKind == JsonValueKind.String && role.ValueEquals("user"u8);
                prompt.AddMessage(DemoText.ContentText(content), isUser);
            }
            else if (item.TryGetProperty("output", out var output) && output.ValueKind == JsonValueKind.String)
            {
                prompt.AddMessage(output.GetString()!, isUser: false);
            }
            else
            {
                prompt.AddMessage(item.GetRawText(), isUser: false); // a function call fed back: read as much as its text
            }
        }
    }

    private static void WriteEventStart(Utf8JsonWriter w, string type, int sequence)
    {
        w.WriteStartObject();
        w.WriteString("type", type);
        w.WriteNumber("sequence_number", sequence);
    }

    private static void WritePartEventStart(Utf8JsonWriter w, string type, int sequence, Answer answer)
    {
        WriteEventStart(w, type, sequence);
        w.WriteString("item_id", answer.MessageId);
        w.WriteNumber("output_index", 0);
        w.WriteNumber("content_index", 0);
    }

    /// <summary>An event that carries the response object: created and in progress (no output, no usage yet), or the terminal one.</summary>
    private static void WriteEvent(Utf8JsonWriter w, string type, int sequence, Answer answer, bool done)
    {
        WriteEventStart(w, type, sequence);
        w.WritePropertyName("response");
        WriteResponse(w, answer, done);
        w.WriteEndObject();
    }

    /// <summary>The response object, as <c>POST /v1/responses</c> answers it and its events carry it.</summary>
    private static void WriteResponse(Utf8JsonWriter w, Answer answer, bool done)
    {
        w.WriteStartObject();
        w.WriteString("id", answer.Id);
        w.WriteString("object", "response");
        w.WriteNumber("created_at", answer.Created);
        w.WriteString("status", !done ? "in_progress" : answer.Cut ? "incomplete" : "completed");
        w.WriteBoolean("background", false);
        w.WriteNull("error");
        if (done && answer.Cut)
        {
            w.WriteStartObject("incomplete_details");
            w.WriteString("reason", "max_output_tokens");
            w.WriteEndObject();
        }
        else
        {
            w.WriteNull("incomplete_details");
        }

        Wire.WriteStringOrNull(w, "instructions", answer.Instructions);
        if (answer.MaxOutputTokens is { } max)
        {
            w.WriteNumber("max_output_tokens", max);
        }
        else
        {
            w.WriteNull("max_output_tokens");
        }

        w.WriteString("model", answer.Model);
        w.WriteStartArray("output");
        if (done)
        {
            WriteMessage(w, answer, done: true);
        }

        w.WriteEndArray();
        w.WriteBoolean("parallel_tool_calls", true);
        Wire.WriteStringOrNull(w, "previous_response_id", answer.PreviousResponseId);
        w.WriteStartObject("reasoning");
        w.WriteNull("effort");
        w.WriteNull("summary");
        w.WriteEndObject();
        w.WriteBoolean("store", true);
        w.WriteNumber("temperature", 1.0);
        w.WriteStartObject("text");
        w.WriteStartObject("format");
        w.WriteString("type", "text");
        w.WriteEndObject();
        w.WriteEndObject();
        w.WriteString("tool_choice", "auto");
        w.WriteStartArray("tools");
        w.WriteEndArray();
        w.WriteNumber("top_p", 1.0);
        w.WriteString("truncation", "disabled");
        if (done && answer.Usage is { } usage)
        {
            w.WriteStartObject("usage");
            w.WriteNumber("input_tokens", usage.Input);
            w.WriteStartObject("input_tokens_details");
            w.WriteNumber("cached_tokens", 0);
            w.WriteEndObject();
            w.WriteNumber("output_tokens", usage.Output);
            w.WriteStartObject("output_tokens_details");
            w.WriteNumber("reasoning_tokens", 0);
            w.WriteEndObject();
            w.WriteNumber("total_tokens", usage.Input + usage.Output);
            w.WriteEndObject();
        }
        else
        {
            w.WriteNull("usage");
        }

        w.WriteNull("user");
        w.WriteStartObject("metadata");
        w.WriteEndObject();
        w.WriteEndObject();
    }

    /// <summary>The assistant's message output item: empty while in progress, its one text part once done.</summary>
    private static void WriteMessage(Utf8JsonWriter w, Answer answer, bool done)
    {
        w.WriteStartObject();
        w.WriteString("id", answer.MessageId);
        w.WriteString("type", "message");
        w.WriteString("status", done ? "completed" : "in_progress");
        w.WriteStartArray("content");
        if (done)
        {
            WritePart(w, answer.Text);
        }

        w.WriteEndArray();
        w.WriteString("role", "assistant");
        w.WriteEndObject();
    }

    private static void WritePart(Utf8JsonWriter w, string text)
    {
        w.WriteStartObject();
        w.WriteString("type", "output_text");
        w.WriteStartArray("annotations");
        w.WriteEndArray();
        w.WriteStartArray("logprobs");
        w.WriteEndArray();
        w.WriteString("text", text);
        w.WriteEndObject();
    }

    private sealed record Answer(
        string Id,
        string MessageId,
        long Created,
        string Model,
        string Text,
        bool Cut,
        long? MaxOutputTokens,
        string? Instructions,
        string? PreviousResponseId,
        (int Input, int Output)? Usage);
}
