using DiffusersSharp.Models.IPAdapters;
using DiffusersSharp.Models.Layers;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// The MMDiT attention of SD3 (diffusers <c>Attention</c> with <c>JointAttnProcessor2_0</c>) and Flux (<c>FluxAttention</c>
/// with <c>FluxAttnProcessor</c>). With a context stream (<c>added_kv_proj_dim</c> set) image and text tokens attend
/// jointly: q, k, v of both streams are concatenated along the sequence, <b>image tokens first</b> (SD3) or <b>text tokens
/// first</b> (Flux, <c>contextFirst</c>), attended with <c>scaled_dot_product_attention</c> (scale 1/√head_dim) and split
/// again; without one (the SD3.5 <c>attn2</c>, Flux's single-stream blocks) it is plain self-attention. Optional per-head
/// RMSNorm on q and k, then optional rotary embedding of q and k over the joint sequence (Flux). Flux's single-stream
/// attention is <c>pre_only</c>: no output projection.
/// </summary>
public sealed class JointAttention : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear to_q, to_k, to_v;
    private readonly ModuleList<nn.Module<Tensor, Tensor>> to_out;
    private readonly Linear? add_q_proj, add_k_proj, add_v_proj, to_add_out;
    private readonly RMSNorm? norm_q, norm_k, norm_added_q, norm_added_k;
