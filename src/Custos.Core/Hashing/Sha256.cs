using System.Security.Cryptography;

namespace Custos.Hashing;

/// <summary>
/// SHA-256 on a context reused by the calling thread. <c>SHA256.HashData</c> sets up and frees an OpenSSL context on
/// every call, which costs more than hashing a short input: the presented key, the prompt and the checkpoint's Merkle
/// nodes are hashed here (docs/performance.md, "reused hash contexts").
/// </summary>
public static class Sha256
{
    [ThreadStatic]
    private static IncrementalHash? _context;

    /// <summary>Writes the hash of <paramref name="data"/> to <paramref name="destination"/> (32 bytes).</summary>
    public static void Hash(ReadOnlySpan<byte> data, Span<byte> destination)
    {
        ThrowIfTooShort(destination); // before anything is fed in, so a failed call leaves the context clean
        var context = _context ??= IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        context.AppendData(data);
        context.GetHashAndReset(destination);
    }

    /// <summary>The hash of <paramref name="data"/>.</summary>
    public static byte[] Hash(ReadOnlySpan<byte> data)
    {
        var hash = new byte[32];
        Hash(data, hash);
        return hash;
    }

    /// <summary>Writes the hash of the slices <paramref name="ranges"/> of <paramref name="data"/>, one after another, to <paramref name="destination"/>.</summary>
    public static void Hash(ReadOnlySpan<byte> data, IReadOnlyList<Range> ranges, Span<byte> destination)
    {
        ThrowIfTooShort(destination);
        var context = _context ??= IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        try
        {
            for (var i = 0; i < ranges.Count; i++)
            {
                context.AppendData(data[ranges[i]]);
            }

            context.GetHashAndReset(destination);
        }
        catch
        {
            _context = null; // never reuse a context left half-fed
            context.Dispose();
            throw;
        }
    }

    private static void ThrowIfTooShort(Span<byte> destination)
        => ArgumentOutOfRangeException.ThrowIfLessThan(destination.Length, SHA256.HashSizeInBytes, nameof(destination));
}
