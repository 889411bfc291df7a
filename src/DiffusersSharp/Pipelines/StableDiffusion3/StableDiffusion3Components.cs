using DiffusersSharp.IO;
using DiffusersSharp.Loaders;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Images;
using DiffusersSharp.Models.ControlNets;
using DiffusersSharp.Models.ImageEncoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion3;

/// <summary>
/// The loaded components of a Stable Diffusion 3 / 3.5 pipeline folder. Shared by the text-to-image, image-to-image and
/// inpainting pipelines (<c>FromPipe</c>); freed when the last pipeline using them is disposed.
/// </summary>
public sealed class StableDiffusion3Components : PipelineComponents
{
    /// <summary>The MMDiT.</summary>
    public required SD3Transformer2DModel Transformer { get; init; }

    private readonly IReadOnlyList<SD3ControlNetModel> _controlNets = [];

    /// <summary>The ControlNet of <see cref="StableDiffusion3ControlNetPipeline"/> (diffusers' <c>controlnet</c>
    /// component), loaded beside the base model (<see cref="FromPretrained(string, PipelineLoadOptions, string?, CancellationToken)"/>),
    /// when there is exactly one; null with none or several (see <see cref="ControlNets"/>). Setting it sets
    /// <see cref="ControlNets"/> to that one.</summary>
    public SD3ControlNetModel? ControlNet
    {
        get => _controlNets.Count == 1 ? _controlNets[0] : null;
        init => _controlNets = value is null ? [] : [value];
    }

    /// <summary>Every ControlNet, in the order their control images, scales and guidance windows are given (several:
    /// diffusers' <c>SD3MultiControlNetModel</c>, whose residuals are summed); empty without. Freed with the other models;
    /// under model offload they move with the transformer.</summary>
    public IReadOnlyList<SD3ControlNetModel> ControlNets
    {
        get => _controlNets;
        init => _controlNets = value?.ToArray() ?? [];
    }

    /// <summary>The 16-channel VAE.</summary>
    public required AutoencoderKL Vae { get; init; }

    /// <summary>CLIP-L with projection, or null for a pipeline that only takes prompt embeddings (diffusers' <c>text_encoder=None</c>).</summary>
    public CLIPTextModelWithProjection? TextEncoder { get; init; }

    /// <summary>CLIP-G (OpenCLIP bigG) with projection, or null with <see cref="TextEncoder"/>.</summary>
    public CLIPTextModelWithProjection? TextEncoder2 { get; init; }

    /// <summary>T5 v1.1 XXL encoder, or null when dropped.</summary>
    public T5EncoderModel? TextEncoder3 { get; init; }

    /// <summary>CLIP-L tokenizer (null with <see cref="TextEncoder"/>).</summary>
    public CLIPTokenizer? Tokenizer { get; init; }

    /// <summary>CLIP-G tokenizer (pads with "!"; null with <see cref="TextEncoder2"/>).</summary>
    public CLIPTokenizer? Tokenizer2 { get; init; }

    /// <summary>T5 tokenizer, or null when T5 is dropped.</summary>
    public T5Tokenizer? Tokenizer3 { get; init; }

    /// <summary>The scheduler config; every call builds its own scheduler from it (schedulers hold per-call state).</summary>
    public required FlowMatchEulerDiscreteSchedulerConfig SchedulerConfig { get; init; }

    /// <summary>Loads every component of a diffusers pipeline folder, or of a hub repo id (downloaded into the hub cache first).</summary>
    /// <exception cref="UnknownComponentException">model_index.json names a class DiffusersSharp does not implement.</exception>
    public static StableDiffusion3Components FromPretrained(string model, PipelineLoadOptions options, CancellationToken cancellationToken = default) =>
        FromPretrained(model, options, Array.Empty<string>(), cancellationToken);

    /// <summary>
    /// Loads the components of <paramref name="model"/> as <see cref="FromPretrained(string, PipelineLoadOptions, CancellationToken)"/>
    /// and an SD3 ControlNet from <paramref name="controlnet"/> (a diffusers <c>controlnet</c> folder or hub repo id, e.g.
    /// InstantX/SD3-Controlnet-Canny) in the same dtype, as diffusers'
    /// <c>from_pretrained(base, controlnet=SD3ControlNetModel.from_pretrained(cn))</c>. The ControlNet must fit the transformer.
    /// </summary>
    /// <exception cref="ArgumentException">The ControlNet does not fit the transformer.</exception>
    public static StableDiffusion3Components FromPretrained(string model, PipelineLoadOptions options, string? controlnet, CancellationToken cancellationToken = default) =>
        FromPretrained(model, options, controlnet is null ? Array.Empty<string>() : [controlnet], cancellationToken);

