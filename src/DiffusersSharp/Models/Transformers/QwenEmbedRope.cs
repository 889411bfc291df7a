using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// Qwen-Image's rotary position table (diffusers <c>QwenEmbedRope</c> with <c>scale_rope=True</c>). No weights. Three
/// axes (frame, height, width) of widths <c>axes_dim</c>; for axis width d, <c>freq_k = 1 / theta^(2k / d)</c> and a
/// position p turns by <c>p · freq_k</c>, all in float32 as diffusers' <c>rope_params</c> computes them. Image tokens of a
/// packed h × w latent grid take frame 0 and centred row / column positions, <c>y − (h − h/2)</c> and <c>x − (w − w/2)</c>
/// (diffusers' negative table for the upper half); text token j takes <c>max(h/2, w/2) + j</c> on all three axes, so text
/// sits after the image's largest position. Returns the joint table (text first, then image) as float32 (cos, sin)
/// [S_txt + S_img, Σ axes_dim] with each frequency in two adjacent columns, the form <see cref="Layers.FluxPosEmbed.Apply"/>
/// takes; diffusers' complex product <c>view_as_complex(x) · polar(1, angle)</c> is that rotation. The last two tables
/// are kept (diffusers caches its video frequencies): a denoising loop asks for the same ones at every step.
/// </summary>
public sealed class QwenEmbedRope : nn.Module
{
    private readonly double _theta;
    private readonly int[] _axesDim;
    // The last two tables (true CFG alternates the prompt's and the negative prompt's text lengths), newest last.
    private readonly List<((long Frames, long Height, long Width, long Text, DeviceType Type, int Index) Key, (Tensor Cos, Tensor Sin) Table)> _cache = [];

    /// <summary>Creates the table for base <paramref name="theta"/> (10000 in Qwen-Image) and three axis widths.</summary>
    /// <exception cref="ArgumentException">Not three positive even widths.</exception>
    public QwenEmbedRope(double theta, IReadOnlyList<int> axesDim) : base(nameof(QwenEmbedRope))
    {
        ArgumentNullException.ThrowIfNull(axesDim);
        if (axesDim.Count != 3 || axesDim.Any(d => d < 2 || d % 2 != 0))
            throw new ArgumentException($"Qwen-Image's rotary table takes three positive even axis widths, got [{string.Join(", ", axesDim)}].", nameof(axesDim));
        _theta = theta;
        _axesDim = axesDim.ToArray();
        RegisterComponents();
    }

    /// <summary>
    /// The (cos, sin) table for <paramref name="textTokens"/> text tokens followed by the image tokens of one
    /// <paramref name="frames"/> × <paramref name="height"/> × <paramref name="width"/> packed latent grid, on <paramref name="device"/>.
    /// The tensors belong to this module (kept for the next call with the same sizes): do not dispose them.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">A size is not positive, or positions pass diffusers' 4096-entry tables.</exception>
    public (Tensor Cos, Tensor Sin) forward(long frames, long height, long width, long textTokens, Device device)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(frames, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(height, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(width, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(textTokens);
        long textStart = Math.Max(height / 2, width / 2);
        // diffusers indexes tables of positions 0..4095 (and -4096..-1): beyond them its slices come up short.
        if (frames > 4096 || textStart + textTokens > 4096)
            throw new ArgumentOutOfRangeException(nameof(textTokens), $"Qwen-Image's rotary positions stop at 4095: {textTokens} text tokens after an image of {height} x {width} patches pass it.");

        var key = (frames, height, width, textTokens, device.type, device.index);
        foreach (var (cachedKey, cached) in _cache)
            if (cachedKey == key) return cached;
        var table = Compute(frames, height, width, textTokens, device);
        if (_cache.Count == 2)
        {
            _cache[0].Table.Cos.Dispose();
            _cache[0].Table.Sin.Dispose();
            _cache.RemoveAt(0);
        }
        _cache.Add((key, table));
        return table;
    }

    private (Tensor Cos, Tensor Sin) Compute(long frames, long height, long width, long textTokens, Device device)
    {
        long textStart = Math.Max(height / 2, width / 2);
        using var scope = NewDisposeScope();
        var frame = arange(frames, dtype: ScalarType.Float32, device: device);
        var row = arange(height, dtype: ScalarType.Float32, device: device) - (height - height / 2);
        var column = arange(width, dtype: ScalarType.Float32, device: device) - (width - width / 2);
        long image = frames * height * width;
        var imagePositions = new[]
        {
            frame.view(-1, 1, 1).expand(frames, height, width).reshape(image),
            row.view(1, -1, 1).expand(frames, height, width).reshape(image),
            column.view(1, 1, -1).expand(frames, height, width).reshape(image),
        };
        var text = arange(textStart, textStart + textTokens, dtype: ScalarType.Float32, device: device);

        var cos = new Tensor[3];
        var sin = new Tensor[3];
        for (int axis = 0; axis < 3; axis++)
        {
            var angles = cat([text, imagePositions[axis]], 0).unsqueeze(1) * InverseFrequencies(_axesDim[axis], device).unsqueeze(0);
            cos[axis] = angles.cos().repeat_interleave(2, dim: 1, output_size: _axesDim[axis]);
            sin[axis] = angles.sin().repeat_interleave(2, dim: 1, output_size: _axesDim[axis]);
        }
        // Outside every dispose scope: the module owns the table until the next one replaces it or it is disposed.
        return (cat(cos, 1).DetachFromDisposeScope(), cat(sin, 1).DetachFromDisposeScope());
    }

    /// <inheritdoc />
    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            foreach (var (_, table) in _cache)
            {
                table.Cos.Dispose();
                table.Sin.Dispose();
            }
            _cache.Clear();
        }
        base.Dispose(disposing);
    }

    /// <summary><c>1.0 / theta ** (arange(0, d, 2).float() / d)</c> in float32, the values diffusers' rope_params multiplies by.</summary>
    private Tensor InverseFrequencies(int d, Device device)
    {
        var exponent = arange(0, d, 2, dtype: ScalarType.Float32, device: device).div(d);
        // theta ** exponent as ATen computes a scalar base: a full tensor of the base keeps the same kernel and rounding.
        return full_like(exponent, _theta).pow(exponent).reciprocal();
    }
}
