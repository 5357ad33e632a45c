using Custos.Controls;

namespace Custos.Core.Tests;

public sealed class WindowClockTests
{
    private static readonly TimeZoneInfo Berlin = TimeZoneInfo.FindSystemTimeZoneById("Europe/Berlin");

    [Fact]
    public void Minute_IsTheSameWindowUntilItEnds_ThenTheNext()
    {
        var clock = new WindowClock(TimeZoneInfo.Utc);
        var first = clock.Minute(new DateTimeOffset(2026, 11, 29, 10, 15, 0, TimeSpan.Zero));
        var later = clock.Minute(new DateTimeOffset(2026, 11, 29, 10, 15, 59, 999, TimeSpan.Zero));
        var next = clock.Minute(new DateTimeOffset(2026, 11, 29, 10, 16, 0, TimeSpan.Zero));

        Assert.Same(first.Id, later.Id); // one string for the whole window: the counter keys are reused by reference
        Assert.Equal(Windows.Minute(new DateTimeOffset(2026, 11, 29, 10, 16, 0, TimeSpan.Zero)), next);
        Assert.NotEqual(first.Id, next.Id);
    }

    [Fact]
    public void DayAndMonth_EqualTheUncachedWindows_AcrossDaylightSavingAndGoingBackInTime()
    {
        var clock = new WindowClock(Berlin);
        // Hourly over the spring-forward and autumn-back weekends of 2026 and a month boundary, then back to the start.
        var instants = Enumerable.Range(0, 72).Select(h => new DateTimeOffset(2026, 3, 28, 0, 0, 0, TimeSpan.Zero).AddHours(h))
            .Concat(Enumerable.Range(0, 72).Select(h => new DateTimeOffset(2026, 10, 24, 0, 0, 0, TimeSpan.Zero).AddHours(h)))
            .Append(new DateTimeOffset(2026, 3, 28, 0, 0, 0, TimeSpan.Zero));
        foreach (var now in instants)
        {
            Assert.Equal(Windows.Day(now, Berlin), clock.Day(now));
            Assert.Equal(Windows.Month(now, Berlin), clock.Month(now));
            Assert.True(clock.Day(now).Contains(now));
        }
    }

    [Fact]
    public void CounterKeys_AreMadeOncePerWindow()
    {
        var keys = new CounterKeys("acme|consumer|bot|");
        var budget = CountedLimit.Budget;

        var key = keys.For(budget, "M202611");
        Assert.Equal("acme|consumer|bot|budget|M202611", key);
        Assert.Same(key, keys.For(budget, new string("M202611".AsSpan()))); // an equal id, another string: still the same key
        Assert.Equal("acme|consumer|bot|budget|M202612", keys.For(budget, "M202612"));
        Assert.Equal("acme|consumer|bot|rate_limit.requests|m1", keys.For(CountedLimit.RequestsPerMinute, "m1"));
    }
}
