using System.Globalization;
using System.Text.Json;
using Custos.Ledger;

namespace Custos.Reports;

/// <summary>
/// One control reading of a request entry (<c>controls[]</c> in docs/ledger.md), as reports read it: what was decided
/// under which limit. What the window had used and what the request asked for, which differ from request to request,
/// are left out (a budget's spend is <see cref="RequestEntry.BudgetsUsed"/>), so that equal readings, and equal lists of
/// them, are one object (<see cref="RequestEntry.Parse(string, long, string)"/>): an incident window of 740,000 requests
/// held 2.3 GB when every request had its own.
/// </summary>
/// <param name="Control">For example <c>rate_limit.requests</c>.</param>
/// <param name="Scope">For example <c>consumer:support-web</c>, or null.</param>
/// <param name="Decision"><c>pass</c>, <c>deny</c>, <c>throttle</c>, <c>modify</c>, <c>warn</c> or <c>not_evaluated</c>.</param>
/// <param name="Limit">The limit in force.</param>
/// <param name="Detail">The short explanation, if any.</param>
public sealed record ControlReading(string Control, string? Scope, string Decision, decimal? Limit, string? Detail);

/// <summary>A request entry of the ledger, with the fields the reports use, and where it sits in its chain.</summary>
public sealed record RequestEntry
{
    /// <summary>The chain (node) the entry is in.</summary>
    public required string ChainId { get; init; }

    /// <summary>Its sequence number in that chain.</summary>
    public required long Seq { get; init; }

    /// <summary>The request id.</summary>
    public required string RequestId { get; init; }

    /// <summary>When the gateway received it.</summary>
    public required DateTimeOffset Timestamp { get; init; }

    /// <summary>Tenant, or null when the caller was not identified.</summary>
    public string? Tenant { get; init; }

    /// <summary>Service.</summary>
    public string? Service { get; init; }

    /// <summary>Consumer.</summary>
    public string? Consumer { get; init; }

    /// <summary>Consumer category.</summary>
    public string? Category { get; init; }

    /// <summary>Credential id.</summary>
    public string? CredentialId { get; init; }

    /// <summary>The model asked for.</summary>
    public string? Model { get; init; }

    /// <summary>allow, deny or throttle.</summary>
    public required string Decision { get; init; }

    /// <summary>Reason codes.</summary>
    public IReadOnlyList<string> Reasons { get; init; } = [];

    /// <summary>The policy version in force for it.</summary>
    public long PolicyVersion { get; init; }

    /// <summary>Cost, when known.</summary>
    public decimal? Cost { get; init; }

    /// <summary>Currency of <see cref="Cost"/>.</summary>
    public string? Currency { get; init; }

    /// <summary>HTTP status the client received.</summary>
    public int Status { get; init; }

    /// <summary>completed, denied, upstream_error, interrupted, cancelled or failed.</summary>
    public string? Outcome { get; init; }

    /// <summary>Input tokens.</summary>
    public long? InputTokens { get; init; }

    /// <summary>Output tokens.</summary>
    public long? OutputTokens { get; init; }

    /// <summary>True when the token counts are the gateway's estimate.</summary>
    public bool TokensEstimated { get; init; }

    /// <summary>The output ceiling the client asked for.</summary>
    public long? MaxOutputTokens { get; init; }

    /// <summary>The agent run header, when sent.</summary>
    public string? AgentRun { get; init; }

    /// <summary>Client address.</summary>
    public string? ClientAddress { get; init; }

    /// <summary>The controls evaluated (empty for format version 1 and early refusals).</summary>
    public IReadOnlyList<ControlReading> Controls { get; init; } = [];

    /// <summary>For each budget reading of <see cref="Controls"/>, in their order, what its window had spent before the request.</summary>
    public IReadOnlyList<decimal?> BudgetsUsed { get; init; } = [];

