using System.Globalization;
using Custos.Cluster;
using StackExchange.Redis;

namespace Custos.Redis;

/// <summary>
/// The change feed over Redis pub/sub: policy versions are announced on the channel <c>{prefix}changes</c> as
/// <c>policy:VERSION:NODE</c>, and each node's heartbeat is a member of the sorted set <c>{prefix}nodes</c> scored by
/// its last beat (members older than <see cref="NodeTimeout"/> are dropped when anyone beats). The highest policy
/// version the nodes have read from the store is kept in <c>{prefix}policy_version</c>.
/// </summary>
public sealed class RedisChangeFeed : IChangeFeed
{
    private readonly IConnectionMultiplexer _connection;
    private readonly RedisChannel _channel;
    private readonly RedisKey _nodes;
    private readonly RedisKey _latest;


    /// <summary>Uses <paramref name="connection"/>; keys and the channel start with <paramref name="keyPrefix"/>.</summary>
    public RedisChangeFeed(IConnectionMultiplexer connection, string keyPrefix = "custos:")
    {
        _connection = connection;
        _channel = RedisChannel.Literal(keyPrefix + "changes");
        _nodes = keyPrefix + "nodes";
        _latest = keyPrefix + "policy_version";
        _connection.ConnectionRestored += OnRestored;
    }

    /// <summary>A node that has not beaten for this long no longer counts as alive. Default 15 s.</summary>
    public TimeSpan NodeTimeout { get; init; } = TimeSpan.FromSeconds(15);

    /// <inheritdoc/>
    public bool IsConnected => _connection.IsConnected;

    /// <inheritdoc/>
    public event Action? Restored;

    private void OnRestored(object? sender, ConnectionFailedEventArgs e)
    {
        if (e.ConnectionType == ConnectionType.Subscription)
        {
            Restored?.Invoke();
        }
    }

    /// <inheritdoc/>
    public async Task SubscribeAsync(Action<long, string> onPolicyVersion, CancellationToken cancellationToken = default)
    {
        var subscriber = _connection.GetSubscriber();
        await subscriber.SubscribeAsync(_channel, (_, message) =>
        {
            // policy:VERSION:NODE; anything else (a newer Custos's announcement) is ignored.
            var text = (string?)message;
            if (text is null || !text.StartsWith("policy:", StringComparison.Ordinal))
            {
                return;
            }

            var rest = text.AsSpan("policy:".Length);
            var colon = rest.IndexOf(':');
            if (colon > 0 && long.TryParse(rest[..colon], NumberStyles.None, CultureInfo.InvariantCulture, out var version))
            {
                onPolicyVersion(version, rest[(colon + 1)..].ToString());
            }
        });
    }

    /// <inheritdoc/>
    public Task PublishPolicyVersionAsync(long version, string nodeId, CancellationToken cancellationToken = default)
        => _connection.GetSubscriber().PublishAsync(_channel, string.Create(CultureInfo.InvariantCulture, $"policy:{version}:{nodeId}"));

    /// <inheritdoc/>
    public Task VouchPolicyVersionAsync(long version, CancellationToken cancellationToken = default)
        => _connection.GetDatabase().StringSetAsync(_latest, version).WaitAsync(cancellationToken);

    /// <inheritdoc/>
    public async Task<long?> GetLatestPolicyVersionAsync(CancellationToken cancellationToken = default)
    {
        var value = await _connection.GetDatabase().StringGetAsync(_latest).WaitAsync(cancellationToken);
        return value.TryParse(out long version) ? version : null;
    }

    /// <inheritdoc/>
    public async Task<LiveNodes> HeartbeatAsync(string nodeId, DateTimeOffset now, CancellationToken cancellationToken = default)
    {
        var db = _connection.GetDatabase();
        var nowMs = now.ToUnixTimeMilliseconds();
        var batch = db.CreateBatch();
        var add = batch.SortedSetAddAsync(_nodes, nodeId, nowMs);
        var trim = batch.SortedSetRemoveRangeByScoreAsync(_nodes, double.NegativeInfinity, nowMs - NodeTimeout.TotalMilliseconds);
        var members = batch.SortedSetRangeByRankAsync(_nodes);
        batch.Execute();
        await Task.WhenAll(add, trim, members);
        var nodes = Array.ConvertAll(await members, member => member.ToString());
        Array.Sort(nodes, StringComparer.Ordinal);
        return new LiveNodes(Math.Max(1, nodes.Length), Math.Max(0, Array.IndexOf(nodes, nodeId)));
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        _connection.ConnectionRestored -= OnRestored;
        try
        {
            await _connection.GetSubscriber().UnsubscribeAsync(_channel);
        }
        catch (RedisException)
        {
            // Disconnected: nothing to undo.
        }
    }
}
