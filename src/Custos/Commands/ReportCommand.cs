using System.CommandLine;
using System.Globalization;
using Custos.Reports;

namespace Custos.Cli.Commands;

/// <summary>
/// <c>custos report incident|posture</c>: the incident evidence pack of one subject over a window, and the NIST CSF 2.0 /
/// AI RMF posture report. Both open the store read-only, build the report with the pure builders of
/// <c>Custos.Reports</c>, and write Markdown, JSON or one self-contained HTML file. Progress goes to stderr.
/// </summary>
internal static class ReportCommand
{
    public static Command Create(TextWriter output, TextWriter error)
    {
        var report = new Command("report", "Evidence reports: an incident pack for one subject and window, the compliance posture, and the chargeback of a window's spend.");
        report.Subcommands.Add(Incident(output, error));
        report.Subcommands.Add(Posture(output, error));
        report.Subcommands.Add(Spend(output, error));
        return report;
    }

    private static Option<string> Format() => new("--format")
    {
        Description = "md (default), json, or html (one self-contained file with a spend chart).",
        DefaultValueFactory = _ => "md",
    };

    private static Option<FileInfo?> Out() => new("--output", "-o") { Description = "Write the report to FILE instead of standard output." };

    private static Command Incident(TextWriter output, TextWriter error)
    {
        var consumer = new Option<string?>("--consumer") { Description = "The subject: a consumer id." };
        var credential = new Option<string?>("--credential") { Description = "The subject: a credential id." };
        var service = new Option<string?>("--service") { Description = "The subject: a service id." };
        var tenant = new Option<string?>("--tenant") { Description = "The subject: a tenant id." };
        var from = new Option<string>("--from") { Description = "Start of the window: ISO 8601 or an age such as 2h, 7d.", Required = true };
        var to = new Option<string?>("--to") { Description = "End of the window (exclusive), same forms. Default: now." };
        var format = Format();
        var file = Out();
        var data = CommonOptions.Data();
        var config = CommonOptions.Config();
        var keys = CommonOptions.PublicKeys();
        var command = new Command("incident",
            "The evidence pack of one consumer, credential, service or tenant over a window: timeline, policy versions and controls, entitlements and approvals, " +
            "credential history, spend against budget, alerts, interventions, owners, chain verification, and a classification (misuse, misconfiguration, missing governance).")
        {
            consumer, credential, service, tenant, from, to, format, file, data, config, keys,
        };
        var remote = RemoteOptions.Add(command, RemoteDescription);
        command.SetAction(async (parse, cancellationToken) =>
        {
            var subjects = new[] { ("consumer", parse.GetValue(consumer)), ("credential", parse.GetValue(credential)), ("service", parse.GetValue(service)), ("tenant", parse.GetValue(tenant)) }
                .Where(s => !string.IsNullOrWhiteSpace(s.Item2)).ToList();
            if (subjects.Count != 1)
            {
                throw new CliException("name exactly one subject: --consumer, --credential, --service or --tenant");
            }

            var subject = new IncidentSubject(subjects[0].Item1, subjects[0].Item2!);
            var reportFormat = ParseFormat(parse.GetValue(format));
            var now = DateTimeOffset.UtcNow;
            var (start, end) = RequestsCommand.ParseWindowToNow(parse.GetValue(from)!, parse.GetValue(to), now);
            if (parse.GetValue(remote.Server) is not null)
            {
                RequireOnlyServer(parse, data, config, keys);
                var path = $"/admin/v1/reports/incident?subject={subject.Kind}&id={Uri.EscapeDataString(subject.Id)}" +
                    $"&from={Uri.EscapeDataString(Ledger.LedgerTime.Format(start))}&to={Uri.EscapeDataString(Ledger.LedgerTime.Format(end))}&format={FormatName(reportFormat)}";
                return await RemoteAsync(parse, remote, path, parse.GetValue(file), output, error,
                    $"Incident pack for {subject}, {ReportText.Time(start)} to {ReportText.Time(end)}", cancellationToken);
            }

            var publicKeys = CommonOptions.PublicKeyPaths(parse.GetValue(keys));
            var directory = CommonOptions.ResolveDataDirectory(parse.GetValue(data), parse.GetValue(config));
            await using var store = await CommonOptions.OpenStoreAsync(directory, parse.GetValue(config), cancellationToken);
            IncidentReport built;
            try
            {
                built = await ReportSources.IncidentAsync(store, directory, subject, start, end, now, error.WriteLine, cancellationToken, verifyAlongside: true,
                    publicKeys);
            }
            catch (ReportSubjectNotFoundException ex)
            {
                throw new CliException(ex.Message);
            }

            var chain = built.Chain;
            var target = parse.GetValue(file);
            await EmitAsync(ReportWriter.Write(built, reportFormat), target, output, cancellationToken);
            var c = built.Classification;
            var summary = $"Incident pack for {subject}, {ReportText.Time(start)} to {ReportText.Time(end)}: {ReportText.Plural(built.Summary.Requests, "request")} " +
                $"({ReportText.Count(built.Summary.Denied + built.Summary.Throttled)} refused), {ReportText.Plural(built.Findings.Count, "finding")}; " +
                (c.Primary is null ? "no classification (nothing found)" : "classified " + string.Join(", then ", c.Ranking.Where(r => r.Score > 0).Select(r => IncidentReportBuilder.Name(r.Class))))
                + $"; chain {chain.Status.Replace('_', ' ')}" + (target is null ? "." : $"; written to {target.FullName}.");
            await (target is null ? error : output).WriteLineAsync(summary);
            return ExitCode(chain);
        });
        return command;
    }

