using DiffusersSharp.Images;
using DiffusersSharp.Schedulers;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion;

/// <summary>
/// What the UNet pipelines share (SD 1.x / 2.x and SDXL; text-to-image, image-to-image, inpainting): input checks,
/// prompt encoding with CFG batching, SDXL's micro-conditioning, random draws in diffusers' order, the denoising loop
/// and the VAE decode. Each public pipeline picks the family and the mode.
/// </summary>
public abstract partial class StableDiffusionPipelineBase : DiffusionPipelineBase<StableDiffusionComponents>
{
    /// <summary>Takes a reference on <paramref name="components"/>; they are freed when the last pipeline using them is disposed.</summary>
    /// <exception cref="ArgumentException">The components are of the other family (SDXL for an SD pipeline or the reverse), or
    /// an x4 upscaler's for another pipeline than <paramref name="upscaler"/>'s (or the reverse), or a latent upscaler's (a
    /// K-UNet) for another pipeline than <paramref name="latentUpscaler"/>'s (or the reverse).</exception>
    private protected StableDiffusionPipelineBase(StableDiffusionComponents components, bool xl, bool upscaler = false, bool latentUpscaler = false)
        : base(Checked(components, xl, upscaler, latentUpscaler))
    {
        int scale = components.Vae.VaeScaleFactor, channels = components.Vae.Config.LatentChannels;
        // diffusers' upscalers build their image processors with resample="bicubic"; the others keep the LANCZOS default.
        ImageProcessor = new VaeImageProcessor(new VaeImageProcessorConfig
        {
            VaeScaleFactor = scale, VaeLatentChannels = channels, Resample = upscaler || latentUpscaler ? ResampleFilter.Bicubic : ResampleFilter.Lanczos,
        });
        MaskProcessor = VaeImageProcessor.CreateMaskProcessor(scale, channels);
    }

    /// <summary>The constructor's checks, run before the base takes its reference on the components (a refused pipeline
    /// holds none).</summary>
    private static StableDiffusionComponents Checked(StableDiffusionComponents components, bool xl, bool upscaler, bool latentUpscaler)
    {
        ArgumentNullException.ThrowIfNull(components);
        if (components.IsXL != xl)
            throw new ArgumentException(xl
                ? "These components are a Stable Diffusion 1.x / 2.x model; use StableDiffusionPipeline (or its Img2Img / Inpaint twins)."
                : "These components are an SDXL model; use StableDiffusionXLPipeline (or its Img2Img / Inpaint twins).", nameof(components));
        if (components.IsUpscaler != upscaler)
            throw new ArgumentException(upscaler
                ? "These components are not an x4 upscaler's (they have no low_res_scheduler): load stabilityai/stable-diffusion-x4-upscaler or a folder whose model_index.json names StableDiffusionUpscalePipeline."
                : "These components are a Stable Diffusion x4 upscaler (low_res_scheduler, a noise-level-conditioned UNet); use StableDiffusionUpscalePipeline.", nameof(components));
        if (components.Unet.Config.IsKUNet != latentUpscaler)
            throw new ArgumentException(latentUpscaler
                ? "These components are not a latent upscaler's (their UNet has no K-diffusion blocks): load stabilityai/sd-x2-latent-upscaler or a folder whose model_index.json names StableDiffusionLatentUpscalePipeline."
                : "These components are a latent x2 upscaler's (a K-diffusion UNet); use StableDiffusionLatentUpscalePipeline.", nameof(components));
        return components;
    }

    /// <summary>The VAE's spatial scale factor (8).</summary>
    public int VaeScaleFactor => Components.Vae.VaeScaleFactor;

    /// <summary>Default height and width: UNet sample_size x VAE scale factor (512 for SD 1.5, 768 for SD 2.1, 1024 for SDXL).</summary>
    public int DefaultSize => (Components.FixedUnetSampleSize
        ?? (Components.Unet.Config.SampleSize is { } size ? size.IsScalar ? size.Scalar : size.List![0] : IsXL ? 128 : 64)) * VaeScaleFactor;

    /// <summary>Image pre/post-processing (diffusers' <c>image_processor</c>: LANCZOS resize, [-1, 1] normalization).</summary>
    public VaeImageProcessor ImageProcessor { get; }

    /// <summary>The inpainting mask processor (grayscale, binarized at 0.5, no normalization).</summary>
    public VaeImageProcessor MaskProcessor { get; }

