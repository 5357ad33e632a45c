using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Npgsql;

namespace Custos.Postgres.Tests;

/// <summary>
/// A private PostgreSQL server for tests: <c>initdb</c> into a temporary folder, <c>postgres</c> on a free loopback
/// port (no fsync), a cheap database per test class or test (<see cref="CreateDatabaseAsync"/>), everything deleted
/// when the collection is done. <see cref="StopAsync"/> and <see cref="StartAsync"/> stop and restart the same server
/// (same port, same data) for fault tests.
/// </summary>
/// <remarks>
/// The binaries are <c>postgres</c> and <c>initdb</c> on PATH, else those of the newest <c>/usr/lib/postgresql/*/bin</c>.
/// They refuse to run as root: as root, they run as the <c>postgres</c> system user (which the Debian package creates)
/// through <c>setpriv</c>, on a folder that user owns. The tests fail, never skip, when PostgreSQL is not installed.
/// Self-contained (Npgsql and the BCL only), so other test projects can link this file.
/// </remarks>
public sealed class PostgresServerFixture : IAsyncLifetime
{
    private const string SystemUser = "postgres";

    private readonly StringBuilder _log = new();
    private Process? _server;
    private string? _bin;
    private int _databases;

    /// <summary>The loopback port the server listens on (the same after a restart).</summary>
    public int Port { get; private set; }

    /// <summary>The superuser's password (the server asks for it over TCP: SCRAM-SHA-256).</summary>
    public string Password { get; } = "pw-" + Guid.NewGuid().ToString("N");

    /// <summary>The temporary folder: the data directory (<c>data</c>) and the Unix socket.</summary>
    public string Folder { get; private set; } = "";

    /// <summary>Whether the server is running (between <see cref="StartAsync"/> and <see cref="StopAsync"/>).</summary>
    public bool IsRunning => _server is { HasExited: false };

    /// <summary>The connection string of database <paramref name="database"/> (superuser, no pooling surprises).</summary>
    public string ConnectionString(string database = "postgres") => new NpgsqlConnectionStringBuilder
    {
        Host = "127.0.0.1",
        Port = Port,
        Username = SystemUser,
        Password = Password,
        Database = database,
        Timeout = 5,
    }.ConnectionString;

    /// <inheritdoc/>
    public async Task InitializeAsync()
    {
        _bin = FindBinaries() ?? throw new InvalidOperationException(
            "PostgreSQL is not installed (no 'postgres' and 'initdb' on PATH or in /usr/lib/postgresql/*/bin): the PostgreSQL store tests " +
            "need a real server. Install it with 'apt-get install -y --no-install-recommends postgresql' (or run ./test.sh, which does) " +
            "and run the tests again.");
        Folder = Directory.CreateTempSubdirectory("custos-pg-").FullName;
        Port = FreePort();
        var passwordFile = Path.Combine(Folder, "password");
        await File.WriteAllTextAsync(passwordFile, Password + "\n");
        if (IsRoot)
        {
            await RunAsync("chown", ["-R", SystemUser, Folder]);
        }

        await RunAsync(Path.Combine(_bin, "initdb"),
            ["-D", DataDirectory, "-U", SystemUser, "--pwfile", passwordFile, "--auth-local=trust", "--auth-host=scram-sha-256",
             "-E", "UTF8", "--locale=C", "--no-sync"], asServerUser: true);
        File.Delete(passwordFile);
        await StartAsync();
    }

    /// <summary>
    /// Starts the server (again, after <see cref="StopAsync"/>) on the same port and data, and waits until it accepts
    /// connections.
    /// </summary>
    public async Task StartAsync()
    {
        if (IsRunning)
        {
            return;
        }

        var arguments = new List<string>
        {
            Path.Combine(_bin!, "postgres"), "-D", DataDirectory, "-p", Port.ToString(CultureInfo.InvariantCulture), "-k", Folder,
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=200", "-c", "shared_buffers=64MB",
        };
        lock (_log)
        {
            _log.Clear();
        }

        _server = Process.Start(Command(arguments, asServerUser: true)) ?? throw new InvalidOperationException("Could not start postgres.");
        _server.OutputDataReceived += (_, e) => Log(e.Data);
        _server.ErrorDataReceived += (_, e) => Log(e.Data);
        _server.BeginOutputReadLine();
        _server.BeginErrorReadLine();

        var deadline = Stopwatch.StartNew();
        while (true)
        {
            try
            {
                await using var connection = new NpgsqlConnection(ConnectionString() + ";Pooling=false");
                await connection.OpenAsync();
                return;
            }
            catch (Exception e) when ((e is NpgsqlException or TimeoutException) && deadline.Elapsed < TimeSpan.FromSeconds(30) && !_server.HasExited)
            {
                await Task.Delay(100);
            }
            catch (Exception e) when (e is NpgsqlException or TimeoutException)
            {
                throw new InvalidOperationException($"PostgreSQL did not start on port {Port}: {e.Message}\n{ServerLog}", e);
            }
        }
    }

