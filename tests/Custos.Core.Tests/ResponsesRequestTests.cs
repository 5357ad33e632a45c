using System.Text;
using Custos.Controls;
using Custos.Metering;

namespace Custos.Core.Tests;

/// <summary>
/// A Responses API request (<c>POST /v1/responses</c>) read as a chat request is: the prompt text counted and checked is
/// the one the same conversation sent to chat completions gives.
/// </summary>
public sealed class ResponsesRequestTests
{
    private static (ParseError, ChatRequest) Parse(string json, bool responses = true)
        => (ChatRequest.TryParse(Encoding.UTF8.GetBytes(json), out var r, responses), r);

    private static ChatRequest Parsed(string json, bool responses = true)
    {
        var (error, request) = Parse(json, responses);
        Assert.Equal(ParseError.None, error);
        return request;
    }

    private static string[] Lines(ChatRequest request) => [.. request.PromptText.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Order(StringComparer.Ordinal)];

    /// <summary>The Responses request and its chat twin give the same prompt text, messages, images and count.</summary>
    private static void AssertSameAsChat(string responses, string chat, bool sameOrder = true)
    {
        var r = Parsed(responses);
        var c = Parsed(chat, responses: false);
        if (sameOrder)
        {
            Assert.Equal(c.PromptText.ToString(), r.PromptText.ToString());
        }
        else
        {
            Assert.Equal(Lines(c), Lines(r));
        }

        Assert.Equal(c.PromptMessages, r.PromptMessages);
        Assert.Equal(c.PromptImages, r.PromptImages);
        Assert.Equal(TokenCounter.CountPrompt(c), TokenCounter.CountPrompt(r));
    }

    [Fact]
    public void TryParse_ModelStreamAndMaxOutputTokens_AreRead()
    {
        var request = Parsed("""{"model":"gpt-4.1","input":"hi","stream":true,"max_output_tokens":300,"previous_response_id":"resp_1","store":true}""");

        Assert.Equal("gpt-4.1", request.Model);
        Assert.True(request.Stream);
        Assert.Equal(300, request.MaxOutputTokens);
        Assert.Equal("max_output_tokens", request.OutputCeilingField);
        Assert.Equal("input", request.ConversationField);
    }

    [Fact]
    public void TryParse_StringInput_IsOneUserMessage()
        => AssertSameAsChat(
            """{"model":"m","input":"What is the capital of France?"}""",
            """{"model":"m","messages":[{"role":"user","content":"What is the capital of France?"}]}""");

    [Fact]
    public void TryParse_InstructionsAndTextParts_AreTheSystemMessageAndChatsTextParts()
        => AssertSameAsChat(
            """{"model":"m","instructions":"Be brief.","input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"Hello"}]},{"role":"assistant","content":[{"type":"output_text","text":"Hi!"}]},{"role":"user","content":"And now?"}]}""",
            """{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hello"}]},{"role":"assistant","content":[{"type":"text","text":"Hi!"}]},{"role":"user","content":"And now?"}]}""");

    [Theory]
    [InlineData("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")]
    [InlineData("https://example.com/cat.png")]
    public void TryParse_InputImage_IsCountedAsChatsImage(string url)
        => AssertSameAsChat(
            $$$"""{"model":"m","input":[{"role":"user","content":[{"type":"input_text","text":"What is this?"},{"type":"input_image","image_url":"{{{url}}}","detail":"high"}]}]}""",
            $$$"""{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image_url","image_url":{"url":"{{{url}}}","detail":"high"}}]}]}""");

    [Fact]
    public void TryParse_FunctionCallAndItsOutput_AreChatsToolCallAndToolMessage()
        => AssertSameAsChat(
            """{"model":"m","input":[{"role":"user","content":"Weather in Paris?"},{"type":"function_call","call_id":"call_1","name":"weather","arguments":"{\"city\":\"Paris\"}"},{"type":"function_call_output","call_id":"call_1","output":"18C and sunny"}]}""",
            """{"model":"m","messages":[{"role":"user","content":"Weather in Paris?"},{"role":"assistant","tool_calls":[{"id":"call_1","type":"function","function":{"name":"weather","arguments":"{\"city\":\"Paris\"}"}}]},{"role":"tool","tool_call_id":"call_1","content":"18C and sunny"}]}""",
            sameOrder: false);

    [Fact]
    public void TryParse_Tools_CountAsInput_AsChatsDo()
        => AssertSameAsChat(
            """{"model":"m","input":"hi","tools":[{"type":"function","name":"weather","description":"The weather in a city","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}]}""",
            """{"model":"m","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"weather","description":"The weather in a city","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]}""");

    [Fact]
    public void TryParse_PromptStrings_PointAtTheClientsTextInTheBody_ForRedaction()
    {
        const string json = """{"model":"m","instructions":"card 4111","input":[{"type":"message","role":"user","content":[{"type":"input_text","text":"my card 4242"}]}]}""";
        var request = Parsed(json);
        var body = Encoding.UTF8.GetBytes(json);

        var texts = request.PromptStrings.Select(s => Encoding.UTF8.GetString(body.AsSpan(s.BodyStart, s.BodyEnd - s.BodyStart))).ToList();

        Assert.Equal(["\"card 4111\"", "\"user\"", "\"my card 4242\""], texts); // no type discriminator, no word of the gateway's
        Assert.All(request.PromptStrings, s => Assert.Equal(
            Encoding.UTF8.GetString(body.AsSpan(s.BodyStart + 1, s.BodyEnd - s.BodyStart - 2)),
            request.PromptText.Slice(s.TextStart, s.TextLength).ToString()));
    }

