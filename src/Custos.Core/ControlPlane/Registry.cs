namespace Custos.ControlPlane;

/// <summary>Where an access request stands.</summary>
public enum AccessRequestStatus
{
    /// <summary>Waiting for the service's policy owner (or a delegate the policy names).</summary>
    Pending,

    /// <summary>Approved: its entitlement took effect as a new policy version.</summary>
    Approved,

    /// <summary>Rejected: nothing changed.</summary>
    Rejected,
}

/// <summary>
/// A request for a consumer's entitlement to models. Only an approved request takes effect, as a new policy version
/// whose entitlement names the approver and this request's id as its ticket.
/// </summary>
public sealed record AccessRequest
{
    /// <summary>The id, <c>ar-N</c>; the entitlement's ticket once approved.</summary>
    public required string Id { get; init; }

    /// <summary>The consumer's tenant.</summary>
    public required string Tenant { get; init; }

    /// <summary>The consumer's service, whose policy owner decides.</summary>
    public required string Service { get; init; }

    /// <summary>The consumer that would be entitled.</summary>
    public required string Consumer { get; init; }

    /// <summary>The models asked for.</summary>
    public required IReadOnlyList<string> Models { get; init; }

    /// <summary>End of the entitlement's validity (exclusive), or null for open-ended.</summary>
    public DateTimeOffset? ValidUntil { get; init; }

    /// <summary>Why the access is needed.</summary>
    public required string Justification { get; init; }

    /// <summary>The admin identity that asked.</summary>
    public required string RequestedBy { get; init; }

    /// <summary>When.</summary>
    public required DateTimeOffset RequestedAt { get; init; }

    /// <summary>Pending, approved or rejected.</summary>
    public AccessRequestStatus Status { get; init; }

    /// <summary>Who approved or rejected it.</summary>
    public string? DecidedBy { get; init; }

    /// <summary>When it was decided.</summary>
    public DateTimeOffset? DecidedAt { get; init; }

    /// <summary>The decider's reason.</summary>
    public string? DecisionReason { get; init; }

    /// <summary>The policy version an approval created.</summary>
    public long? PolicyVersion { get; init; }
}

/// <summary>A message to an owner, kept in a durable outbox until it is delivered.</summary>
public sealed record Notification
{
    /// <summary>The outbox id.</summary>
    public long Id { get; init; }

    /// <summary>When it was raised.</summary>
    public required DateTimeOffset CreatedAt { get; init; }

    /// <summary>The owner role it goes to, for example <c>technical</c>.</summary>
    public required string Role { get; init; }

    /// <summary>The owner's name.</summary>
    public required string Recipient { get; init; }

    /// <summary><c>webhook</c> or <c>email</c>.</summary>
    public required string Channel { get; init; }

    /// <summary>The webhook URL or e-mail address.</summary>
    public required string Target { get; init; }

    /// <summary>The JSON body.</summary>
    public required string Payload { get; init; }

    /// <summary><c>pending</c>, <c>delivered</c>, or <c>undeliverable</c> (no way to send on this channel).</summary>
    public string Status { get; init; } = "pending";

    /// <summary>Delivery attempts so far.</summary>
    public int Attempts { get; init; }

    /// <summary>The last failure, if any.</summary>
    public string? LastError { get; init; }
}

/// <summary>The control plane's own records beside the policy: access requests, the notification outbox, credential use.</summary>
public interface IRegistryStore
{
    /// <summary>Stores a new pending request and returns it with its id.</summary>
    Task<AccessRequest> CreateAccessRequestAsync(AccessRequest request, CancellationToken cancellationToken = default);

    /// <summary>One request, or null.</summary>
    Task<AccessRequest?> GetAccessRequestAsync(string id, CancellationToken cancellationToken = default);

    /// <summary>Requests, oldest first, optionally of one status.</summary>
    Task<IReadOnlyList<AccessRequest>> ListAccessRequestsAsync(AccessRequestStatus? status, CancellationToken cancellationToken = default);

    /// <summary>Records the decision of a request still pending; false when it was decided already.</summary>
    Task<bool> DecideAccessRequestAsync(string id, AccessRequestStatus status, string decidedBy, DateTimeOffset at, string reason, long? policyVersion,
        CancellationToken cancellationToken = default);

    /// <summary>Adds notifications to the outbox.</summary>
    Task EnqueueNotificationsAsync(IReadOnlyList<Notification> notifications, CancellationToken cancellationToken = default);

    /// <summary>Pending notifications due for an attempt at <paramref name="now"/>.</summary>
    Task<IReadOnlyList<Notification>> DueNotificationsAsync(DateTimeOffset now, int max, CancellationToken cancellationToken = default);

    /// <summary>Records a delivery attempt: delivered, or failed with the time of the next attempt.</summary>
    Task RecordNotificationAttemptAsync(long id, bool delivered, string? error, DateTimeOffset? nextAttempt, CancellationToken cancellationToken = default);

    /// <summary>The newest notifications.</summary>
    Task<IReadOnlyList<Notification>> ListNotificationsAsync(int limit, CancellationToken cancellationToken = default);

    /// <summary>Spend and request count per service of the request entries in [<paramref name="from"/>, <paramref name="to"/>).</summary>
    Task<IReadOnlyDictionary<string, (decimal Spend, long Requests)>> GetSpendAsync(DateTimeOffset from, DateTimeOffset to, CancellationToken cancellationToken = default);

    /// <summary>When each credential was last used, from the ledger's request entries.</summary>
    Task<IReadOnlyDictionary<string, DateTimeOffset>> GetCredentialLastUsedAsync(CancellationToken cancellationToken = default);
}
