using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using Custos.Controls;
using Custos.Errors;
using Custos.Ledger;
using Custos.Metering;
using Custos.Policy;

namespace Custos.Gateway.Tests.Functional;

/// <summary>The controls of the policy, enforced by the running gateway before any provider is called.</summary>
public sealed class PolicyControlTests
{
    private static PolicyDocument WithConsumer(PolicyDocument policy, string id, Func<ConsumerConfig, ConsumerConfig> change)
        => policy with { Consumers = [.. policy.Consumers.Select(c => c.Id == id ? change(c) : c)] };

    private static string Chat(string model = "gpt-4o-mini", string content = "hi", int? maxTokens = null)
        => maxTokens is null
            ? $$"""{"model":"{{model}}","messages":[{"role":"user","content":{{JsonSerializer.Serialize(content)}}}]}"""
            : $$"""{"model":"{{model}}","max_tokens":{{maxTokens}},"messages":[{"role":"user","content":{{JsonSerializer.Serialize(content)}}}]}""";

    /// <summary>A gateway whose consumer <c>web</c> may ask for at most <paramref name="tokens"/> output tokens (clamped).</summary>
    private static Task<TestGateway> StartWithOutputCeilingAsync(long tokens)
        => TestGateway.StartAsync(p => WithConsumer(p, "web", c => c with { Limits = new LimitsConfig { MaxOutputTokens = tokens } }));

    private static decimal Cost(JsonElement entry) => decimal.Parse(entry.GetProperty("cost").GetString()!, CultureInfo.InvariantCulture);

