using DiffusersSharp.IO;
using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// Chroma's rectified-flow transformer (diffusers <c>ChromaTransformer2DModel</c>; lodestones/Chroma1-HD, Chroma1-Base):
/// FLUX.1-schnell's double- and single-stream blocks without their modulation layers. One approximator
/// (<c>distilled_guidance_layer</c>) maps the timestep, a zero guidance and each modulation index to all the blocks'
/// shift / scale / gate vectors at once, which the model slices per block: the first 3 × num_single_layers for the
/// single-stream blocks, then 6 per double-stream block for the image stream, 6 per double-stream block for the text
/// stream, and the last 2 (shift, scale) for the output norm. No pooled text: T5 tokens only, under an attention mask
/// over the joint sequence (text first, then image). The double-stream blocks are <see cref="FluxTransformerBlock"/>
/// and the single-stream blocks <see cref="FluxSingleTransformerBlock"/>, built pruned (diffusers'
/// <c>ChromaTransformerBlock</c> / <c>ChromaSingleTransformerBlock</c>). State-dict keys equal the diffusers keys.
/// </summary>
public sealed class ChromaTransformer2DModel : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly FluxPosEmbed pos_embed;
    private readonly ChromaCombinedTimestepTextProjEmbeddings time_text_embed;
    private readonly ChromaApproximator distilled_guidance_layer;
    private readonly Linear context_embedder;
    private readonly Linear x_embedder;
    private readonly ModuleList<FluxTransformerBlock> transformer_blocks;
    private readonly ModuleList<FluxSingleTransformerBlock> single_transformer_blocks;
    private readonly Linear proj_out;
