using DiffusersSharp.IO;
using DiffusersSharp.Loaders;
using DiffusersSharp.Pipelines;
using DiffusersSharp.Pipelines.Flux;
using DiffusersSharp.Tests.Pipelines;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Loaders;

/// <summary>Flux IP-Adapter loading (XLabs' and diffusers' key names, strict keys and shapes, the image encoder's width),
/// scales, and the pipelines' and transformer's input checks, which come before any compute.</summary>
public sealed class FluxIPAdapterWeightsTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("fluxipadapter").FullName;
    private static readonly string AdapterFile = Fixtures.Path(FluxIpAdapterParityTests.Adapter);
    private readonly List<IDisposable> _owned = [];

    public void Dispose()
    {
        foreach (var o in _owned) o.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

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

    private FluxComponents Components(bool adapter = true, bool encoder = false)
    {
        var components = LocalDiffusersFlux.Components();
        _owned.Add(components);
        if (adapter) components.LoadIpAdapter(AdapterFile, encoder ? Fixtures.Path(FluxIpAdapterParityTests.ImageEncoder) : null);
        return components;
    }

    private static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    [Fact]
    public void LoadingAttachesDiffusersKeys()
    {
        var components = Components(adapter: false);
        var transformer = components.Transformer;
        int before = transformer.state_dict().Count;
        components.LoadIpAdapter(AdapterFile);
        var file = Read(AdapterFile);
        var keys = transformer.state_dict();
        Assert.Equal(before + file.Count, keys.Count);
        Assert.True(Same(keys["encoder_hid_proj.image_projection_layers.0.image_embeds.weight"], file["ip_adapter_proj_model.proj.weight"]));
        Assert.True(Same(keys["encoder_hid_proj.image_projection_layers.0.norm.bias"], file["ip_adapter_proj_model.norm.bias"]));
        Assert.True(Same(keys["transformer_blocks.0.attn.processor.to_k_ip.0.weight"], file["double_blocks.0.processor.ip_adapter_double_stream_k_proj.weight"]));
        Assert.True(Same(keys["transformer_blocks.1.attn.processor.to_v_ip.0.bias"], file["double_blocks.1.processor.ip_adapter_double_stream_v_proj.bias"]));
        Assert.DoesNotContain(keys.Keys, k => k.StartsWith("single_transformer_blocks.", StringComparison.Ordinal) && k.Contains("processor"));
        Assert.Equal(4, ((DiffusersSharp.Models.IPAdapters.ImageProjection)transformer.EncoderHidProj![0]).NumTokens);
        Assert.Null(components.ImageEncoder);
        Assert.Throws<InvalidOperationException>(() => components.LoadIpAdapter(AdapterFile));
    }

    /// <summary>diffusers' load_ip_adapter also takes image_proj. / ip_adapter.N.to_k_ip names; they load the same weights.</summary>
    [Fact]
    public void DiffusersKeyNamesLoadTheSameWeights()
    {
        var renamed = Read(AdapterFile).ToDictionary(
            kv => kv.Key.Replace("ip_adapter_proj_model.", "image_proj.", StringComparison.Ordinal)
                .Replace("double_blocks.", "ip_adapter.", StringComparison.Ordinal)
                .Replace("processor.ip_adapter_double_stream_k_proj", "to_k_ip", StringComparison.Ordinal)
                .Replace("processor.ip_adapter_double_stream_v_proj", "to_v_ip", StringComparison.Ordinal),
            kv => kv.Value);
        Assert.Contains("ip_adapter.1.to_v_ip.bias", renamed.Keys);
        var a = Components();
        var b = Components(adapter: false);
        b.LoadIpAdapter(Write("renamed.safetensors", renamed));
        var ka = a.Transformer.state_dict();
        var kb = b.Transformer.state_dict();
        Assert.Equal(ka.Keys.Order(), kb.Keys.Order());
        Assert.All(ka, kv => Assert.True(Same(kv.Value, kb[kv.Key]), kv.Key));
    }

    [Fact]
    public void LoadingIsStrict()
    {
        var file = Read(AdapterFile);
        var components = Components(adapter: false);
        int before = components.Transformer.state_dict().Count;
        void Refused(string name, Dictionary<string, Tensor> tensors, string key)
        {
            var error = Assert.Throws<WeightLoadException>(() => components.LoadIpAdapter(Write(name, tensors)));
            Assert.Contains(key, error.Message);
        }
        Refused("unknown.safetensors", new(file) { ["controlnet.weight"] = zeros(2) }, "controlnet.weight");
        // A third double-stream block: diffusers skips it silently, here it is refused (the transformer has two).
        Refused("extra.safetensors", new(file) { ["double_blocks.2.processor.ip_adapter_double_stream_k_proj.weight"] = zeros(32, 96) },
            "double_blocks.2.processor.ip_adapter_double_stream_k_proj.weight");
        var missing = new Dictionary<string, Tensor>(file);
        missing.Remove("double_blocks.1.processor.ip_adapter_double_stream_v_proj.bias");
        Refused("missing.safetensors", missing, "double_blocks.1.processor.ip_adapter_double_stream_v_proj.bias");
        Refused("shape.safetensors", new(file) { ["double_blocks.0.processor.ip_adapter_double_stream_k_proj.weight"] = zeros(32, 64) },
            "double_blocks.0.processor.ip_adapter_double_stream_k_proj.weight");
        // Image tokens of another width than joint_attention_dim (96): 4 x 64 rows.
        Refused("width.safetensors", new(file) { ["ip_adapter_proj_model.proj.weight"] = zeros(256, 24), ["ip_adapter_proj_model.proj.bias"] = zeros(256) },
            "ip_adapter_proj_model.proj.weight");
        Refused("twice.safetensors", new(file) { ["image_proj.proj.bias"] = zeros(384) }, "image_proj.proj.bias");
        var noProj = file.Where(kv => !kv.Key.StartsWith("ip_adapter_proj_model.", StringComparison.Ordinal)).ToDictionary();
        Refused("noproj.safetensors", noProj, "ip_adapter_proj_model.proj.weight");
        Refused("ints.safetensors", new(file) { ["ip_adapter_proj_model.norm.bias"] = zeros([96], ScalarType.Int32) }, "not a floating-point type");
        Assert.Throws<FileNotFoundException>(() => components.LoadIpAdapter(Path.Combine(_dir, "none.safetensors")));
        // Nothing was attached by the failed loads.
        Assert.False(components.Transformer.HasIpAdapter);
        Assert.Equal(before, components.Transformer.state_dict().Count);
    }

    [Fact]
    public void ImageEncoderMustGiveTheAdaptersWidth()
    {
        var components = Components(adapter: false);
        // transformers-encoders' second encoder projects to 16, the adapter takes 24.
        var error = Assert.Throws<ArgumentException>(() => components.LoadIpAdapter(AdapterFile, Fixtures.Path("local-diffusers/transformers-encoders/image_encoder_gelu")));
        Assert.Contains("width 24", error.Message);
        Assert.Null(components.ImageEncoder);
        Assert.False(components.Transformer.HasIpAdapter);
        components.LoadIpAdapter(AdapterFile, Fixtures.Path(FluxIpAdapterParityTests.ImageEncoder));
        Assert.Equal(32, components.FeatureExtractor!.Size);
    }

    [Fact]
    public void SeveralAdaptersLoadInOrder()
    {
        var components = Components(adapter: false);
        components.LoadIpAdapter([AdapterFile, AdapterFile]);
        var keys = components.Transformer.state_dict();
        Assert.True(Same(keys["transformer_blocks.1.attn.processor.to_k_ip.1.weight"], keys["transformer_blocks.1.attn.processor.to_k_ip.0.weight"]));
        Assert.Equal(2, components.Transformer.EncoderHidProj!.Count);
        // A list of numbers is per adapter with several adapters (diffusers' rule), per block with one.
        components.SetIpAdapterScale([0.25, 0.75]);
        Assert.Equal([[0.25, 0.75], [0.25, 0.75]], components.Transformer.IpAdapterScales.Select(s => s.ToArray()).ToArray());
        components.SetIpAdapterScale([[0.5], [0.1, 0.2]]);
        Assert.Equal([[0.5, 0.1], [0.5, 0.2]], components.Transformer.IpAdapterScales.Select(s => s.ToArray()).ToArray());
        Assert.Throws<ArgumentException>(() => components.SetIpAdapterScale([1.0, 1.0, 1.0]));
        Assert.Throws<ArgumentException>(() => components.SetIpAdapterScale([[1.0], [1.0, 1.0, 1.0]]));
    }

    [Fact]
    public void ScalesAreChecked()
    {
        Assert.Throws<InvalidOperationException>(() => Components(adapter: false).SetIpAdapterScale(0.5));
        var components = Components();
        Assert.Contains("2 scales", Assert.Throws<ArgumentException>(() => components.SetIpAdapterScale([0.5, 0.5, 0.5])).Message);
        Assert.Throws<ArgumentException>(() => components.SetIpAdapterScale(double.NaN));
        components.SetIpAdapterScale([0.5, 1.5]);
        Assert.Equal([[0.5], [1.5]], components.Transformer.IpAdapterScales.Select(s => s.ToArray()).ToArray());
    }

    private sealed class Recorder : IProgress<PipelineProgress>
    {
        public List<PipelineProgress> Reports { get; } = [];
        public void Report(PipelineProgress value) => Reports.Add(value);
    }

    /// <summary>Asserts the request is refused with a message containing <paramref name="text"/> before anything runs.</summary>
    private static void RefusedBeforeCompute(Func<IProgress<PipelineProgress>, FluxOutput> generate, string text)
    {
        var progress = new Recorder();
        var error = Assert.Throws<ArgumentException>(() => generate(progress));
        Assert.Contains(text, error.Message);
        Assert.Empty(progress.Reports);
    }

    private static FluxRequest Request(FluxRequest? with = null)
    {
        var r = with ?? new FluxRequest();
        return r with { PromptEmbeds = randn(1, 16, 96), PooledPromptEmbeds = randn(1, 32), Height = 32, Width = 32, NumInferenceSteps = 1 };
    }

    [Fact]
    public void BadInputsAreRefusedBeforeCompute()
    {
        using var plain = new FluxPipeline(Components(adapter: false));
        RefusedBeforeCompute(p => plain.Generate(Request(new() { IpAdapterImageEmbeds = [randn(1, 1, 24)] }), p), "No IP-Adapter is loaded");

        using var pipe = new FluxPipeline(Components());
        RefusedBeforeCompute(p => pipe.Generate(Request(new() { IpAdapterImageEmbeds = [randn(1, 1, 23)] }), p), "D = 24");
        RefusedBeforeCompute(p => pipe.Generate(Request(new() { IpAdapterImageEmbeds = [randn(1, 24)] }), p), "[B, images, D]");
        RefusedBeforeCompute(p => pipe.Generate(Request(new() { IpAdapterImageEmbeds = [randn(1, 1, 24), randn(1, 1, 24)] }), p), "one entry per IP-Adapter");
        RefusedBeforeCompute(p => pipe.Generate(Request(new() { IpAdapterImage = [new DiffusersSharp.Images.ImageBuffer(8, 8, 3)] }), p), "needs an image encoder");
        RefusedBeforeCompute(p => pipe.Generate(Request(new() { IpAdapterScale = 0.5 }), p), "ip_adapter_scale needs");
        // diffusers encodes a black image for a missing side: without an image encoder that side must be given.
        RefusedBeforeCompute(p => pipe.Generate(Request(new() { NegativeIpAdapterImageEmbeds = [randn(1, 1, 24)] }), p), "all-black image");
        RefusedBeforeCompute(p => pipe.Generate(Request(new()
        {
            IpAdapterImageEmbeds = [randn(1, 1, 24)], TrueCfgScale = 2, NegativePromptEmbeds = randn(1, 16, 96), NegativePooledPromptEmbeds = randn(1, 32),
        }), p), "negative_ip_adapter_image_embeds");
        RefusedBeforeCompute(p => pipe.Generate(Request(new()
        {
            IpAdapterImageEmbeds = [randn(1, 1, 24)], TrueCfgScale = 2, NegativePromptEmbeds = randn(1, 16, 96), NegativePooledPromptEmbeds = randn(1, 32),
            NegativeIpAdapterImageEmbeds = [randn(1, 1, 16)],
        }), p), "D = 24");

        var withEncoder = Components(encoder: true);
        using var encoded = new FluxPipeline(withEncoder);
        RefusedBeforeCompute(p => encoded.Generate(Request(new()
        {
            IpAdapterImage = [new DiffusersSharp.Images.ImageBuffer(8, 8, 3)], IpAdapterImageEmbeds = [randn(1, 1, 24)],
        }), p), "not both");
        RefusedBeforeCompute(p => encoded.Generate(Request(new() { IpAdapterImage = [PipelineImage.FromTensor(randn(1, 3, 24, 24))] }), p), "[N, 3, 32, 32]");

        // Pipelines diffusers gives no IP-Adapter inputs refuse them.
        var fillComponents = LocalDiffusersFlux.Components("local-diffusers/flux-fill/transformer");
        _owned.Add(fillComponents);
        fillComponents.LoadIpAdapter(AdapterFile);
        using var fill = new FluxFillPipeline(fillComponents);
        RefusedBeforeCompute(p => fill.Generate(new FluxFillRequest
        {
            PromptEmbeds = randn(1, 16, 96), PooledPromptEmbeds = randn(1, 32), Height = 32, Width = 32, NumInferenceSteps = 1,
            Image = new DiffusersSharp.Images.ImageBuffer(32, 32, 3), MaskImage = new DiffusersSharp.Images.ImageBuffer(32, 32, 3),
            IpAdapterImageEmbeds = [randn(1, 1, 24)],
        }, p), "FluxFillPipeline takes no IP-Adapter inputs");
    }

    /// <summary>unload_ip_adapter: the keys and outputs of the plain transformer come back, and another adapter loads.</summary>
    [Fact]
    public void UnloadingRestoresThePlainTransformer()
    {
        var components = Components(adapter: false);
        var transformer = components.Transformer;
        var before = transformer.state_dict().Keys.Order().ToArray();
        using var _ = inference_mode();
        Tensor hidden = randn(1, 4, 64), text = randn(1, 3, 96), pooled = randn(1, 32), t = tensor(new[] { 0.5f }), g = tensor(new[] { 3.5f });
        Tensor imgIds = zeros(4, 3), txtIds = zeros(3, 3);
        using var plain = transformer.forward(hidden, text, pooled, t, imgIds, txtIds, g);
        components.LoadIpAdapter(AdapterFile, Fixtures.Path(FluxIpAdapterParityTests.ImageEncoder));
        using (var adapted = transformer.forward(hidden, text, pooled, t, imgIds, txtIds, g, ip_adapter_image_embeds: [randn(1, 1, 24)]))
            Assert.False(adapted.eq(plain).all().item<bool>());
        components.UnloadIpAdapter();
        Assert.False(transformer.HasIpAdapter);
        Assert.Null(components.ImageEncoder);
        Assert.Null(components.FeatureExtractor);
        Assert.Equal(before, transformer.state_dict().Keys.Order().ToArray());
        using (var again = transformer.forward(hidden, text, pooled, t, imgIds, txtIds, g))
            Assert.True(again.eq(plain).all().item<bool>());
        Assert.Throws<ArgumentException>(() => transformer.forward(hidden, text, pooled, t, imgIds, txtIds, g, ip_adapter_image_embeds: [randn(1, 1, 24)]));
        components.UnloadIpAdapter(); // nothing to do
        components.LoadIpAdapter([AdapterFile, AdapterFile]);
        Assert.Equal(2, transformer.EncoderHidProj!.Count);
    }

    [Fact]
    public void TransformerChecksImageEmbeds()
    {
        var plain = Components(adapter: false).Transformer;
        using var _ = inference_mode();
        Tensor hidden = randn(2, 4, 64), text = randn(2, 3, 96), pooled = randn(2, 32), t = tensor(new[] { 1f, 0.5f }), g = tensor(new[] { 3.5f, 3.5f });
        Tensor imgIds = zeros(4, 3), txtIds = zeros(3, 3);
        Assert.Contains("no IP-Adapter is loaded", Assert.Throws<ArgumentException>(() =>
            plain.forward(hidden, text, pooled, t, imgIds, txtIds, g, ip_adapter_image_embeds: [randn(2, 1, 24)])).Message);
        var transformer = Components().Transformer;
        Assert.Contains("multiple of the batch 2", Assert.Throws<ArgumentException>(() =>
            transformer.forward(hidden, text, pooled, t, imgIds, txtIds, g, ip_adapter_image_embeds: [randn(3, 1, 24)])).Message);
        // Every sample attends to the tokens of the rows given for it (diffusers' view): [4, 1, 24] gives each two images.
        using var twice = transformer.forward(hidden, text, pooled, t, imgIds, txtIds, g, ip_adapter_image_embeds: [randn(4, 1, 24)]);
        Assert.Equal([2L, 4, 64], twice.shape);
    }
}
