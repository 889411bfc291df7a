using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.IPAdapters;

/// <summary>
/// The attention of one <see cref="IPAdapterTimeImageProjectionBlock"/> (diffusers' <c>Attention</c> after
/// <c>fuse_projections</c> with its separate k / v dropped): bias-free <c>to_q</c>, fused <c>to_kv</c> and <c>to_out.0</c>.
/// </summary>
internal sealed class IPAdapterTimeImageProjectionAttention : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear to_q;
    private readonly Linear to_kv;
    private readonly ModuleList<nn.Module<Tensor, Tensor>> to_out;
#pragma warning restore IDE1006
    private readonly int _heads;
    private readonly long _dimHead;

    public IPAdapterTimeImageProjectionAttention(long hiddenDim, long dimHead, int heads, Device? device, ScalarType? dtype)
        : base(nameof(IPAdapterTimeImageProjectionAttention))
    {
        (_heads, _dimHead) = (heads, dimHead);
        long inner = dimHead * heads;
        to_q = new Linear(hiddenDim, inner, hasBias: false, device: device, dtype: dtype);
        to_kv = new Linear(hiddenDim, 2 * inner, hasBias: false, device: device, dtype: dtype);
        to_out = new ModuleList<nn.Module<Tensor, Tensor>>(new Linear(inner, hiddenDim, hasBias: false, device: device, dtype: dtype), nn.Dropout(0.0));
        RegisterComponents();
    }

    /// <summary>
    /// <paramref name="latents"/> [B, Q, hidden] attend to <paramref name="context"/> [B, S, hidden] as diffusers writes it:
    /// q and k each times 1/√√dim_head, their product softmaxed in float32 and cast back, times v; then to_out.
    /// </summary>
    public Tensor forward(Tensor latents, Tensor context)
    {
        long batch = latents.shape[0];
        Tensor Heads(Tensor t) => t.view(batch, -1, _heads, _dimHead).transpose(1, 2);
        var q = Heads(to_q.forward(latents));
        var kv = to_kv.forward(context).chunk(2, -1);
        var k = Heads(kv[0]);
        var v = Heads(kv[1]);
        double scale = 1 / Math.Sqrt(Math.Sqrt(_dimHead));
        var weight = (q * scale).matmul((k * scale).transpose(-2, -1));
        weight = weight.to(ScalarType.Float32).softmax(-1).to(weight.dtype);
        var o = weight.matmul(v).transpose(1, 2).reshape(batch, -1, _heads * _dimHead);
        return to_out[1].forward(to_out[0].forward(o));
    }
}

/// <summary>
/// One block of diffusers' <c>IPAdapterTimeImageProjection</c> (<c>IPAdapterTimeImageProjectionBlock</c>): the learned
/// queries, modulated by the timestep embedding (<c>adaln_proj</c> gives shift / scale for the attention and the MLP),
/// attend to <c>cat([ln0(x), modulated latents])</c>; then an AdaLN-modulated bias-free GELU feed-forward. Residuals
/// around both.
/// </summary>
internal sealed class IPAdapterTimeImageProjectionBlock : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly LayerNorm ln0;
    private readonly LayerNorm ln1;
    private readonly IPAdapterTimeImageProjectionAttention attn;
    private readonly FeedForward ff;
    private readonly Linear adaln_proj;
    private readonly LayerNorm adaln_norm;
#pragma warning restore IDE1006

    public IPAdapterTimeImageProjectionBlock(long hiddenDim, long dimHead, int heads, int ffnRatio, Device? device, ScalarType? dtype)
        : base(nameof(IPAdapterTimeImageProjectionBlock))
    {
        ln0 = nn.LayerNorm(hiddenDim, 1e-5, device: device, dtype: dtype);
        ln1 = nn.LayerNorm(hiddenDim, 1e-5, device: device, dtype: dtype);
        attn = new IPAdapterTimeImageProjectionAttention(hiddenDim, dimHead, heads, device, dtype);
        ff = new FeedForward(hiddenDim, hiddenDim, ffnRatio, bias: false, activationFn: "gelu", device: device, dtype: dtype);
        adaln_proj = new Linear(hiddenDim, 4 * hiddenDim, hasBias: true, device: device, dtype: dtype);
        adaln_norm = nn.LayerNorm(hiddenDim, 1e-5, device: device, dtype: dtype);
        RegisterComponents();
    }

    public Tensor forward(Tensor x, Tensor latents, Tensor timestepEmb)
    {
        using var scope = NewDisposeScope();
        var emb = adaln_proj.forward(nn.functional.silu(timestepEmb)).chunk(4, 1);
        var (shiftMsa, scaleMsa, shiftMlp, scaleMlp) = (emb[0].unsqueeze(1), emb[1].unsqueeze(1), emb[2].unsqueeze(1), emb[3].unsqueeze(1));
        var residual = latents;
        var normedX = ln0.forward(x);
        var modulated = ln1.forward(latents) * (1 + scaleMsa) + shiftMsa;
        var h = attn.forward(modulated, cat([normedX, modulated], -2)) + residual;
        var m = adaln_norm.forward(h) * (1 + scaleMlp) + shiftMlp;
        return (ff.forward(m) + h).MoveToOuterDisposeScope();
    }
}

