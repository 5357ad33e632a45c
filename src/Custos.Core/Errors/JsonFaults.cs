using System.Buffers;
using System.Text.Json;
using System.Text.Unicode;

namespace Custos.Errors;

/// <summary>
/// What is wrong with a JSON body and where, in the client's terms, for error messages: the data plane's request bodies
/// and the admin API's. Never the reader's own message, which quotes whole runs of the body (a body may hold a secret):
/// a line and byte counted from 1, and at most the one character found there.
/// </summary>
public static class JsonFaults
{
    /// <summary>Where <paramref name="body"/> stopped being JSON, from the reader's <paramref name="fault"/>.</summary>
    /// <param name="body">The body as it came.</param>
    /// <param name="fault">What the reader threw.</param>
    /// <param name="maxDepth">The reader's nesting limit (the serializer's default is 64).</param>
    /// <returns>For example <c>'}' cannot be there (line 2, byte 13)</c>, <c>it ends before its JSON does (line 1, byte 14)</c> or <c>it is empty</c>.</returns>
    public static string Describe(ReadOnlySpan<byte> body, JsonException fault, int maxDepth = 64)
    {
        ArgumentNullException.ThrowIfNull(fault);
        if (body.Trim(" \t\r\n"u8).IsEmpty)
        {
            return "it is empty";
        }

        if (fault.LineNumber is not { } line || fault.BytePositionInLine is not { } position)
        {
            return "it is not JSON";
        }

        var offset = 0L;
        for (var i = 0L; i < line && offset < body.Length; i++)
        {
            var newline = body[(int)offset..].IndexOf((byte)'\n');
            offset = newline < 0 ? body.Length : offset + newline + 1;
        }

        offset += position;
        var where = FormattableString.Invariant($"line {line + 1}, byte {position + 1}");
        if (fault.Message.Contains("maximum configured depth", StringComparison.Ordinal))
        {
            return FormattableString.Invariant($"it nests arrays and objects more than {maxDepth} deep ({where})");
        }

        if (offset >= body.TrimEnd(" \t\r\n"u8).Length)
        {
            return $"it ends before its JSON does ({where})";
        }

        var found = body[(int)offset];
        return found is >= 0x20 and < 0x7F
            ? $"'{(char)found}' cannot be there ({where})"
            : FormattableString.Invariant($"byte 0x{found:X2} cannot be there ({where})");
    }

    /// <summary>Where <paramref name="body"/>, which is not valid UTF-8, has its first bytes that are not a character.</summary>
    public static string DescribeNotUtf8(ReadOnlySpan<byte> body)
    {
        Span<char> chars = stackalloc char[256];
        long offset = 0;
        OperationStatus status;
        do
        {
            status = Utf8.ToUtf16(body, chars, out var read, out _, replaceInvalidSequences: false);
            body = body[read..];
            offset += read;
        }
        while (status == OperationStatus.DestinationTooSmall);

        return FormattableString.Invariant($"it is not UTF-8 (the bytes from offset {offset} are not a character)");
    }
}
