using System.Text;

namespace Custos.Testing;

/// <summary>
/// Seeded random mutations of valid input, for tests that check what the gateway does with anything at all: cuts,
/// flipped bytes, repeated runs and inserted fragments. Linked into every test project (tests/Directory.Build.props).
/// </summary>
internal static class Mutations
{
    /// <summary>
    /// <paramref name="seed"/> with between <paramref name="fewest"/> and <paramref name="most"/> mutations, each a cut of up
    /// to 11 bytes, a byte flipped, a run of up to <paramref name="longestRepeat"/> bytes repeated elsewhere, or one of
    /// <paramref name="fragments"/> inserted.
    /// </summary>
    public static byte[] Apply(byte[] seed, Random random, IReadOnlyList<string> fragments, int fewest = 1, int most = 5, int longestRepeat = 200)
    {
        var bytes = new List<byte>(seed);
        for (var k = random.Next(fewest, most + 1); k > 0; k--)
        {
            var at = random.Next(bytes.Count + 1);
            switch (random.Next(4))
            {
                case 0 when at < bytes.Count:
                    bytes.RemoveRange(at, Math.Min(random.Next(1, 12), bytes.Count - at));
                    break;
                case 1 when at < bytes.Count:
                    bytes[at] = (byte)random.Next(256);
                    break;
                case 2 when bytes.Count > 0:
                    var from = random.Next(bytes.Count);
                    bytes.InsertRange(at, bytes.GetRange(from, Math.Min(random.Next(1, longestRepeat), bytes.Count - from)));
                    break;
                default:
                    bytes.InsertRange(at, Encoding.UTF8.GetBytes(fragments[random.Next(fragments.Count)]));
                    break;
            }
        }

        return [.. bytes];
    }
}
