using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;
using ZstdSharp;
using ZstdSharp.Unsafe;

namespace Custos.Ledger;

/// <summary>
/// How a store may keep a ledger entry's canonical JSON: compressed with zstd against a dictionary made of an earlier entry
/// of the same store, so that an entry of about 3 KB takes 100–300 bytes. The hash chain is over the canonical bytes, not
/// the stored ones: every reader gets the exact bytes back, and verification is unchanged. Both stores use it, the SQLite
/// store since its schema version 4 and the PostgreSQL store since its schema version 3 (<c>docs/ledger.md</c>,
/// <c>docs/storage-postgres.md</c>).
/// </summary>
/// <remarks>
/// A stored record is either the canonical JSON itself (which starts with <c>{</c>) or bytes whose first byte names their
/// format. Format <see cref="ZstdWithDictionary"/>: then the id of the store's dictionary (4 bytes, little-endian), then a
/// zstd frame compressed against that dictionary's bytes: a dictionary in zstd's format (the record behind entropy tables,
/// <see cref="RecordEncoder.DictionaryFor"/>) or, as the SQLite store wrote before 2026-11-30, the record alone as raw
/// content; zstd loads either. Dictionaries are append-only, like the ledger.
/// </remarks>
public static class RecordCompression
{
    /// <summary>The format byte of a record compressed with zstd against one of the store's dictionaries.</summary>
    public const byte ZstdWithDictionary = 1;

    /// <summary>The format byte and the dictionary's id before the zstd frame.</summary>
    public const int HeaderLength = 5;

    /// <summary>Whether <paramref name="stored"/> is in a compressed format rather than the canonical JSON itself (which always starts with <c>{</c>).</summary>
    public static bool IsCompressed(ReadOnlySpan<byte> stored) => stored.IsEmpty || stored[0] != (byte)'{';

    /// <summary>The dictionary a record in format <see cref="ZstdWithDictionary"/> names; 0 when it names none.</summary>
    public static uint DictionaryOf(ReadOnlySpan<byte> stored)
        => stored.Length > HeaderLength && stored[0] == ZstdWithDictionary ? BinaryPrimitives.ReadUInt32LittleEndian(stored[1..]) : 0;
}

/// <summary>
/// The dictionaries of one store, read once each (they never change), and decompressors for them per thread. One instance
/// per open store, never shared between stores: a database created again is never read with the old one's dictionaries.
/// </summary>
public sealed class RecordDictionaries
{
    private const int MaxDecompressorsPerThread = 64;

    /// <summary>Records up to this size are decompressed into pooled memory; larger ones (a ledger entry is a few KB) into their own array.</summary>
    private const ulong MaxPooledRecord = 1 << 20;

    [ThreadStatic]
    private static Dictionary<(RecordDictionaries, uint), Decompressor>? _decompressors;

    private readonly Func<uint, byte[]?>? _load;
    private readonly string _source;
    private readonly ConcurrentDictionary<uint, byte[]> _bytes = new();

    /// <summary>
    /// The dictionaries of the store <paramref name="source"/> names (in messages); <paramref name="load"/> reads one by id
    /// (null when the store does not hold it). Without <paramref name="load"/>, only what <see cref="Add"/> gave is known.
    /// </summary>
    public RecordDictionaries(string source, Func<uint, byte[]?>? load = null)
    {
        _source = source;
        _load = load;
    }

    /// <summary>Whether dictionary <paramref name="id"/> is loaded: a store that reads asynchronously loads it first and calls <see cref="Add"/>.</summary>
    public bool Contains(uint id) => _bytes.ContainsKey(id);

    /// <summary>Makes dictionary <paramref name="id"/> known; <paramref name="bytes"/> null when the store does not hold it (then decoding fails naming it).</summary>
    public void Add(uint id, byte[]? bytes)
    {
        if (bytes is not null)
        {
            _bytes.TryAdd(id, bytes);
        }
    }

