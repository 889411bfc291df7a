using static TorchSharp.torch;

namespace DiffusersSharp.Models.Autoencoders;

/// <summary>
/// The spatial tiling that diffusers' VAEs share (<see cref="AutoencoderKL"/>'s <c>_tiled_encode</c> / <c>tiled_decode</c>,
/// <see cref="AutoencoderDC"/>'s <c>tiled_encode</c> / <c>tiled_decode</c>): overlapping tiles run one by one, each blended
/// into from the tile above (<c>blend_v</c>) and the tile to its left (<c>blend_h</c>), then the top-left part of each
/// kept and the parts concatenated. Heights and widths are separate because AutoencoderDC's may differ.
/// </summary>
internal static class VaeTiling
{
    /// <summary>
    /// Splits <paramref name="input"/> [B, C, H, W] into tiles of up to <paramref name="tileHeight"/> x
    /// <paramref name="tileWidth"/> starting every <paramref name="strideHeight"/> rows / <paramref name="strideWidth"/>
    /// columns (the last ones shorter, as Python slices past the end are), runs <paramref name="run"/> on each, blends
    /// over <paramref name="blendHeight"/> / <paramref name="blendWidth"/> rows / columns of the outputs, keeps the first
    /// <paramref name="keepHeight"/> x <paramref name="keepWidth"/> of each output and concatenates them.
    /// </summary>
    public static Tensor Tiled(Tensor input, int strideHeight, int strideWidth, int tileHeight, int tileWidth,
        int blendHeight, int blendWidth, int keepHeight, int keepWidth, Func<Tensor, Tensor> run)
    {
        if (strideHeight <= 0 || strideWidth <= 0)
            throw new InvalidOperationException($"tile strides must be positive; got {strideHeight} x {strideWidth}.");
        using var scope = NewDisposeScope();
        long height = input.shape[2], width = input.shape[3];
        var rows = new List<List<Tensor>>();
        for (long i = 0; i < height; i += strideHeight)
        {
            var row = new List<Tensor>();
            for (long j = 0; j < width; j += strideWidth)
            {
                var tile = input.narrow(2, i, Math.Min(tileHeight, height - i)).narrow(3, j, Math.Min(tileWidth, width - j));
                row.Add(run(tile));
            }
            rows.Add(row);
        }
        // In place and in this order, as diffusers: a tile is blended into after its upper and left neighbours were, so
        // later blends read already-blended data.
        var resultRows = new List<Tensor>();
        for (int i = 0; i < rows.Count; i++)
        {
            var resultRow = new List<Tensor>();
            for (int j = 0; j < rows[i].Count; j++)
            {
                var tile = rows[i][j];
                if (i > 0) BlendInPlace(rows[i - 1][j], tile, blendHeight, dim: 2);
                if (j > 0) BlendInPlace(rows[i][j - 1], tile, blendWidth, dim: 3);
                resultRow.Add(tile.narrow(2, 0, Math.Min(keepHeight, tile.shape[2])).narrow(3, 0, Math.Min(keepWidth, tile.shape[3])));
            }
            resultRows.Add(cat(resultRow, 3));
        }
        return cat(resultRows, 2).MoveToOuterDisposeScope();
    }

    /// <summary>diffusers' blend_v (dim 2) / blend_h (dim 3): the first rows of <paramref name="b"/> fade in from the last rows of <paramref name="a"/>.</summary>
    private static void BlendInPlace(Tensor a, Tensor b, int blendExtent, int dim)
    {
        using var scope = NewDisposeScope();
        long extent = Math.Min(Math.Min(a.shape[dim], b.shape[dim]), blendExtent);
        for (long y = 0; y < extent; y++)
        {
            double weight = (double)y / extent;
            var target = b.narrow(dim, y, 1);
            var mixed = a.narrow(dim, a.shape[dim] - extent + y, 1) * (1 - weight) + target * weight;
            target.copy_(mixed);
        }
    }
}
