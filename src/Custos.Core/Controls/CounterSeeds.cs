using Custos.Ledger;
using Custos.Metering;
using Custos.Policy;

namespace Custos.Controls;

/// <summary>One counter as the ledger says it stands: its key, what its window has used so far, and the window's end.</summary>
/// <param name="Key">The counter's key (<see cref="CounterKeys"/>).</param>
/// <param name="Used">Requests, tokens, or cost in <see cref="AdmissionEvaluator.CostUnit"/>s.</param>
/// <param name="End">The end of the counter's window.</param>
public readonly record struct CounterSeed(string Key, long Used, DateTimeOffset End);

/// <summary>
/// What the quotas and budgets of a policy have used of their current day or month, read back from the ledger's request
/// totals (<see cref="RequestTotals"/>, a quarter hour at a time, which every time zone's midnight falls on): requests
/// admitted, spend, and tokens. A start reads a few rows per consumer and quarter hour, however many requests the month held.
/// The in-process counters start from these when a gateway starts, and when a policy version brings a counter they do
/// not hold yet (a new budget, a day budget made a month's); shared counters (Redis) are raised to them when they start
/// empty, and when a policy version brings a counter the version before it lacked: without them a restart forgot everything spent, and a
/// consumer at its daily quota was served again.
/// </summary>
/// <remarks>
/// Rate limits (per minute) are not read back: a restart forgets at most the current minute. Requests count when
/// admitted (decision <c>allow</c>, whatever the provider did); tokens are each allowed entry's input and output.
/// </remarks>
public static class CounterSeeds
{
    private enum Level
    {
        Tenant,
        Service,
        Consumer,
    }

    private sealed class Need(string tenant, Level level, string id, CountedLimit limit, Window window, string key)
    {
        public string Tenant { get; } = tenant;

        public CountedLimit Limit { get; } = limit;

        public Window Window { get; } = window;

        public string Key { get; } = key;

        public long Used { get; set; }

        public bool Covers(string? tenant, string? service, string? consumer, DateTimeOffset at)
            => tenant == Tenant && Window.Contains(at) && level switch
            {
                Level.Tenant => true,
                Level.Service => service == id,
                _ => consumer == id,
            };
    }

    /// <summary>
    /// The counters of <paramref name="snapshot"/>'s quotas and budgets at <paramref name="now"/> for which
    /// <paramref name="wanted"/> is true, with what the ledger says each window has used.
    /// </summary>
    public static async Task<IReadOnlyList<CounterSeed>> ReadAsync(PolicySnapshot snapshot, IEvidenceStore totals, DateTimeOffset now,
        Func<string, bool> wanted, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        ArgumentNullException.ThrowIfNull(totals);
        ArgumentNullException.ThrowIfNull(wanted);
        var needs = new List<Need>();
        CollectAll(needs, snapshot, now, wanted);
        if (needs.Count == 0)
        {
            return [];
        }

        var from = needs.Min(n => n.Window.Start);
        await foreach (var total in totals.ReadTotalsAsync(RequestTotals.SlotSeconds, from, now.AddSeconds(RequestTotals.SlotSeconds), cancellationToken))
        {
            foreach (var need in needs)
            {
                if (!need.Covers(total.Tenant, total.Service, total.Consumer, total.Slot))
                {
                    continue;
                }

                if (need.Limit == CountedLimit.Budget)
                {
                    need.Used = Saturating.Add(need.Used, total.Spend <= 0 ? 0 : AdmissionEvaluator.CostUnits(total.Spend));
                }
                else if (total.Decision == "allow")
                {
                    need.Used = Saturating.Add(need.Used,
                        need.Limit is CountedLimit.TokensPerDay or CountedLimit.TokensPerMonth ? total.Tokens : total.Requests);
                }
            }
        }

        return [.. needs.Select(n => new CounterSeed(n.Key, n.Used, n.Window.End))];
    }

    /// <summary>
    /// The keys of the counters of <paramref name="snapshot"/>'s quotas and budgets at <paramref name="now"/>, those
    /// <see cref="ReadAsync"/> would read: a version's keys that the one before it lacks are the counters it brings.
    /// </summary>
    public static IReadOnlySet<string> KeysOf(PolicySnapshot snapshot, DateTimeOffset now)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        var keys = new HashSet<string>(StringComparer.Ordinal);
        CollectAll([], snapshot, now, key =>
        {
            keys.Add(key);
            return false;
        });
        return keys;
    }

    private static void CollectAll(List<Need> needs, PolicySnapshot snapshot, DateTimeOffset now, Func<string, bool> wanted)
    {
        foreach (var tenant in snapshot.Tenants)
        {
            Collect(needs, tenant, Level.Tenant, tenant.Id, tenant.Limits, tenant.CounterKeys, now, wanted);
        }

        foreach (var service in snapshot.Services.Values)
        {
            Collect(needs, service.Tenant, Level.Service, service.Id, service.Limits, service.CounterKeys, now, wanted);
        }

        foreach (var consumer in snapshot.Consumers.Values)
        {
            Collect(needs, consumer.Service.Tenant, Level.Consumer, consumer.Id, consumer.Limits, consumer.CounterKeys, now, wanted);
        }
    }

    private static void Collect(List<Need> needs, TenantEntry tenant, Level level, string id, LimitsConfig limits, CounterKeys keys, DateTimeOffset now,
        Func<string, bool> wanted)
    {
        var day = tenant.Clock.Day(now);
        var month = tenant.Clock.Month(now);
        void Add(long? limit, CountedLimit counted, Window window)
        {
            if (limit is null)
            {
                return;
            }

            var key = keys.For(counted, window.Id);
            if (wanted(key))
            {
                needs.Add(new Need(tenant.Id, level, id, counted, window, key));
            }
        }

        Add(limits.RequestsPerDay, CountedLimit.RequestsPerDay, day);
        Add(limits.TokensPerDay, CountedLimit.TokensPerDay, day);
        Add(limits.RequestsPerMonth, CountedLimit.RequestsPerMonth, month);
        Add(limits.TokensPerMonth, CountedLimit.TokensPerMonth, month);
        if (limits.Budget is { } budget)
        {
            Add(1, CountedLimit.Budget, budget.Period == BudgetPeriod.Day ? day : month);
        }
    }
}

/// <summary>
/// Shared counters that can lose everything they hold while gateways run (a Redis restarted, or failed over, without
/// persistence) and are seeded again from the ledger, as the in-process counters are when a gateway starts
/// (<see cref="CounterSeeds"/>). The store keeps a marker beside its counters: missing, it holds none of them yet.
/// </summary>
public interface ISeededCounterStore
{
    /// <summary>
    /// Claims the seeding when the store's marker is missing (it started afresh, or lost its data) and sets it, atomically:
    /// true for one caller among every node, which then seeds with <see cref="SeedAsync"/>; false while the marker stands.
    /// </summary>
    Task<bool> ClaimSeedingAsync(CancellationToken cancellationToken = default);

    /// <summary>
    /// Raises each counter of <paramref name="seeds"/> whose window has not ended to what the ledger says it used, where
    /// it holds less: what was admitted since the data was lost and is in the ledger already is not counted twice.
    /// Returns how many counters it raised.
    /// </summary>
    Task<int> SeedAsync(IReadOnlyList<CounterSeed> seeds, CancellationToken cancellationToken = default);

    /// <summary>
    /// Raised when the connection to the store came back after it dropped: the store may have restarted without its data,
    /// which <see cref="ClaimSeedingAsync"/> tells.
    /// </summary>
    event Action? Reconnected;
}
