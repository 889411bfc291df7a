using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion3;

/// <summary>
/// Text-to-image with Stable Diffusion 3 / 3.5 (diffusers' <c>StableDiffusion3Pipeline</c>): prompt -> CLIP-L, CLIP-G,
/// T5 embeddings -> noise -> flow-matching Euler steps over the MMDiT (CFG-batched, optional skip-layer guidance) -> VAE.
/// </summary>
public sealed class StableDiffusion3Pipeline : StableDiffusion3PipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    public StableDiffusion3Pipeline(StableDiffusion3Components components) : base(components) { }

    /// <summary>Loads a diffusers pipeline folder.</summary>
    public static StableDiffusion3Pipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusion3Components.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new StableDiffusion3Pipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>A text-to-image pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static StableDiffusion3Pipeline FromPipe(StableDiffusion3PipelineBase other) => new(other.Components);

    /// <inheritdoc />
    protected override int DefaultSteps => 28;

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    public StableDiffusion3Output Generate(StableDiffusion3Request request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        int height = request.Height ?? DefaultSize, width = request.Width ?? DefaultSize;
        CheckInputs(request, height, width);
        int steps = request.NumInferenceSteps ?? DefaultSteps;
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        bool cfg = request.GuidanceScale > 1;
        int batch = BatchSize(request) * request.NumImagesPerPrompt;
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (embeds, pooled, positive, positivePooled) = EncodePrompt(request, cfg);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        var latents = InitialLatents(request, batch, height, width, embeds.dtype);

        using var scheduler = CreateScheduler(request, steps, height, width);
        var timesteps = scheduler.Timesteps;
        latents = Denoise(latents, embeds, pooled, positive, positivePooled, scheduler, timesteps, request,
            (int)timesteps.shape[0], progress, cancellationToken);
        progress?.Report(new PipelineProgress("decode", 0, 1));
        var output = Decode(latents, request.OutputType, addShift: true);
        progress?.Report(new PipelineProgress("decode", 1, 1));
        return output;
    }
}
