using System.Text;
using Custos.Ledger;
using Custos.Metering;
using Custos.Policy;

namespace Custos.Benchmarks;

/// <summary>A realistic OpenAI stream (11 events, usage chunk) and a request record, shared with the allocation-budget test.</summary>
public sealed class MeteringFixture
{
    private readonly byte[][] _chunks;
    private readonly HashChain _chain = new("bench", 0, HashChain.Genesis);
    private readonly CanonicalArena _arena = new();
    private readonly RequestRecord _record;

    public MeteringFixture()
    {
        var stream = new StringBuilder();
        const string head = """{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1732780000,"model":"gpt-4o-mini","system_fingerprint":"fp_1","choices":""";
        stream.Append("data: ").Append(head).Append("""[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":null}""").Append("\n\n");
        foreach (var word in "The quick brown fox jumps over the lazy dog again".Split(' '))
        {
            stream.Append("data: ").Append(head).Append($$"""[{"index":0,"delta":{"content":"{{word}} "},"logprobs":null,"finish_reason":null}],"usage":null}""").Append("\n\n");
        }

        stream.Append("data: ").Append(head).Append("""[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}""").Append("\n\n");
        stream.Append("data: ").Append(head).Append("""[],"usage":{"prompt_tokens":12,"completion_tokens":10,"total_tokens":22}}""").Append("\n\n");
        stream.Append("data: [DONE]\n\n");
        var bytes = Encoding.UTF8.GetBytes(stream.ToString());
        _chunks = [.. bytes.Chunk(512)];
        _record = SampleRecord("req_01JDQ0000000000000000000AB", DateTimeOffset.UnixEpoch);
        _record.Controls =
        [
            new Controls.ControlResult("tenant_isolation", "tenant:acme", "pass") { Detail = "model resolved among tenant acme only" },
            new Controls.ControlResult("budget", "tenant:acme", "pass") { Limit = 50, Used = 12.4m, Reserved = 0.03m, Requested = 0.01m },
        ];
    }

    /// <summary>A completed chat request record, as the gateway records one (without controls).</summary>
    public static RequestRecord SampleRecord(string requestId, DateTimeOffset at) => new()
    {
        RequestId = requestId,
        NodeId = "bench",
        Method = "POST",
        Endpoint = "/v1/chat/completions",
        Timestamp = at,
        Tenant = "acme",
        Service = "support-assistant",
        Consumer = "support-web",
        Category = "external",
        CredentialId = "cred-support-web",
        Model = "gpt-4o-mini",
        ModelServed = "gpt-4o-mini",
        PolicyHash = new string('a', 64),
        InputTokens = 12,
        OutputTokens = 10,
        Cost = 0.000018m,
        Currency = "USD",
        Status = 200,
    };

    /// <summary>Meters the whole stream in 512-byte chunks, as the forwarder hands them over; returns the output tokens.</summary>
    public long MeterStream(bool hide)
    {
        using var meter = new ResponseMeter(ProviderKind.OpenAI, stream: true, hideInjectedUsage: hide);
        var output = hide ? new NullBufferWriter() : null;
        foreach (var chunk in _chunks)
        {
            meter.Process(chunk, output);
        }

        meter.Complete(output);
        return meter.OutputTokens ?? -1;
    }

    /// <summary>
    /// Seals the record into the chain as the ledger writer does, a batch of one: canonical JSON into the writer's reused
    /// memory, and the SHA-256 link.
    /// </summary>
    public long Append()
    {
        _arena.Reset();
        return _chain.Append(_record, _arena).Seq;
    }

    /// <summary>Discards what it is given, so the benchmark measures the meter, not a copy.</summary>
    private sealed class NullBufferWriter : System.Buffers.IBufferWriter<byte>
    {
        private readonly byte[] _scratch = new byte[4096];

        public void Advance(int count)
        {
        }

        public Memory<byte> GetMemory(int sizeHint = 0) => sizeHint <= _scratch.Length ? _scratch : new byte[sizeHint];

        public Span<byte> GetSpan(int sizeHint = 0) => sizeHint <= _scratch.Length ? _scratch : new byte[sizeHint];
    }
}
