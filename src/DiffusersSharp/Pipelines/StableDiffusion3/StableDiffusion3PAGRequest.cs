namespace DiffusersSharp.Pipelines.StableDiffusion3;

/// <summary>
/// The parameters of an SD3 text-to-image call with Perturbed-Attention Guidance (Ahn et al. 2024; diffusers'
/// <c>StableDiffusion3PAGPipeline.__call__</c>): besides the usual prediction, the transformer predicts once more with the
/// attention of <see cref="PagAppliedLayers"/> perturbed (each image token attends to itself and the text tokens, not to
/// the other image tokens), and the result is pushed away from that degraded prediction: <c>uncond + g · (text − uncond) +
/// s · (text − perturbed)</c> with classifier-free guidance, <c>text + s · (text − perturbed)</c> without (guidance_scale ≤
/// 1). PAG is off when <see cref="PagScale"/> is 0 or <see cref="PagAppliedLayers"/> is empty (the call is then the plain
/// pipeline's). As diffusers' pipeline it has no skip-layer guidance and no IP-Adapter (both refused).
/// </summary>
public record StableDiffusion3PAGRequest : StableDiffusion3Request
{
    /// <summary>diffusers' <c>pag_scale</c> (default 3.0): the weight of the perturbed-attention term; 0 turns PAG off.</summary>
    public double PagScale { get; init; } = 3.0;

    /// <summary>diffusers' <c>pag_adaptive_scale</c> (default 0, off): when above 0 the scale at timestep t is
    /// <c>max(pag_scale − pag_adaptive_scale · (1000 − t), 0)</c>, so PAG fades out toward the end of the schedule.</summary>
    public double PagAdaptiveScale { get; init; }

    /// <summary>
    /// diffusers' <c>pag_applied_layers</c> (default ["blocks.1"]): regular expressions searched in the transformer's
    /// attention names <c>transformer_blocks.N.attn</c> (see <see cref="Models.Transformers.SD3Transformer2DModel.ResolvePagLayers"/>).
    /// As in diffusers, "blocks.1" also finds blocks 10 to 19 of a transformer that has them; anchor it
    /// (<c>transformer_blocks\.1\.attn$</c>) for one block. SD3.5's dual-attention blocks also have an image-only
    /// <c>attn2</c>, which diffusers' PAG processors fail on: an id that finds one is refused.
    /// </summary>
    public IReadOnlyList<string> PagAppliedLayers { get; init; } = ["blocks.1"];
}

/// <summary>
/// The parameters of an SD3 image-to-image call with Perturbed-Attention Guidance (diffusers'
/// <c>StableDiffusion3PAGImg2ImgPipeline.__call__</c>): the image-to-image ones plus PAG's, as in
/// <see cref="StableDiffusion3PAGRequest"/>.
/// </summary>
public record StableDiffusion3PAGImg2ImgRequest : StableDiffusion3Img2ImgRequest
{
    /// <inheritdoc cref="StableDiffusion3PAGRequest.PagScale"/>
    public double PagScale { get; init; } = 3.0;

    /// <inheritdoc cref="StableDiffusion3PAGRequest.PagAdaptiveScale"/>
    public double PagAdaptiveScale { get; init; }

    /// <inheritdoc cref="StableDiffusion3PAGRequest.PagAppliedLayers"/>
    public IReadOnlyList<string> PagAppliedLayers { get; init; } = ["blocks.1"];
}
