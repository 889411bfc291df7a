using DiffusersSharp.IO;
using DiffusersSharp.Models.Layers;
using DiffusersSharp.Models.Transformers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.ControlNets;

/// <summary>
/// <c>controlnet/config.json</c> of <c>FluxControlNetModel</c>: the Flux transformer's fields (defaults as diffusers'
/// constructor) plus the ControlNet-Union mode count and the XLabs conditioning channels, both refused for now.
/// </summary>
public sealed record FluxControlNetModelConfig
{
    /// <summary>Patch side (1: the pipeline packs the latents itself).</summary>
    public int PatchSize { get; init; } = 1;

    /// <summary>Channels of a packed token (16 latent channels × 2 × 2).</summary>
    public int InChannels { get; init; } = 64;

    /// <summary>Number of double-stream blocks (each gives one residual).</summary>
    public int NumLayers { get; init; } = 19;

    /// <summary>Number of single-stream blocks (each gives one residual).</summary>
    public int NumSingleLayers { get; init; } = 38;

    /// <summary>Width of one attention head.</summary>
    public int AttentionHeadDim { get; init; } = 128;

    /// <summary>Number of attention heads.</summary>
    public int NumAttentionHeads { get; init; } = 24;

    /// <summary>Width of the text-encoder sequence (T5 d_model).</summary>
    public int JointAttentionDim { get; init; } = 4096;

    /// <summary>Width of the pooled text embedding (CLIP-L).</summary>
    public int PooledProjectionDim { get; init; } = 768;

    /// <summary>Whether the ControlNet embeds the guidance scale.</summary>
    public bool GuidanceEmbeds { get; init; }

    /// <summary>Rotary widths of the three position axes.</summary>
    public int[] AxesDimsRope { get; init; } = [16, 56, 56];

    /// <summary>ControlNet-Union's number of control modes (null: a plain ControlNet). Not supported yet.</summary>
    public int? NumMode { get; init; }

    /// <summary>XLabs ControlNets' pixel-space conditioning channels (null: VAE-latent control). Not supported yet.</summary>
    public int? ConditioningEmbeddingChannels { get; init; }

    /// <summary>Inner width: heads × head dim.</summary>
    [System.Text.Json.Serialization.JsonIgnore]
    public int InnerDim => NumAttentionHeads * AttentionHeadDim;

    /// <summary>The transformer config whose layers this ControlNet reuses.</summary>
    public FluxTransformer2DModelConfig AsTransformerConfig() => new()
    {
        PatchSize = PatchSize, InChannels = InChannels, NumLayers = NumLayers, NumSingleLayers = NumSingleLayers,
        AttentionHeadDim = AttentionHeadDim, NumAttentionHeads = NumAttentionHeads, JointAttentionDim = JointAttentionDim,
        PooledProjectionDim = PooledProjectionDim, GuidanceEmbeds = GuidanceEmbeds, AxesDimsRope = AxesDimsRope,
    };

    /// <summary>Checks that the values make a buildable, supported model.</summary>
    /// <exception cref="ArgumentException">A field is out of range or names an unsupported kind.</exception>
    /// <exception cref="NotSupportedException">A ControlNet-Union (num_mode) or XLabs (conditioning_embedding_channels) config.</exception>
    public void Validate()
    {
        AsTransformerConfig().Validate();
        if (NumMode is not null)
            throw new NotSupportedException($"Flux ControlNet-Union (num_mode {NumMode}) is not supported yet: only plain Flux ControlNets (InstantX kind) run.");
        if (ConditioningEmbeddingChannels is not null)
            throw new NotSupportedException("XLabs Flux ControlNets (conditioning_embedding_channels, input_hint_block) are not supported yet: only plain Flux ControlNets (InstantX kind) run.");
    }
}

/// <summary>
/// The Flux.1 ControlNet (diffusers <c>FluxControlNetModel</c>, the InstantX kind): the Flux transformer's embeddings and
/// first double- and single-stream blocks, with the packed control latents projected by <c>controlnet_x_embedder</c> and
/// added to the image tokens; after each block a zero-initialised linear (<c>controlnet_blocks</c> /
/// <c>controlnet_single_blocks</c>) gives a residual that <see cref="FluxTransformer2DModel.forward"/> adds to its image
/// stream. Built from the transformer's own layers; state-dict keys equal the diffusers keys.
/// </summary>
public sealed class FluxControlNetModel : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly FluxPosEmbed pos_embed;
    private readonly CombinedTimestepTextProjEmbeddings time_text_embed;
    private readonly Linear context_embedder;
    private readonly Linear x_embedder;
    private readonly ModuleList<FluxTransformerBlock> transformer_blocks;
    private readonly ModuleList<FluxSingleTransformerBlock> single_transformer_blocks;
    private readonly ModuleList<Linear> controlnet_blocks;
    private readonly ModuleList<Linear> controlnet_single_blocks;
    private readonly Linear controlnet_x_embedder;
