using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// diffusers' <c>ResnetBlock2D</c> (pre-norm, SiLU, <c>time_embedding_norm="default"</c>, dropout 0):
/// <c>(shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))) + time_emb_proj(silu(temb))[:, :, None, None])))) / output_scale_factor</c>.
/// The time projection exists only with <c>tembChannels</c> (the UNet; the VAE has none); a 1x1 <c>conv_shortcut</c>
/// appears when the channel count changes.
/// </summary>
public sealed class ResnetBlock2D : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are the checkpoint keys
    private readonly GroupNorm norm1;
    private readonly Conv2d conv1;
    private readonly Linear? time_emb_proj;
    private readonly GroupNorm norm2;
    private readonly Conv2d conv2;
    private readonly Conv2d? conv_shortcut;
#pragma warning restore IDE1006
    private readonly double _outputScaleFactor;

    /// <summary>Builds the block.</summary>
    /// <param name="inChannels">Input channels.</param>
    /// <param name="outChannels">Output channels.</param>
    /// <param name="groups">Groups of both GroupNorms.</param>
    /// <param name="eps">GroupNorm epsilon.</param>
    /// <param name="tembChannels">Width of the time embedding, or null for a block without one.</param>
    /// <param name="outputScaleFactor">The sum of shortcut and residual is divided by this.</param>
    /// <param name="device">Device of the parameters.</param>
    /// <param name="dtype">Dtype of the parameters.</param>
    public ResnetBlock2D(long inChannels, long outChannels, long groups, double eps = 1e-6, long? tembChannels = null,
        double outputScaleFactor = 1.0, Device? device = null, ScalarType? dtype = null)
        : base(nameof(ResnetBlock2D))
    {
        _outputScaleFactor = outputScaleFactor;
        norm1 = AffineGroupNorm.Create(groups, inChannels, eps, device, dtype);
        conv1 = nn.Conv2d(inChannels, outChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        if (tembChannels is long temb)
            time_emb_proj = new Linear(temb, outChannels, hasBias: true, device: device, dtype: dtype);
        norm2 = AffineGroupNorm.Create(groups, outChannels, eps, device, dtype);
        conv2 = nn.Conv2d(outChannels, outChannels, 3, stride: 1, padding: 1, device: device, dtype: dtype);
        if (inChannels != outChannels)
            conv_shortcut = nn.Conv2d(inChannels, outChannels, 1, stride: 1, padding: 0L, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Applies the block without a time embedding.</summary>
    public override Tensor forward(Tensor input) => forward(input, null);

    /// <summary>Applies the block; <paramref name="temb"/> [B, temb_channels] is used when the block has a time projection.</summary>
    public Tensor forward(Tensor input, Tensor? temb)
    {
        // Each full-size intermediate is freed once consumed, and the activations and sums run in place on tensors made
        // here (the same kernels, so the same values): peak memory is the input plus two intermediates, as in PyTorch.
        var h = norm1.forward(input).silu_().Consume(conv1.forward);
        if (time_emb_proj is not null && temb is not null)
        {
            using var scope = NewDisposeScope();
            h.add_(time_emb_proj.forward(nn.functional.silu(temb)).unsqueeze(-1).unsqueeze(-1));
        }
        h = h.Consume(norm2.forward).silu_().Consume(conv2.forward);
        if (conv_shortcut is null) h.add_(input);
        else
        {
            using var scope = NewDisposeScope();
            h.add_(conv_shortcut.forward(input.contiguous()));
        }
        // x / 1.0 is exact, but skipping it saves a full-size pass in the common case.
        if (_outputScaleFactor != 1.0) h.div_(_outputScaleFactor);
        return h;
    }
}
