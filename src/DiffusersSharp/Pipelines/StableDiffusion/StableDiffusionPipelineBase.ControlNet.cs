using DiffusersSharp.Images;
using DiffusersSharp.Models.ControlNets;
using DiffusersSharp.Schedulers;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion;

// The ControlNet pipelines' part: the control images, the guidance windows and the summed residuals of each step.
public abstract partial class StableDiffusionPipelineBase
{
    /// <summary>What the loop needs for the ControlNets: each one's control image as it takes it (repeated per image,
    /// doubled under CFG outside guess mode), guess mode, and each step's conditioning scale per ControlNet (0 outside
    /// its window). For ControlNet-Unions, <see cref="Union"/> holds the models and images instead.</summary>
    private sealed record ControlState(IReadOnlyList<ControlNetModel> ControlNets, Tensor[] Images, bool GuessMode, double[][] Scales)
    {
        /// <summary>The ControlNet-Unions and their control images and modes (ControlNet-Union pipelines), or null.</summary>
        public UnionControl? Union { get; init; }
    }

    /// <summary>The ControlNet pipelines' constructor check: <paramref name="components"/> must hold a ControlNet
    /// (checked before the base takes its reference).</summary>
    private protected static StableDiffusionComponents WithControlNets(StableDiffusionComponents components)
    {
        ArgumentNullException.ThrowIfNull(components);
        if (components.ControlNets.Count == 0)
            throw new ArgumentException(components.ControlNetUnions.Count > 0
                ? "These components hold ControlNet-Unions; use StableDiffusionXLControlNetUnionPipeline (or its Img2Img / Inpaint twins)."
                : "These components have no ControlNet; load them with StableDiffusionComponents.FromPretrained(model, options, controlnet).", nameof(components));
        return components;
    }

    /// <summary>diffusers' <c>control_image_processor</c>: resize (LANCZOS) to the output size, RGB, [0, 1] (no normalization).</summary>
    private VaeImageProcessor ControlImageProcessor => new(new VaeImageProcessorConfig
    {
        VaeScaleFactor = VaeScaleFactor, DoConvertRgb = true, DoNormalize = false,
    });

    /// <summary>The request's control images and per-ControlNet settings (the scale defaulted as <see cref="ConditioningScaleOf"/>).</summary>
    private ControlNetSettings SettingsOf(IControlNetRequest r) => new(r.ImageName, r.ControlImage, r.ControlImages, ConditioningScaleOf(r),
        r.ControlNetConditioningScales, r.ControlGuidanceStart, r.ControlGuidanceStarts, r.ControlGuidanceEnd, r.ControlGuidanceEnds);

    /// <summary>The single conditioning scale <paramref name="r"/> runs with: its own, or the pipeline's default (only
    /// inpainting leaves it open: 0.5 for SD 1.x / 2.x, 1.0 for SDXL, as diffusers' two inpainting ControlNet pipelines).</summary>
    private double ConditioningScaleOf(IControlNetRequest r) => r.ConditioningScale ?? (IsXL ? 1.0 : 0.5);

    /// <summary>Whether the SDXL ControlNet inpainting pipeline runs: diffusers' version of it lacks a few of its
    /// siblings' behaviours (global_pool_conditions does not turn guess mode on; no negative micro-conditioning).</summary>
    private bool IsXLControlNetInpaint(StableDiffusionRequest r) => IsXL && r is IControlNetRequest && r is StableDiffusionInpaintRequest;

    /// <summary>Output size of a text-to-image ControlNet call: the request's, else the first control image's rounded
    /// down to a multiple of 8 (diffusers takes the first prepared image's size).</summary>
    private (int Height, int Width) ControlNetSize(PipelineImage image, StableDiffusionRequest r)
    {
        var (h, w) = image.Image is { } pixels ? (pixels.Height, pixels.Width) : ((int)image.Tensor!.shape[^2], (int)image.Tensor.shape[^1]);
        return ControlImageProcessor.GetDefaultHeightWidth(h, w, r.Height, r.Width);
    }

    /// <summary>The ControlNet request's own checks (diffusers' check_inputs for one ControlNet or a MultiControlNetModel):
    /// one control image per ControlNet, list lengths, scales and guidance windows.</summary>
    private void CheckControlNetInputs(IControlNetRequest r, StableDiffusionRequest request)
    {
        var nets = Components.ControlNets;
        int n = nets.Count;
        if (r is IControlNetUnionRequest union) CheckControlNetUnionInputs(union, request);
        else if (n == 0)
            throw new ArgumentException("These components have no ControlNet; load them with StableDiffusionComponents.FromPretrained(model, options, controlnet).");
        else SettingsOf(r).Check(n, k => (nets[k].Config.ConditioningChannels, "[0, 1]"));
        // What each diffusers ControlNet pipeline lacks is refused rather than silently used or ignored.
        bool xlInpaint = IsXLControlNetInpaint(request);
        if (request.GuidanceRescale != 0 && !xlInpaint)
            throw new ArgumentException("guidance_rescale is not a parameter of this diffusers ControlNet pipeline (of the ControlNet ones only SDXL inpainting has it).");
        if (IsXL && request is StableDiffusionImg2ImgRequest { DenoisingStart: not null } && !xlInpaint)
            throw new ArgumentException("denoising_start is not a parameter of diffusers' StableDiffusionXLControlNetImg2ImgPipeline; use strength.");
        if (IsXL && request is StableDiffusionImg2ImgRequest && request.DenoisingEnd is not null && !xlInpaint)
            throw new ArgumentException("denoising_end is not a parameter of diffusers' StableDiffusionXLControlNetImg2ImgPipeline.");
        if (xlInpaint && (request.NegativeOriginalSize is not null || request.NegativeTargetSize is not null || request.NegativeCropsCoordsTopLeft != default))
            throw new ArgumentException("negative_original_size, negative_crops_coords_top_left and negative_target_size are not parameters of diffusers' StableDiffusionXLControlNetInpaintPipeline (its negative time ids repeat the positive ones).");
    }

