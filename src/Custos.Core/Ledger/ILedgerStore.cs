namespace Custos.Ledger;

/// <summary>Filters for reading request entries back. All are optional and combine with AND.</summary>
public sealed record LedgerQuery
{
    /// <summary>Only this tenant.</summary>
    public string? Tenant { get; init; }

    /// <summary>Only this service.</summary>
    public string? Service { get; init; }

    /// <summary>Only this consumer.</summary>
    public string? Consumer { get; init; }

    /// <summary>Only this decision: allow, deny or throttle.</summary>
    public string? Decision { get; init; }

    /// <summary>Only this requested model.</summary>
    public string? Model { get; init; }

    /// <summary>Only this request id.</summary>
    public string? RequestId { get; init; }

    /// <summary>At or after this instant.</summary>
    public DateTimeOffset? From { get; init; }

    /// <summary>Before this instant.</summary>
    public DateTimeOffset? To { get; init; }

    /// <summary>
    /// Only entries of one of these tenants, as a scope narrows a search (an admin scoped to tenants); an entry of no
    /// tenant is not among them. Null (the default) for any; empty for none.
    /// </summary>
    public IReadOnlyCollection<string>? Tenants { get; init; }

    /// <summary>
    /// Only entries of one of these services, as a scope narrows a search (an admin scoped to services); an entry of no
    /// service (an admin or shed entry) is not among them. Null (the default) for any; empty for none.
    /// </summary>
    public IReadOnlyCollection<string>? Services { get; init; }

    /// <summary>Only this kind of record: request (default) or admin; null for both.</summary>
    public string? Kind { get; init; } = "request";

    /// <summary>At most this many, newest last. Default 1000.</summary>
    public int Limit { get; init; } = 1000;

    /// <summary>
    /// <paramref name="row"/>, once its entry is seen to say what the store selected it by: the equality filters and the time
    /// window, which stores match against their search columns, not against the entry the hash covers. Every store checks
    /// every row it returns, so a search or a report never takes an entry for what its altered columns say it is.
    /// </summary>
    /// <exception cref="InvalidDataException">The entry says otherwise: the row's search columns were altered.</exception>
    public StoredRecord Checked(StoredRecord row)
    {
        ArgumentNullException.ThrowIfNull(row);
        var recorded = LedgerColumns.Read(row.Json);
        foreach (var (column, value) in ColumnFilters())
        {
            if (recorded?.ValueOf(column) is var says && says != value)
            {
                throw Altered(row, $"its {column} column", says);
            }
        }

        foreach (var (column, values) in ScopeFilters())
        {
            if (recorded?.ValueOf(column) is var says && (says is null || !values.Contains(says)))
            {
                throw Altered(row, $"its {column} column", says);
            }
        }

        if (From is not null || To is not null)
        {
            // As the stores compare: the ledger's text form, whole microseconds, fixed width, so text order is time order.
            var at = recorded?.Timestamp;
            if (at is null || (From is { } from && string.CompareOrdinal(at, LedgerTime.Format(from)) < 0)
                || (To is { } to && string.CompareOrdinal(at, LedgerTime.Format(to)) >= 0))
            {
                throw Altered(row, "its ts column", recorded?.Timestamp);
            }
        }

        return row;

        static InvalidDataException Altered(StoredRecord row, string by, string? says)
            => new($"Ledger entry {row.Seq} of chain {row.ChainId} was selected by {by}, but the entry says {(says is null ? "null" : $"'{says}'")}: "
                + "the store's search columns were altered. Run custos audit verify.");
    }

    /// <summary>The equality filters that are set, as (ledger column, value): what every store turns into its WHERE clause.</summary>
    public IEnumerable<(string Column, string Value)> ColumnFilters()
    {
        (string, string?)[] filters =
            [("kind", Kind), ("tenant", Tenant), ("service", Service), ("consumer", Consumer), ("decision", Decision), ("model", Model), ("request_id", RequestId)];
        foreach (var (column, value) in filters)
        {
            if (value is not null)
            {
                yield return (column, value);
            }
        }
    }

    /// <summary>
    /// The scope filters that are set, as (ledger column, the values one of which it holds): what every store turns into
    /// <c>column IN (…)</c>, or into a condition no row meets when the values are none.
    /// </summary>
    public IEnumerable<(string Column, IReadOnlyCollection<string> Values)> ScopeFilters()
    {
        if (Tenants is not null)
        {
            yield return ("tenant", Tenants);
        }

        if (Services is not null)
        {
            yield return ("service", Services);
        }
    }
}

