using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// The single-head spatial self-attention of the VAE mid blocks: diffusers' <c>Attention</c> (heads = 1, GroupNorm,
/// biased q/k/v/out, residual connection, output scale 1) run by <c>AttnProcessor2_0</c>.
/// </summary>
public sealed class VaeAttention : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006
    private readonly GroupNorm group_norm;
    private readonly Linear to_q;
    private readonly Linear to_k;
    private readonly Linear to_v;
    private readonly ModuleList<Linear> to_out;
#pragma warning restore IDE1006

    /// <summary>Builds the layer for <paramref name="channels"/> channels.</summary>
    public VaeAttention(long channels, long groups, double eps = 1e-6, Device? device = null, ScalarType? dtype = null)
        : base(nameof(VaeAttention))
    {
        group_norm = AffineGroupNorm.Create(groups, channels, eps, device, dtype);
        to_q = new Linear(channels, channels, hasBias: true, device: device, dtype: dtype);
        to_k = new Linear(channels, channels, hasBias: true, device: device, dtype: dtype);
        to_v = new Linear(channels, channels, hasBias: true, device: device, dtype: dtype);
        to_out = new ModuleList<Linear>(new Linear(channels, channels, hasBias: true, device: device, dtype: dtype));
        RegisterComponents();
    }

    /// <inheritdoc/>
    public override Tensor forward(Tensor input)
    {
        using var scope = NewDisposeScope();
        long b = input.shape[0], c = input.shape[1], height = input.shape[2], width = input.shape[3];
        // Tokens are pixels: [B, HW, C]; the norm runs on [B, C, HW] as in the processor.
        var tokens = input.view(b, c, height * width).transpose(1, 2);
        tokens = group_norm.forward(tokens.transpose(1, 2)).transpose(1, 2);
        var q = to_q.forward(tokens).view(b, -1, 1, c).transpose(1, 2);
        var k = to_k.forward(tokens).view(b, -1, 1, c).transpose(1, 2);
        var v = to_v.forward(tokens).view(b, -1, 1, c).transpose(1, 2);
        var attended = nn.functional.scaled_dot_product_attention(q, k, v);
        attended = attended.transpose(1, 2).reshape(b, -1, c);
        var projected = to_out[0].forward(attended);
        var result = projected.transpose(-1, -2).reshape(b, c, height, width) + input;
        return result.MoveToOuterDisposeScope();
    }
}
