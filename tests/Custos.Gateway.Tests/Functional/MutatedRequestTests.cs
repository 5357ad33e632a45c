using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Custos.Testing;

namespace Custos.Gateway.Tests.Functional;

/// <summary>
/// Valid requests mutated at random (seeded, so a failure repeats), sent through the gateway to a healthy provider:
/// whatever arrives gets an answer with its request id, a refusal says why in a JSON error, nothing fails inside the
/// gateway or the mock provider, and each request has exactly one ledger entry. Over 9,000 requests with other seeds it
/// found one failure: the mock threw on a name that is not text ("cont\ud83dent") and the client got a 502.
/// </summary>
public sealed class MutatedRequestTests
{
    private const int Requests = 400;

    private static readonly (string Path, string Body, bool Anthropic)[] Seeds =
    [
        ("/v1/chat/completions", """{"model":"fast","messages":[{"role":"user","content":"hi"}],"max_tokens":20}""", false),
        ("/v1/chat/completions", """{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"n":1,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}""", false),
        ("/v1/embeddings", """{"model":"text-embedding-3-small","input":["a","b"]}""", false),
        ("/v1/messages", """{"model":"claude-sonnet","max_tokens":16,"system":"s","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}]}""", true),
        ("/v1/messages", """{"model":"claude-sonnet","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"hi"}]}""", true),
        ("/v1/responses", """{"model":"fast","instructions":"be brief","input":[{"role":"user","content":[{"type":"input_text","text":"hi"}]}],"max_output_tokens":20}""", false),
        ("/v1/responses", """{"model":"gpt-4o-mini","stream":true,"input":"hi"}""", false),
    ];

    private static readonly string[] Fragments =
    [
        "{", "}", "[", "]", ",", ":", "\"", "\\", "\\u", "\\ud83d", "null", "true", "-1", "0", "1e309", "9223372036854775808", " ",
        "\"model\"", "\"stream\"", "\"stream_options\"", "\"include_usage\"", "\"max_tokens\"", "\"max_completion_tokens\"", "\"n\"",
        "\"messages\"", "\"system\"", "\"input\"", "\"prompt\"", "\"content\"",
        "\"instructions\"", "\"max_output_tokens\"",
    ];

    [Fact]
    public async Task MutatedRequests_AreEachAnsweredWithTheirRequestId_NeverFailInside_AndRecordedOnce()
    {
        await using var g = await TestGateway.StartAsync();
        var random = new Random(20261130);
        var ids = new List<string>();
        var statuses = new Dictionary<int, int>();

        for (var i = 0; i < Requests; i++)
        {
            var (path, seed, anthropic) = Seeds[random.Next(Seeds.Length)];
            var body = Mutations.Apply(Encoding.UTF8.GetBytes(seed), random, Fragments, fewest: 0, most: 2, longestRepeat: 60);
            using var request = g.Post(path, "", anthropicHeader: anthropic);
            request.Content = new ByteArrayContent(body) { Headers = { ContentType = new MediaTypeHeaderValue("application/json") } };
            using var response = await g.Client.SendAsync(request);
            var text = await response.Content.ReadAsStringAsync();
            var context = $"request {i} to {path}: {Encoding.UTF8.GetString(body)} -> {(int)response.StatusCode} {text}";

            var id = TestGateway.RequestIdOf(response);
            ids.Add(id);
            statuses[(int)response.StatusCode] = statuses.GetValueOrDefault((int)response.StatusCode) + 1;
            Assert.True((int)response.StatusCode < 500, context); // the provider is healthy: a 5xx is a failure inside
            if (!response.IsSuccessStatusCode)
            {
                using var json = JsonDocument.Parse(text);
                var error = json.RootElement.GetProperty("error");
                Assert.True(error.GetProperty("code").GetString() is { Length: > 0 } && error.GetProperty("request_id").GetString() == id, context);
            }
        }

        var entries = (await g.LedgerAsync()).Where(e => e.TryGetProperty("request_id", out _)).ToList();
        foreach (var id in ids)
        {
            Assert.Single(entries, e => e.GetProperty("request_id").GetString() == id);
        }

        Assert.DoesNotContain(g.Logs.Lines, l => l.StartsWith("Error", StringComparison.Ordinal) || l.StartsWith("Critical", StringComparison.Ordinal));

        // The mutations must leave enough requests whole to reach the provider, and break enough to be refused.
        Assert.True(statuses.GetValueOrDefault(200) > Requests / 5, string.Join(", ", statuses.Select(s => $"{s.Key}: {s.Value}")));
        Assert.True(statuses.GetValueOrDefault(400) > Requests / 5, string.Join(", ", statuses.Select(s => $"{s.Key}: {s.Value}")));
    }
}
