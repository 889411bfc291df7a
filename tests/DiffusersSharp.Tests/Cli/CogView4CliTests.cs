using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.CogView4;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Cli;

/// <summary>generate with a tiny CogView4 folder (local-diffusers/cogview4's transformer and scheduler, tiny-sd3's VAE, no
/// text encoder) and --prompt-embeds: the library's images exactly; without --prompt-embeds (GLM-4's tokenizer is not built
/// yet), with img2img, another family's options or serve, a clear refusal before any weights load; --lora fused as the library
/// fuses it.</summary>
public sealed class CogView4CliTests : CliTempDirectory, IDisposable
{
    private readonly Dictionary<string, Tensor> _expected = Fixtures.Expected("local-diffusers/cogview4/expected.safetensors");
    private readonly string _model;

    public CogView4CliTests() : base("cogview4-cli")
    {
        _model = Out("model");
        void Copy(string from, string to)
        {
            Directory.CreateDirectory(Path.Combine(_model, to));
            foreach (var file in Directory.GetFiles(Fixtures.Path(from)))
                File.Copy(file, Path.Combine(_model, to, Path.GetFileName(file)), overwrite: true);
        }
        Copy("local-diffusers/cogview4/transformer", "transformer");
        Copy("local-diffusers/cogview4/scheduler", "scheduler");
        Copy("tiny-sd3/model/vae", "vae");
        File.Copy(Fixtures.Path("local-diffusers/cogview4/model_index.json"), Path.Combine(_model, "model_index.json"));
    }

    private string EmbedsFile()
    {
        string file = Out("embeds.safetensors");
        SafetensorsWriter.Save(file, new Dictionary<string, Tensor>
        {
            ["prompt_embeds"] = _expected["cfg/prompt_embeds"], ["negative_prompt_embeds"] = _expected["cfg/negative_prompt_embeds"],
        });
        return file;
    }

    [Fact]
    public void GenerateWithPromptEmbeddingsGivesTheLibrarysImages()
    {
        var (code, stdout, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt-embeds", EmbedsFile(), "--steps", "3",
            "--guidance", "5", "--width", "48", "--height", "32", "--seed", "7", "--output", Out("out.png"));
        Assert.True(code == 0, stderr);
        Assert.Equal(2, stdout.Trim().Split('\n').Length);
        Assert.Contains("Steps: 3, Sampler: FlowMatchEulerDiscrete, CFG scale: 5, Seed: 7", ImageFile.ReadPngText(Out("out-1.png"))["parameters"]);
        using var pipe = CogView4Pipeline.FromPretrained(_model, new PipelineLoadOptions { LoadTextEncoders = false });
        using var expected = pipe.Generate(new CogView4Request
        {
            PromptEmbeds = _expected["cfg/prompt_embeds"], NegativePromptEmbeds = _expected["cfg/negative_prompt_embeds"], NumInferenceSteps = 3,
            GuidanceScale = 5, Width = 48, Height = 32, Generator = new Generator("cpu").ManualSeed(7),
        });
        for (int i = 0; i < 2; i++)
        {
            var image = ImageFile.Load(Out($"out-{i + 1}.png"));
            Assert.Equal((48, 32), (image.Width, image.Height));
            Assert.Equal(expected.Images![i].Pixels, image.Pixels);
        }
    }

    [Fact]
    public void WhatCogView4CannotRunYetIsRefusedBeforeLoading()
    {
        var (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt", "a cat", "--output", Out("no.png"));
        Assert.Equal(2, code);
        Assert.Contains("prompt encoding (GLM-4's tokenizer) is not built yet", stderr);
        (code, _, stderr) = CliRunner.Run("img2img", "--model", _model, "--prompt", "a cat", "--image", Fixtures.Path("tiny-sd3/init_image.png"), "--output", Out("no.png"));
        Assert.Equal(2, code);
        Assert.Contains("only generates from text", stderr);
        (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt-embeds", EmbedsFile(), "--true-cfg", "4", "--output", Out("no.png"));
        Assert.Equal(2, code);
        Assert.Contains("--true-cfg does not apply to CogView4", stderr);
        Assert.False(File.Exists(Out("no.png")));
    }

    [Fact]
    public void LoraIsFusedAsTheLibraryFusesIt()
    {
        string lora = Fixtures.Path("local-diffusers/cogview4-lora/pytorch_lora_weights.safetensors");
        var (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt-embeds", EmbedsFile(), "--lora", lora, "--lora-scale", "0.7",
            "--steps", "2", "--guidance", "5", "--width", "32", "--height", "32", "--seed", "3", "--output", Out("lora.png"));
        Assert.True(code == 0, stderr);
        using var components = CogView4Components.FromPretrained(_model, new PipelineLoadOptions { LoadTextEncoders = false });
        Assert.Equal(22, components.FuseLora(lora, 0.7));
        using var pipe = new CogView4Pipeline(components);
        var request = new CogView4Request
        {
            PromptEmbeds = _expected["cfg/prompt_embeds"], NegativePromptEmbeds = _expected["cfg/negative_prompt_embeds"], NumInferenceSteps = 2,
            GuidanceScale = 5, Width = 32, Height = 32, Generator = new Generator("cpu").ManualSeed(3),
        };
        using var fused = pipe.Generate(request);
        Assert.Equal(fused.Images![0].Pixels, ImageFile.Load(Out("lora-1.png")).Pixels);
        components.UnfuseLora();
        using var plain = pipe.Generate(request with { Generator = new Generator("cpu").ManualSeed(3) });
        Assert.NotEqual(plain.Images![0].Pixels, fused.Images[0].Pixels);
    }

    void IDisposable.Dispose()
    {
        foreach (var t in _expected.Values) t.Dispose();
        Dispose();
    }
}
