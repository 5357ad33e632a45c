using System.Buffers;
using System.Text;
using System.Text.Json;

namespace Custos.Gateway.Demo;

/// <summary>One tool call of a demo answer: its id, the tool's name, and its arguments as compact JSON.</summary>
internal sealed record DemoToolCall(string Id, string Name, string Arguments);

/// <summary>
/// When and how the demo upstream calls the tools a request offers, deterministically, so that an agent's loop can be run
/// against it: it calls them when the conversation waits on the model (its last message is the user's), and answers in
/// text once their results are fed back (a <c>tool</c> message, an Anthropic <c>tool_result</c> block), as a model whose
/// tools answered would. <c>tool_choice</c> is obeyed: <c>none</c> calls nothing; <c>required</c> (Anthropic's
/// <c>any</c>) or a named tool calls even after results; a named tool is the only one called; otherwise every tool is
/// called at once, up to <see cref="MaxParallelCalls"/>, unless parallel calls are switched off
/// (<c>parallel_tool_calls: false</c>, Anthropic's <c>disable_parallel_tool_use</c>), when only the first is. Each call's
/// arguments fill every property of the tool's schema: a string with the start of the user's last message, a number
/// with 1, a boolean with true, an array or object empty. Calls that would take more output tokens than the request's
/// <c>max_tokens</c> are not made: the answer is text, cut there.
/// </summary>
internal static class DemoTools
{
    /// <summary>The most tools one answer calls at once.</summary>
    public const int MaxParallelCalls = 3;

    private const int SnippetLength = 60;

    /// <summary>The calls an OpenAI chat request is answered with, or null to answer in text.</summary>
    public static List<DemoToolCall>? OpenAiCalls(JsonElement root, string? userText, long? maxTokens)
    {
        if (!root.TryGetProperty("tools", out var tools) || tools.ValueKind != JsonValueKind.Array || tools.GetArrayLength() == 0)
        {
            return null;
        }

        string? named = null;
        var forced = false;
        if (root.TryGetProperty("tool_choice", out var choice))
        {
            if (choice.ValueKind == JsonValueKind.String)
            {
                if (choice.ValueEquals("none"u8))
                {
                    return null;
                }

                forced = choice.ValueEquals("required"u8);
            }
            else if (choice.ValueKind == JsonValueKind.Object && choice.TryGetProperty("function", out var function)
                && function.ValueKind == JsonValueKind.Object && function.TryGetProperty("name", out var name) && name.ValueKind == JsonValueKind.String)
            {
                named = name.GetString();
                forced = true;
            }
        }

        if (!forced && LastRole(root) is "tool" or "function")
        {
            return null; // the results are in: the model answers
        }

        var parallel = !(root.TryGetProperty("parallel_tool_calls", out var p) && p.ValueKind == JsonValueKind.False);
        var calls = new List<DemoToolCall>();
        foreach (var tool in tools.EnumerateArray())
        {
            if (tool.ValueKind != JsonValueKind.Object || !tool.TryGetProperty("function", out var function) || function.ValueKind != JsonValueKind.Object
                || !function.TryGetProperty("name", out var nameValue) || nameValue.ValueKind != JsonValueKind.String)
            {
                continue;
            }

            var name = nameValue.GetString()!;
            if (named is not null && name != named)
            {
                continue;
            }

            var schema = function.TryGetProperty("parameters", out var parameters) ? parameters : default;
            calls.Add(new DemoToolCall(Wire.NewId("call_"), name, Arguments(schema, userText)));
            if (named is not null || !parallel || calls.Count == MaxParallelCalls)
            {
                break;
            }
        }

        return Fits(calls, maxTokens);
    }

    /// <summary>The calls an Anthropic Messages request is answered with, or null to answer in text.</summary>
    public static List<DemoToolCall>? AnthropicCalls(JsonElement root, string? userText, long? maxTokens)
    {
        if (!root.TryGetProperty("tools", out var tools) || tools.ValueKind != JsonValueKind.Array || tools.GetArrayLength() == 0)
        {
            return null;
        }

        string? named = null;
        var forced = false;
        var parallel = true;
        if (root.TryGetProperty("tool_choice", out var choice) && choice.ValueKind == JsonValueKind.Object)
        {
            if (choice.TryGetProperty("type", out var type) && type.ValueKind == JsonValueKind.String)
            {
                if (type.ValueEquals("none"u8))
                {
                    return null;
                }

                forced = type.ValueEquals("any"u8) || type.ValueEquals("tool"u8);
                if (type.ValueEquals("tool"u8) && choice.TryGetProperty("name", out var name) && name.ValueKind == JsonValueKind.String)
                {
                    named = name.GetString();
                }
            }

            parallel = !(choice.TryGetProperty("disable_parallel_tool_use", out var disable) && disable.ValueKind == JsonValueKind.True);
        }

        if (!forced && LastMessageHasToolResult(root))
        {
            return null;
        }

        var calls = new List<DemoToolCall>();
        foreach (var tool in tools.EnumerateArray())
        {
            // Client tools have an input_schema; server tools (web search and the like) a type of their own: not called.
            if (tool.ValueKind != JsonValueKind.Object || !tool.TryGetProperty("input_schema", out var schema)
                || !tool.TryGetProperty("name", out var nameValue) || nameValue.ValueKind != JsonValueKind.String)
            {
                continue;
            }

            var name = nameValue.GetString()!;
            if (named is not null && name != named)
            {
                continue;
            }

            calls.Add(new DemoToolCall(Wire.NewId("toolu_"), name, Arguments(schema, userText)));
            if (named is not null || !parallel || calls.Count == MaxParallelCalls)
            {
                break;
            }
        }

        return Fits(calls, maxTokens);
    }

