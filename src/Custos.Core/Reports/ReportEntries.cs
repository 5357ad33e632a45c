using System.Buffers;
using System.Globalization;
using System.Text;
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

    /// <summary>
    /// The policy version whose kill switch, suspension or revocation cut it while it ran (<c>deny.killed_in_flight</c>), or
    /// null.
    /// </summary>
    public long? CutByPolicyVersion { get; init; }

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
        var buffer = ArrayPool<byte>.Shared.Rent(Encoding.UTF8.GetMaxByteCount(json.Length));
        try
        {
            return Parse(chainId, seq, buffer.AsSpan(0, Encoding.UTF8.GetBytes(json, buffer)));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    /// <summary>
    /// Reads a request entry from its canonical JSON in UTF-8, in one pass: each member the reports use is read as the
    /// reader meets it and the rest skipped (a lookup per member in a parsed document took most of a pack's time).
    /// </summary>
    public static RequestEntry Parse(string chainId, long seq, ReadOnlySpan<byte> json)
    {
        var reader = new Utf8JsonReader(json);
        if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
        {
            throw new JsonException("A ledger entry is a JSON object.");
        }

        string? requestId = null, timestamp = null, tenant = null, service = null, consumer = null, category = null, credential = null, model = null;
        string? decision = null, cost = null, currency = null, outcome = null, agentRun = null, clientAddress = null;
        long? policyVersion = null, cutBy = null, status = null, inputTokens = null, outputTokens = null, maxOutputTokens = null;
        var estimated = false;
        IReadOnlyList<string> reasons = [];
        ControlReading[] controls = [];
        decimal?[] budgetsUsed = [];
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            var name = Member(ref reader);
            reader.Read();
            switch (name)
            {
                case Members.RequestId: requestId = JsonText.Text(ref reader); break;
                case Members.Timestamp: timestamp = JsonText.Text(ref reader); break;
                case Members.Tenant: tenant = JsonText.Name(ref reader, (int)Members.Tenant); break;
                case Members.Service: service = JsonText.Name(ref reader, (int)Members.Service); break;
                case Members.Consumer: consumer = JsonText.Name(ref reader, (int)Members.Consumer); break;
                case Members.Category: category = JsonText.Name(ref reader, (int)Members.Category); break;
                case Members.CredentialId: credential = JsonText.Name(ref reader, (int)Members.CredentialId); break;
                case Members.Model: model = JsonText.Name(ref reader, (int)Members.Model); break;
                case Members.Decision: decision = JsonText.Name(ref reader, (int)Members.Decision); break;
                case Members.Reasons: reasons = ReadReasons(ref reader); break;
                case Members.PolicyVersion: policyVersion = JsonText.Long(ref reader); break;
                case Members.CutByPolicyVersion: cutBy = JsonText.Long(ref reader); break;
                case Members.Cost: cost = JsonText.Text(ref reader); break;
                case Members.Currency: currency = JsonText.Name(ref reader, (int)Members.Currency); break;
                case Members.Status: status = JsonText.Long(ref reader); break;
                case Members.Outcome: outcome = JsonText.Name(ref reader, (int)Members.Outcome); break;
                case Members.InputTokens: inputTokens = JsonText.Long(ref reader); break;
                case Members.OutputTokens: outputTokens = JsonText.Long(ref reader); break;
                case Members.TokensEstimated: estimated = reader.TokenType == JsonTokenType.True; break;
                case Members.MaxOutputTokens: maxOutputTokens = JsonText.Long(ref reader); break;
                case Members.AgentRun: agentRun = JsonText.Text(ref reader); break;
                case Members.ClientAddress: clientAddress = JsonText.Text(ref reader); break;
                case Members.Controls: (controls, budgetsUsed) = ReadControls(ref reader); break;
                default: reader.Skip(); break;
            }
        }

        return new RequestEntry
        {
            ChainId = string.Intern(chainId), // a node's chain: a handful of names for any number of entries
            Seq = seq,
            RequestId = requestId ?? "",
            Timestamp = LedgerTime.Parse(timestamp!),
            Tenant = tenant,
            Service = service,
            Consumer = consumer,
            Category = category,
            CredentialId = credential,
            Model = model,
            Decision = decision ?? "allow",
            Reasons = reasons,
            PolicyVersion = policyVersion ?? 0,
            CutByPolicyVersion = cutBy,
            Cost = cost is null ? null : decimal.Parse(cost, CultureInfo.InvariantCulture),
            Currency = currency,
            Status = (int)(status ?? 0),
            Outcome = outcome,
            InputTokens = inputTokens,
            OutputTokens = outputTokens,
            TokensEstimated = estimated,
            MaxOutputTokens = maxOutputTokens,
            AgentRun = agentRun,
            ClientAddress = clientAddress,
            Controls = controls,
            BudgetsUsed = budgetsUsed,
        };
    }

    private static IReadOnlyList<string> ReadReasons(ref Utf8JsonReader reader)
    {
        if (reader.TokenType != JsonTokenType.StartArray)
        {
            reader.Skip();
            return [];
        }

        List<string>? reasons = null;
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (JsonText.Name(ref reader, (int)Members.Reasons) is { } reason)
            {
                (reasons ??= []).Add(reason);
            }
        }

        return reasons is null ? [] : reasons.ToArray();
    }

    private static (ControlReading[] Controls, decimal?[] BudgetsUsed) ReadControls(ref Utf8JsonReader reader)
    {
        if (reader.TokenType != JsonTokenType.StartArray)
        {
            reader.Skip();
            return ([], []);
        }

        var controls = new List<ControlReading>(16);
        List<decimal?>? budgetsUsed = null;
        while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
        {
            if (reader.TokenType != JsonTokenType.StartObject)
            {
                reader.Skip();
                continue;
            }

            string? control = null, scope = null, decision = null, detail = null;
            decimal? limit = null, used = null;
            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                var name = Member(ref reader);
                reader.Read();
                switch (name)
                {
                    case Members.Control: control = JsonText.Name(ref reader, Slot(controls.Count, Members.Control)); break;
                    case Members.Scope: scope = JsonText.Name(ref reader, Slot(controls.Count, Members.Scope)); break;
                    case Members.Decision: decision = JsonText.Name(ref reader, Slot(controls.Count, Members.Decision)); break;
                    case Members.Limit: limit = JsonText.Decimal(ref reader); break;
                    case Members.Detail: detail = JsonText.Name(ref reader, Slot(controls.Count, Members.Detail)); break;
                    case Members.Used: used = JsonText.Decimal(ref reader); break;
                    default: reader.Skip(); break;
                }
            }

            controls.Add(Shared(controls.Count, control ?? "", scope, decision ?? "", limit, detail));
            if (control == "budget")
            {
                (budgetsUsed ??= []).Add(used);
            }
        }

        return (controls.Count == 0 ? [] : SharedList([.. controls]), budgetsUsed is null ? [] : [.. budgetsUsed]);
    }

    /// <summary>The slot of <see cref="JsonText"/>'s recent names that a reading's name at <paramref name="position"/> uses.</summary>
    private static int Slot(int position, Members member) => 32 + (position * 4) + (member switch
    {
        Members.Control => 0,
        Members.Scope => 1,
        Members.Decision => 2,
        _ => 3,
    });

    /// <summary>The members of a request entry (and of its control readings) the reports read.</summary>
    private enum Members
    {
        Other, RequestId, Timestamp, Tenant, Service, Consumer, Category, CredentialId, Model, Decision, Reasons, PolicyVersion, Cost, Currency, Status,
        Outcome, InputTokens, OutputTokens, TokensEstimated, MaxOutputTokens, AgentRun, ClientAddress, Controls, Control, Scope, Limit, Detail, Used,
        CutByPolicyVersion,
    }

    /// <summary>Which member the reader's property name is (names with escapes, which the canonical form never writes, are read as text).</summary>
    private static Members Member(ref Utf8JsonReader reader)
    {
        if (reader.ValueIsEscaped || reader.HasValueSequence)
        {
            return MemberOf(Encoding.UTF8.GetBytes(reader.GetString()!));
        }

        return MemberOf(reader.ValueSpan);
    }

    private static Members MemberOf(ReadOnlySpan<byte> name) => name.Length switch
    {
        4 when name.SequenceEqual("cost"u8) => Members.Cost,
        5 when name.SequenceEqual("model"u8) => Members.Model,
        5 when name.SequenceEqual("scope"u8) => Members.Scope,
        5 when name.SequenceEqual("limit"u8) => Members.Limit,
        4 when name.SequenceEqual("used"u8) => Members.Used,
        6 when name.SequenceEqual("tenant"u8) => Members.Tenant,
        6 when name.SequenceEqual("status"u8) => Members.Status,
        6 when name.SequenceEqual("detail"u8) => Members.Detail,
        7 when name.SequenceEqual("service"u8) => Members.Service,
        7 when name.SequenceEqual("reasons"u8) => Members.Reasons,
        7 when name.SequenceEqual("outcome"u8) => Members.Outcome,
        7 when name.SequenceEqual("control"u8) => Members.Control,
        8 when name.SequenceEqual("consumer"u8) => Members.Consumer,
        8 when name.SequenceEqual("category"u8) => Members.Category,
        8 when name.SequenceEqual("decision"u8) => Members.Decision,
        8 when name.SequenceEqual("currency"u8) => Members.Currency,
        8 when name.SequenceEqual("controls"u8) => Members.Controls,
        9 when name.SequenceEqual("timestamp"u8) => Members.Timestamp,
        9 when name.SequenceEqual("agent_run"u8) => Members.AgentRun,
        10 when name.SequenceEqual("request_id"u8) => Members.RequestId,
        12 when name.SequenceEqual("input_tokens"u8) => Members.InputTokens,
        13 when name.SequenceEqual("credential_id"u8) => Members.CredentialId,
        13 when name.SequenceEqual("output_tokens"u8) => Members.OutputTokens,
        14 when name.SequenceEqual("policy_version"u8) => Members.PolicyVersion,
        14 when name.SequenceEqual("client_address"u8) => Members.ClientAddress,
        16 when name.SequenceEqual("tokens_estimated"u8) => Members.TokensEstimated,
        17 when name.SequenceEqual("max_output_tokens"u8) => Members.MaxOutputTokens,
        21 when name.SequenceEqual("cut_by_policy_version"u8) => Members.CutByPolicyVersion,
        _ => Members.Other,
    };

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

    [ThreadStatic]
    private static ControlReading?[]? _lastAt;

    /// <summary>
    /// The one instance of a reading: the one read last at <paramref name="position"/> on this thread when it is the same
    /// (its names are interned, so compared by reference), else the shared one.
    /// </summary>
    private static ControlReading Shared(int position, string control, string? scope, string decision, decimal? limit, string? detail)
    {
        var last = _lastAt ??= new ControlReading?[64];
        if (position < last.Length && last[position] is { } known && ReferenceEquals(known.Control, control) && ReferenceEquals(known.Scope, scope)
            && ReferenceEquals(known.Decision, decision) && ReferenceEquals(known.Detail, detail) && known.Limit == limit)
        {
            return known;
        }

        var reading = Shared(new ControlReading(control, scope, decision, limit, detail));
        if (position < last.Length)
        {
            last[position] = reading;
        }

        return reading;
    }

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
}

