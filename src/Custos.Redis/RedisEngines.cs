using Custos.Cluster;
using Custos.Controls;
using StackExchange.Redis;

namespace Custos.Redis;

/// <summary>
/// What a gateway node takes from Redis when <c>server.counters: redis</c>: the shared counters and the policy change
/// feed, over one connection. Callers see only the engines' interfaces, so a gateway that does not use Redis never loads
/// the client library (about 1 MB of code) at all.
/// </summary>
public sealed class RedisEngines : IDisposable
{
    private readonly ConnectionMultiplexer _connection;

    private RedisEngines(ConnectionMultiplexer connection, TimeProvider time)
    {
        _connection = connection;
        Counters = new RedisCounterStore(connection.GetDatabase(), time);
        ChangeFeed = new RedisChangeFeed(connection);
    }

    /// <summary>The counters every node reserves against.</summary>
    public ICounterStore Counters { get; }

    /// <summary>The feed that tells every node of a new policy version.</summary>
    public IChangeFeed ChangeFeed { get; }

    /// <summary>
    /// Connects with <paramref name="configuration"/> (see <see cref="RedisConnection.ConnectAsync"/>). Throws
    /// <see cref="FormatException"/> when the string is not a Redis connection string (naming the option, never a
    /// value: the string may hold a password), and <see cref="InvalidOperationException"/>, with Redis's first line of
    /// explanation, when Redis cannot be reached now.
    /// </summary>
    public static async Task<RedisEngines> ConnectAsync(string configuration, TimeProvider time)
    {
        try
        {
            return new RedisEngines(await RedisConnection.ConnectAsync(configuration), time);
        }
        catch (ArgumentException ex)
        {
            throw new FormatException($"its option '{ex.ParamName}' is not one StackExchange.Redis accepts, or its value is not valid");
        }
        catch (RedisConnectionException ex)
        {
            // Its first line, without the client's advice to keep retrying (abortConnect=false): the gateway fails fast
            // on purpose (docs/deploy.md). The endpoints are named; the rest of the string may hold a password.
            var message = ex.Message.Split('\n')[0];
            var advice = message.IndexOf(" To allow this multiplexer", StringComparison.Ordinal);
            var endpoints = string.Join(", ", ConfigurationOptions.Parse(configuration).EndPoints.Select(e => e is System.Net.DnsEndPoint dns ? $"{dns.Host}:{dns.Port}" : e.ToString()));
            throw new InvalidOperationException($"{endpoints}: {(advice > 0 ? message[..advice] : message).TrimEnd('.', ' ')}", ex);
        }
    }

    /// <inheritdoc />
    public void Dispose() => _connection.Dispose();
}
