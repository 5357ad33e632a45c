using System.Text;
using System.Text.Json;
using Custos.Metering;

namespace Custos.Gateway.Demo;

/// <summary>
/// The demo's deterministic replies and usage. Usage is computed once per request from the request alone,
/// so a streamed and a non-streamed answer to the same request report the same numbers.
/// </summary>
internal static class DemoText
{
    /// <summary>Tokens added per prompt message (role and framing), a fixed demo convention.</summary>
    public const int PerMessageOverhead = 4;

    /// <summary>Tokens added once per chat prompt (reply primer), a fixed demo convention.</summary>
    public const int PromptOverhead = 2;

    private const int SnippetLength = 60;
    private const int WordsPerChunk = 3;

    /// <summary>The demo reply echoing the start of <paramref name="userText"/>.</summary>
    public static string Reply(string? userText)
    {
        var text = string.IsNullOrWhiteSpace(userText) ? "(nothing)" : userText.Trim();
        if (text.Length > SnippetLength)
        {
            var length = char.IsHighSurrogate(text[SnippetLength - 1]) ? SnippetLength - 1 : SnippetLength;
            text = text[..length];
        }

        return $"[Custos demo upstream — not a real model] You said: {text}. This reply is deterministic.";
    }

    /// <summary>
    /// <paramref name="reply"/> cut to at most <paramref name="maxTokens"/> tokens, word by word, as a provider stops at a
    /// request's <c>max_tokens</c> (its finish reason then <c>length</c>, Anthropic's <c>max_tokens</c>); whole when it fits
    /// or there is no limit.
    /// </summary>
    public static string Limit(string reply, long? maxTokens, out bool cut)
    {
        cut = false;
        if (maxTokens is not { } limit || Count(reply) <= limit)
        {
            return reply;
        }

        cut = true;
        var text = reply;
        while (text.Length > 0 && Count(text) > limit)
        {
            var space = text.LastIndexOf(' ');
            text = space > 0 ? text[..space] : text[..^1];
        }

        return text;
    }

    /// <summary>
    /// <paramref name="reply"/> up to the first of the request's stop sequences in it, which is left out, as a provider
    /// stops there: OpenAI's <c>stop</c> (a string or a list of them), Anthropic's <c>stop_sequences</c>, named by
    /// <paramref name="field"/>. <paramref name="matched"/> is the sequence it stopped at, or null when none occurs.
    /// </summary>
    public static string Stop(string reply, JsonElement root, string field, out string? matched)
    {
        matched = null;
        if (!root.TryGetProperty(field, out var stop))
        {
            return reply;
        }

        var at = reply.Length;
        foreach (var sequence in stop.ValueKind == JsonValueKind.Array ? stop.EnumerateArray() : (IEnumerable<JsonElement>)[stop])
        {
            if (sequence.ValueKind == JsonValueKind.String && sequence.GetString() is { Length: > 0 } text
                && reply.IndexOf(text, StringComparison.Ordinal) is var index and >= 0 && index < at)
            {
                (at, matched) = (index, text);
            }
        }

        return reply[..at];
    }

    /// <summary>Tokens of <paramref name="text"/>.</summary>
    public static int Count(string text) => TokenCounter.Count(text.AsSpan());

    /// <summary>Splits <paramref name="text"/> into chunks of a few words; concatenated they give back the text exactly.</summary>
    public static List<string> Chunks(string text)
    {
        var chunks = new List<string>();
        var start = 0;
        var words = 0;
        for (var i = 0; i < text.Length; i++)
        {
            if (text[i] == ' ' && ++words == WordsPerChunk)
            {
                chunks.Add(text[start..(i + 1)]);
                start = i + 1;
                words = 0;
            }
        }

        if (start < text.Length)
        {
            chunks.Add(text[start..]);
        }

        return chunks;
    }