    /// <summary>
    /// Loads the components of <paramref name="model"/> and every SD3 ControlNet of <paramref name="controlnets"/> (folders or
    /// hub repo ids) in the same dtype, in that order: several are diffusers' <c>SD3MultiControlNetModel</c>. Each must fit
    /// the transformer, and several must be of one kind (diffusers feeds them all as it feeds the first).
    /// </summary>
    /// <exception cref="ArgumentException">A ControlNet does not fit the transformer, or they are of different kinds.</exception>
    public static StableDiffusion3Components FromPretrained(string model, PipelineLoadOptions options, IReadOnlyList<string> controlnets,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(controlnets);
        if (!options.LoadTextEncoders)
            throw new ArgumentException("PipelineLoadOptions.LoadTextEncoders = false applies to Flux; Stable Diffusion 3 loads its text encoders (LoadTextEncoder3 = false drops T5).", nameof(options));
        var device = options.ParsedDevice; // fail on a bad device before any download
        var modelDevice = options.Offload == OffloadMode.Model ? CPU : device;
        var fromFile = options.SingleFileComponentsOf(Loaders.SingleFileLayout.SD3, "Stable Diffusion 3");
        var (folder, index) = OpenPipelineFolder(model, options, "Stable Diffusion 3", null, null,
            ["transformer", "vae", "scheduler"], skipUnused: false, cancellationToken);
        bool Has(string name) => index.Components.TryGetValue(name, out var spec) && !spec.IsEmpty;
        // diffusers' text_encoder=None: a folder saved without text encoders (all of them) takes prompt embeddings only.
        bool withClip = Has("text_encoder");
        string[] clipParts = ["text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2"];
        if (clipParts.Any(Has) && !clipParts.All(Has))
            throw new InvalidDataException($"{folder}: model_index.json has only some of {string.Join(", ", clipParts)}; a Stable Diffusion 3 pipeline needs all of them, or none (prompt embeddings only).");
        if (!withClip && Has("text_encoder_3"))
            throw new InvalidDataException($"{folder}: model_index.json has T5 (text_encoder_3) but no CLIP text encoders; a Stable Diffusion 3 pipeline encodes prompts with all three, or takes prompt embeddings with none.");
        bool withT5 = options.LoadTextEncoder3 && Has("text_encoder_3");

        var loader = new ComponentLoader(folder, cancellationToken);
        string Sub(string name) => loader.Sub(name);
        try
        {
            var schedulerConfig = ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(Path.Combine(Sub("scheduler"), "scheduler_config.json"));
            var components = new StableDiffusion3Components
            {
                Tokenizer = withClip ? loader.Keep(CLIPTokenizer.FromFolder(Sub("tokenizer"))) : null,
                Tokenizer2 = withClip ? loader.Keep(CLIPTokenizer.FromFolder(Sub("tokenizer_2"))) : null,
                Tokenizer3 = withT5 ? loader.Keep(T5Tokenizer.FromFolder(Sub("tokenizer_3"))) : null,
                TextEncoder = withClip ? loader.Load("text_encoder", () => CLIPTextModelWithProjection.FromPretrained(Sub("text_encoder"), options.Dtype, modelDevice, options.Variant)) : null,
                TextEncoder2 = withClip ? loader.Load("text_encoder_2", () => CLIPTextModelWithProjection.FromPretrained(Sub("text_encoder_2"), options.Dtype, modelDevice, options.Variant)) : null,
                TextEncoder3 = withT5 ? loader.Load("text_encoder_3", () => T5EncoderModel.FromPretrained(Sub("text_encoder_3"), options.Dtype, modelDevice, options.Variant)) : null,
                Transformer = loader.Load("transformer", () => fromFile.Contains("transformer")
                    ? SD3Transformer2DModel.FromSingleFile(options.SingleFile!, ConfigJson.Read<SD3Transformer2DModelConfig>(Path.Combine(Sub("transformer"), "config.json")), options.Dtype, modelDevice)
                    : SD3Transformer2DModel.FromPretrained(Sub("transformer"), options.Dtype, modelDevice, options.Variant)),
                Vae = loader.Load("vae", () => fromFile.Contains("vae")
                    ? AutoencoderKL.FromSingleFile(options.SingleFile!, ConfigJson.Read<AutoencoderKLConfig>(Path.Combine(Sub("vae"), "config.json")), options.Dtype, modelDevice)
                    : AutoencoderKL.FromPretrained(Sub("vae"), options.Dtype, modelDevice, options.Variant)),
                ControlNets = controlnets.Select((net, i) => loader.Load(controlnets.Count == 1 ? "controlnet" : $"controlnet.{i}", () => SD3ControlNetModel.FromPretrained(
                    SD3ControlNetFolder(Hub.ModelSource.Resolve(net, options.HubOptions, options.DownloadProgress, cancellationToken), net), options.Dtype, modelDevice))).ToArray(),
                SchedulerConfig = schedulerConfig,
                Device = device,
                Dtype = options.Dtype,
                LoadMilliseconds = loader.LoadMilliseconds,
            };
            CheckControlNets(components.ControlNets, components.Transformer);
            if (options.Offload == OffloadMode.Model) components.EnableModelCpuOffload();
            return components;
        }
        catch
        {
            loader.DisposeLoaded();
            throw;
        }
    }

