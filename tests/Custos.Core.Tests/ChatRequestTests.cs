using System.Buffers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Custos.Controls;
using Custos.Metering;

namespace Custos.Core.Tests;

public sealed class ChatRequestTests
{
    private static (ParseError, ChatRequest) Parse(string json) => (ChatRequest.TryParse(Encoding.UTF8.GetBytes(json), out var r), r);

    [Fact]
    public void TryParse_ChatRequest_ReadsModelStreamCeilingsAndPrompt()
    {
        var (error, request) = Parse("""{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true,"max_completion_tokens":50,"n":2,"stream_options":{"include_usage":false}}""");

        Assert.Equal(ParseError.None, error);
        Assert.Equal("gpt-4o", request.Model);
        Assert.True(request.Stream);
        Assert.Equal(50, request.MaxOutputTokens);
        Assert.Equal(2, request.N);
        Assert.False(request.IncludeUsage);
        Assert.Single(request.PromptRanges);
    }

    [Theory]
    [InlineData("""{"model":"m","prompt":"one"}""", null, null, 1L, null)]
    [InlineData("""{"model":"m","prompt":"one","n":3}""", 3L, null, 1L, 3L)]
    [InlineData("""{"model":"m","prompt":["a","b","c"]}""", null, null, 3L, 3L)]
    [InlineData("""{"model":"m","prompt":["a","b"],"n":2,"best_of":5}""", 2L, 5L, 2L, 10L)]
    [InlineData("""{"model":"m","prompt":[[1,2],[3],[4]],"best_of":2}""", null, 2L, 3L, 6L)]
    [InlineData("""{"model":"m","prompt":[1,2,3],"n":4}""", 4L, null, 1L, 4L)] // a list of token ids is one prompt
    [InlineData("""{"model":"m","prompt":[],"best_of":null}""", null, null, 1L, null)]
    [InlineData("""{"model":"m","messages":[{"role":"user","content":"a"},{"role":"user","content":"b"}]}""", null, null, 1L, null)]
    public void TryParse_LegacyCompletion_CountsEveryCompletionTheProviderGenerates(string json, long? n, long? bestOf, long prompts, long? choices)
    {
        // A completion with 50 prompts and best_of 5 generates 250 completions, each up to max_tokens, and bills them all.
        var (error, request) = Parse(json);

        Assert.Equal(ParseError.None, error);
        Assert.Equal((n, bestOf, prompts, choices), (request.N, request.BestOf, request.Prompts, request.CompletionChoices));
    }

    [Theory]
    [InlineData("""{"best_of":0}""", "best_of")]
    [InlineData("""{"best_of":"2"}""", "best_of")]
    [InlineData("""{"best_of":2,"best_of":3}""", "best_of")]
    public void TryParse_BadBestOf_NamesTheField(string json, string field)
    {
        var (error, request) = Parse(json);

        Assert.NotEqual(ParseError.None, error);
        Assert.Equal(field, request.ErrorField);
    }

    [Fact]
    public void TryParse_WhatTheModelReadsBesidesTheMessages_IsPrompt_ImagesAreImages()
    {
        // A tool's description, a response schema, a predicted output and a suffix are read by the model and billed as
        // input: prompt rules must see them. An inline image is pixels: 1,600 tokens at most, not its base64 as text.
        var image = Convert.ToBase64String(new byte[30_000]);
        var (error, request) = Parse("""
            {"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"look"},{"type":"image_url","image_url":{"url":"data:image/png;base64,IMAGE"}}]}],
             "tools":[{"type":"function","function":{"name":"pay","description":"card 4111 1111 1111 1111"}}],
             "response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"description":"schema text"}}},
             "prediction":{"type":"content","content":"predicted text"},"suffix":"suffix text",
             "system":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"IMAGE"}}]}
            """.Replace("IMAGE", image, StringComparison.Ordinal));

        Assert.Equal(ParseError.None, error);
        var text = request.PromptText.ToString();
        Assert.Contains("card 4111 1111 1111 1111", text, StringComparison.Ordinal);
        Assert.Contains("schema text", text, StringComparison.Ordinal);
        Assert.Contains("predicted text", text, StringComparison.Ordinal);
        Assert.Contains("suffix text", text, StringComparison.Ordinal);
        Assert.DoesNotContain(image[..100], text, StringComparison.Ordinal);
        Assert.Equal(2, request.PromptImages);
        Assert.Equal(2, request.PromptMessages); // the message and the system block; the tool is no message
        Assert.InRange(TokenCounter.CountPrompt(request), 2 * TokenCounter.ImageTokens, 2 * TokenCounter.ImageTokens + 100);
    }

