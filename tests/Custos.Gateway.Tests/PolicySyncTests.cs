using Custos.Cluster;
using Custos.Gateway.Policy;
using Custos.Ledger;
using Custos.Policy;
using Custos.Testing;
using Microsoft.Extensions.Logging.Abstractions;

namespace Custos.Gateway.Tests;

/// <summary>How a node keeps its policy version in step with a shared store, and when it stops vouching for it.</summary>
public sealed class PolicySyncTests
{
    private static readonly DateTimeOffset T0 = new(2026, 11, 30, 9, 0, 0, TimeSpan.Zero);

    private static PolicyDocument Document(string tenant) => PolicyYaml.Read($$"""
        tenants:
          - id: {{tenant}}
            providers: [{ id: p, type: openai, base_url: http://127.0.0.1:1/v1 }]
            models: [{ name: m, provider: p }]
        """).Document!;

    private static PolicyVersion Version(long number, string tenant = "acme")
    {
        var document = Document(tenant);
        return new PolicyVersion(number, PolicyVersion.HashOf(document), "test", "test", T0, document);
    }

    /// <summary>A policy store that holds versions in memory and can be made unreachable.</summary>
    private sealed class FakeStore : IPolicyStore
    {
        public List<PolicyVersion> Versions { get; } = [];

        public bool Down { get; set; }

        /// <summary>Reads wait until cancelled, as a store read in flight when the node stops.</summary>
        public bool Hangs { get; set; }

        public TaskCompletionSource ReadStarted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public async Task<PolicyVersion?> GetLatestAsync(CancellationToken cancellationToken = default)
        {
            if (Hangs)
            {
                ReadStarted.TrySetResult();
                await Task.Delay(Timeout.Infinite, cancellationToken);
            }

            return Down ? throw new TimeoutException("store unreachable") : Versions.LastOrDefault();
        }

        public Task<(PolicyVersion Version, bool Created)> SaveAsync(PolicyDocument document, string author, string reason, DateTimeOffset now, string? source,
            long? basedOn = null, CancellationToken cancellationToken = default) => throw new NotSupportedException();

        public Task<IReadOnlyList<PolicyVersion>> GetHistoryAsync(CancellationToken cancellationToken = default)
            => Task.FromResult<IReadOnlyList<PolicyVersion>>(Versions);
    }

    /// <summary>A change feed that delivers what the test announces.</summary>
    private sealed class FakeFeed : IChangeFeed
    {
        private Action<long, string>? _handler;

        public bool IsConnected { get; set; } = true;

        public List<long> Published { get; } = [];

        /// <summary>The latest version the nodes vouched for; null as in an emptied Redis.</summary>
        public long? Latest { get; set; }

        public event Action? Restored;

        public void Announce(long version, string node) => _handler?.Invoke(version, node);

        public void Restore() => Restored?.Invoke();

        public Task SubscribeAsync(Action<long, string> onPolicyVersion, CancellationToken cancellationToken = default)
        {
            _handler = onPolicyVersion;
            return Task.CompletedTask;
        }

        public Task PublishPolicyVersionAsync(long version, string nodeId, CancellationToken cancellationToken = default)
        {
            Published.Add(version);
            return Task.CompletedTask;
        }

        public Task VouchPolicyVersionAsync(long version, CancellationToken cancellationToken = default)
        {
            Latest = version;
            return Task.CompletedTask;
        }

        public Task<long?> GetLatestPolicyVersionAsync(CancellationToken cancellationToken = default) => Task.FromResult(Latest);

        public Task<LiveNodes> HeartbeatAsync(string nodeId, DateTimeOffset now, CancellationToken cancellationToken = default) => Task.FromResult(new LiveNodes(3, 1));

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }

    /// <summary>A store holding version 1, and that version in force.</summary>
    private static (FakeStore Store, ActivePolicy Policy) Started()
    {
        var store = new FakeStore();
        store.Versions.Add(Version(1));
        return (store, new ActivePolicy(PolicySnapshot.Compile(store.Versions[0], _ => null)));
    }

    private static readonly PolicySyncOptions Fast = new()
    {
        ReconcileInterval = TimeSpan.FromSeconds(30), // only announcements (or the test) trigger reads
        FallbackInterval = TimeSpan.FromMilliseconds(50),
        StaleAfter = TimeSpan.FromMilliseconds(300),
        FeedConfirmsFor = TimeSpan.FromSeconds(60),
    };

    [Fact]
    public async Task AVersionAnnouncedByAnotherNode_IsReadFromTheStoreAndPutInForce()
    {
        var (store, policy) = Started();
        var feed = new FakeFeed();
        await using var sync = await PolicySync.StartAsync(store, policy, feed, "node-b", _ => null, NullLogger.Instance, Fast);

        store.Versions.Add(Version(2, "globex"));
        feed.Announce(2, "node-a");

        await Eventually.TrueAsync(() => policy.Current.Version == 2, "version 2 in force");
        Assert.Contains(policy.Current.Tenants, t => t.Id == "globex");
        Assert.False(policy.IsUnconfirmed);
        Assert.Equal(3, sync.LiveNodes);
        Assert.Equal(new LiveNodes(3, 1), sync.Live); // count and rank from the same heartbeat
    }

