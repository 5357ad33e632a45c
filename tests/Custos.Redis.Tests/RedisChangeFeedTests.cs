using Custos.Cluster;

namespace Custos.Redis.Tests;

/// <summary>The heartbeats of the change feed against a real redis-server.</summary>
[Collection(RedisCollection.Name)]
public sealed class RedisChangeFeedTests(RedisServerFixture redis)
{
    [Fact]
    public async Task Heartbeat_ThreeNodes_CountsThemAndRanksEachByItsId()
    {
        await using var feed = new RedisChangeFeed(redis.Connection, $"test-{Guid.NewGuid():N}:");
        var now = DateTimeOffset.UtcNow;

        await feed.HeartbeatAsync("node-c", now);
        await feed.HeartbeatAsync("node-a", now);
        var b = await feed.HeartbeatAsync("node-b", now);
        var c = await feed.HeartbeatAsync("node-c", now.AddSeconds(1));
        var a = await feed.HeartbeatAsync("node-a", now.AddSeconds(2));

        Assert.Equal([new LiveNodes(3, 0), new LiveNodes(3, 1), new LiveNodes(3, 2)], [a, b, c]); // by id, not by last beat
    }
}
