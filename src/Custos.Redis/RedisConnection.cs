using StackExchange.Redis;

namespace Custos.Redis;

/// <summary>Connects to Redis the way a gateway node needs it: failing fast while it is down, reconnecting quickly once it is back.</summary>
public static class RedisConnection
{
    /// <summary>
    /// Connects with <paramref name="configuration"/> (a StackExchange.Redis configuration string, for example
    /// <c>127.0.0.1:6379</c> or <c>redis.internal:6380,ssl=true,password=…</c>). Requests never queue behind a lost
    /// connection (<see cref="BacklogPolicy.FailFast"/>: the policy's fail modes decide at once instead), commands time
    /// out after a second, and reconnection is tried every half second, so normal enforcement resumes within about a
    /// second of Redis answering again. Throws <see cref="RedisConnectionException"/> when Redis cannot be reached now.
    /// </summary>
    public static async Task<ConnectionMultiplexer> ConnectAsync(string configuration, TextWriter? log = null)
    {
        var options = ConfigurationOptions.Parse(configuration);
        options.BacklogPolicy = BacklogPolicy.FailFast;
        options.AsyncTimeout = 1000;
        options.SyncTimeout = 1000;
        options.ConnectTimeout = 2000;
        options.ReconnectRetryPolicy = new LinearRetry(500);
        options.HeartbeatInterval = TimeSpan.FromMilliseconds(500);
        return await ConnectionMultiplexer.ConnectAsync(options, log);
    }
}
