using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text.Json;
using Custos.Policy;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using static Custos.Gateway.Tests.Functional.ControlPlaneFixture;

namespace Custos.Gateway.Tests.Functional;

/// <summary>
/// Workload identities through the real gateway: an automation job or agent calls with a JWT from a configured issuer
/// (keys generated here), mapped by subject to one consumer. Every rejection has its own code and is recorded; admins
/// sign in with the same issuer's tokens.
/// </summary>
public sealed class WorkloadIdentityTests
{
    private const string Issuer = "https://idp.test/";
    private const string Audience = "custos";
    private static readonly ECDsa Key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
    private static readonly ECDsa Forger = ECDsa.Create(ECCurve.NamedCurves.nistP256);

    private static Task<TestGateway> StartAsync() => ControlPlaneFixture.StartAsync(more: p => p with
    {
        IdentityProviders = [new IdentityProviderConfig { Id = "idp", Issuer = Issuer, Audience = Audience, Keys = [Key.ExportSubjectPublicKeyInfoPem()] }],
        Credentials = [.. p.Credentials, new CredentialConfig { Id = "wid-digest", Consumer = "agent", Issuer = "idp", Subject = "system:job:digest" }],
        Admins = [.. p.Admins, new AdminConfig { Id = "oidc-auditor", Role = AdminRole.SecurityAuditor, Issuer = "idp", Subject = "auditor@acme.test" }],
    });

    private static string Token(string subject = "system:job:digest", string issuer = Issuer, string audience = Audience, ECDsa? key = null,
        TimeSpan? expiresIn = null)
    {
        var now = DateTime.UtcNow;
        var expires = now + (expiresIn ?? TimeSpan.FromMinutes(5));
        return new JsonWebTokenHandler { SetDefaultTimesOnTokenCreation = false }.CreateToken(new SecurityTokenDescriptor
        {
            Issuer = issuer,
            Audience = audience,
            IssuedAt = expires.AddMinutes(-10),
            NotBefore = expires.AddMinutes(-10),
            Expires = expires,
            Claims = new Dictionary<string, object> { ["sub"] = subject },
            SigningCredentials = new SigningCredentials(new ECDsaSecurityKey(key ?? Key) { KeyId = "k1" }, SecurityAlgorithms.EcdsaSha256),
        });
    }

    /// <summary><paramref name="token"/>'s claims under an <c>alg: none</c> header, with no signature.</summary>
    private static string Unsigned(string token)
        => Base64UrlEncoder.Encode("""{"alg":"none","typ":"JWT"}""") + "." + token.Split('.')[1] + ".";