    /// <summary>The budget readings of <see cref="Controls"/>, each with what its window had spent before the request.</summary>
    public IEnumerable<(ControlReading Reading, decimal? Used)> Budgets()
    {
        var k = 0;
        foreach (var reading in Controls)
        {
            if (reading.Control == "budget")
            {
                yield return (reading, k < BudgetsUsed.Count ? BudgetsUsed[k] : null);
                k++;
            }
        }
    }

    /// <summary>Where the entry is: <c>chain#seq</c>.</summary>
    public string Position => ChainId + "#" + Seq.ToString(CultureInfo.InvariantCulture);

    /// <summary>True when the request was refused (deny or throttle).</summary>
    public bool Refused => Decision != "allow";

    /// <summary>Reads a stored request entry.</summary>
    public static RequestEntry Parse(StoredRecord record) => Parse(record.ChainId, record.Seq, record.Json);

    /// <summary>Reads a request entry from its canonical JSON.</summary>
    public static RequestEntry Parse(string chainId, long seq, string json)
    {
        using var document = JsonDocument.Parse(json);
        var r = document.RootElement;
        ControlReading[] controls = [];
        List<decimal?>? budgetsUsed = null;
        if (r.TryGetProperty("controls", out var list) && list.ValueKind == JsonValueKind.Array)
        {
            controls = new ControlReading[list.GetArrayLength()];
            var i = 0;
            foreach (var c in list.EnumerateArray())
            {
                var control = Json.Name(c, "control") ?? "";
                controls[i++] = Shared(new ControlReading(control, Json.Name(c, "scope"), Json.Name(c, "decision") ?? "", Json.Decimal(c, "limit"),
                    Json.Name(c, "detail")));
                if (control == "budget")
                {
                    (budgetsUsed ??= []).Add(Json.Decimal(c, "used"));
                }
            }

            controls = SharedList(controls);
        }

        return new RequestEntry
        {
            ChainId = string.Intern(chainId), // a node's chain: a handful of names for any number of entries
            Seq = seq,
            RequestId = Json.Text(r, "request_id") ?? "",
            Timestamp = LedgerTime.Parse(Json.Text(r, "timestamp")!),
            Tenant = Json.Name(r, "tenant"),
            Service = Json.Name(r, "service"),
            Consumer = Json.Name(r, "consumer"),
            Category = Json.Name(r, "category"),
            CredentialId = Json.Name(r, "credential_id"),
            Model = Json.Name(r, "model"),
            Decision = Json.Name(r, "decision") ?? "allow",
            Reasons = r.TryGetProperty("reasons", out var reasons) && reasons.GetArrayLength() > 0
                ? [.. reasons.EnumerateArray().Select(e => string.Intern(e.GetString()!))]
                : [],
            PolicyVersion = Json.Long(r, "policy_version") ?? 0,
            Cost = Json.Text(r, "cost") is { } cost ? decimal.Parse(cost, CultureInfo.InvariantCulture) : null,
            Currency = Json.Name(r, "currency"),
            Status = (int)(Json.Long(r, "status") ?? 0),
            Outcome = Json.Name(r, "outcome"),
            InputTokens = Json.Long(r, "input_tokens"),
            OutputTokens = Json.Long(r, "output_tokens"),
            TokensEstimated = r.TryGetProperty("tokens_estimated", out var estimated) && estimated.ValueKind == JsonValueKind.True,
            MaxOutputTokens = Json.Long(r, "max_output_tokens"),
            AgentRun = Json.Text(r, "agent_run"),
            ClientAddress = Json.Text(r, "client_address"),
            Controls = controls,
            BudgetsUsed = budgetsUsed is null ? [] : budgetsUsed.ToArray(),
        };
    }

    /// <summary>
    /// The list of the entry read last on this thread when <paramref name="controls"/> holds the same readings: consecutive
    /// requests of one consumer are usually decided by the same readings.
    /// </summary>
    private static ControlReading[] SharedList(ControlReading[] controls)
    {
        if (_lastControls is { } last && last.AsSpan().SequenceEqual(controls, ReferenceEqualityComparer.Instance))
        {
            return last;
        }

        return _lastControls = controls;
    }

