using System.Text;
using Custos.Controls;
using Custos.Metering;
using Custos.Policy;

namespace Custos.Benchmarks;

/// <summary>
/// A long prompt, as retrieval and agent traffic sends them: about 12 KB of prose with numbers, punctuation, a list and
/// a code block, and no secret, card or address in it (the common case). Shared with the allocation-budget test.
/// </summary>
public sealed class PromptFixture
{
    private static readonly PromptDetector[] Detectors = Enum.GetValues<PromptDetector>();

    public PromptFixture()
    {
        var text = new StringBuilder();
        for (var i = 0; text.Length < 12_000; i++)
        {
            text.Append($"Ticket {41_000 + i}: the customer wrote on Tuesday that the parcel, sent from the warehouse in Rotterdam on 2026-11-{10 + (i % 18)}, ");
            text.Append("seems to be lost. Please summarise the options (a refund, a replacement, or waiting another week) and explain the trade-offs in plain language.\n");
            text.Append("- Order total: EUR 129.90, paid by card; shipping: standard, 3-5 working days.\n");
            if (i % 8 == 0)
            {
                text.Append("```python\ndef refund(order_id: int, amount: float) -> bool:\n    return api.refunds.create(order=order_id, amount=amount)\n```\n");
            }
        }

        Text = text.ToString();
    }

    /// <summary>The prompt.</summary>
    public string Text { get; }

    /// <summary>Counts the prompt's o200k tokens, as admission does before forwarding.</summary>
    public int CountTokens() => TokenCounter.Count(Text);

    /// <summary>Runs every built-in prompt detector over the prompt; returns how many matched (none).</summary>
    public int Detect()
    {
        var matched = 0;
        foreach (var detector in Detectors)
        {
            if (PromptDetectors.Find(detector, Text, spans: null))
            {
                matched++;
            }
        }

        return matched;
    }
}
