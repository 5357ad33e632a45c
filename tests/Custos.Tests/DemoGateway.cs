using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Custos.Gateway.Demo;
using Custos.Gateway.Hosting;
using Custos.Ledger;
using Custos.Policy;

namespace Custos.Tests;

/// <summary>
/// A real gateway on loopback ports 0 with the demo policy (optionally changed) and the demo upstream, over a fresh
/// store folder that disposing deletes.
/// </summary>
internal sealed class DemoGateway : IAsyncDisposable
{
    private DemoGateway(string directory, DemoUpstream upstream, DemoKeys keys, CustosGateway gateway)
        => (Directory, Upstream, Keys, Gateway) = (directory, upstream, keys, gateway);

    /// <summary>The store folder.</summary>
    public string Directory { get; }

    public DemoUpstream Upstream { get; }

    /// <summary>The keys of the demo's consumers and of one admin per role (<c>demo-ROLE</c>).</summary>
    public DemoKeys Keys { get; }

    public CustosGateway Gateway { get; }

    /// <summary>
    /// Starts one; <paramref name="time"/> is the gateway's clock (default the system's); <paramref name="directory"/> a
    /// data folder to start on again (default a new one).
    /// </summary>
    public static async Task<DemoGateway> StartAsync(string name, Func<PolicyDocument, PolicyDocument>? change = null, TimeProvider? time = null,
        string? directory = null)
    {
        directory ??= Path.Combine(Path.GetTempPath(), $"custos-{name}-{Guid.NewGuid():N}");
        var upstream = await DemoUpstream.StartAsync();
        var keys = DemoPolicy.CreateKeys(new Uri("http://127.0.0.1:1"), new Uri("http://127.0.0.1:2"), null);
        var policy = DemoPolicy.Create(upstream.BaseUri, keys);
        CustosGateway gateway;
        try
        {
            gateway = await CustosGateway.StartAsync(new CustosGatewayOptions
            {
                Policy = change is null ? policy : change(policy),
                PolicyAuthor = "system:demo",
                DataDirectory = directory,
                DataPlaneUrl = "http://127.0.0.1:0",
                AdminUrl = "http://127.0.0.1:0",
                ConfigureLogging = _ => { },
                TimeProvider = time ?? TimeProvider.System,
            });
        }
        catch
        {
            await upstream.DisposeAsync();
            throw;
        }

        return new DemoGateway(directory, upstream, keys, gateway);
    }

    /// <summary>The key of the demo consumer <paramref name="name"/>.</summary>
    public string ConsumerKey(string name) => Keys.Consumers.Single(c => c.Name == name).Key;

    /// <summary>The key of the demo admin of <paramref name="role"/>, for example <c>platform-admin</c> (or <c>platform_admin</c>).</summary>
    public string AdminKey(string role) => Keys.Admins.Single(a => a.Role == role.Replace('_', '-')).Key;

    /// <summary>The ledger entries matching <paramref name="query"/>, oldest first, once every queued record is stored.</summary>
    public async Task<List<JsonElement>> LedgerAsync(LedgerQuery query)
    {
        await Gateway.Ledger.FlushAsync();
        var entries = new List<JsonElement>();
        await foreach (var row in Gateway.Store.QueryAsync(query))
        {
            using var entry = JsonDocument.Parse(row.Json);
            entries.Add(entry.RootElement.Clone());
        }

        return entries;
    }

    /// <summary>The administrative entries of the ledger with <paramref name="action"/>, oldest first.</summary>
    public async Task<List<JsonElement>> AdminEntriesAsync(string action)
        => [.. (await LedgerAsync(new LedgerQuery { Kind = "admin", Limit = 100_000 })).Where(e => e.GetProperty("action").GetString() == action)];

    public async ValueTask DisposeAsync()
    {
        await Gateway.DisposeAsync();
        await Upstream.DisposeAsync();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        System.IO.Directory.Delete(Directory, recursive: true);
    }

    /// <summary>One chat completion with <paramref name="key"/> and <paramref name="prompt"/>: the status, the error code when refused, and the request id.</summary>
    public static async Task<(HttpStatusCode Status, string? Code, string RequestId)> ChatAsync(Uri dataPlane, string key, string model = "gpt-4o-mini", string prompt = "hello")
    {
        using var client = new HttpClient { BaseAddress = dataPlane };
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent($$"""{"model":"{{model}}","messages":[{"role":"user","content":{{JsonSerializer.Serialize(prompt)}}}],"max_tokens":16}""", Encoding.UTF8, "application/json"),
        };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        using var response = await client.SendAsync(request);
        var body = await response.Content.ReadAsStringAsync();
        var code = response.IsSuccessStatusCode ? null : JsonDocument.Parse(body).RootElement.GetProperty("error").GetProperty("code").GetString();
        return (response.StatusCode, code, response.Headers.GetValues("x-request-id").Single());
    }

    /// <summary>The cells of the row of a CLI table whose first cell is <paramref name="first"/>.</summary>
    public static string[] Row(string table, string first)
        => table.ReplaceLineEndings("\n").Split('\n').Select(l => Regex.Split(l.Trim(), " {2,}")).Single(cells => cells[0] == first);
}
