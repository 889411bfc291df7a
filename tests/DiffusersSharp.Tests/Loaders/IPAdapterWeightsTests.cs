using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Loaders;
using DiffusersSharp.Models.Unets;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Loaders;

/// <summary>IP-Adapter loading (strict keys and shapes, kinds not implemented, diffusers' layer order) and the pipelines' input checks.</summary>
public sealed class IPAdapterWeightsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("ipadapter").FullName;
    private static readonly string Sd15File = Fixtures.Path("local-diffusers/ip-adapter/sd15/ip-adapter.safetensors");

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static Dictionary<string, Tensor> Read(string path)
    {
        using var file = SafetensorsFile.Open(path);
        return file.ReadAll();
    }

    private string Write(string name, Dictionary<string, Tensor> tensors)
    {
        string path = Path.Combine(_dir, name);
        SafetensorsWriter.Save(path, tensors);
        return path;
    }

    private static UNet2DConditionModel Unet() => UNet2DConditionModel.FromPretrained(Fixtures.Path("tiny-sd15/model/unet"));

    [Fact]
    public void LoadingAttachesDiffusersKeysInDiffusersOrder()
    {
        using var unet = Unet();
        int before = unet.state_dict().Count;
        IPAdapterWeights.Load(unet, Sd15File);
        var file = Read(Sd15File);
        var keys = unet.state_dict();
        // 4 projection tensors + 2 per cross-attention layer, named as diffusers' UNet names them after load_ip_adapter.
        Assert.Equal(before + file.Count, keys.Count);
        Assert.True(keys["encoder_hid_proj.image_projection_layers.0.image_embeds.weight"].eq(file["image_proj.proj.weight"]).all().item<bool>());
        // diffusers' order: down blocks, then up blocks, then the mid block (N = 2k + 1).
        Assert.True(keys["down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_ip.0.weight"].eq(file["ip_adapter.1.to_k_ip.weight"]).all().item<bool>());
        Assert.True(keys["up_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.to_v_ip.0.weight"].eq(file["ip_adapter.13.to_v_ip.weight"]).all().item<bool>());
        Assert.True(keys["mid_block.attentions.0.transformer_blocks.0.attn2.processor.to_k_ip.0.weight"].eq(file["ip_adapter.31.to_k_ip.weight"]).all().item<bool>());
        Assert.Equal([1.0], unet.IpAdapterScales);
        Assert.Throws<InvalidOperationException>(() => IPAdapterWeights.Load(unet, Sd15File));
    }

    [Fact]
    public void LoadingIsStrict()
    {
        var file = Read(Sd15File);
        var missing = new Dictionary<string, Tensor>(file);
        missing.Remove("ip_adapter.31.to_v_ip.weight");
        var extra = new Dictionary<string, Tensor>(file) { ["ip_adapter.33.to_k_ip.weight"] = zeros(64, 32) };
        var shape = new Dictionary<string, Tensor>(file) { ["ip_adapter.1.to_k_ip.weight"] = zeros(64, 32) };
        using var unet = Unet();
        Assert.Contains("ip_adapter.31.to_v_ip.weight", Assert.Throws<WeightLoadException>(() => IPAdapterWeights.Load(unet, Write("missing.safetensors", missing))).Message);
        Assert.Contains("ip_adapter.33.to_k_ip.weight", Assert.Throws<WeightLoadException>(() => IPAdapterWeights.Load(unet, Write("extra.safetensors", extra))).Message);
        Assert.Contains("ip_adapter.1.to_k_ip.weight", Assert.Throws<WeightLoadException>(() => IPAdapterWeights.Load(unet, Write("shape.safetensors", shape))).Message);
        Assert.False(unet.HasIpAdapter); // nothing attached by a failed load
        var sdxl = Fixtures.Path("local-diffusers/ip-adapter/sdxl/ip-adapter.safetensors");
        Assert.Throws<WeightLoadException>(() => IPAdapterWeights.Load(unet, sdxl));
        var plus = new Dictionary<string, Tensor> { ["image_proj.latents"] = zeros(1, 16, 32), ["ip_adapter.1.to_k_ip.weight"] = zeros(32, 32) };
        Assert.Contains("IP-Adapter Plus", Assert.Throws<NotSupportedException>(() => IPAdapterWeights.Load(unet, Write("plus.safetensors", plus))).Message);
    }

    /// <summary>ip_adapter_image runs diffusers' encode_image path: feature extractor, image encoder's image_embeds, zeros
    /// as the negative; the same as passing those embeddings.</summary>
    [Fact]
    public void IpAdapterImageEqualsItsEncodedEmbeddings()
    {
        using var components = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions());
        components.LoadIpAdapter(Sd15File, TinyImageEncoder.Write(_dir));
        Assert.NotNull(components.ImageEncoder);
        Assert.Equal(32, components.FeatureExtractor!.Size);
        using var pipe = new StableDiffusionPipeline(components);
        var image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd15/init_image.png"));
        Tensor embeds;
        using (var pixels = components.FeatureExtractor.Preprocess([image]))
        using (var encoded = components.ImageEncoder!.Forward(pixels))
            embeds = cat([zeros_like(encoded.ImageEmbeds), encoded.ImageEmbeds], 0).unsqueeze(1);
        var r = new StableDiffusionRequest { PromptEmbeds = randn(1, 77, 32), NumInferenceSteps = 2, Height = 64, Width = 64, OutputType = OutputType.Latent };
        using var fromImage = pipe.Generate(r with { IpAdapterImage = [image], IpAdapterScale = 0.7, Generator = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(5) });
        using var fromEmbeds = pipe.Generate(r with { IpAdapterImageEmbeds = [embeds], IpAdapterScale = 0.7, Generator = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(5) });
        using var without = pipe.Generate(r with { Generator = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(5) });
        Assert.Equal(0, (fromImage.Tensor! - fromEmbeds.Tensor!).abs().max().item<float>());
        Assert.True((fromImage.Tensor! - without.Tensor!).abs().max().item<float>() > 1e-3); // the image does change the result
    }

    /// <summary>IP-Adapter Plus with ip_adapter_image: the image encoder's penultimate hidden states, the negative those of
    /// an all-zero image (diffusers' encode_image with output_hidden_states).</summary>
    [Fact]
    public void PlusImageUsesPenultimateHiddenStates()
    {
        using var components = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions());
        components.LoadIpAdapter(Fixtures.Path("local-diffusers/ip-adapter/sd15/ip-adapter-plus.safetensors"), TinyImageEncoder.Write(_dir));
        using var pipe = new StableDiffusionPipeline(components);
        var image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd15/init_image.png"));
        Tensor embeds;
        using (var pixels = components.FeatureExtractor!.Preprocess([image]))
        using (var encoded = components.ImageEncoder!.Forward(pixels, outputHiddenStates: true))
        using (var zero = components.ImageEncoder!.Forward(zeros_like(pixels), outputHiddenStates: true))
            embeds = cat([zero.HiddenStates[^2], encoded.HiddenStates[^2]], 0).unsqueeze(1);
        var r = new StableDiffusionRequest { PromptEmbeds = randn(1, 77, 32), NumInferenceSteps = 2, Height = 64, Width = 64, OutputType = OutputType.Latent };
        using var fromImage = pipe.Generate(r with { IpAdapterImage = [image], Generator = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(5) });
        using var fromEmbeds = pipe.Generate(r with { IpAdapterImageEmbeds = [embeds], Generator = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(5) });
        Assert.Equal(0, (fromImage.Tensor! - fromEmbeds.Tensor!).abs().max().item<float>());
    }

    [Fact]
    public void PipelineChecksIpAdapterInputsAndRestoresTheScale()
    {
        using var components = StableDiffusionComponents.FromPretrained(Fixtures.Path("tiny-sd15/model"), new PipelineLoadOptions());
        using var pipe = new StableDiffusionPipeline(components);
        var embeds = randn(2, 1, 24);
        var r = new StableDiffusionRequest { PromptEmbeds = randn(1, 77, 32), NumInferenceSteps = 1, Height = 64, Width = 64, OutputType = OutputType.Latent };
        Assert.Contains("No IP-Adapter is loaded", Assert.Throws<ArgumentException>(() => pipe.Generate(r with { IpAdapterImageEmbeds = [embeds] })).Message);
        components.LoadIpAdapter(Sd15File);
        Assert.Contains("negative then the positive", Assert.Throws<ArgumentException>(() => pipe.Generate(r with { IpAdapterImageEmbeds = [randn(1, 1, 24)] })).Message);
        Assert.Contains("one entry per IP-Adapter", Assert.Throws<ArgumentException>(() => pipe.Generate(r with { IpAdapterImageEmbeds = [embeds, embeds] })).Message);
        Assert.Contains("must be [B, images, D] with D = 24", Assert.Throws<ArgumentException>(() => pipe.Generate(r with { IpAdapterImageEmbeds = [randn(2, 24)] })).Message);
        Assert.Contains("with D = 24, got [2, 1, 7]", Assert.Throws<ArgumentException>(() => pipe.Generate(r with { IpAdapterImageEmbeds = [randn(2, 1, 7)] })).Message);
        Assert.Contains("image encoder", Assert.Throws<ArgumentException>(() => pipe.Generate(r with { IpAdapterImage = [PipelineImage.FromTensor(rand(1, 3, 64, 64))] })).Message);
        components.SetIpAdapterScale(0.3);
        using var _ = pipe.Generate(r with { IpAdapterImageEmbeds = [embeds], IpAdapterScale = 0.9, Generator = new DiffusersSharp.Runtime.Generator("cpu").ManualSeed(1) });
        Assert.Equal([0.3], components.Unet.IpAdapterScales);
    }
}
