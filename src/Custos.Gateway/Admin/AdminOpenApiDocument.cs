using System.Runtime.CompilerServices;
using System.Text.Json.Serialization;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.OpenApi;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.OpenApi;

namespace Custos.Gateway.Admin;

/// <summary>
/// The admin API's OpenAPI document (<c>GET /admin/v1/openapi.json</c>), generated when it is first asked for and kept.
/// </summary>
/// <remarks>
/// The generator (ASP.NET Core's OpenAPI package, Microsoft.OpenApi and the endpoints' API explorer) is loaded only
/// then, in a second host that is built with the admin API's routes and never started: a node that nobody asks for
/// the document does not carry it, 2–5 MB of its peak memory under load (docs/performance.md, "The admin API's
/// document when asked for"). The document describes the routes, not the listener: it names no server, so its paths
/// are relative to wherever it was fetched from.
/// </remarks>
internal sealed class AdminOpenApiDocument
{
    private const string DocumentName = "v1";

    private readonly Func<WebApplication> _describedHost;
    private readonly SemaphoreSlim _generating = new(1, 1);
    private byte[]? _document;

    /// <param name="describedHost">
    /// Builds a host with the admin API's services and routes, not started; the document is generated from it, and
    /// it is disposed after.
    /// </param>
    public AdminOpenApiDocument(Func<WebApplication> describedHost) => _describedHost = describedHost;

    /// <summary>
    /// The document's services, for the host the document is generated from. Its schemas are made with the admin API's
    /// JSON conventions (<see cref="AdminJson.Options"/>: snake_case names and enums), the ones its bodies are read and its
    /// answers written with, so that the document names <c>expires_at</c> where the API takes <c>expires_at</c>.
    /// </summary>
    public static void AddServices(IServiceCollection services)
    {
        services.ConfigureHttpJsonOptions(o =>
        {
            o.SerializerOptions.PropertyNamingPolicy = AdminJson.Options.PropertyNamingPolicy;
            o.SerializerOptions.DictionaryKeyPolicy = AdminJson.Options.DictionaryKeyPolicy;
            o.SerializerOptions.DefaultIgnoreCondition = AdminJson.Options.DefaultIgnoreCondition;
            foreach (var converter in AdminJson.Options.Converters.OfType<JsonStringEnumConverter>())
            {
                o.SerializerOptions.Converters.Add(converter);
            }
        });
        services.AddOpenApi(DocumentName, o => o.AddDocumentTransformer((document, _, _) =>
        {
            document.Info = new() { Title = "Custos admin API", Version = "v1", Description = "The control plane of the Custos AI gateway." };
            document.Servers = null;
            return Task.CompletedTask;
        }));
    }

    /// <summary>Answers with the document, generating it first if no request has yet.</summary>
    public async Task WriteAsync(HttpContext context)
    {
        var document = Volatile.Read(ref _document) ?? await GenerateOnceAsync(context.RequestAborted);
        context.Response.ContentType = "application/json;charset=utf-8";
        context.Response.ContentLength = document.Length;
        await context.Response.Body.WriteAsync(document, context.RequestAborted);
    }

    private async Task<byte[]> GenerateOnceAsync(CancellationToken cancellationToken)
    {
        await _generating.WaitAsync(cancellationToken);
        try
        {
            // A generation that failed is not kept: the next request tries again.
            return _document ??= await GenerateAsync(_describedHost, cancellationToken);
        }
        finally
        {
            _generating.Release();
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)] // so that the generator's types load with this method, not its caller
    private static async Task<byte[]> GenerateAsync(Func<WebApplication> describedHost, CancellationToken cancellationToken)
    {
        await using var host = describedHost();

        // The routes reach the API explorer through the routing options, which a started host fills when it builds
        // its pipeline; this one is never started, so its routes are handed over the same way here.
        host.UseRouting();
        host.UseEndpoints(static _ => { });
        var provider = host.Services.GetRequiredKeyedService<IOpenApiDocumentProvider>(DocumentName);
        var document = await provider.GetOpenApiDocumentAsync(cancellationToken);
        using var buffer = new MemoryStream();
        await document.SerializeAsJsonAsync(buffer, OpenApiSpecVersion.OpenApi3_1, cancellationToken);
        return buffer.ToArray();
    }
}
