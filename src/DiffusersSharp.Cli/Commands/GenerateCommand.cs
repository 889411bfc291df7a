using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Pipelines.StableDiffusionXL;
using Spectre.Console.Cli;

namespace DiffusersSharp.Cli.Commands;

/// <summary><c>diffusers generate</c>: text-to-image.</summary>
public sealed class GenerateCommand(CliOutput output) : Command<GenerateSettings>
{
    /// <inheritdoc />
    public override int Execute(CommandContext context, GenerateSettings settings, CancellationToken cancellationToken) =>
        GenerationRunner.Run(output, settings, VerbPipelines.For(settings), cancellationToken);
}

/// <summary><c>diffusers img2img</c>: image-to-image.</summary>
public sealed class Img2ImgCommand(CliOutput output) : Command<Img2ImgSettings>
{
    /// <inheritdoc />
    public override int Execute(CommandContext context, Img2ImgSettings settings, CancellationToken cancellationToken) =>
        GenerationRunner.Run(output, settings, VerbPipelines.For(settings), cancellationToken);
}

/// <summary><c>diffusers inpaint</c>: repaint the white part of a mask.</summary>
public sealed class InpaintCommand(CliOutput output) : Command<InpaintSettings>
{
    /// <inheritdoc />
    public override int Execute(CommandContext context, InpaintSettings settings, CancellationToken cancellationToken) =>
        GenerationRunner.Run(output, settings, VerbPipelines.For(settings), cancellationToken);
}

/// <summary>Where step previews go: every <paramref name="Every"/> steps, the images decoded so far (step count, images).</summary>
internal sealed record PreviewSink(int Every, Action<int, IReadOnlyList<ImageBuffer>> Write);

/// <summary>What a run reports along the way: truncated prompts, progress, step previews.</summary>
/// <param name="UNetScheduler">--scheduler of a UNet model, swapped in once the pipeline is built: as
/// <c>Pipeline.from_pretrained</c> then <c>pipe.scheduler = X.from_config(pipe.scheduler.config)</c>, the pipeline's
/// outdated-config fix-ups act on the model's own scheduler config, which the swap then starts from.</param>
internal sealed record RunHooks(Action<string, int, int> OnTruncated, IProgress<PipelineProgress>? Progress, PreviewSink? Preview,
    string? UNetScheduler = null);

/// <summary>A verb's pipelines in each model family, and its request before the shared options are filled in.</summary>
internal abstract class VerbPipelines
{
    /// <summary>
    /// The pipelines of the verb whose options <paramref name="settings"/> are, with its input images read (before any
    /// model is loaded: an unreadable image is invalid input).
    /// </summary>
    public static VerbPipelines For(GenerateSettings settings)
    {
        VerbPipelines pipelines = settings switch
        {
            InpaintSettings s => Inpaint.Read(s),
            Img2ImgSettings s => new ImageToImage(ImageFile.LoadRgb(s.Image!), s.StrengthValue, ControlOptions.From(s), s.ImageGuidanceValue, s.NoiseLevel,
                PagOptions.From(s)),
            { ControlNets.Count: > 0 } s => new ControlNetTextToImage(ControlOptions.From(s)!),
            { Adapters.Count: > 0 } s => new AdapterTextToImage(AdapterOptions.From(s)),
            { PagScale: not null } s => new TextToImage(PagOptions.From(s)),
            _ => new TextToImage(),
        };
        // Without --controlnet, the control image is a FLUX.1 control model's (the model check refuses it for others).
        if (settings is { ControlNets.Count: 0, ControlImage: [var file] }) pipelines.FluxControlImage = ImageFile.LoadRgb(file);
        // (a FLUX.1 control model without it is refused by the model check, before its request is built)
        return pipelines;
    }

    /// <summary>The control image of a FLUX.1 control model (FLUX.1-Canny-dev, Depth-dev; --control-image without
    /// --controlnet), or null.</summary>
    public ImageBuffer? FluxControlImage { get; private set; }

    /// <summary>The verb's name in the parameters text (txt2img, img2img, inpaint).</summary>
    public abstract string Verb { get; }

    /// <summary>The SD3 pipeline's default step count (diffusers': 28 text-to-image, 50 otherwise).</summary>
    public abstract int Sd3DefaultSteps { get; }

    /// <summary>The UNet pipelines' default step count (50).</summary>
    public int UNetDefaultSteps => 50;

    /// <summary>The verb's SD3 request.</summary>
    public abstract StableDiffusion3Request Sd3Request();

    /// <summary>The verb's UNet request for a model whose model_index.json names <paramref name="pipelineClass"/>.</summary>
    public abstract StableDiffusionRequest UNetRequest(string pipelineClass);

    /// <summary>Runs the verb's SD3 pipeline.</summary>
    public abstract StableDiffusion3Output RunSd3(StableDiffusion3Components components, StableDiffusion3Request request, RunHooks hooks, CancellationToken ct);

