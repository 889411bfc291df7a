using DiffusersSharp.IO;
using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// The PixArt-α / PixArt-Σ diffusion transformer (diffusers <c>PixArtTransformer2DModel</c>): the latent is cut into
/// patches with sin-cos positions (<c>pos_embed</c>, scaled by interpolation_scale), the T5 caption is projected to the
/// inner width (<c>caption_projection</c>, tanh-GELU), <c>adaln_single</c> turns the timestep (plus, for PixArt-α at 1024,
/// the resolution and aspect ratio) into one modulation vector shared by all <c>transformer_blocks</c>
/// (ada_norm_single BasicTransformerBlocks: modulated self-attention, cross-attention to the caption under its attention
/// mask, modulated feed-forward), and the output is normalised, shifted / scaled by <c>scale_shift_table</c> plus the
/// embedded timestep, projected and unpatchified. With out_channels = 2 × in_channels the second half is the learned
/// variance (the pipelines keep the first). State-dict keys equal the diffusers keys.
/// </summary>
public sealed class PixArtTransformer2DModel : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly PatchEmbed pos_embed;
    private readonly ModuleList<BasicTransformerBlock> transformer_blocks;
    private readonly LayerNorm norm_out;
    private readonly Parameter scale_shift_table;
    private readonly Linear proj_out;
    private readonly AdaLayerNormSingle adaln_single;
    private readonly PixArtAlphaTextProjection? caption_projection;
