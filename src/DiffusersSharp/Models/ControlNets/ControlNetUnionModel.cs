using System.Text.Json;
using DiffusersSharp.IO;
using DiffusersSharp.Models.Layers;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Unets;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using MultiheadAttention = DiffusersSharp.Models.Layers.MultiheadAttention;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.ControlNets;

/// <summary>diffusers' <c>ResidualAttentionMlp</c>: <c>c_fc</c> (x4), QuickGELU, <c>c_proj</c>.</summary>
public sealed class ResidualAttentionMlp : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear c_fc;
    private readonly Linear c_proj;
#pragma warning restore IDE1006

    /// <summary>Builds the MLP of width <paramref name="dModel"/>.</summary>
    public ResidualAttentionMlp(long dModel, Device? device = null, ScalarType? dtype = null) : base(nameof(ResidualAttentionMlp))
    {
        c_fc = new Linear(dModel, dModel * 4, device: device, dtype: dtype);
        c_proj = new Linear(dModel * 4, dModel, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        // QuickGELU: x * sigmoid(1.702 x), as transformers' quick_gelu.
        return c_proj.forward(HfActivations.Apply("quick_gelu", c_fc.forward(x))).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// diffusers' <c>ResidualAttentionBlock</c> (CLIP's pre-norm transformer layer): <c>x + attn(ln_1(x))</c>, then
/// <c>x + mlp(ln_2(x))</c>, with PyTorch's <c>nn.MultiheadAttention</c> in its sequence-first layout: on the union
/// model's [B, conditions + 1, C] tokens the attention runs across the BATCH (as diffusers calls it), for each condition
/// slot separately.
/// </summary>
public sealed class ResidualAttentionBlock : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly MultiheadAttention attn;
    private readonly LayerNorm ln_1;
    private readonly ResidualAttentionMlp mlp;
    private readonly LayerNorm ln_2;
#pragma warning restore IDE1006

    /// <summary>Builds the block of width <paramref name="dModel"/> with <paramref name="heads"/> heads.</summary>
    public ResidualAttentionBlock(long dModel, int heads, Device? device = null, ScalarType? dtype = null) : base(nameof(ResidualAttentionBlock))
    {
        attn = new MultiheadAttention(dModel, heads, device, dtype);
        ln_1 = nn.LayerNorm(dModel, device: device, dtype: dtype);
        mlp = new ResidualAttentionMlp(dModel, device, dtype);
        ln_2 = nn.LayerNorm(dModel, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <inheritdoc />
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        x = x + attn.forward(ln_1.forward(x));
        x = x + mlp.forward(ln_2.forward(x));
        return x.MoveToOuterDisposeScope();
    }
}

/// <summary>
/// diffusers' <c>ControlNetUnionModel</c> (models/controlnets/controlnet_union.py; xinsir's ControlNet++ for SDXL): one
/// ControlNet for several control types. It is a <see cref="ControlNetModel"/> (the UNet's down path and mid block, the
/// same conditioning embedding, zero convs and scaling) whose control features come from several control images at once:
/// <list type="bullet">
/// <item>the control types used (<c>control_type</c>, [B, num_control_type] of 0 / 1) are embedded with sinusoidal
/// features (<c>control_type_proj</c>, addition_time_embed_dim each) through <c>control_add_embedding</c> and added to
/// the time embedding (before SDXL's text_time embedding);</item>
/// <item>each control image is encoded by <c>controlnet_cond_embedding</c>; its spatial mean plus its type's
/// <c>task_embedding</c> row is one token, the mean of conv_in's output the last; the tokens go through
/// <c>transformer_layes</c> (sic, the checkpoint key) and <c>spatial_ch_projs</c> gives each condition a per-channel
/// offset; the conditions plus their offsets are summed onto conv_in's output.</item>
/// </list>
/// With one condition (or called for a <c>MultiControlNetUnionModel</c>) the residuals are scaled as a ControlNet's;
/// with several, each condition's token, features and offset are scaled by its own scale and the residuals are not.
/// State-dict keys equal diffusers'.
/// </summary>
public sealed class ControlNetUnionModel : nn.Module
{
    /// <summary>The <c>_class_name</c> diffusers writes into the model's config.json.</summary>
    public const string ClassName = "ControlNetUnionModel";

#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Conv2d conv_in;
    private readonly Timesteps time_proj;
    private readonly TimestepEmbedding time_embedding;
    private readonly Timesteps? add_time_proj;
    private readonly TimestepEmbedding? add_embedding;
    private readonly ControlNetConditioningEmbedding controlnet_cond_embedding;
    private readonly Parameter task_embedding;
    private readonly ModuleList<ResidualAttentionBlock> transformer_layes;
    private readonly Linear spatial_ch_projs;
    private readonly Timesteps control_type_proj;
    private readonly TimestepEmbedding control_add_embedding;
    private readonly ModuleList<nn.Module> down_blocks;
    private readonly ModuleList<Conv2d> controlnet_down_blocks;
    private readonly UNetMidBlock2DCrossAttn mid_block;
    private readonly Conv2d controlnet_mid_block;
#pragma warning restore IDE1006

    /// <summary>The configuration the model was built from.</summary>
    public ControlNetUnionModelConfig Config { get; }

    /// <summary>The element type of the weights.</summary>
    public ScalarType Dtype => conv_in.weight!.dtype;

    /// <summary>The device of the weights.</summary>
    public Device Device => conv_in.weight!.device;

    /// <summary>Builds the model; on the <c>meta</c> device it holds shapes only.</summary>
    /// <exception cref="NotSupportedException">The config sets an option this port does not implement.</exception>
    /// <exception cref="ArgumentException">The config is inconsistent.</exception>
    public ControlNetUnionModel(ControlNetUnionModelConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(ControlNetUnionModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        var channels = config.BlockOutChannels;
        long temb = config.TimeEmbedDim;
        int timeIdDim = config.AdditionTimeEmbedDim!.Value;
        conv_in = nn.Conv2d(config.InChannels, channels[0], 3, padding: 1, device: device, dtype: dtype);
        time_proj = new Timesteps(channels[0], config.FlipSinToCos, config.FreqShift);
        time_embedding = new TimestepEmbedding(channels[0], temb, device, dtype);
        if (config.AdditionEmbedType == "text_time")
        {
            add_time_proj = new Timesteps(timeIdDim, config.FlipSinToCos, config.FreqShift);
            add_embedding = new TimestepEmbedding(config.ProjectionClassEmbeddingsInputDim!.Value, temb, device, dtype);
        }
        controlnet_cond_embedding = new ControlNetConditioningEmbedding(channels[0], config.ConditioningChannels,
            config.ConditioningEmbeddingOutChannels, device, dtype);
        task_embedding = new Parameter(empty([config.NumControlType, config.NumTransChannel], dtype: dtype ?? ScalarType.Float32, device: device));
        transformer_layes = new ModuleList<ResidualAttentionBlock>();
        for (int i = 0; i < config.NumTransLayer; i++) transformer_layes.Add(new ResidualAttentionBlock(config.NumTransChannel, config.NumTransHead, device, dtype));
        spatial_ch_projs = new Linear(config.NumTransChannel, config.NumProjChannel, device: device, dtype: dtype);
        control_type_proj = new Timesteps(timeIdDim, config.FlipSinToCos, config.FreqShift);
        control_add_embedding = new TimestepEmbedding((long)timeIdDim * config.NumControlType, temb, device, dtype);
        (down_blocks, controlnet_down_blocks, mid_block, controlnet_mid_block) = ControlNetModel.BuildDownPath(config, device, dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Loads a diffusers ControlNet-Union folder (config.json + safetensors, e.g. xinsir/controlnet-union-sdxl-1.0 or
    /// brad-twinkl/controlnet-union-sdxl-1.0-promax), strictly. <paramref name="dtype"/> converts floating weights (null
    /// keeps the stored type).
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="WeightLoadException">The weights do not match the config.</exception>
    /// <exception cref="NotSupportedException">The config sets an option this port does not implement.</exception>
    public static ControlNetUnionModel FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<ControlNetUnionModelConfig, ControlNetUnionModel>(folder, (c, meta) => new ControlNetUnionModel(c, meta, dtype), dtype, device, variant);

    /// <summary>
    /// Whether <paramref name="folder"/> holds a ControlNet-Union: its config.json names <c>ControlNetUnionModel</c>, or
    /// (a config written for other code, which diffusers' <c>ControlNetUnionModel.from_pretrained</c> reads all the same)
    /// its weights hold the union model's <c>task_embedding</c>. Reads the config and the weights' header only.
    /// </summary>
    /// <exception cref="FileNotFoundException">config.json is missing.</exception>
    /// <exception cref="InvalidDataException">config.json is not a JSON object.</exception>
    public static bool IsControlNetUnion(string folder, string? variant = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        string path = Path.Combine(folder, "config.json");
        if (!File.Exists(path)) throw new FileNotFoundException($"{folder} has no config.json: not a diffusers ControlNet folder.", path);
        try
        {
            using var config = JsonDocument.Parse(File.ReadAllText(path));
            if (config.RootElement.ValueKind != JsonValueKind.Object) throw new InvalidDataException($"{path}: not a JSON object.");
            if (config.RootElement.TryGetProperty("_class_name", out var name) && name.ValueKind == JsonValueKind.String && name.GetString() == ClassName)
                return true;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON: {e.Message}", e);
        }
        using var weights = WeightFiles.TryOpen(folder, variant) ?? WeightFiles.TryOpen(folder);
        return weights is not null && weights.Tensors.ContainsKey("task_embedding");
    }

    /// <summary>
    /// The residuals for latents <paramref name="sample"/> [B, in_channels, h, w] at <paramref name="timestep"/> (scalar,
    /// [1] or [B]) with text <paramref name="encoderHiddenStates"/> [B, S, cross_attention_dim] (SDXL: also
    /// <paramref name="textEmbeds"/> and <paramref name="timeIds"/>) and the control images <paramref name="controlnetCond"/>
    /// (each [B, conditioning_channels, 8h, 8w] in [0, 1]) of the types <paramref name="controlTypeIdx"/> (diffusers'
    /// <c>control_type_idx</c>), one scale each in <paramref name="conditioningScale"/>. <paramref name="controlType"/>
    /// is [B, num_control_type], 1 for the types in use (diffusers' <c>control_type</c>). With one condition or
    /// <paramref name="fromMulti"/> the residuals are multiplied by the first scale (in <paramref name="guessMode"/>, unless
    /// global_pool_conditions, by logspace(-1, 0, n + 1) x that scale); with several, each condition is scaled by its
    /// own and the residuals are not (guess mode then applies the logspace alone).
    /// </summary>
    /// <exception cref="ArgumentException">An input is missing, has the wrong shape, or a type is out of range; thrown before any compute.</exception>
    public ControlNetOutput forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates, IReadOnlyList<Tensor> controlnetCond, Tensor controlType,
        IReadOnlyList<int> controlTypeIdx, IReadOnlyList<double> conditioningScale, bool fromMulti = false, bool guessMode = false,
        Tensor? textEmbeds = null, Tensor? timeIds = null)
    {
        Validate(sample, timestep, encoderHiddenStates, controlnetCond, controlType, controlTypeIdx, conditioningScale, textEmbeds, timeIds);
        using var scope = NewDisposeScope();
        long batch = sample.shape[0];
        var dtype = Dtype;
        var x = sample.to(dtype);
        var context = encoderHiddenStates.to(dtype);

        // 1. time: the timestep's embedding, plus the control types' (sinusoidal features per type, flattened), plus SDXL's text_time.
        var emb = UNet2DConditionModel.TimeEmbedding(time_proj, time_embedding, null, null, timestep, batch, x.dtype, x.device, null, null);
        var controlEmbeds = control_type_proj.forward(controlType.to(x.device).flatten()).reshape(batch, -1).to(emb.dtype);
        emb = emb + control_add_embedding.forward(controlEmbeds);
        if (add_embedding is not null) emb = emb + UNet2DConditionModel.TextTimeEmbedding(add_time_proj!, add_embedding, textEmbeds!, timeIds!, emb.dtype);

        // 2. the conditions: one token each (mean features + the type's task embedding) and the latents' token last.
        x = conv_in.forward(x);
        int n = controlnetCond.Count;
        bool single = fromMulti || n == 1;
        var tokens = new List<Tensor>(n + 1);
        var conditions = new List<Tensor>(n);
        for (int k = 0; k < n; k++)
        {
            var condition = controlnet_cond_embedding.forward(controlnetCond[k].to(dtype));
            var token = (condition.mean([2, 3]) + task_embedding[controlTypeIdx[k]]).unsqueeze(1);
            tokens.Add(single ? token : token * conditioningScale[k]);
            conditions.Add(single ? condition : condition * conditioningScale[k]);
        }
        tokens.Add(x.mean([2, 3]).unsqueeze(1));
        var h = cat(tokens, 1);
        foreach (var layer in transformer_layes) h = layer.forward(h);

        var fuser = x * 0.0;
        for (int k = 0; k < n; k++)
        {
            var alpha = spatial_ch_projs.forward(h[.., k]).unsqueeze(-1).unsqueeze(-1);
            fuser = fuser + (conditions[k] + (single ? alpha : alpha * conditioningScale[k]));
        }
        x = x + fuser;

        // 3-6. down path, mid block, zero convs and scaling as a ControlNet's.
        return ControlNetModel.Residuals(x, emb, context, down_blocks, controlnet_down_blocks, mid_block, controlnet_mid_block,
            single ? conditioningScale[0] : null, guessMode, Config.GlobalPoolConditions).MoveToOuterDisposeScope();
    }

    private void Validate(Tensor sample, Tensor timestep, Tensor text, IReadOnlyList<Tensor> conds, Tensor controlType, IReadOnlyList<int> types,
        IReadOnlyList<double> scales, Tensor? textEmbeds, Tensor? timeIds)
    {
        ControlNetModel.ValidateInputs(Config, sample, timestep, text);
        ArgumentNullException.ThrowIfNull(conds);
        ArgumentNullException.ThrowIfNull(controlType);
        ArgumentNullException.ThrowIfNull(types);
        ArgumentNullException.ThrowIfNull(scales);
        long batch = sample.shape[0];
        if (conds.Count == 0) throw new ArgumentException("controlnet_cond must hold at least one control image.", "controlnet_cond");
        if (types.Count != conds.Count)
            throw new ArgumentException($"control_type_idx must give one control type per control image ({conds.Count}), got {types.Count}.", "control_type_idx");
        if (scales.Count != conds.Count)
            throw new ArgumentException($"conditioning_scale must give one scale per control image ({conds.Count}), got {scales.Count}.", "conditioning_scale");
        for (int k = 0; k < conds.Count; k++)
        {
            ControlNetModel.ValidateCond(Config, conds[k], sample, "controlnet_cond");
            if (types[k] < 0 || types[k] >= Config.NumControlType)
                throw new ArgumentException($"control_type_idx: {types[k]} is not a control type of this model (0 to {Config.NumControlType - 1}, num_control_type).", "control_type_idx");
        }
        if (controlType.dim() != 2 || controlType.shape[0] != batch || controlType.shape[1] != Config.NumControlType)
            throw new ArgumentException($"control_type must be [B={batch}, {Config.NumControlType}] (num_control_type), got [{string.Join(", ", controlType.shape)}].", "control_type");
        if (add_embedding is not null)
            UNet2DConditionModel.ValidateTextTime(textEmbeds, timeIds, batch, Config.AdditionTimeEmbedDim!.Value, Config.ProjectionClassEmbeddingsInputDim!.Value);
    }
}
