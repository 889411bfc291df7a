using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// Two-layer MLP on timestep features (diffusers <c>TimestepEmbedding</c>: linear_1 → SiLU (or the UNet's act_fn) →
/// linear_2, then an optional post activation), with the optional <c>cond_proj</c> of guidance-distilled models
/// (<c>time_cond_proj_dim</c>): a bias-free projection of a condition (the guidance-scale embedding of LCM models, the
/// latent upscaler's noise level and pooled text) added to the features before linear_1.
/// </summary>
public sealed class TimestepEmbedding : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear linear_1;
    private readonly Linear? cond_proj;
    private readonly Linear linear_2;
#pragma warning restore IDE1006
    private readonly string _activation;
    private readonly string? _postActivation;

    /// <summary>Creates <c>Linear(inChannels → timeEmbedDim) → act → Linear(timeEmbedDim → timeEmbedDim) [→ post act]</c>
    /// (<paramref name="activation"/> silu by default; <paramref name="postActivation"/> none by default), and with
    /// <paramref name="condProjDim"/> the <c>cond_proj</c> <c>Linear(condProjDim → inChannels, bias=False)</c>.
    /// <paramref name="sampleProjBias"/> false (diffusers' <c>sample_proj_bias</c>, FLUX.2) builds linear_1 and linear_2
    /// without biases.</summary>
    public TimestepEmbedding(long inChannels, long timeEmbedDim, Device? device = null, ScalarType? dtype = null, long? condProjDim = null,
        string activation = "silu", string? postActivation = null, bool sampleProjBias = true)
        : base(nameof(TimestepEmbedding))
    {
        _activation = activation;
        _postActivation = postActivation;
        linear_1 = new Linear(inChannels, timeEmbedDim, hasBias: sampleProjBias, device: device, dtype: dtype);
        if (condProjDim is { } cond) cond_proj = new Linear(cond, inChannels, hasBias: false, device: device, dtype: dtype);
        linear_2 = new Linear(timeEmbedDim, timeEmbedDim, hasBias: sampleProjBias, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>The width of the condition <c>cond_proj</c> takes, or null without one.</summary>
    public long? CondProjDim => cond_proj?.in_features;

    /// <summary>Applies the MLP.</summary>
    public override Tensor forward(Tensor sample) => forward(sample, null);

    /// <summary>Applies the MLP after adding <c>cond_proj(condition)</c> to <paramref name="sample"/> (diffusers adds
    /// nothing when the condition is null).</summary>
    /// <exception cref="ArgumentException">A condition was given but this embedding has no <c>cond_proj</c>.</exception>
    public Tensor forward(Tensor sample, Tensor? condition)
    {
        if (condition is not null)
        {
            if (cond_proj is null)
                throw new ArgumentException("A timestep condition was given, but this time embedding has no cond_proj (time_cond_proj_dim is not set).", nameof(condition));
            sample = sample + cond_proj.forward(condition);
        }
        var result = linear_2.forward(DiffusersActivations.Apply(_activation, linear_1.forward(sample)));
        return _postActivation is null ? result : DiffusersActivations.Apply(_postActivation, result);
    }
}