    [Fact]
    public void TryParse_ImagesNamedByTheirUrl_CountAsImages_AndTheirAddressesStayText()
    {
        // A provider fetches an image named by its URL and bills it as the image: 50 of them were reserved as the few
        // tokens of their addresses, under a max_input_tokens they were billed far beyond.
        var (error, request) = Parse("""
            {"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"compare"},
              {"type":"image_url","image_url":{"url":"https://img.example/a.png?token=abc","detail":"high"}},
              {"type":"image_url","image_url":{"url":"https:\/\/img.example\/b.png"}},
              {"type":"image","source":{"type":"url","url":"HTTPS://img.example/c.jpg"}},
              {"type":"text","text":"see https://not.an.image.example/ and {\"url\":\"https://x.example\"}"}]}],
             "tools":[{"type":"function","function":{"name":"fetch","parameters":{"type":"object","properties":{"url":{"type":"string"}}}}}]}
            """);

        Assert.Equal(ParseError.None, error);
        Assert.Equal(3, request.PromptImages); // the three in image_url and source; a URL in text, or in a tool's schema, is text
        Assert.Contains("https://img.example/a.png?token=abc", request.PromptText.ToString(), StringComparison.Ordinal); // the rules still read it
        Assert.InRange(TokenCounter.CountPrompt(request), 3 * TokenCounter.ImageTokens, 3 * TokenCounter.ImageTokens + 100);
    }

    [Theory]
    [InlineData("", "it is empty")]
    [InlineData("   ", "it is empty")]
    [InlineData("not json", "'o' cannot be there (line 1, byte 2)")]
    [InlineData("{\"model\":\"m\",\"key\":sk-secret-value}", "'s' cannot be there (line 1, byte 20)")]
    [InlineData("[1,2]", "it is an array, not an object")]
    [InlineData("\"hi\"", "it is a string, not an object")]
    [InlineData("42", "it is a number, not an object")]
    [InlineData("true", "it is a boolean, not an object")]
    [InlineData("null", "it is null, not an object")]
    [InlineData("{\"model\":\"x\"", "it ends before its JSON does (line 1, byte ")]
    [InlineData("{\"model\":\"x\"}\n  trailing", "'t' cannot be there (line 2, byte 3)")]
    [InlineData("{\"model\":\"x\",}", "'}' cannot be there (line 1, byte 14)")]
    [InlineData("{\n\"model\":\"x\",\n\"messages\":[}", "'}' cannot be there (line 3, byte 13)")]
    [InlineData("{\"model\":\"x\",\"m\":\"\u0001\"}", "byte 0x01 cannot be there (line 1, byte 19)")]
    public void TryParse_Malformed_IsInvalidJson_AndSaysWhatAndWhere(string body, string detail)
    {
        var (error, request) = Parse(body);

        Assert.Equal(ParseError.InvalidJson, error);
        Assert.Contains(detail, request.ErrorDetail, StringComparison.Ordinal);
    }

    [Fact]
    public void TryParse_NestedDeeperThanItReads_IsInvalidJson_AndSaysSo()
    {
        var (error, request) = Parse("{\"model\":\"m\",\"x\":" + new string('[', 200) + new string(']', 200) + "}");

        Assert.Equal(ParseError.InvalidJson, error);
        Assert.Equal("it nests arrays and objects more than 128 deep (line 1, byte 145)", request.ErrorDetail);
    }

    [Fact]
    public void TryParse_BytesThatAreNotUtf8_InAFieldItSkips_AreInvalidJson()
    {
        // The reader would skip the name unread; a provider's decoder might read it otherwise.
        var body = Encoding.UTF8.GetBytes("{\"model\":\"m\",\"x\":1}");
        body[Array.IndexOf(body, (byte)'x')] = 0xC1;

        Assert.Equal(ParseError.InvalidJson, ChatRequest.TryParse(body, out var request));
        Assert.Equal("it is not UTF-8 (the bytes from offset 14 are not a character)", request.ErrorDetail);
    }

    [Fact]
    public void TryParse_BytesThatAreNotUtf8_FarIntoALongBody_AreFoundWhereTheyAre()
    {
        var body = Encoding.UTF8.GetBytes("{\"model\":\"m\",\"x\":\"" + new string('é', 1000) + "\"}");
        body[^3] = 0xFF; // the second byte of the last 'é': the sequence is bad from its first

        Assert.Equal(ParseError.InvalidJson, ChatRequest.TryParse(body, out var request));
        Assert.Equal($"it is not UTF-8 (the bytes from offset {body.Length - 4} are not a character)", request.ErrorDetail);
    }

