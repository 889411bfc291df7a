using System.Globalization;
using System.Text.RegularExpressions;
using DiffusersSharp.IO;
using DiffusersSharp.Models.Transformers;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Loaders;

/// <summary>
/// Reads original single-file checkpoints into diffusers' state-dict names, as diffusers' <c>single_file_utils</c> does:
/// Stability AI's SD3 files (<c>sd3.5_medium.safetensors</c>: the MMDiT under <c>model.diffusion_model.</c>, the LDM-layout
/// VAE under <c>first_stage_model.</c> or <c>vae.</c>; text encoders of <c>*_incl_clips*</c> files are not read, the model
/// folder's are used) and, in SingleFileConversion.Ldm.cs, SD 1.x / 2.x / SDXL files. Converted tensors are views of the
/// mapped file where no arithmetic is needed; they belong to the caller.
/// </summary>
public static partial class SingleFileConversion
{
    /// <summary>The prefix of the MMDiT's keys.</summary>
    public const string TransformerPrefix = "model.diffusion_model.";

    private static readonly string[] VaePrefixes = ["first_stage_model.", "vae."];

    /// <summary>The SD3 pipeline components an original SD3 file replaces: <c>transformer</c>, and <c>vae</c> when it has one.</summary>
    private static HashSet<string> SD3ComponentsIn(SafetensorsFile file)
    {
        var components = new HashSet<string>(StringComparer.Ordinal) { "transformer" };
        if (VaePrefix(file) is not null) components.Add("vae");
        return components;
    }

    /// <summary>Whether <paramref name="file"/> holds an SD3 MMDiT.</summary>
    public static bool HasSD3Transformer(SafetensorsFile file) => file.Tensors.ContainsKey(TransformerPrefix + "context_embedder.weight");

    /// <summary>The VAE key prefix of <paramref name="file"/>, or null when it has no VAE.</summary>
    public static string? VaePrefix(SafetensorsFile file) =>
        VaePrefixes.FirstOrDefault(p => file.Tensors.ContainsKey(p + "decoder.conv_out.weight"));

