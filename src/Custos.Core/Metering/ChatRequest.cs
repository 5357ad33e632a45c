using System.Buffers;
using System.Text.Json;

namespace Custos.Metering;

/// <summary>Why a request body could not be understood.</summary>
public enum ParseError
{
    /// <summary>Understood.</summary>
    None,

    /// <summary>Not JSON, or not a JSON object.</summary>
    InvalidJson,

    /// <summary>A known field has the wrong type; <see cref="ChatRequest.ErrorField"/> names it.</summary>
    InvalidField,
}

/// <summary>
/// What the gateway needs to know of a model request, read in one pass with <see cref="Utf8JsonReader"/>
/// over the bytes already buffered, without building a DOM: the model, streaming, output ceilings and
/// where the prompt and the fields the gateway may rewrite sit in the body.
/// </summary>
public sealed class ChatRequest
{
    /// <summary>The requested model, or null when absent.</summary>
    public string? Model { get; private set; }

    /// <summary>Byte range of the model's JSON string value, quotes included.</summary>
    public Range ModelRange { get; private set; }

    /// <summary>Whether the client asked for a stream.</summary>
    public bool Stream { get; private set; }

    /// <summary><c>stream_options.include_usage</c> as sent, or null when absent.</summary>
    public bool? IncludeUsage { get; private set; }

    /// <summary>Byte range of the <c>stream_options</c> object value, when present.</summary>
    public Range? StreamOptionsRange { get; private set; }

    /// <summary>Byte range of the <c>include_usage</c> value inside <c>stream_options</c>, when present.</summary>
    public Range? IncludeUsageRange { get; private set; }

    /// <summary><c>max_tokens</c>, <c>max_completion_tokens</c> or Anthropic <c>max_tokens</c>.</summary>
    public long? MaxOutputTokens { get; private set; }

    /// <summary>Number of choices asked for (<c>n</c>).</summary>
    public long? N { get; private set; }

    /// <summary>Byte ranges of the prompt values (<c>system</c>, <c>messages</c>, <c>prompt</c>, <c>input</c>), in body order.</summary>
    public List<Range> PromptRanges { get; } = new(2);

    /// <summary>The field that failed, with <see cref="ParseError.InvalidField"/>.</summary>
    public string? ErrorField { get; private set; }

    /// <summary>Parses <paramref name="body"/>.</summary>
    public static ParseError TryParse(ReadOnlySpan<byte> body, out ChatRequest request)
    {
        request = new ChatRequest();
        try
        {
            return request.Parse(body);
        }
        catch (JsonException)
        {
            return ParseError.InvalidJson;
        }
    }

