using DiffusersSharp.IO;
using DiffusersSharp.Models.Unets;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// UNet2DConditionModel's class embeddings and per-block only_cross_attention against diffusers' own forward (fixture
/// local-diffusers/sd-upscale, made by tools/reference/sd_upscale.py with diffusers 0.36.0 on torch 1.13 CPU, float32): the
/// tiny x4 upscaler UNet (num_class_embeds 1000, only_cross_attention [true, true, true, false], linear projections,
/// 7 input channels) at 12 x 20 with two noise levels, and the same UNet with class_embed_type "timestep", "identity",
/// "projection" and "simple_projection" (class embedding redrawn by diffusers, stored in the fixture); within the UNet parity
/// bound, 5e-5 x max(1, max |expected|). Full-size x4 upscaler counts against diffusers'.
/// </summary>
public sealed class UNetClassEmbeddingTests(ITestOutputHelper output)
{
    private const double Tolerance = 5e-5;
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected("local-diffusers/sd-upscale/expected.safetensors");
    private static string UnetFolder => Fixtures.Path("local-diffusers/sd-upscale/model/unet");

    private void Close(Tensor actual, string key) =>
        output.WriteLine($"{key}: max |diff| {TensorAssert.Close(actual, Expected[key], Tolerance, key):G3} (max |expected| {Expected[key].abs().max().item<float>():G3})");

    [Fact]
    public void TheUpscalerUnetMatchesDiffusers()
    {
        using var unet = UNet2DConditionModel.FromPretrained(UnetFolder);
        Assert.Equal("embedding", unet.Config.ClassEmbeddingKind);
        using var scope = NewDisposeScope();
        using var _ = inference_mode();
        var y = unet.forward(Expected["unet.sample"], Expected["unet.timestep"], Expected["unet.encoder_hidden_states"], classLabels: Expected["unet.class_labels"]);
        Close(y, "unet.out");
        // The noise level matters: another label gives another prediction.
        var other = unet.forward(Expected["unet.sample"], Expected["unet.timestep"], Expected["unet.encoder_hidden_states"], classLabels: tensor(new long[] { 21, 350 }));
        Assert.True((other - y).narrow(0, 0, 1).abs().max().item<float>() > 1e-4);
        TensorAssert.Close(other.narrow(0, 1, 1), y.narrow(0, 1, 1), 1e-6, "the unchanged second sample");
    }

    [Theory]
    [InlineData("timestep")]
    [InlineData("identity")]
    [InlineData("projection")]
    [InlineData("simple_projection")]
    public void OtherClassEmbeddingTypesMatchDiffusers(string kind)
    {
        using var unet = Variant(kind);
        using var scope = NewDisposeScope();
        using var _ = inference_mode();
        Close(unet.forward(Expected["unet.sample"], Expected["unet.timestep"], Expected["unet.encoder_hidden_states"], classLabels: Expected[$"in.{kind}.class_labels"]),
            $"unet_{kind}.out");
    }

    /// <summary>The fixture UNet with class_embed_type <paramref name="kind"/>: its weights, the class embedding the script drew.</summary>
    private static UNet2DConditionModel Variant(string kind)
    {
        using var source = UNet2DConditionModel.FromPretrained(UnetFolder);
        var config = source.Config with
        {
            NumClassEmbeds = null, ClassEmbedType = kind,
            ProjectionClassEmbeddingsInputDim = kind.EndsWith("projection", StringComparison.Ordinal) ? 12 : null,
        };
        var variant = new UNet2DConditionModel(config);
        var weights = source.state_dict();
        using (no_grad())
        {
            var names = variant.named_parameters().Select(p => p.name).ToList();
            Assert.Equal(Expected.Keys.Count(k => k.StartsWith($"in.{kind}.class_embedding.", StringComparison.Ordinal)),
                names.Count(n => n.StartsWith("class_embedding.", StringComparison.Ordinal)));
            foreach (var (name, parameter) in variant.named_parameters())
                parameter.copy_(name.StartsWith("class_embedding.", StringComparison.Ordinal) ? Expected[$"in.{kind}.{name}"] : weights[name]);
        }
        variant.eval();
        return variant;
    }

