using DiffusersSharp.Images;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines;

/// <summary>
/// What every pipeline class shares with the others of its family and with every other family (the lifetime part of
/// diffusers' <c>DiffusionPipeline</c>): a reference on the shared <typeparamref name="TComponents"/>, taken when the
/// pipeline is built and given back when it is disposed (the last one frees the models, as diffusers' <c>from_pipe</c>
/// pipelines share theirs); the end of every call (decode, then under model offload every model back to the CPU:
/// diffusers' <c>maybe_free_model_hooks</c>); and decoding previews with the VAE brought to the device.
/// </summary>
/// <typeparam name="TComponents">The family's loaded components.</typeparam>
public abstract class DiffusionPipelineBase<TComponents> : IDisposable where TComponents : PipelineComponents
{
    private bool _disposed;

    /// <summary>Takes a reference on <paramref name="components"/>; they are freed when the last pipeline using them is disposed.</summary>
    /// <exception cref="ObjectDisposedException">The components were already freed.</exception>
    protected DiffusionPipelineBase(TComponents components)
    {
        ArgumentNullException.ThrowIfNull(components);
        components.Acquire();
        Components = components;
    }

    /// <summary>The shared components.</summary>
    public TComponents Components { get; }

    /// <summary>Throws if this pipeline was disposed.</summary>
    protected void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    /// <summary>
    /// The end of a call: reports the "decode" stage around <paramref name="decode"/> (its end only when it succeeded) and,
    /// whatever happens, sends every model back to the CPU under model offload.
    /// </summary>
    private protected TOutput DecodeAndFinish<TOutput>(IProgress<PipelineProgress>? progress, Func<TOutput> decode)
    {
        progress?.Report(new PipelineProgress("decode", 0, 1));
        try
        {
            var output = decode();
            progress?.Report(new PipelineProgress("decode", 1, 1));
            return output;
        }
        finally
        {
            Components.OffloadAll();
        }
    }

    /// <summary>
    /// Decodes a preview (intermediate latents, e.g. <see cref="StepEndContext.Latents"/> in a step callback) with
    /// <paramref name="decode"/> under inference mode; under model offload the VAE comes to the device for it and the model
    /// that was there goes back after.
    /// </summary>
    private protected IReadOnlyList<ImageBuffer> DecodePreview(Tensor latents, Func<IReadOnlyList<ImageBuffer>> decode)
    {
        ArgumentNullException.ThrowIfNull(latents);
        ThrowIfDisposed();
        using var inference = inference_mode();
        return Components.WithActive("vae", decode);
    }

    /// <summary>Releases this pipeline's reference on the shared components.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Components.Release();
        GC.SuppressFinalize(this);
    }
}
