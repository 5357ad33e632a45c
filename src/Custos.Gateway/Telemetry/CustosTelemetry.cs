using System.Collections.Frozen;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Custos.Controls;
using Custos.Errors;
using Custos.Gateway.Ledger;
using Custos.Gateway.Policy;
using Custos.Ledger;
using Custos.Policy;

namespace Custos.Gateway.Telemetry;

/// <summary>
/// The gateway's metrics and spans, fed from the ledger: every instrument is recorded on the ledger's drain task
/// once a batch is stored (<see cref="ILedgerObserver"/>), never on the request path, so a request pays nothing for
/// telemetry and telemetry counts exactly what the ledger holds. Follows the OpenTelemetry GenAI semantic conventions
/// (<c>gen_ai.client.token.usage</c>, <c>gen_ai.client.operation.duration</c>) and adds Custos's own <c>custos.*</c>
/// instruments; every one is listed in <c>docs/telemetry.md</c>.
/// </summary>
/// <remarks>
/// The <see cref="Meter"/> and <see cref="ActivitySource"/> are this gateway's own instances, so that each gateway
/// exports only its own measurements even when several run in one process (the providers tell them apart by instance,
/// not by name).
/// </remarks>
public sealed class CustosTelemetry : ILedgerObserver, IDisposable
{
    /// <summary>The name of the meter and the activity source (the instrumentation scope).</summary>
    public const string Name = "Custos.Gateway";

