using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.ZImage;

/// <summary>
/// Text-to-image with Z-Image (diffusers' <c>ZImagePipeline</c>; e.g. Tongyi-MAI/Z-Image-Turbo with 8 or 9 steps and
/// guidance 0): noise [B, 16, H/8, W/8] from the request's generator, denoised over the whole schedule, decoded. See
/// <see cref="ZImagePipelineBase"/> for the data flow.
/// </summary>
public sealed class ZImagePipeline : ZImagePipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them; they are freed when the last user is done).</summary>
    public ZImagePipeline(ZImageComponents components) : base(components) { }

    /// <summary>Loads a diffusers Z-Image pipeline folder or hub repo id (<see cref="ZImageComponents.FromPretrained"/>).</summary>
    public static ZImagePipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = ZImageComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new ZImagePipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>A text-to-image pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static ZImagePipeline FromPipe(ZImagePipelineBase other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return new ZImagePipeline(other.Components);
    }

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public ZImageOutput Generate(ZImageRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
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

        // prepare_latents: float32 noise (or the given latents, as they are).
        var (latentH, latentW) = LatentSize(height, width);
        Tensor latents = request.Latents is { } given
            ? given.to(given.dtype, device, copy: true)
            : RandomDraws.Randn([positive.Count, Components.Transformer.Config.InChannels, latentH, latentW], request.Generator, request.Generators,
                ScalarType.Float32, device);
        using var scheduler = CreateScheduler(request, (latentH / 2) * (latentW / 2));
        latents = Denoise(latents, positive, negative, scheduler, scheduler.Timesteps, request, progress, cancellationToken);
        return Decode(latents, request.OutputType, progress);
    }
}
