using System.Text;

namespace Custos.Cli;

/// <summary>
/// What the CLI prints, with every control character but line feeds and tabs written as its escape (<c>\u001B</c>).
/// Ledger entries hold what callers sent (a model name, a header): printed as it came, an escape sequence in one would
/// restyle, move or hide text on an operator's or auditor's terminal. JSON output is unchanged: it escapes them itself.
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
    /// The character is one to print as its escape; a carriage return is one, as it would move the cursor back over what
    /// the line already shows.
    /// </summary>
    public static bool IsUnsafe(char c) => char.IsControl(c) && c is not ('\n' or '\t');

    /// <inheritdoc/>
    public override void Write(char value)
    {
        if (IsUnsafe(value))
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
            var next = IndexOfUnsafe(buffer);
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
        if (IndexOfUnsafe(buffer) < 0)
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
    public override Task WriteAsync(char value)
    {
        Write(value);
        return Task.CompletedTask;
    }

    /// <inheritdoc/>
    public override Task WriteAsync(string? value)
    {
        Write(value);
        return Task.CompletedTask;
    }

    /// <inheritdoc/>
    public override Task WriteAsync(ReadOnlyMemory<char> buffer, CancellationToken cancellationToken = default)
    {
        Write(buffer.Span);
        return Task.CompletedTask;
    }

    /// <inheritdoc/>
    public override Task WriteLineAsync(string? value)
    {
        WriteLine(value);
        return Task.CompletedTask;
    }

    /// <inheritdoc/>
    public override Task WriteLineAsync(ReadOnlyMemory<char> buffer, CancellationToken cancellationToken = default)
    {
        WriteLine(buffer.Span);
        return Task.CompletedTask;
    }

    /// <inheritdoc/>
    public override Task WriteLineAsync()
    {
        inner.WriteLine();
        return Task.CompletedTask;
    }

    /// <inheritdoc/>
    public override void Flush() => inner.Flush();

    /// <inheritdoc/>
    public override Task FlushAsync() => inner.FlushAsync();

    private static int IndexOfUnsafe(ReadOnlySpan<char> text)
    {
        // C0 (but \t and \n), DEL and C1: the ranges char.IsControl covers.
        for (var start = 0; ;)
        {
            var found = text[start..].IndexOfAnyInRange('\0', '\u001F');
            var c1 = text[start..].IndexOfAnyInRange('\u007F', '\u009F');
            var next = found < 0 ? c1 : c1 < 0 ? found : Math.Min(found, c1);
            if (next < 0)
            {
                return -1;
            }

            if (IsUnsafe(text[start + next]))
            {
                return start + next;
            }

            start += next + 1;
        }
    }

    private void WriteEscape(char c)
    {
        Span<char> escape = stackalloc char[6];
        escape[0] = '\\';
        escape[1] = 'u';
        ((int)c).TryFormat(escape[2..], out _, "X4", System.Globalization.CultureInfo.InvariantCulture);
        inner.Write(escape);
    }
}
