using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Custos.Alerts;
using Custos.Gateway.Hosting;
using Custos.Ledger;
using Custos.Policy;
using Microsoft.Extensions.Time.Testing;

namespace Custos.Tests;

/// <summary>
/// <c>custos alerts list|show|ack|resume</c> against a real demo gateway on loopback, the alerts raised by real traffic.
/// The gateway runs on a fake clock that starts at a whole minute, so the detectors' per-minute windows hold exactly
/// the requests a test sends; the agents' baseline is trusted after one minute instead of fifteen.
/// </summary>
public sealed class AlertsCliTests : IAsyncLifetime
{
    private readonly FakeTimeProvider _time = new(WholeMinute(DateTimeOffset.UtcNow));
    private DemoGateway _demo = null!;
    private CustosGateway _gateway = null!;

    public async Task InitializeAsync()
    {
        _demo = await DemoGateway.StartAsync("alerts-cli", policy => policy with { Alerts = new AlertsConfig { BaselineWarmupMinutes = 1 } }, _time);
        _gateway = _demo.Gateway;
    }

    public async Task DisposeAsync() => await _demo.DisposeAsync();

    private static DateTimeOffset WholeMinute(DateTimeOffset time) => new(time.Ticks - time.Ticks % TimeSpan.TicksPerMinute, TimeSpan.Zero);

    [Fact]
    public async Task Alerts_FirstUseOfAModel_ListShowAndAcknowledge()
    {
        // Arrange: support-web's first call of gpt-4o-mini raises model.first_use for its policy owner.
        var call = await DemoGateway.ChatAsync(_gateway.DataPlaneUri, _demo.ConsumerKey("support-web"), "gpt-4o-mini");
        Assert.Equal(HttpStatusCode.OK, call.Status);
        var alert = Assert.Single(await AlertsAsync());
        var id = alert.GetProperty("id").GetString()!;

        // List: one row, its columns in order; open, no action.
        var list = await AsAsync("security-auditor", "alerts", "list");
        Assert.Matches(@"^ID +RAISED +SEVERITY +TYPE +SUBJECT +STATUS +ACTION +SUMMARY\n", list.ReplaceLineEndings("\n"));
        var row = DemoGateway.Row(list, id);
        Assert.Matches(@"^\d{4}-\d\d-\d\d \d\d:\d\d$", row[1]);
        Assert.Equal(["info", "model.first_use", "consumer:support-web", "open", "-", "support-web used model gpt-4o-mini for the first time."], row[2..]);
        Assert.Contains("1 alert(s); times in UTC.", list, StringComparison.Ordinal);
        Assert.Equal("No alerts.", (await AsAsync("security-auditor", "alerts", "list", "--status", "acknowledged")).Trim());

        // Show: the signal, its evidence, who was told.
        var show = await AsAsync("security-auditor", "alerts", "show", id);
        Assert.StartsWith($"alert {id}: model.first_use (info), open", show, StringComparison.Ordinal);
        Assert.Matches(@"\n  consumer: +support-web \(external\)\n", show.ReplaceLineEndings("\n"));
        Assert.Matches($@"\n  request: +{call.RequestId}\n", show.ReplaceLineEndings("\n"));
        Assert.Matches(@"\n  acknowledged: +no\n", show.ReplaceLineEndings("\n"));
        Assert.Matches(@"\n  evidence:\n    model: +gpt-4o-mini\n", show.ReplaceLineEndings("\n"));

        // Ack, with a note: acknowledged by the service owner, recorded in the ledger under their name.
        var ack = await AsAsync("service-owner", "alerts", "ack", id, "--note", "expected: new release");
        Assert.StartsWith($"alert {id} acknowledged by demo-service-owner at ", ack, StringComparison.Ordinal);
        Assert.Equal("acknowledged", DemoGateway.Row(await AsAsync("security-auditor", "alerts", "list", "--status", "acknowledged"), id)[5]);
        Assert.Equal("No alerts.", (await AsAsync("security-auditor", "alerts", "list", "--status", "open")).Trim());
        Assert.Matches(@"\n  note: +expected: new release\n", (await AsAsync("security-auditor", "alerts", "show", id)).ReplaceLineEndings("\n"));
        var entry = Assert.Single(await _demo.AdminEntriesAsync("alert.acknowledged"));
        Assert.Equal(("demo-service-owner", "alert:" + id, "expected: new release"),
            (entry.GetProperty("actor").GetString(), entry.GetProperty("target").GetString(), entry.GetProperty("reason").GetString()));

        // A role without the permission: one clear refusal with the admin request id; the attempt is audited, the alert unchanged.
        var (exit, output, error) = await RunAsync("security-auditor", "alerts", "ack", id);
        Assert.Equal(1, exit);
        Assert.Equal("", output);
        Assert.StartsWith("error: forbidden (403 admin.forbidden): ", error, StringComparison.Ordinal);
        Assert.Contains("role security_auditor may not do this", error, StringComparison.Ordinal);
        Assert.Matches(@"\(admin request [^)\s]+\)", error);
        Assert.DoesNotContain("   at ", error, StringComparison.Ordinal);
        Assert.Single(await _demo.AdminEntriesAsync("alert.acknowledged"));
        Assert.Equal("demo-security-auditor", Assert.Single(await _demo.AdminEntriesAsync("alert.acknowledged_denied")).GetProperty("actor").GetString());

        // Nothing to resume on an alert that took no action: a conflict, said plainly.
        var resume = await RunAsync("service-owner", "alerts", "resume", id, "--reason", "just in case");
        Assert.Equal(1, resume.Exit);
        Assert.StartsWith($"error: conflict (409 admin.conflict): Alert {id} took no automatic action", resume.Error, StringComparison.Ordinal);

        // An unknown id, and the JSON form.
        var missing = await RunAsync("security-auditor", "alerts", "show", "al-999");
        Assert.Equal(1, missing.Exit);
        Assert.Contains("not found (404 admin.not_found)", missing.Error, StringComparison.Ordinal);
        using var json = JsonDocument.Parse(await AsAsync("security-auditor", "alerts", "list", "--limit", "1", "--json"));
        Assert.Equal(id, Assert.Single(json.RootElement.EnumerateArray()).GetProperty("id").GetString());

        // Resolved, undoing nothing: closed by who may acknowledge it, with a reason.
        var resolved = await AsAsync("service-owner", "alerts", "resolve", id, "--reason", "the release went out");
        Assert.StartsWith($"alert {id} resolved by demo-service-owner at ", resolved, StringComparison.Ordinal);
        Assert.Equal("resolved", DemoGateway.Row(await AsAsync("security-auditor", "alerts", "list"), id)[5]);
    }

