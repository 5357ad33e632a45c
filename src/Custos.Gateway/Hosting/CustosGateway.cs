using System.Diagnostics;
using System.Net;
using System.Runtime;
using System.Security.Cryptography.X509Certificates;
using Custos.Controls;
using Custos.Gateway.Alerts;
using Custos.Gateway.ControlPlane;
using Custos.Gateway.Identity;
using Custos.Gateway.Ledger;
using Custos.Gateway.Pipeline;
using Custos.Gateway.Policy;
using Custos.Gateway.Telemetry;
using Custos.Ledger;
using Custos.Metering;
using Custos.Policy;
using Custos.Storage;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.HttpOverrides;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Yarp.ReverseProxy.Forwarder;

namespace Custos.Gateway.Hosting;

/// <summary>How to run a gateway.</summary>
public sealed record CustosGatewayOptions
{
    /// <summary>Required. The policy to put in force; stored as a new version when it differs from the latest.</summary>
    public required PolicyDocument Policy { get; init; }

    /// <summary>The policy's source text (YAML), kept beside the version for people to read.</summary>
    public string? PolicySource { get; init; }

    /// <summary>Who is applying the policy. Default <c>system:startup</c>.</summary>
    public string PolicyAuthor { get; init; } = "system:startup";

    /// <summary>Why. Default <c>loaded at startup</c>.</summary>
    public string PolicyReason { get; init; } = "loaded at startup";

    /// <summary>Required. Folder of the embedded store (<c>custos.db</c>).</summary>
    public required string DataDirectory { get; init; }

    /// <summary>Data-plane listen URL. Default <c>http://127.0.0.1:8080</c>; port 0 picks a free port.</summary>
    public string DataPlaneUrl { get; init; } = "http://127.0.0.1:8080";

    /// <summary>Admin listen URL. Default <c>http://127.0.0.1:8081</c>; port 0 picks a free port.</summary>
    public string AdminUrl { get; init; } = "http://127.0.0.1:8081";

    /// <summary>
    /// The load balancers and proxies in front of the data plane whose <c>X-Forwarded-For</c> is believed: the client
    /// recorded is the nearest address in it that is not one of them. Default: none, and the header is ignored.
    /// </summary>
    public IReadOnlyList<System.Net.IPNetwork> TrustedProxies { get; init; } = [];

    /// <summary>
    /// The certificate, with its private key, that <c>https://</c> listeners present; they speak HTTP/1.1. Required
    /// when <see cref="DataPlaneUrl"/> or <see cref="AdminUrl"/> is HTTPS.
    /// </summary>
    public X509Certificate2? ServerCertificate { get; init; }

    /// <summary>This node's id: its ledger chain id. Default <c>node-</c> and the host name.</summary>
    public string NodeId { get; init; } = "node-" + Environment.MachineName.ToLowerInvariant();

    /// <summary>The clock. Default the system clock.</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>Resolves upstream secrets by environment-variable name. Default the process environment.</summary>
    public Func<string, string?> Secrets { get; init; } = Environment.GetEnvironmentVariable;

    /// <summary>
    /// The counters behind rate limits, quotas and budgets. Default: in this process. Shared counters (Redis) are
    /// wrapped in a <see cref="ResilientCounterStore"/> that applies the policy's fail modes when they cannot be reached.
    /// </summary>
    public ICounterStore? Counters { get; init; }

    /// <summary>
    /// The store, opened by the caller (the gateway disposes it): PostgreSQL shared by many nodes. Default: the embedded
    /// SQLite store in <see cref="DataDirectory"/>.
    /// </summary>
    public ICustosStore? Store { get; init; }

    /// <summary>How nodes sharing a store announce policy versions and heartbeats to each other (Redis). Default: none (one node, or the periodic read only).</summary>
    public Cluster.IChangeFeed? ChangeFeed { get; init; }

    /// <summary>How this node keeps its policy in step with the shared store.</summary>
    public PolicySyncOptions PolicySync { get; init; } = new();

    /// <summary>
    /// Ledger records that may wait in memory for the store. Default <see cref="LedgerWriter.DefaultCapacity"/>; from
    /// seven-eighths full on, new requests are shed with 503 <c>unavailable.ledger_backlog</c>.
    /// </summary>
    public int LedgerQueueCapacity { get; init; } = LedgerWriter.DefaultCapacity;

    /// <summary>How often the ledger is sealed with signed checkpoints, and the witnesses they also go to.</summary>
    public CheckpointOptions Checkpoints { get; init; } = new();

    /// <summary>The HTTP handler owner notifications are delivered with. Default: a direct connection (tests put a recorder here).</summary>
    public HttpMessageHandler? NotificationHandler { get; init; }

    /// <summary>Logging set-up. Default: console, one line per message, Information and up.</summary>
    public Action<ILoggingBuilder>? ConfigureLogging { get; init; }

    /// <summary>
    /// An OpenTelemetry collector to push metrics and traces to over OTLP. Default: none, unless the standard
    /// <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> variable is set; the other <c>OTEL_*</c> variables apply either way.
    /// Prometheus can always scrape <c>/metrics</c> on the admin listener. See <c>docs/telemetry.md</c>.
    /// </summary>
    public Uri? OtlpEndpoint { get; init; }

    /// <summary>How to reach <see cref="OtlpEndpoint"/>. Default: <c>OTEL_EXPORTER_OTLP_PROTOCOL</c>, else gRPC.</summary>
    public OtlpProtocol? OtlpProtocol { get; init; }

    /// <summary>How often OTLP metrics are pushed and spans batched. Default: the OpenTelemetry defaults (60 s, 5 s) or their variables.</summary>
    internal TimeSpan? OtlpExportInterval { get; init; }

    /// <summary>
    /// How long, once the gateway starts to stop, the requests in flight may run to their end. Those still calling a
    /// provider then are cut with <c>unavailable.shutting_down</c> (recorded, and the client told), before the listener's
    /// own limit (30 s) would close their connections unexplained. Default 25 s; tests shorten it.
    /// </summary>
    internal TimeSpan ShutdownDrain { get; init; } = TimeSpan.FromSeconds(25);

    /// <summary>Tests: wraps the store the ledger writer appends to (a store that fails on demand).</summary>
    internal Func<ILedgerStore, ILedgerStore>? LedgerStore { get; init; }