    /// <summary>Stops the server (fast shutdown: open connections are cut), keeping its port and data for <see cref="StartAsync"/>.</summary>
    public async Task StopAsync()
    {
        if (_server is null)
        {
            return;
        }

        if (!_server.HasExited)
        {
            _ = Interrupt(_server.Id, 2); // SIGINT: fast shutdown
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            try
            {
                await _server.WaitForExitAsync(timeout.Token);
            }
            catch (OperationCanceledException)
            {
                _server.Kill(entireProcessTree: true);
                await _server.WaitForExitAsync();
            }
        }

        _server.Dispose();
        _server = null;
        NpgsqlConnection.ClearAllPools();
    }

    /// <summary>A new empty database; returns its connection string.</summary>
    public async Task<string> CreateDatabaseAsync()
    {
        var name = string.Create(CultureInfo.InvariantCulture, $"custos_{Interlocked.Increment(ref _databases)}_{Guid.NewGuid():N}");
        await using var connection = new NpgsqlConnection(ConnectionString() + ";Pooling=false");
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand($"CREATE DATABASE \"{name}\"", connection);
        await command.ExecuteNonQueryAsync();
        return ConnectionString(name);
    }

    /// <summary>Drops the database of <paramref name="connectionString"/>, cutting its connections.</summary>
    public async Task DropDatabaseAsync(string connectionString)
    {
        var name = new NpgsqlConnectionStringBuilder(connectionString).Database;
        NpgsqlConnection.ClearAllPools();
        await using var connection = new NpgsqlConnection(ConnectionString() + ";Pooling=false");
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand($"DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)", connection);
        await command.ExecuteNonQueryAsync();
    }

    /// <inheritdoc/>
    public async Task DisposeAsync()
    {
        await StopAsync();
        if (Folder.Length > 0 && Directory.Exists(Folder))
        {
            Directory.Delete(Folder, recursive: true);
        }
    }

    /// <summary>What the server printed since it last started, for error messages.</summary>
    public string ServerLog
    {
        get
        {
            lock (_log)
            {
                return _log.ToString();
            }
        }
    }

    private string DataDirectory => Path.Combine(Folder, "data");

    private static bool IsRoot => OperatingSystem.IsLinux() && GetEuid() == 0;

    private void Log(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_log)
        {
            if (_log.Length < 64 * 1024)
            {
                _log.AppendLine(line);
            }
        }
    }

    /// <summary>Runs a command to the end; throws with its output when it fails.</summary>
    private static async Task RunAsync(string executable, IEnumerable<string> arguments, bool asServerUser = false)
    {
        using var process = Process.Start(Command([executable, .. arguments], asServerUser)) ?? throw new InvalidOperationException($"Could not start {executable}.");
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync();
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"{executable} failed with exit code {process.ExitCode}:\n{await output}\n{await error}");
        }
    }

    /// <summary>
    /// The command line, as the server user when the tests run as root: <c>setpriv</c> (which execs, so the process
    /// is the server itself and gets its signals), else <c>runuser</c>.
    /// </summary>
    private static ProcessStartInfo Command(IReadOnlyList<string> command, bool asServerUser)
    {
        var line = new List<string>();
        if (asServerUser && IsRoot)
        {
            line.AddRange(File.Exists("/usr/bin/setpriv") || File.Exists("/bin/setpriv")
                ? ["setpriv", $"--reuid={SystemUser}", $"--regid={SystemUser}", "--init-groups", "--"]
                : ["runuser", "-u", SystemUser, "--"]);
        }

        line.AddRange(command);
        var start = new ProcessStartInfo(line[0])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = Path.GetTempPath(),
        };
        foreach (var argument in line.Skip(1))
        {
            start.ArgumentList.Add(argument);
        }

        start.Environment["LC_ALL"] = "C";
        start.Environment["LANG"] = "C";
        return start;
    }

    /// <summary>The folder holding <c>postgres</c> and <c>initdb</c>: from PATH, else the newest /usr/lib/postgresql/*/bin.</summary>
    private static string? FindBinaries()
    {
        var onPath = (Environment.GetEnvironmentVariable("PATH") ?? "").Split(Path.PathSeparator, StringSplitOptions.RemoveEmptyEntries)
            .Select(folder => Path.Combine(folder, "postgres"))
            .FirstOrDefault(File.Exists);
        if (onPath is not null)
        {
            // Debian links only some binaries onto PATH: use the folder of the real one.
            var real = new FileInfo(onPath).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? onPath;
            var folder = Path.GetDirectoryName(real)!;
            if (File.Exists(Path.Combine(folder, "initdb")))
            {
                return folder;
            }
        }

        return Directory.Exists("/usr/lib/postgresql")
            ? Directory.GetDirectories("/usr/lib/postgresql")
                .Select(folder => (Folder: Path.Combine(folder, "bin"), Version: decimal.TryParse(Path.GetFileName(folder), CultureInfo.InvariantCulture, out var v) ? v : -1))
                .Where(c => File.Exists(Path.Combine(c.Folder, "postgres")) && File.Exists(Path.Combine(c.Folder, "initdb")))
                .OrderByDescending(c => c.Version)
                .Select(c => c.Folder)
                .FirstOrDefault()
            : null;
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    [DllImport("libc", EntryPoint = "geteuid")]
    private static extern uint GetEuid();

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Interrupt(int pid, int signal);
}

/// <summary>The tests sharing one private PostgreSQL server.</summary>
[CollectionDefinition(Name)]
public sealed class PostgresCollection : ICollectionFixture<PostgresServerFixture>
{
    public const string Name = "postgresql-server";
}
