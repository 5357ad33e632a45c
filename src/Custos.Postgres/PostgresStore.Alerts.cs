using System.Text.Json;
using Custos.Alerts;
using Custos.Ledger;
using Custos.Policy;
using Npgsql;

namespace Custos.Postgres;

/// <summary>Alerts: one row each, the whole alert as JSON (the SQLite store's form) beside the columns the lists filter on.</summary>
public sealed partial class PostgresStore
{
    /// <inheritdoc/>
    /// <remarks>The number is drawn from the identity's sequence first, so the row is written once, with its id inside.</remarks>
    public async Task<Alert> CreateAlertAsync(Alert alert, CancellationToken cancellationToken = default)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken);
        long number;
        await using (var next = new NpgsqlCommand("SELECT nextval(pg_get_serial_sequence('alerts', 'number'))", connection))
        {
            number = (long)(await next.ExecuteScalarAsync(cancellationToken))!;
        }

        var stored = alert with { Id = Alert.IdOf(number) };
        await using var insert = new NpgsqlCommand("INSERT INTO alerts (number, status, fingerprint, raised_at, alert) VALUES ($1, $2, $3, $4, $5)", connection);
        insert.Parameters.Add(new NpgsqlParameter { Value = number });
        insert.Parameters.Add(new NpgsqlParameter { Value = PolicyNames.Of(alert.Status) });
        insert.Parameters.Add(new NpgsqlParameter { Value = alert.Signal.Fingerprint });
        insert.Parameters.Add(new NpgsqlParameter { Value = Utc(alert.RaisedAt) });
        insert.Parameters.Add(new NpgsqlParameter { Value = JsonSerializer.Serialize(stored, StoreRows.AlertJson) });
        await insert.ExecuteNonQueryAsync(cancellationToken);
        return stored;
    }

    /// <inheritdoc/>
    public async Task UpdateAlertAsync(Alert alert, CancellationToken cancellationToken = default)
    {
        var number = Alert.NumberOf(alert.Id) ?? throw new ArgumentException($"'{alert.Id}' is not an alert id.", nameof(alert));
        await ExecuteAsync("UPDATE alerts SET status = $1, alert = $2 WHERE number = $3", p =>
        {
            p.Add(new NpgsqlParameter { Value = PolicyNames.Of(alert.Status) });
            p.Add(new NpgsqlParameter { Value = JsonSerializer.Serialize(alert, StoreRows.AlertJson) });
            p.Add(new NpgsqlParameter { Value = number });
        }, cancellationToken);
    }

    /// <inheritdoc/>
    public async Task<Alert?> GetAlertAsync(string id, CancellationToken cancellationToken = default)
    {
        if (Alert.NumberOf(id) is not { } number)
        {
            return null;
        }

        await using var command = _dataSource.CreateCommand("SELECT alert FROM alerts WHERE number = $1");
        command.Parameters.Add(new NpgsqlParameter { Value = number });
        return await command.ExecuteScalarAsync(cancellationToken) is string json ? StoreRows.TryAlert(json, out _) : null;
    }

    /// <inheritdoc/>
    public async Task<Alert?> FindActiveAlertAsync(string fingerprint, CancellationToken cancellationToken = default)
    {
        await using var command = _dataSource.CreateCommand(
            "SELECT alert FROM alerts WHERE status IN ('open', 'acknowledged') AND fingerprint = $1 ORDER BY number DESC LIMIT 1");
        command.Parameters.Add(new NpgsqlParameter { Value = fingerprint });
        return await command.ExecuteScalarAsync(cancellationToken) is string json ? StoreRows.TryAlert(json, out _) : null;
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<Alert>> ListAlertsAsync(AlertStatus? status, int limit, CancellationToken cancellationToken = default)
    {
        await using var command = _dataSource.CreateCommand(status is null
            ? "SELECT alert FROM alerts ORDER BY number DESC LIMIT $1"
            : "SELECT alert FROM alerts WHERE status = $2 ORDER BY number DESC LIMIT $1");
        command.Parameters.Add(new NpgsqlParameter { Value = Math.Clamp(limit, 1, 100_000) });
        if (status is { } s)
        {
            command.Parameters.Add(new NpgsqlParameter { Value = PolicyNames.Of(s) });
        }

        return await StoreRows.ReadAlertsAsync(command, cancellationToken);
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<StoredAlert> ReadAlertsAsync(AlertStatus? status,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await using var command = _dataSource.CreateCommand(status is null
            ? "SELECT number, alert FROM alerts ORDER BY number"
            : "SELECT number, alert FROM alerts WHERE status = $1 ORDER BY number");
        if (status is { } s)
        {
            command.Parameters.Add(new NpgsqlParameter { Value = PolicyNames.Of(s) });
        }

        await foreach (var row in StoreRows.ReadAlertRowsAsync(command, cancellationToken))
        {
            yield return row;
        }
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<(string Consumer, string Model)>> GetConsumerModelsAsync(CancellationToken cancellationToken = default)
    {
        await using var command = _dataSource.CreateCommand("""
            SELECT DISTINCT consumer, model FROM ledger
            WHERE kind = 'request' AND decision = 'allow' AND consumer IS NOT NULL AND model IS NOT NULL
            """);
        return await StoreRows.ReadAllAsync(command, reader => (reader.GetString(0), reader.GetString(1)), cancellationToken);
    }

}
