using DiffusersSharp.Images;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Tests.Support;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Cli;

/// <summary>
/// An InstructPix2Pix folder (model_index.json StableDiffusionInstructPix2PixPipeline, as timbrooks/instruct-pix2pix:
/// tiny-sd15 with the 8-channel UNet of fixture local-diffusers/instruct-pix2pix) through <c>img2img</c>: the CLI's image
/// equals the library's; the other verbs and the options InstructPix2Pix lacks are refused before any weights load.
/// </summary>
public sealed class InstructPix2PixCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pix2pix-cli").FullName;
    private readonly string _model;
    private readonly string _input = Fixtures.Path("local-diffusers/instruct-pix2pix/input.png");

    public InstructPix2PixCliTests()
    {
        _model = Path.Combine(_dir, "pix2pix");
        TinyInstructPix2PixFolder.Write(_model);
    }

    public void Dispose() => Directory.Delete(_dir, true);

    private string Out(string name = "out.png") => Path.Combine(_dir, name);

    [Fact]
    public void Img2ImgEditsAsTheLibraryDoes()
    {
        var run = CliRunner.Run("img2img", "--model", _model, "--image", _input, "--prompt", "make it snowy", "--steps", "3", "--seed", "5",
            "--image-guidance", "1.2", "--output", Out());
        Assert.True(run.Code == 0, run.Err);
        string parameters = ImageFile.ReadPngText(Out())["parameters"];
        Assert.Contains("Image CFG scale: 1.2", parameters);
        Assert.DoesNotContain("Denoising strength", parameters);
        var written = ImageFile.Load(Out());
        Assert.Equal((56, 48), (written.Width, written.Height)); // the 60 x 52 input rounded down to multiples of 8

        using var pipe = StableDiffusionInstructPix2PixPipeline.FromPretrained(_model);
        using var result = pipe.Generate(new StableDiffusionInstructPix2PixRequest
        {
            Prompt = "make it snowy", Image = ImageFile.LoadRgb(_input), NumInferenceSteps = 3, ImageGuidanceScale = 1.2,
            Generator = new Generator("cpu").ManualSeed(5),
        });
        Assert.Equal(result.Images![0].Pixels, written.Pixels);
    }

    [Theory]
    [InlineData("generate", "is an InstructPix2Pix model")]
    [InlineData("inpaint", "is an InstructPix2Pix model")]
    [InlineData("img2img --strength 0.5", "--strength does not apply to InstructPix2Pix")]
    [InlineData("img2img --width 64", "--width / --height does not apply to InstructPix2Pix")]
    public void WhatInstructPix2PixLacksIsRefusedBeforeLoading(string verbAndOptions, string expected)
    {
        var words = verbAndOptions.Split(' ');
        List<string> args = [words[0], "--model", _model, "--prompt", "x", "--output", Out(), .. words[1..]];
        if (words[0] != "generate") args.AddRange(["--image", _input]);
        if (words[0] == "inpaint") args.AddRange(["--mask", Fixtures.Path("tiny-sd15/mask.png")]);
        var (code, _, stderr) = CliRunner.Run([.. args]);
        Assert.Equal(2, code);
        Assert.Contains(expected, stderr);
        Assert.DoesNotContain("loading", stderr);
        Assert.False(File.Exists(Out()));
    }

    [Fact]
    public void ImageGuidanceNeedsAnInstructPix2PixModel()
    {
        var (code, _, stderr) = CliRunner.Run("img2img", "--model", Fixtures.Path("tiny-sd15/model"), "--image", _input, "--prompt", "x",
            "--image-guidance", "1.5", "--output", Out());
        Assert.Equal(2, code);
        Assert.Contains("--image-guidance applies to InstructPix2Pix models", stderr);
    }
}