    /// <summary>Tests: adjusts the ledger writer's options (timings).</summary>
    internal Func<LedgerWriterOptions, LedgerWriterOptions>? LedgerOptions { get; init; }
}

/// <summary>
/// A running gateway: the embedded store, the policy in force, the ledger writer, and the data-plane and admin
/// listeners. <see cref="DisposeAsync"/> stops gracefully: listeners first (in-flight requests finish), then the
/// ledger drains completely, then the store closes.
/// </summary>
public sealed partial class CustosGateway : IAsyncDisposable
{
    private readonly WebApplication _dataPlane;
    private readonly WebApplication _admin;
    private readonly HttpMessageInvoker _upstreamClient;
    private readonly CustosGatewayOptions _options;
    private readonly SemaphoreSlim _applyLock = new(1, 1);

    /// <summary>Access requests are decided one at a time on a node (the admin API's approvals and rejections).</summary>
    internal SemaphoreSlim AccessDecisions { get; } = new(1, 1);
    private TelemetryExport? _telemetryExport;
    private ILoggerFactory? _loggerFactory;

    /// <summary>Every revocation stored so far (<see cref="CheckRevocationsAsync"/>); read and filled under the apply lock.</summary>
    private PolicyRevocations _revocations = null!;
    private bool _disposed;

    /// <summary>Cancelled when the gateway starts to stop: both listeners' <c>/readyz</c> then answer 503 <c>stopping</c>.</summary>
    private readonly CancellationTokenSource _stopping;

    private CustosGateway(CustosGatewayOptions options, ICustosStore store, ActivePolicy policy, LedgerWriter ledger, WebApplication dataPlane,
        WebApplication admin, HttpMessageInvoker upstreamClient, ICounterStore counters, CancellationTokenSource stopping)
    {
        _options = options;
        _stopping = stopping;
        AdminDocument = new(DescribedAdminHost);
        Store = store;
        Policy = policy;
        Ledger = ledger;
        _dataPlane = dataPlane;
        _admin = admin;
        _upstreamClient = upstreamClient;
        Counters = counters;
        NodeId = options.NodeId;
    }

    /// <summary>The counters behind rate limits, quotas and budgets.</summary>
    public ICounterStore Counters { get; }

    /// <summary>The store: embedded SQLite, or PostgreSQL shared by many nodes.</summary>
    public ICustosStore Store { get; }

    /// <summary>The policy in force.</summary>
    public ActivePolicy Policy { get; }

    /// <summary>The ledger writer.</summary>
    public LedgerWriter Ledger { get; }

    /// <summary>This node's id.</summary>
    public string NodeId { get; }

    /// <summary>Bounds the admin API's heavy reads (overview, reports) running at once on this node.</summary>
    internal Admin.AdminReadGate AdminReads { get; } = new();

    /// <summary>The admin API's OpenAPI document, generated from a second host with the same routes when first asked for.</summary>
    internal Admin.AdminOpenApiDocument AdminDocument { get; }

    /// <summary>The clock.</summary>
    public TimeProvider Time => _options.TimeProvider;

    /// <summary>The data folder: the embedded store, the checkpoint keys, the ledger spool.</summary>
    public string DataDirectory => _options.DataDirectory;

    /// <summary>Tells owners what happened to their services, through a durable outbox.</summary>
    public OwnerNotifier Notifier { get; private init; } = null!;

    /// <summary>Detection and response: alerts routed to owners, automatic actions, escalation.</summary>
    public AlertEngine Alerts { get; private set; } = null!;

    /// <summary>Seals the ledger with signed checkpoints.</summary>
    public Checkpointer Checkpointer { get; private init; } = null!;

    /// <summary>The gateway's metrics and spans, recorded from the ledger; the alerting engine counts its alerts here.</summary>
    public CustosTelemetry Telemetry { get; private init; } = null!;

    /// <summary>Keeps this node's policy version in step with the other nodes sharing its store.</summary>
    public PolicySync Sync { get; private set; } = null!;

    /// <summary>Validates JWT bearer tokens (workload identities, admin sign-in).</summary>
    public JwtAuthenticator Jwt { get; private init; } = null!;

    /// <summary>Where the data plane listens.</summary>
    public Uri DataPlaneUri => BoundUri(_dataPlane);

    /// <summary>Where the admin listener listens.</summary>
    public Uri AdminUri => BoundUri(_admin);

    /// <summary>The admin listener's routes.</summary>
    internal IReadOnlyList<Endpoint> AdminEndpoints => _admin.Services.GetRequiredService<EndpointDataSource>().Endpoints;

    /// <summary>
    /// Stores <paramref name="document"/>, a whole policy, as a new policy version (unless it equals the one in force), puts
    /// it in force atomically, and records who did it and why. Requests in flight finish under the version they started with,
    /// but those whose caller it refuses by kill switch, suspension or revocation, which it cuts (<c>InFlightCalls</c>).
    /// Refused, changing nothing, when it would revive a revoked credential (<see cref="RevocationUndoneException"/>), when
    /// the policy is no longer at <see cref="PolicyApplyOptions.BaseVersion"/> (<see cref="PolicyConflictException"/>), or
    /// when it would lift containment without <see cref="PolicyApplyOptions.LiftContainment"/>
    /// (<see cref="ContainmentLiftedException"/>); with it, each lift is recorded as the dedicated endpoint records it.
    /// A dry run makes the same checks and stores nothing.
    /// </summary>
    public async Task<PolicyApplied> ApplyPolicyAsync(PolicyDocument document, string actor, string reason, string? source,
        PolicyApplyOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new PolicyApplyOptions();
        await _applyLock.WaitAsync(cancellationToken);
        try
        {
            // Judged against the latest stored version (another node may have stored one), and should yet another be stored
            // between judging and saving, judged again against that one, unless the caller named the version it read.
            for (var attempt = 1; ; attempt++)
            {
                await Sync.ReconcileAsync(cancellationToken);
                var current = Policy.Current;
                if (options.BaseVersion is { } based && based != current.Version)
                {
                    throw new PolicyConflictException(based, current.Version);
                }

                await CheckRevocationsAsync(document, cancellationToken);
                var lifts = PolicyContainment.Lifts(null, current.Document, document);
                if (lifts.Count > 0 && !options.LiftContainment)
                {
                    throw new ContainmentLiftedException(lifts, current.Version);
                }

                if (options.DryRun)
                {
                    return new PolicyApplied(current.Info, false, lifts);
                }

                try
                {
                    var (version, created) = await ApplyLockedAsync(document, actor, reason, source, current.Version, cancellationToken);
                    foreach (var lift in created ? lifts : [])
                    {
                        // On record as `custos keys resume` or `custos kill-switch release` would have put it: a whole policy
                        // ended the containment, and the incident's timeline shows who ended it and why.
                        var target = lift.Scope + ":" + lift.Id;
                        await RecordAdminAsync(actor, lift.Action, target, lift.Scope == "credential" ? "suspended" : "engaged",
                            lift.Scope == "credential" ? "active" : "released", reason, Admin.AdminApi.TenantOf(version.Document, target));
                    }

                    return new PolicyApplied(version, created, created ? lifts : []);
                }
                catch (PolicyConflictException) when (options.BaseVersion is null && attempt < 5)
                {
                }
            }
        }
        finally
        {
            _applyLock.Release();
        }
    }

