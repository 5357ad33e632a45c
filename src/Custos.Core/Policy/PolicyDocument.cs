using System.Text.Json.Serialization;

namespace Custos.Policy;

/// <summary>
/// The whole declarative policy: tenants with their providers and models, services with their owners,
/// consumers with their categories and entitlements, and credentials. Every change to it is a new
/// immutable version; see <see cref="PolicyVersion"/>.
/// </summary>
public sealed record PolicyDocument
{
    /// <summary>Gateway-wide settings. Optional; every setting has a default.</summary>
    public GatewaySettings Gateway { get; init; } = new();

    /// <summary>Per-category defaults: the models and limits consumers inherit and may narrow.</summary>
    public CategoryDefaultsSet Defaults { get; init; } = new();

    /// <summary>Isolation boundaries. Required: at least one.</summary>
    public IReadOnlyList<TenantConfig> Tenants { get; init; } = [];

    /// <summary>AI-using applications, the unit of ownership. Each belongs to one tenant.</summary>
    public IReadOnlyList<ServiceConfig> Services { get; init; } = [];

    /// <summary>Entitled callers. Each belongs to one service.</summary>
    public IReadOnlyList<ConsumerConfig> Consumers { get; init; } = [];

    /// <summary>API keys, stored as SHA-256 hashes only. Each is bound to one consumer.</summary>
    public IReadOnlyList<CredentialConfig> Credentials { get; init; } = [];

    /// <summary>Administrators of the control plane, with their role and scope; keys stored as hashes only.</summary>
    public IReadOnlyList<AdminConfig> Admins { get; init; } = [];

    /// <summary>
    /// OIDC issuers whose JWT bearer tokens the gateway accepts: workload identities of automation jobs and agents
    /// (credentials with <c>issuer</c> and <c>subject</c>), and admin sign-in (admins with <c>issuer</c> and <c>subject</c>).
    /// Null (absent) keeps the canonical form, and so the hash, of policies written before it existed.
    /// </summary>
    public IReadOnlyList<IdentityProviderConfig>? IdentityProviders { get; init; }

    /// <summary>Detection and response settings. Null (absent) runs every detector with its defaults.</summary>
    public AlertsConfig? Alerts { get; init; }
}

/// <summary>An OIDC issuer trusted for JWT bearer tokens, with where its signing keys come from.</summary>
public sealed record IdentityProviderConfig
{
    /// <summary>Required. Unique; credentials and admins name it.</summary>
    public required string Id { get; init; }

    /// <summary>Required. The exact <c>iss</c> claim its tokens carry.</summary>
    public required string Issuer { get; init; }

    /// <summary>Required. The <c>aud</c> claim a token must carry to be accepted here.</summary>
    public required string Audience { get; init; }

    /// <summary>Where its JSON Web Key Set is published. One of this and <see cref="Keys"/> is required.</summary>
    public Uri? JwksUrl { get; init; }

    /// <summary>Static public keys: PEM (<c>-----BEGIN PUBLIC KEY-----</c>) or JWK JSON.</summary>
    public IReadOnlyList<string>? Keys { get; init; }

    /// <summary>The claim that names the workload. Default <c>sub</c>.</summary>
    public string? SubjectClaim { get; init; }
}

/// <summary>Whether a service with missing governance (an owner role unfilled, or one contact for every role) may serve traffic.</summary>
public enum RequireOwners
{
    /// <summary>It serves; validation warns.</summary>
    Warn,

    /// <summary>Its requests are refused with 403 <c>deny.service_ungoverned</c> until its owners are named.</summary>
    Block,
}

/// <summary>The roles of the control plane; each is least privilege for one group of people in the seed.</summary>
public enum AdminRole
{
    /// <summary>Runs the gateway: everything, in every tenant.</summary>
    PlatformAdmin,

    /// <summary>Owns services: consumers, entitlements and credentials of the services in scope.</summary>
    ServiceOwner,

    /// <summary>Prompt restrictions and model choice of the services in scope.</summary>
    PromptAdmin,

    /// <summary>Read-only: ledger, verification, reports.</summary>
    SecurityAuditor,

    /// <summary>Budgets and spend.</summary>
    Finance,
}

