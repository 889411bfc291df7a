using DiffusersSharp.IO;
using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// The Z-Image single-stream diffusion transformer (diffusers <c>ZImageTransformer2DModel</c>; Tongyi-MAI/Z-Image-Turbo,
/// 6.15 B parameters). Its inputs are lists, one entry per sample, each of its own size: latent images [C, F, H, W]
/// and caption features [L, cap_feat_dim] (Qwen3's hidden states of the prompt's real tokens). Each image is cut into
/// patches (<c>all_x_embedder["p-f"]</c>) and each caption embedded (<c>cap_embedder</c>: RMSNorm, Linear); both
/// sequences are padded to a multiple of 32 with their last row, whose embeddings are replaced by the learned
/// <c>x_pad_token</c> / <c>cap_pad_token</c>. Images run through the timestep-modulated <c>noise_refiner</c>, captions through
/// the unmodulated <c>context_refiner</c>, then each sample's image and caption tokens are joined (image first) and run
/// through the modulated <c>layers</c>; <c>all_final_layer["p-f"]</c> projects the image tokens back to patches. Attention
/// uses 3-axis RoPE over (caption index or frame, row, column): caption token j sits at (1 + j, 0, 0), image patch
/// (f, h, w) at (padded caption length + 1 + f, h, w), padding patches at (0, 0, 0). Samples of different lengths are
/// zero-padded to the longest and masked out as keys, exactly as diffusers batches them (<c>pad_sequence</c>).
/// State-dict keys equal the diffusers keys.
/// </summary>
public sealed class ZImageTransformer2DModel : nn.Module
{
    /// <summary>diffusers' <c>SEQ_MULTI_OF</c>: image and caption sequences are padded to a multiple of it.</summary>
    public const int SequenceMultiple = 32;

#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly ModuleDict<Linear> all_x_embedder;
    private readonly ModuleDict<ZImageFinalLayer> all_final_layer;
    private readonly ModuleList<ZImageTransformerBlock> noise_refiner;
    private readonly ModuleList<ZImageTransformerBlock> context_refiner;
    private readonly ZImageTimestepEmbedder t_embedder;
    private readonly ModuleList<nn.Module<Tensor, Tensor>> cap_embedder;
    private readonly Parameter x_pad_token;
    private readonly Parameter cap_pad_token;
    private readonly ModuleList<ZImageTransformerBlock> layers;
#pragma warning restore IDE1006

    /// <summary>The configuration the model was built from.</summary>
    public ZImageTransformer2DModelConfig Config { get; }

    /// <summary>The element type of the weights (inputs are converted to it).</summary>
    public ScalarType Dtype => x_pad_token.dtype;

    /// <summary>The device of the weights.</summary>
    public Device Device => x_pad_token.device;

    /// <summary>Builds the model; on the <c>meta</c> device it holds shapes only (for counting or as a loading shell).</summary>
    /// <exception cref="ArgumentException">The config is invalid.</exception>
    public ZImageTransformer2DModel(ZImageTransformer2DModelConfig config, Device? device = null, ScalarType? dtype = null)
        : base(nameof(ZImageTransformer2DModel))
    {
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        Config = config;
        int dim = config.Dim;
        all_x_embedder = new ModuleDict<Linear>();
        all_final_layer = new ModuleDict<ZImageFinalLayer>();
        for (int i = 0; i < config.AllPatchSize.Length; i++)
        {
            int p = config.AllPatchSize[i], f = config.AllFPatchSize[i];
            string key = ZImageTransformer2DModelConfig.PatchKey(p, f);
            long patchChannels = (long)f * p * p * config.InChannels;
            all_x_embedder.Add((key, new Linear(patchChannels, dim, hasBias: true, device: device, dtype: dtype)));
            all_final_layer.Add((key, new ZImageFinalLayer(dim, patchChannels, config.AdaLnEmbedDim, device, dtype)));
        }
        noise_refiner = new ModuleList<ZImageTransformerBlock>();
        context_refiner = new ModuleList<ZImageTransformerBlock>();
        for (int i = 0; i < config.NRefinerLayers; i++)
        {
            noise_refiner.Add(new ZImageTransformerBlock(config, modulation: true, device, dtype));
            context_refiner.Add(new ZImageTransformerBlock(config, modulation: false, device, dtype));
        }
        t_embedder = new ZImageTimestepEmbedder(config.AdaLnEmbedDim, midSize: 1024, device: device, dtype: dtype);
        cap_embedder = new ModuleList<nn.Module<Tensor, Tensor>>(new RMSNorm(config.CapFeatDim, config.NormEps, device, dtype),
            new Linear(config.CapFeatDim, dim, hasBias: true, device: device, dtype: dtype));
        x_pad_token = new Parameter(torch.zeros([1, dim], dtype: dtype ?? ScalarType.Float32, device: device), requires_grad: false);
        cap_pad_token = new Parameter(torch.zeros([1, dim], dtype: dtype ?? ScalarType.Float32, device: device), requires_grad: false);
        layers = new ModuleList<ZImageTransformerBlock>();
        for (int i = 0; i < config.NLayers; i++) layers.Add(new ZImageTransformerBlock(config, modulation: true, device, dtype));
        RegisterComponents();
    }

