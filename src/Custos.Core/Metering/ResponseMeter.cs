using System.Buffers;
using System.Text;
using System.Text.Json;
using Custos.Errors;
using Custos.Policy;

namespace Custos.Metering;

/// <summary>
/// Reads token usage from a provider response as it passes to the client, without holding it back:
/// a JSON body is copied aside (up to a cap) and read at the end; an SSE stream is read event by event.
/// For OpenAI streams where the gateway itself asked for usage, the meter also hides what that request
/// added (the usage-only final chunk and <c>"usage":null</c> on every chunk), so the client receives
/// exactly what it would have without the gateway.
/// <para>
/// A stream goes to the client event by event, each as soon as it is complete (a client can dispatch no less). An error
/// event of the provider's (OpenAI's <c>data: {"error":…}</c>, Anthropic's <c>event: error</c>) is not passed on: it may
/// name the provider account or its key, as a provider's error body may, so the client gets the gateway's own error
/// event in its place, in the API's shape, with the request id (docs/architecture.md, "Provider errors are not passed
/// through").
/// </para>
/// </summary>
/// <remarks>Not thread-safe: one meter per response.</remarks>
public sealed class ResponseMeter : IDisposable
{
    /// <summary>Bodies larger than this are passed through but not read for usage (embeddings can be large).</summary>
    public const int MaxJsonCapture = 16 * 1024 * 1024;

    private const int MaxTextCapture = 64 * 1024;

    /// <summary>The longest run of members before <c>"choices"</c> that is remembered (see <see cref="ReadOpenAIChunk"/>).</summary>
    private const int MaxChunkHead = 1024;

    private readonly ProviderKind _provider;
    private bool _stream;
    private bool _hideInjectedUsage;
    private byte[] _pending = [];
    private int _pendingLength;
    private bool _captureOverflow;
    private bool _textReadAgain; // a JSON body's text read after its end, for an estimate
    private byte[] _text = []; // the text seen (content deltas), unescaped, as UTF-8: decoded only if an estimate is needed
    private int _textLength;
    private long _textMissed; // bytes of text past MaxTextCapture, as they came (escaped)

    // The members an OpenAI chunk had before "choices" (id, object, created, model, ...), read and checked in full once:
    // every chunk of a stream repeats them, so a chunk that starts with the same bytes is read from "choices" on.
    private byte[] _chunkHead = [];
    private int _chunkHeadLength;
    private int _chunkHeadComma; // where the comma after the last of those members is
    private byte[] _chunkRest = [];

    // What a chunk of text had after its head, read and checked in full once: the bytes up to its one string of text
    // (the middle) and after it (the tail). Chunks that differ from it only in that string are read as that string.
    private byte[] _chunkMiddle = [];
    private int _chunkMiddleLength;
    private byte[] _chunkTail = [];
    private int _chunkTailLength;
    private (int Start, int End)? _chunkTailNullUsage; // "usage":null in the tail, counted back from the chunk's end

    /// <summary>Creates a meter for one response.</summary>
    /// <param name="provider">The wire format of the response.</param>
    /// <param name="stream">True for an SSE response.</param>
    /// <param name="hideInjectedUsage">True when the gateway added <c>include_usage</c> the client did not ask for.</param>
    public ResponseMeter(ProviderKind provider, bool stream, bool hideInjectedUsage)
    {
        _provider = provider;
        _stream = stream;
        _hideInjectedUsage = hideInjectedUsage && provider == ProviderKind.OpenAI && stream;
    }

    /// <summary>
    /// True when the response is an OpenAI Responses API answer (<c>POST /v1/responses</c>): a stream of named events
    /// (<c>response.created</c>, <c>response.output_text.delta</c>, …) whose terminal one, <c>response.completed</c> or
    /// <c>response.incomplete</c>, carries the usage in its <c>response.usage</c>; <c>response.failed</c> and
    /// <c>error</c> are the provider's errors. A JSON answer's <c>usage</c> is read as any other.
    /// </summary>
    public bool ResponsesApi { get; init; }

    /// <summary>True while the response is read as an SSE stream.</summary>
    public bool IsStream => _stream;

    /// <summary>
    /// Reads the response as one JSON body although a stream was asked for: a provider that ignores <c>stream</c> (an
    /// OpenAI-compatible server, or an endpoint without streams) answers <c>application/json</c>, whose usage counts as
    /// reported, and which is complete when its body is. Before the first byte only.
    /// </summary>
    public void ReadAsJson()
    {
        _stream = false;
        _hideInjectedUsage = false;
    }

    /// <summary>Input tokens the provider reported, or null.</summary>
    public long? InputTokens { get; private set; }

    /// <summary>
    /// Of <see cref="InputTokens"/>, those read from the provider's prompt cache, or null when it reported none: OpenAI's
    /// <c>usage.prompt_tokens_details.cached_tokens</c> (its <c>prompt_tokens</c> include them), Anthropic's
    /// <c>usage.cache_read_input_tokens</c> (its <c>input_tokens</c> do not: <see cref="InputTokens"/> adds them).
    /// </summary>
    public long? CachedInputTokens { get; private set; }

    /// <summary>
    /// Of <see cref="InputTokens"/>, those written to the provider's prompt cache (Anthropic's
    /// <c>usage.cache_creation_input_tokens</c>, added to <see cref="InputTokens"/>), or null when it reported none.
    /// </summary>
    public long? CacheWriteInputTokens { get; private set; }

    /// <summary>Output tokens the provider reported, or null.</summary>
    public long? OutputTokens { get; private set; }