    /// <summary>
    /// The verb's Flux request for a model of <paramref name="pipelineClass"/> (its defaults: guidance 3.5 text-to-image and
    /// Kontext, 7.0 img2img / inpaint, 30 Fill). Kontext models run <c>generate</c> without an image and <c>img2img</c> as
    /// diffusers' image editing and <c>inpaint</c> as FluxKontextInpaintPipeline; Fill models run <c>inpaint</c> (the other
    /// verbs were refused before loading).
    /// </summary>
    public abstract FluxRequest FluxRequest(string pipelineClass);

    /// <summary>Runs the verb's Flux pipeline (the one the request's type names).</summary>
    public abstract FluxOutput RunFlux(FluxComponents components, FluxRequest request, RunHooks hooks, CancellationToken ct);

    /// <summary>Runs the verb's SD 1.x / 2.x or SDXL pipeline; also returns the guidance and strength it used.</summary>
    public abstract (StableDiffusionPipelineOutput Output, double Guidance, double? Strength) RunUNet(StableDiffusionComponents components,
        StableDiffusionRequest request, RunHooks hooks, CancellationToken ct);

    /// <summary>Runs a UNet pipeline with the hooks and disposes it.</summary>
    protected static (StableDiffusionPipelineOutput, double, double?) Use<TPipe, TRequest>(TPipe pipeline, TRequest request, RunHooks hooks,
        CancellationToken ct, Func<TPipe, TRequest, IProgress<PipelineProgress>?, CancellationToken, StableDiffusionPipelineOutput> run)
        where TPipe : StableDiffusionPipelineBase where TRequest : StableDiffusionRequest
    {
        using (pipeline)
        {
            pipeline.OnPromptTruncated = hooks.OnTruncated;
            if (hooks.UNetScheduler is { } scheduler) pipeline.Components.UseScheduler(scheduler);
            if (hooks.Preview is { } preview) request = request with { CallbackOnStepEnd = Previews(preview, pipeline.PreviewImages) };
            var output = run(pipeline, request, hooks.Progress, ct);
            return (output, pipeline.GuidanceOf(request), request is StableDiffusionImg2ImgRequest i ? pipeline.StrengthOf(i) : null);
        }
    }

    /// <summary>Runs an SD3 pipeline with the hooks and disposes it.</summary>
    protected static StableDiffusion3Output Use<TPipe, TRequest>(TPipe pipeline, TRequest request, RunHooks hooks, CancellationToken ct,
        Func<TPipe, TRequest, IProgress<PipelineProgress>?, CancellationToken, StableDiffusion3Output> run)
        where TPipe : StableDiffusion3PipelineBase where TRequest : StableDiffusion3Request
    {
        using (pipeline)
        {
            pipeline.OnPromptTruncated = hooks.OnTruncated;
            if (hooks.Preview is { } preview) request = request with { CallbackOnStepEnd = Previews(preview, pipeline.PreviewImages) };
            return run(pipeline, request, hooks.Progress, ct);
        }
    }

    /// <summary>Runs a Flux pipeline with the hooks (previews decode at the request's size) and disposes it.</summary>
    protected static FluxOutput Use<TPipe, TRequest>(TPipe pipeline, TRequest request, RunHooks hooks, CancellationToken ct,
        Func<TPipe, TRequest, IProgress<PipelineProgress>?, CancellationToken, FluxOutput> run)
        where TPipe : FluxPipelineBase where TRequest : FluxRequest
    {
        using (pipeline)
        {
            pipeline.OnPromptTruncated = hooks.OnTruncated;
            if (hooks.Preview is { } preview)
            {
                var (height, width) = pipeline.OutputSizeOf(request);
                request = request with { CallbackOnStepEnd = Previews(preview, latents => pipeline.PreviewImages(latents, height, width)) };
            }
            return run(pipeline, request, hooks.Progress, ct);
        }
    }

    /// <summary>A step callback that decodes the latents every <see cref="PreviewSink.Every"/> steps (not after the last: the result follows).</summary>
    internal static Action<StepEndContext> Previews(PreviewSink sink, Func<TorchSharp.torch.Tensor, IReadOnlyList<ImageBuffer>> decode) => context =>
    {
        int done = context.Step + 1;
        if (done % sink.Every == 0 && done < context.TotalSteps) sink.Write(done, decode(context.Latents));
    };
}

/// <summary>Perturbed-attention guidance's options of <c>generate</c>, <c>img2img</c> and <c>inpaint</c> (--pag-scale,
/// --pag-adaptive-scale, --pag-layers; null layers: the PAG pipeline's default).</summary>
internal sealed record PagOptions(double Scale, double AdaptiveScale, IReadOnlyList<string>? Layers)
{
    /// <summary>The options of <paramref name="s"/>; null without --pag-scale.</summary>
    public static PagOptions? From(GenerateSettings s) => s.PagScaleValue is { } scale ? new(scale, s.PagAdaptiveScaleValue, s.PagLayerList) : null;

    /// <summary>The UNet PAG request (SD 1.x / 2.x and SDXL).</summary>
    public StableDiffusionPAGRequest UNetRequest()
    {
        var request = new StableDiffusionPAGRequest { PagScale = Scale, PagAdaptiveScale = AdaptiveScale };
        return Layers is null ? request : request with { PagAppliedLayers = Layers };
    }

