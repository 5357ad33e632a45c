using System.Security.Cryptography;
using System.Text;
using Custos.Errors;
using Custos.Gateway.Ledger;
using Custos.Ledger;
using Custos.Storage;
using Custos.Testing;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging.Abstractions;

namespace Custos.Gateway.Tests.Ledger;

/// <summary>The local spool on its own: what goes in comes back byte for byte, and damage is found, not passed on.</summary>
public sealed class LedgerSpoolTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "custos-spool-" + Guid.NewGuid().ToString("N"));

    internal static RequestRecord Request(int i, string node = "node-a") => new()
    {
        RequestId = $"req_{i:D26}",
        NodeId = node,
        Method = "POST",
        Endpoint = "/v1/chat/completions",
        Timestamp = new DateTimeOffset(2026, 3, 1, 12, 0, 0, TimeSpan.Zero).AddMilliseconds(i),
        Tenant = "acme",
        Service = "support",
        Consumer = "web",
        Category = "external",
        CredentialId = "cred-web",
        Model = "gpt-4o-mini",
        Status = 200,
        Cost = 0.000123m * i,
        Currency = "USD",
        PolicyVersion = 3,
        PromptSha256 = new string('a', 64),
        ClientAddress = "127.0.0.1",
        AgentRun = "run \"quoted\" \u00e9\u4e2d\n",
    };

    private static List<ChainedRecord> Chain(HashChain chain, int from, int count)
    {
        var records = new List<ChainedRecord>();
        for (var i = from; i < from + count; i++)
        {
            LedgerRecord record = (i % 10) switch
            {
                3 => new AdminRecord { Timestamp = DateTimeOffset.UnixEpoch.AddDays(i), Tenant = "acme", Actor = "admin:root", Action = "credential.revoked", Target = "credential:c", Before = "active", After = "revoked", Reason = "leak", PolicyVersion = 4 },
                7 => new ShedRecord { Timestamp = DateTimeOffset.UnixEpoch.AddDays(i), First = DateTimeOffset.UnixEpoch, NodeId = "node-a", Reasons = new Dictionary<string, long> { ["unavailable.ledger"] = 3, ["unavailable.overloaded"] = 1 }, PolicyVersion = 4 },
                5 => Denied(i),
                _ => Request(i),
            };
            records.Add(chain.Append(record));
        }

        return records;

        static RequestRecord Denied(int i)
        {
            var record = Request(i);
            record.Fail(Reasons.CredentialRevoked, Outcome.Denied);
            return record;
        }
    }

    /// <summary>Spools <paramref name="count"/> records of chain node-a, from seq 1, into one segment file, and closes the spool.</summary>
    private (List<ChainedRecord> Written, string Segment) WriteOneSegment(int count)
    {
        var written = Chain(new HashChain("node-a", 0, HashChain.Genesis), 1, count);
        using var spool = LedgerSpool.Open(_root, "node-a");
        spool.Append(written);
        return (written, Assert.Single(spool.Segments));
    }

    [Fact]
    public void EveryRecord_ComesBackByteForByte_WithWhatStoresIndex()
    {
        var chain = new HashChain("node-a", 0, HashChain.Genesis);
        var written = Chain(chain, 1, 40);
        using (var spool = LedgerSpool.Open(_root, "node-a"))
        {
            spool.Append(written.Take(25).ToList());
            spool.Append(written.Skip(25).ToList());
            Assert.Equal(40, spool.Count);
        }

        using var reopened = LedgerSpool.Open(_root, "node-a");
        Assert.Equal(40, reopened.Count);
        Assert.Equal(40, reopened.TailSeq);
        Assert.Equal(written[^1].Hash, reopened.TailHash);
        var (_, read) = reopened.ReadOldest()!.Value;
        Assert.Equal(written.Count, read.Count);
        for (var i = 0; i < written.Count; i++)
        {
            var (expected, actual) = (written[i], read[i]);
            Assert.Equal(expected.ChainId, actual.ChainId);
            Assert.Equal(expected.Seq, actual.Seq);
            Assert.Equal(expected.PrevHash, actual.PrevHash);
            Assert.Equal(expected.Hash, actual.Hash);
            Assert.Equal(expected.Canonical.ToArray(), actual.Canonical.ToArray());
            Assert.Equal(expected.Record.Kind, actual.Record.Kind);
            Assert.Equal(expected.Record.Timestamp, actual.Record.Timestamp);
            Assert.Equal(expected.Record.Tenant, actual.Record.Tenant);
            if (expected.Record is RequestRecord request)
            {
                var restored = Assert.IsType<RequestRecord>(actual.Record);
                Assert.Equal(request.RequestId, restored.RequestId);
                Assert.Equal(request.Service, restored.Service);
                Assert.Equal(request.Consumer, restored.Consumer);
                Assert.Equal(request.CredentialId, restored.CredentialId);
                Assert.Equal(request.Model, restored.Model);
                Assert.Equal(request.Decision, restored.Decision);
                Assert.Equal(request.Cost, restored.Cost); // stores sum spend from it
            }
        }

        // Each line is readable as it is: one JSON object naming its chain, place and hashes.
        var line = File.ReadLines(Assert.Single(reopened.Segments)).First();
        Assert.StartsWith("""{"chain_id":"node-a","seq":1,"kind":"request","prev_hash":"000""", line, StringComparison.Ordinal);
    }

    [Fact]
    public void ATornLastLine_IsCutOff_WhenTheSpoolOpens()
    {
        var (written, segment) = WriteOneSegment(5);

        var complete = new FileInfo(segment).Length;
        var next = new HashChain("node-a", written[^1].Seq, written[^1].Hash).Append(Request(6)); // the chain continued
        // The process died while writing the next batch: half a line.
        File.AppendAllText(segment, """{"chain_id":"node-a","seq":6,"kind":"request","prev_hash":" """.TrimEnd());

        using var reopened = LedgerSpool.Open(_root, "node-a");
        Assert.Equal(5, reopened.Count);
        Assert.Equal(5, reopened.TailSeq);
        Assert.Equal(complete, new FileInfo(segment).Length);
        reopened.Append([next]); // a new run appends to a new segment
        Assert.Equal(6, reopened.Count);
        Assert.Equal([1L, 2, 3, 4, 5, 6], reopened.Segments.SelectMany(s => LedgerSpool.ReadSegment(s, "node-a", cutTornTail: false)).Select(r => r.Seq));
    }

    [Fact]
    public void ADamagedLine_IsRefused_NotSkipped()
    {
        var (_, segment) = WriteOneSegment(5);

        var text = File.ReadAllText(segment);
        File.WriteAllText(segment, text.Replace("\"consumer\":\"web\"", "\"consumer\":\"bob\"", StringComparison.Ordinal), new UTF8Encoding(false));

        var error = Assert.Throws<InvalidDataException>(() => LedgerSpool.Open(_root, "node-a"));
        Assert.Contains("does not match its hash", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void DamagedSpools_OpenAsAnUnbrokenPrefix_OrAreRefusedAsInvalidData()
    {
        // What a disk or a careless hand can do to a spool between two runs: bytes cut, flipped, repeated, inserted.
        var (written, segment) = WriteOneSegment(20);

        var original = File.ReadAllBytes(segment);
        var random = new Random(2026);
        string[] fragments = ["\n", "null", "\"seq\":", "9223372036854775808", "1e400", "\"x\"", "{}", "[]", "-", "\"cost\":\"1e99\"", "\"policy_version\":99999999999999999999"];
        int opened = 0, refused = 0;
        for (var i = 0; i < 2_000; i++)
        {
            // One in ten is what a crash leaves: the file cut anywhere. That opens as the lines before the cut.
            File.WriteAllBytes(segment, i % 10 == 0 ? original[..random.Next(original.Length)] : Mutations.Apply(original, random, fragments, most: 3));
            try
            {
                using var reopened = LedgerSpool.Open(_root, "node-a");
                var back = reopened.Segments.SelectMany(s => LedgerSpool.ReadSegment(s, "node-a", cutTornTail: false)).ToList();
                Assert.True(back.Count <= written.Count);
                Assert.Equal(written.Take(back.Count).Select(r => (r.Seq, r.Hash, Convert.ToHexString(r.Canonical.Span))),
                    back.Select(r => (r.Seq, r.Hash, Convert.ToHexString(r.Canonical.Span)))); // only what was written, in order, never altered
                Assert.Equal(back.Count, reopened.Count);
                opened++;
            }
            catch (InvalidDataException)
            {
                refused++; // the operator is told which segment and line, and the gateway does not start on it
            }

            Directory.CreateDirectory(Path.GetDirectoryName(segment)!);
        }

        Assert.True(opened >= 200 && refused > 1_500, $"{opened} opened, {refused} refused");
    }

    [Fact]
    public void Segments_RollOver_AndAreReadAndDeletedOldestFirst()
    {
        var chain = new HashChain("node/a", 0, HashChain.Genesis);
        using var spool = LedgerSpool.Open(_root, "node/a", segmentBytes: 4096);
        for (var i = 0; i < 10; i++)
        {
            spool.Append(Chain(chain, 1 + (i * 4), 4));
        }

        Assert.True(spool.Segments.Count > 2, $"{spool.Segments.Count} segments");
        Assert.Equal(Path.Combine(_root, "node_a"), spool.Directory);
        long expected = 1;
        while (spool.ReadOldest() is var (path, records))
        {
            Assert.Equal(expected, records[0].Seq);
            expected = records[^1].Seq + 1;
            spool.Drained(records.Count);
            spool.DeleteOldest(path);
            Assert.False(File.Exists(path));
        }

        Assert.Equal(41, expected);
        Assert.Equal(0, spool.Count);
        Assert.Empty(Directory.GetFiles(spool.Directory));
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
        }
    }
}

