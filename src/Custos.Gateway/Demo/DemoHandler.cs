using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace Custos.Gateway.Demo;

/// <summary>
/// Serves every request of a <see cref="DemoUpstream"/>: records it, parses the body once, applies the
/// <c>mock-*</c> model switches and hands over to the provider's endpoint.
/// </summary>
internal sealed class DemoHandler
{
    /// <summary>How many requests <see cref="Received"/> keeps.</summary>
    public const int MaxReceived = 1000;

    /// <summary>Recorded bodies are cut at this many bytes.</summary>
    public const int MaxRecordedBodyBytes = 1 << 20;

    private readonly Queue<ReceivedRequest> _received = new();
    private readonly Lock _receivedLock = new();
    private readonly CancellationToken _stopping;
    private int _requestCount;

    /// <summary>A handler whose waits (<c>mock-slow</c>) end when <paramref name="stopping"/> fires.</summary>
    public DemoHandler(CancellationToken stopping) => _stopping = stopping;

    /// <summary>Requests received so far.</summary>
    public int RequestCount => Volatile.Read(ref _requestCount);

    /// <summary>A snapshot of the last <see cref="MaxReceived"/> requests, oldest first.</summary>
    public IReadOnlyList<ReceivedRequest> Received
    {
        get
        {
            lock (_receivedLock)
            {
                return _received.ToArray();
            }
        }
    }

    /// <summary>Handles one request.</summary>
    public async Task HandleAsync(HttpContext context)
    {
        Interlocked.Increment(ref _requestCount);
        try
        {
            var body = await ReadBodyAsync(context.Request, context.RequestAborted);
            Record(context.Request, body.Span);
            await DispatchAsync(context, body);
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException
            && (context.RequestAborted.IsCancellationRequested || _stopping.IsCancellationRequested))
        {
            // The client went away or the server is stopping: nothing left to answer.
            context.Abort();
        }
    }

    private async Task DispatchAsync(HttpContext context, ReadOnlyMemory<byte> body)
    {
        var method = context.Request.Method;
        var path = context.Request.Path.Value ?? string.Empty;
        var flavor = path.StartsWith("/v1/messages", StringComparison.Ordinal) ? WireFlavor.Anthropic : WireFlavor.OpenAi;

        Func<HttpContext, JsonElement, string, MockMode, Task>? endpoint = path switch
        {
            "/v1/chat/completions" => OpenAiEndpoints.ChatAsync,
            "/v1/completions" => OpenAiEndpoints.CompletionsAsync,
            "/v1/embeddings" => OpenAiEndpoints.EmbeddingsAsync,
            "/v1/messages" => AnthropicEndpoints.MessagesAsync,
            "/v1/responses" => ResponsesEndpoint.RespondAsync,
            _ => null,
        };

        if (path == "/v1/models")
        {
            await (HttpMethods.IsGet(method)
                ? OpenAiEndpoints.ModelsAsync(context)
                : MethodNotAllowedAsync(context, flavor, method, path));
            return;
        }

        if (endpoint is null)
        {
            await Wire.ErrorAsync(
                context,
                flavor,
                StatusCodes.Status404NotFound,
                flavor == WireFlavor.Anthropic ? "not_found_error" : "invalid_request_error",
                $"Invalid URL ({method} {path})",
                param: null,
                code: null);
            return;
        }

        if (!HttpMethods.IsPost(method))
        {
            await MethodNotAllowedAsync(context, flavor, method, path);
            return;
        }

        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(body);
        }
        catch (JsonException ex)
        {
            await UnparsableAsync(context, flavor, ex);
            return;
        }

        using (document)
        {
            var root = document.RootElement;
            try
            {
                CheckText(root);
            }
            catch (InvalidOperationException ex)
            {
                await UnparsableAsync(context, flavor, ex);
                return;
            }

            if (root.ValueKind != JsonValueKind.Object)
            {
                await Wire.BadRequestAsync(context, flavor, flavor == WireFlavor.Anthropic
                    ? "Input should be a valid dictionary"
                    : "The request body must be a JSON object.");
                return;
            }

            if (!root.TryGetProperty("model", out var modelValue)
                || modelValue.ValueKind != JsonValueKind.String
                || modelValue.GetString() is not { Length: > 0 } model)
            {
                await Wire.BadRequestAsync(
                    context,
                    flavor,
                    flavor == WireFlavor.Anthropic ? "model: Field required" : "you must provide a model parameter",
                    flavor == WireFlavor.Anthropic ? null : "model");
                return;
            }

            var mode = MockModes.FromModel(model);
            if (MockModes.IsError(mode))
            {
                await Wire.MockErrorAsync(context, flavor, mode);
                return;
            }

            if (mode == MockMode.Reset)
            {
                context.Abort();
                return;
            }

            if (mode == MockMode.Slow)
            {
                using var wait = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, _stopping);
                await Task.Delay(MockModes.SlowDelay, wait.Token);
            }

            await endpoint(context, root, model, mode);
        }
    }

    private static Task UnparsableAsync(HttpContext context, WireFlavor flavor, Exception ex) =>
        Wire.BadRequestAsync(context, flavor, flavor == WireFlavor.Anthropic
            ? $"There was an error parsing the body of your request: {ex.Message}"
            : "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)");

    /// <summary>
    /// Reads every name and string of <paramref name="element"/> as text, so that one that is not (half a surrogate pair,
    /// such as "\ud83d") is refused as unparsable here, as a provider would, and not thrown from the middle of an answer.
    /// </summary>
    private static void CheckText(JsonElement element)
    {
        switch (element.ValueKind)
        {
            case JsonValueKind.Object:
                foreach (var property in element.EnumerateObject())
                {
                    _ = property.Name;
                    CheckText(property.Value);
                }

                break;
            case JsonValueKind.Array:
                foreach (var item in element.EnumerateArray())
                {
                    CheckText(item);
                }

                break;
            case JsonValueKind.String:
                _ = element.GetString();
                break;
        }
    }

    private static Task MethodNotAllowedAsync(HttpContext context, WireFlavor flavor, string method, string path) =>
        Wire.ErrorAsync(
            context,
            flavor,
            StatusCodes.Status405MethodNotAllowed,
            "invalid_request_error",
            $"Method not allowed ({method} {path})",
            param: null,
            code: null);

    private static async Task<ReadOnlyMemory<byte>> ReadBodyAsync(HttpRequest request, CancellationToken ct)
    {
        if (request.ContentLength == 0)
        {
            return ReadOnlyMemory<byte>.Empty;
        }

        var capacity = request.ContentLength is long length and <= int.MaxValue ? (int)length : 0;
        using var stream = new MemoryStream(capacity);
        await request.Body.CopyToAsync(stream, ct);
        return stream.GetBuffer().AsMemory(0, (int)stream.Length);
    }

    private void Record(HttpRequest request, ReadOnlySpan<byte> body)
    {
        var headers = new Dictionary<string, string>(request.Headers.Count, StringComparer.OrdinalIgnoreCase);
        foreach (var (name, value) in request.Headers)
        {
            headers[name] = value.ToString();
        }

        var text = Encoding.UTF8.GetString(body.Length > MaxRecordedBodyBytes ? body[..MaxRecordedBodyBytes] : body);
        var received = new ReceivedRequest(
            request.Method,
            request.Path.Value ?? string.Empty,
            request.QueryString.Value ?? string.Empty,
            headers,
            text);

        lock (_receivedLock)
        {
            _received.Enqueue(received);
            while (_received.Count > MaxReceived)
            {
                _received.Dequeue();
            }
        }
    }
}
