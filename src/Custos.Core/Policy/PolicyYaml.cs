using System.Globalization;
using System.Text.RegularExpressions;
using YamlDotNet.Core;
using YamlDotNet.RepresentationModel;

namespace Custos.Policy;

/// <summary>
/// Deployment settings of one gateway process, from the optional <c>server:</c> section of the YAML file.
/// They are not policy: they are not versioned and do not change the policy hash.
/// </summary>
public sealed record ServerSettings
{
    /// <summary>Data-plane listen URL. Default <c>http://127.0.0.1:8080</c>.</summary>
    public string? Listen { get; init; }

    /// <summary>Admin listen URL. Default <c>http://127.0.0.1:8081</c>.</summary>
    public string? AdminListen { get; init; }

    /// <summary>Folder of the embedded store, relative to the YAML file. Default <c>custos-data</c>.</summary>
    public string? Data { get; init; }

    /// <summary>This node's id (its ledger chain). Default <c>node-</c> and the host name.</summary>
    public string? NodeId { get; init; }

    /// <summary>A directory witness for ledger checkpoints, relative to the YAML file. Default: none.</summary>
    public string? WitnessDir { get; init; }

    /// <summary>A webhook witness for ledger checkpoints. Default: none.</summary>
    public Uri? WitnessWebhook { get; init; }

    /// <summary>
    /// An OpenTelemetry collector to push metrics and traces to over OTLP. Default: none, unless the standard
    /// <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> environment variable is set.
    /// </summary>
    public Uri? OtlpEndpoint { get; init; }

    /// <summary>How to reach <see cref="OtlpEndpoint"/>. Default: <c>OTEL_EXPORTER_OTLP_PROTOCOL</c>, else gRPC.</summary>
    public OtlpProtocol? OtlpProtocol { get; init; }

    /// <summary>Where rate limits, quotas and budgets are counted: in this process (default) or in Redis, shared by every node.</summary>
    public CounterBackend? Counters { get; init; }

    /// <summary>Where the ledger, policy versions and registry are stored: embedded SQLite (default) or PostgreSQL, shared by every node.</summary>
    public StorageBackend? Storage { get; init; }

    /// <summary>
    /// The load balancers and proxies in front of the data plane (addresses or CIDR ranges) whose
    /// <c>X-Forwarded-For</c> names the client the ledger records. Default: none, and the header is ignored.
    /// </summary>
    public IReadOnlyList<System.Net.IPNetwork> TrustedProxies { get; init; } = [];

    /// <summary>
    /// The certificate (PEM, with its chain) that <c>https://</c> listeners present, relative to the YAML file.
    /// Required when <see cref="Listen"/> or <see cref="AdminListen"/> is HTTPS.
    /// </summary>
    public string? TlsCertificate { get; init; }

    /// <summary>The certificate's private key (PEM), relative to the YAML file. Default: read from the certificate's file.</summary>
    public string? TlsKey { get; init; }
}

/// <summary>Where the ledger, policy versions, registry, evidence and alerts are stored.</summary>
public enum StorageBackend
{
    /// <summary>The embedded SQLite file in the data folder: one node.</summary>
    Sqlite,

    /// <summary>PostgreSQL (connection string from <c>CUSTOS_POSTGRES</c>): shared by every node.</summary>
    Postgres,
}

/// <summary>Where the counters behind rate limits, quotas and budgets live.</summary>
public enum CounterBackend
{
    /// <summary>In this process: one node.</summary>
    Memory,

    /// <summary>In Redis (connection string from <c>CUSTOS_REDIS</c>): shared by every node.</summary>
    Redis,
}

/// <summary>The OTLP transport, as the standard <c>OTEL_EXPORTER_OTLP_PROTOCOL</c> variable names it.</summary>
public enum OtlpProtocol
{
    /// <summary><c>grpc</c>: OTLP over gRPC, by convention on port 4317.</summary>
    Grpc,

    /// <summary>
    /// <c>http/protobuf</c>: OTLP over HTTP with protobuf bodies, by convention on port 4318; the signal paths
    /// (<c>/v1/metrics</c>, <c>/v1/traces</c>) are appended to the endpoint.
    /// </summary>
    HttpProtobuf,
}

/// <summary>The outcome of reading a policy document: the document when there are no errors, and every diagnostic.</summary>
public sealed record PolicyReadResult(PolicyDocument? Document, IReadOnlyList<PolicyDiagnostic> Diagnostics)
{
    /// <summary>The <c>server:</c> section, or defaults.</summary>
    public ServerSettings Server { get; init; } = new();

    /// <summary>True when there is no error (warnings allowed).</summary>
    public bool IsValid => Document is not null;

    /// <summary>Returns the document, or throws with every diagnostic.</summary>
    public PolicyDocument GetValidDocument(string source)
        => Document ?? throw new PolicyValidationException(Diagnostics, source);
}

/// <summary>
/// Reads the YAML form of a <see cref="PolicyDocument"/>. Raw input becomes a validated document in one
/// step; every error is reported at once, with its line and column, without short-circuiting.
/// </summary>
public static partial class PolicyYaml
{
    /// <summary>A provider's <c>base_url</c> that could not be read (already an error): no more is said of it.</summary>
    internal static readonly Uri UnreadableUrl = new("http://invalid");

    /// <summary>Parses and validates <paramref name="yaml"/>.</summary>
    public static PolicyReadResult Read(string yaml) => Read(yaml, validate: true);

    /// <summary>
    /// Reads a policy as the admin API shows it to an admin scoped to tenants or services: the part of the whole in that
    /// scope, whose references to what the scope leaves out (the admin an owner names, the approvers) do not resolve. Its
    /// form is checked, its references are not: for showing a policy, never for enforcing one. Null when
    /// <paramref name="yaml"/> is not a policy whose every field can be read.
    /// </summary>
    public static PolicyDocument? ReadView(string yaml) => Read(yaml, validate: false).Document;

