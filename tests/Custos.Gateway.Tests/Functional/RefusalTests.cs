using System.IO.Compression;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;

namespace Custos.Gateway.Tests.Functional;

/// <summary>
/// Bad input and bad credentials: a clear 4xx with a code and the request id, exactly one ledger entry,
/// and no call to any provider.
/// </summary>
public sealed class RefusalTests(GatewayFixture fixture) : IClassFixture<GatewayFixture>
{
    private TestGateway G => fixture.Gateway;

    private async Task<JsonElement> AssertRefusedAsync(HttpRequestMessage request, HttpStatusCode status, string code, string? param = null, string? message = null)
    {
        var upstreamCalls = G.Upstream.RequestCount;

        using var response = await G.Client.SendAsync(request);

        var body = await response.Content.ReadAsStringAsync();
        Assert.True(status == response.StatusCode, $"expected {status}, got {response.StatusCode}: {body}");
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        using var json = JsonDocument.Parse(body);
        var error = json.RootElement.GetProperty("error");
        var requestId = TestGateway.RequestIdOf(response);
        Assert.Equal(code, error.GetProperty("code").GetString());
        Assert.Equal(requestId, error.GetProperty("request_id").GetString());
        Assert.False(string.IsNullOrWhiteSpace(error.GetProperty("message").GetString()));
        if (message is not null)
        {
            Assert.Equal(message, error.GetProperty("message").GetString());
        }

        Assert.False(string.IsNullOrWhiteSpace(error.GetProperty("type").GetString()));
        if (param is not null)
        {
            Assert.Equal(param, error.GetProperty("param").GetString());
        }

        Assert.Equal(upstreamCalls, G.Upstream.RequestCount);
        var entry = await G.EntryAsync(requestId);
        Assert.Equal([code], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
        Assert.Equal((int)status, entry.GetProperty("status").GetInt32());
        Assert.Equal(JsonValueKind.Null, entry.GetProperty("upstream_status").ValueKind);
        return entry;
    }

    /// <summary>
    /// Sends <paramref name="head"/> (header lines after the request line, the credential and the content type) and
    /// <paramref name="body"/> over a raw connection that stays open, for framing no HTTP client sends, and asserts
    /// what <see cref="AssertRefusedAsync"/> does.
    /// </summary>
    private async Task AssertRawRefusedAsync(string head, string body, HttpStatusCode status, string code)
    {
        var upstreamCalls = G.Upstream.RequestCount;
        var entries = (await G.LedgerAsync()).Count;
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(G.BaseUri.Host, G.BaseUri.Port);
        var stream = tcp.GetStream();
        var request = $"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {G.KeyOf("web")}\r\n"
                      + $"Content-Type: application/json\r\n{head}\r\n{body}";
        await stream.WriteAsync(Encoding.ASCII.GetBytes(request));

        // The status line and headers, then as many bytes as the Content-Length says; the connection is not closed.
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var received = new List<byte>();
        var buffer = new byte[4096];
        int headerEnd;
        while ((headerEnd = Encoding.ASCII.GetString([.. received]).IndexOf("\r\n\r\n", StringComparison.Ordinal)) < 0)
        {
            var read = await stream.ReadAsync(buffer, timeout.Token);
            Assert.True(read > 0, "The gateway closed the connection without an answer: " + Encoding.ASCII.GetString([.. received]));
            received.AddRange(buffer.AsSpan(0, read));
        }

        var lines = Encoding.ASCII.GetString([.. received], 0, headerEnd).Split("\r\n");
        string? Header(string name) => lines.Skip(1).Select(l => l.Split(':', 2)).Where(p => p[0].Equals(name, StringComparison.OrdinalIgnoreCase))
            .Select(p => p[1].Trim()).SingleOrDefault();
        var length = int.Parse(Header("Content-Length") ?? "-1", System.Globalization.CultureInfo.InvariantCulture);
        Assert.True(length > 0, string.Join('\n', lines));
        while (received.Count < headerEnd + 4 + length)
        {
            var read = await stream.ReadAsync(buffer, timeout.Token);
            Assert.True(read > 0, "The answer's body ended early.");
            received.AddRange(buffer.AsSpan(0, read));
        }

        Assert.Equal($"HTTP/1.1 {(int)status}", lines[0][..12]);
        var requestId = Header("x-request-id");
        Assert.NotNull(requestId);
        using var json = JsonDocument.Parse(received.Skip(headerEnd + 4).Take(length).ToArray());
        var error = json.RootElement.GetProperty("error");
        Assert.Equal(code, error.GetProperty("code").GetString());
        Assert.Equal(requestId, error.GetProperty("request_id").GetString());
        Assert.Equal(upstreamCalls, G.Upstream.RequestCount);
        var entry = await G.EntryAsync(requestId);
        Assert.Equal([code], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
        Assert.Equal((int)status, entry.GetProperty("status").GetInt32());
        Assert.Equal(entries + 1, (await G.LedgerAsync()).Count); // the HTTP server's refusal is not recorded apart
    }

    private const string Chat = """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}""";

    [Fact]
    public Task MalformedJson_Is400InvalidJson()
        => AssertRefusedAsync(G.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[}"""), HttpStatusCode.BadRequest, "invalid.json");

    [Theory]
    [InlineData("[1,2]", "The request body is not a valid JSON object: it is an array, not an object.")]
    [InlineData("{\"model\":\"gpt-4o-mini\",\n\"messages\":[}", "The request body is not a valid JSON object: '}' cannot be there (line 2, byte 13).")]
    [InlineData("{\"model\":\"gpt-4o-mini\",\"user\":sk-not-for-the-error-message}", "The request body is not a valid JSON object: 's' cannot be there (line 1, byte 31).")]
    public Task InvalidJson_SaysWhatIsWrongAndWhere_QuotingAtMostOneCharacter(string body, string message)
        => AssertRefusedAsync(G.Post("/v1/chat/completions", body), HttpStatusCode.BadRequest, "invalid.json", message: message);

    [Fact]
    public Task LoneSurrogateEscapeInThePrompt_Is400InvalidJson()
        => AssertRefusedAsync(G.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"half an emoji: \ud83d and more"}]}"""),
            HttpStatusCode.BadRequest, "invalid.json");

    [Fact]
    public Task BytesThatAreNotUtf8_Are400InvalidJson()
    {
        // In a field the gateway does not read: the provider's decoder might read them otherwise than the gateway did.
        var request = G.Post("/v1/chat/completions", "");
        var body = Encoding.UTF8.GetBytes("""{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"user":"x"}""");
        body[Array.LastIndexOf(body, (byte)'x')] = 0xC1;
        request.Content = new ByteArrayContent(body) { Headers = { ContentType = new MediaTypeHeaderValue("application/json") } };
        return AssertRefusedAsync(request, HttpStatusCode.BadRequest, "invalid.json");
    }

    [Theory]
    [InlineData("X-Custos-Agent-Run", "agent_run")]
    [InlineData("X-On-Behalf-Of", "on_behalf_of")]
    public async Task AnIdentifyingHeaderLongerThanRecorded_Is400InvalidHeader_AndIsNotRecorded(string header, string field)
    {
        var request = G.Post("/v1/chat/completions", Chat);
        request.Headers.Add(header, new string('r', 257));

        var entry = await AssertRefusedAsync(request, HttpStatusCode.BadRequest, "invalid.header", header);

        Assert.True(!entry.TryGetProperty(field, out var value) || value.ValueKind == JsonValueKind.Null, entry.GetRawText());
        Assert.DoesNotContain(new string('r', 257), entry.GetRawText(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("X-Custos-Agent-Run", "agent_run", "run\u001b[2J\u001b[31mRED", "U+001B, at character 4")]
    [InlineData("X-On-Behalf-Of", "on_behalf_of", "user\u0007", "U+0007, at character 5")]
    [InlineData("X-Custos-Agent-Run", "agent_run", "run-\u007f", "U+007F, at character 5")]
    public async Task AnIdentifyingHeaderWithAControlCharacter_Is400InvalidHeader_AndIsNotRecorded(string header, string field, string value, string where)
    {
        // An escape sequence here went on to the gateway's log and alerts, and into HTML reports, as sent.
        var request = G.Post("/v1/chat/completions", Chat);
        Assert.True(request.Headers.TryAddWithoutValidation(header, value));

        var entry = await AssertRefusedAsync(request, HttpStatusCode.BadRequest, "invalid.header", header,
            $"The header '{header}' holds a control character ({where}); it is recorded as sent, so it must be printable text.");

        Assert.True(!entry.TryGetProperty(field, out var recorded) || recorded.ValueKind == JsonValueKind.Null, entry.GetRawText());
    }

    [Fact]
    public async Task AnIdentifyingHeaderAtTheLimit_IsRecorded()
    {
        using var request = G.Post("/v1/chat/completions", Chat);
        var run = new string('r', 256);
        request.Headers.Add("X-Custos-Agent-Run", run);

        using var response = await G.Client.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal(run, (await G.EntryAsync(TestGateway.RequestIdOf(response))).GetProperty("agent_run").GetString());
    }

    [Fact]
    public async Task AKeySentWhereTheLedgerKeepsText_IsNotKept_NorAModelWithoutEnd()
    {
        // Another consumer's key as whom the call is for, as the model, in the path; and a model of 30,000 characters.
        var key = G.KeyOf("agent");
        using var onBehalf = G.Post("/v1/chat/completions", Chat);
        onBehalf.Headers.Add("X-On-Behalf-Of", "user:" + key);
        using var served = await G.Client.SendAsync(onBehalf);
        var entries = new List<JsonElement> { await G.EntryAsync(TestGateway.RequestIdOf(served)) };
        entries.Add(await AssertRefusedAsync(G.Post("/v1/chat/completions", $$"""{"model":"{{key}}","messages":[]}"""), HttpStatusCode.NotFound, "deny.model_not_found"));
        entries.Add(await AssertRefusedAsync(G.Post("/v1/models/" + key, ""), HttpStatusCode.MethodNotAllowed, "invalid.method"));
        var huge = new string('m', 30_000); // within the test gateway's body limit
        using var long_ = await G.Client.SendAsync(G.Post("/v1/chat/completions", $$"""{"model":"{{huge}}","messages":[]}"""));
        var body = await long_.Content.ReadAsStringAsync();
        var longEntry = await G.EntryAsync(TestGateway.RequestIdOf(long_));

        Assert.Equal(HttpStatusCode.OK, served.StatusCode);
        Assert.Equal("user:[secret removed]", entries[0].GetProperty("on_behalf_of").GetString());
        Assert.Equal("[secret removed]", entries[1].GetProperty("model").GetString());
        Assert.Equal("/v1/models/[secret removed]", entries[2].GetProperty("endpoint").GetString());
        Assert.All(entries, e => Assert.DoesNotContain(key, e.GetRawText(), StringComparison.Ordinal));
        Assert.Equal(HttpStatusCode.NotFound, long_.StatusCode);
        Assert.Equal(new string('m', 255) + "…", longEntry.GetProperty("model").GetString());
        Assert.True(body.Length < 1_000, $"the 404 echoes {body.Length} characters");
    }

    [Fact]
    public Task MissingModel_Is400ModelMissing()
        => AssertRefusedAsync(G.Post("/v1/chat/completions", """{"messages":[]}"""), HttpStatusCode.BadRequest, "invalid.model_missing", "model");

    [Fact]
    public Task UnknownModel_Is404ModelNotFound()
        => AssertRefusedAsync(G.Post("/v1/chat/completions", """{"model":"gpt-9","messages":[]}"""), HttpStatusCode.NotFound, "deny.model_not_found", "model");

    [Fact]
    public Task OtherTenantsModel_IsNotFound()
        => AssertRefusedAsync(G.Post("/v1/chat/completions", """{"model":"globex-only","messages":[]}"""), HttpStatusCode.NotFound, "deny.model_not_found");

    [Fact]
    public async Task ModelNotEntitled_Is403AndRecordsWhoAndWhat()
    {
        var entry = await AssertRefusedAsync(G.Post("/v1/chat/completions", """{"model":"gpt-4o","messages":[]}"""), HttpStatusCode.Forbidden, "deny.model_not_entitled");

        Assert.Equal("deny", entry.GetProperty("decision").GetString());
        Assert.Equal("web", entry.GetProperty("consumer").GetString());
        Assert.Equal("gpt-4o", entry.GetProperty("model").GetString());
    }

    [Fact]
    public Task EmbeddingModelOnChat_Is400WrongEndpoint()
        => AssertRefusedAsync(G.Post("/v1/chat/completions", """{"model":"text-embedding-3-small","messages":[]}"""), HttpStatusCode.BadRequest, "invalid.model_endpoint",
            "model", "The model 'text-embedding-3-small' (kind embedding, provider 'openai' of type openai) does not serve /v1/chat/completions.");

    [Fact]
    public Task OpenAIModelOnMessages_Is400WrongEndpoint()
        => AssertRefusedAsync(G.Post("/v1/messages", """{"model":"gpt-4o-mini","max_tokens":5,"messages":[]}""", anthropicHeader: true), HttpStatusCode.BadRequest, "invalid.model_endpoint");

    [Fact]
    public Task WrongFieldType_Is400InvalidFieldNamingIt()
        => AssertRefusedAsync(G.Post("/v1/chat/completions", """{"model":"gpt-4o-mini","stream":"yes"}"""), HttpStatusCode.BadRequest, "invalid.field", "stream",
            message: "The field 'stream' must be true, false or null.");

    [Fact]
    public Task ModelTwice_Is400DuplicateFieldNamingIt()
        => AssertRefusedAsync(G.Post("/v1/chat/completions", """{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"model":"gpt-4o-mini"}"""),
            HttpStatusCode.BadRequest, "invalid.duplicate_field", "model");

    [Fact]
    public Task BodyOverLimit_WithContentLength_Is413()
        => AssertRefusedAsync(G.Post("/v1/chat/completions", $$"""{"model":"gpt-4o-mini","messages":[{"role":"user","content":"{{new string('x', 70_000)}}"}]}"""),
            HttpStatusCode.RequestEntityTooLarge, "invalid.body_too_large");

    [Fact]
    public async Task BodyOverLimit_Chunked_Is413()
    {
        var payload = Encoding.UTF8.GetBytes($$"""{"model":"gpt-4o-mini","messages":[{"role":"user","content":"{{new string('x', 70_000)}}"}]}""");
        var request = G.Post("/v1/chat/completions", "");
        request.Content = new StreamContent(new MemoryStream(payload));
        request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        request.Headers.TransferEncodingChunked = true;

        await AssertRefusedAsync(request, HttpStatusCode.RequestEntityTooLarge, "invalid.body_too_large");
    }

    [Theory]
    [InlineData("application/x-www-form-urlencoded")]
    [InlineData("application/jsonfoo")] // begins like JSON, is not
    public async Task WrongContentType_Is415(string mediaType)
    {
        var request = G.Post("/v1/chat/completions", Chat);
        request.Content = new StringContent(Chat, Encoding.UTF8);
        request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(mediaType);

        await AssertRefusedAsync(request, HttpStatusCode.UnsupportedMediaType, "invalid.content_type");
    }

    [Theory]
    [InlineData("POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400, "POST", "/v1/chat/completions")]
    [InlineData("POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nX-Padding: {0}\r\n\r\n", 431, "POST", "/v1/chat/completions")]
    [InlineData("POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nNo Colon Here\r\n\r\n", 400, "POST", "/v1/chat/completions")]
    [InlineData("GARBAGE\r\n\r\n", 400, "", "")]
    [InlineData("GET /v1/models HTTP/9.9\r\nHost: localhost\r\n\r\n", 505, "", "")]
    public async Task RequestTheHttpServerRefuses_IsRecordedAsInvalidHttp_WithItsStatusAndClient(string raw, int status, string method, string endpoint)
    {
        var upstreamCalls = G.Upstream.RequestCount;
        var entries = (await G.LedgerAsync()).Count;
        string? statusLine = null;

        var entry = await G.NextEntryAsync(async () =>
        {
            using var tcp = new TcpClient();
            await tcp.ConnectAsync(G.BaseUri.Host, G.BaseUri.Port);
            var stream = tcp.GetStream();
            await stream.WriteAsync(Encoding.ASCII.GetBytes(raw.Replace("{0}", new string('h', 40_000), StringComparison.Ordinal)));
            using var reader = new StreamReader(stream, Encoding.ASCII);
            statusLine = await reader.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(10));
        });

        // Kestrel's own answer: a bare status, which cannot carry the request id; the ledger has the rest.
        Assert.StartsWith($"HTTP/1.1 {status} ", statusLine, StringComparison.Ordinal);
        Assert.Equal(["invalid.http"], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
        Assert.Equal(status, entry.GetProperty("status").GetInt32());
        Assert.Equal("deny", entry.GetProperty("decision").GetString());
        Assert.Equal(method, entry.GetProperty("method").GetString());
        Assert.Equal(endpoint, entry.GetProperty("endpoint").GetString());
        Assert.Equal("127.0.0.1", entry.GetProperty("client_address").GetString());
        Assert.True(entry.GetProperty("policy_version").GetInt64() > 0);
        Assert.StartsWith("req_", entry.GetProperty("request_id").GetString(), StringComparison.Ordinal);
        Assert.Equal(entries + 1, (await G.LedgerAsync()).Count);
        Assert.Equal(upstreamCalls, G.Upstream.RequestCount);
    }

    [Fact]
    public Task BrokenChunkedFraming_Is400InvalidBody()
        => AssertRawRefusedAsync("Transfer-Encoding: chunked\r\n", $"zz\r\n{Chat}\r\n0\r\n\r\n", HttpStatusCode.BadRequest, "invalid.body");

    [Fact]
    public Task BodyShorterThanItsContentLength_FromAClientThatWaits_Is408BodyTimeout()
        => AssertRawRefusedAsync($"Content-Length: {Chat.Length + 10}\r\n", Chat, HttpStatusCode.RequestTimeout, "invalid.body_timeout");

    [Theory]
    [InlineData("gzip", true)]
    [InlineData("gzip", false)] // JSON that claims to be compressed: a provider would try to decompress what the gateway read
    [InlineData("br", false)]
    [InlineData("identity, gzip", false)]
    public async Task CompressedBody_Is415ContentEncoding(string coding, bool compress)
    {
        var bytes = Encoding.UTF8.GetBytes(Chat);
        if (compress)
        {
            using var compressed = new MemoryStream();
            using (var gzip = new GZipStream(compressed, CompressionLevel.Fastest))
            {
                gzip.Write(bytes);
            }

            bytes = compressed.ToArray();
        }

        var request = G.Post("/v1/chat/completions", "");
        request.Content = new ByteArrayContent(bytes) { Headers = { ContentType = new MediaTypeHeaderValue("application/json") } };
        request.Content.Headers.TryAddWithoutValidation("Content-Encoding", coding);

        await AssertRefusedAsync(request, HttpStatusCode.UnsupportedMediaType, "invalid.content_encoding");
    }

    [Fact]
    public async Task IdentityContentEncoding_IsServed()
    {
        var request = G.Post("/v1/chat/completions", Chat);
        request.Content!.Headers.ContentEncoding.Add("identity");

        using var response = await G.Client.SendAsync(request);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Fact]
    public Task UnknownEndpoint_Is404()
        => AssertRefusedAsync(G.Post("/v1/images/generations", Chat), HttpStatusCode.NotFound, "invalid.endpoint");

    [Fact]
    public async Task WrongMethod_Is405WithAllow()
    {
        var request = new HttpRequestMessage(HttpMethod.Get, "/v1/chat/completions");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", G.KeyOf("web"));
        using var probe = await G.Client.SendAsync(new HttpRequestMessage(HttpMethod.Get, "/v1/chat/completions"));
        Assert.Equal("POST, OPTIONS", string.Join(", ", probe.Content.Headers.Allow));

        await AssertRefusedAsync(request, HttpStatusCode.MethodNotAllowed, "invalid.method", message: "/v1/chat/completions takes POST, not GET.");
    }

    [Theory]
    [InlineData("/v1/chat/completions", "POST, OPTIONS")]
    [InlineData("/v1/messages", "POST, OPTIONS")]
    [InlineData("/v1/responses", "POST, OPTIONS")]
    [InlineData("/v1/models", "GET, HEAD, OPTIONS")]
    [InlineData("/v1/models/gpt-4o-mini", "GET, HEAD, OPTIONS")]
    public async Task Options_OnAKnownEndpoint_Is204WithAllow_WithoutCredential_AndReachesNoProvider(string path, string allow)
    {
        var upstreamCalls = G.Upstream.RequestCount;

        using var response = await G.Client.SendAsync(new HttpRequestMessage(HttpMethod.Options, path));

        Assert.Equal(HttpStatusCode.NoContent, response.StatusCode);
        Assert.Equal(allow, string.Join(", ", response.Content.Headers.Allow));
        Assert.Empty(await response.Content.ReadAsByteArrayAsync());
        Assert.Equal(upstreamCalls, G.Upstream.RequestCount);
        var entry = await G.EntryAsync(TestGateway.RequestIdOf(response));
        Assert.Equal(("OPTIONS", 204), (entry.GetProperty("method").GetString(), entry.GetProperty("status").GetInt32()));
    }

    [Fact]
    public async Task UnknownEndpoint_MessageNamesEveryServedEndpoint_TheResponsesAPIIncluded()
    {
        using var response = await G.Client.SendAsync(G.Post("/v1/images/generations", Chat));

        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Contains("/v1/responses", json.RootElement.GetProperty("error").GetProperty("message").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Options_OnAnUnknownPath_Is404()
        => await AssertRefusedAsync(new HttpRequestMessage(HttpMethod.Options, "/v1/images/generations"), HttpStatusCode.NotFound, "invalid.endpoint");

    [Theory]
    [InlineData("/v1/models")]
    [InlineData("/v1/models/gpt-4o-mini")]
    public async Task Head_OnAGetEndpoint_IsTheGetWithoutItsBody(string path)
    {
        var upstreamCalls = G.Upstream.RequestCount;
        HttpRequestMessage Request(HttpMethod method)
        {
            var request = new HttpRequestMessage(method, path);
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", G.KeyOf("web"));
            return request;
        }

        using var get = await G.Client.SendAsync(Request(HttpMethod.Get));
        using var head = await G.Client.SendAsync(Request(HttpMethod.Head));

        Assert.Equal(HttpStatusCode.OK, head.StatusCode);
        Assert.Equal("application/json", head.Content.Headers.ContentType?.MediaType);
        Assert.Equal((await get.Content.ReadAsByteArrayAsync()).Length, head.Content.Headers.ContentLength);
        Assert.Empty(await head.Content.ReadAsByteArrayAsync());
        Assert.Equal(upstreamCalls, G.Upstream.RequestCount);
        var entry = await G.EntryAsync(TestGateway.RequestIdOf(head));
        Assert.Equal(("HEAD", 200, 0L), (entry.GetProperty("method").GetString(), entry.GetProperty("status").GetInt32(), entry.GetProperty("response_bytes").GetInt64()));
    }

    [Fact]
    public async Task Head_OnAGetEndpoint_WithoutCredential_Is401()
    {
        using var response = await G.Client.SendAsync(new HttpRequestMessage(HttpMethod.Head, "/v1/models"));

        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        var entry = await G.EntryAsync(TestGateway.RequestIdOf(response));
        Assert.Equal(["deny.credential_missing"], entry.GetProperty("reasons").EnumerateArray().Select(r => r.GetString()));
    }

    [Fact]
    public async Task Head_OnAPostEndpoint_Is405WithAllow()
    {
        var request = new HttpRequestMessage(HttpMethod.Head, "/v1/chat/completions");
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", G.KeyOf("web"));

        using var response = await G.Client.SendAsync(request);

        Assert.Equal(HttpStatusCode.MethodNotAllowed, response.StatusCode);
        Assert.Equal("POST, OPTIONS", string.Join(", ", response.Content.Headers.Allow));
    }

    [Fact]
    public async Task AUtf8ByteOrderMark_BeforeTheJson_IsSkipped_AndTheProviderGetsTheJsonWithoutIt()
    {
        byte[] bom = [0xEF, 0xBB, 0xBF];
        var json = Encoding.UTF8.GetBytes("""{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}""");
        using var content = new ByteArrayContent([.. bom, .. json]);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions") { Content = content };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", G.KeyOf("web"));

        using var response = await G.Client.SendAsync(request);

        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, body);
        var sent = G.Upstream.Received.Last(r => r.Path == "/v1/chat/completions").Body;
        Assert.Equal(Encoding.UTF8.GetString(json), sent);
        var entry = await G.EntryAsync(TestGateway.RequestIdOf(response));
        Assert.Equal("gpt-4o-mini", entry.GetProperty("model").GetString());
        Assert.Equal(bom.Length + json.Length, entry.GetProperty("request_bytes").GetInt64());
    }

    [Theory]
    [InlineData("/v1/messages", "?beta=true", """{"model":"claude-sonnet","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}""")]
    [InlineData("/v1/chat/completions", "?api-version=2024-10-21&key=sk-secret-in-query", """{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}""")]
    public async Task TheQueryString_GoesToTheProviderAsItCame_AndTheLedgerRecordsThePathWithoutIt(string path, string query, string body)
    {
        using var response = await G.Client.SendAsync(G.Post(path + query, body, anthropicHeader: path == "/v1/messages"));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var received = G.Upstream.Received.Last(r => r.Path == path);
        Assert.Equal(query, received.Query);
        var entry = await G.EntryAsync(TestGateway.RequestIdOf(response));
        Assert.Equal(path, entry.GetProperty("endpoint").GetString());
        Assert.DoesNotContain("sk-secret", entry.GetRawText(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task TheQueryString_DecidesNothing_AModelNamedThereIsNotTheRequests()
        => await AssertRefusedAsync(G.Post("/v1/messages?model=claude-sonnet", """{"model":"claude-cut","max_tokens":5,"messages":[]}""", "agent", anthropicHeader: true),
            HttpStatusCode.Forbidden, "deny.model_not_entitled");

    [Fact]
    public Task NoCredential_Is401Missing() => AssertRefusedAsync(G.Post("/v1/chat/completions", Chat, consumer: null), HttpStatusCode.Unauthorized, "deny.credential_missing");

    [Fact]
    public async Task ProviderKeyInsteadOfCustosKey_Is401Malformed()
    {
        var request = G.Post("/v1/chat/completions", Chat, consumer: null);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", "sk-proj-abcdefghijklmnop");

        await AssertRefusedAsync(request, HttpStatusCode.Unauthorized, "deny.credential_malformed");
    }

    [Fact]
    public async Task TwoDifferentKeys_Is401Ambiguous_AndTheSameKeyTwiceIsServed()
    {
        var request = G.Post("/v1/chat/completions", Chat); // Authorization: web's key
        request.Headers.Add("x-api-key", G.KeyOf("agent"));

        var entry = await AssertRefusedAsync(request, HttpStatusCode.Unauthorized, "deny.credential_ambiguous");
        Assert.Equal(JsonValueKind.Null, entry.GetProperty("consumer").ValueKind); // neither is believed

        var twice = G.Post("/v1/chat/completions", Chat);
        twice.Headers.Add("x-api-key", G.KeyOf("web"));
        using var served = await G.Client.SendAsync(twice);
        Assert.Equal(HttpStatusCode.OK, served.StatusCode);
    }

    [Fact]
    public async Task OneCharacterTypo_Is401Checksum()
    {
        var key = G.KeyOf("web").ToCharArray();
        key[10] = key[10] == 'a' ? 'b' : 'a';
        var request = G.Post("/v1/chat/completions", Chat, consumer: null);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", new string(key));

        var entry = await AssertRefusedAsync(request, HttpStatusCode.Unauthorized, "deny.credential_checksum");

        Assert.Equal(JsonValueKind.Null, entry.GetProperty("credential_id").ValueKind);
    }

    [Fact]
    public async Task WellFormedUnknownKey_Is401Unknown()
    {
        var request = G.Post("/v1/chat/completions", Chat, consumer: null);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", Custos.Identity.ApiKey.Generate(Custos.Identity.ApiKeyKind.Consumer));

        await AssertRefusedAsync(request, HttpStatusCode.Unauthorized, "deny.credential_unknown");
    }

    [Theory]
    [InlineData("revoked-user", "deny.credential_revoked", "cred-revoked")]
    [InlineData("suspended-user", "deny.credential_suspended", "cred-suspended")]
    [InlineData("expired-user", "deny.credential_expired", "cred-expired")]
    public async Task InactiveCredential_Is401AndNamesTheCredential(string consumer, string code, string credentialId)
    {
        var entry = await AssertRefusedAsync(G.Post("/v1/chat/completions", Chat, consumer), HttpStatusCode.Unauthorized, code);

        Assert.Equal(credentialId, entry.GetProperty("credential_id").GetString());
        Assert.Equal(consumer, entry.GetProperty("consumer").GetString());
    }

    [Fact]
    public Task AdminKeyOnDataPlane_Is401WrongKind()
        => AssertRefusedAsync(G.Post("/v1/chat/completions", Chat, consumer: "admin"), HttpStatusCode.Unauthorized, "deny.credential_wrong_kind");

    [Fact]
    public async Task AnthropicEndpointErrors_CarryAnthropicTypeToo()
    {
        using var response = await G.Client.SendAsync(G.Post("/v1/messages", """{"model":"claude-sonnet"}""", consumer: null));

        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal("error", json.RootElement.GetProperty("type").GetString());
        Assert.Equal("deny.credential_missing", json.RootElement.GetProperty("error").GetProperty("code").GetString());
    }

    public static TheoryData<string, string?, string, HttpStatusCode, string, string> AnthropicRefusals => new()
    {
        { "/v1/messages", "web", """{"model":""", HttpStatusCode.BadRequest, "invalid.json", "invalid_request_error" },
        { "/v1/messages", null, """{"model":"claude-sonnet","max_tokens":5,"messages":[]}""", HttpStatusCode.Unauthorized, "deny.credential_missing", "authentication_error" },
        { "/v1/messages", "agent", """{"model":"claude-cut","max_tokens":5,"messages":[]}""", HttpStatusCode.Forbidden, "deny.model_not_entitled", "permission_error" },
        { "/v1/messages", "web", """{"model":"claude-nope","max_tokens":5,"messages":[]}""", HttpStatusCode.NotFound, "deny.model_not_found", "not_found_error" },
        { "/v1/messages/batches", "web", "{}", HttpStatusCode.NotFound, "invalid.endpoint", "not_found_error" },
        { "/v1/messages", "web", "{\"model\":\"claude-sonnet\",\"messages\":[{\"role\":\"user\",\"content\":\"" + new string('x', 70_000) + "\"}]}",
            HttpStatusCode.RequestEntityTooLarge, "invalid.body_too_large", "request_too_large" },
    };

    [Theory]
    [MemberData(nameof(AnthropicRefusals))]
    public async Task AnthropicPathRefusals_CarryAnthropicsErrorTypeForTheirStatus_AndTheGatewaysCode(string path, string? consumer, string body,
        HttpStatusCode status, string code, string type)
    {
        using var request = G.Post(path, body, consumer, anthropicHeader: true);

        using var response = await G.Client.SendAsync(request);

        Assert.Equal(status, response.StatusCode);
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal("error", json.RootElement.GetProperty("type").GetString());
        var error = json.RootElement.GetProperty("error");
        Assert.Equal(type, error.GetProperty("type").GetString());
        Assert.Equal(code, error.GetProperty("code").GetString());
        Assert.Equal(TestGateway.RequestIdOf(response), error.GetProperty("request_id").GetString());
        Assert.Equal(TestGateway.RequestIdOf(response), Assert.Single(response.Headers.GetValues("request-id")));
    }

    [Theory]
    [InlineData(400, "invalid_request_error")]
    [InlineData(401, "authentication_error")]
    [InlineData(402, "billing_error")]
    [InlineData(403, "permission_error")]
    [InlineData(404, "not_found_error")]
    [InlineData(405, "invalid_request_error")]
    [InlineData(413, "request_too_large")]
    [InlineData(415, "invalid_request_error")]
    [InlineData(422, "invalid_request_error")]
    [InlineData(429, "rate_limit_error")]
    [InlineData(500, "api_error")]
    [InlineData(502, "api_error")]
    [InlineData(503, "overloaded_error")]
    [InlineData(504, "timeout_error")]
    [InlineData(529, "overloaded_error")]
    public void AnthropicTypeOf_EveryStatusClass_IsAnthropicsOwnWord(int status, string type)
    {
        Assert.Equal(type, Custos.Errors.Reasons.AnthropicTypeOf(status));
        Assert.All(Custos.Errors.Reasons.All.Where(r => r.Status == status), r => Assert.Equal(type, r.AnthropicType));
    }

    [Fact]
    public async Task ARefusalsEntry_RecordsTheBytesOfTheErrorItWrote()
    {
        using var response = await G.Client.SendAsync(G.Post("/v1/images/generations", Chat));
        var body = await response.Content.ReadAsByteArrayAsync();
        var entry = await G.EntryAsync(TestGateway.RequestIdOf(response));

        Assert.True(body.Length > 100);
        Assert.Equal(body.Length, entry.GetProperty("response_bytes").GetInt64());
    }

    [Theory]
    [InlineData("/v1/messages/count_tokens", "error")]
    [InlineData("/v1/messages/batches", "error")]
    [InlineData("/v1/messagesx", null)]
    public async Task PathsUnderMessages_AreRefusedInAnthropicShape(string path, string? type)
    {
        using var response = await G.Client.SendAsync(G.Post(path, """{"model":"claude-sonnet","messages":[]}"""));

        Assert.Equal(HttpStatusCode.NotFound, response.StatusCode);
        using var json = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        Assert.Equal(type, json.RootElement.TryGetProperty("type", out var t) ? t.GetString() : null);
        Assert.Equal("invalid.endpoint", json.RootElement.GetProperty("error").GetProperty("code").GetString());
    }
}
