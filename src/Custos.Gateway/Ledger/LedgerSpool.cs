using System.Buffers;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Custos.Errors;
using Custos.Ledger;

namespace Custos.Gateway.Ledger;

/// <summary>
/// The ledger's local spool: where chained records go, durably, while the store does not answer. Append-only segment
/// files <c>DIR/CHAIN/SEQ.jsonl</c> (<c>SEQ</c> the first sequence number in the file, 20 digits), one record a line:
/// <code>{"chain_id":"…","seq":12,"kind":"request","prev_hash":"…","hash":"…","record":CANONICAL_JSON}</code>
/// with the canonical JSON written byte for byte as it was hashed, so a record read back is the record that was chained.
/// Each batch is one write followed by <see cref="FileStream.Flush(bool)">a flush to disk</see>. Reading checks every
/// line's hash and the links between lines; a torn last line (the process died mid-write) is cut off when the spool opens.
/// Not thread-safe: the ledger writer's drain task is its only user.
/// </summary>
internal sealed class LedgerSpool : IDisposable
{
    /// <summary>A segment is closed, and the next batch starts a new one, once it is this long.</summary>
    public const long DefaultSegmentBytes = 4 * 1024 * 1024;

    private const string Extension = ".jsonl";
    private static readonly JsonEncodedText ChainIdName = JsonEncodedText.Encode("chain_id");
    private static readonly JsonEncodedText SeqName = JsonEncodedText.Encode("seq");
    private static readonly JsonEncodedText KindName = JsonEncodedText.Encode("kind");
    private static readonly JsonEncodedText PrevHashName = JsonEncodedText.Encode("prev_hash");
    private static readonly JsonEncodedText HashName = JsonEncodedText.Encode("hash");
    private static readonly JsonEncodedText RecordName = JsonEncodedText.Encode("record");

    private readonly List<string> _segments; // oldest first; the last one is the one appended to, when open
    private readonly long _segmentBytes;
    private readonly ArrayBufferWriter<byte> _buffer = new(64 * 1024);
    private readonly Utf8JsonWriter _writer;
    private FileStream? _active;
    private string? _activePath;
    private (string Path, long Length)? _truncatePending;
    private long _count;

    private LedgerSpool(string directory, string chainId, List<string> segments, long count, long tailSeq, string? tailHash, long segmentBytes)
    {
        Directory = directory;
        ChainId = chainId;
        _segments = segments;
        _count = count;
        TailSeq = tailSeq;
        TailHash = tailHash;
        _segmentBytes = segmentBytes;
        _writer = new Utf8JsonWriter(_buffer, new JsonWriterOptions { SkipValidation = true });
    }

    /// <summary>This chain's spool folder.</summary>
    public string Directory { get; }

    /// <summary>The chain the spool holds records of.</summary>
    public string ChainId { get; }

    /// <summary>Records in the spool that are not known to be in the store yet.</summary>
    public long Count => Interlocked.Read(ref _count);

    /// <summary>Sequence number of the last record spooled (this run or before); 0 when none ever was.</summary>
    public long TailSeq { get; private set; }

    /// <summary>Hash of the last record spooled, or null.</summary>
    public string? TailHash { get; private set; }

    /// <summary>Segment files, oldest first.</summary>
    public IReadOnlyList<string> Segments => _segments;

