using System.Net;
using System.Security.Cryptography;
using System.Text;
using Custos.Errors;
using Custos.Gateway.Ledger;
using Custos.Ledger;
using Custos.Storage;
using Custos.Testing;
using Microsoft.Data.Sqlite;

namespace Custos.Gateway.Tests.Functional;

/// <summary>
/// The tamper matrix on a real store: a gateway writes and seals a ledger, stops, and then someone with write access to
/// the database file alters it in each way an insider could. Each alteration is found and pinned to its entry; a clean
/// store verifies; a witness outside the database catches even a rewrite re-sealed with the real key.
/// </summary>
public sealed class EvidenceTests : IAsyncLifetime
{
    private const int Requests = 40;
    private TestGateway _gateway = null!;
    private readonly List<string> _requestIds = [];
    private readonly List<string> _copies = [];

    private string Witness => Path.Combine(_gateway.DataDirectory, "witness");

    public async Task InitializeAsync()
    {
        var witness = Path.Combine(Path.GetTempPath(), "custos-witness-" + Guid.NewGuid().ToString("N"));
        _gateway = await TestGateway.StartAsync((Func<TestGateway, Custos.Policy.PolicyDocument, Custos.Policy.PolicyDocument>?)null,
            checkpoints: new CheckpointOptions { Every = 8, WitnessDirectory = witness });
        for (var i = 0; i < Requests; i++)
        {
            using var response = await _gateway.Client.SendAsync(_gateway.Post("/v1/chat/completions",
                """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"seal me"}],"max_tokens":8}"""));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            _requestIds.Add(TestGateway.RequestIdOf(response));
        }

        await _gateway.Gateway.DisposeAsync(); // drains the ledger, then seals its tail
        SqliteConnection.ClearAllPools();

        // Keep the witness beside the data, so each tampered copy carries the same witness.
        CopyDirectory(witness, Witness);
        Directory.Delete(witness, recursive: true);
    }

    public async Task DisposeAsync()
    {
        SqliteConnection.ClearAllPools();
        foreach (var copy in _copies)
        {
            Directory.Delete(copy, recursive: true);
        }

        await _gateway.DisposeAsync();
    }

    [Fact]
    public async Task ACleanStore_Verifies_EverythingSealed()
    {
        var result = await VerifyAsync(_gateway.DataDirectory);

        Assert.True(result.Ok, string.Join("\n", result.Problems));
        Assert.True(result.Entries > Requests, $"{result.Entries} entries");
        Assert.True(result.Checkpoints >= 5, $"{result.Checkpoints} checkpoints");
        Assert.Equal(0, result.Unsealed);
        Assert.Equal(result.Checkpoints, result.WitnessCheckpoints);
    }

    [Fact]
    public async Task AModifiedEntry_IsFoundAtItsSequence()
    {
        var (directory, seq, requestId) = await TamperAsync(async (db, target) =>
        {
            // One character of the stored JSON: the model's name.
            await ExecAsync(db, $"UPDATE ledger SET record = replace(custos_record(record), '\"gpt-4o-mini\"', '\"gpt-4o-maxi\"') WHERE seq = {target}");
        });

        var problem = Assert.Single((await VerifyAsync(directory)).Problems);
        Assert.Equal(("modified", seq, requestId), (problem.Kind, problem.Seq, problem.RequestId));

        // Without the chain's key (another node's, on a shared store), the key is named and the entries are still read:
        // the alteration is found all the same. The chain went unread before.
        var otherFolder = Path.Combine(Path.GetTempPath(), "custos-other-key-" + Guid.NewGuid().ToString("N"));
        _copies.Add(otherFolder);
        CheckpointKey.LoadOrCreate(otherFolder, out _).Dispose();
        using var otherPublic = CheckpointKey.LoadPublic(CheckpointKey.PublicPath(otherFolder));
        await using var store = await SqliteStore.OpenExistingAsync(directory);
        var result = await LedgerVerifier.VerifyAsync(store, new VerificationOptions { PublicKeys = [otherPublic] });
        Assert.Equal(["unknown_key", "modified"], result.Problems.Select(p => p.Kind));
        Assert.Equal(seq, result.Problems[1].Seq);
        Assert.Equal(seq - 1, result.Entries); // read up to the altered one
    }

    [Fact]
    public async Task AnAlteredSearchColumn_IsFoundAtItsSequence()
    {
        // The entry and its hashes untouched; only the column that searches and reports select a tenant's requests by.
        var (directory, seq, requestId) = await TamperAsync((db, target) => ExecAsync(db, $"UPDATE ledger SET tenant = 'globex' WHERE seq = {target}"));

        var problem = Assert.Single((await VerifyAsync(directory)).Problems);
        Assert.Equal(("altered_columns", seq, requestId), (problem.Kind, problem.Seq, problem.RequestId));
        Assert.Equal("its tenant column says 'globex' but the entry says 'acme': the row's search columns were altered, so searches and reports would miss it or count it wrongly",
            problem.Detail);
    }

