using System.Net;

namespace Custos.Gateway.Hosting;

/// <summary>
/// The forward proxy for the gateway's own outbound calls (model providers, identity providers' keys, webhooks): the
/// one the standard environment variables name, as .NET reads them (<c>HTTPS_PROXY</c>, <c>HTTP_PROXY</c>,
/// <c>ALL_PROXY</c>, or their lower-case forms, with <c>NO_PROXY</c>'s exceptions). Calls to this machine (loopback:
/// the demo's provider, a model server beside the gateway) never go through it. When none is set, no proxy is
/// consulted at all, as YARP recommends for forwarding.
/// </summary>
internal static class EgressProxy
{
    private static readonly string[] Variables = ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"];

    /// <summary>The first of the proxy variables that is set, or null when none is.</summary>
    public static string? Variable { get; } = Array.Find(Variables, name => !string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable(name)));

    /// <summary>True when outbound calls go through the proxy the environment names.</summary>
    public static bool Configured => Variable is not null;

    /// <summary>
    /// The proxy for a handler's <c>Proxy</c>, with <c>UseProxy</c> set to <see cref="Configured"/>; null when none is.
    /// Declared after <see cref="Variable"/>, which its initialiser reads.
    /// </summary>
    public static IWebProxy? Proxy { get; } = Configured ? new LoopbackDirect(HttpClient.DefaultProxy) : null;

    /// <summary>The proxy's address without any credentials in it, for the log; null when none is configured.</summary>
    public static string? Address
    {
        get
        {
            if (Variable is null)
            {
                return null;
            }

            var value = Environment.GetEnvironmentVariable(Variable)!.Trim();
            if (!value.Contains("://", StringComparison.Ordinal))
            {
                value = "http://" + value; // as .NET reads a proxy without a scheme
            }

            return Uri.TryCreate(value, UriKind.Absolute, out var uri) ? $"{uri.Scheme}://{uri.Authority}" : "(not a URL)";
        }
    }

    /// <summary>The environment's proxy, except for loopback destinations, which it never sees.</summary>
    private sealed class LoopbackDirect(IWebProxy environment) : IWebProxy
    {
        public ICredentials? Credentials
        {
            get => environment.Credentials;
            set => environment.Credentials = value;
        }

        public Uri? GetProxy(Uri destination) => destination.IsLoopback ? null : environment.GetProxy(destination);

        public bool IsBypassed(Uri host) => host.IsLoopback || environment.IsBypassed(host);
    }
}