    /// <summary>
    /// Of <see cref="OutputTokens"/>, those a reasoning model spent reasoning (<c>output_tokens_details.reasoning_tokens</c>,
    /// <c>completion_tokens_details.reasoning_tokens</c>), or null when it reported none. Billed as output, which they are part of.
    /// </summary>
    public long? ReasoningTokens { get; private set; }

    /// <summary>
    /// True when a JSON answer (not a stream) ended and is not one JSON document: cut short, empty, or not JSON at all.
    /// Known from the one read of the body for its usage, at <see cref="Complete"/>; false for a body over
    /// <see cref="MaxJsonCapture"/>, which is not read.
    /// </summary>
    public bool JsonMalformed { get; private set; }

    /// <summary>True once the stream's terminal event (<c>[DONE]</c> or <c>message_stop</c>) passed.</summary>
    public bool StreamCompleted { get; private set; }

    /// <summary>The request's id, which the error event written in place of a provider's carries.</summary>
    public string? RequestId { get; init; }

    /// <summary>True once the provider sent an error event in its stream: the response failed, however it ends.</summary>
    public bool StreamFailed { get; private set; }

    /// <summary>
    /// The provider's error event, as it described itself: its type and message, as sent (unredacted: for the operator's
    /// log, never the client), at most <see cref="MaxStreamErrorLength"/> characters; null when there was none.
    /// </summary>
    public string? StreamError { get; private set; }

    /// <summary>The most of a provider's error event kept in <see cref="StreamError"/>.</summary>
    public const int MaxStreamErrorLength = 512;

    /// <summary>
    /// True when the output differs from the input and must be taken from the output writer: for every stream (its
    /// events go out whole, and a provider's error event is replaced) and when the gateway's own usage request is hidden.
    /// </summary>
    public bool RewritesOutput => _stream;

    /// <summary>True when the provider reported usage.</summary>
    public bool HasUsage => InputTokens is not null || OutputTokens is not null;

    /// <summary>Bytes handed to the client.</summary>
    public long BytesOut { get; private set; }

    /// <summary>Whether chunks like the last chunk of text are read as their text (tests compare with reading every chunk whole).</summary>
    internal bool ReadsChunksLikeTheLast { get; init; } = true;

    /// <summary>Chunks read as the text between the last chunk's middle and tail (tests).</summary>
    internal int ChunksReadLikeTheLast { get; private set; }

    /// <summary>
    /// Takes the next chunk of the upstream body and writes what the client should receive to
    /// <paramref name="output"/>. Without rewriting, that is the chunk itself, at once.
    /// </summary>
    public void Process(ReadOnlySpan<byte> chunk, IBufferWriter<byte>? output)
    {
        if (!_stream)
        {
            Append(chunk, MaxJsonCapture);
            Forward(chunk, output);
            return;
        }

        Append(chunk, int.MaxValue);
        var consumed = 0;
        var pending = _pending.AsSpan(0, _pendingLength);
        while (true)
        {
            var rest = pending[consumed..];
            var end = IndexOfEventEnd(rest, out var separatorLength);
            if (end < 0)
            {
                break;
            }

            var evt = rest[..(end + separatorLength)];
            OnEvent(rest[..end], evt, output);
            consumed += end + separatorLength;
        }

        if (consumed > 0)
        {
            pending[consumed..].CopyTo(_pending);
            _pendingLength -= consumed;
        }
    }

    /// <summary>The upstream body ended: reads a JSON body's usage, or forwards a stream's unterminated remainder.</summary>
    public void Complete(IBufferWriter<byte>? output)
    {
        if (!_stream)
        {
            JsonMalformed = !_captureOverflow && _pendingLength == 0; // no body is no answer
            if (!_captureOverflow && _pendingLength > 0)
            {
                var body = _pending.AsSpan(0, _pendingLength);
                ReadJsonBody(body, captureText: false);
                if (OutputTokens is null)
                {
                    // No usage to trust: read the body again for the text to estimate from. Providers report usage,
                    // so the text is not decoded into strings for every response on the chance that one does not.
                    ReadJsonBody(body, captureText: true);
                }
            }

            return;
        }

        if (_pendingLength > 0)
        {
            // An event the stream ended in the middle of: no client dispatches it, but it goes on as it came, unless it is
            // the provider's error, which is replaced as a whole one would be.
            var remainder = _pending.AsSpan(0, _pendingLength);
            if (IsErrorEvent(remainder, out var data))
            {
                OnStreamError(data, output);
            }
            else
            {
                Forward(remainder, output);
            }
        }

        _pendingLength = 0;
    }

    /// <summary>Estimates output tokens from the text seen, when the provider reported none (or a count set aside as impossible).</summary>
    public long EstimateOutputTokens()
    {
        if (!_stream && _textLength == 0 && !_textReadAgain && !_captureOverflow && _pendingLength > 0)
        {
            // A JSON body with usage: its text was not read at its end. A count set aside needs it now; the usage read
            // again is the same.
            _textReadAgain = true;
            ReadJsonBody(_pending.AsSpan(0, _pendingLength), captureText: true);
        }

        if (_textLength == 0)
        {
            return 0;
        }

        var counted = TokenCounter.Count(Encoding.UTF8.GetString(_text, 0, _textLength).AsSpan());
        return _textMissed == 0 ? counted : (long)Math.Ceiling(counted * ((double)(_textLength + _textMissed) / _textLength));
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Return(ref _pending);
        Return(ref _chunkRest);
        Return(ref _chunkHead);
        Return(ref _chunkMiddle);
        Return(ref _chunkTail);
        Return(ref _text);
        _pendingLength = _chunkHeadLength = _chunkMiddleLength = _chunkTailLength = _textLength = 0;
    }