    [Theory]
    [InlineData("""{"model":"m"}""", "input")]
    [InlineData("""{"model":"m","input":null}""", "input")]
    [InlineData("""{"model":"m","input":42}""", "input")]
    [InlineData("""{"model":"m","input":{"role":"user"}}""", "input")]
    [InlineData("""{"model":"m","input":["hi"]}""", "input[0]")]
    [InlineData("""{"model":"m","input":[{"role":"user","content":"a"},7]}""", "input[1]")]
    [InlineData("""{"model":"m","input":[{"role":"user","content":7}]}""", "input[0].content")]
    [InlineData("""{"model":"m","input":[{"role":"user","content":{"text":"a"}}]}""", "input[0].content")]
    [InlineData("""{"model":"m","input":[{"role":1,"content":"a"}]}""", "input[0].role")]
    [InlineData("""{"model":"m","input":[{"type":null,"content":"a"}]}""", "input[0].type")]
    [InlineData("""{"model":"m","input":"hi","instructions":42}""", "instructions")]
    [InlineData("""{"model":"m","input":"hi","max_output_tokens":-1}""", "max_output_tokens")]
    [InlineData("""{"model":"m","input":"hi","max_output_tokens":"10"}""", "max_output_tokens")]
    public void TryParse_InvalidResponsesRequest_NamesTheField(string json, string field)
    {
        var (error, request) = Parse(json);

        Assert.Equal(ParseError.InvalidField, error);
        Assert.Equal(field, request.ErrorField);
        Assert.NotNull(request.ErrorExpectation);
    }

    [Theory]
    [InlineData("""{"model":"m","input":"a","input":"b"}""", "input")]
    [InlineData("""{"model":"m","input":"a","max_output_tokens":1,"max_output_tokens":2}""", "max_output_tokens")]
    [InlineData("""{"model":"m","input":"a","instructions":"x","instructions":"y"}""", "instructions")]
    public void TryParse_DuplicateResponsesField_IsRefused(string json, string field)
    {
        var (error, request) = Parse(json);

        Assert.Equal(ParseError.DuplicateField, error);
        Assert.Equal(field, request.ErrorField);
    }

    [Fact]
    public void TryParse_StoredPromptWithoutInput_IsAllowed()
        => Assert.Equal(ParseError.None, Parse("""{"model":"m","prompt":{"id":"pmpt_1","variables":{"city":"Paris"}}}""").Item1);

    [Fact]
    public void TryParse_ChatRequest_DoesNotReadResponsesFields()
    {
        var request = Parsed("""{"model":"m","messages":[{"role":"user","content":"hi"}],"max_output_tokens":5,"instructions":"secret"}""", responses: false);

        Assert.Null(request.MaxOutputTokens);
        Assert.DoesNotContain("secret", request.PromptText.ToString(), StringComparison.Ordinal);
    }

    [Theory]
    [InlineData("""{"model":"m","input":"hi"}""", """{"max_output_tokens":64,"model":"up","input":"hi"}""")]
    [InlineData("""{"model":"m","input":"hi","max_output_tokens":null}""", """{"model":"up","input":"hi","max_output_tokens":64}""")]
    [InlineData("""{"model":"m","input":"hi","max_output_tokens":4000}""", """{"model":"up","input":"hi","max_output_tokens":64}""")]
    public void AddEdits_OutputCeiling_IsMaxOutputTokens(string json, string expected)
    {
        var bytes = Encoding.UTF8.GetBytes(json);
        var request = Parsed(json);
        var edits = new List<BodyEdit>();

        request.AddEdits(bytes, "up", forceUsage: false, outputCeiling: 64, edits, completionTokensField: true);
        var output = new System.Buffers.ArrayBufferWriter<byte>();
        BodyEdits.Apply(bytes, edits, output);

        Assert.Equal(expected, Encoding.UTF8.GetString(output.WrittenSpan));
    }

    /// <summary>
    /// A media object whose base64-looking data is decided at its end (its type came after it) while a Responses API type
    /// word was added in between: the prompt text keeps room for the rest of the body (an array sized too small before
    /// the two features met would have been overrun by the strings that follow).
    /// </summary>
    [Fact]
    public void DataDecidedLate_AfterATypeWord_KeepsRoomForTheRestOfThePrompt()
    {
        var data = new string('A', 300);
        var rest = new string('b', 400);
        var request = Parsed($$$"""
            {"model":"gpt-4o-mini","input":[{"content":[
              {"source":{"data":"{{{data}}}","x":{"type":"function_call_output"},"type":"text"}},
              {"text":"{{{rest}}}"},{"text":"{{{rest}}}"}],"role":"user"}]}
            """);

        var text = request.PromptText.ToString();
        Assert.Contains(data, text, StringComparison.Ordinal); // a text document: its data is text the rules read
        Assert.Equal(2, text.Split(rest).Length - 1);
    }
}
