using System.Reflection;
using System.Text.Json.Nodes;

namespace DiffusersSharp.Tests.Support;

/// <summary>Keeps a fixture script's cases and a test class's cases in step.</summary>
public static class FixtureCases
{
    /// <summary>
    /// Asserts that the case names of <paramref name="cases"/> (a fixture's cases.json) are exactly the string arguments of
    /// <paramref name="theory"/>'s InlineData rows plus <paramref name="testedElsewhere"/>: a case the script adds must get
    /// a test.
    /// </summary>
    public static void AssertEveryCaseTested(MethodInfo theory, JsonObject cases, params string[] testedElsewhere)
    {
        ArgumentNullException.ThrowIfNull(theory);
        var tested = theory.GetCustomAttributes<InlineDataAttribute>(false)
            .Select(a => (string)a.GetData(null!).Single()[0]).Concat(testedElsewhere).Order();
        Assert.Equal(cases.Select(kv => kv.Key).Order(), tested);
    }
}
