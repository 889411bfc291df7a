using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// Continuous adaptive LayerNorm as SD3 uses it (diffusers <c>AdaLayerNormContinuous</c> with
/// <c>elementwise_affine=False, eps=1e-6, norm_type="layer_norm"</c>): <c>emb = Linear(SiLU(cond).to(x.dtype))</c> split
/// into <b>scale, shift</b> (that order), then <c>LayerNorm(x) * (1 + scale) + shift</c>.
/// </summary>
public sealed class AdaLayerNormContinuous : nn.Module<Tensor, Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear linear;
#pragma warning restore IDE1006
    private readonly long _dim;
    private readonly double _eps;

    /// <summary>Creates the norm for width <paramref name="embeddingDim"/> conditioned on <paramref name="conditioningEmbeddingDim"/>.</summary>
    public AdaLayerNormContinuous(long embeddingDim, long conditioningEmbeddingDim, double eps = 1e-6, bool bias = true,
        Device? device = null, ScalarType? dtype = null) : base(nameof(AdaLayerNormContinuous))
    {
        _dim = embeddingDim;
        _eps = eps;
        linear = new Linear(conditioningEmbeddingDim, 2 * embeddingDim, hasBias: bias, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Modulates <paramref name="x"/> [B, N, D] with <paramref name="conditioning"/> [B, C].</summary>
    public override Tensor forward(Tensor x, Tensor conditioning)
    {
        var emb = linear.forward(nn.functional.silu(conditioning).to(x.dtype));
        var c = emb.chunk(2, 1);
        return nn.functional.layer_norm(x, [_dim], eps: _eps) * (1 + c[0].unsqueeze(1)) + c[1].unsqueeze(1);
    }

    /// <summary>
    /// diffusers' <c>ChromaAdaLayerNormContinuousPruned</c> as Chroma builds it (no affine, eps 1e-6, no parameters): the
    /// modulation comes from outside as <paramref name="emb"/> [B, 2, D] in the order <b>shift, scale</b> (the reverse
    /// of <see cref="forward"/>'s linear output), cast to x's dtype; <c>LayerNorm(x) * (1 + scale) + shift</c>.
    /// </summary>
    public static Tensor Pruned(Tensor x, Tensor emb)
    {
        if (emb.dim() != 3 || emb.shape[1] != 2 || emb.shape[2] != x.shape[^1])
            throw new ArgumentException($"A pruned AdaLayerNormContinuous takes [B, 2, {x.shape[^1]}] modulation, got [{string.Join(", ", emb.shape)}].", nameof(emb));
        var c = emb.to(x.dtype).unbind(1);
        return nn.functional.layer_norm(x, [x.shape[^1]], eps: 1e-6) * (1 + c[1].unsqueeze(1)) + c[0].unsqueeze(1);
    }
}
