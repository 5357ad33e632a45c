using System.Diagnostics;
using Custos.Cluster;
using Custos.Ledger;
using Custos.Policy;
using Microsoft.Extensions.Logging;

namespace Custos.Gateway.Policy;

/// <summary>How a node keeps its policy version in step with the others.</summary>
public sealed record PolicySyncOptions
{
    /// <summary>How often the store is read for a newer version while the change feed is connected. Default 5 s.</summary>
    public TimeSpan ReconcileInterval { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>How often the store is read while the change feed is down or absent (the backstop). Default 1 s.</summary>
    public TimeSpan FallbackInterval { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// Without a connected change feed, how long after the last successful read of the store this node still counts
    /// its version as confirmed. Default 5 s. With the feed connected, <see cref="FeedConfirmsFor"/> applies instead.
    /// </summary>
    public TimeSpan StaleAfter { get; init; } = TimeSpan.FromSeconds(5);

    /// <summary>How long one read of the store may take before it counts as failed. Default 2 s.</summary>
    public TimeSpan ReadTimeout { get; init; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// With the change feed connected (announcements would arrive) but unable to say which version is the latest (it
    /// holds none: a Redis emptied or restarted without persistence), how long a store read stays good. Default 60 s.
    /// While the feed holds the latest version the nodes vouched for, it confirms the version in force by itself.
    /// </summary>
    public TimeSpan FeedConfirmsFor { get; init; } = TimeSpan.FromSeconds(60);
}

/// <summary>
/// Keeps this node's policy in force equal to the latest version stored, when several nodes share one store:
/// versions stored elsewhere (a revocation through another node's admin API, an automatic suspension) arrive through
/// the change feed at once and through a periodic read of the store as the backstop. While neither can vouch for
/// the version in force — the feed is down and the store has not answered for <see cref="PolicySyncOptions.StaleAfter"/>,
/// or a newer version was announced but cannot be loaded — <see cref="ActivePolicy.IsUnconfirmed"/> is set and
/// requests follow the policy's revocation fail mode.
/// </summary>
public sealed partial class PolicySync : IAsyncDisposable
{
    private readonly IPolicyStore _store;
    private readonly ActivePolicy _policy;
    private readonly IChangeFeed? _feed;
    private readonly string _nodeId;
    private readonly Func<string, string?> _secrets;
    private readonly ILogger _logger;
    private readonly PolicySyncOptions _options;
    private readonly CancellationTokenSource _stop = new();
    private readonly SemaphoreSlim _wake = new(0, 1);
    private Task _loop = Task.CompletedTask;
    private long _announced;
    private long _lastRead; // Stopwatch ticks: staleness is judged by real time, whatever clock the gateway's decisions use
    private long _lastVouched; // Stopwatch ticks of the last time the feed said no version newer than ours was stored
    private bool _storeAnswers = true;
    private bool _feedKnowsNewer; // with the store away, the feed named a newer version than the one in force
    private LiveNodesBox _liveNodes = new(new Custos.Cluster.LiveNodes(1, 0));

    private PolicySync(IPolicyStore store, ActivePolicy policy, IChangeFeed? feed, string nodeId, Func<string, string?> secrets,
        ILogger logger, PolicySyncOptions options)
    {
        _store = store;
        _policy = policy;
        _feed = feed;
        _nodeId = nodeId;
        _secrets = secrets;
        _logger = logger;
        _options = options;
        _lastRead = Stopwatch.GetTimestamp();
    }

    /// <summary>Subscribes to <paramref name="feed"/> (when there is one) and starts reconciling.</summary>
    public static async Task<PolicySync> StartAsync(IPolicyStore store, ActivePolicy policy, IChangeFeed? feed, string nodeId, Func<string, string?> secrets,
        ILogger logger, PolicySyncOptions? options = null, CancellationToken cancellationToken = default)
    {
        var sync = new PolicySync(store, policy, feed, nodeId, secrets, logger, options ?? new PolicySyncOptions());
        if (feed is not null)
        {
            feed.Restored += sync.Wake;
            await feed.SubscribeAsync(sync.OnAnnounced, cancellationToken);
            sync._liveNodes = new LiveNodesBox(await feed.HeartbeatAsync(nodeId, DateTimeOffset.UtcNow, cancellationToken));
        }

        sync._loop = Task.Run(sync.RunAsync, CancellationToken.None);
        return sync;
    }

    /// <summary>Gateway nodes alive as the change feed last counted them (1 without a feed).</summary>
    public int LiveNodes => Live.Count;

    /// <summary>Gateway nodes alive and this node's rank among them, from one heartbeat (one node alone without a feed).</summary>
    public Custos.Cluster.LiveNodes Live => Volatile.Read(ref _liveNodes).Value;

    /// <summary>The newest version another node announced.</summary>
    public long Announced => Interlocked.Read(ref _announced);

    /// <summary>Tells the other nodes that this node stored <paramref name="version"/>. Never throws: the backstop read covers a lost announcement.</summary>
    public async Task AnnounceAsync(long version)
    {
        if (_feed is null)
        {
            return;
        }

        try
        {
            await _feed.PublishPolicyVersionAsync(version, _nodeId);
        }
        catch (Exception ex)
        {
            Log.AnnounceFailed(_logger, version, ex);
        }
    }

    private void OnAnnounced(long version, string nodeId)
    {
        if (nodeId == _nodeId)
        {
            return;
        }

        long seen;
        while (version > (seen = Interlocked.Read(ref _announced)) && Interlocked.CompareExchange(ref _announced, version, seen) != seen)
        {
        }

        if (version > _policy.Current.Version)
        {
            Wake();
        }
    }

    private void Wake()
    {
        try
        {
            _wake.Release();
        }
        catch (SemaphoreFullException)
        {
            // Already woken.
        }
    }

    private async Task RunAsync()
    {
        var token = _stop.Token;
        try
        {
            while (!token.IsCancellationRequested)
            {
                // The store read is the backstop of the feed; while either is down, read (or ask the feed) every second.
                var connected = _feed?.IsConnected == true;
                await _wake.WaitAsync(connected && _storeAnswers ? _options.ReconcileInterval : _options.FallbackInterval, token);
                await ReconcileAsync(token);
                if (_feed is not null)
                {
                    try
                    {
                        Volatile.Write(ref _liveNodes, new LiveNodesBox(await _feed.HeartbeatAsync(_nodeId, DateTimeOffset.UtcNow, token)));
                    }
                    catch (Exception ex) when (ex is not OperationCanceledException)
                    {
                        // The feed is down: keep the last count (rate limits share by it).
                    }
                }
            }
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
            // Stopping, whether waiting, reading the store or beating the heart.
        }
    }

    /// <summary>Reads the latest version from the store and puts it in force when it is newer; then judges whether the version in force is confirmed.</summary>
    public async Task ReconcileAsync(CancellationToken cancellationToken = default)
    {
        long? stored = null;
        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(_options.ReadTimeout);
            var latest = await _store.GetLatestAsync(timeout.Token);
            _lastRead = Stopwatch.GetTimestamp();
            _storeAnswers = true;
            _feedKnowsNewer = false;
            stored = latest?.Number;
            if (latest is not null && latest.Number > _policy.Current.Version)
            {
                var before = _policy.Current.Version;
                if (await _policy.UpdateAsync(PolicySnapshot.Compile(latest, _secrets), cancellationToken))
                {
                    Log.Loaded(_logger, latest.Number, before, latest.Author);
                }
            }
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            _storeAnswers = false;
            Log.ReadFailed(_logger, ex.Message);
        }

        await AskTheFeedAsync(stored, cancellationToken);
        Judge();
    }

    /// <summary>
    /// With the store read: vouches for its latest version in the feed. Without: asks the feed for the latest version
    /// the nodes vouched for. Nothing can be stored while the store is away, so when that is no newer than the version
    /// in force, this node still holds the latest, however long the outage; when it is newer (a version stored just
    /// before the outage whose announcement was lost), this node is behind and says so.
    /// </summary>
    private async Task AskTheFeedAsync(long? stored, CancellationToken cancellationToken)
    {
        if (_feed is null || !_feed.IsConnected || (_storeAnswers && stored is null))
        {
            return;
        }

        try
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(_options.ReadTimeout);
            if (stored is { } version)
            {
                await _feed.VouchPolicyVersionAsync(version, timeout.Token);
            }
            else if (await _feed.GetLatestPolicyVersionAsync(timeout.Token) is { } vouched)
            {
                // Not an announcement: only while the store is away (once it answers, it is the truth again).
                _feedKnowsNewer = vouched > _policy.Current.Version;
                if (!_feedKnowsNewer)
                {
                    _lastVouched = Stopwatch.GetTimestamp();
                }
            }
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            // The feed is going down too: its connection state says so, and the judgement follows.
        }
    }

    private void Judge()
    {
        var age = Stopwatch.GetElapsedTime(_lastRead);
        var behind = Announced > _policy.Current.Version || (_feedKnowsNewer && !_storeAnswers);
        var vouched = _lastVouched != 0 && Stopwatch.GetElapsedTime(_lastVouched) <= _options.StaleAfter;
        var confirmed = !behind && (age <= _options.StaleAfter || (_feed?.IsConnected == true && (vouched || age <= _options.FeedConfirmsFor)));
        if (_policy.IsUnconfirmed == confirmed)
        {
            _policy.IsUnconfirmed = !confirmed;
            if (confirmed)
            {
                Log.Confirmed(_logger, _policy.Current.Version);
            }
            else
            {
                Log.Unconfirmed(_logger, _policy.Current.Version, Announced, (long)age.TotalSeconds);
            }
        }
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        if (_feed is not null)
        {
            _feed.Restored -= Wake;
        }

        await _stop.CancelAsync();
        await _loop;
        _stop.Dispose();
        _wake.Dispose();
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 400, Level = LogLevel.Information, Message = "Policy version {Version} (by {Author}) put in force from the shared store; was {Before}.")]
        public static partial void Loaded(ILogger logger, long version, long before, string author);

        [LoggerMessage(EventId = 401, Level = LogLevel.Warning, Message = "Reading the latest policy version from the store failed: {Error}")]
        public static partial void ReadFailed(ILogger logger, string error);

        [LoggerMessage(EventId = 402, Level = LogLevel.Warning,
            Message = "Policy version {Version} can no longer be confirmed as the latest (announced {Announced}, last store read {Age} s ago): requests follow the revocation fail mode.")]
        public static partial void Unconfirmed(ILogger logger, long version, long announced, long age);

        [LoggerMessage(EventId = 403, Level = LogLevel.Information, Message = "Policy version {Version} confirmed as the latest again.")]
        public static partial void Confirmed(ILogger logger, long version);

        [LoggerMessage(EventId = 404, Level = LogLevel.Warning, Message = "Announcing policy version {Version} to the other nodes failed; they will read it from the store.")]
        public static partial void AnnounceFailed(ILogger logger, long version, Exception exception);
    }

    /// <summary>The count and the rank of one heartbeat, read together.</summary>
    private sealed record LiveNodesBox(Custos.Cluster.LiveNodes Value);
}
