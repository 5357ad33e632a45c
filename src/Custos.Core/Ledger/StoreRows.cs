using System.Data.Common;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using Custos.Alerts;
using Custos.ControlPlane;

namespace Custos.Ledger;

/// <summary>
/// How both stores (SQLite, PostgreSQL) turn their rows into the control plane's records: the same columns in the
/// same order, so one mapping serves both. Only time columns differ (text in SQLite, <c>timestamptz</c> in
/// PostgreSQL), so each store passes its own reader for them.
/// </summary>
public static class StoreRows
{
    /// <summary>The columns <see cref="AccessRequest(DbDataReader, Func{DbDataReader, int, DateTimeOffset})"/> reads, in order.</summary>
    public const string AccessRequestColumns =
        "number, tenant, service, consumer, models, valid_until, justification, requested_by, requested_at, status, decided_by, decided_at, decision_reason, policy_version";

    /// <summary>The columns <see cref="Notification(DbDataReader, Func{DbDataReader, int, DateTimeOffset})"/> reads, in order.</summary>
    public const string NotificationColumns = "id, created_at, role, recipient, channel, target, payload, status, attempts, last_error";

    /// <summary>The search columns of a ledger row that <see cref="Columns"/> reads after the row's <c>ts</c>, in order (PostgreSQL adds <c>cost</c>).</summary>
    public const string SearchColumns = "kind, tenant, service, consumer, decision, model";

    /// <summary>A ledger row's search columns, from <see cref="SearchColumns"/> at <paramref name="ordinal"/> and the row's time and request id.</summary>
    public static LedgerColumns Columns(DbDataReader reader, int ordinal, string timestamp, string? requestId) => new()
    {
        Kind = reader.GetString(ordinal),
        Timestamp = timestamp,
        RequestId = requestId,
        Tenant = Text(reader, ordinal + 1),
        Service = Text(reader, ordinal + 2),
        Consumer = Text(reader, ordinal + 3),
        Decision = Text(reader, ordinal + 4),
        Model = Text(reader, ordinal + 5),
    };

    private static string? Text(DbDataReader reader, int ordinal) => reader.IsDBNull(ordinal) ? null : reader.GetString(ordinal);

    /// <summary>
    /// The newest <paramref name="limit"/> ledger rows matching <paramref name="where"/> (all of them when negative), oldest
    /// first, each as <paramref name="command"/>'s reader positioned on it: <c>chain_id, seq, kind, record, prev_hash,
    /// hash</c>. Sorting the newest N the other way round would sort their records as well (for an export, the whole
    /// ledger in a temporary B-tree or on disk), so the oldest time among them is found over the <c>ts</c> index, the rows
    /// from that time on are counted and read in order, and the oldest ties at that time that are not among the newest N
    /// are skipped. Run it in one snapshot (a read transaction) so that the statements see the same ledger.
    /// </summary>
    /// <param name="command">The store's command, its filter parameters bound.</param>
    /// <param name="where">The filter's conditions; the cut's is added to it.</param>
    /// <param name="limit">At most this many; negative for all.</param>
    /// <param name="bindCut">Binds the cut's time (as the store read it) to <paramref name="command"/> and gives its placeholder.</param>
    /// <param name="cancellationToken">Stops reading.</param>
    public static async IAsyncEnumerable<DbDataReader> NewestInOrderAsync(DbCommand command, List<string> where, int limit, Func<object, string> bindCut,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        if (limit == 0)
        {
            yield break;
        }

        var skip = 0L;
        if (limit > 0)
        {
            command.CommandText = $"SELECT ts FROM ledger {Where(where)} ORDER BY ts DESC LIMIT 1 OFFSET {limit - 1}";
            if (await command.ExecuteScalarAsync(cancellationToken) is { } cut and not DBNull)
            {
                where.Add("ts >= " + bindCut(cut));
                command.CommandText = $"SELECT count(*) FROM ledger {Where(where)}";
                skip = Convert.ToInt64(await command.ExecuteScalarAsync(cancellationToken), CultureInfo.InvariantCulture) - limit;
            }
        }

        command.CommandText = $"SELECT chain_id, seq, kind, record, prev_hash, hash FROM ledger {Where(where)} ORDER BY ts, chain_id, seq";
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            if (skip > 0)
            {
                skip--;
                continue;
            }

            yield return reader;
        }

