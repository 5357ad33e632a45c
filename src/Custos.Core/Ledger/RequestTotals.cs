using Custos.Metering;

namespace Custos.Ledger;

/// <summary>
/// The requests of one quarter of an hour that share a tenant, service, consumer, decision, reasons and currency:
/// how many, and what they cost. What the console's overview reads instead of every entry (<c>docs/console.md</c>).
/// </summary>
/// <param name="Slot">The start of the quarter hour (UTC), or the entry's own instant when made of one entry.</param>
/// <param name="Tenant">The tenant, or null.</param>
/// <param name="Service">The service, or null.</param>
/// <param name="Consumer">The consumer, or null.</param>
/// <param name="Decision"><c>allow</c>, <c>deny</c> or <c>throttle</c>.</param>
/// <param name="Reasons">The entries' reason codes, in their order.</param>
/// <param name="Currency">The cost's currency, or null.</param>
/// <param name="Requests">How many requests.</param>
/// <param name="Spend">What they cost together.</param>
/// <param name="Tokens">Their input and output tokens together (as each entry states them; none when it states none).</param>
public sealed record RequestTotal(DateTimeOffset Slot, string? Tenant, string? Service, string? Consumer, string Decision,
    IReadOnlyList<string> Reasons, string? Currency, long Requests, decimal Spend, long Tokens = 0);

/// <summary>
/// Where a total is kept: the quarter hour (seconds since the Unix epoch of its start) and the fields it is summed by.
/// A missing field is the empty string, and the reasons are joined by spaces, so that every part can be a key column.
/// </summary>
public readonly record struct RequestTotalKey(long Slot, string Tenant, string Service, string Consumer, string Decision, string Reasons, string Currency)
{
    /// <summary>The key of the quarter hour's total that <paramref name="total"/> (of a quarter hour, or of a minute in it) counts towards.</summary>
    public static RequestTotalKey Of(RequestTotal total)
    {
        ArgumentNullException.ThrowIfNull(total);
        return new(RequestTotals.SlotOf(total.Slot), total.Tenant ?? "", total.Service ?? "", total.Consumer ?? "", total.Decision,
            RequestTotals.Join(total.Reasons), total.Currency ?? "");
    }

    /// <summary>The total as the overview reads it.</summary>
    public RequestTotal ToTotal(long requests, decimal spend, long tokens)
        => new(RequestTotals.SlotStart(Slot), NullIfEmpty(Tenant), NullIfEmpty(Service), NullIfEmpty(Consumer), Decision,
            Reasons.Length == 0 ? [] : Reasons.Split(' '), NullIfEmpty(Currency), requests, spend, tokens);

    private static string? NullIfEmpty(string value) => value.Length == 0 ? null : value;
}

/// <summary>
/// Request entries summed by slot (a quarter hour, or a minute), tenant, service, consumer, decision, reasons and currency:
/// a batch's, which a store adds to its totals in the batch's transaction, or a ledger's, when a store made before the
/// totals fills them in.
/// </summary>
/// <remarks>
/// The totals are a summary kept beside the ledger, not evidence: the chain covers the entries, and reports and proofs
/// read the entries. Quarter hours because every time zone's midnight falls on one, so a budget's day or month starts on
/// a slot's boundary; so do the overview's buckets of an hour and more. Minutes for the last hour's buckets: a store keeps
/// both. Costs are summed as the entries state them, to the ninth decimal (<see cref="RequestRecord.CanonicalCost"/>), so
/// the totals add up to exactly what the entries say.
/// </remarks>
/// <param name="width">The length of a slot in seconds: <see cref="SlotSeconds"/> or <see cref="MinuteSeconds"/>.</param>
public sealed class RequestTotals(int width = RequestTotals.SlotSeconds)
{
    /// <summary>The length of a slot: a quarter of an hour.</summary>
    public const int SlotSeconds = 900;

    /// <summary>The length of a slot of the totals by minute, which the overview of the last hour reads.</summary>
    public const int MinuteSeconds = 60;