    /// <summary>
    /// Loads a diffusers <c>transformer</c> folder (config.json + safetensors, single or sharded), strictly: every key
    /// and shape must match. <paramref name="dtype"/> converts floating weights (null keeps the stored type).
    /// </summary>
    /// <exception cref="FileNotFoundException">config.json or the weights are missing.</exception>
    /// <exception cref="WeightLoadException">The weights do not match the config.</exception>
    public static ZImageTransformer2DModel FromPretrained(string folder, ScalarType? dtype = null, Device? device = null, string? variant = null) =>
        PretrainedLoader.Load<ZImageTransformer2DModelConfig, ZImageTransformer2DModel>(folder, (c, meta) => new ZImageTransformer2DModel(c, meta, dtype), dtype, device, variant);

    /// <summary>
    /// Checks inputs of <see cref="forward"/> against the config before any compute: as many images as captions (at least
    /// one), images [in_channels, F, H, W] divisible by the patch sizes, captions [L ≥ 1, cap_feat_dim], t with one value
    /// or one per sample, a configured patch pair, and every RoPE position inside <c>axes_lens</c> (diffusers would fail
    /// indexing its table).
    /// </summary>
    /// <exception cref="ArgumentException">An input does not fit, with the reason.</exception>
    public void CheckInputs(IReadOnlyList<Tensor> x, Tensor t, IReadOnlyList<Tensor> capFeats, int patchSize = 2, int fPatchSize = 1)
    {
        ArgumentNullException.ThrowIfNull(x);
        ArgumentNullException.ThrowIfNull(t);
        ArgumentNullException.ThrowIfNull(capFeats);
        var c = Config;
        if (x.Count == 0) throw new ArgumentException("The Z-Image transformer needs at least one latent image.", nameof(x));
        if (capFeats.Count != x.Count)
            throw new ArgumentException($"{x.Count} latent images were given with {capFeats.Count} caption features; give one caption per image.", nameof(capFeats));
        string key = ZImageTransformer2DModelConfig.PatchKey(patchSize, fPatchSize);
        if (!c.AllPatchSize.Zip(c.AllFPatchSize, ZImageTransformer2DModelConfig.PatchKey).Contains(key))
            throw new ArgumentException($"patch_size {patchSize} with f_patch_size {fPatchSize} is not one of this transformer's patch pairs ({string.Join(", ", c.AllPatchSize.Zip(c.AllFPatchSize, ZImageTransformer2DModelConfig.PatchKey))}).", nameof(patchSize));
        if (t.numel() != 1 && (t.dim() != 1 || t.shape[0] != x.Count))
            throw new ArgumentException($"t must hold one timestep or one per sample ({x.Count}), got [{string.Join(", ", t.shape)}].", nameof(t));
        for (int i = 0; i < x.Count; i++)
        {
            var image = x[i] ?? throw new ArgumentException($"Latent image {i} is null.", nameof(x));
            var cap = capFeats[i] ?? throw new ArgumentException($"Caption features {i} are null.", nameof(capFeats));
            if (image.dim() != 4 || image.shape[0] != c.InChannels || image.shape[1] % fPatchSize != 0 || image.shape[2] % patchSize != 0
                || image.shape[3] % patchSize != 0 || image.shape[1] < 1 || image.shape[2] < 1 || image.shape[3] < 1)
                throw new ArgumentException($"Latent image {i} must be [{c.InChannels}, F, H, W] with F a multiple of {fPatchSize} and H, W multiples of {patchSize}, got [{string.Join(", ", image.shape)}].", nameof(x));
            if (cap.dim() != 2 || cap.shape[0] < 1 || cap.shape[1] != c.CapFeatDim)
                throw new ArgumentException($"Caption features {i} must be [L, {c.CapFeatDim}] with at least one token, got [{string.Join(", ", cap.shape)}].", nameof(capFeats));
            if (RopeRangeProblem(cap.shape[0], image.shape[1] / fPatchSize, image.shape[2] / patchSize, image.shape[3] / patchSize) is { } problem)
                throw new ArgumentException($"Sample {i}: {problem}", nameof(x));
        }
    }

