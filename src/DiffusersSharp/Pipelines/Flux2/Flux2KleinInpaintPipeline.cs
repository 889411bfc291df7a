using DiffusersSharp.Images;
using DiffusersSharp.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux2;

/// <summary>
/// FLUX.2 [klein] inpainting (diffusers' <c>Flux2KleinInpaintPipeline</c>, v0.39): the image is resized to its own size
/// floored to multiples of 16 (scaled down past 1024 × 1024 pixels first), encoded (posterior mode, patchified,
/// batch-norm normalised) and noised with <c>scale_noise</c> to the first timestep <c>strength</c> keeps; its latents also
/// condition every step as a reference (t = 10; an optional second reference image at t = 20); the binarized mask is
/// interpolated (bilinear) to the packed token grid, and after each step the known region is reset to the image latents
/// noised to the next timestep: <c>(1 − m) · image + m · latents</c>. See <see cref="Flux2KleinPipelineBase"/> for the loop.
/// </summary>
public sealed class Flux2KleinInpaintPipeline : Flux2KleinPipelineBase
{
    /// <summary>Wraps loaded components (taking a reference on them; they are freed when the last user is done).</summary>
    public Flux2KleinInpaintPipeline(Flux2KleinComponents components) : base(components) { }

    /// <summary>Loads a diffusers FLUX.2 [klein] pipeline folder or hub repo id (<see cref="Flux2KleinComponents.FromPretrained"/>).</summary>
    public static Flux2KleinInpaintPipeline FromPretrained(string model, PipelineLoadOptions? options = null, CancellationToken cancellationToken = default)
    {
        using var components = Flux2KleinComponents.FromPretrained(model, options ?? new PipelineLoadOptions(), cancellationToken);
        return new Flux2KleinInpaintPipeline(components);
    }

    /// <summary>An inpainting pipeline sharing the components of <paramref name="other"/> (diffusers' <c>from_pipe</c>).</summary>
    public static Flux2KleinInpaintPipeline FromPipe(Flux2KleinPipelineBase other)
    {
        ArgumentNullException.ThrowIfNull(other);
        return new Flux2KleinInpaintPipeline(other.Components);
    }

    /// <summary>The size the image is repainted at: its own, scaled down past 1024 × 1024 pixels, floored to multiples of 16.</summary>
    public (int Height, int Width) OutputSize(ImageBuffer image)
    {
        ArgumentNullException.ThrowIfNull(image);
        var (width, height) = Flux2ImageProcessor.ReferenceSize(image, SizeMultiple);
        return (height, width);
    }

