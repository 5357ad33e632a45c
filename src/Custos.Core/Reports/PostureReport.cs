namespace Custos.Reports;

/// <summary>
/// The posture report: each NIST CSF 2.0 and NIST AI RMF control Custos can speak to, with pass, warn or fail from live
/// evidence (the policy in force, the registry, the ledger) and the items that cause it.
/// </summary>
public sealed record PostureReport
{
    /// <summary>Always <c>posture</c>.</summary>
    public string Report => "posture";

    /// <summary>When the report was made.</summary>
    public required DateTimeOffset GeneratedAt { get; init; }

    /// <summary>The policy version in force, or null when there is none.</summary>
    public long? PolicyVersion { get; init; }

    /// <summary>Its SHA-256.</summary>
    public string? PolicySha256 { get; init; }

    /// <summary>When it was made.</summary>
    public DateTimeOffset? PolicyCreatedAt { get; init; }

    /// <summary>How many controls pass, warn and fail.</summary>
    public required PostureSummary Summary { get; init; }

    /// <summary>Every control, in the order of the frameworks.</summary>
    public required IReadOnlyList<PostureControl> Controls { get; init; }

    /// <summary>The ledger verification.</summary>
    public required ChainCheck Chain { get; init; }

    /// <summary>Limits of the evidence worth knowing.</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];
}

/// <summary>Counts of control results.</summary>
public sealed record PostureSummary(int Pass, int Warn, int Fail);

/// <summary>One control of a framework and what the evidence says about it.</summary>
/// <param name="Id">For example <c>GV.RR-02</c> or <c>GOVERN 1.5</c>.</param>
/// <param name="Framework"><c>NIST CSF 2.0</c> or <c>NIST AI RMF 1.0</c>.</param>
/// <param name="Asks">What the control asks for, in short.</param>
/// <param name="Evidence">What Custos looked at, with counts.</param>
/// <param name="Status"><c>pass</c>, <c>warn</c> or <c>fail</c>: the worst of its items, pass when it has none.</param>
/// <param name="Items">What causes a warn or fail, one item per service, consumer, credential or problem.</param>
public sealed record PostureControl(string Id, string Framework, string Asks, string Evidence, string Status, IReadOnlyList<PostureItem> Items);

/// <summary>One thing that makes a control warn or fail.</summary>
/// <param name="Status"><c>warn</c> or <c>fail</c>.</param>
/// <param name="Subject">What it is about: <c>service:ID</c>, <c>consumer:ID</c>, <c>credential:ID</c>, <c>ledger</c>, ….</param>
/// <param name="Detail">What is wrong, in words.</param>
public sealed record PostureItem(string Status, string Subject, string Detail);
