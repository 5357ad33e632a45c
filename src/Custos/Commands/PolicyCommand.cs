using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using Custos.Controls;
using Custos.Ledger;
using Custos.Policy;

namespace Custos.Cli.Commands;

/// <summary>
/// <c>custos policy apply|history|show|diff|simulate</c>. Applying goes through the admin API, so it is authorised
/// and recorded like any other change; reading opens the store directly (read-only), or goes through the admin API with
/// <c>--server</c>; simulating opens the store.
/// </summary>
internal static class PolicyCommand
{
    public static Command Create(TextWriter output)
    {
        var policy = new Command("policy", "Versioned policy: apply a file, list versions, show the policy in force at a time, diff, simulate.");
        policy.Subcommands.Add(Apply(output));
        policy.Subcommands.Add(History(output));
        policy.Subcommands.Add(Show(output));
        policy.Subcommands.Add(Diff(output));
        policy.Subcommands.Add(Simulate(output));
        return policy;
    }

    private static Option<FileInfo> File() => new("--file", "-f") { Description = "The policy YAML file.", Required = true };

    private static Command Apply(TextWriter output)
    {
        var file = File();
        var reason = new Option<string>("--reason") { Description = "Why: recorded with the version.", Required = true };
        var dryRun = new Option<bool>("--dry-run") { Description = "Validate, make every check the gateway makes, and show the diff without applying." };
        var baseVersion = CommonOptions.WholeNumber(new Option<long?>("--base-version")
        {
            Description = "The policy version the file was edited from (`policy show`, or a dry run, prints it): if another is in force "
                + "now, nothing is applied, so a change made since (a key issued, suspended, a kill switch) is not undone.",
        }, 1, long.MaxValue);
        var allowLift = new Option<bool>("--allow-lift")
        {
            Description = "Let the file resume suspended credentials and release kill switches in force; each lift is recorded in the ledger.",
        };
        var command = new Command("apply", "Validate a policy file, show what changes, and put it in force as a new version.")
        {
            file, reason, dryRun, baseVersion, allowLift,
        };
        return AdminClient.Define(command, output, async (parse, admin, cancellationToken) =>
        {
            var path = parse.GetValue(file)!;
            var yaml = ReadFile(path);
            var local = PolicyYaml.Read(yaml);
            if (!admin.Json || !local.IsValid)
            {
                foreach (var diagnostic in local.Diagnostics)
                {
                    output.WriteLine(diagnostic.Format(path.Name));
                }
            }

            if (!local.IsValid)
            {
                throw new CliException($"{path.Name} is not valid; nothing was applied.");
            }

            return await admin.PostAsync("/admin/v1/policy/versions", new
            {
                yaml,
                reason = parse.GetValue(reason),
                dry_run = parse.GetValue(dryRun),
                base_version = parse.GetValue(baseVersion),
                lift_containment = parse.GetValue(allowLift),
            }, cancellationToken);
        }, (_, root) =>
        {
            var changes = root.GetProperty("changes").EnumerateArray().Select(c => c.GetString()).ToList();
            output.WriteLine(changes.Count == 0 ? "No changes." : $"{changes.Count} change(s):");
            foreach (var change in changes)
            {
                output.WriteLine("  " + change);
            }

            foreach (var lift in root.GetProperty("lifted").EnumerateArray())
            {
                output.WriteLine($"  lifts: {lift.GetString()}");
            }

            var version = root.GetProperty("version");
            var number = version.GetProperty("version").GetInt64();
            var sha = version.GetProperty("sha256").GetString();
            output.WriteLine(root.GetProperty("dry_run").GetBoolean()
                ? $"Dry run: nothing applied; version {number} stays in force (--base-version {number} applies the file only onto it)."
                : root.GetProperty("created").GetBoolean()
                    ? $"Applied: policy version {number} (sha256 {sha}) is in force, by {version.GetProperty("author").GetString()}."
                    : $"Unchanged: version {number} (sha256 {sha}) already has this content.");
        });
    }

