using DiffusersSharp.IO;
using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// diffusers' <c>CogView4Transformer2DModel</c> (THUDM/CogView4-6B's denoiser): patch-embedded latents and projected GLM
/// text (<c>patch_embed</c>), a conditioning of the timestep and the SDXL-style size conditions
/// (<c>time_condition_embed</c>, then SiLU), <c>num_layers</c> joint text + image blocks with a rotary table over the
/// patch grid (<c>rope</c>), the final modulated norm (<c>norm_out</c>) and projection (<c>proj_out</c>) back to patches.
/// The pipeline's default path (no attention mask, the rotary table computed here) is what this runs.
/// </summary>
public sealed class CogView4Transformer2DModel : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly CogView4RotaryPosEmbed rope;
    private readonly CogView4PatchEmbed patch_embed;
    private readonly CogView3CombinedTimestepSizeEmbeddings time_condition_embed;
    private readonly ModuleList<CogView4TransformerBlock> transformer_blocks;
    private readonly CogView4AdaLayerNormContinuous norm_out;
    private readonly Linear proj_out;
#pragma warning restore IDE1006

    /// <summary>The configuration the model was built from.</summary>
    public CogView4Transformer2DModelConfig Config { get; }

    /// <summary>Builds the model from <paramref name="config"/> (weights uninitialised; load them, or build on <c>meta</c> and
    /// fill).</summary>
    /// <exception cref="ArgumentException">The config is out of range.</exception>
    public CogView4Transformer2DModel(CogView4Transformer2DModelConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(CogView4Transformer2DModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        int d = config.InnerDim;
        rope = new CogView4RotaryPosEmbed(config.AttentionHeadDim, config.PatchSize, config.RopeAxesDim);
        patch_embed = new CogView4PatchEmbed(config.InChannels, d, config.PatchSize, config.TextEmbedDim, device, dtype);
        // Three size conditions of two values each, condition_dim features per value.
        time_condition_embed = new CogView3CombinedTimestepSizeEmbeddings(config.TimeEmbedDim, config.ConditionDim, 3L * 2 * config.ConditionDim, d, device, dtype);
        transformer_blocks = new ModuleList<CogView4TransformerBlock>();
        for (int i = 0; i < config.NumLayers; i++)
            transformer_blocks.Add(new CogView4TransformerBlock(d, config.NumAttentionHeads, config.AttentionHeadDim, config.TimeEmbedDim, device, dtype));
        norm_out = new CogView4AdaLayerNormContinuous(d, config.TimeEmbedDim, device, dtype);
        proj_out = new Linear(d, (long)config.PatchSize * config.PatchSize * config.OutChannels, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Loads <c>config.json</c> and the safetensors weights of a diffusers <c>transformer/</c> folder (strictly:
    /// every key, no extra; the model is built on <c>meta</c> and filled).</summary>
    public static CogView4Transformer2DModel FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<CogView4Transformer2DModelConfig, CogView4Transformer2DModel>(folder, (c, meta) => new CogView4Transformer2DModel(c, meta, dtype), dtype, device, variant);

    /// <summary>
    /// Predicts the flow-matching velocity for <paramref name="hidden_states"/> [B, in_channels, h, w] (h, w multiples of
    /// patch_size) with GLM text <paramref name="encoder_hidden_states"/> [B, S, text_embed_dim], <paramref name="timestep"/>
    /// [B] (the scheduler's timestep, 0-1000), and the size conditions <paramref name="original_size"/>,
    /// <paramref name="target_size"/>, <paramref name="crop_coords"/> [B, 2] each (as CogView4Pipeline passes them).
    /// Returns [B, out_channels, h, w] in the dtype of the hidden states.
    /// </summary>
    /// <exception cref="ArgumentException">An input has the wrong rank, size, batch or type; thrown before any compute.</exception>
    public Tensor forward(Tensor hidden_states, Tensor encoder_hidden_states, Tensor timestep, Tensor original_size, Tensor target_size, Tensor crop_coords)
    {
        Validate(hidden_states, encoder_hidden_states, timestep, original_size, target_size, crop_coords);
        using var scope = NewDisposeScope();
        long b = hidden_states.shape[0], height = hidden_states.shape[2], width = hidden_states.shape[3];
        int p = Config.PatchSize;
        var rotary = rope.forward(height, width, hidden_states.device);
        var (x, context) = patch_embed.forward(hidden_states, encoder_hidden_states);
        var temb = nn.functional.silu(time_condition_embed.forward(timestep, original_size, target_size, crop_coords, x.dtype));
        foreach (var block in transformer_blocks)
        {
            using var blockScope = NewDisposeScope();
            var (nextX, nextContext) = block.forward(x, context, temb, rotary);
            x = nextX.MoveToOuterDisposeScope();
            context = nextContext.MoveToOuterDisposeScope();
        }
        var patches = proj_out.forward(norm_out.forward(x, temb));
        var output = patches.reshape(b, height / p, width / p, -1, p, p).permute(0, 3, 1, 4, 2, 5).flatten(4, 5).flatten(2, 3);
        return output.MoveToOuterDisposeScope();
    }

    private void Validate(Tensor hidden, Tensor text, Tensor timestep, Tensor originalSize, Tensor targetSize, Tensor cropCoords)
    {
        ArgumentNullException.ThrowIfNull(hidden);
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(timestep);
        ArgumentNullException.ThrowIfNull(originalSize);
        ArgumentNullException.ThrowIfNull(targetSize);
        ArgumentNullException.ThrowIfNull(cropCoords);
        static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";
        int p = Config.PatchSize;
        if (hidden.dim() != 4 || hidden.shape[1] != Config.InChannels || hidden.shape[2] % p != 0 || hidden.shape[3] % p != 0 || hidden.shape[2] < p || hidden.shape[3] < p)
            throw new ArgumentException($"hidden_states must be [B, {Config.InChannels}, h, w] with h and w positive multiples of patch_size {p}, got {Shape(hidden)}.", "hidden_states");
        long batch = hidden.shape[0];
        if (text.dim() != 3 || text.shape[0] != batch || text.shape[1] < 1 || text.shape[2] != Config.TextEmbedDim)
            throw new ArgumentException($"encoder_hidden_states must be [B={batch}, S, {Config.TextEmbedDim}] (text_embed_dim), got {Shape(text)}.", "encoder_hidden_states");
        if (timestep.dim() != 1 || timestep.shape[0] != batch)
            throw new ArgumentException($"timestep must be [B={batch}], got {Shape(timestep)}.", nameof(timestep));
        foreach (var (t, name) in new[] { (originalSize, "original_size"), (targetSize, "target_size"), (cropCoords, "crop_coords") })
            if (t.dim() != 2 || t.shape[0] != batch || t.shape[1] != 2)
                throw new ArgumentException($"{name} must be [B={batch}, 2], got {Shape(t)}.", name);
        foreach (var (t, name) in new[] { (hidden, "hidden_states"), (text, "encoder_hidden_states") })
            if (!t.is_floating_point())
                throw new ArgumentException($"{name} must be a floating-point tensor, got {t.dtype}.", name);
    }
}
