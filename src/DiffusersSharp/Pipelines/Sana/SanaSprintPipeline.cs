using DiffusersSharp.Pipelines.PixArt;
using DiffusersSharp.Schedulers;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Sana;

/// <summary>
/// Few-step text-to-image with SANA-Sprint (diffusers' <c>SanaSprintPipeline</c>; e.g.
/// Efficient-Large-Model/Sana_Sprint_1.6B_1024px_diffusers): Sana's prompt encoding (no negative side), float32 noise
/// scaled by the SCM scheduler's sigma_data, and per step the TrigFlow angle t turned into the transformer's time
/// <c>sin t / (sin t + cos t)</c>, the input and output rescaled as diffusers does, the guidance scale embedded
/// (times guidance_embeds_scale), and SCMScheduler's step; the last step's denoised prediction is decoded.
/// </summary>
public sealed class SanaSprintPipeline : SanaPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them; they are freed when the last user is done).</summary>
    public SanaSprintPipeline(SanaComponents components) : base(components) { }

    /// <summary>Loads a diffusers SANA-Sprint pipeline folder or hub repo id.</summary>
    public static SanaSprintPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = SanaComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new SanaSprintPipeline(components);
    }

    /// <inheritdoc />
    // diffusers' SanaSprintPipeline bins only at sample_size 32 (ASPECT_RATIO_1024_BIN).
    private protected override IReadOnlyList<(string Ratio, int Height, int Width)> AspectRatioBins(int sampleSize) => sampleSize == 32
        ? PixArtAspectRatios.ForSana(32)
        : throw new ArgumentException($"SANA-Sprint's resolution binning needs a transformer of sample_size 32, this one has {sampleSize} (diffusers: Invalid sample size); turn it off.");

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
        var scm = schedulers.Scm
            ?? throw new ArgumentException($"SanaSprintPipeline runs SCMScheduler; these components' scheduler is {schedulers.ClassName} (use SanaPipeline).");
        CheckInputs(r, height, width);
        using var mode = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        var transformer = Components.Transformer;

        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (embeds, mask, _, _) = EncodeCore(r, cfg: false);
        progress?.Report(new PipelineProgress("encode", 1, 1));

        scm.SetTimesteps(r.NumInferenceSteps, r.MaxTimesteps, r.IntermediateTimesteps);
        var angles = scm.TimestepValues.ToArray();
        double sigmaData = scm.Config.SigmaData;
        var latents = (r.Latents is { } given
            ? given.to(ScalarType.Float32, device)
            : RandomDraws.Randn(LatentShape(r, height, width), r.Generator, r.Generators, ScalarType.Float32, device)) * sigmaData;
        long batch = latents.shape[0];
        // torch.full([1], scale, float32).expand(B).to(prompt_embeds.dtype) * guidance_embeds_scale.
        var guidance = full(batch, r.GuidanceScale, dtype: ScalarType.Float32, device: device).to(embeds.dtype) * transformer.Config.GuidanceEmbedsScale;
        var generator = r.Generator ?? r.Generators?[0];
        var transformerDtype = transformer.Dtype;
        Tensor? denoised = null;
        int steps = angles.Length - 1;
        Components.Activate("transformer");
        progress?.Report(new PipelineProgress("denoise", 0, steps));
        for (int i = 0; i < steps; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            float t = angles[i];
            using (var stepScope = NewDisposeScope())
            {
                var timestep = full(batch, t, dtype: ScalarType.Float32, device: device);
                var modelInput = latents / sigmaData;
                var scmTimestep = timestep.sin() / (timestep.cos() + timestep.sin());
                var e = scmTimestep.view(-1, 1, 1, 1);
                var norm = (e.pow(2) + (1 - e).pow(2)).sqrt();
                modelInput = modelInput * norm;
                var prediction = transformer.forward(modelInput.to(transformerDtype), embeds.to(transformerDtype), scmTimestep, mask, guidance);
                prediction = ((1 - 2 * e) * modelInput + (1 - 2 * e + 2 * e.pow(2)) * prediction) / norm;
                prediction = prediction.to(ScalarType.Float32) * sigmaData;
                var (next, x0) = scm.Step(prediction, latents, generator);
                next.MoveToOuterDisposeScope();
                x0.MoveToOuterDisposeScope();
                latents.Dispose();
                denoised?.Dispose();
                (latents, denoised) = (next, x0);
            }
            progress?.Report(new PipelineProgress("denoise", i + 1, steps));
            if (StepEndContext.Run(r.CallbackOnStepEnd, i, steps, t, r.GuidanceScale, ref latents, ref embeds)) break;
        }

        var final = denoised! / sigmaData;
        if (r.OutputType == OutputType.Latent)
            return new SanaOutput(null, final.DetachFromDisposeScope());
        var (images, output) = DecodeAndFinish(progress, () => Decode(final, r.OutputType, requested));
        return new SanaOutput(images, output);
    }

    private protected override void CheckInputs(SanaRequest r, int height, int width)
    {
        var sprint = (SanaSprintRequest)r;
        var config = Components.Transformer.Config;
        CheckSizeAndText(r, height, width);
        if (r.NegativePrompt is not null || r.NegativePromptEmbeds is not null)
            throw new ArgumentException("SANA-Sprint has no negative prompt: its guidance scale is embedded in the transformer (diffusers' SanaSprintPipeline takes none).");
        if (!config.GuidanceEmbeds)
            throw new ArgumentException("SanaSprintPipeline embeds the guidance scale, which this transformer does not take (guidance_embeds false: a Sana model; use SanaPipeline).");
        if (sprint.IntermediateTimesteps is not null && r.NumInferenceSteps != 2)
            throw new ArgumentException($"intermediate_timesteps applies to 2 steps only (diffusers raises the same); set it to null for {r.NumInferenceSteps} steps.");
        if (!double.IsFinite(sprint.MaxTimesteps) || sprint.MaxTimesteps <= 0)
            throw new ArgumentException($"max_timesteps must be a positive angle, got {sprint.MaxTimesteps}.");
        // No negative side: the shared checks run as for an unguided request.
        MaskedPromptInputs.Check(r with { GuidanceScale = 1.0 }, config.CaptionChannels, Components.TextEncoder is not null && Components.Tokenizer is not null,
            "Gemma", LatentShape(r, height, width));
        if (!double.IsFinite(r.GuidanceScale))
            throw new ArgumentException($"guidance_scale must be a finite number, got {r.GuidanceScale}.");
    }
}
