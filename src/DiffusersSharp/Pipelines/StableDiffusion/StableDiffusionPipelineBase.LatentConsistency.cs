namespace DiffusersSharp.Pipelines.StableDiffusion;

// The latent consistency (LCM) pipelines: what they need and what their diffusers twins do not take.
public abstract partial class StableDiffusionPipelineBase
{
    /// <summary>What diffusers' LatentConsistencyModel(Img2Img)Pipeline needs and takes, before any compute.</summary>
    private void CheckLatentConsistencyInputs(StableDiffusionRequest r, ILatentConsistencyRequest lcm)
    {
        string pipeline = r is StableDiffusionImg2ImgRequest ? LatentConsistencyModelImg2ImgPipeline.PipelineClass : LatentConsistencyModelPipeline.PipelineClass;
        if (Components.Unet.Config.TimeCondProjDim is null)
            throw new ArgumentException($"{pipeline} needs a guidance-distilled UNet (time_cond_proj_dim set, e.g. SimianLuo/LCM_Dreamshaper_v7); " +
                "this UNet has none. For an LCM-LoRA on a plain model use StableDiffusionPipeline with the LCMScheduler.");
        if (Components.SchedulerClassName != "LCMScheduler")
            throw new ArgumentException($"{pipeline} takes the LCMScheduler's denoised estimate, but the components use {Components.SchedulerClassName}; " +
                "use the model's LCMScheduler (Components.UseScheduler(\"lcm\")).");
        if (lcm.OriginalInferenceSteps is < 1) throw new ArgumentException($"original_inference_steps must be at least 1, got {lcm.OriginalInferenceSteps}.");
        string? lacking = r.NegativePrompt is not null || r.NegativePrompt2 is not null || r.NegativePromptEmbeds is not null
                ? "negative prompt or negative_prompt_embeds (there is no classifier-free guidance: guidance_scale is embedded as timestep_cond)"
            : r.Prompt2 is not null ? "prompt_2"
            : r.PooledPromptEmbeds is not null || r.NegativePooledPromptEmbeds is not null ? "pooled prompt embeddings (SDXL)"
            : r.GuidanceRescale > 0 ? "guidance_rescale"
            : r.Eta != 0 ? "eta"
            : r.DenoisingEnd is not null ? "denoising_end"
            : r is StableDiffusionImg2ImgRequest { DenoisingStart: not null } ? "denoising_start"
            : r is StableDiffusionImg2ImgRequest && (r.Height is not null || r.Width is not null) ? "height / width (the image's size is the output's)"
            : null;
        if (lacking is not null) throw new ArgumentException($"{pipeline} takes no {lacking} (diffusers' call has no such parameter).");
    }
}
