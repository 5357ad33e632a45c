namespace Custos.Controls;

/// <summary>The window a counter is in at an instant: its id (part of the counter key), its start and its end.</summary>
public readonly record struct Window(string Id, DateTimeOffset Start, DateTimeOffset End)
{
    /// <summary>True when <paramref name="instant"/> falls in the window.</summary>
    public bool Contains(DateTimeOffset instant) => instant >= Start && instant < End;
}

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
        return new Window("m" + minute.ToString(System.Globalization.CultureInfo.InvariantCulture),
            DateTimeOffset.FromUnixTimeSeconds(minute * 60), DateTimeOffset.FromUnixTimeSeconds((minute + 1) * 60));
    }

    /// <summary>The local calendar day containing <paramref name="now"/>.</summary>
    public static Window Day(DateTimeOffset now, TimeZoneInfo zone)
    {
        var local = TimeZoneInfo.ConvertTime(now, zone);
        var start = local.Date;
        return new Window("d" + start.ToString("yyyyMMdd", System.Globalization.CultureInfo.InvariantCulture), ToUtc(start, zone), ToUtc(start.AddDays(1), zone));
    }

    /// <summary>The local calendar month containing <paramref name="now"/>.</summary>
    public static Window Month(DateTimeOffset now, TimeZoneInfo zone)
    {
        var local = TimeZoneInfo.ConvertTime(now, zone);
        var start = new DateTime(local.Year, local.Month, 1, 0, 0, 0, DateTimeKind.Unspecified);
        return new Window("M" + start.ToString("yyyyMM", System.Globalization.CultureInfo.InvariantCulture), ToUtc(start, zone), ToUtc(start.AddMonths(1), zone));
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

/// <summary>
/// A tenant's current minute, day and month, made once per window instead of once per request (each is a formatted
/// id and, for days and months, a time-zone conversion). Lock-free: requests racing at a window's turn may each build
/// it, and every result is the same window.
/// </summary>
/// <remarks>Equal to every other instance, so it leaves the equality of the compiled policy records holding it alone.</remarks>
public sealed class WindowClock(TimeZoneInfo zone)
{
    private Current? _minute;
    private Current? _day;
    private Current? _month;

    /// <summary>The minute window containing <paramref name="now"/>.</summary>
    public Window Minute(DateTimeOffset now) => Of(ref _minute, now, zone, static (now, _) => Windows.Minute(now));

    /// <summary>The tenant's calendar day containing <paramref name="now"/>.</summary>
    public Window Day(DateTimeOffset now) => Of(ref _day, now, zone, Windows.Day);

    /// <summary>The tenant's calendar month containing <paramref name="now"/>.</summary>
    public Window Month(DateTimeOffset now) => Of(ref _month, now, zone, Windows.Month);

    private static Window Of(ref Current? slot, DateTimeOffset now, TimeZoneInfo zone, Func<DateTimeOffset, TimeZoneInfo, Window> make)
        => slot is { } current && current.Window.Contains(now) ? current.Window : (slot = new(make(now, zone))).Window;

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is WindowClock;

    /// <inheritdoc/>
    public override int GetHashCode() => 0;

    // A reference, so a window is published whole: a struct field could be read half-written.
    private sealed record Current(Window Window);
}

/// <summary>
/// The counter keys of one scope (<c>PREFIX + control + "|" + window id</c>), made once per window instead of once per
/// request. A key is reused while its window id is the same string, which <see cref="WindowClock"/> makes it for the
/// whole window. Lock-free like the clock.
/// </summary>
/// <remarks>Equal to every other instance with the same prefix, so it leaves the equality of the records holding it alone.</remarks>
public sealed class CounterKeys(string prefix)
{
    private static readonly string[] Names =
    [
        "rate_limit.requests", "rate_limit.tokens", "quota.requests_per_day", "quota.tokens_per_day",
        "quota.requests_per_month", "quota.tokens_per_month", "budget",
    ];

    private readonly Key?[] _keys = new Key?[Names.Length];

    /// <summary>The key prefix of the scope: <c>TENANT|LEVEL|ID|</c>.</summary>
    public string Prefix { get; } = prefix;

    /// <summary>The control's name as the ledger records it, e.g. <c>rate_limit.requests</c>.</summary>
    public static string NameOf(CountedLimit limit) => Names[(int)limit];

    /// <summary>The key of <paramref name="limit"/>'s counter in <paramref name="window"/>.</summary>
    public string For(CountedLimit limit, string window)
    {
        if (_keys[(int)limit] is { } key && (ReferenceEquals(key.Window, window) || key.Window == window))
        {
            return key.Value;
        }

        var made = new Key(window, Prefix + NameOf(limit) + "|" + window);
        _keys[(int)limit] = made;
        return made.Value;
    }

    /// <inheritdoc/>
    public override bool Equals(object? obj) => obj is CounterKeys other && other.Prefix == Prefix;

    /// <inheritdoc/>
    public override int GetHashCode() => Prefix.GetHashCode(StringComparison.Ordinal);

    private sealed record Key(string Window, string Value);
}

/// <summary>The limits a scope can count: each has one counter per scope and window.</summary>
public enum CountedLimit
{
    /// <summary><c>rate_limit.requests</c>: requests per minute.</summary>
    RequestsPerMinute,

    /// <summary><c>rate_limit.tokens</c>: tokens per minute.</summary>
    TokensPerMinute,

    /// <summary><c>quota.requests_per_day</c>.</summary>
    RequestsPerDay,

    /// <summary><c>quota.tokens_per_day</c>.</summary>
    TokensPerDay,

    /// <summary><c>quota.requests_per_month</c>.</summary>
    RequestsPerMonth,

    /// <summary><c>quota.tokens_per_month</c>.</summary>
    TokensPerMonth,

    /// <summary><c>budget</c>: cost per day or month.</summary>
    Budget,
}
