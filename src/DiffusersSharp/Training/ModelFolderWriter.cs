using System.Text.Json;
using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Models.Autoencoders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Training;

/// <summary>
/// Writes models as a diffusers pipeline folder (what <c>save_pretrained</c> writes): <c>model_index.json</c>, one
/// folder per component with its config and safetensors weights, the scheduler config, CLIP tokenizer files. Configs
/// are written from the config records (so they read back into equal records) plus the class and library markers
/// diffusers and transformers expect. Every file is written atomically.
/// </summary>
public static class ModelFolderWriter
{
    /// <summary>The diffusers version written into configs (the one the parity fixtures were made with).</summary>
    public const string DiffusersVersion = "0.40.0.dev0";

    /// <summary>Writes a VAE folder (<c>config.json</c>, <c>diffusion_pytorch_model.safetensors</c>).</summary>
    public static void WriteVae(string folder, AutoencoderKL vae, AutoencoderKLConfig config, ScalarType dtype = ScalarType.Float16)
    {
        ArgumentNullException.ThrowIfNull(vae);
        WriteDiffusersConfig(Path.Combine(folder, "config.json"), config, "AutoencoderKL");
        WriteWeights(Path.Combine(folder, "diffusion_pytorch_model.safetensors"), vae, dtype);
    }

    /// <summary>Writes a transformer folder.</summary>
    public static void WriteTransformer(string folder, SD3Transformer2DModel transformer, ScalarType dtype = ScalarType.Float16)
    {
        ArgumentNullException.ThrowIfNull(transformer);
        WriteDiffusersConfig(Path.Combine(folder, "config.json"), transformer.Config, "SD3Transformer2DModel");
        WriteWeights(Path.Combine(folder, "diffusion_pytorch_model.safetensors"), transformer, dtype);
    }

    /// <summary>Writes a CLIP text encoder folder (<c>config.json</c> as transformers writes it, <c>model.safetensors</c>).</summary>
    public static void WriteTextEncoder(string folder, CLIPTextModelWithProjection encoder, ScalarType dtype = ScalarType.Float16)
    {
        ArgumentNullException.ThrowIfNull(encoder);
        var node = ToNode(encoder.Config);
        node["architectures"] = new JsonArray("CLIPTextModelWithProjection");
        node["model_type"] = "clip_text_model";
        node["dtype"] = dtype switch { ScalarType.Float16 => "float16", ScalarType.BFloat16 => "bfloat16", _ => "float32" };
        WriteJson(Path.Combine(folder, "config.json"), node);
        WriteWeights(Path.Combine(folder, "model.safetensors"), encoder, dtype);
    }

    /// <summary>Writes <c>scheduler_config.json</c> into <paramref name="folder"/>.</summary>
    public static void WriteScheduler(string folder, FlowMatchEulerDiscreteSchedulerConfig config) =>
        WriteDiffusersConfig(Path.Combine(folder, "scheduler_config.json"), config, "FlowMatchEulerDiscreteScheduler");

    /// <summary>
    /// Copies a CLIP tokenizer (<c>vocab.json</c>, <c>merges.txt</c>, <c>tokenizer_config.json</c>; the large
    /// <c>tokenizer.json</c> is left out: the slow-tokenizer files define the same tokenizer).
    /// </summary>
    /// <exception cref="FileNotFoundException">A file is missing in <paramref name="source"/>.</exception>
    public static void CopyClipTokenizer(string source, string folder)
    {
        foreach (var name in new[] { "vocab.json", "merges.txt", "tokenizer_config.json" })
        {
            string from = Path.Combine(source, name);
            if (!File.Exists(from)) throw new FileNotFoundException($"CLIP tokenizer file {name} not found in {source}.", from);
            var bytes = File.ReadAllBytes(from);
            AtomicFile.WriteAllBytes(Path.Combine(folder, name), bytes);
        }
    }

    /// <summary>Copies a VAE folder's <c>config.json</c> and <c>diffusion_pytorch_model.safetensors</c>, each file atomically.</summary>
    /// <exception cref="FileNotFoundException">A file is missing in <paramref name="source"/>.</exception>
    public static void CopyVae(string source, string folder)
    {
        foreach (var name in new[] { "config.json", "diffusion_pytorch_model.safetensors" })
        {
            string from = Path.Combine(source, name);
            if (!File.Exists(from)) throw new FileNotFoundException($"VAE file {name} not found in {source}.", from);
            AtomicFile.Write(Path.Combine(folder, name), s => { using var input = File.OpenRead(from); input.CopyTo(s); });
        }
    }

