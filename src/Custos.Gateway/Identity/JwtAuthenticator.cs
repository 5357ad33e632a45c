using System.Buffers;
using System.Collections.Concurrent;
using System.Collections.Frozen;
using System.Net.Http.Headers;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text.Json;
using Custos.Errors;
using Custos.Policy;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace Custos.Gateway.Identity;

/// <summary>The outcome of validating a JWT bearer token: the refusal, or the provider and subject it proves.</summary>
/// <param name="Failure">Why it is refused, or null when valid.</param>
/// <param name="Provider">The identity provider that issued it, when known.</param>
/// <param name="Subject">The subject (or the provider's subject claim), when valid.</param>
public readonly record struct JwtOutcome(ReasonCode? Failure, IdentityProviderConfig? Provider, string? Subject);

/// <summary>
/// Validates JWT bearer tokens against the policy's identity providers: workload identities on the data plane and
/// OIDC sign-in on the admin API.
/// </summary>
/// <remarks>
/// <para>
/// Checks run in a fixed order, and the first that fails names the refusal: well-formed
/// (<see cref="Reasons.TokenMalformed"/>), trusted issuer (<see cref="Reasons.TokenIssuer"/>), signature by one of the
/// issuer's keys with an asymmetric algorithm (<see cref="Reasons.TokenSignature"/>), audience
/// (<see cref="Reasons.TokenAudience"/>), lifetime with 30 s of clock skew; a token without <c>exp</c> counts as expired
/// (<see cref="Reasons.TokenExpired"/>). A forged token therefore never learns whether its audience or lifetime was right.
/// </para>
/// <para>
/// Keys: a provider's static keys are parsed once per <see cref="IdentityProviderConfig"/> instance (a new policy
/// version parses its own). A JSON Web Key Set is fetched per URL, kept for 10 minutes, and fetched again at most once
/// per 30 seconds when a token names a <c>kid</c> it does not hold (key rotation). When a fetch fails, the keys last
/// fetched stay in use for up to 24 hours; with none, tokens are refused with <see cref="Reasons.TokenSignature"/>.
/// A fetch failure is logged, never thrown.
/// </para>
/// <para>Thread-safe; one instance serves the whole gateway.</para>
/// </remarks>
public sealed partial class JwtAuthenticator
{
    /// <summary>How far clocks may disagree when checking <c>exp</c> and <c>nbf</c>.</summary>
    public static readonly TimeSpan ClockSkew = TimeSpan.FromSeconds(30);

    /// <summary>How long a fetched key set is used before it is fetched again.</summary>
    public static readonly TimeSpan JwksCacheDuration = TimeSpan.FromMinutes(10);

    /// <summary>The least time between two fetches of one key set (an unknown <c>kid</c> or a failed fetch).</summary>
    public static readonly TimeSpan JwksMinRefetchInterval = TimeSpan.FromSeconds(30);

    /// <summary>How long the keys last fetched stay in use while fetching them again fails.</summary>
    public static readonly TimeSpan JwksMaxStaleness = TimeSpan.FromHours(24);

    private const string DefaultSubjectClaim = "sub";
    private const int MaxJwksBytes = 1024 * 1024;
    private static readonly TimeSpan JwksFetchTimeout = TimeSpan.FromSeconds(10);

    private static readonly string[] AllowedAlgorithms =
    [
        SecurityAlgorithms.RsaSha256, SecurityAlgorithms.RsaSha384, SecurityAlgorithms.RsaSha512,
        SecurityAlgorithms.RsaSsaPssSha256,
        SecurityAlgorithms.EcdsaSha256, SecurityAlgorithms.EcdsaSha384, SecurityAlgorithms.EcdsaSha512,
    ];

    private static readonly SearchValues<char> Base64UrlChars =
        SearchValues.Create("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");

    private static readonly Lazy<HttpMessageInvoker> DefaultJwksClient = new(() => new HttpMessageInvoker(new SocketsHttpHandler
    {
        ConnectTimeout = TimeSpan.FromSeconds(10),
        PooledConnectionLifetime = TimeSpan.FromMinutes(5),
        UseCookies = false,
    }));