#pragma warning restore IDE1006

    /// <summary>The configuration the model was built from.</summary>
    public PixArtTransformer2DModelConfig Config { get; }

    /// <summary>The element type of the weights (inputs are converted to it).</summary>
    public ScalarType Dtype => proj_out.weight!.dtype;

    /// <summary>The device of the weights.</summary>
    public Device Device => proj_out.weight!.device;

    /// <summary>Builds the model; on the <c>meta</c> device it holds shapes only (for counting or as a loading shell).</summary>
    /// <exception cref="ArgumentException">The config is invalid.</exception>
    public PixArtTransformer2DModel(PixArtTransformer2DModelConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(PixArtTransformer2DModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        int d = config.InnerDim;
        pos_embed = new PatchEmbed(config.SampleSize, config.SampleSize, config.PatchSize, config.InChannels, d, posEmbedMaxSize: null,
            device, dtype, interpolationScale: config.InterpolationScaleOrDefault);
        transformer_blocks = new ModuleList<BasicTransformerBlock>();
        for (int i = 0; i < config.NumLayers; i++)
            transformer_blocks.Add(new BasicTransformerBlock(d, config.NumAttentionHeads, config.AttentionHeadDim, config.CrossAttentionDim,
                activationFn: config.ActivationFn, normEps: config.NormEps, device: device, dtype: dtype, normType: config.NormType,
                attentionBias: config.AttentionBias, normElementwiseAffine: config.NormElementwiseAffine));
        norm_out = nn.LayerNorm(d, 1e-6, elementwise_affine: false, device: device, dtype: dtype);
        scale_shift_table = new Parameter(torch.zeros([2, d], dtype: dtype ?? ScalarType.Float32, device: device), requires_grad: false);
        proj_out = new Linear(d, (long)config.PatchSize * config.PatchSize * config.OutChannelsOrIn, hasBias: true, device: device, dtype: dtype);
        adaln_single = new AdaLayerNormSingle(d, config.UsesAdditionalConditions, device, dtype);
        if (config.CaptionChannels is int captionChannels)
            caption_projection = new PixArtAlphaTextProjection(captionChannels, d, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Loads a diffusers <c>transformer</c> folder (config.json + safetensors, single or sharded), strictly: every key
    /// and shape must match. <paramref name="dtype"/> converts floating weights (null keeps the stored type).
    /// </summary>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="WeightLoadException">The weights do not match the config.</exception>
    public static PixArtTransformer2DModel FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<PixArtTransformer2DModelConfig, PixArtTransformer2DModel>(folder, (c, meta) => new PixArtTransformer2DModel(c, meta, dtype), dtype, device, variant);

    /// <summary>Width of the text states the model takes: caption_channels, or cross_attention_dim without a caption projection.</summary>
    public long TextWidth => Config.CaptionChannels ?? Config.CrossAttentionDim ?? 0;

    /// <summary>
    /// Predicts the noise (and, with out_channels = 2 × in_channels, the variance) of <paramref name="hidden_states"/>
    /// [B, in_channels, h, w] (h, w divisible by patch_size) for the caption <paramref name="encoder_hidden_states"/>
    /// [B, S, caption_channels] under <paramref name="encoder_attention_mask"/> [B, S] (1 keeps a token, 0 drops it; null
    /// keeps all; a [B, 1, S] tensor is taken as the additive bias itself, as diffusers does) at <paramref name="timestep"/>
    /// [B] (a scalar or [1] is broadcast). Models with additional conditions need <paramref name="resolution"/> [B, 2]
    /// (height, width in pixels) and <paramref name="aspect_ratio"/> [B, 1] (height / width); others ignore them, as
    /// diffusers does. Returns [B, out_channels, h, w] in the model dtype.
    /// </summary>
    /// <exception cref="ArgumentException">An input has the wrong rank, size or batch, or the micro-conditions are
    /// missing; thrown before any compute.</exception>
    public Tensor forward(Tensor hidden_states, Tensor? encoder_hidden_states, Tensor timestep, Tensor? encoder_attention_mask = null,
        Tensor? resolution = null, Tensor? aspect_ratio = null)
    {
        ValidateInputs(hidden_states, encoder_hidden_states, timestep, encoder_attention_mask, resolution, aspect_ratio);
        using var scope = torch.NewDisposeScope();
        var c = Config;
        var dtype = Dtype;
        long batch = hidden_states.shape[0];
        long height = hidden_states.shape[2] / c.PatchSize, width = hidden_states.shape[3] / c.PatchSize;

        // diffusers turns a [B, S] 1 / 0 mask into an additive bias in the activations' dtype: (1 - mask) · -10000.
        var bias = EncoderAttentionBias.From(encoder_attention_mask, dtype);

        var x = pos_embed.forward(hidden_states.to(dtype));
        var t = timestep.numel() == 1 ? timestep.reshape(1).expand(batch) : timestep.reshape(batch);
        var (modulation, embeddedTimestep) = adaln_single.forward(t, resolution, aspect_ratio, batch, x.dtype);

        Tensor? text = encoder_hidden_states?.to(dtype);
        if (caption_projection is not null)
            text = caption_projection.forward(text!).view(batch, -1, x.shape[^1]);

        foreach (var block in transformer_blocks)
        {
            using var blockScope = torch.NewDisposeScope();
            x = block.forward(x, text, bias, modulation).MoveToOuterDisposeScope();
        }

        var shiftScale = (scale_shift_table.unsqueeze(0) + embeddedTimestep.unsqueeze(1)).chunk(2, 1);
        x = norm_out.forward(x) * (1 + shiftScale[1]) + shiftScale[0];
        x = proj_out.forward(x);
        long p = c.PatchSize, outC = c.OutChannelsOrIn;
        x = x.reshape(-1, height, width, p, p, outC).permute(0, 5, 1, 3, 2, 4).reshape(-1, outC, height * p, width * p);
        return x.MoveToOuterDisposeScope();
    }

    private void ValidateInputs(Tensor hidden, Tensor? text, Tensor timestep, Tensor? mask, Tensor? resolution, Tensor? aspectRatio)
    {
        ArgumentNullException.ThrowIfNull(hidden);
        ArgumentNullException.ThrowIfNull(timestep);
        static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";
        var c = Config;
        pos_embed.Validate(hidden.shape, "hidden_states");
        if (!hidden.is_floating_point())
            throw new ArgumentException($"hidden_states must be floating point, got {hidden.dtype}.", "hidden_states");
        long batch = hidden.shape[0];
        if (c.CrossAttentionDim is not null || c.CaptionChannels is not null)
        {
            long width = TextWidth;
            if (text is null)
                throw new ArgumentException("encoder_hidden_states is required: this model attends to a caption.", "encoder_hidden_states");
            if (text.dim() != 3 || text.shape[0] != batch || text.shape[2] != width || text.shape[1] < 1)
                throw new ArgumentException($"encoder_hidden_states must be [B={batch}, S, {width}], got {Shape(text)}.", "encoder_hidden_states");
            if (!text.is_floating_point())
                throw new ArgumentException($"encoder_hidden_states must be floating point, got {text.dtype}.", "encoder_hidden_states");
            EncoderAttentionBias.Validate(mask, batch, text.shape[1]);
        }
        if (timestep.dim() > 1 || (timestep.numel() != batch && timestep.numel() != 1))
            throw new ArgumentException($"timestep must be a scalar, [1] or [B={batch}], got {Shape(timestep)}.", nameof(timestep));
        if (c.UsesAdditionalConditions)
        {
            if (resolution is null || aspectRatio is null)
                throw new ArgumentException("This model uses additional conditions (use_additional_conditions): pass resolution [B, 2] and aspect_ratio [B, 1].", nameof(resolution));
            if (resolution.numel() != batch * 2)
                throw new ArgumentException($"resolution must be [B={batch}, 2], got {Shape(resolution)}.", nameof(resolution));
            if (aspectRatio.numel() != batch)
                throw new ArgumentException($"aspect_ratio must be [B={batch}, 1], got {Shape(aspectRatio)}.", "aspect_ratio");
        }
    }
}
