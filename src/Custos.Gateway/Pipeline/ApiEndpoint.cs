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

    /// <summary><c>POST /v1/responses</c>: OpenAI's Responses API.</summary>
    Responses,

    /// <summary><c>GET /v1/models/{model}</c>: one model of the list (last: the values before it index <c>DataPlane.UpstreamUri</c>'s table).</summary>
    Model,
}

internal static class ApiEndpoints
{
    /// <summary>The prefix of <see cref="ApiEndpoint.Model"/>'s path; the rest is the model's name.</summary>
    public const string ModelPrefix = "/v1/models/";

    /// <summary>Maps a request path to its endpoint; exact, case-sensitive, as providers do.</summary>
    public static ApiEndpoint Resolve(string path) => path switch
    {
        "/v1/chat/completions" => ApiEndpoint.ChatCompletions,
        "/v1/completions" => ApiEndpoint.Completions,
        "/v1/embeddings" => ApiEndpoint.Embeddings,
        "/v1/models" => ApiEndpoint.Models,
        "/v1/messages" => ApiEndpoint.Messages,
        "/v1/responses" => ApiEndpoint.Responses,
        // A model's name may hold a '/' (org/model, as OpenAI-compatible servers name theirs): all of the rest is the name.
        _ when path.Length > ModelPrefix.Length && path.StartsWith(ModelPrefix, StringComparison.Ordinal) => ApiEndpoint.Model,
        _ => ApiEndpoint.Unknown,
    };

    /// <summary>The one HTTP method each endpoint serves (a GET endpoint serves HEAD too, and every endpoint answers OPTIONS).</summary>
    public static string MethodOf(ApiEndpoint endpoint) => endpoint is ApiEndpoint.Models or ApiEndpoint.Model ? "GET" : "POST";

    /// <summary>Whether <paramref name="method"/> is served as <paramref name="endpoint"/>'s method: itself, or HEAD for a GET endpoint.</summary>
    public static bool Accepts(ApiEndpoint endpoint, string method)
    {
        var allowed = MethodOf(endpoint);
        return string.Equals(method, allowed, StringComparison.Ordinal)
               || (allowed == "GET" && string.Equals(method, "HEAD", StringComparison.Ordinal));
    }

    /// <summary>The <c>Allow</c> header of <paramref name="endpoint"/>: what it answers, OPTIONS included.</summary>
    public static string AllowOf(ApiEndpoint endpoint) => MethodOf(endpoint) == "GET" ? "GET, HEAD, OPTIONS" : "POST, OPTIONS";

    /// <summary>The path appended to a provider's base URL (OpenAI bases end in <c>/v1</c>, Anthropic bases do not).</summary>
    public static string UpstreamPath(ApiEndpoint endpoint) => endpoint switch
    {
        ApiEndpoint.ChatCompletions => "/chat/completions",
        ApiEndpoint.Completions => "/completions",
        ApiEndpoint.Embeddings => "/embeddings",
        ApiEndpoint.Messages => "/v1/messages",
        ApiEndpoint.Responses => "/responses",
        _ => throw new ArgumentOutOfRangeException(nameof(endpoint)),
    };
}
