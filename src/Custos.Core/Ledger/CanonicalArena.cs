namespace Custos.Ledger;

/// <summary>
/// Where a ledger writer's chain puts the canonical bytes of one batch of records, instead of an array per record (a
/// quarter of the bytes a gateway allocated under load: <c>docs/performance.md</c>, "Where the allocations go"). The
/// memory is reused after <see cref="Reset"/>: call it only once nothing reads the batch's records any more (stored or
/// spooled, observers run, and no timed-out append still holding them; then start a new arena instead). Not thread-safe.
/// </summary>
public sealed class CanonicalArena
{
    /// <summary>The size of a chunk; a record longer than this gets an array of its own.</summary>
    public const int ChunkSize = 64 * 1024;

    /// <summary>Chunks kept across <see cref="Reset"/>: a burst of large batches does not keep its memory.</summary>
    public const int MaxRetainedChunks = 4;

    private readonly List<byte[]> _chunks = [];
    private int _current = -1;
    private int _offset;

    /// <summary>A copy of <paramref name="bytes"/>, valid until <see cref="Reset"/>.</summary>
    public ReadOnlyMemory<byte> Copy(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length > ChunkSize)
        {
            return bytes.ToArray();
        }

        if (_current < 0 || ChunkSize - _offset < bytes.Length)
        {
            _current++;
            _offset = 0;
            if (_current == _chunks.Count)
            {
                _chunks.Add(new byte[ChunkSize]);
            }
        }

        var destination = _chunks[_current].AsMemory(_offset, bytes.Length);
        bytes.CopyTo(destination.Span);
        _offset += bytes.Length;
        return destination;
    }

    /// <summary>Makes the memory of every copy so far available again: the copies' contents are then undefined.</summary>
    public void Reset()
    {
        if (_chunks.Count > MaxRetainedChunks)
        {
            _chunks.RemoveRange(MaxRetainedChunks, _chunks.Count - MaxRetainedChunks);
        }

        _current = -1;
        _offset = 0;
    }
}
