using Custos.Policy;

namespace Custos.Core.Tests;

public sealed class PolicyYamlTests
{
    [Fact]
    public void Read_ExampleConfig_IsValidWithServerSettings()
    {
        var result = PolicyYaml.Read(File.ReadAllText(Repo.File("custos.example.yaml")));

        Assert.True(result.IsValid, string.Join("\n", result.Diagnostics.Select(d => d.Format("example"))));
        var document = result.Document!;
        Assert.Single(document.Tenants);
        Assert.Equal(4, document.Tenants[0].Models.Count);
        Assert.Equal(ModelKind.Embedding, document.Tenants[0].Models[2].Kind);
        Assert.Equal(0.15m, document.Tenants[0].Models[0].InputPerMillion);
        Assert.Equal("custos-data", result.Server.Data);
        Assert.Equal(ConsumerCategory.Agent, document.Consumers[1].Category);
        Assert.Equal(new DateTimeOffset(2027, 12, 31, 0, 0, 0, TimeSpan.Zero), document.Credentials[0].ExpiresAt);
    }

    [Fact]
    public void Read_SeveralErrors_ReportsEveryOneWithLineAndColumn()
    {
        const string yaml = """
            tenants:
              - id: acme
                time_zone: Mars/Olympus
                providers:
                  - id: openai
                    type: openia
                    base_url: not-a-url
                models:
                  - name: gpt-4o
                    provider: missing-provider
            services:
              - id: svc
                tenant: nope
            consumers:
              - id: c1
                service: svc
                category: robot
                modles: [gpt-4o]
            """;

        var result = PolicyYaml.Read(yaml);

        Assert.False(result.IsValid);
        var errors = result.Diagnostics.Where(d => d.Severity == DiagnosticSeverity.Error).ToList();
        Assert.Contains(errors, d => d.Line == 3 && d.Path == "tenants[0].time_zone");
        Assert.Contains(errors, d => d.Line == 6 && d.Column == 15 && d.Message.Contains("'openia' is not one of: openai, anthropic", StringComparison.Ordinal));
        Assert.Contains(errors, d => d.Line == 7 && d.Path == "tenants[0].providers[0].base_url");
        Assert.Contains(errors, d => d.Line == 10 && d.Message.Contains("provider 'missing-provider' is not declared", StringComparison.Ordinal));
        Assert.Contains(errors, d => d.Line == 13 && d.Message.Contains("tenant 'nope' is not declared", StringComparison.Ordinal));
        Assert.Contains(errors, d => d.Line == 17 && d.Path == "consumers[0].category");
        Assert.Contains(errors, d => d.Line == 18 && d.Message.Contains("did you mean 'models'", StringComparison.Ordinal));
        Assert.True(errors.Count >= 7);
    }

    [Theory]
    [InlineData("grpc", OtlpProtocol.Grpc)]
    [InlineData("http/protobuf", OtlpProtocol.HttpProtobuf)]
    public void Read_ServerOtlpSettings_AreReadInTheStandardSpelling(string protocol, OtlpProtocol expected)
    {
        var result = PolicyYaml.Read($"server:\n  otlp_endpoint: http://collector:4318\n  otlp_protocol: {protocol}\n");

        Assert.DoesNotContain(result.Diagnostics, d => d.Severity == DiagnosticSeverity.Error && d.Path.StartsWith("server", StringComparison.Ordinal));
        Assert.Equal(new Uri("http://collector:4318"), result.Server.OtlpEndpoint);
        Assert.Equal(expected, result.Server.OtlpProtocol);
    }

    /// <summary>One tenant with one provider and one model: a valid policy to put a <c>gateway:</c> section in front of.</summary>
    private const string MinimalTenant = """
        tenants:
          - id: acme
            providers: [{ id: p, type: openai, base_url: http://127.0.0.1:1/v1 }]
            models: [{ name: m, provider: p }]
        """;

    [Theory]
    [InlineData("k2", null)]
    [InlineData("k9", "credential 'k9' is not another credential of consumer 'c1'")]
    [InlineData("k1", "credential 'k1' is not another credential of consumer 'c1'")]
    [InlineData("k3", "credential 'k3' is not another credential of consumer 'c1'")]
    public void Read_ReplacedBy_NamesAnotherCredentialOfTheSameConsumer(string replacedBy, string? error)
    {
        var yaml = MinimalTenant + $$"""

            services: [{ id: s, tenant: acme }]
            consumers:
              - { id: c1, service: s, category: internal, models: [m] }
              - { id: c2, service: s, category: internal, models: [m] }
            credentials:
              - { id: k1, consumer: c1, key_sha256: {{new string('a', 64)}}, expires_at: "2026-12-03T00:00:00Z", replaced_by: {{replacedBy}} }
              - { id: k2, consumer: c1, key_sha256: {{new string('b', 64)}} }
              - { id: k3, consumer: c2, key_sha256: {{new string('c', 64)}} }
            """;
        var result = PolicyYaml.Read(yaml);
        var errors = result.Diagnostics.Where(d => d.Severity == DiagnosticSeverity.Error).ToList();
        if (error is null)
        {
            Assert.Empty(errors);
            Assert.Equal("k2", result.Document!.Credentials[0].ReplacedBy);
        }
        else
        {
            var only = Assert.Single(errors);
            Assert.Equal(("credentials[0].replaced_by", error), (only.Path, only.Message));
        }
    }

