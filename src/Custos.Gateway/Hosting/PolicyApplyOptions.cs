using Custos.Policy;

namespace Custos.Gateway.Hosting;

/// <summary>How a whole policy is applied (<see cref="CustosGateway.ApplyPolicyAsync"/>).</summary>
public sealed record PolicyApplyOptions
{
    /// <summary>
    /// The version the policy was edited from: when another is in force now, nothing is applied (a copy read before a key
    /// was issued, suspended or a kill switch engaged would otherwise undo them). Optional; without it, the policy replaces
    /// whatever is in force.
    /// </summary>
    public long? BaseVersion { get; init; }

    /// <summary>
    /// Whether the policy may lift containment in force (a suspended credential active again, a kill switch released);
    /// each lift is then recorded in the ledger. Default false: such a policy is refused.
    /// </summary>
    public bool LiftContainment { get; init; }

    /// <summary>Make every check, store nothing. Default false.</summary>
    public bool DryRun { get; init; }
}

/// <summary>What applying a whole policy did.</summary>
/// <param name="Version">The version in force.</param>
/// <param name="Created">Whether it is a new version (false when the policy equals the one in force, and for a dry run).</param>
/// <param name="Lifted">The containment the policy lifts (a dry run: would lift), each recorded in the ledger when applied.</param>
public sealed record PolicyApplied(PolicyVersion Version, bool Created, IReadOnlyList<ContainmentLift> Lifted);
