using DiffusersSharp.Cli;
using DiffusersSharp.Images;
using DiffusersSharp.IO;
using DiffusersSharp.Tests.Cli;

namespace DiffusersSharp.Tests.Shipped;

/// <summary>What the repository ships: a T5-less SD3 folder within the size budget, used by `generate` without --model.</summary>
public class ShippedModelTests
{
    [Fact]
    public void TheShippedModelIsAT5LessSd3FolderOfAtMost20MB()
    {
        string folder = ShippedModel.Folder;
        var index = ModelIndex.Read(folder);
        Assert.Equal("StableDiffusion3Pipeline", index.ClassName);
        Assert.True(index.Components["text_encoder_3"].IsEmpty);
        long bytes = Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        Assert.True(bytes <= 20L * 1024 * 1024, $"models/shapes-sd3 is {bytes / 1048576.0:0.0} MiB");
        Assert.NotNull(BundledModel.Find());
    }

    [Fact]
    public void GenerateWithoutAModelUsesTheShippedOneAt128Pixels()
    {
        string dir = Path.Combine(Path.GetTempPath(), "ds-shipped-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string output = Path.Combine(dir, "out.png");
            var (code, _, stderr) = CliRunner.Run("generate", "--prompt", "a red circle on a blue background", "--steps", "2", "--seed", "1", "--output", output);
            Assert.True(code == 0, stderr);
            var image = ImageFile.Load(output);
            Assert.Equal((128, 128), (image.Width, image.Height));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
