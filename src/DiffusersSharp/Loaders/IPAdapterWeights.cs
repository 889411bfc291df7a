using DiffusersSharp.IO;
using DiffusersSharp.Models.IPAdapters;
using DiffusersSharp.Models.Layers;
using DiffusersSharp.Models.Unets;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Loaders;

/// <summary>
/// Loads an IP-Adapter file in the layout of h94/IP-Adapter's safetensors (what diffusers' <c>load_ip_adapter</c> reads):
/// <c>image_proj.*</c> (the image projection) and <c>ip_adapter.N.to_k_ip.weight</c> / <c>to_v_ip.weight</c>, where N
/// counts the UNet's attention processors in diffusers' order (down blocks, up blocks, mid block; self- and
/// cross-attention alternating), so the k-th cross-attention layer has N = 2k + 1. Loading is strict: every key of the file
/// must have its place and every cross-attention layer its two weights, with matching shapes.
/// </summary>
public static partial class IPAdapterWeights
{
    /// <summary>
    /// Loads the IP-Adapter at <paramref name="path"/> into <paramref name="unet"/> (diffusers' <c>_load_ip_adapter_weights</c>):
    /// every cross-attention layer gains the adapter's image key/value path, the UNet its image projection. Scale 1.0.
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="NotSupportedException">The file is an IP-Adapter kind not implemented here (named in the message).</exception>
    /// <exception cref="WeightLoadException">Keys or shapes do not fit this UNet.</exception>
    /// <exception cref="InvalidOperationException">The UNet already has an IP-Adapter.</exception>
    public static void Load(UNet2DConditionModel unet, string path)
    {
        ArgumentNullException.ThrowIfNull(unet);
        if (!File.Exists(path)) throw new FileNotFoundException($"No IP-Adapter file at {path}.", path);
        if (unet.HasIpAdapter) throw new InvalidOperationException("An IP-Adapter is already loaded into this UNet.");
        using var file = SafetensorsFile.Open(path);
        var shapes = file.Header.Tensors.ToDictionary(kv => kv.Key, kv => kv.Value.Shape, StringComparer.Ordinal);
        var layers = CrossAttentionLayers(unet);
        long cross = layers.Count > 0 ? layers[0].Layer.KeyValueDim : throw new NotSupportedException("This UNet has no cross-attention layers for an IP-Adapter.");

        var expected = new Dictionary<string, long[]>(StringComparer.Ordinal);
        var (projection, sources) = ImageProjectionFor(shapes, cross, unet.Device, unet.Dtype);
        var parameters = projection.named_parameters().ToDictionary(p => p.name, p => p.parameter, StringComparer.Ordinal);
        foreach (var (name, source) in sources)
        {
            long[] shape = parameters[name].shape;
            // A key/value pair stored as one to_kv matrix holds the two halves one after the other.
            if (source.Half >= 0) shape = [2 * shape[0], .. shape[1..]];
            expected["image_proj." + source.Key] = shape;
        }
        for (int k = 0; k < layers.Count; k++)
        {
            long inner = layers[k].Layer.InnerDim;
            expected[$"ip_adapter.{2 * k + 1}.to_k_ip.weight"] = [inner, cross];
            expected[$"ip_adapter.{2 * k + 1}.to_v_ip.weight"] = [inner, cross];
        }
        var missing = expected.Keys.Where(k => !shapes.ContainsKey(k)).ToList();
        var unexpected = shapes.Keys.Where(k => !expected.ContainsKey(k)).ToList();
        var mismatches = expected.Where(kv => shapes.TryGetValue(kv.Key, out var s) && !s.SequenceEqual(kv.Value))
            .Select(kv => $"{kv.Key}: file [{string.Join(", ", shapes[kv.Key])}], UNet [{string.Join(", ", kv.Value)}]").ToList();
        if (missing.Count + unexpected.Count + mismatches.Count > 0)
        {
            projection.Dispose();
            throw new WeightLoadException($"IP-Adapter {Path.GetFileName(path)}", missing, unexpected, mismatches);
        }

        var state = new IPAdapterState(1);
        using (no_grad())
        {
            foreach (var (name, source) in sources)
            {
                using var stored = file.Read("image_proj." + source.Key, unet.Dtype, unet.Device);
                parameters[name].copy_(source.Half < 0 ? stored : stored.chunk(2, 0)[source.Half]);
            }
            var processors = new List<(Attention, IPAdapterAttnProcessor)>();
            for (int k = 0; k < layers.Count; k++)
            {
                var processor = new IPAdapterAttnProcessor(cross, layers[k].Layer.InnerDim, 1, state, unet.Device, unet.Dtype);
                CopyInto(processor.KeyProjection(0).weight!, file, $"ip_adapter.{2 * k + 1}.to_k_ip.weight", unet);
                CopyInto(processor.ValueProjection(0).weight!, file, $"ip_adapter.{2 * k + 1}.to_v_ip.weight", unet);
                processor.eval();
                processors.Add((layers[k].Layer, processor));
            }
            foreach (var (layer, processor) in processors) layer.AttachIpAdapter(processor);
        }
        projection.eval();
        unet.AttachIpAdapter(new MultiIPAdapterImageProjection([projection]), state);
    }

