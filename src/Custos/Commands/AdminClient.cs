using System.CommandLine;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text.Json;

namespace Custos.Cli.Commands;

/// <summary>One answer of the admin API: its JSON text as sent, and the parsed root.</summary>
internal sealed record AdminReply(string Text, JsonElement Root);

/// <summary>
/// The one way the CLI talks to the admin API of a running gateway: the <c>--server</c>, <c>--admin-key</c> and
/// <c>--json</c> options, the HTTP exchange, refusals (RFC 9457 problem details) turned into one clear
/// <see cref="CliException"/>, and the readable tables and fields that commands print by default.
/// </summary>
internal sealed class AdminClient : IDisposable
{
    /// <summary>The admin listener of <c>custos serve</c> and <c>custos demo</c> by default.</summary>
    public const string DefaultServer = "http://127.0.0.1:8081";

    /// <summary>The environment variable read when <c>--admin-key</c> is not given.</summary>
    public const string AdminKeyVariable = "CUSTOS_ADMIN_KEY";

    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    /// <summary>Request bodies are written with the names they are given (snake_case, as the API expects).</summary>
    private static readonly JsonSerializerOptions BodyOptions = new();

    private readonly HttpClient _http;
    private readonly string? _key;

    private AdminClient(Uri server, string? key, bool json, TimeSpan? timeout = null)
    {
        _http = new HttpClient { BaseAddress = server, Timeout = timeout ?? Timeout };
        _key = key;
        Json = json;
    }

    /// <summary>True when the user asked for the API's JSON (<c>--json</c>) rather than readable text.</summary>
    public bool Json { get; }

