using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion3;

/// <summary>
/// Image-to-image with Stable Diffusion 3 / 3.5 (diffusers' <c>StableDiffusion3Img2ImgPipeline</c>): the image is encoded,
/// noised to the timestep that <c>strength</c> selects, and denoised from there.
/// </summary>
public sealed class StableDiffusion3Img2ImgPipeline : StableDiffusion3PipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    public StableDiffusion3Img2ImgPipeline(StableDiffusion3Components components) : base(components) { }

    /// <summary>Loads a diffusers pipeline folder.</summary>
    public static StableDiffusion3Img2ImgPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusion3Components.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>An image-to-image pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static StableDiffusion3Img2ImgPipeline FromPipe(StableDiffusion3PipelineBase other) => new(other.Components);

    /// <inheritdoc />
    protected override int DefaultSteps => 50;

    /// <summary>Checks strength and the image, before any compute.</summary>
    internal static void CheckImageInputs(StableDiffusion3Img2ImgRequest request)
    {
        Strength.Check(request.Strength);
        if (request.Image is null && request.Latents is null)
            throw new ArgumentException("image is required.");
    }

    /// <summary>Generates images from <see cref="StableDiffusion3Img2ImgRequest.Image"/> (diffusers' <c>__call__</c>).</summary>
    public StableDiffusion3Output Generate(StableDiffusion3Img2ImgRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        int height = request.Height ?? DefaultSize, width = request.Width ?? DefaultSize;
        CheckInputs(request, height, width);
        CheckImageInputs(request);
        int steps = request.NumInferenceSteps ?? DefaultSteps;
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        bool cfg = request.GuidanceScale > 1;
        int batch = BatchSize(request) * request.NumImagesPerPrompt;
        var image = request.Image is null ? null : PreprocessImage(request.Image, height, width);
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (embeds, pooled, positive, positivePooled) = EncodePrompt(request, cfg);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        using var scheduler = CreateScheduler(request, steps, height, width);
        int total = (int)scheduler.Timesteps.shape[0];
        int start = Strength.StartStep(total, request.Strength);
        var timesteps = scheduler.Timesteps[start..];
        scheduler.SetBeginIndex(start);
        int remaining = total - start;
        if (remaining < 1)
            throw new ArgumentException($"strength {request.Strength} with {total} steps leaves {remaining} steps to run; raise strength or steps.");

        Tensor latents;
        if (request.Latents is { } given) latents = given.to(embeds.dtype, Components.Device, copy: true);
        else
        {
            var init = EncodeImage(image!, request, embeds.dtype, batch);
            var noise = RandnTensor(init.shape, request, embeds.dtype);
            var latentTimestep = timesteps[..1].repeat(batch);
            latents = scheduler.ScaleNoise(init, latentTimestep, noise).to(embeds.dtype);
        }
        latents = Denoise(latents, embeds, pooled, positive, positivePooled, scheduler, timesteps, request with { SkipGuidanceLayers = null },
            remaining, progress, cancellationToken);
        progress?.Report(new PipelineProgress("decode", 0, 1));
        var output = Decode(latents, request.OutputType, addShift: true);
        progress?.Report(new PipelineProgress("decode", 1, 1));
        return output;
    }

    /// <summary>diffusers' img2img <c>prepare_latents</c> up to the noise: VAE posterior sample, shift and scale, tiled to the batch.</summary>
    private Tensor EncodeImage(Tensor image, StableDiffusion3Img2ImgRequest request, ScalarType dtype, int batch)
    {
        image = image.to(dtype, Components.Device);
        Tensor init;
        var vae = Components.Vae;
        if (image.shape[1] == vae.Config.LatentChannels) init = image;
        else
        {
            init = SampleLatents(image, request);
            init = (init - (vae.Config.ShiftFactor ?? 0)) * vae.Config.ScalingFactor;
        }
        if (batch > init.shape[0] && batch % init.shape[0] == 0) init = cat(Enumerable.Repeat(init, (int)(batch / init.shape[0])).ToArray(), 0);
        else if (batch > init.shape[0])
            throw new ArgumentException($"Cannot duplicate an image batch of {init.shape[0]} to {batch} images.");
        return init;
    }
}
