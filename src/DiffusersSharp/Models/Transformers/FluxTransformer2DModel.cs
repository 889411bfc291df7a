using DiffusersSharp.IO;
using DiffusersSharp.Models.IPAdapters;
using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// The Flux.1 rectified-flow transformer (diffusers <c>FluxTransformer2DModel</c>): packed latent tokens and T5 text
/// tokens run through <c>num_layers</c> double-stream blocks and <c>num_single_layers</c> single-stream blocks, conditioned
/// on timestep + pooled CLIP text (+ the guidance scale for guidance-distilled models), with 3-axis rotary positions over
/// the joint sequence (text first, then image); an adaptive norm and a projection give the velocity per image token.
/// State-dict keys equal the diffusers keys.
/// </summary>
public sealed class FluxTransformer2DModel : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly FluxPosEmbed pos_embed;
    private readonly CombinedTimestepTextProjEmbeddings time_text_embed;
    private readonly Linear context_embedder;
    private readonly Linear x_embedder;
    private readonly ModuleList<FluxTransformerBlock> transformer_blocks;
    private readonly ModuleList<FluxSingleTransformerBlock> single_transformer_blocks;
    private readonly AdaLayerNormContinuous norm_out;
    private readonly Linear proj_out;
#pragma warning restore IDE1006
    private MultiIPAdapterImageProjection? _ipProjection;

    private FluxTransformer2DModelConfig _config;

    /// <summary>
    /// The configuration the model was built from. Its in_channels follows x_embedder's width when a FLUX.1-Canny / Depth
    /// LoRA widens it (diffusers sets <c>config.in_channels</c> then); out_channels stays the width proj_out was built with.
    /// </summary>
    public FluxTransformer2DModelConfig Config
    {
        get
        {
            long width = x_embedder.weight!.shape[1];
            if (width != _config.InChannels) _config = _config with { InChannels = checked((int)width), OutChannels = _config.OutChannelsOrIn };
            return _config;
        }
    }

    /// <summary>The element type of the weights (inputs are converted to it).</summary>
    public ScalarType Dtype => proj_out.weight!.dtype;

    /// <summary>The device of the weights.</summary>
    public Device Device => proj_out.weight!.device;

    /// <summary>Builds the model; on the <c>meta</c> device it holds shapes only (for counting or as a loading shell).</summary>
    /// <exception cref="ArgumentException">The config is invalid.</exception>
    public FluxTransformer2DModel(FluxTransformer2DModelConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(FluxTransformer2DModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        _config = config;
        int d = config.InnerDim;
        pos_embed = new FluxPosEmbed(10000, config.AxesDimsRope);
        time_text_embed = new CombinedTimestepTextProjEmbeddings(d, config.PooledProjectionDim, device, dtype, withGuidance: config.GuidanceEmbeds);
        context_embedder = new Linear(config.JointAttentionDim, d, hasBias: true, device: device, dtype: dtype);
        x_embedder = new Linear(config.InChannels, d, hasBias: true, device: device, dtype: dtype);
        transformer_blocks = new ModuleList<FluxTransformerBlock>();
        for (int i = 0; i < config.NumLayers; i++)
            transformer_blocks.Add(new FluxTransformerBlock(d, config.NumAttentionHeads, config.AttentionHeadDim, device, dtype));
        single_transformer_blocks = new ModuleList<FluxSingleTransformerBlock>();
        for (int i = 0; i < config.NumSingleLayers; i++)
            single_transformer_blocks.Add(new FluxSingleTransformerBlock(d, config.NumAttentionHeads, config.AttentionHeadDim, device: device, dtype: dtype));
        norm_out = new AdaLayerNormContinuous(d, d, eps: 1e-6, bias: true, device: device, dtype: dtype);
        proj_out = new Linear(d, (long)config.PatchSize * config.PatchSize * config.OutChannelsOrIn, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Loads a diffusers <c>transformer</c> folder (config.json + safetensors, single or sharded), strictly: every key
    /// and shape must match. <paramref name="dtype"/> converts floating weights (null keeps the stored type).
    /// </summary>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="WeightLoadException">The weights do not match the config.</exception>
    public static FluxTransformer2DModel FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<FluxTransformer2DModelConfig, FluxTransformer2DModel>(folder, (c, meta) => new FluxTransformer2DModel(c, meta, dtype), dtype, device, variant);

    /// <summary>
    /// Predicts the flow-matching velocity of the packed latent tokens <paramref name="hidden_states"/> [B, S_img,
    /// in_channels] for the text <paramref name="encoder_hidden_states"/> [B, S_txt, joint_attention_dim],
    /// <paramref name="pooled_projections"/> [B, pooled_projection_dim] and <paramref name="timestep"/> [B] (σ, i.e. the
    /// scheduler's timestep / 1000, as the pipeline passes it; ×1000 inside as in diffusers; a scalar or [1] is broadcast).
    /// <paramref name="img_ids"/> [S_img, 3] and <paramref name="txt_ids"/> [S_txt, 3] are the rotary positions.
    /// <paramref name="guidance"/> [B] (the guidance scale; ×1000 inside) is required exactly when the config has
    /// guidance_embeds. <paramref name="controlnet_block_samples"/> / <paramref name="controlnet_single_block_samples"/>
    /// (a Flux ControlNet's residuals, each [B, S_img, D]; null or empty for none) are added to the image stream after
    /// the double- / single-stream blocks, block i taking residual <c>i / ceil(blocks / residuals)</c> as diffusers
    /// spaces them. <paramref name="ip_adapter_image_embeds"/> (diffusers' <c>joint_attention_kwargs["ip_adapter_image_embeds"]</c>;
    /// needs a loaded IP-Adapter) holds one [B', images, D] tensor of CLIP image embeddings per adapter, B' a multiple
    /// of B (each sample attends to the tokens of B' / B rows, as diffusers' view does): <c>encoder_hid_proj</c> turns
    /// them into image tokens for every double-stream block's IP-Adapter attention. Returns [B, S_img, patch² ×
    /// out_channels] in the model dtype.
    /// </summary>
    /// <exception cref="ArgumentException">An input has the wrong rank, size or batch, guidance is missing or not
    /// expected, or image embeddings do not fit the loaded IP-Adapters (or none is loaded); thrown before any compute.</exception>
    public Tensor forward(Tensor hidden_states, Tensor encoder_hidden_states, Tensor pooled_projections, Tensor timestep,
        Tensor img_ids, Tensor txt_ids, Tensor? guidance = null, IReadOnlyList<Tensor>? controlnet_block_samples = null,
        IReadOnlyList<Tensor>? controlnet_single_block_samples = null, IReadOnlyList<Tensor>? ip_adapter_image_embeds = null)
    {
        ValidateInputs(Config, hidden_states, encoder_hidden_states, pooled_projections, timestep, img_ids, txt_ids, guidance);
        CheckIpAdapterImageEmbeds(ip_adapter_image_embeds, hidden_states.shape[0]);
        ValidateResiduals(controlnet_block_samples, transformer_blocks.Count, hidden_states, "controlnet_block_samples");
        ValidateResiduals(controlnet_single_block_samples, single_transformer_blocks.Count, hidden_states, "controlnet_single_block_samples");
        using var scope = torch.NewDisposeScope();
        var dtype = Dtype;
        long batch = hidden_states.shape[0];
        Tensor Batched(Tensor t) => t.numel() == 1 ? t.reshape(1).expand(batch) : t;

        var x = x_embedder.forward(hidden_states.to(dtype));
        var t = Batched(timestep).to(x.dtype) * 1000;
        var pooled = pooled_projections.to(dtype);
        var temb = guidance is null
            ? time_text_embed.forward(t, pooled)
            : time_text_embed.forward(t, Batched(guidance).to(x.dtype) * 1000, pooled);
        var context = context_embedder.forward(encoder_hidden_states.to(dtype));

        var ids = torch.cat([txt_ids.to(x.device), img_ids.to(x.device)], 0);
        var rotary = pos_embed.forward(ids);
        var ipHiddenStates = ip_adapter_image_embeds is null ? null : _ipProjection!.forward(ip_adapter_image_embeds);

        for (int i = 0; i < transformer_blocks.Count; i++)
        {
            var block = transformer_blocks[i];
            var residual = Residual(controlnet_block_samples, i, transformer_blocks.Count);
            (context, x) = Temporaries.RunStreams(() => AddResidual(block.forward(x, context, temb, rotary, ipHiddenStates), residual), context, x);
        }
        for (int i = 0; i < single_transformer_blocks.Count; i++)
        {
            var block = single_transformer_blocks[i];
            var residual = Residual(controlnet_single_block_samples, i, single_transformer_blocks.Count);
            (context, x) = Temporaries.RunStreams(() => AddResidual(block.forward(x, context, temb, rotary), residual), context, x);
        }

        var output = proj_out.forward(norm_out.forward(x, temb));
        return output.MoveToOuterDisposeScope();
    }

    /// <summary>Whether an IP-Adapter is loaded (<see cref="Loaders.FluxIPAdapterWeights.Load"/>).</summary>
    public bool HasIpAdapter => _ipProjection is not null;

    /// <summary>The loaded IP-Adapters' image projections (diffusers' <c>encoder_hid_proj</c>), or null.</summary>
    public MultiIPAdapterImageProjection? EncoderHidProj => _ipProjection;

    /// <summary>The IP-Adapter scales: per double-stream block, one per adapter (empty without an adapter).</summary>
    public IReadOnlyList<IReadOnlyList<double>> IpAdapterScales =>
        _ipProjection is null ? [] : transformer_blocks.Select(b => (IReadOnlyList<double>)b.Attention.FluxIpAdapter!.Scale.ToArray()).ToArray();

    /// <summary>diffusers' <c>set_ip_adapter_scale(scale)</c> with one number: every block of every adapter.</summary>
    /// <exception cref="InvalidOperationException">No IP-Adapter is loaded.</exception>
    /// <exception cref="ArgumentException">The scale is not finite.</exception>
    public void SetIpAdapterScale(double scale) => SetIpAdapterScale(Enumerable.Repeat<IReadOnlyList<double>>([scale], AdapterCount()).ToArray());

    /// <summary>
    /// diffusers' <c>set_ip_adapter_scale</c> with a list of numbers: with one adapter loaded, one scale per double-stream
    /// block (num_layers of them); with several, one scale per adapter.
    /// </summary>
    /// <exception cref="InvalidOperationException">No IP-Adapter is loaded.</exception>
    /// <exception cref="ArgumentException">The count does not fit, or a scale is not finite.</exception>
    public void SetIpAdapterScale(IReadOnlyList<double> scales)
    {
        ArgumentNullException.ThrowIfNull(scales);
        if (AdapterCount() == 1) SetIpAdapterScale([scales]);
        else SetIpAdapterScale(scales.Select(s => (IReadOnlyList<double>)[s]).ToArray());
    }

    /// <summary>
    /// diffusers' <c>set_ip_adapter_scale</c> with one entry per adapter, each a single scale for every double-stream block
    /// (a one-element list) or one scale per block (num_layers elements). Single-stream blocks have no IP-Adapter.
    /// </summary>
    /// <exception cref="InvalidOperationException">No IP-Adapter is loaded.</exception>
    /// <exception cref="ArgumentException">A count does not fit, or a scale is not finite.</exception>
    public void SetIpAdapterScale(IReadOnlyList<IReadOnlyList<double>> scales)
    {
        ArgumentNullException.ThrowIfNull(scales);
        int adapters = AdapterCount(), blocks = transformer_blocks.Count;
        if (scales.Count != adapters)
            throw new ArgumentException($"Cannot assign {scales.Count} scales to {adapters} IP-Adapters.", nameof(scales));
        foreach (var s in scales)
        {
            if (s is null || (s.Count != 1 && s.Count != blocks))
                throw new ArgumentException($"Expected one scale or a list of {blocks} scales (one per double-stream block) per IP-Adapter, got {s?.Count ?? 0}.", nameof(scales));
            if (s.Any(v => !double.IsFinite(v))) throw new ArgumentException("IP-Adapter scales must be finite numbers.", nameof(scales));
        }
        for (int b = 0; b < blocks; b++)
            for (int a = 0; a < adapters; a++)
                transformer_blocks[b].Attention.FluxIpAdapter!.SetScale(a, scales[a].Count == 1 ? scales[a][0] : scales[a][b]);
    }

    private int AdapterCount() => _ipProjection?.Count ?? throw new InvalidOperationException("No IP-Adapter is loaded: load one before setting its scale.");

    /// <summary>The double-stream blocks' attentions, in order (where IP-Adapter processors go).</summary>
    internal IReadOnlyList<JointAttention> DoubleStreamAttentions => transformer_blocks.Select(b => b.Attention).ToArray();

    /// <summary>Installs loaded IP-Adapter parts (the loader's last step): one processor per double-stream block and the
    /// image projections as <c>encoder_hid_proj</c>.</summary>
    internal void AttachIpAdapter(MultiIPAdapterImageProjection projection, IReadOnlyList<FluxIPAdapterAttnProcessor> processors)
    {
        if (_ipProjection is not null) throw new InvalidOperationException("An IP-Adapter is already loaded into this transformer.");
        if (processors.Count != transformer_blocks.Count) throw new ArgumentException("One processor per double-stream block.", nameof(processors));
        for (int i = 0; i < processors.Count; i++) transformer_blocks[i].Attention.AttachIpAdapter(processors[i]);
        register_module("encoder_hid_proj", projection);
        _ipProjection = projection;
    }

    /// <summary>
    /// diffusers' <c>unload_ip_adapter</c> for the transformer: the double-stream blocks' IP-Adapter processors and
    /// <c>encoder_hid_proj</c> are removed and freed; the transformer is as before loading (same keys, same outputs).
    /// Nothing happens without an adapter.
    /// </summary>
    public void UnloadIpAdapter()
    {
        if (_ipProjection is null) return;
        foreach (var block in transformer_blocks) block.Attention.DetachIpAdapter();
        _internal_submodules.Remove("encoder_hid_proj");
        _ipProjection.Dispose();
        _ipProjection = null;
    }

    /// <summary>Checks IP-Adapter image embeddings against the loaded adapters and the batch, before any compute.</summary>
    private void CheckIpAdapterImageEmbeds(IReadOnlyList<Tensor>? embeds, long batch)
    {
        if (embeds is null) return;
        if (_ipProjection is null)
            throw new ArgumentException("ip_adapter_image_embeds were given but no IP-Adapter is loaded into the transformer.", "ip_adapter_image_embeds");
        _ipProjection.CheckInputs(embeds);
        foreach (var e in embeds)
            if (e.shape[0] < batch || e.shape[0] % batch != 0 || e.shape[1] < 1)
                throw new ArgumentException($"ip_adapter_image_embeds [{string.Join(", ", e.shape)}]: the batch must be a multiple of the batch {batch} and there must be at least one image.", "ip_adapter_image_embeds");
    }

    /// <summary>The ControlNet residual for block <paramref name="index"/> of <paramref name="blocks"/>: diffusers' interval
    /// <c>int(np.ceil(blocks / len(samples)))</c>, residual <c>index // interval</c>.</summary>
    private static Tensor? Residual(IReadOnlyList<Tensor>? samples, int index, int blocks)
    {
        if (samples is null || samples.Count == 0) return null;
        int interval = (int)Math.Ceiling((double)blocks / samples.Count);
        return samples[index / interval];
    }

    private static (Tensor Context, Tensor X) AddResidual((Tensor Context, Tensor X) streams, Tensor? residual) =>
        residual is null ? streams : (streams.Context, streams.X + residual.to(streams.X.dtype));

    private static void ValidateResiduals(IReadOnlyList<Tensor>? samples, int blocks, Tensor hidden, string name)
    {
        if (samples is null || samples.Count == 0) return;
        if (blocks == 0)
            throw new ArgumentException($"{name}: this transformer has no such blocks to add ControlNet residuals to.", name);
        int interval = (int)Math.Ceiling((double)blocks / samples.Count);
        if ((blocks - 1) / interval >= samples.Count)
            throw new ArgumentException($"{name}: {samples.Count} residuals cannot be spread over {blocks} blocks.", name);
        foreach (var sample in samples)
            if (sample is null || sample.dim() != 3 || sample.shape[0] != hidden.shape[0] || sample.shape[1] != hidden.shape[1])
                throw new ArgumentException($"{name}: each residual must be [B={hidden.shape[0]}, S_img={hidden.shape[1]}, D].", name);
    }

    /// <summary>Checks the inputs of a Flux transformer (or a Flux ControlNet built on its layers) of config <paramref name="c"/>.</summary>
    internal static void ValidateInputs(FluxTransformer2DModelConfig c, Tensor hidden, Tensor text, Tensor pooled, Tensor timestep, Tensor imgIds, Tensor txtIds, Tensor? guidance)
    {
        ArgumentNullException.ThrowIfNull(hidden);
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(pooled);
        ArgumentNullException.ThrowIfNull(timestep);
        ArgumentNullException.ThrowIfNull(imgIds);
        ArgumentNullException.ThrowIfNull(txtIds);
        static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";
        if (hidden.dim() != 3 || hidden.shape[2] != c.InChannels || hidden.shape[1] < 1)
            throw new ArgumentException($"hidden_states must be packed latent tokens [B, S_img, {c.InChannels}] (in_channels), got {Shape(hidden)}.", "hidden_states");
        long batch = hidden.shape[0], imageTokens = hidden.shape[1];
        if (text.dim() != 3 || text.shape[0] != batch || text.shape[2] != c.JointAttentionDim)
            throw new ArgumentException($"encoder_hidden_states must be [B={batch}, S_txt, {c.JointAttentionDim}] (joint_attention_dim), got {Shape(text)}.", "encoder_hidden_states");
        if (pooled.dim() != 2 || pooled.shape[0] != batch || pooled.shape[1] != c.PooledProjectionDim)
            throw new ArgumentException($"pooled_projections must be [B={batch}, {c.PooledProjectionDim}] (pooled_projection_dim), got {Shape(pooled)}.", "pooled_projections");
        if (timestep.dim() > 1 || (timestep.numel() != batch && timestep.numel() != 1))
            throw new ArgumentException($"timestep must be a scalar, [1] or [B={batch}], got {Shape(timestep)}.", nameof(timestep));
        int axes = c.AxesDimsRope.Length;
        if (imgIds.dim() != 2 || imgIds.shape[0] != imageTokens || imgIds.shape[1] != axes)
            throw new ArgumentException($"img_ids must be [S_img={imageTokens}, {axes}], got {Shape(imgIds)}.", "img_ids");
        if (txtIds.dim() != 2 || txtIds.shape[0] != text.shape[1] || txtIds.shape[1] != axes)
            throw new ArgumentException($"txt_ids must be [S_txt={text.shape[1]}, {axes}], got {Shape(txtIds)}.", "txt_ids");
        if (c.GuidanceEmbeds && guidance is null)
            throw new ArgumentException("This model embeds the guidance scale (guidance_embeds): pass guidance [B] (e.g. 3.5 for FLUX.1-dev).", nameof(guidance));
        if (!c.GuidanceEmbeds && guidance is not null)
            throw new ArgumentException("This model has no guidance embedding (guidance_embeds is false): pass no guidance.", nameof(guidance));
        if (guidance is not null && (guidance.dim() > 1 || (guidance.numel() != batch && guidance.numel() != 1)))
            throw new ArgumentException($"guidance must be a scalar, [1] or [B={batch}], got {Shape(guidance)}.", nameof(guidance));
        foreach (var (tensor, name) in new[] { (hidden, "hidden_states"), (text, "encoder_hidden_states"), (pooled, "pooled_projections") })
            if (!tensor.is_floating_point())
                throw new ArgumentException($"{name} must be a floating-point tensor, got {tensor.dtype}.", name);
    }
}
