using System.Text;
using Custos.Gateway.Pipeline;

namespace Custos.Gateway.Tests.Pipeline;

public sealed class WholeBodyContentTests
{
    [Fact]
    public async Task CloseAsync_WaitsForTheWriteUnderWay_AndNoWriteStartsAfterIt()
    {
        var body = Encoding.UTF8.GetBytes("""{"model":"gpt-4o-mini"}""");
        using var content = new WholeBodyContent(body);
        var upstream = new HeldStream();

        var sending = content.CopyToAsync(upstream);
        var closing = content.CloseAsync().AsTask();
        await Task.Delay(50);
        Assert.False(closing.IsCompleted); // the buffer is still being read

        upstream.Release();
        await sending;
        await closing;
        Assert.Equal(body, upstream.ToArray());

        // HTTP/2 may start sending the body late, or a retry may send it again: never from a buffer given back.
        var late = await Assert.ThrowsAsync<HttpRequestException>(() => content.CopyToAsync(new MemoryStream()));
        Assert.IsType<ObjectDisposedException>(late.InnerException);
    }

    [Fact]
    public void Length_IsTheBodys_SoHttpClientSendsAContentLength()
    {
        using var content = new WholeBodyContent(new byte[271]);

        Assert.Equal(271, content.Headers.ContentLength);
    }

    /// <summary>A stream whose writes finish only when the test says so.</summary>
    private sealed class HeldStream : MemoryStream
    {
        private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Release() => _released.SetResult();

        public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            await _released.Task.WaitAsync(cancellationToken);
            await base.WriteAsync(buffer, cancellationToken);
        }
    }
}
