using System.CommandLine;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using Custos.Errors;
using Custos.Ledger;
using Custos.Storage;

namespace Custos.Cli.Commands;

/// <summary>
/// <c>custos audit verify | prove | verify-bundle</c>: recompute the ledger's chains and checkpoints, export a
/// self-contained proof for one request, and check such a proof offline with only the public key.
/// </summary>
internal static class AuditCommand
{
    public static Command Create(TextWriter output, TextWriter error) => new("audit", "Verify the ledger, and prove single entries to someone without the database.")
    {
        Verify(output, error),
        Prove(output),
        VerifyBundle(output),
    };

    private static Command Verify(TextWriter output, TextWriter error)
    {
        var data = CommonOptions.Data();
        var config = CommonOptions.Config();
        var keys = CommonOptions.PublicKeys();
        var from = new Option<string?>("--from") { Description = "Verify from this instant (ISO 8601 or an age such as 7d); whole checkpoint intervals." };
        var to = new Option<string?>("--to") { Description = "Verify up to this instant." };
        var witness = new Option<DirectoryInfo?>("--witness") { Description = "A directory witness to compare the database's checkpoints with." };
        var json = new Option<bool>("--json") { Description = "Print the result as JSON." };
        var command = new Command("verify", "Recompute every chain and checkpoint signature; name the first bad entry; exit 1 on any problem.")
        {
            data, config, keys, from, to, witness, json,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var directory = CommonOptions.ResolveDataDirectory(parse.GetValue(data), parse.GetValue(config));
            await using var store = await CommonOptions.OpenStoreAsync(directory, parse.GetValue(config), cancellationToken);
            var publicKeys = LoadKeys(parse.GetValue(keys), directory);
            var witnessDirectory = parse.GetValue(witness);
            if (witnessDirectory is { Exists: false })
            {
                throw new CliException($"witness directory not found: {witnessDirectory.FullName}");
            }

            var progress = new Progress<long>(n => error.WriteLine($"  ... {n:N0} entries verified"));
            var window = RequestsCommand.ParseWindow(parse.GetValue(from), parse.GetValue(to), DateTimeOffset.UtcNow);
            var result = await LedgerVerifier.VerifyAsync(store, new VerificationOptions
            {
                PublicKeys = publicKeys,
                From = window.From,
                To = window.To,
                WitnessDirectory = witnessDirectory?.FullName,
                Progress = progress,
            }, cancellationToken);

            if (parse.GetValue(json))
            {
                output.WriteLine(JsonSerializer.Serialize(new
                {
                    ok = result.Ok,
                    chains = result.Chains,
                    entries = result.Entries,
                    totals_compared = result.TotalsCompared,
                    checkpoints = result.Checkpoints,
                    witness_checkpoints = result.WitnessCheckpoints,
                    unsealed = result.Unsealed,
                    seconds = result.Elapsed.TotalSeconds,
                    problems = result.Problems.Select(p => new { kind = p.Kind, chain_id = p.ChainId, seq = p.Seq, request_id = p.RequestId, detail = p.Detail }),
                }));
            }
            else
            {
                foreach (var problem in result.Problems)
                {
                    output.WriteLine("FAIL " + problem);
                }

                var rate = result.Elapsed.TotalSeconds > 0 ? result.Entries / result.Elapsed.TotalSeconds : 0;
                output.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{(result.Ok ? "OK" : "FAILED")}: {result.Entries:N0} entries in {result.Chains} chain(s) recomputed, {result.Checkpoints} checkpoint(s) checked " +
                    $"(signature, head, Merkle root){(witnessDirectory is null ? "" : $", {result.WitnessCheckpoints} witness checkpoint(s) compared")}" +
                    $"{(result.TotalsCompared == 0 ? "" : $", {result.TotalsCompared:N0} request total(s) compared with their entries")}; " +
                    $"{result.Unsealed} entr{(result.Unsealed == 1 ? "y" : "ies")} not sealed yet; {result.Elapsed.TotalSeconds:0.00} s ({rate:N0} entries/s)."));
            }