    private static Command History(TextWriter output)
    {
        var data = CommonOptions.Data();
        var config = CommonOptions.Config();
        var json = new Option<bool>("--json") { Description = "One JSON object per version." };
        var command = new Command("history", "List every policy version: number, hash, author, reason, time.") { data, config, json };
        var remote = RemoteOptions.Add(command);
        command.SetAction(async (parse, cancellationToken) =>
        {
            IReadOnlyList<VersionRow> history;
            if (remote.Open(parse) is { } admin)
            {
                using (admin)
                {
                    history = [.. (await admin.GetAsync("/admin/v1/policy/versions", cancellationToken)).Root.EnumerateArray().Select(VersionRow.Of)];
                }
            }
            else
            {
                await using var store = await CommonOptions.OpenConfiguredStoreAsync(parse.GetValue(data), parse.GetValue(config), cancellationToken);
                history = [.. (await store.GetHistoryAsync(cancellationToken)).Select(v => new VersionRow(v.Number, v.Sha256, v.Author, v.Reason, v.CreatedAt))];
            }

            if (parse.GetValue(json))
            {
                foreach (var v in history)
                {
                    output.WriteLine(JsonSerializer.Serialize(new { version = v.Number, sha256 = v.Sha256, author = v.Author, reason = v.Reason, created_at = LedgerTime.Format(v.CreatedAt) }));
                }

                return 0;
            }

            output.WriteLine($"{"version",7}  {"created (UTC)",-19}  {"sha256",-12}  {"author",-20}  reason");
            foreach (var v in history)
            {
                output.WriteLine($"{v.Number,7}  {v.CreatedAt.UtcDateTime:yyyy-MM-dd HH:mm:ss}  {v.Sha256[..12]}  {v.Author ?? Withheld,-20}  {v.Reason ?? Withheld}");
            }

            return 0;
        });
        return command;
    }

    private static Command Show(TextWriter output)
    {
        var data = CommonOptions.Data();
        var config = CommonOptions.Config();
        var at = new Option<string?>("--at") { Description = "The policy in force at this time (ISO 8601, or an age such as 2h). Default: now." };
        var version = CommonOptions.WholeNumber(new Option<long?>("--version") { Description = "A version number instead of a time." }, 1, long.MaxValue);
        var json = new Option<bool>("--json") { Description = "The canonical JSON (what the hash covers) instead of YAML." };
        var command = new Command("show", "Print a policy version: the one in force now, at a time, or by number.") { data, config, at, version, json };
        var remote = RemoteOptions.Add(command);
        command.SetAction(async (parse, cancellationToken) =>
        {
            VersionRow selected;
            PolicyDocument document;
            if (remote.Open(parse) is { } admin)
            {
                using (admin)
                {
                    // The API's YAML, as the admin's scope shows it: the whole policy for a gateway-wide admin.
                    var number = parse.GetValue(version);
                    if (parse.GetValue(at) is { } when)
                    {
                        var versions = (await admin.GetAsync("/admin/v1/policy/versions", cancellationToken)).Root.EnumerateArray().Select(VersionRow.Of).ToList();
                        number = Select(versions, v => (v.Number, v.CreatedAt), number, when).Number;
                    }

                    var root = (await admin.GetAsync(number is { } n ? FormattableString.Invariant($"/admin/v1/policy/versions/{n}") : "/admin/v1/policy",
                        cancellationToken)).Root;
                    selected = VersionRow.Of(root.GetProperty("version"));

                    // A scoped admin's view names admins it leaves out (the policy owner's, the approvers), so it is read
                    // for its form only: validated as a whole policy, it was refused, and no scoped admin could show one.
                    document = PolicyYaml.ReadView(root.GetProperty("yaml").GetString()!)
                        ?? throw new CliException($"the admin API at {parse.GetValue(remote.Server)} answered a policy this CLI cannot read; is it of a newer version?");
                }
            }
            else
            {
                await using var store = await CommonOptions.OpenConfiguredStoreAsync(parse.GetValue(data), parse.GetValue(config), cancellationToken);
                var history = await store.GetHistoryAsync(cancellationToken);
                var found = Select(history, v => (v.Number, v.CreatedAt), parse.GetValue(version), parse.GetValue(at));
                (selected, document) = (new VersionRow(found.Number, found.Sha256, found.Author, found.Reason, found.CreatedAt), found.Document);
            }

            output.WriteLine($"# policy version {selected.Number}, sha256 {selected.Sha256}");
            output.WriteLine($"# by {selected.Author ?? Withheld} at {LedgerTime.Format(selected.CreatedAt)}: {selected.Reason ?? Withheld}");
            if (PolicyVersion.HashOf(document) != selected.Sha256)
            {
                output.WriteLine("# as the admin API shows it to your admin key: the part in your scope, owners' webhooks masked unless your role names owners;");
                output.WriteLine("# the sha256 above is the whole policy's");
            }

            output.WriteLine(parse.GetValue(json) ? PolicyVersion.CanonicalJson(document) : PolicyYamlWriter.Write(document));
            return 0;
        });
        return command;
    }

