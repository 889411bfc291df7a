using static TorchSharp.torch;

namespace DiffusersSharp.Models.Unets;

/// <summary>A UNet up block: consumes the last <see cref="NumResnets"/> skip states, optionally upsamples to a given size.</summary>
public interface IUNetUpBlock
{
    /// <summary>Resnets in the block, which is how many skip states it consumes.</summary>
    int NumResnets { get; }

    /// <summary>
    /// Runs the block; <paramref name="residuals"/> are consumed from the last; <paramref name="upsampleSize"/>
    /// (height, width) replaces the x2 upsampling when given.
    /// </summary>
    Tensor forward(Tensor hiddenStates, IReadOnlyList<Tensor> residuals, Tensor temb, Tensor? encoderHiddenStates, long[]? upsampleSize);
}
