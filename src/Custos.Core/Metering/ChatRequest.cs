using System.Buffers;
using System.Text;
using System.Text.Json;
using System.Text.Unicode;
using Custos.Controls;
using Custos.Errors;

namespace Custos.Metering;

/// <summary>Why a request body could not be understood.</summary>
public enum ParseError
{
    /// <summary>Understood.</summary>
    None,

    /// <summary>Not JSON, not UTF-8, or not a JSON object.</summary>
    InvalidJson,

    /// <summary>A known field has the wrong type; <see cref="ChatRequest.ErrorField"/> names it.</summary>
    InvalidField,

    /// <summary>
    /// A field the gateway reads appears twice in one object; <see cref="ChatRequest.ErrorField"/> names it. Parsers differ
    /// on which of the two counts, so the gateway could govern one and the provider act on the other.
    /// </summary>
    DuplicateField,
}

/// <summary>
/// What the gateway needs to know of a model request, read in one pass with <see cref="Utf8JsonReader"/>
/// over the bytes already buffered, without building a DOM: the model, streaming, output ceilings and
/// where the prompt and the fields the gateway may rewrite sit in the body.
/// </summary>
public sealed class ChatRequest
{
    /// <summary>How deep arrays and objects may nest in a request body.</summary>
    private const int MaxDepth = 128;

    /// <summary>The requested model, or null when absent.</summary>
    public string? Model { get; private set; }

    /// <summary>Byte range of the model's JSON string value, quotes included.</summary>
    public Range ModelRange { get; private set; }

    /// <summary>Whether the client asked for a stream.</summary>
    public bool Stream { get; private set; }

    /// <summary><c>stream_options.include_usage</c> as sent, or null when absent.</summary>
    public bool? IncludeUsage { get; private set; }

    /// <summary>Byte range of the <c>stream_options</c> value (an object or <c>null</c>), when present.</summary>
    public Range? StreamOptionsRange { get; private set; }

    /// <summary>Byte range of the <c>include_usage</c> value inside <c>stream_options</c>, when present.</summary>
    public Range? IncludeUsageRange { get; private set; }

    /// <summary>
    /// <c>max_tokens</c>, <c>max_completion_tokens</c> or Anthropic <c>max_tokens</c>; with both OpenAI fields, the larger:
    /// the most output the provider could be asked for, which the ceiling checks and the reservation covers.
    /// </summary>
    public long? MaxOutputTokens { get; private set; }

    /// <summary>
    /// Byte ranges of the <c>max_tokens</c> and <c>max_completion_tokens</c> values that are numbers: an output ceiling is
    /// written over them; when there are none, over a <c>null</c> one, or injected.
    /// </summary>
    public List<Range> MaxOutputRanges { get; } = new(1);

    /// <summary>Images sent inline in the prompt values, as data URLs or base64: counted as images, not as their text.</summary>
    public int PromptImages { get; private set; }

    /// <summary>
    /// Token ids in the prompt: the numbers of a legacy completion's <c>prompt</c> or of an embedding's <c>input</c>, which
    /// the provider decodes with its model's vocabulary. Each counts as one input token; the prompt rules cannot read them.
    /// </summary>
    public int PromptTokenIds { get; private set; }

    /// <summary>Number of choices asked for (<c>n</c>).</summary>
    public long? N { get; private set; }

    /// <summary>Legacy completions' <c>best_of</c>: completions generated for each prompt, of which <c>n</c> are returned.</summary>
    public long? BestOf { get; private set; }

    /// <summary>A legacy completion's prompts: the strings or token lists when <c>prompt</c> is a list of them; otherwise 1.</summary>
    public long Prompts { get; private set; } = 1;

    /// <summary>
    /// The completions a legacy <c>/v1/completions</c> request has the provider generate, and bill: <c>best_of</c>, or
    /// <c>n</c> when larger, for each prompt. Null when it names neither and has one prompt.
    /// </summary>
    public long? CompletionChoices => N is null && BestOf is null && Prompts == 1 ? null : Saturating.Multiply(Prompts, Math.Max(N ?? 1, BestOf ?? 1));

    /// <summary>
    /// Byte ranges of the prompt values (<c>system</c>, <c>messages</c>, <c>prompt</c>, <c>input</c>, a Responses API
    /// request's <c>instructions</c>, and what else the model reads: <c>tools</c>, <c>functions</c>, <c>prediction</c>,
    /// <c>response_format</c>, <c>suffix</c>), in body order.
    /// </summary>
    public List<Range> PromptRanges { get; } = new(2);

    /// <summary>
    /// Every string of the prompt values, unescaped, each followed by a line feed: the text that is counted and that the
    /// prompt rules check, decoded once, in the pass that parses the body.
    /// </summary>
    public ReadOnlySpan<char> PromptText => _promptText.AsSpan(0, _promptLength);

