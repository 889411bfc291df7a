using DiffusersSharp.Pipelines.PixArt;
using DiffusersSharp.Schedulers;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Sana;

/// <summary>
/// What SANA-Sprint's text-to-image and image-to-image pipelines share: SCMScheduler, no negative side, the embedded
/// guidance scale, and the denoising loop (per step the TrigFlow angle t turned into the transformer's time
/// <c>sin t / (sin t + cos t)</c>, the input and output rescaled as diffusers does, SCMScheduler's step; the last step's
/// denoised prediction / sigma_data is the result).
/// </summary>
public abstract class SanaSprintPipelineBase : SanaPipelineBase
{
    /// <summary>Takes a reference on <paramref name="components"/>; they are freed when the last pipeline using them is disposed.</summary>
    private protected SanaSprintPipelineBase(SanaComponents components) : base(components) { }

    /// <inheritdoc />
    // diffusers' SANA-Sprint pipelines bin only at sample_size 32 (ASPECT_RATIO_1024_BIN).
    private protected override IReadOnlyList<(string Ratio, int Height, int Width)> AspectRatioBins(int sampleSize) => sampleSize == 32
        ? PixArtAspectRatios.ForSana(32)
        : throw new ArgumentException($"SANA-Sprint's resolution binning needs a transformer of sample_size 32, this one has {sampleSize} (diffusers: Invalid sample size); turn it off.");

    /// <summary>The components' SCMScheduler (a fresh one per call).</summary>
    /// <exception cref="ArgumentException">The components' scheduler is another class.</exception>
    private protected static SCMScheduler Scm(SanaScheduler schedulers) => schedulers.Scm
        ?? throw new ArgumentException($"The SANA-Sprint pipelines run SCMScheduler; these components' scheduler is {schedulers.ClassName} (use SanaPipeline).");

    /// <summary>The embedded guidance: <c>torch.full([1], scale, float32).expand(B).to(prompt_embeds.dtype) * guidance_embeds_scale</c>.</summary>
    private protected Tensor Guidance(double scale, long batch, ScalarType embedsDtype) =>
        full(batch, scale, dtype: ScalarType.Float32, device: Components.Device).to(embedsDtype) * Components.Transformer.Config.GuidanceEmbedsScale;

    /// <summary>
    /// The denoising loop from angle <paramref name="first"/> of <paramref name="scm"/>'s schedule (set, with its begin
    /// index) to the end, starting from <paramref name="latents"/> (the caller's scope owns it); returns the last denoised
    /// prediction / sigma_data. The step callback sees the loop's step number from 0.
    /// </summary>
    private protected Tensor Denoise(SCMScheduler scm, int first, Tensor latents, Tensor embeds, Tensor mask, SanaSprintRequest r,
        IProgress<PipelineProgress>? progress, CancellationToken cancellationToken)
    {
        var angles = scm.TimestepValues.ToArray();
        double sigmaData = scm.Config.SigmaData;
        var device = Components.Device;
        var transformer = Components.Transformer;
        long batch = latents.shape[0];
        var guidance = Guidance(r.GuidanceScale, batch, embeds.dtype);
        var generator = r.Generator ?? r.Generators?[0];
        var transformerDtype = transformer.Dtype;
        Tensor? denoised = null;
        int steps = angles.Length - 1 - first;
        Components.Activate("transformer");
        progress?.Report(new PipelineProgress("denoise", 0, steps));
        for (int i = 0; i < steps; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            float t = angles[first + i];
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
        return denoised! / sigmaData;
    }

    /// <summary>What both SANA-Sprint pipelines check before any compute.</summary>
    private protected override void CheckInputs(SanaRequest r, int height, int width)
    {
        var sprint = (SanaSprintRequest)r;
        var config = Components.Transformer.Config;
        CheckSizeAndText(r, height, width);
        if (r.NegativePrompt is not null || r.NegativePromptEmbeds is not null)
            throw new ArgumentException("SANA-Sprint has no negative prompt: its guidance scale is embedded in the transformer (diffusers' SANA-Sprint pipelines take none).");
        if (!config.GuidanceEmbeds)
            throw new ArgumentException("The SANA-Sprint pipelines embed the guidance scale, which this transformer does not take (guidance_embeds false: a Sana model; use SanaPipeline).");
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
