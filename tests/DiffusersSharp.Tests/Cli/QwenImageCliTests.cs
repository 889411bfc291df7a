using DiffusersSharp.Cli;
using DiffusersSharp.Cli.Commands;
using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.QwenImage;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Cli;

/// <summary>generate and img2img with the tiny Qwen-Image folder of fixture local-diffusers/qwenimage (model_index.json
/// QwenImagePipeline without text encoder) and --prompt-embeds: the library's images exactly (generate, img2img,
/// inpaint), diffusers' defaults (true_cfg_scale 4 applied only with a negative), and the options refused before loading.</summary>
public sealed class QwenImageCliTests : CliTempDirectory, IDisposable
{
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/qwenimage/expected.safetensors");

    public QwenImageCliTests() : base("qwenimage-cli") { }

    private static string Model => LocalDiffusersQwenImage.Folder;

    private QwenImageOutput Library<T>(T request) where T : QwenImageRequest
    {
        using var components = QwenImageComponents.FromPretrained(Model, new PipelineLoadOptions { LoadTextEncoders = false });
        if (request is QwenImageInpaintRequest inpaint)
        {
            using var inpainting = new QwenImageInpaintPipeline(components);
            return inpainting.Generate(inpaint);
        }
        if (request is QwenImageImg2ImgRequest image)
        {
            using var img2img = new QwenImageImg2ImgPipeline(components);
            return img2img.Generate(image);
        }
        using var pipe = new QwenImagePipeline(components);
        return pipe.Generate(request);
    }

    /// <summary>Writes the fixture's two padded prompts (and negatives, when asked) with their masks to a --prompt-embeds file.</summary>
    private string EmbedsFile(bool negatives)
    {
        string file = Out("embeds.safetensors");
        var tensors = new Dictionary<string, Tensor>
        {
            ["prompt_embeds"] = _expected["in.prompt_embeds"], ["prompt_embeds_mask"] = _expected["in.prompt_embeds_mask"],
        };
        if (negatives)
            (tensors["negative_prompt_embeds"], tensors["negative_prompt_embeds_mask"]) = (_expected["in.negative_prompt_embeds"], _expected["in.negative_prompt_embeds_mask"]);
        SafetensorsWriter.Save(file, tensors);
        return file;
    }

    [Fact]
    public void GenerateWithPromptEmbeddingsGivesTheLibrarysImages()
    {
        string file = EmbedsFile(negatives: true);
        var (code, stdout, stderr) = CliRunner.Run("generate", "--model", Model, "--prompt-embeds", file, "--steps", "2", "--guidance", "2.5",
            "--width", "80", "--height", "48", "--seed", "5", "--output", Out());
        Assert.True(code == 0, stderr);
        Assert.Equal(2, stdout.Trim().Split('\n').Length);
        Assert.Contains("Steps: 2, Sampler: FlowMatchEulerDiscrete, CFG scale: 2.5, Seed: 5", ImageFile.ReadPngText(Out("out-1.png"))["parameters"]);
        using var expected = Library(new QwenImageRequest
        {
            PromptEmbeds = _expected["in.prompt_embeds"], PromptEmbedsMask = _expected["in.prompt_embeds_mask"],
            NegativePromptEmbeds = _expected["in.negative_prompt_embeds"], NegativePromptEmbedsMask = _expected["in.negative_prompt_embeds_mask"],
            NumInferenceSteps = 2, TrueCfgScale = 2.5, Width = 80, Height = 48, Generator = new Generator("cpu").ManualSeed(5),
        });
        for (int i = 0; i < 2; i++)
        {
            var image = ImageFile.Load(Out($"out-{i + 1}.png"));
            Assert.Equal((80, 48), (image.Width, image.Height));
            Assert.Equal(expected.Images![i].Pixels, image.Pixels);
        }
        Assert.NotEqual(expected.Images![0].Pixels, expected.Images[1].Pixels);
    }

