using Custos.Policy;

namespace Custos.Core.Tests;

public sealed class PolicyDiffTests
{
    [Fact]
    public void Changes_ShowNamesAsWritten_ButEscapeWhatWouldEndTheirQuotes()
    {
        // Read by people in `custos policy diff` and the console: Zoë M\u00FCller was unreadable, and +00:00 came out as \u002B00:00.
        static PolicyDocument With(string name) => new() { Tenants = [new TenantConfig { Id = "acme", Name = name }] };

        var change = Assert.Single(PolicyDiff.Compute(With("Acme"), With("Zoë Müller 财务 <ops> \"x\" +00:00"))).ToString();

        Assert.Contains("\"Zoë Müller 财务 <ops> \\\"x\\\" +00:00\"", change, StringComparison.Ordinal);
    }
}