    /// <summary>
    /// Why a sample of <paramref name="captionLength"/> caption tokens and <paramref name="frames"/> × <paramref name="rows"/>
    /// × <paramref name="cols"/> patches has RoPE positions past <c>axes_lens</c>, or null when it fits: caption positions
    /// run to the padded caption length, image frames to that plus the frames; rows and columns from 0.
    /// </summary>
    public string? RopeRangeProblem(long captionLength, long frames, long rows, long cols)
    {
        var lens = Config.AxesLens;
        long capPadded = PaddedLength(captionLength);
        if (capPadded + frames < lens[0] && rows <= lens[1] && cols <= lens[2]) return null;
        return $"{captionLength} caption tokens and {frames} x {rows} x {cols} patches need RoPE positions up to " +
            $"({capPadded + frames}, {rows - 1}, {cols - 1}), past this transformer's axes_lens [{string.Join(", ", lens)}]: use a shorter caption or a smaller image.";
    }

    /// <summary>The length of a sequence of <paramref name="length"/> after padding to a multiple of <see cref="SequenceMultiple"/>.</summary>
    public static long PaddedLength(long length) => length + (SequenceMultiple - length % SequenceMultiple) % SequenceMultiple;

    /// <summary>
    /// Predicts, for each sample, the flow-matching output of latent image <paramref name="x"/>[i] [C, F, H, W] under caption
    /// features <paramref name="cap_feats"/>[i] [L_i, cap_feat_dim] at time <paramref name="t"/> [B] (or one value for all),
    /// as diffusers' <c>forward(x, t, cap_feats, patch_size, f_patch_size)</c>: <c>t</c> is scaled by <c>t_scale</c> inside
    /// (the Z-Image pipelines pass <c>(1000 − timestep) / 1000</c>, 0 at pure noise). Returns one [C, F, H, W] tensor per
    /// sample in the model dtype.
    /// </summary>
    /// <exception cref="ArgumentException">An input does not fit (<see cref="CheckInputs"/>); thrown before any compute.</exception>
    public IReadOnlyList<Tensor> forward(IReadOnlyList<Tensor> x, Tensor t, IReadOnlyList<Tensor> cap_feats, int patch_size = 2, int f_patch_size = 1)
    {
        CheckInputs(x, t, cap_feats, patch_size, f_patch_size);
        using var scope = NewDisposeScope();
        var dtype = Dtype;
        var device = Device;
        int batch = x.Count;
        string key = ZImageTransformer2DModelConfig.PatchKey(patch_size, f_patch_size);

        var tt = (t.numel() == 1 ? t.reshape(1).expand(batch) : t).to(device);
        var adaln = t_embedder.forward(tt * Config.TScale).to(dtype);

        // Patchify and pad each sample, as diffusers' patchify_and_embed.
        var images = new Tensor[batch];
        var imagePads = new Tensor[batch];
        var imagePositions = new Tensor[batch];
        var captions = new Tensor[batch];
        var captionPads = new Tensor[batch];
        var captionPositions = new Tensor[batch];
        var sizes = new long[batch][];
        for (int i = 0; i < batch; i++)
        {
            var cap = cap_feats[i].to(device);
            long capLength = cap.shape[0], capPadded = PaddedLength(capLength);
            captions[i] = PadWithLastRow(cap, capPadded);
            captionPads[i] = PadMask(capLength, capPadded, device);
            captionPositions[i] = Grid(capPadded, 1, 1, 1, device);

            var image = x[i].to(device);
            long channels = image.shape[0], frames = image.shape[1], height = image.shape[2], width = image.shape[3];
            sizes[i] = [channels, frames, height, width];
            long ft = frames / f_patch_size, ht = height / patch_size, wt = width / patch_size;
            var patches = image.view(channels, ft, f_patch_size, ht, patch_size, wt, patch_size)
                .permute(1, 3, 5, 2, 4, 6, 0).reshape(ft * ht * wt, (long)f_patch_size * patch_size * patch_size * channels);
            long imageLength = patches.shape[0], imagePadded = PaddedLength(imageLength);
            images[i] = PadWithLastRow(patches, imagePadded);
            imagePads[i] = PadMask(imageLength, imagePadded, device);
            var positions = Grid(ft, ht, wt, capPadded + 1, device);
            imagePositions[i] = imagePadded == imageLength ? positions
                : torch.cat([positions, torch.zeros([imagePadded - imageLength, 3], ScalarType.Int64, device)], 0);
        }

        // Image tokens: embed, put the pad token on the padding, refine.
        var xLengths = images.Select(s => s.shape[0]).ToArray();
        var embedded = all_x_embedder[key].forward(torch.cat(images, 0).to(dtype));
        embedded = torch.where(torch.cat(imagePads, 0).unsqueeze(1), x_pad_token, embedded);
        var xRotary = imagePositions.Select(RotaryOf).ToArray();
        var xs = PadSequence(embedded.split(xLengths, 0));
        var xCosSin = (PadSequence(xRotary.Select(r => r.Cos).ToArray()), PadSequence(xRotary.Select(r => r.Sin).ToArray()));
        var xMask = LengthMask(xLengths, device);
        foreach (var block in noise_refiner) xs = block.forward(xs, xMask, xCosSin, adaln);

        // Caption tokens: embed, pad token, refine (no modulation).
        var capLengths = captions.Select(s => s.shape[0]).ToArray();
        // No cast before the RMSNorm: it takes the features' own type and returns the weights' (diffusers' RMSNorm).
        var capEmbedded = cap_embedder[1].forward(cap_embedder[0].forward(torch.cat(captions, 0)));
        capEmbedded = torch.where(torch.cat(captionPads, 0).unsqueeze(1), cap_pad_token, capEmbedded);
        var capRotary = captionPositions.Select(RotaryOf).ToArray();
        var caps = PadSequence(capEmbedded.split(capLengths, 0));
        var capCosSin = (PadSequence(capRotary.Select(r => r.Cos).ToArray()), PadSequence(capRotary.Select(r => r.Sin).ToArray()));
        var capMask = LengthMask(capLengths, device);
        foreach (var block in context_refiner) caps = block.forward(caps, capMask, capCosSin, null);

        // Each sample's image tokens, then its caption tokens, through the main layers.
        var unifiedItems = new Tensor[batch];
        var unifiedCos = new Tensor[batch];
        var unifiedSin = new Tensor[batch];
        var unifiedLengths = new long[batch];
        for (int i = 0; i < batch; i++)
        {
            unifiedItems[i] = torch.cat([xs[i].narrow(0, 0, xLengths[i]), caps[i].narrow(0, 0, capLengths[i])], 0);
            unifiedCos[i] = torch.cat([xRotary[i].Cos, capRotary[i].Cos], 0);
            unifiedSin[i] = torch.cat([xRotary[i].Sin, capRotary[i].Sin], 0);
            unifiedLengths[i] = xLengths[i] + capLengths[i];
        }
        var unified = PadSequence(unifiedItems);
        var unifiedCosSin = (PadSequence(unifiedCos), PadSequence(unifiedSin));
        var unifiedMask = LengthMask(unifiedLengths, device);
        foreach (var block in layers) unified = block.forward(unified, unifiedMask, unifiedCosSin, adaln);
        unified = all_final_layer[key].forward(unified, adaln);

        // Unpatchify each sample's own image tokens: "f h w pf ph pw c -> c (f pf) (h ph) (w pw)".
        var results = new Tensor[batch];
        int outChannels = Config.InChannels;
        for (int i = 0; i < batch; i++)
        {
            long frames = sizes[i][1], height = sizes[i][2], width = sizes[i][3];
            long ft = frames / f_patch_size, ht = height / patch_size, wt = width / patch_size;
            results[i] = unified[i].narrow(0, 0, ft * ht * wt)
                .view(ft, ht, wt, f_patch_size, patch_size, patch_size, outChannels)
                .permute(6, 0, 3, 1, 4, 2, 5).reshape(outChannels, frames, height, width)
                .MoveToOuterDisposeScope();
        }
        return results;
    }

