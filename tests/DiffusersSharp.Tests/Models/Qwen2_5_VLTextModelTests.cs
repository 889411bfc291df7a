using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// Qwen2_5_VLTextModel against transformers' OWN modeling_qwen2_vl.py (Qwen2VLForConditionalGeneration's forward with its
/// get_rope_index, run unmodified by tools/reference/qwen2_5_vl.py; fixture local-diffusers/qwen2-5-vl, see its README):
/// tiny text models (MHA: hidden 16, 2 heads; GQA: hidden 32, 4 heads over 2 key-value heads; 2 layers, mrope_section
/// [1, 1, 2], rope_theta 1e6, drawn biases and norm weights) on a right-padded batch of two id rows, hidden_states[-1];
/// loading in both checkpoint layouts, sharded, and strictly.
/// </summary>
public sealed class Qwen2_5_VLTextModelTests(ITestOutputHelper output) : IDisposable
{
    private const string Folder = "local-diffusers/qwen2-5-vl";
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected(Folder + "/expected.safetensors");
    private readonly string _dir = Directory.CreateTempSubdirectory("ds-qwen25vl-").FullName;

    /// <summary>Bound: 1e-5 x max(1, max |expected|), as the Qwen3 and Flux parity tests.</summary>
    private const double Tolerance = 1e-5;

