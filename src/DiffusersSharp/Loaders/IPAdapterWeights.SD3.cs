using DiffusersSharp.IO;
using DiffusersSharp.Models.IPAdapters;
using DiffusersSharp.Models.Transformers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Loaders;

// The SD3 / SD3.5 IP-Adapter (InstantX/SD3.5-Large-IP-Adapter), as diffusers' SD3Transformer2DLoadersMixin loads it.
public static partial class IPAdapterWeights
{
    /// <summary>Blocks of the SD3 Resampler: diffusers' IPAdapterTimeImageProjection default, which its loader does not read from the file.</summary>
    private const int SD3ResamplerDepth = 4;

    /// <summary>
    /// Loads the SD3 IP-Adapter at <paramref name="path"/> into <paramref name="transformer"/> (diffusers'
    /// <c>SD3IPAdapterMixin.load_ip_adapter</c> + <c>_load_ip_adapter_weights</c>): <c>ip_adapter.N.*</c> become the
    /// <see cref="SD3IPAdapterJointAttnProcessor"/> of the N-th attention in diffusers' <c>attn_processors</c> order (each
    /// block's <c>attn</c>, then its <c>attn2</c>), <c>image_proj.*</c> (InstantX's Resampler names, <c>layers.i.0.to_q</c>
    /// ..., or diffusers' own, <c>layers.i.attn.to_q</c> ...) the <see cref="IPAdapterTimeImageProjection"/>
    /// <c>image_proj</c>: 4 blocks, 64-wide heads (heads = to_q rows / 64), the other sizes read from the file, as diffusers
    /// does. Strict: every key must have its place, every place its key, with the shape the sizes imply. Weights take the
    /// transformer's dtype and device; scale 0.5 (diffusers' processor default).
    /// </summary>
    /// <exception cref="FileNotFoundException">No file at <paramref name="path"/>.</exception>
    /// <exception cref="NotSupportedException">A pickled checkpoint (InstantX's <c>ip-adapter.bin</c>).</exception>
    /// <exception cref="WeightLoadException">Keys or shapes do not fit this transformer.</exception>
    /// <exception cref="InvalidOperationException">The transformer already has an IP-Adapter.</exception>
    public static void Load(SD3Transformer2DModel transformer, string path)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        if (!File.Exists(path)) throw new FileNotFoundException($"No IP-Adapter file at {path}.", path);
        if (!path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
            throw new NotSupportedException($"{Path.GetFileName(path)}: only safetensors IP-Adapter files are read (pickled .bin files are not): for " +
                "InstantX/SD3.5-Large-IP-Adapter take its safetensors conversion, e.g. guiyrt/InstantX-SD3.5-Large-IP-Adapter-diffusers' ip-adapter.safetensors.");
        if (transformer.HasIpAdapter) throw new InvalidOperationException("An IP-Adapter is already loaded into this transformer.");
        using var file = SafetensorsFile.Open(path);
        var shapes = file.Header.Tensors.ToDictionary(kv => kv.Key, kv => kv.Value.Shape, StringComparer.Ordinal);
        string name = $"IP-Adapter {Path.GetFileName(path)}";
        long[] Shape(string key, int rank) => shapes.TryGetValue(key, out var s) && s.Length == rank
            ? s : throw new WeightLoadException(name, shapes.ContainsKey(key) ? [] : [key], [], shapes.ContainsKey(key) ? [$"{key}: rank {shapes[key].Length}, expected {rank}"] : []);

        // Sizes, read as diffusers reads them.
        bool instantX = !shapes.ContainsKey("image_proj.layers.0.attn.to_q.weight");
        string Source(string diffusersName) => instantX ? InstantXName(diffusersName) : diffusersName;
        var projIn = Shape("image_proj.proj_in.weight", 2);
        var projOut = Shape("image_proj.proj_out.weight", 2);
        var toQ = Shape("image_proj." + Source("layers.0.attn.to_q.weight"), 2);
        var latents = Shape("image_proj.latents", 3);
        var timeIn = Shape("image_proj.time_embedding.linear_1.weight", 2);
        var normIp = Shape("ip_adapter.0.norm_ip.linear.weight", 2);
        var config = transformer.Config;
        long width = (long)config.AttentionHeadDim * config.NumAttentionHeads;
        if (projOut[0] != width || normIp[1] != projIn[0])
            throw new WeightLoadException(name, [], [],
                [$"image_proj.proj_out.weight: {projOut[0]} output features, the transformer's width is {width}",
                 $"ip_adapter.0.norm_ip.linear.weight: timestep embedding width {normIp[1]}, the Resampler's is {projIn[0]}"]);

        var device = transformer.Device;
        var dtype = transformer.Dtype;
        var layers = transformer.AttentionLayers();
        var imageProj = new IPAdapterTimeImageProjection(embedDim: projIn[1], outputDim: projOut[0], hiddenDim: projIn[0], depth: SD3ResamplerDepth,
            dimHead: 64, heads: (int)(toQ[0] / 64), numQueries: (int)latents[1], ffnRatio: 4, timestepInDim: (int)timeIn[1], device: device, dtype: dtype);
        var processors = layers.Select(_ => new SD3IPAdapterJointAttnProcessor(width, width, config.AttentionHeadDim, normIp[1], device, dtype)).ToList();
        var targets = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (p, t) in imageProj.named_parameters()) targets["image_proj." + Source(p)] = t;
        for (int i = 0; i < processors.Count; i++)
            foreach (var (p, t) in processors[i].named_parameters()) targets[$"ip_adapter.{i}.{p}"] = t;