    [Fact]
    public async Task ADeletedEntry_IsFoundAsMissing()
    {
        var (directory, seq, _) = await TamperAsync((db, target) => ExecAsync(db, $"DELETE FROM ledger WHERE seq = {target}"));

        var problem = Assert.Single((await VerifyAsync(directory)).Problems);
        Assert.Equal(("missing", seq), (problem.Kind, problem.Seq));
    }

    [Fact]
    public async Task AnInsertedEntry_BreaksTheLinkAfterIt()
    {
        var (directory, seq, _) = await TamperAsync(async (db, target) =>
        {
            // Make room at the target, then insert a forged entry that links correctly to the one before it.
            await ExecAsync(db, $"UPDATE ledger SET seq = -seq - 1 WHERE seq >= {target}");
            await ExecAsync(db, "UPDATE ledger SET seq = -seq WHERE seq < 0");
            var (prevHash, json) = await ScalarRowAsync(db, $"SELECT hash, custos_record(record) FROM ledger WHERE seq = {target - 1}");
            var forged = json.Replace("gpt-4o-mini", "gpt-4o", StringComparison.Ordinal);
            var hash = HashChain.Link(prevHash, Encoding.UTF8.GetBytes(forged));
            await ExecAsync(db, $"""
                INSERT INTO ledger (chain_id, seq, kind, ts, request_id, tenant, service, consumer, decision, model, record, prev_hash, hash)
                SELECT chain_id, {target}, kind, ts, request_id, tenant, service, consumer, decision, 'gpt-4o', '{forged.Replace("'", "''", StringComparison.Ordinal)}', '{prevHash}', '{hash}'
                FROM ledger WHERE seq = {target - 1}
                """);
        });

        var problem = Assert.Single((await VerifyAsync(directory)).Problems);
        Assert.Equal(("broken_link", seq + 1), (problem.Kind, problem.Seq));
    }

    [Fact]
    public async Task ReorderedEntries_BreakTheLink()
    {
        var (directory, seq, _) = await TamperAsync(async (db, target) =>
        {
            await ExecAsync(db, $"UPDATE ledger SET seq = -1 WHERE seq = {target}");
            await ExecAsync(db, $"UPDATE ledger SET seq = {target} WHERE seq = {target + 1}");
            await ExecAsync(db, $"UPDATE ledger SET seq = {target + 1} WHERE seq = -1");
        });

        var problem = Assert.Single((await VerifyAsync(directory)).Problems);
        Assert.Equal(("broken_link", seq), (problem.Kind, problem.Seq));
    }

    [Fact]
    public async Task TheLastEntryMovedOutOfTheChain_IsFoundAsATruncation()
    {
        // A sequence number that is no longer a number: the row no longer reads as part of the chain, and the store's highest
        // "sequence number" is whatever SQLite makes of the text. The checkpoint that sealed the entry is never reached.
        var (directory, _, _) = await TamperAsync((db, _) => ExecAsync(db, "UPDATE ledger SET seq = '9' || seq || 'x' WHERE seq = (SELECT max(seq) FROM ledger)"));

        var problem = Assert.Single((await VerifyAsync(directory)).Problems);
        Assert.Equal("truncated", problem.Kind);
    }

