using System.Text;
using System.Text.RegularExpressions;
using Custos.Metering;

namespace Custos.Core.Tests;

/// <summary>
/// The hand-written pre-tokeniser splits text into exactly the pieces of o200k_base's regular expression (the regex is
/// the reference here): same starts, same lengths, over edge cases and many thousands of random strings drawn from every
/// class the pattern tells apart.
/// </summary>
public sealed partial class O200kPiecesTests
{
    // tiktoken_ext/openai_public.py, o200k_base.
    private const string Pattern =
        @"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?" +
        @"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?" +
        @"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>Characters of every class the pattern distinguishes, one or more each.</summary>
    private static readonly string[] Alphabet =
    [
        "a", "z", "s", "t", "e", "r", "v", "m", "l", "d", // lower case, and the contractions' letters
        "A", "Z", "S", "T", "E", "R", "V", "M", "L", "D", // upper case
        "'", "'", "'", "\u2019", // the apostrophe (often), and the typographic one, which is a symbol
        "\u01C5", "\u1F88", // title case (ǅ, ᾈ)
        "\u02B0", "\u3005", // modifier letters (ʰ, 々)
        "\u05D0", "\u4E2D", "\uAC00", "\u0E01", // other letters (א, 中, 가, ก)
        "\u00E9", "\u00DF", "\u0436", "\u0416", "\u03B1", // Latin, Cyrillic, Greek
        "\u0301", "\u0308", "\u0903", "\u20DD", // marks: non-spacing, spacing combining, enclosing
        "0", "5", "9", "\u0663", "\u2160", "\u00B2", "\u00BD", // decimal digits, letter number (Ⅰ), other numbers
        " ", " ", " ", "\t", "\n", "\r", "\v", "\f", "\u0085", "\u00A0", "\u2028", "\u2029", "\u3000", // white space
        ".", ",", "!", "?", "-", "_", "/", "/", "\\", "(", ")", "{", "\"", "#", "@", "$", "+", "=", "<", "|", "~", // punctuation, symbols
        "\u0001", "\u001F", "\u007F", "\u200B", "\u200D", "\uFEFF", // controls and format characters
        "\uD83D\uDE00", "\uD83D\uDC4D", "\uD800", "\uDC00", // surrogate pairs (emoji), lone surrogates
        "\u017F", "\u212A", "\u0130", "\u0131", // characters that case-fold near s, k and i
    ];

    [GeneratedRegex(Pattern, RegexOptions.CultureInvariant)]
    private static partial Regex Reference();

    public static TheoryData<string> EdgeCases() =>
    [
        "",
        " ",
        "  ",
        "a",
        "A",
        "'s",
        "it's",
        "IT'S",
        "they'RE we'Ve I'LL you'd he'M x'T",
        "don't'",
        "'",
        "a'",
        "a'r",
        "a'l",
        "HTTPServer",
        "ABCdef",
        "\u0301abc",
        "\u0301ABC",
        "\u0301\u0301",
        "A\u0301",
        "A\u0301B",
        "\u02B0\u02B0A",
        "A\u01C5",
        "12345678",
        "1\u2160\u00B2\u00BD",
        " hello  world   ",
        "x \n\n  y",
        "\r\n\r\n",
        "  \n  \t",
        "a /\n\r/b",
        " ...\n",
        "\t\t!",
        "\uD83D\uDE00\uD83D\uDE00 \uD83D\uDE00",
        "\uD800a",
        "\u00A0a \u00A0",
        "end   ",
    ];

    [Theory]
    [MemberData(nameof(EdgeCases))]
    public void SplitsLikeThePattern(string text) => AssertSamePieces(text);

    [Fact]
    public void SplitsLikeThePattern_OnRandomText()
    {
        var random = new Random(20261129); // fixed: the same strings every run
        var text = new StringBuilder();
        for (var i = 0; i < 20_000; i++)
        {
            text.Clear();
            var length = random.Next(0, 24);
            for (var j = 0; j < length; j++)
            {
                text.Append(Alphabet[random.Next(Alphabet.Length)]);
            }

            AssertSamePieces(text.ToString());
        }
    }

    [Fact]
    public void SplitsLikeThePattern_OnTheCassettes()
    {
        var texts = Directory.EnumerateFiles(Path.Combine(AppContext.BaseDirectory, "Cassettes"), "*", SearchOption.AllDirectories).Select(File.ReadAllText).ToList();
        Assert.NotEmpty(texts);
        foreach (var text in texts)
        {
            AssertSamePieces(text);
        }
    }

    private static void AssertSamePieces(string text)
    {
        var expected = new List<(int, int)>();
        foreach (var match in Reference().EnumerateMatches(text))
        {
            expected.Add((match.Index, match.Length));
        }

        var actual = new List<(int, int)>();
        for (var start = 0; start < text.Length;)
        {
            var end = O200kPieces.End(text, start);
            if (end == start)
            {
                start++;
                continue;
            }

            actual.Add((start, end - start));
            start = end;
        }

        if (!expected.SequenceEqual(actual))
        {
            var escaped = string.Concat(text.Select(c => c is >= ' ' and < '\u007F' ? c.ToString() : $"\\u{(int)c:X4}"));
            Assert.Fail($"'{escaped}': the pattern gives [{string.Join(", ", expected)}], the pre-tokeniser [{string.Join(", ", actual)}]");
        }
    }
}
