using Custos.Ledger;
using Custos.Reports;

namespace Custos.Core.Tests;

/// <summary>How a report reads the verifier's result: a chain signed by a key nobody gave is not verified, not broken.</summary>
public sealed class ChainCheckTests
{
    private static VerificationResult Result(params VerificationProblem[] problems) =>
        new() { Chains = 3, Entries = 30, Checkpoints = 3, Unsealed = 0, Problems = problems };

    private static VerificationProblem UnknownKey(string chain) =>
        new("unknown_key", chain, 1, null, "checkpoint 1-10 is signed by key 0123456789abcdef, which is not a trusted key (re-signed?)");

    [Fact]
    public void From_OnlyChainsSignedByKeysNotGiven_IsNotVerified_NamingThem()
    {
        var check = ChainCheck.From(Result(UnknownKey("node-b"), UnknownKey("node-c")), "the whole ledger");

        Assert.Equal(ChainCheck.NotVerified, check.Status);
        Assert.False(check.HasProblems);
        Assert.Empty(check.Problems);
        Assert.Contains("Not verified: no public key given for chain node-b, node-c", check.Detail, StringComparison.Ordinal);
    }

    [Fact]
    public void From_ABrokenChainBesideAnUnknownKey_FailsOnTheBrokenOneOnly()
    {
        var broken = new VerificationProblem("hash_mismatch", "node-a", 3, "req_1", "entry 3 does not hash to what entry 4 says");

        var check = ChainCheck.From(Result(UnknownKey("node-b"), broken), "the whole ledger");

        Assert.Equal(ChainCheck.Failed, check.Status);
        Assert.Equal([broken.ToString()], check.Problems);
        Assert.Contains("no public key given for chain node-b", check.Detail, StringComparison.Ordinal);
    }
}