    [Fact]
    public async Task AnUnreadableCheckpoint_OrEntry_OrWitnessFile_IsAProblem_NotACrash()
    {
        var (checkpoint, _, _) = await TamperAsync((db, _) => ExecAsync(db, "UPDATE checkpoints SET checkpoint = '[1]' WHERE to_seq = (SELECT max(to_seq) FROM checkpoints)"));
        var problems = (await VerifyAsync(checkpoint)).Problems;
        Assert.Contains(problems, p => p.Kind == "unreadable_checkpoint" && p.Detail.Contains("not Array", StringComparison.Ordinal)
            && p.Detail.StartsWith("stored checkpoint ", StringComparison.Ordinal) && p.Detail.Contains(" of ", StringComparison.Ordinal));

        // Entries are stored compressed against a dictionary row from the first request entry on (the policy version
        // recorded at the start, entry 1, is stored as it is): without the row they cannot be read back.
        var (dictionary, _, _) = await TamperAsync((db, _) => ExecAsync(db, "DROP TRIGGER record_dictionaries_no_delete; DELETE FROM record_dictionaries"));
        var unreadable = Assert.Single((await VerifyAsync(dictionary)).Problems);
        Assert.Equal(("unreadable", 2L), (unreadable.Kind, unreadable.Seq));
        Assert.Contains("does not hold: the database was altered", unreadable.Detail, StringComparison.Ordinal);

        var (witness, _, _) = await TamperAsync((_, _) => Task.CompletedTask);
        await File.WriteAllTextAsync(Path.Combine(witness, "witness", "stray.json"), """{"checkpoint": 1}""");
        var stray = Assert.Single((await VerifyAsync(witness)).Problems);
        Assert.Equal("witness_mismatch", stray.Kind);
        Assert.Contains("stray.json is not a checkpoint", stray.Detail, StringComparison.Ordinal);

        // A witness folder with nothing in it (the wrong folder, or one emptied) vouches for nothing: not a pass.
        var (emptied, _, _) = await TamperAsync((_, _) => Task.CompletedTask);
        foreach (var file in Directory.EnumerateFiles(Path.Combine(emptied, "witness"), "*.json", SearchOption.AllDirectories))
        {
            File.Delete(file);
        }

        var empty = Assert.Single((await VerifyAsync(emptied)).Problems);
        Assert.Equal("witness_mismatch", empty.Kind);
        Assert.Contains("holds no checkpoint", empty.Detail, StringComparison.Ordinal);

        // A checkpoint the witness lacks before its last one of the chain: its write failed, or its file was removed.
        var (gap, _, _) = await TamperAsync((_, _) => Task.CompletedTask);
        var files = Directory.EnumerateFiles(Path.Combine(gap, "witness"), "*.json", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToArray();
        Assert.True(files.Length >= 3, $"{files.Length} witness files");
        File.Delete(files[1]);
        var lacking = Assert.Single((await VerifyAsync(gap)).Problems);
        Assert.Equal("witness_mismatch", lacking.Kind);
        Assert.Contains("the witness lacks checkpoint", lacking.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public async Task CheckpointsTheWitnessCouldNotTake_AreWrittenWithTheNextOne()
    {
        // A failed write was only logged: the witness kept a gap for good.
        var witness = Path.Combine(Path.GetTempPath(), "custos-witness-gap-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(witness);
        var blocker = Path.Combine(witness, "test-node"); // a file where the chain's folder goes: every write fails
        await File.WriteAllTextAsync(blocker, "not a folder");
        await using var g = await TestGateway.StartAsync((Func<TestGateway, Custos.Policy.PolicyDocument, Custos.Policy.PolicyDocument>?)null,
            checkpoints: new CheckpointOptions { Every = 4, WitnessDirectory = witness });
        try
        {
            await SendAsync(g, 12);
            await g.Gateway.Ledger.FlushAsync();
            await g.Gateway.Checkpointer.SealAsync();
            var stored = (await g.Gateway.Store.GetCheckpointsAsync("test-node")).Count;
            Assert.True(stored >= 2, $"{stored} checkpoints");

            File.Delete(blocker);
            await SendAsync(g, 4);
            await g.Gateway.Ledger.FlushAsync();
            await g.Gateway.Checkpointer.SealAsync();

            var all = await g.Gateway.Store.GetCheckpointsAsync("test-node");
            Assert.All(all, c => Assert.True(File.Exists(Checkpointer.WitnessPath(witness, "test-node", c.Checkpoint.ToSeq)), $"checkpoint {c.Checkpoint.ToSeq} not witnessed"));
        }
        finally
        {
            Directory.Delete(witness, recursive: true);
        }

        static async Task SendAsync(TestGateway g, int count)
        {
            for (var i = 0; i < count; i++)
            {
                using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions",
                    """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"seal me"}],"max_tokens":8}"""));
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            }
        }
    }

    [Fact]
    public async Task NoGatewayStartsOnAChainHead_OrALastCheckpoint_ThatWasAltered()
    {
        // Chaining onto either would write entries no verification can follow: the start stops and says why.
        var (head, _, _) = await TamperAsync((db, _) => ExecAsync(db, "UPDATE ledger SET hash = 'zz' WHERE seq = (SELECT max(seq) FROM ledger)"));
        var error = await Assert.ThrowsAsync<InvalidDataException>(() => TestGateway.StartAsync(null, options: o => o with { DataDirectory = head }));
        Assert.Contains("is not a SHA-256: the store was altered", error.Message, StringComparison.Ordinal); // the head, sealed or not yet

        var (checkpoint, _, _) = await TamperAsync((db, _) => ExecAsync(db, "UPDATE checkpoints SET checkpoint = '[1]' WHERE to_seq = (SELECT max(to_seq) FROM checkpoints)"));
        error = await Assert.ThrowsAsync<InvalidDataException>(() => TestGateway.StartAsync(null, options: o => o with { DataDirectory = checkpoint }));
        Assert.StartsWith("The last stored checkpoint of chain test-node cannot be read", error.Message, StringComparison.Ordinal);

        // Entries deleted from the chain's end, its last checkpoint's among them: new entries would take their numbers and
        // chain onto the checkpoint, and what reads as a deletion now would read as a fork.
        var (truncated, _, _) = await TamperAsync((db, _) => ExecAsync(db, "DELETE FROM ledger WHERE seq >= (SELECT max(to_seq) FROM checkpoints) - 1"));
        var before = await CountRowsAsync(truncated);
        error = await Assert.ThrowsAsync<InvalidDataException>(() => TestGateway.StartAsync(null, options: o => o with { DataDirectory = truncated }));
        Assert.StartsWith("Chain test-node of the ledger ends before entry ", error.Message, StringComparison.Ordinal);
        Assert.Contains("entries were deleted from its end, or the store was restored from an older copy", error.Message, StringComparison.Ordinal);
        Assert.Equal(before, await CountRowsAsync(truncated)); // nothing written after it
        Assert.Contains((await VerifyAsync(truncated)).Problems, p => p.Kind == "truncated");
    }

    private static async Task<long> CountRowsAsync(string directory)
    {
        await using var db = new SqliteConnection($"Data Source={Path.Combine(directory, "custos.db")};Pooling=false");
        await db.OpenAsync();
        await using var command = db.CreateCommand();
        command.CommandText = "SELECT count(*) FROM ledger";
        return (long)(await command.ExecuteScalarAsync())!;
    }

    [Fact]
    public async Task EntriesNoSignedCheckpointSealsForLong_AreAProblem_NotAnOkWithATally()
    {
        // A whole chain forged beside the real ones, with no checkpoint, verified as "OK, n entries not sealed yet". A running
        // gateway seals within seconds and every stop seals the rest, so entries unsealed for an hour are vouched for by nothing.
        var gateway = await TestGateway.StartAsync((Func<TestGateway, Custos.Policy.PolicyDocument, Custos.Policy.PolicyDocument>?)null,
            checkpoints: new CheckpointOptions { Every = 1_000, Interval = TimeSpan.FromHours(1) }); // nothing sealed until the stop
        try
        {
            await gateway.Gateway.Ledger.FlushAsync();
            await gateway.Gateway.Checkpointer.SealAsync(); // the ledger is sealed up to here
            var sealedTo = gateway.Gateway.Checkpointer.SealedSeq;
            using (var response = await gateway.Client.SendAsync(gateway.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}""")))
            {
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            }

            await gateway.Gateway.Ledger.FlushAsync();
            await using var store = await SqliteStore.OpenReadOnlyAsync(gateway.DataDirectory, null);
            using var key = CheckpointKey.LoadPublic(CheckpointKey.PublicPath(gateway.DataDirectory));
            VerificationOptions At(DateTimeOffset now) => new() { PublicKeys = [key], Now = now };

            var fresh = await LedgerVerifier.VerifyAsync(store, At(DateTimeOffset.UtcNow));
            var stale = await LedgerVerifier.VerifyAsync(store, At(DateTimeOffset.UtcNow + LedgerVerifier.UnsealedGrace + TimeSpan.FromMinutes(1)));

            Assert.True(fresh.Ok, string.Join("; ", fresh.Problems.Select(p => p.Detail)));
            Assert.True(fresh.Unsealed > 0);
            var problem = Assert.Single(stale.Problems);
            Assert.Equal(("unsealed", sealedTo + 1), (problem.Kind, problem.Seq));
            Assert.Contains("sealed by no signed checkpoint", problem.Detail, StringComparison.Ordinal);
        }
        finally
        {
            await gateway.DisposeAsync();
        }
    }

    [Fact]
    public async Task ACheckpointTakesItsLastEntrysTime_FromTheEntry_NotFromItsAlterableColumn()
    {
        var gateway = await TestGateway.StartAsync((Func<TestGateway, Custos.Policy.PolicyDocument, Custos.Policy.PolicyDocument>?)null,
            checkpoints: new CheckpointOptions { Every = 1_000, Interval = TimeSpan.FromHours(1) }); // nothing sealed until the stop
        try
        {
            using (var response = await gateway.Client.SendAsync(gateway.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}""")))
            {
                Assert.Equal(HttpStatusCode.OK, response.StatusCode); // released once its entry is committed
            }

            // Before the seal, the last entry's time column is moved a year back, where a windowed verification would not look.
            await using (var db = new SqliteConnection($"Data Source={Path.Combine(gateway.DataDirectory, "custos.db")};Pooling=false"))
            {
                await db.OpenAsync();
                await ExecAsync(db, "DROP TRIGGER ledger_no_update; UPDATE ledger SET ts = '2025-11-30T00:00:00.000000Z' WHERE seq = (SELECT max(seq) FROM ledger)");
            }

            await gateway.Gateway.DisposeAsync(); // seals the tail
            SqliteConnection.ClearAllPools();
            await using var store = await SqliteStore.OpenExistingAsync(gateway.DataDirectory);
            var sealedAt = Assert.Single(await store.GetCheckpointsAsync("test-node")).Checkpoint.LastEntryAt;
            var last = await store.ReadChainAsync("test-node", 1, long.MaxValue).LastAsync();
            Assert.Equal(LedgerColumns.Read(last.Json)!.Timestamp, LedgerTime.Format(sealedAt));
            Assert.True(sealedAt > DateTimeOffset.UtcNow.AddDays(-1), $"sealed as {sealedAt:O}");
            Assert.Equal("altered_columns", Assert.Single((await VerifyAsync(gateway.DataDirectory, witness: false)).Problems).Kind);
        }
        finally
        {
            await gateway.DisposeAsync();
        }
    }

