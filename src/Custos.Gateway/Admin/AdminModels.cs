using System.Text.Json;
using System.Text.Json.Serialization;
using Custos.ControlPlane;
using Custos.Policy;

namespace Custos.Gateway.Admin;

/// <summary>
/// Body of <c>POST /admin/v1/policy/versions</c>. <see cref="BaseVersion"/> (or an <c>If-Match</c> header naming it) is the
/// version the policy was edited from: when another is in force, nothing is applied (412 <c>admin.policy_changed</c>).
/// <see cref="LiftContainment"/> lets the policy lift containment in force (each lift recorded); without it such a policy
/// is a 409 <c>admin.containment_lifted</c>. A dry run makes every check and applies nothing.
/// </summary>
public sealed record ApplyPolicyRequest(
    [property: JsonPropertyName("yaml")] string Yaml,
    [property: JsonPropertyName("reason")] string Reason,
    [property: JsonPropertyName("dry_run")] bool DryRun = false,
    [property: JsonPropertyName("base_version")] long? BaseVersion = null,
    [property: JsonPropertyName("lift_containment")] bool LiftContainment = false);

/// <summary>
/// A policy version as the admin API shows it. <see cref="Author"/> and <see cref="Reason"/> are null for an admin scoped
/// to tenants or services when the version changed nothing of the policy it sees (<see cref="AdminAccess.ScopedView"/>).
/// </summary>
public sealed record PolicyVersionView(
    [property: JsonPropertyName("version")] long Version,
    [property: JsonPropertyName("sha256")] string Sha256,
    [property: JsonPropertyName("author")] string? Author,
    [property: JsonPropertyName("reason")] string? Reason,
    [property: JsonPropertyName("created_at")] DateTimeOffset CreatedAt)
{
    /// <summary>The view of <paramref name="version"/>.</summary>
    public static PolicyVersionView Of(PolicyVersion version) => new(version.Number, version.Sha256, version.Author, version.Reason, version.CreatedAt);

    /// <summary>The view of <paramref name="version"/> without who made it and why: the change was outside the admin's scope.</summary>
    public static PolicyVersionView Withheld(PolicyVersion version) => new(version.Number, version.Sha256, null, null, version.CreatedAt);
}

/// <summary>The outcome of applying a policy.</summary>
public sealed record ApplyPolicyResponse(
    [property: JsonPropertyName("version")] PolicyVersionView Version,
    [property: JsonPropertyName("created")] bool Created,
    [property: JsonPropertyName("dry_run")] bool DryRun,
    [property: JsonPropertyName("changes")] IReadOnlyList<string> Changes,
    [property: JsonPropertyName("warnings")] IReadOnlyList<string> Warnings,
    [property: JsonPropertyName("lifted")] IReadOnlyList<string> Lifted);

/// <summary>The signed-in administrator, with the permissions of the role (snake_case <see cref="AdminPermission"/> names).</summary>
public sealed record WhoAmI(string Id, string Role, IReadOnlyList<string> Tenants, IReadOnlyList<string> Services, string SignedInWith,
    IReadOnlyList<string> Permissions);

/// <summary>A service with its owners and governance gaps.</summary>
/// <remarks>
/// <see cref="Suspended"/> is true while any kill switch refuses the service's requests, its own or its tenant's;
/// <see cref="SuspendedBy"/> names which.
/// </remarks>
public sealed record ServiceView(string Id, string Tenant, string? Description, ServiceOwners Owners, IReadOnlyList<string> GovernanceGaps,
    bool Suspended, IReadOnlyList<string>? Models, IReadOnlyList<string> Approvers, BudgetConfig? Budget)
{
    /// <summary>The kill switch that refuses the service's requests, as the data plane checks them: <c>tenant</c> or <c>service</c>; null when none is engaged.</summary>
    public string? SuspendedBy { get; init; }

    /// <summary>The owner roles that must be filled: the agent roles only where the service has agent consumers.</summary>
    public IReadOnlyList<string> RequiredOwnerRoles { get; init; } = [];

    /// <summary>The service's own prompt restrictions, as the prompt admin sets them (<c>PUT /services/{id}/prompt-rules</c>).</summary>
    public IReadOnlyList<PromptRuleConfig> PromptRules { get; init; } = [];

    /// <summary>The tenant's prompt restrictions, which every request of the service passes as well (changed by a whole policy).</summary>
    public IReadOnlyList<PromptRuleConfig> TenantPromptRules { get; init; } = [];
}

