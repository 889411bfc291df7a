using static TorchSharp.torch;

namespace DiffusersSharp.Models.Unets;

/// <summary>A UNet up block: consumes the last <see cref="NumResnets"/> skip states, optionally upsamples to a given size.</summary>
public interface IUNetUpBlock
{
    /// <summary>Resnets in the block, which is how many skip states it consumes.</summary>
    int NumResnets { get; }

    /// <summary>The block's index among the UNet's up blocks (diffusers' <c>resolution_idx</c>: 0 is the lowest resolution).</summary>
    int ResolutionIdx { get; }

    /// <summary>FreeU applied before each resnet's concatenation (diffusers' <c>enable_freeu</c> sets it on every up block),
    /// or null.</summary>
    FreeU? FreeU { get; set; }

    /// <summary>
    /// Runs the block; <paramref name="residuals"/> are consumed from the last; <paramref name="upsampleSize"/>
    /// (height, width) replaces the x2 upsampling when given.
    /// </summary>
    Tensor forward(Tensor hiddenStates, IReadOnlyList<Tensor> residuals, Tensor temb, Tensor? encoderHiddenStates, long[]? upsampleSize);
}