    [Fact]
    public async Task ATruncatedTail_IsFound()
    {
        var (directory, _, _) = await TamperAsync((db, _) => ExecAsync(db, "DELETE FROM ledger WHERE seq > (SELECT max(seq) - 3 FROM ledger)"));

        var problem = Assert.Single((await VerifyAsync(directory)).Problems);
        Assert.Equal("truncated", problem.Kind);
    }

    [Fact]
    public async Task ARewriteResealedWithAnotherKey_IsFound_AndWithTheRealKey_OnlyTheWitnessCatchesIt()
    {
        // Another key: the checkpoints no longer verify with the gateway's public key.
        var attackerFolder = Path.Combine(Path.GetTempPath(), "custos-attacker-" + Guid.NewGuid().ToString("N"));
        _copies.Add(attackerFolder);
        using var attacker = CheckpointKey.LoadOrCreate(attackerFolder, out _);
        var (forged, seq, _) = await TamperAsync((db, target) => RewriteAndResealAsync(db, target, attacker));
        var problem = Assert.Single((await VerifyAsync(forged, witness: false)).Problems);
        Assert.Equal("unknown_key", problem.Kind);

        // The real key (an insider with the key file too): the database alone is consistent again...
        using var real = CheckpointKey.LoadOrCreate(_gateway.DataDirectory, out _);
        var (resealed, _, _) = await TamperAsync((db, target) => RewriteAndResealAsync(db, target, real));
        Assert.True((await VerifyAsync(resealed, witness: false)).Ok);

        // ... but not with the witness that kept the original checkpoints outside the database.
        var withWitness = await VerifyAsync(resealed);
        Assert.Contains(withWitness.Problems, p => p.Kind == "witness_mismatch" && p.Detail.Contains("differs", StringComparison.Ordinal));
        Assert.True(seq > 0);
    }