    /// <summary>The UNet PAG image-to-image request for <paramref name="image"/>.</summary>
    public StableDiffusionPAGImg2ImgRequest UNetImg2ImgRequest(ImageBuffer image, double? strength)
    {
        var request = new StableDiffusionPAGImg2ImgRequest { Image = image, Strength = strength, PagScale = Scale, PagAdaptiveScale = AdaptiveScale };
        return Layers is null ? request : request with { PagAppliedLayers = Layers };
    }

    /// <summary>The UNet PAG inpainting request.</summary>
    public StableDiffusionPAGInpaintRequest UNetInpaintRequest(ImageBuffer image, ImageBuffer mask, double? strength, int? paddingMaskCrop)
    {
        var request = new StableDiffusionPAGInpaintRequest
        {
            Image = image, MaskImage = mask, Strength = strength, PaddingMaskCrop = paddingMaskCrop, PagScale = Scale, PagAdaptiveScale = AdaptiveScale,
        };
        return Layers is null ? request : request with { PagAppliedLayers = Layers };
    }

    /// <summary>The SD3 PAG image-to-image request for <paramref name="image"/>.</summary>
    public StableDiffusion3PAGImg2ImgRequest Sd3Img2ImgRequest(ImageBuffer image)
    {
        var request = new StableDiffusion3PAGImg2ImgRequest { Image = image, PagScale = Scale, PagAdaptiveScale = AdaptiveScale };
        return Layers is null ? request : request with { PagAppliedLayers = Layers };
    }

    /// <summary>The SD3 PAG request.</summary>
    public StableDiffusion3PAGRequest Sd3Request()
    {
        var request = new StableDiffusion3PAGRequest { PagScale = Scale, PagAdaptiveScale = AdaptiveScale };
        return Layers is null ? request : request with { PagAppliedLayers = Layers };
    }
}

/// <summary><c>generate</c>'s pipelines; with <paramref name="pag"/> the UNet and SD3 ones are the PAG pipelines.</summary>
internal sealed class TextToImage(PagOptions? pag = null) : VerbPipelines
{
    public override string Verb => "txt2img";

    public override int Sd3DefaultSteps => 28;

    public override StableDiffusion3Request Sd3Request() => pag?.Sd3Request() ?? new StableDiffusion3Request();

    public override StableDiffusionRequest UNetRequest(string pipelineClass) =>
        LoadedModel.IsLatentConsistency(pipelineClass) ? new LatentConsistencyModelRequest()
        : pag?.UNetRequest() ?? new StableDiffusionRequest();

    public override FluxRequest FluxRequest(string pipelineClass) => pipelineClass switch
    {
        FluxComponents.KontextPipelineClass => new FluxKontextRequest(),
        FluxComponents.ControlPipelineClass => new FluxControlRequest { ControlImage = FluxControlImage! },
        _ => new FluxRequest(),
    };

    public override FluxOutput RunFlux(FluxComponents components, FluxRequest request, RunHooks hooks, CancellationToken ct) =>
        request is FluxControlRequest structural ? Use(new FluxControlPipeline(components), structural, hooks, ct, (p, r, progress, c) => p.Generate(r, progress, c))
        : request is FluxKontextRequest kontext
        ? Use(new FluxKontextPipeline(components), kontext, hooks, ct, (p, r, progress, c) => p.Generate(r, progress, c))
        : Use(new FluxPipeline(components), request, hooks, ct, (p, r, progress, c) => p.Generate(r, progress, c));

    public override StableDiffusion3Output RunSd3(StableDiffusion3Components components, StableDiffusion3Request request, RunHooks hooks, CancellationToken ct) =>
        request is StableDiffusion3PAGRequest pagRequest
        ? Use(new StableDiffusion3PAGPipeline(components), pagRequest, hooks, ct, (p, r, progress, c) => p.Generate(r, progress, c))
        : Use(new StableDiffusion3Pipeline(components), request, hooks, ct, (p, r, progress, c) => p.Generate(r, progress, c));

    public override (StableDiffusionPipelineOutput, double, double?) RunUNet(StableDiffusionComponents components, StableDiffusionRequest request,
        RunHooks hooks, CancellationToken ct) => request is LatentConsistencyModelRequest lcm
        ? Use(new LatentConsistencyModelPipeline(components), lcm, hooks, ct, (p, r, progress, c) => p.Generate(r, progress, c))
        : request is StableDiffusionPAGRequest pagRequest
        ? components.IsXL
            ? Use(new StableDiffusionXLPAGPipeline(components), pagRequest, hooks, ct, (p, r, progress, c) => p.Generate(r, progress, c))
            : Use(new StableDiffusionPAGPipeline(components), pagRequest, hooks, ct, (p, r, progress, c) => p.Generate(r, progress, c))
        : components.IsXL
        ? Use(new StableDiffusionXLPipeline(components), request, hooks, ct, (p, r, progress, c) => p.Generate(r, progress, c))
        : Use(new StableDiffusionPipeline(components), request, hooks, ct, (p, r, progress, c) => p.Generate(r, progress, c));
}

