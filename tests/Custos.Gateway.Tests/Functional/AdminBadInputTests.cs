using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Custos.Policy;
using Custos.Testing;

namespace Custos.Gateway.Tests.Functional;

/// <summary>
/// Admin requests that are wrong in shape. Query values that do not read as their type: each a 400
/// <c>admin.invalid_request</c> naming the parameter, with the request id; before, an empty 400 without either.
/// Bodies of admin changes that are wrong in shape: each a 400 <c>admin.invalid_request</c> with the request id, and no
/// new policy version. Before, five of them were 500s (a null where the code expects none, in a list or as the list), and
/// a member the body does not have was ignored: a budget change with "amount" instead of "budget" removed the budget.
/// </summary>
public sealed class AdminBadInputTests
{
    [Theory]
    [InlineData("/admin/v1/ledger?limit=99999999999", "limit")]
    [InlineData("/admin/v1/ledger?from=garbage", "from")]
    [InlineData("/admin/v1/alerts?limit=ten", "limit")]
    [InlineData("/admin/v1/ledger?limit=0", "'limit' must be a whole number of at least 1, not '0'.")]
    [InlineData("/admin/v1/notifications?limit=-1", "'limit' must be a whole number of at least 1, not '-1'.")]
    [InlineData("/admin/v1/spend?to=yesterday", "to")]
    [InlineData("/admin/v1/spend/lines?from=7d", "from")]
    [InlineData("/admin/v1/reports/incident?subject=consumer&id=web&from=last%20week", "from")]
    [InlineData("/admin/v1/policy/diff?to=1", "from")]
    public async Task AQueryValueThatDoesNotRead_Is400NamingIt(string path, string parameter)
    {
        await using var g = await ControlPlaneFixture.StartAsync();

        var detail = await ProblemAsync(g, "GET", path, HttpStatusCode.BadRequest, "admin.invalid_request");

        Assert.Contains(parameter, detail, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("/admin/v1/ledger?kind=weird", "'kind' must be one of request, admin, shed, any, not 'weird'.")]
    [InlineData("/admin/v1/ledger?kind=admin&decision=weird", "'decision' must be one of allow, deny, throttle, not 'weird'.")]
    [InlineData("/admin/v1/ledger?from=2026-11-30T10:00:00Z&to=2026-11-30T09:00:00Z", "'to' (2026-11-30T09:00:00")]
    [InlineData("/admin/v1/spend?from=2026-11-30T10:00:00Z&to=2026-11-30T09:00:00Z", "'to' (2026-11-30T09:00:00")]
    [InlineData("/admin/v1/spend?to=2000-01-01T00:00:00Z", "must be after 'from' (")]
    public async Task AQueryValueOutsideItsParameter_Is400NamingWhatItTakes_NotAnEmpty200(string path, string detail)
    {
        // Each of these matched nothing and answered 200 [] (or zeros), which reads as "nothing happened".
        await using var g = await ControlPlaneFixture.StartAsync();

        var problem = await ProblemAsync(g, "GET", path, HttpStatusCode.BadRequest, "admin.invalid_request");

        Assert.Contains(detail, problem, StringComparison.Ordinal);
        using var http = new HttpClient { BaseAddress = g.Gateway.AdminUri };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", ControlPlaneFixture.AdminKey(g, "root"));
        using var fine = await http.GetAsync("/admin/v1/ledger?kind=any&decision=deny&from=2026-11-30T09:00:00Z");
        Assert.Equal(HttpStatusCode.OK, fine.StatusCode);
    }

    [Theory]
    [InlineData("GET", "/admin/v1/nonexistent")]
    [InlineData("GET", "/admin/v1/policy/versions/latest")] // a version is a number
    [InlineData("DELETE", "/admin/v1/services")]
    public async Task ARouteTheAdminApiDoesNotHave_Is404WithCodeAndRequestId_NotAnEmptyAnswer(string method, string path)
    {
        await using var g = await ControlPlaneFixture.StartAsync();

        var detail = await ProblemAsync(g, method, path, HttpStatusCode.NotFound, "admin.not_found");

        Assert.Equal($"There is no admin API route {method} {path}; the routes are listed at /admin/v1/openapi.json.", detail);
    }

    [Theory]
    [InlineData("/admin/v1/credentials", "text/plain", true)]
    [InlineData("/admin/v1/credentials", null, true)]
    [InlineData("/admin/v1/credentials/cred_1/revoke", "application/x-www-form-urlencoded", true)]
    [InlineData("/admin/v1/nonexistent", "text/plain", false)]
    [InlineData("/admin/v1/access-requests/x/y/approve", "application/json", false)]
    public async Task AChangeSentWithoutJson_Is415SayingWhatToSend_NotNoSuchRoute(string path, string? contentType, bool routeExists)
    {
        await using var g = await ControlPlaneFixture.StartAsync();
        using var http = new HttpClient { BaseAddress = g.Gateway.AdminUri };
        using var request = new HttpRequestMessage(HttpMethod.Post, path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", ControlPlaneFixture.AdminKey(g, "root"));
        request.Content = new ByteArrayContent("""{"consumer":"web","reason":"r"}"""u8.ToArray());
        if (contentType is not null)
        {
            request.Content.Headers.ContentType = new MediaTypeHeaderValue(contentType);
        }

        using var response = await http.SendAsync(request);

        using var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal(TestGateway.RequestIdOf(response), problem.RootElement.GetProperty("request_id").GetString());
        if (routeExists)
        {
            Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
            Assert.Equal("admin.unsupported_media_type", problem.RootElement.GetProperty("code").GetString());
            Assert.Equal($"POST {path} takes a JSON body: send 'Content-Type: application/json'.", problem.RootElement.GetProperty("detail").GetString());
        }
        else
        {
            Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
            Assert.Equal("admin.not_found", problem.RootElement.GetProperty("code").GetString());
        }
    }

    [Fact]
    public async Task ALedgerRowAlteredBehindTheGateway_IsAnsweredAsStoreDamaged_NotTakenForWhatItsColumnsSay()
    {
        await using var g = await ControlPlaneFixture.StartAsync();
        using (var served = await g.Client.SendAsync(g.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}""")))
        {
            Assert.Equal(HttpStatusCode.OK, served.StatusCode); // released only once its ledger entry is committed
        }

        await using (var db = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={Path.Combine(g.DataDirectory, "custos.db")};Pooling=false"))
        {
            await db.OpenAsync();
            await using var command = db.CreateCommand();
            command.CommandText = "DROP TRIGGER ledger_no_update; UPDATE ledger SET tenant = 'globex' WHERE kind = 'request';";
            Assert.Equal(1, await command.ExecuteNonQueryAsync());
        }

        var detail = await ProblemAsync(g, "GET", "/admin/v1/ledger?tenant=globex", HttpStatusCode.InternalServerError, "admin.store_damaged");

        Assert.Contains("was selected by its tenant column, but the entry says 'acme'", detail, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("POST", "/admin/v1/policy/versions", """{"reason":"no yaml"}""", "yaml")]
    [InlineData("POST", "/admin/v1/access-requests", """{"consumer":"web","models":null,"justification":"x"}""", "models")]
    [InlineData("POST", "/admin/v1/access-requests", """{"consumer":"web","models":[null],"justification":"x"}""", "models")]
    [InlineData("POST", "/admin/v1/access-requests", """{"consumer":"web","models":["gpt-4o"],"justification":"x","valid_until":"2001-01-01T00:00:00Z"}""", "valid_until")]
    [InlineData("PUT", "/admin/v1/services/support/owners", """{"owners":null,"reason":"x"}""", "owners")]
    [InlineData("PUT", "/admin/v1/services/support/prompt-rules", """{"prompt_rules":null,"reason":"x"}""", "prompt_rules")]
    [InlineData("PUT", "/admin/v1/services/support/prompt-rules", """{"prompt_rules":[null],"reason":"x"}""", "prompt_rules")]
    [InlineData("PUT", "/admin/v1/services/support/models", """{"models":[null],"reason":"x"}""", "models")]
    [InlineData("POST", "/admin/v1/kill-switches", """{"scope":"consumer","id":"web","engaged":null,"reason":"x"}""", "engaged")]
    [InlineData("PUT", "/admin/v1/budgets", """{"scope":"service","id":"support","amount":5,"reason":"typo for budget"}""", "amount")]
    [InlineData("PUT", "/admin/v1/store/record-format", """{"format":"lz4","reason":"x"}""", "format")]
    [InlineData("PUT", "/admin/v1/store/record-format", """{"format":"zstd","reason":" "}""", "reason")]
    [InlineData("POST", "/admin/v1/kill-switches", """{"scope":"consumer","id":"web","engaged":true,"reason":"x","reason":"y"}""", "reason")]
    [InlineData("POST", "/admin/v1/kill-switches", """{"scope":"consumer","id":"web","engaged":true,"reason":"leaked: sk-proj-abcdefghijklmnopqrstuvwx"}""", "reason")]
    [InlineData("POST", "/admin/v1/access-requests", """{"consumer":"web","models":["gpt-4o"],"justification":"test with AKIAIOSFODNN7EXAMPLE"}""", "justification")]
    public async Task AMalformedChange_Is400NamingTheField_AndChangesNothing(string method, string path, string body, string field)
    {
        await using var g = await ControlPlaneFixture.StartAsync();
        var before = g.Gateway.Policy.Current.Info.Number;

        var detail = await ProblemAsync(g, method, path, HttpStatusCode.BadRequest, "admin.invalid_request", body);

        Assert.Contains($"'{field}'", detail, StringComparison.Ordinal);
        Assert.Equal(before, g.Gateway.Policy.Current.Info.Number);
    }

    [Theory]
    [InlineData("PUT", "/admin/v1/budgets", """{"scope":"service","id":"support","budget":{"amount":0,"period":"month"},"reason":"x"}""", "budget",
        "'budget': must be a positive amount (the policy's services[0].limits.budget.amount)")]
    [InlineData("PUT", "/admin/v1/services/support/owners/policy", """{"owner":{"name":"G","email":"g@globex.test","admin":"globex-owner"},"reason":"x"}""", "owner",
        "'owner': admin 'globex-owner' is scoped to tenant globex, which does not cover service 'support' of tenant 'acme'")]
    [InlineData("PUT", "/admin/v1/services/support/models", """{"models":["no-such-model"],"reason":"x"}""", "models", "'models': ")]
    public async Task AChangeThroughAFieldsEndpoint_ThatWouldMakeThePolicyInvalid_Is422NamingTheField_NotALineOfYamlNeverSent(string method, string path,
        string body, string param, string expected)
    {
        await using var g = await ControlPlaneFixture.StartAsync();
        var before = g.Gateway.Policy.Current.Info.Number;
        using var http = new HttpClient { BaseAddress = g.Gateway.AdminUri };
        using var request = new HttpRequestMessage(new HttpMethod(method), path) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", ControlPlaneFixture.AdminKey(g, "root"));

        using var response = await http.SendAsync(request);

        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.UnprocessableEntity, $"{(int)response.StatusCode}: {text}");
        using var problem = JsonDocument.Parse(text);
        Assert.Equal("admin.invalid_policy", problem.RootElement.GetProperty("code").GetString());
        Assert.Equal(param, problem.RootElement.GetProperty("param").GetString());
        var detail = problem.RootElement.GetProperty("detail").GetString()!;
        Assert.StartsWith(expected, detail, StringComparison.Ordinal);
        Assert.DoesNotMatch(@"policy:\d+:\d+", detail);
        Assert.Equal(before, g.Gateway.Policy.Current.Info.Number);
    }

    [Theory]
    [InlineData("""{"scope":"service","id":"support","budget":{"amount":5,"period":"weekly"},"reason":"x"}""",
        "The request body is not valid: 'weekly' is not a valid period ('budget.period'); expected one of: day, month.")]
    [InlineData("""{"scope":"service","id":"support","budget":{"amount":5,"mode":"Strict"},"reason":"x"}""",
        "The request body is not valid: 'Strict' is not a valid mode ('budget.mode'); expected one of: hard, soft.")]
    [InlineData("""{"scope":"service","id":"support","budget":{"amount":5,"period":1},"reason":"x"}""",
        "The request body is not valid: a value that is no string is not a valid period ('budget.period'); expected one of: day, month.")]
    public async Task AnEnumValueItDoesNotTake_IsAnsweredWithTheValuesItTakes(string body, string detail)
    {
        await using var g = await ControlPlaneFixture.StartAsync();

        Assert.Equal(detail, await ProblemAsync(g, "PUT", "/admin/v1/budgets", HttpStatusCode.BadRequest, "admin.invalid_request", body));
    }

    [Fact]
    public async Task ARefusedAdminRequest_IsOnRecord_ByItsActor_WithTheCodeAndRequestId()
    {
        // A change refused for what it asked (a bad body, a missing resource) was answered and left no trace in the ledger.
        await using var g = await ControlPlaneFixture.StartAsync();
        const string Secret = "sk-proj-abcdefghijklmnopqrstuvwx0123456789";
        var versions = g.Gateway.Policy.Current.Version;

        var badEnum = await ProblemAsync(g, "PUT", "/admin/v1/budgets", HttpStatusCode.BadRequest, "admin.invalid_request",
            """{"scope":"service","id":"support","budget":{"amount":5,"period":"weekly"},"reason":"x"}""");
        await ProblemAsync(g, "POST", "/admin/v1/credentials/no-such-credential/suspend", HttpStatusCode.NotFound, "admin.not_found",
            $$"""{"reason":"leaked: {{Secret}}"}""");
        await g.Gateway.Ledger.FlushAsync();

        var refused = (await ControlPlaneFixture.AdminEntriesAsync(g)).Where(e => e.GetProperty("action").GetString() == "admin.request_refused").ToList();
        Assert.Equal(2, refused.Count);
        Assert.All(refused, e => Assert.Equal("root", e.GetProperty("actor").GetString()));
        Assert.Equal(("PUT /admin/v1/budgets", "admin.invalid_request"), (refused[0].GetProperty("target").GetString(), refused[0].GetProperty("after").GetString()));
        Assert.StartsWith(badEnum + " (request req_", refused[0].GetProperty("reason").GetString(), StringComparison.Ordinal);
        Assert.Equal(("POST /admin/v1/credentials/no-such-credential/suspend", "admin.not_found"),
            (refused[1].GetProperty("target").GetString(), refused[1].GetProperty("after").GetString()));
        Assert.DoesNotContain(Secret, string.Join("\n", refused.Select(e => e.GetRawText())), StringComparison.Ordinal);
        Assert.Equal(versions, g.Gateway.Policy.Current.Version); // recorded, and nothing changed
    }

    [Fact]
    public async Task ARefusedAdminRequest_AboutATenantsCredential_IsSeenByThatTenantsAdmins()
    {
        // Recorded without a tenant, a refusal about globex's credential was seen by gateway-wide admins only.
        await using var g = await ControlPlaneFixture.StartAsync();
        await ProblemAsync(g, "POST", "/admin/v1/credentials/cred-globex/resume", HttpStatusCode.Conflict, "admin.conflict", """{"reason":"resume it"}""");
        await ProblemAsync(g, "POST", "/admin/v1/credentials/cred-web/resume", HttpStatusCode.Conflict, "admin.conflict", """{"reason":"resume it"}""");
        await g.Gateway.Ledger.FlushAsync();

        var refused = (await ControlPlaneFixture.AdminEntriesAsync(g)).Where(e => e.GetProperty("action").GetString() == "admin.request_refused").ToList();
        Assert.Equal(["globex", "acme"], refused.Select(e => e.GetProperty("tenant").GetString()));

        var seen = await ControlPlaneFixture.JsonAsync(await ControlPlaneFixture.AdminAsync(g, "globex-owner", HttpMethod.Get, "/admin/v1/ledger?kind=admin"));
        var targets = seen.EnumerateArray().Where(e => e.GetProperty("action").GetString() == "admin.request_refused").Select(e => e.GetProperty("target").GetString());
        Assert.Equal(["POST /admin/v1/credentials/cred-globex/resume"], targets);
    }

    [Fact]
    public async Task AnEnumValue_IsReadCaseInsensitively_AsBefore()
    {
        await using var g = await ControlPlaneFixture.StartAsync();
        using var http = new HttpClient { BaseAddress = g.Gateway.AdminUri };
        using var request = new HttpRequestMessage(HttpMethod.Put, "/admin/v1/budgets")
        {
            Content = new StringContent("""{"scope":"service","id":"support","budget":{"amount":5,"period":"Day","mode":"soft"},"reason":"x"}""", Encoding.UTF8, "application/json"),
        };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", ControlPlaneFixture.AdminKey(g, "root"));

        using var response = await http.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(BudgetPeriod.Day, g.Gateway.Policy.Current.Document.Services.Single(s => s.Id == "support").Limits.Budget!.Period);
    }

    [Theory]
    [InlineData("""{"consumer":"web"}""", "The request body is not valid: it lacks 'reason'.")]
    [InlineData("""{}""", "The request body is not valid: it lacks 'consumer', 'reason'.")]
    [InlineData("""{"consumer":"web","reason":"x","expires":"2030-01-01T00:00:00Z"}""", "The request body is not valid: it takes no field 'expires'.")]
    [InlineData("""{"consumer":"web","reason":"x","expires_at":"soon"}""", "The request body is not valid: 'expires_at' has a value of the wrong type or null.")]
    [InlineData("""{"consumer":null,"reason":"x"}""", "The request body is not valid: 'consumer' has a value of the wrong type or null.")]
    [InlineData("""[1]""", "The request body is not valid: it is not a JSON object.")]
    [InlineData("", "The request body is not valid: it is empty; send a JSON object.")]
    [InlineData("{\n\"consumer\": web}", "The request body is not valid: 'w' cannot be there (line 2, byte 13).")]
    [InlineData("""{"consumer":nul}""", "The request body is not valid: '}' cannot be there (line 1, byte 16).")] // not JSON, though the reader's words name null
    public async Task AMalformedBody_IsDescribedByItsJsonFields_NeverByDotNetTypes(string body, string detail)
    {
        await using var g = await ControlPlaneFixture.StartAsync();

        var answered = await ProblemAsync(g, "POST", "/admin/v1/credentials", HttpStatusCode.BadRequest, "admin.invalid_request", body);

        Assert.Equal(detail, answered);
        Assert.DoesNotContain("Custos.", answered, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ASharedStore_WithoutCustosWebhookSecret_WarnsThatEachNodeSignsWithItsOwn()
    {
        // Two nodes on one PostgreSQL each signed the shared outbox's webhooks with their own folder's secret, and a receiver
        // holding one rejected every other message of the other node, silently from the gateway's side.
        var folder = Path.Combine(Path.GetTempPath(), "custos-test-" + Guid.NewGuid().ToString("N"));
        var store = await Custos.Storage.SqliteStore.OpenAsync(folder);
        await using (var g = await TestGateway.StartAsync(ControlPlaneFixture.Customize, options: o => o with { Store = store }))
        {
            Assert.Contains(g.Logs.Lines, l => l.Contains("CustosGateway[23]", StringComparison.Ordinal) && l.Contains("CUSTOS_WEBHOOK_SECRET", StringComparison.Ordinal));
        }

        var shared = await Custos.Storage.SqliteStore.OpenAsync(folder + "-configured");
        await using (var g = await TestGateway.StartAsync(ControlPlaneFixture.Customize, options: o => o with
        {
            Store = shared,
            Secrets = name => name == "CUSTOS_WEBHOOK_SECRET" ? "whsec_one-secret-for-every-node" : o.Secrets(name),
        }))
        {
            Assert.DoesNotContain(g.Logs.Lines, l => l.Contains("CustosGateway[23]", StringComparison.Ordinal));
        }

        await using (var g = await TestGateway.StartAsync(ControlPlaneFixture.Customize))
        {
            Assert.DoesNotContain(g.Logs.Lines, l => l.Contains("CustosGateway[23]", StringComparison.Ordinal)); // the embedded store: one node
        }
    }

    [Fact]
    public async Task TheNotificationOutbox_OutOfReach_IsLoggedOnceAndItsEndOnce_NotEverySecondWithAStackTrace()
    {
        var folder = Path.Combine(Path.GetTempPath(), "custos-test-" + Guid.NewGuid().ToString("N"));
        var (store, control) = OutOfReachStore.Wrap(await Custos.Storage.SqliteStore.OpenAsync(folder));
        try
        {
            await using var g = await TestGateway.StartAsync(ControlPlaneFixture.Customize, options: o => o with { Store = store });
            int Lines(int eventId) => g.Logs.Lines.Count(l => l.Contains($"OwnerNotifier[{eventId}]", StringComparison.Ordinal));

            control.Method = nameof(Custos.ControlPlane.IRegistryStore.DueNotificationsAsync);
            control.Failure = new TransientDbException("Failed to connect to 127.0.0.1:5432", new System.Net.Sockets.SocketException((int)System.Net.Sockets.SocketError.ConnectionRefused));
            await Task.Delay(3500); // three or four reads of the outbox, each failing

            Assert.Equal((1, 0), (Lines(42), Lines(41)));
            Assert.DoesNotContain(g.Logs.Lines, l => l.Contains("OwnerNotifier[42]", StringComparison.Ordinal) && l.Contains("   at ", StringComparison.Ordinal));

            control.Failure = null;
            await Eventually.TrueAsync(() => Lines(43) == 1, "the outbox's return logged");
            Assert.Equal(1, Lines(42));
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            Directory.Delete(folder, recursive: true);
        }
    }

    [Theory]
    [InlineData("postgres-stopped")]
    [InlineData("sqlite-busy")]
    public async Task AChangeWhileTheStoreIsOutOfReach_Is503StoreUnavailable_WithRetryAfter_NotAnEmpty500(string outage)
    {
        var folder = Path.Combine(Path.GetTempPath(), "custos-test-" + Guid.NewGuid().ToString("N"));
        var (store, control) = OutOfReachStore.Wrap(await Custos.Storage.SqliteStore.OpenAsync(folder));
        try
        {
            await using var g = await TestGateway.StartAsync(ControlPlaneFixture.Customize, options: o => o with { Store = store });
            using var http = new HttpClient { BaseAddress = g.Gateway.AdminUri };
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", ControlPlaneFixture.AdminKey(g, "root"));
            async Task<HttpResponseMessage> SuspendAsync()
            {
                var response = await http.PostAsync("/admin/v1/credentials/cred-web/suspend",
                    new StringContent("""{"reason":"drill"}""", Encoding.UTF8, "application/json"));
                await response.Content.LoadIntoBufferAsync();
                return response;
            }

            control.Failure = outage == "postgres-stopped"
                ? new TransientDbException("Failed to connect to 127.0.0.1:5432", new System.Net.Sockets.SocketException((int)System.Net.Sockets.SocketError.ConnectionRefused))
                : new Microsoft.Data.Sqlite.SqliteException("SQLite Error 5: 'database is locked'.", 5);
            using var refused = await SuspendAsync();

            var text = await refused.Content.ReadAsStringAsync();
            Assert.True(refused.StatusCode == HttpStatusCode.ServiceUnavailable, $"{(int)refused.StatusCode}: {text}");
            using var problem = JsonDocument.Parse(text);
            Assert.Equal("admin.store_unavailable", problem.RootElement.GetProperty("code").GetString());
            Assert.Equal(TestGateway.RequestIdOf(refused), problem.RootElement.GetProperty("request_id").GetString());
            Assert.Equal("5", refused.Headers.GetValues("Retry-After").Single());

            // A failure that is not the store out of reach is not answered as one; and once the store is back, the change is made.
            control.Failure = new InvalidOperationException("a bug");
            using (var bug = await SuspendAsync())
            {
                Assert.Equal(HttpStatusCode.InternalServerError, bug.StatusCode);
            }

            control.Failure = null;
            using var done = await SuspendAsync();
            Assert.Equal(HttpStatusCode.OK, done.StatusCode);
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Fact]
    public async Task AKeyOfTheWrongKindOrMistyped_IsToldWhatIsWrongWithIt()
    {
        await using var g = await ControlPlaneFixture.StartAsync();
        using var http = new HttpClient { BaseAddress = g.Gateway.AdminUri };
        async Task<string> DetailAsync(string key)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "/admin/v1/whoami");
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
            using var response = await http.SendAsync(request);
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
            using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
            Assert.Equal("admin.unauthenticated", json.RootElement.GetProperty("code").GetString());
            return json.RootElement.GetProperty("detail").GetString()!;
        }

        Assert.Equal("A consumer key (csk_…) calls models on the data plane; the admin API takes an admin key (cak_…).", await DetailAsync(g.KeyOf("web")));
        var typo = ControlPlaneFixture.AdminKey(g, "root").ToCharArray();
        typo[10] = typo[10] == 'a' ? 'b' : 'a';
        Assert.Equal("The key's checksum does not match: it was mistyped or truncated.", await DetailAsync(new string(typo)));
        Assert.StartsWith("Send an admin key as 'Authorization: Bearer cak_…'", await DetailAsync("sk-proj-not-ours"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task AReasonTheLedgerWouldKeepBadly_IsRefused_AndALineBreakIsKept()
    {
        // The ledger is append-only: a 5 MB reason piped in by mistake, or an escape sequence that restyles an auditor's
        // terminal, would be there for good.
        await using var g = await ControlPlaneFixture.StartAsync();
        var before = g.Gateway.Policy.Current.Info.Number;
        var tooLong = JsonSerializer.Serialize(new { consumer = "web", reason = new string('x', 2001) });
        var escape = JsonSerializer.Serialize(new { consumer = "web", reason = "rotation \u001b[8mhidden" });

        Assert.Equal("'reason' is 2,001 characters; the ledger keeps it for good, so at most 2,000: summarise it, and link to the ticket.",
            await ProblemAsync(g, "POST", "/admin/v1/credentials", HttpStatusCode.BadRequest, "admin.invalid_request", tooLong));
        Assert.Equal("'reason' holds a control character (U+001B) at character 10; send text without them (line breaks and tabs are kept).",
            await ProblemAsync(g, "POST", "/admin/v1/credentials", HttpStatusCode.BadRequest, "admin.invalid_request", escape));
        Assert.Equal(before, g.Gateway.Policy.Current.Info.Number);

        var kept = JsonSerializer.Serialize(new { consumer = "web", reason = "rotation\nticket SEC-42\t(urgent)" + new string('x', 1960) });
        using var http = new HttpClient { BaseAddress = g.Gateway.AdminUri };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", ControlPlaneFixture.AdminKey(g, "root"));
        using var issued = await http.PostAsync("/admin/v1/credentials", new StringContent(kept, Encoding.UTF8, "application/json"));
        Assert.True(issued.IsSuccessStatusCode, await issued.Content.ReadAsStringAsync());
    }

    [Theory]
    [InlineData("key-in-webhook", "webhook", "holds what looks like a key or token")]
    [InlineData("key-as-name", "name", "holds what looks like a key or token")]
    [InlineData("key-in-email", "email", "holds what looks like a key or token")]
    [InlineData("escape-in-name", "name", "holds a control character (U+001B)")]
    [InlineData("long-name", "name", "is 100,000 characters")]
    public async Task AnOwnerFieldTheLedgerWouldKeepBadly_IsRefusedLikeAReason_OnEveryWayOfNamingOwners(string kind, string field, string problem)
    {
        // Owners' names and contacts go into the ledger (service.owners_set before and after), the outbox and log lines.
        await using var g = await ControlPlaneFixture.StartAsync();
        var before = g.Gateway.Policy.Current.Info.Number;
        var key = g.KeyOf("web");
        var (name, email, webhook) = kind switch
        {
            "key-in-webhook" => ("Tech", "tech@example.test", "https://h.example/?token=" + key),
            "key-as-name" => (key, "tech@example.test", "https://h.example/hook"),
            "key-in-email" => ("Tech", key + "@example.test", "https://h.example/hook"),
            "escape-in-name" => ("Tech \\u001b[8m", "tech@example.test", "https://h.example/hook"),
            _ => (new string('n', 100_000), "tech@example.test", "https://h.example/hook"),
        };
        var owner = $$"""{"name":"{{name}}","email":"{{email}}","webhook":"{{webhook}}"}""";
        var others = """ "policy":{"name":"Lead","email":"lead@example.test"},"billing":{"name":"Fin","email":"fin@example.test"} """;

        var one = await ProblemAsync(g, "PUT", "/admin/v1/services/support/owners/technical", HttpStatusCode.BadRequest, "admin.invalid_request",
            $$"""{"owner":{{owner}},"reason":"x"}""");
        var all = await ProblemAsync(g, "PUT", "/admin/v1/services/support/owners", HttpStatusCode.BadRequest, "admin.invalid_request",
            $$"""{"owners":{{{others}},"technical":{{owner}}},"reason":"x"}""");
        var policy = await ControlPlaneFixture.JsonAsync(await ControlPlaneFixture.AdminAsync(g, "root", HttpMethod.Get, "/admin/v1/policy"));
        var yaml = policy.GetProperty("yaml").GetString()!;
        Assert.Contains(ControlPlaneFixture.TechnicalWebhook, yaml, StringComparison.Ordinal);
        var edited = kind == "key-in-webhook" ? yaml.Replace(ControlPlaneFixture.TechnicalWebhook, webhook, StringComparison.Ordinal)
            : kind == "key-as-name" ? yaml.Replace("support on-call", key, StringComparison.Ordinal)
            : kind == "key-in-email" ? yaml.Replace("support-oncall@example.test", email, StringComparison.Ordinal)
            : null;

        Assert.StartsWith($"'owner.{field}' {problem}", one, StringComparison.Ordinal);
        Assert.StartsWith($"'owners.technical.{field}' {problem}", all, StringComparison.Ordinal);
        if (edited is not null)
        {
            Assert.NotEqual(yaml, edited);
            var whole = await ProblemAsync(g, "POST", "/admin/v1/policy/versions", HttpStatusCode.BadRequest, "admin.invalid_request",
                JsonSerializer.Serialize(new { yaml = edited, reason = "x" }));
            Assert.StartsWith($"'services[support].owners.technical.{field}' {problem}", whole, StringComparison.Ordinal);
        }

        Assert.Equal(before, g.Gateway.Policy.Current.Info.Number);
    }

    [Fact]
    public async Task TheEmbeddedStoresRecordFormat_IsShownAsFixed_AndASwitchIs409_OnRecordAsNothingChanged()
    {
        await using var g = await ControlPlaneFixture.StartAsync();
        using var http = new HttpClient { BaseAddress = g.Gateway.AdminUri };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", ControlPlaneFixture.AdminKey(g, "root"));
        using (var store = JsonDocument.Parse(await http.GetStringAsync("/admin/v1/store")))
        {
            Assert.Equal(("zstd", false), (store.RootElement.GetProperty("record_format").GetString(), store.RootElement.GetProperty("record_format_switchable").GetBoolean()));
            Assert.EndsWith("custos.db", store.RootElement.GetProperty("description").GetString(), StringComparison.Ordinal);
        }

        var detail = await ProblemAsync(g, "PUT", "/admin/v1/store/record-format", HttpStatusCode.Conflict, "admin.record_format_fixed", """{"format":"json","reason":"x"}""");

        Assert.EndsWith("always stores ledger records compressed; the setting is the PostgreSQL store's.", detail, StringComparison.Ordinal);
    }

    /// <summary>
    /// Sends <paramref name="method"/> <paramref name="path"/> (with <paramref name="body"/> as JSON) as the root admin, checks the answer is
    /// a problem with <paramref name="status"/>, <paramref name="code"/> and the request id of its header, and returns its detail.
    /// </summary>
    private static async Task<string> ProblemAsync(TestGateway g, string method, string path, HttpStatusCode status, string code, string? body = null)
    {
        using var http = new HttpClient { BaseAddress = g.Gateway.AdminUri };
        using var request = new HttpRequestMessage(new HttpMethod(method), path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", ControlPlaneFixture.AdminKey(g, "root"));
        if (body is not null)
        {
            request.Content = new StringContent(body, Encoding.UTF8, "application/json");
        }

        using var response = await http.SendAsync(request);

        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == status && text.Length > 0, $"{(int)response.StatusCode}: {text}");
        using var problem = JsonDocument.Parse(text);
        Assert.Equal(code, problem.RootElement.GetProperty("code").GetString());
        Assert.Equal(TestGateway.RequestIdOf(response), problem.RootElement.GetProperty("request_id").GetString());
        return problem.RootElement.GetProperty("detail").GetString()!;
    }
}
