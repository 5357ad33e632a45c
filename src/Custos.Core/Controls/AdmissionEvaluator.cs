using System.Buffers.Binary;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Custos.Errors;
using Custos.Metering;
using Custos.Policy;

namespace Custos.Controls;

/// <summary>
/// Evaluates every control of the policy snapshot for one request, in a fixed order, and records each verdict:
/// tenant isolation, entitlement, token ceilings, prompt restrictions, then rate limits, quotas and budgets
/// (reserved together, all or nothing). The first refusal decides; controls after it are not evaluated.
/// Pure apart from the counters, so a replay with the recorded version reproduces the decision.
/// </summary>
public static class AdmissionEvaluator
{
    /// <summary>Output tokens reserved per choice when neither the request nor the policy sets a ceiling.</summary>
    public const long DefaultOutputReservation = 4096;

    /// <summary>Budgets count cost in units of 10⁻⁹ of the currency.</summary>
    public const decimal CostUnit = 1_000_000_000m;

    /// <summary>Money in messages: cents at least, and as many more places as a small amount needs.</summary>
    private const string MoneyFormat = "0.00########";

    /// <summary>
    /// The <see cref="ControlResult.Detail"/> of a soft budget that a request passed (decision <c>warn</c>): the request is
    /// allowed and its entry says the soft limit was exceeded, beside the limit, what was used and reserved, and the policy
    /// version of the entry. One constant, so finance can search entries for it and the hot path builds no text for it.
    /// </summary>
    public const string SoftExceeded = "soft_exceeded";

    /// <summary>
    /// The most one request charges a counter: 2⁵³, about 9 × 10¹⁵ tokens, or 9 million of the currency in
    /// <see cref="CostUnit"/>s. A provider's usage is trusted however large, and a request it says cost more is charged
    /// this much, which exhausts any limit, instead of overflowing the counter into a refund. Exact in Redis's Lua
    /// numbers, and a counter takes a thousand such charges before it could overflow.
    /// </summary>
    public const long MaxCharge = 1L << 53;

    /// <summary>
    /// This process's half of every reservation id, random; the other half counts. Unique across nodes and restarts
    /// without asking the system for random bytes on every request (Guid.NewGuid reads them, a system call each).
    /// </summary>
    private static readonly ulong ReservationPrefix = BinaryPrimitives.ReadUInt64LittleEndian(RandomNumberGenerator.GetBytes(8));

    private static long _reservations;

    /// <summary>Evaluates the controls and, when allowed, reserves the request's worst case.</summary>
    public static async ValueTask<Admission> EvaluateAsync(AdmissionRequest request, ICounterStore counters, CancellationToken cancellationToken = default)
    {
        var admission = new Admission();
        var consumer = request.Consumer;
        var tenant = consumer.Service.Tenant;
        admission.Controls.Add(tenant.IsolationPass);

        if (!CheckEntitlement(request, admission) || !CheckCeilings(request, admission) || !CheckPrompt(request, admission))
        {
            return admission;
        }

        await ReserveAsync(request, admission, counters, cancellationToken);
        if (admission.Decision == Decision.Allow)
        {
            CeilReservedOutput(request, admission);
        }

        return admission;
    }

    /// <summary>The detail of the ceiling <see cref="CeilReservedOutput"/> injects.</summary>
    private static readonly string ReservedCeilingDetail =
        $"injected {DefaultOutputReservation}: the output reserved per choice under a hard budget or token limit, as neither the request nor the policy set a ceiling";

    /// <summary>
    /// Sends the output reserved as the request's ceiling when nothing else bounds it and a limit that counts output was
    /// charged for it: a token quota or rate limit (input and output), or a hard budget on a model whose output has a
    /// price. The reservation assumed <see cref="DefaultOutputReservation"/> tokens a choice, and a provider free to write
    /// 16,000 would overrun the limit by the difference, for every request in flight at once. A soft budget refuses
    /// nothing, so a request under only that is left as it is, as is one under no such limit.
    /// </summary>
    private static void CeilReservedOutput(AdmissionRequest request, Admission admission)
    {
        if (request.MaxOutputTokens is not null || admission.OutputCeiling is not null || admission.ReservedOutputTokens == 0)
        {
            return; // the request or the policy bounds the output already, or there is none (embeddings)
        }

        var charges = admission.Charges;
        for (var i = 0; i < charges.Length; i++)
        {
            var purpose = admission.Purposes[i];
            if (purpose.Kind == ChargeKind.Tokens || (purpose.Kind == ChargeKind.Cost && charges[i].Enforce && request.Route.OutputPerMillion > 0))
            {
                admission.OutputCeiling = DefaultOutputReservation;
                admission.Controls.Add(new ControlResult("token_ceiling.output", purpose.Scope, ControlDecisions.Modify)
                {
                    Limit = DefaultOutputReservation,
                    Detail = ReservedCeilingDetail,
                });
                return;
            }
        }
    }

