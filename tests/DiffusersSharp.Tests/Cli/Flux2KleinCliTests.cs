using System.Net.Http.Json;
using System.Text.Json;
using DiffusersSharp.Cli;
using DiffusersSharp.Cli.Commands;
using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux2;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Cli;

/// <summary>generate and img2img with the tiny FLUX.2 [klein] folder of fixture local-diffusers/flux2-klein (a base model:
/// is_distilled false; no text encoder) and --prompt-embeds: the library's images exactly, img2img as reference editing,
/// LoRAs fused as the library fuses them (also at serve's per-request scales), and the options the family lacks refused
/// before loading.</summary>
public sealed class Flux2KleinCliTests : CliTempDirectory, IDisposable
{
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/flux2-klein/expected.safetensors");

    public Flux2KleinCliTests() : base("flux2-klein-cli") { }

    private static string Model => Fixtures.Path("local-diffusers/flux2-klein");

    private Flux2Output Library(Flux2KleinRequest request)
    {
        using var pipe = Flux2KleinPipeline.FromPretrained(Model, new PipelineLoadOptions { LoadTextEncoders = false });
        return pipe.Generate(request);
    }

    /// <summary>Writes the fixture's two prompts (and negatives, when asked) to a --prompt-embeds file.</summary>
    private string EmbedsFile(bool negatives)
    {
        string file = Out("embeds.safetensors");
        var tensors = new Dictionary<string, Tensor> { ["prompt_embeds"] = _expected["in.prompt_embeds"] };
        if (negatives) tensors["negative_prompt_embeds"] = _expected["in.negative_prompt_embeds"];
        SafetensorsWriter.Save(file, tensors);
        return file;
    }

    [Fact]
    public void GenerateWithPromptEmbeddingsGivesTheLibrarysImages()
    {
        var (code, stdout, stderr) = CliRunner.Run("generate", "--model", Model, "--prompt-embeds", EmbedsFile(negatives: true), "--steps", "2",
            "--guidance", "3.5", "--width", "64", "--height", "48", "--seed", "5", "--output", Out());
        Assert.True(code == 0, stderr);
        Assert.Equal(2, stdout.Trim().Split('\n').Length);
        Assert.Contains("Steps: 2, Sampler: FlowMatchEulerDiscrete, CFG scale: 3.5, Seed: 5", ImageFile.ReadPngText(Out("out-1.png"))["parameters"]);
        using var expected = Library(new Flux2KleinRequest
        {
            PromptEmbeds = _expected["in.prompt_embeds"], NegativePromptEmbeds = _expected["in.negative_prompt_embeds"], NumInferenceSteps = 2,
            GuidanceScale = 3.5, Width = 64, Height = 48, Generator = new Generator("cpu").ManualSeed(5),
        });
        for (int i = 0; i < 2; i++)
        {
            var image = ImageFile.Load(Out($"out-{i + 1}.png"));
            Assert.Equal((64, 48), (image.Width, image.Height));
            Assert.Equal(expected.Images![i].Pixels, image.Pixels);
        }
        Assert.NotEqual(expected.Images![0].Pixels, expected.Images[1].Pixels);
    }

    [Fact]
    public void Img2ImgEditsWithTheImageAsAReference()
    {
        // No strength: the image's latents join every step; the output takes the image's size (64 x 64) unless given.
        string input = Fixtures.Path("tiny-sd3/init_image.png");
        var (code, _, stderr) = CliRunner.Run("img2img", "--model", Model, "--prompt-embeds", EmbedsFile(negatives: true), "--image", input,
            "--steps", "2", "--seed", "3", "--output", Out());
        Assert.True(code == 0, stderr);
        string parameters = ImageFile.ReadPngText(Out("out-1.png"))["parameters"];
        Assert.Contains("Steps: 2, Sampler: FlowMatchEulerDiscrete, CFG scale: 4, Seed: 3", parameters);
        Assert.Contains("Mode: img2img", parameters);
        Assert.DoesNotContain("Denoising strength", parameters);
        using var expected = Library(new Flux2KleinRequest
        {
            PromptEmbeds = _expected["in.prompt_embeds"], NegativePromptEmbeds = _expected["in.negative_prompt_embeds"], NumInferenceSteps = 2,
            Images = [ImageFile.LoadRgb(input)], Generator = new Generator("cpu").ManualSeed(3),
        });
        for (int i = 0; i < 2; i++)
        {
            var image = ImageFile.Load(Out($"out-{i + 1}.png"));
            Assert.Equal((64, 64), (image.Width, image.Height));
            Assert.Equal(expected.Images![i].Pixels, image.Pixels);
        }
    }

