using System.Text.Json.Nodes;
using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Chroma;
using DiffusersSharp.Tests.Support;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Cli;

/// <summary>generate, img2img and info with a Chroma folder (model_index.json ChromaPipeline): the library's images exactly,
/// diffusers' defaults, --prompt-embeds with masks, previews, and the options and verbs refused before loading.</summary>
public sealed class ChromaCliTests : CliTempDirectory
{
    private readonly string _model;

    public ChromaCliTests() : base("chroma-cli")
    {
        _model = Path.Combine(Dir, "chroma");
        TinyChromaPipelineFolder.Write(_model);
    }

    private ChromaOutput Library<T>(T request) where T : ChromaRequest
    {
        using var components = ChromaComponents.FromPretrained(_model, new PipelineLoadOptions());
        if (request is ChromaImg2ImgRequest image)
        {
            using var img2img = new ChromaImg2ImgPipeline(components);
            return img2img.Generate(image);
        }
        using var pipe = new ChromaPipeline(components);
        return pipe.Generate(request);
    }

    [Fact]
    public void GenerateWithANegativePromptGivesTheLibrarysImage()
    {
        var (code, stdout, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt", "a teddy bear", "--negative-prompt", "blurry",
            "--steps", "2", "--guidance", "4", "--width", "48", "--height", "32", "--seed", "7", "--max-sequence-length", "16", "--num-images", "2",
            "--output", Out());
        Assert.True(code == 0, stderr);
        Assert.Equal([Path.GetFullPath(Out("out-1.png")), Path.GetFullPath(Out("out-2.png"))], stdout.Trim().Split('\n').Select(l => l.Trim()));
        string parameters = ImageFile.ReadPngText(Out("out-1.png"))["parameters"];
        Assert.StartsWith("a teddy bear\nNegative prompt: blurry\n", parameters);
        Assert.Contains("Steps: 2, Sampler: FlowMatchEulerDiscrete, CFG scale: 4, Seed: 7", parameters);
        Assert.Contains("Mode: txt2img", parameters);
        using var expected = Library(new ChromaRequest
        {
            Prompt = "a teddy bear", NegativePrompt = "blurry", NumInferenceSteps = 2, GuidanceScale = 4, Width = 48, Height = 32,
            MaxSequenceLength = 16, NumImagesPerPrompt = 2, Generator = new Generator("cpu").ManualSeed(7),
        });
        for (int i = 0; i < 2; i++)
        {
            var image = ImageFile.Load(Out($"out-{i + 1}.png"));
            Assert.Equal((48, 32), (image.Width, image.Height));
            Assert.Equal(expected.Images![i].Pixels, image.Pixels);
        }
        Assert.NotEqual(expected.Images![0].Pixels, expected.Images[1].Pixels);
    }

    [Fact]
    public void DefaultsAreDiffusers()
    {
        // 35 steps and guidance 5.0 (ChromaPipeline), strength 0.9 (ChromaImg2ImgPipeline).
        var (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt", "x", "--width", "32", "--height", "32", "--seed", "1",
            "--max-sequence-length", "8", "--output", Out());
        Assert.True(code == 0, stderr);
        Assert.Contains("Steps: 35, Sampler: FlowMatchEulerDiscrete, CFG scale: 5,", ImageFile.ReadPngText(Out())["parameters"]);
        (code, _, stderr) = CliRunner.Run("img2img", "--model", _model, "--prompt", "x", "--image", Fixtures.Path("tiny-sd3/init_image.png"),
            "--width", "32", "--height", "32", "--steps", "3", "--seed", "1", "--max-sequence-length", "8", "--output", Out("i.png"));
        Assert.True(code == 0, stderr);
        string parameters = ImageFile.ReadPngText(Out("i.png"))["parameters"];
        Assert.Contains("Denoising strength: 0.9", parameters);
        Assert.Contains("Mode: img2img", parameters);
    }

