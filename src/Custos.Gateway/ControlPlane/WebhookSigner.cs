using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Custos.Gateway.ControlPlane;

/// <summary>
/// Signs every webhook the gateway sends (owner notifications, alerts, witness checkpoints) with HMAC-SHA256, so a
/// receiver can tell a message really came from this gateway and was not replayed: headers <c>X-Custos-Timestamp</c>
/// (Unix seconds) and <c>X-Custos-Signature: v1=hex(HMAC-SHA256(secret, timestamp + "." + body))</c>. The secret is
/// <c>CUSTOS_WEBHOOK_SECRET</c> when set, else <c>DIR/keys/webhook.secret</c>, made on first start (mode 0600).
/// </summary>
public sealed class WebhookSigner
{
    /// <summary>The environment variable that overrides the secret file.</summary>
    public const string SecretVariable = "CUSTOS_WEBHOOK_SECRET";

    /// <summary>The timestamp header.</summary>
    public const string TimestampHeader = "X-Custos-Timestamp";

    /// <summary>The signature header.</summary>
    public const string SignatureHeader = "X-Custos-Signature";

    private readonly byte[] _secret;

    /// <summary>Signs with <paramref name="secret"/>.</summary>
    public WebhookSigner(byte[] secret)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(secret.Length, 16);
        _secret = secret;
    }

    /// <summary>Where the secret is kept in a data folder.</summary>
    public static string SecretPath(string dataDirectory) => Path.Combine(dataDirectory, "keys", "webhook.secret");

    /// <summary>The secret from <c>CUSTOS_WEBHOOK_SECRET</c>, else from the data folder (created when missing).</summary>
    public static WebhookSigner LoadOrCreate(string dataDirectory, Func<string, string?> environment, out bool created)
    {
        created = false;
        if (environment(SecretVariable) is { Length: > 0 } configured)
        {
            return new WebhookSigner(Encoding.UTF8.GetBytes(configured.PadRight(16, '=')));
        }

        var path = SecretPath(dataDirectory);
        if (!File.Exists(path))
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
            if (!OperatingSystem.IsWindows())
            {
                options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            }

            using (var writer = new StreamWriter(path, Encoding.ASCII, options))
            {
                writer.Write("whsec_" + Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(32)));
            }

            created = true;
        }

        return new WebhookSigner(Encoding.UTF8.GetBytes(File.ReadAllText(path).Trim()));
    }

    /// <summary>The <c>X-Custos-Signature</c> value of <paramref name="body"/> sent at <paramref name="timestamp"/>.</summary>
    public string Sign(long timestamp, ReadOnlySpan<byte> body)
    {
        var prefix = Encoding.ASCII.GetBytes(timestamp.ToString(CultureInfo.InvariantCulture) + ".");
        using var hmac = IncrementalHash.CreateHMAC(HashAlgorithmName.SHA256, _secret);
        hmac.AppendData(prefix);
        hmac.AppendData(body);
        return "v1=" + Convert.ToHexStringLower(hmac.GetHashAndReset());
    }

    /// <summary>True when <paramref name="signature"/> is this secret's signature of <paramref name="body"/> at <paramref name="timestamp"/>.</summary>
    public bool Verify(long timestamp, ReadOnlySpan<byte> body, string signature)
        => CryptographicOperations.FixedTimeEquals(Encoding.ASCII.GetBytes(Sign(timestamp, body)), Encoding.ASCII.GetBytes(signature));
}
