using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Sana;
using DiffusersSharp.Tests.Support;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Cli;

/// <summary>generate with the whole tiny Sana folder (Gemma2 and its tokenizer included): the library's images exactly,
/// with and without resolution binning, and the options the family lacks refused before loading.</summary>
public sealed class SanaCliTests : CliTempDirectory
{
    private readonly string _model;

    public SanaCliTests() : base("sana-cli")
    {
        _model = Out("sana");
        TinySanaPipelineFolder.Write(_model);
    }

    private SanaOutput Library(SanaRequest request)
    {
        using var pipe = SanaPipeline.FromPretrained(_model);
        return pipe.Generate(request);
    }

    [Fact]
    public void GenerateGivesTheLibrarysImages()
    {
        var (code, stdout, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt", "A Red Fox", "--negative-prompt", "blurry",
            "--steps", "2", "--guidance", "3", "--width", "96", "--height", "64", "--no-resolution-binning", "--max-sequence-length", "40",
            "--seed", "5", "--output", Out());
        Assert.True(code == 0, stderr);
        Assert.Single(stdout.Trim().Split('\n'));
        Assert.Contains("Steps: 2, Sampler: DPMSolverMultistep, CFG scale: 3, Seed: 5", ImageFile.ReadPngText(Out("out.png"))["parameters"]);
        using var expected = Library(new SanaRequest
        {
            Prompt = "A Red Fox", NegativePrompt = "blurry", NumInferenceSteps = 2, GuidanceScale = 3, Width = 96, Height = 64,
            UseResolutionBinning = false, MaxSequenceLength = 40, Generator = new Generator("cpu").ManualSeed(5),
        });
        var image = ImageFile.Load(Out("out.png"));
        Assert.Equal((96, 64), (image.Width, image.Height));
        Assert.Equal(expected.Images![0].Pixels, image.Pixels);
    }

    [Fact]
    public void ResolutionBinningIsTheDefault()
    {
        // 120 x 200 snaps to the 384 x 640 bin of the tiny transformer (sample_size 16) and comes back at 120 x 200.
        var (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt", "a boat", "--steps", "1", "--guidance", "1",
            "--width", "120", "--height", "200", "--max-sequence-length", "24", "--seed", "2", "--output", Out());
        Assert.True(code == 0, stderr);
        using var expected = Library(new SanaRequest
        {
            Prompt = "a boat", NumInferenceSteps = 1, GuidanceScale = 1, Width = 120, Height = 200, MaxSequenceLength = 24,
            Generator = new Generator("cpu").ManualSeed(2),
        });
        var image = ImageFile.Load(Out("out.png"));
        Assert.Equal((120, 200), (image.Width, image.Height));
        Assert.Equal(expected.Images![0].Pixels, image.Pixels);
    }

    [Fact]
    public void TwoLorasGiveTheLibrarysImageOfThemFused()
    {
        // SanaLoraParityTests checks the fused weights against diffusers'; here the CLI's wiring (--lora / --lora-scale).
        string peft = Fixtures.Path("local-diffusers/sana-lora/pytorch_lora_weights.safetensors"), nometa = Fixtures.Path("local-diffusers/sana-lora/no_metadata.safetensors");
        var (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt", "a boat", "--steps", "2", "--guidance", "3", "--width", "64",
            "--height", "64", "--no-resolution-binning", "--max-sequence-length", "24", "--seed", "4", "--lora", peft, "--lora", nometa,
            "--lora-scale", "0.7", "--lora-scale", "1.3", "--output", Out("lora.png"));
        Assert.True(code == 0, stderr);
        Assert.Contains("fused 22 LoRA layers from pytorch_lora_weights.safetensors at scale 0.7", stderr);
        Assert.Contains("fused 5 LoRA layers from no_metadata.safetensors at scale 1.3", stderr);
        var request = new SanaRequest
        {
            Prompt = "a boat", NumInferenceSteps = 2, GuidanceScale = 3, Width = 64, Height = 64, UseResolutionBinning = false, MaxSequenceLength = 24,
            Generator = new Generator("cpu").ManualSeed(4),
        };
        using var components = SanaComponents.FromPretrained(_model, new PipelineLoadOptions());
        components.FuseLora(peft, 0.7);
        components.FuseLora(nometa, 1.3);
        using (var pipe = new SanaPipeline(components))
        using (var expected = pipe.Generate(request)) Assert.Equal(expected.Images![0].Pixels, ImageFile.Load(Out("lora.png")).Pixels);
        using (var plain = Library(request with { Generator = new Generator("cpu").ManualSeed(4) }))
            Assert.NotEqual(plain.Images![0].Pixels, ImageFile.Load(Out("lora.png")).Pixels);
    }

