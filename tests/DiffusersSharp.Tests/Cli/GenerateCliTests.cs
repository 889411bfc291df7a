using DiffusersSharp.Images;
using DiffusersSharp.Tests.Support;

namespace DiffusersSharp.Tests.Cli;

/// <summary>The CLI contract of generate / img2img / inpaint: outputs, PNG parameters, exit codes, nothing left on failure.</summary>
public sealed class GenerateCliTests() : CliTempDirectory("gen")
{
    private static readonly string Model = Fixtures.TinySd3Model;
    private static readonly string Init = Fixtures.Path("tiny-sd3/init_image.png");
    private static readonly string Mask = Fixtures.Path("tiny-sd3/mask.png");

    [Fact]
    public void GenerateWritesAPngWithItsParameters()
    {
        var (code, stdout, stderr) = CliRunner.Run("generate", "--model", Model, "--prompt", "a teddy bear", "--negative-prompt", "pepperoni",
            "--steps", "2", "--guidance", "4.5", "--width", "48", "--height", "32", "--seed", "42", "--max-sequence-length", "16", "--output", Out());
        Assert.True(code == 0, stderr);
        Assert.Equal(Path.GetFullPath(Out()), stdout.Trim());
        var image = ImageFile.Load(Out());
        Assert.Equal((48, 32), (image.Width, image.Height));
        string parameters = ImageFile.ReadPngText(Out())["parameters"];
        Assert.StartsWith("a teddy bear\nNegative prompt: pepperoni\n", parameters);
        Assert.Contains("Steps: 2", parameters);
        Assert.Contains("Seed: 42", parameters);
        Assert.Contains("CFG scale: 4.5", parameters);
        Assert.Single(Directory.GetFiles(Dir)); // no temporary file left behind

        // the same seed reproduces the same pixels
        var again = CliRunner.Run("generate", "--model", Model, "--prompt", "a teddy bear", "--negative-prompt", "pepperoni",
            "--steps", "2", "--guidance", "4.5", "--width", "48", "--height", "32", "--seed", "42", "--max-sequence-length", "16", "--output", Out("again.png"));
        Assert.Equal(0, again.Code);
        Assert.Equal(image.Pixels, ImageFile.Load(Out("again.png")).Pixels);
    }

    [Fact]
    public void GenerateWithALoraDrawsDiffusersImage()
    {
        // tiny-sd3-lora's scale05 case: diffusers' float image, which our PNG must equal after rounding to 8 bits.
        var (code, _, stderr) = CliRunner.Run("generate", "--model", Model, "--prompt", "A photo of a group of teddy bears eating pizza on the surface of mars",
            "--negative-prompt", "pepperoni", "--steps", "4", "--guidance", "4.5", "--width", "64", "--height", "64", "--seed", "123456",
            "--lora", Loaders.LoraWeightsTests.LoraFile, "--lora-scale", "0.5", "--output", Out());
        Assert.True(code == 0, stderr);
        Assert.Contains("Lora: pytorch_lora_weights.safetensors:0.5", ImageFile.ReadPngText(Out())["parameters"]);
        var expected = Fixtures.Expected("tiny-sd3-lora/expected.safetensors")["scale05.image"].flatten().data<float>().ToArray();
        var pixels = ImageFile.Load(Out()).Pixels;
        Assert.Equal(expected.Length, pixels.Length);
        // Every pixel is diffusers' value rounded to 8 bits, except where that value sits on a rounding midpoint (our float
        // image is 3.6e-6 away from theirs): measured 2 of 12288 pixels, at 125.4998 and 96.5001.
        var off = Enumerable.Range(0, pixels.Length).Where(i => pixels[i] != (int)Math.Round(expected[i] * 255)).ToList();
        Assert.All(off, i => Assert.True(Math.Abs(pixels[i] - expected[i] * 255) <= 0.501, $"pixel {i}: {pixels[i]} vs {expected[i] * 255}"));

        Assert.Equal(2, CliRunner.Run("generate", "--model", Model, "--prompt", "x", "--lora", Out("none.safetensors"), "--output", Out("x.png")).Code);
        Assert.Equal(2, CliRunner.Run("generate", "--model", Model, "--prompt", "x", "--lora", Loaders.LoraWeightsTests.LoraFile, "--lora-scale", "strong", "--output", Out("x.png")).Code);
        var wrongModel = CliRunner.Run("generate", "--prompt", "x", "--steps", "1", "--lora", Loaders.LoraWeightsTests.LoraFile, "--output", Out("x.png"));
        Assert.Equal(2, wrongModel.Code); // the shipped model is not the LoRA's base model
        Assert.Contains("LoRA", wrongModel.Err);
        Assert.False(File.Exists(Out("x.png")));
    }