    private readonly JsonWebTokenHandler _handler = new() { MapInboundClaims = false };
    private readonly HttpMessageInvoker _jwksClient;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly ConditionalWeakTable<IdentityProviderConfig, KeySet> _staticKeys = new();
    private readonly ConditionalWeakTable<IdentityProviderConfig, KeySet>.CreateValueCallback _parseStaticKeys;
    private readonly ConcurrentDictionary<string, JwksSource> _jwksSources = new(StringComparer.Ordinal);

    /// <summary>Creates an authenticator.</summary>
    /// <param name="jwksClient">Fetches JSON Web Key Sets. Default: a shared client of this class's own.</param>
    /// <param name="time">The clock for token lifetimes and key-set caching. Default the system clock.</param>
    /// <param name="logger">Where fetch failures and unusable keys are reported. Default: nowhere.</param>
    public JwtAuthenticator(HttpMessageInvoker? jwksClient = null, TimeProvider? time = null, ILogger<JwtAuthenticator>? logger = null)
    {
        _jwksClient = jwksClient ?? DefaultJwksClient.Value;
        _time = time ?? TimeProvider.System;
        _logger = logger ?? NullLogger<JwtAuthenticator>.Instance;
        _parseStaticKeys = ParseStaticKeys;
    }

    /// <summary>True when <paramref name="token"/> has the shape of a compact JWS (three base64url segments, the last possibly empty).</summary>
    /// <remarks>
    /// Cheap and allocation-free: exactly two dots, a header and a payload of base64url characters, and a signature of them
    /// or none: an unsigned token (<c>alg: none</c>) is a JWT, refused by <see cref="ValidateAsync"/> for its signature
    /// (<c>deny.token_signature</c>), not taken for a malformed API key.
    /// </remarks>
    public static bool LooksLikeJwt(ReadOnlySpan<char> token) => IsCompactJws(token, allowEmptySignature: true);

    /// <summary>Validates <paramref name="token"/> against <paramref name="providers"/>.</summary>
    /// <remarks>
    /// Never throws for a bad token or an unreachable key set; only <see cref="OperationCanceledException"/> when
    /// <paramref name="cancellationToken"/> is cancelled while a key set is being fetched.
    /// </remarks>
    public async ValueTask<JwtOutcome> ValidateAsync(string token, IReadOnlyList<IdentityProviderConfig> providers, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(token);
        ArgumentNullException.ThrowIfNull(providers);

        // An unsigned token ("header.payload.") is well-formed: it is refused for its signature, like alg 'none'.
        if (token.Length > _handler.MaximumTokenSizeInBytes || !IsCompactJws(token, allowEmptySignature: true))
        {
            return new JwtOutcome(Reasons.TokenMalformed, null, null);
        }

        JsonWebToken jwt;
        string? issuer;
        string? kid;
        try
        {
            jwt = new JsonWebToken(token);
            if (!jwt.TryGetPayloadValue<string>(JwtRegisteredClaimNames.Iss, out issuer))
            {
                issuer = null;
            }

            kid = jwt.Kid;
        }
        catch (Exception ex) when (ex is ArgumentException or FormatException or JsonException or SecurityTokenException)
        {
            return new JwtOutcome(Reasons.TokenMalformed, null, null);
        }

        if (string.IsNullOrEmpty(issuer))
        {
            return new JwtOutcome(Reasons.TokenMalformed, null, null);
        }

        // Usually one provider per issuer; when several share one, the first that accepts the token wins, and otherwise
        // the refusal that got furthest through the checks is the answer.
        JwtOutcome? best = null;
        for (var i = 0; i < providers.Count; i++)
        {
            var provider = providers[i];
            if (!string.Equals(provider.Issuer, issuer, StringComparison.Ordinal))
            {
                continue;
            }

            var outcome = await ValidateForAsync(jwt, kid, provider, cancellationToken);
            if (outcome.Failure is null)
            {
                return outcome;
            }

            if (best is null || Rank(outcome.Failure) > Rank(best.Value.Failure))
            {
                best = outcome;
            }
        }

        return best ?? new JwtOutcome(Reasons.TokenIssuer, null, null);
    }

