using DiffusersSharp.Schedulers;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion;

// The denoising loop: UNet, guidance, scheduler step, inpainting blend, callbacks.
public abstract partial class StableDiffusionPipelineBase
{
    /// <summary>The tensors the loop reads and a callback may replace.</summary>
    private sealed class DenoiseState(Tensor embeds, Tensor? textEmbeds, Tensor? timeIds, Tensor? mask, Tensor? maskedImageLatents,
        Tensor? imageLatents, Tensor? noise, double guidance)
    {
        public Tensor Embeds = embeds;
        public Tensor? TextEmbeds = textEmbeds;
        public Tensor? TimeIds = timeIds;
        public Tensor? Mask = mask;
        public readonly Tensor? MaskedImageLatents = maskedImageLatents;
        public readonly Tensor? ImageLatents = imageLatents;
        public readonly Tensor? Noise = noise;
        public double Guidance = guidance;
        /// <summary>ControlNet pipelines: the prepared control image and the per-step conditioning scales.</summary>
        public ControlState? Control;
        /// <summary>IP-Adapter: the image embeddings per adapter (CFG-batched), or null.</summary>
        public Tensor[]? ImageEmbeds;
        /// <summary>T2I-Adapter pipelines: the feature maps and the steps that take them.</summary>
        public AdapterState? Adapter;
        /// <summary>InstructPix2Pix: the image latents appended to the UNet input and the three-pass guidance.</summary>
        public InstructPix2PixState? InstructPix2Pix;
        /// <summary>Guidance-distilled UNets: the guidance-scale embedding passed as <c>timestep_cond</c> (no CFG then), or null.</summary>
        public Tensor? TimestepCond;
        /// <summary>The LCM pipelines: the LCMScheduler's denoised estimate of the last step is the result, not the latents.</summary>
        public bool LatentConsistency;
        /// <summary>The x4 upscaler: the noised low-resolution image appended to the UNet input and its noise level.</summary>
        public UpscaleState? Upscale;
        /// <summary>Perturbed-attention guidance: its scales and whether it runs with CFG (fixed for the call), or null.</summary>
        public Pipelines.PerturbedAttentionGuidance? Pag;
    }

