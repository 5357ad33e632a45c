namespace Custos.Policy;

/// <summary>
/// A revocation is permanent (<c>docs/keys.md</c>): no later version may name a revoked credential, or its key, as anything
/// but revoked. A whole policy applied from a copy taken before the revocation, or a file edited before it, would
/// otherwise bring a leaked key back to life without anyone deciding so; and since a version that leaves the revoked
/// credential out forgets it, every revocation ever stored counts, not only those of the policy in force.
/// </summary>
/// <remarks>
/// Filled from the stored versions (<see cref="Add(PolicyVersion)"/>) when a gateway starts and before each policy change;
/// read on a policy change only, never per request. Not thread-safe: the gateway reads and fills it under its apply lock.
/// </remarks>
public sealed class PolicyRevocations
{
    private readonly Dictionary<string, long> _ids = new(StringComparer.Ordinal);
    private readonly Dictionary<string, string> _keys = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>The highest version number added; 0 before any.</summary>
    public long Through { get; private set; }

    /// <summary>Adds the revocations of <paramref name="version"/>, unless a version at least as new was added already.</summary>
    public void Add(PolicyVersion version)
    {
        if (version.Number <= Through)
        {
            return;
        }

        foreach (var credential in version.Document.Credentials)
        {
            if (credential.Status == CredentialStatus.Revoked)
            {
                _ids.TryAdd(credential.Id, version.Number);
                if (credential.KeySha256 is { } key)
                {
                    _keys.TryAdd(key, credential.Id);
                }
            }
        }

        Through = version.Number;
    }

    /// <summary>Every revocation of <paramref name="history"/> (each version, in any order).</summary>
    public static PolicyRevocations Of(IEnumerable<PolicyVersion> history)
    {
        var revocations = new PolicyRevocations();
        foreach (var version in history.OrderBy(v => v.Number))
        {
            revocations.Add(version);
        }

        return revocations;
    }

    /// <summary>
    /// The credentials of <paramref name="next"/> that are not revoked there but were revoked in a version added, by id or
    /// by key; each with the revoked credential it revives.
    /// </summary>
    public IReadOnlyList<RevivedCredential> Undone(PolicyDocument next)
    {
        if (_ids.Count == 0)
        {
            return [];
        }

        var undone = new List<RevivedCredential>();
        foreach (var credential in next.Credentials)
        {
            if (credential.Status == CredentialStatus.Revoked)
            {
                continue;
            }

            if (_ids.TryGetValue(credential.Id, out var version))
            {
                undone.Add(new RevivedCredential(credential.Id, credential.Id, version));
            }
            else if (credential.KeySha256 is { } key && _keys.TryGetValue(key, out var revoked))
            {
                undone.Add(new RevivedCredential(credential.Id, revoked, _ids[revoked]));
            }
        }

        return undone;
    }
}

/// <summary>A credential a policy names as not revoked, though it, or its key, was revoked.</summary>
/// <param name="Id">The credential as the policy names it.</param>
/// <param name="Revoked">The credential revoked: <paramref name="Id"/> itself, or another that had the same key.</param>
/// <param name="RevokedIn">The first version in which <paramref name="Revoked"/> was revoked.</param>
public sealed record RevivedCredential(string Id, string Revoked, long RevokedIn)
{
    /// <summary>"credential 'x' (revoked in version 3)", or "credential 'y' (the key of 'x', revoked in version 3)".</summary>
    public override string ToString() => Id == Revoked
        ? $"credential '{Id}' (revoked in version {RevokedIn})"
        : $"credential '{Id}' (the key of credential '{Revoked}', revoked in version {RevokedIn})";
}

/// <summary>A new policy would make revoked credentials usable again; nothing was changed.</summary>
public sealed class RevocationUndoneException(IReadOnlyList<RevivedCredential> revived) : InvalidOperationException(
    $"this policy names {string.Join(", ", revived)} as not revoked, and a revocation is permanent: it stands even after a version " +
    $"leaves the credential out. Keep `status: revoked` (or leave {(revived.Count == 1 ? "it" : "them")} out, which revives nothing) " +
    "and issue a new key where one is needed")
{
    /// <summary>The credentials the policy would have brought back, as it names them.</summary>
    public IReadOnlyList<string> Credentials { get; } = [.. revived.Select(r => r.Id)];

    /// <summary>Each credential the policy would have brought back, with the revoked one it revives.</summary>
    public IReadOnlyList<RevivedCredential> Revived { get; } = revived;
}

/// <summary>
/// What contains an incident — a suspended credential, a kill switch on a tenant, service or consumer — put in force
/// through the admin API (or by an alert) after a policy file was last loaded, is not lifted by loading that file again
/// edited: a routine restart with a file edited for something else would end the containment on every node, with only a
/// warning in one node's log to show for it. Nor by a whole policy applied through the admin API, unless its caller says
/// so (<c>lift_containment</c>).
/// </summary>
public static class PolicyContainment
{
    /// <summary>
    /// What <paramref name="current"/> contains that <paramref name="lastLoaded"/> (the file as last loaded) did not, and
    /// <paramref name="file"/> (the file now) lifts; each as "credential 'x' suspended", "service 'y' suspended (kill switch)".
    /// </summary>
    public static IReadOnlyList<string> Lifted(PolicyDocument lastLoaded, PolicyDocument current, PolicyDocument file)
        => [.. Lifts(lastLoaded, current, file).Select(l => l.ToString())];

