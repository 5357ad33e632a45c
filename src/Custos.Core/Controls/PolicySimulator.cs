using System.Text.Json;
using Custos.Errors;
using Custos.Policy;

namespace Custos.Controls;

/// <summary>What a candidate policy would have changed for one consumer and one control.</summary>
public sealed record SimulationRow(string Consumer, string Control, int Requests, int AllowedToRefused, int RefusedToAllowed, int Unchanged);

/// <summary>The outcome of replaying a window of recorded requests against a candidate policy.</summary>
public sealed record SimulationReport(
    DateTimeOffset From,
    DateTimeOffset To,
    int Replayed,
    int Skipped,
    int AllowedToRefused,
    int RefusedToAllowed,
    IReadOnlyList<SimulationRow> Rows,
    IReadOnlyList<string> Notes);

/// <summary>
/// Replays recorded requests, in time order, against a candidate policy: the same evaluator as the gateway, on
/// fresh counters that are charged with what each request really used. Tells, per consumer and per control,
/// which requests would have gone from allowed to refused and back, before anyone applies the candidate.
/// </summary>
/// <remarks>
/// Limits of a replay, reported in its notes: prompt text is not stored, so prompt rules are not evaluated;
/// requests refused before they were understood (bad JSON, unknown or malformed keys) are skipped; a request
/// that was refused has no recorded usage, so if the candidate allows it, its worst case is charged instead.
/// </remarks>
public static class PolicySimulator
{
    /// <summary>
    /// Refusals made before the request was understood, which no candidate policy decides: every <c>invalid.*</c> code
    /// (its HTTP, body, endpoint, fields) except <c>invalid.model_endpoint</c>, which the policy's models decide; a
    /// credential missing, malformed, ambiguous or unknown; a client that left. Derived, so a new <c>invalid.*</c> code is one.
    /// </summary>
    private static readonly HashSet<string> NotPolicy = Reasons.All
        .Where(reason => reason.Code.StartsWith("invalid.", StringComparison.Ordinal) && reason != Reasons.ModelWrongEndpoint)
        .Concat([Reasons.CredentialMissing, Reasons.CredentialMalformed, Reasons.CredentialAmbiguous, Reasons.CredentialChecksum, Reasons.CredentialUnknown,
            Reasons.CredentialWrongKind, Reasons.ClientCancelled])
        .Select(reason => reason.Code)
        .ToHashSet(StringComparer.Ordinal);

    /// <summary>Replays <paramref name="records"/> (canonical request JSON, oldest first) against <paramref name="candidate"/>.</summary>
    public static async Task<SimulationReport> RunAsync(PolicySnapshot candidate, IAsyncEnumerable<string> records, DateTimeOffset from, DateTimeOffset to,
        CancellationToken cancellationToken = default)
    {
        var clock = new ReplayClock();
        var counters = new InMemoryCounterStore(clock);
        var rows = new Dictionary<(string Consumer, string Control), int[]>();
        int replayed = 0, skipped = 0, toRefused = 0, toAllowed = 0;
        long? firstVersion = null, lastVersion = null;
        var promptRulesSkipped = false;

        await foreach (var json in records.WithCancellation(cancellationToken))
        {
            using var document = JsonDocument.Parse(json);
            var r = document.RootElement;
            var reasons = r.GetProperty("reasons").EnumerateArray().Select(e => e.GetString()!).ToList();
            var credentialId = r.GetProperty("credential_id").GetString();
            var model = r.GetProperty("model").GetString();
            if (credentialId is null || model is null || reasons.Any(NotPolicy.Contains) || r.GetProperty("endpoint").GetString() is { } endpoint && endpoint.StartsWith("/v1/models", StringComparison.Ordinal))
            {
                skipped++;
                continue;
            }

            replayed++;
            if (r.TryGetProperty("policy_version", out var recorded) && recorded.ValueKind == JsonValueKind.Number)
            {
                var number = recorded.GetInt64();
                firstVersion = Math.Min(firstVersion ?? number, number);
                lastVersion = Math.Max(lastVersion ?? number, number);
            }

            var now = DateTimeOffset.Parse(r.GetProperty("timestamp").GetString()!, System.Globalization.CultureInfo.InvariantCulture);
            clock.Now = now;
            var wasAllowed = r.GetProperty("decision").GetString() == "allow";
            var originalControl = reasons.Count > 0 ? ControlOf(reasons[0]) : "allowed";
            var (allowed, control, consumerId) = await EvaluateAsync(candidate, counters, r, credentialId, model, now, cancellationToken);
            promptRulesSkipped |= control == "prompt_not_evaluated";
            var key = (consumerId ?? r.GetProperty("consumer").GetString() ?? credentialId, allowed == wasAllowed ? (allowed ? "allowed" : originalControl) : (allowed ? originalControl : control));
            var counts = rows.TryGetValue(key, out var existing) ? existing : rows[key] = new int[4];
            counts[0]++;
            if (wasAllowed && !allowed)
            {
                counts[1]++;
                toRefused++;
            }
            else if (!wasAllowed && allowed)
            {
                counts[2]++;
                toAllowed++;
            }
            else
            {
                counts[3]++;
            }
        }

        var notes = new List<string>
        {
            // What the replay used, and what it did not: nothing of the store's state, then or now, but the recorded requests.
            (firstVersion is { } first && lastVersion is { } last
                ? FormattableString.Invariant($"The recorded decisions were made under policy version{(first == last ? $" {first}" : $"s {first} to {last}")}; ")
                : "")
            + "the candidate replaces the policy whole: its credentials and their status, its kill switches and suspensions are the candidate's as written, "
            + "not the store's, then or now.",
            "Rate limits, quotas and budgets count from zero at the window's start: what their minute, day or month used before it is not counted.",
            "Requests refused before they were understood (malformed JSON or keys, unknown endpoints) are skipped.",
            "A request the recorded policy refused has no usage on record; where the candidate allows it, its worst case is charged.",
        };
        if (promptRulesSkipped)
        {
            notes.Add("Prompt rules were not evaluated: prompt text is not stored, only its SHA-256.");
        }

        var result = rows.Select(kv => new SimulationRow(kv.Key.Consumer, kv.Key.Control, kv.Value[0], kv.Value[1], kv.Value[2], kv.Value[3]))
            .OrderBy(x => x.Consumer, StringComparer.Ordinal).ThenBy(x => x.Control, StringComparer.Ordinal).ToList();
        return new SimulationReport(from, to, replayed, skipped, toRefused, toAllowed, result, notes);
    }