    /// <summary>Makes <paramref name="buffer"/> (rented, or empty) at least <paramref name="needed"/> bytes long, keeping its first <paramref name="keep"/>.</summary>
    private static void Grow(ref byte[] buffer, int keep, int needed, int minimum)
    {
        if (buffer.Length >= needed)
        {
            return;
        }

        var larger = ArrayPool<byte>.Shared.Rent(Math.Max(needed, Math.Max(minimum, buffer.Length * 2)));
        buffer.AsSpan(0, keep).CopyTo(larger);
        Return(ref buffer);
        buffer = larger;
    }

    /// <summary>Gives a rented <paramref name="buffer"/> back to the pool and leaves it empty.</summary>
    private static void Return(ref byte[] buffer)
    {
        if (buffer.Length > 0)
        {
            ArrayPool<byte>.Shared.Return(buffer);
            buffer = [];
        }
    }

    private void Forward(ReadOnlySpan<byte> bytes, IBufferWriter<byte>? output)
    {
        output?.Write(bytes);
        BytesOut += bytes.Length;
    }

    private void Append(ReadOnlySpan<byte> chunk, int cap)
    {
        if (_captureOverflow)
        {
            return;
        }

        var needed = _pendingLength + chunk.Length;
        if (needed > cap)
        {
            _captureOverflow = true;
            return;
        }

        Grow(ref _pending, _pendingLength, needed, 4096);
        chunk.CopyTo(_pending.AsSpan(_pendingLength));
        _pendingLength = needed;
    }

    private static int IndexOfEventEnd(ReadOnlySpan<byte> buffer, out int separatorLength)
    {
        // Line ends found with the vectorised search: an event's JSON is mostly bytes that are not '\n'.
        for (var i = NextLineEnd(buffer, -1); i >= 0 && i < buffer.Length - 1; i = NextLineEnd(buffer, i))
        {
            if (buffer[i + 1] == '\n')
            {
                separatorLength = 2;
                return i;
            }

            if (buffer[i + 1] == '\r' && i + 2 < buffer.Length && buffer[i + 2] == '\n')
            {
                separatorLength = 3;
                return i;
            }
        }

        separatorLength = 0;
        return -1;
    }

    /// <summary>The first '\n' after index <paramref name="after"/> (-1: from the start), or -1.</summary>
    private static int NextLineEnd(ReadOnlySpan<byte> buffer, int after)
    {
        var next = buffer[(after + 1)..].IndexOf((byte)'\n');
        return next < 0 ? -1 : after + 1 + next;
    }

    private void OnEvent(ReadOnlySpan<byte> body, ReadOnlySpan<byte> wholeEvent, IBufferWriter<byte>? output)
    {
        var data = DataOf(body, out var errorName);
        if (data.SequenceEqual("[DONE]"u8))
        {
            StreamCompleted = true;
            Forward(wholeEvent, output);
            return;
        }

        if (data.IsEmpty || data[0] != '{')
        {
            if (errorName)
            {
                OnStreamError(default, output); // "event: error" with no JSON to say more
                return;
            }

            Forward(wholeEvent, output);
            return;
        }

        if (ResponsesApi)
        {
            if (ReadResponsesEvent(data) || errorName)
            {
                OnStreamError(data, output);
                return;
            }

            Forward(wholeEvent, output);
            return;
        }

        if (_provider == ProviderKind.Anthropic)
        {
            if (ReadAnthropicEvent(data) || errorName)
            {
                OnStreamError(data, output);
                return;
            }

            Forward(wholeEvent, output);
            return;
        }

        var usageOnly = ReadOpenAIChunk(data, out var nullUsageRange, out var isError);
        if (isError || errorName)
        {
            OnStreamError(data, output);
            return;
        }

        if (!_hideInjectedUsage)
        {
            Forward(wholeEvent, output);
            return;
        }

        if (usageOnly)
        {
            return; // The chunk exists only because the gateway asked for usage.
        }

        if (nullUsageRange is { } range)
        {
            // Cut ',"usage":null' (or '"usage":null,') out of the data line, keep everything else.
            var dataStart = wholeEvent.IndexOf(data);
            var (offset, length) = range.GetOffsetAndLength(data.Length);
            Forward(wholeEvent[..(dataStart + offset)], output);
            Forward(wholeEvent[(dataStart + offset + length)..], output);
            return;
        }

        Forward(wholeEvent, output);
    }

    /// <summary>
    /// The data of an SSE event (its last <c>data:</c> line; providers send one), and whether its <c>event:</c> field names
    /// an error (Anthropic's <c>event: error</c>).
    /// </summary>
    private static ReadOnlySpan<byte> DataOf(ReadOnlySpan<byte> body, out bool errorName)
    {
        // An event is lines of "field: value"; only data lines matter here, and an event name of "error".
        var data = ReadOnlySpan<byte>.Empty;
        errorName = false;
        var remaining = body;
        while (!remaining.IsEmpty)
        {
            var newline = remaining.IndexOf((byte)'\n');
            var line = newline < 0 ? remaining : remaining[..newline];
            remaining = newline < 0 ? [] : remaining[(newline + 1)..];
            line = line.TrimEnd((byte)'\r');
            if (line.StartsWith("data:"u8))
            {
                data = line[5..].TrimStart((byte)' ');
            }
            else if (line.StartsWith("event:"u8) && line[6..].Trim((byte)' ').SequenceEqual("error"u8))
            {
                errorName = true;
            }
        }

        return data;
    }