    /// <summary>Each string of the prompt values: where its text sits in <see cref="PromptText"/>, and its JSON token in the body.</summary>
    public IReadOnlyList<PromptString> PromptStrings => (IReadOnlyList<PromptString>?)_promptStrings ?? [];

    /// <summary>The objects directly inside prompt values that are arrays: the messages (each costs the chat format tokens).</summary>
    public int PromptMessages { get; private set; }

    /// <summary>The field that failed, with <see cref="ParseError.InvalidField"/> or <see cref="ParseError.DuplicateField"/>.</summary>
    public string? ErrorField { get; private set; }

    /// <summary>
    /// With <see cref="ParseError.InvalidField"/>: what <see cref="ErrorField"/> must be, for the client's error message,
    /// for example <c>a whole number of at least 1, or null</c>; named where the field is read, so the two cannot drift.
    /// </summary>
    public string? ErrorExpectation { get; private set; }

    /// <summary>
    /// With <see cref="ParseError.InvalidJson"/>: what is wrong and where, for the client's error message, for example
    /// <c>it is an array, not an object</c> or <c>'}' cannot be there (line 1, byte 36)</c>. It quotes at most one
    /// character of the body.
    /// </summary>
    public string? ErrorDetail { get; private set; }

    /// <summary>The field a refusal for too many choices names as its <c>param</c>: <c>best_of</c> when it asked for more than <c>n</c>.</summary>
    public string ChoicesField => (BestOf ?? 0) > (N ?? 1) ? "best_of" : "n";

    /// <summary>
    /// The field a refusal for too large an output ceiling names: <c>max_completion_tokens</c> or <c>max_output_tokens</c>
    /// (the Responses API's) when the client sent only that.
    /// </summary>
    public string OutputCeilingField => (_seen & (Fields.MaxTokens | Fields.MaxCompletionTokens | Fields.MaxOutputTokens)) switch
    {
        Fields.MaxCompletionTokens => "max_completion_tokens",
        Fields.MaxOutputTokens => "max_output_tokens",
        _ => "max_tokens",
    };

    /// <summary>
    /// True when the request sent a predicted output (<c>prediction</c>): its rejected tokens are billed as output beyond
    /// the output ceiling, so the ceiling bounds no reported output count.
    /// </summary>
    public bool HasPrediction => (_seen & Fields.Prediction) != 0;

    /// <summary>The field a refusal for too long a prompt names: the conversation's field the client sent.</summary>
    public string? ConversationField => (_seen & Fields.Messages) != 0 ? "messages" : (_seen & Fields.Prompt) != 0 ? "prompt" : (_seen & Fields.Input) != 0 ? "input" : null;

    private Range? _nullMaxTokens; // "max_tokens":null
    private Range? _nullMaxCompletionTokens; // "max_completion_tokens":null
    private Range? _nullMaxOutputTokens; // "max_output_tokens":null
    private bool _responses; // read as a Responses API request (POST /v1/responses)
    private char[]? _promptText;
    private int _promptLength;
    private List<PromptString>? _promptStrings;
    private Fields _seen;

    /// <summary>The top-level fields the gateway reads, each allowed once.</summary>
    [Flags]
    private enum Fields
    {
        None = 0,
        Model = 1,
        Stream = 1 << 1,
        StreamOptions = 1 << 2,
        MaxTokens = 1 << 3,
        MaxCompletionTokens = 1 << 4,
        N = 1 << 5,
        Messages = 1 << 6,
        Prompt = 1 << 7,
        Input = 1 << 8,
        System = 1 << 9,
        BestOf = 1 << 10,
        Tools = 1 << 11,
        Functions = 1 << 12,
        Prediction = 1 << 13,
        ResponseFormat = 1 << 14,
        Suffix = 1 << 15,

        /// <summary>The Responses API's output ceiling.</summary>
        MaxOutputTokens = 1 << 16,

        /// <summary>The Responses API's system (developer) message.</summary>
        Instructions = 1 << 17,

        /// <summary>What the model reads besides the conversation: definitions, schemas, a predicted output, a suffix.</summary>
        Besides = Tools | Functions | Prediction | ResponseFormat | Suffix,
    }

