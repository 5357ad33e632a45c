using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace Custos.Ledger;

/// <summary>
/// A signed seal over one interval of one chain: entries <see cref="FromSeq"/>..<see cref="ToSeq"/>, the hash of the
/// last (<see cref="HeadHash"/>, which commits to every entry before it) and the RFC 6962 Merkle root of their hashes
/// (for small inclusion proofs). Signed with the node's ECDSA P-256 checkpoint key; written to the store and to
/// witnesses outside it.
/// </summary>
/// <remarks>WARNING: the canonical form is a persisted contract (signatures cover it), frozen by golden tests.</remarks>
public sealed record Checkpoint
{
    /// <summary>Format version of the canonical form.</summary>
    public int V { get; init; } = 1;

    /// <summary>The chain (node) it seals.</summary>
    public required string ChainId { get; init; }

    /// <summary>First sequence number of the interval.</summary>
    public required long FromSeq { get; init; }

    /// <summary>Last sequence number of the interval.</summary>
    public required long ToSeq { get; init; }

    /// <summary>Hash of the entry before <see cref="FromSeq"/> (64 zeros at the start of a chain): links checkpoints.</summary>
    public required string PrevHash { get; init; }

    /// <summary>Hash of entry <see cref="ToSeq"/>.</summary>
    public required string HeadHash { get; init; }

    /// <summary>RFC 6962 Merkle root over the entry hashes of the interval, lower-case hex.</summary>
    public required string MerkleRoot { get; init; }

    /// <summary>When the checkpoint was made.</summary>
    public required DateTimeOffset Timestamp { get; init; }

    /// <summary>Timestamp of the last entry sealed.</summary>
    public required DateTimeOffset LastEntryAt { get; init; }

    /// <summary>Which key signed it: the first 16 hex digits of the SHA-256 of its public key (SubjectPublicKeyInfo).</summary>
    public required string KeyId { get; init; }

    /// <summary>Entries sealed.</summary>
    public long Count => ToSeq - FromSeq + 1;

    /// <summary>The bytes the signature covers: compact JSON, fields in this fixed order.</summary>
    public byte[] CanonicalBytes()
    {
        using var buffer = new MemoryStream(512);
        using (var writer = new Utf8JsonWriter(buffer))
        {
            writer.WriteStartObject();
            writer.WriteNumber("v", V);
            writer.WriteString("kind", "checkpoint");
            writer.WriteString("chain_id", ChainId);
            writer.WriteNumber("from_seq", FromSeq);
            writer.WriteNumber("to_seq", ToSeq);
            writer.WriteString("prev_hash", PrevHash);
            writer.WriteString("head_hash", HeadHash);
            writer.WriteString("merkle_root", MerkleRoot);
            writer.WriteString("timestamp", LedgerTime.Format(Timestamp));
            writer.WriteString("last_entry_at", LedgerTime.Format(LastEntryAt));
            writer.WriteString("key_id", KeyId);
            writer.WriteEndObject();
        }

        return buffer.ToArray();
    }

    /// <summary>Reads a checkpoint back from its canonical JSON.</summary>
    /// <exception cref="JsonException">It is not JSON.</exception>
    /// <exception cref="FormatException">It is JSON but not a checkpoint: a field missing or of another type.</exception>
    public static Checkpoint Parse(string json)
    {
        using var document = JsonDocument.Parse(json);
        var root = document.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw new FormatException($"A checkpoint is a JSON object, not {root.ValueKind}.");
        }

        return new Checkpoint
        {
            V = Number(root, "v") is var v and >= 0 and <= int.MaxValue ? (int)v : throw new FormatException("The checkpoint's v is out of range."),
            ChainId = Text(root, "chain_id"),
            FromSeq = Number(root, "from_seq"),
            ToSeq = Number(root, "to_seq"),
            PrevHash = Text(root, "prev_hash"),
            HeadHash = Text(root, "head_hash"),
            MerkleRoot = Text(root, "merkle_root"),
            Timestamp = LedgerTime.Parse(Text(root, "timestamp")),
            LastEntryAt = LedgerTime.Parse(Text(root, "last_entry_at")),
            KeyId = Text(root, "key_id"),
        };
    }

    private static string Text(JsonElement root, string name)
        => root.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.String
            ? value.GetString()!
            : throw new FormatException($"The checkpoint's {name} is missing or not a string.");

    private static long Number(JsonElement root, string name)
        => root.TryGetProperty(name, out var value) && value.ValueKind == JsonValueKind.Number && value.TryGetInt64(out var number)
            ? number
            : throw new FormatException($"The checkpoint's {name} is missing or not a whole number.");
}

