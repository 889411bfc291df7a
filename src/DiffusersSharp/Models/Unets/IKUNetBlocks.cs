using static TorchSharp.torch;

namespace DiffusersSharp.Models.Unets;

/// <summary>A K-UNet down block (diffusers' <c>KDownBlock2D</c>, <c>KCrossAttnDownBlock2D</c>): its output and the states
/// it leaves for the up path, some of them absent (diffusers' <c>None</c>).</summary>
internal interface IKUNetDownBlock
{
    /// <summary>Runs the block.</summary>
    (Tensor Hidden, Tensor?[] Residuals) forward(Tensor hiddenStates, Tensor temb, Tensor? encoderHiddenStates);
}

/// <summary>A K-UNet up block (diffusers' <c>KUpBlock2D</c>, <c>KCrossAttnUpBlock2D</c>): it takes <see cref="NumResnets"/>
/// skip states off the stack but concatenates only the last of them, when present.</summary>
internal interface IKUNetUpBlock
{
    /// <summary>Resnets in the block, which is how many skip states it takes off the stack.</summary>
    int NumResnets { get; }

    /// <summary>Runs the block with the last skip state it took (<paramref name="residual"/>, or null: none).</summary>
    Tensor forward(Tensor hiddenStates, Tensor? residual, Tensor temb, Tensor? encoderHiddenStates);
}
