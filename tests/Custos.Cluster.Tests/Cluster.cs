using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Custos.Gateway.Demo;
using Custos.Gateway.Hosting;
using Custos.Gateway.Policy;
using Custos.Ledger;
using Custos.Policy;
using Custos.Postgres;
using Microsoft.Extensions.Logging;

namespace Custos.Cluster.Tests;

/// <summary>
/// Gateway nodes on loopback, in this process, sharing one PostgreSQL database (store) and one Redis (counters and
/// change feed), each with its own connections, data folder and ledger chain, as separate machines would be.
/// </summary>
internal sealed class Cluster : IAsyncDisposable
{
    private readonly List<string> _directories = [];
    private readonly List<StackExchange.Redis.ConnectionMultiplexer> _connections = [];

    private Cluster(DemoUpstream upstream, DemoKeys keys, PolicyDocument policy, string database, string redis, string prefix, TimeProvider time)
        => (Upstream, Keys, Policy, Database, Redis, Prefix, Time) = (upstream, keys, policy, database, redis, prefix, time);

    public DemoUpstream Upstream { get; }

    public DemoKeys Keys { get; }

    public PolicyDocument Policy { get; }

    /// <summary>The PostgreSQL connection string of this cluster's database.</summary>
    public string Database { get; }

    /// <summary>The Redis connection string.</summary>
    public string Redis { get; }

    /// <summary>The key prefix of this cluster in Redis.</summary>
    public string Prefix { get; }

    public TimeProvider Time { get; }

    public List<CustosGateway> Nodes { get; } = [];

    /// <summary>How the nodes keep their policy in step; the gateway's defaults unless a test shortens them.</summary>
    public PolicySyncOptions Sync { get; private init; } = new();

    public static async Task<Cluster> StartAsync(int nodes, string database, string redis, Func<PolicyDocument, PolicyDocument>? change = null, TimeProvider? time = null,
        PolicySyncOptions? sync = null)
    {
        var upstream = await DemoUpstream.StartAsync();
        var keys = DemoPolicy.CreateKeys(new Uri("http://127.0.0.1:1"), new Uri("http://127.0.0.1:2"), null);
        var policy = DemoPolicy.Create(upstream.BaseUri, keys);
        var cluster = new Cluster(upstream, keys, change is null ? policy : change(policy), database, redis, $"t{Guid.NewGuid():N}:", time ?? TimeProvider.System)
        {
            Sync = sync ?? new PolicySyncOptions(),
        };
        for (var i = 0; i < nodes; i++)
        {
            cluster.Nodes.Add(await cluster.StartNodeAsync("node-" + (char)('a' + i)));
        }

        return cluster;
    }

    public async Task<CustosGateway> StartNodeAsync(string nodeId)
    {
        var directory = Path.Combine(Path.GetTempPath(), $"custos-cluster-{nodeId}-{Guid.NewGuid():N}");
        _directories.Add(directory);
        var connection = await global::Custos.Redis.RedisConnection.ConnectAsync(Redis);
        _connections.Add(connection);
        return await CustosGateway.StartAsync(new CustosGatewayOptions
        {
            Policy = Policy,
            PolicyAuthor = "system:cluster-test",
            DataDirectory = directory,
            DataPlaneUrl = "http://127.0.0.1:0",
            AdminUrl = "http://127.0.0.1:0",
            NodeId = nodeId,
            TimeProvider = Time,
            Store = await PostgresStore.OpenAsync(Database),
            Counters = new global::Custos.Redis.RedisCounterStore(connection.GetDatabase(), Time, new global::Custos.Redis.RedisCounterOptions { KeyPrefix = Prefix }),
            ChangeFeed = new global::Custos.Redis.RedisChangeFeed(connection, Prefix),
            PolicySync = Sync,
            ConfigureLogging = logging => logging.SetMinimumLevel(LogLevel.Warning),
        });
    }

    public string KeyOf(string consumer) => Keys.Consumers.Single(c => c.Name == consumer).Key;

    public string AdminKey => Keys.Admins.Single(a => a.Role == "platform-admin").Key;

    /// <summary>One chat call; returns the status, the request id and the error code, if any.</summary>
    public static async Task<(int Status, string? RequestId, string? Code)> ChatAsync(HttpClient client, string key, string model = "gpt-4o-mini", int maxTokens = 8)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent($$"""{"model":"{{model}}","messages":[{"role":"user","content":"hello there"}],"max_tokens":{{maxTokens}}}""",
                Encoding.UTF8, "application/json"),
        };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        using var response = await client.SendAsync(request);
        var body = await response.Content.ReadAsStringAsync();
        string? code = null;
        if (!response.IsSuccessStatusCode && body.StartsWith('{'))
        {
            using var json = JsonDocument.Parse(body);
            code = json.RootElement.TryGetProperty("error", out var error) && error.TryGetProperty("code", out var c) ? c.GetString() : null;
        }

        return ((int)response.StatusCode, response.Headers.TryGetValues("x-request-id", out var ids) ? ids.First() : null, code);
    }

    /// <summary>An admin call on <paramref name="node"/>; returns the JSON answer.</summary>
    public async Task<JsonElement> AdminAsync(CustosGateway node, HttpMethod method, string path, object? body = null)
    {
        using var client = new HttpClient { BaseAddress = node.AdminUri };
        using var request = new HttpRequestMessage(method, "/admin/v1" + path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", AdminKey);
        if (body is not null)
        {
            request.Content = new StringContent(JsonSerializer.Serialize(body), Encoding.UTF8, "application/json");
        }

        using var response = await client.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"{method} {path}: {(int)response.StatusCode} {text}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    /// <summary>Every request entry of every node, read back from the shared store.</summary>
    public async Task<List<JsonElement>> RequestEntriesAsync()
    {
        await using var store = await PostgresStore.OpenAsync(Database);
        var entries = new List<JsonElement>();
        await foreach (var row in store.QueryAsync(new LedgerQuery { Limit = 1_000_000 }))
        {
            entries.Add(JsonDocument.Parse(row.Json).RootElement.Clone());
        }

        return entries;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var node in Nodes)
        {
            await node.DisposeAsync();
        }

        foreach (var connection in _connections)
        {
            await connection.DisposeAsync();
        }

        await Upstream.DisposeAsync();
        foreach (var directory in _directories.Where(Directory.Exists))
        {
            Directory.Delete(directory, recursive: true);
        }
    }
}