    private static PolicyReadResult Read(string yaml, bool validate)
    {
        var reader = new Reader();
        PolicyDocument? document = null;
        var server = new ServerSettings();
        try
        {
            var stream = LoadNodes(yaml);
            if (stream.Documents.Count == 0 || stream.Documents[0].RootNode is not YamlMappingNode root)
            {
                reader.Error(stream.Documents.Count == 0 ? null : stream.Documents[0].RootNode, "$",
                    "the policy must be a YAML mapping with at least 'tenants'");
            }
            else
            {
                document = reader.ReadDocument(root, out server);
            }
        }
        catch (YamlException ex)
        {
            reader.Diagnostics.Add(new PolicyDiagnostic(DiagnosticSeverity.Error, (int)ex.Start.Line, (int)ex.Start.Column,
                "$", "YAML syntax: " + ex.Message));
        }

        if (document is not null && validate)
        {
            PolicyValidator.Validate(document, reader);
        }

        var ordered = reader.Diagnostics.OrderBy(d => d.Line).ThenBy(d => d.Column).ToArray();
        var valid = document is not null && !ordered.Any(d => d.Severity == DiagnosticSeverity.Error);
        return new PolicyReadResult(valid ? document : null, ordered) { Server = server };
    }

    /// <summary>
    /// Loads <paramref name="yaml"/>'s node tree. YamlDotNet reports most malformed input as <see cref="YamlException"/>
    /// with its position, but a few (a <c>[</c> or <c>{</c> left open, a tag that is not a URI, an event it does not
    /// expect) as <see cref="InvalidOperationException"/> or <see cref="ArgumentException"/>, which say neither where nor,
    /// for the first, what. Those become a <see cref="YamlException"/> at the last event the parser read (the open
    /// <c>[</c>, the tag), so that a broken document is a diagnostic naming its line, and never a crash.
    /// </summary>
    private static YamlStream LoadNodes(string yaml)
    {
        var stream = new YamlStream();
        var parser = new Parser(new StringReader(yaml));
        try
        {
            stream.Load(parser);
        }
        catch (Exception ex) when (ex is InvalidOperationException or ArgumentException)
        {
            var at = parser.Current?.Start ?? Mark.Empty;
            var what = ex switch
            {
                ArgumentException { ParamName: { } name } argument => argument.Message.Replace($" (Parameter '{name}')", "", StringComparison.Ordinal),
                ArgumentException argument => argument.Message,
                _ => "the document cannot be read on from here (a '[' or '{' that is not closed, or a value cut short)",
            };
            throw new YamlException(at, at, what, ex);
        }

        return stream;
    }

    /// <summary>Reads <paramref name="path"/> and validates it; throws <see cref="PolicyValidationException"/> on errors.</summary>
    public static PolicyDocument Load(string path)
        => Read(File.ReadAllText(path)).GetValidDocument(path);

    [GeneratedRegex("^[a-z0-9][a-z0-9._-]{0,63}$")]
    internal static partial Regex IdPattern();

    /// <summary>Walks the YAML node tree, remembering where each record came from.</summary>
    internal sealed class Reader
    {
        private readonly Dictionary<object, Mark> _marks = new(ReferenceEqualityComparer.Instance);
        private readonly Dictionary<(object, string), Mark> _fieldMarks = new();

        public List<PolicyDiagnostic> Diagnostics { get; } = [];

        public void Error(YamlNode? node, string path, string message)
            => Add(DiagnosticSeverity.Error, node?.Start ?? Mark.Empty, path, message);

        public void Add(DiagnosticSeverity severity, Mark mark, string path, string message)
            => Diagnostics.Add(new PolicyDiagnostic(severity, (int)mark.Line, (int)mark.Column, path, message));

        /// <summary>Where a record, or one of its fields, was written; falls back to the record itself.</summary>
        public Mark MarkOf(object record, string? field = null)
        {
            if (field is not null && _fieldMarks.TryGetValue((record, field), out var fieldMark))
            {
                return fieldMark;
            }

            return _marks.TryGetValue(record, out var mark) ? mark : Mark.Empty;
        }

        /// <summary>The OTLP protocol in the spelling of <c>OTEL_EXPORTER_OTLP_PROTOCOL</c>, which the enum reader cannot parse.</summary>
        private OtlpProtocol? ReadOtlpProtocol(MapReader server)
        {
            switch (server.String("otlp_protocol"))
            {
                case null:
                    return null;
                case "grpc":
                    return OtlpProtocol.Grpc;
                case "http/protobuf":
                    return OtlpProtocol.HttpProtobuf;
                case var other:
                    Error(server.Node("otlp_protocol"), "server.otlp_protocol", $"'{other}' is not one of: grpc, http/protobuf");
                    return null;
            }
        }

        /// <summary>A list of addresses (<c>10.0.0.5</c>) and CIDR ranges (<c>10.0.0.0/8</c>, <c>fd00::/8</c>).</summary>
        private List<System.Net.IPNetwork> ReadNetworks(MapReader map, string key)
        {
            var texts = map.StringList(key);
            var networks = new List<System.Net.IPNetwork>(texts.Count);
            for (var i = 0; i < texts.Count; i++)
            {
                if (System.Net.IPNetwork.TryParse(texts[i], out var network))
                {
                    networks.Add(network);
                }
                else if (System.Net.IPAddress.TryParse(texts[i], out var address))
                {
                    networks.Add(new System.Net.IPNetwork(address, address.GetAddressBytes().Length * 8));
                }
                else
                {
                    var node = map.Node(key) is YamlSequenceNode { Children.Count: var count } list && count == texts.Count ? list.Children[i] : map.Node(key);
                    Error(node, $"{map.Path}.{key}[{i}]", $"'{texts[i]}' is neither an IP address nor a CIDR range such as 10.0.0.0/8");
                }
            }

            return networks;
        }

