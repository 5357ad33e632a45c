using System.Globalization;
using System.Text.Json;

namespace Custos.Ledger;

/// <summary>
/// What a store keeps beside each ledger entry to search by: kind, time, request id, tenant, service, consumer, decision,
/// model, and in PostgreSQL the cost. They are copies of fields of the entry's canonical JSON, written from the same record.
/// </summary>
/// <remarks>
/// The hash chain covers the canonical JSON, not these copies. Searches (<c>custos requests</c>, the admin API's ledger) and
/// reports select entries by them, so a row whose columns were altered would hide from a search or a report, or show up in
/// the wrong one, while every hash still verified. <see cref="LedgerVerifier"/> therefore reads them back with each entry and
/// compares them with the entry's own fields (<see cref="Read(string)"/>, <see cref="Difference"/>). The same reading also
/// gives a request entry's <see cref="Reasons"/>, <see cref="Currency"/> and <see cref="Tokens"/>, which are not columns: with the columns, they are
/// what the request totals sum by, so the verifier adds the entries up again without parsing them a second time.
/// </remarks>
public sealed record LedgerColumns
{
    /// <summary><c>request</c>, <c>admin</c>, <c>shed</c>, or a kind a newer version writes.</summary>
    public required string Kind { get; init; }

    /// <summary>The entry's instant, in the ledger's text form (<see cref="LedgerTime"/>).</summary>
    public required string Timestamp { get; init; }

    /// <summary>The tenant, on every kind that has one.</summary>
    public string? Tenant { get; init; }

    /// <summary>Request entries only: the request id.</summary>
    public string? RequestId { get; init; }

    /// <summary>Request entries only: the service.</summary>
    public string? Service { get; init; }

    /// <summary>Request entries only: the consumer.</summary>
    public string? Consumer { get; init; }

    /// <summary>Request entries only: <c>allow</c>, <c>deny</c> or <c>throttle</c>.</summary>
    public string? Decision { get; init; }

    /// <summary>Request entries only: the model the client asked for.</summary>
    public string? Model { get; init; }

    /// <summary>Request entries only: the cost, when <see cref="HasCost"/>.</summary>
    public decimal? Cost { get; init; }

    /// <summary>Request entries read from their JSON only: the reason codes, which the request totals sum by (<see cref="RequestTotals"/>); empty elsewhere.</summary>
    public IReadOnlyList<string> Reasons { get; init; } = [];

    /// <summary>Request entries read from their JSON only: the cost's currency, which the request totals sum by.</summary>
    public string? Currency { get; init; }

    /// <summary>
    /// Request entries read from their JSON only: the input and output tokens together (<see cref="RequestTotals.TokensOf"/>),
    /// which the request totals add up; 0 elsewhere.
    /// </summary>
    public long Tokens { get; init; }

    /// <summary>Whether <see cref="Cost"/> is one of the columns: true for an entry's own fields and for PostgreSQL, false for SQLite, which keeps no cost column.</summary>
    public bool HasCost { get; init; }

    /// <summary>
    /// The columns as the stores write them for the entry with canonical JSON <paramref name="canonical"/>: the request's
    /// fields only on a <c>request</c> entry. Null when the bytes are not a JSON object with a kind and a timestamp.
    /// </summary>
    public static LedgerColumns? Read(string canonical)
    {
        ArgumentNullException.ThrowIfNull(canonical);
        return Read(System.Text.Encoding.UTF8.GetBytes(canonical));
    }

