using System.Text.Json;
using Custos.ControlPlane;
using Custos.Ledger;
using Microsoft.Data.Sqlite;

namespace Custos.Storage;

/// <summary>The control plane's records beside the policy: access requests, the notification outbox, credential use.</summary>
public sealed partial class SqliteStore
{
    private const string RegistrySchema = """

        CREATE TABLE IF NOT EXISTS access_requests (
            number        INTEGER PRIMARY KEY AUTOINCREMENT,
            tenant        TEXT NOT NULL,
            service       TEXT NOT NULL,
            consumer      TEXT NOT NULL,
            models        TEXT NOT NULL,
            valid_until   TEXT,
            justification TEXT NOT NULL,
            requested_by  TEXT NOT NULL,
            requested_at  TEXT NOT NULL,
            status        TEXT NOT NULL,
            decided_by    TEXT,
            decided_at    TEXT,
            decision_reason TEXT,
            policy_version INTEGER
        );
        CREATE TABLE IF NOT EXISTS notifications (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,
            created_at   TEXT NOT NULL,
            role         TEXT NOT NULL,
            recipient    TEXT NOT NULL,
            channel      TEXT NOT NULL,
            target       TEXT NOT NULL,
            payload      TEXT NOT NULL,
            status       TEXT NOT NULL,
            attempts     INTEGER NOT NULL DEFAULT 0,
            next_attempt TEXT NOT NULL,
            last_error   TEXT
        );
        CREATE INDEX IF NOT EXISTS notifications_due ON notifications (status, next_attempt);
        CREATE TABLE IF NOT EXISTS checkpoints (
            chain_id   TEXT NOT NULL,
            to_seq     INTEGER NOT NULL,
            from_seq   INTEGER NOT NULL,
            checkpoint TEXT NOT NULL,
            signature  TEXT NOT NULL,
            PRIMARY KEY (chain_id, to_seq)
        );
        CREATE TRIGGER IF NOT EXISTS checkpoints_no_update BEFORE UPDATE ON checkpoints
            BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
        CREATE TRIGGER IF NOT EXISTS checkpoints_no_delete BEFORE DELETE ON checkpoints
            BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
        CREATE TABLE IF NOT EXISTS credential_usage (
            credential_id TEXT PRIMARY KEY,
            last_used     TEXT NOT NULL
        );
        """;

