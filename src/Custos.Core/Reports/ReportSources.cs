using System.Security.Cryptography;
using System.Text.Json;
using Custos.Ledger;

namespace Custos.Reports;

/// <summary>The subject of an incident pack names nothing the policy history or the window's ledger knows.</summary>
public sealed class ReportSubjectNotFoundException(IncidentSubject subject)
    : Exception($"no {subject.Kind} '{subject.Id}' in any policy version, and no request entry of the window names it")
{
    /// <summary>The subject asked for.</summary>
    public IncidentSubject Subject { get; } = subject;
}

/// <summary>
/// Gathers what the report builders need from a store: the subject's requests of a window and its baseline, the admin
/// entries, shed counts, access requests, notifications, alerts, and a chain verification with the data folder's
/// checkpoint public key. One place for the CLI (<c>custos report</c>) and the console (<c>/admin/v1/reports</c>).
/// </summary>
public static class ReportSources
{
    /// <summary>Entries read between two progress lines.</summary>
    public const int ProgressEvery = 100_000;

    /// <summary>
    /// The incident pack of <paramref name="subject"/> from <paramref name="from"/> to <paramref name="to"/> (exclusive).
    /// <paramref name="progress"/>, when given, receives a line every <see cref="ProgressEvery"/> entries read.
    /// With <paramref name="verifyAlongside"/>, the chain is verified on a thread of its own while the window is read
    /// (two cores at once: for the CLI, not inside the gateway). The chain is verified with <paramref name="publicKeys"/>
    /// (PEM files), or without them with the checkpoint public key of <paramref name="dataDirectory"/>.
    /// </summary>
    /// <exception cref="ReportSubjectNotFoundException">Nothing names the subject.</exception>
    public static async Task<IncidentReport> IncidentAsync(ICustosStore store, string dataDirectory, IncidentSubject subject, DateTimeOffset from,
        DateTimeOffset to, DateTimeOffset now, Action<string>? progress, CancellationToken cancellationToken, bool verifyAlongside = false,
        IReadOnlyList<string>? publicKeys = null)
    {
        progress = verifyAlongside ? Serialized(progress) : progress;
        await using var verification = new Verification(store, dataDirectory, publicKeys, from, to, $"the window {ReportText.Time(from)} to {ReportText.Time(to)}",
            verifyAlongside, progress, cancellationToken);
        var history = await store.GetHistoryAsync(cancellationToken);

        // The subject's requests of the window; a credential has no column of its own, so its window is scanned.
        var filter = new LedgerQuery
        {
            Consumer = subject.Kind == "consumer" ? subject.Id : null,
            Service = subject.Kind == "service" ? subject.Id : null,
            Tenant = subject.Kind == "tenant" ? subject.Id : null,
            Limit = int.MaxValue,
        };
        // The alerts first: the requests that raised them are kept when the window's scan meets them.
        var alerts = await store.ListAlertsAsync(null, IncidentReportBuilder.AlertLimit, cancellationToken);
        var window = new IncidentWindow(from, to, alerts.Where(a => a.RaisedAt >= from && a.RaisedAt < to).Select(a => a.Signal.RequestId).OfType<string>());
        await ScanAsync(store, filter with { From = from, To = to }, subject, window.Add, progress, "window", cancellationToken);
        if (!IncidentReportBuilder.Exists(subject, history) && window.Count == 0)
        {
            throw new ReportSubjectNotFoundException(subject);
        }

        var (baselineFrom, baselineTo) = IncidentReportBuilder.BaselineWindow(from, to);
        var baseline = new BaselineStats(baselineFrom, baselineTo);
        await ScanAsync(store, filter with { From = baselineFrom, To = baselineTo }, subject, baseline.Add, progress, "baseline", cancellationToken);

        var admin = await ReadAdminAsync(store, to, cancellationToken);
        var shed = await CountShedAsync(store, from, to, cancellationToken);
        var chain = await verification.ResultAsync();
        return IncidentReportBuilder.Build(new IncidentInput
        {
            Subject = subject,
            From = from,
            To = to,
            GeneratedAt = now,
            History = history,
            Window = window,
            Baseline = baseline,
            AdminEntries = admin,
            AccessRequests = await store.ListAccessRequestsAsync(null, cancellationToken),
            Notifications = await store.ListNotificationsAsync(100_000, cancellationToken),
            Alerts = alerts,
            CredentialLastUsed = await store.GetCredentialLastUsedAsync(cancellationToken),
            Chain = chain,
            ShedInWindow = shed,
        });
    }

