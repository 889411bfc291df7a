namespace DiffusersSharp.Images;

/// <summary>Pillow's resampling filters (<c>PIL.Image.Resampling</c>; same numeric values).</summary>
public enum ResampleFilter
{
    /// <summary>Nearest neighbour (Pillow's affine scale path, not the convolution).</summary>
    Nearest = 0,
    /// <summary>Lanczos (a = 3), diffusers' default for image preprocessing.</summary>
    Lanczos = 1,
    /// <summary>Triangle filter (support 1, scaled when downsampling).</summary>
    Bilinear = 2,
    /// <summary>Keys cubic, a = -0.5 (support 2).</summary>
    Bicubic = 3,
    /// <summary>Box (support 0.5).</summary>
    Box = 4,
    /// <summary>Hamming-windowed sinc (support 1).</summary>
    Hamming = 5,
}