/// <summary>A stored ledger row: where it sits in its chain, and its canonical JSON.</summary>
public sealed record StoredRecord(string ChainId, long Seq, string Kind, string Json, string PrevHash, string Hash);

/// <summary>The append-only ledger store. SQLite is the embedded implementation; PostgreSQL the multi-node one.</summary>
public interface ILedgerStore
{
    /// <summary>The last sequence number and hash of <paramref name="chainId"/>, or (0, genesis) for a new chain.</summary>
    Task<(long Seq, string Hash)> GetChainHeadAsync(string chainId, CancellationToken cancellationToken = default);

    /// <summary>Appends a batch atomically, in order.</summary>
    Task AppendAsync(IReadOnlyList<ChainedRecord> batch, CancellationToken cancellationToken = default);

    /// <summary>Reads entries matching <paramref name="query"/>, oldest first.</summary>
    IAsyncEnumerable<StoredRecord> QueryAsync(LedgerQuery query, CancellationToken cancellationToken = default);
}

/// <summary>Stores immutable policy versions.</summary>
public interface IPolicyStore
{
    /// <summary>The newest version, or null when none was ever stored.</summary>
    Task<Policy.PolicyVersion?> GetLatestAsync(CancellationToken cancellationToken = default);

    /// <summary>
    /// Stores <paramref name="document"/> as the next version, unless it equals the latest; returns the version in force.
    /// With <paramref name="basedOn"/>, the change was made to that version: when another writer (another node) stored a
    /// newer one meanwhile, nothing is stored and <see cref="PolicyConflictException"/> is thrown, so the caller can
    /// re-apply its change to the newer version instead of silently undoing it.
    /// </summary>
    Task<(Policy.PolicyVersion Version, bool Created)> SaveAsync(Policy.PolicyDocument document, string author, string reason,
        DateTimeOffset now, string? source, long? basedOn = null, CancellationToken cancellationToken = default);

    /// <summary>All versions, oldest first.</summary>
    Task<IReadOnlyList<Policy.PolicyVersion>> GetHistoryAsync(CancellationToken cancellationToken = default);
}

/// <summary>One entry's place in its chain, as the verifier and the checkpointer read it.</summary>
/// <param name="Seq">Sequence number.</param>
/// <param name="Json">Canonical JSON as stored.</param>
/// <param name="PrevHash">The stored previous hash.</param>
/// <param name="Hash">The stored hash.</param>
/// <param name="RequestId">The request id, for request entries.</param>
/// <param name="Timestamp">The stored timestamp column.</param>
public sealed record ChainEntry(long Seq, string Json, string PrevHash, string Hash, string? RequestId, string Timestamp)
{
    /// <summary>Every column the store searches by, as stored, for the verifier to compare with the entry; read with the records only.</summary>
    public LedgerColumns? Columns { get; init; }
}

/// <summary>Signed checkpoints and ordered chain reads: what verification and proofs need.</summary>
public interface IEvidenceStore
{
    /// <summary>Every chain (node) in the ledger with its highest sequence number and entry count.</summary>
    Task<IReadOnlyList<(string ChainId, long LastSeq, long Count)>> GetChainsAsync(CancellationToken cancellationToken = default);

    /// <summary>
    /// Entries of <paramref name="chainId"/> with <paramref name="fromSeq"/> ≤ seq ≤ <paramref name="toSeq"/>, in sequence
    /// order, with their records and search columns (sealing, which needs only the hashes, reads <see cref="ReadChainHashesAsync"/>).
    /// </summary>
    IAsyncEnumerable<ChainEntry> ReadChainAsync(string chainId, long fromSeq, long toSeq, CancellationToken cancellationToken = default);

    /// <summary>
    /// The stored hashes of the entries of <paramref name="chainId"/> with <paramref name="fromSeq"/> ≤ seq ≤
    /// <paramref name="toSeq"/>, in sequence order, as bytes: the Merkle tree's leaves, which is all sealing and proofs
    /// read. The stores decode the hex in the query instead of making strings of it (the checkpointer reads every entry
    /// back: 3 % of the bytes a gateway allocated under load, <c>docs/performance.md</c>).
    /// </summary>
    /// <exception cref="FormatException">A stored hash is not hexadecimal (the store was altered).</exception>
    IAsyncEnumerable<(long Seq, byte[] Hash)> ReadChainHashesAsync(string chainId, long fromSeq, long toSeq, CancellationToken cancellationToken = default);

