using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Custos.Alerts;
using Custos.ControlPlane;
using Custos.Policy;

namespace Custos.Ledger;

/// <summary>
/// What the ledger's admin entries say about the store's own tables, gathered while verification reads the chains, and
/// compared with those tables afterwards: each policy version with the <c>policy.version_created</c> entry that recorded
/// it (number, hash, author, reason), each access request with its <c>access.*</c> entries (requester, tenant, consumer,
/// models, status, decider, reason), each alert with its <c>alert.*</c> entries and the automatic action recorded for it
/// (raised, acknowledged by whom, escalated, resolved by whom, action taken). The hash chain covers the entries, not these
/// tables: a version's document edited behind the gateway would be put in force, an access request's decider rewritten
/// would be shown as true, and an alert acknowledged or deleted in the store would change what the incident pack concludes.
/// </summary>
/// <remarks>
/// Memory: one small entry per policy version and per access request (who asked, for what, who decided), never the
/// request entries; the versions and access requests are read from the store afterwards.
/// </remarks>
internal sealed class RecordedChanges
{
    /// <summary>
    /// How long a version or an access request may go without its ledger entry (or a decision without its entry, or the
    /// other way round) before it is a problem: a running gateway stores first and records a moment later.
    /// </summary>
    public static readonly TimeSpan SettleAfter = TimeSpan.FromMinutes(5);

    private const string RequestTarget = "access_request:";
    private const string AlertTarget = "alert:";

    private readonly Dictionary<long, List<VersionEntry>> _versions = [];
    private readonly Dictionary<string, AccessEntries> _access = new(StringComparer.Ordinal);
    private readonly Dictionary<string, AlertEntries> _alerts = new(StringComparer.Ordinal);

    private sealed record VersionEntry(string ChainId, long Seq, string? Actor, string? Hash, string? Reason);

    private sealed class AccessEntries
    {
        public string? Where { get; set; }
        public string? RequestedBy { get; set; }
        public string? Tenant { get; set; }
        public string? Asked { get; set; } // "consumer -> models"
        public string? ApprovedBy { get; set; }
        public string? ApprovalReason { get; set; }
        public bool Withdrawn { get; set; }
        public string? RejectedBy { get; set; }
        public string? RejectionReason { get; set; }
        public DateTimeOffset LastAt { get; set; }
    }

    /// <summary>What the ledger says of one alert: raised (its type), acknowledged, escalated, resolved, its automatic action.</summary>
    private sealed class AlertEntries
    {
        public string? Where { get; set; }
        public string? Type { get; set; }
        public string? AcknowledgedBy { get; set; }
        public bool Escalated { get; set; }
        public string? ResolvedBy { get; set; }
        public string? Action { get; set; }
        public DateTimeOffset LastAt { get; set; }
    }

    /// <summary>Takes note of an admin entry (canonical JSON) when it records a policy version, an access request or an alert.</summary>
    public void Add(string chainId, long seq, ReadOnlySpan<byte> canonical)
    {
        string? action = null, actor = null, target = null, after = null, reason = null, tenant = null, timestamp = null;
        long version = 0;
        try
        {
            var reader = new Utf8JsonReader(canonical);
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            {
                return;
            }

            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                var name = reader.GetString();
                reader.Read();
                if (reader.TokenType == JsonTokenType.Number && name == "policy_version")
                {
                    reader.TryGetInt64(out version);
                    continue;
                }

                if (reader.TokenType != JsonTokenType.String)
                {
                    reader.Skip();
                    continue;
                }

                var value = reader.GetString();
                switch (name)
                {
                    case "action": action = value; break;
                    case "actor": actor = value; break;
                    case "target": target = value; break;
                    case "after": after = value; break;
                    case "reason": reason = value; break;
                    case "tenant": tenant = value; break;
                    case "timestamp": timestamp = value; break;
                }
            }
        }
        catch (JsonException)
        {
            return; // not an entry this reads; its hash was checked, its columns are compared elsewhere
        }

        if (action == "policy.version_created")
        {
            if (version < 1)
            {
                return; // numbers start at 1: an entry naming no version records none
            }

            if (!_versions.TryGetValue(version, out var list))
            {
                _versions[version] = list = [];
            }

            list.Add(new VersionEntry(chainId, seq, actor, after, reason));
            return;
        }