    /// <summary>The slot widths a store keeps totals of, coarsest first: quarter hours and minutes.</summary>
    public static IReadOnlyList<int> Widths { get; } = [SlotSeconds, MinuteSeconds];

    /// <summary>The table a store keeps the totals of slots <paramref name="width"/> seconds long in.</summary>
    public static string TableOf(int width) => width switch
    {
        SlotSeconds => "request_totals",
        MinuteSeconds => "request_minute_totals",
        _ => throw new ArgumentOutOfRangeException(nameof(width), width, "A slot is a quarter hour or a minute."),
    };

    /// <summary>The length of this instance's slots, in seconds.</summary>
    public int Width { get; } = width is SlotSeconds or MinuteSeconds ? width : throw new ArgumentOutOfRangeException(nameof(width), width, "A slot is a quarter hour or a minute.");

    /// <summary>How many totals <see cref="FillAsync"/> keeps before it hands them to the store.</summary>
    public const int FillBatch = 50_000;

    private readonly Dictionary<RequestTotalKey, (long Requests, decimal Spend, long Tokens)> _totals = [];

    /// <summary>How many distinct totals.</summary>
    public int Count => _totals.Count;

    /// <summary>The totals, in no particular order (a store that needs one orders them itself).</summary>
    public Dictionary<RequestTotalKey, (long Requests, decimal Spend, long Tokens)>.Enumerator GetEnumerator() => _totals.GetEnumerator();

    /// <summary>The quarter hour (seconds since the Unix epoch of its start) that <paramref name="at"/> falls in.</summary>
    public static long SlotOf(DateTimeOffset at) => SlotOf(at, SlotSeconds);

    /// <summary>The slot <paramref name="width"/> seconds long (seconds since the Unix epoch of its start) that <paramref name="at"/> falls in.</summary>
    public static long SlotOf(DateTimeOffset at, int width) => Math.DivRem(at.ToUnixTimeSeconds(), width) switch
    {
        var (q, r) when r < 0 => (q - 1) * width,
        var (q, _) => q * width,
    };

    /// <summary>
    /// The first whole second since the Unix epoch at or after <paramref name="at"/>: a slot starts at or after
    /// <paramref name="at"/> exactly when its start is at or after this (the stores' bounds of <c>ReadTotalsAsync</c>).
    /// </summary>
    public static long SecondsAtOrAfter(DateTimeOffset at)
    {
        var seconds = at.ToUnixTimeSeconds();
        return DateTimeOffset.FromUnixTimeSeconds(seconds) < at ? seconds + 1 : seconds;
    }

    /// <summary>The instant a slot starts.</summary>
    public static DateTimeOffset SlotStart(long slot) => DateTimeOffset.FromUnixTimeSeconds(slot);

    /// <summary>
    /// Adds up every request entry of <paramref name="store"/> by the slots of each width in <paramref name="widths"/>, in
    /// one read, and hands the totals to <paramref name="write"/>, which adds them to the stored ones (by their
    /// <see cref="Width"/>): what a store made before the totals does once, when it is upgraded. The totals are handed over
    /// every <see cref="FillBatch"/> keys, so memory stays bounded however long the ledger. <paramref name="progress"/>
    /// hears, for people, that the upgrade started, every 100,000 entries read, and the summary. Returns the number of entries read.
    /// </summary>
    public static async Task<long> FillAsync(ILedgerStore store, string description, IReadOnlyList<int> widths,
        Func<RequestTotals, CancellationToken, Task> write, Action<string>? progress, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(widths);
        ArgumentNullException.ThrowIfNull(write);
        var what = widths.Count == 1 && widths[0] == MinuteSeconds ? "the request totals by minute the console's overview of the last hour reads"
            : "the request totals the console's overview, spend and the quotas' counters read";
        progress?.Invoke($"Upgrading the store {description}: adding up its request entries into {what} (once).");
        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        var all = widths.Select(w => new RequestTotals(w)).ToArray();
        long read = 0;
        await foreach (var row in store.QueryAsync(new LedgerQuery { Kind = "request", Limit = -1 }, cancellationToken))
        {
            var entry = Reports.RequestEntry.Parse(row);
            AddToEach(entry.Timestamp, entry.Tenant, entry.Service, entry.Consumer, entry.Decision, entry.Reasons, entry.Currency, entry.Cost,
                TokensOf(entry.InputTokens, entry.OutputTokens), all);
            foreach (var totals in all)
            {
                if (totals.Count >= FillBatch)
                {
                    await write(totals, cancellationToken);
                    totals.Clear();
                }
            }

            if (++read % 100_000 == 0)
            {
                progress?.Invoke(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"  {read:N0} request entries added up"));
            }
        }

