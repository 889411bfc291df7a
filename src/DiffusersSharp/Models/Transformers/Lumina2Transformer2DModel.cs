using DiffusersSharp.IO;
using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// The Lumina-Image 2.0 diffusion transformer (diffusers <c>Lumina2Transformer2DModel</c>; Alpha-VLLM/Lumina-Image-2.0,
/// 2.61 B parameters). The latent is cut into p × p patches (<c>x_embedder</c>), the caption features embedded
/// (<c>time_caption_embed</c>: RMSNorm, Linear) beside the timestep. Captions run through the unmodulated
/// <c>context_refiner</c> under their mask, image tokens through the timestep-modulated <c>noise_refiner</c>; then each
/// sample's kept caption tokens and its image tokens are joined (caption first) and run through the modulated
/// <c>layers</c>; <c>norm_out</c> projects the image tokens back to patches. Attention is grouped-query with 3-axis RoPE
/// (<see cref="Lumina2RotaryPosEmbed"/>). When the samples keep different numbers of caption tokens, the joint sequences are
/// zero-padded to the longest and the padding is masked out as keys; when they keep the same number no mask is used,
/// exactly as diffusers. State-dict keys equal the diffusers keys.
/// </summary>
public sealed class Lumina2Transformer2DModel : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Lumina2RotaryPosEmbed rope_embedder;
    private readonly Linear x_embedder;
    private readonly Lumina2CombinedTimestepCaptionEmbedding time_caption_embed;
    private readonly ModuleList<Lumina2TransformerBlock> noise_refiner;
    private readonly ModuleList<Lumina2TransformerBlock> context_refiner;
    private readonly ModuleList<Lumina2TransformerBlock> layers;
    private readonly LuminaLayerNormContinuous norm_out;
