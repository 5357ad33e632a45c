using System.Buffers.Binary;
using System.Collections.Concurrent;
using Microsoft.Data.Sqlite;
using ZstdSharp;
using ZstdSharp.Unsafe;

namespace Custos.Storage;

/// <summary>
/// How the SQLite store keeps a ledger entry's canonical JSON: compressed with zstd against a dictionary made of an
/// earlier entry of the same store, so an entry of about 3 KB takes 100–200 bytes. The hash chain is over the canonical
/// bytes, not the stored ones: every reader gets the exact bytes back, and verification is unchanged.
/// </summary>
/// <remarks>
/// <para>
/// A stored record is either TEXT (the canonical JSON itself: every entry written before schema version 4) or a BLOB whose
/// first byte names its format. Format <see cref="ZstdWithDictionary"/>: then the id of a row of <c>record_dictionaries</c>
/// (4 bytes, little-endian), then a zstd frame compressed against that row's bytes: a dictionary in zstd's format (the
/// record behind entropy tables, <see cref="RecordEncoder.DictionaryFor"/>) or, as written before 2026-11-30, the record
/// alone as raw content; zstd loads either. The writer
/// takes its first record as the dictionary (stored in the same transaction), and a new one when a quarter of the records
/// since compress less than four to one (a new policy, new names). Dictionaries are append-only, like the ledger.
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
    public const byte ZstdWithDictionary = 1;

    /// <summary>The SQL function that reads a stored record (TEXT or BLOB) back as its canonical JSON: <c>custos_record(record)</c>.</summary>
    public const string ReadFunction = "custos_record";

    internal const int HeaderLength = 5;

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
        var dictionaries = new RecordDictionaries(connection.DataSource);
        connection.CreateFunction<object?, string?>(ReadFunction, value => value switch
        {
            null or DBNull => null,
            byte[] blob => dictionaries.Decode(blob),
            _ => Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture),
        }, isDeterministic: true);
    }

    /// <summary>The canonical JSON of column <paramref name="ordinal"/>: TEXT as it is, a BLOB decoded.</summary>
    internal static string Read(SqliteDataReader reader, int ordinal, RecordDictionaries dictionaries)
        => reader.GetFieldType(ordinal) == typeof(byte[]) ? dictionaries.Decode(reader.GetFieldValue<byte[]>(ordinal)) : reader.GetString(ordinal);
}

/// <summary>The dictionaries of one database file, read once each (they never change), and decompressors for them per thread.</summary>
internal sealed class RecordDictionaries
{
    private const int MaxDecompressorsPerThread = 64;

    [ThreadStatic]
    private static Dictionary<(RecordDictionaries, uint), Decompressor>? _decompressors;

    private readonly string _path;
    private readonly ConcurrentDictionary<uint, byte[]> _bytes = new();

    /// <summary>The dictionaries of the database file at <paramref name="path"/>: one instance per open store (never shared by path, so a
    /// file deleted and created again is never read with the old file's dictionaries).</summary>
    public RecordDictionaries(string path) => _path = path;

    /// <summary>The canonical JSON of a stored BLOB record.</summary>
    /// <exception cref="InvalidDataException">The format is unknown (a newer Custos wrote it), the dictionary is missing, or the data is damaged.</exception>
    public string Decode(ReadOnlySpan<byte> stored)
    {
        if (stored.Length <= LedgerRecordCodec.HeaderLength || stored[0] != LedgerRecordCodec.ZstdWithDictionary)
        {
            throw new InvalidDataException(stored.IsEmpty
                ? "A stored ledger record is an empty BLOB."
                : $"A stored ledger record has format {stored[0]} ({stored.Length} bytes); this version of Custos reads TEXT and format {LedgerRecordCodec.ZstdWithDictionary}. Upgrade Custos.");
        }

        var id = BinaryPrimitives.ReadUInt32LittleEndian(stored[1..]);
        var decompressors = _decompressors ??= [];
        if (!decompressors.TryGetValue((this, id), out var decompressor))
        {
            if (decompressors.Count >= MaxDecompressorsPerThread)
            {
                foreach (var old in decompressors.Values)
                {
                    old.Dispose();
                }

                decompressors.Clear();
            }

            decompressor = new Decompressor();
            decompressor.LoadDictionary(Bytes(id));
            decompressors[(this, id)] = decompressor;
        }

        try
        {
            return System.Text.Encoding.UTF8.GetString(decompressor.Unwrap(stored[LedgerRecordCodec.HeaderLength..]));
        }
        catch (ZstdException ex)
        {
            throw new InvalidDataException($"A stored ledger record ({stored.Length} bytes, dictionary {id}) cannot be decompressed: {ex.Message}", ex);
        }
    }

