namespace Custos.Metering;

/// <summary>
/// Sums of the counts a provider reports. Usage is the provider's word, and a count near <see cref="long.MaxValue"/> is
/// still a count: added to another it must stay the largest count there is, never wrap around into a negative one,
/// which every counter and baseline it reached would take as a refund.
/// </summary>
public static class Saturating
{
    /// <summary><paramref name="a"/> + <paramref name="b"/> for counts (zero or more), at most <see cref="long.MaxValue"/>.</summary>
    public static long Add(long a, long b) => a > long.MaxValue - b ? long.MaxValue : a + b;

    /// <summary><paramref name="a"/> × <paramref name="b"/> for counts (zero or more), at most <see cref="long.MaxValue"/>.</summary>
    public static long Multiply(long a, long b) => a != 0 && b > long.MaxValue / a ? long.MaxValue : a * b;
}
