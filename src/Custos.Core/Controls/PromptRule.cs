using System.Text.RegularExpressions;
using Custos.Policy;

namespace Custos.Controls;

/// <summary>A compiled prompt restriction.</summary>
public sealed class PromptRule
{
    private readonly Regex? _regex;
    private readonly PromptDetector? _detector;

    private PromptRule(string id, string scope, PromptAction action, Regex? regex, PromptDetector? detector)
    {
        Id = id;
        Scope = scope;
        ControlScope = scope + ":" + id;
        Passed = new ControlResult("prompt_restriction", ControlScope, ControlDecisions.Pass);
        Redacted = new ControlResult("prompt_restriction", ControlScope, ControlDecisions.Modify) { Detail = "redacted" };
        Action = action;
        _regex = regex;
        _detector = detector;
    }

    /// <summary>The rule id, named in the ledger.</summary>
    public string Id { get; }

    /// <summary><c>tenant</c> or <c>service</c>: where the rule is declared.</summary>
    public string Scope { get; }

    /// <summary>The scope its control records in the ledger: <c>SCOPE:ID</c>.</summary>
    public string ControlScope { get; }

    /// <summary>What the rule's control records when the prompt passed it: one instance for every request.</summary>
    public ControlResult Passed { get; }

    /// <summary>What the rule's control records when it redacted the prompt.</summary>
    public ControlResult Redacted { get; }

    /// <summary>Deny or redact.</summary>
    public PromptAction Action { get; }

    /// <summary>Compiles <paramref name="config"/>; its pattern runs with <paramref name="timeout"/>.</summary>
    public static PromptRule Compile(PromptRuleConfig config, string scope, TimeSpan timeout)
        => new(config.Id, scope, config.Action,
            config.Pattern is null ? null : new Regex(config.Pattern, RegexOptions.CultureInvariant, timeout),
            config.Detector);

    /// <summary>
    /// Finds the rule's matches in <paramref name="text"/>, adding their spans to <paramref name="spans"/> when
    /// given. Returns false when the regular expression ran out of time: the caller fails closed.
    /// </summary>
    public bool TryMatch(ReadOnlySpan<char> text, List<(int Index, int Length)>? spans, out bool matched)
    {
        matched = false;
        try
        {
            if (_detector is { } detector)
            {
                matched = PromptDetectors.Find(detector, text, spans);
                return true;
            }

            if (spans is null)
            {
                matched = _regex!.IsMatch(text);
                return true;
            }

            foreach (var match in _regex!.EnumerateMatches(text))
            {
                matched = true;
                spans.Add((match.Index, match.Length));
            }

            return true;
        }
        catch (RegexMatchTimeoutException)
        {
            matched = true;
            return false;
        }
    }
}
