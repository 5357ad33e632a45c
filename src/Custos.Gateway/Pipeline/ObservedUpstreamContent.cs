using System.Net;

namespace Custos.Gateway.Pipeline;

/// <summary>
/// Wraps a provider's response body so the gateway knows who broke a stream: a read that fails without being
/// cancelled is the provider's doing (its connection ended mid-body), whatever the client does next.
/// </summary>
internal sealed class ObservedUpstreamContent(HttpContent inner, UpstreamCall call) : HttpContent
{
    protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) => inner.CopyToAsync(stream, context);

    protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
        => inner.CopyToAsync(stream, context, cancellationToken);

    protected override bool TryComputeLength(out long length)
    {
        length = 0;
        return false;
    }

    protected override async Task<Stream> CreateContentReadStreamAsync() => Observe(await inner.ReadAsStreamAsync());

    protected override async Task<Stream> CreateContentReadStreamAsync(CancellationToken cancellationToken)
        => Observe(await inner.ReadAsStreamAsync(cancellationToken));

    private ObservingStream Observe(Stream stream)
    {
        call.Observe(stream);
        return new ObservingStream(stream, call);
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            inner.Dispose();
        }

        base.Dispose(disposing);
    }

    private sealed class ObservingStream(Stream stream, UpstreamCall call) : Stream
    {
        public override bool CanRead => true;

        public override bool CanSeek => false;

        public override bool CanWrite => false;

        public override long Length => throw new NotSupportedException();

        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
        {
            if (call.EndsByCut())
            {
                return 0; // a policy version refuses the caller now (UpstreamCall.Cut): the body ends for the forwarder
            }

            try
            {
                return await stream.ReadAsync(buffer, cancellationToken);
            }
            catch (Exception) when (call.EndsByCut())
            {
                return 0; // the cut closed the provider's stream under this read
            }
            catch (Exception ex) when (ex is IOException or HttpRequestException && !cancellationToken.IsCancellationRequested)
            {
                call.UpstreamBroke = true;
                throw;
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                // The forwarder's activity timeout, or the client gone: told apart now, since the forwarder aborts the
                // client's connection once the copy fails, and a look at the client after that finds it gone either way.
                call.UpstreamStalled = !call.ClientGone;
                throw;
            }
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
            => ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override int Read(byte[] buffer, int offset, int count) => ReadAsync(buffer, offset, count).GetAwaiter().GetResult();

        public override void Flush()
        {
        }

        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

        public override void SetLength(long value) => throw new NotSupportedException();

        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                stream.Dispose();
            }

            base.Dispose(disposing);
        }
    }
}