    [Fact]
    public void DefaultsAreDiffusersAndImg2ImgRuns()
    {
        // 50 steps and true_cfg_scale 4 (unused without a negative); strength 0.6 for img2img.
        string file = EmbedsFile(negatives: false);
        var (code, _, stderr) = CliRunner.Run("img2img", "--model", Model, "--prompt-embeds", file, "--image", Fixtures.Path("tiny-sd3/init_image.png"),
            "--width", "32", "--height", "32", "--seed", "3", "--steps", "4", "--output", Out());
        Assert.True(code == 0, stderr);
        string parameters = ImageFile.ReadPngText(Out("out-1.png"))["parameters"];
        Assert.Contains("Steps: 4, Sampler: FlowMatchEulerDiscrete, CFG scale: 4, Seed: 3", parameters);
        Assert.Contains("Denoising strength: 0.6", parameters);
        Assert.Contains("Mode: img2img", parameters);
        using var expected = Library(new QwenImageImg2ImgRequest
        {
            PromptEmbeds = _expected["in.prompt_embeds"], PromptEmbedsMask = _expected["in.prompt_embeds_mask"], Width = 32, Height = 32,
            NumInferenceSteps = 4, Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), Generator = new Generator("cpu").ManualSeed(3),
        });
        Assert.Equal(expected.Images![0].Pixels, ImageFile.Load(Out("out-1.png")).Pixels);
        Assert.Equal(expected.Images![1].Pixels, ImageFile.Load(Out("out-2.png")).Pixels);
    }

    [Fact]
    public void InpaintGivesTheLibrarysImage()
    {
        string file = EmbedsFile(negatives: false);
        string image = Fixtures.Path("tiny-sd3/init_image.png"), mask = Fixtures.Path("tiny-sd3/mask.png");
        var (code, _, stderr) = CliRunner.Run("inpaint", "--model", Model, "--prompt-embeds", file, "--image", image, "--mask", mask,
            "--width", "32", "--height", "32", "--seed", "4", "--steps", "3", "--strength", "0.9", "--output", Out());
        Assert.True(code == 0, stderr);
        Assert.Contains("Mode: inpaint", ImageFile.ReadPngText(Out("out-1.png"))["parameters"]);
        using var expected = Library(new QwenImageInpaintRequest
        {
            PromptEmbeds = _expected["in.prompt_embeds"], PromptEmbedsMask = _expected["in.prompt_embeds_mask"], Width = 32, Height = 32,
            NumInferenceSteps = 3, Strength = 0.9, Image = ImageFile.LoadRgb(image), MaskImage = ImageFile.Load(mask), Generator = new Generator("cpu").ManualSeed(4),
        });
        Assert.Equal(expected.Images![0].Pixels, ImageFile.Load(Out("out-1.png")).Pixels);
    }

    [Fact]
    public void LorasAreFusedAsTheLibraryFusesThem()
    {
        string file = EmbedsFile(negatives: false), kohya = Fixtures.Path("local-diffusers/qwenimage-lora/kohya.safetensors");
        var (code, _, stderr) = CliRunner.Run("generate", "--model", Model, "--prompt-embeds", file, "--lora", kohya, "--lora-scale", "0.9",
            "--width", "32", "--height", "32", "--seed", "8", "--steps", "2", "--output", Out());
        Assert.True(code == 0, stderr);
        Assert.Contains("fused 8 LoRA layers from kohya.safetensors at scale 0.9", stderr);
        Assert.Contains("Lora: kohya.safetensors:0.9", ImageFile.ReadPngText(Out("out-1.png"))["parameters"]);
        using var components = QwenImageComponents.FromPretrained(Model, new PipelineLoadOptions { LoadTextEncoders = false });
        var request = new QwenImageRequest
        {
            PromptEmbeds = _expected["in.prompt_embeds"], PromptEmbedsMask = _expected["in.prompt_embeds_mask"], Width = 32, Height = 32,
            NumInferenceSteps = 2, Generator = new Generator("cpu").ManualSeed(8),
        };
        using var pipe = new QwenImagePipeline(components);
        using var plain = pipe.Generate(request);
        components.FuseLora(kohya, 0.9);
        using var expected = pipe.Generate(request with { Generator = new Generator("cpu").ManualSeed(8) });
        Assert.Equal(expected.Images![0].Pixels, ImageFile.Load(Out("out-1.png")).Pixels);
        Assert.NotEqual(plain.Images![0].Pixels, expected.Images[0].Pixels);
    }

    [Theory]
    [InlineData("inpaint", "--guidance-rescale", "0.5", "--guidance-rescale does not apply to Qwen-Image")]
    [InlineData("generate", "--scheduler", "euler", "--scheduler does not apply to Qwen-Image")]
    [InlineData("generate", "--true-cfg", "2", "--true-cfg (Qwen-Image runs real CFG")]
    [InlineData("generate", "--width", "40", "multiple of 16 for Qwen-Image")]
    public void FamilyLimitsAreRefusedBeforeLoading(string verb, string option, string? value, string message)
    {
        string file = EmbedsFile(negatives: false);
        var args = new List<string> { verb, "--model", Model, "--prompt-embeds", file, "--output", Out() };
        if (verb == "inpaint") args.AddRange(["--image", Fixtures.Path("tiny-sd3/init_image.png"), "--mask", Fixtures.Path("tiny-sd3/mask.png")]);
        args.Add(option);
        if (value is not null) args.Add(value);
        var (code, _, stderr) = CliRunner.Run([.. args]);
        Assert.NotEqual(0, code);
        Assert.Contains(message, stderr);
        Assert.DoesNotContain("loading", stderr);
    }

    [Fact]
    public void WithoutNegativePromptTheTextEncoderIsNotLoaded()
    {
        string file = EmbedsFile(negatives: false);
        using var model = LoadedModel.Load(new CliOutput(TextWriter.Null, TextWriter.Null), new GenerateSettings { Model = Model, PromptEmbeds = file }, default);
        Assert.NotNull(model.QwenImage);
        Assert.Null(model.QwenImage!.TextEncoder);
        Assert.Equal(["txt2img", "img2img", "inpaint"], model.Modes);
    }

    /// <summary>Frees the fixture's tensors, then deletes the folder.</summary>
    void IDisposable.Dispose()
    {
        foreach (var t in _expected.Values) t.Dispose();
        Dispose();
    }
}

