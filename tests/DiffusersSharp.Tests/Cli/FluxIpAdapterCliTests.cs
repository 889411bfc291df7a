using DiffusersSharp.Images;
using DiffusersSharp.Tests.Pipelines;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Cli;

/// <summary><c>generate / img2img --ip-adapter</c> with Flux folders: runs on the tiny Flux models (text-to-image,
/// image-to-image with true CFG, Kontext editing, ControlNet) with the fixture's XLabs-layout adapter and tiny image
/// encoder (wiring tests; the numbers are checked by FluxIpAdapterParityTests), and what diffusers lacks refused before
/// loading.</summary>
public sealed class FluxIpAdapterCliTests : CliTempDirectory
{
    private readonly string _model;
    private static readonly string Adapter = Fixtures.Path(FluxIpAdapterParityTests.Adapter);
    private static readonly string Encoder = Fixtures.Path(FluxIpAdapterParityTests.ImageEncoder);
    private static readonly string Image = Fixtures.Path("tiny-sd3/init_image.png");

    public FluxIpAdapterCliTests() : base("flux-ipadapter-cli")
    {
        _model = Path.Combine(Dir, "model");
        TinyFluxPipelineFolder.Write(_model);
    }

    private string[] Args(string verb, string output, params string[] extra) => [verb, "--model", _model, "--prompt", "a teddy bear", "--steps", "2",
        "--width", "32", "--height", "32", "--seed", "5", "--max-sequence-length", "16", "--output", output, .. extra];

    [Fact]
    public void GenerateAndImg2ImgWithAFluxIpAdapterRun()
    {
        var (code, _, stderr) = CliRunner.Run(Args("generate", Out(), "--ip-adapter", Adapter, "--ip-adapter-image", Image,
            "--ip-adapter-image-encoder", Encoder, "--ip-adapter-scale", "0.8"));
        Assert.True(code == 0, stderr);
        Assert.Contains("loaded IP-Adapter", stderr);
        (code, _, stderr) = CliRunner.Run(Args("generate", Out("plain.png")));
        Assert.True(code == 0, stderr);
        Assert.NotEqual(ImageFile.Load(Out()).Pixels, ImageFile.Load(Out("plain.png")).Pixels);
        // True CFG with the image prompt: the negative pass takes diffusers' all-black image through the encoder.
        (code, _, stderr) = CliRunner.Run(Args("img2img", Out("i2i.png"), "--image", Image, "--negative-prompt", "blurry", "--true-cfg", "2",
            "--ip-adapter", Adapter, "--ip-adapter-image", Image, "--ip-adapter-image-encoder", Encoder));
        Assert.True(code == 0, stderr);
    }

    [Fact]
    public void KontextEditingAndControlNetWithAFluxIpAdapterRun()
    {
        string kontext = Path.Combine(Dir, "kontext");
        TinyFluxPipelineFolder.Write(kontext, pipelineClass: "FluxKontextPipeline");
        var (code, _, stderr) = CliRunner.Run(["img2img", "--model", kontext, "--prompt", "a hat", "--image", Image, "--steps", "2", "--width", "32",
            "--height", "32", "--seed", "5", "--max-sequence-length", "16", "--output", Out("kontext.png"),
            "--ip-adapter", Adapter, "--ip-adapter-image", Image, "--ip-adapter-image-encoder", Encoder]);
        Assert.True(code == 0, stderr);
        (code, _, stderr) = CliRunner.Run(Args("generate", Out("cn.png"), "--controlnet", Fixtures.Path("local-diffusers/flux-controlnet/controlnet"),
            "--control-image", Image, "--ip-adapter", Adapter, "--ip-adapter-image", Image, "--ip-adapter-image-encoder", Encoder));
        Assert.True(code == 0, stderr);
    }

    [Fact]
    public void FluxVariantsAndMissingEncoderAreRefusedBeforeLoading()
    {
        string fill = Path.Combine(Dir, "fill");
        TinyFluxPipelineFolder.Write(fill, pipelineClass: "FluxFillPipeline", inChannels: 384);
        var (code, _, stderr) = CliRunner.Run(["inpaint", "--model", fill, "--prompt", "a", "--image", Image, "--mask", Fixtures.Path("tiny-sd3/mask.png"),
            "--ip-adapter", Adapter, "--ip-adapter-image", Image, "--ip-adapter-image-encoder", Encoder, "--output", Out()]);
        Assert.Equal(2, code);
        Assert.Contains("--ip-adapter does not apply to FLUX.1-Fill", stderr);
        (code, _, stderr) = CliRunner.Run(Args("img2img", Out(), "--image", Image, "--controlnet", Fixtures.Path("local-diffusers/flux-controlnet/controlnet"),
            "--control-image", Image, "--ip-adapter", Adapter, "--ip-adapter-image", Image, "--ip-adapter-image-encoder", Encoder));
        Assert.Equal(2, code);
        Assert.Contains("applies to generate only", stderr);
        // The adapter's folder has no image_encoder beside it (as XLabs' repo): the option must name one.
        (code, _, stderr) = CliRunner.Run(Args("generate", Out(), "--ip-adapter", Adapter, "--ip-adapter-image", Image));
        Assert.Equal(2, code);
        Assert.Contains("openai/clip-vit-large-patch14", stderr);
        // An encoder of another width than the adapter's is refused when the adapter loads.
        (code, _, stderr) = CliRunner.Run(Args("generate", Out(), "--ip-adapter", Adapter, "--ip-adapter-image", Image,
            "--ip-adapter-image-encoder", Fixtures.Path("local-diffusers/transformers-encoders/image_encoder_gelu")));
        Assert.NotEqual(0, code);
        Assert.Contains("width 24", stderr);
    }
}