    private static bool CheckEntitlement(AdmissionRequest request, Admission admission)
    {
        var consumer = request.Consumer;
        Entitlement? outOfWindow = null;
        foreach (var entitlement in consumer.Entitlements)
        {
            if (!entitlement.Models.Contains(request.Route))
            {
                continue;
            }

            if (entitlement.IsValidAt(request.Now))
            {
                admission.Entitlement = entitlement;
                admission.Controls.Add(new ControlResult("entitlement", consumer.Scope, ControlDecisions.Pass)
                {
                    Detail = entitlement.Detail,
                });
                return true;
            }

            outOfWindow ??= entitlement;
        }

        if (outOfWindow is not null)
        {
            var notYet = outOfWindow.ValidFrom > request.Now;
            var reason = notYet ? Reasons.EntitlementNotYetValid : Reasons.EntitlementExpired;
            admission.Controls.Add(new ControlResult("entitlement", consumer.Scope, ControlDecisions.Deny) { Detail = outOfWindow.Detail });
            admission.Refuse(reason, notYet
                ? $"Consumer '{consumer.Id}' is entitled to '{request.Route.Name}' only from {outOfWindow.ValidFrom:u}."
                : $"Consumer '{consumer.Id}' was entitled to '{request.Route.Name}' until {outOfWindow.ValidUntil:u}; ask the policy owner of service '{consumer.Service.Id}' to renew it.");
            return false;
        }

        if (consumer.ExcludedByService.Contains(request.Route))
        {
            // Entitled, but the service's model choice leaves the model out: asking for access would change nothing.
            admission.Controls.Add(new ControlResult("entitlement", consumer.Scope, ControlDecisions.Deny)
            {
                Detail = $"service {consumer.Service.Id}'s models exclude {request.Route.Name}",
            });
            admission.Refuse(Reasons.ModelNotEntitled,
                $"Consumer '{consumer.Id}' is entitled to the model '{request.Route.Name}', but service '{consumer.Service.Id}' allows its consumers only "
                + $"the models it names, and '{request.Route.Name}' is not one of them; ask an owner of service '{consumer.Service.Id}' to add it to the service's models.",
                param: "model");
            return false;
        }

        admission.Controls.Add(new ControlResult("entitlement", consumer.Scope, ControlDecisions.Deny) { Detail = "no entitlement names " + request.Route.Name });
        admission.Refuse(Reasons.ModelNotEntitled,
            $"Consumer '{consumer.Id}' is not entitled to the model '{request.Route.Name}'; ask the policy owner of service '{consumer.Service.Id}' for access.",
            param: "model");
        return false;
    }

