using System.Buffers;
using System.Text.Json;

namespace Custos.Metering;

/// <summary>
/// Counts tokens with a real tokenizer (tiktoken <c>o200k_base</c>, the encoding of current OpenAI models).
/// Used when a provider reports no usage, and to estimate input before forwarding. For other model
/// families the count is an estimate, and is recorded as such.
/// </summary>
public static class TokenCounter
{
    /// <summary>Tokens in <paramref name="text"/>.</summary>
    public static int Count(ReadOnlySpan<char> text) => text.IsEmpty ? 0 : O200kTokenCounter.Shared.Count(text);

    /// <summary>
    /// Estimates the input tokens of a request from the raw JSON of its prompt values (messages, prompt,
    /// input, system): every string is counted, plus the chat format's overhead of 3 tokens per message
    /// and 3 for the reply primer, as OpenAI documents.
    /// </summary>
    public static int CountPrompt(ReadOnlySpan<byte> json, IReadOnlyList<Range> promptRanges)
    {
        var total = 0;
        var text = ArrayPool<char>.Shared.Rent(Math.Max(256, json.Length)); // unescaped text is never longer than its JSON
        var length = 0;
        try
        {
            foreach (var range in promptRanges)
            {
                var reader = new Utf8JsonReader(json[range]);
                var depth0Array = false;
                while (reader.Read())
                {
                    switch (reader.TokenType)
                    {
                        case JsonTokenType.StartArray when reader.CurrentDepth == 0:
                            depth0Array = true;
                            break;
                        case JsonTokenType.StartObject when depth0Array && reader.CurrentDepth == 1:
                            total += 3;
                            break;
                        case JsonTokenType.String:
                            length += reader.CopyString(text.AsSpan(length));
                            text[length++] = '\n';
                            break;
                    }
                }
            }

            return total + (total > 0 ? 3 : 0) + Count(text.AsSpan(0, length));
        }
        finally
        {
            ArrayPool<char>.Shared.Return(text);
        }
    }
}
