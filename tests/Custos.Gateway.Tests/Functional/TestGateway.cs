using System.Collections.Concurrent;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Custos.Gateway.Demo;
using Custos.Gateway.Hosting;
using Custos.Gateway.Ledger;
using Custos.Identity;
using Custos.Ledger;
using Custos.Policy;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;

namespace Custos.Gateway.Tests.Functional;

/// <summary>
/// A real gateway on Kestrel (loopback, free ports, its own data folder) in front of a real mock provider on
/// loopback. Everything the tests see went over HTTP, through the YARP forwarder, into the SQLite ledger.
/// </summary>
public sealed class TestGateway : IAsyncDisposable
{
    public const string OpenAIUpstreamKey = "sk-test-upstream-openai-7f3a9c2e41d8b6";
    public const string AnthropicUpstreamKey = "sk-ant-test-upstream-5e1b7d9a3c2f";

    private readonly Dictionary<string, string> _keys = new(StringComparer.Ordinal);

    private TestGateway(string dataDirectory, DemoUpstream upstream)
    {
        DataDirectory = dataDirectory;
        Upstream = upstream;
    }

    public string DataDirectory { get; }

    public DemoUpstream Upstream { get; }

    public CustosGateway Gateway { get; private set; } = null!;

    public CapturingLoggerProvider Logs { get; } = new();

    public HttpClient Client { get; private set; } = null!;

    public Uri BaseUri => Gateway.DataPlaneUri;

    public Uri OpenAIEndpoint => new(Gateway.DataPlaneUri, "/v1");

    /// <summary>Every key handed out, for the "no key anywhere" checks.</summary>
    public IEnumerable<string> AllKeys => _keys.Values;

    public string KeyOf(string consumer) => _keys[consumer];

    public static Task<TestGateway> StartAsync(Func<PolicyDocument, PolicyDocument>? customize = null, int ledgerQueueCapacity = LedgerWriter.DefaultCapacity)
        => StartAsync(customize is null ? null : (_, policy) => customize(policy), ledgerQueueCapacity);

    /// <summary>Starts with a policy customised by <paramref name="customize"/>, which can issue keys with <see cref="IssueKey"/>.</summary>
    public static async Task<TestGateway> StartAsync(Func<TestGateway, PolicyDocument, PolicyDocument>? customize, int ledgerQueueCapacity = LedgerWriter.DefaultCapacity,
        HttpMessageHandler? notificationHandler = null, CheckpointOptions? checkpoints = null, TimeProvider? time = null,
        Func<CustosGatewayOptions, CustosGatewayOptions>? options = null)
    {
        var directory = Path.Combine(Path.GetTempPath(), "custos-test-" + Guid.NewGuid().ToString("N"));
        var upstream = await DemoUpstream.StartAsync();
        var test = new TestGateway(directory, upstream);
        var policy = test.CreatePolicy(upstream.BaseUri);
        var gatewayOptions = new CustosGatewayOptions
        {
            Policy = customize is null ? policy : customize(test, policy),
            NotificationHandler = notificationHandler,
            TimeProvider = time ?? TimeProvider.System,
            Checkpoints = checkpoints ?? new CheckpointOptions(),
            PolicyAuthor = "test",
            PolicyReason = "functional test",
            DataDirectory = directory,
            DataPlaneUrl = "http://127.0.0.1:0",
            AdminUrl = "http://127.0.0.1:0",
            NodeId = "test-node",
            LedgerQueueCapacity = ledgerQueueCapacity,
            Secrets = name => name switch
            {
                "TEST_OPENAI_KEY" => OpenAIUpstreamKey,
                "TEST_ANTHROPIC_KEY" => AnthropicUpstreamKey,
                _ => null,
            },
            ConfigureLogging = logging =>
            {
                logging.SetMinimumLevel(LogLevel.Trace);
                logging.AddProvider(test.Logs);
            },
        };
        try
        {
            test.Gateway = await CustosGateway.StartAsync(options is null ? gatewayOptions : options(gatewayOptions));
        }
        catch
        {
            await upstream.DisposeAsync();
            throw;
        }

        test.Client = new HttpClient { BaseAddress = test.Gateway.DataPlaneUri, Timeout = TimeSpan.FromSeconds(30) };
        return test;
    }

    /// <summary>Stops the gateway and starts it again on the same data folder and upstream, with <paramref name="options"/>.</summary>
    public async Task RestartAsync(CustosGatewayOptions options)
    {
        Client.Dispose();
        await Gateway.DisposeAsync();
        Gateway = await CustosGateway.StartAsync(options);
        Client = new HttpClient { BaseAddress = Gateway.DataPlaneUri, Timeout = TimeSpan.FromSeconds(30) };
    }

    /// <summary>Makes a key for <paramref name="name"/> (kept for <see cref="KeyOf"/>) and returns its hash for the policy.</summary>
    public string IssueKey(string name, ApiKeyKind kind = ApiKeyKind.Consumer) => NewKey(name, kind);

