using System.Text;
using Custos.Controls;
using Custos.Identity;
using Custos.Metering;
using Custos.Policy;

namespace Custos.Benchmarks;

/// <summary>
/// A large policy (10,000 consumers over 100 models, every control switched on) and one prepared request, shared
/// by the decision benchmark and the allocation-budget test.
/// </summary>
public sealed class DecisionFixture
{
    public const int Consumers = 10_000;
    public const int Models = 100;

    public DecisionFixture()
    {
        var random = new Random(42);
        var models = Enumerable.Range(0, Models).Select(i => new ModelConfig
        {
            Name = $"model-{i:000}",
            Provider = "p",
            Aliases = [$"alias-{i:000}"],
            InputPerMillion = 1m + i,
            OutputPerMillion = 2m + i,
        }).ToArray();
        var keys = new string[Consumers];
        var consumers = new ConsumerConfig[Consumers];
        var credentials = new CredentialConfig[Consumers];
        for (var i = 0; i < Consumers; i++)
        {
            keys[i] = ApiKey.Generate(ApiKeyKind.Consumer);
            consumers[i] = new ConsumerConfig
            {
                Id = $"consumer-{i:00000}",
                Service = $"service-{i % 100:000}",
                Category = (ConsumerCategory)(i % 4),
                Entitlements =
                [
                    new EntitlementConfig
                    {
                        Models = [.. Enumerable.Range(0, 10).Select(_ => models[random.Next(Models)].Name).Distinct()],
                        ApprovedBy = "owner@example.com",
                        Ticket = "T-" + i,
                        ValidUntil = DateTimeOffset.UtcNow.AddYears(1),
                    },
                ],
                Limits = new LimitsConfig
                {
                    RequestsPerMinute = 1_000_000,
                    TokensPerMinute = 1_000_000_000,
                    RequestsPerDay = 1_000_000_000,
                    MaxInputTokens = 100_000,
                    MaxOutputTokens = 1024,
                    Budget = new BudgetConfig { Amount = 1_000_000m, Period = BudgetPeriod.Month },
                },
            };
            credentials[i] = new CredentialConfig { Id = $"cred-{i:00000}", Consumer = consumers[i].Id, KeySha256 = KeyHash.Of(keys[i]).ToHex() };
        }

        var document = new PolicyDocument
        {
            Tenants =
            [
                new TenantConfig
                {
                    Id = "acme",
                    TimeZone = "Europe/Berlin",
                    Providers = [new ProviderConfig { Id = "p", Kind = ProviderKind.OpenAI, BaseUrl = new Uri("http://127.0.0.1:1/v1") }],
                    Models = models,
                    Limits = new LimitsConfig { RequestsPerMinute = 1_000_000_000, Budget = new BudgetConfig { Amount = 1_000_000_000m, Mode = BudgetMode.Soft } },
                    PromptRules = [new PromptRuleConfig { Id = "no-secrets", Detector = PromptDetector.Secrets }],
                },
            ],
            Services = [.. Enumerable.Range(0, 100).Select(i => new ServiceConfig
            {
                Id = $"service-{i:000}",
                Tenant = "acme",
                Limits = new LimitsConfig { TokensPerMinute = 1_000_000_000, RequestsPerMonth = 1_000_000_000 },
                PromptRules = [new PromptRuleConfig { Id = "cards", Detector = PromptDetector.PaymentCard, Action = PromptAction.Redact }],
            })],
            Consumers = consumers,
            Credentials = credentials,
        };
        Snapshot = PolicySnapshot.Compile(new PolicyVersion(1, PolicyVersion.HashOf(document), "bench", "bench", DateTimeOffset.UtcNow, document), _ => null);
        var index = Consumers / 2;
        Key = keys[index];
        var consumer = Snapshot.Consumers[consumers[index].Id];
        Model = consumer.EntitledModels[0].Name;
        Body = Encoding.UTF8.GetBytes($$"""{"model":"{{Model}}","max_tokens":256,"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Summarise the quarterly numbers for the board in three bullet points."}]}""");
        ChatRequest.TryParse(Body, out var parsed);
        Parsed = parsed;
        Counters = new InMemoryCounterStore(TimeProvider.System);
    }

    public PolicySnapshot Snapshot { get; }

    public string Key { get; }

    public string Model { get; }

    public byte[] Body { get; }

    public ChatRequest Parsed { get; }

    public InMemoryCounterStore Counters { get; }

    /// <summary>One full decision: key check and look-up, then every control, then settle.</summary>
    public async ValueTask<bool> DecideAsync()
    {
        if (ApiKey.Validate(Key, out _) != ApiKeyFormatError.None || !Snapshot.TryGetCredential(KeyHash.Of(Key), out var credential))
        {
            return false;
        }

        var consumer = credential.Consumer;
        var route = consumer.Service.Tenant.Models[Model];
        var admission = await AdmissionEvaluator.EvaluateAsync(new AdmissionRequest
        {
            Consumer = consumer,
            Route = route,
            Now = DateTimeOffset.UtcNow,
            InputTokens = 40,
            MaxOutputTokens = Parsed.MaxOutputTokens,
            N = 1,
            Prompt = Parsed,
        }, Counters);
        await AdmissionEvaluator.SettleAsync(admission, Counters, 40, 100, route.Cost(40, 100));
        return admission.Decision == Errors.Decision.Allow;
    }
}
