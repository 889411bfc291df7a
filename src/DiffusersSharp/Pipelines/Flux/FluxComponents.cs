using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Loaders;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.ControlNets;
using DiffusersSharp.Models.ImageEncoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// The loaded components of a Flux.1 pipeline folder (model_index.json <c>FluxPipeline</c>, <c>FluxFillPipeline</c> or
/// <c>FluxKontextPipeline</c>: the same parts; Fill's transformer takes 384 channels): the transformer, the
/// 16-channel VAE, CLIP-L (pooled output only), T5 v1.1 XXL, their tokenizers and the scheduler config. Freed when the
/// creator and the last pipeline using them are done.
/// </summary>
public sealed class FluxComponents : PipelineComponents
{
    /// <summary>The pipeline class names these components load.</summary>
    public static bool IsSupportedPipeline(string pipelineClass) =>
        pipelineClass is FluxPipelineClass or FillPipelineClass or KontextPipelineClass or ControlPipelineClass;

    /// <summary>model_index.json's class of FLUX.1-dev / schnell.</summary>
    public const string FluxPipelineClass = "FluxPipeline";

    /// <summary>model_index.json's class of FLUX.1-Fill-dev (run it with <see cref="FluxFillPipeline"/>).</summary>
    public const string FillPipelineClass = "FluxFillPipeline";

    /// <summary>model_index.json's class of FLUX.1-Kontext-dev (run it with <see cref="FluxKontextPipeline"/>).</summary>
    public const string KontextPipelineClass = "FluxKontextPipeline";

    /// <summary>model_index.json's class of FLUX.1-Canny-dev and FLUX.1-Depth-dev (run them with <see cref="FluxControlPipeline"/>
    /// or <see cref="FluxControlImg2ImgPipeline"/>).</summary>
    public const string ControlPipelineClass = "FluxControlPipeline";

    /// <summary>The folder's model_index.json class (<see cref="FluxPipelineClass"/> for components built in code).</summary>
    public string PipelineClass { get; init; } = FluxPipelineClass;

    /// <summary>The Flux transformer.</summary>
    public required FluxTransformer2DModel Transformer { get; init; }

    private readonly IReadOnlyList<FluxControlNetModel> _controlNets = [];

    /// <summary>The ControlNet of the Flux ControlNet pipelines (diffusers' <c>controlnet</c> component), loaded beside the
    /// base model (<see cref="FromPretrained(string, PipelineLoadOptions, string?, CancellationToken)"/>), when there is
    /// exactly one; null with none or several (see <see cref="ControlNets"/>). Setting it sets <see cref="ControlNets"/>
    /// to that one.</summary>
    public FluxControlNetModel? ControlNet
    {
        get => _controlNets.Count == 1 ? _controlNets[0] : null;
        init => _controlNets = value is null ? [] : [value];
    }

    /// <summary>Every ControlNet, in the order their control images, scales and guidance windows are given (several:
    /// diffusers' <c>FluxMultiControlNetModel</c>, whose residuals are summed); empty without. Freed with the other models;
    /// under model offload they move with the transformer.</summary>
    public IReadOnlyList<FluxControlNetModel> ControlNets
    {
        get => _controlNets;
        init => _controlNets = value?.ToArray() ?? [];
    }

    /// <summary>The 16-channel VAE (scaling and shift factors from its config).</summary>
    public required AutoencoderKL Vae { get; init; }

    /// <summary>CLIP-L, or null for a pipeline that only takes prompt embeddings.</summary>
    public CLIPTextModel? TextEncoder { get; init; }

    /// <summary>T5 v1.1 XXL encoder, or null with <see cref="TextEncoder"/>.</summary>
    public T5EncoderModel? TextEncoder2 { get; init; }

    /// <summary>CLIP-L tokenizer (null with <see cref="TextEncoder"/>).</summary>
    public CLIPTokenizer? Tokenizer { get; init; }

    /// <summary>T5 tokenizer (null with <see cref="TextEncoder2"/>).</summary>
    public T5Tokenizer? Tokenizer2 { get; init; }

