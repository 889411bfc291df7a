using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// UMT5EncoderModel (AuraFlow's text encoder) against transformers' OWN modeling_umt5.py (run unmodified by
/// tools/reference/umt5.py; fixture local-diffusers/umt5, see its README): a tiny UMT5 whose two blocks each own a
/// relative-attention bias table (replacing block 1's by block 0's, T5's sharing, moves transformers' output by 1.2), a
/// right-padded batch of two whose 20 tokens pass max_distance 16, and an unpadded sequence without a mask, in float32 and
/// the batch in bfloat16; the full-size AuraFlow encoder built on the meta device against transformers' own build.
/// </summary>
public sealed class UMT5EncoderParityTests(ITestOutputHelper output) : IDisposable
{
    private const string Folder = "local-diffusers/umt5";
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected(Folder + "/expected.safetensors");
    private readonly string _dir = Directory.CreateTempSubdirectory("ds-umt5-").FullName;

    /// <summary>
    /// Bound: 1e-5 x max(1, max |expected|), as the T5 / Gemma2 / Qwen3 parity tests. The reference is within 1.3e-6
    /// (batch) / 1.4e-6 (unpadded) of a float64 run of the same code (float32 rounding, see the fixture README); ours is
    /// measured 1.6e-6 / 9.5e-7 from it, and is held to the float noise itself in
    /// <see cref="Float32IsAsCloseToFloat64AsTransformersFloat32"/>.
    /// </summary>
    private const double Tolerance = 1e-5;