    private static bool CheckCeilings(AdmissionRequest request, Admission admission)
    {
        var limits = request.Consumer.Limits;
        var scope = request.Consumer.Scope;
        if (limits.MaxN is { } maxN)
        {
            var ok = request.N <= maxN;
            admission.Controls.Add(new ControlResult("token_ceiling.n", request.Consumer.CeilingScopes.N ?? scope, ok ? ControlDecisions.Pass : ControlDecisions.Deny) { Limit = maxN, Requested = request.N });
            if (!ok)
            {
                admission.Refuse(Reasons.TokenCeiling, $"The request asks for {request.N} choices (with a legacy completion, best_of or n for each prompt); the policy allows {maxN}.",
                    param: request.Prompt?.ChoicesField ?? "n");
                return false;
            }
        }

        if (limits.MaxInputTokens is { } maxInput)
        {
            var ok = request.InputTokens <= maxInput;
            admission.Controls.Add(new ControlResult("token_ceiling.input", request.Consumer.CeilingScopes.Input ?? scope, ok ? ControlDecisions.Pass : ControlDecisions.Deny) { Limit = maxInput, Requested = request.InputTokens });
            if (!ok)
            {
                admission.Refuse(Reasons.TokenCeiling, $"The prompt has about {request.InputTokens} tokens; at most {maxInput} are allowed.", param: request.Prompt?.ConversationField);
                return false;
            }
        }

        if (limits.MaxOutputTokens is { } maxOutput)
        {
            var outputScope = request.Consumer.CeilingScopes.Output ?? scope;
            var mode = limits.OutputCeiling ?? OutputCeilingMode.Clamp;
            var requested = request.MaxOutputTokens;
            if (requested is null)
            {
                admission.OutputCeiling = maxOutput;
                admission.Controls.Add(new ControlResult("token_ceiling.output", outputScope, ControlDecisions.Modify) { Limit = maxOutput, Detail = $"injected {maxOutput}" });
            }
            else if (requested > maxOutput && mode == OutputCeilingMode.Deny)
            {
                admission.Controls.Add(new ControlResult("token_ceiling.output", outputScope, ControlDecisions.Deny) { Limit = maxOutput, Requested = requested });
                admission.Refuse(Reasons.TokenCeiling, $"The request asks for up to {requested} output tokens; at most {maxOutput} are allowed.",
                    param: request.Prompt?.OutputCeilingField ?? "max_tokens");
                return false;
            }
            else if (requested > maxOutput)
            {
                admission.OutputCeiling = maxOutput;
                admission.Controls.Add(new ControlResult("token_ceiling.output", outputScope, ControlDecisions.Modify) { Limit = maxOutput, Requested = requested, Detail = $"clamped {requested} to {maxOutput}" });
            }
            else
            {
                admission.Controls.Add(new ControlResult("token_ceiling.output", outputScope, ControlDecisions.Pass) { Limit = maxOutput, Requested = requested });
            }

            admission.ReservedOutputTokens = Saturating.Multiply(Math.Min(requested ?? maxOutput, maxOutput), Math.Max(1, request.N));
        }
        else
        {
            // Saturating: a ceiling of 2⁶² times four choices must reserve the most there is, not wrap around to a few tokens.
            admission.ReservedOutputTokens = Saturating.Multiply(request.MaxOutputTokens ?? DefaultOutputReservation, Math.Max(1, request.N));
        }

        if (request.Route.Kind == ModelKind.Embedding)
        {
            admission.ReservedOutputTokens = 0;
        }

        return true;
    }