    private string NewKey(string consumer, ApiKeyKind kind = ApiKeyKind.Consumer)
    {
        var key = ApiKey.Generate(kind);
        _keys[consumer] = key;
        return KeyHash.Of(key).ToHex();
    }

    private PolicyDocument CreatePolicy(Uri upstream)
    {
        var root = upstream.ToString().TrimEnd('/');
        static ModelConfig Chat(string name, string provider, string? upstreamModel = null, params string[] aliases) => new()
        {
            Name = name,
            Provider = provider,
            UpstreamModel = upstreamModel,
            Aliases = aliases,
            InputPerMillion = 1m,
            OutputPerMillion = 2m,
        };

        string[] mocks = ["mock-error-500", "mock-error-401", "mock-error-400", "mock-error-429", "mock-overloaded", "mock-slow", "mock-cut-stream", "mock-no-usage", "mock-split-emoji", "mock-sized-stream", "mock-ignores-stream", "mock-cut-first-event", "mock-redirect", "mock-no-content", "mock-reset"];
        var acme = new TenantConfig
        {
            Id = "acme",
            Providers =
            [
                new ProviderConfig { Id = "openai", Kind = ProviderKind.OpenAI, BaseUrl = new Uri(root + "/v1"), ApiKeyEnv = "TEST_OPENAI_KEY" },
                new ProviderConfig { Id = "anthropic", Kind = ProviderKind.Anthropic, BaseUrl = new Uri(root), ApiKeyEnv = "TEST_ANTHROPIC_KEY" },
                new ProviderConfig { Id = "offline", Kind = ProviderKind.OpenAI, BaseUrl = new Uri("http://127.0.0.1:9/v1") },
                new ProviderConfig { Id = "unconfigured", Kind = ProviderKind.OpenAI, BaseUrl = new Uri(root + "/v1"), ApiKeyEnv = "TEST_NOT_SET" },
            ],
            Models =
            [
                Chat("gpt-4o-mini", "openai", null, "fast"),
                Chat("gpt-4o", "openai"),
                new ModelConfig { Name = "text-embedding-3-small", Provider = "openai", Kind = ModelKind.Embedding, InputPerMillion = 0.02m },
                Chat("claude-sonnet", "anthropic", "claude-sonnet-4-5"),
                Chat("claude-cut", "anthropic", "mock-cut-stream"),
                Chat("claude-no-usage", "anthropic", "mock-no-usage"),
                Chat("claude-overloaded", "anthropic", "mock-overloaded"),
                Chat("offline-model", "offline"),
                Chat("unconfigured-model", "unconfigured"),
                .. mocks.Select(m => Chat(m, "openai")),
            ],
        };
        var globex = new TenantConfig
        {
            Id = "globex",
            Providers = [new ProviderConfig { Id = "openai", Kind = ProviderKind.OpenAI, BaseUrl = new Uri(root + "/v1"), ApiKeyEnv = "TEST_OPENAI_KEY" }],
            Models = [Chat("globex-only", "openai")],
        };

        var allAcme = acme.Models.Select(m => m.Name).Where(m => m != "gpt-4o").ToArray();
        ConsumerConfig Consumer(string id, string service, ConsumerCategory category, string[] models) => new()
        {
            Id = id,
            Service = service,
            Category = category,
            Models = models,
        };

        return new PolicyDocument
        {
            Gateway = new GatewaySettings { MaxRequestBodyBytes = 64 * 1024, UpstreamTimeout = TimeSpan.FromSeconds(2) },
            Tenants = [acme, globex],
            Services =
            [
                new ServiceConfig { Id = "support", Tenant = "acme" },
                new ServiceConfig { Id = "agents", Tenant = "acme" },
                new ServiceConfig { Id = "globex-app", Tenant = "globex" },
            ],
            Consumers =
            [
                Consumer("web", "support", ConsumerCategory.External, allAcme),
                Consumer("agent", "agents", ConsumerCategory.Agent, ["gpt-4o", "claude-sonnet"]),
                Consumer("revoked-user", "support", ConsumerCategory.Internal, ["gpt-4o-mini"]),
                Consumer("suspended-user", "support", ConsumerCategory.Internal, ["gpt-4o-mini"]),
                Consumer("expired-user", "support", ConsumerCategory.Automation, ["gpt-4o-mini"]),
                Consumer("globex-user", "globex-app", ConsumerCategory.Internal, ["globex-only"]),
            ],
            Credentials =
            [
                new CredentialConfig { Id = "cred-web", Consumer = "web", KeySha256 = NewKey("web") },
                new CredentialConfig { Id = "cred-agent", Consumer = "agent", KeySha256 = NewKey("agent") },
                new CredentialConfig { Id = "cred-revoked", Consumer = "revoked-user", KeySha256 = NewKey("revoked-user"), Status = CredentialStatus.Revoked },
                new CredentialConfig { Id = "cred-suspended", Consumer = "suspended-user", KeySha256 = NewKey("suspended-user"), Status = CredentialStatus.Suspended },
                new CredentialConfig { Id = "cred-expired", Consumer = "expired-user", KeySha256 = NewKey("expired-user"), ExpiresAt = DateTimeOffset.UtcNow.AddDays(-1) },
                new CredentialConfig { Id = "cred-globex", Consumer = "globex-user", KeySha256 = NewKey("globex-user") },
            ],
            Admins = [new AdminConfig { Id = "root", Role = AdminRole.PlatformAdmin, KeySha256 = NewKey("admin", ApiKeyKind.Admin) }],
        };
    }

