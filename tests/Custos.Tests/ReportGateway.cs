using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Custos.Gateway.Demo;
using Custos.Gateway.Hosting;
using Custos.Identity;
using Custos.Policy;

namespace Custos.Tests;

/// <summary>
/// A real gateway on loopback with a policy written for one report scenario, in front of the demo upstream, over its own
/// data folder. <see cref="StopAsync"/> stops the gateway (draining the ledger and sealing a checkpoint) but keeps the
/// folder, so a report reads it the way an operator would after the fact; disposing deletes it.
/// </summary>
internal sealed class ReportGateway : IAsyncDisposable
{
    public const string Tenant = "acme";

    private readonly Dictionary<string, string> _keys = new(StringComparer.Ordinal);
    private DemoUpstream _upstream = null!;
    private bool _stopped;

    private ReportGateway(string directory) => Directory = directory;

    public string Directory { get; }

    public CustosGateway Gateway { get; private set; } = null!;

    /// <summary>Starts with the policy <paramref name="build"/> makes; it issues keys with <see cref="Key"/>.</summary>
    public static async Task<ReportGateway> StartAsync(string name, Func<ReportGateway, Uri, PolicyDocument> build)
    {
        var test = new ReportGateway(Path.Combine(Path.GetTempPath(), $"custos-report-{name}-{Guid.NewGuid():N}"));
        test._upstream = await DemoUpstream.StartAsync();
        test.Gateway = await CustosGateway.StartAsync(new CustosGatewayOptions
        {
            Policy = build(test, test._upstream.BaseUri),
            PolicyAuthor = "system:test",
            PolicyReason = "report scenario",
            DataDirectory = test.Directory,
            DataPlaneUrl = "http://127.0.0.1:0",
            AdminUrl = "http://127.0.0.1:0",
            NodeId = "report-node",
            ConfigureLogging = _ => { },
        });
        return test;
    }

    /// <summary>Makes a key for <paramref name="name"/> (a consumer or an admin) and returns its hash for the policy.</summary>
    public string Key(string name, ApiKeyKind kind = ApiKeyKind.Consumer)
    {
        var key = ApiKey.Generate(kind);
        _keys[name] = key;
        return KeyHash.Of(key).ToHex();
    }

    /// <summary>The tenant of every scenario: the demo upstream's OpenAI models with prices.</summary>
    public static TenantConfig AcmeTenant(Uri upstream, LimitsConfig? limits = null) => new()
    {
        Id = Tenant,
        Providers = [new ProviderConfig { Id = "openai", Kind = ProviderKind.OpenAI, BaseUrl = new Uri(upstream.ToString().TrimEnd('/') + "/v1") }],
        Models =
        [
            new ModelConfig { Name = "gpt-4o-mini", Provider = "openai", InputPerMillion = 0.15m, OutputPerMillion = 0.60m },
            new ModelConfig { Name = "gpt-4o", Provider = "openai", InputPerMillion = 2.50m, OutputPerMillion = 10m },
        ],
        Limits = limits ?? LimitsConfig.Empty,
    };

    /// <summary>Every owner role named, each with its own contact; the policy owner acts as <c>owner-admin</c>.</summary>
    public static ServiceOwners FullOwners(string service) => new()
    {
        Policy = new OwnerConfig { Name = "Pat Policy", Email = $"{service}-policy@acme.example", Admin = "owner-admin" },
        Billing = new OwnerConfig { Name = "Bo Billing", Email = $"{service}-billing@acme.example" },
        Technical = new OwnerConfig { Name = "Tec On-call", Email = $"{service}-oncall@acme.example" },
    };

    /// <summary>A platform admin (<c>root</c>), the service owner who acts for the policy owner, and a finance admin.</summary>
    public IReadOnlyList<AdminConfig> Admins() =>
    [
        new AdminConfig { Id = "root", Role = AdminRole.PlatformAdmin, KeySha256 = Key("root", ApiKeyKind.Admin) },
        new AdminConfig { Id = "owner-admin", Role = AdminRole.ServiceOwner, KeySha256 = Key("owner-admin", ApiKeyKind.Admin) },
        new AdminConfig { Id = "finance", Role = AdminRole.Finance, KeySha256 = Key("finance", ApiKeyKind.Admin) },
    ];

    /// <summary>One chat completion as <paramref name="consumer"/>: the status and the request id.</summary>
    public async Task<(HttpStatusCode Status, string RequestId)> ChatAsync(string consumer, string model = "gpt-4o-mini", string text = "hello", int? maxTokens = 16)
    {
        using var client = new HttpClient { BaseAddress = Gateway.DataPlaneUri };
        var body = JsonSerializer.Serialize(new Dictionary<string, object?>
        {
            ["model"] = model,
            ["messages"] = new[] { new { role = "user", content = text } },
            ["max_tokens"] = maxTokens,
        });
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _keys[consumer]);
        using var response = await client.SendAsync(request);
        return (response.StatusCode, response.Headers.GetValues("x-request-id").Single());
    }

    /// <summary>Calls the admin API as <paramref name="admin"/>; asserts success and returns the JSON answer.</summary>
    public async Task<JsonElement> AdminAsync(string admin, HttpMethod method, string path, object body)
    {
        using var client = new HttpClient { BaseAddress = Gateway.AdminUri };
        using var request = new HttpRequestMessage(method, "/admin/v1" + path) { Content = JsonContent.Create(body) };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _keys[admin]);
        using var response = await client.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"{method} {path} as {admin}: {(int)response.StatusCode} {text}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    /// <summary>Stops the gateway: in-flight work finishes, the ledger drains and its chain is sealed by a signed checkpoint.</summary>
    public async Task StopAsync()
    {
        if (!_stopped)
        {
            _stopped = true;
            await Gateway.DisposeAsync();
            await _upstream.DisposeAsync();
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        }
    }

    /// <summary>Runs <c>custos report …</c> over this folder and returns what it wrote to <paramref name="file"/> (asserting success).</summary>
    public async Task<string> ReportAsync(string file, params string[] args)
    {
        var path = Path.Combine(Directory, file);
        var (exit, output, error) = await Cli.RunAsync([.. args, "--data", Directory, "-o", path]);
        Assert.True(exit == 0, $"custos {string.Join(' ', args)} exited {exit}: {error}");
        Assert.Contains("written to " + path, output, StringComparison.Ordinal);
        return await File.ReadAllTextAsync(path);
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        System.IO.Directory.Delete(Directory, recursive: true);
    }
}
