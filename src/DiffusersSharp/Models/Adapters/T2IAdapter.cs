using DiffusersSharp.IO;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Adapters;

/// <summary>
/// diffusers' <c>T2IAdapter</c> (models/adapter.py): a small ResNet-like encoder of a condition image (sketch, depth,
/// pose, canny...) whose feature maps the UNet adds inside its down blocks (<c>down_intrablock_additional_residuals</c>
/// of <see cref="Unets.UNet2DConditionModel.forward"/>). The image is pixel-unshuffled by <c>downscale_factor</c>, then
/// each block (optionally average-pooled by 2) gives one feature map. Three architectures, as the config's
/// <c>adapter_type</c> says: <c>full_adapter</c> (SD 1.x / 2.x: one map per UNet down block, halving from 1/8),
/// <c>full_adapter_xl</c> (SDXL: four maps at 1/16 and 1/32) and <c>light_adapter</c>. State-dict keys equal diffusers'
/// (<c>adapter.conv_in</c>, <c>adapter.body.0.resnets.0.block1</c>...).
/// </summary>
public sealed class T2IAdapter : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly nn.Module<Tensor, Tensor[]> adapter;
#pragma warning restore IDE1006

    /// <summary>The configuration the model was built from.</summary>
    public T2IAdapterConfig Config { get; }

    /// <summary>The element type of the weights.</summary>
    public ScalarType Dtype => parameters().First().dtype;

    /// <summary>The device of the weights.</summary>
    public Device Device => parameters().First().device;

    /// <summary>The input's pixel-unshuffle factor (diffusers' <c>downscale_factor</c>): image sides must be multiples of it.</summary>
    public int DownscaleFactor => Config.DownscaleFactor;

    /// <summary>How much smaller than the image the last feature map is (diffusers' <c>total_downscale_factor</c>).</summary>
    public int TotalDownscaleFactor => Config.AdapterType switch
    {
        "full_adapter" => Config.DownscaleFactor << (Config.Channels.Length - 1),
        "full_adapter_xl" => Config.DownscaleFactor * 2,
        _ => Config.DownscaleFactor << Config.Channels.Length,
    };

    /// <summary>Builds the model; on the <c>meta</c> device it holds shapes only.</summary>
    /// <exception cref="NotSupportedException">An adapter_type diffusers does not have.</exception>
    /// <exception cref="ArgumentException">The config is inconsistent.</exception>
    public T2IAdapter(T2IAdapterConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(T2IAdapter))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        adapter = config.AdapterType switch
        {
            "full_adapter" => new FullAdapter(config, device, dtype),
            "full_adapter_xl" => new FullAdapterXL(config, device, dtype),
            _ => new LightAdapter(config, device, dtype),
        };
        RegisterComponents();
    }

    /// <summary>
    /// Loads a diffusers T2I-Adapter folder (config.json + diffusion_pytorch_model(.fp16).safetensors, e.g.
    /// TencentARC/t2iadapter_canny_sd15v2 or TencentARC/t2i-adapter-canny-sdxl-1.0), strictly.
    /// <paramref name="dtype"/> converts floating weights (null keeps the stored type).
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="WeightLoadException">The weights do not match the config.</exception>
    /// <exception cref="NotSupportedException">An adapter_type diffusers does not have.</exception>
    public static T2IAdapter FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<T2IAdapterConfig, T2IAdapter>(folder, (c, meta) => new T2IAdapter(c, meta, dtype), dtype, device, variant);

    /// <summary>
    /// The feature maps of <paramref name="x"/> [B, in_channels, H, W] (H and W multiples of downscale_factor; values as
    /// the pipelines prepare them, [0, 1]), in the weights' dtype; shapes as <see cref="FeatureShapes"/> says.
    /// </summary>
    /// <exception cref="ArgumentException">The input has the wrong rank, channels or a side that is not a multiple of downscale_factor.</exception>
    public Tensor[] forward(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        if (x.dim() != 4 || x.shape[1] != Config.InChannels || !x.is_floating_point() || x.numel() == 0)
            throw new ArgumentException($"The adapter input must be a floating [B, {Config.InChannels}, H, W] tensor (in_channels = {Config.InChannels}), got [{string.Join(", ", x.shape)}] {x.dtype}.", nameof(x));
        if (x.shape[2] % DownscaleFactor != 0 || x.shape[3] % DownscaleFactor != 0)
            throw new ArgumentException($"The adapter input's height and width must be multiples of its downscale_factor {DownscaleFactor}, got {x.shape[2]}x{x.shape[3]}.", nameof(x));
        using var scope = NewDisposeScope();
        var features = adapter.forward(x.to(Dtype));
        foreach (var f in features) f.MoveToOuterDisposeScope();
        return features;
    }

    /// <summary>
    /// The shapes <see cref="forward"/> gives for a [<paramref name="batch"/>, in_channels, <paramref name="height"/>,
    /// <paramref name="width"/>] input, computed without running it: after the unshuffle to H / f, each block that
    /// downsamples takes ceil(side / 2) (average pooling with ceil_mode).
    /// </summary>
    public IReadOnlyList<long[]> FeatureShapes(long batch, long height, long width)
    {
        long h = height / DownscaleFactor, w = width / DownscaleFactor;
        var channels = Config.Channels;
        var shapes = new List<long[]>();
        void Add(long c, bool down)
        {
            if (down) (h, w) = ((h + 1) / 2, (w + 1) / 2);
            shapes.Add([batch, c, h, w]);
        }
        switch (Config.AdapterType)
        {
            case "full_adapter":
                for (int i = 0; i < channels.Length; i++) Add(channels[i], i > 0);
                break;
            case "full_adapter_xl":
                for (int i = 0; i < channels.Length; i++) Add(channels[i], i == 2);
                break;
            default:
                for (int i = 0; i < channels.Length; i++) Add(channels[i], i > 0);
                Add(channels[^1], true);
                break;
        }
        return shapes;
    }
}

