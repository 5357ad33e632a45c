using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Custos.Controls;
using Custos.Errors;
using Custos.Metering;
using Custos.Policy;

namespace Custos.Core.Tests;

/// <summary>Prompt restrictions over a corpus of positives and negatives, including catastrophic-backtracking patterns.</summary>
public sealed class PromptRestrictionTests
{
    private static PolicySnapshot Compile(string rules, int timeoutMs = 50)
    {
        var yaml = $$"""
            gateway: { prompt_regex_timeout_ms: {{timeoutMs}} }
            tenants:
              - id: acme
                providers: [{ id: p, type: openai, base_url: http://127.0.0.1:1/v1 }]
                models: [{ name: m, provider: p }]
            services:
              - id: svc
                tenant: acme
                prompt_rules:
            {{rules}}
            consumers: [{ id: c, service: svc, category: internal, models: [m] }]
            """;
        var result = PolicyYaml.Read(yaml);
        Assert.True(result.IsValid, string.Join("\n", result.Diagnostics.Select(d => d.Format("t"))));
        return PolicySnapshot.Compile(new PolicyVersion(1, "h", "t", "t", DateTimeOffset.UnixEpoch, result.Document!), _ => null);
    }

    private static async Task<(Admission Admission, byte[] Body)> Evaluate(PolicySnapshot snapshot, string prompt)
    {
        var body = Encoding.UTF8.GetBytes($$"""{"model":"m","messages":[{"role":"system","content":"be kind"},{"role":"user","content":{{JsonSerializer.Serialize(prompt)}}}]}""");
        ChatRequest.TryParse(body, out var parsed);
        var consumer = snapshot.Consumers["c"];
        var admission = await AdmissionEvaluator.EvaluateAsync(new AdmissionRequest
        {
            Consumer = consumer,
            Route = consumer.Service.Tenant.Models["m"],
            Now = DateTimeOffset.UnixEpoch,
            InputTokens = 1,
            Prompt = parsed,
        }, new InMemoryCounterStore(TimeProvider.System));
        var output = new System.Buffers.ArrayBufferWriter<byte>();
        BodyEdits.Apply(body, [.. admission.Edits], output);
        return (admission, output.WrittenSpan.ToArray());
    }

    [Theory]
    [InlineData("secrets", "my key is sk-proj-abcdefghijklmnopqrstuvwx please", true)]
    [InlineData("secrets", "aws AKIAIOSFODNN7EXAMPLE here", true)]
    [InlineData("secrets", "-----BEGIN RSA PRIVATE KEY-----\nMIIE", true)]
    [InlineData("secrets", "token ghp_abcdefghijklmnopqrstuvwxyz0123456789", true)]
    [InlineData("secrets", "the word skeleton and sk-short", false)]
    [InlineData("secrets", "slack xoxb-1234567890-abcdefghij", true)]
    [InlineData("secrets", "google AIzaSyA1234567890abcdefghijklmnopqrstuv", true)]
    [InlineData("secrets", "jwt eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.SflKxwRJSMeKKF2QT4", true)]
    [InlineData("secrets", "gateway key csk_0123456789abcdefghijklmnopqrstuvwxyzAB.", true)]
    [InlineData("secrets", "almost csk_0123456789abcdefghijklmnopqrstuvwxyzABC", false)]
    [InlineData("payment_card", "card 4111 1111 1111 1111 exp 12/29", true)]
    [InlineData("payment_card", "card 4111-1111-1111-1112", false)]
    [InlineData("payment_card", "order number 1234567890123", false)]
    [InlineData("email", "write to jane.doe@example.com today", true)]
    [InlineData("email", "an @ sign alone, or user@localhost", false)]
    [InlineData("iban", "pay DE89 3704 0044 0532 0130 00 now", true)]
    [InlineData("iban", "pay DE00 3704 0044 0532 0130 00 now", false)]
    [InlineData("us_ssn", "ssn 123-45-6789", true)]
    [InlineData("us_ssn", "ssn 000-45-6789 and phone 555-123-4567", false)]
    public async Task Detector_DenyRule_MatchesPositivesOnly(string detector, string prompt, bool denied)
    {
        var snapshot = Compile($"      - {{ id: no-{detector.Replace('_', '-')}, detector: {detector}, action: deny }}");

        var (admission, _) = await Evaluate(snapshot, prompt);

        Assert.Equal(denied, admission.Decision == Decision.Deny);
        if (denied)
        {
            Assert.Equal(Reasons.PromptRestricted, admission.Reason);
            var control = Assert.Single(admission.Controls, c => c.Control == "prompt_restriction");
            Assert.Equal($"service:no-{detector.Replace('_', '-')}", control.Scope);
            Assert.DoesNotContain(prompt, admission.Message!, StringComparison.Ordinal);
        }
    }

