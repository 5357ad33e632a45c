using System.Buffers;
using System.Globalization;
using System.Net;
using System.Text;

namespace Custos.Reports;

/// <summary>A block of a human-readable report; Markdown and HTML are two renderings of the same blocks.</summary>
internal abstract record Block;

/// <summary>A heading; level 2 headings make the HTML table of contents.</summary>
internal sealed record Heading(int Level, string Text) : Block;

/// <summary>A paragraph of plain text.</summary>
internal sealed record Para(string Text) : Block;

/// <summary>A highlighted box: a title in bold, then text. <paramref name="Tone"/> is pass, warn, fail or info.</summary>
internal sealed record Callout(string Title, string Text, string Tone) : Block;

/// <summary>A bulleted list.</summary>
internal sealed record Bullets(IReadOnlyList<string> Items) : Block;

/// <summary>A table.</summary>
internal sealed record Table(IReadOnlyList<string> Header, IReadOnlyList<IReadOnlyList<Cell>> Rows) : Block;

/// <summary>A table cell: text, shown as code when <paramref name="Code"/>, and coloured by <paramref name="Tone"/> in HTML.</summary>
internal sealed record Cell(string Text, bool Code = false, string? Tone = null)
{
    public static implicit operator Cell(string text) => new(text);
}

/// <summary>The spend chart of an incident pack.</summary>
internal sealed record ChartBlock(SpendChart Chart, string? Currency, DateTimeOffset From, DateTimeOffset To) : Block;

/// <summary>Renders report blocks as Markdown.</summary>
internal static class MarkdownRenderer
{
    public static string Render(IReadOnlyList<Block> blocks)
    {
        var md = new StringBuilder();
        foreach (var block in blocks)
        {
            switch (block)
            {
                case Heading h:
                    md.Append('#', h.Level).Append(' ').AppendLine(Inline(h.Text)).AppendLine();
                    break;
                case Para p:
                    md.AppendLine(Inline(p.Text)).AppendLine();
                    break;
                case Callout c:
                    md.Append("> **").Append(Inline(c.Title)).Append("** ").AppendLine(Inline(c.Text)).AppendLine();
                    break;
                case Bullets b:
                    foreach (var item in b.Items)
                    {
                        md.Append("- ").AppendLine(Inline(item));
                    }

                    md.AppendLine();
                    break;
                case Table t:
                    md.Append("| ").Append(string.Join(" | ", t.Header.Select(Cell))).AppendLine(" |");
                    md.Append('|').Append(string.Concat(t.Header.Select(_ => " --- |"))).AppendLine();
                    foreach (var row in t.Rows)
                    {
                        md.Append("| ").Append(string.Join(" | ", row.Select(c => c.Code && c.Text.Length > 0 ? "`" + Code(c.Text) + "`" : Cell(c.Text)))).AppendLine(" |");
                    }

                    md.AppendLine();
                    break;
                case ChartBlock chart:
                    md.AppendLine(Inline(chart.Chart.Caption) + " (The HTML pack draws this as a chart.)").AppendLine();
                    var points = Sample(chart.Chart.Points, 12);
                    md.AppendLine("| time | cumulative spend |").AppendLine("| --- | --- |");
                    foreach (var point in points)
                    {
                        md.Append("| ").Append(ReportText.Time(point.At)).Append(" | ").Append(ReportText.Money(point.Cumulative, chart.Currency)).AppendLine(" |");
                    }

                    if (chart.Chart.BudgetAmount is { } amount)
                    {
                        md.Append("| budget line | ").Append(ReportText.Money(amount, chart.Currency)).Append(" per ").Append(chart.Chart.BudgetPeriod).AppendLine(" |");
                    }

                    md.AppendLine();
                    break;
            }
        }

        return md.ToString().TrimEnd() + "\n";
    }

    /// <summary>At most <paramref name="count"/> points, evenly spread, always with the last.</summary>
    internal static List<SpendPoint> Sample(IReadOnlyList<SpendPoint> points, int count)
    {
        if (points.Count <= count)
        {
            return [.. points];
        }

        var step = (double)(points.Count - 1) / (count - 1);
        return [.. Enumerable.Range(0, count).Select(i => points[(int)Math.Round(i * step)])];
    }

    /// <summary>
    /// One line of text as Markdown shows it. A report quotes what callers chose (a model's name, a path): a control
    /// character is written as its escape (an ESC would restyle the terminal that prints the file), and a &lt; is
    /// backslashed, so no viewer takes <c>&lt;script&gt;</c> or <c>&lt;img onerror&gt;</c> in it for HTML.
    /// </summary>
    private static string Inline(string text)
    {
        text = text.Replace("\r", "", StringComparison.Ordinal).Replace("\n", " ", StringComparison.Ordinal);
        if (text.AsSpan().IndexOfAny(Unsafe) < 0)
        {
            return text;
        }

        var builder = new StringBuilder(text.Length + 16);
        foreach (var c in text)
        {
            _ = c == '<' ? builder.Append("\\<") : Custos.Controls.RecordedText.IsUnprintable(c) ? builder.Append(CultureInfo.InvariantCulture, $"\\u{(int)c:X4}") : builder.Append(c);
        }

        return builder.ToString();
    }

