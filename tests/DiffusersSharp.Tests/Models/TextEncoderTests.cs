using System.Text.Json;
using DiffusersSharp.IO;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

public class TextEncoderTests(ITestOutputHelper output)
{
    private static readonly Device Meta = new(DeviceType.META);
    private static string Folder(string name) => Path.Combine(Fixtures.TinySd3Model, name);

    private static Tensor Ids(Dictionary<string, Tensor> expected, string key) => expected[key].to(ScalarType.Int64);

    [Theory]
    [InlineData("text_encoder", "clip_l")]
    [InlineData("text_encoder_2", "clip_g")]
    public void ClipMatchesTransformersInFloat32(string folder, string prefix)
    {
        var expected = Fixtures.Expected();
        using var model = CLIPTextModelWithProjection.FromPretrained(Folder(folder));
        using var _ = inference_mode();
        using var ids = Ids(expected, $"{prefix}.input_ids");
        using var result = model.Forward(ids);

        Assert.Equal(model.Config.NumHiddenLayers + 1, result.HiddenStates.Count);
        double last = TensorAssert.Close(result.LastHiddenState, expected[$"{prefix}.last_hidden"], what: $"{prefix}.last_hidden");
        double pen = TensorAssert.Close(result.HiddenStates[^2], expected[$"{prefix}.penultimate"], what: $"{prefix}.penultimate");
        double emb = TensorAssert.Close(result.TextEmbeds!, expected[$"{prefix}.text_embeds"], what: $"{prefix}.text_embeds");
        output.WriteLine($"{prefix} float32 max |diff|: last_hidden {last:G3}, penultimate {pen:G3}, text_embeds {emb:G3}");

        // The pooled row is the EOS position (argmax of the ids, the legacy eos_token_id == 2 rule).
        using var eos = ids.argmax(-1);
        for (long b = 0; b < ids.shape[0]; b++)
        {
            using var row = result.LastHiddenState[b, eos[b].item<long>()];
            using var pooled = result.PooledOutput[b];
            Assert.True(row.eq(pooled).all().item<bool>());
        }
    }

    /// <summary>
    /// Why T5 parity is skipped: the fixture's <c>t5.last_hidden</c> was made with the encoder in training mode, so
    /// dropout (dropout_rate 0.1) was active: 4964 of its 49152 values (10.1%) are exactly 0, scattered uniformly over
    /// channels and positions, while final_layer_norm.weight is all ones (no genuine zeros possible) and the CLIP
    /// fixtures have none. The T5 part of <c>t2i.prompt_embeds</c> shows the same (10.4% zeros). No implementation can
    /// reproduce those values; the fixture must be regenerated with <c>text_encoder_3.eval()</c>.
    /// </summary>
    private const string T5FixtureHasDropout =
        "tiny-sd3 t5.last_hidden was generated with dropout active (10.1% exact zeros): regenerate it with the T5 encoder in eval mode";

    [Fact]
    public void T5FixtureIsCorruptedByDropoutWhichIsWhyParityIsSkipped()
    {
        // Documents the measured fixture defect; when the fixture is regenerated in eval mode this test fails, and
        // T5MatchesTransformersInFloat32 must then be un-skipped.
        var expected = Fixtures.Expected();
        using var zeros = expected["t5.last_hidden"].eq(0).to(ScalarType.Float64).mean();
        double fraction = zeros.item<double>();
        output.WriteLine($"t5.last_hidden exact-zero fraction: {fraction:P2}");
        Assert.InRange(fraction, 0.08, 0.12);
    }

    [Fact(Skip = T5FixtureHasDropout)]
    public void T5MatchesTransformersInFloat32()
    {
        var expected = Fixtures.Expected();
        using var model = T5EncoderModel.FromPretrained(Folder("text_encoder_3"));
        Assert.Equal("gelu_new", model.Config.ActivationName);
        Assert.True(model.Config.Gated);
        using var _ = inference_mode();
        using var ids = Ids(expected, "t5.input_ids");
        using var last = model.Forward(ids);
        double err = TensorAssert.Close(last, expected["t5.last_hidden"], what: "t5.last_hidden");
        output.WriteLine($"t5 float32 max |diff|: last_hidden {err:G3}");
    }

