using Custos.Policy;

namespace Custos.Alerts;

/// <summary>An alert as people and reports read it (the admin API, the CLI, the incident pack): the signal and what became of it, flat.</summary>
public sealed record AlertView
{
    /// <summary>The id, <c>al-N</c> (<c>custos alerts show al-N</c>).</summary>
    public required string Id { get; init; }

    /// <summary>When it was raised.</summary>
    public required DateTimeOffset RaisedAt { get; init; }

    /// <summary>The detector's type, for example <c>usage.anomaly</c>.</summary>
    public required string Type { get; init; }

    /// <summary>info, warning or critical.</summary>
    public required string Severity { get; init; }

    /// <summary>What it is about, for example <c>consumer:support-bot</c> or <c>source:203.0.113.7</c>.</summary>
    public required string Subject { get; init; }

    /// <summary>One line for people.</summary>
    public required string Summary { get; init; }

    /// <summary>open, acknowledged or resolved.</summary>
    public required string Status { get; init; }

    /// <summary>Signals folded into it, the first included.</summary>
    public long Occurrences { get; init; }

    /// <summary>The last of them.</summary>
    public DateTimeOffset LastSeenAt { get; init; }

    /// <summary>The tenant, when known.</summary>
    public string? Tenant { get; init; }

    /// <summary>The service whose owners were told, when known.</summary>
    public string? Service { get; init; }

    /// <summary>The consumer, when known.</summary>
    public string? Consumer { get; init; }

    /// <summary>The consumer's category, when known.</summary>
    public string? Category { get; init; }

    /// <summary>When the request that raised it happened.</summary>
    public DateTimeOffset OccurredAt { get; init; }

    /// <summary>The credential of the request that raised it, when known.</summary>
    public string? CredentialId { get; init; }

    /// <summary>The request that raised it.</summary>
    public string? RequestId { get; init; }

    /// <summary>The policy version in force for that request.</summary>
    public long PolicyVersion { get; init; }

    /// <summary>The rule that fired.</summary>
    public string? Rule { get; init; }

    /// <summary>What was measured.</summary>
    public IReadOnlyDictionary<string, string> Evidence { get; init; } = new Dictionary<string, string>();

    /// <summary>Who was told (name and role), in order; escalations add to it.</summary>
    public IReadOnlyList<string> Recipients { get; init; } = [];

    /// <summary>The roles told so far (owner roles and <c>security</c>), in order.</summary>
    public IReadOnlyList<string> NotifiedRoles { get; init; } = [];

    /// <summary>Who acknowledged it.</summary>
    public string? AcknowledgedBy { get; init; }

    /// <summary>When.</summary>
    public DateTimeOffset? AcknowledgedAt { get; init; }

    /// <summary>When it escalated for want of an acknowledgement.</summary>
    public DateTimeOffset? EscalatedAt { get; init; }

    /// <summary>The automatic action taken (<c>suspended credential …</c>, <c>throttled consumer …</c>), if any.</summary>
    public string? ActionTaken { get; init; }

    /// <summary>The policy version that action made.</summary>
    public long? ActionPolicyVersion { get; init; }

    /// <summary>Who resolved it.</summary>
    public string? ResolvedBy { get; init; }

    /// <summary>When.</summary>
    public DateTimeOffset? ResolvedAt { get; init; }

    /// <summary>The acknowledgement or resolution note.</summary>
    public string? Note { get; init; }

    /// <summary>The view of <paramref name="alert"/>.</summary>
    public static AlertView Of(Alert alert)
    {
        var s = alert.Signal;
        return new AlertView
        {
            Id = alert.Id,
            RaisedAt = alert.RaisedAt,
            Type = s.Type,
            Severity = PolicyNames.Of(s.Severity),
            Subject = s.Subject,
            Summary = s.Summary,
            Status = PolicyNames.Of(alert.Status),
            Occurrences = alert.Occurrences,
            LastSeenAt = alert.LastSeenAt,
            Tenant = s.Tenant,
            Service = s.Service,
            Consumer = s.Consumer,
            Category = s.Category is { } c ? PolicyNames.Of(c) : null,
            OccurredAt = s.At,
            CredentialId = s.CredentialId,
            RequestId = s.RequestId,
            PolicyVersion = s.PolicyVersion,
            Rule = s.Rule,
            Evidence = s.Evidence,
            Recipients = alert.Recipients,
            NotifiedRoles = alert.NotifiedRoles,
            AcknowledgedBy = alert.AcknowledgedBy,
            AcknowledgedAt = alert.AcknowledgedAt,
            EscalatedAt = alert.EscalatedAt,
            ActionTaken = alert.ActionTaken,
            ActionPolicyVersion = alert.ActionPolicyVersion,
            ResolvedBy = alert.ResolvedBy,
            ResolvedAt = alert.ResolvedAt,
            Note = alert.Note,
        };
    }
}
