namespace Custos.Storage;

/// <summary>The gateway's data folder (<c>--data</c>, <c>server.data</c>): the embedded store, keys, the spool.</summary>
public static class DataFolder
{
    /// <summary>
    /// Creates <paramref name="path"/> if it is missing. A path that is a file, or a folder that cannot be made (no
    /// permission, a read-only or missing parent), is an <see cref="IOException"/> that names the folder and why.
    /// </summary>
    public static void Create(string path)
    {
        if (File.Exists(path))
        {
            throw new IOException($"the data folder {path} is a file; name a folder (it is created if missing)");
        }

        try
        {
            Directory.CreateDirectory(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new IOException($"cannot create the data folder {path}: {ex.Message}", ex);
        }
    }
}
