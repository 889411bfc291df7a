using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// Text-to-image with Flux.1 (diffusers' <c>FluxPipeline</c>): prompt -> CLIP-L pooled + T5 embeddings -> noise drawn at
/// [B, 16, 2·(H/16), 2·(W/16)] and packed into 2×2 patches -> flow-matching Euler steps over the transformer
/// (sigmas <c>linspace(1, 1/N, N)</c>, resolution-dependent shift mu; the guidance scale goes into the guidance embedding;
/// optional true CFG with a negative prompt) -> unpack -> VAE decode of <c>latents / scaling_factor + shift_factor</c>.
/// </summary>
public sealed class FluxPipeline : FluxPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them; they are freed when the last user is done).</summary>
    public FluxPipeline(FluxComponents components) : base(components) { }

    /// <summary>Loads a diffusers Flux pipeline folder or hub repo id.</summary>
    public static FluxPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = FluxComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new FluxPipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>A text-to-image pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static FluxPipeline FromPipe(FluxPipelineBase other) => new(other.Components);

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public FluxOutput Generate(FluxRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        int height = request.Height ?? DefaultSize, width = request.Width ?? DefaultSize;
        CheckInputs(request, height, width);
        int batch = BatchSize(request);
        var (latentH, latentW) = LatentSize(height, width);
        long[] packedShape = [batch, (latentH / 2) * (latentW / 2), LatentChannels * 4];
        if (request.Latents is { } given && !given.shape.SequenceEqual(packedShape))
            throw new ArgumentException($"latents must be packed [{string.Join(", ", packedShape)}], got [{string.Join(", ", given.shape)}].");

        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (positive, negative) = EncodePrompts(request, batch);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        var dtype = positive.PromptEmbeds.dtype;
        Tensor latents = request.Latents is { } initial
            ? initial.to(dtype, device, copy: true)
            : PackLatents(RandomDraws.Randn([batch, LatentChannels, latentH, latentW], request.Generator, request.Generators, dtype, device));
        var imageIds = LatentImageIds(latentH / 2, latentW / 2, device, dtype);

        using var scheduler = CreateScheduler(request, (int)latents.shape[1]);
        scheduler.SetBeginIndex(0);
        latents = Denoise(latents, positive, negative, imageIds, GuidanceTensor(request, batch), scheduler, scheduler.Timesteps, request,
            progress, cancellationToken);
        return Decode(latents, request.OutputType, height, width, progress);
    }
}
