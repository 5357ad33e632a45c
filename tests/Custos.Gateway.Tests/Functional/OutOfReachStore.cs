using System.Reflection;
using System.Runtime.ExceptionServices;
using Custos.Ledger;

namespace Custos.Gateway.Tests.Functional;

/// <summary>
/// A store whose <see cref="Method"/> (saving a policy version unless told otherwise) fails with <see cref="Failure"/> while
/// it is set, as a store out of reach does; every other call goes to the real store.
/// </summary>
public class OutOfReachStore : DispatchProxy
{
    private ICustosStore _inner = null!;

    /// <summary>What <see cref="Method"/> throws; null: it works.</summary>
    public Exception? Failure { get; set; }

    /// <summary>The store method that fails while <see cref="Failure"/> is set. Default: saving a policy version.</summary>
    public string Method { get; set; } = nameof(IPolicyStore.SaveAsync);

    public static (ICustosStore Store, OutOfReachStore Control) Wrap(ICustosStore inner)
    {
        var store = Create<ICustosStore, OutOfReachStore>();
        var control = (OutOfReachStore)(object)store;
        control._inner = inner;
        return (store, control);
    }

    protected override object? Invoke(MethodInfo? targetMethod, object?[]? args)
    {
        ArgumentNullException.ThrowIfNull(targetMethod);
        if (Failure is { } failure && targetMethod.Name == Method)
        {
            throw failure;
        }

        try
        {
            return targetMethod.Invoke(_inner, args);
        }
        catch (TargetInvocationException ex) when (ex.InnerException is not null)
        {
            ExceptionDispatchInfo.Capture(ex.InnerException).Throw();
            throw;
        }
    }
}

/// <summary>What a PostgreSQL driver throws when the server does not answer: a transient database failure over a socket error.</summary>
internal sealed class TransientDbException(string message, Exception inner) : System.Data.Common.DbException(message, inner)
{
    public override bool IsTransient => true;
}
