namespace Custos.Benchmarks;

/// <summary>A temporary data folder for a long benchmark, deleted when disposed (SQLite's pooled connections closed first).</summary>
/// <param name="name">What the benchmark is, in the folder's name.</param>
internal sealed class BenchDirectory(string name) : IDisposable
{
    /// <summary>The folder: <c>custos-NAME-bench-…</c> under the temporary path.</summary>
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"custos-{name}-bench-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        if (Directory.Exists(Path))
        {
            Directory.Delete(Path, recursive: true);
        }
    }
}
