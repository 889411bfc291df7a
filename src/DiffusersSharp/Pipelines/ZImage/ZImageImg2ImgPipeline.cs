using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.ZImage;

/// <summary>
/// Image-to-image with Z-Image (diffusers' <c>ZImageImg2ImgPipeline</c>): the image is preprocessed at its own size
/// rounded down to a multiple of 16, encoded by the VAE (a posterior sample drawn with the request's generator, then
/// <c>(latents − shift) · scaling</c>, in the prompt embeddings' dtype), repeated to the batch, noised with
/// <c>scale_noise</c> to the first timestep that <c>strength</c> keeps (noise drawn after the sample) and denoised over the
/// rest of the schedule. See <see cref="ZImagePipelineBase"/> for the loop.
/// </summary>
public sealed class ZImageImg2ImgPipeline : ZImagePipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    public ZImageImg2ImgPipeline(ZImageComponents components) : base(components) { }

    /// <summary>Loads a diffusers Z-Image pipeline folder or hub repo id (<see cref="ZImageComponents.FromPretrained"/>).</summary>
    public static ZImageImg2ImgPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = ZImageComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new ZImageImg2ImgPipeline(components);
    }

    /// <summary>An image-to-image pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static ZImageImg2ImgPipeline FromPipe(ZImagePipelineBase other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return new ZImageImg2ImgPipeline(other.Components);
    }

    /// <summary>Generates images from <see cref="ZImageImg2ImgRequest.Image"/> (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public ZImageOutput Generate(ZImageImg2ImgRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        Strength.Check(request.Strength);
        if (request.Image is null && request.Latents is null)
            throw new ArgumentException("image is required for image-to-image (or latents to start from).");
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        // diffusers preprocesses the image at its own size (no height / width given to the processor), even with latents.
        var image = request.Image is { } input ? Preprocess(input) : null;
        int height = request.Height ?? (int?)image?.shape[2] ?? DefaultSize, width = request.Width ?? (int?)image?.shape[3] ?? DefaultSize;
        CheckInputs(request, height, width);
        int batch = PromptCount(request) * request.NumImagesPerPrompt;
        if (image is not null && request.Latents is null)
        {
            if (image.shape[2] != height || image.shape[3] != width)
                throw new ArgumentException($"image is {image.shape[3]}x{image.shape[2]} after preprocessing (its size rounded down to multiples of {SizeMultiple}); " +
                    $"diffusers encodes it at that size, so height and width must be that too, got {width}x{height}. Resize the image instead.");
            Strength.CheckRepeatsToBatch(image.shape[0], batch);
        }
        int total = request.Sigmas?.Length ?? request.NumInferenceSteps ?? DefaultSteps;
        int start = Strength.CheckedStartStep(total, request.Strength);

        var device = Components.Device;
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (positive, negative) = EncodePrompts(request, cancellationToken);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        var (latentH, latentW) = LatentSize(height, width);
        using var scheduler = CreateScheduler(request, (latentH / 2) * (latentW / 2));
        scheduler.SetBeginIndex(start); // get_timesteps
        var timesteps = scheduler.Timesteps[start..];
        // prepare_latents, in the prompt embeddings' dtype: given latents as they are; else the image's VAE sample, then
        // the noise, scale_noise at the first kept timestep.
        var dtype = positive[0].dtype;
        Tensor latents;
        if (request.Latents is { } given) latents = given.to(dtype, device, copy: true);
        else
        {
            var vae = Components.Vae;
            Components.Activate("vae");
            var sample = RandomDraws.SampleVae(vae, image!.to(dtype, device), request.Generator, request.Generators, device);
            var imageLatents = (sample - (vae.Config.ShiftFactor ?? 0.0)) * vae.Config.ScalingFactor;
            if (batch > imageLatents.shape[0]) imageLatents = cat(Enumerable.Repeat(imageLatents, (int)(batch / imageLatents.shape[0])).ToArray(), 0);
            var noise = RandomDraws.Randn([batch, Components.Transformer.Config.InChannels, latentH, latentW], request.Generator, request.Generators, dtype, device);
            latents = scheduler.ScaleNoise(imageLatents, timesteps[..1].repeat(batch), noise);
        }
        latents = Denoise(latents, positive, negative, scheduler, timesteps, request, progress, cancellationToken);
        return Decode(latents, request.OutputType, progress);
    }

    /// <summary>diffusers' <c>image_processor.preprocess(image)</c> without a size, to float32; only RGB images are taken.</summary>
    private Tensor Preprocess(PipelineImage input)
    {
        if (input.Tensor is { } t && (t.dim() != 4 || t.shape[1] != 3))
            throw new ArgumentException($"image must be RGB: an 8-bit image or a [N, 3, H, W] tensor in [0, 1], got a tensor [{string.Join(", ", t.shape)}].");
        var image = (input.Image is { } pixels ? ImageProcessor.Preprocess(pixels) : ImageProcessor.Preprocess(input.Tensor!)).to(ScalarType.Float32);
        if (image.shape[1] != 3)
            throw new ArgumentException($"image must be RGB (3 channels), got {image.shape[1]}; convert it first (ImageFile.LoadRgb).");
        return image;
    }
}
