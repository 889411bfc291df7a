using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// The attention of a CogView4 block: diffusers' <c>Attention(bias=True, qk_norm="layer_norm",
/// elementwise_affine=False)</c> run by <c>CogView4AttnProcessor</c>. Text and image tokens are joined (text first) and
/// projected together by <c>to_q</c> / <c>to_k</c> / <c>to_v</c>; q and k are layer-normed per head (no affine, eps
/// 1e-5), the image part of q and k is rotated by the grid's rotary table, and one attention over the joint sequence is
/// projected by <c>to_out.0</c> and split back into text and image.
/// </summary>
public sealed class CogView4Attention : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear to_q;
    private readonly Linear to_k;
    private readonly Linear to_v;
    private readonly ModuleList<nn.Module<Tensor, Tensor>> to_out;
#pragma warning restore IDE1006
    private readonly int _heads;
    private readonly int _headDim;

    /// <summary>Creates the attention of width <paramref name="dim"/> with <paramref name="heads"/> heads of <paramref name="headDim"/>.</summary>
    public CogView4Attention(long dim, int heads, int headDim, Device? device = null, ScalarType? dtype = null) : base(nameof(CogView4Attention))
    {
        _heads = heads;
        _headDim = headDim;
        long inner = (long)heads * headDim;
        to_q = new Linear(dim, inner, hasBias: true, device: device, dtype: dtype);
        to_k = new Linear(dim, inner, hasBias: true, device: device, dtype: dtype);
        to_v = new Linear(dim, inner, hasBias: true, device: device, dtype: dtype);
        to_out = new ModuleList<nn.Module<Tensor, Tensor>>(new Linear(inner, dim, hasBias: true, device: device, dtype: dtype), nn.Dropout(0.0));
        RegisterComponents();
    }

    /// <summary>Attends over text <paramref name="context"/> [B, S, D] then image <paramref name="x"/> [B, N, D] with the image
    /// tokens' rotary table (cos, sin) [N, head_dim]; returns the image and text outputs.</summary>
    public (Tensor X, Tensor Context) forward(Tensor x, Tensor context, (Tensor Cos, Tensor Sin) rotary)
    {
        using var scope = NewDisposeScope();
        var dtype = context.dtype;
        long b = x.shape[0], textLength = context.shape[1];
        var joint = torch.cat([context, x], 1);
        Tensor Heads(Linear projection) => projection.forward(joint).view(b, -1, _heads, _headDim).transpose(1, 2);
        Tensor Normed(Tensor t) => nn.functional.layer_norm(t, [_headDim], eps: 1e-5).to(dtype);
        Tensor Rotated(Tensor t)
        {
            long total = t.shape[2];
            var image = CogView4RotaryPosEmbed.Apply(t.narrow(2, textLength, total - textLength), rotary);
            return torch.cat([t.narrow(2, 0, textLength), image], 2);
        }
        var q = Rotated(Normed(Heads(to_q)));
        var k = Rotated(Normed(Heads(to_k)));
        var v = Heads(to_v);
        var attended = nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2, 3).to(q.dtype);
        var output = to_out[0].forward(attended);
        var textOut = output.narrow(1, 0, textLength);
        var imageOut = output.narrow(1, textLength, output.shape[1] - textLength);
        return (imageOut.MoveToOuterDisposeScope(), textOut.MoveToOuterDisposeScope());
    }
}