    [Fact]
    public async Task ANewerVersionThatCannotBeLoaded_MakesTheVersionInForceUnconfirmed_UntilItIs()
    {
        var (store, policy) = Started();
        var feed = new FakeFeed();
        await using var sync = await PolicySync.StartAsync(store, policy, feed, "node-b", _ => null, NullLogger.Instance, Fast);

        store.Down = true;
        feed.Announce(2, "node-a"); // a revocation, say, that this node cannot read
        await Eventually.TrueAsync(() => policy.IsUnconfirmed, "unconfirmed once a newer version is known and cannot be loaded");

        store.Versions.Add(Version(2, "globex"));
        store.Down = false;
        await sync.ReconcileAsync();
        Assert.Equal(2, policy.Current.Version);
        Assert.False(policy.IsUnconfirmed);
    }

    [Fact]
    public async Task WithTheFeedDown_TheStoreConfirms_AndWithBothDown_TheVersionIsUnconfirmedAfterStaleAfter()
    {
        var (store, policy) = Started();
        var feed = new FakeFeed { IsConnected = false };
        await using var sync = await PolicySync.StartAsync(store, policy, feed, "node-b", _ => null, NullLogger.Instance, Fast);

        await Task.Delay(600); // twice StaleAfter: the periodic reads keep confirming
        Assert.False(policy.IsUnconfirmed);

        store.Down = true;
        await Eventually.TrueAsync(() => policy.IsUnconfirmed, "unconfirmed once neither the feed nor the store can vouch");

        store.Down = false;
        await Eventually.TrueAsync(() => !policy.IsUnconfirmed, "confirmed again once the store answers");
    }

    [Fact]
    public async Task WithOnlyTheStoreDown_TheConnectedFeedKeepsTheVersionConfirmed()
    {
        var (store, policy) = Started();
        var feed = new FakeFeed();
        await using var sync = await PolicySync.StartAsync(store, policy, feed, "node-b", _ => null, NullLogger.Instance, Fast);

        store.Down = true;
        await Task.Delay(500);
        await sync.ReconcileAsync();
        Assert.False(policy.IsUnconfirmed); // no version can be stored without the store, and none was announced
    }

    [Fact]
    public async Task WithOnlyTheStoreDown_TheFeedsVouchedVersion_KeepsTheVersionConfirmed_HoweverLongTheOutage()
    {
        // A PostgreSQL outage longer than FeedConfirmsFor took every node out (503 policy_unconfirmed on all of them),
        // though nothing can be stored without the store: the feed's vouched version says no newer one was stored.
        var (store, policy) = Started();
        var feed = new FakeFeed();
        await using var sync = await PolicySync.StartAsync(store, policy, feed, "node-b", _ => null, NullLogger.Instance,
            Fast with { FeedConfirmsFor = TimeSpan.FromMilliseconds(300) });
        await sync.ReconcileAsync();
        Assert.Equal(1, feed.Latest); // each read of the store vouches for its latest version

        store.Down = true;
        for (var i = 0; i < 4; i++)
        {
            await Task.Delay(250); // past FeedConfirmsFor, and past StaleAfter
            await sync.ReconcileAsync();
            Assert.False(policy.IsUnconfirmed, $"round {i}");
        }

        // A feed that holds no version (an emptied Redis) vouches for nothing: FeedConfirmsFor bounds it as before.
        feed.Latest = null;
        await Task.Delay(400);
        await sync.ReconcileAsync();
        Assert.True(policy.IsUnconfirmed);

        // A version stored just before the outage whose announcement was lost (another node read it and vouched): this
        // node is behind, and says so; once the store answers, it is the truth again.
        feed.Latest = 2;
        await sync.ReconcileAsync();
        Assert.True(policy.IsUnconfirmed);
        Assert.Equal(0, sync.Announced); // not an announcement: nothing sticks once the store answers

        store.Down = false;
        await sync.ReconcileAsync();
        Assert.False(policy.IsUnconfirmed);
        Assert.Equal(1, feed.Latest); // and the feed holds the store's latest again
    }

    [Fact]
    public void AnOlderVersion_NeverReplacesANewerOne()
    {
        var policy = new ActivePolicy(PolicySnapshot.Compile(Version(5), _ => null));
        Assert.False(policy.Update(PolicySnapshot.Compile(Version(4, "globex"), _ => null)));
        Assert.Equal(5, policy.Current.Version);
        Assert.True(policy.Update(PolicySnapshot.Compile(Version(6, "globex"), _ => null)));
    }

    [Fact]
    public async Task Stopping_WhileAStoreReadIsInFlight_EndsQuietly()
    {
        // A node told to stop while its reconcile read waits on the store: the read is cancelled, and stopping does not
        // fail with the cancellation (a gateway stopped by SIGTERM at that moment exited with 130 instead of 0).
        var (store, policy) = Started();
        store.Hangs = true;
        var sync = await PolicySync.StartAsync(store, policy, feed: null, "node-b", _ => null, NullLogger.Instance,
            Fast with { ReadTimeout = TimeSpan.FromMinutes(5) });
        await store.ReadStarted.Task.WaitAsync(TimeSpan.FromSeconds(10));

        await sync.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10));
    }
}
