using DiffusersSharp.Runtime;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines;

/// <summary>How a pipeline is loaded (diffusers' <c>from_pretrained</c> keyword arguments).</summary>
public sealed record PipelineLoadOptions
{
    /// <summary>Floating-point dtype of every model (<c>torch_dtype</c>).</summary>
    public ScalarType Dtype { get; init; } = ScalarType.Float32;

    /// <summary>"cpu", "cuda" or "cuda:N".</summary>
    public string Device { get; init; } = "cpu";

    /// <summary>Weight variant to load, e.g. "fp16" (<c>model.fp16.safetensors</c>).</summary>
    public string? Variant { get; init; }

    /// <summary>Load T5 (<c>text_encoder_3</c>). False drops it, as <c>text_encoder_3=None</c> does: its embeddings become zeros.</summary>
    public bool LoadTextEncoder3 { get; init; } = true;

    /// <summary>
    /// Flux: load the text encoders (CLIP <c>text_encoder</c> and T5 <c>text_encoder_2</c>). False leaves them out, as
    /// diffusers' <c>FluxPipeline.from_pretrained(repo, text_encoder=None, text_encoder_2=None)</c> does for FLUX.1-Redux:
    /// requests must then give prompt embeddings (a Redux prior's output); the tokenizers are left out too. Chroma: the
    /// same for its T5 (<c>text_encoder=None</c>; requests give prompt embeddings with their attention masks). Other
    /// families refuse false.
    /// </summary>
    public bool LoadTextEncoders { get; init; } = true;

    /// <summary>
    /// <see cref="OffloadMode.Model"/> loads the models on the CPU and moves each to <see cref="Device"/> only while it
    /// is used (diffusers' <c>enable_model_cpu_offload</c>).
    /// </summary>
    public OffloadMode Offload { get; init; } = OffloadMode.None;

    /// <summary>
    /// An original single-file checkpoint whose components replace the model folder's, as diffusers'
    /// <c>from_single_file</c> with a config repo: for SD3 / SD3.5 (Stability AI's <c>sd3.5_medium.safetensors</c> layout)
    /// the MMDiT and the VAE when it has one; for SD 1.x / 2.x and SDXL (the LDM / SGM layout of
    /// <c>v1-5-pruned-emaonly.safetensors</c>, <c>sd_xl_base_1.0.safetensors</c>) the UNet and whichever of the VAE and
    /// text encoders it holds. The folder or hub repo still gives the configs, tokenizers, scheduler and the components
    /// the file lacks; the replaced components' weights are not downloaded.
    /// </summary>
    public string? SingleFile { get; init; }

    /// <summary>Hugging Face token for gated repos (else HF_TOKEN or the huggingface_hub token file).</summary>
    public string? HubToken { get; init; }

    /// <summary>Hub revision: branch, tag or commit.</summary>
    public string? Revision { get; init; }

    /// <summary>Download progress when the model is a hub repo id that is not cached yet.</summary>
    public IProgress<Hub.DownloadProgress>? DownloadProgress { get; init; }

    /// <summary>The hub options these load options imply (token, revision, variant; the rest from the environment).</summary>
    internal Hub.HubOptions HubOptions => new()
    {
        Token = HubToken, Revision = Revision ?? "main", Variant = Variant, ConfigOnlyComponents = ConfigOnlyComponents,
    };

    /// <summary>
    /// Components whose weights are not fetched: those <see cref="SingleFile"/> replaces, and the text encoders left out
    /// (diffusers downloads no component passed as None either); their configs still come, so that folders stay complete.
    /// </summary>
    private IReadOnlySet<string> ConfigOnlyComponents
    {
        get
        {
            var components = new HashSet<string>(SingleFileComponents, StringComparer.Ordinal);
            if (!LoadTextEncoder3) components.Add("text_encoder_3");
            if (!LoadTextEncoders) components.UnionWith(["text_encoder", "text_encoder_2"]);
            return components;
        }
    }

