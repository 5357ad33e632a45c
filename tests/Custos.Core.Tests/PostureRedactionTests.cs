using Custos.ControlPlane;
using Custos.Policy;
using Custos.Reports;

namespace Custos.Core.Tests;

/// <summary>The posture report names a failing webhook as the notifier's log does: scheme and host, no path, user info or query.</summary>
public sealed class PostureRedactionTests
{
    [Fact]
    public void Build_AFailingWebhookWithATokenInItsQuery_IsNamedWithoutTheTokenOrUserInfo()
    {
        var now = new DateTimeOffset(2026, 12, 1, 9, 0, 0, TimeSpan.Zero);
        var document = new PolicyDocument();
        var input = new PostureInput
        {
            GeneratedAt = now,
            History = [new PolicyVersion(1, PolicyVersion.HashOf(document), "t", "t", now, document)],
            Notifications =
            [
                new Notification
                {
                    Id = 1, CreatedAt = now, Role = "technical", Recipient = "On-call", Channel = "webhook",
                    Target = "https://bot:pw@hooks.example.com/in/T0?token=s3cret", Payload = "{}", Status = "pending", Attempts = 3,
                },
            ],
            Activity = new LedgerActivity(now, new Dictionary<string, DateTimeOffset>()),
            Chain = new ChainCheck("ok", 0, 0, 0, [], ""),
        };

        var text = ReportWriter.Write(PostureReportBuilder.Build(input), ReportFormat.Md);

        Assert.Contains("failing delivery, e.g. to On-call (https://hooks.example.com/…)", text, StringComparison.Ordinal);
        Assert.DoesNotContain("s3cret", text, StringComparison.Ordinal);
        Assert.DoesNotContain("/in/T0", text, StringComparison.Ordinal);
        Assert.DoesNotContain("pw@", text, StringComparison.Ordinal);
        Assert.Equal("owner@example.com", PostureReportBuilder.Redacted("owner@example.com"));
    }
}
