using DiffusersSharp.Images;
using DiffusersSharp.Models;
using DiffusersSharp.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux;

/// <summary>
/// Text-to-image with Flux.1 (diffusers' <c>FluxPipeline</c>): prompt -> CLIP-L pooled + T5 embeddings -> noise drawn at
/// [B, 16, 2·(H/16), 2·(W/16)] and packed into 2×2 patches -> flow-matching Euler steps over the transformer
/// (sigmas <c>linspace(1, 1/N, N)</c>, resolution-dependent shift mu; the guidance scale goes into the guidance embedding;
/// optional true CFG with a negative prompt) -> unpack -> VAE decode of <c>latents / scaling_factor + shift_factor</c>.
/// </summary>
public sealed class FluxPipeline : IDisposable
{
    private bool _disposed;

    /// <summary>Wraps loaded components (taking a reference on them; they are freed when the last user is done).</summary>
    public FluxPipeline(FluxComponents components)
    {
        ArgumentNullException.ThrowIfNull(components);
        components.Acquire();
        Components = components;
        // diffusers: VaeImageProcessor(vae_scale_factor * 2), the packing doubles the latent granularity.
        ImageProcessor = new VaeImageProcessor(new VaeImageProcessorConfig
        {
            VaeScaleFactor = components.Vae.VaeScaleFactor * 2, VaeLatentChannels = components.Vae.Config.LatentChannels,
        });
    }

