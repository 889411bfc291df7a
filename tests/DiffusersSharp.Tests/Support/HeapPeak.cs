using System.Runtime.InteropServices;

namespace DiffusersSharp.Tests.Support;

/// <summary>
/// Peak heap memory while an action runs, above the level before it. By default the bytes in glibc's mmapped blocks,
/// sampled every millisecond from another thread: glibc serves every allocation of 32 MiB or more (its largest mmap
/// threshold) with its own mapping and counts them all, from every thread (mallinfo2's <c>hblkhd</c>), so this sees
/// libtorch's large CPU tensors, a model's full-size activations; sampling can miss a peak, never invent one. Under
/// <c>LD_PRELOAD=tools/memtrack/libmemtrack.so</c> it reads that shim's exact count of every block of 64 KiB or more
/// instead (see tools/memtrack/README.md).
/// </summary>
public static class HeapPeak
{
    [StructLayout(LayoutKind.Sequential)]
    private struct MallInfo2
    {
        public nuint Arena, Ordblks, Smblks, Hblks, Hblkhd, Usmblks, Fsmblks, Uordblks, Fordblks, Keepcost;
    }

    [DllImport("libc", EntryPoint = "mallinfo2")]
    private static extern MallInfo2 Mallinfo2();

    private delegate long Counter();

    private delegate void Reset();

    /// <summary>Whether the exact counts of tools/memtrack's shim are read (it is preloaded).</summary>
    public static bool Exact => NativeLibrary.TryGetExport(NativeLibrary.GetMainProgramHandle(), "memtrack_peak", out _);

    /// <summary>Runs <paramref name="action"/> and returns the highest bytes in use above those before it.</summary>
    public static long Measure(Action action) => Exact ? MeasureExact(action) : MeasureMapped(action);

    private static long MeasureExact(Action action)
    {
        var main = NativeLibrary.GetMainProgramHandle();
        var live = Marshal.GetDelegateForFunctionPointer<Counter>(NativeLibrary.GetExport(main, "memtrack_live"));
        var peak = Marshal.GetDelegateForFunctionPointer<Counter>(NativeLibrary.GetExport(main, "memtrack_peak"));
        var reset = Marshal.GetDelegateForFunctionPointer<Reset>(NativeLibrary.GetExport(main, "memtrack_reset_peak"));
        long before = live();
        reset();
        action();
        return peak() - before;
    }

    private static long MeasureMapped(Action action)
    {
        static long Mapped() => (long)Mallinfo2().Hblkhd;
        long before = Mapped(), peak = before;
        using var done = new ManualResetEventSlim();
        var sampler = new Thread(() =>
        {
            while (!done.IsSet)
            {
                peak = Math.Max(peak, Mapped());
                Thread.Sleep(1);
            }
        }) { IsBackground = true };
        sampler.Start();
        try { action(); }
        finally
        {
            done.Set();
            sampler.Join();
        }
        return Math.Max(peak, Mapped()) - before;
    }
}
