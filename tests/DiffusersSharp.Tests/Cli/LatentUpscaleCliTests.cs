using System.Text.Json.Nodes;
using DiffusersSharp.Images;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Cli;

/// <summary>
/// A latent x2 upscaler folder (model_index.json StableDiffusionLatentUpscalePipeline: the K-UNet of fixture
/// local-diffusers/sd-latent-upscale with tiny-sd15's VAE and text encoder) through <c>img2img</c>: the CLI's image equals
/// the library's (twice the input); the library's prompt path equals its embeddings path (last hidden states and pooled
/// output of the text encoder); the other verbs and the options the pipeline lacks are refused before any weights load.
/// </summary>
public sealed class LatentUpscaleCliTests : CliTempDirectory
{
    private readonly string _model;
    private readonly string _input = Fixtures.Path("tiny-sd15/init_image.png");

    public LatentUpscaleCliTests() : base("latent-upscale-cli")
    {
        _model = Path.Combine(Dir, "latent-upscaler");
        TinyLatentUpscalerFolder.Write(_model);
    }

    [Fact]
    public void Img2ImgUpscalesAsTheLibraryDoes()
    {
        var run = CliRunner.Run("img2img", "--model", _model, "--image", _input, "--prompt", "a red house", "--negative-prompt", "blurry",
            "--steps", "2", "--seed", "5", "--output", Out());
        Assert.True(run.Code == 0, run.Err);
        string parameters = ImageFile.ReadPngText(Out())["parameters"];
        Assert.Contains("CFG scale: 9", parameters); // the latent upscaler's default guidance
        Assert.Contains("Sampler: EulerDiscrete", parameters);
        var written = ImageFile.Load(Out());
        Assert.Equal((128, 128), (written.Width, written.Height)); // the 64 x 64 input, twice

        using var pipe = StableDiffusionLatentUpscalePipeline.FromPretrained(_model);
        using var result = pipe.Generate(new StableDiffusionLatentUpscaleRequest
        {
            Prompt = "a red house", NegativePrompt = "blurry", Image = ImageFile.LoadRgb(_input), NumInferenceSteps = 2,
            Generator = new Generator("cpu").ManualSeed(5),
        });
        Assert.Equal(result.Images![0].Pixels, written.Pixels);
    }

    [Fact]
    public void PromptsEncodeAsTheTextEncodersLastHiddenStatesAndPooledOutput()
    {
        using var pipe = StableDiffusionLatentUpscalePipeline.FromPretrained(_model);
        var components = pipe.Components;
        Tensor Ids(string text) => PromptTokens.Ids(components.Tokenizer!, [text], components.Tokenizer!.ModelMaxLength, CPU, "tokenizer", null);
        using var scope = NewDisposeScope();
        using var prompt = components.TextEncoder!.Forward(Ids("a red house"));
        using var empty = components.TextEncoder.Forward(Ids(""));
        var request = new StableDiffusionLatentUpscaleRequest { Image = ImageFile.LoadRgb(_input), NumInferenceSteps = 2, OutputType = OutputType.Latent };
        using var fromPrompt = pipe.Generate(request with { Prompt = "a red house", Generator = new Generator("cpu").ManualSeed(9) });
        using var fromEmbeds = pipe.Generate(request with
        {
            PromptEmbeds = prompt.HiddenStates[^1], PooledPromptEmbeds = prompt.PooledOutput,
            NegativePromptEmbeds = empty.HiddenStates[^1], NegativePooledPromptEmbeds = empty.PooledOutput, Generator = new Generator("cpu").ManualSeed(9),
        });
        Assert.Equal(0, (fromPrompt.Tensor! - fromEmbeds.Tensor!).abs().max().item<float>());
    }

    [Theory]
    [InlineData("generate", "is a latent x2 upscaler")]
    [InlineData("inpaint", "is a latent x2 upscaler")]
    [InlineData("img2img --strength 0.5", "--strength does not apply to latent upscalers")]
    [InlineData("img2img --width 64", "--width / --height (the output is twice the image) does not apply to latent upscalers")]
    [InlineData("img2img --num-images 2", "--num-images other than 1 does not apply to latent upscalers")]
    [InlineData("img2img --eta 0.5", "--eta does not apply to latent upscalers")]
    [InlineData("img2img --scheduler ddim", "--scheduler other than euler")]
    [InlineData("img2img --noise-level 20", "--noise-level applies to x4 upscalers")]
    [InlineData("img2img --freeu 0.9,0.2,1.2,1.4", "the latent upscaler's K-diffusion blocks have no FreeU")]
    public void WhatTheLatentUpscalerLacksIsRefusedBeforeLoading(string verbAndOptions, string expected)
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
    public void InfoReportsTheFullSizeLatentUpscalerAsDiffusersBuildsIt()
    {
        string full = Fixtures.Path("local-diffusers/sd-latent-upscale/full-size");
        var counts = JsonNode.Parse(File.ReadAllText(Path.Combine(full, "counts.json")))!;
        var (code, stdout, stderr) = CliRunner.Run("info", "--model", full);
        Assert.True(code == 0, stderr);
        var json = JsonNode.Parse(stdout)!;
        Assert.Equal(StableDiffusionLatentUpscalePipeline.PipelineClass, (string?)json["pipeline"]);
        foreach (string name in new[] { "unet", "vae", "text_encoder" })
        {
            var c = json["components"]![name]!;
            Assert.Equal((long)counts[name]!["parameters"]!, (long)c["parameters"]!);
            Assert.Equal((long)counts[name]!["tensors"]!, (long)c["tensors"]!);
        }
    }

    [Fact]
    public void LorasAreRefusedBeforeLoading()
    {
        var (code, _, stderr) = CliRunner.Run("img2img", "--model", _model, "--image", _input, "--prompt", "x", "--output", Out(),
            "--lora", Fixtures.Path("tiny-sd15/model/unet/config.json"));
        Assert.Equal(2, code);
        Assert.Contains("--lora does not apply to latent upscalers", stderr);
    }
}
