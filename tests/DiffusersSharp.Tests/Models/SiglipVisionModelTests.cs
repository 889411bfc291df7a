using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Models.ImageEncoders;
using DiffusersSharp.Tests.Support;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// SiglipVisionModel against transformers' OWN modeling_siglip.py (run unmodified by tools/reference/siglip_vision.py;
/// fixture local-diffusers/siglip-vision, see its README) on two tiny encoders stored in the fixture, with and without the
/// attention-pooling head; its key names, the loading of a full SigLIP checkpoint (text tower skipped), and
/// SiglipImageProcessor against its documented steps.
/// </summary>
public sealed class SiglipVisionModelTests(ITestOutputHelper output) : IDisposable
{
    private const string Folder = "local-diffusers/siglip-vision";
    private static readonly Dictionary<string, Tensor> Expected = Fixtures.Expected(Folder + "/expected.safetensors");
    private readonly string _dir = Directory.CreateTempSubdirectory("siglip").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>
    /// Bound: 1e-5 x max(1, max |expected|), as the CLIP vision parity test. The reference itself is up to 1.7e-6 from a
    /// float64 run of the same code (the fixture README).
    /// </summary>
    private const double Tolerance = 1e-5;

    [Theory]
    [InlineData("image_encoder", true)]         // 3 layers, 4 x 4 patches of 7, attention-pooling head
    [InlineData("image_encoder_nohead", false)] // 2 layers, 4 x 4 patches of 4, vision_use_head false
    public void SiglipVisionMatchesTransformers(string name, bool head)
    {
        using var model = SiglipVisionModel.FromPretrained(Fixtures.Path($"{Folder}/{name}"));
        using var _ = inference_mode();
        using var result = model.Forward(Expected[$"{name}.pixel_values"], outputHiddenStates: true);

        Assert.Equal(16, result.LastHiddenState.shape[1]);
        Assert.Equal(model.Config.NumHiddenLayers + 1, result.HiddenStates.Count);
        Assert.Equal(head, result.PoolerOutput is not null);
        double last = TensorAssert.Close(result.LastHiddenState, Expected[$"{name}.last_hidden_state"], Tolerance, $"{name}.last_hidden_state");
        double pen = TensorAssert.Close(result.HiddenStates[^2], Expected[$"{name}.penultimate"], Tolerance, $"{name}.hidden_states[-2]");
        double pooled = head ? TensorAssert.Close(result.PoolerOutput!, Expected[$"{name}.pooler_output"], Tolerance, $"{name}.pooler_output") : 0;
        double worst = 0;
        for (int i = 0; i < result.HiddenStates.Count; i++)
            worst = Math.Max(worst, TensorAssert.Close(result.HiddenStates[i], Expected[$"{name}.hidden_states.{i}"], Tolerance, $"{name}.hidden_states[{i}]"));
        output.WriteLine($"{name} float32 max |diff| vs transformers: last_hidden_state {last:G3}, hidden_states[-2] {pen:G3}, " +
                         $"pooler_output {pooled:G3}, all hidden states {worst:G3}");
    }

    [Fact]
    public void KeysAreTransformers()
    {
        var config = new SiglipVisionConfig { HiddenSize = 16, IntermediateSize = 24, NumHiddenLayers = 2, NumAttentionHeads = 2, ImageSize = 12, PatchSize = 4 };
        using var model = new SiglipVisionModel(config, new Device("meta"));
        var keys = model.state_dict().Keys.ToHashSet();
        string[] expected =
        [
            "vision_model.embeddings.patch_embedding.weight", "vision_model.embeddings.patch_embedding.bias", "vision_model.embeddings.position_embedding.weight",
            "vision_model.post_layernorm.weight", "vision_model.encoder.layers.1.self_attn.q_proj.weight", "vision_model.encoder.layers.0.mlp.fc2.bias",
            "vision_model.head.probe", "vision_model.head.attention.in_proj_weight", "vision_model.head.attention.in_proj_bias",
            "vision_model.head.attention.out_proj.weight", "vision_model.head.layernorm.bias", "vision_model.head.mlp.fc1.weight",
        ];
        foreach (var k in expected) Assert.Contains(k, keys);
        // embeddings 3, post_layernorm 2, 16 per layer, head: probe + in_proj 2 + out_proj 2 + layernorm 2 + mlp 4
        Assert.Equal(3 + 2 + 2 * 16 + 11, keys.Count);
        using var noHead = new SiglipVisionModel(config with { VisionUseHead = false }, new Device("meta"));
        Assert.Equal(3 + 2 + 2 * 16, noHead.state_dict().Count);
        Assert.Equal(9, config.NumPositions); // no class token
    }

