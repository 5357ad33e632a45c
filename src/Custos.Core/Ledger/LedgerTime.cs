using System.Globalization;

namespace Custos.Ledger;

/// <summary>The one text form of instants in the ledger and the stores: UTC, microseconds, fixed width, so it sorts.</summary>
public static class LedgerTime
{
    private const string Pattern = "yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'";

    /// <summary>Formats <paramref name="time"/>, for example <c>2026-11-28T14:15:30.123456Z</c>.</summary>
    public static string Format(DateTimeOffset time) => time.UtcDateTime.ToString(Pattern, CultureInfo.InvariantCulture);

    /// <summary>Parses what <see cref="Format"/> wrote.</summary>
    public static DateTimeOffset Parse(string text)
        => DateTimeOffset.ParseExact(text, Pattern, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal);
}