    /// <summary>
    /// Near misses repeated over a quarter of a megabyte: inputs that make a backtracking pattern retry each candidate
    /// from every start. Each detector must finish (the 30 s bound only stops a hang; a scan takes milliseconds) and find
    /// nothing.
    /// </summary>
    [Theory]
    [InlineData(PromptDetector.Secrets, "sk-proj-abcdefgh ")]
    [InlineData(PromptDetector.Secrets, "eyJabcdefghijklmnop.abcdefghijklmnop.abc ")]
    [InlineData(PromptDetector.Secrets, "eyJ0123456789abcdef")]
    [InlineData(PromptDetector.Secrets, "csk_0123456789abcdefghijklmnopqrstuvwxyzABC-")]
    [InlineData(PromptDetector.Secrets, "-----BEGIN RSA PRIVATE KEY---- AKIA0123 ghp_abc xoxb- AIza")]
    [InlineData(PromptDetector.PaymentCard, "4111 1111 1111 1112 ")]
    [InlineData(PromptDetector.PaymentCard, "1 1 1 1 1 1 1 1 1 1 1 1  ")]
    [InlineData(PromptDetector.PaymentCard, "1-2-3-4-5-6-7-8-9-0-1-2--")]
    [InlineData(PromptDetector.Email, "a.b-c.d_e.")]
    [InlineData(PromptDetector.Email, "a@b.c.d.e.f.g.h.i.j.k.")]
    [InlineData(PromptDetector.Iban, "DE00 3704 0044 0532 0130 00 ")]
    [InlineData(PromptDetector.Iban, "DE12 ABCD ")]
    [InlineData(PromptDetector.UsSsn, "000-45-6789 ")]
    public async Task Detector_AdversarialPrompt_FinishesAndFindsNothing(PromptDetector detector, string unit)
    {
        var prompt = string.Concat(Enumerable.Repeat(unit, 256 * 1024 / unit.Length));

        var found = await Task.Run(() => PromptDetectors.Find(detector, prompt, null)).WaitAsync(TimeSpan.FromSeconds(30));

        Assert.False(found);
    }

    [Fact]
    public async Task RedactRule_ReplacesOnlyTheMatches_AndTheBodyStaysValidJson()
    {
        var snapshot = Compile("""
                  - { id: cards, detector: payment_card, action: redact }
                  - { id: mails, detector: email, action: redact }
            """);

        var (admission, body) = await Evaluate(snapshot, "Refund 4111 1111 1111 1111 to \"jane@example.com\" please");

        Assert.Equal(Decision.Allow, admission.Decision);
        using var json = JsonDocument.Parse(body);
        Assert.Equal("Refund [REDACTED:cards] to \"[REDACTED:mails]\" please", json.RootElement.GetProperty("messages")[1].GetProperty("content").GetString());
        Assert.Equal("be kind", json.RootElement.GetProperty("messages")[0].GetProperty("content").GetString());
        Assert.All(admission.Controls.Where(c => c.Control == "prompt_restriction"), c => Assert.Equal(ControlDecisions.Modify, c.Decision));
    }

    [Fact]
    public async Task RedactRules_WithOverlappingMatches_RedactAllOfBoth()
    {
        // The second match began inside the first and reached past it: what lay past the first was sent as it came.
        var snapshot = Compile("""
                  - { id: first, pattern: "alpha beta", action: redact }
                  - { id: second, pattern: "beta gamma", action: redact }
            """);

        var (_, body) = await Evaluate(snapshot, "x alpha beta gamma y");

        using var json = JsonDocument.Parse(body);
        Assert.Equal("x [REDACTED:first] y", json.RootElement.GetProperty("messages")[1].GetProperty("content").GetString());
    }

    [Fact]
    public async Task RedactRule_InTheFoldedReading_RedactsTheCharactersAsSent()
    {
        // A zero-width space inside the card and a code word in Cyrillic lookalikes: both found, both replaced whole.
        var snapshot = Compile("""
                  - { id: cards, detector: payment_card, action: redact }
                  - { id: codenames, pattern: "(?i)project falcon", action: redact }
            """);

        var (admission, body) = await Evaluate(snapshot, "card 4111\u200B1111 1111 1111 for pr\u043Eject f\u0430lcon, caf\u00E9");

        Assert.Equal(Decision.Allow, admission.Decision);
        using var json = JsonDocument.Parse(body);
        Assert.Equal("card [REDACTED:cards] for [REDACTED:codenames], caf\u00E9", json.RootElement.GetProperty("messages")[1].GetProperty("content").GetString());
    }

    [Fact]
    public async Task PatternRule_DeniesCaseInsensitiveCodename()
    {
        var snapshot = Compile("""      - { id: codenames, pattern: "(?i)project\\s+(falcon|osprey)" }""");

        Assert.Equal(Decision.Deny, (await Evaluate(snapshot, "status of PROJECT  Falcon?")).Admission.Decision);
        Assert.Equal(Decision.Allow, (await Evaluate(snapshot, "a falcon is a bird")).Admission.Decision);
    }

    [Fact]
    public async Task CatastrophicPattern_TimesOutAndFailsClosed_Quickly()
    {
        var snapshot = Compile("""      - { id: evil, pattern: "^(a+)+$" }""", timeoutMs: 20);
        var attack = new string('a', 40) + "!";

        var watch = Stopwatch.StartNew();
        var (admission, _) = await Evaluate(snapshot, attack);

        Assert.Equal(Decision.Deny, admission.Decision);
        Assert.Equal("rule timed out; failing closed", Assert.Single(admission.Controls, c => c.Control == "prompt_restriction").Detail);
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5), $"took {watch.Elapsed}");
    }

    [Fact]
    public void InvalidPattern_IsAValidationErrorWithPosition()
    {
        var result = PolicyYaml.Read("""
            tenants:
              - id: acme
                prompt_rules:
                  - { id: broken, pattern: "(unclosed" }
            """);

        Assert.Contains(result.Diagnostics, d => d.Path == "tenants[0].prompt_rules[0].pattern" && d.Line == 4);
    }

    [Theory]
    [InlineData("4111111111111111", true)]
    [InlineData("5500 0000 0000 0004", true)]
    [InlineData("4111111111111112", false)]
    [InlineData("123", false)]
    public void Luhn_ChecksCardNumbers(string number, bool valid) => Assert.Equal(valid, PromptDetectors.IsLuhnCard(number));
}
