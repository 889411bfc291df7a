using System.Globalization;
using System.Text.Json.Nodes;
using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.ImageEncoders;
using DiffusersSharp.Models.ControlNets;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Chroma;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Pipelines.Flux2;
using DiffusersSharp.Pipelines.PixArt;
using DiffusersSharp.Pipelines.Sana;
using DiffusersSharp.Pipelines.Lumina2;
using DiffusersSharp.Pipelines.AuraFlow;
using DiffusersSharp.Pipelines.CogView4;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Pipelines.StableDiffusionXL;
using DiffusersSharp.Pipelines.QwenImage;
using DiffusersSharp.Pipelines.ZImage;
using DiffusersSharp.Runtime;

namespace DiffusersSharp.Cli.Commands;

/// <summary>
/// A model loaded for the generation verbs and the web UI: the components of its family (SD3, Flux, or the UNet family
/// of SD 1.x / 2.x and SDXL), chosen by its model_index.json, with the --lora fused in.
/// </summary>
internal sealed class LoadedModel : IDisposable
{
    private readonly JsonObject? _modelScheduler;

    private LoadedModel(string name, string pipelineClass, IReadOnlyList<string> controlNets, StableDiffusion3Components? sd3, StableDiffusionComponents? unet,
        FluxComponents? flux = null, IReadOnlyList<string>? adapters = null, PixArtComponents? pixArt = null, ChromaComponents? chroma = null,
        ZImageComponents? zImage = null, QwenImageComponents? qwenImage = null, Flux2KleinComponents? flux2Klein = null,
        SanaComponents? sana = null, Lumina2Components? lumina2 = null, AuraFlowComponents? auraFlow = null, CogView4Components? cogView4 = null)
    {
        CogView4 = cogView4;
        Sana = sana;
        Lumina2 = lumina2;
        AuraFlow = auraFlow;
        QwenImage = qwenImage;
        Flux2Klein = flux2Klein;
        PixArt = pixArt;
        Chroma = chroma;
        ZImage = zImage;
        Name = name;
        ControlNets = controlNets;
        ControlNetUnionTypes = unet is { ControlNetUnions.Count: > 0 }
            ? unet.ControlNetUnions.Select(net => (int?)net.Config.NumControlType).ToArray()
            : controlNets.Select(_ => (int?)null).ToArray();
        Adapters = adapters ?? [];
        PipelineClass = pipelineClass;
        Sd3 = sd3;
        UNet = unet;
        Flux = flux;
        _modelScheduler = Swappable is { } swappable ? (JsonObject)swappable.SchedulerConfig.DeepClone() : null;
    }

    /// <summary>The model families, as model_index.json's <c>_class_name</c> tells them apart.</summary>
    private enum Family { Sd3, UNet, Flux, PixArt, Chroma, ZImage, QwenImage, Flux2Klein, Sana, Lumina2, AuraFlow, CogView4 }

    private static Family FamilyOf(string pipelineClass) =>
        StableDiffusionComponents.IsSupportedPipeline(pipelineClass) ? Family.UNet
        : FluxComponents.IsSupportedPipeline(pipelineClass) ? Family.Flux
        : PixArtComponents.IsSupportedPipeline(pipelineClass) ? Family.PixArt
        : ChromaComponents.IsSupportedPipeline(pipelineClass) ? Family.Chroma
        : ZImageComponents.IsSupportedPipeline(pipelineClass) ? Family.ZImage
        : QwenImageComponents.IsSupportedPipeline(pipelineClass) ? Family.QwenImage
        : Flux2KleinComponents.IsSupportedPipeline(pipelineClass) ? Family.Flux2Klein
        : SanaComponents.IsSupportedPipeline(pipelineClass) ? Family.Sana
        : Lumina2Components.IsSupportedPipeline(pipelineClass) ? Family.Lumina2
        : AuraFlowComponents.IsSupportedPipeline(pipelineClass) ? Family.AuraFlow
        : CogView4Components.IsSupportedPipeline(pipelineClass) ? Family.CogView4
        : Family.Sd3;

    /// <summary>The components whose scheduler --scheduler swaps (UNet and PixArt models), or null.</summary>
    public SwappableSchedulerComponents? Swappable => (SwappableSchedulerComponents?)UNet ?? PixArt;

    /// <summary>The PixArt-Σ / PixArt-α components, or null for another family.</summary>
    public PixArtComponents? PixArt { get; }

    /// <summary>The Chroma components, or null for another family.</summary>
    public ChromaComponents? Chroma { get; }

    /// <summary>The Z-Image components, or null for another family.</summary>
    public ZImageComponents? ZImage { get; }

    /// <summary>The Qwen-Image components, or null for another family.</summary>
    public QwenImageComponents? QwenImage { get; }

    /// <summary>The FLUX.2 [klein] components, or null for another family.</summary>
    public Flux2KleinComponents? Flux2Klein { get; }

    /// <summary>The Sana components, or null for another family.</summary>
    public SanaComponents? Sana { get; }

    /// <summary>The Lumina-Image 2.0 components, or null for another family.</summary>
    public Lumina2Components? Lumina2 { get; }

    /// <summary>The AuraFlow components, or null for another family.</summary>
    public AuraFlowComponents? AuraFlow { get; }

    /// <summary>The CogView4 components, or null for another family.</summary>
    public CogView4Components? CogView4 { get; }

    /// <summary>What --model said (folder or hub id).</summary>
    public string Name { get; }

    /// <summary>model_index.json's <c>_class_name</c>.</summary>
    public string PipelineClass { get; }

    /// <summary>The ControlNets loaded beside the model (--controlnet, as given), in order; empty without.</summary>
    public IReadOnlyList<string> ControlNets { get; }

    /// <summary>Per ControlNet, its number of control types if it is a ControlNet-Union (SDXL), else null.</summary>
    public IReadOnlyList<int?> ControlNetUnionTypes { get; }

    /// <summary>The T2I-Adapters loaded beside the model (--adapter, as given), in order; empty without.</summary>
    public IReadOnlyList<string> Adapters { get; }

    /// <summary>
    /// The verbs this model runs (txt2img, img2img, inpaint): FLUX.1-Fill only inpaints, FLUX.1-Kontext generates, edits
    /// (img2img without strength) and inpaints (diffusers' FluxKontextInpaintPipeline); the other models run all three.
    /// </summary>
    public IReadOnlyList<string> Modes => PipelineClass switch
    {
        FluxComponents.FillPipelineClass => ["inpaint"],
        PixArtComponents.SigmaPipelineClass or PixArtComponents.AlphaPipelineClass => ["txt2img"],
        SanaComponents.SanaPipelineClass => ["txt2img"],
        SanaComponents.SanaSprintPipelineClass => ["txt2img", "img2img"],
        Lumina2Components.Lumina2PipelineClass or Lumina2Components.Lumina2Text2ImgPipelineClass => ["txt2img"],
        AuraFlowComponents.AuraFlowPipelineClass => ["txt2img"],
        CogView4Components.CogView4PipelineClass => ["txt2img"],
        ChromaComponents.PipelineClassName or ChromaComponents.Img2ImgPipelineClassName => ["txt2img", "img2img"],
        ZImageComponents.ZImagePipelineClass or ZImageComponents.ZImageImg2ImgPipelineClass => ["txt2img", "img2img"],
        Flux2KleinComponents.Flux2KleinKVPipelineClass => ["txt2img", "img2img"],
        StableDiffusionInstructPix2PixPipeline.PipelineClass or StableDiffusionXLInstructPix2PixPipeline.PipelineClass => ["img2img"],
        StableDiffusionUpscalePipeline.PipelineClass or StableDiffusionLatentUpscalePipeline.PipelineClass => ["img2img"],
        LatentConsistencyModelPipeline.PipelineClass or LatentConsistencyModelImg2ImgPipeline.PipelineClass => ["txt2img", "img2img"],
        _ => ["txt2img", "img2img", "inpaint"],
    };

    /// <summary>Whether img2img takes a strength (FLUX.1-Kontext's edit conditions every step on the image instead).</summary>
    public bool HasStrength => PipelineClass is not (FluxComponents.KontextPipelineClass or Flux2KleinComponents.Flux2KleinPipelineClass
            or Flux2KleinComponents.Flux2KleinKVPipelineClass)
        && !IsInstructPix2Pix(PipelineClass) && !IsUpscaler(PipelineClass)
        && !IsLatentUpscaler(PipelineClass);

    /// <summary>The modes that take a strength: img2img (unless <see cref="HasStrength"/> is false) and inpaint.</summary>
    public IReadOnlyList<string> StrengthModes => Modes.Where(m => m == "inpaint" || (m == "img2img" && HasStrength)).ToArray();

    /// <summary>The verbs the loaded ControlNets steer in the web page: SD3's ControlNets text-to-image only (the CLI's inpaint
    /// also takes an SD3 inpainting ControlNet), the UNet models' and Flux's all three.</summary>
    public IReadOnlyList<string> ControlNetModes => ControlNets.Count == 0 ? [] : Sd3 is not null ? ["txt2img"] : Modes;

    /// <summary>Whether the ControlNets take guess mode (the UNet models' do; diffusers' SD3 ControlNet pipeline has none).</summary>
    public bool HasGuessMode => ControlNets.Count > 0 && UNet is not null;

    /// <summary>The ControlNets that <paramref name="settings"/> load with the model: generate's per run, serve's for all its requests.</summary>
    private static IReadOnlyList<string> ControlNetsOf(ModelSettings settings) => settings switch
    {
        GenerateSettings generate => generate.ControlNets,
        ServeCommand.Settings serve => serve.ControlNets,
        _ => [],
    };

    /// <summary>The T2I-Adapters that <paramref name="settings"/> load with the model: generate's per run, serve's for all its requests.</summary>
    private static IReadOnlyList<string> AdaptersOf(ModelSettings settings) => settings switch
    {
        GenerateSettings generate => generate.Adapters,
        ServeCommand.Settings serve => serve.Adapters,
        _ => [],
    };

    /// <summary>The modes that take perturbed-attention guidance (diffusers' PAG pipelines): an SD 1.x / 2.x or SDXL model's
    /// text-to-image, image-to-image and inpainting, SD3's text-to-image and image-to-image (diffusers has no SD3 PAG
    /// inpainting pipeline); none for the upscalers, InstructPix2Pix, latent consistency models and the other families.</summary>
    public IReadOnlyList<string> PagModes =>
        UNet is not null && !IsLatentUpscaler(PipelineClass) && !IsUpscaler(PipelineClass) && !IsInstructPix2Pix(PipelineClass) && !IsLatentConsistency(PipelineClass)
            ? Modes
            : Sd3 is not null ? Modes.Where(m => m is "txt2img" or "img2img").ToArray() : [];

    /// <summary>The modes the T2I-Adapters steer: text to image (diffusers' adapter pipelines); none without adapters.</summary>
    public IReadOnlyList<string> AdapterModes => Adapters.Count == 0 ? [] : ["txt2img"];