    /// <summary>The UNet's cross-attention layers (attn2) in diffusers' attn_processors order: down, up, then mid block.</summary>
    internal static List<(string Name, Attention Layer)> CrossAttentionLayers(UNet2DConditionModel unet)
    {
        static int Rank(string name) => name.StartsWith("down_blocks.", StringComparison.Ordinal) ? 0
            : name.StartsWith("up_blocks.", StringComparison.Ordinal) ? 1 : 2;
        static long[] Numbers(string name) => name.Split('.').Where(p => long.TryParse(p, out _)).Select(long.Parse).ToArray();
        return unet.named_modules()
            .Where(m => m.module is Attention && m.name.EndsWith(".attn2", StringComparison.Ordinal))
            .Select(m => (Name: m.name, Layer: (Attention)m.module))
            .OrderBy(m => Rank(m.Name))
            .ThenBy(m => Numbers(m.Name), Comparer<long[]>.Create((a, b) =>
            {
                for (int i = 0; i < Math.Min(a.Length, b.Length); i++)
                    if (a[i] != b[i]) return a[i].CompareTo(b[i]);
                return a.Length.CompareTo(b.Length);
            }))
            .ToList();
    }

    /// <summary>Where a projection parameter comes from in the file: a key under image_proj., whole or one half of it.</summary>
    private readonly record struct Source(string Key, int Half = -1);

    /// <summary>
    /// The image projection diffusers' <c>_convert_ip_adapter_image_proj_to_diffusers</c> picks from the keys, and for
    /// each of its parameters the file key diffusers renames to it.
    /// </summary>
    private static (nn.Module<Tensor, Tensor> Module, Dictionary<string, Source> Sources) ImageProjectionFor(
        Dictionary<string, long[]> shapes, long cross, Device device, ScalarType dtype)
    {
        var sources = new Dictionary<string, Source>(StringComparer.Ordinal);
        if (shapes.TryGetValue("image_proj.proj.weight", out var proj) && proj.Length == 2)
        {
            // Plain IP-Adapter: 4 tokens per image, the CLIP width read from the file as diffusers does.
            foreach (var p in new[] { "weight", "bias" })
            {
                sources["image_embeds." + p] = new("proj." + p);
                sources["norm." + p] = new("norm." + p);
            }
            return (new ImageProjection(proj[1], cross, 4, device, dtype), sources);
        }
        if (shapes.TryGetValue("image_proj.latents", out var latents) && latents.Length == 3
            && shapes.TryGetValue("image_proj.proj_in.weight", out var projIn) && projIn.Length == 2
            && shapes.TryGetValue("image_proj.proj_out.weight", out var projOut) && projOut.Length == 2
            && shapes.TryGetValue("image_proj.layers.0.0.to_q.weight", out var toQ) && toQ.Length == 2)
        {
            // IP-Adapter Plus in the original Resampler's names; depth and ffn ratio are diffusers' defaults (4, 4), the
            // other sizes read from the file, heads = to_q rows / 64, as diffusers does.
            const int Depth = 4;
            sources["latents"] = new("latents");
            foreach (var p in new[] { "weight", "bias" })
                foreach (var m in new[] { "proj_in", "proj_out", "norm_out" })
                    sources[$"{m}.{p}"] = new($"{m}.{p}");
            for (int i = 0; i < Depth; i++)
            {
                string l = $"layers.{i}.";
                foreach (var p in new[] { "weight", "bias" })
                {
                    sources[l + "ln0." + p] = new(l + "0.norm1." + p);
                    sources[l + "ln1." + p] = new(l + "0.norm2." + p);
                    sources[l + "ff.0." + p] = new(l + "1.0." + p);
                }
                sources[l + "attn.to_q.weight"] = new(l + "0.to_q.weight");
                sources[l + "attn.to_k.weight"] = new(l + "0.to_kv.weight", 0);
                sources[l + "attn.to_v.weight"] = new(l + "0.to_kv.weight", 1);
                sources[l + "attn.to_out.0.weight"] = new(l + "0.to_out.weight");
                sources[l + "ff.1.net.0.proj.weight"] = new(l + "1.1.weight");
                sources[l + "ff.1.net.2.weight"] = new(l + "1.3.weight");
            }
            var module = new IPAdapterPlusImageProjection(embedDims: projIn[1], outputDims: projOut[0], hiddenDims: latents[2], depth: Depth,
                dimHead: 64, heads: (int)(toQ[0] / 64), numQueries: (int)latents[1], ffnRatio: 4, device: device, dtype: dtype);
            return (module, sources);
        }
        string? kind = shapes.ContainsKey("image_proj.proj.3.weight") ? "IP-Adapter Full Face (IPAdapterFullImageProjection)"
            : shapes.ContainsKey("image_proj.perceiver_resampler.proj_in.weight") ? "IP-Adapter FaceID Plus"
            : shapes.ContainsKey("image_proj.latents") ? "IP-Adapter Plus in diffusers' own names (layers.N.attn.*)"
            : shapes.ContainsKey("image_proj.norm.weight") ? "IP-Adapter FaceID"
            : null;
        throw kind is null
            ? new WeightLoadException("IP-Adapter", ["image_proj.proj.weight"], [], [])
            : new NotSupportedException($"{kind} files are not supported yet; the plain IP-Adapter (image_proj.proj) and IP-Adapter Plus (image_proj.latents, h94's names) are.");
    }

    private static void CopyInto(Tensor target, SafetensorsFile file, string key, UNet2DConditionModel unet)
    {
        using var source = file.Read(key, unet.Dtype, unet.Device);
        target.copy_(source);
    }
}
