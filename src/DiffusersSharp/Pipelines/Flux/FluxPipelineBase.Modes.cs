using DiffusersSharp.Models;
using DiffusersSharp.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.Flux;

// Text-to-image, image-to-image and inpainting, each with or without ControlNets: FluxPipeline, FluxImg2ImgPipeline and
// FluxInpaintPipeline run them without, the three Flux ControlNet pipelines with (diffusers' ControlNet versions are the
// same calls with the control latents prepared after prompt encoding and the residuals added each step).
public abstract partial class FluxPipelineBase
{
    /// <summary>
    /// Text-to-image (diffusers' <c>FluxPipeline</c> / <c>FluxControlNetPipeline</c>): noise, the scheduler loop with
    /// optional true CFG, decode. With <paramref name="control"/> the control latents are drawn before the noise.
    /// </summary>
    private protected FluxOutput RunTextToImage(FluxRequest request, IFluxControlNetRequest? control, IProgress<PipelineProgress>? progress,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        int height = request.Height ?? DefaultSize, width = request.Width ?? DefaultSize;
        CheckInputs(request, height, width);
        if (control is not null) CheckControlNetInputs(control, request, height, width);
        var controlImage = request as FluxControlRequest;
        if (controlImage is not null) CheckControlImageInputs(request, controlImage.ControlImage);
        int batch = BatchSize(request);
        var (latentH, latentW) = LatentSize(height, width);
        long[] packedShape = [batch, (latentH / 2) * (latentW / 2), LatentChannels * 4];
        if (request.Latents is { } given && !given.shape.SequenceEqual(packedShape))
            throw new ArgumentException($"latents must be packed [{string.Join(", ", packedShape)}], got [{string.Join(", ", given.shape)}].");

        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (positive, negative) = EncodePrompts(request, batch);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        var controlLatents = control is null ? null : PrepareControlLatents(control, request, height, width, batch);
        var controlImageLatents = controlImage is null ? null : ControlImageLatents(controlImage.ControlImage!, request, height, width, batch);
        var dtype = positive.PromptEmbeds.dtype;
        Tensor latents = request.Latents is { } initial
            ? initial.to(dtype, device, copy: true)
            : PackLatents(RandomDraws.Randn([batch, LatentChannels, latentH, latentW], request.Generator, request.Generators, dtype, device));
        var imageIds = LatentImageIds(latentH / 2, latentW / 2, device, dtype);

        using var scheduler = CreateScheduler(request, (int)latents.shape[1]);
        scheduler.SetBeginIndex(0);
        var hooks = control is not null ? new DenoiseHooks
        {
            Control = ControlResiduals(control, controlLatents!, (int)scheduler.Timesteps.shape[0], imageIds, request.GuidanceScale, batch),
        } : controlImageLatents is not null ? new DenoiseHooks { ChannelCondition = controlImageLatents } : null;
        latents = Denoise(latents, positive, negative, imageIds, GuidanceTensor(request, batch), scheduler, scheduler.Timesteps, request,
            progress, cancellationToken, hooks);
        return Decode(latents, request.OutputType, height, width, progress);
    }

