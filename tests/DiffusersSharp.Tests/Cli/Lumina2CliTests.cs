using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Lumina2;
using DiffusersSharp.Tests.Support;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Cli;

/// <summary>generate with the whole tiny Lumina-Image 2.0 folder (Gemma2 and its tokenizer included): the library's images
/// exactly, with the guidance options mapped, and the options the family lacks refused before loading.</summary>
public sealed class Lumina2CliTests : CliTempDirectory
{
    private readonly string _model;

    public Lumina2CliTests() : base("lumina2-cli")
    {
        _model = Out("lumina2");
        TinyLumina2PipelineFolder.Write(_model);
    }

    private ImagePipelineOutput Library(Lumina2Request request)
    {
        using var pipe = Lumina2Pipeline.FromPretrained(_model);
        return pipe.Generate(request);
    }

    [Fact]
    public void GenerateGivesTheLibrarysImages()
    {
        var (code, stdout, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt", "A red fox", "--negative-prompt", "blurry",
            "--steps", "3", "--guidance", "4", "--cfg-truncation", "0.5", "--cfg-normalization", "0", "--width", "48", "--height", "32",
            "--max-sequence-length", "160", "--seed", "5", "--output", Out());
        Assert.True(code == 0, stderr);
        Assert.Single(stdout.Trim().Split('\n'));
        Assert.Contains("Steps: 3, Sampler: FlowMatchEulerDiscrete, CFG scale: 4, Seed: 5", ImageFile.ReadPngText(Out("out.png"))["parameters"]);
        using var expected = Library(new Lumina2Request
        {
            Prompt = "A red fox", NegativePrompt = "blurry", NumInferenceSteps = 3, GuidanceScale = 4, CfgTruncRatio = 0.5, CfgNormalization = false,
            Width = 48, Height = 32, MaxSequenceLength = 160, Generator = new Generator("cpu").ManualSeed(5),
        });
        var image = ImageFile.Load(Out("out.png"));
        Assert.Equal((48, 32), (image.Width, image.Height));
        Assert.Equal(expected.Images![0].Pixels, image.Pixels);
    }

    [Fact]
    public void WithoutASizeTheTrainedSizeRuns()
    {
        // sample_size 8 x the VAE's 8: 64 x 64.
        var (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt", "a boat", "--steps", "1", "--guidance", "1", "--seed", "2", "--output", Out());
        Assert.True(code == 0, stderr);
        var image = ImageFile.Load(Out("out.png"));
        Assert.Equal((64, 64), (image.Width, image.Height));
    }

    [Fact]
    public void TwoLorasGiveTheLibrarysImageOfThemFused()
    {
        // Lumina2LoraParityTests checks the fused weights against diffusers'; here the CLI's wiring (--lora / --lora-scale).
        string peft = Fixtures.Path("local-diffusers/lumina2-lora/pytorch_lora_weights.safetensors"), nometa = Fixtures.Path("local-diffusers/lumina2-lora/no_metadata.safetensors");
        var (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt", "a boat", "--steps", "2", "--guidance", "3", "--width", "32",
            "--height", "32", "--max-sequence-length", "160", "--seed", "4", "--lora", peft, "--lora", nometa,
            "--lora-scale", "0.7", "--lora-scale", "1.3", "--output", Out("lora.png"));
        Assert.True(code == 0, stderr);
        Assert.Contains("fused 37 LoRA layers from pytorch_lora_weights.safetensors at scale 0.7", stderr);
        Assert.Contains("fused 4 LoRA layers from no_metadata.safetensors at scale 1.3", stderr);
        var request = new Lumina2Request
        {
            Prompt = "a boat", NumInferenceSteps = 2, GuidanceScale = 3, Width = 32, Height = 32, MaxSequenceLength = 160,
            Generator = new Generator("cpu").ManualSeed(4),
        };
        using var components = Lumina2Components.FromPretrained(_model, new PipelineLoadOptions());
        components.FuseLora(peft, 0.7);
        components.FuseLora(nometa, 1.3);
        using (var pipe = new Lumina2Pipeline(components))
        using (var expected = pipe.Generate(request)) Assert.Equal(expected.Images![0].Pixels, ImageFile.Load(Out("lora.png")).Pixels);
        using (var plain = Library(request with { Generator = new Generator("cpu").ManualSeed(4) }))
            Assert.NotEqual(plain.Images![0].Pixels, ImageFile.Load(Out("lora.png")).Pixels);
    }

    [Theory]
    [InlineData("img2img", "--image", "IMAGE", "only generates from text")]
    [InlineData("generate", "--scheduler", "euler", "--scheduler does not apply to Lumina-Image 2.0")]
    [InlineData("generate", "--clip-skip", "2", "--clip-skip does not apply to Lumina-Image 2.0")]
    [InlineData("generate", "--cfg-normalization", "0.5", "--cfg-normalization is on (1) or off (0)")]
    [InlineData("generate", "--width", "40", "--width must be a positive multiple of 16 for Lumina-Image 2.0")]
    public void OptionsTheFamilyLacksAreRefusedBeforeLoading(string verb, string option, string value, string message)
    {
        if (value == "IMAGE") value = Fixtures.Path("tiny-sd3/init_image.png");
        if (value == "FILE") File.WriteAllBytes(value = Out("x.safetensors"), []);
        var (code, _, stderr) = CliRunner.Run(verb, "--model", _model, "--prompt", "a", option, value, "--output", Out());
        Assert.NotEqual(0, code);
        Assert.Contains(message, stderr);
        Assert.DoesNotContain("loading", stderr);
    }
}
