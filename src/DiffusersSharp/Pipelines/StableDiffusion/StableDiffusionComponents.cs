using System.Text.Json.Nodes;
using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Loaders;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Adapters;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.ControlNets;
using DiffusersSharp.Models.ImageEncoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Unets;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tokenizers;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Pipelines.StableDiffusion;

/// <summary>
/// The loaded components of a UNet pipeline folder: Stable Diffusion 1.x / 2.x (<c>StableDiffusionPipeline</c>), SDXL
/// (<c>StableDiffusionXLPipeline</c>, with a second text encoder) or the x4 upscaler (<c>StableDiffusionUpscalePipeline</c>,
/// with a low-resolution scheduler). Shared by the text-to-image, image-to-image and inpainting pipelines of the family
/// (<c>FromPipe</c>); freed when the last pipeline using them is disposed.
/// </summary>
public sealed class StableDiffusionComponents : SwappableSchedulerComponents
{
    private static readonly string[] XLPipelines = ["StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline",
        StableDiffusionXL.StableDiffusionXLInstructPix2PixPipeline.PipelineClass];
    private static readonly string[] SDPipelines = ["StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline",
        StableDiffusionInstructPix2PixPipeline.PipelineClass, LatentConsistencyModelPipeline.PipelineClass, LatentConsistencyModelImg2ImgPipeline.PipelineClass,
        StableDiffusionUpscalePipeline.PipelineClass, StableDiffusionLatentUpscalePipeline.PipelineClass];

    /// <summary>The denoising UNet.</summary>
    public required UNet2DConditionModel Unet { get; init; }

    private readonly IReadOnlyList<ControlNetModel> _controlNets = [];

    /// <summary>The ControlNet of the ControlNet pipelines (diffusers' <c>controlnet</c> component), loaded beside the
    /// base model (<see cref="FromPretrained(string, PipelineLoadOptions, string?, CancellationToken)"/>), when there is
    /// exactly one; null with none or several (see <see cref="ControlNets"/>). Setting it sets <see cref="ControlNets"/>
    /// to that one.</summary>
    public ControlNetModel? ControlNet
    {
        get => _controlNets.Count == 1 ? _controlNets[0] : null;
        init => _controlNets = value is null ? [] : [value];
    }

    /// <summary>Every ControlNet, in the order their control images, scales and guidance windows are given (several:
    /// diffusers' <c>MultiControlNetModel</c>, whose residuals are summed); empty without. Freed with the other models;
    /// under model offload they move with the UNet.</summary>
    public IReadOnlyList<ControlNetModel> ControlNets
    {
        get => _controlNets;
        init => _controlNets = value?.ToArray() ?? [];
    }

    private readonly IReadOnlyList<T2IAdapter> _adapters = [];

    /// <summary>The T2I-Adapters of the adapter pipelines (diffusers' <c>adapter</c> component: one
    /// <see cref="T2IAdapter"/>, or several as a <c>MultiAdapter</c>), in the order their images and scales are given;
    /// empty without. Loaded beside the base model (<see cref="FromPretrained(string, PipelineLoadOptions, IReadOnlyList{string}, IReadOnlyList{string}, CancellationToken)"/>);
    /// freed with the other models; under model offload they move to the device before the UNet, as diffusers'
    /// <c>text_encoder->adapter->unet->vae</c>.</summary>
    public IReadOnlyList<T2IAdapter> Adapters
    {
        get => _adapters;
        init => _adapters = value?.ToArray() ?? [];
    }

    private readonly IReadOnlyList<ControlNetUnionModel> _controlNetUnions = [];

    /// <summary>The ControlNet-Union models of the ControlNet-Union pipelines (diffusers' <c>controlnet</c> component as a
    /// <c>ControlNetUnionModel</c>; several: <c>MultiControlNetUnionModel</c>), loaded beside the base model from folders
    /// whose config names that class (see <see cref="ControlNetUnionModel.IsControlNetUnion"/>); empty without. The
    /// components hold ControlNets of one kind: these or <see cref="ControlNets"/>. Freed with the other models; under
    /// model offload they move with the UNet.</summary>
    public IReadOnlyList<ControlNetUnionModel> ControlNetUnions
    {
        get => _controlNetUnions;
        init => _controlNetUnions = value?.ToArray() ?? [];
    }

    /// <summary>The 4-channel VAE.</summary>
    public required AutoencoderKL Vae { get; init; }

    /// <summary>CLIP text encoder (CLIP-L for SD 1.x and SDXL, OpenCLIP-H for SD 2.x); null for SDXL models that only
    /// use the second encoder (the refiner, whose model_index.json has <c>text_encoder: [null, null]</c>).</summary>
    public CLIPTextModel? TextEncoder { get; init; }