/// <summary>The ledger writer with a store that fails, hangs or loses answers, and a spool on a temporary folder.</summary>
public sealed class LedgerWriterSpoolTests : IAsyncLifetime
{
    private const string Node = "node-a";
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "custos-writer-" + Guid.NewGuid().ToString("N"));
    private SqliteStore _sqlite = null!;
    private FailableLedgerStore _store = null!;

    private string SpoolRoot => Path.Combine(_directory, "spool");

    private LedgerWriterOptions Options => new()
    {
        SpoolDirectory = SpoolRoot,
        RetryDelay = TimeSpan.FromMilliseconds(20),
        RetryInterval = TimeSpan.FromMilliseconds(100),
        AppendTimeout = TimeSpan.FromSeconds(10),
        StopTimeout = TimeSpan.FromMilliseconds(500),
    };

    public async Task InitializeAsync()
    {
        _sqlite = await SqliteStore.OpenAsync(_directory);
        _store = new FailableLedgerStore(_sqlite);
    }

    public async Task DisposeAsync()
    {
        await _sqlite.DisposeAsync();
        SqliteConnection.ClearAllPools();
        Directory.Delete(_directory, recursive: true);
    }

    private Task<LedgerWriter> StartAsync(LedgerWriterOptions? options = null)
        => LedgerWriter.StartAsync(_store, Node, NullLogger.Instance, options ?? Options);

    private static Task RecordAsync(LedgerWriter writer, int from, int count)
        => Task.WhenAll(Enumerable.Range(from, count).Select(i => writer.RecordAsync(LedgerSpoolTests.Request(i, Node)).AsTask()));

    /// <summary>The store's chain, checked link by link, and its request ids in order.</summary>
    private async Task<List<string?>> StoredChainAsync()
    {
        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var result = await LedgerVerifier.VerifyAsync(_sqlite, new VerificationOptions { PublicKeys = [key] });
        Assert.True(result.Ok, string.Join("; ", result.Problems));
        var ids = new List<string?>();
        await foreach (var entry in _sqlite.ReadChainAsync(Node, 1, long.MaxValue))
        {
            Assert.Equal(ids.Count + 1, entry.Seq);
            ids.Add(entry.RequestId);
        }

        return ids;
    }

    private static List<string?> Ids(int from, int count) => [.. Enumerable.Range(from, count).Select(i => (string?)$"req_{i:D26}")];

    [Fact]
    public async Task WhileTheStoreIsDown_RecordsAreSpooledAndDurable_ThenMovedIntoTheStoreInOrder()
    {
        await using var writer = await StartAsync();
        await RecordAsync(writer, 1, 3);
        _store.Failing = true;

        await RecordAsync(writer, 4, 20).WaitAsync(Bound); // durable: in the spool
        await RecordAsync(writer, 24, 20).WaitAsync(Bound);

        Assert.Equal(40, writer.Spooled);
        Assert.True(writer.IsHealthy);
        Assert.Equal(43, writer.Persisted);
        Assert.Equal(3, (await StoredChainAsync()).Count);
        Assert.NotEmpty(Directory.GetFiles(LedgerSpool.DirectoryOf(SpoolRoot, Node)));

        _store.Failing = false;
        await writer.WaitForSpoolDrainedAsync().WaitAsync(Bound);
        await RecordAsync(writer, 44, 2).WaitAsync(Bound);

        Assert.Equal(Ids(1, 45), await StoredChainAsync());
        Assert.Empty(Directory.GetFiles(LedgerSpool.DirectoryOf(SpoolRoot, Node)));
    }

    [Fact]
    public async Task AnAppendWhoseAnswerWasLost_IsNotStoredTwice()
    {
        await using var writer = await StartAsync();
        _store.CommitThenFail = true; // committed, then the store went down before answering: spooled as well
        await RecordAsync(writer, 1, 1).WaitAsync(Bound);
        await RecordAsync(writer, 2, 1).WaitAsync(Bound);
        Assert.Equal(2, writer.Spooled);
        Assert.Equal(1, _store.Appends);

        _store.Failing = false;
        await writer.WaitForSpoolDrainedAsync().WaitAsync(Bound);

        Assert.Equal(Ids(1, 2), await StoredChainAsync());
    }

    [Fact]
    public async Task ACrashMidDrain_LeavesNoDuplicate_AndTheNextStartFinishesTheDrain()
    {
        var first = await StartAsync();
        await RecordAsync(first, 1, 2);
        _store.Failing = true;
        await RecordAsync(first, 3, 30).WaitAsync(Bound);
        await first.DisposeAsync(); // the store is still down: the records stay in the spool
        Assert.Equal(30, first.Spooled);

        // A drain committed its first chunk, then the process died before deleting the segment.
        var segment = Assert.Single(Directory.GetFiles(LedgerSpool.DirectoryOf(SpoolRoot, Node)));
        var spooled = LedgerSpool.ReadSegment(segment, Node, cutTornTail: false);
        await _sqlite.AppendAsync(spooled.Take(10).ToList());

        _store.Failing = false;
        await using var second = await StartAsync();
        Assert.Equal(0, second.Spooled);
        Assert.False(File.Exists(segment));
        await RecordAsync(second, 33, 1);

        Assert.Equal(Ids(1, 33), await StoredChainAsync());
    }

    [Fact]
    public async Task StartingWhileTheStoreIsStillDown_ContinuesAfterTheSpool_WithoutAFork()
    {
        var first = await StartAsync();
        await RecordAsync(first, 1, 2);
        _store.Failing = true;
        await RecordAsync(first, 3, 5).WaitAsync(Bound);
        await first.DisposeAsync();

        await using var second = await StartAsync();
        await RecordAsync(second, 8, 5).WaitAsync(Bound);
        Assert.Equal(10, second.Spooled);

        _store.Failing = false;
        await second.WaitForSpoolDrainedAsync().WaitAsync(Bound);

        Assert.Equal(Ids(1, 12), await StoredChainAsync());
    }

    [Fact]
    public async Task WhenNeitherStoreNorSpoolAcceptsRecords_TheWriterIsUnhealthy_AndRecordsWaitUntilTheStoreIsBack()
    {
        await using var writer = await StartAsync();
        await RecordAsync(writer, 1, 1);
        File.WriteAllText(SpoolRoot, "not a folder"); // the spool cannot be created
        _store.Failing = true;

        var waiting = RecordAsync(writer, 2, 3);
        await Eventually.TrueAsync(() => !writer.IsHealthy, "the writer reports itself unhealthy");
        Assert.False(waiting.IsCompleted);

        _store.Failing = false;
        await waiting.WaitAsync(Bound);
        Assert.True(writer.IsHealthy);
        Assert.Equal(Ids(1, 4), await StoredChainAsync());
    }

    [Fact]
    public async Task StoppingWhileNothingAcceptsRecords_FailsTheirWaits_WithinTheBound()
    {
        var writer = await StartAsync();
        await RecordAsync(writer, 1, 1);
        File.WriteAllText(SpoolRoot, "not a folder");
        _store.Failing = true;
        var waiting = writer.RecordAsync(LedgerSpoolTests.Request(2, Node)).AsTask();
        await Eventually.TrueAsync(() => !writer.IsHealthy, "the writer reports itself unhealthy");

        var stopping = System.Diagnostics.Stopwatch.StartNew();
        await writer.DisposeAsync().AsTask().WaitAsync(Bound);

        Assert.InRange(stopping.Elapsed, TimeSpan.Zero, TimeSpan.FromSeconds(5));
        await Assert.ThrowsAsync<InvalidOperationException>(() => waiting);
        Assert.Equal(1, writer.Lost);
        await Assert.ThrowsAnyAsync<InvalidOperationException>(() => writer.RecordAsync(LedgerSpoolTests.Request(3, Node)).AsTask());
    }

    [Fact]
    public async Task AStoreThatHangs_IsGivenUpOn_AndItsLateCommitIsNotStoredTwice()
    {
        await using var writer = await StartAsync(Options with { AppendTimeout = TimeSpan.FromMilliseconds(300) });
        await RecordAsync(writer, 1, 1);
        _store.CloseGate();

        await RecordAsync(writer, 2, 4).WaitAsync(Bound); // durable in the spool while the store hangs
        Assert.True(writer.Spooled > 0);

        _store.OpenGate(); // the hung append commits after all
        await writer.WaitForSpoolDrainedAsync().WaitAsync(Bound);
        await RecordAsync(writer, 6, 1).WaitAsync(Bound);

        Assert.Equal(Ids(1, 6), await StoredChainAsync());
    }

    [Fact]
    public async Task AHungAppendThatCommitsLate_StoresTheBytesItWasGiven_ThoughLaterBatchesWereSealedMeanwhile()
    {
        // The writer seals each batch's canonical bytes into memory it reuses once the batch is durable; a hung append
        // still reads its batch when it commits, so that memory must not be reused for the batches sealed meanwhile.
        await using var writer = await StartAsync(Options with { AppendTimeout = TimeSpan.FromMilliseconds(300) });
        await RecordAsync(writer, 1, 1);
        _store.CloseGate();

        await RecordAsync(writer, 2, 4).WaitAsync(Bound); // the hung append's batch, spooled
        for (var i = 6; i < 60; i += 6)
        {
            await RecordAsync(writer, i, 6).WaitAsync(Bound); // sealed and spooled while the append still hangs
        }

        _store.OpenGate(); // the hung append reads its batch now, and commits
        await writer.WaitForSpoolDrainedAsync().WaitAsync(Bound);

        Assert.Equal(Ids(1, 59), await StoredChainAsync()); // every entry's bytes match its hash
    }

    [Fact]
    public async Task ConcurrentRecords_ShareCommits_AndTheirPooledWaitsAreReused()
    {
        await using var writer = await StartAsync();
        for (var round = 0; round < 5; round++)
        {
            var appendsBefore = _store.Appends;
            await RecordAsync(writer, 1 + (round * 200), 200).WaitAsync(Bound);
            Assert.InRange(_store.Appends - appendsBefore, 1, 100);
        }

        Assert.Equal(Ids(1, 1000), await StoredChainAsync());
    }
}
