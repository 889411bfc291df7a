using DiffusersSharp.IO;
using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// The Sana diffusion transformer (diffusers <c>SanaTransformer2DModel</c>: Sana 600M / 1600M, Sana 1.5, Sana Sprint).
/// The DC-AE latent is cut into patches (<c>patch_embed</c>; sin-cos positions only when interpolation_scale is set),
/// the Gemma-2 caption is projected to the inner width (<c>caption_projection</c>, tanh-GELU) and RMS-normalised
/// (<c>caption_norm</c>), <c>time_embed</c> turns the timestep (plus, for Sprint, the guidance scale) into one modulation
/// vector shared by all <c>transformer_blocks</c> (<see cref="SanaTransformerBlock"/>: linear self-attention, softmax
/// cross-attention to the caption under its mask, convolutional feed-forward), and the output is normalised, shifted /
/// scaled by <c>scale_shift_table</c> plus the embedded timestep (<c>norm_out</c>), projected and unpatchified.
/// State-dict keys equal the diffusers keys.
/// </summary>
public sealed class SanaTransformer2DModel : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly PatchEmbed patch_embed;
    // AdaLayerNormSingle, or SanaCombinedTimestepGuidanceEmbeddings with guidance_embeds, as diffusers builds one or the other.
    private readonly nn.Module time_embed;
    private readonly PixArtAlphaTextProjection caption_projection;
    private readonly RMSNorm caption_norm;
    private readonly ModuleList<SanaTransformerBlock> transformer_blocks;
    private readonly Parameter scale_shift_table;
    private readonly SanaModulatedNorm norm_out;
    private readonly Linear proj_out;
