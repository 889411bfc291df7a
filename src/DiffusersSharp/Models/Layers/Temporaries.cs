using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// Frees intermediate activations as soon as the next step has consumed them. A dispose scope frees its tensors only
/// when it ends, so a chain such as a VAE decoder's (each step a full-resolution tensor) would otherwise hold every
/// intermediate at once; PyTorch frees each as its last Python reference goes, and so must we to keep its peak memory.
/// </summary>
internal static class Temporaries
{
    /// <summary>
    /// Runs <paramref name="step"/> on <paramref name="current"/>, then frees <paramref name="current"/> unless it is
    /// <paramref name="borrowed"/> (a tensor the caller still owns, e.g. the forward's input) or the step returned it.
    /// Freeing a tensor that a view still uses only drops this handle: the storage lives on with the view.
    /// </summary>
    public static Tensor Consume(this Tensor current, Func<Tensor, Tensor> step, Tensor? borrowed = null)
    {
        var next = step(current);
        if (!ReferenceEquals(next, current) && !ReferenceEquals(current, borrowed)) current.Dispose();
        return next;
    }

    /// <summary>
    /// Runs one dual-stream block (text and image tokens in, both out) in its own dispose scope, then frees the two input
    /// streams: between blocks only the current pair lives, as in PyTorch.
    /// </summary>
    public static (Tensor Context, Tensor X) RunStreams(Func<(Tensor Context, Tensor X)> block, Tensor context, Tensor x)
    {
        Tensor newContext, newX;
        using (var blockScope = NewDisposeScope())
        {
            (newContext, newX) = block();
            newContext.MoveToOuterDisposeScope();
            newX.MoveToOuterDisposeScope();
        }
        context.Dispose();
        x.Dispose();
        return (newContext, newX);
    }
}
