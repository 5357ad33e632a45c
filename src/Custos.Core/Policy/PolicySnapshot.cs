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
    private readonly FrozenDictionary<string, CredentialEntry> _credentialsById;
    private readonly FrozenDictionary<(string Issuer, string Subject), CredentialEntry> _workloads;
    private readonly FrozenDictionary<KeyHash, AdminConfig> _admins;
    private readonly FrozenDictionary<(string Issuer, string Subject), AdminConfig> _oidcAdmins;

    private PolicySnapshot(PolicyVersion version, IReadOnlyList<CredentialEntry> credentials, IReadOnlyList<TenantEntry> tenants,
        FrozenDictionary<string, ConsumerEntry> consumers, IReadOnlyDictionary<string, ServiceEntry> services)
    {
        Info = version;
        _credentials = credentials.Where(c => c.KeyHash is not null).ToFrozenDictionary(c => c.KeyHash!.Value);
        _workloads = credentials.Where(c => c.Issuer is not null).ToFrozenDictionary(c => (c.Issuer!, c.Subject!));
        _credentialsById = credentials.ToFrozenDictionary(c => c.Id, StringComparer.Ordinal);
        Tenants = tenants;
        Consumers = consumers;
        Services = services.ToFrozenDictionary(StringComparer.Ordinal);
        var admins = version.Document.Admins;
        _admins = admins.Where(a => a.KeySha256 is not null).ToFrozenDictionary(a => KeyHash.FromHex(a.KeySha256!));
        _oidcAdmins = admins.Where(a => a.Issuer is not null && a.Subject is not null).ToFrozenDictionary(a => (a.Issuer!, a.Subject!));
        IdentityProviders = version.Document.IdentityProviders ?? [];
    }

    /// <summary>Finds the admin identity whose key hashes to <paramref name="hash"/>.</summary>
    public bool TryGetAdmin(in KeyHash hash, out AdminConfig admin) => _admins.TryGetValue(hash, out admin!);

    /// <summary>Finds the admin identity that signs in with OIDC tokens of <paramref name="issuerId"/> for <paramref name="subject"/>.</summary>
    public bool TryGetAdmin(string issuerId, string subject, out AdminConfig admin) => _oidcAdmins.TryGetValue((issuerId, subject), out admin!);

    /// <summary>Finds the workload-identity credential bound to <paramref name="subject"/> of identity provider <paramref name="issuerId"/>.</summary>
    public bool TryGetWorkload(string issuerId, string subject, out CredentialEntry credential) => _workloads.TryGetValue((issuerId, subject), out credential!);

    /// <summary>The OIDC issuers trusted for JWT bearer tokens.</summary>
    public IReadOnlyList<IdentityProviderConfig> IdentityProviders { get; }

    /// <summary>Services by id.</summary>
    public FrozenDictionary<string, ServiceEntry> Services { get; }

    /// <summary>Consumers by id.</summary>
    public FrozenDictionary<string, ConsumerEntry> Consumers { get; }

    /// <summary>Finds a credential by its id (for replays and audits; requests authenticate by hash).</summary>
    public bool TryGetCredentialById(string id, out CredentialEntry credential) => _credentialsById.TryGetValue(id, out credential!);

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
                    model.InputPerMillion, model.OutputPerMillion, model.Currency, model.CachedInputPerMillion, model.CacheWriteInputPerMillion);
                canonical.Add(route);
                foreach (var name in model.Aliases.Prepend(model.Name))
                {
                    models[name] = route;
                }
            }

            var timeZone = TimeZoneInfo.FindSystemTimeZoneById(tenant.TimeZone);
            tenants[tenant.Id] = new TenantEntry(tenant.Id, tenant.Name ?? tenant.Id, timeZone, models.ToFrozenDictionary(StringComparer.Ordinal), canonical)
            {
                Suspended = tenant.Suspended == true,
                FailModes = document.Gateway.FailModes ?? TenantEntry.DefaultFailModes,
                Limits = tenant.Limits,
                PromptRules = [.. tenant.PromptRules.Select(r => Controls.PromptRule.Compile(r, "tenant", document.Gateway.PromptRegexTimeout))],
            };
        }

        var services = document.Services.ToDictionary(s => s.Id, s =>
        {
            var tenant = tenants[s.Tenant];
            Controls.PromptRule[] own = [.. s.PromptRules.Select(r => Controls.PromptRule.Compile(r, "service", document.Gateway.PromptRegexTimeout))];
            var ungoverned = document.Gateway.RequireOwners == RequireOwners.Block && Governance.Gaps(document, s).Count > 0;
            return new ServiceEntry(s.Id, tenant, s.Owners)
            {
                Limits = s.Limits,
                PromptRules = own,
                AllPromptRules = [.. tenant.PromptRules, .. own],
                Models = s.Models is null ? null : Routes(tenant, s.Models),
                Refusal = tenant.Suspended ? Errors.Reasons.TenantSuspended
                    : s.Suspended == true ? Errors.Reasons.ServiceSuspended
                    : ungoverned ? Errors.Reasons.ServiceUngoverned
                    : null,
            };
        }, StringComparer.Ordinal);
        var consumers = document.Consumers.ToDictionary(c => c.Id, c =>
        {
            var service = services[c.Service];
            var defaults = document.Defaults.For(c.Category);
            var entitlements = new List<Entitlement>();
            if (c.Models.Count > 0)
            {
                entitlements.Add(new Entitlement(Routes(service.Tenant, c.Models), null, null, null, null, "policy"));
            }

            entitlements.AddRange(c.Entitlements.Select(e => new Entitlement(Routes(service.Tenant, e.Models), e.ApprovedBy, e.Ticket, e.ValidFrom, e.ValidUntil, "policy")));
            if (entitlements.Count == 0 && defaults?.Models is { } inherited)
            {
                var offered = inherited.Where(service.Tenant.Models.ContainsKey).ToArray();
                entitlements.Add(new Entitlement(Routes(service.Tenant, offered), null, null, null, null, "category_default"));
            }

            var own = (defaults?.Limits ?? LimitsConfig.Empty).Narrow(c.Limits);
            var limits = own.WithCeilingsOf(service.Limits).WithCeilingsOf(service.Tenant.Limits);

            // Which level's ceiling is in force, for the ledger's control: null for the consumer's own (or its category's).
            string? CeilingScope(Func<LimitsConfig, long?> field)
                => field(limits) is not { } v || field(own) == v ? null : field(service.Limits) == v ? service.Scope : service.Tenant.Scope;
            var excluded = FrozenSet<ModelRoute>.Empty;
            if (service.Models is { } allowed)
            {
                // The service's model choice bounds every entitlement of its consumers; what it takes away is kept, so a
                // refusal says the service's choice excluded the model, not that no one approved it.
                excluded = entitlements.SelectMany(e => e.Models).Where(m => !allowed.Contains(m)).ToFrozenSet();
                entitlements = [.. entitlements.Select(e => e with { Models = e.Models.Where(allowed.Contains).ToFrozenSet() })];
            }

            var entitled = entitlements.SelectMany(e => e.Models).Distinct().ToArray();
            static bool Counts(LimitsConfig l) => l.TokensPerMinute is not null || l.TokensPerDay is not null || l.TokensPerMonth is not null || l.Budget is not null;
            return new ConsumerEntry(c.Id, c.Category, service, entitled)
            {
                Entitlements = entitlements,
                ExcludedByService = excluded,
                Limits = limits,
                CeilingScopes = (CeilingScope(l => l.MaxN), CeilingScope(l => l.MaxInputTokens), CeilingScope(l => l.MaxOutputTokens)),
                CountsInput = limits.MaxInputTokens is not null || Counts(limits) || Counts(service.Limits) || Counts(service.Tenant.Limits),
                Refusal = service.Refusal ?? (c.Suspended == true ? Errors.Reasons.ConsumerSuspended : null),
            };
        }, StringComparer.Ordinal);

        var credentials = document.Credentials.Select(c => new CredentialEntry(c.Id, consumers[c.Consumer], c.Status, c.ExpiresAt)
        {
            KeyHash = c.KeySha256 is null ? null : KeyHash.FromHex(c.KeySha256),
            Issuer = c.Issuer,
            Subject = c.Subject,
        }).ToArray();
        return new PolicySnapshot(version, credentials, [.. tenants.Values], consumers.ToFrozenDictionary(StringComparer.Ordinal), services);
    }

    private static FrozenSet<ModelRoute> Routes(TenantEntry tenant, IEnumerable<string> names)
        => names.Select(n => tenant.Models[n]).ToFrozenSet();
}

