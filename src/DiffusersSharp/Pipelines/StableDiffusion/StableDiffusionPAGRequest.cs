namespace DiffusersSharp.Pipelines.StableDiffusion;

/// <summary>
/// The parameters of a text-to-image call with Perturbed-Attention Guidance (Ahn et al. 2024; diffusers'
/// <c>StableDiffusionPAGPipeline.__call__</c> and <c>StableDiffusionXLPAGPipeline.__call__</c>): besides the usual
/// prediction, the UNet predicts once more with the self-attention of <see cref="PagAppliedLayers"/> replaced by the
/// identity, and the result is pushed away from that degraded prediction: <c>uncond + g · (text − uncond) + s · (text −
/// perturbed)</c> with classifier-free guidance, <c>text + s · (text − perturbed)</c> without (guidance_scale ≤ 1). PAG is
/// off when <see cref="PagScale"/> is 0 or <see cref="PagAppliedLayers"/> is empty (the call is then the plain pipeline's).
/// Not for UNets conditioned on the guidance-scale embedding (<c>time_cond_proj_dim</c>).
/// </summary>
public record StableDiffusionPAGRequest : StableDiffusionRequest, IPagRequest
{
    /// <summary>diffusers' <c>pag_scale</c> (default 3.0): the weight of the perturbed-attention term; 0 turns PAG off.</summary>
    public double PagScale { get; init; } = 3.0;

    /// <summary>diffusers' <c>pag_adaptive_scale</c> (default 0, off): when above 0 the scale at timestep t is
    /// <c>max(pag_scale − pag_adaptive_scale · (1000 − t), 0)</c>, so PAG fades out toward the end of the schedule.</summary>
    public double PagAdaptiveScale { get; init; }

    /// <summary>diffusers' <c>pag_applied_layers</c> (default ["mid"]): regular expressions over the UNet's module names; PAG
    /// perturbs every self-attention (<c>attn1</c>) one of them finds (see
    /// <see cref="Models.Unets.UNet2DConditionModel.ResolvePagLayers"/>), e.g. "mid", "down_blocks.1",
    /// "up_blocks.0.attentions.1".</summary>
    public IReadOnlyList<string> PagAppliedLayers { get; init; } = ["mid"];
}

/// <summary>
/// The parameters of an image-to-image call with Perturbed-Attention Guidance (diffusers'
/// <c>StableDiffusionPAGImg2ImgPipeline.__call__</c> and <c>StableDiffusionXLPAGImg2ImgPipeline.__call__</c>): the
/// image-to-image ones plus PAG's, as in <see cref="StableDiffusionPAGRequest"/>.
/// </summary>
public record StableDiffusionPAGImg2ImgRequest : StableDiffusionImg2ImgRequest, IPagRequest
{
    /// <inheritdoc cref="StableDiffusionPAGRequest.PagScale"/>
    public double PagScale { get; init; } = 3.0;

    /// <inheritdoc cref="StableDiffusionPAGRequest.PagAdaptiveScale"/>
    public double PagAdaptiveScale { get; init; }

    /// <inheritdoc cref="StableDiffusionPAGRequest.PagAppliedLayers"/>
    public IReadOnlyList<string> PagAppliedLayers { get; init; } = ["mid"];
}

/// <summary>
/// The parameters of an inpainting call with Perturbed-Attention Guidance (diffusers'
/// <c>StableDiffusionPAGInpaintPipeline.__call__</c> and <c>StableDiffusionXLPAGInpaintPipeline.__call__</c>): the
/// inpainting ones plus PAG's, as in <see cref="StableDiffusionPAGRequest"/>. As diffusers has them, the SD 1.x / 2.x
/// pipeline's default strength is 0.9999 (not the plain inpainting pipeline's 1.0), and it refuses
/// <see cref="StableDiffusionInpaintRequest.PaddingMaskCrop"/> and, under PAG with classifier-free guidance,
/// <see cref="StableDiffusionRequest.GuidanceRescale"/> (diffusers fails on both).
/// </summary>
public record StableDiffusionPAGInpaintRequest : StableDiffusionInpaintRequest, IPagRequest
{
    /// <inheritdoc cref="StableDiffusionPAGRequest.PagScale"/>
    public double PagScale { get; init; } = 3.0;

    /// <inheritdoc cref="StableDiffusionPAGRequest.PagAdaptiveScale"/>
    public double PagAdaptiveScale { get; init; }

    /// <inheritdoc cref="StableDiffusionPAGRequest.PagAppliedLayers"/>
    public IReadOnlyList<string> PagAppliedLayers { get; init; } = ["mid"];
}

/// <summary>The PAG parameters the text-to-image, image-to-image and inpainting PAG requests share.</summary>
internal interface IPagRequest
{
    double PagScale { get; }
    double PagAdaptiveScale { get; }
    IReadOnlyList<string> PagAppliedLayers { get; }
}
