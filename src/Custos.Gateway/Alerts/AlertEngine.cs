using System.Globalization;
using System.Text.Json;
using System.Threading.Channels;
using Custos.Alerts;
using Custos.ControlPlane;
using Custos.Gateway.ControlPlane;
using Custos.Gateway.Hosting;
using Custos.Gateway.Ledger;
using Custos.Ledger;
using Custos.Policy;
using Microsoft.Extensions.Logging;

namespace Custos.Gateway.Alerts;

/// <summary>
/// Detection and response. Fed by the ledger (every stored request entry goes through the <see cref="AlertDetectors"/>
/// on the drain task), it turns signals into alerts on its own task: de-duplicates them by fingerprint while an alert is
/// open, stores them, takes the category's automatic action (suspend a credential, throttle a consumer) as a new policy
/// version with the rule and the evidence in the ledger, routes them to the owner roles responsible through the durable
/// outbox, and escalates those not acknowledged in time to the next contact and to security.
/// </summary>
public sealed partial class AlertEngine : ILedgerObserver, IAsyncDisposable
{
    /// <summary>The actor the gateway's own alert actions are recorded under.</summary>
    public const string Actor = "custos:alerts";

    private static readonly TimeSpan Requiet = TimeSpan.FromHours(1);
    private readonly CustosGateway _gateway;
    private readonly IAlertStore _store;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly AlertDetectors _detectors = new();
    private readonly List<AlertSignal> _scratch = [];
    private readonly Channel<AlertSignal> _signals = Channel.CreateUnbounded<AlertSignal>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Dictionary<string, Alert> _active = new(StringComparer.Ordinal); // by fingerprint: open or acknowledged
    private readonly SemaphoreSlim _lock = new(1, 1);
    private readonly CancellationTokenSource _stopping = new();
    private Task _loop = Task.CompletedTask;
    private Task _escalation = Task.CompletedTask;
    private long _signalled;
    private long _handled;

    private AlertEngine(CustosGateway gateway, IAlertStore store, TimeProvider time, ILogger logger)
    {
        _gateway = gateway;
        _store = store;
        _time = time;
        _logger = logger;
    }

    /// <summary>Raised after an alert is stored and routed (for metrics).</summary>
    public event Action<Alert>? Raised;

    /// <summary>Loads open alerts and the models consumers have used, then starts.</summary>
    public static async Task<AlertEngine> StartAsync(CustosGateway gateway, IAlertStore store, TimeProvider time, ILogger<AlertEngine> logger,
        CancellationToken cancellationToken = default)
    {
        var engine = new AlertEngine(gateway, store, time, logger);
        engine._detectors.SeedModelsUsed(await store.GetConsumerModelsAsync(cancellationToken));
        foreach (var status in new[] { AlertStatus.Acknowledged, AlertStatus.Open })
        {
            await foreach (var row in store.ReadAlertsAsync(status, cancellationToken))
            {
                // A row edited by hand so that it no longer reads is left out, not a gateway that cannot start; audit verify names it.
                if (row.Alert is { } alert)
                {
                    engine._active[alert.Signal.Fingerprint] = alert;
                }
                else
                {
                    Log.UnreadableAlert(logger, Alert.IdOf(row.Number), row.Error ?? "");
                }
            }
        }

        engine._loop = Task.Run(engine.HandleLoopAsync, CancellationToken.None);
        engine._escalation = Task.Run(engine.EscalationLoopAsync, CancellationToken.None);
        return engine;
    }

    /// <inheritdoc/>
    public void OnPersisted(IReadOnlyList<ChainedRecord> batch)
    {
        var snapshot = _gateway.Policy.Current;
        foreach (var chained in batch)
        {
            if (chained.Record is RequestRecord record)
            {
                _detectors.Observe(record, snapshot, _scratch);
            }
            else if (chained.Record is AdminRecord { Action: AdminSignIn.Action } refused)
            {
                _detectors.ObserveSignInDenied(refused, snapshot, _scratch);
            }
        }

        foreach (var signal in _scratch)
        {
            Interlocked.Increment(ref _signalled);
            _signals.Writer.TryWrite(signal);
        }

        _scratch.Clear();
    }

