using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// diffusers' <c>CogView4RotaryPosEmbed</c>: the rotary table of a patch grid. Half of the head's width rotates with the
/// row, half with the column; each half has head_dim / 4 frequencies <c>1 / θ^(2k / (head_dim / 2))</c> over
/// <c>rope_axes_dim</c> positions, of which a grid of any size takes evenly spaced rows (<c>i · rope_axes_dim // size</c>),
/// so every image size spans the same table. Computed in float32 on the CPU, as diffusers does (its tensors are made
/// there), then moved once to the device. No parameters.
/// </summary>
public sealed class CogView4RotaryPosEmbed : nn.Module
{
    private readonly int _dim;
    private readonly int _patchSize;
    private readonly int[] _ropeAxesDim;
    private readonly double _theta;

    /// <summary>Creates the table maker for heads of <paramref name="dim"/> (a multiple of 4).</summary>
    public CogView4RotaryPosEmbed(int dim, int patchSize, int[] ropeAxesDim, double theta = 10000.0) : base(nameof(CogView4RotaryPosEmbed))
    {
        _dim = dim;
        _patchSize = patchSize;
        _ropeAxesDim = ropeAxesDim;
        _theta = theta;
        RegisterComponents();
    }

    /// <summary>(cos, sin) [H·W, head_dim] float32 on <paramref name="device"/> for latents of <paramref name="latentHeight"/> ×
    /// <paramref name="latentWidth"/> (the patch grid is a patch_size fraction of it), row-major as the patch embedding's tokens.</summary>
    public (Tensor Cos, Tensor Sin) forward(long latentHeight, long latentWidth, Device device)
    {
        using var scope = NewDisposeScope();
        long height = latentHeight / _patchSize, width = latentWidth / _patchSize;
        var freqsH = Rows(_ropeAxesDim[0], height);
        var freqsW = Rows(_ropeAxesDim[1], width);
        long quarter = freqsH.shape[1];
        var grid = torch.cat([freqsH.unsqueeze(1).expand(height, width, quarter), freqsW.unsqueeze(0).expand(height, width, quarter)], -1);
        var freqs = torch.cat([grid, grid], -1).reshape(height * width, -1);
        return (freqs.cos().to(device).MoveToOuterDisposeScope(), freqs.sin().to(device).MoveToOuterDisposeScope());
    }

    /// <summary>The frequencies of one axis at the rows a grid of <paramref name="size"/> takes from <paramref name="axisRows"/> positions.</summary>
    private Tensor Rows(int axisRows, long size)
    {
        int half = _dim / 2;
        var exponent = torch.arange(0, half, 2, dtype: ScalarType.Float32).narrow(0, 0, half / 2) / half;
        // θ ** exponent as ATen computes a scalar base: a full tensor of the base keeps the same kernel and rounding.
        var invFreq = 1.0 / torch.full_like(exponent, _theta).pow(exponent);
        var table = torch.arange(axisRows, dtype: ScalarType.Int64).unsqueeze(1) * invFreq.unsqueeze(0);
        var rows = new long[size];
        for (long i = 0; i < size; i++) rows[i] = i * axisRows / size;
        return table.index_select(0, torch.tensor(rows));
    }

    /// <summary>
    /// diffusers' <c>apply_rotary_emb(x, (cos, sin), use_real_unbind_dim=-2)</c> on <paramref name="x"/> [B, H, S, D] with
    /// (cos, sin) [S, D]: the halves (a, b) of each head become (a·cos − b·sin, b·cos + a·sin), computed in float32 and
    /// returned in x's dtype.
    /// </summary>
    public static Tensor Apply(Tensor x, (Tensor Cos, Tensor Sin) rotary)
    {
        using var scope = NewDisposeScope();
        long half = x.shape[^1] / 2;
        var rotated = torch.cat([-x.narrow(-1, half, half), x.narrow(-1, 0, half)], -1);
        var result = (x.to(ScalarType.Float32) * rotary.Cos + rotated.to(ScalarType.Float32) * rotary.Sin).to(x.dtype);
        return result.MoveToOuterDisposeScope();
    }
}
