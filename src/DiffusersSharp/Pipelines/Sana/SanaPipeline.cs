using DiffusersSharp.Images;
using DiffusersSharp.Models;
using DiffusersSharp.Pipelines.PixArt;
using DiffusersSharp.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Sana;

/// <summary>
/// Text-to-image with Sana (diffusers' <c>SanaPipeline</c>; e.g. Efficient-Large-Model/Sana_1600M_1024px_diffusers):
/// prompt -> lower-cased, the complex human instruction in front -> Gemma-2 tokens and mask -> Gemma-2's last hidden
/// state, the first token and the last max_sequence_length - 1 positions kept (the negative prompt without the
/// instruction) -> float32 noise [B, C, H/32, W/32] -> scheduler steps over the transformer (CFG on the batched negative +
/// positive halves, the caption mask applied in cross-attention) -> AutoencoderDC decode (latents / scaling_factor), under
/// resolution binning resized and cropped back to the requested size.
/// </summary>
public sealed class SanaPipeline : SanaPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them; they are freed when the last user is done).</summary>
    public SanaPipeline(SanaComponents components) : base(components) { }

    /// <summary>Loads a diffusers Sana pipeline folder or hub repo id.</summary>
    public static SanaPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = SanaComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new SanaPipeline(components);
    }

    /// <inheritdoc />
    private protected override IReadOnlyList<(string Ratio, int Height, int Width)> AspectRatioBins(int sampleSize) => PixArtAspectRatios.ForSana(sampleSize);

    /// <summary>Generates images (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="NotSupportedException">clean_caption was asked for.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public SanaOutput Generate(SanaRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        var r = request;
        var (height, width, requested) = BinnedSize(r);
        using var scheduler = Components.CreateScheduler();
        if (scheduler.Scm is not null)
            throw new ArgumentException("These components' scheduler is SANA-Sprint's SCMScheduler: run them with SanaSprintPipeline.");
        CheckInputs(r, height, width);
        using var mode = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        var transformer = Components.Transformer;
        bool cfg = r.GuidanceScale > 1.0;

        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (embeds, mask, negEmbeds, negMask) = EncodeCore(r, cfg);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        if (cfg)
        {
            embeds = cat([negEmbeds!, embeds], 0);
            mask = cat([negMask!, mask], 0);
        }

        scheduler.SetTimesteps(r.NumInferenceSteps, device);
        var timesteps = scheduler.TimestepValues.ToArray();
        int channels = transformer.Config.InChannels;
        // diffusers draws (and keeps) the latents in float32 whatever the models' dtype.
        var latents = r.Latents is { } given
            ? given.to(ScalarType.Float32, device)
            : RandomDraws.Randn(LatentShape(r, height, width), r.Generator, r.Generators, ScalarType.Float32, device);

        var generator = r.Generator ?? r.Generators?[0];
        var transformerDtype = transformer.Dtype;
        bool learnedSigma = transformer.Config.OutChannelsOrIn / 2 == channels;
        Components.Activate("transformer");
        progress?.Report(new PipelineProgress("denoise", 0, timesteps.Length));
        for (int i = 0; i < timesteps.Length; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            float t = timesteps[i];
            using (var stepScope = NewDisposeScope())
            {
                var modelInput = cfg ? cat([latents, latents], 0) : latents;
                // t.expand(batch) * timestep_scale: float32, as diffusers' int64 (DPM) or float32 (Euler) t times a float.
                var timestep = full(modelInput.shape[0], t, dtype: ScalarType.Float32, device: device) * transformer.Config.TimestepScale;
                var noisePred = transformer.forward(modelInput.to(transformerDtype), embeds.to(transformerDtype), timestep, mask)
                    .to(ScalarType.Float32);
                if (cfg)
                {
                    var halves = noisePred.chunk(2);
                    noisePred = halves[0] + r.GuidanceScale * (halves[1] - halves[0]);
                }
                if (learnedSigma) noisePred = noisePred.chunk(2, 1)[0];
                var next = scheduler.Step(noisePred, t, latents, generator);
                next.MoveToOuterDisposeScope();
                latents.Dispose();
                latents = next;
            }
            progress?.Report(new PipelineProgress("denoise", i + 1, timesteps.Length));
            if (StepEndContext.Run(r.CallbackOnStepEnd, i, timesteps.Length, t, r.GuidanceScale, ref latents, ref embeds)) break;
        }

        if (r.OutputType == OutputType.Latent)
            return new SanaOutput(null, latents.DetachFromDisposeScope());
        var (images, output) = DecodeAndFinish(progress, () => Decode(latents, r.OutputType, requested));
        return new SanaOutput(images, output);
    }

    private protected override void CheckInputs(SanaRequest r, int height, int width)
    {
        var config = Components.Transformer.Config;
        CheckSizeAndText(r, height, width);
        if (r.PromptEmbeds is { } pe && r.GuidanceScale > 1 && r.NegativePromptEmbeds is null && pe.shape[1] != r.MaxSequenceLength)
            throw new ArgumentException($"prompt_embeds have {pe.shape[1]} positions, the negative prompt would have max_sequence_length = {r.MaxSequenceLength}: pass negative_prompt_embeds too, or embeddings of max_sequence_length positions (diffusers fails on the concatenation).");
        MaskedPromptInputs.Check(r, config.CaptionChannels, Components.TextEncoder is not null && Components.Tokenizer is not null, "Gemma",
            LatentShape(r, height, width));
        if (config.GuidanceEmbeds)
            throw new ArgumentException("This transformer embeds a guidance scale (a SANA-Sprint model): SanaPipeline does not pass one (diffusers fails on it too); SanaSprintPipeline is not implemented.");
    }
}
