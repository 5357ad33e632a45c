using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Custos.Identity;
using Custos.Ledger;
using Custos.Policy;

namespace Custos.Gateway.Tests.Functional;

/// <summary>
/// The control-plane test set-up: owners on every service (the policy owner acting through the admin <c>support-lead</c>,
/// the technical owner reached by webhook), and one admin of each role, some scoped to one service or tenant.
/// </summary>
internal static class ControlPlaneFixture
{
    public const string TechnicalWebhook = "http://hooks.test/support-oncall";

    /// <summary>Admin ids, each with its role and scope.</summary>
    public static readonly string[] Admins = ["root", "support-owner", "support-lead", "agents-owner", "prompts", "auditor", "finance", "globex-owner"];

    public static Task<TestGateway> StartAsync(RecordingHandler? hooks = null, Func<PolicyDocument, PolicyDocument>? more = null)
        => TestGateway.StartAsync((test, policy) =>
        {
            var document = Customize(test, policy);
            return more is null ? document : more(document);
        }, notificationHandler: hooks);

    public static PolicyDocument Customize(TestGateway test, PolicyDocument policy)
    {
        static OwnerConfig Owner(string name, string email, string? admin = null, string? webhook = null)
            => new() { Name = name, Email = email, Admin = admin, Webhook = webhook is null ? null : new Uri(webhook) };

        AdminConfig Admin(string id, AdminRole role, string[]? tenants = null, string[]? services = null)
            => new() { Id = id, Role = role, KeySha256 = test.IssueKey(id, ApiKeyKind.Admin), Tenants = tenants ?? [], Services = services ?? [] };

        return policy with
        {
            Services =
            [
                .. policy.Services.Select(s => s with
                {
                    Owners = new ServiceOwners
                    {
                        Policy = Owner($"{s.Id} lead", $"{s.Id}-lead@example.test", s.Id == "support" ? "support-lead" : null),
                        Billing = Owner($"{s.Id} finance", $"{s.Id}-billing@example.test"),
                        Technical = Owner($"{s.Id} on-call", $"{s.Id}-oncall@example.test", webhook: s.Id == "support" ? TechnicalWebhook : null),
                        AgentOperator = s.Id == "agents" ? Owner("agent ops", "agent-ops@example.test") : null,
                        BusinessSponsor = s.Id == "agents" ? Owner("sponsor", "sponsor@example.test") : null,
                    },
                    Approvers = s.Id == "support" ? ["support-owner"] : null,
                }),
            ],
            Admins =
            [
                .. policy.Admins,
                Admin("support-owner", AdminRole.ServiceOwner, services: ["support"]),
                Admin("support-lead", AdminRole.ServiceOwner, services: ["support"]),
                Admin("agents-owner", AdminRole.ServiceOwner, services: ["agents"]),
                Admin("prompts", AdminRole.PromptAdmin, services: ["support"]),
                Admin("auditor", AdminRole.SecurityAuditor),
                Admin("finance", AdminRole.Finance, tenants: ["acme"]),
                Admin("globex-owner", AdminRole.ServiceOwner, tenants: ["globex"]),
            ],
        };
    }

    /// <summary>The admin key of <paramref name="admin"/> (<c>root</c> is the test gateway's <c>admin</c> key).</summary>
    public static string AdminKey(TestGateway test, string admin) => test.KeyOf(admin == "root" ? "admin" : admin);

    public static async Task<HttpResponseMessage> AdminAsync(TestGateway test, string admin, HttpMethod method, string path, object? body = null)
    {
        using var http = new HttpClient { BaseAddress = test.Gateway.AdminUri, Timeout = TimeSpan.FromSeconds(30) };
        using var request = new HttpRequestMessage(method, path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", AdminKey(test, admin));
        if (body is not null)
        {
            request.Content = JsonContent.Create(body);
        }

        var response = await http.SendAsync(request);
        await response.Content.LoadIntoBufferAsync();
        return response;
    }

    public static async Task<JsonElement> JsonAsync(HttpResponseMessage response)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"{(int)response.StatusCode}: {text}");
        return JsonDocument.Parse(text).RootElement.Clone();
    }

    /// <summary>One chat completion with <paramref name="key"/>; the status and, when refused, the error code.</summary>
    public static async Task<(HttpStatusCode Status, string? Code, string RequestId)> ChatAsync(TestGateway test, string key, string model = "gpt-4o-mini")
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent($$"""{"model":"{{model}}","messages":[{"role":"user","content":"hi"}],"max_tokens":16}""", Encoding.UTF8, "application/json"),
        };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        using var response = await test.Client.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        string? code = null;
        if (!response.IsSuccessStatusCode)
        {
            code = JsonDocument.Parse(text).RootElement.GetProperty("error").GetProperty("code").GetString();
        }

        return (response.StatusCode, code, TestGateway.RequestIdOf(response));
    }

    /// <summary>The admin entries of the ledger, oldest first.</summary>
    public static Task<List<JsonElement>> AdminEntriesAsync(TestGateway test) => test.LedgerAsync(new LedgerQuery { Kind = "admin", Limit = 100_000 });
}

/// <summary>Stands in for owners' webhook receivers: answers 200 (or fails while told to) and keeps what it received.</summary>
internal sealed class RecordingHandler : HttpMessageHandler
{
    private readonly ConcurrentQueue<(Uri Uri, JsonElement Body)> _received = new();

    public bool Failing { get; set; }

    public int Attempts;

    public IReadOnlyCollection<(Uri Uri, JsonElement Body)> Received => _received;

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref Attempts);
        if (Failing)
        {
            return new HttpResponseMessage(HttpStatusCode.ServiceUnavailable);
        }

        var body = await request.Content!.ReadAsStringAsync(cancellationToken);
        _received.Enqueue((request.RequestUri!, JsonDocument.Parse(body).RootElement.Clone()));
        return new HttpResponseMessage(HttpStatusCode.OK);
    }

    public async Task<JsonElement> WaitForAsync(Func<JsonElement, bool> match, TimeSpan? timeout = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(15));
        while (DateTime.UtcNow < deadline)
        {
            foreach (var (_, body) in _received)
            {
                if (match(body))
                {
                    return body;
                }
            }

            await Task.Delay(50);
        }

        throw new Xunit.Sdk.XunitException("no matching notification was delivered");
    }
}
