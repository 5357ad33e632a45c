using System.CommandLine;
using Custos.Policy;

namespace Custos.Cli.Commands;

/// <summary><c>custos config validate FILE</c>: every error at once, with line and column.</summary>
internal static class ConfigCommand
{
    public static Command Create(TextWriter output)
    {
        var file = new Argument<FileInfo>("file") { Description = "The custos.yaml to check." };
        var validate = new Command("validate", "Check a configuration file and report every error and warning with its line and column.") { file };
        validate.SetAction(parse => Validate(parse.GetValue(file)!, output));
        return new Command("config", "Work with configuration files.") { validate };
    }

    private static int Validate(FileInfo file, TextWriter output)
    {
        var result = CommonOptions.ReadConfig(file);
        foreach (var diagnostic in result.Diagnostics)
        {
            output.WriteLine(diagnostic.Format(file.Name));
        }

        var errors = result.Diagnostics.Count(d => d.Severity == DiagnosticSeverity.Error);
        var warnings = result.Diagnostics.Count - errors;
        if (result.Document is not { } document)
        {
            output.WriteLine($"{file.Name}: invalid: {errors} error(s), {warnings} warning(s).");
            return 1;
        }

        output.WriteLine($"{file.Name}: valid ({warnings} warning(s)): {document.Tenants.Count} tenant(s), {document.Services.Count} service(s), " +
            $"{document.Consumers.Count} consumer(s), {document.Credentials.Count} credential(s); policy sha256 {PolicyVersion.HashOf(document)}.");
        return 0;
    }
}
