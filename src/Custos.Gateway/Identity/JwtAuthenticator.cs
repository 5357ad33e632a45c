using Custos.Errors;
using Custos.Policy;

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
public sealed class JwtAuthenticator(HttpMessageInvoker jwksClient, TimeProvider time, Microsoft.Extensions.Logging.ILogger<JwtAuthenticator> logger)
{
    private readonly HttpMessageInvoker _jwksClient = jwksClient;
    private readonly TimeProvider _time = time;
    private readonly Microsoft.Extensions.Logging.ILogger _logger = logger;

    /// <summary>True when <paramref name="token"/> has the shape of a compact JWS (three base64url segments).</summary>
    public static bool LooksLikeJwt(ReadOnlySpan<char> token) => token.Count('.') == 2;

    /// <summary>Validates <paramref name="token"/> against <paramref name="providers"/>.</summary>
    public ValueTask<JwtOutcome> ValidateAsync(string token, IReadOnlyList<IdentityProviderConfig> providers, CancellationToken cancellationToken)
        => throw new NotImplementedException();
}
