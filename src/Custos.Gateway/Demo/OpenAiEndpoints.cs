using System.Buffers.Binary;
using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace Custos.Gateway.Demo;

/// <summary>The OpenAI endpoints of the demo upstream, in OpenAI's exact wire format.</summary>
internal static class OpenAiEndpoints
{
    /// <summary>The models <c>GET /v1/models</c> lists (every model name is answered, listed or not).</summary>
    public static readonly string[] ListedModels =
    [
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4.1-mini",
        "text-embedding-3-small",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
    ];

    private const string SystemFingerprint = "fp_custos_demo";
    private const int DefaultDimensions = 8;
    private const int MaxDimensions = 4096;
    private const int MaxChoices = 128;

    /// <summary><c>POST /v1/chat/completions</c>.</summary>
    public static async Task ChatAsync(HttpContext context, JsonElement root, string model, MockMode mode)
    {
        if (RefusedChat(root) is { } refused)
        {
            await Wire.ErrorAsync(context, WireFlavor.OpenAi, StatusCodes.Status400BadRequest, "invalid_request_error", refused.Message, refused.Param, refused.Code);
            return;
        }

        if (!TryGetN(context, root, out var n, out var invalidN))
        {
            await invalidN;
            return;
        }

        var prompt = new PromptText();
        prompt.AddMessages(root);
        prompt.AddTools(root);
        if (DemoTools.OpenAiCalls(root, prompt.LastUserText, MaxOutput(root)) is { } calls)
        {
            await ToolCallsAsync(context, root, model, mode, n, prompt.CountTokens(), calls);
            return;
        }

        var reply = DemoText.Limit(DemoText.Stop(DemoText.Reply(prompt.LastUserText), root, "stop", out _), MaxOutput(root), out var cut) + (mode == MockMode.SplitEmoji ? " \U0001F600" : string.Empty);
        var finish = cut ? "length" : "stop";
        var usage = mode == MockMode.NoUsage ? null : new Usage(prompt.CountTokens(), n * DemoText.Count(reply));
        var id = Wire.NewId("chatcmpl-");
        var created = Wire.Now();
        Wire.SetProviderHeaders(context, WireFlavor.OpenAi);

        if (!IsStream(root) || mode == MockMode.IgnoresStream)
        {
            await Wire.WriteJsonAsync(
                context,
                StatusCodes.Status200OK,
                w =>
                {
                    w.WriteStartObject();
                    WriteHeader(w, id, "chat.completion", created, model);
                    w.WriteStartArray("choices");
                    for (var i = 0; i < n; i++)
                    {
                        w.WriteStartObject();
                        w.WriteNumber("index", i);
                        w.WriteStartObject("message");
                        w.WriteString("role", "assistant");
                        w.WriteString("content", reply);
                        WriteMessageEnd(w, finish);
                    }

                    WriteCompletionEnd(w, usage);
                },
                cut: mode == MockMode.CutStream);
            return;
        }

        var includeUsage = usage is not null && IncludeUsage(root);
        using var sse = new SseWriter(context, sized: mode == MockMode.SizedStream);
        if (mode == MockMode.CutFirstEvent)
        {
            await sse.SendPartAsync("data: {\"id\":\""u8.ToArray());
            await MockModes.CutAsync(context);
            return;
        }

        var chunks = DemoText.Chunks(mode == MockMode.SplitEmoji ? reply[..^2] : reply);
        for (var i = 0; i < n; i++)
        {
            var index = i;
            await sse.SendAsync(null, w => WriteChatChunk(w, id, created, model, includeUsage, index, role: true, content: string.Empty, finish: null));
            for (var c = 0; c < chunks.Count; c++)
            {
                if (mode == MockMode.CutStream && c == 2)
                {
                    await MockModes.CutAsync(context);
                    return;
                }

                var chunk = chunks[c];
                await sse.SendAsync(null, w => WriteChatChunk(w, id, created, model, includeUsage, index, role: false, content: chunk, finish: null));
            }

            if (mode == MockMode.SplitEmoji)
            {
                // Half a surrogate pair is valid JSON but no text: Utf8JsonWriter will not write it, so it goes in raw.
                foreach (var half in (string[])["\"\\ud83d\"", "\"\\ude00\""])
                {
                    await sse.SendAsync(null, w => WriteChatChunk(w, id, created, model, includeUsage, index, role: false, content: null, finish: null, rawContent: half));
                }
            }

            await sse.SendAsync(null, w => WriteChatChunk(w, id, created, model, includeUsage, index, role: false, content: null, finish: finish));
        }

        if (includeUsage)
        {
            await sse.SendAsync(null, w => WriteUsageChunk(w, id, "chat.completion.chunk", created, model, usage!, chat: true));
        }

        await sse.SendDoneAsync();
    }

