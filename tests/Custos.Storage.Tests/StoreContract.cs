using System.Data.Common;
using System.Text;
using System.Text.Json;
using Custos.Alerts;
using Custos.ControlPlane;
using Custos.Errors;
using Custos.Ledger;
using Custos.Policy;

namespace Custos.Storage.Tests;

/// <summary>
/// What every <see cref="ICustosStore"/> must do, whatever keeps the data: each implementation's tests derive from this
/// class and supply a fresh empty store (<see cref="CreateStoreAsync"/>), a second one on the same data (another node,
/// <see cref="OpenSameStoreAsync"/>) and raw SQL on it (<see cref="ExecuteRawAsync"/>). Linked into the PostgreSQL
/// tests, so it stays free of anything but Core.
/// </summary>
public abstract class StoreContract : IAsyncLifetime
{
    private readonly List<ICustosStore> _opened = [];

    protected static readonly DateTimeOffset T0 = new(2026, 11, 1, 0, 0, 0, TimeSpan.Zero);

    /// <summary>The store under test: fresh and empty for every test.</summary>
    protected ICustosStore Store { get; private set; } = null!;

    /// <summary>A new, empty store.</summary>
    protected abstract Task<ICustosStore> CreateStoreAsync();

    /// <summary>Another store on the data of the last <see cref="CreateStoreAsync"/>: what a second gateway node opens.</summary>
    protected abstract Task<ICustosStore> OpenSameStoreAsync();

    /// <summary>Runs <paramref name="sql"/> on the store's database directly, around the store; throws the driver's exception.</summary>
    protected abstract Task ExecuteRawAsync(string sql);

    /// <summary>
    /// Runs <paramref name="sql"/> with the ledger's append-only guard lifted, as an insider with the database owner's rights
    /// would: what verification must catch.
    /// </summary>
    protected abstract Task AlterLedgerAsync(string sql);

    /// <summary>SQL that takes the store's schema back to the version before the request totals, as a store made by an earlier Custos.</summary>
    protected abstract string BeforeRequestTotalsSql { get; }

    /// <summary>SQL that takes the store back to the schema version before the request totals by minute, dropping them.</summary>
    protected abstract string BeforeMinuteTotalsSql { get; }

    /// <summary>SQL that takes the store back to the schema version before the request totals' tokens, dropping their columns.</summary>
    protected abstract string BeforeTokensSql { get; }

    /// <summary>Cleans up after the stores were disposed.</summary>
    protected virtual Task CleanUpAsync() => Task.CompletedTask;

    public async Task InitializeAsync() => Store = await TrackAsync(CreateStoreAsync());

    public async Task DisposeAsync()
    {
        foreach (var store in _opened)
        {
            await store.DisposeAsync();
        }

        await CleanUpAsync();
    }

    protected async Task<ICustosStore> OpenSecondNodeAsync() => await TrackAsync(OpenSameStoreAsync());

    private async Task<ICustosStore> TrackAsync(Task<ICustosStore> opening)
    {
        var store = await opening;
        _opened.Add(store);
        return store;
    }

    protected static RequestRecord Request(string id, string tenant, string consumer, Decision decision, DateTimeOffset at,
        string? service = "svc", string? model = "m", decimal? cost = null, string? credential = null)
    {
        var record = new RequestRecord
        {
            RequestId = id,
            NodeId = "n1",
            Method = "POST",
            Endpoint = "/v1/chat/completions",
            Timestamp = at,
            Tenant = tenant,
            Consumer = consumer,
            Service = service,
            Model = model,
            Cost = cost,
            CredentialId = credential,
        };
        if (decision == Decision.Deny)
        {
            record.Fail(Reasons.ModelNotEntitled, Outcome.Denied);
        }

        return record;
    }

    protected static AdminRecord Admin(DateTimeOffset at, string tenant = "acme")
        => new() { Timestamp = at, Tenant = tenant, Actor = "x", Action = "policy.version_created", Target = "policy" };

    private async Task<string[]> IdsAsync(LedgerQuery query)
    {
        var ids = new List<string>();
        await foreach (var row in Store.QueryAsync(query))
        {
            using var json = JsonDocument.Parse(row.Json);
            ids.Add(json.RootElement.TryGetProperty("request_id", out var id) ? id.GetString()! : "admin:" + json.RootElement.GetProperty("action").GetString());
        }

        return [.. ids];
    }

    private async Task<List<StoredRecord>> RowsAsync(LedgerQuery query)
    {
        var rows = new List<StoredRecord>();
        await foreach (var row in Store.QueryAsync(query))
        {
            rows.Add(row);
        }

        return rows;
    }

    // ---------------------------------------------------------------- ledger

    [Fact]
    public async Task AppendAsync_ThenQuery_FiltersByEveryColumnAndTime()
    {
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        await Store.AppendAsync(
        [
            chain.Append(Request("r1", "acme", "a", Decision.Allow, T0)),
            chain.Append(Request("r2", "acme", "b", Decision.Deny, T0.AddMinutes(1), service: "billing")),
            chain.Append(Request("r3", "globex", "c", Decision.Allow, T0.AddMinutes(2), model: "big")),
            chain.Append(Admin(T0.AddMinutes(3))),
        ]);

        Assert.Equal(["r1", "r2", "r3"], await IdsAsync(new LedgerQuery()));
        Assert.Equal(["r1", "r2"], await IdsAsync(new LedgerQuery { Tenant = "acme" }));
        Assert.Equal(["r2"], await IdsAsync(new LedgerQuery { Decision = "deny" }));
        Assert.Equal(["r3"], await IdsAsync(new LedgerQuery { Consumer = "c" }));
        Assert.Equal(["r2"], await IdsAsync(new LedgerQuery { Service = "billing" }));
        Assert.Equal(["r3"], await IdsAsync(new LedgerQuery { Model = "big" }));
        Assert.Equal(["r2"], await IdsAsync(new LedgerQuery { RequestId = "r2" }));
        Assert.Equal(["r2", "r3"], await IdsAsync(new LedgerQuery { From = T0.AddSeconds(30) }));
        Assert.Equal(["r1"], await IdsAsync(new LedgerQuery { To = T0.AddSeconds(30) }));
        Assert.Equal(["r2"], await IdsAsync(new LedgerQuery { From = T0.AddMinutes(1), To = T0.AddMinutes(2) }));
        Assert.Equal(["r2", "r3"], await IdsAsync(new LedgerQuery { Limit = 2 }));
        Assert.Equal(["admin:policy.version_created"], await IdsAsync(new LedgerQuery { Kind = "admin" }));
        Assert.Equal(["r1", "r2", "r3", "admin:policy.version_created"], await IdsAsync(new LedgerQuery { Kind = null }));
        Assert.Empty(await IdsAsync(new LedgerQuery { Tenant = "acme", Consumer = "c" }));
        Assert.Equal((4, chain.LastHash), await Store.GetChainHeadAsync("n1"));
    }

    [Fact]
    public async Task QueryAsync_ScopeFilters_KeepOnlyEntriesOfTheTenantsAndServicesNamed_BeforeTheLimitCounts()
    {
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        await Store.AppendAsync(
        [
            chain.Append(Request("r1", "acme", "a", Decision.Allow, T0)),
            chain.Append(Request("r2", "acme", "b", Decision.Deny, T0.AddMinutes(1), service: "billing")),
            chain.Append(Request("r3", "globex", "c", Decision.Allow, T0.AddMinutes(2))),
            chain.Append(Request("r4", "initech", "d", Decision.Allow, T0.AddMinutes(3))),
            chain.Append(Admin(T0.AddMinutes(4))),
        ]);

        Assert.Equal(["r1", "r2", "r3"], await IdsAsync(new LedgerQuery { Tenants = ["acme", "globex"] }));
        Assert.Equal(["r2"], await IdsAsync(new LedgerQuery { Services = ["billing"] }));
        Assert.Equal(["r1", "r3"], await IdsAsync(new LedgerQuery { Tenants = ["acme", "globex"], Services = ["svc"], Limit = 2 }));
        Assert.Equal(["r2", "r3"], await IdsAsync(new LedgerQuery { Tenants = ["acme", "globex"], Limit = 2 }));
        Assert.Empty(await IdsAsync(new LedgerQuery { Tenants = [] }));
        Assert.Empty(await IdsAsync(new LedgerQuery { Kind = "admin", Services = ["billing"] })); // an admin entry names no service
        Assert.Equal(["admin:policy.version_created"], await IdsAsync(new LedgerQuery { Kind = "admin", Tenants = ["acme"] }));
    }

    [Fact]
    public async Task QueryAsync_ReturnsTheStoredBytesAndLinks_OrderedByTimeThenChainThenSeq()
    {
        var a = new HashChain("node-a", 0, HashChain.Genesis);
        var b = new HashChain("node-b", 0, HashChain.Genesis);
        // Non-ASCII text and an instant with sub-microsecond ticks: both must come back exactly as hashed.
        var odd = Request("r-ü", "acme", "Zoë 東京", Decision.Allow, T0.AddTicks(1234567));
        var first = a.Append(odd);
        var second = b.Append(Request("r-b1", "acme", "x", Decision.Allow, T0));
        var third = a.Append(Request("r-a2", "acme", "x", Decision.Allow, T0));
        await Store.AppendAsync([first, third]);
        await Store.AppendAsync([second]);

        var rows = await RowsAsync(new LedgerQuery());

        // T0 < T0 + 123 ms; at T0 node-a's seq 2 sorts before node-b's seq 1 (chain id, then seq).
        Assert.Equal([("node-a", 2L), ("node-b", 1L), ("node-a", 1L)], rows.Select(r => (r.ChainId, r.Seq)));
        var stored = rows[2];
        Assert.Equal(Encoding.UTF8.GetString(first.Canonical.Span), stored.Json);
        Assert.Equal(first.Canonical.ToArray(), Encoding.UTF8.GetBytes(stored.Json));
        Assert.Equal((first.PrevHash, first.Hash, "request"), (stored.PrevHash, stored.Hash, stored.Kind));
        Assert.Equal(HashChain.Link(stored.PrevHash, Encoding.UTF8.GetBytes(stored.Json)), stored.Hash);
        Assert.Equal(["r-ü"], await IdsAsync(new LedgerQuery { Consumer = "Zoë 東京" }));
    }

