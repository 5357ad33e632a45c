namespace Custos.Controls;

/// <summary>The window a counter is in at an instant: its id (part of the counter key) and its end.</summary>
public readonly record struct Window(string Id, DateTimeOffset End);

/// <summary>
/// Counting windows: fixed minutes for rates, and calendar days and months in the tenant's time zone for
/// quotas and budgets (a Berlin tenant's day starts at midnight in Berlin, daylight saving included).
/// </summary>
public static class Windows
{
    /// <summary>The one-minute window containing <paramref name="now"/>.</summary>
    public static Window Minute(DateTimeOffset now)
    {
        var minute = now.ToUnixTimeSeconds() / 60;
        return new Window("m" + minute.ToString(System.Globalization.CultureInfo.InvariantCulture), DateTimeOffset.FromUnixTimeSeconds((minute + 1) * 60));
    }

    /// <summary>The local calendar day containing <paramref name="now"/>.</summary>
    public static Window Day(DateTimeOffset now, TimeZoneInfo zone)
    {
        var local = TimeZoneInfo.ConvertTime(now, zone);
        var start = local.Date;
        return new Window("d" + start.ToString("yyyyMMdd", System.Globalization.CultureInfo.InvariantCulture), ToUtc(start.AddDays(1), zone));
    }

    /// <summary>The local calendar month containing <paramref name="now"/>.</summary>
    public static Window Month(DateTimeOffset now, TimeZoneInfo zone)
    {
        var local = TimeZoneInfo.ConvertTime(now, zone);
        var start = new DateTime(local.Year, local.Month, 1, 0, 0, 0, DateTimeKind.Unspecified);
        return new Window("M" + start.ToString("yyyyMM", System.Globalization.CultureInfo.InvariantCulture), ToUtc(start.AddMonths(1), zone));
    }

    private static DateTimeOffset ToUtc(DateTime localMidnight, TimeZoneInfo zone)
    {
        // A midnight skipped by a daylight-saving jump starts the day at the first valid local time.
        var unspecified = DateTime.SpecifyKind(localMidnight, DateTimeKind.Unspecified);
        while (zone.IsInvalidTime(unspecified))
        {
            unspecified = unspecified.AddMinutes(30);
        }

        return new DateTimeOffset(TimeZoneInfo.ConvertTimeToUtc(unspecified, zone), TimeSpan.Zero);
    }
}