    /// <summary>
    /// What <paramref name="current"/> contains that <paramref name="lastLoaded"/> did not (with null, everything it contains),
    /// and <paramref name="next"/> lifts: a suspended credential active again, a kill switch released on a tenant, service or
    /// consumer that <paramref name="next"/> still has. Leaving the credential or the switched-off item out lifts nothing.
    /// </summary>
    public static IReadOnlyList<ContainmentLift> Lifts(PolicyDocument? lastLoaded, PolicyDocument current, PolicyDocument next)
    {
        var lifted = new List<ContainmentLift>();
        foreach (var credential in current.Credentials.Where(c => c.Status == CredentialStatus.Suspended))
        {
            if (lastLoaded?.Credentials.FirstOrDefault(c => c.Id == credential.Id)?.Status != CredentialStatus.Suspended
                && next.Credentials.FirstOrDefault(c => c.Id == credential.Id)?.Status == CredentialStatus.Active)
            {
                lifted.Add(new ContainmentLift("credential", credential.Id));
            }
        }

        Switches("tenant", current.Tenants, lastLoaded?.Tenants ?? [], next.Tenants, t => t.Id, t => t.Suspended, lifted);
        Switches("service", current.Services, lastLoaded?.Services ?? [], next.Services, s => s.Id, s => s.Suspended, lifted);
        Switches("consumer", current.Consumers, lastLoaded?.Consumers ?? [], next.Consumers, c => c.Id, c => c.Suspended, lifted);
        return lifted;
    }

    private static void Switches<T>(string kind, IReadOnlyList<T> current, IReadOnlyList<T> lastLoaded, IReadOnlyList<T> file, Func<T, string> id,
        Func<T, bool?> suspended, List<ContainmentLift> lifted)
    {
        foreach (var engaged in current.Where(x => suspended(x) == true))
        {
            var name = id(engaged);
            if (lastLoaded.FirstOrDefault(x => id(x) == name) is not { } before || suspended(before) != true)
            {
                if (file.FirstOrDefault(x => id(x) == name) is { } after && suspended(after) != true)
                {
                    lifted.Add(new ContainmentLift(kind, name));
                }
            }
        }
    }
}

/// <summary>One containment a policy would lift.</summary>
/// <param name="Scope"><c>credential</c> (a suspended credential made active), or <c>tenant</c>, <c>service</c> or <c>consumer</c> (its kill switch released).</param>
/// <param name="Id">The credential, tenant, service or consumer.</param>
public sealed record ContainmentLift(string Scope, string Id)
{
    /// <summary>The ledger action that records the lift, as the dedicated endpoint records it: <c>credential.resumed</c> or <c>kill_switch.released</c>.</summary>
    public string Action => Scope == "credential" ? "credential.resumed" : "kill_switch.released";

    /// <summary>"credential 'x' suspended", or "service 'y' suspended (kill switch)".</summary>
    public override string ToString() => Scope == "credential" ? $"credential '{Id}' suspended" : $"{Scope} '{Id}' suspended (kill switch)";
}

/// <summary>A policy would lift containment put in force since its author's copy was taken; nothing was changed.</summary>
public sealed class ContainmentLiftedException : InvalidOperationException
{
    /// <summary>A policy file, edited since it was last loaded (<paramref name="since"/>), would lift <paramref name="lifted"/>.</summary>
    public ContainmentLiftedException(IReadOnlyList<string> lifted, long since)
        : base($"the file would lift what was put in force through the admin API or by an alert after the file was last loaded (version {since}): " +
            $"{string.Join(", ", lifted)}. Bring the file up to date first (`custos policy show --config FILE > NEW`, copy FILE's `server:` section, which " +
            "the policy does not hold, into NEW, make the edit again there and serve NEW), " +
            "or lift them through the admin API (`custos keys resume`, `custos kill-switch release`)")
        => Lifted = lifted;

    /// <summary>A whole policy applied through the admin API would lift <paramref name="lifts"/>, in force in version <paramref name="current"/>.</summary>
    public ContainmentLiftedException(IReadOnlyList<ContainmentLift> lifts, long current)
        : base($"this policy would lift containment in force in version {current}: {string.Join(", ", lifts)}. If the policy was copied " +
            "before they were put in force, read it again (`custos policy show`) and make the edit there; to lift them, use " +
            "`custos keys resume` and `custos kill-switch release`, or apply again with `lift_containment: true` " +
            "(`custos policy apply --allow-lift`), which records each lift in the ledger")
        => Lifted = [.. lifts.Select(l => l.ToString())];

    /// <summary>What the policy would have lifted.</summary>
    public IReadOnlyList<string> Lifted { get; }
}
