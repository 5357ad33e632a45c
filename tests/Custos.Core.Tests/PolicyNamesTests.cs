using Custos.Policy;

namespace Custos.Core.Tests;

public sealed class PolicyNamesTests
{
    [Fact]
    public void Normalize_GivesTheSameValueAndSpellingAsDividingByOne_ForAnyDecimal()
    {
        var random = new Random(42);
        decimal[] edges = [0m, 0.000m, -0.0m, 1m, 2.50m, 12.40m, 100m, 1000.000000000m, decimal.MaxValue, decimal.MinValue, 0.0000000000000000000000000001m, -7.10m, 79228162514264337593543950335m];
        var values = edges.Concat(Enumerable.Range(0, 5000).Select(_ =>
            new decimal(random.Next(), random.Next(), random.Next(0, 3) == 0 ? random.Next() : 0, random.Next(2) == 0, (byte)random.Next(0, 29))));

        foreach (var value in values)
        {
            var expected = value / 1.0000000000000000000000000000m;
            var actual = PolicyNames.Normalize(value);
            Assert.Equal(expected, actual);
            Assert.Equal(expected.ToString(System.Globalization.CultureInfo.InvariantCulture), actual.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
    }
}
