using System.Globalization;
using System.Net;
using Custos.Bench.Upstream;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Hosting;

// A fast mock OpenAI provider for load tests: canned bytes, built once; no logging, no routing, no JSON parsing.
if (!TryParsePort(args, out var port))
{
    await Console.Error.WriteLineAsync("usage: Custos.Bench.Upstream --port N   (N: 1-65535, listens on 127.0.0.1)");
    return 2;
}

var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions { Args = args });
builder.WebHost.UseKestrelCore().ConfigureKestrel(options =>
{
    options.AddServerHeader = false;
    options.Listen(IPAddress.Loopback, port);
});

await using var app = builder.Build();
var responder = new MockResponder(CannedResponses.Build());
app.Run(responder.HandleAsync);

await app.StartAsync();
Console.WriteLine($"Custos.Bench.Upstream listening on http://127.0.0.1:{port}/v1 (POST /v1/chat/completions)");
await app.WaitForShutdownAsync();
return 0;

static bool TryParsePort(string[] args, out int port)
{
    port = 0;
    for (var i = 0; i < args.Length - 1; i++)
    {
        if (args[i] == "--port")
        {
            return int.TryParse(args[i + 1], NumberStyles.None, CultureInfo.InvariantCulture, out port) && port is > 0 and <= IPEndPoint.MaxPort;
        }
    }

    return false;
}