    [Fact]
    public async Task Alerts_AgentFarAboveItsBaseline_SuspendedThenResumedByItsOwner()
    {
        // Arrange: research-agent calls twice in its first minute, then twenty times in the next, 100× its baseline:
        // the agent rule (act at 10×) suspends its credential as a new policy version.
        var key = _demo.ConsumerKey("research-agent");
        for (var i = 0; i < 2; i++)
        {
            Assert.Equal(HttpStatusCode.OK, (await DemoGateway.ChatAsync(_gateway.DataPlaneUri, key, "gpt-4o")).Status);
        }

        await AlertsAsync();
        _time.Advance(TimeSpan.FromMinutes(1));
        for (var i = 0; i < 20; i++)
        {
            Assert.Equal(HttpStatusCode.OK, (await DemoGateway.ChatAsync(_gateway.DataPlaneUri, key, "gpt-4o")).Status);
        }

        var alerts = await AlertsAsync();
        var anomaly = Assert.Single(alerts, a => a.GetProperty("type").GetString() == "usage.anomaly");
        var id = anomaly.GetProperty("id").GetString()!;
        var suspendedIn = anomaly.GetProperty("action_policy_version").GetInt64();
        Assert.Equal(suspendedIn, _gateway.Policy.Current.Version);
        Assert.Equal("deny.credential_suspended", (await DemoGateway.ChatAsync(_gateway.DataPlaneUri, key, "gpt-4o")).Code);

        var row = DemoGateway.Row(await AsAsync("security-auditor", "alerts", "list"), id);
        Assert.Equal(["critical", "usage.anomaly", "consumer:research-agent", "open", "suspended credential cred-research-agent"], row[2..7]);
        var show = (await AsAsync("security-auditor", "alerts", "show", id)).ReplaceLineEndings("\n");
        Assert.Matches($@"\n  action: +suspended credential cred-research-agent \(policy version {suspendedIn}\)\n", show);
        Assert.Matches(@"\n  rule: +agent: usage at 10× its baseline suspends the credential\n", show);
        Assert.Matches(@"\n  told: +Research platform on-call \(technical\), Agent operations \(agent_operator\)\n", show);
        Assert.Matches(@"\n    metric: +(requests|tokens|spend)\n", show);

        // Acknowledging keeps the action in force, and says how to undo it.
        Assert.EndsWith($"Its automatic action (suspended credential cred-research-agent) stays until: custos alerts resume {id} --reason …",
            (await AsAsync("service-owner", "alerts", "ack", id)).Trim(), StringComparison.Ordinal);
        Assert.Equal("deny.credential_suspended", (await DemoGateway.ChatAsync(_gateway.DataPlaneUri, key, "gpt-4o")).Code);

        // Act: the service owner undoes it with a reason.
        var resumed = await AsAsync("service-owner", "alerts", "resume", id, "--reason", "load test by the research team");

        // Assert: what was undone and the new version; the key works again; the alert is resolved; all in the ledger.
        var version = _gateway.Policy.Current.Version;
        Assert.True(version > suspendedIn);
        Assert.Equal($"alert {id} resolved by demo-service-owner: undid \"suspended credential cred-research-agent\" (policy version {suspendedIn}); " +
            $"policy version {version} is in force.", resumed.Trim());
        Assert.Equal(HttpStatusCode.OK, (await DemoGateway.ChatAsync(_gateway.DataPlaneUri, key, "gpt-4o")).Status);
        Assert.Equal("resolved", DemoGateway.Row(await AsAsync("security-auditor", "alerts", "list", "--status", "resolved"), id)[5]);
        Assert.Equal("custos:alerts", Assert.Single(await _demo.AdminEntriesAsync("credential.suspended")).GetProperty("actor").GetString());
        Assert.Equal("demo-service-owner", Assert.Single(await _demo.AdminEntriesAsync("credential.resumed")).GetProperty("actor").GetString());
        Assert.Equal("alert:" + id, Assert.Single(await _demo.AdminEntriesAsync("alert.resolved")).GetProperty("target").GetString());

        var again = await RunAsync("service-owner", "alerts", "resume", id, "--reason", "twice");
        Assert.Equal(1, again.Exit);
        Assert.Contains("conflict (409 admin.conflict)", again.Error, StringComparison.Ordinal);
        Assert.Contains("resolved already", again.Error, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Alerts_ResumeWithoutReason_AndBadLimit_AreRefusedBeforeAnyCall()
    {
        var noReason = await RunAsync("service-owner", "alerts", "resume", "al-1");
        Assert.Equal(1, noReason.Exit);
        Assert.Contains("--reason", noReason.Error, StringComparison.Ordinal);

        var badLimit = await RunAsync("security-auditor", "alerts", "list", "--limit", "0");
        Assert.Equal(1, badLimit.Exit);
        Assert.Contains("--limit takes a whole number of at least 1, not '0'", badLimit.Error, StringComparison.Ordinal);

        var badStatus = await RunAsync("security-auditor", "alerts", "list", "--status", "closed");
        Assert.Equal(1, badStatus.Exit);
        Assert.Contains("closed", badStatus.Error, StringComparison.Ordinal);
    }

    /// <summary>Waits until every request so far is in the ledger and every alert it raised is handled; returns the alerts (admin API JSON).</summary>
    [Fact]
    public async Task AuditVerify_AnAlertAcknowledgedInTheStore_AndAnActionedAlertDeleted_NamesBoth()
    {
        // Arrange: a gateway whose clock ran two hours ago (its alerts settled long since), research-agent suspended by
        // an alert, and its first use of a model an alert that escalated, nobody acknowledging it.
        var time = new FakeTimeProvider(WholeMinute(DateTimeOffset.UtcNow.AddHours(-2)));
        await using var demo = await DemoGateway.StartAsync("alerts-forged", policy => policy with { Alerts = new AlertsConfig { BaselineWarmupMinutes = 1 } }, time);
        var gateway = demo.Gateway;
        var key = demo.ConsumerKey("research-agent");
        for (var i = 0; i < 2; i++)
        {
            Assert.Equal(HttpStatusCode.OK, (await DemoGateway.ChatAsync(gateway.DataPlaneUri, key, "gpt-4o")).Status);
        }

        await gateway.Ledger.FlushAsync().WaitAsync(TimeSpan.FromSeconds(10));
        await gateway.Alerts.WaitIdleAsync().WaitAsync(TimeSpan.FromSeconds(10));
        time.Advance(TimeSpan.FromMinutes(1));
        for (var i = 0; i < 20; i++)
        {
            await DemoGateway.ChatAsync(gateway.DataPlaneUri, key, "gpt-4o");
        }

        await gateway.Ledger.FlushAsync().WaitAsync(TimeSpan.FromSeconds(10));
        await gateway.Alerts.WaitIdleAsync().WaitAsync(TimeSpan.FromSeconds(10));
        var alerts = await gateway.Store.ListAlertsAsync(null, 100);
        var suspended = Assert.Single(alerts, a => a.Signal.Type == "usage.anomaly");
        Assert.NotNull(suspended.ActionPolicyVersion);
        var firstUse = alerts.First(a => a.Signal.Type == "model.first_use");
        time.Advance(TimeSpan.FromMinutes(31));
        await gateway.Alerts.EscalateDueAsync(time.GetUtcNow()); // or its loop did, woken by the clock
        Assert.NotNull((await gateway.Store.GetAlertAsync(firstUse.Id))?.EscalatedAt);
        await gateway.DisposeAsync(); // stopped: drained and sealed
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        var (exit, output, _) = await Cli.RunAsync("audit", "verify", "--data", demo.Directory);
        Assert.True(exit == 0, output);

        // Act: the escalated alert made acknowledged by 'mallory' with no escalation, the suspending alert deleted.
        await using (var db = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={Path.Combine(demo.Directory, "custos.db")};Pooling=false"))
        {
            await db.OpenAsync();
            await using var command = db.CreateCommand();
            command.CommandText = $"""
                UPDATE alerts SET status = 'acknowledged',
                    alert = json_set(json_remove(alert, '$.escalated_at'), '$.status', 'acknowledged', '$.acknowledged_by', 'mallory', '$.acknowledged_at', '{LedgerTime.Format(time.GetUtcNow().AddMinutes(-40))}')
                WHERE number = {Alert.NumberOf(firstUse.Id)};
                DELETE FROM alerts WHERE number = {Alert.NumberOf(suspended.Id)};
                """;
            await command.ExecuteNonQueryAsync();
        }

        // Assert: verify fails, naming both.
        (exit, output, _) = await Cli.RunAsync("audit", "verify", "--data", demo.Directory);
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Assert.Equal(1, exit);
        Assert.Contains($"FAIL altered_alert: alert {firstUse.Id} disagrees with its ledger entries", output, StringComparison.Ordinal);
        Assert.Contains("its status is 'acknowledged' in the store, 'open' in the ledger", output, StringComparison.Ordinal);
        Assert.Contains("its acknowledged_by is 'mallory' in the store, null in the ledger", output, StringComparison.Ordinal);
        Assert.Contains("its escalation is 'none' in the store, 'escalated' in the ledger", output, StringComparison.Ordinal);
        Assert.Contains($"FAIL altered_alert: the ledger records alert {suspended.Id} (usage.anomaly;", output, StringComparison.Ordinal);
        Assert.Contains("which took an automatic action (credential.suspended), but the store has no such alert: it was deleted", output, StringComparison.Ordinal);
    }

    private async Task<List<JsonElement>> AlertsAsync()
    {
        await _gateway.Ledger.FlushAsync().WaitAsync(TimeSpan.FromSeconds(10));
        await _gateway.Alerts.WaitIdleAsync().WaitAsync(TimeSpan.FromSeconds(10));
        using var json = JsonDocument.Parse(await AsAsync("platform-admin", "alerts", "list", "--json"));
        return [.. json.RootElement.EnumerateArray().Select(a => a.Clone())];
    }

    private async Task<string> AsAsync(string role, params string[] args)
    {
        var (exit, output, error) = await RunAsync(role, args);
        Assert.True(exit == 0, $"custos {string.Join(' ', args)} exited {exit}: {error}");
        Assert.Equal("", error);
        return output;
    }

    private Task<(int Exit, string Output, string Error)> RunAsync(string role, params string[] args)
        => Cli.RunAsync([.. args, "--server", _gateway.AdminUri.ToString(), "--admin-key", _demo.AdminKey(role)]);


}
