using Custos.Ledger;
using Microsoft.Data.Sqlite;

namespace Custos.Storage;

/// <summary>
/// How the SQLite store keeps a ledger entry's canonical JSON: compressed against a dictionary of the same store
/// (<see cref="RecordCompression"/>), so an entry of about 3 KB takes 100–200 bytes. The hash chain is over the canonical
/// bytes, not the stored ones: every reader gets the exact bytes back, and verification is unchanged.
/// </summary>
/// <remarks>
/// <para>
/// A stored record is either TEXT (the canonical JSON itself: every entry written before schema version 4) or a BLOB in
/// <see cref="RecordCompression"/>'s format, naming a row of <c>record_dictionaries</c>. The writer takes its first request
/// entry as the dictionary (stored in the same transaction; entries of other kinds before it are stored as TEXT), and a new
/// one when a quarter of the records since compress less than four to one (a new policy, new names). Dictionaries are
/// append-only, like the ledger.
/// </para>
/// <para>
/// Why (<c>docs/performance.md</c>): a 3 KB row filled a 4 KB page of its own, so every entry cost a page in the write-ahead
/// log, again at the checkpoint, and 4.2 KB of database; the store was about a fifth of the gateway's CPU and most of its
/// latency tail. Against an entry of the same deployment zstd compresses 3 KB in about 3 µs.
/// </para>
/// </remarks>
public static class LedgerRecordCodec
{
    /// <summary>The format byte of a record compressed with zstd against a row of <c>record_dictionaries</c>.</summary>
    public const byte ZstdWithDictionary = RecordCompression.ZstdWithDictionary;

    /// <summary>The SQL function that reads a stored record (TEXT or BLOB) back as its canonical JSON: <c>custos_record(record)</c>.</summary>
    public const string ReadFunction = "custos_record";

    internal const string Schema = """
        CREATE TABLE IF NOT EXISTS record_dictionaries (
            id         INTEGER PRIMARY KEY,
            created_at TEXT NOT NULL,
            bytes      BLOB NOT NULL
        );
        CREATE TRIGGER IF NOT EXISTS record_dictionaries_no_update BEFORE UPDATE ON record_dictionaries
            BEGIN SELECT RAISE(ABORT, 'record dictionaries are append-only'); END;
        CREATE TRIGGER IF NOT EXISTS record_dictionaries_no_delete BEFORE DELETE ON record_dictionaries
            BEGIN SELECT RAISE(ABORT, 'record dictionaries are append-only'); END;
        """;

    /// <summary>
    /// Adds <c>custos_record(record)</c> to <paramref name="connection"/> (open, on a Custos store): the canonical JSON of a
    /// stored record, so SQL can read records, e.g. <c>json_extract(custos_record(record), '$.cost')</c>. For tools and
    /// tests, on a connection without pooling (<c>Pooling=False</c>): Microsoft.Data.Sqlite removes a pooled connection's
    /// functions when it returns to the pool, and that fails while any statement on it is active. The store itself never
    /// adds functions to its connections.
    /// </summary>
    public static void AddFunctions(SqliteConnection connection)
    {
        ArgumentNullException.ThrowIfNull(connection);
        var dictionaries = Dictionaries(connection.DataSource);
        connection.CreateFunction<object?, string?>(ReadFunction, value => value switch
        {
            null or DBNull => null,
            byte[] blob => dictionaries.Decode(blob),
            _ => Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture),
        }, isDeterministic: true);
    }

    /// <summary>
    /// The dictionaries of the database file at <paramref name="path"/>: one instance per open store (never shared by path, so
    /// a file deleted and created again is never read with the old file's dictionaries).
    /// </summary>
    internal static RecordDictionaries Dictionaries(string path) => new(path, id =>
    {
        // On a connection of its own: the caller may be in the middle of reading rows, or inside an SQL function.
        using var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Mode = SqliteOpenMode.ReadOnly, Pooling = false }.ToString());
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT bytes FROM record_dictionaries WHERE id = $id";
        command.Parameters.AddWithValue("$id", (long)id);
        return command.ExecuteScalar() as byte[];
    });

    /// <summary>The canonical JSON of column <paramref name="ordinal"/>: TEXT as it is, a BLOB decoded.</summary>
    internal static string Read(SqliteDataReader reader, int ordinal, RecordDictionaries dictionaries)
        => reader.GetFieldType(ordinal) == typeof(byte[]) ? dictionaries.Decode(reader.GetFieldValue<byte[]>(ordinal)) : reader.GetString(ordinal);
}
