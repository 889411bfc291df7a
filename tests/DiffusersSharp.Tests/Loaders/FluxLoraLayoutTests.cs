using System.Text.Json.Nodes;
using DiffusersSharp.Benchmarks;
using DiffusersSharp.IO;
using DiffusersSharp.Loaders;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using TorchSharp.Modules;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Loaders;

/// <summary>
/// Flux LoRAs in the original BFL module layout (BFL's control LoRAs, kohya sd-scripts, ComfyUI, XLabs, fal Kontext): the names and rows
/// against diffusers 0.36.0's own converters at full size (local-diffusers/flux-lora-layouts/mapping.json, written by
/// tools/reference/flux_lora_layouts.py), and the fused deltas on the tiny transformer against their definition.
/// </summary>
public sealed class FluxLoraLayoutTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("flux-lora-layouts").FullName;

    public void Dispose() => Directory.Delete(_dir, true);

    /// <summary>
    /// Every output of diffusers' conversion of a full-size (FLUX.1-dev) rank-2 LoRA in the layout is one of our fused
    /// targets, from the same file tensor and the same rows, and every one of ours is one of diffusers'. Our file holds each
    /// element's row number, so the rows a target takes are read off its values. Two documented differences, both
    /// diffusers 0.36 bugs (FluxComponents.FuseLora's remarks): the final modulation's down matrix keeps its rank rows in
    /// order (diffusers swaps them with the up matrix's output halves), and kohya / ComfyUI files' non-block layers adapt
    /// the transformer (diffusers leaves them without the "transformer." prefix, so that its loader skips them).
    /// </summary>
    [Theory]
    [InlineData("bfl_control")]
    [InlineData("kohya")]
    [InlineData("comfyui")]
    [InlineData("xlabs")]
    [InlineData("fal_kontext")]
    public void OriginalLayoutsResolveAsDiffusersConvertsThem(string layout)
    {
        var mapping = JsonNode.Parse(File.ReadAllText(Fixtures.Path("local-diffusers/flux-lora-layouts/mapping.json")))![layout]!;
        string file = Path.Combine(_dir, $"{layout}.safetensors");
        var tensors = new Dictionary<string, Tensor>();
        foreach (var (key, shape) in mapping["inputs"]!.AsObject())
        {
            long[] dims = shape!.AsArray().Select(d => (long)d!).ToArray();
            tensors[key] = dims.Length == 0 ? tensor(2f) // the alphas: the rank, a factor of 1
                : arange(dims[0], dtype: ScalarType.Float32).view([dims[0], .. dims.Skip(1).Select(_ => 1L)]).expand(dims).contiguous();
        }
        SafetensorsWriter.Save(file, tensors);
        foreach (var t in tensors.Values) t.Dispose();

        var ours = new Dictionary<string, (string Source, long[] Shape, string Rows)>(StringComparer.Ordinal);
        using (var transformer = new FluxTransformer2DModel(FluxPipelineConfigs.FluxDev.Transformer, device: new Device(DeviceType.META)))
        using (var clip = new CLIPTextModel(FluxPipelineConfigs.FluxDev.TextEncoder, new Device(DeviceType.META)))
        {
            var parts = LoraWeights.LoadAll(file);
            try
            {
                foreach (var (component, lora) in parts)
                {
                    bool text = component == "text_encoder";
                    Assert.Equal(text ? "text_encoder" : layout is "kohya" or "comfyui" ? "unet" : "transformer", component);
                    var plan = lora.Targets(text ? clip : transformer);
                    string prefix = text ? "text_encoder" : "transformer";
                    var (down, up) = layout switch
                    {
                        "bfl_control" or "fal_kontext" => (".lora_A.weight", ".lora_B.weight"),
                        "xlabs" => (".down.weight", ".up.weight"),
                        _ => (".lora_down.weight", ".lora_up.weight"),
                    };
                    foreach (var t in plan.Targets)
                    {
                        ours[$"{prefix}.{t.Name}.lora_A.weight"] = (t.Source + down, t.Down.shape, Runs(t.Down));
                        ours[$"{prefix}.{t.Name}.lora_B.weight"] = (t.Source + up, t.Up.shape, Runs(t.Up));
                        if (t.UpBias is { } bias) ours[$"{prefix}.{t.Name}.lora_B.bias"] = (t.Source + ".lora_B.bias", bias.shape, Runs(bias));
                    }
                    foreach (var (name, source, _, value) in plan.Replacements) ours[$"{prefix}.{name}"] = (source, value.shape, Runs(value));
                    // FLUX.1-dev's x_embedder takes 64; every file's img_in takes 128, as the control LoRAs' does (XLabs' and
                    // fal's adapt the blocks only).
                    if (text || layout is "xlabs" or "fal_kontext") Assert.Empty(plan.Widen);
                    else Assert.Equal(128, Assert.Single(plan.Widen).Value);
                }
            }
            finally
            {
                foreach (var lora in parts.Values) lora.Dispose();
            }
        }

        int swapped = 0, unprefixed = 0;
        var theirs = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (key, node) in mapping["outputs"]!.AsObject())
        {
            // diffusers' kohya text-encoder names are the old attention-processor ones, which its loader renames to PEFT's.
            string name = System.Text.RegularExpressions.Regex.Replace(key, @"\.to_(q|k|v|out)_lora\.(down|up)\.weight$",
                m => $".{m.Groups[1].Value}_proj.lora_{(m.Groups[2].Value == "down" ? "A" : "B")}.weight");
            name = System.Text.RegularExpressions.Regex.Replace(name, @"\.lora_linear_layer\.(down|up)\.weight$",
                m => $".lora_{(m.Groups[1].Value == "down" ? "A" : "B")}.weight");
            if (!key.StartsWith("transformer.", StringComparison.Ordinal) && !key.StartsWith("text_encoder.", StringComparison.Ordinal))
            {
                Assert.True(layout is "kohya" or "comfyui", key);
                Assert.Matches("^(x_embedder|context_embedder|time_text_embed|norm_out|proj_out)\\.", key);
                name = "transformer." + name;
                unprefixed++;
            }
            theirs.Add(name);
            Assert.True(ours.TryGetValue(name, out var mine), $"diffusers makes {key}; we do not");
            string rows = string.Join(" ", node!["rows"]!.AsArray().Select(r => $"{(long)r![0]!}+{(long)r[1]!}"));
            if (name == "transformer.norm_out.linear.lora_A.weight")
            {
                Assert.Equal("1+1 0+1", rows); // diffusers' swap_scale_shift on the rank rows
                Assert.Equal("0+2", mine.Rows);
                swapped++;
            }
            else Assert.Equal(rows, mine.Rows);
            Assert.Equal((string)node["source"]!, mine.Source);
            Assert.Equal(node["shape"]!.AsArray().Select(d => (long)d!), mine.Shape);
        }
        Assert.Empty(ours.Keys.Except(theirs));
        Assert.Equal(layout is "bfl_control" or "kohya" ? 1 : 0, swapped);
        Assert.Equal(layout switch { "kohya" => 20, "comfyui" => 12, _ => 0 }, unprefixed);
        output.WriteLine($"{layout}: {theirs.Count} converted tensors equal ({swapped} rank-swapped down matrix, {unprefixed} non-block tensors diffusers leaves unprefixed)");
    }

    /// <summary>The rows a target takes, as runs "first+count", from values that are row numbers.</summary>
    private static string Runs(Tensor t)
    {
        var rows = (t.dim() == 1 ? t : t.select(1, 0)).to(ScalarType.Int64).data<long>().ToArray();
        var runs = new List<(long First, long Count)>();
        foreach (long r in rows)
        {
            if (runs.Count > 0 && runs[^1].First + runs[^1].Count == r) runs[^1] = (runs[^1].First, runs[^1].Count + 1);
            else runs.Add((r, 1));
        }
        return string.Join(" ", runs.Select(r => $"{r.First}+{r.Count}"));
    }

    private static Tensor Draw(Generator g, params long[] shape) => randn(shape, generator: g) * 0.3;

    private static Tensor Weight(nn.Module model, string name) =>
        model.named_parameters().Single(p => p.name == name).parameter;

    /// <summary>
    /// A BFL-layout LoRA on the tiny transformer: the fused QKV layer adds its up matrix's thirds (and bias thirds) to Q, K
    /// and V; linear1 of a single block splits into Q, K, V and the MLP (3 x 32 + 128 rows); the final modulation's halves
    /// swap; a QK-norm scale replaces the weight; alpha-less, so the factor is the scale alone. UnfuseLora puts it all back.
    /// </summary>
    [Fact]
    public void BflLayersFuseAsTheirSplitRowsAndComeBackOut()
    {
        using var g = new Generator().manual_seed(7);
        var file = new Dictionary<string, Tensor>
        {
            ["double_blocks.0.img_attn.qkv.lora_A.weight"] = Draw(g, 4, 32), ["double_blocks.0.img_attn.qkv.lora_B.weight"] = Draw(g, 96, 4),
            ["double_blocks.0.img_attn.qkv.lora_B.bias"] = Draw(g, 96),
            ["single_blocks.1.linear1.lora_A.weight"] = Draw(g, 4, 32), ["single_blocks.1.linear1.lora_B.weight"] = Draw(g, 224, 4),
            ["final_layer.adaLN_modulation.1.lora_A.weight"] = Draw(g, 4, 32), ["final_layer.adaLN_modulation.1.lora_B.weight"] = Draw(g, 64, 4),
            ["double_blocks.1.txt_attn.norm.key_norm.scale"] = 1 + Draw(g, 16),
        };
        string path = Path.Combine(_dir, "bfl.safetensors");
        SafetensorsWriter.Save(path, file);
        using var components = LocalDiffusersFlux.Components();
        var model = components.Transformer;
        var before = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
        Assert.Equal(3, components.FuseLora(path, 0.5));

        Tensor Delta(string name) => Weight(model, name) - before[name];
        Tensor Expected(string layer, long first, long count) =>
            0.5 * file[$"{layer}.lora_B.weight"].narrow(0, first, count).matmul(file[$"{layer}.lora_A.weight"]);
        double worst = 0;
        void Close(Tensor actual, Tensor expected, string what) => worst = Math.Max(worst, TensorAssert.Close(actual, expected, 1e-6, what));
        string[] qkv = ["to_q", "to_k", "to_v"];
        for (int i = 0; i < 3; i++)
        {
            Close(Delta($"transformer_blocks.0.attn.{qkv[i]}.weight"), Expected("double_blocks.0.img_attn.qkv", 32 * i, 32), qkv[i]);
            Close(Delta($"transformer_blocks.0.attn.{qkv[i]}.bias"), 0.5 * file["double_blocks.0.img_attn.qkv.lora_B.bias"].narrow(0, 32 * i, 32), $"{qkv[i]} bias");
            Close(Delta($"single_transformer_blocks.1.attn.{qkv[i]}.weight"), Expected("single_blocks.1.linear1", 32 * i, 32), $"single {qkv[i]}");
        }
        Close(Delta("single_transformer_blocks.1.proj_mlp.weight"), Expected("single_blocks.1.linear1", 96, 128), "proj_mlp");
        Close(Delta("norm_out.linear.weight"), cat([Expected("final_layer.adaLN_modulation.1", 32, 32), Expected("final_layer.adaLN_modulation.1", 0, 32)], 0), "norm_out");
        Assert.Equal(0, TensorAssert.MaxAbsDiff(Weight(model, "transformer_blocks.1.attn.norm_added_k.weight"), file["double_blocks.1.txt_attn.norm.key_norm.scale"]));
        var changed = before.Keys.Where(k => TensorAssert.MaxAbsDiff(Weight(model, k), before[k]) != 0).Order().ToArray();
        Assert.Equal(12, changed.Length); // 3 weights + 3 biases, 4 single-block weights, norm_out, the norm; no others
        output.WriteLine($"BFL layout: deltas within {worst:G3} of their definition; changed: {string.Join(", ", changed)}");

        components.UnfuseLora();
        foreach (var (name, value) in before) Assert.True(TensorAssert.MaxAbsDiff(Weight(model, name), value) <= 1e-6, name);
        foreach (var t in before.Values.Concat(file.Values)) t.Dispose();
    }

    /// <summary>
    /// kohya sd-scripts' Flux LoRA (lora_unet_ + BFL names, alphas): alpha / r times the scale, a fused layer split as BFL's;
    /// ComfyUI's variant names the same layers diffusion_model.X.lora_down.weight.
    /// </summary>
    [Theory]
    [InlineData("lora_unet_double_blocks_1_txt_attn_qkv", "lora_unet_single_blocks_0_linear2")]
    [InlineData("diffusion_model.double_blocks.1.txt_attn.qkv", "diffusion_model.single_blocks.0.linear2")]
    public void KohyaFluxLayersFuseWithTheirAlphas(string qkv, string linear2)
    {
        using var g = new Generator().manual_seed(11);
        var file = new Dictionary<string, Tensor>
        {
            [$"{qkv}.lora_down.weight"] = Draw(g, 4, 32), [$"{qkv}.lora_up.weight"] = Draw(g, 96, 4), [$"{qkv}.alpha"] = tensor(8f),
            [$"{linear2}.lora_down.weight"] = Draw(g, 2, 160), [$"{linear2}.lora_up.weight"] = Draw(g, 32, 2),
        };
        string path = Path.Combine(_dir, "kohya.safetensors");
        SafetensorsWriter.Save(path, file);
        using var components = LocalDiffusersFlux.Components();
        var model = components.Transformer;
        using var v = Weight(model, "transformer_blocks.1.attn.add_v_proj.weight").detach().clone();
        using var proj = Weight(model, "single_transformer_blocks.0.proj_out.weight").detach().clone();
        Assert.Equal(2, components.FuseLora(path, 0.8));
        // alpha 8 / r 4 = 2; linear2 has no alpha (a factor of 1).
        TensorAssert.Close(Weight(model, "transformer_blocks.1.attn.add_v_proj.weight") - v,
            1.6 * file[$"{qkv}.lora_up.weight"].narrow(0, 64, 32).matmul(file[$"{qkv}.lora_down.weight"]), 1e-6, "add_v_proj");
        TensorAssert.Close(Weight(model, "single_transformer_blocks.0.proj_out.weight") - proj,
            0.8 * file[$"{linear2}.lora_up.weight"].matmul(file[$"{linear2}.lora_down.weight"]), 1e-6, "proj_out");
        foreach (var t in file.Values) t.Dispose();
    }

    /// <summary>
    /// ComfyUI's CLIP-L part (text_encoders.clip_l.transformer. + the module path, which diffusers reads as lora_te_) adapts
    /// the Flux pipeline's CLIP text encoder, beside the transformer's diffusion_model. part.
    /// </summary>
    [Fact]
    public void ComfyUiClipLayersAdaptTheTextEncoder()
    {
        string folder = Path.Combine(_dir, "flux");
        TinyFluxPipelineFolder.Write(folder);
        using var components = FluxComponents.FromPretrained(folder, new PipelineLoadOptions());
        using var g = new Generator().manual_seed(5);
        const string clip = "text_encoders.clip_l.transformer.text_model.encoder.layers.0.self_attn.q_proj";
        const string block = "diffusion_model.single_blocks.1.linear2";
        var q = Weight(components.TextEncoder!, "text_model.encoder.layers.0.self_attn.q_proj.weight");
        var file = new Dictionary<string, Tensor>
        {
            [$"{clip}.lora_down.weight"] = Draw(g, 2, q.shape[1]), [$"{clip}.lora_up.weight"] = Draw(g, q.shape[0], 2), [$"{clip}.alpha"] = tensor(1f),
            [$"{block}.lora_down.weight"] = Draw(g, 2, 160), [$"{block}.lora_up.weight"] = Draw(g, 32, 2),
        };
        string path = Path.Combine(_dir, "comfy.safetensors");
        SafetensorsWriter.Save(path, file);
        using var before = q.detach().clone();
        Assert.Equal(2, components.FuseLora(path, 1.0));
        // alpha 1 / r 2 = 0.5.
        TensorAssert.Close(q - before, 0.5 * file[$"{clip}.lora_up.weight"].matmul(file[$"{clip}.lora_down.weight"]), 1e-6, "q_proj");
        foreach (var t in file.Values) t.Dispose();
    }

    /// <summary>Layouts that do not fit are refused before any weight changes, with the reason.</summary>
    [Fact]
    public void LayoutsThatDoNotFitAreRefused()
    {
        void Write(string name, Dictionary<string, long[]> shapes) =>
            SafetensorsWriter.Save(Path.Combine(_dir, name), shapes.ToDictionary(kv => kv.Key, kv => zeros(kv.Value)));
        Write("deep.safetensors", new() { ["double_blocks.5.img_mlp.0.lora_A.weight"] = [2, 32], ["double_blocks.5.img_mlp.0.lora_B.weight"] = [128, 2] });
        Write("qkv.safetensors", new() { ["double_blocks.0.img_attn.qkv.lora_A.weight"] = [2, 32], ["double_blocks.0.img_attn.qkv.lora_B.weight"] = [90, 2] });
        Write("xlabs.safetensors", new() { ["double_blocks.0.processor.proj_lora3.down.weight"] = [2, 32], ["double_blocks.0.processor.proj_lora3.up.weight"] = [32, 2] });
        Write("alpha.safetensors", new() { ["img_in.lora_A.weight"] = [2, 64], ["img_in.lora_B.weight"] = [32, 2], ["img_in.alpha"] = [] });
        using var components = LocalDiffusersFlux.Components();
        var before = components.Transformer.parameters().Select(p => p.detach().clone()).ToList();
        Assert.Contains("2 double_blocks", Assert.Throws<ArgumentException>(() => components.FuseLora(Path.Combine(_dir, "deep.safetensors"))).Message);
        Assert.Contains("take 96", Assert.Throws<ArgumentException>(() => components.FuseLora(Path.Combine(_dir, "qkv.safetensors"))).Message);
        Assert.Contains("XLabs", Assert.Throws<InvalidDataException>(() => components.FuseLora(Path.Combine(_dir, "xlabs.safetensors"))).Message);
        Assert.Contains("img_in.alpha", Assert.Throws<InvalidDataException>(() => components.FuseLora(Path.Combine(_dir, "alpha.safetensors"))).Message);
        Assert.All(components.Transformer.parameters().Zip(before), p => Assert.Equal(0, TensorAssert.MaxAbsDiff(p.First, p.Second)));
        Assert.Equal(64, components.Transformer.Config.InChannels);
        using var sd3 = StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions { LoadTextEncoder3 = false });
        Assert.Contains("Flux transformer", Assert.Throws<ArgumentException>(() => sd3.FuseLora(Path.Combine(_dir, "deep.safetensors"))).Message);
        Write("norm.safetensors", new()
        {
            ["transformer.transformer_blocks.0.attn.to_q.lora_A.weight"] = [2, 32], ["transformer.transformer_blocks.0.attn.to_q.lora_B.weight"] = [32, 2],
            ["transformer.transformer_blocks.0.attn.norm_q.weight"] = [16],
        });
        Assert.Contains("as Flux control LoRAs do", Assert.Throws<ArgumentException>(() => sd3.FuseLora(Path.Combine(_dir, "norm.safetensors"))).Message);
        foreach (var t in before) t.Dispose();
    }
}
