using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Cli;

/// <summary><c>generate --controlnet</c>: the ControlNet pipelines end to end, against diffusers' images of fixture local-diffusers/controlnet.</summary>
public sealed class ControlNetCliTests() : CliTempDirectory("controlnet")
{
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/controlnet/expected.safetensors");

    private static string Fixture(string name) => Fixtures.Path($"local-diffusers/controlnet/{name}");

    [Fact]
    public void GenerateWithAControlNetDrawsDiffusersImage()
    {
        // The fixture's sd15_window case: the prompt embeddings diffusers got, from a file; our PNG is diffusers' float image in 8 bits.
        string embeds = Out("embeds.safetensors");
        SafetensorsWriter.Save(embeds, new Dictionary<string, Tensor>
        {
            ["prompt_embeds"] = Expected["in.sd15.prompt_embeds"], ["negative_prompt_embeds"] = Expected["in.sd15.neg_prompt_embeds"],
        });
        var (code, _, stderr) = CliRunner.Run("generate", "--model", Fixtures.Path("tiny-sd15/model"), "--prompt-embeds", embeds,
            "--controlnet", Fixture("sd15"), "--control-image", Fixture("control.png"), "--controlnet-scale", "1.3",
            "--control-start", "0.1", "--control-end", "0.6", "--steps", "10", "--width", "64", "--height", "64", "--seed", "12", "--output", Out());
        Assert.True(code == 0, stderr);
        Assert.Contains($"ControlNet: {Fixture("sd15")}:1.3 [0.1, 0.6]", ImageFile.ReadPngText(Out())["parameters"]);
        ImageAssert.RoundedFrom(Expected["sd15_window.image"], ImageFile.Load(Out()));

        // Without a size the output takes the control image's (80 x 64).
        (code, _, stderr) = CliRunner.Run("generate", "--model", Fixtures.Path("tiny-sdxl/model"), "--prompt", "edges", "--controlnet", Fixture("sdxl"),
            "--control-image", Fixture("control.png"), "--guess-mode", "--steps", "2", "--seed", "1", "--output", Out("xl.png"));
        Assert.True(code == 0, stderr);
        Assert.Equal((80, 64), (ImageFile.Load(Out("xl.png")).Width, ImageFile.Load(Out("xl.png")).Height));
    }

    private static string Sd3Net => Fixtures.Path("local-diffusers/sd3-controlnet/controlnet");