    /// <summary>Called when a prompt is cut to a tokenizer's limit (tokenizer, untruncated length, limit).</summary>
    public Action<string, int, int>? OnPromptTruncated { get; set; }

    private bool IsXL => Components.IsXL;

    /// <summary>The guidance scale <paramref name="r"/> runs with: its own, or the pipeline's default (7.5; SDXL 5.0; LCM 8.5;
    /// the x4 and latent upscalers 9.0).</summary>
    public double GuidanceOf(StableDiffusionRequest r) =>
        r.GuidanceScale ?? (r is ILatentConsistencyRequest ? 8.5 : r is StableDiffusionUpscaleRequest or StableDiffusionLatentUpscaleRequest ? 9.0 : IsXL ? 5.0 : 7.5);

    /// <summary>
    /// Whether the call conditions the UNet on the guidance-scale embedding (<c>timestep_cond</c>) instead of running
    /// classifier-free guidance: always for the LCM pipelines; for a UNet with <c>time_cond_proj_dim</c>, in the pipelines
    /// whose diffusers twins compute it (text-to-image, image-to-image and inpainting, SD and SDXL; ControlNet, ControlNet-Union
    /// and T2I-Adapter text-to-image), not in ControlNet image-to-image / inpainting or InstructPix2Pix, which run CFG on
    /// such a UNet as on any other.
    /// </summary>
    public bool UsesGuidanceEmbedding(StableDiffusionRequest r) => r is ILatentConsistencyRequest
        || (Components.Unet.Config.TimeCondProjDim is not null && r is not (StableDiffusionInstructPix2PixRequest or StableDiffusionUpscaleRequest or StableDiffusionLatentUpscaleRequest)
            && !(r is IControlNetRequest && r is StableDiffusionImg2ImgRequest));

    /// <summary>The strength <paramref name="r"/> runs with: its own, or the pipeline's default (img2img 0.8, inpaint 1.0 but
    /// 0.9999 for PAG inpainting; SDXL 0.3 and 0.9999, but 0.8 for SDXL ControlNet image-to-image).</summary>
    public double StrengthOf(StableDiffusionImg2ImgRequest r) =>
        r.Strength ?? (r is StableDiffusionInpaintRequest ? (IsXL || r is StableDiffusionPAGInpaintRequest ? 0.9999 : 1.0) : (IsXL && r is not IControlNetRequest ? 0.3 : 0.8));

