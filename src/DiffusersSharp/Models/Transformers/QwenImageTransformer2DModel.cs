using DiffusersSharp.IO;
using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// The Qwen-Image MMDiT (diffusers <c>QwenImageTransformer2DModel</c>): packed latent tokens (<c>img_in</c>) and
/// Qwen2.5-VL text hidden states (RMSNorm <c>txt_norm</c>, then <c>txt_in</c>) run through <c>num_layers</c> dual-stream
/// blocks conditioned on the timestep alone, with 3-axis rotary positions over the joint sequence (text first, see
/// <see cref="QwenEmbedRope"/>) and an optional text padding mask; an adaptive norm and a projection give the velocity per
/// image token. The text-to-image variants (Qwen-Image, Qwen-Image-2512, Qwen-Image-Edit's transformer without its
/// reference images) are supported; the Edit-2511 / Layered flags are refused by the config. State-dict keys equal the
/// diffusers keys.
/// </summary>
public sealed class QwenImageTransformer2DModel : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly QwenEmbedRope pos_embed;
    private readonly QwenTimestepProjEmbeddings time_text_embed;
    private readonly RMSNorm txt_norm;
    private readonly Linear img_in;
    private readonly Linear txt_in;
    private readonly ModuleList<QwenImageTransformerBlock> transformer_blocks;
    private readonly AdaLayerNormContinuous norm_out;
    private readonly Linear proj_out;
