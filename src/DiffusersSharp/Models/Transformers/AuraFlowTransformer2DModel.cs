using DiffusersSharp.IO;
using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// The AuraFlow transformer (diffusers <c>AuraFlowTransformer2DModel</c>): the latent is patchified with a learned,
/// centre-cropped position table; the text is projected (<c>context_embedder</c>, bias-free) and preceded by 8 learned
/// <c>register_tokens</c>; <c>num_mmdit_layers</c> joint blocks run on both streams, then <c>num_single_dit_layers</c>
/// single blocks on [text; image] joined; the image tokens are modulated by <c>norm_out</c>, projected by
/// <c>proj_out</c> (bias-free) and un-patchified to the flow-matching velocity. Conditioning is the timestep alone
/// (no pooled text): sinusoidal features of <c>t · 1000</c> (<c>time_step_embed</c>) through <c>time_step_proj</c>.
/// State-dict keys equal the diffusers keys.
/// </summary>
public sealed class AuraFlowTransformer2DModel : nn.Module
{
    /// <summary>Number of learned register tokens put before the text (diffusers' fixed 8).</summary>
    public const int RegisterTokenCount = 8;

    /// <summary>Width of the sinusoidal timestep features (diffusers' fixed 256).</summary>
    public const int TimestepChannels = 256;

#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly AuraFlowPatchEmbed pos_embed;
    private readonly Linear context_embedder;
    private readonly Timesteps time_step_embed;
    private readonly TimestepEmbedding time_step_proj;
    private readonly ModuleList<AuraFlowJointTransformerBlock> joint_transformer_blocks;
    private readonly ModuleList<AuraFlowSingleTransformerBlock> single_transformer_blocks;
    private readonly AuraFlowPreFinalBlock norm_out;
    private readonly Linear proj_out;
    private readonly Parameter register_tokens;
#pragma warning restore IDE1006

    /// <summary>The configuration the model was built from.</summary>
    public AuraFlowTransformer2DModelConfig Config { get; }

    /// <summary>The element type of the weights (inputs are converted to it).</summary>
    public ScalarType Dtype => proj_out.weight.dtype;

    /// <summary>The device of the weights.</summary>
    public Device Device => proj_out.weight.device;