    /// <summary>Whether an event, complete or not, is the provider's error: named so, or whose JSON is one.</summary>
    private bool IsErrorEvent(ReadOnlySpan<byte> evt, out ReadOnlySpan<byte> data)
    {
        data = DataOf(evt, out var errorName);
        if (errorName)
        {
            return true;
        }

        if (data.IsEmpty || data[0] != '{')
        {
            return false;
        }

        var reader = new Utf8JsonReader(data, isFinalBlock: false, state: default);
        try
        {
            while (reader.Read())
            {
                if (reader.TokenType == JsonTokenType.PropertyName && reader.CurrentDepth == 1
                    && (reader.ValueTextEquals("error"u8) || (_provider == ProviderKind.Anthropic && reader.ValueTextEquals("type"u8) && reader.Read() && reader.TokenType == JsonTokenType.String && reader.ValueTextEquals("error"u8))))
                {
                    return true;
                }
            }
        }
        catch (Exception e) when (IsUnreadable(e))
        {
            // Cut or malformed: what was read decides.
        }

        return false;
    }

    /// <summary>
    /// The provider sent an error event: it is kept for the operator's log (<see cref="StreamError"/>) and the client gets
    /// the gateway's error event in its place. Only an error event comes here: the chunks of a healthy stream never do.
    /// </summary>
    private void OnStreamError(ReadOnlySpan<byte> data, IBufferWriter<byte>? output)
    {
        StreamFailed = true;
        if (StreamError is null)
        {
            var text = Encoding.UTF8.GetString(data.Length > MaxStreamErrorLength * 4 ? data[..(MaxStreamErrorLength * 4)] : data);
            StreamError = text.Length > MaxStreamErrorLength ? text[..MaxStreamErrorLength] : text;
        }

        WriteErrorEvent(output);
    }

    /// <summary>
    /// The gateway ends the stream before the provider did (<paramref name="reason"/>, for example
    /// <see cref="Reasons.KilledInFlight"/>): what is held of an unfinished event is dropped, as no client would dispatch
    /// it, and the client gets the gateway's error event with <paramref name="reason"/>'s code in its place.
    /// </summary>
    public void Interrupt(ReasonCode reason, IBufferWriter<byte>? output)
    {
        ArgumentNullException.ThrowIfNull(reason);
        _pendingLength = 0;
        WriteErrorEvent(output, reason);
    }

    /// <summary>
    /// Writes the gateway's error event in the API's shape: OpenAI's <c>data: {"error":{…}}</c>, Anthropic's
    /// <c>event: error</c> with <c>{"type":"error","error":{…}}</c>; either with the gateway's message, code (that of
    /// <paramref name="reason"/>, by default <see cref="Reasons.UpstreamStreamFailed"/>) and the request id, and nothing
    /// of the provider's.
    /// </summary>
    private void WriteErrorEvent(IBufferWriter<byte>? output, ReasonCode? reason = null)
    {
        StreamFailed = true;
        reason ??= Reasons.UpstreamStreamFailed;
        var buffer = new ArrayBufferWriter<byte>(256); // an error's: no healthy stream comes here
        if (ResponsesApi)
        {
            WriteResponsesErrorEvent(buffer, reason);
            Forward("event: error\ndata: "u8, output);
            Forward(buffer.WrittenSpan, output);
            Forward("\n\n"u8, output);
            return;
        }

        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            if (_provider == ProviderKind.Anthropic)
            {
                writer.WriteString("type", "error");
            }

            writer.WriteStartObject("error");
            writer.WriteString("type", _provider == ProviderKind.Anthropic ? reason.AnthropicType : reason.Type);
            writer.WriteString("message", reason.Message);
            writer.WriteString("code", reason.Code);
            writer.WriteNull("param");
            if (RequestId is not null)
            {
                writer.WriteString("request_id", RequestId);
            }

            writer.WriteEndObject();
            writer.WriteEndObject();
        }