    /// <summary>Waits until every signal raised so far is handled (stored, acted on, queued for delivery).</summary>
    public async Task WaitIdleAsync(CancellationToken cancellationToken = default)
    {
        while (Interlocked.Read(ref _handled) < Interlocked.Read(ref _signalled))
        {
            await Task.Delay(10, cancellationToken);
        }
    }

    private async Task HandleLoopAsync()
    {
        await foreach (var signal in _signals.Reader.ReadAllAsync())
        {
            // A store that fails (locked, full) is retried with back-off: an alert is not given up on a hiccup.
            for (var attempt = 1; ; attempt++)
            {
                try
                {
                    await _lock.WaitAsync();
                    try
                    {
                        await HandleAsync(signal);
                    }
                    finally
                    {
                        _lock.Release();
                    }

                    break;
                }
                catch (Exception ex) when (attempt < 6)
                {
                    Log.HandleFailed(_logger, signal.Type, signal.Subject, attempt, ex);
                    await Task.Delay(TimeSpan.FromMilliseconds(250 * attempt * attempt));
                }
                catch (Exception ex)
                {
                    Log.HandleGaveUp(_logger, signal.Type, signal.Subject, signal.Summary, ex);
                    break;
                }
            }

            Interlocked.Increment(ref _handled);
        }
    }

    private async Task HandleAsync(AlertSignal signal)
    {
        var now = _time.GetUtcNow();
        if (await ActiveAsync(signal.Fingerprint) is { } existing && Absorbs(existing, signal.At, _gateway.Policy.Current.Document))
        {
            if (signal.Action == AlertAction.None || StateOf(existing, _gateway.Policy.Current.Document) != ActionState.Undone)
            {
                // The same thing again while its alert is open (or was acknowledged recently): one more occurrence, no new message.
                var repeated = existing with { Occurrences = existing.Occurrences + 1, LastSeenAt = signal.At };
                _active[signal.Fingerprint] = repeated;
                await _store.UpdateAlertAsync(repeated);
                return;
            }

            // Its action was undone by another route (the key resumed with `keys resume`, the limit edited) and the
            // behaviour goes on: that alert is closed, and a new one acts again. Counting occurrences instead left a
            // runaway agent running for as long as it kept the alert alive.
            var closed = existing with
            {
                Status = AlertStatus.Resolved,
                ResolvedBy = Actor,
                ResolvedAt = now,
                Note = "its action was undone outside the alert, and the behaviour went on: a new alert acted again",
            };
            await _store.UpdateAlertAsync(closed);
            _active.Remove(signal.Fingerprint);
            await _gateway.RecordAdminAsync(Actor, "alert.resolved", "alert:" + existing.Id, PolicyNames.Of(existing.Status), "resolved", closed.Note, signal.Tenant);
        }

        var alert = await _store.CreateAlertAsync(new Alert { Signal = signal, RaisedAt = now, LastSeenAt = signal.At });
        _active[signal.Fingerprint] = alert; // a retry after a later failure counts an occurrence, never a second alert
        // The alert.raised entry is queued, and the action taken, before that entry is durable: the ledger keeps the entries
        // in the order they were queued (raised, then the action's), and a suspension waited a commit (about 0.6 s under
        // load, six more requests of a runaway agent) for nothing.
        var raised = _gateway.RecordAdminAsync(Actor, "alert.raised", "alert:" + alert.Id, null, signal.Type,
            $"{signal.Summary}{RaisedBy(signal)} Evidence: {JsonSerializer.Serialize(signal.Evidence)}", signal.Tenant).AsTask();
        if (signal.Action != AlertAction.None)
        {
            try
            {
                alert = await ActAsync(alert);
            }
            finally
            {
                await raised;
            }
        }
        else
        {
            await raised;
        }

        var snapshot = _gateway.Policy.Current;
        var roles = signal.Service is null ? [] : AlertTypes.RolesFor(signal.Type, signal.Category);
        var includeSecurity = signal.Service is null || signal.Type == AlertTypes.AuthFailures;
        alert = await NotifyAsync(alert, snapshot, roles, includeSecurity, "alert.raised");
        await _store.UpdateAlertAsync(alert);
        _active[signal.Fingerprint] = alert;
        Log.Raised(_logger, alert.Id, signal.Type, signal.Subject, string.Join(", ", alert.Recipients));
        Raised?.Invoke(alert);
    }