    [Fact]
    public void ReferenceImagesFollowImg2ImgsImage()
    {
        // img2img's --image first, then each --reference-image (t = 10, 20, 30 in the transformer's positions).
        string input = Fixtures.Path("tiny-sd3/init_image.png"), second = Out("second.png");
        ImageFile.SavePng(LocalDiffusersFlux2Klein.Pixels(_expected["in.wide"]), second);
        var (code, _, stderr) = CliRunner.Run("img2img", "--model", Model, "--prompt-embeds", EmbedsFile(negatives: true), "--image", input,
            "--reference-image", second, "--steps", "2", "--seed", "6", "--output", Out());
        Assert.True(code == 0, stderr);
        using var expected = Library(new Flux2KleinRequest
        {
            PromptEmbeds = _expected["in.prompt_embeds"], NegativePromptEmbeds = _expected["in.negative_prompt_embeds"], NumInferenceSteps = 2,
            Images = [ImageFile.LoadRgb(input), ImageFile.LoadRgb(second)], Generator = new Generator("cpu").ManualSeed(6),
        });
        Assert.Equal(expected.Images![0].Pixels, ImageFile.Load(Out("out-1.png")).Pixels);
        // generate with the same two as --reference-image gives the same images.
        (code, _, stderr) = CliRunner.Run("generate", "--model", Model, "--prompt-embeds", EmbedsFile(negatives: true), "--reference-image", input,
            "--reference-image", second, "--steps", "2", "--seed", "6", "--output", Out("gen.png"));
        Assert.True(code == 0, stderr);
        Assert.Equal(expected.Images![1].Pixels, ImageFile.Load(Out("gen-2.png")).Pixels);
    }

    [Fact]
    public void ReferenceImagesAreRefusedForOtherFamilies()
    {
        string image = Fixtures.Path("tiny-sd3/init_image.png");
        var (code, _, stderr) = CliRunner.Run("generate", "--model", LocalDiffusersQwenImage.Folder, "--prompt-embeds", EmbedsFile(negatives: false),
            "--reference-image", image, "--output", Out());
        Assert.NotEqual(0, code);
        Assert.Contains("--reference-image does not apply to Qwen-Image", stderr);
        (code, _, stderr) = CliRunner.Run("generate", "--model", Fixtures.Path("tiny-sd3/model"), "--prompt", "a cat", "--reference-image", image, "--output", Out());
        Assert.NotEqual(0, code);
        Assert.Contains("--reference-image applies to FLUX.2 [klein] models", stderr);
        (code, _, stderr) = CliRunner.Run("generate", "--model", Model, "--prompt-embeds", EmbedsFile(negatives: true), "--reference-image", Out("missing.png"), "--output", Out());
        Assert.NotEqual(0, code);
        Assert.Contains("--reference-image not found", stderr);
    }