    /// <summary>The SD3 components, or null for another family.</summary>
    public StableDiffusion3Components? Sd3 { get; }

    /// <summary>The SD 1.x / 2.x or SDXL components, or null for another family.</summary>
    public StableDiffusionComponents? UNet { get; }

    /// <summary>The Flux.1 components, or null for another family.</summary>
    public FluxComponents? Flux { get; }

    /// <summary>Loads the --redux prior (checked against the model before any weights loaded) with the given text
    /// encoders, or null without --redux.</summary>
    public Func<FluxComponents?, CancellationToken, FluxPriorReduxPipeline>? ReduxLoader { get; private set; }

    /// <summary>serve's --redux prior, loaded once at start with the model's text encoders (so that a request's prompt is
    /// encoded inside it) and kept for every request; null without serve --redux.</summary>
    public FluxPriorReduxPipeline? ReduxPrior { get; private set; }

    /// <summary>serve's --redux, as given (requests name it again for the option checks and the parameters), or null.</summary>
    public string? ReduxName { get; private set; }

    /// <summary>
    /// Checks a --redux folder against the base Flux model before any weights load: a FLUX.1-Redux pipeline folder whose
    /// image embedder gives tokens of the transformer's text width and, without a prompt (<paramref name="zeroText"/>), whose
    /// zero pooled embedding (768 wide, as diffusers hard-codes it) fits the transformer. Returns the folder.
    /// </summary>
    private static string CheckRedux(string redux, string reduxFolder, string modelFolder, bool zeroText)
    {
        string reduxClass = ModelIndex.Read(reduxFolder).ClassName;
        if (reduxClass != Hub.HubFileSelector.FluxPriorReduxPipelineClass)
            throw new ArgumentException($"--redux {redux} is a {reduxClass}, not a FLUX.1-Redux prior ({Hub.HubFileSelector.FluxPriorReduxPipelineClass}, e.g. black-forest-labs/FLUX.1-Redux-dev).");
        var embedder = ConfigJson.Read<ReduxImageEncoderConfig>(Path.Combine(reduxFolder, "image_embedder", "config.json"));
        var transformer = ConfigJson.Read<FluxTransformer2DModelConfig>(Path.Combine(modelFolder, "transformer", "config.json"));
        if (embedder.TxtInFeatures != transformer.JointAttentionDim)
            throw new ArgumentException($"--redux {redux} gives tokens of width {embedder.TxtInFeatures} (txt_in_features), but the model's transformer takes text of width {transformer.JointAttentionDim} (joint_attention_dim): use a Redux prior made for this model.");
        if (zeroText && transformer.PooledProjectionDim != FluxPriorReduxPipeline.ZeroPooledPromptEmbedsDim)
            throw new ArgumentException($"--redux without --prompt gives a zero pooled embedding of width {FluxPriorReduxPipeline.ZeroPooledPromptEmbedsDim} (diffusers' FLUX.1 size), but the model's transformer takes {transformer.PooledProjectionDim} (pooled_projection_dim): give --prompt, which the model's own text encoders encode.");
        return reduxFolder;
    }

    /// <summary>
    /// Resolves --model (downloading a hub repo), checks generation options (when <paramref name="settings"/> has them)
    /// against the model's family before any weights load, loads the components and fuses --lora.
    /// </summary>
    public static LoadedModel Load(CliOutput output, ModelSettings settings, CancellationToken ct)
    {
        var options = new PipelineLoadOptions
        {
            Dtype = TorchDtypes.Parse(settings.Dtype),
            Device = settings.Device,
            Variant = settings.Variant,
            LoadTextEncoder3 = !settings.NoT5,
            // FLUX.1-Redux without any prompt runs on the prior's embeddings alone: the text encoders (T5-XXL's 9.5 GB) are
            // neither fetched nor loaded, as diffusers' example passes text_encoder=None, text_encoder_2=None (kept when a
            // --lora or --textual-inversion may adapt them).
            LoadTextEncoders = !(settings is GenerateSettings { Redux: not null, Prompt: null, Prompt2: null, NegativePrompt: null, TextualInversion: null } && settings.Loras.Count == 0),
            Offload = settings.Offload == "model" ? OffloadMode.Model : OffloadMode.None,
            HubToken = settings.Token,
            Revision = settings.Revision,
            SingleFile = settings.SingleFile,
            DownloadProgress = new Progress<Hub.DownloadProgress>(p =>
            {
                if (p.Done) output.Error.WriteLine($"downloaded {p.File} ({p.FilesDone}/{p.FileCount})");
            }),
        };
        string folder = options.ResolveFolder(settings.Model!, ct);
        string pipelineClass = ModelIndex.Read(folder).ClassName;
        var family = FamilyOf(pipelineClass);
        if (family == Family.PixArt) CheckPixArt(settings, pipelineClass);
        if (family == Family.Chroma) CheckChroma(settings, pipelineClass);
        if (family == Family.ZImage) CheckZImage(settings, pipelineClass);
        if (family == Family.QwenImage) CheckQwenImage(settings, pipelineClass);
        if (family == Family.Flux2Klein) CheckFlux2Klein(settings, pipelineClass);
        if (family == Family.Sana) CheckSana(settings, pipelineClass);
        if (family is Family.Lumina2 or Family.AuraFlow or Family.CogView4) CheckTextOnlyFlow(settings, pipelineClass, family);
        if (IsLatentUpscaler(pipelineClass)) CheckLatentUpscalerLoaders(settings, pipelineClass);
        if (family == Family.Flux && settings.SingleFile is not null)
            throw new ArgumentException($"--single-file applies to Stable Diffusion 1.x / 2.x / SDXL / 3 models; {settings.Model} is a {pipelineClass}.");
        // A FLUX.1-Canny / Depth LoRA makes FLUX.1-dev a control model (diffusers: FluxControlPipeline.from_pretrained of
        // FLUX.1-dev, then load_lora_weights), which the file's header tells: the options are checked against that.
        IReadOnlyList<(string File, double Scale)>? loras = null;
        if (family == Family.Flux && pipelineClass == FluxComponents.FluxPipelineClass && settings.Loras.Count > 0)
        {
            loras = ResolveLoras(settings, options, ct);
            string config = Path.Combine(folder, "transformer", "config.json");
            if (File.Exists(config))
            {
                var transformerConfig = ConfigJson.Read<FluxTransformer2DModelConfig>(config);
                var control = loras.Where(l => FluxComponents.IsControlLora(l.File, transformerConfig)).ToList();
                if (control.Count > 1)
                    throw new ArgumentException($"--lora: {string.Join(" and ", control.Select(l => Path.GetFileName(l.File)))} are both FLUX.1 control LoRAs (they widen x_embedder for a control image); give one.");
                if (control.Count == 1) pipelineClass = FluxComponents.ControlPipelineClass;
            }
        }
        var controlNets = ControlNetsOf(settings);
        if (family == Family.Flux && controlNets.Count > 0) CheckFluxControlNet(settings.Model!, pipelineClass);
        var textualInversions = TextualInversionFiles(settings, pipelineClass, family, options, ct);
        string? reduxFolder = null;
        if (settings is GenerateSettings generate)
        {
            CheckOptions(generate, pipelineClass, family);
            if (family == Family.Sd3 && settings.SingleFile is null) CheckSd3Size(generate, folder);
            if (IsUpscaler(pipelineClass)) CheckNoiseLevel(generate, folder);
            if (generate.Redux is { } redux) reduxFolder = CheckRedux(redux, options.ResolveFolder(redux, ct), folder, zeroText: generate.Prompt is null);
        }
        if (settings is ServeCommand.Settings { Redux: { } servedRedux })
        {
            // Its prompt is a request's: the zero text part (no prompt) is checked per request, against the loaded transformer.
            if (family != Family.Flux)
                throw new ArgumentException($"--redux applies to FLUX.1 models (FLUX.1-Redux makes Flux prompt embeddings); {settings.Model} is a {pipelineClass}.");
            reduxFolder = CheckRedux(servedRedux, options.ResolveFolder(servedRedux, ct), folder, zeroText: false);
        }
        var adapters = AdaptersOf(settings);
        if (settings is ServeCommand.Settings && adapters.Count > 0 && family != Family.UNet)
            throw new ArgumentException($"--adapter applies to SD 1.x / 2.x and SDXL models (diffusers' T2I-Adapter pipelines); {settings.Model} is a {pipelineClass}.");
        var unionTypes = family == Family.UNet ? ControlNetUnionTypesOf(controlNets, options, ct) : controlNets.Select(_ => (int?)null).ToArray();
        if (settings is GenerateSettings unionCheck && family == Family.UNet) CheckControlModes(unionCheck, unionTypes);
        // Hub files beside the model are fetched once the options are checked, before any weights load.
        loras ??= ResolveLoras(settings, options, ct);
        if (settings is ServeCommand.Settings { IpAdapter: not null }) CheckServedIpAdapter(settings, pipelineClass);
        var ipAdapter = settings.IpAdapter is { } adapterFile
            ? (File: options.ResolveFile(adapterFile, ct), ImageEncoder: ResolveImageEncoder(options, settings, ct)) : default;
        output.Error.WriteLine($"loading {settings.Model} ({settings.Dtype}, {settings.Device})");
        var model = family switch
        {
            Family.UNet => new LoadedModel(settings.Model!, pipelineClass, controlNets, null, WithIpAdapter(output, ipAdapter,
                WithTextualInversion(output, textualInversions, WithLoras(output, loras, StableDiffusionComponents.FromPretrained(folder, options, controlNets,
                    adapters, ct), c => c.FuseLora), LoadTextualInversion), (c, file, encoder) => c.LoadIpAdapter(file, encoder)), adapters: adapters),
            Family.Flux => new LoadedModel(settings.Model!, pipelineClass, controlNets, null, null, WithIpAdapter(output, ipAdapter,
                WithTextualInversion(output, textualInversions, WithLoras(output, loras, FluxComponents.FromPretrained(folder, options, controlNets, ct), c => c.FuseLora), LoadTextualInversion),
                (c, file, encoder) => c.LoadIpAdapter(file, encoder))),
            Family.PixArt => new LoadedModel(settings.Model!, pipelineClass, controlNets, null, null, pixArt: PixArtComponents.FromPretrained(folder, options, ct)),
            Family.Sana => new LoadedModel(settings.Model!, pipelineClass, controlNets, null, null, sana: WithLoras(output, loras, SanaComponents.FromPretrained(folder, options, ct), c => c.FuseLora)),
            Family.Lumina2 => new LoadedModel(settings.Model!, pipelineClass, controlNets, null, null, lumina2: WithLoras(output, loras, Lumina2Components.FromPretrained(folder, options, ct), c => c.FuseLora)),
            Family.AuraFlow => new LoadedModel(settings.Model!, pipelineClass, controlNets, null, null, auraFlow: WithLoras(output, loras, AuraFlowComponents.FromPretrained(folder, options, ct), c => c.FuseLora)),
            // CogView4's prompt encoding (GLM-4's tokenizer) is not built yet: --prompt-embeds is required (CheckTextOnlyFlow) and no encoder loads.
            Family.CogView4 => new LoadedModel(settings.Model!, pipelineClass, controlNets, null, null,
                cogView4: WithLoras(output, loras, CogView4Components.FromPretrained(folder, options with { LoadTextEncoders = false }, ct), c => c.FuseLora)),
            Family.Chroma => new LoadedModel(settings.Model!, pipelineClass, controlNets, null, null,
                chroma: WithLoras(output, loras, ChromaComponents.FromPretrained(folder, options, ct), c => c.FuseLora)),
            // --prompt-embeds without --negative-prompt needs no Qwen3-4B: it is left out (diffusers' text_encoder=None).
            Family.ZImage => new LoadedModel(settings.Model!, pipelineClass, controlNets, null, null, zImage: WithLoras(output, loras, ZImageComponents.FromPretrained(folder,
                options with { LoadTextEncoders = settings is not GenerateSettings { PromptEmbeds: not null, NegativePrompt: null } }, ct), c => c.FuseLora)),
            // --prompt-embeds without --negative-prompt needs no Qwen2.5-VL-7B: it is left out (diffusers' text_encoder=None).
            Family.QwenImage => new LoadedModel(settings.Model!, pipelineClass, controlNets, null, null, qwenImage: WithLoras(output, loras, QwenImageComponents.FromPretrained(folder,
                options with { LoadTextEncoders = settings is not GenerateSettings { PromptEmbeds: not null, NegativePrompt: null } }, ct), c => c.FuseLora)),
            // --prompt-embeds with negative embeddings (or on a distilled model) needs no Qwen3: it is left out.
            Family.Flux2Klein => new LoadedModel(settings.Model!, pipelineClass, controlNets, null, null, flux2Klein: WithLoras(output, loras, Flux2KleinComponents.FromPretrained(folder,
                options with { LoadTextEncoders = settings is not GenerateSettings { PromptEmbeds: not null } generateEmbeds || !Flux2PromptEmbedsSuffice(generateEmbeds, folder) }, ct), c => c.FuseLora)),
            _ => new LoadedModel(settings.Model!, pipelineClass, controlNets, WithIpAdapter(output, ipAdapter, WithLoras(output, loras,
                StableDiffusion3Components.FromPretrained(folder, options, controlNets, ct), c => c.FuseLora), (c, file, encoder) => c.LoadIpAdapter(file, encoder)), null),
        };
        model.Loras = loras;
        if (reduxFolder is not null)
            model.ReduxLoader = (textEncoders, token) => FluxPriorReduxPipeline.FromPretrained(reduxFolder, options, textEncoders, token);
        if (reduxFolder is not null && settings is ServeCommand.Settings)
        {
            try
            {
                model.ReduxPrior = FluxPriorReduxPipeline.FromPretrained(reduxFolder, options, model.Flux, ct);
                model.ReduxName = ((ServeCommand.Settings)settings).Redux;
                output.Error.WriteLine($"loaded FLUX.1-Redux prior {model.ReduxName}");
            }
            catch
            {
                model.Dispose();
                throw;
            }
        }
        (model.IpAdapter, model.IpAdapterImageEncoder) = (settings.IpAdapter, settings.IpAdapterImageEncoder);
        return model;
    }

