using System.Text.Json.Nodes;
using DiffusersSharp.Images;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Cli;

/// <summary>generate and info with PixArt folders (model_index.json PixArtSigmaPipeline / PixArtAlphaPipeline), and the
/// options and verbs refused for them before loading.</summary>
public sealed class PixArtCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pixart-cli").FullName;
    private readonly string _sigma, _alpha;

    public PixArtCliTests()
    {
        _sigma = Path.Combine(_dir, "sigma");
        _alpha = Path.Combine(_dir, "alpha");
        TinyPixArtPipelineFolder.Write(_sigma);
        TinyPixArtPipelineFolder.Write(_alpha, alpha: true);
    }

    public void Dispose() => Directory.Delete(_dir, true);

    private string Out(string name = "out.png") => Path.Combine(_dir, name);

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void GenerateWritesTheRequestedSizeReproducibly(bool alpha)
    {
        string model = alpha ? _alpha : _sigma;
        string[] Args(string output) => ["generate", "--model", model, "--prompt", "a teddy bear", "--negative-prompt", "blurry",
            "--steps", "2", "--guidance", "4.5", "--width", "48", "--height", "32", "--seed", "7", "--max-sequence-length", "16",
            "--no-resolution-binning", "--output", output];
        var (code, stdout, stderr) = CliRunner.Run(Args(Out()));
        Assert.True(code == 0, stderr);
        Assert.Equal(Path.GetFullPath(Out()), stdout.Trim());
        var image = ImageFile.Load(Out());
        Assert.Equal((48, 32), (image.Width, image.Height));
        string parameters = ImageFile.ReadPngText(Out())["parameters"];
        Assert.Contains("CFG scale: 4.5", parameters);
        Assert.Contains("Sampler: DPMSolverMultistep", parameters);
        var again = CliRunner.Run(Args(Out("again.png")));
        Assert.Equal(0, again.Code);
        Assert.Equal(image.Pixels, ImageFile.Load(Out("again.png")).Pixels);
        var other = CliRunner.Run(["generate", "--model", model, "--prompt", "a teddy bear", "--steps", "2", "--width", "48", "--height", "32",
            "--seed", "8", "--max-sequence-length", "16", "--no-resolution-binning", "--output", Out("other.png")]);
        Assert.Equal(0, other.Code);
        Assert.NotEqual(image.Pixels, ImageFile.Load(Out("other.png")).Pixels);
    }

    [Theory]
    [InlineData("--scheduler", "euler")]
    [InlineData("--clip-skip", "1")]
    [InlineData("--prompt-2", "x")]
    [InlineData("--true-cfg", "2")]
    [InlineData("--lora", "missing.safetensors")]
    [InlineData("--width", "40")]
    public void OptionsPixArtDoesNotHaveAreRefusedBeforeLoading(string option, string value)
    {
        var (code, _, stderr) = CliRunner.Run("generate", "--model", _sigma, "--prompt", "x", option, value, "--no-resolution-binning", "--output", Out());
        Assert.Equal(2, code);
        Assert.Contains(option, stderr);
        Assert.DoesNotContain("loading", stderr);
        Assert.False(File.Exists(Out()));
    }

    /// <summary>
    /// Without --no-resolution-binning the CLI bins as diffusers' call does by default: 200 x 120 runs at the tiny Σ's
    /// 320 x 192 bin and comes back at 200 x 120, the library's image exactly.
    /// </summary>
    [Fact]
    public void GenerateBinsTheSizeAsDiffusersDoesByDefault()
    {
        var (code, _, stderr) = CliRunner.Run("generate", "--model", _sigma, "--prompt", "a teddy bear", "--steps", "2", "--width", "120",
            "--height", "200", "--seed", "5", "--max-sequence-length", "16", "--output", Out());
        Assert.True(code == 0, stderr);
        var image = ImageFile.Load(Out());
        Assert.Equal((120, 200), (image.Width, image.Height));
        using var components = DiffusersSharp.Pipelines.PixArt.PixArtComponents.FromPretrained(_sigma, new DiffusersSharp.Pipelines.PipelineLoadOptions());
        using var pipe = new DiffusersSharp.Pipelines.PixArt.PixArtSigmaPipeline(components);
        using var result = pipe.Generate(new DiffusersSharp.Pipelines.PixArt.PixArtRequest
        {
            Prompt = "a teddy bear", NumInferenceSteps = 2, Width = 120, Height = 200, MaxSequenceLength = 16,
            Generator = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(5),
        });
        Assert.Equal(result.Images![0].Pixels, image.Pixels);
        var (refused, _, error) = CliRunner.Run("generate", "--model", Fixtures.Path("tiny-sd15/model"), "--prompt", "x", "--no-resolution-binning", "--output", Out("sd.png"));
        Assert.Equal(2, refused);
        Assert.Contains("--no-resolution-binning applies to PixArt", error);
    }

    [Theory]
    [InlineData("img2img")]
    [InlineData("inpaint")]
    public void ImageVerbsAreRefusedBeforeLoading(string verb)
    {
        string image = Fixtures.Path("tiny-sdxl/init_image.png"), mask = Fixtures.Path("tiny-sdxl/mask.png");
        string[] args = verb == "img2img"
            ? [verb, "--model", _sigma, "--prompt", "x", "--image", image, "--output", Out()]
            : [verb, "--model", _sigma, "--prompt", "x", "--image", image, "--mask", mask, "--output", Out()];
        var (code, _, stderr) = CliRunner.Run(args);
        Assert.Equal(2, code);
        Assert.Contains("only generates from text", stderr);
        Assert.DoesNotContain("loading", stderr);
    }

    [Fact]
    public void InfoDescribesAPixArtFolder()
    {
        var (code, stdout, stderr) = CliRunner.Run("info", "--model", _alpha);
        Assert.True(code == 0, stderr);
        var json = JsonNode.Parse(stdout)!;
        Assert.Equal("PixArtAlphaPipeline", (string?)json["pipeline"]);
        var components = json["components"]!.AsObject();
        Assert.Equal(["scheduler", "text_encoder", "tokenizer", "transformer", "vae"], components.Select(c => c.Key).Order(StringComparer.Ordinal));
        Assert.Equal("PixArtTransformer2DModel", (string?)components["transformer"]!["class"]);
        Assert.Equal("T5EncoderModel", (string?)components["text_encoder"]!["class"]);
        Assert.Equal("DPMSolverMultistepScheduler", (string?)components["scheduler"]!["class"]);
    }
}
