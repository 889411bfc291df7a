using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// The approximator's input (diffusers <c>ChromaCombinedTimestepTextProjEmbeddings</c>, no parameters): for each of the
/// <c>out_dim</c> modulation indices, the timestep's sinusoidal features (num_channels wide), those of a zero guidance
/// (Chroma keeps FLUX's guidance input at 0) and those of the index × 1000 (<c>mod_proj</c>, 2 × num_channels wide; all
/// flip_sin_to_cos, shift 0). diffusers computes <c>mod_proj</c> once as a float32 CPU buffer (non-persistent: no
/// checkpoint key); here it is computed the same way at each call and moved to the timestep's device.
/// </summary>
public sealed class ChromaCombinedTimestepTextProjEmbeddings : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names as diffusers' modules
    private readonly Timesteps time_proj;
    private readonly Timesteps guidance_proj;
#pragma warning restore IDE1006
    private readonly Timesteps _modProj;
    private readonly int _outDim;

    /// <summary>Creates the embedding of <paramref name="numChannels"/> features per input for <paramref name="outDim"/> indices.</summary>
    public ChromaCombinedTimestepTextProjEmbeddings(int numChannels, int outDim) : base(nameof(ChromaCombinedTimestepTextProjEmbeddings))
    {
        time_proj = new Timesteps(numChannels, flipSinToCos: true, downscaleFreqShift: 0);
        guidance_proj = new Timesteps(numChannels, flipSinToCos: true, downscaleFreqShift: 0);
        _modProj = new Timesteps(2 * numChannels, flipSinToCos: true, downscaleFreqShift: 0);
        _outDim = outDim;
        RegisterComponents();
    }

    /// <summary>
    /// The input vectors [B, out_dim, 4 × num_channels] in <paramref name="timestep"/>'s dtype for <paramref name="timestep"/>
    /// [B] (already × 1000, in the model's dtype, as diffusers passes it).
    /// </summary>
    public override Tensor forward(Tensor timestep)
    {
        using var scope = torch.NewDisposeScope();
        var dtype = timestep.dtype;
        long batch = timestep.shape[0];
        var timesteps = time_proj.forward(timestep).to(dtype);
        var guidance = guidance_proj.forward(zeros(batch, dtype: ScalarType.Int64, device: timestep.device)).to(dtype);
        // mod_proj: get_timestep_embedding(arange(out_dim) * 1000, 2 * num_channels) on the CPU in float32, as diffusers' buffer.
        var modProj = _modProj.forward(arange(_outDim, dtype: ScalarType.Int64) * 1000).to(dtype, timestep.device);
        var timestepGuidance = cat([timesteps, guidance], 1).unsqueeze(1).expand(batch, _outDim, -1);
        return cat([timestepGuidance, modProj.unsqueeze(0).expand(batch, -1, -1)], -1).MoveToOuterDisposeScope();
    }
}
