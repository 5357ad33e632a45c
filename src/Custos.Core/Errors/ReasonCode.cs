namespace Custos.Errors;

/// <summary>The verdict of the gateway on one request.</summary>
public enum Decision
{
    /// <summary>Forwarded to the provider.</summary>
    Allow,

    /// <summary>Refused before reaching any provider.</summary>
    Deny,

    /// <summary>Refused for now; a retry later can succeed.</summary>
    Throttle,
}

/// <summary>
/// One entry of the catalogue of decision and error codes: the code clients and the ledger see,
/// its HTTP status, the OpenAI-style error type, whether a retry can help, and the default message.
/// Documented, one by one, in <c>docs/decisions.md</c>.
/// </summary>
/// <remarks>Codes are a contract: clients and ledger readers match on them. Never rename one; add new ones.</remarks>
public sealed record ReasonCode(string Code, int Status, string Type, bool Retryable, Decision Decision, string Message)
{
    /// <summary>
    /// The error type Anthropic's API gives its own errors of <see cref="Status"/>: what a refusal on an Anthropic path
    /// (<c>/v1/messages…</c>) carries in place of <see cref="Type"/>. See <see cref="Reasons.AnthropicTypeOf"/>.
    /// </summary>
    public string AnthropicType => Reasons.AnthropicTypeOf(Status);

    /// <inheritdoc/>
    public override string ToString() => Code;
}

/// <summary>The catalogue of every decision and error code.</summary>
public static class Reasons
{
    private const string Auth = "authentication_error";
    private const string Permission = "permission_error";
    private const string Invalid = "invalid_request_error";
    private const string NotFound = "not_found_error";
    private const string Upstream = "upstream_error";
    private const string Api = "api_error";
    private const string OverloadedType = "overloaded_error";

    /// <summary>
    /// The error type Anthropic's API names for an HTTP status (docs.claude.com/en/api/errors): 401
    /// <c>authentication_error</c>, 402 <c>billing_error</c>, 403 <c>permission_error</c>, 404 <c>not_found_error</c>, 413
    /// <c>request_too_large</c>, 429 <c>rate_limit_error</c>, 504 <c>timeout_error</c>, 503 and 529
    /// <c>overloaded_error</c>, any other 5xx <c>api_error</c>, and any other 4xx <c>invalid_request_error</c> (as
    /// Anthropic says of the 4xx it does not list). Refusals on Anthropic paths carry it, with the gateway's own code
    /// beside it, so an Anthropic client reads the same vocabulary as from Anthropic.
    /// </summary>
    public static string AnthropicTypeOf(int status) => status switch
    {
        401 => Auth,
        402 => "billing_error",
        403 => Permission,
        404 => NotFound,
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 or 529 => OverloadedType,
        504 => "timeout_error",
        >= 500 => Api,
        _ => Invalid,
    };

    /// <summary>No credential was presented.</summary>
    public static readonly ReasonCode CredentialMissing = new("deny.credential_missing", 401, Auth, false, Decision.Deny,
        "No credential. Send an API key as 'Authorization: Bearer csk_…' (or 'x-api-key' for Anthropic clients).");

    /// <summary>The credential is not a Custos key.</summary>
    public static readonly ReasonCode CredentialMalformed = new("deny.credential_malformed", 401, Auth, false, Decision.Deny,
        "The credential is not a Custos API key (expected 'csk_' followed by 38 letters and digits).");

    /// <summary>Two different credentials in one request: which caller it is cannot be said.</summary>
    public static readonly ReasonCode CredentialAmbiguous = new("deny.credential_ambiguous", 401, Auth, false, Decision.Deny,
        "The request carries two different credentials, in 'Authorization' and 'x-api-key'; send one.");

    /// <summary>Right shape, wrong checksum: a typo, a truncated copy, or a forgery.</summary>
    public static readonly ReasonCode CredentialChecksum = new("deny.credential_checksum", 401, Auth, false, Decision.Deny,
        "The API key's checksum does not match: it was mistyped or truncated.");

    /// <summary>A well-formed key that no consumer holds.</summary>
    public static readonly ReasonCode CredentialUnknown = new("deny.credential_unknown", 401, Auth, false, Decision.Deny,
        "The API key is not known to this gateway.");

    /// <summary>The key was revoked.</summary>
    public static readonly ReasonCode CredentialRevoked = new("deny.credential_revoked", 401, Auth, false, Decision.Deny,
        "The API key has been revoked.");

    /// <summary>The key is suspended.</summary>
    public static readonly ReasonCode CredentialSuspended = new("deny.credential_suspended", 401, Auth, false, Decision.Deny,
        "The API key is suspended; its service's technical control owner can resume it.");