    [Fact]
    public void NumImagesNumbersTheFiles()
    {
        var (code, _, stderr) = CliRunner.Run("generate", "--model", Model, "--prompt", "x", "--steps", "1", "--width", "32", "--height", "32",
            "--num-images", "2", "--max-sequence-length", "8", "--output", Out("pic.png"));
        Assert.True(code == 0, stderr);
        Assert.True(File.Exists(Out("pic-1.png")) && File.Exists(Out("pic-2.png")));
        Assert.False(File.Exists(Out("pic.png")));
    }

    [Fact]
    public void Img2ImgAndInpaintWriteImages()
    {
        var i2i = CliRunner.Run("img2img", "--model", Model, "--prompt", "x", "--image", Init, "--strength", "0.5", "--steps", "4",
            "--width", "32", "--height", "32", "--max-sequence-length", "8", "--output", Out("i2i.png"));
        Assert.True(i2i.Code == 0, i2i.Err);
        Assert.Contains("Denoising strength: 0.5", ImageFile.ReadPngText(Out("i2i.png"))["parameters"]);
        var inpaint = CliRunner.Run("inpaint", "--model", Model, "--prompt", "x", "--image", Init, "--mask", Mask, "--steps", "3",
            "--width", "32", "--height", "32", "--max-sequence-length", "8", "--output", Out("inpaint.jpg"));
        Assert.True(inpaint.Code == 0, inpaint.Err);
        Assert.Equal(32, ImageFile.Load(Out("inpaint.jpg")).Width);
    }

    public static TheoryData<string[], string> InvalidInputs => new()
    {
        { ["generate", "--prompt", "x", "--width", "40"], "multiple of 16" },
        { ["generate", "--prompt", "x", "--height", "-16"], "multiple of 8" },
        { ["generate", "--prompt", "x", "--width", "528"], "position table covers at most 512 pixels a side" },
        { ["img2img", "--prompt", "x", "--image", "INIT", "--height", "1024"], "position table covers at most 512 pixels a side" },
        { ["generate", "--prompt", "x", "--scheduler", "euler"], "--scheduler applies to SD 1.x / 2.x and SDXL" },
        { ["generate", "--prompt", "x", "--eta", "0.5"], "--eta applies to SD 1.x / 2.x and SDXL" },
        { ["generate", "--prompt", "x", "--eta", "2"], "--eta must be a number in [0, 1]" },
        { ["generate", "--prompt", "x", "--guidance-rescale", "-1"], "--guidance-rescale must be a number in [0, 1]" },
        { ["generate", "--prompt", "x", "--steps", "0"], "--steps must be at least 1" },
        { ["generate", "--prompt", "x", "--guidance", "nan"], "finite number" },
        { ["generate", "--prompt", "x", "--guidance", "abc"], "finite number" },
        { ["generate", "--prompt", "x", "--dtype", "int8"], "dtype" },
        { ["generate", "--prompt", "x", "--device", "tpu"], "--device" },
        { ["generate", "--prompt", "x", "--max-sequence-length", "600"], "[1, 512]" },
        { ["generate", "--prompt", "x", "--output", "out.gif"], ".png" },
        { ["generate"], "--prompt is required" },
        { ["generate", "--prompt", "x", "--prompt-embeds", "missing.safetensors"], "not both" },
        { ["img2img", "--prompt", "x", "--image", "INIT", "--strength", "1.5"], "[0, 1]" },
        { ["img2img", "--prompt", "x", "--image", "INIT", "--strength", "-0.1"], "[0, 1]" },
        { ["img2img", "--prompt", "x"], "--image is required" },
        { ["img2img", "--prompt", "x", "--image", "nope.png"], "not found" },
        { ["inpaint", "--prompt", "x", "--image", "INIT"], "--mask is required" },
        { ["inpaint", "--prompt", "x", "--image", "INIT", "--mask", "nope.png"], "not found" },
        { ["img2img", "--prompt", "x", "--image", "CORRUPT"], "CORRUPT" },
        { ["generate", "--prompt", "x", "--bogus"], "bogus" },
        { ["generate", "--prompt", "x", "--offload", "sequential"], "--offload" },
    };

