using System.Buffers;
using System.Text.RegularExpressions;
using Custos.Policy;

namespace Custos.Controls;

/// <summary>
/// The built-in prompt detectors. Each finds candidate spans with a regular expression that runs in time linear in the
/// prompt and, where the format has one, confirms them with a checksum (Luhn for cards, mod-97 for IBANs), so digits
/// that merely look like a card are not reported.
/// </summary>
/// <remarks>
/// Linear either by the engine or by the pattern. The e-mail pattern needs the engine
/// (<see cref="RegexOptions.NonBacktracking"/>): its domain loop can give back the dot that follows it, and on the
/// backtracking engine 300 KB of <c>a.b-c.d_e.</c> took 2.8 s. The others run on the generated backtracking engine,
/// which keeps no state: in the secrets pattern every loop ends the match or meets a character outside its set, so it
/// never gives characters back; the card and IBAN loops are bounded (at most 19 and 7 repetitions) and the SSN pattern
/// has fixed lengths, so each start costs a constant. None has a match timeout: a linear scan of a large prompt is
/// slow, not stuck, and a timeout would refuse it (the SSN pattern had one of 100 ms; 4 MB of digits takes 22 ms on a
/// quiet machine, and a larger body or a busy machine would pass it). The non-backtracking engine kept an automaton per
/// pattern, grown with the prompts it saw: 4.6 MB for the secrets pattern, 0.9 MB for cards and 0.5 MB for IBANs.
/// <c>PromptRestrictionTests</c> runs each detector over adversarial prompts.
/// </remarks>
public static partial class PromptDetectors
{
    /// <summary>
    /// Finds the matches of <paramref name="detector"/> in <paramref name="text"/>, adding them to
    /// <paramref name="spans"/> as (index, length) when given; without it, stops at the first. Returns whether any
    /// matched. Allocates nothing of its own: matches are enumerated as spans over <paramref name="text"/>.
    /// </summary>
    public static bool Find(PromptDetector detector, ReadOnlySpan<char> text, List<(int Index, int Length)>? spans)
    {
        var regex = Pattern(detector);
        var start = EarliestStart(detector, text);
        if (start < 0)
        {
            return false;
        }

        var matched = false;
        foreach (var match in regex.EnumerateMatches(text, start))
        {
            if (!Confirms(detector, text.Slice(match.Index, match.Length)))
            {
                continue;
            }

            matched = true;
            if (spans is null)
            {
                return true;
            }

            spans.Add((match.Index, match.Length));
        }

        return matched;
    }

    /// <summary>The regular expression that finds the candidates of <paramref name="detector"/>.</summary>
    internal static Regex Pattern(PromptDetector detector) => detector switch
    {
        PromptDetector.Secrets => Secrets(),
        PromptDetector.PaymentCard => Cards(),
        PromptDetector.Email => Email(),
        PromptDetector.Iban => Iban(),
        PromptDetector.UsSsn => Ssn(),
        _ => throw new ArgumentOutOfRangeException(nameof(detector)),
    };

    /// <summary>Whether a candidate of <paramref name="detector"/> passes its checksum (cards, IBANs; the rest have none).</summary>
    internal static bool Confirms(PromptDetector detector, ReadOnlySpan<char> candidate) => detector switch
    {
        PromptDetector.PaymentCard => IsLuhnCard(candidate),
        PromptDetector.Iban => IsValidIban(candidate),
        _ => true,
    };

    /// <summary>
    /// Where in <paramref name="text"/> the first match of <paramref name="detector"/> could begin, found with a vectorised
    /// search for what every match must contain; -1 when none can. Most prompts contain none of it, and the regex then
    /// does not run (it scanned 12 KB of prose in 27 µs for secrets and 48 µs for e-mail addresses; the search takes
    /// under 2). The regex runs from there over the whole text, so <c>\b</c> still sees the character before.
    /// </summary>
    private static int EarliestStart(PromptDetector detector, ReadOnlySpan<char> text)
    {
        switch (detector)
        {
            case PromptDetector.Secrets:
                // Every alternative of the pattern opens with one of these, case and all.
                return text.IndexOfAny(SecretOpenings);
            case PromptDetector.Email:
                // An address has an @; the first match cannot begin before the run of local-part characters that ends
                // at the first @ (an @ is not one of them, so a match around a later @ begins after the first).
                var at = text.IndexOf('@');
                if (at < 0)
                {
                    return -1;
                }

                var local = text[..at].LastIndexOfAnyExcept(LocalPart);
                return local + 1;
            case PromptDetector.PaymentCard:
                return FirstLongDigitChain(text, CardMinDigits);
            case PromptDetector.UsSsn:
                // SSNs begin with a digit: \d is any Unicode decimal digit, so an ASCII digit or anything beyond ASCII
                // may be the first.
                return text.IndexOfAnyExcept(AsciiButDigits);
            default:
                return 0;
        }
    }

    /// <summary>Digits in the shortest card number the pattern takes: <c>(?:\d[ \-]?){12,18}\d</c>.</summary>
    private const int CardMinDigits = 13;