    /// <summary>Repaints <see cref="Flux2KleinInpaintRequest.Image"/> where <see cref="Flux2KleinInpaintRequest.MaskImage"/> is white (diffusers' <c>__call__</c>).</summary>
    /// <exception cref="ArgumentException">The request is invalid; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked between steps).</exception>
    public Flux2Output Generate(Flux2KleinInpaintRequest request, IProgress<PipelineProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        var r = request;
        if (r.Image is null) throw new ArgumentException("image is required for inpainting.");
        if (r.MaskImage is null) throw new ArgumentException("mask_image is required for inpainting.");
        if (r.Images is { Count: > 0 })
            throw new ArgumentException("Flux2KleinInpaintPipeline takes one reference image, image_reference (ImageReference), besides the image itself; images is Flux2KleinPipeline's.");
        Strength.Check(r.Strength);
        var (height, width) = OutputSize(r.Image);
        CheckInputs(r, height, width);
        int total = r.Sigmas?.Length ?? r.NumInferenceSteps ?? DefaultSteps;
        int start = Strength.CheckedStartStep(total, r.Strength);
        bool cfg = DoesCfg(r);
        int prompts = PromptCount(r), batch = prompts * r.NumImagesPerPrompt;
        // Past 1024 x 1024 pixels the image is scaled down first (LANCZOS), as the crop and the paste then see it.
        var image = (long)r.Image.Width * r.Image.Height > Flux2ImageProcessor.MaxReferenceArea
            ? Flux2ImageProcessor.ResizeToTargetArea(r.Image, Flux2ImageProcessor.MaxReferenceArea) : r.Image;
        var maskCrop = MaskCrop.For(r.PaddingMaskCrop, image, r.MaskImage, r.OutputType, height, width);

        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        var pixels = ((PipelineImage)image).Preprocess(ImageProcessor, height, width, maskCrop);
        var maskCondition = ((PipelineImage)r.MaskImage).Preprocess(MaskProcessor, height, width, maskCrop);
        var referencePixels = r.ImageReference is { } reference ? Flux2ImageProcessor.PreprocessReference(reference, ImageProcessor, SizeMultiple) : null;

        progress?.Report(new PipelineProgress("encode", 0, 1));
        var positive = TextSide(r.Prompt?.Items, r.PromptEmbeds, prompts, r, cancellationToken);
        Tensor? negative = cfg ? TextSide(Enumerable.Repeat("", prompts).ToArray(), r.NegativePromptEmbeds, prompts, r, cancellationToken) : null;
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        // retrieve_timesteps (mu from the image's token count and num_inference_steps), then get_timesteps.
        int gridH = height / SizeMultiple, gridW = width / SizeMultiple;
        using var scheduler = new FlowMatchEulerDiscreteScheduler(Components.SchedulerConfig);
        var sigmas = r.Sigmas ?? Flux.FluxPipelineBase.DefaultSigmas(r.NumInferenceSteps ?? DefaultSteps);
        scheduler.SetTimesteps(sigmas.Length, device, sigmas, ComputeEmpiricalMu(gridH * gridW, r.NumInferenceSteps ?? DefaultSteps));
        scheduler.SetBeginIndex(start);
        var timesteps = scheduler.Timesteps[start..];

        // prepare_latents: the image's normalised latents repeated to the batch, the noise in the prompt embeddings' dtype,
        // scale_noise at the first kept timestep (given latents are the noise and the start, as diffusers takes them).
        var dtype = positive.dtype;
        var imageLatents = EncodeImageLatents(pixels).to(dtype);
        if (imageLatents.shape[0] < batch)
        {
            Strength.CheckRepeatsToBatch(imageLatents.shape[0], batch);
            imageLatents = cat(Enumerable.Repeat(imageLatents, (int)(batch / imageLatents.shape[0])).ToArray(), 0);
        }
        int channels = Components.Transformer.Config.InChannels;
        Tensor noise, latents;
        if (r.Latents is { } given) latents = noise = given.to(dtype, device, copy: true);
        else
        {
            noise = RandomDraws.Randn([batch, channels, gridH, gridW], r.Generator, r.Generators, dtype, device);
            latents = scheduler.ScaleNoise(imageLatents, timesteps[..1].repeat(batch), noise);
        }
        var packedNoise = Pack(noise);
        var packedImage = Pack(imageLatents);
        latents = Pack(latents);
        var latentIds = PositionIds(0, gridH, gridW, device);

        // prepare_image_latents: the image's own latents (t = 10) and the reference's (t = 20) as conditions.
        var conditions = new List<Tensor> { packedImage };
        var conditionIds = new List<Tensor> { PositionIds(ReferenceTimeOffset, gridH, gridW, device) };
        if (referencePixels is not null)
        {
            var referenceLatents = EncodeImageLatents(referencePixels).to(dtype);
            conditions.Add(Pack(referenceLatents).repeat(batch, 1, 1));
            conditionIds.Add(PositionIds(2 * ReferenceTimeOffset, (int)referenceLatents.shape[2], (int)referenceLatents.shape[3], device));
        }
        var conditionLatents = cat(conditions.ToArray(), 1);
        var conditionPositions = cat(conditionIds.ToArray(), 0);

        // prepare_mask_latents: the binarized mask interpolated (bilinear) straight to the token grid, repeated, packed.
        var mask = nn.functional.interpolate(maskCondition, [gridH, gridW], mode: InterpolationMode.Bilinear, align_corners: false).to(dtype, device);
        if (mask.shape[0] < batch)
        {
            Strength.CheckRepeatsToBatch(mask.shape[0], batch, "mask");
            mask = mask.repeat(batch / mask.shape[0], 1, 1, 1);
        }
        mask = Pack(mask);

        Tensor Blend(Tensor stepped, int step)
        {
            var proper = packedImage;
            // scale_noise takes the sigma at the scheduler's step index, which the step just advanced to the next timestep.
            if (step < timesteps.shape[0] - 1) proper = scheduler.ScaleNoise(packedImage, timesteps[(step + 1)..(step + 2)], packedNoise);
            return (1 - mask) * proper + mask * stepped;
        }
        latents = Denoise(latents, latentIds, conditionLatents, conditionPositions, positive, negative, scheduler, timesteps, r, progress,
            cancellationToken, Blend);
        var output = DecodeAndFinish(progress, () => DecodeOnDevice(latents, r.OutputType, gridH, gridW));
        if (maskCrop is null) return output;
        // padding_mask_crop: each result pasted back onto the (resized) image where the mask is white.
        using (output) return new Flux2Output(maskCrop.Overlay(ImageProcessor, output.Images!), null);
    }
}