    [Fact]
    public async Task AProofBundle_VerifiesOffline_AndFailsWhenAnyByteChanges()
    {
        await using var store = await SqliteStore.OpenExistingAsync(_gateway.DataDirectory);
        var bundle = await LedgerProofs.BuildAsync(store, _requestIds[17]);
        using var key = CheckpointKey.LoadPublic(CheckpointKey.PublicPath(_gateway.DataDirectory));
        var checks = bundle.Verify(key);
        Assert.All(checks, c => Assert.True(c.Ok, $"{c.Check}: {c.Detail}"));
        Assert.Equal(7, checks.Count);

        // Every single-byte change of the bundle makes it unreadable or invalid.
        var bytes = Encoding.UTF8.GetBytes(bundle.ToJson());
        for (var i = 0; i < bytes.Length; i++)
        {
            var copy = (byte[])bytes.Clone();
            copy[i] ^= 0x01;
            bool valid;
            try
            {
                valid = ProofBundle.Parse(Encoding.UTF8.GetString(copy)).Verify(key).All(c => c.Ok);
            }
            catch (System.Text.Json.JsonException)
            {
                valid = false;
            }

            Assert.False(valid, $"byte {i} ('{(char)bytes[i]}') changed and the bundle still verified");
        }

        // And another gateway's public key does not verify it.
        using var other = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        Assert.Contains(bundle.Verify(other), c => c.Check == "checkpoint signature" && !c.Ok);
    }

    [Fact]
    public async Task AProofBundle_WithAMemberTheFormatLacks_IsUnreadable_AndAWrongPolicyHash_IsNamed()
    {
        await using var store = await SqliteStore.OpenExistingAsync(_gateway.DataDirectory);
        var bundle = await LedgerProofs.BuildAsync(store, _requestIds[17]);
        using var key = CheckpointKey.LoadPublic(CheckpointKey.PublicPath(_gateway.DataDirectory));

        // A claim the verifier would not check ("approved_by") is refused, at the top and inside a member.
        var root = System.Text.Json.Nodes.JsonNode.Parse(bundle.ToJson())!.AsObject();
        root["approved_by"] = "the board";
        var fault = Assert.Throws<System.Text.Json.JsonException>(() => ProofBundle.Parse(root.ToJsonString()));
        Assert.Equal("it takes no field 'approved_by'", JsonFaults.DescribeDocument(Encoding.UTF8.GetBytes(root.ToJsonString()), fault));
        root.Remove("approved_by");
        root["policy"]!["approved_by"] = "the board";
        Assert.Throws<System.Text.Json.JsonException>(() => ProofBundle.Parse(root.ToJsonString()));

        // A policy.sha256 that is not the policy text's hash: the check names both, not the computed one twice.
        var forged = bundle with { Policy = bundle.Policy with { Sha256 = new string('a', 64) } };
        var check = Assert.Single(forged.Verify(key), c => c.Check == "policy version");
        Assert.False(check.Ok);
        Assert.Contains($"sha256 {bundle.Policy.Sha256} (the bundle's policy.sha256 says {new string('a', 64)})", check.Detail, StringComparison.Ordinal);
    }