    [Fact]
    public void ClassLabelsAreCheckedBeforeCompute()
    {
        using var unet = UNet2DConditionModel.FromPretrained(UnetFolder);
        using var identity = Variant("identity");
        using var scope = NewDisposeScope();
        var sample = zeros(2, 7, 8, 8);
        var text = zeros(2, 5, 32);
        var t = tensor(10f);
        void Throws(string fragment, Action call)
        {
            var e = Assert.Throws<ArgumentException>(call);
            Assert.Equal("class_labels", e.ParamName);
            Assert.Contains(fragment, e.Message);
        }
        Throws("class_labels are required", () => unet.forward(sample, t, text));
        Throws("[0, 1000)", () => unet.forward(sample, t, text, classLabels: tensor(new long[] { 20, 1000 })));
        Throws("[0, 1000)", () => unet.forward(sample, t, text, classLabels: tensor(new long[] { -1, 3 })));
        Throws("integer class indices", () => unet.forward(sample, t, text, classLabels: tensor(new float[] { 20, 30 })));
        Throws("integer class indices", () => unet.forward(sample, t, text, classLabels: tensor(new long[] { 1, 2, 3 })));
        Throws("[B=2 or 1, 64]", () => identity.forward(sample, t, text, classLabels: zeros(2, 12)));
        using var plain = UNet2DConditionModel.FromPretrained(Fixtures.Path("tiny-sd15/model/unet"));
        Throws("no class embedding", () => plain.forward(zeros(1, 4, 8, 8), t, zeros(1, 5, 32), classLabels: tensor(new long[] { 3 })));
        // One label for the batch broadcasts, as diffusers adds [1, D] to [B, D].
        using var _ = inference_mode();
        var shared = unet.forward(sample, t, text, classLabels: tensor(new long[] { 7 }));
        var each = unet.forward(sample, t, text, classLabels: tensor(new long[] { 7, 7 }));
        TensorAssert.Close(shared, each, 1e-6, "one label for all");
    }

    [Fact]
    public void UnknownClassEmbedTypesAndConcatAreRefusedByName()
    {
        var config = ConfigJson.Read<UNet2DConditionModelConfig>(Path.Combine(UnetFolder, "config.json"));
        Assert.Contains("class_embed_type", Assert.Throws<NotSupportedException>(() => new UNet2DConditionModel(config with { ClassEmbedType = "learned" }, new Device(DeviceType.META))).Message);
        Assert.Contains("class_embeddings_concat", Assert.Throws<NotSupportedException>(() => new UNet2DConditionModel(config with { ClassEmbeddingsConcat = true }, new Device(DeviceType.META))).Message);
        Assert.Contains("projection_class_embeddings_input_dim", Assert.Throws<ArgumentException>(() =>
            new UNet2DConditionModel(config with { NumClassEmbeds = null, ClassEmbedType = "projection" }, new Device(DeviceType.META))).Message);
        Assert.Contains("num_class_embeds must be positive", Assert.Throws<ArgumentException>(() =>
            new UNet2DConditionModel(config with { NumClassEmbeds = 0 }, new Device(DeviceType.META))).Message);
    }

    [Fact]
    public void OnlyCrossAttentionFollowsTheBlocksOfTheUpscaler()
    {
        // [true, true, true, false] down; reversed for the up blocks: the first up block (level 3) self-attends.
        using var unet = new UNet2DConditionModel(ConfigJson.Read<UNet2DConditionModelConfig>(Path.Combine(UnetFolder, "config.json")), new Device(DeviceType.META));
        var sd = unet.state_dict();
        Assert.Equal(new long[] { 16, 32 }, sd["down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_k.weight"].shape);
        Assert.Equal(new long[] { 32, 32 }, sd["down_blocks.3.attentions.0.transformer_blocks.0.attn1.to_k.weight"].shape);
        Assert.Equal(new long[] { 32, 32 }, sd["up_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k.weight"].shape);
        Assert.Equal(new long[] { 16, 32 }, sd["up_blocks.2.attentions.2.transformer_blocks.0.attn1.to_k.weight"].shape);
        Assert.Equal(new long[] { 1000, 64 }, sd["class_embedding.weight"].shape);
    }

    [Fact]
    public void FullSizeX4UpscalerUnetAndVaeHaveDiffusersCounts()
    {
        string full = Fixtures.Path("local-diffusers/sd-upscale/full-size");
        var counts = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(full, "counts.json")))!;
        using var unet = new UNet2DConditionModel(ConfigJson.Read<UNet2DConditionModelConfig>(Path.Combine(full, "unet", "config.json")), new Device(DeviceType.META));
        using var vae = new DiffusersSharp.Models.Autoencoders.AutoencoderKL(
            ConfigJson.Read<DiffusersSharp.Models.Autoencoders.AutoencoderKLConfig>(Path.Combine(full, "vae", "config.json")), new Device(DeviceType.META));
        foreach (var (name, model) in new (string, nn.Module)[] { ("unet", unet), ("vae", vae) })
        {
            long parameters = model.parameters().Sum(p => p.numel());
            output.WriteLine($"{name}: {parameters:N0} parameters, {model.state_dict().Count} tensors");
            Assert.Equal((long)counts[name]!["parameters"]!, parameters);
            Assert.Equal((long)counts[name]!["tensors"]!, model.state_dict().Count);
        }
    }
}
