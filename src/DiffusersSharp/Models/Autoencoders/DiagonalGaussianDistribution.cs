using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// The VAE posterior (diffusers' <c>DiagonalGaussianDistribution</c>): the encoder output split along channels into
/// mean and log-variance, log-variance clamped to [-30, 20], <c>std = exp(0.5 * logvar)</c>.
/// </summary>
/// <remarks>
/// The tensors follow TorchSharp's dispose scopes like any tensor returned by a model (they belong to the scope that
/// was current when <see cref="AutoencoderKL.Encode"/> returned); <see cref="Dispose"/> releases them early.
/// </remarks>
public sealed class DiagonalGaussianDistribution : IDisposable
{
    /// <summary>The encoder output [B, 2C, h, w] the distribution was built from.</summary>
    public Tensor Parameters { get; }

    /// <summary>Mean [B, C, h, w] (a view of the first channel half of <see cref="Parameters"/>).</summary>
    public Tensor Mean { get; }

    /// <summary>Log-variance [B, C, h, w], clamped to [-30, 20].</summary>
    public Tensor LogVar { get; }

    /// <summary>Standard deviation <c>exp(0.5 * logvar)</c>.</summary>
    public Tensor Std { get; }

    /// <summary>Variance <c>exp(logvar)</c>.</summary>
    public Tensor Var { get; }

    /// <summary>Builds the distribution from an encoder output with an even channel count (dimension 1).</summary>
    /// <exception cref="ArgumentException">The tensor has fewer than 2 dimensions or an odd channel count.</exception>
    public DiagonalGaussianDistribution(Tensor parameters)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        if (parameters.dim() < 2 || parameters.shape[1] % 2 != 0)
            throw new ArgumentException(
                $"the posterior needs [B, 2*C, ...] moments (mean | logvar); got shape [{string.Join(", ", parameters.shape)}].", nameof(parameters));
        Parameters = parameters;
        var halves = parameters.chunk(2, 1);
        Mean = halves[0];
        using (var raw = halves[1]) LogVar = raw.clamp(-30.0, 20.0);
        using (var half = 0.5 * LogVar) Std = half.exp();
        Var = LogVar.exp();
    }

    /// <summary>
    /// Draws <c>mean + std * eps</c> with <c>eps = torch.randn(mean.shape, generator, dtype = parameters.dtype)</c>, as
    /// diffusers' <c>randn_tensor</c> does: with a CPU generator the noise is drawn on the CPU (then moved to the
    /// parameters' device), so a seed gives the same noise on every device; without one, the default generator of
    /// the parameters' device is used.
    /// </summary>
    public Tensor Sample(Generator? generator = null)
    {
        using var scope = NewDisposeScope();
        var device = Parameters.device;
        var drawOn = generator is not null && generator.device.type == DeviceType.CPU ? CPU : device;
        var noise = randn(Mean.shape, dtype: Parameters.dtype, device: drawOn, generator: generator);
        if (noise.device_type != device.type || noise.device_index != device.index) noise = noise.to(device);
        return (Mean + Std * noise).MoveToOuterDisposeScope();
    }

    /// <summary>The mode of the distribution: its mean (a new handle to the same data).</summary>
    public Tensor Mode() => Mean.alias();

    /// <summary>Moves the tensors to the dispose scope outside the current one.</summary>
    internal DiagonalGaussianDistribution MoveToOuterDisposeScope()
    {
        foreach (var t in new[] { Parameters, Mean, LogVar, Std, Var }) t.MoveToOuterDisposeScope();
        return this;
    }

    /// <summary>Releases the tensors.</summary>
    public void Dispose()
    {
        foreach (var t in new[] { Var, Std, LogVar, Mean, Parameters }) t.Dispose();
    }
}
