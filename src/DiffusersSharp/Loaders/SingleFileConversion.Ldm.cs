using System.Globalization;
using System.Text.RegularExpressions;
using DiffusersSharp.IO;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Unets;
using static TorchSharp.torch;

namespace DiffusersSharp.Loaders;

/// <summary>The layout of an original single-file checkpoint.</summary>
public enum SingleFileLayout
{
    /// <summary>Stability AI's SD3 / SD3.5 files: an MMDiT under <c>model.diffusion_model.joint_blocks</c>.</summary>
    SD3,

    /// <summary>SD 1.x / 2.x (LDM) and SDXL (SGM) files: a UNet under <c>model.diffusion_model.input_blocks</c>.</summary>
    Ldm,
}

/// <summary>What an original single file holds: its layout and the pipeline components it replaces.</summary>
/// <param name="Layout">SD3 MMDiT or LDM / SGM UNet.</param>
/// <param name="Components">Pipeline component names (<c>transformer</c> or <c>unet</c>, <c>vae</c>, text encoders).</param>
public sealed record SingleFileContents(SingleFileLayout Layout, IReadOnlySet<string> Components);

public static partial class SingleFileConversion
{
    /// <summary>The text encoders an LDM / SGM single file may carry: pipeline component, key prefix, OpenCLIP layout or not.</summary>
    public static IReadOnlyList<(string Component, string Prefix, bool OpenClip)> LdmTextEncoderPrefixes { get; } =
    [
        ("text_encoder", "cond_stage_model.transformer.", false), // SD 1.x: transformers' CLIPTextModel
        ("text_encoder", "conditioner.embedders.0.transformer.", false), // SDXL: CLIP-L
        ("text_encoder", "cond_stage_model.model.", true), // SD 2.x: OpenCLIP-H
        ("text_encoder_2", "conditioner.embedders.1.model.", true), // SDXL: OpenCLIP-G
    ];

    // LDM's DDPM registers its noise schedule (and LatentDiffusion its logvar) as buffers at the root of the checkpoint;
    // diffusers reads none of them (the scheduler comes from the config), nor the EMA copy under model_ema.
    private static readonly HashSet<string> LdmScheduleBuffers = new(StringComparer.Ordinal)
    {
        "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
        "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2", "logvar",
    };

    private const string LdmUnetKey = TransformerPrefix + "input_blocks.0.0.weight";

    /// <summary>Whether <paramref name="file"/> holds an LDM / SGM UNet.</summary>
    public static bool HasLdmUnet(SafetensorsFile file) => file.Tensors.ContainsKey(LdmUnetKey);

