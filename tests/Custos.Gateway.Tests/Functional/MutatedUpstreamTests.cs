using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Custos.Policy;
using Custos.Testing;

namespace Custos.Gateway.Tests.Functional;

/// <summary>
/// A provider that answers badly, at random (seeded, so a failure repeats): usage counts that are no counts or too large
/// to add, bodies with flipped or cut bytes, odd statuses, a stream sent with a Content-Length or answered with JSON,
/// bodies over the 64 KB the gateway holds back. Whatever it sends, each request is answered within seconds with its
/// request id, a gateway error says what went wrong in a JSON error, nothing fails inside the gateway, and each request
/// has exactly one ledger entry with counts of zero or more. The same checks over a Python provider, about 3,000 answers,
/// found six failures (2026-11-30): responses whose end never reached the client, an overflow that failed the request
/// inside the gateway, an output count that was no count recorded as zero output, Kestrel's bare 500 for an error
/// written after a held body, a 502 carrying the provider's partial bytes, and a provider's redirect passed to the client.
/// </summary>
public sealed class MutatedUpstreamTests
{
    private const int Requests = 160;

    private static readonly string[] OddCounts = ["-1", "1.5", "\"10\"", "null", "true", "[]", "9223372036854775807", "18446744073709551616", "1e400"];

    private static readonly int[] OddStatuses = [201, 204, 301, 302, 307, 400, 404, 429, 500, 503, 529];

    private static readonly string[] Fragments = ["{", "}", "\"", ",", ":", "\\", "\\ud83d", "null", "-1", "\n\n", "data: ", "[DONE]"];

    [Fact]
    public async Task ABadProvider_EveryRequestIsAnsweredWithItsId_NeverFailsInside_AndIsRecordedOnce()
    {
        await using var provider = ScriptedProvider.Start();
        await using var g = await TestGateway.StartAsync((_, policy) => policy with
        {
            Tenants = [.. policy.Tenants.Select(t => t with
            {
                Providers = [.. t.Providers.Select(p => p.Id is "openai" or "anthropic"
                    ? p with { BaseUrl = new Uri(provider.BaseUri + (p.Kind == ProviderKind.OpenAI ? "v1" : "")) }
                    : p)],
            })],
        });
        var random = new Random(20261130);
        var answers = new List<(string Id, int Status, string Script)>();
        var resets = 0;

        for (var i = 0; i < Requests; i++)
        {
            var anthropic = random.Next(3) == 0;
            var stream = random.Next(2) == 0;
            var (script, reply) = Script(random, anthropic, stream);
            provider.Next.Enqueue(reply);
            var body = anthropic
                ? $$"""{"model":"claude-sonnet","max_tokens":20,"stream":{{(stream ? "true" : "false")}},"messages":[{"role":"user","content":"hi"}]}"""
                : $$"""{"model":"gpt-4o-mini","stream":{{(stream ? "true" : "false")}},{{(random.Next(2) == 0 ? "\"stream_options\":{\"include_usage\":true}," : "")}}"messages":[{"role":"user","content":"hi"}]}""";
            using var request = g.Post(anthropic ? "/v1/messages" : "/v1/chat/completions", body, anthropicHeader: anthropic);
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            var context = $"request {i} ({script})";

            HttpResponseMessage response;
            try
            {
                response = await g.Client.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token);
            }
            catch (OperationCanceledException) when (timeout.IsCancellationRequested)
            {
                Assert.Fail($"{context}: no answer within 10 s");
                throw;
            }
            catch (HttpRequestException) when (BreaksOff(script))
            {
                // The provider broke off mid-answer, and the gateway broke off the client's connection so that it never holds a
                // whole-looking answer: a reset, which can overtake the headers that went out before it.
                resets++;
                continue;
            }

            using (response)
            {
                var id = TestGateway.RequestIdOf(response);
                string text;
                try
                {
                    text = await response.Content.ReadAsStringAsync(timeout.Token);
                }
                catch (HttpRequestException) when (BreaksOff(script))
                {
                    answers.Add((id, -1, script)); // the reset came after the headers
                    continue;
                }
                catch (OperationCanceledException) when (timeout.IsCancellationRequested)
                {
                    Assert.Fail($"{context}: {(int)response.StatusCode}, but the answer never ended");
                    throw;
                }

                if ((int)response.StatusCode >= 500)
                {
                    using var json = JsonDocument.Parse(text);
                    var error = json.RootElement.GetProperty("error");
                    Assert.True(error.GetProperty("code").GetString() is { Length: > 0 } && error.GetProperty("request_id").GetString() == id,
                        $"{context}: {(int)response.StatusCode} {text}");
                }

                answers.Add((id, (int)response.StatusCode, script));
            }
        }

        await g.Gateway.Ledger.FlushAsync();
        var entries = (await g.LedgerAsync()).Where(e => e.TryGetProperty("request_id", out _)).ToList();
        Assert.Equal(Requests, entries.Count); // the resets' too, whose ids the client never saw
        foreach (var (id, status, script) in answers)
        {
            var entry = Assert.Single(entries, e => e.GetProperty("request_id").GetString() == id);
            if (status > 0)
            {
                Assert.True(status == entry.GetProperty("status").GetInt32(), $"{id} ({script}): answered {status}, recorded {entry}");
            }

            foreach (var count in (string[])["input_tokens", "output_tokens"])
            {
                Assert.True(entry.GetProperty(count).ValueKind == JsonValueKind.Null || entry.GetProperty(count).GetInt64() >= 0, $"{id} ({script}): {entry}");
            }
        }

