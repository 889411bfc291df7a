using DiffusersSharp.IO;
using DiffusersSharp.Models.Layers;
using DiffusersSharp.Models.Unets;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.ControlNets;

/// <summary>
/// diffusers' <c>ControlNetConditioningEmbedding</c>: the small conv encoder that brings a control image to latent size
/// (conv_in, pairs of 3x3 convs of which the second has stride 2, conv_out to block_out_channels[0]; SiLU between).
/// </summary>
public sealed class ControlNetConditioningEmbedding : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Conv2d conv_in;
    private readonly ModuleList<Conv2d> blocks;
    private readonly Conv2d conv_out;
#pragma warning restore IDE1006

    /// <summary>Builds the encoder.</summary>
    public ControlNetConditioningEmbedding(long embeddingChannels, long conditioningChannels, int[] blockOutChannels, Device? device = null, ScalarType? dtype = null)
        : base(nameof(ControlNetConditioningEmbedding))
    {
        conv_in = nn.Conv2d(conditioningChannels, blockOutChannels[0], 3, padding: 1, device: device, dtype: dtype);
        blocks = new ModuleList<Conv2d>();
        for (int i = 0; i < blockOutChannels.Length - 1; i++)
        {
            blocks.Add(nn.Conv2d(blockOutChannels[i], blockOutChannels[i], 3, padding: 1, device: device, dtype: dtype));
            blocks.Add(nn.Conv2d(blockOutChannels[i], blockOutChannels[i + 1], 3, stride: 2, padding: 1, device: device, dtype: dtype));
        }
        conv_out = nn.Conv2d(blockOutChannels[^1], embeddingChannels, 3, padding: 1, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Encodes a control image [B, C, H, W].</summary>
    public override Tensor forward(Tensor conditioning)
    {
        using var scope = NewDisposeScope();
        var h = nn.functional.silu(conv_in.forward(conditioning));
        foreach (var block in blocks) h = nn.functional.silu(block.forward(h));
        return conv_out.forward(h).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// What a ControlNet gives the UNet: one residual per skip state of the down path and one for the mid block (diffusers'
/// <c>ControlNetOutput</c>). Owns its tensors.
/// </summary>
/// <param name="DownBlockResSamples">Added to the UNet's skip states, in order (conv_in's first).</param>
/// <param name="MidBlockResSample">Added to the UNet's mid block output.</param>
public sealed record ControlNetOutput(Tensor[] DownBlockResSamples, Tensor MidBlockResSample) : IDisposable
{
    /// <summary>Frees the tensors.</summary>
    public void Dispose()
    {
        foreach (var t in DownBlockResSamples) t.Dispose();
        MidBlockResSample.Dispose();
    }

    /// <summary>Moves every tensor to the enclosing dispose scope; returns this.</summary>
    internal ControlNetOutput MoveToOuterDisposeScope()
    {
        foreach (var t in DownBlockResSamples) t.MoveToOuterDisposeScope();
        MidBlockResSample.MoveToOuterDisposeScope();
        return this;
    }
}

/// <summary>
/// diffusers' <c>ControlNetModel</c> (models/controlnets/controlnet.py): a copy of a UNet's encoder (conv_in, time and
/// SDXL <c>text_time</c> embeddings, down blocks, mid block) whose conv_in output is summed with the encoded control
/// image; every skip state and the mid block output go through a 1x1 conv (<c>controlnet_down_blocks</c>,
/// <c>controlnet_mid_block</c>, zero-initialised in training) and are scaled, giving the residuals
/// <see cref="UNet2DConditionModel.forward"/> adds. Built from the UNet's own blocks; state-dict keys equal diffusers'.
/// </summary>
public sealed class ControlNetModel : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Conv2d conv_in;
    private readonly Timesteps time_proj;
    private readonly TimestepEmbedding time_embedding;
    private readonly Timesteps? add_time_proj;
    private readonly TimestepEmbedding? add_embedding;
    private readonly ControlNetConditioningEmbedding controlnet_cond_embedding;
    private readonly ModuleList<nn.Module> down_blocks;
    private readonly ModuleList<Conv2d> controlnet_down_blocks;
    private readonly UNetMidBlock2DCrossAttn mid_block;
    private readonly Conv2d controlnet_mid_block;
#pragma warning restore IDE1006

    /// <summary>The configuration the model was built from.</summary>
    public ControlNetModelConfig Config { get; }

    /// <summary>The element type of the weights.</summary>
    public ScalarType Dtype => conv_in.weight!.dtype;

    /// <summary>The device of the weights.</summary>
    public Device Device => conv_in.weight!.device;

    /// <summary>Builds the model; on the <c>meta</c> device it holds shapes only.</summary>
    /// <exception cref="NotSupportedException">The config sets an option this port does not implement.</exception>
    /// <exception cref="ArgumentException">The config is inconsistent.</exception>
    public ControlNetModel(ControlNetModelConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(ControlNetModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        var channels = config.BlockOutChannels;
        long temb = config.TimeEmbedDim;
        conv_in = nn.Conv2d(config.InChannels, channels[0], 3, padding: 1, device: device, dtype: dtype);
        time_proj = new Timesteps(channels[0], config.FlipSinToCos, config.FreqShift);
        time_embedding = new TimestepEmbedding(channels[0], temb, device, dtype);
        if (config.AdditionEmbedType == "text_time")
        {
            add_time_proj = new Timesteps(config.AdditionTimeEmbedDim!.Value, config.FlipSinToCos, config.FreqShift);
            add_embedding = new TimestepEmbedding(config.ProjectionClassEmbeddingsInputDim!.Value, temb, device, dtype);
        }
        controlnet_cond_embedding = new ControlNetConditioningEmbedding(channels[0], config.ConditioningChannels,
            config.ConditioningEmbeddingOutChannels, device, dtype);
        (down_blocks, controlnet_down_blocks, mid_block, controlnet_mid_block) = BuildDownPath(config, device, dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Loads a diffusers <c>controlnet</c> folder (config.json + safetensors, e.g. lllyasviel/sd-controlnet-canny),
    /// strictly. <paramref name="dtype"/> converts floating weights (null keeps the stored type).
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="WeightLoadException">The weights do not match the config.</exception>
    /// <exception cref="NotSupportedException">The config sets an option this port does not implement.</exception>
    public static ControlNetModel FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<ControlNetModelConfig, ControlNetModel>(folder, (c, meta) => new ControlNetModel(c, meta, dtype), dtype, device, variant);

    /// <summary>
    /// The residuals for latents <paramref name="sample"/> [B, in_channels, h, w] at <paramref name="timestep"/> (scalar,
    /// [1] or [B]) with text <paramref name="encoderHiddenStates"/> [B, S, cross_attention_dim] and the control image
    /// <paramref name="controlnetCond"/> [B, conditioning_channels, 8h, 8w] in [0, 1] (SDXL: also <paramref name="textEmbeds"/>
    /// and <paramref name="timeIds"/>, as the UNet takes them). Every residual is multiplied by
    /// <paramref name="conditioningScale"/>; in <paramref name="guessMode"/> (unless global_pool_conditions) by
    /// logspace(-1, 0, n + 1) x scale instead, from 0.1 for conv_in's to 1 for the mid block's. With global_pool_conditions
    /// the residuals are averaged over space.
    /// </summary>
    /// <exception cref="ArgumentException">An input is missing or has the wrong shape; thrown before any compute.</exception>
    public ControlNetOutput forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates, Tensor controlnetCond, double conditioningScale = 1.0,
        bool guessMode = false, Tensor? textEmbeds = null, Tensor? timeIds = null)
    {
        Validate(sample, timestep, encoderHiddenStates, controlnetCond, textEmbeds, timeIds);
        using var scope = NewDisposeScope();
        long batch = sample.shape[0];
        var dtype = Dtype;
        var x = sample.to(dtype);
        var context = encoderHiddenStates.to(dtype);
        var cond = controlnetCond.to(dtype);
        if (Config.ControlnetConditioningChannelOrder == "bgr") cond = cond.flip(1);

        var emb = UNet2DConditionModel.TimeEmbedding(time_proj, time_embedding, add_time_proj, add_embedding, timestep, batch, x.dtype, x.device,
            textEmbeds, timeIds);
        x = conv_in.forward(x);
        x = x + controlnet_cond_embedding.forward(cond);

        return Residuals(x, emb, context, down_blocks, controlnet_down_blocks, mid_block, controlnet_mid_block, conditioningScale, guessMode,
            Config.GlobalPoolConditions).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The down path a ControlNet copies from the UNet (shared with <see cref="ControlNetUnionModel"/>): the down blocks,
    /// a 1x1 conv per skip state (<c>controlnet_down_blocks</c>: conv_in's, each resnet's, each downsampler's), the mid
    /// block and its 1x1 conv (<c>controlnet_mid_block</c>).
    /// </summary>
    internal static (ModuleList<nn.Module> DownBlocks, ModuleList<Conv2d> ControlNetDownBlocks, UNetMidBlock2DCrossAttn MidBlock, Conv2d ControlNetMidBlock)
        BuildDownPath(ControlNetModelConfig config, Device? device, ScalarType? dtype)
    {
        int n = config.DownBlockTypes.Length;
        var channels = config.BlockOutChannels;
        long groups = config.NormNumGroups!.Value, temb = config.TimeEmbedDim;
        double eps = config.NormEps;
        var heads = config.HeadsPerBlock;
        var transformerLayers = config.TransformerLayersPerBlock.Expand(n, "transformer_layers_per_block");
        var onlyCross = config.OnlyCrossAttention.Expand(n, "only_cross_attention");
        var downBlocks = new ModuleList<nn.Module>();
        var zeroConvs = new ModuleList<Conv2d>();
        Conv2d ZeroConv(long c) => nn.Conv2d(c, c, 1, device: device, dtype: dtype);
        zeroConvs.Add(ZeroConv(channels[0]));
        long output = channels[0];
        for (int i = 0; i < n; i++)
        {
            long input = output;
            output = channels[i];
            bool isFinal = i == n - 1;
            downBlocks.Add(config.DownBlockTypes[i] == "CrossAttnDownBlock2D"
                ? new CrossAttnDownBlock2D(input, output, temb, config.LayersPerBlock, transformerLayers[i], groups, eps, heads[i],
                    config.CrossAttentionDim, !isFinal, config.DownsamplePadding, config.UseLinearProjection, onlyCross[i], device, dtype)
                : new DownBlock2D(input, output, temb, config.LayersPerBlock, groups, eps, !isFinal, config.DownsamplePadding, device, dtype));
            for (int l = 0; l < config.LayersPerBlock + (isFinal ? 0 : 1); l++) zeroConvs.Add(ZeroConv(output));
        }
        var midZero = ZeroConv(channels[^1]);
        var mid = new UNetMidBlock2DCrossAttn(channels[^1], temb, transformerLayers[^1], groups, eps, heads[^1], config.CrossAttentionDim,
            config.MidBlockScaleFactor, config.UseLinearProjection, device, dtype);
        return (downBlocks, zeroConvs, mid, midZero);
    }

    /// <summary>
    /// The residuals from the down path's input <paramref name="x"/> (conv_in's output plus the control features): the down
    /// blocks and the mid block, each skip state and the mid output through its 1x1 conv, then scaled as diffusers'
    /// ControlNets do: times <paramref name="conditioningScale"/> (null: not scaled, as a ControlNet-Union with several
    /// conditions leaves them); in <paramref name="guessMode"/> (unless <paramref name="globalPoolConditions"/>) by
    /// logspace(-1, 0, n + 1) (times the scale when given) instead, from 0.1 for conv_in's to 1 for the mid block's; with
    /// global pool conditions averaged over space. The tensors belong to the caller's dispose scope.
    /// </summary>
    internal static ControlNetOutput Residuals(Tensor x, Tensor emb, Tensor context, ModuleList<nn.Module> downBlocks, ModuleList<Conv2d> zeroConvs,
        UNetMidBlock2DCrossAttn midBlock, Conv2d midZero, double? conditioningScale, bool guessMode, bool globalPoolConditions)
    {
        var states = new List<Tensor> { x };
        foreach (var block in downBlocks)
        {
            var (hidden, residuals) = ((IUNetDownBlock)block).forward(x, emb, context);
            x = hidden;
            states.AddRange(residuals);
        }
        x = midBlock.forward(x, emb, context);

        var down = new Tensor[states.Count];
        for (int i = 0; i < states.Count; i++) down[i] = zeroConvs[i].forward(states[i]);
        var mid = midZero.forward(x);

        if (guessMode && !globalPoolConditions)
        {
            // 0.1 for the first residual up to 1.0 for the mid block's, times the conditioning scale (float32, as torch.logspace).
            var scales = logspace(-1, 0, down.Length + 1, device: x.device);
            if (conditioningScale is { } scale) scales = scales * scale;
            for (int i = 0; i < down.Length; i++) down[i] = down[i] * scales[i];
            mid = mid * scales[-1];
        }
        else if (conditioningScale is { } scale)
        {
            for (int i = 0; i < down.Length; i++) down[i] = down[i] * scale;
            mid = mid * scale;
        }
        if (globalPoolConditions)
        {
            for (int i = 0; i < down.Length; i++) down[i] = down[i].mean([2, 3], keepdim: true);
            mid = mid.mean([2, 3], keepdim: true);
        }
        return new ControlNetOutput(down, mid);
    }

    private void Validate(Tensor sample, Tensor timestep, Tensor text, Tensor cond, Tensor? textEmbeds, Tensor? timeIds)
    {
        ValidateInputs(Config, sample, timestep, text);
        ValidateCond(Config, cond, sample, "controlnet_cond");
        if (add_embedding is not null)
            UNet2DConditionModel.ValidateTextTime(textEmbeds, timeIds, sample.shape[0], Config.AdditionTimeEmbedDim!.Value, Config.ProjectionClassEmbeddingsInputDim!.Value);
    }

    /// <summary>A ControlNet's latents, timestep and text (shared with <see cref="ControlNetUnionModel"/>).</summary>
    internal static void ValidateInputs(ControlNetModelConfig config, Tensor sample, Tensor timestep, Tensor text)
    {
        ArgumentNullException.ThrowIfNull(sample);
        ArgumentNullException.ThrowIfNull(timestep);
        ArgumentNullException.ThrowIfNull(text);
        if (sample.dim() != 4 || sample.shape[1] != config.InChannels || !sample.is_floating_point() || sample.numel() == 0)
            throw new ArgumentException($"sample must be a floating [B, {config.InChannels}, h, w] tensor, got {Shape(sample)} {sample.dtype}.", nameof(sample));
        long batch = sample.shape[0];
        if (text.dim() != 3 || text.shape[0] != batch || text.shape[2] != config.CrossAttentionDim || !text.is_floating_point())
            throw new ArgumentException($"encoder_hidden_states must be [B={batch}, S, {config.CrossAttentionDim}] (cross_attention_dim), got {Shape(text)}.",
                "encoder_hidden_states");
        if (timestep.dim() > 1 || (timestep.numel() != batch && timestep.numel() != 1))
            throw new ArgumentException($"timestep must be a scalar, [1] or [B={batch}], got {Shape(timestep)}.", nameof(timestep));
    }

    /// <summary>A control image for latents <paramref name="sample"/>: [B, conditioning_channels, H, W] that the conditioning
    /// embedding brings to the latent size (shared with <see cref="ControlNetUnionModel"/>).</summary>
    internal static void ValidateCond(ControlNetModelConfig config, Tensor? cond, Tensor sample, string name)
    {
        if (cond is null) throw new ArgumentNullException(name);
        // The conditioning embedding halves the image once per stride-2 conv; it must land on the latent size.
        int factor = 1 << (config.ConditioningEmbeddingOutChannels.Length - 1);
        long batch = sample.shape[0], h = sample.shape[2], w = sample.shape[3];
        if (cond.dim() != 4 || cond.shape[0] != batch || cond.shape[1] != config.ConditioningChannels || !cond.is_floating_point()
            || Downsampled(cond.shape[2], factor) != h || Downsampled(cond.shape[3], factor) != w)
            throw new ArgumentException(
                $"{name} must be a floating [B={batch}, {config.ConditioningChannels}, {h * factor}, {w * factor}] image ({factor} x the latent size), got {Shape(cond)}.",
                name);
    }

    private static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";

    /// <summary>The side after the conditioning embedding's stride-2, padding-1, 3x3 convs.</summary>
    private static long Downsampled(long side, int factor)
    {
        for (int f = factor; f > 1; f /= 2) side = (side - 1) / 2 + 1;
        return side;
    }
}
