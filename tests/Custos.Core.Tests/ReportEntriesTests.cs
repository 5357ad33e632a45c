using System.Text;
using Custos.Controls;
using Custos.Ledger;
using Custos.Reports;

namespace Custos.Core.Tests;

/// <summary>How reports hold a window's request entries: one object per distinct control reading and list of them, each budget's spend kept.</summary>
public sealed class ReportEntriesTests
{
    [Fact]
    public void Parse_EqualReadingsOfManyEntries_AreOneObject_EachBudgetKeepsItsSpend()
    {
        var chain = new HashChain("node-a", 0, HashChain.Genesis);
        var entries = new[] { 57m, 58m }.Select(used =>
        {
            var record = LedgerCanonicalFormTests.SampleRequest();
            record.Controls =
            [
                new ControlResult("rate_limit.requests", "consumer:support-web", ControlDecisions.Pass) { Limit = 60, Used = used, Reserved = 1, Requested = 1 },
                new ControlResult("budget", "tenant:acme", ControlDecisions.Pass) { Limit = 50, Used = used / 10, Reserved = 0.03m, Requested = 0.01m },
                new ControlResult("entitlement", "consumer:support-web", ControlDecisions.Pass) { Detail = "approved by owner@example.com (T-1)" },
            ];
            var stored = chain.Append(record);
            return RequestEntry.Parse(stored.ChainId, stored.Seq, Encoding.UTF8.GetString(stored.Canonical.Span));
        }).ToArray();

        var (first, second) = (entries[0], entries[1]);

        Assert.Same(first.Controls, second.Controls); // the requests' counts and spends differ; the readings the reports use do not
        Assert.Equal(new ControlReading("rate_limit.requests", "consumer:support-web", "pass", 60, null), first.Controls[0]);
        Assert.Equal("approved by owner@example.com (T-1)", second.Controls[2].Detail);
        Assert.Equal([(first.Controls[1], 5.7m)], first.Budgets().Select(b => (b.Reading, b.Used)));
        Assert.Equal([(first.Controls[1], 5.8m)], second.Budgets().Select(b => (b.Reading, b.Used)));
        Assert.Equal(50m, second.Controls[1].Limit);
    }
}
