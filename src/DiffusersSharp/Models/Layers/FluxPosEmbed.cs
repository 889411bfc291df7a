using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// Flux's multi-axis rotary position embedding (diffusers <c>FluxPosEmbed</c> over <c>get_1d_rotary_pos_embed</c> with
/// <c>use_real=True, repeat_interleave_real=True</c>), and <see cref="Apply"/> (diffusers' <c>apply_rotary_emb</c>,
/// <c>use_real_unbind_dim=-1</c>). No weights. For each axis i of the position ids [S, n_axes], with d = axes_dim[i]:
/// <c>freq_k = 1 / theta^(2k / d)</c> (k &lt; d/2), <c>angle = pos · freq</c>; cos and sin of the angles, each value
/// repeated twice in place, concatenated over the axes to [S, Σ axes_dim]. The frequencies and angles are float64 (diffusers:
/// float32 only on devices without float64; of those TorchSharp has MPS), the positions float32, the result float32.
/// </summary>
public sealed class FluxPosEmbed : nn.Module<Tensor, (Tensor Cos, Tensor Sin)>
{
    private readonly double _theta;
    private readonly int[] _axesDim;

    /// <summary>Creates the embedding with base <paramref name="theta"/> and one width per position axis.</summary>
    /// <exception cref="ArgumentException">An axis width is not a positive even number.</exception>
    public FluxPosEmbed(double theta, IReadOnlyList<int> axesDim) : base(nameof(FluxPosEmbed))
    {
        foreach (int d in axesDim)
            if (d < 2 || d % 2 != 0) throw new ArgumentException($"Every rotary axis width must be a positive even number, got [{string.Join(", ", axesDim)}].", nameof(axesDim));
        _theta = theta;
        _axesDim = axesDim.ToArray();
        RegisterComponents();
    }

    /// <summary>The summed width of the axes (must equal the attention head width).</summary>
    public int Dim => _axesDim.Sum();

    /// <summary>Returns (cos, sin), each float32 [S, Σ axes_dim], for the position ids <paramref name="ids"/> [S, n_axes].</summary>
    /// <exception cref="ArgumentException">The ids are not [S, number of axes].</exception>
    public override (Tensor Cos, Tensor Sin) forward(Tensor ids)
    {
        if (ids.dim() != 2 || ids.shape[1] != _axesDim.Length)
            throw new ArgumentException($"position ids must be [S, {_axesDim.Length}], got [{string.Join(", ", ids.shape)}].", nameof(ids));
        using var scope = NewDisposeScope();
        var pos = ids.to(ScalarType.Float32);
        var freqsDtype = ids.device_type == DeviceType.MPS ? ScalarType.Float32 : ScalarType.Float64;
        var cos = new Tensor[_axesDim.Length];
        var sin = new Tensor[_axesDim.Length];
        for (int i = 0; i < _axesDim.Length; i++)
            (cos[i], sin[i]) = RotaryCosSin(_axesDim[i], pos[.., i], _theta, freqsDtype);
        return (torch.cat(cos, -1).MoveToOuterDisposeScope(), torch.cat(sin, -1).MoveToOuterDisposeScope());
    }

    /// <summary>
    /// diffusers' <c>get_1d_rotary_pos_embed(dim, pos, theta, use_real=True, repeat_interleave_real=True, freqs_dtype)</c>:
    /// float32 (cos, sin) [S, dim] with each frequency's value in two adjacent columns.
    /// </summary>
    public static (Tensor Cos, Tensor Sin) RotaryCosSin(int dim, Tensor pos, double theta, ScalarType freqsDtype)
    {
        using var scope = NewDisposeScope();
        var exponent = torch.arange(0, dim, 2, dtype: freqsDtype, device: pos.device) / dim;
        // theta ** exponent as ATen computes a scalar base: a full tensor of the base keeps the same kernel and rounding.
        var freqs = 1.0 / torch.full_like(exponent, theta).pow(exponent);
        // torch.outer(pos, freqs): a broadcast product, promoted to the frequencies' dtype.
        var angles = pos.unsqueeze(1) * freqs.unsqueeze(0);
        long half = freqs.shape[0];
        var cos = angles.cos().repeat_interleave(2, dim: 1, output_size: 2 * half).to(ScalarType.Float32);
        var sin = angles.sin().repeat_interleave(2, dim: 1, output_size: 2 * half).to(ScalarType.Float32);
        return (cos.MoveToOuterDisposeScope(), sin.MoveToOuterDisposeScope());
    }

    /// <summary>
    /// diffusers' <c>apply_rotary_emb(x, (cos, sin), use_real=True, use_real_unbind_dim=-1)</c> for <paramref name="x"/>
    /// [B, H, S, D] and (cos, sin) [S, D], or [B, S, D] for positions of their own per sample (Z-Image): each adjacent
    /// pair (a, b) becomes (a·cos − b·sin, b·cos + a·sin), computed in float32 and returned in x's dtype. That is the
    /// complex product (a + ib)(cos + i·sin) of <c>view_as_complex</c> rotations, rounded the same way (each product
    /// rounded, then the sum).
    /// </summary>
    public static Tensor Apply(Tensor x, (Tensor Cos, Tensor Sin) rotary)
    {
        using var scope = NewDisposeScope();
        var cos = rotary.Cos.to(x.device);
        var sin = rotary.Sin.to(x.device);
        (cos, sin) = cos.dim() == 3 ? (cos.unsqueeze(1), sin.unsqueeze(1)) : (cos.unsqueeze(0).unsqueeze(0), sin.unsqueeze(0).unsqueeze(0));
        long[] pairs = [.. x.shape[..^1], -1, 2];
        var parts = x.reshape(pairs).unbind(-1);
        var rotated = torch.stack([-parts[1], parts[0]], -1).flatten(3);
        var result = (x.to(ScalarType.Float32) * cos + rotated.to(ScalarType.Float32) * sin).to(x.dtype);
        return result.MoveToOuterDisposeScope();
    }
}