    /// <summary>SDXL's OpenCLIP-G with projection; null for SD 1.x / 2.x.</summary>
    public CLIPTextModelWithProjection? TextEncoder2 { get; init; }

    /// <summary>The tokenizer of <see cref="TextEncoder"/> (null exactly when it is).</summary>
    public CLIPTokenizer? Tokenizer { get; init; }

    /// <summary>The tokenizer of <see cref="TextEncoder2"/> (SDXL).</summary>
    public CLIPTokenizer? Tokenizer2 { get; init; }

    /// <summary>True for SDXL: a second text encoder, or (for components that only take prompt embeddings, diffusers'
    /// <c>text_encoder_2=None</c>) a UNet conditioned on SDXL's text_time embedding.</summary>
    public bool IsXL => TextEncoder2 is not null || Unet.Config.AdditionEmbedType == "text_time";

    /// <summary>SDXL's <c>force_zeros_for_empty_prompt</c> (model_index.json): without a negative prompt the negative
    /// embeddings are zeros rather than the encoding of "".</summary>
    public bool ForceZerosForEmptyPrompt { get; init; } = true;

    /// <summary>SDXL image-to-image and inpainting: <c>requires_aesthetics_score</c> (model_index.json; true for the
    /// refiner). The UNet is then conditioned on original size, crop corner and an aesthetic score (5 time ids) instead
    /// of original size, crop corner and target size (6). Settable, as diffusers'
    /// <c>pipe.register_to_config(requires_aesthetics_score=...)</c>; text-to-image always uses 6.</summary>
    public bool RequiresAestheticsScore { get; set; }

    /// <summary>model_index.json's <c>is_cosxl_edit</c> (false without one): the default of
    /// <see cref="StableDiffusionXL.StableDiffusionXLInstructPix2PixPipeline.IsCosXLEdit"/>, as diffusers' <c>from_pretrained</c>
    /// takes that keyword from the pipeline config when it is not passed.</summary>
    public bool IsCosXLEdit { get; init; }

    /// <summary>
    /// The x4 upscaler's <c>low_res_scheduler</c> (a <c>DDPMScheduler</c>: it adds <c>noise_level</c>'s noise to the
    /// low-resolution image), or null for every other model. Set, these are upscaler components, which only
    /// <see cref="StableDiffusionUpscalePipeline"/> runs.
    /// </summary>
    public DDPMSchedulerConfig? LowResSchedulerConfig { get; init; }

    /// <summary>The x4 upscaler's highest <c>noise_level</c> (model_index.json's <c>max_noise_level</c>, default 350, as
    /// diffusers' constructor has it).</summary>
    public int MaxNoiseLevel { get; init; } = 350;

    /// <summary>Whether these are the x4 upscaler's components (<see cref="LowResSchedulerConfig"/> is set).</summary>
    public bool IsUpscaler => LowResSchedulerConfig is not null;

    /// <summary>The UNet's <c>sample_size</c> as raised by an outdated-config fix-up (64), or null.</summary>
    internal int? FixedUnetSampleSize { get; private set; }

    /// <summary>
    /// Rewrites outdated configs as diffusers' SD 1.x / 2.x text-to-image, image-to-image and inpainting pipeline
    /// constructors do on the (shared) scheduler and UNet: see <see cref="OutdatedConfigs"/>.
    /// </summary>
    internal void FixOutdatedConfigs(OutdatedConfigs.SchedulerFixups fixups)
    {
        ReplaceSchedulerConfig(OutdatedConfigs.Fix(SchedulerConfig, fixups));
        if (OutdatedConfigs.UnetSampleSizeTooSmall(Unet.Config)) FixedUnetSampleSize = 64;
    }

    /// <summary>Whether <paramref name="pipelineClass"/> (model_index.json's <c>_class_name</c>) is an SD 1.x / 2.x or SDXL pipeline.</summary>
    public static bool IsSupportedPipeline(string pipelineClass) => SDPipelines.Contains(pipelineClass) || XLPipelines.Contains(pipelineClass);

    /// <summary>
    /// Loads every component of a diffusers SD 1.x / 2.x or SDXL pipeline folder, or of a hub repo id. With
    /// <see cref="PipelineLoadOptions.SingleFile"/> (an original LDM / SGM checkpoint) the UNet and whichever of the VAE
    /// and text encoders the file holds come from it, with the folder's configs; the rest from the folder.
    /// </summary>
    /// <exception cref="UnknownComponentException">model_index.json names a class DiffusersSharp does not implement.</exception>
    /// <exception cref="InvalidDataException">The folder is not such a pipeline, or misses a component.</exception>
    public static StableDiffusionComponents FromPretrained(string model, PipelineLoadOptions options, CancellationToken cancellationToken = default) =>
        FromPretrained(model, options, (string?)null, cancellationToken);

