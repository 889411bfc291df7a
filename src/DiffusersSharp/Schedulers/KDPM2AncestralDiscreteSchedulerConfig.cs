namespace DiffusersSharp.Schedulers;

/// <summary><c>scheduler_config.json</c> of a <c>KDPM2AncestralDiscreteScheduler</c>; defaults are the Python constructor defaults.</summary>
public sealed record KDPM2AncestralDiscreteSchedulerConfig : KDPM2SchedulerConfigBase;
