using System.Runtime.CompilerServices;
using Custos.Ledger;
using Npgsql;

namespace Custos.Postgres;

/// <summary>Ordered chain reads and signed checkpoints.</summary>
public sealed partial class PostgresStore
{
    /// <inheritdoc/>
    public async Task<IReadOnlyList<(string ChainId, long LastSeq, long Count)>> GetChainsAsync(CancellationToken cancellationToken = default)
    {
        await using var command = _dataSource.CreateCommand("SELECT chain_id, max(seq), count(*) FROM ledger GROUP BY chain_id ORDER BY chain_id");
        return await StoreRows.ReadAllAsync(command, reader => (reader.GetString(0), reader.GetInt64(1), reader.GetInt64(2)), cancellationToken);
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<ChainEntry> ReadChainAsync(string chainId, long fromSeq, long toSeq,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await using var command = _dataSource.CreateCommand($"""
            SELECT seq, record, prev_hash, hash, request_id, ts, {StoreRows.SearchColumns}, cost FROM ledger
            WHERE chain_id = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq
            """);
        command.Parameters.Add(new NpgsqlParameter { Value = chainId });
        command.Parameters.Add(new NpgsqlParameter { Value = fromSeq });
        command.Parameters.Add(new NpgsqlParameter { Value = toSeq });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            var requestId = reader.IsDBNull(4) ? null : reader.GetString(4);
            var ts = LedgerTime.Format(Time(reader, 5));
            yield return new ChainEntry(reader.GetInt64(0), await JsonAsync(reader, 1, cancellationToken), reader.GetString(2), reader.GetString(3), requestId, ts)
            {
                Columns = StoreRows.Columns(reader, 6, ts, requestId) with { Cost = reader.IsDBNull(12) ? null : reader.GetDecimal(12), HasCost = true },
            };
        }
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<(long Seq, byte[] Hash)> ReadChainHashesAsync(string chainId, long fromSeq, long toSeq,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await using var command = _dataSource.CreateCommand("""
            SELECT seq, hash FROM ledger WHERE chain_id = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq
            """);
        command.Parameters.Add(new NpgsqlParameter { Value = chainId });
        command.Parameters.Add(new NpgsqlParameter { Value = fromSeq });
        command.Parameters.Add(new NpgsqlParameter { Value = toSeq });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            // Decoded here, not with decode(hash, 'hex'): an altered hash then fails as FormatException, as on SQLite.
            yield return (reader.GetInt64(0), Convert.FromHexString(reader.GetString(1)));
        }
    }

    /// <inheritdoc/>
    public async Task AppendCheckpointAsync(SignedCheckpoint checkpoint, CancellationToken cancellationToken = default)
    {
        var parsed = checkpoint.Checkpoint;
        await ExecuteAsync("INSERT INTO checkpoints (chain_id, to_seq, from_seq, checkpoint, signature) VALUES ($1, $2, $3, $4, $5)", p =>
        {
            p.Add(new NpgsqlParameter { Value = parsed.ChainId });
            p.Add(new NpgsqlParameter { Value = parsed.ToSeq });
            p.Add(new NpgsqlParameter { Value = parsed.FromSeq });
            p.Add(new NpgsqlParameter { Value = checkpoint.Json });
            p.Add(new NpgsqlParameter { Value = checkpoint.Signature });
        }, cancellationToken);
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<SignedCheckpoint>> GetCheckpointsAsync(string? chainId = null, CancellationToken cancellationToken = default)
    {
        await using var command = _dataSource.CreateCommand(chainId is null
            ? "SELECT checkpoint, signature FROM checkpoints ORDER BY chain_id, to_seq"
            : "SELECT checkpoint, signature FROM checkpoints WHERE chain_id = $1 ORDER BY to_seq");
        if (chainId is not null)
        {
            command.Parameters.Add(new NpgsqlParameter { Value = chainId });
        }

        return await StoreRows.ReadAllAsync(command, reader => new SignedCheckpoint(reader.GetString(0), reader.GetString(1)), cancellationToken);
    }
}