    private static bool CheckPrompt(AdmissionRequest request, Admission admission)
    {
        var service = request.Consumer.Service;
        var rules = service.AllPromptRules;
        if (rules.Length == 0)
        {
            return true;
        }

        if (!request.PromptAvailable)
        {
            admission.Controls.Add(new ControlResult("prompt_restriction", service.Scope, ControlDecisions.NotEvaluated) { Detail = "prompt text is not stored" });
            return true;
        }

        if (request.Prompt is { PromptTokenIds: > 0 })
        {
            // Token ids are decoded by the provider with its model's vocabulary: the rules cannot read them, and a key sent
            // as its token ids went past a deny rule. Refused, whatever the rules' actions: nothing here can be redacted either.
            admission.Controls.Add(new ControlResult("prompt_restriction", service.Scope, ControlDecisions.Deny) { Detail = "prompt sent as token ids; rules read text" });
            admission.Refuse(Reasons.PromptRestricted,
                "The prompt is sent as token ids, which the prompt restrictions of this service cannot read; send it as text.",
                param: request.Prompt.ConversationField);
            return false;
        }

        HashSet<string>? redacted = null; // made on the first redaction
        List<(int Index, int Length)>? found = null;
        List<(int Index, int Length, string Rule)>? toRedact = null;
        char[]? folded = null; // made on the first string beyond ASCII
        int[]? foldMap = null;
        if (request.Prompt is { } prompt)
        {
            // The strings were unescaped once, when the body was parsed: no second reading of the JSON, no string each.
            var strings = prompt.PromptStrings;
            for (var i = 0; i < strings.Count; i++) // not foreach: it would box the list's enumerator
            {
                var promptString = strings[i];
                var text = prompt.PromptText.Slice(promptString.TextStart, promptString.TextLength);
                toRedact?.Clear();

                // Beyond ASCII, the rules read the string twice: as sent, and folded as the model reads it (PromptFolding).
                var foldedLength = -1;
                if (PromptFolding.MayFold(text))
                {
                    if (folded is null || folded.Length < text.Length)
                    {
                        folded = new char[Math.Max(text.Length, 256)];
                        foldMap = new int[folded.Length];
                    }

                    foldedLength = PromptFolding.Fold(text, folded, foldMap);
                }

                foreach (var rule in rules)
                {
                    var redact = rule.Action == PromptAction.Redact;
                    found?.Clear();
                    if (redact)
                    {
                        found ??= [];
                    }

                    if (!TryMatch(rule, text, foldedLength < 0 ? default : folded.AsSpan(0, foldedLength), foldMap, redact ? found : null, out var matched))
                    {
                        admission.Controls.Add(new ControlResult("prompt_restriction", rule.ControlScope, ControlDecisions.Deny) { Detail = "rule timed out; failing closed" });
                        admission.Refuse(Reasons.PromptRestricted, $"The prompt could not be checked against rule '{rule.Id}' in time, so it was refused.");
                        return false;
                    }

                    if (!matched)
                    {
                        continue;
                    }

                    if (!redact)
                    {
                        admission.Controls.Add(new ControlResult("prompt_restriction", rule.ControlScope, ControlDecisions.Deny) { Detail = "matched" });
                        admission.Refuse(Reasons.PromptRestricted, $"The prompt matches restriction '{rule.Id}'.");
                        return false;
                    }

                    (redacted ??= new(StringComparer.Ordinal)).Add(rule.Id);
                    toRedact ??= [];
                    foreach (var (at, count) in found!)
                    {
                        toRedact.Add((at, count, rule.Id)); // a loop, not a lambda: its closure was made for every rule and string
                    }
                }

                if (toRedact is { Count: > 0 })
                {
                    admission.Edits.Add(new BodyEdit(promptString.BodyStart, promptString.BodyEnd, Redact(text, toRedact)));
                }
            }
        }

        foreach (var rule in rules)
        {
            admission.Controls.Add(redacted?.Contains(rule.Id) == true ? rule.Redacted : rule.Passed);
        }

        return true;
    }

    /// <summary>
    /// Runs <paramref name="rule"/> over <paramref name="text"/> and, when it is not empty, over <paramref name="folded"/>
    /// (<see cref="PromptFolding"/>): a match in either is a match, and the folded text's spans are mapped back to
    /// <paramref name="text"/> through <paramref name="map"/>, so a redaction replaces the characters as sent, the invisible
    /// ones inside included. False when the rule ran out of time.
    /// </summary>
    private static bool TryMatch(PromptRule rule, ReadOnlySpan<char> text, ReadOnlySpan<char> folded, int[]? map,
        List<(int Index, int Length)>? spans, out bool matched)
    {
        if (!rule.TryMatch(text, spans, out matched))
        {
            return false;
        }

        if (folded.IsEmpty || (matched && spans is null))
        {
            return true;
        }

        var before = spans?.Count ?? 0;
        if (!rule.TryMatch(folded, spans, out var foldedMatched))
        {
            matched = true;
            return false;
        }

        matched |= foldedMatched;
        for (var i = before; i < (spans?.Count ?? 0); i++)
        {
            var (at, length) = spans![i];
            var start = at < folded.Length ? map![at] : text.Length;
            var end = length == 0 ? start : map![at + length - 1] + 1;
            end += end < text.Length && char.IsLowSurrogate(text[end]) ? 1 : 0; // a pair kept whole
            spans[i] = (start, end - start);
        }

        return true;
    }

    /// <summary>The JSON string of <paramref name="text"/> with every match replaced by <c>[REDACTED:rule]</c>.</summary>
    private static byte[] Redact(ReadOnlySpan<char> text, List<(int Index, int Length, string Rule)> matches)
    {
        matches.Sort((a, b) => a.Index != b.Index ? a.Index.CompareTo(b.Index) : b.Length.CompareTo(a.Length));
        var builder = new StringBuilder(text.Length);
        var position = 0;
        foreach (var (index, length, rule) in matches)
        {
            if (index < position)
            {
                // Overlaps a match already replaced: what it covers beyond that goes too (a rule's match in the folded
                // text may reach further than another's in the text as sent).
                position = Math.Max(position, index + length);
                continue;
            }

            builder.Append(text[position..index]).Append("[REDACTED:").Append(rule).Append(']');
            position = index + length;
        }

        builder.Append(text[position..]);
        return JsonSerializer.SerializeToUtf8Bytes(builder.ToString());
    }