    /// <summary>
    /// The request that raised a signal and the policy version it ran under, for the <c>alert.raised</c> entry: the alert's
    /// own row, which can be edited in the store, is not the only record of them.
    /// </summary>
    private static string RaisedBy(AlertSignal signal)
        => signal.RequestId is { } requestId
            ? $" Raised by request {requestId} (policy version {signal.PolicyVersion.ToString(CultureInfo.InvariantCulture)})."
            : "";

    /// <summary>
    /// The open or acknowledged alert with <paramref name="fingerprint"/> as the store has it now. With several nodes on one
    /// store, this node's copy may be stale (acknowledged or resolved through another node's admin API, whose acknowledgement
    /// a repeat written from the copy erased, reopening the alert), and the alert may be another node's (each node judges
    /// the traffic it serves, and each raised its own alert for the same thing). One or two reads per signal; the detectors raise a
    /// signal at most once a minute per key.
    /// </summary>
    private async Task<Alert?> ActiveAsync(string fingerprint)
    {
        if (_active.TryGetValue(fingerprint, out var known))
        {
            if (await _store.GetAlertAsync(known.Id) is { Status: not AlertStatus.Resolved } stored)
            {
                _active[fingerprint] = stored;
                return stored;
            }

            _active.Remove(fingerprint); // resolved since (by another node): a repeat is a new alert, unless another node raised one
        }

        if (await _store.FindActiveAlertAsync(fingerprint) is { } found)
        {
            _active[fingerprint] = found;
            return found;
        }

        return null;
    }

    /// <summary>
    /// Whether a signal at <paramref name="at"/> is one more occurrence of <paramref name="existing"/> (same fingerprint) rather
    /// than a new alert: while it is open, for an hour after it was acknowledged (measured from the acknowledgement, not from
    /// its last occurrence, which every repeat moves: an acknowledged alert that kept firing stayed muted for good), and while
    /// the automatic action it took is in force (the behaviour is being dealt with).
    /// </summary>
    private static bool Absorbs(Alert existing, DateTimeOffset at, PolicyDocument document)
        => existing.Status == AlertStatus.Open
            || (existing.Status == AlertStatus.Acknowledged && existing.AcknowledgedAt is { } acknowledged && at - acknowledged < Requiet)
            || (existing.Status == AlertStatus.Acknowledged && StateOf(existing, document) == ActionState.InForce);

    /// <summary>Takes the rule's automatic action as a new policy version, with the rule and the evidence in the ledger.</summary>
    private async Task<Alert> ActAsync(Alert alert)
    {
        var signal = alert.Signal;
        var evidence = JsonSerializer.Serialize(signal.Evidence);
        var reason = $"{alert.Id}: {signal.Rule}. {signal.Summary} Evidence: {evidence}";
        try
        {
            if (signal.Action == AlertAction.Suspend && signal.CredentialId is { } credentialId)
            {
                var (version, _, _) = await _gateway.ChangeAndRecordAsync(Actor, "credential.suspended", "credential:" + credentialId, reason,
                    doc => SetStatus(doc, credentialId, CredentialStatus.Active, CredentialStatus.Suspended), _ => signal.Tenant);
                return alert with { ActionTaken = $"suspended credential {credentialId}", ActionPolicyVersion = version.Number };
            }

            if (signal.Action == AlertAction.Throttle && signal.Consumer is { } consumerId && signal.ThrottleRequestsPerMinute is { } rpm)
            {
                long? before = null;
                var (version, _, _) = await _gateway.ChangeAndRecordAsync(Actor, "consumer.throttled", "consumer:" + consumerId, reason, doc =>
                {
                    before = doc.Consumers.FirstOrDefault(c => c.Id == consumerId)?.Limits.RequestsPerMinute;
                    return SetRequestsPerMinute(doc, consumerId, Math.Min(rpm, before ?? long.MaxValue));
                }, _ => signal.Tenant);
                return alert with { ActionTaken = $"throttled consumer {consumerId} to {rpm} requests per minute", ActionBefore = before, ActionPolicyVersion = version.Number };
            }
        }
        catch (Exception ex) when (ex is PolicyValidationException or InvalidOperationException)
        {
            Log.ActionFailed(_logger, alert.Id, signal.Action.ToString(), ex);
            return alert with { ActionTaken = $"failed: {ex.Message}" };
        }

        return alert;
    }

