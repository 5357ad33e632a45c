namespace Custos.Policy;

/// <summary>One gap in a service's governance: which owner field it concerns and what is missing.</summary>
/// <param name="Field">The owners field, for example <c>owners.billing</c>.</param>
/// <param name="Message">What is missing, in words.</param>
public sealed record GovernanceGap(string Field, string Message);

/// <summary>
/// Whether a service is governed: a named policy owner, billing owner and technical control owner (and, with agent
/// consumers, an agent operator and a business sponsor), not one shared alias holding every role. Validation reports
/// the gaps; with <c>require_owners: block</c> an ungoverned service serves no traffic.
/// </summary>
public static class Governance
{
    /// <summary>The gaps of <paramref name="service"/>; empty when it is governed.</summary>
    public static IReadOnlyList<GovernanceGap> Gaps(PolicyDocument document, ServiceConfig service)
    {
        var gaps = new List<GovernanceGap>();
        var owners = service.Owners;
        (string Role, OwnerConfig? Owner)[] required = [("policy", owners.Policy), ("billing", owners.Billing), ("technical", owners.Technical)];
        foreach (var (role, owner) in required)
        {
            if (owner is null)
            {
                gaps.Add(new GovernanceGap("owners." + role, $"service '{service.Id}' has no {role} owner: missing governance"));
            }
        }

        if (HasAgents(document, service) && (owners.AgentOperator is null || owners.BusinessSponsor is null))
        {
            gaps.Add(new GovernanceGap("owners", $"service '{service.Id}' has agent consumers but no agent_operator or business_sponsor: missing governance"));
        }

        var contacts = required.Where(r => r.Owner is not null).Select(r => r.Owner!.Email ?? r.Owner.Webhook?.ToString()).ToArray();
        if (contacts.Length == 3 && contacts.Distinct(StringComparer.OrdinalIgnoreCase).Count() == 1)
        {
            gaps.Add(new GovernanceGap("owners", $"service '{service.Id}' names one shared contact for every owner role: missing governance"));
        }

        return gaps;
    }

    /// <summary>Whether <paramref name="role"/> must be filled for <paramref name="service"/>: the agent roles only where the service has agent consumers.</summary>
    public static bool Requires(PolicyDocument document, ServiceConfig service, string role)
        => role is not ("agent_operator" or "business_sponsor") || HasAgents(document, service);

    private static bool HasAgents(PolicyDocument document, ServiceConfig service)
        => document.Consumers.Any(c => c.Service == service.Id && c.Category == ConsumerCategory.Agent);
}
