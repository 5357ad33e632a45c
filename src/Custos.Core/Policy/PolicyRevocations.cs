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

/// <summary>
/// What contains an incident — a suspended credential, a kill switch on a tenant, service or consumer — put in force
/// through the admin API (or by an alert) after a policy file was last loaded, is not lifted by loading that file again
/// edited: a routine restart with a file edited for something else would end the containment on every node, with only a
/// warning in one node's log to show for it.
/// </summary>
public static class PolicyContainment
{
    /// <summary>
    /// What <paramref name="current"/> contains that <paramref name="lastLoaded"/> (the file as last loaded) did not, and
    /// <paramref name="file"/> (the file now) lifts; each as "credential 'x' suspended", "service 'y' suspended (kill switch)".
    /// </summary>
    public static IReadOnlyList<string> Lifted(PolicyDocument lastLoaded, PolicyDocument current, PolicyDocument file)
    {
        var lifted = new List<string>();
        foreach (var credential in current.Credentials.Where(c => c.Status == CredentialStatus.Suspended))
        {
            if (lastLoaded.Credentials.FirstOrDefault(c => c.Id == credential.Id)?.Status != CredentialStatus.Suspended
                && file.Credentials.FirstOrDefault(c => c.Id == credential.Id)?.Status == CredentialStatus.Active)
            {
                lifted.Add($"credential '{credential.Id}' suspended");
            }
        }

        Switches("tenant", current.Tenants, lastLoaded.Tenants, file.Tenants, t => t.Id, t => t.Suspended, lifted);
        Switches("service", current.Services, lastLoaded.Services, file.Services, s => s.Id, s => s.Suspended, lifted);
        Switches("consumer", current.Consumers, lastLoaded.Consumers, file.Consumers, c => c.Id, c => c.Suspended, lifted);
        return lifted;
    }

    private static void Switches<T>(string kind, IReadOnlyList<T> current, IReadOnlyList<T> lastLoaded, IReadOnlyList<T> file, Func<T, string> id,
        Func<T, bool?> suspended, List<string> lifted)
    {
        foreach (var engaged in current.Where(x => suspended(x) == true))
        {
            var name = id(engaged);
            if (lastLoaded.FirstOrDefault(x => id(x) == name) is not { } before || suspended(before) != true)
            {
                if (file.FirstOrDefault(x => id(x) == name) is { } after && suspended(after) != true)
                {
                    lifted.Add($"{kind} '{name}' suspended (kill switch)");
                }
            }
        }
    }
}

/// <summary>A policy file, edited since it was last loaded, would lift containment put in force after that; nothing was changed.</summary>
public sealed class ContainmentLiftedException(IReadOnlyList<string> lifted, long since) : InvalidOperationException(
    $"the file would lift what was put in force through the admin API or by an alert after the file was last loaded (version {since}): " +
    $"{string.Join(", ", lifted)}. Bring the file up to date first (`custos policy show > FILE`, then make the edit again), " +
    "or lift them through the admin API (`custos keys resume`, `custos kill-switch release`)")
{
    /// <summary>What the file would have lifted.</summary>
    public IReadOnlyList<string> Lifted { get; } = lifted;
}
