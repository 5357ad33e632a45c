using BenchmarkDotNet.Running;

BenchmarkSwitcher.FromAssembly(typeof(Custos.Benchmarks.DecisionBenchmark).Assembly).Run(args);