    /// <summary>Values a doctored bundle might hold where the format has another: wrong types, wrong lengths, not hex, huge.</summary>
    private static readonly System.Text.Json.Nodes.JsonNode?[] Doctored =
    [
        null, "", "x", -1, 0, 1, long.MaxValue, long.MinValue, 1.5, true, new System.Text.Json.Nodes.JsonArray(), new System.Text.Json.Nodes.JsonObject(),
        new string('a', 65), new string('0', 64), new string('F', 64), new string('f', 62), "zz", new string('a', 70_000), "\ud800",
        new System.Text.Json.Nodes.JsonArray("00", "zz"), new System.Text.Json.Nodes.JsonArray((System.Text.Json.Nodes.JsonNode?)null),
    ];

    [Fact]
    public async Task DoctoredProofBundles_AreUnreadableOrInvalid_NeverACrash()
    {
        await using var store = await SqliteStore.OpenExistingAsync(_gateway.DataDirectory);
        var bundle = await LedgerProofs.BuildAsync(store, _requestIds[17]);
        using var key = CheckpointKey.LoadPublic(CheckpointKey.PublicPath(_gateway.DataDirectory));
        var original = bundle.ToJson();
        var random = new Random(4242);
        string[] fragments = ["null", "\"\"", "-1", "9223372036854775807", "1e400", "[]", "{}", "\"x\"", "\\u0000", "\\ud800", "true", ",", "\"hash\":\"00\","];
        int unreadable = 0, invalid = 0;
        for (var i = 0; i < 3_000; i++)
        {
            // Half: bytes cut, flipped, repeated or inserted. Half: one member of the bundle (at any depth) replaced or removed.
            string doctored;
            if (i % 2 == 0)
            {
                doctored = Encoding.UTF8.GetString(Mutations.Apply(Encoding.UTF8.GetBytes(original), random, fragments, most: 3));
            }
            else
            {
                var root = System.Text.Json.Nodes.JsonNode.Parse(original)!;
                var places = new List<(System.Text.Json.Nodes.JsonNode Parent, string? Name, int Index)>();
                Walk(root, places);
                var (parent, name, index) = places[random.Next(places.Count)];
                var value = Doctored[random.Next(Doctored.Length)]?.DeepClone();
                if (parent is System.Text.Json.Nodes.JsonObject members)
                {
                    if (random.Next(5) == 0)
                    {
                        members.Remove(name!);
                    }
                    else
                    {
                        members[name!] = value;
                    }
                }
                else
                {
                    ((System.Text.Json.Nodes.JsonArray)parent)[index] = value;
                }

                doctored = root.ToJsonString();
            }

            ProofBundle parsed;
            try
            {
                parsed = ProofBundle.Parse(doctored);
            }
            catch (System.Text.Json.JsonException)
            {
                unreadable++;
                continue;
            }

            var checks = parsed.Verify(key); // never throws: a doctored bundle is INVALID with the check that failed
            if (checks.All(c => c.Ok))
            {
                Assert.Equal(original, parsed.ToJson()); // only a change of layout (spaces) leaves it valid
            }
            else
            {
                invalid++;
            }
        }

        Assert.True(unreadable > 300 && invalid > 300, $"{unreadable} unreadable, {invalid} invalid");

        static void Walk(System.Text.Json.Nodes.JsonNode node, List<(System.Text.Json.Nodes.JsonNode, string?, int)> places)
        {
            if (node is System.Text.Json.Nodes.JsonObject members)
            {
                foreach (var (name, child) in members.ToList())
                {
                    places.Add((members, name, -1));
                    if (child is not null)
                    {
                        Walk(child, places);
                    }
                }
            }
            else if (node is System.Text.Json.Nodes.JsonArray items)
            {
                for (var i = 0; i < items.Count; i++)
                {
                    places.Add((items, null, i));
                    if (items[i] is { } child)
                    {
                        Walk(child, places);
                    }
                }
            }
        }
    }

    private static Task<VerificationResult> VerifyAsync(string directory, bool witness = true)
        => VerifyCoreAsync(directory, witness);

    private static async Task<VerificationResult> VerifyCoreAsync(string directory, bool witness)
    {
        await using var store = await SqliteStore.OpenExistingAsync(directory);
        using var key = CheckpointKey.LoadPublic(CheckpointKey.PublicPath(directory));
        return await LedgerVerifier.VerifyAsync(store, new VerificationOptions
        {
            PublicKeys = [key],
            WitnessDirectory = witness ? Path.Combine(directory, "witness") : null,
        });
    }

