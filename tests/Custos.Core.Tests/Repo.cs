namespace Custos.Core.Tests;

/// <summary>Files of the repository, found from the test's output folder.</summary>
internal static class Repo
{
    public static string File(string name)
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (!System.IO.File.Exists(Path.Combine(dir!.FullName, "Custos.slnx")))
        {
            dir = dir.Parent;
        }

        return Path.Combine(dir.FullName, name);
    }
}
