using DiffusersSharp.Cli;
using DiffusersSharp.Cli.Commands;
using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.ZImage;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Cli;

/// <summary>generate and img2img with a Z-Image folder (model_index.json ZImagePipeline; the whole tiny one, Qwen3 text
/// encoder included): the library's images exactly, diffusers' defaults, cfg_normalization / cfg_truncation, the truncation
/// warning, --prompt-embeds (without loading the text encoder), previews, and the options and verbs refused before loading.</summary>
public sealed class ZImageCliTests : CliTempDirectory
{
    private const string Prompt = "A photo of a cat sitting on a wooden table, soft light.";
    private readonly string _model;

    public ZImageCliTests() : base("zimage-cli")
    {
        _model = Path.Combine(Dir, "zimage");
        TinyZImagePipelineFolder.Write(_model);
    }

    private ZImageOutput Library<T>(T request) where T : ZImageRequest
    {
        using var components = ZImageComponents.FromPretrained(_model, new PipelineLoadOptions());
        if (request is ZImageImg2ImgRequest image)
        {
            using var img2img = new ZImageImg2ImgPipeline(components);
            return img2img.Generate(image);
        }
        using var pipe = new ZImagePipeline(components);
        return pipe.Generate(request);
    }

    [Fact]
    public void GenerateWithANegativePromptAndTheCfgOptionsGivesTheLibrarysImage()
    {
        var (code, stdout, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt", Prompt, "--negative-prompt", "A photo of a cat",
            "--steps", "3", "--guidance", "4", "--cfg-normalization", "1", "--cfg-truncation", "0.5", "--width", "48", "--height", "32", "--seed", "7",
            "--max-sequence-length", "16", "--num-images", "2", "--output", Out());
        Assert.True(code == 0, stderr);
        Assert.Equal([Path.GetFullPath(Out("out-1.png")), Path.GetFullPath(Out("out-2.png"))], stdout.Trim().Split('\n').Select(l => l.Trim()));
        // Cut to 16 tokens, chat template included: the prompt's side only (the negative prompt fits).
        Assert.Contains("warning: the prompt is", stderr);
        Assert.Contains("tokenizer (Qwen2); only 16 are used", stderr);
        string parameters = ImageFile.ReadPngText(Out("out-1.png"))["parameters"];
        Assert.StartsWith($"{Prompt}\nNegative prompt: A photo of a cat\n", parameters);
        Assert.Contains("Steps: 3, Sampler: FlowMatchEulerDiscrete, CFG scale: 4, Seed: 7", parameters);
        Assert.Contains("CFG normalization: 1, CFG truncation: 0.5", parameters);
        Assert.Contains("Mode: txt2img", parameters);
        using var expected = Library(new ZImageRequest
        {
            Prompt = Prompt, NegativePrompt = "A photo of a cat", NumInferenceSteps = 3, GuidanceScale = 4, CfgNormalization = 1, CfgTruncation = 0.5,
            Width = 48, Height = 32, MaxSequenceLength = 16, NumImagesPerPrompt = 2, Generator = new Generator("cpu").ManualSeed(7),
        });
        for (int i = 0; i < 2; i++)
        {
            var image = ImageFile.Load(Out($"out-{i + 1}.png"));
            Assert.Equal((48, 32), (image.Width, image.Height));
            Assert.Equal(expected.Images![i].Pixels, image.Pixels);
        }
        Assert.NotEqual(expected.Images![0].Pixels, expected.Images[1].Pixels);
        // The options change the image (so the comparison above would notice them being dropped).
        using var plain = Library(new ZImageRequest
        {
            Prompt = Prompt, NegativePrompt = "A photo of a cat", NumInferenceSteps = 3, GuidanceScale = 4, Width = 48, Height = 32,
            MaxSequenceLength = 16, NumImagesPerPrompt = 2, Generator = new Generator("cpu").ManualSeed(7),
        });
        Assert.NotEqual(plain.Images![0].Pixels, expected.Images[0].Pixels);
    }

    [Fact]
    public void DefaultsAreDiffusers()
    {
        // 50 steps and guidance 5.0 (ZImagePipeline), strength 0.6 (ZImageImg2ImgPipeline).
        var (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt", "x", "--width", "32", "--height", "32", "--seed", "1",
            "--output", Out());
        Assert.True(code == 0, stderr);
        Assert.Contains("Steps: 50, Sampler: FlowMatchEulerDiscrete, CFG scale: 5,", ImageFile.ReadPngText(Out())["parameters"]);
        (code, _, stderr) = CliRunner.Run("img2img", "--model", _model, "--prompt", "x", "--image", Fixtures.Path("tiny-sd3/init_image.png"),
            "--steps", "3", "--seed", "1", "--output", Out("i.png"));
        Assert.True(code == 0, stderr);
        string parameters = ImageFile.ReadPngText(Out("i.png"))["parameters"];
        Assert.Contains("Denoising strength: 0.6", parameters);
        Assert.Contains("Mode: img2img", parameters);
    }

