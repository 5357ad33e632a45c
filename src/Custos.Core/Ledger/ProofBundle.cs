using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Custos.Ledger;

/// <summary>
/// A self-contained proof that one request entry is in the ledger unaltered: the entry with its chain links, the
/// Merkle inclusion path to a signed checkpoint, the checkpoint and its signature, and the policy version document the
/// entry names. Verifiable offline with the checkpoint public key and nothing else (<see cref="Verify"/>).
/// </summary>
public sealed record ProofBundle
{
    /// <summary>The format of this document.</summary>
    public const string CurrentFormat = "custos-proof/1";

    private static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,

        // Read strictly: a null where the format has none, or a member given twice, is not a bundle this gateway wrote.
        // A member the format does not have is refused too: it could carry a claim that nothing here checks.
        RespectNullableAnnotations = true,
        AllowDuplicateProperties = false,
        UnmappedMemberHandling = System.Text.Json.Serialization.JsonUnmappedMemberHandling.Disallow,
    };

    /// <summary>Always <see cref="CurrentFormat"/>.</summary>
    public required string Format { get; init; }

    /// <summary>The request the proof is about.</summary>
    public required string RequestId { get; init; }

    /// <summary>The entry and its place in its chain.</summary>
    public required ProofEntry Entry { get; init; }

    /// <summary>The Merkle audit path from the entry's hash to the checkpoint's root.</summary>
    public required ProofInclusion Inclusion { get; init; }

    /// <summary>The signed checkpoint that seals the entry.</summary>
    public required ProofCheckpoint Checkpoint { get; init; }

    /// <summary>The policy version the entry was decided under.</summary>
    public required ProofPolicy Policy { get; init; }

    /// <summary>The bundle as indented JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>Reads a bundle.</summary>
    public static ProofBundle Parse(string json) => Parse(System.Text.Encoding.UTF8.GetBytes(json));

    /// <summary>Reads a bundle from its UTF-8 JSON.</summary>
    public static ProofBundle Parse(ReadOnlySpan<byte> json) => JsonSerializer.Deserialize<ProofBundle>(json, Json) ?? throw new JsonException("it is null, not an object");

    /// <summary>Checks every link with <paramref name="publicKey"/>; each check is named, with its outcome.</summary>
    public IReadOnlyList<(string Check, bool Ok, string Detail)> Verify(ECDsa publicKey)
    {
        var checks = new List<(string, bool, string)>();
        void Check(string name, bool ok, string detail) => checks.Add((name, ok, detail));

        Check("format", Format == CurrentFormat, Format);
        var record = Encoding.UTF8.GetBytes(Entry.Record);
        if (HashChain.IsHash(Entry.PrevHash) && HashChain.IsHash(Entry.Hash))
        {
            var hash = HashChain.Link(Entry.PrevHash, record);
            Check("entry hash", hash == Entry.Hash, "SHA-256(prev_hash \\n canonical entry) = " + hash);
        }
        else
        {
            Check("entry hash", false, "prev_hash and hash are not both 64 lower-case hex digits");
        }

        string? requestId = null, policyHash = null;
        long? policyVersion = null;
        try
        {
            using var document = JsonDocument.Parse(record);
            var root = document.RootElement;
            if (root.ValueKind == JsonValueKind.Object)
            {
                requestId = root.TryGetProperty("request_id", out var r) && r.ValueKind == JsonValueKind.String ? r.GetString() : null;
                policyHash = root.TryGetProperty("policy_hash", out var h) && h.ValueKind == JsonValueKind.String ? h.GetString() : null;
                policyVersion = root.TryGetProperty("policy_version", out var v) && v.ValueKind == JsonValueKind.Number && v.TryGetInt64(out var number) ? number : null;
            }
        }
        catch (JsonException)
        {
        }

        Check("request id", requestId == RequestId, $"the entry is request {requestId ?? "(none)"}");

        var signed = new SignedCheckpoint(Checkpoint.Checkpoint, Checkpoint.Signature);
        Checkpoint? checkpoint = null;
        try
        {
            checkpoint = signed.Checkpoint;
        }
        catch (Exception ex) when (ex is JsonException or FormatException)
        {
        }

        Check("checkpoint signature", checkpoint is not null && checkpoint.KeyId == CheckpointKey.IdOf(publicKey) && signed.VerifySignature(publicKey),
            $"ECDSA P-256 by key {checkpoint?.KeyId}; the given public key is {CheckpointKey.IdOf(publicKey)}");
        var inRange = checkpoint is not null && checkpoint.ChainId == Entry.ChainId && Entry.Seq >= checkpoint.FromSeq && Entry.Seq <= checkpoint.ToSeq
            && Inclusion.LeafIndex == Entry.Seq - checkpoint.FromSeq && Inclusion.TreeSize == checkpoint.Count;
        Check("sealed by the checkpoint", inRange, checkpoint is null ? "no checkpoint" : $"chain {checkpoint.ChainId}, entries {checkpoint.FromSeq}-{checkpoint.ToSeq}");
        var included = checkpoint is not null && HashChain.IsHash(Entry.Hash) && HashChain.IsHash(checkpoint.MerkleRoot) && Inclusion.Path.All(HashChain.IsHash)
            && MerkleTree.VerifyInclusion(Convert.FromHexString(Entry.Hash), Inclusion.LeafIndex, Inclusion.TreeSize,
                [.. Inclusion.Path.Select(Convert.FromHexString)], Convert.FromHexString(checkpoint.MerkleRoot));
        Check("merkle inclusion", included, $"leaf {Inclusion.LeafIndex} of {Inclusion.TreeSize}, {Inclusion.Path.Count} hashes to root {checkpoint?.MerkleRoot}");
        var policySha = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(Policy.Canonical)));
        Check("policy version", policySha == Policy.Sha256 && policySha == policyHash && Policy.Number == policyVersion,
            $"version {Policy.Number}, sha256 {policySha}" +
            (policySha == Policy.Sha256 ? "" : $" (the bundle's policy.sha256 says {Policy.Sha256})") +
            $"; the entry names version {policyVersion?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "(none)"}, {policyHash ?? "(none)"}");
        return checks;
    }
}

