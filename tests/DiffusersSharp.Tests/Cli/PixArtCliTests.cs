using System.Globalization;
using System.Text.Json.Nodes;
using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.PixArt;
using DiffusersSharp.Tests.Support;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Cli;

/// <summary>generate and info with PixArt folders (model_index.json PixArtSigmaPipeline / PixArtAlphaPipeline): --scheduler,
/// --eta and --preview-every against the library, and the options and verbs refused for them before loading.</summary>
public sealed class PixArtCliTests : CliTempDirectory
{
    private readonly string _sigma, _alpha;

    public PixArtCliTests() : base("pixart-cli")
    {
        _sigma = Path.Combine(Dir, "sigma");
        _alpha = Path.Combine(Dir, "alpha");
        TinyPixArtPipelineFolder.Write(_sigma);
        TinyPixArtPipelineFolder.Write(_alpha, alpha: true);
    }

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

    /// <summary>
    /// --scheduler swaps the model's scheduler as <c>pipe.scheduler = X.from_config(pipe.scheduler.config)</c> and --eta goes
    /// to a step that takes it: the image is the library's exactly (Euler Ancestral's step noise and DDIM's eta noise from
    /// the seed's generator), and the parameters name the sampler.
    /// </summary>
    [Theory]
    [InlineData("euler_a", null, "EulerAncestralDiscrete")]
    [InlineData("DDIMScheduler", "0.5", "DDIM")]
    public void SwappedSchedulerAndEtaGiveTheLibrarysImage(string scheduler, string? eta, string sampler)
    {
        string[] args = ["generate", "--model", _sigma, "--prompt", "a teddy bear", "--steps", "3", "--width", "48", "--height", "32",
            "--seed", "9", "--max-sequence-length", "16", "--no-resolution-binning", "--scheduler", scheduler, "--output", Out()];
        var (code, _, stderr) = CliRunner.Run(eta is null ? args : [.. args, "--eta", eta]);
        Assert.True(code == 0, stderr);
        var image = ImageFile.Load(Out());
        string parameters = ImageFile.ReadPngText(Out())["parameters"];
        Assert.Contains($"Sampler: {sampler},", parameters);
        using var components = PixArtComponents.FromPretrained(_sigma, new PipelineLoadOptions());
        components.UseScheduler(scheduler);
        using var pipe = new PixArtSigmaPipeline(components);
        using var result = pipe.Generate(new PixArtRequest
        {
            Prompt = "a teddy bear", NumInferenceSteps = 3, Width = 48, Height = 32, MaxSequenceLength = 16, UseResolutionBinning = false,
            Eta = eta is null ? 0 : double.Parse(eta, CultureInfo.InvariantCulture), Generator = new Generator("cpu").ManualSeed(9),
        });
        Assert.Equal(result.Images![0].Pixels, image.Pixels);
    }

    [Fact]
    public void AnUnknownSchedulerIsRefusedBeforeLoading()
    {
        var (code, _, stderr) = CliRunner.Run("generate", "--model", _sigma, "--prompt", "x", "--scheduler", "nope", "--output", Out());
        Assert.Equal(2, code);
        Assert.Contains("Unknown scheduler 'nope'", stderr);
        Assert.DoesNotContain("loading", stderr);
    }

    /// <summary>
    /// --preview-every writes the decoded latents every N steps (not after the last), as for the other families; under
    /// resolution binning at the requested size, as the result: the library's decode of that step's latents exactly.
    /// </summary>
    [Fact]
    public void PreviewEveryWritesTheDecodedStepsAtTheRequestedSize()
    {
        var (code, _, stderr) = CliRunner.Run("generate", "--model", _sigma, "--prompt", "a teddy bear", "--steps", "3", "--width", "120",
            "--height", "200", "--seed", "4", "--max-sequence-length", "16", "--preview-every", "1", "--output", Out("p.png"));
        Assert.True(code == 0, stderr);
        Assert.Equal(["alpha", "p.png", "p.step-1.png", "p.step-2.png", "sigma"],
            Directory.GetFileSystemEntries(Dir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        var preview = ImageFile.Load(Out("p.step-2.png"));
        Assert.Equal((120, 200), (preview.Width, preview.Height));
        Assert.NotEqual(ImageFile.Load(Out("p.png")).Pixels, preview.Pixels);
        using var components = PixArtComponents.FromPretrained(_sigma, new PipelineLoadOptions());
        using var pipe = new PixArtSigmaPipeline(components);
        byte[]? expected = null;
        var request = new PixArtRequest
        {
            Prompt = "a teddy bear", NumInferenceSteps = 3, Width = 120, Height = 200, MaxSequenceLength = 16,
            Generator = new Generator("cpu").ManualSeed(4), OutputType = OutputType.Latent,
        };
        using (pipe.Generate(request with { CallbackOnStepEnd = c => { if (c.Step == 1) expected = pipe.PreviewImages(c.Latents, request)[0].Pixels; } })) { }
        Assert.Equal(expected, preview.Pixels);
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