    [Fact]
    public async Task QueryAsync_Limit_GivesTheNewestN_AlsoWhenTheOldestOfThemTiesWithOthers()
    {
        // Four entries on each of two chains at T0, one before and one after, and an admin entry at T0 that the default
        // kind leaves out: every limit that cuts among the entries at T0 must keep the newest of them.
        var a = new HashChain("node-a", 0, HashChain.Genesis);
        var b = new HashChain("node-b", 0, HashChain.Genesis);
        List<ChainedRecord> onA = [a.Append(Request("a0", "acme", "x", Decision.Allow, T0.AddMinutes(-1)))], onB = [];
        for (var i = 1; i <= 4; i++)
        {
            onA.Add(a.Append(Request($"a{i}", i % 2 == 0 ? "acme" : "globex", "x", Decision.Allow, T0)));
            onB.Add(b.Append(Request($"b{i}", i % 2 == 0 ? "acme" : "globex", "x", Decision.Allow, T0)));
        }

        onA.Add(a.Append(Admin(T0)));
        onB.Add(b.Append(Request("b5", "acme", "x", Decision.Allow, T0.AddMinutes(1))));
        await Store.AppendAsync(onA);
        await Store.AppendAsync(onB);

        var all = await IdsAsync(new LedgerQuery { Limit = 100 });
        var acme = await IdsAsync(new LedgerQuery { Tenant = "acme", Limit = 100 });
        var both = await IdsAsync(new LedgerQuery { Kind = null, Limit = 100 });

        Assert.Equal(["a0", "a1", "a2", "a3", "a4", "b1", "b2", "b3", "b4", "b5"], all);
        Assert.Equal(["a0", "a2", "a4", "b2", "b4", "b5"], acme);
        Assert.Equal(["a0", "a1", "a2", "a3", "a4", "admin:policy.version_created", "b1", "b2", "b3", "b4", "b5"], both);
        for (var limit = 0; limit <= all.Length + 1; limit++)
        {
            Assert.Equal(all.TakeLast(limit), await IdsAsync(new LedgerQuery { Limit = limit }));
            Assert.Equal(acme.TakeLast(limit), await IdsAsync(new LedgerQuery { Tenant = "acme", Limit = limit }));
            Assert.Equal(both.TakeLast(limit), await IdsAsync(new LedgerQuery { Kind = null, Limit = limit }));
        }
    }

    [Fact]
    public async Task QueryAsync_TimeBounds_FromIsInclusive_ToIsExclusive_AtMicrosecondPrecision()
    {
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        var at = T0.AddTicks(15); // 1.5 µs: stored as 1 µs, as the canonical form states it
        await Store.AppendAsync([chain.Append(Request("r1", "acme", "a", Decision.Allow, at))]);

        Assert.Equal(["r1"], await IdsAsync(new LedgerQuery { From = T0.AddTicks(10) }));
        Assert.Equal(["r1"], await IdsAsync(new LedgerQuery { From = T0.AddTicks(19) }));
        Assert.Empty(await IdsAsync(new LedgerQuery { From = T0.AddTicks(20) }));
        Assert.Empty(await IdsAsync(new LedgerQuery { To = T0.AddTicks(10) }));
        Assert.Equal(["r1"], await IdsAsync(new LedgerQuery { To = T0.AddTicks(20) }));
    }

    [Fact]
    public async Task GetChainHeadAsync_NewChain_IsGenesis_EachChainHasItsOwnHead()
    {
        Assert.Equal((0, HashChain.Genesis), await Store.GetChainHeadAsync("n1"));
        var a = new HashChain("n1", 0, HashChain.Genesis);
        var b = new HashChain("n2", 0, HashChain.Genesis);
        await Store.AppendAsync([a.Append(Admin(T0)), a.Append(Admin(T0)), a.Append(Admin(T0.AddDays(40)))]);
        await Store.AppendAsync([b.Append(Admin(T0))]);

        Assert.Equal((3, a.LastHash), await Store.GetChainHeadAsync("n1"));
        Assert.Equal((1, b.LastHash), await Store.GetChainHeadAsync("n2"));
        Assert.Equal((0, HashChain.Genesis), await Store.GetChainHeadAsync("n3"));

        // A node restarting continues from the head the store gives back.
        var (seq, hash) = await Store.GetChainHeadAsync("n1");
        var resumed = new HashChain("n1", seq, hash);
        await Store.AppendAsync([resumed.Append(Admin(T0.AddDays(41)))]);
        Assert.Equal((4, resumed.LastHash), await Store.GetChainHeadAsync("n1"));
    }

    [Fact]
    public async Task AppendAsync_EmptyBatch_DoesNothing()
    {
        await Store.AppendAsync([]);

        Assert.Empty(await Store.GetChainsAsync());
    }

    [Fact]
    public async Task AppendAsync_DuplicateSeq_FailsWholeBatch()
    {
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        var first = chain.Append(Request("r1", "acme", "a", Decision.Allow, T0));
        await Store.AppendAsync([first]);

        var next = chain.Append(Request("r2", "acme", "a", Decision.Allow, T0.AddSeconds(1)));
        await Assert.ThrowsAnyAsync<DbException>(() => Store.AppendAsync([next, first]));

        Assert.Equal(["r1"], await IdsAsync(new LedgerQuery()));
        Assert.Equal((1, first.Hash), await Store.GetChainHeadAsync("n1"));
    }

    [Fact]
    public async Task Ledger_UpdateOrDelete_IsRefusedByTheStore()
    {
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        var record = chain.Append(Request("r1", "acme", "a", Decision.Allow, T0));
        await Store.AppendAsync([record]);

        var update = await Assert.ThrowsAnyAsync<DbException>(() => ExecuteRawAsync("UPDATE ledger SET hash = 'forged'"));
        var delete = await Assert.ThrowsAnyAsync<DbException>(() => ExecuteRawAsync("DELETE FROM ledger"));

        Assert.Contains("append-only", update.Message, StringComparison.Ordinal);
        Assert.Contains("append-only", delete.Message, StringComparison.Ordinal);

        // And the checkpoints that seal entries.
        await Store.AppendCheckpointAsync(NewCheckpoint("n1", 1, 1));
        var reseal = await Assert.ThrowsAnyAsync<DbException>(() => ExecuteRawAsync("UPDATE checkpoints SET signature = 'forged'"));
        var unseal = await Assert.ThrowsAnyAsync<DbException>(() => ExecuteRawAsync("DELETE FROM checkpoints"));
        Assert.Contains("append-only", reseal.Message, StringComparison.Ordinal);
        Assert.Contains("append-only", unseal.Message, StringComparison.Ordinal);
        Assert.Equal("sig-n1-1", Assert.Single(await Store.GetCheckpointsAsync("n1")).Signature);
        var rows = await RowsAsync(new LedgerQuery());
        Assert.Equal(record.Hash, Assert.Single(rows).Hash);
    }

    [Fact]
    public async Task AppendAsync_TwoNodesAtOnce_EachChainIsComplete()
    {
        var other = await OpenSecondNodeAsync();
        async Task WriteAsync(ICustosStore store, string node)
        {
            var chain = new HashChain(node, 0, HashChain.Genesis);
            for (var batch = 0; batch < 10; batch++)
            {
                var records = Enumerable.Range(0, 20)
                    .Select(i => chain.Append(Request($"{node}-{batch}-{i}", "acme", node, Decision.Allow, T0.AddSeconds((batch * 20) + i), credential: "k-shared")))
                    .ToList();
                await store.AppendAsync(records);
            }
        }

        await Task.WhenAll(Task.Run(() => WriteAsync(Store, "node-a")), Task.Run(() => WriteAsync(other, "node-b")));

        Assert.Equal([("node-a", 200L, 200L), ("node-b", 200L, 200L)], await Store.GetChainsAsync());
        Assert.Equal(T0.AddSeconds(199), (await Store.GetCredentialLastUsedAsync())["k-shared"]);
    }

    // ---------------------------------------------------------------- policy

    private static PolicyDocument Document(string tenant, string? timeZone = null)
        => new() { Tenants = [timeZone is null ? new TenantConfig { Id = tenant } : new TenantConfig { Id = tenant, TimeZone = timeZone }] };

