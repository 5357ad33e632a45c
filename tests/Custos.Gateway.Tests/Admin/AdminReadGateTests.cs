using Custos.Gateway.Admin;

namespace Custos.Gateway.Tests.Admin;

/// <summary>Heavy admin reads: how many run at once, how many wait, and where they run.</summary>
public sealed class AdminReadGateTests
{
    [Fact]
    public async Task ARead_RunsOnAThreadOfItsOwn_NotThePools()
    {
        var onPool = await AdminReadGate.RunAsync(async () =>
        {
            await Task.CompletedTask;
            return Thread.CurrentThread.IsThreadPoolThread;
        });

        Assert.False(onPool);
    }

    [Fact]
    public async Task BeyondTheLimit_ReadsWait_BeyondTheQueue_TheyAreRefused_AndANewLimitAppliesToNewReads()
    {
        var gate = new AdminReadGate();
        var first = await gate.EnterAsync(1, CancellationToken.None);
        Assert.True(first.IsAcquired);

        var waiting = Enumerable.Range(0, AdminReadGate.QueueLimit).Select(_ => gate.EnterAsync(1, CancellationToken.None).AsTask()).ToList();
        Assert.Equal(AdminReadGate.QueueLimit, gate.Queued);
        using (var refused = await gate.EnterAsync(1, CancellationToken.None))
        {
            Assert.False(refused.IsAcquired);
        }

        // A policy that raises the limit: new reads run at once; those waiting keep their place under the old one.
        using (var raised = await gate.EnterAsync(2, CancellationToken.None))
        {
            Assert.True(raised.IsAcquired);
        }

        first.Dispose();
        for (var i = 0; i < waiting.Count; i++)
        {
            using var lease = await waiting[i].WaitAsync(TimeSpan.FromSeconds(5));
            Assert.True(lease.IsAcquired);
            Assert.DoesNotContain(waiting.Skip(i + 1), t => t.IsCompleted); // one at a time, oldest first
        }
    }
}
