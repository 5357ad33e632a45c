using System.Text.Json;

namespace Custos.Tests;

/// <summary>
/// The runtime settings <c>custos</c> is built with, read from the <c>custos.runtimeconfig.json</c> the tests run it
/// with. They were chosen by measurement (docs/performance.md); dropping one changes the gateway's memory or CPU
/// without any other test noticing.
/// </summary>
public sealed class RuntimeConfigTests
{
    [Fact]
    public void Custos_RunsWorkstationGc_WithTheYoungGenerationCappedAtFourMegabytes_AndNoThreadPoolHillClimbing()
    {
        using var config = JsonDocument.Parse(File.ReadAllText(Path.ChangeExtension(CustosProcess.CustosDll, ".runtimeconfig.json")));
        var properties = config.RootElement.GetProperty("runtimeOptions").GetProperty("configProperties");

        Assert.False(properties.GetProperty("System.GC.Server").GetBoolean());
        Assert.True(properties.GetProperty("System.GC.Concurrent").GetBoolean());
        Assert.Equal(4 * 1024 * 1024, properties.GetProperty("System.GC.Gen0MaxBudget").GetInt64());
        Assert.True(properties.GetProperty("System.Threading.ThreadPool.HillClimbing.Disable").GetBoolean());
    }
}