    /// <summary>
    /// Writes <c>model_index.json</c> of a <c>StableDiffusion3Pipeline</c> without T5 (text_encoder_3, tokenizer_3,
    /// image_encoder and feature_extractor are <c>[null, null]</c>); without <paramref name="clip"/> the CLIP encoders and
    /// tokenizers are left out too (diffusers' <c>text_encoder=None</c>: the folder takes prompt embeddings only).
    /// </summary>
    public static void WriteModelIndex(string folder, bool clip = true)
    {
        JsonArray Spec(string? library, string? cls) => new(library is null ? null : JsonValue.Create(library), cls is null ? null : JsonValue.Create(cls));
        var index = new JsonObject
        {
            ["_class_name"] = "StableDiffusion3Pipeline",
            ["_diffusers_version"] = DiffusersVersion,
            ["feature_extractor"] = Spec(null, null),
            ["image_encoder"] = Spec(null, null),
            ["scheduler"] = Spec("diffusers", "FlowMatchEulerDiscreteScheduler"),
            ["text_encoder"] = clip ? Spec("transformers", "CLIPTextModelWithProjection") : Spec(null, null),
            ["text_encoder_2"] = clip ? Spec("transformers", "CLIPTextModelWithProjection") : Spec(null, null),
            ["text_encoder_3"] = Spec(null, null),
            ["tokenizer"] = clip ? Spec("transformers", "CLIPTokenizer") : Spec(null, null),
            ["tokenizer_2"] = clip ? Spec("transformers", "CLIPTokenizer") : Spec(null, null),
            ["tokenizer_3"] = Spec(null, null),
            ["transformer"] = Spec("diffusers", "SD3Transformer2DModel"),
            ["vae"] = Spec("diffusers", "AutoencoderKL"),
        };
        WriteJson(Path.Combine(folder, "model_index.json"), index);
    }

    /// <summary>
    /// Writes everything of a T5-less SD3 pipeline folder except the VAE: model_index, scheduler, transformer, both
    /// text encoders, both tokenizers (copied from <paramref name="tokenizerSource"/>/tokenizer and /tokenizer_2).
    /// </summary>
    public static void WritePipeline(string folder, SD3Transformer2DModel transformer, CLIPTextModelWithProjection textEncoder,
        CLIPTextModelWithProjection textEncoder2, FlowMatchEulerDiscreteSchedulerConfig scheduler, string tokenizerSource,
        ScalarType dtype = ScalarType.Float16)
    {
        ArgumentException.ThrowIfNullOrEmpty(folder);
        WriteTransformer(Path.Combine(folder, "transformer"), transformer, dtype);
        WriteTextEncoder(Path.Combine(folder, "text_encoder"), textEncoder, dtype);
        WriteTextEncoder(Path.Combine(folder, "text_encoder_2"), textEncoder2, dtype);
        WriteScheduler(Path.Combine(folder, "scheduler"), scheduler);
        CopyClipTokenizer(Path.Combine(tokenizerSource, "tokenizer"), Path.Combine(folder, "tokenizer"));
        CopyClipTokenizer(Path.Combine(tokenizerSource, "tokenizer_2"), Path.Combine(folder, "tokenizer_2"));
        WriteModelIndex(folder);
    }

    /// <summary>The module's state dict (parameters and persistent buffers) with floating tensors cast to <paramref name="dtype"/>.</summary>
    public static void WriteWeights(string path, nn.Module module, ScalarType dtype)
    {
        ArgumentNullException.ThrowIfNull(module);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var tensors = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var (name, t) in module.state_dict())
            tensors[name] = (t.is_floating_point() ? t.detach().to(dtype) : t.detach()).cpu().contiguous();
        SafetensorsWriter.Save(path, tensors, new Dictionary<string, string> { ["format"] = "pt" });
    }

    /// <summary>A config record as JSON with diffusers' <c>_class_name</c> and <c>_diffusers_version</c> first.</summary>
    public static void WriteDiffusersConfig<T>(string path, T config, string className)
    {
        var body = ToNode(config);
        var node = new JsonObject { ["_class_name"] = className, ["_diffusers_version"] = DiffusersVersion };
        foreach (var (key, value) in body.ToList())
        {
            body.Remove(key);
            node[key] = value;
        }
        WriteJson(path, node);
    }

    private static JsonObject ToNode<T>(T config) =>
        JsonSerializer.SerializeToNode(config, ConfigJson.Options) as JsonObject
        ?? throw new InvalidOperationException($"{typeof(T).Name} does not serialize to a JSON object.");

    private static void WriteJson(string path, JsonNode node) =>
        AtomicFile.WriteAllBytes(path, System.Text.Encoding.UTF8.GetBytes(node.ToJsonString(ConfigJson.Options) + "\n"));
}
