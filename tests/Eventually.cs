namespace Custos.Testing;

/// <summary>
/// Waiting in tests for something another thread or process does: polls a condition until it holds, and fails the test
/// with <c>what</c> when it does not within the time given. Linked into every test project (tests/Directory.Build.props).
/// </summary>
internal static class Eventually
{
    /// <summary>The default time to wait: long enough for a loaded CI machine, short enough to fail a hung test.</summary>
    public static readonly TimeSpan DefaultWithin = TimeSpan.FromSeconds(10);

    /// <summary>Returns once <paramref name="condition"/> holds; fails with <paramref name="what"/> after <paramref name="within"/> (10 s).</summary>
    public static async Task TrueAsync(Func<bool> condition, string what, TimeSpan? within = null)
    {
        var deadline = DateTime.UtcNow + (within ?? DefaultWithin);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, what);
            await Task.Delay(10);
        }
    }
}
