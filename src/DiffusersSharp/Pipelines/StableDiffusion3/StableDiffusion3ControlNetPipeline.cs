using DiffusersSharp.Models.ControlNets;
using TorchSharp;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Pipelines.StableDiffusion3;

/// <summary>
/// Text-to-image with SD3 / SD3.5 steered by one or several SD3 ControlNets (diffusers'
/// <c>StableDiffusion3ControlNetPipeline</c>): the control image is encoded by the VAE, and each step the ControlNets'
/// per-block residuals, scaled and within their guidance windows, are added to the transformer's image stream.
/// </summary>
public sealed class StableDiffusion3ControlNetPipeline : StableDiffusion3PipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them); they must hold at least one SD3 ControlNet.</summary>
    /// <exception cref="ArgumentException">The components have no ControlNet, or one that does not fit.</exception>
    public StableDiffusion3ControlNetPipeline(StableDiffusion3Components components) : base(WithControlNets(components)) { }

    private static StableDiffusion3Components WithControlNets(StableDiffusion3Components components)
    {
        ArgumentNullException.ThrowIfNull(components);
        if (components.ControlNets.Count == 0)
            throw new ArgumentException("These components have no ControlNet; load them with StableDiffusion3Components.FromPretrained(model, options, controlnet).");
        StableDiffusion3Components.CheckControlNets(components.ControlNets, components.Transformer);
        return components;
    }

    /// <summary>Loads a diffusers SD3 pipeline folder or hub repo id and an SD3 ControlNet folder or hub repo id beside it.</summary>
    public static StableDiffusion3ControlNetPipeline FromPretrained(string model, string controlnet, PipelineLoadOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusion3Components.FromPretrained(model, options ?? new PipelineLoadOptions(), controlnet, cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>Loads a diffusers SD3 pipeline and several SD3 ControlNets beside it (diffusers' <c>SD3MultiControlNetModel</c>;
    /// give the control images, and any per-ControlNet settings, in the same order).</summary>
    public static StableDiffusion3ControlNetPipeline FromPretrained(string model, IReadOnlyList<string> controlnets, PipelineLoadOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusion3Components.FromPretrained(model, options ?? new PipelineLoadOptions(), controlnets, cancellationToken);
        return new(components);
    }

    /// <inheritdoc />
    protected override int DefaultSteps => 28;

    /// <summary>The request's control images and per-ControlNet settings.</summary>
    private static ControlNetSettings SettingsOf(StableDiffusion3ControlNetRequest r) => new("control_image", r.ControlImage, r.ControlImages,
        r.ControlNetConditioningScale, r.ControlNetConditioningScales, r.ControlGuidanceStart, r.ControlGuidanceStarts, r.ControlGuidanceEnd,
        r.ControlGuidanceEnds);

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">Invalid parameters (checked before any compute).</exception>
    /// <exception cref="OperationCanceledException">Cancelled; the call stops after the current step.</exception>
    public StableDiffusion3Output Generate(StableDiffusion3ControlNetRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        int height = request.Height ?? DefaultSize, width = request.Width ?? DefaultSize;
        CheckInputs(request, height, width);
        CheckControlInputs(request);
        int steps = request.NumInferenceSteps ?? DefaultSteps;
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        bool cfg = request.GuidanceScale > 1;
        int batch = BatchSize(request) * request.NumImagesPerPrompt;
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (embeds, pooled, positive, positivePooled) = EncodePrompt(request, cfg);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        var controlLatents = EncodeControlImages(request, height, width, batch, cfg);
        using var scheduler = CreateScheduler(request, steps, height, width);
        var timesteps = scheduler.Timesteps;
        var latents = InitialLatents(request, batch, height, width, embeds.dtype);
        int total = (int)timesteps.shape[0];
        var hooks = new ControlHooks(Components.ControlNets, controlLatents, SettingsOf(request).StepScales(Components.ControlNets.Count, total),
            Components.ControlNets[0].Config.ForceZerosForPooledProjection ? zeros_like(pooled) : request.ControlNetPooledProjections ?? pooled);
        latents = Denoise(latents, embeds, pooled, positive, positivePooled, scheduler, timesteps, request, total, progress, cancellationToken, hooks);
        progress?.Report(new PipelineProgress("decode", 0, 1));
        var output = Decode(latents, request.OutputType, addShift: true);
        progress?.Report(new PipelineProgress("decode", 1, 1));
        return output;
    }

    /// <summary>The ControlNet inputs' checks, before any compute: one control image per ControlNet, list lengths, windows.</summary>
    private void CheckControlInputs(StableDiffusion3ControlNetRequest r)
    {
        int n = Components.ControlNets.Count;
        SettingsOf(r).Check(n, _ => (3, "[-1, 1]"));
        if (r.SkipGuidanceLayers is not null)
            throw new ArgumentException("skip_guidance_layers is not a parameter of diffusers' SD3 ControlNet pipeline.");
        if (r.ControlNetPooledProjections is { } p && (p.dim() != 2 || p.shape[1] != Components.ControlNets[0].Config.PooledProjectionDim))
            throw new ArgumentException($"controlnet_pooled_projections must be [B, {Components.ControlNets[0].Config.PooledProjectionDim}], got [{string.Join(", ", p.shape)}].");
    }

    /// <summary>
    /// diffusers' prepare_image and VAE encode, per ControlNet: the control image at the output size in [-1, 1], repeated to
    /// the batch (one image for all, or one per prompt repeated per image), doubled under CFG, then a VAE posterior sample
    /// (drawn from <see cref="StableDiffusion3ControlNetRequest.ControlImageGenerator"/>, in ControlNet order) as
    /// <c>(latents - shift) x scaling</c>, the shift 0 when the first ControlNet forces zero pooled projections.
    /// </summary>
    private Tensor[] EncodeControlImages(StableDiffusion3ControlNetRequest r, int height, int width, int batch, bool cfg)
    {
        var nets = Components.ControlNets;
        var vae = Components.Vae;
        double shift = nets[0].Config.ForceZerosForPooledProjection ? 0 : vae.Config.ShiftFactor ?? 0;
        var generator = r.ControlImageGenerator ?? new Generator(CPU).ManualSeed(Random.Shared.NextInt64());
        var sources = SettingsOf(r).ControlImages;
        var result = new Tensor[nets.Count];
        Components.Activate("vae");
        for (int k = 0; k < nets.Count; k++)
        {
            using var scope = NewDisposeScope();
            var image = sources[k].Image is { } pixels ? ImageProcessor.Preprocess(pixels, height, width) : sources[k].Tensor!;
            if (image.shape[0] != 1 && image.shape[0] * r.NumImagesPerPrompt != batch)
                throw new ArgumentException($"The control image batch ({image.shape[0]}) must be 1 or the prompt batch ({batch / r.NumImagesPerPrompt}).");
            long repeat = image.shape[0] == 1 ? batch : r.NumImagesPerPrompt;
            image = image.repeat_interleave(repeat, 0).to(Components.Transformer.Dtype, Components.Device);
            if (cfg) image = cat([image, image], 0);
            var sample = RandomDraws.SampleVae(vae, image, generator, null, Components.Device);
            result[k] = ((sample - shift) * vae.Config.ScalingFactor).MoveToOuterDisposeScope();
        }
        return result;
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