    [Theory]
    [InlineData("""{"model":42}""", "model", "a string")]
    [InlineData("""{"model":"m","stream":"yes"}""", "stream", "true, false or null")]
    [InlineData("""{"model":"m","stream_options":[]}""", "stream_options", "an object or null")]
    [InlineData("""{"model":"m","max_tokens":-1}""", "max_tokens", "a whole number of at least 0, or null")]
    [InlineData("""{"model":"m","max_completion_tokens":1.5}""", "max_completion_tokens", "a whole number of at least 0, or null")]
    [InlineData("""{"model":"m","n":0}""", "n", "a whole number of at least 1, or null")]
    [InlineData("""{"model":"m","stream_options":{"include_usage":"true"}}""", "stream_options.include_usage", "true or false")]
    public void TryParse_WrongFieldType_NamesTheField_AndWhatItMustBe(string body, string field, string expected)
    {
        var (error, request) = Parse(body);

        Assert.Equal(ParseError.InvalidField, error);
        Assert.Equal(field, request.ErrorField);
        Assert.Equal(expected, request.ErrorExpectation);
    }

    [Theory]
    [InlineData("""{"model":"cheap","messages":[],"model":"expensive"}""", "model")]
    [InlineData("""{"model":"cheap","mod\u0065l":"expensive"}""", "model")]
    [InlineData("""{"model":"m","stream":false,"stream":true}""", "stream")]
    [InlineData("""{"model":"m","stream_options":null,"stream_options":{"include_usage":true}}""", "stream_options")]
    [InlineData("""{"model":"m","stream_options":{"include_usage":false,"include_usage":true}}""", "stream_options.include_usage")]
    [InlineData("""{"model":"m","max_tokens":1,"max_tokens":4096}""", "max_tokens")]
    [InlineData("""{"model":"m","max_completion_tokens":null,"max_completion_tokens":4096}""", "max_completion_tokens")]
    [InlineData("""{"model":"m","n":1,"n":8}""", "n")]
    [InlineData("""{"model":"m","messages":[],"messages":[{"role":"user","content":"x"}]}""", "messages")]
    [InlineData("""{"model":"m","system":"a","max_tokens":5,"system":"b"}""", "system")]
    [InlineData("""{"model":"m","prompt":"a","prompt":"b"}""", "prompt")]
    [InlineData("""{"model":"m","input":"a","input":"b"}""", "input")]
    public void TryParse_AFieldItReadsTwice_IsADuplicateNamingIt(string body, string field)
    {
        // Parsers differ on which of two equal keys counts: the gateway would govern one and the provider act on the other.
        var (error, request) = Parse(body);

        Assert.Equal(ParseError.DuplicateField, error);
        Assert.Equal(field, request.ErrorField);
    }

    [Fact]
    public void TryParse_TheSameNamesInsideOtherValues_AreNotDuplicates()
    {
        var (error, request) = Parse("""{"model":"m","messages":[{"role":"user","content":"x","model":"y"},{"role":"user","content":"z","n":2}],"metadata":{"model":"z","max_tokens":9,"stream":true},"max_tokens":5}""");

        Assert.Equal(ParseError.None, error);
        Assert.Equal(("m", 5L, false), (request.Model, request.MaxOutputTokens, request.Stream));
    }

    [Theory]
    [InlineData("""{"model":"m","max_tokens":1,"max_completion_tokens":4096}""")]
    [InlineData("""{"model":"m","max_completion_tokens":4096,"max_tokens":1}""")]
    public void TryParse_BothOutputCeilings_TheLargerIsWhatTheRequestMayAskFor(string body)
    {
        // A provider may honour either; the gateway checks and reserves for the one that asks for more.
        var (error, request) = Parse(body);

        Assert.Equal(ParseError.None, error);
        Assert.Equal(4096, request.MaxOutputTokens);
        Assert.Equal(2, request.MaxOutputRanges.Count);
    }

