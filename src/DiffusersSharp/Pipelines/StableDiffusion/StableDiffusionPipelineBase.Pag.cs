using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines.StableDiffusion;

// Perturbed-attention guidance (diffusers' PAGMixin in StableDiffusionPAGPipeline / StableDiffusionXLPAGPipeline).
public abstract partial class StableDiffusionPipelineBase
{
    /// <summary>Perturbed-attention guidance's scales and whether classifier-free guidance runs beside it.</summary>
    private sealed record PagState(double Scale, double AdaptiveScale, bool Cfg);

    /// <summary>diffusers' <c>do_perturbed_attention_guidance</c>: a PAG request with pag_scale above 0 and some layers.</summary>
    private static bool PagOn(StableDiffusionRequest r) => r is StableDiffusionPAGRequest { PagScale: > 0, PagAppliedLayers.Count: > 0 };

    /// <summary>The PAG inputs, before any compute: finite non-negative scales, and layers that resolve in this UNet.</summary>
    private void CheckPagInputs(StableDiffusionPAGRequest r)
    {
        if (!double.IsFinite(r.PagScale) || r.PagScale < 0) throw new ArgumentException($"pag_scale must be a finite number >= 0, got {r.PagScale}.");
        if (!double.IsFinite(r.PagAdaptiveScale) || r.PagAdaptiveScale < 0)
            throw new ArgumentException($"pag_adaptive_scale must be a finite number >= 0, got {r.PagAdaptiveScale}.");
        ArgumentNullException.ThrowIfNull(r.PagAppliedLayers, nameof(r.PagAppliedLayers));
        if (!PagOn(r)) return;
        // diffusers would batch the guidance-scale embedding for the images alone beside a 2x / 3x UNet batch.
        if (Components.Unet.Config.TimeCondProjDim is not null)
            throw new ArgumentException("Perturbed-attention guidance is not supported with a UNet conditioned on the guidance-scale embedding (time_cond_proj_dim, e.g. an LCM-distilled UNet).");
        Components.Unet.ResolvePagLayers(r.PagAppliedLayers);
    }

    /// <summary>
    /// diffusers' <c>_apply_perturbed_attention_guidance</c> (with <c>_get_pag_scale</c>, in float32 as its tensor arithmetic
    /// on the timestep runs), then guidance rescale toward the text prediction under CFG.
    /// </summary>
    private static Tensor PerturbedAttentionGuidance(Tensor noisePred, PagState pag, double guidance, float t, double guidanceRescale)
    {
        double scale = pag.Scale;
        if (pag.AdaptiveScale > 0)
        {
            float adaptive = (float)pag.Scale - (float)pag.AdaptiveScale * (1000f - t);
            scale = adaptive < 0 ? 0 : adaptive;
        }
        if (!pag.Cfg)
        {
            var parts = noisePred.chunk(2);
            return parts[0] + scale * (parts[0] - parts[1]);
        }
        var thirds = noisePred.chunk(3);
        var (uncond, text, perturbed) = (thirds[0], thirds[1], thirds[2]);
        var guided = uncond + guidance * (text - uncond) + scale * (text - perturbed);
        return guidanceRescale > 0 ? RescaleNoiseCfg(guided, text, guidanceRescale) : guided;
    }
}
