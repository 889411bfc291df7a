using DiffusersSharp.Images;
using TorchSharp;
using static TorchSharp.torch;

namespace DiffusersSharp.Training.Shapes;

/// <summary>Scene images as model input.</summary>
public static class SceneTensors
{
    private static readonly VaeImageProcessor Processor = new(new VaeImageProcessorConfig { DoResize = false, DoConvertRgb = true });

    /// <summary>
    /// A batch of images as a float32 tensor [N, 3, H, W] in [-1, 1] (<c>x / 255 * 2 - 1</c>, as diffusers' image
    /// processor), on <paramref name="device"/> (CPU by default).
    /// </summary>
    /// <exception cref="ArgumentException">No images, or images of different sizes.</exception>
    public static Tensor ToTensor(IReadOnlyList<ImageBuffer> images, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(images);
        var batch = Processor.Preprocess(images);
        if (device is null || device.type == DeviceType.CPU) return batch;
        using (batch) return batch.to(device);
    }

    /// <summary>Draws scenes at <paramref name="size"/> and stacks them with <see cref="ToTensor"/>.</summary>
    /// <exception cref="ArgumentException">No scenes.</exception>
    public static Tensor Draw(IReadOnlyList<SceneSpec> scenes, int size = ShapeScenes.DefaultImageSize, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(scenes);
        if (scenes.Count == 0) throw new ArgumentException("No scenes to draw.", nameof(scenes));
        return ToTensor(scenes.Select(s => SceneRenderer.Draw(s, size)).ToArray(), device);
    }
}
