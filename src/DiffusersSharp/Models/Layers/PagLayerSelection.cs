using System.Text.RegularExpressions;

namespace DiffusersSharp.Models.Layers;

/// <summary>
/// How diffusers' <c>PAGMixin._set_pag_attn_processor</c> resolves <c>pag_applied_layers</c> to attention layers, for the
/// UNet and the SD3 transformer alike: each layer id is a regular expression found (<c>re.search</c>) in the module names
/// of the denoiser's self-attention layers, except where the id and the name both end in the same number after their last
/// dot (diffusers' <c>is_fake_integral_match</c>). Only that last-segment check guards against prefixes: "blocks.1" also
/// finds "transformer_blocks.10.attn", as in diffusers.
/// </summary>
internal static class PagLayerSelection
{
    /// <summary>The names among <paramref name="selfAttentions"/> (in their order, each once) that the ids find.</summary>
    /// <exception cref="ArgumentException">No ids, an empty id or one that is not a valid regular expression, or one that finds
    /// no layer (diffusers: "Cannot find PAG layer to set attention processor for"); <paramref name="examples"/> ends that
    /// message.</exception>
    public static IReadOnlyList<string> Resolve(IReadOnlyList<string> selfAttentions, IReadOnlyList<string> pagAppliedLayers, string examples)
    {
        ArgumentNullException.ThrowIfNull(pagAppliedLayers);
        if (pagAppliedLayers.Count == 0) throw new ArgumentException($"Give at least one PAG layer ({examples}).", nameof(pagAppliedLayers));
        var chosen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var layerId in pagAppliedLayers)
        {
            if (string.IsNullOrEmpty(layerId)) throw new ArgumentException("A PAG layer id is empty.", nameof(pagAppliedLayers));
            Regex pattern;
            try { pattern = new Regex(layerId, RegexOptions.CultureInvariant); }
            catch (ArgumentException e) { throw new ArgumentException($"PAG layer '{layerId}' is not a valid regular expression: {e.Message}", nameof(pagAppliedLayers), e); }
            var found = selfAttentions.Where(name => pattern.IsMatch(name) && !FakeIntegralMatch(layerId, name)).ToList();
            if (found.Count == 0)
                throw new ArgumentException($"Cannot find PAG layer to set attention processor for: {layerId} (layer ids are regular expressions over self-attention names such as {selfAttentions.FirstOrDefault() ?? "(none: this model has no self-attention)"}; {examples}).", nameof(pagAppliedLayers));
            chosen.UnionWith(found);
        }
        return selfAttentions.Where(chosen.Contains).ToList();
    }

    /// <summary>diffusers' <c>is_fake_integral_match</c>: both the id and the name end in the same number after their last dot.</summary>
    private static bool FakeIntegralMatch(string layerId, string name)
    {
        string a = layerId[(layerId.LastIndexOf('.') + 1)..], b = name[(name.LastIndexOf('.') + 1)..];
        return a.Length > 0 && a.All(char.IsDigit) && b.Length > 0 && b.All(char.IsDigit) && a == b;
    }
}
