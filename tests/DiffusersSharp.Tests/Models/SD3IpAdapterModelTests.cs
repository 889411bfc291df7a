using DiffusersSharp.Models.IPAdapters;
using static TorchSharp.torch;

namespace DiffusersSharp.Tests.Models;

/// <summary>
/// The full-size SD3 IP-Adapter modules (InstantX/SD3.5-Large-IP-Adapter's sizes, diffusers' defaults) built on
/// <c>meta</c>: parameter and key counts equal diffusers' (printed by diffusers 0.36's own classes:
/// <c>IPAdapterTimeImageProjection()</c> 111,637,376 parameters in 63 tensors; <c>SD3IPAdapterJointAttnProcessor2_0(2432,
/// 2432, 64, 1280)</c> 18,060,224 in 7), with SD3.5 Large's 38 attentions 797,925,888 parameters, the 1.6 GB of the float16 file.
/// </summary>
public sealed class SD3IpAdapterModelTests
{
    [Fact]
    public void FullSizeModulesHaveDiffusersParameterCounts()
    {
        var meta = new Device("meta");
        using var resampler = new IPAdapterTimeImageProjection(device: meta);
        Assert.Equal(111_637_376L, resampler.parameters().Sum(p => p.numel()));
        Assert.Equal(63, resampler.state_dict().Count);
        Assert.Contains("layers.3.attn.to_kv.weight", resampler.state_dict().Keys);
        Assert.Equal([2 * 1280L, 1280], resampler.state_dict()["layers.0.attn.to_kv.weight"].shape);
        using var processor = new SD3IPAdapterJointAttnProcessor(2432, 2432, 64, 1280, meta);
        Assert.Equal(18_060_224L, processor.parameters().Sum(p => p.numel()));
        Assert.Equal(["norm_ip.linear.weight", "norm_ip.linear.bias", "to_k_ip.weight", "to_v_ip.weight", "norm_q.weight", "norm_k.weight", "norm_ip_k.weight"],
            processor.state_dict().Keys.ToArray());
        Assert.Equal(0.5, processor.Scale);
    }
}
