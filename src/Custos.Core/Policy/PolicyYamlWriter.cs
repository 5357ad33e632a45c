using System.Text.Json.Nodes;
using YamlDotNet.Core;
using YamlDotNet.Core.Events;

namespace Custos.Policy;

/// <summary>Writes a policy document as YAML in the shape <see cref="PolicyYaml"/> reads (from its canonical form).</summary>
public static class PolicyYamlWriter
{
    /// <summary>The YAML text of <paramref name="document"/>.</summary>
    public static string Write(PolicyDocument document)
    {
        var root = JsonNode.Parse(PolicyVersion.CanonicalJson(document))!;
        Rename(root);
        var writer = new StringWriter();
        var emitter = new Emitter(writer);
        emitter.Emit(new StreamStart());
        emitter.Emit(new DocumentStart());
        Emit(emitter, root);
        emitter.Emit(new DocumentEnd(true));
        emitter.Emit(new StreamEnd());
        return writer.ToString();
    }

    /// <summary>The canonical JSON names differ from the YAML ones in a few places; map them back.</summary>
    private static void Rename(JsonNode node)
    {
        switch (node)
        {
            case JsonObject obj:
                foreach (var key in obj.Select(p => p.Key).ToList())
                {
                    var value = obj[key];
                    var name = key switch
                    {
                        "kind" when value is JsonValue v && v.GetValue<string>() is "openai" or "anthropic" => "type",
                        "upstream_timeout" => "upstream_timeout_seconds",
                        "prompt_regex_timeout" => "prompt_regex_timeout_ms",
                        _ => key,
                    };
                    if (key == "upstream_timeout" && value is JsonValue t)
                    {
                        value = JsonValue.Create((long)TimeSpan.Parse(t.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture).TotalSeconds);
                    }
                    else if (key == "prompt_regex_timeout" && value is JsonValue r)
                    {
                        value = JsonValue.Create((long)TimeSpan.Parse(r.GetValue<string>(), System.Globalization.CultureInfo.InvariantCulture).TotalMilliseconds);
                    }

                    if (name != key || !ReferenceEquals(value, obj[key]))
                    {
                        obj.Remove(key);
                        obj[name] = value?.DeepClone();
                    }
                }

                if (obj["input_per_million"] is not null || obj["output_per_million"] is not null)
                {
                    var price = new JsonObject
                    {
                        ["input_per_mtok"] = obj["input_per_million"]?.DeepClone(),
                        ["output_per_mtok"] = obj["output_per_million"]?.DeepClone(),
                    };
                    foreach (var (from, to) in (ReadOnlySpan<(string, string)>)[("cached_input_per_million", "cached_input_per_mtok"), ("cache_write_input_per_million", "cache_write_input_per_mtok")])
                    {
                        if (obj[from] is { } optional)
                        {
                            price[to] = optional.DeepClone();
                            obj.Remove(from);
                        }
                    }

                    price["currency"] = obj["currency"]?.DeepClone();
                    obj.Remove("input_per_million");
                    obj.Remove("output_per_million");
                    obj.Remove("currency");
                    obj["price"] = price;
                }

                foreach (var (_, child) in obj.ToList())
                {
                    if (child is not null)
                    {
                        Rename(child);
                    }
                }

                break;
            case JsonArray array:
                foreach (var child in array)
                {
                    if (child is not null)
                    {
                        Rename(child);
                    }
                }

                break;
        }
    }

    private static void Emit(Emitter emitter, JsonNode? node)
    {
        switch (node)
        {
            case JsonObject obj:
                emitter.Emit(new MappingStart());
                foreach (var (key, value) in obj)
                {
                    if (value is null || value is JsonArray { Count: 0 } || value is JsonObject { Count: 0 })
                    {
                        continue;
                    }

                    emitter.Emit(new Scalar(key));
                    Emit(emitter, value);
                }

                emitter.Emit(new MappingEnd());
                break;
            case JsonArray array:
                var flow = array.All(n => n is JsonValue);
                emitter.Emit(new SequenceStart(null, null, true, flow ? SequenceStyle.Flow : SequenceStyle.Block));
                foreach (var item in array)
                {
                    Emit(emitter, item);
                }

                emitter.Emit(new SequenceEnd());
                break;
            case JsonValue value:
                var text = value.ToJsonString();
                var isString = text.StartsWith('"');
                emitter.Emit(new Scalar(null, null, isString ? value.GetValue<string>() : text, isString ? ScalarStyle.Any : ScalarStyle.Plain, true, false));
                break;
            default:
                emitter.Emit(new Scalar(null, null, "null", ScalarStyle.Plain, true, false));
                break;
        }
    }
}
