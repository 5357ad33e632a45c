using Custos.Metering;

namespace Custos.Gateway.Pipeline;

/// <summary>
/// Sits in front of the client's response body while the forwarder copies the provider's response into it:
/// every chunk goes to the client as it arrives (flushed by the server's pipe), and the
/// <see cref="ResponseMeter"/> reads usage from it on the way. Only when the meter must hide what the gateway
/// asked for does it write the meter's edited output instead of the chunk.
/// </summary>
internal sealed class MeteringStream(Stream inner, ResponseMeter meter, bool rewrites) : Stream
{
    private readonly PooledBufferWriter? _edited = rewrites ? new PooledBufferWriter(8192) : null;

    public override bool CanRead => false;

    public override bool CanSeek => false;

    public override bool CanWrite => true;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_edited is null)
        {
            meter.Process(buffer.Span, null);
            await inner.WriteAsync(buffer, cancellationToken);
            return;
        }

        _edited.Clear();
        meter.Process(buffer.Span, _edited);
        if (_edited.WrittenCount > 0)
        {
            await inner.WriteAsync(_edited.WrittenMemory, cancellationToken);
        }
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
        => WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Write(byte[] buffer, int offset, int count) => WriteAsync(buffer, offset, count).GetAwaiter().GetResult();

    public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);

    public override void Flush() => inner.Flush();

    /// <summary>The upstream body ended: lets the meter finish and writes anything it still held.</summary>
    public async Task CompleteAsync(CancellationToken cancellationToken)
    {
        if (_edited is null)
        {
            meter.Complete(null);
            return;
        }

        _edited.Clear();
        meter.Complete(_edited);
        if (_edited.WrittenCount > 0)
        {
            await inner.WriteAsync(_edited.WrittenMemory, cancellationToken);
        }
    }

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _edited?.Dispose();
        }

        base.Dispose(disposing);
    }
}