            return result.Ok ? 0 : 1;
        });
        return command;
    }

    private static Command Prove(TextWriter output)
    {
        var requestId = new Argument<string>("request-id") { Description = "The request to prove (req_…)." };
        var file = new Option<FileInfo>("--output", "-o") { Description = "Where to write the proof bundle (JSON).", Required = true };
        var data = CommonOptions.Data();
        var config = CommonOptions.Config();
        var command = new Command("prove", "Export a self-contained proof of one request entry: the entry, its Merkle path, the signed checkpoint, the policy version.")
        {
            requestId, file, data, config,
        };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var directory = CommonOptions.ResolveDataDirectory(parse.GetValue(data), parse.GetValue(config));
            await using var store = await CommonOptions.OpenStoreAsync(directory, parse.GetValue(config), cancellationToken);
            ProofBundle bundle;
            try
            {
                bundle = await LedgerProofs.BuildAsync(store, parse.GetValue(requestId)!, cancellationToken);
            }
            catch (InvalidOperationException ex)
            {
                throw new CliException(ex.Message);
            }

            var target = parse.GetValue(file)!;
            await CommonOptions.WriteFileAsync(target, bundle.ToJson(), "-o", cancellationToken);
            output.WriteLine($"Proof of {bundle.RequestId} written to {target.FullName}: entry {bundle.Entry.Seq} of chain {bundle.Entry.ChainId}, " +
                $"{bundle.Inclusion.Path.Count}-hash Merkle path to a checkpoint of {bundle.Inclusion.TreeSize} entries, policy version {bundle.Policy.Number}.");
            output.WriteLine(CheckItAnywhere(bundle, target.Name, CheckpointKey.PublicPath(directory)));
            return 0;
        });
        return command;
    }

    /// <summary>
    /// How to check <paramref name="bundle"/>: with the key that signed its checkpoint. That is this folder's key only
    /// when its id matches; on a store many nodes share, the entry's chain may be another node's.
    /// </summary>
    private static string CheckItAnywhere(ProofBundle bundle, string file, string localKey)
    {
        var keyId = new SignedCheckpoint(bundle.Checkpoint.Checkpoint, bundle.Checkpoint.Signature).Checkpoint.KeyId;
        string? localId = null;
        if (File.Exists(localKey))
        {
            try
            {
                using var key = CheckpointKey.LoadPublic(localKey);
                localId = CheckpointKey.IdOf(key);
            }
            catch (InvalidDataException)
            {
            }
        }

        return localId == keyId
            ? $"Check it anywhere: custos audit verify-bundle {file} --public-key {localKey}"
            : $"Check it anywhere: custos audit verify-bundle {file} --public-key PEM, where PEM is the checkpoint public key of the node that " +
              $"writes chain {bundle.Entry.ChainId} (its DIR/keys/checkpoint.pub.pem): the checkpoint is signed by key {keyId}" +
              (localId is null ? "." : $", not by this folder's key {localId}.");
    }

    private static Command VerifyBundle(TextWriter output)
    {
        var file = new Argument<FileInfo>("bundle") { Description = "A proof bundle written by custos audit prove." };
        var key = new Option<FileInfo>("--public-key") { Description = "The checkpoint public key (PEM) of the gateway that made it.", Required = true };
        var command = new Command("verify-bundle", "Verify a proof bundle offline, with no database: every link, from the entry to the signed checkpoint.")
        {
            file, key,
        };
        command.SetAction(parse =>
        {
            var path = parse.GetValue(file)!;
            var keyPath = parse.GetValue(key)!;
            if (!path.Exists)
            {
                throw new CliException($"file not found: {path.FullName}");
            }

            ProofBundle bundle;
            var bytes = File.ReadAllBytes(path.FullName);
            try
            {
                bundle = ProofBundle.Parse(bytes);
            }
            catch (JsonException ex)
            {
                throw new CliException($"{path.Name} is not a proof bundle: {JsonFaults.DescribeDocument(bytes, ex)}");
            }

            using var publicKey = LoadKey(keyPath);
            var checks = bundle.Verify(publicKey);
            foreach (var (check, ok, detail) in checks)
            {
                output.WriteLine($"{(ok ? "ok  " : "FAIL")} {check}: {detail}");
            }

            var passed = checks.All(c => c.Ok);
            output.WriteLine(passed
                ? $"VALID: request {bundle.RequestId} is entry {bundle.Entry.Seq} of chain {bundle.Entry.ChainId}, unaltered, sealed by a checkpoint signed with key {CheckpointKey.IdOf(publicKey)}, decided under policy version {bundle.Policy.Number}."
                : "INVALID: the bundle does not prove what it claims.");
            return passed ? 0 : 1;
        });
        return command;
    }

    private static ECDsa[] LoadKeys(FileInfo[]? files, string directory)
    {
        if (CommonOptions.PublicKeyPaths(files) is { } paths)
        {
            return [.. paths.Select(path => LoadKey(new FileInfo(path)))];
        }

        // The folder's key, and the keys it signed with before a rotation (custos init --rotate-checkpoint-key).
        var path = CheckpointKey.PublicPath(directory);
        var retired = Directory.Exists(CheckpointKey.RetiredDirectory(directory))
            ? Directory.GetFiles(CheckpointKey.RetiredDirectory(directory), "*.pub.pem").Order(StringComparer.Ordinal).ToArray()
            : [];
        return File.Exists(path)
            ? [LoadKey(new FileInfo(path)), .. retired.Select(file => LoadKey(new FileInfo(file)))]
            : throw new CliException($"no checkpoint public key at {path}; pass --public-key FILE");
    }

    private static ECDsa LoadKey(FileInfo file)
    {
        if (!file.Exists)
        {
            throw new CliException($"public key not found: {file.FullName}");
        }

        try
        {
            return CheckpointKey.LoadPublic(file.FullName);
        }
        catch (InvalidDataException ex)
        {
            throw new CliException(ex.Message);
        }
    }

}

