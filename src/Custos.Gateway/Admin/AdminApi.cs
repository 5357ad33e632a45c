using System.Globalization;
using System.Reflection;
using System.Text.Json;
using Custos.ControlPlane;
using Custos.Errors;
using Custos.Gateway.Hosting;
using Custos.Gateway.Identity;
using Custos.Gateway.Pipeline;
using Custos.Identity;
using Custos.Ledger;
using Custos.Policy;
using Custos.Reports;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Http.Metadata;
using Microsoft.AspNetCore.Routing;
using Microsoft.AspNetCore.Routing.Template;
using Microsoft.Extensions.DependencyInjection;

namespace Custos.Gateway.Admin;

/// <summary>An admin API refusal: status, stable code and message. Thrown inside handlers, answered as problem details.</summary>
internal sealed class AdminProblemException(int status, string code, string title, string detail) : Exception(detail)
{
    public int Status { get; } = status;

    public string Code { get; } = code;

    public string Title { get; } = title;

    /// <summary>Members of the problem besides its code and request id (the pending request a duplicate names), or null.</summary>
    public IReadOnlyDictionary<string, object?>? Extensions { get; init; }

    public static AdminProblemException NotFound(string what, string id) => new(StatusCodes.Status404NotFound, "admin.not_found", "Not found", $"{what} '{id}' does not exist.");

    public static AdminProblemException Conflict(string detail) => new(StatusCodes.Status409Conflict, "admin.conflict", "Conflict", detail);

    public static AdminProblemException Invalid(string detail) => new(StatusCodes.Status400BadRequest, "admin.invalid_request", "Invalid request", detail);
}

/// <summary>
/// The admin API on the admin listener (<c>/admin/v1/...</c>). Admins sign in with an admin key (<c>cak_…</c>) or an
/// OIDC token of a configured identity provider; each holds a role scoped to tenants and services
/// (<see cref="AdminAccess"/>). Every change is a new policy version plus a ledger entry naming the actor, the before
/// and the after; every refused attempt is a ledger entry too. Described by <c>/admin/v1/openapi.json</c>.
/// </summary>
internal static partial class AdminApi
{
    private const string AdminItem = "custos.admin";
    private const string RequestIdItem = "custos.request_id";

    /// <summary>
    /// A query value of a number or time parameter that does not read as one (<c>?limit=x</c>, <c>?from=yesterday</c>), or
    /// a required one missing: ASP.NET Core would answer an empty 400 after this filter, without a code or request id;
    /// named here instead. The parameters are the handler's own, read as the framework reads them (invariant culture).
    /// </summary>
    private static string? UnreadableQueryValue(HttpContext http)
    {
        if (http.GetEndpoint()?.Metadata.GetMetadata<MethodInfo>() is not { } handler)
        {
            return null;
        }

        foreach (var parameter in handler.GetParameters())
        {
            var type = Nullable.GetUnderlyingType(parameter.ParameterType) ?? parameter.ParameterType;
            if (parameter.Name is not { } name || http.Request.RouteValues.ContainsKey(name)
                || !(type == typeof(int) || type == typeof(long) || type == typeof(DateTimeOffset)))
            {
                continue;
            }

            if (!http.Request.Query.TryGetValue(name, out var values))
            {
                if (type == parameter.ParameterType)
                {
                    return $"'{name}' is required.";
                }

                continue;
            }

            var value = values.ToString();
            if (type == typeof(int) || type == typeof(long))
            {
                // A limit below 1 would be read as 1 (each list caps it between 1 and its most): say so instead.
                var minimum = name == "limit" ? 1 : long.MinValue;
                var whole = type == typeof(int)
                    ? int.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var small) && small >= minimum
                    : long.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out var large) && large >= minimum;
                if (!whole)
                {
                    return $"'{name}' must be a whole number{(minimum == 1 ? " of at least 1" : "")}, not '{value}'.";
                }
            }

