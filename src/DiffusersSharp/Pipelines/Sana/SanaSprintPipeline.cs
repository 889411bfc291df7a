using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Sana;

/// <summary>
/// Few-step text-to-image with SANA-Sprint (diffusers' <c>SanaSprintPipeline</c>; e.g.
/// Efficient-Large-Model/Sana_Sprint_1.6B_1024px_diffusers): Sana's prompt encoding (no negative side), float32 noise
/// scaled by the SCM scheduler's sigma_data, then SANA-Sprint's loop (<see cref="SanaSprintPipelineBase"/>); the last
/// step's denoised prediction is decoded.
/// </summary>
public sealed class SanaSprintPipeline : SanaSprintPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them; they are freed when the last user is done).</summary>
    public SanaSprintPipeline(SanaComponents components) : base(components) { }

    /// <summary>Loads a diffusers SANA-Sprint pipeline folder or hub repo id.</summary>
    public static SanaSprintPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = SanaComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new SanaSprintPipeline(components);
    }

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="NotSupportedException">clean_caption was asked for.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public SanaOutput Generate(SanaSprintRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        var r = request;
        var (height, width, requested) = BinnedSize(r);
        using var schedulers = Components.CreateScheduler();
        var scm = Scm(schedulers);
        CheckInputs(r, height, width);
        using var mode = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;

        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (embeds, mask, _, _) = EncodeCore(r, cfg: false);
        progress?.Report(new PipelineProgress("encode", 1, 1));

        scm.SetTimesteps(r.NumInferenceSteps, r.MaxTimesteps, r.IntermediateTimesteps);
        var latents = (r.Latents is { } given
            ? given.to(ScalarType.Float32, device)
            : RandomDraws.Randn(LatentShape(r, height, width), r.Generator, r.Generators, ScalarType.Float32, device)) * scm.Config.SigmaData;
        var final = Denoise(scm, 0, latents, embeds, mask, r, progress, cancellationToken);
        if (r.OutputType == OutputType.Latent)
            return new SanaOutput(null, final.DetachFromDisposeScope());
        var (images, output) = DecodeAndFinish(progress, () => Decode(final, r.OutputType, requested));
        return new SanaOutput(images, output);
    }
}