    private static Command Diff(TextWriter output)
    {
        var data = CommonOptions.Data();
        var config = CommonOptions.Config();
        var from = CommonOptions.WholeNumber(new Argument<long>("from") { Description = "The earlier version number." }, 1, long.MaxValue);
        var to = CommonOptions.WholeNumber(new Argument<long>("to") { Description = "The later version number." }, 1, long.MaxValue);
        var command = new Command("diff", "Show what changed between two policy versions.") { from, to, data, config };
        var remote = RemoteOptions.Add(command);
        command.SetAction(async (parse, cancellationToken) =>
        {
            VersionRow a, b;
            IReadOnlyList<string> changes;
            if (remote.Open(parse) is { } admin)
            {
                using (admin)
                {
                    var root = (await admin.GetAsync(FormattableString.Invariant($"/admin/v1/policy/diff?from={parse.GetValue(from)}&to={parse.GetValue(to)}"),
                        cancellationToken)).Root;
                    (a, b) = (VersionRow.Of(root.GetProperty("from")), VersionRow.Of(root.GetProperty("to")));
                    changes = [.. root.GetProperty("changes").EnumerateArray().Select(c => c.GetString()!)];
                }
            }
            else
            {
                await using var store = await CommonOptions.OpenConfiguredStoreAsync(parse.GetValue(data), parse.GetValue(config), cancellationToken);
                var history = await store.GetHistoryAsync(cancellationToken);
                var (before, after) = (Select(history, v => (v.Number, v.CreatedAt), parse.GetValue(from), null), Select(history, v => (v.Number, v.CreatedAt), parse.GetValue(to), null));
                (a, b) = (new VersionRow(before.Number, before.Sha256, null, null, before.CreatedAt), new VersionRow(after.Number, after.Sha256, null, null, after.CreatedAt));
                changes = [.. PolicyDiff.Compute(before.Document, after.Document).Select(c => c.ToString())];
            }

            output.WriteLine($"version {a.Number} ({a.Sha256[..12]}) -> version {b.Number} ({b.Sha256[..12]}): {changes.Count} change(s)");
            foreach (var change in changes)
            {
                output.WriteLine("  " + change);
            }

            return 0;
        });
        return command;
    }

