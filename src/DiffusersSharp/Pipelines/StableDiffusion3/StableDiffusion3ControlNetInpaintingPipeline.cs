using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion3;

/// <summary>
/// Inpainting with SD3 steered by an inpainting SD3 ControlNet (diffusers' <c>StableDiffusion3ControlNetInpaintingPipeline</c>,
/// for ControlNets such as Alimama's SD3 inpainting ControlNet, <c>extra_conditioning_channels</c> 1): the control image
/// with the masked pixels set to -1 is VAE-encoded, the inverted mask at the latent size is appended as a 17th channel,
/// and each step the ControlNet's residuals steer a text-to-image run from pure noise (the image itself is not blended in).
/// One ControlNet only, as in diffusers.
/// </summary>
public sealed class StableDiffusion3ControlNetInpaintingPipeline : StableDiffusion3ControlNetPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them); they must hold one SD3 ControlNet with one extra
    /// conditioning channel.</summary>
    /// <exception cref="ArgumentException">The components have no ControlNet, several, or one that does not fit.</exception>
    public StableDiffusion3ControlNetInpaintingPipeline(StableDiffusion3Components components)
        : base(components, extraConditioningChannels: 1, several: false, "StableDiffusion3ControlNetInpaintingPipeline")
    {
        if (components.ControlNets[0].Config.JointAttentionDim is null)
            throw new ArgumentException("This SD3 ControlNet has no text input (joint_attention_dim null); diffusers' StableDiffusion3ControlNetInpaintingPipeline always gives it the prompt embeddings, so it cannot run it.");
    }

    /// <summary>Loads a diffusers SD3 pipeline folder or hub repo id and an inpainting SD3 ControlNet folder or hub repo id beside it.</summary>
    public static StableDiffusion3ControlNetInpaintingPipeline FromPretrained(string model, string controlnet, PipelineLoadOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusion3Components.FromPretrained(model, options ?? new PipelineLoadOptions(), controlnet, cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>Inpaints <see cref="StableDiffusion3ControlNetRequest.ControlImage"/> where
    /// <see cref="StableDiffusion3ControlNetInpaintingRequest.ControlMask"/> is white (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters (checked before any compute).</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusion3Output Generate(StableDiffusion3ControlNetInpaintingRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        CheckControlInputs(request, (3, "[-1, 1]"));
        var image = SettingsOf(request).ControlImages[0];
        // diffusers takes a tensor control image at its own size: the output size follows it.
        int height = image.Tensor is { } t ? (int)t.shape[2] : request.Height ?? DefaultSize;
        int width = image.Tensor is { } u ? (int)u.shape[3] : request.Width ?? DefaultSize;
        CheckInputs(request, height, width);
        CheckMask(request, image, height, width);
        return Run(request, height, width, (batch, cfg) => [MaskedControlLatents(request, height, width, batch, cfg)],
            pooled => request.ControlNetPooledProjections ?? zeros_like(pooled), progress, cancellationToken);
    }

    /// <summary>The mask's checks, before any compute: given, one channel, the control image's batch and size when tensors.</summary>
    private void CheckMask(StableDiffusion3ControlNetInpaintingRequest r, PipelineImage image, int height, int width)
    {
        if (r.ControlMask is not { } mask) throw new ArgumentException("control_mask is required for ControlNet inpainting.");
        int batch = BatchSize(r);
        long imageBatch = image.Tensor?.shape[0] ?? 1;
        if (imageBatch != 1 && imageBatch != batch)
            throw new ArgumentException($"The control image batch ({imageBatch}) must be 1 or the prompt batch ({batch}).");
        if (mask.Tensor is { } m)
        {
            if (m.dim() != 4 || m.shape[1] != 1 || m.shape[2] != height || m.shape[3] != width)
                throw new ArgumentException($"A control_mask tensor must be [B, 1, {height}, {width}] (one channel, the output size), got [{string.Join(", ", m.shape)}].");
            if (m.shape[0] != imageBatch)
                throw new ArgumentException($"The control_mask batch ({m.shape[0]}) must be the control image's ({imageBatch}).");
        }
        else if (imageBatch != 1)
            throw new ArgumentException($"The control image has a batch of {imageBatch}; give the mask as a tensor of the same batch.");
    }

    /// <summary>
    /// diffusers' prepare_image_with_mask: the control image in [-1, 1] and the binarized mask at the output size, repeated
    /// to the batch (one for all, or one per prompt repeated per image); the masked image (-1 where the mask is above 0.5)
    /// VAE-encoded (a posterior sample from <see cref="StableDiffusion3ControlNetRequest.ControlImageGenerator"/>) as
    /// <c>(latents - shift) x scaling</c>; the mask resized (nearest) to the latent size and inverted; the two concatenated
    /// on channels, then doubled under CFG.
    /// </summary>
    private Tensor MaskedControlLatents(StableDiffusion3ControlNetInpaintingRequest r, int height, int width, int batch, bool cfg)
    {
        var vae = Components.Vae;
        var dtype = Components.Transformer.Dtype;
        var device = Components.Device;
        var generator = ControlGenerator(r);
        var source = SettingsOf(r).ControlImages[0];
        Components.Activate("vae");
        using var scope = NewDisposeScope();
        var image = source.Image is { } pixels ? ImageProcessor.Preprocess(pixels, height, width) : source.Tensor!;
        var mask = r.ControlMask!.Image is { } maskPixels ? MaskProcessor.Preprocess(maskPixels, height, width) : r.ControlMask.Tensor!;
        long repeat = image.shape[0] == 1 ? batch : r.NumImagesPerPrompt;
        image = image.repeat_interleave(repeat, 0).to(dtype, device);
        mask = mask.repeat_interleave(repeat, 0).to(dtype, device);
        var masked = where(mask > 0.5, tensor(-1.0f, dtype, device), image);
        var latents = RandomDraws.SampleVae(vae, masked, generator, null, device);
        latents = ((latents - (vae.Config.ShiftFactor ?? 0)) * vae.Config.ScalingFactor).to(dtype);
        var small = nn.functional.interpolate(mask, [height / VaeScaleFactor, width / VaeScaleFactor]);
        var control = cat([latents, 1 - small], 1);
        if (cfg) control = cat([control, control], 0);
        return control.MoveToOuterDisposeScope();
    }
}
