using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion;

// Perturbed-attention guidance (diffusers' PAGMixin in StableDiffusionPAGPipeline / StableDiffusionXLPAGPipeline).
public abstract partial class StableDiffusionPipelineBase
{
    /// <summary>diffusers' <c>do_perturbed_attention_guidance</c>: a PAG request with pag_scale above 0 and some layers.</summary>
    private static bool PagOn(StableDiffusionRequest r) =>
        r is IPagRequest p && Pipelines.PerturbedAttentionGuidance.IsOn(p.PagScale, p.PagAppliedLayers);

    /// <summary>The PAG inputs, before any compute: finite non-negative scales, and layers that resolve in this UNet.</summary>
    private void CheckPagInputs(StableDiffusionRequest request)
    {
        var r = (IPagRequest)request;
        Pipelines.PerturbedAttentionGuidance.CheckScales(r.PagScale, r.PagAdaptiveScale, r.PagAppliedLayers);
        // diffusers' StableDiffusionPAGInpaintPipeline passes output_type=None to check_inputs, so its padding_mask_crop
        // check ("output type should be PIL") fails whatever the output type (the SDXL one passes it on and crops).
        if (!IsXL && request is StableDiffusionPAGInpaintRequest { PaddingMaskCrop: not null })
            throw new ArgumentException("padding_mask_crop is not supported by Stable Diffusion 1.x / 2.x PAG inpainting (diffusers' StableDiffusionPAGInpaintPipeline refuses it whatever the output type); use the SDXL PAG inpainting pipeline or the plain inpainting pipeline to crop.");
        if (!PagOn(request)) return;
        // diffusers' StableDiffusionPAGInpaintPipeline (unlike the other PAG pipelines) does not keep the text prediction
        // from the PAG guidance, so guidance_rescale under classifier-free guidance fails there on an unset noise_pred_text.
        if (!IsXL && request is StableDiffusionPAGInpaintRequest && request.GuidanceRescale > 0 && GuidanceOf(request) > 1)
            throw new ArgumentException("guidance_rescale is not supported by Stable Diffusion 1.x / 2.x PAG inpainting with classifier-free guidance (diffusers' StableDiffusionPAGInpaintPipeline fails on it); set it to 0.");
        // diffusers would batch the guidance-scale embedding for the images alone beside a 2x / 3x UNet batch.
        if (Components.Unet.Config.TimeCondProjDim is not null)
            throw new ArgumentException("Perturbed-attention guidance is not supported with a UNet conditioned on the guidance-scale embedding (time_cond_proj_dim, e.g. an LCM-distilled UNet).");
        Components.Unet.ResolvePagLayers(r.PagAppliedLayers);
    }

    /// <summary>PAG's guidance (<see cref="Pipelines.PerturbedAttentionGuidance.Apply"/>), then guidance rescale toward the
    /// text prediction under CFG.</summary>
    private static Tensor ApplyPag(Tensor noisePred, Pipelines.PerturbedAttentionGuidance pag, double guidance, float t, double guidanceRescale)
    {
        var (guided, text) = pag.Apply(noisePred, guidance, t);
        return pag.Cfg && guidanceRescale > 0 ? RescaleNoiseCfg(guided, text, guidanceRescale) : guided;
    }
}
