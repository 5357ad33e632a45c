using System.Runtime.CompilerServices;
using Custos.Ledger;

namespace Custos.Storage;

/// <summary>Ordered chain reads and signed checkpoints.</summary>
public sealed partial class SqliteStore
{
    /// <inheritdoc/>
    public async Task<IReadOnlyList<(string ChainId, long LastSeq, long Count)>> GetChainsAsync(CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenReaderAsync(cancellationToken);
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT chain_id, max(seq), count(*) FROM ledger GROUP BY chain_id ORDER BY chain_id";
        return await StoreRows.ReadAllAsync(command, reader => (reader.GetString(0), reader.GetInt64(1), reader.GetInt64(2)), cancellationToken);
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<ChainEntry> ReadChainAsync(string chainId, long fromSeq, long toSeq,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenReaderAsync(cancellationToken);
        using var command = connection.CreateCommand();
        command.CommandText = $"""
            SELECT seq, record, prev_hash, hash, request_id, ts, {StoreRows.SearchColumns} FROM ledger
            WHERE chain_id = $chain AND seq >= $from AND seq <= $to ORDER BY seq
            """;
        command.Parameters.AddWithValue("$chain", chainId);
        command.Parameters.AddWithValue("$from", fromSeq);
        command.Parameters.AddWithValue("$to", toSeq);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            var requestId = reader.IsDBNull(4) ? null : reader.GetString(4);
            var ts = reader.GetString(5);
            yield return new ChainEntry(reader.GetInt64(0), LedgerRecordCodec.Read(reader, 1, _dictionaries), reader.GetString(2), reader.GetString(3),
                requestId, ts)
            {
                Columns = StoreRows.Columns(reader, 6, ts, requestId),
            };
        }
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<(long Seq, byte[] Hash)> ReadChainHashesAsync(string chainId, long fromSeq, long toSeq,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenReaderAsync(cancellationToken);
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT seq, unhex(hash) FROM ledger WHERE chain_id = $chain AND seq >= $from AND seq <= $to ORDER BY seq";
        command.Parameters.AddWithValue("$chain", chainId);
        command.Parameters.AddWithValue("$from", fromSeq);
        command.Parameters.AddWithValue("$to", toSeq);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            var seq = reader.GetInt64(0);
            yield return (seq, reader.IsDBNull(1)
                ? throw new FormatException($"The stored hash of chain {chainId} seq {seq} is not hexadecimal.")
                : reader.GetFieldValue<byte[]>(1));
        }
    }

    /// <inheritdoc/>
    public async Task AppendCheckpointAsync(SignedCheckpoint checkpoint, CancellationToken cancellationToken = default)
    {
        var parsed = checkpoint.Checkpoint;
        await _writeLock.WaitAsync(cancellationToken);
        try
        {
            using var command = Writer.CreateCommand();
            command.CommandText = """
                INSERT INTO checkpoints (chain_id, to_seq, from_seq, checkpoint, signature) VALUES ($chain, $to, $from, $json, $signature)
                """;
            command.Parameters.AddWithValue("$chain", parsed.ChainId);
            command.Parameters.AddWithValue("$to", parsed.ToSeq);
            command.Parameters.AddWithValue("$from", parsed.FromSeq);
            command.Parameters.AddWithValue("$json", checkpoint.Json);
            command.Parameters.AddWithValue("$signature", checkpoint.Signature);
            await command.ExecuteNonQueryAsync(cancellationToken);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <inheritdoc/>
    public async Task<IReadOnlyList<SignedCheckpoint>> GetCheckpointsAsync(string? chainId = null, CancellationToken cancellationToken = default)
    {
        await using var connection = await OpenReaderAsync(cancellationToken);
        using var command = connection.CreateCommand();
        command.CommandText = chainId is null
            ? "SELECT checkpoint, signature FROM checkpoints ORDER BY chain_id, to_seq"
            : "SELECT checkpoint, signature FROM checkpoints WHERE chain_id = $chain ORDER BY to_seq";
        if (chainId is not null)
        {
            command.Parameters.AddWithValue("$chain", chainId);
        }

        return await StoreRows.ReadAllAsync(command, reader => new SignedCheckpoint(reader.GetString(0), reader.GetString(1)), cancellationToken);
    }
}
