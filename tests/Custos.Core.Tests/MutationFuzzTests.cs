using System.Buffers;
using System.Text;
using System.Text.Json;
using Custos.Controls;
using Custos.Metering;
using Custos.Policy;
using Custos.Testing;

namespace Custos.Core.Tests;

/// <summary>
/// Recorded provider traffic, request bodies and the example configuration, mutated at random (seeded, so a failure
/// repeats): whatever arrives, the meter passes the provider's bytes on and never throws; the parser either refuses a
/// body or edits it into one it reads back as intended, checked with another parser (docs/architecture.md, "One reading
/// of a request"); the configuration reader reports what is wrong, and what it passes compiles. Each found bugs when
/// first run: a name such as "\ude00" threw out of the meter, a ceiling went in beside "max_tokens":null, YAML that
/// YamlDotNet throws other exceptions on ended `custos config validate`, and an empty key hash passed validation.
/// </summary>
public sealed class MutationFuzzTests
{
    private const int Runs = 20_000;

    private static readonly string[] Fragments =
    [
        "{", "}", "[", "]", ",", ":", "\"", "\\", "\\u", "\\ud83d", "\\ude00", "null", "true", "1e999", "-1", "-7", "0",
        "9223372036854775808", "\"usage\"", "\"choices\"", "\"type\"", "\"delta\"", "\"content\"", "\"text\"", "data: ", "\n",
        "\r\n", "\n\n", "event: ", "[DONE]", "\"prompt_tokens\"", "\"completion_tokens\"", "\"input_tokens\"", "\"output_tokens\"",
        "\"message_delta\"", "\"message_stop\"", "\"usage\":null", "\"usage\":{\"prompt_tokens\":5}", " ", "\"model\"", "\"stream\"",
        "\"stream_options\"", "\"include_usage\"", "\"max_tokens\"", "\"max_completion_tokens\"", "\"n\"", "\"messages\"", "\"system\"",
    ];

    /// <summary>The top-level fields the gateway reads or writes (other fields it passes on as they are, repeated or not).</summary>
    private static readonly HashSet<string> Governed = new(StringComparer.Ordinal)
    {
        "model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "n", "messages", "prompt", "input", "system",
    };

    private static byte[] Cassette(string name) => File.ReadAllBytes(Path.Combine(AppContext.BaseDirectory, "Cassettes", name));

    [Fact]
    public void ResponseMeter_OverMutatedProviderTraffic_PassesItOnAndNeverThrows()
    {
        (byte[] Body, ProviderKind Provider, bool Stream)[] seeds =
        [
            (Cassette("openai-chat-stream-include-usage.sse"), ProviderKind.OpenAI, true),
            (Cassette("openai-chat-stream.sse"), ProviderKind.OpenAI, true),
            (Cassette("anthropic-messages-stream.sse"), ProviderKind.Anthropic, true),
            (Cassette("openai-chat.json"), ProviderKind.OpenAI, false),
            (Cassette("anthropic-messages.json"), ProviderKind.Anthropic, false),
        ];
        var random = new Random(20261130);

        for (var run = 0; run < Runs; run++)
        {
            var (seed, provider, stream) = seeds[random.Next(seeds.Length)];
            var body = Mutations.Apply(seed, random, Fragments);
            var hide = random.Next(2) == 0;
            var chunk = random.Next(3) switch { 0 => 1, 1 => random.Next(2, 64), _ => body.Length + 1 };
            var output = new ArrayBufferWriter<byte>();
            using var meter = new ResponseMeter(provider, stream, hide);
            try
            {
                for (var offset = 0; offset < body.Length; offset += chunk)
                {
                    meter.Process(body.AsSpan(offset, Math.Min(chunk, body.Length - offset)), output);
                }

                meter.Complete(output);
                meter.EstimateOutputTokens();
            }
            catch (Exception e)
            {
                Assert.Fail($"run {run} ({provider}, stream {stream}, hide {hide}, chunks of {chunk}) threw {e}\nbody: {Encoding.UTF8.GetString(body)}");
            }

            // Without hiding, what the client gets is exactly what the provider sent; hiding touches only usage.
            var unchanged = !hide || body.AsSpan().IndexOf("usage"u8) < 0;
            Assert.True(!unchanged || output.WrittenSpan.SequenceEqual(body), $"run {run}: the output differs from the provider's bytes");
            Assert.Equal(output.WrittenCount, meter.BytesOut);
            Assert.True(meter.InputTokens is null or >= 0 && meter.OutputTokens is null or >= 0, $"run {run}: a count below zero");
        }
    }