/// <summary><c>generate --controlnet</c>'s pipelines (SD 1.x / 2.x, SDXL, SD3 and Flux; FLUX.1-Fill / Kontext are refused before loading).</summary>
internal sealed class ControlNetTextToImage(ControlOptions control) : VerbPipelines
{
    public override string Verb => "txt2img";

    public override int Sd3DefaultSteps => 28;

    public override StableDiffusion3Request Sd3Request() => control.Apply(new StableDiffusion3ControlNetRequest());

    public override StableDiffusionRequest UNetRequest(string pipelineClass) => control.Modes is null
        ? control.Apply(new StableDiffusionControlNetRequest())
        : control.Apply(new StableDiffusionControlNetUnionRequest());

    public override FluxRequest FluxRequest(string pipelineClass) => control.Apply(new FluxControlNetRequest());

    public override FluxOutput RunFlux(FluxComponents components, FluxRequest request, RunHooks hooks, CancellationToken ct) =>
        Use(new FluxControlNetPipeline(components), (FluxControlNetRequest)request, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c));

    public override StableDiffusion3Output RunSd3(StableDiffusion3Components components, StableDiffusion3Request request, RunHooks hooks, CancellationToken ct) =>
        Use(new StableDiffusion3ControlNetPipeline(components), (StableDiffusion3ControlNetRequest)request, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c));

    public override (StableDiffusionPipelineOutput, double, double?) RunUNet(StableDiffusionComponents components, StableDiffusionRequest request,
        RunHooks hooks, CancellationToken ct)
    {
        if (request is StableDiffusionControlNetUnionRequest union)
            return Use(new StableDiffusionXLControlNetUnionPipeline(components), union, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c));
        var r = (StableDiffusionControlNetRequest)request;
        return components.IsXL
            ? Use(new StableDiffusionXLControlNetPipeline(components), r, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c))
            : Use(new StableDiffusionControlNetPipeline(components), r, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c));
    }
}

/// <summary><c>generate --adapter</c>'s pipelines (SD 1.x / 2.x and SDXL; SD3 and Flux are refused before loading).</summary>
internal sealed class AdapterTextToImage(AdapterOptions adapter) : VerbPipelines
{
    private const string OnlyUNet = "--adapter applies to SD 1.x / 2.x and SDXL models.";

    public override string Verb => "txt2img";

    public override int Sd3DefaultSteps => 28;

    public override StableDiffusion3Request Sd3Request() => throw new ArgumentException(OnlyUNet);

    public override StableDiffusion3Output RunSd3(StableDiffusion3Components components, StableDiffusion3Request request, RunHooks hooks, CancellationToken ct) =>
        throw new ArgumentException(OnlyUNet);

    public override FluxRequest FluxRequest(string pipelineClass) => throw new ArgumentException(OnlyUNet);

    public override FluxOutput RunFlux(FluxComponents components, FluxRequest request, RunHooks hooks, CancellationToken ct) => throw new ArgumentException(OnlyUNet);

    public override StableDiffusionRequest UNetRequest(string pipelineClass) => adapter.Apply(new StableDiffusionAdapterRequest());

    public override (StableDiffusionPipelineOutput, double, double?) RunUNet(StableDiffusionComponents components, StableDiffusionRequest request,
        RunHooks hooks, CancellationToken ct)
    {
        var r = adapter.WithImagesFor(components, (StableDiffusionAdapterRequest)request);
        return components.IsXL
            ? Use(new StableDiffusionXLAdapterPipeline(components), r, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c))
            : Use(new StableDiffusionAdapterPipeline(components), r, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c));
    }
}

/// <summary>
/// The T2I-Adapter options of <c>generate</c>, paired with the adapters in order: a scale given once is the scalar for
/// all, scales given per adapter are its list; the images are read as stored and converted for each adapter once it is
/// loaded (RGB, as diffusers' <c>load_image</c>, or grayscale for an adapter with in_channels 1).
/// </summary>
internal sealed record AdapterOptions(ImageBuffer[] Images, double[]? Scales, double? Factor)
{
    /// <summary>The options of <paramref name="s"/>, with the adapter images read.</summary>
    public static AdapterOptions From(GenerateSettings s) =>
        new(s.AdapterImage!.Select(f => ImageFile.Load(f)).ToArray(), s.AdapterScaleValues, s.AdapterFactorValue);

    public StableDiffusionAdapterRequest Apply(StableDiffusionAdapterRequest r) => r with
    {
        AdapterConditioningScale = Scales is [var one] ? one : r.AdapterConditioningScale,
        AdapterConditioningScales = Scales is { Length: > 1 } ? Scales : null,
        AdapterConditioningFactor = Factor ?? r.AdapterConditioningFactor,
    };