/// <summary>An administrator identity with an admin key (<c>cak_…</c>).</summary>
public sealed record AdminConfig
{
    /// <summary>Required. Unique; the actor named in the ledger.</summary>
    public required string Id { get; init; }

    /// <summary>Required. The role.</summary>
    public required AdminRole Role { get; init; }

    /// <summary>Lower-case hex SHA-256 of the admin key. Required unless the admin signs in with OIDC.</summary>
    public string? KeySha256 { get; init; }

    /// <summary>Tenants in scope; empty means all.</summary>
    public IReadOnlyList<string> Tenants { get; init; } = [];

    /// <summary>Services in scope; empty means all services of the tenants in scope.</summary>
    public IReadOnlyList<string> Services { get; init; } = [];

    /// <summary>OIDC sign-in: the id of an identity provider whose tokens, with <see cref="Subject"/>, sign this admin in.</summary>
    public string? Issuer { get; init; }

    /// <summary>OIDC sign-in: the subject (or the provider's subject claim) of this admin's tokens.</summary>
    public string? Subject { get; init; }
}

/// <summary>Settings of the gateway process itself.</summary>
public sealed record GatewaySettings
{
    /// <summary>Largest accepted request body in bytes. Default 4 MiB.</summary>
    public long MaxRequestBodyBytes { get; init; } = 4 * 1024 * 1024;

    /// <summary>How long the gateway waits for an upstream without any activity. Default 120 s.</summary>
    public TimeSpan UpstreamTimeout { get; init; } = TimeSpan.FromSeconds(120);

    /// <summary>How long one prompt-rule regular expression may run on one text; a timeout counts as a match. Default 50 ms.</summary>
    public TimeSpan PromptRegexTimeout { get; init; } = TimeSpan.FromMilliseconds(50);

    /// <summary>
    /// Model requests one node works on at once; beyond it, new ones are shed with 503 <c>unavailable.overloaded</c>
    /// (and recorded), which bounds the memory requests in flight can hold. Default 4096.
    /// </summary>
    public int MaxInFlightRequests { get; init; } = 4096;

    /// <summary>
    /// The admin API's heavy reads (the console's overview, incident packs, the posture report) one node builds at once;
    /// a few more wait their turn, beyond them 429 <c>admin.busy</c>. They read the ledger on the gateway's own cores.
    /// Null means 2.
    /// </summary>
    public int? MaxConcurrentReports { get; init; }

    /// <summary>Whether services with missing governance may serve traffic. Null means <see cref="Policy.RequireOwners.Warn"/>.</summary>
    public RequireOwners? RequireOwners { get; init; }

    /// <summary>What each control does when a shared engine it needs cannot be reached. Null means the defaults of <see cref="Policy.FailModes"/>.</summary>
    public FailModes? FailModes { get; init; }
}

/// <summary>What a control does when the shared engine behind it (Redis, PostgreSQL) cannot be reached.</summary>
public enum FailMode
{
    /// <summary>Refuse the request (503): nothing is served that the control could not check.</summary>
    Closed,

    /// <summary>Serve the request without the control; the ledger records that it was not enforced.</summary>
    Open,

    /// <summary>Rate limits only: count on this node, against its share of the limit (the limit divided by the live nodes).</summary>
    LocalShare,
}

/// <summary>
/// The declared behaviour of each control when a shared engine is unreachable. Every decision taken in a degraded
/// mode says so in the ledger (<c>degraded</c> on the record and on the control). See <c>docs/deploy.md</c>.
/// </summary>
public sealed record FailModes
{
    /// <summary>Rate limits when the shared counters are unreachable. Default <see cref="FailMode.LocalShare"/>.</summary>
    public FailMode RateLimits { get; init; } = FailMode.LocalShare;

    /// <summary>Quotas when the shared counters are unreachable. Default <see cref="FailMode.Closed"/>.</summary>
    public FailMode Quotas { get; init; } = FailMode.Closed;

    /// <summary>Budgets when the shared counters are unreachable. Default <see cref="FailMode.Closed"/>.</summary>
    public FailMode Budgets { get; init; } = FailMode.Closed;

