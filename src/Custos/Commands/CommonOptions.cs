using System.CommandLine;
using Custos.Policy;

namespace Custos.Cli.Commands;

/// <summary>Options shared by several commands, and how the store folder is found from them.</summary>
internal static class CommonOptions
{
    public const string DefaultDataDirectory = "custos-data";

    /// <summary>
    /// <c>--public-key FILE</c>, repeatable: the checkpoint public keys (PEM) to trust, one per node on a shared store.
    /// Default: DIR/keys/checkpoint.pub.pem of the store (this node's only).
    /// </summary>
    public static Option<FileInfo[]> PublicKeys() => new("--public-key")
    {
        Description = "Checkpoint public key(s) (PEM) to trust, one per node of a shared store; repeatable. Default: DIR/keys/checkpoint.pub.pem of the store.",
        AllowMultipleArgumentsPerToken = true,
    };

    /// <summary>The paths of the <c>--public-key</c> files given, each checked to exist; null when none was given.</summary>
    public static string[]? PublicKeyPaths(FileInfo[]? files) => files is { Length: > 0 }
        ? [.. files.Select(file => file.Exists ? file.FullName : throw new CliException($"public key not found: {file.FullName}"))]
        : null;

    public static Option<string?> Data() => new("--data")
    {
        Description = "Folder of the embedded store (its ledger is DIR/custos.db). Default: ./custos-data, or the config file's server.data.",
    };

    public static Option<FileInfo?> Config() => new("--config", "-c")
    {
        Description = "A custos.yaml file; its server.data names the store.",
    };

    /// <summary>A port on 127.0.0.1: 1 to 65535, or 0 for any free port.</summary>
    public static Option<T> Port<T>(Option<T> option) => WholeNumber(option, 0, ushort.MaxValue);

    /// <summary>
    /// Makes <paramref name="option"/> take a whole number from <paramref name="min"/> to <paramref name="max"/>, and refuse
    /// anything else by its name and the value given ("--limit takes a whole number of at least 1, not '-5'") instead
    /// of the parser's message, which names a .NET type, or a range check after the fact (a port of 70000).
    /// </summary>
    public static Option<T> WholeNumber<T>(Option<T> option, long min, long max)
    {
        option.CustomParser = result => Parse<T>(result, option.Name, min, max);
        return option;
    }

    /// <inheritdoc cref="WholeNumber{T}(Option{T}, long, long)"/>
    public static Argument<T> WholeNumber<T>(Argument<T> argument, long min, long max)
    {
        argument.CustomParser = result => Parse<T>(result, $"<{argument.Name}>", min, max);
        return argument;
    }

    private static T? Parse<T>(System.CommandLine.Parsing.ArgumentResult result, string name, long min, long max)
    {
        var text = result.Tokens.Count > 0 ? result.Tokens[^1].Value : "";
        if (long.TryParse(text, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out var value)
            && value >= min && value <= max)
        {
            var type = Nullable.GetUnderlyingType(typeof(T)) ?? typeof(T);
            return (T)Convert.ChangeType(value, type, System.Globalization.CultureInfo.InvariantCulture);
        }

        // "At least 1" reads wrong for a number past the top (a --limit of 99999999999): name the top then.
        var past = long.TryParse(text, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out var number) && number > max;
        var range = max >= int.MaxValue && !past ? $"of at least {min}" : string.Create(System.Globalization.CultureInfo.InvariantCulture, $"from {min} to {max}");
        result.AddError($"{name} takes a whole number {range}, not '{text}'");
        return default;
    }

    /// <summary>The store folder: --data, else the config's server.data (relative to the file), else ./custos-data.</summary>
    public static string ResolveDataDirectory(string? data, FileInfo? config)
    {
        if (data is not null)
        {
            return string.IsNullOrWhiteSpace(data) ? throw new CliException("--data names no folder") : Path.GetFullPath(data);
        }

        if (config is not null)
        {
            var result = ReadConfig(config);
            return ResolveRelative(config, result.Server.Data ?? DefaultDataDirectory);
        }

        return Path.GetFullPath(DefaultDataDirectory);
    }

    /// <summary>The environment variable with the PostgreSQL connection string of <c>server.storage: postgres</c>.</summary>
    public const string PostgresVariable = "CUSTOS_POSTGRES";

    /// <summary>
    /// Opens the existing store for a command: PostgreSQL when <paramref name="config"/> says <c>server.storage: postgres</c>
    /// (connection string from <c>CUSTOS_POSTGRES</c>), else the SQLite store in <paramref name="directory"/>. A missing or
    /// unreachable store is a one-line error.
    /// </summary>
    public static async Task<Ledger.ICustosStore> OpenStoreAsync(string directory, FileInfo? config, CancellationToken cancellationToken)
    {
        if (config is not null && ReadConfig(config).Server.Storage == StorageBackend.Postgres)
        {
            return await OpenPostgresAsync(cancellationToken);
        }

        try
        {
            // To read only: a listing or a verification must not change the evidence it reads.
            return await Storage.SqliteStore.OpenReadOnlyAsync(directory, Console.Error.WriteLine, cancellationToken);
        }
        catch (FileNotFoundException ex)
        {
            throw new CliException(ex.Message);
        }
    }

    /// <summary>Opens the existing store that <c>--data</c> or <c>--config</c> name (see <see cref="ResolveDataDirectory"/>).</summary>
    public static Task<Ledger.ICustosStore> OpenConfiguredStoreAsync(string? data, FileInfo? config, CancellationToken cancellationToken)
        => OpenStoreAsync(ResolveDataDirectory(data, config), config, cancellationToken);

    /// <summary>The PostgreSQL store of <c>CUSTOS_POSTGRES</c>; its migrations run on open. Errors name the variable, never its value.</summary>
    public static async Task<Ledger.ICustosStore> OpenPostgresAsync(CancellationToken cancellationToken)
    {
        var connectionString = Environment.GetEnvironmentVariable(PostgresVariable);
        if (string.IsNullOrWhiteSpace(connectionString))
        {
            throw new CliException($"server.storage is postgres, but {PostgresVariable} is not set; set it to the connection string " +
                "(for example Host=db;Database=custos;Username=custos;Password=…).");
        }

        try
        {
            return await Postgres.PostgresStore.OpenAsync(connectionString, Console.Error.WriteLine, cancellationToken);
        }
        catch (FormatException ex)
        {
            throw new CliException($"{PostgresVariable} is not a PostgreSQL connection string: {ex.Message}");
        }
        catch (InvalidOperationException ex)
        {
            // The store's own line: "Cannot open the PostgreSQL store postgresql://host:port/database: why".
            throw new CliException($"{ex.Message.Split('\n')[0].TrimEnd('.', ' ')} ({PostgresVariable})");
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            throw new CliException($"cannot open the PostgreSQL store ({PostgresVariable}): {ex.Message.Split('\n')[0]}");
        }
    }

    /// <summary>
    /// Writes what a command produced to the file <paramref name="option"/> names, making its folder if missing. A path
    /// that is a folder is refused by name (the system says only "access denied").
    /// </summary>
    public static async Task WriteFileAsync(FileInfo target, string text, string option, CancellationToken cancellationToken)
    {
        if (Directory.Exists(target.FullName))
        {
            throw new CliException($"{option} {target.FullName} is a folder; name a file to write");
        }

        if (target.Directory is { Exists: false } folder)
        {
            folder.Create();
        }

        await File.WriteAllTextAsync(target.FullName, text, cancellationToken);
    }

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
