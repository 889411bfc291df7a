using DiffusersSharp.IO;
using DiffusersSharp.Models.ImageEncoders;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Support;

/// <summary>A tiny random CLIP image encoder (projection width 24 for the local-diffusers/ip-adapter plain adapters, hidden width 20 for their Plus ones, 32 x 32
/// images) written as an image_encoder folder. Random weights: for wiring tests, not parity.</summary>
public static class TinyImageEncoder
{
    /// <summary>Writes <c>image_encoder</c> (config.json + model.safetensors) under <paramref name="dir"/>; returns its path.</summary>
    public static string Write(string dir)
    {
        var config = new CLIPVisionConfig { HiddenSize = 20, IntermediateSize = 24, ProjectionDim = 24, NumHiddenLayers = 2, NumAttentionHeads = 2, ImageSize = 32, PatchSize = 8 };
        var generator = new TorchSharp.torch.Generator(3);
        var weights = new Dictionary<string, Tensor>();
        using (var shell = new CLIPVisionModelWithProjection(config, new Device("meta")))
            foreach (var (k, v) in shell.state_dict()) weights[k] = randn(v.shape, generator: generator) * 0.3;
        string folder = Path.Combine(dir, "image_encoder");
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "config.json"),
            """{"hidden_size": 20, "intermediate_size": 24, "projection_dim": 24, "num_hidden_layers": 2, "num_attention_heads": 2, "image_size": 32, "patch_size": 8}""");
        SafetensorsWriter.Save(Path.Combine(folder, "model.safetensors"), weights);
        foreach (var t in weights.Values) t.Dispose();
        return folder;
    }
}
