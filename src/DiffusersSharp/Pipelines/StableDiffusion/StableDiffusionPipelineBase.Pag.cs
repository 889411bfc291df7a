using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion;

// Perturbed-attention guidance (diffusers' PAGMixin in StableDiffusionPAGPipeline / StableDiffusionXLPAGPipeline).
public abstract partial class StableDiffusionPipelineBase
{
    /// <summary>diffusers' <c>do_perturbed_attention_guidance</c>: a PAG request with pag_scale above 0 and some layers.</summary>
    private static bool PagOn(StableDiffusionRequest r) =>
        r is StableDiffusionPAGRequest p && Pipelines.PerturbedAttentionGuidance.IsOn(p.PagScale, p.PagAppliedLayers);

    /// <summary>The PAG inputs, before any compute: finite non-negative scales, and layers that resolve in this UNet.</summary>
    private void CheckPagInputs(StableDiffusionPAGRequest r)
    {
        Pipelines.PerturbedAttentionGuidance.CheckScales(r.PagScale, r.PagAdaptiveScale, r.PagAppliedLayers);
        if (!PagOn(r)) return;
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