    /// <summary>
    /// Answers a chat request with <paramref name="calls"/> to its tools (see <see cref="DemoTools"/>), in every one of its
    /// <paramref name="n"/> choices, as OpenAI does: a message without content whose <c>tool_calls</c> hold them,
    /// <c>finish_reason</c> <c>tool_calls</c>; streamed, each call's id and name first, then its arguments in pieces.
    /// </summary>
    private static async Task ToolCallsAsync(HttpContext context, JsonElement root, string model, MockMode mode, int n, int promptTokens, List<DemoToolCall> calls)
    {
        const string finish = "tool_calls";
        var usage = mode == MockMode.NoUsage ? null : new Usage(promptTokens, n * DemoTools.CountTokens(calls));
        var id = Wire.NewId("chatcmpl-");
        var created = Wire.Now();
        Wire.SetProviderHeaders(context, WireFlavor.OpenAi);
        if (!IsStream(root) || mode == MockMode.IgnoresStream)
        {
            await Wire.WriteJsonAsync(context, StatusCodes.Status200OK, w =>
            {
                w.WriteStartObject();
                WriteHeader(w, id, "chat.completion", created, model);
                w.WriteStartArray("choices");
                for (var i = 0; i < n; i++)
                {
                    w.WriteStartObject();
                    w.WriteNumber("index", i);
                    w.WriteStartObject("message");
                    w.WriteString("role", "assistant");
                    w.WriteNull("content");
                    w.WriteStartArray("tool_calls");
                    foreach (var call in calls)
                    {
                        w.WriteStartObject();
                        w.WriteString("id", CallId(call, i));
                        w.WriteString("type", "function");
                        w.WriteStartObject("function");
                        w.WriteString("name", call.Name);
                        w.WriteString("arguments", call.Arguments);
                        w.WriteEndObject();
                        w.WriteEndObject();
                    }

                    w.WriteEndArray();
                    WriteMessageEnd(w, finish);
                }

                WriteCompletionEnd(w, usage);
            });
            return;
        }

        var includeUsage = usage is not null && IncludeUsage(root);
        using var sse = new SseWriter(context, sized: mode == MockMode.SizedStream);
        for (var i = 0; i < n; i++)
        {
            var index = i;
            for (var c = 0; c < calls.Count; c++)
            {
                var (call, callIndex) = (calls[c], c);
                await sse.SendAsync(null, w => WriteToolChunk(w, id, created, model, includeUsage, index, callIndex == 0, callIndex, call, null, null));
                foreach (var piece in DemoTools.Chunks(call.Arguments))
                {
                    await sse.SendAsync(null, w => WriteToolChunk(w, id, created, model, includeUsage, index, false, callIndex, null, piece, null));
                }
            }

            await sse.SendAsync(null, w => WriteToolChunk(w, id, created, model, includeUsage, index, false, 0, null, null, finish));
        }

        if (includeUsage)
        {
            await sse.SendAsync(null, w => WriteUsageChunk(w, id, "chat.completion.chunk", created, model, usage!, chat: true));
        }

        await sse.SendDoneAsync();
    }