    /// <summary>
    /// The layout of the single file at <paramref name="path"/> and the components it replaces: SD3 files give
    /// <c>transformer</c> (and <c>vae</c>); LDM / SGM files give <c>unet</c> and each of <c>vae</c>, <c>text_encoder</c>,
    /// <c>text_encoder_2</c> they hold. An LDM file's keys are all checked to belong to one of these parts or to what
    /// diffusers ignores (<c>model_ema.*</c>, the root schedule buffers).
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="InvalidDataException">The file holds neither layout, or an LDM file has keys of no known part.</exception>
    public static SingleFileContents ContentsOf(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"Checkpoint not found: {path}", path);
        using var file = SafetensorsFile.Open(path);
        if (HasSD3Transformer(file)) return new SingleFileContents(SingleFileLayout.SD3, SD3ComponentsIn(file));
        if (!HasLdmUnet(file))
            throw new InvalidDataException($"{Path.GetFileName(path)} holds neither an SD3 MMDiT ({TransformerPrefix}context_embedder.weight) nor an LDM / SGM UNet ({LdmUnetKey}): not an original single-file checkpoint.");
        var components = new HashSet<string>(StringComparer.Ordinal) { "unet" };
        var vae = VaePrefix(file);
        if (vae is not null) components.Add("vae");
        var present = LdmTextEncoderPrefixes.Where(t => file.Tensors.Keys.Any(k => k.StartsWith(t.Prefix, StringComparison.Ordinal))).ToList();
        foreach (var group in present.GroupBy(t => t.Component))
        {
            if (group.Count() > 1)
                throw new InvalidDataException($"{Path.GetFileName(path)} holds two {group.Key}s ({string.Join(", ", group.Select(g => g.Prefix))}).");
            components.Add(group.Key);
        }
        string[] known = [TransformerPrefix, .. vae is null ? Array.Empty<string>() : [vae], .. present.Select(t => t.Prefix)];
        var unknown = file.Tensors.Keys.Where(k => !known.Any(p => k.StartsWith(p, StringComparison.Ordinal))
            && !k.StartsWith("model_ema.", StringComparison.Ordinal) && !LdmScheduleBuffers.Contains(k)).Order(StringComparer.Ordinal).ToList();
        if (unknown.Count > 0)
            throw new InvalidDataException($"{Path.GetFileName(path)} has keys of no known part of an SD 1.x / 2.x / SDXL checkpoint: {string.Join(", ", unknown.Take(10))}{(unknown.Count > 10 ? $" and {unknown.Count - 10} more" : "")}.");
        return new SingleFileContents(SingleFileLayout.Ldm, components);
    }

    /// <summary>
    /// The LDM / SGM UNet under <c>model.diffusion_model.</c> in diffusers' names (<c>convert_ldm_unet_checkpoint</c>),
    /// placed by <see cref="LdmUnetLayout"/> from <paramref name="config"/>: <c>time_embed.{0,2}</c> →
    /// <c>time_embedding.linear_{1,2}</c>, <c>label_emb.0.{0,2}</c> → <c>add_embedding.linear_{1,2}</c>, <c>out.{0,2}</c> →
    /// <c>conv_norm_out</c> / <c>conv_out</c>, resnet <c>in_layers.{0,2}</c>, <c>emb_layers.1</c>, <c>out_layers.{0,3}</c>,
    /// <c>skip_connection</c> → <c>norm1</c>, <c>conv1</c>, <c>time_emb_proj</c>, <c>norm2</c>, <c>conv2</c>,
    /// <c>conv_shortcut</c>, <c>op</c> → <c>downsamplers.0.conv</c>; attention blocks keep their inner names. With
    /// <paramref name="expected"/> (the model's state-dict names) a key that lands elsewhere is an error naming it.
    /// </summary>
    /// <exception cref="InvalidDataException">A key that is not part of this UNet.</exception>
    public static Dictionary<string, Tensor> ConvertLdmUnet(SafetensorsFile file, UNet2DConditionModelConfig config, IReadOnlySet<string>? expected = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        var byLdm = LdmUnetLayout.Prefixes(config).ToDictionary(kv => kv.Value, kv => kv.Key, StringComparer.Ordinal);
        var resnetLayers = LdmUnetLayout.ResnetLayers.ToDictionary(kv => kv.Value, kv => kv.Key, StringComparer.Ordinal);
        return Convert(file, [TransformerPrefix], expected, key =>
        {
            string name = key[TransformerPrefix.Length..];
            string target = UnetName(name) ?? throw new InvalidDataException($"Unknown LDM UNet key '{key}' for this UNet config.");
            return [target];
        });

        string? UnetName(string name)
        {
            // The longest mapped prefix: a whole module (conv_in, samplers, embeddings, out), a resnet or an attention block.
            for (int end = name.LastIndexOf('.'); end > 0; end = name.LastIndexOf('.', end - 1))
            {
                if (!byLdm.TryGetValue(name[..end], out var diffusers)) continue;
                string rest = name[(end + 1)..];
                if (LdmUnetLayout.IsResnet(diffusers))
                {
                    int dot = rest.LastIndexOf('.');
                    return dot > 0 && resnetLayers.TryGetValue(rest[..dot], out var layer) ? $"{diffusers}.{layer}{rest[dot..]}" : null;
                }
                if (diffusers.Contains(".attentions.", StringComparison.Ordinal))
                    return rest.Split('.')[0] is "norm" or "proj_in" or "proj_out" or "transformer_blocks" ? $"{diffusers}.{rest}" : null;
                return rest is "weight" or "bias" ? $"{diffusers}.{rest}" : null;
            }
            return null;
        }
    }

    /// <summary>
    /// The text encoder <paramref name="component"/> (<c>text_encoder</c> or <c>text_encoder_2</c>) of an LDM / SGM file in
    /// transformers' CLIP names. transformers-layout encoders (SD 1.x, SDXL's CLIP-L) lose their prefix and gain
    /// <c>text_model.</c> where it is missing (transformers 5 saves without it); <c>position_ids</c> is dropped as
    /// transformers does. OpenCLIP encoders follow <c>convert_open_clip_checkpoint</c>: <c>resblocks</c> →
    /// <c>encoder.layers</c>, <c>ln_1/2</c> → <c>layer_norm1/2</c>, <c>mlp.c_fc/c_proj</c> → <c>mlp.fc1/fc2</c>,
    /// <c>attn.in_proj_*</c> chunked into <c>self_attn.{q,k,v}_proj</c>, <c>text_projection</c> transposed into
    /// <c>text_projection.weight</c>; SD 2.x's (<c>cond_stage_model.model.</c>) drops its projection and its last
    /// layer (<c>resblocks.{num_hidden_layers}</c>: diffusers' SD 2 encoder stops at the penultimate one), and
    /// <c>logit_scale</c> is not read.
    /// </summary>
    /// <exception cref="InvalidDataException">The file has no such encoder, or a key that is not part of it.</exception>
    public static Dictionary<string, Tensor> ConvertLdmTextEncoder(SafetensorsFile file, string component, CLIPTextConfig config, IReadOnlySet<string>? expected = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        var (_, prefix, openClip) = LdmTextEncoderPrefixes.FirstOrDefault(t => t.Component == component && file.Tensors.Keys.Any(k => k.StartsWith(t.Prefix, StringComparison.Ordinal)));
        if (prefix is null) throw new InvalidDataException($"{Path.GetFileName(file.Header.Path)} holds no {component}.");
        bool sd2 = prefix == "cond_stage_model.model.";
        return Convert(file, [prefix], expected, key =>
        {
            string name = key[prefix.Length..];
            if (!openClip)
            {
                if (name is "text_model.embeddings.position_ids" or "embeddings.position_ids") return [];
                return [name.StartsWith("text_model.", StringComparison.Ordinal) || name.StartsWith("text_projection.", StringComparison.Ordinal) ? name : "text_model." + name];
            }
            return OpenClipNames(key, name, sd2, config.NumHiddenLayers);
        }, (name, tensor) => name == "text_projection.weight" && openClip ? tensor.t().contiguous() : tensor);
    }

    private static string[] OpenClipNames(string key, string name, bool sd2, int layers)
    {
        switch (name)
        {
            case "positional_embedding": return ["text_model.embeddings.position_embedding.weight"];
            case "token_embedding.weight": return ["text_model.embeddings.token_embedding.weight"];
            case "ln_final.weight" or "ln_final.bias": return ["text_model.final_layer_norm." + name["ln_final.".Length..]];
            case "text_projection": return sd2 ? [] : ["text_projection.weight"];
            case "logit_scale": return [];
        }
        var m = OpenClipBlock().Match(name);
        if (!m.Success) throw new InvalidDataException($"Unknown OpenCLIP key '{key}'.");
        int index = int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
        if (sd2 && index == layers) return [];
        string layer = $"text_model.encoder.layers.{index}.", rest = m.Groups[2].Value;
        return rest switch
        {
            "attn.in_proj_weight" => [layer + "self_attn.q_proj.weight", layer + "self_attn.k_proj.weight", layer + "self_attn.v_proj.weight"],
            "attn.in_proj_bias" => [layer + "self_attn.q_proj.bias", layer + "self_attn.k_proj.bias", layer + "self_attn.v_proj.bias"],
            _ when rest.StartsWith("attn.out_proj.", StringComparison.Ordinal) => [layer + "self_attn.out_proj." + rest["attn.out_proj.".Length..]],
            _ when rest.StartsWith("ln_1.", StringComparison.Ordinal) => [layer + "layer_norm1." + rest["ln_1.".Length..]],
            _ when rest.StartsWith("ln_2.", StringComparison.Ordinal) => [layer + "layer_norm2." + rest["ln_2.".Length..]],
            _ when rest.StartsWith("mlp.c_fc.", StringComparison.Ordinal) => [layer + "mlp.fc1." + rest["mlp.c_fc.".Length..]],
            _ when rest.StartsWith("mlp.c_proj.", StringComparison.Ordinal) => [layer + "mlp.fc2." + rest["mlp.c_proj.".Length..]],
            _ => throw new InvalidDataException($"Unknown OpenCLIP key '{key}'."),
        };
    }

    /// <summary>
    /// Reads every key under <paramref name="prefixes"/> and stores it under the names <paramref name="names"/> gives
    /// (none: ignored; several: the tensor chunked along dim 0, as OpenCLIP's fused q/k/v), after <paramref name="transform"/>.
    /// A name outside <paramref name="expected"/>, or given twice, is an error naming the file's key.
    /// </summary>
    private static Dictionary<string, Tensor> Convert(SafetensorsFile file, string[] prefixes, IReadOnlySet<string>? expected,
        Func<string, string[]> names, Func<string, Tensor, Tensor>? transform = null)
    {
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        try
        {
            foreach (var key in file.Tensors.Keys.Where(k => prefixes.Any(p => k.StartsWith(p, StringComparison.Ordinal))).Order(StringComparer.Ordinal))
            {
                var targets = names(key);
                if (targets.Length == 0) continue;
                foreach (var target in targets)
                {
                    if (expected is not null && !expected.Contains(target))
                        throw new InvalidDataException($"Unknown key '{key}': it converts to '{target}', which the model does not have.");
                    if (result.ContainsKey(target)) throw new InvalidDataException($"Key '{key}' converts to '{target}', which another key of the file already gave.");
                }
                var tensor = file.Read(key);
                Tensor[] parts = targets.Length == 1 ? [tensor] : tensor.chunk(targets.Length, 0);
                for (int i = 0; i < targets.Length; i++) result.Add(targets[i], transform is null ? parts[i] : transform(targets[i], parts[i]));
            }
            return result;
        }
        catch
        {
            foreach (var t in result.Values) t.Dispose();
            throw;
        }
    }

    [GeneratedRegex(@"^transformer\.resblocks\.(\d+)\.(.+)$")]
    private static partial Regex OpenClipBlock();
}
