using System.Net;
using System.Text.Json;
using Custos.Policy;

namespace Custos.Gateway.Tests.Functional;

/// <summary>
/// A consumer's key trying to get a prompt past the prompt rules, or past a token ceiling, by how it writes the prompt
/// rather than by what it says: token ids in place of text, invisible characters and lookalike letters inside a secret.
/// </summary>
public sealed class PromptEvasionTests
{
    private static Task<TestGateway> StartWithRulesAsync() => TestGateway.StartAsync(p => p with
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

    private static string[] ReasonsOf(JsonElement entry) => [.. entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()!)];

    [Theory]
    [InlineData("/v1/completions", """{"model":"gpt-4o-mini","max_tokens":5,"prompt":[9125,382,1308,25]}""")]
    [InlineData("/v1/completions", """{"model":"gpt-4o-mini","max_tokens":5,"prompt":[[9125,382],[1308,25]]}""")]
    [InlineData("/v1/embeddings", """{"model":"text-embedding-3-small","input":[9125,382,1308,25]}""")]
    [InlineData("/v1/embeddings", """{"model":"text-embedding-3-small","input":[[9125,382],[1308,25]]}""")]
    public async Task PromptRules_APromptOfTokenIds_IsRefusedUnread_NotForwardedUnchecked(string path, string body)
    {
        // Token ids are text the rules cannot read (the provider decodes them with its model's vocabulary): a key or a card
        // number sent as its token ids went to the provider past a deny rule.
        await using var g = await StartWithRulesAsync();
        var calls = g.Upstream.RequestCount;

        using var response = await g.Client.SendAsync(g.Post(path, body));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(calls, g.Upstream.RequestCount);
        var error = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("error");
        Assert.Equal("deny.prompt_restricted", error.GetProperty("code").GetString());
        Assert.Contains("token ids", error.GetProperty("message").GetString(), StringComparison.Ordinal);
        var entry = await g.EntryAsync(TestGateway.RequestIdOf(response));
        Assert.Equal(["deny.prompt_restricted"], ReasonsOf(entry));
        Assert.Contains(entry.GetProperty("controls").EnumerateArray(), c =>
            c.GetProperty("control").GetString() == "prompt_restriction" && c.GetProperty("decision").GetString() == "deny");
    }

    [Fact]
    public async Task PromptRules_TextWithoutTokenIds_OnTheSameEndpoints_IsStillServed()
    {
        await using var g = await StartWithRulesAsync();

        using var completion = await g.Client.SendAsync(g.Post("/v1/completions", """{"model":"gpt-4o-mini","max_tokens":5,"prompt":"Say hi"}"""));
        using var embedding = await g.Client.SendAsync(g.Post("/v1/embeddings", """{"model":"text-embedding-3-small","input":["one","two"]}"""));

        Assert.Equal(HttpStatusCode.OK, completion.StatusCode);
        Assert.Equal(HttpStatusCode.OK, embedding.StatusCode);
    }

    [Theory]
    [InlineData("/v1/completions", """{"model":"gpt-4o-mini","max_tokens":5,"prompt":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40]}""")]
    [InlineData("/v1/embeddings", """{"model":"text-embedding-3-small","input":[[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20],[21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40]]}""")]
    public async Task TokenCeiling_APromptOfTokenIds_CountsEachIdAsAToken(string path, string body)
    {
        // Token ids were counted as no tokens at all: 40 of them passed a max_input_tokens of 30, and reserved no input
        // against a budget or a tokens-per-minute limit.
        await using var g = await TestGateway.StartAsync(p => p with
        {
            Consumers = [.. p.Consumers.Select(c => c.Id != "web" ? c : c with { Limits = new LimitsConfig { MaxInputTokens = 30 } })],
        });
        var calls = g.Upstream.RequestCount;

        using var response = await g.Client.SendAsync(g.Post(path, body));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(calls, g.Upstream.RequestCount);
        var entry = await g.EntryAsync(TestGateway.RequestIdOf(response));
        Assert.Equal(["deny.token_ceiling"], ReasonsOf(entry));
        var ceiling = entry.GetProperty("controls").EnumerateArray().Single(c => c.GetProperty("control").GetString() == "token_ceiling.input");
        Assert.True(ceiling.GetProperty("requested").GetDecimal() >= 40, ceiling.GetRawText());
    }

