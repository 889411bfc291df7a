using DiffusersSharp.Images;
using DiffusersSharp.Models;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Schedulers;
using DiffusersSharp.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Lumina2;

/// <summary>
/// Text-to-image with Lumina-Image 2.0 (diffusers' <c>Lumina2Pipeline</c>; e.g. Alpha-VLLM/Lumina-Image-2.0): each prompt
/// after the system prompt (<c>system + " &lt;Prompt Start&gt; " + prompt</c>) -> Gemma-2 tokens padded to
/// max_sequence_length and their mask -> Gemma-2's second-to-last hidden states (the negative prompt, "" by default,
/// without the system prompt) -> noise [B, 16, H/8, W/8] in the embeddings' dtype -> FlowMatchEuler steps
/// (<c>linspace(1, 1/steps, steps)</c> sigmas, shifted) over the transformer, fed <c>1 − t / 1000</c>; under guidance the
/// conditional and unconditional predictions in two transformer calls, <c>uncond + s · (cond − uncond)</c> rescaled to the
/// conditional prediction's norm along the width axis (cfg_normalization), guidance stopped once
/// <c>(step + 1) / steps</c> passes cfg_trunc_ratio; the step takes the negated prediction -> VAE decode
/// (<c>latents / scaling + shift</c>).
/// </summary>
public sealed class Lumina2Pipeline : DiffusionPipelineBase<Lumina2Components>
{
    /// <summary>Wraps loaded components (taking a reference on them; they are freed when the last user is done).</summary>
    public Lumina2Pipeline(Lumina2Components components) : base(components)
    {
        // diffusers: VaeImageProcessor(vae_scale_factor=vae_scale_factor * 2), its other settings the defaults.
        ImageProcessor = new VaeImageProcessor(new VaeImageProcessorConfig { VaeScaleFactor = SizeMultiple });
    }

