using DiffusersSharp.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion3;

/// <summary>
/// Inpainting with Stable Diffusion 3 / 3.5 (diffusers' <c>StableDiffusion3InpaintPipeline</c>): white mask pixels are
/// repainted; after every step the latents outside the mask are reset to the original image's latents noised to the next
/// timestep. Works with the standard 16-channel transformer (and the 33-channel inpainting variant).
/// </summary>
public sealed class StableDiffusion3InpaintPipeline : StableDiffusion3PipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them).</summary>
    public StableDiffusion3InpaintPipeline(StableDiffusion3Components components) : base(components) { }

    /// <summary>Loads a diffusers pipeline folder.</summary>
    public static StableDiffusion3InpaintPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = StableDiffusion3Components.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new(components); // the pipeline's own reference keeps them
    }

    /// <summary>An inpainting pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static StableDiffusion3InpaintPipeline FromPipe(StableDiffusion3PipelineBase other) => new(other.Components);

    /// <inheritdoc />
    protected override int DefaultSteps => 50;

    /// <summary>
    /// Whether the decode adds the VAE shift factor. diffusers' inpainting pipeline decodes <c>latents / scaling_factor</c>
    /// without the shift the other SD3 pipelines add (huggingface/diffusers#13611); false reproduces diffusers bit for bit,
    /// true decodes as text-to-image does.
    /// </summary>
    public bool DecodeWithShiftFactor { get; set; }

    /// <summary>Inpaints <see cref="StableDiffusion3Img2ImgRequest.Image"/> where <see cref="StableDiffusion3InpaintRequest.MaskImage"/> is white.</summary>
    public StableDiffusion3Output Generate(StableDiffusion3InpaintRequest request, IProgress<PipelineProgress>? progress = null,
        CancellationToken cancellationToken = default)
    {
        int height = request.Height ?? DefaultSize, width = request.Width ?? DefaultSize;
        CheckInputs(request, height, width);
        StableDiffusion3Img2ImgPipeline.CheckImageInputs(request);
        if (request.Image is null) throw new ArgumentException("image is required for inpainting.");
        if (request.MaskImage is null) throw new ArgumentException("mask_image is required for inpainting.");
        int inChannels = Components.Transformer.Config.InChannels;
        if (inChannels is not (16 or 33))
            throw new ArgumentException($"The transformer must have 16 or 33 input channels for inpainting, not {inChannels}.");
        var maskCrop = MaskCrop.For(request.PaddingMaskCrop, request.Image, request.MaskImage, request.OutputType, height, width);
        int steps = request.NumInferenceSteps ?? DefaultSteps;
        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        {
            bool cfg = request.GuidanceScale > 1;
            int batch = BatchSize(request) * request.NumImagesPerPrompt;
            var vae = Components.Vae;
            var initImage = PreprocessImage(request.Image, height, width, maskCrop).to(ScalarType.Float32);
            var maskCondition = PreprocessMask(request.MaskImage, height, width, maskCrop);
            progress?.Report(new PipelineProgress("encode", 0, 1));
            var (embeds, pooled, positive, positivePooled) = EncodePrompt(request, cfg);
            progress?.Report(new PipelineProgress("encode", 1, 1));
            cancellationToken.ThrowIfCancellationRequested();
            var dtype = embeds.dtype;

            using var scheduler = CreateScheduler(request, steps, height, width);
            var (timesteps, remaining) = StrengthTimesteps(scheduler, request.Strength);
            var latentTimestep = timesteps[..1].repeat(batch);
            bool strengthMax = request.Strength == 1.0;

            // prepare_latents: draw 1 (posterior of the image, for 16-channel models) then draw 2 (noise).
            long[] shape = [batch, vae.Config.LatentChannels, height / VaeScaleFactor, width / VaeScaleFactor];
            var image = initImage.to(dtype, Components.Device);
            Tensor? imageLatents = null;
            if (inChannels == 16 || (request.Latents is null && !strengthMax))
            {
                imageLatents = image.shape[1] == 16 ? image : (SampleLatents(image, request) - (vae.Config.ShiftFactor ?? 0)) * vae.Config.ScalingFactor;
                imageLatents = imageLatents.repeat(batch / imageLatents.shape[0], 1, 1, 1);
            }
            Tensor latents, noise;
            if (request.Latents is { } given)
            {
                noise = given.to(Components.Device, copy: true);
                latents = noise.alias(); // the loop frees its latents each step; the noise must outlive it
            }
            else
            {
                noise = RandnTensor(shape, request, dtype);
                latents = strengthMax ? noise.alias() : scheduler.ScaleNoise(imageLatents!, latentTimestep, noise);
            }

            // prepare_mask_latents: draw 3 (posterior of the masked image; diffusers draws it even when unused).
            var maskedImage = request.MaskedImageLatents ?? initImage * (maskCondition < 0.5);
            var mask = nn.functional.interpolate(maskCondition, [height / VaeScaleFactor, width / VaeScaleFactor]).to(dtype, Components.Device);
            maskedImage = maskedImage.to(dtype, Components.Device);
            var maskedLatents = maskedImage.shape[1] == 16 ? maskedImage : SampleLatents(maskedImage, request);
            maskedLatents = (maskedLatents - (vae.Config.ShiftFactor ?? 0)) * vae.Config.ScalingFactor;
            if (mask.shape[0] < batch) mask = mask.repeat(batch / mask.shape[0], 1, 1, 1);
            if (maskedLatents.shape[0] < batch) maskedLatents = maskedLatents.repeat(batch / maskedLatents.shape[0], 1, 1, 1);
            var hooks = new InpaintHooks(inChannels, mask, imageLatents, noise, maskedLatents.to(dtype));
            latents = Denoise(latents, embeds, pooled, positive, positivePooled, scheduler, timesteps, request with { SkipGuidanceLayers = null },
                remaining, progress, cancellationToken, hooks);
            var output = Decode(latents, request.OutputType, addShift: DecodeWithShiftFactor, progress);
            if (maskCrop is not null) output = new StableDiffusion3Output(maskCrop.Overlay(ImageProcessor, output.Images!), null);
            return output;
        }
    }

    /// <summary>The inpainting step hooks of one call: the 33-channel input, and the blend of the known region after each step.</summary>
    private sealed class InpaintHooks(int inChannels, Tensor mask, Tensor? imageLatents, Tensor noise, Tensor maskedImageLatents) : DenoiseHooks
    {
        public override Tensor? Mask { get => mask; set => mask = value ?? mask; }

        public override Tensor TransformerInput(Tensor modelInput, bool cfg)
        {
            if (inChannels != 33) return modelInput;
            var m = cfg ? cat([mask, mask], 0) : mask;
            var masked = cfg ? cat([maskedImageLatents, maskedImageLatents], 0) : maskedImageLatents;
            return cat([modelInput, m, masked], 1);
        }

        public override Tensor AfterStep(Tensor latents, int step, FlowMatchEulerDiscreteScheduler scheduler, Tensor timesteps)
        {
            if (inChannels != 16) return latents;
            var proper = imageLatents!;
            // scale_noise uses the scheduler's step index, already advanced to the next timestep.
            if (step < timesteps.shape[0] - 1)
                proper = scheduler.ScaleNoise(proper, timesteps[(step + 1)..(step + 2)], noise);
            return (1 - mask) * proper + mask * latents;
        }
    }
}
