using System.Buffers.Binary;
using System.IO.Hashing;
using System.Security.Cryptography;
using System.Text;

namespace Custos.Identity;

/// <summary>What a key is for, told by its prefix.</summary>
public enum ApiKeyKind
{
    /// <summary><c>csk_</c>: a consumer's data-plane key.</summary>
    Consumer,

    /// <summary><c>cak_</c>: an administrator's control-plane key.</summary>
    Admin,
}

/// <summary>Why a presented string is not a well-formed key.</summary>
public enum ApiKeyFormatError
{
    /// <summary>Well formed.</summary>
    None,

    /// <summary>Not a Custos key at all (wrong prefix or length).</summary>
    NotAKey,

    /// <summary>Looks like a Custos key, but a character is outside base62 or the checksum does not match: a typo or a forgery.</summary>
    BadChecksum,
}

/// <summary>
/// The Custos API key format, in the manner of GitHub's tokens: a type prefix, 32 random base62
/// characters (190 bits) and a 6-character base62 CRC-32 of everything before it, for example
/// <c>csk_4VZ1rJ0mX9cQ2bT7kLw3NpYs8HdGf6Ea1ZxQ3e</c>. The checksum lets a client, a secret scanner or
/// the gateway reject a mistyped or made-up key without a look-up. Keys are stored only as their
/// SHA-256 (<see cref="KeyHash"/>): with 190 random bits a fast hash is safe, and unsalted hashing
/// keeps the look-up a single dictionary probe.
/// </summary>
/// <remarks>The format is a contract: keys already issued must stay valid. Only add new prefixes.</remarks>
public static class ApiKey
{
    /// <summary>Prefix of consumer keys.</summary>
    public const string ConsumerPrefix = "csk_";

    /// <summary>Prefix of admin keys.</summary>
    public const string AdminPrefix = "cak_";

    /// <summary>Length of the random part.</summary>
    public const int RandomLength = 32;

    /// <summary>Length of the checksum.</summary>
    public const int ChecksumLength = 6;

    /// <summary>Total length of a key.</summary>
    public const int Length = 4 + RandomLength + ChecksumLength;

    private const string Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

    /// <summary>Creates a new random key of <paramref name="kind"/>.</summary>
    public static string Generate(ApiKeyKind kind)
    {
        Span<char> key = stackalloc char[Length];
        (kind == ApiKeyKind.Admin ? AdminPrefix : ConsumerPrefix).AsSpan().CopyTo(key);
        for (var i = 0; i < RandomLength; i++)
        {
            key[4 + i] = Alphabet[RandomNumberGenerator.GetInt32(Alphabet.Length)];
        }

        WriteChecksum(key[..(4 + RandomLength)], key[(4 + RandomLength)..]);
        return new string(key);
    }

    /// <summary>Checks prefix, length, alphabet and checksum, without any look-up or allocation.</summary>
    public static ApiKeyFormatError Validate(ReadOnlySpan<char> key, out ApiKeyKind kind)
    {
        kind = ApiKeyKind.Consumer;
        if (key.Length != Length)
        {
            return ApiKeyFormatError.NotAKey;
        }

        if (key.StartsWith(ConsumerPrefix, StringComparison.Ordinal))
        {
            kind = ApiKeyKind.Consumer;
        }
        else if (key.StartsWith(AdminPrefix, StringComparison.Ordinal))
        {
            kind = ApiKeyKind.Admin;
        }
        else
        {
            return ApiKeyFormatError.NotAKey;
        }

        for (var i = 4; i < Length; i++)
        {
            if (!char.IsAsciiLetterOrDigit(key[i]))
            {
                return ApiKeyFormatError.BadChecksum;
            }
        }

        Span<char> expected = stackalloc char[ChecksumLength];
        WriteChecksum(key[..(4 + RandomLength)], expected);
        return expected.SequenceEqual(key[(4 + RandomLength)..]) ? ApiKeyFormatError.None : ApiKeyFormatError.BadChecksum;
    }

    /// <summary>A short, non-secret display form: the prefix and the first 6 random characters.</summary>
    public static string Redact(ReadOnlySpan<char> key)
        => key.Length >= 10 ? string.Concat(key[..10], "…") : "…";

    private static void WriteChecksum(ReadOnlySpan<char> body, Span<char> destination)
    {
        Span<byte> bytes = stackalloc byte[body.Length];
        Encoding.ASCII.GetBytes(body, bytes);
        var crc = Crc32.HashToUInt32(bytes);
        for (var i = ChecksumLength - 1; i >= 0; i--)
        {
            destination[i] = Alphabet[(int)(crc % 62)];
            crc /= 62;
        }
    }
}

/// <summary>The SHA-256 of a key: how the gateway knows a key. Equality compares all 32 bytes in constant time.</summary>
public readonly struct KeyHash : IEquatable<KeyHash>
{
    private readonly ulong _a, _b, _c, _d;

    private KeyHash(ReadOnlySpan<byte> sha256)
    {
        _a = BinaryPrimitives.ReadUInt64BigEndian(sha256);
        _b = BinaryPrimitives.ReadUInt64BigEndian(sha256[8..]);
        _c = BinaryPrimitives.ReadUInt64BigEndian(sha256[16..]);
        _d = BinaryPrimitives.ReadUInt64BigEndian(sha256[24..]);
    }

    /// <summary>Hashes a presented key.</summary>
    public static KeyHash Of(ReadOnlySpan<char> key)
    {
        Span<byte> utf8 = stackalloc byte[256];
        var length = key.Length <= 256 ? Encoding.UTF8.GetBytes(key, utf8) : 0;
        Span<byte> hash = stackalloc byte[32];
        Hashing.Sha256.Hash(length > 0 ? utf8[..length] : Encoding.UTF8.GetBytes(key.ToString()), hash);
        return new KeyHash(hash);
    }

    /// <summary>Parses 64 hex digits, as stored in the policy.</summary>
    public static KeyHash FromHex(string hex) => new(Convert.FromHexString(hex));

    /// <summary>Lower-case hex, as stored in the policy.</summary>
    public string ToHex()
    {
        Span<byte> bytes = stackalloc byte[32];
        BinaryPrimitives.WriteUInt64BigEndian(bytes, _a);
        BinaryPrimitives.WriteUInt64BigEndian(bytes[8..], _b);
        BinaryPrimitives.WriteUInt64BigEndian(bytes[16..], _c);
        BinaryPrimitives.WriteUInt64BigEndian(bytes[24..], _d);
        return Convert.ToHexStringLower(bytes);
    }

    /// <inheritdoc/>
    public bool Equals(KeyHash other)
        => ((_a ^ other._a) | (_b ^ other._b) | (_c ^ other._c) | (_d ^ other._d)) == 0;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is KeyHash other && Equals(other);

    /// <inheritdoc/>
    public override int GetHashCode() => (int)_a;
}
