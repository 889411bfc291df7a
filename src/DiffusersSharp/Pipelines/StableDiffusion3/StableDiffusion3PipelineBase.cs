using DiffusersSharp.Images;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Schedulers;
using TorchSharp;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Pipelines.StableDiffusion3;

/// <summary>
/// What the three SD3 pipelines share: components, input checks, prompt encoding with CFG batching, random draws in
/// diffusers' order, the denoising loop and the VAE decode. Each pipeline adds how its latents start and what happens
/// after each step.
/// </summary>
public abstract partial class StableDiffusion3PipelineBase : DiffusionPipelineBase<StableDiffusion3Components>
{
    /// <summary>The VAE's spatial scale factor (8).</summary>
    public int VaeScaleFactor => Components.Vae.VaeScaleFactor;

    /// <summary>Default height and width: transformer sample_size x VAE scale factor (1024 for SD3).</summary>
    public int DefaultSize => Components.Transformer.Config.SampleSize * VaeScaleFactor;

    /// <summary>Image pre/post-processing (diffusers' <c>image_processor</c>: LANCZOS resize, [-1, 1] normalization).</summary>
    public VaeImageProcessor ImageProcessor { get; }

    /// <summary>The inpainting mask processor (grayscale, binarized at 0.5, no normalization).</summary>
    public VaeImageProcessor MaskProcessor { get; }

    /// <summary>Called when a prompt is cut to a tokenizer's limit (tokenizer, untruncated length, limit).</summary>
    public Action<string, int, int>? OnPromptTruncated { get; set; }

    /// <summary>Takes a reference on <paramref name="components"/>; they are freed when the last pipeline using them is disposed.</summary>
    protected StableDiffusion3PipelineBase(StableDiffusion3Components components) : base(components)
    {
        int scale = components.Vae.VaeScaleFactor, channels = components.Vae.Config.LatentChannels;
        ImageProcessor = new VaeImageProcessor(new VaeImageProcessorConfig { VaeScaleFactor = scale, VaeLatentChannels = channels });
        MaskProcessor = VaeImageProcessor.CreateMaskProcessor(scale, channels);
    }

    /// <summary>An image input as a tensor NCHW in [-1, 1] at the requested size (latent tensors pass through).</summary>
    private protected Tensor PreprocessImage(PipelineImage image, int height, int width, MaskCrop? crop = null) =>
        image.Preprocess(ImageProcessor, height, width, crop);

    /// <summary>A mask input as a binarized tensor N1HW at the requested size.</summary>
    private protected Tensor PreprocessMask(PipelineImage mask, int height, int width, MaskCrop? crop = null) =>
        mask.Preprocess(MaskProcessor, height, width, crop);

    /// <summary>The default number of steps of this pipeline (28 text-to-image, 50 otherwise).</summary>
    protected abstract int DefaultSteps { get; }