    /// <summary>
    /// Loads the components as <see cref="FromPretrained(string, PipelineLoadOptions, CancellationToken)"/>, and a
    /// ControlNet from <paramref name="controlnet"/> (a diffusers <c>controlnet</c> folder or hub repo id, e.g.
    /// lllyasviel/sd-controlnet-canny) in the same dtype, as diffusers'
    /// <c>from_pretrained(base, controlnet=ControlNetModel.from_pretrained(cn))</c>. The ControlNet must fit the UNet
    /// (same cross-attention width, channels and SDXL conditioning).
    /// </summary>
    /// <exception cref="UnknownComponentException">model_index.json names a class DiffusersSharp does not implement.</exception>
    /// <exception cref="InvalidDataException">The folder is not such a pipeline, or misses a component.</exception>
    /// <exception cref="ArgumentException">The ControlNet does not fit the UNet.</exception>
    public static StableDiffusionComponents FromPretrained(string model, PipelineLoadOptions options, string? controlnet, CancellationToken cancellationToken = default) =>
        FromPretrained(model, options, controlnet is null ? [] : [controlnet], cancellationToken);

    /// <summary>
    /// Loads the components as <see cref="FromPretrained(string, PipelineLoadOptions, CancellationToken)"/>, and every
    /// ControlNet of <paramref name="controlnets"/> (diffusers <c>controlnet</c> folders or hub repo ids) in the same
    /// dtype, in that order: several are diffusers' <c>from_pretrained(base, controlnet=[cn1, cn2])</c>
    /// (<c>MultiControlNetModel</c>). Each must fit the UNet. ControlNet-Union folders (SDXL; see
    /// <see cref="ControlNetUnionModel.IsControlNetUnion"/>) load as <see cref="ControlNetUnionModel"/>s into
    /// <see cref="ControlNetUnions"/>; the ControlNets must all be of one kind, as diffusers' pipelines take them.
    /// </summary>
    /// <exception cref="UnknownComponentException">model_index.json names a class DiffusersSharp does not implement.</exception>
    /// <exception cref="InvalidDataException">The folder is not such a pipeline, or misses a component.</exception>
    /// <exception cref="ArgumentException">A ControlNet does not fit the UNet.</exception>
    public static StableDiffusionComponents FromPretrained(string model, PipelineLoadOptions options, IReadOnlyList<string> controlnets,
        CancellationToken cancellationToken = default) => FromPretrained(model, options, controlnets, [], cancellationToken);

