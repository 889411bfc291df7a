using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;
using Linear = DiffusersSharp.Models.Layers.Linear;

namespace DiffusersSharp.Models.Transformers;

/// <summary>
/// AuraFlow's patch embedding (diffusers <c>AuraFlowPatchEmbed</c>): no convolution, the latent is cut into p × p patches
/// flattened channel-major (<c>[C, p, p]</c> per token, tokens row by row) and projected by a linear <c>proj</c> (with
/// bias); then the learned position table <c>pos_embed</c> [1, pos_embed_max_size, D], read as a square grid of
/// <c>int(sqrt(pos_embed_max_size))</c> patches per side, gives each token the entry of the centred h/p × w/p window
/// (top-left at <c>side // 2 - (h/p) // 2</c>, <c>side // 2 - (w/p) // 2</c>).
/// </summary>
public sealed class AuraFlowPatchEmbed : nn.Module<Tensor, Tensor>
{
#pragma warning disable IDE1006 // field names are checkpoint keys
    private readonly Linear proj;
    private readonly Parameter pos_embed;
#pragma warning restore IDE1006
    private readonly int _patchSize;
    private readonly int _inChannels;
    private readonly int _posEmbedMaxSize;
    private readonly int _side;

    /// <summary>
    /// Creates the embedding of <paramref name="inChannels"/>-channel latents into width <paramref name="embedDim"/> with a
    /// table of <paramref name="posEmbedMaxSize"/> positions. The table starts as diffusers draws it (0.1 · N(0, 1)) unless on
    /// the <c>meta</c> device; a checkpoint replaces it.
    /// </summary>
    public AuraFlowPatchEmbed(int patchSize, int inChannels, long embedDim, int posEmbedMaxSize, Device? device = null, ScalarType? dtype = null)
        : base(nameof(AuraFlowPatchEmbed))
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(patchSize, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(posEmbedMaxSize, 1);
        _patchSize = patchSize;
        _inChannels = inChannels;
        _posEmbedMaxSize = posEmbedMaxSize;
        _side = (int)Math.Sqrt(posEmbedMaxSize);
        proj = new Linear((long)patchSize * patchSize * inChannels, embedDim, hasBias: true, device: device, dtype: dtype);
        var table = device is { type: DeviceType.META }
            ? torch.empty([1, posEmbedMaxSize, embedDim], dtype: dtype ?? ScalarType.Float32, device: device)
            : (torch.randn([1, posEmbedMaxSize, embedDim], dtype: ScalarType.Float32) * 0.1).to(dtype ?? ScalarType.Float32, device ?? CPU);
        pos_embed = new Parameter(table, requires_grad: false);
        RegisterComponents();
    }

    /// <summary>Side of the position grid in patches.</summary>
    public int GridSide => _side;

    /// <summary>
    /// Checks a latent shape against the embedding: [B, in_channels, h, w], h and w multiples of the patch size, the patch
    /// grid within the position grid.
    /// </summary>
    /// <exception cref="ArgumentException">The shape does not fit, naming <paramref name="name"/>.</exception>
    public void Validate(long[] shape, string name)
    {
        string s = "[" + string.Join(", ", shape) + "]";
        if (shape.Length != 4 || shape[1] != _inChannels)
            throw new ArgumentException($"{name} must be [B, {_inChannels}, H, W] (in_channels {_inChannels}), got {s}.", name);
        if (shape[0] < 1 || shape[2] < 1 || shape[3] < 1 || shape[2] % _patchSize != 0 || shape[3] % _patchSize != 0)
            throw new ArgumentException($"{name}'s height and width must be positive multiples of the patch size {_patchSize}, got {s}.", name);
        long rows = shape[2] / _patchSize, cols = shape[3] / _patchSize;
        // diffusers does not check this: past the grid its centred window starts at a negative row or column and the
        // flattened indices wrap into other rows (or past the table), which is no position the model learned.
        if (rows > _side || cols > _side)
            throw new ArgumentException($"{name}'s {rows} x {cols} patch grid does not fit the {_side} x {_side} position grid " +
                $"(pos_embed_max_size {_posEmbedMaxSize}): latents up to {(long)_side * _patchSize} x {(long)_side * _patchSize} are supported, got {s}.", name);
    }

    /// <summary>The flattened table indices of the centred <paramref name="rows"/> × <paramref name="cols"/> window, row by row
    /// (diffusers' <c>pe_selection_index_based_on_dim</c>, in patches).</summary>
    private Tensor WindowIndices(long rows, long cols, Device device)
    {
        long top = _side / 2 - rows / 2, left = _side / 2 - cols / 2;
        var r = torch.arange(top, top + rows, dtype: ScalarType.Int64, device: device);
        var c = torch.arange(left, left + cols, dtype: ScalarType.Int64, device: device);
        return (r.unsqueeze(1) * _side + c.unsqueeze(0)).flatten();
    }

    /// <summary>Embeds <paramref name="latent"/> [B, C, h, w] (see <see cref="Validate"/>) into tokens [B, (h/p)·(w/p), D].</summary>
    public override Tensor forward(Tensor latent)
    {
        Validate(latent.shape, nameof(latent));
        using var scope = NewDisposeScope();
        long b = latent.shape[0], c = latent.shape[1], rows = latent.shape[2] / _patchSize, cols = latent.shape[3] / _patchSize;
        int p = _patchSize;
        var patches = latent.reshape(b, c, rows, p, cols, p).permute(0, 2, 4, 1, 3, 5).reshape(b, rows * cols, c * p * p);
        var tokens = proj.forward(patches);
        var positions = pos_embed.index_select(1, WindowIndices(rows, cols, pos_embed.device));
        return tokens.add_(positions).MoveToOuterDisposeScope();
    }
}