    [Fact]
    public void Read_FailModes_DefaultsAndLocalShareOnlyForRateLimits()
    {
        var plain = PolicyYaml.Read(MinimalTenant);
        Assert.Null(plain.Document!.Gateway.FailModes); // nothing declared: the defaults, and the policy hash unchanged

        var declared = PolicyYaml.Read("gateway: { fail_modes: { rate_limits: closed, quotas: open } }\n" + MinimalTenant);
        Assert.True(declared.IsValid);
        var modes = declared.Document!.Gateway.FailModes!;
        Assert.Equal((FailMode.Closed, FailMode.Open, FailMode.Closed, FailMode.Closed), (modes.RateLimits, modes.Quotas, modes.Budgets, modes.Revocation));

        var wrong = PolicyYaml.Read("gateway: { fail_modes: { budgets: local_share } }\n" + MinimalTenant);
        Assert.False(wrong.IsValid);
        Assert.Contains(wrong.Diagnostics, d => d.Path == "gateway.fail_modes.budgets" && d.Message.Contains("rate limits only", StringComparison.Ordinal));
    }

    [Fact]
    public void Read_MaxConcurrentReports_UnsetLeavesTheHashAlone_AndOutOfRangeIsAnError()
    {
        var plain = PolicyYaml.Read(MinimalTenant).Document!;
        Assert.Null(plain.Gateway.MaxConcurrentReports);
        Assert.DoesNotContain("max_concurrent_reports", PolicyVersion.CanonicalJson(plain), StringComparison.Ordinal); // versions stored before it hash alike

        var declared = PolicyYaml.Read("gateway: { max_concurrent_reports: 1 }\n" + MinimalTenant);
        Assert.True(declared.IsValid);
        Assert.Equal(1, declared.Document!.Gateway.MaxConcurrentReports);

        foreach (var wrong in new[] { "0", "65" })
        {
            var result = PolicyYaml.Read($"gateway: {{ max_concurrent_reports: {wrong} }}\n" + MinimalTenant);
            Assert.False(result.IsValid);
            Assert.Contains(result.Diagnostics, d => d.Path == "gateway.max_concurrent_reports" && d.Message.Contains("between 1 and 64", StringComparison.Ordinal));
        }
    }

    [Fact]
    public void Read_TrustedProxies_AreAddressesAndRanges_AndAnythingElseIsAnErrorAtItsLine()
    {
        var result = PolicyYaml.Read("server:\n  trusted_proxies:\n    - 10.0.0.0/8\n    - 192.168.1.7\n    - fd00::/8\n");

        Assert.DoesNotContain(result.Diagnostics, d => d.Path.StartsWith("server", StringComparison.Ordinal));
        Assert.Equal(["10.0.0.0/8", "192.168.1.7/32", "fd00::/8"], result.Server.TrustedProxies.Select(n => n.ToString()));
        Assert.Empty(PolicyYaml.Read("server:\n  listen: http://127.0.0.1:8080\n").Server.TrustedProxies);

        var wrong = PolicyYaml.Read("server:\n  trusted_proxies:\n    - 10.0.0.0/8\n    - lb.internal\n    - 10.0.0.0/33\n");

        Assert.Contains(wrong.Diagnostics, d => d.Path == "server.trusted_proxies[1]" && d.Line == 4
            && d.Message.Contains("'lb.internal' is neither an IP address nor a CIDR range", StringComparison.Ordinal));
        Assert.Contains(wrong.Diagnostics, d => d.Path == "server.trusted_proxies[2]" && d.Line == 5);
    }

    [Theory]
    [InlineData("abc", "'abc' is not a decimal number such as 12.50")]
    [InlineData("1e30", "'1e30' is not a decimal number such as 12.50")]
    [InlineData("-5", "must be a positive amount")]
    [InlineData("0", "must be a positive amount")]
    public void Read_ABudgetAmountThatIsNoPositiveNumber_IsOneError(string amount, string message)
    {
        var result = PolicyYaml.Read($"defaults:\n  agent:\n    limits:\n      budget: {{ amount: {amount}, period: day }}\n");

        var error = Assert.Single(result.Diagnostics, d => d.Path == "defaults.agent.limits.budget.amount"); // was two for 'abc': not a number, and not positive
        Assert.Equal(message, error.Message);
    }