/// <summary>Readers of a <see cref="Utf8JsonReader"/>'s current value, for members that may be missing, null or of another kind.</summary>
internal static class JsonText
{
    private const int CacheSlots = 1024;

    /// <summary>Slots of the names read last, one per member and place (see the callers); more than this share the cache.</summary>
    private const int RecentSlots = 256;

    [ThreadStatic]
    private static (byte[] Utf8, string Text)[]? _names;

    [ThreadStatic]
    private static (byte[] Utf8, string Text)[]? _recent;

    /// <summary>The string value, or null (and the value skipped) when it is not a string.</summary>
    public static string? Text(ref Utf8JsonReader reader)
    {
        if (reader.TokenType != JsonTokenType.String)
        {
            reader.Skip();
            return null;
        }

        return reader.GetString();
    }

    /// <summary>
    /// A string value that repeats across entries (a consumer, a control name, a scope), interned: a window of a
    /// million request entries then holds each name once. The name read last at <paramref name="slot"/> (the same member
    /// of the entry before, as a rule) is compared first, then a cache of recent names by their UTF-8 bytes, so that
    /// no string is made to find a known name.
    /// </summary>
    public static string? Name(ref Utf8JsonReader reader, int slot)
    {
        if (reader.TokenType != JsonTokenType.String)
        {
            reader.Skip();
            return null;
        }

        if (reader.ValueIsEscaped || reader.HasValueSequence)
        {
            return string.Intern(reader.GetString()!);
        }

        var utf8 = reader.ValueSpan;
        var recent = _recent ??= new (byte[], string)[RecentSlots];
        if (slot < RecentSlots && recent[slot].Utf8 is { } last && utf8.SequenceEqual(last))
        {
            return recent[slot].Text;
        }

        var names = _names ??= new (byte[], string)[CacheSlots];
        var hash = new HashCode();
        hash.AddBytes(utf8);
        ref var cached = ref names[hash.ToHashCode() & (CacheSlots - 1)];
        if (cached.Utf8 is not { } known || !utf8.SequenceEqual(known))
        {
            cached = (utf8.ToArray(), string.Intern(reader.GetString()!));
        }

        if (slot < RecentSlots)
        {
            recent[slot] = cached;
        }

        return cached.Text;
    }

    /// <summary>The number as a long, or null when the value is not a number.</summary>
    public static long? Long(ref Utf8JsonReader reader)
    {
        if (reader.TokenType != JsonTokenType.Number)
        {
            reader.Skip();
            return null;
        }

        return reader.GetInt64();
    }

    /// <summary>The number as a decimal, or null when the value is not a number.</summary>
    public static decimal? Decimal(ref Utf8JsonReader reader)
    {
        if (reader.TokenType != JsonTokenType.Number)
        {
            reader.Skip();
            return null;
        }

        return reader.GetDecimal();
    }
}
