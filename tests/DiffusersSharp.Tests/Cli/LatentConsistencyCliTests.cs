using DiffusersSharp.Images;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Tests.Support;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Cli;

/// <summary>
/// A latent consistency model folder (model_index.json LatentConsistencyModelPipeline, as SimianLuo/LCM_Dreamshaper_v7:
/// tiny-sd15 with the time_cond_proj_dim UNet of fixture local-diffusers/lcm and the LCMScheduler) through
/// <c>generate</c> and <c>img2img</c>: the CLI's images equal the library's LCM pipelines'; inpainting (diffusers has no
/// LCM inpainting pipeline) and the options the LCM pipelines lack are refused before any weights load.
/// </summary>
public sealed class LatentConsistencyCliTests : CliTempDirectory
{
    private readonly string _model;
    private readonly string _input = Fixtures.Path("tiny-sd15/init_image.png");

    public LatentConsistencyCliTests() : base("lcm-cli")
    {
        _model = Path.Combine(Dir, "lcm");
        TinyLcmFolder.Write(_model);
    }

    [Fact]
    public void GenerateRunsTheLcmPipelineAsTheLibraryDoes()
    {
        var run = CliRunner.Run("generate", "--model", _model, "--prompt", "a red square", "--seed", "7", "--guidance", "6", "--output", Out());
        Assert.True(run.Code == 0, run.Err);
        string parameters = ImageFile.ReadPngText(Out())["parameters"];
        Assert.Contains("Steps: 4", parameters);
        Assert.Contains("CFG scale: 6", parameters);
        var written = ImageFile.Load(Out());

        using var pipe = LatentConsistencyModelPipeline.FromPretrained(_model);
        using var result = pipe.Generate(new LatentConsistencyModelRequest
        {
            Prompt = "a red square", GuidanceScale = 6.0, Generator = new Generator("cpu").ManualSeed(7),
        });
        Assert.Equal(result.Images![0].Pixels, written.Pixels);
    }

    [Fact]
    public void Img2ImgRunsTheLcmImg2ImgPipelineAsTheLibraryDoes()
    {
        var run = CliRunner.Run("img2img", "--model", _model, "--image", _input, "--prompt", "a red square", "--seed", "8", "--strength", "0.6",
            "--steps", "3", "--output", Out());
        Assert.True(run.Code == 0, run.Err);
        Assert.Contains("Denoising strength: 0.6", ImageFile.ReadPngText(Out())["parameters"]);
        var written = ImageFile.Load(Out());

        using var pipe = LatentConsistencyModelImg2ImgPipeline.FromPretrained(_model);
        using var result = pipe.Generate(new LatentConsistencyModelImg2ImgRequest
        {
            Prompt = "a red square", Image = ImageFile.LoadRgb(_input), Strength = 0.6, NumInferenceSteps = 3,
            Generator = new Generator("cpu").ManualSeed(8),
        });
        Assert.Equal(result.Images![0].Pixels, written.Pixels);
    }

    [Theory]
    [InlineData("inpaint", "diffusers has no LCM inpainting pipeline")]
    [InlineData("generate --negative-prompt blurry", "--negative-prompt (LCM runs no classifier-free guidance")]
    [InlineData("generate --guidance-rescale 0.5", "--guidance-rescale does not apply to latent consistency models")]
    [InlineData("generate --scheduler euler", "--scheduler other than lcm")]
    [InlineData("img2img --width 64", "--width / --height with img2img")]
    public void WhatTheLcmPipelinesLackIsRefusedBeforeLoading(string verbAndOptions, string expected)
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
}