    [Fact]
    public void TurboSettingsAndImg2ImgGiveTheLibrarysImages()
    {
        string input = Fixtures.Path("tiny-sd3/init_image.png");
        var (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt", Prompt, "--steps", "9", "--guidance", "0",
            "--width", "32", "--height", "48", "--seed", "11", "--output", Out("t.png"));
        Assert.True(code == 0, stderr);
        using (var expected = Library(new ZImageRequest
        {
            Prompt = Prompt, NumInferenceSteps = 9, GuidanceScale = 0, Width = 32, Height = 48, Generator = new Generator("cpu").ManualSeed(11),
        }))
            Assert.Equal(expected.Images![0].Pixels, ImageFile.Load(Out("t.png")).Pixels);

        (code, _, stderr) = CliRunner.Run("img2img", "--model", _model, "--prompt", "a red ball", "--negative-prompt", "blurry", "--image", input,
            "--strength", "0.7", "--steps", "4", "--guidance", "3", "--seed", "3", "--output", Out());
        Assert.True(code == 0, stderr);
        var image = ImageFile.Load(Out());
        Assert.Equal((64, 64), (image.Width, image.Height));
        Assert.Contains("Denoising strength: 0.7", ImageFile.ReadPngText(Out())["parameters"]);
        using var edited = Library(new ZImageImg2ImgRequest
        {
            Image = ImageFile.LoadRgb(input), Strength = 0.7, Prompt = "a red ball", NegativePrompt = "blurry", NumInferenceSteps = 4, GuidanceScale = 3,
            Generator = new Generator("cpu").ManualSeed(3),
        });
        Assert.Equal(edited.Images![0].Pixels, image.Pixels);

        // Z-Image encodes the image at its own size (multiples of 16): another size is refused before compute.
        (code, _, stderr) = CliRunner.Run("img2img", "--model", _model, "--prompt", "x", "--image", input, "--width", "32", "--height", "32",
            "--steps", "2", "--output", Out("refused.png"));
        Assert.Equal(2, code);
        Assert.Contains("64x64", stderr);
        Assert.False(File.Exists(Out("refused.png")));
    }

