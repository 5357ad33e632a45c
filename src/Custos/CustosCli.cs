using System.CommandLine;
using Custos.Cli.Commands;

namespace Custos.Cli;

/// <summary>The <c>custos</c> command line: one sub-command per verb of the contract.</summary>
internal static class CustosCli
{
    public static async Task<int> RunAsync(string[] args, TextWriter output, TextWriter error)
    {
        // Ledger entries hold what callers sent: printed, a control character in one is shown as its escape.
        output = new TerminalWriter(output);
        error = new TerminalWriter(error);
        var root = new RootCommand("Custos: an accountable AI API gateway. It enforces policy at the gateway and proves afterwards who called which model, under which policy version, and what it cost.")
        {
            DemoCommand.Create(output),
            ServeCommand.Create(output, error),
            RequestsCommand.Create(output),
            ChangesCommand.Create(output),
            ConfigCommand.Create(output),
            KeysCommand.Create(output),
            PolicyCommand.Create(output),
            ServicesCommand.Create(output),
            OwnersCommand.Create(output),
            BudgetsCommand.Create(output),
            BudgetsCommand.Spend(output),
            AccessCommand.Create(output),
            KillSwitchCommand.Create(output),
            StoreCommand.Create(output),
            AlertsCommand.Create(output),
            AuditCommand.Create(output, error),
            InitCommand.Create(output),
            ReportCommand.Create(output, error),
        };

        // Without the default handler a CliException reaches the catch below: one line, no stack trace.
        // On SIGINT/SIGTERM System.CommandLine cancels the command's token and, after ProcessTerminationTimeout (2 s by
        // default), gives up waiting and exits with 130/143: a gateway still draining requests and flushing its ledger
        // (up to 30 s for in-flight requests, 10 s for the spool) must be given the time it needs.
        var configuration = new InvocationConfiguration
        {
            Output = output,
            Error = error,
            EnableDefaultExceptionHandler = false,
            ProcessTerminationTimeout = TimeSpan.FromSeconds(60),
        };
        var parsed = root.Parse(args);
        try
        {
            return await parsed.InvokeAsync(configuration);
        }
        catch (CliException ex)
        {
            await error.WriteLineAsync("error: " + ex.Message);
            return ex.ExitCode;
        }
        catch (Exception ex) when (ex is InvalidDataException or IOException or UnauthorizedAccessException)
        {
            // Stored data that is damaged or was altered (a spool segment, a ledger record), or a file or folder the command was
            // given that cannot be read or written (missing, no permission, disk full): say what and where, in one line.
            await error.WriteLineAsync("error: " + ex.Message);
            return 1;
        }
        catch (Exception ex) when (Storage.SqliteStore.Describe(ex) is { } what)
        {
            // The store damaged (cut short, a page overwritten), not a database, or in a folder that cannot be written: which
            // file and what is wrong, in one line.
            await error.WriteLineAsync($"error: the store {StoreFile(parsed)}: {what}");
            return 1;
        }
        catch (OperationCanceledException)
        {
            // Ctrl+C during a call: stopped, as a shell expects (128 + SIGINT).
            return 130;
        }
    }

    /// <summary>The store file the command read or wrote: <c>custos.db</c> in its <c>--data</c> folder (or the config's).</summary>
    private static string StoreFile(ParseResult parsed)
    {
        string? data = null;
        FileInfo? config = null;
        try
        {
            data = parsed.GetValue<string?>("--data");
        }
        catch (InvalidOperationException)
        {
        }

        try
        {
            config = parsed.GetValue<FileInfo?>("--config");
        }
        catch (InvalidOperationException)
        {
        }

        try
        {
            return Path.Combine(Commands.CommonOptions.ResolveDataDirectory(data, config), "custos.db");
        }
        catch (Exception ex) when (ex is CliException or IOException or InvalidDataException or UnauthorizedAccessException)
        {
            return "custos.db";
        }
    }
}

/// <summary>A failure to report to the user as one clear line, without a stack trace.</summary>
internal sealed class CliException(string message, int exitCode = 1) : Exception(message)
{
    public int ExitCode { get; } = exitCode;
}
