using DiffusersSharp.IO;
using DiffusersSharp.Models.Layers;
using DiffusersSharp.Models.Transformers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.ControlNets;

/// <summary>
/// The SD3 / SD3.5 ControlNet (diffusers <c>SD3ControlNetModel</c>): the MMDiT's embeddings and first blocks, with the
/// control latents patchified by <c>pos_embed_input</c> and added to the image tokens; after every block a zero-initialised
/// linear (<c>controlnet_blocks</c>) gives a residual that <see cref="SD3Transformer2DModel.forward"/> adds to its image
/// stream. Configs without <c>joint_attention_dim</c> (SD3.5 ControlNets) have no text input and single-stream blocks.
/// Built from the transformer's own layers; state-dict keys equal the diffusers keys.
/// </summary>
public sealed class SD3ControlNetModel : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly PatchEmbed? pos_embed;
    private readonly CombinedTimestepTextProjEmbeddings time_text_embed;
    private readonly Linear? context_embedder;
    private readonly ModuleList<nn.Module> transformer_blocks;
    private readonly ModuleList<Linear> controlnet_blocks;
    private readonly PatchEmbed pos_embed_input;
#pragma warning restore IDE1006

    /// <summary>The configuration the model was built from.</summary>
    public SD3ControlNetModelConfig Config { get; }

    /// <summary>The element type of the weights (inputs are converted to it).</summary>
    public ScalarType Dtype => controlnet_blocks[0].weight!.dtype;

    /// <summary>The device of the weights.</summary>
    public Device Device => controlnet_blocks[0].weight!.device;

    /// <summary>Builds the model; on the <c>meta</c> device it holds shapes only (for counting or as a loading shell).</summary>
    /// <exception cref="ArgumentException">The config is invalid.</exception>
    public SD3ControlNetModel(SD3ControlNetModelConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(SD3ControlNetModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        int d = config.InnerDim;
        if (config.UsePosEmbed)
            pos_embed = new PatchEmbed(config.SampleSize, config.SampleSize, config.PatchSize, config.InChannels, d, config.PosEmbedMaxSize,
                device, dtype, positions: config.PosEmbedType is not null);
        time_text_embed = new CombinedTimestepTextProjEmbeddings(d, config.PooledProjectionDim, device, dtype);
        transformer_blocks = new ModuleList<nn.Module>();
        var dual = new HashSet<int>(config.DualAttentionLayers);
        if (config.JointAttentionDim is int joint)
        {
            context_embedder = new Linear(joint, config.CaptionProjectionDim, hasBias: true, device: device, dtype: dtype);
            for (int i = 0; i < config.NumLayers; i++)
                transformer_blocks.Add(new JointTransformerBlock(d, config.NumAttentionHeads, config.AttentionHeadDim, contextPreOnly: false,
                    qkRmsNorm: config.QkNorm == "rms_norm", useDualAttention: dual.Contains(i), device, dtype));
        }
        else
        {
            for (int i = 0; i < config.NumLayers; i++)
                transformer_blocks.Add(new SD3SingleTransformerBlock(d, config.NumAttentionHeads, config.AttentionHeadDim, device, dtype));
        }
        controlnet_blocks = new ModuleList<Linear>();
        for (int i = 0; i < config.NumLayers; i++)
            controlnet_blocks.Add(new Linear(d, d, hasBias: true, device: device, dtype: dtype));
        // No position table: diffusers builds pos_embed_input with pos_embed_type=None.
        pos_embed_input = new PatchEmbed(config.SampleSize, config.SampleSize, config.PatchSize,
            config.InChannels + config.ExtraConditioningChannels, d, posEmbedMaxSize: null, device, dtype, positions: false);
        RegisterComponents();
    }

    /// <summary>Loads a diffusers SD3 <c>controlnet</c> folder (config.json + safetensors) strictly: every key and shape must match.</summary>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="WeightLoadException">The weights do not match the config.</exception>
    public static SD3ControlNetModel FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<SD3ControlNetModelConfig, SD3ControlNetModel>(folder, (c, meta) => new SD3ControlNetModel(c, meta, dtype), dtype, device, variant);

    /// <summary>
    /// The residuals for the transformer's image stream, one [B, N, D] per block, each times
    /// <paramref name="conditioning_scale"/>. <paramref name="hidden_states"/> is the latent [B, in_channels, h, w] (tokens
    /// [B, N, D] when <c>use_pos_embed</c> is false), <paramref name="controlnet_cond"/> the control latents [B, in_channels +
    /// extra_conditioning_channels, h, w], <paramref name="encoder_hidden_states"/> the text [B, S, joint_attention_dim]
    /// (null, and required null, for ControlNets without <c>joint_attention_dim</c>), <paramref name="pooled_projections"/>
    /// [B, pooled_projection_dim] and <paramref name="timestep"/> [B] (a scalar or [1] is broadcast).
    /// </summary>
    /// <exception cref="ArgumentException">An input does not fit the config; thrown before any compute.</exception>
    public IReadOnlyList<Tensor> forward(Tensor hidden_states, Tensor controlnet_cond, double conditioning_scale, Tensor? encoder_hidden_states,
        Tensor pooled_projections, Tensor timestep)
    {
        Validate(hidden_states, controlnet_cond, encoder_hidden_states, pooled_projections, timestep);
        using var scope = torch.NewDisposeScope();
        var dtype = Dtype;
        long batch = hidden_states.shape[0];
        if (timestep.numel() == 1 && batch != 1) timestep = timestep.reshape(1).expand(batch);
        else if (timestep.dim() == 0) timestep = timestep.reshape(1);

        var x = pos_embed is not null ? pos_embed.forward(hidden_states.to(dtype)) : hidden_states.to(dtype);
        var temb = time_text_embed.forward(timestep, pooled_projections.to(dtype));
        var context = context_embedder?.forward(encoder_hidden_states!.to(dtype));
        x = x + pos_embed_input.forward(controlnet_cond.to(dtype));

        var results = new List<Tensor>(transformer_blocks.Count);
        for (int i = 0; i < transformer_blocks.Count; i++)
        {
            if (transformer_blocks[i] is JointTransformerBlock jointBlock)
            {
                var (newContext, newX) = jointBlock.forward(x, context!, temb);
                (context, x) = (newContext, newX);
            }
            else x = ((SD3SingleTransformerBlock)transformer_blocks[i]).forward(x, temb);
            var residual = controlnet_blocks[i].forward(x) * conditioning_scale;
            results.Add(residual.MoveToOuterDisposeScope());
        }
        return results;
    }

    private void Validate(Tensor hidden, Tensor cond, Tensor? text, Tensor pooled, Tensor timestep)
    {
        ArgumentNullException.ThrowIfNull(hidden);
        ArgumentNullException.ThrowIfNull(cond);
        ArgumentNullException.ThrowIfNull(pooled);
        ArgumentNullException.ThrowIfNull(timestep);
        static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";
        if (pos_embed is not null) pos_embed.Validate(hidden.shape, "hidden_states");
        else if (hidden.dim() != 3 || hidden.shape[2] != Config.InnerDim)
            throw new ArgumentException($"hidden_states must be tokens [B, N, {Config.InnerDim}] when use_pos_embed is false, got {Shape(hidden)}.", "hidden_states");
        pos_embed_input.Validate(cond.shape, "controlnet_cond");
        long batch = hidden.shape[0];
        if (cond.shape[0] != batch)
            throw new ArgumentException($"controlnet_cond has batch {cond.shape[0]}, hidden_states {batch}.", "controlnet_cond");
        if (Config.JointAttentionDim is int joint)
        {
            if (text is null)
                throw new ArgumentException("encoder_hidden_states must be given: this ControlNet has a context_embedder.", "encoder_hidden_states");
            if (text.dim() != 3 || text.shape[0] != batch || text.shape[2] != joint)
                throw new ArgumentException($"encoder_hidden_states must be [B={batch}, S, {joint}] (joint_attention_dim), got {Shape(text)}.", "encoder_hidden_states");
        }
        else if (text is not null)
            throw new ArgumentException("encoder_hidden_states must be null: this ControlNet has no context_embedder (joint_attention_dim is null).", "encoder_hidden_states");
        if (pooled.dim() != 2 || pooled.shape[0] != batch || pooled.shape[1] != Config.PooledProjectionDim)
            throw new ArgumentException($"pooled_projections must be [B={batch}, {Config.PooledProjectionDim}] (pooled_projection_dim), got {Shape(pooled)}.", "pooled_projections");
        if (timestep.dim() > 1 || (timestep.numel() != batch && timestep.numel() != 1))
            throw new ArgumentException($"timestep must be a scalar, [1] or [B={batch}], got {Shape(timestep)}.", nameof(timestep));
    }
}