    /// <summary>
    /// The credential moved from <paramref name="from"/> to <paramref name="to"/>, with its status before and after for the
    /// ledger. A credential in any other state is left alone: a resume never brings back a key revoked meanwhile.
    /// </summary>
    private static (PolicyDocument, string?, string?) SetStatus(PolicyDocument doc, string credentialId, CredentialStatus from, CredentialStatus to)
    {
        var before = doc.Credentials.FirstOrDefault(c => c.Id == credentialId)?.Status;
        var changed = doc with { Credentials = [.. doc.Credentials.Select(c => c.Id == credentialId && c.Status == from ? c with { Status = to } : c)] };
        return (changed, before is { } b ? PolicyNames.Of(b) : null, PolicyNames.Of(before == from ? to : before ?? to));
    }

    /// <summary>The consumer's own requests-per-minute limit set to <paramref name="limit"/> (none when null), before and after for the ledger.</summary>
    private static (PolicyDocument, string?, string?) SetRequestsPerMinute(PolicyDocument doc, string consumerId, long? limit)
    {
        var before = doc.Consumers.FirstOrDefault(c => c.Id == consumerId)?.Limits.RequestsPerMinute;
        var changed = doc with { Consumers = [.. doc.Consumers.Select(c => c.Id == consumerId ? c with { Limits = c.Limits with { RequestsPerMinute = limit } } : c)] };
        return (changed, Text(before), Text(limit));
    }

    private static string Text(long? value) => value?.ToString(CultureInfo.InvariantCulture) ?? "none";

    /// <summary>Where an alert's automatic action stands in the policy in force.</summary>
    private enum ActionState
    {
        /// <summary>No action was taken (none asked for, or it failed).</summary>
        None,

        /// <summary>What the action set is still in force.</summary>
        InForce,

        /// <summary>Put back as it was before the action, by another route (an admin's resume, a policy edit).</summary>
        Undone,

        /// <summary>Changed since by something else: revoked, removed, or a limit set by hand.</summary>
        Overruled,
    }

    private static ActionState StateOf(Alert alert, PolicyDocument document)
    {
        var signal = alert.Signal;
        if (alert.ActionPolicyVersion is null)
        {
            return ActionState.None;
        }

        if (signal.Action == AlertAction.Suspend && signal.CredentialId is { } credentialId)
        {
            return document.Credentials.FirstOrDefault(c => c.Id == credentialId)?.Status switch
            {
                CredentialStatus.Suspended => ActionState.InForce,
                CredentialStatus.Active => ActionState.Undone,
                _ => ActionState.Overruled,
            };
        }

        if (signal.Action == AlertAction.Throttle && signal.Consumer is { } consumerId && document.Consumers.FirstOrDefault(c => c.Id == consumerId) is { } consumer)
        {
            var limit = consumer.Limits.RequestsPerMinute;
            return limit == Throttled(alert) ? ActionState.InForce : limit == alert.ActionBefore ? ActionState.Undone : ActionState.Overruled;
        }

        return ActionState.Overruled;
    }

    /// <summary>
    /// Why an alert's action cannot be undone: revoked or removed since (an entry saying "revoked -> revoked" would record
    /// an undo that did nothing), or a limit set by hand since the throttle (a tighter one, say, for the same incident),
    /// which putting back the limit from before the throttle would undo without a word.
    /// </summary>
    private static string Overruled(Alert alert, PolicyDocument document)
    {
        var signal = alert.Signal;
        return signal.Action == AlertAction.Suspend
            ? $"Alert {alert.Id} suspended credential {signal.CredentialId}, which is " +
                $"{(document.Credentials.FirstOrDefault(c => c.Id == signal.CredentialId)?.Status is { } status ? PolicyNames.Of(status) : "gone")} now: there is nothing to undo."
            : $"Alert {alert.Id} throttled consumer {signal.Consumer} to {Text(Throttled(alert))} requests per minute, but its limit is " +
                $"{Text(document.Consumers.FirstOrDefault(c => c.Id == signal.Consumer)?.Limits.RequestsPerMinute)} now, set since: lifting the throttle " +
                "would undo that change. Change the limit in the policy instead.";
    }

