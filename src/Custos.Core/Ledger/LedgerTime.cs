using System.Globalization;
using System.Text;

namespace Custos.Ledger;

/// <summary>The one text form of instants in the ledger and the stores: UTC, microseconds, fixed width, so it sorts.</summary>
public static class LedgerTime
{
    /// <summary>Length of the text form, e.g. <c>2026-11-28T14:15:30.123456Z</c>.</summary>
    public const int Length = 27;

    private const string Pattern = "yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'";

    /// <summary>Formats <paramref name="time"/>, for example <c>2026-11-28T14:15:30.123456Z</c>.</summary>
    public static string Format(DateTimeOffset time)
    {
        Span<byte> utf8 = stackalloc byte[Length];
        FormatUtf8(time, utf8);
        return Encoding.ASCII.GetString(utf8);
    }

    /// <summary>
    /// Writes the text form of <paramref name="time"/> as UTF-8 into the first <see cref="Length"/> bytes of
    /// <paramref name="destination"/>: what <see cref="Format"/> returns, without allocating (it is on every record).
    /// </summary>
    public static void FormatUtf8(DateTimeOffset time, Span<byte> destination)
    {
        var utc = time.UtcDateTime;
        if (utc.Year > 9999 || destination.Length < Length)
        {
            throw new ArgumentOutOfRangeException(nameof(destination));
        }

        Digits(destination[..4], utc.Year);
        destination[4] = (byte)'-';
        Digits(destination.Slice(5, 2), utc.Month);
        destination[7] = (byte)'-';
        Digits(destination.Slice(8, 2), utc.Day);
        destination[10] = (byte)'T';
        Digits(destination.Slice(11, 2), utc.Hour);
        destination[13] = (byte)':';
        Digits(destination.Slice(14, 2), utc.Minute);
        destination[16] = (byte)':';
        Digits(destination.Slice(17, 2), utc.Second);
        destination[19] = (byte)'.';
        Digits(destination.Slice(20, 6), (int)(utc.Ticks % TimeSpan.TicksPerSecond / 10)); // microseconds, truncated
        destination[26] = (byte)'Z';
    }

    /// <summary>Parses what <see cref="Format"/> wrote.</summary>
    public static DateTimeOffset Parse(string text)
        => DateTimeOffset.ParseExact(text, Pattern, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal);

    /// <summary>Reads the ledger's text form; false when <paramref name="text"/> is not in it.</summary>
    public static bool TryParse(string? text, out DateTimeOffset time)
        => DateTimeOffset.TryParseExact(text, Pattern, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out time);

    private static void Digits(Span<byte> destination, int value)
    {
        for (var i = destination.Length - 1; i >= 0; i--)
        {
            destination[i] = (byte)('0' + (value % 10));
            value /= 10;
        }
    }
}