    /// <summary>
    /// Throws <see cref="RevocationUndoneException"/> when <paramref name="document"/> names a credential revoked in any
    /// stored version, or its key, as not revoked. The revocations known are brought up to the version in force first (its
    /// versions read once, when another node stored some since). Called under the apply lock.
    /// </summary>
    private async Task CheckRevocationsAsync(PolicyDocument document, CancellationToken cancellationToken)
    {
        if (Policy.Current.Version > _revocations.Through)
        {
            foreach (var version in await Store.GetHistoryAsync(cancellationToken))
            {
                _revocations.Add(version);
            }
        }

        if (_revocations.Undone(document) is { Count: > 0 } undone)
        {
            throw new RevocationUndoneException(undone);
        }
    }

    /// <summary>
    /// Changes the policy in force through <paramref name="change"/> (read, modify, validate, store, put in force, all
    /// under one lock, so concurrent administrators never lose each other's changes). The changed document is validated
    /// as a whole, exactly as <c>custos policy apply</c> would; an invalid one throws <see cref="PolicyValidationException"/>
    /// and changes nothing.
    /// </summary>
    public async Task<(PolicyVersion Version, bool Created)> ChangePolicyAsync(Func<PolicyDocument, PolicyDocument> change, string actor, string reason,
        CancellationToken cancellationToken = default)
    {
        await _applyLock.WaitAsync(cancellationToken);
        try
        {
            // Another node may have stored a newer version than the one in force here: change that one, and should yet
            // another be stored between reading and saving, start over from it, so no node's change is silently undone.
            for (var attempt = 1; ; attempt++)
            {
                await Sync.ReconcileAsync(cancellationToken);
                var basedOn = Policy.Current;
                var document = change(basedOn.Document);
                var yaml = PolicyYamlWriter.Write(document);
                var read = PolicyYaml.Read(yaml);
                if (!read.IsValid)
                {
                    throw new PolicyValidationException(read.Diagnostics, "policy");
                }

                try
                {
                    return await ApplyLockedAsync(document, actor, reason, yaml, basedOn.Version, cancellationToken);
                }
                catch (PolicyConflictException) when (attempt < 5)
                {
                }
            }
        }
        finally
        {
            _applyLock.Release();
        }
    }

    /// <summary>
    /// An administrative change: <see cref="ChangePolicyAsync"/>, then one ledger entry naming <paramref name="actor"/>,
    /// <paramref name="action"/> and <paramref name="target"/>, with the readable before and after that
    /// <paramref name="change"/> reports from the very document it changed. The admin API and the alert engine's
    /// automatic actions both change the policy this way. The tenant the entry belongs to is <paramref name="tenantOf"/>
    /// the changed document.
    /// </summary>
    public async Task<(PolicyVersion Version, string? Before, string? After)> ChangeAndRecordAsync(string actor, string action, string target, string reason,
        Func<PolicyDocument, (PolicyDocument Document, string? Before, string? After)> change, Func<PolicyDocument, string?> tenantOf,
        CancellationToken cancellationToken = default)
    {
        string? before = null, after = null;
        var (version, _) = await ChangePolicyAsync(doc =>
        {
            var (changed, b, a) = change(doc);
            (before, after) = (b, a);
            return changed;
        }, actor, reason, cancellationToken);
        await RecordAdminAsync(actor, action, target, before, after, reason, tenantOf(version.Document));
        return (version, before, after);
    }

    private async Task<(PolicyVersion Version, bool Created)> ApplyLockedAsync(PolicyDocument document, string actor, string reason, string? source,
        long basedOn, CancellationToken cancellationToken)
    {
        var before = Policy.Current;
        await CheckRevocationsAsync(document, cancellationToken);
        var (version, created) = await Store.SaveAsync(document, actor, reason, _options.TimeProvider.GetUtcNow(), source, basedOn, cancellationToken);
        if (created)
        {
            _revocations.Add(version);
            await Policy.UpdateAsync(PolicySnapshot.Compile(version, _options.Secrets), CancellationToken.None);
            await Sync.AnnounceAsync(version.Number);
            await Ledger.RecordAsync(new AdminRecord
            {
                Timestamp = version.CreatedAt,
                Actor = actor,
                Action = "policy.version_created",
                Target = "policy",
                Before = before.Hash,
                After = version.Sha256,
                Reason = reason,
                PolicyVersion = version.Number,
            });
        }

        return (version, created);
    }

    /// <summary>
    /// Records an administrative action (or a refused attempt) in the ledger, and returns once the entry is durable: an
    /// administrator who got an answer can rely on the change being on record, whatever happens to the node next.
    /// </summary>
    public ValueTask RecordAdminAsync(string actor, string action, string target, string? before, string? after, string? reason, string? tenant = null)
        => Ledger.RecordAsync(new AdminRecord
        {
            Timestamp = _options.TimeProvider.GetUtcNow(),
            Tenant = tenant,
            Actor = actor,
            Action = action,
            Target = target,
            Before = before,
            After = after,
            Reason = reason,
            PolicyVersion = Policy.Current.Version,
        });