    /// <summary>Returns <paramref name="folder"/> when its config.json names <c>SD3ControlNetModel</c>, else says what it is.</summary>
    /// <exception cref="ArgumentException">The folder holds another kind of ControlNet (e.g. a UNet one).</exception>
    private static string SD3ControlNetFolder(string folder, string given)
    {
        string config = Path.Combine(folder, "config.json");
        if (!File.Exists(config)) return folder; // the loader says what is missing
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(config));
        string? name = doc.RootElement.TryGetProperty("_class_name", out var c) && c.ValueKind == System.Text.Json.JsonValueKind.String ? c.GetString() : null;
        if (name is not null && name != "SD3ControlNetModel")
            throw new ArgumentException($"{given} is a {name}, not an SD3 ControlNet (SD3ControlNetModel); an SD3 model takes ControlNets made for SD3.");
        return folder;
    }

    /// <summary>
    /// Throws unless every ControlNet gives residuals the transformer can add (same inner width), takes its latents (patch
    /// size, channels) and pooled embeddings, and the ControlNets share one kind (text or not, zero pooled projections or
    /// not), as diffusers' pipeline feeds all of them as it feeds the first. With <paramref name="extraConditioningChannels"/>
    /// (what a pipeline gives beyond the latents: 0 for the control image's latents alone, 1 for the inpainting pipeline's
    /// masked-image latents and mask) each ControlNet's <c>extra_conditioning_channels</c> must equal it.
    /// </summary>
    /// <param name="controlnets">The ControlNets.</param>
    /// <param name="transformer">The transformer they steer.</param>
    /// <param name="extraConditioningChannels">The extra channels the pipeline gives, or null not to check them (loading).</param>
    /// <param name="pipelineName">diffusers' pipeline name, for messages.</param>
    /// <exception cref="ArgumentException">A ControlNet does not fit, with the reason.</exception>
    public static void CheckControlNets(IReadOnlyList<SD3ControlNetModel> controlnets, SD3Transformer2DModel transformer,
        int? extraConditioningChannels = null, string pipelineName = "StableDiffusion3ControlNetPipeline")
    {
        ArgumentNullException.ThrowIfNull(controlnets);
        ArgumentNullException.ThrowIfNull(transformer);
        var t = transformer.Config;
        foreach (var net in controlnets)
        {
            var c = net.Config;
            void Same(object theirs, object ours, string what)
            {
                if (!Equals(theirs, ours))
                    throw new ArgumentException($"The ControlNet does not fit this transformer: its {what} is {theirs}, the transformer's {ours}. Use an SD3 ControlNet made for this base model.");
            }
            Same(c.InnerDim, t.InnerDim, "inner width (heads x head dim)");
            Same(c.PatchSize, t.PatchSize, "patch_size");
            Same(c.InChannels, t.InChannels, "in_channels");
            Same(c.PooledProjectionDim, t.PooledProjectionDim, "pooled_projection_dim");
            if (c.JointAttentionDim is int joint) Same(joint, t.JointAttentionDim, "joint_attention_dim");
            if (!c.UsePosEmbed)
                throw new ArgumentException("This SD3 ControlNet has use_pos_embed false (it takes tokens, not latents); diffusers' SD3 ControlNet pipeline cannot feed it either.");
            if (extraConditioningChannels is int extra && c.ExtraConditioningChannels != extra)
                throw new ArgumentException(extra == 0
                    ? $"This SD3 ControlNet takes {c.ExtraConditioningChannels} extra conditioning channel(s); diffusers' {pipelineName} gives it the control image's latents alone, so it cannot run it{(c.ExtraConditioningChannels == 1 ? " (an inpainting ControlNet: use StableDiffusion3ControlNetInpaintingPipeline)" : "")}."
                    : $"This SD3 ControlNet takes {c.ExtraConditioningChannels} extra conditioning channel(s); diffusers' {pipelineName} gives it the masked image's latents and the mask ({extra} extra channel), so it cannot run it.");
        }
        for (int i = 1; i < controlnets.Count; i++)
            if ((controlnets[i].Config.JointAttentionDim is null) != (controlnets[0].Config.JointAttentionDim is null)
                || controlnets[i].Config.ForceZerosForPooledProjection != controlnets[0].Config.ForceZerosForPooledProjection)
                throw new ArgumentException($"SD3 ControlNet {i} is of another kind than the first (text input or force_zeros_for_pooled_projection); diffusers feeds every ControlNet as the first, so several must be of one kind.");
    }

    /// <summary>Builds the prompt encoder over these components (it can only pass precomputed embeddings through when the CLIP encoders are absent).</summary>
    public StableDiffusion3PromptEncoder CreatePromptEncoder(Action<string, int, int>? onTruncated = null) =>
        new(Tokenizer, TextEncoder, Tokenizer2, TextEncoder2, Tokenizer3, TextEncoder3, Transformer.Config.JointAttentionDim)
        {
            OnTruncated = onTruncated,
            BeforeEncoder = ActivateHook,
        };

    /// <summary>
    /// Checks an image size against what the transformer takes, before any compute: height and width multiples of the VAE
    /// scale factor x patch size, and a token grid within the stored position table (pos_embed_max_size: 96 tokens, i.e.
    /// 1536 pixels, for SD3 / SD3.5). diffusers fails on a larger size only inside the transformer's forward.
    /// </summary>
    /// <exception cref="ArgumentException">The size does not fit, with the reason and the nearest size that does.</exception>
    public void CheckImageSize(int height, int width) => CheckImageSize(Transformer.Config, Vae.VaeScaleFactor, height, width);

    /// <summary>
    /// <see cref="CheckImageSize(int, int)"/> from the configs alone, so a caller can refuse a size before loading weights.
    /// </summary>
    /// <exception cref="ArgumentException">The size does not fit.</exception>
    public static void CheckImageSize(SD3Transformer2DModelConfig transformer, int vaeScaleFactor, int height, int width)
    {
        int multiple = vaeScaleFactor * transformer.PatchSize;
        if (height <= 0 || width <= 0 || height % multiple != 0 || width % multiple != 0)
            throw new ArgumentException($"height and width must be positive multiples of {multiple}, got {height}x{width} (try {Math.Max(multiple, height - height % multiple)}x{Math.Max(multiple, width - width % multiple)}).");
        if (transformer.PosEmbedMaxSize is int tokens && (height / multiple > tokens || width / multiple > tokens))
            throw new ArgumentException($"{height}x{width} is larger than this model takes: its position table covers at most {tokens * multiple} pixels a side (pos_embed_max_size {tokens}); try {Math.Min(height, tokens * multiple)}x{Math.Min(width, tokens * multiple)}.");
    }

    /// <summary>
    /// diffusers' <c>load_lora_weights(path)</c> + <c>fuse_lora(lora_scale=scale)</c>: fuses a LoRA file's
    /// <c>transformer</c>, <c>text_encoder</c> and <c>text_encoder_2</c> parts into those models (see
    /// <see cref="LoraWeights"/>). Every part is checked against its model before any weight changes. Returns the number
    /// of adapted layers. Kohya files are refused, as diffusers' SD3 loader does not convert them.
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file is not a LoRA of these components (unknown keys or components, bad pairs).</exception>
    /// <exception cref="ArgumentException">A part does not fit its model (missing modules or other sizes).</exception>
    public int FuseLora(string path, double scale = 1.0) => LoraWeights.FuseAll(path, new Dictionary<string, nn.Module?>
    {
        ["transformer"] = Transformer,
        ["text_encoder"] = TextEncoder,
        ["text_encoder_2"] = TextEncoder2,
    }, scale, kohya: false, FusedLoras);

    /// <summary>
    /// diffusers' SD3 <c>load_ip_adapter</c> (<c>SD3IPAdapterMixin</c>): loads an SD3 / SD3.5 IP-Adapter file in
    /// InstantX/SD3.5-Large-IP-Adapter's layout into the transformer (<see cref="IPAdapterWeights.Load(SD3Transformer2DModel, string)"/>:
    /// its Resampler <c>image_proj</c> and one attention processor per attention), scale 0.5. The pipelines then take
    /// <c>IpAdapterImageEmbeds</c> (or <c>IpAdapterImage</c> with an image encoder). Under model offload the adapter moves
    /// with the transformer.
    /// </summary>
    /// <remarks>With <paramref name="imageEncoderFolder"/> (the InstantX repository has none: diffusers users pass
    /// <c>image_encoder=SiglipVisionModel.from_pretrained("google/siglip-so400m-patch14-384")</c>) the SigLIP image encoder
    /// is loaded too, in the components' dtype, with a <see cref="SiglipImageProcessor"/> at its image size; an encoder
    /// already loaded is kept, as diffusers does.</remarks>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="WeightLoadException">The file does not fit this transformer, or the encoder its folder.</exception>
    /// <exception cref="InvalidOperationException">An IP-Adapter is already loaded.</exception>
    public void LoadIpAdapter(string path, string? imageEncoderFolder = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (Transformer.HasIpAdapter) throw new InvalidOperationException("An IP-Adapter is already loaded into this transformer.");
        var encoder = LoadIpAdapterWithEncoder(imageEncoderFolder, ImageEncoder is not null,
            (folder, dtype, device) => SiglipVisionModel.FromPretrained(folder, dtype, device), _ => IPAdapterWeights.Load(Transformer, path));
        if (encoder is null) return;
        ImageEncoder = encoder;
        FeatureExtractor = new SiglipImageProcessor(encoder.Config.ImageSize);
        RefreshModelOffload();
    }

    /// <summary>The IP-Adapter's SigLIP image encoder (diffusers' <c>image_encoder</c>), or null.</summary>
    public SiglipVisionModel? ImageEncoder { get; private set; }

    /// <summary>The image encoder's preprocessing (diffusers' <c>feature_extractor</c>), or null.</summary>
    public SiglipImageProcessor? FeatureExtractor { get; private set; }

    /// <summary>diffusers' SD3 <c>set_ip_adapter_scale</c>: the weight of the image attention in every layer (0 turns it off).</summary>
    /// <exception cref="InvalidOperationException">No IP-Adapter is loaded.</exception>
    public void SetIpAdapterScale(double scale) => Transformer.SetIpAdapterScale(scale);

    /// <inheritdoc />
    protected override IReadOnlyDictionary<string, nn.Module> OffloadableModels()
    {
        // diffusers' model_cpu_offload_seq: text_encoder->text_encoder_2->text_encoder_3->image_encoder->transformer->vae.
        var models = new Dictionary<string, nn.Module>();
        if (TextEncoder is not null) models["text_encoder"] = TextEncoder;
        if (TextEncoder2 is not null) models["text_encoder_2"] = TextEncoder2;
        if (TextEncoder3 is not null) models["text_encoder_3"] = TextEncoder3;
        if (ImageEncoder is not null) models["image_encoder"] = ImageEncoder;
        // The ControlNets come to the device with the transformer and stay beside it until the call ends.
        models["transformer"] = ControlNets.Count == 0 ? Transformer : new ModuleGroup([Transformer, .. ControlNets]);
        models["vae"] = Vae;
        return models;
    }

    /// <inheritdoc />
    protected override void FreeModels()
    {
        Transformer.Dispose();
        foreach (var net in ControlNets) net.Dispose();
        Vae.Dispose();
        TextEncoder?.Dispose();
        TextEncoder2?.Dispose();
        TextEncoder3?.Dispose();
        ImageEncoder?.Dispose();
    }
}
