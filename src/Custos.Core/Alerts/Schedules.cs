using System.Globalization;
using Custos.Policy;

namespace Custos.Alerts;

/// <summary>Reads and evaluates consumer schedules (<c>days</c> and <c>hours</c> in the tenant's time zone).</summary>
public static class Schedules
{
    private static readonly string[] DayNames = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

    /// <summary>Parses <c>mon</c> … <c>sun</c> (or the full English name).</summary>
    public static bool TryParseDay(string text, out DayOfWeek day)
    {
        var key = text.Trim().ToLowerInvariant();
        for (var i = 0; i < DayNames.Length; i++)
        {
            if (key == DayNames[i] || key == ((DayOfWeek)i).ToString().ToLowerInvariant())
            {
                day = (DayOfWeek)i;
                return true;
            }
        }

        day = default;
        return false;
    }

    /// <summary>Parses <c>HH:mm-HH:mm</c>; the end is exclusive and may be before the start (past midnight).</summary>
    public static bool TryParseHours(string text, out TimeOnly start, out TimeOnly end)
    {
        start = end = default;
        var parts = text.Split('-', StringSplitOptions.TrimEntries);
        return parts.Length == 2
            && TimeOnly.TryParseExact(parts[0], "HH:mm", CultureInfo.InvariantCulture, DateTimeStyles.None, out start)
            && (TimeOnly.TryParseExact(parts[1], "HH:mm", CultureInfo.InvariantCulture, DateTimeStyles.None, out end) || parts[1] == "24:00")
            && start != end;
    }

    /// <summary>True when <paramref name="localTime"/> (in the tenant's zone) is within <paramref name="schedule"/>.</summary>
    public static bool IsWithin(ScheduleConfig schedule, DateTime localTime)
    {
        if (schedule.Days.Count > 0)
        {
            var matched = false;
            foreach (var day in schedule.Days)
            {
                matched |= TryParseDay(day, out var d) && d == localTime.DayOfWeek;
            }

            if (!matched)
            {
                return false;
            }
        }

        if (schedule.Hours is null || !TryParseHours(schedule.Hours, out var start, out var end))
        {
            return true;
        }

        var time = TimeOnly.FromDateTime(localTime);
        if (schedule.Hours.EndsWith("24:00", StringComparison.Ordinal))
        {
            return time >= start;
        }

        return start < end ? time >= start && time < end : time >= start || time < end;
    }
}