    /// <summary>
    /// Loads the components as <see cref="FromPretrained(string, PipelineLoadOptions, IReadOnlyList{string}, CancellationToken)"/>
    /// (the ControlNets of <paramref name="controlnets"/>, possibly none), and every T2I-Adapter of
    /// <paramref name="adapters"/> (diffusers T2I-Adapter folders or hub repo ids, e.g. TencentARC/t2iadapter_canny_sd15v2)
    /// in the same dtype, in that order: diffusers' <c>from_pretrained(base, adapter=T2IAdapter.from_pretrained(a))</c>,
    /// several being its <c>MultiAdapter</c>. Each must fit the UNet, and several must downscale alike.
    /// </summary>
    /// <exception cref="UnknownComponentException">model_index.json names a class DiffusersSharp does not implement.</exception>
    /// <exception cref="InvalidDataException">The folder is not such a pipeline, or misses a component.</exception>
    /// <exception cref="ArgumentException">A ControlNet or adapter does not fit the UNet, or the adapters do not fit each other.</exception>
    public static StableDiffusionComponents FromPretrained(string model, PipelineLoadOptions options, IReadOnlyList<string> controlnets,
        IReadOnlyList<string> adapters, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(controlnets);
        ArgumentNullException.ThrowIfNull(adapters);
        if (!options.LoadTextEncoders)
            throw new ArgumentException("PipelineLoadOptions.LoadTextEncoders = false applies to Flux; Stable Diffusion 1.x / 2.x / SDXL loads its text encoders.", nameof(options));
        var device = options.ParsedDevice;
        var fromFile = options.SingleFileComponentsOf(SingleFileLayout.Ldm, "Stable Diffusion 1.x / 2.x / SDXL");
        var modelDevice = options.Offload == OffloadMode.Model ? CPU : device;
        string folder = Hub.ModelSource.Resolve(model, options.HubOptions, options.DownloadProgress, cancellationToken);
        var index = ModelIndex.Read(folder);
        if (!IsSupportedPipeline(index.ClassName))
            throw new InvalidDataException($"{folder}: model_index.json names {index.ClassName}; this loader takes {string.Join(", ", SDPipelines.Concat(XLPipelines))}.");
        bool xl = XLPipelines.Contains(index.ClassName);
        // SDXL may leave out the first text encoder (the refiner: text_encoder and tokenizer [null, null]), as diffusers'
        // encode_prompt then runs text_encoder_2 alone; both halves of the pair are there or neither.
        bool Present(string name) => index.Components.TryGetValue(name, out var spec) && !spec.IsEmpty;
        bool firstEncoder = !xl || Present("text_encoder") || Present("tokenizer");
        foreach (var name in fromFile)
            if (name is "text_encoder" && !firstEncoder || name is "text_encoder_2" && !xl)
                throw new ArgumentException($"The single file {Path.GetFileName(options.SingleFile)} holds a {name}, which {index.ClassName} does not have: it is a checkpoint of another model family.");
        bool upscaler = index.ClassName == StableDiffusionUpscalePipeline.PipelineClass;
        List<string> required = ["unet", "vae", "scheduler"];
        if (upscaler) required.Add("low_res_scheduler");
        if (firstEncoder) required.AddRange(["text_encoder", "tokenizer"]);
        if (xl) required.AddRange(["text_encoder_2", "tokenizer_2"]);
        foreach (var name in required)
            if (!index.Components.TryGetValue(name, out var spec) || spec.IsEmpty)
                throw new InvalidDataException($"{folder}: model_index.json has no '{name}' component; {index.ClassName} needs it.");
        foreach (var name in required)
            ModelRegistry.KindOf(name, index.Components[name].ClassName!);
        if (upscaler && index.Components["low_res_scheduler"].ClassName != nameof(DDPMScheduler))
            throw new InvalidDataException($"{folder}: model_index.json's low_res_scheduler is a {index.Components["low_res_scheduler"].ClassName}; {index.ClassName} takes a DDPMScheduler (diffusers' type).");
        // The ControlNets' folders and kind (plain or union), before any weights load.
        var controlNetFolders = controlnets.Select(net => Hub.ModelSource.Resolve(net, options.HubOptions, options.DownloadProgress, cancellationToken)).ToArray();
        bool unions = CheckControlNetKinds(controlNetFolders, xl);
        var schedulerConfig = SchedulerConfigText.Parse(SchedulerConfigText.Read(Path.Combine(folder, "scheduler")));
        schedulerConfig["_class_name"] = index.Components["scheduler"].ClassName!;
        var indexJson = ReadJsonObject(Path.Combine(folder, "model_index.json"));
        bool forceZeros = indexJson["force_zeros_for_empty_prompt"]?.GetValue<bool>() ?? true;
        bool aesthetics = indexJson["requires_aesthetics_score"]?.GetValue<bool>() ?? false;
        bool cosXLEdit = indexJson["is_cosxl_edit"]?.GetValue<bool>() ?? false;
        int maxNoiseLevel = indexJson["max_noise_level"]?.GetValue<int>() ?? 350;
        DDPMSchedulerConfig? lowRes = null;
        if (upscaler)
        {
            // Checked as a scheduler (an invalid config fails here, before any weights load); each call builds its own.
            using var lowResScheduler = DDPMScheduler.FromPretrained(Path.Combine(folder, "low_res_scheduler"));
            lowRes = lowResScheduler.Config;
        }

        var loader = new ComponentLoader(folder, cancellationToken);
        string Sub(string name) => loader.Sub(name);
        TConfig Config<TConfig>(string name) where TConfig : class => ConfigJson.Read<TConfig>(Path.Combine(Sub(name), "config.json"));
        try
        {
            var components = new StableDiffusionComponents
            {
                Tokenizer = firstEncoder ? CLIPTokenizer.FromFolder(Sub("tokenizer")) : null,
                Tokenizer2 = xl ? CLIPTokenizer.FromFolder(Sub("tokenizer_2")) : null,
                TextEncoder = firstEncoder ? loader.Load("text_encoder", () => fromFile.Contains("text_encoder")
                    ? CLIPTextModel.FromSingleFile(options.SingleFile!, Config<CLIPTextConfig>("text_encoder"), options.Dtype, modelDevice)
                    : CLIPTextModel.FromPretrained(Sub("text_encoder"), options.Dtype, modelDevice, options.Variant)) : null,
                TextEncoder2 = xl ? loader.Load("text_encoder_2", () => fromFile.Contains("text_encoder_2")
                    ? CLIPTextModelWithProjection.FromSingleFile(options.SingleFile!, Config<CLIPTextConfig>("text_encoder_2"), options.Dtype, modelDevice)
                    : CLIPTextModelWithProjection.FromPretrained(Sub("text_encoder_2"), options.Dtype, modelDevice, options.Variant)) : null,
                Unet = loader.Load("unet", () => fromFile.Contains("unet")
                    ? UNet2DConditionModel.FromSingleFile(options.SingleFile!, Config<UNet2DConditionModelConfig>("unet"), options.Dtype, modelDevice)
                    : UNet2DConditionModel.FromPretrained(Sub("unet"), options.Dtype, modelDevice, options.Variant)),
                ControlNets = unions ? [] : controlNetFolders.Select((net, i) => loader.Load(ControlNetName(i, controlnets.Count),
                    () => ControlNetModel.FromPretrained(net, options.Dtype, modelDevice))).ToArray(),
                ControlNetUnions = !unions ? [] : controlNetFolders.Select((net, i) => loader.Load(ControlNetName(i, controlnets.Count),
                    () => ControlNetUnionModel.FromPretrained(net, options.Dtype, modelDevice))).ToArray(),
                Adapters = adapters.Select((adapter, i) => loader.Load(adapters.Count == 1 ? "adapter" : $"adapter.{i}", () => T2IAdapter.FromPretrained(
                    Hub.ModelSource.Resolve(adapter, options.HubOptions, options.DownloadProgress, cancellationToken), options.Dtype, modelDevice, options.Variant))).ToArray(),
                Vae = loader.Load("vae", () => fromFile.Contains("vae")
                    ? AutoencoderKL.FromSingleFile(options.SingleFile!, Config<AutoencoderKLConfig>("vae"), options.Dtype, modelDevice)
                    : AutoencoderKL.FromPretrained(Sub("vae"), options.Dtype, modelDevice, options.Variant)),
                ForceZerosForEmptyPrompt = forceZeros,
                RequiresAestheticsScore = aesthetics,
                IsCosXLEdit = cosXLEdit,
                LowResSchedulerConfig = lowRes,
                MaxNoiseLevel = maxNoiseLevel,
                Device = device,
                Dtype = options.Dtype,
                LoadMilliseconds = loader.LoadMilliseconds,
            };
            components.UseScheduler(schedulerConfig); // an unsupported scheduler fails here, not in the first call
            foreach (var net in components.ControlNets) CheckControlNet(net, components.Unet);
            foreach (var adapter in components.Adapters) CheckAdapter(adapter, components.Unet, components.Vae.VaeScaleFactor);
            MultiAdapter.CheckCompatible(components.Adapters);
            foreach (var net in components.ControlNetUnions) CheckControlNet(net.Config, components.Unet);
            if (options.Offload == OffloadMode.Model) components.EnableModelCpuOffload();
            return components;
        }
        catch
        {
            loader.DisposeLoaded();
            throw;
        }
    }

