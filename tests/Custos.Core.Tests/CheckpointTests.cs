using System.Security.Cryptography;
using Custos.Ledger;

namespace Custos.Core.Tests;

public sealed class CheckpointTests
{
    private static byte[] Leaf(int i) => SHA256.HashData([(byte)i]);

    private static byte[] H(params byte[][] parts) => SHA256.HashData(parts.SelectMany(p => p).ToArray());

    [Fact]
    public void MerkleRoot_FollowsRfc6962_ComputedIndependently()
    {
        // RFC 6962 2.1: leaf = H(0x00 || d), node = H(0x01 || l || r), split at the largest power of two below n.
        byte[] L(int i) => H([0], Leaf(i));
        byte[] N(byte[] l, byte[] r) => H([1], l, r);

        Assert.Equal(L(0), MerkleTree.Root([Leaf(0)]));
        Assert.Equal(N(L(0), L(1)), MerkleTree.Root([Leaf(0), Leaf(1)]));
        Assert.Equal(N(N(L(0), L(1)), L(2)), MerkleTree.Root([Leaf(0), Leaf(1), Leaf(2)]));
        Assert.Equal(N(N(N(L(0), L(1)), N(L(2), L(3))), N(L(4), L(5))), MerkleTree.Root([.. Enumerable.Range(0, 6).Select(Leaf)]));
    }

    [Fact]
    public void InclusionProofs_VerifyForEveryLeafOfEverySize_AndFailForAnyOtherLeafOrRoot()
    {
        for (var size = 1; size <= 33; size++)
        {
            var leaves = Enumerable.Range(0, size).Select(Leaf).ToList();
            var root = MerkleTree.Root(leaves);
            for (var index = 0; index < size; index++)
            {
                var path = MerkleTree.InclusionPath(leaves, index);
                Assert.True(MerkleTree.VerifyInclusion(leaves[index], index, size, path, root), $"size {size}, leaf {index}");
                Assert.False(MerkleTree.VerifyInclusion(Leaf(1000), index, size, path, root));
                if (size > 1)
                {
                    Assert.False(MerkleTree.VerifyInclusion(leaves[index], (index + 1) % size, size, path, root), $"size {size}: leaf {index} claimed at another index");
                }
                if (path.Count > 0)
                {
                    var broken = path.Select(p => (byte[])p.Clone()).ToList();
                    broken[0][0] ^= 1;
                    Assert.False(MerkleTree.VerifyInclusion(leaves[index], index, size, broken, root));
                }
            }
        }
    }

    [Fact]
    public void CheckpointCanonicalForm_IsFrozen()
    {
        var checkpoint = new Checkpoint
        {
            ChainId = "node-a",
            FromSeq = 1,
            ToSeq = 1024,
            PrevHash = HashChain.Genesis,
            HeadHash = new string('a', 64),
            MerkleRoot = new string('b', 64),
            Timestamp = new DateTimeOffset(2026, 11, 28, 12, 0, 0, TimeSpan.Zero),
            LastEntryAt = new DateTimeOffset(2026, 11, 28, 11, 59, 59, 500, TimeSpan.Zero),
            KeyId = "0123456789abcdef",
        };

        var json = System.Text.Encoding.UTF8.GetString(checkpoint.CanonicalBytes());

        Assert.Equal(
            """{"v":1,"kind":"checkpoint","chain_id":"node-a","from_seq":1,"to_seq":1024,"prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","head_hash":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","merkle_root":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","timestamp":"2026-11-28T12:00:00.000000Z","last_entry_at":"2026-11-28T11:59:59.500000Z","key_id":"0123456789abcdef"}""",
            json);
        Assert.Equal(checkpoint, Checkpoint.Parse(json));
    }

    [Fact]
    public void Signatures_VerifyOnlyWithTheirKey_AndOnlyOverTheExactBytes()
    {
        var folder = Path.Combine(Path.GetTempPath(), "custos-key-" + Guid.NewGuid().ToString("N"));
        try
        {
            using var key = CheckpointKey.LoadOrCreate(folder, out var created);
            Assert.True(created);
            using var again = CheckpointKey.LoadOrCreate(folder, out var createdAgain);
            Assert.False(createdAgain);
            Assert.Equal(key.KeyId, again.KeyId);
            if (!OperatingSystem.IsWindows())
            {
                Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(CheckpointKey.PrivatePath(folder)));
            }

            var signed = key.Sign(new Checkpoint
            {
                ChainId = "n",
                FromSeq = 1,
                ToSeq = 2,
                PrevHash = HashChain.Genesis,
                HeadHash = new string('c', 64),
                MerkleRoot = new string('d', 64),
                Timestamp = DateTimeOffset.UnixEpoch,
                LastEntryAt = DateTimeOffset.UnixEpoch,
                KeyId = key.KeyId,
            });
            using var publicKey = CheckpointKey.LoadPublic(CheckpointKey.PublicPath(folder));
            Assert.True(signed.VerifySignature(publicKey));

            // The private key verified as well, so an auditor could be handed (and keep) the key that signs checkpoints.
            var refused = Assert.Throws<InvalidDataException>(() => CheckpointKey.LoadPublic(CheckpointKey.PrivatePath(folder)));
            Assert.Contains("holds a private key", refused.Message, StringComparison.Ordinal);
            Assert.False((signed with { Json = signed.Json.Replace("\"to_seq\":2", "\"to_seq\":3", StringComparison.Ordinal) }).VerifySignature(publicKey));
            using var other = ECDsa.Create(ECCurve.NamedCurves.nistP256);
            Assert.False(signed.VerifySignature(other));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
