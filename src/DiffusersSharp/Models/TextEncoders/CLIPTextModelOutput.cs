using static TorchSharp.torch;

namespace DiffusersSharp.Models.TextEncoders;

/// <summary>
/// Outputs of <see cref="CLIPTextModel"/> / <see cref="CLIPTextModelWithProjection"/>. The tensors are owned by this
/// object (outside any dispose scope): dispose it, or move what you keep into your own scope first.
/// </summary>
public sealed class CLIPTextModelOutput : IDisposable
{
    private bool _disposed;

    internal CLIPTextModelOutput(Tensor lastHiddenState, Tensor pooledOutput, IReadOnlyList<Tensor> hiddenStates, Tensor? textEmbeds)
    {
        LastHiddenState = lastHiddenState;
        PooledOutput = pooledOutput;
        HiddenStates = hiddenStates;
        TextEmbeds = textEmbeds;
    }

    /// <summary>[batch, seq, hidden]: the last layer's output after <c>final_layer_norm</c>.</summary>
    public Tensor LastHiddenState { get; }

    /// <summary>[batch, hidden]: <see cref="LastHiddenState"/> at the end-of-text position of each row.</summary>
    public Tensor PooledOutput { get; }

    /// <summary>
    /// num_hidden_layers + 1 tensors [batch, seq, hidden] when hidden states were asked for (else empty): [0] is the
    /// embeddings output, [i] the output of layer i, none with the final LayerNorm. SD3 uses [^2] (the penultimate layer).
    /// </summary>
    public IReadOnlyList<Tensor> HiddenStates { get; }

    /// <summary>[batch, projection_dim]: <c>text_projection(PooledOutput)</c>; null for a model without projection.</summary>
    public Tensor? TextEmbeds { get; }

    /// <summary>Releases every tensor.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        LastHiddenState.Dispose();
        PooledOutput.Dispose();
        TextEmbeds?.Dispose();
        foreach (var t in HiddenStates) t.Dispose();
    }
}
