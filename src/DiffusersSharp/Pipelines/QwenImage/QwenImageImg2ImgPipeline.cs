using DiffusersSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.QwenImage;

/// <summary>
/// Image-to-image with Qwen-Image (diffusers' <c>QwenImageImg2ImgPipeline</c>): the image is resized to height × width,
/// encoded by the VAE as one frame (a posterior sample drawn with the request's generator, then
/// <c>(latents − mean) · (1 / std)</c>, in the prompt embeddings' dtype), repeated to the batch, noised with
/// <c>scale_noise</c> to the first timestep that <c>strength</c> keeps (noise drawn after the sample), packed and denoised
/// over the rest of the schedule. See <see cref="QwenImagePipelineBase"/> for the loop.
/// </summary>
public sealed class QwenImageImg2ImgPipeline : QwenImagePipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    public QwenImageImg2ImgPipeline(QwenImageComponents components) : base(components) { }

    /// <summary>Loads a diffusers Qwen-Image pipeline folder or hub repo id (<see cref="QwenImageComponents.FromPretrained"/>).</summary>
    public static QwenImageImg2ImgPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = QwenImageComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new QwenImageImg2ImgPipeline(components);
    }

    /// <summary>An image-to-image pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static QwenImageImg2ImgPipeline FromPipe(QwenImagePipelineBase other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return new QwenImageImg2ImgPipeline(other.Components);
    }

    /// <summary>Generates images from <see cref="QwenImageImg2ImgRequest.Image"/> (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public QwenImageOutput Generate(QwenImageImg2ImgRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        if (request.Image is null && request.Latents is null)
            throw new ArgumentException("image is required for image-to-image (or latents to start from).");
        int height = request.Height ?? DefaultSize, width = request.Width ?? DefaultSize;
        int start = CheckImageRequest(request, height, width);
        int batch = PromptCount(request) * request.NumImagesPerPrompt;

        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        // diffusers preprocesses the image (resized to height x width) before anything else, even with latents given.
        var image = request.Image?.Preprocess(ImageProcessor, height, width).to(ScalarType.Float32);
        if (image is not null && request.Latents is null) Strength.CheckRepeatsToBatch(image.shape[0], batch);

        var device = Components.Device;
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (positive, negative) = EncodePrompts(request, cancellationToken);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        var (latentH, latentW) = LatentSize(height, width);
        using var scheduler = CreateScheduler(request, (latentH / 2) * (latentW / 2));
        scheduler.SetBeginIndex(start); // get_timesteps
        var timesteps = scheduler.Timesteps[start..];
        // prepare_latents, in the prompt embeddings' dtype: given latents as they are; else the image's VAE sample
        // (normalised), then the noise, scale_noise at the first kept timestep, packed.
        var dtype = positive.Embeds.dtype;
        Tensor latents;
        if (request.Latents is { } given) latents = given.to(dtype, device, copy: true);
        else
        {
            var imageLatents = EncodeImageLatents(image!, request, dtype, batch);
            var noise = RandomDraws.Randn([batch, 1, Components.Vae.Config.ZDim, latentH, latentW], request.Generator, request.Generators, dtype, device);
            latents = Flux.FluxPipelineBase.PackLatents(scheduler.ScaleNoise(imageLatents, timesteps[..1].repeat(batch), noise.squeeze(1)));
        }
        latents = Denoise(latents, positive, negative, scheduler, timesteps, (1, latentH / 2, latentW / 2), request, progress, cancellationToken);
        return Decode(latents, request.OutputType, height, width, progress);
    }
}
