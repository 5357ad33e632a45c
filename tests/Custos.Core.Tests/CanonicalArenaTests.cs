using System.Runtime.InteropServices;
using Custos.Ledger;

namespace Custos.Core.Tests;

public class CanonicalArenaTests
{
    [Fact]
    public void Copies_AreIndependentUntilReset_ThenTheSameMemoryServesTheNextBatch()
    {
        var arena = new CanonicalArena();
        var first = arena.Copy("{\"a\":1}"u8);
        var second = arena.Copy("{\"b\":22}"u8);
        Assert.Equal("{\"a\":1}"u8.ToArray(), first.ToArray());
        Assert.Equal("{\"b\":22}"u8.ToArray(), second.ToArray());
        Assert.True(MemoryMarshal.TryGetArray(first, out var a));
        Assert.True(MemoryMarshal.TryGetArray(second, out var b));
        Assert.Same(a.Array, b.Array); // one chunk, one after the other
        Assert.Equal(a.Offset + a.Count, b.Offset);

        arena.Reset();
        var next = arena.Copy("{\"c\":3}"u8);
        Assert.True(MemoryMarshal.TryGetArray(next, out var c));
        Assert.Same(a.Array, c.Array);
        Assert.Equal(a.Offset, c.Offset); // reused: what first pointed at is now the next batch's
        Assert.Equal("{\"c\":3}"u8.ToArray(), first.ToArray());
    }

    [Fact]
    public void ABatchLargerThanAChunk_TakesMoreChunks_AndAResetKeepsOnlyAFew()
    {
        var arena = new CanonicalArena();
        var record = new byte[3000];
        var arrays = new HashSet<byte[]>(ReferenceEqualityComparer.Instance);
        var copies = new List<ReadOnlyMemory<byte>>();
        for (var i = 0; i < 512; i++)
        {
            record.AsSpan().Fill((byte)i);
            var copy = arena.Copy(record);
            Assert.True(MemoryMarshal.TryGetArray(copy, out var segment));
            arrays.Add(segment.Array!);
            copies.Add(copy);
        }

        Assert.Equal((512 * 3000 / (CanonicalArena.ChunkSize / 3000 * 3000)) + 1, arrays.Count);
        Assert.All(copies.Select((c, i) => (c, i)), x => Assert.True(x.c.Span.IndexOfAnyExcept((byte)x.i) < 0)); // none overwrote another

        arena.Reset();
        var reused = new HashSet<byte[]>(ReferenceEqualityComparer.Instance);
        for (var i = 0; i < 512; i++)
        {
            Assert.True(MemoryMarshal.TryGetArray(arena.Copy(record), out var segment));
            reused.Add(segment.Array!);
        }

        Assert.Equal(CanonicalArena.MaxRetainedChunks, reused.Count(arrays.Contains));
    }

    [Fact]
    public void ARecordLongerThanAChunk_GetsAnArrayOfItsOwn()
    {
        var arena = new CanonicalArena();
        var small = arena.Copy("{}"u8);
        var large = arena.Copy(new byte[CanonicalArena.ChunkSize + 1]);
        Assert.True(MemoryMarshal.TryGetArray(large, out var segment));
        Assert.Equal(CanonicalArena.ChunkSize + 1, segment.Array!.Length);
        Assert.Equal("{}"u8.ToArray(), small.ToArray());
    }

    [Fact]
    public void TheChain_SealsIntoTheArena_TheSameBytesAndHashAsWithout()
    {
        var arena = new CanonicalArena();
        var withArena = new HashChain("n", 0, HashChain.Genesis);
        var without = new HashChain("n", 0, HashChain.Genesis);
        for (var i = 0; i < 3; i++)
        {
            var record = new RequestRecord
            {
                RequestId = $"req-{i}",
                NodeId = "n",
                Method = "POST",
                Endpoint = "/v1/chat/completions",
                Tenant = "acme",
                Timestamp = DateTimeOffset.UnixEpoch.AddSeconds(i),
            };
            var a = withArena.Append(record, arena);
            var b = without.Append(record);
            Assert.Equal(b.Canonical.ToArray(), a.Canonical.ToArray());
            Assert.Equal(b.Hash, a.Hash);
            Assert.True(MemoryMarshal.TryGetArray(a.Canonical, out var segment) && segment.Array!.Length == CanonicalArena.ChunkSize);
        }
    }
}