    [Fact]
    public async Task SaveAsync_SameDocumentTwice_KeepsOneVersion_ChangedDocument_AddsNext()
    {
        var document = Document("t");
        var now = T0.AddTicks(17);

        Assert.Null(await Store.GetLatestAsync());
        var (v1, created1) = await Store.SaveAsync(document, "alice", "first", now, "tenants: [{id: t}]");
        var (again, created2) = await Store.SaveAsync(document with { }, "bob", "same", now, null);
        var (v2, created3) = await Store.SaveAsync(Document("t", "Europe/Berlin"), "carol", "tz", now.AddMinutes(1), null);

        Assert.True(created1);
        Assert.False(created2);
        Assert.True(created3);
        Assert.Equal(1, v1.Number);
        Assert.Equal(v1.Sha256, again.Sha256);
        Assert.Equal(1, again.Number);
        Assert.Equal(2, v2.Number);
        var history = await Store.GetHistoryAsync();
        Assert.Equal(["alice", "carol"], history.Select(v => v.Author));
        Assert.Equal(["first", "tz"], history.Select(v => v.Reason));
        Assert.Equal("Europe/Berlin", history[1].Document.Tenants[0].TimeZone);
        Assert.Equal(PolicyVersion.HashOf(document), history[0].Sha256);
        Assert.Equal(T0.AddTicks(10), history[0].CreatedAt); // stored to the microsecond
        var latest = await Store.GetLatestAsync();
        Assert.Equal((2L, v2.Sha256), (latest!.Number, latest.Sha256));
    }

    [Fact]
    public async Task SaveAsync_BasedOnTheLatest_Stores_BasedOnAnOlderVersion_ConflictsAndStoresNothing()
    {
        Assert.True((await Store.SaveAsync(Document("a"), "alice", "first", T0, null, basedOn: 0)).Created);
        Assert.True((await Store.SaveAsync(Document("b"), "alice", "second", T0, null, basedOn: 1)).Created);

        var conflict = await Assert.ThrowsAsync<PolicyConflictException>(() => Store.SaveAsync(Document("c"), "bob", "stale", T0, null, basedOn: 1));
        var fromScratch = await Assert.ThrowsAsync<PolicyConflictException>(() => Store.SaveAsync(Document("d"), "bob", "stale", T0, null, basedOn: 0));

        Assert.Equal((1L, 2L), (conflict.BasedOn, conflict.Latest));
        Assert.Equal((0L, 2L), (fromScratch.BasedOn, fromScratch.Latest));
        Assert.Equal([1L, 2L], (await Store.GetHistoryAsync()).Select(v => v.Number));
        // A stale change that changes nothing is no conflict: the document in force is returned.
        var (same, created) = await Store.SaveAsync(Document("b"), "bob", "stale but same", T0, null, basedOn: 1);
        Assert.Equal((2L, false), (same.Number, created));
    }

    [Fact]
    public async Task SaveAsync_ConflictOnAnEmptyStore_NamesVersionZero()
    {
        var conflict = await Assert.ThrowsAsync<PolicyConflictException>(() => Store.SaveAsync(Document("a"), "alice", "x", T0, null, basedOn: 3));

        Assert.Equal((3L, 0L), (conflict.BasedOn, conflict.Latest));
        Assert.Null(await Store.GetLatestAsync());
    }

    [Fact]
    public async Task SaveAsync_TwoNodesAtOnce_GetDistinctNumbers_NeverADuplicate()
    {
        var other = await OpenSecondNodeAsync();
        var saved = new System.Collections.Concurrent.ConcurrentBag<long>();
        async Task WriteAsync(ICustosStore store, string node)
        {
            for (var i = 0; i < 15; i++)
            {
                var (version, created) = await store.SaveAsync(Document($"{node}-{i}"), node, "race", T0, null);
                Assert.True(created);
                saved.Add(version.Number);
            }
        }

        await Task.WhenAll(Task.Run(() => WriteAsync(Store, "a")), Task.Run(() => WriteAsync(other, "b")));

        Assert.Equal(Enumerable.Range(1, 30).Select(n => (long)n), saved.Order());
        var history = await Store.GetHistoryAsync();
        Assert.Equal(Enumerable.Range(1, 30).Select(n => (long)n), history.Select(v => v.Number));
        Assert.Equal(30, history.Select(v => v.Sha256).Distinct().Count());
    }

    [Fact]
    public async Task SaveAsync_TwoNodesChangingTheSameVersionAtOnce_OneWins_TheOtherConflicts()
    {
        var other = await OpenSecondNodeAsync();
        for (var round = 0; round < 10; round++)
        {
            var basedOn = (await Store.GetLatestAsync())?.Number ?? 0;
            async Task<Exception?> TryAsync(ICustosStore store, string node)
            {
                try
                {
                    await store.SaveAsync(Document($"{node}-{round}"), node, "race", T0, null, basedOn);
                    return null;
                }
                catch (PolicyConflictException e)
                {
                    return e;
                }
            }

            var outcomes = await Task.WhenAll(Task.Run(() => TryAsync(Store, "a")), Task.Run(() => TryAsync(other, "b")));

            Assert.Single(outcomes, e => e is null);
            Assert.Single(outcomes, e => e is PolicyConflictException);
            Assert.Equal(basedOn + 1, (await other.GetLatestAsync())!.Number);
        }

        Assert.Equal(Enumerable.Range(1, 10).Select(n => (long)n), (await Store.GetHistoryAsync()).Select(v => v.Number));
    }

    // ---------------------------------------------------------------- registry

    private static AccessRequest NewAccessRequest(string consumer) => new()
    {
        Id = "",
        Tenant = "acme",
        Service = "support",
        Consumer = consumer,
        Models = ["gpt-4o", "claude"],
        ValidUntil = T0.AddDays(30),
        Justification = "pilot",
        RequestedBy = "alice",
        RequestedAt = T0.AddTicks(5),
    };

    [Fact]
    public async Task PolicyVersionsAndAccessRequests_AlteredBehindTheGateway_AreRefusedWhenRead_AndNamedByVerification()
    {
        var (version, _) = await Store.SaveAsync(Document("t"), "alice", "first", T0, null);
        var request = await Store.CreateAccessRequestAsync(NewAccessRequest("bot"));
        Assert.True(await Store.DecideAccessRequestAsync(request.Id, AccessRequestStatus.Approved, "carol", T0.AddMinutes(1), "fine", 2));
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        var target = "access_request:" + request.Id;
        await Store.AppendAsync(
        [
            chain.Append(new AdminRecord { Timestamp = T0, Actor = "alice", Action = "policy.version_created", Target = "policy", After = version.Sha256, Reason = "first", PolicyVersion = 1 }),
            chain.Append(new AdminRecord { Timestamp = T0, Tenant = "acme", Actor = "alice", Action = "access.requested", Target = target, After = "pending: bot -> gpt-4o,claude", Reason = "pilot", PolicyVersion = 1 }),
            chain.Append(new AdminRecord
            {
                Timestamp = T0.AddMinutes(1), Tenant = "acme", Actor = "carol", Action = "access.approved", Target = target, Before = "pending",
                After = "approved: bot -> gpt-4o,claude", Reason = $"access request {request.Id} approved: fine", PolicyVersion = 2,
            }),
        ]);
        using var key = System.Security.Cryptography.ECDsa.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP256);
        var options = new VerificationOptions { PublicKeys = [key] };
        var clean = await LedgerVerifier.VerifyAsync(Store, options);
        Assert.True(clean.Ok, string.Join("; ", clean.Problems));

        // Who decided, rewritten: the request no longer says what the ledger recorded.
        await ExecuteRawAsync($"UPDATE access_requests SET decided_by = 'dana' WHERE number = {request.Id[3..]}");
        var decider = Assert.Single((await LedgerVerifier.VerifyAsync(Store, options)).Problems);
        Assert.Equal("altered_access_request", decider.Kind);
        Assert.Contains("its decided_by is 'dana' in the store, 'carol' in the ledger", decider.Detail, StringComparison.Ordinal);
        await ExecuteRawAsync($"UPDATE access_requests SET decided_by = 'carol' WHERE number = {request.Id[3..]}");

        // The author of a version (not covered by its hash): found against the entry that recorded it.
        await ExecuteRawAsync("UPDATE policy_versions SET author = 'mallory'");
        var author = Assert.Single((await LedgerVerifier.VerifyAsync(Store, options)).Problems);
        Assert.Equal(("altered_policy_version", "n1", 1L), (author.Kind, author.ChainId, author.Seq));
        Assert.Contains("its author is 'mallory' in the store, 'alice' in the ledger", author.Detail, StringComparison.Ordinal);
        await ExecuteRawAsync("UPDATE policy_versions SET author = 'alice'");

        // The document itself edited: never read back as that version, and named by verification.
        await ExecuteRawAsync("UPDATE policy_versions SET canonical = replace(canonical, '\"id\":\"t\"', '\"id\":\"u\"')");
        var refused = await Assert.ThrowsAsync<InvalidDataException>(() => Store.GetHistoryAsync());
        Assert.StartsWith("Policy version 1 is damaged or was altered in the store", refused.Message, StringComparison.Ordinal);
        await Assert.ThrowsAsync<InvalidDataException>(() => Store.GetLatestAsync());
        var document = Assert.Single((await LedgerVerifier.VerifyAsync(Store, options)).Problems);
        Assert.Equal("altered_policy_version", document.Kind);
        Assert.Contains("policy version 1's document hashes to", document.Detail, StringComparison.Ordinal);

