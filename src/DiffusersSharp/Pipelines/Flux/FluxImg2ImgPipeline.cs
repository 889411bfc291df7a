using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// Image-to-image with Flux.1 (diffusers' <c>FluxImg2ImgPipeline</c>): the image is resized to the requested size (a
/// multiple of 16), encoded by the VAE (a posterior sample drawn with the request's generator, then
/// <c>(latents − shift) · scaling</c>), noised with <c>scale_noise</c> to the first timestep that <c>strength</c> keeps
/// (noise drawn after the posterior sample, as diffusers draws it), packed, and denoised over the rest of the schedule.
/// </summary>
public sealed class FluxImg2ImgPipeline : FluxPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    public FluxImg2ImgPipeline(FluxComponents components) : base(components) { }

    /// <summary>Loads a diffusers Flux pipeline folder or hub repo id.</summary>
    public static FluxImg2ImgPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = FluxComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new FluxImg2ImgPipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>An image-to-image pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static FluxImg2ImgPipeline FromPipe(FluxPipelineBase other) => new(other.Components);

    /// <summary>Generates images from <see cref="FluxImg2ImgRequest.Image"/> (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public FluxOutput Generate(FluxImg2ImgRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        int height = request.Height ?? DefaultSize, width = request.Width ?? DefaultSize;
        CheckInputs(request, height, width);
        CheckStrength(request);
        if (request.Image is null && request.Latents is null)
            throw new ArgumentException("image is required for image-to-image (or packed latents to start from).");
        int batch = BatchSize(request);
        var (latentH, latentW) = LatentSize(height, width);
        long[] packedShape = [batch, (latentH / 2) * (latentW / 2), LatentChannels * 4];
        if (request.Latents is { } given && !given.shape.SequenceEqual(packedShape))
            throw new ArgumentException($"latents must be packed [{string.Join(", ", packedShape)}], got [{string.Join(", ", given.shape)}].");

        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        // diffusers preprocesses the image even when latents are given (they then skip its encoding).
        var image = request.Image is null ? null : PreprocessImage(request.Image, height, width);
        if (image is not null) CheckImageTensor(image, batch, height, width, "image");
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (positive, negative) = EncodePrompts(request, batch);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        var dtype = positive.PromptEmbeds.dtype;
        using var scheduler = CreateScheduler(request, (latentH / 2) * (latentW / 2));
        var timesteps = StrengthTimesteps(scheduler, request.Strength);
        Tensor latents;
        if (request.Latents is { } initial) latents = initial.to(dtype, device, copy: true);
        else
        {
            // prepare_latents: the posterior sample (draw 1), then the noise (draw 2), scale_noise at the first kept timestep.
            var imageLatents = EncodeImage(image!, request, dtype, batch);
            var noise = RandomDraws.Randn([batch, LatentChannels, latentH, latentW], request.Generator, request.Generators, dtype, device);
            latents = PackLatents(scheduler.ScaleNoise(imageLatents, timesteps[..1].repeat(batch), noise));
        }
        var imageIds = LatentImageIds(latentH / 2, latentW / 2, device, dtype);
        latents = Denoise(latents, positive, negative, imageIds, GuidanceTensor(request, batch), scheduler, timesteps, request,
            progress, cancellationToken);
        return Decode(latents, request.OutputType, height, width, progress);
    }
}
