using System.Text.RegularExpressions;
using DiffusersSharp.IO;
using DiffusersSharp.Models.IPAdapters;
using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Unets;

/// <summary>
/// diffusers' <c>UNet2DConditionModel</c>, the noise predictor of Stable Diffusion 1.x / 2.x (including the 9-channel
/// inpainting UNet), SDXL and the x4 upscaler: conv_in, sinusoidal timestep features + MLP (plus a class embedding of
/// <c>class_labels</c>, the upscaler's noise level, and SDXL's <c>text_time</c> embedding of pooled text and size/crop
/// ids), down blocks that keep their intermediate states, a cross-attention mid block, up
/// blocks that concatenate those states back, GroupNorm + SiLU + conv_out. State-dict keys equal the diffusers keys.
/// Unsupported config options are rejected at construction (see <see cref="UNet2DConditionModelConfig.Validate"/>).
/// </summary>
public sealed class UNet2DConditionModel : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Conv2d conv_in;
    private readonly nn.Module<Tensor, Tensor> time_proj;
    private readonly TimestepEmbedding time_embedding;
    private readonly nn.Module<Tensor, Tensor>? class_embedding;
    private readonly Timesteps? add_time_proj;
    private readonly TimestepEmbedding? add_embedding;
    private readonly ModuleList<nn.Module> down_blocks;
    private readonly UNetMidBlock2DCrossAttn? mid_block;
    private readonly ModuleList<nn.Module> up_blocks;
    private readonly GroupNorm? conv_norm_out;
    private readonly Conv2d conv_out;