/// <summary>diffusers' <c>FullAdapter</c>: pixel unshuffle, conv_in, then <see cref="AdapterBlock"/>s, the first at the
/// unshuffled size and each next one pooled by 2; every block's output is a feature map.</summary>
public sealed class FullAdapter : nn.Module<Tensor, Tensor[]>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly PixelUnshuffle unshuffle;
    private readonly Conv2d conv_in;
    private readonly ModuleList<AdapterBlock> body;
#pragma warning restore IDE1006

    /// <summary>Builds the adapter body from a validated config.</summary>
    public FullAdapter(T2IAdapterConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(FullAdapter))
    {
        var channels = config.Channels;
        int f = config.DownscaleFactor;
        unshuffle = nn.PixelUnshuffle(f);
        conv_in = nn.Conv2d(config.InChannels * f * f, channels[0], 3, padding: 1, device: device, dtype: dtype);
        body = new ModuleList<AdapterBlock>(new AdapterBlock(channels[0], channels[0], config.NumResBlocks, false, device, dtype));
        for (int i = 1; i < channels.Length; i++)
            body.Add(new AdapterBlock(channels[i - 1], channels[i], config.NumResBlocks, true, device, dtype));
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor[] forward(Tensor x)
    {
        var h = conv_in.forward(unshuffle.forward(x));
        var features = new Tensor[body.Count];
        for (int i = 0; i < body.Count; i++) h = features[i] = body[i].forward(h);
        return features;
    }
}

/// <summary>diffusers' <c>FullAdapterXL</c>: as <see cref="FullAdapter"/>, but only the third block pools (SDXL's UNet
/// downsamples twice: its feature maps are [c0, c1] at 1/16 and [c2, c3] at 1/32 of the image).</summary>
public sealed class FullAdapterXL : nn.Module<Tensor, Tensor[]>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly PixelUnshuffle unshuffle;
    private readonly Conv2d conv_in;
    private readonly ModuleList<AdapterBlock> body;
#pragma warning restore IDE1006

    /// <summary>Builds the adapter body from a validated config.</summary>
    public FullAdapterXL(T2IAdapterConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(FullAdapterXL))
    {
        var channels = config.Channels;
        int f = config.DownscaleFactor;
        unshuffle = nn.PixelUnshuffle(f);
        conv_in = nn.Conv2d(config.InChannels * f * f, channels[0], 3, padding: 1, device: device, dtype: dtype);
        body = new ModuleList<AdapterBlock>();
        for (int i = 0; i < channels.Length; i++)
            body.Add(i switch
            {
                1 => new AdapterBlock(channels[0], channels[1], config.NumResBlocks, false, device, dtype),
                2 => new AdapterBlock(channels[1], channels[2], config.NumResBlocks, true, device, dtype),
                _ => new AdapterBlock(channels[i], channels[i], config.NumResBlocks, false, device, dtype),
            });
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor[] forward(Tensor x)
    {
        var h = conv_in.forward(unshuffle.forward(x));
        var features = new Tensor[body.Count];
        for (int i = 0; i < body.Count; i++) h = features[i] = body[i].forward(h);
        return features;
    }
}

/// <summary>diffusers' <c>AdapterBlock</c>: optional 2x2 average pooling (ceil_mode), a 1x1 <c>in_conv</c> when the
/// channels change, then <see cref="AdapterResnetBlock"/>s.</summary>
public sealed class AdapterBlock : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Conv2d? in_conv;
    private readonly ModuleList<AdapterResnetBlock> resnets;
#pragma warning restore IDE1006
    private readonly bool _down;

    /// <summary>Builds the block.</summary>
    public AdapterBlock(long inChannels, long outChannels, int numResBlocks, bool down, Device? device = null, ScalarType? dtype = null)
        : base(nameof(AdapterBlock))
    {
        _down = down;
        if (inChannels != outChannels) in_conv = nn.Conv2d(inChannels, outChannels, 1, device: device, dtype: dtype);
        resnets = new ModuleList<AdapterResnetBlock>();
        for (int i = 0; i < numResBlocks; i++) resnets.Add(new AdapterResnetBlock(outChannels, device, dtype));
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        if (_down) x = AvgPoolDown(x);
        if (in_conv is not null) x = in_conv.forward(x);
        foreach (var resnet in resnets) x = resnet.forward(x);
        return x;
    }

    /// <summary><c>nn.AvgPool2d(kernel_size=2, stride=2, ceil_mode=True)</c>: odd sides keep their last row / column.</summary>
    internal static Tensor AvgPoolDown(Tensor x) => nn.functional.avg_pool2d(x, [2, 2], [2, 2], ceil_mode: true);
}