    /// <summary>The request with each image in the channels of its adapter.</summary>
    public StableDiffusionAdapterRequest WithImagesFor(StableDiffusionComponents components, StableDiffusionAdapterRequest r)
    {
        var images = Images.Select((image, k) => (PipelineImage)(k < components.Adapters.Count && components.Adapters[k].Config.InChannels == 1
            ? image.ToGrayscale() : image.ToRgb())).ToArray();
        return r with { Image = images.Length == 1 ? images[0] : null, Images = images.Length > 1 ? images : null };
    }
}

/// <summary><c>img2img</c>'s pipelines; with <paramref name="pag"/> the plain UNet and SD3 ones are the PAG pipelines (the
/// other modes were refused with it before loading).</summary>
internal sealed class ImageToImage(ImageBuffer image, double? strength, ControlOptions? control, double? imageGuidance = null, int? noiseLevel = null,
    PagOptions? pag = null) : VerbPipelines
{
    public override string Verb => "img2img";

    public override int Sd3DefaultSteps => 50;

    public override StableDiffusion3Request Sd3Request()
    {
        var request = pag?.Sd3Img2ImgRequest(image) ?? new StableDiffusion3Img2ImgRequest { Image = image };
        return strength is { } s ? request with { Strength = s } : request;
    }

    public override StableDiffusionRequest UNetRequest(string pipelineClass) =>
        LoadedModel.IsInstructPix2Pix(pipelineClass) // --strength, --controlnet were refused
        ? new StableDiffusionInstructPix2PixRequest { Image = image, ImageGuidanceScale = imageGuidance ?? 1.5 }
        : LoadedModel.IsUpscaler(pipelineClass) // --strength, --width / --height, --controlnet were refused
        ? new StableDiffusionUpscaleRequest { Image = image, NoiseLevel = noiseLevel ?? 20 }
        : LoadedModel.IsLatentUpscaler(pipelineClass) // --strength, --width / --height, --controlnet were refused
        ? new StableDiffusionLatentUpscaleRequest { Image = image }
        : LoadedModel.IsLatentConsistency(pipelineClass) // --controlnet was refused
        ? new LatentConsistencyModelImg2ImgRequest { Image = image, Strength = strength }
        : control is null
        ? (StableDiffusionImg2ImgRequest?)pag?.UNetImg2ImgRequest(image, strength) ?? new StableDiffusionImg2ImgRequest { Image = image, Strength = strength }
        : control.Modes is not null ? control.Apply(new StableDiffusionControlNetUnionImg2ImgRequest { Image = image, Strength = strength })
        : control.Apply(new StableDiffusionControlNetImg2ImgRequest { Image = image, Strength = strength });

    public override FluxRequest FluxRequest(string pipelineClass)
    {
        if (pipelineClass == FluxComponents.KontextPipelineClass) return new FluxKontextRequest { Image = image }; // --strength was refused
        FluxImg2ImgRequest request = pipelineClass == FluxComponents.ControlPipelineClass ? new FluxControlImg2ImgRequest { Image = image, ControlImage = FluxControlImage! }
            : control is null ? new FluxImg2ImgRequest { Image = image } : control.Apply(new FluxControlNetImg2ImgRequest { Image = image });
        return strength is { } s ? request with { Strength = s } : request;
    }

    public override FluxOutput RunFlux(FluxComponents components, FluxRequest request, RunHooks hooks, CancellationToken ct) => request switch
    {
        FluxKontextRequest kontext => Use(new FluxKontextPipeline(components), kontext, hooks, ct, (p, r, progress, c) => p.Generate(r, progress, c)),
        FluxControlImg2ImgRequest structural => Use(new FluxControlImg2ImgPipeline(components), structural, hooks, ct, (p, r, progress, c) => p.Generate(r, progress, c)),
        FluxControlNetImg2ImgRequest cn => Use(new FluxControlNetImg2ImgPipeline(components), cn, hooks, ct, (p, r, progress, c) => p.Generate(r, progress, c)),
        _ => Use(new FluxImg2ImgPipeline(components), (FluxImg2ImgRequest)request, hooks, ct, (p, r, progress, c) => p.Generate(r, progress, c)),
    };

    public override StableDiffusion3Output RunSd3(StableDiffusion3Components components, StableDiffusion3Request request, RunHooks hooks, CancellationToken ct) =>
        request is StableDiffusion3PAGImg2ImgRequest pagRequest
        ? Use(new StableDiffusion3PAGImg2ImgPipeline(components), pagRequest, hooks, ct, (p, r, progress, c) => p.Generate(r, progress, c))
        : Use(new StableDiffusion3Img2ImgPipeline(components), (StableDiffusion3Img2ImgRequest)request, hooks, ct, (p, r, progress, c) => p.Generate(r, progress, c));

    public override (StableDiffusionPipelineOutput, double, double?) RunUNet(StableDiffusionComponents components, StableDiffusionRequest request,
        RunHooks hooks, CancellationToken ct)
    {
        if (request is StableDiffusionControlNetUnionImg2ImgRequest union)
            return Use(new StableDiffusionXLControlNetUnionImg2ImgPipeline(components), union, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c));
        if (request is StableDiffusionLatentUpscaleRequest latentUpscale)
            return Use(new StableDiffusionLatentUpscalePipeline(components), latentUpscale, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c));
        if (request is StableDiffusionUpscaleRequest upscale)
            return Use(new StableDiffusionUpscalePipeline(components), upscale, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c));
        if (request is LatentConsistencyModelImg2ImgRequest lcm)
            return Use(new LatentConsistencyModelImg2ImgPipeline(components), lcm, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c));
        if (request is StableDiffusionInstructPix2PixRequest edit)
            return components.IsXL
                ? Use(new StableDiffusionXLInstructPix2PixPipeline(components), edit, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c))
                : Use(new StableDiffusionInstructPix2PixPipeline(components), edit, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c));
        if (request is StableDiffusionControlNetImg2ImgRequest cn)
            return components.IsXL
                ? Use(new StableDiffusionXLControlNetImg2ImgPipeline(components), cn, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c))
                : Use(new StableDiffusionControlNetImg2ImgPipeline(components), cn, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c));
        if (request is StableDiffusionPAGImg2ImgRequest pagRequest)
            return components.IsXL
                ? Use(new StableDiffusionXLPAGImg2ImgPipeline(components), pagRequest, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c))
                : Use(new StableDiffusionPAGImg2ImgPipeline(components), pagRequest, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c));
        var r = (StableDiffusionImg2ImgRequest)request;
        return components.IsXL
            ? Use(new StableDiffusionXLImg2ImgPipeline(components), r, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c))
            : Use(new StableDiffusionImg2ImgPipeline(components), r, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c));
    }
}

