namespace Custos.Policy;

/// <summary>How serious a <see cref="PolicyDiagnostic"/> is.</summary>
public enum DiagnosticSeverity
{
    /// <summary>The policy cannot be used.</summary>
    Error,

    /// <summary>The policy can be used, but something needs attention (for example missing governance).</summary>
    Warning,
}

/// <summary>One problem found in a policy document, with where it is.</summary>
/// <param name="Severity">Error or warning.</param>
/// <param name="Line">1-based line in the source, or 0 when not known.</param>
/// <param name="Column">1-based column in the source, or 0 when not known.</param>
/// <param name="Path">The path of the offending node, for example <c>tenants[0].models[1].provider</c>.</param>
/// <param name="Message">What is wrong and, where possible, how to fix it.</param>
public sealed record PolicyDiagnostic(DiagnosticSeverity Severity, int Line, int Column, string Path, string Message)
{
    /// <summary>
    /// Formats as <c>source:line:column: error: path: message</c>, like a compiler; as <c>source: error: path: message</c>
    /// when the problem has no place in the source (a section that is missing altogether).
    /// </summary>
    public string Format(string source)
    {
        var severity = Severity == DiagnosticSeverity.Error ? "error" : "warning";
        return Line > 0
            ? $"{source}:{Line}:{Column}: {severity}: {Path}: {Message}"
            : $"{source}: {severity}: {Path}: {Message}";
    }
}

/// <summary>Thrown where a policy must be valid and is not; carries every diagnostic.</summary>
public sealed class PolicyValidationException(IReadOnlyList<PolicyDiagnostic> diagnostics, string source)
    : Exception(BuildMessage(diagnostics, source))
{
    /// <summary>Every error and warning found.</summary>
    public IReadOnlyList<PolicyDiagnostic> Diagnostics { get; } = diagnostics;

    private static string BuildMessage(IReadOnlyList<PolicyDiagnostic> diagnostics, string source)
        => $"The policy in {source} is not valid:{Environment.NewLine}" +
           string.Join(Environment.NewLine, diagnostics.Select(d => "  " + d.Format(source)));
}
