using DiffusersSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// Inpainting with FLUX.1-Fill (diffusers' <c>FluxFillPipeline</c>): the transformer takes, per packed token, the noisy
/// latents (64), the packed latents of the masked image (the image with the white mask region set to 0, VAE-encoded
/// with a posterior sample: 64) and the mask itself at pixel resolution, each latent pixel's 8 × 8 mask pixels as
/// channels, packed 2 × 2 (256): in_channels 384. The latents start as in image-to-image (image latents noised to the
/// first timestep <c>strength</c> keeps; strength 1 is pure noise), and no blending happens between steps.
/// </summary>
public sealed class FluxFillPipeline : FluxPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    public FluxFillPipeline(FluxComponents components) : base(components) { }

    /// <summary>Loads a diffusers Flux Fill pipeline folder or hub repo id.</summary>
    public static FluxFillPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = FluxComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new FluxFillPipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>A Fill pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static FluxFillPipeline FromPipe(FluxPipelineBase other) => new(other.Components);

    /// <summary>diffusers' Fill default number of steps (50).</summary>
    public const int DefaultFillSteps = 50;

    /// <inheritdoc />
    public override int DefaultStepCount => DefaultFillSteps;

    /// <summary>Fill's noise latents are the VAE's channels (diffusers: <c>vae.config.latent_channels</c>), not in_channels / 4.</summary>
    protected override int LatentChannels => Components.Vae.Config.LatentChannels;

    /// <summary>Repaints <see cref="FluxImg2ImgRequest.Image"/> where <see cref="FluxInpaintRequest.MaskImage"/> is white (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid, or the transformer is not a Fill transformer; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public FluxOutput Generate(FluxFillRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        int channels = LatentChannels, maskChannels = VaeScaleFactor * VaeScaleFactor;
        int expectedIn = 4 * (2 * channels + maskChannels);
        if (Components.Transformer.Config.InChannels != expectedIn)
            throw new ArgumentException($"Flux Fill needs a transformer with in_channels {expectedIn} (noise, masked image and mask tokens), this one has {Components.Transformer.Config.InChannels}: load a FLUX.1-Fill model.");
        int height = request.Height ?? DefaultSize, width = request.Width ?? DefaultSize;
        CheckInputs(request, height, width);
        CheckStrength(request);
        if (request.TrueCfgScale != 1.0 || request.NegativePrompt is not null || request.NegativePrompt2 is not null || request.NegativePromptEmbeds is not null)
            throw new ArgumentException("Flux Fill has no true CFG or negative prompt (diffusers' FluxFillPipeline takes neither); guidance_scale is its embedded guidance.");
        if (request.PaddingMaskCrop is not null)
            throw new ArgumentException("Flux Fill has no padding_mask_crop (diffusers' FluxFillPipeline takes none); FluxInpaintPipeline has it.");
        if (request.Image is null) throw new ArgumentException("image is required for Flux Fill (diffusers preprocesses it in every call).");
        if (request.MaskImage is null) throw new ArgumentException("mask_image is required with image (diffusers: 'Please provide mask_image when passing image').");
        int batch = BatchSize(request);
        var (latentH, latentW) = LatentSize(height, width);
        long[] packedShape = [batch, (latentH / 2) * (latentW / 2), channels * 4];
        if (request.Latents is { } given && !given.shape.SequenceEqual(packedShape))
            throw new ArgumentException($"latents must be packed [{string.Join(", ", packedShape)}], got [{string.Join(", ", given.shape)}].");

        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        var initImage = PreprocessImage(request.Image, height, width);
        CheckImageTensor(initImage, batch, height, width, "image");
        if (initImage.shape[1] == Components.Vae.Config.LatentChannels)
            throw new ArgumentException("image must be pixels for Flux Fill (the masked image is made from it), not latents.");
        var maskImage = PreprocessMask(request.MaskImage, height, width);
        CheckImageTensor(maskImage, batch, height, width, "mask");
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (positive, negative) = EncodePrompts(request, batch);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        var dtype = positive.PromptEmbeds.dtype;
        using var scheduler = CreateScheduler(request, (latentH / 2) * (latentW / 2));
        var timesteps = StrengthTimesteps(scheduler, request.Strength);
        Tensor latents;
        if (request.Latents is { } initial) latents = initial.to(dtype, device, copy: true); // diffusers then skips the image encode
        else
        {
            // prepare_latents: the posterior sample (draw 1), then the noise (draw 2), scale_noise at the first kept timestep.
            var imageLatents = EncodeImage(initImage, request, dtype, batch);
            var noise = RandomDraws.Randn([batch, channels, latentH, latentW], request.Generator, request.Generators, dtype, device);
            latents = PackLatents(scheduler.ScaleNoise(imageLatents, timesteps[..1].repeat(batch), noise));
        }

        // prepare_mask_latents: the masked image's posterior sample (draw 3), packed; the mask's 8 x 8 pixel blocks as channels, packed.
        var maskedImage = (initImage * (1 - maskImage)).to(dtype, device);
        var maskedLatents = PackLatents(EncodeImage(maskedImage, request, dtype, batch));
        var mask = maskImage.to(dtype, device);
        if (mask.shape[0] < batch) mask = mask.repeat(batch / mask.shape[0], 1, 1, 1);
        int f = VaeScaleFactor;
        mask = mask[.., 0].view(batch, latentH, f, latentW, f).permute(0, 2, 4, 1, 3).reshape(batch, maskChannels, latentH, latentW);
        var condition = cat([maskedLatents, PackLatents(mask)], -1);

        var imageIds = LatentImageIds(latentH / 2, latentW / 2, device, dtype);
        latents = Denoise(latents, positive, negative, imageIds, GuidanceTensor(request, batch), scheduler, timesteps, request,
            progress, cancellationToken, new DenoiseHooks { ChannelCondition = condition });
        return Decode(latents, request.OutputType, height, width, progress);
    }
}