    /// <summary>The loaded --ip-adapter, as given (serve's requests name it again for the option checks), or null.</summary>
    public string? IpAdapter { get; private set; }

    /// <summary>The --ip-adapter-image-encoder given with <see cref="IpAdapter"/>, or null (the folder beside it).</summary>
    public string? IpAdapterImageEncoder { get; private set; }

    /// <summary>The fused --lora files (local paths; a hub file's cache copy) with the scale each is fused at now, in fuse
    /// order; empty without --lora.</summary>
    public IReadOnlyList<(string File, double Scale)> Loras { get; private set; } = [];

    /// <summary>
    /// Fuses the LoRAs again at other scales, one per LoRA in <see cref="Loras"/> or one for all (diffusers'
    /// <c>unfuse_lora</c>, <c>set_adapters(names, adapter_weights=scales)</c>, <c>fuse_lora()</c>); nothing to do at the
    /// current ones. Checked before any weight changes.
    /// </summary>
    /// <exception cref="ArgumentException">No LoRA is fused, a scale is not finite, or the count fits neither.</exception>
    public void SetLoraScales(IReadOnlyList<double> scales)
    {
        CheckLoraScales(scales);
        var wanted = Loras.Select((l, i) => (l.File, Scale: scales[scales.Count == 1 ? 0 : i])).ToList();
        if (wanted.SequenceEqual(Loras)) return;
        PipelineComponents components = (PipelineComponents?)Sd3 ?? (PipelineComponents?)UNet ?? (PipelineComponents?)Flux ?? (PipelineComponents?)Chroma
            ?? (PipelineComponents?)ZImage ?? (PipelineComponents?)QwenImage ?? (PipelineComponents?)Sana ?? (PipelineComponents?)Lumina2
            ?? (PipelineComponents?)AuraFlow ?? (PipelineComponents?)CogView4 ?? Flux2Klein!;
        components.UnfuseLora();
        var fused = new List<(string File, double Scale)>();
        try
        {
            foreach (var (file, scale) in wanted)
            {
                if (Sd3 is not null) Sd3.FuseLora(file, scale);
                else if (UNet is not null) UNet.FuseLora(file, scale);
                else if (Flux is not null) Flux.FuseLora(file, scale);
                else if (Chroma is not null) Chroma.FuseLora(file, scale);
                else if (ZImage is not null) ZImage.FuseLora(file, scale);
                else if (QwenImage is not null) QwenImage.FuseLora(file, scale);
                else if (Sana is not null) Sana.FuseLora(file, scale);
                else if (Lumina2 is not null) Lumina2.FuseLora(file, scale);
                else if (AuraFlow is not null) AuraFlow.FuseLora(file, scale);
                else if (CogView4 is not null) CogView4.FuseLora(file, scale);
                else Flux2Klein!.FuseLora(file, scale);
                fused.Add((file, scale));
            }
        }
        finally
        {
            // What is fused now: a LoRA whose fuse failed, and those after it, count as scale 0 (unfused).
            Loras = [.. fused, .. wanted.Skip(fused.Count).Select(l => (l.File, 0.0))];
        }
    }

    /// <summary>Throws unless <paramref name="scales"/> fit <see cref="Loras"/> (<see cref="SetLoraScales"/>), before any
    /// generation starts.</summary>
    /// <exception cref="ArgumentException">No LoRA is fused, a scale is not finite, or the count fits neither.</exception>
    public void CheckLoraScales(IReadOnlyList<double> scales)
    {
        if (Loras.Count == 0) throw new ArgumentException("lora_scale needs a LoRA: start the server with --lora FILE.");
        if (scales.Count != 1 && scales.Count != Loras.Count)
            throw new ArgumentException($"lora_scale has {scales.Count} numbers for {Loras.Count} LoRAs: give one (for all) or one per LoRA.");
        foreach (double scale in scales)
            if (!double.IsFinite(scale)) throw new ArgumentException($"lora_scale must be finite numbers, got {scale}.");
    }

    /// <summary>The --lora files, hub files fetched into the cache, with their scales.</summary>
    private static IReadOnlyList<(string File, double Scale)> ResolveLoras(ModelSettings settings, PipelineLoadOptions options, CancellationToken ct) =>
        settings.Loras.Select(l => (options.ResolveFile(l.File, ct), l.Scale)).ToList();

    /// <summary>Per ControlNet folder, from its config before any weights load: its num_control_type if it is a
    /// ControlNet-Union, else null.</summary>
    private static int?[] ControlNetUnionTypesOf(IReadOnlyList<string> controlNets, PipelineLoadOptions options, CancellationToken ct) =>
        controlNets.Select(net => options.ResolveFolder(net, ct) is var folder && ControlNetUnionModel.IsControlNetUnion(folder)
            ? ConfigJson.Read<ControlNetUnionModelConfig>(Path.Combine(folder, "config.json")).NumControlType : (int?)null).ToArray();

    /// <summary>
    /// A UNet model's ControlNets (<paramref name="unionTypes"/>: <see cref="ControlNetUnionTypes"/>) against --control-mode:
    /// ControlNet-Union folders need one mode per control image, each below the model's num_control_type; other
    /// ControlNets take none. Nothing to check when the settings use no ControlNet.
    /// </summary>
    private static void CheckControlModes(GenerateSettings settings, IReadOnlyList<int?> unionTypes)
    {
        var controlNets = settings.ControlNets;
        var modes = settings.ControlModeValues;
        for (int i = 0; i < controlNets.Count && i < unionTypes.Count; i++)
        {
            if (unionTypes[i] is not { } types)
            {
                if (modes is not null)
                    throw new ArgumentException($"--control-mode applies to ControlNet-Union models; {controlNets[i]} is a plain ControlNet (ControlNetModel).");
                continue;
            }
            if (modes is null)
                throw new ArgumentException($"{controlNets[i]} is a ControlNet-Union: give the control type of each --control-image with --control-mode " +
                    $"({string.Join(", ", ControlNetUnionMode.Names.Select(kv => $"{kv.Key} {kv.Value}"))}).");
            foreach (int mode in controlNets.Count == 1 ? modes : [modes[i]])
                if (mode >= types)
                    throw new ArgumentException($"--control-mode {mode}: {controlNets[i]} knows {types} control types (0 to {types - 1}).");
        }
    }

    /// <summary>Refuses the options this model's family does not have (as invalid input, before any compute).</summary>
    public void CheckOptions(GenerateSettings settings)
    {
        CheckOptions(settings, PipelineClass, FamilyOf(PipelineClass));
        if (UNet is not null) CheckControlModes(settings, ControlNetUnionTypes);
        // serve --redux: the prompt is a request's, so the zero text part is checked here (generate checks it before loading).
        if (settings.Redux is not null && settings.Prompt is null && Flux is { } flux
            && flux.Transformer.Config.PooledProjectionDim != FluxPriorReduxPipeline.ZeroPooledPromptEmbedsDim)
            throw new ArgumentException($"--redux-image without --prompt gives a zero pooled embedding of width {FluxPriorReduxPipeline.ZeroPooledPromptEmbedsDim} (diffusers' FLUX.1 size), but the model's transformer takes {flux.Transformer.Config.PooledProjectionDim} (pooled_projection_dim): give --prompt, which the model's own text encoders encode.");
        if (Sd3 is { } sd3) CheckSd3Size(settings, sd3.Transformer.Config, sd3.Vae.VaeScaleFactor);
        if (UNet is { IsUpscaler: true } upscaler) CheckNoiseLevel(settings, upscaler.MaxNoiseLevel);
    }