    /// <summary>Validates what every SD3 pipeline validates (diffusers' check_inputs), before any compute.</summary>
    protected void CheckInputs(StableDiffusion3Request r, int height, int width)
    {
        Components.CheckImageSize(height, width);
        if (r.NumInferenceSteps is < 1)
            throw new ArgumentException($"num_inference_steps must be at least 1, got {r.NumInferenceSteps}.");
        if (!double.IsFinite(r.GuidanceScale))
            throw new ArgumentException($"guidance_scale must be a finite number, got {r.GuidanceScale}.");
        if (r.NumImagesPerPrompt < 1)
            throw new ArgumentException($"num_images_per_prompt must be at least 1, got {r.NumImagesPerPrompt}.");
        if (r.MaxSequenceLength is < 1 or > 512)
            throw new ArgumentException($"max_sequence_length must be in [1, 512], got {r.MaxSequenceLength}.");
        if (r.PromptEmbeds is not null && (r.Prompt is not null || r.Prompt2 is not null || r.Prompt3 is not null))
            throw new ArgumentException("Give either a prompt or prompt_embeds, not both.");
        if (r.PromptEmbeds is null && (r.Prompt is null || r.Prompt.Value.Count == 0))
            throw new ArgumentException("Give a prompt or prompt_embeds.");
        if (r.NegativePromptEmbeds is not null && (r.NegativePrompt is not null || r.NegativePrompt2 is not null || r.NegativePrompt3 is not null))
            throw new ArgumentException("Give either a negative prompt or negative_prompt_embeds, not both.");
        if (r.PromptEmbeds is not null && r.PooledPromptEmbeds is null)
            throw new ArgumentException("prompt_embeds needs pooled_prompt_embeds too (they come from the same encode_prompt call).");
        if (r.NegativePromptEmbeds is not null && r.NegativePooledPromptEmbeds is null)
            throw new ArgumentException("negative_prompt_embeds needs negative_pooled_prompt_embeds too.");
        if (r.PromptEmbeds is not null && r.NegativePromptEmbeds is not null && !r.PromptEmbeds.shape.SequenceEqual(r.NegativePromptEmbeds.shape))
            throw new ArgumentException("prompt_embeds and negative_prompt_embeds must have the same shape.");
        if (r.Generator is not null && r.Generators is not null)
            throw new ArgumentException("Give one generator or a list of generators, not both.");
        if (r.Sigmas is { Length: 0 })
            throw new ArgumentException("sigmas must not be empty.");
        CheckIpAdapterInputs(r);
    }

    /// <summary>The batch size before num_images_per_prompt.</summary>
    protected static int BatchSize(StableDiffusion3Request r) => r.PromptEmbeds is { } e ? (int)e.shape[0] : r.Prompt!.Value.Count;

    /// <summary>
    /// Draws <c>randn(shape)</c> like diffusers' <c>randn_tensor</c> from the request's generator(s) onto the execution
    /// device (<see cref="PipelineComponents.Device"/>, also under model offload); see <see cref="RandomDraws.Randn"/>.
    /// </summary>
    protected Tensor RandnTensor(long[] shape, StableDiffusion3Request r, ScalarType dtype) =>
        RandomDraws.Randn(shape, r.Generator, r.Generators, dtype, Components.Device);

    /// <summary>Text-to-image's starting latents (diffusers' <c>prepare_latents</c>): the request's, or noise.</summary>
    /// <exception cref="ArgumentException">The given latents have another shape.</exception>
    protected Tensor InitialLatents(StableDiffusion3Request r, int batch, int height, int width, ScalarType dtype)
    {
        long[] shape = [batch, Components.Transformer.Config.InChannels, height / VaeScaleFactor, width / VaeScaleFactor];
        if (r.Latents is not { } given) return RandnTensor(shape, r, dtype);
        if (!given.shape.SequenceEqual(shape))
            throw new ArgumentException($"latents must have shape [{string.Join(", ", shape)}], got [{string.Join(", ", given.shape)}].");
        return given.to(dtype, Components.Device, copy: true);
    }

    /// <summary>
    /// A VAE posterior sample of <paramref name="image"/> (diffusers' <c>retrieve_latents(vae.encode(image), generator)</c>):
    /// mean + std * randn, drawn from the request's generator, or per sample from a list of generators.
    /// </summary>
    protected Tensor SampleLatents(Tensor image, StableDiffusion3Request r)
    {
        Components.Activate("vae");
        return RandomDraws.SampleVae(Components.Vae, image, r.Generator, r.Generators, Components.Device);
    }

    private static float[] ReadTimesteps(Tensor timesteps)
    {
        using var scope = NewDisposeScope();
        return timesteps.to(ScalarType.Float32).cpu().data<float>().ToArray();
    }

    /// <summary>
    /// diffusers' <c>get_timesteps</c> for image-to-image and inpainting: the schedule's steps from where
    /// <paramref name="strength"/> starts (the scheduler's begin index set there), and how many they are.
    /// </summary>
    /// <exception cref="ArgumentException">Not one step is left to run.</exception>
    protected static (Tensor Timesteps, int Count) StrengthTimesteps(FlowMatchEulerDiscreteScheduler scheduler, double strength)
    {
        int total = (int)scheduler.Timesteps.shape[0];
        int start = Strength.CheckedStartStep(total, strength);
        scheduler.SetBeginIndex(start);
        return (scheduler.Timesteps[start..], total - start);
    }

