using DiffusersSharp.Images;
using DiffusersSharp.Models;
using DiffusersSharp.Schedulers;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.CogView4;

/// <summary>
/// Text-to-image with CogView4 (diffusers' <c>CogView4Pipeline</c>; THUDM/CogView4-6B): prompt -> GLM-4 ids padded on
/// the left to a multiple of 16 -> the encoder's second-to-last hidden states (the negative prompt, "" by default,
/// encoded the same way at its own length) -> float32 noise [B, 16, H/8, W/8] -> FlowMatchEuler steps over integer
/// timesteps <c>linspace(1000, 1)</c> with sigmas <c>t / 1000</c> shifted by <c>mu = sqrt(tokens / 256) · 0.75 + 0.25</c>
/// (CFG as two transformer calls, conditioned on the original size, crop and target size) -> VAE decode of
/// <c>latents / scaling_factor</c>.
/// </summary>
public sealed class CogView4Pipeline : DiffusionPipelineBase<CogView4Components>
{
    /// <summary>Wraps loaded components (taking a reference on them; they are freed when the last user is done).</summary>
    public CogView4Pipeline(CogView4Components components) : base(components)
    {
        ImageProcessor = new VaeImageProcessor(new VaeImageProcessorConfig { VaeScaleFactor = components.Vae.VaeScaleFactor });
    }

