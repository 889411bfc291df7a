using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// Chroma's <c>distilled_guidance_layer</c> (diffusers <c>ChromaApproximator</c>), which replaces the per-block modulation
/// layers of FLUX.1: <c>in_proj</c>, then <c>n_layers</c> residual SiLU MLPs (<c>x + layers[i](norms[i](x))</c>, each norm
/// PyTorch's <c>torch.nn.RMSNorm</c>), then <c>out_proj</c>; applied to every modulation index's input vector at once.
/// </summary>
public sealed class ChromaApproximator : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear in_proj;
    private readonly ModuleList<PixArtAlphaTextProjection> layers;
    private readonly ModuleList<RMSNorm> norms;
    private readonly Linear out_proj;
#pragma warning restore IDE1006

    /// <summary>Creates the approximator <paramref name="inDim"/> → <paramref name="hiddenDim"/> (× <paramref name="nLayers"/>) → <paramref name="outDim"/>.</summary>
    public ChromaApproximator(long inDim, long outDim, long hiddenDim, int nLayers, Device? device = null, ScalarType? dtype = null)
        : base(nameof(ChromaApproximator))
    {
        in_proj = new Linear(inDim, hiddenDim, hasBias: true, device: device, dtype: dtype);
        layers = new ModuleList<PixArtAlphaTextProjection>();
        norms = new ModuleList<RMSNorm>();
        for (int i = 0; i < nLayers; i++)
        {
            layers.Add(new PixArtAlphaTextProjection(hiddenDim, hiddenDim, device: device, dtype: dtype, actFn: "silu"));
            norms.Add(RMSNorm.Torch(hiddenDim, device, dtype));
        }
        out_proj = new Linear(hiddenDim, outDim, hasBias: true, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>Maps [..., in_dim] to [..., out_dim].</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        var h = in_proj.forward(x);
        for (int i = 0; i < layers.Count; i++) h = h + layers[i].forward(norms[i].forward(h));
        return out_proj.forward(h).MoveToOuterDisposeScope();
    }
}
