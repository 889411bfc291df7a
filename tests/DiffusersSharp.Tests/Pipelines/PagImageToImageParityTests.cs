using System.Text.Json;
using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusionXL;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>
/// Perturbed-Attention Guidance for image-to-image and inpainting against diffusers' own StableDiffusionPAGImg2ImgPipeline,
/// StableDiffusionPAGInpaintPipeline, StableDiffusionXLPAGImg2ImgPipeline and StableDiffusionXLPAGInpaintPipeline
/// (fixture local-diffusers/pag-i2i, made by tools/reference/pag_i2i.py with diffusers 0.36.0 on torch 1.13 CPU, float32)
/// on tiny-sd15 (PNDM; its 4-channel UNet and a 9-channel variant) and tiny-sdxl (Euler): PAG with and without
/// classifier-free guidance, several layer selections, pag_adaptive_scale clamped to 0 at the last steps, two images per
/// prompt, the SD PAG inpainting default strength 0.9999; every step's latents and the image within the UNet parity bound
/// 5e-5 x max(1, max |expected|), as <see cref="PagParityTests"/>.
/// </summary>
public sealed class PagImageToImageParityTests(ITestOutputHelper output)
{
    private const double Tolerance = 5e-5;
    private const string Folder = "local-diffusers/pag-i2i/";
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected(Folder + "expected.safetensors");
    private static readonly Dictionary<string, string[]> Layers =
        JsonSerializer.Deserialize<Dictionary<string, string[]>>(File.ReadAllText(Fixtures.Path(Folder + "layers.json")))!;
    private static readonly ImageBuffer Init = ImageFile.LoadRgb(Fixtures.Path(Folder + "init.png"));
    private static readonly ImageBuffer Mask = ImageFile.Load(Fixtures.Path(Folder + "mask.png"));

    /// <summary>A case as pag_i2i.py runs it: inpainting or image-to-image, the 9-channel UNet, seed, layers, strength (null:
    /// the pipeline's default), steps, guidance, pag_scale, pag_adaptive_scale, images per prompt.</summary>
    private sealed record Case(bool Inpaint, bool NineChannel, long Seed, string[] Layers, double? Strength, int Steps, double Guidance,
        double PagScale, double Adaptive, int Images);

    private static readonly Dictionary<string, Case> Cases = new()
    {
        ["sd15_i2i_cfg"] = new(false, false, 61, ["mid", "down_blocks.1"], 0.9, 4, 6.0, 3.0, 0.0, 1),
        ["sd15_i2i_nocfg_adaptive"] = new(false, false, 62, ["mid", "up_blocks.1"], 0.9, 3, 1.0, 3.0, 0.0035, 2),
        ["sd15_inpaint_cfg"] = new(true, false, 63, ["down_blocks.1", "mid"], null, 3, 6.0, 3.0, 0.0, 1),
        ["sd15_inpaint9_cfg"] = new(true, true, 64, ["mid"], 0.8, 4, 5.0, 2.0, 0.0, 1),
        ["sd15_inpaint9_nocfg"] = new(true, true, 65, ["up_blocks.2"], null, 3, 1.0, 3.0, 0.0, 1),
        ["sdxl_i2i_cfg"] = new(false, false, 71, ["mid"], 0.6, 5, 5.0, 3.0, 0.0, 1),
        ["sdxl_i2i_nocfg"] = new(false, false, 72, ["down_blocks.2.attentions.1", "up_blocks.0"], 0.8, 4, 1.0, 2.0, 0.0, 1),
        ["sdxl_inpaint_adaptive"] = new(true, false, 73, ["mid", "down_blocks.1"], null, 3, 5.0, 4.0, 0.005, 2),
        ["sdxl_inpaint_nocfg"] = new(true, false, 74, ["up_blocks.0"], 0.75, 4, 1.0, 3.0, 0.0, 1),
    };

    /// <summary>The tiny-sd15 cases.</summary>
    public static readonly TheoryData<string> Sd15Cases = new(Cases.Keys.Where(k => k.StartsWith("sd15", StringComparison.Ordinal)));

