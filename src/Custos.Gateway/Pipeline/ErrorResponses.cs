using System.Text.Json;
using Custos.Errors;
using Microsoft.AspNetCore.Http;

namespace Custos.Gateway.Pipeline;

/// <summary>
/// Writes gateway errors as OpenAI-style JSON, <c>{"error":{"message","type","code","param","request_id"}}</c>.
/// On the Anthropic endpoint the same object also carries Anthropic's top-level <c>"type":"error"</c>, so both
/// SDKs surface the message, its <c>type</c> is Anthropic's for the status (<see cref="Reasons.AnthropicTypeOf"/>), and
/// the request id goes in Anthropic's <c>request-id</c> header as well as <c>x-request-id</c>.
/// Upstream bodies and secrets never reach this writer unredacted.
/// </summary>
internal static class ErrorResponses
{
    // JSON for API clients, never embedded in HTML: readable quotes and apostrophes in messages.
    private static readonly JsonWriterOptions WriterOptions = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>
    /// Sets the status and keeps the error body for <see cref="HeldBody.ReleaseAsync"/>: the client gets it once the
    /// request's ledger record is durable. Does nothing once the response has started.
    /// </summary>
    public static Task WriteAsync(HttpContext context, ReasonCode reason, string requestId, bool anthropic,
        string? message = null, string? param = null, int? status = null)
    {
        var response = context.Response;
        if (response.HasStarted)
        {
            return Task.CompletedTask;
        }

        var statusCode = status ?? reason.Status;
        response.StatusCode = statusCode;
        response.ContentType = "application/json";
        response.Headers[Headers.RequestId] = requestId; // again: the forwarder clears the headers when it fails before the response starts
        if (anthropic)
        {
            response.Headers["request-id"] = requestId; // Anthropic's name, which its SDKs read as the error's requestID
        }
        using var buffer = new PooledBufferWriter(512);
        using (var writer = new Utf8JsonWriter(buffer, WriterOptions))
        {
            writer.WriteStartObject();
            if (anthropic)
            {
                writer.WriteString("type", "error");
            }

            writer.WriteStartObject("error");
            writer.WriteString("message", message ?? reason.Message);
            writer.WriteString("type", anthropic ? Reasons.AnthropicTypeOf(statusCode) : reason.Type);
            writer.WriteString("code", reason.Code);
            if (param is null)
            {
                writer.WriteNull("param");
            }
            else
            {
                writer.WriteString("param", param);
            }

            writer.WriteString("request_id", requestId);
            writer.WriteEndObject();
            writer.WriteEndObject();
        }

        HeldBody.Hold(context, buffer.WrittenSpan);
        return Task.CompletedTask;
    }
}
