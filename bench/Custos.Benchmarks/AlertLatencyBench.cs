using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Custos.Gateway.ControlPlane;
using Custos.Gateway.Demo;
using Custos.Gateway.Hosting;
using Custos.Identity;
using Custos.Policy;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Custos.Benchmarks;

/// <summary>
/// <c>dotnet run -c Release --project bench/Custos.Benchmarks -- alert-latency [N]</c>: issue 7's target, "from the
/// completion of the request that crosses a threshold to the webhook POST: under one second at the 99th percentile".
/// Starts a real gateway in this process (temporary store, the demo upstream as provider) whose service's policy owner
/// is a webhook on a local Kestrel receiver, then N times (default 200), one at a time: a consumer that has never
/// called makes its first call, which raises <c>model.first_use</c>; the time runs from the client holding the whole
/// response to the receiver holding the whole signed POST. Every POST's HMAC signature is checked against the
/// gateway's secret (<c>DIR/keys/webhook.secret</c>) and its <c>request_id</c> against the call that raised it; a lost,
/// unsigned or mismatched alert fails the run. Prints a markdown table and writes it to
/// <c>bench/results/alert-latency.md</c>.
/// </summary>
internal static class AlertLatencyBench
{
    /// <summary>Iterations run first and not counted: the JIT and the connections warm up.</summary>
    private const int Warmup = 20;

    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(10);

