using DiffusersSharp.Schedulers;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion;

// The latent x2 upscaler (diffusers' StableDiffusionLatentUpscalePipeline): its own prompt encoding, conditioning and
// preconditioned Euler loop over a K-UNet.
public abstract partial class StableDiffusionPipelineBase
{
    /// <summary>Width of diffusers' noise-level embedding in the latent upscaler's <c>timestep_cond</c> (64 ones, 64 zeros).</summary>
    private const int NoiseLevelEmbedWidth = 128;

    /// <summary>The latent size [h, w] of the latent upscaler's input: a latent tensor's own, an image's rounded down to
    /// multiples of the VAE factor and divided by it (0 when it is not 4-D or smaller than one factor).</summary>
    private (int Height, int Width) LatentUpscaleInputSize(PipelineImage image)
    {
        if (image.Tensor is { } t)
        {
            if (t.dim() != 4) return (0, 0);
            if (t.shape[1] == Components.Vae.Config.LatentChannels) return ((int)t.shape[2], (int)t.shape[3]);
            return ((int)t.shape[2] / VaeScaleFactor, (int)t.shape[3] / VaeScaleFactor);
        }
        return (image.Image!.Height / VaeScaleFactor, image.Image.Width / VaeScaleFactor);
    }

    /// <summary>What diffusers' StableDiffusionLatentUpscalePipeline needs and takes, before any compute (its check_inputs,
    /// the channel check it makes after the draws, and what its UNet and scheduler would fail on).</summary>
    private void CheckLatentUpscaleInputs(StableDiffusionLatentUpscaleRequest r)
    {
        const string pipeline = StableDiffusionLatentUpscalePipeline.PipelineClass;
        if (r.Image is not { } image) throw new ArgumentException("image is required (the latents or the image to upscale).");
        var (h, w) = LatentUpscaleInputSize(image);
        long latentChannels = Components.Vae.Config.LatentChannels, imageBatch = image.Tensor?.shape[0] ?? 1;
        if (image.Tensor is { } t && (t.dim() != 4 || !t.is_floating_point() || (t.shape[1] != 3 && t.shape[1] != latentChannels)))
            throw new ArgumentException($"image as a tensor must be latents [B, {latentChannels}, h, w] or an image [B, 3, H, W] in [0, 1], got [{string.Join(", ", t.shape)}] {t.dtype}.");
        if (h <= 0 || w <= 0)
            throw new ArgumentException($"image is too small to upscale: an image needs sides of at least {VaeScaleFactor} pixels (the VAE factor).");
        if (r.PromptEmbeds is not null && r.PooledPromptEmbeds is null)
            throw new ArgumentException("prompt_embeds needs pooled_prompt_embeds too (the text encoder's pooled output, from the same encoding).");
        if (r.NegativePromptEmbeds is not null && r.NegativePooledPromptEmbeds is null)
            throw new ArgumentException("negative_prompt_embeds needs negative_pooled_prompt_embeds too.");
        if (Components.TextEncoder is null && (r.PromptEmbeds is null || (GuidanceOf(r) > 1 && r.NegativePromptEmbeds is null)))
            throw new ArgumentException("This pipeline has no text encoder (text_encoder=None): give prompt_embeds with pooled_prompt_embeds (and the negative ones under guidance).");
        var unet = Components.Unet.Config;
        if (unet.InChannels != 2 * latentChannels || unet.OutChannels != latentChannels + 1)
            throw new ArgumentException($"{pipeline} needs a UNet that takes the latents and the image latents ({2 * latentChannels} channels) and predicts them with a variance channel " +
                $"({latentChannels + 1}); this one takes {unet.InChannels} and gives {unet.OutChannels}.");
        long pooledWidth = r.PooledPromptEmbeds?.shape[^1] ?? Components.TextEncoder?.Config.HiddenSize ?? 0;
        if (unet.TimeCondProjDim != NoiseLevelEmbedWidth + pooledWidth)
            throw new ArgumentException($"{pipeline} conditions the UNet on the noise-level embedding ({NoiseLevelEmbedWidth}) and the pooled text ({pooledWidth}): " +
                $"its time_cond_proj_dim must be {NoiseLevelEmbedWidth + pooledWidth}, got {unet.TimeCondProjDim?.ToString() ?? "none"}.");
        if (Components.SchedulerClassName != nameof(EulerDiscreteScheduler))
            throw new ArgumentException($"{pipeline} preconditions with the sigmas of an EulerDiscreteScheduler (diffusers' type); the components use {Components.SchedulerClassName}: use the model's scheduler.");
        int f = 1 << unet.NumUpsamplers;
        if (unet.IsKUNet && ((2 * h) % f != 0 || (2 * w) % f != 0 || 2 * h < 2 * f || 2 * w < 2 * f))
            throw new ArgumentException($"The upscaled latents ({2 * h} x {2 * w}) must have sides that are multiples of {f}, at least {2 * f}, for this K-UNet: " +
                $"give latents (or an image / {VaeScaleFactor}) whose sides are multiples of {f / 2}, at least {f}.");
        int batch = BatchSize(r);
        if (batch != imageBatch)
            throw new ArgumentException($"The prompt has batch size {batch} and the image {imageBatch}: give one image per prompt (diffusers' check).");
        if (r.Generators is { Count: > 1 } generators && generators.Count != batch)
            throw new ArgumentException($"{generators.Count} generators were given for a batch of {batch}.");
        long[] shape = [batch, latentChannels, 2 * h, 2 * w];
        if (r.Latents is { } latents && !latents.shape.SequenceEqual(shape))
            throw new ArgumentException($"latents must have shape [{string.Join(", ", shape)}] (twice the image latents), got [{string.Join(", ", latents.shape)}].");
        string? lacking = r.NumImagesPerPrompt != 1 ? "num_images_per_prompt other than 1"
            : r.Height is not null || r.Width is not null ? "height / width (the output is twice the image)"
            : r.GuidanceRescale > 0 ? "guidance_rescale" : r.ClipSkip is not null ? "clip_skip" : r.Eta != 0 ? "eta"
            : r.IpAdapterImage is not null || r.IpAdapterImageEmbeds is not null || r.IpAdapterScale is not null ? "IP-Adapter inputs"
            : null;
        if (lacking is not null) throw new ArgumentException($"{pipeline} takes no {lacking} (diffusers' call has no such parameter).");
    }

