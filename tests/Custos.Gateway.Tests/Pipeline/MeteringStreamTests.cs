using System.IO.Pipelines;
using System.Text;
using Custos.Gateway.Pipeline;
using Custos.Metering;
using Custos.Policy;

namespace Custos.Gateway.Tests.Pipeline;

/// <summary>What the metering stream does once the gateway itself failed while copying.</summary>
public sealed class MeteringStreamTests
{
    [Fact]
    public async Task Bypassed_PassesWritesStraightOnUnmeteredAndDropsWhatItHeld()
    {
        // After the gateway's own failure the error body goes to the client as it is, and no stream tail follows it.
        var pipe = new Pipe();
        var meter = new ResponseMeter(ProviderKind.OpenAI, stream: true, hideInjectedUsage: false);
        using var stream = new MeteringStream(pipe.Writer, meter, rewrites: false, contentLength: null);
        await stream.WriteAsync(Encoding.UTF8.GetBytes("data: [DONE]\n\n")); // complete: its last two bytes are held
        Assert.True(stream.IsHolding);
        var metered = meter.BytesOut;

        stream.Bypass();
        await stream.WriteAsync(Encoding.UTF8.GetBytes("""{"error":{}}"""));
        await stream.ReleaseAsync(CancellationToken.None);
        await pipe.Writer.CompleteAsync();

        var result = await pipe.Reader.ReadAsync();
        Assert.Equal("data: [DONE]" + """{"error":{}}""", Encoding.UTF8.GetString(result.Buffer));
        Assert.Equal(metered, meter.BytesOut);
        Assert.False(stream.IsHolding);
    }
}