    /// <summary>Throws unless <paramref name="controlnet"/> gives residuals <paramref name="unet"/> can add and takes the same conditioning.</summary>
    /// <exception cref="ArgumentException">They do not fit; the message says which setting differs.</exception>
    public static void CheckControlNet(ControlNetModel controlnet, UNet2DConditionModel unet)
    {
        ArgumentNullException.ThrowIfNull(controlnet);
        CheckControlNet(controlnet.Config, unet);
    }

    /// <summary>The state-dict name of ControlNet <paramref name="i"/> of <paramref name="count"/>, for load messages.</summary>
    private static string ControlNetName(int i, int count) => count == 1 ? "controlnet" : $"controlnet.{i}";

    /// <summary>Whether the ControlNet folders are ControlNet-Unions (all of them) or plain ControlNets (all of them);
    /// throws for a mix, or for union models beside a model that is not SDXL (diffusers has them for SDXL only).</summary>
    private static bool CheckControlNetKinds(IReadOnlyList<string> folders, bool xl)
    {
        var kinds = folders.Select(f => ControlNetUnionModel.IsControlNetUnion(f)).ToArray();
        if (kinds.Distinct().Count() > 1)
            throw new ArgumentException("The ControlNets mix ControlNet-Union models with plain ControlNets; diffusers' pipelines take ControlNets of one kind.");
        bool unions = kinds.Length > 0 && kinds[0];
        if (unions && !xl)
            throw new ArgumentException("ControlNet-Union models steer SDXL (diffusers' StableDiffusionXLControlNetUnion pipelines); this model is not SDXL.");
        return unions;
    }