/// <summary>One compiled entitlement: the routes it opens, who approved them, and when it is valid.</summary>
/// <param name="Models">The routes it opens.</param>
/// <param name="ApprovedBy">Who approved it, if named.</param>
/// <param name="Ticket">The approval's reference, if any.</param>
/// <param name="ValidFrom">Start of validity, inclusive.</param>
/// <param name="ValidUntil">End of validity, exclusive.</param>
/// <param name="Source"><c>policy</c> when the consumer declares it, <c>category_default</c> when inherited.</param>
public sealed record Entitlement(FrozenSet<ModelRoute> Models, string? ApprovedBy, string? Ticket, DateTimeOffset? ValidFrom,
    DateTimeOffset? ValidUntil, string Source)
{
    /// <summary>What the entitlement control records about it: who approved it, and the ticket.</summary>
    public string Detail { get; } = (ApprovedBy is null ? (Source == "category_default" ? "category default" : "policy (no approver named)") : "approved by " + ApprovedBy)
        + (Ticket is null ? "" : " (" + Ticket + ")");

    /// <summary>True when valid at <paramref name="now"/>.</summary>
    public bool IsValidAt(DateTimeOffset now) => (ValidFrom is null || ValidFrom <= now) && (ValidUntil is null || now < ValidUntil);
}