/// <summary><c>inpaint</c>'s pipelines; with <paramref name="pag"/> the plain UNet ones are the PAG pipelines (SD3 and the
/// other modes were refused with it before loading).</summary>
internal sealed class Inpaint(ImageBuffer image, ImageBuffer mask, double? strength, ControlOptions? control, int? paddingMaskCrop, PagOptions? pag = null)
    : VerbPipelines
{
    /// <summary>The images of <c>inpaint</c>'s options, and --padding-mask-crop's check that the mask marks something
    /// (before loading; the sizes are checked against the model's pipeline in LoadedModel).</summary>
    public static Inpaint Read(InpaintSettings s)
    {
        var image = ImageFile.LoadRgb(s.Image!);
        var mask = ImageFile.Load(s.Mask!);
        if (s.PaddingMaskCrop is { } pad) VaeImageProcessor.GetCropRegion(mask, image.Width, image.Height, pad); // throws for a mask that marks nothing
        return new Inpaint(image, mask, s.StrengthValue, ControlOptions.From(s), s.PaddingMaskCrop, PagOptions.From(s));
    }

    public override string Verb => "inpaint";

    // diffusers' SD3 ControlNet inpainting pipeline defaults to 28 steps, its plain inpainting pipeline to 50.
    public override int Sd3DefaultSteps => control is null ? 50 : 28;

    public override StableDiffusion3Request Sd3Request()
    {
        // With --controlnet: diffusers' StableDiffusion3ControlNetInpaintingPipeline, whose control_image is the image to
        // inpaint (--control-image, the same file as --image: checked before loading) and control_mask the mask.
        if (control is not null) return control.Apply(new StableDiffusion3ControlNetInpaintingRequest { ControlMask = mask });
        var request = new StableDiffusion3InpaintRequest { Image = image, MaskImage = mask, PaddingMaskCrop = paddingMaskCrop };
        return strength is { } s ? request with { Strength = s } : request;
    }

    public override StableDiffusionRequest UNetRequest(string pipelineClass) => control is null
        ? (StableDiffusionInpaintRequest?)pag?.UNetInpaintRequest(image, mask, strength, paddingMaskCrop)
            ?? new StableDiffusionInpaintRequest { Image = image, MaskImage = mask, Strength = strength, PaddingMaskCrop = paddingMaskCrop }
        : control.Modes is not null ? control.Apply(new StableDiffusionControlNetUnionInpaintRequest { Image = image, MaskImage = mask, Strength = strength, PaddingMaskCrop = paddingMaskCrop })
        : control.Apply(new StableDiffusionControlNetInpaintRequest { Image = image, MaskImage = mask, Strength = strength, PaddingMaskCrop = paddingMaskCrop });

    public override FluxRequest FluxRequest(string pipelineClass)
    {
        FluxInpaintRequest request = pipelineClass == FluxComponents.FillPipelineClass ? new FluxFillRequest { Image = image, MaskImage = mask }
            : pipelineClass == FluxComponents.KontextPipelineClass // --controlnet with Kontext was refused
                ? new FluxKontextInpaintRequest { Image = image, MaskImage = mask, PaddingMaskCrop = paddingMaskCrop }
            : pipelineClass == FluxComponents.ControlPipelineClass // --padding-mask-crop was refused
                ? new FluxControlInpaintRequest { Image = image, MaskImage = mask, ControlImage = FluxControlImage! }
            : control is null ? new FluxInpaintRequest { Image = image, MaskImage = mask, PaddingMaskCrop = paddingMaskCrop }
            : control.Apply(new FluxControlNetInpaintRequest { Image = image, MaskImage = mask }); // --controlnet with Fill was refused
        return strength is { } s ? request with { Strength = s } : request;
    }

    public override FluxOutput RunFlux(FluxComponents components, FluxRequest request, RunHooks hooks, CancellationToken ct) => request switch
    {
        FluxFillRequest fill => Use(new FluxFillPipeline(components), fill, hooks, ct, (p, r, progress, c) => p.Generate(r, progress, c)),
        FluxKontextInpaintRequest kontext => Use(new FluxKontextInpaintPipeline(components), kontext, hooks, ct, (p, r, progress, c) => p.Generate(r, progress, c)),
        FluxControlInpaintRequest structural => Use(new FluxControlInpaintPipeline(components), structural, hooks, ct, (p, r, progress, c) => p.Generate(r, progress, c)),
        FluxControlNetInpaintRequest cn => Use(new FluxControlNetInpaintPipeline(components), cn, hooks, ct, (p, r, progress, c) => p.Generate(r, progress, c)),
        _ => Use(new FluxInpaintPipeline(components), (FluxInpaintRequest)request, hooks, ct, (p, r, progress, c) => p.Generate(r, progress, c)),
    };

    public override StableDiffusion3Output RunSd3(StableDiffusion3Components components, StableDiffusion3Request request, RunHooks hooks, CancellationToken ct) =>
        request is StableDiffusion3ControlNetInpaintingRequest cn
            ? Use(new StableDiffusion3ControlNetInpaintingPipeline(components), cn, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c))
            : Use(new StableDiffusion3InpaintPipeline(components), (StableDiffusion3InpaintRequest)request, hooks, ct, (p, r, progress, c) => p.Generate(r, progress, c));

    public override (StableDiffusionPipelineOutput, double, double?) RunUNet(StableDiffusionComponents components, StableDiffusionRequest request,
        RunHooks hooks, CancellationToken ct)
    {
        if (request is StableDiffusionControlNetUnionInpaintRequest union)
            return Use(new StableDiffusionXLControlNetUnionInpaintPipeline(components), union, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c));
        if (request is StableDiffusionControlNetInpaintRequest cn)
            return components.IsXL
                ? Use(new StableDiffusionXLControlNetInpaintPipeline(components), cn, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c))
                : Use(new StableDiffusionControlNetInpaintPipeline(components), cn, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c));
        if (request is StableDiffusionPAGInpaintRequest pagRequest)
            return components.IsXL
                ? Use(new StableDiffusionXLPAGInpaintPipeline(components), pagRequest, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c))
                : Use(new StableDiffusionPAGInpaintPipeline(components), pagRequest, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c));
        var r = (StableDiffusionInpaintRequest)request;
        return components.IsXL
            ? Use(new StableDiffusionXLInpaintPipeline(components), r, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c))
            : Use(new StableDiffusionInpaintPipeline(components), r, hooks, ct, (p, q, progress, c) => p.Generate(q, progress, c));
    }
}

