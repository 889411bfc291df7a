using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Tests.Support;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Cli;

/// <summary>
/// A FLUX.1 control folder (model_index.json FluxControlPipeline, as FLUX.1-Canny-dev / Depth-dev) through the verbs:
/// --control-image without --controlnet is its control image, in generate, img2img and inpaint; the CLI's image equals
/// the library's; what the model lacks, and a lone --control-image for other models, are refused before any weights load.
/// </summary>
public sealed class FluxControlCliTests : CliTempDirectory
{
    private readonly string _model;
    private readonly string _image = Fixtures.Path("tiny-sd3/init_image.png"), _mask = Fixtures.Path("tiny-sd3/mask.png");
    private readonly string _control = Fixtures.Path("local-diffusers/controlnet/control.png");

    public FluxControlCliTests() : base("flux-control-cli")
    {
        _model = Path.Combine(Dir, "canny");
        TinyFluxPipelineFolder.Write(_model, seed: 4, pipelineClass: FluxComponents.ControlPipelineClass, inChannels: 128);
    }

    private string[] Common(string output) => ["--model", _model, "--prompt", "a teddy bear", "--steps", "2", "--width", "48",
        "--height", "32", "--seed", "3", "--max-sequence-length", "16", "--output", output];

    [Fact]
    public void GenerateWithAControlFolderEqualsTheLibrarysFluxControlPipeline()
    {
        var run = CliRunner.Run(["generate", .. Common(Out()), "--control-image", _control]);
        Assert.True(run.Code == 0, run.Err);
        Assert.Contains("CFG scale: 3.5,", ImageFile.ReadPngText(Out())["parameters"]); // diffusers' FluxControlPipeline default

        using var pipe = FluxControlPipeline.FromPretrained(_model);
        using var result = pipe.Generate(new FluxControlRequest
        {
            Prompt = "a teddy bear", ControlImage = ImageFile.LoadRgb(_control), NumInferenceSteps = 2, Width = 48, Height = 32,
            MaxSequenceLength = 16, Generator = new Generator("cpu").ManualSeed(3),
        });
        Assert.Equal(result.Images![0].Pixels, ImageFile.Load(Out()).Pixels);
    }

    [Fact]
    public void Img2ImgAndInpaintRunTheControlPipelines()
    {
        var run = CliRunner.Run(["img2img", .. Common(Out("i2i.png")), "--image", _image, "--control-image", _control, "--strength", "0.5"]);
        Assert.True(run.Code == 0, run.Err);
        string parameters = ImageFile.ReadPngText(Out("i2i.png"))["parameters"];
        Assert.Contains("Mode: img2img", parameters);
        Assert.Contains("CFG scale: 7,", parameters);
        run = CliRunner.Run(["inpaint", .. Common(Out("inpaint.png")), "--image", _image, "--mask", _mask, "--control-image", _control]);
        Assert.True(run.Code == 0, run.Err);
        Assert.Contains("Mode: inpaint", ImageFile.ReadPngText(Out("inpaint.png"))["parameters"]);
    }

    [Theory]
    [InlineData("generate", "FLUX.1 control model")]
    [InlineData("generate --control-image CONTROL --true-cfg 2 --negative-prompt x", "--true-cfg and --negative-prompt do not apply to FLUX.1 control models")]
    [InlineData("inpaint --control-image CONTROL --padding-mask-crop 8", "--padding-mask-crop does not apply to FLUX.1 control models")]
    [InlineData("generate --control-image CONTROL --controlnet CONTROLNET", "--controlnet applies to FLUX.1 text-to-image models")]
    [InlineData("generate --control-image CONTROL --control-image CONTROL", "without --controlnet (FLUX.1-Canny-dev / Depth-dev), once")]
    public void WhatTheModelLacksIsRefusedBeforeLoading(string verbAndOptions, string expected)
    {
        var words = verbAndOptions.Replace("CONTROLNET", Fixtures.Path("local-diffusers/flux-controlnet/controlnet")).Replace("CONTROL", _control).Split(' ');
        List<string> args = [words[0], .. Common(Out()), .. words[1..]];
        if (words[0] != "generate") args.AddRange(["--image", _image]);
        if (words[0] == "inpaint") args.AddRange(["--mask", _mask]);
        var (code, _, stderr) = CliRunner.Run([.. args]);
        Assert.Equal(2, code);
        Assert.Contains(expected, stderr);
        Assert.DoesNotContain("loading", stderr);
        Assert.False(File.Exists(Out()));
    }

    /// <summary>
    /// FLUX.1-dev with a FLUX.1-Canny / Depth-style LoRA (--lora whose x_embedder is twice as wide) is a control model, as
    /// diffusers' FluxControlPipeline.from_pretrained + load_lora_weights makes it: the CLI's image equals the library's,
    /// and a run without --control-image is refused before any weights load (the header tells).
    /// </summary>
    [Fact]
    public void AControlLoraMakesFluxDevAControlModel()
    {
        string dev = Path.Combine(Dir, "dev"), lora = Fixtures.Path("local-diffusers/flux-lora-layouts/control.safetensors");
        TinyFluxPipelineFolder.Write(dev, seed: 4);
        string[] common = [.. Common(Out()).Select(a => a == _model ? dev : a), "--lora", lora, "--lora-scale", "0.75"];
        var run = CliRunner.Run(["generate", .. common, "--control-image", _control]);
        Assert.True(run.Code == 0, run.Err);

        using var components = FluxComponents.FromPretrained(dev, new PipelineLoadOptions());
        components.FuseLora(lora, 0.75);
        using var pipe = new FluxControlPipeline(components);
        using var result = pipe.Generate(new FluxControlRequest
        {
            Prompt = "a teddy bear", ControlImage = ImageFile.LoadRgb(_control), NumInferenceSteps = 2, Width = 48, Height = 32,
            MaxSequenceLength = 16, Generator = new Generator("cpu").ManualSeed(3),
        });
        Assert.Equal(result.Images![0].Pixels, ImageFile.Load(Out()).Pixels);

        File.Delete(Out());
        var (code, _, stderr) = CliRunner.Run(["generate", .. common]);
        Assert.Equal(2, code);
        Assert.Contains("FLUX.1 control model", stderr);
        Assert.DoesNotContain("loading", stderr);
        Assert.False(File.Exists(Out()));
    }

    [Fact]
    public void ALoneControlImageNeedsAControlModel()
    {
        var (code, _, stderr) = CliRunner.Run("generate", "--model", Fixtures.Path("tiny-sd15/model"), "--prompt", "x", "--control-image", _control,
            "--output", Out());
        Assert.Equal(2, code);
        Assert.Contains("--control-image needs --controlnet (or a FLUX.1 control model", stderr);
    }
}