    /// <summary>
    /// The denoising loop: UNet (CFG-batched, SDXL's added conditioning, the inpainting UNet's extra channels), guidance
    /// (and guidance rescale), scheduler step, the 4-channel inpainting blend, callback. Each step runs in its own dispose
    /// scope; cancellation is checked between steps. The LCM pipelines return the last step's denoised estimate instead of
    /// the latents.
    /// </summary>
    private Tensor Denoise(Tensor latents, DenoiseState s, IDiffusionScheduler scheduler, float[] timesteps, StableDiffusionRequest r,
        IProgress<PipelineProgress>? progress, CancellationToken ct)
    {
        var unet = Components.Unet;
        bool nineChannel = s.Mask is not null && unet.Config.InChannels != Components.Vae.Config.LatentChannels;
        var generator = r.Generator ?? r.Generators?[0];
        Components.Activate("unet");
        progress?.Report(new PipelineProgress("denoise", 0, timesteps.Length));
        // The 9-channel UNet's extra input (mask, masked-image latents; doubled under CFG), built once and again only when
        // a callback replaces the mask or drops guidance. It belongs to the call's dispose scope.
        Tensor? extra = null, extraMask = null, denoised = null;
        bool extraCfg = false;
        for (int i = 0; i < timesteps.Length; i++)
        {
            ct.ThrowIfCancellationRequested();
            float t = timesteps[i];
            bool cfg = s.Pag?.Cfg ?? (s.TimestepCond is null && (s.InstructPix2Pix?.Cfg ?? s.Guidance > 1));
            if (nineChannel && (extra is null || !ReferenceEquals(extraMask, s.Mask) || extraCfg != cfg))
            {
                // Batched as the latents: twice under CFG; under PAG once more for the perturbed pass.
                var one = cat([s.Mask!, s.MaskedImageLatents!], 1);
                int parts = (cfg ? 2 : 1) + (s.Pag is null ? 0 : 1);
                (extra, extraMask, extraCfg) = (parts == 1 ? one : cat(Enumerable.Repeat(one, parts).ToArray(), 0), s.Mask, cfg);
            }
            using (var stepScope = NewDisposeScope())
            {
                // A callback may have dropped guidance: then only the conditional half of the conditioning is used.
                // (Under PAG the batch is fixed for the call: [uncond, cond, perturbed] or [cond, perturbed].)
                Tensor Half(Tensor x) => s.Pag is null && !cfg && x.shape[0] == 2 * latents.shape[0] ? x.chunk(2)[1] : x;
                var modelInput = s.Pag is not null ? cat(Enumerable.Repeat(latents, cfg ? 3 : 2).ToArray(), 0)
                    : !cfg ? latents : s.InstructPix2Pix is null ? cat([latents, latents], 0) : cat([latents, latents, latents], 0);
                modelInput = scheduler.ScaleModelInput(modelInput, t);
                if (s.InstructPix2Pix is { } editing) modelInput = cat([modelInput, editing.ImageLatents], 1);
                if (s.Upscale is { } upscaling) modelInput = cat([modelInput, Half(upscaling.Image)], 1);
                // diffusers passes the noise level as class_labels; a UNet without a class embedding ignores them there.
                var classLabels = s.Upscale is { } levels && unet.Config.ClassEmbeddingKind is not null ? Half(levels.NoiseLevel) : null;
                using var timestep = tensor(t, device: Components.Device);
                // The ControlNets take the latents alone, also beside a 9-channel inpainting UNet (diffusers' ControlNet inpaint pipeline).
                using var control = s.Control is { } c ? ControlResiduals(c, i, latents, modelInput, timestep, s, cfg, Half, scheduler, t) : null;
                if (nineChannel) modelInput = cat([modelInput, extra!], 1);
                var intrablock = s.Adapter is { } adapter && i < adapter.ActiveSteps ? adapter.States.Select(Half).ToArray() : null;
                var noisePred = unet.forward(modelInput, timestep, Half(s.Embeds),
                    s.TextEmbeds is null ? null : Half(s.TextEmbeds), s.TimeIds is null ? null : Half(s.TimeIds),
                    control?.DownBlockResSamples, control?.MidBlockResSample, s.ImageEmbeds?.Select(Half).ToArray(), intrablock, s.TimestepCond, classLabels);
                if (s.Pag is { } pag) noisePred = ApplyPag(noisePred, pag, s.Guidance, t, r.GuidanceRescale);
                else if (cfg && s.InstructPix2Pix is { } guided) noisePred = InstructPix2PixGuidance(noisePred, s.Guidance, guided.ImageGuidance, r.GuidanceRescale);
                else if (cfg)
                {
                    var halves = noisePred.chunk(2);
                    var (uncond, text) = (halves[0], halves[1]);
                    noisePred = uncond + s.Guidance * (text - uncond);
                    if (r.GuidanceRescale > 0) noisePred = RescaleNoiseCfg(noisePred, text, r.GuidanceRescale);
                }
                Tensor next;
                if (s.LatentConsistency)
                {
                    // LatentConsistencyModelPipeline: `latents, denoised = scheduler.step(...)`; the last denoised is decoded.
                    (next, var stepDenoised) = ((LCMScheduler)scheduler).StepWithDenoised(noisePred, t, latents, generator);
                    denoised?.Dispose();
                    denoised = stepDenoised.MoveToOuterDisposeScope();
                }
                else next = SchedulerSteps.Step(scheduler, noisePred, t, latents, r.Eta, generator, r.Generators);
                if (s.Mask is not null && !nineChannel)
                {
                    // The 4-channel inpainting blend: outside the mask, the image noised to the next timestep.
                    var proper = s.ImageLatents!;
                    if (i < timesteps.Length - 1) proper = scheduler.AddNoise(proper, s.Noise!, timesteps[i + 1]);
                    // diffusers' PAG inpainting pipelines with PAG off and no CFG take `init_mask, *_ = mask`: the first
                    // image's mask for the whole batch (the other modes blend each image with its own).
                    var blendMask = r is StableDiffusionPAGInpaintRequest && s.Pag is null && !cfg ? s.Mask.narrow(0, 0, 1) : s.Mask;
                    next = (1 - blendMask) * proper + blendMask * next;
                }
                next.MoveToOuterDisposeScope();
                latents.Dispose();
                latents = next;
            }
            progress?.Report(new PipelineProgress("denoise", i + 1, timesteps.Length));
            if (r.CallbackOnStepEnd is { } callback)
            {
                var context = new StepEndContext
                {
                    Step = i, TotalSteps = timesteps.Length, Timestep = t, Latents = latents, PromptEmbeds = s.Embeds,
                    PooledPromptEmbeds = s.TextEmbeds, AddTimeIds = s.TimeIds, GuidanceScale = s.Guidance, Mask = s.Mask,
                    Denoised = denoised, TimestepCond = s.TimestepCond,
                };
                callback(context);
                latents = StepEndContext.Adopt(latents, context.Latents);
                s.Embeds = StepEndContext.Adopt(s.Embeds, context.PromptEmbeds);
                if (s.TextEmbeds is not null) s.TextEmbeds = StepEndContext.Adopt(s.TextEmbeds, context.PooledPromptEmbeds ?? s.TextEmbeds);
                if (s.TimeIds is not null) s.TimeIds = StepEndContext.Adopt(s.TimeIds, context.AddTimeIds ?? s.TimeIds);
                if (s.Mask is not null && context.Mask is not null) s.Mask = StepEndContext.Adopt(s.Mask, context.Mask);
                if (denoised is not null && context.Denoised is not null) denoised = StepEndContext.Adopt(denoised, context.Denoised);
                if (s.TimestepCond is not null && context.TimestepCond is not null) s.TimestepCond = StepEndContext.Adopt(s.TimestepCond, context.TimestepCond);
                s.Guidance = context.GuidanceScale;
                if (context.Interrupt) break;
            }
        }
        if (denoised is not null)
        {
            latents.Dispose();
            return denoised;
        }
        return latents;
    }

    /// <summary>diffusers' <c>rescale_noise_cfg</c>: match the guided prediction's std to the text prediction's, then mix.</summary>
    private static Tensor RescaleNoiseCfg(Tensor noiseCfg, Tensor noiseText, double rescale)
    {
        long[] dims = Enumerable.Range(1, (int)noiseText.dim() - 1).Select(d => (long)d).ToArray();
        var stdText = noiseText.std(dims, keepdim: true);
        var stdCfg = noiseCfg.std(dims, keepdim: true);
        var rescaled = noiseCfg * (stdText / stdCfg);
        return rescale * rescaled + (1 - rescale) * noiseCfg;
    }
}
