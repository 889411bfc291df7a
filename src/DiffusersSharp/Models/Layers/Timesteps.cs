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
