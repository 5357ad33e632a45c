using System.Buffers;
using System.Security.Cryptography;
using System.Text.Json;

namespace Custos.Ledger;

/// <summary>A record sealed into a chain: its place, its canonical bytes and the hashes linking it.</summary>
/// <remarks>
/// <see cref="Canonical"/> may live in the ledger writer's <see cref="CanonicalArena"/>: valid while the writer's batch
/// is being stored and observed, not after. Code that keeps a record beyond that copies the bytes.
/// </remarks>
public sealed record ChainedRecord(LedgerRecord Record, string ChainId, long Seq, ReadOnlyMemory<byte> Canonical, string PrevHash, string Hash);

/// <summary>
/// Links records of one chain (one gateway node): <c>hash = SHA-256(prev_hash_hex || "\n" || canonical_json)</c>,
/// starting from 64 zeros. Changing, removing or reordering any record breaks every hash after it.
/// </summary>
/// <remarks>WARNING: the chaining rule is a persisted contract, frozen by golden tests. Never change it in place.</remarks>
public sealed class HashChain
{
    /// <summary>The <c>prev_hash</c> of the first record of a chain.</summary>
    public static readonly string Genesis = new('0', 64);

    private const int PrefixLength = 65;

    private readonly ArrayBufferWriter<byte> _buffer = new(4096);
    private readonly Utf8JsonWriter _writer;

    /// <summary>Continues a chain after <paramref name="lastSeq"/> whose last hash is <paramref name="lastHash"/>.</summary>
    public HashChain(string chainId, long lastSeq, string lastHash)
    {
        ChainId = chainId;
        LastSeq = lastSeq;
        LastHash = lastHash;
        _writer = new Utf8JsonWriter(_buffer, new JsonWriterOptions { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
    }

    /// <summary>This chain's id: the node id.</summary>
    public string ChainId { get; }

    /// <summary>Sequence number of the last appended record.</summary>
    public long LastSeq { get; private set; }

    /// <summary>Hash of the last appended record.</summary>
    public string LastHash { get; private set; }

    /// <summary>Seals <paramref name="record"/> as the next link, its canonical bytes in an array of their own. Not thread-safe: one writer per chain.</summary>
    public ChainedRecord Append(LedgerRecord record) => Append(record, arena: null);

    /// <summary>
    /// Seals <paramref name="record"/> as the next link, its canonical bytes copied into <paramref name="arena"/> (an
    /// array of their own when null). Not thread-safe: one writer per chain.
    /// </summary>
    public ChainedRecord Append(LedgerRecord record, CanonicalArena? arena)
    {
        // The buffer holds what is hashed: the previous hash and "\n" (WritePrefix), then the canonical JSON, so it is
        // hashed in one call, on the thread's reused context (a one-shot SHA256.HashData sets up an OpenSSL context
        // every time, which costs more than the hashing: chain append 2.47 -> 2.56 us when tried).
        _buffer.ResetWrittenCount();
        WritePrefix(LastHash, _buffer.GetSpan(PrefixLength));
        _buffer.Advance(PrefixLength);
        _writer.Reset();
        record.WriteCanonical(_writer);
        _writer.Flush();
        var written = _buffer.WrittenSpan[PrefixLength..];
        var canonical = arena is null ? written.ToArray() : arena.Copy(written);
        Span<byte> digest = stackalloc byte[32];
        Hashing.Sha256.Hash(_buffer.WrittenSpan, digest);
        var hash = Convert.ToHexStringLower(digest);
        var chained = new ChainedRecord(record, ChainId, LastSeq + 1, canonical, LastHash, hash);
        LastSeq = chained.Seq;
        LastHash = hash;
        return chained;
    }

    /// <summary>Whether <paramref name="value"/> is a hash as the chain writes it: 64 lower-case hex digits (SHA-256).</summary>
    public static bool IsHash(string? value) => value is { Length: 64 } && value.AsSpan().IndexOfAnyExcept("0123456789abcdef") < 0;

    /// <summary>The hash of a record with canonical form <paramref name="canonical"/> following <paramref name="prevHash"/>.</summary>
    public static string Link(string prevHash, ReadOnlySpan<byte> canonical)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        return Link(sha, prevHash, canonical);
    }

    /// <summary>As <see cref="Link(string, ReadOnlySpan{byte})"/>, with a hash object the caller reuses (reset by every use).</summary>
    public static string Link(IncrementalHash sha, string prevHash, ReadOnlySpan<byte> canonical)
    {
        Span<byte> prefix = stackalloc byte[PrefixLength];
        WritePrefix(prevHash, prefix);
        sha.AppendData(prefix);
        sha.AppendData(canonical);
        Span<byte> hash = stackalloc byte[32];
        sha.GetHashAndReset(hash);
        return Convert.ToHexStringLower(hash);
    }

    /// <summary>Writes what precedes the canonical JSON in the hashed bytes: <paramref name="prevHash"/> (64 hex digits) and "\n".</summary>
    private static void WritePrefix(string prevHash, Span<byte> destination)
    {
        destination[..PrefixLength].Clear(); // a stored prev_hash that is too short is hashed as before, padded with zeros
        System.Text.Encoding.ASCII.GetBytes(prevHash, destination);
        destination[PrefixLength - 1] = (byte)'\n';
    }
}
