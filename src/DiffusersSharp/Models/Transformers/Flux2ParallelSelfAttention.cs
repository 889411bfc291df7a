using DiffusersSharp.Models.Layers;
using TorchSharp;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// The parallel attention + MLP of FLUX.2's single-stream blocks (diffusers <c>Flux2ParallelSelfAttention</c> with
/// <c>Flux2ParallelSelfAttnProcessor</c>, a ViT-22B-style parallel block): one projection <c>to_qkv_mlp_proj</c> gives
/// q, k, v and the MLP input (gate and value, <c>mlp_mult_factor</c> 2); the attention (per-head
/// <c>torch.nn.RMSNorm</c> on q and k, rotary table, <c>scaled_dot_product_attention</c>) and the
/// <see cref="Flux2SwiGLU"/> MLP branch are concatenated along the channels and projected by <c>to_out</c>. With KV
/// arguments it is <c>Flux2KVParallelSelfAttnProcessor</c> (see <see cref="Flux2KVAttentionArgs"/>).
/// </summary>
public sealed class Flux2ParallelSelfAttention : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear to_qkv_mlp_proj;
    private readonly Flux2SwiGLU mlp_act_fn;
    private readonly RMSNorm norm_q, norm_k;
    private readonly Linear to_out;
#pragma warning restore IDE1006
    private readonly int _heads;
    private readonly int _headDim;
    private readonly long _inner;
    private readonly long _mlpHiddenDim;
    private readonly int _mlpMultFactor;

    /// <summary>
    /// Creates the block's attention for width <paramref name="queryDim"/> with <paramref name="heads"/> heads of
    /// <paramref name="dimHead"/> and an MLP branch of width <c>int(queryDim × mlpRatio)</c>.
    /// </summary>
    public Flux2ParallelSelfAttention(long queryDim, int heads, int dimHead, bool bias = false, bool outBias = true, double eps = 1e-5,
        double mlpRatio = 4.0, int mlpMultFactor = 2, Device? device = null, ScalarType? dtype = null) : base(nameof(Flux2ParallelSelfAttention))
    {
        _heads = heads;
        _headDim = dimHead;
        _inner = (long)heads * dimHead;
        _mlpHiddenDim = (long)(queryDim * mlpRatio);
        _mlpMultFactor = mlpMultFactor;
        to_qkv_mlp_proj = new Linear(queryDim, _inner * 3 + _mlpHiddenDim * mlpMultFactor, hasBias: bias, device: device, dtype: dtype);
        mlp_act_fn = new Flux2SwiGLU();
        norm_q = RMSNorm.Torch(dimHead, device, dtype, eps);
        norm_k = RMSNorm.Torch(dimHead, device, dtype, eps);
        to_out = new Linear(_inner + _mlpHiddenDim, queryDim, hasBias: outBias, device: device, dtype: dtype);
        RegisterComponents();
    }

    /// <summary>
    /// Runs the attention and the MLP branch on <paramref name="x"/> [B, S, D] (text and image tokens as one sequence)
    /// with the rotary table <paramref name="rotary"/> [S, head_dim]; returns [B, S, D].
    /// </summary>
    public Tensor forward(Tensor x, (Tensor Cos, Tensor Sin)? rotary) => forward(x, rotary, null);

    /// <summary>The block's attention with diffusers' <c>Flux2KVParallelSelfAttnProcessor</c> when <paramref name="kv"/> is given.</summary>
    internal Tensor forward(Tensor x, (Tensor Cos, Tensor Sin)? rotary, Flux2KVAttentionArgs? kv)
    {
        using var scope = NewDisposeScope();
        // The fused projection is the widest tensor of the model (3·inner + 2·mlp_hidden): freed when this scope ends.
        var projected = to_qkv_mlp_proj.forward(x);
        var q = norm_q.forward(Flux2Attention.Heads(projected.narrow(-1, 0, _inner), _heads, _headDim));
        var k = norm_k.forward(Flux2Attention.Heads(projected.narrow(-1, _inner, _inner), _heads, _headDim));
        var v = Flux2Attention.Heads(projected.narrow(-1, 2 * _inner, _inner), _heads, _headDim);
        var attended = Flux2Attention.RotaryAttention(q, k, v, rotary, kv);
        var mlp = mlp_act_fn.forward(projected.narrow(-1, 3 * _inner, _mlpHiddenDim * _mlpMultFactor));
        return to_out.forward(cat([attended, mlp], -1)).MoveToOuterDisposeScope();
    }
}