        foreach (var totals in all.Where(t => t.Count > 0))
        {
            await write(totals, cancellationToken);
        }

        progress?.Invoke(string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"Request totals filled in from {read:N0} request entries in {System.Diagnostics.Stopwatch.GetElapsedTime(started).TotalSeconds:0.0} s."));
        return read;
    }

    /// <summary>
    /// Adds a request entry to each of <paramref name="totals"/> (of their own widths; a store keeps both), its fields read
    /// once: nothing for an entry of another kind.
    /// </summary>
    public static void AddToEach(LedgerRecord record, params ReadOnlySpan<RequestTotals> totals)
    {
        if (record is RequestRecord request)
        {
            AddToEach(request.Timestamp, request.Tenant, request.Service, request.Consumer, Names.Of(request.Decision), request.Reasons, request.Currency,
                request.Cost is { } cost ? RequestRecord.CanonicalCost(cost) : null, TokensOf(request.InputTokens, request.OutputTokens), totals);
        }
    }

    /// <summary>Adds one request with these fields to each of <paramref name="totals"/>, in the slot of its own width.</summary>
    public static void AddToEach(DateTimeOffset at, string? tenant, string? service, string? consumer, string decision, IReadOnlyList<string> reasons,
        string? currency, decimal? cost, long tokens, params ReadOnlySpan<RequestTotals> totals)
    {
        var key = new RequestTotalKey(0, tenant ?? "", service ?? "", consumer ?? "", decision, Join(reasons), currency ?? "");
        foreach (var each in totals)
        {
            each.Add(key with { Slot = SlotOf(at, each.Width) }, 1, cost ?? 0m, tokens);
        }
    }

    /// <summary>Adds one request with these fields.</summary>
    public void Add(DateTimeOffset at, string? tenant, string? service, string? consumer, string decision, IReadOnlyList<string> reasons,
        string? currency, decimal? cost, long tokens)
        => AddToEach(at, tenant, service, consumer, decision, reasons, currency, cost, tokens, this);

    /// <summary>
    /// Adds <paramref name="requests"/> costing <paramref name="spend"/> with <paramref name="tokens"/> tokens to the total
    /// kept under <paramref name="key"/>.
    /// </summary>
    public void Add(RequestTotalKey key, long requests, decimal spend, long tokens)
    {
        ref var total = ref System.Runtime.InteropServices.CollectionsMarshal.GetValueRefOrAddDefault(_totals, key, out _);
        total = (total.Requests + requests, total.Spend + spend, Saturating.Add(total.Tokens, tokens));
    }

    /// <summary>
    /// What a request entry's tokens add to its total: its input and output tokens together, each only when positive, as
    /// a token quota counts them (<see cref="Controls.CounterSeeds"/>).
    /// </summary>
    public static long TokensOf(long? input, long? output) => Saturating.Add(Math.Max(0, input ?? 0), Math.Max(0, output ?? 0));

    /// <summary>Takes the total kept under <paramref name="key"/> out, if there is one.</summary>
    public bool Remove(RequestTotalKey key, out (long Requests, decimal Spend, long Tokens) total) => _totals.Remove(key, out total);

    /// <summary>Forgets every total (the ledger writer reuses one for each batch).</summary>
    public void Clear() => _totals.Clear();

    /// <summary>Reason codes as a key holds them: joined by spaces (none is the empty string).</summary>
    internal static string Join(IReadOnlyList<string> reasons) => reasons.Count switch
    {
        0 => "",
        1 => reasons[0],
        _ => string.Join(' ', reasons),
    };
}
