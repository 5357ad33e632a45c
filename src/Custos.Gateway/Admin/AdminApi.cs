using System.Text.Json.Serialization;
using Custos.Gateway.Hosting;
using Custos.Identity;
using Custos.Policy;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace Custos.Gateway.Admin;

/// <summary>Body of <c>POST /admin/v1/policy/versions</c>.</summary>
public sealed record ApplyPolicyRequest(
    [property: JsonPropertyName("yaml")] string Yaml,
    [property: JsonPropertyName("reason")] string Reason,
    [property: JsonPropertyName("dry_run")] bool DryRun = false);

/// <summary>A policy version as the admin API shows it.</summary>
public sealed record PolicyVersionView(
    [property: JsonPropertyName("version")] long Version,
    [property: JsonPropertyName("sha256")] string Sha256,
    [property: JsonPropertyName("author")] string Author,
    [property: JsonPropertyName("reason")] string Reason,
    [property: JsonPropertyName("created_at")] DateTimeOffset CreatedAt)
{
    /// <summary>The view of <paramref name="version"/>.</summary>
    public static PolicyVersionView Of(PolicyVersion version) => new(version.Number, version.Sha256, version.Author, version.Reason, version.CreatedAt);
}

/// <summary>The outcome of applying a policy.</summary>
public sealed record ApplyPolicyResponse(
    [property: JsonPropertyName("version")] PolicyVersionView Version,
    [property: JsonPropertyName("created")] bool Created,
    [property: JsonPropertyName("dry_run")] bool DryRun,
    [property: JsonPropertyName("changes")] IReadOnlyList<string> Changes,
    [property: JsonPropertyName("warnings")] IReadOnlyList<string> Warnings);

/// <summary>
/// The admin API on the admin listener (<c>/admin/v1/...</c>): admin keys (<c>cak_…</c>) from the policy's
/// <c>admins</c>, each with a role. Every change, and every refused attempt, is a ledger entry naming the actor.
/// </summary>
internal static class AdminApi
{
    public static void Map(IEndpointRouteBuilder app, CustosGateway gateway)
    {
        var api = app.MapGroup("/admin/v1");

        api.MapGet("/policy", (HttpContext context) =>
        {
            if (Authenticate(context, gateway, out var admin) is { } failure)
            {
                return failure;
            }

            var current = gateway.Policy.Current;
            return Results.Ok(new
            {
                version = PolicyVersionView.Of(current.Info),
                yaml = PolicyYamlWriter.Write(current.Document),
            });
        });

        api.MapGet("/policy/versions", async (HttpContext context) =>
        {
            if (Authenticate(context, gateway, out _) is { } failure)
            {
                return failure;
            }

            var history = await gateway.Store.GetHistoryAsync(context.RequestAborted);
            return Results.Ok(history.Select(PolicyVersionView.Of));
        });

        api.MapPost("/policy/versions", async (HttpContext context, ApplyPolicyRequest body) =>
        {
            if (Authenticate(context, gateway, out var admin) is { } failure)
            {
                return failure;
            }

            if (admin!.Role != AdminRole.PlatformAdmin)
            {
                await gateway.RecordAdminAsync(admin.Id, "policy.apply_denied", "policy", null, null,
                    $"role {PolicyNames.Of(admin.Role)} may not apply a whole policy");
                return Results.Problem(statusCode: StatusCodes.Status403Forbidden, title: "Forbidden",
                    detail: $"Applying a whole policy needs the platform-admin role; '{admin.Id}' is {PolicyNames.Of(admin.Role)}.");
            }

            if (string.IsNullOrWhiteSpace(body.Reason))
            {
                return Results.Problem(statusCode: StatusCodes.Status400BadRequest, title: "A reason is required",
                    detail: "Every policy version records why it was made: send a non-empty 'reason'.");
            }

            var read = PolicyYaml.Read(body.Yaml);
            if (read.Document is not { } document)
            {
                return Results.ValidationProblem(
                    new Dictionary<string, string[]> { ["yaml"] = [.. read.Diagnostics.Select(d => d.Format("policy"))] },
                    title: "The policy is not valid", statusCode: StatusCodes.Status422UnprocessableEntity);
            }

            var warnings = read.Diagnostics.Select(d => d.Format("policy")).ToArray();
            var changes = PolicyDiff.Compute(gateway.Policy.Current.Document, document).Select(c => c.ToString()).ToArray();
            if (body.DryRun)
            {
                return Results.Ok(new ApplyPolicyResponse(PolicyVersionView.Of(gateway.Policy.Current.Info), false, true, changes, warnings));
            }

            var (version, created) = await gateway.ApplyPolicyAsync(document, admin.Id, body.Reason, body.Yaml, context.RequestAborted);
            return Results.Ok(new ApplyPolicyResponse(PolicyVersionView.Of(version), created, false, changes, warnings));
        });
    }

    /// <summary>Finds the admin identity of the request's key, or the 401 to answer.</summary>
    private static IResult? Authenticate(HttpContext context, CustosGateway gateway, out AdminConfig? admin)
    {
        admin = null;
        var header = context.Request.Headers.Authorization.ToString();
        var presented = header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) ? header[7..].Trim() : "";
        if (ApiKey.Validate(presented, out var kind) != ApiKeyFormatError.None || kind != ApiKeyKind.Admin)
        {
            return Results.Problem(statusCode: StatusCodes.Status401Unauthorized, title: "Admin key required",
                detail: "Send an admin key as 'Authorization: Bearer cak_…'.");
        }

        return !gateway.Policy.Current.TryGetAdmin(KeyHash.Of(presented), out admin)
            ? Results.Problem(statusCode: StatusCodes.Status401Unauthorized, title: "Unknown admin key", detail: "The admin key is not known to this gateway.")
            : null;
    }
}