    /// <summary>Throws unless a ControlNet (or ControlNet-Union) of <paramref name="c"/> gives residuals <paramref name="unet"/>
    /// can add and takes the same conditioning.</summary>
    /// <exception cref="ArgumentException">They do not fit; the message says which setting differs.</exception>
    public static void CheckControlNet(ControlNetModelConfig c, UNet2DConditionModel unet)
    {
        ArgumentNullException.ThrowIfNull(c);
        ArgumentNullException.ThrowIfNull(unet);
        var u = unet.Config;
        int n = u.DownBlockTypes.Length;
        void Same(bool ok, string what, object theirs, object ours)
        {
            if (!ok) throw new ArgumentException($"The ControlNet does not fit this UNet: its {what} is {theirs}, the UNet's {ours}. Use a ControlNet made for this base model.");
        }
        Same(c.BlockOutChannels.SequenceEqual(u.BlockOutChannels), "block_out_channels", string.Join(",", c.BlockOutChannels), string.Join(",", u.BlockOutChannels));
        Same(u.LayersPerBlock.Expand(n, "layers_per_block").All(l => l == c.LayersPerBlock), "layers_per_block", c.LayersPerBlock, u.LayersPerBlock);
        Same(c.DownsamplePadding == u.DownsamplePadding, "downsample_padding", c.DownsamplePadding, u.DownsamplePadding);
        Same(u.CrossAttentionDim.Expand(n, "cross_attention_dim").All(d => d == c.CrossAttentionDim), "cross_attention_dim", c.CrossAttentionDim, u.CrossAttentionDim);
        // An inpainting UNet (latents, mask, masked-image latents) takes 2n + 1 channels; its ControlNet sees the n of the latents.
        Same(c.InChannels == u.InChannels || u.InChannels == 2 * c.InChannels + 1, "in_channels", c.InChannels, u.InChannels);
        Same(c.AdditionEmbedType == u.AdditionEmbedType && c.ProjectionClassEmbeddingsInputDim == u.ProjectionClassEmbeddingsInputDim,
            "addition_embed_type / projection_class_embeddings_input_dim", $"{c.AdditionEmbedType ?? "null"} / {c.ProjectionClassEmbeddingsInputDim}",
            $"{u.AdditionEmbedType ?? "null"} / {u.ProjectionClassEmbeddingsInputDim}");
    }

