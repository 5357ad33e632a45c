using System.Text;
using System.Text.Json;
using Custos.Controls;
using Custos.Errors;
using Custos.Ledger;
using Custos.Metering;
using Custos.Policy;
using Microsoft.Extensions.Time.Testing;

namespace Custos.Core.Tests;

/// <summary>Every control at under, at and over its limit, per scope, on a fake clock.</summary>
public sealed class AdmissionTests
{
    private static readonly DateTimeOffset Start = new(2026, 11, 28, 10, 0, 30, TimeSpan.Zero);

    private readonly FakeTimeProvider _clock = new(Start);

    private static PolicySnapshot Compile(string yaml)
    {
        var result = PolicyYaml.Read(yaml);
        Assert.True(result.IsValid, string.Join("\n", result.Diagnostics.Select(d => d.Format("test"))));
        var document = result.Document!;
        return PolicySnapshot.Compile(new PolicyVersion(1, PolicyVersion.HashOf(document), "t", "t", Start, document), _ => null);
    }

    private static string Policy(string consumerExtra = "", string serviceExtra = "", string tenantExtra = "", string defaults = "", string timeZone = "UTC") => $$"""
        {{defaults}}
        tenants:
          - id: acme
            time_zone: {{timeZone}}
            providers: [{ id: p, type: openai, base_url: http://127.0.0.1:1/v1 }]
            models:
              - { name: small, provider: p, aliases: [fast], price: { input_per_mtok: 1000000, output_per_mtok: 2000000 } }
              - { name: large, provider: p }
        {{tenantExtra}}
        services:
          - id: svc
            tenant: acme
        {{serviceExtra}}
        consumers:
          - id: c1
            service: svc
            category: internal
            models: [small]
        {{consumerExtra}}
          - id: c2
            service: svc
            category: internal
            models: [small]
        """;

    private AdmissionRequest Request(PolicySnapshot snapshot, string consumer = "c1", string model = "small", long input = 10, long? maxOutput = 5, long n = 1, string? prompt = null)
    {
        var c = snapshot.Consumers[consumer];
        var body = Encoding.UTF8.GetBytes(prompt is null ? """{"model":"small"}""" : $$"""{"model":"small","messages":[{"role":"user","content":{{System.Text.Json.JsonSerializer.Serialize(prompt)}}}]}""");
        ChatRequest.TryParse(body, out var parsed);
        return new AdmissionRequest
        {
            Consumer = c,
            Route = c.Service.Tenant.Models[model],
            Now = _clock.GetUtcNow(),
            InputTokens = input,
            MaxOutputTokens = maxOutput,
            N = n,
            Prompt = parsed,
        };
    }

    private static ControlResult Control(Admission a, string name) => Assert.Single(a.Controls, c => c.Control == name);

    [Fact]
    public async Task NoLimits_AllowsAndRecordsIsolationAndEntitlement()
    {
        var snapshot = Compile(Policy());

        var admission = await AdmissionEvaluator.EvaluateAsync(Request(snapshot), new InMemoryCounterStore(_clock));

        Assert.Equal(Decision.Allow, admission.Decision);
        Assert.Equal(ControlDecisions.Pass, Control(admission, "tenant_isolation").Decision);
        Assert.Equal(ControlDecisions.Pass, Control(admission, "entitlement").Decision);
        Assert.Empty(admission.Charges);
    }