    private static Command Simulate(TextWriter output)
    {
        var file = File();
        var data = CommonOptions.Data();
        var config = CommonOptions.Config();
        var from = new Option<string>("--from") { Description = "Start of the window (ISO 8601 or an age such as 24h).", Required = true };
        var to = new Option<string?>("--to") { Description = "End of the window. Default: now." };
        var json = new Option<bool>("--json") { Description = "The report as JSON." };
        var command = new Command("simulate", "Replay recorded requests of a window against a candidate policy and report what would have changed.")
        {
            file, from, to, data, config, json,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var path = parse.GetValue(file)!;
            var read = PolicyYaml.Read(ReadFile(path));
            if (read.Document is not { } candidate)
            {
                foreach (var d in read.Diagnostics)
                {
                    output.WriteLine(d.Format(path.Name));
                }

                throw new CliException($"{path.Name} is not valid.");
            }

            var now = DateTimeOffset.UtcNow;
            var (start, end) = RequestsCommand.ParseWindowToNow(parse.GetValue(from)!, parse.GetValue(to), now);
            await using var store = await CommonOptions.OpenConfiguredStoreAsync(parse.GetValue(data), parse.GetValue(config), cancellationToken);
            var snapshot = PolicySnapshot.Compile(new PolicyVersion(0, PolicyVersion.HashOf(candidate), "candidate", "simulation", now, candidate), _ => null);
            var records = store.QueryAsync(new LedgerQuery { From = start, To = end, Limit = int.MaxValue }, cancellationToken).Select(r => r.Json);
            var report = await PolicySimulator.RunAsync(snapshot, records, start, end, cancellationToken);
            if (parse.GetValue(json))
            {
                output.WriteLine(JsonSerializer.Serialize(report, new JsonSerializerOptions { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower }));
                return 0;
            }

            output.WriteLine($"Replayed {report.Replayed} request(s) from {LedgerTime.Format(start)} to {LedgerTime.Format(end)} against {path.Name} (sha256 {snapshot.Info.Sha256[..12]}) " +
                $"({report.Skipped} skipped): {report.AllowedToRefused} would be refused that were allowed, {report.RefusedToAllowed} allowed that were refused.");
            output.WriteLine($"  {"consumer",-20} {"control",-22} {"requests",8} {"allow→refuse",13} {"refuse→allow",13} {"unchanged",10}");
            foreach (var row in report.Rows)
            {
                output.WriteLine($"  {row.Consumer,-20} {row.Control,-22} {row.Requests,8} {row.AllowedToRefused,13} {row.RefusedToAllowed,13} {row.Unchanged,10}");
            }

            foreach (var note in report.Notes)
            {
                output.WriteLine("note: " + note);
            }

            return 0;
        });
        return command;
    }

    /// <summary>
    /// The version numbered <paramref name="number"/>, or the one in force at <paramref name="at"/> (default now), among
    /// <paramref name="history"/>: the store's versions, or the rows the admin API lists (<paramref name="of"/> reads each
    /// one's number and time).
    /// </summary>
    private static T Select<T>(IReadOnlyList<T> history, Func<T, (long Number, DateTimeOffset CreatedAt)> of, long? number, string? at)
    {
        if (history.Count == 0)
        {
            throw new CliException("there are no policy versions yet");
        }

        if (number is not null && at is not null)
        {
            throw new CliException("--version and --at each name a version; give one of them");
        }

        if (number is { } n)
        {
            return history.FirstOrDefault(v => of(v).Number == n)
                ?? throw new CliException($"there is no policy version {n}; versions are {of(history[0]).Number} to {of(history[^1]).Number}");
        }

        var instant = RequestsCommand.ParseTime(at, DateTimeOffset.UtcNow, "--at") ?? DateTimeOffset.UtcNow;
        return history.LastOrDefault(v => of(v).CreatedAt <= instant)
            ?? throw new CliException($"no policy was in force at {instant.ToString("u", CultureInfo.InvariantCulture)}; version {of(history[0]).Number} dates from {of(history[0]).CreatedAt:u}");
    }

    /// <summary>What is shown of a version when its author and reason are withheld from a scoped admin (<c>--server</c>).</summary>
    private const string Withheld = "(withheld)";

    /// <summary>One version as a list shows it; author and reason are null when the admin API withheld them.</summary>
    private sealed record VersionRow(long Number, string Sha256, string? Author, string? Reason, DateTimeOffset CreatedAt)
    {
        public static VersionRow Of(JsonElement view) => new(view.GetProperty("version").GetInt64(), view.GetProperty("sha256").GetString()!,
            view.GetProperty("author").GetString(), view.GetProperty("reason").GetString(), view.GetProperty("created_at").GetDateTimeOffset());
    }

    private static string ReadFile(FileInfo file)
        => file.Exists ? System.IO.File.ReadAllText(file.FullName) : throw new CliException($"file not found: {file.FullName}");

}