    /// <summary>The key has expired.</summary>
    public static readonly ReasonCode CredentialExpired = new("deny.credential_expired", 401, Auth, false, Decision.Deny,
        "The API key has expired.");

    /// <summary>An admin key was used on the data plane.</summary>
    public static readonly ReasonCode CredentialWrongKind = new("deny.credential_wrong_kind", 401, Auth, false, Decision.Deny,
        "An admin key cannot call models; use a consumer key (csk_…).");

    /// <summary>The body has no model.</summary>
    public static readonly ReasonCode ModelMissing = new("invalid.model_missing", 400, Invalid, false, Decision.Deny,
        "The request has no 'model'.");

    /// <summary>No such model in the caller's tenant.</summary>
    public static readonly ReasonCode ModelNotFound = new("deny.model_not_found", 404, NotFound, false, Decision.Deny,
        "The model does not exist or you do not have access to it.");

    /// <summary>The model exists but the consumer is not entitled to it.</summary>
    public static readonly ReasonCode ModelNotEntitled = new("deny.model_not_entitled", 403, Permission, false, Decision.Deny,
        "Your credential is not entitled to this model; ask your service's policy owner for access.");

    /// <summary>The consumer's entitlement to the model has ended.</summary>
    public static readonly ReasonCode EntitlementExpired = new("deny.entitlement_expired", 403, Permission, false, Decision.Deny,
        "Your entitlement to this model has expired; ask your service's policy owner to renew it.");

    /// <summary>The consumer's entitlement to the model has not started yet.</summary>
    public static readonly ReasonCode EntitlementNotYetValid = new("deny.entitlement_not_yet_valid", 403, Permission, false, Decision.Deny,
        "Your entitlement to this model is not valid yet.");

    /// <summary>Over a token ceiling: input, output or choices.</summary>
    public static readonly ReasonCode TokenCeiling = new("deny.token_ceiling", 400, Invalid, false, Decision.Deny,
        "The request is over a token ceiling of your policy.");

    /// <summary>The prompt matches a deny rule, or a rule could not finish in time.</summary>
    public static readonly ReasonCode PromptRestricted = new("deny.prompt_restricted", 400, Invalid, false, Decision.Deny,
        "The prompt matches a restriction of your policy.");

    /// <summary>A requests- or tokens-per-minute limit is reached.</summary>
    public static readonly ReasonCode RateLimited = new("throttle.rate_limit", 429, "rate_limit_error", true, Decision.Throttle,
        "A rate limit is reached; retry after the delay in Retry-After.");

    /// <summary>A daily or monthly quota is used up.</summary>
    public static readonly ReasonCode QuotaExhausted = new("deny.quota_exhausted", 429, "rate_limit_error", false, Decision.Deny,
        "A quota is used up for this period.");

    /// <summary>A hard budget cannot cover the request's worst-case cost.</summary>
    public static readonly ReasonCode BudgetExhausted = new("deny.budget_exhausted", 402, "insufficient_quota", false, Decision.Deny,
        "The budget cannot cover this request.");

    /// <summary>
    /// The request's worst case alone is more than a whole rate limit, quota or budget: no wait would let it through. Not
    /// 429 or 402 with a Retry-After, which clients and SDKs retry.
    /// </summary>
    public static readonly ReasonCode ExceedsLimit = new("deny.exceeds_limit", 400, Invalid, false, Decision.Deny,
        "The request's worst case is more than a whole limit of your policy; it can never be served under it.");

    /// <summary>The model serves another API (for example an embedding model on chat completions).</summary>
    public static readonly ReasonCode ModelWrongEndpoint = new("invalid.model_endpoint", 400, Invalid, false, Decision.Deny,
        "The model does not serve this endpoint.");

    /// <summary>The body is not valid JSON.</summary>
    public static readonly ReasonCode InvalidJson = new("invalid.json", 400, Invalid, false, Decision.Deny,
        "The request body is not valid JSON.");

    /// <summary>The body could not be read: malformed framing such as broken chunked encoding.</summary>
    public static readonly ReasonCode InvalidBody = new("invalid.body", 400, Invalid, false, Decision.Deny,
        "The request body could not be read (malformed framing).");

    /// <summary>
    /// The HTTP server refused the request before the gateway read it: a malformed request line or header, two
    /// Content-Lengths, headers over its limits. The server answers with its own bare status, which the record keeps.
    /// </summary>
    public static readonly ReasonCode InvalidHttp = new("invalid.http", 400, Invalid, false, Decision.Deny,
        "The request is not well-formed HTTP/1.1.");

