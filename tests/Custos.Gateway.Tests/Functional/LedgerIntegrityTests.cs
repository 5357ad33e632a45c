using System.Text;
using Custos.Ledger;

namespace Custos.Gateway.Tests.Functional;

/// <summary>Exactly one entry per request, nothing lost on shutdown, and no secret anywhere.</summary>
public sealed class LedgerIntegrityTests
{
    private const string Chat = """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}""";

    [Fact]
    public async Task ConcurrentMixedRequests_YieldExactlyOneEntryEach()
    {
        await using var g = await TestGateway.StartAsync();
        string[] bodies =
        [
            Chat,
            """{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"s"}]}""",
            """{"model":"gpt-4o","messages":[]}""",
            "not json",
        ];

        var responses = await Task.WhenAll(Enumerable.Range(0, 120).Select(async i =>
        {
            using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions", bodies[i % bodies.Length]));
            await response.Content.ReadAsStringAsync();
            return TestGateway.RequestIdOf(response);
        }));

        await g.WaitForRecordsAsync(121); // and the policy version's admin record
        var entries = await g.LedgerAsync();
        Assert.Equal(120, responses.Distinct().Count());
        Assert.Equal(responses.Order(), entries.Select(e => e.GetProperty("request_id").GetString()!).Order());
        Assert.Equal(30, entries.Count(e => e.GetProperty("reasons").EnumerateArray().Any(r => r.GetString() == "deny.model_not_entitled")));
        Assert.Equal(30, entries.Count(e => e.GetProperty("reasons").EnumerateArray().Any(r => r.GetString() == "invalid.json")));
    }

    [Fact]
    public async Task GracefulShutdown_FlushesEveryEntry_AndTheChainContinuesAfterRestart()
    {
        var g = await TestGateway.StartAsync();
        var directory = g.DataDirectory;
        string[] ids;
        try
        {
            ids = await Task.WhenAll(Enumerable.Range(0, 50).Select(async _ =>
            {
                using var response = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat));
                return TestGateway.RequestIdOf(response);
            }));

            // Stop without flushing first: disposal itself must drain the queue.
            await g.Gateway.DisposeAsync();

            await using var store = await Storage.SqliteStore.OpenExistingAsync(directory);
            var stored = new List<StoredRecord>();
            await foreach (var row in store.QueryAsync(new LedgerQuery { Kind = null, Limit = 10_000 }))
            {
                stored.Add(row);
            }

            // 50 requests, the policy version's admin record, and the alert the first use of a model raised (handled during shutdown).
            Assert.Equal(50, stored.Count(r => r.Json.Contains("\"kind\":\"request\"", StringComparison.Ordinal)));
            Assert.Single(stored, r => r.Json.Contains("\"action\":\"alert.raised\"", StringComparison.Ordinal));
            Assert.Equal(52, stored.Count);
            Assert.All(ids, id => Assert.Contains(stored, r => r.Json.Contains(id, StringComparison.Ordinal)));
            var chain = stored.OrderBy(r => r.Seq).ToList();
            Assert.Equal(Enumerable.Range(1, 52).Select(i => (long)i), chain.Select(r => r.Seq));
            Assert.Equal(HashChain.Genesis, chain[0].PrevHash);
            for (var i = 0; i < chain.Count; i++)
            {
                Assert.Equal(HashChain.Link(chain[i].PrevHash, Encoding.UTF8.GetBytes(chain[i].Json)), chain[i].Hash);
                if (i > 0)
                {
                    Assert.Equal(chain[i - 1].Hash, chain[i].PrevHash);
                }
            }
        }
        finally
        {
            await g.DisposeAsync();
        }
    }

    [Fact]
    public async Task AfterARun_NoKeyAppearsInTheDatabaseOrTheLogs()
    {
        var g = await TestGateway.StartAsync();
        string database;
        try
        {
            foreach (var consumer in new[] { "web", "revoked-user", "admin" })
            {
                using var ok = await g.Client.SendAsync(g.Post("/v1/chat/completions", Chat, consumer));
            }

            using var failing = await g.Client.SendAsync(g.Post("/v1/chat/completions", """{"model":"mock-error-401","messages":[]}"""));
            using var anthropic = await g.Client.SendAsync(g.Post("/v1/messages", """{"model":"claude-sonnet","max_tokens":5,"messages":[{"role":"user","content":"x"}]}""", anthropicHeader: true));
            var typo = g.KeyOf("web")[..^1] + (g.KeyOf("web")[^1] == 'a' ? 'b' : 'a');
            var request = g.Post("/v1/chat/completions", Chat, consumer: null);
            request.Headers.Authorization = new("Bearer", typo);
            using var typoResponse = await g.Client.SendAsync(request);

            database = g.Gateway.Store.Description;
            await g.Gateway.DisposeAsync();
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();

            var bytes = string.Concat(new[] { database, database + "-wal" }.Where(File.Exists).Select(f => Encoding.UTF8.GetString(File.ReadAllBytes(f))));
            var logs = string.Join("\n", g.Logs.Lines);
            Assert.NotEmpty(g.Logs.Lines);
            foreach (var secret in g.AllKeys.Append(TestGateway.OpenAIUpstreamKey).Append(TestGateway.AnthropicUpstreamKey).Append(typo))
            {
                Assert.DoesNotContain(secret, bytes, StringComparison.Ordinal);
                Assert.DoesNotContain(secret, logs, StringComparison.Ordinal);
            }
        }
        finally
        {
            await g.DisposeAsync();
        }
    }
}
