using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// The rotary embeddings of one <see cref="Lumina2Transformer2DModel"/> call, as real (cos, sin) pairs in float64 (each
/// value in the two columns of its pair, for <see cref="Layers.FluxPosEmbed.Apply"/>): <see cref="Caption"/> [B, L, head_dim]
/// (zero, no rotation and no magnitude, on each sample's padded caption tokens), <see cref="Image"/> [B, N, head_dim],
/// <see cref="Joint"/> [B, max sequence, head_dim] (each sample's real caption tokens then its image tokens, padding at
/// position 0), <see cref="SequenceLengths"/> (real caption length + N per sample).
/// </summary>
public sealed record Lumina2RotaryEmbeddings((Tensor Cos, Tensor Sin) Caption, (Tensor Cos, Tensor Sin) Image, (Tensor Cos, Tensor Sin) Joint, long[] SequenceLengths);

/// <summary>
/// diffusers' <c>Lumina2RotaryPosEmbed</c>: 3-axis RoPE over (caption index, row, column). Caption token j of a sample
/// whose mask keeps c tokens sits at (j, 0, 0); its image patch (r, w) at (c, r, w); every other slot at (0, 0, 0). Per
/// axis of width d, <c>freq_k = 1 / θ^(2k/d)</c> and the angle <c>pos · freq_k</c> are float64 (diffusers' tables on
/// every device but MPS), and <c>torch.polar(1, angle)</c> stays complex128, so the rotation is float64 too. No
/// weights. Positions at or past <c>axes_lens</c> do not exist in diffusers' tables (<see cref="RangeProblem"/>).
/// </summary>
public sealed class Lumina2RotaryPosEmbed : nn.Module
{
    private readonly double _theta;
    private readonly int[] _axesDim;
    private readonly int[] _axesLens;

    /// <summary>Creates the embedding with base <paramref name="theta"/>, one width and one table length per axis.</summary>
    /// <exception cref="ArgumentException">Not three axes, or a width is not a positive even number.</exception>
    public Lumina2RotaryPosEmbed(double theta, IReadOnlyList<int> axesDim, IReadOnlyList<int> axesLens) : base(nameof(Lumina2RotaryPosEmbed))
    {
        ArgumentNullException.ThrowIfNull(axesDim);
        ArgumentNullException.ThrowIfNull(axesLens);
        if (axesDim.Count != 3 || axesLens.Count != 3 || axesDim.Any(d => d < 2 || d % 2 != 0))
            throw new ArgumentException($"Lumina2 RoPE needs three even axis widths and three table lengths, got [{string.Join(", ", axesDim)}] and [{string.Join(", ", axesLens)}].");
        _theta = theta;
        _axesDim = [.. axesDim];
        _axesLens = [.. axesLens];
        RegisterComponents();
    }

    /// <summary>
    /// Why a sample with <paramref name="captionLength"/> kept caption tokens and <paramref name="rows"/> ×
    /// <paramref name="cols"/> patches needs positions past <c>axes_lens</c>, or null when it fits (its image sits at caption
    /// index <paramref name="captionLength"/>).
    /// </summary>
    public string? RangeProblem(long captionLength, long rows, long cols)
    {
        if (captionLength < _axesLens[0] && rows <= _axesLens[1] && cols <= _axesLens[2]) return null;
        return $"{captionLength} caption tokens and {rows} x {cols} patches need RoPE positions up to ({captionLength}, {rows - 1}, {cols - 1}), " +
            $"past this transformer's axes_lens [{string.Join(", ", _axesLens)}]: use a shorter caption or a smaller image.";
    }

    /// <summary>
    /// The embeddings for a batch whose masks keep <paramref name="captionLengths"/> tokens of
    /// <paramref name="captionSequenceLength"/>, with <paramref name="rows"/> × <paramref name="cols"/> patches per image.
    /// </summary>
    public Lumina2RotaryEmbeddings forward(long[] captionLengths, long captionSequenceLength, long rows, long cols, Device device)
    {
        ArgumentNullException.ThrowIfNull(captionLengths);
        using var scope = NewDisposeScope();
        int batch = captionLengths.Length;
        long imageLength = rows * cols;
        var sequenceLengths = captionLengths.Select(c => c + imageLength).ToArray();
        long maxLength = sequenceLengths.Max();

        var row = torch.arange(rows, dtype: ScalarType.Int64).view(rows, 1).expand(rows, cols).reshape(imageLength);
        var col = torch.arange(cols, dtype: ScalarType.Int64).view(1, cols).expand(rows, cols).reshape(imageLength);
        var captionIds = torch.zeros([batch, captionSequenceLength, 3], ScalarType.Int64);
        captionIds[.., .., 0] = torch.arange(captionSequenceLength, dtype: ScalarType.Int64);
        var imageIds = new Tensor[batch];
        var jointIds = new Tensor[batch];
        for (int i = 0; i < batch; i++)
        {
            long c = captionLengths[i];
            imageIds[i] = torch.stack([torch.full(imageLength, c, ScalarType.Int64), row, col], 1);
            jointIds[i] = torch.cat([captionIds[i].narrow(0, 0, c), imageIds[i], torch.zeros([maxLength - sequenceLengths[i], 3], ScalarType.Int64)], 0);
        }
        // diffusers zero-fills the caption table past each sample's kept tokens (cap_freqs_cis): no rotation, no magnitude.
        var keep = (torch.arange(captionSequenceLength).unsqueeze(0) < torch.tensor(captionLengths).unsqueeze(1)).to(ScalarType.Float64).unsqueeze(2).to(device);
        var caption = FreqsCis(captionIds.to(device));
        caption = (caption.Cos * keep, caption.Sin * keep);
        var image = FreqsCis(torch.stack(imageIds, 0).to(device));
        var joint = FreqsCis(torch.stack(jointIds, 0).to(device));
        static (Tensor, Tensor) Keep((Tensor Cos, Tensor Sin) p) => (p.Cos.MoveToOuterDisposeScope(), p.Sin.MoveToOuterDisposeScope());
        return new Lumina2RotaryEmbeddings(Keep(caption), Keep(image), Keep(joint), sequenceLengths);
    }

    /// <summary>(cos, sin) float64 [..., head_dim] of the position ids <paramref name="ids"/> [..., 3] (diffusers' <c>_get_freqs_cis</c>).</summary>
    public (Tensor Cos, Tensor Sin) FreqsCis(Tensor ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        using var scope = NewDisposeScope();
        var positions = ids.to(ScalarType.Float64);
        var cos = new Tensor[3];
        var sin = new Tensor[3];
        for (int axis = 0; axis < 3; axis++)
        {
            int d = _axesDim[axis];
            var exponent = torch.arange(0, d, 2, dtype: ScalarType.Float64, device: ids.device) / d;
            // theta ** exponent as ATen computes a scalar base (see FluxPosEmbed.RotaryCosSin).
            var freqs = 1.0 / torch.full_like(exponent, _theta).pow(exponent);
            // torch.outer(arange (int64), freqs (float64)), gathered at the ids: the same float64 products.
            var angles = positions[TensorIndex.Ellipsis, axis].unsqueeze(-1) * freqs;
            cos[axis] = angles.cos().repeat_interleave(2, dim: -1, output_size: d);
            sin[axis] = angles.sin().repeat_interleave(2, dim: -1, output_size: d);
        }
        return (torch.cat(cos, -1).MoveToOuterDisposeScope(), torch.cat(sin, -1).MoveToOuterDisposeScope());
    }
}
