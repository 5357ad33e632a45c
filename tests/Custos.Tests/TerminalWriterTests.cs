using Custos.Cli;

namespace Custos.Tests;

/// <summary>What the CLI prints from the ledger cannot drive the terminal: control characters are shown as escapes.</summary>
public sealed class TerminalWriterTests
{
    [Theory]
    [InlineData("gpt\u001b[31mRED\u001b[0m", "gpt\\u001B[31mRED\\u001B[0m")] // colour
    [InlineData("invoice-\u202Efdp.exe", "invoice-\\u202Efdp.exe")] // a right-to-left override: shows as invoice-exe.pdf
    [InlineData("ok\rFORGED", "ok\\u000DFORGED")] // back to the line's start, over what it shows
    [InlineData("a\u009b2Jb\u007f\u0000", "a\\u009B2Jb\\u007F\\u0000")] // C1's CSI, DEL, NUL
    [InlineData("two\nlines\tand a tab", "two\nlines\tand a tab")] // the CLI's own layout
    [InlineData("émoji 😀 and text", "émoji 😀 and text")]
    [InlineData("", "")]
    public async Task ControlCharacters_AreWrittenAsEscapes_ByEveryWrite(string text, string shown)
    {
        var target = new StringWriter { NewLine = "\n" };
        var writer = new TerminalWriter(target);

        writer.Write(text);
        writer.WriteLine(text.AsSpan());
        foreach (var c in text)
        {
            writer.Write(c);
        }

        await writer.WriteLineAsync(text);
        await writer.WriteAsync(text.AsMemory());

        Assert.Equal($"{shown}{shown}\n{shown}{shown}\n{shown}", target.ToString());
    }

    [Fact]
    public async Task TheCli_ShowsWhatItEchoesAsEscapes()
    {
        var data = Path.Combine(Path.GetTempPath(), "custos-terminal-" + Guid.NewGuid().ToString("N"));
        try
        {
            Assert.Equal(0, (await Cli.RunAsync("init", "--data", data)).Exit);

            var (exit, _, error) = await Cli.RunAsync("audit", "prove", "req\u001b[2J", "-o", Path.Combine(data, "proof.json"), "--data", data);

            Assert.Equal(1, exit);
            Assert.Equal("error: no request req\\u001B[2J in this ledger", error.Trim());
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            Directory.Delete(data, recursive: true);
        }
    }
}
