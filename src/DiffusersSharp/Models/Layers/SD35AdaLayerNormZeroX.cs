using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>The outputs of <see cref="SD35AdaLayerNormZeroX"/>.</summary>
/// <param name="X">LayerNorm(x) * (1 + scale_msa) + shift_msa, for the joint attention.</param>
/// <param name="GateMsa">Gate of the joint attention output [B, D].</param>
/// <param name="ShiftMlp">Shift before the feed-forward [B, D].</param>
/// <param name="ScaleMlp">Scale before the feed-forward [B, D].</param>
/// <param name="GateMlp">Gate of the feed-forward output [B, D].</param>
/// <param name="X2">LayerNorm(x) * (1 + scale_msa2) + shift_msa2, for the second (self) attention.</param>
/// <param name="GateMsa2">Gate of the second attention output [B, D].</param>
public readonly record struct SD35AdaLayerNormZeroXOutput(Tensor X, Tensor GateMsa, Tensor ShiftMlp, Tensor ScaleMlp, Tensor GateMlp, Tensor X2, Tensor GateMsa2);

/// <summary>
/// SD3.5's AdaLayerNorm-Zero with a second modulation for the dual attention layers (diffusers
/// <c>SD35AdaLayerNormZeroX</c>): <c>Linear(SiLU(temb))</c> split into 9 in the order shift_msa, scale_msa, gate_msa,
/// shift_mlp, scale_mlp, gate_mlp, shift_msa2, scale_msa2, gate_msa2; one LayerNorm (eps 1e-6, no affine) shared by both
/// modulated outputs.
/// </summary>
public sealed class SD35AdaLayerNormZeroX : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear linear;
#pragma warning restore IDE1006
    private readonly long _dim;

    /// <summary>Creates the norm for width <paramref name="dim"/>.</summary>
    public SD35AdaLayerNormZeroX(long dim, Device? device = null, ScalarType? dtype = null) : base(nameof(SD35AdaLayerNormZeroX))
    {
        _dim = dim;
        linear = new Linear(dim, 9 * dim, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Modulates <paramref name="x"/> [B, N, D] with the conditioning <paramref name="emb"/> [B, D].</summary>
    public SD35AdaLayerNormZeroXOutput forward(Tensor x, Tensor emb)
    {
        var c = linear.forward(nn.functional.silu(emb)).chunk(9, 1);
        Tensor h, h2;
        using (var scope = NewDisposeScope())
        {
            var normed = nn.functional.layer_norm(x, [_dim], eps: 1e-6);
            h = (normed * (1 + c[1].unsqueeze(1)) + c[0].unsqueeze(1)).MoveToOuterDisposeScope();
            h2 = (normed * (1 + c[7].unsqueeze(1)) + c[6].unsqueeze(1)).MoveToOuterDisposeScope();
        }
        return new SD35AdaLayerNormZeroXOutput(h, c[2], c[3], c[4], c[5], h2, c[8]);
    }
}