#pragma warning restore IDE1006
    private readonly long[] _crossAttentionDims;
    private MultiIPAdapterImageProjection? _ipProjection;
    private IPAdapterState? _ipState;

    /// <summary>The configuration the model was built from.</summary>
    public UNet2DConditionModelConfig Config { get; }

    /// <summary>The element type of the weights (inputs are converted to it).</summary>
    public ScalarType Dtype => conv_out.weight!.dtype;

    /// <summary>The device of the weights.</summary>
    public Device Device => conv_out.weight!.device;

    /// <summary>Builds the model; on the <c>meta</c> device it holds shapes only (for counting or as a loading shell).</summary>
    /// <exception cref="NotSupportedException">The config sets an option this port does not implement (named in the message).</exception>
    /// <exception cref="ArgumentException">The config is inconsistent.</exception>
    public UNet2DConditionModel(UNet2DConditionModelConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(UNet2DConditionModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        int n = config.DownBlockTypes.Length;
        var channels = config.BlockOutChannels;
        long groups = config.NormNumGroups ?? 0; // null only in a K-UNet, whose blocks group by 32 channels
        double eps = config.NormEps;
        long temb = config.TimeEmbedDim;
        var heads = config.HeadsPerBlock;
        var crossDims = config.CrossAttentionDim.Expand(n, "cross_attention_dim");
        var layers = config.LayersPerBlock.Expand(n, "layers_per_block");
        var transformerLayers = config.TransformerLayersPerBlock.Expand(n, "transformer_layers_per_block");
        var onlyCross = config.OnlyCrossAttention.Expand(n, "only_cross_attention");
        // The K blocks read attention_head_dim as the width of a head (diffusers: attention_head_dim[i] or the block's channels).
        var headDims = config.AttentionHeadDim.Expand(n, "attention_head_dim").Select(d => (long)d).ToArray();

        conv_in = nn.Conv2d(config.InChannels, channels[0], config.ConvInKernel, stride: 1, padding: (config.ConvInKernel - 1) / 2, device: device, dtype: dtype);
        time_proj = config.TimeEmbeddingType == "fourier"
            ? new GaussianFourierProjection(temb / 2, config.FlipSinToCos, device, dtype)
            : new Timesteps(channels[0], config.FlipSinToCos, config.FreqShift);
        long timestepInput = config.TimestepInputDim;
        time_embedding = new TimestepEmbedding(timestepInput, temb, device, dtype, config.TimeCondProjDim, config.ActFn, config.TimestepPostAct);
        // diffusers' _set_class_embedding (its activation is act_fn, silu: the only one Validate accepts).
        class_embedding = config.ClassEmbeddingKind switch
        {
            "embedding" => nn.Embedding(config.NumClassEmbeds!.Value, temb, device: device, dtype: dtype),
            "timestep" => new TimestepEmbedding(timestepInput, temb, device, dtype, activation: config.ActFn),
            "identity" => nn.Identity(),
            "projection" => new TimestepEmbedding(config.ProjectionClassEmbeddingsInputDim!.Value, temb, device, dtype),
            "simple_projection" => new Linear(config.ProjectionClassEmbeddingsInputDim!.Value, temb, device: device, dtype: dtype),
            _ => null,
        };
        if (config.AdditionEmbedType == "text_time")
        {
            add_time_proj = new Timesteps(config.AdditionTimeEmbedDim!.Value, config.FlipSinToCos, config.FreqShift);
            add_embedding = new TimestepEmbedding(config.ProjectionClassEmbeddingsInputDim!.Value, temb, device, dtype);
        }

        down_blocks = new ModuleList<nn.Module>();
        var usedCrossDims = new SortedSet<long>();
        long output = channels[0];
        for (int i = 0; i < n; i++)
        {
            long input = output;
            output = channels[i];
            bool isFinal = i == n - 1;
            if (config.DownBlockTypes[i] == "KDownBlock2D")
                down_blocks.Add(new KDownBlock2D(input, output, temb, layers[i], eps, config.ActFn, !isFinal, device, dtype));
            else if (config.DownBlockTypes[i] == "KCrossAttnDownBlock2D")
            {
                down_blocks.Add(new KCrossAttnDownBlock2D(input, output, temb, crossDims[i], layers[i], eps, config.ActFn, headDims[i], !isFinal, device, dtype));
                usedCrossDims.Add(crossDims[i]);
            }
            else if (config.DownBlockTypes[i] == "CrossAttnDownBlock2D")
            {
                down_blocks.Add(new CrossAttnDownBlock2D(input, output, temb, layers[i], transformerLayers[i], groups, eps, heads[i],
                    crossDims[i], !isFinal, config.DownsamplePadding, config.UseLinearProjection, onlyCross[i], device, dtype));
                usedCrossDims.Add(crossDims[i]);
            }
            else
            {
                down_blocks.Add(new DownBlock2D(input, output, temb, layers[i], groups, eps, !isFinal, config.DownsamplePadding, device, dtype));
            }
        }

        if (config.MidBlockType is not null)
        {
            mid_block = new UNetMidBlock2DCrossAttn(channels[^1], temb, transformerLayers[^1], groups, eps, heads[^1], crossDims[^1],
                config.MidBlockScaleFactor, config.UseLinearProjection, device, dtype);
            usedCrossDims.Add(crossDims[^1]);
        }

        up_blocks = new ModuleList<nn.Module>();
        var reversedChannels = channels.Reverse().ToArray();
        var reversedHeads = heads.Reverse().ToArray();
        var reversedLayers = layers.Reverse().ToArray();
        var reversedCross = crossDims.Reverse().ToArray();
        var reversedTransformerLayers = transformerLayers.Reverse().ToArray();
        var reversedOnlyCross = onlyCross.Reverse().ToArray();
        output = reversedChannels[0];
        for (int i = 0; i < n; i++)
        {
            bool isFinal = i == n - 1;
            long previous = output;
            output = reversedChannels[i];
            long input = reversedChannels[Math.Min(i + 1, n - 1)];
            // The K blocks take diffusers' attention_head_dim[i] (not reversed, as diffusers passes it to the up blocks).
            if (config.UpBlockTypes[i] == "KUpBlock2D")
                up_blocks.Add(new KUpBlock2D(input, output, temb, reversedLayers[i] + 1, eps, config.ActFn, !isFinal, device, dtype));
            else if (config.UpBlockTypes[i] == "KCrossAttnUpBlock2D")
            {
                up_blocks.Add(new KCrossAttnUpBlock2D(input, output, temb, reversedCross[i], reversedLayers[i] + 1, eps, config.ActFn, headDims[i], !isFinal,
                    device, dtype));
                usedCrossDims.Add(reversedCross[i]);
            }
            else if (config.UpBlockTypes[i] == "CrossAttnUpBlock2D")
            {
                up_blocks.Add(new CrossAttnUpBlock2D(input, previous, output, temb, reversedLayers[i] + 1, reversedTransformerLayers[i], groups, eps,
                    reversedHeads[i], reversedCross[i], !isFinal, config.UseLinearProjection, reversedOnlyCross[i], device, dtype) { ResolutionIdx = i });
                usedCrossDims.Add(reversedCross[i]);
            }
            else
            {
                up_blocks.Add(new UpBlock2D(input, previous, output, temb, reversedLayers[i] + 1, groups, eps, !isFinal, device, dtype) { ResolutionIdx = i });
            }
        }

        if (config.NormNumGroups is not null) conv_norm_out = AffineGroupNorm.Create(groups, channels[0], eps, device, dtype);
        conv_out = nn.Conv2d(channels[0], config.OutChannels, config.ConvOutKernel, stride: 1, padding: (config.ConvOutKernel - 1) / 2, device: device, dtype: dtype);
        _crossAttentionDims = usedCrossDims.ToArray();
        RegisterComponents();
    }

    /// <summary>
    /// Loads a diffusers <c>unet</c> folder (config.json + safetensors, single or sharded), strictly: every key and shape
    /// must match. <paramref name="dtype"/> converts floating weights (null keeps the stored type).
    /// </summary>
    /// <exception cref="DirectoryNotFoundException">The folder does not exist.</exception>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="WeightLoadException">The weights do not match the config.</exception>
    /// <exception cref="NotSupportedException">The config sets an option this port does not implement.</exception>
    public static UNet2DConditionModel FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<UNet2DConditionModelConfig, UNet2DConditionModel>(folder, (c, meta) => new UNet2DConditionModel(c, meta, dtype), dtype, device, variant);

    /// <summary>
    /// Loads the UNet of an original SD 1.x / 2.x (LDM) or SDXL (SGM) single file (keys under
    /// <c>model.diffusion_model.</c>), as diffusers' <c>from_single_file</c> with a config repo: <paramref name="config"/>
    /// (the model's <c>unet/config.json</c>) places the LDM blocks; keys converted by
    /// <see cref="Loaders.SingleFileConversion.ConvertLdmUnet"/>, then loaded strictly.
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">A key of the file is not part of this UNet.</exception>
    /// <exception cref="WeightLoadException">The weights do not fit the config.</exception>
    /// <exception cref="NotSupportedException">The config sets time_cond_proj_dim (single files carry no cond_proj).</exception>
    public static UNet2DConditionModel FromSingleFile(string path, UNet2DConditionModelConfig config, ScalarType? dtype = null, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (config.TimeCondProjDim is not null)
            throw new NotSupportedException("A UNet with time_cond_proj_dim (LCM and other guidance-distilled models) cannot load from an original single file: " +
                "such files have no time_embedding.cond_proj, and diffusers' convert_ldm_unet_checkpoint maps none. Load the diffusers folder instead.");
        HashSet<string>? names = null;
        return PretrainedLoader.LoadConverted(path, (_, meta) =>
        {
            var model = new UNet2DConditionModel(config, meta, dtype);
            names = model.state_dict().Keys.ToHashSet(StringComparer.Ordinal);
            return model;
        }, file => Loaders.SingleFileConversion.ConvertLdmUnet(file, config, names), dtype, device);
    }

    /// <summary>
    /// Predicts the noise (or v / x0, as the checkpoint was trained) for latents <paramref name="sample"/> [B, in_channels,
    /// h, w] (any h, w: sides that are not multiples of 2^(levels-1) are handled as diffusers does, by upsampling to the
    /// skip states' sizes), the scheduler's <paramref name="timestep"/> (a scalar, [1] or [B]), text
    /// <paramref name="encoderHiddenStates"/> [B, S, cross_attention_dim] and, for SDXL (<c>addition_embed_type
    /// "text_time"</c>), the pooled text <paramref name="textEmbeds"/> [B, T] and size/crop <paramref name="timeIds"/>
    /// [B, K] with T + K x addition_time_embed_dim = projection_class_embeddings_input_dim. A ControlNet's outputs go in
    /// <paramref name="downBlockAdditionalResiduals"/> (one per skip state, in order: conv_in's, then each down block's)
    /// and <paramref name="midBlockAdditionalResidual"/>, both or neither; they are added to the skip states and to the
    /// mid block's output, as diffusers' <c>down_block_additional_residuals</c> / <c>mid_block_additional_residual</c>.
    /// A T2I-Adapter's feature maps go in <paramref name="downIntrablockAdditionalResiduals"/> (diffusers'
    /// <c>down_intrablock_additional_residuals</c>), consumed in order, one per down block while any are left: a
    /// cross-attention block adds its map to the output of its last (resnet, transformer) pair, before the downsampler; a
    /// block without attention adds it to its output (after the downsampler), in place, so its last skip state gets it
    /// too; one left over after the down blocks is added to the mid block's output (T2I-Adapter-XL). See
    /// <see cref="IntrablockResidualShapes"/> for the shapes; a map diffusers would leave unused is refused. Both kinds of
    /// residuals may be given together. With an IP-Adapter loaded, <paramref name="imageEmbeds"/> (diffusers' <c>added_cond_kwargs["image_embeds"]</c>: one
    /// [B, images, D] tensor per adapter) are projected to image tokens for the IP-Adapter layers; null runs the UNet
    /// without them. A guidance-distilled UNet (<c>time_cond_proj_dim</c> set, e.g. LCM) takes <paramref name="timestepCond"/>
    /// (diffusers' <c>timestep_cond</c>: [B, time_cond_proj_dim], the guidance-scale embedding of
    /// <see cref="Pipelines.GuidanceScaleEmbedding"/>), projected by <c>time_embedding.cond_proj</c> and added to the timestep
    /// features; null adds nothing, as in diffusers. A UNet with a class embedding (<c>num_class_embeds</c> or
    /// <c>class_embed_type</c>; the x4 upscaler's noise level) needs <paramref name="classLabels"/> (diffusers'
    /// <c>class_labels</c>, one per sample or one for all): integer indices [B] below num_class_embeds for the table, values
    /// [B] for <c>"timestep"</c> (embedded like the timestep), [B, time embedding width] for <c>"identity"</c>, [B,
    /// projection_class_embeddings_input_dim] for the projections; their embedding is added to the time embedding (before
    /// SDXL's <c>text_time</c> one, diffusers' order). Inputs are converted to the model dtype; returns [B, out_channels, h, w]
    /// in the model dtype.
    /// </summary>
    /// <exception cref="ArgumentException">An input is missing or has the wrong rank, size or batch; thrown before any compute.</exception>
    public Tensor forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates, Tensor? textEmbeds = null, Tensor? timeIds = null,
        IReadOnlyList<Tensor>? downBlockAdditionalResiduals = null, Tensor? midBlockAdditionalResidual = null,
        IReadOnlyList<Tensor>? imageEmbeds = null, IReadOnlyList<Tensor>? downIntrablockAdditionalResiduals = null, Tensor? timestepCond = null,
        Tensor? classLabels = null)
    {
        Validate(sample, timestep, encoderHiddenStates, textEmbeds, timeIds);
        ValidateClassLabels(sample, classLabels);
        ValidateTimestepCond(sample, timestepCond);
        if (Config.IsKUNet && (downBlockAdditionalResiduals is not null || midBlockAdditionalResidual is not null || downIntrablockAdditionalResiduals is not null))
            throw new ArgumentException("A K-UNet takes no ControlNet or T2I-Adapter residuals (diffusers has none for it).", nameof(downBlockAdditionalResiduals));
        ValidateResiduals(sample, downBlockAdditionalResiduals, midBlockAdditionalResidual);
        if (downIntrablockAdditionalResiduals is not null)
        {
            if (downIntrablockAdditionalResiduals.Any(r => r is null || !r.is_floating_point()))
                throw new ArgumentException("down_intrablock_additional_residuals must be floating-point tensors.", "down_intrablock_additional_residuals");
            CheckIntrablockResidualShapes(downIntrablockAdditionalResiduals.Select(r => r.shape).ToArray(), sample.shape[0], sample.shape[2], sample.shape[3]);
        }
        ValidateImageEmbeds(sample, imageEmbeds);
        if (imageEmbeds is null)
            return Forward(sample, timestep, encoderHiddenStates, textEmbeds, timeIds, downBlockAdditionalResiduals, midBlockAdditionalResidual, downIntrablockAdditionalResiduals, timestepCond, classLabels);
        using var scope = NewDisposeScope();
        // diffusers' process_encoder_hidden_states ("ip_image_proj"): each adapter's image tokens, one sequence per sample,
        // go after the text; every IP-Adapter layer splits them off again by the counts set for this forward.
        var projected = _ipProjection!.forward(imageEmbeds);
        var tokens = projected.Select(p => p.reshape(p.shape[0], -1, p.shape[^1])).ToArray();
        var context = cat([encoderHiddenStates.to(Dtype), .. tokens.Select(t => t.to(Dtype))], 1);
        _ipState!.TokenCounts = tokens.Select(t => t.shape[1]).ToArray();
        try
        {
            return Forward(sample, timestep, context, textEmbeds, timeIds, downBlockAdditionalResiduals, midBlockAdditionalResidual,
                downIntrablockAdditionalResiduals, timestepCond, classLabels).MoveToOuterDisposeScope();
        }
        finally
        {
            _ipState.TokenCounts = null;
        }
    }

    private Tensor Forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates, Tensor? textEmbeds, Tensor? timeIds,
        IReadOnlyList<Tensor>? downBlockAdditionalResiduals, Tensor? midBlockAdditionalResidual, IReadOnlyList<Tensor>? downIntrablockAdditionalResiduals,
        Tensor? timestepCond, Tensor? classLabels)
    {
        using var scope = NewDisposeScope();
        var dtype = Dtype;
        long batch = sample.shape[0];
        int upFactor = 1 << Config.NumUpsamplers;
        bool forwardUpsampleSize = sample.shape[2] % upFactor != 0 || sample.shape[3] % upFactor != 0;

        var x = sample.to(dtype);
        if (Config.CenterInputSample) x = 2 * x - 1.0;
        var context = encoderHiddenStates.to(dtype);

        var emb = TimeEmbedding(time_proj, time_embedding, add_time_proj, add_embedding, timestep, batch, x.dtype, x.device, textEmbeds, timeIds, timestepCond,
            ClassEmbedding(classLabels, x.dtype, x.device));
        if (Config.TimeEmbeddingActFn is { } timeAct) emb = DiffusersActivations.Apply(timeAct, emb);

        x = conv_in.forward(x);
        // Skip states; a K-UNet's deepest block leaves absent ones (diffusers' None).
        var skips = new List<Tensor?> { x };
        // A T2I-Adapter's maps, taken in order while any are left (diffusers pops them from its list).
        var intrablock = new Queue<Tensor>(downIntrablockAdditionalResiduals ?? []);
        foreach (var block in down_blocks)
        {
            if (block is IKUNetDownBlock kBlock)
            {
                (x, var kResiduals) = kBlock.forward(x, emb, context);
                skips.AddRange(kResiduals);
                continue;
            }
            var extra = intrablock.Count > 0 ? intrablock.Dequeue().to(dtype) : null;
            Tensor hidden;
            Tensor[] residuals;
            if (block is CrossAttnDownBlock2D cross) (hidden, residuals) = cross.forward(x, emb, context, extra);
            else
            {
                (hidden, residuals) = ((IUNetDownBlock)block).forward(x, emb, context);
                // diffusers' `sample += residual`: in place, so the block's last skip state (the same tensor) has it too.
                if (extra is not null) hidden.add_(extra);
            }
            x = hidden;
            skips.AddRange(residuals);
        }
        // A ControlNet's residuals are added to every skip state, then to the mid block's output.
        if (downBlockAdditionalResiduals is not null)
            for (int i = 0; i < skips.Count; i++) skips[i] = skips[i]! + downBlockAdditionalResiduals[i];

        if (mid_block is not null)
        {
            x = mid_block.forward(x, emb, context);
            // T2I-Adapter-XL: a map left after the down blocks goes to the mid block's output when it has its shape.
            if (intrablock.Count > 0 && intrablock.Peek().shape.SequenceEqual(x.shape)) x = x.Consume(m => m + intrablock.Dequeue().to(dtype));
        }
        else x = x.alias(); // a handle of our own: freeing it below leaves the skip state it shares alone
        // From here x is always this forward's own tensor (the mid block's output, or a sum made here), freed as consumed.
        if (midBlockAdditionalResidual is not null) x = x.Consume(m => m + midBlockAdditionalResidual);

        long[]? upsampleSize = null;
        for (int i = 0; i < up_blocks.Count; i++)
        {
            bool isFinal = i == up_blocks.Count - 1;
            int take = up_blocks[i] is IKUNetUpBlock kUp ? kUp.NumResnets : ((IUNetUpBlock)up_blocks[i]).NumResnets;
            var residuals = skips.GetRange(skips.Count - take, take);
            skips.RemoveRange(skips.Count - take, take);
            if (up_blocks[i] is IKUNetUpBlock kBlock) x = kBlock.forward(x, residuals[^1], emb, context); // only the last one is concatenated
            else
            {
                if (!isFinal && forwardUpsampleSize)
                    upsampleSize = [skips[^1]!.shape[2], skips[^1]!.shape[3]];
                x = x.Consume(h => ((IUNetUpBlock)up_blocks[i]).forward(h, residuals.ConvertAll(r => r!), emb, context, upsampleSize));
            }
            foreach (var used in residuals) used?.Dispose(); // each skip state is consumed once
        }

        if (conv_norm_out is not null) x = x.Consume(conv_norm_out.forward).Consume(n => DiffusersActivations.Apply(Config.ActFn, n));
        x = x.Consume(conv_out.forward);
        return x.MoveToOuterDisposeScope();
    }

    /// <summary>Whether an IP-Adapter is loaded (<see cref="Loaders.IPAdapterWeights.Load(UNet2DConditionModel, string)"/>).</summary>
    public bool HasIpAdapter => _ipProjection is not null;

    /// <summary>The loaded IP-Adapters' image projections (diffusers' <c>encoder_hid_proj</c>), or null.</summary>
    public MultiIPAdapterImageProjection? EncoderHidProj => _ipProjection;

    /// <summary>The scale of each loaded IP-Adapter (empty without).</summary>
    public IReadOnlyList<double> IpAdapterScales => _ipState?.Scales ?? [];

    /// <summary>
    /// diffusers' <c>enable_freeu(s1, s2, b1, b2)</c>: FreeU in the up blocks from the next forward on (see
    /// <see cref="Unets.FreeU"/>; any value 0 leaves it off, as in diffusers); null is <c>disable_freeu()</c>.
    /// </summary>
    /// <exception cref="ArgumentException">A value is not finite.</exception>
    public void SetFreeU(FreeU? freeU)
    {
        if (freeU is not null && !new[] { freeU.S1, freeU.S2, freeU.B1, freeU.B2 }.All(double.IsFinite))
            throw new ArgumentException($"FreeU's s1, s2, b1, b2 must be finite numbers, got {freeU}.", nameof(freeU));
        // The K-diffusion up blocks (the latent upscaler's) have no FreeU path, in diffusers either: enable_freeu sets
        // attributes their forward never reads.
        foreach (var block in up_blocks.OfType<IUNetUpBlock>()) block.FreeU = freeU;
    }

    /// <summary>The FreeU the up blocks apply (<see cref="SetFreeU"/>), or null.</summary>
    public FreeU? FreeU => up_blocks.OfType<IUNetUpBlock>().FirstOrDefault()?.FreeU;

    /// <summary>
    /// The self-attention layers Perturbed-Attention Guidance applies to for <paramref name="pagAppliedLayers"/>, as
    /// diffusers' <c>PAGMixin._set_pag_attn_processor</c> resolves them: every <c>Attention</c> that is not a cross-attention
    /// whose module name a layer id finds as a regular expression (<c>re.search</c>: "mid" is the mid block's,
    /// "down_blocks.1" the second down block's, "up_blocks.0.attentions.0" one transformer of the first up block), unless
    /// the id and the name both end in the same number after their last dot. Names in module order, each once.
    /// </summary>
    /// <exception cref="ArgumentException">No layer ids, an id that is not a valid regular expression, or one that finds no
    /// self-attention layer (diffusers: "Cannot find PAG layer to set attention processor for").</exception>
    public IReadOnlyList<string> ResolvePagLayers(IReadOnlyList<string> pagAppliedLayers) =>
        PagLayerSelection.Resolve(named_modules().Where(m => m.module is Attention { IsCrossAttention: false }).Select(m => m.name).ToList(),
            pagAppliedLayers, "e.g. mid, down_blocks.1, up_blocks.0.attentions.1");

    /// <summary>
    /// Perturbed-Attention Guidance in the layers <paramref name="pagAppliedLayers"/> resolves to (see
    /// <see cref="ResolvePagLayers"/>) until the returned scope is disposed, as diffusers' PAG pipelines set the PAG
    /// processors for one call and restore the originals after it: the UNet's batch is then [uncond, cond, perturbed]
    /// (<paramref name="classifierFreeGuidance"/>) or [cond, perturbed], and those layers give the perturbed part the identity
    /// attention (its value projection through the output projection).
    /// </summary>
    /// <exception cref="ArgumentException">See <see cref="ResolvePagLayers"/>.</exception>
    /// <exception cref="InvalidOperationException">PAG is already on (another call's scope is open).</exception>
    public IDisposable PerturbAttention(IReadOnlyList<string> pagAppliedLayers, bool classifierFreeGuidance)
    {
        var names = ResolvePagLayers(pagAppliedLayers).ToHashSet(StringComparer.Ordinal);
        var layers = named_modules().Where(m => names.Contains(m.name)).Select(m => (Attention)m.module).ToList();
        if (named_modules().Any(m => m.module is Attention { PerturbedChunks: not 0 }))
            throw new InvalidOperationException("Perturbed-attention guidance is already on in this UNet (another call is running with it).");
        foreach (var layer in layers) layer.PerturbedChunks = classifierFreeGuidance ? 3 : 2;
        return new PerturbedAttentionScope(layers);
    }

    private sealed class PerturbedAttentionScope(List<Attention> layers) : IDisposable
    {
        public void Dispose()
        {
            foreach (var layer in layers) layer.PerturbedChunks = 0;
            layers.Clear();
        }
    }

    /// <summary>
    /// diffusers' <c>set_ip_adapter_scale</c> with one number per adapter (or one for all): the weight of the image
    /// attention in every IP-Adapter layer. 0 turns an adapter off.
    /// </summary>
    /// <exception cref="InvalidOperationException">No IP-Adapter is loaded.</exception>
    /// <exception cref="ArgumentException">The count of scales is neither 1 nor the number of adapters, or a scale is not finite.</exception>
    public void SetIpAdapterScale(params double[] scales)
    {
        var state = _ipState ?? throw new InvalidOperationException("No IP-Adapter is loaded: load one before setting its scale.");
        if (scales.Length != 1 && scales.Length != state.Scales.Length)
            throw new ArgumentException($"Give one scale or one per IP-Adapter ({state.Scales.Length}), got {scales.Length}.", nameof(scales));
        if (scales.Any(s => !double.IsFinite(s))) throw new ArgumentException("IP-Adapter scales must be finite numbers.", nameof(scales));
        for (int i = 0; i < state.Scales.Length; i++) state.Scales[i] = scales.Length == 1 ? scales[0] : scales[i];
    }

    /// <summary>Installs loaded IP-Adapter parts (the loader's last step): the projections become <c>encoder_hid_proj</c>.</summary>
    internal void AttachIpAdapter(MultiIPAdapterImageProjection projection, IPAdapterState state)
    {
        if (_ipProjection is not null) throw new InvalidOperationException("An IP-Adapter is already loaded into this UNet.");
        register_module("encoder_hid_proj", projection);
        (_ipProjection, _ipState) = (projection, state);
    }

    /// <summary>diffusers' <c>get_class_embed</c>: the labels' embedding in <paramref name="dtype"/> (a "timestep" class
    /// embedding first takes the labels' sinusoidal features, as the timestep's), or null without a class embedding.</summary>
    private Tensor? ClassEmbedding(Tensor? classLabels, ScalarType dtype, Device device)
    {
        if (class_embedding is null) return null;
        var labels = classLabels!.to(device);
        labels = Config.ClassEmbeddingKind switch
        {
            "embedding" => labels.to(ScalarType.Int64),
            "timestep" => time_proj.forward(labels.dim() == 0 ? labels.reshape(1) : labels).to(dtype),
            _ => labels.to(dtype),
        };
        return class_embedding.forward(labels).to(dtype);
    }

    /// <summary>The <c>class_labels</c> this UNet's class embedding takes (see <see cref="forward"/>), before any compute.</summary>
    private void ValidateClassLabels(Tensor sample, Tensor? classLabels)
    {
        const string name = "class_labels";
        string? kind = Config.ClassEmbeddingKind;
        long batch = sample.shape[0];
        if (kind is null)
        {
            if (classLabels is not null)
                throw new ArgumentException("class_labels were given, but this UNet has no class embedding (num_class_embeds / class_embed_type are not set).", name);
            return;
        }
        if (classLabels is null)
            throw new ArgumentException(kind == "embedding"
                ? $"This UNet has a class embedding of {Config.NumClassEmbeds} classes (num_class_embeds; the x4 upscaler's noise levels): class_labels are required."
                : $"This UNet has a class embedding (class_embed_type \"{kind}\"): class_labels are required.", name);
        bool perSample = classLabels.dim() >= 1 && (classLabels.shape[0] == batch || classLabels.shape[0] == 1);
        switch (kind)
        {
            case "embedding":
                if (classLabels.is_floating_point() || classLabels.dtype == ScalarType.Bool || classLabels.is_complex() || classLabels.dim() > 1
                    || (classLabels.dim() == 1 && !perSample))
                    throw new ArgumentException($"class_labels must be integer class indices, a scalar, [1] or [B={batch}], got {ShapeOf(classLabels)} {classLabels.dtype}.", name);
                long min = classLabels.min().item<long>(), max = classLabels.max().item<long>();
                if (min < 0 || max >= Config.NumClassEmbeds)
                    throw new ArgumentException($"class_labels must be in [0, {Config.NumClassEmbeds}) (num_class_embeds), got values from {min} to {max}.", name);
                break;
            case "timestep":
                if (classLabels.dim() > 1 || (classLabels.dim() == 1 && !perSample) || classLabels.dtype == ScalarType.Bool || classLabels.is_complex())
                    throw new ArgumentException($"class_labels of a \"timestep\" class embedding must be numbers, a scalar, [1] or [B={batch}], got {ShapeOf(classLabels)} {classLabels.dtype}.", name);
                break;
            default:
                long width = kind == "identity" ? Config.TimeEmbedDim : Config.ProjectionClassEmbeddingsInputDim!.Value;
                if (classLabels.dim() != 2 || !perSample || classLabels.shape[1] != width || !classLabels.is_floating_point())
                    throw new ArgumentException($"class_labels of a \"{kind}\" class embedding must be a floating [B={batch} or 1, {width}] tensor, got {ShapeOf(classLabels)} {classLabels.dtype}.", name);
                break;
        }
    }

    private void ValidateTimestepCond(Tensor sample, Tensor? timestepCond)
    {
        if (timestepCond is null) return;
        if (Config.TimeCondProjDim is not { } width)
            throw new ArgumentException("timestep_cond was given, but this UNet has no time_cond_proj_dim (it is not a guidance-distilled model such as LCM).", "timestep_cond");
        if (timestepCond.dim() != 2 || timestepCond.shape[0] != sample.shape[0] || timestepCond.shape[1] != width || !timestepCond.is_floating_point())
            throw new ArgumentException($"timestep_cond must be a floating [B={sample.shape[0]}, {width}] tensor (time_cond_proj_dim = {width}), got {ShapeOf(timestepCond)} {timestepCond.dtype}.", "timestep_cond");
    }

    private void ValidateImageEmbeds(Tensor sample, IReadOnlyList<Tensor>? imageEmbeds)
    {
        if (imageEmbeds is null) return;
        if (_ipProjection is null)
            throw new ArgumentException("image_embeds were given but no IP-Adapter is loaded into the UNet.", nameof(imageEmbeds));
        _ipProjection.CheckInputs(imageEmbeds);
        foreach (var e in imageEmbeds)
        {
            if (e.shape[0] != sample.shape[0])
                throw new ArgumentException($"image_embeds batch {e.shape[0]} differs from the sample batch {sample.shape[0]}.", nameof(imageEmbeds));
        }
    }

    private void Validate(Tensor sample, Tensor timestep, Tensor text, Tensor? textEmbeds, Tensor? timeIds)
    {
        ArgumentNullException.ThrowIfNull(sample);
        ArgumentNullException.ThrowIfNull(timestep);
        ArgumentNullException.ThrowIfNull(text);
        static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";
        if (sample.dim() != 4 || sample.shape[1] != Config.InChannels)
            throw new ArgumentException(
                $"sample must be [B, {Config.InChannels}, h, w] (in_channels = {Config.InChannels}), got {Shape(sample)}.", nameof(sample));
        if (sample.shape[0] == 0 || sample.shape[2] == 0 || sample.shape[3] == 0)
            throw new ArgumentException($"sample is empty: {Shape(sample)}.", nameof(sample));
        // KDownsample2D halves and KUpsample2D doubles exactly (other sides would not meet their skip states again), and
        // their reflect padding needs the deepest map to be at least 2 x 2.
        int kFactor = 1 << Config.NumUpsamplers;
        if (Config.IsKUNet && (sample.shape[2] % kFactor != 0 || sample.shape[3] % kFactor != 0 || sample.shape[2] < 2 * kFactor || sample.shape[3] < 2 * kFactor))
            throw new ArgumentException($"sample sides must be multiples of {kFactor}, at least {2 * kFactor}, for this K-UNet (its K up / down samplers), got {Shape(sample)}.", nameof(sample));
        long batch = sample.shape[0];
        string widths = string.Join(" or ", _crossAttentionDims);
        if (text.dim() != 3 || text.shape[0] != batch || (_crossAttentionDims.Length > 0 && !_crossAttentionDims.All(d => d == text.shape[2])))
            throw new ArgumentException(
                $"encoder_hidden_states must be [B={batch}, S, {widths}] (cross_attention_dim), got {Shape(text)}.", "encoder_hidden_states");
        if (timestep.dim() > 1 || (timestep.numel() != batch && timestep.numel() != 1))
            throw new ArgumentException($"timestep must be a scalar, [1] or [B={batch}], got {Shape(timestep)}.", nameof(timestep));
        if (!timestep.is_floating_point() && timestep.dtype is not (ScalarType.Int32 or ScalarType.Int64))
            throw new ArgumentException($"timestep must be a floating or integer tensor, got {timestep.dtype}.", nameof(timestep));
        foreach (var (t, name) in new[] { (sample, "sample"), (text, "encoder_hidden_states") })
            if (!t.is_floating_point())
                throw new ArgumentException($"{name} must be a floating-point tensor, got {t.dtype}.", name);
        if (add_embedding is not null)
            ValidateTextTime(textEmbeds, timeIds, batch, Config.AdditionTimeEmbedDim!.Value, Config.ProjectionClassEmbeddingsInputDim!.Value);
    }

    /// <summary>SDXL's <c>text_time</c> inputs (shared with the ControlNet, which takes the same conditioning).</summary>
    internal static void ValidateTextTime(Tensor? textEmbeds, Tensor? timeIds, long batch, int timeDim, int projection)
    {
        const string need = "this model has addition_embed_type \"text_time\" (SDXL) and needs ";
        if (textEmbeds is null)
            throw new ArgumentException(need + "text_embeds (the pooled text embedding, [B, T]).", "text_embeds");
        if (timeIds is null)
            throw new ArgumentException(need + "time_ids (original size, crop top-left, target size: [B, 6]).", "time_ids");
        if (textEmbeds.dim() != 2 || textEmbeds.shape[0] != batch || !textEmbeds.is_floating_point())
            throw new ArgumentException($"text_embeds must be a floating [B={batch}, T] tensor, got {ShapeOf(textEmbeds)} {textEmbeds.dtype}.", "text_embeds");
        if (timeIds.dim() != 2 || timeIds.shape[0] != batch)
            throw new ArgumentException($"time_ids must be [B={batch}, K], got {ShapeOf(timeIds)}.", "time_ids");
        long width = textEmbeds.shape[1] + timeIds.shape[1] * timeDim;
        if (width != projection)
            throw new ArgumentException(
                $"text_embeds width {textEmbeds.shape[1]} + {timeIds.shape[1]} time ids x addition_time_embed_dim {timeDim} = {width}, but " +
                $"projection_class_embeddings_input_dim is {projection}.", "text_embeds");
    }

    private static string ShapeOf(Tensor t) => "[" + string.Join(", ", t.shape) + "]";

    /// <summary>
    /// The embedding the blocks receive (before the UNet's optional time_embedding_act_fn): sinusoidal timestep features
    /// in float32 cast to <paramref name="dtype"/>, plus <c>cond_proj(timestep_cond)</c> when given, the time MLP, plus the
    /// <paramref name="classEmbedding"/> when given, plus SDXL's <c>text_time</c> embedding of the pooled text and the
    /// sinusoidal time ids. Shared by the UNet and the ControlNet, which compute it the same way.
    /// </summary>
    internal static Tensor TimeEmbedding(nn.Module<Tensor, Tensor> timeProj, TimestepEmbedding timeEmbedding, Timesteps? addTimeProj, TimestepEmbedding? addEmbedding,
        Tensor timestep, long batch, ScalarType dtype, Device device, Tensor? textEmbeds, Tensor? timeIds, Tensor? timestepCond = null,
        Tensor? classEmbedding = null)
    {
        var timesteps = timestep.dim() == 0 ? timestep.reshape(1) : timestep;
        timesteps = timesteps.to(device).expand(batch);
        var emb = timeEmbedding.forward(timeProj.forward(timesteps).to(dtype), timestepCond?.to(dtype, device));
        if (classEmbedding is not null) emb = emb + classEmbedding;
        if (addEmbedding is null) return emb;
        return emb + TextTimeEmbedding(addTimeProj!, addEmbedding, textEmbeds!, timeIds!, emb.dtype);
    }

    /// <summary>SDXL's <c>text_time</c> embedding (diffusers' <c>aug_emb</c>): the pooled text and the sinusoidal time ids
    /// through <c>add_embedding</c>, in <paramref name="dtype"/>.</summary>
    internal static Tensor TextTimeEmbedding(Timesteps addTimeProj, TimestepEmbedding addEmbedding, Tensor textEmbeds, Tensor timeIds, ScalarType dtype)
    {
        var timeEmbeds = addTimeProj.forward(timeIds.flatten()).reshape(textEmbeds.shape[0], -1);
        var addEmbeds = cat([textEmbeds, timeEmbeds], -1).to(dtype);
        return addEmbedding.forward(addEmbeds);
    }

    /// <summary>The shapes of the skip states for a [B, C, h, w] sample: conv_in's, then each down block's resnets (and downsampler).</summary>
    internal static List<long[]> SkipShapes(long batch, long height, long width, int[] channels, int[] layers, int downsamplePadding)
    {
        var shapes = new List<long[]> { new[] { batch, channels[0], height, width } };
        for (int i = 0; i < channels.Length; i++)
        {
            for (int l = 0; l < layers[i]; l++) shapes.Add([batch, channels[i], height, width]);
            if (i == channels.Length - 1) break;
            (height, width) = Downsampled(height, width, downsamplePadding);
            shapes.Add([batch, channels[i], height, width]);
        }
        return shapes;
    }

    /// <summary>
    /// The shapes of the T2I-Adapter maps (<c>down_intrablock_additional_residuals</c>) this UNet adds for a [B, C, h, w]
    /// sample, in the order it takes them: per down block, [B, block channels, side] at the block's input size for a
    /// cross-attention block (added before its downsampler), after its downsampler for a block without attention; then,
    /// with a mid block, the mid block's output shape. Fewer maps may be given (the first ones are used, as diffusers does).
    /// </summary>
    public IReadOnlyList<long[]> IntrablockResidualShapes(long batch, long height, long width)
    {
        var channels = Config.BlockOutChannels;
        int n = channels.Length;
        var shapes = new List<long[]>();
        long h = height, w = width;
        for (int i = 0; i < n; i++)
        {
            bool cross = Config.DownBlockTypes[i] == "CrossAttnDownBlock2D";
            if (cross) shapes.Add([batch, channels[i], h, w]);
            if (i < n - 1) (h, w) = Downsampled(h, w, Config.DownsamplePadding);
            if (!cross) shapes.Add([batch, channels[i], h, w]);
        }
        if (mid_block is not null) shapes.Add([batch, channels[^1], h, w]);
        return shapes;
    }

    /// <summary>
    /// Throws unless T2I-Adapter maps of <paramref name="shapes"/> fit a [<paramref name="batch"/>, C,
    /// <paramref name="height"/>, <paramref name="width"/>] sample (see <see cref="IntrablockResidualShapes"/>). A map
    /// diffusers would leave unused (more maps than blocks, or a last map that does not have the mid block's shape) is
    /// refused rather than ignored.
    /// </summary>
    /// <exception cref="ArgumentException">A map has the wrong shape, or there are more maps than this UNet takes.</exception>
    public void CheckIntrablockResidualShapes(IReadOnlyList<long[]> shapes, long batch, long height, long width)
    {
        ArgumentNullException.ThrowIfNull(shapes);
        const string name = "down_intrablock_additional_residuals";
        var expected = IntrablockResidualShapes(batch, height, width);
        int downs = Config.DownBlockTypes.Length;
        if (shapes.Count > expected.Count)
            throw new ArgumentException($"{name} holds {shapes.Count} feature maps, but this UNet takes at most {expected.Count} (one per down block" +
                $"{(mid_block is null ? "" : ", then one for the mid block")}): {MapsDescription(expected)}. Use an adapter made for this base model.", name);
        for (int i = 0; i < shapes.Count; i++)
            if (!shapes[i].SequenceEqual(expected[i]))
                throw new ArgumentException($"{name}[{i}] must be [{string.Join(", ", expected[i])}] ({(i < downs ? $"down block {i}" : "the mid block's output")}), got " +
                    $"[{string.Join(", ", shapes[i])}]; this UNet takes {MapsDescription(expected)}. Use an adapter made for this base model (and a size it supports).", name);
    }

    private static string MapsDescription(IEnumerable<long[]> shapes) => string.Join(", ", shapes.Select(s => "[" + string.Join(", ", s) + "]"));

    /// <summary>A side after Downsample2D's 3x3 stride-2 conv with this padding (padding 0 pads right and bottom by one instead).</summary>
    private static (long Height, long Width) Downsampled(long height, long width, int padding) => padding == 0
        ? ((height - 2) / 2 + 1, (width - 2) / 2 + 1)
        : ((height + 2 * padding - 3) / 2 + 1, (width + 2 * padding - 3) / 2 + 1);

    private void ValidateResiduals(Tensor sample, IReadOnlyList<Tensor>? down, Tensor? mid)
    {
        if (down is null && mid is null) return;
        if (down is null || mid is null)
            throw new ArgumentException("A ControlNet gives down_block_additional_residuals and mid_block_additional_residual together; pass both or neither (a T2I-Adapter's feature maps go in down_intrablock_additional_residuals).",
                down is null ? "down_block_additional_residuals" : "mid_block_additional_residual");
        var shapes = SkipShapes(sample.shape[0], sample.shape[2], sample.shape[3], Config.BlockOutChannels,
            Config.LayersPerBlock.Expand(Config.DownBlockTypes.Length, "layers_per_block"), Config.DownsamplePadding);
        if (down.Count != shapes.Count)
            throw new ArgumentException($"down_block_additional_residuals must hold {shapes.Count} tensors (one per skip state of this UNet), got {down.Count}.",
                "down_block_additional_residuals");
        for (int i = 0; i < shapes.Count; i++)
            if (!down[i].shape.SequenceEqual(shapes[i]))
                throw new ArgumentException($"down_block_additional_residuals[{i}] must be [{string.Join(", ", shapes[i])}], got {ShapeOf(down[i])}.",
                    "down_block_additional_residuals");
        if (mid_block is not null && !mid.shape.SequenceEqual(shapes[^1]))
            throw new ArgumentException($"mid_block_additional_residual must be [{string.Join(", ", shapes[^1])}], got {ShapeOf(mid)}.", "mid_block_additional_residual");
    }
}