/// <summary>
/// The ControlNet options of a verb, paired with the ControlNets in order: a value given once is the scalar for all (the
/// pipeline's default when absent), values given per ControlNet are its list; one control image is the single image.
/// With <see cref="Modes"/> (--control-mode) the ControlNets are ControlNet-Unions: the images and modes are the
/// conditions, and the lists are per condition for one ControlNet-Union.
/// </summary>
internal sealed record ControlOptions(PipelineImage[] Images, double[]? Scales, double[]? Starts, double[]? Ends, bool GuessMode, int[]? Modes = null)
{
    /// <summary>The options of <paramref name="s"/>, with the control images read; null without --controlnet.</summary>
    public static ControlOptions? From(GenerateSettings s) => s.ControlNets.Count == 0 ? null : new(
        s.ControlImage!.Select(f => (PipelineImage)ImageFile.LoadRgb(f)).ToArray(), s.ControlNetScaleValues, s.ControlStartValues, s.ControlEndValues, s.GuessMode,
        s.ControlModeValues);

    private PipelineImage? One => Images is [var one] ? one : null;
    private PipelineImage[]? Several => Images.Length > 1 ? Images : null;
    private static double Scalar(double[]? values, double fallback) => values is [var one] ? one : fallback;
    private static double[]? List(double[]? values) => values is { Length: > 1 } ? values : null;

    public StableDiffusionControlNetRequest Apply(StableDiffusionControlNetRequest r) => r with
    {
        Image = One, Images = Several, GuessMode = GuessMode,
        ControlNetConditioningScale = Scalar(Scales, r.ControlNetConditioningScale), ControlNetConditioningScales = List(Scales),
        ControlGuidanceStart = Scalar(Starts, 0), ControlGuidanceStarts = List(Starts), ControlGuidanceEnd = Scalar(Ends, 1), ControlGuidanceEnds = List(Ends),
    };

