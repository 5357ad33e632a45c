using System.Text;
using System.Text.Json;
using Custos.Controls;
using Custos.Errors;
using Custos.Ledger;
using Custos.Policy;

namespace Custos.Core.Tests;

/// <summary>
/// Freezes the persisted ledger format. If one of these fails, you changed a contract: records already in
/// ledgers would no longer verify. Append fields at the end, bump LedgerFormat.Version, and add a migration note.
/// </summary>
public sealed class LedgerCanonicalFormTests
{
    internal static RequestRecord SampleRequest()
    {
        var record = new RequestRecord
        {
            RequestId = "req_01JDQ0000000000000000000AB",
            NodeId = "node-a",
            Method = "POST",
            Endpoint = "/v1/chat/completions",
            Timestamp = new DateTimeOffset(2026, 11, 28, 14, 15, 30, 123, TimeSpan.Zero).AddTicks(4560),
            Tenant = "acme",
            Service = "support-assistant",
            Consumer = "support-web",
            Category = "external",
            CredentialId = "cred-support-web",
            Stream = true,
            Model = "fast",
            ModelServed = "gpt-4o-mini",
            Provider = "openai",
            PolicyVersion = 3,
            PolicyHash = new string('a', 64),
            InputTokens = 9,
            OutputTokens = 4,
            Cost = 0.0000037500m,
            Currency = "USD",
            UpstreamStatus = 200,
            Status = 200,
            GatewayMs = 0.41234,
            UpstreamMs = 12.5,
            ClientAddress = "127.0.0.1",
            AgentRun = "run-7",
            OnBehalfOf = "user:alice",
            PromptSha256 = new string('b', 64),
            RequestBytes = 120,
            ResponseBytes = 900,
            MaxOutputTokens = 1024,
            N = 1,
        };
        record.Controls =
        [
            new Custos.Controls.ControlResult("budget", "tenant:acme", "pass") { Limit = 50.00m, Used = 12.40m, Reserved = 0.030m, Requested = 0.01m },
            new Custos.Controls.ControlResult("token_ceiling.output", "consumer:support-web", "modify") { Limit = 1024, Requested = 4096, Detail = "clamped 4096 to 1024" },
        ];
        return record;
    }

    [Fact]
    public void RequestRecord_CanonicalForm_IsFrozen()
    {
        var chain = new HashChain("node-a", 0, HashChain.Genesis);

        var sealedRecord = chain.Append(SampleRequest());

        Assert.Equal(
            """{"v":2,"kind":"request","request_id":"req_01JDQ0000000000000000000AB","timestamp":"2026-11-28T14:15:30.123456Z","node_id":"node-a","tenant":"acme","service":"support-assistant","consumer":"support-web","category":"external","credential_id":"cred-support-web","method":"POST","endpoint":"/v1/chat/completions","stream":true,"model":"fast","model_served":"gpt-4o-mini","provider":"openai","decision":"allow","reasons":[],"policy_version":3,"policy_hash":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","input_tokens":9,"output_tokens":4,"tokens_estimated":false,"cost":"0.000003750","currency":"USD","upstream_status":200,"status":200,"outcome":"completed","gateway_ms":0.412,"upstream_ms":12.5,"client_address":"127.0.0.1","agent_run":"run-7","on_behalf_of":"user:alice","prompt_sha256":"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb","request_bytes":120,"response_bytes":900,"max_output_tokens":1024,"n":1,"controls":[{"control":"budget","scope":"tenant:acme","decision":"pass","limit":50,"used":12.4,"reserved":0.03,"requested":0.01},{"control":"token_ceiling.output","scope":"consumer:support-web","decision":"modify","limit":1024,"requested":4096,"detail":"clamped 4096 to 1024"}]}""",
            Encoding.UTF8.GetString(sealedRecord.Canonical.Span));
        Assert.Equal(1, sealedRecord.Seq);
        Assert.Equal(HashChain.Genesis, sealedRecord.PrevHash);
        Assert.Equal(HashChain.Link(HashChain.Genesis, sealedRecord.Canonical.Span), sealedRecord.Hash);
    }

    [Fact]
    public void ShedRecord_CanonicalForm_IsFrozen()
    {
        var record = new ShedRecord
        {
            Timestamp = new DateTimeOffset(2026, 11, 28, 14, 15, 31, TimeSpan.Zero),
            First = new DateTimeOffset(2026, 11, 28, 14, 15, 30, 500, TimeSpan.Zero),
            NodeId = "node-a",
            Reasons = new Dictionary<string, long> { ["unavailable.overloaded"] = 2, ["unavailable.ledger_backlog"] = 40 },
            PolicyVersion = 3,
        };

        var json = Encoding.UTF8.GetString(new HashChain("node-a", 0, HashChain.Genesis).Append(record).Canonical.Span);

        Assert.Equal(
            """{"v":2,"kind":"shed","timestamp":"2026-11-28T14:15:31.000000Z","tenant":null,"node_id":"node-a","first":"2026-11-28T14:15:30.500000Z","count":42,"reasons":{"unavailable.ledger_backlog":40,"unavailable.overloaded":2},"policy_version":3}""",
            json);
    }