    [Theory]
    [InlineData("img2img", "--image", "IMAGE", "only generates from text")]
    [InlineData("generate", "--scheduler", "euler", "--scheduler does not apply to Sana")]
    [InlineData("generate", "--clip-skip", "2", "--clip-skip does not apply to Sana")]
    [InlineData("generate", "--prompt-2", "b", "--prompt-2 does not apply to Sana")]
    public void OptionsTheFamilyLacksAreRefusedBeforeLoading(string verb, string option, string value, string message)
    {
        if (value == "IMAGE") value = Fixtures.Path("tiny-sd3/init_image.png");
        if (value == "FILE") File.WriteAllBytes(value = Out("x.safetensors"), []);
        var (code, _, stderr) = CliRunner.Run(verb, "--model", _model, "--prompt", "a", option, value, "--output", Out());
        Assert.NotEqual(0, code);
        Assert.Contains(message, stderr);
        Assert.DoesNotContain("loading", stderr);
    }

    [Fact]
    public void ASanaSprintFolderRunsSanaSprintPipeline()
    {
        string sprint = Out("sprint");
        TinySanaPipelineFolder.Write(sprint, sprint: true);
        var (code, _, stderr) = CliRunner.Run("generate", "--model", sprint, "--prompt", "a boat", "--width", "96", "--height", "64",
            "--no-resolution-binning", "--max-sequence-length", "24", "--seed", "4", "--output", Out("sprint.png"));
        Assert.True(code == 0, stderr);
        Assert.Contains("Steps: 2, Sampler: SCM, CFG scale: 4.5, Seed: 4", ImageFile.ReadPngText(Out("sprint.png"))["parameters"]);
        using var pipe = SanaSprintPipeline.FromPretrained(sprint);
        using var expected = pipe.Generate(new SanaSprintRequest
        {
            Prompt = "a boat", Width = 96, Height = 64, UseResolutionBinning = false, MaxSequenceLength = 24, Generator = new Generator("cpu").ManualSeed(4),
        });
        Assert.Equal(expected.Images![0].Pixels, ImageFile.Load(Out("sprint.png")).Pixels);
        var (refused, _, refusal) = CliRunner.Run("generate", "--model", sprint, "--prompt", "a", "--negative-prompt", "b", "--output", Out("x.png"));
        Assert.NotEqual(0, refused);
        Assert.Contains("--negative-prompt does not apply to SANA-Sprint", refusal);
    }

    [Fact]
    public void Img2ImgWithASanaSprintFolderRunsSanaSprintImg2ImgPipeline()
    {
        string sprint = Out("sprint");
        TinySanaPipelineFolder.Write(sprint, sprint: true);
        string init = Fixtures.Path("tiny-sd3/init_image.png");
        var (code, _, stderr) = CliRunner.Run("img2img", "--model", sprint, "--prompt", "a boat", "--image", init, "--strength", "0.9",
            "--width", "96", "--height", "64", "--no-resolution-binning", "--max-sequence-length", "24", "--seed", "4", "--output", Out("i2i.png"));
        Assert.True(code == 0, stderr);
        Assert.Contains("Denoising strength: 0.9", ImageFile.ReadPngText(Out("i2i.png"))["parameters"]);
        using var pipe = SanaSprintImg2ImgPipeline.FromPretrained(sprint);
        using var expected = pipe.Generate(new SanaSprintImg2ImgRequest
        {
            Prompt = "a boat", Image = ImageFile.LoadRgb(init), Strength = 0.9, Width = 96, Height = 64, UseResolutionBinning = false,
            MaxSequenceLength = 24, Generator = new Generator("cpu").ManualSeed(4),
        });
        Assert.Equal(expected.Images![0].Pixels, ImageFile.Load(Out("i2i.png")).Pixels);
        var (refused, _, refusal) = CliRunner.Run("inpaint", "--model", sprint, "--prompt", "a", "--image", init, "--mask", init, "--output", Out("x.png"));
        Assert.NotEqual(0, refused);
        Assert.Contains("no SANA-Sprint inpainting pipeline", refusal);
    }

    [Fact]
    public void SizesOffTheLatentGridAreRefusedWithoutBinning()
    {
        var (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt", "a", "--width", "48", "--no-resolution-binning", "--output", Out());
        Assert.NotEqual(0, code);
        Assert.Contains("--width must be a multiple of 32 for Sana", stderr);
    }
}
