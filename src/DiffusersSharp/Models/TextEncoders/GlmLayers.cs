using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.TextEncoders;

/// <summary>
/// GLM's rotary embedding (transformers' <c>apply_rotary_pos_emb</c> of modeling_glm): only the first rotary_dim values of
/// each head rotate, as interleaved pairs (x0, x1), (x2, x3), ... each by its own frequency; the rest pass unchanged.
/// </summary>
internal static class GlmRotary
{
    /// <summary>
    /// Rotates <paramref name="x"/> [B, H, L, head_dim] with <paramref name="cos"/> / <paramref name="sin"/> [1, 1, L,
    /// rotary_dim] as Qwen3Rotary.CosSin makes them (each frequency's angle in both halves): the first half's values are
    /// repeated pairwise, then <c>x · cos + rotate_half(x) · sin</c> with GLM's <c>rotate_half(x) = stack(-x_odd, x_even)</c>.
    /// </summary>
    public static Tensor Apply(Tensor x, Tensor cos, Tensor sin)
    {
        using var scope = NewDisposeScope();
        long rotary = cos.shape[^1], headDim = x.shape[^1];
        var c = cos.narrow(-1, 0, rotary / 2).repeat_interleave(2, dim: -1, output_size: rotary);
        var s = sin.narrow(-1, 0, rotary / 2).repeat_interleave(2, dim: -1, output_size: rotary);
        var rot = x.narrow(-1, 0, rotary);
        long[] pairs = [.. rot.shape[..^1], rotary / 2, 2];
        var parts = rot.reshape(pairs).unbind(-1);
        var rotated = stack([-parts[1], parts[0]], -1).flatten(-2);
        var embedded = rot * c + rotated * s;
        var result = rotary == headDim ? embedded : cat([embedded, x.narrow(-1, rotary, headDim - rotary)], -1);
        return result.MoveToOuterDisposeScope();
    }
}

/// <summary><c>mlp</c>: one fused <c>gate_up_proj</c> (gate first, then up), <c>down_proj(up · act(gate))</c>, bias-free.</summary>
internal sealed class GlmMLP : nn.Module<Tensor, Tensor>
{
    private readonly Linear gate_up_proj, down_proj;
    private readonly string _act;

    public GlmMLP(GlmConfig config, Device? device, ScalarType? dtype) : base(nameof(GlmMLP))
    {
        _act = config.HiddenAct;
        gate_up_proj = new Linear(config.HiddenSize, 2L * config.IntermediateSize, hasBias: false, device: device, dtype: dtype);
        down_proj = new Linear(config.IntermediateSize, config.HiddenSize, hasBias: false, device: device, dtype: dtype);
        RegisterComponents();
    }

    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var halves = gate_up_proj.forward(x).chunk(2, -1);
        var h = halves[1] * HfActivations.Apply(_act, halves[0]);
        return down_proj.forward(h).MoveToOuterDisposeScope();
    }
}