    /// <summary>A reservation id no other request of any node has: this process's random prefix and its count.</summary>
    internal static Guid NextReservation()
    {
        Span<byte> id = stackalloc byte[16];
        BinaryPrimitives.WriteUInt64LittleEndian(id, ReservationPrefix);
        BinaryPrimitives.WriteInt64LittleEndian(id[8..], Interlocked.Increment(ref _reservations));
        return new Guid(id);
    }

    private static async ValueTask ReserveAsync(AdmissionRequest request, Admission admission, ICounterStore counters, CancellationToken cancellationToken)
    {
        if (!TryGatherCharges(request, admission, out var reserved, out var purposes))
        {
            return; // most consumers have no limit: nothing is allocated for them
        }

        var readings = new CounterReading[reserved.Length];
        var reservation = NextReservation();
        var failed = await counters.TryReserveAsync(reservation, reserved, readings, cancellationToken);
        for (var i = 0; i < reserved.Length; i++)
        {
            var (control, scope, kind) = purposes[i];
            var charge = reserved[i];
            var soft = !charge.Enforce;
            var reading = readings[i];
            var over = reading.Used + reading.Reserved + charge.Amount > charge.Limit;
            var rateLimit = control.StartsWith("rate_limit", StringComparison.Ordinal);
            var decision = i == failed ? (rateLimit && !NeverFits(charge, reading) ? ControlDecisions.Throttle : ControlDecisions.Deny)
                : reading.Degraded == FailMode.Open ? ControlDecisions.NotEvaluated
                : soft && over ? ControlDecisions.Warn
                : failed >= 0 ? ControlDecisions.NotEvaluated
                : ControlDecisions.Pass;
            admission.Controls.Add(new ControlResult(control, scope, decision)
            {
                Limit = FromUnits(reading.AppliedLimit ?? charge.Limit, kind),
                Used = FromUnits(reading.Used, kind),
                Reserved = FromUnits(reading.Reserved, kind),
                Requested = FromUnits(charge.Amount, kind),
                Degraded = reading.Degraded is { } degraded ? PolicyNames.Of(degraded) : null,
                Detail = decision == ControlDecisions.Warn ? SoftExceeded : null,
            });
            admission.Degraded |= reading.Degraded is not null;
            if (rateLimit && reading.Degraded != FailMode.Open)
            {
                // What the rate limit leaves, for the client's x-ratelimit headers: a few subtractions, no allocation.
                var limit = reading.AppliedLimit ?? charge.Limit;
                var left = Math.Max(0, limit - reading.Used - reading.Reserved - (failed < 0 ? charge.Amount : 0));
                var headroom = new RateLimitHeadroom(limit, left, charge.ExpiresAt);
                if (kind == ChargeKind.Requests)
                {
                    admission.RequestRate = headroom.Tighter(admission.RequestRate);
                }
                else
                {
                    admission.TokenRate = headroom.Tighter(admission.TokenRate);
                }
            }

            if (decision == ControlDecisions.Warn && failed < 0)
            {
                admission.Events.Add($"budget.soft_exceeded {scope}");
            }
        }

        if (failed >= 0)
        {
            var (control, scope, _) = purposes[failed];
            var charge = reserved[failed];
            var retryAfter = charge.ExpiresAt - request.Now;
            if (readings[failed].Degraded == FailMode.Closed)
            {
                admission.Refuse(Reasons.CountersUnavailable,
                    $"The shared counters behind {control} of {scope} cannot be reached, and the policy says to refuse rather than serve unchecked; retry shortly.",
                    TimeSpan.FromSeconds(1));
            }
            else if (NeverFits(charge, readings[failed]))
            {
                // Alone larger than the whole limit: no wait would let it through, so no Retry-After invites a client to try.
                var (needed, limit) = control == "budget"
                    ? ($"{FromUnits(charge.Amount, ChargeKind.Cost).ToString(MoneyFormat, CultureInfo.InvariantCulture)} {request.Route.Currency}",
                        $"{FromUnits(readings[failed].AppliedLimit ?? charge.Limit, ChargeKind.Cost).ToString(MoneyFormat, CultureInfo.InvariantCulture)} {request.Route.Currency}")
                    : (charge.Amount.ToString(CultureInfo.InvariantCulture), (readings[failed].AppliedLimit ?? charge.Limit).ToString(CultureInfo.InvariantCulture));
                admission.Refuse(Reasons.ExceedsLimit,
                    $"This request's worst case ({needed}) is more than the whole of {control} of {scope} ({limit}), so it can never be served under it; " +
                    "ask for fewer output tokens (max_tokens) or choices, or send a shorter prompt.");
            }
            else if (control.StartsWith("rate_limit", StringComparison.Ordinal))
            {
                admission.Refuse(Reasons.RateLimited, $"Rate limit {control} of {scope} ({charge.Limit} per minute) is reached; retry after {Math.Ceiling(retryAfter.TotalSeconds)} s.", retryAfter);
            }
            else if (control == "budget")
            {
                var limit = (charge.Limit / CostUnit).ToString(MoneyFormat, CultureInfo.InvariantCulture); // a budget of 0.0002 is not "0.00"
                admission.Refuse(Reasons.BudgetExhausted,
                    $"The budget of {scope} ({limit} {request.Route.Currency}) cannot cover this request's worst-case cost; it renews at {charge.ExpiresAt:u}.", retryAfter);
            }
            else
            {
                admission.Refuse(Reasons.QuotaExhausted, $"Quota {control} of {scope} ({charge.Limit}) is used up; it renews at {charge.ExpiresAt:u}.", retryAfter);
            }

            return;
        }

        admission.Reservation = reservation;
        admission.Charges = reserved;
        admission.Purposes = purposes;
    }