    /// <summary>Loads a diffusers Flux pipeline folder or hub repo id.</summary>
    public static FluxPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = FluxComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new FluxPipeline(components); // the pipeline's own reference keeps them
    }

    /// <summary>The shared components.</summary>
    public FluxComponents Components { get; }

    /// <summary>Image post-processing (diffusers' <c>image_processor</c>).</summary>
    public VaeImageProcessor ImageProcessor { get; }

    /// <summary>Called when a prompt is cut to a tokenizer's limit (tokenizer, untruncated length, limit).</summary>
    public Action<string, int, int>? OnPromptTruncated { get; set; }

    /// <summary>The VAE's spatial scale factor (8).</summary>
    public int VaeScaleFactor => Components.Vae.VaeScaleFactor;

    /// <summary>Default height and width: diffusers' default_sample_size 128 × the VAE scale factor (1024).</summary>
    public int DefaultSize => 128 * VaeScaleFactor;

    /// <summary>Default number of steps (28).</summary>
    public const int DefaultSteps = 28;

    /// <summary>
    /// diffusers' <c>_pack_latents</c>: [B, C, h, w] (h, w even) -> [B, (h/2)·(w/2), 4C], each token a 2×2 patch with
    /// the channels outermost (c, dy, dx).
    /// </summary>
    public static Tensor PackLatents(Tensor latents)
    {
        if (latents.dim() != 4 || latents.shape[2] % 2 != 0 || latents.shape[3] % 2 != 0)
            throw new ArgumentException($"latents to pack must be [B, C, h, w] with even h and w, got [{string.Join(", ", latents.shape)}].", nameof(latents));
        long b = latents.shape[0], c = latents.shape[1], h = latents.shape[2], w = latents.shape[3];
        using var scope = NewDisposeScope();
        var packed = latents.view(b, c, h / 2, 2, w / 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h / 2) * (w / 2), c * 4);
        return packed.MoveToOuterDisposeScope();
    }

    /// <summary>
    /// diffusers' <c>_unpack_latents</c>: packed [B, S, 4C] of an image <paramref name="height"/> × <paramref name="width"/>
    /// pixels -> [B, C, 2·(height / (2·vaeScaleFactor)), 2·(width / (2·vaeScaleFactor))].
    /// </summary>
    public static Tensor UnpackLatents(Tensor latents, int height, int width, int vaeScaleFactor)
    {
        long h = 2 * (height / (vaeScaleFactor * 2)), w = 2 * (width / (vaeScaleFactor * 2));
        if (latents.dim() != 3 || latents.shape[1] != (h / 2) * (w / 2) || latents.shape[2] % 4 != 0)
            throw new ArgumentException($"packed latents for {height}x{width} must be [B, {(h / 2) * (w / 2)}, 4C], got [{string.Join(", ", latents.shape)}].", nameof(latents));
        long b = latents.shape[0], channels = latents.shape[2];
        using var scope = NewDisposeScope();
        var unpacked = latents.view(b, h / 2, w / 2, channels / 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, channels / 4, h, w);
        return unpacked.MoveToOuterDisposeScope();
    }

    /// <summary>diffusers' <c>_prepare_latent_image_ids</c>: [h·w, 3] with (0, row, column) per packed token, row-major.</summary>
    public static Tensor LatentImageIds(int height, int width, Device device, ScalarType dtype)
    {
        using var scope = NewDisposeScope();
        var rows = arange(height, dtype: ScalarType.Float32).unsqueeze(1).expand(height, width);
        var cols = arange(width, dtype: ScalarType.Float32).unsqueeze(0).expand(height, width);
        var ids = stack([zeros(height, width), rows, cols], -1).reshape(height * width, 3);
        return ids.to(dtype, device).MoveToOuterDisposeScope();
    }

    /// <summary>The default sigmas: numpy's <c>linspace(1.0, 1/N, N)</c> in float64, as float32 (what the scheduler takes).</summary>
    public static float[] DefaultSigmas(int numInferenceSteps) =>
        Array.ConvertAll(NumpyMath.Linspace(1.0, 1.0 / numInferenceSteps, numInferenceSteps), v => (float)v);

    /// <summary>diffusers' <c>calculate_shift</c> for <paramref name="imageSeqLen"/> packed tokens with the scheduler config's values.</summary>
    public static double Mu(int imageSeqLen, FlowMatchEulerDiscreteSchedulerConfig config) =>
        FlowMatchEulerDiscreteScheduler.CalculateShift(imageSeqLen, config.BaseImageSeqLen, config.MaxImageSeqLen, config.BaseShift, config.MaxShift);

    /// <summary>Validates the request (diffusers' check_inputs, stricter on sizes), before any compute.</summary>
    private void CheckInputs(FluxRequest r, int height, int width)
    {
        int multiple = VaeScaleFactor * 2;
        if (height <= 0 || width <= 0 || height % multiple != 0 || width % multiple != 0)
            throw new ArgumentException($"height and width must be positive multiples of {multiple}, got {height}x{width} (try {Math.Max(multiple, height - height % multiple)}x{Math.Max(multiple, width - width % multiple)}).");
        if (r.NumInferenceSteps is < 1)
            throw new ArgumentException($"num_inference_steps must be at least 1, got {r.NumInferenceSteps}.");
        if (r.Sigmas is { Length: 0 })
            throw new ArgumentException("sigmas must not be empty.");
        if (r.Sigmas is not null && r.NumInferenceSteps is int n && n != r.Sigmas.Length)
            throw new ArgumentException($"{r.Sigmas.Length} sigmas were given for {n} inference steps.");
        if (!double.IsFinite(r.GuidanceScale))
            throw new ArgumentException($"guidance_scale must be a finite number, got {r.GuidanceScale}.");
        if (!double.IsFinite(r.TrueCfgScale))
            throw new ArgumentException($"true_cfg_scale must be a finite number, got {r.TrueCfgScale}.");
        if (r.NumImagesPerPrompt < 1)
            throw new ArgumentException($"num_images_per_prompt must be at least 1, got {r.NumImagesPerPrompt}.");
        if (r.MaxSequenceLength is < 1 or > 512)
            throw new ArgumentException($"max_sequence_length must be in [1, 512], got {r.MaxSequenceLength}.");
        if (r.PromptEmbeds is not null && (r.Prompt is not null || r.Prompt2 is not null))
            throw new ArgumentException("Give either a prompt or prompt_embeds, not both.");
        if (r.PromptEmbeds is null && (r.Prompt is null || r.Prompt.Value.Count == 0))
            throw new ArgumentException("Give a prompt or prompt_embeds.");
        if (r.NegativePromptEmbeds is not null && (r.NegativePrompt is not null || r.NegativePrompt2 is not null))
            throw new ArgumentException("Give either a negative prompt or negative_prompt_embeds, not both.");
        if (r.PromptEmbeds is not null && r.PooledPromptEmbeds is null)
            throw new ArgumentException("prompt_embeds needs pooled_prompt_embeds too (they come from the same encode_prompt call).");
        if (r.NegativePromptEmbeds is not null && r.NegativePooledPromptEmbeds is null)
            throw new ArgumentException("negative_prompt_embeds needs negative_pooled_prompt_embeds too.");
        if (r.PromptEmbeds is not null && r.NegativePromptEmbeds is not null && !r.PromptEmbeds.shape.SequenceEqual(r.NegativePromptEmbeds.shape))
            throw new ArgumentException("prompt_embeds and negative_prompt_embeds must have the same shape.");
        if (r.Generator is not null && r.Generators is not null)
            throw new ArgumentException("Give one generator or a list of generators, not both.");
    }

    /// <summary>Whether the request runs diffusers' true CFG: a scale above 1 and a negative prompt or negative embeddings.</summary>
    public static bool DoesTrueCfg(FluxRequest r) =>
        r.TrueCfgScale > 1 && (r.NegativePrompt is not null || (r.NegativePromptEmbeds is not null && r.NegativePooledPromptEmbeds is not null));

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public FluxOutput Generate(FluxRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ObjectDisposedException.ThrowIf(_disposed, this);
        int height = request.Height ?? DefaultSize, width = request.Width ?? DefaultSize;
        CheckInputs(request, height, width);
        int batch = (request.PromptEmbeds is { } e ? (int)e.shape[0] : request.Prompt!.Value.Count) * request.NumImagesPerPrompt;
        int latentH = 2 * (height / (VaeScaleFactor * 2)), latentW = 2 * (width / (VaeScaleFactor * 2));
        int channels = Components.Transformer.Config.InChannels / 4;
        long[] packedShape = [batch, (latentH / 2) * (latentW / 2), channels * 4];
        if (request.Latents is { } given && !given.shape.SequenceEqual(packedShape))
            throw new ArgumentException($"latents must be packed [{string.Join(", ", packedShape)}], got [{string.Join(", ", given.shape)}].");
        if (request.Generators is { } generators && generators.Count != batch)
            throw new ArgumentException($"{generators.Count} generators were given for a batch of {batch} (prompts x images per prompt).");

        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        bool trueCfg = DoesTrueCfg(request);
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var encoder = Components.CreatePromptEncoder(OnPromptTruncated);
        var idsDtype = Components.TextEncoder?.WeightDtype() ?? Components.Transformer.Dtype;
        var positive = encoder.Encode(request.Prompt, request.Prompt2, request.PromptEmbeds, request.PooledPromptEmbeds,
            request.NumImagesPerPrompt, request.MaxSequenceLength, device, idsDtype);
        FluxEncodedPrompt? negative = null;
        if (trueCfg)
        {
            int prompts = batch / request.NumImagesPerPrompt;
            PromptList? neg = request.NegativePrompt is { } np ? new PromptList(np.Broadcast(prompts, "negative_prompt")) : (PromptList?)null;
            PromptList? neg2 = request.NegativePrompt2 is { } np2 ? new PromptList(np2.Broadcast(prompts, "negative_prompt_2")) : (PromptList?)null;
            negative = encoder.Encode(neg, neg2, request.NegativePromptEmbeds, request.NegativePooledPromptEmbeds,
                request.NumImagesPerPrompt, request.MaxSequenceLength, device, idsDtype);
            if (!negative.PromptEmbeds.shape.SequenceEqual(positive.PromptEmbeds.shape))
                throw new ArgumentException($"negative prompt embeddings [{string.Join(", ", negative.PromptEmbeds.shape)}] must have the shape of the prompt's [{string.Join(", ", positive.PromptEmbeds.shape)}].");
        }
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        var dtype = positive.PromptEmbeds.dtype;
        Tensor latents = request.Latents is { } initial
            ? initial.to(dtype, device, copy: true)
            : PackLatents(RandomDraws.Randn([batch, channels, latentH, latentW], request.Generator, request.Generators, dtype, device));
        var imageIds = LatentImageIds(latentH / 2, latentW / 2, device, dtype);

        var config = Components.SchedulerConfig;
        using var scheduler = new FlowMatchEulerDiscreteScheduler(config);
        var sigmas = request.Sigmas ?? DefaultSigmas(request.NumInferenceSteps ?? DefaultSteps);
        double mu = request.Mu ?? Mu((int)latents.shape[1], config);
        scheduler.SetTimesteps(sigmas.Length, device, sigmas, mu);
        scheduler.SetBeginIndex(0);

        var guidance = Components.Transformer.Config.GuidanceEmbeds
            ? full([1], request.GuidanceScale, dtype: ScalarType.Float32, device: device).expand(batch)
            : null;
        latents = Denoise(latents, positive, negative, imageIds, guidance, scheduler, request, progress, cancellationToken);

        progress?.Report(new PipelineProgress("decode", 0, 1));
        try
        {
            var output = DecodeOnDevice(latents, request.OutputType, height, width);
            progress?.Report(new PipelineProgress("decode", 1, 1));
            return output;
        }
        finally
        {
            Components.OffloadAll();
        }
    }

    private Tensor Denoise(Tensor latents, FluxEncodedPrompt positive, FluxEncodedPrompt? negative, Tensor imageIds, Tensor? guidance,
        FlowMatchEulerDiscreteScheduler scheduler, FluxRequest r, IProgress<PipelineProgress>? progress, CancellationToken ct)
    {
        var transformer = Components.Transformer;
        var timesteps = scheduler.Timesteps;
        int total = (int)timesteps.shape[0];
        double trueCfgScale = r.TrueCfgScale;
        Tensor embeds = positive.PromptEmbeds, pooled = positive.PooledPromptEmbeds;
        Components.Activate("transformer");
        progress?.Report(new PipelineProgress("denoise", 0, total));
        for (int i = 0; i < total; i++)
        {
            ct.ThrowIfCancellationRequested();
            using (var stepScope = NewDisposeScope())
            {
                var t = timesteps[i];
                // diffusers: t.expand(B).to(latents.dtype), then / 1000 (in that dtype) into the transformer.
                var timestep = t.expand(latents.shape[0]).to(latents.dtype) / 1000;
                var noisePred = transformer.forward(latents, embeds, pooled, timestep, imageIds, positive.TextIds, guidance);
                if (negative is not null && trueCfgScale > 1)
                {
                    var negPred = transformer.forward(latents, negative.PromptEmbeds, negative.PooledPromptEmbeds, timestep, imageIds, negative.TextIds, guidance);
                    noisePred = negPred + trueCfgScale * (noisePred - negPred);
                }
                var next = scheduler.Step(noisePred, t, latents);
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
                    PromptEmbeds = embeds, PooledPromptEmbeds = pooled, GuidanceScale = trueCfgScale,
                };
                callback(context);
                latents = Adopt(latents, context.Latents);
                embeds = Adopt(embeds, context.PromptEmbeds);
                pooled = Adopt(pooled, context.PooledPromptEmbeds ?? pooled);
                trueCfgScale = context.GuidanceScale;
                if (context.Interrupt) break;
            }
        }
        return latents;
    }

    /// <summary>Takes a tensor the callback put in place; the alias belongs to the call's dispose scope, like the rest.</summary>
    private static Tensor Adopt(Tensor current, Tensor replacement) =>
        ReferenceEquals(current, replacement) ? current : replacement.alias();

    /// <summary>
    /// Decodes intermediate packed latents (e.g. <see cref="StepEndContext.Latents"/> in a step callback) of an image
    /// <paramref name="height"/> × <paramref name="width"/> to images, as a preview of the generation so far. Under model
    /// offload the VAE comes to the device for it and the transformer goes back after.
    /// </summary>
    public IReadOnlyList<ImageBuffer> PreviewImages(Tensor latents, int height, int width)
    {
        ArgumentNullException.ThrowIfNull(latents);
        using var inference = inference_mode();
        return Components.WithActive("vae", () => DecodeOnDevice(latents, OutputType.Image, height, width).Images!);
    }

    private FluxOutput DecodeOnDevice(Tensor latents, OutputType outputType, int height, int width)
    {
        if (outputType == OutputType.Latent) return new FluxOutput(null, latents.alias().DetachFromDisposeScope());
        Components.Activate("vae");
        using var scope = NewDisposeScope();
        var vae = Components.Vae;
        var unpacked = UnpackLatents(latents, height, width, VaeScaleFactor);
        var scaled = unpacked / vae.Config.ScalingFactor + (vae.Config.ShiftFactor ?? 0.0);
        var decoded = vae.Decode(scaled.to(vae.WeightDtype()));
        var (images, tensor) = DecodedOutput.From(decoded, outputType, ImageProcessor);
        return new FluxOutput(images, tensor);
    }

    /// <summary>Releases this pipeline's reference on the shared components.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Components.Release();
        GC.SuppressFinalize(this);
    }
}
