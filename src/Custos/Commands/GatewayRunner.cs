using System.Runtime.InteropServices;
using Custos.Gateway.Hosting;

namespace Custos.Cli.Commands;

/// <summary>Runs a started gateway until SIGINT or SIGTERM, then stops it gracefully and says what was kept.</summary>
internal static class GatewayRunner
{
    /// <summary>Takes SIGINT and SIGTERM, then calls <paramref name="ready"/> (which tells the user), then waits for a signal.</summary>
    public static async Task<int> RunUntilStoppedAsync(CustosGateway gateway, TextWriter output, CancellationToken cancellationToken, Action ready)
    {
        var stop = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        void OnSignal(PosixSignalContext context)
        {
            context.Cancel = true;
            stop.TrySetResult();
        }

        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
        using var registration = cancellationToken.Register(() => stop.TrySetResult());
        ready();
        await stop.Task;

        output.WriteLine("Stopping: finishing in-flight requests and flushing the ledger...");
        var before = gateway.Ledger.Persisted;
        await gateway.DisposeAsync();
        output.WriteLine($"Stopped. {gateway.Ledger.Persisted} ledger record(s) stored this run ({gateway.Ledger.Persisted - before} while stopping), none pending.");
        return 0;
    }
}
