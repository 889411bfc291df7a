using System.ComponentModel;
using DiffusersSharp.Cli.Web;
using Spectre.Console.Cli;

namespace DiffusersSharp.Cli.Commands;

/// <summary><c>diffusers serve</c>: loads a model once and serves a web UI for it (text-to-image, img2img, inpainting, step previews).</summary>
public sealed class ServeCommand(CliOutput output) : Command<ServeCommand.Settings>
{
    /// <summary>Options of <c>serve</c>: the model's, and where to listen.</summary>
    public sealed class Settings : ModelSettings
    {
        /// <summary>Address to listen on.</summary>
        [CommandOption("--host <HOST>"), Description("Address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for every interface).")]
        public string Host { get; init; } = "127.0.0.1";

        /// <summary>Port.</summary>
        [CommandOption("--port <PORT>"), Description("Port (default 7860; 0 picks a free one).")]
        public int Port { get; init; } = 7860;

        /// <summary>ControlNet folders or hub repo ids loaded with the model, in order.</summary>
        [CommandOption("--controlnet <FOLDER_OR_REPO>"), Description("SD 1.x / 2.x, SDXL, SD3 / SD3.5 and FLUX.1-dev / schnell: a diffusers ControlNet folder or hub repo id loaded beside the model (as generate --controlnet takes it); repeat it for several. The page then takes a control image per ControlNet; a request without control images runs the plain pipeline.")]
        public string[]? ControlNet { get; init; }

        /// <summary>The ControlNets, or an empty list.</summary>
        public IReadOnlyList<string> ControlNets => ControlNet ?? [];

        /// <summary>T2I-Adapter folders or hub repo ids loaded with the model, in order.</summary>
        [CommandOption("--adapter <FOLDER_OR_REPO>"), Description("SD 1.x / 2.x and SDXL: a diffusers T2I-Adapter folder or hub repo id loaded beside the model (as generate --adapter takes it); repeat it for several. The page's text to image then takes an adapter image per adapter; a request without adapter images runs the plain pipeline. Not with --controlnet.")]
        public string[]? Adapter { get; init; }

        /// <summary>The T2I-Adapters, or an empty list.</summary>
        public IReadOnlyList<string> Adapters => Adapter ?? [];

        /// <summary>A FLUX.1-Redux prior loaded with the model (Flux models), or null.</summary>
        [CommandOption("--redux <FOLDER_OR_REPO>"), Description("FLUX.1 models: a FLUX.1-Redux prior (diffusers' FluxPriorReduxPipeline; a folder or hub repo such as black-forest-labs/FLUX.1-Redux-dev), loaded once beside the model (as generate --redux takes it). Requests may then add redux_image (or redux_images) and redux_scale / redux_pooled_scale: the prior turns the images (and the prompt, encoded by the model's text encoders inside it) into the run's prompt embeddings; a request without Redux images runs the plain pipeline.")]
        public string? Redux { get; init; }

        /// <inheritdoc />
        protected override string? Check()
        {
            if (base.Check() is { } error) return error;
            if (Port is < 0 or > 65535) return $"--port must be in [0, 65535], got {Port}.";
            if (string.IsNullOrWhiteSpace(Host)) return "--host must not be empty.";
            if (ControlNets.Any(string.IsNullOrWhiteSpace)) return "--controlnet must name a folder or hub repo id.";
            if (Adapters.Any(string.IsNullOrWhiteSpace)) return "--adapter must name a folder or hub repo id.";
            if (Redux is not null && !Hub.ModelSource.IsRepoId(Redux) && !Hub.HubFileReference.TryParse(Redux, out _) && !Directory.Exists(Redux))
                return $"--redux folder not found: {Redux} (a FLUX.1-Redux folder in the diffusers layout, or a hub repo id such as black-forest-labs/FLUX.1-Redux-dev).";
            if (Adapters.Count > 0 && ControlNets.Count > 0)
                return "--adapter and --controlnet cannot be combined (diffusers has no pipeline that runs T2I-Adapters and ControlNets together).";
            return null;
        }
    }

    /// <inheritdoc />
    public override int Execute(CommandContext context, Settings settings, CancellationToken cancellationToken) =>
        ExecuteAsync(settings, cancellationToken).GetAwaiter().GetResult();

    private async Task<int> ExecuteAsync(Settings settings, CancellationToken ct)
    {
        using var model = LoadedModel.Load(output, settings, ct);
        await using var server = await WebServer.StartAsync(model, output, settings.Host, settings.Port, ct);
        output.Out.WriteLine(server.Address);
        string controlNets = model.ControlNets.Count == 0 ? "" : $" with ControlNet{(model.ControlNets.Count > 1 ? "s" : "")} {string.Join(", ", model.ControlNets)}";
        if (model.ReduxName is not null) controlNets += $" with FLUX.1-Redux prior {model.ReduxName}";
        if (model.Adapters.Count > 0) controlNets += $" with T2I-Adapter{(model.Adapters.Count > 1 ? "s" : "")} {string.Join(", ", model.Adapters)}";
        output.Error.WriteLine($"serving {model.Name} ({model.PipelineClass}){controlNets} at {server.Address}; Ctrl+C stops");
        await server.WaitForShutdownAsync(ct);
        return ExitCodes.Ok;
    }
}
