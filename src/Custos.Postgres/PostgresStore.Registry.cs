using System.Globalization;
using System.Text.Json;
using Custos.ControlPlane;
using Custos.Ledger;
using Npgsql;
using NpgsqlTypes;

namespace Custos.Postgres;

/// <summary>The control plane's records beside the policy: access requests, the notification outbox, credential use.</summary>
public sealed partial class PostgresStore
{
    /// <inheritdoc/>
    public async Task<AccessRequest> CreateAccessRequestAsync(AccessRequest request, CancellationToken cancellationToken = default)
    {
        await using var command = _dataSource.CreateCommand("""
            INSERT INTO access_requests (tenant, service, consumer, models, valid_until, justification, requested_by, requested_at, status)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending')
            RETURNING number
            """);
        command.Parameters.Add(new NpgsqlParameter { Value = request.Tenant });
        command.Parameters.Add(new NpgsqlParameter { Value = request.Service });
        command.Parameters.Add(new NpgsqlParameter { Value = request.Consumer });
        command.Parameters.Add(new NpgsqlParameter { Value = JsonSerializer.Serialize(request.Models) });
        command.Parameters.Add(Nullable(request.ValidUntil));
        command.Parameters.Add(new NpgsqlParameter { Value = request.Justification });
        command.Parameters.Add(new NpgsqlParameter { Value = request.RequestedBy });
        command.Parameters.Add(new NpgsqlParameter { Value = Utc(request.RequestedAt) });
        var number = (long)(await command.ExecuteScalarAsync(cancellationToken))!;
        return request with { Id = "ar-" + number.ToString(CultureInfo.InvariantCulture), Status = AccessRequestStatus.Pending };
    }

    /// <inheritdoc/>
    public async Task<AccessRequest?> GetAccessRequestAsync(string id, CancellationToken cancellationToken = default)
    {
        if (AccessRequestNumber(id) is not { } number)
        {
            return null;
        }

        var found = await ReadAccessRequestsAsync("WHERE number = $1", number, cancellationToken);
        return found.Count == 0 ? null : found[0];
    }

    /// <inheritdoc/>
    public Task<IReadOnlyList<AccessRequest>> ListAccessRequestsAsync(AccessRequestStatus? status, CancellationToken cancellationToken = default)
        => status is { } s
            ? ReadAccessRequestsAsync("WHERE status = $1", Name(s), cancellationToken)
            : ReadAccessRequestsAsync("", null, cancellationToken);

    /// <inheritdoc/>
    /// <remarks>One conditional UPDATE: of two nodes deciding the same request at once, exactly one gets true.</remarks>
    public async Task<bool> DecideAccessRequestAsync(string id, AccessRequestStatus status, string decidedBy, DateTimeOffset at, string reason,
        long? policyVersion, CancellationToken cancellationToken = default)
    {
        if (AccessRequestNumber(id) is not { } number)
        {
            return false;
        }

        return await ExecuteAsync("""
            UPDATE access_requests SET status = $1, decided_by = $2, decided_at = $3, decision_reason = $4, policy_version = $5
            WHERE number = $6 AND status = 'pending'
            """, p =>
        {
            p.Add(new NpgsqlParameter { Value = Name(status) });
            p.Add(new NpgsqlParameter { Value = decidedBy });
            p.Add(new NpgsqlParameter { Value = Utc(at) });
            p.Add(new NpgsqlParameter { Value = reason });
            p.Add(new NpgsqlParameter { Value = policyVersion is { } v ? v : DBNull.Value, NpgsqlDbType = NpgsqlDbType.Bigint });
            p.Add(new NpgsqlParameter { Value = number });
        }, cancellationToken) == 1;
    }

    /// <inheritdoc/>
    public async Task EnqueueNotificationsAsync(IReadOnlyList<Notification> notifications, CancellationToken cancellationToken = default)
    {
        if (notifications.Count == 0)
        {
            return;
        }

        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        await using var batch = new NpgsqlBatch(connection);
        foreach (var n in notifications)
        {
            var insert = new NpgsqlBatchCommand("""
                INSERT INTO notifications (created_at, role, recipient, channel, target, payload, status, attempts, next_attempt)
                VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $1)
                """);
            insert.Parameters.Add(new NpgsqlParameter { Value = Utc(n.CreatedAt) });
            insert.Parameters.Add(new NpgsqlParameter { Value = n.Role });
            insert.Parameters.Add(new NpgsqlParameter { Value = n.Recipient });
            insert.Parameters.Add(new NpgsqlParameter { Value = n.Channel });
            insert.Parameters.Add(new NpgsqlParameter { Value = n.Target });
            insert.Parameters.Add(new NpgsqlParameter { Value = n.Payload });
            insert.Parameters.Add(new NpgsqlParameter { Value = n.Status });
            batch.BatchCommands.Add(insert);
        }

        // A batch without an explicit transaction runs in an implicit one: all or nothing, one round trip.
        await batch.ExecuteNonQueryAsync(cancellationToken);
    }

