using System.Text.Json;
using System.Text.Json.Serialization;
using Custos.Identity;
using Custos.Policy;

namespace Custos.Gateway.Hosting;

/// <summary>One seeded consumer of the demo, with its key, as written to <c>demo-keys.json</c>.</summary>
public sealed record DemoConsumerKey(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("tenant")] string Tenant,
    [property: JsonPropertyName("service")] string Service,
    [property: JsonPropertyName("category")] string Category,
    [property: JsonPropertyName("key")] string Key);

/// <summary>One seeded administrator of the demo.</summary>
public sealed record DemoAdminKey(
    [property: JsonPropertyName("role")] string Role,
    [property: JsonPropertyName("key")] string Key);

/// <summary>The contents of <c>demo-keys.json</c>, a contract that scripts rely on.</summary>
public sealed record DemoKeys(
    [property: JsonPropertyName("data_plane")] string DataPlane,
    [property: JsonPropertyName("admin")] string Admin,
    [property: JsonPropertyName("consumers")] IReadOnlyList<DemoConsumerKey> Consumers,
    [property: JsonPropertyName("admins")] IReadOnlyList<DemoAdminKey> Admins)
{
    /// <summary>The file name in the data folder.</summary>
    public const string FileName = "demo-keys.json";

    private static readonly JsonSerializerOptions Options = new() { WriteIndented = true };

    /// <summary>Reads the keys of an earlier demo run, or null.</summary>
    public static DemoKeys? TryLoad(string dataDirectory)
    {
        var path = Path.Combine(dataDirectory, FileName);
        if (!File.Exists(path))
        {
            return null;
        }

        try
        {
            return JsonSerializer.Deserialize<DemoKeys>(File.ReadAllText(path));
        }
        catch (JsonException)
        {
            return null;
        }
    }

    /// <summary>Writes the file, readable by the owner only where the platform allows.</summary>
    public void Save(string dataDirectory)
    {
        var path = Path.Combine(dataDirectory, FileName);
        File.WriteAllText(path, JsonSerializer.Serialize(this, Options));
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
    }
}