    /// <summary>
    /// Throws unless <paramref name="adapter"/>'s feature maps are what <paramref name="unet"/> adds inside its down
    /// blocks (<see cref="UNet2DConditionModel.IntrablockResidualShapes"/>), checked at a size every factor divides.
    /// </summary>
    /// <exception cref="ArgumentException">They do not fit; the message gives both sets of shapes.</exception>
    public static void CheckAdapter(T2IAdapter adapter, UNet2DConditionModel unet, int vaeScaleFactor)
    {
        ArgumentNullException.ThrowIfNull(adapter);
        ArgumentNullException.ThrowIfNull(unet);
        long side = (long)adapter.TotalDownscaleFactor * vaeScaleFactor << unet.Config.DownBlockTypes.Length;
        var maps = adapter.FeatureShapes(1, side, side);
        try
        {
            unet.CheckIntrablockResidualShapes(maps, 1, side / vaeScaleFactor, side / vaeScaleFactor);
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"The T2I-Adapter ({adapter.Config.AdapterType}, channels {string.Join(",", adapter.Config.Channels)}) does not fit this UNet: " +
                $"for a {side}x{side} image it gives {MultiAdapter.Describe(maps)}. {e.Message}", e);
        }
    }

    private static JsonObject ReadJsonObject(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path} is missing.", path);
        try
        {
            return JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new InvalidDataException($"{path}: not a JSON object.");
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON: {e.Message}");
        }
    }

    /// <summary>Builds the prompt encoder over these components.</summary>
    public StableDiffusionPromptEncoder CreatePromptEncoder(Action<string, int, int>? onTruncated = null) =>
        new(Tokenizer, TextEncoder, Tokenizer2, TextEncoder2, ForceZerosForEmptyPrompt)
        {
            EmbeddingsOnlyXL = IsXL,
            OnTruncated = onTruncated,
            BeforeEncoder = ActivateHook,
        };

    /// <summary>
    /// diffusers' <c>load_lora_weights(path)</c> + <c>fuse_lora(lora_scale=scale)</c>: fuses a LoRA file into the UNet and
    /// text encoders, in diffusers' PEFT format (<c>unet.*</c>, <c>text_encoder.*</c>, SDXL's <c>text_encoder_2.*</c>) or
    /// kohya's (<c>lora_unet_*</c>, <c>lora_te_*</c>, SDXL's <c>lora_te1_*</c> / <c>lora_te2_*</c>, UNet names in diffusers'
    /// or the SGM layout), on Linear and Conv2d layers, with per-layer alphas (see <see cref="LoraWeights"/>). Every part
    /// is checked before any weight changes. Returns the number of adapted layers.
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file is not a LoRA of these components (unknown keys or components, bad pairs).</exception>
    /// <exception cref="ArgumentException">A part does not fit its model (missing modules or other sizes).</exception>
    public int FuseLora(string path, double scale = 1.0)
    {
        var models = new Dictionary<string, nn.Module?> { ["unet"] = Unet, ["text_encoder"] = TextEncoder };
        if (IsXL) models["text_encoder_2"] = TextEncoder2;
        return LoraWeights.FuseAll(path, models, scale, fused: FusedLoras);
    }

    /// <summary>
    /// diffusers' <c>load_textual_inversion(path, token=token)</c>: the embeddings of a safetensors file become tokens of
    /// <see cref="Tokenizer"/> and rows of <see cref="TextEncoder"/> (or, with <see cref="TextualInversionTarget.TextEncoder2"/>,
    /// SDXL's second pair), and prompts that name them are rewritten for multi-vector embeddings (see
    /// <see cref="TextualInversion"/>). An SDXL file (<c>clip_l</c> / <c>clip_g</c>) gives the half of that encoder (load
    /// both, with the same token, for an SDXL embedding; a token is then required). Returns the tokens added.
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">A pickle file, or no textual inversion embedding.</exception>
    /// <exception cref="ArgumentException">diffusers' checks: the token is in the vocabulary, the width is not the encoder's, the encoder is missing...</exception>
    public IReadOnlyList<string> LoadTextualInversion(string path, string? token = null, TextualInversionTarget target = TextualInversionTarget.TextEncoder) =>
        LoadTextualInversion([path], token is null ? null : [token], target);

    /// <summary>
    /// diffusers' <c>load_textual_inversion([paths], token=[tokens])</c>: several files at once (one token per file, or
    /// null to take each file's own), or one file whose tensor holds n embeddings with n tokens; <paramref name="key"/>
    /// picks that tensor of each file (see <see cref="TextualInversion.Load(CLIPTokenizer, ICLIPTextEncoder, IReadOnlyList{string}, IReadOnlyList{string?}?, string?)"/>).
    /// </summary>
    /// <inheritdoc cref="LoadTextualInversion(string, string?, TextualInversionTarget)"/>
    public IReadOnlyList<string> LoadTextualInversion(IReadOnlyList<string> paths, IReadOnlyList<string?>? tokens,
        TextualInversionTarget target = TextualInversionTarget.TextEncoder, string? key = null) =>
        TextualInversion.LoadInto(TextualInversionTokenizer(target), TextualInversionEncoder(target), target, PipelineName, paths, tokens, key);

    /// <summary>diffusers' <c>load_textual_inversion(state_dict["clip_g"], token=tokens, tokenizer=..., text_encoder=...)</c>:
    /// a [dim] or [n, dim] tensor with one token (n vectors) or n tokens.</summary>
    /// <exception cref="ArgumentException">diffusers' checks.</exception>
    public IReadOnlyList<string> LoadTextualInversion(Tensor embedding, IReadOnlyList<string> tokens, TextualInversionTarget target = TextualInversionTarget.TextEncoder)
    {
        var (tokenizer, encoder) = TextualInversion.Pair(TextualInversionTokenizer(target), TextualInversionEncoder(target), target, PipelineName);
        return TextualInversion.Load(tokenizer, encoder, embedding, tokens);
    }

    /// <summary>diffusers' <c>unload_textual_inversion(tokens)</c> for one encoder (see <see cref="TextualInversion.Unload"/>):
    /// all textual inversion tokens when <paramref name="tokens"/> is null. Returns the tokens removed.</summary>
    /// <exception cref="ArgumentException">None of the tokens is loaded, or the encoder is missing.</exception>
    public IReadOnlyList<string> UnloadTextualInversion(IReadOnlyList<string>? tokens = null, TextualInversionTarget target = TextualInversionTarget.TextEncoder)
    {
        var (tokenizer, encoder) = TextualInversion.Pair(TextualInversionTokenizer(target), TextualInversionEncoder(target), target, PipelineName);
        return TextualInversion.Unload(tokenizer, encoder, tokens);
    }

    private string PipelineName => IsXL ? "StableDiffusionXLPipeline" : "StableDiffusionPipeline";

    private CLIPTokenizer? TextualInversionTokenizer(TextualInversionTarget target) =>
        target == TextualInversionTarget.TextEncoder ? Tokenizer : Tokenizer2;

    private ICLIPTextEncoder? TextualInversionEncoder(TextualInversionTarget target) =>
        target == TextualInversionTarget.TextEncoder ? TextEncoder : TextEncoder2;

    /// <summary>
    /// diffusers' <c>load_ip_adapter</c> for a local IP-Adapter file in h94/IP-Adapter's safetensors layout (see
    /// <see cref="IPAdapterWeights"/>): the UNet's cross-attention layers gain the image key/value path and the UNet the
    /// image projection, scale 1.0. The pipelines then take <c>IpAdapterImageEmbeds</c> (or <c>IpAdapterImage</c> with an
    /// image encoder). Under model offload the adapter moves with the UNet.
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="NotSupportedException">An IP-Adapter kind not implemented here.</exception>
    /// <exception cref="WeightLoadException">The file does not fit this UNet.</exception>
    /// <exception cref="InvalidOperationException">An IP-Adapter is already loaded.</exception>
    /// <remarks>With <paramref name="imageEncoderFolder"/> (diffusers: <c>image_encoder_folder</c> resolved against the
    /// adapter's repository, e.g. h94/IP-Adapter's <c>models/image_encoder</c>) the CLIP image encoder is loaded too, in
    /// the components' dtype, with a <see cref="CLIPImageProcessor"/> at its image size, so that pipelines take
    /// <c>IpAdapterImage</c>; an encoder already loaded is kept, as diffusers does.</remarks>
    public void LoadIpAdapter(string path, string? imageEncoderFolder = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (Unet.HasIpAdapter) throw new InvalidOperationException("An IP-Adapter is already loaded into this UNet.");
        var encoder = LoadIpAdapterWithEncoder(imageEncoderFolder, ImageEncoder is not null,
            (folder, dtype, device) => CLIPVisionModelWithProjection.FromPretrained(folder, dtype, device), _ => IPAdapterWeights.Load(Unet, path));
        if (encoder is null) return;
        ImageEncoder = encoder;
        FeatureExtractor = new CLIPImageProcessor(encoder.Config.ImageSize);
        RefreshModelOffload();
    }

    /// <summary>The IP-Adapter's CLIP image encoder (diffusers' <c>image_encoder</c>), or null.</summary>
    public CLIPVisionModelWithProjection? ImageEncoder { get; private set; }

    /// <summary>The image encoder's preprocessing (diffusers' <c>feature_extractor</c>), or null.</summary>
    public CLIPImageProcessor? FeatureExtractor { get; private set; }

    /// <summary>diffusers' <c>set_ip_adapter_scale</c>: one scale for all adapters or one per adapter.</summary>
    /// <exception cref="InvalidOperationException">No IP-Adapter is loaded.</exception>
    public void SetIpAdapterScale(params double[] scales) => Unet.SetIpAdapterScale(scales);

    /// <inheritdoc />
    protected override IReadOnlyDictionary<string, nn.Module> OffloadableModels()
    {
        // diffusers' model_cpu_offload_seq: "text_encoder->unet->vae" (SDXL: "text_encoder->text_encoder_2->unet->vae").
        var models = new Dictionary<string, nn.Module>();
        if (TextEncoder is not null) models["text_encoder"] = TextEncoder;
        if (TextEncoder2 is not null) models["text_encoder_2"] = TextEncoder2;
        if (ImageEncoder is not null) models["image_encoder"] = ImageEncoder; // diffusers: text_encoder->image_encoder->unet->vae
        // The ControlNet is not in the ControlNet pipelines' sequence: diffusers gives it a hook of its own, so it comes to
        // the device at its first step and stays there beside the UNet until the call ends. It moves with the UNet here.
        // diffusers' adapter pipelines: "text_encoder->adapter->unet->vae" (the adapters run once, before the loop).
        if (Adapters.Count > 0) models["adapter"] = Adapters.Count == 1 ? Adapters[0] : new ModuleGroup([.. Adapters]);
        models["unet"] = ControlNets.Count + ControlNetUnions.Count == 0 ? Unet : new ModuleGroup([Unet, .. ControlNets, .. ControlNetUnions]);
        models["vae"] = Vae;
        return models;
    }

    /// <inheritdoc />
    protected override void FreeModels()
    {
        Unet.Dispose();
        foreach (var net in ControlNets) net.Dispose();
        foreach (var adapter in Adapters) adapter.Dispose();
        foreach (var net in ControlNetUnions) net.Dispose();
        Vae.Dispose();
        TextEncoder?.Dispose();
        TextEncoder2?.Dispose();
        ImageEncoder?.Dispose();
    }
}