/// <summary>One owner role of one service.</summary>
public sealed record OwnerView(string Tenant, string Service, string Role, string? Name, string? Email, Uri? Webhook, string? Admin)
{
    /// <summary>Whether the role must be filled: the agent roles only where the service has agent consumers.</summary>
    public bool Required { get; init; } = true;
}

/// <summary>A consumer as the admin API shows it, with its entitlements: who approved which models, on which ticket, for how long.</summary>
/// <remarks>
/// <see cref="Suspended"/> is true while any kill switch refuses the consumer's requests (its own, its service's or its
/// tenant's), and <see cref="SuspendedBy"/> names which; <see cref="Models"/>, the models usable now, is then empty, as it
/// is while the service is refused as ungoverned.
/// </remarks>
public sealed record ConsumerView(string Id, string Service, string Tenant, string Category, bool Suspended, IReadOnlyList<string> Models, int Credentials,
    IReadOnlyList<ConsumerEntitlement> Entitlements)
{
    /// <summary>The kill switch that refuses the consumer's requests, as the data plane checks them: <c>tenant</c>, <c>service</c> or <c>consumer</c>; null when none is engaged.</summary>
    public string? SuspendedBy { get; init; }
}

/// <summary>One entitlement of a consumer; <paramref name="Active"/> when valid now.</summary>
public sealed record ConsumerEntitlement(IReadOnlyList<string> Models, string? ApprovedBy, string? Ticket, DateTimeOffset? ValidFrom, DateTimeOffset? ValidUntil,
    string Source, bool Active);

/// <summary>A credential as the admin API lists it: never the key, only its prefix.</summary>
public sealed record CredentialView(string Id, string Consumer, string Service, string Tenant, string Kind, string? Prefix, string Status,
    DateTimeOffset? CreatedAt, DateTimeOffset? LastUsed, DateTimeOffset? ExpiresAt, string? Issuer, string? Subject, string? ReplacedBy = null);

/// <summary>A newly issued key: shown this once, stored only as its hash.</summary>
public sealed record IssuedCredential(CredentialView Credential, string Key, long PolicyVersion, string Notice);

/// <summary>The outcome of a change: the policy version it made (or the one already in force).</summary>
public sealed record ChangeResult(string Action, string Target, string? Before, string? After, long PolicyVersion, int Notified);

/// <summary>Body of <c>POST /admin/v1/credentials</c>.</summary>
public sealed record IssueCredentialBody
{
    /// <summary>Required. The consumer the key is bound to.</summary>
    public required string Consumer { get; init; }

    /// <summary>Required. Why it is issued.</summary>
    public required string Reason { get; init; }

    /// <summary>When it expires; none by default.</summary>
    public DateTimeOffset? ExpiresAt { get; init; }
}

/// <summary>Body of <c>POST /admin/v1/credentials/{id}/rotate</c>.</summary>
public sealed record RotateCredentialBody
{
    /// <summary>Required. Why.</summary>
    public required string Reason { get; init; }

    /// <summary>How long the old key keeps working beside the new one. Default 86400 (one day); 0 ends it now.</summary>
    public long? OverlapSeconds { get; init; }
}

/// <summary>Body of lifecycle actions that only need a reason.</summary>
public sealed record ReasonBody
{
    /// <summary>Required. Why.</summary>
    public required string Reason { get; init; }
}