    /// <summary>
    /// prepare_image, per ControlNet: its control image at the output size (cropped as the image is under
    /// padding_mask_crop), repeated to the batch (one image for all, or
    /// one per prompt repeated per image), doubled under CFG unless in guess mode; and controlnet_keep over the steps
    /// that run: step i of n applies ControlNet k unless i / n &lt; start_k or (i + 1) / n &gt; end_k. Guess mode is
    /// the request's, or the first ControlNet's global_pool_conditions (as diffusers reads it from nets[0]; not in SDXL
    /// inpainting, whose diffusers pipeline does not read it).
    /// </summary>
    private ControlState PrepareControl(IControlNetRequest r, int numImagesPerPrompt, int height, int width, int batch, bool cfg, int timestepCount, MaskCrop? maskCrop)
    {
        if (r is IControlNetUnionRequest union) return PrepareControlUnion(union, numImagesPerPrompt, height, width, batch, cfg, timestepCount);
        var nets = Components.ControlNets;
        int n = nets.Count;
        bool guess = r.GuessMode || (nets[0].Config.GlobalPoolConditions && !IsXLControlNetInpaint((StableDiffusionRequest)r));
        var processor = ControlImageProcessor;
        var settings = SettingsOf(r);
        var sources = settings.ControlImages;
        var images = new Tensor[n];
        for (int k = 0; k < n; k++) images[k] = PrepareControlImage(processor, sources[k], height, width, batch, numImagesPerPrompt, cfg && !guess, nets[k].Dtype, maskCrop);
        var perStep = settings.StepScales(n, timestepCount);
        return new ControlState(nets, images, guess, perStep);
    }

    /// <summary>prepare_image for one control image: at the output size (cropped as the image is under padding_mask_crop),
    /// repeated to the batch (one image for all, or one per prompt repeated per image), in the ControlNet's dtype, doubled
    /// when <paramref name="doubled"/> (CFG outside guess mode).</summary>
    private Tensor PrepareControlImage(VaeImageProcessor processor, PipelineImage source, int height, int width, int batch, int numImagesPerPrompt,
        bool doubled, ScalarType dtype, MaskCrop? maskCrop)
    {
        var image = source.Preprocess(processor, height, width, maskCrop).to(ScalarType.Float32);
        long repeat = image.shape[0] == 1 ? batch : numImagesPerPrompt;
        if (image.shape[0] != 1 && image.shape[0] * numImagesPerPrompt != batch)
            throw new ArgumentException($"The control image batch ({image.shape[0]}) must be 1 or the prompt batch ({batch / numImagesPerPrompt}).");
        image = image.repeat_interleave(repeat, 0).to(dtype, Components.Device);
        return doubled ? cat([image, image], 0) : image;
    }

    /// <summary>
    /// One step's ControlNet residuals, summed over the ControlNets in order (diffusers' MultiControlNetModel), or null
    /// when every scale is 0 there. A ControlNet whose scale is 0 (outside its window) is not run: diffusers runs it and
    /// adds its residuals multiplied by 0, which changes no sum. In guess mode under CFG the ControlNets see the
    /// conditional half only and the unconditional half gets zero residuals.
    /// </summary>
    private ControlNetOutput? ControlResiduals(ControlState c, int step, Tensor latents, Tensor modelInput, Tensor timestep, DenoiseState s,
        bool cfg, Func<Tensor, Tensor> half, IDiffusionScheduler scheduler, float t)
    {
        var scales = c.Scales[step];
        if (scales.All(x => x == 0) && c.Union is not { RunsWhenScalesAreZero: true }) return null;
        Tensor input, embeds;
        Tensor? textEmbeds = s.TextEmbeds is null ? null : half(s.TextEmbeds), timeIds = s.TimeIds is null ? null : half(s.TimeIds);
        bool conditionalOnly = c.GuessMode && cfg;
        if (conditionalOnly)
        {
            input = scheduler.ScaleModelInput(latents, t);
            embeds = s.Embeds.chunk(2)[1];
            textEmbeds = textEmbeds?.chunk(2)[1];
            timeIds = timeIds?.chunk(2)[1];
        }
        else (input, embeds) = (modelInput, half(s.Embeds));
        Tensor[]? down = null;
        Tensor? mid = null;
        for (int k = 0; k < (c.Union?.Runs ?? c.ControlNets.Count); k++)
        {
            if (c.Union is null && scales[k] == 0) continue;
            var result = c.Union is { } union ? union.Forward(k, scales, input, timestep, embeds, half, c.GuessMode, textEmbeds, timeIds)
                : c.ControlNets[k].forward(input, timestep, embeds, half(c.Images[k]), scales[k], c.GuessMode, textEmbeds, timeIds);
            if (result is null) continue;
            if (down is null) (down, mid) = (result.DownBlockResSamples, result.MidBlockResSample);
            else
            {
                down = down.Zip(result.DownBlockResSamples, (a, b) => a + b).ToArray();
                mid = mid! + result.MidBlockResSample;
            }
        }
        if (!conditionalOnly) return new ControlNetOutput(down!, mid!);
        return new ControlNetOutput(down!.Select(d => cat([zeros_like(d), d], 0)).ToArray(), cat([zeros_like(mid!), mid!], 0));
    }
}