    /// <summary>Validates a request (diffusers' check_inputs and the mode's own checks), before any compute.</summary>
    private void CheckInputs(StableDiffusionRequest r, int height, int width, int steps)
    {
        // The upscaler's size is the image's times the VAE factor (its own checks say what is wrong with it).
        if (r is StableDiffusionUpscaleRequest upscale) CheckUpscaleInputs(upscale, height, width);
        else if (r is StableDiffusionLatentUpscaleRequest latentUpscale) CheckLatentUpscaleInputs(latentUpscale);
        else if (height <= 0 || width <= 0 || height % 8 != 0 || width % 8 != 0)
            throw new ArgumentException($"height and width must be positive multiples of 8, got {height}x{width}.");
        if (steps < 1) throw new ArgumentException($"num_inference_steps must be at least 1, got {steps}.");
        double guidance = GuidanceOf(r);
        if (!double.IsFinite(guidance)) throw new ArgumentException($"guidance_scale must be a finite number, got {guidance}.");
        if (!(r.GuidanceRescale >= 0 && r.GuidanceRescale <= 1)) throw new ArgumentException($"guidance_rescale must be in [0, 1], got {r.GuidanceRescale}.");
        if (r.NumImagesPerPrompt < 1) throw new ArgumentException($"num_images_per_prompt must be at least 1, got {r.NumImagesPerPrompt}.");
        if (r.ClipSkip is < 0) throw new ArgumentException($"clip_skip must not be negative, got {r.ClipSkip}.");
        if (r.PromptEmbeds is not null && (r.Prompt is not null || r.Prompt2 is not null))
            throw new ArgumentException("Give either a prompt or prompt_embeds, not both.");
        if (r.PromptEmbeds is null && (r.Prompt is null || r.Prompt.Value.Count == 0))
            throw new ArgumentException("Give a prompt or prompt_embeds.");
        if (r.NegativePromptEmbeds is not null && (r.NegativePrompt is not null || r.NegativePrompt2 is not null))
            throw new ArgumentException("Give either a negative prompt or negative_prompt_embeds, not both.");
        if (IsXL && r.PromptEmbeds is not null && r.PooledPromptEmbeds is null)
            throw new ArgumentException("prompt_embeds needs pooled_prompt_embeds too (they come from the same encode_prompt call).");
        if (IsXL && r.NegativePromptEmbeds is not null && r.NegativePooledPromptEmbeds is null)
            throw new ArgumentException("negative_prompt_embeds needs negative_pooled_prompt_embeds too.");
        if (r.PromptEmbeds is not null && r.NegativePromptEmbeds is not null && !r.PromptEmbeds.shape.SequenceEqual(r.NegativePromptEmbeds.shape))
            throw new ArgumentException("prompt_embeds and negative_prompt_embeds must have the same shape.");
        if (r.Generator is not null && r.Generators is not null)
            throw new ArgumentException("Give one generator or a list of generators, not both.");
        if (IsXL && r is StableDiffusionImg2ImgRequest { DenoisingStart: { } start } && DenoisingValueValid(start)
            && r.DenoisingEnd is { } end && DenoisingValueValid(end) && start >= end)
            throw new ArgumentException($"denoising_start {start} cannot be larger than or equal to denoising_end {end}.");
        if (r is StableDiffusionImg2ImgRequest i)
        {
            Strength.Check(StrengthOf(i));
            if (i.Image is null) throw new ArgumentException("image is required.");
        }
        if (r is StableDiffusionInpaintRequest p)
        {
            if (p.MaskImage is null) throw new ArgumentException("mask_image is required.");
            long unetChannels = Components.Unet.Config.InChannels, latentChannels = Components.Vae.Config.LatentChannels;
            if (unetChannels != latentChannels && unetChannels != 2 * latentChannels + 1)
                throw new ArgumentException($"An inpainting UNet takes {latentChannels} (latents) or {2 * latentChannels + 1} (latents, mask, masked image) channels; this one takes {unetChannels}.");
        }
        else if (r is StableDiffusionImg2ImgRequest && r.Latents is not null)
            throw new ArgumentException("latents is not an image-to-image input: the image is the start.");
        if (r is IControlNetRequest control) CheckControlNetInputs(control, r);
        if (r is StableDiffusionInstructPix2PixRequest pix2pix) CheckInstructPix2PixInputs(pix2pix, height, width);
        if (r is StableDiffusionAdapterRequest adapter) CheckAdapterInputs(adapter, height, width);
        if (r is ILatentConsistencyRequest lcm) CheckLatentConsistencyInputs(r, lcm);
        CheckIpAdapterInputs(r, guidance > 1 && !UsesGuidanceEmbedding(r));
        if (r is IPagRequest) CheckPagInputs(r);
    }

    /// <summary>diffusers' default size of an input image: its own (a latent tensor's times the VAE factor), rounded down to
    /// multiples of 8, unless <paramref name="height"/> / <paramref name="width"/> are given.</summary>
    private (int Height, int Width) SizeOf(PipelineImage start, int? height, int? width)
    {
        var (h, w) = start.Image is { } pixels ? (pixels.Height, pixels.Width) : ((int)start.Tensor!.shape[2], (int)start.Tensor.shape[3]);
        if (start.Tensor is { } t && t.shape[1] == Components.Vae.Config.LatentChannels) (h, w) = (h * VaeScaleFactor, w * VaeScaleFactor);
        return ImageProcessor.GetDefaultHeightWidth(h, w, height, width);
    }

    /// <summary>The batch size before num_images_per_prompt.</summary>
    private static int BatchSize(StableDiffusionRequest r) => r.PromptEmbeds is { } e ? (int)e.shape[0] : r.Prompt!.Value.Count;

    private Tensor Randn(long[] shape, StableDiffusionRequest r, ScalarType dtype) =>
        RandomDraws.Randn(shape, r.Generator, r.Generators, dtype, Components.Device);

