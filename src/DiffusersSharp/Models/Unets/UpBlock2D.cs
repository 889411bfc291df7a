using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Unets;

/// <summary>
/// diffusers' <c>UpBlock2D</c>: for each resnet, concatenate the next skip state (from the last) along channels and
/// apply the resnet; then an optional <see cref="Upsample2D"/> (x2, or to the given size).
/// </summary>
public sealed class UpBlock2D : nn.Module, IUNetUpBlock
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly ModuleList<ResnetBlock2D> resnets;
    private readonly ModuleList<Upsample2D>? upsamplers;
#pragma warning restore IDE1006

    /// <summary>Builds the block; resnet i takes (i == 0 ? prevOutputChannels : outChannels) + (last ? inChannels : outChannels) channels.</summary>
    public UpBlock2D(long inChannels, long prevOutputChannels, long outChannels, long tembChannels, int numLayers, long groups,
        double eps, bool addUpsample, Device? device = null, ScalarType? dtype = null)
        : base(nameof(UpBlock2D))
    {
        resnets = new ModuleList<ResnetBlock2D>();
        for (int i = 0; i < numLayers; i++)
        {
            long skip = i == numLayers - 1 ? inChannels : outChannels;
            long input = i == 0 ? prevOutputChannels : outChannels;
            resnets.Add(new ResnetBlock2D(input + skip, outChannels, groups, eps, tembChannels, device: device, dtype: dtype));
        }
        if (addUpsample)
            upsamplers = new ModuleList<Upsample2D>(new Upsample2D(outChannels, useConv: true, outChannels: outChannels, device: device, dtype: dtype));
        RegisterComponents();
    }

    /// <inheritdoc/>
    public int NumResnets => resnets.Count;

    /// <inheritdoc/>
    public int ResolutionIdx { get; init; }

    /// <inheritdoc/>
    public FreeU? FreeU { get; set; }

    /// <inheritdoc/>
    public Tensor forward(Tensor hiddenStates, IReadOnlyList<Tensor> residuals, Tensor temb, Tensor? encoderHiddenStates, long[]? upsampleSize)
    {
        using var scope = NewDisposeScope();
        // Each intermediate is freed once the next step has run (see Temporaries); the skip states are the caller's.
        var h = hiddenStates;
        for (int i = 0; i < resnets.Count; i++)
        {
            var residual = residuals[residuals.Count - 1 - i];
            h = h.Consume(x => Unets.FreeU.ConcatSkip(FreeU, ResolutionIdx, x, residual), borrowed: hiddenStates)
                .Consume(x => resnets[i].forward(x, temb));
        }
        if (upsamplers is not null) h = h.Consume(x => upsamplers[0].forward(x, upsampleSize), borrowed: hiddenStates);
        return h.MoveToOuterDisposeScope();
    }
}
