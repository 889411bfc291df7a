using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.IPAdapters;

/// <summary>
/// One block of diffusers' <c>IPAdapterPlusImageProjection</c>: the learned queries attend to the image features and to
/// themselves (keys and values from <c>cat([ln0(x), ln1(latents)])</c>, bias-free attention with 64-wide heads), plus the
/// residual, then a LayerNorm + bias-free GELU feed-forward with its own residual.
/// </summary>
internal sealed class IPAdapterPlusImageProjectionBlock : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly LayerNorm ln0;
    private readonly LayerNorm ln1;
    private readonly Attention attn;
    private readonly ModuleList<nn.Module<Tensor, Tensor>> ff;
#pragma warning restore IDE1006

    public IPAdapterPlusImageProjectionBlock(long embedDims, long dimHead, int heads, int ffnRatio, Device? device, ScalarType? dtype)
        : base(nameof(IPAdapterPlusImageProjectionBlock))
    {
        ln0 = nn.LayerNorm(embedDims, 1e-5, device: device, dtype: dtype);
        ln1 = nn.LayerNorm(embedDims, 1e-5, device: device, dtype: dtype);
        attn = new Attention(embedDims, embedDims, heads, dimHead, bias: false, outBias: false, device: device, dtype: dtype);
        ff = new ModuleList<nn.Module<Tensor, Tensor>>(
            nn.LayerNorm(embedDims, 1e-5, device: device, dtype: dtype),
            new FeedForward(embedDims, embedDims, ffnRatio, bias: false, activationFn: "gelu", device: device, dtype: dtype));
        RegisterComponents();
    }

    public Tensor forward(Tensor x, Tensor latents, Tensor residual)
    {
        using var scope = NewDisposeScope();
        var normed = ln1.forward(latents);
        var context = cat([ln0.forward(x), normed], -2);
        var h = attn.forward(normed, context) + residual;
        h = ff[1].forward(ff[0].forward(h)) + h;
        return h.MoveToOuterDisposeScope();
    }
}

/// <summary>
/// diffusers' <c>IPAdapterPlusImageProjection</c>, the Resampler of IP-Adapter Plus: <c>num_queries</c> learned
/// <c>latents</c> refined by <c>depth</c> blocks that attend to <c>proj_in</c> of the image encoder's penultimate hidden
/// states, then <c>proj_out</c> to the UNet's cross-attention width and <c>norm_out</c>. Input [N, S, embed_dims], output
/// [N, num_queries, output_dims].
/// </summary>
public sealed class IPAdapterPlusImageProjection : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Parameter latents;
    private readonly Linear proj_in;
    private readonly Linear proj_out;
    private readonly LayerNorm norm_out;
    private readonly ModuleList<IPAdapterPlusImageProjectionBlock> layers;
#pragma warning restore IDE1006

    /// <summary>Builds the Resampler (diffusers' defaults).</summary>
    public IPAdapterPlusImageProjection(long embedDims = 768, long outputDims = 1024, long hiddenDims = 1280, int depth = 4, long dimHead = 64,
        int heads = 16, int numQueries = 8, int ffnRatio = 4, Device? device = null, ScalarType? dtype = null)
        : base(nameof(IPAdapterPlusImageProjection))
    {
        NumTokens = numQueries;
        latents = new Parameter(empty([1, numQueries, hiddenDims], device: device, dtype: dtype ?? ScalarType.Float32));
        proj_in = new Linear(embedDims, hiddenDims, hasBias: true, device: device, dtype: dtype);
        proj_out = new Linear(hiddenDims, outputDims, hasBias: true, device: device, dtype: dtype);
        norm_out = nn.LayerNorm(outputDims, 1e-5, device: device, dtype: dtype);
        layers = new ModuleList<IPAdapterPlusImageProjectionBlock>();
        for (int i = 0; i < depth; i++) layers.Add(new IPAdapterPlusImageProjectionBlock(hiddenDims, dimHead, heads, ffnRatio, device, dtype));
        RegisterComponents();
    }

    /// <summary>Tokens produced per image (num_queries).</summary>
    public int NumTokens { get; }

    /// <summary>Width of the image features it takes ([N, S, width]).</summary>
    public long EmbedDims => proj_in.weight!.shape[1];

    /// <summary>Resamples image features [N, S, embed_dims] to [N, num_queries, output_dims].</summary>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = latents.repeat(x.shape[0], 1, 1);
        var features = proj_in.forward(x);
        foreach (var block in layers)
        {
            var residual = h;
            h = block.forward(features, h, residual);
        }
        return norm_out.forward(proj_out.forward(h)).MoveToOuterDisposeScope();
    }
}