    /// <summary>Loads a diffusers CogView4 pipeline folder or hub repo id.</summary>
    public static CogView4Pipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = CogView4Components.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new CogView4Pipeline(components);
    }

    /// <summary>Image post-processing (diffusers' <c>image_processor</c>).</summary>
    public VaeImageProcessor ImageProcessor { get; }

    /// <summary>The VAE's spatial scale factor (8).</summary>
    public int VaeScaleFactor => Components.Vae.VaeScaleFactor;

    /// <summary>Height and width must be multiples of 16 (diffusers' check_inputs).</summary>
    public const int SizeMultiple = 16;

    /// <summary>The size used when a request gives none: the transformer's <c>sample_size</c> × the VAE scale factor.</summary>
    public int DefaultSize => Components.Transformer.Config.SampleSize * VaeScaleFactor;

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public ImagePipelineOutput Generate(CogView4Request request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        var r = request;
        CheckInputs(r);
        using var mode = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        var transformer = Components.Transformer;
        int height = r.Height ?? DefaultSize, width = r.Width ?? DefaultSize;
        bool cfg = r.GuidanceScale > 1.0;

        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (embeds, negEmbeds) = EncodeCore(r, cfg);
        progress?.Report(new PipelineProgress("encode", 1, 1));

        // diffusers draws the noise in float32 whatever the model's dtype; given latents keep theirs.
        var latentShape = LatentShape(r, height, width);
        var latents = r.Latents is { } given
            ? given.to(device)
            : RandomDraws.Randn(latentShape, r.Generator, r.Generators, ScalarType.Float32, device);
        long batch = latentShape[0];
        // The size conditions, in the embeddings' dtype as diffusers builds them.
        var (oh, ow) = r.OriginalSize ?? (height, width);
        Tensor Condition(float a, float b) => tensor(new[] { a, b }, [1, 2], dtype: ScalarType.Float32).to(embeds.dtype, device).repeat(batch, 1);
        var originalSize = Condition(oh, ow);
        var targetSize = Condition(height, width);
        var crops = Condition(r.CropsCoordsTopLeft.Top, r.CropsCoordsTopLeft.Left);

        using var scheduler = new FlowMatchEulerDiscreteScheduler(Components.SchedulerConfig);
        var (timestepValues, sigmaValues) = Schedule(r);
        int imageSeqLen = (height / VaeScaleFactor) * (width / VaeScaleFactor) / (transformer.Config.PatchSize * transformer.Config.PatchSize);
        scheduler.SetTimesteps(timestepValues.Length, device, sigmaValues, CalculateShift(imageSeqLen), timestepValues);
        var timesteps = scheduler.Timesteps;
        int total = (int)timesteps.shape[0];
        double guidance = r.GuidanceScale;
        var transformerDtype = transformer.WeightDtype();

        Components.Activate("transformer");
        progress?.Report(new PipelineProgress("denoise", 0, total));
        for (int i = 0; i < total; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var t = timesteps[i];
            using (var stepScope = NewDisposeScope())
            {
                var input = latents.to(transformerDtype);
                var timestep = t.expand(latents.shape[0]);
                var prediction = transformer.forward(input, embeds, timestep, originalSize, targetSize, crops);
                if (cfg)
                {
                    var uncond = transformer.forward(input, negEmbeds!, timestep, originalSize, targetSize, crops);
                    prediction = uncond + guidance * (prediction - uncond);
                }
                var next = scheduler.Step(prediction, t, latents);
                next.MoveToOuterDisposeScope();
                latents.Dispose();
                latents = next;
            }
            progress?.Report(new PipelineProgress("denoise", i + 1, total));
            if (r.CallbackOnStepEnd is { } callback)
            {
                var context = new StepEndContext
                {
                    Step = i, TotalSteps = total, Timestep = t.item<float>(), Latents = latents, PromptEmbeds = embeds,
                    NegativePromptEmbeds = negEmbeds, GuidanceScale = guidance,
                };
                callback(context);
                latents = StepEndContext.Adopt(latents, context.Latents);
                embeds = StepEndContext.Adopt(embeds, context.PromptEmbeds);
                if (negEmbeds is not null && context.NegativePromptEmbeds is { } replaced) negEmbeds = StepEndContext.Adopt(negEmbeds, replaced);
                if (context.Interrupt) break;
            }
        }

        if (r.OutputType == OutputType.Latent)
            return new ImagePipelineOutput(null, latents.DetachFromDisposeScope());
        return DecodeAndFinish(progress, () => Decode(latents, r.OutputType));
    }

    /// <summary>
    /// Decodes intermediate latents [B, 16, H/8, W/8] (e.g. <see cref="StepEndContext.Latents"/> in a step callback) to
    /// images, as a preview of the generation so far. Under model offload the VAE comes to the device for it and the
    /// transformer goes back after.
    /// </summary>
    public IReadOnlyList<ImageBuffer> PreviewImages(Tensor latents) =>
        DecodePreview(latents, () => Decode(latents, OutputType.Image).Images!);

    /// <summary>diffusers' CogView4 <c>calculate_shift</c>: <c>sqrt(image_seq_len / base_image_seq_len) · max_shift +
    /// base_shift</c> with the scheduler config's values (not the Flux-style line of
    /// <see cref="FlowMatchEulerDiscreteScheduler.CalculateShift"/>).</summary>
    public double CalculateShift(int imageSeqLen)
    {
        var c = Components.SchedulerConfig;
        return Math.Sqrt((double)imageSeqLen / c.BaseImageSeqLen) * c.MaxShift + c.BaseShift;
    }

    /// <summary>The timesteps and sigmas the pipeline hands the scheduler: the integer linspace(1000, 1) (or the request's)
    /// as float32, and the request's sigmas or <c>timesteps / 1000</c> in float32.</summary>
    private (float[] Timesteps, float[] Sigmas) Schedule(CogView4Request r)
    {
        int trainSteps = Components.SchedulerConfig.NumTrainTimesteps;
        float[] timesteps = r.Timesteps is { } given
            ? Array.ConvertAll(given, t => (float)t)
            : Array.ConvertAll(NumpyMath.Linspace(trainSteps, 1.0, r.NumInferenceSteps), t => (float)(long)t);
        float[] sigmas = r.Sigmas ?? Array.ConvertAll(timesteps, t => t / trainSteps);
        return (timesteps, sigmas);
    }

    private long PromptCount(CogView4Request r) => r.PromptEmbeds?.shape[0] ?? r.Prompt?.Count ?? 0;

    private long[] LatentShape(CogView4Request r, int height, int width) =>
        [PromptCount(r) * r.NumImagesPerPrompt, Components.Transformer.Config.InChannels, height / VaeScaleFactor, width / VaeScaleFactor];

    /// <summary>Validates the request before any compute (diffusers' check_inputs, and what would fail later in its call).</summary>
    private void CheckInputs(CogView4Request r)
    {
        static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";
        var config = Components.Transformer.Config;
        int height = r.Height ?? DefaultSize, width = r.Width ?? DefaultSize;
        if (height <= 0 || width <= 0 || height % SizeMultiple != 0 || width % SizeMultiple != 0)
            throw new ArgumentException($"height and width must be positive multiples of {SizeMultiple}, got {height}x{width}.");
        if (r.Timesteps is { } ts)
        {
            if (ts.Length == 0) throw new ArgumentException("timesteps must not be empty.");
            if (r.Sigmas is { } s && s.Length != ts.Length)
                throw new ArgumentException($"{ts.Length} timesteps and {s.Length} sigmas were given; they must be as many.");
        }
        else if (r.NumInferenceSteps < 1)
            throw new ArgumentException($"num_inference_steps must be at least 1, got {r.NumInferenceSteps}.");
        else if (r.Sigmas is { } s && s.Length != r.NumInferenceSteps)
            throw new ArgumentException($"{s.Length} sigmas were given for {r.NumInferenceSteps} steps (the timesteps are linspace(1000, 1, steps)); they must be as many.");
        if (r.Sigmas is { } sigmas && (sigmas.Length == 0 || sigmas.Any(v => !float.IsFinite(v) || v <= 0)))
            throw new ArgumentException("sigmas must be finite positive numbers (the shift divides by them).");
        if (!Components.SchedulerConfig.UseDynamicShifting)
            throw new ArgumentException("The scheduler config does not set use_dynamic_shifting, but CogView4Pipeline always passes mu (diffusers fails on it too).");
        if (!double.IsFinite(r.GuidanceScale))
            throw new ArgumentException($"guidance_scale must be a finite number, got {r.GuidanceScale}.");
        if (r.NumImagesPerPrompt < 1)
            throw new ArgumentException($"num_images_per_prompt must be at least 1, got {r.NumImagesPerPrompt}.");
        if (r.MaxSequenceLength < 1)
            throw new ArgumentException($"max_sequence_length must be at least 1, got {r.MaxSequenceLength}.");
        if (r.OriginalSize is { } o && (o.Height <= 0 || o.Width <= 0))
            throw new ArgumentException($"original_size must be positive, got {o.Height}x{o.Width}.");
        if (r.OutputType is not (OutputType.Image or OutputType.Numpy or OutputType.Tensor or OutputType.Latent))
            throw new ArgumentException($"Unknown output type {r.OutputType}.");
        if (r.PromptEmbeds is not null && r.Prompt is not null)
            throw new ArgumentException("Give either a prompt or prompt_embeds, not both.");
        if (r.PromptEmbeds is null && (r.Prompt is null || r.Prompt.Value.Count == 0))
            throw new ArgumentException("Give a prompt or prompt_embeds.");
        if (r.NegativePromptEmbeds is not null && r.NegativePrompt is not null)
            throw new ArgumentException("Give either a negative prompt or negative_prompt_embeds, not both.");
        if (r.NegativePromptEmbeds is not null && r.Prompt is not null)
            throw new ArgumentException("negative_prompt_embeds go with prompt_embeds, not with a prompt (as diffusers).");
        void CheckEmbeds(Tensor e, string name)
        {
            if (e.dim() != 3 || e.shape[0] < 1 || e.shape[1] < 1 || e.shape[2] != config.TextEmbedDim || !e.is_floating_point())
                throw new ArgumentException($"{name} must be a floating-point [B, S, {config.TextEmbedDim}] tensor (the transformer's text_embed_dim), got {Shape(e)}.");
        }
        if (r.PromptEmbeds is { } pe) CheckEmbeds(pe, "prompt_embeds");
        if (r.NegativePromptEmbeds is { } ne)
        {
            CheckEmbeds(ne, "negative_prompt_embeds");
            if (ne.shape[0] != r.PromptEmbeds!.shape[0])
                throw new ArgumentException($"prompt_embeds {Shape(r.PromptEmbeds)} and negative_prompt_embeds {Shape(ne)} must have the same batch size.");
        }
        bool cfg = r.GuidanceScale > 1;
        if (r.PromptEmbeds is null || (cfg && r.NegativePromptEmbeds is null))
            throw new ArgumentException("CogView4's prompt encoding is not built yet (GLM-4's tokenizer is missing; GlmModel exists): pass prompt_embeds (and, with guidance, negative_prompt_embeds).");
        long prompts = PromptCount(r);
        if (r.NegativePrompt is { } np && np.Count != 1 && np.Count != prompts)
            throw new ArgumentException($"{np.Count} negative prompts were given for {prompts} prompts.");
        if (r.Generator is not null && r.Generators is not null)
            throw new ArgumentException("Give one generator or a list of generators, not both.");
        var latentShape = LatentShape(r, height, width);
        if (r.Generators is { } generators && generators.Count != latentShape[0])
            throw new ArgumentException($"{generators.Count} generators were given for a batch of {latentShape[0]} (prompts x images per prompt).");
        if (r.Latents is { } l && !l.shape.SequenceEqual(latentShape))
            throw new ArgumentException($"latents must be [{string.Join(", ", latentShape)}] for this request, got {Shape(l)}.");
    }

    /// <summary>
    /// The given prompt embeddings in the transformer's dtype, repeated for the images per prompt, and with guidance the
    /// given negative ones repeated likewise. diffusers does not repeat GIVEN negative embeddings per image (its transformer
    /// call then fails on the batch size); they are repeated here.
    /// </summary>
    private (Tensor Embeds, Tensor? NegEmbeds) EncodeCore(CogView4Request r, bool cfg)
    {
        var device = Components.Device;
        var dtype = Components.Transformer.WeightDtype();
        var embeds = r.PromptEmbeds!.to(dtype, device);
        long batch = embeds.shape[0];
        int n = r.NumImagesPerPrompt;
        Tensor Repeat(Tensor e) => e.repeat(1, n, 1).view(batch * n, e.shape[1], -1);
        if (!cfg) return (Repeat(embeds), null);
        return (Repeat(embeds), Repeat(r.NegativePromptEmbeds!.to(dtype, device)));
    }

    /// <summary>The VAE decode of <c>latents / scaling_factor</c> (no shift factor, as diffusers' CogView4) and the output form.</summary>
    private ImagePipelineOutput Decode(Tensor latents, OutputType outputType)
    {
        Components.Activate("vae");
        var vae = Components.Vae;
        using var scope = NewDisposeScope();
        var decoded = vae.Decode(latents.to(vae.WeightDtype()) / vae.Config.ScalingFactor);
        var (images, output) = DecodedOutput.From(decoded, outputType, ImageProcessor);
        return new ImagePipelineOutput(images, output);
    }
}