    /// <summary>What <see cref="Inline"/> changes: &lt;, the control characters (C0, DEL, C1) and the bidirectional overrides.</summary>
    private static readonly SearchValues<char> Unsafe = SearchValues.Create(
        [.. Enumerable.Range(0, 0x206A).Select(c => (char)c).Where(c => c == '<' || Custos.Controls.RecordedText.IsUnprintable(c))]);

    /// <summary>Text inside a code span: no HTML is read there, but control characters are still escaped, and a backtick would end it.</summary>
    private static string Code(string text) => Inline(text).Replace("\\<", "<", StringComparison.Ordinal).Replace("`", "'", StringComparison.Ordinal).Replace("|", "\\|", StringComparison.Ordinal);

    private static string Cell(string text) => Inline(text).Replace("|", "\\|", StringComparison.Ordinal);
}

/// <summary>Renders report blocks as one self-contained HTML file: inline CSS and SVG, no scripts, no external assets.</summary>
internal static class HtmlRenderer
{
    private const string Css = """
        :root { --fg:#1d232b; --muted:#5b6673; --line:#d8dee6; --bg:#ffffff; --soft:#f5f7fa; --pass:#1f7a3f; --warn:#9a6100; --fail:#b42318; --info:#1f5aa6; }
        * { box-sizing: border-box; }
        body { margin:0; font:15px/1.5 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color:var(--fg); background:var(--bg); }
        main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 64px; }
        h1 { font-size: 26px; margin: 0 0 4px; }
        h2 { font-size: 20px; margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
        h3 { font-size: 16px; margin: 22px 0 6px; }
        p { margin: 6px 0 10px; }
        nav { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; margin: 14px 0 8px; font-size: 14px; }
        nav a { color: var(--info); text-decoration: none; margin-right: 14px; white-space: nowrap; }
        table { border-collapse: collapse; width: 100%; margin: 6px 0 14px; font-size: 13.5px; }
        th, td { border: 1px solid var(--line); padding: 5px 8px; text-align: left; vertical-align: top; }
        th { background: var(--soft); font-weight: 600; }
        tr:nth-child(even) td { background: #fbfcfd; }
        code { font: 12.5px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--soft); padding: 1px 4px; border-radius: 3px; word-break: break-all; }
        ul { margin: 4px 0 12px; padding-left: 22px; }
        .callout { border-left: 5px solid var(--info); background: var(--soft); padding: 10px 14px; margin: 10px 0 14px; border-radius: 4px; }
        .callout.pass { border-color: var(--pass); } .callout.warn { border-color: var(--warn); } .callout.fail { border-color: var(--fail); }
        .callout strong { display: block; font-size: 16px; margin-bottom: 2px; }
        td.pass { color: var(--pass); font-weight: 600; } td.warn { color: var(--warn); font-weight: 600; } td.fail { color: var(--fail); font-weight: 600; } td.info { color: var(--info); }
        figure { margin: 8px 0 16px; } figcaption { color: var(--muted); font-size: 13px; margin-top: 4px; }
        svg { max-width: 100%; height: auto; background: #fff; border: 1px solid var(--line); border-radius: 4px; }
        footer { color: var(--muted); font-size: 12.5px; margin-top: 40px; }
        @media print { nav { display: none; } h2 { break-after: avoid; } table { break-inside: auto; } }
        """;