    [Fact]
    public async Task AValidToken_CallsAsItsConsumer_AndEachRejectionHasItsOwnCode()
    {
        await using var g = await StartAsync();

        var ok = await ChatAsync(g, Token(), "gpt-4o");
        Assert.Equal(HttpStatusCode.OK, ok.Status);
        var entry = await g.EntryAsync(ok.RequestId);
        Assert.Equal("wid-digest", entry.GetProperty("credential_id").GetString());
        Assert.Equal("agent", entry.GetProperty("consumer").GetString());
        Assert.Equal("agents", entry.GetProperty("service").GetString());

        (string Token, string Code)[] rejected =
        [
            (Token(issuer: "https://evil.test/"), "deny.token_issuer"),
            (Token(audience: "someone-else"), "deny.token_audience"),
            (Token(key: Forger), "deny.token_signature"),
            (Token(expiresIn: TimeSpan.FromMinutes(-5)), "deny.token_expired"),
            (Token(subject: "system:job:unknown"), "deny.token_subject_unknown"),
            ("eyJhbGciOiJFUzI1NiJ9.bm90LWpzb24.c2ln", "deny.token_malformed"),
            (Unsigned(Token()), "deny.token_signature"), // alg none, no signature: a token refused for its signature, not a malformed key
        ];
        foreach (var (token, code) in rejected)
        {
            var refused = await ChatAsync(g, token, "gpt-4o");
            Assert.Equal(HttpStatusCode.Unauthorized, refused.Status);
            Assert.Equal(code, refused.Code);
            var recorded = await g.EntryAsync(refused.RequestId);
            Assert.Equal(code, recorded.GetProperty("reasons")[0].GetString());
            Assert.DoesNotContain(token, recorded.GetRawText(), StringComparison.Ordinal);
        }

        // The workload credential has the same lifecycle as a key: suspended, it is refused on the next request.
        await JsonAsync(await AdminAsync(g, "agents-owner", HttpMethod.Post, "/admin/v1/credentials/wid-digest/suspend", new { reason = "job misbehaving" }));
        Assert.Equal("deny.credential_suspended", (await ChatAsync(g, Token(), "gpt-4o")).Code);
        using (var request = new HttpRequestMessage(HttpMethod.Post, "/v1/chat/completions")
        {
            Content = new StringContent("""{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}""", System.Text.Encoding.UTF8, "application/json"),
        })
        {
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", Token());
            using var response = await g.Client.SendAsync(request);
            var message = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.GetProperty("error").GetProperty("message").GetString();
            Assert.StartsWith("The workload identity is suspended", message, StringComparison.Ordinal); // not "The API key"
        }

        var listed = (await JsonAsync(await AdminAsync(g, "agents-owner", HttpMethod.Get, "/admin/v1/credentials?consumer=agent")))
            .EnumerateArray().Single(c => c.GetProperty("id").GetString() == "wid-digest");
        Assert.Equal("workload_identity", listed.GetProperty("kind").GetString());
        Assert.Equal("suspended", listed.GetProperty("status").GetString());
    }

    [Fact]
    public async Task Admins_SignInWithTheIssuersTokens()
    {
        await using var g = await StartAsync();
        using var http = new HttpClient { BaseAddress = g.Gateway.AdminUri };

        async Task<HttpResponseMessage> WhoAmI(string token)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "/admin/v1/whoami");
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            return await http.SendAsync(request);
        }

        using var ok = await WhoAmI(Token(subject: "auditor@acme.test"));
        var me = JsonDocument.Parse(await ok.Content.ReadAsStringAsync()).RootElement;
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        Assert.Equal("oidc-auditor", me.GetProperty("id").GetString());
        Assert.Equal("security_auditor", me.GetProperty("role").GetString());
        Assert.Equal("oidc", me.GetProperty("signed_in_with").GetString());

        using var wrongAudience = await WhoAmI(Token(subject: "auditor@acme.test", audience: "other"));
        Assert.Equal(HttpStatusCode.Unauthorized, wrongAudience.StatusCode);
        Assert.Equal("deny.token_audience", JsonDocument.Parse(await wrongAudience.Content.ReadAsStringAsync()).RootElement.GetProperty("code").GetString());

        using var unsigned = await WhoAmI(Unsigned(Token(subject: "auditor@acme.test")));
        Assert.Equal(HttpStatusCode.Unauthorized, unsigned.StatusCode);
        Assert.Equal("deny.token_signature", JsonDocument.Parse(await unsigned.Content.ReadAsStringAsync()).RootElement.GetProperty("code").GetString());

        using var notAnAdmin = await WhoAmI(Token(subject: "system:job:digest"));
        Assert.Equal(HttpStatusCode.Unauthorized, notAnAdmin.StatusCode);

        // Signed in with OIDC, the auditor is still read-only: a change is refused and audited under its id.
        using var change = new HttpRequestMessage(HttpMethod.Post, "/admin/v1/credentials/cred-web/revoke") { Content = JsonContent.Create(new { reason = "x" }) };
        change.Headers.Authorization = new AuthenticationHeaderValue("Bearer", Token(subject: "auditor@acme.test"));
        using var refused = await http.SendAsync(change);
        Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
        Assert.Contains(await AdminEntriesAsync(g), e => e.GetProperty("actor").GetString() == "oidc-auditor"
            && e.GetProperty("action").GetString() == "credential.revoked_denied");
    }
}
