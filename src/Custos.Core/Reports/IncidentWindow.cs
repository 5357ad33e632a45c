namespace Custos.Reports;

/// <summary>
/// The request entries of an incident window, taken in one by one as they are read (oldest first) and kept as what the
/// pack reads of them: counts, sums, the first and last entries of each kind of evidence, and the first
/// <see cref="TimelineLimit"/> entries for the timeline. Nothing grows with the number of requests: what grows, grows
/// with the distinct consumers, services, credentials, models, policy versions and minutes of the window (the spend
/// chart keeps a point per priced request up to <see cref="ChartPointLimit"/>, then per second, then per minute). A
/// window of 743,441 requests held 0.75 GB as a list of entries.
/// </summary>
/// <param name="from">Start of the window (inclusive).</param>
/// <param name="to">End of the window (exclusive): with <paramref name="from"/>, sets the timeline's bucket size.</param>
/// <param name="wantedRequestIds">Requests whose entries are kept when they turn up (those that raised the window's alerts).</param>
/// <param name="timelineLimit">Requests listed one by one in the timeline, at most.</param>
public sealed class IncidentWindow(DateTimeOffset from, DateTimeOffset to, IEnumerable<string>? wantedRequestIds = null,
    int timelineLimit = IncidentReportBuilder.DefaultTimelineLimit)
{
    /// <summary>Reasons that mean a rate limit, quota or budget refused the request.</summary>
    internal static readonly HashSet<string> LimitReasons = new(StringComparer.Ordinal) { "throttle.rate_limit", "deny.quota_exhausted", "deny.budget_exhausted", "deny.exceeds_limit" };

    /// <summary>Reasons that mean the caller asked for a model it was not entitled to (now).</summary>
    internal static readonly HashSet<string> EntitlementReasons = new(StringComparer.Ordinal)
    {
        "deny.model_not_entitled", "deny.model_not_found", "deny.entitlement_expired", "deny.entitlement_not_yet_valid",
    };

    /// <summary>Reasons that mean a stopped credential was still presented.</summary>
    internal static readonly HashSet<string> StoppedCredentialReasons = new(StringComparer.Ordinal)
    {
        "deny.credential_revoked", "deny.credential_suspended", "deny.credential_expired",
    };

    private readonly HashSet<string> _wanted = new(wantedRequestIds ?? [], StringComparer.Ordinal);
    private readonly List<RequestEntry> _listed = [];
    private readonly List<(long Ticks, decimal Cost)> _priced = [];
    private long _pricedResolution; // 0: each priced request a point of its own; else the ticks of a point's span
    private readonly Dictionary<DateTimeOffset, int> _perMinute = [];
    private readonly Dictionary<DateTimeOffset, Bucket> _buckets = [];

    /// <summary>Start of the window.</summary>
    public DateTimeOffset From { get; } = from;

    /// <summary>End of the window (exclusive).</summary>
    public DateTimeOffset To { get; } = to;

    /// <summary>Requests listed one by one in the timeline, at most.</summary>
    public int TimelineLimit { get; } = timelineLimit;

    /// <summary>The timeline's bucket size in seconds: a minute up to 3 hours, an hour up to 3 days, else a day.</summary>
    public int BucketSeconds { get; } = to - from <= TimeSpan.FromHours(3) ? 60 : to - from <= TimeSpan.FromDays(3) ? 3600 : 86400;

    /// <summary>Request entries taken in.</summary>
    public int Count { get; private set; }

    /// <summary>Of those, allowed.</summary>
    public int Allowed { get; private set; }

    /// <summary>Denied.</summary>
    public int Denied { get; private set; }

    /// <summary>Throttled.</summary>
    public int Throttled { get; private set; }

    /// <summary>With a cost (priced).</summary>
    public int Priced { get; private set; }

    /// <summary>Their spend.</summary>
    public decimal Spend { get; private set; }

    /// <summary>The first currency named.</summary>
    public string? Currency { get; private set; }

    /// <summary>When the first and the last request were received.</summary>
    public DateTimeOffset? First { get; private set; }

    /// <summary>When the last request was received.</summary>
    public DateTimeOffset? Last { get; private set; }

    /// <summary>Occurrences of each reason code.</summary>
    internal Dictionary<string, int> Reasons { get; } = new(StringComparer.Ordinal);

    /// <summary>Requests by model (<c>(none)</c> without one).</summary>
    internal Dictionary<string, int> Models { get; } = new(StringComparer.Ordinal);

    /// <summary>Requests by the policy version they name.</summary>
    internal Dictionary<long, int> ByVersion { get; } = [];

    /// <summary>The consumers, services, tenants and credentials the entries name.</summary>
    internal HashSet<string> Consumers { get; } = new(StringComparer.Ordinal);

    /// <summary>The services the entries name.</summary>
    internal HashSet<string> Services { get; } = new(StringComparer.Ordinal);

    /// <summary>The tenants the entries name.</summary>
    internal HashSet<string> Tenants { get; } = new(StringComparer.Ordinal);

    /// <summary>Each credential's use.</summary>
    internal Dictionary<string, CredentialUse> Credentials { get; } = new(StringComparer.Ordinal);

    /// <summary>Control readings by control, scope and decision: how many, and the last one's limit.</summary>
    internal Dictionary<(string Control, string? Scope, string Decision), (int Count, decimal? Limit)> Controls { get; } = [];

    /// <summary>Allowed requests by consumer and model.</summary>
    internal Dictionary<(string Consumer, string Model), Sample> AllowedByConsumerModel { get; } = [];

    /// <summary>The allowed request of a consumer under a version that asked for (then got) the most output.</summary>
    internal Dictionary<(string Consumer, long Version), RequestEntry> LargestAllowed { get; } = [];

    /// <summary>Priced requests (cost above zero) by consumer and version.</summary>
    internal Dictionary<(string Consumer, long Version), Sample> Spent { get; } = [];

    /// <summary>Allowed requests by service and version.</summary>
    internal Dictionary<(string Service, long Version), Sample> Served { get; } = [];

    /// <summary>Requests that carried an agent run under a consumer of another category, by consumer (<c>?</c> when none).</summary>
    internal Dictionary<string, Sample> AgentTraffic { get; } = new(StringComparer.Ordinal);

    /// <summary>Spend by consumer, service and tenant.</summary>
    internal Dictionary<string, decimal> SpendByScope { get; } = new(StringComparer.Ordinal);

    /// <summary>The last budget reading of each scope, with when and what its window had spent.</summary>
    internal Dictionary<string, (DateTimeOffset At, ControlReading Reading, decimal? Used)> LastBudget { get; } = new(StringComparer.Ordinal);

    /// <summary>Requests a budget of each scope refused.</summary>
    internal Dictionary<string, int> BudgetRefused { get; } = new(StringComparer.Ordinal);

    /// <summary>Requests refused by a rate limit, quota or budget.</summary>
    internal Sample Limited { get; } = new();

    /// <summary>The deny and throttle readings of <see cref="Limited"/> by control and scope, in order of first appearance.</summary>
    internal Dictionary<(string Control, string? Scope), (int Count, decimal? Limit)> LimitedBy { get; } = [];

    /// <summary>Every reason of <see cref="Limited"/>, in order of first appearance.</summary>
    internal List<string> LimitedReasons { get; } = [];

    /// <summary>Requests a prompt restriction refused.</summary>
    internal int PromptDenied { get; private set; }

    /// <summary>Requests a prompt restriction redacted.</summary>
    internal int PromptRedacted { get; private set; }

    /// <summary>Refused or redacted by a prompt restriction.</summary>
    internal Sample PromptHit { get; } = new();

    /// <summary>The prompt restriction rules that refused or redacted, in order of first appearance.</summary>
    internal List<string> PromptRules { get; } = [];

    /// <summary>Requests for models outside the entitlement.</summary>
    internal Sample Probing { get; } = new();

    /// <summary>The models <see cref="Probing"/> asked for, in order of first appearance.</summary>
    internal List<string> ProbedModels { get; } = [];

    /// <summary>Requests with a stopped credential.</summary>
    internal Sample Stopped { get; } = new();

    /// <summary>
    /// The entitlement approvals allowed requests' readings name (who approved, on which ticket, or that a category default
    /// or the policy with no approver granted it), in order of first appearance, each with its count of requests; at most
    /// <see cref="MaxApprovals"/>, the rest counted in <see cref="OtherApprovals"/>.
    /// </summary>
    internal List<(string Detail, int Requests)> Approvals { get; } = [];

    /// <summary>Allowed requests whose approval was not among the first <see cref="MaxApprovals"/> kept.</summary>
    internal int OtherApprovals { get; private set; }

    /// <summary>How many distinct approvals <see cref="Approvals"/> keeps.</summary>
    internal const int MaxApprovals = 5;

    /// <summary>Requests with control readings.</summary>
    internal int Enforced { get; private set; }

    /// <summary>Requests a control refused (a deny or throttle reading).</summary>
    internal int RefusedByControls { get; private set; }

    /// <summary>The wanted requests found, by id.</summary>
    internal Dictionary<string, RequestEntry> Found { get; } = new(StringComparer.Ordinal);

    /// <summary>The first <see cref="TimelineLimit"/> entries.</summary>
    internal IReadOnlyList<RequestEntry> Listed => _listed;

    /// <summary>A window of the given entries, oldest first.</summary>
    public static IncidentWindow Of(DateTimeOffset from, DateTimeOffset to, IEnumerable<RequestEntry> entries, IEnumerable<string>? wantedRequestIds = null)
    {
        var window = new IncidentWindow(from, to, wantedRequestIds);
        foreach (var entry in entries)
        {
            window.Add(entry);
        }

        return window;
    }

    /// <summary>Takes in the next request entry of the window (entries come oldest first).</summary>
    public void Add(RequestEntry r)
    {
        var index = Count++;
        First ??= r.Timestamp;
        Last = r.Timestamp;
        switch (r.Decision)
        {
            case "allow":
                Allowed++;
                break;
            case "deny":
                Denied++;
                break;
            case "throttle":
                Throttled++;
                break;
        }

        Spend += r.Cost ?? 0m;
        Priced += r.Cost is null ? 0 : 1;
        Currency ??= r.Currency;
        Increment(Models, r.Model ?? "(none)");
        ByVersion[r.PolicyVersion] = ByVersion.GetValueOrDefault(r.PolicyVersion) + 1;
        Increment(_perMinute, Floor(r.Timestamp, 60));
        if (_listed.Count < TimelineLimit)
        {
            _listed.Add(r);
        }

        var bucketStart = Floor(r.Timestamp, BucketSeconds);
        if (!_buckets.TryGetValue(bucketStart, out var bucket))
        {
            _buckets[bucketStart] = bucket = new Bucket(r.RequestId);
        }

        bucket.Add(r);
        if (r.Cost is > 0m)
        {
            AddPriced(r.Timestamp.UtcTicks, r.Cost.Value);
        }

        if (_wanted.Count > 0 && _wanted.Contains(r.RequestId))
        {
            Found.TryAdd(r.RequestId, r);
        }

        AddWho(r, index);
        AddReasons(r, index);
        AddControls(r);
    }

    private void AddWho(RequestEntry r, long index)
    {
        if (r.Consumer is { } consumer)
        {
            Consumers.Add(consumer);
            AddSpend(consumer, r.Cost);
            if (r.Decision == "allow")
            {
                if (r.Model is { } model)
                {
                    Take(AllowedByConsumerModel, (consumer, model)).Add(r, index);
                }

                if (!LargestAllowed.TryGetValue((consumer, r.PolicyVersion), out var largest)
                    || (r.MaxOutputTokens ?? 0, r.OutputTokens ?? 0).CompareTo((largest.MaxOutputTokens ?? 0, largest.OutputTokens ?? 0)) > 0)
                {
                    LargestAllowed[(consumer, r.PolicyVersion)] = r;
                }
            }

            if (r.Cost is > 0m)
            {
                Take(Spent, (consumer, r.PolicyVersion)).Add(r, index);
            }
        }

        if (r.Service is { } service)
        {
            Services.Add(service);
            AddSpend(service, r.Cost, "service:");
            if (r.Decision == "allow")
            {
                Take(Served, (service, r.PolicyVersion)).Add(r, index);
            }
        }

        if (r.Tenant is { } tenant)
        {
            Tenants.Add(tenant);
            AddSpend(tenant, r.Cost, "tenant:");
        }

        if (r.CredentialId is { } credential)
        {
            if (!Credentials.TryGetValue(credential, out var use))
            {
                Credentials[credential] = use = new CredentialUse();
            }

            use.Add(r);
        }

        if (r.AgentRun is not null && r.Category is not null && r.Category != "agent")
        {
            Take(AgentTraffic, r.Consumer ?? "?").Add(r, index);
        }
    }

    private void AddSpend(string id, decimal? cost, string prefix = "consumer:")
    {
        var key = prefix + id;
        SpendByScope[key] = SpendByScope.GetValueOrDefault(key) + (cost ?? 0m);
    }

    private void AddReasons(RequestEntry r, long index)
    {
        bool limited = false, probing = false, stopped = false, promptDenied = false;
        foreach (var reason in r.Reasons)
        {
            Increment(Reasons, reason);
            limited |= LimitReasons.Contains(reason);
            probing |= EntitlementReasons.Contains(reason);
            stopped |= StoppedCredentialReasons.Contains(reason);
            promptDenied |= reason == "deny.prompt_restricted";
        }

        if (limited)
        {
            Limited.Add(r, index);
            foreach (var reason in r.Reasons)
            {
                if (!LimitedReasons.Contains(reason))
                {
                    LimitedReasons.Add(reason);
                }
            }

            foreach (var c in r.Controls)
            {
                if (c.Decision is "deny" or "throttle")
                {
                    var key = (c.Control, c.Scope);
                    LimitedBy[key] = (LimitedBy.GetValueOrDefault(key).Count + 1, c.Limit);
                }
            }
        }

        if (probing)
        {
            Probing.Add(r, index);
            var model = r.Model ?? "(none)";
            if (!ProbedModels.Contains(model))
            {
                ProbedModels.Add(model);
            }
        }

        if (stopped)
        {
            Stopped.Add(r, index);
        }

        var redacted = false;
        foreach (var c in r.Controls)
        {
            redacted |= c.Control == "prompt_restriction" && c.Decision == "modify";
        }

        PromptDenied += promptDenied ? 1 : 0;
        PromptRedacted += redacted ? 1 : 0;
        if (promptDenied || redacted)
        {
            PromptHit.Add(r, index);
        }
    }

    private void AddControls(RequestEntry r)
    {
        Enforced += r.Controls.Count > 0 ? 1 : 0;
        var refused = false;
        List<string>? budgetRefused = null;
        var k = 0;
        foreach (var c in r.Controls)
        {
            var key = (c.Control, c.Scope, c.Decision);
            Controls[key] = (Controls.GetValueOrDefault(key).Count + 1, c.Limit);
            refused |= c.Decision is "deny" or "throttle";
            if (c.Control == "prompt_restriction" && c.Decision is "deny" or "modify")
            {
                var rule = c.Scope + (c.Detail is null ? "" : " (" + c.Detail + ")");
                if (!PromptRules.Contains(rule))
                {
                    PromptRules.Add(rule);
                }
            }

            if (r.Decision == "allow" && c.Control == "entitlement" && c.Decision == "pass" && c.Detail is not null)
            {
                // Every approval the window's requests used: the first alone named one approver for requests another approved.
                var a = Approvals.FindIndex(x => x.Detail == c.Detail);
                if (a >= 0)
                {
                    Approvals[a] = (c.Detail, Approvals[a].Requests + 1);
                }
                else if (Approvals.Count < MaxApprovals)
                {
                    Approvals.Add((c.Detail, 1));
                }
                else
                {
                    OtherApprovals++;
                }
            }

            if (c.Control == "budget")
            {
                if (c.Scope is { } scope)
                {
                    LastBudget[scope] = (r.Timestamp, c, k < r.BudgetsUsed.Count ? r.BudgetsUsed[k] : null);
                    if (c.Decision == "deny" && !(budgetRefused?.Contains(scope) ?? false))
                    {
                        // A request counts once per scope, however many of its readings of that scope refused it.
                        (budgetRefused ??= []).Add(scope);
                        Increment(BudgetRefused, scope);
                    }
                }

                k++;
            }
        }

        RefusedByControls += refused ? 1 : 0;
    }

    /// <summary>The busiest minute and its requests, the earliest of equals; null when the window is empty.</summary>
    internal (DateTimeOffset Minute, int Requests)? PeakMinute()
    {
        (DateTimeOffset Minute, int Requests)? peak = null;
        foreach (var (minute, requests) in _perMinute)
        {
            if (peak is not { } p || requests > p.Requests || (requests == p.Requests && minute < p.Minute))
            {
                peak = (minute, requests);
            }
        }

        return peak;
    }

    /// <summary>The timeline's activity buckets, oldest first.</summary>
    internal List<ActivityBucket> Activity() => [.. _buckets.OrderBy(b => b.Key).Select(b => b.Value.ToBucket(b.Key))];

    /// <summary>
    /// Priced requests the spend chart keeps one point each for, at most; past that, requests of the same second share a
    /// point (the last one's time, their costs summed), then requests of the same minute. Budget periods start on whole
    /// minutes, so no point spans the start of a period, and the chart, thinned to about 1,000 points, looks the same.
    /// </summary>
    internal int ChartPointLimit { get; init; } = 100_000;

    /// <summary>The priced requests (cost above zero), oldest first; in a busy window, those of a second or a minute summed.</summary>
    internal IEnumerable<(DateTimeOffset At, decimal Cost)> PricedRequests() => _priced.Select(p => (new DateTimeOffset(p.Ticks, TimeSpan.Zero), p.Cost));

    private void AddPriced(long ticks, decimal cost)
    {
        if (_pricedResolution > 0 && _priced.Count > 0 && _priced[^1].Ticks / _pricedResolution == ticks / _pricedResolution)
        {
            _priced[^1] = (ticks, _priced[^1].Cost + cost);
            return;
        }

        _priced.Add((ticks, cost));
        if (_priced.Count > ChartPointLimit && _pricedResolution < TimeSpan.TicksPerMinute)
        {
            _pricedResolution = _pricedResolution == 0 ? TimeSpan.TicksPerSecond : TimeSpan.TicksPerMinute;
            var merged = 0;
            for (var i = 0; i < _priced.Count; i++)
            {
                if (merged > 0 && _priced[merged - 1].Ticks / _pricedResolution == _priced[i].Ticks / _pricedResolution)
                {
                    _priced[merged - 1] = (_priced[i].Ticks, _priced[merged - 1].Cost + _priced[i].Cost);
                }
                else
                {
                    _priced[merged++] = _priced[i];
                }
            }

            _priced.RemoveRange(merged, _priced.Count - merged);
            _priced.TrimExcess();
        }
    }

    /// <summary>Counts sorted as reports show them: most first, then by name.</summary>
    internal static Dictionary<string, int> Sorted(Dictionary<string, int> counts, Func<string, bool>? keep = null)
        => counts.Where(c => keep is null || keep(c.Key)).OrderByDescending(c => c.Value).ThenBy(c => c.Key, StringComparer.Ordinal)
            .ToDictionary(c => c.Key, c => c.Value, StringComparer.Ordinal);

    /// <summary>The start of the <paramref name="seconds"/>-long bucket <paramref name="time"/> falls in.</summary>
    private static DateTimeOffset Floor(DateTimeOffset time, int seconds)
    {
        var ticks = TimeSpan.TicksPerSecond * seconds;
        return new DateTimeOffset(time.UtcTicks - time.UtcTicks % ticks, TimeSpan.Zero);
    }

    private static void Increment<TKey>(Dictionary<TKey, int> counts, TKey key)
        where TKey : notnull
        => counts[key] = counts.GetValueOrDefault(key) + 1;

    private static Sample Take<TKey>(Dictionary<TKey, Sample> samples, TKey key)
        where TKey : notnull
    {
        if (!samples.TryGetValue(key, out var sample))
        {
            samples[key] = sample = new Sample();
        }

        return sample;
    }

    /// <summary>
    /// Requests of one kind: how many, the first <see cref="Keep"/> (the evidence a finding lists, and the first it
    /// leaves out) and the last, each with its place in the window.
    /// </summary>
    internal sealed class Sample
    {
        /// <summary>Entries kept from the start: the evidence a finding lists, plus the first it leaves out.</summary>
        public const int Keep = 11;

        /// <summary>How many.</summary>
        public int Count { get; private set; }

        /// <summary>Their cost.</summary>
        public decimal Sum { get; private set; }

        /// <summary>The first <see cref="Keep"/>, with their places in the window.</summary>
        public List<(long Index, RequestEntry Entry)> Head { get; } = [];

        /// <summary>The last, with its place.</summary>
        public (long Index, RequestEntry Entry) Tail { get; private set; }

        /// <summary>The first entry.</summary>
        public RequestEntry FirstEntry => Head[0].Entry;

        /// <summary>Takes in the next request of this kind.</summary>
        public void Add(RequestEntry entry, long index)
        {
            Count++;
            Sum += entry.Cost ?? 0m;
            if (Head.Count < Keep)
            {
                Head.Add((index, entry));
            }

            Tail = (index, entry);
        }

        /// <summary>The requests of several kinds together, in the window's order (none is of two of them).</summary>
        public static Sample Merge(IEnumerable<Sample> samples)
        {
            var merged = new Sample();
            var parts = samples.Where(s => s.Count > 0).ToList();
            foreach (var (index, entry) in parts.SelectMany(s => s.Head).OrderBy(h => h.Index).Take(Keep))
            {
                merged.Head.Add((index, entry));
            }

            merged.Count = parts.Sum(s => s.Count);
            merged.Sum = parts.Sum(s => s.Sum);
            if (parts.Count > 0)
            {
                merged.Tail = parts.Select(s => s.Tail).MaxBy(t => t.Index);
            }

            return merged;
        }

        /// <summary>A sample of a list of requests.</summary>
        public static Sample Of(IReadOnlyList<RequestEntry> entries)
        {
            var sample = new Sample();
            for (var i = 0; i < entries.Count; i++)
            {
                sample.Add(entries[i], i);
            }

            return sample;
        }
    }

    /// <summary>One credential's use in the window.</summary>
    internal sealed class CredentialUse
    {
        /// <summary>Requests made with it.</summary>
        public int Count { get; private set; }

        /// <summary>Of those, refused.</summary>
        public int Refused { get; private set; }

        /// <summary>The consumers it acted for, in order of first appearance.</summary>
        public List<string> Consumers { get; } = [];

        /// <summary>The services it acted from, in order of first appearance.</summary>
        public List<string> Services { get; } = [];

        /// <summary>The first request of each consumer and service it acted as.</summary>
        public Dictionary<string, RequestEntry> FirstAs { get; } = new(StringComparer.Ordinal);

        /// <summary>Takes in a request made with the credential.</summary>
        public void Add(RequestEntry r)
        {
            Count++;
            Refused += r.Refused ? 1 : 0;
            if (r.Consumer is { } consumer && !Consumers.Contains(consumer))
            {
                Consumers.Add(consumer);
            }

            if (r.Service is { } service && !Services.Contains(service))
            {
                Services.Add(service);
            }

            FirstAs.TryAdd(r.Consumer + "|" + r.Service, r);
        }
    }

    /// <summary>One bucket of the timeline's activity.</summary>
    private sealed class Bucket(string firstRequestId)
    {
        private readonly Dictionary<string, int> _reasons = new(StringComparer.Ordinal);
        private int _count, _allowed, _denied, _throttled;
        private decimal _cost;
        private readonly string _first = firstRequestId;
        private string _last = firstRequestId;

        public void Add(RequestEntry r)
        {
            _count++;
            _allowed += r.Decision == "allow" ? 1 : 0;
            _denied += r.Decision == "deny" ? 1 : 0;
            _throttled += r.Decision == "throttle" ? 1 : 0;
            _cost += r.Cost ?? 0m;
            foreach (var reason in r.Reasons)
            {
                Increment(_reasons, reason);
            }

            _last = r.RequestId;
        }

        public ActivityBucket ToBucket(DateTimeOffset start) => new(start, _count, _allowed, _denied, _throttled, _cost, Sorted(_reasons), _first, _last);
    }
}
