using DiffusersSharp.Images;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Pipelines.StableDiffusionXL;
using DiffusersSharp.Tests.Support;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Cli;

/// <summary>
/// An InstructPix2Pix folder (model_index.json StableDiffusionInstructPix2PixPipeline, as timbrooks/instruct-pix2pix:
/// tiny-sd15 with the 8-channel UNet of fixture local-diffusers/instruct-pix2pix) through <c>img2img</c>: the CLI's image
/// equals the library's; the other verbs and the options InstructPix2Pix lacks are refused before any weights load.
/// </summary>
public sealed class InstructPix2PixCliTests : CliTempDirectory
{
    private readonly string _model;
    private readonly string _input = Fixtures.Path("local-diffusers/instruct-pix2pix/input.png");

    public InstructPix2PixCliTests() : base("pix2pix-cli")
    {
        _model = Path.Combine(Dir, "pix2pix");
        TinyInstructPix2PixFolder.Write(_model);
    }

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

/// <summary>
/// An SDXL InstructPix2Pix folder (model_index.json StableDiffusionXLInstructPix2PixPipeline, as
/// diffusers/sdxl-instructpix2pix-768: tiny-sdxl with the 8-channel UNet of fixture local-diffusers/sdxl-instruct-pix2pix)
/// through <c>img2img</c>: the CLI's image equals the library's, at the model's size by default or --width / --height
/// (the image resized to it), with --guidance-rescale and model_index.json's is_cosxl_edit; what the SDXL pipeline lacks
/// is refused before any weights load.
/// </summary>
public sealed class SdxlInstructPix2PixCliTests : CliTempDirectory
{
    private readonly string _model;
    private readonly string _input = Fixtures.Path("local-diffusers/sdxl-instruct-pix2pix/input.png");

    public SdxlInstructPix2PixCliTests() : base("xl-pix2pix-cli")
    {
        _model = Path.Combine(Dir, "xl-pix2pix");
        TinyInstructPix2PixFolder.WriteXL(_model);
    }

    private byte[] Library(string model, StableDiffusionInstructPix2PixRequest request, bool? cosXL = null)
    {
        using var pipe = StableDiffusionXLInstructPix2PixPipeline.FromPretrained(model, isCosXLEdit: cosXL);
        using var result = pipe.Generate(request with
        {
            Prompt = "make it snowy", Image = ImageFile.LoadRgb(_input), NumInferenceSteps = 3, Generator = new Generator("cpu").ManualSeed(5),
        });
        return result.Images![0].Pixels;
    }

    [Fact]
    public void Img2ImgEditsAsTheLibraryDoesAtTheModelSize()
    {
        var run = CliRunner.Run("img2img", "--model", _model, "--image", _input, "--prompt", "make it snowy", "--steps", "3", "--seed", "5",
            "--output", Out());
        Assert.True(run.Code == 0, run.Err);
        string parameters = ImageFile.ReadPngText(Out())["parameters"];
        Assert.Contains("CFG scale: 5", parameters); // SDXL's default guidance
        Assert.DoesNotContain("Denoising strength", parameters);
        var written = ImageFile.Load(Out());
        Assert.Equal((64, 64), (written.Width, written.Height)); // the 60 x 52 input resized to the model's size
        Assert.Equal(Library(_model, new StableDiffusionInstructPix2PixRequest()), written.Pixels);
    }

    [Fact]
    public void SizeImageGuidanceAndRescaleReachThePipeline()
    {
        var run = CliRunner.Run("img2img", "--model", _model, "--image", _input, "--prompt", "make it snowy", "--steps", "3", "--seed", "5",
            "--image-guidance", "1.3", "--width", "56", "--height", "48", "--guidance-rescale", "0.5", "--output", Out());
        Assert.True(run.Code == 0, run.Err);
        Assert.Contains("Image CFG scale: 1.3", ImageFile.ReadPngText(Out())["parameters"]);
        var written = ImageFile.Load(Out());
        Assert.Equal((56, 48), (written.Width, written.Height));
        Assert.Equal(Library(_model, new StableDiffusionInstructPix2PixRequest { ImageGuidanceScale = 1.3, Width = 56, Height = 48, GuidanceRescale = 0.5 }),
            written.Pixels);
    }

    [Fact]
    public void ModelIndexIsCosXLEditScalesTheImageLatents()
    {
        string cosxl = Path.Combine(Dir, "cosxl");
        TinyInstructPix2PixFolder.WriteXL(cosxl);
        string index = Path.Combine(cosxl, "model_index.json");
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(index))!.AsObject();
        json["is_cosxl_edit"] = true;
        File.WriteAllText(index, json.ToJsonString());
        using (var pipe = StableDiffusionXLInstructPix2PixPipeline.FromPretrained(cosxl)) Assert.True(pipe.IsCosXLEdit);
        var run = CliRunner.Run("img2img", "--model", cosxl, "--image", _input, "--prompt", "make it snowy", "--steps", "3", "--seed", "5",
            "--output", Out());
        Assert.True(run.Code == 0, run.Err);
        var written = ImageFile.Load(Out()).Pixels;
        Assert.Equal(Library(_model, new StableDiffusionInstructPix2PixRequest(), cosXL: true), written);
        Assert.NotEqual(Library(cosxl, new StableDiffusionInstructPix2PixRequest(), cosXL: false), written);
    }

    [Theory]
    [InlineData("generate", "is an InstructPix2Pix model")]
    [InlineData("inpaint", "is an InstructPix2Pix model")]
    [InlineData("img2img --strength 0.5", "--strength does not apply to InstructPix2Pix")]
    [InlineData("img2img --clip-skip 1", "--clip-skip does not apply to InstructPix2Pix (diffusers' StableDiffusionXLInstructPix2PixPipeline")]
    public void WhatSdxlInstructPix2PixLacksIsRefusedBeforeLoading(string verbAndOptions, string expected)
    {
        var words = verbAndOptions.Split(' ');
        List<string> args = [words[0], "--model", _model, "--prompt", "x", "--output", Out(), .. words[1..]];
        if (words[0] != "generate") args.AddRange(["--image", _input]);
        if (words[0] == "inpaint") args.AddRange(["--mask", Fixtures.Path("tiny-sdxl/mask.png")]);
        var (code, _, stderr) = CliRunner.Run([.. args]);
        Assert.Equal(2, code);
        Assert.Contains(expected, stderr);
        Assert.DoesNotContain("loading", stderr);
        Assert.False(File.Exists(Out()));
    }
}
