using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines;

/// <summary>
/// Perturbed-Attention Guidance for one call (diffusers' <c>PAGMixin</c>), shared by the UNet (SD 1.x / SDXL) and SD3 PAG
/// pipelines: the pag_scale, pag_adaptive_scale and whether classifier-free guidance runs beside it (the denoiser's batch is
/// then [uncond, cond, perturbed], otherwise [cond, perturbed]).
/// </summary>
internal sealed record PerturbedAttentionGuidance(double Scale, double AdaptiveScale, bool Cfg)
{
    /// <summary>diffusers' <c>do_perturbed_attention_guidance</c>: pag_scale above 0 and some layers.</summary>
    public static bool IsOn(double scale, IReadOnlyList<string> layers) => scale > 0 && layers.Count > 0;

    /// <summary>The scales, before any compute: finite and not negative; the layer list given.</summary>
    /// <exception cref="ArgumentException">A scale is negative or not finite, or the layer list is null.</exception>
    public static void CheckScales(double scale, double adaptiveScale, IReadOnlyList<string>? layers)
    {
        if (!double.IsFinite(scale) || scale < 0) throw new ArgumentException($"pag_scale must be a finite number >= 0, got {scale}.");
        if (!double.IsFinite(adaptiveScale) || adaptiveScale < 0)
            throw new ArgumentException($"pag_adaptive_scale must be a finite number >= 0, got {adaptiveScale}.");
        if (layers is null) throw new ArgumentException("pag_applied_layers must not be null (an empty list turns PAG off).");
    }

    /// <summary>The batch the denoiser runs: 3 parts with classifier-free guidance, 2 without.</summary>
    public int Copies => Cfg ? 3 : 2;

    /// <summary>
    /// diffusers' <c>_get_pag_scale</c> at timestep <paramref name="t"/>: with pag_adaptive_scale above 0,
    /// <c>max(pag_scale − pag_adaptive_scale · (1000 − t), 0)</c> in float32, as its tensor arithmetic on the timestep runs.
    /// </summary>
    public double ScaleAt(float t)
    {
        if (AdaptiveScale <= 0) return Scale;
        float adaptive = (float)Scale - (float)AdaptiveScale * (1000f - t);
        return adaptive < 0 ? 0 : adaptive;
    }

    /// <summary>
    /// diffusers' <c>_apply_perturbed_attention_guidance</c> on the denoiser's output at timestep <paramref name="t"/>:
    /// <c>uncond + g · (text − uncond) + s · (text − perturbed)</c> with CFG, <c>text + s · (text − perturbed)</c> without.
    /// Returns the guided prediction and the text part (for guidance rescale).
    /// </summary>
    public (Tensor Guided, Tensor Text) Apply(Tensor prediction, double guidance, float t)
    {
        double scale = ScaleAt(t);
        if (!Cfg)
        {
            var parts = prediction.chunk(2);
            return (parts[0] + scale * (parts[0] - parts[1]), parts[0]);
        }
        var thirds = prediction.chunk(3);
        var (uncond, text, perturbed) = (thirds[0], thirds[1], thirds[2]);
        return (uncond + guidance * (text - uncond) + scale * (text - perturbed), text);
    }
}
