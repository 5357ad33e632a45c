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
            Gateway = new GatewaySettings { MaxRequestBodyBytes = 2048, UpstreamTimeout = TimeSpan.FromSeconds(7), PromptRegexTimeout = TimeSpan.FromMilliseconds(30), MaxInFlightRequests = 64 },
            Defaults = new CategoryDefaultsSet { Agent = new CategoryDefaults { Models = ["gpt-4o", "claude-sonnet"], Limits = new LimitsConfig { RequestsPerMinute = 5, Budget = new BudgetConfig { Amount = 12.5m, Mode = BudgetMode.Soft } } } },
            Tenants = [original.Tenants[0] with { PromptRules = [new PromptRuleConfig { Id = "cards", Detector = PromptDetector.PaymentCard, Action = PromptAction.Redact }, new PromptRuleConfig { Id = "x", Pattern = "(?i)falcon" }] }],
            Consumers = [.. original.Consumers.Select(c => c with { Entitlements = [new EntitlementConfig { Models = ["gpt-4o"], ApprovedBy = "dana", Ticket = "T-1", ValidUntil = new DateTimeOffset(2027, 1, 1, 0, 0, 0, TimeSpan.Zero) }], Limits = new LimitsConfig { MaxOutputTokens = 100, OutputCeiling = OutputCeilingMode.Deny } })],
        };

        var yaml = PolicyYamlWriter.Write(withEverything);
        var back = PolicyYaml.Read(yaml);

        Assert.True(back.IsValid, yaml + "\n" + string.Join("\n", back.Diagnostics.Select(d => d.Format("written"))));
        Assert.Equal(PolicyVersion.CanonicalJson(withEverything), PolicyVersion.CanonicalJson(back.Document!));
    }
}
