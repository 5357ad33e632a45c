namespace Custos.Ledger;

/// <summary>
/// How a refused sign-in to the admin API is recorded: an <see cref="AdminRecord"/> by <see cref="Actor"/>, with
/// <see cref="Action"/>, the source address as its target, the refusal's code as its <c>after</c>, and what was presented
/// (never a secret), where, and the request id as its reason. The alert detectors count it toward the source's
/// <c>auth.failures</c>, with the data plane's refused credentials.
/// </summary>
public static class AdminSignIn
{
    /// <summary>The actor of a refused sign-in: nobody known.</summary>
    public const string Actor = "unauthenticated";

    /// <summary>The action of a refused sign-in.</summary>
    public const string Action = "admin.sign_in_denied";

    private const string SourcePrefix = "source:";
    private const string RequestMarker = " (request ";

    /// <summary>The target: the source address, or <c>unknown</c>.</summary>
    public static string Target(string? source) => SourcePrefix + (string.IsNullOrEmpty(source) ? "unknown" : source);

    /// <summary>The reason: what was presented, on which request, and the request id.</summary>
    public static string Reason(string presented, string method, string path, string requestId) => $"{presented} on {method} {path}{RequestMarker}{requestId})";

    /// <summary>The source address of a refused sign-in's record.</summary>
    public static string SourceOf(AdminRecord record) => record.Target.StartsWith(SourcePrefix, StringComparison.Ordinal) ? record.Target[SourcePrefix.Length..] : record.Target;

    /// <summary>The request id in a refused sign-in's reason, or empty.</summary>
    public static string RequestIdOf(AdminRecord record)
    {
        var reason = record.Reason ?? "";
        var at = reason.LastIndexOf(RequestMarker, StringComparison.Ordinal);
        return at < 0 || !reason.EndsWith(')') ? "" : reason[(at + RequestMarker.Length)..^1];
    }
}
