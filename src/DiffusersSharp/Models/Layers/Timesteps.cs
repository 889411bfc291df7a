using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// Sinusoidal timestep features (diffusers <c>Timesteps</c> / <c>get_timestep_embedding</c>), always computed in float32:
/// <c>freq_k = exp(-ln(maxPeriod)·k / (half - downscaleFreqShift))</c>, <c>arg = t·freq</c>, output <c>[sin, cos]</c>,
/// or <c>[cos, sin]</c> with <c>flipSinToCos</c> (SD3). No parameters.
/// </summary>
public sealed class Timesteps : nn.Module<Tensor, Tensor>
{
    private readonly int _numChannels;
    private readonly bool _flipSinToCos;
    private readonly double _downscaleFreqShift;
    private readonly double _scale;
    private readonly double _maxPeriod;

    /// <summary>Creates the embedding with <paramref name="numChannels"/> features.</summary>
    public Timesteps(int numChannels, bool flipSinToCos, double downscaleFreqShift, double scale = 1, double maxPeriod = 10000)
        : base(nameof(Timesteps))
    {
        if (numChannels % 2 != 0) throw new ArgumentException($"Timesteps needs an even channel count, got {numChannels}.", nameof(numChannels));
        _numChannels = numChannels;
        _flipSinToCos = flipSinToCos;
        _downscaleFreqShift = downscaleFreqShift;
        _scale = scale;
        _maxPeriod = maxPeriod;
        RegisterComponents();
    }

    /// <summary>Embeds the 1-D <paramref name="timesteps"/> [B] as float32 [B, numChannels].</summary>
    public override Tensor forward(Tensor timesteps)
    {
        if (timesteps.dim() != 1) throw new ArgumentException($"timesteps must be 1-D [B], got [{string.Join(", ", timesteps.shape)}].", nameof(timesteps));
        int half = _numChannels / 2;
        var exponent = torch.arange(0, half, dtype: ScalarType.Float32, device: timesteps.device) * (-Math.Log(_maxPeriod));
        exponent = exponent / (half - _downscaleFreqShift);
        var args = timesteps.unsqueeze(1).to(ScalarType.Float32) * exponent.exp().unsqueeze(0);
        if (_scale != 1) args = args * _scale;
        return _flipSinToCos ? torch.cat([args.cos(), args.sin()], 1) : torch.cat([args.sin(), args.cos()], 1);
    }
}

/// <summary>Two-layer MLP on timestep features (diffusers <c>TimestepEmbedding</c>: linear_1 → SiLU → linear_2).</summary>
public sealed class TimestepEmbedding : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly TorchSharp.Modules.Linear linear_1;
    private readonly TorchSharp.Modules.Linear linear_2;
#pragma warning restore IDE1006

    /// <summary>Creates <c>Linear(inChannels → timeEmbedDim) → SiLU → Linear(timeEmbedDim → timeEmbedDim)</c>.</summary>
    public TimestepEmbedding(long inChannels, long timeEmbedDim, Device? device = null, ScalarType? dtype = null) : base(nameof(TimestepEmbedding))
    {
        linear_1 = nn.Linear(inChannels, timeEmbedDim, hasBias: true, device: device, dtype: dtype);
        linear_2 = nn.Linear(timeEmbedDim, timeEmbedDim, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Applies the MLP.</summary>
    public override Tensor forward(Tensor sample) => linear_2.forward(nn.functional.silu(linear_1.forward(sample)));
}

/// <summary>Projection of pooled text embeddings (diffusers <c>PixArtAlphaTextProjection</c>, act "silu").</summary>
public sealed class PixArtAlphaTextProjection : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly TorchSharp.Modules.Linear linear_1;
    private readonly TorchSharp.Modules.Linear linear_2;
#pragma warning restore IDE1006

    /// <summary>Creates <c>Linear(inFeatures → hiddenSize) → SiLU → Linear(hiddenSize → outFeatures ?? hiddenSize)</c>.</summary>
    public PixArtAlphaTextProjection(long inFeatures, long hiddenSize, long? outFeatures = null, Device? device = null, ScalarType? dtype = null)
        : base(nameof(PixArtAlphaTextProjection))
    {
        linear_1 = nn.Linear(inFeatures, hiddenSize, hasBias: true, device: device, dtype: dtype);
        linear_2 = nn.Linear(hiddenSize, outFeatures ?? hiddenSize, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Applies the projection.</summary>
    public override Tensor forward(Tensor caption) => linear_2.forward(nn.functional.silu(linear_1.forward(caption)));
}

/// <summary>
/// SD3's conditioning vector (diffusers <c>CombinedTimestepTextProjEmbeddings</c>):
/// <c>timestep_embedder(Timesteps(256, [cos, sin])(t).to(pooled.dtype)) + text_embedder(pooled)</c>.
/// </summary>
public sealed class CombinedTimestepTextProjEmbeddings : nn.Module<Tensor, Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Timesteps time_proj;
    private readonly TimestepEmbedding timestep_embedder;
    private readonly PixArtAlphaTextProjection text_embedder;
#pragma warning restore IDE1006

    /// <summary>Creates the embedding of width <paramref name="embeddingDim"/> from pooled text of width <paramref name="pooledProjectionDim"/>.</summary>
    public CombinedTimestepTextProjEmbeddings(long embeddingDim, long pooledProjectionDim, Device? device = null, ScalarType? dtype = null)
        : base(nameof(CombinedTimestepTextProjEmbeddings))
    {
        time_proj = new Timesteps(256, flipSinToCos: true, downscaleFreqShift: 0);
        timestep_embedder = new TimestepEmbedding(256, embeddingDim, device, dtype);
        text_embedder = new PixArtAlphaTextProjection(pooledProjectionDim, embeddingDim, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Returns the conditioning [B, D] for <paramref name="timestep"/> [B] and <paramref name="pooledProjection"/> [B, P].</summary>
    public override Tensor forward(Tensor timestep, Tensor pooledProjection)
    {
        var t = timestep_embedder.forward(time_proj.forward(timestep).to(pooledProjection.dtype));
        return t + text_embedder.forward(pooledProjection);
    }
}