#pragma warning restore IDE1006
    private readonly int _heads;
    private readonly int _headDim;
    private readonly bool _contextFirst;
    private SD3IPAdapterJointAttnProcessor? _sd3IpAdapter;
    private FluxIPAdapterAttnProcessor? _fluxIpAdapter;

    /// <summary>
    /// Creates the attention for width <paramref name="dim"/> = <paramref name="heads"/> × <paramref name="headDim"/>.
    /// <paramref name="joint"/> adds the context projections; <paramref name="contextPreOnly"/> (last block) drops the
    /// context output projection. <paramref name="contextFirst"/> puts the text tokens before the image tokens (Flux);
    /// <paramref name="preOnly"/> drops the output projection <c>to_out</c> (Flux's single-stream blocks).
    /// </summary>
    public JointAttention(long dim, int heads, int headDim, bool joint, bool contextPreOnly, bool qkRmsNorm,
        Device? device = null, ScalarType? dtype = null, bool contextFirst = false, bool preOnly = false) : base(nameof(JointAttention))
    {
        _heads = heads;
        _headDim = headDim;
        _contextFirst = contextFirst;
        long inner = (long)heads * headDim;
        to_q = new Linear(dim, inner, hasBias: true, device: device, dtype: dtype);
        to_k = new Linear(dim, inner, hasBias: true, device: device, dtype: dtype);
        to_v = new Linear(dim, inner, hasBias: true, device: device, dtype: dtype);
        to_out = preOnly ? new ModuleList<nn.Module<Tensor, Tensor>>()
            : new ModuleList<nn.Module<Tensor, Tensor>>(new Linear(inner, dim, hasBias: true, device: device, dtype: dtype), nn.Dropout(0.0));
        if (qkRmsNorm)
        {
            norm_q = new RMSNorm(headDim, 1e-6, device, dtype);
            norm_k = new RMSNorm(headDim, 1e-6, device, dtype);
        }
        if (joint)
        {
            add_q_proj = new Linear(dim, inner, hasBias: true, device: device, dtype: dtype);
            add_k_proj = new Linear(dim, inner, hasBias: true, device: device, dtype: dtype);
            add_v_proj = new Linear(dim, inner, hasBias: true, device: device, dtype: dtype);
            if (!contextPreOnly) to_add_out = new Linear(inner, dim, hasBias: true, device: device, dtype: dtype);
            if (qkRmsNorm)
            {
                norm_added_q = new RMSNorm(headDim, 1e-6, device, dtype);
                norm_added_k = new RMSNorm(headDim, 1e-6, device, dtype);
            }
        }
        RegisterComponents();
    }

    /// <summary>The SD3 IP-Adapter attached to this attention (diffusers' <c>SD3IPAdapterJointAttnProcessor2_0</c>), or null.</summary>
    internal SD3IPAdapterJointAttnProcessor? Sd3IpAdapter => _sd3IpAdapter;

    /// <summary>The attached Flux IP-Adapter processor (diffusers' <c>FluxIPAdapterAttnProcessor</c>), or null.</summary>
    internal FluxIPAdapterAttnProcessor? FluxIpAdapter => _fluxIpAdapter;

    /// <summary>Width of the attention (heads × head_dim), the hidden_size of an IP-Adapter processor.</summary>
    internal long InnerDim => to_q.weight!.shape[0];

    /// <summary>Attaches an SD3 IP-Adapter processor, registered as <c>processor</c> as diffusers' module processors are.</summary>
    internal void AttachIpAdapter(SD3IPAdapterJointAttnProcessor processor)
    {
        if (_contextFirst) throw new NotSupportedException("The SD3 IP-Adapter processor is for SD3's joint attention (image tokens first).");
        RegisterProcessor(processor);
        _sd3IpAdapter = processor;
    }

    /// <summary>Attaches a Flux IP-Adapter processor, registered as <c>processor</c> (diffusers' set_attn_processor).</summary>
    internal void AttachIpAdapter(FluxIPAdapterAttnProcessor processor)
    {
        RegisterProcessor(processor);
        _fluxIpAdapter = processor;
    }

    private void RegisterProcessor(nn.Module processor)
    {
        if (_sd3IpAdapter is not null || _fluxIpAdapter is not null) throw new InvalidOperationException("An IP-Adapter is already attached to this attention.");
        register_module("processor", processor);
    }

    /// <summary>Removes and frees the attached Flux IP-Adapter processor (diffusers' unload_ip_adapter restoring FluxAttnProcessor).</summary>
    internal void DetachIpAdapter()
    {
        if (_fluxIpAdapter is null) return;
        _internal_submodules.Remove("processor");
        _fluxIpAdapter.Dispose();
        _fluxIpAdapter = null;
    }

    /// <summary>
    /// Perturbed-Attention Guidance for the call in progress (diffusers' SD3 PAG processors, which
    /// <c>_set_pag_attn_processor</c> installs on the chosen layers for one pipeline call): 0 runs the attention as usual;
    /// 2 (<c>PAGJointAttnProcessor2_0</c>, the batch [original, perturbed]) or 3 (<c>PAGCFGJointAttnProcessor2_0</c>,
    /// [uncond, cond, perturbed]) splits image and text tokens into that many equal batch parts. The first parts attend
    /// jointly as usual; in the last, each image token attends to itself and to the text tokens only (the attention mask
    /// is −∞ between different image tokens), and the text tokens attend to all. As in those processors, neither path
    /// applies the q / k RMSNorms (SD3.5's <c>qk_norm</c>): they are diffusers' processors for SD3, written before it. Set
    /// and cleared by <see cref="SD3Transformer2DModel.PerturbAttention"/>; only joint attentions (with a text stream) take it.
    /// </summary>
    internal int PerturbedChunks
    {
        get => _perturbedChunks;
        set
        {
            _perturbedChunks = value;
            if (value != 0) return;
            _perturbedMask?.Dispose(); // the call is over: its mask goes with it
            _perturbedMask = null;
        }
    }

    private int _perturbedChunks;

    // The perturbed part's mask for the call in progress (and its image-token count), made at its first step and reused.
    private Tensor? _perturbedMask;
    private long _perturbedMaskImageTokens;

    /// <summary>The perturbed part's mask over the joint sequence [image; text], [joint, joint]: −∞ between different image
    /// tokens, 0 elsewhere. Made once per call (per shape, dtype and device), not at every step.</summary>
    private Tensor PerturbedMask(long n, long joint, ScalarType dtype, Device device)
    {
        if (_perturbedMask is { } cached && _perturbedMaskImageTokens == n && cached.shape[0] == joint && cached.dtype == dtype
            && cached.device_type == device.type && cached.device_index == device.index) return cached;
        _perturbedMask?.Dispose();
        _perturbedMaskImageTokens = n;
        using var scope = NewDisposeScope();
        var identity = full(n, n, float.NegativeInfinity, dtype: dtype, device: device).masked_fill(eye(n, dtype: ScalarType.Bool, device: device), 0);
        _perturbedMask = nn.functional.pad(identity, [0, joint - n, 0, joint - n]).DetachFromDisposeScope(); // outlives the step
        return _perturbedMask;
    }

    /// <summary>Whether this attention has the text stream's projections (<c>added_kv_proj_dim</c>).</summary>
    internal bool IsJoint => add_q_proj is not null;

    /// <summary>[B, N, H·d] → [B, H, N, d] as a view of the projection output.</summary>
    private Tensor Heads(Tensor x) => x.view(x.shape[0], x.shape[1], _heads, _headDim).transpose(1, 2);

    /// <summary>
    /// Attends. <paramref name="x"/> [B, N, D] are image tokens, <paramref name="context"/> [B, S, D] text tokens (null for
    /// self-attention). Returns the image output and the context output (null without a context; un-projected when
    /// <c>context_pre_only</c>, which SD3 then discards). <paramref name="keyBias"/> [N + S], if given, is added to the
    /// attention logits of each key (image keys first); SD3Transformer2DModel uses it to let one text token stand for many.
    /// <paramref name="rotary"/> (cos, sin) [S_joint, head_dim] rotates q and k after their norms, in the joint order.
    /// <paramref name="ip"/>: the SD3 IP-Adapter Resampler's tokens and timestep embedding; with an attached processor
    /// whose scale is not 0, its image attention is added to the image output before <c>to_out</c>.
    /// <paramref name="attentionMask"/> (Chroma), broadcastable to [B, heads, S_joint, S_joint] in the joint order, goes to
    /// <c>scaled_dot_product_attention</c> as diffusers passes it: a bool mask keeps the true pairs, a floating one is
    /// added to the logits (converted to the query's dtype).
    /// </summary>
    public (Tensor X, Tensor? Context) forward(Tensor x, Tensor? context, Tensor? keyBias = null, (Tensor Cos, Tensor Sin)? rotary = null,
        (Tensor Hidden, Tensor Temb)? ip = null, Tensor? attentionMask = null) =>
        PerturbedChunks == 0 ? Attend(x, context, keyBias, rotary, ip, attentionMask, null) : AttendPerturbed(x, context, keyBias, rotary, ip, attentionMask);

    /// <summary>
    /// diffusers' <c>PAGJointAttnProcessor2_0</c> / <c>PAGCFGJointAttnProcessor2_0</c> (see <see cref="PerturbedChunks"/>).
    /// <paramref name="keyBias"/> (the collapsed text tail's count) is added to both paths' logits, which keeps the result
    /// that of the full text sequence.
    /// </summary>
    private (Tensor X, Tensor? Context) AttendPerturbed(Tensor x, Tensor? context, Tensor? keyBias, (Tensor Cos, Tensor Sin)? rotary,
        (Tensor Hidden, Tensor Temb)? ip, Tensor? attentionMask)
    {
        if (context is null || _contextFirst || rotary is not null || ip is not null || attentionMask is not null)
            throw new NotSupportedException("Perturbed-attention guidance runs SD3's joint attention only (text tokens given; no rotary embedding, IP-Adapter or attention mask).");
        long total = x.shape[0];
        if (total % PerturbedChunks != 0 || context.shape[0] != total)
            throw new ArgumentException($"Perturbed-attention guidance splits the batch into {PerturbedChunks} equal parts; got a batch of {total}.", nameof(x));
        using var scope = NewDisposeScope();
        long perturbed = total / PerturbedChunks, original = total - perturbed;
        var (o, c) = Attend(x.narrow(0, 0, original), context.narrow(0, 0, original), keyBias, null, null, null, null, qkNorms: false);
        // The perturbed part's mask over the joint sequence [image; text]: −∞ between different image tokens, 0 elsewhere.
        long n = x.shape[1], joint = n + context.shape[1];
        var mask = PerturbedMask(n, joint, x.dtype, x.device);
        if (keyBias is not null) mask = mask + keyBias.view(1, -1).to(mask.dtype);
        var (po, pc) = Attend(x.narrow(0, original, perturbed), context.narrow(0, original, perturbed), null, null, null,
            mask.view(1, 1, joint, joint), null, qkNorms: false);
        return (cat([o, po], 0).MoveToOuterDisposeScope(), cat([c!, pc!], 0).MoveToOuterDisposeScope());
    }

    /// <summary>
    /// <see cref="forward"/> plus diffusers' <c>FluxIPAdapterAttnProcessor</c> output: the image query attends to each
    /// adapter's image tokens <paramref name="ipHiddenStates"/> (null or no processor: no IP output).
    /// </summary>
    internal (Tensor X, Tensor? Context, Tensor? Ip) ForwardWithIpAdapter(Tensor x, Tensor? context, (Tensor Cos, Tensor Sin)? rotary,
        IReadOnlyList<Tensor>? ipHiddenStates, Tensor? attentionMask = null)
    {
        bool wantsIp = ipHiddenStates is not null && _fluxIpAdapter is not null;
        var normedImageQuery = new Tensor?[1];
        var (o, c) = Attend(x, context, null, rotary, null, attentionMask, wantsIp ? normedImageQuery : null);
        var ip = wantsIp ? _fluxIpAdapter!.forward(normedImageQuery[0]!, ipHiddenStates!) : null;
        return (o, c, ip);
    }

    /// <summary>The attention; <paramref name="normedImageQuery"/>, if given, receives the normed image query (Flux's
    /// IP-Adapter input); <paramref name="qkNorms"/> false skips the q / k RMSNorms (the PAG processors). Every other
    /// intermediate is freed before it returns.</summary>
    private (Tensor X, Tensor? Context) Attend(Tensor x, Tensor? context, Tensor? keyBias, (Tensor Cos, Tensor Sin)? rotary,
        (Tensor Hidden, Tensor Temb)? ip, Tensor? attentionMask, Tensor?[]? normedImageQuery, bool qkNorms = true)
    {
        if (keyBias is not null && _contextFirst) throw new NotSupportedException("keyBias assumes the image tokens first.");
        if (keyBias is not null && attentionMask is not null) throw new NotSupportedException("Give keyBias or attentionMask, not both.");
        using var scope = NewDisposeScope();
        long batch = x.shape[0], n = x.shape[1];
        var q = Heads(to_q.forward(x));
        var k = Heads(to_k.forward(x));
        var v = Heads(to_v.forward(x));
        var (imageQuery, imageKey, imageValue) = (q, k, v); // before the q / k norms: the IP-Adapter's own norms take them
        if (norm_q is not null && qkNorms) q = norm_q.forward(q);
        if (norm_k is not null && qkNorms) k = norm_k.forward(k);
        // diffusers' Flux ip_query: the normed image query, before the text is joined and the rotation.
        if (normedImageQuery is not null) normedImageQuery[0] = q.MoveToOuterDisposeScope();
        if (context is not null)
        {
            if (add_q_proj is null) throw new InvalidOperationException("this attention has no context projections (self-attention only).");
            var cq = Heads(add_q_proj.forward(context));
            var ck = Heads(add_k_proj!.forward(context));
            var cv = Heads(add_v_proj!.forward(context));
            if (norm_added_q is not null && qkNorms) cq = norm_added_q.forward(cq);
            if (norm_added_k is not null && qkNorms) ck = norm_added_k.forward(ck);
            q = _contextFirst ? torch.cat([cq, q], 2) : torch.cat([q, cq], 2);
            k = _contextFirst ? torch.cat([ck, k], 2) : torch.cat([k, ck], 2);
            v = _contextFirst ? torch.cat([cv, v], 2) : torch.cat([v, cv], 2);
        }
        if (rotary is { } rope)
        {
            q = FluxPosEmbed.Apply(q, rope);
            k = FluxPosEmbed.Apply(k, rope);
        }
        var mask = keyBias is not null ? keyBias.view(1, 1, 1, -1).to(q.dtype)
            : attentionMask is null || attentionMask.dtype == ScalarType.Bool ? attentionMask : attentionMask.to(q.dtype);
        var o = mask is null
            ? nn.functional.scaled_dot_product_attention(q, k, v)
            : nn.functional.scaled_dot_product_attention(q, k, v, mask);
        o = o.transpose(1, 2).reshape(batch, -1, (long)_heads * _headDim).to(q.dtype);
        Tensor? ctxOut = null;
        if (context is not null)
        {
            long s = o.shape[1] - n;
            ctxOut = o.narrow(1, _contextFirst ? 0 : n, s);
            o = o.narrow(1, _contextFirst ? s : 0, n);
            if (to_add_out is not null) ctxOut = to_add_out.forward(ctxOut);
        }
        if (_sd3IpAdapter is { Scale: not 0 } processor && ip is { } tokens)
            o = o + processor.Attend(imageQuery, imageKey, imageValue, tokens.Hidden, tokens.Temb, _heads);
        var output = to_out.Count == 0 ? o : to_out[0].forward(o);
        return (output.MoveToOuterDisposeScope(), ctxOut?.MoveToOuterDisposeScope());
    }
}