    /// <summary>
    /// 0 for a report whose ledger verified (or could not be checked, which the report says); 2 when the check found the
    /// ledger altered: the report is written all the same, and a script must be able to tell that its evidence failed.
    /// </summary>
    private static int ExitCode(ChainCheck chain) => chain.HasProblems ? 2 : 0;

    private static Command Posture(TextWriter output, TextWriter error)
    {
        var format = Format();
        var file = Out();
        var data = CommonOptions.Data();
        var config = CommonOptions.Config();
        var keys = CommonOptions.PublicKeys();
        var command = new Command("posture",
            "Map NIST CSF 2.0 and NIST AI RMF controls to live evidence from the policy in force, the registry and the ledger: pass, warn or fail, " +
            "with the items that cause it (see docs/compliance.md).")
        {
            format, file, data, config, keys,
        };
        var remote = RemoteOptions.Add(command, RemoteDescription);
        command.SetAction(async (parse, cancellationToken) =>
        {
            var reportFormat = ParseFormat(parse.GetValue(format));
            if (parse.GetValue(remote.Server) is not null)
            {
                RequireOnlyServer(parse, data, config, keys);
                return await RemoteAsync(parse, remote, $"/admin/v1/reports/posture?format={FormatName(reportFormat)}", parse.GetValue(file),
                    output, error, "Posture report", cancellationToken);
            }

            var now = DateTimeOffset.UtcNow;
            var publicKeys = CommonOptions.PublicKeyPaths(parse.GetValue(keys));
            var directory = CommonOptions.ResolveDataDirectory(parse.GetValue(data), parse.GetValue(config));
            await using var store = await CommonOptions.OpenStoreAsync(directory, parse.GetValue(config), cancellationToken);
            var built = await ReportSources.PostureAsync(store, directory, now, error.WriteLine, cancellationToken, verifyAlongside: true, publicKeys);
            var chain = built.Chain;
            var target = parse.GetValue(file);
            await EmitAsync(ReportWriter.Write(built, reportFormat), target, output, cancellationToken);
            var failing = built.Controls.Where(x => x.Status == "fail").Select(x => x.Id).ToList();
            var summary = $"Posture under policy version {built.PolicyVersion?.ToString(CultureInfo.InvariantCulture) ?? "(none)"}: {built.Summary.Pass} pass, {built.Summary.Warn} warn, " +
                $"{built.Summary.Fail} fail{(failing.Count > 0 ? " (" + string.Join(", ", failing) + ")" : "")}; chain {chain.Status.Replace('_', ' ')}" +
                (target is null ? "." : $"; written to {target.FullName}.");
            await (target is null ? error : output).WriteLineAsync(summary);
            return ExitCode(chain);
        });
        return command;
    }

