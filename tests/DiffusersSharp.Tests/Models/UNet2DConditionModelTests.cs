using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.Layers;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Models.Unets;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

public class UNet2DConditionModelTests(ITestOutputHelper output)
{
    private static string TinyFolder(string model) => Fixtures.Path($"{model}/model/unet");

    private static string FullConfig(string name) =>
        File.ReadAllText(System.IO.Path.Combine(Fixtures.Root, "..", "Models", "UNetConfigs", name + ".json"));

    private static Tensor Randn(Generator g, params long[] shape) => randn(shape, ScalarType.Float32, generator: g);

    /// <summary>The inputs of one forward: SDXL's text_time extras only for a text_time model.</summary>
    private static (Tensor Text, Tensor? TextEmbeds, Tensor? TimeIds) Conditioning(UNet2DConditionModel model, long batch, Generator g)
    {
        var c = model.Config;
        long width = c.CrossAttentionDim.Expand(c.DownBlockTypes.Length, "cross_attention_dim")[0];
        var text = Randn(g, batch, 7, width);
        if (c.AdditionEmbedType != "text_time") return (text, null, null);
        long pooled = c.ProjectionClassEmbeddingsInputDim!.Value - 6 * c.AdditionTimeEmbedDim!.Value;
        var timeIds = tensor(new float[] { 80, 96, 0, 0, 80, 96 }).unsqueeze(0).expand(batch, 6).contiguous();
        return (text, Randn(g, batch, pooled), timeIds);
    }

    [Theory]
    [InlineData("tiny-sd15", 8, 12)]  // 12 is not a multiple of 8 (three upsamplers): upsample sizes are forwarded
    [InlineData("tiny-sd15", 10, 14)]
    [InlineData("tiny-sdxl", 8, 12)]  // multiples of 4 (two upsamplers): plain x2 upsampling
    [InlineData("tiny-sdxl", 10, 14)]
    public void TinyUnetLoadsStrictlyAndPredictsForNonSquareLatents(string name, long height, long width)
    {
        string folder = TinyFolder(name);
        using var model = UNet2DConditionModel.FromPretrained(folder);
        using (var weights = WeightFiles.TryOpen(folder)!)
        {
            var stateDict = model.state_dict();
            Assert.Equal(weights.Tensors.Count, stateDict.Count);
            foreach (var (key, info) in weights.Tensors)
                Assert.Equal(info.Shape, stateDict[key].shape);
        }

        using var scope = NewDisposeScope();
        using var _ = inference_mode();
        var g = new Generator(1234);
        var sample = Randn(g, 2, 4, height, width);
        var (text, textEmbeds, timeIds) = Conditioning(model, 2, g);
        var y = model.forward(sample, tensor(new float[] { 999, 250 }), text, textEmbeds, timeIds);
        Assert.Equal(new long[] { 2, 4, height, width }, y.shape);
        Assert.Equal(ScalarType.Float32, y.dtype);
        Assert.True(y.isfinite().all().item<bool>());
        Assert.True(y.abs().max().item<float>() > 0);

        // Batch items are independent, and a 0-d timestep is broadcast to the batch as diffusers does.
        var first = model.forward(sample.narrow(0, 0, 1), tensor(999f), text.narrow(0, 0, 1), textEmbeds?.narrow(0, 0, 1), timeIds?.narrow(0, 0, 1));
        double err = TensorAssert.Close(first, y.narrow(0, 0, 1), 1e-5, "batch item 0 alone");
        var shared = model.forward(sample, tensor(999f), text, textEmbeds, timeIds);
        TensorAssert.Close(shared.narrow(0, 0, 1), y.narrow(0, 0, 1), 1e-5, "0-d timestep");
        output.WriteLine($"{name} {height}x{width}: |y|max = {y.abs().max().item<float>():G4}, batch-vs-single max diff {err:G3}");
    }