    private async ValueTask<JwtOutcome> ValidateForAsync(JsonWebToken jwt, string? kid, IdentityProviderConfig provider, CancellationToken cancellationToken)
    {
        var keys = await KeysForAsync(provider, kid, cancellationToken);
        if (keys.Count == 0)
        {
            Log.Refused(_logger, provider.Id, Reasons.TokenSignature.Code, "no signing keys available");
            return new JwtOutcome(Reasons.TokenSignature, provider, null);
        }

        var parameters = new TokenValidationParameters
        {
            ValidateIssuer = true,
            ValidIssuer = provider.Issuer,
            ValidAudience = provider.Audience,
            RequireAudience = true,
            IgnoreTrailingSlashWhenValidatingAudience = false,

            // The handler reports a wrong audience before a bad signature, so a forged token would learn whether its
            // audience was right: it checks the signature (and issuer) only; audience, then lifetime, are checked below.
            ValidateAudience = false,
            ValidateLifetime = false,
            ClockSkew = ClockSkew,
            RequireSignedTokens = true,
            ValidateSignatureLast = false,
            IssuerSigningKeys = keys,
            TryAllIssuerSigningKeys = true,
            ValidAlgorithms = AllowedAlgorithms,
            ValidateIssuerSigningKey = false,
            ValidateTokenReplay = false,
            SaveSigninToken = false,
            LogValidationExceptions = false,
        };

        var result = await _handler.ValidateTokenAsync(jwt, parameters);
        if (!result.IsValid)
        {
            var reason = Map(result.Exception);
            Log.Refused(_logger, provider.Id, reason.Code, result.Exception?.GetType().Name ?? "invalid");
            return new JwtOutcome(reason, provider, null);
        }

        try
        {
            parameters.ValidateAudience = true;
            Validators.ValidateAudience(jwt.Audiences, jwt, parameters);
        }
        catch (Exception ex) when (ex is SecurityTokenException or ArgumentException)
        {
            var reason = Map(ex);
            Log.Refused(_logger, provider.Id, reason.Code, ex.GetType().Name);
            return new JwtOutcome(reason, provider, null);
        }

        if (LifetimeRefusal(jwt) is { } lifetime)
        {
            Log.Refused(_logger, provider.Id, Reasons.TokenExpired.Code, lifetime);
            return new JwtOutcome(Reasons.TokenExpired, provider, null);
        }

        var claim = string.IsNullOrEmpty(provider.SubjectClaim) ? DefaultSubjectClaim : provider.SubjectClaim;
        if (!TryGetSubject(jwt, claim, out var subject))
        {
            Log.Refused(_logger, provider.Id, Reasons.TokenMalformed.Code, $"no '{claim}' claim");
            return new JwtOutcome(Reasons.TokenMalformed, provider, null);
        }

        return new JwtOutcome(null, provider, subject);
    }

    /// <summary>Why the token is outside its lifetime (with <see cref="ClockSkew"/>), or null when within it.</summary>
    private string? LifetimeRefusal(JsonWebToken jwt)
    {
        DateTime expires, notBefore;
        try
        {
            expires = jwt.ValidTo; // DateTime.MinValue when absent
            notBefore = jwt.ValidFrom;
        }
        catch (Exception ex) when (ex is ArgumentException or FormatException or InvalidCastException or OverflowException or SecurityTokenException)
        {
            return "unreadable 'exp' or 'nbf'";
        }

        var now = _time.GetUtcNow().UtcDateTime;
        if (expires == DateTime.MinValue)
        {
            return "no 'exp' claim";
        }

        if (notBefore != DateTime.MinValue && notBefore > expires)
        {
            return "'nbf' after 'exp'";
        }

        if (notBefore != DateTime.MinValue && notBefore > now + ClockSkew)
        {
            return "not valid yet";
        }

        return expires < now - ClockSkew ? "expired" : null;
    }

    private static bool TryGetSubject(JsonWebToken jwt, string claim, out string subject)
    {
        subject = "";
        try
        {
            if (jwt.TryGetPayloadValue<string>(claim, out var text) && !string.IsNullOrWhiteSpace(text))
            {
                subject = text;
                return true;
            }

            if (jwt.TryGetPayloadValue<long>(claim, out var number))
            {
                subject = number.ToString(System.Globalization.CultureInfo.InvariantCulture);
                return true;
            }
        }
        catch (Exception ex) when (ex is ArgumentException or FormatException or InvalidCastException or SecurityTokenException)
        {
            // A claim of another type (an array, an object): no usable subject.
        }

        return false;
    }