    /// <summary>A scheduler for one call, with its timesteps set (dynamic shifting resolved as diffusers does).</summary>
    protected FlowMatchEulerDiscreteScheduler CreateScheduler(StableDiffusion3Request r, int steps, int height, int width)
    {
        var scheduler = new FlowMatchEulerDiscreteScheduler(Components.SchedulerConfig);
        double? mu = r.Mu;
        var config = Components.SchedulerConfig;
        if (config.UseDynamicShifting && mu is null)
        {
            int patch = Components.Transformer.Config.PatchSize;
            int seqLen = (height / VaeScaleFactor / patch) * (width / VaeScaleFactor / patch);
            mu = FlowMatchEulerDiscreteScheduler.CalculateShift(seqLen, config.BaseImageSeqLen, config.MaxImageSeqLen, config.BaseShift, config.MaxShift);
        }
        scheduler.SetTimesteps(r.Sigmas is null ? steps : r.Sigmas.Length, Components.Device, r.Sigmas, mu);
        return scheduler;
    }

    /// <summary>Encodes the prompts; under CFG the returned embeddings are [negative; positive] along the batch.</summary>
    protected (Tensor Embeds, Tensor Pooled, Tensor PositiveEmbeds, Tensor PositivePooled) EncodePrompt(StableDiffusion3Request r, bool cfg)
    {
        var encoder = Components.CreatePromptEncoder(OnPromptTruncated);
        using var encoded = encoder.Encode(r, cfg, Components.Device);
        var positive = encoded.PromptEmbeds.alias();
        var positivePooled = encoded.PooledPromptEmbeds.alias();
        if (!cfg) return (positive.alias(), positivePooled.alias(), positive, positivePooled);
        return (cat([encoded.NegativePromptEmbeds!, encoded.PromptEmbeds], 0), cat([encoded.NegativePooledPromptEmbeds!, encoded.PooledPromptEmbeds], 0),
            positive, positivePooled);
    }

    /// <summary>Per-call hooks into the denoising loop (inpainting adds its mask; the defaults do nothing).</summary>
    protected class DenoiseHooks
    {
        /// <summary>The transformer input for this step from the (CFG-doubled) latents.</summary>
        public virtual Tensor TransformerInput(Tensor modelInput, bool cfg) => modelInput;

        /// <summary>Runs after each scheduler step; returns the latents to continue with.</summary>
        public virtual Tensor AfterStep(Tensor latents, int step, FlowMatchEulerDiscreteScheduler scheduler, Tensor timesteps) => latents;

        /// <summary>
        /// The ControlNet residuals for step <paramref name="step"/> (null: none), given the transformer's input, timestep
        /// and the step's full prompt embeddings (CFG-batched as the input).
        /// </summary>
        public virtual IReadOnlyList<Tensor>? ControlResiduals(Tensor modelInput, Tensor timestep, Tensor promptEmbeds, int step) => null;

        /// <summary>The latent-size mask shown to callbacks (inpainting only).</summary>
        public virtual Tensor? Mask { get => null; set { } }
    }

    /// <summary>
    /// The denoising loop of all three pipelines: transformer (CFG-batched), guidance, optional skip-layer guidance,
    /// scheduler step, pipeline hook, callback. Each step runs in its own dispose scope; cancellation is checked between steps.
    /// </summary>
    protected Tensor Denoise(Tensor latents, Tensor embeds, Tensor pooled, Tensor positiveEmbeds, Tensor positivePooled,
        FlowMatchEulerDiscreteScheduler scheduler, Tensor timesteps, StableDiffusion3Request r, int numInferenceSteps,
        IProgress<PipelineProgress>? progress, CancellationToken ct, DenoiseHooks? hooks = null) =>
        Denoise(latents, embeds, pooled, positiveEmbeds, positivePooled, scheduler, timesteps, r, numInferenceSteps, progress, ct, hooks, null);