            if (type == typeof(DateTimeOffset) && !DateTimeOffset.TryParse(value, CultureInfo.InvariantCulture, DateTimeStyles.None, out _))
            {
                return $"'{name}' must be a time such as 2026-11-30T09:00:00Z, not '{value}'.";
            }
        }

        return null;
    }

    /// <summary>The ledger action of an admin request refused for what it asked (400, 404, 409, 412, 415, 422).</summary>
    public const string RefusedAction = "admin.request_refused";

    /// <summary>
    /// The tenant of what a refused admin request's path names (a credential, service, access request or alert that
    /// exists), so that tenant's scoped admins see the refusal in their ledger as they see the changes; null for the rest,
    /// which only gateway-wide admins see.
    /// </summary>
    private static async Task<string?> RefusedTenantAsync(CustosGateway gateway, HttpRequest request)
    {
        if (request.RouteValues.TryGetValue("id", out var value) is false || value is not string id)
        {
            return null;
        }

        var path = request.Path.Value ?? "";
        var document = gateway.Policy.Current.Document;
        try
        {
            return path.StartsWith("/admin/v1/credentials/", StringComparison.Ordinal) ? TenantOf(document, "credential:" + id)
                : path.StartsWith("/admin/v1/services/", StringComparison.Ordinal) ? TenantOf(document, "service:" + id)
                : path.StartsWith("/admin/v1/access-requests/", StringComparison.Ordinal) ? (await gateway.Store.GetAccessRequestAsync(id))?.Tenant
                : path.StartsWith("/admin/v1/alerts/", StringComparison.Ordinal) ? (await gateway.Store.GetAlertAsync(id))?.Signal.Tenant
                : null;
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            return null; // the refusal is recorded all the same, for gateway-wide admins
        }
    }

    /// <summary>The <c>Retry-After</c> of <c>admin.store_unavailable</c>, in seconds.</summary>
    private const int StoreRetryAfterSeconds = 5;

    public static void Map(IEndpointRouteBuilder app, CustosGateway gateway)
    {
        var api = app.MapGroup("/admin/v1").AddEndpointFilter(async (context, next) =>
        {
            // Outermost: what the filter below answered. A signed-in admin's request refused for what it asked (a bad body or
            // query, a conflict, a stale base version, an invalid policy, a missing resource) is on record like a refused model
            // call: by its actor, with the code and the request id. A sign-in, a permission or scope refusal and admin.busy are
            // recorded where they are decided; a store that cannot be reached cannot take the record either.
            var result = await next(context);
            if (result is ProblemHttpResult { StatusCode: >= 400 and < 500 and not (401 or 403 or 429) } refused
                && context.HttpContext.Items[AdminItem] is AdminConfig actor)
            {
                var request = context.HttpContext.Request;
                await gateway.RecordAdminAsync(actor.Id, RefusedAction,
                    Custos.Controls.RecordedText.Of(request.Method + " " + request.Path.ToString()) ?? request.Method, null,
                    refused.ProblemDetails.Extensions.TryGetValue("code", out var code) ? code as string : null,
                    $"{Custos.Controls.RecordedText.Of(refused.ProblemDetails.Detail ?? refused.ProblemDetails.Title)} (request {context.HttpContext.Items[RequestIdItem]})",
                    await RefusedTenantAsync(gateway, request));
            }

            return result;
        }).AddEndpointFilter(async (context, next) =>
        {
            var http = context.HttpContext;
            var requestId = RequestId.New(gateway.Time.GetUtcNow());
            http.Items[RequestIdItem] = requestId;
            http.Response.Headers["x-request-id"] = requestId;
            try
            {
                var (admin, failure) = await AuthenticateAsync(http, gateway);
                if (admin is null)
                {
                    // A refused sign-in is on record like a refused model call, and counts toward the source's
                    // auth.failures alert: guessing admin keys was invisible, on the more privileged of the two planes.
                    await gateway.Ledger.RecordAsync(AdminSignIn.Record(gateway.Time.GetUtcNow(), http.Connection.RemoteIpAddress?.ToString(), failure.Code,
                        failure.Presented, http.Request.Method, Custos.Controls.RecordedText.Of(http.Request.Path.ToString()) ?? "/", requestId, gateway.Policy.Current.Version));
                    return failure.Result;
                }

                http.Items[AdminItem] = admin;
                if (UnreadableQueryValue(http) is { } unreadable)
                {
                    return Problem(http, StatusCodes.Status400BadRequest, "admin.invalid_request", "Invalid request", unreadable);
                }

                return await next(context);
            }
            catch (AdminProblemException ex)
            {
                return Problem(http, ex.Status, ex.Code, ex.Title, ex.Message, ex.Extensions);
            }
            catch (RevocationUndoneException ex)
            {
                return Problem(http, StatusCodes.Status409Conflict, "admin.revocation_permanent", "A revocation is permanent", ex.Message + ".");
            }
            catch (ContainmentLiftedException ex)
            {
                return Problem(http, StatusCodes.Status409Conflict, "admin.containment_lifted", "The policy would lift containment", ex.Message + ".");
            }
            catch (PolicyConflictException ex)
            {
                // A whole policy edited from a version no longer in force: applying it would silently undo what was done since.
                return Problem(http, StatusCodes.Status412PreconditionFailed, "admin.policy_changed", "The policy changed since it was read",
                    $"The change was made to version {ex.BasedOn}, but version {ex.Latest} is in force now. Read the policy again " +
                    "(GET /admin/v1/policy, `custos policy show`), make the change there, and apply it with that version.");
            }
            catch (InvalidDataException ex)
            {
                // Stored data damaged or altered behind the gateway (a search column, a compressed record): say so, not "internal error".
                return Problem(http, StatusCodes.Status500InternalServerError, "admin.store_damaged", "Stored data is damaged or was altered", ex.Message);
            }
            catch (PolicyValidationException ex)
            {
                return Results.Problem(statusCode: StatusCodes.Status422UnprocessableEntity, title: "The change would make the policy invalid",
                    detail: string.Join(Environment.NewLine, ex.Diagnostics.Where(d => d.Severity == DiagnosticSeverity.Error).Select(d => d.Format("policy"))),
                    extensions: new Dictionary<string, object?> { ["code"] = "admin.invalid_policy", ["request_id"] = requestId });
            }
            catch (Exception ex) when (gateway.Store.IsUnavailable(ex))
            {
                // The store out of reach (PostgreSQL stopped, SQLite busy past its timeout): a retry may succeed, so say so
                // rather than answer an empty 500. The refusal is not recorded: the ledger is in the store that failed.
                http.Response.Headers.RetryAfter = StoreRetryAfterSeconds.ToString(CultureInfo.InvariantCulture);
                return Problem(http, StatusCodes.Status503ServiceUnavailable, "admin.store_unavailable", "The store is unavailable",
                    $"The store ({gateway.Store.Description}) could not be reached or is busy ({ex.GetType().Name}). Try again in " +
                    $"{StoreRetryAfterSeconds} s; GET /admin/v1/policy/versions then shows whether a change was made.");
            }
        });

        MapPolicy(api, gateway);
        MapRegistry(api, gateway);
        MapCredentials(api, gateway);
        MapAccess(api, gateway);
        MapEvidence(api, gateway);
        MapAlerts(api, gateway);
        MapInsight(api, gateway);

        // Anything else under /admin/v1 (an unknown path, an id of the wrong form): a problem with its code and request id
        // like every other answer, not routing's empty 404. A change sent without a JSON content type lands here too,
        // since its route accepts only JSON: that is a 415 naming what to send, not "there is no route".
        api.MapFallback("{**path}", (HttpContext context) => TakesJson(context)
                ? Problem(context, StatusCodes.Status415UnsupportedMediaType, "admin.unsupported_media_type", "Unsupported media type",
                    $"{context.Request.Method} {context.Request.Path} takes a JSON body: send 'Content-Type: application/json'.")
                : Problem(context, StatusCodes.Status404NotFound, "admin.not_found", "Not found",
                    $"There is no admin API route {context.Request.Method} {context.Request.Path}; the routes are listed at /admin/v1/openapi.json."))
            .ExcludeFromDescription();
    }

    /// <summary>
    /// Whether this request is not JSON and a route that accepts only JSON has its method and path (so its content type
    /// kept it out). A JSON request that lands here has a path of the wrong form, which is a 404.
    /// </summary>
    private static bool TakesJson(HttpContext context)
    {
        if (context.Request.HasJsonContentType())
        {
            return false;
        }

        var method = context.Request.Method;
        foreach (var endpoint in context.RequestServices.GetRequiredService<EndpointDataSource>().Endpoints)
        {
            if (endpoint is RouteEndpoint route && endpoint.Metadata.GetMetadata<IAcceptsMetadata>() is { ContentTypes.Count: > 0 }
                && endpoint.Metadata.GetMetadata<IHttpMethodMetadata>()?.HttpMethods.Contains(method, StringComparer.OrdinalIgnoreCase) == true
                && new TemplateMatcher(TemplateParser.Parse(route.RoutePattern.RawText!), []).TryMatch(context.Request.Path, []))
            {
                return true;
            }
        }

        return false;
    }

    private static void MapAlerts(RouteGroupBuilder api, CustosGateway gateway)
    {
        api.MapGet("/alerts", async (HttpContext context, string? status, int? limit) =>
        {
            await RequireAsync(context, gateway, AdminPermission.ReadAlerts, null, null, "alerts.read", "alerts", scoped: false);
            Custos.Alerts.AlertStatus? wanted = status is null ? null
                : Enum.TryParse<Custos.Alerts.AlertStatus>(status, ignoreCase: true, out var s) ? s
                : throw AdminProblemException.Invalid($"status '{status}' is not one of: open, acknowledged, resolved.");
            var admin = Admin(context);
            var count = Math.Clamp(limit ?? 100, 1, 10_000);

            // The scope narrows before the limit counts: a tenant's owner asking for its last 100 alerts got none once the
            // last 100 of the whole gateway were other tenants'. A scoped admin's alerts are looked for among the last 10,000.
            var alerts = await gateway.Store.ListAlertsAsync(wanted, AdminAccess.IsGatewayWide(admin) ? count : 10_000, context.RequestAborted);
            return Json(alerts.Where(a => AdminAccess.InScope(admin, a.Signal.Tenant, a.Signal.Service)).Take(count).Select(Custos.Alerts.AlertView.Of).ToArray());
        }).WithSummary("Alerts in the caller's scope, newest first; filter with status=open|acknowledged|resolved.").Produces<Custos.Alerts.AlertView[]>();

        api.MapGet("/alerts/{id}", async (HttpContext context, string id) =>
        {
            var alert = await FindAlertAsync(context, gateway, id, AdminPermission.ReadAlerts, "alerts.read");
            return Json(Custos.Alerts.AlertView.Of(alert));
        }).WithSummary("One alert: the signal, its evidence, who was told, and what was done.").Produces<Custos.Alerts.AlertView>();

        api.MapPost("/alerts/{id}/ack", async (HttpContext context, string id) =>
        {
            var hasBody = context.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpRequestBodyDetectionFeature>()?.CanHaveBody ?? context.Request.ContentLength > 0;
            var body = hasBody ? await ReadAsync<AcknowledgeBody>(context) : new AcknowledgeBody();
            CheckText(body.Note, "note");
            var alert = await FindAlertAsync(context, gateway, id, AdminPermission.AcknowledgeAlerts, "alert.acknowledged");
            return Json(Custos.Alerts.AlertView.Of(await gateway.Alerts.AcknowledgeAsync(alert, Admin(context).Id, body.Note, context.RequestAborted)));
        }).WithSummary("Acknowledges an alert: its owners have it, so it stops escalating.").Accepts<AcknowledgeBody>("application/json").Produces<Custos.Alerts.AlertView>();

        api.MapPost("/alerts/{id}/resume", async (HttpContext context, string id) =>
        {
            var body = await ReadAsync<ReasonBody>(context);
            RequireReason(body.Reason);
            var alert = await FindAlertAsync(context, gateway, id, AdminPermission.ManageCredentials, "alert.resumed");
            try
            {
                var (resolved, version) = await gateway.Alerts.ResumeAsync(alert, Admin(context).Id, body.Reason, context.RequestAborted);
                return Json(new ResumeResult(Custos.Alerts.AlertView.Of(resolved), version));
            }
            catch (InvalidOperationException ex)
            {
                throw AdminProblemException.Conflict(ex.Message);
            }
        }).WithSummary("Undoes an alert's automatic action (resumes the credential, lifts the throttle) with a reason, and resolves it.")
            .Accepts<ReasonBody>("application/json").Produces<ResumeResult>();

        api.MapPost("/alerts/{id}/resolve", async (HttpContext context, string id) =>
        {
            var body = await ReadAsync<ReasonBody>(context);
            RequireReason(body.Reason);
            var alert = await FindAlertAsync(context, gateway, id, AdminPermission.AcknowledgeAlerts, "alert.resolved");
            try
            {
                return Json(Custos.Alerts.AlertView.Of(await gateway.Alerts.ResolveAsync(alert, Admin(context).Id, body.Reason, context.RequestAborted)));
            }
            catch (InvalidOperationException ex)
            {
                throw AdminProblemException.Conflict(ex.Message);
            }
        }).WithSummary("Resolves an alert with a reason, undoing nothing: for an alert with no automatic action in force.")
            .Accepts<ReasonBody>("application/json").Produces<Custos.Alerts.AlertView>();
    }

    private static async Task<Custos.Alerts.Alert> FindAlertAsync(HttpContext context, CustosGateway gateway, string id, AdminPermission permission, string action)
    {
        var alert = await gateway.Store.GetAlertAsync(id, context.RequestAborted) ?? throw AdminProblemException.NotFound("alert", id);
        var admin = Admin(context);
        if (!AdminAccess.Grants(admin.Role, permission))
        {
            throw await DeniedAsync(context, gateway, action, "alert:" + id, alert.Signal.Tenant, $"role {PolicyNames.Of(admin.Role)} may not do this");
        }

        if (!AdminAccess.InScope(admin, alert.Signal.Tenant, alert.Signal.Service))
        {
            throw await DeniedAsync(context, gateway, action, "alert:" + id, alert.Signal.Tenant, $"{id} is outside the scope of '{admin.Id}'");
        }

        return alert;
    }

    private static void MapPolicy(RouteGroupBuilder api, CustosGateway gateway)
    {
        api.MapGet("/whoami", (HttpContext context) =>
        {
            var admin = Admin(context);
            var withKey = context.Request.Headers.Authorization.ToString().Contains("Bearer cak_", StringComparison.OrdinalIgnoreCase);
            return Json(new WhoAmI(admin.Id, PolicyNames.Of(admin.Role), admin.Tenants, admin.Services, withKey ? "admin_key" : "oidc",
                [.. Enum.GetValues<AdminPermission>().Where(p => AdminAccess.Grants(admin.Role, p)).Select(p => PolicyNames.ToSnakeCase(p.ToString()))]));
        }).WithSummary("The signed-in administrator: id, role, scope, and the permissions the role holds.").Produces<WhoAmI>();

        api.MapGet("/policy", async (HttpContext context) =>
        {
            var current = gateway.Policy.Current;
            var admin = Admin(context);
            var view = AdminAccess.IsGatewayWide(admin) ? PolicyVersionView.Of(current.Info)
                : VersionViews(admin, await gateway.Store.GetHistoryAsync(context.RequestAborted))(current.Info);
            context.Response.Headers.ETag = PolicyETag(current.Version); // for If-Match on POST /policy/versions
            return Results.Ok(new { version = view, yaml = PolicyYamlWriter.Write(AdminAccess.ScopedView(admin, current.Document)) });
        }).WithSummary("The policy in force, as YAML, with its version; an admin scoped to tenants or services sees that part of it.");

        api.MapGet("/policy/versions", async (HttpContext context) =>
        {
            var history = await gateway.Store.GetHistoryAsync(context.RequestAborted);
            return Results.Ok(history.Select(VersionViews(Admin(context), history)));
        })
            .WithSummary("Every policy version: number, hash, author, reason, time; an admin scoped to tenants or services sees the author "
                + "and reason only of versions that changed its part of the policy.").Produces<PolicyVersionView[]>();

        api.MapPost("/policy/versions", async (HttpContext context) =>
        {
            var body = await ReadAsync<ApplyPolicyRequest>(context);
            await RequireAsync(context, gateway, AdminPermission.ApplyPolicy, null, null, "policy.apply", "policy");
            RequireReason(body.Reason);
            var read = PolicyYaml.Read(body.Yaml);
            if (read.Document is not { } document)
            {
                throw new PolicyValidationException(read.Diagnostics, "policy");
            }

            foreach (var service in document.Services)
            {
                CheckOwners(service.Owners, $"services[{service.Id}].owners");
            }

            var warnings = read.Diagnostics.Select(d => d.Format("policy")).ToArray();
            var changes = PolicyDiff.Compute(gateway.Policy.Current.Document, document).Select(c => c.ToString()).ToArray();
            var options = new PolicyApplyOptions
            {
                BaseVersion = BaseVersion(context, body.BaseVersion),
                LiftContainment = body.LiftContainment,
                DryRun = body.DryRun,
            };
            var applied = await gateway.ApplyPolicyAsync(document, Admin(context).Id, body.Reason, body.Yaml, options, context.RequestAborted);
            context.Response.Headers.ETag = PolicyETag(applied.Version.Number);
            return Results.Ok(new ApplyPolicyResponse(PolicyVersionView.Of(applied.Version), applied.Created, body.DryRun, changes, warnings,
                [.. applied.Lifted.Select(l => l.ToString())]));
        }).WithSummary("Validate a whole policy document and put it in force as a new version (platform_admin).")
            .Accepts<ApplyPolicyRequest>("application/json").Produces<ApplyPolicyResponse>();
    }

    /// <summary>The policy version <paramref name="version"/> as an entity tag: <c>"7"</c>.</summary>
    private static string PolicyETag(long version) => "\"" + version.ToString(CultureInfo.InvariantCulture) + "\"";

    /// <summary>
    /// The version a whole policy was edited from: <c>base_version</c>, or the <c>If-Match</c> header (<c>"7"</c>, as
    /// <c>GET /policy</c> sends it in its ETag, or <c>7</c>); both given, they must agree.
    /// </summary>
    private static long? BaseVersion(HttpContext context, long? fromBody)
    {
        var header = context.Request.Headers.IfMatch.ToString().Trim();
        if (header.Length == 0)
        {
            return fromBody;
        }

        var tag = header.StartsWith("W/", StringComparison.Ordinal) ? header[2..] : header;
        if (!long.TryParse(tag.Trim('"'), NumberStyles.None, CultureInfo.InvariantCulture, out var version))
        {
            throw AdminProblemException.Invalid($"If-Match must name the policy version the change was made to, as GET /admin/v1/policy's ETag does (\"7\"), not {header}.");
        }

        return fromBody is { } body && body != version
            ? throw AdminProblemException.Invalid($"If-Match names version {version} and base_version {body}; send one, or the same in both.")
            : version;
    }

    /// <summary>
    /// How <paramref name="admin"/> sees the versions of <paramref name="history"/>: a gateway-wide admin whole; a scoped
    /// admin with who made a version and why only when it changed what <see cref="AdminAccess.ScopedView"/> shows of the
    /// version before (the first version always). Another tenant's credential suspension changes nothing an admin of this
    /// tenant sees, and its reason is that tenant's business; a change to providers, prices or defaults is seen, and so is
    /// its reason. Each version's scoped view is hashed at most once.
    /// </summary>
    private static Func<PolicyVersion, PolicyVersionView> VersionViews(AdminConfig admin, IReadOnlyList<PolicyVersion> history)
    {
        if (AdminAccess.IsGatewayWide(admin))
        {
            return PolicyVersionView.Of;
        }

        var ordered = history.OrderBy(v => v.Number).ToArray();
        var previous = new Dictionary<long, PolicyVersion?>();
        for (var i = 0; i < ordered.Length; i++)
        {
            previous[ordered[i].Number] = i == 0 ? null : ordered[i - 1];
        }

        var hashes = new Dictionary<long, string>();
        string ScopedHash(PolicyVersion v)
        {
            if (!hashes.TryGetValue(v.Number, out var hash))
            {
                hashes[v.Number] = hash = PolicyVersion.HashOf(AdminAccess.ScopedView(admin, v.Document));
            }

            return hash;
        }

        return v => previous.GetValueOrDefault(v.Number) is not { } before || ScopedHash(before) != ScopedHash(v)
            ? PolicyVersionView.Of(v)
            : PolicyVersionView.Withheld(v);
    }

    private static void MapRegistry(RouteGroupBuilder api, CustosGateway gateway)
    {
        api.MapGet("/services", (HttpContext context) =>
        {
            var admin = Admin(context);
            var document = gateway.Policy.Current.Document;
            return Json(document.Services.Where(s => AdminAccess.InScope(admin, s.Tenant, s.Id)).Select(s => ViewOf(document, s, admin)).ToArray());
        }).WithSummary("Services in scope, with their owners and governance gaps.").Produces<ServiceView[]>();

        api.MapGet("/services/{id}", async (HttpContext context, string id) =>
        {
            // Out of scope is a 403 naming the scope, as a change to the service is: a 404 said the service did not exist.
            var document = gateway.Policy.Current.Document;
            var service = FindService(document, id);
            await RequireAsync(context, gateway, AdminPermission.ReadRegistry, service.Tenant, service.Id, "service.read", "service:" + id);
            return Json(ViewOf(document, service, Admin(context)));
        }).WithSummary("One service, with its owners and governance gaps.").Produces<ServiceView>();

        api.MapGet("/owners", (HttpContext context) =>
        {
            var admin = Admin(context);
            var rows = new List<OwnerView>();
            foreach (var service in gateway.Policy.Current.Document.Services.Where(s => AdminAccess.InScope(admin, s.Tenant, s.Id)))
            {
                foreach (var (role, owner) in OwnerRoles(service.Owners))
                {
                    var webhook = owner?.Webhook is { } address && !AdminAccess.SeesWebhooks(admin) ? new Uri(WebhookAddress.Masked(address)) : owner?.Webhook;
                    rows.Add(new OwnerView(service.Tenant, service.Id, role, owner?.Name, owner?.Email, webhook, owner?.Admin)
                    {
                        Required = Governance.Requires(gateway.Policy.Current.Document, service, role),
                    });
                }
            }

            return Json(rows);
        }).WithSummary("Every owner role of every service in scope; unfilled roles have no name.").Produces<OwnerView[]>();

        MapServiceChange<OwnersBody>(api, gateway, "owners", AdminPermission.SetOwners, "service.owners_set", b => b.Reason,
            (s, b) => s with { Owners = CheckOwners(b.Owners, "owners") }, OwnersText)
            .WithSummary("Name a service's owners (platform_admin, service_owner).");
        // One role at a time: two admins naming different roles at once both keep theirs, where a whole owners object read,
        // changed and sent back by each would lose the first.
        api.MapPut("/services/{id}/owners/{role}", async (HttpContext context, string id, string role) =>
        {
            var body = await ReadAsync<OwnerRoleBody>(context);
            var set = OwnerRole(role);
            var service = FindService(gateway.Policy.Current.Document, id);
            await RequireAsync(context, gateway, AdminPermission.SetOwners, service.Tenant, service.Id, "service.owners_set", "service:" + id);
            CheckOwner(body.Owner, "owner");
            return await ChangeAsync(context, gateway, body.Reason, "service.owners_set", "service:" + id, doc =>
            {
                var current = FindService(doc, id);
                var next = current with { Owners = set(current.Owners, body.Owner) };
                return (doc with { Services = [.. doc.Services.Select(s => s.Id == id ? next : s)] }, OwnersText(current), OwnersText(next));
            }, param: "owner");
        }).WithSummary("Name one owner role of a service (policy, billing, technical, agent_operator, business_sponsor), leaving the others as they are.")
            .Accepts<OwnerRoleBody>("application/json").Produces<ChangeResult>();
        MapServiceChange<PromptRulesBody>(api, gateway, "prompt-rules", AdminPermission.ManagePrompts, "service.prompt_rules_set", b => b.Reason,
            (s, b) => s with { PromptRules = RequireNoNulls(b.PromptRules, "prompt_rules") }, PromptRulesText)
            .WithSummary("Replace a service's prompt restrictions (platform_admin, prompt_admin).");
        MapServiceChange<ServiceModelsBody>(api, gateway, "models", AdminPermission.ManagePrompts, "service.models_set", b => b.Reason,
            (s, b) => s with
            {
                Models = b.Models switch
                {
                    null => null,
                    // Stored, it read as "no choice": every model allowed, the opposite of what an empty list says.
                    { Count: 0 } => throw AdminProblemException.Invalid($"service '{s.Id}' names no models, so none of its consumers could use any; " +
                        "send \"models\": null to allow every model of its tenant, or engage the service's kill switch to stop it."),
                    var models => RequireNoNulls(models, "models"),
                },
            }, s => s.Models is null ? "all" : string.Join(",", s.Models))
            .WithSummary("Set a service's model choice (platform_admin, prompt_admin).");

        api.MapPut("/budgets", async (HttpContext context) =>
        {
            var body = await ReadAsync<BudgetBody>(context);
            var document = gateway.Policy.Current.Document;
            var (tenant, service) = Locate(document, body.Scope, body.Id);
            var target = body.Scope + ":" + body.Id;
            await RequireAsync(context, gateway, AdminPermission.ManageBudgets, tenant, service, "budget.set", target);
            return await ChangeAsync(context, gateway, body.Reason, "budget.set", target, doc =>
            {
                string? before = null;
                LimitsConfig Set(LimitsConfig limits)
                {
                    before = BudgetText(limits.Budget);
                    return limits with { Budget = body.Budget };
                }

                var changed = body.Scope switch
                {
                    "tenant" => doc with { Tenants = [.. doc.Tenants.Select(t => t.Id == body.Id ? t with { Limits = Set(t.Limits) } : t)] },
                    "service" => doc with { Services = [.. doc.Services.Select(s => s.Id == body.Id ? s with { Limits = Set(s.Limits) } : s)] },
                    _ => doc with { Consumers = [.. doc.Consumers.Select(c => c.Id == body.Id ? c with { Limits = Set(c.Limits) } : c)] },
                };
                return (changed, before, BudgetText(body.Budget));
            }, param: "budget");
        }).WithSummary("Set or remove the budget of a tenant, service or consumer (platform_admin, finance).").Accepts<BudgetBody>("application/json").Produces<ChangeResult>();

        api.MapGet("/consumers", (HttpContext context) =>
        {
            var admin = Admin(context);
            var snapshot = gateway.Policy.Current;
            var now = gateway.Time.GetUtcNow();
            return Json(snapshot.Document.Consumers
                .Select(c => (Config: c, Entry: snapshot.Consumers[c.Id]))
                .Where(c => AdminAccess.InScope(admin, c.Entry.Service.Tenant.Id, c.Entry.Service.Id))
                .Select(c => (c.Config, c.Entry, By: SuspendedBy(c.Entry.Refusal)))
                .Select(c => new ConsumerView(c.Config.Id, c.Config.Service, c.Entry.Service.Tenant.Id, c.Entry.CategoryName, c.By is not null,
                    c.Entry.Refusal is null ? [.. c.Entry.ModelsAt(now).Select(m => m.Name)] : [], snapshot.Document.Credentials.Count(k => k.Consumer == c.Config.Id),
                    [.. c.Entry.Entitlements.Select(e => new ConsumerEntitlement([.. e.Models.Select(m => m.Name).Order(StringComparer.Ordinal)], e.ApprovedBy, e.Ticket,
                        e.ValidFrom, e.ValidUntil, e.Source, e.IsValidAt(now)))])
                { SuspendedBy = c.By })
                .ToArray());
        }).WithSummary("Consumers in scope: category, kill switch (its own, its service's or its tenant's), models usable now, entitlements with their approvers, number of credentials.")
            .Produces<ConsumerView[]>();

        api.MapGet("/kill-switches", async (HttpContext context) =>
        {
            var admin = Admin(context);
            var current = gateway.Policy.Current;
            var document = current.Document;
            var engaged = document.Tenants.Where(t => t.Suspended == true && AdminAccess.InScope(admin, t.Id, null)).Select(t => (Scope: "tenant", t.Id))
                .Concat(document.Services.Where(s => s.Suspended == true && AdminAccess.InScope(admin, s.Tenant, s.Id)).Select(s => (Scope: "service", s.Id)))
                .Concat(document.Consumers.Where(c => c.Suspended == true).Select(c => (Scope: "consumer", c.Id))
                    .Where(c => Locate(document, "consumer", c.Id) is var (tenant, service) && AdminAccess.InScope(admin, tenant, service)))
                .ToArray();
            if (engaged.Length == 0)
            {
                return Json(Array.Empty<KillSwitchView>());
            }

            // Who engaged each and why: the oldest version of the run of versions, up to the one in force, in which it is engaged.
            var history = await gateway.Store.GetHistoryAsync(context.RequestAborted);
            var inForce = history.Count - 1;
            while (inForce > 0 && history[inForce].Number > current.Version)
            {
                inForce--;
            }

            var views = VersionViews(admin, history);
            return Json(engaged.Select(k =>
            {
                var since = inForce;
                while (since > 0 && IsSwitchedOff(history[since - 1].Document, k.Scope, k.Id))
                {
                    since--;
                }

                var version = views(history[since]);
                return new KillSwitchView(k.Scope, k.Id, version.CreatedAt, version.Version, version.Author, version.Reason);
            }).ToArray());
        }).WithSummary("Kill switches engaged now, in scope: since when, by whom, why, and the policy version that engaged each.").Produces<KillSwitchView[]>();

        api.MapPost("/kill-switches", async (HttpContext context) =>
        {
            var body = await ReadAsync<KillSwitchBody>(context);
            var document = gateway.Policy.Current.Document;
            var (tenant, service) = Locate(document, body.Scope, body.Id);
            var action = body.Engaged ? "kill_switch.engaged" : "kill_switch.released";
            var target = body.Scope + ":" + body.Id;
            await RequireAsync(context, gateway, body.Scope == "tenant" ? AdminPermission.TenantKillSwitch : AdminPermission.ManageCredentials, tenant, service,
                action, target);
            bool? flag = body.Engaged ? true : null;
            var result = await ChangeAsync(context, gateway, body.Reason, action, target, doc =>
            {
                var changed = body.Scope switch
                {
                    "tenant" => doc with { Tenants = [.. doc.Tenants.Select(t => t.Id == body.Id ? t with { Suspended = flag } : t)] },
                    "service" => doc with { Services = [.. doc.Services.Select(s => s.Id == body.Id ? s with { Suspended = flag } : s)] },
                    _ => doc with { Consumers = [.. doc.Consumers.Select(c => c.Id == body.Id ? c with { Suspended = flag } : c)] },
                };
                var was = IsSwitchedOff(doc, body.Scope, body.Id);
                if (was == body.Engaged)
                {
                    // Nothing would change: no version, no "engaged -> engaged" entry, no owner told of a change that is none.
                    throw AdminProblemException.Conflict($"the kill switch of {body.Scope} '{body.Id}' is already {(was ? "engaged" : "released")}.");
                }

                return (changed, was ? "engaged" : "released", body.Engaged ? "engaged" : "released");
            }, notify: doc => body.Scope == "tenant" ? doc.Services.Where(s => s.Tenant == body.Id) : [FindService(doc, service!)]);
            return result;
        }).WithSummary("Engage or release the kill switch of a consumer, service (platform_admin, service_owner) or tenant (platform_admin).")
            .Accepts<KillSwitchBody>("application/json").Produces<ChangeResult>();

        api.MapGet("/store", (HttpContext context) => Json(StoreOf(gateway)))
            .WithSummary("The store: where it is, and how new ledger records are stored (zstd or json).").Produces<StoreView>();

        api.MapPut("/store/record-format", async (HttpContext context) =>
        {
            var body = await ReadAsync<RecordFormatBody>(context);
            const string action = "store.record_format_changed", target = "store";
            await RequireAsync(context, gateway, AdminPermission.ApplyPolicy, null, null, action, target);
            RequireReason(body.Reason);
            if (!IRecordFormatSetting.IsFormat(body.Format))
            {
                throw AdminProblemException.Invalid($"'format' is '{body.Format}'; it is '{IRecordFormatSetting.Compressed}' or '{IRecordFormatSetting.Json}'.");
            }

            if (gateway.Store is not IRecordFormatSetting setting)
            {
                throw new AdminProblemException(StatusCodes.Status409Conflict, "admin.record_format_fixed", "The store's record format is fixed",
                    $"{gateway.Store.Description} always stores ledger records compressed; the setting is the PostgreSQL store's.");
            }

            var before = await setting.SetRecordFormatAsync(body.Format, context.RequestAborted);
            await gateway.RecordAdminAsync(Admin(context).Id, action, target, before, body.Format, body.Reason);
            return Json(new ChangeResult(action, target, before, body.Format, gateway.Policy.Current.Version, 0));
        }).WithSummary("How every node stores new ledger records (platform_admin; the PostgreSQL store): zstd once no node of an earlier version is left, or json.")
            .Accepts<RecordFormatBody>("application/json").Produces<ChangeResult>();
    }

    /// <summary>
    /// <c>PUT /services/{id}/PART</c>: one part of a service changed by <paramref name="apply"/>, within the admin's permission
    /// and scope, recorded with the part <paramref name="describe"/>d before and after.
    /// </summary>
    private static RouteHandlerBuilder MapServiceChange<TBody>(RouteGroupBuilder api, CustosGateway gateway, string part, AdminPermission permission,
        string action, Func<TBody, string> reasonOf, Func<ServiceConfig, TBody, ServiceConfig> apply, Func<ServiceConfig, string> describe)
        where TBody : notnull
        => api.MapPut("/services/{id}/" + part, async (HttpContext context, string id) =>
        {
            var body = await ReadAsync<TBody>(context);
            var service = FindService(gateway.Policy.Current.Document, id);
            await RequireAsync(context, gateway, permission, service.Tenant, service.Id, action, "service:" + id);
            return await ChangeAsync(context, gateway, reasonOf(body), action, "service:" + id, doc =>
            {
                var current = FindService(doc, id);
                var next = apply(current, body);
                return (doc with { Services = [.. doc.Services.Select(s => s.Id == id ? next : s)] }, describe(current), describe(next));
            }, param: part.Replace('-', '_'));
        }).Accepts<TBody>("application/json").Produces<ChangeResult>();

    private static void MapCredentials(RouteGroupBuilder api, CustosGateway gateway)
    {
        api.MapGet("/credentials", async (HttpContext context, string? consumer, string? service) =>
        {
            await RequireAsync(context, gateway, AdminPermission.ReadCredentials, null, null, "credential.list", "credentials", scoped: false);
            await RequireFiltersInScopeAsync(context, gateway, "credential.list", null, service, consumer);
            var admin = Admin(context);
            var snapshot = gateway.Policy.Current;
            var lastUsed = await gateway.Store.GetCredentialLastUsedAsync(context.RequestAborted);
            var now = gateway.Time.GetUtcNow();
            return Json(snapshot.Document.Credentials
                .Select(c => ViewOf(snapshot, c, lastUsed, now))
                .Where(v => AdminAccess.InScope(admin, v.Tenant, v.Service))
                .Where(v => (consumer is null || v.Consumer == consumer) && (service is null || v.Service == service))
                .ToArray());
        }).WithSummary("Credentials in scope: prefix, status, created, last used, expiry. Never a key.").Produces<CredentialView[]>();

        api.MapPost("/credentials", async (HttpContext context) =>
        {
            var body = await ReadAsync<IssueCredentialBody>(context);
            var document = gateway.Policy.Current.Document;
            var (tenant, service) = Locate(document, "consumer", body.Consumer);
            await RequireAsync(context, gateway, AdminPermission.ManageCredentials, tenant, service, "credential.issued", "consumer:" + body.Consumer);
            var now = gateway.Time.GetUtcNow();
            if (body.ExpiresAt is { } expires && expires <= now)
            {
                throw AdminProblemException.Invalid("'expires_at' is in the past.");
            }

            var key = ApiKey.Generate(ApiKeyKind.Consumer);
            var credential = NewCredential(body.Consumer, key, now, body.ExpiresAt);
            var change = await ChangeCoreAsync(context, gateway, body.Reason, "credential.issued", "credential:" + credential.Id,
                doc => (doc with { Credentials = [.. doc.Credentials, credential] }, null, "active"), notify: doc => [FindService(doc, service!)]);
            var snapshot = gateway.Policy.Current;
            return Json(new IssuedCredential(ViewOf(snapshot, credential, new Dictionary<string, DateTimeOffset>(), now), key, change.PolicyVersion,
                "This key is shown once. Custos keeps only its SHA-256; store it now."), StatusCodes.Status201Created);
        }).WithSummary("Issue an API key for a consumer; the key is in this answer only.").Accepts<IssueCredentialBody>("application/json")
            .Produces<IssuedCredential>(StatusCodes.Status201Created);

        api.MapPost("/credentials/{id}/rotate", async (HttpContext context, string id) =>
        {
            var body = await ReadAsync<RotateCredentialBody>(context);
            var old = FindCredential(gateway.Policy.Current.Document, id);
            var (tenant, service) = Locate(gateway.Policy.Current.Document, "consumer", old.Consumer);
            await RequireAsync(context, gateway, AdminPermission.ManageCredentials, tenant, service, "credential.rotated", "credential:" + id);
            if (old.KeySha256 is null)
            {
                throw AdminProblemException.Conflict($"credential '{id}' is a workload identity; its tokens rotate at their issuer.");
            }

            var overlap = body.OverlapSeconds ?? 86_400;
            if (overlap is < 0 or > 90L * 86_400)
            {
                throw AdminProblemException.Invalid("'overlap_seconds' must be between 0 and 7776000 (90 days).");
            }

            var now = gateway.Time.GetUtcNow();
            var key = ApiKey.Generate(ApiKeyKind.Consumer);
            var replacement = NewCredential(old.Consumer, key, now, old.ExpiresAt is { } e && e > now ? e : null);
            var oldEnds = now.AddSeconds(overlap);
            if (old.ExpiresAt is { } already && already < oldEnds)
            {
                oldEnds = already;
            }

            var change = await ChangeCoreAsync(context, gateway, body.Reason, "credential.rotated", "credential:" + id, doc =>
            {
                // Judged on the document being changed, under the policy's lock: a key suspended, revoked or expired since
                // (or by a rotation a moment ago, with no overlap) gets no working replacement, nor a "keeps working" promise.
                var current = FindCredential(doc, id);
                var refusal = current.Status switch
                {
                    CredentialStatus.Revoked => $"credential '{id}' is revoked; issue a new one instead.",
                    CredentialStatus.Suspended => $"credential '{id}' is suspended; resume it first, or revoke it and issue a new one.",
                    _ when current.ExpiresAt is { } ended && ended <= now => $"credential '{id}' has expired; issue a new one instead.",
                    // A second rotation of a key in its overlap made a second replacement, which inherited the overlap's end as
                    // its own expiry and stopped working a day later.
                    _ when current.ReplacedBy is { } by && doc.Credentials.Any(c => c.Id == by)
                        => $"credential '{id}' was rotated already: '{by}' replaced it, and its key works until "
                            + $"{(current.ExpiresAt is { } ends ? LedgerTime.Format(ends) : "it is expired")}. Rotate '{by}' instead, or expire '{id}' to end its overlap now.",
                    _ => null,
                };
                if (refusal is not null)
                {
                    throw AdminProblemException.Conflict(refusal);
                }

                return (doc with
                {
                    Credentials = [.. doc.Credentials.Select(c => c.Id == id ? c with { ExpiresAt = oldEnds, ReplacedBy = replacement.Id } : c), replacement],
                }, StatusText(current, now), $"replaced by {replacement.Id}; old key expires at {LedgerTime.Format(oldEnds)}");
            }, notify: doc => [FindService(doc, service!)]);
            return Json(new IssuedCredential(ViewOf(gateway.Policy.Current, replacement, new Dictionary<string, DateTimeOffset>(), now), key,
                change.PolicyVersion, oldEnds <= now
                    ? $"This key is shown once. The old key ({old.Prefix ?? id}) stopped working at {LedgerTime.Format(oldEnds)}: it is refused as expired from now on."
                    : $"This key is shown once. The old key ({old.Prefix ?? id}) keeps working until {LedgerTime.Format(oldEnds)}."),
                StatusCodes.Status201Created);
        }).WithSummary("Replace a key: a new key now, the old one working for an overlap window (default one day).")
            .Accepts<RotateCredentialBody>("application/json").Produces<IssuedCredential>(StatusCodes.Status201Created);

        MapLifecycle(api, gateway, "suspend", "credential.suspended", (c, now) => c.Status switch
        {
            CredentialStatus.Active => c with { Status = CredentialStatus.Suspended },
            CredentialStatus.Suspended => throw AdminProblemException.Conflict($"credential '{c.Id}' is already suspended."),
            _ => throw AdminProblemException.Conflict($"credential '{c.Id}' is revoked."),
        });
        MapLifecycle(api, gateway, "resume", "credential.resumed", (c, now) => c.Status switch
        {
            CredentialStatus.Suspended => c with { Status = CredentialStatus.Active },
            CredentialStatus.Active => throw AdminProblemException.Conflict($"credential '{c.Id}' is not suspended."),
            _ => throw AdminProblemException.Conflict($"credential '{c.Id}' is revoked, permanently; issue a new one."),
        });
        MapLifecycle(api, gateway, "revoke", "credential.revoked", (c, now) => c.Status == CredentialStatus.Revoked
            ? throw AdminProblemException.Conflict($"credential '{c.Id}' is already revoked.")
            : c with { Status = CredentialStatus.Revoked });
        MapLifecycle(api, gateway, "expire", "credential.expired", (c, now) => c.Status == CredentialStatus.Revoked
            ? throw AdminProblemException.Conflict($"credential '{c.Id}' is revoked; it works no more than an expired one.")
            : c.ExpiresAt is { } e && e <= now
            ? throw AdminProblemException.Conflict($"credential '{c.Id}' has already expired.")
            : c with { ExpiresAt = now });
    }

    private static void MapLifecycle(RouteGroupBuilder api, CustosGateway gateway, string verb, string action, Func<CredentialConfig, DateTimeOffset, CredentialConfig> apply)
    {
        api.MapPost("/credentials/{id}/" + verb, async (HttpContext context, string id) =>
        {
            var body = await ReadAsync<ReasonBody>(context);
            var credential = FindCredential(gateway.Policy.Current.Document, id);
            var (tenant, service) = Locate(gateway.Policy.Current.Document, "consumer", credential.Consumer);
            await RequireAsync(context, gateway, AdminPermission.ManageCredentials, tenant, service, action, "credential:" + id);
            var now = gateway.Time.GetUtcNow();
            return await ChangeAsync(context, gateway, body.Reason, action, "credential:" + id, doc =>
            {
                var current = FindCredential(doc, id);
                var next = apply(current, now);
                return (doc with { Credentials = [.. doc.Credentials.Select(c => c.Id == id ? next : c)] }, StatusText(current, now), StatusText(next, now));
            }, notify: doc => [FindService(doc, service!)]);
        }).WithSummary($"{char.ToUpperInvariant(verb[0])}{verb[1..]} a credential, with a reason; takes effect on the next request.")
            .Accepts<ReasonBody>("application/json").Produces<ChangeResult>();
    }

    private static void MapAccess(RouteGroupBuilder api, CustosGateway gateway)
    {
        api.MapPost("/access-requests", async (HttpContext context) =>
        {
            var body = await ReadAsync<AccessRequestBody>(context);
            RequireNoNulls(body.Models, "models");
            var snapshot = gateway.Policy.Current;
            var (tenant, service) = Locate(snapshot.Document, "consumer", body.Consumer);
            await RequireAsync(context, gateway, AdminPermission.RequestAccess, tenant, service, "access.requested", "consumer:" + body.Consumer);
            if (body.ValidUntil is { } until && until <= gateway.Time.GetUtcNow())
            {
                throw AdminProblemException.Invalid("'valid_until' is in the past."); // access that could never be granted
            }

            if (body.Models.Count == 0)
            {
                throw AdminProblemException.Invalid("'models' must name at least one model.");
            }

            var tenantEntry = snapshot.Services[service!].Tenant;
            if (body.Models.FirstOrDefault(m => !tenantEntry.Models.ContainsKey(m)) is { } unknown)
            {
                throw AdminProblemException.Invalid($"model '{unknown}' is not offered by tenant '{tenant}'.");
            }

            RequireReason(body.Justification, "justification");
            RefuseUnapprovableAccess(snapshot, body, gateway.Time.GetUtcNow());
            var admin = Admin(context);

            // Checked and created one at a time on this node (as decisions are), so two identical requests sent at once
            // do not both pass the check for a pending one.
            AccessRequest created;
            await gateway.AccessDecisions.WaitAsync(context.RequestAborted);
            try
            {
                var now = gateway.Time.GetUtcNow();
                RefuseHeldAccess(snapshot, body, now);
                await RefuseDuplicateAsync(gateway, tenantEntry, body, service!, context.RequestAborted);
                created = await gateway.Store.CreateAccessRequestAsync(new AccessRequest
                {
                    Id = "",
                    Tenant = tenant,
                    Service = service!,
                    Consumer = body.Consumer,
                    Models = body.Models,
                    ValidUntil = body.ValidUntil,
                    Justification = body.Justification,
                    RequestedBy = admin.Id,
                    RequestedAt = now,
                }, context.RequestAborted);
            }
            finally
            {
                gateway.AccessDecisions.Release();
            }

            await gateway.RecordAdminAsync(admin.Id, "access.requested", "access_request:" + created.Id, null,
                $"pending: {body.Consumer} -> {string.Join(",", body.Models)}", body.Justification, tenant);
            await gateway.Notifier.NotifyAsync(FindService(snapshot.Document, service!), "policy", "access.requested", admin.Id, "access_request:" + created.Id,
                body.Justification, new Dictionary<string, string?> { ["consumer"] = body.Consumer, ["models"] = string.Join(",", body.Models) }, context.RequestAborted);
            return Json(created, StatusCodes.Status201Created);
        }).WithSummary("Ask for a consumer's access to models; the service's policy owner (or a named delegate) decides.")
            .Accepts<AccessRequestBody>("application/json").Produces<AccessRequest>(StatusCodes.Status201Created);

        api.MapGet("/access-requests", async (HttpContext context, string? status) =>
        {
            AccessRequestStatus? filter = status is null ? null
                : Enum.TryParse<AccessRequestStatus>(status, ignoreCase: true, out var s) ? s
                : throw AdminProblemException.Invalid("'status' must be pending, approved or rejected.");
            var admin = Admin(context);
            var all = await gateway.Store.ListAccessRequestsAsync(filter, context.RequestAborted);
            return Json(all.Where(r => AdminAccess.InScope(admin, r.Tenant, r.Service)).ToArray());
        }).WithSummary("Access requests in scope, optionally of one status.").Produces<AccessRequest[]>();

        api.MapPost("/access-requests/{id}/approve", (HttpContext context, string id) => DecideAsync(context, gateway, id, approve: true))
            .WithSummary("Approve: the entitlement takes effect as a new policy version naming the approver (policy owner or named delegate).")
            .Accepts<ReasonBody>("application/json").Produces<AccessRequest>();
        api.MapPost("/access-requests/{id}/reject", (HttpContext context, string id) => DecideAsync(context, gateway, id, approve: false))
            .WithSummary("Reject: nothing changes but the request's status.").Accepts<ReasonBody>("application/json").Produces<AccessRequest>();
    }

    /// <summary>
    /// Refuses (409 <c>admin.access_already_held</c>) a request for a model the consumer may already use now, until at least
    /// as late as the request asks: approving it would add an entitlement that changes nothing. Asking again with a later
    /// <c>valid_until</c> (or none) than the held entitlement's extends it, and is accepted.
    /// </summary>
    private static void RefuseHeldAccess(PolicySnapshot snapshot, AccessRequestBody body, DateTimeOffset now)
    {
        var consumer = snapshot.Consumers[body.Consumer];
        var held = new List<string>();
        var seen = new HashSet<ModelRoute>();
        foreach (var name in body.Models)
        {
            var route = consumer.Service.Tenant.Models[name];
            if (!seen.Add(route))
            {
                continue; // a model named twice, or by its name and an alias
            }

            var by = consumer.Entitlements.FirstOrDefault(e => e.Models.Contains(route) && e.IsValidAt(now)
                && (e.ValidUntil is null || (body.ValidUntil is { } until && e.ValidUntil >= until)));
            if (by is not null)
            {
                held.Add($"{route.Name} ({by.Detail}{(by.ValidUntil is { } end ? ", until " + LedgerTime.Format(end) : "")})");
            }
        }

        if (held.Count > 0)
        {
            throw new AdminProblemException(StatusCodes.Status409Conflict, "admin.access_already_held", "The consumer already has this access",
                $"consumer '{body.Consumer}' already holds {string.Join(", ", held)} under policy version {snapshot.Version}. " +
                "Ask only for the models it lacks; to extend an entitlement that ends, ask with a later 'valid_until'.")
            {
                Extensions = new Dictionary<string, object?> { ["policy_version"] = snapshot.Version },
            };
        }
    }

    /// <summary>
    /// <paramref name="doc"/> with an entitlement to <paramref name="models"/> added to <paramref name="consumer"/>, as an
    /// approval adds it: approved by <paramref name="approver"/>, the access request's id as its ticket, valid from
    /// <paramref name="from"/>. A consumer that inherited its category's models keeps them: they become its own, beside the
    /// approved ones.
    /// </summary>
    private static PolicyDocument WithApprovedAccess(PolicyDocument doc, PolicySnapshot snapshot, ConsumerConfig consumer, IReadOnlyList<string> models,
        string approver, string ticket, DateTimeOffset from, DateTimeOffset? until)
    {
        var inherits = consumer.Models.Count == 0 && consumer.Entitlements.Count == 0;
        var entitlement = new EntitlementConfig { Models = [.. models], ApprovedBy = approver, Ticket = ticket, ValidFrom = from, ValidUntil = until };
        var next = consumer with
        {
            Models = inherits ? [.. snapshot.Consumers[consumer.Id].ModelsAt(from).Select(m => m.Name)] : consumer.Models,
            Entitlements = [.. consumer.Entitlements, entitlement],
        };
        return doc with { Consumers = [.. doc.Consumers.Select(c => c.Id == consumer.Id ? next : c)] };
    }

    /// <summary>
    /// Refuses (422 <c>admin.invalid_policy</c>, naming each error) a request whose approval would make the policy in force
    /// invalid, such as a model outside the defaults of the consumer's category, which a consumer may only narrow: no
    /// approver could ever grant it, so it is refused now rather than left pending until its approval fails.
    /// </summary>
    private static void RefuseUnapprovableAccess(PolicySnapshot snapshot, AccessRequestBody body, DateTimeOffset now)
    {
        var consumer = snapshot.Document.Consumers.First(c => c.Id == body.Consumer);
        var approved = WithApprovedAccess(snapshot.Document, snapshot, consumer, body.Models, "the policy owner", "the access request", now, body.ValidUntil);
        var read = PolicyYaml.Read(PolicyYamlWriter.Write(approved));
        if (!read.IsValid)
        {
            throw InvalidChange(read.Diagnostics, "models", "The access could never be approved",
                "approving this request would make the policy invalid, so it is not created:");
        }
    }

    /// <summary>
    /// Refuses (409 <c>admin.access_request_pending</c>) a request that asks for a model a pending request of the same
    /// consumer already asks for, naming that request: it is the one to decide (or reject, then ask again).
    /// </summary>
    private static async Task RefuseDuplicateAsync(CustosGateway gateway, TenantEntry tenant, AccessRequestBody body, string service,
        CancellationToken cancellationToken)
    {
        string Canonical(string name) => tenant.Models.TryGetValue(name, out var route) ? route.Name : name;
        var asked = body.Models.Select(Canonical).ToHashSet(StringComparer.Ordinal);
        foreach (var pending in await gateway.Store.ListAccessRequestsAsync(AccessRequestStatus.Pending, cancellationToken))
        {
            if (pending.Consumer == body.Consumer && pending.Service == service && pending.Tenant == tenant.Id
                && pending.Models.Select(Canonical).FirstOrDefault(asked.Contains) is { } model)
            {
                throw new AdminProblemException(StatusCodes.Status409Conflict, "admin.access_request_pending", "An access request is pending already",
                    $"access request '{pending.Id}' for consumer '{body.Consumer}' ({string.Join(",", pending.Models)}), asked by {pending.RequestedBy} " +
                    $"at {LedgerTime.Format(pending.RequestedAt)}, is pending and asks for {model} already: ask its service's policy owner to decide it, " +
                    "or reject it and ask again.")
                {
                    Extensions = new Dictionary<string, object?> { ["access_request"] = pending.Id },
                };
            }
        }
    }

    private static async Task<IResult> DecideAsync(HttpContext context, CustosGateway gateway, string id, bool approve)
    {
        var body = await ReadAsync<ReasonBody>(context);
        var request = await gateway.Store.GetAccessRequestAsync(id, context.RequestAborted) ?? throw AdminProblemException.NotFound("access request", id);
        var admin = Admin(context);
        var action = approve ? "access.approved" : "access.rejected";
        var target = "access_request:" + id;
        var service = FindService(gateway.Policy.Current.Document, request.Service);
        if (!AdminAccess.InScope(admin, request.Tenant, request.Service))
        {
            // Named as the service's policy owner or approver or not: a decision is made within one's scope, like every change.
            throw await DeniedAsync(context, gateway, action, target, request.Tenant, $"{target} (service '{request.Service}') is outside the scope of '{admin.Id}'");
        }

        if (!AdminAccess.MayDecideAccess(admin, service))
        {
            throw await DeniedAsync(context, gateway, action, target, request.Tenant,
                $"only the policy owner of service '{service.Id}' ({service.Owners.Policy?.Admin ?? "no admin named"}) or a delegate the policy names may decide");
        }

        if (request.RequestedBy == admin.Id)
        {
            throw await DeniedAsync(context, gateway, action, target, request.Tenant, "the requester cannot decide their own request (separation of duties)");
        }

        RequireReason(body.Reason);

        // One decision at a time on this node, and the request read again once it is this one's turn: approvals racing each
        // other, or a rejection, must not each add an entitlement, or leave one behind a request that says rejected.
        await gateway.AccessDecisions.WaitAsync(context.RequestAborted);
        try
        {
            request = await gateway.Store.GetAccessRequestAsync(id, context.RequestAborted) ?? throw AdminProblemException.NotFound("access request", id);
            if (request.Status != AccessRequestStatus.Pending)
            {
                throw AdminProblemException.Conflict($"access request '{id}' was already {request.Status.ToString().ToLowerInvariant()} by {request.DecidedBy}.");
            }

            var now = gateway.Time.GetUtcNow();
            if (!approve)
            {
                if (!await gateway.Store.DecideAccessRequestAsync(id, AccessRequestStatus.Rejected, admin.Id, now, body.Reason, null, CancellationToken.None))
                {
                    throw AdminProblemException.Conflict($"access request '{id}' was decided by someone else meanwhile.");
                }

                await gateway.RecordAdminAsync(admin.Id, action, target, "pending", "rejected", body.Reason, request.Tenant);
                return Json(await gateway.Store.GetAccessRequestAsync(id, CancellationToken.None));
            }

            if (request.ValidUntil is { } until && until <= now)
            {
                throw AdminProblemException.Conflict($"access request '{id}' asked for access until {LedgerTime.Format(until)}, which has passed; " +
                    "reject it, and ask again with a later --valid-until.");
            }

            var snapshot = gateway.Policy.Current;
            var result = await ChangeCoreAsync(context, gateway, $"access request {id} approved: {body.Reason}", "access.approved", target, doc =>
            {
                var consumer = doc.Consumers.FirstOrDefault(c => c.Id == request.Consumer) ?? throw AdminProblemException.NotFound("consumer", request.Consumer);
                if (consumer.Entitlements.Any(e => e.Ticket == id))
                {
                    // Approved on another node a moment ago: the policy already holds its entitlement.
                    throw AdminProblemException.Conflict($"access request '{id}' was decided by someone else meanwhile.");
                }

                return (WithApprovedAccess(doc, snapshot, consumer, request.Models, admin.Id, id, now, request.ValidUntil), "pending",
                    $"approved: {request.Consumer} -> {string.Join(",", request.Models)}");
            }, tenant: request.Tenant); // the request's tenant: its auditors see who approved what

            if (!await gateway.Store.DecideAccessRequestAsync(id, AccessRequestStatus.Approved, admin.Id, now, body.Reason, result.PolicyVersion, CancellationToken.None))
            {
                // Rejected on another node while the entitlement went in: take it out again, and say so in the ledger.
                await ChangeCoreAsync(context, gateway, $"access request {id} was decided elsewhere meanwhile", "access.approval_withdrawn", target, doc =>
                    (doc with
                    {
                        Consumers = [.. doc.Consumers.Select(c => c.Id == request.Consumer
                            ? c with { Entitlements = [.. c.Entitlements.Where(e => e.Ticket != id)] }
                            : c)],
                    }, "approved", "withdrawn"), tenant: request.Tenant);
                throw AdminProblemException.Conflict($"access request '{id}' was decided by someone else meanwhile; the approval was withdrawn.");
            }
        }
        finally
        {
            gateway.AccessDecisions.Release();
        }

        return Json(await gateway.Store.GetAccessRequestAsync(id, CancellationToken.None));
    }

    private static void MapEvidence(RouteGroupBuilder api, CustosGateway gateway)
    {
        api.MapGet("/ledger", async (HttpContext context, string? kind, string? tenant, string? service, string? consumer, string? decision, string? model,
            string? request_id, DateTimeOffset? from, DateTimeOffset? to, int? limit) =>
        {
            await RequireAsync(context, gateway, AdminPermission.ReadLedger, null, null, "ledger.read", "ledger", scoped: false);
            OneOf("kind", kind, LedgerKinds);
            OneOf("decision", decision, LedgerDecisions);
            if (from is { } start && to is { } end)
            {
                RequireWindow(start, end);
            }

            await RequireFiltersInScopeAsync(context, gateway, "ledger.read", tenant, service, consumer);
            if (request_id is not null && !AdminAccess.IsGatewayWide(Admin(context)))
            {
                (await EntryInScopeAsync(context, gateway, request_id))?.Dispose();
            }
            var admin = Admin(context);
            var query = new LedgerQuery
            {
                Kind = kind is "any" ? null : kind ?? "request",
                Tenant = tenant,
                Service = service,
                Consumer = consumer,
                Decision = decision,
                Model = model,
                RequestId = request_id,
                From = from,
                To = to,
                Limit = Math.Clamp(limit ?? 100, 1, 10_000),
            };
            if (AdminAccess.IsGatewayWide(admin))
            {
                var entries = new List<JsonElement>();
                await foreach (var stored in gateway.Store.QueryAsync(query, context.RequestAborted))
                {
                    using var json = JsonDocument.Parse(stored.Json);
                    entries.Add(json.RootElement.Clone());
                }

                return Results.Ok(entries);
            }

            return Results.Ok(await ScopedLedgerAsync(gateway, admin, query, context.RequestAborted));
        }).WithSummary("Ledger entries in scope (request entries by default; kind=admin, shed or any).");

        api.MapGet("/requests/{requestId}/approval", async (HttpContext context, string requestId) =>
        {
            await RequireAsync(context, gateway, AdminPermission.ReadLedger, null, null, "ledger.read", "request:" + requestId, scoped: false);
            return Json(await FindApprovalAsync(context, gateway, requestId));
        }).WithSummary("Who approved the access a recorded request used: its policy version, the entitlement, the approver and the access request.")
            .Produces<ApprovalView>();

        api.MapGet("/spend", async (HttpContext context, DateTimeOffset? from, DateTimeOffset? to) =>
        {
            await RequireAsync(context, gateway, AdminPermission.ReadSpend, null, null, "spend.read", "spend", scoped: false);
            var admin = Admin(context);
            var (start, end) = SpendWindow(gateway, admin, from, to);
            var spend = await SpendAsync(gateway.Store, start, end, context.RequestAborted);
            var document = gateway.Policy.Current.Document;
            var views = document.Services.Where(s => AdminAccess.InScope(admin, s.Tenant, s.Id)).Select(s =>
            {
                var (cost, requests) = spend.TryGetValue(s.Id, out var v) ? v : (0m, 0L);
                var tenant = document.Tenants.FirstOrDefault(t => t.Id == s.Tenant);
                return new SpendView(s.Tenant, s.Id, cost, requests, s.Limits.Budget, tenant is null ? "USD" : CurrencyOf(tenant));
            }).ToList();

            // A service removed from the policy since it spent: its spend stays in the answer, under the tenant of the newest
            // version that had it, or the window's spend would add up to less than its entries.
            var retired = spend.Keys.Where(id => !document.Services.Any(s => s.Id == id)).Order(StringComparer.Ordinal).ToList();
            if (retired.Count > 0)
            {
                var history = await gateway.Store.GetHistoryAsync(context.RequestAborted);
                foreach (var id in retired)
                {
                    var last = history.OrderByDescending(v => v.Number).FirstOrDefault(v => v.Document.Services.Any(s => s.Id == id));
                    var service = last?.Document.Services.First(s => s.Id == id);
                    if (service is null || !AdminAccess.InScope(admin, service.Tenant, service.Id))
                    {
                        continue;
                    }

                    var tenant = last!.Document.Tenants.FirstOrDefault(t => t.Id == service.Tenant);
                    var (cost, requests) = spend[id];
                    views.Add(new SpendView(service.Tenant, id, cost, requests, null, tenant is null ? "USD" : CurrencyOf(tenant)) { Retired = true });
                }
            }

            return Json(views.ToArray());
        }).WithSummary("Spend per service in a window (default: this calendar month, in the tenant's time zone when the view holds one tenant or tenants of one zone, else UTC), beside its budget; a service removed from the policy since it spent is listed as retired.").Produces<SpendView[]>();

        api.MapGet("/spend/lines", async (HttpContext context, DateTimeOffset? from, DateTimeOffset? to, string? format) =>
        {
            var csv = format?.ToLowerInvariant() switch
            {
                null or "json" => false,
                "csv" => true,
                _ => throw AdminProblemException.Invalid($"'format' must be json or csv, not '{format}'."),
            };
            await RequireAsync(context, gateway, AdminPermission.ReadSpend, null, null, "spend.read", "spend", scoped: false);
            var admin = Admin(context);
            var (start, end) = SpendWindow(gateway, admin, from, to);

            // Every request entry of the window in scope, summed by tenant, service, consumer, model and currency: a heavy
            // read, which takes its turn like a report.
            using var turn = await TurnAsync(context, gateway, "spend.read", "spend", null);
            var query = new LedgerQuery
            {
                Kind = "request",
                From = start,
                To = end,
                Limit = int.MaxValue,
                Tenants = admin.Tenants.Count > 0 ? admin.Tenants : null,
                Services = admin.Services.Count > 0 ? admin.Services : null,
            };
            var lines = await AdminReadGate.RunAsync(async () =>
            {
                var sums = new SpendLines();
                await foreach (var row in gateway.Store.QueryAsync(query, context.RequestAborted))
                {
                    sums.Add(RequestEntry.Parse(row));
                }

                return sums.Lines();
            });
            if (!csv)
            {
                return Json(new SpendLinesView(start, end, lines));
            }

            context.Response.Headers.ContentDisposition = $"attachment; filename=\"spend-{start.UtcDateTime:yyyyMMdd-HHmm}-{end.UtcDateTime:yyyyMMdd-HHmm}.csv\"";
            return Results.Text(SpendLines.ToCsv(lines), "text/csv; charset=utf-8");
        }).WithSummary("Chargeback lines of a window (default: this month, as GET /spend): spend, requests and tokens per tenant, service, consumer, model and currency, summed from the request entries, with the policy versions that priced them; json or csv.")
            .Produces<SpendLinesView>();

        api.MapGet("/notifications", async (HttpContext context, int? limit) =>
        {
            // Every tenant's notifications, with their recipients: for gateway-wide admins only.
            await RequireAsync(context, gateway, AdminPermission.ReadOutbox, null, null, "notifications.read", "notifications");
            var notifications = await gateway.Store.ListNotificationsAsync(Math.Clamp(limit ?? 100, 1, 1000), context.RequestAborted);
            return Json(AdminAccess.SeesWebhooks(Admin(context)) ? notifications
                : [.. notifications.Select(n => n.Channel == "webhook" ? n with { Target = WebhookAddress.Masked(n.Target) } : n)]);
        }).WithSummary("The owner-notification outbox, newest first, with delivery status.").Produces<Notification[]>();
    }

    /// <summary>
    /// The window of <c>GET /spend</c> and <c>GET /spend/lines</c>: <paramref name="from"/> and <paramref name="to"/> as asked, by
    /// default this calendar month (in the time zone of the admin's view, UTC when it spans several) up to now; a window
    /// whose end is not after its start is a 400.
    /// </summary>
    private static (DateTimeOffset Start, DateTimeOffset End) SpendWindow(CustosGateway gateway, AdminConfig admin, DateTimeOffset? from, DateTimeOffset? to)
    {
        var now = gateway.Time.GetUtcNow();
        var start = from ?? PeriodStart(BudgetPeriod.Month, ZoneInView(admin, gateway.Policy.Current.Document), now);
        var end = to ?? now.AddSeconds(1);
        RequireWindow(start, end);
        return (start, end);
    }

    /// <summary>
    /// The newest <see cref="LedgerQuery.Limit"/> entries of <paramref name="query"/> within the scope of
    /// <paramref name="admin"/>, oldest first. The scope narrows before the limit counts: a service owner asking for its last
    /// 100 requests got none once the last 100 of the whole gateway were other services'. Entries are scoped by their tenant
    /// and service columns in the store's query; an admin entry, which has a tenant and no service, is in a service-scoped
    /// admin's scope when its target is (a credential, consumer, service or access request of a service in scope, an alert
    /// in scope, the tenant of one), as the incident pack scopes it; those are looked for among the newest
    /// <see cref="ScopedAdminWindow"/> admin entries of the tenants of its services.
    /// </summary>
    private static async Task<List<JsonElement>> ScopedLedgerAsync(CustosGateway gateway, AdminConfig admin, LedgerQuery query, CancellationToken cancellationToken)
    {
        var found = new List<(string Timestamp, string Chain, long Seq, JsonElement Entry)>();
        async Task AddAsync(LedgerQuery scoped, Func<JsonElement, bool> keep)
        {
            await foreach (var stored in gateway.Store.QueryAsync(scoped, cancellationToken))
            {
                using var json = JsonDocument.Parse(stored.Json);
                var root = json.RootElement;
                if (keep(root))
                {
                    found.Add((root.GetProperty("timestamp").GetString()!, stored.ChainId, stored.Seq, root.Clone()));
                }
            }
        }

        var byService = admin.Services.Count > 0;
        if (!(byService && query.Kind == "admin"))
        {
            // What carries its scope in its columns: every entry for a tenant-scoped admin; request entries for a service-scoped one.
            await AddAsync(query with
            {
                Tenants = admin.Tenants.Count > 0 ? admin.Tenants : null,
                Services = byService ? admin.Services : null,
            }, _ => true);
        }

        if (byService && query.Kind is null or "admin")
        {
            var scope = await AdminTargetScope.OfAsync(gateway, admin, cancellationToken);
            await AddAsync(query with { Kind = "admin", Tenants = scope.Tenants, Limit = Math.Max(query.Limit, ScopedAdminWindow) }, scope.Covers);
        }

        return [.. found.OrderBy(f => f.Timestamp, StringComparer.Ordinal).ThenBy(f => f.Chain, StringComparer.Ordinal).ThenBy(f => f.Seq)
            .TakeLast(query.Limit).Select(f => f.Entry)];
    }

    /// <summary>How many of the newest admin entries of its tenants a service-scoped admin's admin entries are looked for among.</summary>
    private const int ScopedAdminWindow = 10_000;

    /// <summary>
    /// Which admin entries a service-scoped admin sees: those whose target belongs to a service in its scope. Admin entries
    /// record their tenant, not their service (the record's form is fixed), so the target is resolved against the policy in
    /// force, the access requests and the alerts.
    /// </summary>
    private sealed class AdminTargetScope
    {
        private readonly HashSet<string> _services = new(StringComparer.Ordinal);
        private readonly HashSet<string> _consumers = new(StringComparer.Ordinal);
        private readonly HashSet<string> _credentials = new(StringComparer.Ordinal);
        private readonly HashSet<string> _accessRequests = new(StringComparer.Ordinal);
        private readonly HashSet<string> _alerts = new(StringComparer.Ordinal);

        /// <summary>The tenants of the services in scope: an entry of another tenant is about none of them.</summary>
        public HashSet<string> Tenants { get; } = new(StringComparer.Ordinal);

        public static async Task<AdminTargetScope> OfAsync(CustosGateway gateway, AdminConfig admin, CancellationToken cancellationToken)
        {
            var scope = new AdminTargetScope();
            var document = gateway.Policy.Current.Document;
            foreach (var service in document.Services.Where(s => AdminAccess.InScope(admin, s.Tenant, s.Id)))
            {
                scope._services.Add(service.Id);
                scope.Tenants.Add(service.Tenant);
            }

            scope._consumers.UnionWith(document.Consumers.Where(c => scope._services.Contains(c.Service)).Select(c => c.Id));
            scope._credentials.UnionWith(document.Credentials.Where(c => scope._consumers.Contains(c.Consumer)).Select(c => c.Id));
            scope._accessRequests.UnionWith((await gateway.Store.ListAccessRequestsAsync(null, cancellationToken))
                .Where(r => AdminAccess.InScope(admin, r.Tenant, r.Service)).Select(r => r.Id));
            scope._alerts.UnionWith((await gateway.Store.ListAlertsAsync(null, ScopedAdminWindow, cancellationToken))
                .Where(a => AdminAccess.InScope(admin, a.Signal.Tenant, a.Signal.Service)).Select(a => a.Id));
            return scope;
        }

        /// <summary>True when the admin entry <paramref name="entry"/> acts on something in scope.</summary>
        public bool Covers(JsonElement entry)
        {
            var target = entry.TryGetProperty("target", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "";
            var colon = target.IndexOf(':', StringComparison.Ordinal);
            if (colon < 0)
            {
                return false; // the policy as a whole, the store, a sign-in: the gateway's business
            }

            var id = target[(colon + 1)..];
            return target[..colon] switch
            {
                "credential" => _credentials.Contains(id),
                "consumer" => _consumers.Contains(id),
                "service" => _services.Contains(id),
                "tenant" => Tenants.Contains(id),
                "access_request" => _accessRequests.Contains(id),
                "alert" => _alerts.Contains(id),
                _ => false,
            };
        }
    }

    private static readonly string[] LedgerKinds = ["request", "admin", "shed", "any"];

    private static readonly string[] LedgerDecisions = ["allow", "deny", "throttle"];

    /// <summary>
    /// A query value that must be one of <paramref name="allowed"/>: anything else would match no entry, and an empty
    /// answer would read as "nothing happened".
    /// </summary>
    private static void OneOf(string name, string? value, string[] allowed)
    {
        if (value is not null && !allowed.Contains(value, StringComparer.Ordinal))
        {
            throw AdminProblemException.Invalid($"'{name}' must be one of {string.Join(", ", allowed)}, not '{value}'.");
        }
    }

    /// <summary>A window whose end is not after its start holds nothing: a 400, not an empty answer.</summary>
    private static void RequireWindow(DateTimeOffset from, DateTimeOffset to)
    {
        if (to <= from)
        {
            throw AdminProblemException.Invalid($"'to' ({LedgerTime.Format(to)}) must be after 'from' ({LedgerTime.Format(from)}).");
        }
    }

    /// <summary>
    /// Spend and requests per service from <paramref name="from"/> to <paramref name="to"/>: the quarter hours wholly inside
    /// from the request totals, the minutes wholly inside the pieces at either end from the totals by minute, and only
    /// the seconds left at either end from the entries, so that a month costs a few thousand rows.
    /// </summary>
    internal static async Task<IReadOnlyDictionary<string, (decimal Spend, long Requests)>> SpendAsync(ICustosStore store, DateTimeOffset from,
        DateTimeOffset to, CancellationToken cancellationToken)
    {
        var spend = new Dictionary<string, (decimal Spend, long Requests)>(StringComparer.Ordinal);
        void Add(string service, decimal cost, long requests)
        {
            var (s, r) = spend.GetValueOrDefault(service);
            spend[service] = (s + cost, r + requests);
        }

        await AddAsync(from, to, 0);
        return spend;

        // The whole slots of widths[level] between from and to, and what is left at either end one level finer; the entries below the last.
        async Task AddAsync(DateTimeOffset from, DateTimeOffset to, int level)
        {
            if (from >= to)
            {
                return;
            }

            if (level == RequestTotals.Widths.Count)
            {
                foreach (var (service, (cost, requests)) in await store.GetSpendAsync(from, to, cancellationToken))
                {
                    Add(service, cost, requests);
                }

                return;
            }

            var width = RequestTotals.Widths[level];
            var first = RequestTotals.SlotStart(RequestTotals.SlotOf(from, width));
            first = first < from ? first.AddSeconds(width) : first;
            var last = RequestTotals.SlotStart(RequestTotals.SlotOf(to, width));
            if (first >= last)
            {
                await AddAsync(from, to, level + 1);
                return;
            }

            await AddAsync(from, first, level + 1);
            await foreach (var total in store.ReadTotalsAsync(width, first, last, cancellationToken))
            {
                if (total.Service is { } service)
                {
                    Add(service, total.Spend, total.Requests);
                }
            }

            await AddAsync(last, to, level + 1);
        }
    }

    private static async Task<ApprovalView> FindApprovalAsync(HttpContext context, CustosGateway gateway, string requestId)
    {
        using var json = await EntryInScopeAsync(context, gateway, requestId) ?? throw AdminProblemException.NotFound("request", requestId);
        var root = json.RootElement;
        string? Text(string name) => root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
        var timestamp = LedgerTime.Parse(Text("timestamp")!);
        var versionNumber = root.GetProperty("policy_version").GetInt64();
        var history = await gateway.Store.GetHistoryAsync(context.RequestAborted);
        var version = history.FirstOrDefault(v => v.Number == versionNumber) ?? throw AdminProblemException.NotFound("policy version", versionNumber.ToString(System.Globalization.CultureInfo.InvariantCulture));
        var consumerId = Text("consumer");
        var model = Text("model");
        var decision = Text("decision") ?? "";
        var snapshot = PolicySnapshot.Compile(version, _ => null);
        Entitlement? used = null;
        ConsumerEntry? usedBy = null;
        IReadOnlyList<string>? serviceModels = null;
        if (consumerId is not null && snapshot.Consumers.TryGetValue(consumerId, out var consumer) && model is not null
            && consumer.Service.Tenant.Models.TryGetValue(model, out var route))
        {
            usedBy = consumer;
            if (consumer.ExcludedByService.Contains(route))
            {
                serviceModels = [.. consumer.Service.Models!.Select(m => m.Name).Order(StringComparer.Ordinal)];
            }

            used = consumer.Entitlements.FirstOrDefault(e => e.Models.Contains(route) && e.IsValidAt(timestamp))
                ?? consumer.Entitlements.FirstOrDefault(e => e.Models.Contains(route));
        }

        AccessRequest? access = used?.Ticket is { } ticket && ticket.StartsWith("ar-", StringComparison.Ordinal)
            ? await gateway.Store.GetAccessRequestAsync(ticket, context.RequestAborted)
            : null;
        if (access is not null && (usedBy is null || used is null || access.Consumer != usedBy.Id || access.Tenant != usedBy.Service.Tenant.Id || !AskedFor(access, usedBy, used)))
        {
            // A ticket is free text in a policy file: an access request of another consumer (another tenant's) with that id
            // is not this approval's, and is not shown.
            access = null;
        }

        return new ApprovalView(requestId, timestamp, consumerId, model, decision, version.Number, Text("policy_hash"),
            VersionViews(Admin(context), history)(version).Author, used?.Source,
            used is null ? [] : [.. used.Models.Select(m => m.Name).Order(StringComparer.Ordinal)], used?.ApprovedBy, used?.Ticket, used?.ValidFrom,
            used?.ValidUntil, access)
        {
            ValidAtRequest = used?.IsValidAt(timestamp),
            ServiceModels = serviceModels,
        };

        // The models the request asked for (by name or alias) are the entitlement's.
        static bool AskedFor(AccessRequest request, ConsumerEntry consumer, Entitlement entitlement)
        {
            var asked = new HashSet<string>(StringComparer.Ordinal);
            foreach (var name in request.Models)
            {
                asked.Add(consumer.Service.Tenant.Models.TryGetValue(name, out var route) ? route.Name : name);
            }

            return asked.SetEquals(entitlement.Models.Select(m => m.Name));
        }
    }

    /// <summary>Whether the kill switch of <paramref name="scope"/> (tenant, service or consumer) <paramref name="id"/> is engaged in <paramref name="document"/>.</summary>
    private static bool IsSwitchedOff(PolicyDocument document, string scope, string id) => scope switch
    {
        "tenant" => document.Tenants.Any(t => t.Id == id && t.Suspended == true),
        "service" => document.Services.Any(s => s.Id == id && s.Suspended == true),
        _ => document.Consumers.Any(c => c.Id == id && c.Suspended == true),
    };

    /// <summary>Applies a change as a new policy version, records it in the ledger, notifies owners; answers the <see cref="ChangeResult"/>.</summary>
    private static async Task<IResult> ChangeAsync(HttpContext context, CustosGateway gateway, string reason, string action, string target,
        Func<PolicyDocument, (PolicyDocument Document, string? Before, string? After)> change, Func<PolicyDocument, IEnumerable<ServiceConfig>>? notify = null,
        string? param = null)
        => Json(await ChangeCoreAsync(context, gateway, reason, action, target, change, notify, param: param));

    // tenant: the tenant the entry belongs to, for a target the policy does not locate (an access request); else found from the target.
    // param: the body's field the change comes from, which a 422 names (the caller sent no policy, so a line and column would be of none it saw).
    private static async Task<ChangeResult> ChangeCoreAsync(HttpContext context, CustosGateway gateway, string reason, string action, string target,
        Func<PolicyDocument, (PolicyDocument Document, string? Before, string? After)> change, Func<PolicyDocument, IEnumerable<ServiceConfig>>? notify = null,
        string? tenant = null, string? param = null)
    {
        RequireReason(reason);
        var admin = Admin(context);
        PolicyVersion version;
        string? before, after;
        try
        {
            (version, before, after) = await gateway.ChangeAndRecordAsync(admin.Id, action, target, reason, change, doc => tenant ?? TenantOf(doc, target),
                context.RequestAborted);
        }
        catch (PolicyValidationException ex)
        {
            throw InvalidChange(ex.Diagnostics, param);
        }
        var notified = 0;
        foreach (var service in notify?.Invoke(version.Document) ?? [])
        {
            notified += await gateway.Notifier.NotifyAsync(service, "technical", action, admin.Id, target, reason,
                new Dictionary<string, string?> { ["before"] = before, ["after"] = after, ["policy_version"] = version.Number.ToString(System.Globalization.CultureInfo.InvariantCulture) },
                CancellationToken.None);
        }

        return new ChangeResult(action, target, before, after, version.Number, notified);
    }

    /// <summary>
    /// The 422 of a change made through a dedicated endpoint that would leave the policy invalid (or of an access request whose
    /// approval would, with its own <paramref name="title"/> and <paramref name="lead"/> line): each error by the body's
    /// field (<paramref name="param"/>) and where in the policy it would land, never the line and column of the policy text
    /// the gateway wrote to check it, which the caller never saw. A whole policy (<c>POST /policy/versions</c>) keeps them.
    /// </summary>
    private static AdminProblemException InvalidChange(IReadOnlyList<PolicyDiagnostic> diagnostics, string? param,
        string title = "The change would make the policy invalid", string? lead = null)
    {
        var errors = diagnostics.Where(d => d.Severity == DiagnosticSeverity.Error)
            .Select(d => $"{(param is null ? "" : $"'{param}': ")}{d.Message} (the policy's {d.Path})");
        return new AdminProblemException(StatusCodes.Status422UnprocessableEntity, "admin.invalid_policy", title,
            string.Join(Environment.NewLine, lead is null ? errors : errors.Prepend(lead)))
        {
            Extensions = param is null ? null : new Dictionary<string, object?> { ["param"] = param },
        };
    }

    private static StoreView StoreOf(CustosGateway gateway) => gateway.Store is IRecordFormatSetting setting
        ? new StoreView(gateway.Store.Description, setting.RecordFormat, RecordFormatSwitchable: true)
        : new StoreView(gateway.Store.Description, IRecordFormatSetting.Compressed, RecordFormatSwitchable: false);

    /// <summary>Refuses (403, audited) unless the admin's role holds <paramref name="permission"/> within scope.</summary>
    private static async Task RequireAsync(HttpContext context, CustosGateway gateway, AdminPermission permission, string? tenant, string? service,
        string action, string target, bool scoped = true)
    {
        var admin = Admin(context);
        if (!AdminAccess.Grants(admin.Role, permission))
        {
            throw await DeniedAsync(context, gateway, action, target, tenant, $"role {PolicyNames.Of(admin.Role)} may not do this");
        }

        if (scoped && !AdminAccess.InScope(admin, tenant, service))
        {
            // What belongs to no tenant (the whole policy, the store) is for gateway-wide admins only: a whole policy from an
            // admin scoped to one tenant could rewrite every other tenant, and the admin's own scope with them.
            throw await DeniedAsync(context, gateway, action, target, tenant, tenant is null
                ? $"{target} is the whole gateway's, and '{admin.Id}' is scoped to {ScopeOf(admin)}; it takes an admin without tenants or services"
                : $"{target} is outside the scope of '{admin.Id}'");
        }
    }

    /// <summary>
    /// Refuses a list filtered by name to a tenant, service or consumer outside the signed-in admin's scope (403, recorded as
    /// <paramref name="action"/><c>_denied</c>): answered with the scope's part of it, the list was empty, which read as
    /// "nothing there" (no entries, no credentials) about a subject the admin may not see. A name the policy in force does
    /// not hold (a service removed since) is left to the scope's narrowing of the list, except a service that a
    /// service-scoped admin's scope does not name.
    /// </summary>
    private static async Task RequireFiltersInScopeAsync(HttpContext context, CustosGateway gateway, string action, string? tenant, string? service, string? consumer)
    {
        var admin = Admin(context);
        if (AdminAccess.IsGatewayWide(admin))
        {
            return;
        }

        var document = gateway.Policy.Current.Document;
        bool ServiceInScope(ServiceConfig s) => AdminAccess.InScope(admin, s.Tenant, s.Id);
        (string Target, string? Tenant)? outside = null;
        if (tenant is not null && !(admin.Tenants.Count > 0 ? admin.Tenants.Contains(tenant) : document.Services.Any(s => s.Tenant == tenant && ServiceInScope(s))))
        {
            outside = ("tenant:" + tenant, tenant);
        }
        else if (service is not null && document.Services.FirstOrDefault(s => s.Id == service) is var named
            && (named is null ? admin.Services.Count > 0 && !admin.Services.Contains(service) : !ServiceInScope(named)))
        {
            outside = ("service:" + service, named?.Tenant);
        }
        else if (consumer is not null && document.Consumers.FirstOrDefault(c => c.Id == consumer) is { } found
            && document.Services.FirstOrDefault(s => s.Id == found.Service) is { } owner && !ServiceInScope(owner))
        {
            outside = ("consumer:" + consumer, owner.Tenant);
        }

        if (outside is { } o)
        {
            throw await DeniedAsync(context, gateway, action, o.Target, o.Tenant, $"{o.Target} is outside the scope of '{admin.Id}'");
        }
    }

    /// <summary>
    /// The ledger entry of <paramref name="requestId"/> (null when no entry has that id), refused (403, recorded as
    /// <c>ledger.read_denied</c>) when it was recorded outside the signed-in admin's scope: narrowed to the scope, the
    /// answer was empty or a 404, which read as "no such request" to an auditor holding its id.
    /// </summary>
    private static async Task<JsonDocument?> EntryInScopeAsync(HttpContext context, CustosGateway gateway, string requestId)
    {
        JsonDocument? json = null;
        await foreach (var stored in gateway.Store.QueryAsync(new LedgerQuery { RequestId = requestId, Limit = 1 }, context.RequestAborted))
        {
            json = JsonDocument.Parse(stored.Json);
        }

        var root = json?.RootElement;
        string? Text(string name) => root is { } r && r.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
        if (Text("tenant") is { } tenant && !AdminAccess.InScope(Admin(context), tenant, Text("service")))
        {
            json!.Dispose();
            throw await DeniedAsync(context, gateway, "ledger.read", "request:" + requestId, tenant, $"request:{requestId} is outside the scope of '{Admin(context).Id}'");
        }

        return json;
    }

    private static string ScopeOf(AdminConfig admin) => string.Join(", ",
        admin.Tenants.Select(t => "tenant " + t).Concat(admin.Services.Select(s => "service " + s)));

    private static async Task<AdminProblemException> DeniedAsync(HttpContext context, CustosGateway gateway, string action, string target, string? tenant, string why)
    {
        var admin = Admin(context);
        await gateway.RecordAdminAsync(admin.Id, action + "_denied", target, null, null, why, tenant);
        return new AdminProblemException(StatusCodes.Status403Forbidden, "admin.forbidden", "Forbidden", $"'{admin.Id}' ({PolicyNames.Of(admin.Role)}): {why}.");
    }

    /// <summary>A refused sign-in: the answer, its code, and what was presented, described without any secret.</summary>
    private sealed record SignInFailure(IResult Result, string Code, string Presented);

    private static async Task<(AdminConfig? Admin, SignInFailure Failure)> AuthenticateAsync(HttpContext context, CustosGateway gateway)
    {
        var header = context.Request.Headers.Authorization.ToString();
        var presented = header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? header[7..].Trim() : "";
        var snapshot = gateway.Policy.Current;
        SignInFailure Refuse(string code, string title, string detail, string what)
            => new(Problem(context, StatusCodes.Status401Unauthorized, code, title, detail), code, what);

        if (snapshot.IdentityProviders.Count > 0 && JwtAuthenticator.LooksLikeJwt(presented))
        {
            var outcome = await gateway.Jwt.ValidateAsync(presented, snapshot.IdentityProviders, context.RequestAborted);
            if (outcome.Failure is { } failure)
            {
                return (null, Refuse(failure.Code, "Sign-in refused", failure.Message, "a token that was refused"));
            }

            return snapshot.TryGetAdmin(outcome.Provider!.Id, outcome.Subject!, out var oidcAdmin)
                ? (oidcAdmin, null!)
                : (null, Refuse("deny.token_subject_unknown", "Sign-in refused",
                    $"The token is valid, but subject '{outcome.Subject}' of '{outcome.Provider.Id}' is no admin of this gateway.",
                    $"a token of '{outcome.Provider.Id}' for subject '{outcome.Subject}', no admin"));
        }

        var format = ApiKey.Validate(presented, out var kind);
        if (format != ApiKeyFormatError.None || kind != ApiKeyKind.Admin)
        {
            // What is wrong with the key is in its form, known to anyone: saying it gives nothing away. The record names a
            // well-formed key by its first 12 characters, as the credential lists do; anything else not at all.
            return (null, Refuse("admin.unauthenticated", "Admin key required", (format, kind) switch
            {
                (ApiKeyFormatError.None, ApiKeyKind.Consumer) => "A consumer key (csk_…) calls models on the data plane; the admin API takes an admin key (cak_…).",
                (ApiKeyFormatError.BadChecksum, _) => "The key's checksum does not match: it was mistyped or truncated.",
                _ => "Send an admin key as 'Authorization: Bearer cak_…', or an OIDC token of a configured identity provider.",
            }, (format, kind) switch
            {
                (ApiKeyFormatError.None, ApiKeyKind.Consumer) => $"a consumer key ({presented[..12]}…)",
                (ApiKeyFormatError.BadChecksum, _) => "a key whose checksum does not match",
                _ when presented.Length == 0 => "no credential",
                _ => "a credential that is no admin key",
            }));
        }

        return snapshot.TryGetAdmin(KeyHash.Of(presented), out var admin)
            ? (admin, null!)
            : (null, Refuse("admin.unknown_key", "Unknown admin key", "The admin key is not known to this gateway.", $"an unknown admin key ({presented[..12]}…)"));
    }

    private static IResult Problem(HttpContext context, int status, string code, string title, string detail,
        IReadOnlyDictionary<string, object?>? more = null)
    {
        var extensions = new Dictionary<string, object?> { ["code"] = code, ["request_id"] = context.Items[RequestIdItem] as string };
        foreach (var (name, value) in more ?? new Dictionary<string, object?>())
        {
            extensions[name] = value;
        }

        return Results.Problem(statusCode: status, title: title, detail: detail, extensions: extensions);
    }

    private static AdminConfig Admin(HttpContext context) => (AdminConfig)context.Items[AdminItem]!;

    private static IResult Json<T>(T value, int status = StatusCodes.Status200OK) => Results.Json(value, AdminJson.Options, statusCode: status);

    private static async Task<T> ReadAsync<T>(HttpContext context)
    {
        // Read whole (admin bodies are small) so that a fault can be described from the bytes, not the reader's quote of them.
        using var buffer = new MemoryStream();
        await context.Request.Body.CopyToAsync(buffer, context.RequestAborted);
        var body = buffer.GetBuffer().AsSpan(0, (int)buffer.Length);
        if (body.Trim(" \t\r\n"u8).IsEmpty)
        {
            throw AdminProblemException.Invalid("The request body is not valid: it is empty; send a JSON object.");
        }

        try
        {
            return JsonSerializer.Deserialize<T>(body, AdminJson.BodyOptions)
                ?? throw AdminProblemException.Invalid("The request body is empty; send a JSON object.");
        }
        catch (JsonException ex)
        {
            throw AdminProblemException.Invalid($"The request body is not valid: {JsonFaults.DescribeDocument(body, ex)}.");
        }
    }

    /// <summary>The body options reject a null list, but not a null in one (<c>[null]</c>): that is refused here.</summary>
    private static IReadOnlyList<T> RequireNoNulls<T>(IReadOnlyList<T> items, string field)
        where T : class
        => items.Contains(null) ? throw AdminProblemException.Invalid($"'{field}' has an empty (null) entry.") : items;

    /// <summary>What <see cref="char.IsControl(char)"/> names (C0, DEL, C1) but line breaks and tabs.</summary>
    private static readonly System.Buffers.SearchValues<char> ControlCharacters = System.Buffers.SearchValues.Create(
        [.. Enumerable.Range(0, 0xA0).Select(c => (char)c).Where(c => char.IsControl(c) && c is not ('\n' or '\r' or '\t'))]);

    /// <summary>The most characters a reason, justification or note may have: the ledger keeps it for good.</summary>
    public const int MaxReasonLength = 2000;

    private static void RequireReason(string? reason, string field = "reason")
    {
        if (string.IsNullOrWhiteSpace(reason))
        {
            throw AdminProblemException.Invalid($"Every change records why it was made: send a non-empty '{field}'.");
        }

        CheckText(reason, field);
    }

    /// <summary>
    /// Owners' names and contacts go where a reason goes (the ledger's <c>service.owners_set</c> before and after, the
    /// notification outbox, log lines), so they are held to the same rules (<see cref="CheckText"/>): a consumer key in a
    /// webhook's query, an escape sequence in a name, a name of 100,000 characters are refused, naming the field.
    /// </summary>
    private static ServiceOwners CheckOwners(ServiceOwners owners, string field)
    {
        foreach (var (role, owner) in OwnerRoles(owners))
        {
            CheckOwner(owner, $"{field}.{role}");
        }

        return owners;
    }

    private static void CheckOwner(OwnerConfig? owner, string field)
    {
        if (owner is not null)
        {
            CheckText(owner.Name, field + ".name");
            CheckText(owner.Email, field + ".email");
            CheckText(owner.Webhook?.OriginalString, field + ".webhook");
            CheckText(owner.Admin, field + ".admin");
        }
    }

    /// <summary>Every owner role of a service by its name in the API, filled or not.</summary>
    private static (string Role, OwnerConfig? Owner)[] OwnerRoles(ServiceOwners o)
        => [("policy", o.Policy), ("billing", o.Billing), ("technical", o.Technical), ("agent_operator", o.AgentOperator), ("business_sponsor", o.BusinessSponsor)];

    /// <summary>
    /// Free text that goes into the ledger, and from there to terminals and reports: at most <see cref="MaxReasonLength"/>
    /// characters, and no control characters but line breaks and tabs (an escape sequence would restyle or hide text
    /// on an auditor's terminal).
    /// </summary>
    private static void CheckText(string? text, string field)
    {
        if (text is null)
        {
            return;
        }

        if (text.Length > MaxReasonLength)
        {
            throw AdminProblemException.Invalid(string.Create(CultureInfo.InvariantCulture,
                $"'{field}' is {text.Length:N0} characters; the ledger keeps it for good, so at most {MaxReasonLength:N0}: summarise it, and link to the ticket."));
        }

        var control = text.AsSpan().IndexOfAny(ControlCharacters);
        if (control >= 0)
        {
            throw AdminProblemException.Invalid(string.Create(CultureInfo.InvariantCulture,
                $"'{field}' holds a control character (U+{(int)text[control]:X4}) at character {control + 1}; send text without them (line breaks and tabs are kept)."));
        }

        // "revoked: leaked key csk_…" would put the key in the ledger for good, where keys are never stored.
        List<(int Index, int Length)> secrets = [];
        if (Custos.Controls.PromptDetectors.Find(Custos.Policy.PromptDetector.Secrets, text, secrets))
        {
            throw AdminProblemException.Invalid(string.Create(CultureInfo.InvariantCulture,
                $"'{field}' holds what looks like a key or token at character {secrets[0].Index + 1}; the ledger keeps it for good, where keys are never stored: name the credential by its id or prefix instead."));
        }
    }

    private static ServiceConfig FindService(PolicyDocument document, string id)
        => document.Services.FirstOrDefault(s => s.Id == id) ?? throw AdminProblemException.NotFound("service", id);

    private static CredentialConfig FindCredential(PolicyDocument document, string id)
        => document.Credentials.FirstOrDefault(c => c.Id == id) ?? throw AdminProblemException.NotFound("credential", id);

    /// <summary>The tenant and service (null for a tenant) of a scope and id.</summary>
    private static (string Tenant, string? Service) Locate(PolicyDocument document, string scope, string id)
    {
        switch (scope)
        {
            case "tenant":
                return document.Tenants.Any(t => t.Id == id) ? (id, null) : throw AdminProblemException.NotFound("tenant", id);
            case "service":
                var service = FindService(document, id);
                return (service.Tenant, service.Id);
            case "consumer":
                var consumer = document.Consumers.FirstOrDefault(c => c.Id == id) ?? throw AdminProblemException.NotFound("consumer", id);
                return (FindService(document, consumer.Service).Tenant, consumer.Service);
            default:
                throw AdminProblemException.Invalid($"'scope' must be consumer, service or tenant, not '{scope}'.");
        }
    }

    internal static string? TenantOf(PolicyDocument document, string target)
    {
        var colon = target.IndexOf(':', StringComparison.Ordinal);
        if (colon < 0)
        {
            return null;
        }

        var (scope, id) = (target[..colon], target[(colon + 1)..]);
        if (scope == "credential")
        {
            var credential = document.Credentials.FirstOrDefault(c => c.Id == id);
            return credential is null ? null : TenantOf(document, "consumer:" + credential.Consumer);
        }

        if (scope == "access_request")
        {
            // An approved request's entitlement names it as its ticket (callers that know the request pass its tenant instead).
            var entitled = document.Consumers.FirstOrDefault(c => c.Entitlements.Any(e => e.Ticket == id));
            return entitled is null ? null : TenantOf(document, "consumer:" + entitled.Id);
        }

        return scope is "tenant" or "service" or "consumer" && (scope != "tenant" || document.Tenants.Any(t => t.Id == id))
            && (scope != "service" || document.Services.Any(s => s.Id == id)) && (scope != "consumer" || document.Consumers.Any(c => c.Id == id))
            ? Locate(document, scope, id).Tenant
            : null;
    }

    private static CredentialConfig NewCredential(string consumer, string key, DateTimeOffset now, DateTimeOffset? expiresAt) => new()
    {
        Id = "cred-" + Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(6)),
        Consumer = consumer,
        KeySha256 = KeyHash.Of(key).ToHex(),
        Prefix = key[..12],
        CreatedAt = now,
        ExpiresAt = expiresAt,
    };

    /// <summary>
    /// A service's prompt rules as <c>service.prompt_rules_set</c> records them before and after: each rule's id, what it
    /// matches with (a detector, or <c>pattern</c>) and its action, so that an action turned from deny to redact is on record
    /// (<c>card-numbers (payment_card, redact), project-names (pattern, deny)</c>; <c>none</c>). A pattern's text is in the
    /// policy version the entry names.
    /// </summary>
    private static string PromptRulesText(ServiceConfig service)
        => service.PromptRules.Count == 0 ? "none" : string.Join(", ", service.PromptRules.Select(r =>
            $"{r.Id} ({(r.Detector is { } d ? PolicyNames.Of(d) : "pattern")}, {PolicyNames.Of(r.Action)})"));

    private static ServiceView ViewOf(PolicyDocument document, ServiceConfig service, AdminConfig admin)
    {
        // As the data plane checks them: the tenant's kill switch first, then the service's own.
        var by = document.Tenants.Any(t => t.Id == service.Tenant && t.Suspended == true) ? "tenant" : service.Suspended == true ? "service" : null;
        return new(service.Id, service.Tenant, service.Description, AdminAccess.SeesWebhooks(admin) ? service.Owners : WebhookAddress.Masked(service.Owners),
            [.. Governance.Gaps(document, service).Select(g => g.Message)],
            by is not null, service.Models, service.Approvers ?? [], service.Limits.Budget)
        {
            RequiredOwnerRoles = [.. OwnerRoles(service.Owners).Select(r => r.Role).Where(role => Governance.Requires(document, service, role))],
            SuspendedBy = by,
            PromptRules = service.PromptRules,
            TenantPromptRules = document.Tenants.FirstOrDefault(t => t.Id == service.Tenant)?.PromptRules ?? [],
        };
    }

    /// <summary>The kill switch a consumer's or service's refusal comes from (<c>tenant</c>, <c>service</c>, <c>consumer</c>), or null for none.</summary>
    private static string? SuspendedBy(ReasonCode? refusal)
        => refusal == Reasons.TenantSuspended ? "tenant"
            : refusal == Reasons.ServiceSuspended ? "service"
            : refusal == Reasons.ConsumerSuspended ? "consumer"
            : null;

    private static CredentialView ViewOf(PolicySnapshot snapshot, CredentialConfig credential, IReadOnlyDictionary<string, DateTimeOffset> lastUsed, DateTimeOffset now)
    {
        var consumer = snapshot.Consumers[credential.Consumer];
        return new CredentialView(credential.Id, credential.Consumer, consumer.Service.Id, consumer.Service.Tenant.Id,
            credential.KeySha256 is null ? "workload_identity" : "api_key", credential.Prefix, StatusText(credential, now), credential.CreatedAt,
            lastUsed.TryGetValue(credential.Id, out var used) ? used : null, credential.ExpiresAt, credential.Issuer, credential.Subject, credential.ReplacedBy);
    }

    private static string StatusText(CredentialConfig credential, DateTimeOffset now) => credential.Status switch
    {
        CredentialStatus.Revoked => "revoked",
        CredentialStatus.Suspended => "suspended",
        _ when credential.ExpiresAt is { } e && e <= now => "expired",
        _ => "active",
    };

    private static Func<ServiceOwners, OwnerConfig?, ServiceOwners> OwnerRole(string role) => role.Replace('-', '_') switch
    {
        "policy" => (o, owner) => o with { Policy = owner },
        "billing" => (o, owner) => o with { Billing = owner },
        "technical" => (o, owner) => o with { Technical = owner },
        "agent_operator" => (o, owner) => o with { AgentOperator = owner },
        "business_sponsor" => (o, owner) => o with { BusinessSponsor = owner },
        _ => throw AdminProblemException.Invalid($"'{role}' is no owner role; the roles are policy, billing, technical, agent_operator and business_sponsor."),
    };

    /// <summary>
    /// A service's owners as the ledger records them before and after a change: each role's contact and the admin who acts
    /// for it (the policy owner's decides access requests), then the approvers the policy names, so that a change of who
    /// approves access is seen in the entry.
    /// </summary>
    private static string OwnersText(ServiceConfig service)
    {
        static string One(string role, OwnerConfig? o) => o is null ? role + "=-"
            : $"{role}={o.Name} <{o.Email ?? (o.Webhook is { } webhook ? WebhookAddress.Masked(webhook) : null)}>{(o.Admin is null ? "" : $" admin {o.Admin}")}";
        var owners = service.Owners;
        var text = string.Join("; ", One("policy", owners.Policy), One("billing", owners.Billing), One("technical", owners.Technical),
            One("agent_operator", owners.AgentOperator), One("business_sponsor", owners.BusinessSponsor));
        return service.Approvers is { Count: > 0 } approvers ? $"{text}; approvers={string.Join(",", approvers)}" : text;
    }

    private static string? BudgetText(BudgetConfig? budget)
        => budget is null ? null : $"{PolicyNames.Normalize(budget.Amount).ToString(System.Globalization.CultureInfo.InvariantCulture)} per {PolicyNames.Of(budget.Period)} ({PolicyNames.Of(budget.Mode)})";
}