    /// <summary>The body arrived too slowly: below the server's minimum data rate once its grace period passed.</summary>
    public static readonly ReasonCode BodyTimeout = new("invalid.body_timeout", 408, Invalid, false, Decision.Deny,
        "The request body arrived too slowly; send it at once.");

    /// <summary>The body declares a content coding (such as gzip) that the gateway does not decode.</summary>
    public static readonly ReasonCode ContentEncoding = new("invalid.content_encoding", 415, Invalid, false, Decision.Deny,
        "The request body must not be compressed: this gateway reads it as JSON, without a Content-Encoding.");

    /// <summary>A field has the wrong type or value.</summary>
    public static readonly ReasonCode InvalidField = new("invalid.field", 400, Invalid, false, Decision.Deny,
        "A field of the request has the wrong type or value.");

    /// <summary>A field the gateway reads appears more than once: the gateway and the provider could each act on another.</summary>
    public static readonly ReasonCode DuplicateField = new("invalid.duplicate_field", 400, Invalid, false, Decision.Deny,
        "A field of the request appears more than once.");

    /// <summary>A header the gateway records has a value it does not accept (longer than it records).</summary>
    public static readonly ReasonCode InvalidHeader = new("invalid.header", 400, Invalid, false, Decision.Deny,
        "A request header has a value this gateway does not accept.");

    /// <summary>The body is over the configured limit.</summary>
    public static readonly ReasonCode BodyTooLarge = new("invalid.body_too_large", 413, Invalid, false, Decision.Deny,
        "The request body is larger than this gateway accepts.");

    /// <summary>The body is not JSON by its content type.</summary>
    public static readonly ReasonCode ContentType = new("invalid.content_type", 415, Invalid, false, Decision.Deny,
        "The request must have 'Content-Type: application/json'.");

    /// <summary>No such endpoint.</summary>
    public static readonly ReasonCode UnknownEndpoint = new("invalid.endpoint", 404, NotFound, false, Decision.Deny,
        "Unknown endpoint. Custos serves /v1/chat/completions, /v1/responses, /v1/completions, /v1/embeddings, /v1/models, /v1/models/{model} and /v1/messages.");

    /// <summary>Endpoint exists, method does not.</summary>
    public static readonly ReasonCode MethodNotAllowed = new("invalid.method", 405, Invalid, false, Decision.Deny,
        "This endpoint does not accept that HTTP method.");

    /// <summary>The tenant has no usable credential for the provider.</summary>
    public static readonly ReasonCode UpstreamNotConfigured = new("upstream.not_configured", 502, Upstream, false, Decision.Allow,
        "The provider for this model is not configured on the gateway.");

    /// <summary>The provider could not be reached.</summary>
    public static readonly ReasonCode UpstreamUnreachable = new("upstream.unreachable", 502, Upstream, true, Decision.Allow,
        "The model provider could not be reached.");

    /// <summary>The provider did not answer in time.</summary>
    public static readonly ReasonCode UpstreamTimeout = new("upstream.timeout", 504, Upstream, true, Decision.Allow,
        "The model provider did not answer in time.");

    /// <summary>The provider answered with a server error.</summary>
    public static readonly ReasonCode UpstreamError = new("upstream.error", 502, Upstream, true, Decision.Allow,
        "The model provider returned an error.");

    /// <summary>The provider refused the gateway's own credential.</summary>
    public static readonly ReasonCode UpstreamAuth = new("upstream.auth_failed", 502, Upstream, false, Decision.Allow,
        "The model provider refused the gateway's credential; the gateway's operators have been told.");

    /// <summary>The provider rejected the request as invalid; its message is passed on, secrets removed.</summary>
    public static readonly ReasonCode UpstreamRejected = new("upstream.rejected", 400, Invalid, false, Decision.Allow,
        "The model provider rejected the request.");

    /// <summary>The provider is rate limiting the gateway.</summary>
    public static readonly ReasonCode UpstreamRateLimited = new("upstream.rate_limited", 429, "rate_limit_error", true, Decision.Allow,
        "The model provider is rate limiting; retry later.");

    /// <summary>The provider's stream ended before it was complete.</summary>
    public static readonly ReasonCode UpstreamStreamInterrupted = new("upstream.stream_interrupted", 502, Upstream, true, Decision.Allow,
        "The model provider's response was cut off.");