    /// <summary>The requests-per-minute limit a throttle set: its rate, or the consumer's own if that was lower already.</summary>
    private static long? Throttled(Alert alert)
        => alert.Signal.ThrottleRequestsPerMinute is { } rpm ? Math.Min(rpm, alert.ActionBefore ?? long.MaxValue) : null;

    /// <summary>Queues the alert for each role's contact (and security's), one message per distinct webhook or address.</summary>
    private async Task<Alert> NotifyAsync(Alert alert, PolicySnapshot snapshot, IReadOnlyList<string> roles, bool includeSecurity, string @event)
    {
        var signal = alert.Signal;
        var service = signal.Service is not null && snapshot.Services.TryGetValue(signal.Service, out var entry) ? entry : null;
        var rules = new AlertRules(snapshot.Document.Alerts);
        var targets = new List<(string Role, OwnerConfig Owner)>();
        foreach (var role in roles)
        {
            if (service is not null && OwnerRoles.Of(service.Owners, role) is { } owner)
            {
                targets.Add((role, owner));
            }
        }

        if (includeSecurity && rules.Security is { } security)
        {
            targets.Add((OwnerRoles.Security, security));
        }

        var now = _time.GetUtcNow();
        var queued = new List<Notification>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (role, owner) in targets)
        {
            foreach (var message in Custos.Gateway.ControlPlane.OwnerNotifier.MessagesTo(owner, role, now, Payload(alert, @event, role, owner), SlackText(alert, @event)))
            {
                if (seen.Add(message.Channel + " " + message.Target))
                {
                    queued.Add(message);
                }
            }
        }

        await _gateway.Notifier.EnqueueAsync(queued);

