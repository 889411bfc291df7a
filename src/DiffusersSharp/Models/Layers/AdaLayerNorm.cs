using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// diffusers' <c>AdaLayerNorm</c> in its <c>chunk_dim=1</c> form (no embedding table), as the SD3 IP-Adapter's
/// <c>norm_ip</c> uses it: <c>linear(silu(temb))</c> split in half along the features into shift then scale, and
/// <c>LayerNorm(x)</c> without affine weights times <c>1 + scale</c> plus shift, broadcast over the tokens.
/// </summary>
public sealed class AdaLayerNorm : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear linear;
#pragma warning restore IDE1006
    private readonly long _dim;
    private readonly double _eps;

    /// <summary>Maps an embedding of <paramref name="embeddingDim"/> to shift and scale of <paramref name="outputDim"/> / 2 features.</summary>
    public AdaLayerNorm(long embeddingDim, long outputDim, double eps = 1e-5, Device? device = null, ScalarType? dtype = null) : base(nameof(AdaLayerNorm))
    {
        if (outputDim <= 0 || outputDim % 2 != 0) throw new ArgumentException($"output_dim must be a positive even number, got {outputDim}.", nameof(outputDim));
        _dim = outputDim / 2;
        _eps = eps;
        linear = new Linear(embeddingDim, outputDim, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Modulates <paramref name="x"/> [B, N, D] with <paramref name="temb"/> [B, embedding_dim].</summary>
    public Tensor forward(Tensor x, Tensor temb)
    {
        using var scope = NewDisposeScope();
        var shiftScale = linear.forward(nn.functional.silu(temb)).chunk(2, 1);
        var normed = nn.functional.layer_norm(x, [_dim], eps: _eps);
        return (normed * (1 + shiftScale[1].unsqueeze(1)) + shiftScale[0].unsqueeze(1)).MoveToOuterDisposeScope();
    }
}