    /// <summary>The scheduler config; every call builds its own scheduler from it (schedulers hold per-call state).</summary>
    public required FlowMatchEulerDiscreteSchedulerConfig SchedulerConfig { get; init; }

    /// <summary>Loads every component of a diffusers Flux pipeline folder, or of a hub repo id (downloaded into the hub cache first).</summary>
    /// <exception cref="UnknownComponentException">model_index.json names a class DiffusersSharp does not implement.</exception>
    /// <exception cref="InvalidDataException">The folder is not a Flux pipeline or lacks a component.</exception>
    public static FluxComponents FromPretrained(string model, PipelineLoadOptions options, CancellationToken cancellationToken = default) =>
        FromPretrained(model, options, Array.Empty<string>(), cancellationToken);

    /// <summary>
    /// Loads the components of <paramref name="model"/> as <see cref="FromPretrained(string, PipelineLoadOptions, CancellationToken)"/>
    /// and, unless null, a Flux ControlNet from <paramref name="controlnet"/> (a diffusers <c>controlnet</c> folder or hub repo
    /// id, e.g. InstantX/FLUX.1-dev-Controlnet-Canny) in the same dtype, as diffusers'
    /// <c>from_pretrained(base, controlnet=FluxControlNetModel.from_pretrained(cn))</c>. The ControlNet must fit the transformer.
    /// </summary>
    /// <exception cref="ArgumentException">The ControlNet is another kind or does not fit the transformer.</exception>
    /// <exception cref="NotSupportedException">The ControlNet is a ControlNet-Union or XLabs one.</exception>
    public static FluxComponents FromPretrained(string model, PipelineLoadOptions options, string? controlnet, CancellationToken cancellationToken = default) =>
        FromPretrained(model, options, controlnet is null ? Array.Empty<string>() : [controlnet], cancellationToken);

