using System.Buffers;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Custos.Ledger;

/// <summary>One thing verification found wrong, pinned to where it is.</summary>
/// <param name="Kind">
/// <c>modified</c>, <c>missing</c> (deleted), <c>broken_link</c> (inserted, reordered or a rewritten hash), <c>truncated</c>,
/// <c>checkpoint_mismatch</c>, <c>checkpoint_gap</c>, <c>bad_signature</c>, <c>unknown_key</c>, <c>witness_mismatch</c>, <c>unreadable</c> (the store cannot give back an entry: the last good one is the one before <paramref name="Seq"/>), and for the store's
/// own tables beside the ledger <c>altered_policy_version</c>, <c>unrecorded_policy_version</c>, <c>altered_access_request</c>,
/// <c>unrecorded_access_request</c>, <c>altered_alert</c>, <c>unrecorded_alert</c> (<c>RecordedChanges</c>).
/// </param>
/// <param name="ChainId">The chain.</param>
/// <param name="Seq">The first bad sequence number, when there is one.</param>
/// <param name="RequestId">The request id of that entry, when it is a request entry.</param>
/// <param name="Detail">What is wrong, in words.</param>
public sealed record VerificationProblem(string Kind, string ChainId, long? Seq, string? RequestId, string Detail)
{
    /// <inheritdoc/>
    public override string ToString()
        => Kind + (ChainId.Length == 0 ? "" : $": chain {ChainId}") + (Seq is { } seq ? $", seq {seq}" : "") + (RequestId is null ? "" : $" ({RequestId})") + ": " + Detail;
}

/// <summary>What verification covered and found.</summary>
public sealed record VerificationResult
{
    /// <summary>Chains verified.</summary>
    public required int Chains { get; init; }

    /// <summary>Entries whose hashes were recomputed.</summary>
    public required long Entries { get; init; }

    /// <summary>Request totals (quarter hours by who and how) compared with what the entries add up to; 0 when a range was verified.</summary>
    public long TotalsCompared { get; init; }

    /// <summary>Checkpoints whose signatures, heads and Merkle roots were checked.</summary>
    public required int Checkpoints { get; init; }

    /// <summary>Witness checkpoints compared with the database.</summary>
    public int WitnessCheckpoints { get; init; }

    /// <summary>Entries after the last checkpoint of their chain: chained, not yet sealed.</summary>
    public required long Unsealed { get; init; }

    /// <summary>Everything found wrong: the first problem of each chain, then witness problems.</summary>
    public required IReadOnlyList<VerificationProblem> Problems { get; init; }

    /// <summary>How long it took.</summary>
    public TimeSpan Elapsed { get; init; }

    /// <summary>True when nothing is wrong.</summary>
    public bool Ok => Problems.Count == 0;
}

/// <summary>What to verify.</summary>
public sealed record VerificationOptions
{
    /// <summary>Public keys whose checkpoints are trusted. Required: at least one.</summary>
    public required IReadOnlyList<ECDsa> PublicKeys { get; init; }

    /// <summary>Verify only checkpoint intervals that end at or after this instant (the interval before it anchors the start).</summary>
    public DateTimeOffset? From { get; init; }

    /// <summary>Verify only checkpoint intervals that start before this instant.</summary>
    public DateTimeOffset? To { get; init; }

    /// <summary>A directory witness to compare the database's checkpoints with.</summary>
    public string? WitnessDirectory { get; init; }

    /// <summary>When verification starts, for which request totals are settled; default: the system clock's now.</summary>
    public DateTimeOffset? Now { get; init; }

    /// <summary>Told the number of entries verified so far, every 100,000 or so.</summary>
    public IProgress<long>? Progress { get; init; }

    /// <summary>
    /// How many request totals verification adds up in memory while it reads the chains (about 350 bytes each); a ledger
    /// with more is added up again a day at a time once the chains are read, from the entries of each day, so that memory
    /// stays bounded however long the ledger (a gateway runs this for the posture report). Default 250,000.
    /// </summary>
    public int TotalsKeptInMemory { get; init; } = 250_000;
}

