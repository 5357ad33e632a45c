using System.Collections.Frozen;
using Custos.Identity;

namespace Custos.Policy;

/// <summary>
/// A policy version compiled for the hot path: immutable, read without locks, swapped atomically
/// when a new version is applied. Every decision names <see cref="Version"/> and <see cref="Hash"/>.
/// </summary>
public sealed class PolicySnapshot
{
    private readonly FrozenDictionary<KeyHash, CredentialEntry> _credentials;

    private PolicySnapshot(PolicyVersion version, FrozenDictionary<KeyHash, CredentialEntry> credentials, IReadOnlyList<TenantEntry> tenants)
    {
        Info = version;
        _credentials = credentials;
        Tenants = tenants;
    }

    /// <summary>The version this snapshot was compiled from.</summary>
    public PolicyVersion Info { get; }

    /// <summary>The version number.</summary>
    public long Version => Info.Number;

    /// <summary>SHA-256 of the canonical form, lower-case hex.</summary>
    public string Hash => Info.Sha256;

    /// <summary>The document.</summary>
    public PolicyDocument Document => Info.Document;

    /// <summary>Gateway settings of this version.</summary>
    public GatewaySettings Gateway => Info.Document.Gateway;

    /// <summary>The compiled tenants.</summary>
    public IReadOnlyList<TenantEntry> Tenants { get; }

    /// <summary>Finds the credential whose key hashes to <paramref name="hash"/>.</summary>
    public bool TryGetCredential(in KeyHash hash, out CredentialEntry credential)
        => _credentials.TryGetValue(hash, out credential!);

    /// <summary>Compiles a validated version. Upstream secrets are read through <paramref name="secrets"/>.</summary>
    public static PolicySnapshot Compile(PolicyVersion version, Func<string, string?> secrets)
    {
        var document = version.Document;
        var tenants = new Dictionary<string, TenantEntry>(StringComparer.Ordinal);
        foreach (var tenant in document.Tenants)
        {
            var providers = tenant.Providers.ToDictionary(
                p => p.Id,
                p => new ProviderEntry(p.Id, p.Kind, p.BaseUrl, p.ApiKeyEnv, p.ApiKeyEnv is null ? null : secrets(p.ApiKeyEnv)),
                StringComparer.Ordinal);
            var models = new Dictionary<string, ModelRoute>(StringComparer.Ordinal);
            var canonical = new List<ModelRoute>();
            foreach (var model in tenant.Models)
            {
                var route = new ModelRoute(model.Name, model.UpstreamModel ?? model.Name, providers[model.Provider], model.Kind,
                    model.InputPerMillion, model.OutputPerMillion, model.Currency);
                canonical.Add(route);
                foreach (var name in model.Aliases.Prepend(model.Name))
                {
                    models[name] = route;
                }
            }

            var timeZone = TimeZoneInfo.FindSystemTimeZoneById(tenant.TimeZone);
            tenants[tenant.Id] = new TenantEntry(tenant.Id, tenant.Name ?? tenant.Id, timeZone, models.ToFrozenDictionary(StringComparer.Ordinal), canonical);
        }

        var services = document.Services.ToDictionary(
            s => s.Id, s => new ServiceEntry(s.Id, tenants[s.Tenant], s.Owners), StringComparer.Ordinal);
        var consumers = document.Consumers.ToDictionary(c => c.Id, c =>
        {
            var service = services[c.Service];
            var entitled = c.Models.Select(m => service.Tenant.Models[m]).Distinct().ToArray();
            return new ConsumerEntry(c.Id, c.Category, service, entitled.ToFrozenSet(), entitled);
        }, StringComparer.Ordinal);

        var credentials = document.Credentials.ToFrozenDictionary(
            c => KeyHash.FromHex(c.KeySha256),
            c => new CredentialEntry(c.Id, consumers[c.Consumer], c.Status, c.ExpiresAt));
        return new PolicySnapshot(version, credentials, [.. tenants.Values]);
    }
}

/// <summary>A compiled tenant.</summary>
public sealed record TenantEntry(string Id, string Name, TimeZoneInfo TimeZone, FrozenDictionary<string, ModelRoute> Models, IReadOnlyList<ModelRoute> CanonicalModels);

/// <summary>A provider with its resolved upstream secret. The secret never leaves the gateway.</summary>
public sealed record ProviderEntry(string Id, ProviderKind Kind, Uri BaseUrl, string? ApiKeyEnv, string? ApiKey)
{
    /// <summary>True when the provider needs a key and its environment variable was not set.</summary>
    public bool IsMissingKey => ApiKeyEnv is not null && string.IsNullOrEmpty(ApiKey);

    /// <inheritdoc/>
    public override string ToString() => $"{Id} ({Kind}, {BaseUrl})";
}

/// <summary>Where a model name leads: provider, upstream name and price. Compared by reference.</summary>
public sealed class ModelRoute(string name, string upstreamModel, ProviderEntry provider, ModelKind kind,
    decimal inputPerMillion, decimal outputPerMillion, string currency)
{
    /// <summary>The canonical name.</summary>
    public string Name { get; } = name;

    /// <summary>The name sent upstream.</summary>
    public string UpstreamModel { get; } = upstreamModel;

    /// <summary>The provider serving it.</summary>
    public ProviderEntry Provider { get; } = provider;

    /// <summary>Chat or embedding.</summary>
    public ModelKind Kind { get; } = kind;

    /// <summary>Price per million input tokens.</summary>
    public decimal InputPerMillion { get; } = inputPerMillion;

    /// <summary>Price per million output tokens.</summary>
    public decimal OutputPerMillion { get; } = outputPerMillion;

    /// <summary>ISO currency.</summary>
    public string Currency { get; } = currency;

    /// <summary>Cost of the given token counts at this model's prices.</summary>
    public decimal Cost(long inputTokens, long outputTokens)
        => ((inputTokens * InputPerMillion) + (outputTokens * OutputPerMillion)) / 1_000_000m;
}

/// <summary>A compiled service.</summary>
public sealed record ServiceEntry(string Id, TenantEntry Tenant, ServiceOwners Owners);

/// <summary>A compiled consumer with its entitled models.</summary>
public sealed record ConsumerEntry(string Id, ConsumerCategory Category, ServiceEntry Service,
    FrozenSet<ModelRoute> EntitledRoutes, IReadOnlyList<ModelRoute> EntitledModels)
{
    /// <summary>The ledger spelling of <see cref="Category"/>.</summary>
    public string CategoryName { get; } = PolicyNames.Of(Category);

    /// <summary>True when the consumer may use <paramref name="route"/>.</summary>
    public bool IsEntitledTo(ModelRoute route) => EntitledRoutes.Contains(route);
}

/// <summary>A compiled credential.</summary>
public sealed record CredentialEntry(string Id, ConsumerEntry Consumer, CredentialStatus Status, DateTimeOffset? ExpiresAt);
