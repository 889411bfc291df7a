namespace DiffusersSharp.IO;

/// <summary>A model folder names a component class this library does not implement.</summary>
public sealed class UnknownComponentException(string component, string className, IEnumerable<string> known)
    : Exception($"Component '{component}' has class '{className}', which DiffusersSharp does not support (supported: {string.Join(", ", known)}).")
{
    /// <summary>The component's name in model_index.json.</summary>
    public string Component { get; } = component;

    /// <summary>The unsupported class name.</summary>
    public string ClassName { get; } = className;
}
