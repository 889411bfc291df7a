using System.Text.Json;
using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// Qwen3Model against transformers' OWN modeling_qwen3.py (run unmodified by tools/reference/qwen3.py; fixture
/// local-diffusers/qwen3, see its README): a tiny Qwen3 (3 layers, 4 query / 2 key-value heads of width 24, so head_dim is
/// not hidden / heads) on two right-padded chat-templated prompts; every hidden state in float32, the last two in
/// bfloat16; the full-size Z-Image text encoder (Qwen3-4B) built on the meta device against transformers' own build.
/// </summary>
public sealed class Qwen3ModelTests(ITestOutputHelper output) : IDisposable
{
    private const string Folder = "local-diffusers/qwen3";
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected(Folder + "/expected.safetensors");
    private readonly string _dir = Directory.CreateTempSubdirectory("ds-qwen3-").FullName;

    /// <summary>
    /// Bound: 1e-5 x max(1, max |expected|), as the Flux parity tests (the reference is 2.0e-6 from a float64 run of the
    /// same code: float32 rounding of torch 1.13's kernels, see the fixture README).
    /// </summary>
    private const double Tolerance = 1e-5;

    private static string TextEncoder => Fixtures.Path(Folder + "/text_encoder");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void EveryHiddenStateMatchesTransformers()
    {
        using var model = Qwen3Model.FromPretrained(TextEncoder);
        using var _ = inference_mode();
        var ids = Expected["batch.input_ids"];
        var mask = Expected["batch.attention_mask"];
        Assert.True(mask.sum().item<long>() < mask.numel()); // the shorter prompt is padded
        using var result = model.Forward(ids, mask);
        Assert.Equal(4, result.HiddenStates.Count);
        double worst = 0;
        for (int k = 0; k < result.HiddenStates.Count; k++)
            worst = Math.Max(worst, TensorAssert.Close(result.HiddenStates[k], Expected[$"batch.hidden_states.{k}"], Tolerance, $"hidden_states[{k}]"));
        TensorAssert.Close(result.LastHiddenState, Expected["batch.hidden_states.3"], Tolerance, "last_hidden_state");
        output.WriteLine($"float32 max |diff| vs transformers over all hidden states: {worst:G3}");
    }

    [Fact]
    public void HiddenStateRunsOnlyWhatItNeedsWithTheSameValues()
    {
        using var model = Qwen3Model.FromPretrained(TextEncoder);
        using var _ = inference_mode();
        var ids = Expected["batch.input_ids"];
        var mask = Expected["batch.attention_mask"];
        using var all = model.Forward(ids, mask);
        for (int index = -4; index <= 3; index++)
        {
            using var state = model.HiddenState(ids, mask, index);
            var expected = all.HiddenStates[index < 0 ? 4 + index : index];
            Assert.Equal(0.0, TensorAssert.MaxAbsDiff(state, expected)); // the same values, bit for bit
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => model.HiddenState(ids, mask, 4));
        Assert.Throws<ArgumentOutOfRangeException>(() => model.HiddenState(ids, mask, -5));
    }

    /// <summary>
    /// bfloat16 keeps 8 significant bits, and two bfloat16 runs round differently (matmul accumulation in torch 1.13 and
    /// libtorch 2.10; an eager softmax in place of SDPA was tried and changes nothing): transformers' own bfloat16 run is
    /// 4.4e-2 / 4.9e-2 from its float32 run in hidden_states[2] / [3] (values up to 5.4 / 3.7, spaced 2^-5 / 2^-6 in
    /// bfloat16), and ours 4.7e-2 from it. Bound: ours no more than one bfloat16 step (at the largest values) further
    /// from the float32 reference than transformers' bfloat16 run is. Measured: 5.0e-2 / 4.4e-2 from float32.
    /// </summary>
    [Fact]
    public void BFloat16MatchesTransformersInBFloat16()
    {
        using var model = Qwen3Model.FromPretrained(TextEncoder, ScalarType.BFloat16);
        using var _ = inference_mode();
        using var result = model.Forward(Expected["batch.input_ids"], Expected["batch.attention_mask"]);
        Assert.Equal(ScalarType.BFloat16, result.LastHiddenState.dtype);
        foreach (int k in new[] { 2, 3 })
        {
            var reference = Expected[$"batch.bf16.hidden_states.{k}"];
            var f32 = Expected[$"batch.hidden_states.{k}"];
            double max = reference.abs().max().to(ScalarType.Float64).item<double>();
            double step = Math.Pow(2, Math.Floor(Math.Log2(max)) - 7); // bfloat16's spacing at the largest values
            double vsTransformers = TensorAssert.MaxAbsDiff(result.HiddenStates[k], reference);
            double ours = TensorAssert.MaxAbsDiff(result.HiddenStates[k], f32);
            double theirs = TensorAssert.MaxAbsDiff(reference, f32);
            output.WriteLine($"bfloat16 hidden_states[{k}]: {vsTransformers:G3} from transformers' bfloat16; from float32: ours {ours:G3}, transformers' {theirs:G3} (step {step:G3})");
            Assert.True(ours <= theirs + step, $"bf16 hidden_states[{k}]: {ours:G3} from float32, transformers' bfloat16 is {theirs:G3}");
        }
    }

