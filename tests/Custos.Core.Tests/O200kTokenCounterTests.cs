using System.Text;
using Custos.Metering;
using Microsoft.ML.Tokenizers;

namespace Custos.Core.Tests;

/// <summary>
/// The compact o200k counter gives the same counts as Microsoft.ML.Tokenizers' tiktoken implementation, over prose,
/// code, JSON, many scripts, emoji, digits, whitespace runs, contractions, special tokens, long pieces, and thousands of
/// random strings.
/// </summary>
public sealed class O200kTokenCounterTests
{
    private static readonly Lazy<Tokenizer> Reference = new(() => TiktokenTokenizer.CreateForEncoding("o200k_base"));

    public static TheoryData<string> Samples() =>
    [
        "Hello, Custos",
        "The quick brown fox jumps over the lazy dog.",
        "I'LL tell you what we're doing: they've said it's John's and I'd say you'll see. DON'T!",
        "def f(x):\n    return {\"a\": [1, 2, 3], 'b': x ** 2}  # comment\n\n\n\tpass\n",
        "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],\"max_tokens\":16}",
        "1234567890 3.14159 1e-9 0x7fffffff 2026-11-29T03:14:15Z $12,345.67 100%",
        "    leading spaces and trailing spaces      ",
        "\n\n\n\r\n\r\n  \t \t\n",
        "日本語のテキストと中文文本，还有한국어 텍스트.",
        "العربية نص مع علامات التشكيل: مَرْحَبًا",
        "Ελληνικά, русский текст, עברית, हिन्दी में पाठ, ไทย",
        "Emoji 😀👍🏽👨‍👩‍👧‍👦 and flags 🇩🇪🇺🇸, symbols ∑∫√ and ligatures ﬁ ﬂ",
        "e\u0301 combining marks: a\u0308o\u0308u\u0308 Zalgo: Z\u0351\u0337a\u0354l\u0301g\u0315o",
        "<|endoftext|>",
        "before<|endoftext|>after <|endofprompt|> end <|notspecial|>",
        "https://example.com/path/to/page?query=1&b=2#frag and email dana@acme.test",
        "CamelCaseIdentifiersLikeThisOne and snake_case_ones and SCREAMING_CASE",
        new string('a', 3000),
        new string(' ', 2000) + "x",
        string.Concat(Enumerable.Repeat("abc123!? ", 400)),
        string.Concat(Enumerable.Repeat("=-", 700)),
    ];

    [Theory]
    [MemberData(nameof(Samples))]
    public void CountsLikeTheReferenceTokenizer(string text)
        => Assert.Equal(Reference.Value.CountTokens(text), O200kTokenCounter.Shared.Count(text));

    [Fact]
    public void CountsLikeTheReferenceTokenizer_OnRandomText()
    {
        // Characters from many classes the pre-tokeniser tells apart, in random runs (fixed seed: the same strings each run).
        const string alphabet = "abcXYZ éÉßñ 日本中文 한국 абвГД αβγ 0123456789 .,;:!?'\"()[]{}<>/\\|-_=+*&^%$#@~` \t\n\r 😀👍 \u0301\u0308 'sS'tT'RE'vE'mM'LL'd";
        var runes = alphabet.EnumerateRunes().ToArray();
        var random = new Random(4242);
        var text = new StringBuilder();
        for (var i = 0; i < 3000; i++)
        {
            text.Clear();
            var length = random.Next(0, 120);
            for (var j = 0; j < length; j++)
            {
                text.Append(runes[random.Next(runes.Length)].ToString());
            }

            var sample = text.ToString();
            Assert.True(Reference.Value.CountTokens(sample) == O200kTokenCounter.Shared.Count(sample), $"sample {i}: '{sample}'");
        }
    }

    [Fact]
    public void CountsLikeTheReferenceTokenizer_OnTheCassettes()
    {
        var texts = Directory.EnumerateFiles(Path.Combine(AppContext.BaseDirectory, "Cassettes"), "*", SearchOption.AllDirectories).Select(File.ReadAllText).ToList();
        Assert.NotEmpty(texts);
        foreach (var text in texts)
        {
            Assert.Equal(Reference.Value.CountTokens(text), O200kTokenCounter.Shared.Count(text));
        }
    }

    [Fact]
    public void MergingWithTheHeap_CountsLikeTheScan()
    {
        // Pieces longer than ScanMergeMaxBytes merge with a heap; the scan (checked against the reference above) is its
        // reference here, over pieces of one to many letters, digits, spaces, multi-byte characters and punctuation.
        var counter = O200kTokenCounter.Shared;
        string[] alphabets = ["a", "ab", "abc", " e", "the ", "0123456789", "a\u00e9\u4e2d ", "xyzXYZ!?", "\n\t "];
        var random = new Random(777); // fixed: the same pieces every run
        var text = new StringBuilder();
        for (var i = 0; i < 450; i++)
        {
            var alphabet = alphabets[i % alphabets.Length];
            text.Clear();
            var length = random.Next(2, 700);
            for (var j = 0; j < length; j++)
            {
                text.Append(alphabet[random.Next(alphabet.Length)]);
            }

            var piece = Encoding.UTF8.GetBytes(text.ToString());
            Assert.True(counter.CountPieceByScan(piece) == counter.CountPieceByHeap(piece), $"'{text}'");
        }
    }

    [Fact]
    public void CountsAPieceOfAMegabyte()
    {
        // One piece as long as a body may be (a run of one letter): the scan's merge took 0.2 s for 30 KB and grew with
        // the square, hours for this; the heap's takes a fraction of a second. 'aaaaaaaa' is one token, as the
        // reference counts 375 for 3,000 (above).
        Assert.Equal(125_000, O200kTokenCounter.Shared.Count(new string('a', 1_000_000)));
    }
}