        if (AlertOf(action, actor, target, reason) is { } alertId)
        {
            if (!_alerts.TryGetValue(alertId, out var alert))
            {
                _alerts[alertId] = alert = new AlertEntries();
            }

            if (LedgerTime.TryParse(timestamp, out var when) && when > alert.LastAt)
            {
                alert.LastAt = when;
            }

            switch (action)
            {
                case "alert.raised":
                    (alert.Type, alert.Where) = (after, $"chain {chainId}, seq {seq}");
                    break;
                case "alert.acknowledged":
                    alert.AcknowledgedBy = actor;
                    break;
                case "alert.escalated":
                    alert.Escalated = true;
                    break;
                case "alert.resolved":
                    alert.ResolvedBy = actor;
                    break;
                default:
                    alert.Action = action;
                    break;
            }

            return;
        }

        if (action is not ("access.requested" or "access.approved" or "access.rejected" or "access.approval_withdrawn")
            || target is null || !target.StartsWith(RequestTarget, StringComparison.Ordinal))
        {
            return;
        }

        var id = target[RequestTarget.Length..];
        if (!_access.TryGetValue(id, out var entries))
        {
            _access[id] = entries = new AccessEntries { Where = $"chain {chainId}, seq {seq}" };
        }

        if (LedgerTime.TryParse(timestamp, out var at) && at > entries.LastAt)
        {
            entries.LastAt = at;
        }