    /// <summary>Rows of <paramref name="rows"/> [N, D] followed by copies of its last row up to <paramref name="length"/>.</summary>
    private static Tensor PadWithLastRow(Tensor rows, long length) =>
        rows.shape[0] == length ? rows : torch.cat([rows, rows.narrow(0, rows.shape[0] - 1, 1).repeat(length - rows.shape[0], 1)], 0);

    /// <summary>False for the <paramref name="length"/> real rows, true for the padding up to <paramref name="padded"/>.</summary>
    private static Tensor PadMask(long length, long padded, Device device) => torch.arange(padded, device: device) >= length;

    /// <summary>diffusers' <c>create_coordinate_grid((f, h, w), start=(f0, 0, 0))</c> flattened: [f·h·w, 3] int64, row-major.</summary>
    private static Tensor Grid(long frames, long rows, long cols, long frameStart, Device device)
    {
        var f = torch.arange(frameStart, frameStart + frames, device: device).view(frames, 1, 1).expand(frames, rows, cols);
        var h = torch.arange(rows, device: device).view(1, rows, 1).expand(frames, rows, cols);
        var w = torch.arange(cols, device: device).view(1, 1, cols).expand(frames, rows, cols);
        return torch.stack([f, h, w], -1).reshape(frames * rows * cols, 3);
    }

