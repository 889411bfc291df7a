using DiffusersSharp.IO;
using DiffusersSharp.Pipelines.Flux2;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Loaders;

/// <summary>
/// FLUX.2 transformer LoRAs loaded and fused by diffusers v0.39 + PEFT (fixture local-diffusers/flux2-lora, made by
/// tools/reference/flux2_lora.py on local-diffusers/flux2-klein's tiny transformer): diffusers' own layout with rank /
/// alpha patterns in the adapter metadata (lora_scale 0.7) and without metadata, mixed ranks (1.0); ai-toolkit's
/// <c>diffusion_model.</c> BFL names with fused QKV, single blocks, embedders and modulations (0.8); diffusers' block names
/// (and the <c>sformer_blocks</c> alias) under <c>diffusion_model.</c> (1.2); PEFT's <c>base_model.model.</c> prefix (1.0);
/// kohya's <c>lora_unet_</c> names with alphas (one missing), a dense and a block-sparse fused QKV (0.9). Every weight must
/// change by what diffusers' fuse_lora changed it by, no other weight may change, and UnfuseLora must give the weights back.
/// The layouts diffusers v0.39 raises on or loads nothing from (the script prints what it does with each) are refused
/// with a clear error before any weight changes.
/// </summary>
public sealed class Flux2LoraParityTests(ITestOutputHelper output)
{
    /// <summary>The fixture's components, float32 on the CPU, no text encoder.</summary>
    private static Flux2KleinComponents Components() => LocalDiffusersFlux2Klein.Components(distilled: false);

    [Theory]
    [InlineData("peft", "pytorch_lora_weights.safetensors", 0.7)]
    [InlineData("nometa", "nometa.safetensors", 1.0)]
    [InlineData("bfl", "bfl.safetensors", 0.8)]
    [InlineData("expanded", "expanded.safetensors", 1.2)]
    [InlineData("peftbfl", "peft_bfl.safetensors", 1.0)]
    [InlineData("kohya", "kohya.safetensors", 0.9)]
    public void Flux2LoraFusesAsDiffusersAndPeft(string fixtureCase, string file, double scale)
    {
        using var components = Components();
        FusedLoraParity.Check(output, components, components.Transformer, components.FuseLora, "local-diffusers/flux2-lora", fixtureCase, file, scale);
    }

    public static TheoryData<string, Dictionary<string, long[]>, string> RefusedLayouts => new()
    {
        // diffusers: "`original_state_dict` should be empty at this point but has ... alpha".
        { "an alpha beside diffusion_model. keys", Bfl("double_blocks.0.img_attn.proj", alpha: true), "does not map" },
        { "a module the converter does not map", new(Bfl("double_blocks.0.img_attn.proj")) { ["diffusion_model.double_blocks.0.img_mod.lin.lora_A.weight"] = [2, 32] }, "img_mod.lin" },
        { "PEFT default. names under diffusion_model.", new() { ["diffusion_model.double_blocks.0.img_attn.proj.lora_A.default.weight"] = [2, 32], ["diffusion_model.double_blocks.0.img_attn.proj.lora_B.default.weight"] = [32, 2] }, "does not map" },
        { "a key without diffusion_model. beside ones with it", new(Bfl("double_blocks.0.img_attn.proj")) { ["transformer.x_embedder.lora_A.weight"] = [2, 16] }, "mixes" },
        { "an alpha under a diffusers block name", new(Bfl("transformer_blocks.0.attn.to_q")) { ["diffusion_model.transformer_blocks.0.attn.to_q.alpha"] = [] }, "'lora'" },
        // diffusers: its kohya converter reads lora_unet_ names only, drops these with a warning and loads nothing.
        { "ComfyUI's diffusion_model. lora_down", new() { ["diffusion_model.double_blocks.0.img_attn.proj.lora_down.weight"] = [2, 32], ["diffusion_model.double_blocks.0.img_attn.proj.lora_up.weight"] = [32, 2] }, "loads nothing" },
        // diffusers: "Invalid LoRA checkpoint. Make sure all LoRA param names contain `'lora'` substring."
        { "an alpha in diffusers' layout", new() { ["transformer.x_embedder.lora_A.weight"] = [2, 16], ["transformer.x_embedder.lora_B.weight"] = [32, 2], ["transformer.x_embedder.alpha"] = [] }, "'lora'" },
        // diffusers: PEFT finds unexpected keys and the adapter stays at its initial (zero) value.
        { "PEFT default. names in diffusers' layout", new() { ["transformer.x_embedder.lora_A.default.weight"] = [2, 16], ["transformer.x_embedder.lora_B.default.weight"] = [32, 2] }, "lora_A.default.weight" },
        // diffusers: drops the unmapped one with a warning.
        { "a kohya module the converter does not map", new() { ["lora_unet_double_blocks_0_img_attn_proj.lora_down.weight"] = [2, 32], ["lora_unet_double_blocks_0_img_attn_proj.lora_up.weight"] = [32, 2], ["lora_unet_double_blocks_0_img_mod_lin.lora_down.weight"] = [2, 32] }, "img_mod_lin" },
        // diffusers: KeyError.
        { "a kohya lora_down without its lora_up", new() { ["lora_unet_double_blocks_0_img_attn_proj.lora_down.weight"] = [2, 32] }, "no lora_up" },
        // diffusers: no prefix it converts, so nothing under transformer. is loaded.
        { "BFL names without a prefix", new() { ["double_blocks.0.img_attn.proj.lora_A.weight"] = [2, 32], ["double_blocks.0.img_attn.proj.lora_B.weight"] = [32, 2] }, "loads nothing" },
        // diffusers: load_lora_adapter keeps the transformer.-prefixed keys only, so nothing is loaded.
        { "diffusers' module names without transformer.", new() { ["transformer_blocks.0.attn.to_out.0.lora_A.weight"] = [2, 32], ["transformer_blocks.0.attn.to_out.0.lora_B.weight"] = [32, 2] }, "'transformer_blocks'" },
        { "a DoRA file", new(Bfl("double_blocks.0.img_attn.proj")) { ["diffusion_model.double_blocks.0.img_attn.proj.dora_scale"] = [1, 32] }, "DoRA" },
    };