    [Fact]
    public void PromptEmbeddingsGiveTheLibrarysImageWithoutLoadingTheTextEncoder()
    {
        string[] prompts = [Prompt, "A photo of a cat"];
        IReadOnlyList<Tensor> embeds, negatives;
        using (var components = ZImageComponents.FromPretrained(_model, new PipelineLoadOptions()))
        {
            var encoder = new Qwen3PromptEncoder(components.Tokenizer!, components.TextEncoder!);
            embeds = encoder.Encode(prompts);
            negatives = encoder.Encode(["", ""]);
        }
        string file = Out("embeds.safetensors");
        var tensors = new Dictionary<string, Tensor>();
        for (int i = 0; i < 2; i++) (tensors[$"prompt_embeds.{i}"], tensors[$"negative_prompt_embeds.{i}"]) = (embeds[i], negatives[i]);
        SafetensorsWriter.Save(file, tensors);
        var (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt-embeds", file, "--steps", "2", "--guidance", "3",
            "--width", "32", "--height", "32", "--seed", "2", "--output", Out());
        Assert.True(code == 0, stderr);
        using (var expected = Library(new ZImageRequest
        {
            Prompt = prompts, NumInferenceSteps = 2, GuidanceScale = 3, Width = 32, Height = 32, Generator = new Generator("cpu").ManualSeed(2),
        }))
        {
            Assert.Equal(expected.Images![0].Pixels, ImageFile.Load(Out("out-1.png")).Pixels);
            Assert.Equal(expected.Images![1].Pixels, ImageFile.Load(Out("out-2.png")).Pixels);
        }

        // Without --negative-prompt the Qwen3 encoder is not loaded (diffusers' text_encoder=None); with one it is.
        using (var model = LoadedModel.Load(new CliOutput(TextWriter.Null, TextWriter.Null), new GenerateSettings { Model = _model, PromptEmbeds = file }, default))
            Assert.Null(model.ZImage!.TextEncoder);
        using (var model = LoadedModel.Load(new CliOutput(TextWriter.Null, TextWriter.Null),
            new GenerateSettings { Model = _model, PromptEmbeds = file, NegativePrompt = "blurry" }, default))
            Assert.NotNull(model.ZImage!.TextEncoder);

        // One prompt as [L, D] without negative embeddings: fine without guidance, refused with it (before compute).
        SafetensorsWriter.Save(file, new Dictionary<string, Tensor> { ["prompt_embeds"] = embeds[0] });
        (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt-embeds", file, "--steps", "1", "--guidance", "0",
            "--width", "32", "--height", "32", "--output", Out("one.png"));
        Assert.True(code == 0, stderr);
        (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt-embeds", file, "--steps", "1",
            "--width", "32", "--height", "32", "--output", Out("refused.png"));
        Assert.Equal(2, code);
        Assert.Contains("negative_prompt_embeds", stderr);
        SafetensorsWriter.Save(file, new Dictionary<string, Tensor> { ["negative_prompt_embeds"] = embeds[0] });
        (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt-embeds", file, "--output", Out("refused.png"));
        Assert.NotEqual(0, code);
        Assert.Contains("no 'prompt_embeds' tensor", stderr);
        foreach (var t in embeds.Concat(negatives)) t.Dispose();
    }

    [Fact]
    public void TwoLorasGiveTheLibrarysImageOfThemFusedAndKohyaNamesAreRefused()
    {
        // ZImageLoraParityTests checks the fused weights against diffusers'; here the CLI's wiring, on local-diffusers/z-image's
        // transformer (the LoRA fixtures' own) with prompt embeddings, so no text encoder is loaded.
        string model = Out("zimage-lora");
        LocalDiffusersZImage.WriteFolder(model);
        string comfy = Fixtures.Path("local-diffusers/z-image-lora/comfy_alpha.safetensors"), peft = Fixtures.Path("local-diffusers/z-image-lora/peft_default.safetensors");
        var inputs = Fixtures.Expected("local-diffusers/z-image/expected.safetensors");
        string embeds = Out("lora-embeds.safetensors");
        SafetensorsWriter.Save(embeds, new Dictionary<string, Tensor> { ["prompt_embeds"] = inputs["in.prompt_embeds.0"], ["negative_prompt_embeds"] = inputs["in.negative_prompt_embeds.0"] });
        string[] args = ["generate", "--model", model, "--prompt-embeds", embeds, "--steps", "2", "--guidance", "3", "--width", "32", "--height", "32",
            "--seed", "3", "--lora", comfy, "--lora", peft, "--lora-scale", "0.8", "--lora-scale", "1"];
        var (code, _, stderr) = CliRunner.Run([.. args, "--output", Out("lora.png")]);
        Assert.True(code == 0, stderr);
        Assert.Contains("fused 7 LoRA layers from comfy_alpha.safetensors at scale 0.8", stderr);
        Assert.Contains("fused 4 LoRA layers from peft_default.safetensors at scale 1", stderr);
        string parameters = ImageFile.ReadPngText(Out("lora.png"))["parameters"];
        Assert.Contains("Lora 1: comfy_alpha.safetensors:0.8", parameters);
        Assert.Contains("Lora 2: peft_default.safetensors:1", parameters);

        ZImageOutput Run(bool loras)
        {
            using var components = ZImageComponents.FromPretrained(model, new PipelineLoadOptions { LoadTextEncoders = false });
            if (loras)
            {
                components.FuseLora(comfy, 0.8);
                components.FuseLora(peft, 1.0);
            }
            using var pipe = new ZImagePipeline(components);
            return pipe.Generate(new ZImageRequest
            {
                PromptEmbeds = [inputs["in.prompt_embeds.0"]], NegativePromptEmbeds = [inputs["in.negative_prompt_embeds.0"]], NumInferenceSteps = 2,
                GuidanceScale = 3, Width = 32, Height = 32, Generator = new Generator("cpu").ManualSeed(3),
            });
        }
        using (var expected = Run(loras: true)) Assert.Equal(expected.Images![0].Pixels, ImageFile.Load(Out("lora.png")).Pixels);
        using (var plain = Run(loras: false)) Assert.NotEqual(plain.Images![0].Pixels, ImageFile.Load(Out("lora.png")).Pixels);

        // kohya's lora_unet_ names, which diffusers v0.36 cannot load either: a clear error, no image.
        string kohya = Out("kohya.safetensors");
        SafetensorsWriter.Save(kohya, new Dictionary<string, Tensor>
        {
            ["lora_unet_layers_0_attention_to_q.lora_down.weight"] = zeros(2, 64), ["lora_unet_layers_0_attention_to_q.lora_up.weight"] = zeros(64, 2),
            ["lora_unet_layers_0_attention_to_q.alpha"] = tensor(2f),
        });
        (code, _, stderr) = CliRunner.Run("generate", "--model", model, "--prompt-embeds", embeds, "--steps", "1", "--lora", kohya, "--output", Out("kohya.png"));
        Assert.NotEqual(0, code);
        Assert.Contains("lora_unet_layers_0_attention_to_q", stderr);
        Assert.False(File.Exists(Out("kohya.png")));
        foreach (var t in inputs.Values) t.Dispose();
    }

    [Fact]
    public void PreviewEveryWritesTheDecodedSteps()
    {
        var (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt", "a teddy bear", "--steps", "3", "--width", "48",
            "--height", "32", "--seed", "4", "--guidance", "0", "--preview-every", "1", "--output", Out("p.png"));
        Assert.True(code == 0, stderr);
        Assert.Equal(["p.png", "p.step-1.png", "p.step-2.png", "zimage"], Directory.GetFileSystemEntries(Dir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        var preview = ImageFile.Load(Out("p.step-1.png"));
        Assert.Equal((48, 32), (preview.Width, preview.Height));
        Assert.NotEqual(ImageFile.Load(Out("p.png")).Pixels, preview.Pixels);
        // Z-Image's schedule ends at sigma 0 (sigma_min 0): the last step, from sigma 0, moves nothing.
        Assert.Equal(ImageFile.Load(Out("p.png")).Pixels, ImageFile.Load(Out("p.step-2.png")).Pixels);
    }

    [Theory]
    [InlineData("--true-cfg", "2")]
    [InlineData("--scheduler", "euler")]
    [InlineData("--prompt-2", "x")]
    [InlineData("--clip-skip", "1")]
    [InlineData("--eta", "0.5")]
    [InlineData("--guidance-rescale", "0.5")]
    [InlineData("--freeu", "0.9,0.2,1.2,1.4")]
    [InlineData("--pag-scale", "3")]
    [InlineData("--no-t5", null)]
    [InlineData("--width", "40")]
    public void OptionsZImageDoesNotHaveAreRefusedBeforeLoading(string option, string? value)
    {
        string[] args = ["generate", "--model", _model, "--prompt", "x", "--output", Out()];
        var (code, _, stderr) = CliRunner.Run(value is null ? [.. args, option] : [.. args, option, value]);
        Assert.Equal(2, code);
        Assert.Contains(option, stderr);
        Assert.DoesNotContain("loading", stderr);
        Assert.False(File.Exists(Out()));
    }

    [Fact]
    public void InpaintIsRefusedBeforeLoadingAndTheCfgOptionsElsewhere()
    {
        var (code, _, stderr) = CliRunner.Run("inpaint", "--model", _model, "--prompt", "x", "--image", Fixtures.Path("tiny-sd3/init_image.png"),
            "--mask", Fixtures.Path("tiny-sd3/mask.png"), "--output", Out());
        Assert.Equal(2, code);
        Assert.Contains("no Z-Image inpainting pipeline", stderr);
        Assert.DoesNotContain("loading", stderr);

        string chroma = Out("chroma");
        TinyChromaPipelineFolder.Write(chroma);
        foreach (var option in new[] { "--cfg-normalization", "--cfg-truncation" })
        {
            (code, _, stderr) = CliRunner.Run("generate", "--model", chroma, "--prompt", "x", option, "1", "--output", Out());
            Assert.Equal(2, code);
            Assert.Contains($"{option} applies to Z-Image and Lumina-Image 2.0 models", stderr);
            Assert.DoesNotContain("loading", stderr);
        }
        (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt", "x", "--cfg-normalization", "-1", "--output", Out());
        Assert.Equal(2, code);
        Assert.Contains("--cfg-normalization must be a finite number of at least 0", stderr);
        (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt", "x", "--cfg-truncation", "nan", "--output", Out());
        Assert.Equal(2, code);
        Assert.Contains("--cfg-truncation must be a finite number", stderr);
    }

    [Theory]
    [InlineData("generate")]
    [InlineData("img2img")]
    [InlineData("inpaint")]
    public void HelpRendersAndNamesTurbosSettings(string verb)
    {
        // Spectre reads [...] in option descriptions as markup (brackets are doubled there): a stray one fails the whole help.
        // The help goes to the terminal itself, not to the captured writers.
        var (code, _, stderr) = CliRunner.Run(verb, "--help");
        Assert.True(code == 0, stderr);
        Assert.Equal("", stderr);
        static string Description(string property) =>
            typeof(GenerateSettings).GetProperty(property)!.GetCustomAttributes(typeof(System.ComponentModel.DescriptionAttribute), true)
                .Cast<System.ComponentModel.DescriptionAttribute>().Single().Description;
        Assert.Contains("Z-Image-Turbo is distilled for --guidance 0 with --steps 9", Description(nameof(GenerateSettings.Guidance)));
        Assert.Contains("Z-Image", Description(nameof(GenerateSettings.CfgNormalization)));
    }
}
