using System.Buffers;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace Custos.Gateway.Demo;

/// <summary>Which provider's wire format an endpoint speaks.</summary>
internal enum WireFlavor
{
    /// <summary>OpenAI: <c>{"error":{...}}</c>, <c>x-request-id</c>.</summary>
    OpenAi,

    /// <summary>Anthropic: <c>{"type":"error","error":{...}}</c>, <c>request-id</c>.</summary>
    Anthropic,
}

/// <summary>Writes JSON bodies and provider error responses.</summary>
internal static class Wire
{
    /// <summary>Providers send UTF-8 as is; escape only what JSON requires.</summary>
    public static readonly JsonWriterOptions WriterOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>
    /// Writes a JSON body built by <paramref name="build"/>, with a Content-Length. With
    /// <paramref name="cut"/> only the first half is sent and the connection is then aborted.
    /// </summary>
    public static async Task WriteJsonAsync(HttpContext context, int status, Action<Utf8JsonWriter> build, bool cut = false)
    {
        var buffer = new ArrayBufferWriter<byte>(1024);
        using (var writer = new Utf8JsonWriter(buffer, WriterOptions))
        {
            build(writer);
        }

        var response = context.Response;
        response.StatusCode = status;
        response.ContentType = "application/json";
        if (cut)
        {
            await response.Body.WriteAsync(buffer.WrittenMemory[..(buffer.WrittenCount / 2)], context.RequestAborted);
            await response.Body.FlushAsync(context.RequestAborted);
            await MockModes.CutAsync(context);
            return;
        }

        response.ContentLength = buffer.WrittenCount;
        await response.Body.WriteAsync(buffer.WrittenMemory, context.RequestAborted);
    }

    /// <summary>A new provider-style request or object id: <paramref name="prefix"/> plus 24 random characters.</summary>
    public static string NewId(string prefix) => string.Concat(prefix, Guid.NewGuid().ToString("N").AsSpan(0, 24));

    /// <summary>Seconds since the Unix epoch, as <c>created</c> fields carry.</summary>
    public static long Now() => DateTimeOffset.UtcNow.ToUnixTimeSeconds();

    /// <summary>
    /// Sets the provider's request-id header, and the headers a real provider sends about the account a request was
    /// billed to: its organisation, its rate limits, and its CDN's cookie.
    /// </summary>
    public static void SetProviderHeaders(HttpContext context, WireFlavor flavor)
    {
        var headers = context.Response.Headers;
        if (flavor == WireFlavor.OpenAi)
        {
            headers["x-request-id"] = NewId("req_");
            headers["openai-organization"] = "org-custos-demo";
            headers["openai-project"] = "proj_custos_demo";
            headers["openai-processing-ms"] = "1";
            headers["x-ratelimit-limit-requests"] = "10000";
            headers["x-ratelimit-remaining-requests"] = "9999";
            headers["x-ratelimit-limit-tokens"] = "30000000";
            headers["x-ratelimit-remaining-tokens"] = "29999000";
        }
        else
        {
            headers["request-id"] = NewId("req_");
            headers["anthropic-organization-id"] = "00000000-0000-4000-8000-00000000c057";
            headers["anthropic-ratelimit-requests-limit"] = "4000";
            headers["anthropic-ratelimit-requests-remaining"] = "3999";
        }

        headers.SetCookie = "__cf_bm=custos-demo; path=/; HttpOnly; Secure; SameSite=None";
    }

    /// <summary>Writes a 400 <c>invalid_request_error</c> in the provider's own shape.</summary>
    public static Task BadRequestAsync(HttpContext context, WireFlavor flavor, string message, string? param = null) =>
        ErrorAsync(context, flavor, StatusCodes.Status400BadRequest, "invalid_request_error", message, param, code: null);

    /// <summary>Writes the error response a <c>mock-error-*</c> model asks for.</summary>
    public static Task MockErrorAsync(HttpContext context, WireFlavor flavor, MockMode mode)
    {
        var anthropic = flavor == WireFlavor.Anthropic;
        switch (mode)
        {
            case MockMode.Error500:
                return ErrorAsync(
                    context,
                    flavor,
                    StatusCodes.Status500InternalServerError,
                    anthropic ? "api_error" : "server_error",
                    $"The server had an error while processing your request (demo upstream key {MockModes.LeakedSecret}).",
                    param: null,
                    code: null);
            case MockMode.Error401:
                return ErrorAsync(
                    context,
                    flavor,
                    StatusCodes.Status401Unauthorized,
                    anthropic ? "authentication_error" : "invalid_request_error",
                    "Incorrect API key provided: sk-upst***leak. You can find your API key at https://platform.openai.com/account/api-keys.",
                    param: null,
                    code: "invalid_api_key");
            case MockMode.Error400:
                return ErrorAsync(
                    context,
                    flavor,
                    StatusCodes.Status400BadRequest,
                    "invalid_request_error",
                    "max_tokens is too large: 1000000. This model supports at most 16384 completion tokens.",
                    param: "max_tokens",
                    code: "invalid_value");
            case MockMode.Error429:
                context.Response.Headers.RetryAfter = "1";
                return ErrorAsync(
                    context,
                    flavor,
                    StatusCodes.Status429TooManyRequests,
                    anthropic ? "rate_limit_error" : "requests",
                    "Rate limit reached for requests per min (RPM): Limit 1, Used 1, Requested 1. Please try again in 1s.",
                    param: null,
                    code: "rate_limit_exceeded");
            case MockMode.Overloaded:
                context.Response.Headers.RetryAfter = "2";
                return ErrorAsync(
                    context,
                    flavor,
                    anthropic ? 529 : StatusCodes.Status503ServiceUnavailable,
                    anthropic ? "overloaded_error" : "server_error",
                    anthropic ? "Overloaded" : "The server is overloaded or not ready yet.",
                    param: null,
                    code: null);
            case MockMode.Redirect:
                context.Response.StatusCode = StatusCodes.Status307TemporaryRedirect;
                context.Response.Headers.Location = MockModes.RedirectTarget;
                return Task.CompletedTask;
            case MockMode.NoContent:
                context.Response.StatusCode = StatusCodes.Status204NoContent;
                return Task.CompletedTask;
            default:
                throw new ArgumentOutOfRangeException(nameof(mode), mode, "Not an error mode.");
        }
    }

