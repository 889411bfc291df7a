using DiffusersSharp.IO;
using DiffusersSharp.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Pipelines;

/// <summary>Where a pipeline keeps its models between uses.</summary>
public enum OffloadMode
{
    /// <summary>Every model stays on the execution device.</summary>
    None,

    /// <summary>
    /// diffusers' <c>enable_model_cpu_offload</c>: models live on the CPU; each moves to the execution device when it is
    /// used and back when the next one is used (and at the end of a call), so at most one is on the device at a time.
    /// </summary>
    Model,
}

/// <summary>One move of a model between the CPU and the execution device under model offload.</summary>
/// <param name="Component">The pipeline component name (<c>text_encoder</c>, <c>transformer</c>, <c>vae</c>...).</param>
/// <param name="ToExecutionDevice">True when the model came to the execution device, false when it went back to the CPU.</param>
/// <param name="From">The device it left.</param>
/// <param name="To">The device it is on now.</param>
public sealed record ModelMove(string Component, bool ToExecutionDevice, string From, string To)
{
    /// <summary>"vae -> cuda:0" style.</summary>
    public override string ToString() => $"{Component} {(ToExecutionDevice ? "->" : "<-")} {(ToExecutionDevice ? To : From)}";
}

/// <summary>
/// Model CPU offload in diffusers' order (<c>model_cpu_offload_seq</c>): before a component runs it is moved to the
/// execution device and the previously used one goes back to the CPU, as accelerate's chained offload hooks do; at the
/// end of a pipeline call the last one goes back too (<c>maybe_free_model_hooks</c>).
/// Unlike accelerate, the CPU copy of a model's weights is kept while the model is on the device: going back, every
/// tensor that is still the one moved there returns to its kept copy, with no device-to-host copy and no new host
/// allocation (an H200 spent 4.7 s on 4 offloaded SD3.5 steps of 0.4 s compute). Host memory is what it is at rest.
/// </summary>
internal sealed class ModelOffloader(Device executionDevice, IReadOnlyDictionary<string, nn.Module> models, Action<ModelMove> onMove)
    : IDisposable
{
    private string? _onDevice;
    private ModuleMover.HostCopies? _hostCopies;

    public Device ExecutionDevice { get; } = executionDevice;

    /// <summary>The component now on the execution device, if any.</summary>
    public string? OnDevice => _onDevice;

    /// <summary>Makes <paramref name="component"/> the one model on the execution device.</summary>
    public void Activate(string component)
    {
        if (_onDevice == component) return;
        if (!models.TryGetValue(component, out var module))
            throw new InvalidOperationException($"The pipeline has no '{component}' component to put on {ExecutionDevice}.");
        OffloadAll();
        Move(component, module, toExecutionDevice: true);
        _onDevice = component;
    }

    /// <summary>Moves the model on the execution device (if any) back to the CPU.</summary>
    public void OffloadAll()
    {
        if (_onDevice is not { } current) return;
        _onDevice = null;
        Move(current, models[current], toExecutionDevice: false);
    }

    private void Move(string component, nn.Module module, bool toExecutionDevice)
    {
        var (from, to) = toExecutionDevice ? (CPU, ExecutionDevice) : (ExecutionDevice, CPU);
        if (toExecutionDevice)
        {
            _hostCopies?.Dispose();
            _hostCopies = ModuleMover.MoveKeepingHostCopies(module, to);
        }
        else
        {
            var copies = _hostCopies;
            _hostCopies = null;
            ModuleMover.MoveBack(module, copies);
        }
        onMove(new ModelMove(component, toExecutionDevice, from.ToString(), to.ToString()));
    }

    /// <summary>Frees the kept CPU copies of the model on the device, if any (the model itself stays where it is).</summary>
    public void Dispose()
    {
        _hostCopies?.Dispose();
        _hostCopies = null;
    }
}

/// <summary>Models that move on and off the execution device together under model offload (a UNet and its ControlNet).
/// Holds them as children <c>0</c>, <c>1</c>...; does not own them.</summary>
internal sealed class ModuleGroup : nn.Module
{
    public ModuleGroup(params nn.Module[] members) : base(nameof(ModuleGroup))
    {
        for (int i = 0; i < members.Length; i++) register_module(i.ToString(System.Globalization.CultureInfo.InvariantCulture), members[i]);
    }
}

/// <summary>
/// Moves a module's tensors to a device and frees the copies left behind at once. TorchSharp's <c>Module.to</c> is not
/// used: it skips a module whose recorded device already matches (a model loaded or filled straight onto CUDA still
/// records the CPU, so <c>to(CPU)</c> would leave it on the GPU), and it leaves the old copies to the garbage collector,
/// which does not see GPU memory.
/// </summary>
internal static class ModuleMover
{
    /// <summary>Converts every floating-point parameter and buffer of <paramref name="module"/> to <paramref name="dtype"/>, in place.</summary>
    public static void CastTo(nn.Module module, ScalarType dtype)
    {
        using var noGrad = no_grad();
        var replacer = new StateDictLoader.Replacer(module);
        foreach (var (key, tensor) in module.state_dict().DistinctBy(kv => kv.Value.Handle).ToList())
        {
            if (!tensor.is_floating_point() || tensor.dtype == dtype) continue;
            replacer.Replace(key, tensor.to(dtype));
            tensor.Dispose();
        }
    }

