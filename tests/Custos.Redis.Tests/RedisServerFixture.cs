using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using StackExchange.Redis;

namespace Custos.Redis.Tests;

/// <summary>
/// A private <c>redis-server</c> for the tests: a free loopback port, a temporary folder, no persistence, stopped
/// when the collection is done. The tests fail, never skip, when <c>redis-server</c> is not installed.
/// </summary>
public sealed class RedisServerFixture : IAsyncLifetime
{
    private Process? _server;
    private string? _folder;

    public ConnectionMultiplexer Connection { get; private set; } = null!;

    public int Port { get; private set; }

    public async Task InitializeAsync()
    {
        _executable = Find("redis-server") ?? throw new InvalidOperationException(
            "redis-server is not on PATH: the Redis counter tests need a real server. Install it with " +
            "'apt-get install -y --no-install-recommends redis-server' (or run ./test.sh, which does) and run the tests again.");
        _folder = Directory.CreateTempSubdirectory("custos-redis-").FullName;
        Port = FreePort();
        await StartAsync();
        Connection = await ConnectionMultiplexer.ConnectAsync(ConnectionString + ",abortConnect=true,allowAdmin=true");
    }

    private string? _executable;

    /// <summary>How a client reaches this server.</summary>
    public string ConnectionString => $"127.0.0.1:{Port}";

    /// <summary>True while the server runs.</summary>
    public bool IsRunning => _server is { HasExited: false };

    /// <summary>Starts the server (again) on <see cref="Port"/> and waits until it answers.</summary>
    public async Task StartAsync()
    {
        var start = new ProcessStartInfo(_executable!)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in new[] { "--port", Port.ToString(System.Globalization.CultureInfo.InvariantCulture), "--bind", "127.0.0.1",
                     "--save", "", "--appendonly", "no", "--dir", _folder! })
        {
            start.ArgumentList.Add(argument);
        }

        _server?.Dispose();
        _server = Process.Start(start) ?? throw new InvalidOperationException($"Could not start {_executable}.");
        _server.OutputDataReceived += (_, _) => { };
        _server.ErrorDataReceived += (_, _) => { };
        _server.BeginOutputReadLine();
        _server.BeginErrorReadLine();

        var deadline = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                await using var probe = await ConnectionMultiplexer.ConnectAsync(ConnectionString + ",abortConnect=true,connectTimeout=1000");
                await probe.GetDatabase().PingAsync();
                return;
            }
            catch (RedisConnectionException) when (deadline.Elapsed < TimeSpan.FromSeconds(10) && !_server.HasExited)
            {
                await Task.Delay(50);
            }
        }
    }

    /// <summary>Kills the server (its data is gone: there is no persistence), as an outage would.</summary>
    public async Task StopAsync()
    {
        if (_server is { HasExited: false })
        {
            _server.Kill();
            await _server.WaitForExitAsync();
        }
    }

    public async Task DisposeAsync()
    {
        if (Connection is not null)
        {
            await Connection.DisposeAsync();
        }

        if (_server is { HasExited: false })
        {
            _server.Kill();
            await _server.WaitForExitAsync();
        }

        _server?.Dispose();
        if (_folder is not null)
        {
            Directory.Delete(_folder, recursive: true);
        }
    }

    private static string? Find(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(folder => Path.Combine(folder, name))
            .FirstOrDefault(File.Exists);

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}

[CollectionDefinition(Name)]
public sealed class RedisCollection : ICollectionFixture<RedisServerFixture>
{
    public const string Name = "redis-server";
}
