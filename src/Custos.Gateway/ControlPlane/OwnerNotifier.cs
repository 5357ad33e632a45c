using System.Text.Json;
using Custos.ControlPlane;
using Custos.Policy;
using Microsoft.Extensions.Logging;

namespace Custos.Gateway.ControlPlane;

/// <summary>
/// Tells a service's owners what happened to their service (a credential revoked, a kill switch engaged, an access
/// request waiting): each message is written to a durable outbox first, then delivered to the owner's webhook by a
/// background loop with retries and back-off, so nothing is lost across a restart or a receiver outage. E-mail
/// contacts are kept in the outbox as <c>unsent</c>: this gateway has no mail relay.
/// </summary>
public sealed partial class OwnerNotifier : IAsyncDisposable
{
    private static readonly TimeSpan MaxBackoff = TimeSpan.FromMinutes(5);
    private readonly IRegistryStore _store;
    private readonly HttpClient _http;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stopping = new();
    private readonly SemaphoreSlim _wake = new(0);
    private readonly Task _loop;
    private readonly WebhookSigner _signer;

    /// <summary>Starts the delivery loop.</summary>
    public OwnerNotifier(IRegistryStore store, TimeProvider time, ILogger<OwnerNotifier> logger, WebhookSigner signer, HttpMessageHandler? handler = null)
    {
        _store = store;
        _signer = signer;
        _time = time;
        _logger = logger;
        _http = new HttpClient(handler ?? new SocketsHttpHandler { UseProxy = Hosting.EgressProxy.Configured, Proxy = Hosting.EgressProxy.Proxy, AllowAutoRedirect = false }) { Timeout = TimeSpan.FromSeconds(10) };
        _loop = Task.Run(DeliverLoopAsync);
    }

    /// <summary>
    /// Queues a message to the owner in <paramref name="role"/> of <paramref name="service"/>: one outbox entry per contact
    /// (webhook, e-mail). Returns how many were queued; zero when that role is unfilled.
    /// </summary>
    public async Task<int> NotifyAsync(ServiceConfig service, string role, string @event, string actor, string target, string? reason,
        IReadOnlyDictionary<string, string?>? details = null, CancellationToken cancellationToken = default)
    {
        var owner = Custos.Alerts.OwnerRoles.Of(service.Owners, role);
        if (owner is null)
        {
            return 0;
        }

        var now = _time.GetUtcNow();
        var payload = JsonSerializer.Serialize(new Dictionary<string, object?>
        {
            ["event"] = @event,
            ["timestamp"] = Custos.Ledger.LedgerTime.Format(now),
            ["tenant"] = service.Tenant,
            ["service"] = service.Id,
            ["owner_role"] = role,
            ["owner"] = owner.Name,
            ["actor"] = actor,
            ["target"] = target,
            ["reason"] = reason,
            ["details"] = details,
        });
        var slack = $"*{SlackEscaped(@event)}* on {SlackEscaped(service.Id)} ({SlackEscaped(service.Tenant)}) by {SlackEscaped(actor)}: {SlackEscaped(target)}"
            + (reason is null ? "" : $" — {SlackEscaped(reason)}");
        var queued = MessagesTo(owner, role, now, payload, slack);
        await EnqueueAsync(queued, cancellationToken);
        return queued.Count;
    }

    /// <summary>
    /// The outbox entries that tell <paramref name="owner"/>: one per contact (webhook, e-mail), the webhook in the format
    /// its owner asked for (Custos JSON, or Slack's <c>text</c> with <paramref name="slackText"/>).
    /// </summary>
    public static List<Notification> MessagesTo(OwnerConfig owner, string role, DateTimeOffset now, string payload, string slackText)
    {
        var queued = new List<Notification>(2);
        if (owner.Webhook is { } webhook)
        {
            var slack = owner.WebhookFormat == WebhookFormat.Slack
                || (owner.WebhookFormat is null && webhook.Host.Equals("hooks.slack.com", StringComparison.OrdinalIgnoreCase));
            queued.Add(new Notification
            {
                CreatedAt = now,
                Role = role,
                Recipient = owner.Name,
                Channel = "webhook",
                Target = webhook.ToString(),
                Payload = slack ? SlackPayload(slackText) : payload,
            });
        }

        if (owner.Email is { } email)
        {
            queued.Add(new Notification
            {
                CreatedAt = now,
                Role = role,
                Recipient = owner.Name,
                Channel = "email",
                Target = email,
                Payload = payload,
                Status = "unsent",
            });
        }

        return queued;
    }

    /// <summary>
    /// <paramref name="text"/> with the three characters Slack reads as markup escaped (<c>&amp;</c>, <c>&lt;</c>, <c>&gt;</c>),
    /// as Slack asks of text from elsewhere: a mention or a link then shows as the characters that were sent. A reason an
    /// admin or a requester wrote, like a summary naming what callers sent, would otherwise ping the whole channel
    /// (<c>&lt;!channel&gt;</c>) or show a link of theirs in a message the gateway signs.
    /// </summary>
    internal static string SlackEscaped(string? text)
        => text is null || text.AsSpan().IndexOfAny('&', '<', '>') < 0 ? text ?? "" : text.Replace("&", "&amp;", StringComparison.Ordinal)
            .Replace("<", "&lt;", StringComparison.Ordinal).Replace(">", "&gt;", StringComparison.Ordinal);