    /// <summary>A call's id in choice <paramref name="choice"/>: each choice's calls are its own.</summary>
    private static string CallId(DemoToolCall call, int choice) =>
        choice == 0 ? call.Id : string.Concat(call.Id, "_", choice.ToString(System.Globalization.CultureInfo.InvariantCulture));

    /// <summary>
    /// A chunk of a streamed tool call: its start (<paramref name="start"/>: id, type, name and empty arguments; with
    /// <paramref name="role"/>, the message's role and null content before it), a piece of its
    /// <paramref name="arguments"/>, or, with <paramref name="finish"/>, the choice's empty last delta.
    /// </summary>
    private static void WriteToolChunk(Utf8JsonWriter w, string id, long created, string model, bool includeUsage, int index, bool role, int callIndex,
        DemoToolCall? start, string? arguments, string? finish)
    {
        WriteChunkStart(w, id, created, model, index);
        if (role)
        {
            w.WriteString("role", "assistant");
            w.WriteNull("content");
        }

        if (finish is null)
        {
            w.WriteStartArray("tool_calls");
            w.WriteStartObject();
            w.WriteNumber("index", callIndex);
            if (start is not null)
            {
                w.WriteString("id", CallId(start, index));
                w.WriteString("type", "function");
            }

            w.WriteStartObject("function");
            if (start is not null)
            {
                w.WriteString("name", start.Name);
            }

            w.WriteString("arguments", arguments ?? string.Empty);
            w.WriteEndObject();
            w.WriteEndObject();
            w.WriteEndArray();
        }

        WriteChunkEnd(w, role, finish, includeUsage);
    }

    /// <summary><c>POST /v1/completions</c> (legacy text completions).</summary>
    public static async Task CompletionsAsync(HttpContext context, JsonElement root, string model, MockMode mode)
    {
        if (!TryGetN(context, root, out var n, out var invalidN))
        {
            await invalidN;
            return;
        }

        // prompt: a string, an array of strings, a token array or an array of token arrays; one reply per prompt.
        var replies = new List<string>();
        var promptTokens = 0;
        var cutAny = false;
        if (root.TryGetProperty("prompt", out var prompt))
        {
            foreach (var item in Inputs(prompt))
            {
                promptTokens += item.Tokens ?? DemoText.Count(item.Text);
                replies.Add(DemoText.Limit(DemoText.Stop(DemoText.Reply(item.Text), root, "stop", out _), MaxOutput(root), out var itemCut));
                cutAny |= itemCut;
            }
        }

        if (replies.Count == 0)
        {
            replies.Add(DemoText.Reply(null));
        }

        var completionTokens = 0;
        foreach (var reply in replies)
        {
            completionTokens += n * DemoText.Count(reply);
        }

        var usage = mode == MockMode.NoUsage ? null : new Usage(promptTokens, completionTokens);
        var id = Wire.NewId("cmpl-");
        var created = Wire.Now();
        Wire.SetProviderHeaders(context, WireFlavor.OpenAi);

        if (!IsStream(root))
        {
            await Wire.WriteJsonAsync(
                context,
                StatusCodes.Status200OK,
                w =>
                {
                    w.WriteStartObject();
                    WriteHeader(w, id, "text_completion", created, model);
                    w.WriteStartArray("choices");
                    for (var p = 0; p < replies.Count; p++)
                    {
                        for (var i = 0; i < n; i++)
                        {
                            WriteTextChoice(w, replies[p], (p * n) + i, cutAny ? "length" : "stop");
                        }
                    }

                    w.WriteEndArray();
                    if (usage is not null)
                    {
                        WriteUsage(w, usage, chat: false);
                    }

                    w.WriteString("system_fingerprint", SystemFingerprint);
                    w.WriteEndObject();
                },
                cut: mode == MockMode.CutStream);
            return;
        }

        var includeUsage = usage is not null && IncludeUsage(root);
        using var sse = new SseWriter(context);
        for (var p = 0; p < replies.Count; p++)
        {
            var chunks = DemoText.Chunks(replies[p]);
            for (var i = 0; i < n; i++)
            {
                var index = (p * n) + i;
                for (var c = 0; c < chunks.Count; c++)
                {
                    if (mode == MockMode.CutStream && c == 2)
                    {
                        await MockModes.CutAsync(context);
                        return;
                    }

                    var chunk = chunks[c];
                    await sse.SendAsync(null, w => WriteTextChunk(w, id, created, model, includeUsage, index, chunk, finish: null));
                }

                await sse.SendAsync(null, w => WriteTextChunk(w, id, created, model, includeUsage, index, string.Empty, finish: cutAny ? "length" : "stop"));
            }
        }

        if (includeUsage)
        {
            await sse.SendAsync(null, w => WriteUsageChunk(w, id, "text_completion", created, model, usage!, chat: false));
        }

        await sse.SendDoneAsync();
    }

