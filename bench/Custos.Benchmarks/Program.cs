using BenchmarkDotNet.Running;

if (args is ["verify", ..])
{
    return await Custos.Benchmarks.VerifyBench.RunAsync(args);
}

if (args is ["report", ..])
{
    return await Custos.Benchmarks.ReportBench.RunAsync(args);
}

if (args is ["allocations", ..])
{
    return Custos.Benchmarks.AllocationTrace.Run(args);
}

if (args is ["alert-latency", ..])
{
    return await Custos.Benchmarks.AlertLatencyBench.RunAsync(args);
}

BenchmarkSwitcher.FromAssembly(typeof(Custos.Benchmarks.DecisionBenchmark).Assembly).Run(args);
return 0;