    [Fact]
    public async Task Entitlement_OtherModel_IsDenied()
    {
        var snapshot = Compile(Policy());

        var admission = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, model: "large"), new InMemoryCounterStore(_clock));

        Assert.Equal(Reasons.ModelNotEntitled, admission.Reason);
    }

    [Theory]
    [InlineData(0, "deny.entitlement_not_yet_valid")]
    [InlineData(1, null)]
    [InlineData(60, null)]
    [InlineData(61, "deny.entitlement_expired")]
    public async Task Entitlement_ValidityWindow_IsInclusiveFromExclusiveUntil(int minutesAfterStart, string? code)
    {
        var snapshot = Compile(Policy(consumerExtra: """
              - id: c3
                service: svc
                category: internal
                entitlements:
                  - { models: [large], approved_by: dana@acme.example, ticket: SEC-1, valid_from: 2026-11-28T10:01:30Z, valid_until: 2026-11-28T11:01:30Z }
            """));
        _clock.SetUtcNow(Start.AddMinutes(minutesAfterStart));

        var admission = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, "c3", "large"), new InMemoryCounterStore(_clock));

        Assert.Equal(code, admission.Reason?.Code);
        if (code is null)
        {
            Assert.Equal("approved by dana@acme.example (SEC-1)", Control(admission, "entitlement").Detail);
        }
    }

    [Fact]
    public async Task CategoryDefaults_AreInheritedAndNarrowed()
    {
        var snapshot = Compile(Policy(
            defaults: """
                defaults:
                  agent: { models: [small, large], limits: { requests_per_minute: 10, max_output_tokens: 100 } }
                """,
            consumerExtra: """
                  - id: bot
                    service: svc
                    category: agent
                    limits: { requests_per_minute: 2, max_output_tokens: 500 }
                """));

        var bot = snapshot.Consumers["bot"];

        Assert.Equal(2, bot.Limits.RequestsPerMinute); // narrowed
        Assert.Equal(100, bot.Limits.MaxOutputTokens); // cannot widen
        Assert.Equal(["large", "small"], bot.EntitledModels.Select(m => m.Name).Order());
        var admission = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, "bot", "large"), new InMemoryCounterStore(_clock));
        Assert.Equal("category default", Control(admission, "entitlement").Detail);
    }

    [Fact]
    public void CategoryDefaults_ConsumerWideningModels_IsAValidationError()
    {
        var result = PolicyYaml.Read(Policy(
            defaults: "defaults: { external: { models: [small] } }",
            consumerExtra: """
                  - id: web
                    service: svc
                    category: external
                    models: [large]
                """));

        Assert.Contains(result.Diagnostics, d => d.Severity == DiagnosticSeverity.Error && d.Message.Contains("may narrow", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("consumer", "    limits: { requests_per_minute: 3 }", "c1")]
    [InlineData("service", "    limits: { requests_per_minute: 3 }", "svc")]
    [InlineData("tenant", "    limits: { requests_per_minute: 3 }", "acme")]
    public async Task RateLimit_UnderAtOver_PerScope_AndResetsNextMinute(string scope, string limits, string id)
    {
        var snapshot = Compile(scope switch
        {
            "consumer" => Policy().Replace("    models: [small]\n", "    models: [small]\n" + limits + "\n", StringComparison.Ordinal),
            "service" => Policy().Replace("    tenant: acme\n", "    tenant: acme\n" + limits + "\n", StringComparison.Ordinal),
            _ => Policy().Replace("    time_zone: UTC\n", "    time_zone: UTC\n" + limits + "\n", StringComparison.Ordinal),
        });
        var counters = new InMemoryCounterStore(_clock);

        var results = new List<Admission>();
        for (var i = 0; i < 4; i++)
        {
            var admission = await AdmissionEvaluator.EvaluateAsync(Request(snapshot), counters);
            await AdmissionEvaluator.SettleAsync(admission, counters, 10, 5, 0);
            results.Add(admission);
        }

        Assert.All(results.Take(3), a => Assert.Equal(Decision.Allow, a.Decision));
        Assert.Equal(Decision.Throttle, results[3].Decision);
        Assert.Equal(Reasons.RateLimited, results[3].Reason);
        Assert.Equal(TimeSpan.FromSeconds(30), results[3].RetryAfter);
        var reading = Control(results[2], "rate_limit.requests");
        Assert.Equal($"{scope}:{id}", reading.Scope);
        Assert.Equal((3m, 2m), (reading.Limit!.Value, reading.Used!.Value));

        // The service limit is shared: another consumer of the service is throttled too; a consumer limit is not.
        var other = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, "c2"), counters);
        Assert.Equal(scope == "consumer" ? Decision.Allow : Decision.Throttle, other.Decision);

        _clock.Advance(TimeSpan.FromSeconds(30));
        Assert.Equal(Decision.Allow, (await AdmissionEvaluator.EvaluateAsync(Request(snapshot), counters)).Decision);
    }

    [Theory]
    [InlineData(long.MaxValue, 5L)]
    [InlineData(long.MaxValue, long.MaxValue)]
    [InlineData(1L << 62, 1L << 62)]
    public async Task UsageTooLargeToAdd_ChargesTheMostACounterTakes_NeverWrapsIntoARefund(long input, long output)
    {
        // A provider may report any count; added up or priced it once overflowed: an exception in place of the settlement,
        // or a negative sum that every counter took as a refund and then admitted everything.
        var snapshot = Compile(Policy().Replace("    models: [small]\n",
            "    models: [small]\n    limits: { tokens_per_day: 1000000, budget: { amount: 100, period: month } }\n", StringComparison.Ordinal));
        var counters = new InMemoryCounterStore(_clock);
        var first = await AdmissionEvaluator.EvaluateAsync(Request(snapshot), counters);
        Assert.Equal(Decision.Allow, first.Decision);

        var cost = snapshot.Consumers["c1"].Service.Tenant.Models["small"].Cost(input, output);
        await AdmissionEvaluator.SettleAsync(first, counters, input, output, cost);

        var next = await AdmissionEvaluator.EvaluateAsync(Request(snapshot), counters);
        Assert.Equal(Decision.Deny, next.Decision);
        Assert.Equal(Reasons.QuotaExhausted, next.Reason);
        Assert.Equal(AdmissionEvaluator.MaxCharge, Control(next, "quota.tokens_per_day").Used);
        Assert.Equal(AdmissionEvaluator.MaxCharge / AdmissionEvaluator.CostUnit, Control(next, "budget").Used);
    }

    /// <summary>Shared counters that cannot be reached.</summary>
    private sealed class UnreachableCounters : ICounterStore
    {
        public ValueTask<int> TryReserveAsync(Guid reservation, IReadOnlyList<CounterCharge> charges, CounterReading[] readings, CancellationToken cancellationToken = default)
            => throw new TimeoutException("no connection");

        public ValueTask SettleAsync(Guid reservation, IReadOnlyList<CounterCharge> charges, IReadOnlyList<long> actual, CancellationToken cancellationToken = default)
            => throw new TimeoutException("no connection");

        public ValueTask ReleaseAsync(Guid reservation, IReadOnlyList<CounterCharge> charges, CancellationToken cancellationToken = default)
            => throw new TimeoutException("no connection");
    }

    [Theory]
    [InlineData("", "throttle", "unavailable.counters", "closed")] // budgets fail closed by default: 503, retry shortly
    [InlineData("gateway: { fail_modes: { budgets: open } }", "allow", null, "open")]
    public async Task UnreachableCounters_FollowTheDeclaredFailModes_AndTheControlsSayDegraded(string gateway, string decision, string? reason, string budgetMode)
    {
        var snapshot = Compile(Policy(defaults: gateway).Replace("    models: [small]\n",
            "    models: [small]\n    limits: { requests_per_minute: 100, budget: { amount: 10, period: month } }\n", StringComparison.Ordinal));
        var counters = new ResilientCounterStore(new UnreachableCounters(), _clock, () => 2);

        var admission = await AdmissionEvaluator.EvaluateAsync(Request(snapshot), counters);

        Assert.Equal(decision, Custos.Ledger.Names.Of(admission.Decision));
        Assert.Equal(reason, admission.Reason?.Code);
        Assert.True(admission.Degraded);
        Assert.Equal(budgetMode, Control(admission, "budget").Degraded);
        Assert.Equal("local_share", Control(admission, "rate_limit.requests").Degraded);
        Assert.Equal(50m, Control(admission, "rate_limit.requests").Limit); // a half share of 100 for each of two nodes
    }

    [Fact]
    public async Task RequestCounters_CountWhenAdmitted_TokensWhenSettled()
    {
        var snapshot = Compile(Policy().Replace("    models: [small]\n", "    models: [small]\n    limits: { requests_per_minute: 3, tokens_per_minute: 1000 }\n", StringComparison.Ordinal));
        var counters = new InMemoryCounterStore(_clock);

        var first = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 40, maxOutput: 40), counters);
        var second = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 10, maxOutput: 10), counters); // the first in flight
        await AdmissionEvaluator.SettleAsync(first, counters, 40, 5, 0);
        await AdmissionEvaluator.SettleAsync(second, counters, 10, 5, 0);
        var third = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 10, maxOutput: 10), counters);

        // The request in flight is a request used; its tokens are reserved until it settles.
        Assert.Equal((1m, 0m), (Control(second, "rate_limit.requests").Used!.Value, Control(second, "rate_limit.requests").Reserved!.Value));
        Assert.Equal((0m, 80m), (Control(second, "rate_limit.tokens").Used!.Value, Control(second, "rate_limit.tokens").Reserved!.Value));
        Assert.Equal((2m, 0m), (Control(third, "rate_limit.requests").Used!.Value, Control(third, "rate_limit.requests").Reserved!.Value));
        Assert.Equal((60m, 0m), (Control(third, "rate_limit.tokens").Used!.Value, Control(third, "rate_limit.tokens").Reserved!.Value));
    }

    [Fact]
    public async Task TokensPerMinute_ReservesWorstCase_SettlesToActual()
    {
        var snapshot = Compile(Policy().Replace("    models: [small]\n", "    models: [small]\n    limits: { tokens_per_minute: 100 }\n", StringComparison.Ordinal));
        var counters = new InMemoryCounterStore(_clock);

        var first = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 40, maxOutput: 40), counters); // reserves 80
        var second = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 10, maxOutput: 20), counters); // 80 + 30 > 100
        await AdmissionEvaluator.SettleAsync(first, counters, 40, 5, 0); // really used 45
        var third = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 10, maxOutput: 20), counters); // 45 + 30 <= 100

        Assert.Equal(Decision.Allow, first.Decision);
        Assert.Equal(Decision.Throttle, second.Decision);
        Assert.Equal(Decision.Allow, third.Decision);
        Assert.Equal(45m, Control(third, "rate_limit.tokens").Used);
    }

    [Theory]
    [InlineData("tokens_per_minute: 100", "rate_limit.tokens", "(101) is more than the whole of rate_limit.tokens of consumer:c1 (100)")]
    [InlineData("tokens_per_day: 100", "quota.tokens_per_day", "(101) is more than the whole of quota.tokens_per_day")]
    [InlineData("budget: { amount: 100, period: month }", "budget", "(191.00 USD) is more than the whole of budget of consumer:c1 (100.00 USD)")]
    public async Task RequestLargerThanAWholeLimit_IsDeniedWithoutRetryAfter_WhileOneThatFitsLaterIsNot(string limit, string control, string message)
    {
        // 11 input + 90 output tokens cost 11 + 180 = 191: alone more than the whole limit. A 429 or 402 with Retry-After
        // would have clients wait and retry a request no wait lets through.
        var snapshot = Compile(Policy().Replace("    models: [small]\n", $"    models: [small]\n    limits: {{ {limit} }}\n", StringComparison.Ordinal));
        var counters = new InMemoryCounterStore(_clock);

        var tooLarge = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 11, maxOutput: 90), counters);
        // 50 tokens and 90 USD each: each fits alone, until the counter is too full for the next.
        var admitted = 0;
        Admission later;
        while ((later = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 10, maxOutput: 40), counters)).Decision == Decision.Allow)
        {
            admitted++;
        }

        Assert.Equal(Decision.Deny, tooLarge.Decision);
        Assert.Equal(Reasons.ExceedsLimit, tooLarge.Reason);
        Assert.Null(tooLarge.RetryAfter);
        Assert.Contains(message, tooLarge.Message, StringComparison.Ordinal);
        Assert.Equal(ControlDecisions.Deny, Control(tooLarge, control).Decision);
        Assert.InRange(admitted, 1, 2);
        Assert.NotEqual(Reasons.ExceedsLimit, later.Reason);
        Assert.NotNull(later.RetryAfter);
    }

    [Theory]
    [InlineData(4611686018427387904L, 4L)] // 2^62 × 4 wrapped around to 0: admitted against a quota of 100 with 10 tokens reserved
    [InlineData(long.MaxValue, 2L)]
    public async Task OutputCeilingTimesChoices_TooLargeToMultiply_ReservesTheMost_NeverWrapsAround(long maxOutput, long n)
    {
        var snapshot = Compile(Policy().Replace("    models: [small]\n", "    models: [small]\n    limits: { tokens_per_day: 5000000 }\n", StringComparison.Ordinal));
        var counters = new InMemoryCounterStore(_clock);

        var admission = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 10, maxOutput: maxOutput, n: n), counters);

        Assert.Equal(long.MaxValue, admission.ReservedOutputTokens);
        Assert.Equal(Reasons.ExceedsLimit, admission.Reason);
        Assert.Equal(AdmissionEvaluator.MaxCharge, Control(admission, "quota.tokens_per_day").Requested);
    }

    [Fact]
    public async Task DailyQuota_FollowsTheTenantsTimeZone()
    {
        // 23:30 in Berlin is still "today" there; the quota renews at Berlin midnight, 23:00 UTC.
        _clock.SetUtcNow(new DateTimeOffset(2026, 11, 28, 22, 30, 0, TimeSpan.Zero));
        var snapshot = Compile(Policy(timeZone: "Europe/Berlin").Replace("    models: [small]\n", "    models: [small]\n    limits: { requests_per_day: 2 }\n", StringComparison.Ordinal));
        var counters = new InMemoryCounterStore(_clock);

        for (var i = 0; i < 2; i++)
        {
            Assert.Equal(Decision.Allow, (await AdmissionEvaluator.EvaluateAsync(Request(snapshot), counters)).Decision);
        }

        var over = await AdmissionEvaluator.EvaluateAsync(Request(snapshot), counters);
        _clock.Advance(TimeSpan.FromMinutes(31));
        var nextDay = await AdmissionEvaluator.EvaluateAsync(Request(snapshot), counters);

        Assert.Equal(Reasons.QuotaExhausted, over.Reason);
        Assert.Equal(TimeSpan.FromMinutes(30), over.RetryAfter);
        Assert.Equal(Decision.Allow, nextDay.Decision);
    }

    [Fact]
    public async Task MonthlyTokenQuota_IsDeniedAtTheLimit()
    {
        var snapshot = Compile(Policy().Replace("    models: [small]\n", "    models: [small]\n    limits: { tokens_per_month: 30 }\n", StringComparison.Ordinal));
        var counters = new InMemoryCounterStore(_clock);

        var atLimit = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 10, maxOutput: 20), counters);
        var over = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 1, maxOutput: 1), counters);

        Assert.Equal(Decision.Allow, atLimit.Decision);
        Assert.Equal(Reasons.QuotaExhausted, over.Reason);
    }

    [Fact]
    public async Task HardBudget_DeniesOnlyWhenSpentPlusReservedCannotCover()
    {
        // small costs 1 per input token and 2 per output token (per million = 1e6 / 1e6).
        var snapshot = Compile(Policy(serviceExtra: "").Replace("    tenant: acme\n", "    tenant: acme\n    limits: { budget: { amount: 100, period: month } }\n", StringComparison.Ordinal));
        var counters = new InMemoryCounterStore(_clock);

        var a = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 10, maxOutput: 20), counters); // reserves 50
        var b = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 10, maxOutput: 20), counters); // reserves 50: exactly 100
        var c = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 1, maxOutput: 0), counters);   // 1 more: over
        await AdmissionEvaluator.SettleAsync(a, counters, 10, 5, 20m); // a really cost 20
        var d = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 10, maxOutput: 10), counters); // 20 + 50 + 30 = 100

        Assert.Equal([Decision.Allow, Decision.Allow, Decision.Deny, Decision.Allow], new[] { a, b, c, d }.Select(x => x.Decision));
        Assert.Equal(Reasons.BudgetExhausted, c.Reason);
        var reading = Control(d, "budget");
        Assert.Equal((100m, 20m, 50m, 30m), (reading.Limit!.Value, reading.Used!.Value, reading.Reserved!.Value, reading.Requested!.Value));
    }

    [Theory]
    [InlineData(null, 50)]      // input price only: 10 × 1 + 20 × 2
    [InlineData("1500000", 55)] // a cache write at 1.5: the provider may write all 10 tokens to its cache
    public async Task HardBudget_ReservesInputAtTheHighestOfItsPrices_SoNoRequestSettlesAboveItsReservation(string? cacheWrite, long reserved)
    {
        var price = cacheWrite is null ? "" : ", cached_input_per_mtok: 100000, cache_write_input_per_mtok: " + cacheWrite;
        var snapshot = Compile(Policy()
            .Replace("output_per_mtok: 2000000 }", "output_per_mtok: 2000000" + price + " }", StringComparison.Ordinal)
            .Replace("    tenant: acme\n", "    tenant: acme\n    limits: { budget: { amount: 104, period: month } }\n", StringComparison.Ordinal));
        var counters = new InMemoryCounterStore(_clock);

        var first = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 10, maxOutput: 20), counters);
        var second = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 10, maxOutput: 20), counters);

        Assert.Equal(reserved, Control(first, "budget").Requested!.Value);
        Assert.Equal(Decision.Allow, first.Decision);
        Assert.Equal(reserved * 2 <= 104 ? Decision.Allow : Decision.Deny, second.Decision); // 100 fits 104; 110 does not
    }

    [Fact]
    public async Task ASmallBudget_IsNamedWithItsPlaces_NotRoundedToNothing()
    {
        // small costs 1 per input token: a budget of 100.0005 was named "100.00", and one of 0.0002 "0.00".
        var snapshot = Compile(Policy(serviceExtra: "").Replace("    tenant: acme\n", "    tenant: acme\n    limits: { budget: { amount: 100.0005, period: month } }\n", StringComparison.Ordinal));
        var counters = new InMemoryCounterStore(_clock);

        var spent = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 60, maxOutput: 0), counters);
        var refused = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 50, maxOutput: 0), counters);

        Assert.Equal((Decision.Allow, Reasons.BudgetExhausted), (spent.Decision, refused.Reason));
        Assert.Contains("(100.0005 ", refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task SoftBudget_AllowsAndRaisesAnEvent()
    {
        var snapshot = Compile(Policy().Replace("    time_zone: UTC\n", "    time_zone: UTC\n    limits: { budget: { amount: 10, mode: soft } }\n", StringComparison.Ordinal));
        var counters = new InMemoryCounterStore(_clock);

        var admission = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 10, maxOutput: 20), counters);

        Assert.Equal(Decision.Allow, admission.Decision);
        Assert.Equal(ControlDecisions.Warn, Control(admission, "budget").Decision);
        Assert.Equal(["budget.soft_exceeded tenant:acme"], admission.Events);
    }

    [Fact]
    public async Task SoftBudget_Exceeded_TheEntrysBudgetControlSaysSoftExceeded_WithTheLimit()
    {
        var snapshot = Compile(Policy().Replace("    time_zone: UTC\n", "    time_zone: UTC\n    limits: { budget: { amount: 10, mode: soft } }\n", StringComparison.Ordinal));
        var counters = new InMemoryCounterStore(_clock);

        var admission = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 10, maxOutput: 20), counters);

        var budget = Control(admission, "budget");
        Assert.Equal(Decision.Allow, admission.Decision);
        Assert.Null(admission.Reason);
        Assert.Equal((ControlDecisions.Warn, "soft_exceeded", "tenant:acme", 10m), (budget.Decision, budget.Detail, budget.Scope, budget.Limit));
        using var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer))
        {
            budget.WriteTo(writer);
        }

        Assert.Contains("\"decision\":\"warn\"", Encoding.UTF8.GetString(buffer.ToArray()), StringComparison.Ordinal);
        Assert.Contains("\"detail\":\"soft_exceeded\"", Encoding.UTF8.GetString(buffer.ToArray()), StringComparison.Ordinal);
    }

    [Fact]
    public async Task SoftBudget_NotExceeded_SaysPass_WithNoDetail()
    {
        var snapshot = Compile(Policy().Replace("    time_zone: UTC\n", "    time_zone: UTC\n    limits: { budget: { amount: 100000, mode: soft } }\n", StringComparison.Ordinal));

        var admission = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 10, maxOutput: 20), new InMemoryCounterStore(_clock));

        Assert.Equal((ControlDecisions.Pass, (string?)null), (Control(admission, "budget").Decision, Control(admission, "budget").Detail));
    }

    [Theory]
    [InlineData(null, "clamp", 50L, ControlDecisions.Modify, null)]
    [InlineData(30L, "clamp", null, ControlDecisions.Pass, null)]
    [InlineData(50L, "clamp", null, ControlDecisions.Pass, null)]
    [InlineData(80L, "clamp", 50L, ControlDecisions.Modify, null)]
    [InlineData(80L, "deny", null, ControlDecisions.Deny, "deny.token_ceiling")]
    [InlineData(null, "deny", 50L, ControlDecisions.Modify, null)]
    public async Task OutputCeiling_ClampsInjectsOrDenies(long? requested, string mode, long? written, string decision, string? code)
    {
        var snapshot = Compile(Policy().Replace("    models: [small]\n", $"    models: [small]\n    limits: {{ max_output_tokens: 50, output_ceiling: {mode} }}\n", StringComparison.Ordinal));

        var admission = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, maxOutput: requested), new InMemoryCounterStore(_clock));

        Assert.Equal(code, admission.Reason?.Code);
        Assert.Equal(written, admission.OutputCeiling);
        Assert.Equal(decision, Control(admission, "token_ceiling.output").Decision);
    }

    [Theory]
    [InlineData("", "    limits: { max_output_tokens: 50, output_ceiling: deny }", "service:svc", "deny.token_ceiling")]
    [InlineData("    limits: { max_output_tokens: 40 }", "", "tenant:acme", null)]
    [InlineData("    limits: { max_output_tokens: 60, max_n: 1 }", "    limits: { max_output_tokens: 300 }", "tenant:acme", null)]
    public async Task ServiceAndTenantCeilings_HoldForEveryConsumer_NamingTheirScope(string tenantLimits, string serviceLimits, string scope, string? code)
    {
        // A service's or tenant's max_output_tokens was read and never applied: only the consumer's and its category's were.
        var snapshot = Compile(Policy(serviceExtra: serviceLimits, tenantExtra: tenantLimits));

        var admission = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, maxOutput: 80), new InMemoryCounterStore(_clock));

        Assert.Equal(code, admission.Reason?.Code);
        var ceiling = Control(admission, "token_ceiling.output");
        Assert.Equal(scope, ceiling.Scope);
        Assert.Equal(code is null ? ControlDecisions.Modify : ControlDecisions.Deny, ceiling.Decision);
        Assert.True(admission.OutputCeiling is null or <= 60);
        Assert.Equal(code is null ? (long?)ceiling.Limit : null, admission.OutputCeiling);
    }

    [Theory]
    [InlineData("limits: { budget: { amount: 100000, period: month } }", null, 4096L)]
    [InlineData("limits: { tokens_per_day: 100000 }", null, 4096L)]
    [InlineData("limits: { tokens_per_minute: 100000, budget: { amount: 100000, mode: soft } }", null, 4096L)]
    [InlineData("limits: { budget: { amount: 100000, period: month } }", 20L, null)]
    [InlineData("limits: { budget: { amount: 100000, mode: soft } }", null, null)]
    [InlineData("limits: { requests_per_minute: 100 }", null, null)]
    [InlineData("", null, null)]
    public async Task NoOutputCeiling_UnderALimitThatCountsOutput_SendsTheReservedOneUpstream(string serviceLimits, long? requested, long? written)
    {
        // Without a ceiling the provider may write 16,000 tokens where 4096 were reserved: four times over a hard limit.
        var snapshot = Compile(Policy().Replace("    tenant: acme\n", $"    tenant: acme\n    {serviceLimits}\n", StringComparison.Ordinal));

        var admission = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, maxOutput: requested, n: 2), new InMemoryCounterStore(_clock));

        Assert.Equal(Decision.Allow, admission.Decision);
        Assert.Equal(written, admission.OutputCeiling);
        Assert.Equal((requested ?? AdmissionEvaluator.DefaultOutputReservation) * 2, admission.ReservedOutputTokens);
        var ceiling = admission.Controls.SingleOrDefault(c => c.Control == "token_ceiling.output");
        if (written is null)
        {
            Assert.Null(ceiling);
        }
        else
        {
            Assert.Equal((ControlDecisions.Modify, "service:svc", 4096m), (ceiling!.Decision, ceiling.Scope, ceiling.Limit!.Value));
            Assert.StartsWith("injected 4096: the output reserved per choice", ceiling.Detail, StringComparison.Ordinal);
        }
    }

    [Theory]
    [InlineData(99, true)]
    [InlineData(100, true)]
    [InlineData(101, false)]
    public async Task InputCeiling_UnderAtOver(long input, bool allowed)
    {
        var snapshot = Compile(Policy().Replace("    models: [small]\n", "    models: [small]\n    limits: { max_input_tokens: 100 }\n", StringComparison.Ordinal));

        var admission = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: input), new InMemoryCounterStore(_clock));

        Assert.Equal(allowed, admission.Decision == Decision.Allow);
    }

    [Theory]
    [InlineData(1, true)]
    [InlineData(2, true)]
    [InlineData(3, false)]
    public async Task ChoicesCeiling_UnderAtOver(long n, bool allowed)
    {
        var snapshot = Compile(Policy().Replace("    models: [small]\n", "    models: [small]\n    limits: { max_n: 2 }\n", StringComparison.Ordinal));

        var admission = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, n: n), new InMemoryCounterStore(_clock));

        Assert.Equal(allowed, admission.Decision == Decision.Allow);
    }

    [Fact]
    public async Task DeniedRequest_ReservesNothing()
    {
        var snapshot = Compile(Policy().Replace("    models: [small]\n", "    models: [small]\n    limits: { requests_per_minute: 1, max_input_tokens: 5 }\n", StringComparison.Ordinal));
        var counters = new InMemoryCounterStore(_clock);

        var tooLong = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 50), counters);
        var fine = await AdmissionEvaluator.EvaluateAsync(Request(snapshot, input: 1), counters);

        Assert.Equal(Decision.Deny, tooLong.Decision);
        Assert.Equal(Decision.Allow, fine.Decision);
    }

    [Fact]
    public void NextReservation_IsUniqueAcrossThreads_AndCarriesThisProcesssPrefix()
    {
        var ids = new System.Collections.Concurrent.ConcurrentBag<Guid>();
        Parallel.For(0, 4, _ =>
        {
            for (var i = 0; i < 2_000; i++)
            {
                ids.Add(AdmissionEvaluator.NextReservation());
            }
        });

        Assert.Equal(8_000, ids.Distinct().Count());
        Assert.Single(ids.Select(id => Convert.ToHexString(id.ToByteArray(), 0, 8)).Distinct());
    }
    [Theory]
    [InlineData("consumer", "kill_switch")]
    [InlineData("service", "kill_switch")]
    [InlineData("tenant", "kill_switch")]
    public async Task Simulate_ACandidateThatEngagesAKillSwitch_RefusesWhatItWouldRefuse_AndSaysWhatItUsed(string level, string control)
    {
        var candidate = Compile(level switch
        {
            "consumer" => Policy(consumerExtra: "    suspended: true"),
            "service" => Policy(serviceExtra: "    suspended: true"),
            _ => Policy(tenantExtra: "    suspended: true"),
        } + "\ncredentials:\n  - { id: k1, consumer: c1, key_sha256: " + new string('a', 64) + " }\n");
        const string credential = "k1";
        var record = $$"""
            {"timestamp":"{{LedgerTime.Format(Start.AddMinutes(1))}}","decision":"allow","reasons":[],"credential_id":"{{credential}}","consumer":"c1",
             "model":"small","endpoint":"/v1/chat/completions","input_tokens":3,"output_tokens":2,"n":1,"policy_version":4}
            """.ReplaceLineEndings(" ");

        var report = await PolicySimulator.RunAsync(candidate, new[] { record }.ToAsyncEnumerable(), Start, Start.AddHours(1));

        Assert.Equal(1, report.AllowedToRefused);
        Assert.Equal(control, Assert.Single(report.Rows).Control);
        Assert.StartsWith("The recorded decisions were made under policy version 4; the candidate replaces the policy whole", report.Notes[0], StringComparison.Ordinal);
        Assert.Contains(report.Notes, n => n.StartsWith("Rate limits, quotas and budgets count from zero at the window's start", StringComparison.Ordinal));
    }
}
