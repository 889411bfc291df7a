using DiffusersSharp.Pipelines;

namespace DiffusersSharp.Tests.Pipelines;

/// <summary>The one loading helper of the components classes: timed loads, cancellation, and nothing left on failure.</summary>
public sealed class ComponentLoaderTests
{
    private sealed class Flag : IDisposable
    {
        public bool Disposed { get; private set; }
        public void Dispose() => Disposed = true;
    }

    [Fact]
    public void ACancelledLoadStopsBeforeLoadingAndTheFailurePathDisposesEverythingLoaded()
    {
        using var cts = new CancellationTokenSource();
        var loader = new ComponentLoader("/models/x", cts.Token);
        Assert.Equal(Path.Combine("/models/x", "vae"), loader.Sub("vae"));
        var vae = loader.Load("vae", () => { Thread.Sleep(5); return new Flag(); });
        Assert.True(loader.LoadMilliseconds["vae"] >= 4);
        cts.Cancel();
        bool ran = false;
        Assert.Throws<OperationCanceledException>(() => loader.Load("unet", () => { ran = true; return new Flag(); }));
        Assert.False(ran);
        // An item handed over after cancellation (a tokenizer) is still kept, so the failure path frees it too.
        var tokenizer = new Flag();
        Assert.Throws<OperationCanceledException>(() => loader.Keep(tokenizer));
        Assert.False(vae.Disposed);
        loader.DisposeLoaded();
        Assert.True(vae.Disposed && tokenizer.Disposed);
        Assert.False(loader.LoadMilliseconds.ContainsKey("unet"));
    }
}
