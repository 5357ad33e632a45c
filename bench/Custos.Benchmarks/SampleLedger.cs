using Custos.Ledger;
using Custos.Storage;

namespace Custos.Benchmarks;

/// <summary>A ledger of the benchmarks' sample request entries, built as the gateway's writer and checkpointer would.</summary>
internal static class SampleLedger
{
    /// <summary>
    /// Seals <paramref name="entries"/> sample entries (<see cref="LedgerStoreBenchmark.Sample"/>, one a millisecond from
    /// the epoch) into chain <c>bench-node</c> of <paramref name="store"/>, appended in the writer's batches of 512 and
    /// checkpointed every 1,024 entries with <paramref name="key"/>.
    /// </summary>
    public static async Task BuildAsync(SqliteStore store, CheckpointKey key, int entries)
    {
        var chain = new HashChain("bench-node", 0, HashChain.Genesis);
        var leaves = new List<byte[]>(1024);
        var prevCheckpointHash = HashChain.Genesis;
        var batch = new List<ChainedRecord>(512);
        for (var i = 0; i < entries; i++)
        {
            var chained = chain.Append(LedgerStoreBenchmark.Sample(i));
            batch.Add(chained);
            leaves.Add(Convert.FromHexString(chained.Hash));
            if (batch.Count == 512 || i == entries - 1)
            {
                await store.AppendAsync(batch);
                batch.Clear();
            }

            if (leaves.Count == 1024 || i == entries - 1)
            {
                var checkpoint = new Checkpoint
                {
                    ChainId = chain.ChainId,
                    FromSeq = chained.Seq - leaves.Count + 1,
                    ToSeq = chained.Seq,
                    PrevHash = prevCheckpointHash,
                    HeadHash = chained.Hash,
                    MerkleRoot = Convert.ToHexStringLower(MerkleTree.Root(leaves)),
                    Timestamp = DateTimeOffset.UtcNow,
                    LastEntryAt = chained.Record.Timestamp,
                    KeyId = key.KeyId,
                };
                await store.AppendCheckpointAsync(key.Sign(checkpoint));
                prevCheckpointHash = chained.Hash;
                leaves.Clear();
            }

            if ((i + 1) % 200_000 == 0)
            {
                Console.Error.WriteLine($"  built {i + 1:N0} entries");
            }
        }
    }
}
