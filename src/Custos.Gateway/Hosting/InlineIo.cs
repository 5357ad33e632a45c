namespace Custos.Gateway.Hosting;

/// <summary>
/// Inline I/O: the data plane's requests run on the socket threads that read them, instead of being handed to the
/// thread pool at every read. On by the runtime's own switch, <c>DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=1</c>
/// (read once by .NET at its first socket), with which the data plane's Kestrel schedules inline too. <c>custos
/// serve</c> and <c>custos demo</c> turn it on for a node on the embedded store unless the environment sets it.
/// </summary>
/// <remarks>
/// Under the load harness on one core, 12–15 % more non-streaming requests per second at 12–15 % less CPU per request
/// (docs/performance.md), because a request no longer costs two thread hand-offs. The price: while a socket thread runs
/// one request's code, the other connections on that thread wait. The data plane keeps its per-request work short
/// and moves a request whose body is larger than <see cref="ThreadPoolBodyBytes"/> to the thread pool before scanning
/// it; but the switch is process-wide, so code after any socket await runs on a socket thread, which on a PostgreSQL
/// store includes the admin API's reads (exports, spend reports: they can be long) and the ledger writer's loop. So
/// on PostgreSQL it stays off unless the environment turns it on; docs/deploy.md says when to.
/// </remarks>
public static class InlineIo
{
    /// <summary>The runtime's switch.</summary>
    public const string Variable = "DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS";

    /// <summary>Request bodies larger than this are scanned on the thread pool, not a socket thread: 64 KB.</summary>
    public const int ThreadPoolBodyBytes = 64 * 1024;

    private static bool? _enabled;

    /// <summary>Whether the runtime completes socket operations inline (as .NET reads its switch).</summary>
    public static bool Enabled => _enabled ??= Environment.GetEnvironmentVariable(Variable) == "1";

    /// <summary>
    /// Turns inline I/O on for a process whose ledger is the embedded store, unless the environment sets the switch
    /// either way. Effective only before the process's first socket: the runtime reads the switch once.
    /// </summary>
    public static void PreferFor(bool embeddedStore)
    {
        if (embeddedStore && Environment.GetEnvironmentVariable(Variable) is null)
        {
            Environment.SetEnvironmentVariable(Variable, "1");
        }
    }

    /// <summary>Moves the caller to the thread pool when it runs on a socket thread and has <paramref name="bytes"/> to scan.</summary>
    internal static bool ShouldLeaveSocketThread(int bytes)
        => bytes > ThreadPoolBodyBytes && Enabled && !Thread.CurrentThread.IsThreadPoolThread;
}
