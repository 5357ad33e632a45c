namespace Custos.Ledger;

/// <summary>
/// The Merkle tree of RFC 6962 (Certificate Transparency, section 2.1) over the entry hashes of one checkpoint
/// interval: <c>leaf = SHA-256(0x00 || entry_hash)</c>, <c>node = SHA-256(0x01 || left || right)</c>, split at the
/// largest power of two below the size. An inclusion proof is a few dozen hashes however long the interval.
/// </summary>
/// <remarks>WARNING: a persisted contract (checkpoints carry the root, proofs the path); frozen by golden tests.</remarks>
public static class MerkleTree
{
    /// <summary>The root over <paramref name="leaves"/> (32-byte entry hashes, in sequence order).</summary>
    public static byte[] Root(IReadOnlyList<byte[]> leaves)
    {
        ArgumentOutOfRangeException.ThrowIfZero(leaves.Count);
        return Hash(leaves, 0, leaves.Count);
    }

    /// <summary>The audit path of leaf <paramref name="index"/>: the sibling hashes from the leaf up to the root.</summary>
    public static IReadOnlyList<byte[]> InclusionPath(IReadOnlyList<byte[]> leaves, int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, leaves.Count);
        var path = new List<byte[]>();
        Path(leaves, 0, leaves.Count, index, path);
        return path;
    }

    /// <summary>True when <paramref name="leaf"/> at <paramref name="index"/> of a tree of <paramref name="size"/> leaves, with <paramref name="path"/>, gives <paramref name="root"/>.</summary>
    public static bool VerifyInclusion(byte[] leaf, long index, long size, IReadOnlyList<byte[]> path, ReadOnlySpan<byte> root)
    {
        // RFC 9162, section 2.1.3.2: walk up from the leaf, consuming the path.
        if (index < 0 || index >= size)
        {
            return false;
        }

        long fn = index, sn = size - 1;
        var r = LeafHash(leaf);
        foreach (var p in path)
        {
            if (sn == 0)
            {
                return false;
            }

            if ((fn & 1) == 1 || fn == sn)
            {
                r = NodeHash(p, r);
                if ((fn & 1) == 0)
                {
                    while ((fn & 1) == 0 && fn != 0)
                    {
                        fn >>= 1;
                        sn >>= 1;
                    }
                }
            }
            else
            {
                r = NodeHash(r, p);
            }

            fn >>= 1;
            sn >>= 1;
        }

        return sn == 0 && r.AsSpan().SequenceEqual(root);
    }

    private static byte[] Hash(IReadOnlyList<byte[]> leaves, int start, int count)
    {
        if (count == 1)
        {
            return LeafHash(leaves[start]);
        }

        var k = SplitPoint(count);
        return NodeHash(Hash(leaves, start, k), Hash(leaves, start + k, count - k));
    }

    private static void Path(IReadOnlyList<byte[]> leaves, int start, int count, int index, List<byte[]> path)
    {
        if (count == 1)
        {
            return;
        }

        var k = SplitPoint(count);
        if (index < k)
        {
            Path(leaves, start, k, index, path);
            path.Add(Hash(leaves, start + k, count - k));
        }
        else
        {
            Path(leaves, start + k, count - k, index - k, path);
            path.Add(Hash(leaves, start, k));
        }
    }

    private static int SplitPoint(int count)
    {
        var k = 1;
        while (k << 1 < count)
        {
            k <<= 1;
        }

        return k;
    }

    private static byte[] LeafHash(byte[] leaf)
    {
        ArgumentOutOfRangeException.ThrowIfNotEqual(leaf.Length, 32);
        Span<byte> buffer = stackalloc byte[1 + 32];
        buffer[0] = 0;
        leaf.AsSpan().CopyTo(buffer[1..]);
        return Hashing.Sha256.Hash(buffer[..(1 + leaf.Length)]);
    }

    private static byte[] NodeHash(byte[] left, byte[] right)
    {
        Span<byte> buffer = stackalloc byte[1 + 64];
        buffer[0] = 1;
        left.AsSpan().CopyTo(buffer[1..]);
        right.AsSpan().CopyTo(buffer[33..]);
        return Hashing.Sha256.Hash(buffer);
    }
}
