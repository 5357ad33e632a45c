namespace Custos.Policy;

/// <summary>
/// A webhook address as it is shown to those who may not change it, and as logs name it: its scheme, host and port, and
/// "…" for the rest. Incoming-webhook services put their secret in the address (Slack's
/// <c>https://hooks.slack.com/services/T…/B…/secret</c> in the path, others in the query or the user info): whoever reads
/// the whole address can post to the owner's channel as the gateway.
/// </summary>
public static class WebhookAddress
{
    /// <summary>
    /// <paramref name="address"/> as <c>scheme://host[:port]/…</c>, or as <c>scheme://host[:port]</c> when it has nothing
    /// more; "(an address that does not read)" when it is not an absolute URL.
    /// </summary>
    public static string Masked(Uri address)
    {
        ArgumentNullException.ThrowIfNull(address);
        if (!address.IsAbsoluteUri)
        {
            return "(an address that does not read)";
        }

        var server = address.GetComponents(UriComponents.SchemeAndServer, UriFormat.UriEscaped);
        var more = address.AbsolutePath is not ("" or "/") || address.Query.Length > 0 || address.Fragment.Length > 0 || address.UserInfo.Length > 0;
        return more ? server + "/…" : server;
    }

    /// <summary>As <see cref="Masked(Uri)"/>, from text.</summary>
    public static string Masked(string address)
        => Uri.TryCreate(address, UriKind.Absolute, out var uri) ? Masked(uri) : "(an address that does not read)";

    /// <summary><paramref name="owners"/> with every owner's webhook masked (<see cref="Masked(Uri)"/>).</summary>
    public static ServiceOwners Masked(ServiceOwners owners)
    {
        ArgumentNullException.ThrowIfNull(owners);
        return owners with
        {
            Policy = Masked(owners.Policy),
            Billing = Masked(owners.Billing),
            Technical = Masked(owners.Technical),
            AgentOperator = Masked(owners.AgentOperator),
            BusinessSponsor = Masked(owners.BusinessSponsor),
        };
    }

    /// <summary><paramref name="document"/> with every service owner's webhook masked (<see cref="Masked(Uri)"/>).</summary>
    public static PolicyDocument Masked(PolicyDocument document)
    {
        ArgumentNullException.ThrowIfNull(document);
        return document with { Services = [.. document.Services.Select(s => s with { Owners = Masked(s.Owners) })] };
    }

    private static OwnerConfig? Masked(OwnerConfig? owner)
        => owner?.Webhook is { } webhook ? owner with { Webhook = new Uri(Masked(webhook)) } : owner;
}
