using DiffusersSharp.Models.ControlNets;
using TorchSharp;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Pipelines.StableDiffusion3;

/// <summary>
/// What diffusers' SD3 ControlNet pipelines share (<c>StableDiffusion3ControlNetPipeline</c> and
/// <c>StableDiffusion3ControlNetInpaintingPipeline</c>): the ControlNet checks, the request's per-ControlNet settings,
/// and the run itself (prompt encoding, control latents, timesteps, noise, the denoising loop with the ControlNets'
/// residuals, the decode). The pipelines differ in how they make the control latents and the ControlNets' pooled projections.
/// </summary>
public abstract class StableDiffusion3ControlNetPipelineBase : StableDiffusion3PipelineBase
{
    /// <summary>Wraps loaded components that must hold ControlNets of <paramref name="extraConditioningChannels"/> extra channels.</summary>
    /// <param name="components">The components (a reference is taken on them).</param>
    /// <param name="extraConditioningChannels">What the pipeline gives each ControlNet beyond the latent channels.</param>
    /// <param name="several">Whether the pipeline runs several ControlNets (diffusers' SD3MultiControlNetModel).</param>
    /// <param name="pipelineName">diffusers' pipeline name, for messages.</param>
    /// <exception cref="ArgumentException">The components have no ControlNet, or one that does not fit.</exception>
    private protected StableDiffusion3ControlNetPipelineBase(StableDiffusion3Components components, int extraConditioningChannels, bool several,
        string pipelineName) : base(WithControlNets(components, extraConditioningChannels, several, pipelineName)) { }

    private static StableDiffusion3Components WithControlNets(StableDiffusion3Components components, int extra, bool several, string pipelineName)
    {
        ArgumentNullException.ThrowIfNull(components);
        if (components.ControlNets.Count == 0)
            throw new ArgumentException("These components have no ControlNet; load them with StableDiffusion3Components.FromPretrained(model, options, controlnet).");
        if (!several && components.ControlNets.Count > 1)
            throw new ArgumentException($"diffusers' {pipelineName} runs one ControlNet (MultiControlNetModel is not supported), got {components.ControlNets.Count}.");
        StableDiffusion3Components.CheckControlNets(components.ControlNets, components.Transformer, extra, pipelineName);
        return components;
    }

    /// <inheritdoc />
    protected override int DefaultSteps => 28;

    /// <summary>The request's control images and per-ControlNet settings.</summary>
    private protected static ControlNetSettings SettingsOf(StableDiffusion3ControlNetRequest r) => new("control_image", r.ControlImage, r.ControlImages,
        r.ControlNetConditioningScale, r.ControlNetConditioningScales, r.ControlGuidanceStart, r.ControlGuidanceStarts, r.ControlGuidanceEnd,
        r.ControlGuidanceEnds);

    /// <summary>The ControlNet inputs' checks, before any compute: one control image per ControlNet, list lengths, windows,
    /// no skip-layer guidance, the pooled projections' shape.</summary>
    /// <param name="r">The request.</param>
    /// <param name="channels">The channels a control image tensor must have, and its range, for the message.</param>
    private protected void CheckControlInputs(StableDiffusion3ControlNetRequest r, (long Channels, string Range) channels)
    {
        SettingsOf(r).Check(Components.ControlNets.Count, _ => channels);
        if (r.SkipGuidanceLayers is not null)
            throw new ArgumentException("skip_guidance_layers is not a parameter of diffusers' SD3 ControlNet pipelines.");
        if (r.ControlNetPooledProjections is { } p && (p.dim() != 2 || p.shape[1] != Components.ControlNets[0].Config.PooledProjectionDim))
            throw new ArgumentException($"controlnet_pooled_projections must be [B, {Components.ControlNets[0].Config.PooledProjectionDim}], got [{string.Join(", ", p.shape)}].");
    }

    /// <summary>The generator of the control images' VAE posterior samples (a fresh random seed when the request has none).</summary>
    private protected static Generator ControlGenerator(StableDiffusion3ControlNetRequest r) =>
        r.ControlImageGenerator ?? new Generator(CPU).ManualSeed(Random.Shared.NextInt64());

    /// <summary>
    /// The run after the checks, in diffusers' order: prompt encoding, the control latents (one tensor per ControlNet, from
    /// <paramref name="controlLatents"/>(batch, cfg)), the ControlNets' pooled projections (from
    /// <paramref name="controlPooled"/>(the CFG-batched pooled prompt embeddings)), timesteps, noise, the loop, the decode.
    /// </summary>
    private protected StableDiffusion3Output Run(StableDiffusion3ControlNetRequest request, int height, int width,
        Func<int, bool, Tensor[]> controlLatents, Func<Tensor, Tensor> controlPooled, IProgress<PipelineProgress>? progress,
        CancellationToken cancellationToken)
    {
        int steps = request.NumInferenceSteps ?? DefaultSteps;
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        bool cfg = request.GuidanceScale > 1;
        int batch = BatchSize(request) * request.NumImagesPerPrompt;
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (embeds, pooled, positive, positivePooled) = EncodePrompt(request, cfg);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        var control = controlLatents(batch, cfg);
        var netPooled = controlPooled(pooled);
        using var scheduler = CreateScheduler(request, steps, height, width);
        var timesteps = scheduler.Timesteps;
        var latents = InitialLatents(request, batch, height, width, embeds.dtype);
        int total = (int)timesteps.shape[0];
        var hooks = new ControlHooks(Components.ControlNets, control, SettingsOf(request).StepScales(Components.ControlNets.Count, total), netPooled);
        latents = Denoise(latents, embeds, pooled, positive, positivePooled, scheduler, timesteps, request, total, progress, cancellationToken, hooks);
        return Decode(latents, request.OutputType, addShift: true, progress);
    }

    /// <summary>
    /// Runs the ControlNets before each transformer call and sums their residuals in order (diffusers'
    /// SD3MultiControlNetModel). A ControlNet whose scale is 0 at a step (outside its window) is not run: diffusers runs it
    /// and adds its residuals times 0, which changes no sum. If a step callback turned guidance off, the conditional half
    /// of the CFG-doubled control latents and pooled projections is used.
    /// </summary>
    private sealed class ControlHooks(IReadOnlyList<SD3ControlNetModel> nets, Tensor[] controlLatents, double[][] scales, Tensor pooled) : DenoiseHooks
    {
        public override IReadOnlyList<Tensor>? ControlResiduals(Tensor modelInput, Tensor timestep, Tensor promptEmbeds, int step)
        {
            long b = modelInput.shape[0];
            static Tensor Fit(Tensor t, long b) => t.shape[0] == 2 * b ? t.chunk(2)[1] : t;
            List<Tensor>? sum = null;
            for (int k = 0; k < nets.Count; k++)
            {
                double scale = scales[step][k];
                if (scale == 0) continue;
                var text = nets[k].Config.JointAttentionDim is null ? null : promptEmbeds;
                var residuals = nets[k].forward(modelInput, Fit(controlLatents[k], b), scale, text, Fit(pooled, b), timestep);
                // Summed pairwise up to the shorter list, as diffusers zips them.
                sum = sum is null ? residuals.ToList() : sum.Zip(residuals, (a, c) => a + c).ToList();
            }
            return sum;
        }
    }
}