/// <summary>A compiled tenant.</summary>
public sealed record TenantEntry(string Id, string Name, TimeZoneInfo TimeZone, FrozenDictionary<string, ModelRoute> Models, IReadOnlyList<ModelRoute> CanonicalModels)
{
    /// <summary>Limits over the tenant's traffic.</summary>
    public LimitsConfig Limits { get; init; } = LimitsConfig.Empty;

    /// <summary>The tenant's prompt rules.</summary>
    public IReadOnlyList<Controls.PromptRule> PromptRules { get; init; } = [];

    /// <summary>Kill switch engaged: every request of the tenant is refused.</summary>
    public bool Suspended { get; init; }

    /// <summary>What the tenant's controls do when a shared engine is unreachable (the gateway's declared fail modes).</summary>
    public FailModes FailModes { get; init; } = DefaultFailModes;

    /// <summary>The fail modes when the policy declares none.</summary>
    public static FailModes DefaultFailModes { get; } = new();

    /// <summary>Counter keys of the tenant scope.</summary>
    public Controls.CounterKeys CounterKeys { get; } = new(Id + "|tenant|" + Id + "|");

    /// <summary>The tenant's current counting windows, in its time zone.</summary>
    public Controls.WindowClock Clock { get; } = new(TimeZone);

    /// <summary>The tenant's scope as the ledger names it: <c>tenant:ID</c>.</summary>
    public string Scope { get; } = "tenant:" + Id;

    /// <summary>What the tenant-isolation control records for every request of the tenant: one instance, not one a request.</summary>
    public Controls.ControlResult IsolationPass { get; } = new("tenant_isolation", "tenant:" + Id, Controls.ControlDecisions.Pass)
    {
        Detail = "model resolved among tenant " + Id + " only",
    };
}

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
    decimal inputPerMillion, decimal outputPerMillion, string currency, decimal? cachedInputPerMillion = null, decimal? cacheWriteInputPerMillion = null)
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

    /// <summary>Price per million input tokens read from the prompt cache: the input price unless the policy names one.</summary>
    public decimal CachedInputPerMillion { get; } = cachedInputPerMillion ?? inputPerMillion;

    /// <summary>Price per million input tokens written to the prompt cache: the input price unless the policy names one.</summary>
    public decimal CacheWriteInputPerMillion { get; } = cacheWriteInputPerMillion ?? inputPerMillion;

    /// <summary>
    /// The highest of the input prices: what a request's input is reserved at, since the provider decides after the
    /// reservation how much of it is read from or written to its prompt cache (a cache write is often dearer than input).
    /// </summary>
    public decimal HighestInputPerMillion { get; } = Math.Max(inputPerMillion, Math.Max(cachedInputPerMillion ?? inputPerMillion, cacheWriteInputPerMillion ?? inputPerMillion));

    /// <summary>Cost of the given token counts at this model's prices.</summary>
    public decimal Cost(long inputTokens, long outputTokens) => Cost(inputTokens, outputTokens, 0, 0);

    /// <summary>
    /// The most the given token counts can cost whatever the prompt cache does: input at <see cref="HighestInputPerMillion"/>.
    /// A budget's reservation, so that what a request settles at is never above what it reserved for the tokens counted.
    /// </summary>
    public decimal MostCost(long inputTokens, long outputTokens) => ((inputTokens * HighestInputPerMillion) + (outputTokens * OutputPerMillion)) / 1_000_000m;

    /// <summary>
    /// Cost of the given token counts, <paramref name="cachedInputTokens"/> and <paramref name="cacheWriteInputTokens"/>
    /// being part of <paramref name="inputTokens"/> and priced at the cache's prices (never more of them than of input).
    /// </summary>
    public decimal Cost(long inputTokens, long outputTokens, long cachedInputTokens, long cacheWriteInputTokens)
    {
        var cached = Math.Clamp(cachedInputTokens, 0, inputTokens);
        var written = Math.Clamp(cacheWriteInputTokens, 0, inputTokens - cached);
        return (((inputTokens - cached - written) * InputPerMillion) + (cached * CachedInputPerMillion) + (written * CacheWriteInputPerMillion)
                + (outputTokens * OutputPerMillion)) / 1_000_000m;
    }
}

