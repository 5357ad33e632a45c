using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.FileProviders;
using Microsoft.Extensions.Primitives;

namespace Custos.Gateway.Console;

/// <summary>
/// The console on the admin listener: a small single-page app (<c>/console/</c>) built into the assembly, no front-end
/// build step, that signs in with an admin key (or an OIDC token) and reads and acts through the admin API, which
/// enforces every permission. The pages set a strict Content-Security-Policy: scripts and styles only from
/// <c>/console/</c>, no inline code, no framing. See <c>docs/console.md</c>.
/// </summary>
internal static class ConsoleHost
{
    public const string Path = "/console";

    private const string SecurityPolicy =
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; " +
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

    public static void Use(WebApplication app)
    {
        var files = new FirstUseFileProvider(() => new ManifestEmbeddedFileProvider(typeof(ConsoleHost).Assembly, "Console/wwwroot"));
        app.Use((context, next) =>
        {
            var path = context.Request.Path;
            if (path == "/" || path == Path)
            {
                context.Response.Redirect(Path + "/");
                return Task.CompletedTask;
            }

            if (path.StartsWithSegments(Path))
            {
                var headers = context.Response.Headers;
                headers.ContentSecurityPolicy = SecurityPolicy;
                headers.XContentTypeOptions = "nosniff";
                headers.XFrameOptions = "DENY";
                headers["Referrer-Policy"] = "no-referrer";

                // Revalidate every time (the ETag makes that a 304): a new gateway version never runs an old script.
                headers.CacheControl = "no-cache";
            }

            return next(context);
        });
        app.UseDefaultFiles(new DefaultFilesOptions { FileProvider = files, RequestPath = Path });
        app.UseStaticFiles(new StaticFileOptions { FileProvider = files, RequestPath = Path });
    }

    /// <summary>
    /// Opens the console's files on the first console request rather than at start: their manifest is XML, and reading it
    /// loads the XML libraries (about 3 MB of memory) into every gateway, whether anyone opens the console or not.
    /// </summary>
    private sealed class FirstUseFileProvider(Func<IFileProvider> open) : IFileProvider
    {
        private readonly Lazy<IFileProvider> _files = new(open);

        public IFileInfo GetFileInfo(string subpath) => _files.Value.GetFileInfo(subpath);

        public IDirectoryContents GetDirectoryContents(string subpath) => _files.Value.GetDirectoryContents(subpath);

        public IChangeToken Watch(string filter) => NullChangeToken.Singleton; // built into the assembly: never changes
    }
}
