using System.Text;
using Custos.Controls;
using Custos.Policy;

namespace Custos.Core.Tests;

/// <summary>
/// Each detector skips to where its first match could begin (or skips the regex when none can). That must never lose a
/// match: over random texts made of near-misses and real findings, <see cref="PromptDetectors.Find"/> reports exactly the
/// confirmed matches of the detector's regex run over the whole text.
/// </summary>
public sealed class PromptDetectorStartTests
{
    private static readonly string[] Fragments =
    [
        // secrets, and their openings alone
        "sk-", "sk-proj-abcdefghijklmnop1234", "sk-ant-ABCDEFGHIJKLMNOPQRST", "ask-me", "csk_", "csk_" + new string('a', 38), "cak_" + new string('Z', 38),
        "AKIA", "AKIAABCDEFGHIJKLMNOP", "ghp_" + new string('x', 36), "gho_", "xoxb-123456789012", "xoxq-123456789012", "AIza" + new string('k', 35),
        "-----BEGIN PRIVATE KEY-----", "-----BEGIN RSA PRIVATE KEY-----", "-----BEGIN ", "eyJhbGciOiJIUzI1.eyJzdWIiOiIxMjM0.SflKxwRJSMeKKF2QT4", "eyJ",
        // e-mail addresses, and @ without one
        "dana@acme.test", "a.b+c@x-y.example.org", "@", "@@", "me@", "@x.io", "first.last%tag@", "x@y",
        // cards, SSNs, IBANs, digits (ASCII and not)
        "4111 1111 1111 1111", "4111-1111-1111-1112", "4222222222222", "5500-0000-0000-0004", "4111111111111111", "5500 0000 0000 0004", "123-45-6789", "000-12-3456",
        "DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "0", "12", "2026", "\u0663\u0664\u0665", "\uFF11\uFF12",
        // everything else
        "a", "Z", "word", " ", "  ", "\n", "\t", ".", "-", "_", "%", "+", "é", "中", "\uD83D\uDE00",
    ];

    [Theory]
    [InlineData(PromptDetector.Secrets)]
    [InlineData(PromptDetector.Email)]
    [InlineData(PromptDetector.PaymentCard)]
    [InlineData(PromptDetector.UsSsn)]
    [InlineData(PromptDetector.Iban)]
    public void Find_ReportsWhatTheWholeTextRegexConfirms(PromptDetector detector)
    {
        var random = new Random(1129 + (int)detector); // fixed: the same texts every run
        var text = new StringBuilder();
        var found = 0;
        for (var i = 0; i < 4_000; i++)
        {
            text.Clear();
            var count = random.Next(0, 12);
            for (var j = 0; j < count; j++)
            {
                text.Append(Fragments[random.Next(Fragments.Length)]);
            }

            var sample = text.ToString();
            var expected = new List<(int Index, int Length)>();
            foreach (var match in PromptDetectors.Pattern(detector).EnumerateMatches(sample))
            {
                if (PromptDetectors.Confirms(detector, sample.AsSpan(match.Index, match.Length)))
                {
                    expected.Add((match.Index, match.Length));
                }
            }

            var actual = new List<(int Index, int Length)>();
            Assert.Equal(expected.Count > 0, PromptDetectors.Find(detector, sample, actual));
            Assert.True(expected.SequenceEqual(actual), $"{detector} in '{sample}': expected [{string.Join(", ", expected)}], found [{string.Join(", ", actual)}]");
            Assert.Equal(expected.Count > 0, PromptDetectors.Find(detector, sample, spans: null));
            found += expected.Count;
        }

        Assert.True(found >= 50, $"only {found} matches in the random texts: the test would prove little");
    }
}
