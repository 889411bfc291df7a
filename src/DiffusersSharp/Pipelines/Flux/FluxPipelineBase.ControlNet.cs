using DiffusersSharp.Models;
using DiffusersSharp.Models.ControlNets;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux;

// The Flux ControlNet pipelines' part (text-to-image, image-to-image, inpainting): the checks, the control latents and
// the summed residuals of each step.
public abstract partial class FluxPipelineBase
{
    /// <summary>The ControlNet pipelines' constructor check: <paramref name="components"/> must hold a ControlNet (or
    /// several) that fit the transformer (checked before the base takes its reference).</summary>
    /// <exception cref="ArgumentException">No ControlNet, or one that does not fit.</exception>
    private protected static FluxComponents WithControlNets(FluxComponents components, string pipelineName)
    {
        ArgumentNullException.ThrowIfNull(components);
        if (components.ControlNets.Count == 0)
            throw new ArgumentException($"{pipelineName} needs components with a ControlNet: load them with FluxComponents.FromPretrained(model, options, controlnet).", nameof(components));
        FluxComponents.CheckControlNets(components.ControlNets, components.Transformer);
        return components;
    }

    /// <summary>The request's control images and per-ControlNet settings.</summary>
    private static ControlNetSettings ControlSettingsOf(IFluxControlNetRequest r) => new("control_image", r.ControlImage, r.ControlImages,
        r.ControlNetConditioningScale, r.ControlNetConditioningScales, r.ControlGuidanceStart, r.ControlGuidanceStarts, r.ControlGuidanceEnd, r.ControlGuidanceEnds);

    /// <summary>
    /// The ControlNet checks of diffusers' Flux ControlNet pipelines (one ControlNet or a FluxMultiControlNetModel), before
    /// any compute: one control image per ControlNet, list lengths, scales and windows; a control image tensor must be a
    /// [B, 3, H, W] of the output size whose batch repeats to the request's. diffusers' image-to-image and inpainting
    /// ControlNet pipelines have no negative prompt nor true CFG: they are refused there.
    /// </summary>
    private protected void CheckControlNetInputs(IFluxControlNetRequest control, FluxRequest request, int height, int width)
    {
        int n = Components.ControlNets.Count;
        var settings = ControlSettingsOf(control);
        settings.Check(n, _ => (3, "[-1, 1]"));
        int batch = BatchSize(request);
        foreach (var image in settings.ControlImages)
        {
            if (image.Tensor is not { } t) continue;
            if (t.shape[2] != height || t.shape[3] != width)
                throw new ArgumentException($"A control image tensor is taken as is and must be the output size {height}x{width}, got [{string.Join(", ", t.shape)}].");
            if (t.shape[0] != 1 && t.shape[0] * request.NumImagesPerPrompt != batch)
                throw new ArgumentException($"Cannot repeat {t.shape[0]} control images to a batch of {batch}: give one, or one per prompt.");
        }
        if (request is FluxImg2ImgRequest)
        {
            string pipeline = request is FluxInpaintRequest ? "FluxControlNetInpaintPipeline" : "FluxControlNetImg2ImgPipeline";
            if (request.NegativePrompt is not null || request.NegativePrompt2 is not null || request.NegativePromptEmbeds is not null
                || request.NegativePooledPromptEmbeds is not null || request.TrueCfgScale != 1.0)
                throw new ArgumentException($"negative prompts and true_cfg_scale are not parameters of diffusers' {pipeline} (it has no true CFG); leave them unset.");
        }
    }

    /// <summary>
    /// diffusers' prepare_image and the VAE encode, per ControlNet in order: the control image resized to the output size
    /// and normalized to [-1, 1] (a tensor as is), repeated to the batch (one image for all, or one per prompt repeated
    /// per image), a VAE posterior sample drawn with the request's generator(s), <c>(latents − shift) · scaling</c>, packed
    /// as the latents. Called where diffusers makes these draws: after prompt encoding, before the image and noise draws.
    /// </summary>
    private protected Tensor[] PrepareControlLatents(IFluxControlNetRequest control, FluxRequest request, int height, int width, int batch)
    {
        var images = ControlSettingsOf(control).ControlImages;
        var latents = new Tensor[images.Count];
        for (int k = 0; k < images.Count; k++)
        {
            var image = images[k].Image is { } pixels ? ImageProcessor.Preprocess(pixels, height, width) : images[k].Tensor!;
            image = image.repeat_interleave(image.shape[0] == 1 ? batch : request.NumImagesPerPrompt, 0);
            latents[k] = PackLatents(EncodeImage(image.to(ScalarType.Float32), request, Components.Vae.WeightDtype(), batch));
        }
        return latents;
    }

