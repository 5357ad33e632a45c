using System.Collections.Concurrent;
using Custos.Errors;
using Custos.Gateway.Policy;
using Custos.Ledger;
using Custos.Policy;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Primitives;

namespace Custos.Gateway.Pipeline;

/// <summary>
/// The upstream calls in flight on this node, so that a policy version that refuses their caller (a kill switch on its
/// consumer, service or tenant, a suspended or revoked credential) cuts them as it comes into force, instead of letting
/// them run to their end: "stop everything at once" is what an incident responder engaging a kill switch expects.
/// </summary>
/// <remarks>
/// A request pays one registration and one removal (a dictionary node); the calls are looked at only when a version
/// comes into force (<see cref="ActivePolicy.GetChangeToken"/>), on whichever path brought it (this node's admin API or
/// another node's announcement through the change feed).
/// </remarks>
internal sealed partial class InFlightCalls
{
    private readonly ConcurrentDictionary<UpstreamCall, byte> _calls = new();
    private readonly ActivePolicy _policy;
    private readonly ILogger _logger;

    /// <summary>Watches <paramref name="policy"/> for versions that refuse the callers of calls in flight.</summary>
    public InFlightCalls(ActivePolicy policy, ILogger logger)
    {
        _policy = policy;
        _logger = logger;
        ChangeToken.OnChange(policy.GetChangeToken, CutRefused);
    }

    /// <summary>The calls in flight now.</summary>
    public int Count => _calls.Count;

    /// <summary>
    /// Registers <paramref name="call"/>, admitted under <paramref name="admittedUnder"/>. A version that came into force
    /// since, and refuses its caller, cuts it at once (it found no call to cut when it came).
    /// </summary>
    public void Add(UpstreamCall call, PolicySnapshot admittedUnder)
    {
        _calls.TryAdd(call, 0);
        var current = _policy.Current;
        if (!ReferenceEquals(current, admittedUnder))
        {
            CutIfRefused(call, current);
        }
    }

    /// <summary>Forgets <paramref name="call"/>: its upstream exchange is over.</summary>
    public void Remove(UpstreamCall call) => _calls.TryRemove(call, out _);

    /// <summary>Cuts every call in flight whose caller the version now in force refuses.</summary>
    internal void CutRefused()
    {
        var snapshot = _policy.Current;
        foreach (var (call, _) in _calls)
        {
            CutIfRefused(call, snapshot);
        }
    }

    /// <summary>
    /// Cuts every call in flight for <paramref name="reason"/> (<see cref="Reasons.ShuttingDown"/>: the node is stopping
    /// and its drain time is over); returns how many it cut. A call already cut keeps its first cause.
    /// </summary>
    public int CutAll(ReasonCode reason)
    {
        var version = _policy.Current.Version;
        var cut = 0;
        foreach (var (call, _) in _calls)
        {
            if (call.CutBy == 0)
            {
                call.Cut(version, reason);
                Log.CutAll(_logger, call.Record.RequestId, reason.Code);
                cut++;
            }
        }

        return cut;
    }

    private void CutIfRefused(UpstreamCall call, PolicySnapshot snapshot)
    {
        if (call.CutBy == 0 && Refusal(snapshot, call.Record) is { } refusal)
        {
            call.Cut(snapshot.Version);
            Log.Cut(_logger, call.Record.RequestId, snapshot.Version, refusal.Code);
        }
    }

    /// <summary>
    /// Why <paramref name="snapshot"/> refuses the caller of <paramref name="record"/> by kill switch, suspension or
    /// revocation, or null when it does not. Other refusals (an expired key, a service left without owners, a model no
    /// longer entitled, a lower limit) apply from the next request: they are not an incident's stop.
    /// </summary>
    internal static ReasonCode? Refusal(PolicySnapshot snapshot, RequestRecord record)
    {
        if (record.CredentialId is not { } id)
        {
            return null;
        }

        if (!snapshot.TryGetCredentialById(id, out var credential))
        {
            return Reasons.CredentialRevoked; // gone from the policy: it authenticates nothing any more
        }

        if (credential.Status is CredentialStatus.Revoked)
        {
            return Reasons.CredentialRevoked;
        }

        if (credential.Status is CredentialStatus.Suspended)
        {
            return Reasons.CredentialSuspended;
        }

        var refusal = credential.Consumer.Refusal;
        return refusal == Reasons.ConsumerSuspended || refusal == Reasons.ServiceSuspended || refusal == Reasons.TenantSuspended ? refusal : null;
    }

    private static partial class Log
    {
        // In the data plane's log category (the logger is DataPlane's), after its own events 1-7.
        [LoggerMessage(EventId = 8, Level = LogLevel.Warning,
            Message = "Request {RequestId} cut while it ran: policy version {Version} refuses its caller ({Reason}).")]
        public static partial void Cut(ILogger logger, string requestId, long version, string reason);

        [LoggerMessage(EventId = 9, Level = LogLevel.Warning,
            Message = "Request {RequestId} cut while it ran: the gateway is stopping and its drain time is over ({Reason}).")]
        public static partial void CutAll(ILogger logger, string requestId, string reason);
    }
}