    /// <summary>The folder of <paramref name="chainId"/> under <paramref name="root"/>: the chain id with anything but letters, digits, '.', '-' and '_' replaced.</summary>
    public static string DirectoryOf(string root, string chainId)
    {
        var safe = new StringBuilder(chainId.Length);
        foreach (var c in chainId)
        {
            safe.Append(char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_' ? c : '_');
        }

        var name = safe.ToString();
        return Path.Combine(root, name is "" or "." or ".." ? "_" + name : name);
    }

    /// <summary>
    /// Opens the spool of <paramref name="chainId"/> under <paramref name="root"/> (nothing is created until the first
    /// <see cref="Append"/>). Reads every segment there: counts the records, checks each line and the links between
    /// them, and cuts off a torn last line. A spool that is damaged elsewhere throws <see cref="InvalidDataException"/>:
    /// its records cannot be put back into the chain safely, and an operator must look at it.
    /// </summary>
    public static LedgerSpool Open(string root, string chainId, long segmentBytes = DefaultSegmentBytes)
    {
        var directory = DirectoryOf(root, chainId);
        var segments = new List<string>();
        long count = 0, tailSeq = 0;
        string? tailHash = null;
        if (System.IO.Directory.Exists(directory))
        {
            var files = System.IO.Directory.GetFiles(directory, "*" + Extension);
            Array.Sort(files, StringComparer.Ordinal); // fixed-width names: ordinal order is sequence order
            for (var i = 0; i < files.Length; i++)
            {
                List<ChainedRecord> records;
                try
                {
                    records = ReadSegment(files[i], chainId, cutTornTail: i == files.Length - 1);
                }
                catch (InvalidDataException ex)
                {
                    throw new InvalidDataException(
                        $"{ex.Message} The gateway does not start on a damaged spool: its records are not in the store yet. Move {directory} aside, start again, and check it.", ex);
                }

                if (records.Count == 0)
                {
                    File.Delete(files[i]); // a segment whose only write failed, or was torn
                    continue;
                }

                if (tailHash is not null && (records[0].Seq != tailSeq + 1 || records[0].PrevHash != tailHash))
                {
                    throw new InvalidDataException(
                        $"Ledger spool segment {files[i]} does not continue the one before it (seq {records[0].Seq} after {tailSeq}). Move the spool aside and check it.");
                }

                segments.Add(files[i]);
                count += records.Count;
                tailSeq = records[^1].Seq;
                tailHash = records[^1].Hash;
            }
        }

        return new LedgerSpool(directory, chainId, segments, count, tailSeq, tailHash, segmentBytes);
    }

    /// <summary>
    /// Appends <paramref name="batch"/> (consecutive records of this chain) and flushes it to disk; throws when that
    /// fails, leaving the spool as it was before the call.
    /// </summary>
    public void Append(IReadOnlyList<ChainedRecord> batch)
    {
        if (batch.Count == 0)
        {
            return;
        }

        if (_truncatePending is { } pending)
        {
            // An earlier write failed half-way and could not be undone then: undo it now, or write nothing.
            using (var torn = new FileStream(pending.Path, FileMode.Open, FileAccess.Write, FileShare.Read, 1))
            {
                torn.SetLength(pending.Length);
                torn.Flush(flushToDisk: true);
            }

            _truncatePending = null;
        }

        _buffer.ResetWrittenCount();
        foreach (var item in batch)
        {
            _writer.Reset();
            _writer.WriteStartObject();
            _writer.WriteString(ChainIdName, item.ChainId);
            _writer.WriteNumber(SeqName, item.Seq);
            _writer.WriteString(KindName, item.Record.Kind);
            _writer.WriteString(PrevHashName, item.PrevHash);
            _writer.WriteString(HashName, item.Hash);
            _writer.WritePropertyName(RecordName);
            _writer.WriteRawValue(item.Canonical.Span, skipInputValidation: true);
            _writer.WriteEndObject();
            _writer.Flush();
            _buffer.GetSpan(1)[0] = (byte)'\n';
            _buffer.Advance(1);
        }

        var file = _active;
        if (file is null || file.Length >= _segmentBytes)
        {
            file = OpenSegment(batch[0].Seq);
        }

        var before = file.Length;
        try
        {
            file.Write(_buffer.WrittenSpan);
            file.Flush(flushToDisk: true);
        }
        catch
        {
            CloseActive();
            try
            {
                using var undo = new FileStream(_activePath!, FileMode.Open, FileAccess.Write, FileShare.Read, 1);
                undo.SetLength(before);
                undo.Flush(flushToDisk: true);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                _truncatePending = (_activePath!, before);
            }

            throw;
        }

        Interlocked.Add(ref _count, batch.Count);
        TailSeq = batch[^1].Seq;
        TailHash = batch[^1].Hash;
    }

    private FileStream OpenSegment(long firstSeq)
    {
        CloseActive();
        System.IO.Directory.CreateDirectory(Directory);
        var path = Path.Combine(Directory, firstSeq.ToString("D20", CultureInfo.InvariantCulture) + Extension);
        if (File.Exists(path) && new FileInfo(path).Length == 0)
        {
            File.Delete(path); // left by a first write that failed
            _segments.Remove(path);
        }

        var file = new FileStream(path, FileMode.CreateNew, FileAccess.Write, FileShare.Read, bufferSize: 1);
        _active = file;
        _activePath = path;
        _segments.Add(path);
        return file;
    }

    private void CloseActive()
    {
        _active?.Dispose();
        _active = null;
    }

    /// <summary>
    /// Reads the oldest segment, or returns null when the spool is empty. When it is the segment being appended to, it
    /// is closed first: later batches start a new one.
    /// </summary>
    public (string Path, List<ChainedRecord> Records)? ReadOldest()
    {
        while (_segments.Count > 0)
        {
            var path = _segments[0];
            if (_active is not null && _segments.Count == 1)
            {
                CloseActive();
            }

            var records = ReadSegment(path, ChainId, cutTornTail: false);
            if (records.Count > 0)
            {
                return (path, records);
            }

            DeleteOldest(path);
        }

        return null;
    }

    /// <summary><paramref name="count"/> records of the oldest segment are now in the store.</summary>
    public void Drained(int count) => Interlocked.Add(ref _count, -count);

    /// <summary>Deletes the oldest segment, once every record of it is in the store (and counted with <see cref="Drained"/>).</summary>
    public void DeleteOldest(string path)
    {
        if (_segments.Count == 0 || _segments[0] != path)
        {
            throw new InvalidOperationException($"{path} is not the oldest spool segment.");
        }

        if (_activePath == path)
        {
            CloseActive();
            _activePath = null;
        }

        if (_truncatePending?.Path == path)
        {
            _truncatePending = null;
        }

        File.Delete(path);
        _segments.RemoveAt(0);
    }

    /// <summary>
    /// Reads one segment file, checking every line: its chain, its hash over its canonical bytes, its link to the line
    /// before. With <paramref name="cutTornTail"/>, bytes after the last complete line are cut off the file (a write the
    /// process died in); otherwise they are an error.
    /// </summary>
    internal static List<ChainedRecord> ReadSegment(string path, string chainId, bool cutTornTail)
    {
        var bytes = File.ReadAllBytes(path);
        var records = new List<ChainedRecord>();
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var position = 0;
        var line = 0;
        while (position < bytes.Length)
        {
            line++;
            var end = Array.IndexOf(bytes, (byte)'\n', position);
            if (end < 0)
            {
                if (!cutTornTail)
                {
                    throw new InvalidDataException($"Ledger spool segment {path} ends in an incomplete line {line}.");
                }

                // The last write was torn by a crash: its records were never reported stored. Cut it off.
                using var file = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.Read, 1);
                file.SetLength(position);
                file.Flush(flushToDisk: true);
                break;
            }

            ChainedRecord record;
            try
            {
                record = ParseLine(bytes.AsSpan(position, end - position));
            }
            catch (Exception ex) when (ex is JsonException or FormatException or InvalidDataException or ArgumentException or InvalidOperationException or OverflowException)
            {
                throw new InvalidDataException($"Ledger spool segment {path} has an unreadable line {line}: {ex.Message}", ex);
            }

            if (record.ChainId != chainId)
            {
                throw new InvalidDataException($"Ledger spool segment {path} line {line} belongs to chain {record.ChainId}, not {chainId}.");
            }

            if (HashChain.Link(sha, record.PrevHash, record.Canonical.Span) != record.Hash)
            {
                throw new InvalidDataException($"Ledger spool segment {path} line {line} (seq {record.Seq}) does not match its hash.");
            }

            if (records.Count > 0 && (record.Seq != records[^1].Seq + 1 || record.PrevHash != records[^1].Hash))
            {
                throw new InvalidDataException($"Ledger spool segment {path} line {line} (seq {record.Seq}) does not follow the line before it.");
            }

            records.Add(record);
            position = end + 1;
        }

        return records;
    }