    /// <summary>
    /// Makes <paramref name="command"/> an admin API command: adds <c>--server</c>, <c>--admin-key</c> and <c>--json</c>,
    /// and sets its action: <paramref name="call"/> makes the exchange; its answer is printed as the API's JSON with
    /// <c>--json</c>, by <paramref name="print"/> otherwise.
    /// </summary>
    public static Command Define(Command command, TextWriter output, Func<ParseResult, AdminClient, CancellationToken, Task<AdminReply>> call,
        Action<ParseResult, JsonElement> print)
    {
        var server = new Option<string>("--server") { Description = "Admin API of the running gateway.", DefaultValueFactory = _ => DefaultServer };
        var adminKey = new Option<string?>("--admin-key") { Description = $"Admin key (cak_…); default the {AdminKeyVariable} environment variable." };
        var json = new Option<bool>("--json") { Description = "Print the API's JSON answer (one document, for scripts) instead of text." };
        command.Options.Add(server);
        command.Options.Add(adminKey);
        command.Options.Add(json);
        command.SetAction(async (parse, cancellationToken) =>
        {
            var text = parse.GetValue(server)!;
            if (!Uri.TryCreate(text, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
            {
                throw new CliException($"--server '{text}' is not an http(s) URL such as {DefaultServer}");
            }

            using var client = new AdminClient(uri, parse.GetValue(adminKey) ?? Environment.GetEnvironmentVariable(AdminKeyVariable), parse.GetValue(json));
            var reply = await call(parse, client, cancellationToken);
            if (client.Json)
            {
                output.WriteLine(reply.Text);
            }
            else
            {
                print(parse, reply.Root);
            }

            return 0;
        });
        return command;
    }

    /// <summary>
    /// A client of <paramref name="server"/> for a command that reads the store, or the admin API when given <c>--server</c>
    /// (<c>policy history|show|diff</c>): its key from <paramref name="key"/> or <see cref="AdminKeyVariable"/>.
    /// </summary>
    /// <remarks><paramref name="timeout"/>: how long an answer may take (default 30 s; a report over a long window takes longer).</remarks>
    public static AdminClient Open(string server, string? key, TimeSpan? timeout = null)
    {
        if (!Uri.TryCreate(server, UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
        {
            throw new CliException($"--server '{server}' is not an http(s) URL such as {DefaultServer}");
        }

        return new AdminClient(uri, key ?? Environment.GetEnvironmentVariable(AdminKeyVariable), json: false, timeout);
    }

    /// <summary>
    /// GET <paramref name="path"/>, answered in whatever format it asks for (a report as JSON, Markdown or HTML): the text,
    /// and the value of the response header <paramref name="header"/> (null when absent).
    /// </summary>
    public async Task<(string Text, string? Header)> GetTextAsync(string path, string header, CancellationToken cancellationToken)
    {
        using var response = await ExchangeAsync(HttpMethod.Get, path, null, cancellationToken);
        var text = await response.Content.ReadAsStringAsync(cancellationToken);
        return !response.IsSuccessStatusCode
            ? throw Refusal(path, response.StatusCode, text)
            : (text, response.Headers.TryGetValues(header, out var values) ? values.FirstOrDefault() : null);
    }

    /// <summary>GET <paramref name="path"/>.</summary>
    public Task<AdminReply> GetAsync(string path, CancellationToken cancellationToken) => SendAsync(HttpMethod.Get, path, null, cancellationToken);

    /// <summary>POST <paramref name="body"/> (serialised as is: give it snake_case names) to <paramref name="path"/>.</summary>
    public Task<AdminReply> PostAsync(string path, object body, CancellationToken cancellationToken) => SendAsync(HttpMethod.Post, path, body, cancellationToken);

    /// <summary>PUT <paramref name="body"/> to <paramref name="path"/>.</summary>
    public Task<AdminReply> PutAsync(string path, object body, CancellationToken cancellationToken) => SendAsync(HttpMethod.Put, path, body, cancellationToken);

    /// <summary>
    /// Adds <c>--consumer</c>, <c>--service</c> and <c>--tenant</c> to <paramref name="command"/>, described as given, exactly
    /// one of which must be named (a kill switch's or a budget's scope); <see cref="ScopeOf"/> reads which.
    /// </summary>
    public static Option<string?>[] AddScope(Command command, string consumer, string service, string tenant)
    {
        Option<string?>[] scopes = [new("--consumer") { Description = consumer }, new("--service") { Description = service }, new("--tenant") { Description = tenant }];
        foreach (var scope in scopes)
        {
            command.Options.Add(scope);
        }

        command.Validators.Add(result =>
        {
            if (scopes.Count(s => result.GetValue(s) is not null) != 1)
            {
                result.AddError("name exactly one of --consumer ID, --service ID or --tenant ID");
            }
        });
        return scopes;
    }

    /// <summary>The scope named among <paramref name="scopes"/> (<see cref="AddScope"/>): as the API spells it (<c>consumer</c>, …), and its id.</summary>
    public static (string Scope, string Id) ScopeOf(ParseResult parse, Option<string?>[] scopes)
    {
        var scope = scopes.First(s => parse.GetValue(s) is not null);
        return (scope.Name.TrimStart('-'), parse.GetValue(scope)!);
    }

    /// <summary>One path segment, escaped; an empty one would name the list instead of an item, so it is refused.</summary>
    public static string Segment(string id)
        => string.IsNullOrWhiteSpace(id) ? throw new CliException("an empty id names nothing; give the id of the item") : Uri.EscapeDataString(id);

    public void Dispose() => _http.Dispose();

    private async Task<AdminReply> SendAsync(HttpMethod method, string path, object? body, CancellationToken cancellationToken)
    {
        using var response = await ExchangeAsync(method, path, body, cancellationToken);
        var text = await response.Content.ReadAsStringAsync(cancellationToken);
        if (!response.IsSuccessStatusCode)
        {
            throw Refusal(path, response.StatusCode, text);
        }

        try
        {
            using var document = JsonDocument.Parse(text);
            return new AdminReply(text, document.RootElement.Clone());
        }
        catch (JsonException)
        {
            throw new CliException($"the admin API at {_http.BaseAddress} answered {(int)response.StatusCode} with something other than JSON; is --server its admin address?");
        }
    }

    /// <summary>Sends one request with the admin key; a gateway that cannot be reached, or does not answer in time, is a <see cref="CliException"/>.</summary>
    private async Task<HttpResponseMessage> ExchangeAsync(HttpMethod method, string path, object? body, CancellationToken cancellationToken)
    {
        if (string.IsNullOrWhiteSpace(_key))
        {
            throw new CliException($"an admin key is needed: --admin-key cak_… or the {AdminKeyVariable} environment variable");
        }

        using var request = new HttpRequestMessage(method, path);
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _key);
        if (body is not null)
        {
            // Serialised up front so the request carries a Content-Length: the API reads an optional body only when it has one.
            request.Content = new ByteArrayContent(JsonSerializer.SerializeToUtf8Bytes(body, body.GetType(), BodyOptions))
            {
                Headers = { ContentType = new MediaTypeHeaderValue("application/json") { CharSet = "utf-8" } },
            };
        }

        try
        {
            return await _http.SendAsync(request, cancellationToken);
        }
        catch (HttpRequestException ex)
        {
            throw new CliException($"cannot reach the admin API at {_http.BaseAddress}: {ex.Message} Is the gateway running, and is --server its admin address?");
        }
        catch (TaskCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new CliException($"the admin API at {_http.BaseAddress} did not answer within {_http.Timeout.TotalSeconds:0} s");
        }
    }

    /// <summary>A refusal of the admin API as one clear error: what the status means, the API's detail, and its request id.</summary>
    private static CliException Refusal(string path, HttpStatusCode status, string body)
    {
        string? title = null, detail = null, code = null, requestId = null;
        var lines = new List<string>();
        try
        {
            using var json = JsonDocument.Parse(body);
            var root = json.RootElement;
            (title, detail, code, requestId) = (Text(root, "title"), Text(root, "detail"), Text(root, "code"), Text(root, "request_id"));
            if (root.TryGetProperty("errors", out var errors) && errors.ValueKind == JsonValueKind.Object)
            {
                lines.AddRange(errors.EnumerateObject().SelectMany(e => e.Value.EnumerateArray()).Select(e => e.GetString() ?? ""));
            }
        }
        catch (JsonException)
        {
            detail = body.Trim();
        }

        if (status == HttpStatusCode.UnprocessableEntity && detail is not null)
        {
            // A change that would make the policy invalid: the validation errors, one per line.
            lines.InsertRange(0, detail.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
            detail = null;
        }

        var what = status switch
        {
            HttpStatusCode.Unauthorized => "not signed in",
            HttpStatusCode.Forbidden => "forbidden",
            HttpStatusCode.NotFound => "not found",
            HttpStatusCode.Conflict => "conflict",
            HttpStatusCode.PreconditionFailed => "the policy changed",
            HttpStatusCode.BadRequest => "invalid request",
            HttpStatusCode.UnprocessableEntity => title ?? "invalid",
            _ => "the gateway refused",
        };
        if (status == HttpStatusCode.Unauthorized)
        {
            detail = $"{detail} The admin key is missing or unknown to this gateway: pass --admin-key cak_… or set {AdminKeyVariable}.".TrimStart();
        }
        else if (status == HttpStatusCode.NotFound && code is null)
        {
            detail = $"{path} is no admin API route there; is --server the gateway's admin address (not its data plane)?";
        }

        var message = $"{what} ({(int)status}{(code is null ? "" : " " + code)})";
        if (!string.IsNullOrWhiteSpace(detail))
        {
            message += ": " + detail;
        }
        else if (lines.Count > 0)
        {
            message += ":";
        }

        foreach (var line in lines)
        {
            message += Environment.NewLine + "  " + line;
        }

        if (requestId is not null)
        {
            message += $"{Environment.NewLine}  (admin request {requestId})";
        }

        return new CliException(message);
    }

    /// <summary>A string property of <paramref name="element"/>, or null when it is absent or not a string.</summary>
    public static string? Text(JsonElement element, string name)
        => element.ValueKind == JsonValueKind.Object && element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String ? value.GetString() : null;

    /// <summary>A property of <paramref name="element"/> as text: strings as they are, numbers and booleans in JSON form; null when absent or null.</summary>
    public static string? Scalar(JsonElement element, string name)
        => element.ValueKind == JsonValueKind.Object && element.TryGetProperty(name, out var value)
            ? value.ValueKind switch
            {
                JsonValueKind.String => value.GetString(),
                JsonValueKind.Number or JsonValueKind.True or JsonValueKind.False => value.GetRawText(),
                _ => null,
            }
            : null;

    /// <summary>The strings of an array property, empty when it is absent or null.</summary>
    public static IReadOnlyList<string> Strings(JsonElement element, string name)
        => element.ValueKind == JsonValueKind.Object && element.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Array
            ? [.. value.EnumerateArray().Select(v => v.GetString() ?? "")]
            : [];

    /// <summary>A time property as UTC <c>yyyy-MM-dd HH:mm</c> (or with seconds), or <paramref name="none"/> when it is absent or null.</summary>
    public static string Time(JsonElement element, string name, string none = "-", bool seconds = false)
        => Text(element, name) is { } text && DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var time)
            ? time.UtcDateTime.ToString(seconds ? "yyyy-MM-dd HH:mm:ss'Z'" : "yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture)
            : none;

    /// <summary>
    /// Writes an aligned table: a header line, then one line per row; null cells print as <c>-</c>. With no rows,
    /// prints <paramref name="empty"/> instead.
    /// </summary>
    public static void WriteTable(TextWriter output, IReadOnlyList<string> headers, IEnumerable<IReadOnlyList<string?>> rows, string empty)
    {
        var cells = rows.Select(r => r.Select(c => string.IsNullOrEmpty(c) ? "-" : c).ToArray()).ToList();
        if (cells.Count == 0)
        {
            output.WriteLine(empty);
            return;
        }

        var widths = headers.Select((h, i) => Math.Max(h.Length, cells.Max(r => r[i].Length))).ToArray();
        void Line(IReadOnlyList<string> values)
            => output.WriteLine(string.Join("  ", values.Select((v, i) => i == values.Count - 1 ? v : v.PadRight(widths[i]))).TrimEnd());

        Line(headers);
        foreach (var row in cells)
        {
            Line(row);
        }
    }

    /// <summary>Prints the outcome of a change (a <c>ChangeResult</c>): what changed, before and after, and the policy version it made.</summary>
    public static void WriteChange(TextWriter output, JsonElement change)
    {
        var notified = change.TryGetProperty("notified", out var n) && n.ValueKind == JsonValueKind.Number ? n.GetInt32() : 0;
        var (before, after) = (Text(change, "before") ?? "-", Text(change, "after") ?? "-");
        var outcome = $"policy version {Scalar(change, "policy_version")} is in force{(notified > 0 ? $"; {notified} owner notification(s) queued" : "")}.";
        if (before.Length + after.Length <= 60)
        {
            output.WriteLine($"{Text(change, "action")} {Text(change, "target")}: {before} -> {after}; {outcome}");
            return;
        }

        output.WriteLine($"{Text(change, "action")} {Text(change, "target")}; {outcome}");
        output.WriteLine("  before: " + before);
        output.WriteLine("  after:  " + after);
    }

    /// <summary>
    /// A duration such as <c>24h</c>, <c>90m</c>, <c>3600s</c>, <c>7d</c> or <c>1h30m</c>, or a plain number of seconds.
    /// </summary>
    public static TimeSpan ParseDuration(string text, string option)
        => TryParseDuration(text, option) ?? throw new CliException($"{option} '{text}' is not a duration such as 24h, 90m, 3600s, 7d or 1h30m");

    /// <summary>As <see cref="ParseDuration"/>, or null when <paramref name="text"/> is not a duration.</summary>
    private static TimeSpan? TryParseDuration(string text, string option)
    {
        try
        {
            return Duration(text);
        }
        catch (Exception ex) when (ex is OverflowException or ArgumentOutOfRangeException)
        {
            throw new CliException($"{option} '{text}' is longer than a time span can be");
        }
    }

    private static TimeSpan? Duration(string text)
    {
        var trimmed = text.Trim();
        if (long.TryParse(trimmed, NumberStyles.None, CultureInfo.InvariantCulture, out var plain))
        {
            return TimeSpan.FromSeconds(plain);
        }

        var total = TimeSpan.Zero;
        var start = 0;
        for (var i = 0; i < trimmed.Length; i++)
        {
            if (char.IsAsciiDigit(trimmed[i]))
            {
                continue;
            }

            if (i == start || "smhd".IndexOf(trimmed[i], StringComparison.Ordinal) < 0
                || !long.TryParse(trimmed.AsSpan(start, i - start), NumberStyles.None, CultureInfo.InvariantCulture, out var amount))
            {
                return null;
            }

            total += trimmed[i] switch
            {
                's' => TimeSpan.FromSeconds(amount),
                'm' => TimeSpan.FromMinutes(amount),
                'h' => TimeSpan.FromHours(amount),
                _ => TimeSpan.FromDays(amount),
            };
            start = i + 1;
        }

        return start == trimmed.Length && start > 0 ? total : null;
    }

    /// <summary>A future instant: ISO 8601, or a duration from now such as <c>30d</c>; null when <paramref name="text"/> is empty.</summary>
    public static DateTimeOffset? ParseFutureTime(string? text, string option)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            return null;
        }

        if (char.IsAsciiDigit(text[^1]) || text.Contains('-', StringComparison.Ordinal) || text.Contains(':', StringComparison.Ordinal))
        {
            return DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out var time)
                ? time
                : throw new CliException($"{option} '{text}' is neither an ISO 8601 time nor a duration from now such as 30d or 12h");
        }

        var span = TryParseDuration(text, option)
            ?? throw new CliException($"{option} '{text}' is neither an ISO 8601 time nor a duration from now such as 30d or 12h");
        return span <= DateTimeOffset.MaxValue - DateTimeOffset.UtcNow
            ? DateTimeOffset.UtcNow + span
            : throw new CliException($"{option} '{text}' reaches further ahead than a time can");
    }
}

/// <summary>
/// <c>--server</c> and <c>--admin-key</c> of a command that reads the local store by default (<c>policy history|show|diff</c>,
/// <c>requests</c>, <c>report</c>): given a server, it reads through that gateway's admin API instead, as <c>policy apply</c>
/// writes through it, so it works from any machine against any node of a deployment, within the admin key's scope.
/// </summary>
internal sealed record RemoteOptions(Option<string?> Server, Option<string?> AdminKey)
{
    /// <summary>Adds both options to <paramref name="command"/>; <paramref name="server"/> says what <c>--server</c> does there.</summary>
    public static RemoteOptions Add(Command command,
        string server = "Read through this gateway's admin API (e.g. http://127.0.0.1:8081) instead of the store; needs an admin key.")
    {
        var remote = new RemoteOptions(new Option<string?>("--server") { Description = server },
            new Option<string?>("--admin-key") { Description = $"Admin key (cak_…) for --server; default the {AdminClient.AdminKeyVariable} environment variable." });
        command.Options.Add(remote.Server);
        command.Options.Add(remote.AdminKey);
        return remote;
    }

    /// <summary>A client of the admin API given with <c>--server</c>, or null when the command reads the store.</summary>
    public AdminClient? Open(ParseResult parse, TimeSpan? timeout = null)
        => parse.GetValue(Server) is { } server ? AdminClient.Open(server, parse.GetValue(AdminKey), timeout) : null;

    /// <summary>
    /// Refuses <c>--data</c> or <c>--config</c> beside <c>--server</c>: one of them would be ignored. <paramref name="what"/>
    /// says what the gateway does with <c>--server</c> ("reads the ledger through the gateway's admin API").
    /// </summary>
    public static void RefuseStore(ParseResult parse, Option<string?> data, Option<FileInfo?> config, string what)
    {
        if (parse.GetValue(data) is not null || parse.GetValue(config) is not null)
        {
            throw new CliException($"--server {what}; --data and --config name a store to read here instead: give one or the other");
        }
    }
}
