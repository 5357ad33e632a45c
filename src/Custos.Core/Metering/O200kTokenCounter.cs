using System.Buffers;
using System.Buffers.Binary;
using System.Buffers.Text;
using System.IO.Compression;
using System.Numerics;
using System.Reflection;
using System.Text;

namespace Custos.Metering;

/// <summary>
/// Counts tiktoken <c>o200k_base</c> tokens with a compact vocabulary: every token's bytes in one array, and an
/// open-addressing table whose slots hold each token's rank, length and start in a second (about 5.5 MB in all), instead of the per-token
/// objects and dictionaries of a general tokenizer (about 40 MB managed, 60 MB resident, measured). Counting is what
/// the gateway needs (estimates before forwarding, metering when a provider reports no usage); it never decodes.
/// </summary>
/// <remarks>
/// The algorithm is tiktoken's: split the text at the special tokens (each is one token), split the rest with the
/// encoding's pre-tokenisation pattern (<see cref="O200kPieces"/>), and count each piece by byte-pair merging with the ranks of the vocabulary,
/// lowest rank first. The vocabulary is OpenAI's <c>o200k_base.tiktoken</c> as the
/// <c>Microsoft.ML.Tokenizers.Data.O200kBase</c> package embeds it. <c>O200kTokenCounterTests</c> checks the counts
/// against Microsoft.ML.Tokenizers over a varied corpus.
/// </remarks>
internal sealed class O200kTokenCounter
{
    private const string Resource = "o200k_base.tiktoken.deflate";
    private const string DataAssembly = "Microsoft.ML.Tokenizers.Data.O200kBase";

    private static readonly string[] SpecialTokens = ["<|endoftext|>", "<|endofprompt|>"];

    private readonly byte[] _bytes;
    private readonly long[] _table;
    private readonly int _mask;

    private O200kTokenCounter(byte[] bytes, long[] table) => (_bytes, _table, _mask) = (bytes, table, table.Length - 1);

    // A slot of the table: 0 when empty, else the token's rank + 1, its length and where its bytes start in _bytes, so a
    // probe reads the table and then only the bytes of a token of the right length (one dependent memory access fewer
    // than a table of ranks with the starts in an array of their own: Rank was the largest cost of counting a long prompt).
    private const int StartBits = 30;
    private const int LengthBits = 10;
    private const int RankShift = StartBits + LengthBits;
    private const long StartMask = (1L << StartBits) - 1;
    private const int LengthMask = (1 << LengthBits) - 1;

    /// <summary>The counter, loaded on first use.</summary>
    public static O200kTokenCounter Shared => LazyShared.Value;

    private static readonly Lazy<O200kTokenCounter> LazyShared = new(Load);

    /// <summary>Tokens in <paramref name="text"/>.</summary>
    public int Count(ReadOnlySpan<char> text)
    {
        var total = 0;
        while (!text.IsEmpty)
        {
            // The next special token, if any: the text before it is ordinary, the token itself is one.
            var at = -1;
            var length = 0;
            foreach (var special in SpecialTokens)
            {
                var index = text.IndexOf(special, StringComparison.Ordinal);
                if (index >= 0 && (at < 0 || index < at))
                {
                    (at, length) = (index, special.Length);
                }
            }

            if (at < 0)
            {
                return total + CountOrdinary(text);
            }

            total += CountOrdinary(text[..at]) + 1;
            text = text[(at + length)..];
        }

        return total;
    }

    private int CountOrdinary(ReadOnlySpan<char> text)
    {
        var total = 0;
        byte[]? rented = null;
        Span<byte> buffer = stackalloc byte[256];
        for (var start = 0; start < text.Length;)
        {
            var end = O200kPieces.End(text, start);
            if (end == start)
            {
                start++; // no piece starts here (never, for this pattern): the regex, too, would move on
                continue;
            }

            var piece = text[start..end];
            start = end;
            var needed = Encoding.UTF8.GetMaxByteCount(piece.Length);
            if (needed > buffer.Length)
            {
                if (rented is not null)
                {
                    ArrayPool<byte>.Shared.Return(rented);
                }

                rented = ArrayPool<byte>.Shared.Rent(needed);
                buffer = rented;
            }

            total += CountPiece(buffer[..ToUtf8(piece, buffer)]);
        }

        if (rented is not null)
        {
            ArrayPool<byte>.Shared.Return(rented);
        }

        return total;
    }

    /// <summary>Pieces up to this many bytes merge by scanning for the lowest rank (quadratic, fast when short); longer ones with a heap.</summary>
    internal const int ScanMergeMaxBytes = 127;

    /// <summary>tiktoken's byte-pair merge, counting the parts left: merge the adjacent pair of lowest rank until none is a token.</summary>
    private int CountPiece(ReadOnlySpan<byte> piece)
    {
        if (piece.Length <= 1 || Rank(piece) >= 0)
        {
            return piece.Length == 0 ? 0 : 1;
        }

        return piece.Length <= ScanMergeMaxBytes ? CountPieceByScan(piece) : CountPieceByHeap(piece);
    }

