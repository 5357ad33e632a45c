using System.Diagnostics;
using Custos.Gateway.Hosting;
using Custos.Policy;
using Microsoft.Extensions.Logging;
using OpenTelemetry;
using OpenTelemetry.Exporter;
using OpenTelemetry.Metrics;
using OpenTelemetry.Resources;
using OpenTelemetry.Trace;

namespace Custos.Gateway.Telemetry;

/// <summary>
/// Where one gateway's telemetry goes: always a Prometheus scrape endpoint (served as <c>/metrics</c> by the admin
/// listener), and OTLP when <see cref="CustosGatewayOptions.OtlpEndpoint"/> or <c>OTEL_EXPORTER_OTLP_ENDPOINT</c> is
/// set. One meter provider, and with OTLP one tracer provider, per gateway. Meters and activity sources are matched by
/// name process-wide, so each provider also filters by instance: a gateway exports its own measurements and spans,
/// never those of another gateway in the same process.
/// </summary>
internal sealed partial class TelemetryExport : IDisposable
{
    /// <summary>The standard variable that turns OTLP export on without any Custos setting.</summary>
    public const string OtlpEndpointVariable = "OTEL_EXPORTER_OTLP_ENDPOINT";

    private TelemetryExport(MeterProvider meters, TracerProvider? tracer)
    {
        Meters = meters;
        Tracer = tracer;
    }

    /// <summary>The meter provider; its Prometheus exporter answers <c>/metrics</c>.</summary>
    public MeterProvider Meters { get; }

    /// <summary>The tracer provider, with OTLP only.</summary>
    public TracerProvider? Tracer { get; }

    /// <summary>True when metrics and traces are exported over OTLP: an endpoint in the options or in <c>OTEL_EXPORTER_OTLP_ENDPOINT</c>.</summary>
    public static bool IsOtlpEnabled(CustosGatewayOptions options)
        => options.OtlpEndpoint is not null || !string.IsNullOrEmpty(Environment.GetEnvironmentVariable(OtlpEndpointVariable));

    public static TelemetryExport Start(CustosTelemetry telemetry, CustosGatewayOptions options, ILogger logger)
    {
        var otlp = IsOtlpEnabled(options);
        var interval = options.OtlpExportInterval is { } i ? (int)i.TotalMilliseconds : (int?)null;
        var meters = Sdk.CreateMeterProviderBuilder()
            .ConfigureResource(r => Describe(r, options))
            .AddMeter(CustosTelemetry.Name)
            .AddView(instrument => ReferenceEquals(instrument.Meter, telemetry.Meter) ? null : MetricStreamConfiguration.Drop)
            .AddPrometheusExporter(o => o.ScrapeResponseCacheDurationMilliseconds = 0); // scrapes see the ledger as of now
        if (otlp)
        {
            meters.AddOtlpExporter((exporter, reader) =>
            {
                Configure(exporter, options, "v1/metrics");
                if (interval is { } ms)
                {
                    reader.PeriodicExportingMetricReaderOptions.ExportIntervalMilliseconds = ms;
                }
            });
        }

        TracerProvider? tracer = null;
        if (otlp)
        {
            // Built by hand rather than with AddOtlpExporter, to put the instance filter in front of the exporter.
            var exporter = new OtlpExporterOptions(); // OTEL_EXPORTER_OTLP_* variables
            Configure(exporter, options, "v1/traces");
            var batch = new BatchExportActivityProcessorOptions(); // OTEL_BSP_* variables
            var processor = new BatchActivityExportProcessor(new OtlpTraceExporter(exporter), batch.MaxQueueSize,
                interval ?? batch.ScheduledDelayMilliseconds, batch.ExporterTimeoutMilliseconds, batch.MaxExportBatchSize);
            tracer = Sdk.CreateTracerProviderBuilder()
                .ConfigureResource(r => Describe(r, options))
                .AddSource(CustosTelemetry.Name)
                .AddProcessor(new OwnSpans(telemetry.Source, processor))
                .Build();
            Log.OtlpExport(logger, exporter.Endpoint, exporter.Protocol);
        }

        return new TelemetryExport(meters.Build(), tracer);
    }

    /// <summary>service.name <c>custos</c> and service.instance.id the node id, unless <c>OTEL_SERVICE_NAME</c> or <c>OTEL_RESOURCE_ATTRIBUTES</c> say otherwise.</summary>
    private static void Describe(ResourceBuilder resource, CustosGatewayOptions options)
        => resource.AddService("custos", serviceVersion: typeof(CustosTelemetry).Assembly.GetName().Version?.ToString(),
                autoGenerateServiceInstanceId: false, serviceInstanceId: options.NodeId)
            .AddEnvironmentVariableDetector();

    /// <summary>
    /// Applies the gateway's own OTLP settings over the standard variables. An endpoint set in code is used as given by
    /// the exporter, so the signal path is appended here for <c>http/protobuf</c>, as the exporter does for the variable.
    /// </summary>
    internal static void Configure(OtlpExporterOptions exporter, CustosGatewayOptions options, string signalPath)
    {
        if (options.OtlpProtocol is { } protocol)
        {
            exporter.Protocol = protocol == OtlpProtocol.HttpProtobuf ? OtlpExportProtocol.HttpProtobuf : OtlpExportProtocol.Grpc;
        }

        if (options.OtlpEndpoint is { } endpoint)
        {
            exporter.Endpoint = exporter.Protocol == OtlpExportProtocol.HttpProtobuf
                ? new Uri(endpoint.AbsoluteUri.TrimEnd('/') + "/" + signalPath)
                : endpoint;
        }
    }

    /// <summary>Flushes and stops both providers: the last measurements and spans are exported.</summary>
    public void Dispose()
    {
        Tracer?.Dispose();
        Meters.Dispose();
    }

    /// <summary>Passes on the spans of one activity source instance only.</summary>
    private sealed class OwnSpans(ActivitySource source, BaseProcessor<Activity> exporter) : CompositeProcessor<Activity>([exporter])
    {
        public override void OnStart(Activity data)
        {
            if (ReferenceEquals(data.Source, source))
            {
                base.OnStart(data);
            }
        }

        public override void OnEnd(Activity data)
        {
            if (ReferenceEquals(data.Source, source))
            {
                base.OnEnd(data);
            }
        }
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 300, Level = LogLevel.Information, Message = "Exporting metrics and traces over OTLP to {Endpoint} ({Protocol}).")]
        public static partial void OtlpExport(ILogger logger, Uri endpoint, OtlpExportProtocol protocol);
    }
}
