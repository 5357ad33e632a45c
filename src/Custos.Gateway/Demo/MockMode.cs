using Microsoft.AspNetCore.Http;

namespace Custos.Gateway.Demo;

/// <summary>
/// Test behaviours of the demo upstream, chosen by the requested model name so that concurrent tests
/// never share state.
/// </summary>
internal enum MockMode
{
    /// <summary>Answer normally.</summary>
    Normal,

    /// <summary><c>mock-error-500</c>: a 500 whose message carries a fake upstream secret.</summary>
    Error500,

    /// <summary><c>mock-error-401</c>: invalid API key.</summary>
    Error401,

    /// <summary><c>mock-error-400</c>: <c>max_tokens is too large</c> (param <c>max_tokens</c>).</summary>
    Error400,

    /// <summary><c>mock-error-429</c>: rate limited, with <c>retry-after: 1</c>.</summary>
    Error429,

    /// <summary>
    /// <c>mock-overloaded</c>: the provider is overloaded, with <c>retry-after: 2</c>: Anthropic's 529
    /// <c>overloaded_error</c>, OpenAI's 503 <c>server_error</c>.
    /// </summary>
    Overloaded,

    /// <summary><c>mock-slow</c>: waits <see cref="MockModes.SlowDelay"/> before answering.</summary>
    Slow,

    /// <summary><c>mock-cut-stream</c>: sends part of the response, then aborts the connection.</summary>
    CutStream,

    /// <summary><c>mock-no-usage</c>: answers without any usage object.</summary>
    NoUsage,

    /// <summary>
    /// <c>mock-split-emoji</c>: a chat stream whose reply ends with an emoji sent in two chunks, one half of its surrogate
    /// pair in each (<c>"\ud83d"</c>, then <c>"\ude00"</c>), as providers that stream by token may do.
    /// </summary>
    SplitEmoji,

    /// <summary>
    /// <c>mock-sized-stream</c>: a chat stream sent whole, with a <c>Content-Length</c> instead of chunked, as a server or
    /// proxy that buffers its responses may send it.
    /// </summary>
    SizedStream,

    /// <summary><c>mock-ignores-stream</c>: answers a chat request that asked for a stream with a whole JSON body.</summary>
    IgnoresStream,

    /// <summary><c>mock-cut-first-event</c>: a chat stream that sends part of its first event, then aborts the connection.</summary>
    CutFirstEvent,

    /// <summary><c>mock-redirect</c>: a 307 to another host, as a provider moving its API might answer.</summary>
    Redirect,

    /// <summary><c>mock-no-content</c>: a 204, no answer at all.</summary>
    NoContent,

    /// <summary>
    /// <c>mock-reset</c>: reads the whole request, then aborts the connection without a byte of answer, as a provider's
    /// server or load balancer that fails mid-request does. The request reached the provider, which may have billed it.
    /// </summary>
    Reset,
}

/// <summary>Maps model names to <see cref="MockMode"/> and holds the canned error texts.</summary>
internal static class MockModes
{
    /// <summary>The fake provider secret the 500 error body contains; the gateway must never pass it on.</summary>
    public const string LeakedSecret = "sk-upstream-SECRET-should-not-leak";

    /// <summary>Where <c>mock-redirect</c> sends the caller; the gateway must never pass it on.</summary>
    public const string RedirectTarget = "https://elsewhere.example/v1/chat/completions";

    /// <summary>How long <c>mock-slow</c> waits.</summary>
    public static readonly TimeSpan SlowDelay = TimeSpan.FromSeconds(10);

    /// <summary>The behaviour the model name asks for.</summary>
    public static MockMode FromModel(string model)
    {
        if (!model.StartsWith("mock-", StringComparison.OrdinalIgnoreCase))
        {
            return MockMode.Normal;
        }

        return Is(model, "mock-error-500") ? MockMode.Error500
            : Is(model, "mock-error-401") ? MockMode.Error401
            : Is(model, "mock-error-400") ? MockMode.Error400
            : Is(model, "mock-error-429") ? MockMode.Error429
            : Is(model, "mock-overloaded") ? MockMode.Overloaded
            : Is(model, "mock-slow") ? MockMode.Slow
            : Is(model, "mock-cut-stream") ? MockMode.CutStream
            : Is(model, "mock-no-usage") ? MockMode.NoUsage
            : Is(model, "mock-split-emoji") ? MockMode.SplitEmoji
            : Is(model, "mock-sized-stream") ? MockMode.SizedStream
            : Is(model, "mock-ignores-stream") ? MockMode.IgnoresStream
            : Is(model, "mock-cut-first-event") ? MockMode.CutFirstEvent
            : Is(model, "mock-redirect") ? MockMode.Redirect
            : Is(model, "mock-no-content") ? MockMode.NoContent
            : Is(model, "mock-reset") ? MockMode.Reset
            : MockMode.Normal;

        static bool Is(string model, string prefix) => model.StartsWith(prefix, StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>
    /// How long <c>mock-cut-stream</c> lets the bytes already flushed reach the client before aborting:
    /// an abort discards output the transport has not sent yet. Generous, because on a busy machine (a test suite on
    /// two cores) 100 ms was sometimes too little for the gateway to have the response headers.
    /// </summary>
    public static readonly TimeSpan CutDelay = TimeSpan.FromMilliseconds(500);

    /// <summary>Aborts the connection after giving the flushed output <see cref="CutDelay"/> to leave.</summary>
    public static async Task CutAsync(HttpContext context)
    {
        await Task.Delay(CutDelay, context.RequestAborted);
        context.Abort();
    }

    /// <summary>Whether the mode answers with an error status.</summary>
    public static bool IsError(MockMode mode) =>
        mode is MockMode.Error500 or MockMode.Error401 or MockMode.Error400 or MockMode.Error429 or MockMode.Overloaded or MockMode.Redirect or MockMode.NoContent;
}