        /// <summary>
        /// What is wrong with a listener's address as Kestrel would bind it (<c>http://127.0.0.1:8080</c>,
        /// <c>http://0.0.0.0:8080</c>, <c>http://[::]:8080</c>, <c>http://*:8080</c>), or null: checked here so that a
        /// mistyped one is a line in <c>custos config validate</c>, not an exception when the gateway starts.
        /// </summary>
        internal static string? ListenerProblem(string url)
        {
            const string Shape = "a listener address is a scheme, a host and a port, such as http://127.0.0.1:8080 or http://0.0.0.0:8080";
            var scheme = url.StartsWith("http://", StringComparison.OrdinalIgnoreCase) ? 7
                : url.StartsWith("https://", StringComparison.OrdinalIgnoreCase) ? 8 : 0;
            if (scheme == 0)
            {
                return $"'{url}' is not http:// or https://; {Shape}";
            }

            var authority = url.AsSpan(scheme);
            if (authority.StartsWith("unix:/", StringComparison.OrdinalIgnoreCase))
            {
                return null; // a Unix domain socket: http://unix:/run/custos.sock
            }

            var slash = authority.IndexOf('/');
            if (slash >= 0)
            {
                if (slash != authority.Length - 1)
                {
                    return $"'{url}' has a path; {Shape}";
                }

                authority = authority[..slash];
            }

            // The port follows the last ':' after an IPv6 address's ']'.
            var colon = authority.LastIndexOf(':');
            var host = colon > authority.LastIndexOf(']') ? authority[..colon] : authority;
            if (host.IsEmpty || host.ContainsAny(" @?#"))
            {
                return $"'{url}' has no host; {Shape}";
            }

            if (host.Length != authority.Length)
            {
                var port = authority[(colon + 1)..];
                if (!int.TryParse(port, NumberStyles.None, CultureInfo.InvariantCulture, out var number) || number > 65535)
                {
                    return $"'{url}' has no port from 0 to 65535";
                }
            }

            return null;
        }

        public PolicyDocument ReadDocument(YamlMappingNode root, out ServerSettings server)
        {
            var map = new MapReader(this, root, "$", ["server", "gateway", "defaults", "tenants", "services", "consumers", "credentials", "admins", "identity_providers", "alerts"]);
            server = new ServerSettings();
            if (map.Node("server") is { } serverNode && AsMap(serverNode, "server",
                    ["listen", "admin_listen", "data", "node_id", "witness_dir", "witness_webhook", "otlp_endpoint", "otlp_protocol", "counters", "storage",
                        "trusted_proxies", "tls_certificate", "tls_key"]) is { } s)
            {
                server = new ServerSettings
                {
                    Listen = s.String("listen"),
                    AdminListen = s.String("admin_listen"),
                    Data = s.String("data"),
                    NodeId = s.String("node_id"),
                    WitnessDir = s.String("witness_dir"),
                    WitnessWebhook = s.Url("witness_webhook"),
                    OtlpEndpoint = s.Url("otlp_endpoint"),
                    OtlpProtocol = ReadOtlpProtocol(s),
                    Counters = s.Enum<CounterBackend>("counters"),
                    Storage = s.Enum<StorageBackend>("storage"),
                    TrustedProxies = ReadNetworks(s, "trusted_proxies"),
                    TlsCertificate = s.String("tls_certificate"),
                    TlsKey = s.String("tls_key"),
                };
                foreach (var (listener, url) in (ReadOnlySpan<(string, string?)>)[("listen", server.Listen), ("admin_listen", server.AdminListen)])
                {
                    if (url is not null && ListenerProblem(url) is { } problem)
                    {
                        Error(s.Node(listener), $"server.{listener}", problem);
                    }
                    else if (url is not null && url.StartsWith("https://", StringComparison.OrdinalIgnoreCase) && server.TlsCertificate is null)
                    {
                        Error(s.Node(listener), $"server.{listener}", "an https:// listener needs server.tls_certificate (and server.tls_key, unless the certificate's file holds the key)");
                    }
                }

                if (server.Listen is { } data && server.AdminListen is { } admin && ListenerProblem(data) is null
                    && string.Equals(data.TrimEnd('/'), admin.TrimEnd('/'), StringComparison.OrdinalIgnoreCase) && !data.TrimEnd('/').EndsWith(":0", StringComparison.Ordinal))
                {
                    Error(s.Node("admin_listen"), "server.admin_listen", $"is the data plane's address too ({admin}); the admin API needs a port of its own");
                }

                if (server.TlsKey is not null && server.TlsCertificate is null)
                {
                    Error(s.Node("tls_key"), "server.tls_key", "is set without server.tls_certificate");
                }
            }

            var gateway = map.Node("gateway") is { } g ? ReadGateway(g, "gateway") : new GatewaySettings();
            var defaults = map.Node("defaults") is { } d ? ReadDefaults(d, "defaults") : new CategoryDefaultsSet();
            return new PolicyDocument
            {
                Gateway = gateway,
                Defaults = defaults,
                Tenants = ReadList(map, "tenants", ReadTenant),
                Services = ReadList(map, "services", ReadService),
                Consumers = ReadList(map, "consumers", ReadConsumer),
                Credentials = ReadList(map, "credentials", ReadCredential),
                Admins = ReadList(map, "admins", ReadAdmin),
                IdentityProviders = map.Node("identity_providers") is null ? null : ReadList(map, "identity_providers", ReadIdentityProvider),
                Alerts = map.Node("alerts") is { } alerts ? ReadAlerts(alerts, "alerts") : null,
            };
        }