    /// <summary>
    /// Image-to-image (diffusers' <c>FluxImg2ImgPipeline</c> / <c>FluxControlNetImg2ImgPipeline</c>): the image resized,
    /// VAE-encoded with a posterior sample, noised with <c>scale_noise</c> to the first timestep <c>strength</c> keeps
    /// (noise drawn after the sample), packed, and denoised over the rest of the schedule. With
    /// <paramref name="control"/> the control latents are drawn first, and the guidance windows cover the steps that run.
    /// </summary>
    private protected FluxOutput RunImageToImage(FluxImg2ImgRequest request, IFluxControlNetRequest? control, IProgress<PipelineProgress>? progress,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        int height = request.Height ?? DefaultSize, width = request.Width ?? DefaultSize;
        CheckInputs(request, height, width);
        CheckStrength(request);
        if (control is not null) CheckControlNetInputs(control, request, height, width);
        var controlImage = request as FluxControlImg2ImgRequest;
        if (controlImage is not null) CheckControlImageInputs(request, controlImage.ControlImage);
        if (request.Image is null && request.Latents is null)
            throw new ArgumentException("image is required for image-to-image (or packed latents to start from).");
        int batch = BatchSize(request);
        var (latentH, latentW) = LatentSize(height, width);
        long[] packedShape = [batch, (latentH / 2) * (latentW / 2), LatentChannels * 4];
        if (request.Latents is { } given && !given.shape.SequenceEqual(packedShape))
            throw new ArgumentException($"latents must be packed [{string.Join(", ", packedShape)}], got [{string.Join(", ", given.shape)}].");

        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        // diffusers preprocesses the image even when latents are given (they then skip its encoding).
        var image = request.Image is null ? null : PreprocessImage(request.Image, height, width);
        if (image is not null) CheckImageTensor(image, batch, height, width, "image");
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (positive, negative) = EncodePrompts(request, batch);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        var controlLatents = control is null ? null : PrepareControlLatents(control, request, height, width, batch);
        var dtype = positive.PromptEmbeds.dtype;
        using var scheduler = CreateScheduler(request, (latentH / 2) * (latentW / 2));
        var timesteps = StrengthTimesteps(scheduler, request.Strength);
        // diffusers' FluxControlImg2ImgPipeline samples the control image after setting the timesteps, before the image.
        var controlImageLatents = controlImage is null ? null : ControlImageLatents(controlImage.ControlImage!, request, height, width, batch);
        Tensor latents;
        if (request.Latents is { } initial) latents = initial.to(dtype, device, copy: true);
        else
        {
            // prepare_latents: the posterior sample, then the noise, scale_noise at the first kept timestep.
            var imageLatents = EncodeImage(image!, request, dtype, batch);
            var noise = RandomDraws.Randn([batch, LatentChannels, latentH, latentW], request.Generator, request.Generators, dtype, device);
            latents = PackLatents(scheduler.ScaleNoise(imageLatents, timesteps[..1].repeat(batch), noise));
        }
        var imageIds = LatentImageIds(latentH / 2, latentW / 2, device, dtype);
        var hooks = control is not null ? new DenoiseHooks
        {
            Control = ControlResiduals(control, controlLatents!, (int)timesteps.shape[0], imageIds, request.GuidanceScale, batch),
        } : controlImageLatents is not null ? new DenoiseHooks { ChannelCondition = controlImageLatents } : null;
        latents = Denoise(latents, positive, negative, imageIds, GuidanceTensor(request, batch), scheduler, timesteps, request,
            progress, cancellationToken, hooks);
        return Decode(latents, request.OutputType, height, width, progress);
    }