    /// <summary>Builds the model; on the <c>meta</c> device it holds shapes only (for counting or as a loading shell).
    /// Elsewhere the weights are freshly initialised (TorchSharp's generator), not diffusers' draw: load a checkpoint.</summary>
    /// <exception cref="ArgumentException">The config is invalid.</exception>
    public AuraFlowTransformer2DModel(AuraFlowTransformer2DModelConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(AuraFlowTransformer2DModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        int d = config.InnerDim;
        pos_embed = new AuraFlowPatchEmbed(config.PatchSize, config.InChannels, d, config.PosEmbedMaxSize, device, dtype);
        context_embedder = new Linear(config.JointAttentionDim, config.CaptionProjectionDim, hasBias: false, device: device, dtype: dtype);
        time_step_embed = new Timesteps(TimestepChannels, flipSinToCos: true, downscaleFreqShift: 0, scale: 1000);
        time_step_proj = new TimestepEmbedding(TimestepChannels, d, device, dtype);
        joint_transformer_blocks = new ModuleList<AuraFlowJointTransformerBlock>();
        for (int i = 0; i < config.NumMmditLayers; i++)
            joint_transformer_blocks.Add(new AuraFlowJointTransformerBlock(d, config.NumAttentionHeads, config.AttentionHeadDim, device, dtype));
        single_transformer_blocks = new ModuleList<AuraFlowSingleTransformerBlock>();
        for (int i = 0; i < config.NumSingleDitLayers; i++)
            single_transformer_blocks.Add(new AuraFlowSingleTransformerBlock(d, config.NumAttentionHeads, config.AttentionHeadDim, device, dtype));
        norm_out = new AuraFlowPreFinalBlock(d, d, device, dtype);
        proj_out = new Linear(d, (long)config.PatchSize * config.PatchSize * config.ResolvedOutChannels, hasBias: false, device: device, dtype: dtype);
        var registers = device is { type: DeviceType.META }
            ? torch.empty([1, RegisterTokenCount, d], dtype: dtype ?? ScalarType.Float32, device: device)
            : (torch.randn([1, RegisterTokenCount, d], dtype: ScalarType.Float32) * 0.02).to(dtype ?? ScalarType.Float32, device ?? CPU);
        register_tokens = new Parameter(registers, requires_grad: false);
        RegisterComponents();
    }

    /// <summary>
    /// Checks latents of <paramref name="shape"/> [B, in_channels, H, W] against the model as <see cref="forward"/> does
    /// (H and W multiples of the patch size, the patch grid within the learned position grid): what a pipeline checks
    /// before any compute.
    /// </summary>
    /// <exception cref="ArgumentException">The shape does not fit, naming <paramref name="name"/>.</exception>
    public void ValidateLatentShape(long[] shape, string name = "latents") => pos_embed.Validate(shape, name);

    /// <summary>
    /// Loads a diffusers <c>transformer</c> folder (config.json + safetensors, single or sharded), strictly: every key
    /// and shape must match. <paramref name="dtype"/> converts floating weights (null keeps the stored type).
    /// </summary>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="WeightLoadException">The weights do not match the config.</exception>
    public static AuraFlowTransformer2DModel FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<AuraFlowTransformer2DModelConfig, AuraFlowTransformer2DModel>(folder, (c, meta) => new AuraFlowTransformer2DModel(c, meta, dtype), dtype, device, variant);

    /// <summary>
    /// Predicts the flow-matching velocity for <paramref name="hidden_states"/> [B, in_channels, h, w] (h, w multiples of
    /// patch_size; the patch grid at most the position grid, <c>int(sqrt(pos_embed_max_size))</c> patches per side), text
    /// <paramref name="encoder_hidden_states"/> [B, S, joint_attention_dim] and <paramref name="timestep"/> [B] as
    /// AuraFlowPipeline passes it: the scheduler's timestep / 1000, in [0, 1] (the model multiplies by 1000 itself); a
    /// scalar or [1] is broadcast. Inputs are converted to the model dtype (the timestep's features are computed in
    /// float32 from it as given). Returns [B, out_channels, h, w] in the model dtype.
    /// </summary>
    /// <exception cref="ArgumentException">An input has the wrong rank, size, batch or type; thrown before any compute.</exception>
    public Tensor forward(Tensor hidden_states, Tensor encoder_hidden_states, Tensor timestep)
    {
        Validate(hidden_states, encoder_hidden_states, timestep);
        using var scope = torch.NewDisposeScope();
        var dtype = Dtype;
        long batch = hidden_states.shape[0], height = hidden_states.shape[2], width = hidden_states.shape[3];
        timestep = timestep.numel() == 1 ? timestep.reshape(1).expand(batch) : timestep;

        var x = pos_embed.forward(hidden_states.to(dtype));
        var temb = time_step_proj.forward(time_step_embed.forward(timestep).to(dtype));
        var context = context_embedder.forward(encoder_hidden_states.to(dtype))
            .Consume(c => torch.cat([register_tokens.expand(batch, -1, -1), c], 1));

        foreach (var block in joint_transformer_blocks)
        {
            var current = block;
            (context, x) = Temporaries.RunStreams(() => current.forward(x, context, temb), context, x);
        }

        if (single_transformer_blocks.Count > 0)
        {
            long textLength = context.shape[1];
            var joint = torch.cat([context, x], 1);
            context.Dispose();
            x.Dispose();
            foreach (var block in single_transformer_blocks)
                joint = joint.Consume(j => block.forward(j, temb)); // each block frees its intermediates; the old stream goes here
            x = joint.narrow(1, textLength, joint.shape[1] - textLength);
        }

        var h = proj_out.forward(norm_out.forward(x, temb));
        int p = Config.PatchSize, c = Config.ResolvedOutChannels;
        // diffusers' unpatchify: [B, h/p, w/p, p, p, c] -> einsum "nhwpqc->nchpwq" -> [B, c, h, w].
        var output = h.view(batch, height / p, width / p, p, p, c).permute(0, 5, 1, 3, 2, 4).reshape(batch, c, height, width);
        return output.MoveToOuterDisposeScope();
    }

    private void Validate(Tensor hidden, Tensor text, Tensor timestep)
    {
        ArgumentNullException.ThrowIfNull(hidden);
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(timestep);
        static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";
        pos_embed.Validate(hidden.shape, "hidden_states");
        long batch = hidden.shape[0];
        if (text.dim() != 3 || text.shape[0] != batch || text.shape[2] != Config.JointAttentionDim)
            throw new ArgumentException(
                $"encoder_hidden_states must be [B={batch}, S, {Config.JointAttentionDim}] (joint_attention_dim), got {Shape(text)}.", "encoder_hidden_states");
        if (timestep.dim() > 1 || (timestep.numel() != batch && timestep.numel() != 1))
            throw new ArgumentException($"timestep must be a scalar, [1] or [B={batch}] (AuraFlowPipeline's t / 1000), got {Shape(timestep)}.", nameof(timestep));
        if (!timestep.is_floating_point() && timestep.dtype is not (ScalarType.Int32 or ScalarType.Int64))
            throw new ArgumentException($"timestep must be a floating or integer tensor, got {timestep.dtype}.", nameof(timestep));
        foreach (var (t, name) in new[] { (hidden, "hidden_states"), (text, "encoder_hidden_states") })
            if (!t.is_floating_point())
                throw new ArgumentException($"{name} must be a floating-point tensor, got {t.dtype}.", name);
    }
}
