using Custos.Policy;

namespace Custos.Alerts;

/// <summary>The alert types the detectors raise; each is also the name that switches its detector off.</summary>
public static class AlertTypes
{
    /// <summary>A budget crossed one of its thresholds (50 and 80 per cent by default).</summary>
    public const string BudgetThreshold = "budget.threshold";

    /// <summary>A budget is used up (100 per cent, or a request refused for it).</summary>
    public const string BudgetExhausted = "budget.exhausted";

    /// <summary>A daily or monthly quota is used up.</summary>
    public const string QuotaExhausted = "quota.exhausted";

    /// <summary>Many denied or throttled requests of one consumer in a minute.</summary>
    public const string DenialSpike = "denials.spike";

    /// <summary>A denial spike whose requests were mostly refused for entitlement: a policy owner's matter.</summary>
    public const string EntitlementDenials = "entitlement.denials";

    /// <summary>A burst of failed authentication from one source (credential stuffing).</summary>
    public const string AuthFailures = "auth.failures";

    /// <summary>A consumer's requests, tokens or spend per minute far above its own moving baseline.</summary>
    public const string UsageAnomaly = "usage.anomaly";

    /// <summary>A consumer used a model for the first time.</summary>
    public const string FirstModelUse = "model.first_use";

    /// <summary>Many requests under one agent run in a short time, or growing faster than linearly.</summary>
    public const string AgentFanOut = "agent.fanout";

    /// <summary>Traffic outside the consumer's declared schedule.</summary>
    public const string OutsideSchedule = "schedule.outside";

    /// <summary>Every detector's name, as <c>alerts.disabled</c> accepts them.</summary>
    public static readonly IReadOnlyList<string> Detectors =
        [BudgetThreshold, QuotaExhausted, DenialSpike, AuthFailures, UsageAnomaly, FirstModelUse, AgentFanOut, OutsideSchedule];

    /// <summary>
    /// The owner roles an alert goes to first: spend to the billing owner, entitlement problems to the policy owner,
    /// abuse and anomalies to the technical control owner; agent alerts also to the agent operator.
    /// </summary>
    public static IReadOnlyList<string> RolesFor(string type, ConsumerCategory? category)
    {
        var first = type switch
        {
            BudgetThreshold or BudgetExhausted => OwnerRoles.Billing,
            EntitlementDenials or FirstModelUse => OwnerRoles.Policy,
            _ => OwnerRoles.Technical,
        };
        return category == ConsumerCategory.Agent ? [first, OwnerRoles.AgentOperator] : [first];
    }

    /// <summary>
    /// Who is told next when an alert is not acknowledged in time: the first of these roles not told yet (besides
    /// security, who is always told of an escalation).
    /// </summary>
    public static readonly IReadOnlyList<string> EscalationLadder =
        [OwnerRoles.Technical, OwnerRoles.Policy, OwnerRoles.BusinessSponsor, OwnerRoles.Billing, OwnerRoles.AgentOperator];
}

/// <summary>The owner roles of a service, as notifications and alerts name them.</summary>
public static class OwnerRoles
{
    /// <summary>Policy owner.</summary>
    public const string Policy = "policy";

    /// <summary>Billing owner.</summary>
    public const string Billing = "billing";

    /// <summary>Technical control owner.</summary>
    public const string Technical = "technical";

    /// <summary>Agent operator.</summary>
    public const string AgentOperator = "agent_operator";

    /// <summary>Business sponsor.</summary>
    public const string BusinessSponsor = "business_sponsor";

    /// <summary>The security contact of <c>alerts.security</c>.</summary>
    public const string Security = "security";

    /// <summary>The owner in <paramref name="role"/>, or null when that role is unfilled.</summary>
    public static OwnerConfig? Of(ServiceOwners owners, string role) => role switch
    {
        Policy => owners.Policy,
        Billing => owners.Billing,
        Technical => owners.Technical,
        AgentOperator => owners.AgentOperator,
        BusinessSponsor => owners.BusinessSponsor,
        _ => null,
    };
}
