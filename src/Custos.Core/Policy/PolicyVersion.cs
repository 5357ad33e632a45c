using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace Custos.Policy;

/// <summary>
/// One immutable version of the policy: its number, the SHA-256 of its canonical form, who made it,
/// why and when. The canonical form is the document as compact JSON with snake_case names, fields in
/// declaration order and lists in document order, so comments and layout of the YAML do not change it.
/// </summary>
public sealed record PolicyVersion(long Number, string Sha256, string Author, string Reason, DateTimeOffset CreatedAt, PolicyDocument Document)
{
    private static readonly JsonSerializerOptions CanonicalOptions = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower), new NormalizedDecimalConverter() },
        WriteIndented = false,
    };

    /// <summary>
    /// The JSON conventions of the policy model (snake_case names and enums, nulls left out), for the admin API's
    /// bodies that carry parts of it. Shared: do not modify.
    /// </summary>
    public static JsonSerializerOptions JsonOptions => CanonicalOptions;

    /// <summary>The canonical JSON form of <paramref name="document"/>.</summary>
    public static string CanonicalJson(PolicyDocument document) => JsonSerializer.Serialize(document, CanonicalOptions);

    /// <summary>Reads a document back from its canonical form.</summary>
    public static PolicyDocument FromCanonicalJson(string json)
        => JsonSerializer.Deserialize<PolicyDocument>(json, CanonicalOptions) ?? throw new InvalidDataException("empty policy document");

    /// <summary>Writes decimals without trailing zeros: 2.50 and 2.5 are the same price, so they hash alike.</summary>
    private sealed class NormalizedDecimalConverter : JsonConverter<decimal>
    {
        public override decimal Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => reader.GetDecimal();

        public override void Write(Utf8JsonWriter writer, decimal value, JsonSerializerOptions options)
            => writer.WriteNumberValue(PolicyNames.Normalize(value));
    }

    /// <summary>Lower-case hex SHA-256 of the canonical form.</summary>
    public static string HashOf(PolicyDocument document)
        => Convert.ToHexStringLower(SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(CanonicalJson(document))));
}
