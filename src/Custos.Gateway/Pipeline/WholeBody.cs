using System.Net;
using Microsoft.AspNetCore.Http.Features;

namespace Custos.Gateway.Pipeline;

/// <summary>
/// Tells YARP the client's request has no body left to stream: the gateway read it whole, and
/// <see cref="WholeBodyHandler"/> hands it to HttpClient as one <see cref="WholeBodyContent"/>.
/// </summary>
internal sealed class BodyReadWhole : IHttpRequestBodyDetectionFeature
{
    public static readonly BodyReadWhole Instance = new();

    public bool CanHaveBody => false;
}

/// <summary>
/// Sends a request body the gateway read whole as one fixed-length content, so HttpClient writes the headers and the
/// body in one go. YARP streams every body it forwards (and flushes the headers first, a write of their own); it also
/// refuses a transform that replaces its content, so the content is attached here, below YARP.
/// </summary>
internal sealed class WholeBodyHandler(HttpMessageHandler inner) : DelegatingHandler(inner)
{
    public static readonly HttpRequestOptionsKey<HttpContent> Body = new("Custos.WholeBody");

    protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        if (request.Content is null && request.Options.TryGetValue(Body, out var body))
        {
            request.Content = body;
        }

        return base.SendAsync(request, cancellationToken);
    }
}

/// <summary>
/// A request body in a pooled buffer, sent upstream as it is. <see cref="CloseAsync"/> ends its use before the buffer
/// goes back to the pool: the job YARP's own content does when it waits for its body copy.
/// </summary>
internal sealed class WholeBodyContent(ReadOnlyMemory<byte> body) : HttpContent
{
    private readonly Lock _gate = new();
    private Task? _writing;
    private bool _closed;

    /// <summary>No write starts after this; one still running is waited for (its failure is the request's, not ours).</summary>
    public async ValueTask CloseAsync()
    {
        Task? writing;
        lock (_gate)
        {
            _closed = true;
            writing = _writing;
        }

        if (writing is { IsCompleted: false })
        {
            try
            {
                await writing;
            }
            catch
            {
                // Reported by the forwarder, which saw the same write fail.
            }
        }
    }

    protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_closed, this);
            return _writing = stream.WriteAsync(body, cancellationToken).AsTask();
        }
    }

    protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context)
        => SerializeToStreamAsync(stream, context, CancellationToken.None);

    protected override bool TryComputeLength(out long length)
    {
        length = body.Length;
        return true;
    }
}
