using System.Text;
using Custos.Cli;

// The runtime's standard output writes every 256 bytes: `custos requests --json`, one line of about 3 KB per ledger entry,
// made a dozen system calls a line. With a buffer that holds a line, each line is one write, still written at once.
if (Console.OutputEncoding.CodePage == Encoding.UTF8.CodePage)
{
    Console.SetOut(new StreamWriter(Console.OpenStandardOutput(), new UTF8Encoding(false), 64 * 1024) { AutoFlush = true });
}

return await CustosCli.RunAsync(args, Console.Out, Console.Error);
