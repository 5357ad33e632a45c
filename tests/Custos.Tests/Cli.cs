using Custos.Cli;

namespace Custos.Tests;

/// <summary>Runs the <c>custos</c> command line in this process, capturing what it prints.</summary>
internal static class Cli
{
    public static async Task<(int Exit, string Output, string Error)> RunAsync(params string[] args)
    {
        var output = new StringWriter();
        var error = new StringWriter();
        var exit = await CustosCli.RunAsync(args, output, error);
        return (exit, output.ToString(), error.ToString());
    }

    /// <summary>A file of the repository, found from the test's output folder.</summary>
    public static string RepoFile(string name)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (!File.Exists(Path.Combine(dir!.FullName, "Custos.slnx")))
        {
            dir = dir.Parent;
        }

        return Path.Combine(dir.FullName, name);
    }
}