    [Fact]
    public void ChatRequest_OverMutatedBodies_RefusesThemOrEditsThemIntoWhatItMeant()
    {
        string[] seeds =
        [
            """{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true,"max_completion_tokens":50,"n":2,"stream_options":{"include_usage":false}}""",
            """{"model":"fast","stream":true,"stream_options":null,"messages":[]}""",
            """{ "model" : "claude", "max_tokens" : 1024, "system" : "be nice \u00e9", "messages" : [ { "role" : "user", "content" : [ { "type" : "text", "text" : "x\ny" } ] } ] }""",
            """{"prompt":"once upon","model":"m","max_tokens":null,"stream_options":{"other":1}}""",
        ];
        var random = new Random(20261130);
        var checkedEdits = 0;

        for (var run = 0; run < Runs; run++)
        {
            var body = Mutations.Apply(Encoding.UTF8.GetBytes(seeds[random.Next(seeds.Length)]), random, Fragments, most: 2);
            var error = ChatRequest.TryParse(body, out var request);
            if (error != ParseError.None || request.Model is null)
            {
                continue; // refused, with a reason, before any edit
            }

            Assert.True(IsJsonObject(body), $"run {run}: not JSON, but understood: {Encoding.UTF8.GetString(body)}");
            var forceUsage = random.Next(2) == 0;
            long? ceiling = random.Next(2) == 0 ? null : random.Next(1, 100_000);
            var edits = new List<BodyEdit>();
            var output = new ArrayBufferWriter<byte>();
            request.AddEdits(body, "upstream-model", forceUsage, ceiling, edits);
            BodyEdits.Apply(body, edits, output);

            var sent = output.WrittenSpan.ToArray();
            var context = $"run {run}: {Encoding.UTF8.GetString(body)} became {Encoding.UTF8.GetString(sent)}";
            AssertSentAsMeant(sent, forceUsage, ceiling, context);
            Assert.True(ChatRequest.TryParse(sent, out var edited) == ParseError.None, context);
            Assert.True(request.PromptText.SequenceEqual(edited.PromptText) && (request.Stream, request.N) == (edited.Stream, edited.N), context);
            checkedEdits++;
        }

        Assert.True(checkedEdits > Runs / 10, $"only {checkedEdits} bodies were understood and edited");
    }

    [Fact]
    public void PolicyYaml_OverMutatedConfigurations_ReportsDiagnostics_AndWhatItPassesCompiles()
    {
        string[] fragments =
        [
            ":", "- ", "\n", "  ", "{", "}", "[", "]", "&a", "*a", "!!str", "!!int", "null", "~", "-1", "0", "1e999", "\"", "'", "#",
            "? ", "|", ">", "tenants", "models", "limits", "budget", "<<: *a", "2026-13-45", "\t",
        ];
        var seed = File.ReadAllText(Repo.File("custos.example.yaml"));
        var random = new Random(20261130);
        var valid = 0;

        for (var run = 0; run < 3000; run++)
        {
            var yaml = new StringBuilder(seed);
            for (var k = random.Next(1, 4); k > 0; k--)
            {
                var at = random.Next(yaml.Length + 1);
                switch (random.Next(3))
                {
                    case 0 when at < yaml.Length:
                        yaml.Remove(at, Math.Min(random.Next(1, 10), yaml.Length - at));
                        break;
                    case 1:
                        var from = random.Next(yaml.Length);
                        yaml.Insert(at, yaml.ToString(from, Math.Min(random.Next(1, 80), yaml.Length - from)));
                        break;
                    default:
                        yaml.Insert(at, fragments[random.Next(fragments.Length)]);
                        break;
                }
            }

            try
            {
                var result = PolicyYaml.Read(yaml.ToString());
                if (result.Document is { } document)
                {
                    PolicySnapshot.Compile(new PolicyVersion(1, "", "fuzz", "fuzz", DateTimeOffset.UnixEpoch, document), _ => null);
                    valid++;
                }
                else
                {
                    Assert.Contains(result.Diagnostics, d => d.Severity == DiagnosticSeverity.Error);
                }
            }
            catch (Exception e) when (e is not Xunit.Sdk.XunitException)
            {
                Assert.Fail($"run {run} threw {e}\n{yaml}");
            }
        }

        Assert.True(valid > 300, $"only {valid} of 3000 mutated configurations were valid");
    }

    /// <summary>Read as a provider would, with another parser: each field once, and the gateway's values in them.</summary>
    private static void AssertSentAsMeant(byte[] sent, bool forceUsage, long? ceiling, string context)
    {
        using var document = JsonDocument.Parse(sent);
        var fields = document.RootElement.EnumerateObject().Where(IsGoverned).ToList();
        Assert.True(fields.Count == fields.Select(f => f.Name).Distinct(StringComparer.Ordinal).Count(), context);
        var values = fields.ToDictionary(f => f.Name, f => f.Value, StringComparer.Ordinal);
        Assert.True(values["model"].GetString() == "upstream-model", context);
        Assert.True(!forceUsage || values["stream_options"].GetProperty("include_usage").GetBoolean(), context);
        if (ceiling is { } most)
        {
            var ceilings = fields.Where(f => f.Name is "max_tokens" or "max_completion_tokens").ToList();
            Assert.True(ceilings.Count > 0 && ceilings.All(f => f.Value.ValueKind == JsonValueKind.Number && f.Value.GetInt64() == most), context);
        }
    }

    private static bool IsGoverned(JsonProperty field)
    {
        try
        {
            return Governed.Contains(field.Name);
        }
        catch (InvalidOperationException)
        {
            return false; // a name that is not text, such as "\ude00": none of the gateway's
        }
    }

    private static bool IsJsonObject(byte[] body)
    {
        try
        {
            using var document = JsonDocument.Parse(body);
            return document.RootElement.ValueKind == JsonValueKind.Object;
        }
        catch (JsonException)
        {
            return false;
        }
    }
}
