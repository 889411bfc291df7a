using DiffusersSharp.Images;
using DiffusersSharp.Models;
using DiffusersSharp.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux2;

/// <summary>
/// What diffusers' <c>Flux2KleinPipeline</c>, <c>Flux2KleinKVPipeline</c> and <c>Flux2KleinInpaintPipeline</c> share (v0.39): prompts in
/// Qwen3's chat template -> the stacked hidden states of three Qwen3 layers, padded to max_sequence_length
/// (<see cref="Flux2KleinPromptEncoder"/>), or given embeddings, repeated per image -> noise drawn directly as patchified
/// latents [B, 4·C, H/16, W/16], packed to tokens with 4-axis positions (t, h, w, l) -> FlowMatchEuler steps (sigmas
/// <c>linspace(1, 1/N, N)</c>, mu from <c>compute_empirical_mu</c>) over the transformer, fed σ = t / 1000, the reference
/// images' normalised VAE latents appended to the image tokens at t = 10, 20, … and their predictions dropped; CFG (not on
/// step-distilled models) runs the negative text in a second forward and takes <c>neg + s · (pos − neg)</c> -> unpack,
/// <c>latents · sqrt(var + eps) + mean</c> with the VAE's batch-norm statistics, unpatchify, VAE decode.
/// </summary>
public abstract class Flux2KleinPipelineBase : DiffusionPipelineBase<Flux2KleinComponents>
{
    /// <summary>Takes a reference on <paramref name="components"/>; they are freed when the last pipeline using them is disposed.</summary>
    protected Flux2KleinPipelineBase(Flux2KleinComponents components) : base(components)
    {
        // diffusers: Flux2ImageProcessor(vae_scale_factor=vae_scale_factor * 2) and, for inpainting, a mask processor at the
        // same scale (grayscale, binarized, not normalised).
        int scale = components.Vae.VaeScaleFactor * 2, channels = components.Vae.Config.LatentChannels;
        ImageProcessor = new VaeImageProcessor(new VaeImageProcessorConfig { VaeScaleFactor = scale, VaeLatentChannels = channels });
        MaskProcessor = VaeImageProcessor.CreateMaskProcessor(scale, channels);
    }

    /// <summary>Image pre/post-processing (diffusers' <c>image_processor</c>, at twice the VAE scale factor).</summary>
    public VaeImageProcessor ImageProcessor { get; }

    /// <summary>The inpainting mask processor (diffusers' <c>mask_processor</c>: grayscale, binarized at 0.5).</summary>
    public VaeImageProcessor MaskProcessor { get; }

    /// <summary>The VAE's spatial scale factor (8).</summary>
    public int VaeScaleFactor => Components.Vae.VaeScaleFactor;

    /// <summary>Height and width are multiples of this (twice the VAE scale factor: 16).</summary>
    public int SizeMultiple => VaeScaleFactor * 2;

    /// <summary>diffusers' default height and width (default_sample_size 128 × the VAE scale factor: 1024).</summary>
    public int DefaultSize => 128 * VaeScaleFactor;

    /// <summary>diffusers' default number of steps (50).</summary>
    public const int DefaultSteps = 50;

    /// <summary>The t coordinate of the first reference image; each next one adds as much (diffusers' <c>scale</c> 10).</summary>
    public const int ReferenceTimeOffset = 10;

    /// <summary>Whether the request runs CFG: a guidance scale above 1 on a model that is not step-distilled.</summary>
    public virtual bool DoesCfg(Flux2KleinRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return request.GuidanceScale > 1 && !Components.IsDistilled;
    }

    /// <summary>Whether these components can encode prompt strings (the text encoder and its tokenizer are loaded).</summary>
    private protected bool CanEncodePrompts => Components.TextEncoder is not null && Components.Tokenizer is not null;

    /// <summary>
    /// diffusers' <c>_get_qwen3_prompt_embeds</c> (<see cref="Flux2KleinPromptEncoder"/>): [B, L, layers · hidden] embeddings
    /// in the text encoder's dtype. Under model offload the text encoder comes to the device for it.
    /// </summary>
    /// <exception cref="InvalidOperationException">These components have no text encoder.</exception>
    public Tensor EncodePrompt(IReadOnlyList<string> prompts, int maxSequenceLength = 512, IReadOnlyList<int>? layers = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        ThrowIfDisposed();
        if (!CanEncodePrompts)
            throw new InvalidOperationException("These FLUX.2 components have no text encoder (LoadTextEncoders = false): pass prompt embeddings.");
        Components.Activate("text_encoder");
        using var inference = inference_mode();
        var encoder = new Flux2KleinPromptEncoder(Components.Tokenizer!, Components.TextEncoder!);
        return encoder.Encode(prompts, Components.Device, Components.TextEncoder!.WeightDtype(), maxSequenceLength, layers, cancellationToken);
    }