    /// <summary>A Slack-compatible incoming-webhook body: <c>text</c> (the fallback) and one mrkdwn section block.</summary>
    public static string SlackPayload(string text) => JsonSerializer.Serialize(new Dictionary<string, object>
    {
        ["text"] = text,
        ["blocks"] = new object[] { new Dictionary<string, object> { ["type"] = "section", ["text"] = new Dictionary<string, string> { ["type"] = "mrkdwn", ["text"] = text } } },
    });

    /// <summary>Adds messages to the durable outbox and wakes the delivery loop.</summary>
    public async Task EnqueueAsync(IReadOnlyList<Notification> notifications, CancellationToken cancellationToken = default)
    {
        await _store.EnqueueNotificationsAsync(notifications, cancellationToken);
        _wake.Release();
    }

    private async Task DeliverLoopAsync()
    {
        var token = _stopping.Token;
        var outage = false; // the store out of reach: said once, with its end, not once a second with a stack trace
        while (!token.IsCancellationRequested)
        {
            try
            {
                var due = await _store.DueNotificationsAsync(_time.GetUtcNow(), 32, token);
                if (outage)
                {
                    outage = false;
                    Log.OutboxReadable(_logger);
                }

                foreach (var notification in due)
                {
                    await DeliverAsync(notification, token);
                }

                // Sleep until woken by a new message or the next retry could be due.
                await _wake.WaitAsync(due.Count == 32 ? TimeSpan.Zero : TimeSpan.FromSeconds(1), token);
            }
            catch (OperationCanceledException) when (token.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (_store is Custos.Ledger.ICustosStore store ? store.IsUnavailable(ex) : Custos.Ledger.StoreFailures.IsUnavailable(ex))
            {
                if (!outage)
                {
                    outage = true;
                    Log.OutboxUnreachable(_logger, ex.Message);
                }

                await Task.Delay(TimeSpan.FromSeconds(1), _time, CancellationToken.None);
            }
            catch (Exception ex)
            {
                Log.LoopFailed(_logger, ex);
                await Task.Delay(TimeSpan.FromSeconds(1), _time, CancellationToken.None);
            }
        }
    }

    private async Task DeliverAsync(Notification notification, CancellationToken cancellationToken)
    {
        string? error;
        try
        {
            var body = System.Text.Encoding.UTF8.GetBytes(notification.Payload);
            var timestamp = _time.GetUtcNow().ToUnixTimeSeconds();
            using var request = new HttpRequestMessage(HttpMethod.Post, notification.Target) { Content = new ByteArrayContent(body) };
            request.Content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue("application/json") { CharSet = "utf-8" };
            request.Headers.Add(WebhookSigner.TimestampHeader, timestamp.ToString(System.Globalization.CultureInfo.InvariantCulture));
            request.Headers.Add(WebhookSigner.SignatureHeader, _signer.Sign(timestamp, body));
            request.Headers.Add("X-Custos-Delivery", notification.Id.ToString(System.Globalization.CultureInfo.InvariantCulture));
            using var response = await _http.SendAsync(request, cancellationToken);
            if (response.IsSuccessStatusCode)
            {
                await _store.RecordNotificationAttemptAsync(notification.Id, true, null, null, CancellationToken.None);
                return;
            }

            error = $"HTTP {(int)response.StatusCode}";
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException && !cancellationToken.IsCancellationRequested)
        {
            error = ex.Message;
        }

        // Exponential back-off from one second, at most five minutes; the message stays in the outbox until delivered.
        var backoff = TimeSpan.FromSeconds(Math.Min(Math.Pow(2, notification.Attempts), MaxBackoff.TotalSeconds));
        // Scheme and host only: receivers take their secret in the path (Slack), the query or the user info.
        Log.DeliveryFailed(_logger, notification.Id, WebhookAddress.Masked(notification.Target), error, backoff.TotalSeconds);
        await _store.RecordNotificationAttemptAsync(notification.Id, false, error, _time.GetUtcNow() + backoff, CancellationToken.None);
    }

    /// <summary>Stops the delivery loop; undelivered messages stay in the outbox for the next start.</summary>
    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync();
        try
        {
            await _loop;
        }
        catch (OperationCanceledException)
        {
        }

        _http.Dispose();
        _stopping.Dispose();
        _wake.Dispose();
    }

    private static partial class Log
    {
        [LoggerMessage(EventId = 40, Level = LogLevel.Warning, Message = "Notification {Id} to {Target} not delivered ({Error}); retrying in {Seconds} s.")]
        public static partial void DeliveryFailed(ILogger logger, long id, string target, string? error, double seconds);

        [LoggerMessage(EventId = 41, Level = LogLevel.Error, Message = "The notification outbox loop failed; retrying.")]
        public static partial void LoopFailed(ILogger logger, Exception exception);

        [LoggerMessage(EventId = 42, Level = LogLevel.Warning,
            Message = "The notification outbox cannot be read: the store is out of reach ({Error}). Notifications wait in it; retrying every second.")]
        public static partial void OutboxUnreachable(ILogger logger, string error);

        [LoggerMessage(EventId = 43, Level = LogLevel.Information, Message = "The notification outbox can be read again; delivering what waited.")]
        public static partial void OutboxReadable(ILogger logger);
    }
}