    /// <summary>Opens the store, puts the policy in force and starts both listeners.</summary>
    public static async Task<CustosGateway> StartAsync(CustosGatewayOptions options, CancellationToken cancellationToken = default)
    {
        var loggerFactory = LoggerFactory.Create(b => ConfigureLogging(b, options));
        var startupLog = loggerFactory.CreateLogger<CustosGateway>();
        ICustosStore store;
        try
        {
            store = options.Store ?? await SqliteStore.OpenAsync(options.DataDirectory, line => startupLog.LogInformation("{Upgrade}", line), cancellationToken);
        }
        catch
        {
            loggerFactory.Dispose();
            throw;
        }

        var started = new List<IAsyncDisposable> { store, new AsyncDisposableAdapter(loggerFactory) };
        try
        {
            var lastSealed = await Checkpointer.LastSealedAsync(store, options.NodeId, cancellationToken); // before anything is written
            var rotation = CheckpointKey.CheckSigned(options.DataDirectory, lastSealed, options.NodeId); // before a key is made
            var now = options.TimeProvider.GetUtcNow();
            IReadOnlyList<PolicyVersion> history;
            try
            {
                history = await store.GetHistoryAsync(cancellationToken);
            }
            catch (InvalidDataException ex)
            {
                // A version whose document no longer hashes to what was stored and recorded (edited in the database): never
                // put in force, nor taken as the version a file was last loaded as.
                throw new InvalidDataException($"{ex.Message} The gateway does not start on an altered policy version; restore the store " +
                    $"({store.Description}) from a backup.", ex);
            }

            var previous = history.Count > 0 ? history[^1] : null;
            var revocations = PolicyRevocations.Of(history);

            // A file loaded before, unchanged since, does not undo versions applied through the admin API after it.
            var lastLoad = history.LastOrDefault(v => v.Author == options.PolicyAuthor);
            PolicyVersion version;
            var created = false;
            if (previous is not null && lastLoad is not null && lastLoad != previous && lastLoad.Sha256 == PolicyVersion.HashOf(options.Policy))
            {
                version = previous;
                Log.KeptAppliedVersion(startupLog, previous.Number, previous.Author, lastLoad.Number);
            }
            else
            {
                // Every revocation ever stored, not only the latest version's: one that left the revoked credential out
                // would otherwise let a file name it active again.
                if (revocations.Undone(options.Policy) is { Count: > 0 } revived)
                {
                    throw new RevocationUndoneException(revived);
                }

                if (previous is not null && lastLoad is not null && lastLoad != previous
                    && PolicyContainment.Lifted(lastLoad.Document, previous.Document, options.Policy) is { Count: > 0 } lifted)
                {
                    throw new ContainmentLiftedException(lifted, lastLoad.Number);
                }

                if (previous is not null && lastLoad is not null && lastLoad != previous)
                {
                    // An edited file replaces what was changed through the admin API since it was last loaded: say what.
                    var undone = PolicyDiff.Compute(previous.Document, options.Policy).Select(c => c.ToString()).ToArray();
                    if (undone.Length > 0)
                    {
                        Log.FileOverridesAdminChanges(startupLog, previous.Number, previous.Author, lastLoad.Number, undone.Length,
                            string.Join("; ", undone.Take(20)));
                    }
                }

                (version, created) = await store.SaveAsync(options.Policy, options.PolicyAuthor, options.PolicyReason, now, options.PolicySource, cancellationToken: cancellationToken);
            }

            revocations.Add(version);

            var policy = new ActivePolicy(PolicySnapshot.Compile(version, options.Secrets));
            var ledgerOptions = new LedgerWriterOptions { Capacity = options.LedgerQueueCapacity, SpoolDirectory = Path.Combine(options.DataDirectory, "spool") };
            var ledger = await LedgerWriter.StartAsync(options.LedgerStore?.Invoke(store) ?? store, options.NodeId, loggerFactory.CreateLogger<LedgerWriter>(),
                options.LedgerOptions?.Invoke(ledgerOptions) ?? ledgerOptions, cancellationToken);
            started.Insert(0, ledger);
            if (created)
            {
                await ledger.EnqueueAsync(new AdminRecord
                {
                    Timestamp = now,
                    Actor = options.PolicyAuthor,
                    Action = "policy.version_created",
                    Target = "policy",
                    Before = previous?.Sha256,
                    After = version.Sha256,
                    Reason = options.PolicyReason,
                    PolicyVersion = version.Number,
                });
            }

            if (rotation is not null)
            {
                // The chain's checkpoints change keys here: on record, with who rotated it, before the new key signs any.
                await ledger.EnqueueAsync(new AdminRecord
                {
                    Timestamp = now,
                    Actor = "system:init",
                    Action = "checkpoint.key_rotated",
                    Target = "chain:" + options.NodeId,
                    Before = lastSealed!.KeyId,
                    After = rotation.KeyId,
                    Reason = $"custos init --rotate-checkpoint-key (by {rotation.By} at {rotation.At.UtcDateTime:yyyy-MM-dd HH:mm:ss} UTC)"
                        + (rotation.Retired is { } retired && retired != lastSealed.KeyId ? $"; it retired key {retired}" : ""),
                    PolicyVersion = version.Number,
                });
            }

            var sync = await PolicySync.StartAsync(store, policy, options.ChangeFeed, options.NodeId, options.Secrets, loggerFactory.CreateLogger<PolicySync>(),
                options.PolicySync, cancellationToken);
            started.Insert(0, sync);
            if (created)
            {
                await sync.AnnounceAsync(version.Number);
            }

            if (EgressProxy.Configured)
            {
                Log.EgressProxy(startupLog, EgressProxy.Variable!, EgressProxy.Address!);
            }

            var upstreamClient = CreateUpstreamClient();
            var jwt = new JwtAuthenticator(CreateUpstreamClient(), options.TimeProvider, loggerFactory.CreateLogger<JwtAuthenticator>());
            var signer = WebhookSigner.LoadOrCreate(options.DataDirectory, options.Secrets, out var secretCreated);
            if (secretCreated)
            {
                Log.WebhookSecretCreated(startupLog, WebhookSigner.SecretPath(options.DataDirectory));
            }

            if (options.Store is not null && options.Secrets(WebhookSigner.SecretVariable) is not { Length: > 0 })
            {
                // Nodes sharing a store share its outbox: any of them may send a message, each signing with its own folder's
                // secret, and a receiver holding one secret rejects the others' messages (measured: alternate deliveries).
                Log.WebhookSecretPerNode(startupLog, WebhookSigner.SecretPath(options.DataDirectory));
            }

            var notifier = new OwnerNotifier(store, options.TimeProvider, loggerFactory.CreateLogger<OwnerNotifier>(), signer, options.NotificationHandler);
            started.Insert(0, notifier);
            var checkpointKey = CheckpointKey.LoadOrCreate(options.DataDirectory, out var keyCreated);
            if (keyCreated)
            {
                Log.CheckpointKeyCreated(startupLog, CheckpointKey.PublicPath(options.DataDirectory), checkpointKey.KeyId);
            }

            var checkpointer = Checkpointer.Start(store, store, ledger, checkpointKey, options.NodeId, options.Checkpoints, options.TimeProvider,
                loggerFactory.CreateLogger<Checkpointer>(), lastSealed);
            started.Insert(1, checkpointer);

            ICounterStore counters = options.Counters switch
            {
                null => new InMemoryCounterStore(options.TimeProvider),
                InMemoryCounterStore or ResilientCounterStore => options.Counters,
                var shared => Resilient(shared, options.TimeProvider, sync, loggerFactory.CreateLogger<ResilientCounterStore>()),
            };
            if (counters is InMemoryCounterStore inProcess)
            {
                // What this process's counters held before it started is in the ledger: a restart forgot every quota and
                // budget used so far, and a consumer at its daily quota was served again. So do versions that bring a counter.
                var countersLog = loggerFactory.CreateLogger<InMemoryCounterStore>();
                await SeedCountersAsync(inProcess, policy.Current, store, options.TimeProvider, countersLog, all: true, cancellationToken);
                policy.Preparing = (next, token) => SeedCountersAsync(inProcess, next, store, options.TimeProvider, countersLog, all: false, token);
            }
            else if (((counters as ResilientCounterStore)?.Shared ?? counters) is ISeededCounterStore shared)
            {
                // Shared counters that start empty (Redis new, or restarted without persistence) are seeded from the ledger by
                // one node: at start, and when the connection comes back after a drop.
                var sharedLog = loggerFactory.CreateLogger<ResilientCounterStore>();
                await SeedSharedCountersAsync(shared, policy, store, options.TimeProvider, sharedLog, reconnected: false, cancellationToken);
                shared.Reconnected += () => _ = SeedSharedCountersAsync(shared, policy, store, options.TimeProvider, sharedLog, reconnected: true, CancellationToken.None);
                policy.Preparing = (next, token) => SeedSharedCountersBroughtAsync(shared, policy.Current, next, store, options.TimeProvider, sharedLog, token);
            }

            var telemetry = new CustosTelemetry(policy, ledger, counters);
            started.Add(new AsyncDisposableAdapter(telemetry));
            var telemetryExport = TelemetryExport.Start(telemetry, options, startupLog);
            started.Insert(0, new AsyncDisposableAdapter(telemetryExport));
            ledger.AddObserver(telemetry);
            var stopping = new CancellationTokenSource();
            var dataPlane = BuildDataPlane(options, policy, ledger, upstreamClient, counters, jwt, stopping.Token);
            var adminBuilder = CreateBuilder(options, options.AdminUrl);
            adminBuilder.Services.AddResponseCompression(); // the console's script and the admin API's JSON
            var admin = adminBuilder.Build();
            var gateway = new CustosGateway(options, store, policy, ledger, dataPlane, admin, upstreamClient, counters, stopping)
            {
                _loggerFactory = loggerFactory,
                Notifier = notifier,
                Jwt = jwt,
                Checkpointer = checkpointer,
                Telemetry = telemetry,
                _telemetryExport = telemetryExport,
                Sync = sync,
                _revocations = revocations,
            };
            gateway.Alerts = await AlertEngine.StartAsync(gateway, store, options.TimeProvider, loggerFactory.CreateLogger<AlertEngine>(), cancellationToken);
            started.Insert(0, gateway.Alerts);
            ledger.AddObserver(gateway.Alerts);
            gateway.Alerts.Raised += alert => telemetry.RecordAlert(alert.Signal.Type, PolicyNames.Of(alert.Signal.Severity),
                alert.Signal.Category is { } category ? PolicyNames.Of(category) : null);
            MapAdmin(admin, gateway);
            await dataPlane.StartAsync(cancellationToken);
            started.Insert(0, dataPlane);
            await admin.StartAsync(cancellationToken);
            WarmUp(policy.Current);
            return gateway;
        }
        catch
        {
            foreach (var item in started)
            {
                await item.DisposeAsync();
            }

            throw;
        }
    }

