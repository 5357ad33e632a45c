using System.Text;
using System.Text.Json.Serialization;

namespace Custos.Policy;

/// <summary>The spelling of policy words on the wire, in YAML and in the ledger: <c>snake_case</c>.</summary>
public static class PolicyNames
{
    /// <summary><c>AgentOperator</c> → <c>agent_operator</c>, <c>OpenAI</c> → <c>openai</c>.</summary>
    public static string ToSnakeCase(string name)
    {
        var builder = new StringBuilder(name.Length + 4);
        for (var i = 0; i < name.Length; i++)
        {
            var c = name[i];
            if (char.IsUpper(c) && i > 0 && !char.IsUpper(name[i - 1]))
            {
                builder.Append('_');
            }

            builder.Append(char.ToLowerInvariant(c));
        }

        return builder.ToString();
    }

    /// <summary>The spelling of an enum value in YAML, JSON and the ledger.</summary>
    public static string Of<T>(T value)
        where T : struct, Enum
    {
        var name = value.ToString();
        var attribute = typeof(T).GetField(name)?.GetCustomAttributes(typeof(JsonStringEnumMemberNameAttribute), false)
            .OfType<JsonStringEnumMemberNameAttribute>().FirstOrDefault();
        return attribute?.Name ?? ToSnakeCase(name);
    }

    /// <summary>Every spelling of <typeparamref name="T"/>.</summary>
    public static IEnumerable<string> All<T>()
        where T : struct, Enum
        => Enum.GetValues<T>().Select(Of);

    /// <summary>
    /// <paramref name="value"/> without trailing zeros (2.50 becomes 2.5), so one amount has one spelling in the
    /// policy hash and in the ledger, however it was written or computed.
    /// </summary>
    /// <remarks>
    /// Strips the zeros from the 96-bit mantissa directly: it runs for every number of every control reading in
    /// the ledger, where a decimal division (the usual <c>value / 1.000…m</c> idiom) cost more than all the rest.
    /// </remarks>
    public static decimal Normalize(decimal value)
    {
        var scale = value.Scale;
        if (scale == 0)
        {
            return value;
        }

        Span<int> bits = stackalloc int[4];
        decimal.GetBits(value, bits);
        var mantissa = ((UInt128)(uint)bits[2] << 64) | ((UInt128)(uint)bits[1] << 32) | (uint)bits[0];
        if (mantissa == 0)
        {
            return decimal.Zero;
        }

        while (scale > 0 && mantissa % 10 == 0)
        {
            mantissa /= 10;
            scale--;
        }

        return new decimal((int)(uint)mantissa, (int)(uint)(mantissa >> 32), (int)(uint)(mantissa >> 64), value < 0, scale);
    }

    /// <summary>The ledger spelling of a category.</summary>
    public static string Of(ConsumerCategory category) => category switch
    {
        ConsumerCategory.External => "external",
        ConsumerCategory.Internal => "internal",
        ConsumerCategory.Automation => "automation",
        ConsumerCategory.Agent => "agent",
        _ => category.ToString().ToLowerInvariant(),
    };
}