    // Explicit bucket boundaries recommended by the GenAI semantic conventions.
    private static readonly long[] TokenBuckets = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864];
    private static readonly double[] DurationBuckets = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92];

    // Shed summaries carry reason codes only; the catalogue gives their decision.
    private static readonly FrozenDictionary<string, Decision> DecisionOfReason = Reasons.All.ToFrozenDictionary(r => r.Code, r => r.Decision, StringComparer.Ordinal);

    private readonly ActivePolicy _policy;
    private readonly Histogram<long> _tokenUsage;
    private readonly Histogram<double> _operationDuration;
    private readonly Counter<long> _decisions;
    private readonly Counter<double> _spend;
    private readonly Counter<long> _reservations;
    private readonly Counter<long> _alerts;

    // Counter increments of one batch, summed before they reach the meter: a request under nine limits makes nine
    // reservations, and the same few tag sets repeat through a batch. Used on the drain task only. Keyed by the
    // strings' identity (SameStrings): the tags are the policy snapshot's and the code's own strings, so this finds
    // them without hashing their characters nine times a request.
    private readonly Dictionary<(string? Decision, string? Reason, string? Tenant, string? Service), long> _batchDecisions = new(SameStrings.Instance);
    private readonly Dictionary<(string? Control, string? Result, string? Tenant), long> _batchReservations = new(SameStrings.Instance);
    private readonly Dictionary<(string? Currency, string? Tenant, string? Service), decimal> _batchSpend = new(SameStrings.Instance);
    private PolicySnapshot? _providersOf; // these two only on the drain task
    private Dictionary<(string? Tenant, string? Provider), ProviderTags> _providers = []; // kept between batches: by content

    /// <summary>Creates the instruments; observable ones read <paramref name="ledger"/> and <paramref name="counters"/> when collected.</summary>
    public CustosTelemetry(ActivePolicy policy, LedgerWriter ledger, ICounterStore counters)
    {
        ArgumentNullException.ThrowIfNull(ledger);
        _policy = policy;
        Meter = new Meter(new MeterOptions(Name) { Version = Version });
        Source = new ActivitySource(Name, Version);

        _tokenUsage = Meter.CreateHistogram("gen_ai.client.token.usage", "{token}", "Number of input and output tokens used.", tags: null,
            new InstrumentAdvice<long> { HistogramBucketBoundaries = TokenBuckets });
        _operationDuration = Meter.CreateHistogram("gen_ai.client.operation.duration", "s", "GenAI operation duration.", tags: null,
            new InstrumentAdvice<double> { HistogramBucketBoundaries = DurationBuckets });
        _decisions = Meter.CreateCounter<long>("custos.decisions", "{request}", "Requests decided, by decision and first reason code.");
        _spend = Meter.CreateCounter<double>("custos.spend", "{currency}", "Cost of requests at the price table of the policy in force, in custos.currency.");
        _reservations = Meter.CreateCounter<long>("custos.reservations", "{reservation}",
            "Limit, quota and budget counters charged by admitted requests (reserved) or that refused a request (refused).");
        _alerts = Meter.CreateCounter<long>("custos.alerts", "{alert}", "Alerts raised.");
        Meter.CreateObservableGauge("custos.ledger.lag", () => ledger.Pending, "{record}", "Ledger records waiting in memory to be stored.");
        Meter.CreateObservableCounter("custos.ledger.persisted", () => ledger.Persisted, "{record}", "Ledger records made durable (stored, or spooled while the store is away) since start.");
        if (counters is InMemoryCounterStore local)
        {
            Meter.CreateObservableGauge("custos.counters", () => local.Count, "{counter}", "Limit, quota and budget counters held in this process.");
        }
    }

    /// <summary>This gateway's meter.</summary>
    public Meter Meter { get; }

    /// <summary>This gateway's activity source: one span per request, made from its ledger entry (see <c>docs/telemetry.md</c>).</summary>
    public ActivitySource Source { get; }

    private static string? Version => typeof(CustosTelemetry).Assembly.GetName().Version?.ToString();

    /// <summary>Counts an alert. Called by the alerting engine; thread-safe.</summary>
    /// <param name="type">What the alert is about, for example <c>budget.soft_exceeded</c>.</param>
    /// <param name="severity">For example <c>warning</c> or <c>critical</c>.</param>
    /// <param name="category">The consumer category concerned, when there is one.</param>
    public void RecordAlert(string type, string severity, string? category)
    {
        if (!_alerts.Enabled)
        {
            return;
        }

        var tags = new TagList { { "custos.alert.type", type }, { "custos.alert.severity", severity } };
        if (category is not null)
        {
            tags.Add("custos.category", category);
        }

        _alerts.Add(1, tags);
    }

    /// <inheritdoc/>
    public void OnPersisted(IReadOnlyList<ChainedRecord> batch)
    {
        var spans = Source.HasListeners();
        if (!spans && !_decisions.Enabled && !_tokenUsage.Enabled && !_operationDuration.Enabled && !_spend.Enabled && !_reservations.Enabled)
        {
            return;
        }

        // Spans made here are roots, not children of whatever activity the drain task happened to inherit.
        var current = spans ? Activity.Current : null;
        if (current is not null)
        {
            Activity.Current = null;
        }

        try
        {
            foreach (var chained in batch)
            {
                switch (chained.Record)
                {
                    case RequestRecord request:
                        Record(request, spans);
                        break;
                    case ShedRecord shed:
                        RecordShed(shed);
                        break;
                }
            }

            AddBatchCounts();
        }
        finally
        {
            if (current is not null)
            {
                Activity.Current = current;
            }
        }
    }

    private void Record(RequestRecord record, bool spans)
    {
        var reason = record.Reasons.Count > 0 ? record.Reasons[0] : null;
        if (_decisions.Enabled)
        {
            var key = (Names.Of(record.Decision), reason ?? "none", record.Tenant, record.Service);
            CollectionsMarshal.GetValueRefOrAddDefault(_batchDecisions, key, out _)++;
        }

        if (record.Cost is { } cost && _spend.Enabled)
        {
            // Summed per batch like the counts: one Add per currency and scope, not one per request.
            CollectionsMarshal.GetValueRefOrAddDefault(_batchSpend, (record.Currency, record.Tenant, record.Service), out _) += cost;
        }

        if (record.Controls.Count > 0 && _reservations.Enabled)
        {
            RecordReservations(record);
        }

        // The GenAI conventions describe calls to a provider: only requests that reached one.
        var operation = OperationOf(record.Endpoint);
        if (record.UpstreamMs is { } upstreamMs && operation is not null && (_tokenUsage.Enabled || _operationDuration.Enabled))
        {
            RecordGenAi(record, operation, upstreamMs, reason);
        }

        if (spans)
        {
            Span(record, operation, reason);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void RecordGenAi(RequestRecord record, string operation, double upstreamMs, string? reason)
    {
        var provider = ProviderOf(record);
        var duration = GenAiTags(record, operation, provider);
        if (record.Outcome != Outcome.Completed)
        {
            duration.Add("error.type", reason ?? "_OTHER");
        }

        _operationDuration.Record((record.GatewayMs + upstreamMs) / 1000, duration);
        if (record.InputTokens is { } input)
        {
            var tags = GenAiTags(record, operation, provider);
            tags.Add("gen_ai.token.type", "input");
            _tokenUsage.Record(input, tags);
        }

        if (record.OutputTokens is { } output)
        {
            var tags = GenAiTags(record, operation, provider);
            tags.Add("gen_ai.token.type", "output");
            _tokenUsage.Record(output, tags);
        }
    }

    private static TagList GenAiTags(RequestRecord record, string operation, ProviderTags provider)
    {
        var tags = new TagList
        {
            { "gen_ai.operation.name", operation },
            { "gen_ai.provider.name", provider.Name },
            { "gen_ai.request.model", record.Model },
            { "gen_ai.response.model", record.ModelServed },
        };
        if (provider.Address is not null)
        {
            tags.Add("server.address", provider.Address);
            tags.Add("server.port", provider.Port);
        }

        return tags;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void RecordReservations(RequestRecord record)
    {
        var controls = record.Controls;
        for (var i = 0; i < controls.Count; i++) // not foreach: it would box the list's enumerator for every record
        {
            var control = controls[i];
            if (!IsCounterControl(control.Control))
            {
                continue;
            }

            var result = control.Decision switch
            {
                ControlDecisions.Pass or ControlDecisions.Warn => "reserved",
                ControlDecisions.Deny or ControlDecisions.Throttle => "refused",
                _ => null, // not evaluated: an earlier counter refused, nothing was charged
            };
            if (result is null)
            {
                continue;
            }

            var key = (control.Control, result, record.Tenant);
            CollectionsMarshal.GetValueRefOrAddDefault(_batchReservations, key, out _)++; // one look-up, not two
        }
    }

    private void AddBatchCounts()
    {
        foreach (var ((decision, reason, tenant, service), count) in _batchDecisions)
        {
            var tags = new TagList { { "custos.decision", decision }, { "custos.reason", reason } };
            AddScope(ref tags, tenant, service);
            _decisions.Add(count, tags);
        }

        foreach (var ((control, result, tenant), count) in _batchReservations)
        {
            var tags = new TagList { { "custos.control", control }, { "custos.result", result } };
            AddScope(ref tags, tenant, service: null);
            _reservations.Add(count, tags);
        }

        foreach (var ((currency, tenant, service), amount) in _batchSpend)
        {
            var tags = new TagList { { "custos.currency", currency } };
            AddScope(ref tags, tenant, service);
            _spend.Add((double)amount, tags);
        }

        _batchDecisions.Clear();
        _batchReservations.Clear();
        _batchSpend.Clear();
    }

    private static bool IsCounterControl(string control)
        => control == "budget" || control.StartsWith("rate_limit.", StringComparison.Ordinal) || control.StartsWith("quota.", StringComparison.Ordinal);

    private void RecordShed(ShedRecord shed)
    {
        if (!_decisions.Enabled)
        {
            return;
        }

        foreach (var (reason, count) in shed.Reasons)
        {
            var decision = DecisionOfReason.TryGetValue(reason, out var known) ? known : Decision.Throttle;
            _decisions.Add(count, new TagList { { "custos.decision", Names.Of(decision) }, { "custos.reason", reason } });
        }
    }

    /// <summary>One span per request, timed from its ledger entry; only made while a tracer provider listens.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void Span(RequestRecord record, string? operation, string? reason)
    {
        var upstream = record.UpstreamMs is not null;
        var name = operation is null ? "custos.request" : record.Model is null ? operation : operation + " " + record.Model;
        using var activity = Source.StartActivity(name, upstream ? ActivityKind.Client : ActivityKind.Internal, parentContext: default,
            startTime: record.Timestamp);
        if (activity is null)
        {
            return;
        }

        if (activity.IsAllDataRequested)
        {
            if (operation is not null)
            {
                activity.SetTag("gen_ai.operation.name", operation);
                activity.SetTag("gen_ai.request.model", record.Model);
            }

            if (upstream)
            {
                var provider = ProviderOf(record);
                activity.SetTag("gen_ai.provider.name", provider.Name);
                activity.SetTag("gen_ai.response.model", record.ModelServed);
                activity.SetTag("gen_ai.usage.input_tokens", record.InputTokens);
                activity.SetTag("gen_ai.usage.output_tokens", record.OutputTokens);
                if (provider.Address is not null)
                {
                    activity.SetTag("server.address", provider.Address);
                    activity.SetTag("server.port", provider.Port);
                }
            }

            activity.SetTag("custos.request_id", record.RequestId);
            activity.SetTag("custos.decision", Names.Of(record.Decision));
            activity.SetTag("custos.reason", reason);
            activity.SetTag("custos.outcome", Names.Of(record.Outcome));
            activity.SetTag("custos.tenant", record.Tenant);
            activity.SetTag("custos.service", record.Service);
            activity.SetTag("custos.consumer", record.Consumer);
            activity.SetTag("custos.provider", record.Provider);
            activity.SetTag("http.response.status_code", record.Status);
            if (record.Cost is { } cost)
            {
                activity.SetTag("custos.cost", (double)cost);
                activity.SetTag("custos.currency", record.Currency);
            }

            if (record.Outcome is Outcome.UpstreamError or Outcome.Interrupted or Outcome.Failed)
            {
                activity.SetTag("error.type", reason ?? "_OTHER");
                activity.SetStatus(ActivityStatusCode.Error, reason);
            }
        }

        activity.SetEndTime(record.Timestamp.UtcDateTime.AddMilliseconds(record.GatewayMs + (record.UpstreamMs ?? 0)));
    }

    private static void AddScope(ref TagList tags, string? tenant, string? service)
    {
        if (tenant is not null)
        {
            tags.Add("custos.tenant", tenant);
        }

        if (service is not null)
        {
            tags.Add("custos.service", service);
        }
    }

    /// <summary>The <c>gen_ai.operation.name</c> of a data-plane endpoint, or null for endpoints that are not GenAI operations.</summary>
    internal static string? OperationOf(string endpoint) => endpoint switch
    {
        "/v1/chat/completions" or "/v1/messages" or "/v1/responses" => "chat",
        "/v1/completions" => "text_completion",
        "/v1/embeddings" => "embeddings",
        _ => null,
    };

    /// <summary>
    /// The provider's <c>gen_ai.provider.name</c> (the conventions' well-known name of its API) and address, from the
    /// policy in force; cached per policy version. A provider no longer in the policy is named by its id.
    /// </summary>
    private ProviderTags ProviderOf(RequestRecord record)
    {
        var snapshot = _policy.Current;
        if (!ReferenceEquals(snapshot, _providersOf))
        {
            _providers = [];
            _providersOf = snapshot;
        }

        var key = (record.Tenant, record.Provider);
        if (!_providers.TryGetValue(key, out var tags))
        {
            var entry = snapshot.Tenants.FirstOrDefault(t => t.Id == key.Tenant)?.CanonicalModels.Select(m => m.Provider).FirstOrDefault(p => p.Id == key.Provider);
            tags = entry is null
                ? new ProviderTags(record.Provider ?? "_OTHER", null, null)
                : new ProviderTags(entry.Kind switch
                {
                    ProviderKind.OpenAI => "openai",
                    ProviderKind.Anthropic => "anthropic",
                    _ => entry.Id,
                }, entry.BaseUrl.Host, entry.BaseUrl.Port);
            _providers[key] = tags;
        }

        return tags;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        Meter.Dispose();
        Source.Dispose();
    }

    /// <summary>A provider's tags; <paramref name="Port"/> boxed once, not at every measurement that carries it.</summary>
    private sealed record ProviderTags(string Name, string? Address, object? Port);

    /// <summary>
    /// Tuples of strings equal when they hold the same string instances. Two equal strings that are different instances
    /// make two keys, whose sums reach the meter as two increments of the same tag set: the totals are the same.
    /// </summary>
    private sealed class SameStrings :
        IEqualityComparer<(string?, string?, string?)>,
        IEqualityComparer<(string?, string?, string?, string?)>
    {
        public static readonly SameStrings Instance = new();

        public bool Equals((string?, string?, string?) x, (string?, string?, string?) y)
            => ReferenceEquals(x.Item1, y.Item1) && ReferenceEquals(x.Item2, y.Item2) && ReferenceEquals(x.Item3, y.Item3);

        public bool Equals((string?, string?, string?, string?) x, (string?, string?, string?, string?) y)
            => ReferenceEquals(x.Item1, y.Item1) && ReferenceEquals(x.Item2, y.Item2) && ReferenceEquals(x.Item3, y.Item3) && ReferenceEquals(x.Item4, y.Item4);

        public int GetHashCode((string?, string?, string?) key) => HashCode.Combine(Of(key.Item1), Of(key.Item2), Of(key.Item3));

        public int GetHashCode((string?, string?, string?, string?) key) => HashCode.Combine(Of(key.Item1), Of(key.Item2), Of(key.Item3), Of(key.Item4));

        private static int Of(string? value) => RuntimeHelpers.GetHashCode(value);
    }
}