    [Theory]
    [MemberData(nameof(InvalidInputs))]
    public void InvalidInputExitsWith2AndAOneLineReasonAndWritesNothing(string[] args, string reason)
    {
        string corrupt = Out("corrupt.png");
        File.WriteAllBytes(corrupt, [0x89, 0x50, 0x4E, 0x47, 1, 2, 3]);
        var full = args.Select(a => a switch { "INIT" => Init, "CORRUPT" => corrupt, _ => a }).ToList();
        full.AddRange(["--model", Model]);
        if (!full.Contains("--output")) full.AddRange(["--output", Out("result.png")]);
        var (code, stdout, stderr) = CliRunner.Run([.. full]);
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        string line = Assert.Single(stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains(reason.Replace("CORRUPT", "corrupt.png"), line);
        Assert.Equal([corrupt], Directory.GetFiles(Dir));
    }

    [Fact]
    public void InpaintWithPaddingMaskCropReturnsTheImageAtItsOwnSizeUntouchedOutsideTheMask()
    {
        string folder = Fixtures.Path("local-diffusers/mask-crop/"), sd15 = Fixtures.Path("tiny-sd15/model");
        var (code, _, stderr) = CliRunner.Run("inpaint", "--model", sd15, "--prompt", "x", "--image", folder + "init.png",
            "--mask", folder + "mask_box.png", "--padding-mask-crop", "8", "--width", "64", "--height", "64", "--steps", "2", "--output", Out("crop.png"));
        Assert.True(code == 0, stderr);
        var result = ImageFile.Load(Out("crop.png"));
        var init = ImageFile.LoadRgb(folder + "init.png");
        var mask = ImageFile.Load(folder + "mask_box.png");
        Assert.Equal((96, 72, 3), (result.Width, result.Height, result.Channels));
        Assert.Contains("Mask crop padding: 8", ImageFile.ReadPngText(Out("crop.png"))["parameters"]);
        // Where the mask is black the original shows through unchanged (alpha 255 over the pasted-back crop).
        int kept = 0, repainted = 0;
        for (int p = 0; p < mask.Pixels.Length; p++)
        {
            bool same = result.Pixels.AsSpan(3 * p, 3).SequenceEqual(init.Pixels.AsSpan(3 * p, 3));
            if (mask.Pixels[p] == 0) { Assert.True(same, $"pixel {p} outside the mask changed"); kept++; }
            else if (!same) repainted++;
        }
        Assert.True(repainted > 0 && kept > 0, $"{repainted} repainted, {kept} kept");

        foreach (var (args, reason) in new (string[], string)[]
        {
            (["--mask", Mask], "needs a mask of the image's size"),
            (["--mask", folder + "mask_box.png", "--padding-mask-crop", "-1"], ">= 0"),
        })
        {
            string[] full = ["inpaint", "--model", sd15, "--prompt", "x", "--image", folder + "init.png", "--padding-mask-crop", "4", .. args, "--output", Out("bad.png")];
            var bad = CliRunner.Run(full);
            Assert.True(bad.Code == 2, bad.Err);
            Assert.Contains(reason, bad.Err);
            Assert.False(File.Exists(Out("bad.png")));
        }
        string black = Out("black.png");
        ImageFile.Save(new ImageBuffer(96, 72, 1), black);
        var nothing = CliRunner.Run("inpaint", "--model", sd15, "--prompt", "x", "--image", folder + "init.png", "--mask", black,
            "--padding-mask-crop", "4", "--output", Out("bad.png"));
        Assert.Equal(2, nothing.Code);
        Assert.Contains("non-black", nothing.Err);
    }

    [Fact]
    public void GenerateWithAnSd15ModelDrawsDiffusersImage()
    {
        // tiny-sd15's t2i_pndm case (PNDM is the model's own scheduler): our PNG is diffusers' float image rounded to 8 bits.
        var (code, _, stderr) = CliRunner.Run("generate", "--model", Fixtures.Path("tiny-sd15/model"),
            "--prompt", "A photo of a group of teddy bears eating pizza on the surface of mars", "--negative-prompt", "pepperoni",
            "--steps", "5", "--width", "64", "--height", "64", "--seed", "123456", "--output", Out());
        Assert.True(code == 0, stderr);
        string parameters = ImageFile.ReadPngText(Out())["parameters"];
        Assert.Contains("Sampler: PNDM", parameters);
        Assert.Contains("CFG scale: 7.5", parameters); // the SD 1.x pipeline's default guidance
        ImageAssert.RoundedFrom(Fixtures.Expected("tiny-sd15/expected.safetensors")["t2i_pndm.image"], ImageFile.Load(Out()));
    }

    [Fact]
    public void APlaygroundFolderRunsItsEdmSchedulerAndTakesTheEdmNames()
    {
        // A folder whose scheduler config names EDMDPMSolverMultistepScheduler (Playground v2.5) loads it; --scheduler
        // edm_euler swaps in EDM Euler from that config, and a name that is no scheduler is refused with the EDM names listed.
        string folder = Path.Combine(Dir, "playground");
        TinyPlaygroundFolder.Write(folder);
        var (code, _, stderr) = CliRunner.Run("generate", "--model", folder, "--prompt", "a dragon", "--steps", "2", "--guidance", "3",
            "--width", "64", "--height", "64", "--seed", "1", "--output", Out("pg.png"));
        Assert.True(code == 0, stderr);
        Assert.Contains("Sampler: EDMDPMSolverMultistep", ImageFile.ReadPngText(Out("pg.png"))["parameters"]);
        (code, _, stderr) = CliRunner.Run("generate", "--model", folder, "--prompt", "a dragon", "--steps", "2", "--guidance", "3",
            "--width", "64", "--height", "64", "--seed", "1", "--scheduler", "edm_euler", "--output", Out("pg-euler.png"));
        Assert.True(code == 0, stderr);
        Assert.Contains("Sampler: EDMEuler", ImageFile.ReadPngText(Out("pg-euler.png"))["parameters"]);
        Assert.NotEqual(ImageFile.Load(Out("pg.png")).Pixels, ImageFile.Load(Out("pg-euler.png")).Pixels);
        (code, _, stderr) = CliRunner.Run("generate", "--model", folder, "--prompt", "a dragon", "--scheduler", "edm_heun", "--output", Out("x.png"));
        Assert.Equal(2, code);
        Assert.Contains("edm_dpmpp_2m", stderr);
    }

    [Fact]
    public void UNetModelsTakeASchedulerAndRefuseSd3Options()
    {
        string sd15 = Fixtures.Path("tiny-sd15/model"), sdxl = Fixtures.Path("tiny-sdxl/model");
        var (code, _, stderr) = CliRunner.Run("generate", "--model", sdxl, "--prompt", "a dragon", "--steps", "2", "--scheduler", "euler_a",
            "--width", "64", "--height", "48", "--seed", "1", "--output", Out("xl.png"));
        Assert.True(code == 0, stderr);
        Assert.Equal((64, 48), (ImageFile.Load(Out("xl.png")).Width, ImageFile.Load(Out("xl.png")).Height));
        Assert.Contains("Sampler: EulerAncestralDiscrete", ImageFile.ReadPngText(Out("xl.png"))["parameters"]);
        Assert.Contains("CFG scale: 5", ImageFile.ReadPngText(Out("xl.png"))["parameters"]);

        // DDIM's eta draws noise at every step: another image, the same for the same seed, and written in the parameters.
        string[] Ddim(string eta, string output) => ["generate", "--model", sd15, "--prompt", "a dragon", "--steps", "3", "--scheduler", "ddim",
            "--width", "64", "--height", "64", "--seed", "4", "--eta", eta, "--guidance-rescale", "0.7", "--output", Out(output)];
        Assert.Equal(0, CliRunner.Run(Ddim("0", "eta0.png")).Code);
        Assert.Equal(0, CliRunner.Run(Ddim("0.8", "eta8.png")).Code);
        Assert.Equal(0, CliRunner.Run(Ddim("0.8", "eta8b.png")).Code);
        Assert.NotEqual(ImageFile.Load(Out("eta0.png")).Pixels, ImageFile.Load(Out("eta8.png")).Pixels);
        Assert.Equal(ImageFile.Load(Out("eta8b.png")).Pixels, ImageFile.Load(Out("eta8.png")).Pixels);
        Assert.Contains("Eta: 0.8, Guidance rescale: 0.7", ImageFile.ReadPngText(Out("eta8.png"))["parameters"]);

        foreach (var (args, reason) in new (string[], string)[]
        {
            (["--model", sd15, "--no-t5"], "--no-t5 applies to Stable Diffusion 3"),
            (["--model", sd15, "--prompt-2", "y"], "--prompt-2 applies"),
            (["--model", sd15, "--scheduler", "no_such_sampler"], "no_such_sampler"),
            (["--model", sdxl, "--skip-layers", "1"], "--skip-layers applies to Stable Diffusion 3"),
        })
        {
            var result = CliRunner.Run(["generate", "--prompt", "x", "--output", Out("bad.png"), .. args]);
            Assert.Equal(2, result.Code);
            Assert.Contains(reason, Assert.Single(result.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries)));
            Assert.False(File.Exists(Out("bad.png")));
        }
    }

