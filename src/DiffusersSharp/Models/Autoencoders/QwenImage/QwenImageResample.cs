using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// diffusers' <c>QwenImageResample</c>: per frame, a 2× nearest upsampling and a 3×3 Conv2d to half the channels
/// (<c>upsample2d</c> / <c>upsample3d</c>), or a right / bottom zero pad and a stride-2 3×3 Conv2d (<c>downsample2d</c> /
/// <c>downsample3d</c>). The 3-D modes also double (upsampling: a causal time convolution to twice the channels, split
/// into two frames) or halve (downsampling: a stride-2 time convolution over the previous chunk's last frame and this
/// one's) the frame count, through the frame cache; a first chunk passes through in time as diffusers runs it.
/// </summary>
public sealed class QwenImageResample : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly ModuleList<nn.Module<Tensor, Tensor>> resample;
    private readonly QwenImageCausalConv3d? time_conv;
#pragma warning restore IDE1006
    private readonly string _mode;

    /// <summary>Creates the resampler for <paramref name="dim"/> channels in <paramref name="mode"/>.</summary>
    /// <exception cref="ArgumentException">An unknown mode.</exception>
    public QwenImageResample(long dim, string mode, Device? device = null, ScalarType? dtype = null) : base(nameof(QwenImageResample))
    {
        _mode = mode;
        // nn.Sequential in diffusers: the parameter-free first entry (Upsample / ZeroPad2d) at 0, the Conv2d at 1.
        switch (mode)
        {
            case "upsample2d" or "upsample3d":
                resample = new ModuleList<nn.Module<Tensor, Tensor>>(nn.Identity(), nn.Conv2d(dim, dim / 2, 3, padding: 1, device: device, dtype: dtype));
                if (mode == "upsample3d") time_conv = new QwenImageCausalConv3d(dim, dim * 2, (3, 1, 1), null, (1, 0, 0), device, dtype);
                break;
            case "downsample2d" or "downsample3d":
                resample = new ModuleList<nn.Module<Tensor, Tensor>>(nn.Identity(), nn.Conv2d(dim, dim, 3, stride: 2, device: device, dtype: dtype));
                if (mode == "downsample3d") time_conv = new QwenImageCausalConv3d(dim, dim, (3, 1, 1), (2, 1, 1), null, device, dtype);
                break;
            default:
                throw new ArgumentException($"Unknown Qwen-Image VAE resample mode '{mode}'.", nameof(mode));
        }
        RegisterComponents();
    }

    /// <summary>Resamples <paramref name="x"/> [B, C, T, H, W] with the frame cache.</summary>
    internal Tensor forward(Tensor x, QwenImageFeatureCache cache)
    {
        using var scope = NewDisposeScope();
        long b = x.shape[0], c = x.shape[1], t = x.shape[2], h = x.shape[3], w = x.shape[4];
        if (_mode == "upsample3d")
        {
            int slot = cache.Next();
            if (cache.IsEmpty(slot)) cache.MarkRepeat(slot);
            else
            {
                long keep = Math.Min(2, t);
                var cacheX = x.narrow(2, t - keep, keep).clone();
                bool repeat = cache.IsRepeat(slot);
                var past = cache.Frames(slot);
                if (cacheX.shape[2] < 2 && !repeat) cacheX = cat([past!.narrow(2, past.shape[2] - 1, 1).to(cacheX.device), cacheX], 2);
                if (cacheX.shape[2] < 2 && repeat) cacheX = cat([zeros_like(cacheX), cacheX], 2);
                x = repeat ? time_conv!.forward(x) : time_conv!.forward(x, past);
                cache.Store(slot, cacheX);
                // [B, 2·C, T] -> two frames per frame: channels (2, C), interleaved in time.
                x = x.reshape(b, 2, c, t, h, w);
                x = stack([x.select(1, 0), x.select(1, 1)], 3).reshape(b, c, t * 2, h, w);
            }
        }
        t = x.shape[2];
        var frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w);
        frames = _mode.StartsWith("upsample", StringComparison.Ordinal)
            ? nn.functional.interpolate(frames.to(ScalarType.Float32), scale_factor: [2.0, 2.0], mode: InterpolationMode.NearestExact).to(frames.dtype)
            : nn.functional.pad(frames, [0, 1, 0, 1]);
        frames = resample[1].forward(frames);
        x = frames.view(b, t, frames.shape[1], frames.shape[2], frames.shape[3]).permute(0, 2, 1, 3, 4);
        if (_mode == "downsample3d")
        {
            int slot = cache.Next();
            if (cache.IsEmpty(slot)) cache.Store(slot, x.clone());
            else
            {
                var cacheX = x.narrow(2, x.shape[2] - 1, 1).clone();
                var past = cache.Frames(slot)!;
                x = time_conv!.forward(cat([past.narrow(2, past.shape[2] - 1, 1), x], 2));
                cache.Store(slot, cacheX);
            }
        }
        return x.MoveToOuterDisposeScope();
    }
}