    /// <summary>
    /// The per-step ControlNet residuals for a call whose loop runs <paramref name="steps"/> steps: each ControlNet's
    /// conditioning scale times diffusers' <c>controlnet_keep</c>, and the guidance input every ControlNet gets (the
    /// guidance scale when the first ControlNet has guidance_embeds, as diffusers reads it from <c>nets[0]</c>).
    /// </summary>
    private protected FluxControlNetResiduals ControlResiduals(IFluxControlNetRequest control, Tensor[] controlLatents, int steps, Tensor imageIds,
        double guidanceScale, int batch)
    {
        var nets = Components.ControlNets;
        Tensor? guidance = nets[0].Config.GuidanceEmbeds
            ? full([1], guidanceScale, dtype: ScalarType.Float32, device: Components.Device).expand(batch)
            : null;
        return new FluxControlNetResiduals(nets, controlLatents, ControlSettingsOf(control).StepScales(nets.Count, steps), imageIds, guidance);
    }
}

/// <summary>
/// One call's ControlNets, their packed control latents and each step's conditioning scales; gives each step's residuals
/// summed over the ControlNets as diffusers' <c>FluxMultiControlNetModel</c> sums them (for one ControlNet, its own).
/// </summary>
internal sealed class FluxControlNetResiduals
{
    private readonly IReadOnlyList<FluxControlNetModel> _nets;
    private readonly Tensor[] _controlLatents;
    private readonly double[][] _scales;
    private readonly Tensor _imageIds;
    private readonly Tensor? _guidance;
    private readonly int _blocks, _singles;

    public FluxControlNetResiduals(IReadOnlyList<FluxControlNetModel> nets, Tensor[] controlLatents, double[][] scales, Tensor imageIds, Tensor? guidance)
    {
        _nets = nets;
        _controlLatents = controlLatents;
        _scales = scales;
        _imageIds = imageIds;
        _guidance = guidance;
        _blocks = SummedCount(nets.Select(n => n.Config.NumLayers).ToArray());
        _singles = SummedCount(nets.Select(n => n.Config.NumSingleLayers).ToArray());
    }

    /// <summary>
    /// How many residuals diffusers' sum keeps, given each ControlNet's count: it starts from the first ControlNet's list
    /// (none when it has no blocks of that kind), adds each later non-empty list pairwise with <c>zip</c>, which stops at
    /// the shorter one, and skips empty ones.
    /// </summary>
    private static int SummedCount(int[] counts) => counts[0] == 0 ? 0 : counts.Where(c => c > 0).Min();

    /// <summary>
    /// Step <paramref name="step"/>'s residuals (null for none). A ControlNet whose scale is 0 there (outside its window)
    /// is not run: diffusers runs it and adds its residuals times 0, which changes no sum (the lists are cut to the
    /// length diffusers' sum keeps either way).
    /// </summary>
    public (IReadOnlyList<Tensor>? Blocks, IReadOnlyList<Tensor>? Singles) ForStep(Tensor latents, Tensor timestep, int step, Tensor embeds,
        Tensor pooled, Tensor textIds)
    {
        Tensor[]? blocks = null, singles = null;
        for (int k = 0; k < _nets.Count; k++)
        {
            double scale = _scales[step][k];
            if (scale == 0) continue;
            var (b, s) = _nets[k].forward(latents, _controlLatents[k], scale, embeds, pooled, timestep, _imageIds, textIds, _guidance);
            blocks = Sum(blocks, b, _blocks);
            singles = Sum(singles, s, _singles);
        }
        return (blocks is { Length: > 0 } ? blocks : null, singles is { Length: > 0 } ? singles : null);
    }

    private static Tensor[]? Sum(Tensor[]? sum, IReadOnlyList<Tensor> samples, int count)
    {
        if (samples.Count == 0) return sum;
        if (sum is null) return samples.Take(count).ToArray();
        for (int i = 0; i < count; i++) sum[i] = sum[i] + samples[i];
        return sum;
    }
}