    /// <summary>The components <see cref="SingleFile"/> replaces (read from its keys; none without one).</summary>
    internal IReadOnlySet<string> SingleFileComponents =>
        SingleFile is { } path ? Loaders.SingleFileConversion.ContentsOf(path).Components : new HashSet<string>();

    /// <summary>
    /// The components <see cref="SingleFile"/> replaces, after checking that its layout is <paramref name="layout"/>
    /// (an SD3 file given to a UNet model, or the reverse, is refused); none without a file.
    /// </summary>
    /// <exception cref="ArgumentException">The file is of the other layout.</exception>
    internal IReadOnlySet<string> SingleFileComponentsOf(Loaders.SingleFileLayout layout, string family)
    {
        if (SingleFile is not { } path) return new HashSet<string>();
        var contents = Loaders.SingleFileConversion.ContentsOf(path);
        if (contents.Layout != layout)
            throw new ArgumentException($"The single file {Path.GetFileName(path)} is an original {(contents.Layout == Loaders.SingleFileLayout.SD3 ? "SD3 / SD3.5 (MMDiT)" : "SD 1.x / 2.x / SDXL (UNet)")} checkpoint; a {family} model needs an original {(layout == Loaders.SingleFileLayout.SD3 ? "SD3 / SD3.5" : "SD 1.x / 2.x / SDXL")} one.");
        return contents.Components;
    }

    /// <summary>
    /// The local pipeline folder for <paramref name="model"/>: the folder itself, or a hub repo id's snapshot (downloaded
    /// into the hub cache first, with these options' token and revision). Lets a caller read model_index.json to pick the
    /// pipeline family before loading any weights.
    /// </summary>
    public string ResolveFolder(string model, CancellationToken cancellationToken = default) =>
        Hub.ModelSource.Resolve(model, HubOptions, DownloadProgress, cancellationToken);

    /// <summary>
    /// The local path of a file such as a LoRA: <paramref name="fileOrHubFile"/> itself, or, for a hub file reference
    /// (<see cref="Hub.HubFileReference"/>: <c>hf://org/name/file.safetensors</c> or its huggingface.co address), the file
    /// downloaded into the hub cache with these options' token (at the address's revision, else main: <see cref="Revision"/>
    /// is the model's).
    /// </summary>
    public string ResolveFile(string fileOrHubFile, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(fileOrHubFile);
        return Hub.HubFileReference.TryParse(fileOrHubFile, out var file)
            ? Hub.ModelSource.ResolveFile(file!, SideFileHubOptions, DownloadProgress, cancellationToken)
            : fileOrHubFile;
    }

    /// <summary>
    /// The local path of a model folder beside the pipeline, such as an IP-Adapter's image encoder:
    /// <paramref name="folderOrHubFolder"/> itself, a repo's subfolder (<c>hf://h94/IP-Adapter/models/image_encoder</c>) or,
    /// when no such local folder exists, a whole single-model repo (<c>google/siglip-so400m-patch14-384</c>,
    /// <c>openai/clip-vit-large-patch14</c>), with its config.json and safetensors weights downloaded into the hub cache, as
    /// <see cref="ResolveFile"/> does.
    /// </summary>
    public string ResolveSubfolder(string folderOrHubFolder, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(folderOrHubFolder);
        if (!Hub.HubFileReference.TryParse(folderOrHubFolder, out var folder) && !Directory.Exists(folderOrHubFolder) && Hub.ModelSource.IsRepoId(folderOrHubFolder))
            folder = new Hub.HubFileReference(folderOrHubFolder, "", null);
        return folder is not null
            ? Hub.ModelSource.ResolveSubfolder(folder, SideFileHubOptions, DownloadProgress, cancellationToken)
            : folderOrHubFolder;
    }

    // Files beside the model come from other repos: main unless their address names a revision, default weights.
    private Hub.HubOptions SideFileHubOptions => HubOptions with { Revision = "main", Variant = null, ConfigOnlyComponents = new HashSet<string>() };

    /// <summary>The parsed device.</summary>
    internal Device ParsedDevice => TorchDevices.Parse(Device);
}