#pragma warning restore IDE1006

    /// <summary>diffusers' RoPE base for Lumina2 (fixed in its constructor).</summary>
    public const double RopeTheta = 10000;

    /// <summary>The configuration the model was built from.</summary>
    public Lumina2Transformer2DModelConfig Config { get; }

    /// <summary>The element type of the weights (latents are converted to it).</summary>
    public ScalarType Dtype => x_embedder.weight.dtype;

    /// <summary>The device of the weights.</summary>
    public Device Device => x_embedder.weight.device;

    /// <summary>Builds the model; on the <c>meta</c> device it holds shapes only (for counting or as a loading shell).</summary>
    /// <exception cref="ArgumentException">The config is invalid.</exception>
    public Lumina2Transformer2DModel(Lumina2Transformer2DModelConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(Lumina2Transformer2DModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        int dim = config.HiddenSize;
        rope_embedder = new Lumina2RotaryPosEmbed(RopeTheta, config.AxesDimRope, config.AxesLens);
        x_embedder = new Linear((long)config.PatchSize * config.PatchSize * config.InChannels, dim, hasBias: true, device: device, dtype: dtype);
        time_caption_embed = new Lumina2CombinedTimestepCaptionEmbedding(dim, config.CapFeatDim, config.NormEps, device, dtype);
        noise_refiner = new ModuleList<Lumina2TransformerBlock>();
        context_refiner = new ModuleList<Lumina2TransformerBlock>();
        for (int i = 0; i < config.NumRefinerLayers; i++)
        {
            noise_refiner.Add(new Lumina2TransformerBlock(config, modulation: true, device, dtype));
            context_refiner.Add(new Lumina2TransformerBlock(config, modulation: false, device, dtype));
        }
        layers = new ModuleList<Lumina2TransformerBlock>();
        for (int i = 0; i < config.NumLayers; i++) layers.Add(new Lumina2TransformerBlock(config, modulation: true, device, dtype));
        norm_out = new LuminaLayerNormContinuous(dim, config.TimeEmbedDim, elementwiseAffine: false, eps: 1e-6, bias: true,
            outDim: (long)config.PatchSize * config.PatchSize * config.OutChannelsOrIn, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Why a sample with <paramref name="captionLength"/> kept caption tokens on latents of <paramref name="latentHeight"/> ×
    /// <paramref name="latentWidth"/> needs rotary positions past <c>axes_lens</c> (which <see cref="forward"/> refuses), or
    /// null when it fits: what a pipeline checks before any compute.
    /// </summary>
    public string? RopeRangeProblem(long captionLength, long latentHeight, long latentWidth) =>
        rope_embedder.RangeProblem(captionLength, latentHeight / Config.PatchSize, latentWidth / Config.PatchSize);

    /// <summary>
    /// Loads a diffusers <c>transformer</c> folder (config.json + safetensors, single or sharded), strictly: every key
    /// and shape must match. <paramref name="dtype"/> converts floating weights (null keeps the stored type).
    /// </summary>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="WeightLoadException">The weights do not match the config.</exception>
    public static Lumina2Transformer2DModel FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<Lumina2Transformer2DModelConfig, Lumina2Transformer2DModel>(folder, (c, meta) => new Lumina2Transformer2DModel(c, meta, dtype), dtype, device, variant);

    /// <summary>
    /// Predicts the flow of <paramref name="hidden_states"/> [B, in_channels, H, W] (H, W divisible by patch_size) at
    /// <paramref name="timestep"/> [B] (a scalar or [1] is broadcast; Lumina's time: 0 at pure noise, 1 at the image, as
    /// Lumina2Pipeline passes <c>1 − t / 1000</c>) for the caption <paramref name="encoder_hidden_states"/>
    /// [B, L, cap_feat_dim] under <paramref name="encoder_attention_mask"/> [B, L] (bool or 0 / 1: non-zero keeps a token;
    /// every sample must keep at least one, and diffusers counts the kept tokens as the caption's leading ones, so the
    /// pipeline's right-padded masks are what it means). Returns [B, out_channels, H, W] in the model dtype.
    /// <paramref name="cancellationToken"/> is checked before each block.
    /// </summary>
    /// <exception cref="ArgumentException">An input has the wrong rank, size, batch or type, a sample keeps no caption
    /// token, or a RoPE position falls past <c>axes_lens</c>; thrown before any compute.</exception>
    /// <exception cref="OperationCanceledException">Cancelled between blocks.</exception>
    public Tensor forward(Tensor hidden_states, Tensor timestep, Tensor encoder_hidden_states, Tensor encoder_attention_mask,
        CancellationToken cancellationToken = default)
    {
        long[] captionLengths = ValidateInputs(hidden_states, timestep, encoder_hidden_states, encoder_attention_mask);
        cancellationToken.ThrowIfCancellationRequested();
        using var scope = NewDisposeScope();
        var c = Config;
        var dtype = Dtype;
        var device = Device;
        long batch = hidden_states.shape[0], channels = hidden_states.shape[1], height = hidden_states.shape[2], width = hidden_states.shape[3];
        long p = c.PatchSize, rows = height / p, cols = width / p, imageLength = rows * cols;
        long captionSequence = encoder_hidden_states.shape[1];

        // May be the caller's own tensor (same device and type): borrowed, never freed here.
        var x = hidden_states.to(device).to(dtype);
        var t = (timestep.numel() == 1 ? timestep.reshape(1).expand(batch) : timestep.reshape(batch)).to(device);
        var text = encoder_hidden_states.to(device);
        // diffusers' RMSNorm keeps a float64 input float64, which its Linear then refuses; take it in the model's type.
        if (text.dtype == ScalarType.Float64) text = text.to(dtype);
        var (temb, caps) = time_caption_embed.forward(t, text, dtype);
        var rope = rope_embedder.forward(captionLengths, captionSequence, rows, cols, device);

        // Patchify: [B, C, h·p, w·p] -> [B, h·w, p·p·C], each patch's values in (row in patch, column in patch, channel) order.
        x = x.Consume(h => h.view(batch, channels, rows, p, cols, p).permute(0, 2, 4, 3, 5, 1).reshape(batch, imageLength, p * p * channels), hidden_states)
            .Consume(x_embedder.forward);

        var captionMask = encoder_attention_mask.to(device);
        captionMask = captionMask.dtype == ScalarType.Bool ? captionMask : captionMask.ne(0);
        foreach (var block in context_refiner)
        {
            cancellationToken.ThrowIfCancellationRequested();
            caps = caps.Consume(h => block.forward(h, captionMask, rope.Caption, null));
        }
        foreach (var block in noise_refiner)
        {
            cancellationToken.ThrowIfCancellationRequested();
            x = x.Consume(h => block.forward(h, null, rope.Image, temb));
        }

        // Each sample's kept caption tokens, then its image tokens, zero-padded to the longest; masked only when lengths differ.
        long[] sequenceLengths = rope.SequenceLengths;
        long maxLength = sequenceLengths.Max();
        var joined = new Tensor[batch];
        for (int i = 0; i < batch; i++)
        {
            var parts = new List<Tensor> { caps[i].narrow(0, 0, captionLengths[i]), x[i] };
            if (sequenceLengths[i] < maxLength) parts.Add(torch.zeros([maxLength - sequenceLengths[i], c.HiddenSize], x.dtype, device));
            joined[i] = torch.cat(parts, 0);
        }
        caps.Dispose();
        x.Dispose();
        var joint = torch.stack(joined, 0);
        foreach (var part in joined) part.Dispose();
        Tensor? jointMask = sequenceLengths.Distinct().Count() > 1
            ? torch.arange(maxLength, device: device).unsqueeze(0) < torch.tensor(sequenceLengths, device: device).unsqueeze(1)
            : null;
        foreach (var block in layers)
        {
            cancellationToken.ThrowIfCancellationRequested();
            joint = joint.Consume(h => block.forward(h, jointMask, rope.Joint, temb));
        }
        joint = joint.Consume(h => norm_out.forward(h, temb));

        // Unpatchify each sample's image tokens: [h·w, p·p·C] -> [C, h·p, w·p].
        long outChannels = c.OutChannelsOrIn;
        var images = new Tensor[batch];
        for (int i = 0; i < batch; i++)
            images[i] = joint[i].narrow(0, captionLengths[i], imageLength).view(rows, cols, p, p, outChannels)
                .permute(4, 0, 2, 1, 3).reshape(outChannels, height, width);
        return torch.stack(images, 0).MoveToOuterDisposeScope();
    }

    /// <summary>Checks the inputs of <see cref="forward"/> before any compute; returns each sample's kept caption token count.</summary>
    private long[] ValidateInputs(Tensor hidden, Tensor timestep, Tensor text, Tensor mask)
    {
        ArgumentNullException.ThrowIfNull(hidden);
        ArgumentNullException.ThrowIfNull(timestep);
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(mask);
        static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";
        var c = Config;
        if (hidden.dim() != 4 || hidden.shape[0] < 1 || hidden.shape[1] != c.InChannels || hidden.shape[2] < c.PatchSize || hidden.shape[3] < c.PatchSize)
            throw new ArgumentException($"hidden_states must be 4-D [B, in_channels={c.InChannels}, H, W], got {Shape(hidden)}.", "hidden_states");
        if (hidden.shape[2] % c.PatchSize != 0 || hidden.shape[3] % c.PatchSize != 0)
            throw new ArgumentException($"hidden_states' height and width must be divisible by the patch size {c.PatchSize}, got {Shape(hidden)}.", "hidden_states");
        if (!hidden.is_floating_point())
            throw new ArgumentException($"hidden_states must be floating point, got {hidden.dtype}.", "hidden_states");
        long batch = hidden.shape[0];
        if (timestep.dim() > 1 || (timestep.numel() != batch && timestep.numel() != 1))
            throw new ArgumentException($"timestep must be a scalar, [1] or [B={batch}], got {Shape(timestep)}.", nameof(timestep));
        if (text.dim() != 3 || text.shape[0] != batch || text.shape[1] < 1 || text.shape[2] != c.CapFeatDim)
            throw new ArgumentException($"encoder_hidden_states must be [B={batch}, L, cap_feat_dim={c.CapFeatDim}], got {Shape(text)}.", "encoder_hidden_states");
        if (!text.is_floating_point())
            throw new ArgumentException($"encoder_hidden_states must be floating point, got {text.dtype}.", "encoder_hidden_states");
        if (mask.dim() != 2 || mask.shape[0] != batch || mask.shape[1] != text.shape[1])
            throw new ArgumentException($"encoder_attention_mask must be [B={batch}, L={text.shape[1]}], got {Shape(mask)}.", "encoder_attention_mask");
        if (mask.is_complex())
            throw new ArgumentException($"encoder_attention_mask must be bool or real 0 / 1, got {mask.dtype}.", "encoder_attention_mask");
        long[] lengths;
        using (NewDisposeScope())
            lengths = (mask.dtype == ScalarType.Bool ? mask : mask.ne(0)).sum(1).to(ScalarType.Int64).cpu().data<long>().ToArray();
        long rows = hidden.shape[2] / c.PatchSize, cols = hidden.shape[3] / c.PatchSize;
        for (int i = 0; i < lengths.Length; i++)
        {
            if (lengths[i] < 1)
                throw new ArgumentException($"encoder_attention_mask keeps no caption token for sample {i}; every sample needs at least one.", "encoder_attention_mask");
            if (rope_embedder.RangeProblem(lengths[i], rows, cols) is { } problem)
                throw new ArgumentException($"Sample {i}: {problem}", "hidden_states");
        }
        return lengths;
    }
}