    /// <inheritdoc/>
    /// <remarks>
    /// Several nodes run the outbox against one database: the rows returned are claimed (their next attempt moved
    /// <see cref="NotificationClaim"/> ahead, with <c>FOR UPDATE SKIP LOCKED</c>), so no other node sends them meanwhile.
    /// The delivering node records the attempt; should it die first, the claim lapses and another node sends them.
    /// </remarks>
    public async Task<IReadOnlyList<Notification>> DueNotificationsAsync(DateTimeOffset now, int max, CancellationToken cancellationToken = default)
    {
        var claimed = await ReadNotificationsAsync("""
            WHERE id IN (SELECT id FROM notifications WHERE status = 'pending' AND next_attempt <= $1 ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
            """, p =>
        {
            p.Add(new NpgsqlParameter { Value = Utc(now) });
            p.Add(Limit(max));
            p.Add(new NpgsqlParameter { Value = Utc(now + NotificationClaim) });
        }, cancellationToken, update: "UPDATE notifications SET next_attempt = $3 ");
        return [.. claimed.OrderBy(n => n.Id)];
    }

    /// <summary>How long a node's claim on due notifications holds before another node may send them. Default 2 minutes.</summary>
    public TimeSpan NotificationClaim { get; init; } = TimeSpan.FromMinutes(2);

    /// <inheritdoc/>
    public Task<IReadOnlyList<Notification>> ListNotificationsAsync(int limit, CancellationToken cancellationToken = default)
        => ReadNotificationsAsync("ORDER BY id DESC LIMIT $1", p => p.Add(Limit(limit)), cancellationToken);

    /// <inheritdoc/>
    public async Task RecordNotificationAttemptAsync(long id, bool delivered, string? error, DateTimeOffset? nextAttempt,
        CancellationToken cancellationToken = default)
        => await ExecuteAsync("""
            UPDATE notifications SET attempts = attempts + 1, status = $1, last_error = $2, next_attempt = coalesce($3, next_attempt)
            WHERE id = $4
            """, p =>
        {
            p.Add(new NpgsqlParameter { Value = delivered ? "delivered" : "pending" });
            p.Add(new NpgsqlParameter { Value = (object?)error ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Text });
            p.Add(Nullable(nextAttempt));
            p.Add(new NpgsqlParameter { Value = id });
        }, cancellationToken);

    /// <inheritdoc/>
    public async Task<IReadOnlyDictionary<string, DateTimeOffset>> GetCredentialLastUsedAsync(CancellationToken cancellationToken = default)
    {
        await using var command = _dataSource.CreateCommand("SELECT credential_id, last_used FROM credential_usage");
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var result = new Dictionary<string, DateTimeOffset>(StringComparer.Ordinal);
        while (await reader.ReadAsync(cancellationToken))
        {
            result[reader.GetString(0)] = Time(reader, 1);
        }

        return result;
    }

    /// <inheritdoc/>
    /// <remarks>Summed by PostgreSQL as <c>numeric</c>: exact to the last of the nine decimals the records state.</remarks>
    public async Task<IReadOnlyDictionary<string, (decimal Spend, long Requests)>> GetSpendAsync(DateTimeOffset from, DateTimeOffset to,
        CancellationToken cancellationToken = default)
    {
        await using var command = _dataSource.CreateCommand("""
            SELECT service, coalesce(sum(cost), 0), count(*) FROM ledger
            WHERE kind = 'request' AND service IS NOT NULL AND ts >= $1 AND ts < $2
            GROUP BY service
            """);
        command.Parameters.Add(new NpgsqlParameter { Value = Utc(from) });
        command.Parameters.Add(new NpgsqlParameter { Value = Utc(to) });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var result = new Dictionary<string, (decimal Spend, long Requests)>(StringComparer.Ordinal);
        while (await reader.ReadAsync(cancellationToken))
        {
            result[reader.GetString(0)] = (reader.GetDecimal(1), reader.GetInt64(2));
        }

        return result;
    }

    private static string Name(AccessRequestStatus status) => status.ToString().ToLowerInvariant();

    private static long? AccessRequestNumber(string id)
        => id.StartsWith("ar-", StringComparison.Ordinal) && long.TryParse(id.AsSpan(3), out var number) ? number : null;

    private static NpgsqlParameter Nullable(DateTimeOffset? time)
        => new() { Value = time is { } t ? Utc(t) : DBNull.Value, NpgsqlDbType = NpgsqlDbType.TimestampTz };

    /// <summary>A LIMIT: a negative one means none, as in SQLite.</summary>
    private static NpgsqlParameter Limit(int limit) => new() { Value = limit < 0 ? DBNull.Value : limit, NpgsqlDbType = NpgsqlDbType.Integer };

    private async Task<IReadOnlyList<AccessRequest>> ReadAccessRequestsAsync(string where, object? value, CancellationToken cancellationToken)
    {
        await using var command = _dataSource.CreateCommand($"SELECT {StoreRows.AccessRequestColumns} FROM access_requests {where} ORDER BY number");
        if (value is not null)
        {
            command.Parameters.Add(new NpgsqlParameter { Value = value });
        }

        return await StoreRows.ReadAllAsync(command, r => StoreRows.AccessRequest(r, Time), cancellationToken);
    }

    private async Task<IReadOnlyList<Notification>> ReadNotificationsAsync(string tail, Action<NpgsqlParameterCollection> bind, CancellationToken cancellationToken,
        string? update = null)
    {
        await using var command = _dataSource.CreateCommand(update is null
            ? $"SELECT {StoreRows.NotificationColumns} FROM notifications {tail}"
            : $"{update}{tail} RETURNING {StoreRows.NotificationColumns}");
        bind(command.Parameters);
        return await StoreRows.ReadAllAsync(command, r => StoreRows.Notification(r, Time), cancellationToken);
    }
}
