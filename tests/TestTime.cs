namespace Custos.Testing;

/// <summary>
/// Instants for fake clocks that something outside the process also reads: Redis expires counters at the window's end
/// by its own clock (<c>PEXPIREAT</c>), so a fake clock behind the real one expires every counter as it is made. Linked
/// into every test project (tests/Directory.Build.props).
/// </summary>
internal static class TestTime
{
    /// <summary>
    /// The start of a minute a day ahead of the real clock, plus <paramref name="seconds"/>: a minute window that holds
    /// for as long as the fake clock is not moved, and whose end is in the future for every server. Never a fixed date,
    /// which the real clock overtakes.
    /// </summary>
    public static DateTimeOffset MinuteAhead(int seconds = 0)
    {
        var ahead = DateTimeOffset.UtcNow.AddDays(1);
        return new DateTimeOffset(ahead.Year, ahead.Month, ahead.Day, ahead.Hour, ahead.Minute, 0, TimeSpan.Zero).AddSeconds(seconds);
    }
}