    /// <summary>
    /// diffusers' latent-upscaler <c>encode_prompt</c>: the CLIP text encoder's last hidden states (before its final
    /// LayerNorm) and pooled output, of the prompt (of "" at guidance 0) unless given; under guidance the negative prompt's
    /// ("" by default) unless given; batched [negative, positive].
    /// </summary>
    private (Tensor Embeds, Tensor Pooled) EncodeLatentUpscalePrompt(StableDiffusionLatentUpscaleRequest r, double guidance, bool cfg, Device device)
    {
        int batch = BatchSize(r);
        (Tensor, Tensor) Encode(IReadOnlyList<string> prompts)
        {
            var encoder = Components.TextEncoder ?? throw new ArgumentException(
                "This pipeline has no text encoder (text_encoder=None): give prompt_embeds with pooled_prompt_embeds (and the negative ones under guidance).");
            Components.Activate("text_encoder");
            using var ids = PromptTokens.Ids(Components.Tokenizer!, prompts, Components.Tokenizer!.ModelMaxLength, device, "tokenizer", OnPromptTruncated);
            using var output = encoder.Forward(ids, outputHiddenStates: true);
            return (output.HiddenStates[^1].clone(), output.PooledOutput.clone());
        }
        var (embeds, pooled) = r.PromptEmbeds is { } given
            ? (given.to(device), r.PooledPromptEmbeds!.to(device))
            : Encode(guidance == 0 ? Enumerable.Repeat("", batch).ToArray() : r.Prompt!.Value.Items);
        if (!cfg) return (embeds, pooled);
        var (negEmbeds, negPooled) = r.NegativePromptEmbeds is { } negative
            ? (negative.to(device), r.NegativePooledPromptEmbeds!.to(device))
            : Encode((r.NegativePrompt ?? "").Broadcast(batch, "negative_prompt"));
        if (!negEmbeds.shape.SequenceEqual(embeds.shape) || !negPooled.shape.SequenceEqual(pooled.shape))
            throw new ArgumentException($"The negative embeddings [{string.Join(", ", negEmbeds.shape)}] / [{string.Join(", ", negPooled.shape)}] must have the shapes of the prompt's " +
                $"[{string.Join(", ", embeds.shape)}] / [{string.Join(", ", pooled.shape)}].");
        return (cat([negEmbeds, embeds], 0), cat([negPooled, pooled], 0));
    }