    /// <summary>
    /// Credential, kill-switch and entitlement checks when this node cannot confirm it holds the latest policy version
    /// (neither the change feed nor the store answers, or a newer version is announced but cannot be loaded).
    /// Default <see cref="FailMode.Closed"/>.
    /// </summary>
    public FailMode Revocation { get; init; } = FailMode.Closed;
}

/// <summary>Defaults per consumer category: external customers, internal teams, automation jobs and agents get their own.</summary>
public sealed record CategoryDefaultsSet
{
    /// <summary>Defaults for external consumers.</summary>
    public CategoryDefaults? External { get; init; }

    /// <summary>Defaults for internal consumers.</summary>
    public CategoryDefaults? Internal { get; init; }

    /// <summary>Defaults for automation consumers.</summary>
    public CategoryDefaults? Automation { get; init; }

    /// <summary>Defaults for agent consumers.</summary>
    public CategoryDefaults? Agent { get; init; }

    /// <summary>The defaults of <paramref name="category"/>, or null.</summary>
    public CategoryDefaults? For(ConsumerCategory category) => category switch
    {
        ConsumerCategory.External => External,
        ConsumerCategory.Internal => Internal,
        ConsumerCategory.Automation => Automation,
        _ => Agent,
    };
}

/// <summary>A tenant: business unit or external customer organisation. Nothing crosses it.</summary>
public sealed record TenantConfig
{
    /// <summary>Required. Lower-case identifier, unique.</summary>
    public required string Id { get; init; }

    /// <summary>Display name. Defaults to <see cref="Id"/>.</summary>
    public string? Name { get; init; }

    /// <summary>IANA time zone for calendar periods. Default <c>UTC</c>.</summary>
    public string TimeZone { get; init; } = "UTC";

    /// <summary>The tenant's upstream providers; their secrets belong to the gateway.</summary>
    public IReadOnlyList<ProviderConfig> Providers { get; init; } = [];

    /// <summary>The models this tenant's consumers can be entitled to.</summary>
    public IReadOnlyList<ModelConfig> Models { get; init; } = [];

    /// <summary>Limits over all of the tenant's traffic.</summary>
    public LimitsConfig Limits { get; init; } = LimitsConfig.Empty;

    /// <summary>Prompt restrictions for every request of the tenant.</summary>
    public IReadOnlyList<PromptRuleConfig> PromptRules { get; init; } = [];

    /// <summary>Kill switch: when true, every request of the tenant is refused with <c>deny.tenant_suspended</c>.</summary>
    public bool? Suspended { get; init; }
}

/// <summary>The wire protocol a provider speaks.</summary>
public enum ProviderKind
{
    /// <summary>OpenAI-compatible API: <c>/chat/completions</c>, <c>/completions</c>, <c>/embeddings</c>.</summary>
    [JsonStringEnumMemberName("openai")]
    OpenAI,

    /// <summary>Anthropic Messages API: <c>/v1/messages</c>.</summary>
    Anthropic,
}

/// <summary>An upstream model provider of one tenant.</summary>
public sealed record ProviderConfig
{
    /// <summary>Required. Unique within the tenant.</summary>
    public required string Id { get; init; }

    /// <summary>Required. <c>openai</c> or <c>anthropic</c>.</summary>
    public required ProviderKind Kind { get; init; }

    /// <summary>
    /// Required. Base URL the API paths are appended to, for example <c>https://api.openai.com/v1</c>
    /// or <c>https://api.anthropic.com</c>.
    /// </summary>
    public required Uri BaseUrl { get; init; }

    /// <summary>Name of the environment variable holding the upstream API key. Optional for keyless upstreams.</summary>
    public string? ApiKeyEnv { get; init; }
}

/// <summary>Which API a model serves.</summary>
public enum ModelKind
{
    /// <summary>Chat and text completions, and Anthropic messages.</summary>
    Chat,

    /// <summary>Embeddings.</summary>
    Embedding,
}

/// <summary>A model offered by a tenant, routed to one of its providers, with its price.</summary>
public sealed record ModelConfig
{
    /// <summary>Required. The name clients ask for. Unique within the tenant, also against aliases.</summary>
    public required string Name { get; init; }

    /// <summary>Required. The id of one of the tenant's providers.</summary>
    public required string Provider { get; init; }

