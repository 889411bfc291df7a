using DiffusersSharp.Models.TextEncoders;
using DiffusersSharp.Tests.Support;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// Qwen2_5_VLTextModel under padding (beside its parity tests against transformers): padding on either side leaves a
/// prompt's rows unchanged, because positions count the kept tokens as get_rope_index does for text; the tiny text encoder
/// of TinyQwenImagePipelineFolder (the CLI and serve tests' model) in both layouts.
/// </summary>
public sealed class Qwen2_5_VLTextModelPaddingTests : IDisposable
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

    /// <inheritdoc />
    public void Dispose() => Directory.Delete(_dir, true);
}