    /// <summary>The latent upscaler's call (diffusers' <c>StableDiffusionLatentUpscalePipeline.__call__</c>).</summary>
    private protected StableDiffusionPipelineOutput RunLatentUpscale(StableDiffusionLatentUpscaleRequest r, IProgress<PipelineProgress>? progress, CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(r);
        int steps = r.NumInferenceSteps ?? 75;
        var (h, w) = r.Image is { } input ? LatentUpscaleInputSize(input) : (0, 0);
        CheckInputs(r, 2 * h * VaeScaleFactor, 2 * w * VaeScaleFactor, steps);
        double guidance = GuidanceOf(r);
        bool cfg = guidance > 1;

        using var inference = inference_mode();
        using var scope = NewDisposeScope();
        var device = Components.Device;
        progress?.Report(new PipelineProgress("encode", 0, 1));
        var (embeds, pooled) = EncodeLatentUpscalePrompt(r, guidance, cfg, device);
        progress?.Report(new PipelineProgress("encode", 1, 1));
        ct.ThrowIfCancellationRequested();
        var dtype = embeds.dtype;

        // 4. The image: latents as they are, an image through the VAE (a posterior sample, drawn before the latents).
        var vae = Components.Vae;
        var image = r.Image!.Preprocess(ImageProcessor, h * VaeScaleFactor, w * VaeScaleFactor).to(dtype, device);
        if (image.shape[1] == 3)
        {
            Components.Activate("vae");
            image = RandomDraws.SampleVae(vae, image, r.Generator, r.Generators, device).to(dtype) * vae.Config.ScalingFactor;
        }

        using var scheduler = Components.CreateScheduler();
        scheduler.SetTimesteps(steps, device);
        var timesteps = scheduler.TimestepValues.ToArray();
        var sigmas = ((SigmaSchedulerBase)scheduler).Sigmas;

        // 5. Noise level 0 (diffusers has the noise step turned off): the image latents nearest-upsampled x2 (times
        // (0² + 1)^-0.5 = 1), and timestep_cond = [64 ones, 64 zeros, pooled text].
        var imageBatch = cfg ? cat([image, image], 0) : image;
        var imageCond = nn.functional.interpolate(imageBatch, [2 * image.shape[2], 2 * image.shape[3]]).to(dtype);
        long rows = pooled.shape[0];
        var timestepCond = cat([ones(rows, NoiseLevelEmbedWidth / 2, dtype: pooled.dtype, device: device),
            zeros(rows, NoiseLevelEmbedWidth / 2, dtype: pooled.dtype, device: device), pooled], 1);

        // 6. Latents at twice the image latents' size, drawn after the VAE sample.
        int batch = BatchSize(r);
        long[] shape = [batch, vae.Config.LatentChannels, 2 * image.shape[2], 2 * image.shape[3]];
        var latents = (r.Latents is { } given ? given.to(dtype, device, copy: true) : Randn(shape, r, dtype)) * scheduler.InitNoiseSigma;

        var unet = Components.Unet;
        Components.Activate("unet");
        progress?.Report(new PipelineProgress("denoise", 0, timesteps.Length));
        for (int i = 0; i < timesteps.Length; i++)
        {
            ct.ThrowIfCancellationRequested();
            float t = timesteps[i];
            using (var stepScope = NewDisposeScope())
            {
                var sigma = sigmas[i].to(device);
                var modelInput = cfg ? cat([latents, latents], 0) : latents;
                var scaled = cat([scheduler.ScaleModelInput(modelInput, t), imageCond], 1);
                // Karras et al. (2022), table 1: c_noise = log(sigma) / 4, then c_skip · x + c_out · F(x).
                var prediction = unet.forward(scaled, sigma.log() * 0.25, embeds, timestepCond: timestepCond);
                prediction = prediction.narrow(1, 0, prediction.shape[1] - 1); // the original model's variance channel is unused
                prediction = (sigma.pow(2) + 1).reciprocal() * modelInput + scheduler.ScaleModelInput(sigma, t) * prediction;
                if (cfg)
                {
                    var halves = prediction.chunk(2);
                    prediction = halves[0] + guidance * (halves[1] - halves[0]);
                }
                // diffusers passes no generator to this step (the Euler step draws nothing without churn).
                var next = scheduler.Step(prediction, t, latents);
                next.MoveToOuterDisposeScope();
                latents.Dispose();
                latents = next;
            }
            progress?.Report(new PipelineProgress("denoise", i + 1, timesteps.Length));
            if (r.CallbackOnStepEnd is { } callback)
            {
                var context = new StepEndContext
                {
                    Step = i, TotalSteps = timesteps.Length, Timestep = t, Latents = latents, PromptEmbeds = embeds, GuidanceScale = guidance,
                };
                callback(context);
                latents = StepEndContext.Adopt(latents, context.Latents);
                if (context.Interrupt) break;
            }
        }
        progress?.Report(new PipelineProgress("decode", 0, 1));
        var output = Decode(latents, r.OutputType);
        progress?.Report(new PipelineProgress("decode", 1, 1));
        return output;
    }
}
