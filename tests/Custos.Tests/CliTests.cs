using System.ClientModel;
using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using Custos.Gateway.Demo;
using Custos.Gateway.Hosting;
using Custos.Identity;
using Custos.Policy;
using OpenAI;
using OpenAI.Chat;

namespace Custos.Tests;

public sealed class CliTests : IDisposable
{
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "custos-cli-" + Guid.NewGuid().ToString("N"));

    public CliTests() => Directory.CreateDirectory(_directory);

    public void Dispose()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(_directory, recursive: true);
    }

    [Fact]
    public async Task Demo_AsAUserRunsIt_ServesTheOpenAISdkAndCurl_WritesTheContractKeysFile_AndTheLedgerShowsIt()
    {
        int port = CustosProcess.FreePort(), adminPort = CustosProcess.FreePort(), upstreamPort = CustosProcess.FreePort();
        var data = Path.Combine(_directory, "demo-data");
        await using var demo = CustosProcess.Start("Press Ctrl+C to stop.", null, "demo", "--port", $"{port}", "--admin-port", $"{adminPort}",
            "--upstream-port", $"{upstreamPort}", "--data", data);
        await demo.WaitReadyAsync();

        // demo-keys.json: the contract scripts rely on.
        using var keysFile = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(data, "demo-keys.json")));
        var keys = keysFile.RootElement;
        Assert.Equal($"http://127.0.0.1:{port}", keys.GetProperty("data_plane").GetString());
        Assert.Equal($"http://127.0.0.1:{adminPort}", keys.GetProperty("admin").GetString());
        var consumers = keys.GetProperty("consumers").EnumerateArray().ToList();
        Assert.Equal(["agent", "automation", "external", "internal"], consumers.Select(c => c.GetProperty("category").GetString()).Distinct().Order());
        Assert.True(consumers.Select(c => c.GetProperty("tenant").GetString()).Distinct().Count() >= 2);
        Assert.All(consumers, c => Assert.Equal(ApiKeyFormatError.None, ApiKey.Validate(c.GetProperty("key").GetString(), out _)));
        Assert.All(consumers, c => Assert.False(string.IsNullOrEmpty(c.GetProperty("service").GetString())));
        Assert.Equal(["finance", "platform-admin", "prompt-admin", "security-auditor", "service-owner"],
            keys.GetProperty("admins").EnumerateArray().Select(a => a.GetProperty("role").GetString()).Order());
        var external = consumers.First(c => c.GetProperty("category").GetString() == "external");
        var key = external.GetProperty("key").GetString()!;
        Assert.Contains(key, demo.Output, StringComparison.Ordinal); // printed once, for the person at the terminal
        Assert.Contains("curl -s", demo.Output, StringComparison.Ordinal);

        // The OpenAI SDK.
        var chat = new ChatClient("gpt-4o-mini", new ApiKeyCredential(key), new OpenAIClientOptions { Endpoint = new Uri($"http://127.0.0.1:{port}/v1") });
        ChatCompletion completion = await chat.CompleteChatAsync("Hello, Custos");
        Assert.Contains("demo", completion.Content[0].Text, StringComparison.OrdinalIgnoreCase);

        // curl, as printed.
        using var http = new HttpClient();
        var request = new HttpRequestMessage(HttpMethod.Post, $"http://127.0.0.1:{port}/v1/chat/completions")
        {
            Content = new StringContent("""{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello, Custos"}]}""", Encoding.UTF8, "application/json"),
        };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        using var response = await http.SendAsync(request);
        Assert.True(response.IsSuccessStatusCode);
        var requestId = response.Headers.GetValues("x-request-id").Single();

        Assert.Equal(0, await demo.StopAsync());
        Assert.Contains("none pending", demo.Output, StringComparison.Ordinal);

        // custos requests: the table and the JSON lines.
        var (exit, table, _) = await Cli.RunAsync("requests", "--data", data);
        Assert.Equal(0, exit);
        Assert.Contains(requestId, table, StringComparison.Ordinal);
        Assert.Contains("2 entries", table, StringComparison.Ordinal);

        var (_, json, _) = await Cli.RunAsync("requests", "--data", data, "--json", "--consumer", external.GetProperty("name").GetString()!);
        var lines = json.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(2, lines.Count);
        string[] contract = ["request_id", "timestamp", "tenant", "service", "consumer", "category", "credential_id", "model", "endpoint", "stream",
            "decision", "reasons", "policy_version", "policy_hash", "input_tokens", "output_tokens", "cost", "upstream_status"];
        Assert.All(lines, l => Assert.All(contract, field => Assert.True(l.TryGetProperty(field, out _), field)));
        Assert.Equal(completion.Usage.InputTokenCount, lines[0].GetProperty("input_tokens").GetInt64());
        Assert.Equal(requestId, lines[1].GetProperty("request_id").GetString());
        // The table's cost has every digit of the entry's nine decimals, not the cost rounded to six.
        Assert.Contains(" " + lines[1].GetProperty("cost").GetString()!.TrimEnd('0'), table, StringComparison.Ordinal);

        var (_, none, _) = await Cli.RunAsync("requests", "--data", data, "--decision", "deny");
        Assert.Contains("No request entries match.", none, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("--limit takes a whole number of at least 1, not 'x'", "requests", "--limit", "x")]
    [InlineData("--limit takes a whole number of at least 1, not '-5'", "requests", "--limit", "-5")]
    [InlineData("--limit takes a whole number from 1 to 2147483647, not '99999999999'", "requests", "--limit", "99999999999")]
    [InlineData("<from> takes a whole number of at least 1, not 'abc'", "policy", "diff", "abc", "2")]
    [InlineData("<to> takes a whole number of at least 1, not '0'", "policy", "diff", "1", "0")]
    [InlineData("--version takes a whole number of at least 1, not '1.5'", "policy", "show", "--version", "1.5")]
    [InlineData("--port takes a whole number from 0 to 65535, not '70000'", "demo", "--port", "70000")]
    [InlineData("--admin-port takes a whole number from 0 to 65535, not '-1'", "serve", "--config", "custos.yaml", "--admin-port", "-1")]
    public async Task ANumberOutOfRange_IsRefusedByName_BeforeAnythingRuns(string message, params string[] args)
    {
        var data = Path.Combine(_directory, "not-created");
        var (exit, _, error) = await Cli.RunAsync([.. args, "--data", data]);
        Assert.Equal(1, exit);
        Assert.Contains(message, error, StringComparison.Ordinal);
        Assert.DoesNotContain("System.", error, StringComparison.Ordinal);
        Assert.False(Directory.Exists(data), "nothing is created for a command that was refused");
    }

    [Theory]
    [InlineData("--expires-at 'tomorrow' is neither an ISO 8601 time nor a duration from now such as 30d or 12h", "keys", "issue", "--consumer", "web", "--reason", "r", "--expires-at", "tomorrow")]
    [InlineData("--expires-at '1h30' is neither an ISO 8601 time nor a duration from now such as 30d or 12h", "keys", "issue", "--consumer", "web", "--reason", "r", "--expires-at", "1h30")]
    [InlineData("--overlap 'tomorrow' is not a duration such as 24h, 90m, 3600s, 7d or 1h30m", "keys", "rotate", "cred_1", "--reason", "r", "--overlap", "tomorrow")]
    public async Task ATimeThatIsNone_IsRefusedByName_BeforeTheGatewayIsCalled(string message, params string[] args)
    {
        // Nothing listens on port 1: a call to the gateway would fail differently.
        var (exit, _, error) = await Cli.RunAsync([.. args, "--server", "http://127.0.0.1:1", "--admin-key", "cak_never_sent"]);
        Assert.Equal(1, exit);
        Assert.Equal("error: " + message, error.Trim());
    }

    [Fact]
    public async Task Serve_WithAConfigThatIsNotValid_SaysWhereOnStandardError_AndStartsNothing()
    {
        // The diagnostics went to standard output and only the summary to standard error: a service manager or a script
        // that keeps the errors apart showed "custos.yaml is not valid" without the line that says what and where.
        var config = Path.Combine(_directory, "broken.yaml");
        await File.WriteAllTextAsync(config, "gateway:\n  listen: [\n");

        var (exit, output, error) = await Cli.RunAsync("serve", "--config", config);

        Assert.Equal(1, exit);
        Assert.Contains("broken.yaml:3:1: error: $: YAML syntax", error, StringComparison.Ordinal);
        Assert.Contains("broken.yaml is not valid; nothing was started", error, StringComparison.Ordinal);
        Assert.Equal("", output);
    }

    [Fact]
    public async Task AnOutputThatIsAFolder_IsRefusedByName()
    {
        // Was the system's "Access to the path '…' is denied." (report and audit prove write through one helper)
        var data = Path.Combine(_directory, "data");
        Assert.Equal(0, (await Cli.RunAsync("init", "--data", data)).Exit);

        var (exit, _, error) = await Cli.RunAsync("report", "posture", "--data", data, "-o", _directory);

        Assert.Equal(1, exit);
        Assert.Equal($"error: -o {_directory} is a folder; name a file to write", error.Trim());
    }

    [Theory]
    [InlineData("platform_admin")]
    [InlineData("platform-admin")]
    public async Task KeysGenerate_ARoleInEitherSpelling_IsWrittenAsThePolicySpellsIt(string role)
    {
        var (exit, output, error) = await Cli.RunAsync("keys", "generate", "--admin", "ops-1", "--role", role);

        Assert.True(exit == 0, error);
        Assert.Contains("\n    role: platform_admin\n", output.ReplaceLineEndings("\n"), StringComparison.Ordinal);
    }

    [Fact]
    public void DemoKeys_OfADemoFileWithSnakeCaseRoles_KeepTheirKeys_UnderTheContractsSpelling()
    {
        // demo-keys.json names roles as the shared architecture does (platform-admin), which scripts select them by.
        var earlier = DemoPolicy.CreateKeys(new Uri("http://127.0.0.1:1"), new Uri("http://127.0.0.1:2"), null);
        Assert.Contains(earlier.Admins, a => a.Role == "platform-admin");
        earlier = earlier with { Admins = [.. earlier.Admins.Select(a => a with { Role = a.Role.Replace('-', '_') })] };

        var keys = DemoPolicy.CreateKeys(new Uri("http://127.0.0.1:1"), new Uri("http://127.0.0.1:2"), earlier);

        Assert.Equal(earlier.Admins.Select(a => a.Key), keys.Admins.Select(a => a.Key));
        Assert.DoesNotContain(keys.Admins, a => a.Role.Contains('_', StringComparison.Ordinal));
        var admins = DemoPolicy.Create(new Uri("http://127.0.0.1:3"), keys).Admins;
        Assert.Contains(admins, a => a.Id == "demo-platform-admin" && a.Role == AdminRole.PlatformAdmin);
    }

    [Fact]
    public async Task KeysGenerate_WithAnUnknownRole_ShowsNoKey()
    {
        // The key was printed ("shown once") and then the role refused: a key shown for nothing.
        var (exit, output, error) = await Cli.RunAsync("keys", "generate", "--admin", "auditor-1", "--role", "auditor");

        Assert.Equal(1, exit);
        Assert.Equal("", output);
        Assert.StartsWith("error: unknown role 'auditor'", error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("init")]
    [InlineData("demo", "--port", "0", "--admin-port", "0", "--upstream-port", "0")]
    public async Task ADataFolderThatIsAFile_IsRefusedInOneLine(params string[] args)
    {
        // Was .NET's "The file '…' already exists." from creating the folder.
        var file = Path.Combine(_directory, "a-file");
        await File.WriteAllTextAsync(file, "not a folder");

        var (exit, _, error) = await Cli.RunAsync([.. args, "--data", file]);

        Assert.Equal(1, exit);
        Assert.Equal($"error: the data folder {file} is a file; name a folder (it is created if missing)", error.Trim());
        Assert.Equal("not a folder", await File.ReadAllTextAsync(file));
    }

    [Fact]
    public async Task Demo_RestartedOnTheSameData_KeepsKeysAndPolicyVersion()
    {
        var data = Path.Combine(_directory, "demo-data");
        string[] Args() => ["demo", "--port", $"{CustosProcess.FreePort()}", "--admin-port", $"{CustosProcess.FreePort()}", "--upstream-port", "18089", "--data", data];

        await using (var first = CustosProcess.Start("Press Ctrl+C to stop.", null, Args()))
        {
            await first.WaitReadyAsync();
            Assert.Equal(0, await first.StopAsync());
        }

        var keys = await File.ReadAllTextAsync(Path.Combine(data, "demo-keys.json"));
        await using var second = CustosProcess.Start("Press Ctrl+C to stop.", null, Args());
        await second.WaitReadyAsync();
        Assert.Equal(0, await second.StopAsync());

        Assert.Contains("policy       version 1,", second.Output, StringComparison.Ordinal);
        using var before = JsonDocument.Parse(keys);
        using var after = JsonDocument.Parse(await File.ReadAllTextAsync(Path.Combine(data, "demo-keys.json")));
        Assert.Equal(before.RootElement.GetProperty("consumers").GetRawText(), after.RootElement.GetProperty("consumers").GetRawText());
    }

    [Fact]
    public async Task Serve_WithAConfigFile_ForwardsToTheDeclaredProviderWithItsKeyFromTheEnvironment()
    {
        await using var setup = await StartServeSetupAsync();
        var (upstream, config) = (setup.Upstream, setup.Config);

        await using var serve = CustosProcess.Start("Custos serving", setup.Environment(), "serve", "--config", config);
        await serve.WaitReadyAsync();
        ChatCompletion completion = await setup.Chat().CompleteChatAsync("Hello");

        // What a gateway that uses neither Redis nor its console does not load: the Redis client, the XML readers (the
        // console's file manifest), expression trees (the admin endpoints' delegates are generated at build time; the
        // first admin request builds every endpoint).
        using var http = new HttpClient();
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync($"http://127.0.0.1:{setup.AdminPort}/healthz")).StatusCode);
        var mapped = serve.MappedFileNames();
        Assert.Contains("Custos.Gateway.dll", mapped);
        Assert.DoesNotContain("StackExchange.Redis.dll", mapped);
        Assert.DoesNotContain("System.Private.Xml.dll", mapped);
        Assert.DoesNotContain("System.Linq.Expressions.dll", mapped);
        Assert.Equal(0, await serve.StopAsync());

        Assert.Contains("Custos demo upstream", completion.Content[0].Text, StringComparison.Ordinal);
        Assert.Equal("Bearer sk-serve-upstream-0123456789", upstream.Received[^1].Headers["Authorization"]);
        Assert.Contains("missing governance", serve.Output, StringComparison.Ordinal); // service 'app' names no owners
        var (exit, json, _) = await Cli.RunAsync("requests", "--config", config, "--json");
        Assert.Equal(0, exit);
        var entry = JsonDocument.Parse(json.Split('\n')[0]).RootElement;
        Assert.Equal("app-backend", entry.GetProperty("consumer").GetString());
        Assert.Equal(1, entry.GetProperty("policy_version").GetInt64());
    }

    [Fact]
    public async Task Serve_OnTheEmbeddedStore_RunsRequestsOnTheSocketThreads_SmallAndLargeSideBySide_UnlessTheEnvironmentSaysNo()
    {
        await using var setup = await StartServeSetupAsync();
        var (config, environment) = (setup.Config, setup.Environment());

        // Turned off by the runtime's own switch: the ready line says nothing of it.
        await using (var off = CustosProcess.Start("Custos serving", new Dictionary<string, string>(environment) { ["DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS"] = "0" },
            "serve", "--config", config))
        {
            await off.WaitReadyAsync();
            Assert.DoesNotContain("inline I/O", off.Output, StringComparison.Ordinal);
            Assert.Contains("Custos demo upstream", (await setup.Chat().CompleteChatAsync("Hello")).Value.Content[0].Text, StringComparison.Ordinal);
            Assert.Equal(0, await off.StopAsync());
        }

        await using var serve = CustosProcess.Start("Custos serving", environment, "serve", "--config", config);
        await serve.WaitReadyAsync();
        Assert.Contains(", inline I/O.", serve.Output, StringComparison.Ordinal);
        Assert.Equal(Environment.ProcessorCount, serve.ThreadNames().Count(name => name == ".NET Sockets")); // the runtime took the switch: a socket thread per core

        // Small prompts on the socket threads, large ones (over 64 KB) moved to the thread pool, streaming and not, at once.
        var chat = setup.Chat();
        var large = "Summarise this: " + string.Join(' ', Enumerable.Repeat("the quick brown fox jumps over the lazy dog", 5_000));
        var calls = Enumerable.Range(0, 24).Select(async i =>
        {
            var prompt = i % 3 == 0 ? large : $"Hello {i}";
            if (i % 2 == 0)
            {
                ChatCompletion completion = await chat.CompleteChatAsync(prompt);
                return completion.Content[0].Text;
            }

            var text = new StringBuilder();
            await foreach (var update in chat.CompleteChatStreamingAsync(prompt))
            {
                text.Append(string.Concat(update.ContentUpdate.Select(part => part.Text)));
            }

            return text.ToString();
        });
        var answers = await Task.WhenAll(calls);
        Assert.Equal(0, await serve.StopAsync());

        Assert.All(answers, answer => Assert.Contains("Custos demo upstream", answer, StringComparison.Ordinal));
        var (exit, json, _) = await Cli.RunAsync("requests", "--config", config, "--json");
        Assert.Equal(0, exit);
        var entries = json.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(25, entries.Count); // and the one before, while it was off
        Assert.All(entries, e => Assert.Equal("allow", e.GetProperty("decision").GetString()));
        Assert.Equal(8, entries.Count(e => e.GetProperty("input_tokens").GetInt64() > 40_000)); // the large prompts, counted whole
    }

    [Fact]
    public async Task Serve_ToAProviderOverTls_NamesTheProvidersHost_NotTheGateways()
    {
        // As real providers are reached: over TLS, by name. The client names the gateway in Host; passed on, that name
        // was what the provider's TLS was asked for, its certificate did not match, and every call failed as unreachable.
        var (setup, environment) = await StartTlsServeSetupAsync();
        await using var _ = setup;

        await using var serve = CustosProcess.Start("Custos serving", environment, "serve", "--config", setup.Config);
        await serve.WaitReadyAsync();
        ChatCompletion completion = await setup.Chat().CompleteChatAsync("Hello over TLS");
        var streamed = new StringBuilder();
        await foreach (var update in setup.Chat().CompleteChatStreamingAsync("Hello again"))
        {
            streamed.Append(string.Concat(update.ContentUpdate.Select(part => part.Text)));
        }

        Assert.Equal(0, await serve.StopAsync());
        Assert.Contains("Hello over TLS", completion.Content[0].Text, StringComparison.Ordinal);
        Assert.Contains("Hello again", streamed.ToString(), StringComparison.Ordinal);
        Assert.All(setup.Upstream.Received, seen => Assert.Equal($"localhost:{setup.Upstream.BaseUri.Port}", seen.Headers["Host"]));
        Assert.DoesNotContain("proxy", serve.Output, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public async Task Serve_WhereTheEnvironmentNamesAnEgressProxy_CallsTheProviderThroughIt_AndSaysSoWithoutItsCredentials()
    {
        // The provider by a name only the proxy resolves, as an outside provider is: the tunnel leads to the demo provider.
        var (setup, environment) = await StartTlsServeSetupAsync("provider.test");
        await using var _ = setup;
        await using var proxy = new ConnectProxy();
        environment["HTTPS_PROXY"] = $"http://egress-user:egress-secret-4711@127.0.0.1:{proxy.Port}";

        await using var serve = CustosProcess.Start("Custos serving", environment, "serve", "--config", setup.Config);
        await serve.WaitReadyAsync();
        ChatCompletion completion = await setup.Chat().CompleteChatAsync("Hello through the proxy");
        Assert.Equal(0, await serve.StopAsync());

        Assert.Contains("Hello through the proxy", completion.Content[0].Text, StringComparison.Ordinal);
        Assert.Equal([$"provider.test:{setup.Upstream.BaseUri.Port}"], proxy.Targets);
        Assert.Contains($"through the proxy http://127.0.0.1:{proxy.Port} (HTTPS_PROXY)", serve.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("egress-secret-4711", serve.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Serve_OnHttpsListeners_ServesTheSdkAndTheAdminApiOverTls_WithTheConfiguredCertificate()
    {
        await using var setup = await StartServeSetupAsync();
        using var certificate = SelfSignedCertificate("custos.test", names => names.AddIpAddress(IPAddress.Loopback));
        await File.WriteAllTextAsync(Path.Combine(_directory, "gateway.pem"), certificate.ExportCertificatePem());
        using (var key = certificate.GetRSAPrivateKey()!)
        {
            await File.WriteAllTextAsync(Path.Combine(_directory, "gateway.key"), key.ExportPkcs8PrivateKeyPem());
        }
        var yaml = (await File.ReadAllTextAsync(setup.Config)).Replace("listen: http://", "listen: https://", StringComparison.Ordinal)
            .Replace("data: serve-data", "data: serve-data\n  tls_certificate: gateway.pem\n  tls_key: gateway.key", StringComparison.Ordinal);
        await File.WriteAllTextAsync(setup.Config, yaml);
        using var handler = new HttpClientHandler { ServerCertificateCustomValidationCallback = (_, presented, _, _) => presented?.Thumbprint == certificate.Thumbprint };
        using var http = new HttpClient(handler);
        var chat = new ChatClient("gpt-4o-mini", new ApiKeyCredential(setup.Key), new OpenAIClientOptions
        {
            Endpoint = new Uri($"https://127.0.0.1:{setup.Port}/v1"),
            Transport = new System.ClientModel.Primitives.HttpClientPipelineTransport(http),
        });

        await using var serve = CustosProcess.Start("Custos serving", setup.Environment(), "serve", "--config", setup.Config);
        await serve.WaitReadyAsync();
        ChatCompletion completion = await chat.CompleteChatAsync("Hello over HTTPS");
        var streamed = new StringBuilder();
        await foreach (var update in chat.CompleteChatStreamingAsync("Streamed over HTTPS"))
        {
            streamed.Append(string.Concat(update.ContentUpdate.Select(part => part.Text)));
        }

        using var health = await http.GetAsync($"https://127.0.0.1:{setup.AdminPort}/healthz");
        Assert.Equal(0, await serve.StopAsync());

        Assert.Contains("Hello over HTTPS", completion.Content[0].Text, StringComparison.Ordinal);
        Assert.Contains("Streamed over HTTPS", streamed.ToString(), StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.OK, health.StatusCode);
        Assert.Equal(new Version(1, 1), health.Version);
        Assert.Contains($"data plane https://127.0.0.1:{setup.Port}/", serve.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Serve_OnAnHttpsListener_WithoutACertificate_OrWithOneThatCannotBeRead_SaysWhich_AndStartsNothing()
    {
        await using var setup = await StartServeSetupAsync();
        var yaml = (await File.ReadAllTextAsync(setup.Config)).Replace("listen: http://", "listen: https://", StringComparison.Ordinal);
        await File.WriteAllTextAsync(setup.Config, yaml);

        var (exit, output, _) = await Cli.RunAsync("config", "validate", setup.Config);

        Assert.NotEqual(0, exit);
        Assert.Contains("server.listen", output, StringComparison.Ordinal);
        Assert.Contains("an https:// listener needs server.tls_certificate", output, StringComparison.Ordinal);

        await File.WriteAllTextAsync(setup.Config, yaml.Replace("data: serve-data", "data: serve-data\n  tls_certificate: missing.pem", StringComparison.Ordinal));
        await using var serve = CustosProcess.Start("Custos serving", setup.Environment(), "serve", "--config", setup.Config);

        Assert.Equal(1, await serve.WaitForExitAsync());
        Assert.Contains("server.tls_certificate", serve.Output, StringComparison.Ordinal);
        Assert.Contains("missing.pem", serve.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", serve.Output, StringComparison.Ordinal); // a message, not a stack trace
    }

    [Fact]
    public async Task Serve_WhenItsAdminAddressIsTaken_SaysSoInOneLine_WithoutAStackTrace()
    {
        await using var setup = await StartServeSetupAsync();
        using var taken = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, setup.AdminPort);
        taken.Start();

        await using var serve = CustosProcess.Start("Custos serving", setup.Environment(), "serve", "--config", setup.Config);

        Assert.Equal(1, await serve.WaitForExitAsync());
        Assert.Contains($"error: Failed to bind to address http://127.0.0.1:{setup.AdminPort}: address already in use.", serve.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("   at ", serve.Output, StringComparison.Ordinal); // was the host's log of the failed start, stack and all
        Assert.DoesNotContain("Hosting failed to start", serve.Output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Serve_WithProxiesInTheEnvironment_CallsAProviderOnThisMachineDirectly()
    {
        // A shell with a company's proxy variables, and the provider beside the gateway (the demo's, a local model server).
        await using var setup = await StartServeSetupAsync();
        var environment = new Dictionary<string, string>(setup.Environment())
        {
            ["HTTP_PROXY"] = "http://127.0.0.1:9", // nothing listens there
            ["HTTPS_PROXY"] = "http://127.0.0.1:9",
        };

        await using var serve = CustosProcess.Start("Custos serving", environment, "serve", "--config", setup.Config);
        await serve.WaitReadyAsync();
        ChatCompletion completion = await setup.Chat().CompleteChatAsync("Hello, neighbour");
        Assert.Equal(0, await serve.StopAsync());

        Assert.Contains("Hello, neighbour", completion.Content[0].Text, StringComparison.Ordinal);
        Assert.Contains("through the proxy http://127.0.0.1:9", serve.Output, StringComparison.Ordinal);
    }

    /// <summary>
    /// The demo provider over HTTPS as <paramref name="host"/> (on loopback), with a certificate made for the test, and
    /// the environment for <c>serve</c> that trusts it (<c>SSL_CERT_FILE</c>).
    /// </summary>
    private async Task<(ServeSetup Setup, Dictionary<string, string> Environment)> StartTlsServeSetupAsync(string host = "localhost")
    {
        var certificate = SelfSignedCertificate(host, names => names.AddDnsName(host));
        var trusted = Path.Combine(_directory, "provider-ca.pem");
        await File.WriteAllTextAsync(trusted, certificate.ExportCertificatePem());
        var upstream = await DemoUpstream.StartAsync(0, certificate);
        var key = ApiKey.Generate(ApiKeyKind.Consumer);
        int port = CustosProcess.FreePort(), adminPort = CustosProcess.FreePort();
        var config = await WriteServeConfigAsync(port, adminPort, new Uri($"https://{host}:{upstream.BaseUri.Port}/"), key);
        var setup = new ServeSetup(upstream, key, port, adminPort, config);
        return (setup, new Dictionary<string, string>(setup.Environment()) { ["SSL_CERT_FILE"] = trusted });
    }

    /// <summary>A certificate for the names <paramref name="names"/> adds, valid today, that is its own CA, with its key.</summary>
    private static X509Certificate2 SelfSignedCertificate(string commonName, Action<SubjectAlternativeNameBuilder> names)
    {
        using var rsa = RSA.Create(2048);
        var request = new CertificateRequest("CN=" + commonName, rsa, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var alternatives = new SubjectAlternativeNameBuilder();
        names(alternatives);
        request.CertificateExtensions.Add(alternatives.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(true, false, 0, true));
        return request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(1));
    }

    /// <summary>A mock provider, a consumer key and a <c>serve</c> config that names both, on free ports.</summary>
    private sealed record ServeSetup(DemoUpstream Upstream, string Key, int Port, int AdminPort, string Config) : IAsyncDisposable
    {
        /// <summary>The environment <c>serve</c> reads the provider's key from.</summary>
        public Dictionary<string, string> Environment() => new() { ["CUSTOS_TEST_UPSTREAM_KEY"] = "sk-serve-upstream-0123456789" };

        /// <summary>The OpenAI SDK's client, through the gateway, with the consumer's key.</summary>
        public ChatClient Chat() => new("gpt-4o-mini", new ApiKeyCredential(Key), new OpenAIClientOptions { Endpoint = new Uri($"http://127.0.0.1:{Port}/v1") });

        public ValueTask DisposeAsync() => Upstream.DisposeAsync();
    }

    private async Task<ServeSetup> StartServeSetupAsync()
    {
        var upstream = await DemoUpstream.StartAsync();
        var key = ApiKey.Generate(ApiKeyKind.Consumer);
        int port = CustosProcess.FreePort(), adminPort = CustosProcess.FreePort();
        return new ServeSetup(upstream, key, port, adminPort, await WriteServeConfigAsync(port, adminPort, upstream.BaseUri, key));
    }

    private async Task<string> WriteServeConfigAsync(int port, int adminPort, Uri upstream, string key)
    {
        var config = Path.Combine(_directory, "custos.yaml");
        await File.WriteAllTextAsync(config, $"""
            server:
              listen: http://127.0.0.1:{port}
              admin_listen: http://127.0.0.1:{adminPort}
              data: serve-data
            tenants:
              - id: acme
                providers:
                  - {"{"} id: main, type: openai, base_url: {upstream}v1, api_key_env: CUSTOS_TEST_UPSTREAM_KEY {"}"}
                models:
                  - {"{"} name: gpt-4o-mini, provider: main, price: {"{"} input_per_mtok: 1, output_per_mtok: 1 {"}"} {"}"}
            services:
              - id: app
                tenant: acme
            consumers:
              - {"{"} id: app-backend, service: app, category: internal, models: [gpt-4o-mini] {"}"}
            credentials:
              - {"{"} id: cred-1, consumer: app-backend, key_sha256: {KeyHash.Of(key).ToHex()} {"}"}
            """);
        return config;
    }

    [Fact]
    public async Task Serve_WithRedisCountersAndRedisDown_SaysWhereWithoutThePassword_AndStartsNothing()
    {
        var port = CustosProcess.FreePort();
        var unused = CustosProcess.FreePort();
        var config = await WriteRedisCountersConfigAsync("redis", port);

        await using var serve = CustosProcess.Start("Custos serving", new Dictionary<string, string> { ["CUSTOS_REDIS"] = $"127.0.0.1:{unused},password=s3cret-redis" },
            "serve", "--config", config);

        Assert.Equal(1, await serve.WaitForExitAsync());
        Assert.Contains($"cannot reach Redis (CUSTOS_REDIS): 127.0.0.1:{unused}: It was not possible to connect", serve.Output, StringComparison.Ordinal);
        Assert.Contains("nothing was started", serve.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("abortConnect", serve.Output, StringComparison.Ordinal); // the client's advice to retry forever: the gateway fails fast on purpose
        Assert.DoesNotContain("s3cret-redis", serve.Output, StringComparison.Ordinal);
        using var http = new HttpClient();
        await Assert.ThrowsAsync<HttpRequestException>(() => http.GetAsync($"http://127.0.0.1:{port}/healthz"));
    }

    [Fact]
    public async Task Serve_WithRedisCountersAndAMalformedConnectionString_NamesTheOptionNotTheValue_AndStartsNothing()
    {
        var port = CustosProcess.FreePort();
        var config = await WriteRedisCountersConfigAsync("redis-bad", port);

        await using var serve = CustosProcess.Start("Custos serving", new Dictionary<string, string> { ["CUSTOS_REDIS"] = "127.0.0.1:1,password=s3cret-redis,bogus=1" },
            "serve", "--config", config);

        Assert.Equal(1, await serve.WaitForExitAsync());
        Assert.Contains("CUSTOS_REDIS is not a Redis connection string: its option 'bogus'", serve.Output, StringComparison.Ordinal);
        Assert.Contains("nothing was started", serve.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("s3cret-redis", serve.Output, StringComparison.Ordinal);
        Assert.DoesNotContain("Unhandled exception", serve.Output, StringComparison.Ordinal);
    }

    /// <summary>A policy whose counters are in Redis, its data plane on <paramref name="port"/>; returns its path.</summary>
    private async Task<string> WriteRedisCountersConfigAsync(string name, int port)
    {
        var config = Path.Combine(_directory, name + ".yaml");
        await File.WriteAllTextAsync(config, $$"""
            server:
              listen: http://127.0.0.1:{{port}}
              admin_listen: http://127.0.0.1:{{CustosProcess.FreePort()}}
              data: {{name}}-data
              counters: redis
            tenants:
              - id: acme
                providers: [{ id: main, type: openai, base_url: http://127.0.0.1:1/v1 }]
                models: [{ name: gpt-4o-mini, provider: main }]
            services: [{ id: app, tenant: acme }]
            consumers: [{ id: app-backend, service: app, category: internal, models: [gpt-4o-mini] }]
            """);
        return config;
    }

    [Fact]
    public async Task ConfigValidate_ExampleFile_IsValid()
    {
        var (exit, output, _) = await Cli.RunAsync("config", "validate", Cli.RepoFile("custos.example.yaml"));

        Assert.Equal(0, exit);
        Assert.Contains("custos.example.yaml: valid", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ConfigValidate_BrokenFile_ListsEveryErrorWithLineAndColumn_AndFails()
    {
        var file = Path.Combine(_directory, "broken.yaml");
        await File.WriteAllTextAsync(file, "tenants:\n  - id: Bad Id\n    time_zone: Nowhere/City\nconsumers:\n  - id: c\n    service: missing\n    category: internal\n");

        var (exit, output, _) = await Cli.RunAsync("config", "validate", file);

        Assert.Equal(1, exit);
        Assert.Contains("broken.yaml:2:9: error: tenants[0].id:", output, StringComparison.Ordinal);
        Assert.Contains("broken.yaml:3:16: error: tenants[0].time_zone:", output, StringComparison.Ordinal);
        Assert.Contains("broken.yaml:6:14: error: consumers[0].service:", output, StringComparison.Ordinal);
        Assert.Contains("invalid: 3 error(s)", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task KeysGenerate_PrintsAValidKeyOnceAndTheHashToStore()
    {
        var (exit, output, _) = await Cli.RunAsync("keys", "generate", "--consumer", "support-web");

        Assert.Equal(0, exit);
        var key = output.Split(' ', '\n').Single(w => w.StartsWith("csk_", StringComparison.Ordinal) && w.Length > 12);
        Assert.Equal(ApiKeyFormatError.None, ApiKey.Validate(key, out _));
        Assert.Contains($"key_sha256: {KeyHash.Of(key).ToHex()}", output, StringComparison.Ordinal);

        // The entry pasted as printed holds the key's prefix, so `keys list` and the console can show which key it is.
        Assert.Contains($"\n    prefix: {key[..12]}\n", output.ReplaceLineEndings("\n"), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Requests_SaysHowManyRequestsWereShedWithoutEntriesOfTheirOwn()
    {
        var data = Path.Combine(_directory, "shed-data");
        await using (var store = await Custos.Storage.SqliteStore.OpenAsync(data))
        {
            var chain = new Custos.Ledger.HashChain("node-a", 0, Custos.Ledger.HashChain.Genesis);
            var now = DateTimeOffset.UtcNow;
            await store.AppendAsync(
            [
                chain.Append(new Custos.Ledger.ShedRecord { Timestamp = now, First = now.AddSeconds(-2), NodeId = "node-a", Reasons = new Dictionary<string, long> { ["unavailable.ledger_backlog"] = 40 } }),
                chain.Append(new Custos.Ledger.ShedRecord { Timestamp = now, First = now, NodeId = "node-a", Reasons = new Dictionary<string, long> { ["unavailable.ledger_backlog"] = 2 } }),
            ]);
        }

        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        var (exit, output, _) = await Cli.RunAsync("requests", "--data", data);

        Assert.Equal(0, exit);
        Assert.Contains("No request entries match.", output, StringComparison.Ordinal);
        Assert.Contains("Also 42 request(s) shed with 503 while the ledger queue was full, counted in 2 'shed' entries", output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Requests_WithoutAStore_SaysWhereItLooked()
    {
        var (exit, _, error) = await Cli.RunAsync("requests", "--data", Path.Combine(_directory, "nothing-here"));

        Assert.Equal(1, exit);
        Assert.Contains("No Custos store at", error, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("error: --data names no folder", "requests", "--data", "")]
    [InlineData("error: --from '100000000d' is longer than a time span can be", "audit", "verify", "--data", "{data}", "--from", "100000000d")]
    [InlineData("error: cannot create the data folder /proc/custos-test: Could not find file '/proc/custos-test'.", "init", "--data", "/proc/custos-test")] // a folder that cannot be made
    [InlineData("error: No space left on device", "report", "posture", "--data", "{data}", "-o", "/dev/full")] // a file that cannot be written
    [InlineData("error: --since '100000000d' is longer than a time span can be", "requests", "--data", "{data}", "--since", "100000000d")]
    [InlineData("error: --overlap '99999999d' is longer than a time span can be", "keys", "rotate", "c1", "--reason", "r", "--overlap", "99999999d", "--server", "http://127.0.0.1:1")]
    [InlineData("error: an empty id names nothing", "services", "show", "", "--server", "http://127.0.0.1:1")] // not the list in its place
    [InlineData("error: an empty id names nothing", "alerts", "show", " ", "--server", "http://127.0.0.1:1")]
    [InlineData("error: --until (2026-01-01T00:00:00.000000Z) must be after --since (2026-01-02T00:00:00.000000Z)", "requests", "--data", "{data}", "--since", "2026-01-02T00:00:00Z", "--until", "2026-01-01T00:00:00Z")]
    [InlineData("error: --to (", "audit", "verify", "--data", "{data}", "--from", "1h", "--to", "2h")] // ages: two hours ago is before one hour ago
    [InlineData("error: --to (", "report", "incident", "--consumer", "web", "--data", "{data}", "--from", "1h", "--to", "2h")]
    [InlineData("error: --to (", "report", "incident", "--consumer", "web", "--data", "{data}", "--from", "2999-01-01T00:00:00Z")] // a start after now, and no end: ends now
    [InlineData("error: unknown role 'god'", "keys", "generate", "--admin", "x", "--role", "god")] // refused before the key is made and shown
    [InlineData("error: unknown role '1'", "keys", "generate", "--admin", "x", "--role", "1")]
    public async Task ArgumentsThatCannotWork_AreOneLineOfError_NeverAStackTrace(string expected, params string[] args)
    {
        var data = Path.Combine(_directory, "data");
        Assert.Equal(0, (await Cli.RunAsync("init", "--data", data)).Exit);

        var (exit, _, error) = await Cli.RunAsync([.. args.Select(a => a.Replace("{data}", data, StringComparison.Ordinal))]);

        Assert.Equal(1, exit);
        Assert.StartsWith(expected, error, StringComparison.Ordinal);
        Assert.Single(error.Split('\n', StringSplitOptions.RemoveEmptyEntries));
    }
}
