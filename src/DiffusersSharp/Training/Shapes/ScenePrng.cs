namespace DiffusersSharp.Training.Shapes;

/// <summary>
/// PCG32 (XSH-RR, O'Neill 2014) seeded through SplitMix64: a small generator whose sequence is fixed by this code,
/// so scenes for a seed never change with the .NET version (unlike <see cref="System.Random"/>).
/// </summary>
public sealed class ScenePrng
{
    private const ulong Multiplier = 6364136223846793005UL;
    private ulong _state;
    private readonly ulong _increment;

    /// <summary>A generator for a seed; different <paramref name="stream"/> values give independent sequences.</summary>
    public ScenePrng(long seed, long stream = 0)
        : this(SplitMix((ulong)seed, 1), unchecked(SplitMix((ulong)seed, 0) ^ (ulong)stream * 0x9E3779B97F4A7C15UL), false) { }

    // The reference pcg32_srandom(initState, initSeq), for checking the generator against PCG's published outputs.
    private ScenePrng(ulong initState, ulong initSeq, bool _)
    {
        _increment = unchecked(initSeq << 1 | 1UL);
        _state = 0;
        NextUInt();
        _state = unchecked(_state + initState);
        NextUInt();
    }

    internal static ScenePrng FromPcgSeed(ulong initState, ulong initSeq) => new(initState, initSeq, false);

    /// <summary>The next 32 random bits.</summary>
    public uint NextUInt()
    {
        ulong old = _state;
        _state = unchecked(old * Multiplier + _increment);
        uint xorShifted = (uint)(((old >> 18) ^ old) >> 27);
        int rot = (int)(old >> 59);
        return (xorShifted >> rot) | (xorShifted << (-rot & 31));
    }

    /// <summary>A uniform integer in [0, <paramref name="maxExclusive"/>), without modulo bias.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="maxExclusive"/> is not positive.</exception>
    public int NextInt(int maxExclusive)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxExclusive);
        uint bound = (uint)maxExclusive;
        uint threshold = unchecked(0u - bound) % bound;
        while (true)
        {
            uint r = NextUInt();
            if (r >= threshold) return (int)(r % bound);
        }
    }

    /// <summary>A uniform float in [0, 1) with 24 random bits.</summary>
    public float NextFloat() => (NextUInt() >> 8) * (1f / (1 << 24));

    /// <summary>A uniform float in [<paramref name="min"/>, <paramref name="max"/>).</summary>
    public float NextFloat(float min, float max) => min + (max - min) * NextFloat();

    /// <summary>Shuffles a list in place (Fisher-Yates).</summary>
    public void Shuffle<T>(IList<T> items)
    {
        ArgumentNullException.ThrowIfNull(items);
        for (int i = items.Count - 1; i > 0; i--)
        {
            int j = NextInt(i + 1);
            (items[i], items[j]) = (items[j], items[i]);
        }
    }

    // The (index + 1)-th SplitMix64 output for a seed.
    private static ulong SplitMix(ulong seed, int index)
    {
        ulong z = unchecked(seed + (ulong)(index + 1) * 0x9E3779B97F4A7C15UL);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        return z ^ (z >> 31);
    }
}