    private static string TextEncoder(string name) => Fixtures.Path($"{Folder}/text_encoder_{name}");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("mha")]
    [InlineData("gqa")]
    public void LastHiddenStateMatchesTransformers(string name)
    {
        // The fixture's checkpoint is the whole Qwen2VLForConditionalGeneration (transformers before 4.52: model.*,
        // visual.*, lm_head.*): the vision tower and the head are not read.
        using var model = Qwen2_5_VLTextModel.FromPretrained(TextEncoder(name));
        using var noGrad = inference_mode();
        var mask = Expected[$"{name}.attention_mask"];
        Assert.True(mask.sum().item<long>() < mask.numel()); // the second row is padded
        using var state = model.LastHiddenState(Expected[$"{name}.input_ids"], mask);
        double err = TensorAssert.Close(state, Expected[$"{name}.hidden_last"], Tolerance, $"{name} hidden_states[-1]");
        output.WriteLine($"{name}: max |diff| vs transformers hidden_states[-1] (float32): {err:G3}");
    }

    [Fact]
    public void NewerLayoutNestedConfigAndShardsLoadTheSame()
    {
        using var file = SafetensorsFile.Open(Path.Combine(TextEncoder("gqa"), "model.safetensors"));
        var older = file.Tensors.Keys.ToDictionary(k => k, k => file.Read(k));
        Assert.Contains(older.Keys, k => k.StartsWith("visual.", StringComparison.Ordinal));
        Assert.Contains("lm_head.weight", older.Keys);
        // transformers 4.52+: model.language_model.*, model.visual.*, lm_head.*; text settings under text_config.
        var newer = older.ToDictionary(
            kv => kv.Key.StartsWith("model.", StringComparison.Ordinal) ? "model.language_model." + kv.Key["model.".Length..]
                : kv.Key.StartsWith("visual.", StringComparison.Ordinal) ? "model." + kv.Key : kv.Key,
            kv => kv.Value);
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(TextEncoder("gqa"), "config.json")))!.AsObject();
        var text = new JsonObject();
        foreach (var field in new[] { "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "hidden_act", "rms_norm_eps", "use_sliding_window" })
        {
            text[field] = config[field]!.DeepClone();
            config.Remove(field);
        }
        // transformers 5 writes rope_parameters; a wrong top-level rope_theta shows that the nested one is read.
        text["rope_parameters"] = new JsonObject { ["rope_type"] = "default", ["rope_theta"] = config["rope_theta"]!.DeepClone(), ["mrope_section"] = new JsonArray(1, 1, 2) };
        config.Remove("rope_scaling");
        config["rope_theta"] = 10.0;
        config["text_config"] = text; // vocab_size stays at the top level, as older nested files have it
        File.WriteAllText(Path.Combine(_dir, "config.json"), config.ToJsonString());
        // Two shards with their index.
        var keys = newer.Keys.Order(StringComparer.Ordinal).ToList();
        var first = keys.Take(keys.Count / 2).ToHashSet();
        SafetensorsWriter.Save(Path.Combine(_dir, "model-00001-of-00002.safetensors"), newer.Where(kv => first.Contains(kv.Key)).ToDictionary());
        SafetensorsWriter.Save(Path.Combine(_dir, "model-00002-of-00002.safetensors"), newer.Where(kv => !first.Contains(kv.Key)).ToDictionary());
        var map = new JsonObject();
        foreach (var k in keys) map[k] = first.Contains(k) ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
        File.WriteAllText(Path.Combine(_dir, "model.safetensors.index.json"), new JsonObject { ["metadata"] = new JsonObject(), ["weight_map"] = map }.ToJsonString());

        using var model = Qwen2_5_VLTextModel.FromPretrained(_dir);
        Assert.Equal(32, model.Config.HiddenSize);
        Assert.Equal(1e6, model.Config.EffectiveRopeTheta);
        using var noGrad = inference_mode();
        using var state = model.LastHiddenState(Expected["gqa.input_ids"], Expected["gqa.attention_mask"]);
        TensorAssert.Close(state, Expected["gqa.hidden_last"], Tolerance, "newer layout, sharded");
        foreach (var t in older.Values) t.Dispose();
    }

    [Fact]
    public void StrayOrMissingKeysAreErrors()
    {
        using var file = SafetensorsFile.Open(Path.Combine(TextEncoder("mha"), "model.safetensors"));
        var weights = file.Tensors.Keys.ToDictionary(k => k, k => file.Read(k));
        File.Copy(Path.Combine(TextEncoder("mha"), "config.json"), Path.Combine(_dir, "config.json"));
        string path = Path.Combine(_dir, "model.safetensors");

        SafetensorsWriter.Save(path, new Dictionary<string, Tensor>(weights) { ["model.extra.weight"] = weights["model.norm.weight"] });
        var extra = Assert.Throws<WeightLoadException>(() => Qwen2_5_VLTextModel.FromPretrained(_dir));
        Assert.Contains("model.extra.weight", extra.Message);

        SafetensorsWriter.Save(path, weights.Where(kv => kv.Key != "model.layers.1.self_attn.q_proj.bias").ToDictionary());
        var missing = Assert.Throws<WeightLoadException>(() => Qwen2_5_VLTextModel.FromPretrained(_dir));
        Assert.Contains("q_proj.bias", missing.Message);
        foreach (var t in weights.Values) t.Dispose();
    }

    [Fact]
    public void RegistryBuildsTheTextModelForTheCheckpointClass()
    {
        using var module = ModelRegistry.Build("text_encoder", "Qwen2_5_VLForConditionalGeneration", TextEncoder("mha"), new Device("meta"));
        var model = Assert.IsType<Qwen2_5_VLTextModel>(module);
        Assert.Equal(16, model.Config.HiddenSize);
    }

    [Theory]
    [InlineData("""{"hidden_size": 16, "num_attention_heads": 3}""", typeof(ArgumentException))]
    [InlineData("""{"num_attention_heads": 4, "num_key_value_heads": 3, "hidden_size": 32}""", typeof(ArgumentException))]
    [InlineData("""{"rope_scaling": {"type": "yarn", "factor": 2.0}}""", typeof(NotSupportedException))]
    [InlineData("""{"use_sliding_window": true}""", typeof(NotSupportedException))]
    public void UnsupportedOrInvalidConfigsAreRefusedBeforeBuilding(string fields, Type exception)
    {
        string path = Path.Combine(_dir, "config.json");
        File.WriteAllText(path, fields);
        var config = Qwen2_5_VLTextConfig.Read(path);
        var e = Assert.ThrowsAny<Exception>(() => new Qwen2_5_VLTextModel(config, new Device("meta")));
        Assert.IsType(exception, e);
    }

    [Fact]
    public void BadInputsAreRefusedBeforeCompute()
    {
        using var model = Qwen2_5_VLTextModel.FromPretrained(TextEncoder("mha"));
        using var tooHigh = tensor(new long[] { 1, 704 }, [1, 2]);
        Assert.Throws<ArgumentException>(() => model.LastHiddenState(tooHigh)); // 704 is past vocab_size
        using var ids = tensor(new long[] { 1, 2 }, [1, 2]);
        using var badMask = ones(1, 3, dtype: ScalarType.Int64);
        Assert.Throws<ArgumentException>(() => model.LastHiddenState(ids, badMask));
    }
}