/// <summary>A kill switch engaged now, and the policy version that engaged it: when, by whom and why.</summary>
/// <param name="Scope">consumer, service or tenant.</param>
/// <param name="Id">The consumer, service or tenant.</param>
/// <param name="Since">When the version that engaged it was made.</param>
/// <param name="PolicyVersion">The version that engaged it (the oldest of the versions since in which it is engaged).</param>
/// <param name="EngagedBy">That version's author: the admin, or who applied the policy file (null when withheld from a scoped admin, as in the version list).</param>
/// <param name="Reason">That version's reason (null when withheld).</param>
public sealed record KillSwitchView(string Scope, string Id, DateTimeOffset Since, long PolicyVersion, string? EngagedBy, string? Reason);

/// <summary>Body of <c>POST /admin/v1/kill-switches</c>.</summary>
public sealed record KillSwitchBody
{
    /// <summary>Required. <c>consumer</c>, <c>service</c> or <c>tenant</c>.</summary>
    public required string Scope { get; init; }

    /// <summary>Required. The id of the consumer, service or tenant.</summary>
    public required string Id { get; init; }

    /// <summary>True to engage (refuse every request), false to release.</summary>
    public required bool Engaged { get; init; }

    /// <summary>Required. Why.</summary>
    public required string Reason { get; init; }
}

/// <summary>Body of <c>PUT /admin/v1/store/record-format</c>.</summary>
public sealed record RecordFormatBody
{
    /// <summary>Required. <c>zstd</c> (compressed against a dictionary of the store) or <c>json</c>.</summary>
    public required string Format { get; init; }

    /// <summary>Required. Why.</summary>
    public required string Reason { get; init; }
}

/// <summary>The store the gateway uses: where it is, and how new ledger records are stored.</summary>
/// <param name="Description">Where: a file, or <c>postgresql://host:port/database</c> (never a password).</param>
/// <param name="RecordFormat"><c>zstd</c> or <c>json</c>.</param>
/// <param name="RecordFormatSwitchable">Whether <c>PUT /store/record-format</c> can change it (the PostgreSQL store); the embedded store always compresses.</param>
public sealed record StoreView(string Description, string RecordFormat, bool RecordFormatSwitchable);

/// <summary>Body of <c>POST /admin/v1/access-requests</c>.</summary>
public sealed record AccessRequestBody
{
    /// <summary>Required. The consumer that needs access.</summary>
    public required string Consumer { get; init; }

    /// <summary>Required. The models (names or aliases of its tenant).</summary>
    public required IReadOnlyList<string> Models { get; init; }

    /// <summary>Required. Why the access is needed.</summary>
    public required string Justification { get; init; }

    /// <summary>End of the access (exclusive); open-ended by default.</summary>
    public DateTimeOffset? ValidUntil { get; init; }
}

/// <summary>Body of <c>PUT /admin/v1/services/{id}/owners</c>.</summary>
public sealed record OwnersBody
{
    /// <summary>Required. The owners, every role at once.</summary>
    public required ServiceOwners Owners { get; init; }

    /// <summary>Required. Why.</summary>
    public required string Reason { get; init; }
}

/// <summary>Body of <c>PUT /admin/v1/services/{id}/owners/{role}</c>.</summary>
public sealed record OwnerRoleBody
{
    /// <summary>The owner of the role; null leaves it unfilled.</summary>
    public OwnerConfig? Owner { get; init; }

    /// <summary>Required. Why.</summary>
    public required string Reason { get; init; }
}

/// <summary>Body of <c>PUT /admin/v1/services/{id}/prompt-rules</c>.</summary>
public sealed record PromptRulesBody
{
    /// <summary>Required. The service's prompt rules, replacing the current ones.</summary>
    public required IReadOnlyList<PromptRuleConfig> PromptRules { get; init; }

    /// <summary>Required. Why.</summary>
    public required string Reason { get; init; }
}

/// <summary>Body of <c>PUT /admin/v1/services/{id}/models</c>.</summary>
public sealed record ServiceModelsBody
{
    /// <summary>The service's model choice; null for every model of its tenant.</summary>
    public IReadOnlyList<string>? Models { get; init; }

    /// <summary>Required. Why.</summary>
    public required string Reason { get; init; }
}

