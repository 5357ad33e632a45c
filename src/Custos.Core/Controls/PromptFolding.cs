using System.Globalization;
using System.Text;

namespace Custos.Controls;

/// <summary>
/// The text a model reads in a prompt string, as the prompt rules should read it: characters that show nothing or show as
/// another taken out or replaced, one for one or by nothing, so that a key or a card number cannot hide behind them.
/// </summary>
/// <remarks>
/// A zero-width space inside <c>AKIAIOSFODNN7EXAMPLE</c>, full-width letters (<c>ＡＫＩＡ…</c>), a soft hyphen, a
/// Unicode tag character, a card number in full-width or Arabic-Indic digits or with no-break spaces: the model reads the
/// key or the number, and the detectors, which read ASCII, did not. The folded text:
/// <list type="bullet">
/// <item>drops format characters (Unicode Cf: zero-width spaces and joiners, the soft hyphen, bidirectional marks, the
/// byte order mark, tag characters) and combining marks (Mn, Me: accents, variation selectors);</item>
/// <item>reads full-width ASCII (U+FF01 to U+FF5E) as ASCII, any decimal digit as its ASCII digit, any space separator
/// as a space, the Unicode hyphens and minus signs as <c>-</c>, and the Greek and Cyrillic letters drawn as Latin ones
/// (<c>А</c>, <c>Α</c>, <c>о</c>, …) as those.</item>
/// </list>
/// It is for reading only: what goes upstream is the text as sent, or with the matches found in either reading redacted.
/// Only a string with a character beyond ASCII is folded, so an ASCII prompt costs one vectorised search.
/// </remarks>
public static class PromptFolding
{
    /// <summary>Whether <paramref name="text"/> may fold to something else: it has a character beyond ASCII.</summary>
    public static bool MayFold(ReadOnlySpan<char> text) => !Ascii.IsValid(text); // not ContainsAnyExceptInRange: 100-200 B a call, the allocation budget test found

    /// <summary>
    /// Folds <paramref name="text"/> into <paramref name="folded"/> (at least as long), writing for each folded character
    /// the index in <paramref name="text"/> it was read from into <paramref name="map"/> (as long). Returns the folded
    /// length, or -1 when folding changed nothing.
    /// </summary>
    public static int Fold(ReadOnlySpan<char> text, Span<char> folded, Span<int> map)
    {
        var length = 0;
        var changed = false;
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            if (c < '\u0080')
            {
                map[length] = i;
                folded[length++] = c;
                continue;
            }

            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1]))
            {
                var rune = new Rune(c, text[i + 1]);
                if (Rune.GetUnicodeCategory(rune) is UnicodeCategory.Format or UnicodeCategory.NonSpacingMark or UnicodeCategory.EnclosingMark)
                {
                    changed = true; // a tag character, a supplementary variation selector: shows nothing
                }
                else if (Rune.IsDigit(rune))
                {
                    changed = true;
                    map[length] = i;
                    folded[length++] = (char)('0' + Rune.GetNumericValue(rune));
                }
                else
                {
                    map[length] = i;
                    folded[length++] = c;
                    map[length] = i + 1;
                    folded[length++] = text[i + 1];
                }

                i++;
                continue;
            }

            var read = Read(c);
            if (read != c)
            {
                changed = true;
            }

            if (read != '\0')
            {
                map[length] = i;
                folded[length++] = read;
            }
        }

        return changed ? length : -1;
    }

    /// <summary>
    /// Greek and Cyrillic letters that fonts draw as Latin ones, and models read as them (<see cref="LookalikesRead"/>, by
    /// position): the common confusables of Unicode's list among letters a key, a name or a code word is written in.
    /// </summary>
    private const string Lookalikes = "\u0391\u0392\u0395\u0396\u0397\u0399\u039A\u039C\u039D\u039F\u03A1\u03A4\u03A5\u03A7\u03BF"
        + "\u0405\u0406\u0408\u0410\u0412\u0415\u041A\u041C\u041D\u041E\u0420\u0421\u0422\u0423\u0425"
        + "\u0430\u0435\u043E\u0440\u0441\u0443\u0445\u0455\u0456\u0458\u051B\u051D";

    /// <summary>The Latin letter each of <see cref="Lookalikes"/> is read as.</summary>
    private const string LookalikesRead = "ABEZHIKMNOPTYXo" + "SIJABEKMHOPCTYX" + "aeopcyxsijqw";

    /// <summary>What <paramref name="c"/> (beyond ASCII, not a surrogate pair) is read as; <c>'\0'</c> for nothing.</summary>
    private static char Read(char c)
    {
        if (c is >= '\uFF01' and <= '\uFF5E')
        {
            return (char)(c - 0xFEE0); // full-width ASCII
        }

        if (c is >= '\u2010' and <= '\u2015' or '\u2212' or '\uFE58' or '\uFE63' or '\u00AD')
        {
            return c == '\u00AD' ? '\0' : '-'; // hyphens, dashes and minus signs; the soft hyphen shows nothing
        }

        if (c is >= '\u0370' and <= '\u052F' && Lookalikes.IndexOf(c) is var lookalike and >= 0)
        {
            return LookalikesRead[lookalike]; // Greek and Cyrillic letters drawn as Latin ones
        }

        switch (CharUnicodeInfo.GetUnicodeCategory(c))
        {
            case UnicodeCategory.Format or UnicodeCategory.NonSpacingMark or UnicodeCategory.EnclosingMark:
                return '\0';
            case UnicodeCategory.SpaceSeparator:
                return ' ';
            case UnicodeCategory.DecimalDigitNumber:
                return (char)('0' + CharUnicodeInfo.GetDecimalDigitValue(c));
            default:
                return c;
        }
    }
}