    /// <summary>
    /// The start of the first chain of at least <paramref name="minDigits"/> digits, each separated from the next by at
    /// most one space or hyphen, or -1. A card's match lies inside one such chain, so chains shorter than a card (dates,
    /// amounts, order numbers: the digits of most prompts) are skipped without running the regex over them.
    /// </summary>
    private static int FirstLongDigitChain(ReadOnlySpan<char> text, int minDigits)
    {
        var at = 0;
        while (at < text.Length)
        {
            var found = text[at..].IndexOfAnyExcept(AsciiButDigits); // a digit, or a character beyond ASCII that may be one
            if (found < 0)
            {
                return -1;
            }

            var start = at + found;
            if (!char.IsDigit(text[start]))
            {
                at = start + 1;
                continue;
            }

            var digits = 1;
            var end = start + 1;
            while (end < text.Length)
            {
                if (char.IsDigit(text[end]))
                {
                    digits++;
                    end++;
                }
                else if (text[end] is ' ' or '-' && end + 1 < text.Length && char.IsDigit(text[end + 1]))
                {
                    end++;
                }
                else
                {
                    break;
                }
            }

            if (digits >= minDigits)
            {
                return start;
            }

            at = end;
        }

        return -1;
    }

    private static readonly SearchValues<string> SecretOpenings = SearchValues.Create(
        ["sk-", "csk_", "cak_", "AKIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "xoxa-", "xoxb-", "xoxp-", "xoxr-", "AIza", "-----BEGIN ", "eyJ"],
        StringComparison.Ordinal);

    private static readonly SearchValues<char> LocalPart = SearchValues.Create("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-");

    private static readonly SearchValues<char> AsciiButDigits = SearchValues.Create(
        string.Concat(Enumerable.Range(0, 128).Select(c => (char)c).Where(c => c is < '0' or > '9')));

    /// <summary>Luhn check over the digits of <paramref name="candidate"/> (13 to 19 of them).</summary>
    public static bool IsLuhnCard(ReadOnlySpan<char> candidate)
    {
        Span<int> digits = stackalloc int[19];
        var count = 0;
        foreach (var c in candidate)
        {
            if (char.IsAsciiDigit(c))
            {
                if (count == 19)
                {
                    return false;
                }

                digits[count++] = c - '0';
            }
        }

        if (count < 13)
        {
            return false;
        }

        var sum = 0;
        for (var i = 0; i < count; i++)
        {
            var d = digits[count - 1 - i];
            if (i % 2 == 1)
            {
                d *= 2;
                if (d > 9)
                {
                    d -= 9;
                }
            }

            sum += d;
        }

        return sum % 10 == 0;
    }

    /// <summary>ISO 13616 mod-97 check: the first four characters moved to the end, spaces ignored, letters as 10–35.</summary>
    public static bool IsValidIban(ReadOnlySpan<char> candidate)
    {
        var length = candidate.Length - candidate.Count(' ');
        if (length is < 15 or > 34)
        {
            return false;
        }

        Span<char> compact = stackalloc char[34];
        var n = 0;
        foreach (var c in candidate)
        {
            if (c != ' ')
            {
                compact[n++] = char.ToUpperInvariant(c);
            }
        }

        var remainder = 0;
        for (var i = 0; i < n; i++)
        {
            var c = compact[(i + 4) % n];
            var value = char.IsAsciiDigit(c) ? c - '0' : char.IsAsciiLetterUpper(c) ? c - 'A' + 10 : -1;
            if (value < 0)
            {
                return false;
            }

            remainder = value >= 10 ? ((remainder * 100) + value) % 97 : ((remainder * 10) + value) % 97;
        }

        return remainder == 1;
    }

    // Provider and cloud keys, tokens and private key blocks. Deliberately specific: a detector that fires on
    // every long word would make redaction useless.
    [GeneratedRegex(@"(?:\bsk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_\-]{16,}|\b(?:csk|cak)_[A-Za-z0-9]{38}\b|\bAKIA[0-9A-Z]{16}\b|\bgh[pousr]_[A-Za-z0-9]{36}\b|\bxox[abpr]-[A-Za-z0-9\-]{10,}|\bAIza[0-9A-Za-z_\-]{35}\b|-----BEGIN (?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----|\beyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,})", RegexOptions.CultureInvariant)]
    private static partial Regex Secrets();

    [GeneratedRegex(@"\b(?:\d[ \-]?){12,18}\d\b", RegexOptions.CultureInvariant)]
    private static partial Regex Cards();

    [GeneratedRegex(@"\b[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}\b", RegexOptions.NonBacktracking | RegexOptions.CultureInvariant)]
    private static partial Regex Email();

    [GeneratedRegex(@"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b", RegexOptions.CultureInvariant)]
    private static partial Regex Iban();

    [GeneratedRegex(@"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b", RegexOptions.CultureInvariant)]
    private static partial Regex Ssn();
}