    public static async Task<int> RunAsync(string[] args)
    {
        // alert-latency [N] [--load C]: C connections of background traffic (a consumer of its own service, no limits) run
        // throughout, so the alert path is measured while the ledger writes real batches.
        var loadAt = Array.IndexOf(args, "--load");
        var load = loadAt > 0 && loadAt + 1 < args.Length ? int.Parse(args[loadAt + 1], CultureInfo.InvariantCulture) : 0;
        var measured = args.Length > 1 && loadAt != 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 200;
        if (measured < 1)
        {
            Console.Error.WriteLine("alert-latency: N must be at least 1");
            return 2;
        }

        var total = Warmup + measured;
        using var temp = new BenchDirectory("alert");
        var directory = temp.Path;
        await using var receiver = await Receiver.StartAsync();
        await using var upstream = await DemoUpstream.StartAsync();

        // The demo policy plus one service whose policy owner (who is told of a first use) is the receiver, and one
        // consumer per iteration, each with its own key and never seen before.
        var demoKeys = DemoPolicy.CreateKeys(new Uri("http://127.0.0.1:1"), new Uri("http://127.0.0.1:2"), null);
        var demo = DemoPolicy.Create(upstream.BaseUri, demoKeys);
        var keys = Enumerable.Range(0, total).Select(_ => ApiKey.Generate(ApiKeyKind.Consumer)).ToArray();
        var loadKey = ApiKey.Generate(ApiKeyKind.Consumer);
        string Consumer(int i) => $"bench-{i:D5}";
        var policy = demo with
        {
            Defaults = demo.Defaults with { Internal = new CategoryDefaults() }, // the background traffic must not be throttled
            Services =
            [
                .. demo.Services,
                new ServiceConfig
                {
                    Id = "alert-bench",
                    Tenant = "acme",
                    Description = "Alert latency benchmark",
                    Owners = new ServiceOwners { Policy = new OwnerConfig { Name = "Bench receiver", Webhook = receiver.Uri } },
                },
                new ServiceConfig { Id = "alert-bench-load", Tenant = "acme", Description = "Background traffic of the alert latency benchmark" },
            ],
            Consumers =
            [
                .. demo.Consumers,
                .. keys.Select((_, i) => new ConsumerConfig { Id = Consumer(i), Service = "alert-bench", Category = ConsumerCategory.Internal, Models = ["gpt-4o-mini"] }),
                new ConsumerConfig { Id = "bench-load", Service = "alert-bench-load", Category = ConsumerCategory.Internal, Models = ["gpt-4o-mini"] },
            ],
            Credentials =
            [
                .. demo.Credentials,
                .. keys.Select((key, i) => new CredentialConfig { Id = "cred-" + Consumer(i), Consumer = Consumer(i), KeySha256 = KeyHash.Of(key).ToHex(), Prefix = key[..12] }),
                new CredentialConfig { Id = "cred-bench-load", Consumer = "bench-load", KeySha256 = KeyHash.Of(loadKey).ToHex(), Prefix = loadKey[..12] },
            ],
        };

        var latencies = new List<double>(measured);
        long background = 0;
        var loadTime = Stopwatch.StartNew();
        try
        {
            // The secret comes from the data folder, never from CUSTOS_WEBHOOK_SECRET, so the receiver can read it there.
            await using (var gateway = await CustosGateway.StartAsync(new CustosGatewayOptions
            {
                Policy = policy,
                DataDirectory = directory,
                DataPlaneUrl = "http://127.0.0.1:0",
                AdminUrl = "http://127.0.0.1:0",
                Secrets = name => name == WebhookSigner.SecretVariable ? null : Environment.GetEnvironmentVariable(name),
                ConfigureLogging = logging => logging.AddSimpleConsole(o => o.SingleLine = true).SetMinimumLevel(LogLevel.Error),
            }))
            {
                receiver.Signer = WebhookSigner.LoadOrCreate(directory, _ => null, out _);
                using var client = new HttpClient { BaseAddress = gateway.DataPlaneUri };
                using var stopLoad = new CancellationTokenSource();
                var loaders = Enumerable.Range(0, load).Select(_ => Task.Run(async () =>
                {
                    using var loadClient = new HttpClient { BaseAddress = gateway.DataPlaneUri };
                    while (!stopLoad.IsCancellationRequested)
                    {
                        await CallAsync(loadClient, loadKey);
                        Interlocked.Increment(ref background);
                    }
                })).ToArray();
                loadTime.Restart();
                for (var i = 0; i < total; i++)
                {
                    var (requestId, done) = await CallAsync(client, keys[i]);
                    var delivery = await receiver.WaitAsync(requestId).WaitAsync(Patience);
                    if (i >= Warmup)
                    {
                        latencies.Add(Stopwatch.GetElapsedTime(done, delivery.ReceivedAt).TotalMilliseconds);
                    }
                }

                loadTime.Stop();
                await stopLoad.CancelAsync();
                await Task.WhenAll(loaders);
            }

            if (receiver.Invalid > 0 || receiver.Unexpected > 0 || receiver.Count != total)
            {
                Console.Error.WriteLine($"alert-latency: {receiver.Count} POSTs for {total} alerts, {receiver.Invalid} with a bad signature, {receiver.Unexpected} unexpected");
                return 1;
            }
        }
        catch (TimeoutException)
        {
            Console.Error.WriteLine($"alert-latency: an alert's POST did not arrive within {Patience.TotalSeconds:0} s ({receiver.Count} of {total} received)");
            return 1;
        }

        latencies.Sort();
        var table = string.Create(CultureInfo.InvariantCulture, $"""
            # Alert latency

            `dotnet run -c Release --project bench/Custos.Benchmarks -- alert-latency {measured}` on this machine ({Environment.ProcessorCount} cores, shared VM), {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC.
            One gateway in process (SQLite store in a temporary folder, the demo upstream as provider), the owners' webhook a Kestrel receiver on loopback.
            Each iteration, one at a time: a consumer's first call raises `model.first_use`; measured from the client holding the whole response
            to the receiver holding the whole POST (ledger append, detectors, alert stored and recorded, outbox, signed delivery). {Warmup} iterations first, not counted.
            The gateway queues the ledger entry once it has written the response, so the work starts while the client still reads it: a POST can
            arrive just before the client holds the last byte, which shows as a negative time. Load average at the start: {LoadAverage()}.
            Background traffic meanwhile: {(load == 0 ? "none" : $"{load} connections, {background / loadTime.Elapsed.TotalSeconds:N0} requests/s through the same gateway and ledger")}.

            | alerts | received, signature valid | min ms | p50 ms | p90 ms | p99 ms | max ms | target p99 |
            |---|---|---|---|---|---|---|---|
            | {measured} | {receiver.Count - Warmup} | {latencies[0]:N1} | {Percentile(latencies, 50):N1} | {Percentile(latencies, 90):N1} | {Percentile(latencies, 99):N1} | {latencies[^1]:N1} | < 1000 ms: {(Percentile(latencies, 99) < 1000 ? "met" : "NOT met")} |
            """);
        Console.WriteLine(table);
        var results = Path.Combine(RepositoryRoot(), "bench", "results", "alert-latency.md");
        await File.WriteAllTextAsync(results, table + Environment.NewLine);
        Console.Error.WriteLine($"written to {results}");
        return 0;
    }

