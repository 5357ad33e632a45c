using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Serialization;
using Custos.Ledger;
using Custos.Policy;

namespace Custos.Reports;

/// <summary>The output formats of the reports.</summary>
public enum ReportFormat
{
    /// <summary>Markdown, for people and tickets.</summary>
    Md,

    /// <summary>JSON, every section, for tools.</summary>
    Json,

    /// <summary>One self-contained HTML file (inline CSS and SVG, no external assets).</summary>
    Html,
}

/// <summary>The result of running the ledger verifier for a report, or why it was not run.</summary>
/// <param name="Status"><c>verified</c>, <c>failed</c> or <c>not_verified</c>.</param>
/// <param name="Entries">Entries whose hashes were recomputed.</param>
/// <param name="Checkpoints">Signed checkpoints checked.</param>
/// <param name="Unsealed">Entries not yet sealed by a checkpoint.</param>
/// <param name="Problems">What the verifier found wrong, each pinned to chain, sequence and request id.</param>
/// <param name="Detail">What was verified, or why nothing was, in words.</param>
public sealed record ChainCheck(string Status, long Entries, int Checkpoints, long Unsealed, IReadOnlyList<string> Problems, string Detail)
{
    /// <summary>Verified, nothing wrong.</summary>
    public const string Verified = "verified";

    /// <summary>The verifier found problems.</summary>
    public const string Failed = "failed";

    /// <summary>The verifier could not run (for example no public key).</summary>
    public const string NotVerified = "not_verified";

    /// <summary>True when the verifier found a problem.</summary>
    [JsonIgnore]
    public bool HasProblems => Status == Failed;

    /// <summary>
    /// The check from a verifier run over <paramref name="scope"/> (words such as "the window …"). A chain whose
    /// checkpoints are signed by a key that was not given (<c>unknown_key</c>: another node's, on a store many nodes
    /// share) is not verified, which is not a sign of tampering: with nothing else wrong, the check is
    /// <see cref="NotVerified"/> and names those chains; other problems make it <see cref="Failed"/>.
    /// </summary>
    public static ChainCheck From(VerificationResult result, string scope)
    {
        var what = $"{result.Entries.ToString("N0", CultureInfo.InvariantCulture)} entries in {result.Chains} chain(s) recomputed over {scope}, " +
            $"{result.Checkpoints} signed checkpoint(s) checked, {result.Unsealed.ToString("N0", CultureInfo.InvariantCulture)} entries not yet sealed";
        var unknown = result.Problems.Where(p => p.Kind == "unknown_key").Select(p => p.ChainId).Distinct(StringComparer.Ordinal).ToList();
        var problems = result.Problems.Where(p => p.Kind != "unknown_key").ToList();
        var notVerified = unknown.Count == 0 ? ""
            : $" Not verified: no public key given for chain {string.Join(", ", unknown)} (pass each node's checkpoint public key with --public-key).";
        return result.Ok
            ? new ChainCheck(Verified, result.Entries, result.Checkpoints, result.Unsealed, [], what + ": intact.")
            : problems.Count == 0
            ? new ChainCheck(NotVerified, result.Entries, result.Checkpoints, result.Unsealed, [], what + ": nothing wrong where a key was given." + notVerified)
            : new ChainCheck(Failed, result.Entries, result.Checkpoints, result.Unsealed, [.. problems.Select(p => p.ToString())],
                what + $": {problems.Count} problem(s); the first bad entry of each chain is named." + notVerified);
    }

    /// <summary>The verifier did not run, because of <paramref name="reason"/>.</summary>
    public static ChainCheck NotRun(string reason) => new(NotVerified, 0, 0, 0, [], reason);
}

/// <summary>Formatting shared by the report writers.</summary>
public static class ReportText
{
    /// <summary>The JSON options of every report: snake_case names, enums as snake_case strings, indented.</summary>
    public static JsonSerializerOptions JsonOptions { get; } = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DictionaryKeyPolicy = null,
        WriteIndented = true,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    /// <summary>An instant for people: <c>2026-03-01 10:15:02 UTC</c>.</summary>
    public static string Time(DateTimeOffset time) => time.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture) + " UTC";

    /// <summary>An optional instant, or a dash.</summary>
    public static string Time(DateTimeOffset? time) => time is { } t ? Time(t) : "-";

    /// <summary>A money amount with up to six decimals, no trailing zeros beyond two.</summary>
    public static string Money(decimal amount, string? currency = null)
    {
        var text = Math.Round(amount, 6).ToString("0.00####", CultureInfo.InvariantCulture);
        return currency is null ? text : text + " " + currency;
    }

    /// <summary>An integer with thousands separators.</summary>
    public static string Count(long value) => value.ToString("N0", CultureInfo.InvariantCulture);

    /// <summary>A budget in words: <c>100 USD per month (hard)</c>.</summary>
    public static string Budget(BudgetConfig budget, string? currency)
        => $"{PolicyNames.Normalize(budget.Amount).ToString(CultureInfo.InvariantCulture)}{(currency is null ? "" : " " + currency)} per {PolicyNames.Of(budget.Period)} ({PolicyNames.Of(budget.Mode)})";

    /// <summary><c>1 request</c>, <c>3 requests</c>.</summary>
    public static string Plural(long count, string singular, string? plural = null)
        => Count(count) + " " + (count == 1 ? singular : plural ?? singular + "s");
}