    /// <summary>
    /// An SD3 image is bounded by the transformer's position table (the other families have no such limit): checked from
    /// the folder's configs before any weights load; a folder without them is left to the pipeline's own check.
    /// </summary>
    private static void CheckSd3Size(GenerateSettings settings, string folder)
    {
        string transformer = Path.Combine(folder, "transformer", "config.json"), vae = Path.Combine(folder, "vae", "config.json");
        if ((settings.Height is null && settings.Width is null) || !File.Exists(transformer) || !File.Exists(vae)) return;
        CheckSd3Size(settings, ConfigJson.Read<SD3Transformer2DModelConfig>(transformer), ConfigJson.Read<AutoencoderKLConfig>(vae).VaeScaleFactor);
    }

    private static void CheckSd3Size(GenerateSettings settings, SD3Transformer2DModelConfig transformer, int vaeScaleFactor)
    {
        if (settings.Height is null && settings.Width is null) return;
        int fallback = transformer.SampleSize * vaeScaleFactor; // the pipeline's default size
        StableDiffusion3Components.CheckImageSize(transformer, vaeScaleFactor, settings.Height ?? fallback, settings.Width ?? fallback);
    }

    /// <summary>Whether <paramref name="pipelineClass"/> is an InstructPix2Pix model's (diffusers'
    /// StableDiffusionInstructPix2PixPipeline or StableDiffusionXLInstructPix2PixPipeline).</summary>
    internal static bool IsInstructPix2Pix(string pipelineClass) =>
        pipelineClass is StableDiffusionInstructPix2PixPipeline.PipelineClass or StableDiffusionXLInstructPix2PixPipeline.PipelineClass;