    /// <summary>
    /// The text of a message <c>content</c>: a string, or the <c>text</c> of each block of an array
    /// (OpenAI content parts, Anthropic content blocks, including the content of Anthropic tool results and the input of its tool uses),
    /// joined with newlines.
    /// </summary>
    public static string ContentText(JsonElement content)
    {
        switch (content.ValueKind)
        {
            case JsonValueKind.String:
                return content.GetString() ?? string.Empty;
            case JsonValueKind.Array:
                var text = new StringBuilder();
                AppendBlocks(content, text);
                return text.ToString();
            default:
                return string.Empty;
        }
    }

    private static void AppendBlocks(JsonElement blocks, StringBuilder text)
    {
        foreach (var block in blocks.EnumerateArray())
        {
            if (block.ValueKind == JsonValueKind.String)
            {
                Append(text, block.GetString());
            }
            else if (block.ValueKind == JsonValueKind.Object)
            {
                if (block.TryGetProperty("text", out var t) && t.ValueKind == JsonValueKind.String)
                {
                    Append(text, t.GetString());
                }
                else if (block.TryGetProperty("input", out var input) && input.ValueKind == JsonValueKind.Object)
                {
                    Append(text, input.GetRawText()); // an Anthropic tool_use block, fed back
                }
                else if (block.TryGetProperty("content", out var inner))
                {
                    if (inner.ValueKind == JsonValueKind.String)
                    {
                        Append(text, inner.GetString());
                    }
                    else if (inner.ValueKind == JsonValueKind.Array)
                    {
                        AppendBlocks(inner, text);
                    }
                }
            }
        }

        static void Append(StringBuilder text, string? value)
        {
            if (text.Length > 0)
            {
                text.Append('\n');
            }

            text.Append(value);
        }
    }
}

/// <summary>Collects the prompt of a chat-style request and counts it with one tokenizer pass.</summary>
internal sealed class PromptText
{
    private readonly StringBuilder _text = new();
    private int _messages;

    /// <summary>The text of the last user message added, if any.</summary>
    public string? LastUserText { get; private set; }

    /// <summary>Adds every message of a <c>messages</c> array (OpenAI and Anthropic share the shape), if the request has one.</summary>
    public void AddMessages(JsonElement root)
    {
        if (!root.TryGetProperty("messages", out var messages) || messages.ValueKind != JsonValueKind.Array)
        {
            return;
        }

        foreach (var message in messages.EnumerateArray())
        {
            if (message.ValueKind != JsonValueKind.Object)
            {
                continue;
            }

            var isUser = message.TryGetProperty("role", out var role) && role.ValueKind == JsonValueKind.String && role.ValueEquals("user"u8);
            AddMessage(message.TryGetProperty("content", out var content) ? DemoText.ContentText(content) : string.Empty, isUser);
            if (message.TryGetProperty("tool_calls", out var calls) && calls.ValueKind == JsonValueKind.Array)
            {
                AddText(calls.GetRawText()); // an assistant's tool calls, fed back: read by the model as much as its text
            }
        }
    }

    /// <summary>
    /// Adds what the model reads besides the messages, as a provider bills it: the request's tool definitions
    /// (<c>tools</c>), if it has any.
    /// </summary>
    public void AddTools(JsonElement root)
    {
        if (root.TryGetProperty("tools", out var tools) && tools.ValueKind == JsonValueKind.Array)
        {
            AddText(tools.GetRawText());
        }
    }

    /// <summary>Adds text that is part of no message (no per-message overhead).</summary>
    private void AddText(string text)
    {
        if (_text.Length > 0)
        {
            _text.Append('\n');
        }

        _text.Append(text);
    }

    /// <summary>Adds one message (a system prompt counts as one).</summary>
    public void AddMessage(string text, bool isUser)
    {
        _messages++;
        if (_text.Length > 0)
        {
            _text.Append('\n');
        }

        _text.Append(text);
        if (isUser)
        {
            LastUserText = text;
        }
    }

    /// <summary>Prompt tokens: the text, plus <see cref="DemoText.PerMessageOverhead"/> per message and <see cref="DemoText.PromptOverhead"/>.</summary>
    public int CountTokens() =>
        DemoText.Count(_text.ToString()) + (_messages * DemoText.PerMessageOverhead) + DemoText.PromptOverhead;
}