    private static ChainedRecord ParseLine(ReadOnlySpan<byte> line)
    {
        var reader = new Utf8JsonReader(line);
        string? chainId = null, kind = null, prevHash = null, hash = null;
        long seq = 0;
        byte[]? canonical = null;
        if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
        {
            throw new InvalidDataException("not a JSON object");
        }

        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            if (reader.ValueTextEquals("record"u8))
            {
                reader.Read();
                var start = (int)reader.TokenStartIndex;
                reader.Skip();
                canonical = line[start..(int)reader.BytesConsumed].ToArray();
                continue;
            }

            var name = reader.GetString();
            reader.Read();
            switch (name)
            {
                case "chain_id":
                    chainId = reader.GetString();
                    break;
                case "seq":
                    seq = reader.GetInt64();
                    break;
                case "kind":
                    kind = reader.GetString();
                    break;
                case "prev_hash":
                    prevHash = reader.GetString();
                    break;
                case "hash":
                    hash = reader.GetString();
                    break;
                default:
                    reader.Skip();
                    break;
            }
        }

        if (chainId is null || kind is null || prevHash is null || hash is null || canonical is null || seq <= 0)
        {
            throw new InvalidDataException("a field is missing");
        }

        if (!HashChain.IsHash(prevHash) || !HashChain.IsHash(hash))
        {
            throw new InvalidDataException("prev_hash or hash is not a SHA-256 (64 lower-case hex digits)");
        }

        return new ChainedRecord(RestoredRecords.Restore(kind, canonical), chainId, seq, canonical, prevHash, hash);
    }

    /// <summary>Closes the segment being appended to.</summary>
    public void Dispose()
    {
        CloseActive();
        _writer.Dispose();
    }
}