    [Fact]
    public void LedgerTime_WritesTheFrozenPattern_ForAnyInstant()
    {
        var random = new Random(20261128);
        DateTimeOffset[] edges = [DateTimeOffset.UnixEpoch, new(2026, 12, 31, 23, 59, 59, 999, TimeSpan.Zero), new(2026, 11, 28, 14, 15, 30, TimeSpan.FromHours(5.5)), new DateTimeOffset(9999, 12, 31, 0, 0, 0, TimeSpan.Zero).AddTicks(9_999_999)];
        var instants = edges.Concat(Enumerable.Range(0, 2000).Select(_ => new DateTimeOffset(random.NextInt64(DateTimeOffset.MinValue.Ticks, DateTimeOffset.MaxValue.Ticks), TimeSpan.Zero)));

        foreach (var instant in instants)
        {
            var expected = instant.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.ffffff'Z'", System.Globalization.CultureInfo.InvariantCulture);
            Assert.Equal(expected, LedgerTime.Format(instant));
            Assert.Equal(instant.UtcTicks / 10, LedgerTime.Parse(expected).UtcTicks / 10);
        }
    }

    [Fact]
    public void HashChain_LinkRule_IsFrozen()
    {
        // sha256("000…000\n{}") computed independently.
        var expected = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(Encoding.ASCII.GetBytes(new string('0', 64) + "\n{}")));

        Assert.Equal(expected, HashChain.Link(HashChain.Genesis, "{}"u8));
    }

    [Fact]
    public void HashChain_AlteringAnyRecord_ChangesEveryLaterHash()
    {
        var chain = new HashChain("node-a", 0, HashChain.Genesis);
        var first = chain.Append(SampleRequest());
        var second = chain.Append(SampleRequest());
        var tampered = SampleRequest();
        tampered.OutputTokens = 3;
        var other = new HashChain("node-a", 0, HashChain.Genesis);

        var firstTampered = other.Append(tampered);
        var secondAfter = other.Append(SampleRequest());

        Assert.NotEqual(first.Hash, firstTampered.Hash);
        Assert.NotEqual(second.Hash, secondAfter.Hash);
        Assert.Equal(2, second.Seq);
        Assert.Equal(first.Hash, second.PrevHash);
    }

    [Fact]
    public void DeniedRecord_WritesDecisionReasonsAndNulls()
    {
        var record = new RequestRecord
        {
            RequestId = "req_x",
            NodeId = "n",
            Method = "GET",
            Endpoint = "/v1/nope",
            Timestamp = DateTimeOffset.UnixEpoch,
        };
        record.Fail(Reasons.UnknownEndpoint, Outcome.Denied);
        record.Status = 404;

        var json = Encoding.UTF8.GetString(new HashChain("n", 0, HashChain.Genesis).Append(record).Canonical.Span);

        Assert.Contains("\"decision\":\"deny\",\"reasons\":[\"invalid.endpoint\"]", json, StringComparison.Ordinal);
        Assert.Contains("\"tenant\":null", json, StringComparison.Ordinal);
        Assert.Contains("\"outcome\":\"denied\"", json, StringComparison.Ordinal);
        Assert.Contains("\"cost\":null", json, StringComparison.Ordinal);
    }

    [Fact]
    public void ReasonCodes_AreUniqueAndDocumented()
    {
        var codes = Reasons.All.Select(r => r.Code).ToList();
        Assert.Equal(codes.Count, codes.Distinct().Count());

        var catalogue = File.ReadAllText(Repo.File("docs/decisions.md"));
        Assert.All(codes, code => Assert.Contains($"`{code}`", catalogue, StringComparison.Ordinal));
    }

    [Fact]
    public void ControlResult_WritesEveryReadingWithTheDecimalFormattersSpelling()
    {
        var random = new Random(7);
        decimal[] edges = [0m, -0m, 0.000m, 1m, 1.0m, 12.40m, -3m, long.MaxValue, (decimal)long.MaxValue + 1, 1000000000000m, 0.000014400m, decimal.MaxValue, decimal.MinValue,
            ulong.MaxValue, (decimal)ulong.MaxValue + 1, 1.8446744073709551615m, 0.0000000000000000000000000001m, 0.1000000000000000000000000000m, 5.000m, 0.10m];
        var values = edges.Concat(Enumerable.Range(0, 8000).Select(_ => random.Next(4) switch
        {
            0 => (decimal)random.NextInt64(0, long.MaxValue),
            1 => new decimal(random.Next(), random.Next(), 0, false, (byte)random.Next(0, 12)),
            2 => new decimal(random.Next(), random.Next(3) == 0 ? 0 : random.Next() | int.MinValue, 0, false, (byte)random.Next(0, 29)),
            _ => new decimal(random.Next(), random.Next(), random.Next(), random.Next(2) == 0, (byte)random.Next(0, 29)),
        }));

        foreach (var value in values)
        {
            var result = new ControlResult("quota.tokens_per_day", "consumer:c", ControlDecisions.Pass) { Limit = value, Used = value, Reserved = value, Requested = value };
            var expected = Write(w =>
            {
                w.WriteStartObject();
                w.WriteString("control", "quota.tokens_per_day");
                w.WriteString("scope", "consumer:c");
                w.WriteString("decision", "pass");
                foreach (var name in (string[])["limit", "used", "reserved", "requested"])
                {
                    w.WriteNumber(name, PolicyNames.Normalize(value));
                }

                w.WriteEndObject();
            });
            Assert.Equal(expected, Write(result.WriteTo));
        }

        static string Write(Action<Utf8JsonWriter> write)
        {
            using var stream = new MemoryStream();
            using (var writer = new Utf8JsonWriter(stream))
            {
                write(writer);
            }

            return Encoding.UTF8.GetString(stream.ToArray());
        }
    }
}
