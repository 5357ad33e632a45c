namespace Custos.Gateway;

/// <summary>Marks the gateway assembly.</summary>
internal static class GatewayAssembly;