    /// <summary>The merge by scanning all pairs for the lowest rank each time: O(n²), the fastest for the short pieces of text.</summary>
    internal int CountPieceByScan(ReadOnlySpan<byte> piece)
    {
        // parts[i] = start of part i; ranks[i] = rank of the bytes of parts i and i+1 together (int.MaxValue: not a token).
        var count = piece.Length + 1;
        int[]? rentedParts = null, rentedRanks = null;
        Span<int> parts = count <= 128 ? stackalloc int[128] : (rentedParts = ArrayPool<int>.Shared.Rent(count));
        Span<int> ranks = count <= 128 ? stackalloc int[128] : (rentedRanks = ArrayPool<int>.Shared.Rent(count));
        for (var i = 0; i < count; i++)
        {
            parts[i] = i;
        }

        for (var i = 0; i < count - 2; i++)
        {
            ranks[i] = PairRank(piece, i, i + 2);
        }

        ranks[count - 2] = int.MaxValue;
        while (count > 2)
        {
            var min = int.MaxValue;
            var at = -1;
            for (var i = 0; i < count - 2; i++)
            {
                if (ranks[i] < min)
                {
                    (min, at) = (ranks[i], i);
                }
            }

            if (at < 0)
            {
                break;
            }

            // Parts at and at+1 become one: drop the start of at+1, then the pairs either side change.
            parts[(at + 2)..count].CopyTo(parts[(at + 1)..]);
            ranks[(at + 2)..count].CopyTo(ranks[(at + 1)..]);
            count--;
            ranks[at] = at + 2 < count ? PairRank(piece, parts[at], parts[at + 2]) : int.MaxValue;
            if (at > 0)
            {
                ranks[at - 1] = PairRank(piece, parts[at - 1], parts[at + 1]);
            }
        }

        if (rentedParts is not null)
        {
            ArrayPool<int>.Shared.Return(rentedParts);
            ArrayPool<int>.Shared.Return(rentedRanks!);
        }

        return count - 1;
    }

    /// <summary>
    /// The same merge with a heap of the candidate pairs, lowest rank and then leftmost first (the scan's order): O(n log n).
    /// A prompt can hold one piece of megabytes (a run of one letter, or of spaces, up to the body limit), and the scan
    /// took 0.2 s for 30 KB of <c>a</c> and grows with the square: a request could hold a core for minutes.
    /// </summary>
    internal int CountPieceByHeap(ReadOnlySpan<byte> piece)
    {
        // The parts are a linked list over the piece: a part is named by its first byte; next[p] is where the part after
        // it starts (piece.Length: none), previous[p] where the part before starts (-1: none), next[p] = -1 once p has
        // been merged into the part before it. A heap entry is a pair of adjacent parts, by its bytes' start and end: it
        // is stale when its left part is gone or has another neighbour now.
        var length = piece.Length;
        var next = ArrayPool<int>.Shared.Rent(length);
        var previous = ArrayPool<int>.Shared.Rent(length);
        try
        {
            var heap = new PriorityQueue<long, long>(length);
            for (var i = 0; i < length; i++)
            {
                next[i] = i + 1;
                previous[i] = i - 1;
            }

            for (var i = 0; i + 2 <= length; i++)
            {
                Push(heap, piece, i, i + 2);
            }

            var parts = length;
            while (heap.TryDequeue(out var pair, out _))
            {
                var left = (int)(pair >> 32);
                var end = (int)pair;
                var right = next[left];
                if (right < 0 || right >= length || next[right] != end)
                {
                    continue; // stale
                }

                next[left] = end; // the right part joins the left one
                next[right] = -1;
                if (end < length)
                {
                    previous[end] = left;
                }

                parts--;
                if (previous[left] >= 0)
                {
                    Push(heap, piece, previous[left], end);
                }

                if (end < length)
                {
                    Push(heap, piece, left, next[end]);
                }
            }

            return parts;
        }
        finally
        {
            ArrayPool<int>.Shared.Return(next);
            ArrayPool<int>.Shared.Return(previous);
        }
    }

    private void Push(PriorityQueue<long, long> heap, ReadOnlySpan<byte> piece, int start, int end)
    {
        var rank = Rank(piece[start..end]);
        if (rank >= 0)
        {
            heap.Enqueue(((long)start << 32) | (uint)end, ((long)rank << 32) | (uint)start);
        }
    }

    private int PairRank(ReadOnlySpan<byte> piece, int start, int end)
    {
        var rank = Rank(piece[start..end]);
        return rank < 0 ? int.MaxValue : rank;
    }

    /// <summary>The rank of the token with exactly these bytes, or -1.</summary>
    private int Rank(ReadOnlySpan<byte> token)
    {
        for (var slot = Hash(token) & _mask; ; slot = (slot + 1) & _mask)
        {
            var entry = _table[slot];
            if (entry == 0)
            {
                return -1;
            }

            if (((int)(entry >> StartBits) & LengthMask) == token.Length
                && _bytes.AsSpan((int)(entry & StartMask), token.Length).SequenceEqual(token))
            {
                return (int)(entry >> RankShift) - 1;
            }
        }
    }