    /// <summary>
    /// The denoising loop (see the overload above). With <paramref name="pag"/> (the PAG pipelines, whose embeddings are then
    /// [uncond, cond, cond] or [cond, cond] and whose transformer's layers are perturbed for the call) the latents are
    /// repeated to that batch and guided by <see cref="PerturbedAttentionGuidance.Apply"/>; whether CFG runs is then fixed
    /// for the call, as diffusers' processors are.
    /// </summary>
    private protected Tensor Denoise(Tensor latents, Tensor embeds, Tensor pooled, Tensor positiveEmbeds, Tensor positivePooled,
        FlowMatchEulerDiscreteScheduler scheduler, Tensor timesteps, StableDiffusion3Request r, int numInferenceSteps,
        IProgress<PipelineProgress>? progress, CancellationToken ct, DenoiseHooks? hooks, PerturbedAttentionGuidance? pag)
    {
        hooks ??= new DenoiseHooks();
        double guidance = r.GuidanceScale;
        int total = (int)timesteps.shape[0];
        var transformer = Components.Transformer;
        var skipLayers = r.SkipGuidanceLayers;
        using var ipScale = IpAdapterScaleFor(r);
        // diffusers' step 6: the IP-Adapter's image features, CFG-batched like the prompt embeddings.
        var ipEmbeds = PrepareIpAdapterImageEmbeds(r, guidance > 1, latents.shape[0], Components.Device);
        Components.Activate("transformer");
        // Without T5 the embeddings end in max_sequence_length identical zero rows: the transformer runs them as one
        // row that counts that many times (the same result, a shorter sequence). Found again if a callback replaces them.
        bool collapse = r.CollapsesRepeatedTextOn(Components.Device);
        (Tensor, long) Collapse(Tensor e) => collapse ? SD3Transformer2DModel.CollapseRepeatedTail(e) : (e, 1);
        var (runEmbeds, repeats) = Collapse(embeds);
        // Only skip-layer guidance runs the positive half alone; finding its tail costs a device sync, so only then.
        var (runPositive, positiveRepeats) = skipLayers is null ? (positiveEmbeds, 1L) : Collapse(positiveEmbeds);
        // PAG's adaptive scale needs each step's timestep on the host: read once, not with a device sync per step.
        float[]? hostTimesteps = pag is null ? null : ReadTimesteps(timesteps);
        progress?.Report(new PipelineProgress("denoise", 0, total));
        for (int i = 0; i < total; i++)
        {
            ct.ThrowIfCancellationRequested();
            bool cfg = guidance > 1;
            using (var scope = NewDisposeScope())
            {
                var t = timesteps[i];
                Tensor noisePred;
                if (pag is not null)
                {
                    var modelInput = cat(Enumerable.Repeat(latents, pag.Copies).ToArray(), 0);
                    noisePred = transformer.forward(modelInput, runEmbeds, pooled, t.expand(modelInput.shape[0]), lastTokenRepeats: repeats);
                    noisePred = pag.Apply(noisePred, guidance, hostTimesteps![i]).Guided;
                }
                else
                {
                    // The callback may have dropped guidance: then only the conditional half of the embeddings is used.
                    var stepEmbeds = !cfg && runEmbeds.shape[0] == 2 * latents.shape[0] ? runEmbeds.chunk(2)[1] : runEmbeds;
                    var stepPooled = !cfg && pooled.shape[0] == 2 * latents.shape[0] ? pooled.chunk(2)[1] : pooled;
                    var modelInput = cfg ? cat([latents, latents], 0) : latents;
                    var timestep = t.expand(modelInput.shape[0]);
                    var fullEmbeds = !cfg && embeds.shape[0] == 2 * latents.shape[0] ? embeds.chunk(2)[1] : embeds;
                    var stepIp = ipEmbeds is not null && !cfg && ipEmbeds.shape[0] == 2 * latents.shape[0] ? ipEmbeds.chunk(2)[1] : ipEmbeds;
                    var residuals = hooks.ControlResiduals(modelInput, timestep, fullEmbeds, i);
                    noisePred = transformer.forward(hooks.TransformerInput(modelInput, cfg), stepEmbeds, stepPooled, timestep, lastTokenRepeats: repeats,
                        block_controlnet_hidden_states: residuals, ip_adapter_image_embeds: stepIp);
                    if (cfg)
                    {
                        var halves = noisePred.chunk(2);
                        var (uncond, text) = (halves[0], halves[1]);
                        noisePred = uncond + guidance * (text - uncond);
                        bool skip = skipLayers is not null && i > numInferenceSteps * r.SkipLayerGuidanceStart && i < numInferenceSteps * r.SkipLayerGuidanceStop;
                        if (skip)
                        {
                            // As diffusers: the skip pass takes the same (CFG-doubled) image features (one image: checked before).
                            var predSkip = transformer.forward(latents, runPositive, positivePooled, t.expand(latents.shape[0]), skipLayers!.ToArray(), positiveRepeats,
                                ip_adapter_image_embeds: ipEmbeds);
                            noisePred = noisePred + (text - predSkip) * r.SkipLayerGuidanceScale;
                        }
                    }
                }
                var next = scheduler.Step(noisePred, t, latents);
                next = hooks.AfterStep(next, i, scheduler, timesteps);
                next.MoveToOuterDisposeScope();
                latents.Dispose();
                latents = next;
            }
            progress?.Report(new PipelineProgress("denoise", i + 1, total));
            if (r.CallbackOnStepEnd is { } callback)
            {
                var context = new StepEndContext
                {
                    Step = i, TotalSteps = total, Timestep = timesteps[i].item<float>(), Latents = latents,
                    PromptEmbeds = embeds, PooledPromptEmbeds = pooled, GuidanceScale = guidance, Mask = hooks.Mask,
                };
                callback(context);
                latents = StepEndContext.Adopt(latents, context.Latents);
                if (!ReferenceEquals(embeds, context.PromptEmbeds))
                {
                    embeds = StepEndContext.Adopt(embeds, context.PromptEmbeds);
                    (runEmbeds, repeats) = Collapse(embeds);
                }
                pooled = StepEndContext.Adopt(pooled, context.PooledPromptEmbeds ?? pooled);
                if (context.Mask is not null && !ReferenceEquals(context.Mask, hooks.Mask)) hooks.Mask = context.Mask;
                guidance = context.GuidanceScale;
                if (context.Interrupt) break;
            }
        }
        return latents;
    }