    [Theory]
    [InlineData("""{"model":"fast","stream":true,"messages":[]}""", true)]
    [InlineData("""{"stream":true,"stream_options":{},"model":"fast"}""", true)]
    [InlineData("""{"stream":true,"stream_options":{"include_usage":false},"model":"fast"}""", true)]
    [InlineData("""{"stream":true,"stream_options":{"other":1},"model":"fast"}""", true)]
    [InlineData("""{"model":"fast","stream":false}""", false)]
    public void TryRewrite_ReplacesModelAndForcesUsage_KeepingEverythingElse(string body, bool force)
    {
        var bytes = Encoding.UTF8.GetBytes(body);
        ChatRequest.TryParse(bytes, out var request);
        var output = new ArrayBufferWriter<byte>();

        Assert.True(request.TryRewrite(bytes, "gpt-4o-mini-2024", force, output));

        var original = JsonNode.Parse(body)!.AsObject();
        var rewritten = JsonNode.Parse(output.WrittenSpan)!.AsObject();
        Assert.Equal("gpt-4o-mini-2024", (string?)rewritten["model"]);
        if (force)
        {
            Assert.True((bool)rewritten["stream_options"]!["include_usage"]!);
            if (original["stream_options"]?["other"] is not null)
            {
                Assert.Equal(1, (int)rewritten["stream_options"]!["other"]!);
            }
        }

        foreach (var (name, value) in original)
        {
            if (name is not "model" and not "stream_options")
            {
                Assert.True(JsonNode.DeepEquals(value, rewritten[name]), name);
            }
        }
    }

    [Theory]
    [InlineData(true, """{"max_completion_tokens":64,"model":"up","messages":[]}""")]
    [InlineData(false, """{"max_tokens":64,"model":"up","messages":[]}""")]
    public void AddEdits_ACeilingWhereTheClientSetNone_IsMaxCompletionTokensForChat(bool chat, string expected)
    {
        // Chat completions' reasoning models refuse max_tokens ("use 'max_completion_tokens' instead"): a ceiling the
        // gateway injects there, for a policy's ceiling or a budget's reservation, is the field they take.
        var bytes = """{"model":"m","messages":[]}"""u8.ToArray();
        Assert.Equal(ParseError.None, ChatRequest.TryParse(bytes, out var request));
        var edits = new List<BodyEdit>();
        var output = new ArrayBufferWriter<byte>();

        request.AddEdits(bytes, "up", forceUsage: false, outputCeiling: 64, edits, completionTokensField: chat);
        BodyEdits.Apply(bytes, edits, output);

        Assert.Equal(expected, Encoding.UTF8.GetString(output.WrittenSpan));
    }

    [Theory]
    [InlineData("""{"model":"m","max_tokens":null,"messages":[]}""", """{"model":"up","max_tokens":64,"messages":[]}""")]
    [InlineData("""{"model":"m","max_completion_tokens":null,"max_tokens":null}""", """{"model":"up","max_completion_tokens":64,"max_tokens":null}""")]
    [InlineData("""{"model":"m","max_tokens":null,"max_completion_tokens":5000}""", """{"model":"up","max_tokens":null,"max_completion_tokens":64}""")] // a reasoning model refuses a max_tokens
    [InlineData("""{"model":"m","stream":true,"stream_options":null}""", """{"model":"up","stream":true,"stream_options":{"include_usage":true}}""")]
    public void AddEdits_OverNullValues_WriteInTheirPlace_NotBesideThem(string body, string expected)
    {
        // A ceiling or forced usage written beside "max_tokens":null or "stream_options":null would send the field twice,
        // and a provider that takes the last would see no ceiling and send no usage.
        var bytes = Encoding.UTF8.GetBytes(body);
        Assert.Equal(ParseError.None, ChatRequest.TryParse(bytes, out var request));
        var edits = new List<BodyEdit>();
        var output = new ArrayBufferWriter<byte>();

        request.AddEdits(bytes, "up", forceUsage: request.Stream, outputCeiling: request.Stream ? null : 64, edits);
        BodyEdits.Apply(bytes, edits, output);

        Assert.Equal(expected, Encoding.UTF8.GetString(output.WrittenSpan));
    }

    [Fact]
    public void TryRewrite_NothingToChange_WritesNothing()
    {
        var bytes = Encoding.UTF8.GetBytes("""{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}""");
        ChatRequest.TryParse(bytes, out var request);
        var output = new ArrayBufferWriter<byte>();

        Assert.False(request.TryRewrite(bytes, "gpt-4o", forceUsage: true, output));
        Assert.Equal(0, output.WrittenCount);
    }

    [Fact]
    public void TryRewrite_ModelWithCharactersToEscape_IsValidJson()
    {
        var bytes = Encoding.UTF8.GetBytes("""{"model":"a"}""");
        ChatRequest.TryParse(bytes, out var request);
        var output = new ArrayBufferWriter<byte>();

        request.TryRewrite(bytes, "we\"ird\\model", false, output);

        Assert.Equal("we\"ird\\model", (string?)JsonNode.Parse(output.WrittenSpan)!["model"]);
    }

