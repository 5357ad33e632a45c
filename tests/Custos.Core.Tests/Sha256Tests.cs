using System.Security.Cryptography;
using System.Text;
using Custos.Hashing;

namespace Custos.Core.Tests;

public sealed class Sha256Tests
{
    [Fact]
    public void Hash_MatchesTheOneShotDigest_CallAfterCall()
    {
        for (var length = 0; length < 300; length += 37)
        {
            var data = Encoding.UTF8.GetBytes(new string('k', length));
            Assert.Equal(SHA256.HashData(data), Sha256.Hash(data));
            Assert.Equal(SHA256.HashData(data), Sha256.Hash(data)); // the reused context was reset
        }
    }

    [Fact]
    public void Hash_OfRanges_HashesTheSlicesInOrder_AndABadRangeLeavesNothingBehind()
    {
        var body = Encoding.UTF8.GetBytes("""{"messages":[{"content":"first"},{"content":"second"}]}""");
        List<Range> ranges = [25..30, 45..51];
        var expected = SHA256.HashData(Encoding.UTF8.GetBytes("firstsecond"));
        var actual = new byte[32];

        Sha256.Hash(body, ranges, actual);
        Assert.Equal(expected, actual);

        // A range past the end fails after the first slice was fed in; the next hash on this thread is still right.
        Assert.Throws<ArgumentOutOfRangeException>(() => Sha256.Hash(body, [25..30, 45..999], new byte[32]));
        Sha256.Hash(body, ranges, actual);
        Assert.Equal(expected, actual);
    }

    [Fact]
    public void Hash_IntoATooShortDestination_FailsBeforeFeedingTheContext()
    {
        var data = Encoding.UTF8.GetBytes("csk_example");
        Assert.Throws<ArgumentOutOfRangeException>(() => Sha256.Hash(data, new byte[31]));
        Assert.Equal(SHA256.HashData(data), Sha256.Hash(data)); // nothing of the failed call was left in the context
    }
}