/// <summary>
/// Recomputes every chain and checks every checkpoint: a modified, deleted, inserted or reordered entry, a truncated
/// tail, a checkpoint re-signed with another key, and a database that disagrees with its witness are each found and
/// pinned to the first bad entry (chain, sequence, request id). Verifying the whole ledger also adds the request entries
/// up again and compares them with the stored request totals (<see cref="RequestTotals"/>), which the console's overview
/// and spend read: totals altered, or missing for entries a node of an earlier version appended, are found there.
/// </summary>
public static class LedgerVerifier
{
    /// <summary>Verifies the ledger in <paramref name="store"/>.</summary>
    public static async Task<VerificationResult> VerifyAsync(IEvidenceStore store, VerificationOptions options, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfZero(options.PublicKeys.Count);
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        var now = options.Now ?? DateTimeOffset.UtcNow;
        var wholeLedger = options.From is null && options.To is null;
        var totals = wholeLedger ? new RequestTotals() : null;
        var entryDays = new HashSet<long>(); // the days (UTC) with request entries, for the totals added up a day at a time
        var recordedChanges = wholeLedger ? new RecordedChanges() : null; // what the admin entries say of policy versions and access requests
        var keys = options.PublicKeys.ToDictionary(CheckpointKey.IdOf, k => k, StringComparer.Ordinal);
        var problems = new List<VerificationProblem>();
        // Checkpoints before chain heads: a checkpoint sealed in between (a running gateway) must not look like a truncation.
        IReadOnlyList<SignedCheckpoint> stored;
        IReadOnlyList<(string ChainId, long LastSeq, long Count)> chains;
        try
        {
            stored = await store.GetCheckpointsAsync(null, cancellationToken);
            chains = await store.GetChainsAsync(cancellationToken);
        }
        catch (System.Data.Common.DbException ex)
        {
            // The database itself is damaged (cut short, a page overwritten): nothing can be checked, which is a problem, not a crash.
            problems.Add(new("unreadable", "", null, null, $"the store's chains and checkpoints cannot be read ({FirstLine(ex)}): the database file is damaged"));
            return new VerificationResult { Chains = 0, Entries = 0, Checkpoints = 0, Unsealed = 0, Problems = problems, Elapsed = System.Diagnostics.Stopwatch.GetElapsedTime(started) };
        }

        var allCheckpoints = Readable(stored, problems);
        long entries = 0, unsealed = 0;
        var checkpointsChecked = 0;
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = ArrayPool<byte>.Shared.Rent(16 * 1024);
        try
        {
            foreach (var (chainId, lastSeq, _) in chains)
            {
                var checkpoints = allCheckpoints.Where(c => c.Checkpoint.ChainId == chainId).OrderBy(c => c.Checkpoint.ToSeq).ToList();
                VerificationProblem? problem = null;
                var unknownKey = false;

                // Checkpoints first: signed by a trusted key, and each continuing the one before. A key not given (another
                // node's, on a shared store) is reported once, and the chain's entries are still checked against its
                // checkpoints: with one node's key, every other chain went unread.
                for (var i = 0; i < checkpoints.Count && problem is null; i++)
                {
                    var c = checkpoints[i].Checkpoint;
                    if (!keys.TryGetValue(c.KeyId, out var key))
                    {
                        if (!unknownKey)
                        {
                            unknownKey = true;
                            problems.Add(new("unknown_key", chainId, c.FromSeq, null,
                                $"checkpoint {c.FromSeq}-{c.ToSeq} is signed by key {c.KeyId}, which is not a trusted key (re-signed?)"));
                        }
                    }
                    else if (!checkpoints[i].Signed.VerifySignature(key))
                    {
                        problem = new("bad_signature", chainId, c.FromSeq, null, $"the signature of checkpoint {c.FromSeq}-{c.ToSeq} does not verify");
                    }

                    if (problem is null && i > 0 && (c.FromSeq != checkpoints[i - 1].Checkpoint.ToSeq + 1 || c.PrevHash != checkpoints[i - 1].Checkpoint.HeadHash))
                    {
                        problem = new("checkpoint_gap", chainId, c.FromSeq, null, $"checkpoint {c.FromSeq}-{c.ToSeq} does not continue the one before it");
                    }
                }

                // Where to start: the whole chain, or from the checkpoint interval that contains From.
                var startIndex = 0;
                if (options.From is { } from)
                {
                    while (startIndex < checkpoints.Count && checkpoints[startIndex].Checkpoint.LastEntryAt < from)
                    {
                        startIndex++;
                    }
                }

                var firstSeq = startIndex == 0 ? 1 : checkpoints[startIndex - 1].Checkpoint.ToSeq + 1;
                var prevHash = startIndex == 0 ? HashChain.Genesis : checkpoints[startIndex - 1].Checkpoint.HeadHash;
                var endSeq = long.MaxValue;
                if (options.To is { } to)
                {
                    var last = checkpoints.FindIndex(startIndex, c => c.Checkpoint.LastEntryAt >= to);
                    endSeq = last >= 0 ? checkpoints[last].Checkpoint.ToSeq : long.MaxValue;
                }

                var cpIndex = startIndex;
                var leaves = new List<byte[]>();
                var expected = firstSeq;
                var sealedTo = checkpoints.Count > 0 ? checkpoints[^1].Checkpoint.ToSeq : 0;
                string? firstUnsealedAt = null;
                if (problem is null)
                {
                    try
                    {
                        await foreach (var entry in store.ReadChainAsync(chainId, firstSeq, endSeq, cancellationToken: cancellationToken))
                        {
                            if (entry.Seq != expected)
                            {
                                problem = new("missing", chainId, expected, null,
                                    entry.Seq > expected ? $"entries {expected}-{entry.Seq - 1} are missing (deleted)" : $"sequence {entry.Seq} appears out of order");
                                break;
                            }

                            if (entry.PrevHash != prevHash)
                            {
                                problem = new("broken_link", chainId, entry.Seq, entry.RequestId,
                                    "its prev_hash does not match the hash of the entry before it (an entry inserted, removed or reordered here)");
                                break;
                            }

                            var length = Encoding.UTF8.GetByteCount(entry.Json);
                            if (length > buffer.Length)
                            {
                                ArrayPool<byte>.Shared.Return(buffer);
                                buffer = ArrayPool<byte>.Shared.Rent(length);
                            }

                            Encoding.UTF8.GetBytes(entry.Json, buffer);
                            var hash = HashChain.Link(sha, prevHash, buffer.AsSpan(0, length));
                            if (hash != entry.Hash)
                            {
                                problem = new("modified", chainId, entry.Seq, entry.RequestId, "its content does not match its hash (the entry was altered)");
                                break;
                            }

                            var recorded = entry.Columns is not null || wholeLedger ? LedgerColumns.Read(buffer.AsSpan(0, length)) : null;
                            if (ColumnProblem(chainId, entry, recorded) is { } altered)
                            {
                                problem = altered;
                                break;
                            }

                            if (wholeLedger && recorded is { Kind: "request" } && LedgerTime.TryParse(recorded.Timestamp, out var at))
                            {
                                entryDays.Add(at.UtcTicks / TimeSpan.TicksPerDay);
                                totals?.Add(at, recorded.Tenant, recorded.Service, recorded.Consumer, recorded.Decision ?? "", recorded.Reasons, recorded.Currency, recorded.Cost, recorded.Tokens);
                                if (totals?.Count > options.TotalsKeptInMemory)
                                {
                                    totals = null; // added up a day at a time instead, below
                                }
                            }

                            if (recordedChanges is not null && recorded is { Kind: "admin" })
                            {
                                recordedChanges.Add(chainId, entry.Seq, buffer.AsSpan(0, length));
                            }

                            if (entry.Seq == sealedTo + 1)
                            {
                                firstUnsealedAt = entry.Timestamp;
                            }

                            prevHash = hash;
                            expected++;
                            entries++;
                            if (entries % 100_000 == 0)
                            {
                                options.Progress?.Report(entries);
                            }

                            if (cpIndex < checkpoints.Count)
                            {
                                leaves.Add(Convert.FromHexString(hash));
                                var c = checkpoints[cpIndex].Checkpoint;
                                if (entry.Seq == c.ToSeq)
                                {
                                    checkpointsChecked++;
                                    cpIndex++;
                                    var root = Convert.ToHexStringLower(MerkleTree.Root(leaves));
                                    leaves.Clear();
                                    if (c.HeadHash != hash || c.MerkleRoot != root)
                                    {
                                        problem = new("checkpoint_mismatch", chainId, c.FromSeq, null,
                                            $"the entries {c.FromSeq}-{c.ToSeq} are not the ones checkpoint {c.ToSeq} sealed (rewritten?)");
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    catch (InvalidDataException ex)
                    {
                        // The store could not give the entry back (a compressed record or its dictionary altered).
                        problem = new("unreadable", chainId, expected, null, $"the stored entry cannot be read: {ex.Message}");
                    }
                    catch (System.Data.Common.DbException ex)
                    {
                        // The database could not (a page of the file overwritten, the file cut short): the entries before are good.
                        problem = new("unreadable", chainId, expected, null, expected > firstSeq
                            ? $"the store cannot give back the entries after seq {expected - 1} ({FirstLine(ex)}): the database file is damaged; entries {firstSeq}-{expected - 1} read and verified"
                            : $"the store cannot give back the chain's entries from seq {firstSeq} ({FirstLine(ex)}): the database file is damaged");
                    }
                }

                // The walk must reach every checkpoint it set out to check, and every entry the store counts: a sequence number
                // altered so that its row no longer reads as part of the chain must not pass as an end that was never sealed.
                var lastRead = expected - 1;
                if (problem is null && cpIndex < checkpoints.Count && checkpoints[cpIndex].Checkpoint.ToSeq <= endSeq)
                {
                    problem = new("truncated", chainId, lastRead + 1, null, $"the chain ends at {lastRead}, but checkpoints seal it up to {sealedTo} (entries removed from the tail)");
                }
                else if (problem is null && endSeq == long.MaxValue && lastSeq > lastRead)
                {
                    problem = new("missing", chainId, lastRead + 1, null, $"the chain's entries end at {lastRead}, but its highest sequence number is {lastSeq}");
                }

                else if (problem is null && firstUnsealedAt is not null && allCheckpoints.Count > 0 && LedgerTime.TryParse(firstUnsealedAt, out var unsealedSince)
                    && unsealedSince < now - UnsealedGrace)
                {
                    // A gateway seals within seconds and at every stop, and a restart seals what a crash left: entries unsealed
                    // for long, in a ledger that is sealed, are vouched for by no signature (a whole chain forged beside the real
                    // ones is such entries). A ledger with no checkpoint at all is the posture report's RS.AN-07 failing.
                    problem = new("unsealed", chainId, sealedTo + 1, null,
                        $"entries {sealedTo + 1}-{lastSeq} are sealed by no signed checkpoint, the first since {LedgerTime.Format(unsealedSince)}: " +
                        "nothing signed vouches for them (a node that stopped without sealing and never started again, or entries written by something else)");
                }

                unsealed += Math.Max(0, lastSeq - sealedTo);
                if (problem is not null)
                {
                    problems.Add(problem);
                }
            }

            // The totals only where every chain was read whole: a chain cut short by a problem would make them all differ.
            long totalsCompared = 0;
            var chainsRead = problems.Count == 0;
            if (wholeLedger && chainsRead)
            {
                var check = new TotalsCheck(problems);
                var before = RequestTotals.SlotStart(RequestTotals.SlotOf(now - TotalsSettleAfter));
                if (totals is not null)
                {
                    await CompareTotalsAsync(store, totals, DateTimeOffset.MinValue, before, check, cancellationToken);
                }
                else
                {
                    await CompareTotalsByDayAsync(store, entryDays, before, check, cancellationToken);
                }

                totalsCompared = check.Finish();
            }

            // The store's policy versions and access requests against the entries that recorded them, where every chain was
            // read whole (an entry past a problem is not read); else only each version's document against its hash.
            try
            {
                if (recordedChanges is not null && chainsRead)
                {
                    await recordedChanges.CompareAsync(store, now, problems, cancellationToken);
                }
                else
                {
                    await RecordedChanges.CheckVersionHashesAsync(store, problems, cancellationToken);
                }
            }
            catch (System.Data.Common.DbException ex)
            {
                problems.Add(new("unreadable", "", null, null, $"the store's policy versions, access requests or alerts cannot be read ({FirstLine(ex)}): the database file is damaged"));
            }

            var witnessed = 0;
            if (options.WitnessDirectory is { } directory)
            {
                witnessed = CompareWitness(directory, allCheckpoints, chains, keys, problems);
            }

            options.Progress?.Report(entries);
            return new VerificationResult
            {
                Chains = chains.Count,
                Entries = entries,
                TotalsCompared = totalsCompared,
                Checkpoints = checkpointsChecked,
                WitnessCheckpoints = witnessed,
                Unsealed = unsealed,
                Problems = problems,
                Elapsed = System.Diagnostics.Stopwatch.GetElapsedTime(started),
            };
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static string FirstLine(Exception exception) => exception.Message.Split('\n')[0];

    /// <summary>
    /// A problem when the columns the store searches by do not say what the entry says: the hash covers the entry, not its
    /// columns, and searches and reports select entries by them (<see cref="LedgerColumns"/>).
    /// </summary>
    private static VerificationProblem? ColumnProblem(string chainId, ChainEntry entry, LedgerColumns? recorded)
    {
        if (entry.Columns is not { } stored)
        {
            return null; // a store that keeps no columns
        }

        if (recorded is null)
        {
            return new("altered_columns", chainId, entry.Seq, entry.RequestId,
                "its columns cannot be compared: the entry is not a JSON object with a kind and a timestamp");
        }

        return LedgerColumns.Difference(recorded, stored) is var (column, was, says)
            ? new("altered_columns", chainId, entry.Seq, recorded.RequestId,
                $"its {column} column says {Quote(was)} but the entry says {Quote(says)}: the row's search columns were altered, "
                + "so searches and reports would miss it or count it wrongly")
            : null;

        static string Quote(string? value) => value is null ? "null" : $"'{value}'";
    }

    /// <summary>
    /// How long after its end a quarter hour's request totals are compared: a request is recorded when it ends, under the
    /// instant it started, so a running gateway may still add to the last hour's totals while verification reads.
    /// </summary>
    public static readonly TimeSpan TotalsSettleAfter = TimeSpan.FromHours(1);

    /// <summary>
    /// How long entries may wait for a signed checkpoint before they are a problem (<c>unsealed</c>): a running gateway
    /// seals within seconds, every stop seals the rest, and a start after a crash seals what it left.
    /// </summary>
    public static readonly TimeSpan UnsealedGrace = TimeSpan.FromHours(1);

    /// <summary>At most this many differing request totals are named one by one; the rest are counted.</summary>
    private const int TotalsNamed = 10;

    /// <summary>What comparing the request totals found so far: how many were compared, and the problems, up to <see cref="TotalsNamed"/> named.</summary>
    private sealed class TotalsCheck(List<VerificationProblem> problems)
    {
        private long _differing;

        public long Compared { get; set; }

        /// <summary>A table of totals could not be read: nothing more is compared.</summary>
        public bool Failed { get; private set; }

        public void Unreadable(string what, System.Data.Common.DbException ex)
        {
            Failed = true;
            problems.Add(new("altered_totals", "", null, null,
                $"the {what} cannot be read ({ex.Message.Split('\n')[0]}): their table was altered or removed; the console's overview, spend, and the quotas and budgets when a gateway starts read them"));
        }

        public void Differs(string what, RequestTotalKey key, (long Requests, decimal Spend, long Tokens) stored, (long Requests, decimal Spend, long Tokens) entries)
        {
            if (++_differing > TotalsNamed)
            {
                return;
            }

            var who = string.Join(", ", new[] { ("tenant", key.Tenant), ("service", key.Service), ("consumer", key.Consumer), ("reasons", key.Reasons), ("currency", key.Currency) }
                .Where(p => p.Item2.Length > 0).Select(p => $"{p.Item1} {p.Item2}"));
            var says = what == "request totals" ? "say" : "add up to";
            // Tokens named only where they differ.
            var (storedTokens, entriesTokens) = stored.Tokens == entries.Tokens ? ("", "")
                : (" and " + stored.Tokens.ToString("N0", CultureInfo.InvariantCulture) + " token(s)", " and " + entries.Tokens.ToString("N0", CultureInfo.InvariantCulture));
            problems.Add(new("altered_totals", "", null, null, string.Create(CultureInfo.InvariantCulture,
                $"the {what} of the quarter hour from {RequestTotals.SlotStart(key.Slot):yyyy-MM-dd HH:mm} UTC for {who}, {key.Decision}, {says} " +
                $"{stored.Requests:N0} request(s) costing {stored.Spend}{storedTokens}, but the entries " +
                $"{entries.Requests:N0} costing {entries.Spend}{entriesTokens}: the totals were " +
                $"altered, or a node of an earlier version appended entries without them; the console's overview, spend, and the quotas and budgets when a " +
                $"gateway starts read them")));
        }

        /// <summary>Names how many more differ than were named; returns how many totals were compared.</summary>
        public long Finish()
        {
            if (_differing > TotalsNamed)
            {
                problems.Add(new("altered_totals", "", null, null, $"and {_differing - TotalsNamed:N0} more quarter hours' request totals differ from their entries"));
            }

            return Compared;
        }
    }

    /// <summary>
    /// Compares the stored request totals of the quarter hours from <paramref name="from"/> to <paramref name="before"/>
    /// (both a quarter hour's start) with the entries' (<paramref name="added"/>): the totals by minute added up by quarter
    /// hour first, then the quarter hours' own.
    /// </summary>
    private static async Task CompareTotalsAsync(IEvidenceStore store, RequestTotals added, DateTimeOffset from, DateTimeOffset before, TotalsCheck check,
        CancellationToken cancellationToken)
    {
        // The minutes of whole quarter hours, each counted towards its quarter hour's key.
        var minutes = new RequestTotals();
        var what = "request totals by minute";
        try
        {
            await foreach (var stored in store.ReadTotalsAsync(RequestTotals.MinuteSeconds, from, before, cancellationToken))
            {
                check.Compared++;
                minutes.Add(RequestTotalKey.Of(stored), stored.Requests, stored.Spend, stored.Tokens);
            }

            foreach (var (key, total) in added)
            {
                if (RequestTotals.SlotStart(key.Slot) < before)
                {
                    var byMinute = minutes.Remove(key, out var found) ? found : (0L, 0m, 0L);
                    if (byMinute != total)
                    {
                        check.Differs(what, key, byMinute, total);
                    }
                }
            }

            foreach (var (key, total) in minutes)
            {
                check.Differs(what, key, total, (0, 0m, 0));
            }

            what = "request totals";
            await foreach (var stored in store.ReadTotalsAsync(RequestTotals.SlotSeconds, from, before, cancellationToken))
            {
                check.Compared++;
                var key = RequestTotalKey.Of(stored);
                var entries = added.Remove(key, out var found) ? found : (0L, 0m, 0L);
                if (entries != (stored.Requests, stored.Spend, stored.Tokens))
                {
                    check.Differs(what, key, (stored.Requests, stored.Spend, stored.Tokens), entries);
                }
            }
        }
        catch (System.Data.Common.DbException ex)
        {
            check.Unreadable(what, ex);
            return;
        }

        foreach (var (key, total) in added)
        {
            if (RequestTotals.SlotStart(key.Slot) < before)
            {
                check.Compared++;
                check.Differs(what, key, (0, 0m, 0), total);
            }
        }
    }

    /// <summary>
    /// Compares the request totals a day (UTC) at a time, each day that has request entries (<paramref name="entryDays"/>,
    /// days since the epoch) or stored totals, up to <paramref name="before"/>, adding up each day's entries read by time:
    /// for a ledger with more totals than verification keeps in memory (<see cref="VerificationOptions.TotalsKeptInMemory"/>).
    /// </summary>
    private static async Task CompareTotalsByDayAsync(IEvidenceStore store, HashSet<long> entryDays, DateTimeOffset before, TotalsCheck check,
        CancellationToken cancellationToken)
    {
        if (store is not ILedgerStore ledger)
        {
            return; // no entries to read by time
        }

        var days = entryDays.Order().ToArray();
        var next = 0;
        var day = DateTimeOffset.MinValue;
        while (!check.Failed)
        {
            // The next day with entries or stored totals: days with neither are skipped, however many.
            while (next < days.Length && Day(days[next]) < day)
            {
                next++;
            }

            DateTimeOffset? found = next < days.Length ? Day(days[next]) : null;
            foreach (var (what, stored) in new[] { ("request totals by minute", store.ReadTotalsAsync(RequestTotals.MinuteSeconds, day, before, cancellationToken)), ("request totals", store.ReadTotalsAsync(RequestTotals.SlotSeconds, day, before, cancellationToken)) })
            {
                try
                {
                    await foreach (var total in stored)
                    {
                        var start = new DateTimeOffset(total.Slot.UtcDateTime.Date, TimeSpan.Zero);
                        found = found is { } f && f <= start ? f : start;
                        break;
                    }
                }
                catch (System.Data.Common.DbException ex)
                {
                    check.Unreadable(what, ex);
                    return;
                }
            }

            if (found is not { } from || from >= before)
            {
                return;
            }

            var end = from.AddDays(1) < before ? from.AddDays(1) : before;
            var added = new RequestTotals();
            await foreach (var row in ledger.QueryAsync(new LedgerQuery { Kind = "request", From = from, To = end, Limit = -1 }, cancellationToken))
            {
                var entry = Reports.RequestEntry.Parse(row);
                added.Add(entry.Timestamp, entry.Tenant, entry.Service, entry.Consumer, entry.Decision, entry.Reasons, entry.Currency, entry.Cost,
                    RequestTotals.TokensOf(entry.InputTokens, entry.OutputTokens));
            }

            await CompareTotalsAsync(store, added, from, end, check, cancellationToken);
            day = end;
        }

        static DateTimeOffset Day(long days) => new(days * TimeSpan.TicksPerDay, TimeSpan.Zero);
    }

    /// <summary>
    /// The stored checkpoints with their contents read once; one that cannot be read (its JSON altered) is a problem of its
    /// own, and the chain it sealed then shows a gap where it was.
    /// </summary>
    private static List<(SignedCheckpoint Signed, Checkpoint Checkpoint)> Readable(IReadOnlyList<SignedCheckpoint> stored, List<VerificationProblem> problems)
    {
        var readable = new List<(SignedCheckpoint, Checkpoint)>(stored.Count);
        for (var i = 0; i < stored.Count; i++)
        {
            try
            {
                readable.Add((stored[i], stored[i].Checkpoint));
            }
            catch (Exception ex) when (ex is System.Text.Json.JsonException or FormatException)
            {
                problems.Add(new("unreadable_checkpoint", "?", null, null,
                    $"stored checkpoint {i + 1} of {stored.Count}, in the order they were sealed, cannot be read ({ex.Message}): the checkpoints were altered"));
            }
        }

        return readable;
    }

    /// <summary>Reads the checkpoints a directory witness holds: every <c>*.json</c> file, with what is wrong with those that are not checkpoints.</summary>
    public static IReadOnlyList<(string File, SignedCheckpoint? Signed, Checkpoint? Checkpoint, string? Error)> ReadWitness(string directory)
    {
        var result = new List<(string, SignedCheckpoint?, Checkpoint?, string?)>();
        if (!Directory.Exists(directory))
        {
            return result;
        }

        foreach (var file in Directory.EnumerateFiles(directory, "*.json", SearchOption.AllDirectories).Order(StringComparer.Ordinal))
        {
            try
            {
                using var document = System.Text.Json.JsonDocument.Parse(File.ReadAllText(file));
                var root = document.RootElement;
                var signed = root.ValueKind == System.Text.Json.JsonValueKind.Object
                    && root.TryGetProperty("checkpoint", out var json) && json.ValueKind == System.Text.Json.JsonValueKind.String
                    && root.TryGetProperty("signature", out var signature) && signature.ValueKind == System.Text.Json.JsonValueKind.String
                        ? new SignedCheckpoint(json.GetString()!, signature.GetString()!)
                        : throw new FormatException("it is not {\"checkpoint\": \"…\", \"signature\": \"…\"}");
                result.Add((file, signed, signed.Checkpoint, null));
            }
            catch (Exception ex) when (ex is System.Text.Json.JsonException or FormatException or IOException or UnauthorizedAccessException)
            {
                result.Add((file, null, null, ex.Message));
            }
        }

        return result;
    }

    private static int CompareWitness(string directory, List<(SignedCheckpoint Signed, Checkpoint Checkpoint)> stored,
        IReadOnlyList<(string ChainId, long LastSeq, long Count)> chains, Dictionary<string, ECDsa> keys, List<VerificationProblem> problems)
    {
        var witness = ReadWitness(directory);
        if (witness.Count == 0 && stored.Count > 0)
        {
            // A witness that holds nothing vouches for nothing: the wrong folder, or one emptied. Passing would read as
            // "the witness agrees".
            problems.Add(new("witness_mismatch", "?", null, null,
                $"the witness {directory} holds no checkpoint (no *.json file), while the database holds {stored.Count}: is it the folder the gateway writes its witness to?"));
        }

        var byPosition = new Dictionary<(string, long), SignedCheckpoint>();
        foreach (var (signed, checkpoint) in stored)
        {
            byPosition.TryAdd((checkpoint.ChainId, checkpoint.ToSeq), signed);
        }

        foreach (var (file, w, c, error) in witness)
        {
            if (w is null || c is null)
            {
                problems.Add(new("witness_mismatch", "?", null, null, $"the witness file {file} is not a checkpoint: {error}"));
            }
            else if (!keys.TryGetValue(c.KeyId, out var key) || !w.VerifySignature(key))
            {
                problems.Add(new("witness_mismatch", c.ChainId, c.FromSeq, null, $"the witness's checkpoint {c.ToSeq} is not signed by a trusted key"));
            }
            else if (!byPosition.TryGetValue((c.ChainId, c.ToSeq), out var mine))
            {
                var last = chains.FirstOrDefault(x => x.ChainId == c.ChainId).LastSeq;
                problems.Add(new("witness_mismatch", c.ChainId, c.FromSeq, null, last < c.ToSeq
                    ? $"the witness holds checkpoint {c.FromSeq}-{c.ToSeq}, but the database's chain ends at {last} (history removed)"
                    : $"the witness holds checkpoint {c.FromSeq}-{c.ToSeq}, which the database does not (checkpoints rewritten)"));
            }
            else if (mine.Json != w.Json || mine.Signature != w.Signature)
            {
                problems.Add(new("witness_mismatch", c.ChainId, c.FromSeq, null,
                    $"the database's checkpoint {c.ToSeq} differs from the witness's (history rewritten and re-sealed)"));
            }
        }

        // The database's checkpoints the witness lacks before its last one of their chain: a write to the witness that
        // failed (a full disk, a mount gone) or a file removed. Those after it may be on their way.
        var witnessed = new HashSet<(string, long)>();
        var lastWitnessed = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var (_, w, c, _) in witness)
        {
            if (w is not null && c is not null)
            {
                witnessed.Add((c.ChainId, c.ToSeq));
                lastWitnessed[c.ChainId] = Math.Max(c.ToSeq, lastWitnessed.GetValueOrDefault(c.ChainId));
            }
        }

        foreach (var (_, checkpoint) in stored)
        {
            if (lastWitnessed.TryGetValue(checkpoint.ChainId, out var last) && checkpoint.ToSeq < last
                && !witnessed.Contains((checkpoint.ChainId, checkpoint.ToSeq)))
            {
                problems.Add(new("witness_mismatch", checkpoint.ChainId, checkpoint.FromSeq, null,
                    $"the witness lacks checkpoint {checkpoint.FromSeq}-{checkpoint.ToSeq}, which the database holds, though it holds the chain's "
                    + $"checkpoint {last}: a write to the witness failed, or its file was removed"));
            }
        }

        return witness.Count;
    }
}