    [Fact]
    public async Task BudgetRace_200ConcurrentRequests_OverspendBoundedByOneEstimationError_NoneDeniedThatFit()
    {
        // gpt-4o-mini in the test policy: 1 per million input tokens, 2 per million output tokens.
        const decimal budget = 0.002m;
        await using var g = await TestGateway.StartAsync(p => WithConsumer(p, "web", c => c with
        {
            Limits = new LimitsConfig { Budget = new BudgetConfig { Amount = budget, Period = BudgetPeriod.Month } },
        }));

        var ids = await Task.WhenAll(Enumerable.Range(0, 200).Select(async i =>
        {
            using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat(content: $"question number {i}", maxTokens: 40)));
            await response.Content.ReadAsStringAsync();
            return TestGateway.RequestIdOf(response);
        }));

        await g.WaitForRecordsAsync(201);
        var entries = (await g.LedgerAsync()).Where(e => ids.Contains(e.GetProperty("request_id").GetString())).ToList();
        Assert.Equal(200, entries.Count);
        var allowed = entries.Where(e => e.GetProperty("decision").GetString() == "allow").ToList();
        var denied = entries.Where(e => e.GetProperty("decision").GetString() == "deny").ToList();
        Assert.NotEmpty(allowed);
        Assert.NotEmpty(denied);
        Assert.All(denied, e => Assert.Equal(["deny.budget_exhausted"], e.GetProperty("reasons").EnumerateArray().Select(r => r.GetString())));

        JsonElement BudgetControl(JsonElement e) => e.GetProperty("controls").EnumerateArray().Single(c => c.GetProperty("control").GetString() == "budget");
        var spent = allowed.Sum(Cost);
        var worstError = allowed.Max(e => Math.Abs(Cost(e) - BudgetControl(e).GetProperty("requested").GetDecimal()));
        Assert.True(spent <= budget + worstError, $"spent {spent} of {budget}, worst estimation error {worstError}");

        // Each refusal was right when it was made: spent + reserved + this request's worst case passed the budget.
        foreach (var e in denied)
        {
            var c = BudgetControl(e);
            Assert.True(c.GetProperty("used").GetDecimal() + c.GetProperty("reserved").GetDecimal() + c.GetProperty("requested").GetDecimal() > budget);
        }

        // And at least as many were allowed as the worst case guarantees.
        var worstCase = allowed.Max(e => BudgetControl(e).GetProperty("requested").GetDecimal());
        Assert.True(allowed.Count >= (int)Math.Floor(budget / worstCase), $"{allowed.Count} allowed");
        Assert.Equal(allowed.Count, g.Upstream.Received.Count(r => r.Path == "/v1/chat/completions"));
    }

    [Fact]
    public async Task RateLimit_429WithRetryAfter_AndTheLedgerShowsTheReading()
    {
        await using var g = await TestGateway.StartAsync(p => WithConsumer(p, "web", c => c with { Limits = new LimitsConfig { RequestsPerMinute = 2 } }));

        var statuses = new List<HttpStatusCode>();
        HttpResponseMessage? last = null;
        for (var i = 0; i < 3; i++)
        {
            last?.Dispose();
            last = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat()));
            statuses.Add(last.StatusCode);
        }

        Assert.Equal([HttpStatusCode.OK, HttpStatusCode.OK, HttpStatusCode.TooManyRequests], statuses);
        Assert.NotNull(last!.Headers.RetryAfter?.Delta);
        var entry = await g.EntryAsync(TestGateway.RequestIdOf(last));
        Assert.Equal("throttle", entry.GetProperty("decision").GetString());
        var reading = entry.GetProperty("controls").EnumerateArray().Single(c => c.GetProperty("control").GetString() == "rate_limit.requests");
        Assert.Equal(("throttle", 2m, 2m), (reading.GetProperty("decision").GetString(), reading.GetProperty("limit").GetDecimal(), reading.GetProperty("used").GetDecimal()));
        last.Dispose();
    }

    /// <summary>
    /// A request the gateway admitted counts against the rate limit whatever the provider did, so its 502 or 504 tells the
    /// client what is left as a 200 would (the forwarder clears the response's headers when the provider fails; the gateway
    /// writes them again).
    /// </summary>
    [Theory]
    [InlineData("offline-model", HttpStatusCode.BadGateway)] // unreachable
    [InlineData("mock-error-500", HttpStatusCode.BadGateway)]
    [InlineData("mock-slow", HttpStatusCode.GatewayTimeout)]
    public async Task RateLimits_AreAnsweredOnTheProvidersFailures_Too(string model, HttpStatusCode status)
    {
        await using var g = await TestGateway.StartAsync(p => WithConsumer(p, "web", c => c with
        {
            Limits = new LimitsConfig { RequestsPerMinute = 5, TokensPerMinute = 100_000 },
        }));

        using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions",
            $$"""{"model":"{{model}}","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"""));

        Assert.Equal(status, response.StatusCode);
        Assert.Equal(["4"], response.Headers.GetValues("x-ratelimit-remaining-requests"));
        Assert.Equal(["5"], response.Headers.GetValues("x-ratelimit-limit-requests"));
        Assert.True(response.Headers.Contains("x-ratelimit-remaining-tokens"));
    }

    [Fact]
    public async Task RateLimits_AreAnsweredInOpenAIsHeaders_WithWhatIsLeft_AndA429CarriesRetryAfter()
    {
        await using var g = await TestGateway.StartAsync(p => WithConsumer(p, "web", c => c with
        {
            Limits = new LimitsConfig { RequestsPerMinute = 2, TokensPerMinute = 100_000 },
        }));

        using var first = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat(maxTokens: 10)));
        using var second = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat(maxTokens: 10)));
        using var third = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat(maxTokens: 10)));

        static string Header(HttpResponseMessage response, string name) => Assert.Single(response.Headers.GetValues(name));
        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        Assert.Equal(("2", "1"), (Header(first, "x-ratelimit-limit-requests"), Header(first, "x-ratelimit-remaining-requests")));
        Assert.Equal(("2", "0"), (Header(second, "x-ratelimit-limit-requests"), Header(second, "x-ratelimit-remaining-requests")));
        Assert.Equal(HttpStatusCode.TooManyRequests, third.StatusCode);
        Assert.Equal(("2", "0"), (Header(third, "x-ratelimit-limit-requests"), Header(third, "x-ratelimit-remaining-requests")));
        Assert.NotNull(third.Headers.RetryAfter?.Delta);
        var reset = Header(third, "x-ratelimit-reset-requests");
        Assert.Matches("^[0-9]+s$", reset);
        Assert.InRange(int.Parse(reset[..^1], CultureInfo.InvariantCulture), 0, 60);
        Assert.Equal("100000", Header(first, "x-ratelimit-limit-tokens"));
        var tokensLeft = long.Parse(Header(first, "x-ratelimit-remaining-tokens"), CultureInfo.InvariantCulture);
        Assert.InRange(tokensLeft, 100_000 - 100, 100_000 - 10); // the worst case reserved: the prompt and 10 output tokens
        Assert.Matches("^[0-9]+s$", Header(first, "x-ratelimit-reset-tokens"));
        Assert.False(first.Headers.Contains("anthropic-ratelimit-requests-limit"));
    }

    [Fact]
    public async Task RateLimits_OnTheAnthropicPath_AreAnsweredInAnthropicsHeaders()
    {
        await using var g = await TestGateway.StartAsync(p => WithConsumer(p, "web", c => c with { Limits = new LimitsConfig { RequestsPerMinute = 5 } }));

        using var response = await g.Client.SendAsync(g.Post("/v1/messages",
            """{"model":"claude-sonnet","max_tokens":10,"messages":[{"role":"user","content":"x"}]}""", anthropicHeader: true));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("5", Assert.Single(response.Headers.GetValues("anthropic-ratelimit-requests-limit")));
        Assert.Equal("4", Assert.Single(response.Headers.GetValues("anthropic-ratelimit-requests-remaining")));
        var reset = DateTimeOffset.Parse(Assert.Single(response.Headers.GetValues("anthropic-ratelimit-requests-reset")), CultureInfo.InvariantCulture);
        Assert.InRange(reset, DateTimeOffset.UtcNow.AddSeconds(-1), DateTimeOffset.UtcNow.AddSeconds(61));
        Assert.False(response.Headers.Contains("x-ratelimit-limit-requests"));
        Assert.False(response.Headers.Contains("anthropic-ratelimit-tokens-limit")); // no token rate limit in force
    }

    [Fact]
    public async Task NoRateLimit_NoRateLimitHeaders()
    {
        await using var g = await TestGateway.StartAsync();

        using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat()));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.DoesNotContain(response.Headers, h => h.Key.Contains("ratelimit", StringComparison.OrdinalIgnoreCase));
    }

    [Fact]
    public async Task OutputCeiling_ClampsWhatReachesTheProvider_AndRecordsIt()
    {
        await using var g = await StartWithOutputCeilingAsync(64);

        using var clamped = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat(maxTokens: 4096)));
        var sentClamped = JsonDocument.Parse(g.Upstream.Received[^1].Body).RootElement;
        using var injected = await g.Client.SendAsync(g.Post("/v1/messages", """{"model":"claude-sonnet","messages":[{"role":"user","content":"x"}]}""", anthropicHeader: true));
        var sentInjected = JsonDocument.Parse(g.Upstream.Received[^1].Body).RootElement;

        Assert.Equal(64, sentClamped.GetProperty("max_tokens").GetInt32());
        Assert.Equal(64, sentInjected.GetProperty("max_tokens").GetInt32());
        var entry = await g.EntryAsync(TestGateway.RequestIdOf(clamped));
        var control = entry.GetProperty("controls").EnumerateArray().Single(c => c.GetProperty("control").GetString() == "token_ceiling.output");
        Assert.Equal("clamped 4096 to 64", control.GetProperty("detail").GetString());
        Assert.Equal(4096, entry.GetProperty("max_output_tokens").GetInt64());
    }

    [Fact]
    public async Task OutputCeiling_WithBothOpenAIFields_IsCheckedAgainstTheLarger_AndClampsBoth()
    {
        // A small max_tokens beside a large max_completion_tokens: the provider may honour the large one.
        await using var g = await StartWithOutputCeilingAsync(64);

        using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions",
            """{"model":"gpt-4o-mini","max_tokens":1,"max_completion_tokens":4096,"messages":[{"role":"user","content":"hi"}]}"""));
        var sent = JsonDocument.Parse(g.Upstream.Received[^1].Body).RootElement;

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal((64, 64), (sent.GetProperty("max_tokens").GetInt32(), sent.GetProperty("max_completion_tokens").GetInt32()));
        var entry = await g.EntryAsync(TestGateway.RequestIdOf(response));
        var control = entry.GetProperty("controls").EnumerateArray().Single(c => c.GetProperty("control").GetString() == "token_ceiling.output");
        Assert.Equal("clamped 4096 to 64", control.GetProperty("detail").GetString());
        Assert.Equal(4096, entry.GetProperty("max_output_tokens").GetInt64());
    }

    [Fact]
    public async Task OutputCeiling_OverAnExplicitNull_IsWrittenInItsPlace_NotBesideIt()
    {
        // Injected beside "max_tokens":null, the provider would get the field twice, and one that takes the last no ceiling.
        await using var g = await StartWithOutputCeilingAsync(64);

        using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","max_tokens":null,"messages":[{"role":"user","content":"hi"}]}"""));
        var sent = g.Upstream.Received[^1].Body;

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Single(System.Text.RegularExpressions.Regex.Matches(sent, "\"max_tokens\""));
        Assert.Equal(64, JsonDocument.Parse(sent).RootElement.GetProperty("max_tokens").GetInt32());
    }

    [Theory]
    [InlineData("""{"model":"gpt-4o-mini","n":3,"messages":[{"role":"user","content":"hi"}]}""", "/v1/chat/completions", "n")]
    [InlineData("""{"model":"gpt-4o-mini","n":1,"best_of":4,"prompt":"hi"}""", "/v1/completions", "best_of")]
    [InlineData("""{"model":"gpt-4o-mini","max_completion_tokens":500,"messages":[{"role":"user","content":"hi"}]}""", "/v1/chat/completions", "max_completion_tokens")]
    [InlineData("""{"model":"gpt-4o-mini","max_tokens":500,"max_completion_tokens":5,"messages":[{"role":"user","content":"hi"}]}""", "/v1/chat/completions", "max_tokens")]
    [InlineData("""{"model":"text-embedding-3-small","input":"a text long enough to pass a ceiling of thirty tokens: one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty"}""", "/v1/embeddings", "input")]
    public async Task ACeilingRefusal_NamesTheFieldItIsAbout(string body, string path, string param)
    {
        // SDKs show "param" beside the message: the refusal names the field the client sent, not null.
        await using var g = await TestGateway.StartAsync(p => WithConsumer(p, "web", c => c with
        {
            Limits = new LimitsConfig { MaxN = 2, MaxOutputTokens = 100, OutputCeiling = OutputCeilingMode.Deny, MaxInputTokens = 30 },
        }));

        using var response = await g.Client.SendAsync(g.Post(path, body));
        var error = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("error");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(("deny.token_ceiling", param), (error.GetProperty("code").GetString(), error.GetProperty("param").GetString()));
        Assert.Empty(g.Upstream.Received);
    }

    [Fact]
    public async Task PromptRules_RedactBeforeForwarding_AndDenyWithoutCallingTheProvider()
    {
        await using var g = await TestGateway.StartAsync(p => p with
        {
            Services = [.. p.Services.Select(s => s.Id != "support" ? s : s with
            {
                PromptRules =
                [
                    new PromptRuleConfig { Id = "cards", Detector = PromptDetector.PaymentCard, Action = PromptAction.Redact },
                    new PromptRuleConfig { Id = "no-secrets", Detector = PromptDetector.Secrets, Action = PromptAction.Deny },
                ],
            })],
        });

        using var redacted = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat(content: "refund card 4111 1111 1111 1111 please")));
        var sent = g.Upstream.Received[^1].Body;
        var calls = g.Upstream.RequestCount;
        using var denied = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat(content: "use key AKIAIOSFODNN7EXAMPLE")));

        Assert.Equal(HttpStatusCode.OK, redacted.StatusCode);
        Assert.Contains("refund card [REDACTED:cards] please", sent, StringComparison.Ordinal);
        Assert.DoesNotContain("4111", sent, StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.BadRequest, denied.StatusCode);
        Assert.Equal(calls, g.Upstream.RequestCount);
        var entry = await g.EntryAsync(TestGateway.RequestIdOf(denied));
        Assert.Equal(["deny.prompt_restricted"], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
        Assert.Contains(entry.GetProperty("controls").EnumerateArray(), c => c.GetProperty("scope").GetString() == "service:no-secrets");
        Assert.DoesNotContain("AKIA", entry.GetRawText(), StringComparison.Ordinal);

        // The same in what the model reads besides the messages: a tool's description, a predicted output.
        using var tool = await g.Client.SendAsync(g.Post("/v1/chat/completions", """
            {"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],
             "tools":[{"type":"function","function":{"name":"refund","description":"charge card 4111 1111 1111 1111"}}]}
            """));
        var toolSent = g.Upstream.Received[^1].Body;
        calls = g.Upstream.RequestCount;
        using var predicted = await g.Client.SendAsync(g.Post("/v1/chat/completions", """
            {"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"prediction":{"type":"content","content":"AKIAIOSFODNN7EXAMPLE"}}
            """));

        Assert.Equal(HttpStatusCode.OK, tool.StatusCode);
        Assert.Contains("charge card [REDACTED:cards]", toolSent, StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.BadRequest, predicted.StatusCode);
        Assert.Equal(calls, g.Upstream.RequestCount);
    }

    [Theory]
    [InlineData("globex-user", "gpt-4o-mini")] // another tenant's model
    [InlineData("web", "globex-only")]
    public async Task TenantIsolation_ModelsOfAnotherTenant_AreNotFound(string consumer, string model)
    {
        await using var g = await TestGateway.StartAsync();
        var calls = g.Upstream.RequestCount;

        using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat(model), consumer));

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        Assert.Equal(calls, g.Upstream.RequestCount);
    }

    [Fact]
    public async Task TenantIsolation_CountersUpstreamKeysAndLedgerQueries_StayInTheirTenant()
    {
        await using var g = await TestGateway.StartAsync(p => p with
        {
            Tenants = [.. p.Tenants.Select(t => t.Id != "acme" ? t with { Providers = [t.Providers[0] with { ApiKeyEnv = "TEST_ANTHROPIC_KEY" }] } : t with { Limits = new LimitsConfig { RequestsPerMinute = 1 } })],
        });

        using var acme1 = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat()));
        using var acme2 = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat()));
        using var globex = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat("globex-only"), "globex-user"));

        Assert.Equal(HttpStatusCode.OK, acme1.StatusCode);
        Assert.Equal(HttpStatusCode.TooManyRequests, acme2.StatusCode); // acme's tenant limit
        Assert.Equal(HttpStatusCode.OK, globex.StatusCode);           // does not touch globex
        Assert.Equal("Bearer " + TestGateway.AnthropicUpstreamKey, g.Upstream.Received[^1].Headers["Authorization"]); // globex's own upstream key
        await g.EntryAsync(TestGateway.RequestIdOf(globex)); // a client can have its response before the record is queued
        var globexEntries = await g.LedgerAsync(new LedgerQuery { Tenant = "globex" });
        Assert.Single(globexEntries);
        Assert.All(await g.LedgerAsync(new LedgerQuery { Tenant = "acme" }), e => Assert.Equal("acme", e.GetProperty("tenant").GetString()));
    }

    [Fact]
    public async Task PolicySwitchUnderLoad_EveryEntryNamesOneVersion_AndReplayingItsVersionReproducesTheDecision()
    {
        await using var g = await TestGateway.StartAsync();
        var v1 = g.Gateway.Policy.Current;
        var v2Document = WithConsumer(v1.Document, "web", c => c with { Models = [.. c.Models.Where(m => m != "gpt-4o-mini")] });

        using var admin = new HttpClient { BaseAddress = g.Gateway.AdminUri };
        admin.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", g.KeyOf("admin"));
        using var stop = new CancellationTokenSource();
        var load = Enumerable.Range(0, 8).Select(async _ =>
        {
            var ids = new List<string>();
            while (!stop.IsCancellationRequested || ids.Count < 20)
            {
                using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat()));
                ids.Add(TestGateway.RequestIdOf(response));
            }

            return ids;
        }).ToArray();

        await g.WaitForRecordsAsync(40);
        using var applied = await admin.PostAsJsonAsync("/admin/v1/policy/versions", new { yaml = PolicyYamlWriter.Write(v2Document), reason = "revoke gpt-4o-mini for web" });
        Assert.Equal(HttpStatusCode.OK, applied.StatusCode);
        await g.WaitForRecordsAsync(g.Gateway.Ledger.Persisted + 40);
        stop.Cancel();
        var ids = (await Task.WhenAll(load)).SelectMany(x => x).ToHashSet();

        await g.WaitForRecordsAsync(ids.Count + 2);
        var entries = (await g.LedgerAsync()).Where(e => ids.Contains(e.GetProperty("request_id").GetString()!)).ToList();
        Assert.Equal(ids.Count, entries.Count);
        var versions = (await g.Gateway.Store.GetHistoryAsync()).ToDictionary(v => v.Number);
        Assert.Equal(2, versions.Count);
        Assert.Contains(entries, e => e.GetProperty("policy_version").GetInt64() == 1);
        Assert.Contains(entries, e => e.GetProperty("policy_version").GetInt64() == 2);
        foreach (var entry in entries)
        {
            var version = versions[entry.GetProperty("policy_version").GetInt64()];
            Assert.Equal(version.Sha256, entry.GetProperty("policy_hash").GetString());
            var snapshot = PolicySnapshot.Compile(version, _ => null);
            var consumer = snapshot.Consumers[entry.GetProperty("consumer").GetString()!];
            var replay = await AdmissionEvaluator.EvaluateAsync(new AdmissionRequest
            {
                Consumer = consumer,
                Route = consumer.Service.Tenant.Models[entry.GetProperty("model").GetString()!],
                Now = DateTimeOffset.Parse(entry.GetProperty("timestamp").GetString()!, CultureInfo.InvariantCulture),
                InputTokens = entry.GetProperty("input_tokens").ValueKind == JsonValueKind.Number ? entry.GetProperty("input_tokens").GetInt64() : 0,
                PromptAvailable = false,
            }, new InMemoryCounterStore(TimeProvider.System));
            Assert.Equal(entry.GetProperty("decision").GetString(), Names.Of(replay.Decision));
        }

        // Once the new version is in force, it is used from the next request on.
        var after = entries.Where(e => e.GetProperty("policy_version").GetInt64() == 2).ToList();
        Assert.All(after, e => Assert.Equal("deny.model_not_entitled", e.GetProperty("reasons")[0].GetString()));
        var admins = await g.LedgerAsync(new LedgerQuery { Kind = "admin" });
        Assert.Contains(admins, a => a.GetProperty("actor").GetString() == "root" && a.GetProperty("reason").GetString() == "revoke gpt-4o-mini for web");
    }

    [Fact]
    public async Task AdminApi_ApplyWithoutPlatformRole_IsRefusedAndAudited_InvalidYamlIs422()
    {
        await using var g = await TestGateway.StartAsync(p => p with
        {
            Admins = [.. p.Admins, new AdminConfig { Id = "auditor", Role = AdminRole.SecurityAuditor, KeySha256 = Custos.Identity.KeyHash.Of(AuditorKey).ToHex() }],
        });
        using var admin = new HttpClient { BaseAddress = g.Gateway.AdminUri };

        admin.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", AuditorKey);
        using var forbidden = await admin.PostAsJsonAsync("/admin/v1/policy/versions", new { yaml = "tenants: []", reason = "x" });
        admin.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", g.KeyOf("admin"));
        using var invalid = await admin.PostAsJsonAsync("/admin/v1/policy/versions", new { yaml = "tenants:\n  - id: Bad Id\n", reason = "x" });
        admin.DefaultRequestHeaders.Authorization = null;
        using var anonymous = await admin.GetAsync("/admin/v1/policy");

        Assert.Equal(HttpStatusCode.Forbidden, forbidden.StatusCode);
        Assert.Equal(HttpStatusCode.UnprocessableEntity, invalid.StatusCode);
        Assert.Contains("2:9", await invalid.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.Unauthorized, anonymous.StatusCode);
        Assert.Equal(1, g.Gateway.Policy.Current.Version);
        var audit = await g.LedgerAsync(new LedgerQuery { Kind = "admin" });
        Assert.Contains(audit, a => a.GetProperty("actor").GetString() == "auditor" && a.GetProperty("action").GetString() == "policy.apply_denied");
    }

    private static readonly string AuditorKey = Custos.Identity.ApiKey.Generate(Custos.Identity.ApiKeyKind.Admin);
}