        private AlertsConfig? ReadAlerts(YamlNode node, string path)
        {
            if (AsMap(node, path, ["budget_thresholds", "escalate_after_minutes", "security", "auth_failures_per_minute", "denials_per_minute",
                "agent_run_requests_per_minute", "baseline_warmup_minutes", "baseline_warmup_hours", "disabled", "categories"]) is not { } map)
            {
                return null;
            }

            List<long>? thresholds = null;
            if (map.Node("budget_thresholds") is not null)
            {
                thresholds = [];
                foreach (var text in map.StringList("budget_thresholds"))
                {
                    if (long.TryParse(text.TrimEnd('%'), NumberStyles.Integer, CultureInfo.InvariantCulture, out var percent) && percent is >= 1 and <= 1000)
                    {
                        thresholds.Add(percent);
                    }
                    else
                    {
                        Error(map.Node("budget_thresholds"), path + ".budget_thresholds", $"'{text}' is not a per cent between 1 and 1000");
                    }
                }

                thresholds.Sort();
            }

            long? Positive(string key, long max)
            {
                var value = map.Long(key);
                if (value is { } v && (v < 1 || v > max))
                {
                    Error(map.Node(key), path + "." + key, $"must be between 1 and {max}");
                }

                return value;
            }

            var disabled = map.Node("disabled") is null ? null : map.StringList("disabled");
            foreach (var name in disabled ?? [])
            {
                if (!Custos.Alerts.AlertTypes.Detectors.Contains(name))
                {
                    Error(map.Node("disabled"), path + ".disabled", $"'{name}' is not a detector; expected one of: {string.Join(", ", Custos.Alerts.AlertTypes.Detectors)}");
                }
            }

            CategoryAlertsSet? categories = null;
            if (map.Node("categories") is { } categoriesNode && AsMap(categoriesNode, path + ".categories", ["external", "internal", "automation", "agent"]) is { } c)
            {
                categories = Remember(categoriesNode, new CategoryAlertsSet
                {
                    External = c.Node("external") is { } e ? ReadCategoryAlerts(e, path + ".categories.external") : null,
                    Internal = c.Node("internal") is { } i ? ReadCategoryAlerts(i, path + ".categories.internal") : null,
                    Automation = c.Node("automation") is { } a ? ReadCategoryAlerts(a, path + ".categories.automation") : null,
                    Agent = c.Node("agent") is { } g ? ReadCategoryAlerts(g, path + ".categories.agent") : null,
                });
            }

            return Remember(node, new AlertsConfig
            {
                BudgetThresholds = thresholds,
                EscalateAfterMinutes = Positive("escalate_after_minutes", 7 * 24 * 60),
                Security = map.Node("security") is not null ? ReadOwner(map, "security") : null,
                AuthFailuresPerMinute = Positive("auth_failures_per_minute", 1_000_000),
                DenialsPerMinute = Positive("denials_per_minute", 1_000_000),
                AgentRunRequestsPerMinute = Positive("agent_run_requests_per_minute", 1_000_000),
                BaselineWarmupMinutes = Positive("baseline_warmup_minutes", 7 * 24 * 60),
                BaselineWarmupHours = Positive("baseline_warmup_hours", 30 * 24),
                Disabled = disabled,
                Categories = categories,
            }, map);
        }

        private CategoryAlertConfig? ReadCategoryAlerts(YamlNode node, string path)
        {
            if (AsMap(node, path, ["alert_at", "act_at", "action", "throttle_requests_per_minute", "min_requests_per_minute"]) is not { } map)
            {
                return null;
            }

            var config = new CategoryAlertConfig
            {
                AlertAt = map.Decimal("alert_at"),
                ActAt = map.Decimal("act_at"),
                Action = map.Enum<AlertAction>("action"),
                ThrottleRequestsPerMinute = map.Long("throttle_requests_per_minute"),
                MinRequestsPerMinute = map.Long("min_requests_per_minute"),
            };
            if (config.AlertAt is <= 1 || config.ActAt is <= 1)
            {
                Error(node, path, "'alert_at' and 'act_at' are multiples of the baseline and must be above 1");
            }

            if (config.ThrottleRequestsPerMinute is < 1 || config.MinRequestsPerMinute is < 1)
            {
                Error(node, path, "'throttle_requests_per_minute' and 'min_requests_per_minute' must be at least 1");
            }

            return Remember(node, config, map);
        }

        private ScheduleConfig? ReadSchedule(YamlNode node, string path)
        {
            if (AsMap(node, path, ["days", "hours"]) is not { } map)
            {
                return null;
            }

            var schedule = new ScheduleConfig { Days = map.StringList("days"), Hours = map.String("hours") };
            foreach (var day in schedule.Days)
            {
                if (!Custos.Alerts.Schedules.TryParseDay(day, out _))
                {
                    Error(map.Node("days"), path + ".days", $"'{day}' is not a day; expected mon, tue, wed, thu, fri, sat or sun");
                }
            }

            if (schedule.Hours is { } hours && !Custos.Alerts.Schedules.TryParseHours(hours, out _, out _))
            {
                Error(map.Node("hours"), path + ".hours", $"'{hours}' is not a range of hours such as 08:00-18:00");
            }

            return Remember(node, schedule, map);
        }

        private IdentityProviderConfig? ReadIdentityProvider(YamlNode node, string path)
        {
            if (AsMap(node, path, ["id", "issuer", "audience", "jwks_url", "keys", "subject_claim"]) is not { } map)
            {
                return null;
            }

            var provider = new IdentityProviderConfig
            {
                Id = map.RequiredString("id") ?? "",
                Issuer = map.RequiredString("issuer") ?? "",
                Audience = map.RequiredString("audience") ?? "",
                JwksUrl = map.Url("jwks_url"),
                Keys = map.Node("keys") is null ? null : map.StringList("keys"),
                SubjectClaim = map.String("subject_claim"),
            };
            if (provider.JwksUrl is null && (provider.Keys is null || provider.Keys.Count == 0))
            {
                Error(node, path, "an identity provider needs 'jwks_url' or 'keys' to verify its tokens");
            }

            return Remember(node, provider, map);
        }

