using System.Security.Cryptography;

namespace Custos.Gateway.Pipeline;

/// <summary>
/// Request ids: <c>req_</c> and 26 Crockford base32 characters, a 48-bit millisecond time then 80 random
/// bits (ULID layout), so ids sort by time and never collide across nodes.
/// </summary>
internal static class RequestId
{
    private const string Alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

    public static string New(DateTimeOffset now) => string.Create(30, now.ToUnixTimeMilliseconds(), static (chars, ms) =>
    {
        "req_".AsSpan().CopyTo(chars);
        var id = chars[4..];
        for (var i = 9; i >= 0; i--)
        {
            id[i] = Alphabet[(int)(ms & 31)];
            ms >>= 5;
        }

        Span<byte> random = stackalloc byte[16];
        RandomNumberGenerator.Fill(random);
        for (var i = 0; i < 16; i++)
        {
            id[10 + i] = Alphabet[random[i] & 31];
        }
    });
}