    /// <summary>Parses <paramref name="body"/>.</summary>
    /// <param name="body">The request body.</param>
    /// <param name="request">What was read of it, and with an error, what is wrong.</param>
    /// <param name="responses">
    /// True for an OpenAI Responses API request (<c>POST /v1/responses</c>): <c>max_output_tokens</c> is its output ceiling,
    /// <c>instructions</c> its system message and <c>input</c> (required, unless a stored <c>prompt</c> is named) a string
    /// or an array of input items, read so that the prompt text is the one the same conversation sent to chat completions
    /// gives (see <see cref="ResponsesTypeWords"/>). The context a <c>previous_response_id</c> or <c>conversation</c>
    /// names is stored at the provider: the gateway cannot see it, so it is not counted here; the provider's usage is.
    /// </param>
    public static ParseError TryParse(ReadOnlySpan<byte> body, out ChatRequest request, bool responses = false)
    {
        request = new ChatRequest { _responses = responses };
        if (!Utf8.IsValid(body))
        {
            // JSON between systems is UTF-8 (RFC 8259). The reader checks the strings it decodes, not the names and values
            // it skips, and a provider's decoder may read such bytes otherwise than the gateway did.
            return request.InvalidJson(JsonFaults.DescribeNotUtf8(body));
        }

        try
        {
            return request.Parse(body);
        }
        catch (JsonException e)
        {
            return request.InvalidJson(JsonFaults.Describe(body, e, MaxDepth));
        }
        catch (InvalidOperationException)
        {
            // A prompt string that is not text: an escaped half of a surrogate pair (\ud83d alone). It could be neither
            // counted nor checked, so it is refused like any other body that is not valid JSON text.
            return request.InvalidJson("a string holds half of a surrogate pair (an escaped \\ud800 to \\udfff without its other half)");
        }
    }

    private ParseError InvalidJson(string detail)
    {
        ErrorDetail = detail;
        return ParseError.InvalidJson;
    }

    private ParseError Parse(ReadOnlySpan<byte> body)
    {
        var reader = new Utf8JsonReader(body, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Disallow, MaxDepth = MaxDepth });
        if (!reader.Read())
        {
            return InvalidJson("it is empty");
        }

        if (reader.TokenType != JsonTokenType.StartObject)
        {
            return InvalidJson(reader.TokenType switch
            {
                JsonTokenType.StartArray => "it is an array, not an object",
                JsonTokenType.String => "it is a string, not an object",
                JsonTokenType.Number => "it is a number, not an object",
                JsonTokenType.True or JsonTokenType.False => "it is a boolean, not an object",
                _ => "it is null, not an object",
            });
        }

        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            if (reader.ValueTextEquals("model"u8))
            {
                if (!FirstTime(Fields.Model))
                {
                    return Duplicate("model");
                }

                reader.Read();
                if (reader.TokenType != JsonTokenType.String)
                {
                    return Invalid("model", "a string");
                }

                var start = (int)reader.TokenStartIndex;
                Model = reader.GetString();
                ModelRange = start..(int)reader.BytesConsumed;
            }
            else if (reader.ValueTextEquals("stream"u8))
            {
                if (!FirstTime(Fields.Stream))
                {
                    return Duplicate("stream");
                }

                reader.Read();
                switch (reader.TokenType)
                {
                    case JsonTokenType.True: Stream = true; break;
                    case JsonTokenType.False or JsonTokenType.Null: Stream = false; break;
                    default: return Invalid("stream", "true, false or null");
                }
            }
            else if (reader.ValueTextEquals("stream_options"u8))
            {
                if (!FirstTime(Fields.StreamOptions))
                {
                    return Duplicate("stream_options");
                }

                reader.Read();
                if (reader.TokenType == JsonTokenType.Null)
                {
                    StreamOptionsRange = (int)reader.TokenStartIndex..(int)reader.BytesConsumed; // forced usage replaces it
                    continue;
                }

                if (reader.TokenType != JsonTokenType.StartObject)
                {
                    return Invalid("stream_options", "an object or null");
                }

                var start = (int)reader.TokenStartIndex;
                while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
                {
                    var isIncludeUsage = reader.ValueTextEquals("include_usage"u8);
                    reader.Read();
                    if (isIncludeUsage)
                    {
                        if (IncludeUsageRange is not null)
                        {
                            return Duplicate("stream_options.include_usage");
                        }

                        if (reader.TokenType is not (JsonTokenType.True or JsonTokenType.False))
                        {
                            return Invalid("stream_options.include_usage", "true or false");
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
            else if (reader.ValueTextEquals("max_tokens"u8) || reader.ValueTextEquals("max_completion_tokens"u8)
                     || (_responses && reader.ValueTextEquals("max_output_tokens"u8)))
            {
                var field = reader.ValueTextEquals("max_completion_tokens"u8) ? Fields.MaxCompletionTokens
                    : reader.ValueTextEquals("max_tokens"u8) ? Fields.MaxTokens
                    : Fields.MaxOutputTokens;
                var name = field switch
                {
                    Fields.MaxCompletionTokens => "max_completion_tokens",
                    Fields.MaxTokens => "max_tokens",
                    _ => "max_output_tokens",
                };
                if (!FirstTime(field))
                {
                    return Duplicate(name);
                }

                reader.Read();
                var range = (int)reader.TokenStartIndex..(int)reader.BytesConsumed;
                if (reader.TokenType == JsonTokenType.Null)
                {
                    // No ceiling asked for, but a ceiling injected goes here, not beside it: the field would be sent twice.
                    switch (field)
                    {
                        case Fields.MaxCompletionTokens: _nullMaxCompletionTokens = range; break;
                        case Fields.MaxTokens: _nullMaxTokens = range; break;
                        default: _nullMaxOutputTokens = range; break;
                    }

                    continue;
                }

                if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out var max) || max < 0)
                {
                    return Invalid(name, "a whole number of at least 0, or null");
                }

                MaxOutputTokens = MaxOutputTokens is { } other ? Math.Max(other, max) : max;
                MaxOutputRanges.Add(range);
            }
            else if (reader.ValueTextEquals("n"u8) || reader.ValueTextEquals("best_of"u8))
            {
                var bestOf = reader.ValueTextEquals("best_of"u8);
                var name = bestOf ? "best_of" : "n";
                if (!FirstTime(bestOf ? Fields.BestOf : Fields.N))
                {
                    return Duplicate(name);
                }

                reader.Read();
                if (reader.TokenType == JsonTokenType.Null)
                {
                    continue;
                }

                if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out var n) || n < 1)
                {
                    return Invalid(name, "a whole number of at least 1, or null");
                }

                if (bestOf)
                {
                    BestOf = n;
                }
                else
                {
                    N = n;
                }
            }
            else if (_responses && reader.ValueTextEquals("instructions"u8))
            {
                if (!FirstTime(Fields.Instructions))
                {
                    return Duplicate("instructions");
                }

                reader.Read();
                if (reader.TokenType == JsonTokenType.Null)
                {
                    continue;
                }

                if (reader.TokenType != JsonTokenType.String)
                {
                    return Invalid("instructions", "a string or null");
                }

                // As the system message of a chat: its role, its text, and a message's format tokens.
                var start = (int)reader.TokenStartIndex;
                AddPromptWord("system", body.Length, start);
                PromptMessages++;
                AddPromptString(ref reader, body.Length);
                PromptRanges.Add(start..(int)reader.BytesConsumed);
            }
            else if (PromptField(ref reader) is { } prompt)
            {
                if (!FirstTime(prompt))
                {
                    return Duplicate(reader.GetString()!);
                }

                reader.Read();
                var start = (int)reader.TokenStartIndex;
                if (_responses && prompt == Fields.Input)
                {
                    if (ReadResponsesInput(ref reader, body) is var inputError and not ParseError.None)
                    {
                        return inputError;
                    }
                }
                else
                {
                    ReadPrompt(ref reader, body, countPrompts: prompt == Fields.Prompt, countMessages: (prompt & Fields.Besides) == 0,
                        tokenIds: prompt is Fields.Prompt or Fields.Input);
                }

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
            return InvalidJson("it goes on after its object");
        }

