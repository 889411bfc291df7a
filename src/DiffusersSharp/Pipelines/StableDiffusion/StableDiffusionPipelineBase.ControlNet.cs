using DiffusersSharp.Images;
using DiffusersSharp.Models.ControlNets;
using DiffusersSharp.Schedulers;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion;

// The ControlNet pipelines' part: the control image, the guidance window and the residuals of each step.
public abstract partial class StableDiffusionPipelineBase
{
    /// <summary>What the loop needs for the ControlNet: the control image as the ControlNet takes it (repeated per image,
    /// doubled under CFG outside guess mode), guess mode, and each step's conditioning scale (0 outside the window).</summary>
    private sealed record ControlState(ControlNetModel ControlNet, Tensor Image, bool GuessMode, double[] Scales);

    /// <summary>diffusers' <c>control_image_processor</c>: resize (LANCZOS) to the output size, RGB, [0, 1] (no normalization).</summary>
    private VaeImageProcessor ControlImageProcessor => new(new VaeImageProcessorConfig
    {
        VaeScaleFactor = VaeScaleFactor, DoConvertRgb = true, DoNormalize = false,
    });

    /// <summary>Output size of a ControlNet call: the request's, else the control image's rounded down to a multiple of 8.</summary>
    private (int Height, int Width) ControlNetSize(StableDiffusionControlNetRequest r)
    {
        var image = r.Image ?? throw new ArgumentException("image (the control image) is required.");
        var (h, w) = image.Image is { } pixels ? (pixels.Height, pixels.Width) : ((int)image.Tensor!.shape[^2], (int)image.Tensor.shape[^1]);
        return ControlImageProcessor.GetDefaultHeightWidth(h, w, r.Height, r.Width);
    }

    /// <summary>The ControlNet request's own checks (diffusers' check_inputs for a single ControlNet).</summary>
    private void CheckControlNetInputs(StableDiffusionControlNetRequest r)
    {
        if (Components.ControlNet is null)
            throw new ArgumentException("These components have no ControlNet; load them with StableDiffusionComponents.FromPretrained(model, options, controlnet).");
        if (r.Image is null) throw new ArgumentException("image (the control image) is required.");
        if (r.Image.Tensor is { } t && (t.dim() != 4 || t.shape[1] != Components.ControlNet.Config.ConditioningChannels))
            throw new ArgumentException($"A control image tensor must be [B, {Components.ControlNet.Config.ConditioningChannels}, H, W] in [0, 1].");
        if (!double.IsFinite(r.ControlNetConditioningScale))
            throw new ArgumentException($"controlnet_conditioning_scale must be a finite number, got {r.ControlNetConditioningScale}.");
        double start = r.ControlGuidanceStart, end = r.ControlGuidanceEnd;
        if (start >= end) throw new ArgumentException($"control guidance start: {start} cannot be larger or equal to control guidance end: {end}.");
        if (start < 0) throw new ArgumentException($"control guidance start: {start} can't be smaller than 0.");
        if (end > 1) throw new ArgumentException($"control guidance end: {end} can't be larger than 1.0.");
        if (r.GuidanceRescale != 0) throw new ArgumentException("guidance_rescale is not a parameter of diffusers' ControlNet pipelines.");
    }

    /// <summary>
    /// prepare_image: the control image at the output size, repeated to the batch (one image for all, or one per prompt
    /// repeated per image), doubled under CFG unless in guess mode; and controlnet_keep over the full schedule: a step
    /// i of n applies the ControlNet unless i / n &lt; start or (i + 1) / n &gt; end.
    /// </summary>
    private ControlState PrepareControl(StableDiffusionControlNetRequest r, int height, int width, int batch, bool cfg, int timestepCount)
    {
        var controlnet = Components.ControlNet!;
        bool guess = r.GuessMode || controlnet.Config.GlobalPoolConditions;
        var processor = ControlImageProcessor;
        var image = (r.Image!.Image is { } pixels ? processor.Preprocess(pixels, height, width) : processor.Preprocess(r.Image.Tensor!, height, width))
            .to(ScalarType.Float32);
        long repeat = image.shape[0] == 1 ? batch : r.NumImagesPerPrompt;
        if (image.shape[0] != 1 && image.shape[0] * r.NumImagesPerPrompt != batch)
            throw new ArgumentException($"The control image batch ({image.shape[0]}) must be 1 or the prompt batch ({batch / r.NumImagesPerPrompt}).");
        image = image.repeat_interleave(repeat, 0).to(controlnet.Dtype, Components.Device);
        if (cfg && !guess) image = cat([image, image], 0);
        var scales = new double[timestepCount];
        for (int i = 0; i < timestepCount; i++)
        {
            bool off = (double)i / timestepCount < r.ControlGuidanceStart || (double)(i + 1) / timestepCount > r.ControlGuidanceEnd;
            scales[i] = r.ControlNetConditioningScale * (off ? 0.0 : 1.0);
        }
        return new ControlState(controlnet, image, guess, scales);
    }

    /// <summary>
    /// One step's ControlNet residuals, or null when its scale is 0 there (outside the guidance window: diffusers still
    /// runs it and adds residuals multiplied by 0, which changes nothing). In guess mode under CFG the ControlNet sees the
    /// conditional half only and the unconditional half gets zero residuals.
    /// </summary>
    private ControlNetOutput? ControlResiduals(ControlState c, int step, Tensor latents, Tensor modelInput, Tensor timestep, DenoiseState s,
        bool cfg, Func<Tensor, Tensor> half, IDiffusionScheduler scheduler, float t)
    {
        double scale = c.Scales[step];
        if (scale == 0) return null;
        Tensor input, embeds, image = half(c.Image);
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
        var result = c.ControlNet.forward(input, timestep, embeds, image, scale, c.GuessMode, textEmbeds, timeIds);
        if (!conditionalOnly) return result;
        var doubled = new ControlNetOutput(
            result.DownBlockResSamples.Select(d => cat([zeros_like(d), d], 0)).ToArray(),
            cat([zeros_like(result.MidBlockResSample), result.MidBlockResSample], 0));
        result.Dispose();
        return doubled;
    }
}