        static string Where(List<string> where) => where.Count > 0 ? "WHERE " + string.Join(" AND ", where) : "";
    }

    /// <summary>How an alert is kept: one JSON column.</summary>
    public static JsonSerializerOptions AlertJson { get; } = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    /// <summary>Runs <paramref name="command"/> and maps every row with <paramref name="map"/>.</summary>
    public static async Task<List<T>> ReadAllAsync<T>(DbCommand command, Func<DbDataReader, T> map, CancellationToken cancellationToken)
    {
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var result = new List<T>();
        while (await reader.ReadAsync(cancellationToken))
        {
            result.Add(map(reader));
        }

        return result;
    }

    /// <summary>An access request from a row of <see cref="AccessRequestColumns"/>.</summary>
    public static AccessRequest AccessRequest(DbDataReader reader, Func<DbDataReader, int, DateTimeOffset> time) => new()
    {
        Id = "ar-" + reader.GetInt64(0).ToString(CultureInfo.InvariantCulture),
        Tenant = reader.GetString(1),
        Service = reader.GetString(2),
        Consumer = reader.GetString(3),
        Models = JsonSerializer.Deserialize<string[]>(reader.GetString(4)) ?? [],
        ValidUntil = reader.IsDBNull(5) ? null : time(reader, 5),
        Justification = reader.GetString(6),
        RequestedBy = reader.GetString(7),
        RequestedAt = time(reader, 8),
        Status = Enum.Parse<AccessRequestStatus>(reader.GetString(9), ignoreCase: true),
        DecidedBy = reader.IsDBNull(10) ? null : reader.GetString(10),
        DecidedAt = reader.IsDBNull(11) ? null : time(reader, 11),
        DecisionReason = reader.IsDBNull(12) ? null : reader.GetString(12),
        PolicyVersion = reader.IsDBNull(13) ? null : reader.GetInt64(13),
    };

    /// <summary>A notification from a row of <see cref="NotificationColumns"/>.</summary>
    public static Notification Notification(DbDataReader reader, Func<DbDataReader, int, DateTimeOffset> time) => new()
    {
        Id = reader.GetInt64(0),
        CreatedAt = time(reader, 1),
        Role = reader.GetString(2),
        Recipient = reader.GetString(3),
        Channel = reader.GetString(4),
        Target = reader.GetString(5),
        Payload = reader.GetString(6),
        Status = reader.GetString(7),
        Attempts = reader.GetInt32(8),
        LastError = reader.IsDBNull(9) ? null : reader.GetString(9),
    };

    /// <summary>
    /// An alert from its JSON column, or null with what is wrong when the column does not read as an alert (edited in the
    /// store by hand, or cut short): the lists skip such a row, the alert engine warns of it, and <c>audit verify</c> names it.
    /// </summary>
    public static Alert? TryAlert(string json, out string? error)
    {
        try
        {
            var alert = JsonSerializer.Deserialize<Alert>(json, AlertJson);
            error = alert is null ? "it is null" : null;
            return alert;
        }
        catch (Exception ex) when (ex is JsonException or NotSupportedException or InvalidOperationException)
        {
            error = ex.Message.Split('\n')[0];
            return null;
        }
    }

    /// <summary>The alerts of <paramref name="command"/>'s rows (<c>alert</c>), those that do not read left out.</summary>
    public static async Task<List<Alert>> ReadAlertsAsync(DbCommand command, CancellationToken cancellationToken)
    {
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var result = new List<Alert>();
        while (await reader.ReadAsync(cancellationToken))
        {
            if (TryAlert(reader.GetString(0), out _) is { } alert)
            {
                result.Add(alert);
            }
        }

        return result;
    }

    /// <summary>The rows of <paramref name="command"/> (<c>number, alert</c>), each read as a <see cref="StoredAlert"/>.</summary>
    public static async IAsyncEnumerable<StoredAlert> ReadAlertRowsAsync(DbCommand command,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            var alert = TryAlert(reader.GetString(1), out var error);
            yield return new StoredAlert(reader.GetInt64(0), alert, error);
        }
    }
}
