using DiffusersSharp.Models.Unets;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusionXL;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// FreeU against diffusers' own enable_freeu / apply_freeu / fourier_filter (fixture local-diffusers/freeu, made by
/// tools/reference/freeu.py with diffusers 0.36.0 on torch 1.13 CPU, float32): UNet forwards of tiny-sd15 (an UpBlock2D
/// and a CrossAttnUpBlock2D at resolutions 0 and 1) and tiny-sdxl (two CrossAttnUpBlock2D) on 16 x 16 and 8 x 8 latents
/// (SD 1.5's lowest up block 1 x 1: the filter window is the Python slice [-1:1]) and a 24 x 40 one (up blocks at 3 x 5
/// and 6 x 10: not powers of two), FreeU
/// with a zero factor (off, as diffusers' truthiness test makes it), and the SD 1.5 / SDXL pipelines with FreeU on,
/// within the UNet parity bound 5e-5 x max(1, max |expected|).
/// </summary>
public sealed class FreeUParityTests(ITestOutputHelper output)
{
    private const double Tolerance = 5e-5;
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/freeu/expected.safetensors");
    private static readonly FreeU Sd15 = new(0.9, 0.2, 1.2, 1.4), Sdxl = new(0.6, 0.4, 1.1, 1.2);

    private void Close(Tensor actual, string key) =>
        output.WriteLine($"{key}: max |diff| {TensorAssert.Close(actual, Expected[key], Tolerance, key):G3} (max |expected| {Expected[key].abs().max().item<float>():G3})");

    [Theory]
    [InlineData("sd15", "tiny-sd15/model")]
    [InlineData("sdxl", "tiny-sdxl/model")]
    public void UNetForwardWithFreeUMatchesDiffusers(string name, string model)
    {
        using var components = StableDiffusionComponents.FromPretrained(Fixtures.Path(model), new PipelineLoadOptions());
        var unet = components.Unet;
        var freeU = name == "sd15" ? Sd15 : Sdxl;
        using var _ = no_grad();
        foreach (string size in new[] { "16x16", "8x8", "24x40" })
        {
            using var scope = NewDisposeScope();
            string key = $"unet.{name}.{size}";
            Tensor Forward() => unet.forward(Expected[$"{key}.sample"], tensor(499L), Expected[$"{key}.encoder_hidden_states"],
                Expected.GetValueOrDefault($"{key}.text_embeds"), Expected.GetValueOrDefault($"{key}.time_ids"));
            unet.SetFreeU(null);
            Close(Forward(), $"{key}.plain");
            unet.SetFreeU(freeU);
            Assert.Equal(freeU, unet.FreeU);
            Close(Forward(), $"{key}.freeu");
            unet.SetFreeU(freeU with { S2 = 0 });
            Close(Forward(), $"{key}.freeu_zero_s2");
            // FreeU does change the prediction (the check above is not vacuous).
            Assert.True((Expected[$"{key}.freeu"] - Expected[$"{key}.plain"]).abs().max().item<float>() > 1e-2);
        }
        unet.SetFreeU(null);
        Assert.Null(unet.FreeU);
        Assert.Throws<ArgumentException>(() => unet.SetFreeU(new FreeU(double.NaN, 0.2, 1.2, 1.4)));
    }

    [Fact]
    public void StableDiffusionWithFreeUMatchesDiffusers()
    {
        using var components = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions());
        using var pipe = new StableDiffusionPipeline(components);
        components.Unet.SetFreeU(Sd15);
        StepParity.Check(output, Expected, Tolerance, "sd15_t2i", new StableDiffusionRequest
        {
            PromptEmbeds = Expected["in.sd15.prompt_embeds"], NegativePromptEmbeds = Expected["in.sd15.negative_prompt_embeds"],
            NumInferenceSteps = 3, GuidanceScale = 6.0, Height = 48, Width = 80,
        }, 41, r => pipe.Generate(r));
    }

    [Fact]
    public void StableDiffusionXLWithFreeUMatchesDiffusers()
    {
        using var components = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sdxl/model"), new PipelineLoadOptions());
        using var pipe = new StableDiffusionXLPipeline(components);
        components.Unet.SetFreeU(Sdxl);
        StepParity.Check(output, Expected, Tolerance, "sdxl_t2i", new StableDiffusionRequest
        {
            PromptEmbeds = Expected["in.sdxl.prompt_embeds"], NegativePromptEmbeds = Expected["in.sdxl.negative_prompt_embeds"],
            PooledPromptEmbeds = Expected["in.sdxl.pooled_prompt_embeds"], NegativePooledPromptEmbeds = Expected["in.sdxl.negative_pooled_prompt_embeds"],
            NumInferenceSteps = 3, GuidanceScale = 5.0, Height = 64, Width = 64,
        }, 42, r => pipe.Generate(r));
    }
}