    /// <summary>Copies the sealed data folder, lifts the append-only triggers (entries and checkpoints), and lets <paramref name="tamper"/> alter entry 20 (or around it).</summary>
    private async Task<(string Directory, long Seq, string? RequestId)> TamperAsync(Func<SqliteConnection, long, Task> tamper)
    {
        var copy = Path.Combine(Path.GetTempPath(), "custos-tamper-" + Guid.NewGuid().ToString("N"));
        _copies.Add(copy);
        // Earlier tests read the original through pooled connections. The last of them to close checkpoints the log into the
        // database and deletes it; were that to happen while the files are copied, the copy would miss entries. So close them now.
        SqliteConnection.ClearAllPools();
        CopyDirectory(_gateway.DataDirectory, copy);
        await using var db = new SqliteConnection($"Data Source={Path.Combine(copy, "custos.db")};Pooling=false");
        await db.OpenAsync();
        LedgerRecordCodec.AddFunctions(db); // records are stored compressed: read them as JSON (and write them back as TEXT)
        await ExecAsync(db, "DROP TRIGGER ledger_no_update; DROP TRIGGER ledger_no_delete; DROP TRIGGER checkpoints_no_update; DROP TRIGGER checkpoints_no_delete;");
        // Entry 20, or the next one that does not end a checkpoint interval (there a rewrite shows as a checkpoint mismatch first).
        var (target, _) = await ScalarRowAsync(db, "SELECT coalesce(CAST(min(seq) AS TEXT), ''), '' FROM ledger WHERE seq >= 20 AND seq NOT IN (SELECT to_seq FROM checkpoints)");
        if (target.Length == 0)
        {
            // Not seen in a run since the pools are cleared above; should it come back, say what the copy held.
            var (count, checkpoints) = await ScalarRowAsync(db, "SELECT CAST(count(*) AS TEXT), (SELECT CAST(count(*) AS TEXT) FROM checkpoints) FROM ledger");
            Assert.Fail($"the copy holds {count} entries and {checkpoints} checkpoints; files: "
                + string.Join(", ", new DirectoryInfo(copy).GetFiles().Select(f => $"{f.Name} {f.Length} B")));
        }

        var (requestId, _) = await ScalarRowAsync(db, $"SELECT coalesce(request_id, ''), '' FROM ledger WHERE seq = {target}");
        await tamper(db, long.Parse(target, System.Globalization.CultureInfo.InvariantCulture));
        return (copy, long.Parse(target, System.Globalization.CultureInfo.InvariantCulture), requestId.Length == 0 ? null : requestId);
    }

    /// <summary>What an insider who can also sign would do: alter an entry, re-chain everything after it, re-seal every checkpoint.</summary>
    private static async Task RewriteAndResealAsync(SqliteConnection db, long target, CheckpointKey key)
    {
        // The entry and its search column alike: the database alone then says nothing of the change.
        await ExecAsync(db, $"UPDATE ledger SET record = replace(custos_record(record), '\"gpt-4o-mini\"', '\"gpt-4o-maxi\"'), model = 'gpt-4o-maxi' WHERE seq = {target}");
        var rows = new List<(long Seq, string Json, string Ts)>();
        await using (var command = db.CreateCommand())
        {
            command.CommandText = "SELECT seq, custos_record(record), ts FROM ledger ORDER BY seq";
            await using var reader = await command.ExecuteReaderAsync();
            while (await reader.ReadAsync())
            {
                rows.Add((reader.GetInt64(0), reader.GetString(1), reader.GetString(2)));
            }
        }

        var hashes = new Dictionary<long, string>();
        var prev = HashChain.Genesis;
        foreach (var (seq, json, _) in rows)
        {
            var hash = HashChain.Link(prev, Encoding.UTF8.GetBytes(json));
            await ExecAsync(db, $"UPDATE ledger SET prev_hash = '{prev}', hash = '{hash}' WHERE seq = {seq}");
            hashes[seq] = hash;
            prev = hash;
        }

        var intervals = new List<Checkpoint>();
        await using (var command = db.CreateCommand())
        {
            command.CommandText = "SELECT checkpoint FROM checkpoints ORDER BY to_seq";
            await using var reader = await command.ExecuteReaderAsync();
            while (await reader.ReadAsync())
            {
                intervals.Add(Checkpoint.Parse(reader.GetString(0)));
            }
        }

        await ExecAsync(db, "DELETE FROM checkpoints");
        foreach (var original in intervals)
        {
            var leaves = Enumerable.Range((int)original.FromSeq, (int)original.Count).Select(s => Convert.FromHexString(hashes[s])).ToList();
            var signed = key.Sign(original with
            {
                PrevHash = original.FromSeq == 1 ? HashChain.Genesis : hashes[original.FromSeq - 1],
                HeadHash = hashes[original.ToSeq],
                MerkleRoot = Convert.ToHexStringLower(MerkleTree.Root(leaves)),
                KeyId = key.KeyId,
            });
            await using var insert = db.CreateCommand();
            insert.CommandText = "INSERT INTO checkpoints (chain_id, to_seq, from_seq, checkpoint, signature) VALUES ($c, $t, $f, $j, $s)";
            insert.Parameters.AddWithValue("$c", original.ChainId);
            insert.Parameters.AddWithValue("$t", original.ToSeq);
            insert.Parameters.AddWithValue("$f", original.FromSeq);
            insert.Parameters.AddWithValue("$j", signed.Json);
            insert.Parameters.AddWithValue("$s", signed.Signature);
            await insert.ExecuteNonQueryAsync();
        }
    }