    private static Command Spend(TextWriter output, TextWriter error)
    {
        var from = new Option<string>("--from") { Description = "Start of the window: ISO 8601 or an age such as 2h, 7d.", Required = true };
        var to = new Option<string?>("--to") { Description = "End of the window (exclusive), same forms. Default: now." };
        var format = new Option<string>("--format") { Description = "csv (default) or json.", DefaultValueFactory = _ => "csv" };
        var file = Out();
        var data = CommonOptions.Data();
        var config = CommonOptions.Config();
        var command = new Command("spend",
            "The chargeback of a window: spend, requests and tokens per tenant, service, consumer, model and currency, summed from the request entries, " +
            "with the policy versions whose prices costed them (see docs/reports.md).")
        {
            from, to, format, file, data, config,
        };
        var remote = RemoteOptions.Add(command, "Have this gateway's admin API sum the lines (GET /admin/v1/spend/lines, e.g. http://127.0.0.1:8081) instead of reading the store; " +
            "needs an admin key that reads spend (platform_admin, security_auditor, finance), within its scope.");
        command.SetAction(async (parse, cancellationToken) =>
        {
            var csv = parse.GetValue(format)?.ToLowerInvariant() switch
            {
                null or "csv" => true,
                "json" => false,
                var other => throw new CliException($"--format must be csv or json, not '{other}'"),
            };
            var (start, end) = RequestsCommand.ParseWindowToNow(parse.GetValue(from)!, parse.GetValue(to), DateTimeOffset.UtcNow);
            if (end <= start)
            {
                throw new CliException($"--to ({ReportText.Time(end)}) must be after --from ({ReportText.Time(start)})");
            }

            var target = parse.GetValue(file);
            var what = $"Spend lines, {ReportText.Time(start)} to {ReportText.Time(end)}";
            if (parse.GetValue(remote.Server) is { } server)
            {
                RemoteOptions.RefuseStore(parse, data, config, "has the gateway sum the lines from its store");
                var path = $"/admin/v1/spend/lines?from={Uri.EscapeDataString(Ledger.LedgerTime.Format(start))}&to={Uri.EscapeDataString(Ledger.LedgerTime.Format(end))}" +
                    $"&format={(csv ? "csv" : "json")}";
                string text;
                using (var admin = remote.Open(parse, RemoteTimeout)!)
                {
                    (text, _) = await admin.GetTextAsync(path, "Content-Disposition", cancellationToken);
                }

                await EmitAsync(text, target, output, cancellationToken);
                await (target is null ? error : output).WriteLineAsync($"{what}, summed by the gateway at {server}" + (target is null ? "." : $"; written to {target.FullName}."));
                return 0;
            }

            var directory = CommonOptions.ResolveDataDirectory(parse.GetValue(data), parse.GetValue(config));
            await using var store = await CommonOptions.OpenStoreAsync(directory, parse.GetValue(config), cancellationToken);
            var sums = new SpendLines();
            await foreach (var row in store.QueryAsync(new Ledger.LedgerQuery { Kind = "request", From = start, To = end, Limit = int.MaxValue }, cancellationToken))
            {
                sums.Add(RequestEntry.Parse(row));
            }

            var lines = sums.Lines();
            await EmitAsync(csv ? SpendLines.ToCsv(lines)
                : System.Text.Json.JsonSerializer.Serialize(new { from = start, to = end, lines }, SpendJson) + Environment.NewLine, target, output, cancellationToken);
            var totals = lines.Where(l => l.Currency is not null).GroupBy(l => l.Currency!, StringComparer.Ordinal).OrderBy(c => c.Key, StringComparer.Ordinal)
                .Select(c => $"{(c.Sum(l => l.Spend) / 1.000000000000000000000000000000000m).ToString(CultureInfo.InvariantCulture)} {c.Key}").ToList();
            await (target is null ? error : output).WriteLineAsync($"{what}: {ReportText.Plural(lines.Count, "line")}, {ReportText.Plural(lines.Sum(l => l.Requests), "request")}, " +
                $"spend {(totals.Count == 0 ? "0" : string.Join(" and ", totals))}" + (target is null ? "." : $"; written to {target.FullName}."));
            return 0;
        });
        return command;
    }