    /// <summary>The model name sent upstream. Defaults to <see cref="Name"/>.</summary>
    public string? UpstreamModel { get; init; }

    /// <summary>Other names clients may use for this model.</summary>
    public IReadOnlyList<string> Aliases { get; init; } = [];

    /// <summary>Chat (default) or embedding.</summary>
    public ModelKind Kind { get; init; } = ModelKind.Chat;

    /// <summary>
    /// The largest price per million tokens: a request may ask for up to 2⁶³ tokens, and its cost at any price up to
    /// this one is still a number (a decimal holds about 7.9 × 10²⁸).
    /// </summary>
    public const decimal MaxPricePerMillion = 1_000_000_000m;

    /// <summary>Price per million input tokens. Default 0.</summary>
    public decimal InputPerMillion { get; init; }

    /// <summary>Price per million output tokens. Default 0.</summary>
    public decimal OutputPerMillion { get; init; }

    /// <summary>
    /// Price per million input tokens read from the provider's prompt cache (OpenAI's <c>cached_tokens</c>, Anthropic's
    /// <c>cache_read_input_tokens</c>), YAML <c>price.cached_input_per_mtok</c>. Optional: null prices them at
    /// <see cref="InputPerMillion"/>, as before there was this price.
    /// </summary>
    public decimal? CachedInputPerMillion { get; init; }

    /// <summary>
    /// Price per million input tokens written to the provider's prompt cache (Anthropic's
    /// <c>cache_creation_input_tokens</c>), YAML <c>price.cache_write_input_per_mtok</c>. Optional: null prices them at
    /// <see cref="InputPerMillion"/>.
    /// </summary>
    public decimal? CacheWriteInputPerMillion { get; init; }

    /// <summary>ISO currency of the prices. Default <c>USD</c>.</summary>
    public string Currency { get; init; } = "USD";
}

/// <summary>The contact of an owner: a named person or team, never a shared mailbox for every role.</summary>
public sealed record OwnerConfig
{
    /// <summary>Required. Person or team name.</summary>
    public required string Name { get; init; }

    /// <summary>E-mail address. At least one of e-mail and webhook is required.</summary>
    public string? Email { get; init; }

    /// <summary>Webhook URL for notifications.</summary>
    public Uri? Webhook { get; init; }

    /// <summary>The admin identity that acts for this owner in the control plane (for example to approve access).</summary>
    public string? Admin { get; init; }

    /// <summary>How the webhook is written to: Custos JSON (default) or a Slack-compatible payload.</summary>
    public WebhookFormat? WebhookFormat { get; init; }
}

/// <summary>The accountable owners of a service.</summary>
public sealed record ServiceOwners
{
    /// <summary>Owns the policy: approves access and entitlements.</summary>
    public OwnerConfig? Policy { get; init; }

    /// <summary>Owns the bill.</summary>
    public OwnerConfig? Billing { get; init; }

    /// <summary>Owns the technical controls: answers whether they were active.</summary>
    public OwnerConfig? Technical { get; init; }

    /// <summary>For agent workloads: who operates the agent.</summary>
    public OwnerConfig? AgentOperator { get; init; }

    /// <summary>For agent workloads: the accountable business sponsor.</summary>
    public OwnerConfig? BusinessSponsor { get; init; }
}

/// <summary>An AI-using application, the unit of ownership.</summary>
public sealed record ServiceConfig
{
    /// <summary>Required. Unique across the policy.</summary>
    public required string Id { get; init; }

    /// <summary>Required. The tenant the service belongs to.</summary>
    public required string Tenant { get; init; }

    /// <summary>What the service does.</summary>
    public string? Description { get; init; }

    /// <summary>Required: policy, billing and technical owners.</summary>
    public ServiceOwners Owners { get; init; } = new();

    /// <summary>Limits over all of the service's consumers together.</summary>
    public LimitsConfig Limits { get; init; } = LimitsConfig.Empty;

    /// <summary>Prompt restrictions for the service's requests (managed by its prompt admins).</summary>
    public IReadOnlyList<PromptRuleConfig> PromptRules { get; init; } = [];

    /// <summary>
    /// Model choice of the service (managed by its prompt admins): the tenant's models its consumers may be entitled
    /// to. Null means every model of the tenant.
    /// </summary>
    public IReadOnlyList<string>? Models { get; init; }