    public static string Render(string title, IReadOnlyList<Block> blocks, string footer)
    {
        var html = new StringBuilder();
        html.AppendLine("<!DOCTYPE html>").AppendLine("<html lang=\"en\">").AppendLine("<head>").AppendLine("<meta charset=\"utf-8\">")
            .AppendLine("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
            .Append("<title>").Append(E(title)).AppendLine("</title>")
            .Append("<style>").Append(Css).AppendLine("</style>").AppendLine("</head>").AppendLine("<body>").AppendLine("<main>");
        var sections = blocks.OfType<Heading>().Where(h => h.Level == 2).ToList();
        var navDone = false;
        var chartIndex = 0;
        foreach (var block in blocks)
        {
            switch (block)
            {
                case Heading { Level: 2 } h when !navDone:
                    navDone = true;
                    html.Append("<nav>");
                    foreach (var s in sections)
                    {
                        html.Append("<a href=\"#").Append(Anchor(s.Text)).Append("\">").Append(E(s.Text)).Append("</a>");
                    }

                    html.AppendLine("</nav>");
                    html.Append("<h2 id=\"").Append(Anchor(h.Text)).Append("\">").Append(E(h.Text)).AppendLine("</h2>");
                    break;
                case Heading h:
                    html.Append("<h").Append(h.Level).Append(h.Level == 2 ? $" id=\"{Anchor(h.Text)}\"" : "").Append('>').Append(E(h.Text))
                        .Append("</h").Append(h.Level).AppendLine(">");
                    break;
                case Para p:
                    html.Append("<p>").Append(E(p.Text)).AppendLine("</p>");
                    break;
                case Callout c:
                    html.Append("<div class=\"callout ").Append(E(c.Tone)).Append("\"><strong>").Append(E(c.Title)).Append("</strong>").Append(E(c.Text)).AppendLine("</div>");
                    break;
                case Bullets b:
                    html.Append("<ul>");
                    foreach (var item in b.Items)
                    {
                        html.Append("<li>").Append(E(item)).Append("</li>");
                    }

                    html.AppendLine("</ul>");
                    break;
                case Table t:
                    html.Append("<table><thead><tr>");
                    foreach (var header in t.Header)
                    {
                        html.Append("<th>").Append(E(header)).Append("</th>");
                    }

                    html.Append("</tr></thead><tbody>");
                    foreach (var row in t.Rows)
                    {
                        html.Append("<tr>");
                        foreach (var cell in row)
                        {
                            html.Append(cell.Tone is null ? "<td>" : $"<td class=\"{E(cell.Tone)}\">").Append(cell.Code && cell.Text.Length > 0 ? "<code>" + E(cell.Text) + "</code>" : E(cell.Text)).Append("</td>");
                        }

                        html.Append("</tr>");
                    }

                    html.AppendLine("</tbody></table>");
                    break;
                case ChartBlock chart:
                    html.Append("<figure>").Append(SpendChartSvg.Render(chart, chartIndex++)).Append("<figcaption>").Append(E(chart.Chart.Caption)).AppendLine("</figcaption></figure>");
                    break;
            }
        }

        html.Append("<footer>").Append(E(footer)).AppendLine("</footer>").AppendLine("</main>").AppendLine("</body>").AppendLine("</html>");
        return html.ToString();
    }

    /// <summary>
    /// HTML-escapes text; a control character (but a line break or a tab) or a bidirectional override in it, which a
    /// caller can put in a model name, is written as its escape (<c>\u001B</c>), as the Markdown and the CLI do.
    /// </summary>
    public static string E(string text)
    {
        var encoded = WebUtility.HtmlEncode(text);
        if (Custos.Controls.RecordedText.IndexOfUnprintable(encoded) < 0)
        {
            return encoded;
        }

        var shown = new StringBuilder(encoded.Length + 16);
        foreach (var c in encoded)
        {
            if (c is not ('\n' or '\t') && Custos.Controls.RecordedText.IsUnprintable(c))
            {
                shown.Append("\\u").Append(((int)c).ToString("X4", System.Globalization.CultureInfo.InvariantCulture));
            }
            else
            {
                shown.Append(c);
            }
        }

        return shown.ToString();
    }

    private static string Anchor(string text)
    {
        var builder = new StringBuilder();
        foreach (var c in text.ToLowerInvariant())
        {
            builder.Append(char.IsAsciiLetterOrDigit(c) ? c : '-');
        }

        return builder.ToString().Trim('-');
    }
}

/// <summary>The spend chart as inline SVG: cumulative spend over the window (a step line per budget period) against the budget line.</summary>
internal static class SpendChartSvg
{
    private const double Width = 960, Height = 320, Left = 80, Right = 24, Top = 20, Bottom = 48;

