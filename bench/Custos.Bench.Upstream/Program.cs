using System.Globalization;
using System.Net;
using Custos.Bench.Upstream;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Yarp.ReverseProxy.Forwarder;

// A fast mock OpenAI provider for load tests: canned bytes, built once; no logging, no routing, no JSON parsing.
// With --forward-to URL it is instead a bare YARP forwarder to URL with the upstream client settings Custos uses:
// the floor of what forwarding costs on .NET, with none of Custos's controls, metering or ledger.
if (!TryParsePort(args, out var port))
{
    await Console.Error.WriteLineAsync("usage: Custos.Bench.Upstream --port N [--forward-to http://127.0.0.1:M]   (N, M: 1-65535, listens on 127.0.0.1)");
    return 2;
}

var forwardTo = ValueOf(args, "--forward-to");

var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions { Args = args });
builder.WebHost.UseKestrelCore().ConfigureKestrel(options =>
{
    options.AddServerHeader = false;
    options.Listen(IPAddress.Loopback, port);
});

if (forwardTo is not null)
{
    builder.Services.AddHttpForwarder();
}

await using var app = builder.Build();
if (forwardTo is null)
{
    var responder = new MockResponder(CannedResponses.Build());
    app.Run(responder.HandleAsync);
}
else
{
    var forwarder = app.Services.GetRequiredService<IHttpForwarder>();
    var client = Custos.Gateway.Hosting.CustosGateway.CreateUpstreamClient(); // the very client Custos forwards with
    app.Run(async context => await forwarder.SendAsync(context, forwardTo, client));
}

await app.StartAsync();
Console.WriteLine(forwardTo is null
    ? $"Custos.Bench.Upstream listening on http://127.0.0.1:{port}/v1 (POST /v1/chat/completions)"
    : $"Custos.Bench.Upstream listening on http://127.0.0.1:{port}, forwarding to {forwardTo}");
await app.WaitForShutdownAsync();
return 0;

static bool TryParsePort(string[] args, out int port)
{
    port = 0;
    return int.TryParse(ValueOf(args, "--port"), NumberStyles.None, CultureInfo.InvariantCulture, out port) && port is > 0 and <= IPEndPoint.MaxPort;
}

static string? ValueOf(string[] args, string name)
{
    for (var i = 0; i < args.Length - 1; i++)
    {
        if (args[i] == name)
        {
            return args[i + 1];
        }
    }

    return null;
}