/// <summary>A checkpoint as stored and witnessed: its canonical JSON and the base64 signature over it.</summary>
/// <param name="Json">The canonical JSON, exactly the signed bytes as UTF-8.</param>
/// <param name="Signature">ECDSA P-256 / SHA-256 signature, IEEE P1363 (r || s), base64.</param>
public sealed record SignedCheckpoint(string Json, string Signature)
{
    /// <summary>The checkpoint.</summary>
    public Checkpoint Checkpoint => Checkpoint.Parse(Json);

    /// <summary>True when <paramref name="publicKey"/> verifies the signature over the exact JSON bytes.</summary>
    public bool VerifySignature(ECDsa publicKey)
    {
        Span<byte> signature = stackalloc byte[128];
        return Convert.TryFromBase64String(Signature, signature, out var length)
            && publicKey.VerifyData(Encoding.UTF8.GetBytes(Json), signature[..length], HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation);
    }
}

/// <summary>
/// The checkpoint signing key of a data folder: <c>keys/checkpoint.key.pem</c> (PKCS#8, private, mode 0600) and
/// <c>keys/checkpoint.pub.pem</c> (SubjectPublicKeyInfo, to hand to auditors). Made by <c>custos init</c> or the first
/// start of the gateway.
/// </summary>
public sealed class CheckpointKey : IDisposable
{
    private readonly ECDsa _key;

    private CheckpointKey(ECDsa key)
    {
        _key = key;
        KeyId = IdOf(key);
    }

    /// <summary>The key id checkpoints name.</summary>
    public string KeyId { get; }

    /// <summary>The private key file in <paramref name="dataDirectory"/>.</summary>
    public static string PrivatePath(string dataDirectory) => Path.Combine(dataDirectory, "keys", "checkpoint.key.pem");

    /// <summary>The public key file in <paramref name="dataDirectory"/>.</summary>
    public static string PublicPath(string dataDirectory) => Path.Combine(dataDirectory, "keys", "checkpoint.pub.pem");

    /// <summary>
    /// The folder of the public halves of keys the data folder signed with before a rotation
    /// (<c>keys/retired/KEYID.pub.pem</c>), which <c>custos audit verify --data</c> trusts beside the current one.
    /// </summary>
    public static string RetiredDirectory(string dataDirectory) => Path.Combine(dataDirectory, "keys", "retired");

    /// <summary>
    /// The note <c>custos init --rotate-checkpoint-key</c> leaves for the gateway's next start: which key it made, by whom
    /// and when (<see cref="Rotation"/>).
    /// </summary>
    public static string RotationPath(string dataDirectory) => Path.Combine(dataDirectory, "keys", "checkpoint-rotation.json");

    /// <summary>
    /// Retires the folder's key (its public half kept in <see cref="RetiredDirectory"/>, its private half deleted) and
    /// makes a new one, noting the rotation for the gateway's next start, which records it in the ledger. Used when the key
    /// was lost (a checkpoint chain the folder's key did not sign stops the gateway) or may have been exposed.
    /// </summary>
    /// <returns>The retired key's id (null when there was none) and the new key.</returns>
    public static (string? Retired, CheckpointKey Key) Rotate(string dataDirectory, string by, DateTimeOffset now)
    {
        string? retired = null;
        var privatePath = PrivatePath(dataDirectory);
        var publicPath = PublicPath(dataDirectory);
        string? publicPem = null;
        if (File.Exists(privatePath))
        {
            using var old = ReadPrivate(privatePath);
            publicPem = old.ExportSubjectPublicKeyInfoPem();
            retired = IdOf(old);
        }
        else if (File.Exists(publicPath))
        {
            publicPem = File.ReadAllText(publicPath);
            using var old = LoadPublic(publicPath);
            retired = IdOf(old);
        }

        if (retired is not null)
        {
            Directory.CreateDirectory(RetiredDirectory(dataDirectory));
            File.WriteAllText(Path.Combine(RetiredDirectory(dataDirectory), retired + ".pub.pem"), publicPem);
            File.Delete(privatePath);
            File.Delete(publicPath);
        }

        var key = LoadOrCreate(dataDirectory, out _);
        var note = new Rotation(key.KeyId, retired, by, now);
        File.WriteAllText(RotationPath(dataDirectory), JsonSerializer.Serialize(note, RotationJson));
        return (retired, key);
    }