    [Fact]
    public void CountPrompt_CountsMessagesWithOverhead()
    {
        var bytes = Encoding.UTF8.GetBytes("""{"model":"m","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the world."}]}""");
        ChatRequest.TryParse(bytes, out var request);

        var tokens = TokenCounter.CountPrompt(request);

        var text = TokenCounter.Count("system\nYou are terse.\nuser\nSay hello to the world.\n");
        Assert.Equal(text + (2 * 3) + 3, tokens);
    }

    [Theory]
    [InlineData("""{"model":"m","messages":[{"role":"user","content":"caf\u00e9 \"quoted\" \n line \ud83d\ude00 and 😀 naïve"}]}""")]
    [InlineData("""{"model":"m","messages":[{"role":"user","content":""},{"role":"user","content":"a"},{"role":"user","content":[{"type":"text","text":"x"},{"type":"text","text":""}]}]}""")]
    [InlineData("""{"model":"m","prompt":"\u0041\u0042\u0043"}""")]
    [InlineData("""{"model":"m","system":[{"type":"text","text":"be \"brief\"","cache_control":{"type":"ephemeral"}}],"max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":"tab\there"},{"type":"image","source":{"type":"base64","data":"iVBORw0KGgo="}}]}]}""")]
    [InlineData("""{"model":"m","input":["one","two",["three"],{"deep":{"deeper":["four",5,true,null]}}]}""")]
    [InlineData("""{"model":"m","input":[1,2,3],"prompt":null,"system":"plain"}""")]
    [InlineData("""{"model":"m","messages":{"role":"user","content":"an object, not an array"}}""")]
    public void CountPrompt_CountsTheUnescapedText_OfEscapedAndNonAsciiStrings(string json)
    {
        var bytes = Encoding.UTF8.GetBytes(json);
        ChatRequest.TryParse(bytes, out var request);
        var text = new StringBuilder();
        var overhead = 0;
        var tokenIds = 0; // the numbers of these prompts are all in input, which takes token ids: a token each
        foreach (var range in request.PromptRanges)
        {
            using var value = JsonDocument.Parse(bytes.AsMemory()[range]);
            Collect(value.RootElement, depth: 0);
        }

        void Collect(JsonElement element, int depth)
        {
            switch (element.ValueKind)
            {
                case JsonValueKind.String:
                    text.Append(element.GetString()).Append('\n');
                    break;
                case JsonValueKind.Number:
                    tokenIds++;
                    break;
                case JsonValueKind.Array:
                    foreach (var item in element.EnumerateArray())
                    {
                        overhead += depth == 0 && item.ValueKind == JsonValueKind.Object ? 3 : 0;
                        Collect(item, depth + 1);
                    }

                    break;
                case JsonValueKind.Object:
                    foreach (var property in element.EnumerateObject())
                    {
                        Collect(property.Value, depth + 1);
                    }

                    break;
            }
        }

        var tokens = TokenCounter.CountPrompt(request);

        Assert.Equal(overhead + (overhead > 0 ? 3 : 0) + TokenCounter.Count(text.ToString()) + tokenIds, tokens);
    }

    [Fact]
    public void PromptStrings_NameEachStringsTextAndItsTokenInTheBody()
    {
        var bytes = Encoding.UTF8.GetBytes("""{"model":"m","messages":[{"role":"user","content":"caf\u00e9 \"quoted\"\nline"},{"role":"assistant","content":[{"type":"text","text":"😀"}]}],"temperature":0.5}""");

        Assert.Equal(ParseError.None, ChatRequest.TryParse(bytes, out var request));

        var strings = request.PromptStrings;
        Assert.Equal(["user", "café \"quoted\"\nline", "assistant", "text", "😀"], strings.Select(s => request.PromptText.Slice(s.TextStart, s.TextLength).ToString()));
        foreach (var s in strings)
        {
            // The token in the body, quotes included, is the JSON of the same text.
            Assert.Equal(request.PromptText.Slice(s.TextStart, s.TextLength).ToString(), JsonSerializer.Deserialize<string>(bytes.AsSpan(s.BodyStart, s.BodyEnd - s.BodyStart)));
        }

        Assert.Equal(2, request.PromptMessages);
    }

    [Fact]
    public void TryParse_ALoneEscapedSurrogateInThePrompt_IsInvalidJson()
    {
        var bytes = Encoding.UTF8.GetBytes("""{"model":"m","messages":[{"role":"user","content":"half: \ud83d!"}]}""");

        Assert.Equal(ParseError.InvalidJson, ChatRequest.TryParse(bytes, out var request));
        Assert.Contains("half of a surrogate pair", request.ErrorDetail, StringComparison.Ordinal);
    }
}
