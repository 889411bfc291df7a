using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Runtime;

/// <summary>
/// Device selection: <c>cpu</c> and <c>cuda</c> / <c>cuda:N</c>. CUDA needs a CUDA build of libtorch, which NuGet does not
/// serve for Linux: we use the one inside a PyTorch install. Point <see cref="TorchLibEnvironmentVariable"/> at its
/// <c>torch/lib</c> folder (or start the process with that folder on <c>LD_LIBRARY_PATH</c>).
/// </summary>
public static class TorchDevices
{
    /// <summary>Environment variable naming the <c>lib</c> folder of a CUDA PyTorch install (e.g. <c>.../site-packages/torch/lib</c>).</summary>
    public const string TorchLibEnvironmentVariable = "DIFFUSERS_TORCH_LIB";

    private static readonly Lock CudaInitLock = new();

    /// <summary>
    /// Parses "cpu", "cuda" or "cuda:N" and makes sure the device can be used; for CUDA this loads the CUDA libtorch
    /// first. Throws <see cref="ArgumentException"/> for an unknown name and <see cref="NotSupportedException"/> when
    /// CUDA is asked for but unavailable, with what to do.
    /// </summary>
    public static Device Parse(string name)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        string n = name.Trim().ToLowerInvariant();
        if (n == "cpu") return CPU;
        if (n == "cuda" || n.StartsWith("cuda:", StringComparison.Ordinal))
        {
            int index = 0;
            if (n.Length > 4 && (!int.TryParse(n[5..], out index) || index < 0))
                throw new ArgumentException($"Invalid device '{name}': expected cpu, cuda or cuda:N.", nameof(name));
            EnsureCuda();
            int count = (int)cuda.device_count();
            if (index >= count)
                throw new ArgumentException($"Device '{name}' does not exist: {count} CUDA device(s) are available.", nameof(name));
            return new Device(DeviceType.CUDA, index);
        }
        throw new ArgumentException($"Unknown device '{name}': expected cpu, cuda or cuda:N.", nameof(name));
    }

    /// <summary>Whether a CUDA device can be used (loads the CUDA libtorch if one is configured).</summary>
    public static bool IsCudaAvailable()
    {
        try { EnsureCuda(); return true; }
        catch (NotSupportedException) { return false; }
    }

    /// <summary>Loads the CUDA libtorch (once) or throws <see cref="NotSupportedException"/> saying how to provide one.</summary>
    public static void EnsureCuda()
    {
        lock (CudaInitLock)
        {
            if (TryInitCuda()) return;
            string? dir = Environment.GetEnvironmentVariable(TorchLibEnvironmentVariable);
            string hint = string.IsNullOrEmpty(dir)
                ? $"set {TorchLibEnvironmentVariable} to the lib folder of a CUDA PyTorch install (python3 -c \"import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))\")"
                : $"{TorchLibEnvironmentVariable}={dir} did not provide a working CUDA libtorch (is there a GPU and a driver?)";
            throw new NotSupportedException($"CUDA is not available: {hint}, or use --device cpu.");
        }
    }

    private static bool TryInitCuda()
    {
        try
        {
            if (cuda.is_available()) return true;
        }
        catch (Exception e) when (e is DllNotFoundException or NotSupportedException or InvalidOperationException or ExternalException) { }
        string? dir = Environment.GetEnvironmentVariable(TorchLibEnvironmentVariable);
        if (string.IsNullOrEmpty(dir) || !Directory.Exists(dir)) return false;
        // Load the CUDA libraries by full path; libtorch then finds them already loaded by their sonames.
        foreach (var lib in new[] { "libc10.so", "libc10_cuda.so", "libtorch_cpu.so", "libtorch_cuda.so", "libtorch.so" })
        {
            string path = Path.Combine(dir, lib);
            if (File.Exists(path)) NativeLibrary.TryLoad(path, out _);
        }
        try
        {
            torch.InitializeDeviceType(DeviceType.CUDA);
            return cuda.is_available();
        }
        catch (Exception e) when (e is DllNotFoundException or NotSupportedException or InvalidOperationException or ExternalException)
        {
            return false;
        }
    }
}
