using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Custos.Errors;
using Custos.Gateway.Identity;
using Custos.Gateway.Tests.Functional;
using Custos.Policy;
using Custos.Testing;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace Custos.Gateway.Tests;

public sealed class JwtAuthenticatorTests : IDisposable
{
    private const string Issuer = "https://token.actions.example.com";
    private const string Audience = "custos";
    private const string Subject = "repo:acme/build:ref:refs/heads/main";

    private static readonly RSA Rsa = RSA.Create(2048);
    private static readonly RSA OtherRsa = RSA.Create(2048);
    private static readonly ECDsa Ec = ECDsa.Create(ECCurve.NamedCurves.nistP256);
    private static readonly ECDsa RotatedEc = ECDsa.Create(ECCurve.NamedCurves.nistP256);
    private static readonly ECDsa UnknownEc = ECDsa.Create(ECCurve.NamedCurves.nistP256);

    private readonly FakeTimeProvider _time = new(new DateTimeOffset(2030, 1, 15, 9, 0, 0, TimeSpan.Zero));
    private readonly CapturingLoggerProvider _logs = new();
    private readonly ILoggerFactory _loggerFactory;
    private readonly HttpClient _http = new();
    private readonly JwtAuthenticator _authenticator;

    public JwtAuthenticatorTests()
    {
        _loggerFactory = LoggerFactory.Create(b => b.AddProvider(_logs).SetMinimumLevel(LogLevel.Debug));
        _authenticator = new JwtAuthenticator(_http, _time, _loggerFactory.CreateLogger<JwtAuthenticator>());
    }

    public void Dispose()
    {
        _http.Dispose();
        _loggerFactory.Dispose();
    }

    // ---- valid tokens ----