    [Fact]
    public void Img2ImgGivesTheLibrarysImage()
    {
        string input = Fixtures.Path("tiny-sd3/init_image.png");
        var (code, _, stderr) = CliRunner.Run("img2img", "--model", _model, "--prompt", "a red ball", "--image", input, "--strength", "0.7",
            "--steps", "4", "--guidance", "1", "--width", "64", "--height", "48", "--seed", "3", "--max-sequence-length", "16", "--output", Out());
        Assert.True(code == 0, stderr);
        var image = ImageFile.Load(Out());
        Assert.Equal((64, 48), (image.Width, image.Height));
        Assert.Contains("Denoising strength: 0.7", ImageFile.ReadPngText(Out())["parameters"]);
        using var expected = Library(new ChromaImg2ImgRequest
        {
            Image = ImageFile.LoadRgb(input), Strength = 0.7, Prompt = "a red ball", NumInferenceSteps = 4, GuidanceScale = 1, Width = 64, Height = 48,
            MaxSequenceLength = 16, Generator = new Generator("cpu").ManualSeed(3),
        });
        Assert.Equal(expected.Images![0].Pixels, image.Pixels);
    }

    [Fact]
    public void PromptEmbeddingsWithTheirMasksGiveTheLibrarysImage()
    {
        var fixture = Fixtures.Expected("local-diffusers/chroma/expected.safetensors");
        string file = Out("embeds.safetensors");
        SafetensorsWriter.Save(file, new Dictionary<string, TorchSharp.torch.Tensor>
        {
            ["prompt_embeds"] = fixture["in.prompt_embeds"], ["prompt_attention_mask"] = fixture["in.prompt_attention_mask"],
            ["negative_prompt_embeds"] = fixture["in.negative_prompt_embeds"], ["negative_prompt_attention_mask"] = fixture["in.negative_prompt_attention_mask"],
        });
        var (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt-embeds", file, "--steps", "2", "--width", "32", "--height", "32",
            "--seed", "2", "--output", Out());
        Assert.True(code == 0, stderr);
        using var expected = Library(new ChromaRequest
        {
            PromptEmbeds = fixture["in.prompt_embeds"], PromptAttentionMask = fixture["in.prompt_attention_mask"],
            NegativePromptEmbeds = fixture["in.negative_prompt_embeds"], NegativePromptAttentionMask = fixture["in.negative_prompt_attention_mask"],
            NumInferenceSteps = 2, Width = 32, Height = 32, Generator = new Generator("cpu").ManualSeed(2),
        });
        Assert.Equal(expected.Images![0].Pixels, ImageFile.Load(Out()).Pixels);

        SafetensorsWriter.Save(file, new Dictionary<string, TorchSharp.torch.Tensor> { ["prompt_embeds"] = fixture["in.prompt_embeds"] });
        var (refused, _, error) = CliRunner.Run("generate", "--model", _model, "--prompt-embeds", file, "--steps", "2", "--width", "32", "--height", "32",
            "--output", Out("no-mask.png"));
        Assert.Equal(2, refused);
        Assert.Contains("prompt_attention_mask", error);
    }

