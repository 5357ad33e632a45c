using System.Collections.Frozen;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Custos.Errors;

/// <summary>
/// Reads every enum of a JSON body by its snake_case name (<c>month</c>, <c>platform_admin</c>), case-insensitively as
/// <see cref="JsonStringEnumConverter"/> does, and refuses anything else with <see cref="JsonEnumValueException"/>, which
/// lists the names it takes: the serializer's own refusal names the .NET type, not the values a caller may send. A number
/// is refused too: <c>"period": 1</c> would otherwise read as whatever member has that value. Writes the same names.
/// </summary>
public sealed class JsonEnumNames : JsonConverterFactory
{
    /// <inheritdoc/>
    public override bool CanConvert(Type typeToConvert) => typeToConvert.IsEnum;

    /// <inheritdoc/>
    public override JsonConverter CreateConverter(Type typeToConvert, JsonSerializerOptions options)
        => (JsonConverter)Activator.CreateInstance(typeof(Names<>).MakeGenericType(typeToConvert))!;

    private sealed class Names<T> : JsonConverter<T>
        where T : struct, Enum
    {
        private static readonly FrozenDictionary<string, T> ByName = Enum.GetValues<T>().ToFrozenDictionary(NameOf, v => v, StringComparer.OrdinalIgnoreCase);

        private static readonly string[] Allowed = [.. Enum.GetValues<T>().Select(NameOf)];

        // As the enum converter of the policy's JSON names it: a member's own name (openai), else its snake_case.
        private static string NameOf(T value)
        {
            var name = value.ToString();
            return typeof(T).GetField(name)?.GetCustomAttributes(typeof(JsonStringEnumMemberNameAttribute), false)
                .OfType<JsonStringEnumMemberNameAttribute>().FirstOrDefault()?.Name ?? JsonNamingPolicy.SnakeCaseLower.ConvertName(name);
        }

        public override T Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options)
        {
            if (reader.TokenType == JsonTokenType.String && reader.GetString() is { } name && ByName.TryGetValue(name, out var value))
            {
                return value;
            }

            throw new JsonEnumValueException(reader.TokenType == JsonTokenType.String ? reader.GetString() : null, Allowed);
        }

        public override void Write(Utf8JsonWriter writer, T value, JsonSerializerOptions options)
            => writer.WriteStringValue(NameOf(value));
    }
}

/// <summary>A JSON value that is none of its enum's names (<see cref="JsonEnumNames"/>); <see cref="JsonFaults.DescribeDocument"/> says which it takes.</summary>
public sealed class JsonEnumValueException : JsonException
{
    /// <summary>A refusal of <paramref name="value"/> (null when it was no string), listing <paramref name="allowed"/>.</summary>
    public JsonEnumValueException(string? value, IReadOnlyList<string> allowed)
        : base("The value is none of: " + string.Join(", ", allowed) + ".")
    {
        Value = value;
        Allowed = allowed;
    }

    /// <summary>The string sent, or null when the value was no string (a number, an object).</summary>
    public string? Value { get; }

    /// <summary>The names the enum takes, in its order.</summary>
    public IReadOnlyList<string> Allowed { get; }
}
