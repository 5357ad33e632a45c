using Microsoft.Extensions.Hosting;

namespace Custos.Gateway.Hosting;

/// <summary>
/// The lifetime of a web application embedded in a process that owns its signals: it neither reacts to Ctrl+C or
/// SIGTERM on its own nor prints lifetime messages. Its owner stops it (the CLI on SIGINT/SIGTERM, tests by disposing),
/// so a signal can never leave the host half-stopped while the process waits.
/// </summary>
internal sealed class EmbeddedLifetime : IHostLifetime
{
    public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
