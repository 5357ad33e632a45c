using Custos.Policy;
using Microsoft.Extensions.Primitives;

namespace Custos.Gateway.Policy;

/// <summary>
/// The policy version in force: an immutable <see cref="PolicySnapshot"/> read without locks by every
/// request, swapped atomically as a whole, with a change signal (as YARP's <c>IProxyConfig</c>).
/// A request reads <see cref="Current"/> once and uses that snapshot from start to end, so no request
/// is ever evaluated half under one version and half under another.
/// </summary>
public sealed class ActivePolicy
{
    private PolicySnapshot _current;
    private CancellationTokenSource _changed = new();

    /// <summary>Starts with <paramref name="initial"/>.</summary>
    public ActivePolicy(PolicySnapshot initial) => _current = initial;

    /// <summary>The snapshot in force now.</summary>
    public PolicySnapshot Current => Volatile.Read(ref _current);

    /// <summary>Fires once when the next snapshot replaces the current one.</summary>
    public IChangeToken GetChangeToken() => new CancellationChangeToken(Volatile.Read(ref _changed).Token);

    /// <summary>
    /// True while this node cannot confirm that <see cref="Current"/> is the latest version stored (set by
    /// <see cref="PolicySync"/>): requests then follow the revocation fail mode the policy declares.
    /// </summary>
    public bool IsUnconfirmed
    {
        get => Volatile.Read(ref _unconfirmed);
        internal set => Volatile.Write(ref _unconfirmed, value);
    }

    private bool _unconfirmed;
    private readonly Lock _updateLock = new();

    /// <summary>
    /// Runs before a newer snapshot is put in force by <see cref="UpdateAsync"/>: the gateway starts the counters the
    /// snapshot brings (in-process, or shared in Redis) from what the ledger holds. Must not throw.
    /// </summary>
    internal Func<PolicySnapshot, CancellationToken, Task>? Preparing { get; set; }

    /// <summary>
    /// As <see cref="Update"/>, after <see cref="Preparing"/> has made ready for <paramref name="next"/> when it is newer
    /// than the version in force.
    /// </summary>
    public async Task<bool> UpdateAsync(PolicySnapshot next, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(next);
        if (next.Version <= Current.Version)
        {
            return false;
        }

        if (Preparing is { } preparing)
        {
            await preparing(next, cancellationToken);
        }

        return Update(next);
    }

    /// <summary>
    /// Puts <paramref name="next"/> in force, unless a version at least as new already is (two paths can deliver
    /// versions: this node's own changes and other nodes' announcements; neither may step back). Returns whether it did.
    /// </summary>
    public bool Update(PolicySnapshot next)
    {
        CancellationTokenSource previous;
        lock (_updateLock)
        {
            if (next.Version <= _current.Version)
            {
                return false;
            }

            Volatile.Write(ref _current, next);
            previous = Interlocked.Exchange(ref _changed, new CancellationTokenSource());
        }

        previous.Cancel();
        previous.Dispose();
        return true;
    }
}