    /// <summary>
    /// Decodes latents and converts them to the requested output (diffusers' postprocess). The end of every call: under
    /// model offload the last model goes back to the CPU afterwards (diffusers' <c>maybe_free_model_hooks</c>).
    /// </summary>
    protected StableDiffusion3Output Decode(Tensor latents, OutputType outputType, bool addShift, IProgress<PipelineProgress>? progress) =>
        DecodeAndFinish(progress, () => DecodeOnDevice(latents, outputType, addShift));

    /// <summary>
    /// Decodes intermediate latents (e.g. <see cref="StepEndContext.Latents"/> in a step callback) to images, as a preview
    /// of the generation so far. Under model offload the VAE comes to the device for it and the denoiser goes back after.
    /// </summary>
    public IReadOnlyList<ImageBuffer> PreviewImages(Tensor latents) =>
        DecodePreview(latents, () => DecodeOnDevice(latents, OutputType.Image, addShift: true).Images!);

    private StableDiffusion3Output DecodeOnDevice(Tensor latents, OutputType outputType, bool addShift)
    {
        if (outputType == OutputType.Latent) return new StableDiffusion3Output(null, latents.alias().DetachFromDisposeScope());
        Components.Activate("vae");
        using var scope = NewDisposeScope();
        var vae = Components.Vae;
        var scaled = latents / vae.Config.ScalingFactor;
        if (addShift && vae.Config.ShiftFactor is { } shift) scaled = scaled + shift;
        var decoded = vae.Decode(scaled.to(vae.WeightDtype()));
        var (images, tensor) = DecodedOutput.From(decoded, outputType, ImageProcessor);
        return new StableDiffusion3Output(images, tensor);
    }
}