#pragma warning restore IDE1006

    /// <summary>The configuration the model was built from.</summary>
    public FluxControlNetModelConfig Config { get; }

    /// <summary>The element type of the weights (inputs are converted to it).</summary>
    public ScalarType Dtype => controlnet_x_embedder.weight!.dtype;

    /// <summary>The device of the weights.</summary>
    public Device Device => controlnet_x_embedder.weight!.device;

    /// <summary>Builds the model; on the <c>meta</c> device it holds shapes only (for counting or as a loading shell).</summary>
    /// <exception cref="ArgumentException">The config is invalid.</exception>
    /// <exception cref="NotSupportedException">The config is a ControlNet-Union or XLabs one.</exception>
    public FluxControlNetModel(FluxControlNetModelConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(FluxControlNetModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        int d = config.InnerDim;
        pos_embed = new FluxPosEmbed(10000, config.AxesDimsRope);
        time_text_embed = new CombinedTimestepTextProjEmbeddings(d, config.PooledProjectionDim, device, dtype, withGuidance: config.GuidanceEmbeds);
        context_embedder = new Linear(config.JointAttentionDim, d, hasBias: true, device: device, dtype: dtype);
        x_embedder = new Linear(config.InChannels, d, hasBias: true, device: device, dtype: dtype);
        transformer_blocks = new ModuleList<FluxTransformerBlock>();
        controlnet_blocks = new ModuleList<Linear>();
        for (int i = 0; i < config.NumLayers; i++)
        {
            transformer_blocks.Add(new FluxTransformerBlock(d, config.NumAttentionHeads, config.AttentionHeadDim, device, dtype));
            controlnet_blocks.Add(new Linear(d, d, hasBias: true, device: device, dtype: dtype));
        }
        single_transformer_blocks = new ModuleList<FluxSingleTransformerBlock>();
        controlnet_single_blocks = new ModuleList<Linear>();
        for (int i = 0; i < config.NumSingleLayers; i++)
        {
            single_transformer_blocks.Add(new FluxSingleTransformerBlock(d, config.NumAttentionHeads, config.AttentionHeadDim, device: device, dtype: dtype));
            controlnet_single_blocks.Add(new Linear(d, d, hasBias: true, device: device, dtype: dtype));
        }
        controlnet_x_embedder = new Linear(config.InChannels, d, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Loads a diffusers Flux <c>controlnet</c> folder (config.json + safetensors) strictly: every key and shape must match.</summary>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="WeightLoadException">The weights do not match the config.</exception>
    public static FluxControlNetModel FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<FluxControlNetModelConfig, FluxControlNetModel>(folder, (c, meta) => new FluxControlNetModel(c, meta, dtype), dtype, device, variant);

    /// <summary>
    /// The residuals for the transformer's image stream: one [B, S_img, D] per double-stream block and one per
    /// single-stream block, each times <paramref name="conditioning_scale"/>. <paramref name="controlnet_cond"/> is the
    /// packed control latents [B, S_img, in_channels]; the other inputs are those of
    /// <see cref="FluxTransformer2DModel.forward"/> (<paramref name="guidance"/> exactly when this ControlNet has
    /// guidance_embeds).
    /// </summary>
    /// <exception cref="ArgumentException">An input does not fit the config; thrown before any compute.</exception>
    public (IReadOnlyList<Tensor> BlockSamples, IReadOnlyList<Tensor> SingleBlockSamples) forward(Tensor hidden_states, Tensor controlnet_cond,
        double conditioning_scale, Tensor encoder_hidden_states, Tensor pooled_projections, Tensor timestep, Tensor img_ids, Tensor txt_ids,
        Tensor? guidance = null)
    {
        ArgumentNullException.ThrowIfNull(controlnet_cond);
        FluxTransformer2DModel.ValidateInputs(Config.AsTransformerConfig(), hidden_states, encoder_hidden_states, pooled_projections, timestep,
            img_ids, txt_ids, guidance);
        if (!controlnet_cond.shape.SequenceEqual(hidden_states.shape))
            throw new ArgumentException($"controlnet_cond must be packed control latents of hidden_states' shape [{string.Join(", ", hidden_states.shape)}], got [{string.Join(", ", controlnet_cond.shape)}].", nameof(controlnet_cond));
        if (!double.IsFinite(conditioning_scale))
            throw new ArgumentException($"conditioning_scale must be a finite number, got {conditioning_scale}.", nameof(conditioning_scale));
        using var scope = torch.NewDisposeScope();
        var dtype = Dtype;
        long batch = hidden_states.shape[0];
        Tensor Batched(Tensor t) => t.numel() == 1 ? t.reshape(1).expand(batch) : t;

        var x = x_embedder.forward(hidden_states.to(dtype)) + controlnet_x_embedder.forward(controlnet_cond.to(dtype));
        var t = Batched(timestep).to(x.dtype) * 1000;
        var pooled = pooled_projections.to(dtype);
        var temb = guidance is null
            ? time_text_embed.forward(t, pooled)
            : time_text_embed.forward(t, Batched(guidance).to(x.dtype) * 1000, pooled);
        var context = context_embedder.forward(encoder_hidden_states.to(dtype));
        var rotary = pos_embed.forward(torch.cat([txt_ids.to(x.device), img_ids.to(x.device)], 0));

        // diffusers keeps every block's image stream, then projects each and scales all of them.
        var blockSamples = new List<Tensor>(transformer_blocks.Count);
        for (int i = 0; i < transformer_blocks.Count; i++)
        {
            (context, x) = transformer_blocks[i].forward(x, context, temb, rotary);
            blockSamples.Add((controlnet_blocks[i].forward(x) * conditioning_scale).MoveToOuterDisposeScope());
        }
        var singleSamples = new List<Tensor>(single_transformer_blocks.Count);
        for (int i = 0; i < single_transformer_blocks.Count; i++)
        {
            (context, x) = single_transformer_blocks[i].forward(x, context, temb, rotary);
            singleSamples.Add((controlnet_single_blocks[i].forward(x) * conditioning_scale).MoveToOuterDisposeScope());
        }
        return (blockSamples, singleSamples);
    }
}