/// <summary>
/// Turns a spooled record's canonical JSON back into a <see cref="LedgerRecord"/> for the store. The canonical bytes stay
/// what is stored and hashed (<see cref="ChainedRecord.Canonical"/>); the object only carries what stores index: kind,
/// timestamp, tenant, and for requests the request id, service, consumer, credential, decision, reasons, model and cost.
/// </summary>
internal static class RestoredRecords
{
    public static LedgerRecord Restore(string kind, byte[] canonical)
    {
        var fields = new Dictionary<string, string?>(StringComparer.Ordinal);
        Dictionary<string, long>? shedReasons = null;
        List<string>? requestReasons = null;
        var reader = new Utf8JsonReader(canonical);
        reader.Read();
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            var name = reader.GetString()!;
            reader.Read();
            switch (reader.TokenType)
            {
                case JsonTokenType.String:
                    fields[name] = reader.GetString();
                    break;
                case JsonTokenType.Number:
                    fields[name] = Encoding.UTF8.GetString(reader.ValueSpan);
                    break;
                case JsonTokenType.Null:
                    fields[name] = null;
                    break;
                case JsonTokenType.StartObject when name == "reasons" && kind == "shed":
                    shedReasons = new Dictionary<string, long>(StringComparer.Ordinal);
                    while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
                    {
                        var code = reader.GetString()!;
                        reader.Read();
                        shedReasons[code] = reader.GetInt64();
                    }

                    break;
                case JsonTokenType.StartArray when name == "reasons" && kind == "request":
                    // Kept: the stores add them up into the request totals, and keep a credential's last use only when it was accepted.
                    requestReasons = [];
                    while (reader.Read() && reader.TokenType == JsonTokenType.String)
                    {
                        requestReasons.Add(reader.GetString()!);
                    }

                    if (reader.TokenType != JsonTokenType.EndArray)
                    {
                        reader.Skip();
                    }

                    break;
                default:
                    reader.Skip();
                    break;
            }
        }

        var timestamp = fields.GetValueOrDefault("timestamp") is { } ts ? LedgerTime.Parse(ts) : default;
        var tenant = fields.GetValueOrDefault("tenant");
        var policyVersion = fields.GetValueOrDefault("policy_version") is { } pv ? long.Parse(pv, CultureInfo.InvariantCulture) : 0;
        return kind switch
        {
            "request" => WithReasons(new RequestRecord
            {
                RequestId = fields.GetValueOrDefault("request_id") ?? throw new InvalidDataException("a request record without request_id"),
                NodeId = fields.GetValueOrDefault("node_id") ?? "",
                Method = fields.GetValueOrDefault("method") ?? "",
                Endpoint = fields.GetValueOrDefault("endpoint") ?? "",
                Timestamp = timestamp,
                Tenant = tenant,
                Service = fields.GetValueOrDefault("service"),
                Consumer = fields.GetValueOrDefault("consumer"),
                Category = fields.GetValueOrDefault("category"),
                CredentialId = fields.GetValueOrDefault("credential_id"),
                Model = fields.GetValueOrDefault("model"),
                Cost = fields.GetValueOrDefault("cost") is { } cost ? decimal.Parse(cost, NumberStyles.Number, CultureInfo.InvariantCulture) : null, // stores index spend
                Currency = fields.GetValueOrDefault("currency"),
                Decision = fields.GetValueOrDefault("decision") switch
                {
                    "deny" => Decision.Deny,
                    "throttle" => Decision.Throttle,
                    _ => Decision.Allow,
                },
                PolicyVersion = policyVersion,
            }, requestReasons),
            "admin" => new AdminRecord
            {
                Timestamp = timestamp,
                Tenant = tenant,
                Actor = fields.GetValueOrDefault("actor") ?? "",
                Action = fields.GetValueOrDefault("action") ?? "",
                Target = fields.GetValueOrDefault("target") ?? "",
                Before = fields.GetValueOrDefault("before"),
                After = fields.GetValueOrDefault("after"),
                Reason = fields.GetValueOrDefault("reason"),
                PolicyVersion = policyVersion,
            },
            "shed" => new ShedRecord
            {
                Timestamp = timestamp,
                Tenant = tenant,
                NodeId = fields.GetValueOrDefault("node_id") ?? "",
                First = fields.GetValueOrDefault("first") is { } first ? LedgerTime.Parse(first) : timestamp,
                Reasons = shedReasons ?? new Dictionary<string, long>(StringComparer.Ordinal),
                PolicyVersion = policyVersion,
            },
            _ => new OpaqueRecord(kind, canonical) { Timestamp = timestamp, Tenant = tenant },
        };
    }

    private static RequestRecord WithReasons(RequestRecord record, List<string>? reasons)
    {
        if (reasons is not null)
        {
            record.Reasons.AddRange(reasons);
        }

        return record;
    }

    /// <summary>A record of a kind this version does not know: kept as its canonical bytes.</summary>
    private sealed class OpaqueRecord(string kind, byte[] canonical) : LedgerRecord
    {
        public override string Kind => kind;

        public override void WriteCanonical(Utf8JsonWriter writer) => writer.WriteRawValue(canonical, skipInputValidation: true);
    }
}