    /// <summary>Loads a diffusers Lumina-Image 2.0 pipeline folder or hub repo id.</summary>
    public static Lumina2Pipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = Lumina2Components.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new Lumina2Pipeline(components);
    }

    /// <summary>Image post-processing (diffusers' <c>image_processor</c>, at twice the VAE scale factor).</summary>
    public VaeImageProcessor ImageProcessor { get; }

    /// <summary>The VAE's spatial scale factor (8; diffusers fixes it at 8 for this pipeline, which every Lumina-Image 2.0
    /// VAE has).</summary>
    public int VaeScaleFactor => Components.Vae.VaeScaleFactor;

    /// <summary>Height and width must be multiples of this (twice the VAE scale factor: 16).</summary>
    public int SizeMultiple => VaeScaleFactor * 2;

    /// <summary>diffusers' limit on max_sequence_length.</summary>
    public const int MaxSequenceLengthLimit = 512;

    /// <summary>Called when a prompt is cut to max_sequence_length (tokenizer, untruncated length, limit). diffusers logs a
    /// warning.</summary>
    public Action<string, int, int>? OnPromptTruncated { get; set; }

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public ImagePipelineOutput Generate(Lumina2Request request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        var r = request;
        var (height, width) = Size(r);
        CheckInputs(r, height, width);
        using var mode = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        var transformer = Components.Transformer;
        bool cfg = r.GuidanceScale > 1.0;

        progress?.Report(new PipelineProgress("encode", 0, 1));
        var latentShape = LatentShape(r, height, width);
        var (embeds, mask, negEmbeds, negMask) = EncodeCore(r, cfg, latentShape);
        progress?.Report(new PipelineProgress("encode", 1, 1));

        // diffusers draws the noise in prompt_embeds' dtype (the text encoder's, or the given embeddings').
        var latents = r.Latents is { } given
            ? given.to(device)
            : RandomDraws.Randn(latentShape, r.Generator, r.Generators, embeds.dtype, device);

        using var scheduler = CreateScheduler(r, latentShape);
        var timesteps = scheduler.Timesteps;
        int total = (int)timesteps.shape[0];
        var transformerDtype = transformer.Dtype;
        double guidance = r.GuidanceScale;
        float numTrain = Components.SchedulerConfig.NumTrainTimesteps;
        Components.Activate("transformer");
        progress?.Report(new PipelineProgress("denoise", 0, total));
        for (int i = 0; i < total; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var t = timesteps[i];
            using (var stepScope = NewDisposeScope())
            {
                // Lumina's time runs the other way (0 = noise, 1 = image): 1 - t / num_train_timesteps, in float32.
                var current = (1 - t / numTrain).expand(latents.shape[0]);
                var input = latents.to(transformerDtype);
                var prediction = transformer.forward(input, current, embeds.to(transformerDtype), mask);
                bool truncated = (i + 1) / (double)total > r.CfgTruncRatio;
                if (cfg && !truncated)
                {
                    var uncond = transformer.forward(input, current, negEmbeds!.to(transformerDtype), negMask!);
                    var guided = uncond + guidance * (prediction - uncond);
                    if (r.CfgNormalization)
                    {
                        // torch.norm(..., dim=-1, keepdim=True): along the width axis of [B, C, H, W], as diffusers does.
                        var condNorm = linalg.vector_norm(prediction, 2, [-1], keepdim: true);
                        var guidedNorm = linalg.vector_norm(guided, 2, [-1], keepdim: true);
                        guided = guided * (condNorm / guidedNorm);
                    }
                    prediction = guided;
                }
                var next = scheduler.Step(-prediction, t, latents);
                next.MoveToOuterDisposeScope();
                latents.Dispose();
                latents = next;
            }
            progress?.Report(new PipelineProgress("denoise", i + 1, total));
            if (StepEndContext.Run(r.CallbackOnStepEnd, i, total, t.item<float>(), guidance, ref latents, ref embeds)) break;
        }

        if (r.OutputType == OutputType.Latent)
            return new ImagePipelineOutput(null, latents.DetachFromDisposeScope());
        return DecodeAndFinish(progress, () => Decode(latents, r.OutputType));
    }

    /// <summary>
    /// diffusers' <c>encode_prompt</c> for <paramref name="request"/>: the prompts after the system prompt, Gemma's
    /// second-to-last hidden states and the masks (or the given embeddings), repeated for the images per prompt; with
    /// guidance (scale above 1) the negative side (the negative prompt, "" by default, without the system prompt, or the
    /// given negative embeddings, repeated too). Each mask is repeated with its own prompt's embeddings
    /// (<see cref="MaskedPromptInputs.Repeat"/>). The tensors are the caller's.
    /// </summary>
    /// <exception cref="ArgumentException">The request is invalid (checked as the call checks it).</exception>
    public MaskedPromptEmbeddings EncodePrompt(Lumina2Request request)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        var (height, width) = Size(request);
        CheckInputs(request, height, width);
        using var mode = inference_mode();
        using var scope = NewDisposeScope();
        var (e, m, ne, nm) = EncodeCore(request, request.GuidanceScale > 1.0, LatentShape(request, height, width));
        var result = new MaskedPromptEmbeddings(e, m, ne, nm);
        foreach (var t in new[] { e, m, ne, nm }) t?.MoveToOuterDisposeScope();
        return result;
    }

    /// <summary>
    /// Decodes intermediate latents [B, 16, H/8, W/8] (e.g. <see cref="StepEndContext.Latents"/> in a step callback) to
    /// images, as a preview of the generation so far. Under model offload the VAE comes to the device for it and the
    /// transformer goes back after.
    /// </summary>
    public IReadOnlyList<ImageBuffer> PreviewImages(Tensor latents) =>
        DecodePreview(latents, () => Decode(latents, OutputType.Image).Images!);

    /// <summary>The request's size, or the transformer's trained one (sample_size x the VAE scale factor).</summary>
    private (int Height, int Width) Size(Lumina2Request r)
    {
        int size = Components.Transformer.Config.SampleSize * VaeScaleFactor;
        return (r.Height ?? size, r.Width ?? size);
    }

    private long[] LatentShape(Lumina2Request r, int height, int width) =>
        [MaskedPromptInputs.Batch(r), Components.Transformer.Config.InChannels, 2 * (height / SizeMultiple), 2 * (width / SizeMultiple)];

    /// <summary>
    /// A scheduler for one call with its timesteps set as diffusers' pipeline does: the request's sigmas (their count is the
    /// step count, as in diffusers) or <c>linspace(1, 1/steps, steps)</c>, and mu from <c>calculate_shift</c> of
    /// <c>latents.shape[1]</c> — the channel count, not the image token count, exactly as diffusers computes it (mu only
    /// matters under dynamic shifting, which Lumina-Image 2.0's scheduler config leaves off).
    /// </summary>
    private FlowMatchEulerDiscreteScheduler CreateScheduler(Lumina2Request r, long[] latentShape)
    {
        var config = Components.SchedulerConfig;
        var scheduler = new FlowMatchEulerDiscreteScheduler(config);
        var sigmas = r.Sigmas ?? FluxPipelineBase.DefaultSigmas(r.NumInferenceSteps);
        double mu = FlowMatchEulerDiscreteScheduler.CalculateShift((int)latentShape[1], config.BaseImageSeqLen, config.MaxImageSeqLen, config.BaseShift, config.MaxShift);
        scheduler.SetTimesteps(sigmas.Length, Components.Device, sigmas, mu);
        return scheduler;
    }

    /// <summary>Validates the request before any compute (diffusers' check_inputs, and what would fail later in its call).</summary>
    private void CheckInputs(Lumina2Request r, int height, int width)
    {
        var config = Components.Transformer.Config;
        if (height <= 0 || width <= 0 || height % SizeMultiple != 0 || width % SizeMultiple != 0)
            throw new ArgumentException($"height and width must be positive multiples of {SizeMultiple}, got {height}x{width}.");
        if (r.MaxSequenceLength < 1 || r.MaxSequenceLength > MaxSequenceLengthLimit)
            throw new ArgumentException($"max_sequence_length must lie in [1, {MaxSequenceLengthLimit}], got {r.MaxSequenceLength}.");
        if (r.Sigmas is { Length: 0 })
            throw new ArgumentException("sigmas must not be empty.");
        if (r.Sigmas is { } sigmas && sigmas.Any(s => !float.IsFinite(s)))
            throw new ArgumentException("sigmas must be finite numbers.");
        if (double.IsNaN(r.CfgTruncRatio))
            throw new ArgumentException("cfg_trunc_ratio must be a number (1 or more never cuts guidance off).");
        var check = r.Sigmas is null ? r : r with { NumInferenceSteps = r.Sigmas.Length };
        var latentShape = LatentShape(r, height, width);
        MaskedPromptInputs.Check(check, config.CapFeatDim, Components.TextEncoder is not null && Components.Tokenizer is not null, "Gemma", latentShape);
        // The transformer's rotary tables: the image grid, and the given captions' kept tokens (prompt strings are checked
        // once tokenized, before the text encoder runs).
        foreach (var (mask, name) in new[] { (r.PromptAttentionMask, "prompt_attention_mask"), (r.NegativePromptAttentionMask, "negative_prompt_attention_mask") })
        {
            if (mask is null) continue;
            using var kept = mask.ne(0).sum(1);
            if (kept.min().item<long>() < 1)
                throw new ArgumentException($"{name} keeps no token in some row; every prompt needs at least one.");
            CheckRopeRange(kept.max().item<long>(), latentShape, name);
        }
        CheckRopeRange(1, latentShape, "height and width");
    }

    /// <summary>Throws when <paramref name="captionLength"/> kept tokens and the latent grid need rotary positions past
    /// the transformer's axes_lens (diffusers fails indexing its tables there).</summary>
    private void CheckRopeRange(long captionLength, long[] latentShape, string what)
    {
        if (Components.Transformer.RopeRangeProblem(captionLength, latentShape[2], latentShape[3]) is { } problem)
            throw new ArgumentException($"{what}: {problem}");
    }

    /// <summary>The body of <see cref="EncodePrompt(Lumina2Request)"/>, inside the caller's scope.</summary>
    private (Tensor Embeds, Tensor Mask, Tensor? NegEmbeds, Tensor? NegMask) EncodeCore(Lumina2Request r, bool cfg, long[] latentShape)
    {
        Tensor embeds, mask;
        if (r.PromptEmbeds is null)
        {
            string system = r.SystemPrompt ?? Lumina2Request.DefaultSystemPrompt;
            (embeds, mask) = EncodeText(r.Prompt!.Value.Items.Select(p => system + " <Prompt Start> " + p).ToArray(), r.MaxSequenceLength, latentShape);
        }
        else (embeds, mask) = (r.PromptEmbeds, r.PromptAttentionMask!);
        var device = Components.Device;
        var (e, m) = MaskedPromptInputs.Repeat(embeds.to(device), mask.to(device), r.NumImagesPerPrompt);
        if (!cfg) return (e, m, null, null);
        Tensor negEmbeds, negMask;
        if (r.NegativePromptEmbeds is null)
        {
            var negatives = (r.NegativePrompt ?? "").Broadcast((int)embeds.shape[0], "negative prompts");
            (negEmbeds, negMask) = EncodeText(negatives, r.MaxSequenceLength, latentShape);
        }
        else (negEmbeds, negMask) = (r.NegativePromptEmbeds, r.NegativePromptAttentionMask!);
        var (ne, nm) = MaskedPromptInputs.Repeat(negEmbeds.to(device), negMask.to(device), r.NumImagesPerPrompt);
        return (e, m, ne, nm);
    }

    /// <summary>Texts -> Gemma ids padded on the right to <paramref name="maxSequenceLength"/> and their mask -> Gemma's
    /// second-to-last hidden states (<c>output_hidden_states=True</c>, <c>hidden_states[-2]</c>).</summary>
    private (Tensor Embeds, Tensor Mask) EncodeText(IReadOnlyList<string> texts, int maxSequenceLength, long[] latentShape)
    {
        var tokenizer = Components.Tokenizer!;
        var batch = tokenizer.EncodeBatch(texts, maxSequenceLength, truncate: true, paddingSide: PaddingSide.Right);
        CheckRopeRange(batch.Lengths.Max(), latentShape, "the prompt's tokens");
        for (int i = 0; i < batch.Count; i++)
            if (batch.Lengths[i] < batch.UntruncatedLengths[i]) OnPromptTruncated?.Invoke("tokenizer (Gemma)", batch.UntruncatedLengths[i], batch.Width);
        var device = Components.Device;
        var ids = tensor(batch.Ids, [batch.Count, batch.Width], device: device);
        var mask = tensor(batch.Mask, [batch.Count, batch.Width], device: device);
        Components.Activate("text_encoder");
        return (Components.TextEncoder!.HiddenState(ids, mask, -2), mask);
    }

    /// <summary>The VAE decode (<c>latents / scaling_factor + shift_factor</c>) and the output form.</summary>
    private ImagePipelineOutput Decode(Tensor latents, OutputType outputType)
    {
        Components.Activate("vae");
        using var scope = NewDisposeScope();
        var vae = Components.Vae;
        var scaled = latents.to(vae.WeightDtype()) / vae.Config.ScalingFactor + (vae.Config.ShiftFactor ?? 0.0);
        var (images, output) = DecodedOutput.From(vae.Decode(scaled), outputType, ImageProcessor);
        return new ImagePipelineOutput(images, output);
    }
}
