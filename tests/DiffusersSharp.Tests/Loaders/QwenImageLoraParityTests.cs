using DiffusersSharp.Loaders;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Loaders;

/// <summary>
/// Qwen-Image transformer LoRAs loaded and fused by diffusers v0.39 + PEFT (fixture local-diffusers/qwenimage-lora, made
/// by tools/reference/qwenimage_lora.py on local-diffusers/qwenimage's tiny transformer): diffusers' own layout with rank /
/// alpha patterns in the adapter metadata (lora_scale 0.7), a <c>diffusion_model.</c> lora_down / lora_up / alpha file
/// (0.8), PEFT's <c>lora_A.default.weight</c> names with alphas diffusers drops (1.0), and kohya's flattened
/// <c>lora_unet_</c> names with protected underscores and top-level modules (0.9). Every weight must change by what
/// diffusers' fuse_lora changed it by, no other weight may change, and UnfuseLora must give the weights back.
/// </summary>
public sealed class QwenImageLoraParityTests(ITestOutputHelper output)
{
    [Theory]
    [InlineData("peft", "pytorch_lora_weights.safetensors", 0.7)]
    [InlineData("comfy", "comfy_alpha.safetensors", 0.8)]
    [InlineData("default", "peft_default.safetensors", 1.0)]
    [InlineData("kohya", "kohya.safetensors", 0.9)]
    public void QwenImageLoraFusesAsDiffusersAndPeft(string fixtureCase, string file, double scale)
    {
        using var components = LocalDiffusersQwenImage.Components();
        FusedLoraParity.Check(output, components, components.Transformer, components.FuseLora, "local-diffusers/qwenimage-lora", fixtureCase, file, scale);
    }

    [Theory]
    [InlineData("transformer_blocks_0_attn_to_add_out.lora_down.weight", "transformer_blocks.0.attn.to_add_out.lora_down.weight")]
    [InlineData("transformer_blocks_12_attn_add_q_proj.alpha", "transformer_blocks.12.attn.add_q_proj.alpha")]
    [InlineData("transformer_blocks_3_img_mlp_net_0_proj.lora_up.weight", "transformer_blocks.3.img_mlp.net.0.proj.lora_up.weight")]
    [InlineData("transformer_blocks_3_txt_mod_1.alpha", "transformer_blocks.3.txt_mod.1.alpha")]
    [InlineData("transformer_blocks_0_attn_to_out_0.lora_down.weight", "transformer_blocks.0.attn.to_out.0.lora_down.weight")]
    [InlineData("norm_out_linear.lora_up.weight", "norm_out.linear.lora_up.weight")]
    [InlineData("time_text_embed_timestep_embedder_linear_2.alpha", "time_text_embed.timestep_embedder.linear_2.alpha")]
    public void KohyaNamesConvertAsDiffusersConvertsThem(string kohya, string diffusers) =>
        Assert.Equal(diffusers, LoraWeights.QwenKohyaName(kohya));

    [Fact]
    public void LayersTheTransformerLacksAreRefusedBeforeAnyWeightChanges()
    {
        string dir = Directory.CreateTempSubdirectory("qwen-lora").FullName;
        try
        {
            string file = Path.Combine(dir, "bad.safetensors");
            DiffusersSharp.IO.SafetensorsWriter.Save(file, new Dictionary<string, Tensor>
            {
                ["diffusion_model.transformer_blocks.7.attn.to_q.lora_down.weight"] = ones(2, 48),
                ["diffusion_model.transformer_blocks.7.attn.to_q.lora_up.weight"] = ones(48, 2),
                ["diffusion_model.transformer_blocks.7.attn.to_q.alpha"] = tensor(2f),
            });
            using var components = LocalDiffusersQwenImage.Components();
            var before = components.Transformer.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
            Assert.Contains("transformer_blocks.7", Assert.Throws<ArgumentException>(() => components.FuseLora(file)).Message);
            foreach (var (name, weight) in components.Transformer.state_dict()) Assert.Equal(0.0, TensorAssert.MaxAbsDiff(weight, before[name]));
            DiffusersSharp.IO.SafetensorsWriter.Save(file, new Dictionary<string, Tensor> { ["diffusion_model.img_in.lora_down.weight"] = ones(2, 16), ["diffusion_model.img_in.lora_up.weight"] = ones(48, 2) });
            Assert.Contains("no .alpha", Assert.Throws<InvalidDataException>(() => components.FuseLora(file)).Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
