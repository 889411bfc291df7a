using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion3;

// Image-to-image (diffusers' StableDiffusion3Img2ImgPipeline and StableDiffusion3PAGImg2ImgPipeline).
public abstract partial class StableDiffusion3PipelineBase
{
    /// <summary>
    /// Image-to-image (diffusers' <c>StableDiffusion3Img2ImgPipeline.__call__</c>, and
    /// <c>StableDiffusion3PAGImg2ImgPipeline.__call__</c> when <paramref name="checkPag"/>, run after the common checks and
    /// before any compute, returns the call's guidance: the prompt batch for it and the layers <paramref name="pagLayers"/>
    /// perturbed for the denoising loop): the image is encoded, noised to the timestep that strength selects, and denoised
    /// from there.
    /// </summary>
    private protected StableDiffusion3Output ImageToImage(StableDiffusion3Img2ImgRequest request, Func<PerturbedAttentionGuidance?> checkPag,
        IReadOnlyList<string>? pagLayers, IProgress<PipelineProgress>? progress, CancellationToken cancellationToken)
    {
        int height = request.Height ?? DefaultSize, width = request.Width ?? DefaultSize;
        CheckInputs(request, height, width);
        StableDiffusion3Img2ImgPipeline.CheckImageInputs(request);
        var pag = checkPag();
        int steps = request.NumInferenceSteps ?? DefaultSteps;
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        bool cfg = request.GuidanceScale > 1;
        int batch = BatchSize(request) * request.NumImagesPerPrompt;
        var image = request.Image is null ? null : PreprocessImage(request.Image, height, width);
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (embeds, pooled, positive, positivePooled) = EncodePrompt(request, cfg);
        if (pag is not null) (embeds, pooled) = PagBatch(embeds, pooled, positive, positivePooled, cfg);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        using var scheduler = CreateScheduler(request, steps, height, width);
        var (timesteps, remaining) = StrengthTimesteps(scheduler, request.Strength);

        Tensor latents;
        if (request.Latents is { } given) latents = given.to(embeds.dtype, Components.Device, copy: true);
        else
        {
            var init = EncodeImage(image!, request, embeds.dtype, batch);
            var noise = RandnTensor(init.shape, request, embeds.dtype);
            var latentTimestep = timesteps[..1].repeat(batch);
            latents = scheduler.ScaleNoise(init, latentTimestep, noise).to(embeds.dtype);
        }
        using (pag is null ? null : Components.Transformer.PerturbAttention(pagLayers!, pag.Cfg))
            latents = Denoise(latents, embeds, pooled, positive, positivePooled, scheduler, timesteps, request with { SkipGuidanceLayers = null },
                remaining, progress, cancellationToken, null, pag);
        return Decode(latents, request.OutputType, addShift: true, progress);
    }

    /// <summary>diffusers' img2img <c>prepare_latents</c> up to the noise: VAE posterior sample, shift and scale, tiled to the batch.</summary>
    private Tensor EncodeImage(Tensor image, StableDiffusion3Img2ImgRequest request, ScalarType dtype, int batch)
    {
        image = image.to(dtype, Components.Device);
        Tensor init;
        var vae = Components.Vae;
        if (image.shape[1] == vae.Config.LatentChannels) init = image;
        else
        {
            init = SampleLatents(image, request);
            init = (init - (vae.Config.ShiftFactor ?? 0)) * vae.Config.ScalingFactor;
        }
        if (batch > init.shape[0] && batch % init.shape[0] == 0) init = cat(Enumerable.Repeat(init, (int)(batch / init.shape[0])).ToArray(), 0);
        else if (batch > init.shape[0])
            throw new ArgumentException($"Cannot duplicate an image batch of {init.shape[0]} to {batch} images.");
        return init;
    }
}