    /// <summary>
    /// diffusers' <c>RopeEmbedder</c> for position ids [N, 3]: per axis of width d, <c>freq_k = 1 / θ^(2k/d)</c> and the
    /// angle <c>pos · freq_k</c> in float64, rounded to float32, then <c>torch.polar(1, angle)</c> (cos and sin of the
    /// float32 angle, rounded to float32). Returned as real (cos, sin) [N, head_dim], each value in the two columns of its
    /// pair, for <see cref="FluxPosEmbed.Apply"/>.
    /// </summary>
    private (Tensor Cos, Tensor Sin) RotaryOf(Tensor ids)
    {
        var cos = new Tensor[3];
        var sin = new Tensor[3];
        var positions = ids.to(ScalarType.Float64);
        for (int axis = 0; axis < 3; axis++)
        {
            int d = Config.AxesDims[axis];
            var exponent = torch.arange(0, d, 2, dtype: ScalarType.Float64, device: ids.device) / d;
            // theta ** exponent as ATen computes a scalar base (see FluxPosEmbed.RotaryCosSin).
            var freqs = 1.0 / torch.full_like(exponent, Config.RopeTheta).pow(exponent);
            var angles = (positions[.., axis].unsqueeze(1) * freqs.unsqueeze(0)).to(ScalarType.Float32).to(ScalarType.Float64);
            cos[axis] = angles.cos().to(ScalarType.Float32).repeat_interleave(2, dim: 1, output_size: d);
            sin[axis] = angles.sin().to(ScalarType.Float32).repeat_interleave(2, dim: 1, output_size: d);
        }
        return (torch.cat(cos, 1), torch.cat(sin, 1));
    }

    /// <summary><c>pad_sequence(items, batch_first=True, padding_value=0)</c>: [B, max length, ...].</summary>
    private static Tensor PadSequence(IReadOnlyList<Tensor> items)
    {
        long max = items.Max(s => s.shape[0]);
        return torch.stack(items.Select(s => s.shape[0] == max ? s
            : torch.cat([s, torch.zeros([max - s.shape[0], .. s.shape[1..]], s.dtype, s.device)], 0)).ToArray(), 0);
    }

