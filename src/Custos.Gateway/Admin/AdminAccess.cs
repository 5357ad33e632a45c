using Custos.Policy;

namespace Custos.Gateway.Admin;

/// <summary>What an administrator can ask the admin API to do; each is granted to some roles, within their scope.</summary>
public enum AdminPermission
{
    /// <summary>Read the policy and its versions.</summary>
    ReadPolicy,

    /// <summary>Apply a whole policy document.</summary>
    ApplyPolicy,

    /// <summary>Read services, owners and consumers.</summary>
    ReadRegistry,

    /// <summary>Name a service's owners.</summary>
    SetOwners,

    /// <summary>List credentials.</summary>
    ReadCredentials,

    /// <summary>Issue, rotate, suspend, resume, revoke and expire credentials; consumer and service kill switches.</summary>
    ManageCredentials,

    /// <summary>The tenant kill switch.</summary>
    TenantKillSwitch,

    /// <summary>Ask for a consumer's access to models.</summary>
    RequestAccess,

    /// <summary>Prompt restrictions and model choice of a service.</summary>
    ManagePrompts,

    /// <summary>Budgets at every level.</summary>
    ManageBudgets,

    /// <summary>Spend against budgets.</summary>
    ReadSpend,

    /// <summary>Ledger entries and who approved a request's access.</summary>
    ReadLedger,

    /// <summary>The owner-notification outbox of every tenant.</summary>
    ReadOutbox,

    /// <summary>Alerts of the tenants and services in scope.</summary>
    ReadAlerts,

    /// <summary>Acknowledge alerts in scope (stops their escalation).</summary>
    AcknowledgeAlerts,

    /// <summary>The incident evidence pack of a subject in scope.</summary>
    ReadReports,

    /// <summary>The posture report of the whole gateway (gateway-wide admins only).</summary>
    ReadPosture,
}

/// <summary>
/// Least privilege for the admin API: which roles hold which permission, and whether a resource is within an
/// admin's scope (tenants, then services). Tested as a role × endpoint matrix.
/// </summary>
public static class AdminAccess
{
    /// <summary>True when <paramref name="role"/> holds <paramref name="permission"/>.</summary>
    public static bool Grants(AdminRole role, AdminPermission permission) => permission switch
    {
        AdminPermission.ReadPolicy or AdminPermission.ReadRegistry or AdminPermission.ReadAlerts => true,
        AdminPermission.AcknowledgeAlerts => role is AdminRole.PlatformAdmin or AdminRole.ServiceOwner or AdminRole.Finance,
        AdminPermission.ApplyPolicy or AdminPermission.TenantKillSwitch => role == AdminRole.PlatformAdmin,
        AdminPermission.ReadOutbox => role is AdminRole.PlatformAdmin or AdminRole.SecurityAuditor,
        AdminPermission.SetOwners or AdminPermission.ManageCredentials or AdminPermission.RequestAccess
            => role is AdminRole.PlatformAdmin or AdminRole.ServiceOwner,
        AdminPermission.ReadCredentials => role is AdminRole.PlatformAdmin or AdminRole.ServiceOwner or AdminRole.SecurityAuditor,
        AdminPermission.ManagePrompts => role is AdminRole.PlatformAdmin or AdminRole.PromptAdmin,
        AdminPermission.ManageBudgets => role is AdminRole.PlatformAdmin or AdminRole.Finance,
        AdminPermission.ReadSpend => role is AdminRole.PlatformAdmin or AdminRole.Finance or AdminRole.SecurityAuditor,
        AdminPermission.ReadLedger => role is AdminRole.PlatformAdmin or AdminRole.SecurityAuditor or AdminRole.ServiceOwner,
        AdminPermission.ReadReports => role is AdminRole.PlatformAdmin or AdminRole.SecurityAuditor or AdminRole.ServiceOwner,
        AdminPermission.ReadPosture => role is AdminRole.PlatformAdmin or AdminRole.SecurityAuditor,
        _ => false,
    };

    /// <summary>
    /// True when the resource of <paramref name="tenant"/> (and <paramref name="service"/>, or the whole tenant when null)
    /// is within <paramref name="admin"/>'s scope.
    /// </summary>
    public static bool InScope(AdminConfig admin, string? tenant, string? service)
    {
        if (tenant is null)
        {
            return admin.Tenants.Count == 0 && admin.Services.Count == 0; // what belongs to no tenant is for gateway-wide admins
        }

        if (admin.Tenants.Count > 0 && !admin.Tenants.Contains(tenant))
        {
            return false;
        }

        return admin.Services.Count == 0 || (service is not null && admin.Services.Contains(service));
    }

    /// <summary>
    /// The part of <paramref name="document"/> within <paramref name="admin"/>'s scope, as the admin API shows a policy: the
    /// whole for a gateway-wide admin; else the tenants of the services in scope, those services, their consumers and
    /// credentials, and of the admins only this one. Other tenants' services, owners' contacts, credentials and their keys'
    /// hashes, and the other admins, are not shown to an admin who could change none of them. Owners' webhooks are masked
    /// (<see cref="WebhookAddress"/>) unless the admin may name owners (<see cref="SeesWebhooks"/>).
    /// </summary>
    public static PolicyDocument ScopedView(AdminConfig admin, PolicyDocument document)
    {
        var view = ScopedViewCore(admin, document);
        return SeesWebhooks(admin) ? view : WebhookAddress.Masked(view);
    }

    /// <summary>
    /// True when <paramref name="admin"/> sees owners' webhook addresses whole: the roles that may name owners (and so set
    /// them), within their scope. The others see scheme and host: an address such as Slack's carries its secret.
    /// </summary>
    public static bool SeesWebhooks(AdminConfig admin) => Grants(admin.Role, AdminPermission.SetOwners);

    private static PolicyDocument ScopedViewCore(AdminConfig admin, PolicyDocument document)
    {
        if (IsGatewayWide(admin))
        {
            return document;
        }

        var services = document.Services.Where(s => InScope(admin, s.Tenant, s.Id)).ToList();
        var serviceIds = services.Select(s => s.Id).ToHashSet(StringComparer.Ordinal);
        var tenantIds = services.Select(s => s.Tenant).ToHashSet(StringComparer.Ordinal);
        var consumers = document.Consumers.Where(c => serviceIds.Contains(c.Service)).ToList();
        var consumerIds = consumers.Select(c => c.Id).ToHashSet(StringComparer.Ordinal);
        return document with
        {
            Tenants = [.. document.Tenants.Where(t => tenantIds.Contains(t.Id) || (admin.Services.Count == 0 && InScope(admin, t.Id, null)))],
            Services = services,
            Consumers = consumers,
            Credentials = [.. document.Credentials.Where(c => consumerIds.Contains(c.Consumer))],
            Admins = [.. document.Admins.Where(a => a.Id == admin.Id)],
        };
    }

    /// <summary>True when <paramref name="admin"/> is scoped to no tenant and no service.</summary>
    public static bool IsGatewayWide(AdminConfig admin) => admin.Tenants.Count == 0 && admin.Services.Count == 0;

    /// <summary>True when the admin is the policy owner of <paramref name="service"/>, or a delegate the policy names.</summary>
    public static bool MayDecideAccess(AdminConfig admin, ServiceConfig service)
        => service.Owners.Policy?.Admin == admin.Id || (service.Approvers?.Contains(admin.Id) ?? false);
}