/// <summary>Body of <c>PUT /admin/v1/budgets</c>.</summary>
public sealed record BudgetBody
{
    /// <summary>Required. <c>consumer</c>, <c>service</c> or <c>tenant</c>.</summary>
    public required string Scope { get; init; }

    /// <summary>Required. The id at that scope.</summary>
    public required string Id { get; init; }

    /// <summary>The budget; null removes it.</summary>
    public BudgetConfig? Budget { get; init; }

    /// <summary>Required. Why.</summary>
    public required string Reason { get; init; }
}

/// <summary>Spend of one service in a window, in its tenant's <paramref name="Currency"/>.</summary>
public sealed record SpendView(string Tenant, string Service, decimal Spend, long Requests, BudgetConfig? Budget, string Currency)
{
    /// <summary>
    /// Whether the service is no longer in the policy in force: it spent in the window and was removed since. Its tenant and
    /// currency are those of the newest version that had it, and it has no budget. Default false.
    /// </summary>
    public bool Retired { get; init; }
}

/// <summary>
/// The chargeback lines of a window [<paramref name="From"/>, <paramref name="To"/>), summed from its request entries
/// within the admin's scope (<c>GET /spend/lines</c>).
/// </summary>
public sealed record SpendLinesView(DateTimeOffset From, DateTimeOffset To, IReadOnlyList<Custos.Reports.SpendLine> Lines);

/// <summary>
/// Who approved the access a recorded request used. <c>policy_author</c> is withheld (null) from a scoped admin when the
/// version changed nothing in its scope, as in the version list; <c>access_request</c> is the request whose id is the
/// entitlement's ticket only when it asked for this consumer and these models.
/// </summary>
public sealed record ApprovalView(string RequestId, DateTimeOffset Timestamp, string? Consumer, string? Model, string Decision, long PolicyVersion,
    string? PolicyHash, string? PolicyAuthor, string? Source, IReadOnlyList<string> Models, string? ApprovedBy, string? Ticket, DateTimeOffset? ValidFrom,
    DateTimeOffset? ValidUntil, AccessRequest? AccessRequest)
{
    /// <summary>Whether the entitlement was valid at the request's time (false: expired, or not valid yet); null when no entitlement covered the model.</summary>
    public bool? ValidAtRequest { get; init; }

    /// <summary>
    /// The service's models when its model choice excluded the model though an entitlement of the consumer named it (the
    /// request was refused for that, not for want of an approval); otherwise null.
    /// </summary>
    public IReadOnlyList<string>? ServiceModels { get; init; }
}

/// <summary>JSON conventions of the admin API: the policy model's snake_case, with nulls written out.</summary>
internal static class AdminJson
{
    public static JsonSerializerOptions Options { get; } = new(PolicyVersion.JsonOptions)
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.Never,
        WriteIndented = false,
    };

    /// <summary>
    /// For the bodies of changes: a null where the model has no null, a missing required member or a member the body type
    /// does not have is an error. A misspelt <c>budget</c> would otherwise read as "no budget", and remove it.
    /// </summary>
    public static JsonSerializerOptions BodyOptions { get; } = WithEnumNames(new(Options)
    {
        RespectNullableAnnotations = true,
        RespectRequiredConstructorParameters = true,
        UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,

        // {"reason":"x","reason":"y"}: a proxy or a log may read the first where the gateway read the last.
        AllowDuplicateProperties = false,
    });

    /// <summary>
    /// <paramref name="options"/> reading enums by name only, refusing others with the names they take
    /// (<see cref="Custos.Errors.JsonEnumNames"/>); first, so that it is chosen before the enum converter the options copied.
    /// </summary>
    private static JsonSerializerOptions WithEnumNames(JsonSerializerOptions options)
    {
        options.Converters.Insert(0, new Custos.Errors.JsonEnumNames());
        return options;
    }
}

/// <summary>Acknowledging an alert: an optional note.</summary>
public sealed record AcknowledgeBody
{
    /// <summary>What the owner is doing about it.</summary>
    public string? Note { get; init; }
}