    [Fact]
    public void GenerateWithAnSd3ControlNetDrawsTheLibrarysImage()
    {
        // The sd3-controlnet fixture's "cli" case, whose float image StableDiffusion3ControlNetParityTests checks against
        // diffusers' (2.4e-5 there: too much for an 8-bit comparison with diffusers at rounding midpoints, unlike the SD 1.5
        // cases). Here the CLI's wiring is checked: embeddings from a file, the scale, and one seed for the noise and the
        // control image's VAE sample (diffusers: generator and torch.manual_seed) give the library call's pixels exactly.
        var shared = Fixtures.Expected();
        string embeds = Out("embeds.safetensors");
        SafetensorsWriter.Save(embeds, new Dictionary<string, Tensor>
        {
            ["prompt_embeds"] = shared["t2i_nocfg.prompt_embeds"], ["pooled_prompt_embeds"] = shared["t2i_nocfg.pooled_prompt_embeds"],
        });
        var (code, _, stderr) = CliRunner.Run("generate", "--model", Fixtures.TinySd3Model, "--prompt-embeds", embeds, "--controlnet", Sd3Net,
            "--control-image", Fixtures.Path("tiny-sd3/init_image.png"), "--controlnet-scale", "0.9", "--guidance", "1", "--steps", "2",
            "--width", "64", "--height", "64", "--seed", "5", "--output", Out());
        Assert.True(code == 0, stderr);
        Assert.Contains($"ControlNet: {Sd3Net}:0.9 [0, 1]", ImageFile.ReadPngText(Out())["parameters"]);

        using var components = StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions(), Sd3Net);
        using var pipe = new StableDiffusion3ControlNetPipeline(components);
        using var library = pipe.Generate(new StableDiffusion3ControlNetRequest
        {
            PromptEmbeds = shared["t2i_nocfg.prompt_embeds"], PooledPromptEmbeds = shared["t2i_nocfg.pooled_prompt_embeds"],
            ControlImage = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), ControlNetConditioningScale = 0.9, GuidanceScale = 1,
            NumInferenceSteps = 2, Width = 64, Height = 64, Generator = new Generator("cpu").ManualSeed(5),
            ControlImageGenerator = new Generator("cpu").ManualSeed(5),
        });
        Assert.Equal(library.Images![0].Pixels, ImageFile.Load(Out()).Pixels);
    }

    private static string Sd3InpaintNet => Fixtures.Path("local-diffusers/sd3-controlnet-inpaint/controlnet");

    [Fact]
    public void InpaintWithAnSd3InpaintingControlNetDrawsTheLibrarysImage()
    {
        // StableDiffusion3ControlNetInpaintingParityTests checks the library against diffusers; here the CLI's wiring: the
        // image to inpaint (--control-image = --image) and --mask as control_image / control_mask, the scale, the default
        // 28 steps overridden, one seed for the noise and the masked image's VAE sample.
        var shared = Fixtures.Expected();
        string embeds = Out("embeds.safetensors");
        SafetensorsWriter.Save(embeds, new Dictionary<string, Tensor>
        {
            ["prompt_embeds"] = shared["t2i_nocfg.prompt_embeds"], ["pooled_prompt_embeds"] = shared["t2i_nocfg.pooled_prompt_embeds"],
        });
        string image = Fixtures.Path("tiny-sd3/init_image.png"), mask = Fixtures.Path("tiny-sd3/mask.png");
        var (code, _, stderr) = CliRunner.Run("inpaint", "--model", Fixtures.TinySd3Model, "--prompt-embeds", embeds, "--image", image, "--mask", mask,
            "--controlnet", Sd3InpaintNet, "--control-image", image, "--controlnet-scale", "0.8", "--guidance", "1", "--steps", "2",
            "--width", "64", "--height", "64", "--seed", "5", "--output", Out());
        Assert.True(code == 0, stderr);
        Assert.Contains($"ControlNet: {Sd3InpaintNet}:0.8 [0, 1]", ImageFile.ReadPngText(Out())["parameters"]);

        using var components = StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions(), Sd3InpaintNet);
        using var pipe = new StableDiffusion3ControlNetInpaintingPipeline(components);
        using var library = pipe.Generate(new StableDiffusion3ControlNetInpaintingRequest
        {
            PromptEmbeds = shared["t2i_nocfg.prompt_embeds"], PooledPromptEmbeds = shared["t2i_nocfg.pooled_prompt_embeds"],
            ControlImage = ImageFile.LoadRgb(image), ControlMask = ImageFile.Load(mask), ControlNetConditioningScale = 0.8, GuidanceScale = 1,
            NumInferenceSteps = 2, Width = 64, Height = 64, Generator = new Generator("cpu").ManualSeed(5),
            ControlImageGenerator = new Generator("cpu").ManualSeed(5),
        });
        Assert.Equal(library.Images![0].Pixels, ImageFile.Load(Out()).Pixels);
    }

    [Fact]
    public void Sd3ControlNetInpaintOptionsAreCheckedBeforeRunning()
    {
        string image = Fixtures.Path("tiny-sd3/init_image.png"), mask = Fixtures.Path("tiny-sd3/mask.png");
        foreach (var (args, reason) in new (string[], string)[]
        {
            (["--controlnet", Sd3InpaintNet, "--control-image", mask], "give the same file as --image"),
            (["--controlnet", Sd3InpaintNet, "--control-image", image, "--strength", "0.5"], "--strength does not apply to SD3 ControlNet inpainting"),
            (["--controlnet", Sd3InpaintNet, "--control-image", image, "--controlnet", Sd3InpaintNet, "--control-image", image], "takes one --controlnet"),
            (["--controlnet", Sd3Net, "--control-image", image], "the masked image's latents and the mask"),
        })
        {
            var (code, _, stderr) = CliRunner.Run(["inpaint", "--model", Fixtures.TinySd3Model, "--prompt", "x", "--steps", "1", "--image", image,
                "--mask", mask, "--output", Out(), .. args]);
            Assert.True(code == 2, $"{string.Join(' ', args)}: exit {code}, {stderr}");
            Assert.Contains(reason, stderr);
        }
    }

    [Fact]
    public void RepeatedControlNetOptionsPairInOrder()
    {
        // The controlnet-modes fixture's "multi" case: two ControlNets, each with its image, scale and window.
        var modes = Fixtures.Expected("local-diffusers/controlnet-modes/expected.safetensors");
        string embeds = Out("embeds.safetensors");
        SafetensorsWriter.Save(embeds, new Dictionary<string, Tensor>
        {
            ["prompt_embeds"] = modes["in.prompt_embeds"], ["negative_prompt_embeds"] = modes["in.neg_prompt_embeds"],
        });
        string second = Fixtures.Path("local-diffusers/controlnet-modes/sd15b");
        var (code, _, stderr) = CliRunner.Run("generate", "--model", Fixtures.Path("tiny-sd15/model"), "--prompt-embeds", embeds,
            "--controlnet", Fixture("sd15"), "--control-image", Fixture("control.png"), "--controlnet-scale", "0.8", "--control-end", "0.7",
            "--controlnet", second, "--control-image", Fixtures.Path("local-diffusers/controlnet-modes/control2.png"), "--controlnet-scale", "1.3",
            "--control-end", "1", "--control-start", "0", "--control-start", "0.3", "--steps", "10", "--seed", "31", "--output", Out());
        Assert.True(code == 0, stderr);
        string parameters = ImageFile.ReadPngText(Out())["parameters"];
        Assert.Contains($"ControlNet 1: {Fixture("sd15")}:0.8 [0, 0.7]", parameters);
        Assert.Contains($"ControlNet 2: {second}:1.3 [0.3, 1]", parameters);
        ImageAssert.RoundedFrom(modes["multi.image"], ImageFile.Load(Out()));
    }

    [Fact]
    public void ControlNetOptionsAreCheckedBeforeLoading()
    {
        string sd15 = Fixtures.Path("tiny-sd15/model");
        foreach (var (args, reason) in new (string[], string)[]
        {
            (["--model", sd15, "--control-image", Fixture("control.png")], "--control-image needs --controlnet"),
            (["--model", sd15, "--controlnet", Fixture("sd15")], "--controlnet needs --control-image"),
            (["--model", sd15, "--controlnet", Fixture("sd15"), "--control-image", Fixture("control.png"), "--control-start", "0.7", "--control-end", "0.5"],
                "0 <= start < end <= 1"),
            (["--model", Fixtures.TinySd3Model, "--controlnet", Fixture("sd15"), "--control-image", Fixture("control.png")],
                "is a ControlNetModel, not an SD3 ControlNet"),
            (["--model", Fixtures.TinySd3Model, "--controlnet", Sd3Net, "--control-image", Fixture("control.png"), "--guess-mode"],
                "--guess-mode does not apply to SD3 ControlNets"),
            (["--model", sd15, "--controlnet", Fixture("sdxl"), "--control-image", Fixture("control.png")], "does not fit this UNet"),
            (["--model", sd15, "--controlnet", Fixture("sd15"), "--controlnet", Fixture("sd15"), "--control-image", Fixture("control.png")],
                "2 --controlnet take 2 --control-image"),
            (["--model", sd15, "--controlnet", Fixture("sd15"), "--controlnet", Fixture("sd15"), "--control-image", Fixture("control.png"),
                "--control-image", Fixture("control.png"), "--controlnet-scale", "1", "--controlnet-scale", "1", "--controlnet-scale", "1"],
                "--controlnet-scale is given once for all ControlNets or once per --controlnet (2), got 3"),
        })
        {
            var (code, _, stderr) = CliRunner.Run(["generate", "--prompt", "x", "--steps", "1", "--output", Out(), .. args]);
            Assert.True(code == 2, $"{string.Join(' ', args)}: exit {code}, {stderr}");
            Assert.Contains(reason, stderr);
        }
    }

    [Fact]
    public void SdxlImg2ImgAndInpaintTakeTheControlNetOptions()
    {
        // The controlnet-sdxl-modes fixture's img2img and inpaint cases, with SDXL's default ControlNet scales (0.8, 1.0).
        string modes = Fixtures.Path("local-diffusers/controlnet-modes");
        var expected = Fixtures.Expected("local-diffusers/controlnet-sdxl-modes/expected.safetensors");
        string embeds = Out("embeds.safetensors");
        SafetensorsWriter.Save(embeds, new Dictionary<string, Tensor>
        {
            ["prompt_embeds"] = expected["in.prompt_embeds"], ["pooled_prompt_embeds"] = expected["in.pooled"],
            ["negative_prompt_embeds"] = expected["in.neg_prompt_embeds"], ["negative_pooled_prompt_embeds"] = expected["in.neg_pooled"],
        });
        string[] common = ["--model", Fixtures.Path("tiny-sdxl/model"), "--prompt-embeds", embeds, "--image", Path.Combine(modes, "init.png"),
            "--controlnet", Fixture("sdxl"), "--control-image", Fixture("control.png")];
        var (code, _, stderr) = CliRunner.Run(["img2img", .. common, "--strength", "0.6", "--steps", "10", "--seed", "71", "--output", Out("i2i.png")]);
        Assert.True(code == 0, stderr);
        Assert.Contains($"ControlNet: {Fixture("sdxl")}:0.8 [0, 1]", ImageFile.ReadPngText(Out("i2i.png"))["parameters"]);
        ImageAssert.RoundedFrom(expected["img2img.image"], ImageFile.Load(Out("i2i.png")));
        (code, _, stderr) = CliRunner.Run(["inpaint", .. common, "--mask", Path.Combine(modes, "mask.png"), "--steps", "8", "--seed", "81", "--output", Out("inp.png")]);
        Assert.True(code == 0, stderr);
        string parameters = ImageFile.ReadPngText(Out("inp.png"))["parameters"];
        Assert.Contains($"ControlNet: {Fixture("sdxl")}:1 [0, 1]", parameters);
        Assert.Contains("Denoising strength: 0.9999", parameters);
        ImageAssert.RoundedFrom(expected["inpaint.image"], ImageFile.Load(Out("inp.png")));
    }

    [Fact]
    public void Img2ImgAndInpaintTakeTheControlNetOptions()
    {
        // The controlnet-modes fixture's img2img and inpaint cases, with their default ControlNet scales (0.8, 0.5).
        string modes = Fixtures.Path("local-diffusers/controlnet-modes");
        var expected = Fixtures.Expected("local-diffusers/controlnet-modes/expected.safetensors");
        string embeds = Out("embeds.safetensors");
        SafetensorsWriter.Save(embeds, new Dictionary<string, Tensor>
        {
            ["prompt_embeds"] = expected["in.prompt_embeds"], ["negative_prompt_embeds"] = expected["in.neg_prompt_embeds"],
        });
        string[] common = ["--model", Fixtures.Path("tiny-sd15/model"), "--prompt-embeds", embeds, "--image", Path.Combine(modes, "init.png"),
            "--controlnet", Fixture("sd15"), "--control-image", Fixture("control.png")];
        var (code, _, stderr) = CliRunner.Run(["img2img", .. common, "--strength", "0.6", "--steps", "10", "--seed", "41", "--output", Out("i2i.png")]);
        Assert.True(code == 0, stderr);
        Assert.Contains($"ControlNet: {Fixture("sd15")}:0.8 [0, 1]", ImageFile.ReadPngText(Out("i2i.png"))["parameters"]);
        ImageAssert.RoundedFrom(expected["img2img.image"], ImageFile.Load(Out("i2i.png")));
        (code, _, stderr) = CliRunner.Run(["inpaint", .. common, "--mask", Path.Combine(modes, "mask.png"), "--steps", "8", "--seed", "51", "--output", Out("inp.png")]);
        Assert.True(code == 0, stderr);
        Assert.Contains($"ControlNet: {Fixture("sd15")}:0.5 [0, 1]", ImageFile.ReadPngText(Out("inp.png"))["parameters"]);
        ImageAssert.RoundedFrom(expected["inpaint.image"], ImageFile.Load(Out("inp.png")));
    }
}