    [Fact]
    public void Read_ABudgetOrAPriceLargerThanTheCountersHold_IsAnErrorAtItsLineAndColumn()
    {
        // 9.3e9 passed, then every request of the consumer failed with a 500: the counters hold billionths in 64 bits.
        var result = PolicyYaml.Read("""
            tenants:
              - id: acme
                providers: [{ id: p, type: openai, base_url: http://127.0.0.1:1/v1 }]
                models:
                  - { name: m, provider: p, price: { input_per_mtok: 1, output_per_mtok: 10000000001 } }
            services: [{ id: s, tenant: acme }]
            consumers:
              - id: c1
                service: s
                category: internal
                models: [m]
                limits: { budget: { amount: 9300000000, period: day } }
              - id: c2
                service: s
                category: internal
                models: [m]
                limits: { budget: { amount: 9223372036, period: day } }
            """);

        var errors = result.Diagnostics.Where(d => d.Severity == DiagnosticSeverity.Error).ToList();
        Assert.Equal(2, errors.Count);
        var budget = Assert.Single(errors, d => d.Path == "consumers[0].limits.budget.amount");
        Assert.Equal((12, 33, "9300000000 is more than the counters hold: the largest amount is 9,223,372,036"), (budget.Line, budget.Column, budget.Message));
        var price = Assert.Single(errors, d => d.Path == "tenants[0].models[0].price.output_per_mtok");
        Assert.Equal((5, 78, "10000000001 is more than the largest price, 1,000,000,000 per million tokens"), (price.Line, price.Column, price.Message));
    }

    [Fact]
    public void Read_ACurrencyThatIsNoCode_OrModelsOfOneTenantInTwoCurrencies_AreErrors()
    {
        // A consumer's budget added EUR and USD costs together; 'usd' and 'XYZ1' were taken as they were.
        var result = PolicyYaml.Read("""
            tenants:
              - id: acme
                providers: [{ id: p, type: openai, base_url: http://127.0.0.1:1/v1 }]
                models:
                  - { name: a, provider: p, price: { input_per_mtok: 1, output_per_mtok: 2 } }
                  - { name: b, provider: p, price: { input_per_mtok: 1, output_per_mtok: 2, currency: EUR } }
                  - { name: c, provider: p, price: { currency: usd } }
                  - { name: d, provider: p, price: { currency: XYZ1 } }
              - id: euro
                providers: [{ id: p, type: openai, base_url: http://127.0.0.1:1/v1 }]
                models:
                  - { name: a, provider: p, price: { input_per_mtok: 1, output_per_mtok: 2, currency: EUR } }
                  - { name: b, provider: p, price: { currency: EUR } }
            """);

        var errors = result.Diagnostics.Where(d => d.Severity == DiagnosticSeverity.Error).ToList();
        Assert.Contains(errors, d => d.Path == "tenants[0].models[2].price.currency" && d.Line == 7
            && d.Message == "'usd' is not a currency code: three capital letters (ISO 4217), such as USD or EUR");
        Assert.Contains(errors, d => d.Path == "tenants[0].models[3].price.currency" && d.Line == 8 && d.Message.StartsWith("'XYZ1' is not", StringComparison.Ordinal));
        var mixed = Assert.Single(errors, d => d.Path == "tenants[0].models[1].price.currency");
        Assert.Equal((6, "model 'b' is priced in EUR, model 'a' in USD: the models of tenant 'acme' share one currency, since budgets add up their costs (a tenant per currency keeps them apart)"),
            (mixed.Line, mixed.Message));
        Assert.DoesNotContain(errors, d => d.Path.StartsWith("tenants[1]", StringComparison.Ordinal)); // one currency a tenant, whichever
    }

    [Fact]
    public void Read_ABaseUrlThatIsNoUrl_IsOneError_WithoutAWarningAboutWhereRequestsWouldGo()
    {
        var result = PolicyYaml.Read("""
            tenants:
              - id: acme
                providers: [{ id: p, type: openai, base_url: "not a url" }]
                models: [{ name: m, provider: p }]
            """);

        var diagnostic = Assert.Single(result.Diagnostics, d => d.Path == "tenants[0].providers[0].base_url");
        Assert.Equal(DiagnosticSeverity.Error, diagnostic.Severity);
        Assert.Equal("'not a url' is not an absolute http or https URL", diagnostic.Message);
    }

    [Theory]
    [InlineData("anthropic", "https://api.anthropic.com/v1", "https://api.anthropic.com/v1/v1/messages")]
    [InlineData("openai", "https://api.openai.com", "https://api.openai.com/chat/completions")]
    [InlineData("anthropic", "https://api.anthropic.com", null)]
    [InlineData("openai", "https://api.openai.com/v1/", null)]
    [InlineData("openai", "https://generativelanguage.googleapis.com/v1beta/openai/", null)]
    public void Read_ABaseUrlThatWouldMissTheApi_IsAWarningNamingWhereRequestsWouldGo(string type, string baseUrl, string? wouldGo)
    {
        var result = PolicyYaml.Read($$"""
            tenants:
              - id: acme
                providers: [{ id: p, type: {{type}}, base_url: "{{baseUrl}}" }]
                models: [{ name: m, provider: p }]
            """);

        var warnings = result.Diagnostics.Where(d => d.Path == "tenants[0].providers[0].base_url").ToList();
        if (wouldGo is null)
        {
            Assert.Empty(warnings);
        }
        else
        {
            var warning = Assert.Single(warnings);
            Assert.Equal(DiagnosticSeverity.Warning, warning.Severity);
            Assert.Contains(wouldGo, warning.Message, StringComparison.Ordinal);
            Assert.Equal(3, warning.Line);
        }
    }

