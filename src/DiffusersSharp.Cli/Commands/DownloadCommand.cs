using System.ComponentModel;
using DiffusersSharp.Hub;
using Spectre.Console.Cli;

namespace DiffusersSharp.Cli.Commands;

/// <summary>
/// <c>diffusers download org/name [--revision R] [--token T] [--variant V]</c>: fills the Hugging Face cache with the files
/// the pipeline (or single model) needs and prints the snapshot folder on stdout; progress goes to stderr. A hub file
/// reference (<c>hf://org/name/path</c>, a huggingface.co address) fetches that one file and prints its path.
/// </summary>
public sealed class DownloadCommand(CliOutput output) : Command<DownloadCommand.Settings>
{
    /// <summary>Options of <c>download</c>.</summary>
    public sealed class Settings : CommandSettings
    {
        /// <summary>Hub repo id.</summary>
        [CommandArgument(0, "<REPO>")]
        [Description("Hugging Face repo id, e.g. stabilityai/stable-diffusion-3.5-medium (a pipeline, or one model such as a ControlNet), or one file of a repo: hf://org/name/path/file.safetensors or its https://huggingface.co/org/name/blob/main/... address.")]
        public string Repo { get; init; } = "";

        /// <summary>Branch, tag or commit.</summary>
        [CommandOption("--revision <REVISION>")]
        [Description("Branch, tag or commit hash (default main).")]
        public string? Revision { get; init; }

        /// <summary>Access token (else HF_TOKEN or the huggingface-cli login token).</summary>
        [CommandOption("--token <TOKEN>")]
        [Description("Hugging Face access token (default: HF_TOKEN, then the token saved by huggingface-cli login).")]
        public string? Token { get; init; }

        /// <summary>Weights variant.</summary>
        [CommandOption("--variant <VARIANT>")]
        [Description("Weights variant, e.g. fp16 (default: the standard safetensors).")]
        public string? Variant { get; init; }

        /// <summary>Hub cache folder.</summary>
        [CommandOption("--cache-dir <DIR>")]
        [Description("Hub cache folder (default: HF_HUB_CACHE, else $HF_HOME/hub).")]
        public string? CacheDir { get; init; }

        /// <summary>Hub address.</summary>
        [CommandOption("--endpoint <URL>")]
        [Description("Hub address (default: HF_ENDPOINT, else https://huggingface.co).")]
        public string? Endpoint { get; init; }
    }

    /// <inheritdoc />
    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken)
    {
        var options = new HubOptions
        {
            Revision = string.IsNullOrWhiteSpace(settings.Revision) ? "main" : settings.Revision,
            Token = settings.Token,
            Variant = settings.Variant,
            CacheDir = settings.CacheDir,
            Endpoint = settings.Endpoint,
        };
        var progress = new StderrProgress(output.Error);
        string folder;
        try
        {
            folder = HubFileReference.TryParse(settings.Repo, out var file)
                ? ModelSource.ResolveFile(file!, options, progress, cancellationToken)
                : ModelSource.Resolve(settings.Repo, options, progress, cancellationToken);
        }
        catch (HubException e)
        {
            output.Error.WriteLine($"error: {ExitCodes.OneLine(e)}");
            return e.IsInvalidInput ? ExitCodes.InvalidInput : ExitCodes.Failure;
        }
        output.Out.WriteLine(folder);
        return ExitCodes.Ok;
    }

    /// <summary>One stderr line per finished file and at most a few per second while one downloads.</summary>
    private sealed class StderrProgress(TextWriter error) : IProgress<DownloadProgress>
    {
        private readonly Lock _gate = new();
        private long _lastTick;

        public void Report(DownloadProgress p)
        {
            lock (_gate)
            {
                long now = Environment.TickCount64;
                if (!p.Done && now - _lastTick < 500) return;
                _lastTick = now;
                string size = p.FileSize is { } total ? $"{Mb(p.FileBytes)}/{Mb(total)} MB" : $"{Mb(p.FileBytes)} MB";
                error.WriteLine(p.Done ? $"[{p.FilesDone}/{p.FileCount}] {p.File} ({size})" : $"  {p.File} {size}");
            }
        }

        private static string Mb(long bytes) => (bytes / 1048576.0).ToString("0.0", System.Globalization.CultureInfo.InvariantCulture);
    }
}
