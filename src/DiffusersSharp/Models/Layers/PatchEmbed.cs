using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// 2-D image to patch tokens with a sin-cos position embedding (diffusers <c>PatchEmbed</c> as SD3 configures it:
/// no LayerNorm, flattened, bias, interpolation scale 1). With <c>posEmbedMaxSize</c> the [1, P·P, D] table is a
/// persistent buffer (<c>pos_embed</c>, loaded from the checkpoint) and the centre gh×gw window is cropped for each latent;
/// without it the table is computed for the latent's grid on each call. Without positions (diffusers'
/// <c>pos_embed_type=None</c>, e.g. the SD3 ControlNet's <c>pos_embed_input</c>) it is the patchifying conv alone.
/// </summary>
public sealed class PatchEmbed : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Conv2d proj;
    private Tensor? pos_embed;
#pragma warning restore IDE1006
    private readonly int _patchSize;
    private readonly int _inChannels;
    private readonly long _embedDim;
    private readonly int? _posEmbedMaxSize;
    private readonly double _baseSize;
    private readonly double _interpolationScale;
    private readonly bool _positions;

    /// <summary>
    /// Creates the embedding. <paramref name="height"/>/<paramref name="width"/> are the configured sample size (latent
    /// pixels), which set the position scale (<c>base_size = height / patchSize</c>). <paramref name="positions"/> false
    /// adds no position embedding (diffusers' <c>pos_embed_type=None</c>; <paramref name="posEmbedMaxSize"/> is then ignored).
    /// <paramref name="interpolationScale"/> divides the positions (diffusers' <c>interpolation_scale</c>; PixArt uses
    /// <c>sample_size / 64</c>, at least 1).
    /// </summary>
    public PatchEmbed(int height, int width, int patchSize, int inChannels, long embedDim, int? posEmbedMaxSize,
        Device? device = null, ScalarType? dtype = null, bool positions = true, double interpolationScale = 1) : base(nameof(PatchEmbed))
    {
        if (!(interpolationScale > 0)) throw new ArgumentOutOfRangeException(nameof(interpolationScale), interpolationScale, "interpolation_scale must be positive.");
        _interpolationScale = interpolationScale;
        if (patchSize < 1) throw new ArgumentOutOfRangeException(nameof(patchSize), patchSize, "patch size must be positive.");
        _positions = positions;
        if (!positions) posEmbedMaxSize = null;
        if (positions && embedDim % 4 != 0) throw new ArgumentException($"the sin-cos position embedding needs a width divisible by 4, got {embedDim}.", nameof(embedDim));
        _patchSize = patchSize;
        _inChannels = inChannels;
        _embedDim = embedDim;
        _posEmbedMaxSize = posEmbedMaxSize;
        _baseSize = height / patchSize;
        proj = nn.Conv2d(inChannels, embedDim, kernel_size: (patchSize, patchSize), stride: (patchSize, patchSize), bias: true, device: device, dtype: dtype);
        if (posEmbedMaxSize is int p)
        {
            if (p < 1) throw new ArgumentOutOfRangeException(nameof(posEmbedMaxSize), p, "pos_embed_max_size must be positive.");
            // On the meta device the table is only a shape (filled by loading); elsewhere it is computed as diffusers does.
            pos_embed = device is { type: DeviceType.META }
                ? torch.empty([1, (long)p * p, embedDim], dtype: ScalarType.Float32, device: device)
                : SinCos2D(embedDim, p, p, _baseSize, interpolationScale).unsqueeze(0).to(ScalarType.Float32, device ?? CPU);
            if (dtype is { } d && pos_embed.dtype != d) pos_embed = pos_embed.to(d);
        }
        RegisterComponents();
    }

    /// <summary>The largest token grid side the stored table covers (null when the table is computed per call).</summary>
    public int? PosEmbedMaxSize => _posEmbedMaxSize;

    /// <summary>Checks that a latent [B, C, h, w] fits: channels, divisibility by the patch size, the position table.</summary>
    /// <exception cref="ArgumentException">The latent does not fit, with the reason.</exception>
    public void Validate(long[] shape, string paramName)
    {
        if (shape.Length != 4)
            throw new ArgumentException($"the latent must be 4-D [B, {_inChannels}, h, w], got [{string.Join(", ", shape)}].", paramName);
        if (shape[1] != _inChannels)
            throw new ArgumentException($"the latent has {shape[1]} channels; the model takes {_inChannels} (in_channels).", paramName);
        long h = shape[2], w = shape[3];
        if (h % _patchSize != 0 || w % _patchSize != 0)
            throw new ArgumentException($"the latent size {h}x{w} must be divisible by the patch size {_patchSize}.", paramName);
        if (_posEmbedMaxSize is int p && (h / _patchSize > p || w / _patchSize > p))
            throw new ArgumentException(
                $"the latent {h}x{w} gives a {h / _patchSize}x{w / _patchSize} token grid, larger than the position table " +
                $"({p}x{p}, pos_embed_max_size); the largest latent this model takes is {p * _patchSize}x{p * _patchSize}.", paramName);
    }

    /// <summary>Patchifies <paramref name="latent"/> [B, C, h, w] into [B, (h/p)·(w/p), D] (row-major) plus positions.</summary>
    public override Tensor forward(Tensor latent)
    {
        Validate(latent.shape, nameof(latent));
        long gh = latent.shape[2] / _patchSize, gw = latent.shape[3] / _patchSize;
        var x = proj.forward(latent).flatten(2).transpose(1, 2);
        if (!_positions) return x;
        Tensor pe;
        if (pos_embed is not null)
        {
            long p = _posEmbedMaxSize!.Value;
            long top = (p - gh) / 2, left = (p - gw) / 2;
            pe = pos_embed.view(1, p, p, _embedDim).narrow(1, top, gh).narrow(2, left, gw).reshape(1, gh * gw, _embedDim);
        }
        else
        {
            pe = SinCos2D(_embedDim, gh, gw, _baseSize, _interpolationScale).unsqueeze(0).to(ScalarType.Float32, latent.device);
        }
        // pe + x, not diffusers' x + pe (the same values: addition commutes): an elementwise result takes the layout of
        // its first full-size operand, so this sum is token-major, where x + pe would keep the conv's channels-first
        // memory seen through the transpose, and every residual sum and LayerNorm of the stream downstream would read
        // mismatched layouts or copy.
        return (pe + x).to(x.dtype);
    }

    /// <summary>
    /// diffusers' <c>get_2d_sincos_pos_embed</c> for a gh×gw grid, as [gh·gw, D] float64: positions are
    /// <c>arange(n) / (n / baseSize) / interpolationScale</c> in float32; channels [0, D/2) encode the column, [D/2, D) the row, each half
    /// <c>[sin(pos·ω), cos(pos·ω)]</c> with <c>ω_k = 10000^(-k / (D/4))</c>.
    /// </summary>
    public static Tensor SinCos2D(long embedDim, long gridH, long gridW, double baseSize, double interpolationScale = 1)
    {
        using var scope = torch.NewDisposeScope();
        var posH = torch.arange(gridH, dtype: ScalarType.Float32) / (gridH / baseSize);
        var posW = torch.arange(gridW, dtype: ScalarType.Float32) / (gridW / baseSize);
        if (interpolationScale != 1)
        {
            posH = posH / interpolationScale;
            posW = posW / interpolationScale;
        }
        posH = posH.to(ScalarType.Float64);
        posW = posW.to(ScalarType.Float64);
        var rows = posH.unsqueeze(1).expand(gridH, gridW).reshape(-1);
        var cols = posW.unsqueeze(0).expand(gridH, gridW).reshape(-1);
        long quarter = embedDim / 4;
        var omega = 1.0 / torch.tensor(10000.0, dtype: ScalarType.Float64).pow(torch.arange(quarter, dtype: ScalarType.Float64) / (embedDim / 4.0));
        Tensor OneD(Tensor pos)
        {
            var a = pos.unsqueeze(1) * omega.unsqueeze(0);
            return torch.cat([a.sin(), a.cos()], 1);
        }
        return torch.cat([OneD(cols), OneD(rows)], 1).MoveToOuterDisposeScope();
    }
}