    [Fact]
    public void T5EqualsTransformersFormulasAppliedToTheRawWeights()
    {
        // Beside the parity test against transformers' own T5EncoderModel (TransformersEncodersParityTests, which the
        // dropout-corrupted tiny-sd3 outputs cannot give): transformers' T5 encoder written out with plain
        // tensor ops on the checkpoint tensors (RMS norm, q k^T with NO 1/sqrt(d_kv), block-0 relative bias for every
        // block, float32 softmax, gelu_new(wi_0) * wi_1, wo, final norm), compared with the module.
        var expected = Fixtures.Expected();
        using var file = SafetensorsFile.Open(Path.Combine(Folder("text_encoder_3"), "model.safetensors"));
        var w = file.ReadAll();
        using var model = T5EncoderModel.FromPretrained(Folder("text_encoder_3"));
        var c = model.Config;
        using var _ = inference_mode();
        using var scope = NewDisposeScope();
        var ids = Ids(expected, "t5.input_ids");
        long batch = ids.shape[0], len = ids.shape[1], heads = c.NumHeads, dkv = c.DKv;
        Tensor Rms(Tensor x, string key) => w[key] * (x * (x.pow(2).mean(new long[] { -1 }, keepdim: true) + c.LayerNormEpsilon).rsqrt());
        Tensor GeluNew(Tensor x) => 0.5 * x * (1 + (Math.Sqrt(2 / Math.PI) * (x + 0.044715 * x.pow(3))).tanh());
        var h = w["shared.weight"].index_select(0, ids.flatten()).view(batch, len, -1);
        // bucket(j - i) from the transformers formula, element by element in double precision
        var buckets = new long[len * len];
        for (long i = 0; i < len; i++)
            for (long j = 0; j < len; j++)
            {
                long r = j - i, d = Math.Abs(r), b = r > 0 ? 16 : 0;
                buckets[i * len + j] = b + (d < 8 ? d : Math.Min(15, 8 + (long)(Math.Log(d / 8.0) / Math.Log(128 / 8.0) * 8)));
            }
        var bias = w["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
            .index_select(0, tensor(buckets)).view(len, len, heads).permute(2, 0, 1).unsqueeze(0);
        for (int i = 0; i < c.NumLayers; i++)
        {
            string p = $"encoder.block.{i}.layer.";
            var n = Rms(h, p + "0.layer_norm.weight");
            Tensor Split(string m) => nn.functional.linear(n, w[p + "0.SelfAttention." + m + ".weight"]).view(batch, len, heads, dkv).transpose(1, 2);
            var probs = (matmul(Split("q"), Split("k").transpose(2, 3)) + bias).softmax(-1);
            h = h + nn.functional.linear(matmul(probs, Split("v")).transpose(1, 2).reshape(batch, len, heads * dkv), w[p + "0.SelfAttention.o.weight"]);
            var n2 = Rms(h, p + "1.layer_norm.weight");
            var ff = GeluNew(nn.functional.linear(n2, w[p + "1.DenseReluDense.wi_0.weight"])) * nn.functional.linear(n2, w[p + "1.DenseReluDense.wi_1.weight"]);
            h = h + nn.functional.linear(ff, w[p + "1.DenseReluDense.wo.weight"]);
        }
        var reference = Rms(h, "encoder.final_layer_norm.weight");
        var ours = model.Forward(ids);
        double err = TensorAssert.Close(ours, reference, what: "t5 vs formulas");
        output.WriteLine($"t5 float32 max |diff| vs formulas on raw weights: {err:G3}");
    }

    [Fact]
    public void T5EmbeddingIsTiedAndLoadedFromSharedWeight()
    {
        using var model = T5EncoderModel.FromPretrained(Folder("text_encoder_3"));
        var sd = model.state_dict();
        Assert.True(sd.ContainsKey("encoder.embed_tokens.weight"));
        Assert.Same(sd["shared.weight"], sd["encoder.embed_tokens.weight"]);
        Assert.Equal(ScalarType.Float32, sd["shared.weight"].dtype);
        Assert.NotEqual(DeviceType.META, sd["encoder.embed_tokens.weight"].device_type);
    }

    [Theory]
    [InlineData("text_encoder", "clip_l")]
    [InlineData("text_encoder_2", "clip_g")]
    public void ClipRunsInBFloat16WithinBf16Tolerance(string folder, string prefix)
    {
        var expected = Fixtures.Expected();
        using var model = CLIPTextModelWithProjection.FromPretrained(Folder(folder), ScalarType.BFloat16);
        using var _ = inference_mode();
        using var ids = Ids(expected, $"{prefix}.input_ids");
        using var result = model.Forward(ids);
        Assert.Equal(ScalarType.BFloat16, result.LastHiddenState.dtype);
        Assert.Equal(ScalarType.BFloat16, result.TextEmbeds!.dtype);
        double last = RelL2(result.LastHiddenState, expected[$"{prefix}.last_hidden"]);
        double pen = RelL2(result.HiddenStates[^2], expected[$"{prefix}.penultimate"]);
        double emb = RelL2(result.TextEmbeds!, expected[$"{prefix}.text_embeds"]);
        output.WriteLine($"{prefix} bf16 relative L2: last_hidden {last:G3}, penultimate {pen:G3}, text_embeds {emb:G3}");
        Assert.True(last < 2e-2 && pen < 2e-2 && emb < 2e-2, $"{prefix} bf16 relative L2 too large: {last:G3}, {pen:G3}, {emb:G3}");
    }

    [Fact]
    public void T5RunsInBFloat16WithinBf16Tolerance()
    {
        var expected = Fixtures.Expected();
        // The float32 fixture is unusable (see T5FixtureHasDropout): bf16 is compared with this model's float32 output,
        // a precision check of the half-precision path, not a parity check.
        using var model = T5EncoderModel.FromPretrained(Folder("text_encoder_3"), ScalarType.BFloat16);
        using var reference = T5EncoderModel.FromPretrained(Folder("text_encoder_3"));
        using var _ = inference_mode();
        using var ids = Ids(expected, "t5.input_ids");
        using var last = model.Forward(ids);
        using var f32 = reference.Forward(ids);
        Assert.Equal(ScalarType.BFloat16, last.dtype);
        double err = RelL2(last, f32);
        output.WriteLine($"t5 bf16 relative L2 vs our float32: last_hidden {err:G3}");
        Assert.True(err < 2e-2, $"t5 bf16 relative L2 {err:G3}");
    }

    [Fact]
    public void T5KeepsWoInFloat32WhenLoadedAsFloat16()
    {
        var expected = Fixtures.Expected();
        using var model = T5EncoderModel.FromPretrained(Folder("text_encoder_3"), ScalarType.Float16);
        var sd = model.state_dict();
        Assert.Equal(ScalarType.Float32, sd["encoder.block.0.layer.1.DenseReluDense.wo.weight"].dtype);
        Assert.Equal(ScalarType.Float16, sd["encoder.block.0.layer.1.DenseReluDense.wi_0.weight"].dtype);
        using var _ = inference_mode();
        using var reference = T5EncoderModel.FromPretrained(Folder("text_encoder_3"));
        using var ids = Ids(expected, "t5.input_ids");
        using var last = model.Forward(ids);
        using var f32 = reference.Forward(ids);
        Assert.Equal(ScalarType.Float16, last.dtype); // the final norm casts back to its fp16 weight's type
        double err = RelL2(last, f32);
        output.WriteLine($"t5 fp16 relative L2 vs our float32: last_hidden {err:G3}");
        Assert.True(err < 5e-3, $"t5 fp16 relative L2 {err:G3}");
    }

    [Fact]
    public void FullSizeEncodersHaveTheReferenceParameterAndKeyCounts()
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Fixtures.Path("image-ops/meta.json")));
        var counts = doc.RootElement.GetProperty("parameter_counts");
        long Count(string name) => counts.GetProperty(name).GetInt64();

        var clipL = new CLIPTextConfig { HiddenSize = 768, NumHiddenLayers = 12, NumAttentionHeads = 12, IntermediateSize = 3072, ProjectionDim = 768, HiddenAct = "quick_gelu", EosTokenId = 2 };
        var clipG = new CLIPTextConfig { HiddenSize = 1280, NumHiddenLayers = 32, NumAttentionHeads = 20, IntermediateSize = 5120, ProjectionDim = 1280, HiddenAct = "gelu", EosTokenId = 2 };
        var t5 = new T5Config { DModel = 4096, DKv = 64, NumHeads = 64, DFf = 10240, NumLayers = 24, FeedForwardProj = "gated-gelu", VocabSize = 32128 };

        // The reference counts come from transformers: parameters() de-duplicates the tied T5 embedding (counted once),
        // while state_dict() lists it under both shared.weight and encoder.embed_tokens.weight.
        using (var m = new CLIPTextModelWithProjection(clipL, Meta)) Check(m, Count("clip_l"), Count("clip_l.keys"), "clip_l");
        using (var m = new CLIPTextModelWithProjection(clipG, Meta)) Check(m, Count("clip_g"), Count("clip_g.keys"), "clip_g");
        using (var m = new T5EncoderModel(t5, Meta)) Check(m, Count("t5xxl"), Count("t5xxl.keys"), "t5xxl");

        void Check(nn.Module m, long parameters, long keys, string name)
        {
            var distinct = m.parameters().DistinctBy(p => p.Handle).ToList();
            long total = distinct.Sum(p => p.numel());
            Assert.All(distinct, p => Assert.Equal(DeviceType.META, p.device_type));
            Assert.Empty(m.buffers());
            Assert.Equal(parameters, total);
            Assert.Equal(keys, (long)m.state_dict().Count);
            output.WriteLine($"{name}: {total} parameters, {m.state_dict().Count} keys");
        }
    }

    [Fact]
    public void ConfigsHaveTheTransformersDefaults()
    {
        var c = ConfigJson.Parse<CLIPTextConfig>("{}");
        Assert.Equal((49408, 512, 2048, 512, 12, 8, 77, "quick_gelu", 1e-5, 1, 49406, 49407),
            (c.VocabSize, c.HiddenSize, c.IntermediateSize, c.ProjectionDim, c.NumHiddenLayers, c.NumAttentionHeads,
             c.MaxPositionEmbeddings, c.HiddenAct, c.LayerNormEps, c.PadTokenId, c.BosTokenId, c.EosTokenId));
        var t = ConfigJson.Parse<T5Config>("{}");
        Assert.Equal((32128, 512, 64, 2048, 6, 8, 32, 128, 1e-6, "relu", 0, 1),
            (t.VocabSize, t.DModel, t.DKv, t.DFf, t.NumLayers, t.NumHeads, t.RelativeAttentionNumBuckets,
             t.RelativeAttentionMaxDistance, t.LayerNormEpsilon, t.FeedForwardProj, t.PadTokenId, t.EosTokenId));
        Assert.Equal(("relu", false), (t.ActivationName, t.Gated));
        var gated = ConfigJson.Parse<T5Config>("""{"feed_forward_proj": "gated-gelu", "d_kv": 16, "d_model": 96, "d_ff": 64}""");
        Assert.Equal(("gelu_new", true, 16, 96, 64), (gated.ActivationName, gated.Gated, gated.DKv, gated.DModel, gated.DFf));
        Assert.Equal("silu", ConfigJson.Parse<T5Config>("""{"feed_forward_proj": "gated-silu"}""").ActivationName);
        Assert.Throws<ArgumentException>(() => new T5Config { FeedForwardProj = "fancy-gelu" }.Validate());
        Assert.Throws<ArgumentException>(() => new CLIPTextConfig { HiddenAct = "mish" }.Validate());
        Assert.Throws<ArgumentException>(() => new CLIPTextConfig { HiddenSize = 30, NumAttentionHeads = 4 }.Validate());
    }

    [Fact]
    public void T5RelativePositionBucketsMatchTransformers()
    {
        // transformers' T5Attention._relative_position_bucket(bidirectional=True, 32 buckets, max 128), evaluated
        // independently in double precision (no value sits on a truncation boundary): exact buckets for |d| < 8,
        // 8 + floor(log(|d|/8) / log(16) * 8) capped at 15 beyond, +16 for keys after the query.
        long[] relative = [-200, -128, -127, -65, -63, -20, -9, -8, -7, -1, 0, 1, 7, 8, 9, 20, 63, 65, 127, 128, 200];
        long[] buckets = [15, 15, 15, 14, 13, 10, 8, 8, 7, 1, 0, 17, 23, 24, 24, 26, 29, 30, 31, 31, 31];
        using var r = tensor(relative);
        using var b = T5Attention.Bucket(r, 32, 128);
        Assert.Equal(buckets, b.data<long>().ToArray());
    }

    [Fact]
    public void ClipWithoutLegacyEosPoolsAtTheFirstEosToken()
    {
        var config = new CLIPTextConfig { VocabSize = 64, HiddenSize = 16, IntermediateSize = 24, NumHiddenLayers = 2, NumAttentionHeads = 2, MaxPositionEmbeddings = 8, EosTokenId = 5 };
        using var model = new CLIPTextModel(config);
        model.eval();
        using var _ = inference_mode();
        // Row 0: EOS (5) at 2 and again at 4, with larger ids around it; row 1: EOS at 6.
        using var ids = tensor(new long[,] { { 3, 60, 5, 63, 5, 1, 1, 1 }, { 3, 9, 10, 11, 12, 13, 5, 62 } });
        using var result = model.Forward(ids, outputHiddenStates: false);
        Assert.Empty(result.HiddenStates);
        Assert.Null(result.TextEmbeds);
        using var first = result.LastHiddenState[0, 2];
        using var second = result.LastHiddenState[1, 6];
        Assert.True(result.PooledOutput[0].eq(first).all().item<bool>());
        Assert.True(result.PooledOutput[1].eq(second).all().item<bool>());
    }

    [Fact]
    public void ClipIsCausal()
    {
        // A change at the last position must not alter any earlier position's output.
        var config = new CLIPTextConfig { VocabSize = 64, HiddenSize = 16, IntermediateSize = 24, NumHiddenLayers = 2, NumAttentionHeads = 2, MaxPositionEmbeddings = 8 };
        using var model = new CLIPTextModel(config);
        model.eval();
        using var _ = inference_mode();
        using var a = model.Forward(tensor(new long[,] { { 1, 2, 3, 4, 5 } }));
        using var b = model.Forward(tensor(new long[,] { { 1, 2, 3, 4, 9 } }));
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(a.LastHiddenState[.., ..4], b.LastHiddenState[.., ..4]));
        Assert.True(TensorAssert.MaxAbsDiff(a.LastHiddenState[.., 4], b.LastHiddenState[.., 4]) > 0);
    }

    [Fact]
    public void BadInputIdsThrowBeforeCompute()
    {
        using var clip = CLIPTextModelWithProjection.FromPretrained(Folder("text_encoder"));
        using var t5 = T5EncoderModel.FromPretrained(Folder("text_encoder_3"));

        var tooLong = Assert.Throws<ArgumentException>(() => clip.Forward(zeros(new long[] { 1, 78 }, ScalarType.Int64)));
        Assert.Contains("max_position_embeddings 77", tooLong.Message);
        var high = Assert.Throws<ArgumentException>(() => clip.Forward(full(new long[] { 1, 4 }, 49408L, ScalarType.Int64)));
        Assert.Contains("[0, 49408)", high.Message);
        Assert.Throws<ArgumentException>(() => clip.Forward(full(new long[] { 1, 4 }, -1L, ScalarType.Int64)));
        var floats = Assert.Throws<ArgumentException>(() => clip.Forward(zeros(1, 4)));
        Assert.Contains("integer", floats.Message);
        Assert.Throws<ArgumentException>(() => clip.Forward(zeros(new long[] { 4 }, ScalarType.Int64)));

        var t5High = Assert.Throws<ArgumentException>(() => t5.Forward(full(new long[] { 1, 4 }, 4100L, ScalarType.Int64)));
        Assert.Contains("[0, 4100)", t5High.Message);
        Assert.Throws<ArgumentException>(() => t5.Forward(full(new long[] { 1, 4 }, -3L, ScalarType.Int64)));
        // T5 has relative positions only: a sequence longer than CLIP's 77 is fine.
        using var ok = t5.Forward(ones(new long[] { 1, 300 }, ScalarType.Int32));
        Assert.Equal(new long[] { 1, 300, 96 }, ok.shape);
    }

    [Fact]
    public void StrictLoadingIgnoresOnlyLegacyPositionIdsAndAcceptsTiedT5Keys()
    {
        string dir = Directory.CreateTempSubdirectory("te").FullName;
        try
        {
            // CLIP with the old persistent position_ids buffer.
            string clipDir = Path.Combine(dir, "clip");
            Directory.CreateDirectory(clipDir);
            File.Copy(Path.Combine(Folder("text_encoder"), "config.json"), Path.Combine(clipDir, "config.json"));
            Dictionary<string, Tensor> clipSd;
            using (var f = SafetensorsFile.Open(Path.Combine(Folder("text_encoder"), "model.safetensors"))) clipSd = f.ReadAll();
            clipSd["text_model.embeddings.position_ids"] = arange(77L).unsqueeze(0);
            SafetensorsWriter.Save(Path.Combine(clipDir, "model.safetensors"), clipSd);
            using (CLIPTextModelWithProjection.FromPretrained(clipDir)) { }

            // An unknown key is still an error.
            clipSd["text_model.extra"] = zeros(2);
            SafetensorsWriter.Save(Path.Combine(clipDir, "model.safetensors"), clipSd);
            var e = Assert.Throws<WeightLoadException>(() => CLIPTextModelWithProjection.FromPretrained(clipDir));
            Assert.Contains("text_model.extra", e.Unexpected);

            // T5 saved with only encoder.embed_tokens.weight (no shared.weight) loads too.
            string t5Dir = Path.Combine(dir, "t5");
            Directory.CreateDirectory(t5Dir);
            File.Copy(Path.Combine(Folder("text_encoder_3"), "config.json"), Path.Combine(t5Dir, "config.json"));
            Dictionary<string, Tensor> t5Sd;
            using (var f = SafetensorsFile.Open(Path.Combine(Folder("text_encoder_3"), "model.safetensors"))) t5Sd = f.ReadAll();
            t5Sd["encoder.embed_tokens.weight"] = t5Sd["shared.weight"];
            t5Sd.Remove("shared.weight");
            SafetensorsWriter.Save(Path.Combine(t5Dir, "model.safetensors"), t5Sd);
            using var t5 = T5EncoderModel.FromPretrained(t5Dir);
            var expected = Fixtures.Expected();
            using var _ = inference_mode();
            using var ids = Ids(expected, "t5.input_ids");
            using var last = t5.Forward(ids);
            using var reference = T5EncoderModel.FromPretrained(Folder("text_encoder_3"));
            using var direct = reference.Forward(ids);
            Assert.Equal(0.0, TensorAssert.MaxAbsDiff(last, direct));
        }
        finally { Directory.Delete(dir, true); }
    }

    private static double RelL2(Tensor actual, Tensor expected)
    {
        using var a = actual.detach().cpu().to(ScalarType.Float64);
        using var e = expected.detach().cpu().to(ScalarType.Float64);
        using var num = (a - e).norm();
        using var den = e.norm();
        return num.item<double>() / den.item<double>();
    }
}
