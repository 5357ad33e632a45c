using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;

namespace Custos.Gateway.Tests.Functional;

/// <summary>The raw bytes of one answer, and whether the provider then closes the connection (a cut, when short).</summary>
internal sealed record Reply(string Head, byte[] Body, bool Close);

/// <summary>
/// An HTTP/1.1 provider that answers each request with the next queued <see cref="Reply"/>, byte for byte, or with what
/// <see cref="Answer"/> makes of the request; it keeps every request it received (<see cref="Received"/>).
/// </summary>
internal sealed class ScriptedProvider : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly CancellationTokenSource _stop = new();
    private Task _accepting = Task.CompletedTask;

    public ConcurrentQueue<Reply> Next { get; } = new();

    /// <summary>When set, makes the answer to each request from its head and body, instead of <see cref="Next"/>.</summary>
    public Func<string, string, Task<Reply>>? Answer { get; set; }

    /// <summary>Every request received: its head (request line and headers) and its body.</summary>
    public ConcurrentQueue<(string Head, string Body)> Received { get; } = new();

    public Uri BaseUri => new($"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}/");

    public static ScriptedProvider Start()
    {
        var provider = new ScriptedProvider();
        provider._listener.Start();
        provider._accepting = provider.AcceptAsync();
        return provider;
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await _listener.AcceptTcpClientAsync(_stop.Token);
            }
            catch (OperationCanceledException)
            {
                return;
            }

            _ = ServeAsync(client);
        }
    }

    private async Task ServeAsync(TcpClient client)
    {
        using (client)
        {
            var stream = client.GetStream();
            var buffer = new byte[64 * 1024];
            var received = new List<byte>();
            try
            {
                while (true)
                {
                    int end;
                    while ((end = CollectionsMarshal.AsSpan(received).IndexOf("\r\n\r\n"u8)) < 0)
                    {
                        var n = await stream.ReadAsync(buffer, _stop.Token);
                        if (n == 0)
                        {
                            return;
                        }

                        received.AddRange(buffer.AsSpan(0, n));
                    }

                    var head = Encoding.ASCII.GetString([.. received.GetRange(0, end)]);
                    var line = head.Split("\r\n").FirstOrDefault(l => l.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase));
                    var length = line is null ? 0 : int.Parse(line["Content-Length:".Length..].Trim(), System.Globalization.CultureInfo.InvariantCulture);
                    while (received.Count < end + 4 + length)
                    {
                        var n = await stream.ReadAsync(buffer, _stop.Token);
                        if (n == 0)
                        {
                            return;
                        }

                        received.AddRange(buffer.AsSpan(0, n));
                    }

                    var requestBody = Encoding.UTF8.GetString([.. received.GetRange(end + 4, length)]);
                    received.RemoveRange(0, end + 4 + length);
                    Received.Enqueue((head, requestBody));
                    var reply = Answer is { } answer ? await answer(head, requestBody) : Next.TryDequeue(out var queued) ? queued : null;
                    Assert.True(reply is not null, "the provider was called with no answer queued");
                    await stream.WriteAsync(Encoding.Latin1.GetBytes(reply.Head), _stop.Token);
                    await stream.WriteAsync(reply.Body, _stop.Token);
                    if (reply.Close)
                    {
                        client.Client.Shutdown(SocketShutdown.Send); // a clean end mid-body: nothing sent is lost
                        return;
                    }
                }
            }
            catch (Exception ex) when (ex is IOException or OperationCanceledException or SocketException)
            {
                // The gateway closed the connection, or the test ended.
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        await _accepting;
        _stop.Dispose();
    }
}