    /// <summary>
    /// What the counters are charged, and beside each charge what it is for: one entry per limit in force, at most seven
    /// counted limits at three scopes. Gathered on the stack, then copied once into arrays of the exact size. Not part of
    /// <see cref="ReserveAsync"/>, whose state machine would carry the buffers (and box them when the store awaits).
    /// </summary>
    private static bool TryGatherCharges(AdmissionRequest request, Admission admission, out CounterCharge[] charges, out ChargePurpose[] purposes)
    {
        var consumer = request.Consumer;
        var service = consumer.Service;
        var tenant = service.Tenant;
        var tokens = Math.Min(MaxCharge, Saturating.Add(request.InputTokens, admission.ReservedOutputTokens));
        var cost = CostUnits(request.Route.MostCost(request.InputTokens, admission.ReservedOutputTokens));
        var minute = tenant.Clock.Minute(request.Now);
        var day = tenant.Clock.Day(request.Now);
        var month = tenant.Clock.Month(request.Now);
        var failModes = tenant.FailModes;
        var chargeBuffer = default(ChargeBuffer);
        var purposeBuffer = default(PurposeBuffer);
        var count = 0;
        void Add(CounterKeys keys, string scope, CountedLimit limit, in Window window, long? ceiling, long amount, ChargeKind kind, bool soft = false)
        {
            if (ceiling is not { } value)
            {
                return;
            }

            var failMode = limit switch
            {
                CountedLimit.RequestsPerMinute or CountedLimit.TokensPerMinute => failModes.RateLimits,
                CountedLimit.Budget => failModes.Budgets,
                _ => failModes.Quotas,
            };
            // A request counts as one whatever the provider does: its request counters are charged as used at once
            // and have nothing to settle (two fewer writes each on a shared store).
            chargeBuffer[count] = new CounterCharge(keys.For(limit, window.Id), amount, value, Enforce: !soft, window.End)
            {
                FailMode = failMode,
                Final = kind == ChargeKind.Requests,
            };
            purposeBuffer[count] = new ChargePurpose(CounterKeys.NameOf(limit), scope, kind);
            count++;
        }

        void Scope(CounterKeys keys, string scope, LimitsConfig limits)
        {
            Add(keys, scope, CountedLimit.RequestsPerMinute, minute, limits.RequestsPerMinute, 1, ChargeKind.Requests);
            Add(keys, scope, CountedLimit.TokensPerMinute, minute, limits.TokensPerMinute, tokens, ChargeKind.Tokens);
            Add(keys, scope, CountedLimit.RequestsPerDay, day, limits.RequestsPerDay, 1, ChargeKind.Requests);
            Add(keys, scope, CountedLimit.TokensPerDay, day, limits.TokensPerDay, tokens, ChargeKind.Tokens);
            Add(keys, scope, CountedLimit.RequestsPerMonth, month, limits.RequestsPerMonth, 1, ChargeKind.Requests);
            Add(keys, scope, CountedLimit.TokensPerMonth, month, limits.TokensPerMonth, tokens, ChargeKind.Tokens);
            if (limits.Budget is { } budget)
            {
                Add(keys, scope, CountedLimit.Budget, budget.Period == BudgetPeriod.Day ? day : month, (long)(budget.Amount * CostUnit), cost, ChargeKind.Cost, budget.Mode == BudgetMode.Soft);
            }
        }

        Scope(consumer.CounterKeys, consumer.Scope, consumer.Limits);
        Scope(service.CounterKeys, service.Scope, service.Limits);
        Scope(tenant.CounterKeys, tenant.Scope, tenant.Limits);
        charges = ((ReadOnlySpan<CounterCharge>)chargeBuffer)[..count].ToArray(); // [] when none: ToArray of an empty span allocates nothing
        purposes = ((ReadOnlySpan<ChargePurpose>)purposeBuffer)[..count].ToArray();
        return count > 0;
    }

