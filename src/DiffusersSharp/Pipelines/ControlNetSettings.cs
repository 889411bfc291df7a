namespace DiffusersSharp.Pipelines;

/// <summary>
/// The control images and per-ControlNet settings of a ControlNet request, as diffusers' ControlNet pipelines check and
/// use them (the UNet and SD3 families alike): one control image per ControlNet, a float or one value per ControlNet
/// for the scale and the guidance window, and <c>controlnet_keep</c> over the steps that run.
/// </summary>
/// <param name="ImageName">diffusers' name of the control image parameter (<c>image</c> or <c>control_image</c>), for messages.</param>
/// <param name="Image">The one control image, or null with <paramref name="Images"/>.</param>
/// <param name="Images">One control image per ControlNet, in order.</param>
/// <param name="Scale">The conditioning scale of every ControlNet, unless <paramref name="Scales"/> is given.</param>
/// <param name="Scales">One conditioning scale per ControlNet.</param>
/// <param name="Start">The fraction of the steps after which every ControlNet starts, unless <paramref name="Starts"/> is given.</param>
/// <param name="Starts">One start per ControlNet.</param>
/// <param name="End">The fraction of the steps after which every ControlNet stops, unless <paramref name="Ends"/> is given.</param>
/// <param name="Ends">One end per ControlNet.</param>
internal sealed record ControlNetSettings(string ImageName, PipelineImage? Image, IReadOnlyList<PipelineImage>? Images,
    double Scale, IReadOnlyList<double>? Scales, double Start, IReadOnlyList<double>? Starts, double End, IReadOnlyList<double>? Ends)
{
    /// <summary>The control images, one per ControlNet: the list, or the single image as a list of one.</summary>
    public IReadOnlyList<PipelineImage> ControlImages => Images ?? (Image is { } one ? [one] : []);

    /// <summary>A per-ControlNet setting: its list, or the single value for every ControlNet (diffusers broadcasts a float).</summary>
    public static double[] PerControlNet(IReadOnlyList<double>? list, double value, int count) =>
        list?.ToArray() ?? Enumerable.Repeat(value, count).ToArray();

    /// <summary>
    /// diffusers' check_inputs for <paramref name="count"/> ControlNets, before any compute: one control image each (a
    /// tensor image of <paramref name="tensorShape"/>'s channels), list lengths, finite scales, 0 &lt;= start &lt; end &lt;= 1.
    /// </summary>
    /// <param name="count">How many ControlNets the pipeline runs.</param>
    /// <param name="tensorShape">For ControlNet k: the channels a control image tensor must have and its value range, for the message.</param>
    public void Check(int count, Func<int, (long Channels, string Range)> tensorShape)
    {
        if (Image is not null && Images is not null)
            throw new ArgumentException($"Give {ImageName} (one control image) or a list of control images, not both.");
        var images = ControlImages;
        if (images.Count == 0) throw new ArgumentException($"{ImageName} (the control image) is required.");
        if (images.Count != count)
            throw new ArgumentException($"{ImageName}: {count} ControlNet(s) take {count} control image(s), one per ControlNet in order; got {images.Count}.");
        for (int k = 0; k < count; k++)
        {
            if (images[k] is null) throw new ArgumentException($"{ImageName}: control image {k} is null.");
            var (channels, range) = tensorShape(k);
            if (images[k].Tensor is { } t && (t.dim() != 4 || t.shape[1] != channels))
                throw new ArgumentException($"A control image tensor must be [B, {channels}, H, W] in {range} (control image {k}).");
        }
        void Count(IReadOnlyList<double>? list, string name)
        {
            if (list is not null && list.Count != count)
                throw new ArgumentException($"{name} has {list.Count} element(s) but there are {count} ControlNet(s); give one per ControlNet.");
        }
        Count(Scales, "controlnet_conditioning_scale");
        Count(Starts, "control_guidance_start");
        Count(Ends, "control_guidance_end");
        foreach (double scale in PerControlNet(Scales, Scale, count))
            if (!double.IsFinite(scale)) throw new ArgumentException($"controlnet_conditioning_scale must be a finite number, got {scale}.");
        var starts = PerControlNet(Starts, Start, count);
        var ends = PerControlNet(Ends, End, count);
        for (int k = 0; k < count; k++)
        {
            double start = starts[k], end = ends[k];
            if (!(start < end)) throw new ArgumentException($"control guidance start: {start} cannot be larger or equal to control guidance end: {end}.");
            if (start < 0) throw new ArgumentException($"control guidance start: {start} can't be smaller than 0.");
            if (end > 1) throw new ArgumentException($"control guidance end: {end} can't be larger than 1.0.");
        }
    }

    /// <summary>
    /// Each step's conditioning scale per ControlNet over the <paramref name="steps"/> that run (diffusers'
    /// <c>controlnet_keep</c> times the scale): step i applies ControlNet k unless i / n &lt; start_k or (i + 1) / n &gt; end_k.
    /// </summary>
    public double[][] StepScales(int count, int steps)
    {
        var scales = PerControlNet(Scales, Scale, count);
        var starts = PerControlNet(Starts, Start, count);
        var ends = PerControlNet(Ends, End, count);
        var perStep = new double[steps][];
        for (int i = 0; i < steps; i++)
        {
            perStep[i] = new double[count];
            for (int k = 0; k < count; k++)
            {
                bool off = (double)i / steps < starts[k] || (double)(i + 1) / steps > ends[k];
                perStep[i][k] = scales[k] * (off ? 0.0 : 1.0);
            }
        }
        return perStep;
    }
}
