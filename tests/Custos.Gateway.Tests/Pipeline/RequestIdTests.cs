using System.Collections.Concurrent;
using System.Text.RegularExpressions;
using Custos.Gateway.Pipeline;

namespace Custos.Gateway.Tests.Pipeline;

public sealed partial class RequestIdTests
{
    [Fact]
    public void New_InOneMillisecond_OnSeveralThreads_GivesDistinctWellFormedIds()
    {
        var now = DateTimeOffset.FromUnixTimeMilliseconds(1_764_000_000_000);
        var ids = new ConcurrentBag<string>();

        // Many ids per thread, past several refills of each thread's random bytes.
        Parallel.For(0, 8, _ =>
        {
            for (var i = 0; i < 1_000; i++)
            {
                ids.Add(RequestId.New(now));
            }
        });

        Assert.Equal(8_000, ids.Distinct(StringComparer.Ordinal).Count());
        Assert.All(ids, id => Assert.Matches(Shape(), id));
        Assert.Single(ids.Select(id => id[..14]).Distinct(StringComparer.Ordinal)); // the time part, the same millisecond
    }

    [Fact]
    public void New_SortsByTime()
    {
        var earlier = RequestId.New(DateTimeOffset.FromUnixTimeMilliseconds(1_764_000_000_000));
        var later = RequestId.New(DateTimeOffset.FromUnixTimeMilliseconds(1_764_000_000_001));

        Assert.True(string.CompareOrdinal(earlier, later) < 0, $"{earlier} < {later}");
    }

    [GeneratedRegex("^req_[0-9A-HJKMNP-TV-Z]{26}$")]
    private static partial Regex Shape();
}
