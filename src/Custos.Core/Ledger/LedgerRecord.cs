using System.Text.Json;

namespace Custos.Ledger;

/// <summary>
/// Something the ledger records: a request decision or an administrative action. Its canonical form,
/// written by <see cref="WriteCanonical"/>, is what the hash chain covers.
/// </summary>
/// <remarks>
/// WARNING: the canonical form of every record type is a persisted contract. Field names, their order
/// and their formatting are frozen by golden tests (LedgerCanonicalFormTests). Only ever append new
/// fields at the end, and bump <see cref="LedgerFormat.Version"/> with a migration note when you do.
/// </remarks>
public abstract class LedgerRecord
{
    /// <summary><c>request</c> or <c>admin</c>.</summary>
    public abstract string Kind { get; }

    /// <summary>When it happened (UTC).</summary>
    public DateTimeOffset Timestamp { get; set; }

    /// <summary>The tenant it concerns, when there is one.</summary>
    public string? Tenant { get; set; }

    /// <summary>Writes the canonical JSON object.</summary>
    public abstract void WriteCanonical(Utf8JsonWriter writer);

    /// <summary>Opens the object and writes the fields every record kind but <c>request</c> starts with: v, kind, timestamp, tenant.</summary>
    protected void WriteStart(Utf8JsonWriter writer)
    {
        writer.WriteStartObject();
        writer.WriteNumber("v", LedgerFormat.Version);
        writer.WriteString("kind", Kind);
        WriteTime(writer, "timestamp", Timestamp);
        WriteNullable(writer, "tenant", Tenant);
    }

    /// <summary>Writes an instant in the ledger's text form (<see cref="LedgerTime"/>), without allocating.</summary>
    protected static void WriteTime(Utf8JsonWriter writer, JsonEncodedText name, DateTimeOffset time)
    {
        Span<byte> utf8 = stackalloc byte[LedgerTime.Length];
        LedgerTime.FormatUtf8(time, utf8);
        writer.WriteString(name, utf8);
    }

    /// <summary>Writes an instant in the ledger's text form.</summary>
    protected static void WriteTime(Utf8JsonWriter writer, string name, DateTimeOffset time) => WriteTime(writer, JsonEncodedText.Encode(name), time);

    /// <summary>Writes a string or null.</summary>
    protected static void WriteNullable(Utf8JsonWriter writer, string name, string? value) => WriteNullable(writer, JsonEncodedText.Encode(name), value);

    /// <summary>Writes a string or null.</summary>
    protected static void WriteNullable(Utf8JsonWriter writer, JsonEncodedText name, string? value)
    {
        if (value is null)
        {
            writer.WriteNull(name);
        }
        else
        {
            writer.WriteString(name, value);
        }
    }
}

/// <summary>Versions of the ledger format.</summary>
public static class LedgerFormat
{
    /// <summary>
    /// The current canonical-form version, written into every record as <c>v</c>. 1: the first request and
    /// admin records. 2: request records append <c>max_output_tokens</c>, <c>n</c> and <c>controls</c>.
    /// Records are verified against the bytes stored, so records of every version stay verifiable.
    /// </summary>
    public const int Version = 2;
}

/// <summary>An administrative action: who changed what, from what to what, and why.</summary>
public sealed class AdminRecord : LedgerRecord
{
    /// <inheritdoc/>
    public override string Kind => "admin";

    /// <summary>Who did it: an admin identity, or <c>system:…</c> for the gateway itself.</summary>
    public required string Actor { get; init; }

    /// <summary>What was done, for example <c>policy.version_created</c>.</summary>
    public required string Action { get; init; }

    /// <summary>What it was done to, for example <c>policy</c> or a credential id.</summary>
    public required string Target { get; init; }

    /// <summary>The state before, as a short value (a hash, a status), or null.</summary>
    public string? Before { get; init; }

    /// <summary>The state after, or null.</summary>
    public string? After { get; init; }

    /// <summary>Why.</summary>
    public string? Reason { get; init; }

    /// <summary>The policy version in force after the action.</summary>
    public long PolicyVersion { get; init; }

    /// <summary>
    /// The id of the admin API request the action answered, where the observers of the ledger need it (a refused sign-in,
    /// <see cref="AdminSignIn"/>), else null. Not part of the canonical form: the entry states it in its reason for readers.
    /// </summary>
    public string? RequestId { get; init; }

    /// <inheritdoc/>
    public override void WriteCanonical(Utf8JsonWriter writer)
    {
        WriteStart(writer);
        writer.WriteString("actor", Actor);
        writer.WriteString("action", Action);
        writer.WriteString("target", Target);
        WriteNullable(writer, "before", Before);
        WriteNullable(writer, "after", After);
        WriteNullable(writer, "reason", Reason);
        writer.WriteNumber("policy_version", PolicyVersion);
        writer.WriteEndObject();
    }
}

/// <summary>
/// Requests shed while the ledger's queue was completely full, counted instead of recorded one by one: the
/// last resort that keeps memory bounded when the store stops accepting writes, without losing the fact.
/// </summary>
public sealed class ShedRecord : LedgerRecord
{
    /// <inheritdoc/>
    public override string Kind => "shed";

    /// <summary>The node that shed them.</summary>
    public required string NodeId { get; init; }

    /// <summary>When the first of them arrived; <see cref="LedgerRecord.Timestamp"/> is when the last one did.</summary>
    public required DateTimeOffset First { get; init; }

    /// <summary>How many requests, by reason code.</summary>
    public required IReadOnlyDictionary<string, long> Reasons { get; init; }

    /// <summary>The policy version in force for the last of them.</summary>
    public long PolicyVersion { get; init; }

    /// <inheritdoc/>
    public override void WriteCanonical(Utf8JsonWriter writer)
    {
        WriteStart(writer);
        writer.WriteString("node_id", NodeId);
        WriteTime(writer, "first", First);
        writer.WriteNumber("count", Reasons.Values.Sum());
        writer.WriteStartObject("reasons");
        foreach (var (code, count) in Reasons.OrderBy(r => r.Key, StringComparer.Ordinal))
        {
            writer.WriteNumber(code, count);
        }

        writer.WriteEndObject();
        writer.WriteNumber("policy_version", PolicyVersion);
        writer.WriteEndObject();
    }
}