    public StableDiffusionControlNetUnionRequest Apply(StableDiffusionControlNetUnionRequest r) => r with
    {
        ControlImages = Images, ControlModes = Modes, GuessMode = GuessMode,
        ControlNetConditioningScale = Scalar(Scales, r.ControlNetConditioningScale), ControlNetConditioningScales = List(Scales),
        ControlGuidanceStart = Scalar(Starts, 0), ControlGuidanceStarts = List(Starts), ControlGuidanceEnd = Scalar(Ends, 1), ControlGuidanceEnds = List(Ends),
    };

    public StableDiffusionControlNetUnionImg2ImgRequest Apply(StableDiffusionControlNetUnionImg2ImgRequest r) => r with
    {
        ControlImages = Images, ControlModes = Modes, GuessMode = GuessMode,
        ControlNetConditioningScale = Scalar(Scales, r.ControlNetConditioningScale), ControlNetConditioningScales = List(Scales),
        ControlGuidanceStart = Scalar(Starts, 0), ControlGuidanceStarts = List(Starts), ControlGuidanceEnd = Scalar(Ends, 1), ControlGuidanceEnds = List(Ends),
    };

    public StableDiffusionControlNetUnionInpaintRequest Apply(StableDiffusionControlNetUnionInpaintRequest r) => r with
    {
        ControlImages = Images, ControlModes = Modes, GuessMode = GuessMode,
        ControlNetConditioningScale = Scalar(Scales, r.ControlNetConditioningScale), ControlNetConditioningScales = List(Scales),
        ControlGuidanceStart = Scalar(Starts, 0), ControlGuidanceStarts = List(Starts), ControlGuidanceEnd = Scalar(Ends, 1), ControlGuidanceEnds = List(Ends),
    };

    public StableDiffusion3ControlNetRequest Apply(StableDiffusion3ControlNetRequest r) => r with
    {
        ControlImage = One, ControlImages = Several,
        ControlNetConditioningScale = Scalar(Scales, r.ControlNetConditioningScale), ControlNetConditioningScales = List(Scales),
        ControlGuidanceStart = Scalar(Starts, 0), ControlGuidanceStarts = List(Starts), ControlGuidanceEnd = Scalar(Ends, 1), ControlGuidanceEnds = List(Ends),
    };

    public StableDiffusionControlNetImg2ImgRequest Apply(StableDiffusionControlNetImg2ImgRequest r) => r with
    {
        ControlImage = One, ControlImages = Several, GuessMode = GuessMode,
        ControlNetConditioningScale = Scalar(Scales, r.ControlNetConditioningScale), ControlNetConditioningScales = List(Scales),
        ControlGuidanceStart = Scalar(Starts, 0), ControlGuidanceStarts = List(Starts), ControlGuidanceEnd = Scalar(Ends, 1), ControlGuidanceEnds = List(Ends),
    };

    public FluxControlNetRequest Apply(FluxControlNetRequest r) => r with
    {
        ControlImage = One, ControlImages = Several,
        ControlNetConditioningScale = Scalar(Scales, r.ControlNetConditioningScale), ControlNetConditioningScales = List(Scales),
        ControlGuidanceStart = Scalar(Starts, 0), ControlGuidanceStarts = List(Starts), ControlGuidanceEnd = Scalar(Ends, 1), ControlGuidanceEnds = List(Ends),
    };

    public FluxControlNetImg2ImgRequest Apply(FluxControlNetImg2ImgRequest r) => r with
    {
        ControlImage = One, ControlImages = Several,
        ControlNetConditioningScale = Scalar(Scales, r.ControlNetConditioningScale), ControlNetConditioningScales = List(Scales),
        ControlGuidanceStart = Scalar(Starts, 0), ControlGuidanceStarts = List(Starts), ControlGuidanceEnd = Scalar(Ends, 1), ControlGuidanceEnds = List(Ends),
    };

    public FluxControlNetInpaintRequest Apply(FluxControlNetInpaintRequest r) => r with
    {
        ControlImage = One, ControlImages = Several,
        ControlNetConditioningScale = Scalar(Scales, r.ControlNetConditioningScale), ControlNetConditioningScales = List(Scales),
        ControlGuidanceStart = Scalar(Starts, 0), ControlGuidanceStarts = List(Starts), ControlGuidanceEnd = Scalar(Ends, 1), ControlGuidanceEnds = List(Ends),
    };

    public StableDiffusionControlNetInpaintRequest Apply(StableDiffusionControlNetInpaintRequest r) => r with
    {
        ControlImage = One, ControlImages = Several, GuessMode = GuessMode,
        // Left null without --controlnet-scale: the pipeline's default (0.5 for SD 1.x / 2.x, 1.0 for SDXL).
        ControlNetConditioningScale = Scales is [var one] ? one : r.ControlNetConditioningScale, ControlNetConditioningScales = List(Scales),
        ControlGuidanceStart = Scalar(Starts, 0), ControlGuidanceStarts = List(Starts), ControlGuidanceEnd = Scalar(Ends, 1), ControlGuidanceEnds = List(Ends),
    };
}