    /// <summary>
    /// Builds now what the first requests would otherwise build under load: the o200k vocabulary when a consumer's
    /// limits count tokens, and each prompt rule's matcher (the e-mail detector's non-backtracking automaton is built
    /// on its first match, through large temporary objects). Then one compacting collection returns that garbage to
    /// the system, so it is not part of the peak under load. Measured in docs/performance.md.
    /// </summary>
    private static void WarmUp(PolicySnapshot snapshot)
    {
        if (snapshot.Consumers.Values.Any(c => c.CountsInput))
        {
            TokenCounter.Count("warm up");
        }

        foreach (var service in snapshot.Services.Values)
        {
            foreach (var rule in service.AllPromptRules)
            {
                rule.TryMatch("warm up", null, out _);
            }
        }

        GCSettings.LargeObjectHeapCompactionMode = GCLargeObjectHeapCompactionMode.CompactOnce;
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
    }

    /// <summary>
    /// Starts the in-process counters of <paramref name="snapshot"/>'s quotas and budgets (every one with
    /// <paramref name="all"/>, at start-up; otherwise those the store does not hold yet) from what the ledger holds of
    /// their current windows (<see cref="CounterSeeds"/>). A store that cannot be read is logged, not thrown: the counters
    /// then start from zero, as they did before.
    /// </summary>
    private static async Task SeedCountersAsync(InMemoryCounterStore counters, PolicySnapshot snapshot, ICustosStore store, TimeProvider time, ILogger logger,
        bool all, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        try
        {
            var seeds = await CounterSeeds.ReadAsync(snapshot, store, time.GetUtcNow(), all ? _ => true : key => !counters.Holds(key), cancellationToken);
            var seeded = counters.Seed(seeds);
            if (seeded > 0 || all)
            {
                Log.CountersSeeded(logger, seeded, (long)Stopwatch.GetElapsedTime(started).TotalMilliseconds);
            }
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            Log.CountersNotSeeded(logger, snapshot.Version, ex.Message);
        }
    }