    [Fact]
    public async Task ValidRs256_WithStaticPemKey_NamesProviderAndSubject()
    {
        var provider = PemProvider(Rsa.ExportSubjectPublicKeyInfoPem());

        var outcome = await ValidateAsync(Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256)), provider);

        Assert.Null(outcome.Failure);
        Assert.Same(provider, outcome.Provider);
        Assert.Equal(Subject, outcome.Subject);
    }

    [Theory]
    [InlineData(SecurityAlgorithms.RsaSha384)]
    [InlineData(SecurityAlgorithms.RsaSha512)]
    [InlineData(SecurityAlgorithms.RsaSsaPssSha256)]
    public async Task OtherRsaAlgorithms_WithStaticPemKey_AreAccepted(string algorithm)
    {
        var outcome = await ValidateAsync(Token(RsaCredentials(Rsa, algorithm)), PemProvider(Rsa.ExportSubjectPublicKeyInfoPem()));

        Assert.Null(outcome.Failure);
        Assert.Equal(Subject, outcome.Subject);
    }

    [Fact]
    public async Task ValidEs256_WithStaticEcPemKey_IsAccepted()
    {
        var outcome = await ValidateAsync(Token(EcCredentials(Ec, "ec-1")), PemProvider(Ec.ExportSubjectPublicKeyInfoPem()));

        Assert.Null(outcome.Failure);
        Assert.Equal(Subject, outcome.Subject);
    }

    [Fact]
    public async Task ValidEs256_WithStaticJwk_IsAccepted()
    {
        var outcome = await ValidateAsync(Token(EcCredentials(Ec, "ec-1")), PemProvider(EcJwk(Ec, "ec-1")));

        Assert.Null(outcome.Failure);
        Assert.Equal(Subject, outcome.Subject);
    }

    [Fact]
    public async Task ValidRs256_WithStaticRsaJwk_WithoutKid_IsAccepted()
    {
        var p = Rsa.ExportParameters(false);
        var jwk = JsonSerializer.Serialize(new Dictionary<string, string>
        {
            ["kty"] = "RSA",
            ["n"] = Base64UrlEncoder.Encode(p.Modulus),
            ["e"] = Base64UrlEncoder.Encode(p.Exponent),
        });

        var outcome = await ValidateAsync(Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256, kid: "whatever")), PemProvider(jwk));

        Assert.Null(outcome.Failure);
    }

    [Fact]
    public async Task AudienceArray_ContainingOurs_IsAccepted()
    {
        var token = Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256), d =>
        {
            d.Audience = null;
            d.Claims!["aud"] = new[] { "someone-else", Audience };
        });

        var outcome = await ValidateAsync(token, PemProvider(Rsa.ExportSubjectPublicKeyInfoPem()));

        Assert.Null(outcome.Failure);
    }

    [Fact]
    public async Task CustomSubjectClaim_IsTheSubject()
    {
        var provider = PemProvider(Rsa.ExportSubjectPublicKeyInfoPem()) with { SubjectClaim = "job_workflow_ref" };
        var token = Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256), d => d.Claims!["job_workflow_ref"] = "acme/build/.github/workflows/ci.yml@main");

        var outcome = await ValidateAsync(token, provider);

        Assert.Null(outcome.Failure);
        Assert.Equal("acme/build/.github/workflows/ci.yml@main", outcome.Subject);
    }

    [Fact]
    public async Task ValidToken_WithoutTheSubjectClaim_IsMalformed()
    {
        var provider = PemProvider(Rsa.ExportSubjectPublicKeyInfoPem()) with { SubjectClaim = "job_workflow_ref" };

        var outcome = await ValidateAsync(Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256)), provider);

        Assert.Equal(Reasons.TokenMalformed, outcome.Failure);
        Assert.Null(outcome.Subject);
    }

    [Fact]
    public async Task ValidToken_WithoutSub_IsMalformed()
    {
        var token = Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256), d => d.Claims!.Remove("sub"));

        var outcome = await ValidateAsync(token, PemProvider(Rsa.ExportSubjectPublicKeyInfoPem()));

        Assert.Equal(Reasons.TokenMalformed, outcome.Failure);
    }

    [Fact]
    public async Task ProvidersSharingAnIssuer_TheOneWithTheRightAudienceAccepts()
    {
        var pem = Rsa.ExportSubjectPublicKeyInfoPem();
        var other = PemProvider(pem) with { Id = "ci-other", Audience = "another-gateway" };
        var ours = PemProvider(pem);

        var outcome = await _authenticator.ValidateAsync(Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256)), [other, ours], CancellationToken.None);

        Assert.Null(outcome.Failure);
        Assert.Same(ours, outcome.Provider);
    }

    // ---- refusals, one reason each ----

    [Fact]
    public async Task UnknownIssuer_IsRefusedAsIssuer_WithoutProvider()
    {
        var token = Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256), d => d.Issuer = "https://evil.example.com");

        var outcome = await ValidateAsync(token, PemProvider(Rsa.ExportSubjectPublicKeyInfoPem()));

        Assert.Equal(Reasons.TokenIssuer, outcome.Failure);
        Assert.Null(outcome.Provider);
        Assert.Null(outcome.Subject);
    }

    [Fact]
    public async Task NoProviders_IsRefusedAsIssuer()
    {
        var outcome = await _authenticator.ValidateAsync(Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256)), [], CancellationToken.None);

        Assert.Equal(Reasons.TokenIssuer, outcome.Failure);
    }

    [Fact]
    public async Task WrongAudience_IsRefusedAsAudience()
    {
        var provider = PemProvider(Rsa.ExportSubjectPublicKeyInfoPem());
        var token = Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256), d => d.Audience = "another-gateway");

        var outcome = await ValidateAsync(token, provider);

        Assert.Equal(Reasons.TokenAudience, outcome.Failure);
        Assert.Same(provider, outcome.Provider);
        Assert.Null(outcome.Subject);
    }

    [Fact]
    public async Task NoAudience_IsRefusedAsAudience()
    {
        var token = Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256), d => d.Audience = null);

        var outcome = await ValidateAsync(token, PemProvider(Rsa.ExportSubjectPublicKeyInfoPem()));

        Assert.Equal(Reasons.TokenAudience, outcome.Failure);
    }

    [Fact]
    public async Task AudienceWithTrailingSlash_IsNotOurs()
    {
        var token = Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256), d => d.Audience = Audience + "/");

        var outcome = await ValidateAsync(token, PemProvider(Rsa.ExportSubjectPublicKeyInfoPem()));

        Assert.Equal(Reasons.TokenAudience, outcome.Failure);
    }

    [Fact]
    public async Task SignatureByAnotherKey_IsRefusedAsSignature()
    {
        var outcome = await ValidateAsync(Token(RsaCredentials(OtherRsa, SecurityAlgorithms.RsaSha256)), PemProvider(Rsa.ExportSubjectPublicKeyInfoPem()));

        Assert.Equal(Reasons.TokenSignature, outcome.Failure);
        Assert.Null(outcome.Subject);
    }

    [Fact]
    public async Task TamperedPayload_IsRefusedAsSignature()
    {
        var token = Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256));
        var parts = token.Split('.');
        var payload = Base64UrlEncoder.Decode(parts[1]).Replace(Subject, "repo:acme/admin:ref:refs/heads/main", StringComparison.Ordinal);
        var tampered = $"{parts[0]}.{Base64UrlEncoder.Encode(payload)}.{parts[2]}";

        var outcome = await ValidateAsync(tampered, PemProvider(Rsa.ExportSubjectPublicKeyInfoPem()));

        Assert.Equal(Reasons.TokenSignature, outcome.Failure);
    }

    [Theory]
    [InlineData("")]
    [InlineData("c2lnbmF0dXJl")]
    public async Task AlgNone_IsRefusedAsSignature(string signature)
    {
        var header = Base64UrlEncoder.Encode("""{"alg":"none","typ":"JWT"}""");
        var token = $"{header}.{Base64UrlEncoder.Encode(ValidPayloadJson())}.{signature}";

        var outcome = await ValidateAsync(token, PemProvider(Rsa.ExportSubjectPublicKeyInfoPem()));

        Assert.Equal(Reasons.TokenSignature, outcome.Failure);
    }

    [Fact]
    public async Task AlgNone_FromTheLibrary_IsRefusedAsSignature()
    {
        var unsigned = Token(credentials: null);

        var outcome = await ValidateAsync(unsigned, PemProvider(Rsa.ExportSubjectPublicKeyInfoPem()));

        Assert.Equal(Reasons.TokenSignature, outcome.Failure);
    }

    [Fact]
    public async Task Hs256_WithTheRsaPublicKeyAsSecret_IsRefusedAsSignature()
    {
        // The classic algorithm confusion: HMAC keyed with the (public) verification key.
        var pem = Rsa.ExportSubjectPublicKeyInfoPem();
        var credentials = new SigningCredentials(new SymmetricSecurityKey(Encoding.UTF8.GetBytes(pem)), SecurityAlgorithms.HmacSha256);

        var outcome = await ValidateAsync(Token(credentials), PemProvider(pem));

        Assert.Equal(Reasons.TokenSignature, outcome.Failure);
    }

    [Fact]
    public async Task Hs256_EvenWithASymmetricJwkConfigured_IsRefusedAsSignature()
    {
        var secret = RandomNumberGenerator.GetBytes(32);
        var jwk = JsonSerializer.Serialize(new Dictionary<string, string> { ["kty"] = "oct", ["k"] = Base64UrlEncoder.Encode(secret), ["kid"] = "h1" });
        var credentials = new SigningCredentials(new SymmetricSecurityKey(secret) { KeyId = "h1" }, SecurityAlgorithms.HmacSha256);

        var outcome = await ValidateAsync(Token(credentials), PemProvider(jwk));

        Assert.Equal(Reasons.TokenSignature, outcome.Failure);
    }

    [Fact]
    public async Task Expired_IsRefusedAsExpired()
    {
        var now = _time.GetUtcNow().UtcDateTime;
        var token = Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256), d =>
        {
            d.IssuedAt = d.NotBefore = now.AddMinutes(-20);
            d.Expires = now.AddMinutes(-1);
        });

        var outcome = await ValidateAsync(token, PemProvider(Rsa.ExportSubjectPublicKeyInfoPem()));

        Assert.Equal(Reasons.TokenExpired, outcome.Failure);
    }

    [Fact]
    public async Task ExpiredWithinTheClockSkew_IsAccepted()
    {
        var now = _time.GetUtcNow().UtcDateTime;
        var token = Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256), d =>
        {
            d.IssuedAt = d.NotBefore = now.AddMinutes(-20);
            d.Expires = now.AddSeconds(-20);
        });

        var outcome = await ValidateAsync(token, PemProvider(Rsa.ExportSubjectPublicKeyInfoPem()));

        Assert.Null(outcome.Failure);
    }

    [Fact]
    public async Task ExpiryFollowsTheInjectedClock()
    {
        var provider = PemProvider(Rsa.ExportSubjectPublicKeyInfoPem());
        var token = Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256)); // valid for 10 minutes of fake time
        Assert.Null((await ValidateAsync(token, provider)).Failure);

        _time.Advance(TimeSpan.FromMinutes(11));

        Assert.Equal(Reasons.TokenExpired, (await ValidateAsync(token, provider)).Failure);
    }

    [Fact]
    public async Task NotYetValid_IsRefusedAsExpired()
    {
        var now = _time.GetUtcNow().UtcDateTime;
        var token = Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256), d =>
        {
            d.NotBefore = now.AddMinutes(5);
            d.Expires = now.AddMinutes(15);
        });

        var outcome = await ValidateAsync(token, PemProvider(Rsa.ExportSubjectPublicKeyInfoPem()));

        Assert.Equal(Reasons.TokenExpired, outcome.Failure);
    }

    [Fact]
    public async Task WithoutExp_IsRefusedAsExpired()
    {
        var token = Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256), d => d.Expires = null);
        Assert.DoesNotContain("\"exp\"", Base64UrlEncoder.Decode(token.Split('.')[1]), StringComparison.Ordinal);

        var outcome = await ValidateAsync(token, PemProvider(Rsa.ExportSubjectPublicKeyInfoPem()));

        Assert.Equal(Reasons.TokenExpired, outcome.Failure);
    }

    [Theory]
    [InlineData("")]
    [InlineData("garbage")]
    [InlineData("not a token at all")]
    [InlineData("csk_0123456789abcdefghijklmnopqrstuvwxyzAB")]
    [InlineData("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0")]
    [InlineData("a.b.c.d")]
    [InlineData("..")]
    [InlineData(".eyJpc3MiOiJ4In0.c2ln")]
    [InlineData("eyJhbGciOiJSUzI1NiJ9..c2ln")]
    [InlineData("eyJhbGci!!.eyJpc3MiOiJ4In0.c2ln")]
    [InlineData("bm90IGpzb24.eyJpc3MiOiJ4In0.c2ln")] // header "not json"
    [InlineData("eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln")] // payload "not json"
    [InlineData("eyJhbGciOiJSUzI1NiJ9.WzEsMiwzXQ.c2ln")] // payload [1,2,3]
    [InlineData("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln")] // no iss
    [InlineData("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOjQyfQ.c2ln")] // iss a number
    [InlineData("eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiIifQ.c2ln")] // iss empty
    public async Task NotAWellFormedJwt_IsMalformed(string token)
    {
        var outcome = await ValidateAsync(token, PemProvider(Rsa.ExportSubjectPublicKeyInfoPem()) with { Issuer = "x" });

        Assert.Equal(Reasons.TokenMalformed, outcome.Failure);
        Assert.Null(outcome.Provider);
    }

    [Fact]
    public async Task TwoSegmentsOfARealToken_AreMalformed()
    {
        var token = Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256));
        var twoSegments = token[..token.LastIndexOf('.')];

        var outcome = await ValidateAsync(twoSegments, PemProvider(Rsa.ExportSubjectPublicKeyInfoPem()));

        Assert.Equal(Reasons.TokenMalformed, outcome.Failure);
    }

    // ---- check order ----

    [Fact]
    public async Task ForgedTokenWithWrongAudience_LearnsOnlyThatItsSignatureFails()
    {
        var token = Token(RsaCredentials(OtherRsa, SecurityAlgorithms.RsaSha256), d => d.Audience = "another-gateway");

        var outcome = await ValidateAsync(token, PemProvider(Rsa.ExportSubjectPublicKeyInfoPem()));

        Assert.Equal(Reasons.TokenSignature, outcome.Failure);
    }

    [Fact]
    public async Task ForgedExpiredToken_LearnsOnlyThatItsSignatureFails()
    {
        var now = _time.GetUtcNow().UtcDateTime;
        var token = Token(RsaCredentials(OtherRsa, SecurityAlgorithms.RsaSha256), d =>
        {
            d.IssuedAt = d.NotBefore = now.AddHours(-2);
            d.Expires = now.AddHours(-1);
        });

        var outcome = await ValidateAsync(token, PemProvider(Rsa.ExportSubjectPublicKeyInfoPem()));

        Assert.Equal(Reasons.TokenSignature, outcome.Failure);
    }

    [Fact]
    public async Task ExpiredTokenWithWrongAudience_IsRefusedForItsAudience()
    {
        var now = _time.GetUtcNow().UtcDateTime;
        var token = Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256), d =>
        {
            d.Audience = "another-gateway";
            d.IssuedAt = d.NotBefore = now.AddHours(-2);
            d.Expires = now.AddHours(-1);
        });

        var outcome = await ValidateAsync(token, PemProvider(Rsa.ExportSubjectPublicKeyInfoPem()));

        Assert.Equal(Reasons.TokenAudience, outcome.Failure);
    }

    [Fact]
    public async Task UnknownIssuerWithBadSignature_IsRefusedForItsIssuer()
    {
        var token = Token(RsaCredentials(OtherRsa, SecurityAlgorithms.RsaSha256), d => d.Issuer = "https://evil.example.com");

        var outcome = await ValidateAsync(token, PemProvider(Rsa.ExportSubjectPublicKeyInfoPem()));

        Assert.Equal(Reasons.TokenIssuer, outcome.Failure);
    }

    // ---- static keys that cannot be used ----

    [Fact]
    public async Task UnusableStaticKeys_AreIgnoredAndLogged_NotThrown()
    {
        var provider = PemProvider(
            "not a key",
            Rsa.ExportPkcs8PrivateKeyPem(), // a private key in the policy: refused
            """{"kty":"RSA"}""",
            Rsa.ExportSubjectPublicKeyInfoPem());

        var outcome = await ValidateAsync(Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256)), provider);

        Assert.Null(outcome.Failure); // the one good key still works
        Assert.Equal(3, _logs.Lines.Count(l => l.Contains("[202]", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task StaticKeys_AreParsedOncePerProviderConfig()
    {
        var provider = PemProvider("not a key", Rsa.ExportSubjectPublicKeyInfoPem());
        var token = Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256));

        for (var i = 0; i < 3; i++)
        {
            Assert.Null((await ValidateAsync(token, provider)).Failure);
        }

        Assert.Single(_logs.Lines, l => l.Contains("[202]", StringComparison.Ordinal));
    }

    [Fact]
    public async Task OnlyUnusableStaticKeys_IsRefusedAsSignature()
    {
        var outcome = await ValidateAsync(Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256)), PemProvider("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"));

        Assert.Equal(Reasons.TokenSignature, outcome.Failure);
    }

    // ---- JWKS over HTTP ----

    [Fact]
    public async Task ValidEs256_WithJwks_IsFetchedOnceAndCached()
    {
        await using var jwks = await JwksServer.StartAsync(EcJwk(Ec, "ec-1"));
        var provider = JwksProvider(jwks.Url);
        var token = Token(EcCredentials(Ec, "ec-1"));

        var first = await ValidateAsync(token, provider);
        var second = await ValidateAsync(token, provider);

        Assert.Null(first.Failure);
        Assert.Equal(Subject, first.Subject);
        Assert.Null(second.Failure);
        Assert.Equal(1, jwks.Fetches);
    }

    [Fact]
    public async Task Jwks_IsCachedPerUrl_AcrossProviderConfigs()
    {
        await using var jwks = await JwksServer.StartAsync(EcJwk(Ec, "ec-1"));
        var token = Token(EcCredentials(Ec, "ec-1"));

        Assert.Null((await ValidateAsync(token, JwksProvider(jwks.Url))).Failure);
        Assert.Null((await ValidateAsync(token, JwksProvider(jwks.Url) with { Id = "a-new-policy-version" })).Failure);

        Assert.Equal(1, jwks.Fetches);
    }

    [Fact]
    public async Task Jwks_IsFetchedAgainAfterTenMinutes()
    {
        await using var jwks = await JwksServer.StartAsync(EcJwk(Ec, "ec-1"));
        var provider = JwksProvider(jwks.Url);
        Assert.Null((await ValidateAsync(Token(EcCredentials(Ec, "ec-1")), provider)).Failure);

        _time.Advance(TimeSpan.FromMinutes(11));
        Assert.Null((await ValidateAsync(Token(EcCredentials(Ec, "ec-1")), provider)).Failure); // the old set serves meanwhile

        await Eventually.TrueAsync(() => jwks.Fetches == 2, "the key set fetched a second time");
        Assert.Null((await ValidateAsync(Token(EcCredentials(Ec, "ec-1")), provider)).Failure);
        Assert.Equal(2, jwks.Fetches);
    }

    [Fact]
    public async Task KeyRotation_NewKid_RefetchesOnceAndSucceeds()
    {
        await using var jwks = await JwksServer.StartAsync(EcJwk(Ec, "ec-1"));
        var provider = JwksProvider(jwks.Url);
        Assert.Null((await ValidateAsync(Token(EcCredentials(Ec, "ec-1")), provider)).Failure);

        _time.Advance(TimeSpan.FromSeconds(31));
        jwks.Keys = [EcJwk(Ec, "ec-1"), EcJwk(RotatedEc, "ec-2")];
        var rotated = await ValidateAsync(Token(EcCredentials(RotatedEc, "ec-2")), provider);

        Assert.Null(rotated.Failure);
        Assert.Equal(2, jwks.Fetches);

        // Both keys now cached: no more fetches.
        Assert.Null((await ValidateAsync(Token(EcCredentials(Ec, "ec-1")), provider)).Failure);
        Assert.Null((await ValidateAsync(Token(EcCredentials(RotatedEc, "ec-2")), provider)).Failure);
        Assert.Equal(2, jwks.Fetches);
    }

    [Fact]
    public async Task UnknownKid_RefetchesAtMostOncePerThirtySeconds()
    {
        await using var jwks = await JwksServer.StartAsync(EcJwk(Ec, "ec-1"));
        var provider = JwksProvider(jwks.Url);
        Assert.Null((await ValidateAsync(Token(EcCredentials(Ec, "ec-1")), provider)).Failure);

        // Within 30 s of the fetch: an unknown kid does not fetch again.
        var tooSoon = await ValidateAsync(Token(EcCredentials(UnknownEc, "ec-x")), provider);
        Assert.Equal(Reasons.TokenSignature, tooSoon.Failure);
        Assert.Equal(1, jwks.Fetches);

        _time.Advance(TimeSpan.FromSeconds(31));
        for (var i = 0; i < 5; i++)
        {
            Assert.Equal(Reasons.TokenSignature, (await ValidateAsync(Token(EcCredentials(UnknownEc, "ec-x")), provider)).Failure);
        }

        Assert.Equal(2, jwks.Fetches); // one refetch, not five
    }

    [Fact]
    public async Task ConcurrentUnknownKids_ShareOneFetch()
    {
        await using var jwks = await JwksServer.StartAsync(EcJwk(RotatedEc, "ec-2"));
        var provider = JwksProvider(jwks.Url);
        var token = Token(EcCredentials(RotatedEc, "ec-2"));

        var outcomes = await Task.WhenAll(Enumerable.Range(0, 20).Select(_ => ValidateAsync(token, provider).AsTask()));

        Assert.All(outcomes, o => Assert.Null(o.Failure));
        Assert.Equal(1, jwks.Fetches);
    }

    [Fact]
    public async Task JwksServerDown_IsRefusedAsSignature_LoggedNotThrown()
    {
        var provider = JwksProvider(new Uri($"http://127.0.0.1:{FreePort()}/jwks"));

        var outcome = await ValidateAsync(Token(EcCredentials(Ec, "ec-1")), provider);

        Assert.Equal(Reasons.TokenSignature, outcome.Failure);
        Assert.Same(provider, outcome.Provider);
        Assert.Contains(_logs.Lines, l => l.StartsWith("Warning", StringComparison.Ordinal) && l.Contains("[200]", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData(500, """{"keys":[]}""")]
    [InlineData(200, "<html>not json</html>")]
    [InlineData(200, """{"keys":[]}""")]
    [InlineData(200, """{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}""")]
    public async Task JwksAnsweringBadly_IsRefusedAsSignature(int status, string body)
    {
        await using var jwks = await JwksServer.StartAsync();
        jwks.Status = status;
        jwks.RawBody = body;

        var outcome = await ValidateAsync(Token(EcCredentials(Ec, "ec-1")), JwksProvider(jwks.Url));

        Assert.Equal(Reasons.TokenSignature, outcome.Failure);
        Assert.Equal(1, jwks.Fetches);
    }

    [Fact]
    public async Task JwksRecovering_IsTriedAgainAfterThirtySeconds()
    {
        await using var jwks = await JwksServer.StartAsync(EcJwk(Ec, "ec-1"));
        jwks.Status = 503;
        var provider = JwksProvider(jwks.Url);
        var token = Token(EcCredentials(Ec, "ec-1"));

        Assert.Equal(Reasons.TokenSignature, (await ValidateAsync(token, provider)).Failure);
        Assert.Equal(Reasons.TokenSignature, (await ValidateAsync(token, provider)).Failure);
        Assert.Equal(1, jwks.Fetches); // a failing key set is not hammered

        jwks.Status = 200;
        _time.Advance(TimeSpan.FromSeconds(31));

        Assert.Null((await ValidateAsync(token, provider)).Failure);
        Assert.Equal(2, jwks.Fetches);
    }

    [Fact]
    public async Task OldJwks_ServesWhileASlowRefetchRuns()
    {
        await using var jwks = await JwksServer.StartAsync(EcJwk(Ec, "ec-1"));
        var provider = JwksProvider(jwks.Url);
        Assert.Null((await ValidateAsync(Token(EcCredentials(Ec, "ec-1")), provider)).Failure);

        jwks.Delay = TimeSpan.FromSeconds(3);
        _time.Advance(TimeSpan.FromMinutes(11));
        var started = DateTime.UtcNow;
        var outcome = await ValidateAsync(Token(EcCredentials(Ec, "ec-1")), provider);

        Assert.Null(outcome.Failure);
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(2), "a known kid must not wait for the refetch");
        await Eventually.TrueAsync(() => _logs.Lines.Count(l => l.Contains("[201]", StringComparison.Ordinal)) == 2, "two [201] log lines");
    }

    [Fact]
    public async Task JwksFailingLater_KeepsTheKeysItHad()
    {
        await using var jwks = await JwksServer.StartAsync(EcJwk(Ec, "ec-1"));
        var provider = JwksProvider(jwks.Url);
        Assert.Null((await ValidateAsync(Token(EcCredentials(Ec, "ec-1")), provider)).Failure);

        jwks.Status = 500;
        _time.Advance(TimeSpan.FromMinutes(11));
        Assert.Null((await ValidateAsync(Token(EcCredentials(Ec, "ec-1")), provider)).Failure);
        await Eventually.TrueAsync(() => _logs.Lines.Any(l => l.Contains("[200]", StringComparison.Ordinal)), "a [200] log line");

        Assert.Null((await ValidateAsync(Token(EcCredentials(Ec, "ec-1")), provider)).Failure);
    }

    [Fact]
    public async Task StaticKeysAndJwks_AreBothUsed()
    {
        await using var jwks = await JwksServer.StartAsync(EcJwk(Ec, "ec-1"));
        var provider = JwksProvider(jwks.Url) with { Keys = [Rsa.ExportSubjectPublicKeyInfoPem()] };

        Assert.Null((await ValidateAsync(Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256)), provider)).Failure);
        Assert.Null((await ValidateAsync(Token(EcCredentials(Ec, "ec-1")), provider)).Failure);
    }

    // ---- LooksLikeJwt ----

    [Fact]
    public void LooksLikeJwt_RealTokens()
    {
        Assert.True(JwtAuthenticator.LooksLikeJwt(Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256))));
        Assert.True(JwtAuthenticator.LooksLikeJwt(Token(EcCredentials(Ec, "ec-1"))));
        Assert.True(JwtAuthenticator.LooksLikeJwt("eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJ4In0.c2ln-_AB"));
        Assert.True(JwtAuthenticator.LooksLikeJwt("abc.def.")); // unsigned (alg none): a token, refused for its signature
    }

    [Theory]
    [InlineData("")]
    [InlineData("csk_0123456789abcdefghijklmnopqrstuvwxyzAB")]
    [InlineData("sk-proj-abcdef")]
    [InlineData("abc")]
    [InlineData("abc.def")]
    [InlineData(".def.ghi")]
    [InlineData("abc..ghi")]
    [InlineData("abc.def.ghi.jkl")]
    [InlineData("abc.def.ghi.")]
    [InlineData("ab+c.def.ghi")]
    [InlineData("abc.de/f.ghi")]
    [InlineData("abc.def.gh=")]
    [InlineData("abc.def.ghi jkl")]
    [InlineData("abcde.def.ghi")] // a base64 length that cannot be
    public void LooksLikeJwt_Not(string candidate)
        => Assert.False(JwtAuthenticator.LooksLikeJwt(candidate));

    // ---- mutated tokens ----

    [Fact]
    public async Task MutatedTokens_AreRefusedWithAReason_NeverThrow_AndNoneNamesAnotherSubject()
    {
        // Seeded, so a failure repeats: the token's characters, and the JSON of its header and payload re-encoded
        // under the original signature.
        var provider = PemProvider(Rsa.ExportSubjectPublicKeyInfoPem());
        var token = Token(RsaCredentials(Rsa, SecurityAlgorithms.RsaSha256));
        var parts = token.Split('.');
        string[] fragments =
        [
            "\"", ",", ":", "{", "}", "[", "]", "null", "1e999", "-1", "\"none\"", "\"alg\"", "\"kid\"", "\"sub\"", "\"iss\"", "\"aud\"",
            "\"exp\"", "\"nbf\"", "\\ud83d", "[\"custos\"]", "{\"a\":1}", "9223372036854775808",
        ];
        const string alphabet = "ABCxyz019-_.=+/ ";
        var random = new Random(20261130);
        var refused = 0;

        for (var run = 0; run < 3000; run++)
        {
            string mutated;
            if (random.Next(2) == 0)
            {
                var chars = new StringBuilder(token);
                for (var k = random.Next(1, 4); k > 0; k--)
                {
                    var at = random.Next(chars.Length);
                    _ = random.Next(3) switch
                    {
                        0 => chars.Remove(at, 1),
                        1 => chars.Insert(at, alphabet[random.Next(alphabet.Length)]),
                        _ => chars.Replace(chars[at], alphabet[random.Next(alphabet.Length)], at, 1),
                    };
                }

                mutated = chars.ToString();
            }
            else
            {
                var which = random.Next(2);
                var json = new StringBuilder(Base64UrlEncoder.Decode(parts[which]));
                for (var k = random.Next(1, 3); k > 0; k--)
                {
                    var at = random.Next(json.Length + 1);
                    if (random.Next(2) == 0 && at < json.Length)
                    {
                        json.Remove(at, Math.Min(random.Next(1, 6), json.Length - at));
                    }
                    else
                    {
                        json.Insert(at, fragments[random.Next(fragments.Length)]);
                    }
                }

                var encoded = Base64UrlEncoder.Encode(json.ToString());
                mutated = which == 0 ? $"{encoded}.{parts[1]}.{parts[2]}" : $"{parts[0]}.{encoded}.{parts[2]}";
            }

            JwtOutcome outcome;
            try
            {
                outcome = await ValidateAsync(mutated, provider);
            }
            catch (Exception ex)
            {
                throw new Xunit.Sdk.XunitException($"run {run}: {mutated} threw {ex}");
            }

            // Base64url's last character can carry unused bits, so a few mutations leave the token's bytes as they were.
            Assert.True(outcome.Failure is not null || outcome.Subject == Subject, $"run {run}: {mutated} named {outcome.Subject}");
            refused += outcome.Failure is null ? 0 : 1;
        }

        Assert.True(refused > 2900, $"only {refused} of 3000 refused");
    }

    // ---- helpers ----

    private ValueTask<JwtOutcome> ValidateAsync(string token, IdentityProviderConfig provider)
        => _authenticator.ValidateAsync(token, [provider], CancellationToken.None);

    private static IdentityProviderConfig PemProvider(params string[] keys) => new()
    {
        Id = "ci",
        Issuer = Issuer,
        Audience = Audience,
        Keys = keys,
    };

    private static IdentityProviderConfig JwksProvider(Uri url) => new()
    {
        Id = "ci",
        Issuer = Issuer,
        Audience = Audience,
        JwksUrl = url,
    };

    private static SigningCredentials RsaCredentials(RSA rsa, string algorithm, string kid = "rsa-1")
        => new(new RsaSecurityKey(rsa) { KeyId = kid }, algorithm);

    private static SigningCredentials EcCredentials(ECDsa ec, string kid)
        => new(new ECDsaSecurityKey(ec) { KeyId = kid }, SecurityAlgorithms.EcdsaSha256);

    private string Token(SigningCredentials? credentials, Action<SecurityTokenDescriptor>? customize = null)
    {
        var now = _time.GetUtcNow().UtcDateTime;
        var descriptor = new SecurityTokenDescriptor
        {
            Issuer = Issuer,
            Audience = Audience,
            IssuedAt = now,
            NotBefore = now,
            Expires = now.AddMinutes(10),
            SigningCredentials = credentials,
            Claims = new Dictionary<string, object> { ["sub"] = Subject },
        };
        customize?.Invoke(descriptor);
        return new JsonWebTokenHandler { SetDefaultTimesOnTokenCreation = false }.CreateToken(descriptor);
    }

    private string ValidPayloadJson()
    {
        var now = _time.GetUtcNow().ToUnixTimeSeconds();
        return JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["iss"] = Issuer,
            ["aud"] = Audience,
            ["sub"] = Subject,
            ["iat"] = now,
            ["nbf"] = now,
            ["exp"] = now + 600,
        });
    }

    private static string EcJwk(ECDsa ec, string kid)
    {
        var p = ec.ExportParameters(false);
        return JsonSerializer.Serialize(new Dictionary<string, string>
        {
            ["kty"] = "EC",
            ["crv"] = "P-256",
            ["x"] = Base64UrlEncoder.Encode(p.Q.X),
            ["y"] = Base64UrlEncoder.Encode(p.Q.Y),
            ["kid"] = kid,
            ["use"] = "sig",
            ["alg"] = "ES256",
        });
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>A JSON Web Key Set served by Kestrel on loopback, counting its fetches.</summary>
    private sealed class JwksServer : IAsyncDisposable
    {
        private readonly WebApplication _app;
        private int _fetches;

        private JwksServer(WebApplication app) => _app = app;

        public Uri Url { get; private set; } = null!;

        public int Fetches => Volatile.Read(ref _fetches);

        public volatile string[] Keys = [];

        public volatile int Status = 200;

        public volatile string? RawBody;

        public TimeSpan Delay { get; set; }

        public static async Task<JwksServer> StartAsync(params string[] keys)
        {
            var builder = WebApplication.CreateSlimBuilder();
            builder.Logging.ClearProviders();
            builder.WebHost.UseUrls("http://127.0.0.1:0");
            var app = builder.Build();
            var server = new JwksServer(app) { Keys = keys };
            app.MapGet("/jwks", async (HttpContext context) =>
            {
                Interlocked.Increment(ref server._fetches);
                if (server.Delay > TimeSpan.Zero)
                {
                    await Task.Delay(server.Delay, context.RequestAborted);
                }

                context.Response.StatusCode = server.Status;
                context.Response.ContentType = "application/json";
                await context.Response.WriteAsync(server.RawBody ?? "{\"keys\":[" + string.Join(",", server.Keys) + "]}");
            });
            await app.StartAsync();
            server.Url = new Uri(new Uri(app.Urls.First()), "/jwks");
            return server;
        }

        public async ValueTask DisposeAsync()
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }
    }
}
