using System.Buffers;
using System.IO.Pipelines;
using Custos.Metering;

namespace Custos.Gateway.Pipeline;

/// <summary>
/// Takes the place of the client's response body while the forwarder copies the provider's response into it, and writes
/// into the response's own <see cref="PipeWriter"/>: a JSON body's every chunk goes to the client as it arrives (each write
/// flushes), and the <see cref="ResponseMeter"/> reads usage from it on the way. A stream's go out as the meter writes
/// them: each event once it is complete, the provider's error events replaced and, when the gateway asked for usage the
/// client did not, that usage hidden.
/// <para>
/// The client must not hold a complete response before its ledger record is durable, so the stream holds back the
/// end of a complete body until <see cref="ReleaseAsync"/>: for a body of known length (<c>Content-Length</c>), the
/// write that completes it (up to 64 KB of it, usually the whole body: a client can do nothing with part of a JSON
/// document, and one write after the wait costs less than two); for a stream, the last two bytes of its final event
/// (<c>data: [DONE]</c>, Anthropic's <c>message_stop</c>), so the client's parser cannot dispatch it. Nothing before
/// that waits: every other event goes out as it arrives.
/// </para>
/// </summary>
internal sealed class MeteringStream(PipeWriter response, ResponseMeter meter, bool rewrites, long? contentLength) : Stream
{
    /// <summary>An event ends with a blank line, "\n\n" or "\r\n\r\n": holding its last two bytes keeps it from being dispatched.</summary>
    private const int StreamTail = 2;

    /// <summary>At most this much of the write that completes a body of known length waits.</summary>
    private const int MaxBodyTail = 64 * 1024;

    private readonly PooledBufferWriter? _edited = rewrites ? new PooledBufferWriter(8192) : null;
    private long _written;
    private int _tail; // 0 until the body is complete; then how many of its last bytes wait in _held for ReleaseAsync
    private byte[]? _held; // rented
    private int _heldCount;
    private bool _bypassed;

    public override bool CanRead => false;

    public override bool CanSeek => false;

    public override bool CanWrite => true;

    public override long Length => throw new NotSupportedException();

    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    /// <summary>True while bytes are held back for <see cref="ReleaseAsync"/>.</summary>
    public bool IsHolding => _heldCount > 0;

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        if (_bypassed)
        {
            await response.WriteAsync(buffer, cancellationToken);
            return;
        }

        var streamWasComplete = meter.StreamCompleted;
        ReadOnlyMemory<byte> output;
        if (_edited is null)
        {
            meter.Process(buffer.Span, null);
            output = buffer;
        }
        else
        {
            _edited.Clear();
            meter.Process(buffer.Span, _edited);
            output = _edited.WrittenMemory;
        }

        if (_tail == 0)
        {
            if (!streamWasComplete && meter.StreamCompleted)
            {
                _tail = StreamTail;
            }
            else if (_written + output.Length == contentLength)
            {
                _tail = (int)Math.Min(MaxBodyTail, Math.Max(StreamTail, output.Length));
            }
        }

        await WriteOutAsync(output, cancellationToken);
    }

    /// <summary>Writes <paramref name="data"/> to the client, keeping back the last bytes once the body is complete.</summary>
    private async ValueTask WriteOutAsync(ReadOnlyMemory<byte> data, CancellationToken cancellationToken)
    {
        if (data.IsEmpty)
        {
            return;
        }

        _written += data.Length;
        if (_tail == 0)
        {
            await response.WriteAsync(data, cancellationToken);
            return;
        }

        // What is held is always the very end of what the client should get, at most _tail bytes: older ones go first.
        _held ??= ArrayPool<byte>.Shared.Rent(_tail);
        var keep = Math.Min(_tail, data.Length);
        var release = Math.Max(0, _heldCount + keep - _tail); // held bytes that must go out now
        if (release > 0)
        {
            await response.WriteAsync(_held.AsMemory(0, release), cancellationToken);
            _held.AsSpan(release, _heldCount - release).CopyTo(_held);
            _heldCount -= release;
        }

        if (data.Length > keep)
        {
            await response.WriteAsync(data[..^keep], cancellationToken);
        }

        data.Span[^keep..].CopyTo(_held.AsSpan(_heldCount));
        _heldCount += keep;
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
        => WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override void Write(byte[] buffer, int offset, int count) => WriteAsync(buffer, offset, count).GetAwaiter().GetResult();

    public override Task FlushAsync(CancellationToken cancellationToken) => response.FlushAsync(cancellationToken).AsTask();

    public override void Flush() => FlushAsync(CancellationToken.None).GetAwaiter().GetResult();

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
        await WriteOutAsync(_edited.WrittenMemory, cancellationToken);
    }

    /// <summary>
    /// The gateway ended the stream before the provider did (<paramref name="reason"/>): drops what the meter holds of an
    /// unfinished event and writes the gateway's error event with <paramref name="reason"/>'s code after the events that
    /// went out. Only a stream is cut (it is rewritten, so whole events only went out).
    /// </summary>
    public async Task InterruptAsync(Custos.Errors.ReasonCode reason, CancellationToken cancellationToken)
    {
        if (_edited is null)
        {
            meter.Complete(null);
            return;
        }

        _edited.Clear();
        meter.Interrupt(reason, _edited);
        await WriteOutAsync(_edited.WrittenMemory, cancellationToken);
    }

    /// <summary>
    /// The provider's answer failed before any of it went out, and the gateway's error takes its place: lets the meter
    /// finish reading what came (its usage, the text to estimate from) without writing any of it, drops what is held,
    /// and passes later writes, the error, straight to the client.
    /// </summary>
    public void Discard()
    {
        meter.Complete(null);
        Bypass();
    }

    /// <summary>
    /// After the gateway's own failure while copying (<see cref="UpstreamCall.GatewayFailed"/>): drops what is held and
    /// passes later writes, the gateway's error body, straight to the client, unmetered.
    /// </summary>
    public void Bypass()
    {
        _bypassed = true;
        _tail = 0;
        _heldCount = 0;
    }

    /// <summary>Writes the bytes held back to the client: call once the request's ledger record is durable.</summary>
    /// <remarks>
    /// A chunked response's held bytes are written without a flush: its end (the last chunk) follows at once, and
    /// Kestrel sends both in one write when the request completes, where a flush here would send them in two. A body of
    /// known length (<c>Content-Length</c>) has no such end, and once its headers are out Kestrel's end of the response
    /// flushes only bytes it was handed by a write, not bytes advanced into its writer: so they are written and flushed
    /// here, or they would wait in Kestrel's buffer until the connection closed, and the client with them.
    /// </remarks>
    public ValueTask ReleaseAsync(CancellationToken cancellationToken)
    {
        if (_heldCount == 0)
        {
            return ValueTask.CompletedTask;
        }

        var count = _heldCount;
        _heldCount = 0;
        if (contentLength is null)
        {
            response.Write(_held.AsSpan(0, count));
            return ValueTask.CompletedTask;
        }

        return WriteHeldAsync(_held.AsMemory(0, count), cancellationToken);
    }

    private async ValueTask WriteHeldAsync(ReadOnlyMemory<byte> held, CancellationToken cancellationToken)
        => await response.WriteAsync(held, cancellationToken);

    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();

    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _edited?.Dispose();
            if (_held is { } held)
            {
                _held = null;
                _heldCount = 0;
                ArrayPool<byte>.Shared.Return(held);
            }
        }

        base.Dispose(disposing);
    }
}