    /// <summary>
    /// Seeds shared counters that hold none of the deployment's counters (<see cref="ISeededCounterStore"/>: their marker is
    /// missing) from what the ledger holds of the current day or month of every quota and budget of the policy in force, as
    /// <see cref="SeedCountersAsync"/> does for the in-process ones; one node of many claims it. Failures are logged, not
    /// thrown: the counters then go on from what they hold.
    /// </summary>
    private static async Task SeedSharedCountersAsync(ISeededCounterStore counters, ActivePolicy policy, ICustosStore store, TimeProvider time, ILogger logger,
        bool reconnected, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        try
        {
            if (!await counters.ClaimSeedingAsync(cancellationToken))
            {
                return;
            }

            var seeds = await CounterSeeds.ReadAsync(policy.Current, store, time.GetUtcNow(), _ => true, cancellationToken);
            var raised = await counters.SeedAsync(seeds, cancellationToken);
            var milliseconds = (long)Stopwatch.GetElapsedTime(started).TotalMilliseconds;
            if (reconnected)
            {
                Log.SharedCountersLost(logger, raised, seeds.Count, milliseconds);
            }
            else
            {
                Log.SharedCountersSeeded(logger, raised, seeds.Count, milliseconds);
            }
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            Log.SharedCountersNotSeeded(logger, ex.Message);
        }
    }

    /// <summary>
    /// Raises the shared counters that <paramref name="next"/> brings (quotas and budgets <paramref name="current"/> lacks:
    /// a budget added mid-month, a day budget made a month's) to what the ledger holds of their current day or month, before
    /// it is put in force, as <see cref="SeedCountersAsync"/> starts the in-process ones. Every node that takes the version
    /// does it; raising, not adding, so what one node admitted under it already is not counted twice. Failures are logged,
    /// not thrown: those counters then go on from what Redis holds.
    /// </summary>
    private static async Task SeedSharedCountersBroughtAsync(ISeededCounterStore counters, PolicySnapshot current, PolicySnapshot next, ICustosStore store,
        TimeProvider time, ILogger logger, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        try
        {
            var now = time.GetUtcNow();
            var held = CounterSeeds.KeysOf(current, now);
            var seeds = await CounterSeeds.ReadAsync(next, store, now, key => !held.Contains(key), cancellationToken);
            if (seeds.Count > 0)
            {
                var raised = await counters.SeedAsync(seeds, cancellationToken);
                Log.SharedCountersBrought(logger, next.Version, raised, seeds.Count, (long)Stopwatch.GetElapsedTime(started).TotalMilliseconds);
            }
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            Log.SharedCountersNotSeeded(logger, ex.Message);
        }
    }

    private static ResilientCounterStore Resilient(ICounterStore shared, TimeProvider time, PolicySync sync, ILogger logger)
    {
        var resilient = new ResilientCounterStore(shared, time, () => sync.Live);
        resilient.DegradedChanged += (degraded, error) =>
        {
            if (degraded)
            {
                Log.CountersUnreachable(logger, sync.LiveNodes, error?.Message);
            }
            else
            {
                Log.CountersBack(logger);
            }
        };
        return resilient;
    }

    /// <summary>
    /// The client the gateway forwards with, as YARP recommends for forwarding: no redirects, no cookies, no
    /// decompression, no trace headers of its own, and no proxy unless the environment names one
    /// (<see cref="EgressProxy"/>). Public so the load harness's bare forwarder uses the very same.
    /// </summary>
    public static HttpMessageInvoker CreateUpstreamClient() => new(new WholeBodyHandler(new SocketsHttpHandler
    {
        UseProxy = EgressProxy.Configured,
        Proxy = EgressProxy.Proxy,
        AllowAutoRedirect = false,
        AutomaticDecompression = DecompressionMethods.None,
        UseCookies = false,
        EnableMultipleHttp2Connections = true,
        ActivityHeadersPropagator = null,
        ConnectTimeout = TimeSpan.FromSeconds(10),
        PooledConnectionLifetime = TimeSpan.FromMinutes(5),
    }));

    private static WebApplication BuildDataPlane(CustosGatewayOptions options, ActivePolicy policy, LedgerWriter ledger, HttpMessageInvoker upstreamClient,
        ICounterStore counters, JwtAuthenticator jwt, CancellationToken stopping)
    {
        var builder = CreateBuilder(options, options.DataPlaneUrl);
        if (InlineIo.Enabled)
        {
            builder.WebHost.UseSockets(o => o.UnsafePreferInlineScheduling = true);
        }

        builder.Services.AddHttpForwarder();
        builder.Services.AddSingleton(policy);
        builder.Services.AddSingleton(ledger);
        builder.Services.AddSingleton(options.TimeProvider);
        builder.Services.AddSingleton(sp => new DataPlane(policy, ledger, sp.GetRequiredService<IHttpForwarder>(), upstreamClient,
            counters, options.TimeProvider, options.NodeId, jwt, sp.GetRequiredService<ILogger<DataPlane>>()));
        builder.Services.AddSingleton(sp => new ProtocolRefusals(sp.GetRequiredService<DiagnosticListener>(), policy, ledger, options.TimeProvider, options.NodeId));
        var app = builder.Build();
        var dataPlane = app.Services.GetRequiredService<DataPlane>();
        app.Services.GetRequiredService<ProtocolRefusals>(); // subscribes; disposed with the host
        if (options.TrustedProxies.Count > 0)
        {
            // Right to left through X-Forwarded-For while the address it came from is a trusted proxy's; nothing else
            // runs per request when none is configured.
            var forwarded = new ForwardedHeadersOptions { ForwardedHeaders = ForwardedHeaders.XForwardedFor, ForwardLimit = null };
            forwarded.KnownIPNetworks.Clear();
            forwarded.KnownProxies.Clear();
            foreach (var network in options.TrustedProxies)
            {
                forwarded.KnownIPNetworks.Add(network);
            }

            app.UseForwardedHeaders(forwarded);
        }

        app.Run(context => context.Request.Path.Value switch
        {
            "/healthz" => Health(context),
            "/readyz" => Ready(context, policy, ledger, counters, stopping),
            _ => dataPlane.InvokeAsync(context),
        });
        return app;
    }

    /// <summary>A host with the admin API's routes, never started, that its OpenAPI document is generated from.</summary>
    private WebApplication DescribedAdminHost()
    {
        var builder = CreateBuilder(_options, "http://127.0.0.1:0");
        Admin.AdminOpenApiDocument.AddServices(builder.Services);
        var host = builder.Build();
        MapAdmin(host, this);
        return host;
    }

