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

    /// <summary>Puts <paramref name="next"/> in force.</summary>
    public void Update(PolicySnapshot next)
    {
        Volatile.Write(ref _current, next);
        var previous = Interlocked.Exchange(ref _changed, new CancellationTokenSource());
        previous.Cancel();
        previous.Dispose();
    }
}