    [Fact]
    public void ForwardLeavesOnlyItsResultAlive()
    {
        using var model = UNet2DConditionModel.FromPretrained(TinyFolder("tiny-sdxl"));
        using var _ = inference_mode();
        var g = new Generator(9);
        var sample = Randn(g, 2, 4, 10, 14);
        var (text, textEmbeds, timeIds) = Conditioning(model, 2, g);
        var t = tensor(new float[] { 10, 20 });
        long before = LiveTensors.Count();
        using (var y = model.forward(sample, t, text, textEmbeds, timeIds))
            Assert.Equal(before + 1, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        foreach (var tensor in new[] { sample, text, textEmbeds!, timeIds!, t }) tensor.Dispose();
    }

    [Fact]
    public void TinyConfigsReadAsDiffusersDoes()
    {
        var sd15 = ConfigJson.Read<UNet2DConditionModelConfig>(System.IO.Path.Combine(TinyFolder("tiny-sd15"), "config.json"));
        Assert.Equal([8, 8, 8, 8], sd15.HeadsPerBlock); // num_attention_heads defaults to attention_head_dim
        Assert.True(sd15.TransformerLayersPerBlock.IsScalar);
        var sdxl = ConfigJson.Read<UNet2DConditionModelConfig>(System.IO.Path.Combine(TinyFolder("tiny-sdxl"), "config.json"));
        Assert.Equal([2, 4, 8], sdxl.HeadsPerBlock);
        Assert.Equal([1, 1, 2], sdxl.TransformerLayersPerBlock.List!);
        Assert.Equal("text_time", sdxl.AdditionEmbedType);
    }

    public static TheoryData<string, long> FullSizeCounts => new()
    {
        { "sd15", 859_520_964 },            // runwayml/stable-diffusion-v1-5 unet
        { "sd21", 865_910_724 },            // stabilityai/stable-diffusion-2-1 unet
        { "sdxl-base", 2_567_463_684 },     // stabilityai/stable-diffusion-xl-base-1.0 unet
        // runwayml/stable-diffusion-inpainting: SD 1.5 plus conv_in's 5 extra input channels (5 x 320 x 3 x 3).
        { "sd15-inpainting", 859_520_964 + 5 * 320 * 9 },
    };

    [Theory]
    [MemberData(nameof(FullSizeCounts))]
    public void FullSizeModelsHaveTheRealParameterCounts(string name, long expected)
    {
        var config = ConfigJson.Parse<UNet2DConditionModelConfig>(FullConfig(name), name);
        using var model = new UNet2DConditionModel(config, new Device(DeviceType.META));
        long count = model.parameters().Sum(p => p.numel());
        output.WriteLine($"{name}: {count:N0} parameters, {model.state_dict().Count} tensors");
        Assert.Equal(expected, count);
        Assert.Empty(model.buffers());
    }

    [Fact]
    public void TheRegistryBuildsTheUnetForInfo()
    {
        using var model = ModelRegistry.Build("unet", "UNet2DConditionModel", TinyFolder("tiny-sd15"), new Device(DeviceType.META));
        using var weights = WeightFiles.TryOpen(TinyFolder("tiny-sd15"))!;
        Assert.Equal(weights.Tensors.Values.Sum(t => t.ElementCount), model.parameters().Sum(p => p.numel()));
    }

    [Fact]
    public void BadInputsAreRejectedBeforeCompute()
    {
        using var sd15 = UNet2DConditionModel.FromPretrained(TinyFolder("tiny-sd15"));
        using var sdxl = UNet2DConditionModel.FromPretrained(TinyFolder("tiny-sdxl"));
        using var scope = NewDisposeScope();
        var t = tensor(500f);
        var text32 = zeros(1, 7, 32);
        var text64 = zeros(1, 7, 64);
        void Throws(string param, string fragment, Action call)
        {
            var e = Assert.Throws<ArgumentException>(call);
            Assert.Equal(param, e.ParamName);
            Assert.Contains(fragment, e.Message);
        }
        Throws("sample", "in_channels = 4", () => sd15.forward(zeros(1, 9, 8, 8), t, text32));
        Throws("sample", "in_channels = 4", () => sd15.forward(zeros(4, 8, 8), t, text32));
        Throws("encoder_hidden_states", "cross_attention_dim", () => sd15.forward(zeros(1, 4, 8, 8), t, text64));
        Throws("encoder_hidden_states", "[B=2", () => sd15.forward(zeros(2, 4, 8, 8), t, text32));
        Throws("timestep", "[B=2]", () => sd15.forward(zeros(2, 4, 8, 8), zeros(3), zeros(2, 7, 32)));
        Throws("text_embeds", "text_embeds", () => sdxl.forward(zeros(1, 4, 8, 8), t, text64));
        Throws("time_ids", "time_ids", () => sdxl.forward(zeros(1, 4, 8, 8), t, text64, zeros(1, 32)));
        Throws("text_embeds", "projection_class_embeddings_input_dim is 80", () => sdxl.forward(zeros(1, 4, 8, 8), t, text64, zeros(1, 31), zeros(1, 6)));
        Throws("time_ids", "[B=1, K]", () => sdxl.forward(zeros(1, 4, 8, 8), t, text64, zeros(1, 32), zeros(6)));
    }

    public static TheoryData<string, string, string> UnsupportedOptions => new()
    {
        { "class_embed_type", "\"learned\"", "class_embed_type" },
        { "class_embeddings_concat", "true", "class_embeddings_concat" },
        { "addition_embed_type", "\"text\"", "addition_embed_type" },
        { "resnet_time_scale_shift", "\"scale_shift\"", "resnet_time_scale_shift" },
        { "dual_cross_attention", "true", "dual_cross_attention" },
        { "attention_type", "\"gated\"", "attention_type" },
        { "conv_in_kernel", "4", "conv_in_kernel" },
        { "conv_out_kernel", "2", "conv_out_kernel" },
        { "num_attention_heads", "8", "num_attention_heads" },
        { "encoder_hid_dim", "1024", "encoder_hid_dim" },
        { "time_embedding_type", "\"learned\"", "time_embedding_type" },
        { "timestep_post_act", "\"mish\"", "timestep_post_act" },
        { "act_fn", "\"gelu\"", "act_fn" },
        { "mid_block_type", "\"UNetMidBlock2DSimpleCrossAttn\"", "mid_block_type" },
        { "down_block_types", "[\"AttnDownBlock2D\",\"CrossAttnDownBlock2D\",\"CrossAttnDownBlock2D\",\"DownBlock2D\"]", "AttnDownBlock2D" },
        { "transformer_layers_per_block", "[[1,1],[1,1],[1,1],[1,1]]", "transformer_layers_per_block" },
        { "reverse_transformer_layers_per_block", "[[1,1,1],[1,1,1],[1,1,1],[1,1,1]]", "reverse_transformer_layers_per_block" },
        { "norm_num_groups", "null", "norm_num_groups" },
    };

    [Theory]
    [MemberData(nameof(UnsupportedOptions))]
    public void UnsupportedConfigOptionsAreNamedAtConstruction(string field, string json, string named)
    {
        var node = JsonNode.Parse(File.ReadAllText(System.IO.Path.Combine(TinyFolder("tiny-sd15"), "config.json")))!;
        node[field] = JsonNode.Parse(json);
        var config = ConfigJson.Parse<UNet2DConditionModelConfig>(node.ToJsonString());
        var e = Assert.Throws<NotSupportedException>(() => new UNet2DConditionModel(config, new Device(DeviceType.META)));
        Assert.Contains(named, e.Message);
    }

    [Fact]
    public void OnlyCrossAttentionMakesAttn1AttendToTheTextExceptInTheMidBlock()
    {
        var baseConfig = ConfigJson.Read<UNet2DConditionModelConfig>(System.IO.Path.Combine(TinyFolder("tiny-sd15"), "config.json"));
        var config = baseConfig with { OnlyCrossAttention = true, CrossAttentionDim = 48 };
        using var model = new UNet2DConditionModel(config, new Device(DeviceType.META));
        var sd = model.state_dict();
        Assert.Equal(new long[] { 32, 48 }, sd["down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k.weight"].shape);
        Assert.Equal(new long[] { 32, 48 }, sd["up_blocks.3.attentions.2.transformer_blocks.0.attn1.to_v.weight"].shape);
        // diffusers' UNetMidBlock2DCrossAttn takes no only_cross_attention argument.
        Assert.Equal(new long[] { 64, 64 }, sd["mid_block.attentions.0.transformer_blocks.0.attn1.to_k.weight"].shape);
    }

    [Fact]
    public void InconsistentConfigsAreArgumentErrors()
    {
        var baseConfig = ConfigJson.Read<UNet2DConditionModelConfig>(System.IO.Path.Combine(TinyFolder("tiny-sd15"), "config.json"));
        Assert.Throws<ArgumentException>(() => new UNet2DConditionModel(baseConfig with { AttentionHeadDim = new[] { 8, 8 } }, new Device(DeviceType.META)));
        Assert.Throws<ArgumentException>(() => new UNet2DConditionModel(baseConfig with { BlockOutChannels = [32, 32, 64, 60] }, new Device(DeviceType.META)));
        Assert.Throws<ArgumentException>(() => new UNet2DConditionModel(baseConfig with { AdditionEmbedType = "text_time" }, new Device(DeviceType.META)));
    }

    [Fact]
    public void GegluIsHiddenTimesExactGeluOfTheSecondHalfInFloat64()
    {
        using var scope = NewDisposeScope();
        var g = new Generator(7);
        var geglu = new GEGLU(3, 4, device: CPU, dtype: ScalarType.Float64);
        var sd = geglu.state_dict();
        var x = randn([2, 5, 3], ScalarType.Float64, generator: g);
        var projected = matmul(x, sd["proj.weight"].t()) + sd["proj.bias"];
        var hidden = projected.narrow(-1, 0, 4);
        var gate = projected.narrow(-1, 4, 4);
        var expected = hidden * (0.5 * gate * (1 + special.erf(gate / Math.Sqrt(2))));
        Assert.True(TensorAssert.MaxAbsDiff(geglu.forward(x), expected) < 1e-14);
        Assert.Equal(new long[] { 8, 3 }, sd["proj.weight"].shape);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void SpatialTransformerWithZeroedProjOutReturnsItsInputExactly(bool linear)
    {
        using var scope = NewDisposeScope();
        var g = new Generator(11);
        using var transformer = new Transformer2DModel(2, 4, 8, 2, 4, 6, linear, device: CPU, dtype: ScalarType.Float64);
        using (no_grad())
            foreach (var (key, p) in transformer.named_parameters())
                if (key.StartsWith("proj_out.", StringComparison.Ordinal)) p.zero_();
        var x = randn([2, 8, 3, 5], ScalarType.Float64, generator: g);
        var y = transformer.forward(x, randn([2, 4, 6], ScalarType.Float64, generator: g));
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(y, x));
        Assert.Equal(linear ? 2 : 4, transformer.named_parameters().Single(p => p.name == "proj_in.weight").parameter.dim());
    }

    [Fact]
    public void AttentionIsSoftmaxOfScaledDotProductsPerHeadInFloat64()
    {
        using var scope = NewDisposeScope();
        var g = new Generator(3);
        const int heads = 2, dimHead = 3;
        var attn = new Attention(5, 7, heads, dimHead, device: CPU, dtype: ScalarType.Float64);
        var sd = attn.state_dict();
        Assert.DoesNotContain("to_q.bias", sd.Keys);
        Assert.Contains("to_out.0.bias", sd.Keys);
        var x = randn([2, 4, 5], ScalarType.Float64, generator: g);
        var ctx = randn([2, 6, 7], ScalarType.Float64, generator: g);
        var q = matmul(x, sd["to_q.weight"].t());
        var k = matmul(ctx, sd["to_k.weight"].t());
        var v = matmul(ctx, sd["to_v.weight"].t());
        var heads_ = new List<Tensor>();
        for (int h = 0; h < heads; h++)
        {
            var qh = q.narrow(-1, h * dimHead, dimHead);
            var kh = k.narrow(-1, h * dimHead, dimHead);
            var vh = v.narrow(-1, h * dimHead, dimHead);
            var weights = softmax(matmul(qh, kh.transpose(1, 2)) / Math.Sqrt(dimHead), -1);
            heads_.Add(matmul(weights, vh));
        }
        var expected = matmul(cat(heads_, -1), sd["to_out.0.weight"].t()) + sd["to_out.0.bias"];
        Assert.True(TensorAssert.MaxAbsDiff(attn.forward(x, ctx), expected) < 1e-13);
    }

    [Fact]
    public void ResnetAddsTheProjectedTimeEmbeddingAfterConv1AndDividesByTheScaleInFloat64()
    {
        using var scope = NewDisposeScope();
        var g = new Generator(5);
        var resnet = new ResnetBlock2D(4, 8, groups: 2, eps: 1e-5, tembChannels: 6, outputScaleFactor: 2.0, device: CPU, dtype: ScalarType.Float64);
        var sd = resnet.state_dict();
        using (no_grad())
            foreach (var (_, p) in resnet.named_parameters())
                p.copy_(randn(p.shape, ScalarType.Float64, generator: g) * 0.3);
        var x = randn([2, 4, 5, 3], ScalarType.Float64, generator: g);
        var temb = randn([2, 6], ScalarType.Float64, generator: g);
        Tensor Conv(Tensor t, string name, long pad) => nn.functional.conv2d(t, sd[name + ".weight"], sd[name + ".bias"], padding: [pad, pad]);
        Tensor Norm(Tensor t, string name) => nn.functional.group_norm(t, 2, sd[name + ".weight"], sd[name + ".bias"], 1e-5);
        var h = Conv(nn.functional.silu(Norm(x, "norm1")), "conv1", 1);
        var t = matmul(nn.functional.silu(temb), sd["time_emb_proj.weight"].t()) + sd["time_emb_proj.bias"];
        h = h + t.unsqueeze(-1).unsqueeze(-1);
        h = Conv(nn.functional.silu(Norm(h, "norm2")), "conv2", 1);
        var expected = (Conv(x, "conv_shortcut", 0) + h) / 2.0;
        Assert.True(TensorAssert.MaxAbsDiff(resnet.forward(x, temb), expected) < 1e-13);
    }

    [Fact]
    public void UpsampleToAnOutputSizeIsNearestIndexing()
    {
        using var scope = NewDisposeScope();
        var up = new Upsample2D(1, useConv: false);
        var x = arange(15, ScalarType.Float32).reshape(1, 1, 3, 5);
        var y = up.forward(x, [5, 9]);
        Assert.Equal(new long[] { 1, 1, 5, 9 }, y.shape);
        // PyTorch "nearest" with an explicit size: source index = floor(dst * in / out).
        for (int i = 0; i < 5; i++)
            for (int j = 0; j < 9; j++)
                Assert.Equal(x[0, 0, i * 3 / 5, j * 5 / 9].item<float>(), y[0, 0, i, j].item<float>());
    }
}
