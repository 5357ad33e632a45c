using System.Buffers;
using Microsoft.AspNetCore.Http;

namespace Custos.Bench.Upstream;

/// <summary>
/// Answers <c>POST /v1/chat/completions</c> with canned bytes. The request body is only searched for
/// <c>"stream":true</c> and <c>"include_usage":true</c>; everything else in it is ignored.
/// </summary>
internal sealed class MockResponder(CannedResponses canned)
{
    private static readonly byte[] NotFound =
        """{"error":{"message":"The bench upstream only answers POST /v1/chat/completions.","type":"invalid_request_error","param":null,"code":"unknown_url"}}"""u8.ToArray();

    private readonly CannedResponses _canned = canned;

    /// <summary>Handles one request.</summary>
    public async Task HandleAsync(HttpContext context)
    {
        var response = context.Response;
        if (!HttpMethods.IsPost(context.Request.Method) || context.Request.Path.Value != "/v1/chat/completions")
        {
            response.StatusCode = StatusCodes.Status404NotFound;
            response.ContentType = "application/json";
            response.ContentLength = NotFound.Length;
            await response.BodyWriter.WriteAsync(NotFound, context.RequestAborted);
            return;
        }

        var (stream, includeUsage) = await SniffBodyAsync(context);
        response.StatusCode = StatusCodes.Status200OK;
        if (!stream)
        {
            response.ContentType = "application/json";
            response.ContentLength = _canned.Completion.Length;
            await response.BodyWriter.WriteAsync(_canned.Completion, context.RequestAborted);
            return;
        }

        response.ContentType = "text/event-stream; charset=utf-8";
        response.Headers.CacheControl = "no-cache";
        foreach (var item in includeUsage ? _canned.StreamWithUsage : _canned.Stream)
        {
            // PipeWriter.WriteAsync flushes: one event per flush, as a real provider sends them.
            var flush = await response.BodyWriter.WriteAsync(item, context.RequestAborted);
            if (flush.IsCanceled || flush.IsCompleted)
            {
                return;
            }
        }
    }

    private static async Task<(bool Stream, bool IncludeUsage)> SniffBodyAsync(HttpContext context)
    {
        var reader = context.Request.BodyReader;
        while (true)
        {
            var result = await reader.ReadAsync(context.RequestAborted);
            var buffer = result.Buffer;
            if (result.IsCompleted || result.IsCanceled)
            {
                var flags = buffer.IsSingleSegment ? Sniff(buffer.FirstSpan) : Sniff(buffer.ToArray());
                reader.AdvanceTo(buffer.End);
                return flags;
            }

            reader.AdvanceTo(buffer.Start, buffer.End);
        }
    }

    private static (bool Stream, bool IncludeUsage) Sniff(ReadOnlySpan<byte> body)
    {
        var stream = IsTrue(body, "\"stream\""u8);
        return (stream, stream && IsTrue(body, "\"include_usage\""u8));
    }

    /// <summary>True when some <paramref name="name"/> in <paramref name="body"/> is followed by <c>: true</c> (any spacing).</summary>
    internal static bool IsTrue(ReadOnlySpan<byte> body, ReadOnlySpan<byte> name)
    {
        while (true)
        {
            var at = body.IndexOf(name);
            if (at < 0)
            {
                return false;
            }

            body = body[(at + name.Length)..];
            var rest = body.TrimStart(" \t\r\n"u8);
            if (rest.Length > 0 && rest[0] == (byte)':' && rest[1..].TrimStart(" \t\r\n"u8).StartsWith("true"u8))
            {
                return true;
            }
        }
    }
}