    private static void MapAdmin(WebApplication app, CustosGateway gateway)
    {
        app.UseResponseCompression();
        Console.ConsoleHost.Use(app);
        app.MapGet("/healthz", Health);
        app.MapGet("/readyz", (HttpContext context) => Ready(context, gateway.Policy, gateway.Ledger, gateway.Counters, gateway._stopping.Token));
        app.MapGet("/admin/v1/openapi.json", (RequestDelegate)gateway.AdminDocument.WriteAsync).WithName("openapi").ExcludeFromDescription();
        app.MapPrometheusScrapingEndpoint("/metrics", gateway._telemetryExport!.Meters, configureBranchedPipeline: null, optionsName: null);
        Admin.AdminApi.Map(app, gateway);
    }

    /// <summary>
    /// A slim host for one listener. Custos is configured by its policy, not by <c>appsettings.json</c>: the host's
    /// default of reloading that file on change would watch the whole content root (the working directory, usually
    /// holding the SQLite ledger) with a recursive <see cref="FileSystemWatcher"/>, and every ledger commit would
    /// wake it. So the file is read once, if present, and nothing is watched.
    /// </summary>
    internal static WebApplicationBuilder CreateBuilder(CustosGatewayOptions options, string url)
    {
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions
        {
            ApplicationName = "Custos",
            Args = ["--hostBuilder:reloadConfigOnChange=false"],
        });
        builder.Logging.ClearProviders();
        ConfigureLogging(builder.Logging, options);
        builder.WebHost.UseUrls(url);
        var https = url.StartsWith("https://", StringComparison.OrdinalIgnoreCase);
        if (https)
        {
            if (options.ServerCertificate is null)
            {
                throw new InvalidOperationException($"{url} is an https:// listener, but no server certificate is configured (server.tls_certificate).");
            }

            builder.WebHost.UseKestrelHttpsConfiguration();
        }

        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Limits.MaxRequestBodySize = 256L * 1024 * 1024; // the policy's own, smaller limit is enforced per request
            if (https)
            {
                kestrel.ConfigureHttpsDefaults(tls => tls.ServerCertificate = options.ServerCertificate);
                kestrel.ConfigureEndpointDefaults(listen => listen.Protocols = HttpProtocols.Http1); // what the data plane is tested on
            }
        });
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(30));
        builder.Services.AddSingleton<IHostLifetime>(new EmbeddedLifetime());
        return builder;
    }

    private static void ConfigureLogging(ILoggingBuilder logging, CustosGatewayOptions options)
    {
        if (options.ConfigureLogging is { } configure)
        {
            configure(logging);
            return;
        }

        logging.AddSimpleConsole(o =>
        {
            o.SingleLine = true;
            o.TimestampFormat = "HH:mm:ss ";
        });
        logging.SetMinimumLevel(LogLevel.Information);
        logging.AddFilter("Microsoft", LogLevel.Warning);
        if (!TelemetryExport.IsOtlpEnabled(options))
        {
            // While this category is enabled at any level, ASP.NET Core starts an Activity per request (ids for log
            // scopes); it only logs request start and finish, at Information, which is filtered out anyway. Without
            // trace export nothing reads that Activity (12 % of throughput, docs/performance.md); with it, the
            // Activity carries a caller's traceparent to the gateway's spans, so it stays.
            logging.AddFilter("Microsoft.AspNetCore.Hosting.Diagnostics", LogLevel.None);
        }
        logging.AddFilter("Yarp", LogLevel.Warning);
        logging.AddFilter("System.Net.Http", LogLevel.Warning);

        // The host logs a failed start (a listener's address in use) with its whole stack before it throws to the caller,
        // which says it in one line (custos serve: "error: Failed to bind to address …: address already in use.").
        // The gateway has no BackgroundService whose failure only the host would report.
        logging.AddFilter("Microsoft.Extensions.Hosting.Internal.Host", LogLevel.Critical);
    }

    private static Task Health(HttpContext context)
    {
        context.Response.ContentType = "text/plain";
        return context.Response.WriteAsync("ok");
    }

    /// <summary>
    /// Ready while the ledger can record and keeps up: a gateway that cannot prove what it did, or is shedding
    /// requests because its ledger is behind, should not get traffic. Spooling (the store is away, records go to the
    /// local spool) is ready: every record is still durable; <c>ledger_spooled</c> says how many wait there.
    /// </summary>
    /// <remarks>
    /// Also not ready while this node cannot confirm its policy version and the policy's revocation fail mode is
    /// <c>closed</c> (it would refuse every request), nor once it has begun to stop (<c>stopping</c>: the data plane takes
    /// no new connection while the requests in flight finish, and the admin listener, which stops last, says so to a
    /// balancer that checks it). <c>policy</c> and <c>counters</c> say what is degraded either way.
    /// </remarks>
    private static Task Ready(HttpContext context, ActivePolicy policy, LedgerWriter ledger, ICounterStore counters, CancellationToken stopping)
    {
        context.Response.ContentType = "application/json";
        var snapshot = policy.Current;
        var unconfirmed = policy.IsUnconfirmed;
        var refusing = unconfirmed && (snapshot.Document.Gateway.FailModes ?? TenantEntry.DefaultFailModes).Revocation == FailMode.Closed;
        var status = stopping.IsCancellationRequested ? "stopping"
            : !ledger.IsHealthy ? "ledger_unavailable" : ledger.IsBacklogged ? "ledger_backlog" : refusing ? "policy_unconfirmed" : "ready";
        var countersState = counters switch
        {
            ResilientCounterStore { IsDegraded: true } => "degraded",
            ResilientCounterStore => "shared",
            _ => "local",
        };
        context.Response.StatusCode = status == "ready" ? StatusCodes.Status200OK : StatusCodes.Status503ServiceUnavailable;
        return context.Response.WriteAsync(
            $"{{\"status\":\"{status}\",\"policy_version\":{snapshot.Version},\"policy_hash\":\"{snapshot.Hash}\",\"policy\":\"{(unconfirmed ? "unconfirmed" : "confirmed")}\"," +
            $"\"counters\":\"{countersState}\",\"ledger_pending\":{ledger.Pending},\"ledger_spooled\":{ledger.Spooled}}}");
    }

    private static Uri BoundUri(WebApplication app)
    {
        var addresses = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses;
        return new Uri(addresses.First());
    }

    /// <summary>Stops gracefully; no ledger record is lost.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        await _stopping.CancelAsync(); // not ready from now on, on both listeners
        var stopped = _dataPlane.StopAsync(); // no new connection; the requests in flight run on
        if (await Task.WhenAny(stopped, Task.Delay(_options.ShutdownDrain)) != stopped)
        {
            // What still calls a provider ends now with the gateway's error and its reason on record: left to the listener's
            // limit, its connection would be closed with nothing said, and the entry would blame the client (client.cancelled).
            _dataPlane.Services.GetRequiredService<DataPlane>().CutInFlight(Errors.Reasons.ShuttingDown);
        }

        await stopped;
        await _admin.StopAsync();
        await _dataPlane.DisposeAsync();
        await _admin.DisposeAsync();
        await Ledger.FlushAsync().WaitAsync(TimeSpan.FromSeconds(30)).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing); // every record seen by the detectors,
        await Alerts.DisposeAsync(); // every signal handled (its ledger entries queued),
        await Ledger.DisposeAsync(); // then everything stored
        _telemetryExport?.Dispose(); // pushes the last measurements and spans
        Telemetry.Dispose();
        await Checkpointer.DisposeAsync(); // seals the last entries, now that the ledger has drained
        await Sync.DisposeAsync();
        await Notifier.DisposeAsync();
        await Store.DisposeAsync();
        _upstreamClient.Dispose();
        _applyLock.Dispose();
        _stopping.Dispose();
        _loggerFactory?.Dispose();
    }

    private sealed class AsyncDisposableAdapter(IDisposable inner) : IAsyncDisposable
    {
        public ValueTask DisposeAsync()
        {
            inner.Dispose();
            return ValueTask.CompletedTask;
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 10, Level = LogLevel.Information,
            Message = "Keeping policy version {Version} (by {Author}): the configuration is unchanged since it was loaded as version {Loaded}.")]
        public static partial void KeptAppliedVersion(ILogger logger, long version, string author, long loaded);

        [LoggerMessage(EventId = 12, Level = LogLevel.Information,
            Message = "Created the ledger's checkpoint signing key {KeyId}; give auditors its public key: {PublicKey}.")]
        public static partial void CheckpointKeyCreated(ILogger logger, string publicKey, string keyId);

        [LoggerMessage(EventId = 13, Level = LogLevel.Information,
            Message = "Created the webhook signing secret {Path}; give it to your webhook receivers to check X-Custos-Signature (or set CUSTOS_WEBHOOK_SECRET).")]
        public static partial void WebhookSecretCreated(ILogger logger, string path);

        [LoggerMessage(EventId = 11, Level = LogLevel.Warning,
            Message = "The edited configuration replaces version {Version} (by {Author}), which holds changes made through the admin API since the file was loaded as version {Loaded}; {Count} difference(s): {Changes}. Export the policy in force (custos policy show, then add the file's server: section, which the policy does not hold) before editing the file to keep them.")]
        public static partial void FileOverridesAdminChanges(ILogger logger, long version, string author, long loaded, int count, string changes);

        [LoggerMessage(EventId = 14, Level = LogLevel.Warning,
            Message = "The shared counters cannot be reached ({Error}): rate limits, quotas and budgets follow the policy's fail modes (rate limits count a 1/{Nodes} share here) until they answer.")]
        public static partial void CountersUnreachable(ILogger logger, int nodes, string? error);

        [LoggerMessage(EventId = 15, Level = LogLevel.Information, Message = "The shared counters answer again: normal enforcement resumed.")]
        public static partial void CountersBack(ILogger logger);

        [LoggerMessage(EventId = 16, Level = LogLevel.Information,
            Message = "Calls to providers, identity providers and webhooks go through the proxy {Address} ({Variable}), except to the hosts NO_PROXY names.")]
        public static partial void EgressProxy(ILogger logger, string variable, string address);

        [LoggerMessage(EventId = 17, Level = LogLevel.Information,
            Message = "Quotas and budgets start from what the ledger holds of their current day or month: {Seeded} counter(s) read back in {Milliseconds} ms.")]
        public static partial void CountersSeeded(ILogger logger, int seeded, long milliseconds);

        [LoggerMessage(EventId = 18, Level = LogLevel.Warning,
            Message = "Could not read back what quotas and budgets used from the ledger ({Error}); the counters policy version {Version} brings start from zero.")]
        public static partial void CountersNotSeeded(ILogger logger, long version, string error);

        [LoggerMessage(EventId = 19, Level = LogLevel.Information,
            Message = "The shared counters held none of this deployment's counters: quotas and budgets start from what the ledger holds of their current day or month ({Raised} of {Counters} counter(s) raised in {Milliseconds} ms).")]
        public static partial void SharedCountersSeeded(ILogger logger, int raised, int counters, long milliseconds);

        [LoggerMessage(EventId = 20, Level = LogLevel.Warning,
            Message = "The shared counters came back empty (Redis restarted or failed over without its data): quotas and budgets were seeded again from what the ledger holds of their current day or month ({Raised} of {Counters} counter(s) raised in {Milliseconds} ms).")]
        public static partial void SharedCountersLost(ILogger logger, int raised, int counters, long milliseconds);

        [LoggerMessage(EventId = 21, Level = LogLevel.Warning,
            Message = "Could not seed the shared counters from the ledger ({Error}): quotas and budgets go on from what Redis holds.")]
        public static partial void SharedCountersNotSeeded(ILogger logger, string error);

        [LoggerMessage(EventId = 22, Level = LogLevel.Information,
            Message = "Policy version {Version} brings quotas or budgets: their shared counters start from what the ledger holds of their current day or month ({Raised} of {Counters} counter(s) raised in {Milliseconds} ms).")]
        public static partial void SharedCountersBrought(ILogger logger, long version, int raised, int counters, long milliseconds);

        [LoggerMessage(EventId = 23, Level = LogLevel.Warning,
            Message = "Webhooks are signed with this node's own secret ({Path}), but the store is shared: every node sends the outbox's messages, each signing with its own, so a receiver checking X-Custos-Signature rejects other nodes' alerts and notifications. Set CUSTOS_WEBHOOK_SECRET to the same secret on every node.")]
        public static partial void WebhookSecretPerNode(ILogger logger, string path);
    }
}
