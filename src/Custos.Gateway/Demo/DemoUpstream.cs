using System.Net;
using System.Security.Cryptography.X509Certificates;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Custos.Gateway.Demo;

/// <summary>
/// A local stand-in for a model provider: a small Kestrel server on loopback that speaks the exact OpenAI
/// (<c>/v1/chat/completions</c>, <c>/v1/responses</c>, <c>/v1/completions</c>, <c>/v1/embeddings</c>, <c>/v1/models</c>) and
/// Anthropic (<c>/v1/messages</c>) wire formats, streaming and not, with deterministic, clearly labelled
/// replies and usage. Used by <c>custos demo</c>, as the mock upstream of functional tests and as the fast
/// mock of benchmarks.
/// </summary>
/// <remarks>
/// Test behaviours are chosen by the requested model name: <c>mock-error-500</c>, <c>mock-error-401</c>,
/// <c>mock-error-400</c>, <c>mock-error-429</c>, <c>mock-overloaded</c>, <c>mock-slow</c> (10 s), <c>mock-cut-stream</c>,
/// <c>mock-no-usage</c>, <c>mock-reset</c> and the others of <see cref="MockMode"/>. Every other model answers normally.
/// </remarks>
public sealed class DemoUpstream : IAsyncDisposable
{
    private static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(5);

    private readonly WebApplication _app;
    private readonly DemoHandler _handler;
    private readonly CancellationTokenSource _stopping;
    private int _disposed;

    private DemoUpstream(WebApplication app, DemoHandler handler, CancellationTokenSource stopping, Uri baseUri)
    {
        _app = app;
        _handler = handler;
        _stopping = stopping;
        BaseUri = baseUri;
    }

    /// <summary>The server's root, for example <c>http://127.0.0.1:54321/</c>; all endpoints are under <c>/v1/</c>.</summary>
    public Uri BaseUri { get; }

    /// <summary>Total requests received, whatever their path or outcome.</summary>
    public int RequestCount => _handler.RequestCount;

    /// <summary>The last requests received (at most 1000), oldest first: what reached the provider.</summary>
    public IReadOnlyList<ReceivedRequest> Received => _handler.Received;

    /// <summary>Starts a demo upstream on <c>127.0.0.1:<paramref name="port"/></c> (0 picks a free port).</summary>
    /// <param name="port">The loopback port to bind, or 0 for an ephemeral one.</param>
    /// <param name="ct">Cancels the start.</param>
    /// <returns>The running server; dispose it to stop.</returns>
    public static Task<DemoUpstream> StartAsync(int port = 0, CancellationToken ct = default) => StartAsync(port, certificate: null, ct);

    /// <summary>
    /// Starts a demo upstream as <see cref="StartAsync(int, CancellationToken)"/> does, speaking HTTPS with
    /// <paramref name="certificate"/> when one is given, as a real provider does.
    /// </summary>
    /// <param name="port">The loopback port to bind, or 0 for an ephemeral one.</param>
    /// <param name="certificate">The server certificate, with its private key; null for plain HTTP.</param>
    /// <param name="ct">Cancels the start.</param>
    /// <returns>The running server; dispose it to stop.</returns>
    public static async Task<DemoUpstream> StartAsync(int port, X509Certificate2? certificate, CancellationToken ct = default)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(port);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(port, IPEndPoint.MaxPort);

        // The empty builder reads no appsettings or environment, so the host application's Kestrel or
        // logging configuration cannot leak into the demo server.
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.Logging.ClearProviders();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        builder.Services.AddSingleton<IHostLifetime>(new Hosting.EmbeddedLifetime());
        builder.WebHost.UseKestrelCore().ConfigureKestrel(options =>
        {
            options.AddServerHeader = false;
            options.Limits.MaxRequestBodySize = null;
            options.Listen(IPAddress.Loopback, port, listen =>
            {
                if (certificate is not null)
                {
                    listen.UseHttps(certificate);
                }
            });
        });

        var app = builder.Build();
        var stopping = new CancellationTokenSource();
        var handler = new DemoHandler(stopping.Token);
        app.Run(handler.HandleAsync);
        try
        {
            await app.StartAsync(ct);
            var addresses = app.Services.GetRequiredService<IServer>().Features.GetRequiredFeature<IServerAddressesFeature>();
            var baseUri = new Uri(addresses.Addresses.First());
            return new DemoUpstream(app, handler, stopping, baseUri);
        }
        catch
        {
            await app.DisposeAsync();
            stopping.Dispose();
            throw;
        }
    }

    /// <summary>Stops the server: pending <c>mock-slow</c> waits end at once, open responses get a few seconds.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _stopping.CancelAsync();
        using (var timeout = new CancellationTokenSource(StopTimeout))
        {
            try
            {
                await _app.StopAsync(timeout.Token);
            }
            catch (OperationCanceledException)
            {
                // Remaining connections were aborted.
            }
        }

        await _app.DisposeAsync();
        _stopping.Dispose();
    }
}