    private static async Task<(bool Allowed, string Control, string? Consumer)> EvaluateAsync(PolicySnapshot candidate, ICounterStore counters,
        JsonElement r, string credentialId, string model, DateTimeOffset now, CancellationToken cancellationToken)
    {
        if (!candidate.TryGetCredentialById(credentialId, out var credential))
        {
            return (false, "credential", null);
        }

        var consumer = credential.Consumer;
        if (credential.Status != CredentialStatus.Active || credential.ExpiresAt is { } expires && expires <= now)
        {
            return (false, "credential", consumer.Id);
        }

        if (consumer.Refusal is { } refusal)
        {
            // The candidate's kill switches (consumer, service, tenant) and its owners' gaps under require_owners: block, as
            // the gateway checks them after the credential: a candidate that engages one refuses what it would refuse.
            return (false, ControlOf(refusal.Code), consumer.Id);
        }

        if (!consumer.Service.Tenant.Models.TryGetValue(model, out var route))
        {
            return (false, "model", consumer.Id);
        }

        long? Long(string name) => r.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt64() : null;
        var input = Long("input_tokens");
        var output = Long("output_tokens");
        var admission = await AdmissionEvaluator.EvaluateAsync(new AdmissionRequest
        {
            Consumer = consumer,
            Route = route,
            Now = now,
            InputTokens = input ?? 0,
            MaxOutputTokens = Long("max_output_tokens"),
            N = Long("n") ?? 1,
            PromptAvailable = false,
        }, counters, cancellationToken);

        if (admission.Decision != Decision.Allow)
        {
            return (false, admission.Controls.LastOrDefault(c => c.Decision is ControlDecisions.Deny or ControlDecisions.Throttle)?.Control ?? "policy", consumer.Id);
        }

        var actualOutput = output ?? admission.ReservedOutputTokens;
        await AdmissionEvaluator.SettleAsync(admission, counters, input ?? 0, actualOutput, route.Cost(input ?? 0, actualOutput), cancellationToken);
        var promptSkipped = admission.Controls.Any(c => c.Decision == ControlDecisions.NotEvaluated && c.Control == "prompt_restriction");
        return (true, promptSkipped ? "prompt_not_evaluated" : "allowed", consumer.Id);
    }

    /// <summary>The control family a recorded reason code belongs to.</summary>
    private static string ControlOf(string reason) => reason switch
    {
        "throttle.rate_limit" => "rate_limit",
        "deny.quota_exhausted" => "quota",
        "deny.budget_exhausted" => "budget",
        "deny.exceeds_limit" => "limit",
        "deny.token_ceiling" => "token_ceiling",
        "deny.prompt_restricted" => "prompt_restriction",
        "deny.model_not_entitled" or "deny.entitlement_expired" or "deny.entitlement_not_yet_valid" => "entitlement",
        "deny.model_not_found" => "model",
        "deny.consumer_suspended" or "deny.service_suspended" or "deny.tenant_suspended" => "kill_switch",
        "deny.service_ungoverned" => "governance",
        _ when reason.StartsWith("deny.credential", StringComparison.Ordinal) => "credential",
        _ when reason.StartsWith("upstream.", StringComparison.Ordinal) => "allowed",
        _ => reason,
    };

    private sealed class ReplayClock : TimeProvider
    {
        public DateTimeOffset Now { get; set; }

        public override DateTimeOffset GetUtcNow() => Now;
    }
}
