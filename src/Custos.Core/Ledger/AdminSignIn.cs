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

    /// <summary>The target: the source address, or <c>unknown</c>.</summary>
    public static string Target(string? source) => SourcePrefix + (string.IsNullOrEmpty(source) ? "unknown" : source);

    /// <summary>
    /// The record of a refused sign-in from <paramref name="source"/> at <paramref name="at"/>: its refusal's
    /// <paramref name="code"/> as <c>after</c>, what was <paramref name="presented"/> (never a secret), the method and path,
    /// and <paramref name="requestId"/> in its reason for readers, and carried as <see cref="AdminRecord.RequestId"/> for the
    /// alert detectors (the reason holds a path the caller chose, so it is not read back).
    /// </summary>
    public static AdminRecord Record(DateTimeOffset at, string? source, string code, string presented, string method, string path, string requestId,
        long policyVersion) => new()
        {
            Timestamp = at,
            Actor = Actor,
            Action = Action,
            Target = Target(source),
            After = code,
            Reason = $"{presented} on {method} {path} (request {requestId})",
            RequestId = requestId,
            PolicyVersion = policyVersion,
        };

    /// <summary>The source address of a refused sign-in's record.</summary>
    public static string SourceOf(AdminRecord record) => record.Target.StartsWith(SourcePrefix, StringComparison.Ordinal) ? record.Target[SourcePrefix.Length..] : record.Target;
}