        var missing = targets.Keys.Where(k => !shapes.ContainsKey(k)).ToList();
        var unexpected = shapes.Keys.Where(k => !targets.ContainsKey(k)).ToList();
        var mismatches = targets.Where(kv => shapes.TryGetValue(kv.Key, out var s) && !s.SequenceEqual(kv.Value.shape))
            .Select(kv => $"{kv.Key}: file [{string.Join(", ", shapes[kv.Key])}], expected [{string.Join(", ", kv.Value.shape)}]").ToList();
        if (missing.Count + unexpected.Count + mismatches.Count > 0)
        {
            imageProj.Dispose();
            foreach (var p in processors) p.Dispose();
            throw new WeightLoadException(name, missing, unexpected, mismatches);
        }
        using (no_grad())
        {
            foreach (var (key, target) in targets)
            {
                using var stored = file.Read(key, dtype, device);
                target.copy_(stored);
            }
        }
        imageProj.eval();
        foreach (var p in processors) p.eval();
        transformer.AttachIpAdapter(imageProj, processors);
    }

    /// <summary>
    /// The InstantX / original Resampler name of a diffusers <c>IPAdapterTimeImageProjection</c> parameter: the inverse of
    /// the renames in diffusers' <c>_convert_ip_adapter_image_proj_to_diffusers</c> (<c>layers.i.0.norm1</c> = ln0,
    /// <c>0.norm2</c> = ln1, <c>0.to_q</c> / <c>0.to_kv</c> / <c>0.to_out</c> = the attention, <c>1.0</c> = adaln_norm,
    /// <c>1.1</c> / <c>1.3</c> = the feed-forward, <c>2.1</c> = adaln_proj); names outside <c>layers.</c> are kept.
    /// </summary>
    private static string InstantXName(string diffusersName)
    {
        if (!diffusersName.StartsWith("layers.", StringComparison.Ordinal)) return diffusersName;
        int dot = diffusersName.IndexOf('.', 7);
        string prefix = diffusersName[..(dot + 1)], rest = diffusersName[(dot + 1)..];
        (string From, string To)[] renames =
        [
            ("ln0.", "0.norm1."), ("ln1.", "0.norm2."), ("attn.to_q.", "0.to_q."), ("attn.to_kv.", "0.to_kv."), ("attn.to_out.0.", "0.to_out."),
            ("adaln_norm.", "1.0."), ("ff.net.0.proj.", "1.1."), ("ff.net.2.", "1.3."), ("adaln_proj.", "2.1."),
        ];
        foreach (var (from, to) in renames)
            if (rest.StartsWith(from, StringComparison.Ordinal)) return prefix + to + rest[from.Length..];
        return diffusersName;
    }
}
