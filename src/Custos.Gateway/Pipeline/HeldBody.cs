using Microsoft.AspNetCore.Http;

namespace Custos.Gateway.Pipeline;

/// <summary>
/// Bodies the gateway writes itself (errors, the model list) are small and have a <c>Content-Length</c>: the client
/// holds the complete response once the last byte is written. So they wait, whole, as a request feature, until the
/// request's ledger record is durable (<see cref="ReleaseAsync"/>, called by the data plane): one write, after it.
/// </summary>
internal static class HeldBody
{
    /// <summary>Sets <c>Content-Length</c> and keeps <paramref name="body"/> for <see cref="ReleaseAsync"/>, replacing any body kept before.</summary>
    public static void Hold(HttpContext context, ReadOnlySpan<byte> body)
    {
        context.Response.ContentLength = body.Length;
        context.Features.Set(new Body(body.ToArray()));
    }

    /// <summary>The length of the body <see cref="Hold"/> kept, 0 when none is kept.</summary>
    public static long LengthOf(HttpContext context) => context.Features.Get<Body>()?.Bytes.Length ?? 0;

    /// <summary>Writes the body <see cref="Hold"/> kept, if any.</summary>
    public static ValueTask ReleaseAsync(HttpContext context)
    {
        if (context.Features.Get<Body>() is not { } body)
        {
            return ValueTask.CompletedTask;
        }

        context.Features.Set<Body>(null);
        return context.Response.Body.WriteAsync(body.Bytes, context.RequestAborted);
    }

    private sealed class Body(byte[] bytes)
    {
        public byte[] Bytes { get; } = bytes;
    }
}