    public static string Render(ChartBlock block, int index)
    {
        var chart = block.Chart;
        var (from, to) = (block.From, block.To);
        var span = Math.Max((to - from).TotalSeconds, 1);
        var maxSpend = chart.Points.Count == 0 ? 0m : chart.Points.Max(p => p.Cumulative);
        var top = Math.Max(maxSpend, chart.BudgetAmount ?? 0m);
        top = top <= 0 ? 1m : top * 1.1m;
        double X(DateTimeOffset t) => Left + (Width - Left - Right) * Math.Clamp((t - from).TotalSeconds / span, 0, 1);
        double Y(decimal v) => Top + (Height - Top - Bottom) * (1 - (double)(v / top));
        string F(double v) => v.ToString("0.#", CultureInfo.InvariantCulture);

        var svg = new StringBuilder();
        var title = $"Cumulative spend {ReportText.Money(maxSpend, block.Currency)}" + (chart.BudgetAmount is { } b ? $" against a budget of {ReportText.Money(b, block.Currency)} per {chart.BudgetPeriod}" : "");
        svg.Append($"<svg role=\"img\" aria-labelledby=\"chart-title-{index}\" viewBox=\"0 0 {F(Width)} {F(Height)}\" width=\"{F(Width)}\" height=\"{F(Height)}\">")
            .Append($"<title id=\"chart-title-{index}\">").Append(HtmlRenderer.E(title)).Append("</title>");

        // Grid and y axis: five steps.
        for (var i = 0; i <= 4; i++)
        {
            var value = top * i / 4;
            var y = Y(value);
            svg.Append($"<line x1=\"{F(Left)}\" y1=\"{F(y)}\" x2=\"{F(Width - Right)}\" y2=\"{F(y)}\" stroke=\"#e6eaef\" stroke-width=\"1\"/>")
                .Append($"<text x=\"{F(Left - 8)}\" y=\"{F(y + 4)}\" font-size=\"11\" text-anchor=\"end\" fill=\"#5b6673\">")
                .Append(HtmlRenderer.E(ReportText.Money(value))).Append("</text>");
        }

        svg.Append($"<line x1=\"{F(Left)}\" y1=\"{F(Top)}\" x2=\"{F(Left)}\" y2=\"{F(Height - Bottom)}\" stroke=\"#8a96a3\"/>")
            .Append($"<line x1=\"{F(Left)}\" y1=\"{F(Height - Bottom)}\" x2=\"{F(Width - Right)}\" y2=\"{F(Height - Bottom)}\" stroke=\"#8a96a3\"/>");

        // X axis: start, middle, end.
        foreach (var (t, anchor) in new[] { (from, "start"), (from + (to - from) / 2, "middle"), (to, "end") })
        {
            svg.Append($"<text x=\"{F(X(t))}\" y=\"{F(Height - Bottom + 18)}\" font-size=\"11\" text-anchor=\"{anchor}\" fill=\"#5b6673\">")
                .Append(HtmlRenderer.E(ReportText.Time(t))).Append("</text>");
        }

        svg.Append($"<text x=\"14\" y=\"{F(Top + (Height - Top - Bottom) / 2)}\" font-size=\"11\" fill=\"#5b6673\" transform=\"rotate(-90 14 {F(Top + (Height - Top - Bottom) / 2)})\" text-anchor=\"middle\">")
            .Append(HtmlRenderer.E("spend" + (block.Currency is null ? "" : " (" + block.Currency + ")"))).Append("</text>");

        // Budget line.
        if (chart.BudgetAmount is { } amount)
        {
            var y = Y(amount);
            svg.Append($"<line x1=\"{F(Left)}\" y1=\"{F(y)}\" x2=\"{F(Width - Right)}\" y2=\"{F(y)}\" stroke=\"#b42318\" stroke-width=\"2\" stroke-dasharray=\"8 5\"/>")
                .Append($"<text x=\"{F(Width - Right - 4)}\" y=\"{F(y - 6)}\" font-size=\"12\" text-anchor=\"end\" fill=\"#b42318\">")
                .Append(HtmlRenderer.E($"budget {ReportText.Money(amount, block.Currency)} per {chart.BudgetPeriod} ({chart.BudgetScope})")).Append("</text>");
        }

        // Cumulative spend: a step line per budget period, extended to the end of the window.
        var segments = chart.Points.GroupBy(p => p.Segment).ToList();
        for (var s = 0; s < segments.Count; s++)
        {
            var points = segments[s].ToList();
            var end = s + 1 < segments.Count ? segments[s + 1].First().At : to;
            var path = new StringBuilder();
            path.Append($"M{F(X(points[0].At))},{F(Y(points[0].Cumulative))}");
            for (var i = 1; i < points.Count; i++)
            {
                path.Append($" H{F(X(points[i].At))} V{F(Y(points[i].Cumulative))}");
            }

            path.Append($" H{F(X(end))}");
            svg.Append($"<path d=\"{path}\" fill=\"none\" stroke=\"#1f5aa6\" stroke-width=\"2.5\"/>");
        }

        var last = chart.Points.Count > 0 ? chart.Points[^1] : null;
        if (last is not null)
        {
            svg.Append($"<circle cx=\"{F(X(last.At))}\" cy=\"{F(Y(last.Cumulative))}\" r=\"3.5\" fill=\"#1f5aa6\"/>")
                .Append($"<text x=\"{F(Math.Min(X(last.At) + 6, Width - Right - 100))}\" y=\"{F(Y(last.Cumulative) - 8)}\" font-size=\"12\" fill=\"#1f5aa6\">")
                .Append(HtmlRenderer.E(ReportText.Money(last.Cumulative, block.Currency))).Append("</text>");
        }

        svg.Append("</svg>");
        return svg.ToString();
    }
}