    /// <summary>
    /// The request totals (<see cref="RequestTotals"/>) of the slots <paramref name="width"/> seconds long (a quarter hour,
    /// <see cref="RequestTotals.SlotSeconds"/>, or a minute, <see cref="RequestTotals.MinuteSeconds"/>) that start at or
    /// after <paramref name="from"/> and before <paramref name="to"/>, by slot and then by the fields of their key,
    /// byte-wise. Both widths are kept by <see cref="ILedgerStore.AppendAsync"/> in each batch's transaction; what the
    /// console's overview and the spend read (the last hour by minute), and what verification adds up again from the entries.
    /// </summary>
    IAsyncEnumerable<RequestTotal> ReadTotalsAsync(int width, DateTimeOffset from, DateTimeOffset to, CancellationToken cancellationToken = default);

    /// <summary>Stores a checkpoint.</summary>
    Task AppendCheckpointAsync(SignedCheckpoint checkpoint, CancellationToken cancellationToken = default);

    /// <summary>Checkpoints of <paramref name="chainId"/> (or of every chain), in order.</summary>
    Task<IReadOnlyList<SignedCheckpoint>> GetCheckpointsAsync(string? chainId = null, CancellationToken cancellationToken = default);

    /// <summary>
    /// Every stored policy version as its row holds it, oldest first, its canonical JSON unchecked: what verification compares
    /// with its hash and with the ledger (<see cref="IPolicyStore.GetHistoryAsync"/> refuses a version whose document does not
    /// hash to its stored SHA-256).
    /// </summary>
    IAsyncEnumerable<StoredPolicyVersion> ReadPolicyVersionsAsync(CancellationToken cancellationToken = default);
}

/// <summary>A policy version's row as stored: number, SHA-256, author, reason, time and canonical JSON, none of them checked.</summary>
public sealed record StoredPolicyVersion(long Number, string Sha256, string Author, string Reason, DateTimeOffset CreatedAt, string Canonical);

/// <summary>A policy change was made to a version that is no longer the latest: another writer stored a newer one.</summary>
/// <param name="basedOn">The version the change was made to.</param>
/// <param name="latest">The latest version stored.</param>
public sealed class PolicyConflictException(long basedOn, long latest)
    : Exception($"The policy change was made to version {basedOn}, but version {latest} is the latest now.")
{
    /// <summary>The version the change was made to.</summary>
    public long BasedOn { get; } = basedOn;

    /// <summary>The latest version stored.</summary>
    public long Latest { get; } = latest;
}

/// <summary>
/// Everything a gateway node stores: the ledger, policy versions, the registry, evidence and alerts. SQLite
/// (<c>Custos.Storage.SqliteStore</c>) is the embedded implementation; PostgreSQL (<c>Custos.Postgres.PostgresStore</c>)
/// the one many nodes share. Both pass the same contract suite.
/// </summary>
public interface ICustosStore : ILedgerStore, IPolicyStore, ControlPlane.IRegistryStore, IEvidenceStore, Alerts.IAlertStore, IAsyncDisposable
{
    /// <summary>Where the store is, for people: a file path or a database name; never a password.</summary>
    string Description { get; }

    /// <summary>
    /// True when <paramref name="exception"/>, thrown by this store, means the store is out of reach for now (a connection
    /// refused or dropped, a timeout, a database busy or unable to read or write) rather than a fault in what was asked:
    /// trying again later may succeed. By default <see cref="StoreFailures.IsUnavailable"/>; a store adds its driver's codes.
    /// </summary>
    bool IsUnavailable(Exception exception) => StoreFailures.IsUnavailable(exception);
}

/// <summary>What marks a store's failure as the store being out of reach, whatever the store.</summary>
public static class StoreFailures
{
    /// <summary>
    /// True when <paramref name="exception"/> or one inside it is a socket error, a timeout, or a database driver's
    /// failure that the driver calls transient (<see cref="System.Data.Common.DbException.IsTransient"/>: PostgreSQL's
    /// connection failures, a server shutting down, too many connections).
    /// </summary>
    public static bool IsUnavailable(Exception exception)
    {
        for (var e = exception; e is not null; e = e.InnerException)
        {
            if (e is System.Net.Sockets.SocketException or TimeoutException or System.Data.Common.DbException { IsTransient: true })
            {
                return true;
            }

            if (e is AggregateException aggregate)
            {
                return aggregate.InnerExceptions.Any(IsUnavailable);
            }
        }

        return false;
    }
}
