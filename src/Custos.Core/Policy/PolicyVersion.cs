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

    /// <summary>
    /// A version as a store read it back, once its canonical JSON is seen to hash to the SHA-256 stored beside it: the
    /// hash is what the ledger's <c>policy.version_created</c> entry and every request entry name, so a row whose document
    /// was edited behind the gateway (a role, a model, an entitlement) must never be put in force or shown as that version.
    /// </summary>
    /// <exception cref="InvalidDataException">The canonical JSON does not hash to <paramref name="sha256"/>, or cannot be read.</exception>
    public static PolicyVersion FromStored(long number, string sha256, string author, string reason, DateTimeOffset createdAt, string canonical)
    {
        ArgumentNullException.ThrowIfNull(canonical);
        var actual = Convert.ToHexStringLower(SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(canonical)));
        if (!string.Equals(actual, sha256, StringComparison.Ordinal))
        {
            throw new InvalidDataException($"Policy version {number} is damaged or was altered in the store: its document hashes to {Short(actual)}, " +
                $"not to the {Short(sha256)} stored (and recorded in the ledger) with it. Run custos audit verify.");
        }

        PolicyDocument document;
        try
        {
            document = FromCanonicalJson(canonical);
        }
        catch (JsonException ex)
        {
            throw new InvalidDataException($"Policy version {number} cannot be read from the store: {ex.Message}", ex);
        }

        return new PolicyVersion(number, sha256, author, reason, createdAt, document);

        static string Short(string hash) => hash.Length > 12 ? hash[..12] : hash;
    }

    /// <summary>Writes decimals without trailing zeros: 2.50 and 2.5 are the same price, so they hash alike.</summary>
    private sealed class NormalizedDecimalConverter : JsonConverter<decimal>
    {
        public override decimal Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) => reader.GetDecimal();

        public override void Write(Utf8JsonWriter writer, decimal value, JsonSerializerOptions options)
            => writer.WriteNumberValue(PolicyNames.Normalize(value));
    }

    /// <summary>
    /// What storing <paramref name="document"/> after <paramref name="latest"/> means, the same in every store: the latest
    /// itself when the document equals it (nothing is stored), a conflict when the change was made to a version
    /// (<paramref name="basedOn"/>) that is no longer the latest, else the next version. Stores call it under their write lock.
    /// </summary>
    /// <exception cref="Ledger.PolicyConflictException">Another writer stored a newer version than <paramref name="basedOn"/>.</exception>
    public static (PolicyVersion Version, bool Created) Next(PolicyVersion? latest, PolicyDocument document, string sha256, string author, string reason,
        DateTimeOffset now, long? basedOn)
    {
        if (latest is not null && latest.Sha256 == sha256)
        {
            return (latest, false);
        }

        if (basedOn is { } based && based != (latest?.Number ?? 0))
        {
            throw new Ledger.PolicyConflictException(based, latest?.Number ?? 0);
        }

        return (new PolicyVersion((latest?.Number ?? 0) + 1, sha256, author, reason, now, document), true);
    }

    /// <summary>Lower-case hex SHA-256 of the canonical form.</summary>
    public static string HashOf(PolicyDocument document)
        => Convert.ToHexStringLower(SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(CanonicalJson(document))));
}