/// <summary>A compiled service.</summary>
public sealed record ServiceEntry(string Id, TenantEntry Tenant, ServiceOwners Owners)
{
    /// <summary>Limits over all of the service's consumers together.</summary>
    public LimitsConfig Limits { get; init; } = LimitsConfig.Empty;

    /// <summary>The service's own prompt rules.</summary>
    public IReadOnlyList<Controls.PromptRule> PromptRules { get; init; } = [];

    /// <summary>The tenant's prompt rules, then the service's: every rule a request of the service meets.</summary>
    public Controls.PromptRule[] AllPromptRules { get; init; } = [];

    /// <summary>The service's model choice, or null for every model of its tenant.</summary>
    public FrozenSet<ModelRoute>? Models { get; init; }

    /// <summary>Why every request of the service is refused (a kill switch, missing governance), or null when it serves.</summary>
    public Errors.ReasonCode? Refusal { get; init; }

    /// <summary>Counter keys of the service scope.</summary>
    public Controls.CounterKeys CounterKeys { get; } = new(Tenant.Id + "|service|" + Id + "|");

    /// <summary>The service's scope as the ledger names it: <c>service:ID</c>.</summary>
    public string Scope { get; } = "service:" + Id;
}

/// <summary>A compiled consumer with its entitled models.</summary>
public sealed record ConsumerEntry(string Id, ConsumerCategory Category, ServiceEntry Service, IReadOnlyList<ModelRoute> EntitledModels)
{
    /// <summary>The ledger spelling of <see cref="Category"/>.</summary>
    public string CategoryName { get; } = PolicyNames.Of(Category);

    /// <summary>The consumer's entitlements, its own or inherited from its category.</summary>
    public IReadOnlyList<Entitlement> Entitlements { get; init; } = [];

    /// <summary>
    /// The models the consumer's entitlements name that the service's model choice (<see cref="ServiceEntry.Models"/>)
    /// excludes: not in <see cref="Entitlements"/>, so refused, but because of the service, not for want of an approval.
    /// </summary>
    public FrozenSet<ModelRoute> ExcludedByService { get; init; } = FrozenSet<ModelRoute>.Empty;

    /// <summary>
    /// Effective limits: the category's defaults narrowed by the consumer's own, and the token ceilings by its service's
    /// and tenant's where those are tighter.
    /// </summary>
    public LimitsConfig Limits { get; init; } = LimitsConfig.Empty;

    /// <summary>
    /// The scope whose ceiling of <c>n</c>, input and output is in <see cref="Limits"/> when it is the service's or the
    /// tenant's (<c>service:ID</c>, <c>tenant:ID</c>); null when it is the consumer's own or its category's.
    /// </summary>
    public (string? N, string? Input, string? Output) CeilingScopes { get; init; }

    /// <summary>True when a control needs the prompt's token count before forwarding (input ceiling, token limits, budgets).</summary>
    public bool CountsInput { get; init; }

    /// <summary>Why every request of the consumer is refused (a kill switch at its level or above, missing governance), or null.</summary>
    public Errors.ReasonCode? Refusal { get; init; }

    /// <summary>Counter keys of the consumer scope.</summary>
    public Controls.CounterKeys CounterKeys { get; } = new(Service.Tenant.Id + "|consumer|" + Id + "|");

    /// <summary>The consumer's scope as the ledger names it: <c>consumer:ID</c>.</summary>
    public string Scope { get; } = "consumer:" + Id;

    /// <summary>The models the consumer can use at <paramref name="now"/>.</summary>
    public IEnumerable<ModelRoute> ModelsAt(DateTimeOffset now)
        => EntitledModels.Where(m => Entitlements.Any(e => e.Models.Contains(m) && e.IsValidAt(now)));
}

/// <summary>A compiled credential: an API key (by hash) or a workload identity (issuer and subject).</summary>
public sealed record CredentialEntry(string Id, ConsumerEntry Consumer, CredentialStatus Status, DateTimeOffset? ExpiresAt)
{
    /// <summary>The hash of the API key, or null for a workload identity.</summary>
    public KeyHash? KeyHash { get; init; }

    /// <summary>The identity provider of a workload identity.</summary>
    public string? Issuer { get; init; }

    /// <summary>The subject of a workload identity.</summary>
    public string? Subject { get; init; }
}