    /// <summary>
    /// The MMDiT's config from its keys (diffusers' SD3 conversion): layers from the highest <c>joint_blocks</c> index,
    /// caption projection and joint attention widths from <c>context_embedder</c>, dual-attention layers from the
    /// <c>attn2</c> keys, RMS QK-norm from <c>ln_q</c>, the position table's side from <c>pos_embed</c>, and (as the
    /// original models have it) as many 64-wide heads as layers.
    /// </summary>
    /// <exception cref="InvalidDataException">The file holds no SD3 MMDiT.</exception>
    public static SD3Transformer2DModelConfig InferSD3TransformerConfig(SafetensorsFile file)
    {
        if (!HasSD3Transformer(file))
            throw new InvalidDataException($"{Path.GetFileName(file.Header.Path)} holds no SD3 MMDiT ({TransformerPrefix}context_embedder.weight).");
        long[] Shape(string key) => file.Tensors.TryGetValue(TransformerPrefix + key, out var info) ? info.Shape
            : throw new InvalidDataException($"{Path.GetFileName(file.Header.Path)} lacks {TransformerPrefix}{key}.");
        var blocks = file.Tensors.Keys.Select(k => JointBlockIndex().Match(k)).Where(m => m.Success)
            .Select(m => (Index: int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), Tail: m.Groups[2].Value)).ToList();
        int layers = blocks.Max(b => b.Index) + 1;
        var context = Shape("context_embedder.weight");
        var patch = Shape("x_embedder.proj.weight");
        long positions = Shape("pos_embed")[1];
        int side = (int)Math.Round(Math.Sqrt(positions));
        if (side * side != positions) throw new InvalidDataException($"pos_embed has {positions} positions, not a square.");
        return new SD3Transformer2DModelConfig
        {
            NumLayers = layers,
            NumAttentionHeads = layers,
            AttentionHeadDim = 64,
            CaptionProjectionDim = (int)context[0],
            JointAttentionDim = (int)context[1],
            InChannels = (int)patch[1],
            PatchSize = (int)patch[2],
            OutChannels = (int)patch[1],
            PooledProjectionDim = (int)Shape("y_embedder.mlp.0.weight")[1],
            PosEmbedMaxSize = side,
            DualAttentionLayers = blocks.Where(b => b.Tail.StartsWith("x_block.attn2.", StringComparison.Ordinal)).Select(b => b.Index).Distinct().Order().ToArray(),
            QkNorm = blocks.Any(b => b.Tail.EndsWith(".ln_q.weight", StringComparison.Ordinal)) ? "rms_norm" : null,
        };
    }

    /// <summary>
    /// The MMDiT in diffusers' names: renamed, each fused <c>qkv</c> chunked into q, k, v, and the (shift, scale) halves of
    /// <c>final_layer.adaLN_modulation</c> and of the last block's context modulation swapped into diffusers' (scale, shift).
    /// </summary>
    public static Dictionary<string, Tensor> ConvertSD3Transformer(SafetensorsFile file, int numLayers)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var key in file.Tensors.Keys.Where(k => k.StartsWith(TransformerPrefix, StringComparison.Ordinal)))
            {
                string name = key[TransformerPrefix.Length..];
                var tensor = file.Read(key);
                foreach (var (target, value) in ConvertTransformerTensor(name, tensor, numLayers)) result.Add(target, value);
            }
            return result;
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
    }

    private static IEnumerable<(string, Tensor)> ConvertTransformerTensor(string name, Tensor tensor, int numLayers)
    {
        string? simple = name switch
        {
            "pos_embed" => "pos_embed.pos_embed",
            _ when name.StartsWith("x_embedder.proj.", StringComparison.Ordinal) => "pos_embed.proj." + name["x_embedder.proj.".Length..],
            _ when name.StartsWith("t_embedder.mlp.", StringComparison.Ordinal) => "time_text_embed.timestep_embedder." + Mlp(name["t_embedder.mlp.".Length..]),
            _ when name.StartsWith("y_embedder.mlp.", StringComparison.Ordinal) => "time_text_embed.text_embedder." + Mlp(name["y_embedder.mlp.".Length..]),
            _ when name.StartsWith("context_embedder.", StringComparison.Ordinal) => name,
            _ when name.StartsWith("final_layer.linear.", StringComparison.Ordinal) => "proj_out." + name["final_layer.linear.".Length..],
            _ => null,
        };
        if (name.StartsWith("final_layer.adaLN_modulation.1.", StringComparison.Ordinal))
        {
            yield return ("norm_out.linear." + name["final_layer.adaLN_modulation.1.".Length..], SwapScaleShift(tensor));
            yield break;
        }
        if (simple is not null)
        {
            yield return (simple, tensor);
            yield break;
        }
        var block = JointBlockIndex().Match(TransformerPrefix + name);
        if (!block.Success) throw new InvalidDataException($"Unknown SD3 MMDiT key '{TransformerPrefix}{name}'.");
        int index = int.Parse(block.Groups[1].Value, CultureInfo.InvariantCulture);
        string rest = block.Groups[2].Value, prefix = $"transformer_blocks.{index}.";
        bool context = rest.StartsWith("context_block.", StringComparison.Ordinal);
        string part = rest[(context ? "context_block." : "x_block.").Length..];
        // part: attn.qkv.weight, attn2.proj.bias, attn.ln_q.weight, adaLN_modulation.1.weight, mlp.fc1.bias...
        string[] pieces = part.Split('.');
        string leaf = pieces[^1];
        switch (pieces[0])
        {
            case "attn" or "attn2" when pieces[1] == "qkv":
            {
                string attn = context ? "attn" : pieces[0];
                string[] names = context ? ["add_q_proj", "add_k_proj", "add_v_proj"] : ["to_q", "to_k", "to_v"];
                var chunks = tensor.chunk(3, 0);
                for (int i = 0; i < 3; i++) yield return ($"{prefix}{attn}.{names[i]}.{leaf}", chunks[i]);
                yield break;
            }
            case "attn" or "attn2" when pieces[1] == "proj":
                yield return ($"{prefix}{(context ? "attn.to_add_out" : pieces[0] + ".to_out.0")}.{leaf}", tensor);
                yield break;
            case "attn" or "attn2" when pieces[1] is "ln_q" or "ln_k":
            {
                string norm = context ? (pieces[1] == "ln_q" ? "norm_added_q" : "norm_added_k") : (pieces[1] == "ln_q" ? "norm_q" : "norm_k");
                yield return ($"{prefix}{(context ? "attn" : pieces[0])}.{norm}.{leaf}", tensor);
                yield break;
            }
            case "adaLN_modulation":
            {
                // The last block's context side is an AdaLayerNormContinuous: diffusers orders its halves (scale, shift).
                bool swap = context && index == numLayers - 1;
                yield return ($"{prefix}{(context ? "norm1_context" : "norm1")}.linear.{leaf}", swap ? SwapScaleShift(tensor) : tensor);
                yield break;
            }
            case "mlp":
                yield return ($"{prefix}{(context ? "ff_context" : "ff")}.{(pieces[1] == "fc1" ? "net.0.proj" : "net.2")}.{leaf}", tensor);
                yield break;
        }
        throw new InvalidDataException($"Unknown SD3 MMDiT key '{TransformerPrefix}{name}'.");
    }

    private static string Mlp(string rest) => rest.StartsWith("0.", StringComparison.Ordinal) ? "linear_1." + rest[2..]
        : rest.StartsWith("2.", StringComparison.Ordinal) ? "linear_2." + rest[2..]
        : throw new InvalidDataException($"Unknown embedder MLP key 'mlp.{rest}'.");

    /// <summary>
    /// The LDM-layout VAE under <paramref name="prefix"/> in diffusers' names (<c>convert_ldm_vae_checkpoint</c>):
    /// <c>down.{i}.block.{j}</c> → <c>down_blocks.{i}.resnets.{j}</c>, <c>nin_shortcut</c> → <c>conv_shortcut</c>,
    /// <c>mid.block_{1,2}</c> → <c>mid_block.resnets.{0,1}</c>, <c>mid.attn_1</c> → <c>mid_block.attentions.0</c> with its
    /// 1x1 convolutions squeezed to Linear weights, the decoder's <c>up.{n-1-i}</c> → <c>up_blocks.{i}</c>, <c>norm_out</c> →
    /// <c>conv_norm_out</c>.
    /// </summary>
    public static Dictionary<string, Tensor> ConvertLdmVae(SafetensorsFile file, string prefix)
    {
        var keys = file.Tensors.Keys.Where(k => k.StartsWith(prefix, StringComparison.Ordinal)).ToList();
        int upBlocks = keys.Select(k => LdmUpBlock().Match(k[prefix.Length..])).Where(m => m.Success)
            .Select(m => int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture)).DefaultIfEmpty(-1).Max() + 1;
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var key in keys)
            {
                string name = LdmVaeName(key[prefix.Length..], upBlocks);
                var tensor = file.Read(key);
                // The mid-block attention's q, k, v and proj_out are 1x1 convolutions in LDM, Linear layers in diffusers.
                if (name.Contains(".mid_block.attentions.0.", StringComparison.Ordinal) && name.EndsWith(".weight", StringComparison.Ordinal) && tensor.dim() == 4)
                    tensor = tensor.reshape(tensor.shape[0], tensor.shape[1]);
                result.Add(name, tensor);
            }
            return result;
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
    }

    private static string LdmVaeName(string name, int upBlocks)
    {
        if (name.StartsWith("quant_conv.", StringComparison.Ordinal) || name.StartsWith("post_quant_conv.", StringComparison.Ordinal)) return name;
        var m = LdmVaeKey().Match(name);
        if (!m.Success) throw new InvalidDataException($"Unknown LDM VAE key '{name}'.");
        string side = m.Groups[1].Value, rest = m.Groups[2].Value;
        string Resnet(string r) => r.Replace("nin_shortcut.", "conv_shortcut.", StringComparison.Ordinal);
        string converted = rest switch
        {
            _ when rest.StartsWith("norm_out.", StringComparison.Ordinal) => "conv_norm_out." + rest["norm_out.".Length..],
            _ when rest.StartsWith("conv_in.", StringComparison.Ordinal) || rest.StartsWith("conv_out.", StringComparison.Ordinal) => rest,
            _ when rest.StartsWith("mid.block_1.", StringComparison.Ordinal) => "mid_block.resnets.0." + Resnet(rest["mid.block_1.".Length..]),
            _ when rest.StartsWith("mid.block_2.", StringComparison.Ordinal) => "mid_block.resnets.1." + Resnet(rest["mid.block_2.".Length..]),
            _ when rest.StartsWith("mid.attn_1.", StringComparison.Ordinal) => "mid_block.attentions.0." + AttentionPart(rest["mid.attn_1.".Length..]),
            _ => Blocks(rest),
        };
        return $"{side}.{converted}";

        string Blocks(string r)
        {
            var b = LdmBlock().Match(r);
            if (!b.Success) throw new InvalidDataException($"Unknown LDM VAE key '{name}'.");
            int i = int.Parse(b.Groups[2].Value, CultureInfo.InvariantCulture);
            string tail = b.Groups[3].Value;
            bool up = b.Groups[1].Value == "up";
            string block = up ? $"up_blocks.{upBlocks - 1 - i}" : $"down_blocks.{i}";
            var res = LdmResnet().Match(tail);
            if (res.Success) return $"{block}.resnets.{res.Groups[1].Value}.{Resnet(res.Groups[2].Value)}";
            if (tail.StartsWith("downsample.conv.", StringComparison.Ordinal)) return $"{block}.downsamplers.0.conv.{tail["downsample.conv.".Length..]}";
            if (tail.StartsWith("upsample.conv.", StringComparison.Ordinal)) return $"{block}.upsamplers.0.conv.{tail["upsample.conv.".Length..]}";
            throw new InvalidDataException($"Unknown LDM VAE key '{name}'.");
        }

        string AttentionPart(string r)
        {
            int dot = r.IndexOf('.');
            string head = r[..dot], leaf = r[(dot + 1)..];
            return head switch
            {
                "norm" => "group_norm." + leaf,
                "q" => "to_q." + leaf,
                "k" => "to_k." + leaf,
                "v" => "to_v." + leaf,
                "proj_out" => "to_out.0." + leaf,
                _ => throw new InvalidDataException($"Unknown LDM VAE key '{name}'."),
            };
        }
    }

    [GeneratedRegex(@"^(encoder|decoder)\.(.+)$")]
    private static partial Regex LdmVaeKey();

    [GeneratedRegex(@"^(down|up)\.(\d+)\.(.+)$")]
    private static partial Regex LdmBlock();

    [GeneratedRegex(@"^block\.(\d+)\.(.+)$")]
    private static partial Regex LdmResnet();

    [GeneratedRegex(@"^decoder\.up\.(\d+)\.")]
    private static partial Regex LdmUpBlock();

    /// <summary>diffusers' <c>swap_scale_shift</c>: the two halves of dim 0 exchanged.</summary>
    private static Tensor SwapScaleShift(Tensor tensor)
    {
        var halves = tensor.chunk(2, 0);
        return cat([halves[1], halves[0]], 0);
    }

    [GeneratedRegex(@"^model\.diffusion_model\.joint_blocks\.(\d+)\.(.+)$")]
    private static partial Regex JointBlockIndex();
}
