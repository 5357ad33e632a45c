using System.Net.Http.Headers;
using System.Text;
using Custos.Gateway.Hosting;
using Microsoft.Data.Sqlite;

namespace Custos.Tests;

/// <summary><c>custos init</c> and <c>custos audit verify | prove | verify-bundle</c> as an auditor would run them, on a real gateway's ledger.</summary>
public sealed class AuditCliTests
{
    [Fact]
    public async Task ALostCheckpointKey_StopsTheGateway_UntilItIsRotated_ThenTheRotationIsOnRecord_AndVerifyReadsBothKeys()
    {
        // A key made afresh because the file was gone signed the chain's next checkpoints with nothing said, and the
        // folder's audit verify then failed on all history before them.
        var gateway = await DemoGateway.StartAsync("rotate");
        var data = gateway.Directory;
        try
        {
            await SendAsync(gateway, 3);
            await StopAsync(gateway); // drained and sealed
            var privatePath = Custos.Ledger.CheckpointKey.PrivatePath(data);
            string old;
            using (var key = Custos.Ledger.CheckpointKey.LoadPublic(Custos.Ledger.CheckpointKey.PublicPath(data)))
            {
                old = Custos.Ledger.CheckpointKey.IdOf(key);
            }

            File.Delete(privatePath);

            var refused = await Assert.ThrowsAsync<InvalidDataException>(() => DemoGateway.StartAsync("rotate", directory: data));
            Assert.Contains($"signed by key {old}", refused.Message, StringComparison.Ordinal);
            Assert.Contains("--rotate-checkpoint-key", refused.Message, StringComparison.Ordinal);
            Assert.False(File.Exists(privatePath)); // no key made on the way
            SqliteConnection.ClearAllPools();

            var (exit, output, _) = await Cli.RunAsync("init", "--data", data, "--rotate-checkpoint-key");
            Assert.Equal(0, exit);
            Assert.Contains($"Retired checkpoint key {old}", output, StringComparison.Ordinal);
            Assert.True(File.Exists(Path.Combine(Custos.Ledger.CheckpointKey.RetiredDirectory(data), old + ".pub.pem")));

            gateway = await DemoGateway.StartAsync("rotate", directory: data);
            string current;
            using (var key = Custos.Ledger.CheckpointKey.LoadPublic(Custos.Ledger.CheckpointKey.PublicPath(data)))
            {
                current = Custos.Ledger.CheckpointKey.IdOf(key);
            }

            var rotated = Assert.Single(await gateway.AdminEntriesAsync("checkpoint.key_rotated"));
            Assert.Equal("system:init", rotated.GetProperty("actor").GetString());
            Assert.Equal(old, rotated.GetProperty("before").GetString());
            Assert.Equal(current, rotated.GetProperty("after").GetString());
            Assert.NotEqual(old, current);
            await SendAsync(gateway, 2);
            await StopAsync(gateway);

            // The folder's verify trusts its retired keys too: history signed by the old key and by the new.
            (exit, output, _) = await Cli.RunAsync("audit", "verify", "--data", data);
            Assert.Equal(0, exit);
            Assert.StartsWith("OK: ", output, StringComparison.Ordinal);
        }
        finally
        {
            SqliteConnection.ClearAllPools();
            Directory.Delete(data, recursive: true);
        }

        static async Task StopAsync(DemoGateway gateway)
        {
            await gateway.Gateway.DisposeAsync();
            await gateway.Upstream.DisposeAsync();
            SqliteConnection.ClearAllPools();
        }

        static async Task SendAsync(DemoGateway gateway, int count)
        {
            using var http = new HttpClient { BaseAddress = gateway.Gateway.DataPlaneUri };
            for (var i = 0; i < count; i++)
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
                {
                    Content = new StringContent("""{"model":"gpt-4o-mini","messages":[{"role":"user","content":"seal me"}]}""", Encoding.UTF8, "application/json"),
                };
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", gateway.ConsumerKey("support-web"));
                using var response = await http.SendAsync(request);
                Assert.Equal(System.Net.HttpStatusCode.OK, response.StatusCode);
            }
        }
    }

    [Fact]
    public async Task VerifyProveAndVerifyBundle_OnARealLedger_AndTheyFailWhenItIsTampered()
    {
        var gateway = await DemoGateway.StartAsync("audit");
        var requestIds = new List<string>();
        try
        {
            using var http = new HttpClient { BaseAddress = gateway.Gateway.DataPlaneUri };
            for (var i = 0; i < 5; i++)
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
                {
                    Content = new StringContent("""{"model":"gpt-4o-mini","messages":[{"role":"user","content":"audit me"}]}""", Encoding.UTF8, "application/json"),
                };
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", gateway.ConsumerKey("support-web"));
                using var response = await http.SendAsync(request);
                requestIds.Add(response.Headers.GetValues("x-request-id").Single());
            }

            await gateway.Gateway.DisposeAsync(); // stopped: drained and sealed
            SqliteConnection.ClearAllPools();
            var data = gateway.Directory;

            var (exit, output, _) = await Cli.RunAsync("audit", "verify", "--data", data);
            Assert.Equal(0, exit);
            Assert.StartsWith("OK: ", output, StringComparison.Ordinal);
            Assert.Contains("0 entries not sealed yet", output, StringComparison.Ordinal);

            var proof = Path.Combine(data, "proof.json");
            (exit, output, _) = await Cli.RunAsync("audit", "prove", requestIds[2], "-o", proof);
            Assert.NotEqual(0, exit); // the default store folder is not this one: a clear error, not a crash
            (exit, output, _) = await Cli.RunAsync("audit", "prove", requestIds[2], "-o", proof, "--data", data);
            Assert.Equal(0, exit);
            Assert.Contains($"Proof of {requestIds[2]} written", output, StringComparison.Ordinal);

            var publicKey = Path.Combine(data, "keys", "checkpoint.pub.pem");
            (exit, output, _) = await Cli.RunAsync("audit", "verify-bundle", proof, "--public-key", publicKey);
            Assert.Equal(0, exit);
            Assert.Contains("VALID: request " + requestIds[2], output, StringComparison.Ordinal);

            // The key prove names is the one that signed the checkpoint: this folder's when it matches, else by its id.
            (exit, output, _) = await Cli.RunAsync("audit", "prove", requestIds[2], "-o", proof, "--data", data);
            Assert.Contains($"--public-key {publicKey}", output, StringComparison.Ordinal);
            var signer = Custos.Ledger.CheckpointKey.IdOf(Custos.Ledger.CheckpointKey.LoadPublic(publicKey));
            var own = await File.ReadAllTextAsync(publicKey);
            var other = Path.Combine(data, "node-b");
            Custos.Ledger.CheckpointKey.LoadOrCreate(other, out _).Dispose();
            File.Copy(Custos.Ledger.CheckpointKey.PublicPath(other), publicKey, overwrite: true); // this folder now holds another node's key
            (exit, output, _) = await Cli.RunAsync("audit", "prove", requestIds[2], "-o", proof, "--data", data);
            await File.WriteAllTextAsync(publicKey, own);
            Assert.Equal(0, exit);
            Assert.DoesNotContain($"--public-key {publicKey}", output, StringComparison.Ordinal);
            Assert.Contains($"signed by key {signer}", output, StringComparison.Ordinal);

            // One changed character in the entry: the bundle no longer proves anything.
            File.WriteAllText(proof, File.ReadAllText(proof).Replace("audit me", "audit mE", StringComparison.Ordinal).Replace("gpt-4o-mini", "gpt-4o-mino", StringComparison.Ordinal));
            (exit, output, _) = await Cli.RunAsync("audit", "verify-bundle", proof, "--public-key", publicKey);
            Assert.Equal(1, exit);
            Assert.Contains("FAIL entry hash", output, StringComparison.Ordinal);
            Assert.Contains("INVALID", output, StringComparison.Ordinal);

            // The database altered behind the gateway's back: verify names the entry and fails.
            await using (var db = new SqliteConnection($"Data Source={Path.Combine(data, "custos.db")};Pooling=false"))
            {
                await db.OpenAsync();
                Custos.Storage.LedgerRecordCodec.AddFunctions(db); // records are stored compressed: read one as JSON, write it back as TEXT
                await using var command = db.CreateCommand();
                command.CommandText = $"""
                    DROP TRIGGER ledger_no_update;
                    UPDATE ledger SET record = replace(custos_record(record), '"allow"', '"deny"') WHERE request_id = '{requestIds[3]}';
                    """;
                await command.ExecuteNonQueryAsync();
            }

            (exit, output, _) = await Cli.RunAsync("audit", "verify", "--data", data);
            Assert.Equal(1, exit);
            Assert.Contains($"FAIL modified: chain", output, StringComparison.Ordinal);
            Assert.Contains(requestIds[3], output, StringComparison.Ordinal);
            Assert.Contains("FAILED: ", output, StringComparison.Ordinal);

            (exit, output, _) = await Cli.RunAsync("audit", "verify", "--data", data, "--json");
            Assert.Equal(1, exit);
            using var json = System.Text.Json.JsonDocument.Parse(output);
            Assert.False(json.RootElement.GetProperty("ok").GetBoolean());
            Assert.Equal(requestIds[3], json.RootElement.GetProperty("problems")[0].GetProperty("request_id").GetString());

            // Records stored compressed against a dictionary that is gone: every reader says so in one line, and verify names the entry.
            await using (var db = new SqliteConnection($"Data Source={Path.Combine(data, "custos.db")};Pooling=false"))
            {
                await db.OpenAsync();
                await using var command = db.CreateCommand();
                command.CommandText = "DROP TRIGGER record_dictionaries_no_delete; DELETE FROM record_dictionaries;";
                await command.ExecuteNonQueryAsync();
            }

            string error;
            (exit, output, error) = await Cli.RunAsync("requests", "--data", data);
            Assert.Equal(1, exit);
            Assert.StartsWith("error: A stored ledger record names dictionary 1", error, StringComparison.Ordinal);
            Assert.Contains("the database was altered", error, StringComparison.Ordinal);
            Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries)); // no stack trace

            (exit, output, _) = await Cli.RunAsync("audit", "verify", "--data", data);
            Assert.Equal(1, exit);
            Assert.Contains("FAIL unreadable: chain", output, StringComparison.Ordinal);
        }
        finally
        {
            await gateway.DisposeAsync();
        }
    }

    [Fact]
    public async Task AStoredPolicyVersionEditedBehindTheGateway_FailsVerification_AndTheGatewayDoesNotStartOnIt()
    {
        await using var gateway = await DemoGateway.StartAsync("altered-policy");
        await gateway.Gateway.DisposeAsync(); // stopped: drained and sealed
        SqliteConnection.ClearAllPools();
        var data = gateway.Directory;
        var (exit, output, _) = await Cli.RunAsync("audit", "verify", "--data", data);
        Assert.True(exit == 0, output); // a real gateway's versions agree with the entries that recorded them

        async Task<int> AlterAsync(string sql)
        {
            await using var db = new SqliteConnection($"Data Source={Path.Combine(data, "custos.db")};Pooling=false");
            await db.OpenAsync();
            await using var command = db.CreateCommand();
            command.CommandText = sql;
            return await command.ExecuteNonQueryAsync();
        }

        // Who made the version, rewritten (its hash does not cover it): the entry that recorded the version says otherwise.
        await AlterAsync("UPDATE policy_versions SET author = 'mallory'");
        (exit, output, _) = await Cli.RunAsync("audit", "verify", "--data", data);
        Assert.Equal(1, exit);
        Assert.Contains("its author is 'mallory' in the store, 'system:demo' in the ledger", output, StringComparison.Ordinal);
        await AlterAsync("UPDATE policy_versions SET author = 'system:demo'");

        // The finance admin made a platform admin in the version in force.
        Assert.Equal(1, await AlterAsync("""
            UPDATE policy_versions SET canonical = replace(canonical, '"role":"finance"', '"role":"platform_admin"')
            WHERE number = (SELECT max(number) FROM policy_versions)
            """));
        (exit, output, _) = await Cli.RunAsync("audit", "verify", "--data", data);
        Assert.Equal(1, exit);
        Assert.Contains("altered_policy_version: policy version 1's document hashes to", output, StringComparison.Ordinal);

        var started = await Assert.ThrowsAsync<InvalidDataException>(() => CustosGateway.StartAsync(new CustosGatewayOptions
        {
            Policy = DemoPolicy.Create(gateway.Upstream.BaseUri, gateway.Keys),
            PolicyAuthor = "system:demo",
            DataDirectory = data,
            DataPlaneUrl = "http://127.0.0.1:0",
            AdminUrl = "http://127.0.0.1:0",
            ConfigureLogging = _ => { },
        }));
        Assert.StartsWith("Policy version 1 is damaged or was altered in the store", started.Message, StringComparison.Ordinal);
        Assert.Contains("The gateway does not start on an altered policy version", started.Message, StringComparison.Ordinal);
        SqliteConnection.ClearAllPools();
    }

    [Fact]
    public async Task ADamagedStore_IsAOneLineError_OrAnUnreadableProblem_NeverACrash()
    {
        await using var gateway = await DemoGateway.StartAsync("damaged");
        using (var http = new HttpClient { BaseAddress = gateway.Gateway.DataPlaneUri })
        {
            for (var i = 0; i < 40; i++)
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
                {
                    Content = new StringContent("""{"model":"gpt-4o-mini","messages":[{"role":"user","content":"fill a few pages"}]}""", Encoding.UTF8, "application/json"),
                };
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", gateway.ConsumerKey("support-web"));
                using var response = await http.SendAsync(request);
            }
        }

        await gateway.Gateway.DisposeAsync(); // stopped: drained, sealed, its log checkpointed into the file
        SqliteConnection.ClearAllPools();

        string Copy(string name, Action<FileStream> damage)
        {
            var copy = Path.Combine(gateway.Directory, name);
            Directory.CreateDirectory(Path.Combine(copy, "keys"));
            File.Copy(Path.Combine(gateway.Directory, "custos.db"), Path.Combine(copy, "custos.db"));
            foreach (var key in Directory.GetFiles(Path.Combine(gateway.Directory, "keys")))
            {
                File.Copy(key, Path.Combine(copy, "keys", Path.GetFileName(key)));
            }

            using var file = new FileStream(Path.Combine(copy, "custos.db"), FileMode.Open, FileAccess.ReadWrite);
            damage(file);
            return copy;
        }

        // Cut in half: verify reports what it could not read (or, failing before the chains, says so in one line); readers say which file.
        var truncated = Copy("truncated", file => file.SetLength(file.Length / 2));
        var (exit, output, error) = await Cli.RunAsync("audit", "verify", "--data", truncated);
        Assert.Equal(1, exit);
        Assert.True(output.Contains("FAIL unreadable", StringComparison.Ordinal) || error.StartsWith("error: the store ", StringComparison.Ordinal), output + error);
        Assert.DoesNotContain("   at ", output + error, StringComparison.Ordinal);
        foreach (var args in new[] { new[] { "requests" }, ["report", "posture"] })
        {
            (exit, output, error) = await Cli.RunAsync([.. args, "--data", truncated]);
            Assert.Equal(1, exit);
            Assert.StartsWith($"error: the store {Path.Combine(truncated, "custos.db")}: it is damaged", error, StringComparison.Ordinal);
            Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries)); // no stack trace
        }

        // Its header overwritten: not a database at all.
        var garbage = Copy("garbage", file => file.Write(Encoding.ASCII.GetBytes(new string('x', 100))));
        (exit, output, error) = await Cli.RunAsync("audit", "verify", "--data", garbage);
        Assert.Equal(1, exit);
        Assert.StartsWith($"error: the store {Path.Combine(garbage, "custos.db")}: it is not a SQLite database", error, StringComparison.Ordinal);
        Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        SqliteConnection.ClearAllPools();
    }

    [Fact]
    public async Task AnAlertRowEditedSoThatItDoesNotRead_IsLeftOut_TheGatewayStarts_AndVerifyNamesIt()
    {
        await using var gateway = await DemoGateway.StartAsync("damaged-alert");
        await gateway.Gateway.DisposeAsync();
        SqliteConnection.ClearAllPools();
        var data = gateway.Directory;
        await using (var store = await Custos.Storage.SqliteStore.OpenAsync(data))
        {
            foreach (var fingerprint in new[] { "a", "b" })
            {
                await store.CreateAlertAsync(new Custos.Alerts.Alert
                {
                    Signal = new Custos.Alerts.AlertSignal
                    {
                        Type = "usage.anomaly",
                        Severity = Custos.Alerts.AlertSeverity.Warning,
                        Fingerprint = fingerprint,
                        Subject = "consumer:support-web",
                        Summary = "busy",
                        At = DateTimeOffset.UtcNow,
                        Tenant = "acme",
                    },
                    RaisedAt = DateTimeOffset.UtcNow,
                    LastSeenAt = DateTimeOffset.UtcNow,
                });
            }
        }

        await using (var db = new SqliteConnection($"Data Source={Path.Combine(data, "custos.db")};Pooling=false"))
        {
            await db.OpenAsync();
            await using var command = db.CreateCommand();
            command.CommandText = "UPDATE alerts SET alert = substr(alert, 1, 100) WHERE number = 2";
            Assert.Equal(1, await command.ExecuteNonQueryAsync());
        }

        var (exit, output, error) = await Cli.RunAsync("report", "incident", "--tenant", "acme", "--from", "1d", "--data", data);
        Assert.True(exit == 0, output + error);

        await using var restarted = await CustosGateway.StartAsync(new CustosGatewayOptions
        {
            Policy = DemoPolicy.Create(gateway.Upstream.BaseUri, gateway.Keys),
            PolicyAuthor = "system:demo",
            DataDirectory = data,
            DataPlaneUrl = "http://127.0.0.1:0",
            AdminUrl = "http://127.0.0.1:0",
            ConfigureLogging = _ => { },
        });
        Assert.Equal(["al-1"], (await restarted.Store.ListAlertsAsync(null, 10)).Select(a => a.Id));
        await restarted.DisposeAsync();
        SqliteConnection.ClearAllPools();

        // Verify names the row that does not read, and the alerts no alert.raised entry recorded (rows added beside the gateway).
        (exit, output, _) = await Cli.RunAsync("audit", "verify", "--data", data);
        SqliteConnection.ClearAllPools();
        Assert.Equal(1, exit);
        Assert.Contains("FAIL altered_alert: alert al-2's stored row does not read as an alert", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Init_MakesTheStoreAndTheCheckpointKeyOnce()
    {
        var data = Path.Combine(Path.GetTempPath(), "custos-init-" + Guid.NewGuid().ToString("N"));
        try
        {
            var (exit, output, _) = await Cli.RunAsync("init", "--data", data);
            Assert.Equal(0, exit);
            Assert.Contains("Initialised", output, StringComparison.Ordinal);
            Assert.True(File.Exists(Path.Combine(data, "custos.db")));
            var pem = File.ReadAllText(Path.Combine(data, "keys", "checkpoint.pub.pem"));
            Assert.StartsWith("-----BEGIN PUBLIC KEY-----", pem, StringComparison.Ordinal);

            (exit, output, _) = await Cli.RunAsync("init", "--data", data);
            Assert.Equal(0, exit);
            Assert.Contains("kept it", output, StringComparison.Ordinal);
            Assert.Equal(pem, File.ReadAllText(Path.Combine(data, "keys", "checkpoint.pub.pem")));

            // An empty ledger verifies (nothing to find), and says so.
            (exit, output, _) = await Cli.RunAsync("audit", "verify", "--data", data);
            Assert.Equal(0, exit);
            Assert.Contains("OK: 0 entries", output, StringComparison.Ordinal);
        }
        finally
        {
            SqliteConnection.ClearAllPools();
            Directory.Delete(data, recursive: true);
        }
    }

    [Theory]
    [InlineData("{}", "it lacks 'format', 'request_id', 'entry', 'inclusion', 'checkpoint', 'policy'")]
    [InlineData("[1]", "it is not a JSON object")]
    [InlineData("{\"format\":\n  tru}", "'}' cannot be there (line 2, byte 6)")]
    [InlineData("null", "it is null, not an object")]
    [InlineData("", "it is empty")]
    [InlineData("root:x:0:0:root:/root:/bin/bash", "'r' cannot be there (line 1, byte 1)")]
    public async Task VerifyBundle_OfAFileThatIsNoBundle_SaysWhatIsWrongInItsTerms(string content, string problem)
    {
        // Was the serializer's own words: "JSON deserialization for type 'Custos.Ledger.ProofBundle' was missing …", "Path: $ | LineNumber: 0".
        var file = Path.Combine(Path.GetTempPath(), "custos-bundle-" + Guid.NewGuid().ToString("N") + ".json");
        await File.WriteAllTextAsync(file, content);
        try
        {
            var (exit, _, error) = await Cli.RunAsync("audit", "verify-bundle", file, "--public-key", file);
            Assert.Equal(1, exit);
            Assert.Equal($"error: {Path.GetFileName(file)} is not a proof bundle: {problem}", error.Trim());
        }
        finally
        {
            File.Delete(file);
        }
    }
}