    /// <summary>Admin identities the policy names as delegates of the policy owner: they may approve access requests too.</summary>
    public IReadOnlyList<string>? Approvers { get; init; }

    /// <summary>Kill switch: when true, every request of the service is refused with <c>deny.service_suspended</c>.</summary>
    public bool? Suspended { get; init; }
}

/// <summary>The kind of caller; each has its own default entitlements and anomaly thresholds.</summary>
public enum ConsumerCategory
{
    /// <summary>A product serving external customers.</summary>
    External,

    /// <summary>An internal team.</summary>
    Internal,

    /// <summary>A scheduled or batch job.</summary>
    Automation,

    /// <summary>An autonomous agent.</summary>
    Agent,
}

/// <summary>An entitled caller inside a service.</summary>
public sealed record ConsumerConfig
{
    /// <summary>Required. Unique across the policy.</summary>
    public required string Id { get; init; }

    /// <summary>Required. The owning service.</summary>
    public required string Service { get; init; }

    /// <summary>Required. external, internal, automation or agent.</summary>
    public required ConsumerCategory Category { get; init; }

    /// <summary>
    /// Shorthand for one entitlement without approver or validity: models (names or aliases of the service's
    /// tenant) this consumer may use. When neither this nor <see cref="Entitlements"/> is given, the consumer
    /// inherits its category's default models.
    /// </summary>
    public IReadOnlyList<string> Models { get; init; } = [];

    /// <summary>Approved access, each with approver, reference and validity.</summary>
    public IReadOnlyList<EntitlementConfig> Entitlements { get; init; } = [];

    /// <summary>The consumer's own limits; they narrow its category's defaults.</summary>
    public LimitsConfig Limits { get; init; } = LimitsConfig.Empty;

    /// <summary>Kill switch: when true, every request of the consumer is refused with <c>deny.consumer_suspended</c>.</summary>
    public bool? Suspended { get; init; }

    /// <summary>When the consumer is expected to call; traffic outside it raises an alert. Null means any time.</summary>
    public ScheduleConfig? Schedule { get; init; }
}

/// <summary>The lifecycle state of a credential.</summary>
public enum CredentialStatus
{
    /// <summary>Accepted.</summary>
    Active,

    /// <summary>Temporarily refused; can be resumed.</summary>
    Suspended,

    /// <summary>Permanently refused.</summary>
    Revoked,
}

/// <summary>
/// How one consumer proves itself: an API key known to the gateway only by its hash, or a workload identity (a JWT
/// from a configured issuer, matched by subject). Bound to exactly one consumer.
/// </summary>
public sealed record CredentialConfig
{
    /// <summary>Required. Unique, not secret; it appears in the ledger.</summary>
    public required string Id { get; init; }

    /// <summary>Required. The consumer the credential is bound to.</summary>
    public required string Consumer { get; init; }

    /// <summary>An API key: lower-case hex SHA-256 of the full key. Either this or <see cref="Issuer"/> and <see cref="Subject"/>.</summary>
    public string? KeySha256 { get; init; }

    /// <summary>Active (default), suspended or revoked.</summary>
    public CredentialStatus Status { get; init; } = CredentialStatus.Active;

    /// <summary>After this instant the credential is refused as expired. Optional.</summary>
    public DateTimeOffset? ExpiresAt { get; init; }

    /// <summary>The first characters of the key (for example <c>csk_4VZ1rJ0m</c>): enough to recognise it, useless to an attacker.</summary>
    public string? Prefix { get; init; }

    /// <summary>When the credential was issued, when known.</summary>
    public DateTimeOffset? CreatedAt { get; init; }

    /// <summary>A workload identity: the id of the identity provider whose tokens it accepts.</summary>
    public string? Issuer { get; init; }

    /// <summary>A workload identity: the subject (or the provider's subject claim) its tokens carry.</summary>
    public string? Subject { get; init; }

    /// <summary>
    /// Set by a rotation: the credential of the same consumer that replaced this one. Its key works on until
    /// <see cref="ExpiresAt"/> (the overlap); a credential replaced already is not rotated again.
    /// </summary>
    public string? ReplacedBy { get; init; }
}