/// <summary>
/// diffusers' <c>IPAdapterTimeImageProjection</c>, the SD3 IP-Adapter's Resampler conditioned on the timestep:
/// sinusoidal timestep features (<c>time_proj</c>: cos first, no frequency shift) through <c>time_embedding</c> give an
/// embedding added to <c>proj_in</c> of the image features and modulating every block; <c>num_queries</c> learned
/// <c>latents</c> refined by <c>depth</c> blocks, then <c>proj_out</c> to the transformer's width and <c>norm_out</c>.
/// Input [N, S, embed_dim] and timesteps [N] (or one for all); output the tokens [N, num_queries, output_dim] and the
/// timestep embedding [N, hidden_dim] that the attention processors' <c>norm_ip</c> takes.
/// </summary>
public sealed class IPAdapterTimeImageProjection : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Parameter latents;
    private readonly Linear proj_in;
    private readonly Linear proj_out;
    private readonly LayerNorm norm_out;
    private readonly ModuleList<IPAdapterTimeImageProjectionBlock> layers;
    private readonly Timesteps time_proj;
    private readonly TimestepEmbedding time_embedding;
#pragma warning restore IDE1006

    /// <summary>Builds the Resampler (diffusers' defaults are InstantX/SD3.5-Large-IP-Adapter's sizes).</summary>
    public IPAdapterTimeImageProjection(long embedDim = 1152, long outputDim = 2432, long hiddenDim = 1280, int depth = 4, long dimHead = 64,
        int heads = 20, int numQueries = 64, int ffnRatio = 4, int timestepInDim = 320, Device? device = null, ScalarType? dtype = null)
        : base(nameof(IPAdapterTimeImageProjection))
    {
        (EmbedDim, OutputDim, HiddenDim, NumQueries) = (embedDim, outputDim, hiddenDim, numQueries);
        latents = new Parameter(empty([1, numQueries, hiddenDim], device: device, dtype: dtype ?? ScalarType.Float32));
        proj_in = new Linear(embedDim, hiddenDim, hasBias: true, device: device, dtype: dtype);
        proj_out = new Linear(hiddenDim, outputDim, hasBias: true, device: device, dtype: dtype);
        norm_out = nn.LayerNorm(outputDim, 1e-5, device: device, dtype: dtype);
        layers = new ModuleList<IPAdapterTimeImageProjectionBlock>();
        for (int i = 0; i < depth; i++) layers.Add(new IPAdapterTimeImageProjectionBlock(hiddenDim, dimHead, heads, ffnRatio, device, dtype));
        time_proj = new Timesteps(timestepInDim, flipSinToCos: true, downscaleFreqShift: 0);
        time_embedding = new TimestepEmbedding(timestepInDim, hiddenDim, device, dtype);
        RegisterComponents();
    }

    /// <summary>Width of the image features it takes ([N, S, embed_dim]).</summary>
    public long EmbedDim { get; }

    /// <summary>Width of the tokens it gives (the transformer's width).</summary>
    public long OutputDim { get; }

    /// <summary>Width of the Resampler and of the timestep embedding it gives.</summary>
    public long HiddenDim { get; }

    /// <summary>Tokens per image.</summary>
    public int NumQueries { get; }

    /// <summary>
    /// Resamples <paramref name="x"/> [N, S, embed_dim] at <paramref name="timestep"/> [N] (the transformer's timesteps);
    /// returns the image tokens [N, num_queries, output_dim] and the timestep embedding. As in diffusers, a timestep batch
    /// of 1 is broadcast over the N images.
    /// </summary>
    public (Tensor Latents, Tensor TimestepEmb) forward(Tensor x, Tensor timestep)
    {
        using var scope = NewDisposeScope();
        var temb = time_embedding.forward(time_proj.forward(timestep).to(x.dtype));
        var h = latents.repeat(x.shape[0], 1, 1);
        var features = proj_in.forward(x) + temb.unsqueeze(1);
        foreach (var block in layers) h = block.forward(features, h, temb);
        var result = norm_out.forward(proj_out.forward(h));
        return (result.MoveToOuterDisposeScope(), temb.MoveToOuterDisposeScope());
    }
}