/// <summary>The entry of a proof, with its chain links.</summary>
public sealed record ProofEntry
{
    /// <summary>The chain (node).</summary>
    public required string ChainId { get; init; }

    /// <summary>Its sequence number.</summary>
    public required long Seq { get; init; }

    /// <summary>The hash of the entry before it.</summary>
    public required string PrevHash { get; init; }

    /// <summary>Its hash.</summary>
    public required string Hash { get; init; }

    /// <summary>Its canonical JSON, exactly as hashed.</summary>
    public required string Record { get; init; }
}

/// <summary>An RFC 6962 inclusion proof.</summary>
public sealed record ProofInclusion
{
    /// <summary>The leaf's index in the checkpoint's interval.</summary>
    public required long LeafIndex { get; init; }

    /// <summary>Leaves in the interval.</summary>
    public required long TreeSize { get; init; }

    /// <summary>Sibling hashes, leaf to root, hex.</summary>
    public required IReadOnlyList<string> Path { get; init; }
}

/// <summary>A signed checkpoint as the proof carries it.</summary>
public sealed record ProofCheckpoint
{
    /// <summary>The checkpoint's canonical JSON, exactly the signed bytes.</summary>
    public required string Checkpoint { get; init; }

    /// <summary>Base64 ECDSA P-256 signature (r || s).</summary>
    public required string Signature { get; init; }
}

/// <summary>The policy version a proof's entry names.</summary>
public sealed record ProofPolicy
{
    /// <summary>Version number.</summary>
    public required long Number { get; init; }

    /// <summary>SHA-256 of <see cref="Canonical"/>.</summary>
    public required string Sha256 { get; init; }

    /// <summary>The version's canonical JSON document.</summary>
    public required string Canonical { get; init; }
}

/// <summary>Builds proof bundles from a store.</summary>
public static class LedgerProofs
{
    /// <summary>
    /// The proof for <paramref name="requestId"/>; throws <see cref="InvalidOperationException"/> with a clear message when
    /// there is no such request or it is not sealed by a checkpoint yet.
    /// </summary>
    public static async Task<ProofBundle> BuildAsync<TStore>(TStore store, string requestId, CancellationToken cancellationToken = default)
        where TStore : ILedgerStore, IEvidenceStore, IPolicyStore
    {
        StoredRecord? entry = null;
        await foreach (var row in store.QueryAsync(new LedgerQuery { RequestId = requestId, Limit = 1 }, cancellationToken))
        {
            entry = row;
        }

        if (entry is null)
        {
            throw new InvalidOperationException($"no request {requestId} in this ledger");
        }

        var checkpoints = await store.GetCheckpointsAsync(entry.ChainId, cancellationToken);
        var signed = checkpoints.FirstOrDefault(c => c.Checkpoint.FromSeq <= entry.Seq && entry.Seq <= c.Checkpoint.ToSeq)
            ?? throw new InvalidOperationException(
                $"request {requestId} (chain {entry.ChainId}, seq {entry.Seq}) is not sealed by a checkpoint yet; a running gateway seals within seconds, a stopped one on shutdown");
        var checkpoint = signed.Checkpoint;
        var leaves = new List<byte[]>((int)checkpoint.Count);
        await foreach (var (_, hash) in store.ReadChainHashesAsync(entry.ChainId, checkpoint.FromSeq, checkpoint.ToSeq, cancellationToken))
        {
            leaves.Add(hash);
        }

        var index = (int)(entry.Seq - checkpoint.FromSeq);
        using var document = JsonDocument.Parse(entry.Json);
        var number = document.RootElement.GetProperty("policy_version").GetInt64();
        var history = await store.GetHistoryAsync(cancellationToken);
        var version = history.FirstOrDefault(v => v.Number == number)
            ?? throw new InvalidOperationException($"policy version {number}, which request {requestId} names, is not in this store");
        return new ProofBundle
        {
            Format = ProofBundle.CurrentFormat,
            RequestId = requestId,
            Entry = new ProofEntry { ChainId = entry.ChainId, Seq = entry.Seq, PrevHash = entry.PrevHash, Hash = entry.Hash, Record = entry.Json },
            Inclusion = new ProofInclusion
            {
                LeafIndex = index,
                TreeSize = leaves.Count,
                Path = [.. MerkleTree.InclusionPath(leaves, index).Select(Convert.ToHexStringLower)],
            },
            Checkpoint = new ProofCheckpoint { Checkpoint = signed.Json, Signature = signed.Signature },
            Policy = new ProofPolicy { Number = version.Number, Sha256 = version.Sha256, Canonical = Policy.PolicyVersion.CanonicalJson(version.Document) },
        };
    }
}