    [Fact]
    public void InpaintGivesTheLibrarysImageWithItsDefaults()
    {
        // diffusers' Flux2KleinInpaintPipeline defaults: guidance 8, strength 0.8; the image's own size.
        string image = Fixtures.Path("tiny-sd3/init_image.png"), mask = Fixtures.Path("tiny-sd3/mask.png");
        var (code, _, stderr) = CliRunner.Run("inpaint", "--model", Model, "--prompt-embeds", EmbedsFile(negatives: true), "--image", image, "--mask", mask,
            "--steps", "3", "--seed", "4", "--num-images", "1", "--output", Out());
        Assert.True(code == 0, stderr);
        string parameters = ImageFile.ReadPngText(Out("out-1.png"))["parameters"];
        Assert.Contains("Steps: 3, Sampler: FlowMatchEulerDiscrete, CFG scale: 8, Seed: 4", parameters);
        Assert.Contains("Denoising strength: 0.8", parameters);
        using var pipe = Flux2KleinInpaintPipeline.FromPretrained(Model, new PipelineLoadOptions { LoadTextEncoders = false });
        using var expected = pipe.Generate(new Flux2KleinInpaintRequest
        {
            PromptEmbeds = _expected["in.prompt_embeds"], NegativePromptEmbeds = _expected["in.negative_prompt_embeds"], NumInferenceSteps = 3,
            Image = ImageFile.LoadRgb(image), MaskImage = ImageFile.Load(mask), Generator = new Generator("cpu").ManualSeed(4),
        });
        Assert.Equal(expected.Images![0].Pixels, ImageFile.Load(Out("out-1.png")).Pixels);
        Assert.Equal(expected.Images![1].Pixels, ImageFile.Load(Out("out-2.png")).Pixels);
    }

    [Fact]
    public void LorasAreFusedAsTheLibraryFusesThem()
    {
        string embeds = EmbedsFile(negatives: true), bfl = Fixtures.Path("local-diffusers/flux2-lora/bfl.safetensors");
        var (code, _, stderr) = CliRunner.Run("generate", "--model", Model, "--prompt-embeds", embeds, "--lora", bfl, "--lora-scale", "0.8",
            "--width", "32", "--height", "32", "--seed", "8", "--steps", "2", "--output", Out());
        Assert.True(code == 0, stderr);
        Assert.Contains("fused 23 LoRA layers from bfl.safetensors at scale 0.8", stderr);
        Assert.Contains("Lora: bfl.safetensors:0.8", ImageFile.ReadPngText(Out("out-1.png"))["parameters"]);
        using var pipe = Flux2KleinPipeline.FromPretrained(Model, new PipelineLoadOptions { LoadTextEncoders = false });
        var request = new Flux2KleinRequest
        {
            PromptEmbeds = _expected["in.prompt_embeds"], NegativePromptEmbeds = _expected["in.negative_prompt_embeds"], NumInferenceSteps = 2,
            Width = 32, Height = 32, Generator = new Generator("cpu").ManualSeed(8),
        };
        using var plain = pipe.Generate(request);
        pipe.Components.FuseLora(bfl, 0.8);
        using var expected = pipe.Generate(request with { Generator = new Generator("cpu").ManualSeed(8) });
        for (int i = 0; i < 2; i++) Assert.Equal(expected.Images![i].Pixels, ImageFile.Load(Out($"out-{i + 1}.png")).Pixels);
        Assert.NotEqual(plain.Images![0].Pixels, expected.Images![0].Pixels);
    }

    [Fact]
    public void InpaintFusesTheLoraToo()
    {
        string image = Fixtures.Path("tiny-sd3/init_image.png"), mask = Fixtures.Path("tiny-sd3/mask.png");
        string kohya = Fixtures.Path("local-diffusers/flux2-lora/kohya.safetensors");
        var (code, _, stderr) = CliRunner.Run("inpaint", "--model", Model, "--prompt-embeds", EmbedsFile(negatives: true), "--image", image, "--mask", mask,
            "--lora", kohya, "--lora-scale", "0.9", "--steps", "2", "--seed", "6", "--num-images", "1", "--output", Out());
        Assert.True(code == 0, stderr);
        Assert.Contains("fused 17 LoRA layers from kohya.safetensors at scale 0.9", stderr);
        using var pipe = Flux2KleinInpaintPipeline.FromPretrained(Model, new PipelineLoadOptions { LoadTextEncoders = false });
        pipe.Components.FuseLora(kohya, 0.9);
        using var expected = pipe.Generate(new Flux2KleinInpaintRequest
        {
            PromptEmbeds = _expected["in.prompt_embeds"], NegativePromptEmbeds = _expected["in.negative_prompt_embeds"], NumInferenceSteps = 2,
            Image = ImageFile.LoadRgb(image), MaskImage = ImageFile.Load(mask), Generator = new Generator("cpu").ManualSeed(6),
        });
        Assert.Equal(expected.Images![0].Pixels, ImageFile.Load(Out("out-1.png")).Pixels);
    }

