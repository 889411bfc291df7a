using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.QwenImage;

/// <summary>
/// Text-to-image with Qwen-Image (diffusers' <c>QwenImagePipeline</c>; e.g. Qwen/Qwen-Image with 50 steps and
/// true_cfg_scale 4): noise [B, 1, z, H/8, W/8] from the request's generator, packed into 2×2 patches, denoised over the
/// whole schedule, decoded. See <see cref="QwenImagePipelineBase"/> for the data flow.
/// </summary>
public sealed class QwenImagePipeline : QwenImagePipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them; they are freed when the last user is done).</summary>
    public QwenImagePipeline(QwenImageComponents components) : base(components) { }

    /// <summary>Loads a diffusers Qwen-Image pipeline folder or hub repo id (<see cref="QwenImageComponents.FromPretrained"/>).</summary>
    public static QwenImagePipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = QwenImageComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new QwenImagePipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>A text-to-image pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static QwenImagePipeline FromPipe(QwenImagePipelineBase other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return new QwenImagePipeline(other.Components);
    }

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public QwenImageOutput Generate(QwenImageRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        int height = request.Height ?? DefaultSize, width = request.Width ?? DefaultSize;
        CheckInputs(request, height, width);

        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (positive, negative) = EncodePrompts(request, cancellationToken);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        // prepare_latents: noise [B, 1, z, h, w] in the prompt embeddings' dtype (or the given packed latents), packed.
        var (latentH, latentW) = LatentSize(height, width);
        int batch = PromptCount(request) * request.NumImagesPerPrompt;
        var dtype = positive.Embeds.dtype;
        Tensor latents = request.Latents is { } given
            ? given.to(dtype, device, copy: true)
            : Flux.FluxPipelineBase.PackLatents(RandomDraws.Randn([batch, 1, Components.Vae.Config.ZDim, latentH, latentW], request.Generator, request.Generators, dtype, device).squeeze(1));
        using var scheduler = CreateScheduler(request, (latentH / 2) * (latentW / 2));
        scheduler.SetBeginIndex(0);
        latents = Denoise(latents, positive, negative, scheduler, scheduler.Timesteps, (1, latentH / 2, latentW / 2), request, progress, cancellationToken);
        return Decode(latents, request.OutputType, height, width, progress);
    }
}