        Forward(_provider == ProviderKind.Anthropic ? "event: error\ndata: "u8 : "data: "u8, output);
        Forward(buffer.WrittenSpan, output);
        Forward("\n\n"u8, output);
    }

    /// <summary>
    /// The Responses API's error event (<c>event: error</c>): <c>type</c>, <c>code</c>, <c>message</c>, <c>param</c> and the
    /// <c>sequence_number</c> after that of the last event passed on (the one of the provider's error it replaces), with
    /// the request id, and nothing of the provider's.
    /// </summary>
    private void WriteResponsesErrorEvent(ArrayBufferWriter<byte> buffer, ReasonCode reason)
    {
        using var writer = new Utf8JsonWriter(buffer);
        writer.WriteStartObject();
        writer.WriteString("type", "error");
        writer.WriteString("code", reason.Code);
        writer.WriteString("message", reason.Message);
        writer.WriteNull("param");
        writer.WriteNumber("sequence_number", _sequenceNumber + 1);
        if (RequestId is not null)
        {
            writer.WriteString("request_id", RequestId);
        }

        writer.WriteEndObject();
    }

    private long _sequenceNumber = -1; // the sequence_number of the last Responses API event passed on

    /// <summary>
    /// Reads one Responses API event; true when it is the provider's error: <c>error</c>, or <c>response.failed</c> (whose
    /// usage, if any, is read first). Text deltas (<c>delta</c>: output text, a function call's arguments, a refusal, a
    /// reasoning summary) are kept for an estimate; <c>response.completed</c> and <c>response.incomplete</c> end the stream,
    /// and their <c>response.usage</c> is the usage. The text the terminal event repeats is not read again.
    /// </summary>
    private bool ReadResponsesEvent(ReadOnlySpan<byte> data)
    {
        var isError = false;
        long? sequence = null;
        var reader = new Utf8JsonReader(data);
        try
        {
            reader.Read();
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                if (reader.ValueTextEquals("type"u8))
                {
                    reader.Read();
                    if (reader.TokenType != JsonTokenType.String)
                    {
                        reader.Skip();
                    }
                    else if (reader.ValueTextEquals("response.completed"u8) || reader.ValueTextEquals("response.incomplete"u8))
                    {
                        StreamCompleted = true;
                    }
                    else if (reader.ValueTextEquals("response.failed"u8) || reader.ValueTextEquals("error"u8))
                    {
                        isError = true;
                    }
                }
                else if (reader.ValueTextEquals("sequence_number"u8))
                {
                    reader.Read();
                    if (reader.TokenType == JsonTokenType.Number && reader.TryGetInt64(out var number))
                    {
                        sequence = number;
                    }
                }
                else if (reader.ValueTextEquals("delta"u8))
                {
                    reader.Read();
                    if (reader.TokenType == JsonTokenType.String)
                    {
                        CaptureText(ref reader);
                    }
                    else
                    {
                        reader.Skip();
                    }
                }
                else if (reader.ValueTextEquals("response"u8))
                {
                    reader.Read();
                    if (reader.TokenType != JsonTokenType.StartObject)
                    {
                        reader.Skip();
                        continue;
                    }

                    while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
                    {
                        var isUsage = reader.ValueTextEquals("usage"u8);
                        reader.Read();
                        if (isUsage && reader.TokenType == JsonTokenType.StartObject)
                        {
                            ReadUsageObject(ref reader);
                        }
                        else
                        {
                            reader.Skip();
                        }
                    }
                }
                else
                {
                    reader.Read();
                    reader.Skip();
                }
            }
        }
        catch (Exception e) when (IsUnreadable(e))
        {
            // Passed on as it came (unless it said it is an error); it carries no usage to trust.
        }

        if (!isError && sequence is { } passed)
        {
            _sequenceNumber = passed; // an error event is replaced: the gateway's takes its number
        }

        return isError;
    }

    /// <summary>
    /// Reads one OpenAI chunk; true when it is the usage-only chunk (empty choices, usage set).
    /// <paramref name="isError"/> says whether it is an error instead (a top-level <c>"error"</c> that is not null).
    /// </summary>
    /// <remarks>
    /// Positions are kept in <paramref name="data"/>'s terms. When the chunk starts with the members an earlier chunk
    /// had before <c>"choices"</c> (<see cref="_chunkHead"/>), the reader gets "{" and what follows them instead: those
    /// members were read and checked then, and the rest is valid JSON after "{" exactly when the whole chunk is valid
    /// after them (but for a trailing comma, which yields nothing either way). Every chunk has them, so this reads about
    /// half the bytes (docs/performance.md, "Stream chunks read from their choices on").
    /// </remarks>
    private bool ReadOpenAIChunk(ReadOnlySpan<byte> data, out Range? nullUsageRange, out bool isError)
    {
        isError = false;
        if (TryReadLikeLastChunk(data, out nullUsageRange))
        {
            return false;
        }

        nullUsageRange = null;
        var emptyChoices = false;
        var hasUsage = false;
        var texts = 0; // the strings of text read, and where the last one was in data
        var textStart = 0;
        var textEnd = 0;
        var json = data;
        var offset = 0; // data index = json index + offset
        if (_chunkHeadLength > 0 && data.Length > _chunkHeadLength && data.StartsWith(_chunkHead.AsSpan(0, _chunkHeadLength)))
        {
            var rest = data[_chunkHeadLength..];
            Grow(ref _chunkRest, 0, rest.Length + 1, 512);
            _chunkRest[0] = (byte)'{';
            rest.CopyTo(_chunkRest.AsSpan(1));
            json = _chunkRest.AsSpan(0, rest.Length + 1);
            offset = _chunkHeadLength - 1;
        }

        var reader = new Utf8JsonReader(json);
        try
        {
            reader.Read();
            var previousEnd = offset == 0 ? (int)reader.BytesConsumed : _chunkHeadComma; // just after '{', or the head's comma
            var inHead = offset == 0; // still among the members before "choices", none of them "usage"
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                var propertyStart = offset + (int)reader.TokenStartIndex;
                if (reader.ValueTextEquals("usage"u8))
                {
                    inHead = false;
                    reader.Read();
                    if (reader.TokenType == JsonTokenType.Null)
                    {
                        // Remove from the end of the previous member (taking its comma) to the end of null;
                        // for a first member, from the property to just past the following comma.
                        var end = offset + (int)reader.BytesConsumed;
                        var after = data[end..];
                        var comma = after.IndexOfAnyExcept(" \t\r\n"u8);
                        nullUsageRange = previousEnd == propertyStart || data[previousEnd..propertyStart].IndexOf((byte)',') < 0
                            ? (comma >= 0 && after[comma] == ',' ? propertyStart..(end + comma + 1) : propertyStart..end)
                            : previousEnd..end;
                    }
                    else if (reader.TokenType == JsonTokenType.StartObject)
                    {
                        hasUsage = true;
                        ReadUsageObject(ref reader);
                    }
                    else
                    {
                        reader.Skip();
                    }
                }
                else if (reader.ValueTextEquals("choices"u8))
                {
                    if (inHead)
                    {
                        RememberChunkHead(data[..propertyStart]);
                        inHead = false;
                    }

                    reader.Read();
                    if (reader.TokenType == JsonTokenType.StartArray)
                    {
                        var arrayDepth = reader.CurrentDepth;
                        reader.Read();
                        emptyChoices = reader.TokenType == JsonTokenType.EndArray;
                        while (reader.TokenType != JsonTokenType.EndArray || reader.CurrentDepth != arrayDepth)
                        {
                            if (reader.TokenType == JsonTokenType.PropertyName && IsOpenAIText(ref reader))
                            {
                                reader.Read();
                                if (reader.TokenType == JsonTokenType.String)
                                {
                                    texts++;
                                    textStart = offset + (int)reader.TokenStartIndex;
                                    textEnd = offset + (int)reader.BytesConsumed;
                                    CaptureText(ref reader);
                                }

                                continue;
                            }

                            reader.Read();
                        }
                    }
                    else
                    {
                        reader.Skip();
                    }
                }
                else if (reader.ValueTextEquals("error"u8))
                {
                    reader.Read();
                    isError |= reader.TokenType != JsonTokenType.Null;
                    reader.Skip();
                }
                else
                {
                    reader.Read();
                    reader.Skip();
                }

                previousEnd = offset + (int)reader.BytesConsumed;
            }
        }
        catch (Exception e) when (IsUnreadable(e))
        {
            return false;
        }

        if (texts == 1 && !hasUsage)
        {
            RememberTextChunk(data, textStart, textEnd, nullUsageRange);
        }

        return emptyChoices && hasUsage;
    }

    /// <summary>
    /// Reads <paramref name="data"/> as the last chunk remembered by <see cref="RememberTextChunk"/> when it is that chunk
    /// with another string of text: the same head (OpenAI's; an Anthropic event has none), middle and tail byte for byte,
    /// and between them one JSON string, which the reader checks as it would have in the whole chunk. A string token for
    /// a string token leaves valid JSON valid and every member where it was, so the chunk reads as that one had: not
    /// usage, its <c>"usage":null</c> where that one's was, its text this string (docs/performance.md, "A chunk of text
    /// read as its text").
    /// </summary>
    private bool TryReadLikeLastChunk(ReadOnlySpan<byte> data, out Range? nullUsageRange)
    {
        nullUsageRange = null;
        var before = _chunkHeadLength + _chunkMiddleLength;
        if (_chunkMiddleLength == 0 || !ReadsChunksLikeTheLast || data.Length < before + _chunkTailLength + 2
            || !data.StartsWith(_chunkHead.AsSpan(0, _chunkHeadLength))
            || !data[_chunkHeadLength..].StartsWith(_chunkMiddle.AsSpan(0, _chunkMiddleLength))
            || !data.EndsWith(_chunkTail.AsSpan(0, _chunkTailLength)))
        {
            return false;
        }

        var text = data[before..^_chunkTailLength];
        var reader = new Utf8JsonReader(text);
        try
        {
            if (!reader.Read() || reader.TokenType != JsonTokenType.String || reader.BytesConsumed != text.Length)
            {
                return false; // more than one string, or not a string: read in full
            }
        }
        catch (JsonException)
        {
            return false;
        }

        CaptureText(ref reader);
        ChunksReadLikeTheLast++;
        if (_chunkTailNullUsage is { } usage)
        {
            nullUsageRange = (data.Length - usage.Start)..(data.Length - usage.End);
        }

        return true;
    }

    /// <summary>Keeps what a chunk of one string of text, read in full, had around that string (see <see cref="TryReadLikeLastChunk"/>).</summary>
    private void RememberTextChunk(ReadOnlySpan<byte> data, int textStart, int textEnd, Range? nullUsageRange)
    {
        _chunkMiddleLength = 0;
        var (usageStart, usageLength) = nullUsageRange?.GetOffsetAndLength(data.Length) ?? (0, 0);
        if ((_chunkHeadLength == 0 && _provider == ProviderKind.OpenAI) || textStart <= _chunkHeadLength || textStart - _chunkHeadLength > MaxChunkHead || data.Length - textEnd > MaxChunkHead
            || !data.StartsWith(_chunkHead.AsSpan(0, _chunkHeadLength))
            || (nullUsageRange is not null && usageStart < textEnd))
        {
            return;
        }

        var middle = data[_chunkHeadLength..textStart];
        var tail = data[textEnd..];
        Grow(ref _chunkMiddle, 0, middle.Length, 256);
        Grow(ref _chunkTail, 0, tail.Length, 256);
        middle.CopyTo(_chunkMiddle);
        tail.CopyTo(_chunkTail);
        _chunkTailLength = tail.Length;
        _chunkTailNullUsage = nullUsageRange is null ? null : (data.Length - usageStart, data.Length - usageStart - usageLength);
        _chunkMiddleLength = middle.Length;
    }

    /// <summary>Keeps <paramref name="head"/>: "{", then whole members and the comma after the last, all read and checked.</summary>
    private void RememberChunkHead(ReadOnlySpan<byte> head)
    {
        var comma = head.LastIndexOf((byte)',');
        if (comma < 0 || head.Length > MaxChunkHead)
        {
            return;
        }

        Grow(ref _chunkHead, 0, head.Length, 256);
        head.CopyTo(_chunkHead);
        _chunkHeadLength = head.Length;
        _chunkHeadComma = comma;
    }

    /// <summary>Reads one Anthropic event; true when it is an error (<c>"type":"error"</c>).</summary>
    private bool ReadAnthropicEvent(ReadOnlySpan<byte> data)
    {
        if (TryReadLikeLastChunk(data, out _))
        {
            return false;
        }

        var isError = false;

        var texts = 0; // as in ReadOpenAIChunk: an event of one string of text and nothing else read is remembered
        var textStart = 0;
        var textEnd = 0;
        var other = false;
        var reader = new Utf8JsonReader(data);
        try
        {
            while (reader.Read())
            {
                if (reader.TokenType != JsonTokenType.PropertyName)
                {
                    continue;
                }

                if (reader.ValueTextEquals("type"u8) && reader.CurrentDepth == 1)
                {
                    reader.Read();
                    if (reader.TokenType == JsonTokenType.String && reader.ValueTextEquals("message_stop"u8))
                    {
                        StreamCompleted = true;
                        other = true;
                    }
                    else if (reader.TokenType == JsonTokenType.String && reader.ValueTextEquals("error"u8))
                    {
                        isError = true;
                        other = true;
                    }
                }
                else if (reader.ValueTextEquals("usage"u8))
                {
                    // message_start's usage is inside its message, with a placeholder output count (1); only message_delta's,
                    // at the top, counts the output. A stream cut before it is estimated, not metered as one token.
                    var final = reader.CurrentDepth == 1;
                    reader.Read();
                    if (reader.TokenType == JsonTokenType.StartObject)
                    {
                        other = true;
                        ReadUsageObject(ref reader, outputFinal: final);
                    }
                }
                else if (reader.ValueTextEquals("text"u8) || reader.ValueTextEquals("partial_json"u8) || reader.ValueTextEquals("thinking"u8))
                {
                    reader.Read();
                    if (reader.TokenType == JsonTokenType.String)
                    {
                        texts++;
                        textStart = (int)reader.TokenStartIndex;
                        textEnd = (int)reader.BytesConsumed;
                        CaptureText(ref reader);
                    }
                }
            }
        }
        catch (Exception e) when (IsUnreadable(e))
        {
            // A malformed event is passed on as it is (unless it said it is an error); it carries no usage we can trust.
            return isError;
        }

        if (texts == 1 && !other)
        {
            RememberTextChunk(data, textStart, textEnd, nullUsageRange: null);
        }

        return isError;
    }

    private void ReadJsonBody(ReadOnlySpan<byte> body, bool captureText)
    {
        var reader = new Utf8JsonReader(body);
        try
        {
            while (reader.Read())
            {
                if (reader.TokenType != JsonTokenType.PropertyName)
                {
                    continue;
                }

                if (reader.CurrentDepth == 1 && reader.ValueTextEquals("usage"u8))
                {
                    reader.Read();
                    if (reader.TokenType == JsonTokenType.StartObject)
                    {
                        ReadUsageObject(ref reader);
                    }
                }
                else if (captureText && IsOpenAIText(ref reader))
                {
                    reader.Read();
                    if (reader.TokenType == JsonTokenType.String)
                    {
                        CaptureText(ref reader);
                    }
                }
                else if (captureText && _provider == ProviderKind.Anthropic && (reader.ValueTextEquals("input"u8) || reader.ValueTextEquals("thinking"u8)))
                {
                    // A tool_use block's input, an object the model wrote (streamed, it is the partial_json strings), and a
                    // thinking block's text: output as much as the text is.
                    reader.Read();
                    if (reader.TokenType == JsonTokenType.String)
                    {
                        CaptureText(ref reader);
                    }
                    else if (reader.TokenType is JsonTokenType.StartObject or JsonTokenType.StartArray)
                    {
                        var start = (int)reader.TokenStartIndex;
                        reader.Skip();
                        CaptureRaw(body[start..(int)reader.BytesConsumed]);
                    }
                }
            }
        }
        catch (Exception e) when (IsUnreadable(e))
        {
            // Not JSON after all (or cut short): no usage past where it broke. The reader went through the whole body, so
            // reaching its end without this says the body is one complete JSON document.
            JsonMalformed |= e is JsonException;
        }
    }

    /// <summary>
    /// What <see cref="Utf8JsonReader"/> throws on bytes that are not JSON, or on JSON whose names or strings are not
    /// text: comparing a name such as "\ude00" (half a surrogate pair) throws <see cref="InvalidOperationException"/>.
    /// Either way the provider's bytes go on to the client as they came, and carry no usage to trust.
    /// </summary>
    private static bool IsUnreadable(Exception exception) => exception is JsonException or InvalidOperationException;

    /// <summary>
    /// Reads an OpenAI or Anthropic usage object, leaving the reader on its end; its output count only when
    /// <paramref name="outputFinal"/> (not Anthropic's placeholder in message_start).
    /// </summary>
    private void ReadUsageObject(ref Utf8JsonReader reader, bool outputFinal = true)
    {
        long? input = null, output = null, cacheRead = null, cacheWrite = null, openAICached = null, reasoning = null;
        var outputUnreadable = false;
        var depth = reader.CurrentDepth;
        while (reader.Read() && !(reader.TokenType == JsonTokenType.EndObject && reader.CurrentDepth == depth))
        {
            if (reader.TokenType != JsonTokenType.PropertyName || reader.CurrentDepth != depth + 1)
            {
                continue;
            }

            var isInput = reader.ValueTextEquals("prompt_tokens"u8) || reader.ValueTextEquals("input_tokens"u8);
            var isOutput = reader.ValueTextEquals("completion_tokens"u8) || reader.ValueTextEquals("output_tokens"u8);
            var isCacheRead = reader.ValueTextEquals("cache_read_input_tokens"u8);
            var isCacheWrite = reader.ValueTextEquals("cache_creation_input_tokens"u8);
            var isDetails = reader.ValueTextEquals("prompt_tokens_details"u8) || reader.ValueTextEquals("input_tokens_details"u8);
            var isOutputDetails = reader.ValueTextEquals("completion_tokens_details"u8) || reader.ValueTextEquals("output_tokens_details"u8);
            reader.Read();
            if (isDetails && reader.TokenType == JsonTokenType.StartObject)
            {
                openAICached = ReadDetail(ref reader, "cached_tokens"u8);
                continue;
            }

            if (isOutputDetails && reader.TokenType == JsonTokenType.StartObject)
            {
                reasoning = ReadDetail(ref reader, "reasoning_tokens"u8);
                continue;
            }

            if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt64(out var value) || value < 0)
            {
                reader.Skip(); // a count below zero would be a refund to every budget it is charged to: not a count
                outputUnreadable |= isOutput;
                continue;
            }

            if (isInput)
            {
                input = value;
            }
            else if (isOutput && outputFinal)
            {
                output = value;
            }
            else if (isCacheRead)
            {
                cacheRead = value;
            }
            else if (isCacheWrite)
            {
                cacheWrite = value;
            }
        }

        // Anthropic reports input once (message_start) and cumulative output later (message_delta); its input_tokens
        // exclude what was read from or written to the cache, which is input all the same.
        if (input is not null || cacheRead is not null || cacheWrite is not null)
        {
            InputTokens = Saturating.Add(Saturating.Add(input ?? 0, cacheRead ?? 0), cacheWrite ?? 0);
            if (cacheRead is not null || cacheWrite is not null)
            {
                (CachedInputTokens, CacheWriteInputTokens) = (cacheRead, cacheWrite);
            }
            else if (openAICached is { } cached && input is { } prompt)
            {
                CachedInputTokens = Math.Min(cached, prompt); // OpenAI's prompt_tokens include them: never more than all
            }
        }

        if (output is not null)
        {
            OutputTokens = output;
            ReasoningTokens = reasoning is { } thought ? Math.Min(thought, output.Value) : null; // part of the output: never more
        }
        else if (outputUnreadable)
        {
            // An output count that is there but is no count ("10", 1.5, -1) is unknown, not zero, and not the count an
            // earlier event gave (Anthropic's message_start carries a placeholder): the gateway estimates it.
            OutputTokens = null;
        }
        else if (input is not null && _provider == ProviderKind.OpenAI)
        {
            OutputTokens = 0; // embeddings: prompt_tokens and total_tokens only.
        }
    }

    /// <summary>
    /// Reads an OpenAI details object (<c>prompt_tokens_details</c> or the Responses API's <c>input_tokens_details</c> for
    /// <c>cached_tokens</c>; <c>completion_tokens_details</c> or <c>output_tokens_details</c> for <c>reasoning_tokens</c>)
    /// for the count named <paramref name="name"/>, leaving the reader on its end.
    /// </summary>
    private static long? ReadDetail(ref Utf8JsonReader reader, ReadOnlySpan<byte> name)
    {
        long? cached = null;
        var depth = reader.CurrentDepth;
        while (reader.Read() && !(reader.TokenType == JsonTokenType.EndObject && reader.CurrentDepth == depth))
        {
            if (reader.TokenType != JsonTokenType.PropertyName || reader.CurrentDepth != depth + 1)
            {
                continue;
            }

            var isCached = reader.ValueTextEquals(name);
            reader.Read();
            if (isCached && reader.TokenType == JsonTokenType.Number && reader.TryGetInt64(out var value) && value >= 0)
            {
                cached = value;
            }
            else
            {
                reader.Skip();
            }
        }

        return cached;
    }

    /// <summary>
    /// Whether the property the reader is on holds generated text, which the output estimate counts when a provider reports
    /// no usage: the content, and also a tool call's arguments and a refusal, which are output tokens as much.
    /// </summary>
    private static bool IsOpenAIText(ref Utf8JsonReader reader)
        => reader.ValueTextEquals("content"u8) || reader.ValueTextEquals("text"u8) || reader.ValueTextEquals("arguments"u8) || reader.ValueTextEquals("refusal"u8);

    /// <summary>Keeps <paramref name="json"/> (an object the model wrote, such as a tool's input) as text for the estimate, as it came.</summary>
    private void CaptureRaw(ReadOnlySpan<byte> json)
    {
        if (_textLength >= MaxTextCapture)
        {
            _textMissed += json.Length;
            return;
        }

        Grow(ref _text, _textLength, _textLength + json.Length, 1024);
        json.CopyTo(_text.AsSpan(_textLength));
        _textLength += json.Length;
    }

    /// <summary>Keeps the string the reader is on (a content delta), unescaped: copied as bytes, not made a string.</summary>
    /// <remarks>Every reader here reads one span, so the value is always in <see cref="Utf8JsonReader.ValueSpan"/>.</remarks>
    private void CaptureText(ref Utf8JsonReader reader)
    {
        var value = reader.ValueSpan;
        if (_textLength >= MaxTextCapture)
        {
            _textMissed += value.Length;
            return;
        }

        Grow(ref _text, _textLength, _textLength + value.Length, 1024); // unescaped, a string is no longer than in the JSON
        try
        {
            _textLength += reader.CopyString(_text.AsSpan(_textLength));
        }
        catch (InvalidOperationException)
        {
            // Valid JSON but no text, such as half of a surrogate pair ("\ud83d"), which a provider may split across
            // two chunks: kept as it came, escapes and all, for the estimate.
            value.CopyTo(_text.AsSpan(_textLength));
            _textLength += value.Length;
        }
    }
}
