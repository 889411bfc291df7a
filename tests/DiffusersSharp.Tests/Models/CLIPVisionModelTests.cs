using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Models.ImageEncoders;
using DiffusersSharp.Tests.Support;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// CLIPVisionModelWithProjection and CLIPImageProcessor, beside the parity test against transformers' own model
/// (<see cref="TransformersEncodersParityTests"/>): here the model is checked against transformers' key names and against
/// CLIP's formulas written out here in plain tensor ops (patch conv as a matrix product, softmax attention without a
/// mask, quick-GELU MLP, pre-norm layers, post_layernorm of the class token, projection); the processor against its
/// documented steps on sizes where the arithmetic is known.
/// </summary>
public sealed class CLIPVisionModelTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("clipvision").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly CLIPVisionConfig Tiny = new()
    {
        HiddenSize = 16, IntermediateSize = 24, ProjectionDim = 12, NumHiddenLayers = 2, NumAttentionHeads = 2, ImageSize = 12, PatchSize = 4,
    };

    [Fact]
    public void KeysAreTransformers()
    {
        using var model = new CLIPVisionModelWithProjection(Tiny, new Device("meta"));
        var keys = model.state_dict().Keys.ToHashSet();
        string[] expected =
        [
            "vision_model.embeddings.class_embedding", "vision_model.embeddings.patch_embedding.weight", "vision_model.embeddings.position_embedding.weight",
            "vision_model.pre_layrnorm.weight", "vision_model.pre_layrnorm.bias", "vision_model.post_layernorm.weight", "vision_model.post_layernorm.bias",
            "visual_projection.weight", "vision_model.encoder.layers.1.self_attn.q_proj.weight", "vision_model.encoder.layers.1.mlp.fc2.bias",
            "vision_model.encoder.layers.0.layer_norm1.weight",
        ];
        foreach (var k in expected) Assert.Contains(k, keys);
        Assert.Equal(3 + 2 + 2 + 1 + 2 * 16, keys.Count); // embeddings, two LayerNorms, projection, 16 per layer
        Assert.Equal([10L, 16L], model.state_dict()["vision_model.embeddings.position_embedding.weight"].shape);
    }

    [Fact]
    public void ForwardFollowsClipFormulasAndLoadsStrictly()
    {
        manual_seed(7);
        var weights = new Dictionary<string, Tensor>();
        using (var shell = new CLIPVisionModelWithProjection(Tiny, new Device("meta")))
            foreach (var (k, v) in shell.state_dict()) weights[k] = randn(v.shape) * 0.3;
        weights["vision_model.embeddings.position_ids"] = arange(10).unsqueeze(0); // older checkpoints' buffer, ignored
        string folder = Path.Combine(_dir, "image_encoder");
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "config.json"),
            """{"hidden_size": 16, "intermediate_size": 24, "projection_dim": 12, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 12, "patch_size": 4, "hidden_act": "quick_gelu"}""");
        SafetensorsWriter.Save(Path.Combine(folder, "model.safetensors"), weights);
        using var model = CLIPVisionModelWithProjection.FromPretrained(folder);
        var pixels = randn(2, 3, 12, 12);
        using var _ = inference_mode();
        using var output = model.Forward(pixels, outputHiddenStates: true);

        Tensor W(string k) => weights[k];
        Tensor Ln(Tensor x, string k) => nn.functional.layer_norm(x, [16], W(k + ".weight"), W(k + ".bias"), 1e-5);
        Tensor Lin(Tensor x, string k, bool bias = true) => x.matmul(W(k + ".weight").t()) + (bias ? W(k + ".bias") : 0);
        // Patches: each 4 x 4 x 3 block as a vector (channel, row, column order, as the conv weight is laid out).
        var patches = pixels.reshape(2, 3, 3, 4, 3, 4).permute(0, 2, 4, 1, 3, 5).reshape(2, 9, 48);
        var tokens = patches.matmul(W("vision_model.embeddings.patch_embedding.weight").reshape(16, 48).t());
        var x = cat([W("vision_model.embeddings.class_embedding").expand(2, 1, 16), tokens], 1) + W("vision_model.embeddings.position_embedding.weight");
        x = Ln(x, "vision_model.pre_layrnorm");
        for (int l = 0; l < 2; l++)
        {
            string p = $"vision_model.encoder.layers.{l}.";
            var h = Ln(x, p + "layer_norm1");
            Tensor Heads(string proj) => Lin(h, p + "self_attn." + proj).reshape(2, 10, 2, 8).transpose(1, 2);
            var scores = Heads("q_proj").matmul(Heads("k_proj").transpose(-1, -2)) / Math.Sqrt(8);
            var attn = scores.softmax(-1).matmul(Heads("v_proj")).transpose(1, 2).reshape(2, 10, 16);
            x = x + Lin(attn, p + "self_attn.out_proj");
            var m = Lin(Ln(x, p + "layer_norm2"), p + "mlp.fc1");
            m = m * (1.702 * m).sigmoid();
            x = x + Lin(m, p + "mlp.fc2");
        }
        var pooled = Ln(x.select(1, 0), "vision_model.post_layernorm");
        var embeds = Lin(pooled, "visual_projection", bias: false);
        TensorAssert.Close(output.LastHiddenState, x, 1e-5, "last_hidden_state");
        TensorAssert.Close(output.ImageEmbeds, embeds, 1e-5, "image_embeds");
        Assert.Equal(3, output.HiddenStates.Count);
        Assert.Throws<ArgumentException>(() => model.Forward(randn(1, 3, 16, 16)));

        weights.Remove("visual_projection.weight");
        SafetensorsWriter.Save(Path.Combine(folder, "model.safetensors"), weights);
        Assert.Throws<WeightLoadException>(() => CLIPVisionModelWithProjection.FromPretrained(folder));
    }

    [Fact]
    public void ImageProcessorResizesShortestSideCropsAndNormalizes()
    {
        var processor = new CLIPImageProcessor(224);
        // 300 wide x 200 high: shortest side 224, the other int(224 * 300 / 200) = 336; crop left (336 - 224) / 2 = 56.
        var pixels = new byte[300 * 200 * 3];
        for (int y = 0; y < 200; y++)
            for (int x = 0; x < 300; x++)
                (pixels[(y * 300 + x) * 3], pixels[(y * 300 + x) * 3 + 1], pixels[(y * 300 + x) * 3 + 2]) = ((byte)x, (byte)y, 77);
        var image = new ImageBuffer(300, 200, 3, pixels);
        var resized = image.Resize(336, 224, ResampleFilter.Bicubic);
        var crop = processor.ResizeAndCrop(image);
        Assert.Equal((224, 224), (crop.Width, crop.Height));
        for (int y = 0; y < 224; y += 37)
            for (int x = 0; x < 224; x += 41)
                Assert.Equal(resized.Pixels[(y * 336 + x + 56) * 3], crop.Pixels[(y * 224 + x) * 3]);
        using var values = processor.Preprocess([image]);
        Assert.Equal([1L, 3, 224, 224], values.shape);
        // Blue is 77 everywhere: (float32(77 / 255) - mean) / std in float32.
        float expected = ((float)(77 * (1 / 255.0)) - 0.40821073f) / 0.27577711f;
        Assert.Equal(expected, values[0, 2, 100, 100].item<float>());
        Assert.Equal(((float)(crop.Pixels[0] * (1 / 255.0)) - 0.48145466f) / 0.26862954f, values[0, 0, 0, 0].item<float>());
    }

    /// <summary>A whole CLIP model's folder (CLIPModel config with vision_config and text_config; text weights beside the
    /// vision ones, as openai/clip-vit-large-patch14 ships) loads its vision half as transformers' from_pretrained does.</summary>
    [Fact]
    public void LoadsTheVisionHalfOfAWholeClipModel()
    {
        string source = Fixtures.Path("local-diffusers/transformers-encoders/image_encoder");
        using var direct = CLIPVisionModelWithProjection.FromPretrained(source);
        Dictionary<string, Tensor> weights;
        using (var file = SafetensorsFile.Open(Path.Combine(source, "model.safetensors"))) weights = file.ReadAll().ToDictionary(kv => kv.Key, kv => kv.Value.clone());
        weights["text_model.embeddings.token_embedding.weight"] = zeros(10, 8);
        weights["text_projection.weight"] = zeros(24, 8);
        weights["logit_scale"] = tensor(2.6592f);
        string folder = Path.Combine(_dir, "clip");
        Directory.CreateDirectory(folder);
        SafetensorsWriter.Save(Path.Combine(folder, "model.safetensors"), weights);
        string vision = File.ReadAllText(Path.Combine(source, "config.json"));
        File.WriteAllText(Path.Combine(folder, "config.json"),
            $$"""{"architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": 99, "text_config": {"hidden_size": 8}, "vision_config": {{vision}}}""");
        using var whole = CLIPVisionModelWithProjection.FromPretrained(folder);
        Assert.Equal(direct.Config, whole.Config); // vision_config only: the top-level projection_dim is not read
        using var _ = inference_mode();
        using var pixels = randn(1, 3, 32, 32, generator: new TorchSharp.torch.Generator(1));
        using var a = direct.Forward(pixels);
        using var b = whole.Forward(pixels);
        // The same weights bit for bit; the outputs agree to rounding (the kernels may take other paths for other
        // alignments of the same values: 2.4e-7 was seen).
        var sa = direct.state_dict();
        Assert.Equal(sa.Keys.Order(), whole.state_dict().Keys.Order());
        foreach (var (k, v) in whole.state_dict()) Assert.True(v.eq(sa[k]).all().item<bool>(), k);
        TensorAssert.Close(b.ImageEmbeds, a.ImageEmbeds, 1e-6, "image_embeds");
        // Other unexpected keys are still refused.
        weights["vision_model.extra"] = zeros(1);
        SafetensorsWriter.Save(Path.Combine(folder, "model.safetensors"), weights);
        Assert.Throws<WeightLoadException>(() => CLIPVisionModelWithProjection.FromPretrained(folder));
    }
}
