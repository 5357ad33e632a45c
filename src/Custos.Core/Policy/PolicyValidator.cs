namespace Custos.Policy;

/// <summary>Cross-reference checks over a structurally valid document; every problem is reported.</summary>
internal static class PolicyValidator
{
    public static void Validate(PolicyDocument document, PolicyYaml.Reader reader)
    {
        if (document.Tenants.Count == 0)
        {
            reader.Add(DiagnosticSeverity.Error, default, "tenants", "at least one tenant is required");
        }

        var tenants = new Dictionary<string, TenantConfig>(StringComparer.Ordinal);
        for (var t = 0; t < document.Tenants.Count; t++)
        {
            var tenant = document.Tenants[t];
            var path = $"tenants[{t}]";
            CheckId(reader, tenant, tenant.Id, path + ".id");
            if (!tenants.TryAdd(tenant.Id, tenant))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(tenant, "id"), path + ".id", $"tenant '{tenant.Id}' is declared twice");
            }

            if (!TimeZoneInfo.TryFindSystemTimeZoneById(tenant.TimeZone, out _))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(tenant, "time_zone"), path + ".time_zone",
                    $"'{tenant.TimeZone}' is not a known IANA time zone such as Europe/Berlin or UTC");
            }

            var providers = new HashSet<string>(StringComparer.Ordinal);
            for (var p = 0; p < tenant.Providers.Count; p++)
            {
                var provider = tenant.Providers[p];
                CheckId(reader, provider, provider.Id, $"{path}.providers[{p}].id");
                if (!providers.Add(provider.Id))
                {
                    reader.Add(DiagnosticSeverity.Error, reader.MarkOf(provider, "id"), $"{path}.providers[{p}].id",
                        $"provider '{provider.Id}' is declared twice in tenant '{tenant.Id}'");
                }

                // The gateway appends the endpoint's path: /v1/messages for Anthropic, /chat/completions (and the like) for OpenAI.
                var basePath = provider.BaseUrl.AbsolutePath.TrimEnd('/');
                if (ReferenceEquals(provider.BaseUrl, PolicyYaml.UnreadableUrl))
                {
                    // Refused where it was read.
                }
                else if (provider.Kind == ProviderKind.Anthropic && basePath.EndsWith("/v1", StringComparison.OrdinalIgnoreCase))
                {
                    reader.Add(DiagnosticSeverity.Warning, reader.MarkOf(provider, "base_url"), $"{path}.providers[{p}].base_url",
                        $"an Anthropic base_url is the API's root (https://api.anthropic.com): requests would go to {provider.BaseUrl.AbsoluteUri.TrimEnd('/')}/v1/messages");
                }
                else if (provider.Kind == ProviderKind.OpenAI && basePath.Length == 0)
                {
                    reader.Add(DiagnosticSeverity.Warning, reader.MarkOf(provider, "base_url"), $"{path}.providers[{p}].base_url",
                        $"an OpenAI-compatible base_url names the API's version (https://api.openai.com/v1): requests would go to {provider.BaseUrl.AbsoluteUri.TrimEnd('/')}/chat/completions");
                }
            }

            var modelNames = new HashSet<string>(StringComparer.Ordinal);
            for (var m = 0; m < tenant.Models.Count; m++)
            {
                var model = tenant.Models[m];
                var modelPath = $"{path}.models[{m}]";

                // A budget is one amount, and the tenant's, its services' and its consumers' budgets add up the costs of any
                // of its models: prices in two currencies would be added together.
                var first = tenant.Models[0];
                if (!string.Equals(model.Currency, first.Currency, StringComparison.Ordinal))
                {
                    reader.Add(DiagnosticSeverity.Error, reader.MarkOf(model, "price"), modelPath + ".price.currency",
                        $"model '{model.Name}' is priced in {model.Currency}, model '{first.Name}' in {first.Currency}: the models of tenant '{tenant.Id}' " +
                        "share one currency, since budgets add up their costs (a tenant per currency keeps them apart)");
                }
                foreach (var name in model.Aliases.Prepend(model.Name))
                {
                    if (name.Length > 0 && !modelNames.Add(name))
                    {
                        reader.Add(DiagnosticSeverity.Error, reader.MarkOf(model, "name"), modelPath + ".name",
                            $"model name or alias '{name}' is used twice in tenant '{tenant.Id}'");
                    }
                }

                if (model.Provider.Length > 0 && !providers.Contains(model.Provider))
                {
                    reader.Add(DiagnosticSeverity.Error, reader.MarkOf(model, "provider"), modelPath + ".provider",
                        $"provider '{model.Provider}' is not declared in tenant '{tenant.Id}'" + Known(providers));
                }
            }
        }

        var services = new Dictionary<string, ServiceConfig>(StringComparer.Ordinal);
        for (var s = 0; s < document.Services.Count; s++)
        {
            var service = document.Services[s];
            var path = $"services[{s}]";
            CheckId(reader, service, service.Id, path + ".id");
            if (!services.TryAdd(service.Id, service))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(service, "id"), path + ".id", $"service '{service.Id}' is declared twice");
            }

            if (service.Tenant.Length > 0 && !tenants.ContainsKey(service.Tenant))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(service, "tenant"), path + ".tenant",
                    $"tenant '{service.Tenant}' is not declared" + Known(tenants.Keys));
            }

            CheckOwners(reader, document, service, path);
        }

        var consumers = new Dictionary<string, ConsumerConfig>(StringComparer.Ordinal);
        for (var c = 0; c < document.Consumers.Count; c++)
        {
            var consumer = document.Consumers[c];
            var path = $"consumers[{c}]";
            CheckId(reader, consumer, consumer.Id, path + ".id");
            if (!consumers.TryAdd(consumer.Id, consumer))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(consumer, "id"), path + ".id", $"consumer '{consumer.Id}' is declared twice");
            }

            if (!services.TryGetValue(consumer.Service, out var service))
            {
                if (consumer.Service.Length > 0)
                {
                    reader.Add(DiagnosticSeverity.Error, reader.MarkOf(consumer, "service"), path + ".service",
                        $"service '{consumer.Service}' is not declared" + Known(services.Keys));
                }

                continue;
            }

            if (!tenants.TryGetValue(service.Tenant, out var tenant))
            {
                continue;
            }

            var defaults = document.Defaults.For(consumer.Category);
            var requested = consumer.Models.Select(m => (Model: m, Field: "models"))
                .Concat(consumer.Entitlements.SelectMany((e, i) => e.Models.Select(m => (Model: m, Field: $"entitlements[{i}].models"))));
            foreach (var (model, field) in requested)
            {
                if (!tenant.Models.Any(m => m.Name == model || m.Aliases.Contains(model)))
                {
                    reader.Add(DiagnosticSeverity.Error, reader.MarkOf(consumer, field.StartsWith("entitlements", StringComparison.Ordinal) ? "entitlements" : "models"),
                        $"{path}.{field}", $"model '{model}' is not offered by tenant '{tenant.Id}'" + Known(tenant.Models.Select(m => m.Name)));
                }
                else if (defaults?.Models is { } allowed && !allowed.Contains(model)
                    && !tenant.Models.Any(m => (m.Name == model || m.Aliases.Contains(model)) && (allowed.Contains(m.Name) || m.Aliases.Any(allowed.Contains))))
                {
                    reader.Add(DiagnosticSeverity.Error, reader.MarkOf(consumer, "models"), $"{path}.{field}",
                        $"model '{model}' is outside the defaults of category '{PolicyNames.Of(consumer.Category)}' " +
                        $"({string.Join(", ", allowed)}); a consumer may narrow its category's defaults, not widen them");
                }
            }

            if (service.Models is { Count: > 0 } offered)
            {
                // The service's choice bounds its consumers' entitlements: say when it takes one away, rather than let the
                // consumer be refused for a model it was approved for.
                foreach (var (model, field) in requested)
                {
                    var route = tenant.Models.FirstOrDefault(m => m.Name == model || m.Aliases.Contains(model));
                    if (route is not null && !offered.Any(o => o == route.Name || route.Aliases.Contains(o)))
                    {
                        reader.Add(DiagnosticSeverity.Warning, reader.MarkOf(consumer, field.StartsWith("entitlements", StringComparison.Ordinal) ? "entitlements" : "models"),
                            $"{path}.{field}", $"model '{model}' is not among service '{service.Id}''s models ({string.Join(", ", offered)}): " +
                            "consumer '" + consumer.Id + "' will be refused it (deny.model_not_entitled) until the service's models name it");
                    }
                }
            }

            if (consumer.Models.Count == 0 && consumer.Entitlements.Count == 0 && defaults?.Models is null)
            {
                reader.Add(DiagnosticSeverity.Warning, reader.MarkOf(consumer), path,
                    $"consumer '{consumer.Id}' has no entitlements and its category has no default models: every model request will be denied");
            }
        }

        ValidateLimitCoherence(document, reader);
        ValidatePromptRules(document, reader);

        var credentialIds = new HashSet<string>(StringComparer.Ordinal);
        var hashes = new HashSet<string>(StringComparer.Ordinal);
        var subjects = new HashSet<(string, string)>();
        ValidateIdentityProviders(document, reader);
        for (var k = 0; k < document.Credentials.Count; k++)
        {
            var credential = document.Credentials[k];
            var path = $"credentials[{k}]";
            CheckId(reader, credential, credential.Id, path + ".id");
            if (!credentialIds.Add(credential.Id))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(credential, "id"), path + ".id", $"credential '{credential.Id}' is declared twice");
            }

            if (credential.Consumer.Length > 0 && !consumers.ContainsKey(credential.Consumer))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(credential, "consumer"), path + ".consumer",
                    $"consumer '{credential.Consumer}' is not declared");
            }

            if (credential.Issuer is { } issuer && !(document.IdentityProviders ?? []).Any(p => p.Id == issuer))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(credential, "issuer"), path + ".issuer",
                    $"identity provider '{issuer}' is not declared under identity_providers");
            }
            else if (credential.Issuer is not null && credential.Subject is not null && !subjects.Add((credential.Issuer, credential.Subject)))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(credential, "subject"), path + ".subject",
                    "the same workload identity is bound twice; it belongs to exactly one consumer");
            }

            if (credential.ReplacedBy is { } replacement
                && !document.Credentials.Any(c => c.Id == replacement && c.Consumer == credential.Consumer && !ReferenceEquals(c, credential)))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(credential, "replaced_by"), path + ".replaced_by",
                    $"credential '{replacement}' is not another credential of consumer '{credential.Consumer}'");
            }

            if (credential.KeySha256 is not null && !IsSha256Hex(credential.KeySha256))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(credential, "key_sha256"), path + ".key_sha256",
                    "must be the 64 lower-case hex digits of the key's SHA-256 (custos keys generate prints it); never the key itself");
            }
            else if (credential.KeySha256 is { Length: > 0 } && !hashes.Add(credential.KeySha256))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(credential, "key_sha256"), path + ".key_sha256",
                    "the same key is bound twice; a key belongs to exactly one consumer");
            }
        }

        ValidateAdmins(document, reader, hashes);
    }

    /// <summary>One scope's limits as <see cref="ValidateLimitCoherence"/> compares them: where they are written and what they count.</summary>
    /// <param name="Limits">The limits as written.</param>
    /// <param name="Path">Their path, <c>consumers[2].limits</c>.</param>
    /// <param name="Name">How a warning names them: <c>consumer 'web'</c>, <c>the defaults of category 'agent'</c>.</param>
    /// <param name="Level">0 for a consumer's own or its category's, 1 for a service's, 2 for a tenant's: a quota counts what every
    /// scope below it uses, so a shorter period's limit is unreachable only under a longer one at its level or above.</param>
    private sealed record LimitsLayer(LimitsConfig Limits, string Path, string Name, int Level);

    /// <summary>
    /// Limits that are each valid but contradict each other, warned about (not refused: the policy still works, one limit
    /// is simply never the one that acts, or nothing gets through): an output ceiling above a token limit (a request that
    /// uses the ceiling, or names none and has it injected, reserves more than the whole limit and is refused
    /// <c>deny.exceeds_limit</c>), a month's quota below a day's (or a day's below a minute's), and a monthly budget below
    /// a daily one. A limit counts what the scopes below it use, so the longer period's limit is compared only at the
    /// shorter one's scope or above it. Each contradiction is said once, at the field that cannot act.
    /// </summary>
    private static void ValidateLimitCoherence(PolicyDocument document, PolicyYaml.Reader reader)
    {
        var said = new HashSet<string>(StringComparer.Ordinal);
        var tenants = new Dictionary<string, LimitsLayer>(StringComparer.Ordinal);
        for (var t = 0; t < document.Tenants.Count; t++)
        {
            var tenant = document.Tenants[t];
            tenants.TryAdd(tenant.Id, new LimitsLayer(tenant.Limits, $"tenants[{t}].limits", $"tenant '{tenant.Id}'", 2));
        }

        var services = new Dictionary<string, LimitsLayer[]>(StringComparer.Ordinal);
        for (var s = 0; s < document.Services.Count; s++)
        {
            var service = document.Services[s];
            LimitsLayer own = new(service.Limits, $"services[{s}].limits", $"service '{service.Id}'", 1);
            LimitsLayer[] chain = tenants.TryGetValue(service.Tenant, out var tenant) ? [own, tenant] : [own];
            services.TryAdd(service.Id, chain);
            Compare(chain);
        }

        foreach (var tenant in tenants.Values)
        {
            Compare([tenant]);
        }

        foreach (var category in Enum.GetValues<ConsumerCategory>())
        {
            if (document.Defaults.For(category) is { } defaults)
            {
                var name = PolicyNames.Of(category);
                Compare([new LimitsLayer(defaults.Limits, $"defaults.{name}.limits", $"the defaults of category '{name}'", 0)]);
            }
        }

        for (var c = 0; c < document.Consumers.Count; c++)
        {
            var consumer = document.Consumers[c];
            List<LimitsLayer> chain = [new LimitsLayer(consumer.Limits, $"consumers[{c}].limits", $"consumer '{consumer.Id}'", 0)];
            if (document.Defaults.For(consumer.Category) is { } defaults)
            {
                var name = PolicyNames.Of(consumer.Category);
                chain.Add(new LimitsLayer(defaults.Limits, $"defaults.{name}.limits", $"the defaults of category '{name}'", 0));
            }

            chain.AddRange(services.GetValueOrDefault(consumer.Service) ?? []);
            Compare(chain);
        }

        void Compare(IReadOnlyList<LimitsLayer> chain)
        {
            // The output ceiling in force for a consumer is the lowest of its own, its category's, its service's and its tenant's:
            // the higher ones never act. Compared only in a consumer's chain, where it is known which one that is.
            var inForce = chain.Any(l => l.Level == 0) ? chain.Min(l => l.Limits.MaxOutputTokens) : null;
            foreach (var inner in chain)
            {
                foreach (var outer in chain)
                {
                    // The ceiling is reserved against every token limit, at every scope.
                    if (inner.Limits.MaxOutputTokens is { } ceiling && ceiling == inForce)
                    {
                        foreach (var (field, limit) in new[] { ("tokens_per_minute", outer.Limits.TokensPerMinute), ("tokens_per_day", outer.Limits.TokensPerDay),
                            ("tokens_per_month", outer.Limits.TokensPerMonth) })
                        {
                            if (limit < ceiling)
                            {
                                Warn(inner, inner.Limits, "max_output_tokens", $"max_output_tokens ({N(ceiling)}) of {inner.Name} is above {field} ({N(limit)}) of " +
                                    $"{outer.Name}: a request that asks for its ceiling, or names none and has it injected, reserves more than the whole " +
                                    $"limit and is refused (deny.exceeds_limit); lower max_output_tokens to at most {N(limit)}");
                                break;
                            }
                        }
                    }

                    if (outer.Level < inner.Level)
                    {
                        continue; // a limit of a wider scope counts what others use too: a narrower one above it can still act
                    }

                    Period(inner, outer, "requests_per_minute", inner.Limits.RequestsPerMinute, "requests_per_day", outer.Limits.RequestsPerDay, "per-minute rate", "daily quota");
                    Period(inner, outer, "requests_per_day", inner.Limits.RequestsPerDay, "requests_per_month", outer.Limits.RequestsPerMonth, "daily quota", "monthly quota");
                    Period(inner, outer, "tokens_per_minute", inner.Limits.TokensPerMinute, "tokens_per_day", outer.Limits.TokensPerDay, "per-minute rate", "daily quota");
                    Period(inner, outer, "tokens_per_day", inner.Limits.TokensPerDay, "tokens_per_month", outer.Limits.TokensPerMonth, "daily quota", "monthly quota");
                    if (inner.Limits.Budget is { Period: BudgetPeriod.Day } daily && outer.Limits.Budget is { Period: BudgetPeriod.Month } monthly
                        && monthly.Amount < daily.Amount)
                    {
                        Warn(inner, inner.Limits, "budget", $"the daily budget ({Amount(daily.Amount)}) of {inner.Name} is above the monthly budget " +
                            $"({Amount(monthly.Amount)}) of {outer.Name}: the month's runs out first, so the daily budget never acts");
                    }
                }
            }
        }

        void Period(LimitsLayer inner, LimitsLayer outer, string shortField, long? shorter, string longField, long? longer, string shortName, string longName)
        {
            if (shorter is { } s && longer is { } l && l < s)
            {
                Warn(inner, inner.Limits, shortField, $"{shortField} ({N(s)}) of {inner.Name} is above {longField} ({N(l)}) of {outer.Name}: " +
                    $"the {longName} runs out first, so the {shortName} never acts");
            }
        }

        void Warn(LimitsLayer layer, LimitsConfig limits, string field, string message)
        {
            var path = layer.Path + "." + field;
            if (said.Add(path + "\n" + message))
            {
                reader.Add(DiagnosticSeverity.Warning, reader.MarkOf(limits, field), path, message);
            }
        }

        static string Amount(decimal amount) => PolicyNames.Normalize(amount).ToString(System.Globalization.CultureInfo.InvariantCulture);

        static string N(long? value) => value.GetValueOrDefault().ToString("N0", System.Globalization.CultureInfo.InvariantCulture);
    }

    private static void ValidatePromptRules(PolicyDocument document, PolicyYaml.Reader reader)
    {
        var scopes = document.Tenants.Select((t, i) => (Path: $"tenants[{i}]", t.PromptRules))
            .Concat(document.Services.Select((s, i) => (Path: $"services[{i}]", s.PromptRules)));
        foreach (var (path, rules) in scopes)
        {
            var ids = new HashSet<string>(StringComparer.Ordinal);
            for (var r = 0; r < rules.Count; r++)
            {
                CheckId(reader, rules[r], rules[r].Id, $"{path}.prompt_rules[{r}].id");
                if (!ids.Add(rules[r].Id))
                {
                    reader.Add(DiagnosticSeverity.Error, reader.MarkOf(rules[r], "id"), $"{path}.prompt_rules[{r}].id", $"prompt rule '{rules[r].Id}' is declared twice");
                }
            }
        }

        foreach (var category in Enum.GetValues<ConsumerCategory>())
        {
            if (document.Defaults.For(category)?.Models is not { } models)
            {
                continue;
            }

            foreach (var model in models.Where(m => !document.Tenants.Any(t => t.Models.Any(x => x.Name == m || x.Aliases.Contains(m)))))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(document.Defaults.For(category)!, "models"), $"defaults.{PolicyNames.Of(category)}.models",
                    $"model '{model}' is not offered by any tenant");
            }
        }
    }

    private static void ValidateAdmins(PolicyDocument document, PolicyYaml.Reader reader, HashSet<string> keyHashes)
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        for (var a = 0; a < document.Admins.Count; a++)
        {
            var admin = document.Admins[a];
            var path = $"admins[{a}]";
            CheckId(reader, admin, admin.Id, path + ".id");
            if (!ids.Add(admin.Id))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(admin, "id"), path + ".id", $"admin '{admin.Id}' is declared twice");
            }

            if (admin.Issuer is { } issuer && !(document.IdentityProviders ?? []).Any(p => p.Id == issuer))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(admin, "issuer"), path + ".issuer",
                    $"identity provider '{issuer}' is not declared under identity_providers");
            }

            if (admin.KeySha256 is not null && !IsSha256Hex(admin.KeySha256))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(admin, "key_sha256"), path + ".key_sha256",
                    "must be the 64 lower-case hex digits of the admin key's SHA-256; never the key itself");
            }
            else if (admin.KeySha256 is { Length: > 0 } && !keyHashes.Add(admin.KeySha256))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(admin, "key_sha256"), path + ".key_sha256", "this key is already bound to another identity");
            }

            foreach (var tenant in admin.Tenants.Where(t => !document.Tenants.Any(x => x.Id == t)))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(admin, "tenants"), path + ".tenants", $"tenant '{tenant}' is not declared");
            }

            foreach (var service in admin.Services.Where(s => !document.Services.Any(x => x.Id == s)))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(admin, "services"), path + ".services", $"service '{service}' is not declared");
            }
        }
    }

    private static void CheckOwners(PolicyYaml.Reader reader, PolicyDocument document, ServiceConfig service, string path)
    {
        var mark = reader.MarkOf(service, "owners");
        foreach (var gap in Governance.Gaps(document, service))
        {
            reader.Add(DiagnosticSeverity.Warning, mark, path + "." + gap.Field, gap.Message);
        }

        var admins = document.Admins.Select(a => a.Id).ToHashSet(StringComparer.Ordinal);
        // An admin named to act for the service (an owner's admin, an approver) must have it in scope: else an admin of
        // another tenant would decide this one's access requests, which it cannot even see.
        string? OutOfScope(string id) => document.Admins.FirstOrDefault(a => a.Id == id) is { } named
            && ((named.Tenants.Count > 0 && !named.Tenants.Contains(service.Tenant)) || (named.Services.Count > 0 && !named.Services.Contains(service.Id)))
            ? $"admin '{id}' is scoped to {string.Join(", ", named.Tenants.Select(t => "tenant " + t).Concat(named.Services.Select(s => "service " + s)))}, " +
              $"which does not cover service '{service.Id}' of tenant '{service.Tenant}'"
            : null;
        var owners = service.Owners;
        foreach (var (role, owner) in new[] { ("policy", owners.Policy), ("billing", owners.Billing), ("technical", owners.Technical),
                     ("agent_operator", owners.AgentOperator), ("business_sponsor", owners.BusinessSponsor) })
        {
            if (owner is null)
            {
                continue;
            }

            if (owner.Admin is { } admin && !admins.Contains(admin))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(owner, "admin"), $"{path}.owners.{role}.admin", $"admin '{admin}' is not declared");
            }
            else if (owner.Admin is { } named && OutOfScope(named) is { } outside)
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(owner, "admin"), $"{path}.owners.{role}.admin", outside);
            }

            // The contact is where notifications go and what reports name as accountable: a typo here is a message
            // that never arrives, found out when it mattered.
            if (owner.Name.Length > MaxOwnerName || owner.Name.Any(char.IsControl) || string.IsNullOrWhiteSpace(owner.Name))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(owner, "name"), $"{path}.owners.{role}.name",
                    $"an owner's name is 1-{MaxOwnerName} characters with no control characters");
            }

            if (owner.Email is { } email && !IsEmailAddress(email))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(owner, "email"), $"{path}.owners.{role}.email",
                    $"'{(email.Length > 80 ? email[..80] + "…" : email)}' is not an e-mail address (name@domain, nothing else)");
            }
        }

        foreach (var approver in service.Approvers ?? [])
        {
            if (!admins.Contains(approver))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(service, "approvers"), path + ".approvers", $"admin '{approver}' is not declared");
            }
            else if (OutOfScope(approver) is { } outside)
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(service, "approvers"), path + ".approvers", outside);
            }
        }

        if (service.Models is { Count: 0 })
        {
            // Read as "no models": every request of every consumer refused as not entitled. Leaving the list out allows all.
            reader.Add(DiagnosticSeverity.Error, reader.MarkOf(service, "models"), path + ".models",
                $"service '{service.Id}' names no models, so none of its consumers could use any; leave `models` out to allow every model " +
                "of its tenant, or engage the service's kill switch to stop it");
        }

        if (service.Models is { } models && document.Tenants.FirstOrDefault(t => t.Id == service.Tenant) is { } tenant)
        {
            foreach (var model in models.Where(m => !tenant.Models.Any(x => x.Name == m || x.Aliases.Contains(m))))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(service, "models"), path + ".models", $"model '{model}' is not offered by tenant '{tenant.Id}'");
            }
        }
    }

    private static void ValidateIdentityProviders(PolicyDocument document, PolicyYaml.Reader reader)
    {
        var ids = new HashSet<string>(StringComparer.Ordinal);
        var providers = document.IdentityProviders ?? [];
        for (var i = 0; i < providers.Count; i++)
        {
            var provider = providers[i];
            var path = $"identity_providers[{i}]";
            CheckId(reader, provider, provider.Id, path + ".id");
            if (!ids.Add(provider.Id))
            {
                reader.Add(DiagnosticSeverity.Error, reader.MarkOf(provider, "id"), path + ".id", $"identity provider '{provider.Id}' is declared twice");
            }
        }
    }

    private static void CheckId(PolicyYaml.Reader reader, object record, string id, string path)
    {
        if (id.Length > 0 && !PolicyYaml.IdPattern().IsMatch(id))
        {
            reader.Add(DiagnosticSeverity.Error, reader.MarkOf(record, "id"), path,
                $"'{id}' is not a valid id: use 1-64 lower-case letters, digits, '.', '_' or '-'");
        }
    }

    private const int MaxOwnerName = 200;

    /// <summary>A bare address (<c>name@domain</c>): no display name, no spaces, no list, at most 254 characters.</summary>
    private static bool IsEmailAddress(string value)
        => value.Length <= 254 && !value.Any(c => char.IsWhiteSpace(c) || char.IsControl(c) || c is ',' or ';' or '<' or '>')
            && System.Net.Mail.MailAddress.TryCreate(value, out var address) && address.Address == value && address.DisplayName.Length == 0;

    private static bool IsSha256Hex(string value)
        => value.Length == 64 && value.All(c => c is (>= '0' and <= '9') or (>= 'a' and <= 'f'));

    private static string Known(IEnumerable<string> names)
    {
        var list = names.Take(10).ToArray();
        return list.Length == 0 ? "" : "; known: " + string.Join(", ", list);
    }
}
