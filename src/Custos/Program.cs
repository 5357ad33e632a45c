using Custos.Cli;

return await CustosCli.RunAsync(args, Console.Out, Console.Error);