/// <summary>What resuming an alert's automatic action did.</summary>
public sealed record ResumeResult(Custos.Alerts.AlertView Alert, long PolicyVersion);

/// <summary>
/// The console's overview: requests and refusals over a window in buckets, spend this month per service (cumulative, day by
/// day) beside its monthly budget, every budget's use in its current period, top consumers and open alerts; all in scope.
/// <c>scanned</c> counts the requests it summed (from the request totals, since the earliest period it covers). Every figure
/// comes from the request totals, the last hour's from those by minute (<c>docs/console.md</c>). <paramref name="Currency"/> is
/// the view's one currency; null when its tenants price in different currencies, whose spend is then never added together:
/// each bucket has its spend by currency, and each budget, service and consumer names its own.
/// </summary>
public sealed record OverviewView(DateTimeOffset From, DateTimeOffset To, int BucketSeconds, string? Currency, IReadOnlyList<OverviewBucket> Buckets,
    DateTimeOffset MonthStart, IReadOnlyList<DateTimeOffset> Days, IReadOnlyList<SpendSeries> SpendThisMonth, IReadOnlyList<BudgetUse> Budgets,
    IReadOnlyList<ConsumerUse> TopConsumers, IReadOnlyDictionary<string, long> Reasons, int OpenAlerts, long Scanned)
{
    /// <summary>
    /// The time zone (IANA id, such as <c>Europe/Berlin</c> or <c>UTC</c>) whose month <see cref="MonthStart"/> and
    /// <see cref="Days"/> are: read them as dates in it, not in the reader's own zone, or a day starts on the one before.
    /// </summary>
    public string TimeZone { get; init; } = "UTC";

    /// <summary>Every currency of the view, sorted: its tenants' and any its spend was recorded in.</summary>
    public IReadOnlyList<string> Currencies { get; init; } = ["USD"];
}

/// <summary>
/// One time bucket of the overview; <paramref name="Reasons"/> counts the reason codes of refused requests.
/// <paramref name="Spend"/> is null when the view has more than one currency; <paramref name="SpendByCurrency"/> always has it.
/// </summary>
public sealed record OverviewBucket(DateTimeOffset Start, long Requests, long Allowed, long Denied, long Throttled, decimal? Spend,
    IReadOnlyDictionary<string, decimal> SpendByCurrency, IReadOnlyDictionary<string, long> Reasons);

/// <summary>A service's spend this month, cumulative at the end of each day, and its monthly budget if it has one, in its tenant's currency.</summary>
public sealed record SpendSeries(string Tenant, string Service, decimal? MonthlyBudget, IReadOnlyList<decimal> Cumulative, string Currency)
{
    /// <summary>Whether the service spent this month and is no longer in the policy in force (no budget then). Default false.</summary>
    public bool Retired { get; init; }
}

/// <summary>A budget and what its current period has spent (<paramref name="Fraction"/> of the amount), in its tenant's currency.</summary>
public sealed record BudgetUse(string Scope, string Id, string Tenant, string? Service, decimal Amount, string Period, string Mode, DateTimeOffset PeriodStart,
    decimal Spent, decimal Fraction, string Currency);

/// <summary>A consumer's requests, refusals and spend in the overview window, in its tenant's currency.</summary>
public sealed record ConsumerUse(string Consumer, string? Service, string? Tenant, long Requests, long Refused, decimal Spend, string Currency);

/// <summary>One policy version with its YAML and what it changed from the one before.</summary>
public sealed record PolicyVersionDetail(PolicyVersionView Version, string Yaml, IReadOnlyList<string> Changes);

/// <summary>The difference of two policy versions: changes by path, and a line diff of their YAML.</summary>
public sealed record PolicyDiffView(PolicyVersionView From, PolicyVersionView To, IReadOnlyList<string> Changes, IReadOnlyList<DiffLine> Lines);

/// <summary>One line of a YAML diff: <c>same</c>, <c>added</c> or <c>removed</c>.</summary>
public sealed record DiffLine(string Kind, string Text);