    /// <inheritdoc/>
    public async Task<AccessRequest> CreateAccessRequestAsync(AccessRequest request, CancellationToken cancellationToken = default)
    {
        await _writeLock.WaitAsync(cancellationToken);
        try
        {
            using var command = Writer.CreateCommand();
            command.CommandText = """
                INSERT INTO access_requests (tenant, service, consumer, models, valid_until, justification, requested_by, requested_at, status)
                VALUES ($tenant, $service, $consumer, $models, $until, $justification, $by, $at, 'pending')
                RETURNING number
                """;
            command.Parameters.AddWithValue("$tenant", request.Tenant);
            command.Parameters.AddWithValue("$service", request.Service);
            command.Parameters.AddWithValue("$consumer", request.Consumer);
            command.Parameters.AddWithValue("$models", JsonSerializer.Serialize(request.Models));
            command.Parameters.AddWithValue("$until", request.ValidUntil is { } until ? LedgerTime.Format(until) : DBNull.Value);
            command.Parameters.AddWithValue("$justification", request.Justification);
            command.Parameters.AddWithValue("$by", request.RequestedBy);
            command.Parameters.AddWithValue("$at", LedgerTime.Format(request.RequestedAt));
            var number = Convert.ToInt64(await command.ExecuteScalarAsync(cancellationToken), System.Globalization.CultureInfo.InvariantCulture);
            return request with { Id = "ar-" + number, Status = AccessRequestStatus.Pending };
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <inheritdoc/>
    public async Task<AccessRequest?> GetAccessRequestAsync(string id, CancellationToken cancellationToken = default)
    {
        if (!id.StartsWith("ar-", StringComparison.Ordinal) || !long.TryParse(id.AsSpan(3), out var number))
        {
            return null;
        }

        var found = await ReadAccessRequestsAsync("WHERE number = $number", c => c.Parameters.AddWithValue("$number", number), cancellationToken);
        return found.Count == 0 ? null : found[0];
    }

    /// <inheritdoc/>
    public Task<IReadOnlyList<AccessRequest>> ListAccessRequestsAsync(AccessRequestStatus? status, CancellationToken cancellationToken = default)
        => status is { } s
            ? ReadAccessRequestsAsync("WHERE status = $status", c => c.Parameters.AddWithValue("$status", Name(s)), cancellationToken)
            : ReadAccessRequestsAsync("", _ => { }, cancellationToken);

    /// <inheritdoc/>
    public async Task<bool> DecideAccessRequestAsync(string id, AccessRequestStatus status, string decidedBy, DateTimeOffset at, string reason,
        long? policyVersion, CancellationToken cancellationToken = default)
    {
        if (!id.StartsWith("ar-", StringComparison.Ordinal) || !long.TryParse(id.AsSpan(3), out var number))
        {
            return false;
        }

        await _writeLock.WaitAsync(cancellationToken);
        try
        {
            using var command = Writer.CreateCommand();
            command.CommandText = """
                UPDATE access_requests SET status = $status, decided_by = $by, decided_at = $at, decision_reason = $reason, policy_version = $version
                WHERE number = $number AND status = 'pending'
                """;
            command.Parameters.AddWithValue("$status", Name(status));
            command.Parameters.AddWithValue("$by", decidedBy);
            command.Parameters.AddWithValue("$at", LedgerTime.Format(at));
            command.Parameters.AddWithValue("$reason", reason);
            command.Parameters.AddWithValue("$version", policyVersion is { } v ? v : DBNull.Value);
            command.Parameters.AddWithValue("$number", number);
            return await command.ExecuteNonQueryAsync(cancellationToken) == 1;
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <inheritdoc/>
    public async Task EnqueueNotificationsAsync(IReadOnlyList<Notification> notifications, CancellationToken cancellationToken = default)
    {
        if (notifications.Count == 0)
        {
            return;
        }

        await _writeLock.WaitAsync(cancellationToken);
        try
        {
            await using var transaction = await Writer.BeginTransactionAsync(cancellationToken);
            foreach (var n in notifications)
            {
                using var command = Writer.CreateCommand();
                command.Transaction = (SqliteTransaction)transaction;
                command.CommandText = """
                    INSERT INTO notifications (created_at, role, recipient, channel, target, payload, status, attempts, next_attempt)
                    VALUES ($at, $role, $recipient, $channel, $target, $payload, $status, 0, $at)
                    """;
                command.Parameters.AddWithValue("$at", LedgerTime.Format(n.CreatedAt));
                command.Parameters.AddWithValue("$role", n.Role);
                command.Parameters.AddWithValue("$recipient", n.Recipient);
                command.Parameters.AddWithValue("$channel", n.Channel);
                command.Parameters.AddWithValue("$target", n.Target);
                command.Parameters.AddWithValue("$payload", n.Payload);
                command.Parameters.AddWithValue("$status", n.Status);
                await command.ExecuteNonQueryAsync(cancellationToken);
            }

            await transaction.CommitAsync(cancellationToken);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <inheritdoc/>
    /// <remarks>The rows returned are claimed for <see cref="NotificationClaim"/> (their next attempt moved ahead), as in PostgreSQL.</remarks>
    public async Task<IReadOnlyList<Notification>> DueNotificationsAsync(DateTimeOffset now, int max, CancellationToken cancellationToken = default)
    {
        await _writeLock.WaitAsync(cancellationToken);
        try
        {
            var claimed = await ReadNotificationsAsync("""
                WHERE id IN (SELECT id FROM notifications WHERE status = 'pending' AND next_attempt <= $now ORDER BY id LIMIT $max)
                """, c =>
            {
                c.Parameters.AddWithValue("$now", LedgerTime.Format(now));
                c.Parameters.AddWithValue("$max", max);
                c.Parameters.AddWithValue("$claim", LedgerTime.Format(now + NotificationClaim));
            }, cancellationToken, update: "UPDATE notifications SET next_attempt = $claim ");
            return [.. claimed.OrderBy(n => n.Id)];
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <summary>How long a claim on due notifications holds before they are due again. Default 2 minutes.</summary>
    public TimeSpan NotificationClaim { get; init; } = TimeSpan.FromMinutes(2);

    /// <inheritdoc/>
    public Task<IReadOnlyList<Notification>> ListNotificationsAsync(int limit, CancellationToken cancellationToken = default)
        => ReadNotificationsAsync("ORDER BY id DESC LIMIT $max", c => c.Parameters.AddWithValue("$max", limit), cancellationToken);

    /// <inheritdoc/>
    public async Task RecordNotificationAttemptAsync(long id, bool delivered, string? error, DateTimeOffset? nextAttempt,
        CancellationToken cancellationToken = default)
    {
        await _writeLock.WaitAsync(cancellationToken);
        try
        {
            using var command = Writer.CreateCommand();
            command.CommandText = """
                UPDATE notifications SET attempts = attempts + 1, status = $status, last_error = $error,
                    next_attempt = coalesce($next, next_attempt)
                WHERE id = $id
                """;
            command.Parameters.AddWithValue("$status", delivered ? "delivered" : "pending");
            command.Parameters.AddWithValue("$error", (object?)error ?? DBNull.Value);
            command.Parameters.AddWithValue("$next", nextAttempt is { } next ? LedgerTime.Format(next) : DBNull.Value);
            command.Parameters.AddWithValue("$id", id);
            await command.ExecuteNonQueryAsync(cancellationToken);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyDictionary<string, DateTimeOffset>> GetCredentialLastUsedAsync(CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenReaderAsync(cancellationToken);
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT credential_id, last_used FROM credential_usage";
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var result = new Dictionary<string, DateTimeOffset>(StringComparer.Ordinal);
        while (await reader.ReadAsync(cancellationToken))
        {
            result[reader.GetString(0)] = LedgerTime.Parse(reader.GetString(1));
        }

        return result;
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyDictionary<string, (decimal Spend, long Requests)>> GetSpendAsync(DateTimeOffset from, DateTimeOffset to,
        CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenReaderAsync(cancellationToken);
        using var command = connection.CreateCommand();
        command.CommandText = """
            SELECT service, record FROM ledger
            WHERE kind = 'request' AND service IS NOT NULL AND ts >= $from AND ts < $to
            """;
        command.Parameters.AddWithValue("$from", LedgerTime.Format(from));
        command.Parameters.AddWithValue("$to", LedgerTime.Format(to));
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        var result = new Dictionary<string, (decimal Spend, long Requests)>(StringComparer.Ordinal);
        while (await reader.ReadAsync(cancellationToken))
        {
            // Costs are summed as decimals, not as SQLite's floating point: spend must add up to the cent.
            using var entry = System.Text.Json.JsonDocument.Parse(LedgerRecordCodec.Read(reader, 1, _dictionaries));
            var cost = entry.RootElement.TryGetProperty("cost", out var value) && value.ValueKind == System.Text.Json.JsonValueKind.String
                ? decimal.Parse(value.GetString()!, System.Globalization.CultureInfo.InvariantCulture)
                : 0m;
            var (spend, requests) = result.GetValueOrDefault(reader.GetString(0));
            result[reader.GetString(0)] = (spend + cost, requests + 1);
        }

        return result;
    }

    private SqliteConnection Writer => _writer ?? throw new ObjectDisposedException(nameof(SqliteStore));

    private static string Name(AccessRequestStatus status) => status.ToString().ToLowerInvariant();

    private async Task<IReadOnlyList<AccessRequest>> ReadAccessRequestsAsync(string where, Action<SqliteCommand> bind, CancellationToken cancellationToken)
    {
        await using var connection = await OpenReaderAsync(cancellationToken);
        using var command = connection.CreateCommand();
        command.CommandText = $"SELECT {StoreRows.AccessRequestColumns} FROM access_requests {where} ORDER BY number";
        bind(command);
        return await StoreRows.ReadAllAsync(command, r => StoreRows.AccessRequest(r, Time), cancellationToken);
    }

    private async Task<IReadOnlyList<Notification>> ReadNotificationsAsync(string tail, Action<SqliteCommand> bind, CancellationToken cancellationToken,
        string? update = null)
    {
        await using var connection = update is null ? await OpenReaderAsync(cancellationToken) : null;
        using var command = (connection ?? _writer!).CreateCommand();
        command.CommandText = update is null
            ? $"SELECT {StoreRows.NotificationColumns} FROM notifications {tail}"
            : $"{update}{tail} RETURNING {StoreRows.NotificationColumns}";
        bind(command);
        return await StoreRows.ReadAllAsync(command, r => StoreRows.Notification(r, Time), cancellationToken);
    }

    /// <summary>SQLite keeps times as <see cref="LedgerTime"/> text.</summary>
    private static DateTimeOffset Time(System.Data.Common.DbDataReader reader, int ordinal) => LedgerTime.Parse(reader.GetString(ordinal));
}