        // Each role and contact once: security, told when an authentication burst is raised, is told again when it escalates.
        return alert with
        {
            NotifiedRoles = [.. alert.NotifiedRoles.Concat(targets.Select(t => t.Role)).Distinct(StringComparer.Ordinal)],
            Recipients = [.. alert.Recipients.Concat(targets.Select(t => $"{t.Owner.Name} ({t.Role})")).Distinct(StringComparer.Ordinal)],
        };
    }

    private static string Payload(Alert alert, string @event, string role, OwnerConfig owner)
    {
        var signal = alert.Signal;
        return JsonSerializer.Serialize(new Dictionary<string, object?>
        {
            ["event"] = @event,
            ["alert_id"] = alert.Id,
            ["type"] = signal.Type,
            ["severity"] = PolicyNames.Of(signal.Severity),
            ["summary"] = signal.Summary,
            ["subject"] = signal.Subject,
            ["tenant"] = signal.Tenant,
            ["service"] = signal.Service,
            ["consumer"] = signal.Consumer,
            ["category"] = signal.Category is { } c ? PolicyNames.Of(c) : null,
            ["credential_id"] = signal.CredentialId,
            ["request_id"] = signal.RequestId,
            ["policy_version"] = signal.PolicyVersion,
            ["rule"] = signal.Rule,
            ["evidence"] = signal.Evidence,
            ["action_taken"] = alert.ActionTaken,
            ["occurred_at"] = LedgerTime.Format(signal.At),
            ["raised_at"] = LedgerTime.Format(alert.RaisedAt),
            ["owner_role"] = role,
            ["owner"] = owner.Name,
        });
    }

    /// <summary>
    /// The alert as Slack <c>mrkdwn</c>. Every field is escaped (<see cref="OwnerNotifier.SlackEscaped"/>): a summary names what callers
    /// sent (an agent run's header, a model, a source address), and <c>&lt;!channel&gt;</c> or <c>&lt;https://…|Acknowledge here&gt;</c>
    /// in one would have pinged the whole channel, or shown a link of the caller's in a message the gateway signs.
    /// </summary>
    internal static string SlackText(Alert alert, string @event)
    {
        var signal = alert.Signal;
        var head = @event == "alert.escalated" ? ":rotating_light: *Escalated*" : signal.Severity == AlertSeverity.Critical ? ":rotating_light:" : ":warning:";
        var action = alert.ActionTaken is null ? "" : $"\n*Action taken:* {OwnerNotifier.SlackEscaped(alert.ActionTaken)}";
        return $"{head} *{OwnerNotifier.SlackEscaped(signal.Type)}* `{OwnerNotifier.SlackEscaped(alert.Id)}` ({PolicyNames.Of(signal.Severity)}) — {OwnerNotifier.SlackEscaped(signal.Summary)}{action}\n"
            + $"Service: {OwnerNotifier.SlackEscaped(signal.Service ?? "none")} · Consumer: {OwnerNotifier.SlackEscaped(signal.Consumer ?? "unknown")} · Request: {OwnerNotifier.SlackEscaped(signal.RequestId)} · Policy v{signal.PolicyVersion}\n"
            + $"Acknowledge: `custos alerts ack {OwnerNotifier.SlackEscaped(alert.Id)}`";
    }

    /// <summary>Acknowledges an alert: it stops escalating. Recorded in the ledger under <paramref name="actor"/>.</summary>
    public async Task<Alert> AcknowledgeAsync(Alert alert, string actor, string? note, CancellationToken cancellationToken = default)
    {
        await _lock.WaitAsync(cancellationToken);
        try
        {
            var current = await _store.GetAlertAsync(alert.Id, cancellationToken) ?? alert;
            if (current.Status != AlertStatus.Open)
            {
                return current;
            }

            var acknowledged = current with { Status = AlertStatus.Acknowledged, AcknowledgedBy = actor, AcknowledgedAt = _time.GetUtcNow(), Note = note ?? current.Note };
            await _store.UpdateAlertAsync(acknowledged, cancellationToken);
            _active[acknowledged.Signal.Fingerprint] = acknowledged;
            await _gateway.RecordAdminAsync(actor, "alert.acknowledged", "alert:" + alert.Id, "open", "acknowledged", note, alert.Signal.Tenant);
            return acknowledged;
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>
    /// Undoes an alert's automatic action (resumes the suspended credential, lifts the throttle) as a new policy version
    /// by <paramref name="actor"/> with <paramref name="reason"/>, and resolves the alert.
    /// </summary>
    public async Task<(Alert Alert, long PolicyVersion)> ResumeAsync(Alert alert, string actor, string reason, CancellationToken cancellationToken = default)
    {
        await _lock.WaitAsync(cancellationToken);
        try
        {
            var current = await _store.GetAlertAsync(alert.Id, cancellationToken) ?? alert;
            var signal = current.Signal;
            if (current.Status == AlertStatus.Resolved)
            {
                throw new InvalidOperationException($"Alert {current.Id} is resolved already (by {current.ResolvedBy}).");
            }

            if (current.ActionPolicyVersion is null)
            {
                throw new InvalidOperationException($"Alert {current.Id} took no automatic action, so there is nothing to resume; acknowledge or resolve it instead.");
            }

            var why = $"{current.Id}: {reason}";
            var suspended = signal.Action == AlertAction.Suspend ? signal.CredentialId : null;
            var (action, target) = suspended is not null ? ("credential.resumed", "credential:" + suspended) : ("consumer.unthrottled", "consumer:" + signal.Consumer);

            // Undone already by another route (`keys resume`, a policy edit): nothing to change, but the alert is resolved,
            // not left open for good; its ledger entry says so, and no policy version is made.
            var undoneAlready = StateOf(current, _gateway.Policy.Current.Document) == ActionState.Undone;
            var version = _gateway.Policy.Current.Version;
            string? before = null, after = null;
            if (!undoneAlready)
            {
                PolicyVersion made;
                (made, before, after) = await _gateway.ChangeAndRecordAsync(actor, action, target, why, doc => StateOf(current, doc) == ActionState.InForce
                    ? suspended is not null
                        ? SetStatus(doc, suspended, CredentialStatus.Suspended, CredentialStatus.Active)
                        : SetRequestsPerMinute(doc, signal.Consumer!, current.ActionBefore)
                    : throw new InvalidOperationException(Overruled(current, doc)), _ => signal.Tenant, cancellationToken);
                version = made.Number;
            }
            var resolved = Resolved(current, actor, reason);
            await _store.UpdateAlertAsync(resolved, cancellationToken);
            _active.Remove(signal.Fingerprint);
            await _gateway.RecordAdminAsync(actor, "alert.resolved", "alert:" + current.Id, PolicyNames.Of(current.Status), "resolved",
                undoneAlready ? $"{reason} (its action was undone already)" : reason, signal.Tenant);

            // Like every other credential action, the undo is told to the service's technical owner.
            if (!undoneAlready && signal.Service is { } serviceId && _gateway.Policy.Current.Document.Services.FirstOrDefault(s => s.Id == serviceId) is { } service)
            {
                await _gateway.Notifier.NotifyAsync(service, "technical", action, actor, target, why,
                    new Dictionary<string, string?> { ["before"] = before, ["after"] = after, ["policy_version"] = Text(version), ["alert_id"] = current.Id },
                    CancellationToken.None);
            }

            return (resolved, version);
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>
    /// <paramref name="current"/> resolved now by <paramref name="actor"/>: resolving acknowledges it too, when no one had.
    /// </summary>
    private Alert Resolved(Alert current, string actor, string reason)
    {
        var now = _time.GetUtcNow();
        return current with
        {
            Status = AlertStatus.Resolved,
            ResolvedBy = actor,
            ResolvedAt = now,
            AcknowledgedBy = current.AcknowledgedBy ?? actor,
            AcknowledgedAt = current.AcknowledgedAt ?? now,
            Note = reason,
        };
    }

    /// <summary>
    /// Resolves an alert by <paramref name="actor"/> with <paramref name="reason"/>, undoing nothing: for an alert that took
    /// no automatic action (or whose action was undone or overruled since), which <see cref="ResumeAsync"/> cannot close.
    /// An alert whose action is still in force is refused: resolved, the suspension or throttle would stay with nobody
    /// looking at it; resume it, or change the policy (revoke the key, set the limit) and then resolve it.
    /// </summary>
    /// <exception cref="InvalidOperationException">Resolved already, or its action is still in force.</exception>
    public async Task<Alert> ResolveAsync(Alert alert, string actor, string reason, CancellationToken cancellationToken = default)
    {
        await _lock.WaitAsync(cancellationToken);
        try
        {
            var current = await _store.GetAlertAsync(alert.Id, cancellationToken) ?? alert;
            if (current.Status == AlertStatus.Resolved)
            {
                throw new InvalidOperationException($"Alert {current.Id} is resolved already (by {current.ResolvedBy}).");
            }

            if (StateOf(current, _gateway.Policy.Current.Document) == ActionState.InForce)
            {
                throw new InvalidOperationException($"Alert {current.Id} {current.ActionTaken}, which is still in force: undo it with custos alerts resume " +
                    $"{current.Id} --reason …, or change the policy (revoke the key, set the limit) and then resolve the alert.");
            }

            var resolved = Resolved(current, actor, reason);
            await _store.UpdateAlertAsync(resolved, cancellationToken);
            if (_active.TryGetValue(current.Signal.Fingerprint, out var active) && active.Id == current.Id)
            {
                _active.Remove(current.Signal.Fingerprint); // the next signal is a new alert
            }

            await _gateway.RecordAdminAsync(actor, "alert.resolved", "alert:" + current.Id, PolicyNames.Of(current.Status), "resolved", reason, current.Signal.Tenant);
            return resolved;
        }
        finally
        {
            _lock.Release();
        }
    }

    /// <summary>
    /// Escalates every open alert raised more than <c>alerts.escalate_after_minutes</c> before <paramref name="now"/> and not
    /// escalated yet: to the next owner on the ladder not told yet, and to security. Returns how many escalated.
    /// </summary>
    public async Task<int> EscalateDueAsync(DateTimeOffset now, CancellationToken cancellationToken = default)
    {
        await _lock.WaitAsync(cancellationToken);
        try
        {
            var snapshot = _gateway.Policy.Current;
            var after = new AlertRules(snapshot.Document.Alerts).EscalateAfter;
            foreach (var (fingerprint, _) in _active.Where(a => a.Value.Status == AlertStatus.Acknowledged && !Absorbs(a.Value, now, snapshot.Document)).ToList())
            {
                _active.Remove(fingerprint); // acknowledged over an hour ago, its action (if any) not in force: the next signal is a new alert anyway
            }

            var escalated = 0;
            foreach (var candidate in _active.Values.Where(a => a.Status == AlertStatus.Open && a.EscalatedAt is null && now - a.RaisedAt >= after).ToList())
            {
                // With several nodes, the alert may have been acknowledged or resolved through another node's admin API.
                var alert = await _store.GetAlertAsync(candidate.Id, cancellationToken) ?? candidate;
                if (alert.Status != AlertStatus.Open || alert.EscalatedAt is not null)
                {
                    _active[alert.Signal.Fingerprint] = alert;
                    continue;
                }

                var service = alert.Signal.Service is { } id && snapshot.Services.TryGetValue(id, out var entry) ? entry : null;
                var next = service is null ? null
                    : AlertTypes.EscalationLadder.FirstOrDefault(r => !alert.NotifiedRoles.Contains(r) && OwnerRoles.Of(service.Owners, r) is not null);
                var updated = await NotifyAsync(alert, snapshot, next is null ? [] : [next], includeSecurity: true, "alert.escalated");
                updated = updated with { EscalatedAt = now };
                await _store.UpdateAlertAsync(updated, cancellationToken);
                _active[alert.Signal.Fingerprint] = updated;
                await _gateway.RecordAdminAsync(Actor, "alert.escalated", "alert:" + alert.Id, string.Join(",", alert.NotifiedRoles), string.Join(",", updated.NotifiedRoles),
                    $"not acknowledged within {after.TotalMinutes:0} minute{(after.TotalMinutes == 1 ? "" : "s")}", alert.Signal.Tenant);
                Log.Escalated(_logger, alert.Id, next ?? "no further owner");
                escalated++;
            }

            return escalated;
        }
        finally
        {
            _lock.Release();
        }
    }

    private async Task EscalationLoopAsync()
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(5), _time);
        try
        {
            while (await timer.WaitForNextTickAsync(_stopping.Token))
            {
                try
                {
                    await EscalateDueAsync(_time.GetUtcNow(), _stopping.Token);
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    Log.EscalationFailed(_logger, ex);
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>Handles the signals already raised, then stops.</summary>
    public async ValueTask DisposeAsync()
    {
        _signals.Writer.TryComplete();
        await _stopping.CancelAsync();
        await _loop;
        await _escalation;
        _stopping.Dispose();
        _lock.Dispose();
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 60, Level = LogLevel.Warning, Message = "Alert {Id} raised: {Type} on {Subject}; told {Recipients}.")]
        public static partial void Raised(ILogger logger, string id, string type, string subject, string recipients);

        [LoggerMessage(EventId = 61, Level = LogLevel.Warning, Message = "Alert {Id} escalated to {Next} and security: not acknowledged in time.")]
        public static partial void Escalated(ILogger logger, string id, string next);

        [LoggerMessage(EventId = 62, Level = LogLevel.Warning, Message = "Handling a {Type} signal on {Subject} failed (attempt {Attempt}); retrying.")]
        public static partial void HandleFailed(ILogger logger, string type, string subject, int attempt, Exception exception);

        [LoggerMessage(EventId = 65, Level = LogLevel.Error, Message = "Gave up on a {Type} signal on {Subject} after repeated failures: {Summary}")]
        public static partial void HandleGaveUp(ILogger logger, string type, string subject, string summary, Exception exception);

        [LoggerMessage(EventId = 63, Level = LogLevel.Error, Message = "The automatic action of alert {Id} ({Action}) failed.")]
        public static partial void ActionFailed(ILogger logger, string id, string action, Exception exception);

        [LoggerMessage(EventId = 64, Level = LogLevel.Error, Message = "Escalating alerts failed; retrying.")]
        public static partial void EscalationFailed(ILogger logger, Exception exception);

        [LoggerMessage(EventId = 66, Level = LogLevel.Warning,
            Message = "Alert {Id} is left out: its stored row does not read as an alert ({Error}); it was altered in the store. custos audit verify names it.")]
        public static partial void UnreadableAlert(ILogger logger, string id, string error);
    }
}