    [ThreadStatic]
    private static ControlReading[]? _lastControls;

    /// <summary>The one instance of <paramref name="reading"/>'s value: the policy decides how many there are, not the window.</summary>
    private static ControlReading Shared(ControlReading reading)
    {
        if (SharedReadings.Count >= MaxSharedReadings)
        {
            SharedReadings.Clear(); // a policy with more distinct readings than this: they are shared again from here
        }

        return SharedReadings.GetOrAdd(reading, reading);
    }

    private const int MaxSharedReadings = 16_384;

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<ControlReading, ControlReading> SharedReadings = new();
}

/// <summary>An administrative entry of the ledger: who did what to what, before, after, why.</summary>
public sealed record AdminEntry
{
    /// <summary>The chain (node) the entry is in.</summary>
    public required string ChainId { get; init; }

    /// <summary>Its sequence number.</summary>
    public required long Seq { get; init; }

    /// <summary>When.</summary>
    public required DateTimeOffset Timestamp { get; init; }

    /// <summary>The tenant it concerns, if any.</summary>
    public string? Tenant { get; init; }

    /// <summary>Who.</summary>
    public required string Actor { get; init; }

    /// <summary>What, for example <c>credential.revoked</c>.</summary>
    public required string Action { get; init; }

    /// <summary>To what, for example <c>credential:cred-1</c>.</summary>
    public required string Target { get; init; }

    /// <summary>State before.</summary>
    public string? Before { get; init; }

    /// <summary>State after.</summary>
    public string? After { get; init; }

    /// <summary>Why.</summary>
    public string? Reason { get; init; }

    /// <summary>The policy version in force after the action.</summary>
    public long PolicyVersion { get; init; }

    /// <summary>Where the entry is: <c>chain#seq</c>.</summary>
    public string Position => ChainId + "#" + Seq.ToString(CultureInfo.InvariantCulture);

    /// <summary>True for a refused attempt (<c>…_denied</c>).</summary>
    public bool IsDenied => Action.EndsWith("_denied", StringComparison.Ordinal);

    /// <summary>Reads a stored admin entry.</summary>
    public static AdminEntry Parse(StoredRecord record) => Parse(record.ChainId, record.Seq, record.Json);

    /// <summary>Reads an admin entry from its canonical JSON.</summary>
    public static AdminEntry Parse(string chainId, long seq, string json)
    {
        using var document = JsonDocument.Parse(json);
        var r = document.RootElement;
        return new AdminEntry
        {
            ChainId = chainId,
            Seq = seq,
            Timestamp = LedgerTime.Parse(Json.Text(r, "timestamp")!),
            Tenant = Json.Name(r, "tenant"),
            Actor = Json.Text(r, "actor") ?? "",
            Action = Json.Text(r, "action") ?? "",
            Target = Json.Text(r, "target") ?? "",
            Before = Json.Text(r, "before"),
            After = Json.Text(r, "after"),
            Reason = Json.Text(r, "reason"),
            PolicyVersion = Json.Long(r, "policy_version") ?? 0,
        };
    }
}

/// <summary>Small readers of optional JSON fields.</summary>
internal static class Json
{
    public static string? Text(JsonElement element, string name)
        => element.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;

    /// <summary>
    /// A value that repeats across entries (a consumer, a control name, a scope), interned: a window of a million
    /// request entries then holds each name once, not a million times.
    /// </summary>
    public static string? Name(JsonElement element, string name) => Text(element, name) is { } text ? string.Intern(text) : null;

    public static long? Long(JsonElement element, string name)
        => element.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt64() : null;

    public static decimal? Decimal(JsonElement element, string name)
        => element.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDecimal() : null;
}