    /// <summary><c>POST /v1/embeddings</c>: deterministic unit vectors seeded by each input.</summary>
    public static async Task EmbeddingsAsync(HttpContext context, JsonElement root, string model, MockMode mode)
    {
        if (!root.TryGetProperty("input", out var input) || input.ValueKind is not (JsonValueKind.String or JsonValueKind.Array))
        {
            await Wire.BadRequestAsync(context, WireFlavor.OpenAi, "'input' is a required property and must be a string or an array.", "input");
            return;
        }

        if (input.ValueKind == JsonValueKind.String ? input.GetString()!.Length == 0 : input.GetArrayLength() == 0)
        {
            // OpenAI embeds nothing: an empty string or list is refused, in these words and without a param.
            await Wire.BadRequestAsync(context, WireFlavor.OpenAi, "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.");
            return;
        }

        var dimensions = DefaultDimensions;
        if (root.TryGetProperty("dimensions", out var dims) && dims.ValueKind != JsonValueKind.Null)
        {
            if (!dims.TryGetInt32(out dimensions) || dimensions < 1 || dimensions > MaxDimensions)
            {
                await Wire.BadRequestAsync(context, WireFlavor.OpenAi, $"Invalid value for 'dimensions': must be an integer between 1 and {MaxDimensions}.", "dimensions");
                return;
            }
        }

        var base64 = false;
        if (root.TryGetProperty("encoding_format", out var format) && format.ValueKind != JsonValueKind.Null)
        {
            if (format.ValueEquals("base64"u8))
            {
                base64 = true;
            }
            else if (!format.ValueEquals("float"u8))
            {
                await Wire.BadRequestAsync(context, WireFlavor.OpenAi, "Invalid value for 'encoding_format': expected 'float' or 'base64'.", "encoding_format");
                return;
            }
        }

        var items = Inputs(input).ToList();
        var promptTokens = 0;
        foreach (var item in items)
        {
            promptTokens += item.Tokens ?? DemoText.Count(item.Text);
        }

        Wire.SetProviderHeaders(context, WireFlavor.OpenAi);
        await Wire.WriteJsonAsync(
            context,
            StatusCodes.Status200OK,
            w =>
            {
                var vector = new float[dimensions];
                var bytes = base64 ? new byte[dimensions * sizeof(float)] : [];
                w.WriteStartObject();
                w.WriteString("object", "list");
                w.WriteStartArray("data");
                for (var i = 0; i < items.Count; i++)
                {
                    Embed(items[i].Text, vector);
                    w.WriteStartObject();
                    w.WriteString("object", "embedding");
                    w.WriteNumber("index", i);
                    if (base64)
                    {
                        for (var d = 0; d < vector.Length; d++)
                        {
                            BinaryPrimitives.WriteSingleLittleEndian(bytes.AsSpan(d * sizeof(float)), vector[d]);
                        }

                        w.WriteBase64String("embedding", bytes);
                    }
                    else
                    {
                        w.WriteStartArray("embedding");
                        foreach (var value in vector)
                        {
                            w.WriteNumberValue(value);
                        }

                        w.WriteEndArray();
                    }

                    w.WriteEndObject();
                }

                w.WriteEndArray();
                w.WriteString("model", model);
                if (mode != MockMode.NoUsage)
                {
                    w.WriteStartObject("usage");
                    w.WriteNumber("prompt_tokens", promptTokens);
                    w.WriteNumber("total_tokens", promptTokens);
                    w.WriteEndObject();
                }

                w.WriteEndObject();
            },
            cut: mode == MockMode.CutStream);
    }