        switch (action)
        {
            case "access.requested":
                (entries.RequestedBy, entries.Tenant, entries.Asked, entries.Where) = (actor, tenant, after?.StartsWith("pending: ", StringComparison.Ordinal) == true
                    ? after["pending: ".Length..] : after, $"chain {chainId}, seq {seq}");
                break;
            case "access.approved":
                (entries.ApprovedBy, entries.ApprovalReason) = (actor, reason);
                break;
            case "access.approval_withdrawn":
                entries.Withdrawn = true;
                break;
            default:
                (entries.RejectedBy, entries.RejectionReason) = (actor, reason);
                break;
        }
    }

    /// <summary>
    /// Every stored policy version whose canonical JSON does not hash to its stored SHA-256: the one check that needs no
    /// ledger, made on every verification, a range too.
    /// </summary>
    public static async Task CheckVersionHashesAsync(IEvidenceStore store, List<VerificationProblem> problems, CancellationToken cancellationToken)
    {
        await foreach (var version in store.ReadPolicyVersionsAsync(cancellationToken))
        {
            if (HashProblem(version) is { } problem)
            {
                problems.Add(problem);
            }
        }
    }

    /// <summary>Compares the store's policy versions and access requests with what the ledger recorded of them.</summary>
    /// <param name="store">The store.</param>
    /// <param name="now">When verification started.</param>
    /// <param name="problems">Where problems go.</param>
    /// <param name="cancellationToken">Cancellation.</param>
    public async Task CompareAsync(IEvidenceStore store, DateTimeOffset now, List<VerificationProblem> problems, CancellationToken cancellationToken)
    {
        var settled = now - SettleAfter;
        var stored = new HashSet<long>();
        await foreach (var version in store.ReadPolicyVersionsAsync(cancellationToken))
        {
            stored.Add(version.Number);
            if (HashProblem(version) is { } altered)
            {
                problems.Add(altered);
                continue;
            }

            var name = $"policy version {version.Number}";
            if (!_versions.TryGetValue(version.Number, out var recorded))
            {
                if (version.CreatedAt < settled || version.CreatedAt > now)
                {
                    problems.Add(new("unrecorded_policy_version", "", null, null,
                        $"{name} ({Short(version.Sha256)}, by {version.Author}) has no policy.version_created entry in the ledger: it was not made " +
                        "through the gateway (a row added to the store), yet a gateway would put it in force"));
                }

                continue;
            }

            if (recorded.Any(e => e.Hash == version.Sha256 && e.Actor == version.Author && e.Reason == version.Reason))
            {
                continue;
            }

            var entry = recorded[^1];
            var differences = new List<string>();
            Compare(differences, "sha256", version.Sha256, entry.Hash);
            Compare(differences, "author", version.Author, entry.Actor);
            Compare(differences, "reason", version.Reason, entry.Reason);
            problems.Add(new("altered_policy_version", entry.ChainId, entry.Seq, null,
                $"{name} disagrees with the ledger entry that recorded it: {string.Join("; ", differences)}: the store's row was altered"));
        }

        foreach (var (number, recorded) in _versions.Where(v => !stored.Contains(v.Key)).OrderBy(v => v.Key))
        {
            var entry = recorded[^1];
            problems.Add(new("altered_policy_version", entry.ChainId, entry.Seq, null,
                $"the ledger records policy version {number} ({Short(entry.Hash ?? "")}, by {entry.Actor}), but the store has no such version: it was deleted"));
        }

        if (store is IAlertStore alerts)
        {
            await CompareAlertsAsync(alerts, now, problems, cancellationToken);
        }

        if (store is not IRegistryStore registry)
        {
            return;
        }

        IReadOnlyList<AccessRequest> requests;
        try
        {
            requests = await registry.ListAccessRequestsAsync(null, cancellationToken);
        }
        catch (Exception ex) when (ex is System.Data.Common.DbException or InvalidDataException or FormatException or ArgumentException)
        {
            problems.Add(new("altered_access_request", "", null, null, $"the access requests cannot be read ({ex.Message.Split('\n')[0]}): their table was altered"));
            return;
        }

        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var request in requests)
        {
            seen.Add(request.Id);
            if (!_access.TryGetValue(request.Id, out var entries) || entries.RequestedBy is null)
            {
                if (request.RequestedAt < settled || request.RequestedAt > now)
                {
                    problems.Add(new("unrecorded_access_request", "", null, null,
                        $"access request {request.Id} ({request.Consumer}, by {request.RequestedBy}) has no access.requested entry in the ledger: " +
                        "it was not made through the gateway (a row added to the store)"));
                }

                continue;
            }

            var differences = new List<string>();
            Compare(differences, "requested_by", request.RequestedBy, entries.RequestedBy);
            Compare(differences, "tenant", request.Tenant, entries.Tenant);
            Compare(differences, "consumer and models", $"{request.Consumer} -> {string.Join(",", request.Models)}", entries.Asked);

            // A decision is stored and recorded a moment apart (a rejection stored first, an approval recorded first): one
            // younger than the settling time may be half-way.
            var decidedRecently = entries.LastAt >= settled || (request.DecidedAt is { } decided && decided >= settled);
            if (!decidedRecently)
            {
                var (status, decider, reason) = entries.RejectedBy is { } rejecter ? ("rejected", rejecter, entries.RejectionReason)
                    : entries.ApprovedBy is { } approver && !entries.Withdrawn
                        ? ("approved", approver, entries.ApprovalReason is { } r && r.StartsWith($"access request {request.Id} approved: ", StringComparison.Ordinal)
                            ? r[$"access request {request.Id} approved: ".Length..] : entries.ApprovalReason)
                    : ("pending", null, null);
                Compare(differences, "status", request.Status.ToString().ToLowerInvariant(), status);
                Compare(differences, "decided_by", request.DecidedBy, decider);
                if (status != "pending")
                {
                    Compare(differences, "decision_reason", request.DecisionReason, reason);
                }
            }

            if (differences.Count > 0)
            {
                problems.Add(new("altered_access_request", "", null, null,
                    $"access request {request.Id} disagrees with its ledger entries ({entries.Where}): {string.Join("; ", differences)}: the store's row was altered"));
            }
        }

        foreach (var (id, entries) in _access.Where(a => !seen.Contains(a.Key) && a.Value.RequestedBy is not null).OrderBy(a => a.Key, StringComparer.Ordinal))
        {
            problems.Add(new("altered_access_request", "", null, null,
                $"the ledger records access request {id} ({entries.Asked}, by {entries.RequestedBy}; {entries.Where}), but the store has no such request: it was deleted"));
        }
    }

    /// <summary>
    /// The alert an entry records: <c>alert.*</c> entries name it as their target, the automatic actions the gateway takes
    /// for one (<c>credential.suspended</c>, <c>consumer.throttled</c> by <c>custos:alerts</c>) at the start of their reason.
    /// </summary>
    private static string? AlertOf(string? action, string? actor, string? target, string? reason)
    {
        if (action is "alert.raised" or "alert.acknowledged" or "alert.escalated" or "alert.resolved")
        {
            return target is not null && target.StartsWith(AlertTarget, StringComparison.Ordinal) ? target[AlertTarget.Length..] : null;
        }

        if (action is "credential.suspended" or "consumer.throttled" && actor == AlertActor && reason is not null && reason.IndexOf(':', StringComparison.Ordinal) is > 0 and var colon
            && Alert.NumberOf(reason[..colon]) is not null)
        {
            return reason[..colon];
        }

        return null;
    }

    /// <summary>The actor the gateway's own alert actions are recorded under (the alert engine's).</summary>
    private const string AlertActor = "custos:alerts";

    /// <summary>
    /// Compares every stored alert with its ledger entries: an alert with no <c>alert.raised</c> entry, one whose status,
    /// acknowledger, resolver, escalation or automatic action the entries do not bear out, a row that does not read, and
    /// an alert the ledger records that the store no longer has.
    /// </summary>
    private async Task CompareAlertsAsync(IAlertStore store, DateTimeOffset now, List<VerificationProblem> problems, CancellationToken cancellationToken)
    {
        var settled = now - SettleAfter;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        await foreach (var row in store.ReadAlertsAsync(null, cancellationToken))
        {
            var id = Alert.IdOf(row.Number);
            seen.Add(id);
            _alerts.TryGetValue(id, out var entries);
            if (row.Alert is not { } alert)
            {
                problems.Add(new("altered_alert", "", null, null,
                    $"alert {id}'s stored row does not read as an alert ({row.Error}): it was altered in the store; the gateway and the reports leave it out"));
                continue;
            }

            if (entries?.Type is null)
            {
                if (alert.RaisedAt < settled || alert.RaisedAt > now)
                {
                    problems.Add(new("unrecorded_alert", "", null, null,
                        $"alert {id} ({alert.Signal.Type} on {alert.Signal.Subject}) has no alert.raised entry in the ledger: it was not raised by the gateway (a row added to the store)"));
                }

                continue;
            }

            var differences = new List<string>();
            Compare(differences, "type", alert.Signal.Type, entries.Type);

            // An alert is stored, then recorded, a moment apart (an acknowledgement, an escalation, an action): one that
            // changed within the settling time may be half-way.
            var changedRecently = entries.LastAt >= settled
                || new[] { alert.RaisedAt, alert.AcknowledgedAt, alert.EscalatedAt, alert.ResolvedAt }.Any(t => t >= settled && t <= now);
            if (!changedRecently)
            {
                var status = entries.ResolvedBy is not null ? AlertStatus.Resolved : entries.AcknowledgedBy is not null ? AlertStatus.Acknowledged : AlertStatus.Open;
                Compare(differences, "status", PolicyNames.Of(alert.Status), PolicyNames.Of(status));
                Compare(differences, "resolved_by", alert.ResolvedBy, entries.ResolvedBy);

                // A resume acknowledges as it resolves: its resolver is the acknowledger when nobody acknowledged before.
                var acknowledger = entries.AcknowledgedBy ?? (alert.AcknowledgedBy is not null && alert.AcknowledgedBy == entries.ResolvedBy ? entries.ResolvedBy : null);
                Compare(differences, "acknowledged_by", alert.AcknowledgedBy, acknowledger);
                Compare(differences, "escalation", alert.EscalatedAt is null ? "none" : "escalated", entries.Escalated ? "escalated" : "none");
                Compare(differences, "automatic action", alert.ActionPolicyVersion is null ? "none" : "taken", entries.Action is null ? "none" : "taken");
            }

            if (differences.Count > 0)
            {
                problems.Add(new("altered_alert", "", null, null,
                    $"alert {id} disagrees with its ledger entries ({entries.Where}): {string.Join("; ", differences)}: the store's row was altered"));
            }
        }

        foreach (var (id, entries) in _alerts.Where(a => !seen.Contains(a.Key) && a.Value.Type is not null).OrderBy(a => Alert.NumberOf(a.Key)))
        {
            problems.Add(new("altered_alert", "", null, null,
                $"the ledger records alert {id} ({entries.Type}; {entries.Where})" + (entries.Action is { } action ? $", which took an automatic action ({action})" : "") +
                ", but the store has no such alert: it was deleted"));
        }
    }

    private static VerificationProblem? HashProblem(StoredPolicyVersion version)
    {
        var actual = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(version.Canonical)));
        return actual == version.Sha256 ? null : new("altered_policy_version", "", null, null,
            $"policy version {version.Number}'s document hashes to {Short(actual)}, not to the {Short(version.Sha256)} stored with it: the document " +
            "was edited in the store (a gateway refuses to start on it, the admin API to show it)");
    }

    private static void Compare(List<string> differences, string field, string? stored, string? recorded)
    {
        if (!string.Equals(stored, recorded, StringComparison.Ordinal))
        {
            differences.Add($"its {field} is {Quote(stored)} in the store, {Quote(recorded)} in the ledger");
        }

        static string Quote(string? value) => value is null ? "null" : $"'{value}'";
    }

    private static string Short(string hash) => hash.Length > 12 ? hash[..12] : hash;
}