        Assert.DoesNotContain(g.Logs.Lines, l => l.StartsWith("Error", StringComparison.Ordinal) || l.StartsWith("Critical", StringComparison.Ordinal));
        Assert.True(answers.Count(a => a.Status == 200) > Requests / 4, $"{string.Join(", ", answers.GroupBy(a => a.Status).Select(s => $"{s.Key}: {s.Count()}"))}, resets before the headers: {resets}");
    }

    /// <summary>Whether the provider may break off mid-answer: cut short, or its bytes mutated into an unfinished stream.</summary>
    private static bool BreaksOff(string script) => script.StartsWith("cut", StringComparison.Ordinal) || script.StartsWith("bytes", StringComparison.Ordinal);

    /// <summary>One bad answer: its name for the failure message, and the raw HTTP response the provider sends.</summary>
    private static (string Name, Reply Reply) Script(Random random, bool anthropic, bool stream)
    {
        string input = "10", output = "5";
        var status = 200;
        var kind = random.Next(9);
        if (kind == 0)
        {
            (input, output) = (OddCounts[random.Next(OddCounts.Length)], OddCounts[random.Next(OddCounts.Length)]);
        }

        var text = kind == 1 ? new string('y', 70_000) : "Hello there";
        var body = Encoding.UTF8.GetBytes(stream ? Stream(anthropic, text, input, output) : Json(anthropic, text, input, output));
        var contentType = stream ? "text/event-stream" : "application/json";
        var sized = !stream || random.Next(2) == 0; // a stream with a Content-Length, as a buffering server sends it
        string name;
        switch (kind)
        {
            case 0:
                name = $"usage {input}/{output}";
                break;
            case 1:
                name = "large";
                break;
            case 2:
                body = Mutations.Apply(body, random, Fragments, fewest: 1, most: 3, longestRepeat: 40);
                name = "bytes";
                break;
            case 3:
                return ("cut", new Reply(Head(200, contentType, body.Length) + "\r\n", body[..random.Next(body.Length)], Close: true));
            case 4:
                status = OddStatuses[random.Next(OddStatuses.Length)];
                name = $"status {status}";
                if (status is 204 or 301 or 302 or 307)
                {
                    var location = status == 204 ? "" : "Location: https://elsewhere.example/v1\r\n";
                    return (name, new Reply(Head(status, contentType, body.Length) + location + "\r\n", status == 204 ? [] : body, Close: false));
                }

                break;
            case 5:
                body = Encoding.UTF8.GetBytes(stream ? Json(anthropic, text, input, output) : Stream(anthropic, text, input, output));
                contentType = stream ? "application/json" : "text/event-stream";
                name = "the other shape";
                break;
            default:
                name = "whole";
                break;
        }

        if (!sized)
        {
            var chunked = new StringBuilder();
            foreach (var piece in body.Chunk(97))
            {
                chunked.Append(FormattableString.Invariant($"{piece.Length:x}\r\n")).Append(Encoding.Latin1.GetString(piece)).Append("\r\n");
            }

            return (name + " chunked", new Reply(
                $"HTTP/1.1 {status} X\r\nContent-Type: {contentType}\r\nTransfer-Encoding: chunked\r\n\r\n", Encoding.Latin1.GetBytes(chunked + "0\r\n\r\n"), Close: false));
        }

        return (name, new Reply(Head(status, contentType, body.Length) + "\r\n", body, Close: false));
    }

    private static string Head(int status, string contentType, int length)
        => FormattableString.Invariant($"HTTP/1.1 {status} X\r\nContent-Type: {contentType}\r\nContent-Length: {length}\r\n");

    private static string Json(bool anthropic, string text, string input, string output) => anthropic
        ? $$$$"""{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"{{{{text}}}}"}],"stop_reason":"end_turn","usage":{"input_tokens":{{{{input}}}},"output_tokens":{{{{output}}}}}}"""
        : $$$$"""{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"{{{{text}}}}"},"finish_reason":"stop"}],"usage":{"prompt_tokens":{{{{input}}}},"completion_tokens":{{{{output}}}},"total_tokens":15}}""";

    private static string Stream(bool anthropic, string text, string input, string output) => anthropic
        ? $$$$"""
            event: message_start
            data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":{{{{input}}}},"output_tokens":1}}}

            event: content_block_delta
            data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"{{{{text}}}}"}}

            event: message_delta
            data: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":{{{{output}}}}}}

            event: message_stop
            data: {"type":"message_stop"}


            """.ReplaceLineEndings("\n")
        : $$$$"""
            data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"{{{{text}}}}"},"finish_reason":null}]}

            data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}

            data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":{{{{input}}}},"completion_tokens":{{{{output}}}},"total_tokens":15}}

            data: [DONE]


            """.ReplaceLineEndings("\n");
}
