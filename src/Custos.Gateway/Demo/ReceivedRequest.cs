namespace Custos.Gateway.Demo;

/// <summary>One request as it reached the <see cref="DemoUpstream"/>: what the provider would have seen.</summary>
/// <param name="Method">HTTP method, for example <c>POST</c>.</param>
/// <param name="Path">Request path, for example <c>/v1/chat/completions</c>.</param>
/// <param name="Query">Query string including the leading <c>?</c>, or empty.</param>
/// <param name="Headers">Request headers, case-insensitive names; repeated values are joined with commas.</param>
/// <param name="Body">The body decoded as UTF-8; bodies over 1 MiB are cut at 1 MiB.</param>
public sealed record ReceivedRequest(
    string Method,
    string Path,
    string Query,
    IReadOnlyDictionary<string, string> Headers,
    string Body);
