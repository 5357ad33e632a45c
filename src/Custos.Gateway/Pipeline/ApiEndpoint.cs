namespace Custos.Gateway.Pipeline;

/// <summary>The data-plane endpoints of the contract.</summary>
internal enum ApiEndpoint
{
    Unknown,
    ChatCompletions,
    Completions,
    Embeddings,
    Models,
    Messages,
}

internal static class ApiEndpoints
{
    /// <summary>Maps a request path to its endpoint; exact, case-sensitive, as providers do.</summary>
    public static ApiEndpoint Resolve(string path) => path switch
    {
        "/v1/chat/completions" => ApiEndpoint.ChatCompletions,
        "/v1/completions" => ApiEndpoint.Completions,
        "/v1/embeddings" => ApiEndpoint.Embeddings,
        "/v1/models" => ApiEndpoint.Models,
        "/v1/messages" => ApiEndpoint.Messages,
        _ => ApiEndpoint.Unknown,
    };

    /// <summary>The one HTTP method each endpoint accepts.</summary>
    public static string MethodOf(ApiEndpoint endpoint) => endpoint == ApiEndpoint.Models ? "GET" : "POST";

    /// <summary>The path appended to a provider's base URL (OpenAI bases end in <c>/v1</c>, Anthropic bases do not).</summary>
    public static string UpstreamPath(ApiEndpoint endpoint) => endpoint switch
    {
        ApiEndpoint.ChatCompletions => "/chat/completions",
        ApiEndpoint.Completions => "/completions",
        ApiEndpoint.Embeddings => "/embeddings",
        ApiEndpoint.Messages => "/v1/messages",
        _ => throw new ArgumentOutOfRangeException(nameof(endpoint)),
    };
}
