using System.CommandLine;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Custos.Gateway.Hosting;

namespace Custos.Cli.Commands;

/// <summary><c>custos serve --config custos.yaml</c>: the gateway against real providers.</summary>
internal static class ServeCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var config = new Option<FileInfo>("--config", "-c") { Description = "The custos.yaml to serve.", Required = true };
        var port = CommonOptions.Port(new Option<int?>("--port") { Description = "Data-plane port on 127.0.0.1 (overrides server.listen; 0: any free port)." });
        var adminPort = CommonOptions.Port(new Option<int?>("--admin-port") { Description = "Admin port on 127.0.0.1 (overrides server.admin_listen; 0: any free port)." });
        var data = CommonOptions.Data();
        var nodeId = new Option<string?>("--node-id") { Description = "This node's id, which names its ledger chain." };
        var command = new Command("serve", "Run the gateway with the policy and providers declared in a YAML file.")
        {
            config, port, adminPort, data, nodeId,
        };
        command.SetAction((parse, cancellationToken) => RunAsync(parse.GetValue(config)!, parse.GetValue(port), parse.GetValue(adminPort),
            parse.GetValue(data), parse.GetValue(nodeId), output, error, cancellationToken));
        return command;
    }

    private static async Task<int> RunAsync(FileInfo config, int? port, int? adminPort, string? data, string? nodeId, TextWriter output,
        TextWriter error, CancellationToken cancellationToken)
    {
        // The configuration's errors and warnings on standard error, beside the summary a refusal ends with: standard output
        // is the gateway's own.
        var result = CommonOptions.ReadConfig(config);
        foreach (var diagnostic in result.Diagnostics)
        {
            error.WriteLine(diagnostic.Format(config.Name));
        }

        if (result.Document is not { } document)
        {
            throw new CliException($"{config.Name} is not valid; nothing was started (see custos config validate).");
        }

        var server = result.Server;
        InlineIo.PreferFor(embeddedStore: server.Storage != Custos.Policy.StorageBackend.Postgres); // before the first socket
        var defaults = new CustosGatewayOptions { Policy = document, DataDirectory = "." };
        using var redis = server.Counters == Custos.Policy.CounterBackend.Redis ? await ConnectRedisAsync() : null;
        var store = server.Storage == Custos.Policy.StorageBackend.Postgres ? await CommonOptions.OpenPostgresAsync(cancellationToken) : null;
        var options = new CustosGatewayOptions
        {
            Policy = document,
            PolicySource = File.ReadAllText(config.FullName),
            PolicyAuthor = "system:serve",
            PolicyReason = $"custos serve --config {config.Name} (by {Environment.UserName} on {Environment.MachineName})",
            DataDirectory = data is not null ? Path.GetFullPath(data) : CommonOptions.ResolveRelative(config, server.Data ?? CommonOptions.DefaultDataDirectory),
            DataPlaneUrl = port is { } p ? $"http://127.0.0.1:{p}" : server.Listen ?? defaults.DataPlaneUrl,
            AdminUrl = adminPort is { } a ? $"http://127.0.0.1:{a}" : server.AdminListen ?? defaults.AdminUrl,
            NodeId = nodeId ?? server.NodeId ?? defaults.NodeId,
            TrustedProxies = server.TrustedProxies,
            ServerCertificate = server.TlsCertificate is { } certificate
                ? LoadCertificate(CommonOptions.ResolveRelative(config, certificate), server.TlsKey is { } key ? CommonOptions.ResolveRelative(config, key) : null)
                : null,
            Checkpoints = new Gateway.Ledger.CheckpointOptions
            {
                WitnessDirectory = server.WitnessDir is { } witness ? CommonOptions.ResolveRelative(config, witness) : null,
                WitnessWebhook = server.WitnessWebhook,
            },
            OtlpEndpoint = server.OtlpEndpoint,
            OtlpProtocol = server.OtlpProtocol,
            Counters = redis?.Counters,
            ChangeFeed = redis?.ChangeFeed,
            Store = store,
        };

        CustosGateway gateway;
        try
        {
            gateway = await CustosGateway.StartAsync(options, cancellationToken);
        }
        catch (InvalidOperationException ex) when (ex is Policy.RevocationUndoneException or Policy.ContainmentLiftedException)
        {
            throw new CliException($"{config.Name}: {ex.Message}; nothing was started.");
        }

        return await GatewayRunner.RunUntilStoppedAsync(gateway, output, cancellationToken, () => PrintReady(gateway, config, redis is not null, server.TrustedProxies, output));
    }

    /// <summary>The listeners' certificate and key, from PEM files; a file that cannot be read stops the start, saying which.</summary>
    private static X509Certificate2 LoadCertificate(string certificate, string? key)
    {
        try
        {
            return X509Certificate2.CreateFromPemFile(certificate, key);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or CryptographicException or ArgumentException)
        {
            // The message names the file and what is wrong with it, never the key's contents.
            throw new CliException($"server.tls_certificate {certificate}{(key is null ? "" : $" with server.tls_key {key}")} could not be loaded: {ex.Message}");
        }
    }

    /// <summary>The Redis of <c>server.counters: redis</c>, from <c>CUSTOS_REDIS</c>; unreachable at start means not starting.</summary>
    private static async Task<Redis.RedisEngines> ConnectRedisAsync()
    {
        var configuration = Environment.GetEnvironmentVariable(RedisVariable);
        if (string.IsNullOrWhiteSpace(configuration))
        {
            throw new CliException($"server.counters is redis, but {RedisVariable} is not set; set it to the Redis connection string (for example 127.0.0.1:6379).");
        }

        try
        {
            return await Redis.RedisEngines.ConnectAsync(configuration, TimeProvider.System);
        }
        // The connection string may hold a password: name the variable, never its value.
        catch (FormatException ex)
        {
            throw new CliException($"{RedisVariable} is not a Redis connection string: {ex.Message}; nothing was started.");
        }
        catch (InvalidOperationException ex)
        {
            throw new CliException($"cannot reach Redis ({RedisVariable}): {ex.Message}; nothing was started.");
        }
    }

    /// <summary>The environment variable with the Redis connection string.</summary>
    public const string RedisVariable = "CUSTOS_REDIS";

    private static void PrintReady(CustosGateway gateway, FileInfo config, bool sharedCounters, IReadOnlyList<System.Net.IPNetwork> trustedProxies, TextWriter output)
    {
        var snapshot = gateway.Policy.Current;
        output.WriteLine($"Custos serving {config.Name}: data plane {gateway.DataPlaneUri}, admin {gateway.AdminUri}, store {gateway.Store.Description}, " +
            $"node {gateway.NodeId}, counters {(sharedCounters ? "in Redis (shared)" : "in-process")}, policy version {snapshot.Version} (sha256 {snapshot.Hash})" +
            (InlineIo.Enabled ? ", inline I/O." : "."));
        if (trustedProxies.Count > 0)
        {
            output.WriteLine($"Client addresses are read from X-Forwarded-For on connections from {string.Join(", ", trustedProxies)} (server.trusted_proxies).");
        }
        foreach (var tenant in snapshot.Tenants)
        {
            foreach (var provider in tenant.CanonicalModels.Select(m => m.Provider).Distinct().Where(p => p.IsMissingKey))
            {
                output.WriteLine($"warning: tenant {tenant.Id} provider {provider.Id}: environment variable {provider.ApiKeyEnv} is not set; its models will answer 502 upstream.not_configured.");
            }
        }
    }
}
