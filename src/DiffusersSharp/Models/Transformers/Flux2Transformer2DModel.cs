using DiffusersSharp.IO;
using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// The FLUX.2 rectified-flow transformer (diffusers <c>Flux2Transformer2DModel</c>, FLUX.2 [dev] and [klein]): packed
/// latent tokens (<c>x_embedder</c>) and text-encoder tokens (<c>context_embedder</c>) run through <c>num_layers</c>
/// double-stream and <c>num_single_layers</c> single-stream (parallel attention + MLP) blocks. Unlike Flux.1 the blocks
/// share three modulations computed once per forward from the timestep (+ the guidance scale for guidance-distilled
/// [dev]) embedding, every projection is bias-free, the feed-forwards are SwiGLU, and the rotary positions have four axes
/// (t, h, w, l; base 2000) over the joint sequence (text first). An adaptive norm and a projection give the velocity per
/// image token. State-dict keys equal the diffusers keys.
/// <para>
/// <see cref="Forward"/> is diffusers' standard forward (reference-image tokens simply appended to the image tokens with
/// their own position ids, as Flux2KleinPipeline does). <see cref="ForwardKVExtract"/> and <see cref="ForwardKVCached"/>
/// are its <c>kv_cache_mode</c> "extract" / "cached" with the KV processors (<c>Flux2KVAttnProcessor</c>,
/// <c>Flux2KVParallelSelfAttnProcessor</c>) that Flux2KleinKVPipeline sets: the reference tokens' keys and values computed
/// once and reused. LoRA scaling (<c>joint_attention_kwargs</c>) and gradient checkpointing are not built.
/// </para>
/// <para>
/// diffusers' <c>Flux2PosEmbed</c> is <see cref="FluxPosEmbed"/> here (the same <c>get_1d_rotary_pos_embed</c> per axis,
/// theta <c>rope_theta</c>): it loops over the configured axes, and the position ids' batch dimension is dropped
/// (<c>ids[0]</c>) as diffusers does.
/// </para>
/// </summary>
public sealed class Flux2Transformer2DModel : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly FluxPosEmbed pos_embed;
    private readonly Flux2TimestepGuidanceEmbeddings time_guidance_embed;
    private readonly Flux2Modulation double_stream_modulation_img;
    private readonly Flux2Modulation double_stream_modulation_txt;
    private readonly Flux2Modulation single_stream_modulation;
    private readonly Linear x_embedder;
    private readonly Linear context_embedder;
    private readonly ModuleList<Flux2TransformerBlock> transformer_blocks;
    private readonly ModuleList<Flux2SingleTransformerBlock> single_transformer_blocks;
    private readonly AdaLayerNormContinuous norm_out;
    private readonly Linear proj_out;