/// <summary><c>custos init</c>: a data folder with its store and its checkpoint signing key, before the first start.</summary>
internal static class InitCommand
{
    public static Command Create(TextWriter output)
    {
        var data = new Option<string>("--data") { Description = "The folder to initialise.", DefaultValueFactory = _ => CommonOptions.DefaultDataDirectory };
        var rotate = new Option<bool>("--rotate-checkpoint-key")
        {
            Description = "Retire the folder's checkpoint signing key (its public half kept in keys/retired, its private half deleted) and make a new one, " +
                "when the key was lost or may have been exposed. The gateway records the rotation in the ledger at its next start.",
        };
        var command = new Command("init", "Create a data folder: the embedded store and the ledger's checkpoint signing key (ECDSA P-256).") { data, rotate };
        command.SetAction(async (parse, cancellationToken) =>
        {
            var directory = Path.GetFullPath(parse.GetValue(data)!);
            await using (await SqliteStore.OpenAsync(directory, Console.Error.WriteLine, cancellationToken))
            {
            }

            if (parse.GetValue(rotate))
            {
                var (retired, rotated) = CheckpointKey.Rotate(directory, $"{Environment.UserName} on {Environment.MachineName}", DateTimeOffset.UtcNow);
                using (rotated)
                {
                    output.WriteLine(retired is null
                        ? $"{directory} had no checkpoint key; made key {rotated.KeyId}."
                        : $"Retired checkpoint key {retired} of {directory}: its public key is {Path.Combine(CheckpointKey.RetiredDirectory(directory), retired + ".pub.pem")}, its private key deleted.");
                    output.WriteLine($"New checkpoint key {rotated.KeyId}: {CheckpointKey.PublicPath(directory)} (give it to auditors with the retired one).");
                    output.WriteLine("Restart the gateway on this folder: it records the rotation in the ledger (checkpoint.key_rotated) and signs with the new key from then on.");
                    return 0;
                }
            }

            using var key = CheckpointKey.LoadOrCreate(directory, out var created);
            output.WriteLine(created
                ? $"Initialised {directory}: store custos.db, checkpoint key {key.KeyId}."
                : $"{directory} already has checkpoint key {key.KeyId}; kept it.");
            output.WriteLine($"Private key: {CheckpointKey.PrivatePath(directory)} (keep it on this machine; mode 0600).");
            output.WriteLine($"Public key:  {CheckpointKey.PublicPath(directory)} (give it to auditors: custos audit verify-bundle --public-key).");
            return 0;
        });
        return command;
    }
}