    [Fact]
    public void PreviewEveryWritesTheDecodedSteps()
    {
        var (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt", "a teddy bear", "--steps", "3", "--width", "48",
            "--height", "32", "--seed", "4", "--max-sequence-length", "16", "--preview-every", "1", "--output", Out("p.png"));
        Assert.True(code == 0, stderr);
        Assert.Equal(["chroma", "p.png", "p.step-1.png", "p.step-2.png"], Directory.GetFileSystemEntries(Dir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        var preview = ImageFile.Load(Out("p.step-2.png"));
        Assert.Equal((48, 32), (preview.Width, preview.Height));
        Assert.NotEqual(ImageFile.Load(Out("p.png")).Pixels, preview.Pixels);
    }

    [Theory]
    [InlineData("--freeu", "0.9,0.2,1.2,1.4")]
    [InlineData("--true-cfg", "2")]
    [InlineData("--scheduler", "euler")]
    [InlineData("--prompt-2", "x")]
    [InlineData("--clip-skip", "1")]
    [InlineData("--eta", "0.5")]
    [InlineData("--guidance-rescale", "0.5")]
    [InlineData("--no-t5", null)]
    [InlineData("--width", "40")]
    public void OptionsChromaDoesNotHaveAreRefusedBeforeLoading(string option, string? value)
    {
        string[] args = ["generate", "--model", _model, "--prompt", "x", "--output", Out()];
        var (code, _, stderr) = CliRunner.Run(value is null ? [.. args, option] : [.. args, option, value]);
        Assert.Equal(2, code);
        Assert.Contains(option, stderr);
        Assert.DoesNotContain("loading", stderr);
        Assert.False(File.Exists(Out()));
    }

    [Fact]
    public void ALoraGivesTheLibrarysImageOfItFused()
    {
        // ChromaLoraParityTests checks the fused weights against diffusers'; here the CLI's wiring.
        string lora = Fixtures.Path("local-diffusers/chroma-lora/pytorch_lora_weights.safetensors");
        var (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt", "a teddy bear", "--steps", "2", "--width", "32",
            "--height", "32", "--seed", "5", "--max-sequence-length", "16", "--lora", lora, "--lora-scale", "0.7", "--output", Out());
        Assert.True(code == 0, stderr);
        Assert.Contains("Lora: pytorch_lora_weights.safetensors:0.7", ImageFile.ReadPngText(Out())["parameters"]);
        using var components = ChromaComponents.FromPretrained(_model, new PipelineLoadOptions());
        Assert.Equal(43, components.FuseLora(lora, 0.7));
        using var pipe = new ChromaPipeline(components);
        using var expected = pipe.Generate(new ChromaRequest
        {
            Prompt = "a teddy bear", NumInferenceSteps = 2, Width = 32, Height = 32, MaxSequenceLength = 16, Generator = new Generator("cpu").ManualSeed(5),
        });
        Assert.Equal(expected.Images![0].Pixels, ImageFile.Load(Out()).Pixels);
    }

    [Fact]
    public void InpaintIsRefusedBeforeLoading()
    {
        var (code, _, stderr) = CliRunner.Run("inpaint", "--model", _model, "--prompt", "x", "--image", Fixtures.Path("tiny-sd3/init_image.png"),
            "--mask", Fixtures.Path("tiny-sd3/mask.png"), "--output", Out());
        Assert.Equal(2, code);
        Assert.Contains("no Chroma inpainting pipeline", stderr);
        Assert.DoesNotContain("loading", stderr);
    }

    [Fact]
    public void InfoDescribesAChromaFolderAndCountsTheFullSizeTransformerFromItsConfig()
    {
        var (code, stdout, stderr) = CliRunner.Run("info", "--model", _model);
        Assert.True(code == 0, stderr);
        var json = JsonNode.Parse(stdout)!;
        Assert.Equal("ChromaPipeline", (string?)json["pipeline"]);
        var components = json["components"]!.AsObject();
        Assert.Equal(["scheduler", "text_encoder", "tokenizer", "transformer", "vae"], components.Select(c => c.Key).Order(StringComparer.Ordinal));
        Assert.Equal("ChromaTransformer2DModel", (string?)components["transformer"]!["class"]);

        // A transformer folder with Chroma1-HD's config.json only: counted on the meta device, as diffusers builds it.
        string full = Out("full-transformer");
        Directory.CreateDirectory(full);
        File.WriteAllText(Path.Combine(full, "config.json"), """
            {"_class_name": "ChromaTransformer2DModel", "_diffusers_version": "0.36.0", "approximator_hidden_dim": 5120,
             "approximator_layers": 5, "approximator_num_channels": 64, "attention_head_dim": 128, "axes_dims_rope": [16, 56, 56],
             "in_channels": 64, "joint_attention_dim": 4096, "num_attention_heads": 24, "num_layers": 19, "num_single_layers": 38,
             "out_channels": null, "patch_size": 1}
            """);
        (code, stdout, stderr) = CliRunner.Run("info", "--model", full);
        Assert.True(code == 0, stderr);
        var transformer = JsonNode.Parse(stdout)!["components"]!["full-transformer"]!;
        Assert.Equal("config", (string?)transformer["source"]);
        Assert.Equal(8_899_983_424L, (long)transformer["parameters"]!);
        Assert.Equal(1023L, (long)transformer["tensors"]!);
    }
}