    private static string Model => Fixtures.Path(Folder + "/text_encoder");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("batch")]
    [InlineData("unpadded")]
    public void LastHiddenStateMatchesTransformers(string input)
    {
        using var model = UMT5EncoderModel.FromPretrained(Model);
        using var _ = inference_mode();
        var ids = Expected[$"{input}.input_ids"];
        Tensor? mask = input == "batch" ? Expected["batch.attention_mask"] : null;
        if (mask is not null) Assert.True(mask.sum().item<long>() < mask.numel()); // the second row is padded
        using var hidden = model.Forward(ids, mask);
        var expected = Expected[$"{input}.last_hidden_state"];
        double err = TensorAssert.Close(hidden, expected, Tolerance, input);
        output.WriteLine($"{input}: float32 max |diff| vs transformers {err:G3} (max |expected| {expected.abs().max().item<float>():G4})");
    }

    /// <summary>
    /// The float noise, measured: transformers' own float64 run of the same weights (its softmax still in float32, as
    /// the file computes it) against the float32 runs. Ours may be at most twice as far from it as transformers' float32
    /// output is (measured: see the test output).
    /// </summary>
    [Theory]
    [InlineData("batch")]
    [InlineData("unpadded")]
    public void Float32IsAsCloseToFloat64AsTransformersFloat32(string input)
    {
        using var model = UMT5EncoderModel.FromPretrained(Model);
        using var _ = inference_mode();
        using var hidden = model.Forward(Expected[$"{input}.input_ids"], input == "batch" ? Expected["batch.attention_mask"] : null);
        var f64 = Expected[$"{input}.f64.last_hidden_state"];
        Assert.Equal(ScalarType.Float64, f64.dtype);
        double ours = TensorAssert.MaxAbsDiff(hidden, f64);
        double theirs = TensorAssert.MaxAbsDiff(Expected[$"{input}.last_hidden_state"], f64);
        output.WriteLine($"{input}: from float64, ours {ours:G3}, transformers' float32 {theirs:G3}");
        Assert.True(ours <= 2 * theirs, $"{input}: ours {ours:G3} from float64, transformers' float32 {theirs:G3}");
    }

    /// <summary>
    /// bfloat16 keeps 8 significant bits and two bfloat16 runs round differently (matmul accumulation in torch 1.13 and
    /// libtorch 2.10). Bound, as for Gemma2 / Qwen3: ours no more than one bfloat16 step (at the largest values) further
    /// from the float32 reference than transformers' own bfloat16 run is.
    /// </summary>
    [Fact]
    public void BFloat16StaysAsCloseToFloat32AsTransformersInBFloat16()
    {
        using var model = UMT5EncoderModel.FromPretrained(Model, ScalarType.BFloat16);
        using var _ = inference_mode();
        using var hidden = model.Forward(Expected["batch.input_ids"], Expected["batch.attention_mask"]);
        Assert.Equal(ScalarType.BFloat16, hidden.dtype);
        var reference = Expected["batch.bf16.last_hidden_state"];
        var f32 = Expected["batch.last_hidden_state"];
        double max = reference.abs().max().to(ScalarType.Float64).item<double>();
        double step = Math.Pow(2, Math.Floor(Math.Log2(max)) - 7); // bfloat16's spacing at the largest values
        double vsTransformers = TensorAssert.MaxAbsDiff(hidden, reference);
        using var diff = (hidden.to(ScalarType.Float64) - reference.to(ScalarType.Float64)).abs();
        double mean = diff.mean().item<double>();
        double equalShare = diff.eq(0).to(ScalarType.Float64).mean().item<double>();
        double ours = TensorAssert.MaxAbsDiff(hidden, f32);
        double theirs = TensorAssert.MaxAbsDiff(reference, f32);
        output.WriteLine($"bfloat16: {vsTransformers:G3} from transformers' bfloat16 (mean {mean:G3}, {equalShare:P1} equal); from float32: ours {ours:G3}, transformers' {theirs:G3} (step {step:G3})");
        Assert.True(ours <= theirs + step, $"bf16: {ours:G3} from float32, transformers' bfloat16 is {theirs:G3}");
    }

    /// <summary>
    /// float16, as transformers loads it (<c>_keep_in_fp32_modules = ["wo"]</c>: every block's wo stays float32, its input
    /// cast up; the padding mask is -65504). torch 1.13 has no float16 matmul on the CPU, so transformers' own float16 run
    /// is not in the fixture: ours is held against transformers' float64 run to the bound the T5 float16 test uses
    /// (relative L2 below 5e-3, about ten float16 unit roundoffs of 2^-11).
    /// </summary>
    [Fact]
    public void Float16KeepsWoInFloat32AndStaysWithinFloat16Rounding()
    {
        using var model = UMT5EncoderModel.FromPretrained(Model, ScalarType.Float16);
        var sd = model.state_dict();
        for (int i = 0; i < 2; i++)
        {
            Assert.Equal(ScalarType.Float32, sd[$"encoder.block.{i}.layer.1.DenseReluDense.wo.weight"].dtype);
            Assert.Equal(ScalarType.Float16, sd[$"encoder.block.{i}.layer.1.DenseReluDense.wi_0.weight"].dtype);
            Assert.Equal(ScalarType.Float16, sd[$"encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight"].dtype);
        }
        using var _ = inference_mode();
        using var hidden = model.Forward(Expected["batch.input_ids"], Expected["batch.attention_mask"]);
        Assert.Equal(ScalarType.Float16, hidden.dtype); // the final norm casts back to its float16 weight's type
        var f64 = Expected["batch.f64.last_hidden_state"];
        double rel = TensorAssert.RelativeL2(hidden, f64);
        double err = TensorAssert.MaxAbsDiff(hidden, f64);
        output.WriteLine($"float16: relative L2 {rel:G3} from transformers' float64, max |diff| {err:G3}");
        Assert.True(rel < 5e-3, $"fp16: relative L2 {rel:G3} from float64");
    }

    /// <summary>
    /// The checkpoint holds shared.weight (transformers' save_pretrained drops the tied encoder.embed_tokens.weight);
    /// either name alone, or both, loads the same model; every block's bias table is required, and unknown keys refused.
    /// </summary>
    [Fact]
    public void TiedEmbeddingLoadsUnderEitherNameAndEveryBlockNeedsItsBiasTable()
    {
        using var file = SafetensorsFile.Open(Path.Combine(Model, "model.safetensors"));
        var weights = file.Tensors.Keys.ToDictionary(k => k, k => file.Read(k));
        Assert.Contains("shared.weight", weights.Keys);
        Assert.DoesNotContain("encoder.embed_tokens.weight", weights.Keys);
        Assert.Contains("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight", weights.Keys);
        File.Copy(Path.Combine(Model, "config.json"), Path.Combine(_dir, "config.json"));
        string path = Path.Combine(_dir, "model.safetensors");

        var renamed = weights.Where(kv => kv.Key != "shared.weight").ToDictionary();
        renamed["encoder.embed_tokens.weight"] = weights["shared.weight"];
        var both = new Dictionary<string, Tensor>(weights) { ["encoder.embed_tokens.weight"] = weights["shared.weight"] };
        foreach (var variant in new[] { renamed, both })
        {
            SafetensorsWriter.Save(path, variant);
            using var model = UMT5EncoderModel.FromPretrained(_dir);
            using var _ = inference_mode();
            using var hidden = model.Forward(Expected["unpadded.input_ids"]);
            TensorAssert.Close(hidden, Expected["unpadded.last_hidden_state"], Tolerance, "tied embedding");
        }

        SafetensorsWriter.Save(path, weights.Where(kv => kv.Key != "encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight").ToDictionary());
        var missing = Assert.Throws<WeightLoadException>(() => UMT5EncoderModel.FromPretrained(_dir));
        Assert.Contains("encoder.block.1.layer.0.SelfAttention.relative_attention_bias.weight", missing.Message);

        SafetensorsWriter.Save(path, new Dictionary<string, Tensor>(weights) { ["decoder.final_layer_norm.weight"] = weights["encoder.final_layer_norm.weight"] });
        var extra = Assert.Throws<WeightLoadException>(() => UMT5EncoderModel.FromPretrained(_dir));
        Assert.Contains("decoder.final_layer_norm.weight", extra.Message);
        foreach (var t in weights.Values) t.Dispose();
    }

    [Fact]
    public void FullSizeAuraFlowEncoderBuildsOnMetaLikeTransformers()
    {
        var counts = JsonNode.Parse(File.ReadAllText(Fixtures.Path(Folder + "/counts.json")))!.AsObject();
        var config = ConfigJson.Parse<UMT5Config>(counts["config"]!.ToJsonString());
        Assert.Equal((2048, 24, 32, 64, 5120, 32128, 32, 128), (config.DModel, config.NumLayers, config.NumHeads, config.DKv,
            config.DFf, config.VocabSize, config.RelativeAttentionNumBuckets, config.RelativeAttentionMaxDistance));
        Assert.True(config.Gated);
        Assert.Equal("gelu_new", config.ActivationName);
        using var model = new UMT5EncoderModel(config, new Device("meta"), ScalarType.BFloat16);
        var state = model.state_dict();
        var expected = counts["shapes"]!.AsObject().ToDictionary(kv => kv.Key, kv => kv.Value!.AsArray().Select(d => d!.GetValue<long>()).ToArray());
        Assert.Equal(expected.Keys.Order(), state.Keys.Order());
        foreach (var (key, shape) in expected) Assert.Equal(shape, state[key].shape);
        Assert.Equal(counts["tensors"]!.GetValue<int>(), state.Count);
        Assert.Equal(counts["elements"]!.GetValue<long>(), state.Values.Sum(t => t.numel()));
        // The tied embedding counts once among the parameters: 1,223,550,976.
        long parameters = counts["parameters"]!.GetValue<long>();
        Assert.Equal(1_223_550_976L, parameters);
        Assert.Equal(parameters, model.parameters().Sum(p => p.numel()));
        output.WriteLine($"full size: {state.Count} tensors, {parameters:N0} parameters");
    }

    /// <summary>Fields config.json leaves out take UMT5Config's defaults (not T5Config's); the registry builds the class.</summary>
    [Fact]
    public void AbsentFieldsTakeUMT5DefaultsAndTheRegistryBuildsIt()
    {
        var defaults = ConfigJson.Parse<UMT5Config>("{}");
        Assert.Equal((250112, 512, 64, 1024, 8, 6, 32, 128, "gated-gelu"), (defaults.VocabSize, defaults.DModel, defaults.DKv,
            defaults.DFf, defaults.NumLayers, defaults.NumHeads, defaults.RelativeAttentionNumBuckets,
            defaults.RelativeAttentionMaxDistance, defaults.FeedForwardProj));
        Assert.Equal("gelu_new", defaults.ActivationName);
        Assert.True(defaults.Gated);

        using var built = ModelRegistry.Build("text_encoder", "UMT5EncoderModel", Model, new Device("meta"));
        var umt5 = Assert.IsType<UMT5EncoderModel>(built);
        Assert.Equal(2, umt5.Config.NumLayers);
    }

    [Theory]
    [InlineData("{\"feed_forward_proj\": \"gated-gelu-x\"}")]
    [InlineData("{\"num_heads\": 0}")]
    [InlineData("{\"relative_attention_num_buckets\": 2}")]
    [InlineData("{\"relative_attention_max_distance\": 2}")]
    public void InvalidConfigsAreRefusedBeforeBuilding(string fields)
    {
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(Model, "config.json")))!.AsObject();
        foreach (var (field, value) in JsonNode.Parse(fields)!.AsObject()) json[field] = value?.DeepClone();
        var config = ConfigJson.Parse<UMT5Config>(json.ToJsonString());
        var e = Assert.Throws<ArgumentException>(() => new UMT5EncoderModel(config, new Device("meta")));
        Assert.StartsWith("UMT5Config:", e.Message);
    }

    [Fact]
    public void UnknownActivationIsRefusedBeforeBuilding()
    {
        var json = JsonNode.Parse(File.ReadAllText(Path.Combine(Model, "config.json")))!.AsObject();
        json["dense_act_fn"] = "swiglu";
        var config = ConfigJson.Parse<UMT5Config>(json.ToJsonString());
        Assert.Contains("swiglu", Assert.Throws<ArgumentException>(() => new UMT5EncoderModel(config, new Device("meta"))).Message);
    }

    [Fact]
    public void BadInputsAreRefusedBeforeCompute()
    {
        using var model = UMT5EncoderModel.FromPretrained(Model);
        using var outside = tensor(new long[] { 2, 5, 100 }, [1, 3]);
        Assert.Contains("[0, 100)", Assert.Throws<ArgumentException>(() => model.Forward(outside)).Message);
        using var good = tensor(new long[] { 2, 5, 7 }, [1, 3]);
        using var mask = ones(1, 4, ScalarType.Int64);
        Assert.Throws<ArgumentException>(() => model.Forward(good, mask));
        using var flat = tensor(new long[] { 2, 5, 7 });
        Assert.Throws<ArgumentException>(() => model.Forward(flat));
        using var floats = tensor(new float[] { 2, 5, 7 }, [1, 3]);
        Assert.Throws<ArgumentException>(() => model.Forward(floats));
    }

    [Fact]
    public void ForwardLeaksNoTensors()
    {
        using var model = UMT5EncoderModel.FromPretrained(Model);
        using var _ = inference_mode();
        var ids = Expected["batch.input_ids"];
        var mask = Expected["batch.attention_mask"];
        model.Forward(ids, mask).Dispose();
        long before = LiveTensors.Count();
        model.Forward(ids, mask).Dispose();
        Assert.Equal(before, LiveTensors.Count());
    }
}
