using DiffusersSharp.Models;
using DiffusersSharp.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// Inpainting with Flux.1 (diffusers' <c>FluxInpaintPipeline</c>, the standard 64-channel transformer, not Flux Fill):
/// image-to-image where, after every step, the packed latents outside the mask (black) are reset to the image's latents
/// noised to the next timestep (the clean image latents after the last step), so only the white part is repainted.
/// The mask is resized to the latent size (nearest), repeated over the 16 latent channels and packed like the latents.
/// diffusers' <c>padding_mask_crop</c> (inpaint a crop around the mask, then paste it back) is not implemented.
/// </summary>
public sealed class FluxInpaintPipeline : FluxPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    public FluxInpaintPipeline(FluxComponents components) : base(components) { }

    /// <summary>Loads a diffusers Flux pipeline folder or hub repo id.</summary>
    public static FluxInpaintPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = FluxComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new FluxInpaintPipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>An inpainting pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static FluxInpaintPipeline FromPipe(FluxPipelineBase other) => new(other.Components);

    /// <summary>Repaints <see cref="FluxImg2ImgRequest.Image"/> where <see cref="FluxInpaintRequest.MaskImage"/> is white (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public FluxOutput Generate(FluxInpaintRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        int height = request.Height ?? DefaultSize, width = request.Width ?? DefaultSize;
        CheckInputs(request, height, width);
        CheckStrength(request);
        if (request.Image is null) throw new ArgumentException("image is required for inpainting.");
        if (request.MaskImage is null) throw new ArgumentException("mask_image is required for inpainting.");
        int batch = BatchSize(request), channels = LatentChannels;
        var (latentH, latentW) = LatentSize(height, width);
        long[] shape = [batch, channels, latentH, latentW], packedShape = [batch, (latentH / 2) * (latentW / 2), channels * 4];
        if (request.Latents is { } given && !given.shape.SequenceEqual(shape) && !given.shape.SequenceEqual(packedShape))
            throw new ArgumentException($"latents must be [{string.Join(", ", shape)}] or packed [{string.Join(", ", packedShape)}], got [{string.Join(", ", given.shape)}].");

        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        var initImage = PreprocessImage(request.Image, height, width);
        CheckImageTensor(initImage, batch, height, width, "image");
        var maskCondition = PreprocessMask(request.MaskImage, height, width);
        CheckImageTensor(maskCondition, batch, height, width, "mask");
        if (initImage.shape[1] == Components.Vae.Config.LatentChannels)
            throw new ArgumentException("image must be pixels for inpainting (the masked image is made from it), not latents.");
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (positive, negative) = EncodePrompts(request, batch);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        var dtype = positive.PromptEmbeds.dtype;
        using var scheduler = CreateScheduler(request, (latentH / 2) * (latentW / 2));
        var timesteps = StrengthTimesteps(scheduler, request.Strength);

        // prepare_latents: the image's posterior sample (draw 1, also with given latents), then the noise (draw 2).
        var imageLatents = EncodeImage(initImage, request, dtype, batch);
        Tensor noise, latents;
        if (request.Latents is { } initial)
        {
            noise = initial.to(dtype, device, copy: true);
            if (noise.dim() == 4) noise = PackLatents(noise);
            latents = noise.alias(); // the loop frees its latents each step; the noise must outlive it
        }
        else
        {
            var drawn = RandomDraws.Randn(shape, request.Generator, request.Generators, dtype, device);
            latents = PackLatents(scheduler.ScaleNoise(imageLatents, timesteps[..1].repeat(batch), drawn));
            noise = PackLatents(drawn);
        }
        imageLatents = PackLatents(imageLatents);

        // prepare_mask_latents: the mask at latent size (nearest), over every channel, packed like the latents.
        var mask = nn.functional.interpolate(maskCondition, [latentH, latentW]).to(dtype, device);
        if (mask.shape[0] < batch) mask = mask.repeat(batch / mask.shape[0], 1, 1, 1);
        mask = PackLatents(mask.repeat(1, channels, 1, 1));
        // diffusers also encodes the masked image with the generator (draw 3); the 64-channel loop never reads it, so
        // only its draw is made, to leave the generator where diffusers leaves it.
        long maskedBatch = Math.Max(initImage.shape[0], maskCondition.shape[0]);
        RandomDraws.SkipVaeSample([maskedBatch, Components.Vae.Config.LatentChannels, height / VaeScaleFactor, width / VaeScaleFactor],
            request.Generator, request.Generators, Components.Vae.WeightDtype(), device);

        var imageIds = LatentImageIds(latentH / 2, latentW / 2, device, dtype);
        latents = Denoise(latents, positive, negative, imageIds, GuidanceTensor(request, batch), scheduler, timesteps, request,
            progress, cancellationToken, new BlendHooks(mask, imageLatents, noise));
        return Decode(latents, request.OutputType, height, width, progress);
    }

    /// <summary>After each step: the known region (mask 0) becomes the image latents noised to the next timestep.</summary>
    private sealed class BlendHooks(Tensor mask, Tensor imageLatents, Tensor noise) : DenoiseHooks
    {
        public override Tensor? Mask { get => mask; set => mask = value ?? mask; }

        public override Tensor AfterStep(Tensor latents, int step, FlowMatchEulerDiscreteScheduler scheduler, Tensor timesteps)
        {
            var proper = imageLatents;
            // scale_noise takes the sigma at the scheduler's step index, which the step just advanced to the next timestep.
            if (step < timesteps.shape[0] - 1)
                proper = scheduler.ScaleNoise(imageLatents, timesteps[(step + 1)..(step + 2)], noise);
            return (1 - mask) * proper + mask * latents;
        }
    }
}
