using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Tests.Pipelines;
using DiffusersSharp.Tests.Support;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Cli;

/// <summary><c>generate / img2img --redux</c>: the fixture's tiny FLUX.1-Redux prior (tokens of width 96) beside the tiny
/// Flux folder (whose T5 is 96 wide, CLIP's pooled output 32): the CLI's image equals the library's prior + FluxPipeline
/// run, true CFG with a negative prompt runs, and what makes no sense is refused before any weights load (the numbers
/// are checked by FluxPriorReduxParityTests).</summary>
public sealed class FluxReduxCliTests : CliTempDirectory
{
    private readonly string _model;
    private static readonly string Redux = Fixtures.Path(FluxPriorReduxParityTests.Folder);
    private static readonly string Image1 = Fixtures.Path("local-diffusers/flux-redux/image1.png");
    private static readonly string Image2 = Fixtures.Path("local-diffusers/flux-redux/image2.png");

    public FluxReduxCliTests() : base("flux-redux-cli")
    {
        _model = Path.Combine(Dir, "model");
        TinyFluxPipelineFolder.Write(_model);
    }

    private string[] Args(string verb, string output, params string[] extra) => [verb, "--model", _model, "--steps", "2",
        "--width", "32", "--height", "32", "--seed", "5", "--output", output, .. extra];

    [Fact]
    public void GenerateWithReduxAndAPromptGivesTheLibrarysImage()
    {
        var (code, _, stderr) = CliRunner.Run(Args("generate", Out(), "--prompt", "a cat", "--redux", Redux, "--redux-image", Image1,
            "--redux-image", Image2, "--redux-scale", "0.7", "--redux-scale", "1.3", "--redux-pooled-scale", "0.4"));
        Assert.True(code == 0, stderr);
        Assert.Contains("FLUX.1-Redux prior", stderr);

        using var components = FluxComponents.FromPretrained(_model, new PipelineLoadOptions());
        FluxPriorReduxOutput conditioning;
        using (var prior = FluxPriorReduxPipeline.FromPretrained(Redux, new PipelineLoadOptions(), components))
            conditioning = prior.Generate(new FluxPriorReduxRequest
            {
                Images = [ImageFile.LoadRgb(Image1), ImageFile.LoadRgb(Image2)], Prompt = "a cat",
                PromptEmbedsScale = new[] { 0.7, 1.3 }, PooledPromptEmbedsScale = 0.4,
            });
        using (conditioning)
        using (var flux = new FluxPipeline(components))
        using (var generator = new Generator("cpu").ManualSeed(5))
        using (var expected = flux.Generate(new FluxRequest
        {
            PromptEmbeds = conditioning.PromptEmbeds, PooledPromptEmbeds = conditioning.PooledPromptEmbeds, Height = 32, Width = 32,
            NumInferenceSteps = 2, Generator = generator,
        }))
            Assert.Equal(expected.Images![0].Pixels, ImageFile.Load(Out()).Pixels);

        // The image prompt matters: without --redux the same prompt and seed give another image.
        (code, _, stderr) = CliRunner.Run(Args("generate", Out("plain.png"), "--prompt", "a cat"));
        Assert.True(code == 0, stderr);
        Assert.NotEqual(ImageFile.Load(Out()).Pixels, ImageFile.Load(Out("plain.png")).Pixels);
    }

    /// <summary>diffusers' FluxPipeline given prompt_embeds and a negative prompt runs true CFG, the negative side encoded by
    /// its text encoders (512 T5 tokens against the prior's 512 + image tokens); image-to-image takes the embeddings too.</summary>
    [Fact]
    public void TrueCfgWithANegativePromptAndImg2ImgRun()
    {
        var (code, _, stderr) = CliRunner.Run(Args("generate", Out(), "--prompt", "a cat", "--negative-prompt", "blurry", "--true-cfg", "2",
            "--redux", Redux, "--redux-image", Image1));
        Assert.True(code == 0, stderr);
        (code, _, stderr) = CliRunner.Run(Args("img2img", Out("i2i.png"), "--image", Fixtures.Path("tiny-sd3/init_image.png"), "--prompt", "a cat",
            "--redux", Redux, "--redux-image", Image1));
        Assert.True(code == 0, stderr);
    }

    [Theory]
    [InlineData("--redux-image without --redux", "--redux-image needs --redux", "--prompt", "a", "--redux-image", "IMAGE")]
    [InlineData("no image", "--redux needs --redux-image", "--redux", "REDUX")]
    [InlineData("prompt embeds", "cannot be combined", "--redux", "REDUX", "--redux-image", "IMAGE", "--prompt-embeds", "IMAGE")]
    [InlineData("scale count", "--redux-scale is given once for all images or once per --redux-image (1), got 2", "--redux", "REDUX", "--redux-image", "IMAGE", "--redux-scale", "1", "--redux-scale", "2")]
    [InlineData("bad scale", "--redux-pooled-scale must be a finite number", "--redux", "REDUX", "--redux-image", "IMAGE", "--redux-pooled-scale", "x")]
    [InlineData("missing image", "--redux-image not found", "--redux", "REDUX", "--redux-image", "missing.png")]
    [InlineData("zeros of another pooled width", "give --prompt", "--redux", "REDUX", "--redux-image", "IMAGE")]
    [InlineData("not a Redux folder", "not a FLUX.1-Redux prior", "--prompt", "a", "--redux", "MODEL", "--redux-image", "IMAGE")]
    public void NonsenseIsRefusedBeforeAnyWeightsLoad(string what, string message, params string[] extra)
    {
        var args = extra.Select(a => a switch { "REDUX" => Redux, "IMAGE" => Image1, "MODEL" => _model, _ => a }).ToArray();
        var (code, _, stderr) = CliRunner.Run(Args("generate", Out(), args));
        Assert.True(code == 2, $"{what}: {stderr}");
        Assert.Contains(message, stderr);
        Assert.DoesNotContain("loading", stderr);
    }

    [Fact]
    public void InfoDescribesAReduxFolder()
    {
        var (code, stdout, stderr) = CliRunner.Run("info", "--model", Redux);
        Assert.True(code == 0, stderr);
        Assert.Contains("FluxPriorReduxPipeline", stdout);
        Assert.Contains("ReduxImageEncoder", stdout);
        Assert.Contains("SiglipVisionModel", stdout);
        Assert.Contains("image_processor", stdout);
    }

    [Fact]
    public void ReduxOnAModelOtherThanFluxIsRefused()
    {
        var (code, _, stderr) = CliRunner.Run(["generate", "--model", Fixtures.TinySd3Model, "--prompt", "a", "--redux", Redux, "--redux-image", Image1,
            "--output", Out()]);
        Assert.Equal(2, code);
        Assert.Contains("--redux applies to FLUX.1 models", stderr);
        Assert.DoesNotContain("loading", stderr);
    }
}
