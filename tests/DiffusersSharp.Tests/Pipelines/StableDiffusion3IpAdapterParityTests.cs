using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Loaders;
using DiffusersSharp.Models.ImageEncoders;
using DiffusersSharp.Models.Transformers;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.StableDiffusion3;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;
using Generator = DiffusersSharp.Runtime.Generator;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>tiny-sd3 with the fixture's SD3 IP-Adapter loaded (its own components: loading changes the transformer).</summary>
public sealed class TinySd3IpAdapterPipeline : IDisposable
{
    public const string Folder = "local-diffusers/sd3-ip-adapter";

    public StableDiffusion3Components Components { get; } = Load();

    private static StableDiffusion3Components Load()
    {
        var components = StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions());
        components.LoadIpAdapter(Fixtures.Path($"{Folder}/ip-adapter.safetensors"));
        return components;
    }

    public void Dispose() => Components.Dispose();
}

/// <summary>
/// The SD3 IP-Adapter (InstantX/SD3.5-Large-IP-Adapter's layout) against diffusers' own code (fixture
/// local-diffusers/sd3-ip-adapter, made by tools/reference/sd3_ip_adapter.py with diffusers 0.36.0 on torch 1.13 CPU,
/// float32): the file loaded by diffusers' <c>load_ip_adapter</c> and by <see cref="IPAdapterWeights"/>, the Resampler,
/// one transformer forward at scales 0.5 / 1 / 0, and the three SD3 pipelines given the shared tiny-sd3 fixture's stored
/// prompt embeddings and <c>ip_adapter_image_embeds</c>, every step's latents and the decode. Bounds as the SD3 parity
/// tests (<see cref="StableDiffusion3LocalParityTests"/>): 5e-5 x max(1, max |expected|), for the same reason (torch
/// 1.13's float32 sin(t·f) at large t, which the Resampler's timestep features share).
/// </summary>
public sealed class StableDiffusion3IpAdapterParityTests(TinySd3IpAdapterPipeline fixture, ITestOutputHelper output)
    : IClassFixture<TinySd3IpAdapterPipeline>, IDisposable
{
    private const double Tolerance = 5e-5;
    private static readonly Dictionary<string, Tensor> Shared = Fixtures.Expected();
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected($"{TinySd3IpAdapterPipeline.Folder}/expected.safetensors");
    private readonly string _dir = Directory.CreateTempSubdirectory("sd3ipa").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string AdapterFile => Fixtures.Path($"{TinySd3IpAdapterPipeline.Folder}/ip-adapter.safetensors");

    private double Close(Tensor actual, string key)
    {
        double err = TensorAssert.Close(actual, Expected[key], Tolerance, key);
        output.WriteLine($"{key}: max |diff| {err:G3} (max |expected| {Expected[key].abs().max().item<float>():G3})");
        return err;
    }

    private static SD3Transformer2DModel LoadTransformer(string adapter)
    {
        var transformer = SD3Transformer2DModel.FromPretrained(Fixtures.Path("tiny-sd3/model/transformer"));
        IPAdapterWeights.Load(transformer, adapter);
        return transformer;
    }

    private static (Tensor Text, Tensor Pooled) CfgEmbeds() =>
        (cat([Shared["t2i.negative_prompt_embeds"], Shared["t2i.prompt_embeds"]]), cat([Shared["t2i.negative_pooled_prompt_embeds"], Shared["t2i.pooled_prompt_embeds"]]));

    [Fact]
    public void TransformerForwardMatchesDiffusersAtEachScale()
    {
        using var transformer = LoadTransformer(AdapterFile);
        Assert.Equal(0.5, transformer.IpAdapterScale); // diffusers' SD3IPAdapterJointAttnProcessor2_0 default
        using var _ = inference_mode();
        var (text, pooled) = CfgEmbeds();
        var latents = Expected["forward.hidden_states"];
        var features = Expected["forward.ip_adapter_image_embeds"];
        var timestep = Expected["forward.timestep"];

        var (tokens, temb) = transformer.ImageProj!.forward(features, timestep);
        Close(tokens, "forward.image_proj.tokens");
        Close(temb, "forward.image_proj.timestep_emb");
        foreach (var scale in new[] { 0.5, 1.0, 0.0 })
        {
            transformer.SetIpAdapterScale(scale);
            using var result = transformer.forward(latents, text, pooled, timestep, ip_adapter_image_embeds: features);
            Close(result, $"forward.scale{scale:0.0}");
        }
        using var plain = transformer.forward(latents, text, pooled, timestep);
        Close(plain, "forward.no_ip");
    }

    [Fact]
    public void DiffusersOwnResamplerNamesLoadTheSameWeights()
    {
        // diffusers' converter leaves keys already in its own names (layers.i.ln0, .attn.to_q ...) as they are.
        var weights = Fixtures.Expected($"{TinySd3IpAdapterPipeline.Folder}/ip-adapter.safetensors");
        var renamed = new Dictionary<string, Tensor>();
        foreach (var (key, value) in weights)
        {
            string k = key;
            if (k.StartsWith("image_proj.layers.", StringComparison.Ordinal))
            {
                int dot = k.IndexOf('.', "image_proj.layers.".Length);
                string prefix = k[..(dot + 1)], rest = k[(dot + 1)..];
                foreach (var (from, to) in new[] { ("0.norm1.", "ln0."), ("0.norm2.", "ln1."), ("0.to_q.", "attn.to_q."), ("0.to_kv.", "attn.to_kv."),
                             ("0.to_out.", "attn.to_out.0."), ("1.0.", "adaln_norm."), ("1.1.", "ff.net.0.proj."), ("1.3.", "ff.net.2."), ("2.1.", "adaln_proj.") })
                    if (rest.StartsWith(from, StringComparison.Ordinal))
                    {
                        k = prefix + to + rest[from.Length..];
                        break;
                    }
            }
            renamed[k] = value;
        }
        Assert.Contains("image_proj.layers.3.adaln_proj.weight", renamed.Keys);
        string path = Path.Combine(_dir, "diffusers-names.safetensors");
        SafetensorsWriter.Save(path, renamed);
        using var transformer = LoadTransformer(path);
        using var _ = inference_mode();
        var (tokens, _) = transformer.ImageProj!.forward(Expected["forward.ip_adapter_image_embeds"], Expected["forward.timestep"]);
        Close(tokens, "forward.image_proj.tokens");
    }

    [Fact]
    public void BadFilesAreRefusedBeforeAnythingChanges()
    {
        var weights = Fixtures.Expected($"{TinySd3IpAdapterPipeline.Folder}/ip-adapter.safetensors");
        string Write(string name, Dictionary<string, Tensor> w)
        {
            string path = Path.Combine(_dir, name);
            SafetensorsWriter.Save(path, w);
            return path;
        }
        using var transformer = SD3Transformer2DModel.FromPretrained(Fixtures.Path("tiny-sd3/model/transformer"));
        var missing = new Dictionary<string, Tensor>(weights);
        missing.Remove("ip_adapter.2.norm_ip_k.weight");
        var e = Assert.Throws<WeightLoadException>(() => IPAdapterWeights.Load(transformer, Write("missing.safetensors", missing)));
        Assert.Contains("ip_adapter.2.norm_ip_k.weight", e.Missing);
        var extra = new Dictionary<string, Tensor>(weights) { ["ip_adapter.3.to_k_ip.weight"] = zeros(32, 32) }; // tiny-sd3 has 3 attentions
        Assert.Contains("ip_adapter.3.to_k_ip.weight", Assert.Throws<WeightLoadException>(() => IPAdapterWeights.Load(transformer, Write("extra.safetensors", extra))).Unexpected);
        var narrow = new Dictionary<string, Tensor>(weights) { ["image_proj.proj_out.weight"] = zeros(24, 40), ["image_proj.proj_out.bias"] = zeros(24) };
        Assert.Throws<WeightLoadException>(() => IPAdapterWeights.Load(transformer, Write("narrow.safetensors", narrow)));
        Assert.False(transformer.HasIpAdapter);
        Assert.Throws<FileNotFoundException>(() => IPAdapterWeights.Load(transformer, Path.Combine(_dir, "none.safetensors")));
        string pickled = Path.Combine(_dir, "ip-adapter.bin");
        File.WriteAllBytes(pickled, [0x80, 0x02]);
        Assert.Contains("safetensors conversion", Assert.Throws<NotSupportedException>(() => IPAdapterWeights.Load(transformer, pickled)).Message, StringComparison.Ordinal);
        IPAdapterWeights.Load(transformer, AdapterFile);
        Assert.Throws<InvalidOperationException>(() => IPAdapterWeights.Load(transformer, AdapterFile));
        Assert.Contains("transformer_blocks.0.attn2.processor.norm_ip.linear.weight", transformer.state_dict().Keys);
        Assert.Contains("image_proj.layers.0.attn.to_kv.weight", transformer.state_dict().Keys);
    }

    private static T Prepared<T>(T request, string embeds, long seed, Action<StepEndContext>? onStep) where T : StableDiffusion3Request => request with
    {
        PromptEmbeds = Shared[$"{embeds}.prompt_embeds"], NegativePromptEmbeds = Shared[$"{embeds}.negative_prompt_embeds"],
        PooledPromptEmbeds = Shared[$"{embeds}.pooled_prompt_embeds"], NegativePooledPromptEmbeds = Shared[$"{embeds}.negative_pooled_prompt_embeds"],
        Generator = new Generator("cpu").ManualSeed(seed), OutputType = OutputType.Latent, CallbackOnStepEnd = onStep,
    };

    /// <summary>Runs the case as the script does: latents (checked after every step), then the decoded image.</summary>
    private void Check<T>(Func<T, StableDiffusion3Output> generate, T request, string name, string embeds, long seed) where T : StableDiffusion3Request
    {
        int steps = 0;
        using (var latents = generate(Prepared(request, embeds, seed, c => { Close(c.Latents, $"{name}.step{c.Step}.latents"); steps++; })))
            Close(latents.Tensor!, $"{name}.latents");
        Assert.Equal(Expected.Keys.Count(k => k.StartsWith($"{name}.step", StringComparison.Ordinal)), steps);
        using var image = generate(Prepared(request, embeds, seed, null) with { OutputType = OutputType.Numpy });
        Close(image.Tensor!, $"{name}.image");
    }

    private static Tensor CfgFeatures => Expected["ip_adapter_image_embeds"];

    [Theory]
    [InlineData("t2i", null)]      // scale 0.5 as loaded
    [InlineData("t2i_scale1", 1.0)] // diffusers: set_ip_adapter_scale(1.0); here for the call only
    public void TextToImageMatchesDiffusers(string name, double? scale)
    {
        using var pipe = new StableDiffusion3Pipeline(fixture.Components);
        Check(r => pipe.Generate(r), new StableDiffusion3Request
        {
            NumInferenceSteps = 4, GuidanceScale = 4.5, Height = 64, Width = 64, IpAdapterImageEmbeds = CfgFeatures, IpAdapterScale = scale,
        }, name, "t2i", 123456);
        Assert.Equal(0.5, fixture.Components.Transformer.IpAdapterScale); // the call's scale is undone
    }

    [Fact]
    public void TextToImageWithoutGuidanceRepeatsTheFeaturesPerImage()
    {
        using var pipe = new StableDiffusion3Pipeline(fixture.Components);
        Check(r => pipe.Generate(r), new StableDiffusion3Request
        {
            NumInferenceSteps = 3, GuidanceScale = 1.0, Height = 64, Width = 80, NumImagesPerPrompt = 2, IpAdapterImageEmbeds = CfgFeatures.narrow(0, 1, 1),
        }, "t2i_nocfg", "t2i_nocfg", 7);
    }

    [Fact]
    public void SkipLayerGuidanceMatchesDiffusers()
    {
        using var pipe = new StableDiffusion3Pipeline(fixture.Components);
        Check(r => pipe.Generate(r), new StableDiffusion3Request
        {
            NumInferenceSteps = 4, GuidanceScale = 4.5, Height = 64, Width = 64, SkipGuidanceLayers = [1], SkipLayerGuidanceScale = 2.8,
            SkipLayerGuidanceStart = 0.01, SkipLayerGuidanceStop = 0.6, IpAdapterImageEmbeds = CfgFeatures,
        }, "t2i_slg", "t2i", 99);
    }

    [Fact]
    public void ImageToImageMatchesDiffusers()
    {
        using var pipe = new StableDiffusion3Img2ImgPipeline(fixture.Components);
        Check(r => pipe.Generate(r), new StableDiffusion3Img2ImgRequest
        {
            Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), Strength = 0.7, NumInferenceSteps = 6, GuidanceScale = 7.0,
            Height = 64, Width = 64, IpAdapterImageEmbeds = CfgFeatures,
        }, "i2i", "t2i", 123456);
    }

    [Fact]
    public void InpaintingMatchesDiffusers()
    {
        using var pipe = new StableDiffusion3InpaintPipeline(fixture.Components);
        Check(r => pipe.Generate(r), new StableDiffusion3InpaintRequest
        {
            Image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), MaskImage = ImageFile.Load(Fixtures.Path("tiny-sd3/mask.png")),
            Strength = 0.99, NumInferenceSteps = 4, GuidanceScale = 7.0, Height = 64, Width = 64, IpAdapterImageEmbeds = CfgFeatures,
        }, "inpaint", "t2i", 42);
    }

    [Fact]
    public void ControlNetPipelineMatchesDiffusers()
    {
        // diffusers gives the ControlNet the same joint_attention_kwargs; its plain processors ignore the image features.
        using var components = StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions(),
            Fixtures.Path("local-diffusers/sd3-controlnet/controlnet"));
        components.LoadIpAdapter(AdapterFile);
        using var pipe = new StableDiffusion3ControlNetPipeline(components);
        Check(r => pipe.Generate(r with { ControlImageGenerator = new Generator("cpu").ManualSeed(3) }), new StableDiffusion3ControlNetRequest
        {
            ControlImage = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png")), NumInferenceSteps = 3, GuidanceScale = 4.5, Height = 64, Width = 64,
            ControlNetConditioningScale = 0.7, IpAdapterImageEmbeds = CfgFeatures,
        }, "controlnet", "t2i", 11);
    }

    [Fact]
    public void BadInputsAreRefusedBeforeAnyCompute()
    {
        using var pipe = new StableDiffusion3Pipeline(fixture.Components);
        StableDiffusion3Request Request(Tensor? embeds = null, double guidance = 4.5) => Prepared(new StableDiffusion3Request
        {
            NumInferenceSteps = 2, GuidanceScale = guidance, Height = 64, Width = 64, IpAdapterImageEmbeds = embeds,
        }, "t2i", 1, _ => throw new InvalidOperationException("no step may run"));
        void Refused(StableDiffusion3Request r, string words) =>
            Assert.Contains(words, Assert.Throws<ArgumentException>(() => pipe.Generate(r)).Message, StringComparison.Ordinal);

        Refused(Request(CfgFeatures.narrow(0, 1, 1)), "the negative then the positive");    // CFG needs both halves
        Refused(Request(CfgFeatures, guidance: 1.0), "[1, S, 32]");                          // no CFG: one row
        Refused(Request(zeros(2, 16, 24)), "[2, S, 32]");                                    // another feature width
        Refused(Request(CfgFeatures) with { IpAdapterImage = PipelineImage.FromTensor(zeros(1, 3, 28, 28)) }, "either");
        Refused(Request() with { IpAdapterScale = 0.7 }, "ip_adapter_scale needs");
        Refused(Request(CfgFeatures) with { IpAdapterScale = double.NaN }, "finite");
        Refused(Request() with { IpAdapterImage = PipelineImage.FromTensor(zeros(1, 3, 28, 28)) }, "image encoder");
        Refused(Request(CfgFeatures) with { NumImagesPerPrompt = 2, SkipGuidanceLayers = [1] }, "one image per call");

        using var plain = new StableDiffusion3Pipeline(TinySd3Pipeline.Shared); // no IP-Adapter loaded
        Assert.Contains("No IP-Adapter is loaded", Assert.Throws<ArgumentException>(() => plain.Generate(Request(CfgFeatures))).Message, StringComparison.Ordinal);
    }

    [Fact]
    public void AnImageGoesThroughTheSiglipEncoderAsDiffusersEncodeImage()
    {
        // local-diffusers/siglip-vision's encoder (checked against transformers there) has the adapter's 32-wide features.
        string encoderFolder = Fixtures.Path("local-diffusers/siglip-vision/image_encoder");
        using var components = StableDiffusion3Components.FromPretrained(Fixtures.TinySd3Model, new PipelineLoadOptions());
        components.LoadIpAdapter(AdapterFile, encoderFolder);
        Assert.NotNull(components.ImageEncoder);
        Assert.Equal(28, components.FeatureExtractor!.Size);
        using var pipe = new StableDiffusion3Pipeline(components);
        var image = ImageFile.LoadRgb(Fixtures.Path("tiny-sd3/init_image.png"));

        // By hand: SiglipImageProcessor, hidden_states[-2], zeros as the negative (diffusers' encode_image + prepare).
        Tensor features;
        using (var encoder = SiglipVisionModel.FromPretrained(encoderFolder))
        using (var _ = inference_mode())
        using (var encoded = encoder.Forward(new SiglipImageProcessor(28).Preprocess([image]), outputHiddenStates: true))
            features = cat([zeros_like(encoded.HiddenStates[^2]), encoded.HiddenStates[^2]]);
        // A fresh request (and generator) per call.
        StableDiffusion3Request Request() => Prepared(new StableDiffusion3Request { NumInferenceSteps = 2, GuidanceScale = 4.5, Height = 64, Width = 64 }, "t2i", 5, null);
        using var fromImage = pipe.Generate(Request() with { IpAdapterImage = image });
        using var fromFeatures = pipe.Generate(Request() with { IpAdapterImageEmbeds = features });
        using var without = pipe.Generate(Request());
        Assert.Equal(0, (fromImage.Tensor! - fromFeatures.Tensor!).abs().max().item<float>());
        Assert.True((fromImage.Tensor! - without.Tensor!).abs().max().item<float>() > 1e-3, "the image prompt must change the result");
        // Scale 0: diffusers' is_ip_adapter_active is false, the image is not encoded and nothing changes.
        using var off = pipe.Generate(Request() with { IpAdapterImage = image, IpAdapterScale = 0 });
        Assert.Equal(0, (off.Tensor! - without.Tensor!).abs().max().item<float>());
    }
}