    /// <summary>Maps the validation library's refusal to the gateway's reason code; anything unrecognised fails closed.</summary>
    internal static ReasonCode Map(Exception? exception) => exception switch
    {
        SecurityTokenSignatureKeyNotFoundException or SecurityTokenInvalidSignatureException or SecurityTokenInvalidSigningKeyException
            => Reasons.TokenSignature,
        SecurityTokenInvalidIssuerException => Reasons.TokenIssuer,
        SecurityTokenInvalidAudienceException => Reasons.TokenAudience,
        SecurityTokenExpiredException or SecurityTokenNotYetValidException or SecurityTokenNoExpirationException or SecurityTokenInvalidLifetimeException
            => Reasons.TokenExpired,
        SecurityTokenMalformedException => Reasons.TokenMalformed,
        _ => Reasons.TokenSignature,
    };

    /// <summary>How far through the checks a refusal got: signature, audience, lifetime, subject.</summary>
    private static int Rank(ReasonCode? reason)
    {
        if (reason == Reasons.TokenMalformed)
        {
            return 4;
        }

        if (reason == Reasons.TokenExpired)
        {
            return 3;
        }

        return reason == Reasons.TokenAudience ? 2 : 1;
    }

    private static bool IsCompactJws(ReadOnlySpan<char> token, bool allowEmptySignature)
    {
        var first = token.IndexOf('.');
        if (first <= 0)
        {
            return false;
        }

        var rest = token[(first + 1)..];
        var second = rest.IndexOf('.');
        if (second <= 0)
        {
            return false;
        }

        var signature = rest[(second + 1)..];
        return IsBase64Url(token[..first]) && IsBase64Url(rest[..second])
            && ((allowEmptySignature && signature.IsEmpty) || IsBase64Url(signature));
    }

    // A base64url segment without padding is never 1 character longer than a multiple of 4.
    private static bool IsBase64Url(ReadOnlySpan<char> segment)
        => segment.Length > 0 && segment.Length % 4 != 1 && !segment.ContainsAnyExcept(Base64UrlChars);

    private async ValueTask<IList<SecurityKey>> KeysForAsync(IdentityProviderConfig provider, string? kid, CancellationToken cancellationToken)
    {
        var fixedKeys = provider.Keys is { Count: > 0 } ? _staticKeys.GetValue(provider, _parseStaticKeys) : KeySet.Empty;
        if (provider.JwksUrl is not { } url)
        {
            return fixedKeys.Keys;
        }

        var wanted = string.IsNullOrEmpty(kid) || fixedKeys.KeyIds.Contains(kid) ? null : kid;
        var fetched = await JwksKeysAsync(url, wanted, cancellationToken);
        if (fixedKeys.Keys.Count == 0)
        {
            return fetched;
        }

        if (fetched.Count == 0)
        {
            return fixedKeys.Keys;
        }

        return [.. fixedKeys.Keys, .. fetched];
    }

    private async ValueTask<IList<SecurityKey>> JwksKeysAsync(Uri url, string? kid, CancellationToken cancellationToken)
    {
        var source = _jwksSources.GetOrAdd(url.AbsoluteUri, static (_, u) => new JwksSource(u), url);
        var now = _time.GetUtcNow();
        var current = source.Current;
        var known = current is not null && (kid is null || current.KeyIds.Contains(kid));
        if (known && now - current!.FetchedAt < JwksCacheDuration)
        {
            return current.Keys;
        }

        var refresh = StartRefresh(source, now);
        if (refresh is not null && (!known || refresh.IsCompleted))
        {
            // No keys yet, or a kid the set lacks: wait for the fetch. A set that is merely old serves meanwhile, so a
            // slow or unreachable key set does not hold up requests every time it is due.
            current = await refresh.WaitAsync(cancellationToken);
        }

        return current is not null && _time.GetUtcNow() - current.FetchedAt < JwksMaxStaleness ? current.Keys : KeySet.Empty.Keys;
    }

