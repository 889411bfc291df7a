namespace DiffusersSharp.Models.Adapters;

/// <summary>
/// <c>config.json</c> of diffusers' <c>T2IAdapter</c> (models/adapter.py). Defaults are the Python constructor defaults.
/// </summary>
public sealed record T2IAdapterConfig
{
    /// <summary>The adapter image's channels (3 for RGB; 1 for the grayscale sketch adapters).</summary>
    public int InChannels { get; init; } = 3;

    /// <summary>Channels of each block's output; one feature map per block (the light adapter adds one more).</summary>
    public int[] Channels { get; init; } = [320, 640, 1280, 1280];

    /// <summary>Residual blocks per block.</summary>
    public int NumResBlocks { get; init; } = 2;

    /// <summary>The pixel-unshuffle factor of the input: image sides must be multiples of it.</summary>
    public int DownscaleFactor { get; init; } = 8;

    /// <summary><c>full_adapter</c> (SD 1.x / 2.x), <c>full_adapter_xl</c> (SDXL) or <c>light_adapter</c>.</summary>
    public string AdapterType { get; init; } = "full_adapter";

    /// <summary>Checks the config describes an adapter diffusers builds and runs.</summary>
    /// <exception cref="NotSupportedException">An adapter_type diffusers does not have.</exception>
    /// <exception cref="ArgumentException">The config is inconsistent (the message names the setting).</exception>
    public void Validate()
    {
        if (AdapterType is not ("full_adapter" or "full_adapter_xl" or "light_adapter"))
            throw new NotSupportedException($"T2IAdapter config: adapter_type '{AdapterType}' is not supported (diffusers has full_adapter, full_adapter_xl and light_adapter).");
        static void Require(bool ok, string message)
        {
            if (!ok) throw new ArgumentException("T2IAdapter config: " + message);
        }
        Require(InChannels > 0, $"in_channels must be positive, got {InChannels}.");
        Require(DownscaleFactor > 0, $"downscale_factor must be positive, got {DownscaleFactor}.");
        Require(NumResBlocks >= 0, $"num_res_blocks must not be negative, got {NumResBlocks}.");
        Require(Channels is { Length: > 0 } && Channels.All(c => c > 0), "channels must list positive channel counts.");
        if (AdapterType == "light_adapter")
            Require(Channels.All(c => c >= 4), "light_adapter blocks work at channels / 4, so every channels entry must be at least 4.");
        // FullAdapterXL's blocks after the third take as many channels as they give: its input is the previous block's output.
        if (AdapterType == "full_adapter_xl")
            for (int i = 3; i < Channels.Length; i++)
                Require(Channels[i] == Channels[i - 1], $"full_adapter_xl block {i} keeps its channels, so channels[{i}] must equal channels[{i - 1}] ({Channels[i - 1]}), got {Channels[i]}.");
    }
}