    /// <summary>
    /// Inpainting (diffusers' <c>FluxInpaintPipeline</c> / <c>FluxControlNetInpaintPipeline</c>): image-to-image where,
    /// after every step, the packed latents outside the mask are reset to the image latents noised to the next timestep.
    /// With <paramref name="control"/> the control latents are drawn after prompt encoding, before the image's. A
    /// <see cref="FluxKontextInpaintRequest"/> runs diffusers' <c>FluxKontextInpaintPipeline</c>: the output takes the
    /// image's Kontext size, the image is encoded to its posterior mode, and its tokens (or the reference image's, encoded
    /// after it) are the context appended at every step; a padding_mask_crop result is not pasted back.
    /// </summary>
    private protected FluxOutput RunInpaint(FluxInpaintRequest request, IFluxControlNetRequest? control, IProgress<PipelineProgress>? progress,
        CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(request);
        ThrowIfDisposed();
        if (request.Image is null) throw new ArgumentException("image is required for inpainting.");
        if (request.MaskImage is null) throw new ArgumentException("mask_image is required for inpainting.");
        var kontext = request as FluxKontextInpaintRequest;
        (int Height, int Width)? kontextSize = kontext is null ? null : KontextInputSize(request.Image, kontext.AutoResize)
            ?? throw new ArgumentException("image must be pixels for Kontext inpainting (diffusers resizes it), not latents.");
        if (kontext is not null) CheckKontextInpaint(kontext);
        int height = kontextSize?.Height ?? request.Height ?? DefaultSize, width = kontextSize?.Width ?? request.Width ?? DefaultSize;
        CheckInputs(request, height, width);
        CheckStrength(request);
        if (control is not null) CheckControlNetInputs(control, request, height, width);
        var controlImage = request as FluxControlInpaintRequest;
        if (controlImage is not null) CheckControlImageInputs(request, controlImage.ControlImage);
        if (controlImage is not null && (request.Latents is not null || request.PaddingMaskCrop is not null))
            throw new ArgumentException("latents and padding_mask_crop do not apply to Flux control inpainting (diffusers' FluxControlInpaintPipeline cannot start from given latents and has no padding_mask_crop).");
        if (control is not null && request.PaddingMaskCrop is not null)
            throw new ArgumentException("padding_mask_crop is not supported with ControlNet inpainting: diffusers' FluxControlNetInpaintPipeline crops the image but never pastes the result back.");
        // Kontext crops the image after resizing it to its Kontext size (the region comes from the mask as given).
        var image = kontext is null || request.PaddingMaskCrop is null ? request.Image : KontextResize(request.Image, height, width);
        if (kontext is not null && request.PaddingMaskCrop is not null && request.MaskImage.Image is { } m
            && (m.Width != width || m.Height != height))
            throw new ArgumentException($"padding_mask_crop with Kontext needs mask_image ({m.Width}x{m.Height}) of the image's Kontext size ({width}x{height}): diffusers crops the resized image with the mask's region.");
        var maskCrop = MaskCrop.For(request.PaddingMaskCrop, image, request.MaskImage, request.OutputType, height, width);
        int batch = BatchSize(request), channels = LatentChannels;
        var (latentH, latentW) = LatentSize(height, width);
        long[] shape = [batch, channels, latentH, latentW], packedShape = [batch, (latentH / 2) * (latentW / 2), channels * 4];
        if (request.Latents is { } given && !given.shape.SequenceEqual(shape) && (kontext is not null || !given.shape.SequenceEqual(packedShape)))
            throw new ArgumentException(kontext is not null // diffusers packs them itself
                ? $"latents must be [{string.Join(", ", shape)}], got [{string.Join(", ", given.shape)}]."
                : $"latents must be [{string.Join(", ", shape)}] or packed [{string.Join(", ", packedShape)}], got [{string.Join(", ", given.shape)}].");

        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        var initImage = PreprocessImage(image, height, width, maskCrop);
        CheckImageTensor(initImage, batch, height, width, "image");
        var reference = kontext?.ImageReference is { } r ? PreprocessKontextInput(r, kontext.AutoResize, batch, "image_reference", maskCrop) : null;
        var maskCondition = PreprocessMask(request.MaskImage, height, width, maskCrop);
        CheckImageTensor(maskCondition, batch, height, width, "mask");
        if (initImage.shape[1] == Components.Vae.Config.LatentChannels)
            throw new ArgumentException("image must be pixels for inpainting (the masked image is made from it), not latents.");
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (positive, negative) = EncodePrompts(request, batch);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        cancellationToken.ThrowIfCancellationRequested();

        var controlLatents = control is null ? null : PrepareControlLatents(control, request, height, width, batch);
        var dtype = positive.PromptEmbeds.dtype;
        using var scheduler = CreateScheduler(request, (latentH / 2) * (latentW / 2));
        var timesteps = StrengthTimesteps(scheduler, request.Strength);
        // diffusers also encodes the masked image with the generator, which the loop never reads: only its draw is made,
        // to leave the generator where diffusers leaves it (FluxControlInpaintPipeline: first, then the control image's).
        long maskedBatch = Math.Max(initImage.shape[0], maskCondition.shape[0]);
        void SkipMaskedImageSample() => RandomDraws.SkipVaeSample(
            [maskedBatch, Components.Vae.Config.LatentChannels, height / VaeScaleFactor, width / VaeScaleFactor],
            request.Generator, request.Generators, Components.Vae.WeightDtype(), device);
        Tensor? controlImageLatents = null;
        if (controlImage is not null)
        {
            SkipMaskedImageSample();
            controlImageLatents = ControlImageLatents(controlImage.ControlImage!, request, height, width, batch);
        }

        // prepare_latents: the image's posterior sample (Kontext: mode; also with given latents), the reference's mode, the noise.
        var imageLatents = EncodeImage(initImage, request, dtype, batch, mode: kontext is not null);
        var referenceLatents = reference is null ? null : EncodeImage(reference, request, dtype, batch, mode: true);
        Tensor noise, latents;
        if (request.Latents is { } initial)
        {
            noise = initial.to(dtype, device, copy: true);
            if (noise.dim() == 4) noise = PackLatents(noise);
            latents = noise.alias(); // the loop frees its latents each step; the noise must outlive it
        }
        else
        {
            var drawn = RandomDraws.Randn(shape, request.Generator, request.Generators, dtype, device);
            latents = PackLatents(scheduler.ScaleNoise(imageLatents, timesteps[..1].repeat(batch), drawn));
            noise = PackLatents(drawn);
        }
        var (context, contextIds) = kontext is null ? (null, null) : KontextTokens(referenceLatents ?? imageLatents, dtype);
        imageLatents = PackLatents(imageLatents);

        // prepare_mask_latents: the mask at latent size (nearest), over every channel, packed like the latents.
        var mask = nn.functional.interpolate(maskCondition, [latentH, latentW]).to(dtype, device);
        if (mask.shape[0] < batch) mask = mask.repeat(batch / mask.shape[0], 1, 1, 1);
        mask = PackLatents(mask.repeat(1, channels, 1, 1));
        if (controlImage is null) SkipMaskedImageSample(); // FluxInpaintPipeline: after the image latents

        var imageIds = LatentImageIds(latentH / 2, latentW / 2, device, dtype);
        var ids = contextIds is null ? imageIds : cat([imageIds, contextIds], 0);
        var hooks = new BlendHooks(mask, imageLatents, noise)
        {
            Context = context,
            ChannelCondition = controlImageLatents,
            Control = control is null ? null : ControlResiduals(control, controlLatents!, (int)timesteps.shape[0], imageIds, request.GuidanceScale, batch),
        };
        latents = Denoise(latents, positive, negative, ids, GuidanceTensor(request, batch), scheduler, timesteps, request,
            progress, cancellationToken, hooks);
        var output = Decode(latents, request.OutputType, height, width, progress);
        return maskCrop is null || kontext is not null ? output : new FluxOutput(maskCrop.Overlay(ImageProcessor, output.Images!), null);
    }

