using System.Globalization;
using System.Text;

namespace Custos.Reports;

/// <summary>
/// One line of a chargeback: what one consumer's requests for one model cost in a window, in one currency.
/// </summary>
/// <param name="Tenant">The tenant, or null for requests of no identified caller.</param>
/// <param name="Service">The service, or null.</param>
/// <param name="Consumer">The consumer, or null.</param>
/// <param name="Model">The model asked for, or null.</param>
/// <param name="Currency">The currency of <paramref name="Spend"/>, or null when no request of the line was priced.</param>
/// <param name="Requests">Every request entry of the line, refused ones included.</param>
/// <param name="Priced">The requests with a cost.</param>
/// <param name="InputTokens">Input tokens of the line's requests, as their entries state them.</param>
/// <param name="OutputTokens">Output tokens of the line's requests.</param>
/// <param name="Spend">The sum of the entries' costs, exactly (each entry states its cost to the ninth decimal).</param>
/// <param name="PolicyVersions">The policy versions whose prices the line's requests were costed at, in order.</param>
public sealed record SpendLine(string? Tenant, string? Service, string? Consumer, string? Model, string? Currency, long Requests, long Priced,
    long InputTokens, long OutputTokens, decimal Spend, IReadOnlyList<long> PolicyVersions);

/// <summary>
/// Sums request entries into <see cref="SpendLine"/>s, one per tenant, service, consumer, model and currency: the finest
/// grain a chargeback needs, which adds up to the entries' own sum however it is grouped. Memory grows with the distinct
/// lines, not with the entries.
/// </summary>
public sealed class SpendLines
{
    private readonly Dictionary<(string?, string?, string?, string?, string?), Sum> _lines = [];

    /// <summary>Adds one request entry.</summary>
    public void Add(RequestEntry entry)
    {
        ArgumentNullException.ThrowIfNull(entry);
        var currency = entry.Cost is null ? null : entry.Currency;
        var key = (entry.Tenant, entry.Service, entry.Consumer, entry.Model, currency);
        if (!_lines.TryGetValue(key, out var sum))
        {
            _lines[key] = sum = new Sum();
        }

        sum.Requests++;
        sum.InputTokens += entry.InputTokens ?? 0;
        sum.OutputTokens += entry.OutputTokens ?? 0;
        if (entry.Cost is { } cost)
        {
            sum.Priced++;
            sum.Spend += cost;
            sum.Versions.Add(entry.PolicyVersion);
        }
    }

    /// <summary>The lines, ordered by tenant, service, consumer, model and currency.</summary>
    public IReadOnlyList<SpendLine> Lines()
    {
        var lines = new List<SpendLine>(_lines.Count);
        foreach (var ((tenant, service, consumer, model, currency), sum) in _lines)
        {
            // Dividing by 1.000…0 drops the trailing zeros the entries' nine decimals leave (0.000705000 is 0.000705).
            lines.Add(new SpendLine(tenant, service, consumer, model, currency, sum.Requests, sum.Priced, sum.InputTokens, sum.OutputTokens,
                sum.Spend / 1.000000000000000000000000000000000m,
                [.. sum.Versions]));
        }

        lines.Sort(static (a, b) =>
        {
            var order = string.CompareOrdinal(a.Tenant, b.Tenant);
            order = order != 0 ? order : string.CompareOrdinal(a.Service, b.Service);
            order = order != 0 ? order : string.CompareOrdinal(a.Consumer, b.Consumer);
            order = order != 0 ? order : string.CompareOrdinal(a.Model, b.Model);
            return order != 0 ? order : string.CompareOrdinal(a.Currency, b.Currency);
        });
        return lines;
    }

    /// <summary>
    /// <paramref name="lines"/> as CSV (RFC 4180 quoting, a header line, <c>\n</c> line ends, which every spreadsheet reads and
    /// a terminal shows as they are): amounts in plain invariant digits, never an exponent, the policy versions separated by spaces.
    /// </summary>
    public static string ToCsv(IReadOnlyList<SpendLine> lines)
    {
        ArgumentNullException.ThrowIfNull(lines);
        var csv = new StringBuilder("tenant,service,consumer,model,currency,requests,priced,input_tokens,output_tokens,spend,policy_versions\n");
        foreach (var line in lines)
        {
            csv.Append(Field(line.Tenant)).Append(',').Append(Field(line.Service)).Append(',').Append(Field(line.Consumer)).Append(',')
                .Append(Field(line.Model)).Append(',').Append(Field(line.Currency)).Append(',')
                .Append(line.Requests.ToString(CultureInfo.InvariantCulture)).Append(',')
                .Append(line.Priced.ToString(CultureInfo.InvariantCulture)).Append(',')
                .Append(line.InputTokens.ToString(CultureInfo.InvariantCulture)).Append(',')
                .Append(line.OutputTokens.ToString(CultureInfo.InvariantCulture)).Append(',')
                .Append(line.Spend.ToString(CultureInfo.InvariantCulture)).Append(',')
                .Append(string.Join(' ', line.PolicyVersions.Select(v => v.ToString(CultureInfo.InvariantCulture)))).Append('\n');
        }

        return csv.ToString();
    }

    /// <summary>
    /// A CSV field: quoted when it holds a comma, quote or line break; a leading <c>= + - @</c> gets a quote mark before it,
    /// so that a spreadsheet shows a name such as <c>=HYPERLINK(…)</c> as text rather than running it.
    /// </summary>
    private static string Field(string? value)
    {
        if (string.IsNullOrEmpty(value))
        {
            return "";
        }

        if (value[0] is '=' or '+' or '-' or '@')
        {
            value = "'" + value;
        }

        return value.AsSpan().IndexOfAny(",\"\r\n") >= 0 ? "\"" + value.Replace("\"", "\"\"", StringComparison.Ordinal) + "\"" : value;
    }

    private sealed class Sum
    {
        public long Requests;
        public long Priced;
        public long InputTokens;
        public long OutputTokens;
        public decimal Spend;
        public SortedSet<long> Versions { get; } = [];
    }
}
