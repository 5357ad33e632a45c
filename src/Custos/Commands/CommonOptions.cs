using System.CommandLine;
using Custos.Policy;

namespace Custos.Cli.Commands;

/// <summary>Options shared by several commands, and how the store folder is found from them.</summary>
internal static class CommonOptions
{
    public const string DefaultDataDirectory = "custos-data";

    public static Option<string?> Data() => new("--data")
    {
        Description = "Folder of the embedded store (its ledger is DIR/custos.db). Default: ./custos-data, or the config file's server.data.",
    };

    public static Option<FileInfo?> Config() => new("--config", "-c")
    {
        Description = "A custos.yaml file; its server.data names the store.",
    };

    /// <summary>The store folder: --data, else the config's server.data (relative to the file), else ./custos-data.</summary>
    public static string ResolveDataDirectory(string? data, FileInfo? config)
    {
        if (data is not null)
        {
            return Path.GetFullPath(data);
        }

        if (config is not null)
        {
            var result = ReadConfig(config);
            return ResolveRelative(config, result.Server.Data ?? DefaultDataDirectory);
        }

        return Path.GetFullPath(DefaultDataDirectory);
    }

    /// <summary>Opens the existing store in <paramref name="directory"/> for a command; a missing one is a one-line error.</summary>
    public static async Task<Storage.SqliteStore> OpenStoreAsync(string directory, CancellationToken cancellationToken)
    {
        try
        {
            return await Storage.SqliteStore.OpenExistingAsync(directory, cancellationToken);
        }
        catch (FileNotFoundException ex)
        {
            throw new CliException(ex.Message);
        }
    }

    /// <summary>Opens the existing store that <c>--data</c> or <c>--config</c> name (see <see cref="ResolveDataDirectory"/>).</summary>
    public static Task<Storage.SqliteStore> OpenStoreAsync(string? data, FileInfo? config, CancellationToken cancellationToken)
        => OpenStoreAsync(ResolveDataDirectory(data, config), cancellationToken);

    public static string ResolveRelative(FileInfo config, string path)
        => Path.GetFullPath(Path.Combine(config.DirectoryName ?? ".", path));

    public static PolicyReadResult ReadConfig(FileInfo config)
    {
        if (!config.Exists)
        {
            throw new CliException($"config file not found: {config.FullName}");
        }

        return PolicyYaml.Read(File.ReadAllText(config.FullName));
    }

    public static int PortOf(string url) => new Uri(url).Port;
}
