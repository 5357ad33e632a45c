using Custos.Errors;
using Custos.Gateway.Pipeline;
using Custos.Ledger;
using Custos.Metering;
using Custos.Policy;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http;
using Yarp.ReverseProxy.Forwarder;

namespace Custos.Gateway.Tests.Pipeline;

/// <summary>Who the ledger says failed when the forwarder reports an error: on the client's side of the copy, or calling the provider.</summary>
public sealed class UpstreamCallTests
{
    private static UpstreamCall Call()
    {
        var record = new RequestRecord { RequestId = "req_test", NodeId = "node", Method = "POST", Endpoint = "/v1/chat/completions", Stream = true };

        // Classify reads the record and the meter; the route only serves the upstream request, which is not made here.
        return new UpstreamCall(record, route: null!, new Uri("http://127.0.0.1:9/v1/chat/completions"),
            new ResponseMeter(ProviderKind.OpenAI, stream: true, hideInjectedUsage: false), anthropicErrors: false, ReadOnlyMemory<byte>.Empty);
    }

    public static TheoryData<Exception?> ClientGone() => new()
    {
        null,
        new IOException("Broken pipe"),
        new ConnectionResetException("reset"),
        new OperationCanceledException(),
        new TaskCanceledException(),
        new BadHttpRequestException("Unexpected end of request content."),
        new ObjectDisposedException("stream"),
    };

    [Theory]
    [MemberData(nameof(ClientGone))]
    public void Classify_ClientSideErrorOfAClientGoingAway_IsTheClientCancelling(Exception? exception)
    {
        using var call = Call();

        Assert.Equal((Reasons.ClientCancelled, Outcome.Cancelled), call.Classify(ForwarderError.ResponseBodyClient, clientAborted: false, exception));
        Assert.Equal((Reasons.ClientCancelled, Outcome.Cancelled), call.Classify(ForwarderError.RequestBodyClient, clientAborted: false, exception));
    }

    [Fact]
    public void Classify_ClientSideErrorThatNoClientCauses_IsTheGatewaysFailure()
    {
        // What the metering stream threw on half a surrogate pair before 1dc7c73: recorded as client.cancelled then.
        var exception = new InvalidOperationException("Cannot read incomplete UTF-16 JSON text as string with missing low surrogate.");
        using var call = Call();

        Assert.Equal((Reasons.Internal, Outcome.Failed), call.Classify(ForwarderError.ResponseBodyClient, clientAborted: false, exception));
        Assert.Equal((Reasons.Internal, Outcome.Failed), call.Classify(ForwarderError.RequestBodyClient, clientAborted: false, exception));
    }

    [Fact]
    public void Classify_ClientSideErrorAfterTheClientLeft_IsTheClientCancellingWhateverTheException()
    {
        using var call = Call();

        Assert.Equal((Reasons.ClientCancelled, Outcome.Cancelled),
            call.Classify(ForwarderError.ResponseBodyClient, clientAborted: true, new InvalidOperationException("Writing is not allowed after the writer was completed.")));
    }

    public static TheoryData<Exception, string> RequestErrors() => new()
    {
        // What SocketsHttpHandler throws: the first two before the request went out, the others after.
        { new HttpRequestException(HttpRequestError.ConnectionError, "Connection refused", new System.Net.Sockets.SocketException(111)), "upstream.unreachable" },
        { new HttpRequestException(HttpRequestError.NameResolutionError, "Name or service not known"), "upstream.unreachable" },
        { new HttpRequestException(HttpRequestError.Unknown, "An error occurred while sending the request.", new IOException("Connection reset by peer")), "upstream.stream_interrupted" },
        { new HttpRequestException(HttpRequestError.ResponseEnded, "The response ended prematurely."), "upstream.stream_interrupted" },
        { new HttpRequestException(HttpRequestError.Unknown, "Something else."), "upstream.unreachable" },
    };

    [Theory]
    [MemberData(nameof(RequestErrors))]
    public void Classify_RequestError_IsUnreachableOnlyWhenTheRequestNeverWentOut(Exception exception, string reason)
    {
        using var call = Call();

        Assert.Equal(reason, call.Classify(ForwarderError.Request, clientAborted: false, exception).Reason?.Code);
        Assert.Equal(Reasons.ClientCancelled, call.Classify(ForwarderError.Request, clientAborted: true, exception).Reason);
    }
}
