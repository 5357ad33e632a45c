namespace Custos.Gateway.Hosting;

/// <summary>
/// Inline I/O: the data plane's requests run on the socket threads that read them, instead of being handed to the
/// thread pool at every read. On by the runtime's own switch, <c>DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS=1</c>
/// (read once by .NET at its first socket), with which the data plane's Kestrel schedules inline too.
/// </summary>
/// <remarks>
/// Under the load harness on one core, 15–20 % more requests per second at 15 % less CPU per request and a lower p99
/// (docs/performance.md), because a request no longer costs two thread hand-offs. The price: while a socket thread runs
/// one request's code, the other connections on that thread wait. The data plane keeps its per-request work short
/// and moves a request whose body is larger than <see cref="ThreadPoolBodyBytes"/> to the thread pool before scanning
/// it; but the switch is process-wide, so code after any socket await runs on a socket thread, including the admin
/// API's reads of a PostgreSQL store, which can be long (exports, spend reports). Off by default; docs/deploy.md says
/// when to turn it on.
/// </remarks>
internal static class InlineIo
{
    /// <summary>Request bodies larger than this are scanned on the thread pool, not a socket thread: 64 KB.</summary>
    public const int ThreadPoolBodyBytes = 64 * 1024;

    /// <summary>Whether the runtime completes socket operations inline (as .NET reads its switch).</summary>
    public static bool Enabled { get; } = Environment.GetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS") == "1";

    /// <summary>Moves the caller to the thread pool when it runs on a socket thread and has <paramref name="bytes"/> to scan.</summary>
    public static bool ShouldLeaveSocketThread(int bytes)
        => Enabled && bytes > ThreadPoolBodyBytes && !Thread.CurrentThread.IsThreadPoolThread;
}