    /// <summary>diffusers' <c>compute_empirical_mu</c>: FLUX.2's shift for <paramref name="imageSeqLen"/> image tokens and
    /// <paramref name="numSteps"/> steps (a line in the step count between fits at 10 and 200 steps; above 4300 tokens the
    /// 200-step fit).</summary>
    public static double ComputeEmpiricalMu(int imageSeqLen, int numSteps)
    {
        const double a1 = 8.73809524e-05, b1 = 1.89833333, a2 = 0.00016927, b2 = 0.45666666;
        if (imageSeqLen > 4300) return a2 * imageSeqLen + b2;
        double m200 = a2 * imageSeqLen + b2, m10 = a1 * imageSeqLen + b1;
        double a = (m200 - m10) / 190.0, b = m200 - 200.0 * a;
        return a * numSteps + b;
    }

    /// <summary>
    /// Decodes intermediate packed latents of a <paramref name="height"/> × <paramref name="width"/> image (e.g.
    /// <see cref="StepEndContext.Latents"/> in a step callback) to images, as a preview of the generation so far. Under
    /// model offload the VAE comes to the device for it and the transformer goes back after.
    /// </summary>
    public IReadOnlyList<ImageBuffer> PreviewImages(Tensor latents, int height, int width) =>
        DecodePreview(latents, () => DecodeOnDevice(latents, OutputType.Image, height / SizeMultiple, width / SizeMultiple).Images!);

    /// <summary>The prompt count of a request (embedding batch or prompt strings).</summary>
    private protected static int PromptCount(Flux2KleinRequest r) => r.PromptEmbeds is { } e ? (int)e.shape[0] : r.Prompt!.Value.Count;

    /// <summary>
    /// One side of diffusers' <c>encode_prompt</c>: the given embeddings (one row, or one per prompt) or the encoded
    /// prompts, each prompt repeated per image, on the device: [B·n, L, D].
    /// </summary>
    private protected Tensor TextSide(IReadOnlyList<string>? texts, Tensor? embeds, int prompts, Flux2KleinRequest r, CancellationToken ct)
    {
        embeds ??= EncodePrompt(texts!, r.MaxSequenceLength, r.TextEncoderOutLayers, ct);
        var rows = embeds.to(Components.Device);
        if (rows.shape[0] == 1 && prompts > 1) rows = rows.expand(prompts, -1, -1); // one negative row serves every prompt
        int n = r.NumImagesPerPrompt;
        return rows.repeat_interleave(n, dim: 0, output_size: rows.shape[0] * n);
    }

    /// <summary>diffusers' <c>_pack_latents</c>: [B, C, h, w] -> [B, h·w, C], tokens row-major.</summary>
    private protected static Tensor Pack(Tensor latents) =>
        latents.reshape(latents.shape[0], latents.shape[1], -1).permute(0, 2, 1);

    /// <summary>The inverse of <see cref="Pack"/> for an h × w grid (diffusers' <c>_unpack_latents_with_ids</c> on the
    /// row-major ids this pipeline builds).</summary>
    private protected static Tensor Unpack(Tensor latents, int gridH, int gridW) =>
        latents.view(latents.shape[0], gridH, gridW, latents.shape[2]).permute(0, 3, 1, 2);

    /// <summary>diffusers' <c>_patchify_latents</c>: [B, C, H, W] -> [B, 4C, H/2, W/2], channels (c, dy, dx).</summary>
    private protected static Tensor Patchify(Tensor latents)
    {
        long b = latents.shape[0], c = latents.shape[1], h = latents.shape[2], w = latents.shape[3];
        return latents.view(b, c, h / 2, 2, w / 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, c * 4, h / 2, w / 2);
    }