        // A version added beside the gateway, with a hash of its own that matches: no entry recorded it.
        await ExecuteRawAsync("UPDATE policy_versions SET canonical = replace(canonical, '\"id\":\"u\"', '\"id\":\"t\"')");
        var forged = Document("forged");
        await Store.SaveAsync(forged, "alice", "looks routine", T0.AddHours(1), null);
        var unrecorded = Assert.Single((await LedgerVerifier.VerifyAsync(Store, options)).Problems);
        Assert.Equal("unrecorded_policy_version", unrecorded.Kind);
        Assert.StartsWith("policy version 2 ", unrecorded.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AccessRequests_CreateGetListDecide()
    {
        var first = await Store.CreateAccessRequestAsync(NewAccessRequest("bot-1"));
        var second = await Store.CreateAccessRequestAsync(NewAccessRequest("bot-2") with { ValidUntil = null });

        Assert.Equal(("ar-1", "ar-2"), (first.Id, second.Id));
        Assert.Equal(AccessRequestStatus.Pending, first.Status);
        var read = await Store.GetAccessRequestAsync("ar-1");
        Assert.NotNull(read);
        Assert.Equal(["gpt-4o", "claude"], read.Models);
        Assert.Equal((T0.AddDays(30), T0, "pilot", "alice", "bot-1"), (read.ValidUntil, read.RequestedAt, read.Justification, read.RequestedBy, read.Consumer));
        Assert.Null((await Store.GetAccessRequestAsync("ar-2"))!.ValidUntil);
        Assert.Null(await Store.GetAccessRequestAsync("ar-3"));
        Assert.Null(await Store.GetAccessRequestAsync("al-1"));
        Assert.Null(await Store.GetAccessRequestAsync("ar-x"));

        Assert.True(await Store.DecideAccessRequestAsync("ar-2", AccessRequestStatus.Approved, "owner", T0.AddHours(1), "ok", 7));
        Assert.False(await Store.DecideAccessRequestAsync("ar-2", AccessRequestStatus.Rejected, "other", T0.AddHours(2), "late", null));
        Assert.False(await Store.DecideAccessRequestAsync("ar-9", AccessRequestStatus.Rejected, "other", T0, "none", null));
        Assert.False(await Store.DecideAccessRequestAsync("nope", AccessRequestStatus.Rejected, "other", T0, "none", null));

        var decided = (await Store.GetAccessRequestAsync("ar-2"))!;
        Assert.Equal((AccessRequestStatus.Approved, "owner", T0.AddHours(1), "ok", 7L),
            (decided.Status, decided.DecidedBy, decided.DecidedAt, decided.DecisionReason, decided.PolicyVersion));
        Assert.Equal(["ar-1", "ar-2"], (await Store.ListAccessRequestsAsync(null)).Select(r => r.Id));
        Assert.Equal(["ar-1"], (await Store.ListAccessRequestsAsync(AccessRequestStatus.Pending)).Select(r => r.Id));
        Assert.Equal(["ar-2"], (await Store.ListAccessRequestsAsync(AccessRequestStatus.Approved)).Select(r => r.Id));
        Assert.Empty(await Store.ListAccessRequestsAsync(AccessRequestStatus.Rejected));
    }

    [Fact]
    public async Task AccessRequests_TwoNodesDecidingAtOnce_ExactlyOneDecides()
    {
        var other = await OpenSecondNodeAsync();
        for (var i = 0; i < 5; i++)
        {
            var request = await Store.CreateAccessRequestAsync(NewAccessRequest("bot"));
            var results = await Task.WhenAll(
                Task.Run(() => Store.DecideAccessRequestAsync(request.Id, AccessRequestStatus.Approved, "a", T0, "yes", 1)),
                Task.Run(() => other.DecideAccessRequestAsync(request.Id, AccessRequestStatus.Rejected, "b", T0, "no", null)));

            Assert.Single(results, r => r);
        }
    }

    private static Notification NewNotification(string recipient, DateTimeOffset at, string status = "pending") => new()
    {
        CreatedAt = at,
        Role = "technical",
        Recipient = recipient,
        Channel = "webhook",
        Target = "https://example.invalid/hook",
        Payload = """{"text":"hello"}""",
        Status = status,
    };

    [Fact]
    public async Task Notifications_DueRetryDeliveredAndList()
    {
        await Store.EnqueueNotificationsAsync([]);
        await Store.EnqueueNotificationsAsync(
        [
            NewNotification("ann", T0),
            NewNotification("bob", T0.AddMinutes(1)),
            NewNotification("cid", T0, status: "undeliverable"),
        ]);
        await Store.EnqueueNotificationsAsync([NewNotification("dan", T0.AddMinutes(2))]);

        Assert.Empty(await Store.DueNotificationsAsync(T0.AddSeconds(-1), 10));
        Assert.Equal(["ann"], (await Store.DueNotificationsAsync(T0.AddSeconds(30), 10)).Select(n => n.Recipient)); // claimed until 2:30
        var first = await Store.DueNotificationsAsync(T0.AddMinutes(5), 1);
        Assert.Equal(["ann"], first.Select(n => n.Recipient)); // the claim lapsed: due again
        var rest = await Store.DueNotificationsAsync(T0.AddMinutes(5), 10);
        Assert.Equal(["bob", "dan"], rest.Select(n => n.Recipient));
        Assert.Empty(await Store.DueNotificationsAsync(T0.AddMinutes(5), 10)); // all claimed: another node sends nothing twice
        var due = first.Concat(rest).ToList();
        var ann = due[0];
        Assert.Equal((T0, "technical", "webhook", "https://example.invalid/hook", """{"text":"hello"}""", "pending", 0, (string?)null),
            (ann.CreatedAt, ann.Role, ann.Channel, ann.Target, ann.Payload, ann.Status, ann.Attempts, ann.LastError));

        await Store.RecordNotificationAttemptAsync(ann.Id, false, "HTTP 503", T0.AddMinutes(10));
        await Store.RecordNotificationAttemptAsync(due[1].Id, true, null, null);

        Assert.Equal(["dan"], (await Store.DueNotificationsAsync(T0.AddMinutes(9), 10)).Select(n => n.Recipient)); // its claim lapsed at 7:00
        var retried = await Store.DueNotificationsAsync(T0.AddMinutes(11), 10);
        Assert.Equal(["ann", "dan"], retried.Select(n => n.Recipient));
        Assert.Equal((1, "HTTP 503"), (retried[0].Attempts, retried[0].LastError));

        var listed = await Store.ListNotificationsAsync(3);
        Assert.Equal(["dan", "cid", "bob"], listed.Select(n => n.Recipient));
        Assert.Equal(("delivered", 1), (listed[2].Status, listed[2].Attempts));
        Assert.Equal("undeliverable", listed[1].Status);
        Assert.True(listed[0].Id > listed[1].Id && listed[1].Id > listed[2].Id);
    }

    [Fact]
    public async Task GetSpendAsync_SumsExactCostsPerService_InTheWindow_RequestsOnly()
    {
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        var other = new HashChain("n2", 0, HashChain.Genesis);
        await Store.AppendAsync(
        [
            chain.Append(Request("r1", "acme", "a", Decision.Allow, T0, service: "support", cost: 0.1m)),
            chain.Append(Request("r2", "acme", "a", Decision.Allow, T0.AddHours(1), service: "support", cost: 0.2m)),
            chain.Append(Request("r3", "acme", "a", Decision.Deny, T0.AddHours(2), service: "support")), // no cost: counted, adds nothing
            chain.Append(Request("r4", "acme", "b", Decision.Allow, T0.AddHours(3), service: "search", cost: 0.000000001m)),
            chain.Append(Request("r5", "acme", "b", Decision.Allow, T0.AddHours(3), service: null, cost: 5m)), // no service: not counted
            chain.Append(Request("r6", "acme", "b", Decision.Allow, T0.AddDays(1), service: "support", cost: 1m)), // outside
            chain.Append(Request("r7", "acme", "b", Decision.Allow, T0.AddTicks(-10), service: "support", cost: 1m)), // outside
            chain.Append(Admin(T0.AddHours(1))),
        ]);
        await Store.AppendAsync([other.Append(Request("r8", "acme", "a", Decision.Allow, T0.AddHours(4), service: "support", cost: 0.0000000014m))]);

        var spend = await Store.GetSpendAsync(T0, T0.AddDays(1));

        Assert.Equal(2, spend.Count);
        // 0.1 + 0.2 exactly (no floating point), plus 0.0000000014 as the record states it: 0.000000001.
        Assert.Equal((0.300000001m, 4L), spend["support"]);
        Assert.Equal((0.000000001m, 1L), spend["search"]);
        Assert.Empty(await Store.GetSpendAsync(T0.AddDays(2), T0.AddDays(3)));
    }

    [Fact]
    public async Task GetCredentialLastUsedAsync_KeepsTheLatestUse_AnOlderBatchNeverMovesItBack()
    {
        Assert.Empty(await Store.GetCredentialLastUsedAsync());
        var a = new HashChain("n1", 0, HashChain.Genesis);
        var b = new HashChain("n2", 0, HashChain.Genesis);
        await Store.AppendAsync(
        [
            a.Append(Request("r1", "acme", "a", Decision.Allow, T0.AddMinutes(5), credential: "k1")),
            a.Append(Request("r2", "acme", "a", Decision.Allow, T0.AddMinutes(1), credential: "k1")),
            a.Append(Request("r3", "acme", "a", Decision.Deny, T0.AddMinutes(2), credential: "k2")),
            a.Append(Admin(T0.AddMinutes(9))),
        ]);
        await Store.AppendAsync([b.Append(Request("r4", "acme", "a", Decision.Allow, T0.AddMinutes(3), credential: "k1"))]);
        await Store.AppendAsync([b.Append(Request("r5", "acme", "a", Decision.Allow, T0.AddMinutes(4).AddTicks(3), credential: "k2"))]);

        var lastUsed = await Store.GetCredentialLastUsedAsync();

        Assert.Equal(2, lastUsed.Count);
        Assert.Equal(T0.AddMinutes(5), lastUsed["k1"]);
        Assert.Equal(T0.AddMinutes(4), lastUsed["k2"]);
    }

    [Fact]
    public async Task GetCredentialLastUsedAsync_IsNotMovedByARefusalOfTheCredentialItself()
    {
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        ChainedRecord Refused(string id, DateTimeOffset at, ReasonCode reason, string credential)
        {
            var record = Request(id, "acme", "a", Decision.Allow, at, credential: credential);
            record.Fail(reason, Outcome.Denied);
            return chain.Append(record);
        }

        await Store.AppendAsync(
        [
            chain.Append(Request("r1", "acme", "a", Decision.Allow, T0, credential: "k1")),
            Refused("r2", T0.AddDays(2), Reasons.CredentialRevoked, "k1"), // used after its end: not a use
            Refused("r3", T0.AddDays(3), Reasons.CredentialExpired, "k2"),
            Refused("r4", T0.AddDays(4), Reasons.ConsumerSuspended, "k3"), // the key was accepted; its consumer is switched off
        ]);

        var lastUsed = await Store.GetCredentialLastUsedAsync();

        Assert.Equal(T0, lastUsed["k1"]);
        Assert.False(lastUsed.ContainsKey("k2"));
        Assert.Equal(T0.AddDays(4), lastUsed["k3"]);
    }

    // ---------------------------------------------------------------- evidence

    [Fact]
    public async Task GetChainsAndReadChain_GiveEveryChainInOrder()
    {
        var b = new HashChain("node-b", 0, HashChain.Genesis);
        var a = new HashChain("node-a", 0, HashChain.Genesis);
        var records = new List<ChainedRecord>();
        for (var i = 1; i <= 5; i++)
        {
            records.Add(a.Append(i == 3 ? Admin(T0.AddDays(i * 20)) : Request($"r{i}", "acme", "a", Decision.Allow, T0.AddDays(i * 20).AddTicks(i * 11))));
        }

        await Store.AppendAsync(records);
        await Store.AppendAsync([b.Append(Admin(T0)), b.Append(Admin(T0))]);

        Assert.Equal([("node-a", 5L, 5L), ("node-b", 2L, 2L)], await Store.GetChainsAsync());
        var entries = new List<ChainEntry>();
        await foreach (var entry in Store.ReadChainAsync("node-a", 2, 4))
        {
            entries.Add(entry);
        }

        Assert.Equal([2L, 3L, 4L], entries.Select(e => e.Seq));
        Assert.Equal(["r2", null, "r4"], entries.Select(e => e.RequestId));
        Assert.Equal(records.Skip(1).Take(3).Select(r => LedgerTime.Format(r.Record.Timestamp)), entries.Select(e => e.Timestamp));
        Assert.Equal(records.Skip(1).Take(3).Select(r => Encoding.UTF8.GetString(r.Canonical.Span)), entries.Select(e => e.Json));
        Assert.Equal(records.Skip(1).Take(3).Select(r => (r.PrevHash, r.Hash)), entries.Select(e => (e.PrevHash, e.Hash)));

        var hashesOnly = new List<(long Seq, byte[] Hash)>();
        await foreach (var leaf in Store.ReadChainHashesAsync("node-a", 1, 100))
        {
            hashesOnly.Add(leaf);
        }

        Assert.Equal([1L, 2L, 3L, 4L, 5L], hashesOnly.Select(e => e.Seq));
        Assert.Equal(records.Select(r => r.Hash), hashesOnly.Select(e => Convert.ToHexStringLower(e.Hash)));

        // The Merkle leaves as bytes, decoded by the store: the same hashes, in order, only within the range.
        var leaves = new List<(long Seq, byte[] Hash)>();
        await foreach (var leaf in Store.ReadChainHashesAsync("node-a", 2, 4))
        {
            leaves.Add(leaf);
        }

        Assert.Equal([2L, 3L, 4L], leaves.Select(l => l.Seq));
        Assert.Equal(records.Skip(1).Take(3).Select(r => r.Hash), leaves.Select(l => Convert.ToHexStringLower(l.Hash)));
        Assert.All(leaves, l => Assert.Equal(32, l.Hash.Length));
        await foreach (var _ in Store.ReadChainHashesAsync("node-a", 6, 100))
        {
            Assert.Fail("no entry after the head");
        }
    }

    [Fact]
    public async Task ReadChainHashes_FailsClearly_OnAStoredHashThatIsNotHex()
    {
        var chain = new HashChain("node-a", 0, HashChain.Genesis);
        await Store.AppendAsync([chain.Append(Request("r1", "acme", "a", Decision.Allow, T0)), chain.Append(Request("r2", "acme", "a", Decision.Allow, T0))]);
        await AlterLedgerAsync("UPDATE ledger SET hash = 'not-hex' WHERE seq = 2");

        await Assert.ThrowsAsync<FormatException>(async () =>
        {
            await foreach (var _ in Store.ReadChainHashesAsync("node-a", 1, 2))
            {
            }
        });
    }

    /// <summary>An entry of every kind: a request allowed with a cost, one refused before anything about it was known, an admin action, a shed count.</summary>
    protected static List<ChainedRecord> EveryKind(HashChain chain)
    {
        var unknown = new RequestRecord { RequestId = "r2", NodeId = "n1", Method = "POST", Endpoint = "/v1/chat/completions", Timestamp = T0.AddSeconds(1) };
        unknown.Fail(Reasons.CredentialUnknown, Outcome.Denied);
        return
        [
            chain.Append(Request("r1", "acme", "a", Decision.Allow, T0.AddTicks(17), cost: 0.0001234m)),
            chain.Append(unknown),
            chain.Append(Admin(T0.AddSeconds(2))),
            chain.Append(new ShedRecord
            {
                Timestamp = T0.AddSeconds(3),
                NodeId = "n1",
                First = T0,
                Reasons = new Dictionary<string, long>(StringComparer.Ordinal) { ["unavailable.ledger_backlog"] = 3 },
            }),
        ];
    }

    private async Task<List<ChainEntry>> ReadChainAsync(string chainId)
    {
        var entries = new List<ChainEntry>();
        await foreach (var entry in Store.ReadChainAsync(chainId, 1, long.MaxValue))
        {
            entries.Add(entry);
        }

        return entries;
    }

    [Fact]
    public async Task ReadChain_GivesTheSearchColumns_AsEachKindOfEntryHasThem()
    {
        await Store.AppendAsync(EveryKind(new HashChain("n1", 0, HashChain.Genesis)));

        var entries = await ReadChainAsync("n1");

        Assert.All(entries, entry =>
        {
            var recorded = LedgerColumns.Read(entry.Json);
            Assert.NotNull(recorded);
            Assert.NotNull(entry.Columns);
            Assert.Null(LedgerColumns.Difference(recorded, entry.Columns));
        });
        var columns = entries.Select(e => e.Columns!).ToList();
        Assert.Equal(["request", "request", "admin", "shed"], columns.Select(c => c.Kind));
        Assert.Equal([LedgerTime.Format(T0.AddTicks(17)), LedgerTime.Format(T0.AddSeconds(1))], columns.Take(2).Select(c => c.Timestamp));
        Assert.Equal(("r1", "acme", "svc", "a", "allow", "m"), (columns[0].RequestId, columns[0].Tenant, columns[0].Service, columns[0].Consumer, columns[0].Decision, columns[0].Model));
        Assert.Equal(("r2", null, null, null, "deny", null), (columns[1].RequestId, columns[1].Tenant, columns[1].Service, columns[1].Consumer, columns[1].Decision, columns[1].Model));
        Assert.Equal(("acme", null, null), (columns[2].Tenant, columns[2].RequestId, columns[2].Decision));
        if (columns[0].HasCost)
        {
            Assert.Equal([0.0001234m, null, null, null], columns.Select(c => c.Cost));
        }
    }

    [Theory]
    [InlineData("kind", "'admin'")] // out of every search for requests
    [InlineData("ts", "'2026-10-01T00:00:00.000000Z'")] // out of the month's reports
    [InlineData("request_id", "'r1'")]
    [InlineData("tenant", "'acme'")] // into another tenant's reports
    [InlineData("service", "'svc'")]
    [InlineData("consumer", "'a'")]
    [InlineData("decision", "'allow'")] // a refusal hidden from every search for refusals
    [InlineData("model", "'m'")]
    public async Task Verify_FindsAnAlteredSearchColumn_AtItsEntry(string column, string value)
    {
        await Store.AppendAsync(EveryKind(new HashChain("n1", 0, HashChain.Genesis)));
        using var key = System.Security.Cryptography.ECDsa.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP256);
        var options = new VerificationOptions { PublicKeys = [key] };
        Assert.True((await LedgerVerifier.VerifyAsync(Store, options)).Ok);

        await AlterLedgerAsync($"UPDATE ledger SET {column} = {value} WHERE chain_id = 'n1' AND seq = 2");

        var problem = Assert.Single((await LedgerVerifier.VerifyAsync(Store, options)).Problems);
        Assert.Equal(("altered_columns", 2L, "r2"), (problem.Kind, problem.Seq, problem.RequestId));
        Assert.StartsWith($"its {column} column says", problem.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Query_NeverTakesAnEntryForWhatItsAlteredColumnsSay()
    {
        await Store.AppendAsync(EveryKind(new HashChain("n1", 0, HashChain.Genesis)));
        Assert.Equal(["r1"], await IdsAsync(new LedgerQuery { Tenant = "acme" }));

        // Entry 2 (refused before its tenant was known) moved into tenant acme, entry 1 moved a month back.
        await AlterLedgerAsync("UPDATE ledger SET tenant = 'acme' WHERE chain_id = 'n1' AND seq = 2");
        await AlterLedgerAsync("UPDATE ledger SET ts = '2026-10-01T00:00:00.000000Z' WHERE chain_id = 'n1' AND seq = 1");

        var tenant = await Assert.ThrowsAsync<InvalidDataException>(() => IdsAsync(new LedgerQuery { Tenant = "acme" }));
        Assert.Equal("Ledger entry 2 of chain n1 was selected by its tenant column, but the entry says null: the store's search columns were altered. Run custos audit verify.",
            tenant.Message);
        var time = await Assert.ThrowsAsync<InvalidDataException>(() => IdsAsync(new LedgerQuery { From = T0.AddDays(-31), To = T0.AddDays(-30) }));
        Assert.StartsWith($"Ledger entry 1 of chain n1 was selected by its ts column, but the entry says '{LedgerTime.Format(T0.AddTicks(17))}'", time.Message, StringComparison.Ordinal);
        Assert.Equal(["r2"], await IdsAsync(new LedgerQuery { Decision = "deny" })); // rows whose columns are intact read as before
    }

    private static SignedCheckpoint NewCheckpoint(string chain, long from, long to)
    {
        var checkpoint = new Checkpoint
        {
            ChainId = chain,
            FromSeq = from,
            ToSeq = to,
            PrevHash = HashChain.Genesis,
            HeadHash = new string('a', 64),
            MerkleRoot = new string('b', 64),
            Timestamp = T0,
            LastEntryAt = T0,
            KeyId = "0123456789abcdef",
        };
        return new SignedCheckpoint(Encoding.UTF8.GetString(checkpoint.CanonicalBytes()), $"sig-{chain}-{to}");
    }

    [Fact]
    public async Task Checkpoints_AreKeptPerChainInOrder_AndNeverTwiceForOneInterval()
    {
        await Store.AppendCheckpointAsync(NewCheckpoint("node-b", 1, 10));
        await Store.AppendCheckpointAsync(NewCheckpoint("node-a", 11, 20));
        await Store.AppendCheckpointAsync(NewCheckpoint("node-a", 1, 10));

        Assert.Equal(["sig-node-a-10", "sig-node-a-20", "sig-node-b-10"], (await Store.GetCheckpointsAsync()).Select(c => c.Signature));
        var a = await Store.GetCheckpointsAsync("node-a");
        Assert.Equal(["sig-node-a-10", "sig-node-a-20"], a.Select(c => c.Signature));
        Assert.Equal(NewCheckpoint("node-a", 1, 10).Json, a[0].Json);
        Assert.Equal((1L, 10L), (a[0].Checkpoint.FromSeq, a[0].Checkpoint.ToSeq));
        Assert.Empty(await Store.GetCheckpointsAsync("node-c"));
        await Assert.ThrowsAnyAsync<DbException>(() => Store.AppendCheckpointAsync(NewCheckpoint("node-a", 5, 10)));
    }

    // ---------------------------------------------------------------- alerts

    private static Alert NewAlert(string fingerprint, DateTimeOffset at) => new()
    {
        Signal = new AlertSignal
        {
            Type = "usage_spike",
            Severity = AlertSeverity.Critical,
            Fingerprint = fingerprint,
            Subject = "consumer:support-bot",
            Summary = "10× the baseline",
            At = at,
            Tenant = "acme",
            Consumer = "support-bot",
            Category = ConsumerCategory.Agent,
            PolicyVersion = 4,
            Evidence = new Dictionary<string, string> { ["observed"] = "120", ["baseline"] = "12" },
            Action = AlertAction.Suspend,
        },
        RaisedAt = at,
        LastSeenAt = at,
        NotifiedRoles = ["technical", "security"],
    };

    [Fact]
    public async Task Alerts_CreateGetUpdateList()
    {
        var first = await Store.CreateAlertAsync(NewAlert("f1", T0));
        var second = await Store.CreateAlertAsync(NewAlert("f2", T0.AddMinutes(1)));
        var third = await Store.CreateAlertAsync(NewAlert("f3", T0.AddMinutes(2)));

        Assert.Equal(["al-1", "al-2", "al-3"], new[] { first.Id, second.Id, third.Id });
        var read = await Store.GetAlertAsync("al-1");
        Assert.NotNull(read);
        Assert.Equal(("al-1", AlertStatus.Open, "f1", AlertSeverity.Critical, ConsumerCategory.Agent), (read.Id, read.Status, read.Signal.Fingerprint, read.Signal.Severity, read.Signal.Category));
        Assert.Equal("120", read.Signal.Evidence["observed"]);
        Assert.Equal(["technical", "security"], read.NotifiedRoles);
        Assert.Equal(T0, read.RaisedAt);
        Assert.Null(await Store.GetAlertAsync("al-4"));
        Assert.Null(await Store.GetAlertAsync("ar-1"));
        Assert.Null(await Store.GetAlertAsync("al-x"));

        await Store.UpdateAlertAsync(second with { Status = AlertStatus.Acknowledged, AcknowledgedBy = "owner", AcknowledgedAt = T0.AddHours(1), Occurrences = 3 });
        await Store.UpdateAlertAsync(third with { Status = AlertStatus.Resolved, ResolvedBy = "owner", Note = "fixed" });
        await Assert.ThrowsAsync<ArgumentException>(() => Store.UpdateAlertAsync(first with { Id = "x-1" }));

        var acknowledged = (await Store.GetAlertAsync("al-2"))!;
        Assert.Equal((AlertStatus.Acknowledged, "owner", T0.AddHours(1), 3L), (acknowledged.Status, acknowledged.AcknowledgedBy, acknowledged.AcknowledgedAt, acknowledged.Occurrences));
        Assert.Equal(["al-3", "al-2", "al-1"], (await Store.ListAlertsAsync(null, 10)).Select(a => a.Id));
        Assert.Equal(["al-3", "al-2"], (await Store.ListAlertsAsync(null, 2)).Select(a => a.Id));
        Assert.Equal(["al-1"], (await Store.ListAlertsAsync(AlertStatus.Open, 10)).Select(a => a.Id));
        Assert.Equal(["al-2"], (await Store.ListAlertsAsync(AlertStatus.Acknowledged, 10)).Select(a => a.Id));
        Assert.Equal(["al-3"], (await Store.ListAlertsAsync(AlertStatus.Resolved, 10)).Select(a => a.Id));
        Assert.Equal("fixed", (await Store.ListAlertsAsync(AlertStatus.Resolved, 0)).Single().Note); // a limit below 1 still lists one
    }

    [Fact]
    public async Task Alerts_FindActive_IsTheNewestOpenOrAcknowledgedOfAFingerprint()
    {
        var first = await Store.CreateAlertAsync(NewAlert("f1", T0));
        var second = await Store.CreateAlertAsync(NewAlert("f1", T0.AddMinutes(1)));
        await Store.CreateAlertAsync(NewAlert("f2", T0.AddMinutes(2)));

        Assert.Equal(second.Id, (await Store.FindActiveAlertAsync("f1"))?.Id);
        await Store.UpdateAlertAsync(second with { Status = AlertStatus.Resolved, ResolvedBy = "owner" });
        Assert.Equal(first.Id, (await Store.FindActiveAlertAsync("f1"))?.Id);
        await Store.UpdateAlertAsync(first with { Status = AlertStatus.Acknowledged, AcknowledgedBy = "owner", AcknowledgedAt = T0.AddHours(1) });
        var acknowledged = await Store.FindActiveAlertAsync("f1");
        Assert.Equal((first.Id, AlertStatus.Acknowledged), (acknowledged?.Id, acknowledged?.Status));
        await Store.UpdateAlertAsync(first with { Status = AlertStatus.Resolved, ResolvedBy = "owner" });
        Assert.Null(await Store.FindActiveAlertAsync("f1"));
        Assert.Null(await Store.FindActiveAlertAsync("f3"));
    }

    [Fact]
    public async Task Alerts_ARowThatDoesNotRead_IsLeftOutOfTheLists_AndNamedByReadAlerts()
    {
        await Store.CreateAlertAsync(NewAlert("f1", T0));
        await Store.CreateAlertAsync(NewAlert("f2", T0.AddMinutes(1)));
        await Store.CreateAlertAsync(NewAlert("f3", T0.AddMinutes(2)));
        await ExecuteRawAsync("UPDATE alerts SET alert = substr(alert, 1, 100) WHERE number = 2");

        Assert.Equal(["al-3", "al-1"], (await Store.ListAlertsAsync(null, 10)).Select(a => a.Id));
        Assert.Equal(["al-3", "al-1"], (await Store.ListAlertsAsync(AlertStatus.Open, 10)).Select(a => a.Id));
        Assert.Null(await Store.GetAlertAsync("al-2"));
        var rows = new List<StoredAlert>();
        await foreach (var row in Store.ReadAlertsAsync(AlertStatus.Open))
        {
            rows.Add(row);
        }

        Assert.Equal([1L, 2L, 3L], rows.Select(r => r.Number));
        Assert.Null(rows[1].Alert);
        Assert.NotNull(rows[1].Error);
        Assert.Equal("al-3", rows[2].Alert?.Id);
    }

    [Fact]
    public async Task GetConsumerModelsAsync_GivesEachAllowedPairOnce()
    {
        Assert.Empty(await Store.GetConsumerModelsAsync());
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        await Store.AppendAsync(
        [
            chain.Append(Request("r1", "acme", "a", Decision.Allow, T0, model: "m1")),
            chain.Append(Request("r2", "acme", "a", Decision.Allow, T0, model: "m1")),
            chain.Append(Request("r3", "acme", "a", Decision.Allow, T0, model: "m2")),
            chain.Append(Request("r4", "acme", "b", Decision.Deny, T0, model: "m3")),
            chain.Append(Request("r5", "acme", "c", Decision.Allow, T0, model: null)),
            chain.Append(Admin(T0)),
        ]);
        await Store.AppendAsync([chain.Append(Request("r6", "acme", "b", Decision.Allow, T0.AddDays(45), model: "m1"))]);

        var pairs = await Store.GetConsumerModelsAsync();

        Assert.Equal([("a", "m1"), ("a", "m2"), ("b", "m1")], pairs.Order());
    }

    // ---------------------------------------------------------------- request totals

    private static async Task<List<string>> TotalsAsync(ICustosStore store, DateTimeOffset from, DateTimeOffset to, bool byMinute = false)
    {
        var rows = new List<string>();
        await foreach (var t in store.ReadTotalsAsync(byMinute ? RequestTotals.MinuteSeconds : RequestTotals.SlotSeconds, from, to))
        {
            rows.Add($"{t.Slot:HH:mm} {t.Tenant}/{t.Service}/{t.Consumer ?? "-"} {t.Decision} [{string.Join(",", t.Reasons)}] {t.Requests} {t.Spend.ToString("0.#########", System.Globalization.CultureInfo.InvariantCulture)} {t.Currency ?? "-"}");
        }

        return rows;
    }

    private static RequestRecord Priced(RequestRecord record, string currency = "USD")
    {
        record.Currency = currency;
        return record;
    }

    [Fact]
    public async Task AppendAsync_AddsEachRequestToItsQuarterHoursAndItsMinutesTotal_AcrossBatches_ToTheNinthDecimal()
    {
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        await Store.AppendAsync(
        [
            chain.Append(Priced(Request("r1", "acme", "a", Decision.Allow, T0, cost: 0.1m))),
            chain.Append(Priced(Request("r2", "acme", "a", Decision.Allow, T0.AddMinutes(14).AddSeconds(59), cost: 0.2m))),
            chain.Append(Request("r3", "acme", "b", Decision.Deny, T0.AddMinutes(1))),
            chain.Append(Priced(Request("r4", "acme", "a", Decision.Allow, T0.AddMinutes(15), cost: 0.0000000004m))), // the ledger says 0.000000000
            chain.Append(Admin(T0.AddMinutes(2))),
            chain.Append(Priced(Request("r5", "globex", "c", Decision.Allow, T0.AddMinutes(20), service: null, cost: 1m), "EUR")),
        ]);
        await Store.AppendAsync(
        [
            chain.Append(Priced(Request("r6", "acme", "a", Decision.Allow, T0.AddMinutes(7), cost: 0.000000001m))),
            chain.Append(Priced(Request("r7", "acme", "a", Decision.Allow, T0.AddSeconds(59), cost: 0.000000002m))),
        ]);

        Assert.Equal(
        [
            "00:00 acme/svc/a allow [] 4 0.300000003 USD",
            "00:00 acme/svc/b deny [deny.model_not_entitled] 1 0 -",
            "00:15 acme/svc/a allow [] 1 0 USD",
            "00:15 globex//c allow [] 1 1 EUR",
        ], await TotalsAsync(Store, T0, T0.AddHours(1)));
        Assert.Equal(2, (await TotalsAsync(Store, T0.AddTicks(1), T0.AddHours(1))).Count); // a slot that starts before 'from' is not read
        Assert.Equal(2, (await TotalsAsync(Store, T0, T0.AddMinutes(15))).Count); // nor one that starts at 'to'
        Assert.Empty(await TotalsAsync(Store, T0.AddHours(1), T0.AddHours(2)));

        Assert.Equal(
        [
            "00:00 acme/svc/a allow [] 2 0.100000002 USD",
            "00:01 acme/svc/b deny [deny.model_not_entitled] 1 0 -",
            "00:07 acme/svc/a allow [] 1 0.000000001 USD",
            "00:14 acme/svc/a allow [] 1 0.2 USD",
            "00:15 acme/svc/a allow [] 1 0 USD",
            "00:20 globex//c allow [] 1 1 EUR",
        ], await TotalsAsync(Store, T0, T0.AddHours(1), byMinute: true));
        Assert.Equal(5, (await TotalsAsync(Store, T0.AddTicks(1), T0.AddHours(1), byMinute: true)).Count);
        Assert.Equal(3, (await TotalsAsync(Store, T0, T0.AddMinutes(14), byMinute: true)).Count);
    }

    [Fact]
    public async Task AppendAsync_CostsFarBeyondAnyBill_AreAddedUpExactly_NotLost()
    {
        // A provider that reports absurd usage gives absurd costs; they must neither stop the ledger writer nor be rounded.
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        await Store.AppendAsync([chain.Append(Priced(Request("r1", "acme", "a", Decision.Allow, T0, cost: 98_765_432_109_876.543210987m)))]);
        await Store.AppendAsync([chain.Append(Priced(Request("r2", "acme", "a", Decision.Allow, T0.AddMinutes(1), cost: 0.999999999m)))]);
        await Store.AppendAsync([chain.Append(Priced(Request("r3", "acme", "a", Decision.Allow, T0.AddMinutes(2), cost: 0.000000014m)))]);

        Assert.Equal(["00:00 acme/svc/a allow [] 3 98765432109877.543211 USD"], await TotalsAsync(Store, T0, T0.AddHours(1)));
    }

    [Fact]
    public async Task AppendAsync_TwoNodesAddingToTheSameTotalsAtOnce_CountEveryRequest()
    {
        var second = await OpenSecondNodeAsync();
        var consumers = new[] { "a", "b", "c", "d", "e" };
        async Task AppendManyAsync(ICustosStore store, string node, bool reversed)
        {
            var chain = new HashChain(node, 0, HashChain.Genesis);
            for (var batch = 0; batch < 20; batch++)
            {
                var order = reversed ? consumers.Reverse() : consumers;
                await store.AppendAsync([.. order.Select(c => chain.Append(Priced(Request($"{node}-{batch}-{c}", "acme", c, Decision.Allow,
                    T0.AddMinutes(Array.IndexOf(consumers, c) * 15), cost: 0.5m))))]);
            }
        }

        await Task.WhenAll(Task.Run(() => AppendManyAsync(Store, "n1", false)), Task.Run(() => AppendManyAsync(second, "n2", true)));

        var totals = new List<RequestTotal>();
        await foreach (var t in Store.ReadTotalsAsync(RequestTotals.SlotSeconds, T0, T0.AddDays(1)))
        {
            totals.Add(t);
        }

        Assert.Equal(5, totals.Count);
        Assert.All(totals, t => Assert.Equal((40L, 20m), (t.Requests, t.Spend)));
        var minutes = new List<RequestTotal>();
        await foreach (var t in Store.ReadTotalsAsync(RequestTotals.MinuteSeconds, T0, T0.AddDays(1)))
        {
            minutes.Add(t);
        }

        Assert.Equal(totals.Select(t => (t.Slot, t.Consumer, 40L, 20m)), minutes.Select(t => (t.Slot, t.Consumer, t.Requests, t.Spend)));
    }

    [Fact]
    public async Task OpenAsync_OfAStoreMadeBeforeTheTotals_FillsThemInFromEveryEntry_ThenKeepsAddingToThem()
    {
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        await Store.AppendAsync(
        [
            chain.Append(Priced(Request("old", "acme", "a", Decision.Allow, T0.AddYears(-1), cost: 7m))),
            chain.Append(Priced(Request("r1", "acme", "a", Decision.Allow, T0, cost: 0.25m))),
            chain.Append(Priced(Request("r2", "acme", "a", Decision.Allow, T0.AddMinutes(3), cost: 0.5m))),
            chain.Append(Request("r3", "acme", "b", Decision.Deny, T0.AddHours(1))),
            chain.Append(Admin(T0)),
        ]);
        var written = await TotalsAsync(Store, T0.AddYears(-2), T0.AddDays(1));
        var writtenByMinute = await TotalsAsync(Store, T0.AddYears(-2), T0.AddDays(1), byMinute: true);
        Assert.Equal((3, 4), (written.Count, writtenByMinute.Count));

        await ExecuteRawAsync(BeforeRequestTotalsSql);
        var upgraded = await OpenSecondNodeAsync();

        Assert.Equal(written, await TotalsAsync(upgraded, T0.AddYears(-2), T0.AddDays(1)));
        Assert.Equal(writtenByMinute, await TotalsAsync(upgraded, T0.AddYears(-2), T0.AddDays(1), byMinute: true));
        await upgraded.AppendAsync([chain.Append(Priced(Request("r4", "acme", "a", Decision.Allow, T0.AddMinutes(5), cost: 0.25m)))]);
        Assert.Equal("00:00 acme/svc/a allow [] 3 1 USD", (await TotalsAsync(upgraded, T0, T0.AddMinutes(15))).Single());
        Assert.Equal("00:05 acme/svc/a allow [] 1 0.25 USD", (await TotalsAsync(upgraded, T0.AddMinutes(5), T0.AddMinutes(6), byMinute: true)).Single());
    }

    [Fact]
    public async Task OpenAsync_OfAStoreMadeBeforeTheTotalsByMinute_FillsThemIn_WithoutAddingTheQuarterHoursTwice()
    {
        var chain = new HashChain("n1", 0, HashChain.Genesis);
        await Store.AppendAsync(
        [
            chain.Append(Priced(Request("r1", "acme", "a", Decision.Allow, T0, cost: 0.25m))),
            chain.Append(Priced(Request("r2", "acme", "a", Decision.Allow, T0.AddMinutes(3), cost: 0.5m))),
        ]);
        var byMinute = await TotalsAsync(Store, T0, T0.AddDays(1), byMinute: true);
        Assert.Equal(2, byMinute.Count);

        await ExecuteRawAsync(BeforeMinuteTotalsSql);
        var upgraded = await OpenSecondNodeAsync();

        Assert.Equal(byMinute, await TotalsAsync(upgraded, T0, T0.AddDays(1), byMinute: true));
        Assert.Equal("00:00 acme/svc/a allow [] 2 0.75 USD", (await TotalsAsync(upgraded, T0, T0.AddDays(1))).Single()); // not added twice
    }

    [Fact]
    public async Task RequestTotals_AddUpTheEntriesTokens_WhichAStoreMadeBeforeThemFillsIn_AndVerificationChecks()
    {
        // What a token quota's counter starts from when a gateway starts (CounterSeeds): before, every allowed entry of the
        // month was read back; now a few totals per consumer and quarter hour.
        static RequestRecord WithTokens(RequestRecord record, long? input, long? output)
        {
            record.InputTokens = input;
            record.OutputTokens = output;
            return record;
        }

        var chain = new HashChain("n1", 0, HashChain.Genesis);
        await Store.AppendAsync(
        [
            chain.Append(WithTokens(Priced(Request("r1", "acme", "a", Decision.Allow, T0, cost: 0.25m)), 120, 30)),
            chain.Append(WithTokens(Priced(Request("r2", "acme", "a", Decision.Allow, T0.AddMinutes(3), cost: 0.5m)), 50, null)), // an embedding
            chain.Append(WithTokens(Request("r3", "acme", "b", Decision.Deny, T0.AddMinutes(20)), 40, null)),
            chain.Append(WithTokens(Priced(Request("r4", "acme", "b", Decision.Allow, T0.AddMinutes(21), cost: 0.1m)), -5, 7)), // a provider's nonsense counts as nothing
        ]);
        async Task<List<(DateTimeOffset, string?, string, long)>> TokensAsync(ICustosStore store, bool byMinute = false)
        {
            var rows = new List<(DateTimeOffset, string?, string, long)>();
            await foreach (var t in store.ReadTotalsAsync(byMinute ? RequestTotals.MinuteSeconds : RequestTotals.SlotSeconds, T0, T0.AddDays(1)))
            {
                rows.Add((t.Slot, t.Consumer, t.Decision, t.Tokens));
            }

            return rows;
        }

        (DateTimeOffset, string?, string, long)[] quarterHours = [(T0, "a", "allow", 200), (T0.AddMinutes(15), "b", "allow", 7), (T0.AddMinutes(15), "b", "deny", 40)];
        Assert.Equal(quarterHours, (await TokensAsync(Store)).Order());
        Assert.Equal([(T0, "a", "allow", 150), (T0.AddMinutes(3), "a", "allow", 50), (T0.AddMinutes(20), "b", "deny", 40), (T0.AddMinutes(21), "b", "allow", 7)],
            await TokensAsync(Store, byMinute: true));

        // A store of the version before: the tokens filled in from the entries, once.
        await ExecuteRawAsync(BeforeTokensSql);
        var upgraded = await OpenSecondNodeAsync();
        Assert.Equal(quarterHours, (await TokensAsync(upgraded)).Order());
        Assert.Equal(4, (await TokensAsync(upgraded, byMinute: true)).Count);
        Assert.Equal(["00:00 acme/svc/a allow [] 2 0.75 USD"], (await TotalsAsync(upgraded, T0, T0.AddMinutes(15)))); // not added twice

        // Tokens altered in the totals (a quota's counter would start from them): verification names them.
        using var key = System.Security.Cryptography.ECDsa.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP256);
        var options = new VerificationOptions { PublicKeys = [key] };
        Assert.True((await LedgerVerifier.VerifyAsync(upgraded, options)).Ok);
        await ExecuteRawAsync("UPDATE request_totals SET tokens = tokens - 150 WHERE consumer = 'a'");
        var problem = Assert.Single((await LedgerVerifier.VerifyAsync(upgraded, options)).Problems);
        Assert.StartsWith("the request totals of the quarter hour from 2026-11-01 00:00 UTC for tenant acme, service svc, consumer a, currency USD, allow, say 2 "
            + "request(s) costing 0.750000000 and 50 token(s), but the entries 2 costing 0.750000000 and 200: ", problem.Detail, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(250_000)] // added up in memory while the chains are read
    [InlineData(1)] // more totals than verification keeps in memory: added up again a day at a time
    public async Task Verify_AddsTheEntriesUpAgain_AndFindsAlteredOrMissingRequestTotals_OnceTheyAreSettled(int totalsKeptInMemory)
    {
        await Store.AppendAsync(EveryKind(new HashChain("n1", 0, HashChain.Genesis)));
        using var key = System.Security.Cryptography.ECDsa.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP256);
        var options = new VerificationOptions { PublicKeys = [key], TotalsKeptInMemory = totalsKeptInMemory };
        var clean = await LedgerVerifier.VerifyAsync(Store, options);
        Assert.True(clean.Ok);
        Assert.Equal(4, clean.TotalsCompared); // r1's and the unknown credential's refusal, by quarter hour and by minute

        // An insider lowers what consumer a spent, which the console's overview and spend read.
        await ExecuteRawAsync("UPDATE request_totals SET requests = requests + 1 WHERE consumer = 'a'");
        var problem = Assert.Single((await LedgerVerifier.VerifyAsync(Store, options)).Problems);
        Assert.Equal("altered_totals", problem.Kind);
        Assert.Equal("altered_totals: the request totals of the quarter hour from 2026-11-01 00:00 UTC for tenant acme, service svc, consumer a, allow, say "
            + "2 request(s) costing 0.000123400, but the entries 1 costing 0.000123400: the totals were altered, or a node of an earlier version appended "
            + "entries without them; the console's overview, spend, and the quotas and budgets when a gateway starts read them", problem.ToString());

        // The same by minute.
        await ExecuteRawAsync("UPDATE request_totals SET requests = requests - 1 WHERE consumer = 'a'");
        Assert.True((await LedgerVerifier.VerifyAsync(Store, options)).Ok);
        await ExecuteRawAsync("UPDATE request_minute_totals SET requests = requests + 2 WHERE consumer = 'a'");
        var byMinute = Assert.Single((await LedgerVerifier.VerifyAsync(Store, options)).Problems);
        Assert.Equal("altered_totals", byMinute.Kind);
        Assert.StartsWith("the request totals by minute of the quarter hour from 2026-11-01 00:00 UTC for tenant acme, service svc, consumer a, allow, add up to "
            + "3 request(s) costing 0.000123400, but the entries 1 costing 0.000123400: ", byMinute.Detail, StringComparison.Ordinal);
        await ExecuteRawAsync("UPDATE request_minute_totals SET requests = requests - 2 WHERE consumer = 'a'");

        // Moved thirty years back: a total where there are no entries (before the first of them), and entries without their
        // total; a day at a time, the days in between without either are skipped, not read.
        await ExecuteRawAsync("UPDATE request_totals SET slot = slot - 946080000 WHERE consumer = 'a'");
        var moved = (await LedgerVerifier.VerifyAsync(Store, options)).Problems;
        Assert.Equal(["say 1 request(s) costing 0.000123400, but the entries 0 costing 0", "say 0 request(s) costing 0, but the entries 1 costing 0.000123400"],
            moved.Select(p => p.Detail[(p.Detail.IndexOf(" say ", StringComparison.Ordinal) + 1)..p.Detail.IndexOf(": the totals", StringComparison.Ordinal)]));
        Assert.StartsWith("the request totals of the quarter hour from 1996-11-08 00:00 UTC", moved[0].Detail, StringComparison.Ordinal);
        await ExecuteRawAsync("UPDATE request_totals SET slot = slot + 946080000 WHERE consumer = 'a'");
        Assert.True((await LedgerVerifier.VerifyAsync(Store, options)).Ok);

        // Totals missing altogether; a range is not compared, nor are totals not yet settled (a running gateway adds to them).
        await ExecuteRawAsync("DELETE FROM request_totals");
        var missing = await LedgerVerifier.VerifyAsync(Store, options);
        Assert.Equal(2, missing.Problems.Count);
        Assert.All(missing.Problems, p => Assert.Contains("say 0 request(s) costing 0, but the entries 1", p.Detail, StringComparison.Ordinal));
        Assert.True((await LedgerVerifier.VerifyAsync(Store, options with { From = T0.AddYears(-1) })).Ok);
        var unsettled = await LedgerVerifier.VerifyAsync(Store, options with { Now = T0.AddMinutes(59) });
        Assert.Equal((true, 0L), (unsettled.Ok, unsettled.TotalsCompared));

        // Their tables gone: a problem named, not a crash.
        await ExecuteRawAsync("DROP TABLE request_totals");
        var gone = Assert.Single((await LedgerVerifier.VerifyAsync(Store, options)).Problems);
        Assert.Equal("altered_totals", gone.Kind);
        Assert.StartsWith("the request totals cannot be read (", gone.Detail, StringComparison.Ordinal);
        await ExecuteRawAsync("DROP TABLE request_minute_totals");
        var goneByMinute = Assert.Single((await LedgerVerifier.VerifyAsync(Store, options)).Problems);
        Assert.StartsWith("the request totals by minute cannot be read (", goneByMinute.Detail, StringComparison.Ordinal);
    }
}
