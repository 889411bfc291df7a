using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Benchmarks;

/// <summary>Peak memory as far as it can be seen from .NET, with how it was measured.</summary>
/// <param name="Method">process_peak_working_set (CPU), nvml_device_used (CUDA) or unavailable.</param>
/// <param name="PeakGiB">The peak (GiB), or null with <paramref name="Note"/> saying why.</param>
/// <param name="BaselineGiB">CUDA: device memory in use before the models were built (CUDA context, other processes).</param>
/// <param name="PeakAboveBaselineGiB">CUDA: <paramref name="PeakGiB"/> minus <paramref name="BaselineGiB"/>.</param>
/// <param name="Note">What the number includes, or why there is none.</param>
public sealed record MemoryReport(string Method,
    [property: JsonPropertyName("peak_gib")] double? PeakGiB,
    [property: JsonPropertyName("baseline_gib")] double? BaselineGiB,
    [property: JsonPropertyName("peak_above_baseline_gib")] double? PeakAboveBaselineGiB,
    string Note);

/// <summary>
/// Measures peak memory. TorchSharp exposes no CUDA allocator statistics (no <c>max_memory_allocated</c>), so on CUDA
/// the device's used memory is sampled through NVML (<c>libnvidia-ml.so.1</c>, shipped with the driver) on a background
/// thread: that is what nvidia-smi shows, i.e. tensors plus the caching allocator's reserve plus the CUDA context, an
/// upper bound of PyTorch's <c>max_memory_allocated</c>. Since TorchSharp cannot empty the cache, reserved memory never
/// shrinks, so the sampled peak is reliable even between samples. On the CPU it is the process's peak working set.
/// </summary>
public sealed class PeakMemoryMonitor : IDisposable
{
    private const double GiB = 1024.0 * 1024 * 1024;
    private readonly Device _device;
    private readonly IntPtr _nvmlDevice;
    private readonly string? _unavailable;
    private readonly double? _baseline;
    private long _peakBytes;
    private Thread? _thread;
    private volatile bool _stop;

    /// <summary>Starts watching <paramref name="device"/>; on CUDA the current use is the baseline.</summary>
    public PeakMemoryMonitor(Device device)
    {
        _device = device;
        if (device.type != DeviceType.CUDA) return;
        try
        {
            int rc = Nvml.nvmlInit_v2();
            if (rc != 0) { _unavailable = $"nvmlInit_v2 returned {rc}"; return; }
            rc = Nvml.nvmlDeviceGetHandleByIndex_v2((uint)Math.Max(0, device.index), out _nvmlDevice);
            if (rc != 0) { _unavailable = $"nvmlDeviceGetHandleByIndex_v2({device.index}) returned {rc}"; return; }
            long used = UsedBytes() ?? 0;
            _baseline = used / GiB;
            _peakBytes = used;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            _unavailable = $"NVML (libnvidia-ml.so.1) could not be loaded: {e.Message}";
        }
    }

    /// <summary>The CUDA device's name from NVML (null on the CPU or without NVML).</summary>
    public string? DeviceName
    {
        get
        {
            if (_device.type != DeviceType.CUDA || _unavailable is not null) return null;
            var buffer = new byte[96];
            return Nvml.nvmlDeviceGetName(_nvmlDevice, buffer, (uint)buffer.Length) == 0
                ? System.Text.Encoding.ASCII.GetString(buffer).TrimEnd('\0') : null;
        }
    }

    /// <summary>Starts sampling every <paramref name="intervalMs"/> ms in the background (CUDA only; idempotent).</summary>
    public void Start(int intervalMs = 2)
    {
        if (_device.type != DeviceType.CUDA || _unavailable is not null || _thread is not null) return;
        _thread = new Thread(() =>
        {
            while (!_stop)
            {
                Sample();
                Thread.Sleep(intervalMs);
            }
        }) { IsBackground = true, Name = "nvml-memory-sampler" };
        _thread.Start();
    }

    /// <summary>Takes one sample now (also done by the background thread).</summary>
    public void Sample()
    {
        if (UsedBytes() is { } used)
        {
            long seen;
            while (used > (seen = Interlocked.Read(ref _peakBytes)) && Interlocked.CompareExchange(ref _peakBytes, used, seen) != seen) { }
        }
    }

    /// <summary>Stops sampling and reports the peak.</summary>
    public MemoryReport Report()
    {
        Stop();
        if (_device.type != DeviceType.CUDA)
        {
            using var process = Process.GetCurrentProcess();
            process.Refresh();
            return new MemoryReport("process_peak_working_set", Math.Round(process.PeakWorkingSet64 / GiB, 3), null, null,
                "peak resident memory of the whole process since it started (weights, activations, runtime)");
        }
        if (_unavailable is not null)
            return new MemoryReport("unavailable", null, null, null,
                $"TorchSharp has no CUDA memory statistics and {_unavailable}");
        Sample();
        double peak = Interlocked.Read(ref _peakBytes) / GiB;
        return new MemoryReport("nvml_device_used", Math.Round(peak, 3), Math.Round(_baseline ?? 0, 3), Math.Round(peak - (_baseline ?? 0), 3),
            "device memory in use (nvidia-smi's number: tensors + caching-allocator reserve + CUDA context), sampled every 2 ms from before the models were built to the end of the pipeline runs; baseline = in use before the models; PyTorch's max_memory_allocated counts tensors only, so compare it with peak_above_baseline_gib, an upper bound");
    }

    private long? UsedBytes()
    {
        if (_device.type != DeviceType.CUDA || _unavailable is not null) return null;
        return Nvml.nvmlDeviceGetMemoryInfo(_nvmlDevice, out var info) == 0 ? (long)info.Used : null;
    }

    private void Stop()
    {
        _stop = true;
        _thread?.Join();
        _thread = null;
    }

    /// <summary>Stops the sampler (NVML stays initialized: it is process-wide and cheap).</summary>
    public void Dispose() => Stop();

    private static class Nvml
    {
        private const string Lib = "libnvidia-ml.so.1";

        [StructLayout(LayoutKind.Sequential)]
        public struct Memory
        {
            public ulong Total;
            public ulong Free;
            public ulong Used;
        }

        [DllImport(Lib)] public static extern int nvmlInit_v2();
        [DllImport(Lib)] public static extern int nvmlDeviceGetHandleByIndex_v2(uint index, out IntPtr device);
        [DllImport(Lib)] public static extern int nvmlDeviceGetMemoryInfo(IntPtr device, out Memory memory);
        [DllImport(Lib)] public static extern int nvmlDeviceGetName(IntPtr device, byte[] name, uint length);
    }
}