    /// <summary>
    /// The provider answered 200 with a JSON body that is not one JSON document (cut short, empty, or not JSON): it went
    /// to the client as it came, and the record says the answer was malformed.
    /// </summary>
    public static readonly ReasonCode UpstreamMalformed = new("upstream.malformed_response", 502, Upstream, true, Decision.Allow,
        "The model provider's answer was not valid JSON (cut short or not JSON at all); retry the request.");

    /// <summary>The provider sent an error event in the middle of its stream; the client gets the gateway's in its place.</summary>
    public static readonly ReasonCode UpstreamStreamFailed = new("upstream.stream_error", 502, Upstream, true, Decision.Allow,
        "The model provider reported an error in the middle of its response, which is incomplete; retry the request.");

    /// <summary>
    /// A policy version that refuses the request's caller (a kill switch, a suspension, a revocation) came into force while
    /// it ran: it was cut, with the gateway's error event (a stream) or this error (no answer yet). It was admitted, so the
    /// entry's decision stays allow and its tokens count; the outcome is interrupted.
    /// </summary>
    public static readonly ReasonCode KilledInFlight = new("deny.killed_in_flight", 403, Permission, false, Decision.Allow,
        "The request was stopped while it ran: a kill switch, suspension or revocation now refuses its consumer, service, tenant or credential.");

    /// <summary>
    /// The node was stopping (SIGTERM, a rolling restart) and the request was still running when its drain time ran out: it
    /// was cut, with the gateway's error event (a stream) or this error (no answer yet), instead of being dropped when the
    /// listener closed. It was admitted, so the entry's decision stays allow and its tokens count; the outcome is
    /// interrupted. Retrying reaches another node.
    /// </summary>
    public static readonly ReasonCode ShuttingDown = new("unavailable.shutting_down", 503, OverloadedType, true, Decision.Allow,
        "The gateway node stopped while this request ran (a restart or a shutdown) and ended it; retry, and another node will take it.");

    /// <summary>The client went away before the response was complete.</summary>
    public static readonly ReasonCode ClientCancelled = new("client.cancelled", 499, Invalid, false, Decision.Allow,
        "The client closed the request.");

    /// <summary>An unexpected gateway fault.</summary>
    public static readonly ReasonCode Internal = new("gateway.internal_error", 500, Api, true, Decision.Deny,
        "The gateway failed unexpectedly; the request id identifies it in the gateway's logs.");

    /// <summary>The gateway is at its limit of concurrent requests; it sheds this one before doing any work for it.</summary>
    public static readonly ReasonCode Overloaded = new("unavailable.overloaded", 503, OverloadedType, true, Decision.Throttle,
        "The gateway is at its limit of concurrent requests; retry shortly.");

    /// <summary>The ledger cannot keep up: the gateway refuses new requests rather than serve them unrecorded.</summary>
    public static readonly ReasonCode LedgerBacklog = new("unavailable.ledger_backlog", 503, OverloadedType, true, Decision.Throttle,
        "The gateway cannot record requests as fast as they arrive and refuses new ones until it catches up; retry shortly.");

    /// <summary>The shared counters (Redis) cannot be reached and the control's declared fail mode is closed.</summary>
    public static readonly ReasonCode CountersUnavailable = new("unavailable.counters", 503, OverloadedType, true, Decision.Throttle,
        "The gateway cannot reach the shared counters behind a quota or budget and refuses rather than serve unchecked; retry shortly.");

    /// <summary>This node cannot confirm it holds the latest policy (revocations may be missing) and the declared fail mode is closed.</summary>
    public static readonly ReasonCode PolicyUnconfirmed = new("unavailable.policy_unconfirmed", 503, OverloadedType, true, Decision.Throttle,
        "The gateway cannot confirm it holds the latest policy version (a revocation may be pending) and refuses rather than serve unchecked; retry shortly.");

    /// <summary>
    /// The ledger can store nothing durably right now (its store and its local spool both refuse writes): the gateway
    /// refuses new requests rather than serve them unrecorded.
    /// </summary>
    public static readonly ReasonCode LedgerUnavailable = new("unavailable.ledger", 503, OverloadedType, true, Decision.Throttle,
        "The gateway cannot record requests right now and refuses new ones rather than serve them unrecorded; retry shortly.");

    /// <summary>Kill switch: the consumer is suspended.</summary>
    public static readonly ReasonCode ConsumerSuspended = new("deny.consumer_suspended", 403, Permission, false, Decision.Deny,
        "This consumer is suspended (kill switch); its service's technical control owner can release it.");

    /// <summary>Kill switch: the consumer's service is suspended.</summary>
    public static readonly ReasonCode ServiceSuspended = new("deny.service_suspended", 403, Permission, false, Decision.Deny,
        "This service is suspended (kill switch); its technical control owner can release it.");

