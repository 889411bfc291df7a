using DiffusersSharp.IO;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.ImageEncoders;

/// <summary>
/// diffusers' <c>ReduxImageEncoder</c> (pipelines/flux/modeling_flux.py), FLUX.1-Redux's <c>image_embedder</c>: maps SigLIP
/// image tokens [B, N, redux_dim] to Flux text tokens [B, N, txt_in_features] with
/// <c>redux_down(silu(redux_up(x)))</c>, <c>redux_up</c> a Linear to 3 × txt_in_features. State-dict keys equal diffusers'.
/// </summary>
public sealed class ReduxImageEncoder : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear redux_up;
    private readonly Linear redux_down;
#pragma warning restore IDE1006

    /// <summary>The configuration the model was built from.</summary>
    public ReduxImageEncoderConfig Config { get; }

    /// <summary>Builds the model (random weights; on <c>meta</c> an empty shell to load into).</summary>
    /// <exception cref="ArgumentException">The config has a size that is not positive.</exception>
    public ReduxImageEncoder(ReduxImageEncoderConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(ReduxImageEncoder))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        redux_up = new Linear(config.ReduxDim, 3L * config.TxtInFeatures, hasBias: true, device: device, dtype: dtype);
        redux_down = new Linear(3L * config.TxtInFeatures, config.TxtInFeatures, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>The element type of the weights.</summary>
    public ScalarType Dtype => parameters().First().dtype;

    /// <summary>The device of the weights.</summary>
    public Device Device => parameters().First().device;

    /// <summary>Loads a diffusers <c>image_embedder</c> folder (config.json + diffusion_pytorch_model.safetensors), strictly.</summary>
    /// <exception cref="FileNotFoundException">No config or no weights in <paramref name="folder"/>.</exception>
    /// <exception cref="WeightLoadException">The weights do not fit the config.</exception>
    public static ReduxImageEncoder FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<ReduxImageEncoderConfig, ReduxImageEncoder>(folder, (c, meta) => new ReduxImageEncoder(c, meta, dtype), dtype, device, variant);

    /// <summary>diffusers' <c>forward(x).image_embeds</c>: [..., redux_dim] -> [..., txt_in_features], in the weights' dtype.</summary>
    /// <exception cref="ArgumentException">The last dimension of <paramref name="x"/> is not redux_dim.</exception>
    public override Tensor forward(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (x.dim() < 1 || x.shape[^1] != Config.ReduxDim)
            throw new ArgumentException($"ReduxImageEncoder takes tokens of width redux_dim {Config.ReduxDim}, got [{string.Join(", ", x.shape)}].", nameof(x));
        using var scope = NewDisposeScope();
        return redux_down.forward(nn.functional.silu(redux_up.forward(x))).MoveToOuterDisposeScope();
    }
}
