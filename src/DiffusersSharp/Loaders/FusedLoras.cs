using static TorchSharp.torch;

namespace DiffusersSharp.Loaders;

/// <summary>
/// The LoRAs fused into a pipeline's models, oldest first, with their matrices and scales kept (a few MB each: rank-r
/// pairs, not weights) so that they can be taken back out (diffusers' <c>unfuse_lora</c>).
/// </summary>
public sealed class FusedLoras : IDisposable
{
    private readonly List<(IReadOnlyDictionary<string, LoraWeights> Parts, IReadOnlyDictionary<string, nn.Module?> Models, double Scale)> _fused = [];

    /// <summary>How many LoRA files are fused in.</summary>
    public int Count => _fused.Count;

    /// <summary>Takes ownership of one fused file's parts.</summary>
    internal void Add(IReadOnlyDictionary<string, LoraWeights> parts, IReadOnlyDictionary<string, nn.Module?> models, double scale) =>
        _fused.Add((parts, models, scale));

    /// <summary>
    /// Subtracts every fused LoRA again, newest first (each delta <c>scale · (alpha / r) · B A</c> computed in float32 as
    /// when fused, then one rounding into the model's dtype), as diffusers' <c>unfuse_lora</c> does: the weights come back
    /// up to that rounding (exactly for float32 weights in most elements, within an ulp of bf16 / fp16 weights). Weights a
    /// LoRA replaced (Flux control LoRAs' QK norms) come back as they were, and Linears it widened narrow again.
    /// </summary>
    public void Unfuse()
    {
        for (int i = _fused.Count - 1; i >= 0; i--)
        {
            var (parts, models, scale) = _fused[i];
            foreach (var (component, lora) in parts) lora.UnfuseFrom(models[component]!, scale);
            foreach (var lora in parts.Values) lora.Dispose();
            _fused.RemoveAt(i);
        }
    }

    /// <summary>Frees the kept matrices (the fused weights stay as they are).</summary>
    public void Dispose()
    {
        foreach (var (parts, _, _) in _fused)
            foreach (var lora in parts.Values) lora.Dispose();
        _fused.Clear();
    }
}
