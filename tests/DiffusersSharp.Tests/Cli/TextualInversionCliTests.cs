using DiffusersSharp.Images;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Cli;

/// <summary><c>--textual-inversion FILE[:TOKEN]</c>: checks before loading, runs on tiny-sd15 and tiny-sdxl (a wiring test;
/// the loading itself is checked against diffusers by TextualInversionParityTests / TextualInversionTests).</summary>
public sealed class TextualInversionCliTests() : CliTempDirectory("ti-cli")
{
    private static readonly string Sd15 = Fixtures.Path("tiny-sd15/model");
    private static readonly string Sdxl = Fixtures.Path("tiny-sdxl/model");

    private static string Embedding(string file) => Fixtures.Path("local-diffusers/textual-inversion/embeddings/" + file);

    private static readonly string[] Small = ["--steps", "2", "--width", "64", "--height", "64", "--seed", "3"];

    [Fact]
    public void GenerateWithAMultiVectorEmbedding()
    {
        var (code, _, stderr) = CliRunner.Run(["generate", "--model", Sd15, "--prompt", "a photo of <multi>", "--textual-inversion", Embedding("multi.safetensors"), .. Small, "--output", Out()]);
        Assert.True(code == 0, stderr);
        Assert.Contains("loaded textual inversion <multi>, <multi>_1, <multi>_2 into text_encoder from", stderr);
        Assert.Contains("Textual inversion: multi.safetensors", ImageFile.ReadPngText(Out())["parameters"]);
        // Without the embedding "<multi>" is plain text and the image another.
        (code, _, stderr) = CliRunner.Run(["generate", "--model", Sd15, "--prompt", "a photo of <multi>", .. Small, "--output", Out("plain.png")]);
        Assert.True(code == 0, stderr);
        Assert.NotEqual(ImageFile.Load(Out()).Pixels, ImageFile.Load(Out("plain.png")).Pixels);
    }

    [Fact]
    public void TokensFromTheArgumentAndSdxlHalves()
    {
        var (code, _, stderr) = CliRunner.Run(["img2img", "--model", Sd15, "--prompt", "<kitty>", "--image", Fixtures.Path("tiny-sd15/init_image.png"),
            "--textual-inversion", Embedding("single.safetensors") + ":<kitty>", "--textual-inversion", Embedding("emb_params.safetensors") + ":<style>", .. Small, "--output", Out()]);
        Assert.True(code == 0, stderr);
        Assert.Contains("loaded textual inversion <kitty> into text_encoder", stderr);
        Assert.Contains("loaded textual inversion <style>, <style>_1 into text_encoder", stderr);
        (code, _, stderr) = CliRunner.Run(["generate", "--model", Sdxl, "--prompt", "<s> style", "--textual-inversion", Embedding("sdxl.safetensors") + ":<s>",
            "--steps", "1", "--width", "64", "--height", "64", "--output", Out("xl.png")]);
        Assert.True(code == 0, stderr);
        Assert.Contains("loaded textual inversion <s>, <s>_1 into text_encoder and text_encoder_2", stderr);
    }

    [Fact]
    public void OptionsAreCheckedBeforeLoading()
    {
        string pickle = Path.Combine(Dir, "learned_embeds.bin");
        File.WriteAllBytes(pickle, [0x80, 0x02]);
        (string[] Args, string Message)[] cases =
        [
            (["--model", Fixtures.TinySd3Model, "--textual-inversion", Embedding("single.safetensors")], "--textual-inversion applies to SD 1.x / 2.x, SDXL and Flux models"),
            (["--model", Sd15, "--textual-inversion", pickle], "pickle"),
            (["--model", Sd15, "--textual-inversion", Path.Combine(Dir, "absent.safetensors")], "not found"),
            (["--model", Sd15, "--textual-inversion", Embedding("single.safetensors") + ":"], "the token after ':' is empty"),
            (["--model", Sd15, "--textual-inversion", Embedding("sdxl.safetensors") + ":<s>"], "is an SDXL embedding (clip_l / clip_g)"),
            (["--model", Sdxl, "--textual-inversion", Embedding("sdxl.safetensors")], "names no token: give FILE:TOKEN"),
            (["--model", Sd15, "--textual-inversion", Embedding("wide.safetensors")], "Loaded embeddings are of incorrect shape"),
            (["--model", Sd15, "--textual-inversion", Embedding("single.safetensors") + ":dog</w>"], "already in tokenizer vocabulary"),
        ];
        foreach (var (args, message) in cases)
        {
            var (code, _, stderr) = CliRunner.Run(["generate", "--prompt", "a", "--steps", "1", .. args, "--output", Out()]);
            Assert.True(code == 2, $"{string.Join(' ', args)}: exit {code}: {stderr}");
            Assert.Contains(message, stderr);
        }
        var serve = CliRunner.Run("serve", "--model", Sd15, "--textual-inversion", pickle);
        Assert.Equal(2, serve.Code);
        Assert.Contains("pickle", serve.Err);
    }
}