    /// <summary>Kill switch: the consumer's tenant is suspended.</summary>
    public static readonly ReasonCode TenantSuspended = new("deny.tenant_suspended", 403, Permission, false, Decision.Deny,
        "This tenant is suspended (kill switch).");

    /// <summary>The service lacks named owners and the policy requires them (<c>require_owners: block</c>).</summary>
    public static readonly ReasonCode ServiceUngoverned = new("deny.service_ungoverned", 403, Permission, false, Decision.Deny,
        "This service has no named policy, billing and technical owners, and the policy requires them before it can serve traffic.");

    /// <summary>A bearer token that is neither a Custos key nor a well-formed JWT.</summary>
    public static readonly ReasonCode TokenMalformed = new("deny.token_malformed", 401, Auth, false, Decision.Deny,
        "The bearer token is not a well-formed JWT.");

    /// <summary>A JWT from an issuer this gateway does not trust.</summary>
    public static readonly ReasonCode TokenIssuer = new("deny.token_issuer", 401, Auth, false, Decision.Deny,
        "The token's issuer is not trusted by this gateway.");

    /// <summary>A JWT for another audience.</summary>
    public static readonly ReasonCode TokenAudience = new("deny.token_audience", 401, Auth, false, Decision.Deny,
        "The token is not meant for this gateway (wrong audience).");

    /// <summary>A JWT whose signature does not verify with the issuer's keys.</summary>
    public static readonly ReasonCode TokenSignature = new("deny.token_signature", 401, Auth, false, Decision.Deny,
        "The token's signature does not verify with its issuer's keys.");

    /// <summary>An expired (or not yet valid) JWT.</summary>
    public static readonly ReasonCode TokenExpired = new("deny.token_expired", 401, Auth, false, Decision.Deny,
        "The token has expired or is not valid yet.");

    /// <summary>A valid JWT whose subject is bound to no consumer.</summary>
    public static readonly ReasonCode TokenSubjectUnknown = new("deny.token_subject_unknown", 401, Auth, false, Decision.Deny,
        "The token is valid, but its subject is bound to no consumer of this gateway.");

    /// <summary>
    /// <see cref="CredentialRevoked"/>, <see cref="CredentialSuspended"/> and <see cref="CredentialExpired"/> worded for a
    /// workload identity (a token bound to a consumer) instead of an API key: the same codes.
    /// </summary>
    public static readonly ReasonCode IdentityRevoked = CredentialRevoked with { Message = "The workload identity has been revoked." };

    /// <inheritdoc cref="IdentityRevoked"/>
    public static readonly ReasonCode IdentitySuspended = CredentialSuspended with
    {
        Message = "The workload identity is suspended; its service's technical control owner can resume it.",
    };

    /// <inheritdoc cref="IdentityRevoked"/>
    public static readonly ReasonCode IdentityExpired = CredentialExpired with { Message = "The workload identity has expired." };

    /// <summary>Every code, for documentation and tests.</summary>
    public static IReadOnlyList<ReasonCode> All { get; } =
    [
        CredentialMissing, CredentialMalformed, CredentialAmbiguous, CredentialChecksum, CredentialUnknown, CredentialRevoked, CredentialSuspended,
        CredentialExpired, CredentialWrongKind, ModelMissing, ModelNotFound, ModelNotEntitled, EntitlementExpired, EntitlementNotYetValid,
        TokenCeiling, PromptRestricted, RateLimited, QuotaExhausted, BudgetExhausted, ExceedsLimit, ModelWrongEndpoint, InvalidJson, InvalidBody, BodyTimeout, InvalidHttp,
        InvalidField, DuplicateField, InvalidHeader, BodyTooLarge, ContentType, ContentEncoding, UnknownEndpoint, MethodNotAllowed, UpstreamNotConfigured, UpstreamUnreachable,
        UpstreamTimeout, UpstreamError, UpstreamAuth, UpstreamRejected, UpstreamRateLimited, UpstreamStreamInterrupted, UpstreamStreamFailed, UpstreamMalformed,
        ClientCancelled, Internal, Overloaded, LedgerBacklog, LedgerUnavailable, ConsumerSuspended, ServiceSuspended, TenantSuspended, ServiceUngoverned, KilledInFlight,
        TokenMalformed, TokenIssuer, TokenAudience, TokenSignature, TokenExpired, TokenSubjectUnknown,
        CountersUnavailable, PolicyUnconfirmed, ShuttingDown,
    ];
}
