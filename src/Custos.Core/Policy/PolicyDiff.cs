using System.Text.Json;
using System.Text.Json.Nodes;

namespace Custos.Policy;

/// <summary>One difference between two policy versions.</summary>
/// <param name="Kind"><c>+</c> added, <c>-</c> removed, <c>~</c> changed.</param>
/// <param name="Path">Where, with list items named by their id or name, e.g. <c>consumers[support-web].models</c>.</param>
/// <param name="Before">The old value as compact JSON, or null.</param>
/// <param name="After">The new value as compact JSON, or null.</param>
public sealed record PolicyChange(char Kind, string Path, string? Before, string? After)
{
    /// <inheritdoc/>
    public override string ToString() => Kind switch
    {
        '+' => $"+ {Path}: {After}",
        '-' => $"- {Path}: {Before}",
        _ => $"~ {Path}: {Before} -> {After}",
    };
}

/// <summary>
/// A readable, structural diff of two policy documents over their canonical forms: lists of records are matched
/// by <c>id</c> or <c>name</c>, so reordering is not a change and a changed price reads as one line.
/// </summary>
public static class PolicyDiff
{
    /// <summary>Every difference from <paramref name="before"/> to <paramref name="after"/>, in document order.</summary>
    public static IReadOnlyList<PolicyChange> Compute(PolicyDocument? before, PolicyDocument after)
    {
        var changes = new List<PolicyChange>();
        var a = before is null ? new JsonObject() : JsonNode.Parse(PolicyVersion.CanonicalJson(before))!;
        var b = JsonNode.Parse(PolicyVersion.CanonicalJson(after))!;
        Walk(a, b, "", changes);
        return changes;
    }

    private static void Walk(JsonNode? a, JsonNode? b, string path, List<PolicyChange> changes)
    {
        if (a is JsonObject oa && b is JsonObject ob)
        {
            foreach (var (key, value) in ob)
            {
                var sub = path.Length == 0 ? key : path + "." + key;
                if (oa.TryGetPropertyValue(key, out var old))
                {
                    Walk(old, value, sub, changes);
                }
                else if (!IsEmpty(value))
                {
                    changes.Add(new PolicyChange('+', sub, null, Text(value)));
                }
            }

            foreach (var (key, value) in oa)
            {
                if (!ob.ContainsKey(key) && !IsEmpty(value))
                {
                    changes.Add(new PolicyChange('-', path.Length == 0 ? key : path + "." + key, Text(value), null));
                }
            }

            return;
        }

        if (a is JsonArray aa && b is JsonArray ab && Keyed(aa) && Keyed(ab))
        {
            var left = aa.ToDictionary(n => Key(n!), n => n);
            var right = ab.ToDictionary(n => Key(n!), n => n);
            foreach (var (key, value) in right)
            {
                var sub = $"{path}[{key}]";
                if (left.TryGetValue(key, out var old))
                {
                    Walk(old, value, sub, changes);
                }
                else
                {
                    changes.Add(new PolicyChange('+', sub, null, Text(value)));
                }
            }

            foreach (var (key, value) in left.Where(l => !right.ContainsKey(l.Key)))
            {
                changes.Add(new PolicyChange('-', $"{path}[{key}]", Text(value), null));
            }

            return;
        }

        if (!JsonNode.DeepEquals(a, b))
        {
            changes.Add(new PolicyChange('~', path, Text(a), Text(b)));
        }
    }

    private static bool Keyed(JsonArray array)
        => array.Count > 0 && array.All(n => n is JsonObject o && (o["id"] ?? o["name"]) is JsonValue)
           && array.Select(n => Key(n!)).Distinct().Count() == array.Count;

    private static string Key(JsonNode node) => (node["id"] ?? node["name"])!.GetValue<string>();

    private static bool IsEmpty(JsonNode? node) => node is null || node is JsonArray { Count: 0 } || node is JsonObject { Count: 0 };

    private static string? Text(JsonNode? node) => node?.ToJsonString(TextOptions);

    /// <summary>
    /// Names and times as written (Zoë, 财务, +00:00), not as \u escapes: a diff is read by people. Quotes, backslashes and
    /// control characters are still escaped, so a value cannot end its quotes; the CLI and the console escape what they
    /// show besides.
    /// </summary>
    private static readonly JsonSerializerOptions TextOptions = new() { WriteIndented = false, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
}