    private static readonly System.Text.Json.JsonSerializerOptions SpendJson = new()
    {
        PropertyNamingPolicy = System.Text.Json.JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
    };

    /// <summary>What <c>--server</c> does for a report: the gateway makes it, within the admin key's role and scope.</summary>
    private const string RemoteDescription = "Have this gateway's admin API make the report (e.g. http://127.0.0.1:8081) instead of reading the store; needs an admin key "
        + "whose role and scope cover it. The gateway verifies the chain with its own key only.";

    /// <summary>Refuses the options that name a store, or the keys to verify it with, beside <c>--server</c>: one of them would be ignored.</summary>
    private static void RequireOnlyServer(ParseResult parse, Option<string?> data, Option<FileInfo?> config, Option<FileInfo[]> keys)
    {
        RemoteOptions.RefuseStore(parse, data, config, "has the gateway make the report from its store");

        if (parse.GetValue(keys) is { Length: > 0 })
        {
            throw new CliException("--public-key verifies the chain here, from the store; with --server the gateway verifies it with its own key only: "
                + "drop --public-key, or read the store (--data, --config) to verify with every node's key");
        }
    }

    /// <summary>
    /// Fetches a report from the admin API given with <c>--server</c> and writes it as the local one is written, with a
    /// one-line summary; 2 when the gateway's chain check (<c>X-Custos-Chain</c>) found the ledger altered.
    /// </summary>
    private static async Task<int> RemoteAsync(ParseResult parse, RemoteOptions remote, string path, FileInfo? target, TextWriter output, TextWriter error, string what,
        CancellationToken cancellationToken)
    {
        string text;
        string? chain;
        var server = parse.GetValue(remote.Server)!;
        using (var admin = remote.Open(parse, RemoteTimeout)!)
        {
            (text, chain) = await admin.GetTextAsync(path, "X-Custos-Chain", cancellationToken);
        }

        await EmitAsync(text, target, output, cancellationToken);
        var summary = $"{what}, made by the gateway at {server}; chain {(chain ?? "not reported").Replace('_', ' ')} (with that node's key)" +
            (target is null ? "." : $"; written to {target.FullName}.");
        await (target is null ? error : output).WriteLineAsync(summary);
        return chain == ChainCheck.Failed ? 2 : 0;
    }

    /// <summary>How long a report may take to make through the admin API: a window of 743,441 requests took 25 s (docs/reports.md).</summary>
    private static readonly TimeSpan RemoteTimeout = TimeSpan.FromMinutes(10);

    private static string FormatName(ReportFormat format) => format switch
    {
        ReportFormat.Json => "json",
        ReportFormat.Html => "html",
        _ => "md",
    };

    private static ReportFormat ParseFormat(string? text) => text?.ToLowerInvariant() switch
    {
        null or "md" or "markdown" => ReportFormat.Md,
        "json" => ReportFormat.Json,
        "html" => ReportFormat.Html,
        _ => throw new CliException($"--format must be md, json or html, not '{text}'"),
    };

    private static async Task EmitAsync(string text, FileInfo? target, TextWriter output, CancellationToken cancellationToken)
    {
        if (target is null)
        {
            await output.WriteAsync(text);
            return;
        }

        await CommonOptions.WriteFileAsync(target, text, "-o", cancellationToken);
    }
}