#pragma warning restore IDE1006
    // norm_out (diffusers' ChromaAdaLayerNormContinuousPruned) has no parameters: AdaLayerNormContinuous.Pruned.

    /// <summary>The configuration the model was built from.</summary>
    public ChromaTransformer2DModelConfig Config { get; }

    /// <summary>The element type of the weights (inputs are converted to it).</summary>
    public ScalarType Dtype => proj_out.weight!.dtype;

    /// <summary>The device of the weights.</summary>
    public Device Device => proj_out.weight!.device;

    /// <summary>Builds the model; on the <c>meta</c> device it holds shapes only (for counting or as a loading shell).</summary>
    /// <exception cref="ArgumentException">The config is invalid.</exception>
    public ChromaTransformer2DModel(ChromaTransformer2DModelConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(ChromaTransformer2DModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        int d = config.InnerDim;
        pos_embed = new FluxPosEmbed(10000, config.AxesDimsRope);
        time_text_embed = new ChromaCombinedTimestepTextProjEmbeddings(config.ApproximatorNumChannels / 4, config.ModulationCount);
        distilled_guidance_layer = new ChromaApproximator(config.ApproximatorNumChannels, d, config.ApproximatorHiddenDim, config.ApproximatorLayers, device, dtype);
        context_embedder = new Linear(config.JointAttentionDim, d, hasBias: true, device: device, dtype: dtype);
        x_embedder = new Linear(config.InChannels, d, hasBias: true, device: device, dtype: dtype);
        transformer_blocks = new ModuleList<FluxTransformerBlock>();
        for (int i = 0; i < config.NumLayers; i++)
            transformer_blocks.Add(new FluxTransformerBlock(d, config.NumAttentionHeads, config.AttentionHeadDim, device, dtype, pruned: true));
        single_transformer_blocks = new ModuleList<FluxSingleTransformerBlock>();
        for (int i = 0; i < config.NumSingleLayers; i++)
            single_transformer_blocks.Add(new FluxSingleTransformerBlock(d, config.NumAttentionHeads, config.AttentionHeadDim, device: device, dtype: dtype, pruned: true));
        proj_out = new Linear(d, (long)config.PatchSize * config.PatchSize * config.OutChannelsOrIn, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Loads a diffusers <c>transformer</c> folder (config.json + safetensors, single or sharded), strictly: every key
    /// and shape must match. <paramref name="dtype"/> converts floating weights (null keeps the stored type).
    /// </summary>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="WeightLoadException">The weights do not match the config.</exception>
    public static ChromaTransformer2DModel FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<ChromaTransformer2DModelConfig, ChromaTransformer2DModel>(folder, (c, meta) => new ChromaTransformer2DModel(c, meta, dtype), dtype, device, variant);

    /// <summary>
    /// Predicts the flow-matching velocity of the packed latent tokens <paramref name="hidden_states"/> [B, S_img,
    /// in_channels] for the T5 text <paramref name="encoder_hidden_states"/> [B, S_txt, joint_attention_dim] and
    /// <paramref name="timestep"/> [B] (σ, the scheduler's timestep / 1000, as the pipeline passes it; converted to the
    /// model dtype and ×1000 inside as in diffusers; a scalar or [1] is broadcast). <paramref name="img_ids"/> [S_img, 3]
    /// and <paramref name="txt_ids"/> [S_txt, 3] are the rotary positions. <paramref name="attention_mask"/> [B, S_txt +
    /// S_img] (text first; null: none) becomes diffusers' pairwise mask <c>m[:, None, None, :] · m[:, None, :, None]</c>
    /// in every block's attention: a bool mask masks the false pairs, a floating one (what diffusers' Chroma pipelines
    /// build: 1 for kept tokens, 0 for masked ones) is added to the attention logits as scaled_dot_product_attention
    /// takes float masks. Returns [B, S_img, patch² × out_channels] in the model dtype.
    /// </summary>
    /// <exception cref="ArgumentException">An input has the wrong rank, size, batch or type; thrown before any compute.</exception>
    public Tensor forward(Tensor hidden_states, Tensor encoder_hidden_states, Tensor timestep, Tensor img_ids, Tensor txt_ids,
        Tensor? attention_mask = null)
    {
        ValidateInputs(hidden_states, encoder_hidden_states, timestep, img_ids, txt_ids, attention_mask);
        using var scope = torch.NewDisposeScope();
        var dtype = Dtype;
        long batch = hidden_states.shape[0];
        int singles = single_transformer_blocks.Count, doubles = transformer_blocks.Count;

        var x = x_embedder.forward(hidden_states.to(dtype));
        var t = (timestep.numel() == 1 ? timestep.reshape(1).expand(batch) : timestep).to(x.dtype) * 1000;
        var pooledTemb = distilled_guidance_layer.forward(time_text_embed.forward(t)); // [B, modulation count, D]
        var context = context_embedder.forward(encoder_hidden_states.to(dtype));

        var ids = torch.cat([txt_ids.to(x.device), img_ids.to(x.device)], 0);
        var rotary = pos_embed.forward(ids);
        Tensor? mask = null;
        if (attention_mask is not null)
        {
            var m = attention_mask.to(x.device);
            var (keys, queries) = (m.unsqueeze(1).unsqueeze(1), m.unsqueeze(1).unsqueeze(-1));
            mask = m.dtype == ScalarType.Bool ? keys.logical_and(queries) : keys * queries;
        }

        int imageOffset = 3 * singles, textOffset = imageOffset + 6 * doubles;
        for (int i = 0; i < doubles; i++)
        {
            var block = transformer_blocks[i];
            var temb = torch.cat([pooledTemb.narrow(1, imageOffset + 6 * i, 6), pooledTemb.narrow(1, textOffset + 6 * i, 6)], 1);
            (context, x) = Temporaries.RunStreams(() => block.forward(x, context, temb, rotary, attentionMask: mask), context, x);
        }
        for (int i = 0; i < singles; i++)
        {
            var block = single_transformer_blocks[i];
            var temb = pooledTemb.narrow(1, 3 * i, 3);
            (context, x) = Temporaries.RunStreams(() => block.forward(x, context, temb, rotary, mask), context, x);
        }

        var output = proj_out.forward(AdaLayerNormContinuous.Pruned(x, pooledTemb.narrow(1, pooledTemb.shape[1] - 2, 2)));
        return output.MoveToOuterDisposeScope();
    }

    private void ValidateInputs(Tensor hidden, Tensor text, Tensor timestep, Tensor imgIds, Tensor txtIds, Tensor? mask)
    {
        ArgumentNullException.ThrowIfNull(hidden);
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(timestep);
        ArgumentNullException.ThrowIfNull(imgIds);
        ArgumentNullException.ThrowIfNull(txtIds);
        var c = Config;
        static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";
        if (hidden.dim() != 3 || hidden.shape[2] != c.InChannels || hidden.shape[1] < 1)
            throw new ArgumentException($"hidden_states must be packed latent tokens [B, S_img, {c.InChannels}] (in_channels), got {Shape(hidden)}.", "hidden_states");
        long batch = hidden.shape[0], imageTokens = hidden.shape[1];
        if (text.dim() != 3 || text.shape[0] != batch || text.shape[2] != c.JointAttentionDim || text.shape[1] < 1)
            throw new ArgumentException($"encoder_hidden_states must be [B={batch}, S_txt, {c.JointAttentionDim}] (joint_attention_dim), got {Shape(text)}.", "encoder_hidden_states");
        if (timestep.dim() > 1 || (timestep.numel() != batch && timestep.numel() != 1))
            throw new ArgumentException($"timestep must be a scalar, [1] or [B={batch}], got {Shape(timestep)}.", nameof(timestep));
        int axes = c.AxesDimsRope.Length;
        if (imgIds.dim() != 2 || imgIds.shape[0] != imageTokens || imgIds.shape[1] != axes)
            throw new ArgumentException($"img_ids must be [S_img={imageTokens}, {axes}], got {Shape(imgIds)}.", "img_ids");
        if (txtIds.dim() != 2 || txtIds.shape[0] != text.shape[1] || txtIds.shape[1] != axes)
            throw new ArgumentException($"txt_ids must be [S_txt={text.shape[1]}, {axes}], got {Shape(txtIds)}.", "txt_ids");
        if (mask is not null)
        {
            if (mask.dim() != 2 || mask.shape[0] != batch || mask.shape[1] != text.shape[1] + imageTokens)
                throw new ArgumentException($"attention_mask must be [B={batch}, S_txt + S_img = {text.shape[1] + imageTokens}] (text tokens first), got {Shape(mask)}.", "attention_mask");
            if (mask.dtype != ScalarType.Bool && !mask.is_floating_point())
                throw new ArgumentException($"attention_mask must be bool (masking) or floating (added to the attention logits, as diffusers' Chroma pipelines pass it), got {mask.dtype}.", "attention_mask");
        }
        foreach (var (tensor, name) in new[] { (hidden, "hidden_states"), (text, "encoder_hidden_states") })
            if (!tensor.is_floating_point())
                throw new ArgumentException($"{name} must be a floating-point tensor, got {tensor.dtype}.", name);
    }
}