/// <summary>
/// The seeded policy of <c>custos demo</c>: two tenants, services with every owner named, one consumer of each
/// category, an agent service with its operator and sponsor, and every provider pointing at the demo upstream.
/// </summary>
public static class DemoPolicy
{
    private static readonly (string Name, string Tenant, string Service, ConsumerCategory Category, string[] Models)[] Consumers =
    [
        ("support-web", "acme", "support-assistant", ConsumerCategory.External, ["gpt-4o-mini", "claude-sonnet"]),
        ("data-team", "acme", "analytics", ConsumerCategory.Internal, ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "claude-sonnet"]),
        ("nightly-digest", "acme", "digest-jobs", ConsumerCategory.Automation, ["gpt-4o-mini", "text-embedding-3-small"]),
        ("research-agent", "acme", "research-agents", ConsumerCategory.Agent, ["gpt-4o", "claude-sonnet"]),
        ("globex-dev", "globex", "globex-copilot", ConsumerCategory.Internal, ["gpt-4o-mini", "claude-sonnet"]),
    ];

    /// <summary>Keys for every seeded consumer and admin role: reused from <paramref name="previous"/> where it has them.</summary>
    public static DemoKeys CreateKeys(Uri dataPlane, Uri admin, DemoKeys? previous)
    {
        var consumers = Consumers.Select(c => new DemoConsumerKey(c.Name, c.Tenant, c.Service, PolicyNames.Of(c.Category),
            previous?.Consumers.FirstOrDefault(p => p.Name == c.Name)?.Key ?? ApiKey.Generate(ApiKeyKind.Consumer))).ToArray();
        // Roles as docs/../ARCHITECTURE.md names them and scripts select them (platform-admin), though the policy spells them
        // platform_admin: a file written in that spelling keeps its keys.
        var admins = Enum.GetValues<AdminRole>().Select(r => PolicyNames.Of(r).Replace('_', '-')).Select(role =>
            new DemoAdminKey(role, previous?.Admins.FirstOrDefault(p => p.Role.Replace('_', '-') == role)?.Key ?? ApiKey.Generate(ApiKeyKind.Admin))).ToArray();
        return new DemoKeys(dataPlane.ToString().TrimEnd('/'), admin.ToString().TrimEnd('/'), consumers, admins);
    }

    /// <summary>The demo policy, with every provider at <paramref name="upstream"/> and the keys of <paramref name="keys"/>.</summary>
    public static PolicyDocument Create(Uri upstream, DemoKeys keys)
    {
        var root = upstream.ToString().TrimEnd('/');
        TenantConfig Tenant(string id, string name, string timeZone) => new()
        {
            Id = id,
            Name = name,
            TimeZone = timeZone,
            Providers =
            [
                new ProviderConfig { Id = "demo-openai", Kind = ProviderKind.OpenAI, BaseUrl = new Uri(root + "/v1") },
                new ProviderConfig { Id = "demo-anthropic", Kind = ProviderKind.Anthropic, BaseUrl = new Uri(root) },
            ],
            Models =
            [
                new ModelConfig { Name = "gpt-4o-mini", Provider = "demo-openai", Aliases = ["fast"], InputPerMillion = 0.15m, OutputPerMillion = 0.60m },
                new ModelConfig { Name = "gpt-4o", Provider = "demo-openai", InputPerMillion = 2.50m, OutputPerMillion = 10m },
                new ModelConfig { Name = "text-embedding-3-small", Provider = "demo-openai", Kind = ModelKind.Embedding, InputPerMillion = 0.02m },
                new ModelConfig
                {
                    Name = "claude-sonnet", Provider = "demo-anthropic", UpstreamModel = "claude-sonnet-4-5",
                    InputPerMillion = 3m, OutputPerMillion = 15m,
                },
            ],
        };

        static OwnerConfig Owner(string name, string email) => new() { Name = name, Email = email };
        ServiceConfig Service(string id, string tenant, string description, string team, bool agents = false) => new()
        {
            Id = id,
            Tenant = tenant,
            Description = description,
            Owners = new ServiceOwners
            {
                // The policy owner approves access requests through the demo's service-owner admin.
                Policy = Owner($"{team} product lead", $"{id}-policy@{tenant}.example") with { Admin = "demo-service-owner" },
                Billing = Owner($"{team} finance partner", $"{id}-billing@{tenant}.example"),
                Technical = Owner($"{team} platform on-call", $"{id}-oncall@{tenant}.example"),
                AgentOperator = agents ? Owner("Agent operations", $"{id}-agentops@{tenant}.example") : null,
                BusinessSponsor = agents ? Owner("VP Research", $"{id}-sponsor@{tenant}.example") : null,
            },
        };

        var support = Service("support-assistant", "acme", "Customer-facing support chat", "Support") with
        {
            Limits = new LimitsConfig { Budget = new BudgetConfig { Amount = 100m, Period = BudgetPeriod.Month } },
            PromptRules =
            [
                new PromptRuleConfig { Id = "card-numbers", Detector = PromptDetector.PaymentCard, Action = PromptAction.Redact },
                new PromptRuleConfig { Id = "no-secrets", Detector = PromptDetector.Secrets, Action = PromptAction.Deny },
            ],
        };
        return new PolicyDocument
        {
            Defaults = new CategoryDefaultsSet
            {
                External = new CategoryDefaults { Limits = new LimitsConfig { RequestsPerMinute = 60, TokensPerMinute = 100_000, MaxOutputTokens = 1024, MaxN = 1 } },
                Internal = new CategoryDefaults { Limits = new LimitsConfig { RequestsPerMinute = 600 } },
                Automation = new CategoryDefaults { Limits = new LimitsConfig { RequestsPerDay = 10_000, TokensPerDay = 5_000_000 } },
                Agent = new CategoryDefaults
                {
                    Limits = new LimitsConfig { RequestsPerMinute = 30, MaxOutputTokens = 2048, Budget = new BudgetConfig { Amount = 5m, Period = BudgetPeriod.Day } },
                },
            },
            Alerts = new AlertsConfig { Security = new OwnerConfig { Name = "Security operations", Email = "secops@acme.example" } },
            Tenants = [Tenant("acme", "Acme Corp (demo)", "Europe/Berlin"), Tenant("globex", "Globex (demo)", "America/New_York")],
            Services =
            [
                support,
                Service("analytics", "acme", "Internal analytics team", "Analytics"),
                Service("digest-jobs", "acme", "Nightly summarisation jobs", "Data platform"),
                Service("research-agents", "acme", "Autonomous research agents", "Research", agents: true),
                Service("globex-copilot", "globex", "Globex developer copilot", "Developer experience"),
            ],
            Consumers =
            [
                .. Consumers.Select(c => c.Name == "support-web"
                    ? new ConsumerConfig
                    {
                        Id = c.Name,
                        Service = c.Service,
                        Category = c.Category,
                        Entitlements =
                        [
                            new EntitlementConfig { Models = c.Models, ApprovedBy = "support-assistant-policy@acme.example", Ticket = "DEMO-101" },
                        ],
                    }
                    : new ConsumerConfig { Id = c.Name, Service = c.Service, Category = c.Category, Models = c.Models }),
            ],
            Credentials =
            [
                .. keys.Consumers.Select(k => new CredentialConfig
                {
                    Id = "cred-" + k.Name,
                    Consumer = k.Name,
                    KeySha256 = KeyHash.Of(k.Key).ToHex(),
                    Prefix = k.Key[..12],
                }),
            ],
            Admins =
            [
                .. keys.Admins.Select(a => new AdminConfig
                {
                    Id = "demo-" + a.Role.Replace('_', '-'),
                    Role = Enum.Parse<AdminRole>(a.Role.Replace("-", "", StringComparison.Ordinal).Replace("_", "", StringComparison.Ordinal), ignoreCase: true),
                    KeySha256 = KeyHash.Of(a.Key).ToHex(),
                }),
            ],
        };
    }
}
