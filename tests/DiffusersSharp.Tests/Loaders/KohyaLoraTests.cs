using DiffusersSharp.IO;
using DiffusersSharp.Loaders;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Tests.Support;
using TorchSharp.Modules;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Tests.Loaders;

/// <summary>
/// kohya sd-scripts LoRAs (the civitai kind) and per-layer alphas, fused through the SD / SDXL components: synthetic files
/// whose expected deltas are computed here in float64 the way PEFT does (<c>lora_alpha / r · B A</c>, a conv's delta as
/// <c>conv2d(A^T, B)^T</c>), SGM-named SDXL keys checked against the block layout written out by hand, and refusals
/// that leave every weight bit-equal.
/// </summary>
public sealed class KohyaLoraTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("kohya").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    private static StableDiffusionComponents Sd15() => StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions());

    private static StableDiffusionComponents Sdxl() => StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sdxl/model"), new PipelineLoadOptions());

    private string Write(string name, Dictionary<string, Tensor> tensors, Dictionary<string, string>? metadata = null)
    {
        string path = Path.Combine(_dir, name);
        SafetensorsWriter.Save(path, tensors, metadata);
        return path;
    }

    private static Tensor Weight(nn.Module model, string module) => model.named_modules().Single(m => m.name == module).module switch
    {
        Linear l => l.weight!,
        Conv2d c => c.weight!,
        var m => throw new InvalidOperationException($"{module} is a {m.GetType().Name}"),
    };

    /// <summary>A random pair for a module of this weight shape: down [r, in(, kh, kw)], up [out, r(, 1, 1)].</summary>
    private static (Tensor Down, Tensor Up) RandomPair(long[] weightShape, int rank, int seed)
    {
        using var g = new TorchSharp.torch.Generator((ulong)seed);
        long[] down = [rank, .. weightShape[1..]], up = weightShape.Length == 4 ? [weightShape[0], rank, 1, 1] : [weightShape[0], rank];
        return (randn(down, generator: g) * 0.3, randn(up, generator: g) * 0.3);
    }

    /// <summary>PEFT's delta in float64: (alpha / r) · B A, for a conv conv2d(A^T, B)^T as PEFT's Conv2d layer computes it.</summary>
    private static Tensor ExpectedDelta(Tensor down, Tensor up, double alpha, double scale)
    {
        double factor = scale * alpha / down.shape[0];
        using var d = down.to(ScalarType.Float64);
        using var u = up.to(ScalarType.Float64);
        if (down.dim() == 2) return u.matmul(d) * factor;
        using var conv = nn.functional.conv2d(d.permute(1, 0, 2, 3), u);
        return conv.permute(1, 0, 2, 3) * factor;
    }

    private static void AssertDelta(Tensor after, Tensor before, Tensor expected, string what)
    {
        using var delta = (after.to(ScalarType.Float64) - before.to(ScalarType.Float64));
        Assert.True(expected.abs().max().item<double>() > 0.01, what);
        // float32 rounding of W + delta (and of B A): a few ulps of the largest |W + delta|.
        double tolerance = 4e-7 * Math.Max(1.0, after.abs().max().item<float>());
        Assert.True(TensorAssert.MaxAbsDiff(delta, expected) <= tolerance, $"{what}: {TensorAssert.MaxAbsDiff(delta, expected)}");
    }

    private static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && TensorAssert.MaxAbsDiff(a, b) == 0;

    private static List<Tensor> Snapshot(params nn.Module[] models) => models.SelectMany(m => m.parameters()).Select(p => p.clone()).ToList();

    private static void AssertUnchanged(List<Tensor> before, params nn.Module[] models)
    {
        var now = models.SelectMany(m => m.parameters()).ToList();
        Assert.Equal(before.Count, now.Count);
        for (int i = 0; i < now.Count; i++) Assert.True(Same(now[i], before[i]), $"parameter {i} changed");
    }

    // SD 1.x layers (tiny-sd15: use_linear_projection false, so proj_in / proj_out are 1x1 convs) as diffusers names them.
    private static readonly (string Component, string Module, int Rank, float Alpha)[] Sd15Layers =
    [
        ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", 4, 1.5f),
        ("unet", "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k", 4, 8f),
        ("unet", "up_blocks.1.attentions.2.transformer_blocks.0.attn1.to_out.0", 2, 1f),
        ("unet", "mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj", 4, 4f),
        ("unet", "down_blocks.1.attentions.1.proj_in", 4, 2f),
        ("unet", "up_blocks.3.attentions.0.proj_out", 3, 0.5f),
        ("unet", "down_blocks.0.resnets.1.conv1", 4, 3f),
        ("unet", "up_blocks.0.resnets.2.conv_shortcut", 2, 1f),
        ("unet", "down_blocks.2.resnets.0.time_emb_proj", 4, 16f),
        ("text_encoder", "text_model.encoder.layers.0.self_attn.q_proj", 4, 2f),
        ("text_encoder", "text_model.encoder.layers.2.mlp.fc1", 8, 4f),
    ];

    [Fact]
    public void AKohyaFileFusesAsThePeftFileWithTheSameAlphasAndAsAlphaOverRankTimesUpDown()
    {
        using var kohyaModels = Sd15();
        using var peftModels = Sd15();
        var kohya = new Dictionary<string, Tensor>();
        var peft = new Dictionary<string, Tensor>();
        var pairs = new List<(nn.Module Model, nn.Module Peft, string Module, Tensor Down, Tensor Up, float Alpha, Tensor Before)>();
        for (int i = 0; i < Sd15Layers.Length; i++)
        {
            var (component, module, rank, alpha) = Sd15Layers[i];
            nn.Module model = component == "unet" ? kohyaModels.Unet : kohyaModels.TextEncoder!;
            nn.Module peftModel = component == "unet" ? peftModels.Unet : peftModels.TextEncoder!;
            var weight = Weight(model, module);
            var (down, up) = RandomPair(weight.shape, rank, 100 + i);
            string stem = (component == "unet" ? "lora_unet_" : "lora_te_") + module.Replace('.', '_');
            kohya[$"{stem}.lora_down.weight"] = down;
            kohya[$"{stem}.lora_up.weight"] = up;
            // kohya stores alpha as a 0-d float16 tensor.
            kohya[$"{stem}.alpha"] = tensor(alpha).to(ScalarType.Float16);
            peft[$"{component}.{module}.lora_A.weight"] = down;
            peft[$"{component}.{module}.lora_B.weight"] = up;
            peft[$"{component}.{module}.alpha"] = tensor(alpha);
            pairs.Add((model, peftModel, module, down, up, alpha, weight.clone()));
        }
        Assert.Equal(Sd15Layers.Length, kohyaModels.FuseLora(Write("kohya.safetensors", kohya), 0.75));
        Assert.Equal(Sd15Layers.Length, peftModels.FuseLora(Write("peft.safetensors", peft), 0.75));
        foreach (var (model, peftModel, module, down, up, alpha, before) in pairs)
        {
            var after = Weight(model, module);
            Assert.True(Same(after, Weight(peftModel, module)), module);
            using var expected = ExpectedDelta(down, up, alpha, 0.75);
            AssertDelta(after, before, expected, module);
        }
        // Nothing else moved: the untouched parameters of the kohya-fused models equal the PEFT-fused ones.
        var all = kohyaModels.Unet.parameters().Concat(kohyaModels.TextEncoder!.parameters())
            .Zip(peftModels.Unet.parameters().Concat(peftModels.TextEncoder!.parameters()));
        Assert.All(all, p => Assert.True(Same(p.First, p.Second)));
    }

    [Fact]
    public void WithoutAlphaTheFactorIsOneAndAdapterMetadataGivesPeftsAlpha()
    {
        const string Q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", K = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k";
        using var models = Sd15();
        var (qDown, qUp) = RandomPair(Weight(models.Unet, Q).shape, 4, 1);
        var (kDown, kUp) = RandomPair(Weight(models.Unet, K).shape, 4, 2);
        var tensors = new Dictionary<string, Tensor>
        {
            [$"unet.{Q}.lora_A.weight"] = qDown, [$"unet.{Q}.lora_B.weight"] = qUp, [$"unet.{K}.lora_A.weight"] = kDown, [$"unet.{K}.lora_B.weight"] = kUp,
        };
        using (var plain = LoraWeights.Load(Write("plain.safetensors", tensors), "unet"))
            Assert.All(plain.Scales.Values, s => Assert.Equal(1f, s));

        // What diffusers' save_lora_weights(unet_lora_adapter_metadata=LoraConfig(...).to_dict()) writes: lora_alpha for
        // every layer, alpha_pattern entries matched against the module path's end.
        var metadata = new Dictionary<string, string>
        {
            ["format"] = "pt",
            ["lora_adapter_metadata"] = """{"unet.r": 4, "unet.lora_alpha": 8, "unet.alpha_pattern": {"attn2.to_k": 2}, "unet.use_rslora": false}""",
        };
        var before = new[] { Weight(models.Unet, Q).clone(), Weight(models.Unet, K).clone() };
        Assert.Equal(2, models.FuseLora(Write("meta.safetensors", tensors, metadata)));
        using (var q = ExpectedDelta(qDown, qUp, 8, 1.0)) AssertDelta(Weight(models.Unet, Q), before[0], q, Q);
        using (var k = ExpectedDelta(kDown, kUp, 2, 1.0)) AssertDelta(Weight(models.Unet, K), before[1], k, K);

        // use_dora needs magnitude vectors these files do not carry: refused, nothing fused.
        metadata["lora_adapter_metadata"] = """{"unet.r": 4, "unet.lora_alpha": 4, "unet.use_dora": true}""";
        var snapshot = Snapshot(models.Unet);
        Assert.Contains("use_dora", Assert.Throws<InvalidDataException>(() => models.FuseLora(Write("dora.safetensors", tensors, metadata))).Message);
        AssertUnchanged(snapshot, models.Unet);
    }

    [Fact]
    public void SgmNamedSdxlKeysLandOnTheModulesTheBlockLayoutSays()
    {
        // tiny-sdxl: layers_per_block 2, down [DownBlock2D, CrossAttnDownBlock2D, CrossAttnDownBlock2D],
        // up [CrossAttnUpBlock2D, CrossAttnUpBlock2D, UpBlock2D], transformer_layers_per_block [1, 1, 2]. SGM's input_blocks:
        // 0 conv_in | 1, 2 block 0 resnets | 3 downsampler | 4, 5 block 1 (resnet _0, attention _1) | 6 downsampler | 7, 8
        // block 2. middle_block: resnet, attention, resnet. output_blocks: 0-2 up block 0 (upsampler at 2_2), 3-5 up block 1
        // (upsampler at 5_2), 6-8 up block 2 (resnets only).
        var cases = new (string Kohya, string Component, string Module)[]
        {
            ("lora_unet_input_blocks_0_0", "unet", "conv_in"),
            ("lora_unet_input_blocks_2_0_in_layers_2", "unet", "down_blocks.0.resnets.1.conv1"),
            ("lora_unet_input_blocks_3_0_op", "unet", "down_blocks.0.downsamplers.0.conv"),
            ("lora_unet_input_blocks_4_0_skip_connection", "unet", "down_blocks.1.resnets.0.conv_shortcut"),
            ("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q", "unet", "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"),
            ("lora_unet_input_blocks_8_1_transformer_blocks_1_attn2_to_k", "unet", "down_blocks.2.attentions.1.transformer_blocks.1.attn2.to_k"),
            ("lora_unet_input_blocks_7_1_proj_in", "unet", "down_blocks.2.attentions.0.proj_in"),
            ("lora_unet_middle_block_1_transformer_blocks_1_ff_net_0_proj", "unet", "mid_block.attentions.0.transformer_blocks.1.ff.net.0.proj"),
            ("lora_unet_middle_block_2_emb_layers_1", "unet", "mid_block.resnets.1.time_emb_proj"),
            ("lora_unet_output_blocks_0_1_transformer_blocks_0_attn1_to_out_0", "unet", "up_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0"),
            ("lora_unet_output_blocks_2_2_conv", "unet", "up_blocks.0.upsamplers.0.conv"),
            ("lora_unet_output_blocks_5_1_proj_out", "unet", "up_blocks.1.attentions.2.proj_out"),
            ("lora_unet_output_blocks_5_2_conv", "unet", "up_blocks.1.upsamplers.0.conv"),
            ("lora_unet_output_blocks_8_0_out_layers_3", "unet", "up_blocks.2.resnets.2.conv2"),
            ("lora_unet_time_embed_2", "unet", "time_embedding.linear_2"),
            ("lora_unet_label_emb_0_0", "unet", "add_embedding.linear_1"),
            ("lora_unet_out_2", "unet", "conv_out"),
            // diffusers-named keys in the same file, on other modules.
            ("lora_unet_down_blocks_1_attentions_1_transformer_blocks_0_attn2_to_v", "unet", "down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_v"),
            ("lora_te1_text_model_encoder_layers_0_self_attn_k_proj", "text_encoder", "text_model.encoder.layers.0.self_attn.k_proj"),
            ("lora_te2_text_model_encoder_layers_1_mlp_fc2", "text_encoder_2", "text_model.encoder.layers.1.mlp.fc2"),
            ("lora_te2_text_projection", "text_encoder_2", "text_projection"),
        };
        using var components = Sdxl();
        nn.Module ModelOf(string component) => component switch
        {
            "unet" => components.Unet, "text_encoder" => components.TextEncoder!, _ => components.TextEncoder2!,
        };
        var tensors = new Dictionary<string, Tensor>();
        var expected = new Dictionary<(string, string), Tensor>();
        for (int i = 0; i < cases.Length; i++)
        {
            var (kohya, component, module) = cases[i];
            var (down, up) = RandomPair(Weight(ModelOf(component), module).shape, 2, 200 + i);
            tensors[$"{kohya}.lora_down.weight"] = down;
            tensors[$"{kohya}.lora_up.weight"] = up;
            tensors[$"{kohya}.alpha"] = tensor(1f);
            expected[(component, module)] = ExpectedDelta(down, up, 1, 1.0);
        }
        var before = new[] { "unet", "text_encoder", "text_encoder_2" }
            .SelectMany(c => ModelOf(c).named_parameters().Select(p => (Key: (c, p.name), Value: p.parameter.clone()))).ToDictionary(p => p.Key, p => p.Value);
        Assert.Equal(cases.Length, components.FuseLora(Write("sgm.safetensors", tensors)));
        int changed = 0;
        foreach (var ((component, name), old) in before)
        {
            var now = ModelOf(component).named_parameters().Single(p => p.name == name).parameter;
            string module = name.EndsWith(".weight", StringComparison.Ordinal) ? name[..^".weight".Length] : name;
            if (expected.TryGetValue((component, module), out var delta) && name.EndsWith(".weight", StringComparison.Ordinal))
            {
                AssertDelta(now, old, delta, $"{component}.{module}");
                changed++;
            }
            else
            {
                Assert.True(Same(now, old), $"{component}.{name} changed");
            }
        }
        Assert.Equal(cases.Length, changed);
    }

    [Fact]
    public void AnSd15UpBlockWithoutAttentionHasItsUpsamplerAtIndexOne()
    {
        // tiny-sd15's up_blocks.0 is an UpBlock2D: SGM's output_blocks.2 is [resnet, upsample], so 2_1_conv is the
        // upsampler (diffusers' _maybe_map_sgm_blocks_to_diffusers would read _1 as attentions). input_blocks 10 and 11
        // are the last down block's resnets (3 down blocks of 2 layers + 3 downsamplers before them).
        using var components = Sd15();
        var cases = new (string Kohya, string Module)[]
        {
            ("output_blocks_2_1_conv", "up_blocks.0.upsamplers.0.conv"),
            ("output_blocks_3_1_proj_in", "up_blocks.1.attentions.0.proj_in"),
            ("input_blocks_11_0_in_layers_2", "down_blocks.3.resnets.1.conv1"),
            ("input_blocks_9_0_op", "down_blocks.2.downsamplers.0.conv"),
        };
        var tensors = new Dictionary<string, Tensor>();
        var befores = new List<Tensor>();
        for (int i = 0; i < cases.Length; i++)
        {
            var (down, up) = RandomPair(Weight(components.Unet, cases[i].Module).shape, 2, 300 + i);
            tensors[$"lora_unet_{cases[i].Kohya}.lora_down.weight"] = down;
            tensors[$"lora_unet_{cases[i].Kohya}.lora_up.weight"] = up;
            befores.Add(Weight(components.Unet, cases[i].Module).clone());
        }
        Assert.Equal(cases.Length, components.FuseLora(Write("sd15-sgm.safetensors", tensors)));
        for (int i = 0; i < cases.Length; i++)
        {
            using var expected = ExpectedDelta(tensors[$"lora_unet_{cases[i].Kohya}.lora_down.weight"], tensors[$"lora_unet_{cases[i].Kohya}.lora_up.weight"], 2, 1.0);
            AssertDelta(Weight(components.Unet, cases[i].Module), befores[i], expected, cases[i].Module);
        }
    }

    [Theory]
    [InlineData("unknown-layer", "lora_unet_down_blocks_0_attentions_9_proj_in")]
    [InlineData("misfit", "lora_te_text_model_encoder_layers_0_self_attn_v_proj")]
    [InlineData("loha", "lora_unet_down_blocks_0_attentions_0_proj_in.hada_w1_a")]
    [InlineData("dora", "dora_scale")]
    [InlineData("alone", "lora_unet_down_blocks_0_attentions_0_proj_out")]
    [InlineData("rank", "lora_unet_down_blocks_0_attentions_0_proj_out")]
    [InlineData("twice", "lora_unet_output_blocks_3_1_proj_in")]
    [InlineData("kernel", "lora_unet_down_blocks_0_attentions_0_proj_out")]
    public void ABadKeyFailsNamingItAndLeavesEveryWeightBitEqual(string kind, string named)
    {
        using var components = Sd15();
        const string Good = "lora_unet_down_blocks_0_attentions_0_proj_in", Te = "lora_te_text_model_encoder_layers_0_self_attn_v_proj";
        var tensors = new Dictionary<string, Tensor>();
        void Add(string stem, long[] weightShape, int seed, int rank = 2)
        {
            var (down, up) = RandomPair(weightShape, rank, seed);
            tensors[$"{stem}.lora_down.weight"] = down;
            tensors[$"{stem}.lora_up.weight"] = up;
            tensors[$"{stem}.alpha"] = tensor(1f);
        }
        // Valid parts first, so that a loader that fused part by part would have changed weights before the bad key.
        Add(Good, Weight(components.Unet, "down_blocks.0.attentions.0.proj_in").shape, 1);
        Add(Te, Weight(components.TextEncoder!, "text_model.encoder.layers.0.self_attn.v_proj").shape, 2);
        string proj_out = "lora_unet_down_blocks_0_attentions_0_proj_out";
        switch (kind)
        {
            case "unknown-layer": Add(named, [32, 32, 1, 1], 3); break;
            case "misfit": Add(Te, [48, 32], 4); break; // replaces the te pair by one for a 48-wide layer
            case "loha": tensors[named] = ones(2, 32); break;
            case "dora": tensors[$"{Good}.dora_scale"] = ones(1, 32, 1, 1); break;
            case "alone": tensors[$"{proj_out}.alpha"] = tensor(1f); tensors[$"{proj_out}.lora_down.weight"] = ones(2, 32, 1, 1); break;
            case "rank": tensors[$"{proj_out}.lora_down.weight"] = ones(2, 32, 1, 1); tensors[$"{proj_out}.lora_up.weight"] = ones(32, 3, 1, 1); break;
            case "kernel": Add(proj_out, [32, 32, 3, 3], 7); break; // a 3x3 LoCon pair on a 1x1 conv
            // The SGM name of up_blocks.1.attentions.0.proj_in next to its diffusers name: two LoRAs for one module.
            case "twice":
                var shape = Weight(components.Unet, "up_blocks.1.attentions.0.proj_in").shape;
                Add("lora_unet_up_blocks_1_attentions_0_proj_in", shape, 5);
                Add(named, shape, 6);
                break;
        }
        string path = Write($"{kind}.safetensors", tensors);
        var snapshot = Snapshot(components.Unet, components.TextEncoder!);
        var e = Assert.ThrowsAny<Exception>(() => components.FuseLora(path));
        output.WriteLine($"{e.GetType().Name}: {e.Message}");
        Assert.True(e is InvalidDataException or ArgumentException, e.GetType().Name);
        Assert.Contains(named, e.Message);
        AssertUnchanged(snapshot, components.Unet, components.TextEncoder!);
    }

    [Fact]
    public void Sd3RefusesKohyaFilesAsDiffusersDoes()
    {
        using var components = StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions { LoadTextEncoder3 = false });
        var (down, up) = RandomPair([32, 32], 2, 1);
        string path = Write("te1.safetensors", new()
        {
            ["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = down,
            ["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"] = up,
        });
        var snapshot = Snapshot(components.TextEncoder!);
        Assert.Contains("kohya", Assert.Throws<InvalidDataException>(() => components.FuseLora(path)).Message);
        AssertUnchanged(snapshot, components.TextEncoder!);
    }
}