    /// <summary>Writes an error body: OpenAI <c>{"error":{message,type,param,code}}</c> or Anthropic <c>{"type":"error","error":{type,message}}</c>.</summary>
    public static Task ErrorAsync(HttpContext context, WireFlavor flavor, int status, string type, string message, string? param, string? code)
    {
        SetProviderHeaders(context, flavor);
        return WriteJsonAsync(context, status, w =>
        {
            w.WriteStartObject();
            if (flavor == WireFlavor.Anthropic)
            {
                w.WriteString("type", "error");
                w.WriteStartObject("error");
                w.WriteString("type", type);
                w.WriteString("message", message);
                w.WriteEndObject();
            }
            else
            {
                w.WriteStartObject("error");
                w.WriteString("message", message);
                w.WriteString("type", type);
                WriteStringOrNull(w, "param", param);
                WriteStringOrNull(w, "code", code);
                w.WriteEndObject();
            }

            w.WriteEndObject();
        });
    }

    /// <summary>Writes a string property, or <c>null</c>.</summary>
    public static void WriteStringOrNull(Utf8JsonWriter writer, string name, string? value)
    {
        if (value is null)
        {
            writer.WriteNull(name);
        }
        else
        {
            writer.WriteString(name, value);
        }
    }
}

/// <summary>
/// A server-sent-event stream: each event is built into one buffer, written, and flushed so that events
/// really arrive separately.
/// </summary>
internal sealed class SseWriter : IDisposable
{
    private readonly HttpContext _context;
    private readonly ArrayBufferWriter<byte> _buffer = new(512);
    private readonly Utf8JsonWriter _json;
    private readonly ArrayBufferWriter<byte>? _whole;

    /// <summary>Sets the event-stream status and headers on <paramref name="context"/>'s response.</summary>
    /// <param name="context">The request.</param>
    /// <param name="sized">
    /// True to keep the events and send them whole, with a <c>Content-Length</c>, at <see cref="SendDoneAsync"/>
    /// (<see cref="MockMode.SizedStream"/>).
    /// </param>
    public SseWriter(HttpContext context, bool sized = false)
    {
        _context = context;
        _whole = sized ? new ArrayBufferWriter<byte>(4096) : null;
        _json = new Utf8JsonWriter(_buffer, Wire.WriterOptions);
        var response = context.Response;
        response.StatusCode = StatusCodes.Status200OK;
        response.ContentType = "text/event-stream; charset=utf-8";
        response.Headers.CacheControl = "no-cache";
    }

    /// <summary>Sends one event: an optional <c>event:</c> line, then <c>data: {json}</c> and a blank line.</summary>
    public Task SendAsync(string? eventName, Action<Utf8JsonWriter> build)
    {
        _buffer.ResetWrittenCount();
        if (eventName is not null)
        {
            _buffer.Write("event: "u8);
            Encoding.UTF8.GetBytes(eventName, _buffer);
            _buffer.Write("\n"u8);
        }

        _buffer.Write("data: "u8);
        _json.Reset(_buffer);
        build(_json);
        _json.Flush();
        _buffer.Write("\n\n"u8);
        return FlushAsync();
    }

    /// <summary>Sends <paramref name="bytes"/> as they are, such as part of an event (<see cref="MockMode.CutFirstEvent"/>).</summary>
    public Task SendPartAsync(byte[] bytes)
    {
        _buffer.ResetWrittenCount();
        _buffer.Write(bytes);
        return FlushAsync();
    }

    /// <summary>Sends the OpenAI terminator <c>data: [DONE]</c>.</summary>
    public Task SendDoneAsync()
    {
        _buffer.ResetWrittenCount();
        _buffer.Write("data: [DONE]\n\n"u8);
        if (_whole is null)
        {
            return FlushAsync();
        }

        _whole.Write(_buffer.WrittenSpan);
        _context.Response.ContentLength = _whole.WrittenCount;
        return _context.Response.Body.WriteAsync(_whole.WrittenMemory, _context.RequestAborted).AsTask();
    }

    /// <summary>
    /// Ends a stream that has no terminator of its own (the Responses API's ends with its <c>response.completed</c> event):
    /// a sized stream's events go out now, whole.
    /// </summary>
    public Task EndAsync()
    {
        if (_whole is null)
        {
            return Task.CompletedTask;
        }

        _context.Response.ContentLength = _whole.WrittenCount;
        return _context.Response.Body.WriteAsync(_whole.WrittenMemory, _context.RequestAborted).AsTask();
    }

    /// <inheritdoc/>
    public void Dispose() => _json.Dispose();

    private async Task FlushAsync()
    {
        if (_whole is not null)
        {
            _whole.Write(_buffer.WrittenSpan);
            return;
        }

        var body = _context.Response.Body;
        await body.WriteAsync(_buffer.WrittenMemory, _context.RequestAborted);
        await body.FlushAsync(_context.RequestAborted);
    }
}