    /// <summary>
    /// Runs <paramref name="use"/> with <paramref name="module"/> cast to <paramref name="dtype"/> and casts it back to
    /// the dtype it had after (diffusers' <c>upcast_vae</c> for a float16 VAE with <c>force_upcast</c>, kept to the call
    /// so that the components stay as they were loaded). A module already in <paramref name="dtype"/> just runs.
    /// </summary>
    public static T RunIn<T>(nn.Module module, ScalarType dtype, Func<T> use)
    {
        var original = module.WeightDtype();
        if (original == dtype) return use();
        CastTo(module, dtype);
        try
        {
            return use();
        }
        finally
        {
            CastTo(module, original);
        }
    }

    /// <summary>
    /// The CPU tensors of a module that moved to an execution device, by state-dict key, with the tensor object that
    /// replaced each: going back, a key whose tensor is still that object returns to its CPU copy. Objects, not native
    /// handles: a handle freed by a replacement can be reused by the next tensor, an object held here cannot.
    /// </summary>
    internal sealed class HostCopies : IDisposable
    {
        private readonly Dictionary<string, (Tensor Host, Tensor Moved)> _copies = new(StringComparer.Ordinal);

        public void Add(string key, Tensor host, Tensor moved) => _copies.Add(key, (host, moved));

        /// <summary>Takes the CPU copy of <paramref name="key"/> if <paramref name="current"/> is the tensor moved there.</summary>
        public Tensor? Take(string key, Tensor current)
        {
            if (!_copies.Remove(key, out var copy)) return null;
            if (ReferenceEquals(copy.Moved, current)) return copy.Host;
            copy.Host.Dispose(); // replaced on the device (a cast, a new weight): its CPU copy is stale
            return null;
        }

        public void Dispose()
        {
            foreach (var (host, _) in _copies.Values) host.Dispose();
            _copies.Clear();
        }
    }

    /// <summary>
    /// Moves <paramref name="module"/>'s CPU tensors to <paramref name="device"/> as <see cref="MoveTo"/> does, but keeps
    /// the CPU tensors (for <see cref="MoveBack"/>) instead of freeing them.
    /// </summary>
    public static HostCopies MoveKeepingHostCopies(nn.Module module, Device device)
    {
        using var noGrad = no_grad();
        var kept = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        var copies = new HostCopies();
        try
        {
            var replacer = new StateDictLoader.Replacer(module);
            // Tied weights (one module under two names) are one tensor: moved once, through their first name.
            foreach (var (key, tensor) in module.state_dict().DistinctBy(kv => kv.Value.Handle).ToList())
            {
                if (tensor.device_type != DeviceType.CPU || device.type == DeviceType.CPU) continue;
                // Replace frees the tensor object it replaces; the storage lives on here, outside any dispose scope of the
                // caller (a pipeline moves models inside its loop's scope, and the copies must outlast it).
                kept.Add(key, tensor.alias().DetachFromDisposeScope());
                replacer.Replace(key, tensor.to(device));
                tensor.Dispose();
            }
            // Recognised on the way back by the objects the module holds now (Replace wraps each value in a new Parameter).
            var now = module.state_dict();
            foreach (var key in kept.Keys.ToList())
            {
                copies.Add(key, kept[key], now[key]);
                kept.Remove(key);
            }
            return copies;
        }
        catch
        {
            foreach (var host in kept.Values) host.Dispose();
            copies.Dispose();
            throw;
        }
    }

    /// <summary>Moves <paramref name="module"/> back to the CPU: kept copies where the tensor is still the moved one, copies otherwise.</summary>
    public static void MoveBack(nn.Module module, HostCopies? copies)
    {
        using var noGrad = no_grad();
        using var _ = copies;
        var replacer = new StateDictLoader.Replacer(module);
        foreach (var (key, tensor) in module.state_dict().DistinctBy(kv => kv.Value.Handle).ToList())
        {
            if (tensor.device_type == DeviceType.CPU) continue;
            var host = copies?.Take(key, tensor);
            var held = replacer.Replace(key, host ?? tensor.to(CPU));
            // A parameter is wrapped in a new Parameter over the alias's storage, so the alias can go; a buffer is the
            // alias itself (freeing it left SD3's forward reading a freed pos_embed; ModelOffloadTests).
            if (host is not null && !ReferenceEquals(held, host)) host.Dispose();
            tensor.Dispose();
        }
    }

    /// <summary>Moves every parameter and buffer of <paramref name="module"/> that is elsewhere to <paramref name="device"/>.</summary>
    public static void MoveTo(nn.Module module, Device device)
    {
        using var noGrad = no_grad();
        var replacer = new StateDictLoader.Replacer(module);
        // Tied weights (one module under two names) are one tensor: moved once, through their first name.
        foreach (var (key, tensor) in module.state_dict().DistinctBy(kv => kv.Value.Handle).ToList())
        {
            if (tensor.device_type == device.type && (device.type != DeviceType.CUDA || tensor.device_index == Math.Max(device.index, 0))) continue;
            replacer.Replace(key, tensor.to(device));
            tensor.Dispose();
        }
    }
}