    /// <summary>The pipeline call behind every public <c>Generate</c>: the request's type selects the mode, and must be the
    /// pipeline's own (an image-to-image request given to the text-to-image pipeline is a mistake, not a mode switch).</summary>
    private protected StableDiffusionPipelineOutput Run(StableDiffusionRequest r, Type requestType, IProgress<PipelineProgress>? progress, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(r);
        if (r.GetType() != requestType)
            throw new ArgumentException($"{GetType().Name} takes a {requestType.Name}, not a {r.GetType().Name}: use the pipeline of that mode (FromPipe shares the models).");
        var img2img = r as StableDiffusionImg2ImgRequest;
        var inpaint = r as StableDiffusionInpaintRequest;
        var pix2pix = r as StableDiffusionInstructPix2PixRequest;
        var lcmRequest = r as ILatentConsistencyRequest;
        var upscale = r as StableDiffusionUpscaleRequest;
        int steps = r.NumInferenceSteps ?? (lcmRequest is not null ? 4 : pix2pix is not null ? 100 : upscale is not null ? 75 : 50);
        // Sizes: text-to-image and inpainting default to the model size; image-to-image and ControlNet inpainting (as
        // diffusers' StableDiffusionControlNetInpaintPipeline has it) to the image's (rounded down to 8); InstructPix2Pix
        // SD 1.x to the image's, SDXL to the model size; the x4 upscaler to the image's (rounded down to 4) times 4.
        int height, width;
        if (pix2pix?.Image is { } edited) (height, width) = InstructPix2PixSize(pix2pix, edited);
        else if (upscale?.Image is { } lowRes) (height, width) = UpscaleSize(lowRes);
        else if (img2img is not null && (inpaint is null || r is IControlNetRequest) && img2img.Image is { } start && (r.Height is null || r.Width is null))
            (height, width) = SizeOf(start, r.Height, r.Width);
        else if (r is IControlNetRequest controlRequest && SettingsOf(controlRequest).ControlImages is [{ } firstControl, ..])
            (height, width) = ControlNetSize(firstControl, r);
        else if (r is StableDiffusionAdapterRequest adapterRequest && AdapterImagesOf(adapterRequest) is [{ } firstAdapterImage, ..])
            (height, width) = AdapterSize(firstAdapterImage, r);
        else (height, width) = (r.Height ?? DefaultSize, r.Width ?? DefaultSize);
        CheckInputs(r, height, width, steps);
        var maskCrop = inpaint is null ? null : MaskCrop.For(inpaint.PaddingMaskCrop, inpaint.Image, inpaint.MaskImage, r.OutputType, height, width);
        // diffusers' ControlNet inpainting checks that control_image is one PIL image when cropping.
        if (maskCrop is not null && r is IControlNetRequest cropped && SettingsOf(cropped).ControlImages is not [{ Image: not null }])
            throw new ArgumentException("padding_mask_crop with ControlNet inpainting takes one control image, as an 8-bit image (diffusers checks that control_image is a single PIL image, so several ControlNets cannot crop).");

        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        double guidance = GuidanceOf(r);
        bool guidanceEmbedding = UsesGuidanceEmbedding(r);
        bool cfg = pix2pix is null ? guidance > 1 && !guidanceEmbedding : InstructPix2PixCfg(pix2pix, guidance);
        int batch = BatchSize(r) * r.NumImagesPerPrompt;
        var device = Components.Device;
        // The upscaler's image is processed at its own (rounded) size, the output's / the VAE factor.
        var image = upscale?.Image is { } low ? low.Preprocess(ImageProcessor, height / VaeScaleFactor, width / VaeScaleFactor)
            : (img2img?.Image ?? pix2pix?.Image)?.Preprocess(ImageProcessor, height, width, maskCrop);
        var maskCondition = inpaint?.MaskImage?.Preprocess(MaskProcessor, height, width, maskCrop);

        using var scheduler = Components.CreateScheduler();
        // LCM image-to-image: strength shortens the distillation schedule the timesteps come from (no steps are dropped).
        if (lcmRequest is not null) ((LCMScheduler)scheduler).SetTimesteps(steps, device, lcmRequest.OriginalInferenceSteps, img2img is null ? 1.0 : StrengthOf(img2img));
        else scheduler.SetTimesteps(steps, device);
        var timesteps = scheduler.TimestepValues.ToArray();
        bool fromDenoisingStart = IsXL && img2img is not null && DenoisingValueValid(img2img.DenoisingStart);
        if (img2img is not null && lcmRequest is null)
        {
            int tStart;
            if (fromDenoisingStart)
            {
                // get_timesteps with denoising_start: strength gives way to the timesteps below the cutoff.
                int cutoff = DiscreteTimestepCutoff(img2img.DenoisingStart!.Value, scheduler);
                int count = timesteps.Count(t => t < cutoff);
                // A second-order scheduler repeats every timestep but the first: an even count would stop mid-step.
                if (scheduler.Order == 2 && count % 2 == 0) count++;
                tStart = timesteps.Length - count;
            }
            else
            {
                // diffusers' get_timesteps: keep the last int(steps * strength) steps.
                tStart = Strength.UNetStartStep(steps, StrengthOf(img2img), scheduler.Order);
            }
            timesteps = timesteps[tStart..];
            scheduler.SetBeginIndex(tStart);
            if (timesteps.Length < 1)
                throw new ArgumentException(fromDenoisingStart
                    ? $"denoising_start {img2img.DenoisingStart} with {steps} steps leaves no step to run; lower denoising_start or raise steps."
                    : $"strength {StrengthOf(img2img)} with {steps} steps leaves no step to run; raise strength or steps.");
        }
        // The ControlNets' windows are over the steps that run (after strength), before denoising_end cuts them (as diffusers orders it).
        var control = r is IControlNetRequest cr ? PrepareControl(cr, r.NumImagesPerPrompt, height, width, batch, cfg, timesteps.Length, maskCrop) : null;
        // SDXL (all modes): without denoising_start the image is noised to the first timestep; with it, taken as it is.
        bool addNoise = !(IsXL && img2img?.DenoisingStart is not null);

        progress?.Report(new PipelineProgress("encode", 0, 1));
        var encoder = Components.CreatePromptEncoder(OnPromptTruncated);
        var encoded = encoder.Encode(r, cfg, device);
        // InstructPix2Pix batches the passes as [instruction, negative, negative] (with the image latents [image, image,
        // zeros]), SDXL's pooled embeddings too; the others as [negative, positive].
        // Perturbed-attention guidance adds the positive pass again: [negative, positive, positive] (or [positive, positive]).
        bool pag = PagOn(r);
        Tensor Batched(Tensor positive, Tensor negative) =>
            pag ? (cfg ? cat([negative, positive, positive], 0) : cat([positive, positive], 0))
            : !cfg ? positive : pix2pix is not null ? cat([positive, negative, negative], 0) : cat([negative, positive], 0);
        var embeds = Batched(encoded.PromptEmbeds, encoded.NegativePromptEmbeds!);
        Tensor? textEmbeds = null, timeIds = null;
        var dtype = embeds.dtype;
        if (IsXL)
        {
            textEmbeds = Batched(encoded.PooledPromptEmbeds!, encoded.NegativePooledPromptEmbeds!);
            timeIds = TimeIds(r, height, width, cfg, batch, dtype, (int)textEmbeds.shape[^1]);
        }
        var imageEmbeds = PrepareIpAdapterImageEmbeds(r, cfg, device);
        if (pag && imageEmbeds is not null)
            imageEmbeds = imageEmbeds.Select(e => cfg ? Batched(e.chunk(2)[1], e.chunk(2)[0]) : Batched(e, e)).ToArray();
        progress?.Report(new PipelineProgress("encode", 1, 1));
        ct.ThrowIfCancellationRequested();

        var unet = Components.Unet;
        var vaeConfig = Components.Vae.Config;
        long latentChannels = inpaint is null && pix2pix is null && upscale is null ? unet.Config.InChannels : vaeConfig.LatentChannels;
        long[] shape = [batch, latentChannels, height / VaeScaleFactor, width / VaeScaleFactor];
        double initNoiseSigma = scheduler.InitNoiseSigma;
        // The upscaler draws the image's noise before the latents (diffusers' order).
        var upscaleState = upscale is null ? null : PrepareUpscale(upscale, image!, dtype, cfg);
        Tensor latents;
        Tensor? imageLatents = null, noise = null, mask = null, maskedImageLatents = null;
        if (inpaint is not null)
        {
            bool strengthMax = StrengthOf(inpaint) == 1.0;
            bool fourChannel = unet.Config.InChannels == vaeConfig.LatentChannels;
            // Without noise the image latents are the start, whatever the UNet (diffusers would fail on a 9-channel UNet at strength 1).
            if (fourChannel || (r.Latents is null && !strengthMax) || !addNoise) imageLatents = ImageLatents(image!, r, dtype, batch);
            if (!addNoise)
            {
                // prepare_latents(add_noise=False): the image latents as they are (given latents are not used); the noise
                // is still drawn, for the 4-channel blend.
                noise = Randn(shape, r, dtype);
                latents = imageLatents!.alias();
            }
            else if (r.Latents is { } given)
            {
                noise = given.to(dtype, device, copy: true);
                latents = noise * initNoiseSigma;
            }
            else
            {
                noise = Randn(shape, r, dtype);
                latents = strengthMax ? noise * initNoiseSigma : scheduler.AddNoise(imageLatents!, noise, timesteps[0]);
            }
            // prepare_mask_latents: the mask at latent size, and the masked image's latents (diffusers encodes them, and so
            // draws from the generator, whatever the UNet's channel count).
            var maskedImage = image!.shape[1] == vaeConfig.LatentChannels ? null : image * maskCondition!.lt(0.5).to(image.dtype);
            mask = VaeImageProcessor.ResizeMaskNearest(maskCondition!, height / VaeScaleFactor, width / VaeScaleFactor).to(dtype, device);
            maskedImageLatents = maskedImage is null ? null : ImageLatents(maskedImage, r, dtype, batch);
            if (batch > mask.shape[0] && batch % mask.shape[0] == 0) mask = mask.repeat((int)(batch / mask.shape[0]), 1, 1, 1);
        }
        else if (img2img is not null)
        {
            imageLatents = ImageLatents(image!, r, dtype, batch);
            if (addNoise)
            {
                noise = Randn(imageLatents.shape, r, dtype);
                latents = scheduler.AddNoise(imageLatents, noise, timesteps[0]);
            }
            else latents = imageLatents.alias();
        }
        else
        {
            latents = r.Latents is { } given ? given.to(dtype, device, copy: true) : Randn(shape, r, dtype);
            if (!latents.shape.SequenceEqual(shape))
                throw new ArgumentException($"latents must have shape [{string.Join(", ", shape)}], got [{string.Join(", ", latents.shape)}].");
            latents = latents * initNoiseSigma;
        }

        // diffusers' num_inference_steps from here on: the steps asked for, or after denoising_end the timesteps it keeps.
        int numInferenceSteps = steps;
        if (IsXL && DenoisingValueValid(r.DenoisingEnd))
        {
            // denoising_end: run the timesteps at or above the cutoff and return the latents there (for a refiner).
            int cutoff = DiscreteTimestepCutoff(r.DenoisingEnd!.Value, scheduler);
            timesteps = timesteps[..timesteps.Count(t => t >= cutoff)];
            numInferenceSteps = timesteps.Length;
        }
        // SDXL's adapter_conditioning_factor: the adapters steer the steps i < int(num_inference_steps x factor).
        var adapterState = r is StableDiffusionAdapterRequest ar
            ? PrepareAdapter(ar, height, width, r.NumImagesPerPrompt, cfg, IsXL ? (int)(numInferenceSteps * ar.AdapterConditioningFactor) : timesteps.Length)
            : null;

        // diffusers: get_guidance_scale_embedding(guidance_scale - 1) per image, in the latents' dtype.
        var timestepCond = guidanceEmbedding
            ? GuidanceScaleEmbedding.Create(guidance, batch, unet.Config.TimeCondProjDim!.Value, latents.dtype, device)
            : null;
        var loop = new DenoiseState(embeds, textEmbeds, timeIds, mask, maskedImageLatents, imageLatents, noise, guidance)
        {
            TimestepCond = timestepCond, LatentConsistency = lcmRequest is not null, Upscale = upscaleState,
            Control = control, ImageEmbeds = imageEmbeds, Adapter = adapterState,
            Pag = pag ? new Pipelines.PerturbedAttentionGuidance(((IPagRequest)r).PagScale, ((IPagRequest)r).PagAdaptiveScale, cfg) : null,
            InstructPix2Pix = pix2pix is null ? null
                : new InstructPix2PixState(InstructPix2PixImageLatents(image!, dtype, batch, cfg), pix2pix.ImageGuidanceScale, cfg),
        };
        using (IpAdapterScaleFor(r))
        using (pag ? unet.PerturbAttention(((IPagRequest)r).PagAppliedLayers, cfg) : null)
            latents = Denoise(latents, loop, scheduler, timesteps, r, progress, ct);
        progress?.Report(new PipelineProgress("decode", 0, 1));
        var output = Decode(latents, r.OutputType, plainUnscale: r is StableDiffusionAdapterRequest || IsXLControlNetInpaint(r));
        if (maskCrop is not null) output = new StableDiffusionPipelineOutput(maskCrop.Overlay(ImageProcessor, output.Images!), null);
        progress?.Report(new PipelineProgress("decode", 1, 1));
        return output;
    }
}