    /// <summary>The canonical JSON of a stored record in a compressed format (<see cref="RecordCompression.IsCompressed"/>).</summary>
    /// <exception cref="InvalidDataException">The format is unknown (a newer Custos wrote it), the dictionary is missing, or the data is damaged.</exception>
    public string Decode(ReadOnlySpan<byte> stored)
    {
        if (stored.Length <= RecordCompression.HeaderLength || stored[0] != RecordCompression.ZstdWithDictionary)
        {
            throw new InvalidDataException(stored.IsEmpty ? "A stored ledger record is empty."
                : stored[0] == RecordCompression.ZstdWithDictionary ? $"A stored ledger record of format {stored[0]} ends after {stored.Length} bytes, before its data: the database was altered."
                : $"A stored ledger record has format {stored[0]} ({stored.Length} bytes); this version of Custos reads JSON and format {RecordCompression.ZstdWithDictionary}. Upgrade Custos.");
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
            // Decompressed into a pooled buffer when the frame says its size (the writer's always do): the text is what is kept.
            var frame = stored[RecordCompression.HeaderLength..];
            var size = Decompressor.GetDecompressedSize(frame);
            if (size is 0 or > MaxPooledRecord)
            {
                return System.Text.Encoding.UTF8.GetString(decompressor.Unwrap(frame));
            }

            var buffer = ArrayPool<byte>.Shared.Rent((int)size);
            try
            {
                return System.Text.Encoding.UTF8.GetString(buffer, 0, decompressor.Unwrap(frame, buffer));
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
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

        bytes = _load?.Invoke(id)
            ?? throw new InvalidDataException($"A stored ledger record names dictionary {id}, which {_source} does not hold: the database was altered.");
        return _bytes.GetOrAdd(id, bytes);
    }
}

/// <summary>
/// Compresses records for a store's writer: one per writer (not thread-safe), its buffer reused. The writer takes its first
/// request entry as the dictionary (stored in the same transaction as the records compressed against it; entries of other
/// kinds before it are stored as they are), and a new one when a quarter of the records since compress less than four to
/// one (a new policy, new names).
/// </summary>
public sealed class RecordEncoder : IDisposable
{
    /// <summary>Records compressed with a dictionary before a new one may be taken.</summary>
    public const int MinRecordsPerDictionary = 256;

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

    /// <summary>Whether a dictionary is in use: until then the writer stores records as they are.</summary>
    public bool HasDictionary => _compressor is not null;

    /// <summary>
    /// Whether <paramref name="record"/> may become the dictionary: a request entry, the kind nearly every entry is. A
    /// dictionary made of another kind (the policy version a start records first) would leave the requests after it
    /// compressed to about 1.3 KB instead of 200 bytes until it is replaced.
    /// </summary>
    public static bool MayBeDictionary(LedgerRecord record) => record is RequestRecord;

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
    public ReadOnlyMemory<byte> Encode(ReadOnlySpan<byte> canonical)
    {
        var compressor = _compressor ?? throw new InvalidOperationException("No dictionary yet.");
        var bound = Compressor.GetCompressBound(canonical.Length) + RecordCompression.HeaderLength;
        if (_buffer.Length < bound)
        {
            _buffer = new byte[Math.Max(bound, _buffer.Length * 2)];
        }

        _buffer[0] = RecordCompression.ZstdWithDictionary;
        BinaryPrimitives.WriteUInt32LittleEndian(_buffer.AsSpan(1), _dictionary);
        var length = RecordCompression.HeaderLength + compressor.Wrap(canonical, _buffer.AsSpan(RecordCompression.HeaderLength));
        _since++;
        if (length * 4 > canonical.Length)
        {
            _poor++;
        }

        return _buffer.AsMemory(0, length);
    }

    /// <inheritdoc/>
    public void Dispose() => _compressor?.Dispose();
}
