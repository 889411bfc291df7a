using System.Net.Http.Json;
using System.Text.Json;
using DiffusersSharp.Cli.Commands;
using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.AuraFlow;
using DiffusersSharp.Tests.Support;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Cli;

/// <summary>generate with the whole tiny AuraFlow folder (UMT5 and its Llama tokenizer included): the library's images
/// exactly, and the options the family lacks refused before loading.</summary>
public sealed class AuraFlowCliTests : CliTempDirectory
{
    private readonly string _model;

    public AuraFlowCliTests() : base("auraflow-cli")
    {
        _model = Out("auraflow");
        TinyAuraFlowPipelineFolder.Write(_model);
    }

    [Fact]
    public void GenerateGivesTheLibrarysImages()
    {
        var (code, stdout, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt", "A red fox", "--negative-prompt", "blurry",
            "--steps", "3", "--guidance", "4", "--width", "48", "--height", "32", "--max-sequence-length", "40", "--seed", "5", "--output", Out());
        Assert.True(code == 0, stderr);
        Assert.Single(stdout.Trim().Split('\n'));
        Assert.Contains("Steps: 3, Sampler: FlowMatchEulerDiscrete, CFG scale: 4, Seed: 5", ImageFile.ReadPngText(Out("out.png"))["parameters"]);
        using var pipe = AuraFlowPipeline.FromPretrained(_model);
        using var expected = pipe.Generate(new AuraFlowRequest
        {
            Prompt = "A red fox", NegativePrompt = "blurry", NumInferenceSteps = 3, GuidanceScale = 4, Width = 48, Height = 32,
            MaxSequenceLength = 40, Generator = new Generator("cpu").ManualSeed(5),
        });
        var image = ImageFile.Load(Out("out.png"));
        Assert.Equal((48, 32), (image.Width, image.Height));
        Assert.Equal(expected.Images![0].Pixels, image.Pixels);
    }

    [Fact]
    public void TwoLorasGiveTheLibrarysImageOfThemFused()
    {
        // AuraFlowLoraParityTests checks the fused weights against diffusers'; here the CLI's wiring (--lora / --lora-scale).
        string peft = Fixtures.Path("local-diffusers/auraflow-lora/pytorch_lora_weights.safetensors"), nometa = Fixtures.Path("local-diffusers/auraflow-lora/no_metadata.safetensors");
        var (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt", "a boat", "--steps", "2", "--guidance", "3", "--width", "32",
            "--height", "32", "--max-sequence-length", "40", "--seed", "4", "--lora", peft, "--lora", nometa,
            "--lora-scale", "0.7", "--lora-scale", "1.3", "--output", Out("lora.png"));
        Assert.True(code == 0, stderr);
        Assert.Contains("fused 38 LoRA layers from pytorch_lora_weights.safetensors at scale 0.7", stderr);
        Assert.Contains("fused 4 LoRA layers from no_metadata.safetensors at scale 1.3", stderr);
        AuraFlowRequest Request() => new()
        {
            Prompt = "a boat", NumInferenceSteps = 2, GuidanceScale = 3, Width = 32, Height = 32, MaxSequenceLength = 40,
            Generator = new Generator("cpu").ManualSeed(4),
        };
        using var components = AuraFlowComponents.FromPretrained(_model, new PipelineLoadOptions());
        components.FuseLora(peft, 0.7);
        components.FuseLora(nometa, 1.3);
        using (var pipe = new AuraFlowPipeline(components))
        using (var expected = pipe.Generate(Request())) Assert.Equal(expected.Images![0].Pixels, ImageFile.Load(Out("lora.png")).Pixels);
        using var plainPipe = AuraFlowPipeline.FromPretrained(_model);
        using (var plain = plainPipe.Generate(Request())) Assert.NotEqual(plain.Images![0].Pixels, ImageFile.Load(Out("lora.png")).Pixels);
    }

    [Theory]
    [InlineData("img2img", "--image", "IMAGE", "only generates from text")]
    [InlineData("generate", "--scheduler", "euler", "--scheduler does not apply to AuraFlow")]
    [InlineData("generate", "--cfg-truncation", "0.5", "--cfg-truncation applies to Z-Image and Lumina-Image 2.0")]
    [InlineData("generate", "--width", "40", "--width must be a positive multiple of 16 for AuraFlow")]
    public void OptionsTheFamilyLacksAreRefusedBeforeLoading(string verb, string option, string value, string message)
    {
        if (value == "IMAGE") value = Fixtures.Path("tiny-sd3/init_image.png");
        var (code, _, stderr) = CliRunner.Run(verb, "--model", _model, "--prompt", "a", option, value, "--output", Out());
        Assert.NotEqual(0, code);
        Assert.Contains(message, stderr);
        Assert.DoesNotContain("loading", stderr);
    }

    [Fact]
    public void ASizePastThePositionTableIsRefusedBeforeAnyStep()
    {
        // The tiny transformer's 8 x 8 position grid of 2 x 2 patches holds latents up to 16 x 16: 128 x 128 pixels.
        var (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt", "a", "--width", "144", "--height", "32", "--output", Out());
        Assert.NotEqual(0, code);
        Assert.Contains("position grid", stderr);
    }
}

/// <summary><c>serve</c> with the tiny AuraFlow folder: text-to-image equal to the command line's; image-to-image refused.</summary>
public sealed class AuraFlowServeTests : ServeWithAddOn
{
    private string? _model;

    private protected override ServeCommand.Settings Settings
    {
        get
        {
            _model = Out("auraflow");
            TinyAuraFlowPipelineFolder.Write(_model);
            return new() { Model = _model };
        }
    }

    [Fact]
    public async Task TextToImageEqualsTheCommandLineAndImageToImageIsRefused()
    {
        var info = await Http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.Equal(("auraflow", "AuraFlowPipeline"), (info.GetProperty("family").GetString(), info.GetProperty("pipeline").GetString()));
        Assert.Equal(["txt2img"], info.GetProperty("modes").EnumerateArray().Select(m => m.GetString()));
        var result = await ServeApi.Result(Http, new { prompt = "a teddy bear", negative_prompt = "blurry", steps = 2, guidance = 4.0, width = 32, height = 32, seed = 5 });
        AssertSameAsCommandLine(result, "generate", "--model", _model!, "--prompt", "a teddy bear", "--negative-prompt", "blurry", "--steps", "2",
            "--guidance", "4", "--width", "32", "--height", "32", "--seed", "5");
        Assert.Contains("txt2img", await ServeApi.Refusal(Http, new
        {
            mode = "img2img", prompt = "a", image = ServeApi.DataUrl(Fixtures.Path("tiny-sd3/init_image.png")), steps = 1,
        }));
    }
}
