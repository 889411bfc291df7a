using TorchSharp;

namespace DiffusersSharp.Tests.Support;

/// <summary>Live-tensor counts for leak tests.</summary>
public static class LiveTensors
{
    /// <summary>
    /// This thread's live tensors, after pending finalizers have run, so tensors other tests left to the GC are not
    /// counted out in the middle of a measurement.
    /// </summary>
    public static long Count()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        return DisposeScopeManager.Statistics.ThreadTotalLiveCount;
    }
}
