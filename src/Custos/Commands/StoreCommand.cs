using System.CommandLine;

namespace Custos.Cli.Commands;

/// <summary>
/// <c>custos store show|record-format</c>: the running gateway's store, and how every node stores new ledger records
/// (the PostgreSQL store: compressed once no node of an earlier version is left).
/// </summary>
internal static class StoreCommand
{
    public static Command Create(TextWriter output) => new("store", "The running gateway's store: where it is, and how new ledger records are stored.")
    {
        Show(output), RecordFormat(output),
    };

    private static Command Show(TextWriter output)
    {
        var command = new Command("show", "Where the store is, and how new ledger records are stored (zstd or json).");
        return AdminClient.Define(command, output, (_, admin, cancellationToken) => admin.GetAsync("/admin/v1/store", cancellationToken), (_, store) =>
        {
            output.WriteLine("store:         " + AdminClient.Text(store, "description"));
            output.WriteLine("record format: " + AdminClient.Text(store, "record_format")
                + (store.GetProperty("record_format_switchable").GetBoolean() ? "" : " (fixed: the embedded store always compresses)"));
        });
    }

    private static Command RecordFormat(TextWriter output)
    {
        var format = new Argument<string>("format") { Description = "zstd: compressed against a dictionary of the store (about a tenth of the bytes); json: the canonical JSON itself." };
        format.AcceptOnlyFromAmong("zstd", "json");
        var reason = new Option<string>("--reason") { Description = "Why: recorded in the ledger.", Required = true };
        var command = new Command("record-format",
            "How every node stores new ledger records (platform_admin; the PostgreSQL store). Switch a database made before Custos compressed records to zstd once no node of an earlier version is left: those cannot read compressed records.")
        {
            format, reason,
        };
        return AdminClient.Define(command, output, (parse, admin, cancellationToken) => admin.PutAsync("/admin/v1/store/record-format", new
        {
            format = parse.GetValue(format),
            reason = parse.GetValue(reason),
        }, cancellationToken), (_, root) => AdminClient.WriteChange(output, root));
    }
}