    [Fact]
    public void Float16Runs()
    {
        using var model = Qwen3Model.FromPretrained(TextEncoder, ScalarType.Float16);
        using var _ = inference_mode();
        using var state = model.HiddenState(Expected["batch.input_ids"], Expected["batch.attention_mask"], -2);
        Assert.Equal(ScalarType.Float16, state.dtype);
        Assert.False(state.isnan().any().item<bool>() || state.isinf().any().item<bool>());
        // float16 keeps 11 significant bits: within a few rounding steps (2^-10 x 5.4 each) of the float32 reference.
        double err = TensorAssert.Close(state, Expected["batch.hidden_states.2"], 8.0 / 1024, "float16 hidden_states[-2]");
        output.WriteLine($"float16 hidden_states[-2] max |diff| vs transformers float32: {err:G3}");
    }

    [Fact]
    public void UnprefixedCheckpointLoadsTheSameAndOtherKeysAreRefused()
    {
        using var file = SafetensorsFile.Open(Path.Combine(TextEncoder, "model.safetensors"));
        var prefixed = file.Tensors.Keys.ToDictionary(k => k, k => file.Read(k));
        Assert.All(prefixed.Keys, k => Assert.StartsWith("model.", k)); // as Qwen3ForCausalLM saves it
        File.Copy(Path.Combine(TextEncoder, "config.json"), Path.Combine(_dir, "config.json"));
        string weights = Path.Combine(_dir, "model.safetensors");

        SafetensorsWriter.Save(weights, prefixed.ToDictionary(kv => kv.Key["model.".Length..], kv => kv.Value));
        using (var model = Qwen3Model.FromPretrained(_dir))
        using (inference_mode())
        using (var state = model.HiddenState(Expected["batch.input_ids"], Expected["batch.attention_mask"], -2))
            TensorAssert.Close(state, Expected["batch.hidden_states.2"], Tolerance, "unprefixed checkpoint");

        var withHead = new Dictionary<string, Tensor>(prefixed) { ["lm_head.weight"] = prefixed["model.embed_tokens.weight"] };
        SafetensorsWriter.Save(weights, withHead);
        var extra = Assert.Throws<WeightLoadException>(() => Qwen3Model.FromPretrained(_dir));
        Assert.Contains("lm_head.weight", extra.Message);

        SafetensorsWriter.Save(weights, prefixed.Where(kv => kv.Key != "model.norm.weight").ToDictionary());
        var missing = Assert.Throws<WeightLoadException>(() => Qwen3Model.FromPretrained(_dir));
        Assert.Contains("norm.weight", missing.Message);
        foreach (var t in prefixed.Values) t.Dispose();
    }

    [Fact]
    public void FullSizeZImageEncoderBuildsOnMetaLikeTransformers()
    {
        var counts = JsonNode.Parse(File.ReadAllText(Fixtures.Path(Folder + "/counts.json")))!.AsObject();
        var config = ConfigJson.Parse<Qwen3Config>(counts["config"]!.ToJsonString());
        Assert.Equal((2560, 36, 32, 8, 128, 151936), (config.HiddenSize, config.NumHiddenLayers, config.NumAttentionHeads, config.KeyValueHeads, config.HeadDim, config.VocabSize));
        using var model = new Qwen3Model(config, new Device("meta"), ScalarType.BFloat16);
        var state = model.state_dict();
        var expected = counts["shapes"]!.AsObject().ToDictionary(kv => kv.Key, kv => kv.Value!.AsArray().Select(d => d!.GetValue<long>()).ToArray());
        Assert.Equal(counts["tensors"]!.GetValue<int>(), state.Count);
        Assert.Equal(expected.Keys.Order(), state.Keys.Order());
        foreach (var (key, shape) in expected) Assert.Equal(shape, state[key].shape);
        Assert.Equal(counts["elements"]!.GetValue<long>(), state.Values.Sum(t => t.numel()));
        Assert.Equal(4_022_468_096L, model.parameters().Sum(p => p.numel()));
    }