    [Fact]
    public void PreviewEveryWritesTheDecodedStepsBeforeTheResult()
    {
        var (code, _, stderr) = CliRunner.Run("generate", "--model", Model, "--prompt", "x", "--steps", "5", "--width", "32", "--height", "32",
            "--max-sequence-length", "8", "--seed", "3", "--preview-every", "2", "--output", Out("p.png"));
        Assert.True(code == 0, stderr);
        Assert.Equal(["p.png", "p.step-2.png", "p.step-4.png"], Directory.GetFiles(Dir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Equal((32, 32), (ImageFile.Load(Out("p.step-2.png")).Width, ImageFile.Load(Out("p.step-2.png")).Height));
        // A preview is the latents so far, decoded: not the final image.
        Assert.NotEqual(ImageFile.Load(Out("p.png")).Pixels, ImageFile.Load(Out("p.step-4.png")).Pixels);
        Assert.Equal(2, CliRunner.Run("generate", "--model", Model, "--prompt", "x", "--preview-every", "0", "--output", Out("q.png")).Code);
    }

    [Fact]
    public void AModelThatIsNotThereIsInvalidInput()
    {
        var (code, _, stderr) = CliRunner.Run("generate", "--model", Path.Combine(Dir, "no-such-model"), "--prompt", "x", "--output", Out());
        Assert.Equal(2, code);
        Assert.Contains("no-such-model", stderr);
        Assert.Empty(Directory.GetFiles(Dir));
    }
}