/// <summary>generate with the whole tiny Qwen-Image folder (text encoder and tokenizer included): prompt strings give the
/// library's images, and the same images as their encoded embeddings.</summary>
public sealed class QwenImagePromptCliTests : CliTempDirectory
{
    private readonly string _model;

    public QwenImagePromptCliTests() : base("qwenimage-prompt-cli")
    {
        _model = Path.Combine(Dir, "qwenimage");
        TinyQwenImagePipelineFolder.Write(_model, newLayout: true);
    }

    [Fact]
    public void PromptsGiveTheLibrarysImagesAndTheirEmbeddingsDoToo()
    {
        var (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt", "A photo of a cat", "--negative-prompt", "blurry",
            "--steps", "2", "--guidance", "3", "--width", "32", "--height", "48", "--seed", "9", "--num-images", "2", "--output", Out());
        Assert.True(code == 0, stderr);
        Assert.StartsWith("A photo of a cat\nNegative prompt: blurry\n", ImageFile.ReadPngText(Out("out-1.png"))["parameters"]);
        using var pipe = QwenImagePipeline.FromPretrained(_model);
        var request = new QwenImageRequest
        {
            Prompt = "A photo of a cat", NegativePrompt = "blurry", NumInferenceSteps = 2, TrueCfgScale = 3, Width = 32, Height = 48,
            NumImagesPerPrompt = 2, Generator = new Generator("cpu").ManualSeed(9),
        };
        using var expected = pipe.Generate(request);
        for (int i = 0; i < 2; i++) Assert.Equal(expected.Images![i].Pixels, ImageFile.Load(Out($"out-{i + 1}.png")).Pixels);

        // The prompt's embeddings (34 template tokens dropped, mask all ones) give the same images.
        var (embeds, mask) = pipe.EncodePrompt(["A photo of a cat"]);
        var (negative, negativeMask) = pipe.EncodePrompt(["blurry"]);
        Assert.Equal(16, embeds.shape[2]);
        Assert.Equal(embeds.shape[1], mask.sum().item<long>());
        using var fromEmbeds = pipe.Generate(request with
        {
            Prompt = null, NegativePrompt = null, PromptEmbeds = embeds, PromptEmbedsMask = mask, NegativePromptEmbeds = negative,
            NegativePromptEmbedsMask = negativeMask, Generator = new Generator("cpu").ManualSeed(9),
        });
        Assert.Equal(expected.Images![0].Pixels, fromEmbeds.Images![0].Pixels);
        // A prompt that only differs after the template's system turn changes the embeddings (the drop is not too long).
        var (other, _) = pipe.EncodePrompt(["A photo of a dog"]);
        long common = Math.Min(other.shape[1], embeds.shape[1]);
        Assert.True(TensorAssert.MaxAbsDiff(other[.., ..(int)common], embeds[.., ..(int)common]) > 1e-3);
    }
}
