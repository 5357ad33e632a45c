using Custos.Policy;

namespace Custos.Controls;

/// <summary>
/// Text a caller chose that the ledger keeps for good: the model asked for, the path, the identifying headers. Kept as
/// sent, but for two things. A secret in it (a Custos key, a provider's key, a private key or a token, as the
/// <c>secrets</c> detector finds them) is replaced by <see cref="SecretMark"/>: the ledger cannot be cleaned afterwards,
/// and keys are never stored. And it is cut at <see cref="MaxLength"/> characters: a megabyte named as a model would
/// otherwise be a megabyte of every copy of the ledger, and of the error that echoes it.
/// </summary>
public static class RecordedText
{
    /// <summary>The most characters of one such text that are kept; longer ones end in an ellipsis.</summary>
    public const int MaxLength = 256;

    /// <summary>What stands in the ledger for a secret that was sent.</summary>
    public const string SecretMark = "[secret removed]";

    /// <summary>
    /// Control characters (C0, DEL, C1), and the bidirectional overrides and isolates that reorder how a terminal or a
    /// page shows the text around them.
    /// </summary>
    private static readonly System.Buffers.SearchValues<char> Unprintable = System.Buffers.SearchValues.Create(
        [.. Enumerable.Range(0, 0x20).Select(c => (char)c), .. Enumerable.Range(0x7F, 0x21).Select(c => (char)c),
            '\u202A', '\u202B', '\u202C', '\u202D', '\u202E', '\u2066', '\u2067', '\u2068', '\u2069']);

    /// <summary>Where the first character of <paramref name="text"/> is that no one should find in a name or an id they read (see <see cref="Unprintable"/>); -1 when none is.</summary>
    public static int IndexOfUnprintable(ReadOnlySpan<char> text) => text.IndexOfAny(Unprintable);

    /// <summary>Whether <paramref name="c"/> is one of the characters <see cref="IndexOfUnprintable"/> finds.</summary>
    public static bool IsUnprintable(char c) => Unprintable.Contains(c);

    /// <summary>
    /// <paramref name="text"/> as the ledger keeps it: the same instance when there is nothing to remove or cut (the
    /// common case, found with one vectorised search).
    /// </summary>
    public static string? Of(string? text)
    {
        if (text is null)
        {
            return null;
        }

        List<(int Index, int Length)>? secrets = null;
        if (PromptDetectors.Find(PromptDetector.Secrets, text, null))
        {
            secrets = [];
            PromptDetectors.Find(PromptDetector.Secrets, text, secrets);
        }

        if (secrets is null && text.Length <= MaxLength)
        {
            return text;
        }

        var kept = text;
        if (secrets is not null)
        {
            var builder = new System.Text.StringBuilder(text.Length);
            var at = 0;
            foreach (var (index, length) in secrets)
            {
                builder.Append(text, at, index - at).Append(SecretMark);
                at = index + length;
            }

            kept = builder.Append(text, at, text.Length - at).ToString();
        }

        if (kept.Length <= MaxLength)
        {
            return kept;
        }

        var cut = char.IsHighSurrogate(kept[MaxLength - 2]) ? MaxLength - 2 : MaxLength - 1; // never half a character
        return string.Concat(kept.AsSpan(0, cut), "…");
    }
}