    /// <summary>
    /// <paramref name="calls"/>, or null when there are none or they would take more than <paramref name="maxTokens"/>: the
    /// demo then answers in text, cut there, rather than report more output than the request allowed.
    /// </summary>
    private static List<DemoToolCall>? Fits(List<DemoToolCall> calls, long? maxTokens) =>
        calls.Count > 0 && (maxTokens is not { } most || CountTokens(calls) <= most) ? calls : null;

    /// <summary>Output tokens of <paramref name="calls"/>: each tool's name and arguments.</summary>
    public static int CountTokens(List<DemoToolCall> calls)
    {
        var tokens = 0;
        foreach (var call in calls)
        {
            tokens += DemoText.Count(call.Name) + DemoText.Count(call.Arguments);
        }

        return tokens;
    }

    /// <summary>Splits <paramref name="arguments"/> into the pieces a stream sends them in.</summary>
    public static List<string> Chunks(string arguments)
    {
        const int size = 16;
        var chunks = new List<string>();
        var start = 0;
        while (start < arguments.Length)
        {
            var length = Math.Min(size, arguments.Length - start);
            if (length > 1 && char.IsHighSurrogate(arguments[start + length - 1]))
            {
                length--; // never half a character in a piece
            }

            chunks.Add(arguments.Substring(start, length));
            start += length;
        }

        return chunks;
    }

    /// <summary>Arguments for a tool whose JSON schema is <paramref name="schema"/>: every property filled (see the class).</summary>
    private static string Arguments(JsonElement schema, string? userText)
    {
        var snippet = string.IsNullOrWhiteSpace(userText) ? "demo" : userText.Trim();
        if (snippet.Length > SnippetLength)
        {
            snippet = snippet[..(char.IsHighSurrogate(snippet[SnippetLength - 1]) ? SnippetLength - 1 : SnippetLength)];
        }

        var buffer = new ArrayBufferWriter<byte>(128);
        using (var w = new Utf8JsonWriter(buffer, Wire.WriterOptions))
        {
            w.WriteStartObject();
            if (schema.ValueKind == JsonValueKind.Object && schema.TryGetProperty("properties", out var properties) && properties.ValueKind == JsonValueKind.Object)
            {
                foreach (var property in properties.EnumerateObject())
                {
                    var type = property.Value.ValueKind == JsonValueKind.Object && property.Value.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String
                        ? t.GetString()
                        : "string";
                    switch (type)
                    {
                        case "integer" or "number": w.WriteNumber(property.Name, 1); break;
                        case "boolean": w.WriteBoolean(property.Name, true); break;
                        case "array": w.WriteStartArray(property.Name); w.WriteEndArray(); break;
                        case "object": w.WriteStartObject(property.Name); w.WriteEndObject(); break;
                        case "null": w.WriteNull(property.Name); break;
                        default: w.WriteString(property.Name, snippet); break;
                    }
                }
            }

            w.WriteEndObject();
        }

        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    private static string? LastRole(JsonElement root)
    {
        if (!root.TryGetProperty("messages", out var messages) || messages.ValueKind != JsonValueKind.Array || messages.GetArrayLength() == 0)
        {
            return null;
        }

        var last = messages[messages.GetArrayLength() - 1];
        return last.ValueKind == JsonValueKind.Object && last.TryGetProperty("role", out var role) && role.ValueKind == JsonValueKind.String ? role.GetString() : null;
    }

    private static bool LastMessageHasToolResult(JsonElement root)
    {
        if (!root.TryGetProperty("messages", out var messages) || messages.ValueKind != JsonValueKind.Array || messages.GetArrayLength() == 0)
        {
            return false;
        }

        var last = messages[messages.GetArrayLength() - 1];
        if (last.ValueKind != JsonValueKind.Object || !last.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.Array)
        {
            return false;
        }

        foreach (var block in content.EnumerateArray())
        {
            if (block.ValueKind == JsonValueKind.Object && block.TryGetProperty("type", out var type) && type.ValueKind == JsonValueKind.String
                && type.ValueEquals("tool_result"u8))
            {
                return true;
            }
        }

        return false;
    }
}
