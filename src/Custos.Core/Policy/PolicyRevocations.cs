namespace Custos.Policy;

/// <summary>
/// A revocation is permanent (<c>docs/keys.md</c>): no later version may name a revoked credential, or its key, as anything
/// but revoked. A whole policy applied from a copy taken before the revocation, or a file edited before it, would
/// otherwise bring a leaked key back to life without anyone deciding so.
/// </summary>
public static class PolicyRevocations
{
    /// <summary>The credentials revoked in <paramref name="current"/> that <paramref name="next"/> names, by id or by key, as not revoked.</summary>
    public static IReadOnlyList<string> Undone(PolicyDocument current, PolicyDocument next)
    {
        HashSet<string>? ids = null, keys = null;
        foreach (var credential in current.Credentials)
        {
            if (credential.Status == CredentialStatus.Revoked)
            {
                (ids ??= new(StringComparer.Ordinal)).Add(credential.Id);
                if (credential.KeySha256 is { } key)
                {
                    (keys ??= new(StringComparer.OrdinalIgnoreCase)).Add(key);
                }
            }
        }

        if (ids is null)
        {
            return [];
        }

        var undone = new List<string>();
        foreach (var credential in next.Credentials)
        {
            if (credential.Status != CredentialStatus.Revoked
                && (ids.Contains(credential.Id) || (credential.KeySha256 is { } key && keys?.Contains(key) == true)))
            {
                undone.Add(credential.Id);
            }
        }

        return undone;
    }
}

/// <summary>A new policy would make revoked credentials usable again; nothing was changed.</summary>
public sealed class RevocationUndoneException(IReadOnlyList<string> credentials) : InvalidOperationException(
    $"{Names(credentials)} {(credentials.Count == 1 ? "is" : "are")} revoked in the policy in force, and a revocation is permanent; " +
    $"this policy names {(credentials.Count == 1 ? "it" : "them")} as not revoked. Keep `status: revoked` (or leave {(credentials.Count == 1 ? "it" : "them")} out) " +
    "and issue a new key where one is needed")
{
    /// <summary>The credentials the policy would have brought back.</summary>
    public IReadOnlyList<string> Credentials { get; } = credentials;

    private static string Names(IReadOnlyList<string> credentials)
        => (credentials.Count == 1 ? "credential " : "credentials ") + string.Join(", ", credentials.Select(c => $"'{c}'"));
}