    /// <summary>
    /// InstructPix2Pix models edit an image as the prompt says (diffusers' StableDiffusionInstructPix2PixPipeline and
    /// StableDiffusionXLInstructPix2PixPipeline): img2img only, no strength, no ControlNet / adapter / IP-Adapter / CLIP
    /// skip; SD 1.x keeps the image's size and has no guidance rescale, SDXL takes --width / --height (default the model's
    /// size) and --guidance-rescale; --image-guidance is theirs alone.
    /// </summary>
    private static void CheckInstructPix2Pix(GenerateSettings settings, string pipelineClass)
    {
        if (!IsInstructPix2Pix(pipelineClass))
        {
            if (settings is Img2ImgSettings { ImageGuidance: not null })
                throw new ArgumentException($"--image-guidance applies to InstructPix2Pix models (StableDiffusionInstructPix2PixPipeline, StableDiffusionXLInstructPix2PixPipeline); {settings.Model} is a {pipelineClass}.");
            return;
        }
        if (settings is not Img2ImgSettings || settings is InpaintSettings)
            throw new ArgumentException($"{settings.Model} is an InstructPix2Pix model ({pipelineClass}): edit an image with `img2img --image FILE --prompt \"the instruction\"`.");
        bool xl = pipelineClass == StableDiffusionXLInstructPix2PixPipeline.PipelineClass;
        string? lacking = ((Img2ImgSettings)settings).Strength is not null ? "--strength"
            : !xl && (settings.Width is not null || settings.Height is not null) ? "--width / --height"
            : settings.ControlNets.Count > 0 ? "--controlnet" : settings.Adapters.Count > 0 ? "--adapter" : settings.IpAdapter is not null ? "--ip-adapter"
            : !xl && settings.GuidanceRescale is not null ? "--guidance-rescale" : settings.ClipSkip is not null ? "--clip-skip" : null;
        if (lacking is not null)
            throw new ArgumentException($"{lacking} does not apply to InstructPix2Pix (diffusers' {pipelineClass} takes none{(xl ? "" : "; the output has the image's size")}); {settings.Model} is a {pipelineClass}.");
    }

    /// <summary>Whether <paramref name="pipelineClass"/> is an x4 upscaler's (diffusers' StableDiffusionUpscalePipeline).</summary>
    internal static bool IsUpscaler(string pipelineClass) => pipelineClass == StableDiffusionUpscalePipeline.PipelineClass;

    /// <summary>
    /// x4 upscalers (diffusers' StableDiffusionUpscalePipeline, stabilityai/stable-diffusion-x4-upscaler) upscale an image
    /// as the prompt describes it: img2img only, the output four times the image (no --width / --height), --noise-level
    /// instead of --strength, none of the add-ons diffusers' pipeline lacks; --noise-level is theirs alone.
    /// </summary>
    private static void CheckUpscaler(GenerateSettings settings, string pipelineClass)
    {
        if (!IsUpscaler(pipelineClass))
        {
            if (settings is Img2ImgSettings { NoiseLevel: not null })
                throw new ArgumentException($"--noise-level applies to x4 upscalers (StableDiffusionUpscalePipeline, e.g. stabilityai/stable-diffusion-x4-upscaler); {settings.Model} is a {pipelineClass}.");
            return;
        }
        if (settings is not Img2ImgSettings || settings is InpaintSettings)
            throw new ArgumentException($"{settings.Model} is an x4 upscaler ({pipelineClass}): upscale an image with `img2img --image FILE --prompt \"what it shows\" [--noise-level 20]`.");
        string? lacking = ((Img2ImgSettings)settings).Strength is not null ? "--strength (the image is noised by --noise-level instead)"
            : settings.Width is not null || settings.Height is not null ? "--width / --height (the output is four times the image)"
            : settings.ControlNets.Count > 0 ? "--controlnet" : settings.Adapters.Count > 0 ? "--adapter" : settings.IpAdapter is not null ? "--ip-adapter"
            : settings.GuidanceRescale is not null ? "--guidance-rescale" : settings.SingleFile is not null ? "--single-file (load the diffusers folder)" : null;
        if (lacking is not null)
            throw new ArgumentException($"{lacking} does not apply to x4 upscalers (diffusers' {pipelineClass} takes none); {settings.Model} is a {pipelineClass}.");
    }

    /// <summary>Whether <paramref name="pipelineClass"/> is a latent x2 upscaler's (diffusers' StableDiffusionLatentUpscalePipeline).</summary>
    internal static bool IsLatentUpscaler(string pipelineClass) => pipelineClass == StableDiffusionLatentUpscalePipeline.PipelineClass;

    /// <summary>
    /// Latent x2 upscalers (diffusers' StableDiffusionLatentUpscalePipeline, stabilityai/sd-x2-latent-upscaler) upscale an
    /// image (its VAE latents) twice as the prompt describes it: img2img only, one image, the model's Euler scheduler, none
    /// of the options diffusers' call lacks.
    /// </summary>
    private static void CheckLatentUpscaler(GenerateSettings settings, string pipelineClass)
    {
        if (!IsLatentUpscaler(pipelineClass)) return;
        if (settings is not Img2ImgSettings || settings is InpaintSettings)
            throw new ArgumentException($"{settings.Model} is a latent x2 upscaler ({pipelineClass}): upscale an image with `img2img --image FILE --prompt \"what it shows\"`.");
        string? lacking = ((Img2ImgSettings)settings).Strength is not null ? "--strength"
            : settings.Width is not null || settings.Height is not null ? "--width / --height (the output is twice the image)"
            : settings.NumImages != 1 ? "--num-images other than 1"
            : settings.ControlNets.Count > 0 ? "--controlnet" : settings.Adapters.Count > 0 ? "--adapter" : settings.IpAdapter is not null ? "--ip-adapter"
            : settings.GuidanceRescale is not null ? "--guidance-rescale" : settings.ClipSkip is not null ? "--clip-skip" : settings.Eta is not null ? "--eta"
            : settings.Scheduler is { } scheduler && scheduler is not ("euler" or "EulerDiscreteScheduler") ? "--scheduler other than euler (the pipeline preconditions with the Euler sigmas)"
            : null;
        if (lacking is not null)
            throw new ArgumentException($"{lacking} does not apply to latent upscalers (diffusers' {pipelineClass} takes none); {settings.Model} is a {pipelineClass}.");
    }

    /// <summary>diffusers' latent upscaler pipeline has no LoRA, textual inversion or single-file loader: refused before loading.</summary>
    private static void CheckLatentUpscalerLoaders(ModelSettings settings, string pipelineClass)
    {
        string? lacking = settings.Loras.Count > 0 ? "--lora" : settings.TextualInversion is { Length: > 0 } ? "--textual-inversion"
            : settings.SingleFile is not null ? "--single-file" : settings.IpAdapter is not null ? "--ip-adapter" : null;
        if (lacking is not null)
            throw new ArgumentException($"{lacking} does not apply to latent upscalers (diffusers' {pipelineClass} has no such loader); {settings.Model} is a {pipelineClass}.");
    }

    /// <summary>--noise-level against the upscaler folder's model_index.json max_noise_level (default 350), before any weights load.</summary>
    private static void CheckNoiseLevel(GenerateSettings settings, string folder)
    {
        if (settings is not Img2ImgSettings { NoiseLevel: not null }) return;
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "model_index.json")));
        CheckNoiseLevel(settings, index?["max_noise_level"]?.GetValue<int>() ?? 350);
    }

    private static void CheckNoiseLevel(GenerateSettings settings, int max)
    {
        if (settings is Img2ImgSettings { NoiseLevel: { } level } && level > max)
            throw new ArgumentException($"--noise-level must be at most the model's max_noise_level, {max}; got {level}.");
    }

    /// <summary>
    /// The verbs of FLUX.1-Fill and FLUX.1-Kontext: Fill only inpaints (diffusers' FluxFillPipeline needs an image and a
    /// mask); Kontext edits with img2img (no strength, no mask), inpaints (FluxKontextInpaintPipeline, with strength) or
    /// generates from the prompt alone.
    /// </summary>
    private static void CheckFluxVariant(GenerateSettings settings, string pipelineClass)
    {
        if (pipelineClass == FluxComponents.ControlPipelineClass)
        {
            // diffusers' FluxControlPipeline, FluxControlImg2ImgPipeline and FluxControlInpaintPipeline.
            if (settings.ControlImage is not { Length: 1 })
                throw new ArgumentException($"{settings.Model} is a FLUX.1 control model ({pipelineClass}: FLUX.1-Canny-dev, Depth-dev): give its control image (Canny edges or a depth map) with --control-image.");
            if (settings.TrueCfg is not null || settings.NegativePrompt is not null)
                throw new ArgumentException($"--true-cfg and --negative-prompt do not apply to FLUX.1 control models (diffusers' FluxControlPipeline has no true CFG); {settings.Model} is a {pipelineClass}.");
            if (settings is InpaintSettings { PaddingMaskCrop: not null })
                throw new ArgumentException($"--padding-mask-crop does not apply to FLUX.1 control models (diffusers' FluxControlInpaintPipeline has none); {settings.Model} is a {pipelineClass}.");
            return;
        }
        if (pipelineClass == FluxComponents.FillPipelineClass && settings is not InpaintSettings)
            throw new ArgumentException($"{settings.Model} is a FluxFillPipeline (FLUX.1-Fill), which repaints the masked part of an image: use `inpaint --image FILE --mask FILE` (diffusers' Fill pipeline needs both).");
        if (pipelineClass == FluxComponents.FillPipelineClass && settings.TrueCfg is not null)
            throw new ArgumentException($"--true-cfg does not apply to FLUX.1-Fill (diffusers' FluxFillPipeline has no true CFG); {settings.Model} is a {pipelineClass}.");
        if (pipelineClass != FluxComponents.KontextPipelineClass) return;
        if (settings is InpaintSettings && (settings.Width is not null || settings.Height is not null))
            throw new ArgumentException($"--width and --height do not apply to FLUX.1-Kontext inpainting: the output takes the image's Kontext size (the preferred Kontext resolution closest to its aspect ratio, as diffusers' FluxKontextInpaintPipeline sizes it); {settings.Model} is a {pipelineClass}.");
        if (settings is Img2ImgSettings { Strength: not null } and not InpaintSettings)
            throw new ArgumentException($"--strength does not apply to FLUX.1-Kontext: the image conditions every step as extra tokens (diffusers' FluxKontextPipeline has no strength); {settings.Model} is a {pipelineClass}.");
    }

    /// <summary>Flux ControlNets steer FLUX.1 text-to-image models (FluxPipeline folders) only: diffusers has no ControlNet
    /// pipeline for FLUX.1-Fill or FLUX.1-Kontext.</summary>
    private static void CheckFluxControlNet(string model, string pipelineClass)
    {
        if (pipelineClass != FluxComponents.FluxPipelineClass)
            throw new ArgumentException($"--controlnet applies to FLUX.1 text-to-image models (FluxPipeline: FLUX.1-dev, FLUX.1-schnell), not to {model}, a {pipelineClass} (diffusers has no Flux ControlNet pipeline for it).");
    }

    /// <summary>Whether <paramref name="pipelineClass"/> is a latent consistency model's (diffusers' LatentConsistencyModel(Img2Img)Pipeline).</summary>
    internal static bool IsLatentConsistency(string pipelineClass) =>
        pipelineClass is LatentConsistencyModelPipeline.PipelineClass or LatentConsistencyModelImg2ImgPipeline.PipelineClass;

    /// <summary>
    /// Latent consistency models (e.g. SimianLuo/LCM_Dreamshaper_v7) run diffusers' LatentConsistencyModelPipeline
    /// (generate) and LatentConsistencyModelImg2ImgPipeline (img2img): no inpainting pipeline, no classifier-free guidance
    /// (so no negative prompt), the LCMScheduler, and none of the options those calls lack.
    /// </summary>
    private static void CheckLatentConsistency(GenerateSettings settings, string pipelineClass)
    {
        if (!IsLatentConsistency(pipelineClass)) return;
        if (settings is InpaintSettings)
            throw new ArgumentException($"{settings.Model} is a latent consistency model ({pipelineClass}); diffusers has no LCM inpainting pipeline: use `generate` or `img2img`.");
        string? lacking = settings.NegativePrompt is not null ? "--negative-prompt (LCM runs no classifier-free guidance: --guidance is embedded into the UNet's time conditioning)"
            : settings.Prompt2 is not null ? "--prompt-2"
            : settings.ControlNets.Count > 0 ? "--controlnet" : settings.Adapters.Count > 0 ? "--adapter"
            : settings.GuidanceRescale is not null ? "--guidance-rescale" : settings.Eta is not null ? "--eta"
            : settings.Scheduler is { } scheduler && scheduler is not ("lcm" or "LCMScheduler") ? "--scheduler other than lcm (the pipeline decodes the LCMScheduler's denoised estimate)"
            : settings is Img2ImgSettings && (settings.Width is not null || settings.Height is not null) ? "--width / --height with img2img (the output has the image's size)"
            : null;
        if (lacking is not null)
            throw new ArgumentException($"{lacking} does not apply to latent consistency models (diffusers' {(settings is Img2ImgSettings ? LatentConsistencyModelImg2ImgPipeline.PipelineClass : LatentConsistencyModelPipeline.PipelineClass)} takes none); {settings.Model} is a {pipelineClass}.");
    }

    /// <summary>
    /// PixArt-Σ / PixArt-α (diffusers' PixArtSigmaPipeline / PixArtAlphaPipeline) only generate from text: diffusers has no
    /// PixArt image-to-image or inpainting pipeline, no ControlNet / adapter / IP-Adapter / LoRA / textual inversion
    /// loading for them here, one prompt (T5), plain CFG. Refused before any weights load.
    /// </summary>
    private static void CheckPixArt(ModelSettings settings, string pipelineClass)
    {
        if (settings is Img2ImgSettings)
            throw new ArgumentException($"{settings.Model} is a {pipelineClass} (PixArt): it only generates from text (diffusers has no PixArt image-to-image or inpainting pipeline); use `generate`.");
        if (FirstLackingOption(settings, "--scheduler", "--eta", "--no-resolution-binning") is { } lacking)
            throw new ArgumentException($"{lacking} does not apply to PixArt models (diffusers' {pipelineClass} has no such input here); {settings.Model} is a {pipelineClass}.");
    }

    /// <summary>
    /// Sana (diffusers' SanaPipeline; Efficient-Large-Model/Sana_1600M_1024px_diffusers) only generates from text here: one
    /// Gemma-2 prompt (the complex human instruction in front), a negative prompt under CFG, resolution binning (off with
    /// --no-resolution-binning: then multiples of 32), the model's own scheduler, --lora (SanaLoraLoaderMixin's transformer
    /// LoRAs); no ControlNet / scheduler swap yet. SANA-Sprint folders also run image-to-image (SanaSprintImg2ImgPipeline,
    /// with --strength). Refused before any weights load.
    /// </summary>
    private static void CheckSana(ModelSettings settings, string pipelineClass)
    {
        if (settings is InpaintSettings || (settings is Img2ImgSettings && pipelineClass != SanaComponents.SanaSprintPipelineClass))
            throw new ArgumentException($"{settings.Model} is a {pipelineClass} (Sana): it only generates from text here{(pipelineClass == SanaComponents.SanaSprintPipelineClass ? " and edits with img2img (SanaSprintImg2ImgPipeline); diffusers has no SANA-Sprint inpainting pipeline" : "")}; use `generate`.");
        if (FirstLackingOption(settings, "--no-resolution-binning", "--lora") is { } lacking)
            throw new ArgumentException($"{lacking} does not apply to Sana models (diffusers' {pipelineClass} has no such input here); {settings.Model} is a {pipelineClass}.");
        if (pipelineClass == SanaComponents.SanaSprintPipelineClass && settings is GenerateSettings { NegativePrompt: not null })
            throw new ArgumentException($"--negative-prompt does not apply to SANA-Sprint (diffusers' {pipelineClass} embeds the guidance scale and has no negative prompt); {settings.Model} is a {pipelineClass}.");
        if (settings is GenerateSettings { NoResolutionBinning: true } g)
        {
            // Without binning the size runs as given: the latents are 32x smaller (Sana's DC-AE).
            if (g.Width is { } w && w % 32 != 0) throw new ArgumentException($"--width must be a multiple of 32 for Sana with --no-resolution-binning, got {w}.");
            if (g.Height is { } h && h % 32 != 0) throw new ArgumentException($"--height must be a multiple of 32 for Sana with --no-resolution-binning, got {h}.");
        }
    }

    /// <summary>
    /// Lumina-Image 2.0 (diffusers' Lumina2Pipeline), AuraFlow (AuraFlowPipeline) and CogView4 (CogView4Pipeline) only
    /// generate from text: diffusers has no image-to-image or inpainting pipeline for them; one prompt, a negative prompt
    /// under CFG, sizes in multiples of 16, the model's own scheduler, no ControlNet here; --lora (their LoRA mixins'
    /// transformer LoRAs); CogView4 from --prompt-embeds only (its prompt encoding is not built yet). Lumina-Image 2.0 takes --cfg-truncation (its
    /// cfg_trunc_ratio) and --cfg-normalization 0 or 1 (its cfg_normalization, on by default). Refused before any weights load.
    /// </summary>
    private static void CheckTextOnlyFlow(ModelSettings settings, string pipelineClass, Family which)
    {
        string family = which switch { Family.Lumina2 => "Lumina-Image 2.0", Family.AuraFlow => "AuraFlow", _ => "CogView4" };
        if (settings is Img2ImgSettings)
            throw new ArgumentException($"{settings.Model} is a {pipelineClass} ({family}): it only generates from text (diffusers has no {family} image-to-image or inpainting pipeline); use `generate`.");
        if ((which == Family.CogView4 ? FirstLackingOption(settings, "--prompt-embeds", "--lora") : FirstLackingOption(settings, "--lora")) is { } lacking)
            throw new ArgumentException($"{lacking} does not apply to {family} models (diffusers' {pipelineClass} has no such input here); {settings.Model} is a {pipelineClass}.");
        if (which == Family.CogView4 && settings is not GenerateSettings { PromptEmbeds: not null })
            throw new ArgumentException($"{settings.Model} is a {pipelineClass}: its prompt encoding (GLM-4's tokenizer) is not built yet, so CogView4 runs from `generate --prompt-embeds FILE` " +
                "(prompt_embeds and, with guidance, negative_prompt_embeds: GLM-4's second-to-last hidden states) only.");
        if (settings is not GenerateSettings g) return;
        if (g.Width is { } w && w % 16 != 0) throw new ArgumentException($"--width must be a positive multiple of 16 for {family}, got {w}.");
        if (g.Height is { } h && h % 16 != 0) throw new ArgumentException($"--height must be a positive multiple of 16 for {family}, got {h}.");
        if (g.CfgNormalizationValue is { } n && n is not (0 or 1))
            throw new ArgumentException($"--cfg-normalization is on (1) or off (0) for Lumina-Image 2.0 (diffusers' cfg_normalization is a bool; the default is on), got {g.CfgNormalization}.");
    }

    /// <summary>
    /// The first option that a text-to-image family without add-ons (PixArt, Sana, Chroma, Z-Image) lacks, in one fixed order,
    /// or null; <paramref name="takes"/> names those the family does take. Load-time options count for serve too.
    /// </summary>
    private static string? FirstLackingOption(ModelSettings settings, params string[] takes)
    {
        var options = new List<(string Option, bool Given)>
        {
            ("--lora", settings.Loras.Count > 0), ("--textual-inversion", settings.TextualInversion is { Length: > 0 }),
            ("--single-file", settings.SingleFile is not null), ("--ip-adapter", settings.IpAdapter is not null), ("--no-t5", settings.NoT5),
        };
        if (settings is ServeCommand.Settings serve)
            options.AddRange([("--controlnet", serve.ControlNets.Count > 0), ("--adapter", serve.Adapters.Count > 0), ("--redux", serve.Redux is not null)]);
        if (settings is GenerateSettings g)
            options.AddRange([
                ("--controlnet", g.ControlNets.Count > 0), ("--control-image", g.ControlImage is { Length: > 0 }), ("--adapter", g.Adapters.Count > 0),
                ("--prompt-2", g.Prompt2 is not null), ("--prompt-3", g.Prompt3 is not null), ("--prompt-embeds", g.PromptEmbeds is not null),
                ("--clip-skip", g.ClipSkip is not null), ("--skip-layers", g.SkipLayers is not null), ("--guidance-rescale", g.GuidanceRescale is not null),
                ("--true-cfg", g.TrueCfg is not null), ("--redux", g.Redux is not null), ("--ip-adapter-image", g.IpAdapterImage is not null),
                ("--scheduler", g.Scheduler is not null), ("--eta", g.Eta is not null), ("--no-resolution-binning", g.NoResolutionBinning),
                ("--freeu", g.FreeU is not null), ("--image-guidance", g is Img2ImgSettings { ImageGuidance: not null }),
                ("--reference-image", g.ReferenceImages.Count > 0),
            ]);
        return options.FirstOrDefault(o => o.Given && !takes.Contains(o.Option)).Option;
    }

    /// <summary>
    /// Chroma and Z-Image: text-to-image and image-to-image only (diffusers 0.36 has no inpainting pipeline for either),
    /// sizes in multiples of 16, and none of the options <see cref="FirstLackingOption"/> lists but --prompt-embeds and
    /// <paramref name="takes"/>.
    /// </summary>
    private static void CheckFlowTextToImage(ModelSettings settings, string pipelineClass, string family, params string[] takes)
    {
        if (settings is InpaintSettings)
            throw new ArgumentException($"{settings.Model} is a {pipelineClass} ({family}): it generates from text and edits with img2img (diffusers 0.36 has no {family} inpainting pipeline); use `generate` or `img2img`.");
        if (FirstLackingOption(settings, ["--prompt-embeds", .. takes]) is { } lacking)
            throw new ArgumentException($"{lacking}{(lacking == "--true-cfg" ? $" ({family} runs real CFG: --guidance with --negative-prompt)" : "")} does not apply to {family} models (diffusers' {pipelineClass} has no such input here); {settings.Model} is a {pipelineClass}.");
        if (settings is GenerateSettings { Width: { } w } && w % 16 != 0) throw new ArgumentException($"--width must be a positive multiple of 16 for {family}, got {w}.");
        if (settings is GenerateSettings { Height: { } h } && h % 16 != 0) throw new ArgumentException($"--height must be a positive multiple of 16 for {family}, got {h}.");
    }

    /// <summary>
    /// Chroma (diffusers' ChromaPipeline / ChromaImg2ImgPipeline): text-to-image and image-to-image with one T5 prompt, a
    /// negative prompt under classifier-free guidance, FLUX's scheduler, LoRAs in diffusers' layout; no inpainting pipeline
    /// in diffusers 0.36 and no ControlNet / adapter / IP-Adapter / textual inversion loading here. Refused before any weights load.
    /// </summary>
    private static void CheckChroma(ModelSettings settings, string pipelineClass) => CheckFlowTextToImage(settings, pipelineClass, "Chroma", "--lora");

    /// <summary>
    /// Z-Image (diffusers' ZImagePipeline / ZImageImg2ImgPipeline; Tongyi-MAI/Z-Image-Turbo): text-to-image and image-to-image
    /// with one Qwen3 prompt, a negative prompt under classifier-free guidance (with cfg_normalization / cfg_truncation),
    /// FlowMatchEuler, transformer LoRAs (diffusers' ZImageLoraLoaderMixin); no inpainting pipeline in diffusers 0.36 and no
    /// ControlNet / adapter / IP-Adapter / textual inversion / scheduler swap here. Refused before any weights load.
    /// </summary>
    private static void CheckZImage(ModelSettings settings, string pipelineClass) => CheckFlowTextToImage(settings, pipelineClass, "Z-Image", "--lora");

    /// <summary>
    /// Qwen-Image (diffusers' QwenImagePipeline / QwenImageImg2ImgPipeline / QwenImageInpaintPipeline; Qwen/Qwen-Image):
    /// text-to-image, image-to-image and inpainting with one Qwen2.5-VL prompt and true CFG (--guidance is diffusers'
    /// true_cfg_scale, with --negative-prompt), FlowMatchEuler, transformer LoRAs (QwenImageLoraLoaderMixin),
    /// --padding-mask-crop; no ControlNet or scheduler swap here yet. Refused before any weights load.
    /// </summary>
    private static void CheckQwenImage(ModelSettings settings, string pipelineClass)
    {
        if (FirstLackingOption(settings, "--prompt-embeds", "--lora") is { } lacking)
            throw new ArgumentException($"{lacking}{(lacking == "--true-cfg" ? " (Qwen-Image runs real CFG: --guidance with --negative-prompt)" : "")} does not apply to Qwen-Image models (diffusers' {pipelineClass} has no such input here); {settings.Model} is a {pipelineClass}.");
        if (settings is GenerateSettings { Width: { } w } && w % 16 != 0) throw new ArgumentException($"--width must be a positive multiple of 16 for Qwen-Image, got {w}.");
        if (settings is GenerateSettings { Height: { } h } && h % 16 != 0) throw new ArgumentException($"--height must be a positive multiple of 16 for Qwen-Image, got {h}.");
    }

    /// <summary>
    /// FLUX.2 [klein] (diffusers' Flux2KleinPipeline and Flux2KleinInpaintPipeline; black-forest-labs/FLUX.2-klein-4B):
    /// text-to-image, img2img as reference editing (the image conditions every step: no --strength) and inpainting (with
    /// --strength and --padding-mask-crop), one Qwen3 prompt, CFG on the "base" models only (the empty prompt as negative: no
    /// --negative-prompt), FlowMatchEuler, transformer LoRAs (Flux2LoraLoaderMixin); no ControlNet or scheduler swap here.
    /// Refused before any weights load.
    /// </summary>
    private static void CheckFlux2Klein(ModelSettings settings, string pipelineClass)
    {
        if (FirstLackingOption(settings, "--prompt-embeds", "--lora", "--reference-image") is { } lacking)
            throw new ArgumentException($"{lacking} does not apply to FLUX.2 [klein] models (diffusers' {pipelineClass} has no such input here); {settings.Model} is a {pipelineClass}.");
        if (pipelineClass == Flux2KleinComponents.Flux2KleinKVPipelineClass)
        {
            // diffusers' Flux2KleinKVPipeline: reference editing with cached reference keys / values, no CFG, no inpainting.
            if (settings is InpaintSettings)
                throw new ArgumentException($"{settings.Model} is a {pipelineClass}: diffusers' KV-cache pipeline generates and edits with reference images (generate, img2img); it has no inpainting.");
            if (settings is GenerateSettings { Guidance: not null })
                throw new ArgumentException($"--guidance does not apply to {pipelineClass}: diffusers' KV-cache pipeline runs no CFG (its models are step-distilled).");
        }
        if (settings is GenerateSettings { NegativePrompt: not null })
            throw new ArgumentException($"--negative-prompt does not apply to FLUX.2 [klein]: diffusers' {pipelineClass} always uses the empty prompt as the negative (negative_prompt_embeds in --prompt-embeds give another).");
        if (settings is InpaintSettings { ReferenceImages.Count: > 1 })
            throw new ArgumentException($"FLUX.2 [klein] inpainting takes one --reference-image (diffusers' Flux2KleinInpaintPipeline has one image_reference).");
        if (settings is InpaintSettings { Width: not null } or InpaintSettings { Height: not null })
            throw new ArgumentException($"--width / --height do not apply to FLUX.2 [klein] inpainting: diffusers' Flux2KleinInpaintPipeline repaints at the image's own size (floored to multiples of 16); resize the image instead.");
        if (settings is Img2ImgSettings { Strength: not null } and not InpaintSettings)
            throw new ArgumentException($"--strength does not apply to FLUX.2 [klein]: its img2img edits with the image as a reference at every step (diffusers' {pipelineClass} takes no strength).");
        if (settings is GenerateSettings { Width: { } w } && w % 16 != 0) throw new ArgumentException($"--width must be a positive multiple of 16 for FLUX.2 [klein], got {w}.");
        if (settings is GenerateSettings { Height: { } h } && h % 16 != 0) throw new ArgumentException($"--height must be a positive multiple of 16 for FLUX.2 [klein], got {h}.");
    }

    /// <summary>Whether --prompt-embeds alone feed a FLUX.2 [klein] run (the Qwen3 text encoder then not loaded): they hold
    /// negative_prompt_embeds, or the model is step-distilled or a KV-cache pipeline, or the guidance turns CFG off.</summary>
    private static bool Flux2PromptEmbedsSuffice(GenerateSettings settings, string folder)
    {
        if ((settings.GuidanceScale ?? Flux2KleinRequest.DefaultGuidanceScale) <= 1) return true;
        using (var weights = SafetensorsFile.Open(settings.PromptEmbeds!))
            if (weights.Tensors.ContainsKey("negative_prompt_embeds")) return true;
        var index = JsonNode.Parse(File.ReadAllText(Path.Combine(folder, "model_index.json")));
        if ((string?)index?["_class_name"] == Flux2KleinComponents.Flux2KleinKVPipelineClass) return true; // no CFG there
        return index?["is_distilled"] is JsonValue v && v.TryGetValue<bool>(out bool distilled) && distilled;
    }

    private static void CheckOptions(GenerateSettings settings, string pipelineClass, Family family)
    {
        if (settings.ReferenceImages.Count > 0 && family != Family.Flux2Klein)
            throw new ArgumentException($"--reference-image applies to FLUX.2 [klein] models (diffusers' Flux2KleinPipeline image list); {settings.Model} is a {pipelineClass}.");
        if (family is not (Family.ZImage or Family.Lumina2) && (settings.CfgNormalization ?? settings.CfgTruncation) is not null)
            throw new ArgumentException($"{(settings.CfgNormalization is not null ? "--cfg-normalization" : "--cfg-truncation")} applies to Z-Image and Lumina-Image 2.0 models (diffusers' ZImagePipeline, Lumina2Pipeline); {settings.Model} is a {pipelineClass}.");
        if (settings.FreeU is not null && (family != Family.UNet || IsLatentUpscaler(pipelineClass)))
            throw new ArgumentException($"--freeu applies to SD 1.x / 2.x and SDXL models (diffusers' UNet2DConditionModel.enable_freeu; the latent upscaler's K-diffusion blocks have no FreeU); {settings.Model} is a {pipelineClass}.");
        if (settings.PagScale is not null)
        {
            // diffusers' PAG pipelines here: StableDiffusion[XL]PAGPipeline, StableDiffusion[XL]PAGImg2ImgPipeline,
            // StableDiffusion[XL]PAGInpaintPipeline, StableDiffusion3PAGPipeline and StableDiffusion3PAGImg2ImgPipeline (the
            // SD3 ones without skip-layer guidance or IP-Adapter); diffusers has no SD3 PAG inpainting pipeline.
            string? pagRefusal = family is not (Family.UNet or Family.Sd3) || IsLatentUpscaler(pipelineClass) || IsLatentConsistency(pipelineClass)
                    || IsUpscaler(pipelineClass) || IsInstructPix2Pix(pipelineClass)
                    ? $"{settings.Model} is a {pipelineClass}"
                : settings is InpaintSettings && family == Family.Sd3 ? "diffusers has no SD3 PAG inpainting pipeline"
                : settings.ControlNets.Count > 0 ? "--controlnet has no PAG pipeline here"
                : settings.Adapters.Count > 0 ? "--adapter has no PAG pipeline here"
                : family == Family.Sd3 && settings.SkipLayers is not null ? "diffusers' StableDiffusion3PAGPipeline has no skip-layer guidance (--skip-layers)"
                : family == Family.Sd3 && settings.IpAdapter is not null ? "diffusers' StableDiffusion3PAGPipeline has no IP-Adapter (--ip-adapter)" : null;
            if (pagRefusal is not null)
                throw new ArgumentException($"--pag-scale applies to SD 1.x / 2.x and SDXL text-to-image, image-to-image and inpainting and to SD3 text-to-image and image-to-image (diffusers' StableDiffusion[XL]PAG[Img2Img|Inpaint]Pipeline, StableDiffusion3PAG[Img2Img]Pipeline): {pagRefusal}.");
        }
        if (family == Family.ZImage)
        {
            CheckZImage(settings, pipelineClass);
            return;
        }
        if (family == Family.QwenImage)
        {
            CheckQwenImage(settings, pipelineClass);
            return;
        }
        if (family == Family.Flux2Klein)
        {
            CheckFlux2Klein(settings, pipelineClass);
            return;
        }
        if (family == Family.Sana)
        {
            CheckSana(settings, pipelineClass);
            return;
        }
        if (family is Family.Lumina2 or Family.AuraFlow or Family.CogView4)
        {
            CheckTextOnlyFlow(settings, pipelineClass, family);
            return;
        }
        if (family == Family.PixArt) CheckPixArt(settings, pipelineClass);
        if (family == Family.Chroma)
        {
            CheckChroma(settings, pipelineClass);
            return;
        }
        CheckInstructPix2Pix(settings, pipelineClass);
        CheckLatentConsistency(settings, pipelineClass);
        CheckUpscaler(settings, pipelineClass);
        CheckLatentUpscaler(settings, pipelineClass);
        if (settings.ControlNets.Count == 0 && settings.ControlImage is { Length: > 0 } && pipelineClass != FluxComponents.ControlPipelineClass)
            throw new ArgumentException($"--control-image needs --controlnet (or a FLUX.1 control model such as FLUX.1-Canny-dev, whose model_index.json names {FluxComponents.ControlPipelineClass}); {settings.Model} is a {pipelineClass}.");
        if (settings is InpaintSettings { PaddingMaskCrop: not null } cropped)
        {
            // The mask is cropped with the image, so it must have its size; for Kontext the image's Kontext size, which
            // the pipeline checks (before any compute) once it has resized the image.
            if (pipelineClass != FluxComponents.KontextPipelineClass
                && (ImageFile.Load(cropped.Image!), ImageFile.Load(cropped.Mask!)) is var (image, mask) && (mask.Width != image.Width || mask.Height != image.Height))
                throw new ArgumentException($"--padding-mask-crop needs a mask of the image's size: the mask is {mask.Width}x{mask.Height}, the image {image.Width}x{image.Height}.");
            if (pipelineClass == FluxComponents.FillPipelineClass)
                throw new ArgumentException($"--padding-mask-crop does not apply to FLUX.1-Fill (diffusers' FluxFillPipeline has no padding_mask_crop); {settings.Model} is a {pipelineClass}.");
            if (settings.ControlNets.Count > 1)
                throw new ArgumentException("--padding-mask-crop takes one --controlnet at most (diffusers' ControlNet inpainting checks that control_image is a single image when cropping).");
            if (settings.ControlModeValues is not null)
                throw new ArgumentException("--padding-mask-crop does not apply to ControlNet-Union inpainting (diffusers' StableDiffusionXLControlNetUnionInpaintPipeline refuses padding_mask_crop whatever the input).");
            if (family != Family.UNet && settings.ControlNets.Count > 0)
                throw new ArgumentException($"--padding-mask-crop does not apply to {(family == Family.Sd3 ? "SD3" : "Flux")} inpainting with --controlnet (diffusers' {(family == Family.Sd3 ? "StableDiffusion3ControlNetInpaintingPipeline has no padding_mask_crop" : "FluxControlNetInpaintPipeline crops but never pastes the result back")}).");
        }
        if (family == Family.Flux && settings.IpAdapter is not null)
        {
            if (pipelineClass is FluxComponents.FillPipelineClass or FluxComponents.ControlPipelineClass)
                throw new ArgumentException($"--ip-adapter does not apply to {(pipelineClass == FluxComponents.FillPipelineClass ? "FLUX.1-Fill (diffusers' FluxFillPipeline" : "FLUX.1 control models (diffusers' FluxControlPipeline")} takes no IP-Adapter); {settings.Model} is a {pipelineClass}.");
            if (settings.ControlNets.Count > 0 && settings is Img2ImgSettings)
                throw new ArgumentException($"--ip-adapter with --controlnet applies to generate only (diffusers' FluxControlNetPipeline takes an IP-Adapter; its Flux ControlNet {(settings is InpaintSettings ? "inpainting" : "image-to-image")} pipeline does not).");
        }
        if (family == Family.Flux && settings.ControlNets.Count > 0)
        {
            CheckFluxControlNet(settings.Model!, pipelineClass);
            if (settings.GuessMode)
                throw new ArgumentException($"--guess-mode does not apply to Flux ControlNets (diffusers' Flux ControlNet pipelines have no guess mode); {settings.Model} is a {pipelineClass}.");
            if (settings is Img2ImgSettings && (settings.NegativePrompt is not null || settings.TrueCfg is not null))
                throw new ArgumentException($"--negative-prompt and --true-cfg do not apply to Flux {(settings is InpaintSettings ? "inpaint" : "img2img")} with --controlnet (diffusers' {(settings is InpaintSettings ? "FluxControlNetInpaintPipeline" : "FluxControlNetImg2ImgPipeline")} has no true CFG).");
        }
        if (family != Family.UNet && settings.Adapters.Count > 0)
            throw new ArgumentException($"--adapter applies to SD 1.x / 2.x and SDXL models (diffusers' T2I-Adapter pipelines); {settings.Model} is a {pipelineClass}.");
        if (family == Family.UNet && settings.Adapters.Count > 0 && !pipelineClass.Contains("XL", StringComparison.Ordinal))
        {
            // What diffusers' StableDiffusionAdapterPipeline lacks (its SDXL twin has them).
            string? notSd = settings.AdapterFactor is not null ? "--adapter-factor" : settings.IpAdapter is not null ? "--ip-adapter"
                : settings.GuidanceRescale is not null ? "--guidance-rescale" : null;
            if (notSd is not null)
                throw new ArgumentException($"{notSd} does not apply with --adapter to SD 1.x / 2.x models (diffusers' StableDiffusionAdapterPipeline has no such parameter; its SDXL adapter pipeline does); {settings.Model} is a {pipelineClass}.");
        }
        if (family != Family.UNet && settings.ControlModeValues is not null)
            throw new ArgumentException($"--control-mode applies to SDXL ControlNet-Union models; {settings.Model} is a {pipelineClass}.");
        if (family == Family.Sd3 && settings.ControlNets.Count > 0)
        {
            if (settings is InpaintSettings inpaint)
            {
                // diffusers' StableDiffusion3ControlNetInpaintingPipeline: one inpainting ControlNet, no init image nor strength
                // (it starts from noise; the image to inpaint is its control_image).
                if (settings.ControlNets.Count > 1)
                    throw new ArgumentException($"inpaint with SD3 takes one --controlnet (diffusers' StableDiffusion3ControlNetInpaintingPipeline runs one inpainting ControlNet), got {settings.ControlNets.Count}.");
                if (inpaint.Strength is not null)
                    throw new ArgumentException("--strength does not apply to SD3 ControlNet inpainting (diffusers' StableDiffusion3ControlNetInpaintingPipeline starts from noise and has no strength).");
                if (!string.Equals(Path.GetFullPath(inpaint.Image!), Path.GetFullPath(settings.ControlImage![0]), StringComparison.Ordinal))
                    throw new ArgumentException("inpaint with an SD3 ControlNet: --control-image is the image to inpaint (diffusers' control_image; the pipeline has no other image), so give the same file as --image.");
            }
            else if (settings is Img2ImgSettings)
                throw new ArgumentException($"--controlnet with img2img applies to SD 1.x / 2.x and SDXL models (diffusers has no SD3 ControlNet image-to-image pipeline); {settings.Model} is a {pipelineClass}.");
            if (settings.GuessMode)
                throw new ArgumentException($"--guess-mode does not apply to SD3 ControlNets (diffusers' SD3 ControlNet pipeline has no guess mode); {settings.Model} is a {pipelineClass}.");
            if (settings.SkipLayers is not null)
                throw new ArgumentException($"--skip-layers does not apply with --controlnet (diffusers' SD3 ControlNet pipeline has no skip-layer guidance).");
        }
        if (family != Family.Flux && settings.TrueCfg is not null)
            throw new ArgumentException($"--true-cfg applies to Flux models; {settings.Model} is a {pipelineClass}.");
        if (family != Family.Flux && settings.Redux is not null)
            throw new ArgumentException($"--redux applies to FLUX.1 models (FLUX.1-Redux makes Flux prompt embeddings); {settings.Model} is a {pipelineClass}.");
        if (family == Family.PixArt)
        {
            // With resolution binning (diffusers' default) any size runs (the image is resized back); without, the latents
            // must split into the transformer's 2 x 2 patches.
            if (settings.NoResolutionBinning && settings.Width is { } pw && pw % 16 != 0) throw new ArgumentException($"--width must be a multiple of 16 for PixArt with --no-resolution-binning, got {pw}.");
            if (settings.NoResolutionBinning && settings.Height is { } ph && ph % 16 != 0) throw new ArgumentException($"--height must be a multiple of 16 for PixArt with --no-resolution-binning, got {ph}.");
            if (settings.Scheduler is { } pixArtScheduler) SwappableSchedulerComponents.CheckSchedulerName(pixArtScheduler);
            return;
        }
        if (settings.NoResolutionBinning)
            throw new ArgumentException($"--no-resolution-binning applies to PixArt and Sana models; {settings.Model} is a {pipelineClass}.");
        if (family == Family.Flux)
        {
            string? notFlux = settings.NoT5 ? "--no-t5" : settings.Prompt3 is not null ? "--prompt-3" : settings.SkipLayers is not null ? "--skip-layers"
                : settings.ClipSkip is not null ? "--clip-skip" : settings.Scheduler is not null ? "--scheduler" : settings.Eta is not null ? "--eta"
                : settings.GuidanceRescale is not null ? "--guidance-rescale" : null;
            if (notFlux is not null)
                throw new ArgumentException($"{notFlux} does not apply to Flux models; {settings.Model} is a {pipelineClass}.");
            if (settings.Width is { } fw && fw % 16 != 0) throw new ArgumentException($"--width must be a positive multiple of 16 for Flux, got {fw}.");
            if (settings.Height is { } fh && fh % 16 != 0) throw new ArgumentException($"--height must be a positive multiple of 16 for Flux, got {fh}.");
            CheckFluxVariant(settings, pipelineClass);
            return;
        }
        if (family == Family.UNet)
        {
            string? sd3Only = settings.NoT5 ? "--no-t5" : settings.Prompt3 is not null ? "--prompt-3" : settings.SkipLayers is not null ? "--skip-layers"
                : settings.MaxSequenceLength is not null ? "--max-sequence-length" : null;
            if (sd3Only is not null)
                throw new ArgumentException($"{sd3Only} applies to Stable Diffusion 3 models; {settings.Model} is a {pipelineClass}.");
            if (settings.Scheduler is { } scheduler) SwappableSchedulerComponents.CheckSchedulerName(scheduler);
            if (settings.Prompt2 is not null && !pipelineClass.Contains("XL", StringComparison.Ordinal))
                throw new ArgumentException($"--prompt-2 applies to models with two text encoders (SD3, SDXL); {settings.Model} is a {pipelineClass}.");
            return;
        }
        string? unetOnly = settings.Scheduler is not null ? "--scheduler" : settings.Eta is not null ? "--eta"
            : settings.GuidanceRescale is not null ? "--guidance-rescale" : null;
        if (unetOnly is not null)
            throw new ArgumentException($"{unetOnly} applies to SD 1.x / 2.x and SDXL models, not to Stable Diffusion 3 (one scheduler: FlowMatchEulerDiscrete).");
        if (settings.Width is { } w && w % 16 != 0) throw new ArgumentException($"--width must be a positive multiple of 16 for Stable Diffusion 3, got {w}.");
        if (settings.Height is { } h && h % 16 != 0) throw new ArgumentException($"--height must be a positive multiple of 16 for Stable Diffusion 3, got {h}.");
    }

    /// <summary>Puts back a UNet or PixArt model's own scheduler config as loaded (an earlier call may have swapped it, or a
    /// pipeline fixed it up); the next call's pipeline and --scheduler start from it.</summary>
    public void RestoreScheduler() => Swappable?.UseScheduler(_modelScheduler!);

    /// <summary>
    /// The --ip-adapter image encoder's local folder: a local folder as it is, a hub subfolder (hf://org/name/sub/folder,
    /// the default beside a hub file) or a repo id (org/name, e.g. openai/clip-vit-large-patch14) downloaded into the hub
    /// cache (config.json and safetensors weights).
    /// </summary>
    private static string ResolveImageEncoder(PipelineLoadOptions options, ModelSettings settings, CancellationToken ct)
    {
        string encoder = settings.IpAdapterImageEncoderFolder!;
        if (Hub.HubFileReference.TryParse(encoder, out _))
        {
            try
            {
                return options.ResolveSubfolder(encoder, ct);
            }
            catch (Hub.HubException e) when (settings.IpAdapterImageEncoder is null && e.Kind == Hub.HubErrorKind.EntryNotFound)
            {
                throw new ArgumentException($"--ip-adapter: the repo of {settings.IpAdapter} has no image encoder at {encoder} ({e.Message}); name one with --ip-adapter-image-encoder (for XLabs' Flux IP-Adapter: openai/clip-vit-large-patch14; for InstantX's SD3 one: google/siglip-so400m-patch14-384).", e);
            }
        }
        return options.ResolveSubfolder(encoder, ct);
    }

    /// <summary>serve's --ip-adapter, refused before loading for the models whose diffusers pipelines take none (its requests
    /// are checked as generate's options are).</summary>
    private static void CheckServedIpAdapter(ModelSettings settings, string pipelineClass)
    {
        string? none = pipelineClass switch
        {
            FluxComponents.FillPipelineClass => "FLUX.1-Fill (diffusers' FluxFillPipeline",
            FluxComponents.ControlPipelineClass => "FLUX.1 control models (diffusers' FluxControlPipeline",
            StableDiffusionInstructPix2PixPipeline.PipelineClass => "InstructPix2Pix (diffusers' StableDiffusionInstructPix2PixPipeline",
            StableDiffusionXLInstructPix2PixPipeline.PipelineClass => "SDXL InstructPix2Pix (diffusers' StableDiffusionXLInstructPix2PixPipeline",
            StableDiffusionUpscalePipeline.PipelineClass => "x4 upscalers (diffusers' StableDiffusionUpscalePipeline",
            StableDiffusionLatentUpscalePipeline.PipelineClass => "latent upscalers (diffusers' StableDiffusionLatentUpscalePipeline",
            _ => null,
        };
        if (none is not null)
            throw new ArgumentException($"--ip-adapter does not apply to {none} takes no IP-Adapter); {settings.Model} is a {pipelineClass}.");
    }

    /// <summary>Loads the --ip-adapter file and its image encoder, if any, into freshly loaded components (freed again if that fails).</summary>
    private static T WithIpAdapter<T>(CliOutput output, (string? File, string? ImageEncoder) ipAdapter, T components, Action<T, string, string> load)
        where T : PipelineComponents
    {
        if (ipAdapter.File is null) return components;
        try
        {
            load(components, ipAdapter.File, ipAdapter.ImageEncoder!);
            output.Error.WriteLine($"loaded IP-Adapter {ipAdapter.File} (image encoder {ipAdapter.ImageEncoder})");
            return components;
        }
        catch
        {
            components.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Refuses --textual-inversion before any weights load where diffusers has no textual inversion (SD3's pipelines do not
    /// inherit TextualInversionLoaderMixin) and SDXL files (clip_l / clip_g) without a token or for a model without two
    /// CLIP encoders.
    /// </summary>
    /// <summary>The --textual-inversion files, hub files fetched (after the family check), checked against the model.</summary>
    private static IReadOnlyList<(string File, string? Token)> TextualInversionFiles(ModelSettings settings, string pipelineClass, Family family,
        PipelineLoadOptions options, CancellationToken ct)
    {
        var entries = settings.TextualInversions;
        if (entries.Count == 0) return entries;
        if (family == Family.Sd3)
            throw new ArgumentException($"--textual-inversion applies to SD 1.x / 2.x, SDXL and Flux models (diffusers' SD3 pipelines have no textual inversion loader); {settings.Model} is a {pipelineClass}.");
        entries = entries.Select(e => (options.ResolveFile(e.File, ct), e.Token)).ToList();
        foreach (var (file, _) in entries)
            if (!File.Exists(file)) throw new ArgumentException($"--textual-inversion file not found: {file}.");
        foreach (var (file, token) in entries)
        {
            if (!Loaders.TextualInversion.IsSdxlFile(file)) continue;
            if (!pipelineClass.Contains("XL", StringComparison.Ordinal))
                throw new ArgumentException($"--textual-inversion {file} is an SDXL embedding (clip_l / clip_g) and {settings.Model} is a {pipelineClass}; its clip_l half can be loaded with the library (LoadTextualInversion with key \"clip_l\").");
            if (token is null)
                throw new ArgumentException($"--textual-inversion {file} is an SDXL embedding (clip_l / clip_g), which names no token: give FILE:TOKEN and write TOKEN in the prompt.");
        }
        return entries;
    }

    /// <summary>Loads the --textual-inversion files into SD 1.x / 2.x or SDXL components: an SDXL file's halves into both
    /// encoders (the refiner: the clip_g half only), any other file into the first, diffusers' default.</summary>
    private static string LoadTextualInversion(StableDiffusionComponents components, string file, string? token)
    {
        var into = new List<string>();
        IReadOnlyList<string> tokens = [];
        bool sdxl = Loaders.TextualInversion.IsSdxlFile(file);
        if (!sdxl || components.TextEncoder is not null)
        {
            tokens = components.LoadTextualInversion(file, token);
            into.Add("text_encoder");
        }
        if (sdxl && components.TextEncoder2 is not null)
        {
            tokens = components.LoadTextualInversion(file, token, Loaders.TextualInversionTarget.TextEncoder2);
            into.Add("text_encoder_2");
        }
        return $"{string.Join(", ", tokens)} into {string.Join(" and ", into)}";
    }

    private static string LoadTextualInversion(FluxComponents components, string file, string? token) =>
        $"{string.Join(", ", components.LoadTextualInversion(file, token))} into text_encoder";

    /// <summary>Loads the --textual-inversion files, if any, into freshly loaded components (freed again if that fails).</summary>
    private static T WithTextualInversion<T>(CliOutput output, IReadOnlyList<(string File, string? Token)> files, T components, Func<T, string, string?, string> load) where T : PipelineComponents
    {
        try
        {
            foreach (var (file, token) in files)
                output.Error.WriteLine($"loaded textual inversion {load(components, file, token)} from {file}");
            return components;
        }
        catch
        {
            components.Dispose();
            throw;
        }
    }

    /// <summary>Fuses the --lora files, if any, one after another into freshly loaded components (freed again if that fails).</summary>
    private static T WithLoras<T>(CliOutput output, IReadOnlyList<(string File, double Scale)> loras, T components, Func<T, Func<string, double, int>> fuse) where T : PipelineComponents
    {
        try
        {
            foreach (var (file, scale) in loras)
            {
                int layers = fuse(components)(file, scale);
                output.Error.WriteLine($"fused {layers} LoRA layers from {Path.GetFileName(file)} at scale {scale.ToString("R", CultureInfo.InvariantCulture)}");
            }
            return components;
        }
        catch
        {
            components.Dispose();
            throw;
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        ReduxPrior?.Dispose();
        Sd3?.Dispose();
        UNet?.Dispose();
        Flux?.Dispose();
        PixArt?.Dispose();
        Chroma?.Dispose();
        ZImage?.Dispose();
        QwenImage?.Dispose();
        Flux2Klein?.Dispose();
        Sana?.Dispose();
        Lumina2?.Dispose();
        AuraFlow?.Dispose();
        CogView4?.Dispose();
    }
}