    /// <summary>diffusers' <c>_unpatchify_latents</c>: [B, 4C, h, w] -> [B, C, 2h, 2w].</summary>
    private protected static Tensor Unpatchify(Tensor latents)
    {
        long b = latents.shape[0], c = latents.shape[1], h = latents.shape[2], w = latents.shape[3];
        return latents.reshape(b, c / 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(b, c / 4, h * 2, w * 2);
    }

    /// <summary>Token positions (t, h, w, l) of an h × w grid at time coordinate <paramref name="t"/>, row-major: [h·w, 4]
    /// (diffusers' <c>_prepare_latent_ids</c> / <c>_prepare_image_ids</c>; int64 there, exact in float32 here).</summary>
    private protected static Tensor PositionIds(int t, int gridH, int gridW, Device device)
    {
        using var scope = NewDisposeScope();
        var rows = arange(gridH, dtype: ScalarType.Float32).unsqueeze(1).expand(gridH, gridW);
        var cols = arange(gridW, dtype: ScalarType.Float32).unsqueeze(0).expand(gridH, gridW);
        var ids = stack([full(gridH, gridW, (float)t), rows, cols, zeros(gridH, gridW)], -1).reshape(gridH * gridW, 4);
        return ids.to(device).MoveToOuterDisposeScope();
    }

    /// <summary>diffusers' <c>_prepare_text_ids</c>: (0, 0, 0, l) for each of <paramref name="length"/> tokens: [L, 4].</summary>
    private protected static Tensor TextIds(long length, Device device)
    {
        using var scope = NewDisposeScope();
        var ids = zeros(length, 4, ScalarType.Float32);
        ids.select(1, 3).copy_(arange(length, dtype: ScalarType.Float32));
        return ids.to(device).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// diffusers' <c>_encode_vae_image</c>: a preprocessed image [N, 3, H, W] encoded by the VAE (the posterior's mode),
    /// patchified and normalised with the batch-norm statistics: [N, 4C, H/16, W/16] in the VAE's dtype.
    /// </summary>
    private protected Tensor EncodeImageLatents(Tensor pixels)
    {
        var vae = Components.Vae;
        var device = Components.Device;
        Components.Activate("vae");
        using var posterior = vae.Encode(pixels.to(vae.WeightDtype(), device));
        var latents = Patchify(posterior.Mode());
        var (mean, std) = vae.LatentStatistics(latents.dtype, device);
        return (latents - mean) / std;
    }

    /// <summary>
    /// The denoising loop: per step the transformer on the positive text (and under CFG the negative), the reference
    /// tokens appended to the image tokens and their predictions dropped, the CFG combination, the scheduler step, then
    /// the callback. <paramref name="afterStep"/> (inpainting's blend), given the new latents and the step index, returns the
    /// latents to continue with. <paramref name="forward"/> replaces the appended-reference forward (the KV pipeline's
    /// cache; <paramref name="imageLatents"/> are then not used). Each step runs in its own dispose scope; cancellation is
    /// checked between steps.
    /// </summary>
    private protected Tensor Denoise(Tensor latents, Tensor latentIds, Tensor? imageLatents, Tensor? imageIds, Tensor positive, Tensor? negative,
        FlowMatchEulerDiscreteScheduler scheduler, Tensor timesteps, Flux2KleinRequest r, IProgress<PipelineProgress>? progress, CancellationToken ct,
        Func<Tensor, int, Tensor>? afterStep = null, Flux2StepForward? forward = null)
    {
        var transformer = Components.Transformer;
        var device = Components.Device;
        var modelDtype = transformer.WeightDtype();
        using var standard = forward is null ? new Flux2AppendedReferenceForward(transformer, latentIds, imageLatents?.to(modelDtype), imageIds) : null;
        var step = forward ?? standard!;
        var positiveIds = TextIds(positive.shape[1], device);
        var negativeIds = negative is null ? null : TextIds(negative.shape[1], device);
        int total = (int)timesteps.shape[0];
        double scale = r.GuidanceScale;
        Components.Activate("transformer");
        progress?.Report(new PipelineProgress("denoise", 0, total));
        for (int i = 0; i < total; i++)
        {
            ct.ThrowIfCancellationRequested();
            var t = timesteps[i];
            using (var stepScope = NewDisposeScope())
            {
                // diffusers: t.expand(B).to(latents.dtype), then / 1000 in that dtype.
                var sigma = t.expand(latents.shape[0]).to(latents.dtype) / 1000;
                var input = latents.to(modelDtype);
                var prediction = step.Predict(i, input, sigma, positive, positiveIds, ct);
                if (negative is not null && scale > 1)
                {
                    var negPrediction = step.Predict(i, input, sigma, negative, negativeIds!, ct);
                    prediction = negPrediction + scale * (prediction - negPrediction);
                }
                var next = scheduler.Step(prediction, t, latents);
                if (afterStep is not null) next = afterStep(next, i);
                next.MoveToOuterDisposeScope();
                latents.Dispose();
                latents = next;
            }
            progress?.Report(new PipelineProgress("denoise", i + 1, total));
            if (r.CallbackOnStepEnd is { } callback)
            {
                var context = new StepEndContext
                {
                    Step = i, TotalSteps = total, Timestep = t.item<float>(), Latents = latents, PromptEmbeds = positive, GuidanceScale = scale,
                };
                callback(context);
                latents = StepEndContext.Adopt(latents, context.Latents);
                if (!ReferenceEquals(context.PromptEmbeds, positive))
                {
                    if (!context.PromptEmbeds.shape.SequenceEqual(positive.shape))
                        throw new InvalidOperationException($"The step callback replaced prompt_embeds [{string.Join(", ", positive.shape)}] with [{string.Join(", ", context.PromptEmbeds.shape)}]; keep the shape.");
                    positive = StepEndContext.Adopt(positive, context.PromptEmbeds);
                }
                scale = context.GuidanceScale;
                if (context.Interrupt) break;
            }
        }
        return latents;
    }

    /// <summary>
    /// Flux2KleinPipeline's and Flux2KleinKVPipeline's <c>__call__</c>: text to image, or editing with the request's
    /// reference images; <see cref="ReferenceForward"/> says how the reference tokens enter the transformer.
    /// </summary>
    private protected Flux2Output GenerateWithReferences(Flux2KleinRequest request, IProgress<PipelineProgress>? progress, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        var r = request;
        var (height, width) = ReferenceOutputSize(r);
        CheckInputs(r, height, width);
        if (r.Images is { } references)
            for (int i = 0; i < references.Count; i++)
            {
                if (references[i] is null) throw new ArgumentException($"Reference image {i} is null.");
                Flux2ImageProcessor.CheckImageInput(references[i], $"Reference image {i}");
            }
        bool cfg = DoesCfg(r);
        int prompts = PromptCount(r), batch = prompts * r.NumImagesPerPrompt;

        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var positive = TextSide(r.Prompt?.Items, r.PromptEmbeds, prompts, r, cancellationToken);
        // diffusers encodes "" for the negative side (no negative prompt text is taken).
        Tensor? negative = cfg ? TextSide(Enumerable.Repeat("", prompts).ToArray(), r.NegativePromptEmbeds, prompts, r, cancellationToken) : null;
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        // prepare_latents: noise drawn as patchified latents in the prompt embeddings' dtype (or the given ones), packed.
        var dtype = positive.dtype;
        int gridH = height / SizeMultiple, gridW = width / SizeMultiple;
        int channels = Components.Transformer.Config.InChannels;
        var noise = r.Latents is { } given
            ? given.to(dtype, device, copy: true)
            : RandomDraws.Randn([batch, channels, gridH, gridW], r.Generator, r.Generators, dtype, device);
        var latents = Pack(noise);
        var latentIds = PositionIds(0, gridH, gridW, device);

        Tensor? imageLatents = null, imageIds = null;
        if (r.Images is { Count: > 0 } images) (imageLatents, imageIds) = EncodeReferenceImages(images, batch);

        int steps = r.NumInferenceSteps ?? DefaultSteps;
        using var scheduler = new FlowMatchEulerDiscreteScheduler(Components.SchedulerConfig);
        var sigmas = r.Sigmas ?? Flux.FluxPipelineBase.DefaultSigmas(steps);
        // diffusers computes mu from num_inference_steps even when custom sigmas set the step count.
        scheduler.SetTimesteps(sigmas.Length, device, sigmas, ComputeEmpiricalMu((int)latents.shape[1], steps));
        using var forward = ReferenceForward(latentIds, imageLatents, imageIds);
        latents = Denoise(latents, latentIds, imageLatents, imageIds, positive, negative, scheduler, scheduler.Timesteps, r, progress, cancellationToken,
            forward: forward);
        return DecodeAndFinish(progress, () => DecodeOnDevice(latents, r.OutputType, gridH, gridW));
    }

    /// <summary>
    /// The step forward of <see cref="GenerateWithReferences"/> for these ids and reference latents (null: the standard
    /// one, reference tokens appended to every forward).
    /// </summary>
    private protected virtual Flux2StepForward? ReferenceForward(Tensor latentIds, Tensor? imageLatents, Tensor? imageIds) => null;

    /// <summary>The output size of <paramref name="r"/>: its height and width, else the first reference image's encoded size
    /// (<see cref="Flux2ImageProcessor.ReferenceSize"/>), else 1024 × 1024.</summary>
    private protected (int Height, int Width) ReferenceOutputSize(Flux2KleinRequest r)
    {
        ArgumentNullException.ThrowIfNull(r);
        (int Width, int Height)? first = r.Images is { Count: > 0 } images && images[0] is { } image
            ? Flux2ImageProcessor.ReferenceSize(image, SizeMultiple) : null;
        return (r.Height ?? first?.Height ?? DefaultSize, r.Width ?? first?.Width ?? DefaultSize);
    }

    /// <summary>
    /// diffusers' <c>prepare_image_latents</c>: each reference image preprocessed, encoded by the VAE (the posterior's
    /// mode), patchified and normalised with the batch-norm statistics, packed, all concatenated along the tokens and
    /// repeated to the batch ([batch, Σ h·w, 4C], in the VAE's dtype), with their positions at t = 10, 20, … ([Σ h·w, 4]).
    /// </summary>
    private (Tensor Latents, Tensor Ids) EncodeReferenceImages(IReadOnlyList<ImageBuffer> images, int batch)
    {
        var device = Components.Device;
        var packed = new List<Tensor>(images.Count);
        var ids = new List<Tensor>(images.Count);
        for (int i = 0; i < images.Count; i++)
        {
            var latents = EncodeImageLatents(Flux2ImageProcessor.PreprocessReference(images[i], ImageProcessor, SizeMultiple));
            packed.Add(Pack(latents));
            ids.Add(PositionIds(ReferenceTimeOffset * (i + 1), (int)latents.shape[2], (int)latents.shape[3], device));
        }
        var all = cat(packed.ToArray(), 1);
        return (all.repeat(batch, 1, 1), cat(ids.ToArray(), 0));
    }

    /// <summary>Unpack, de-normalise with the VAE's batch-norm statistics, unpatchify, then decode (or return those latents).</summary>
    private protected Flux2Output DecodeOnDevice(Tensor latents, OutputType outputType, int gridH, int gridW)
    {
        using var scope = NewDisposeScope();
        var vae = Components.Vae;
        var unpacked = Unpack(latents, gridH, gridW);
        var (mean, std) = vae.LatentStatistics(unpacked.dtype, unpacked.device);
        var denormalised = Unpatchify(unpacked * std + mean);
        if (outputType == OutputType.Latent) return new Flux2Output(null, denormalised.contiguous().DetachFromDisposeScope());
        Components.Activate("vae");
        var decoded = vae.Decode(denormalised.to(vae.WeightDtype()));
        var (images, tensor) = DecodedOutput.From(decoded, outputType, ImageProcessor);
        return new Flux2Output(images, tensor);
    }

    /// <summary>Validates what the FLUX.2 [klein] pipelines take, before any compute (diffusers' checks, and what would fail
    /// later in its call).</summary>
    private protected void CheckInputs(Flux2KleinRequest r, int height, int width)
    {
        static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";
        var config = Components.Transformer.Config;
        int multiple = SizeMultiple;
        // diffusers only warns and rounds the size down; a size it would change is refused here instead.
        if (height <= 0 || width <= 0 || height % multiple != 0 || width % multiple != 0)
            throw new ArgumentException($"height and width must be positive multiples of {multiple}, got {height}x{width} (try {Math.Max(multiple, height - height % multiple)}x{Math.Max(multiple, width - width % multiple)}).");
        if (r.NumInferenceSteps is < 1)
            throw new ArgumentException($"num_inference_steps must be at least 1, got {r.NumInferenceSteps}.");
        if (r.Sigmas is { Length: 0 })
            throw new ArgumentException("sigmas must not be empty.");
        if (r.Sigmas is { } sigmas && sigmas.Any(s => !float.IsFinite(s)))
            throw new ArgumentException("sigmas must be finite numbers.");
        if (!double.IsFinite(r.GuidanceScale))
            throw new ArgumentException($"guidance_scale must be a finite number, got {r.GuidanceScale}.");
        if (r.NumImagesPerPrompt < 1)
            throw new ArgumentException($"num_images_per_prompt must be at least 1, got {r.NumImagesPerPrompt}.");
        if (r.MaxSequenceLength < 1)
            throw new ArgumentException($"max_sequence_length must be at least 1, got {r.MaxSequenceLength}.");
        if (r.OutputType is not (OutputType.Image or OutputType.Numpy or OutputType.Tensor or OutputType.Latent))
            throw new ArgumentException($"Unknown output type {r.OutputType}.");
        if (r.PromptEmbeds is not null && r.Prompt is not null)
            throw new ArgumentException("Give either a prompt or prompt_embeds, not both.");
        if (r.PromptEmbeds is null && (r.Prompt is null || r.Prompt.Value.Count == 0))
            throw new ArgumentException("Give a prompt or prompt_embeds.");
        if (r.Prompt is { } p && p.Items.Any(s => s is null))
            throw new ArgumentException("A prompt is null.");
        bool cfg = DoesCfg(r);
        bool needsEncoder = r.PromptEmbeds is null || (cfg && r.NegativePromptEmbeds is null);
        if (needsEncoder)
        {
            if (!CanEncodePrompts)
                throw new ArgumentException("FLUX.2 prompt strings (and the empty negative prompt of CFG) need the Qwen3 text encoder, which these components do not have " +
                    $"(loaded with LoadTextEncoders = false, or built without one): pass prompt_embeds [B, L, {config.JointAttentionDim}] (and negative_prompt_embeds for CFG).");
            var text = Components.TextEncoder!.Config;
            var layers = r.TextEncoderOutLayers ?? throw new ArgumentException("text_encoder_out_layers must not be null.");
            if (layers.Count == 0 || layers.Any(k => k < 0 || k > text.NumHiddenLayers))
                throw new ArgumentException($"text_encoder_out_layers [{string.Join(", ", layers)}] must name hidden states in [0, {text.NumHiddenLayers}] (the text encoder has {text.NumHiddenLayers} layers).");
            if ((long)layers.Count * text.HiddenSize != config.JointAttentionDim)
                throw new ArgumentException($"{layers.Count} stacked hidden states of the {text.HiddenSize}-wide text encoder give {(long)layers.Count * text.HiddenSize} features but the FLUX.2 transformer takes {config.JointAttentionDim} (joint_attention_dim).");
        }
        int prompts = PromptCount(r);
        void CheckEmbeds(Tensor e, string name, bool broadcast)
        {
            if (e.dim() != 3 || e.shape[1] < 1 || e.shape[2] != config.JointAttentionDim || !e.is_floating_point())
                throw new ArgumentException($"{name} must be a floating-point [B, L, {config.JointAttentionDim}] tensor (the transformer's joint_attention_dim) with at least one token, got {Shape(e)} {e.dtype}.");
            if (e.shape[0] != prompts && !(broadcast && e.shape[0] == 1))
                throw new ArgumentException($"{name} holds {e.shape[0]} prompts for {prompts}; give one row per prompt{(broadcast ? ", or one for all" : "")}.");
        }
        if (r.PromptEmbeds is { } pe) CheckEmbeds(pe, "prompt_embeds", broadcast: false);
        if (r.NegativePromptEmbeds is { } ne) CheckEmbeds(ne, "negative_prompt_embeds", broadcast: true);
        if (r.Generator is not null && r.Generators is not null)
            throw new ArgumentException("Give one generator or a list of generators, not both.");
        int batch = prompts * r.NumImagesPerPrompt;
        if (r.Generators is { } generators && generators.Count != batch)
            throw new ArgumentException($"{generators.Count} generators were given for a batch of {batch} (prompts x images per prompt).");
        long[] latentShape = [batch, config.InChannels, height / multiple, width / multiple];
        if (r.Latents is { } l && !l.shape.SequenceEqual(latentShape))
            throw new ArgumentException($"latents must be patchified [{string.Join(", ", latentShape)}] for this request, got {Shape(l)}.");
    }
}