    /// <summary>
    /// What Kontext inpainting checks beyond inpainting, before any compute: diffusers' sizing parameters (which the image's
    /// size overrides for the output, as there) must still be valid.
    /// </summary>
    private void CheckKontextInpaint(FluxKontextInpaintRequest r)
    {
        if (r.MaxArea < 1) throw new ArgumentException($"max_area must be positive, got {r.MaxArea}.");
        if (r.Height is <= 0 || r.Width is <= 0)
            throw new ArgumentException($"height and width must be positive (they give the aspect ratio), got {r.Height}x{r.Width}.");
    }

    /// <summary>After each inpainting step: the known region (mask 0) becomes the image latents noised to the next timestep.</summary>
    private sealed class BlendHooks(Tensor mask, Tensor imageLatents, Tensor noise) : DenoiseHooks
    {
        public override Tensor? Mask { get => mask; set => mask = value ?? mask; }

        public override Tensor AfterStep(Tensor latents, int step, FlowMatchEulerDiscreteScheduler scheduler, Tensor timesteps)
        {
            var proper = imageLatents;
            // scale_noise takes the sigma at the scheduler's step index, which the step just advanced to the next timestep.
            if (step < timesteps.shape[0] - 1)
                proper = scheduler.ScaleNoise(imageLatents, timesteps[(step + 1)..(step + 2)], noise);
            return (1 - mask) * proper + mask * latents;
        }
    }
}