    [Theory]
    [InlineData("{\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}}", typeof(NotSupportedException))]
    [InlineData("{\"rope_scaling\": {\"type\": \"dynamic\", \"factor\": 2.0}}", typeof(NotSupportedException))]
    [InlineData("{\"rope_parameters\": {\"rope_type\": \"linear\", \"factor\": 2.0, \"rope_theta\": 1000000}}", typeof(NotSupportedException))]
    [InlineData("{\"use_sliding_window\": true, \"sliding_window\": 4}", typeof(NotSupportedException))]
    [InlineData("{\"layer_types\": [\"full_attention\", \"sliding_attention\", \"full_attention\"]}", typeof(NotSupportedException))]
    [InlineData("{\"num_key_value_heads\": 3}", typeof(ArgumentException))]
    [InlineData("{\"head_dim\": 25}", typeof(ArgumentException))]
    [InlineData("{\"hidden_act\": \"swiglu\"}", typeof(ArgumentException))]
    public void UnsupportedOrInvalidConfigsAreRefusedBeforeBuilding(string fields, Type exception)
    {
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(TextEncoder, "config.json")))!.AsObject();
        foreach (var (field, value) in JsonNode.Parse(fields)!.AsObject()) json[field] = value!.DeepClone();
        var config = ConfigJson.Parse<Qwen3Config>(json.ToJsonString());
        var e = Assert.ThrowsAny<Exception>(() => new Qwen3Model(config, new Device("meta")));
        Assert.IsType(exception, e);
    }

    /// <summary>use_sliding_window without a window is full attention in transformers too; transformers 5's rope_parameters
    /// give the base.</summary>
    [Fact]
    public void DefaultRopeParametersOfTransformers5AreRead()
    {
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(TextEncoder, "config.json")))!.AsObject();
        json.Remove("rope_theta");
        json["rope_parameters"] = JsonNode.Parse("{\"rope_type\": \"default\", \"rope_theta\": 1000000.0}");
        Assert.Equal(1e6, ConfigJson.Parse<Qwen3Config>(json.ToJsonString()).EffectiveRopeTheta);
        Assert.Equal(1e6, ConfigJson.Read<Qwen3Config>(Path.Combine(TextEncoder, "config.json")).EffectiveRopeTheta);
        json["use_sliding_window"] = true; // sliding_window is null in the fixture's config
        using var model = new Qwen3Model(ConfigJson.Parse<Qwen3Config>(json.ToJsonString()), new Device("meta"));
    }

    [Fact]
    public void BadInputsAreRefusedBeforeCompute()
    {
        using var model = Qwen3Model.FromPretrained(TextEncoder);
        using var ids = tensor(new long[] { 1, 2, 704 }, [1, 3]);
        Assert.Throws<ArgumentException>(() => model.Forward(ids)); // 704 is past vocab_size
        using var good = tensor(new long[] { 1, 2, 3 }, [1, 3]);
        using var mask = ones(1, 4, ScalarType.Int64);
        Assert.Throws<ArgumentException>(() => model.Forward(good, mask));
        using var flat = tensor(new long[] { 1, 2, 3 });
        Assert.Throws<ArgumentException>(() => model.HiddenState(flat, null, -2));
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        Assert.Throws<OperationCanceledException>(() => model.HiddenState(good, null, -2, cts.Token));
    }

    [Fact]
    public void ForwardLeaksNoTensors()
    {
        using var model = Qwen3Model.FromPretrained(TextEncoder);
        using var _ = inference_mode();
        var ids = Expected["batch.input_ids"];
        var mask = Expected["batch.attention_mask"];
        model.Forward(ids, mask).Dispose();
        model.HiddenState(ids, mask, -2).Dispose();
        long before = LiveTensors.Count();
        model.Forward(ids, mask).Dispose();
        model.HiddenState(ids, mask, -2).Dispose();
        Assert.Equal(before, LiveTensors.Count());
    }
}