    /// <summary><c>GET /v1/models</c>.</summary>
    public static Task ModelsAsync(HttpContext context)
    {
        Wire.SetProviderHeaders(context, WireFlavor.OpenAi);
        return Wire.WriteJsonAsync(context, StatusCodes.Status200OK, w =>
        {
            w.WriteStartObject();
            w.WriteString("object", "list");
            w.WriteStartArray("data");
            foreach (var id in ListedModels)
            {
                w.WriteStartObject();
                w.WriteString("id", id);
                w.WriteString("object", "model");
                w.WriteNumber("created", 1_700_000_000);
                w.WriteString("owned_by", "custos-demo");
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteEndObject();
        });
    }

    /// <summary>Fills <paramref name="vector"/> with a unit vector seeded by <paramref name="text"/> (FNV-1a, then SplitMix64).</summary>
    internal static void Embed(string text, Span<float> vector)
    {
        var state = 14695981039346656037UL;
        foreach (var c in text)
        {
            state = (state ^ c) * 1099511628211UL;
        }

        var norm = 0.0;
        for (var d = 0; d < vector.Length; d++)
        {
            state += 0x9E3779B97F4A7C15UL;
            var z = state;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            z ^= z >> 31;
            var value = ((z >> 40) / (double)(1UL << 24) * 2.0) - 1.0;
            vector[d] = (float)value;
            norm += value * value;
        }

        var scale = norm > 0 ? 1.0 / Math.Sqrt(norm) : 0.0;
        for (var d = 0; d < vector.Length; d++)
        {
            vector[d] = (float)(vector[d] * scale);
        }
    }

    private static bool IsStream(JsonElement root) =>
        root.TryGetProperty("stream", out var stream) && stream.ValueKind == JsonValueKind.True;

    private static bool IncludeUsage(JsonElement root) =>
        root.TryGetProperty("stream_options", out var options)
        && options.ValueKind == JsonValueKind.Object
        && options.TryGetProperty("include_usage", out var include)
        && include.ValueKind == JsonValueKind.True;

    /// <summary>
    /// What OpenAI refuses in a chat request before a model sees it, in its words: <c>messages</c> missing, not an array
    /// or empty, and a token limit below 1. Null when none of these.
    /// </summary>
    internal static (string Message, string Param, string Code)? RefusedChat(JsonElement root)
    {
        if (!root.TryGetProperty("messages", out var messages) || messages.ValueKind == JsonValueKind.Null)
        {
            return ("Missing required parameter: 'messages'.", "messages", "missing_required_parameter");
        }

        if (messages.ValueKind != JsonValueKind.Array)
        {
            return ($"Invalid type for 'messages': expected an array of objects, but got {TypeName(messages)} instead.", "messages", "invalid_type");
        }

        if (messages.GetArrayLength() == 0)
        {
            return ("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.", "messages", "empty_array");
        }

        foreach (var name in (ReadOnlySpan<string>)["max_tokens", "max_completion_tokens"])
        {
            if (root.TryGetProperty(name, out var limit) && limit.ValueKind == JsonValueKind.Number && limit.TryGetInt64(out var value) && value < 1)
            {
                return ($"Invalid '{name}': integer below minimum value. Expected a value >= 1, but got {value} instead.", name, "integer_below_min_value");
            }
        }

        return null;

        static string TypeName(JsonElement value) => value.ValueKind switch
        {
            JsonValueKind.String => "a string",
            JsonValueKind.Number => "a number",
            JsonValueKind.Object => "an object",
            _ => "a boolean",
        };
    }

    private static bool TryGetN(HttpContext context, JsonElement root, out int n, out Task error)
    {
        n = 1;
        error = Task.CompletedTask;
        if (!root.TryGetProperty("n", out var value) || value.ValueKind == JsonValueKind.Null)
        {
            return true;
        }

        if (value.TryGetInt32(out n) && n >= 1 && n <= MaxChoices)
        {
            return true;
        }

        error = Wire.BadRequestAsync(context, WireFlavor.OpenAi, $"Invalid value for 'n': must be an integer between 1 and {MaxChoices}.", "n");
        return false;
    }

    /// <summary>The items of an <c>input</c> or <c>prompt</c>: strings, or token arrays (whose text is the ids, for seeding).</summary>
    private static IEnumerable<(string Text, int? Tokens)> Inputs(JsonElement value)
    {
        if (value.ValueKind == JsonValueKind.String)
        {
            yield return (value.GetString() ?? string.Empty, null);
            yield break;
        }

        if (value.ValueKind != JsonValueKind.Array)
        {
            yield break;
        }

        if (value.GetArrayLength() > 0 && value[0].ValueKind == JsonValueKind.Number)
        {
            yield return (value.GetRawText(), value.GetArrayLength());
            yield break;
        }

        foreach (var item in value.EnumerateArray())
        {
            if (item.ValueKind == JsonValueKind.String)
            {
                yield return (item.GetString() ?? string.Empty, null);
            }
            else if (item.ValueKind == JsonValueKind.Array)
            {
                yield return (item.GetRawText(), item.GetArrayLength());
            }
        }
    }

    private static void WriteHeader(Utf8JsonWriter w, string id, string type, long created, string model)
    {
        w.WriteString("id", id);
        w.WriteString("object", type);
        w.WriteNumber("created", created);
        w.WriteString("model", model);
    }

    private static void WriteUsage(Utf8JsonWriter w, Usage usage, bool chat)
    {
        w.WriteStartObject("usage");
        w.WriteNumber("prompt_tokens", usage.Prompt);
        w.WriteNumber("completion_tokens", usage.Completion);
        w.WriteNumber("total_tokens", usage.Prompt + usage.Completion);
        if (chat)
        {
            w.WriteStartObject("prompt_tokens_details");
            w.WriteNumber("cached_tokens", 0);
            w.WriteNumber("audio_tokens", 0);
            w.WriteEndObject();
            w.WriteStartObject("completion_tokens_details");
            w.WriteNumber("reasoning_tokens", 0);
            w.WriteNumber("audio_tokens", 0);
            w.WriteNumber("accepted_prediction_tokens", 0);
            w.WriteNumber("rejected_prediction_tokens", 0);
            w.WriteEndObject();
        }

        w.WriteEndObject();
    }

    private static void WriteChatChunk(Utf8JsonWriter w, string id, long created, string model, bool includeUsage, int index, bool role, string? content, string? finish, string? rawContent = null)
    {
        WriteChunkStart(w, id, created, model, index);
        if (role)
        {
            w.WriteString("role", "assistant");
        }

        if (content is not null)
        {
            w.WriteString("content", content);
        }
        else if (rawContent is not null)
        {
            w.WritePropertyName("content");
            w.WriteRawValue(rawContent, skipInputValidation: true);
        }

        WriteChunkEnd(w, role, finish, includeUsage);
    }

    /// <summary>A chat chunk up to its choice's open <c>delta</c>: header, tier, fingerprint, the one choice's index.</summary>
    private static void WriteChunkStart(Utf8JsonWriter w, string id, long created, string model, int index)
    {
        w.WriteStartObject();
        WriteHeader(w, id, "chat.completion.chunk", created, model);
        w.WriteString("service_tier", "default");
        w.WriteString("system_fingerprint", SystemFingerprint);
        w.WriteStartArray("choices");
        w.WriteStartObject();
        w.WriteNumber("index", index);
        w.WriteStartObject("delta");
    }

    /// <summary>
    /// A chat chunk from its <c>delta</c>'s end: the first chunk's null refusal (<paramref name="role"/>), the finish reason,
    /// and the null usage of every chunk but the last when the client asked for usage.
    /// </summary>
    private static void WriteChunkEnd(Utf8JsonWriter w, bool role, string? finish, bool includeUsage)
    {
        if (role)
        {
            w.WriteNull("refusal");
        }

        w.WriteEndObject();
        w.WriteNull("logprobs");
        Wire.WriteStringOrNull(w, "finish_reason", finish);
        w.WriteEndObject();
        w.WriteEndArray();
        if (includeUsage)
        {
            w.WriteNull("usage");
        }

        w.WriteEndObject();
    }

    /// <summary>A chat completion's message from its content on: no refusal, no annotations, and its choice's finish reason.</summary>
    private static void WriteMessageEnd(Utf8JsonWriter w, string finish)
    {
        w.WriteNull("refusal");
        w.WriteStartArray("annotations");
        w.WriteEndArray();
        w.WriteEndObject();
        w.WriteNull("logprobs");
        w.WriteString("finish_reason", finish);
        w.WriteEndObject();
    }

    /// <summary>A chat completion from the end of its choices: the usage when there is one, the tier and the fingerprint.</summary>
    private static void WriteCompletionEnd(Utf8JsonWriter w, Usage? usage)
    {
        w.WriteEndArray();
        if (usage is not null)
        {
            WriteUsage(w, usage, chat: true);
        }

        w.WriteString("service_tier", "default");
        w.WriteString("system_fingerprint", SystemFingerprint);
        w.WriteEndObject();
    }

    private static void WriteTextChunk(Utf8JsonWriter w, string id, long created, string model, bool includeUsage, int index, string text, string? finish)
    {
        w.WriteStartObject();
        WriteHeader(w, id, "text_completion", created, model);
        w.WriteStartArray("choices");
        WriteTextChoice(w, text, index, finish);
        w.WriteEndArray();
        w.WriteString("system_fingerprint", SystemFingerprint);
        if (includeUsage)
        {
            w.WriteNull("usage");
        }

        w.WriteEndObject();
    }

    private static void WriteTextChoice(Utf8JsonWriter w, string text, int index, string? finish)
    {
        w.WriteStartObject();
        w.WriteString("text", text);
        w.WriteNumber("index", index);
        w.WriteNull("logprobs");
        Wire.WriteStringOrNull(w, "finish_reason", finish);
        w.WriteEndObject();
    }

    private static void WriteUsageChunk(Utf8JsonWriter w, string id, string type, long created, string model, Usage usage, bool chat)
    {
        w.WriteStartObject();
        WriteHeader(w, id, type, created, model);
        if (chat)
        {
            w.WriteString("service_tier", "default");
        }

        w.WriteString("system_fingerprint", SystemFingerprint);
        w.WriteStartArray("choices");
        w.WriteEndArray();
        WriteUsage(w, usage, chat);
        w.WriteEndObject();
    }

    private sealed record Usage(int Prompt, int Completion);

    /// <summary>The request's output limit: the smaller of <c>max_tokens</c> and <c>max_completion_tokens</c> given as numbers.</summary>
    private static long? MaxOutput(JsonElement root)
    {
        long? limit = null;
        foreach (var name in (ReadOnlySpan<string>)["max_tokens", "max_completion_tokens"])
        {
            if (root.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Number && value.TryGetInt64(out var tokens))
            {
                limit = limit is { } other ? Math.Min(other, tokens) : tokens;
            }
        }

        return limit;
    }
}
