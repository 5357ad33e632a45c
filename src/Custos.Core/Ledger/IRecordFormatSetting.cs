namespace Custos.Ledger;

/// <summary>
/// A store whose format for new ledger records is a setting of the store, shared by every node: the PostgreSQL store,
/// where a database made before record compression keeps its records as JSON until an operator switches it, once no
/// node of an earlier version is left (those cannot read compressed records). The embedded store always compresses.
/// </summary>
public interface IRecordFormatSetting
{
    /// <summary>Records stored as their canonical JSON.</summary>
    public const string Json = "json";

    /// <summary>Records stored compressed against a dictionary of the store (<see cref="RecordCompression"/>).</summary>
    public const string Compressed = "zstd";

    /// <summary>How this node writes new ledger records now: <see cref="Json"/> or <see cref="Compressed"/>.</summary>
    string RecordFormat { get; }

    /// <summary>Whether <paramref name="format"/> is one of the formats: <see cref="Json"/> or <see cref="Compressed"/>.</summary>
    public static bool IsFormat(string? format) => format is Json or Compressed;

    /// <summary>
    /// Sets how every node writes new ledger records: this one from its next batch, the others within a minute. Records
    /// already stored stay as they are; every node of this version reads both formats.
    /// </summary>
    /// <returns>The format the store had before.</returns>
    /// <exception cref="ArgumentException"><paramref name="format"/> is not one of the formats (<see cref="IsFormat"/>).</exception>
    Task<string> SetRecordFormatAsync(string format, CancellationToken cancellationToken = default);
}
