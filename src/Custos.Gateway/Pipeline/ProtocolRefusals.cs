using System.Diagnostics;
using Custos.Errors;
using Custos.Gateway.Ledger;
using Custos.Gateway.Policy;
using Custos.Ledger;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace Custos.Gateway.Pipeline;

/// <summary>
/// Records the requests the HTTP server refuses before the data plane sees them: a malformed request line or header,
/// two <c>Content-Length</c>s, headers over the server's limits, an HTTP version it does not speak. Kestrel answers
/// those itself with a bare status and closes the connection; this listens to its
/// <c>Microsoft.AspNetCore.Server.Kestrel.BadRequest</c> diagnostic event and queues one ledger record for each:
/// <c>invalid.http</c>, Kestrel's status, the client's address and as much of the request line as was read.
/// </summary>
/// <remarks>
/// Queued without waiting, from the server's own thread: when the ledger's queue is full such refusals are counted into
/// its summary of shed requests instead, as shed requests are. A refusal while the data plane was reading the body (broken
/// chunked framing) is the data plane's own record, which set the request id; it is not recorded twice. Nor is a client that
/// hung up mid-body (<see cref="MarkClientGone"/>).
/// </remarks>
internal sealed class ProtocolRefusals : IObserver<KeyValuePair<string, object?>>, IDisposable
{
    /// <summary>The diagnostic event Kestrel writes for every request it refuses.</summary>
    public const string EventName = "Microsoft.AspNetCore.Server.Kestrel.BadRequest";

    /// <summary>The key of <see cref="MarkClientGone"/>'s mark in the connection's items.</summary>
    private static readonly object ClientGone = new();

    private readonly ActivePolicy _policy;
    private readonly LedgerWriter _ledger;
    private readonly TimeProvider _time;
    private readonly string _nodeId;
    private readonly IDisposable _subscription;

    public ProtocolRefusals(DiagnosticListener listener, ActivePolicy policy, LedgerWriter ledger, TimeProvider time, string nodeId)
    {
        _policy = policy;
        _ledger = ledger;
        _time = time;
        _nodeId = nodeId;
        _subscription = listener.Subscribe(this, static name => name == EventName);
    }

    public void OnNext(KeyValuePair<string, object?> value)
    {
        if (value.Key != EventName || value.Value is not IFeatureCollection features
            || features.Get<IHttpResponseFeature>()?.Headers.ContainsKey(Headers.RequestId) == true
            || features.Get<IConnectionItemsFeature>()?.Items.ContainsKey(ClientGone) == true)
        {
            return;
        }

        var snapshot = _policy.Current;
        var now = _time.GetUtcNow();
        var request = features.Get<IHttpRequestFeature>();
        var record = new RequestRecord
        {
            RequestId = RequestId.New(now),
            NodeId = _nodeId,
            Method = request?.Method ?? string.Empty,
            Endpoint = request?.Path ?? string.Empty,
            Timestamp = now,
            PolicyVersion = snapshot.Version,
            PolicyHash = snapshot.Hash,
            ClientAddress = features.Get<IHttpConnectionFeature>()?.RemoteIpAddress?.ToString(),
        };
        record.Fail(Reasons.InvalidHttp, Outcome.Denied);
        record.Status = features.Get<IBadRequestExceptionFeature>()?.Error is BadHttpRequestException refusal ? refusal.StatusCode : Reasons.InvalidHttp.Status;
        _ledger.RecordShed(record);
    }

    /// <summary>
    /// Marks the connection of a request the data plane recorded as cancelled: its client hung up, mid-body or later.
    /// Kestrel leaves the body's unread bytes in the connection's input and, the input having ended, parses them as the
    /// next request's line: a refusal (<c>Invalid request line</c>) of a request the client never sent. The mark lives
    /// with the connection, which the refusal's request, reset by then, does not carry over.
    /// </summary>
    public static void MarkClientGone(HttpContext context)
    {
        if (context.Features.Get<IConnectionItemsFeature>() is { } connection)
        {
            connection.Items[ClientGone] = ClientGone;
        }
    }

    public void OnError(Exception error)
    {
    }

    public void OnCompleted()
    {
    }

    public void Dispose() => _subscription.Dispose();
}
