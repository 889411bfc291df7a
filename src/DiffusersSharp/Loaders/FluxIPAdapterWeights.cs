using DiffusersSharp.IO;
using DiffusersSharp.Models.IPAdapters;
using DiffusersSharp.Models.Transformers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Loaders;

/// <summary>
/// Loads Flux IP-Adapter files as diffusers' <c>FluxIPAdapterMixin.load_ip_adapter</c> reads safetensors (the layout of
/// XLabs-AI/flux-ip-adapter): keys under <c>ip_adapter_proj_model.</c> or <c>image_proj.</c> are the image projection
/// (<c>proj</c>, <c>norm</c>: diffusers' <c>ImageProjection</c>, whose <c>proj</c> becomes <c>image_embeds</c>; 4 tokens per
/// image, 16 when proj has 65536 rows, each of proj's rows / tokens width); keys under <c>double_blocks.</c> or
/// <c>ip_adapter.</c> are, per double-stream block N, <c>N.processor.ip_adapter_double_stream_k_proj</c> / <c>_v_proj</c>
/// (weight and bias; diffusers' names <c>N.to_k_ip</c> / <c>N.to_v_ip</c> are taken too), diffusers'
/// <c>FluxIPAdapterAttnProcessor</c> of block N. Stricter than diffusers, which skips keys it does not know and the
/// blocks the transformer lacks: every key must have its place, every block its four tensors, with matching shapes.
/// </summary>
public static class FluxIPAdapterWeights
{
    private static readonly string[] ImageProjPrefixes = ["ip_adapter_proj_model.", "image_proj."];
    private static readonly string[] AttnPrefixes = ["double_blocks.", "ip_adapter."];

    /// <summary>
    /// Loads one IP-Adapter per file of <paramref name="paths"/>, in order (diffusers' list form of load_ip_adapter), into
    /// <paramref name="transformer"/>: every double-stream block gains a <see cref="FluxIPAdapterAttnProcessor"/> with each
    /// adapter's key/value projections, the transformer the image projections (<c>encoder_hid_proj</c>). Scale 1.0.
    /// Every file is checked before anything changes.
    /// </summary>
    /// <exception cref="FileNotFoundException">A file is missing.</exception>
    /// <exception cref="WeightLoadException">A file's keys or shapes do not fit the transformer (all problems listed).</exception>
    /// <exception cref="InvalidOperationException">The transformer already has an IP-Adapter.</exception>
    /// <exception cref="ArgumentException">An adapter's image embedding width is not <paramref name="imageEmbedDim"/>.</exception>
    /// <param name="transformer">The transformer to extend.</param>
    /// <param name="paths">The files, one adapter each.</param>
    /// <param name="imageEmbedDim">The image encoder's embedding width (projection_dim) every adapter must take; null: any.</param>
    public static void Load(FluxTransformer2DModel transformer, IReadOnlyList<string> paths, long? imageEmbedDim = null)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        ArgumentNullException.ThrowIfNull(paths);
        if (paths.Count == 0) throw new ArgumentException("No IP-Adapter file given.", nameof(paths));
        if (transformer.HasIpAdapter) throw new InvalidOperationException("An IP-Adapter is already loaded into this transformer.");
        foreach (var path in paths)
            if (!File.Exists(path)) throw new FileNotFoundException($"No IP-Adapter file at {path}.", path);
        var attentions = transformer.DoubleStreamAttentions;
        if (attentions.Count == 0) throw new NotSupportedException("This transformer has no double-stream blocks for an IP-Adapter.");
        long cross = transformer.Config.JointAttentionDim, inner = attentions[0].InnerDim;