#pragma warning restore IDE1006

    /// <summary>The configuration the model was built from.</summary>
    public SanaTransformer2DModelConfig Config { get; }

    /// <summary>The element type of the weights (inputs are converted to it).</summary>
    public ScalarType Dtype => proj_out.weight.dtype;

    /// <summary>The device of the weights.</summary>
    public Device Device => proj_out.weight.device;

    /// <summary>Builds the model; on the <c>meta</c> device it holds shapes only (for counting or as a loading shell).</summary>
    /// <exception cref="ArgumentException">The config is invalid.</exception>
    public SanaTransformer2DModel(SanaTransformer2DModelConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(SanaTransformer2DModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        int d = config.InnerDim;
        // diffusers' pos_embed_type=None without interpolation_scale; its table is never a checkpoint key (not persistent).
        patch_embed = new PatchEmbed(config.SampleSize, config.SampleSize, config.PatchSize, config.InChannels, d, posEmbedMaxSize: null,
            device, dtype, positions: config.InterpolationScale is not null, interpolationScale: config.InterpolationScale ?? 1);
        time_embed = config.GuidanceEmbeds
            ? new SanaCombinedTimestepGuidanceEmbeddings(d, device, dtype)
            : new AdaLayerNormSingle(d, useAdditionalConditions: false, device, dtype);
        caption_projection = new PixArtAlphaTextProjection(config.CaptionChannels, d, device: device, dtype: dtype);
        caption_norm = new RMSNorm(d, 1e-5, device, dtype);
        transformer_blocks = new ModuleList<SanaTransformerBlock>();
        for (int i = 0; i < config.NumLayers; i++)
            transformer_blocks.Add(new SanaTransformerBlock(config, device, dtype));
        scale_shift_table = new Parameter(torch.zeros([2, d], dtype: dtype ?? ScalarType.Float32, device: device), requires_grad: false);
        norm_out = new SanaModulatedNorm(d, elementwiseAffine: false, eps: 1e-6, device, dtype);
        proj_out = new Linear(d, (long)config.PatchSize * config.PatchSize * config.OutChannelsOrIn, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Loads a diffusers <c>transformer</c> folder (config.json + safetensors, single or sharded), strictly: every key
    /// and shape must match. <paramref name="dtype"/> converts floating weights (null keeps the stored type).
    /// </summary>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="WeightLoadException">The weights do not match the config.</exception>
    public static SanaTransformer2DModel FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<SanaTransformer2DModelConfig, SanaTransformer2DModel>(folder, (c, meta) => new SanaTransformer2DModel(c, meta, dtype), dtype, device, variant);

    /// <summary>
    /// Predicts the flow (Sana) or the consistency output (Sprint) of <paramref name="hidden_states"/> [B, in_channels, h, w]
    /// (h, w divisible by patch_size) for the caption <paramref name="encoder_hidden_states"/> [B, S, caption_channels] under
    /// <paramref name="encoder_attention_mask"/> [B, S] (1 keeps a token, 0 drops it: diffusers' bias of -10000; null keeps
    /// all; a [B, 1, S] tensor is taken as the additive bias itself, as diffusers does) at <paramref name="timestep"/> [B]
    /// (a scalar or [1] is broadcast). Models with guidance_embeds (Sprint) need <paramref name="guidance"/> [B] (already
    /// multiplied by guidance_embeds_scale, as SanaSprintPipeline does); others refuse it (diffusers' AdaLayerNormSingle
    /// takes none). timestep_scale and guidance_embeds_scale are the pipelines' to apply, as in diffusers. Returns
    /// [B, out_channels, h, w] in the model dtype. <paramref name="cancellationToken"/> is checked before each block.
    /// </summary>
    /// <exception cref="ArgumentException">An input has the wrong rank, size or batch, or guidance is missing / not
    /// taken; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException">Cancelled between blocks.</exception>
    public Tensor forward(Tensor hidden_states, Tensor encoder_hidden_states, Tensor timestep, Tensor? encoder_attention_mask = null,
        Tensor? guidance = null, CancellationToken cancellationToken = default)
    {
        ValidateInputs(hidden_states, encoder_hidden_states, timestep, encoder_attention_mask, guidance);
        cancellationToken.ThrowIfCancellationRequested();
        using var scope = torch.NewDisposeScope();
        var c = Config;
        var dtype = Dtype;
        long batch = hidden_states.shape[0];
        long height = hidden_states.shape[2] / c.PatchSize, width = hidden_states.shape[3] / c.PatchSize;

        // diffusers turns a [B, S] 1 / 0 mask into an additive bias in the activations' dtype: (1 - mask) · -10000.
        var bias = EncoderAttentionBias.From(encoder_attention_mask, dtype);

        var x = patch_embed.forward(hidden_states.to(dtype));
        var t = Broadcast(timestep, batch);
        var (modulation, embeddedTimestep) = time_embed is SanaCombinedTimestepGuidanceEmbeddings withGuidance
            ? withGuidance.forward(t, Broadcast(guidance!, batch), x.dtype)
            : ((AdaLayerNormSingle)time_embed).forward(t, null, null, batch, x.dtype);

        var text = caption_projection.forward(encoder_hidden_states.to(dtype)).view(batch, -1, x.shape[^1]).Consume(caption_norm.forward);

        foreach (var block in transformer_blocks)
        {
            cancellationToken.ThrowIfCancellationRequested();
            x = x.Consume(h =>
            {
                using var blockScope = torch.NewDisposeScope();
                return block.forward(h, text, bias, modulation, height, width).MoveToOuterDisposeScope();
            });
        }

        x = x.Consume(h => norm_out.forward(h, embeddedTimestep, scale_shift_table)).Consume(proj_out.forward);
        long p = c.PatchSize, outC = c.OutChannelsOrIn;
        x = x.Consume(h => h.reshape(batch, height, width, p, p, -1).permute(0, 5, 1, 3, 2, 4).reshape(batch, -1, height * p, width * p));
        return x.MoveToOuterDisposeScope();
    }

    private static Tensor Broadcast(Tensor value, long batch) => value.numel() == 1 ? value.reshape(1).expand(batch) : value.reshape(batch);

    private void ValidateInputs(Tensor hidden, Tensor text, Tensor timestep, Tensor? mask, Tensor? guidance)
    {
        ArgumentNullException.ThrowIfNull(hidden);
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(timestep);
        static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";
        var c = Config;
        patch_embed.Validate(hidden.shape, "hidden_states");
        if (!hidden.is_floating_point())
            throw new ArgumentException($"hidden_states must be floating point, got {hidden.dtype}.", "hidden_states");
        long batch = hidden.shape[0];
        if (text.dim() != 3 || text.shape[0] != batch || text.shape[2] != c.CaptionChannels || text.shape[1] < 1)
            throw new ArgumentException($"encoder_hidden_states must be [B={batch}, S, caption_channels={c.CaptionChannels}], got {Shape(text)}.", "encoder_hidden_states");
        if (!text.is_floating_point())
            throw new ArgumentException($"encoder_hidden_states must be floating point, got {text.dtype}.", "encoder_hidden_states");
        EncoderAttentionBias.Validate(mask, batch, text.shape[1]);
        if (timestep.dim() > 1 || (timestep.numel() != batch && timestep.numel() != 1))
            throw new ArgumentException($"timestep must be a scalar, [1] or [B={batch}], got {Shape(timestep)}.", nameof(timestep));
        if (c.GuidanceEmbeds)
        {
            if (guidance is null)
                throw new ArgumentException("This model embeds the guidance scale (guidance_embeds, Sana Sprint): pass guidance [B] (guidance_scale × guidance_embeds_scale).", nameof(guidance));
            if (guidance.dim() > 1 || (guidance.numel() != batch && guidance.numel() != 1))
                throw new ArgumentException($"guidance must be a scalar, [1] or [B={batch}], got {Shape(guidance)}.", nameof(guidance));
        }
        else if (guidance is not null)
        {
            throw new ArgumentException("This model has no guidance embedding (guidance_embeds is false): pass guidance = null.", nameof(guidance));
        }
    }
}
