using DiffusersSharp.Images;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Cli;

/// <summary>generate, img2img and inpaint with a Flux model folder (model_index.json FluxPipeline), and the options refused for it before loading.</summary>
public sealed class FluxCliTests : CliTempDirectory
{
    private readonly string _model;

    public FluxCliTests() : base("flux-cli")
    {
        _model = Path.Combine(Dir, "model");
        TinyFluxPipelineFolder.Write(_model);
    }

    [Fact]
    public void GenerateWithAFluxFolderWritesTheRequestedSizeReproducibly()
    {
        string[] Args(string output) => ["generate", "--model", _model, "--prompt", "a teddy bear", "--negative-prompt", "blurry", "--true-cfg", "2",
            "--steps", "2", "--guidance", "3.5", "--width", "48", "--height", "32", "--seed", "7", "--max-sequence-length", "16", "--output", output];
        var (code, stdout, stderr) = CliRunner.Run(Args(Out()));
        Assert.True(code == 0, stderr);
        Assert.Equal(Path.GetFullPath(Out()), stdout.Trim());
        var image = ImageFile.Load(Out());
        Assert.Equal((48, 32), (image.Width, image.Height));
        string parameters = ImageFile.ReadPngText(Out())["parameters"];
        Assert.Contains("CFG scale: 3.5", parameters);
        Assert.Contains("True CFG scale: 2", parameters);
        Assert.Contains("Sampler: FlowMatchEulerDiscrete", parameters);
        var again = CliRunner.Run(Args(Out("again.png")));
        Assert.Equal(0, again.Code);
        Assert.Equal(image.Pixels, ImageFile.Load(Out("again.png")).Pixels);
    }

    [Fact]
    public void ALoraChangesTheFluxImageByItsScale()
    {
        // A diffusers-format LoRA on the first double block's query: scale 0 is the plain image, scale 1 another one.
        var loaded = new Dictionary<string, TorchSharp.torch.Tensor>();
        using (var file = DiffusersSharp.IO.SafetensorsFile.Open(Path.Combine(_model, "transformer", "diffusion_pytorch_model.safetensors")))
        {
            var w = file.Tensors["transformer_blocks.0.attn.to_q.weight"].Shape;
            loaded["transformer.transformer_blocks.0.attn.to_q.lora_A.weight"] = TorchSharp.torch.randn(2, w[1]);
            loaded["transformer.transformer_blocks.0.attn.to_q.lora_B.weight"] = TorchSharp.torch.randn(w[0], 2);
        }
        string lora = Out("lora.safetensors");
        DiffusersSharp.IO.SafetensorsWriter.Save(lora, loaded);
        string[] Args(string output, params string[] extra) => ["generate", "--model", _model, "--prompt", "a teddy bear", "--steps", "2",
            "--width", "48", "--height", "32", "--seed", "5", "--max-sequence-length", "16", "--output", output, .. extra];
        Assert.Equal(0, CliRunner.Run(Args(Out("plain.png"))).Code);
        var zero = CliRunner.Run(Args(Out("zero.png"), "--lora", lora, "--lora-scale", "0"));
        Assert.True(zero.Code == 0, zero.Err);
        Assert.Equal(0, CliRunner.Run(Args(Out("one.png"), "--lora", lora)).Code);
        Assert.Equal(ImageFile.Load(Out("plain.png")).Pixels, ImageFile.Load(Out("zero.png")).Pixels);
        Assert.NotEqual(ImageFile.Load(Out("plain.png")).Pixels, ImageFile.Load(Out("one.png")).Pixels);
        Assert.Contains("Lora: lora.safetensors:1", ImageFile.ReadPngText(Out("one.png"))["parameters"]);
    }