    /// <summary>One chat completion with <paramref name="key"/>: its request id, and the instant the whole response was read.</summary>
    private static async Task<(string RequestId, long Done)> CallAsync(HttpClient client, string key)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent("""{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"max_tokens":16}""", Encoding.UTF8, "application/json"),
        };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        using var response = await client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead);
        await response.Content.ReadAsByteArrayAsync();
        var done = Stopwatch.GetTimestamp();
        if (response.StatusCode != HttpStatusCode.OK)
        {
            throw new InvalidOperationException($"the gateway answered {(int)response.StatusCode}");
        }

        return (response.Headers.GetValues("x-request-id").Single(), done);
    }

    /// <summary>The 1, 5 and 15 minute load averages (Linux), or "unknown": how busy the shared machine was.</summary>
    private static string LoadAverage()
        => File.Exists("/proc/loadavg") ? string.Join(" ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "unknown";

    /// <summary>Nearest rank.</summary>
    private static double Percentile(List<double> sorted, int percent) => sorted[Math.Max(0, (int)Math.Ceiling(percent / 100.0 * sorted.Count) - 1)];

    private static string RepositoryRoot()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(Path.Combine(directory.FullName, "Custos.slnx")))
        {
            directory = directory.Parent;
        }

        return directory?.FullName ?? Directory.GetCurrentDirectory();
    }

    /// <summary>One POST as the receiver got it.</summary>
    private sealed record Delivery(long ReceivedAt);

    /// <summary>The owners' webhook: Kestrel on loopback; checks each POST's signature and hands it to whoever waits for its request id.</summary>
    private sealed class Receiver : IAsyncDisposable
    {
        private readonly WebApplication _app;
        private readonly ConcurrentDictionary<string, TaskCompletionSource<Delivery>> _waiting = new(StringComparer.Ordinal);
        private int _count;
        private int _invalid;
        private int _unexpected;

        private Receiver(WebApplication app) => _app = app;

        public Uri Uri { get; private set; } = null!;

        /// <summary>The gateway's signer, set once the gateway has made its secret; POSTs before that count as invalid.</summary>
        public WebhookSigner? Signer { get; set; }

        public int Count => Volatile.Read(ref _count);

        public int Invalid => Volatile.Read(ref _invalid);

        public int Unexpected => Volatile.Read(ref _unexpected);

        public static async Task<Receiver> StartAsync()
        {
            var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
            builder.Logging.ClearProviders();
            builder.WebHost.UseKestrelCore().ConfigureKestrel(options => options.Listen(IPAddress.Loopback, 0));
            var app = builder.Build();
            var receiver = new Receiver(app);
            app.Run(receiver.HandleAsync);
            await app.StartAsync();
            var address = app.Services.GetRequiredService<IServer>().Features.GetRequiredFeature<IServerAddressesFeature>().Addresses.First();
            receiver.Uri = new Uri(address.TrimEnd('/') + "/hooks/alerts");
            return receiver;
        }

        /// <summary>The POST of the alert raised by <paramref name="requestId"/>.</summary>
        public Task<Delivery> WaitAsync(string requestId) => Slot(requestId).Task;

        private TaskCompletionSource<Delivery> Slot(string requestId)
            => _waiting.GetOrAdd(requestId, _ => new TaskCompletionSource<Delivery>(TaskCreationOptions.RunContinuationsAsynchronously));

        private async Task HandleAsync(HttpContext context)
        {
            using var buffer = new MemoryStream();
            await context.Request.Body.CopyToAsync(buffer, context.RequestAborted);
            var receivedAt = Stopwatch.GetTimestamp();
            var body = buffer.ToArray();
            Interlocked.Increment(ref _count);
            context.Response.StatusCode = StatusCodes.Status204NoContent;

            var signed = long.TryParse(context.Request.Headers[WebhookSigner.TimestampHeader], NumberStyles.None, CultureInfo.InvariantCulture, out var timestamp)
                && Math.Abs(DateTimeOffset.UtcNow.ToUnixTimeSeconds() - timestamp) <= 300
                && Signer?.Verify(timestamp, body, context.Request.Headers[WebhookSigner.SignatureHeader].ToString()) == true;
            if (!signed)
            {
                Interlocked.Increment(ref _invalid);
                return;
            }

            using var json = JsonDocument.Parse(body);
            var root = json.RootElement;
            if (root.GetProperty("event").GetString() != "alert.raised" || root.GetProperty("type").GetString() != "model.first_use"
                || root.GetProperty("request_id").GetString() is not { } requestId || !Slot(requestId).TrySetResult(new Delivery(receivedAt)))
            {
                Interlocked.Increment(ref _unexpected);
            }
        }

        public async ValueTask DisposeAsync()
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
    }
}