    /// <summary>[B, max length] with true on each sample's first <paramref name="lengths"/>[i] positions.</summary>
    private static Tensor LengthMask(long[] lengths, Device device) =>
        torch.arange(lengths.Max(), device: device).unsqueeze(0) < torch.tensor(lengths, device: device).unsqueeze(1);
}

/// <summary>
/// diffusers' <c>TimestepEmbedder</c> of transformer_z_image.py: 256 sinusoidal features of <c>t</c> ([cos, sin],
/// <c>freq_k = exp(−ln(10000)·k / 128)</c>, float32), cast to the weights' type, then <c>mlp</c>: Linear(256 → mid), SiLU,
/// Linear(mid → out).
/// </summary>
public sealed class ZImageTimestepEmbedder : nn.Module<Tensor, Tensor>
{
    private const int FrequencyEmbeddingSize = 256;

#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly ModuleList<nn.Module<Tensor, Tensor>> mlp;
#pragma warning restore IDE1006
    private readonly Timesteps _frequencies;

    /// <summary>Creates the embedder with output width <paramref name="outSize"/> and hidden width <paramref name="midSize"/>.</summary>
    public ZImageTimestepEmbedder(int outSize, int midSize, Device? device = null, ScalarType? dtype = null) : base(nameof(ZImageTimestepEmbedder))
    {
        mlp = new ModuleList<nn.Module<Tensor, Tensor>>(
            new Linear(FrequencyEmbeddingSize, midSize, hasBias: true, device: device, dtype: dtype),
            nn.SiLU(),
            new Linear(midSize, outSize, hasBias: true, device: device, dtype: dtype));
        _frequencies = new Timesteps(FrequencyEmbeddingSize, flipSinToCos: true, downscaleFreqShift: 0);
        RegisterComponents();
    }

    /// <summary>Embeds the 1-D times <paramref name="t"/> [B] (already scaled by t_scale) as [B, out].</summary>
    public override Tensor forward(Tensor t)
    {
        using var scope = NewDisposeScope();
        var features = _frequencies.forward(t).to(((Linear)mlp[0]).weight!.dtype);
        return mlp[2].forward(mlp[1].forward(mlp[0].forward(features))).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// diffusers' <c>FinalLayer</c> of transformer_z_image.py: LayerNorm without affine (eps 1e-6), scaled by
/// <c>1 + adaLN_modulation(c)</c> (SiLU, then Linear), then <c>linear</c> to the patch channels.
/// </summary>
public sealed class ZImageFinalLayer : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly LayerNorm norm_final;
    private readonly Linear linear;
    private readonly ModuleList<nn.Module<Tensor, Tensor>> adaLN_modulation;
#pragma warning restore IDE1006

    /// <summary>Creates the layer of width <paramref name="hiddenSize"/> with <paramref name="outChannels"/> outputs.</summary>
    public ZImageFinalLayer(int hiddenSize, long outChannels, int adaLnEmbedDim, Device? device = null, ScalarType? dtype = null)
        : base(nameof(ZImageFinalLayer))
    {
        norm_final = nn.LayerNorm(hiddenSize, eps: 1e-6, elementwise_affine: false, device: device, dtype: dtype);
        linear = new Linear(hiddenSize, outChannels, hasBias: true, device: device, dtype: dtype);
        adaLN_modulation = new ModuleList<nn.Module<Tensor, Tensor>>(nn.SiLU(),
            new Linear(adaLnEmbedDim, hiddenSize, hasBias: true, device: device, dtype: dtype));
        RegisterComponents();
    }

    /// <summary>Projects <paramref name="x"/> [B, S, hidden] under the timestep embedding <paramref name="c"/> [B, adaLN width].</summary>
    public Tensor forward(Tensor x, Tensor c)
    {
        using var scope = NewDisposeScope();
        var scale = adaLN_modulation[1].forward(adaLN_modulation[0].forward(c)) + 1.0;
        return linear.forward(norm_final.forward(x) * scale.unsqueeze(1)).MoveToOuterDisposeScope();
    }
}
