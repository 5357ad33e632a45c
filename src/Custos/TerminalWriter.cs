using System.Buffers;
using System.Text;

namespace Custos.Cli;

/// <summary>
/// What the CLI prints, with every control character but line feeds and tabs written as its escape (<c>\u001B</c>).
/// Ledger entries hold what callers sent (a model name, a header): printed as it came, an escape sequence in one would
/// restyle, move or hide text on an operator's or auditor's terminal. JSON output is unchanged: it escapes them itself.
/// The asynchronous writes are <see cref="TextWriter"/>'s, which end in these.
/// </summary>
internal sealed class TerminalWriter(TextWriter inner) : TextWriter(inner.FormatProvider)
{
    /// <inheritdoc/>
    public override Encoding Encoding => inner.Encoding;

    /// <inheritdoc/>
    public override string NewLine
    {
        get => inner.NewLine;
#pragma warning disable CS8765 // TextWriter.NewLine's setter accepts null (meaning the default)
        set => inner.NewLine = value;
#pragma warning restore CS8765
    }

    /// <summary>
    /// The characters printed as their escapes: what <see cref="char.IsControl(char)"/> names (C0, DEL, C1) but a line feed
    /// and a tab, and the bidirectional overrides and isolates (U+202A-U+202E, U+2066-U+2069), which reorder what the line
    /// shows around them. A carriage return is one, as it would move the cursor back over what the line already shows.
    /// </summary>
    private static readonly SearchValues<char> Unsafe = SearchValues.Create(
        [.. Enumerable.Range(0, 0x206A).Select(c => (char)c).Where(c => Custos.Controls.RecordedText.IsUnprintable(c) && c is not ('\n' or '\t'))]);

    /// <inheritdoc/>
    public override void Write(char value)
    {
        if (Unsafe.Contains(value))
        {
            WriteEscape(value);
        }
        else
        {
            inner.Write(value);
        }
    }

    /// <inheritdoc/>
    public override void Write(string? value) => Write(value.AsSpan());

    /// <inheritdoc/>
    public override void Write(char[] buffer, int index, int count) => Write(buffer.AsSpan(index, count));

    /// <inheritdoc/>
    public override void Write(ReadOnlySpan<char> buffer)
    {
        while (!buffer.IsEmpty)
        {
            var next = buffer.IndexOfAny(Unsafe);
            if (next < 0)
            {
                inner.Write(buffer);
                return;
            }

            inner.Write(buffer[..next]);
            WriteEscape(buffer[next]);
            buffer = buffer[(next + 1)..];
        }
    }

    /// <inheritdoc/>
    public override void WriteLine(string? value) => WriteLine(value.AsSpan());

    /// <inheritdoc/>
    public override void WriteLine(ReadOnlySpan<char> buffer)
    {
        // A line without anything to escape is one write to the console (one system call: Program.cs), as before.
        if (buffer.IndexOfAny(Unsafe) < 0)
        {
            inner.WriteLine(buffer);
            return;
        }

        Write(buffer);
        inner.WriteLine();
    }

    /// <inheritdoc/>
    public override void WriteLine() => inner.WriteLine();

    /// <inheritdoc/>
    public override void Flush() => inner.Flush();

    /// <inheritdoc/>
    public override Task FlushAsync() => inner.FlushAsync();

    private void WriteEscape(char c)
    {
        Span<char> escape = stackalloc char[6];
        escape[0] = '\\';
        escape[1] = 'u';
        ((int)c).TryFormat(escape[2..], out _, "X4", System.Globalization.CultureInfo.InvariantCulture);
        inner.Write(escape);
    }
}