    [Fact]
    public void LoadsTheVisionTowerOfAFullSiglipCheckpoint()
    {
        // google/siglip-so400m-patch14-384's layout: a SiglipConfig (model_type "siglip") with text_config and vision_config,
        // one safetensors file with both towers; transformers' SiglipVisionModel.from_pretrained takes the vision tower.
        string source = Fixtures.Path($"{Folder}/image_encoder");
        var vision = File.ReadAllText(Path.Combine(source, "config.json"));
        File.WriteAllText(Path.Combine(_dir, "config.json"),
            $"{{\"model_type\": \"siglip\", \"text_config\": {{\"hidden_size\": 8}}, \"vision_config\": {vision}}}");
        var weights = Fixtures.Expected($"{Folder}/image_encoder/model.safetensors");
        weights["text_model.final_layer_norm.weight"] = ones(8);
        weights["logit_scale"] = ones(1);
        weights["logit_bias"] = zeros(1);
        SafetensorsWriter.Save(Path.Combine(_dir, "model.safetensors"), weights);
        using var model = SiglipVisionModel.FromPretrained(_dir);
        Assert.Equal(32, model.Config.HiddenSize);
        using var _ = inference_mode();
        using var result = model.Forward(Expected["image_encoder.pixel_values"]);
        TensorAssert.Close(result.LastHiddenState, Expected["image_encoder.last_hidden_state"], Tolerance, "last_hidden_state");

        weights.Remove("vision_model.head.probe");
        SafetensorsWriter.Save(Path.Combine(_dir, "model.safetensors"), weights);
        Assert.Throws<WeightLoadException>(() => SiglipVisionModel.FromPretrained(_dir));
    }

    [Fact]
    public void ImageProcessorResizesToTheSquareAndNormalizesToMinusOneOne()
    {
        var processor = new SiglipImageProcessor(384);
        var pixels = new byte[300 * 200 * 3];
        for (int y = 0; y < 200; y++)
            for (int x = 0; x < 300; x++)
                (pixels[(y * 300 + x) * 3], pixels[(y * 300 + x) * 3 + 1], pixels[(y * 300 + x) * 3 + 2]) = ((byte)x, (byte)y, 77);
        var image = new ImageBuffer(300, 200, 3, pixels);
        var resized = processor.Resize(image);
        var direct = image.Resize(384, 384, ResampleFilter.Bicubic); // no aspect kept, no crop
        Assert.Equal(direct.Pixels, resized.Pixels);
        using var values = processor.Preprocess([image, image]);
        Assert.Equal([2L, 3, 384, 384], values.shape);
        // Blue is 77 everywhere: (float32(77 / 255) - 0.5) / 0.5 in float32.
        Assert.Equal(((float)(77 * (1 / 255.0)) - 0.5f) / 0.5f, values[1, 2, 100, 100].item<float>());
        Assert.Equal(((float)(resized.Pixels[(5 * 384 + 7) * 3] * (1 / 255.0)) - 0.5f) / 0.5f, values[0, 0, 5, 7].item<float>());
        // An image of the target size is not resampled.
        var square = new ImageBuffer(384, 384, 3, new byte[384 * 384 * 3]);
        Assert.Same(square, processor.Resize(square));
        Assert.Throws<ArgumentException>(() => processor.Preprocess([]));
    }
}