    public HttpRequestMessage Post(string path, string json, string? consumer = "web", bool anthropicHeader = false)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        if (consumer is not null)
        {
            if (anthropicHeader)
            {
                request.Headers.Add("x-api-key", KeyOf(consumer));
            }
            else
            {
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", KeyOf(consumer));
            }
        }

        return request;
    }

    /// <summary>
    /// An alert about consumer <c>web</c> (tenant <c>acme</c>, service <c>support</c>) put in the store as a node would have
    /// raised it: another node's alert, or one for a test of the endpoints that take one.
    /// </summary>
    public Task<Custos.Alerts.Alert> StoreAlertAsync(string type, Custos.Alerts.AlertSeverity severity, string fingerprint, string summary)
        => Gateway.Store.CreateAlertAsync(new Custos.Alerts.Alert
        {
            Signal = new Custos.Alerts.AlertSignal
            {
                Type = type,
                Severity = severity,
                Fingerprint = fingerprint,
                Subject = "consumer:web",
                Summary = summary,
                At = DateTimeOffset.UtcNow,
                Tenant = "acme",
                Service = "support",
                Consumer = "web",
            },
            RaisedAt = DateTimeOffset.UtcNow,
            LastSeenAt = DateTimeOffset.UtcNow,
        });

    /// <summary>All ledger request entries, after every queued record is stored.</summary>
    public async Task<List<JsonElement>> LedgerAsync(LedgerQuery? query = null)
    {
        await Gateway.Ledger.FlushAsync();
        var result = new List<JsonElement>();
        await foreach (var row in Gateway.Store.QueryAsync(query ?? new LedgerQuery { Limit = 100_000 }))
        {
            result.Add(JsonDocument.Parse(row.Json).RootElement.Clone());
        }

        return result;
    }

    /// <summary>
    /// The one ledger entry of <paramref name="requestId"/>; fails unless there is exactly one. A client can have
    /// its whole response before the gateway has queued the record, so this waits for the writer's progress.
    /// </summary>
    public async Task<JsonElement> EntryAsync(string requestId)
    {
        for (var attempt = 0; attempt < 50; attempt++)
        {
            var persisted = Gateway.Ledger.Persisted;
            var entries = await LedgerAsync(new LedgerQuery { RequestId = requestId });
            if (entries.Count > 0)
            {
                return Assert.Single(entries);
            }

            await Gateway.Ledger.WaitForPersistedAsync(persisted + 1).WaitAsync(TimeSpan.FromSeconds(10));
        }

        throw new Xunit.Sdk.XunitException($"no ledger entry for {requestId}");
    }

    /// <summary>Runs <paramref name="act"/> (one request) and returns the ledger entry it produced.</summary>
    public async Task<JsonElement> NextEntryAsync(Func<Task> act)
    {
        await Gateway.Ledger.FlushAsync();
        var before = Gateway.Ledger.Persisted;
        await act();
        await Gateway.Ledger.WaitForPersistedAsync(before + 1).WaitAsync(TimeSpan.FromSeconds(10));
        var entries = await LedgerAsync();
        return entries[^1];
    }

    /// <summary>Waits until <paramref name="count"/> records (admin records included) are stored.</summary>
    public Task WaitForRecordsAsync(long count) => Gateway.Ledger.WaitForPersistedAsync(count).WaitAsync(TimeSpan.FromSeconds(30));

    public static string RequestIdOf(HttpResponseMessage response) => Assert.Single(response.Headers.GetValues("x-request-id"));

    public async ValueTask DisposeAsync()
    {
        Client?.Dispose();
        if (Gateway is not null)
        {
            await Gateway.DisposeAsync();
        }

        await Upstream.DisposeAsync();
        SqliteConnection.ClearAllPools();
        try
        {
            Directory.Delete(DataDirectory, recursive: true);
        }
        catch (IOException)
        {
            // Best effort: the OS cleans temp eventually.
        }
    }
}

/// <summary>Keeps every formatted log line, to prove secrets never reach the logs.</summary>
public sealed class CapturingLoggerProvider : ILoggerProvider
{
    private readonly ConcurrentQueue<string> _lines = new();

    public IReadOnlyCollection<string> Lines => _lines;

    public ILogger CreateLogger(string categoryName) => new Logger(categoryName, _lines);

    public void Dispose()
    {
    }

    private sealed class Logger(string category, ConcurrentQueue<string> lines) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            => lines.Enqueue($"{logLevel} {category}[{eventId.Id}] {formatter(state, exception)} {exception}");
    }
}