    [Fact]
    public void ServesPerRequestLoraScalesAsTheLibraryFusesThem()
    {
        // serve's lora_scale: the LoRAs unfused and fused again at the request's scales.
        string kohya = Fixtures.Path("local-diffusers/flux2-lora/kohya.safetensors"), peft = Fixtures.Path("local-diffusers/flux2-lora/pytorch_lora_weights.safetensors");
        using var model = LoadedModel.Load(new CliOutput(TextWriter.Null, TextWriter.Null),
            new GenerateSettings { Model = Model, PromptEmbeds = EmbedsFile(negatives: true), Lora = [kohya, peft], LoraScale = ["0.9", "0.7"] }, default);
        Assert.Equal([(kohya, 0.9), (peft, 0.7)], model.Loras);
        model.SetLoraScales([0.5, -1.25]);
        Assert.Equal([(kohya, 0.5), (peft, -1.25)], model.Loras);
        using var components = Flux2KleinComponents.FromPretrained(Model, new PipelineLoadOptions { LoadTextEncoders = false });
        components.FuseLora(kohya, 0.5);
        components.FuseLora(peft, -1.25);
        var ours = model.Flux2Klein!.Transformer.state_dict();
        foreach (var (name, weight) in components.Transformer.state_dict())
            Assert.True(TensorAssert.MaxAbsDiff(ours[name], weight) <= 1e-6, name);
        Assert.Throws<ArgumentException>(() => model.SetLoraScales([1, 2, 3]));
    }

    [Fact]
    public void ALoraOfAnotherFamilyIsRefused()
    {
        // Qwen-Image's kohya names are none that diffusers' FLUX.2 kohya converter maps.
        var (code, _, stderr) = CliRunner.Run("generate", "--model", Model, "--prompt-embeds", EmbedsFile(negatives: true),
            "--lora", Fixtures.Path("local-diffusers/qwenimage-lora/kohya.safetensors"), "--output", Out());
        Assert.NotEqual(0, code);
        Assert.Contains("FLUX.2 kohya converter does not map", stderr);
    }

    [Theory]
    [InlineData("img2img", "--strength", "0.5", "--strength does not apply to FLUX.2 [klein]")]
    [InlineData("generate", "--negative-prompt", "blurry", "--negative-prompt does not apply to FLUX.2 [klein]")]
    [InlineData("generate", "--scheduler", "euler", "--scheduler does not apply to FLUX.2 [klein]")]
    [InlineData("generate", "--width", "40", "multiple of 16 for FLUX.2 [klein]")]
    [InlineData("inpaint", "--width", "64", "repaints at the image's own size")]
    public void FamilyLimitsAreRefusedBeforeLoading(string verb, string? option, string? value, string message)
    {
        var args = new List<string> { verb, "--model", Model, "--prompt-embeds", EmbedsFile(negatives: true), "--output", Out() };
        if (verb != "generate") args.AddRange(["--image", Fixtures.Path("tiny-sd3/init_image.png")]);
        if (verb == "inpaint") args.AddRange(["--mask", Fixtures.Path("tiny-sd3/mask.png")]);
        if (option is not null) args.Add(option);
        if (value is not null) args.Add(value.EndsWith(".safetensors", StringComparison.Ordinal) ? Fixtures.Path(value) : value);
        var (code, _, stderr) = CliRunner.Run([.. args]);
        Assert.NotEqual(0, code);
        Assert.Contains(message, stderr);
        Assert.DoesNotContain("loading", stderr);
    }