    /// <summary>A diffusion_model.-prefixed lora_A / lora_B pair (and alpha) of a 32 x 32 module, tensor shapes only.</summary>
    private static Dictionary<string, long[]> Bfl(string module, bool alpha = false)
    {
        var keys = new Dictionary<string, long[]> { [$"diffusion_model.{module}.lora_A.weight"] = [2, 32], [$"diffusion_model.{module}.lora_B.weight"] = [32, 2] };
        if (alpha) keys[$"diffusion_model.{module}.alpha"] = [];
        return keys;
    }

    [Theory]
    [MemberData(nameof(RefusedLayouts))]
    public void LayoutsDiffusersDoesNotLoadAreRefusedBeforeAnyWeightChanges(string what, Dictionary<string, long[]> shapes, string message)
    {
        string dir = Directory.CreateTempSubdirectory("flux2-lora").FullName;
        try
        {
            string file = Path.Combine(dir, "bad.safetensors");
            var tensors = shapes.ToDictionary(s => s.Key, s => full(s.Value, 0.1f));
            SafetensorsWriter.Save(file, tensors);
            using var components = Components();
            var before = components.Transformer.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
            var e = Assert.Throws<InvalidDataException>(() => components.FuseLora(file));
            output.WriteLine($"{what}: {e.Message}");
            Assert.Contains(message, e.Message);
            foreach (var (name, weight) in components.Transformer.state_dict()) Assert.Equal(0.0, TensorAssert.MaxAbsDiff(weight, before[name]));
            Assert.Equal(0, components.FusedLoraCount);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void LayersTheTransformerLacksAreRefusedBeforeAnyWeightChanges()
    {
        string dir = Directory.CreateTempSubdirectory("flux2-lora").FullName;
        try
        {
            string file = Path.Combine(dir, "bad.safetensors");
            SafetensorsWriter.Save(file, new Dictionary<string, Tensor>
            {
                // The first fits; the second names a block the two-block transformer lacks.
                ["diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight"] = ones(2, 32),
                ["diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight"] = ones(96, 2),
                ["diffusion_model.double_blocks.7.img_attn.proj.lora_A.weight"] = ones(2, 32),
                ["diffusion_model.double_blocks.7.img_attn.proj.lora_B.weight"] = ones(32, 2),
            });
            using var components = Components();
            var before = components.Transformer.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
            Assert.Contains("transformer_blocks.7", Assert.Throws<ArgumentException>(() => components.FuseLora(file)).Message);
            foreach (var (name, weight) in components.Transformer.state_dict()) Assert.Equal(0.0, TensorAssert.MaxAbsDiff(weight, before[name]));

            // A fused QKV whose lora_B is not three equal parts.
            SafetensorsWriter.Save(file, new Dictionary<string, Tensor>
            {
                ["diffusion_model.double_blocks.0.img_attn.qkv.lora_A.weight"] = ones(2, 32),
                ["diffusion_model.double_blocks.0.img_attn.qkv.lora_B.weight"] = ones(95, 2),
            });
            Assert.Contains("multiple of 3", Assert.Throws<InvalidDataException>(() => components.FuseLora(file)).Message);
            foreach (var (name, weight) in components.Transformer.state_dict()) Assert.Equal(0.0, TensorAssert.MaxAbsDiff(weight, before[name]));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
