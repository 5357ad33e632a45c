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
    /// Estimates the input tokens of a request from its prompt values (messages, prompt, input, system): every string is
    /// counted, plus the chat format's overhead of 3 tokens per message and 3 for the reply primer, as OpenAI documents.
    /// The strings were unescaped when the body was parsed (<see cref="ChatRequest.PromptText"/>). A token id (a number of
    /// a completion's <c>prompt</c> or an embedding's <c>input</c>) is one token: before 2026-12-02 it counted as none, so
    /// a prompt of token ids passed any <c>max_input_tokens</c> and reserved no input.
    /// </summary>
    public static int CountPrompt(ChatRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        var messages = request.PromptMessages;
        return (messages * 3) + (messages > 0 ? 3 : 0) + Count(request.PromptText) + (request.PromptImages * ImageTokens) + request.PromptTokenIds;
    }

    /// <summary>
    /// What an image sent inline is counted as: about the most a provider bills for one (OpenAI's high detail, six 512-pixel
    /// tiles and the base, 1,105; Anthropic's pixels over 750, up to about 1,600), without decoding it. The provider's
    /// usage settles the real count.
    /// </summary>
    public const int ImageTokens = 1_600;
}
