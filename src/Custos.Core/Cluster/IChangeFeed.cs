namespace Custos.Cluster;

/// <summary>
/// How the nodes of one deployment tell each other about changes: a new policy version (which carries every
/// revocation, suspension and kill switch) is announced the moment it is stored, and each node announces that it is
/// alive. Announcements are best effort (pub/sub loses what is sent while a node is disconnected); the store stays
/// the truth, and every node also reconciles from it periodically. Redis is the implementation
/// (<c>Custos.Redis.RedisChangeFeed</c>).
/// </summary>
public interface IChangeFeed : IAsyncDisposable
{
    /// <summary>True while the feed can deliver announcements.</summary>
    bool IsConnected { get; }

    /// <summary>Raised when the connection comes back after a loss: announcements may have been missed, reconcile now.</summary>
    event Action? Restored;

    /// <summary>Starts delivering other nodes' policy announcements to <paramref name="onPolicyVersion"/> (version, announcing node).</summary>
    Task SubscribeAsync(Action<long, string> onPolicyVersion, CancellationToken cancellationToken = default);

    /// <summary>Tells every node that <paramref name="version"/> was stored by <paramref name="nodeId"/>.</summary>
    Task PublishPolicyVersionAsync(long version, string nodeId, CancellationToken cancellationToken = default);

    /// <summary>
    /// Records that <paramref name="version"/> is the latest stored: the feed's latest version
    /// (<see cref="GetLatestPolicyVersionAsync"/>) becomes it. Every node does this after each read of the store, so a
    /// lost announcement, or a node that stored a version and stopped before announcing it, is made good within one
    /// reconcile interval; and a value left from another store (one restored or replaced) is set right as soon.
    /// </summary>
    Task VouchPolicyVersionAsync(long version, CancellationToken cancellationToken = default);

    /// <summary>
    /// The policy version a node last vouched for (<see cref="VouchPolicyVersionAsync"/>), or null when the
    /// feed holds none (a new or emptied feed). With the store unreachable, this tells a node whether a version it
    /// has not seen was stored before the store went away.
    /// </summary>
    Task<long?> GetLatestPolicyVersionAsync(CancellationToken cancellationToken = default);

    /// <summary>
    /// Records that <paramref name="nodeId"/> is alive at <paramref name="now"/>; returns how many nodes are, and this
    /// node's place among them.
    /// </summary>
    Task<LiveNodes> HeartbeatAsync(string nodeId, DateTimeOffset now, CancellationToken cancellationToken = default);
}

/// <summary>The gateway nodes alive as the last heartbeat counted them.</summary>
/// <param name="Count">How many nodes are alive; at least 1.</param>
/// <param name="Rank">This node's place among them, 0 to <paramref name="Count"/> − 1, in the ordinal order of node ids,
/// so that every node that saw the same heartbeats holds a different one.</param>
public readonly record struct LiveNodes(int Count, int Rank);