    /// <summary>The tiny-sdxl cases.</summary>
    public static readonly TheoryData<string> SdxlCases = new(Cases.Keys.Where(k => k.StartsWith("sdxl", StringComparison.Ordinal)));

    [Theory]
    [MemberData(nameof(Sd15Cases))]
    public void StableDiffusionPagImageToImageMatchesDiffusers(string name)
    {
        var (inpaint, nineChannel, seed, layers, strength, steps, guidance, pagScale, adaptive, images) = Cases[name];
        using var loaded = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions());
        using var unet9 = nineChannel ? UnetVariants.WithConvIn(loaded.Unet, 9, Expected["in.unet9.conv_in.weight"]) : null;
        // The 9-channel components borrow the loaded VAE and scheduler config (not disposed here: `loaded` owns them).
        var components = unet9 is null ? loaded
            : new StableDiffusionComponents { Unet = unet9, Vae = loaded.Vae, Device = CPU, Dtype = ScalarType.Float32 };
        if (unet9 is not null) components.UseScheduler(loaded.SchedulerConfig);
        Assert.Equal(Layers[name], components.Unet.ResolvePagLayers(layers).Order(StringComparer.Ordinal));
        var embeds = new StableDiffusionRequest
        {
            PromptEmbeds = Expected["in.sd15.prompt_embeds"], NegativePromptEmbeds = Expected["in.sd15.negative_prompt_embeds"],
            NumInferenceSteps = steps, GuidanceScale = guidance, NumImagesPerPrompt = images,
        };
        if (inpaint)
        {
            using var pipe = new StableDiffusionPAGInpaintPipeline(components);
            var request = new StableDiffusionPAGInpaintRequest
            {
                PromptEmbeds = embeds.PromptEmbeds, NegativePromptEmbeds = embeds.NegativePromptEmbeds, NumInferenceSteps = steps,
                GuidanceScale = guidance, NumImagesPerPrompt = images, Image = Init, MaskImage = Mask, Strength = strength, Height = 64, Width = 80,
                PagScale = pagScale, PagAdaptiveScale = adaptive, PagAppliedLayers = layers,
            };
            if (strength is null) Assert.Equal(0.9999, pipe.StrengthOf(request)); // not StableDiffusionInpaintPipeline's 1.0
            StepParity.Check(output, Expected, Tolerance, name, request, seed, r => pipe.Generate(r));
            AssertPagMatters(name, seed, () => pipe.Generate(request with
            {
                PagScale = 0, Generator = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(seed), OutputType = OutputType.Latent,
            }));
        }
        else
        {
            using var pipe = new StableDiffusionPAGImg2ImgPipeline(components);
            var request = new StableDiffusionPAGImg2ImgRequest
            {
                PromptEmbeds = embeds.PromptEmbeds, NegativePromptEmbeds = embeds.NegativePromptEmbeds, NumInferenceSteps = steps,
                GuidanceScale = guidance, NumImagesPerPrompt = images, Image = Init, Strength = strength,
                PagScale = pagScale, PagAdaptiveScale = adaptive, PagAppliedLayers = layers,
            };
            StepParity.Check(output, Expected, Tolerance, name, request, seed, r => pipe.Generate(r));
            AssertPagMatters(name, seed, () => pipe.Generate(request with
            {
                PagScale = 0, Generator = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(seed), OutputType = OutputType.Latent,
            }));
        }
    }

    [Theory]
    [MemberData(nameof(SdxlCases))]
    public void StableDiffusionXLPagImageToImageMatchesDiffusers(string name)
    {
        var (inpaint, _, seed, layers, strength, steps, guidance, pagScale, adaptive, images) = Cases[name];
        using var components = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sdxl/model"), new PipelineLoadOptions());
        Assert.Equal(Layers[name], components.Unet.ResolvePagLayers(layers).Order(StringComparer.Ordinal));
        Tensor E(string key) => Expected[$"in.sdxl.{key}"];
        if (inpaint)
        {
            using var pipe = new StableDiffusionXLPAGInpaintPipeline(components);
            var request = new StableDiffusionPAGInpaintRequest
            {
                PromptEmbeds = E("prompt_embeds"), NegativePromptEmbeds = E("negative_prompt_embeds"), PooledPromptEmbeds = E("pooled_prompt_embeds"),
                NegativePooledPromptEmbeds = E("negative_pooled_prompt_embeds"), NumInferenceSteps = steps, GuidanceScale = guidance,
                NumImagesPerPrompt = images, Image = Init, MaskImage = Mask, Strength = strength, Height = 64, Width = 80,
                PagScale = pagScale, PagAdaptiveScale = adaptive, PagAppliedLayers = layers,
            };
            StepParity.Check(output, Expected, Tolerance, name, request, seed, r => pipe.Generate(r));
            AssertPagMatters(name, seed, () => pipe.Generate(request with
            {
                PagScale = 0, Generator = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(seed), OutputType = OutputType.Latent,
            }));
        }
        else
        {
            using var pipe = new StableDiffusionXLPAGImg2ImgPipeline(components);
            var request = new StableDiffusionPAGImg2ImgRequest
            {
                PromptEmbeds = E("prompt_embeds"), NegativePromptEmbeds = E("negative_prompt_embeds"), PooledPromptEmbeds = E("pooled_prompt_embeds"),
                NegativePooledPromptEmbeds = E("negative_pooled_prompt_embeds"), NumInferenceSteps = steps, GuidanceScale = guidance,
                NumImagesPerPrompt = images, Image = Init, Strength = strength,
                PagScale = pagScale, PagAdaptiveScale = adaptive, PagAppliedLayers = layers,
            };
            StepParity.Check(output, Expected, Tolerance, name, request, seed, r => pipe.Generate(r));
            AssertPagMatters(name, seed, () => pipe.Generate(request with
            {
                PagScale = 0, Generator = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(seed), OutputType = OutputType.Latent,
            }));
        }
    }

    /// <summary>The same call without PAG (pag_scale 0) lands far from diffusers' PAG latents, so the parity is not vacuous.</summary>
    private void AssertPagMatters(string name, long seed, Func<StableDiffusionPipelineOutput> plain)
    {
        using var result = plain();
        double difference = (result.Tensor! - Expected[$"{name}.latents"]).abs().max().item<float>();
        output.WriteLine($"{name}: without PAG the final latents differ by {difference:G3} (seed {seed})");
        Assert.True(difference > 1e-2, $"{name}: PAG changed the latents by only {difference}");
    }

    /// <summary>
    /// diffusers' PAG inpainting pipelines with PAG off (pag_scale 0) and no CFG blend with <c>init_mask, *_ = mask</c>: the
    /// first image's mask for every image. The fixture's case (two images, the second mask mirrored) matches diffusers at
    /// every step; and it is what the plain inpainting pipeline gives with the first mask twice (the 4-channel UNet reads
    /// the mask only in that blend), not with the two masks.
    /// </summary>
    [Fact]
    public void PagOffWithoutGuidanceBlendsWithTheFirstMask()
    {
        const string name = "sd15_inpaint_pagoff_two_masks";
        using var components = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions());
        using var pagPipe = new StableDiffusionPAGInpaintPipeline(components);
        using var plainPipe = StableDiffusionInpaintPipeline.FromPipe(pagPipe);
        Assert.Empty(Layers[name]); // no PAG processors during diffusers' call
        // The PIL lists [init, init] and [mask, mirrored mask] as tensors in [0, 1] (the same values after preprocessing).
        static Tensor AsTensor(ImageBuffer b) => tensor(b.Pixels, [b.Height, b.Width, b.Channels]).permute(2, 0, 1).to(ScalarType.Float32).div(255).unsqueeze(0);
        using var image = AsTensor(Init).repeat(2, 1, 1, 1);
        using var first = AsTensor(Mask);
        using var both = cat([first, first.flip(3)], 0);
        var request = new StableDiffusionPAGInpaintRequest
        {
            PromptEmbeds = Expected["in.sd15.prompt_embeds"], NegativePromptEmbeds = Expected["in.sd15.negative_prompt_embeds"], NumInferenceSteps = 3,
            GuidanceScale = 1.0, NumImagesPerPrompt = 2, Height = 64, Width = 80, Image = PipelineImage.FromTensor(image),
            MaskImage = PipelineImage.FromTensor(both), PagScale = 0,
        };
        StepParity.Check(output, Expected, Tolerance, name, request, 66, r => pagPipe.Generate(r));

        var plain = new StableDiffusionInpaintRequest
        {
            PromptEmbeds = request.PromptEmbeds, NumInferenceSteps = 3, GuidanceScale = 1.0, NumImagesPerPrompt = 2, Height = 64, Width = 80,
            Strength = 0.9999, Image = request.Image, OutputType = OutputType.Latent,
        };
        Tensor Run(StableDiffusionInpaintRequest r) => plainPipe.Generate(r with { Generator = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(66) }).Tensor!;
        using var pag = pagPipe.Generate(request with { Generator = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(66), OutputType = OutputType.Latent }).Tensor!;
        using var firstTwice = Run(plain with { MaskImage = PipelineImage.FromTensor(cat([first, first], 0)) });
        using var ownMasks = Run(plain with { MaskImage = PipelineImage.FromTensor(both) });
        Assert.Equal(0, (pag - firstTwice).abs().max().item<float>());
        Assert.Equal(0, (pag - ownMasks)[0].abs().max().item<float>());
        Assert.True((pag - ownMasks)[1].abs().max().item<float>() > 1e-2);
    }

    [Fact]
    public void PagImageToImageInputsAreCheckedBeforeCompute()
    {
        using var components = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions());
        using var inpaint = new StableDiffusionPAGInpaintPipeline(components);
        var request = new StableDiffusionPAGInpaintRequest
        {
            PromptEmbeds = Expected["in.sd15.prompt_embeds"], NegativePromptEmbeds = Expected["in.sd15.negative_prompt_embeds"],
            NumInferenceSteps = 1, Height = 64, Width = 80, Image = Init, MaskImage = Mask, GuidanceScale = 6.0,
        };
        // diffusers' StableDiffusionPAGInpaintPipeline fails on padding_mask_crop (whatever the output type) and, under PAG
        // with CFG, on guidance_rescale.
        Assert.Contains("padding_mask_crop", Assert.Throws<ArgumentException>(() => inpaint.Generate(request with { PaddingMaskCrop = 8 })).Message);
        Assert.Contains("guidance_rescale", Assert.Throws<ArgumentException>(() => inpaint.Generate(request with { GuidanceRescale = 0.5 })).Message);
        Assert.Contains("Cannot find PAG layer", Assert.Throws<ArgumentException>(() => inpaint.Generate(request with { PagAppliedLayers = ["down.block_1"] })).Message);
        Assert.Throws<ArgumentException>(() => inpaint.Generate(request with { PagScale = -1 }));
        Assert.Throws<ArgumentException>(() => inpaint.Generate(request with { MaskImage = null }));
        using var i2i = StableDiffusionPAGImg2ImgPipeline.FromPipe(inpaint);
        var i2iRequest = new StableDiffusionPAGImg2ImgRequest
        {
            PromptEmbeds = request.PromptEmbeds, NegativePromptEmbeds = request.NegativePromptEmbeds, NumInferenceSteps = 1, Image = Init,
        };
        Assert.Throws<ArgumentException>(() => i2i.Generate(i2iRequest with { PagAdaptiveScale = double.NaN }));
        Assert.Throws<ArgumentException>(() => i2i.Generate(i2iRequest with { Image = null }));
        // Strength 0.7 of 1 step leaves no step.
        Assert.Throws<ArgumentException>(() => i2i.Generate(i2iRequest with { Strength = 0.7 }));
        // Each pipeline takes its own request: the plain image-to-image pipeline refuses the PAG one and the reverse.
        using var plain = StableDiffusionImg2ImgPipeline.FromPipe(inpaint);
        Assert.Throws<ArgumentException>(() => plain.Generate(i2iRequest));
        // The SDXL PAG pipelines refuse SD components.
        Assert.Throws<ArgumentException>(() => new StableDiffusionXLPAGInpaintPipeline(components));
        Assert.Equal(["mid_block.attentions.0.transformer_blocks.0.attn1"], components.Unet.ResolvePagLayers(["mid"]));
    }
}
