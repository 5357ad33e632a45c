using Custos.Gateway.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Custos.Gateway.Tests;

public sealed class HostingTests
{
    private static readonly CustosGatewayOptions Options = new() { Policy = new Custos.Policy.PolicyDocument(), DataDirectory = Path.GetTempPath() };

    [Fact]
    public void Listeners_ReadAppSettingsOnce_AndWatchNoFiles()
    {
        // A reloadable appsettings.json makes the host watch its whole content root (the working directory, where the
        // SQLite ledger usually is) with a recursive FileSystemWatcher, woken by every ledger commit.
        var builder = CustosGateway.CreateBuilder(Options, "http://127.0.0.1:0");

        var files = ((IConfigurationRoot)builder.Configuration).Providers.OfType<FileConfigurationProvider>().ToList();

        Assert.NotEmpty(files); // appsettings.json is still read, if present
        Assert.All(files, provider => Assert.False(provider.Source.ReloadOnChange, provider.Source.Path));
    }

    [Fact]
    public void Listeners_DoNotEnableTheHostingDiagnosticsLog_WhichStartsAnActivityPerRequest()
    {
        // ASP.NET Core starts an Activity for every request while this category is enabled at any level (for log
        // scopes); it only logs request start and finish, at Information, which the gateway does not write anyway.
        using var services = CustosGateway.CreateBuilder(Options, "http://127.0.0.1:0").Services.BuildServiceProvider();
        var loggers = services.GetRequiredService<ILoggerFactory>();

        Assert.False(loggers.CreateLogger("Microsoft.AspNetCore.Hosting.Diagnostics").IsEnabled(LogLevel.Critical));
        Assert.True(loggers.CreateLogger("Microsoft.AspNetCore.Server.Kestrel").IsEnabled(LogLevel.Warning));
        Assert.True(loggers.CreateLogger("Custos.Gateway.Pipeline.DataPlane").IsEnabled(LogLevel.Information));

        // With traces exported the Activity stays: it carries a caller's traceparent to the gateway's spans.
        var tracing = Options with { OtlpEndpoint = new Uri("http://127.0.0.1:4318") };
        using var traced = CustosGateway.CreateBuilder(tracing, "http://127.0.0.1:0").Services.BuildServiceProvider();
        Assert.True(traced.GetRequiredService<ILoggerFactory>().CreateLogger("Microsoft.AspNetCore.Hosting.Diagnostics").IsEnabled(LogLevel.Critical));
    }
}
