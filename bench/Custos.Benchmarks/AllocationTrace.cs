using System.Globalization;
using Microsoft.Diagnostics.Tracing.Etlx;
using Microsoft.Diagnostics.Tracing.Parsers.Clr;

namespace Custos.Benchmarks;

/// <summary>
/// <c>allocations TRACE [--top N] [--frames N]</c>: where a running gateway allocates, from a trace taken with
/// <c>dotnet-trace collect -p PID --profile gc-verbose --duration 00:00:00:08 -o TRACE</c> while it is under load. The
/// runtime reports an allocation tick about every 100 KB allocated, naming the type and the stack that allocated it; the
/// ticks, summed by type and by stack, are a sample of the allocation volume. Prints markdown: the share of the sampled
/// bytes per type, then per allocating stack (the innermost <c>--frames</c> frames, default 6).
/// </summary>
internal static class AllocationTrace
{
    public static int Run(string[] args)
    {
        if (args.Length < 2 || !File.Exists(args[1]))
        {
            Console.Error.WriteLine("usage: allocations TRACE.nettrace [--top N] [--frames N]  (take it with dotnet-trace collect --profile gc-verbose)");
            return 2;
        }

        var top = Option(args, "--top", 30);
        var depth = Option(args, "--frames", 6);
        var byType = new Dictionary<string, long>(StringComparer.Ordinal);
        var byStack = new Dictionary<string, long>(StringComparer.Ordinal);
        long total = 0, ticks = 0;
        var etlx = TraceLog.CreateFromEventPipeDataFile(args[1]);
        try
        {
            using var log = new TraceLog(etlx);
            foreach (var data in log.Events)
            {
                if (data is not GCAllocationTickTraceData tick)
                {
                    continue;
                }

                ticks++;
                total += tick.AllocationAmount64;
                byType[tick.TypeName] = byType.GetValueOrDefault(tick.TypeName) + tick.AllocationAmount64;
                var frames = new List<string>(depth);
                for (var frame = data.CallStack(); frame is not null && frames.Count < depth; frame = frame.Caller)
                {
                    var name = frame.CodeAddress.FullMethodName;
                    frames.Add(string.IsNullOrEmpty(name) ? frame.CodeAddress.ModuleName + "!?" : name);
                }

                var key = tick.TypeName + " <- " + string.Join(" <- ", frames);
                byStack[key] = byStack.GetValueOrDefault(key) + tick.AllocationAmount64;
            }
        }
        finally
        {
            File.Delete(etlx);
        }

        if (ticks == 0)
        {
            Console.Error.WriteLine($"{args[1]} holds no allocation ticks: take it with --profile gc-verbose.");
            return 1;
        }

        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{ticks:N0} allocation ticks, {total / 1e6:N1} MB sampled\n"));
        Print("type", byType, total, top);
        Console.WriteLine();
        Print("allocated by (innermost frame first)", byStack, total, top);
        return 0;
    }

    private static void Print(string what, Dictionary<string, long> shares, long total, int top)
    {
        Console.WriteLine($"| share | {what} |");
        Console.WriteLine("|---:|---|");
        foreach (var (name, bytes) in shares.OrderByDescending(s => s.Value).Take(top))
        {
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {100.0 * bytes / total:F1} % | `` {name.Replace("|", "\\|", StringComparison.Ordinal)} `` |"));
        }
    }

    private static int Option(string[] args, string name, int fallback)
    {
        var i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length && int.TryParse(args[i + 1], CultureInfo.InvariantCulture, out var value) && value > 0 ? value : fallback;
    }
}
