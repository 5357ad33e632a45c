using Custos.Gateway.Hosting;
using Microsoft.Extensions.Configuration;

namespace Custos.Gateway.Tests;

public sealed class HostingTests
{
    [Fact]
    public void Listeners_ReadAppSettingsOnce_AndWatchNoFiles()
    {
        // A reloadable appsettings.json makes the host watch its whole content root (the working directory, where the
        // SQLite ledger usually is) with a recursive FileSystemWatcher, woken by every ledger commit.
        var options = new CustosGatewayOptions { Policy = new Custos.Policy.PolicyDocument(), DataDirectory = Path.GetTempPath() };
        var builder = CustosGateway.CreateBuilder(options, "http://127.0.0.1:0");

        var files = ((IConfigurationRoot)builder.Configuration).Providers.OfType<FileConfigurationProvider>().ToList();

        Assert.NotEmpty(files); // appsettings.json is still read, if present
        Assert.All(files, provider => Assert.False(provider.Source.ReloadOnChange, provider.Source.Path));
    }
}