    [Theory]
    [InlineData("listen: http://127.0.0.1:99999", "server.listen", "'http://127.0.0.1:99999' has no port from 0 to 65535")]
    [InlineData("listen: http://127.0.0.1:x", "server.listen", "'http://127.0.0.1:x' has no port from 0 to 65535")]
    [InlineData("listen: bogus", "server.listen", "'bogus' is not http:// or https://; a listener address is a scheme, a host and a port")]
    [InlineData("admin_listen: http://:8081", "server.admin_listen", "'http://:8081' has no host; a listener address")]
    [InlineData("listen: http://127.0.0.1:8080/v1", "server.listen", "'http://127.0.0.1:8080/v1' has a path; a listener address")]
    [InlineData("listen: http://127.0.0.1:8080\n  admin_listen: http://127.0.0.1:8080/", "server.admin_listen", "is the data plane's address too (http://127.0.0.1:8080/); the admin API needs a port of its own")]
    public void Read_AListenerAddressKestrelCouldNotBind_IsAnErrorAtItsLine(string server, string path, string message)
    {
        // Each of these passed validation, and `custos serve` then ended in an unhandled exception (or bound nothing).
        var result = PolicyYaml.Read("server:\n  " + server + "\n");

        var error = Assert.Single(result.Diagnostics, d => d.Path == path);
        Assert.Equal(DiagnosticSeverity.Error, error.Severity);
        Assert.Contains(message, error.Message, StringComparison.Ordinal);
        Assert.True(error.Line >= 2);
    }

    [Theory]
    [InlineData("http://127.0.0.1:8080")]
    [InlineData("http://0.0.0.0:8080/")]
    [InlineData("http://[::]:8080")]
    [InlineData("http://*:8080")]
    [InlineData("http://localhost")]
    [InlineData("http://127.0.0.1:0")]
    [InlineData("http://unix:/run/custos.sock")]
    public void Read_ListenerAddressesKestrelBinds_AreAccepted(string url)
    {
        var result = PolicyYaml.Read($"server:\n  listen: {url}\n  admin_listen: http://127.0.0.1:0\n");

        Assert.DoesNotContain(result.Diagnostics, d => d.Path.StartsWith("server.", StringComparison.Ordinal));
        Assert.Equal(url, result.Server.Listen);
    }

    [Fact]
    public void Read_UnknownOtlpProtocol_IsAnErrorNamingTheChoices()
    {
        var result = PolicyYaml.Read("server:\n  otlp_endpoint: collector:4317\n  otlp_protocol: http/json\n");

        Assert.Contains(result.Diagnostics, d => d.Path == "server.otlp_endpoint" && d.Line == 2);
        Assert.Contains(result.Diagnostics, d => d.Path == "server.otlp_protocol" && d.Line == 3
            && d.Message.Contains("'http/json' is not one of: grpc, http/protobuf", StringComparison.Ordinal));
        Assert.Null(result.Server.OtlpProtocol);
    }

    [Fact]
    public void Read_MissingRequiredField_PointsAtTheMapping()
    {
        var result = PolicyYaml.Read("tenants:\n  - name: no id here\n");

        var error = Assert.Single(result.Diagnostics, d => d.Severity == DiagnosticSeverity.Error);
        Assert.Equal("tenants[0].id", error.Path);
        Assert.Equal(2, error.Line);
    }

    [Fact]
    public void Read_YamlSyntaxError_IsOneDiagnosticWithPosition()
    {
        var result = PolicyYaml.Read("tenants:\n  - id: [unclosed\n");

        var error = Assert.Single(result.Diagnostics);
        Assert.StartsWith("YAML syntax", error.Message, StringComparison.Ordinal);
        Assert.True(error.Line >= 2);
    }