    /// <summary>
    /// Checks, before the gateway starts, that the folder's key is the one that signed the chain's last checkpoint
    /// (<paramref name="lastSealed"/>; null when nothing was sealed yet). A key made afresh because the file was missing,
    /// or another key put in its place, would sign checkpoints no one could check against the ones before: so the gateway
    /// does not start on it, unless <c>custos init --rotate-checkpoint-key</c> made it.
    /// </summary>
    /// <returns>The rotation that made the folder's key, for the ledger to record; null when the key signed the last checkpoint.</returns>
    /// <exception cref="InvalidDataException">The key is missing or another one, and no rotation made it.</exception>
    public static Rotation? CheckSigned(string dataDirectory, Checkpoint? lastSealed, string chainId)
    {
        if (lastSealed is null)
        {
            return null;
        }

        var privatePath = PrivatePath(dataDirectory);
        string? current = null;
        if (File.Exists(privatePath))
        {
            using var key = ReadPrivate(privatePath);
            current = IdOf(key);
        }

        if (current == lastSealed.KeyId)
        {
            return null;
        }

        if (current is not null && ReadRotation(dataDirectory) is { } rotation && rotation.KeyId == current)
        {
            return rotation;
        }

        var what = current is null ? $"{privatePath} is missing" : $"{privatePath} is key {current}";
        throw new InvalidDataException(
            $"The ledger's checkpoints of chain {chainId} are signed by key {lastSealed.KeyId} (up to entry {lastSealed.ToSeq}), but {what}: " +
            $"checkpoints signed from now on could not be checked against the ones before. Restore key {lastSealed.KeyId} from a backup; " +
            $"or, if it is lost or exposed, run custos init --data {dataDirectory} --rotate-checkpoint-key to sign with a new key from now on " +
            "(the rotation is recorded in the ledger at the next start).");
    }

    private static Rotation? ReadRotation(string dataDirectory)
    {
        try
        {
            return JsonSerializer.Deserialize<Rotation>(File.ReadAllText(RotationPath(dataDirectory)), RotationJson);
        }
        catch (Exception ex) when (ex is IOException or JsonException)
        {
            return null;
        }
    }

    private static readonly JsonSerializerOptions RotationJson = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    /// <summary>A rotation of a data folder's checkpoint key: the new key, the one it retired, by whom and when.</summary>
    public sealed record Rotation(string KeyId, string? Retired, string By, DateTimeOffset At);

    /// <summary>Loads the folder's key, creating it (and its public half) when there is none.</summary>
    public static CheckpointKey LoadOrCreate(string dataDirectory, out bool created)
    {
        var privatePath = PrivatePath(dataDirectory);
        created = false;
        if (!File.Exists(privatePath))
        {
            Directory.CreateDirectory(Path.GetDirectoryName(privatePath)!);
            using var fresh = ECDsa.Create(ECCurve.NamedCurves.nistP256);
            var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
            if (!OperatingSystem.IsWindows())
            {
                options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            }

            using (var writer = new StreamWriter(privatePath, Encoding.ASCII, options))
            {
                writer.Write(fresh.ExportPkcs8PrivateKeyPem());
            }

            File.WriteAllText(PublicPath(dataDirectory), fresh.ExportSubjectPublicKeyInfoPem());
            created = true;
        }

        return new CheckpointKey(ReadPrivate(privatePath));
    }

    private static ECDsa ReadPrivate(string privatePath)
    {
        var key = ECDsa.Create();
        key.ImportFromPem(File.ReadAllText(privatePath));
        return key;
    }

    /// <summary>
    /// Reads a public key (PEM) for verification. A private key is refused: it would verify, but whoever holds it can sign
    /// checkpoints, so it belongs to the gateway, and auditors are given the public one.
    /// </summary>
    public static ECDsa LoadPublic(string pemPath)
    {
        var pem = File.ReadAllText(pemPath);
        if (pem.Contains("PRIVATE KEY-----", StringComparison.Ordinal))
        {
            throw new InvalidDataException($"{pemPath} holds a private key, which signs checkpoints and should stay with the gateway: verify with the public key, "
                + "keys/checkpoint.pub.pem, which is what auditors are given.");
        }

        var key = ECDsa.Create();
        try
        {
            key.ImportFromPem(pem);
            return key;
        }
        catch (Exception ex) when (ex is ArgumentException or CryptographicException)
        {
            // Empty, not PEM, or another algorithm's key (RSA): each is a file that cannot check a checkpoint, not a crash.
            key.Dispose();
            throw new InvalidDataException($"{pemPath} holds no ECDSA public key in PEM, as the gateway writes to keys/checkpoint.pub.pem ({ex.Message.TrimEnd('.')}).", ex);
        }
    }

    /// <summary>The key id of <paramref name="key"/>.</summary>
    public static string IdOf(ECDsa key) => Convert.ToHexStringLower(SHA256.HashData(key.ExportSubjectPublicKeyInfo()))[..16];

    /// <summary>Signs <paramref name="checkpoint"/>.</summary>
    public SignedCheckpoint Sign(Checkpoint checkpoint)
    {
        var bytes = checkpoint.CanonicalBytes();
        var signature = _key.SignData(bytes, HashAlgorithmName.SHA256, DSASignatureFormat.IeeeP1363FixedFieldConcatenation);
        return new SignedCheckpoint(Encoding.UTF8.GetString(bytes), Convert.ToBase64String(signature));
    }

    /// <inheritdoc/>
    public void Dispose() => _key.Dispose();
}