    private byte[] Bytes(uint id)
    {
        if (_bytes.TryGetValue(id, out var bytes))
        {
            return bytes;
        }

        // On a connection of its own: the caller may be in the middle of reading rows, or inside an SQL function.
        using var connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = _path, Mode = SqliteOpenMode.ReadOnly, Pooling = false }.ToString());
        connection.Open();
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT bytes FROM record_dictionaries WHERE id = $id";
        command.Parameters.AddWithValue("$id", (long)id);
        bytes = command.ExecuteScalar() as byte[]
            ?? throw new InvalidDataException($"A stored ledger record names dictionary {id}, which {_path} does not hold: the database was altered.");
        return _bytes.GetOrAdd(id, bytes);
    }
}

/// <summary>Compresses records for the store's writer: one per writer (not thread-safe), its buffer reused.</summary>
internal sealed class RecordEncoder : IDisposable
{
    /// <summary>Records compressed with a dictionary before a new one may be taken.</summary>
    internal const int MinRecordsPerDictionary = 256;

    // A fast negative level: against an entry of the same deployment it stores the same ~124 bytes as level 1, in 3.3 µs
    // instead of 5.0 (literals are left uncompressed; the dictionary supplies nearly everything anyway).
    private const int Level = -3;

    // Room for what zstd's dictionary format puts before the content: its id and entropy tables (130–140 bytes measured).
    private const int DictionaryTablesLength = 1024;

    private Compressor? _compressor;
    private byte[] _dictionaryBuffer = [];
    private uint _dictionary;
    private int _since;
    private int _poor;
    private byte[] _buffer = new byte[1024];

    /// <summary>
    /// True when the next record should become the dictionary: there is none yet, or since the last one at least
    /// <see cref="MinRecordsPerDictionary"/> records were written and a quarter of them compressed less than four to one.
    /// </summary>
    public bool WantsDictionary => _compressor is null || (_since >= MinRecordsPerDictionary && _poor * 4 >= _since);

    /// <summary>
    /// The dictionary to store for <paramref name="record"/>: in zstd's dictionary format, the record as its content behind
    /// entropy tables drawn from it, so that a record compressed against it reuses those tables instead of building its
    /// own (1.6 µs a record instead of 2.3; <c>docs/performance.md</c>). The record alone (raw content, as every
    /// dictionary before 2026-11-30) if zstd cannot make that format of it. Valid until the next call.
    /// </summary>
    public ReadOnlySpan<byte> DictionaryFor(ReadOnlySpan<byte> record)
    {
        var capacity = record.Length + DictionaryTablesLength;
        if (_dictionaryBuffer.Length < capacity)
        {
            _dictionaryBuffer = new byte[capacity];
        }

        var length = Finalize(record, _dictionaryBuffer);
        return length > 0 ? _dictionaryBuffer.AsSpan(0, length) : record;
    }

    private static unsafe int Finalize(ReadOnlySpan<byte> record, Span<byte> destination)
    {
        // One sample, the record itself: the tables only have to cover records like it, and every symbol gets a share.
        var sampleSize = (nuint)record.Length;
        var parameters = new ZDICT_params_t { compressionLevel = Level, notificationLevel = 0, dictID = 0 };
        fixed (byte* content = record)
        fixed (byte* output = destination)
        {
            var result = Methods.ZDICT_finalizeDictionary(output, (nuint)destination.Length, content, (nuint)record.Length, content, &sampleSize, 1, parameters);
            return Methods.ZDICT_isError(result) ? 0 : (int)result;
        }
    }

    /// <summary>Compresses from now on against <paramref name="bytes"/> (raw content or zstd's format), stored as dictionary <paramref name="id"/>.</summary>
    public void UseDictionary(long id, ReadOnlySpan<byte> bytes)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(id);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(id, uint.MaxValue);
        var compressor = new Compressor(Level);
        compressor.SetParameter(ZSTD_cParameter.ZSTD_c_dictIDFlag, 0); // the stored header names the dictionary
        compressor.LoadDictionary(bytes);
        _compressor?.Dispose();
        _compressor = compressor;
        _dictionary = (uint)id;
        _since = 0;
        _poor = 0;
    }

    /// <summary>The stored form of <paramref name="canonical"/>: valid until the next call.</summary>
    public ReadOnlySpan<byte> Encode(ReadOnlySpan<byte> canonical)
    {
        var compressor = _compressor ?? throw new InvalidOperationException("No dictionary yet.");
        var bound = Compressor.GetCompressBound(canonical.Length) + LedgerRecordCodec.HeaderLength;
        if (_buffer.Length < bound)
        {
            _buffer = new byte[Math.Max(bound, _buffer.Length * 2)];
        }

        _buffer[0] = LedgerRecordCodec.ZstdWithDictionary;
        BinaryPrimitives.WriteUInt32LittleEndian(_buffer.AsSpan(1), _dictionary);
        var length = LedgerRecordCodec.HeaderLength + compressor.Wrap(canonical, _buffer.AsSpan(LedgerRecordCodec.HeaderLength));
        _since++;
        if (length * 4 > canonical.Length)
        {
            _poor++;
        }

        return _buffer.AsSpan(0, length);
    }

    /// <inheritdoc/>
    public void Dispose() => _compressor?.Dispose();
}
