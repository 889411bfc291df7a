using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.IPAdapters;

/// <summary>
/// What every IP-Adapter layer of one UNet shares: the scale of each adapter (diffusers' <c>set_ip_adapter_scale</c>) and,
/// during one UNet forward, how many image tokens of each adapter follow the text tokens.
/// </summary>
public sealed class IPAdapterState
{
    internal IPAdapterState(int adapters) => Scales = Enumerable.Repeat(1.0, adapters).ToArray();

    /// <summary>The scale of each adapter (diffusers' default 1.0 after loading); set through the UNet's SetIpAdapterScale.</summary>
    internal double[] Scales { get; }

    /// <summary>Image tokens per adapter appended to the text in the running forward; null outside one. Set per forward
    /// by the UNet, so one UNet runs one forward at a time (as every pipeline call does).</summary>
    internal long[]? TokenCounts { get; set; }
}

/// <summary>
/// The weights of diffusers' <c>IPAdapterAttnProcessor2_0</c> on one cross-attention layer: per adapter a key and a value
/// projection of the image tokens (<c>to_k_ip.N</c>, <c>to_v_ip.N</c>, Linear without bias from cross_attention_dim to the
/// layer's inner width). <see cref="Layers.Attention"/> runs the decoupled attention: its query attends to each adapter's
/// image tokens separately and the result, times the adapter's scale, is added to the text attention before to_out.
/// </summary>
public sealed class IPAdapterAttnProcessor : nn.Module
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly ModuleList<Linear> to_k_ip;
    private readonly ModuleList<Linear> to_v_ip;
#pragma warning restore IDE1006

    /// <summary>Builds the projections for <paramref name="adapters"/> adapters.</summary>
    public IPAdapterAttnProcessor(long crossAttentionDim, long hiddenSize, int adapters, IPAdapterState state, Device? device = null, ScalarType? dtype = null)
        : base(nameof(IPAdapterAttnProcessor))
    {
        State = state;
        to_k_ip = new ModuleList<Linear>();
        to_v_ip = new ModuleList<Linear>();
        for (int i = 0; i < adapters; i++)
        {
            to_k_ip.Add(new Linear(crossAttentionDim, hiddenSize, hasBias: false, device: device, dtype: dtype));
            to_v_ip.Add(new Linear(crossAttentionDim, hiddenSize, hasBias: false, device: device, dtype: dtype));
        }
        RegisterComponents();
    }

    /// <summary>The scales and token counts shared by the UNet's layers.</summary>
    public IPAdapterState State { get; }

    internal Linear KeyProjection(int adapter) => to_k_ip[adapter];

    internal Linear ValueProjection(int adapter) => to_v_ip[adapter];
}
