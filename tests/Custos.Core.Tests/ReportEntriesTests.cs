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

    [Fact]
    public void Parse_ReadsTheTopLevelMembersOnce_SkipsNestedAndOddValues_UnescapesNames()
    {
        const string json = """
            {"v":2,"kind":"request","request_id":"req_1","timestamp":"2026-03-01T10:00:00.123456Z","tenant":"t",
             "usage":{"consumer":"nested","input_tokens":99,"controls":[{"control":"nested"}]},
             "consumer":"c\u0061t","model":null,"decision":"deny","reasons":["deny.x",null,"deny.y"],"cost":"0.50","currency":7,
             "status":403,"input_tokens":12,"tokens_estimated":true,"\u0061gent_run":"run-1","unknown":[1,{"a":[2]}],
             "controls":[{"control":"budget","scope":"tenant:t","decision":"deny","limit":5,"used":4.5,"extra":{"control":"no"}},"odd",
                         {"control":"rate_limit.requests","decision":"pass","limit":"60"}]}
            """;

        var entry = RequestEntry.Parse("n", 7, json);

        Assert.Equal(("req_1", new DateTimeOffset(2026, 3, 1, 10, 0, 0, TimeSpan.Zero).AddTicks(1_234_560)), (entry.RequestId, entry.Timestamp));
        Assert.Equal(("t", "cat", null, "deny"), (entry.Tenant, entry.Consumer, entry.Model, entry.Decision));
        Assert.Same(string.IsInterned("cat"), entry.Consumer); // the escaped name unescaped, then interned like the rest
        Assert.Equal(["deny.x", "deny.y"], entry.Reasons);
        Assert.Equal((0.50m, null, 403, 12L, true, "run-1"), (entry.Cost, entry.Currency, entry.Status, entry.InputTokens, entry.TokensEstimated, entry.AgentRun));
        Assert.Equal([new ControlReading("budget", "tenant:t", "deny", 5m, null), new ControlReading("rate_limit.requests", null, "pass", null, null)], entry.Controls);
        Assert.Equal([4.5m], entry.BudgetsUsed);
        Assert.Equal("n#7", entry.Position);
    }

    [Fact]
    public void Parse_NotAnObject_Throws()
    {
        Assert.ThrowsAny<System.Text.Json.JsonException>(() => RequestEntry.Parse("n", 1, "[1]"));
        Assert.ThrowsAny<System.Text.Json.JsonException>(() => RequestEntry.Parse("n", 1, "{\"request_id\":"));
    }
}
