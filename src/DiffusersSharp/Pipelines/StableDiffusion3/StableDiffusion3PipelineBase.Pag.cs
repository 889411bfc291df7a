using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion3;

// Perturbed-attention guidance (diffusers' PAGMixin in StableDiffusion3PAGPipeline).
public abstract partial class StableDiffusion3PipelineBase
{
    /// <summary>
    /// The PAG inputs, before any compute: finite non-negative scales; no skip-layer guidance or IP-Adapter (diffusers'
    /// PAG pipelines have neither); layers that resolve in this transformer. Returns the call's guidance, or null when
    /// PAG is off (pag_scale 0 or no layers).
    /// </summary>
    private protected PerturbedAttentionGuidance? CheckPagInputs(StableDiffusion3Request r, double scale, double adaptiveScale, IReadOnlyList<string> layers)
    {
        PerturbedAttentionGuidance.CheckScales(scale, adaptiveScale, layers);
        if (r.SkipGuidanceLayers is not null)
            throw new ArgumentException("The SD3 PAG pipelines have no skip-layer guidance (diffusers' StableDiffusion3PAGPipeline takes no skip_guidance_layers).");
        if (r.IpAdapterImage is not null || r.IpAdapterImageEmbeds is not null || r.IpAdapterScale is not null)
            throw new ArgumentException("The SD3 PAG pipelines take no IP-Adapter image (diffusers' StableDiffusion3PAGPipeline has no ip_adapter_image).");
        if (!PerturbedAttentionGuidance.IsOn(scale, layers)) return null;
        Components.Transformer.ResolvePagLayers(layers);
        return new PerturbedAttentionGuidance(scale, adaptiveScale, r.GuidanceScale > 1);
    }

    /// <summary>diffusers' <c>_prepare_perturbed_attention_guidance</c> on the encoded prompt: [negative, positive,
    /// positive] under CFG (<paramref name="embeds"/> is then [negative; positive]), [positive, positive] without.</summary>
    private protected static (Tensor Embeds, Tensor Pooled) PagBatch(Tensor embeds, Tensor pooled, Tensor positive, Tensor positivePooled, bool cfg) =>
        cfg ? (cat([embeds, positive], 0), cat([pooled, positivePooled], 0)) : (cat([positive, positive], 0), cat([positivePooled, positivePooled], 0));

    /// <summary>
    /// Text-to-image (diffusers' <c>StableDiffusion3Pipeline.__call__</c>, and <c>StableDiffusion3PAGPipeline.__call__</c>
    /// when <paramref name="checkPag"/>, run after the common checks and before any compute, returns the call's guidance:
    /// the prompt batch for it and the layers <paramref name="pagLayers"/> perturbed for the denoising loop).
    /// </summary>
    private protected StableDiffusion3Output TextToImage(StableDiffusion3Request request, Func<PerturbedAttentionGuidance?> checkPag,
        IReadOnlyList<string>? pagLayers, IProgress<PipelineProgress>? progress, CancellationToken cancellationToken)
    {
        int height = request.Height ?? DefaultSize, width = request.Width ?? DefaultSize;
        CheckInputs(request, height, width);
        var pag = checkPag();
        int steps = request.NumInferenceSteps ?? DefaultSteps;
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        bool cfg = request.GuidanceScale > 1;
        int batch = BatchSize(request) * request.NumImagesPerPrompt;
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (embeds, pooled, positive, positivePooled) = EncodePrompt(request, cfg);
        if (pag is not null) (embeds, pooled) = PagBatch(embeds, pooled, positive, positivePooled, cfg);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        var latents = InitialLatents(request, batch, height, width, embeds.dtype);

        using var scheduler = CreateScheduler(request, steps, height, width);
        var timesteps = scheduler.Timesteps;
        using (pag is null ? null : Components.Transformer.PerturbAttention(pagLayers!, pag.Cfg))
            latents = Denoise(latents, embeds, pooled, positive, positivePooled, scheduler, timesteps, request,
                (int)timesteps.shape[0], progress, cancellationToken, null, pag);
        return Decode(latents, request.OutputType, addShift: true, progress);
    }
}
