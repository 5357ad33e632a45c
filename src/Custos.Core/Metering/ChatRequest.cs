using System.Buffers;
using System.Text.Json;
using Custos.Controls;

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

    /// <summary>Byte ranges of the <c>max_tokens</c> and <c>max_completion_tokens</c> values, when present.</summary>
    public List<Range> MaxOutputRanges { get; } = new(1);

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

                MaxOutputTokens = MaxOutputTokens is { } other ? Math.Min(other, max) : max;
                MaxOutputRanges.Add((int)reader.TokenStartIndex..(int)reader.BytesConsumed);
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
        var edits = new List<BodyEdit>(2);
        AddEdits(body, upstreamModel, forceUsage, outputCeiling: null, edits);
        if (edits.Count == 0)
        {
            return false;
        }

        BodyEdits.Apply(body, edits, output);
        return true;
    }

    /// <summary>
    /// Adds the edits the gateway makes to this request: the upstream model name, <c>include_usage</c> for OpenAI
    /// streams, and the output ceiling (every <c>max_tokens</c>/<c>max_completion_tokens</c> value set to it, or
    /// <c>max_tokens</c> injected when there is none).
    /// </summary>
    public void AddEdits(ReadOnlySpan<byte> body, string upstreamModel, bool forceUsage, long? outputCeiling, List<BodyEdit> edits)
    {
        if (Model is not null && !string.Equals(Model, upstreamModel, StringComparison.Ordinal))
        {
            var (offset, length) = ModelRange.GetOffsetAndLength(body.Length);
            edits.Add(new BodyEdit(offset, offset + length, JsonSerializer.SerializeToUtf8Bytes(upstreamModel)));
        }

        var objectStart = body.IndexOf((byte)'{') + 1;
        if (forceUsage && IncludeUsage != true)
        {
            if (IncludeUsageRange is { } usage)
            {
                var (offset, length) = usage.GetOffsetAndLength(body.Length);
                edits.Add(new BodyEdit(offset, offset + length, "true"u8.ToArray()));
            }
            else if (StreamOptionsRange is { } options)
            {
                // Inside the existing stream_options object: add the field first; keep the others.
                var (offset, _) = options.GetOffsetAndLength(body.Length);
                var empty = body[(offset + 1)..].TrimStart(" \t\r\n"u8).StartsWith("}"u8);
                edits.Add(new BodyEdit(offset + 1, offset + 1, empty ? "\"include_usage\":true"u8.ToArray() : "\"include_usage\":true,"u8.ToArray()));
            }
            else
            {
                edits.Add(new BodyEdit(objectStart, objectStart, "\"stream_options\":{\"include_usage\":true},"u8.ToArray()));
            }
        }

        if (outputCeiling is { } ceiling)
        {
            var value = System.Text.Encoding.ASCII.GetBytes(ceiling.ToString(System.Globalization.CultureInfo.InvariantCulture));
            if (MaxOutputRanges.Count == 0)
            {
                edits.Add(new BodyEdit(objectStart, objectStart, [.. "\"max_tokens\":"u8, .. value, (byte)',']));
            }

            foreach (var range in MaxOutputRanges)
            {
                var (offset, length) = range.GetOffsetAndLength(body.Length);
                edits.Add(new BodyEdit(offset, offset + length, value));
            }
        }
    }
}
