using System.Globalization;
using System.Text.Json;
using Custos.Alerts;
using Custos.Ledger;
using Custos.Policy;

namespace Custos.Storage;

/// <summary>Alerts: one row each, the whole alert as JSON beside the columns the lists filter on.</summary>
public sealed partial class SqliteStore
{
    private const string AlertSchema = """

        CREATE TABLE IF NOT EXISTS alerts (
            number      INTEGER PRIMARY KEY AUTOINCREMENT,
            status      TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            raised_at   TEXT NOT NULL,
            alert       TEXT NOT NULL
        );
        CREATE INDEX IF NOT EXISTS alerts_status ON alerts (status, number);
        """;

    /// <inheritdoc/>
    public async Task<Alert> CreateAlertAsync(Alert alert, CancellationToken cancellationToken = default)
    {
        await _writeLock.WaitAsync(cancellationToken);
        try
        {
            // The row is made, then given its JSON, which names its number: in one transaction, so that no reader ever
            // sees the row with '{}' in it (the console's report read one so, and failed with a 500).
            using var transaction = Writer.BeginTransaction();
            using var command = Writer.CreateCommand();
            command.Transaction = transaction;
            command.CommandText = """
                INSERT INTO alerts (status, fingerprint, raised_at, alert) VALUES ($status, $fingerprint, $at, '{}');
                SELECT last_insert_rowid();
                """;
            command.Parameters.AddWithValue("$status", PolicyNames.Of(alert.Status));
            command.Parameters.AddWithValue("$fingerprint", alert.Signal.Fingerprint);
            command.Parameters.AddWithValue("$at", LedgerTime.Format(alert.RaisedAt));
            var number = Convert.ToInt64(await command.ExecuteScalarAsync(cancellationToken), CultureInfo.InvariantCulture);
            var stored = alert with { Id = Alert.IdOf(number) };
            using var update = Writer.CreateCommand();
            update.Transaction = transaction;
            update.CommandText = "UPDATE alerts SET alert = $alert WHERE number = $number";
            update.Parameters.AddWithValue("$alert", JsonSerializer.Serialize(stored, StoreRows.AlertJson));
            update.Parameters.AddWithValue("$number", number);
            await update.ExecuteNonQueryAsync(cancellationToken);
            await transaction.CommitAsync(cancellationToken);
            return stored;
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <inheritdoc/>
    public async Task UpdateAlertAsync(Alert alert, CancellationToken cancellationToken = default)
    {
        var number = Alert.NumberOf(alert.Id) ?? throw new ArgumentException($"'{alert.Id}' is not an alert id.", nameof(alert));
        await _writeLock.WaitAsync(cancellationToken);
        try
        {
            using var command = Writer.CreateCommand();
            command.CommandText = "UPDATE alerts SET status = $status, alert = $alert WHERE number = $number";
            command.Parameters.AddWithValue("$status", PolicyNames.Of(alert.Status));
            command.Parameters.AddWithValue("$alert", JsonSerializer.Serialize(alert, StoreRows.AlertJson));
            command.Parameters.AddWithValue("$number", number);
            await command.ExecuteNonQueryAsync(cancellationToken);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <inheritdoc/>
    public async Task<Alert?> GetAlertAsync(string id, CancellationToken cancellationToken = default)
    {
        if (Alert.NumberOf(id) is not { } number)
        {
            return null;
        }

        await using var connection = await OpenReaderAsync(cancellationToken);
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT alert FROM alerts WHERE number = $number";
        command.Parameters.AddWithValue("$number", number);
        return await command.ExecuteScalarAsync(cancellationToken) is string json ? StoreRows.TryAlert(json, out _) : null;
    }

    /// <inheritdoc/>
    public async Task<Alert?> FindActiveAlertAsync(string fingerprint, CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenReaderAsync(cancellationToken);
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT alert FROM alerts WHERE status IN ('open', 'acknowledged') AND fingerprint = $fingerprint ORDER BY number DESC LIMIT 1";
        command.Parameters.AddWithValue("$fingerprint", fingerprint);
        return await command.ExecuteScalarAsync(cancellationToken) is string json ? StoreRows.TryAlert(json, out _) : null;
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<Alert>> ListAlertsAsync(AlertStatus? status, int limit, CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenReaderAsync(cancellationToken);
        using var command = connection.CreateCommand();
        command.CommandText = status is null
            ? "SELECT alert FROM alerts ORDER BY number DESC LIMIT $limit"
            : "SELECT alert FROM alerts WHERE status = $status ORDER BY number DESC LIMIT $limit";
        command.Parameters.AddWithValue("$limit", Math.Clamp(limit, 1, 100_000));
        if (status is { } s)
        {
            command.Parameters.AddWithValue("$status", PolicyNames.Of(s));
        }

        return await StoreRows.ReadAlertsAsync(command, cancellationToken);
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<StoredAlert> ReadAlertsAsync(AlertStatus? status,
        [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenReaderAsync(cancellationToken);
        using var command = connection.CreateCommand();
        command.CommandText = status is null
            ? "SELECT number, alert FROM alerts ORDER BY number"
            : "SELECT number, alert FROM alerts WHERE status = $status ORDER BY number";
        if (status is { } s)
        {
            command.Parameters.AddWithValue("$status", PolicyNames.Of(s));
        }

        await foreach (var row in StoreRows.ReadAlertRowsAsync(command, cancellationToken))
        {
            yield return row;
        }
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<(string Consumer, string Model)>> GetConsumerModelsAsync(CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenReaderAsync(cancellationToken);
        using var command = connection.CreateCommand();
        command.CommandText = """
            SELECT DISTINCT consumer, model FROM ledger
            WHERE kind = 'request' AND decision = 'allow' AND consumer IS NOT NULL AND model IS NOT NULL
            """;
        return await StoreRows.ReadAllAsync(command, reader => (reader.GetString(0), reader.GetString(1)), cancellationToken);
    }

}
