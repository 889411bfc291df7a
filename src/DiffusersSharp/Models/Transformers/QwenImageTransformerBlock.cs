using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// One dual-stream Qwen-Image block (diffusers <c>QwenImageTransformerBlock</c>): each stream has its own modulation
/// (<c>img_mod</c> / <c>txt_mod</c>: SiLU then a Linear to six vectors: shift, scale and gate before the attention, then
/// before the MLP), LayerNorms without weights (eps 1e-6), and a tanh-GELU MLP; both attend jointly (text tokens first,
/// RMSNorm on q and k, rotary positions: <c>QwenDoubleStreamAttnProcessor2_0</c>). In float16 both streams are clipped to
/// ±65504 at the end, as diffusers does.
/// </summary>
public sealed class QwenImageTransformerBlock : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly ModuleList<nn.Module<Tensor, Tensor>> img_mod;
    private readonly JointAttention attn;
    private readonly FeedForward img_mlp;
    private readonly ModuleList<nn.Module<Tensor, Tensor>> txt_mod;
    private readonly FeedForward txt_mlp;
#pragma warning restore IDE1006
    private readonly long _dim;

    /// <summary>Creates a block of width <paramref name="dim"/> = heads × head width.</summary>
    public QwenImageTransformerBlock(long dim, int numAttentionHeads, int attentionHeadDim, Device? device = null, ScalarType? dtype = null)
        : base(nameof(QwenImageTransformerBlock))
    {
        _dim = dim;
        // nn.Sequential(SiLU, Linear) in diffusers: the Linear's keys are img_mod.1.* / txt_mod.1.*.
        img_mod = new ModuleList<nn.Module<Tensor, Tensor>>(nn.SiLU(), new Linear(dim, 6 * dim, hasBias: true, device: device, dtype: dtype));
        attn = new JointAttention(dim, numAttentionHeads, attentionHeadDim, joint: true, contextPreOnly: false, qkRmsNorm: true,
            device, dtype, contextFirst: true);
        img_mlp = new FeedForward(dim, dim, activationFn: "gelu-approximate", device: device, dtype: dtype);
        txt_mod = new ModuleList<nn.Module<Tensor, Tensor>>(nn.SiLU(), new Linear(dim, 6 * dim, hasBias: true, device: device, dtype: dtype));
        txt_mlp = new FeedForward(dim, dim, activationFn: "gelu-approximate", device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Runs the block on image tokens <paramref name="x"/> [B, N, D] and text tokens <paramref name="context"/> [B, S, D]
    /// with the timestep embedding <paramref name="temb"/> [B, D], the joint rotary table (text, then image) and an
    /// optional key mask <paramref name="attentionMask"/> (bool, [B, 1, 1, S + N]: false hides a padded text token).
    /// Returns the new text and image tokens.
    /// </summary>
    public (Tensor Context, Tensor X) forward(Tensor x, Tensor context, Tensor temb, (Tensor Cos, Tensor Sin) rotary, Tensor? attentionMask = null)
    {
        // shift, scale, gate for the attention, then for the MLP (diffusers: chunk(2), then each chunk(3)).
        var imgMod = img_mod[1].forward(img_mod[0].forward(temb)).chunk(6, 1);
        var txtMod = txt_mod[1].forward(txt_mod[0].forward(temb)).chunk(6, 1);

        var (ax, ac) = attn.forward(AdaLayerNormZero.Modulated(x, _dim, imgMod[1], imgMod[0]), AdaLayerNormZero.Modulated(context, _dim, txtMod[1], txtMod[0]),
            rotary: rotary, attentionMask: attentionMask);

        x = AdaLayerNormZero.GatedResidual(x, imgMod[2], ax);
        context = AdaLayerNormZero.GatedResidual(context, txtMod[2], ac!);
        x = AdaLayerNormZero.GatedResidual(x, imgMod[5], img_mlp.forward(AdaLayerNormZero.Modulated(x, _dim, imgMod[4], imgMod[3])));
        context = AdaLayerNormZero.GatedResidual(context, txtMod[5], txt_mlp.forward(AdaLayerNormZero.Modulated(context, _dim, txtMod[4], txtMod[3])));

        if (context.dtype == ScalarType.Float16) context = context.clip(-65504, 65504);
        if (x.dtype == ScalarType.Float16) x = x.clip(-65504, 65504);
        return (context, x);
    }
}