#pragma warning restore IDE1006

    /// <summary>The configuration the model was built from.</summary>
    public QwenImageTransformer2DModelConfig Config { get; }

    /// <summary>The element type of the weights (inputs are converted to it).</summary>
    public ScalarType Dtype => proj_out.weight!.dtype;

    /// <summary>The device of the weights.</summary>
    public Device Device => proj_out.weight!.device;

    /// <summary>Builds the model; on the <c>meta</c> device it holds shapes only (for counting or as a loading shell).</summary>
    /// <exception cref="ArgumentException">The config is invalid or names an unsupported variant.</exception>
    public QwenImageTransformer2DModel(QwenImageTransformer2DModelConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(QwenImageTransformer2DModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        int d = config.InnerDim;
        pos_embed = new QwenEmbedRope(10000, config.AxesDimsRope);
        time_text_embed = new QwenTimestepProjEmbeddings(d, device, dtype);
        txt_norm = new RMSNorm(config.JointAttentionDim, 1e-6, device, dtype);
        img_in = new Linear(config.InChannels, d, hasBias: true, device: device, dtype: dtype);
        txt_in = new Linear(config.JointAttentionDim, d, hasBias: true, device: device, dtype: dtype);
        transformer_blocks = new ModuleList<QwenImageTransformerBlock>();
        for (int i = 0; i < config.NumLayers; i++)
            transformer_blocks.Add(new QwenImageTransformerBlock(d, config.NumAttentionHeads, config.AttentionHeadDim, device, dtype));
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
    public static QwenImageTransformer2DModel FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<QwenImageTransformer2DModelConfig, QwenImageTransformer2DModel>(folder, (c, meta) => new QwenImageTransformer2DModel(c, meta, dtype), dtype, device, variant);

    /// <summary>
    /// Predicts the flow-matching velocity of the packed latent tokens <paramref name="hidden_states"/> [B, S_img,
    /// in_channels], laid out as <paramref name="imageShape"/> (frames × height × width packed patches, diffusers'
    /// <c>img_shapes</c> entry; one shape for the whole batch, as diffusers uses the first), for the text
    /// <paramref name="encoder_hidden_states"/> [B, S_txt, joint_attention_dim] and <paramref name="timestep"/> (σ, i.e.
    /// the scheduler's timestep / 1000, as the pipeline passes it; a scalar or [1] is broadcast to the batch).
    /// <paramref name="encoder_hidden_states_mask"/> [B, S_txt] (non-zero = a real token) hides padded text tokens from
    /// every attention, as diffusers v0.37+ does; null attends to all (diffusers' pipelines pass null when nothing is
    /// padded). Returns [B, S_img, patch² × out_channels] in the model dtype.
    /// </summary>
    /// <exception cref="ArgumentException">An input has the wrong rank, size or batch; thrown before any compute.</exception>
    public Tensor forward(Tensor hidden_states, Tensor encoder_hidden_states, Tensor? encoder_hidden_states_mask, Tensor timestep,
        (int Frames, int Height, int Width) imageShape)
    {
        ValidateInputs(hidden_states, encoder_hidden_states, encoder_hidden_states_mask, timestep, imageShape);
        using var scope = NewDisposeScope();
        var dtype = Dtype;
        long batch = hidden_states.shape[0], imageTokens = hidden_states.shape[1], textTokens = encoder_hidden_states.shape[1];

        var x = img_in.forward(hidden_states.to(dtype));
        var t = (timestep.numel() == 1 ? timestep.reshape(1).expand(batch) : timestep).to(x.dtype);
        var context = txt_in.forward(txt_norm.forward(encoder_hidden_states.to(dtype)));
        var temb = time_text_embed.forward(t);

        // The processor's joint mask: the text mask, then every image token kept; keys only ([B, 1, 1, S_txt + S_img]).
        Tensor? mask = null;
        if (encoder_hidden_states_mask is not null)
        {
            var text = encoder_hidden_states_mask.to(x.device).ne(0);
            mask = cat([text, ones(batch, imageTokens, dtype: ScalarType.Bool, device: x.device)], 1).view(batch, 1, 1, textTokens + imageTokens);
        }
        var rotary = pos_embed.forward(imageShape.Frames, imageShape.Height, imageShape.Width, textTokens, x.device);

        foreach (var block in transformer_blocks)
            (context, x) = Temporaries.RunStreams(() => block.forward(x, context, temb, rotary, mask), context, x);

        var output = proj_out.forward(norm_out.forward(x, temb));
        return output.MoveToOuterDisposeScope();
    }

    private void ValidateInputs(Tensor hidden, Tensor text, Tensor? mask, Tensor timestep, (int Frames, int Height, int Width) shape)
    {
        ArgumentNullException.ThrowIfNull(hidden);
        ArgumentNullException.ThrowIfNull(text);
        ArgumentNullException.ThrowIfNull(timestep);
        static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";
        var c = Config;
        if (hidden.dim() != 3 || hidden.shape[2] != c.InChannels || hidden.shape[1] < 1)
            throw new ArgumentException($"hidden_states must be packed latent tokens [B, S_img, {c.InChannels}] (in_channels), got {Shape(hidden)}.", "hidden_states");
        long batch = hidden.shape[0];
        if (shape.Frames < 1 || shape.Height < 1 || shape.Width < 1 || (long)shape.Frames * shape.Height * shape.Width != hidden.shape[1])
            throw new ArgumentException($"img_shapes ({shape.Frames}, {shape.Height}, {shape.Width}) must multiply to the {hidden.shape[1]} image tokens of hidden_states.", "img_shapes");
        if (text.dim() != 3 || text.shape[0] != batch || text.shape[2] != c.JointAttentionDim || text.shape[1] < 1)
            throw new ArgumentException($"encoder_hidden_states must be [B={batch}, S_txt, {c.JointAttentionDim}] (joint_attention_dim), got {Shape(text)}.", "encoder_hidden_states");
        if (mask is not null && (mask.dim() != 2 || mask.shape[0] != batch || mask.shape[1] != text.shape[1]))
            throw new ArgumentException($"encoder_hidden_states_mask must be [B={batch}, S_txt={text.shape[1]}], got {Shape(mask)}.", "encoder_hidden_states_mask");
        if (timestep.dim() > 1 || (timestep.numel() != batch && timestep.numel() != 1))
            throw new ArgumentException($"timestep must be a scalar, [1] or [B={batch}], got {Shape(timestep)}.", nameof(timestep));
        foreach (var (tensor, name) in new[] { (hidden, "hidden_states"), (text, "encoder_hidden_states") })
            if (!tensor.is_floating_point())
                throw new ArgumentException($"{name} must be a floating-point tensor, got {tensor.dtype}.", name);
    }
}
