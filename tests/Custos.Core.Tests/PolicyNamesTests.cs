using System.Text;
using System.Text.Json;
using Custos.Controls;
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

    [Fact]
    public void ControlResult_WritesEveryReadingWithTheDecimalFormattersSpelling()
    {
        var random = new Random(7);
        decimal[] edges = [0m, -0m, 0.000m, 1m, 1.0m, 12.40m, -3m, long.MaxValue, (decimal)long.MaxValue + 1, 1000000000000m, 0.000014400m, decimal.MaxValue, decimal.MinValue];
        var values = edges.Concat(Enumerable.Range(0, 5000).Select(_ => random.Next(3) switch
        {
            0 => (decimal)random.NextInt64(0, long.MaxValue),
            1 => new decimal(random.Next(), random.Next(), 0, false, (byte)random.Next(0, 12)),
            _ => new decimal(random.Next(), random.Next(), random.Next(), random.Next(2) == 0, (byte)random.Next(0, 29)),
        }));

        foreach (var value in values)
        {
            var result = new ControlResult("quota.tokens_per_day", "consumer:c", ControlDecisions.Pass) { Limit = value, Used = value, Reserved = value, Requested = value };
            var expected = Write(w =>
            {
                w.WriteStartObject();
                w.WriteString("control", "quota.tokens_per_day");
                w.WriteString("scope", "consumer:c");
                w.WriteString("decision", "pass");
                foreach (var name in (string[])["limit", "used", "reserved", "requested"])
                {
                    w.WriteNumber(name, PolicyNames.Normalize(value));
                }

                w.WriteEndObject();
            });
            Assert.Equal(expected, Write(result.WriteTo));
        }

        static string Write(Action<Utf8JsonWriter> write)
        {
            using var stream = new MemoryStream();
            using (var writer = new Utf8JsonWriter(stream))
            {
                write(writer);
            }

            return Encoding.UTF8.GetString(stream.ToArray());
        }
    }
}
