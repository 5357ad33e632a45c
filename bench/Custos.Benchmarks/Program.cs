using BenchmarkDotNet.Running;

if (args is ["verify", ..])
{
    return await Custos.Benchmarks.VerifyBench.RunAsync(args);
}

BenchmarkSwitcher.FromAssembly(typeof(Custos.Benchmarks.DecisionBenchmark).Assembly).Run(args);
return 0;