        private GatewaySettings ReadGateway(YamlNode node, string path)
        {
            if (AsMap(node, path, ["max_request_body_bytes", "upstream_timeout_seconds", "prompt_regex_timeout_ms", "max_in_flight_requests", "max_concurrent_reports", "require_owners",
                "fail_modes"]) is not { } map)
            {
                return new GatewaySettings();
            }

            var defaults = new GatewaySettings();
            var maxBody = map.Long("max_request_body_bytes") ?? defaults.MaxRequestBodyBytes;
            if (maxBody is < 1024 or > 256L * 1024 * 1024)
            {
                Error(map.Node("max_request_body_bytes"), path + ".max_request_body_bytes", "must be between 1024 and 268435456 bytes");
            }

            var timeout = map.Long("upstream_timeout_seconds") ?? (long)defaults.UpstreamTimeout.TotalSeconds;
            if (timeout is < 1 or > 3600)
            {
                Error(map.Node("upstream_timeout_seconds"), path + ".upstream_timeout_seconds", "must be between 1 and 3600 seconds");
            }

            var regexTimeout = map.Long("prompt_regex_timeout_ms") ?? (long)defaults.PromptRegexTimeout.TotalMilliseconds;
            if (regexTimeout is < 1 or > 10_000)
            {
                Error(map.Node("prompt_regex_timeout_ms"), path + ".prompt_regex_timeout_ms", "must be between 1 and 10000 milliseconds");
            }

            var inFlight = map.Long("max_in_flight_requests") ?? defaults.MaxInFlightRequests;
            if (inFlight is < 1 or > 1_000_000)
            {
                Error(map.Node("max_in_flight_requests"), path + ".max_in_flight_requests", "must be between 1 and 1000000");
            }

            var reports = map.Long("max_concurrent_reports");
            if (reports is < 1 or > 64)
            {
                Error(map.Node("max_concurrent_reports"), path + ".max_concurrent_reports", "must be between 1 and 64");
            }

            return Remember(node, new GatewaySettings
            {
                MaxRequestBodyBytes = maxBody,
                UpstreamTimeout = TimeSpan.FromSeconds(timeout),
                PromptRegexTimeout = TimeSpan.FromMilliseconds(regexTimeout),
                MaxInFlightRequests = (int)Math.Clamp(inFlight, 1, 1_000_000),
                MaxConcurrentReports = reports is { } r ? (int)Math.Clamp(r, 1, 64) : null,
                RequireOwners = map.Enum<RequireOwners>("require_owners"),
                FailModes = map.Node("fail_modes") is { } failModes ? ReadFailModes(failModes, path + ".fail_modes") : null,
            });
        }

        private FailModes? ReadFailModes(YamlNode node, string path)
        {
            if (AsMap(node, path, ["rate_limits", "quotas", "budgets", "revocation"]) is not { } map)
            {
                return null;
            }

            var defaults = new FailModes();
            FailMode Read(string key, FailMode fallback)
            {
                var mode = map.Enum<FailMode>(key) ?? fallback;
                if (mode == FailMode.LocalShare && key != "rate_limits")
                {
                    Error(map.Node(key), path + "." + key, "local_share applies to rate limits only; use closed or open");
                }

                return mode;
            }

            return Remember(node, new FailModes
            {
                RateLimits = Read("rate_limits", defaults.RateLimits),
                Quotas = Read("quotas", defaults.Quotas),
                Budgets = Read("budgets", defaults.Budgets),
                Revocation = Read("revocation", defaults.Revocation),
            });
        }

        private TenantConfig? ReadTenant(YamlNode node, string path)
        {
            if (AsMap(node, path, ["id", "name", "time_zone", "providers", "models", "limits", "prompt_rules", "suspended"]) is not { } map)
            {
                return null;
            }

            var tenant = new TenantConfig
            {
                Id = map.RequiredString("id") ?? "",
                Name = map.String("name"),
                TimeZone = map.String("time_zone") ?? "UTC",
                Providers = ReadList(map, "providers", ReadProvider),
                Models = ReadList(map, "models", ReadModel),
                Limits = ReadLimits(map, path),
                PromptRules = ReadList(map, "prompt_rules", ReadPromptRule),
                Suspended = map.Bool("suspended"),
            };
            return Remember(node, tenant, map);
        }

        private ProviderConfig? ReadProvider(YamlNode node, string path)
        {
            if (AsMap(node, path, ["id", "type", "base_url", "api_key_env"]) is not { } map)
            {
                return null;
            }

            var provider = new ProviderConfig
            {
                Id = map.RequiredString("id") ?? "",
                Kind = map.Enum<ProviderKind>("type", required: true) ?? ProviderKind.OpenAI,
                BaseUrl = map.Url("base_url", required: true) ?? UnreadableUrl,
                ApiKeyEnv = map.String("api_key_env"),
            };
            return Remember(node, provider, map);
        }

