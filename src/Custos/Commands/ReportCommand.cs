using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Custos.Ledger;
using Custos.Reports;

namespace Custos.Cli.Commands;

/// <summary>
/// <c>custos report incident|posture</c>: the incident evidence pack of one subject over a window, and the NIST CSF 2.0 /
/// AI RMF posture report. Both open the store read-only, build the report with the pure builders of
/// <c>Custos.Reports</c>, and write Markdown, JSON or one self-contained HTML file. Progress goes to stderr.
/// </summary>
internal static class ReportCommand
{
    /// <summary>Entries read between two progress lines on stderr.</summary>
    private const int ProgressEvery = 100_000;

    public static Command Create(TextWriter output, TextWriter error)
    {
        var report = new Command("report", "Evidence reports: an incident pack for one subject and window, and the compliance posture.");
        report.Subcommands.Add(Incident(output, error));
        report.Subcommands.Add(Posture(output, error));
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
        var command = new Command("incident",
            "The evidence pack of one consumer, credential, service or tenant over a window: timeline, policy versions and controls, entitlements and approvals, " +
            "credential history, spend against budget, alerts, interventions, owners, chain verification, and a classification (misuse, misconfiguration, missing governance).")
        {
            consumer, credential, service, tenant, from, to, format, file, data, config,
        };
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
            var start = RequestsCommand.ParseTime(parse.GetValue(from), now, "--from")!.Value;
            var end = RequestsCommand.ParseTime(parse.GetValue(to), now, "--to") ?? now;
            if (end <= start)
            {
                throw new CliException($"--to ({LedgerTime.Format(end)}) must be after --from ({LedgerTime.Format(start)})");
            }

            var directory = CommonOptions.ResolveDataDirectory(parse.GetValue(data), parse.GetValue(config));
            await using var store = await CommonOptions.OpenStoreAsync(directory, parse.GetValue(config), cancellationToken);
            var history = await store.GetHistoryAsync(cancellationToken);

            // The subject's requests of the window; a credential has no column of its own, so its window is scanned.
            var filter = new LedgerQuery
            {
                Consumer = subject.Kind == "consumer" ? subject.Id : null,
                Service = subject.Kind == "service" ? subject.Id : null,
                Tenant = subject.Kind == "tenant" ? subject.Id : null,
                Limit = int.MaxValue,
            };
            var requests = new List<RequestEntry>();
            await ScanAsync(store, filter with { From = start, To = end }, subject, requests.Add, error, "window", cancellationToken);
            if (!IncidentReportBuilder.Exists(subject, history) && requests.Count == 0)
            {
                throw new CliException($"no {subject.Kind} '{subject.Id}' in any policy version, and no request entry of the window names it");
            }

            var (baselineFrom, baselineTo) = IncidentReportBuilder.BaselineWindow(start, end);
            var baseline = new BaselineStats(baselineFrom, baselineTo);
            await ScanAsync(store, filter with { From = baselineFrom, To = baselineTo }, subject, baseline.Add, error, "baseline", cancellationToken);

            var admin = await ReadAdminAsync(store, end, cancellationToken);
            var shed = await CountShedAsync(store, start, end, cancellationToken);
            var chain = await VerifyAsync(store, directory, start, end, error, $"the window {ReportText.Time(start)} to {ReportText.Time(end)}", cancellationToken);
            var built = IncidentReportBuilder.Build(new IncidentInput
            {
                Subject = subject,
                From = start,
                To = end,
                GeneratedAt = now,
                History = history,
                Requests = requests,
                Baseline = baseline,
                AdminEntries = admin,
                AccessRequests = await store.ListAccessRequestsAsync(null, cancellationToken),
                Notifications = await store.ListNotificationsAsync(100_000, cancellationToken),
                Alerts = await store.ListAlertsAsync(null, IncidentReportBuilder.AlertLimit, cancellationToken),
                CredentialLastUsed = await store.GetCredentialLastUsedAsync(cancellationToken),
                Chain = chain,
                ShedInWindow = shed,
            });

            var target = parse.GetValue(file);
            await EmitAsync(ReportWriter.Write(built, reportFormat), target, output, cancellationToken);
            var c = built.Classification;
            var summary = $"Incident pack for {subject}, {ReportText.Time(start)} to {ReportText.Time(end)}: {ReportText.Plural(built.Summary.Requests, "request")} " +
                $"({ReportText.Count(built.Summary.Denied + built.Summary.Throttled)} refused), {ReportText.Plural(built.Findings.Count, "finding")}; " +
                (c.Primary is null ? "no classification (nothing found)" : "classified " + string.Join(", then ", c.Ranking.Where(r => r.Score > 0).Select(r => IncidentReportBuilder.Name(r.Class))))
                + $"; chain {chain.Status.Replace('_', ' ')}" + (target is null ? "." : $"; written to {target.FullName}.");
            await (target is null ? error : output).WriteLineAsync(summary);
            return 0;
        });
        return command;
    }

    private static Command Posture(TextWriter output, TextWriter error)
    {
        var format = Format();
        var file = Out();
        var data = CommonOptions.Data();
        var config = CommonOptions.Config();
        var command = new Command("posture",
            "Map NIST CSF 2.0 and NIST AI RMF controls to live evidence from the policy in force, the registry and the ledger: pass, warn or fail, " +
            "with the items that cause it (see docs/compliance.md).")
        {
            format, file, data, config,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var reportFormat = ParseFormat(parse.GetValue(format));
            var now = DateTimeOffset.UtcNow;
            var directory = CommonOptions.ResolveDataDirectory(parse.GetValue(data), parse.GetValue(config));
            await using var store = await CommonOptions.OpenStoreAsync(directory, parse.GetValue(config), cancellationToken);
            var history = await store.GetHistoryAsync(cancellationToken);
            var admin = await ReadAdminAsync(store, null, cancellationToken);
            var activity = new LedgerActivity(now, PostureReportBuilder.RevocationTimes(admin));
            await ScanAsync(store, new LedgerQuery { From = activity.Since, Limit = int.MaxValue }, null, activity.Add, error, "last 90 days", cancellationToken);
            var chain = await VerifyAsync(store, directory, null, null, error, "the whole ledger", cancellationToken);
            var built = PostureReportBuilder.Build(new PostureInput
            {
                GeneratedAt = now,
                History = history,
                AdminEntries = admin,
                AccessRequests = await store.ListAccessRequestsAsync(null, cancellationToken),
                Notifications = await store.ListNotificationsAsync(1000, cancellationToken),
                CredentialLastUsed = await store.GetCredentialLastUsedAsync(cancellationToken),
                Activity = activity,
                Shed30 = await CountShedAsync(store, activity.Since30, null, cancellationToken),
                Chain = chain,
            });

            var target = parse.GetValue(file);
            await EmitAsync(ReportWriter.Write(built, reportFormat), target, output, cancellationToken);
            var failing = built.Controls.Where(x => x.Status == "fail").Select(x => x.Id).ToList();
            var summary = $"Posture under policy version {built.PolicyVersion?.ToString(CultureInfo.InvariantCulture) ?? "(none)"}: {built.Summary.Pass} pass, {built.Summary.Warn} warn, " +
                $"{built.Summary.Fail} fail{(failing.Count > 0 ? " (" + string.Join(", ", failing) + ")" : "")}; chain {chain.Status.Replace('_', ' ')}" +
                (target is null ? "." : $"; written to {target.FullName}.");
            await (target is null ? error : output).WriteLineAsync(summary);
            return 0;
        });
        return command;
    }

    private static ReportFormat ParseFormat(string? text) => text?.ToLowerInvariant() switch
    {
        null or "md" or "markdown" => ReportFormat.Md,
        "json" => ReportFormat.Json,
        "html" => ReportFormat.Html,
        _ => throw new CliException($"--format must be md, json or html, not '{text}'"),
    };

    /// <summary>Streams request entries, keeping those of <paramref name="subject"/> (all when null), with progress on stderr for big windows.</summary>
    private static async Task ScanAsync(Ledger.ICustosStore store, LedgerQuery query, IncidentSubject? subject, Action<RequestEntry> add, TextWriter error, string what,
        CancellationToken cancellationToken)
    {
        long read = 0, kept = 0;
        await foreach (var row in store.QueryAsync(query, cancellationToken))
        {
            if (++read % ProgressEvery == 0)
            {
                await error.WriteLineAsync($"  reading the ledger ({what}): {ReportText.Count(read)} entries, {ReportText.Count(kept)} for the subject…");
            }

            var entry = RequestEntry.Parse(row);
            if (subject is null || IncidentReportBuilder.Matches(subject, entry))
            {
                kept++;
                add(entry);
            }
        }
    }

    private static async Task<List<AdminEntry>> ReadAdminAsync(Ledger.ICustosStore store, DateTimeOffset? to, CancellationToken cancellationToken)
    {
        var result = new List<AdminEntry>();
        await foreach (var row in store.QueryAsync(new LedgerQuery { Kind = "admin", To = to, Limit = int.MaxValue }, cancellationToken))
        {
            result.Add(AdminEntry.Parse(row));
        }

        return result;
    }

    private static async Task<long> CountShedAsync(Ledger.ICustosStore store, DateTimeOffset from, DateTimeOffset? to, CancellationToken cancellationToken)
    {
        long shed = 0;
        await foreach (var row in store.QueryAsync(new LedgerQuery { Kind = "shed", From = from, To = to, Limit = int.MaxValue }, cancellationToken))
        {
            using var document = JsonDocument.Parse(row.Json);
            shed += document.RootElement.GetProperty("count").GetInt64();
        }

        return shed;
    }

    /// <summary>Runs the ledger verifier with the folder's checkpoint public key; without the key, says so instead of failing the report.</summary>
    private static async Task<ChainCheck> VerifyAsync(Ledger.ICustosStore store, string directory, DateTimeOffset? from, DateTimeOffset? to, TextWriter error, string scope,
        CancellationToken cancellationToken)
    {
        var keyPath = CheckpointKey.PublicPath(directory);
        if (!File.Exists(keyPath))
        {
            return ChainCheck.NotRun($"no checkpoint public key at {keyPath}; the gateway writes it when it first starts on this folder.");
        }

        using var key = CheckpointKey.LoadPublic(keyPath);
        var result = await LedgerVerifier.VerifyAsync(store, new VerificationOptions
        {
            PublicKeys = [key],
            From = from,
            To = to,
            Progress = new Progress(error),
        }, cancellationToken);
        return ChainCheck.From(result, scope);
    }

    private static async Task EmitAsync(string text, FileInfo? target, TextWriter output, CancellationToken cancellationToken)
    {
        if (target is null)
        {
            await output.WriteAsync(text);
            return;
        }

        if (target.Directory is { Exists: false } folder)
        {
            folder.Create();
        }

        await File.WriteAllTextAsync(target.FullName, text, cancellationToken);
    }

    /// <summary>Verification progress on stderr, synchronously (System.Progress would post to the thread pool and print out of order).</summary>
    private sealed class Progress(TextWriter error) : IProgress<long>
    {
        private long _last;

        public void Report(long value)
        {
            if (value >= _last + ProgressEvery)
            {
                _last = value;
                error.WriteLine($"  verifying the ledger: {ReportText.Count(value)} entries…");
            }
        }
    }
}
