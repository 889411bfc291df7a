using static TorchSharp.torch;

namespace DiffusersSharp.Models.Unets;

/// <summary>A UNet down block: returns its output and the states the matching up block concatenates.</summary>
public interface IUNetDownBlock
{
    /// <summary>Runs the block (<paramref name="encoderHiddenStates"/> is ignored by blocks without attention).</summary>
    (Tensor Hidden, Tensor[] Residuals) forward(Tensor hiddenStates, Tensor temb, Tensor? encoderHiddenStates);
}