    [Theory]
    [InlineData("--scheduler", "euler")]
    [InlineData("--clip-skip", "1")]
    [InlineData("--prompt-3", "x")]
    [InlineData("--width", "40")]
    public void OptionsFluxDoesNotHaveAreRefusedBeforeLoading(string option, string value)
    {
        var (code, _, stderr) = CliRunner.Run("generate", "--model", _model, "--prompt", "x", option, value, "--output", Out());
        Assert.Equal(2, code);
        Assert.Contains(option, stderr);
        Assert.DoesNotContain("loading", stderr);
        Assert.False(File.Exists(Out()));
    }

    [Fact]
    public void Img2ImgAndInpaintWithAFluxFolderWriteTheRequestedSize()
    {
        string image = Fixtures.Path("tiny-sd3/init_image.png"), mask = Fixtures.Path("tiny-sd3/mask.png");
        string[] Common(string output) => ["--model", _model, "--prompt", "a teddy bear", "--steps", "4", "--width", "48", "--height", "32",
            "--seed", "3", "--max-sequence-length", "16", "--image", image, "--output", output];
        var i2i = CliRunner.Run(["img2img", .. Common(Out("i2i.png")), "--strength", "0.5"]);
        Assert.True(i2i.Code == 0, i2i.Err);
        Assert.Equal(Path.GetFullPath(Out("i2i.png")), i2i.Out.Trim());
        Assert.Equal((48, 32), (ImageFile.Load(Out("i2i.png")).Width, ImageFile.Load(Out("i2i.png")).Height));
        string parameters = ImageFile.ReadPngText(Out("i2i.png"))["parameters"];
        Assert.Contains("Mode: img2img", parameters);
        Assert.Contains("Denoising strength: 0.5", parameters);
        Assert.Contains("CFG scale: 7,", parameters); // diffusers' Flux img2img default guidance

        string[] Inpaint(string output) => ["inpaint", .. Common(output), "--mask", mask, "--guidance", "3"];
        var inpaint = CliRunner.Run(Inpaint(Out("inpaint.png")));
        Assert.True(inpaint.Code == 0, inpaint.Err);
        var written = ImageFile.Load(Out("inpaint.png"));
        Assert.Equal((48, 32), (written.Width, written.Height));
        parameters = ImageFile.ReadPngText(Out("inpaint.png"))["parameters"];
        Assert.Contains("Mode: inpaint", parameters);
        Assert.Contains("Denoising strength: 0.6", parameters); // the pipeline's default
        Assert.Contains("CFG scale: 3,", parameters);
        var again = CliRunner.Run(Inpaint(Out("again.png")));
        Assert.Equal(0, again.Code);
        Assert.Equal(written.Pixels, ImageFile.Load(Out("again.png")).Pixels);
    }

    [Theory]
    [InlineData("img2img", "--scheduler", "euler")]
    [InlineData("img2img", "--no-t5", null)]
    [InlineData("inpaint", "--clip-skip", "1")]
    [InlineData("inpaint", "--height", "40")]
    [InlineData("inpaint", "--eta", "0.5")]
    public void Img2ImgAndInpaintRefuseWhatFluxLacksBeforeLoading(string verb, string option, string? value)
    {
        List<string> args = [verb, "--model", _model, "--prompt", "x", "--image", Fixtures.Path("tiny-sd3/init_image.png"), "--output", Out(), option];
        if (value is not null) args.Add(value);
        if (verb == "inpaint") args.AddRange(["--mask", Fixtures.Path("tiny-sd3/mask.png")]);
        var (code, _, stderr) = CliRunner.Run([.. args]);
        Assert.Equal(2, code);
        Assert.Contains(option, stderr);
        Assert.DoesNotContain("loading", stderr);
        Assert.False(File.Exists(Out()));
    }

    [Fact]
    public void TrueCfgOnOtherFamiliesIsRefused()
    {
        var sd3 = CliRunner.Run("generate", "--model", Fixtures.TinySd3Model, "--prompt", "x", "--true-cfg", "2", "--output", Out());
        Assert.Equal(2, sd3.Code);
        Assert.Contains("--true-cfg applies to Flux", sd3.Err);
    }
}