        private ModelConfig? ReadModel(YamlNode node, string path)
        {
            if (AsMap(node, path, ["name", "provider", "upstream_model", "aliases", "kind", "price"]) is not { } map)
            {
                return null;
            }

            decimal input = 0, output = 0;
            decimal? cachedInput = null, cacheWriteInput = null;
            var currency = "USD";
            if (map.Node("price") is { } priceNode
                && AsMap(priceNode, path + ".price", ["input_per_mtok", "output_per_mtok", "cached_input_per_mtok", "cache_write_input_per_mtok", "currency"]) is { } price)
            {
                input = price.Decimal("input_per_mtok") ?? 0;
                output = price.Decimal("output_per_mtok") ?? 0;
                cachedInput = price.Decimal("cached_input_per_mtok");
                cacheWriteInput = price.Decimal("cache_write_input_per_mtok");
                currency = price.String("currency") ?? "USD";
                if (!IsCurrencyCode(currency))
                {
                    Error(price.Node("currency"), path + ".price.currency", $"'{currency}' is not a currency code: three capital letters (ISO 4217), such as USD or EUR");
                }
                if (input < 0 || output < 0 || cachedInput < 0 || cacheWriteInput < 0)
                {
                    Error(priceNode, path + ".price", "prices cannot be negative");
                }

                foreach (var (field, value) in (ReadOnlySpan<(string, decimal)>)[("input_per_mtok", input), ("output_per_mtok", output),
                    ("cached_input_per_mtok", cachedInput ?? 0), ("cache_write_input_per_mtok", cacheWriteInput ?? 0)])
                {
                    if (value > ModelConfig.MaxPricePerMillion)
                    {
                        Error(price.Node(field), $"{path}.price.{field}",
                            $"{value.ToString(CultureInfo.InvariantCulture)} is more than the largest price, {ModelConfig.MaxPricePerMillion.ToString("#,0", CultureInfo.InvariantCulture)} per million tokens");
                    }
                }
            }

            var model = new ModelConfig
            {
                Name = map.RequiredString("name") ?? "",
                Provider = map.RequiredString("provider") ?? "",
                UpstreamModel = map.String("upstream_model"),
                Aliases = map.StringList("aliases"),
                Kind = map.Enum<ModelKind>("kind") ?? ModelKind.Chat,
                InputPerMillion = input,
                OutputPerMillion = output,
                CachedInputPerMillion = cachedInput,
                CacheWriteInputPerMillion = cacheWriteInput,
                Currency = currency,
            };
            return Remember(node, model, map);
        }

        private static bool IsCurrencyCode(string currency)
            => currency.Length == 3 && char.IsAsciiLetterUpper(currency[0]) && char.IsAsciiLetterUpper(currency[1]) && char.IsAsciiLetterUpper(currency[2]);

        private ServiceConfig? ReadService(YamlNode node, string path)
        {
            if (AsMap(node, path, ["id", "tenant", "description", "owners", "limits", "prompt_rules", "models", "approvers", "suspended"]) is not { } map)
            {
                return null;
            }

            var owners = new ServiceOwners();
            if (map.Node("owners") is { } ownersNode
                && AsMap(ownersNode, path + ".owners", ["policy", "billing", "technical", "agent_operator", "business_sponsor"]) is { } o)
            {
                owners = new ServiceOwners
                {
                    Policy = ReadOwner(o, "policy"),
                    Billing = ReadOwner(o, "billing"),
                    Technical = ReadOwner(o, "technical"),
                    AgentOperator = ReadOwner(o, "agent_operator"),
                    BusinessSponsor = ReadOwner(o, "business_sponsor"),
                };
                Remember(ownersNode, owners);
            }

            var service = new ServiceConfig
            {
                Id = map.RequiredString("id") ?? "",
                Tenant = map.RequiredString("tenant") ?? "",
                Description = map.String("description"),
                Owners = owners,
                Limits = ReadLimits(map, path),
                PromptRules = ReadList(map, "prompt_rules", ReadPromptRule),
                Models = map.Node("models") is null ? null : map.StringList("models"),
                Approvers = map.Node("approvers") is null ? null : map.StringList("approvers"),
                Suspended = map.Bool("suspended"),
            };
            return Remember(node, service, map);
        }

        private OwnerConfig? ReadOwner(MapReader owners, string role)
        {
            if (owners.Node(role) is not { } node)
            {
                return null;
            }

            var path = owners.Path + "." + role;
            if (AsMap(node, path, ["name", "email", "webhook", "admin", "webhook_format"]) is not { } map)
            {
                return null;
            }

            var owner = new OwnerConfig
            {
                Name = map.RequiredString("name") ?? "",
                Email = map.String("email"),
                Webhook = map.Url("webhook"),
                Admin = map.String("admin"),
                WebhookFormat = map.Enum<WebhookFormat>("webhook_format")
            };
            if (owner.Email is null && owner.Webhook is null)
            {
                Error(node, path, "an owner needs a contact: 'email' or 'webhook'");
            }

            return Remember(node, owner, map);
        }

        private ConsumerConfig? ReadConsumer(YamlNode node, string path)
        {
            if (AsMap(node, path, ["id", "service", "category", "models", "entitlements", "limits", "suspended", "schedule"]) is not { } map)
            {
                return null;
            }

            var consumer = new ConsumerConfig
            {
                Id = map.RequiredString("id") ?? "",
                Service = map.RequiredString("service") ?? "",
                Category = map.Enum<ConsumerCategory>("category", required: true) ?? ConsumerCategory.Internal,
                Models = map.StringList("models"),
                Entitlements = ReadList(map, "entitlements", ReadEntitlement),
                Limits = ReadLimits(map, path),
                Suspended = map.Bool("suspended"),
                Schedule = map.Node("schedule") is { } schedule ? ReadSchedule(schedule, path + ".schedule") : null,
            };
            return Remember(node, consumer, map);
        }

        private CredentialConfig? ReadCredential(YamlNode node, string path)
        {
            if (AsMap(node, path, ["id", "consumer", "key_sha256", "status", "expires_at", "prefix", "created_at", "issuer", "subject", "replaced_by"]) is not { } map)
            {
                return null;
            }

            var credential = new CredentialConfig
            {
                Id = map.RequiredString("id") ?? "",
                Consumer = map.RequiredString("consumer") ?? "",
                KeySha256 = map.String("key_sha256"),
                Status = map.Enum<CredentialStatus>("status") ?? CredentialStatus.Active,
                ExpiresAt = map.Timestamp("expires_at"),
                Prefix = map.String("prefix"),
                CreatedAt = map.Timestamp("created_at"),
                Issuer = map.String("issuer"),
                Subject = map.String("subject"),
                ReplacedBy = map.String("replaced_by"),
            };
            if ((credential.KeySha256 is null) == (credential.Issuer is null || credential.Subject is null))
            {
                Error(node, path, "a credential is either an API key ('key_sha256') or a workload identity ('issuer' and 'subject'), exactly one");
            }

            return Remember(node, credential, map);
        }

        private CategoryDefaultsSet ReadDefaults(YamlNode node, string path)
        {
            if (AsMap(node, path, ["external", "internal", "automation", "agent"]) is not { } map)
            {
                return new CategoryDefaultsSet();
            }

            CategoryDefaults? Read(string category)
            {
                if (map.Node(category) is not { } categoryNode
                    || AsMap(categoryNode, path + "." + category, ["models", "limits"]) is not { } c)
                {
                    return null;
                }

                return Remember(categoryNode, new CategoryDefaults
                {
                    Models = c.Node("models") is null ? null : c.StringList("models"),
                    Limits = ReadLimits(c, path + "." + category),
                }, c);
            }

            return Remember(node, new CategoryDefaultsSet
            {
                External = Read("external"),
                Internal = Read("internal"),
                Automation = Read("automation"),
                Agent = Read("agent"),
            });
        }

        private LimitsConfig ReadLimits(MapReader owner, string ownerPath)
        {
            var path = ownerPath + ".limits";
            if (owner.Node("limits") is not { } node
                || AsMap(node, path, ["requests_per_minute", "tokens_per_minute", "requests_per_day", "tokens_per_day", "requests_per_month",
                    "tokens_per_month", "budget", "max_input_tokens", "max_output_tokens", "output_ceiling", "max_n"]) is not { } map)
            {
                return LimitsConfig.Empty;
            }

            long? Positive(string key)
            {
                var value = map.Long(key);
                if (value is <= 0)
                {
                    Error(map.Node(key), path + "." + key, "must be a positive whole number");
                }

                return value;
            }

            BudgetConfig? budget = null;
            if (map.Node("budget") is { } budgetNode && AsMap(budgetNode, path + ".budget", ["amount", "period", "mode"]) is { } b)
            {
                var read = b.RequiredString("amount") is null ? null : b.Decimal("amount"); // unreadable: already said
                if (read <= 0)
                {
                    Error(b.Node("amount"), path + ".budget.amount", "must be a positive amount");
                }
                else if (read > BudgetConfig.MaxAmount)
                {
                    Error(b.Node("amount"), path + ".budget.amount",
                        $"{read.Value.ToString(CultureInfo.InvariantCulture)} is more than the counters hold: the largest amount is {BudgetConfig.MaxAmount.ToString("#,0", CultureInfo.InvariantCulture)}");
                }

                var amount = read ?? 0;

                budget = Remember(budgetNode, new BudgetConfig
                {
                    Amount = amount,
                    Period = b.Enum<BudgetPeriod>("period") ?? BudgetPeriod.Month,
                    Mode = b.Enum<BudgetMode>("mode") ?? BudgetMode.Hard,
                }, b);
            }

            return Remember(node, new LimitsConfig
            {
                RequestsPerMinute = Positive("requests_per_minute"),
                TokensPerMinute = Positive("tokens_per_minute"),
                RequestsPerDay = Positive("requests_per_day"),
                TokensPerDay = Positive("tokens_per_day"),
                RequestsPerMonth = Positive("requests_per_month"),
                TokensPerMonth = Positive("tokens_per_month"),
                Budget = budget,
                MaxInputTokens = Positive("max_input_tokens"),
                MaxOutputTokens = Positive("max_output_tokens"),
                OutputCeiling = map.Enum<OutputCeilingMode>("output_ceiling"),
                MaxN = Positive("max_n"),
            }, map);
        }

        private EntitlementConfig? ReadEntitlement(YamlNode node, string path)
        {
            if (AsMap(node, path, ["models", "approved_by", "ticket", "valid_from", "valid_until"]) is not { } map)
            {
                return null;
            }

            var entitlement = new EntitlementConfig
            {
                Models = map.StringList("models"),
                ApprovedBy = map.String("approved_by"),
                Ticket = map.String("ticket"),
                ValidFrom = map.Timestamp("valid_from"),
                ValidUntil = map.Timestamp("valid_until"),
            };
            if (entitlement.Models.Count == 0)
            {
                Error(node, path + ".models", "an entitlement names at least one model");
            }

            if (entitlement.ValidFrom is { } from && entitlement.ValidUntil is { } until && until <= from)
            {
                Error(map.Node("valid_until"), path + ".valid_until", "must be after valid_from");
            }

            return Remember(node, entitlement, map);
        }

        private PromptRuleConfig? ReadPromptRule(YamlNode node, string path)
        {
            if (AsMap(node, path, ["id", "pattern", "detector", "action"]) is not { } map)
            {
                return null;
            }

            var rule = new PromptRuleConfig
            {
                Id = map.RequiredString("id") ?? "",
                Pattern = map.String("pattern"),
                Detector = map.Enum<PromptDetector>("detector"),
                Action = map.Enum<PromptAction>("action") ?? PromptAction.Deny,
            };
            if ((rule.Pattern is null) == (rule.Detector is null) && map.Node("detector") is null == (map.Node("pattern") is null))
            {
                Error(node, path, "a prompt rule has exactly one of 'pattern' and 'detector'");
            }

            if (rule.Pattern is not null)
            {
                try
                {
                    _ = new Regex(rule.Pattern, RegexOptions.CultureInvariant, TimeSpan.FromSeconds(1));
                }
                catch (ArgumentException ex)
                {
                    Error(map.Node("pattern"), path + ".pattern", "not a valid regular expression: " + ex.Message);
                }
            }

            return Remember(node, rule, map);
        }

        private AdminConfig? ReadAdmin(YamlNode node, string path)
        {
            if (AsMap(node, path, ["id", "role", "key_sha256", "tenants", "services", "issuer", "subject"]) is not { } map)
            {
                return null;
            }

            var admin = new AdminConfig
            {
                Id = map.RequiredString("id") ?? "",
                Role = map.Enum<AdminRole>("role", required: true) ?? AdminRole.SecurityAuditor,
                KeySha256 = map.String("key_sha256"),
                Tenants = map.StringList("tenants"),
                Services = map.StringList("services"),
                Issuer = map.String("issuer"),
                Subject = map.String("subject"),
            };
            if (admin.KeySha256 is null && (admin.Issuer is null || admin.Subject is null))
            {
                Error(node, path, "an admin signs in with an admin key ('key_sha256') or OIDC ('issuer' and 'subject'); neither is given");
            }

            return Remember(node, admin, map);
        }

        private List<T> ReadList<T>(MapReader map, string key, Func<YamlNode, string, T?> read)
            where T : class
        {
            var result = new List<T>();
            if (map.Node(key) is not { } node)
            {
                return result;
            }

            var path = map.Path == "$" ? key : map.Path + "." + key;
            if (node is not YamlSequenceNode sequence)
            {
                Error(node, path, "must be a list");
                return result;
            }

            for (var i = 0; i < sequence.Children.Count; i++)
            {
                if (read(sequence.Children[i], $"{path}[{i}]") is { } item)
                {
                    result.Add(item);
                }
            }

            return result;
        }

        private MapReader? AsMap(YamlNode node, string path, string[] known)
        {
            if (node is YamlMappingNode mapping)
            {
                return new MapReader(this, mapping, path, known);
            }

            Error(node, path, "must be a mapping of 'key: value' fields");
            return null;
        }

        private T Remember<T>(YamlNode node, T record, MapReader? map = null)
            where T : notnull
        {
            _marks[record] = node.Start;
            if (map is not null)
            {
                foreach (var (key, value) in map.Fields)
                {
                    _fieldMarks[(record, key)] = value.Start;
                }
            }

            return record;
        }
    }

    /// <summary>Typed access to the fields of one YAML mapping; unknown fields are reported once.</summary>
    internal sealed class MapReader
    {
        private readonly Reader _reader;
        private readonly YamlMappingNode _node;

        public MapReader(Reader reader, YamlMappingNode node, string path, string[] known)
        {
            _reader = reader;
            _node = node;
            Path = path;
            foreach (var (keyNode, value) in node.Children)
            {
                var key = (keyNode as YamlScalarNode)?.Value ?? "";
                if (Array.IndexOf(known, key) < 0)
                {
                    var hint = known.MinBy(k => Distance(k, key.Replace('-', '_').ToLowerInvariant()));
                    if (hint is not null && Distance(hint, key.Replace('-', '_').ToLowerInvariant()) > Math.Max(2, key.Length / 3))
                    {
                        hint = null;
                    }

                    reader.Error(keyNode, Sub(key), hint is null
                        ? $"unknown field '{key}'; expected one of: {string.Join(", ", known)}"
                        : $"unknown field '{key}'; did you mean '{hint}'?");
                    continue;
                }

                if (!Fields.TryAdd(key, value))
                {
                    reader.Error(keyNode, Sub(key), $"field '{key}' appears more than once");
                }
            }
        }

        public string Path { get; }

        /// <summary>Levenshtein distance, for "did you mean" hints.</summary>
        private static int Distance(string a, string b)
        {
            var previous = new int[b.Length + 1];
            var current = new int[b.Length + 1];
            for (var j = 0; j <= b.Length; j++)
            {
                previous[j] = j;
            }

            for (var i = 1; i <= a.Length; i++)
            {
                current[0] = i;
                for (var j = 1; j <= b.Length; j++)
                {
                    var cost = a[i - 1] == b[j - 1] ? 0 : 1;
                    current[j] = Math.Min(Math.Min(current[j - 1] + 1, previous[j] + 1), previous[j - 1] + cost);
                }

                (previous, current) = (current, previous);
            }

            return previous[b.Length];
        }

        public Dictionary<string, YamlNode> Fields { get; } = new(StringComparer.Ordinal);

        public YamlNode? Node(string key) => Fields.GetValueOrDefault(key);

        private string Sub(string key) => Path == "$" ? key : Path + "." + key;

        public string? String(string key)
        {
            if (Node(key) is not { } node)
            {
                return null;
            }

            if (node is YamlScalarNode scalar && scalar.Value is { } value)
            {
                return value;
            }

            _reader.Error(node, Sub(key), "must be a single value");
            return null;
        }

        public string? RequiredString(string key)
        {
            var value = String(key);
            if (value is null && Node(key) is null)
            {
                _reader.Error(_node, Sub(key), $"required field '{key}' is missing");
            }
            else if (value is { Length: 0 })
            {
                _reader.Error(Node(key), Sub(key), "must not be empty");
            }

            return value;
        }

        public long? Long(string key)
        {
            var text = String(key);
            if (text is null)
            {
                return null;
            }

            if (long.TryParse(text.Replace("_", "", StringComparison.Ordinal), NumberStyles.Integer, CultureInfo.InvariantCulture, out var value))
            {
                return value;
            }

            _reader.Error(Node(key), Sub(key), $"'{text}' is not a whole number");
            return null;
        }

        public decimal? Decimal(string key)
        {
            var text = String(key);
            if (text is null)
            {
                return null;
            }

            if (decimal.TryParse(text, NumberStyles.Number, CultureInfo.InvariantCulture, out var value))
            {
                return PolicyNames.Normalize(value);
            }

            _reader.Error(Node(key), Sub(key), $"'{text}' is not a decimal number such as 12.50");
            return null;
        }

        public T? Enum<T>(string key, bool required = false)
            where T : struct, Enum
        {
            var text = required ? RequiredString(key) : String(key);
            if (text is null or { Length: 0 })
            {
                return null;
            }

            var normalized = text.Replace("_", "", StringComparison.Ordinal).Replace("-", "", StringComparison.Ordinal);
            if (System.Enum.TryParse<T>(normalized, ignoreCase: true, out var value) && !int.TryParse(normalized, out _))
            {
                return value;
            }

            var names = string.Join(", ", PolicyNames.All<T>());
            _reader.Error(Node(key), Sub(key), $"'{text}' is not one of: {names}");
            return null;
        }

        public Uri? Url(string key, bool required = false)
        {
            var text = required ? RequiredString(key) : String(key);
            if (text is null or { Length: 0 })
            {
                return null;
            }

            if (Uri.TryCreate(text, UriKind.Absolute, out var uri) && (uri.Scheme == Uri.UriSchemeHttp || uri.Scheme == Uri.UriSchemeHttps))
            {
                return uri;
            }

            _reader.Error(Node(key), Sub(key), $"'{text}' is not an absolute http or https URL");
            return null;
        }

        public DateTimeOffset? Timestamp(string key)
        {
            var text = String(key);
            if (text is null)
            {
                return null;
            }

            if (DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var value))
            {
                return value;
            }

            _reader.Error(Node(key), Sub(key), $"'{text}' is not a timestamp such as 2027-01-31T00:00:00Z");
            return null;
        }

        public bool? Bool(string key)
        {
            var text = String(key);
            if (text is null)
            {
                return null;
            }

            if (bool.TryParse(text, out var value))
            {
                return value ? true : null; // false is the default: absent, so the canonical form (and hash) does not change
            }

            _reader.Error(Node(key), Sub(key), $"'{text}' is not true or false");
            return null;
        }

        public IReadOnlyList<string> StringList(string key)
        {
            if (Node(key) is not { } node)
            {
                return [];
            }

            if (node is not YamlSequenceNode sequence)
            {
                _reader.Error(node, Sub(key), "must be a list");
                return [];
            }

            var result = new List<string>(sequence.Children.Count);
            for (var i = 0; i < sequence.Children.Count; i++)
            {
                if (sequence.Children[i] is YamlScalarNode { Value: { Length: > 0 } value })
                {
                    result.Add(value);
                }
                else
                {
                    _reader.Error(sequence.Children[i], $"{Sub(key)}[{i}]", "must be a non-empty single value");
                }
            }

            return result;
        }
    }
}