#pragma warning restore IDE1006

    /// <summary>The configuration the model was built from.</summary>
    public Flux2Transformer2DModelConfig Config { get; }

    /// <summary>The element type of the weights (inputs are converted to it).</summary>
    public ScalarType Dtype => proj_out.weight!.dtype;

    /// <summary>The device of the weights (inputs are moved to it).</summary>
    public Device Device => proj_out.weight!.device;

    /// <summary>Builds the model; on the <c>meta</c> device it holds shapes only (for counting or as a loading shell).</summary>
    /// <exception cref="ArgumentException">The config is invalid.</exception>
    public Flux2Transformer2DModel(Flux2Transformer2DModelConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(Flux2Transformer2DModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        int d = config.InnerDim;
        pos_embed = new FluxPosEmbed(config.RopeTheta, config.AxesDimsRope);
        time_guidance_embed = new Flux2TimestepGuidanceEmbeddings(config.TimestepGuidanceChannels, d, bias: false,
            guidanceEmbeds: config.GuidanceEmbeds, device: device, dtype: dtype);
        double_stream_modulation_img = new Flux2Modulation(d, modParamSets: 2, bias: false, device, dtype);
        double_stream_modulation_txt = new Flux2Modulation(d, modParamSets: 2, bias: false, device, dtype);
        single_stream_modulation = new Flux2Modulation(d, modParamSets: 1, bias: false, device, dtype);
        x_embedder = new Linear(config.InChannels, d, hasBias: false, device: device, dtype: dtype);
        context_embedder = new Linear(config.JointAttentionDim, d, hasBias: false, device: device, dtype: dtype);
        transformer_blocks = new ModuleList<Flux2TransformerBlock>();
        for (int i = 0; i < config.NumLayers; i++)
            transformer_blocks.Add(new Flux2TransformerBlock(d, config.NumAttentionHeads, config.AttentionHeadDim, config.MlpRatio, config.Eps,
                bias: false, device, dtype));
        single_transformer_blocks = new ModuleList<Flux2SingleTransformerBlock>();
        for (int i = 0; i < config.NumSingleLayers; i++)
            single_transformer_blocks.Add(new Flux2SingleTransformerBlock(d, config.NumAttentionHeads, config.AttentionHeadDim, config.MlpRatio,
                config.Eps, bias: false, device, dtype));
        norm_out = new AdaLayerNormContinuous(d, d, eps: config.Eps, bias: false, device: device, dtype: dtype);
        proj_out = new Linear(d, (long)config.PatchSize * config.PatchSize * config.OutChannelsOrIn, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Loads a diffusers <c>transformer</c> folder (config.json + safetensors, single or sharded), strictly: every key
    /// and shape must match. <paramref name="dtype"/> converts floating weights (null keeps the stored type).
    /// </summary>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="WeightLoadException">The weights do not match the config.</exception>
    public static Flux2Transformer2DModel FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<Flux2Transformer2DModelConfig, Flux2Transformer2DModel>(folder, (c, meta) => new Flux2Transformer2DModel(c, meta, dtype), dtype, device, variant);

    /// <summary>
    /// diffusers' standard forward: predicts the flow-matching velocity of the packed latent tokens
    /// <paramref name="hiddenStates"/> [B, N, in_channels] (the image's tokens, then any reference-image tokens, as
    /// Flux2KleinPipeline concatenates them) for the text <paramref name="encoderHiddenStates"/> [B, L,
    /// joint_attention_dim] and <paramref name="timestep"/> [B] (σ, i.e. the scheduler's timestep / 1000, as the
    /// pipelines pass it; ×1000 inside in the model dtype, as diffusers does; a scalar or [1] is broadcast).
    /// <paramref name="imgIds"/> [N, A] or [B, N, A] and <paramref name="txtIds"/> [L, A] or [B, L, A] are the position ids
    /// (A ≥ the number of rotary axes, 4 for FLUX.2: t, h, w, l; only the first A axes are read); with a batch dimension
    /// only the first row is used, as diffusers' <c>ids[0]</c> does. <paramref name="guidance"/> [B] (the guidance scale,
    /// ×1000 inside) is required exactly when the config has guidance_embeds (FLUX.2 [dev]; diffusers would silently run
    /// without it, or ignore it on [klein]). Returns [B, N, patch² × out_channels] in the model dtype, reference tokens
    /// included (the pipeline keeps the first tokens).
    /// </summary>
    /// <exception cref="ArgumentException">An input has the wrong rank, size, batch or type, or guidance is missing / not
    /// expected; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked before each block).</exception>
    public Tensor Forward(Tensor hiddenStates, Tensor encoderHiddenStates, Tensor timestep, Tensor imgIds, Tensor txtIds, Tensor? guidance = null,
        CancellationToken cancellationToken = default)
    {
        ValidateInputs(hiddenStates, encoderHiddenStates, timestep, imgIds, txtIds, guidance);
        return Run(hiddenStates, encoderHiddenStates, timestep, imgIds, txtIds, guidance, null, 0, 0, false, cancellationToken);
    }

    /// <summary>
    /// diffusers' forward with <c>kv_cache_mode="extract"</c> (Flux2KleinKVPipeline's first step):
    /// <paramref name="hiddenStates"/> [B, R + N, in_channels] are the <paramref name="numRefTokens"/> = R reference-image
    /// tokens <b>first</b>, then the N noisy image tokens, with <paramref name="imgIds"/> in that order. The reference
    /// tokens are modulated with the embedding of the fixed timestep <paramref name="refFixedTimestep"/> (σ, ×1000 inside;
    /// diffusers' default 0) in the double- and single-stream blocks; they attend only to themselves while the text and
    /// image tokens attend to everything; every block's reference keys and values (after norm and rotary) go into a new
    /// cache. Returns the velocity of the N image tokens [B, N, patch² × out_channels] and that cache (the caller disposes
    /// it). Other inputs as <see cref="Forward"/>.
    /// </summary>
    /// <exception cref="ArgumentException">An input is invalid, or <paramref name="numRefTokens"/> is not in [1, R + N − 1];
    /// thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked before each block).</exception>
    public (Tensor Sample, Flux2KVCache KVCache) ForwardKVExtract(Tensor hiddenStates, Tensor encoderHiddenStates, Tensor timestep, Tensor imgIds,
        Tensor txtIds, int numRefTokens, double refFixedTimestep = 0.0, Tensor? guidance = null, CancellationToken cancellationToken = default)
    {
        ValidateInputs(hiddenStates, encoderHiddenStates, timestep, imgIds, txtIds, guidance);
        if (numRefTokens < 1 || numRefTokens >= hiddenStates.shape[1])
            throw new ArgumentException($"num_ref_tokens must be in [1, {hiddenStates.shape[1] - 1}] (reference tokens first, then at least one image token), got {numRefTokens}.", nameof(numRefTokens));
        if (!double.IsFinite(refFixedTimestep))
            throw new ArgumentException($"ref_fixed_timestep must be a finite number, got {refFixedTimestep}.", nameof(refFixedTimestep));
        var cache = new Flux2KVCache(Config.NumLayers, Config.NumSingleLayers) { NumRefTokens = numRefTokens };
        try
        {
            return (Run(hiddenStates, encoderHiddenStates, timestep, imgIds, txtIds, guidance, cache, numRefTokens, refFixedTimestep, true, cancellationToken), cache);
        }
        catch
        {
            cache.Dispose();
            throw;
        }
    }

    /// <summary>
    /// diffusers' forward with <c>kv_cache_mode="cached"</c> (Flux2KleinKVPipeline's later steps): only the image tokens
    /// <paramref name="hiddenStates"/> [B, N, in_channels] (no reference tokens; <paramref name="imgIds"/> theirs) go
    /// through the blocks, and every block's attention also attends to the reference keys and values of
    /// <paramref name="kvCache"/> (from <see cref="ForwardKVExtract"/> with the same batch), put between the text and the
    /// image tokens. Returns [B, N, patch² × out_channels]. Other inputs as <see cref="Forward"/>.
    /// </summary>
    /// <exception cref="ArgumentException">An input is invalid, or the cache is not a filled one of this model for this
    /// batch; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled (checked before each block).</exception>
    public Tensor ForwardKVCached(Tensor hiddenStates, Tensor encoderHiddenStates, Tensor timestep, Tensor imgIds, Tensor txtIds, Flux2KVCache kvCache,
        Tensor? guidance = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(kvCache);
        ValidateInputs(hiddenStates, encoderHiddenStates, timestep, imgIds, txtIds, guidance);
        if (kvCache.DoubleBlockCaches.Count != Config.NumLayers || kvCache.SingleBlockCaches.Count != Config.NumSingleLayers)
            throw new ArgumentException($"The KV cache has {kvCache.DoubleBlockCaches.Count} double- and {kvCache.SingleBlockCaches.Count} single-stream layers; this model has {Config.NumLayers} and {Config.NumSingleLayers}.", nameof(kvCache));
        if (!kvCache.IsPopulated || kvCache.NumRefTokens < 1)
            throw new ArgumentException("The KV cache is empty (cleared, or not filled by ForwardKVExtract).", nameof(kvCache));
        long[] expected = [hiddenStates.shape[0], Config.NumAttentionHeads, kvCache.NumRefTokens, Config.AttentionHeadDim];
        foreach (var layer in kvCache.DoubleBlockCaches.Concat(kvCache.SingleBlockCaches))
            if (!layer.KRef!.shape.SequenceEqual(expected) || !layer.VRef!.shape.SequenceEqual(expected) || layer.KRef.dtype != Dtype)
                throw new ArgumentException($"The KV cache holds [{string.Join(", ", layer.KRef.shape)}] {layer.KRef.dtype} keys; this model and batch need [{string.Join(", ", expected)}] {Dtype}.", nameof(kvCache));
        return Run(hiddenStates, encoderHiddenStates, timestep, imgIds, txtIds, guidance, kvCache, kvCache.NumRefTokens, 0, false, cancellationToken);
    }

    /// <summary>
    /// The forward of all three modes: standard (<paramref name="cache"/> null), extract (<paramref name="extract"/>:
    /// [reference; image] tokens, fills the cache) or cached (the cache's reference keys and values attended to).
    /// </summary>
    private Tensor Run(Tensor hiddenStates, Tensor encoderHiddenStates, Tensor timestep, Tensor imgIds, Tensor txtIds, Tensor? guidance,
        Flux2KVCache? cache, long refTokens, double refFixedTimestep, bool extract, CancellationToken cancellationToken)
    {
        using var scope = NewDisposeScope();
        var dtype = Dtype;
        var device = Device;
        long batch = hiddenStates.shape[0], textTokens = encoderHiddenStates.shape[1], imageTokens = hiddenStates.shape[1];
        Tensor Batched(Tensor t) => (t.numel() == 1 ? t.reshape(1).expand(batch) : t).to(device);

        // 1. Timestep (+ guidance) embedding and the three shared modulations. diffusers scales by 1000 in the model dtype.
        var scaledTimestep = Batched(timestep).to(dtype) * 1000;
        var scaledGuidance = guidance is null ? null : Batched(guidance).to(dtype) * 1000;
        var temb = time_guidance_embed.forward(scaledTimestep, scaledGuidance);
        var modImg = double_stream_modulation_img.forward(temb);
        var modTxt = double_stream_modulation_txt.forward(temb);
        var modSingle = single_stream_modulation.forward(temb);
        Tensor? refModSingle = null;
        if (extract)
        {
            // diffusers' _blend_double_block_mods: the reference rows (first) take the fixed timestep's modulation, per
            // token; chunking the blended raw tensor later gives the same per-parameter blend.
            var refTemb = time_guidance_embed.forward(full_like(scaledTimestep, refFixedTimestep * 1000), scaledGuidance);
            var refModImg = double_stream_modulation_img.forward(refTemb);
            refModSingle = single_stream_modulation.forward(refTemb);
            modImg = cat([refModImg.unsqueeze(1).expand(batch, refTokens, -1), modImg.unsqueeze(1).expand(batch, imageTokens - refTokens, -1)], 1);
        }

        // 2. Input projections.
        var x = x_embedder.forward(hiddenStates.to(dtype, device));
        var context = context_embedder.forward(encoderHiddenStates.to(dtype, device));

        // 3. Rotary table of the joint sequence, text rows first. Each row depends on its own ids only, so one table of the
        // concatenated ids equals diffusers' concatenation of the text and image tables.
        int axes = Config.AxesDimsRope.Length;
        var ids = cat([Unbatched(txtIds).narrow(1, 0, axes).to(device), Unbatched(imgIds).narrow(1, 0, axes).to(device)], 0);
        var rotary = pos_embed.forward(ids);

        // 4. Double-stream blocks: only the current pair of streams lives between blocks.
        Flux2KVAttentionArgs? Kv(Flux2KVLayerCache layer) => cache is null ? null : new Flux2KVAttentionArgs(layer, extract, textTokens, refTokens);
        for (int i = 0; i < transformer_blocks.Count; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var block = transformer_blocks[i];
            var kv = Kv(cache?.DoubleBlockCaches[i]!);
            (context, x) = Temporaries.RunStreams(() => block.forward(x, context, modImg, modTxt, rotary, kv), context, x);
        }

        // 5. Single-stream blocks on [text; image] ([text; reference; image] in extract mode, the reference rows of the
        // modulation at the fixed timestep: diffusers' _blend_single_block_mods).
        var hidden = cat([context, x], 1);
        context.Dispose();
        x.Dispose();
        if (refModSingle is not null)
            modSingle = cat([modSingle.unsqueeze(1).expand(batch, textTokens, -1), refModSingle.unsqueeze(1).expand(batch, refTokens, -1),
                modSingle.unsqueeze(1).expand(batch, imageTokens - refTokens, -1)], 1);
        for (int i = 0; i < single_transformer_blocks.Count; i++)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var block = single_transformer_blocks[i];
            var kv = Kv(cache?.SingleBlockCaches[i]!);
            hidden = hidden.Consume(h => block.forward(h, modSingle, rotary, kv));
        }

        // 6. The image tokens (without the reference tokens in extract mode) through the output norm and projection.
        long skipped = extract ? refTokens : 0;
        var image = hidden.narrow(1, textTokens + skipped, imageTokens - skipped);
        var output = proj_out.forward(norm_out.forward(image, temb));
        return output.MoveToOuterDisposeScope();
    }

    /// <summary>diffusers' <c>ids[0]</c> for batched ids; 2-D ids as they are.</summary>
    private static Tensor Unbatched(Tensor ids) => ids.dim() == 3 ? ids[0] : ids;

    private void ValidateInputs(Tensor hidden, Tensor text, Tensor timestep, Tensor imgIds, Tensor txtIds, Tensor? guidance)
    {
        ArgumentNullException.ThrowIfNull(hidden);
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(timestep);
        ArgumentNullException.ThrowIfNull(imgIds);
        ArgumentNullException.ThrowIfNull(txtIds);
        static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";
        var c = Config;
        if (hidden.dim() != 3 || hidden.shape[2] != c.InChannels || hidden.shape[1] < 1 || hidden.shape[0] < 1)
            throw new ArgumentException($"hidden_states must be packed latent tokens [B, N, {c.InChannels}] (in_channels), got {Shape(hidden)}.", "hidden_states");
        long batch = hidden.shape[0], imageTokens = hidden.shape[1];
        if (text.dim() != 3 || text.shape[0] != batch || text.shape[2] != c.JointAttentionDim || text.shape[1] < 1)
            throw new ArgumentException($"encoder_hidden_states must be [B={batch}, L, {c.JointAttentionDim}] (joint_attention_dim), got {Shape(text)}.", "encoder_hidden_states");
        if (timestep.dim() > 1 || (timestep.numel() != batch && timestep.numel() != 1))
            throw new ArgumentException($"timestep must be a scalar, [1] or [B={batch}], got {Shape(timestep)}.", nameof(timestep));
        int axes = c.AxesDimsRope.Length;
        CheckIds(imgIds, imageTokens, axes, "img_ids", "N");
        CheckIds(txtIds, text.shape[1], axes, "txt_ids", "L");
        if (c.GuidanceEmbeds && guidance is null)
            throw new ArgumentException("This model embeds the guidance scale (guidance_embeds, FLUX.2 [dev]): pass guidance [B] (e.g. 4.0).", nameof(guidance));
        if (!c.GuidanceEmbeds && guidance is not null)
            throw new ArgumentException("This model has no guidance embedding (guidance_embeds is false, e.g. FLUX.2 [klein]): pass no guidance.", nameof(guidance));
        if (guidance is not null && (guidance.dim() > 1 || (guidance.numel() != batch && guidance.numel() != 1)))
            throw new ArgumentException($"guidance must be a scalar, [1] or [B={batch}], got {Shape(guidance)}.", nameof(guidance));
        foreach (var (tensor, name) in new[] { (hidden, "hidden_states"), (text, "encoder_hidden_states") })
            if (!tensor.is_floating_point())
                throw new ArgumentException($"{name} must be a floating-point tensor, got {tensor.dtype}.", name);

        static void CheckIds(Tensor ids, long tokens, int axes, string name, string count)
        {
            if ((ids.dim() != 2 && ids.dim() != 3) || (ids.dim() == 3 && ids.shape[0] < 1) || ids.shape[^2] != tokens || ids.shape[^1] < axes)
                throw new ArgumentException($"{name} must be [{count}={tokens}, {axes}] or [B, {count}={tokens}, {axes}] (one column per rotary axis), got {Shape(ids)}.", name);
            if (ids.dtype == ScalarType.Bool || ids.is_complex())
                throw new ArgumentException($"{name} must hold integer or floating-point positions, got {ids.dtype}.", name);
        }
    }
}
