using System.Security.Cryptography;

namespace Custos.Gateway.Pipeline;

/// <summary>
/// Request ids: <c>req_</c> and 26 Crockford base32 characters, a 48-bit millisecond time then 80 random
/// bits (ULID layout), so ids sort by time and never collide across nodes.
/// </summary>
internal static class RequestId
{
    private const string Alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

    /// <summary>Random bytes per id: 16 characters of 5 bits each.</summary>
    private const int RandomPerId = 16;

    /// <summary>Each thread takes random bytes from the system for 32 ids at a time: one read instead of one per request.</summary>
    private const int RandomBatch = 32 * RandomPerId;

    [ThreadStatic]
    private static byte[]? _random;

    [ThreadStatic]
    private static int _left;

    public static string New(DateTimeOffset now) => string.Create(30, now.ToUnixTimeMilliseconds(), static (chars, ms) =>
    {
        "req_".AsSpan().CopyTo(chars);
        var id = chars[4..];
        for (var i = 9; i >= 0; i--)
        {
            id[i] = Alphabet[(int)(ms & 31)];
            ms >>= 5;
        }

        var random = TakeRandom();
        for (var i = 0; i < RandomPerId; i++)
        {
            id[10 + i] = Alphabet[random[i] & 31];
        }
    });

    private static ReadOnlySpan<byte> TakeRandom()
    {
        var batch = _random ??= new byte[RandomBatch];
        if (_left == 0)
        {
            RandomNumberGenerator.Fill(batch);
            _left = RandomBatch;
        }

        _left -= RandomPerId;
        return batch.AsSpan(_left, RandomPerId);
    }
}
