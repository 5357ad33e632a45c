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

    /// <summary>
    /// What is wrong with a document the serializer could not read into its type (an admin API body, a proof bundle), in
    /// the document's terms: its fields by their JSON names, never the .NET types behind them; where it is not JSON,
    /// what <see cref="Describe"/> says of it.
    /// </summary>
    /// <returns>For example <c>it lacks 'consumer', 'reason'</c>, <c>it takes no field 'expires'</c> or <c>'models' has a value of the wrong type or null</c>.</returns>
    public static string DescribeDocument(ReadOnlySpan<byte> body, JsonException fault)
    {
        ArgumentNullException.ThrowIfNull(fault);
        if (fault.InnerException is JsonException || body.Trim(" \t\r\n"u8).IsEmpty)
        {
            return Describe(body, fault); // the reader's: the body is not JSON
        }

        if (fault is JsonEnumValueException wrong)
        {
            // "'weekly' is not a valid period; expected one of: day, month": what the caller may send, by the field's name.
            var at = fault.Path is { Length: > 2 } where && where.StartsWith("$.", StringComparison.Ordinal) ? where[2..] : "the value";
            var name = at[(at.LastIndexOf('.') + 1)..];
            var index = name.IndexOf('[', StringComparison.Ordinal);
            name = index > 0 ? name[..index] : name;
            var value = wrong.Value is { Length: > 0 and <= 40 } text && text.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or ' ' or '.')
                ? $"'{text}'"
                : wrong.Value is null ? "a value that is no string" : "the value";
            return $"{value} is not a valid {name}{(at != name ? $" ('{at}')" : "")}; expected one of: {string.Join(", ", wrong.Allowed)}";
        }

        var message = fault.Message;
        var end = message.IndexOf(" Path:", StringComparison.Ordinal);
        message = (end >= 0 ? message[..end] : message).TrimEnd('.', ' ');

        // Path is where the reader was: "$.models" for a null list, "$" for a required member missing.
        var field = fault.Path is { Length: > 2 } path && path.StartsWith("$.", StringComparison.Ordinal) ? path[2..] : null;
        const string Missing = "missing required properties including: ";
        const string Unmapped = "The JSON property '";
        if (message.IndexOf(Missing, StringComparison.Ordinal) is var missing and >= 0)
        {
            return "it lacks " + message[(missing + Missing.Length)..];
        }

        const string Duplicate = "Duplicate property '";
        if (message.StartsWith(Duplicate, StringComparison.Ordinal) && message.IndexOf('\'', Duplicate.Length) is var closing and > 0)
        {
            return $"'{message[Duplicate.Length..closing]}' appears more than once; send it once";
        }

        if (message.StartsWith(Unmapped, StringComparison.Ordinal) && message.IndexOf('\'', Unmapped.Length) is var close and > 0)
        {
            return $"it takes no field '{message[Unmapped.Length..close]}'";
        }

        if (message.Contains("could not be converted", StringComparison.Ordinal) || message.Contains("null", StringComparison.Ordinal) && field is not null)
        {
            return field is null ? "it is not a JSON object" : $"'{field}' has a value of the wrong type or null";
        }

        return fault.LineNumber is null ? message : Describe(body, fault); // without a place, the caller's own words
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
