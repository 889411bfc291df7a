using System.Text.Json.Nodes;
using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Cli;

/// <summary>
/// An x4 upscaler folder (model_index.json StableDiffusionUpscalePipeline: the tiny upscaler of fixture
/// local-diffusers/sd-upscale with tiny-sd15's text encoder) through <c>img2img</c>: the CLI's image equals the library's
/// (four times the input); the library's prompt path equals its prompt-embeddings path; the other verbs, the options the
/// upscaler lacks and --noise-level out of range are refused before any weights load; <c>info</c> reports the full-size
/// x4 upscaler's counts as diffusers and transformers build them.
/// </summary>
public sealed class UpscaleCliTests : CliTempDirectory
{
    private readonly string _model;
    private readonly string _input = Fixtures.Path("local-diffusers/sd-upscale/input_nonsquare.png");

    public UpscaleCliTests() : base("upscale-cli")
    {
        _model = Path.Combine(Dir, "upscaler");
        TinyUpscalerFolder.Write(_model);
    }

    [Fact]
    public void Img2ImgUpscalesAsTheLibraryDoes()
    {
        var run = CliRunner.Run("img2img", "--model", _model, "--image", _input, "--prompt", "a red house", "--negative-prompt", "blurry",
            "--steps", "3", "--seed", "5", "--noise-level", "40", "--output", Out());
        Assert.True(run.Code == 0, run.Err);
        string parameters = ImageFile.ReadPngText(Out())["parameters"];
        Assert.Contains("Noise level: 40", parameters);
        Assert.Contains("CFG scale: 9", parameters); // the upscaler's default guidance
        Assert.Contains("Sampler: DDIM", parameters);
        Assert.DoesNotContain("Denoising strength", parameters);
        var written = ImageFile.Load(Out());
        Assert.Equal((80, 48), (written.Width, written.Height)); // the 22 x 13 input rounded down to 20 x 12, times 4

        using var pipe = StableDiffusionUpscalePipeline.FromPretrained(_model);
        using var result = pipe.Generate(new StableDiffusionUpscaleRequest
        {
            Prompt = "a red house", NegativePrompt = "blurry", Image = ImageFile.LoadRgb(_input), NumInferenceSteps = 3, NoiseLevel = 40,
            Generator = new Generator("cpu").ManualSeed(5),
        });
        Assert.Equal(result.Images![0].Pixels, written.Pixels);
    }

    [Fact]
    public void PromptsEncodeAsGivenEmbeddingsWouldAndTheDefaultNoiseLevelIs20()
    {
        using var pipe = StableDiffusionUpscalePipeline.FromPretrained(_model);
        Assert.Equal(350, pipe.Components.MaxNoiseLevel);
        var request = new StableDiffusionUpscaleRequest
        {
            Prompt = "a red house", Image = ImageFile.LoadRgb(_input), NumInferenceSteps = 2, OutputType = OutputType.Latent,
        };
        Assert.Equal(20, request.NoiseLevel);
        using var encoded = pipe.Components.CreatePromptEncoder().Encode(request, doClassifierFreeGuidance: true, CPU);
        using var fromPrompt = pipe.Generate(request with { Generator = new Generator("cpu").ManualSeed(9) });
        using var fromEmbeds = pipe.Generate(request with
        {
            Prompt = null, PromptEmbeds = encoded.PromptEmbeds, NegativePromptEmbeds = encoded.NegativePromptEmbeds, Generator = new Generator("cpu").ManualSeed(9),
        });
        Assert.Equal(0, (fromPrompt.Tensor! - fromEmbeds.Tensor!).abs().max().item<float>());
    }

    [Theory]
    [InlineData("generate", "is an x4 upscaler")]
    [InlineData("inpaint", "is an x4 upscaler")]
    [InlineData("img2img --strength 0.5", "--strength (the image is noised by --noise-level instead) does not apply to x4 upscalers")]
    [InlineData("img2img --width 64", "--width / --height (the output is four times the image) does not apply to x4 upscalers")]
    [InlineData("img2img --guidance-rescale 0.5", "--guidance-rescale does not apply to x4 upscalers")]
    [InlineData("img2img --image-guidance 1.5", "--image-guidance applies to InstructPix2Pix models")]
    [InlineData("img2img --noise-level 351", "--noise-level must be at most the model's max_noise_level, 350")]
    public void WhatTheUpscalerLacksIsRefusedBeforeLoading(string verbAndOptions, string expected)
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
    public void NoiseLevelNeedsAnUpscaler()
    {
        var (code, _, stderr) = CliRunner.Run("img2img", "--model", Fixtures.Path("tiny-sd15/model"), "--image", _input, "--prompt", "x",
            "--noise-level", "20", "--output", Out());
        Assert.Equal(2, code);
        Assert.Contains("--noise-level applies to x4 upscalers", stderr);
        (code, _, stderr) = CliRunner.Run("img2img", "--model", _model, "--image", _input, "--prompt", "x", "--noise-level", "-1", "--output", Out());
        Assert.Equal(2, code);
        Assert.Contains("--noise-level must be >= 0", stderr);
    }

    [Fact]
    public void InfoReportsTheFullSizeUpscalerAsDiffusersBuildsIt()
    {
        string full = Fixtures.Path("local-diffusers/sd-upscale/full-size");
        var counts = JsonNode.Parse(File.ReadAllText(Path.Combine(full, "counts.json")))!;
        var (code, stdout, stderr) = CliRunner.Run("info", "--model", full);
        Assert.True(code == 0, stderr);
        var json = JsonNode.Parse(stdout)!;
        Assert.Equal(StableDiffusionUpscalePipeline.PipelineClass, (string?)json["pipeline"]);
        foreach (string name in new[] { "unet", "vae", "text_encoder" })
        {
            var c = json["components"]![name]!;
            Assert.Equal("config", (string?)c["source"]);
            Assert.Equal((long)counts[name]!["parameters"]!, (long)c["parameters"]!);
            Assert.Equal((long)counts[name]!["tensors"]!, (long)c["tensors"]!);
        }
        Assert.Equal("DDPMScheduler", (string?)json["components"]!["low_res_scheduler"]!["class"]);
    }
}
