using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;

namespace Custos.Tests;

/// <summary>The <c>custos</c> executable run as a user runs it: a separate process, stopped with SIGTERM.</summary>
internal sealed partial class CustosProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _output = new();
    private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly string _readyLine;

    private CustosProcess(Process process, string readyLine)
    {
        _process = process;
        _readyLine = readyLine;
    }

    public string Output
    {
        get
        {
            lock (_output)
            {
                return _output.ToString();
            }
        }
    }

    public static string CustosDll => Path.Combine(AppContext.BaseDirectory, "custos.dll");

    public static CustosProcess Start(string readyLine, IDictionary<string, string>? environment, params string[] args)
    {
        var info = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        info.ArgumentList.Add(CustosDll);
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }

        // The gateway's calls go through a proxy the environment names; the tests' providers are on loopback.
        foreach (var proxy in (string[])["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy"])
        {
            info.Environment.Remove(proxy);
        }

        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
        {
            info.Environment[name] = value;
        }

        var process = new Process { StartInfo = info, EnableRaisingEvents = true };
        var result = new CustosProcess(process, readyLine);
        process.OutputDataReceived += (_, e) => result.OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => result.OnLine(e.Data);
        process.Exited += (_, _) => result._ready.TrySetException(new InvalidOperationException("custos exited early:\n" + result.Output));
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return result;
    }

    private void OnLine(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_output)
        {
            _output.AppendLine(line);
        }

        if (line.Contains(_readyLine, StringComparison.Ordinal))
        {
            _ready.TrySetResult();
        }
    }

    /// <summary>The names of the files the process has mapped (from <c>/proc/PID/maps</c>), such as the assemblies it loaded.</summary>
    public IReadOnlySet<string> MappedFileNames()
        => File.ReadLines($"/proc/{_process.Id}/maps")
            .Select(line => line.IndexOf('/', StringComparison.Ordinal) is var at and >= 0 ? Path.GetFileName(line[at..]) : null)
            .OfType<string>()
            .ToHashSet(StringComparer.Ordinal);

    /// <summary>The names of the process's threads (from <c>/proc/PID/task/*/comm</c>).</summary>
    public IReadOnlyList<string> ThreadNames()
        => Directory.GetDirectories($"/proc/{_process.Id}/task").Select(task => File.ReadAllText(Path.Combine(task, "comm")).TrimEnd('\n')).ToList();

    public Task WaitReadyAsync() => _ready.Task.WaitAsync(TimeSpan.FromSeconds(60));

    /// <summary>Sends SIGTERM, as a service manager would, and waits for a clean exit.</summary>
    public async Task<int> StopAsync()
    {
        if (Kill(_process.Id, Sigterm) != 0)
        {
            throw new InvalidOperationException($"kill({_process.Id}, SIGTERM) failed: errno {Marshal.GetLastPInvokeError()}");
        }

        await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(60));
        return _process.ExitCode;
    }

    /// <summary>Kills the process with SIGKILL: no shutdown, no drain, as a crash or an OOM kill would.</summary>
    public void Kill() => _process.Kill();

    /// <summary>Waits for the process to end on its own (a command, not a server); returns its exit code.</summary>
    public async Task<int> WaitForExitAsync()
    {
        await _process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(120));
        return _process.ExitCode;
    }

    private const int Sigterm = 15;

    [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static extern int Kill(int pid, int signal);

    public static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }

        _process.Dispose();
    }
}