    /// <summary>
    /// Loads the components of <paramref name="model"/> and every Flux ControlNet of <paramref name="controlnets"/> (folders
    /// or hub repo ids) in the same dtype, in that order: several are diffusers' <c>FluxMultiControlNetModel</c>. Each must
    /// fit the transformer, and several must agree on guidance_embeds (diffusers gives all of them the first one's guidance).
    /// </summary>
    /// <exception cref="ArgumentException">A ControlNet is another kind, does not fit the transformer, or they disagree on guidance_embeds.</exception>
    /// <exception cref="NotSupportedException">A ControlNet is a ControlNet-Union or XLabs one.</exception>
    public static FluxComponents FromPretrained(string model, PipelineLoadOptions options, IReadOnlyList<string> controlnets,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(controlnets);
        var device = options.ParsedDevice; // fail on a bad device before any download
        var modelDevice = options.Offload == OffloadMode.Model ? CPU : device;
        var (folder, index) = OpenPipelineFolder(model, options, "Flux", IsSupportedPipeline, "FluxPipeline, FluxFillPipeline or FluxKontextPipeline",
            ["transformer", "vae", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "scheduler"], skipUnused: false, cancellationToken);

        var loader = new ComponentLoader(folder, cancellationToken);
        string Sub(string name) => loader.Sub(name);
        try
        {
            var schedulerConfig = ConfigJson.Read<FlowMatchEulerDiscreteSchedulerConfig>(Path.Combine(Sub("scheduler"), "scheduler_config.json"));
            var components = new FluxComponents
            {
                // Left out with LoadTextEncoders false (text_encoder=None, text_encoder_2=None), with the tokenizers they
                // would use: the components take prompt embeddings only.
                Tokenizer = options.LoadTextEncoders ? loader.Keep(CLIPTokenizer.FromFolder(Sub("tokenizer"))) : null,
                Tokenizer2 = options.LoadTextEncoders ? loader.Keep(T5Tokenizer.FromFolder(Sub("tokenizer_2"))) : null,
                TextEncoder = options.LoadTextEncoders ? loader.Load("text_encoder", () => CLIPTextModel.FromPretrained(Sub("text_encoder"), options.Dtype, modelDevice, options.Variant)) : null,
                TextEncoder2 = options.LoadTextEncoders ? loader.Load("text_encoder_2", () => T5EncoderModel.FromPretrained(Sub("text_encoder_2"), options.Dtype, modelDevice, options.Variant)) : null,
                Transformer = loader.Load("transformer", () => FluxTransformer2DModel.FromPretrained(Sub("transformer"), options.Dtype, modelDevice, options.Variant)),
                Vae = loader.Load("vae", () => AutoencoderKL.FromPretrained(Sub("vae"), options.Dtype, modelDevice, options.Variant)),
                ControlNets = controlnets.Select((net, i) => loader.Load(controlnets.Count == 1 ? "controlnet" : $"controlnet.{i}", () => FluxControlNetModel.FromPretrained(
                    ControlNetFolder(Hub.ModelSource.Resolve(net, options.HubOptions, options.DownloadProgress, cancellationToken), net),
                    options.Dtype, modelDevice))).ToArray(),
                SchedulerConfig = schedulerConfig,
                PipelineClass = index.ClassName,
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

    /// <summary>Returns <paramref name="folder"/> when its config.json names <c>FluxControlNetModel</c>, else says what it is.</summary>
    private static string ControlNetFolder(string folder, string given)
    {
        string config = Path.Combine(folder, "config.json");
        if (!File.Exists(config)) return folder; // the loader says what is missing
        using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(config));
        string? name = doc.RootElement.TryGetProperty("_class_name", out var c) && c.ValueKind == System.Text.Json.JsonValueKind.String ? c.GetString() : null;
        if (name is not null && name != "FluxControlNetModel")
            throw new ArgumentException($"{given} is a {name}, not a Flux ControlNet (FluxControlNetModel); a Flux model takes ControlNets made for Flux.");
        return folder;
    }

    /// <summary>
    /// Throws unless every ControlNet's residuals and inputs fit the transformer (widths, channels, text and pooled sizes)
    /// and, with several, they agree on guidance_embeds: diffusers' Flux ControlNet pipelines give every ControlNet the
    /// guidance the first one's config asks for, which a ControlNet of the other kind cannot take.
    /// </summary>
    /// <exception cref="ArgumentException">A ControlNet does not fit, with the reason.</exception>
    public static void CheckControlNets(IReadOnlyList<FluxControlNetModel> controlnets, FluxTransformer2DModel transformer)
    {
        ArgumentNullException.ThrowIfNull(controlnets);
        ArgumentNullException.ThrowIfNull(transformer);
        var t = transformer.Config;
        foreach (var controlnet in controlnets)
        {
            ArgumentNullException.ThrowIfNull(controlnet, nameof(controlnets));
            var c = controlnet.Config;
            void Same(object theirs, object ours, string what)
            {
                if (!Equals(theirs, ours))
                    throw new ArgumentException($"The ControlNet does not fit this transformer: its {what} is {theirs}, the transformer's {ours}. Use a Flux ControlNet made for this base model.");
            }
            Same(c.InnerDim, t.InnerDim, "inner width (heads x head dim)");
            Same(c.InChannels, t.InChannels, "in_channels");
            Same(c.JointAttentionDim, t.JointAttentionDim, "joint_attention_dim");
            Same(c.PooledProjectionDim, t.PooledProjectionDim, "pooled_projection_dim");
            Same(string.Join(",", c.AxesDimsRope), string.Join(",", t.AxesDimsRope), "axes_dims_rope");
        }
        for (int i = 1; i < controlnets.Count; i++)
            if (controlnets[i].Config.GuidanceEmbeds != controlnets[0].Config.GuidanceEmbeds)
                throw new ArgumentException($"Flux ControlNet {i} has guidance_embeds {controlnets[i].Config.GuidanceEmbeds.ToString().ToLowerInvariant()}, the first {controlnets[0].Config.GuidanceEmbeds.ToString().ToLowerInvariant()}; diffusers gives every ControlNet the first one's guidance input, so several must agree.");
    }

    /// <summary>Builds the prompt encoder over these components.</summary>
    public FluxPromptEncoder CreatePromptEncoder(Action<string, int, int>? onTruncated = null) =>
        new(Tokenizer, TextEncoder, Tokenizer2, TextEncoder2)
        {
            OnTruncated = onTruncated,
            BeforeEncoder = ActivateHook,
        };

    /// <summary>
    /// diffusers' <c>load_lora_weights(path)</c> + <c>fuse_lora(lora_scale=scale)</c> for a Flux LoRA in any layout
    /// diffusers reads (<see cref="LoraKeyFormat"/>): diffusers' own (<c>transformer.*</c> and CLIP <c>text_encoder.*</c>
    /// lora_A / lora_B pairs, optional alphas and lora_B biases), kohya sd-scripts' and ComfyUI's
    /// (<c>lora_unet_double_blocks_0_img_attn_qkv</c>, <c>lora_te1_</c> for CLIP), XLabs-AI's
    /// (<c>double_blocks.0.processor.qkv_lora1.down.weight</c>), fal's Kontext trainer's (BFL's names under
    /// <c>base_model.model.</c>), and BFL's (FLUX.1-Canny-dev-lora /
    /// Depth-dev-lora: <c>double_blocks.0.img_attn.qkv.lora_A.weight</c> with QK-norm scales). A control LoRA widens the
    /// transformer's x_embedder to take the control image's latents (zero columns; <c>Transformer.Config.InChannels</c>
    /// doubles), after which <see cref="FluxControlPipeline"/> runs on these components; its QK-norm weights replace the
    /// transformer's, unscaled. Every part is checked before any weight changes. Returns the number of adapted layers.
    /// </summary>
    /// <remarks>
    /// Three differences from diffusers 0.36, which mis-converts these files: the final modulation's down matrix is not
    /// permuted (diffusers swaps its rank rows along with the up matrix's output rows, which changes the product; the bug is
    /// reported upstream as diffusers#13998 and fixed there for kohya files only); the non-block layers of kohya /
    /// ComfyUI files (img_in, txt_in, time_in, vector_in, guidance_in, final_layer) are applied (diffusers converts them to
    /// keys without the <c>transformer.</c> prefix, which its loader then skips without a word); and kohya's CLIP layers
    /// (<c>lora_te1_</c>) are applied (diffusers' converter keeps only <c>lora_unet_</c> and <c>lora_te_</c> keys).
    /// </remarks>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file is not a LoRA of these components (unknown keys or components, bad pairs).</exception>
    /// <exception cref="ArgumentException">A part does not fit its model (missing modules or other sizes).</exception>
    public int FuseLora(string path, double scale = 1.0) => LoraWeights.FuseAll(path, new Dictionary<string, nn.Module?>
    {
        ["transformer"] = Transformer,
        ["text_encoder"] = TextEncoder,
    }, scale, kohya: true, FusedLoras);

    /// <summary>
    /// Whether the LoRA at <paramref name="path"/> is a structural-control LoRA (FLUX.1-Canny-dev-lora, Depth-dev-lora) for a
    /// transformer of <paramref name="transformer"/>'s config: one that widens its x_embedder, so that the components run
    /// <see cref="FluxControlPipeline"/> once it is fused. Reads the file's header only.
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    public static bool IsControlLora(string path, FluxTransformer2DModelConfig transformer)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        return LoraWeights.FluxInputWidth(path) is { } width && width > transformer.InChannels;
    }

    /// <summary>
    /// diffusers' <c>load_textual_inversion(path, token=token)</c> for Flux: the embeddings of a safetensors file become
    /// tokens of the CLIP tokenizer and rows of the CLIP-L text encoder (diffusers' default pair; T5 takes none here), and
    /// CLIP prompts that name them are rewritten for multi-vector embeddings (see <see cref="TextualInversion"/>); the
    /// <c>clip_l</c> half of an SDXL file is taken when it is one. Flux uses CLIP only for its pooled embedding. Returns
    /// the tokens added.
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">A pickle file, or no textual inversion embedding.</exception>
    /// <exception cref="ArgumentException">diffusers' checks (token in the vocabulary, width not the encoder's, no text encoder...).</exception>
    public IReadOnlyList<string> LoadTextualInversion(string path, string? token = null) =>
        LoadTextualInversion([path], token is null ? null : [token]);

    /// <summary>diffusers' <c>load_textual_inversion([paths], token=[tokens])</c> into the CLIP pair (see
    /// <see cref="TextualInversion.Load(CLIPTokenizer, ICLIPTextEncoder, IReadOnlyList{string}, IReadOnlyList{string?}?, string?)"/>).</summary>
    /// <inheritdoc cref="LoadTextualInversion(string, string?)"/>
    public IReadOnlyList<string> LoadTextualInversion(IReadOnlyList<string> paths, IReadOnlyList<string?>? tokens, string? key = null) =>
        TextualInversion.LoadInto(Tokenizer, TextEncoder, TextualInversionTarget.TextEncoder, "FluxPipeline", paths, tokens, key);

    /// <summary>diffusers' <c>load_textual_inversion(tensor, token=tokens)</c> into the CLIP pair.</summary>
    /// <exception cref="ArgumentException">diffusers' checks.</exception>
    public IReadOnlyList<string> LoadTextualInversion(Tensor embedding, IReadOnlyList<string> tokens)
    {
        var (tokenizer, encoder) = TextualInversion.Pair(Tokenizer, TextEncoder, TextualInversionTarget.TextEncoder, "FluxPipeline");
        return TextualInversion.Load(tokenizer, encoder, embedding, tokens);
    }

    /// <summary>diffusers' <c>unload_textual_inversion(tokens)</c> (see <see cref="TextualInversion.Unload"/>): all textual
    /// inversion tokens when <paramref name="tokens"/> is null. Returns the tokens removed.</summary>
    /// <exception cref="ArgumentException">None of the tokens is loaded, or there is no text encoder.</exception>
    public IReadOnlyList<string> UnloadTextualInversion(IReadOnlyList<string>? tokens = null)
    {
        var (tokenizer, encoder) = TextualInversion.Pair(Tokenizer, TextEncoder, TextualInversionTarget.TextEncoder, "FluxPipeline");
        return TextualInversion.Unload(tokenizer, encoder, tokens);
    }

    /// <summary>
    /// diffusers' <c>FluxIPAdapterMixin.load_ip_adapter</c> for a local safetensors file in XLabs-AI/flux-ip-adapter's
    /// layout (see <see cref="FluxIPAdapterWeights"/>): every double-stream block gains the image key/value path, the
    /// transformer the image projection, scale 1.0. The pipelines then take <c>IpAdapterImageEmbeds</c> (or
    /// <c>IpAdapterImage</c> with an image encoder). Under model offload the adapter moves with the transformer.
    /// </summary>
    /// <param name="path">The IP-Adapter file (e.g. XLabs-AI/flux-ip-adapter's ip_adapter.safetensors).</param>
    /// <param name="imageEncoder">The CLIP image encoder, diffusers' <c>image_encoder_pretrained_model_name_or_path</c>: a
    /// <c>CLIPVisionModelWithProjection</c> folder (config.json + weights); XLabs' adapter takes CLIP ViT-L/14's
    /// (openai/clip-vit-large-patch14). Loaded in the components' dtype (diffusers' default is float16) with a
    /// <see cref="CLIPImageProcessor"/> at its image size; an encoder already loaded is kept, as diffusers does. Null:
    /// none, so only image embeddings can be passed (diffusers' <c>image_encoder_pretrained_model_name_or_path=None</c>).</param>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="WeightLoadException">The file does not fit this transformer, or the encoder's weights its config.</exception>
    /// <exception cref="InvalidOperationException">An IP-Adapter is already loaded.</exception>
    /// <exception cref="ArgumentException">The image encoder's embedding width is not the adapter's.</exception>
    public void LoadIpAdapter(string path, string? imageEncoder = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        LoadIpAdapter([path], imageEncoder);
    }

    /// <summary>diffusers' <c>load_ip_adapter</c> with a list of files: one IP-Adapter per file, in order (see
    /// <see cref="LoadIpAdapter(string, string?)"/>); every file is checked before anything changes.</summary>
    /// <inheritdoc cref="LoadIpAdapter(string, string?)"/>
    public void LoadIpAdapter(IReadOnlyList<string> paths, string? imageEncoder = null)
    {
        ArgumentNullException.ThrowIfNull(paths);
        if (Transformer.HasIpAdapter) throw new InvalidOperationException("An IP-Adapter is already loaded into this transformer.");
        var encoder = LoadIpAdapterWithEncoder(imageEncoder, ImageEncoder is not null,
            (folder, dtype, device) => CLIPVisionModelWithProjection.FromPretrained(folder, dtype, device),
            loaded => FluxIPAdapterWeights.Load(Transformer, paths, (loaded ?? ImageEncoder)?.Config.ProjectionDim));
        if (encoder is null) return;
        ImageEncoder = encoder;
        FeatureExtractor = new CLIPImageProcessor(encoder.Config.ImageSize);
        RefreshModelOffload();
    }

    /// <summary>
    /// diffusers' <c>unload_ip_adapter</c>: the transformer's IP-Adapter layers are removed (see
    /// <see cref="FluxTransformer2DModel.UnloadIpAdapter"/>) and the image encoder and feature extractor are freed, so
    /// another adapter can be loaded. Nothing happens without an adapter.
    /// </summary>
    public void UnloadIpAdapter()
    {
        Transformer.UnloadIpAdapter();
        if (ImageEncoder is not { } encoder) return;
        ImageEncoder = null;
        FeatureExtractor = null;
        RefreshModelOffload(); // the offload sequence without image_encoder (the old one still moves it back first)
        encoder.Dispose();
    }

    /// <summary>The IP-Adapter's CLIP image encoder (diffusers' <c>image_encoder</c>), or null.</summary>
    public CLIPVisionModelWithProjection? ImageEncoder { get; private set; }

    /// <summary>The image encoder's preprocessing (diffusers' <c>feature_extractor</c>), or null.</summary>
    public CLIPImageProcessor? FeatureExtractor { get; private set; }

    /// <summary>diffusers' <c>set_ip_adapter_scale(scale)</c>: one scale for every block of every adapter.</summary>
    /// <exception cref="InvalidOperationException">No IP-Adapter is loaded.</exception>
    public void SetIpAdapterScale(double scale) => Transformer.SetIpAdapterScale(scale);

    /// <summary>diffusers' <c>set_ip_adapter_scale([..])</c>: with one adapter one scale per double-stream block, with
    /// several one scale per adapter (see <see cref="FluxTransformer2DModel.SetIpAdapterScale(IReadOnlyList{double})"/>).</summary>
    /// <exception cref="InvalidOperationException">No IP-Adapter is loaded.</exception>
    /// <exception cref="ArgumentException">The count does not fit.</exception>
    public void SetIpAdapterScale(IReadOnlyList<double> scales) => Transformer.SetIpAdapterScale(scales);

    /// <summary>diffusers' <c>set_ip_adapter_scale([[..], ..])</c>: per adapter one scale or one per double-stream block.</summary>
    /// <exception cref="InvalidOperationException">No IP-Adapter is loaded.</exception>
    /// <exception cref="ArgumentException">A count does not fit.</exception>
    public void SetIpAdapterScale(IReadOnlyList<IReadOnlyList<double>> scales) => Transformer.SetIpAdapterScale(scales);

    /// <inheritdoc />
    protected override IReadOnlyDictionary<string, nn.Module> OffloadableModels()
    {
        // diffusers' model_cpu_offload_seq: text_encoder->text_encoder_2->image_encoder->transformer->vae.
        var models = new Dictionary<string, nn.Module>();
        if (TextEncoder is not null) models["text_encoder"] = TextEncoder;
        if (TextEncoder2 is not null) models["text_encoder_2"] = TextEncoder2;
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
        ImageEncoder?.Dispose();
    }
}