    [Theory]
    [InlineData(@"AKIA\u200BIOSFODNN7EXAMPLE")] // a zero-width space inside the key
    [InlineData(@"AKIAIOSF\u00ADODNN7EXAMPLE")] // a soft hyphen
    [InlineData(@"\u200DAKIAIOSFODNN7EX\u2060AMPLE")] // a zero-width joiner before it, a word joiner inside
    [InlineData(@"\uFF21\uFF2B\uFF29\uFF21IOSFODNN7EXAMPLE")] // full-width letters: ＡＫＩＡ
    [InlineData(@"AKIA\uDB40\uDC41IOSFODNN7EXAMPLE")] // a Unicode tag character (U+E0041, invisible) inside
    [InlineData(@"sk\u2011proj-abcdefghijklmnopqrstuvwxyz0123456789")] // a non-breaking hyphen
    [InlineData(@"\u0410KI\u0391IOSFODNN7EXAMPLE")] // a Cyrillic A and a Greek Alpha: the same letter to the eye and to the model
    [InlineData(@"s\u0301k-proj-abcdefghijklmnopqrstuvwxyz0123456789")] // a combining accent after its first letter
    public async Task PromptRules_ASecretWithInvisibleOrLookalikeCharacters_IsStillDenied(string written)
    {
        // The model reads these as the key (or as the key with a stray mark); the detectors read ASCII and let them through.
        await using var g = await StartWithRulesAsync();
        var calls = g.Upstream.RequestCount;

        using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions",
            $$"""{"model":"gpt-4o-mini","messages":[{"role":"user","content":"use key {{written}} now"}]}"""));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(calls, g.Upstream.RequestCount);
        var entry = await g.EntryAsync(TestGateway.RequestIdOf(response));
        Assert.Equal(["deny.prompt_restricted"], ReasonsOf(entry));
        Assert.Contains(entry.GetProperty("controls").EnumerateArray(), c => c.GetProperty("scope").GetString() == "service:no-secrets");
    }

    [Theory]
    [InlineData(@"\uFF14\uFF11\uFF11\uFF11 \uFF11\uFF11\uFF11\uFF11 \uFF11\uFF11\uFF11\uFF11 \uFF11\uFF11\uFF11\uFF11")] // full-width digits
    [InlineData(@"4111\u00A01111\u00A01111\u00A01111")] // no-break spaces
    [InlineData(@"4111\u200B1111\u200B1111\u200B1111")] // zero-width spaces
    [InlineData(@"4111\u2009\u200B1111 1111 1111")] // a thin space and a zero-width one: one separator to the eye
    [InlineData(@"\u0664\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661\u0661")] // Arabic-Indic digits
    public async Task PromptRules_ACardWrittenWithLookalikeDigitsOrInvisibleSeparators_IsRedacted(string written)
    {
        await using var g = await StartWithRulesAsync();

        using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions",
            $$"""{"model":"gpt-4o-mini","messages":[{"role":"user","content":"refund card {{written}} please"}]}"""));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var sent = JsonDocument.Parse(g.Upstream.Received[^1].Body).RootElement.GetProperty("messages")[0].GetProperty("content").GetString()!;
        Assert.Equal("refund card [REDACTED:cards] please", sent);
        var entry = await g.EntryAsync(TestGateway.RequestIdOf(response));
        Assert.Contains(entry.GetProperty("controls").EnumerateArray(), c =>
            c.GetProperty("scope").GetString() == "service:cards" && c.GetProperty("decision").GetString() == "modify");
    }

    [Fact]
    public async Task PromptRules_TextBeyondAscii_ThatHidesNothing_GoesUpstreamAsSent()
    {
        // Folding is for reading only: accents, full-width text and no-break spaces of an ordinary prompt are not rewritten.
        await using var g = await StartWithRulesAsync();
        const string content = "\u041F\u0440\u0438\u0432\u0435\u0442, Caf\u00E9 na\u00EFve \uFF21\uFF22\uFF23 100\u00A0km \u65E5\u672C\u8A9E, order 4111-1111 \u200B ok";

        using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions",
            $$"""{"model":"gpt-4o-mini","messages":[{"role":"user","content":{{JsonSerializer.Serialize(content)}}}]}"""));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var sent = JsonDocument.Parse(g.Upstream.Received[^1].Body).RootElement.GetProperty("messages")[0].GetProperty("content").GetString();
        Assert.Equal(content, sent);
    }

    [Theory]
    [InlineData("""{"type":"text","media_type":"text/plain","data":"{{DATA}}"}""")]
    [InlineData("""{"data":"{{DATA}}","media_type":"text/plain","type":"text"}""")] // its type after its data
    public async Task PromptRules_AnAnthropicTextDocument_ThatLooksLikeBase64_IsStillRead(string source)
    {
        // A text document's data of 256 characters or more, all of base64's alphabet (a key, a '/', letters), was taken for
        // an image: neither searched nor counted as text. The model reads it as the text it is.
        await using var g = await StartWithRulesAsync();
        var calls = g.Upstream.RequestCount;
        var data = "AKIAIOSFODNN7EXAMPLE/" + new string('a', 300);
        var body = $$"""{"model":"claude-sonnet","max_tokens":50,"messages":[{"role":"user","content":[{"type":"document","source":{{source.Replace("{{DATA}}", data, StringComparison.Ordinal)}}},{"type":"text","text":"summarise"}]}]}""";

        using var response = await g.Client.SendAsync(g.Post("/v1/messages", body, anthropicHeader: true));

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal(calls, g.Upstream.RequestCount);
        var entry = await g.EntryAsync(TestGateway.RequestIdOf(response));
        Assert.Equal(["deny.prompt_restricted"], ReasonsOf(entry));
    }

    [Theory]
    [InlineData("""{"type":"base64","media_type":"image/png","data":"{{DATA}}"}""")]
    [InlineData("""{"data":"{{DATA}}","media_type":"image/png","type":"base64"}""")]
    public async Task PromptRules_AnAnthropicBase64Image_IsNotReadAsText_AndCountsAsAnImage(string source)
    {
        // The same bytes as base64 image data are pixels: not searched (they would trip the rule by chance), one image's tokens.
        await using var g = await StartWithRulesAsync();
        var data = "AKIAIOSFODNN7EXAMPLE/" + new string('a', 300);
        var body = $$"""{"model":"claude-sonnet","max_tokens":50,"messages":[{"role":"user","content":[{"type":"image","source":{{source.Replace("{{DATA}}", data, StringComparison.Ordinal)}}},{"type":"text","text":"describe"}]}]}""";

        using var response = await g.Client.SendAsync(g.Post("/v1/messages", body, anthropicHeader: true));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }
}
