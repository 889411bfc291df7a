using System.Text.Json.Nodes;
using DiffusersSharp.IO;
using DiffusersSharp.Models;
using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// Qwen2_5_VLTextModel's loading and the parts of its computation that do not need transformers' outputs: both checkpoint
/// layouts give the same model, the vision tower and lm_head are skipped while any other stray key is refused, padding
/// on either side leaves a prompt's rows unchanged (positions count the kept tokens, as get_rope_index does for text).
/// </summary>
public sealed class Qwen2_5_VLTextModelTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("qwen25vl").FullName;

    private string Folder(bool newLayout)
    {
        string dir = Path.Combine(_dir, newLayout ? "new" : "old");
        if (!Directory.Exists(dir)) TinyQwenImagePipelineFolder.WriteTextEncoder(dir, newLayout);
        return dir;
    }

    private static Tensor Ids(params long[][] rows) => tensor(rows.SelectMany(r => r).ToArray(), [rows.Length, rows[0].Length]);

    [Fact]
    public void BothCheckpointLayoutsLoadTheSameModel()
    {
        using var old = Qwen2_5_VLTextModel.FromPretrained(Folder(newLayout: false));
        using var current = Qwen2_5_VLTextModel.FromPretrained(Folder(newLayout: true));
        // The top-level config (old) and the text_config one (new) read the same; rope_scaling holds the mrope sections.
        Assert.Equal(TinyQwenImagePipelineFolder.TextConfig, old.Config with { RopeScaling = null });
        Assert.Equal(TinyQwenImagePipelineFolder.TextConfig, current.Config with { RopeScaling = null });
        Assert.Equal("[1,1,2]", current.Config.RopeScaling!.Value.GetProperty("mrope_section").GetRawText());
        using var _ = inference_mode();
        using var ids = Ids([5, 17, 300, 42, 9]);
        using var a = old.LastHiddenState(ids);
        using var b = current.LastHiddenState(ids);
        Assert.Equal(0.0, TensorAssert.MaxAbsDiff(a, b));
        Assert.Equal([1L, 5, 16], a.shape);
        using var registered = ModelRegistry.Build("text_encoder", "Qwen2_5_VLForConditionalGeneration", Folder(newLayout: true), new Device(DeviceType.META));
        Assert.IsType<Qwen2_5_VLTextModel>(registered);
    }

    [Fact]
    public void PaddingOnEitherSideLeavesAPromptsRowsUnchanged()
    {
        using var model = Qwen2_5_VLTextModel.FromPretrained(Folder(newLayout: false));
        using var _ = inference_mode();
        using var alone = model.LastHiddenState(Ids([5, 17, 300, 42]));
        using var right = model.LastHiddenState(Ids([5, 17, 300, 42, 0, 0], [7, 8, 9, 10, 11, 12]), Ids([1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]));
        using var left = model.LastHiddenState(Ids([0, 0, 5, 17, 300, 42], [7, 8, 9, 10, 11, 12]), Ids([0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]));
        TensorAssert.Close(right[..1, ..4], alone, 1e-6, "right-padded");
        // Left padding shifts the rows but not the positions: the mask's cumsum counts only the kept tokens.
        TensorAssert.Close(left[..1, 2..], alone, 1e-6, "left-padded");
        using var unmaskedPositions = model.LastHiddenState(Ids([0, 0, 5, 17, 300, 42]));
        Assert.True(TensorAssert.MaxAbsDiff(unmaskedPositions[.., 2..], alone) > 1e-3, "the padding must matter without a mask");
    }

    [Fact]
    public void StrayKeysAreRefusedAndMissingOnesNamed()
    {
        string dir = Path.Combine(_dir, "stray");
        TinyQwenImagePipelineFolder.WriteTextEncoder(dir);
        using (var file = SafetensorsFile.Open(Path.Combine(dir, "model.safetensors")))
        {
            var tensors = file.Tensors.Keys.Where(k => k != "model.norm.weight").ToDictionary(k => k, k => file.Read(k).clone());
            tensors["model.extra.weight"] = zeros(2);
            SafetensorsWriter.Save(Path.Combine(dir, "model2.safetensors"), tensors);
        }
        File.Move(Path.Combine(dir, "model2.safetensors"), Path.Combine(dir, "model.safetensors"), overwrite: true);
        var e = Assert.Throws<WeightLoadException>(() => Qwen2_5_VLTextModel.FromPretrained(dir));
        Assert.Contains("norm.weight", e.Message);
        Assert.Contains("model.extra.weight", e.Message);
    }

    [Fact]
    public void BadConfigsAndInputsAreRefused()
    {
        var config = JsonNode.Parse(File.ReadAllText(Path.Combine(Folder(newLayout: false), "config.json")))!;
        config["num_key_value_heads"] = 3;
        string path = Path.Combine(_dir, "bad.json");
        File.WriteAllText(path, config.ToJsonString());
        Assert.Contains("multiple of num_key_value_heads", Assert.Throws<ArgumentException>(() => new Qwen2_5_VLTextModel(Qwen2_5_VLTextConfig.Read(path), new Device(DeviceType.META))).Message);
        using var model = Qwen2_5_VLTextModel.FromPretrained(Folder(newLayout: false));
        using var ids = Ids([5, 800]);
        Assert.Throws<ArgumentException>(() => model.LastHiddenState(ids));
        using var good = Ids([5, 6]);
        Assert.Throws<ArgumentException>(() => model.LastHiddenState(good, Ids([1, 1, 1])));
    }

    /// <inheritdoc />
    public void Dispose() => Directory.Delete(_dir, true);
}