    /// <summary>Seven counted limits (requests and tokens per minute, day and month, a budget) at three scopes.</summary>
    private const int MaxCharges = 21;

    [System.Runtime.CompilerServices.InlineArray(MaxCharges)]
    private struct ChargeBuffer
    {
        private CounterCharge _first;
    }

    [System.Runtime.CompilerServices.InlineArray(MaxCharges)]
    private struct PurposeBuffer
    {
        private ChargePurpose _first;
    }

    /// <summary>Whether <paramref name="charge"/> alone is more than its counter's whole limit: refused whatever the counter holds.</summary>
    private static bool NeverFits(in CounterCharge charge, in CounterReading reading) => charge.Amount > (reading.AppliedLimit ?? charge.Limit);

    /// <summary>A counter value as the ledger shows it: cost counters count billionths of the currency unit.</summary>
    private static decimal FromUnits(long value, ChargeKind kind)
    {
        if (kind != ChargeKind.Cost)
        {
            return value;
        }

        // value / 10^9 exactly, without a decimal division: the same 64-bit mantissa with scale 9.
        var magnitude = value < 0 ? (ulong)-value : (ulong)value;
        return new decimal((int)(uint)magnitude, (int)(uint)(magnitude >> 32), 0, value < 0, 9);
    }

    /// <summary>
    /// Settles the reservations of an admitted request to what it really used (zero tokens and cost when the
    /// provider never answered). Every admitted request is settled exactly once.
    /// </summary>
    public static ValueTask SettleAsync(Admission admission, ICounterStore counters, long inputTokens, long outputTokens, decimal cost,
        CancellationToken cancellationToken = default)
    {
        if (admission.Charges.Length == 0)
        {
            return ValueTask.CompletedTask;
        }

        var actual = new long[admission.Charges.Length];
        var costUnits = CostUnits(cost);
        var tokens = Math.Min(MaxCharge, Saturating.Add(inputTokens, outputTokens));
        for (var i = 0; i < actual.Length; i++)
        {
            actual[i] = admission.Purposes[i].Kind switch
            {
                ChargeKind.Requests => 1,
                ChargeKind.Tokens => tokens,
                _ => costUnits,
            };
        }

        var charges = admission.Charges;
        admission.Charges = [];
        return counters.SettleAsync(admission.Reservation, charges, actual, cancellationToken);
    }

    /// <summary>A cost in whole <see cref="CostUnit"/>s, rounded up, at most <see cref="MaxCharge"/>.</summary>
    internal static long CostUnits(decimal cost) => cost >= MaxCharge / CostUnit ? MaxCharge : (long)Math.Ceiling(cost * CostUnit);
}