    /// <summary>The running or newly started fetch of <paramref name="source"/>, or null when too soon after the last.</summary>
    private Task<KeySet?>? StartRefresh(JwksSource source, DateTimeOffset now)
    {
        lock (source.Gate)
        {
            if (source.Refresh is { IsCompleted: false } running)
            {
                return running;
            }

            if (source.LastAttempt is { } last && now - last < JwksMinRefetchInterval)
            {
                return null;
            }

            source.LastAttempt = now;
            source.Refresh = FetchAsync(source);
            return source.Refresh;
        }
    }

    /// <summary>Fetches the key set; on failure logs and keeps the set it had. Never throws.</summary>
    private async Task<KeySet?> FetchAsync(JwksSource source)
    {
        await Task.Yield(); // run outside the caller's lock
        try
        {
            using var timeout = new CancellationTokenSource(JwksFetchTimeout);
            using var request = new HttpRequestMessage(HttpMethod.Get, source.Url);
            request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("application/json"));
            using var response = await _jwksClient.SendAsync(request, timeout.Token);
            if (!response.IsSuccessStatusCode)
            {
                throw new HttpRequestException($"the key set answered HTTP {(int)response.StatusCode}", null, response.StatusCode);
            }

            var json = await ReadBoundedAsync(response.Content, timeout.Token);
            var keys = new List<SecurityKey>();
            var kids = new HashSet<string>(StringComparer.Ordinal);
            AddSigningKeys(new JsonWebKeySet(json), keys, kids, static (_, _) => { });
            if (keys.Count == 0)
            {
                throw new InvalidDataException("the key set holds no RSA or EC signing key");
            }

            var set = new KeySet(keys, kids.ToFrozenSet(StringComparer.Ordinal), _time.GetUtcNow());
            source.Current = set;
            Log.JwksFetched(_logger, source.Url, keys.Count);
            return set;
        }
        catch (Exception ex)
        {
            Log.JwksFetchFailed(_logger, source.Url, ex);
            return source.Current;
        }
    }

    private static async Task<string> ReadBoundedAsync(HttpContent content, CancellationToken cancellationToken)
    {
        if (content.Headers.ContentLength > MaxJwksBytes)
        {
            throw new InvalidDataException($"the key set is larger than {MaxJwksBytes} bytes");
        }

        await using var stream = await content.ReadAsStreamAsync(cancellationToken);
        using var buffer = new MemoryStream();
        var chunk = new byte[16 * 1024];
        int read;
        while ((read = await stream.ReadAsync(chunk, cancellationToken)) > 0)
        {
            if (buffer.Length + read > MaxJwksBytes)
            {
                throw new InvalidDataException($"the key set is larger than {MaxJwksBytes} bytes");
            }

            buffer.Write(chunk, 0, read);
        }

        return System.Text.Encoding.UTF8.GetString(buffer.GetBuffer(), 0, (int)buffer.Length);
    }

    private KeySet ParseStaticKeys(IdentityProviderConfig provider)
    {
        var keys = new List<SecurityKey>();
        var kids = new HashSet<string>(StringComparer.Ordinal);
        var texts = provider.Keys ?? [];
        for (var i = 0; i < texts.Count; i++)
        {
            var index = i;
            try
            {
                var text = texts[i].Trim();
                if (text.StartsWith('{'))
                {
                    var set = new JsonWebKeySet(text);
                    if (set.Keys.Count == 0)
                    {
                        set.Keys.Add(new JsonWebKey(text)); // a single JWK rather than a set
                    }

                    AddSigningKeys(set, keys, kids, (kid, why) => Log.StaticKeyUnusable(_logger, provider.Id, index, $"key '{kid}': {why}", null));
                }
                else
                {
                    keys.Add(ParsePem(text));
                }
            }
            catch (Exception ex) when (ex is ArgumentException or CryptographicException or FormatException or JsonException or InvalidDataException)
            {
                Log.StaticKeyUnusable(_logger, provider.Id, index, "not a PEM public key or a JWK", ex);
            }
        }

        return new KeySet(keys, kids.ToFrozenSet(StringComparer.Ordinal), DateTimeOffset.MinValue);
    }

    private static SecurityKey ParsePem(string text)
    {
        if (!PemEncoding.TryFind(text, out var fields))
        {
            throw new InvalidDataException("no PEM block");
        }

        var label = text.AsSpan()[fields.Label];
        if (label is not ("PUBLIC KEY" or "RSA PUBLIC KEY"))
        {
            throw new InvalidDataException("only public keys are accepted ('-----BEGIN PUBLIC KEY-----')");
        }

        var rsa = RSA.Create();
        try
        {
            rsa.ImportFromPem(text);
            return new RsaSecurityKey(rsa);
        }
        catch (Exception ex) when (ex is ArgumentException or CryptographicException)
        {
            rsa.Dispose();
        }

        var ecdsa = ECDsa.Create();
        try
        {
            ecdsa.ImportFromPem(text);
            return new ECDsaSecurityKey(ecdsa);
        }
        catch
        {
            ecdsa.Dispose();
            throw;
        }
    }

    /// <summary>Adds the set's RSA and EC public keys meant for signatures; reports each key left out.</summary>
    private static void AddSigningKeys(JsonWebKeySet set, List<SecurityKey> keys, HashSet<string> kids, Action<string?, string> skipped)
    {
        foreach (var key in set.Keys)
        {
            if (key.Kty is not (JsonWebAlgorithmsKeyTypes.RSA or JsonWebAlgorithmsKeyTypes.EllipticCurve))
            {
                skipped(key.Kid, $"key type '{key.Kty}' is not RSA or EC");
            }
            else if (!string.IsNullOrEmpty(key.Use) && key.Use != JsonWebKeyUseNames.Sig)
            {
                skipped(key.Kid, $"key use '{key.Use}' is not 'sig'");
            }
            else if (key.HasPrivateKey)
            {
                skipped(key.Kid, "it holds a private key");
            }
            else if (key.Kty == JsonWebAlgorithmsKeyTypes.RSA ? string.IsNullOrEmpty(key.N) || string.IsNullOrEmpty(key.E)
                : string.IsNullOrEmpty(key.Crv) || string.IsNullOrEmpty(key.X) || string.IsNullOrEmpty(key.Y))
            {
                skipped(key.Kid, "the public key is incomplete");
            }
            else
            {
                keys.Add(key);
                if (!string.IsNullOrEmpty(key.Kid))
                {
                    kids.Add(key.Kid);
                }
            }
        }
    }

    /// <summary>Signing keys, their <c>kid</c>s, and when they were fetched (static keys: never).</summary>
    private sealed record KeySet(IList<SecurityKey> Keys, FrozenSet<string> KeyIds, DateTimeOffset FetchedAt)
    {
        public static readonly KeySet Empty = new(Array.Empty<SecurityKey>(), FrozenSet<string>.Empty, DateTimeOffset.MinValue);
    }

    /// <summary>One JSON Web Key Set URL: the keys last fetched, and the fetch in progress (started under <see cref="Gate"/>).</summary>
    private sealed class JwksSource(Uri url)
    {
        private volatile KeySet? _current;

        public Uri Url { get; } = url;

        public Lock Gate { get; } = new();

        public KeySet? Current
        {
            get => _current;
            set => _current = value;
        }

        public DateTimeOffset? LastAttempt { get; set; }

        public Task<KeySet?>? Refresh { get; set; }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 200, Level = LogLevel.Warning,
            Message = "Fetching the JSON Web Key Set {Url} failed; its last keys (if any, up to 24 h old) stay in use, and it is tried again in 30 s at the earliest.")]
        public static partial void JwksFetchFailed(ILogger logger, Uri url, Exception exception);

        [LoggerMessage(EventId = 201, Level = LogLevel.Information, Message = "Fetched the JSON Web Key Set {Url}: {Count} signing keys.")]
        public static partial void JwksFetched(ILogger logger, Uri url, int count);

        [LoggerMessage(EventId = 202, Level = LogLevel.Warning, Message = "Identity provider {Provider}: static key {Index} is ignored: {Why}.")]
        public static partial void StaticKeyUnusable(ILogger logger, string provider, int index, string why, Exception? exception);

        [LoggerMessage(EventId = 203, Level = LogLevel.Debug, Message = "Token for identity provider {Provider} refused ({Reason}): {Detail}.")]
        public static partial void Refused(ILogger logger, string provider, string reason, string detail);
    }
}