    /// <summary>
    /// The NIST CSF 2.0 / AI RMF posture report as of <paramref name="now"/>. With <paramref name="verifyAlongside"/>, the
    /// chain is verified on a thread of its own while the last 90 days are read. The chain is verified with
    /// <paramref name="publicKeys"/> (PEM files), or without them with the checkpoint public key of <paramref name="dataDirectory"/>.
    /// </summary>
    public static async Task<PostureReport> PostureAsync(ICustosStore store, string dataDirectory, DateTimeOffset now, Action<string>? progress,
        CancellationToken cancellationToken, bool verifyAlongside = false, IReadOnlyList<string>? publicKeys = null)
    {
        progress = verifyAlongside ? Serialized(progress) : progress;
        await using var verification = new Verification(store, dataDirectory, publicKeys, null, null, "the whole ledger", verifyAlongside, progress, cancellationToken);
        var history = await store.GetHistoryAsync(cancellationToken);
        var admin = await ReadAdminAsync(store, null, cancellationToken);
        var activity = new LedgerActivity(now, PostureReportBuilder.RevocationTimes(admin));
        await ScanAsync(store, new LedgerQuery { From = activity.Since, Limit = int.MaxValue }, null, activity.Add, progress, "last 90 days", cancellationToken);
        var chain = await verification.ResultAsync();
        return PostureReportBuilder.Build(new PostureInput
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
    }

    /// <summary>Streams request entries, keeping those of <paramref name="subject"/> (all when null), with progress for big windows.</summary>
    private static async Task ScanAsync(ICustosStore store, LedgerQuery query, IncidentSubject? subject, Action<RequestEntry> add, Action<string>? progress,
        string what, CancellationToken cancellationToken)
    {
        long read = 0, kept = 0;
        await foreach (var row in store.QueryAsync(query, cancellationToken))
        {
            if (++read % ProgressEvery == 0)
            {
                progress?.Invoke($"  reading the ledger ({what}): {ReportText.Count(read)} entries, {ReportText.Count(kept)} for the subject…");
            }

            var entry = RequestEntry.Parse(row);
            if (subject is null || IncidentReportBuilder.Matches(subject, entry))
            {
                kept++;
                add(entry);
            }
        }
    }

    private static async Task<List<AdminEntry>> ReadAdminAsync(ICustosStore store, DateTimeOffset? to, CancellationToken cancellationToken)
    {
        var result = new List<AdminEntry>();
        await foreach (var row in store.QueryAsync(new LedgerQuery { Kind = "admin", To = to, Limit = int.MaxValue }, cancellationToken))
        {
            result.Add(AdminEntry.Parse(row));
        }

        return result;
    }

    private static async Task<long> CountShedAsync(ICustosStore store, DateTimeOffset from, DateTimeOffset? to, CancellationToken cancellationToken)
    {
        long shed = 0;
        await foreach (var row in store.QueryAsync(new LedgerQuery { Kind = "shed", From = from, To = to, Limit = int.MaxValue }, cancellationToken))
        {
            using var document = JsonDocument.Parse(row.Json);
            shed += document.RootElement.GetProperty("count").GetInt64();
        }

        return shed;
    }

    /// <summary>
    /// Runs the ledger verifier with the public keys given, or the folder's checkpoint public key; without a key, says so
    /// instead of failing the report. A chain signed by a key not given is not verified, not broken (<see cref="ChainCheck.From"/>).
    /// </summary>
    private static async Task<ChainCheck> VerifyAsync(ICustosStore store, string directory, IReadOnlyList<string>? publicKeys, DateTimeOffset? from,
        DateTimeOffset? to, Action<string>? progress, string scope, CancellationToken cancellationToken)
    {
        var keyPaths = publicKeys is { Count: > 0 } ? publicKeys : [CheckpointKey.PublicPath(directory)];
        var keys = new List<ECDsa>();
        try
        {
            foreach (var keyPath in keyPaths)
            {
                if (!File.Exists(keyPath))
                {
                    return ChainCheck.NotRun(publicKeys is { Count: > 0 } ? $"public key not found: {keyPath}."
                        : $"no checkpoint public key at {keyPath}; the gateway writes it when it first starts on this folder.");
                }

                try
                {
                    keys.Add(CheckpointKey.LoadPublic(keyPath));
                }
                catch (InvalidDataException ex)
                {
                    return ChainCheck.NotRun(ex.Message);
                }
            }

            return await VerifyWithAsync(store, keys, from, to, progress, scope, cancellationToken);
        }
        finally
        {
            keys.ForEach(key => key.Dispose());
        }
    }

    private static async Task<ChainCheck> VerifyWithAsync(ICustosStore store, IReadOnlyList<ECDsa> keys, DateTimeOffset? from, DateTimeOffset? to,
        Action<string>? progress, string scope, CancellationToken cancellationToken)
    {
        var result = await LedgerVerifier.VerifyAsync(store, new VerificationOptions
        {
            PublicKeys = [.. keys],
            From = from,
            To = to,
            Progress = progress is null ? null : new VerifyProgress(progress),
        }, cancellationToken);
        return ChainCheck.From(result, scope);
    }

    /// <summary>
    /// <paramref name="progress"/> one line at a time: with the verification alongside, two threads report progress, and
    /// the writer behind it need not be safe for that.
    /// </summary>
    private static Action<string>? Serialized(Action<string>? progress)
    {
        if (progress is null)
        {
            return null;
        }

        var gate = new Lock();
        return line =>
        {
            lock (gate)
            {
                progress(line);
            }
        };
    }

    /// <summary>
    /// A report's chain verification: run when its result is asked for, or, alongside, started at once on a thread of its
    /// own and stopped (and waited for) should the report end without it.
    /// </summary>
    private sealed class Verification : IAsyncDisposable
    {
        private readonly Func<CancellationToken, Task<ChainCheck>> _verify;
        private readonly CancellationToken _cancellationToken;
        private readonly CancellationTokenSource? _stop;
        private readonly Task<ChainCheck>? _running;

        public Verification(ICustosStore store, string directory, IReadOnlyList<string>? publicKeys, DateTimeOffset? from, DateTimeOffset? to,
            string scope, bool alongside, Action<string>? progress, CancellationToken cancellationToken)
        {
            _verify = token => VerifyAsync(store, directory, publicKeys, from, to, progress, scope, token);
            _cancellationToken = cancellationToken;
            if (alongside)
            {
                _stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                _running = Task.Factory.StartNew(() => _verify(_stop.Token), _stop.Token, TaskCreationOptions.LongRunning, TaskScheduler.Default).Unwrap();
            }
        }

        public Task<ChainCheck> ResultAsync() => _running ?? _verify(_cancellationToken);

        public async ValueTask DisposeAsync()
        {
            if (_running is null || _stop is null)
            {
                return;
            }

            if (!_running.IsCompleted)
            {
                await _stop.CancelAsync();
            }

            await ((Task)_running).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            _stop.Dispose();
        }
    }

    /// <summary>Verification progress, synchronously (System.Progress would post to the thread pool and report out of order).</summary>
    private sealed class VerifyProgress(Action<string> progress) : IProgress<long>
    {
        private long _last;

        public void Report(long value)
        {
            if (value >= _last + ProgressEvery)
            {
                _last = value;
                progress($"  verifying the ledger: {ReportText.Count(value)} entries…");
            }
        }
    }
}