/// <summary>diffusers' <c>AdapterResnetBlock</c>: <c>x + block2(relu(block1(x)))</c>, block1 a 3x3 conv, block2 a 1x1 conv.</summary>
public sealed class AdapterResnetBlock : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Conv2d block1;
    private readonly Conv2d block2;
#pragma warning restore IDE1006

    /// <summary>Builds the block.</summary>
    public AdapterResnetBlock(long channels, Device? device = null, ScalarType? dtype = null) : base(nameof(AdapterResnetBlock))
    {
        block1 = nn.Conv2d(channels, channels, 3, padding: 1, device: device, dtype: dtype);
        block2 = nn.Conv2d(channels, channels, 1, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x) => block2.forward(nn.functional.relu(block1.forward(x))) + x;
}

/// <summary>diffusers' <c>LightAdapter</c>: pixel unshuffle, then <see cref="LightAdapterBlock"/>s (no conv_in): the
/// first at the unshuffled size, one per further channels entry pooled by 2, and a last one pooled again at the last
/// width; every block's output is a feature map (channels.Length + 1 of them).</summary>
public sealed class LightAdapter : nn.Module<Tensor, Tensor[]>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly PixelUnshuffle unshuffle;
    private readonly ModuleList<LightAdapterBlock> body;
#pragma warning restore IDE1006

    /// <summary>Builds the adapter body from a validated config.</summary>
    public LightAdapter(T2IAdapterConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(LightAdapter))
    {
        var channels = config.Channels;
        int f = config.DownscaleFactor;
        unshuffle = nn.PixelUnshuffle(f);
        body = new ModuleList<LightAdapterBlock>(new LightAdapterBlock(config.InChannels * f * f, channels[0], config.NumResBlocks, false, device, dtype));
        for (int i = 0; i < channels.Length - 1; i++)
            body.Add(new LightAdapterBlock(channels[i], channels[i + 1], config.NumResBlocks, true, device, dtype));
        body.Add(new LightAdapterBlock(channels[^1], channels[^1], config.NumResBlocks, true, device, dtype));
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor[] forward(Tensor x)
    {
        var h = unshuffle.forward(x);
        var features = new Tensor[body.Count];
        for (int i = 0; i < body.Count; i++) h = features[i] = body[i].forward(h);
        return features;
    }
}

/// <summary>diffusers' <c>LightAdapterBlock</c>: optional 2x2 average pooling (ceil_mode), a 1x1 <c>in_conv</c> to a
/// quarter of the output channels, <see cref="LightAdapterResnetBlock"/>s there, a 1x1 <c>out_conv</c>.</summary>
public sealed class LightAdapterBlock : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Conv2d in_conv;
    private readonly ModuleList<LightAdapterResnetBlock> resnets;
    private readonly Conv2d out_conv;
#pragma warning restore IDE1006
    private readonly bool _down;

    /// <summary>Builds the block.</summary>
    public LightAdapterBlock(long inChannels, long outChannels, int numResBlocks, bool down, Device? device = null, ScalarType? dtype = null)
        : base(nameof(LightAdapterBlock))
    {
        _down = down;
        long mid = outChannels / 4;
        in_conv = nn.Conv2d(inChannels, mid, 1, device: device, dtype: dtype);
        resnets = new ModuleList<LightAdapterResnetBlock>();
        for (int i = 0; i < numResBlocks; i++) resnets.Add(new LightAdapterResnetBlock(mid, device, dtype));
        out_conv = nn.Conv2d(mid, outChannels, 1, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        if (_down) x = AdapterBlock.AvgPoolDown(x);
        x = in_conv.forward(x);
        foreach (var resnet in resnets) x = resnet.forward(x);
        return out_conv.forward(x);
    }
}

/// <summary>diffusers' <c>LightAdapterResnetBlock</c>: <c>x + block2(relu(block1(x)))</c> with two 3x3 convs.</summary>
public sealed class LightAdapterResnetBlock : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Conv2d block1;
    private readonly Conv2d block2;
#pragma warning restore IDE1006

    /// <summary>Builds the block.</summary>
    public LightAdapterResnetBlock(long channels, Device? device = null, ScalarType? dtype = null) : base(nameof(LightAdapterResnetBlock))
    {
        block1 = nn.Conv2d(channels, channels, 3, padding: 1, device: device, dtype: dtype);
        block2 = nn.Conv2d(channels, channels, 3, padding: 1, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x) => block2.forward(nn.functional.relu(block1.forward(x))) + x;
}