        if (_responses && (_seen & (Fields.Input | Fields.Prompt)) == 0)
        {
            return Invalid("input", ResponsesInputExpectation); // nothing to answer: no input, and no stored prompt named
        }

        return ParseError.None;
    }

    private const string ResponsesInputExpectation = "a string or an array of input items";

    /// <summary>
    /// Reads a Responses API <c>input</c>: a string (one user message), or an array of input items (messages, with a
    /// <c>role</c> and a <c>content</c> that is a string or an array of parts; <c>function_call</c> and
    /// <c>function_call_output</c> items; and the rest), each counted as a message. Strings are kept as
    /// <see cref="ReadPrompt"/> keeps them, but for the item and part types, read as the words a chat request with the
    /// same conversation has in their place (<see cref="ResponsesTypeWords"/>).
    /// </summary>
    private ParseError ReadResponsesInput(ref Utf8JsonReader reader, ReadOnlySpan<byte> body)
    {
        var bodyLength = body.Length;
        if (reader.TokenType == JsonTokenType.String)
        {
            // A chat's user message: its role, its text, and a message's format tokens.
            AddPromptWord("user", bodyLength, (int)reader.TokenStartIndex);
            PromptMessages++;
            AddPromptString(ref reader, bodyLength);
            return ParseError.None;
        }

        if (reader.TokenType != JsonTokenType.StartArray)
        {
            return Invalid("input", ResponsesInputExpectation);
        }

        var depth = reader.CurrentDepth;
        var item = -1;
        while (reader.Read() && reader.CurrentDepth > depth)
        {
            if (reader.TokenType != JsonTokenType.StartObject)
            {
                return Invalid("input[" + (item + 1) + "]", "an object (an input item)");
            }

            item++;
            PromptMessages++;
            var itemDepth = reader.CurrentDepth;
            while (reader.Read() && reader.CurrentDepth > itemDepth)
            {
                // Directly in the item: its members.
                if (reader.ValueTextEquals("type"u8))
                {
                    reader.Read();
                    if (reader.TokenType != JsonTokenType.String)
                    {
                        return Invalid($"input[{item}].type", "a string");
                    }

                    AddTypeWords(ref reader, bodyLength);
                }
                else if (reader.ValueTextEquals("role"u8))
                {
                    reader.Read();
                    if (reader.TokenType != JsonTokenType.String)
                    {
                        return Invalid($"input[{item}].role", "a string");
                    }

                    AddPromptString(ref reader, bodyLength);
                }
                else if (reader.ValueTextEquals("content"u8))
                {
                    reader.Read();
                    if (reader.TokenType == JsonTokenType.String)
                    {
                        AddPromptString(ref reader, bodyLength);
                    }
                    else if (reader.TokenType == JsonTokenType.StartArray)
                    {
                        ReadPrompt(ref reader, body, countPrompts: false, countMessages: false, tokenIds: false, typeWords: true);
                    }
                    else
                    {
                        return Invalid($"input[{item}].content", "a string or an array of content parts");
                    }
                }
                else
                {
                    reader.Read();
                    ReadPrompt(ref reader, body, countPrompts: false, countMessages: false, tokenIds: false, typeWords: true);
                }
            }
        }

        return ParseError.None;
    }

    /// <summary>
    /// The words a chat request has where a Responses API input has an item or part type: an <c>input_text</c> part is
    /// chat's <c>text</c> part, an <c>input_image</c> its <c>image_url</c> part, a <c>function_call</c> item an assistant
    /// message's call of a function, a <c>function_call_output</c> a <c>tool</c> message; a <c>message</c> item is the
    /// message itself, with no word of its own. Other types are read as they are.
    /// </summary>
    private static string[]? ResponsesTypeWords(ReadOnlySpan<byte> type)
        => type.SequenceEqual("message"u8) ? []
            : type.SequenceEqual("input_text"u8) || type.SequenceEqual("output_text"u8) ? TextWords
            : type.SequenceEqual("input_image"u8) ? ImageWords
            : type.SequenceEqual("function_call"u8) ? FunctionCallWords
            : type.SequenceEqual("function_call_output"u8) ? ToolWords
            : null;

    private static readonly string[] TextWords = ["text"];
    private static readonly string[] ImageWords = ["image_url"];
    private static readonly string[] FunctionCallWords = ["assistant", "function"];
    private static readonly string[] ToolWords = ["tool"];

    /// <summary>Keeps the type string the reader is on as the words of <see cref="ResponsesTypeWords"/>, or as it is.</summary>
    private void AddTypeWords(ref Utf8JsonReader reader, int bodyLength)
    {
        if (reader.ValueIsEscaped || ResponsesTypeWords(reader.ValueSpan) is not { } words)
        {
            AddPromptString(ref reader, bodyLength);
            return;
        }

        foreach (var word in words)
        {
            AddPromptWord(word, bodyLength, (int)reader.TokenStartIndex);
        }
    }

    /// <summary>
    /// Reads a prompt value to its end, as <see cref="Utf8JsonReader.Skip"/> would, keeping the text of its strings and
    /// counting the objects directly inside it when it is an array, and with <paramref name="countPrompts"/> the strings
    /// and lists directly inside it (a legacy completion's prompts; a list of numbers is one prompt of token ids). With
    /// <paramref name="tokenIds"/> (<c>prompt</c> and <c>input</c>, which take token ids in place of text) its numbers are
    /// counted as <see cref="PromptTokenIds"/>.
    /// </summary>
    /// <param name="reader">On the value's first token.</param>
    /// <param name="body">The body.</param>
    /// <param name="countPrompts">Whether to count a legacy completion's prompts.</param>
    /// <param name="countMessages">Whether the objects directly inside an array are messages.</param>
    /// <param name="tokenIds">Whether its numbers are token ids.</param>
    /// <param name="typeWords">Whether <c>type</c> strings are Responses API types (<see cref="ResponsesTypeWords"/>).</param>
    private void ReadPrompt(ref Utf8JsonReader reader, ReadOnlySpan<byte> body, bool countPrompts, bool countMessages, bool tokenIds, bool typeWords = false)
    {
        var bodyLength = body.Length;
        if (reader.TokenType == JsonTokenType.String)
        {
            AddPromptString(ref reader, bodyLength);
            return;
        }

        if (reader.TokenType is not (JsonTokenType.StartObject or JsonTokenType.StartArray))
        {
            PromptTokenIds += tokenIds && reader.TokenType == JsonTokenType.Number ? 1 : 0;
            return; // a number, true, false or null
        }

        var depth = reader.CurrentDepth;
        var array = reader.TokenType == JsonTokenType.StartArray;
        var prompts = 0L;
        var afterData = false; // the value of a "data" member: Anthropic's base64 image
        var afterUrl = false; // the value of a "url" member
        var afterMedia = false; // the value of an "image_url" or "source" member: where an image is named by its URL
        var mediaDepth = -1; // the depth of the "image_url" or "source" object the reader is in, if any
        var afterType = false; // the value of that object's "type" member
        var afterTypeWord = false; // the value of any "type" member, with typeWords
        var sourceType = SourceType.Unknown; // that object's "type": whether its "data" is base64 or text
        var pending = (Start: -1, End: 0); // that object's base64-looking "data", while its type is not known yet
        while (reader.Read() && reader.CurrentDepth > depth) // the value's closing token is back at its depth
        {
            var direct = array && reader.CurrentDepth == depth + 1;
            if (reader.TokenType == JsonTokenType.PropertyName)
            {
                afterData = reader.ValueTextEquals("data"u8);
                afterUrl = reader.CurrentDepth == mediaDepth + 1 && reader.ValueTextEquals("url"u8);
                afterType = reader.CurrentDepth == mediaDepth + 1 && reader.ValueTextEquals("type"u8);
                afterMedia = reader.ValueTextEquals("image_url"u8) || reader.ValueTextEquals("source"u8);
                afterTypeWord = typeWords && reader.ValueTextEquals("type"u8);
                continue;
            }

            var (isData, isUrl, isMedia, isType, isTypeWord) = (afterData, afterUrl, afterMedia, afterType, afterTypeWord);
            afterData = afterUrl = afterMedia = afterType = afterTypeWord = false;
            if (isTypeWord && !isType && reader.TokenType == JsonTokenType.String)
            {
                AddTypeWords(ref reader, bodyLength);
                continue;
            }

            if (reader.TokenType == JsonTokenType.StartObject && isMedia)
            {
                mediaDepth = reader.CurrentDepth;
                sourceType = SourceType.Unknown;
            }
            else if (reader.TokenType == JsonTokenType.EndObject && reader.CurrentDepth == mediaDepth)
            {
                if (pending.Start >= 0)
                {
                    // Its type came after its data: base64 is an image, anything else (Anthropic's "type":"text" document)
                    // text the model reads.
                    if (sourceType == SourceType.Base64)
                    {
                        PromptImages++;
                    }
                    else
                    {
                        AddPromptAscii(body, pending.Start, pending.End);
                    }

                    pending = (-1, 0);
                }

                mediaDepth = -1;
            }

            if (reader.TokenType == JsonTokenType.String)
            {
                if (isType)
                {
                    sourceType = reader.ValueTextEquals("base64"u8) ? SourceType.Base64 : SourceType.Other;
                }

                var sourceData = isData && reader.CurrentDepth == mediaDepth + 1;
                if (IsImage(ref reader, isData) && !(sourceData && sourceType == SourceType.Other))
                {
                    if (sourceData && sourceType == SourceType.Unknown && !reader.ValueSpan.StartsWith("data:image/"u8))
                    {
                        pending = ((int)reader.TokenStartIndex, (int)reader.BytesConsumed); // decided at the object's end
                    }
                    else
                    {
                        PromptImages++; // pixels, not text: neither counted as text nor searched for it
                    }
                }
                else
                {
                    if ((isUrl || isMedia) && IsWebUrl(ref reader))
                    {
                        // An image (or Anthropic document) the provider fetches by its URL is billed as the image, not as
                        // the few tokens of its address. The address is still text: counted, and searched by the rules.
                        PromptImages++;
                    }

                    AddPromptString(ref reader, bodyLength);
                }

                prompts += direct ? 1 : 0;
            }
            else if (tokenIds && reader.TokenType == JsonTokenType.Number)
            {
                PromptTokenIds++; // read by the provider as a token of its vocabulary: one token, and no text the rules can read
            }
            else if (direct && countMessages && reader.TokenType == JsonTokenType.StartObject)
            {
                PromptMessages++;
            }
            else if (direct && reader.TokenType == JsonTokenType.StartArray)
            {
                prompts++;
            }
        }

        if (countPrompts && array)
        {
            Prompts = Math.Max(1, prompts);
        }
    }

    /// <summary>
    /// Whether the string the reader is on is an image sent inline: a <c>data:image/…;base64,</c> URL (OpenAI's
    /// <c>image_url</c>), or, as the value of a <c>data</c> member, a long run of base64 (Anthropic's image source). Its
    /// text would count as some hundred thousand tokens for a few hundred kilobytes, where a provider bills an image at
    /// most some 1,600 (<see cref="TokenCounter.ImageTokens"/>).
    /// </summary>
    private static bool IsImage(ref Utf8JsonReader reader, bool afterData)
    {
        if (reader.ValueIsEscaped)
        {
            return false; // base64 and data URLs need no escapes
        }

        var value = reader.ValueSpan;
        if (value.StartsWith("data:image/"u8))
        {
            var comma = value[..Math.Min(value.Length, 100)].IndexOf(";base64,"u8);
            return comma > 0;
        }

        return afterData && value.Length >= MinInlineImageBytes && !value.ContainsAnyExcept(Base64Bytes);
    }

    /// <summary>
    /// Whether the string the reader is on is an <c>http://</c> or <c>https://</c> URL: as the <c>url</c> of OpenAI's
    /// <c>image_url</c> (or <c>image_url</c> itself) or of Anthropic's <c>source</c> (<c>"type":"url"</c>), an image or
    /// document the provider fetches and bills as such.
    /// </summary>
    private static bool IsWebUrl(ref Utf8JsonReader reader)
    {
        if (reader.ValueIsEscaped)
        {
            // "https:\/\/…", as some serializers escape every slash.
            var text = reader.GetString()!;
            return text.StartsWith("http://", StringComparison.OrdinalIgnoreCase) || text.StartsWith("https://", StringComparison.OrdinalIgnoreCase);
        }

        var value = reader.ValueSpan;
        return value.Length > 8
            && (Ascii.EqualsIgnoreCase(value[..7], "http://"u8) || Ascii.EqualsIgnoreCase(value[..8], "https://"u8));
    }

    /// <summary>The shortest <c>data</c> value taken for an inline image (a tiny PNG is some hundred bytes of base64).</summary>
    private const int MinInlineImageBytes = 256;

    private static readonly SearchValues<byte> Base64Bytes = SearchValues.Create("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="u8);

    /// <summary>
    /// Adds <paramref name="word"/> and a line feed to <see cref="PromptText"/>: text a chat request would have (a role,
    /// a part's type) where a Responses API request has none or another. Counted, not checked by the prompt rules (it is
    /// no text of the client's, and no place in the body to redact). Keeps room for what the body after
    /// <paramref name="tokenStart"/> can add (see <see cref="AddPromptString"/>).
    /// </summary>
    private void AddPromptWord(string word, int bodyLength, int tokenStart)
    {
        var needed = _promptLength + word.Length + 1 + (bodyLength - tokenStart);
        if (_promptText is null || _promptText.Length < needed)
        {
            var larger = new char[Math.Max(needed, (_promptText?.Length ?? 0) * 2)];
            _promptText?.AsSpan(0, _promptLength).CopyTo(larger);
            _promptText = larger;
        }

        word.CopyTo(_promptText.AsSpan(_promptLength));
        _promptLength += word.Length;
        _promptText[_promptLength++] = '\n';
    }

    /// <summary>What a media object's <c>type</c> says of its <c>data</c>.</summary>
    private enum SourceType
    {
        Unknown,
        Base64,
        Other,
    }

    /// <summary>
    /// Adds the JSON string token at <paramref name="start"/>..<paramref name="end"/> of <paramref name="body"/>, quotes
    /// included, as a prompt string: one with no escape, all ASCII (base64's alphabet), read after the tokens that followed
    /// it, so the text's array may have been sized at a later token than its own (or have taken words of a Responses API
    /// type meanwhile, <see cref="AddPromptWord"/>): it keeps room for what the body after it can add, as that does.
    /// </summary>
    private void AddPromptAscii(ReadOnlySpan<byte> body, int start, int end)
    {
        var value = body[(start + 1)..(end - 1)];
        var needed = _promptLength + value.Length + 1 + (body.Length - end);
        if (_promptText is null || _promptText.Length < needed)
        {
            Array.Resize(ref _promptText, Math.Max(needed, (_promptText?.Length ?? 0) * 2));
        }

        var written = Encoding.ASCII.GetChars(value, _promptText.AsSpan(_promptLength));
        (_promptStrings ??= new(4)).Add(new PromptString(_promptLength, written, start, end));
        _promptLength += written;
        _promptText[_promptLength++] = '\n';
    }

    private void AddPromptString(ref Utf8JsonReader reader, int bodyLength)
    {
        // Unescaped, a string and its line feed take at most as many UTF-16 units as its JSON token has bytes (quotes
        // included), so the body from the first prompt string on bounds them all: one array, sized at the first.
        _promptText ??= new char[bodyLength - (int)reader.TokenStartIndex];
        var written = reader.CopyString(_promptText.AsSpan(_promptLength));
        (_promptStrings ??= new(4)).Add(new PromptString(_promptLength, written, (int)reader.TokenStartIndex, (int)reader.BytesConsumed));
        _promptLength += written;
        _promptText[_promptLength++] = '\n';
    }

    /// <summary>Which prompt field the property name at <paramref name="reader"/> is, if any.</summary>
    /// <remarks>
    /// The conversation, and what else the model reads as text: tool and function definitions (OpenAI and Anthropic
    /// <c>tools</c>, OpenAI's older <c>functions</c>), a response schema (<c>response_format</c>), a predicted output
    /// (<c>prediction</c>) and a completion's <c>suffix</c>. Providers bill them as input, and a prompt rule that read only
    /// the messages would let a card number or a key through in a tool's description.
    /// </remarks>
    private static Fields? PromptField(ref Utf8JsonReader reader)
        => reader.ValueTextEquals("messages"u8) ? Fields.Messages
            : reader.ValueTextEquals("prompt"u8) ? Fields.Prompt
            : reader.ValueTextEquals("input"u8) ? Fields.Input
            : reader.ValueTextEquals("system"u8) ? Fields.System
            : reader.ValueTextEquals("tools"u8) ? Fields.Tools
            : reader.ValueTextEquals("functions"u8) ? Fields.Functions
            : reader.ValueTextEquals("prediction"u8) ? Fields.Prediction
            : reader.ValueTextEquals("response_format"u8) ? Fields.ResponseFormat
            : reader.ValueTextEquals("suffix"u8) ? Fields.Suffix
            : null;

    /// <summary>Notes <paramref name="field"/> as seen; false when it was seen before.</summary>
    private bool FirstTime(Fields field)
    {
        var first = (_seen & field) == 0;
        _seen |= field;
        return first;
    }

    private ParseError Duplicate(string field)
    {
        ErrorField = field;
        return ParseError.DuplicateField;
    }

    private ParseError Invalid(string field, string expected)
    {
        ErrorField = field;
        ErrorExpectation = expected;
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
    /// streams, and the output ceiling (every <c>max_tokens</c>/<c>max_completion_tokens</c> value set to it, or one
    /// injected when there is none: <c>max_completion_tokens</c> with <paramref name="completionTokensField"/>, for chat
    /// completions, whose reasoning models refuse <c>max_tokens</c>; <c>max_output_tokens</c> for a Responses API request;
    /// otherwise <c>max_tokens</c>).
    /// </summary>
    public void AddEdits(ReadOnlySpan<byte> body, string upstreamModel, bool forceUsage, long? outputCeiling, List<BodyEdit> edits,
        bool completionTokensField = false)
        => AddEdits(body, upstreamModel, forceUsage, outputCeiling, edits,
            _responses ? "\"max_output_tokens\":"u8 : completionTokensField ? "\"max_completion_tokens\":"u8 : "\"max_tokens\":"u8);

    /// <summary>As the other overload, the output ceiling injected, when the client set none, as <paramref name="ceilingField"/>.</summary>
    private void AddEdits(ReadOnlySpan<byte> body, string upstreamModel, bool forceUsage, long? outputCeiling, List<BodyEdit> edits,
        ReadOnlySpan<byte> ceilingField)
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
                var (offset, length) = options.GetOffsetAndLength(body.Length);
                if (body[offset] == (byte)'n')
                {
                    edits.Add(new BodyEdit(offset, offset + length, "{\"include_usage\":true}"u8.ToArray())); // over "stream_options":null
                }
                else
                {
                    // Inside the existing stream_options object: add the field first; keep the others.
                    var empty = body[(offset + 1)..].TrimStart(" \t\r\n"u8).StartsWith("}"u8);
                    edits.Add(new BodyEdit(offset + 1, offset + 1, empty ? "\"include_usage\":true"u8.ToArray() : "\"include_usage\":true,"u8.ToArray()));
                }
            }
            else
            {
                edits.Add(new BodyEdit(objectStart, objectStart, "\"stream_options\":{\"include_usage\":true},"u8.ToArray()));
            }
        }

        if (outputCeiling is { } ceiling)
        {
            var value = System.Text.Encoding.ASCII.GetBytes(ceiling.ToString(System.Globalization.CultureInfo.InvariantCulture));
            if (MaxOutputRanges.Count == 0 && (_nullMaxCompletionTokens ?? _nullMaxTokens ?? _nullMaxOutputTokens) is { } empty)
            {
                // Over one null only, max_completion_tokens first: a number in a field the client left null would be a field
                // it did not use, and reasoning models refuse max_tokens ("use 'max_completion_tokens' instead").
                var (offset, length) = empty.GetOffsetAndLength(body.Length);
                edits.Add(new BodyEdit(offset, offset + length, value));
            }
            else if (MaxOutputRanges.Count == 0)
            {
                edits.Add(new BodyEdit(objectStart, objectStart, [.. ceilingField, .. value, (byte)',']));
            }

            foreach (var range in MaxOutputRanges)
            {
                var (offset, length) = range.GetOffsetAndLength(body.Length);
                edits.Add(new BodyEdit(offset, offset + length, value));
            }
        }
    }
}

/// <summary>
/// One string of a request's prompt: its unescaped text at <paramref name="TextStart"/> in
/// <see cref="ChatRequest.PromptText"/>, and its JSON string token, quotes included, at
/// <paramref name="BodyStart"/>..<paramref name="BodyEnd"/> in the body.
/// </summary>
public readonly record struct PromptString(int TextStart, int TextLength, int BodyStart, int BodyEnd);