        var files = new List<SafetensorsFile>();
        var projections = new List<ImageProjection>();
        var processors = new List<FluxIPAdapterAttnProcessor>();
        try
        {
            var layouts = new List<(Dictionary<string, string> ImageProj, Dictionary<string, string> Attn, int Tokens, long EmbedDim)>();
            foreach (var path in paths)
            {
                var file = SafetensorsFile.Open(path);
                files.Add(file);
                var layout = Check(file, Path.GetFileName(path), cross, inner, attentions.Count);
                if (imageEmbedDim is { } width && layout.Item4 != width)
                    throw new ArgumentException($"The IP-Adapter {Path.GetFileName(path)} takes image embeddings of width {layout.Item4}, the image encoder gives {width}; use the image encoder the adapter was trained with (XLabs' Flux IP-Adapter: openai/clip-vit-large-patch14, 768).");
                layouts.Add(layout);
            }
            // Built on meta and filled strictly from the file in the transformer's dtype and device (no random init of
            // XLabs' ~480M adapter parameters).
            var device = transformer.Device;
            var dtype = transformer.Dtype;
            var load = new WeightLoadOptions { Dtype = dtype, Device = device };
            var meta = new Device("meta");
            for (int a = 0; a < files.Count; a++)
            {
                var (imageProj, _, tokens, embedDim) = layouts[a];
                var projection = new ImageProjection(embedDim, cross, tokens, meta);
                projections.Add(projection);
                LoadFrom(projection, imageProj.ToDictionary(kv => kv.Key, kv => (a, kv.Value)), files, load);
            }
            for (int b = 0; b < attentions.Count; b++)
            {
                var processor = new FluxIPAdapterAttnProcessor(inner, cross, paths.Count, meta);
                processors.Add(processor);
                var sources = new Dictionary<string, (int, string)>(StringComparer.Ordinal);
                for (int a = 0; a < files.Count; a++)
                    foreach (var kv in new[] { "k", "v" })
                        foreach (var p in new[] { "weight", "bias" })
                            sources[$"to_{kv}_ip.{a}.{p}"] = (a, layouts[a].Attn[$"{b}.to_{kv}_ip.{p}"]);
                LoadFrom(processor, sources, files, load);
            }
            foreach (var projection in projections) projection.eval();
            foreach (var processor in processors) processor.eval();
            transformer.AttachIpAdapter(new MultiIPAdapterImageProjection(projections), processors);
        }
        catch
        {
            foreach (var p in projections) p.Dispose();
            foreach (var p in processors) p.Dispose();
            throw;
        }
        finally
        {
            foreach (var f in files) f.Dispose();
        }
    }

    /// <summary>
    /// The diffusers name of a file key (<c>load_ip_adapter</c>'s renaming), as (part, name): part "image_proj" or
    /// "ip_adapter"; null for a key diffusers would skip.
    /// </summary>
    internal static (string Part, string Name)? DiffusersName(string key)
    {
        if (ImageProjPrefixes.Any(p => key.StartsWith(p, StringComparison.Ordinal)))
            return ("image_proj", key[(key.IndexOf('.') + 1)..]);
        if (AttnPrefixes.Any(p => key.StartsWith(p, StringComparison.Ordinal)))
            return ("ip_adapter", key[(key.IndexOf('.') + 1)..]
                .Replace("ip_adapter_double_stream_k_proj", "to_k_ip", StringComparison.Ordinal)
                .Replace("ip_adapter_double_stream_v_proj", "to_v_ip", StringComparison.Ordinal)
                .Replace("processor.", "", StringComparison.Ordinal));
        return null;
    }

    /// <summary>
    /// Checks one file against the transformer and returns, per diffusers parameter name, the file key it comes from
    /// (image projection names as <see cref="ImageProjection"/>'s, attention names as <c>N.to_k_ip.weight</c>), with the
    /// projection's token count and embedding width.
    /// </summary>
    private static (Dictionary<string, string>, Dictionary<string, string>, int, long) Check(SafetensorsFile file, string name, long cross, long inner, int blocks)
    {
        var shapes = file.Header.Tensors.ToDictionary(kv => kv.Key, kv => kv.Value.Shape, StringComparer.Ordinal);
        var imageProj = new Dictionary<string, string>(StringComparer.Ordinal);
        var attn = new Dictionary<string, string>(StringComparer.Ordinal);
        var unexpected = new List<string>();
        var mismatches = new List<string>();
        var missing = new List<string>();
        foreach (var key in shapes.Keys)
        {
            var mapped = DiffusersName(key);
            if (mapped is null) { unexpected.Add(key); continue; }
            var (part, diffusersName) = mapped.Value;
            // diffusers renames proj -> image_embeds in the image projection (ImageProjection's field name).
            var target = part == "image_proj" ? imageProj : attn;
            string parameter = part == "image_proj" ? diffusersName.Replace("proj", "image_embeds", StringComparison.Ordinal) : diffusersName;
            if (!target.TryAdd(parameter, key)) unexpected.Add($"{key} (a second tensor for {part}.{diffusersName})");
        }

        // The image projection: diffusers' _convert_ip_adapter_image_proj_to_diffusers (plain IP-Adapter only).
        int tokens = 4;
        long embedDim = 0;
        var expected = new Dictionary<string, (string Part, long[] Shape)>(StringComparer.Ordinal);
        if (imageProj.TryGetValue("image_embeds.weight", out var projKey) && shapes[projKey].Length == 2)
        {
            long rows = shapes[projKey][0];
            embedDim = shapes[projKey][1];
            if (rows == 65536) tokens = 16;
            if (rows % tokens != 0 || rows / tokens != cross)
                mismatches.Add($"{projKey}: [{string.Join(", ", shapes[projKey])}] gives {tokens} tokens of width {(double)rows / tokens}, the transformer's joint_attention_dim is {cross}");
            expected["image_embeds.weight"] = ("image_proj", [tokens * cross, embedDim]);
            expected["image_embeds.bias"] = ("image_proj", [tokens * cross]);
            expected["norm.weight"] = ("image_proj", [cross]);
            expected["norm.bias"] = ("image_proj", [cross]);
        }
        else missing.Add(imageProj.TryGetValue("image_embeds.weight", out var bad)
            ? $"{bad} as a [tokens x {cross}, embedding width] matrix"
            : "ip_adapter_proj_model.proj.weight (the image projection; Flux IP-Adapters other than the plain one are not supported by diffusers)");
        for (int b = 0; b < blocks; b++)
        {
            expected[$"{b}.to_k_ip.weight"] = ("ip_adapter", [inner, cross]);
            expected[$"{b}.to_k_ip.bias"] = ("ip_adapter", [inner]);
            expected[$"{b}.to_v_ip.weight"] = ("ip_adapter", [inner, cross]);
            expected[$"{b}.to_v_ip.bias"] = ("ip_adapter", [inner]);
        }
        foreach (var (parameter, (part, shape)) in expected)
        {
            var source = part == "image_proj" ? imageProj : attn;
            if (!source.TryGetValue(parameter, out var key))
            {
                missing.Add(part == "image_proj"
                    ? $"ip_adapter_proj_model.{parameter.Replace("image_embeds", "proj", StringComparison.Ordinal)}"
                    : $"double_blocks.{parameter.Replace("to_k_ip", "processor.ip_adapter_double_stream_k_proj", StringComparison.Ordinal).Replace("to_v_ip", "processor.ip_adapter_double_stream_v_proj", StringComparison.Ordinal)}");
                continue;
            }
            if (!shapes[key].SequenceEqual(shape))
                mismatches.Add($"{key}: file [{string.Join(", ", shapes[key])}], transformer [{string.Join(", ", shape)}]");
        }
        foreach (var (parameter, key) in imageProj)
            if (!expected.ContainsKey(parameter)) unexpected.Add(key);
        foreach (var (parameter, key) in attn)
            if (!expected.ContainsKey(parameter)) unexpected.Add(key);
        foreach (var key in shapes.Keys)
        {
            var type = SafetensorsFile.StorageType(file.Header.Tensors[key].Dtype); // null: float8, decoded on read
            if (type is not (null or ScalarType.Float64 or ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16))
                mismatches.Add($"{key}: dtype {file.Header.Tensors[key].Dtype} is not a floating-point type");
        }
        if (missing.Count + unexpected.Count + mismatches.Count > 0)
            throw new WeightLoadException($"the Flux IP-Adapter {name}", missing, unexpected.Distinct().ToList(), mismatches);
        return (imageProj, attn, tokens, embedDim);
    }

    /// <summary>Loads <paramref name="module"/> (built on meta) strictly from the file tensors named by
    /// <paramref name="sources"/> (parameter name -> file index, key).</summary>
    private static void LoadFrom(nn.Module module, Dictionary<string, (int File, string Key)> sources, List<SafetensorsFile> files, WeightLoadOptions options)
    {
        var tensors = sources.ToDictionary(kv => kv.Key, kv => files[kv.Value.File].Read(kv.Value.Key), StringComparer.Ordinal);
        try
        {
            StateDictLoader.Load(module, tensors, options);
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }
}
