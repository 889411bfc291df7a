using DiffusersSharp.Cli.Commands;
using DiffusersSharp.Images;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Cli;

/// <summary>
/// <c>serve --lora</c> with the families whose LoRAs are transformer-only (Sana, Lumina-Image 2.0, AuraFlow): at the
/// scale it was loaded with a request equals the command line's exactly; at another scale the LoRA is taken out and fused
/// again, within one 8-bit level of the command line (the unfuse's float rounding, as ChromaLoraServeTests), and differs
/// from the first image.
/// </summary>
public abstract class TransformerLoraServeTests : ServeWithAddOn
{
    private string? _model;

    /// <summary>The LoRA file (local-diffusers/&lt;family&gt;-lora's diffusers-layout one).</summary>
    private protected abstract string Lora { get; }

    /// <summary>Writes the family's whole tiny folder.</summary>
    private protected abstract void WriteFolder(string dir);

    /// <summary>The size options of the command line, as the request body gives them.</summary>
    private protected virtual string[] SizeArgs => ["--width", "32", "--height", "32"];

    private protected virtual object Body(double scale) => new { prompt = "a teddy bear", steps = 2, width = 32, height = 32, seed = 5, lora_scale = scale };

    private protected override ServeCommand.Settings Settings
    {
        get
        {
            _model = Out("model");
            WriteFolder(_model);
            return new() { Model = _model, Lora = [Lora], LoraScale = ["0.7"] };
        }
    }

    [Fact]
    public async Task TheLoraScaleOfARequestEqualsTheCommandLine()
    {
        string[] Args(string scale) => ["generate", "--model", _model!, "--prompt", "a teddy bear", "--steps", "2", .. SizeArgs,
            "--seed", "5", "--lora", Lora, "--lora-scale", scale];
        AssertSameAsCommandLine(await ServeApi.Result(Http, Body(0.7)), Args("0.7"));
        var other = await ServeApi.Result(Http, Body(0.3));
        string output = Out("cli-0.3.png");
        var (code, _, stderr) = CliRunner.Run([.. Args("0.3"), "--output", output]);
        Assert.True(code == 0, stderr);
        Assert.Equal(ImageFile.ReadPngText(output)["parameters"], other.GetProperty("parameters").GetString());
        var (_, max) = Images.ImageFixtures.Diff(ImageFile.Load(output), ServeApi.Image(other));
        Assert.True(max <= 1, $"the re-fused image differs from the command line's by up to {max}");
        Assert.NotEqual(ImageFile.Load(output).Pixels, ImageFile.Load(Out("cli.png")).Pixels);
    }
}

/// <summary><see cref="TransformerLoraServeTests"/> with the tiny Lumina-Image 2.0 folder.</summary>
public sealed class Lumina2LoraServeTests : TransformerLoraServeTests
{
    private protected override string Lora => Fixtures.Path("local-diffusers/lumina2-lora/pytorch_lora_weights.safetensors");

    private protected override void WriteFolder(string dir) => TinyLumina2PipelineFolder.Write(dir);
}

/// <summary><see cref="TransformerLoraServeTests"/> with the tiny AuraFlow folder.</summary>
public sealed class AuraFlowLoraServeTests : TransformerLoraServeTests
{
    private protected override string Lora => Fixtures.Path("local-diffusers/auraflow-lora/pytorch_lora_weights.safetensors");

    private protected override void WriteFolder(string dir) => TinyAuraFlowPipelineFolder.Write(dir);
}

/// <summary><see cref="TransformerLoraServeTests"/> with the tiny Sana folder (64 x 64 through resolution binning, as SanaServeTests).</summary>
public sealed class SanaLoraServeTests : TransformerLoraServeTests
{
    private protected override string Lora => Fixtures.Path("local-diffusers/sana-lora/pytorch_lora_weights.safetensors");

    private protected override void WriteFolder(string dir) => TinySanaPipelineFolder.Write(dir);

    private protected override string[] SizeArgs => ["--width", "64", "--height", "64"];

    private protected override object Body(double scale) => new { prompt = "a teddy bear", steps = 2, width = 64, height = 64, seed = 5, lora_scale = scale };
}
