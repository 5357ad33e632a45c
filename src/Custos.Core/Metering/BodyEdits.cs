using System.Buffers;
using Custos.Controls;

namespace Custos.Metering;

/// <summary>Applies byte-range edits to a JSON body, copying everything between them untouched.</summary>
public static class BodyEdits
{
    /// <summary>
    /// Writes <paramref name="body"/> with <paramref name="edits"/> applied to <paramref name="output"/>. Edits must not
    /// overlap; insertions (empty ranges) at the same place keep their order.
    /// </summary>
    public static void Apply(ReadOnlySpan<byte> body, List<BodyEdit> edits, IBufferWriter<byte> output)
    {
        // Stable insertion sort: few edits, and insertions at one place must keep their order.
        for (var i = 1; i < edits.Count; i++)
        {
            var edit = edits[i];
            var j = i - 1;
            while (j >= 0 && edits[j].Start > edit.Start)
            {
                edits[j + 1] = edits[j];
                j--;
            }

            edits[j + 1] = edit;
        }

        var position = 0;
        foreach (var edit in edits)
        {
            if (edit.Start < position)
            {
                throw new InvalidOperationException("overlapping body edits");
            }

            output.Write(body[position..edit.Start]);
            output.Write(edit.Replacement);
            position = edit.End;
        }

        output.Write(body[position..]);
    }
}