    [Theory]
    [InlineData("email: research-finance@acme.example }", "email: research-finance@acme.exa")] // InvalidOperationException
    [InlineData("- name: gpt-4o-mini ", "- : email, acname: gpt-4o-mini ")] // ArgumentException: an event it did not expect
    [InlineData("aliases: [fast]", "aliases: !!str[fast]")] // ArgumentException: a tag that is not a URI
    public void Read_YamlTheParserThrowsOtherExceptionsOn_IsADiagnosticAtTheLineOfTheMistake(string from, string to)
    {
        // Found by mutating the example configuration at random: YamlDotNet threw these, and `custos config validate`
        // ended in an unhandled exception; then they were diagnostics without a line ("the parser gave no line").
        var yaml = File.ReadAllText(Repo.File("custos.example.yaml"));
        Assert.Contains(from, yaml, StringComparison.Ordinal);
        var line = yaml[..yaml.IndexOf(from, StringComparison.Ordinal)].Count(c => c == '\n') + 1;

        var result = PolicyYaml.Read(yaml.Replace(from, to, StringComparison.Ordinal));

        var error = Assert.Single(result.Diagnostics);
        Assert.StartsWith("YAML syntax: ", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("current state of the object", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("(Parameter", error.Message, StringComparison.Ordinal);
        Assert.InRange(error.Line, line, line + 1);
        Assert.True(error.Column > 0);
        Assert.Null(result.Document);
    }

    [Fact]
    public void Read_AFlowSequenceLeftOpen_IsADiagnosticAtItsBracket()
    {
        // `name: [Acme` in a tenant: the diagnostic had no line, and its message was .NET's "Operation is not valid due to
        // the current state of the object".
        var result = PolicyYaml.Read("tenants:\n  - id: acme\n    name: [Acme\n    providers: []\nservices: []\n");

        var error = Assert.Single(result.Diagnostics);
        Assert.Equal((3, 11), (error.Line, error.Column));
        Assert.Contains("'[' or '{' that is not closed", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Read_ContradictoryLimits_AreWarningsAtTheLimitThatCannotAct()
    {
        var result = PolicyYaml.Read("""
            tenants:
              - id: t
                limits: { budget: { amount: 50, period: month } }
            services:
              - id: s
                tenant: t
                limits: { requests_per_month: 100 }
            defaults:
              agent:
                limits: { tokens_per_minute: 1000 }
            consumers:
              - id: c
                service: s
                category: agent
                limits:
                  max_output_tokens: 4096
                  requests_per_day: 500
                  requests_per_month: 20000
                  budget: { amount: 80, period: day }
              - id: fine
                service: s
                category: internal
                limits: { max_output_tokens: 512, tokens_per_minute: 10000, requests_per_day: 50, requests_per_month: 1000 }
            """);

        Assert.True(result.IsValid, string.Join("\n", result.Diagnostics.Select(d => d.Format("p"))));
        var warnings = result.Diagnostics.Where(d => d.Severity == DiagnosticSeverity.Warning && d.Path.Contains(".limits.", StringComparison.Ordinal)).ToList();
        Assert.Equal(3, warnings.Count);
        var output = Assert.Single(warnings, w => w.Path == "consumers[0].limits.max_output_tokens");
        Assert.Equal((16, "max_output_tokens (4,096) of consumer 'c' is above tokens_per_minute (1,000) of the defaults of category 'agent': a request that " +
            "asks for its ceiling, or names none and has it injected, reserves more than the whole limit and is refused (deny.exceeds_limit); " +
            "lower max_output_tokens to at most 1,000"), (output.Line, output.Message));
        Assert.Equal("requests_per_day (500) of consumer 'c' is above requests_per_month (100) of service 's': the monthly quota runs out first, " +
            "so the daily quota never acts", Assert.Single(warnings, w => w.Path == "consumers[0].limits.requests_per_day").Message);
        Assert.Equal("the daily budget (80) of consumer 'c' is above the monthly budget (50) of tenant 't': the month's runs out first, so the " +
            "daily budget never acts", Assert.Single(warnings, w => w.Path == "consumers[0].limits.budget").Message);
    }

    [Fact]
    public void Read_AServicesOutputCeilingAboveATokenLimit_IsWarnedAbout_WhereItHolds()
    {
        // A service's max_output_tokens holds for its consumers without a lower one of their own: it was not compared.
        var result = PolicyYaml.Read("""
            tenants:
              - id: t
                limits: { tokens_per_minute: 2000 }
            services:
              - id: s
                tenant: t
                limits: { max_output_tokens: 4096 }
              - id: lower
                tenant: t
                limits: { max_output_tokens: 4096 }
            consumers:
              - id: c
                service: s
                category: internal
              - id: own
                service: lower
                category: internal
                limits: { max_output_tokens: 1000 }
            """);

        Assert.True(result.IsValid, string.Join("\n", result.Diagnostics.Select(d => d.Format("p"))));
        var warning = Assert.Single(result.Diagnostics, d => d.Severity == DiagnosticSeverity.Warning && d.Path.EndsWith(".max_output_tokens", StringComparison.Ordinal));
        Assert.Equal("services[0].limits.max_output_tokens", warning.Path);
        Assert.StartsWith("max_output_tokens (4,096) of service 's' is above tokens_per_minute (2,000) of tenant 't'", warning.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Read_ServiceWithoutOwnersOrWithOneSharedContact_WarnsMissingGovernance()
    {
        const string yaml = """
            tenants: [{ id: t }]
            services:
              - id: bare
                tenant: t
              - id: shared
                tenant: t
                owners:
                  policy: { name: Team, email: team@x.example }
                  billing: { name: Team, email: team@x.example }
                  technical: { name: Team, email: team@x.example }
            """;

        var result = PolicyYaml.Read(yaml);

        Assert.True(result.IsValid);
        Assert.Contains(result.Diagnostics, d => d.Severity == DiagnosticSeverity.Warning && d.Path == "services[0].owners.policy");
        Assert.Contains(result.Diagnostics, d => d.Severity == DiagnosticSeverity.Warning && d.Message.Contains("one shared contact", StringComparison.Ordinal));
    }

    [Fact]
    public void Read_KeyInsteadOfHash_IsRejected()
    {
        const string yaml = """
            tenants: [{ id: t }]
            services: [{ id: s, tenant: t }]
            consumers: [{ id: c, service: s, category: internal }]
            credentials:
              - id: k
                consumer: c
                key_sha256: csk_thisIsAKeyNotAHash
            """;

        var result = PolicyYaml.Read(yaml);

        Assert.Contains(result.Diagnostics, d => d.Path == "credentials[0].key_sha256" && d.Line == 7);
    }

    [Theory]
    [InlineData("credentials:\n  - id: k\n    consumer: c\n    key_sha256: \"\"\n", "credentials[0].key_sha256")]
    [InlineData("admins:\n  - id: a\n    role: auditor\n    key_sha256: # to come\n", "admins[0].key_sha256")]
    public void Read_AnEmptyKeyHash_IsRejected(string entry, string path)
    {
        // It passed as valid, and compiling the policy (serve, policy apply) then threw on the empty hash.
        var result = PolicyYaml.Read("tenants: [{ id: t }]\nservices: [{ id: s, tenant: t }]\nconsumers: [{ id: c, service: s, category: internal }]\n" + entry);

        Assert.False(result.IsValid);
        Assert.Contains(result.Diagnostics, d => d.Severity == DiagnosticSeverity.Error && d.Path == path);
    }

    [Fact]
    public void HashOf_IgnoresCommentsLayoutAndDecimalScale()
    {
        var a = PolicyYaml.Read("tenants:\n  - id: t\n    providers: [{ id: p, type: openai, base_url: http://x/v1 }]\n    models: [{ name: m, provider: p, price: { input_per_mtok: 0.150 } }]\n").Document!;
        var b = PolicyYaml.Read("# comment\ntenants: [{id: t, providers: [{id: p, type: openai, base_url: 'http://x/v1'}], models: [{name: m, provider: p, price: {input_per_mtok: 0.15}}]}]").Document!;
        var c = PolicyYaml.Read("tenants: [{id: t, providers: [{id: p, type: openai, base_url: 'http://x/v1'}], models: [{name: m, provider: p, price: {input_per_mtok: 0.16}}]}]").Document!;

        Assert.Equal(PolicyVersion.HashOf(a), PolicyVersion.HashOf(b));
        Assert.NotEqual(PolicyVersion.HashOf(a), PolicyVersion.HashOf(c));
    }

    [Fact]
    public void CanonicalJson_RoundTripsToTheSameHash()
    {
        var document = PolicyYaml.Read(File.ReadAllText(Repo.File("custos.example.yaml"))).Document!;

        var back = PolicyVersion.FromCanonicalJson(PolicyVersion.CanonicalJson(document));

        Assert.Equal(PolicyVersion.HashOf(document), PolicyVersion.HashOf(back));
    }
}

public sealed class PolicyYamlWriterTests
{
    [Fact]
    public void Write_ThenRead_GivesTheSameCanonicalHash()
    {
        var original = PolicyYaml.Read(File.ReadAllText(Repo.File("custos.example.yaml"))).Document!;
        var withEverything = original with
        {
            Gateway = new GatewaySettings { MaxRequestBodyBytes = 2048, UpstreamTimeout = TimeSpan.FromSeconds(7), PromptRegexTimeout = TimeSpan.FromMilliseconds(30), MaxInFlightRequests = 64, MaxConcurrentReports = 3 },
            Defaults = new CategoryDefaultsSet { Agent = new CategoryDefaults { Models = ["gpt-4o", "claude-sonnet"], Limits = new LimitsConfig { RequestsPerMinute = 5, Budget = new BudgetConfig { Amount = 12.5m, Mode = BudgetMode.Soft } } } },
            Tenants = [original.Tenants[0] with { PromptRules = [new PromptRuleConfig { Id = "cards", Detector = PromptDetector.PaymentCard, Action = PromptAction.Redact }, new PromptRuleConfig { Id = "x", Pattern = "(?i)falcon" }] }],
            Consumers = [.. original.Consumers.Select(c => c with { Entitlements = [new EntitlementConfig { Models = ["gpt-4o"], ApprovedBy = "dana", Ticket = "T-1", ValidUntil = new DateTimeOffset(2027, 1, 1, 0, 0, 0, TimeSpan.Zero) }], Limits = new LimitsConfig { MaxOutputTokens = 100, OutputCeiling = OutputCeilingMode.Deny }, Suspended = true })],
            Services = [.. original.Services.Select(s => s with { Suspended = true, Models = ["gpt-4o"], Approvers = ["ops"] })],
            Credentials = [.. original.Credentials.Select(c => c.KeySha256 is null ? c : c with { Prefix = "csk_abcdefgh", CreatedAt = new DateTimeOffset(2026, 11, 28, 10, 0, 0, TimeSpan.Zero) })],
            IdentityProviders = [original.IdentityProviders![0] with { JwksUrl = null, Keys = ["-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----"], SubjectClaim = "azp" }],
        };

        var yaml = PolicyYamlWriter.Write(withEverything);
        var back = PolicyYaml.Read(yaml);

        Assert.True(back.IsValid, yaml + "\n" + string.Join("\n", back.Diagnostics.Select(d => d.Format("written"))));
        Assert.Equal(PolicyVersion.CanonicalJson(withEverything), PolicyVersion.CanonicalJson(back.Document!));
    }

    [Fact]
    public void Write_ThenRead_KeepsTheCachePrices_AndAPolicyWithoutThemHashesAsBefore()
    {
        var with = PolicyYaml.Read("""
            tenants:
              - id: acme
                providers: [{ id: p, type: anthropic, base_url: http://127.0.0.1:1 }]
                models:
                  - { name: m, provider: p, price: { input_per_mtok: 3, output_per_mtok: 15, cached_input_per_mtok: 0.3, cache_write_input_per_mtok: 3.75 } }
                  - { name: n, provider: p, price: { input_per_mtok: 3, output_per_mtok: 15 } }
            """);

        Assert.True(with.IsValid, string.Join("\n", with.Diagnostics.Select(d => d.Format("policy"))));
        var models = with.Document!.Tenants[0].Models;
        Assert.Equal((0.3m, 3.75m), (models[0].CachedInputPerMillion, models[0].CacheWriteInputPerMillion));
        Assert.Equal(((decimal?)null, (decimal?)null), (models[1].CachedInputPerMillion, models[1].CacheWriteInputPerMillion));
        var back = PolicyYaml.Read(PolicyYamlWriter.Write(with.Document));
        Assert.Equal(PolicyVersion.CanonicalJson(with.Document), PolicyVersion.CanonicalJson(back.Document!));
        var without = PolicyVersion.CanonicalJson(with.Document with { Tenants = [with.Document.Tenants[0] with { Models = [models[1]] }] });
        Assert.DoesNotContain("cache", without, StringComparison.Ordinal);
    }
}

public sealed class ControlPlanePolicyTests
{
    private const string Base = """
        tenants:
          - id: t
            providers: [{ id: p, type: openai, base_url: http://x/v1 }]
            models: [{ name: m }, { name: n }]
        """;

    [Fact]
    public void Example_DeclaresWorkloadIdentityOidcAdminsOwnersAndApprovers()
    {
        var document = PolicyYaml.Read(File.ReadAllText(Repo.File("custos.example.yaml"))).Document!;

        Assert.Equal(RequireOwners.Warn, document.Gateway.RequireOwners);
        var provider = Assert.Single(document.IdentityProviders!);
        Assert.Equal("custos", provider.Audience);
        var workload = Assert.Single(document.Credentials, c => c.Issuer is not null);
        Assert.Null(workload.KeySha256);
        Assert.Equal("system:serviceaccount:research:digest", workload.Subject);
        Assert.Equal("dana", document.Services[0].Owners.Policy!.Admin);
        Assert.Equal(["sam"], document.Services[0].Approvers);
        Assert.Contains(document.Admins, a => a.Id == "sam" && a.KeySha256 is null && a.Subject == "sam@acme.example");
    }

    [Fact]
    public void NewOptionalFields_WhenAbsent_KeepTheHashOfOlderPolicies()
    {
        // Policies written before the control plane existed must hash as they did, or a restart would re-version them.
        var document = PolicyYaml.Read(Base.Replace("[{ name: m }, { name: n }]", "[{ name: m, provider: p }]", StringComparison.Ordinal)).Document!;
        var json = PolicyVersion.CanonicalJson(document);

        foreach (var field in new[] { "identity_providers", "suspended", "approvers", "require_owners", "issuer", "subject", "prefix", "created_at" })
        {
            Assert.DoesNotContain($"\"{field}\"", json, StringComparison.Ordinal);
        }
    }

    [Fact]
    public void Validation_RejectsBrokenControlPlaneReferences_WithLines()
    {
        const string yaml = """
            gateway: { require_owners: sometimes }
            tenants:
              - id: t
                providers: [{ id: p, type: openai, base_url: http://x/v1 }]
                models: [{ name: m, provider: p }]
            services:
              - id: s
                tenant: t
                models: [nope]
                approvers: [ghost]
                owners:
                  policy: { name: P, email: p@x.example, admin: nobody }
            consumers:
              - { id: c, service: s, category: agent, suspended: maybe }
            credentials:
              - { id: k1, consumer: c, issuer: unknown-idp, subject: job }
              - { id: k2, consumer: c }
              - { id: k3, consumer: c, key_sha256: 0000000000000000000000000000000000000000000000000000000000000000, issuer: idp, subject: x }
            identity_providers:
              - { id: idp, issuer: https://idp.example/, audience: custos }
            admins:
              - { id: a, role: finance }
            """;
        var result = PolicyYaml.Read(yaml);

        Assert.False(result.IsValid);
        var messages = result.Diagnostics.Where(d => d.Severity == DiagnosticSeverity.Error).Select(d => d.Format("p")).ToList();
        string[] expected =
        [
            "'sometimes' is not one of", "model 'nope' is not offered by tenant 't'", "admin 'ghost' is not declared", "admin 'nobody' is not declared",
            "'maybe' is not true or false", "identity provider 'unknown-idp' is not declared", "either an API key ('key_sha256') or a workload identity",
            "needs 'jwks_url' or 'keys'", "signs in with an admin key ('key_sha256') or OIDC",
        ];
        foreach (var text in expected)
        {
            Assert.Contains(messages, m => m.Contains(text, StringComparison.Ordinal));
        }

        // k2 (neither) and k3 (both) are both refused.
        Assert.Equal(2, messages.Count(m => m.Contains("either an API key", StringComparison.Ordinal)));
        Assert.All(result.Diagnostics, d => Assert.True(d.Line > 0, d.Format("p")));
    }

    [Theory]
    [InlineData("{ name: P, email: p@x.example, webhook: https://hooks.example/p }", null)]
    [InlineData("{ name: P, email: ops@intranet }", null)]
    [InlineData("{ name: P, email: not-an-address }", "owners.policy.email")]
    [InlineData("{ name: P, email: \"Pat <p@x.example>\" }", "owners.policy.email")]
    [InlineData("{ name: P, email: \"p@x.example, q@x.example\" }", "owners.policy.email")]
    [InlineData("{ name: P, email: \"p @x.example\" }", "owners.policy.email")]
    [InlineData("{ name: P, email: p@x.example, webhook: file:///etc/passwd }", "owners.policy.webhook")]
    [InlineData("{ name: \"P\\u001b[31m\", email: p@x.example }", "owners.policy.name")]
    [InlineData("{ name: \"   \", email: p@x.example }", "owners.policy.name")]
    public void AnOwnersContact_IsAnAddressAWebhookAndANameThatCanBeUsed(string owner, string? errorPath)
    {
        // Notifications go to these, and reports name them: a typo is a message that never arrives.
        // (The webhook's check is the reader's; it is here so that the contact is checked as a whole.)
        var yaml = $$"""
            tenants:
              - id: t
                providers: [{ id: p, type: openai, base_url: http://x/v1 }]
                models: [{ name: m, provider: p }]
            services:
              - id: s
                tenant: t
                owners:
                  policy: {{owner}}
            """;

        var errors = PolicyYaml.Read(yaml).Diagnostics.Where(d => d.Severity == DiagnosticSeverity.Error).ToList();

        if (errorPath is null)
        {
            Assert.Empty(errors);
        }
        else
        {
            var error = Assert.Single(errors, e => e.Path == "services[0]." + errorPath);
            Assert.True(errors.Count == 1, string.Join("; ", errors.Select(e => e.Format("p"))));
            Assert.Equal(9, error.Line);
        }
    }

    [Fact]
    public void AProblemWithNoPlaceInTheFile_IsFormattedWithoutOne()
    {
        var result = PolicyYaml.Read("""
            server:
              listen: http://127.0.0.1:9
            """);

        Assert.Contains("custos.yaml: error: tenants: at least one tenant is required", result.Diagnostics.Select(d => d.Format("custos.yaml")));
        Assert.Equal("custos.yaml:3:1: error: x: y", new PolicyDiagnostic(DiagnosticSeverity.Error, 3, 1, "x", "y").Format("custos.yaml"));
    }

    [Fact]
    public void Compile_KillSwitchesModelChoiceAndRequireOwners_BecomeEachConsumersRefusalAndModels()
    {
        static PolicySnapshot Compile(string yaml)
        {
            var read = PolicyYaml.Read(yaml);
            Assert.True(read.IsValid, string.Join("\n", read.Diagnostics.Select(d => d.Format("p"))));
            return PolicySnapshot.Compile(new PolicyVersion(1, PolicyVersion.HashOf(read.Document!), "t", "t", DateTimeOffset.UnixEpoch, read.Document!), _ => null);
        }

        const string policy = """
            gateway: { require_owners: REQUIRE }
            tenants:
              - id: t
                providers: [{ id: p, type: openai, base_url: http://x/v1 }]
                models: [{ name: m, provider: p }, { name: n, provider: p }]
            services:
              - id: owned
                tenant: t
                models: [m]
                owners:
                  policy: { name: P, email: p@x.example }
                  billing: { name: B, email: b@x.example }
                  technical: { name: T, email: t@x.example }
              - { id: bare, tenant: t }
            consumers:
              - { id: a, service: owned, category: internal, models: [m, n] }
              - { id: b, service: bare, category: internal, models: [m] }
              - { id: c, service: owned, category: internal, models: [m], suspended: true }
            """;
        var warn = Compile(policy.Replace("REQUIRE", "warn", StringComparison.Ordinal));
        Assert.Equal(["m"], warn.Consumers["a"].EntitledModels.Select(r => r.Name));
        Assert.Null(warn.Consumers["a"].Refusal);
        Assert.Null(warn.Consumers["b"].Refusal);
        Assert.Equal("deny.consumer_suspended", warn.Consumers["c"].Refusal?.Code);

        var block = Compile(policy.Replace("REQUIRE", "block", StringComparison.Ordinal));
        Assert.Null(block.Consumers["a"].Refusal);
        Assert.Equal("deny.service_ungoverned", block.Consumers["b"].Refusal?.Code);

        var tenantOff = Compile(policy.Replace("REQUIRE", "warn", StringComparison.Ordinal).Replace("  - id: t\n", "  - id: t\n    suspended: true\n", StringComparison.Ordinal));
        Assert.All(tenantOff.Consumers.Values, c => Assert.Equal("deny.tenant_suspended", c.Refusal?.Code));
    }
}
