using System.CommandLine;
using Custos.Gateway.Demo;
using Custos.Gateway.Hosting;
using Custos.Storage;

namespace Custos.Cli.Commands;

/// <summary><c>custos demo</c>: the whole gateway with zero set-up, against the built-in demo upstream.</summary>
internal static class DemoCommand
{
    public static Command Create(TextWriter output)
    {
        var port = CommonOptions.Port(new Option<int>("--port") { Description = "Data-plane port on 127.0.0.1 (0: any free port).", DefaultValueFactory = _ => 8080 });
        var adminPort = CommonOptions.Port(new Option<int>("--admin-port") { Description = "Admin port on 127.0.0.1 (0: any free port).", DefaultValueFactory = _ => 8081 });
        var upstreamPort = CommonOptions.Port(new Option<int>("--upstream-port") { Description = "Port of the demo upstream on 127.0.0.1 (0: any free port).", DefaultValueFactory = _ => 8089 });
        var data = new Option<string>("--data") { Description = "Folder for the SQLite store and demo-keys.json.", DefaultValueFactory = _ => CommonOptions.DefaultDataDirectory };
        var command = new Command("demo", "Run the whole gateway with zero set-up: embedded store, a seeded policy, printed keys, and a deterministic demo upstream.")
        {
            port, adminPort, upstreamPort, data,
        };
        command.SetAction((parse, cancellationToken) => RunAsync(parse.GetValue(port), parse.GetValue(adminPort), parse.GetValue(upstreamPort),
            parse.GetValue(data)!, output, cancellationToken));
        return command;
    }

    private static async Task<int> RunAsync(int port, int adminPort, int upstreamPort, string data, TextWriter output, CancellationToken cancellationToken)
    {
        var dataDirectory = Path.GetFullPath(data);
        DataFolder.Create(dataDirectory);
        InlineIo.PreferFor(embeddedStore: true); // before the first socket
        await using var upstream = await Start(() => DemoUpstream.StartAsync(upstreamPort, cancellationToken), "demo upstream", upstreamPort);

        var dataPlaneUrl = $"http://127.0.0.1:{port}";
        var adminUrl = $"http://127.0.0.1:{adminPort}";
        var keys = DemoPolicy.CreateKeys(new Uri(dataPlaneUrl), new Uri(adminUrl), DemoKeys.TryLoad(dataDirectory));
        var gateway = await Start(() => CustosGateway.StartAsync(new CustosGatewayOptions
        {
            Policy = DemoPolicy.Create(upstream.BaseUri, keys),
            PolicyAuthor = "system:demo",
            PolicyReason = "custos demo seeded policy",
            DataDirectory = dataDirectory,
            DataPlaneUrl = dataPlaneUrl,
            AdminUrl = adminUrl,
            Checkpoints = new Gateway.Ledger.CheckpointOptions { WitnessDirectory = Path.Combine(dataDirectory, "witness") },
        }, cancellationToken), "gateway", port);

        keys = keys with { DataPlane = gateway.DataPlaneUri.ToString().TrimEnd('/'), Admin = gateway.AdminUri.ToString().TrimEnd('/') };
        keys.Save(dataDirectory);
        return await GatewayRunner.RunUntilStoppedAsync(gateway, output, cancellationToken,
            () => PrintBanner(output, gateway, upstream.BaseUri, keys, dataDirectory));
    }

    private static async Task<T> Start<T>(Func<Task<T>> start, string what, int port)
    {
        try
        {
            return await start();
        }
        catch (IOException ex) when (ex.Message.Contains("address already in use", StringComparison.OrdinalIgnoreCase) || ex.InnerException is System.Net.Sockets.SocketException)
        {
            throw new CliException($"could not start the {what}: port {port} is already in use. Stop the other process or choose another port (see custos demo --help).");
        }
        catch (InvalidOperationException ex) when (ex is Policy.RevocationUndoneException or Policy.ContainmentLiftedException)
        {
            // The demo's policy is made afresh at each start, with the demo upstream's address in it: other ports make it
            // an edited policy, which may not bring back what was revoked or suspended in this folder since.
            throw new CliException($"{ex.Message}. The demo's policy is made afresh at each start, with its ports in it: start it with the ports " +
                "it had, or with a new --data folder; nothing was started.");
        }
    }

    private static void PrintBanner(TextWriter output, CustosGateway gateway, Uri upstream, DemoKeys keys, string dataDirectory)
    {
        var snapshot = gateway.Policy.Current;
        var dataPlane = keys.DataPlane;
        var sample = keys.Consumers[0];
        output.WriteLine($"""

            Custos demo: an accountable AI gateway
              data plane   {dataPlane}
              admin        {keys.Admin}
              console      {keys.Admin}/console/  (sign in with an admin key from {DemoKeys.FileName}, one per role)
              demo upstream {upstream.ToString().TrimEnd('/')}  (deterministic demo output, not a real model)
              store        {Path.Combine(dataDirectory, "custos.db")}
              policy       version {snapshot.Version}, sha256 {snapshot.Hash}
              keys         {Path.Combine(dataDirectory, DemoKeys.FileName)}

            Consumer keys (demo only; real keys are shown once and stored as hashes):
            """);
        output.WriteLine($"  {"consumer",-16} {"tenant",-8} {"service",-18} {"category",-11} key");
        foreach (var consumer in keys.Consumers)
        {
            output.WriteLine($"  {consumer.Name,-16} {consumer.Tenant,-8} {consumer.Service,-18} {consumer.Category,-11} {consumer.Key}");
        }

        output.WriteLine($"""

            Try it with curl:
              curl -s {dataPlane}/v1/chat/completions \
                -H "Authorization: Bearer {sample.Key}" \
                -H "Content-Type: application/json" \
                -d '{"{"}"model":"gpt-4o-mini","messages":[{"{"}"role":"user","content":"Hello, Custos"{"}"}]{"}"}'

            or with the OpenAI SDK (Python):
              from openai import OpenAI
              client = OpenAI(base_url="{dataPlane}/v1", api_key="{sample.Key}")
              print(client.chat.completions.create(model="gpt-4o-mini",
                    messages=[{"{"}"role": "user", "content": "Hello, Custos"{"}"}]).choices[0].message.content)

            or with the OpenAI SDK (.NET):
              var chat = new OpenAI.Chat.ChatClient("gpt-4o-mini", new System.ClientModel.ApiKeyCredential("{sample.Key}"),
                  new OpenAI.OpenAIClientOptions {"{"} Endpoint = new Uri("{dataPlane}/v1") {"}"});
              Console.WriteLine(chat.CompleteChat("Hello, Custos").Value.Content[0].Text);

            Then see what the ledger recorded, and the alerts it raised (a first use of a model is one):
              dotnet run --project src/Custos -- requests --data {dataDirectory}
              CUSTOS_ADMIN_KEY=<the platform-admin key in {DemoKeys.FileName}> dotnet run --project src/Custos -- alerts list --server {keys.Admin}
              curl -s {keys.Admin}/metrics

            Press Ctrl+C to stop.
            """);
    }
}
