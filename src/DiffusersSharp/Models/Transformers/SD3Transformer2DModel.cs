using DiffusersSharp.IO;
using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// The SD3 / SD3.5 MMDiT (diffusers <c>SD3Transformer2DModel</c>): patchified latent and projected text run through
/// <c>num_layers</c> joint blocks conditioned on timestep + pooled text, then an adaptive norm and un-patchify give the
/// flow-matching velocity with the latent's shape. State-dict keys equal the diffusers keys.
/// </summary>
public sealed class SD3Transformer2DModel : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly PatchEmbed pos_embed;
    private readonly CombinedTimestepTextProjEmbeddings time_text_embed;
    private readonly Linear context_embedder;
    private readonly ModuleList<JointTransformerBlock> transformer_blocks;
    private readonly AdaLayerNormContinuous norm_out;
    private readonly Linear proj_out;
#pragma warning restore IDE1006
    private IPAdapters.IPAdapterTimeImageProjection? _imageProj;

    /// <summary>The configuration the model was built from.</summary>
    public SD3Transformer2DModelConfig Config { get; }

    /// <summary>The element type of the weights (inputs are converted to it).</summary>
    public ScalarType Dtype => proj_out.weight!.dtype;

    /// <summary>The device of the weights.</summary>
    public Device Device => proj_out.weight!.device;

    /// <summary>Builds the model; on the <c>meta</c> device it holds shapes only (for counting or as a loading shell).</summary>
    /// <exception cref="ArgumentException">The config is invalid.</exception>
    public SD3Transformer2DModel(SD3Transformer2DModelConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(SD3Transformer2DModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        int d = config.InnerDim;
        var dual = new HashSet<int>(config.DualAttentionLayers);
        pos_embed = new PatchEmbed(config.SampleSize, config.SampleSize, config.PatchSize, config.InChannels, d, config.PosEmbedMaxSize, device, dtype);
        time_text_embed = new CombinedTimestepTextProjEmbeddings(d, config.PooledProjectionDim, device, dtype);
        context_embedder = new Linear(config.JointAttentionDim, d, hasBias: true, device: device, dtype: dtype);
        transformer_blocks = new ModuleList<JointTransformerBlock>();
        for (int i = 0; i < config.NumLayers; i++)
            transformer_blocks.Add(new JointTransformerBlock(d, config.NumAttentionHeads, config.AttentionHeadDim,
                contextPreOnly: i == config.NumLayers - 1, qkRmsNorm: config.QkNorm == "rms_norm", useDualAttention: dual.Contains(i), device, dtype));
        norm_out = new AdaLayerNormContinuous(d, d, eps: 1e-6, bias: true, device: device, dtype: dtype);
        proj_out = new Linear(d, (long)config.PatchSize * config.PatchSize * config.OutChannels, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Loads a diffusers <c>transformer</c> folder (config.json + safetensors, single or sharded), strictly: every key
    /// and shape must match. <paramref name="dtype"/> converts floating weights (null keeps the stored type).
    /// </summary>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="WeightLoadException">The weights do not match the config.</exception>
    public static SD3Transformer2DModel FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<SD3Transformer2DModelConfig, SD3Transformer2DModel>(folder, (c, meta) => new SD3Transformer2DModel(c, meta, dtype), dtype, device, variant);

    /// <summary>
    /// Loads the MMDiT of an original single-file checkpoint (Stability AI's <c>sd3.5_medium.safetensors</c> layout, keys
    /// under <c>model.diffusion_model.</c>), as diffusers' <c>from_single_file</c>: keys converted by
    /// <see cref="Loaders.SingleFileConversion"/>, then loaded strictly. Without <paramref name="config"/> (the model's
    /// <c>transformer/config.json</c>) the config is read from the keys.
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file holds no SD3 MMDiT, or keys of another layout.</exception>
    /// <exception cref="WeightLoadException">The weights do not fit the config.</exception>
    public static SD3Transformer2DModel FromSingleFile(string path, SD3Transformer2DModelConfig? config = null, ScalarType? dtype = null, Device? device = null)
    {
        int layers = 0;
        return PretrainedLoader.LoadConverted(path, (file, meta) =>
        {
            var c = config ?? Loaders.SingleFileConversion.InferSD3TransformerConfig(file);
            layers = c.NumLayers;
            return new SD3Transformer2DModel(c, meta);
        }, file => Loaders.SingleFileConversion.ConvertSD3Transformer(file, layers), dtype, device);
    }

    /// <summary>
    /// Predicts the flow-matching velocity for <paramref name="hidden_states"/> [B, in_channels, h, w] (h, w multiples of
    /// patch_size, h/p and w/p at most pos_embed_max_size), text <paramref name="encoder_hidden_states"/> [B, S,
    /// joint_attention_dim], <paramref name="pooled_projections"/> [B, pooled_projection_dim] and the raw scheduler
    /// <paramref name="timestep"/> [B] (σ·1000; a scalar or [1] is broadcast). Blocks in <paramref name="skipLayers"/> are
    /// bypassed (skip-layer guidance). <paramref name="lastTokenRepeats"/> &gt; 1 says the last row of
    /// <paramref name="encoder_hidden_states"/> stands for that many identical rows (see <see cref="CollapseRepeatedTail"/>):
    /// the result equals passing them all, within rounding. <paramref name="block_controlnet_hidden_states"/> (an SD3
    /// ControlNet's residuals, [B, N, D] each) are added to the image stream after every block but the last, block i
    /// taking residual <c>floor(i / (num_layers / count))</c> as diffusers spaces them (also after a skipped block).
    /// <paramref name="ip_adapter_image_embeds"/> [B, S, embed_dim] (diffusers' <c>joint_attention_kwargs</c> entry; needs an
    /// IP-Adapter, <see cref="Loaders.IPAdapterWeights"/>): the image features go through <c>image_proj</c> at these
    /// timesteps and every attention's IP-Adapter processor attends to its tokens. With B = 1 any count of rows is taken,
    /// their tokens attending together, as diffusers' skip-layer pass does with the CFG-doubled embeddings.
    /// Returns [B, out_channels, h, w] in the model dtype.
    /// </summary>
    /// <exception cref="ArgumentException">An input has the wrong rank, size or batch; thrown before any compute.</exception>
    public Tensor forward(Tensor hidden_states, Tensor encoder_hidden_states, Tensor pooled_projections, Tensor timestep,
        IReadOnlyCollection<int>? skipLayers = null, long lastTokenRepeats = 1, IReadOnlyList<Tensor>? block_controlnet_hidden_states = null,
        Tensor? ip_adapter_image_embeds = null)
    {
        Validate(hidden_states, encoder_hidden_states, pooled_projections, timestep, skipLayers);
        ValidateImageEmbeds(hidden_states.shape[0], ip_adapter_image_embeds);
        if (block_controlnet_hidden_states is { Count: 0 })
            throw new ArgumentException("block_controlnet_hidden_states must not be empty (pass null for none).", nameof(block_controlnet_hidden_states));
        if (lastTokenRepeats < 1) throw new ArgumentOutOfRangeException(nameof(lastTokenRepeats), lastTokenRepeats, "lastTokenRepeats must be at least 1.");
        using var scope = torch.NewDisposeScope();
        var dtype = Dtype;
        long batch = hidden_states.shape[0], height = hidden_states.shape[2], width = hidden_states.shape[3];
        if (timestep.numel() == 1 && batch != 1) timestep = timestep.reshape(1).expand(batch);
        else if (timestep.dim() == 0) timestep = timestep.reshape(1);

        var x = pos_embed.forward(hidden_states.to(dtype));
        var temb = time_text_embed.forward(timestep, pooled_projections.to(dtype));
        var context = context_embedder.forward(encoder_hidden_states.to(dtype));
        Tensor? keyBias = null;
        if (lastTokenRepeats > 1)
        {
            var logits = RepeatedTokenLogits(lastTokenRepeats, dtype);
            // A 16-bit logit cannot hold ln(count) exactly: a second copy of the row carries the remainder.
            if (logits.Length == 2) context = torch.cat([context, context.narrow(1, context.shape[1] - 1, 1)], 1);
            keyBias = RepeatedTokenKeyBias(x.shape[1], context.shape[1], logits, x.device);
        }
        (Tensor, Tensor)? ip = ip_adapter_image_embeds is null ? null : _imageProj!.forward(ip_adapter_image_embeds.to(dtype), timestep);

        for (int i = 0; i < transformer_blocks.Count; i++)
        {
            if (skipLayers is not null && skipLayers.Contains(i))
            {
                var added = WithControlResidual(x, i, block_controlnet_hidden_states);
                if (!ReferenceEquals(added, x)) { x.Dispose(); x = added; }
                continue;
            }
            // Each block's intermediates are freed when it ends; only the two streams live on.
            using var blockScope = torch.NewDisposeScope();
            var (newContext, newX) = transformer_blocks[i].forward(x, context, temb, keyBias, ip);
            newX = WithControlResidual(newX, i, block_controlnet_hidden_states);
            newX.MoveToOuterDisposeScope();
            x.Dispose();
            x = newX;
            if (newContext is not null)
            {
                newContext.MoveToOuterDisposeScope();
                context.Dispose();
                context = newContext;
            }
        }

        var h = proj_out.forward(norm_out.forward(x, temb));
        int p = Config.PatchSize, c = Config.OutChannels;
        var output = h.view(batch, height / p, width / p, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(batch, c, height, width);
        return output.MoveToOuterDisposeScope();
    }

    /// <summary>Whether an IP-Adapter is loaded (diffusers' <c>image_proj</c> and IP-Adapter processors).</summary>
    public bool HasIpAdapter => _imageProj is not null;

    /// <summary>The loaded IP-Adapter's Resampler (diffusers' <c>image_proj</c>), or null.</summary>
    public IPAdapters.IPAdapterTimeImageProjection? ImageProj => _imageProj;

    /// <summary>The attentions in diffusers' <c>attn_processors</c> order (block by block: <c>attn</c>, then <c>attn2</c>).</summary>
    internal IReadOnlyList<(string Name, JointAttention Attention)> AttentionLayers() =>
        transformer_blocks.SelectMany((b, i) => b.Attentions().Select(a => ($"transformer_blocks.{i}.{a.Name}", a.Attention))).ToList();

    /// <summary>
    /// The attention layers Perturbed-Attention Guidance applies to for <paramref name="pagAppliedLayers"/>, as diffusers'
    /// <c>PAGMixin._set_pag_attn_processor</c> resolves them over the transformer's attentions
    /// (<c>transformer_blocks.N.attn</c>, and <c>transformer_blocks.N.attn2</c> in SD3.5's dual-attention blocks): each id is
    /// a regular expression searched in those names (see <see cref="PagLayerSelection"/>), so diffusers' default
    /// "blocks.1" also finds blocks 10 to 19 where there are that many. Names in module order, each once.
    /// </summary>
    /// <exception cref="ArgumentException">No layer ids, an id that is not a valid regular expression or finds no attention
    /// ("Cannot find PAG layer to set attention processor for"), or one that finds an SD3.5 <c>attn2</c>: diffusers' PAG
    /// processors need the text stream, which that self-attention does not get, and fail there (anchor the id, e.g.
    /// <c>transformer_blocks\.0\.attn$</c>).</exception>
    public IReadOnlyList<string> ResolvePagLayers(IReadOnlyList<string> pagAppliedLayers)
    {
        var attentions = AttentionLayers();
        var names = PagLayerSelection.Resolve(attentions.Select(a => a.Name).ToList(), pagAppliedLayers, "e.g. blocks.1, transformer_blocks.(1|2).attn$");
        var joint = attentions.Where(a => a.Attention.IsJoint).Select(a => a.Name).ToHashSet(StringComparer.Ordinal);
        if (names.FirstOrDefault(n => !joint.Contains(n)) is { } selfOnly)
            throw new ArgumentException($"The PAG layers [{string.Join(", ", pagAppliedLayers)}] include {selfOnly}, an SD3.5 dual-attention block's image-only self-attention: diffusers' SD3 PAG processors need the text stream and fail on it. Anchor the layer id to the joint attention, e.g. transformer_blocks\\.{selfOnly.Split('.')[1]}\\.attn$.", nameof(pagAppliedLayers));
        return names;
    }

    /// <summary>
    /// Perturbed-Attention Guidance in the layers <paramref name="pagAppliedLayers"/> resolves to (see
    /// <see cref="ResolvePagLayers"/>) until the returned scope is disposed, as diffusers' SD3 PAG pipeline sets the PAG
    /// processors for one call and restores the originals after it: the batch is then [uncond, cond, perturbed]
    /// (<paramref name="classifierFreeGuidance"/>) or [cond, perturbed] (see <see cref="JointAttention.PerturbedChunks"/>).
    /// </summary>
    /// <exception cref="ArgumentException">See <see cref="ResolvePagLayers"/>.</exception>
    /// <exception cref="InvalidOperationException">PAG is already on (another call's scope is open).</exception>
    public IDisposable PerturbAttention(IReadOnlyList<string> pagAppliedLayers, bool classifierFreeGuidance)
    {
        var names = ResolvePagLayers(pagAppliedLayers).ToHashSet(StringComparer.Ordinal);
        var attentions = AttentionLayers();
        if (attentions.Any(a => a.Attention.PerturbedChunks != 0))
            throw new InvalidOperationException("Perturbed-attention guidance is already on in this transformer (another call is running with it).");
        var layers = attentions.Where(a => names.Contains(a.Name)).Select(a => a.Attention).ToList();
        foreach (var layer in layers) layer.PerturbedChunks = classifierFreeGuidance ? 3 : 2;
        return new PerturbedAttentionScope(layers);
    }

    private sealed class PerturbedAttentionScope(List<JointAttention> layers) : IDisposable
    {
        public void Dispose()
        {
            foreach (var layer in layers) layer.PerturbedChunks = 0;
            layers.Clear();
        }
    }

    /// <summary>The IP-Adapter scale of the processors (diffusers: 0.5 after loading); null without an IP-Adapter.</summary>
    public double? IpAdapterScale => AttentionLayers().Select(a => a.Attention.Sd3IpAdapter?.Scale).FirstOrDefault(s => s is not null);

    /// <summary>diffusers' SD3 <c>set_ip_adapter_scale</c>: the weight of the image attention in every IP-Adapter processor; 0 turns it off.</summary>
    /// <exception cref="InvalidOperationException">No IP-Adapter is loaded.</exception>
    /// <exception cref="ArgumentException">The scale is not finite.</exception>
    public void SetIpAdapterScale(double scale)
    {
        if (_imageProj is null) throw new InvalidOperationException("No IP-Adapter is loaded: load one before setting its scale.");
        if (!double.IsFinite(scale)) throw new ArgumentException($"The IP-Adapter scale must be a finite number, got {scale}.", nameof(scale));
        foreach (var (_, attention) in AttentionLayers())
            if (attention.Sd3IpAdapter is { } processor) processor.Scale = scale;
    }

    /// <summary>Attaches a loaded IP-Adapter: its processors to the attentions (in <see cref="AttentionLayers"/> order) and its
    /// Resampler, registered as <c>image_proj</c> as in diffusers.</summary>
    internal void AttachIpAdapter(IPAdapters.IPAdapterTimeImageProjection imageProj, IReadOnlyList<IPAdapters.SD3IPAdapterJointAttnProcessor> processors)
    {
        if (_imageProj is not null) throw new InvalidOperationException("An IP-Adapter is already loaded into this transformer.");
        var layers = AttentionLayers();
        if (processors.Count != layers.Count) throw new ArgumentException($"Expected {layers.Count} IP-Adapter processors, got {processors.Count}.", nameof(processors));
        for (int i = 0; i < layers.Count; i++) layers[i].Attention.AttachIpAdapter(processors[i]);
        register_module("image_proj", imageProj);
        _imageProj = imageProj;
    }

    private void ValidateImageEmbeds(long batch, Tensor? embeds)
    {
        if (embeds is null) return;
        if (_imageProj is null)
            throw new ArgumentException("ip_adapter_image_embeds needs an IP-Adapter: load one first (IPAdapterWeights.Load).", "ip_adapter_image_embeds");
        if (embeds.dim() != 3 || embeds.shape[2] != _imageProj.EmbedDim || (embeds.shape[0] != batch && batch != 1) || !embeds.is_floating_point())
            throw new ArgumentException($"ip_adapter_image_embeds must be a floating [B={batch}, S, {_imageProj.EmbedDim}] tensor (the image encoder's " +
                $"penultimate hidden states), got {embeds.dtype} [{string.Join(", ", embeds.shape)}].", "ip_adapter_image_embeds");
    }

    /// <summary>The image stream plus the ControlNet residual of block <paramref name="index"/> (none after the last block, as diffusers).</summary>
    private Tensor WithControlResidual(Tensor x, int index, IReadOnlyList<Tensor>? residuals)
    {
        if (residuals is null || transformer_blocks[index].ContextPreOnly) return x;
        double interval = (double)transformer_blocks.Count / residuals.Count;
        return x + residuals[(int)(index / interval)].to(x.dtype);
    }

    /// <summary>
    /// Splits <paramref name="encoderHiddenStates"/> [B, S, D] into its rows up to the first of the identical rows that
    /// end it in every batch item (the pipeline's zero T5 block when T5 is dropped: 256 of 333 rows) and their count.
    /// Identical tokens stay identical through every block and, as keys, weigh in the softmax as one key with
    /// <c>ln(count)</c> added to its logit, so <c>forward(..., collapsed, lastTokenRepeats: count)</c> gives the result
    /// of the full sequence at the cost of the short one. Reads the tensor once (a device sync): call it once per
    /// generation, not per step. Returns the tensor itself (as an alias) and 1 when it has no repeated tail.
    /// </summary>
    public static (Tensor Collapsed, long Repeats) CollapseRepeatedTail(Tensor encoderHiddenStates)
    {
        ArgumentNullException.ThrowIfNull(encoderHiddenStates);
        if (encoderHiddenStates.dim() != 3) throw new ArgumentException("encoder_hidden_states must be [B, S, D].", nameof(encoderHiddenStates));
        long length = encoderHiddenStates.shape[1];
        if (length < 2) return (encoderHiddenStates.alias(), 1);
        bool[] same;
        using (var scope = torch.NewDisposeScope())
        {
            var last = encoderHiddenStates.narrow(1, length - 1, 1);
            same = encoderHiddenStates.eq(last).all(-1).all(0).cpu().data<bool>().ToArray();
        }
        long repeats = 0;
        for (long i = length - 1; i >= 0 && same[i]; i--) repeats++;
        return repeats < 2 ? (encoderHiddenStates.alias(), 1) : (encoderHiddenStates.narrow(1, 0, length - repeats + 1), repeats);
    }

    /// <summary>
    /// The logits added to the last key(s) so that they weigh <paramref name="repeats"/> times one key in the softmax. In
    /// float32 (and float64) one key with <c>ln(repeats)</c>. The 16-bit types round ln(256) = 5.545 by up to 1.4% of the
    /// weight (bfloat16: 5.531); there two keys share it: <c>ln(repeats)</c> rounded down in that type, and the logarithm
    /// of what is left, whose rounding costs under 0.01% of the total.
    /// </summary>
    internal static double[] RepeatedTokenLogits(long repeats, ScalarType dtype)
    {
        double exact = Math.Log(repeats);
        if (dtype is not (ScalarType.BFloat16 or ScalarType.Float16)) return [exact];
        double first = RoundDown(exact, dtype);
        double left = repeats - Math.Exp(first);
        return left <= 0 ? [first] : [first, Math.Log(left)];
    }

    /// <summary>The largest bfloat16 / float16 value not above <paramref name="value"/> (positive and finite).</summary>
    private static double RoundDown(double value, ScalarType dtype)
    {
        float single = (float)value;
        if (single > value) single = MathF.BitDecrement(single);
        if (dtype == ScalarType.BFloat16) return BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(single) & unchecked((int)0xFFFF0000));
        var half = (Half)single;
        if ((double)half > value) half = BitConverter.UInt16BitsToHalf((ushort)(BitConverter.HalfToUInt16Bits(half) - 1));
        return (double)half;
    }

    /// <summary>The additive key bias [N + S]: <paramref name="logits"/> on the last keys, 0 elsewhere.</summary>
    private static Tensor RepeatedTokenKeyBias(long imageTokens, long textTokens, double[] logits, Device device)
    {
        var bias = zeros(imageTokens + textTokens, ScalarType.Float32, device);
        for (int i = 0; i < logits.Length; i++) bias.narrow(0, imageTokens + textTokens - logits.Length + i, 1).fill_(logits[i]);
        return bias;
    }

    private void Validate(Tensor hidden, Tensor text, Tensor pooled, Tensor timestep, IReadOnlyCollection<int>? skipLayers)
    {
        ArgumentNullException.ThrowIfNull(hidden);
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(pooled);
        ArgumentNullException.ThrowIfNull(timestep);
        pos_embed.Validate(hidden.shape, "hidden_states");
        long batch = hidden.shape[0];
        static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";
        if (text.dim() != 3 || text.shape[0] != batch || text.shape[2] != Config.JointAttentionDim)
            throw new ArgumentException(
                $"encoder_hidden_states must be [B={batch}, S, {Config.JointAttentionDim}] (joint_attention_dim), got {Shape(text)}.", "encoder_hidden_states");
        if (pooled.dim() != 2 || pooled.shape[0] != batch || pooled.shape[1] != Config.PooledProjectionDim)
            throw new ArgumentException(
                $"pooled_projections must be [B={batch}, {Config.PooledProjectionDim}] (pooled_projection_dim), got {Shape(pooled)}.", "pooled_projections");
        if (timestep.dim() > 1 || (timestep.numel() != batch && timestep.numel() != 1))
            throw new ArgumentException($"timestep must be a scalar, [1] or [B={batch}], got {Shape(timestep)}.", nameof(timestep));
        if (!timestep.is_floating_point() && timestep.dtype is not (ScalarType.Int32 or ScalarType.Int64))
            throw new ArgumentException($"timestep must be a floating or integer tensor, got {timestep.dtype}.", nameof(timestep));
        if (skipLayers is not null)
            foreach (int i in skipLayers)
                if (i < 0 || i >= Config.NumLayers)
                    throw new ArgumentOutOfRangeException(nameof(skipLayers), i, $"skip layer {i} is outside 0..{Config.NumLayers - 1}.");
        foreach (var (t, name) in new[] { (hidden, "hidden_states"), (text, "encoder_hidden_states"), (pooled, "pooled_projections") })
            if (!t.is_floating_point())
                throw new ArgumentException($"{name} must be a floating-point tensor, got {t.dtype}.", name);
    }
}