    /// <summary>
    /// The UTF-8 bytes of <paramref name="piece"/> in <paramref name="buffer"/>: pieces are a few characters, mostly ASCII,
    /// and narrowing them in a loop costs less than the general encoder's call.
    /// </summary>
    private static int ToUtf8(ReadOnlySpan<char> piece, Span<byte> buffer)
    {
        for (var i = 0; i < piece.Length; i++)
        {
            var c = piece[i];
            if (c >= 0x80)
            {
                return i + Encoding.UTF8.GetBytes(piece[i..], buffer[i..]);
            }

            buffer[i] = (byte)c;
        }

        return piece.Length;
    }

    /// <summary>
    /// A stable hash of a token's bytes, eight at a time: one multiply for the usual token of up to eight bytes, where a
    /// byte-at-a-time hash makes a chain of one multiply per byte.
    /// </summary>
    private static int Hash(ReadOnlySpan<byte> bytes)
    {
        var hash = (ulong)bytes.Length * 0x9E3779B97F4A7C15;
        while (bytes.Length >= 8)
        {
            hash = (hash ^ BinaryPrimitives.ReadUInt64LittleEndian(bytes)) * 0xBF58476D1CE4E5B9;
            hash ^= hash >> 31;
            bytes = bytes[8..];
        }

        var tail = 0UL;
        for (var i = 0; i < bytes.Length; i++)
        {
            tail |= (ulong)bytes[i] << (8 * i);
        }

        hash = (hash ^ tail) * 0x94D049BB133111EB;
        return (int)(hash ^ (hash >> 32));
    }

    /// <summary>Reads the vocabulary (a token a line, base64, ranks dense from 0) into the two arrays.</summary>
    internal static O200kTokenCounter Load()
    {
        var assembly = Assembly.Load(DataAssembly);
        using var compressed = assembly.GetManifestResourceStream(Resource)
            ?? throw new InvalidOperationException($"{DataAssembly} has no resource {Resource}.");
        using var inflated = new DeflateStream(compressed, CompressionMode.Decompress);

        // Sized once from the compressed length (the text is about 2.2 times it), so loading leaves little garbage behind.
        using var text = new MemoryStream((int)Math.Min(int.MaxValue / 2, compressed.Length * 5 / 2));
        inflated.CopyTo(text);
        var data = text.GetBuffer().AsSpan(0, (int)text.Length);

        // Token r's bytes end where token r+1's start: ranks are dense from 0 and in line order (checked), so the
        // bytes go into one array as they are decoded, and their starts are kept until the table holds them.
        var starts = new List<int>(data.Length / 10) { 0 };
        var bytes = new ArrayBufferWriter<byte>(data.Length * 3 / 4); // base64 decodes to 3/4 of its length, and there are newlines
        while (!data.IsEmpty)
        {
            var end = data.IndexOf((byte)'\n');
            var line = end < 0 ? data : data[..end];
            data = end < 0 ? [] : data[(end + 1)..];
            line = line.TrimEnd((byte)'\r');
            if (line.IsEmpty || line.StartsWith("Capacity:"u8))
            {
                continue; // the package's header line
            }

            // "BASE64 RANK" as OpenAI publishes it, or "BASE64" alone, its rank the line's place, as the package keeps it.
            var space = line.IndexOf((byte)' ');
            var token = space < 0 ? line : line[..space];
            var expected = starts.Count - 1;
            var rank = expected;
            if (Base64.DecodeFromUtf8(token, bytes.GetSpan(Base64.GetMaxDecodedFromUtf8Length(token.Length)), out _, out var written) != OperationStatus.Done
                || (space >= 0 && !Utf8Parser.TryParse(line[(space + 1)..], out rank, out _)) || rank != expected)
            {
                throw new InvalidDataException($"{Resource}: line {starts.Count} is not 'BASE64 [RANK]' with rank {expected}.");
            }

            bytes.Advance(written);
            starts.Add(bytes.WrittenCount);
        }

        var count = starts.Count - 1;
        var all = bytes.WrittenSpan.ToArray();
        var table = new long[(int)BitOperations.RoundUpToPowerOf2((uint)count * 2)];
        var mask = table.Length - 1;
        for (var rank = 0; rank < count; rank++)
        {
            var (start, length) = (starts[rank], starts[rank + 1] - starts[rank]);
            if (start > StartMask || length > LengthMask)
            {
                throw new InvalidDataException($"{Resource}: token {rank} ({length} bytes at {start}) does not fit the table's slots.");
            }

            var slot = Hash(all.AsSpan(start, length)) & mask;
            while (table[slot] != 0)
            {
                slot = (slot + 1) & mask;
            }

            table[slot] = ((long)(rank + 1) << RankShift) | ((long)length << StartBits) | (uint)start;
        }

        return new O200kTokenCounter(all, table);
    }
}