    private static async Task ExecAsync(SqliteConnection db, string sql)
    {
        await using var command = db.CreateCommand();
        command.CommandText = sql;
        await command.ExecuteNonQueryAsync();
    }

    private static async Task<(string, string)> ScalarRowAsync(SqliteConnection db, string sql)
    {
        await using var command = db.CreateCommand();
        command.CommandText = sql;
        await using var reader = await command.ExecuteReaderAsync();
        Assert.True(await reader.ReadAsync(), sql);
        return (reader.GetString(0), reader.GetString(1));
    }

    private static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            var target = Path.Combine(to, Path.GetRelativePath(from, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
    }
}

/// <summary>The webhook witness: each checkpoint reaches the receiver, signed, through the durable outbox.</summary>
public sealed class WitnessWebhookTests
{
    [Fact]
    public async Task EveryCheckpoint_IsPostedToTheWitness_SignedByTheGatewaysKey()
    {
        var receiver = new RecordingHandler();
        await using var g = await TestGateway.StartAsync((Func<TestGateway, Custos.Policy.PolicyDocument, Custos.Policy.PolicyDocument>?)null,
            notificationHandler: receiver, checkpoints: new CheckpointOptions { Every = 4, WitnessWebhook = new Uri("http://witness.test/custos") });
        for (var i = 0; i < 10; i++)
        {
            using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"w"}]}"""));
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }

        await g.Gateway.Ledger.FlushAsync();
        await g.Gateway.Checkpointer.SealAsync();
        var sealedTo = g.Gateway.Checkpointer.SealedSeq;
        using var key = CheckpointKey.LoadPublic(CheckpointKey.PublicPath(g.DataDirectory));
        var last = await receiver.WaitForAsync(body => Checkpoint.Parse(body.GetProperty("checkpoint").GetString()!).ToSeq == sealedTo);
        var signed = new SignedCheckpoint(last.GetProperty("checkpoint").GetString()!, last.GetProperty("signature").GetString()!);
        Assert.True(signed.VerifySignature(key));
        Assert.All(receiver.Received, r => Assert.Equal("http://witness.test/custos", r.Uri.ToString()));

        // The witness holds a continuous series of checkpoints from the start of the chain.
        var series = receiver.Received.Select(r => Checkpoint.Parse(r.Body.GetProperty("checkpoint").GetString()!)).OrderBy(c => c.ToSeq).ToList();
        Assert.Equal(1, series[0].FromSeq);
        for (var i = 1; i < series.Count; i++)
        {
            Assert.Equal(series[i - 1].ToSeq + 1, series[i].FromSeq);
            Assert.Equal(series[i - 1].HeadHash, series[i].PrevHash);
        }
    }
}

/// <summary>How often the chain is sealed while requests keep coming.</summary>
public sealed class CheckpointCadenceTests
{
    [Fact]
    public async Task UnderSteadyLoad_ACheckpointSealsEveryNEntries_NotEveryBatch()
    {
        // A seal used to read on while the writer stored more, and sealed each newly stored batch on its own: under
        // steady load one checkpoint (a signature, a witness copy) per batch instead of per 'Every' entries.
        const int every = 16, workers = 4, perWorker = 100;
        var witness = Path.Combine(Path.GetTempPath(), "custos-witness-" + Guid.NewGuid().ToString("N")); // a copy of each is written: a seal takes a while
        await using var g = await TestGateway.StartAsync((Func<TestGateway, Custos.Policy.PolicyDocument, Custos.Policy.PolicyDocument>?)null,
            checkpoints: new CheckpointOptions { Every = every, Interval = TimeSpan.FromHours(1), WitnessDirectory = witness });

        await Task.WhenAll(Enumerable.Range(0, workers).Select(async _ =>
        {
            for (var i = 0; i < perWorker; i++)
            {
                using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"c"}]}"""));
                Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            }
        }));
        await g.Gateway.Ledger.FlushAsync();
        var entries = g.Gateway.Ledger.Persisted;
        var checkpoints = await g.Gateway.Store.GetCheckpointsAsync();

        Assert.True(entries >= workers * perWorker);
        Assert.NotEmpty(checkpoints);
        Assert.True(checkpoints.Count <= entries / every + 1, $"{checkpoints.Count} checkpoints for {entries} entries, sealing every {every}");
        Directory.Delete(witness, recursive: true);
    }
}