    private ParseError Parse(ReadOnlySpan<byte> body)
    {
        var reader = new Utf8JsonReader(body, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Disallow, MaxDepth = 128 });
        if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
        {
            return ParseError.InvalidJson;
        }

        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            if (reader.ValueTextEquals("model"u8))
            {
                reader.Read();
                if (reader.TokenType != JsonTokenType.String)
                {
                    return Invalid("model");
                }

                var start = (int)reader.TokenStartIndex;
                Model = reader.GetString();
                ModelRange = start..(int)reader.BytesConsumed;
            }
            else if (reader.ValueTextEquals("stream"u8))
            {
                reader.Read();
                switch (reader.TokenType)
                {
                    case JsonTokenType.True: Stream = true; break;
                    case JsonTokenType.False or JsonTokenType.Null: Stream = false; break;
                    default: return Invalid("stream");
                }
            }
            else if (reader.ValueTextEquals("stream_options"u8))
            {
                reader.Read();
                if (reader.TokenType == JsonTokenType.Null)
                {
                    continue;
                }

                if (reader.TokenType != JsonTokenType.StartObject)
                {
                    return Invalid("stream_options");
                }

                var start = (int)reader.TokenStartIndex;
                while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
                {
                    var isIncludeUsage = reader.ValueTextEquals("include_usage"u8);
                    reader.Read();
                    if (isIncludeUsage)
                    {
                        if (reader.TokenType is not (JsonTokenType.True or JsonTokenType.False))
                        {
                            return Invalid("stream_options.include_usage");
                        }

                        IncludeUsage = reader.TokenType == JsonTokenType.True;
                        IncludeUsageRange = (int)reader.TokenStartIndex..(int)reader.BytesConsumed;
                    }
                    else
                    {
                        reader.Skip();
                    }
                }

                StreamOptionsRange = start..(int)reader.BytesConsumed;
            }
            else if (reader.ValueTextEquals("max_tokens"u8) || reader.ValueTextEquals("max_completion_tokens"u8))
            {
                var name = reader.GetString()!;
                reader.Read();
                if (reader.TokenType == JsonTokenType.Null)
                {
                    continue;
                }

                if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out var max) || max < 0)
                {
                    return Invalid(name);
                }

                MaxOutputTokens = max;
            }
            else if (reader.ValueTextEquals("n"u8))
            {
                reader.Read();
                if (reader.TokenType == JsonTokenType.Null)
                {
                    continue;
                }

                if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out var n) || n < 1)
                {
                    return Invalid("n");
                }

                N = n;
            }
            else if (reader.ValueTextEquals("messages"u8) || reader.ValueTextEquals("prompt"u8)
                || reader.ValueTextEquals("input"u8) || reader.ValueTextEquals("system"u8))
            {
                reader.Read();
                var start = (int)reader.TokenStartIndex;
                reader.Skip();
                PromptRanges.Add(start..(int)reader.BytesConsumed);
            }
            else
            {
                reader.Read();
                reader.Skip();
            }
        }

        // Trailing content after the object is invalid JSON; Read throws on it.
        if (reader.TokenType != JsonTokenType.EndObject || reader.Read())
        {
            return ParseError.InvalidJson;
        }

        return ParseError.None;
    }

    private ParseError Invalid(string field)
    {
        ErrorField = field;
        return ParseError.InvalidField;
    }

    /// <summary>
    /// Writes the body to send upstream: <paramref name="body"/> with the model replaced by
    /// <paramref name="upstreamModel"/> when it differs, and, when <paramref name="forceUsage"/>,
    /// <c>stream_options.include_usage</c> set to true. Untouched bytes are copied as they are.
    /// Returns false, writing nothing, when no change is needed.
    /// </summary>
    public bool TryRewrite(ReadOnlySpan<byte> body, string upstreamModel, bool forceUsage, IBufferWriter<byte> output)
    {
        if (!NeedsRewrite(upstreamModel, forceUsage))
        {
            return false;
        }

        var replaceModel = Model is not null && !string.Equals(Model, upstreamModel, StringComparison.Ordinal);
        var injectUsage = forceUsage && IncludeUsage != true;
        Span<(int Start, int End, int Kind)> edits = stackalloc (int, int, int)[2];
        var count = 0;
        if (replaceModel)
        {
            var (offset, length) = ModelRange.GetOffsetAndLength(body.Length);
            edits[count++] = (offset, offset + length, 0);
        }

        if (injectUsage)
        {
            if (IncludeUsageRange is { } usage)
            {
                var (offset, length) = usage.GetOffsetAndLength(body.Length);
                edits[count++] = (offset, offset + length, 1);
            }
            else if (StreamOptionsRange is { } options)
            {
                var (offset, _) = options.GetOffsetAndLength(body.Length);
                edits[count++] = (offset + 1, offset + 1, 2);
            }
            else
            {
                edits[count++] = (body.IndexOf((byte)'{') + 1, body.IndexOf((byte)'{') + 1, 3);
            }
        }

        var active = edits[..count];
        if (count == 2 && active[1].Start < active[0].Start)
        {
            (active[0], active[1]) = (active[1], active[0]);
        }

        var position = 0;
        foreach (var (start, end, kind) in active)
        {
            output.Write(body[position..start]);
            switch (kind)
            {
                case 0:
                    WriteJsonString(upstreamModel, output);
                    break;
                case 1:
                    output.Write("true"u8);
                    break;
                case 2:
                    // Inside an existing stream_options object: add the field first; keep the others.
                    var rest = body[start..];
                    var empty = rest.TrimStart(" \t\r\n"u8).StartsWith("}"u8);
                    output.Write(empty ? "\"include_usage\":true"u8 : "\"include_usage\":true,"u8);
                    break;
                default:
                    output.Write("\"stream_options\":{\"include_usage\":true},"u8);
                    break;
            }

            position = end;
        }

        output.Write(body[position..]);
        return true;
    }

    /// <summary>True when <see cref="TryRewrite"/> would change the body.</summary>
    public bool NeedsRewrite(string upstreamModel, bool forceUsage)
        => (Model is not null && !string.Equals(Model, upstreamModel, StringComparison.Ordinal)) || (forceUsage && IncludeUsage != true);

    private static void WriteJsonString(string value, IBufferWriter<byte> output)
    {
        using var writer = new Utf8JsonWriter(output);
        writer.WriteStringValue(value);
    }
}