    /// <summary>As <see cref="Read(string)"/>, from the canonical JSON's UTF-8 bytes.</summary>
    public static LedgerColumns? Read(ReadOnlySpan<byte> canonical)
    {
        var values = new string?[Names.Length];
        List<string>? reasons = null;
        long? inputTokens = null, outputTokens = null;
        try
        {
            var reader = new Utf8JsonReader(canonical);
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            {
                return null;
            }

            // Every field is read once; the reading stops when the kind's fields are all seen, so a request entry's controls,
            // which follow them and are most of its bytes, are not read (verification reads every entry).
            var seen = 0;
            while (!AllSeen(seen, values[0]) && reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                var index = IndexOf(ref reader);
                reader.Read();
                if (index >= 0)
                {
                    seen |= 1 << index;
                }

                if (index == ReasonsIndex && reader.TokenType == JsonTokenType.StartArray)
                {
                    while (reader.Read() && reader.TokenType == JsonTokenType.String)
                    {
                        (reasons ??= []).Add(reader.GetString()!);
                    }

                    if (reader.TokenType != JsonTokenType.EndArray)
                    {
                        return null; // reason codes are strings
                    }

                    continue;
                }

                if (index >= InputTokensIndex && reader.TokenType == JsonTokenType.Number)
                {
                    if (!reader.TryGetInt64(out var tokens))
                    {
                        return null; // token counts are whole numbers
                    }

                    (index == InputTokensIndex ? ref inputTokens : ref outputTokens) = tokens;
                    continue;
                }

                if (index < 0 || reader.TokenType != JsonTokenType.String)
                {
                    reader.Skip(); // null stays null; objects and arrays are passed over whole
                    continue;
                }

                values[index] = reader.GetString();
            }
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException)
        {
            return null;
        }

        var (kind, timestamp, tenant, requestId, service, consumer, decision, model, cost, currency) =
            (values[0], values[1], values[2], values[3], values[4], values[5], values[6], values[7], values[8], values[10]); // the order of Names
        if (kind is null || timestamp is null)
        {
            return null;
        }

        var request = kind == "request";
        decimal? amount = null;
        if (request && cost is not null)
        {
            if (!decimal.TryParse(cost, NumberStyles.Number, CultureInfo.InvariantCulture, out var parsed))
            {
                return null;
            }

            amount = parsed;
        }

        return new LedgerColumns
        {
            Kind = kind,
            Timestamp = timestamp,
            Tenant = tenant,
            RequestId = request ? requestId : null,
            Service = request ? service : null,
            Consumer = request ? consumer : null,
            Decision = request ? decision : null,
            Model = request ? model : null,
            Cost = amount,
            HasCost = true,
            Reasons = request ? (IReadOnlyList<string>?)reasons ?? [] : [],
            Currency = request ? currency : null,
            Tokens = request ? RequestTotals.TokensOf(inputTokens, outputTokens) : 0,
        };
    }

    /// <summary>
    /// The first column of <paramref name="stored"/> that does not say what the entry (<paramref name="recorded"/>, from
    /// <see cref="Read(string)"/>) says, with both values as text; null when they agree. The cost is compared only where it is a column.
    /// </summary>
    public static (string Column, string? Stored, string? Recorded)? Difference(LedgerColumns recorded, LedgerColumns stored)
    {
        ArgumentNullException.ThrowIfNull(recorded);
        ArgumentNullException.ThrowIfNull(stored);
        foreach (var column in TextColumns)
        {
            if (!string.Equals(stored.ValueOf(column), recorded.ValueOf(column), StringComparison.Ordinal))
            {
                return (column, stored.ValueOf(column), recorded.ValueOf(column));
            }
        }

        if (stored.HasCost && stored.Cost != recorded.Cost)
        {
            return ("cost", stored.Cost?.ToString(CultureInfo.InvariantCulture), recorded.Cost?.ToString(CultureInfo.InvariantCulture));
        }

        return null;
    }

    /// <summary>Whether every field of an entry of kind <paramref name="kind"/> has been seen: the first three on any kind, all on a request.</summary>
    private static bool AllSeen(int seen, string? kind)
        => kind is not null && (seen & 0b111) == 0b111 && (kind != "request" || seen == (1 << Names.Length) - 1);

    private static int IndexOf(ref Utf8JsonReader reader)
    {
        for (var i = 0; i < Names.Length; i++)
        {
            if (reader.ValueTextEquals(Names[i]))
            {
                return i;
            }
        }

        return -1;
    }

    /// <summary>The text columns, by their names in the stores.</summary>
    public static IReadOnlyList<string> TextColumns { get; } = ["kind", "ts", "request_id", "tenant", "service", "consumer", "decision", "model"];

    /// <summary>The value of the text column named <paramref name="column"/> (one of <see cref="TextColumns"/>).</summary>
    public string? ValueOf(string column) => column switch
    {
        "kind" => Kind,
        "ts" => Timestamp,
        "request_id" => RequestId,
        "tenant" => Tenant,
        "service" => Service,
        "consumer" => Consumer,
        "decision" => Decision,
        "model" => Model,
        _ => throw new ArgumentOutOfRangeException(nameof(column), column, "not a text column of the ledger"),
    };

    /// <summary>The fields <see cref="Read(string)"/> takes, in the order of its values.</summary>
    private static readonly byte[][] Names =
        [.. new[] { "kind", "timestamp", "tenant", "request_id", "service", "consumer", "decision", "model", "cost", "reasons", "currency", "input_tokens", "output_tokens" }.Select(System.Text.Encoding.UTF8.GetBytes)];

    /// <summary>The place of <c>reasons</c>, an array, in <see cref="Names"/>.</summary>
    private const int ReasonsIndex = 9;

    /// <summary>The place of <c>input_tokens</c>, a number, in <see cref="Names"/>; <c>output_tokens</c> follows it.</summary>
    private const int InputTokensIndex = 11;
}
