using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Runtime;

/// <summary>
/// A seeded random-number source that draws the same numbers as <c>torch.Generator(device).manual_seed(seed)</c>.
/// A CPU generator gives device-independent noise (drawn on the CPU, then moved), as in diffusers. A CUDA generator
/// seeds the device's default CUDA generator (TorchSharp cannot create a separate CUDA generator): that replays
/// <c>torch.Generator("cuda").manual_seed(seed)</c> exactly, and it means two CUDA generators used at once share one stream.
/// </summary>
public sealed class Generator : IDisposable
{
    private torch.Generator? _cpu;

    /// <summary>The device whose random stream this generator reproduces.</summary>
    public Device Device { get; }

    /// <summary>The seed last set.</summary>
    public long Seed { get; private set; }

    /// <summary>Creates a generator for "cpu" or "cuda[:N]".</summary>
    public Generator(string device = "cpu") : this(TorchDevices.Parse(device)) { }

    /// <summary>Creates a generator for <paramref name="device"/>.</summary>
    public Generator(Device device)
    {
        Device = device;
        ManualSeed(DateTime.UtcNow.Ticks);
    }

    /// <summary>Seeds the generator (like <c>manual_seed</c>); returns this generator.</summary>
    public Generator ManualSeed(long seed)
    {
        Seed = seed;
        if (Device.type == DeviceType.CUDA)
        {
            cuda.manual_seed(seed);
        }
        else
        {
            _cpu?.Dispose();
            _cpu = new torch.Generator((ulong)seed);
        }
        return this;
    }

    /// <summary>
    /// <c>torch.randn(shape, generator, dtype)</c> drawn on the generator's device, then moved to <paramref name="device"/>
    /// (diffusers' <c>randn_tensor</c>). The dtype goes to the draw itself: half and bfloat16 use ATen's reduced-precision path.
    /// </summary>
    public Tensor Randn(long[] shape, ScalarType dtype, Device device)
    {
        if (Device.type == DeviceType.CUDA)
        {
            if (device.type != DeviceType.CUDA)
                throw new ArgumentException($"A CUDA generator cannot draw for a {device} tensor; use a CPU generator.", nameof(device));
            return randn(shape, dtype: dtype, device: Device);
        }
        var t = randn(shape, dtype: dtype, device: CPU, generator: _cpu);
        if (device.type == DeviceType.CPU) return t;
        var moved = t.to(device);
        t.Dispose();
        return moved;
    }

    /// <summary>Releases the native generator.</summary>
    public void Dispose()
    {
        _cpu?.Dispose();
        _cpu = null;
    }
}