    [Fact]
    public void AKVPipelineFolderRunsTheKVPipeline()
    {
        // model_index.json's Flux2KleinKVPipeline: generate / img2img through diffusers' KV-cache pipeline, no CFG, no inpaint.
        string folder = Out("kv");
        foreach (var file in Directory.GetFiles(Model, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(folder, Path.GetRelativePath(Model, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
        File.WriteAllText(Path.Combine(folder, "model_index.json"),
            File.ReadAllText(Path.Combine(Model, "model_index.json")).Replace("\"Flux2KleinPipeline\"", "\"Flux2KleinKVPipeline\""));
        string input = Fixtures.Path("tiny-sd3/init_image.png");
        var (code, _, stderr) = CliRunner.Run("img2img", "--model", folder, "--prompt-embeds", EmbedsFile(negatives: false), "--image", input,
            "--steps", "2", "--seed", "7", "--output", Out("kv.png"));
        Assert.True(code == 0, stderr);
        using var pipe = Flux2KleinKVPipeline.FromPretrained(folder, new PipelineLoadOptions { LoadTextEncoders = false });
        using var expected = pipe.Generate(new Flux2KleinRequest
        {
            PromptEmbeds = _expected["in.prompt_embeds"], NumInferenceSteps = 2, Images = [ImageFile.LoadRgb(input)], Generator = new Generator("cpu").ManualSeed(7),
        });
        Assert.Equal(expected.Images![0].Pixels, ImageFile.Load(Out("kv-1.png")).Pixels);
        Assert.Contains("CFG scale: 1", ImageFile.ReadPngText(Out("kv-1.png"))["parameters"]);
        (code, _, stderr) = CliRunner.Run("generate", "--model", folder, "--prompt-embeds", EmbedsFile(negatives: false), "--guidance", "3", "--output", Out());
        Assert.NotEqual(0, code);
        Assert.Contains("--guidance does not apply to Flux2KleinKVPipeline", stderr);
        (code, _, stderr) = CliRunner.Run("inpaint", "--model", folder, "--prompt-embeds", EmbedsFile(negatives: false), "--image", input,
            "--mask", Fixtures.Path("tiny-sd3/mask.png"), "--output", Out());
        Assert.NotEqual(0, code);
        Assert.Contains("it has no inpainting", stderr);
    }

    [Fact]
    public void EmbeddingsWithoutNegativesNeedTheTextEncoderUnderCfg()
    {
        // The base model's CFG encodes "" without negative_prompt_embeds: this folder has no text encoder, which the load says.
        var (code, _, stderr) = CliRunner.Run("generate", "--model", Model, "--prompt-embeds", EmbedsFile(negatives: false), "--steps", "1", "--output", Out());
        Assert.NotEqual(0, code);
        Assert.Contains("text_encoder", stderr);
        // Without CFG (guidance 1) the embeddings are enough: the text encoder is not loaded.
        using var model = LoadedModel.Load(new CliOutput(TextWriter.Null, TextWriter.Null),
            new GenerateSettings { Model = Model, PromptEmbeds = EmbedsFile(negatives: false), Guidance = "1" }, default);
        Assert.NotNull(model.Flux2Klein);
        Assert.Null(model.Flux2Klein!.TextEncoder);
        Assert.False(model.Flux2Klein.IsDistilled);
        Assert.Equal(["txt2img", "img2img", "inpaint"], model.Modes);
        Assert.False(model.HasStrength);
        Assert.Equal(["inpaint"], model.StrengthModes);
    }

    /// <summary>Frees the fixture's tensors, then deletes the folder.</summary>
    void IDisposable.Dispose()
    {
        foreach (var t in _expected.Values) t.Dispose();
        Dispose();
    }
}

/// <summary>generate with the whole tiny FLUX.2 [klein] folder (Qwen3 text encoder and tokenizer included): prompt strings
/// give the library's images, and the same images as their encoded embeddings; a distilled folder runs without CFG.</summary>
public sealed class Flux2KleinPromptCliTests : CliTempDirectory
{
    public Flux2KleinPromptCliTests() : base("flux2-klein-prompt-cli") { }

    [Fact]
    public void PromptsGiveTheLibrarysImagesAndTheirEmbeddingsDoToo()
    {
        string model = Path.Combine(Dir, "klein");
        TinyFlux2KleinPipelineFolder.Write(model);
        var (code, _, stderr) = CliRunner.Run("generate", "--model", model, "--prompt", "A photo of a cat", "--steps", "2", "--guidance", "3",
            "--width", "32", "--height", "48", "--seed", "9", "--max-sequence-length", "24", "--output", Out());
        Assert.True(code == 0, stderr);
        using var pipe = Flux2KleinPipeline.FromPretrained(model);
        var request = new Flux2KleinRequest
        {
            Prompt = "A photo of a cat", NumInferenceSteps = 2, GuidanceScale = 3, Width = 32, Height = 48, MaxSequenceLength = 24,
            Generator = new Generator("cpu").ManualSeed(9),
        };
        using var expected = pipe.Generate(request);
        Assert.Equal(expected.Images![0].Pixels, ImageFile.Load(Out()).Pixels);

        // The prompt's embeddings and those of "" (the negative side of CFG) give the same image.
        var embeds = pipe.EncodePrompt(["A photo of a cat"], 24);
        var negative = pipe.EncodePrompt([""], 24);
        Assert.Equal([1L, 24, 24], embeds.shape);
        using var fromEmbeds = pipe.Generate(request with
        {
            Prompt = null, PromptEmbeds = embeds, NegativePromptEmbeds = negative, Generator = new Generator("cpu").ManualSeed(9),
        });
        Assert.Equal(expected.Images![0].Pixels, fromEmbeds.Images![0].Pixels);
        // Without the negative side (guidance 1) the image differs: CFG did run above.
        using var plain = pipe.Generate(request with { GuidanceScale = 1, Generator = new Generator("cpu").ManualSeed(9) });
        Assert.NotEqual(expected.Images![0].Pixels, plain.Images![0].Pixels);
    }

    [Fact]
    public void ADistilledModelIgnoresTheGuidanceScale()
    {
        string model = Path.Combine(Dir, "klein-distilled");
        TinyFlux2KleinPipelineFolder.Write(model, distilled: true);
        using var pipe = Flux2KleinPipeline.FromPretrained(model);
        Assert.True(pipe.Components.IsDistilled);
        var request = new Flux2KleinRequest { Prompt = "a red ball", NumInferenceSteps = 2, Width = 32, Height = 32, MaxSequenceLength = 16 };
        using var guided = pipe.Generate(request with { GuidanceScale = 5, Generator = new Generator("cpu").ManualSeed(2) });
        using var unguided = pipe.Generate(request with { GuidanceScale = 1, Generator = new Generator("cpu").ManualSeed(2) });
        Assert.Equal(guided.Images![0].Pixels, unguided.Images![0].Pixels);
    }
}

/// <summary><c>serve</c> with the whole tiny FLUX.2 [klein] folder: text-to-image and reference editing equal to the command
/// line's; the negative prompt and strength are not offered.</summary>
public sealed class Flux2KleinServeTests : ServeWithAddOn
{
    private string? _model;

    private protected override ServeCommand.Settings Settings
    {
        get
        {
            _model = Out("klein");
            TinyFlux2KleinPipelineFolder.Write(_model);
            return new() { Model = _model };
        }
    }

    [Fact]
    public async Task InfoNamesTheFamilyAndItsModes()
    {
        var info = await Http.GetFromJsonAsync<JsonElement>("api/info");
        Assert.Equal(("flux2klein", "Flux2KleinPipeline"), (info.GetProperty("family").GetString(), info.GetProperty("pipeline").GetString()));
        Assert.Equal(["txt2img", "img2img", "inpaint"], info.GetProperty("modes").EnumerateArray().Select(m => m.GetString()));
        Assert.False(info.GetProperty("negative_prompt").GetBoolean());
        Assert.False(info.GetProperty("strength").GetBoolean());
    }

    [Fact]
    public async Task TextToImageAndReferenceEditingEqualTheCommandLine()
    {
        var result = await ServeApi.Result(Http, new { prompt = "a teddy bear", steps = 2, guidance = 3.0, width = 48, height = 32, seed = 5 });
        AssertSameAsCommandLine(result, "generate", "--model", _model!, "--prompt", "a teddy bear", "--steps", "2", "--guidance", "3", "--width", "48",
            "--height", "32", "--seed", "5");
        string input = Fixtures.Path("tiny-sd3/init_image.png");
        result = await ServeApi.Result(Http, new { mode = "img2img", prompt = "a red ball", image = ServeApi.DataUrl(input), steps = 2, seed = 6 });
        AssertSameAsCommandLine(result, "img2img", "--model", _model!, "--prompt", "a red ball", "--image", input, "--steps", "2", "--seed", "6");
    }
}
