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
    /// <see cref="OffloadMode.Model"/> loads the models on the CPU and moves each to <see cref="Device"/> only while it
    /// is used (diffusers' <c>enable_model_cpu_offload</c>).
    /// </summary>
    public OffloadMode Offload { get; init; } = OffloadMode.None;

    /// <summary>
    /// SD3 / SD3.5: an original single-file checkpoint (Stability AI's <c>sd3.5_medium.safetensors</c> layout) whose MMDiT,
    /// and VAE when it has one, replace the model folder's, as diffusers' <c>from_single_file</c>. The folder or hub repo
    /// still gives the configs, text encoders, tokenizers and scheduler; the replaced components' weights are not
    /// downloaded.
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
        Token = HubToken, Revision = Revision ?? "main", Variant = Variant, ConfigOnlyComponents = SingleFileComponents,
    };

    /// <summary>The components <see cref="SingleFile"/> replaces (read from its keys; none without one).</summary>
    internal IReadOnlySet<string> SingleFileComponents =>
        SingleFile is { } path ? Loaders.SingleFileConversion.SD3ComponentsIn(path) : new HashSet<string>();

    /// <summary>
    /// The local pipeline folder for <paramref name="model"/>: the folder itself, or a hub repo id's snapshot (downloaded
    /// into the hub cache first, with these options' token and revision). Lets a caller read model_index.json to pick the
    /// pipeline family before loading any weights.
    /// </summary>
    public string ResolveFolder(string model, CancellationToken cancellationToken = default) =>
        Hub.ModelSource.Resolve(model, HubOptions, DownloadProgress, cancellationToken);

    /// <summary>The parsed device.</summary>
    internal Device ParsedDevice => TorchDevices.Parse(Device);
}
