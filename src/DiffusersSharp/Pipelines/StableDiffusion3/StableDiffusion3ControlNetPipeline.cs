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

    private static IReadOnlyList<PipelineImage> ControlImagesOf(StableDiffusion3ControlNetRequest r) =>
        r.ControlImages ?? (r.ControlImage is { } one ? [one] : []);

    /// <summary>A per-ControlNet setting: its list, or the single value for every ControlNet (diffusers broadcasts a float).</summary>
    private static double[] PerControlNet(IReadOnlyList<double>? list, double value, int count) =>
        list?.ToArray() ?? Enumerable.Repeat(value, count).ToArray();

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
        var hooks = new ControlHooks(Components.ControlNets, controlLatents, Scales(request, total),
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
        if (r.ControlImage is not null && r.ControlImages is not null)
            throw new ArgumentException("Give control_image (one control image) or a list of control images, not both.");
        var images = ControlImagesOf(r);
        if (images.Count == 0) throw new ArgumentException("control_image is required.");
        if (images.Count != n)
            throw new ArgumentException($"control_image: {n} ControlNet(s) take {n} control image(s), one per ControlNet in order; got {images.Count}.");
        for (int i = 0; i < n; i++)
        {
            if (images[i] is null) throw new ArgumentException($"control_image: control image {i} is null.");
            if (images[i].Tensor is { } t && (t.dim() != 4 || t.shape[1] != 3))
                throw new ArgumentException($"A control image tensor must be [B, 3, H, W] in [-1, 1] (control image {i}).");
        }
        void Count(IReadOnlyList<double>? list, string name)
        {
            if (list is not null && list.Count != n)
                throw new ArgumentException($"{name} has {list.Count} element(s) but there are {n} ControlNet(s); give one per ControlNet.");
        }
        Count(r.ControlNetConditioningScales, "controlnet_conditioning_scale");
        Count(r.ControlGuidanceStarts, "control_guidance_start");
        Count(r.ControlGuidanceEnds, "control_guidance_end");
        foreach (double scale in PerControlNet(r.ControlNetConditioningScales, r.ControlNetConditioningScale, n))
            if (!double.IsFinite(scale)) throw new ArgumentException($"controlnet_conditioning_scale must be a finite number, got {scale}.");
        var starts = PerControlNet(r.ControlGuidanceStarts, r.ControlGuidanceStart, n);
        var ends = PerControlNet(r.ControlGuidanceEnds, r.ControlGuidanceEnd, n);
        for (int i = 0; i < n; i++)
            if (!(starts[i] < ends[i]) || starts[i] < 0 || ends[i] > 1)
                throw new ArgumentException($"control guidance window {i}: need 0 <= start < end <= 1, got start {starts[i]}, end {ends[i]}.");
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
        var sources = ControlImagesOf(r);
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

    /// <summary>controlnet_keep x scale per step and ControlNet: step i of n applies ControlNet k unless i / n &lt; start_k or (i + 1) / n &gt; end_k.</summary>
    private static double[][] Scales(StableDiffusion3ControlNetRequest r, int total)
    {
        int n = ControlImagesOf(r).Count;
        var scales = PerControlNet(r.ControlNetConditioningScales, r.ControlNetConditioningScale, n);
        var starts = PerControlNet(r.ControlGuidanceStarts, r.ControlGuidanceStart, n);
        var ends = PerControlNet(r.ControlGuidanceEnds, r.ControlGuidanceEnd, n);
        var perStep = new double[total][];
        for (int i = 0; i < total; i++)
        {
            perStep[i] = new double[n];
            for (int k = 0; k < n; k++)
            {
                bool off = (double)i / total < starts[k] || (double)(i + 1) / total > ends[k];
                perStep[i][k] = scales[k] * (off ? 0.0 : 1.0);
            }
        }
        return perStep;
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
