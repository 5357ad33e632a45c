using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Custos.Gateway.Hosting;
using Custos.Policy;
using static Custos.Gateway.Tests.Functional.ControlPlaneFixture;

namespace Custos.Gateway.Tests.Functional;

/// <summary>The control plane end to end: access approvals, the credential lifecycle, kill switches, owners and their notifications.</summary>
public sealed class ControlPlaneTests
{
    [Fact]
    public async Task Approval_OrLedgerOfARequestOutsideTheScope_IsRefusedAsSuch_NotAsMissing()
    {
        // A globex admin asking who approved an acme request was told "request '…' does not exist": an auditor holding
        // the id of a request in the ledger read that the ledger had no such request.
        await using var g = await StartAsync();
        var call = await ChatAsync(g, g.KeyOf("web"));
        Assert.Equal(HttpStatusCode.OK, call.Status);
        await g.Gateway.Ledger.FlushAsync();

        using var refused = await AdminAsync(g, "globex-owner", HttpMethod.Get, $"/admin/v1/requests/{call.RequestId}/approval");
        var text = await refused.Content.ReadAsStringAsync();
        Assert.True(refused.StatusCode == HttpStatusCode.Forbidden, text);
        using var problem = JsonDocument.Parse(text);
        Assert.Equal("admin.forbidden", problem.RootElement.GetProperty("code").GetString());
        Assert.Contains($"request:{call.RequestId} is outside the scope of 'globex-owner'", problem.RootElement.GetProperty("detail").GetString(), StringComparison.Ordinal);
        var denied = Assert.Single(await AdminEntriesAsync(g), e => e.GetProperty("action").GetString() == "ledger.read_denied");
        Assert.Equal(("globex-owner", "acme"), (denied.GetProperty("actor").GetString(), denied.GetProperty("tenant").GetString()));

        // The ledger asked for that request by id answered an empty list, as if there were none: refused the same way.
        using var listed = await AdminAsync(g, "globex-owner", HttpMethod.Get, $"/admin/v1/ledger?request_id={call.RequestId}");
        Assert.Equal(HttpStatusCode.Forbidden, listed.StatusCode);
        Assert.Equal(2, (await AdminEntriesAsync(g)).Count(e => e.GetProperty("action").GetString() == "ledger.read_denied"));
        Assert.Single((await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Get, $"/admin/v1/ledger?request_id={call.RequestId}"))).EnumerateArray());

        // A request that is in no ledger is still not found, and the admin in scope is answered.
        using var missing = await AdminAsync(g, "globex-owner", HttpMethod.Get, "/admin/v1/requests/req_01NOSUCHREQUEST00000000000/approval");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Get, $"/admin/v1/requests/{call.RequestId}/approval"));
    }

    [Fact]
    public async Task AccessRequest_ApprovedByThePolicyOwner_TakesEffect_AndTheCallNamesItsApprover()
    {
        await using var g = await StartAsync();
        var before = await ChatAsync(g, g.KeyOf("web"), "gpt-4o");
        Assert.Equal("deny.model_not_entitled", before.Code);

        var created = await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/access-requests",
            new { consumer = "web", models = new[] { "gpt-4o" }, justification = "escalations need the larger model" }));
        var id = created.GetProperty("id").GetString()!;
        Assert.Equal("pending", created.GetProperty("status").GetString());

        // Pending is not access.
        Assert.Equal("deny.model_not_entitled", (await ChatAsync(g, g.KeyOf("web"), "gpt-4o")).Code);

        // Neither the platform admin (not the policy owner) nor the requester may decide; both attempts are audited.
        using (var root = await AdminAsync(g, "root", HttpMethod.Post, $"/admin/v1/access-requests/{id}/approve", new { reason = "ok" }))
        {
            Assert.Equal(HttpStatusCode.Forbidden, root.StatusCode);
        }

        using (var self = await AdminAsync(g, "support-owner", HttpMethod.Post, $"/admin/v1/access-requests/{id}/approve", new { reason = "ok" }))
        {
            Assert.Equal(HttpStatusCode.Forbidden, self.StatusCode);
            Assert.Contains("separation of duties", await self.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        var approved = await JsonAsync(await AdminAsync(g, "support-lead", HttpMethod.Post, $"/admin/v1/access-requests/{id}/approve",
            new { reason = "justified; ticket SUP-7" }));
        Assert.Equal("approved", approved.GetProperty("status").GetString());
        Assert.Equal("support-lead", approved.GetProperty("decided_by").GetString());
        var version = approved.GetProperty("policy_version").GetInt64();
        Assert.Equal(version, g.Gateway.Policy.Current.Version);

        // Deciding twice is a conflict.
        using (var again = await AdminAsync(g, "support-lead", HttpMethod.Post, $"/admin/v1/access-requests/{id}/reject", new { reason = "no" }))
        {
            Assert.Equal(HttpStatusCode.Conflict, again.StatusCode);
        }

        // The first allowed call, and who approved it, followed from its ledger entry.
        var call = await ChatAsync(g, g.KeyOf("web"), "gpt-4o");
        Assert.Equal(HttpStatusCode.OK, call.Status);
        var entry = await g.EntryAsync(call.RequestId);
        Assert.Equal(version, entry.GetProperty("policy_version").GetInt64());
        var entitlement = entry.GetProperty("controls").EnumerateArray().First(c => c.GetProperty("control").GetString() == "entitlement");
        Assert.Contains($"approved by support-lead ({id})", entitlement.GetProperty("detail").GetString(), StringComparison.Ordinal);

        var approval = await JsonAsync(await AdminAsync(g, "auditor", HttpMethod.Get, $"/admin/v1/requests/{call.RequestId}/approval"));
        Assert.Equal("support-lead", approval.GetProperty("approved_by").GetString());
        Assert.Equal(id, approval.GetProperty("ticket").GetString());
        Assert.Equal(version, approval.GetProperty("policy_version").GetInt64());
        Assert.Equal("support-owner", approval.GetProperty("access_request").GetProperty("requested_by").GetString());
        Assert.Equal("escalations need the larger model", approval.GetProperty("access_request").GetProperty("justification").GetString());

        // The consumer kept the models it had: approval added, it did not replace.
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("web"), "gpt-4o-mini")).Status);

        // A rejected request changes nothing. The policy owner asks this time; the delegate the policy names decides.
        var second = await JsonAsync(await AdminAsync(g, "support-lead", HttpMethod.Post, "/admin/v1/access-requests",
            new { consumer = "revoked-user", models = new[] { "gpt-4o" }, justification = "try" }));
        var secondId = second.GetProperty("id").GetString();
        using (var own = await AdminAsync(g, "support-lead", HttpMethod.Post, $"/admin/v1/access-requests/{secondId}/approve", new { reason = "mine" }))
        {
            Assert.Equal(HttpStatusCode.Forbidden, own.StatusCode);
        }

        var rejected = await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, $"/admin/v1/access-requests/{secondId}/reject",
            new { reason = "not needed" }));
        Assert.Equal("rejected", rejected.GetProperty("status").GetString());
        Assert.Equal(version, g.Gateway.Policy.Current.Version);

        var admin = await AdminEntriesAsync(g);
        Assert.Contains(admin, e => e.GetProperty("action").GetString() == "access.requested" && e.GetProperty("actor").GetString() == "support-owner");
        Assert.Contains(admin, e => e.GetProperty("action").GetString() == "access.approved" && e.GetProperty("actor").GetString() == "support-lead"
            && e.GetProperty("before").GetString() == "pending" && e.GetProperty("after").GetString()!.StartsWith("approved", StringComparison.Ordinal));
        Assert.Contains(admin, e => e.GetProperty("action").GetString() == "access.approved_denied" && e.GetProperty("actor").GetString() == "root");
        Assert.Contains(admin, e => e.GetProperty("action").GetString() == "access.rejected" && e.GetProperty("after").GetString() == "rejected");
    }

    [Fact]
    public async Task AccessApprovals_StayWithinTheirTenant_AndTheLedgerShowsWhoApproves()
    {
        // globex-user's only access is an entitlement whose ticket happens to read "ar-1": the id the first access request
        // (acme's) gets. agent holds an approval that has expired.
        await using var g = await StartAsync(more: doc => doc with
        {
            Consumers =
            [
                .. doc.Consumers.Select(c => c.Id switch
                {
                    "globex-user" => c with { Models = [], Entitlements = [new EntitlementConfig { Models = ["globex-only"], ApprovedBy = "globex-owner", Ticket = "ar-1" }] },
                    "agent" => c with
                    {
                        Entitlements = [new EntitlementConfig { Models = ["gpt-4o-mini"], ApprovedBy = "root", Ticket = "CHG-9", ValidUntil = DateTimeOffset.UtcNow.AddDays(-1) }],
                    },
                    _ => c,
                }),
            ],
        });

        // An admin of another tenant cannot be named to decide this service's access, by its owner or in the policy's approvers.
        using (var across = await AdminAsync(g, "support-owner", HttpMethod.Put, "/admin/v1/services/support/owners/policy",
            new { owner = new { name = "Globex lead", email = "lead@globex.test", admin = "globex-owner" }, reason = "hand over" }))
        {
            Assert.Equal(HttpStatusCode.UnprocessableEntity, across.StatusCode);
            Assert.Contains("admin 'globex-owner' is scoped to tenant globex, which does not cover service 'support' of tenant 'acme'",
                await across.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        // A service owner may name itself the policy owner: an admin change, recorded with its actor, and who approves is in the entry.
        var self = await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Put, "/admin/v1/services/support/owners/policy",
            new { owner = new { name = "support lead", email = "support-lead@example.test", admin = "support-owner" }, reason = "I decide now" }));
        Assert.Contains("policy=support lead <support-lead@example.test> admin support-lead;", self.GetProperty("before").GetString(), StringComparison.Ordinal);
        Assert.Contains("policy=support lead <support-lead@example.test> admin support-owner;", self.GetProperty("after").GetString(), StringComparison.Ordinal);
        Assert.EndsWith("; approvers=support-owner", self.GetProperty("after").GetString(), StringComparison.Ordinal);

        var created = await JsonAsync(await AdminAsync(g, "support-lead", HttpMethod.Post, "/admin/v1/access-requests",
            new { consumer = "web", models = new[] { "gpt-4o" }, justification = "escalations" }));
        var id = created.GetProperty("id").GetString()!;
        Assert.Equal("ar-1", id);
        await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, $"/admin/v1/access-requests/{id}/approve", new { reason = "fine" }));

        // The approval belongs to acme: its tenant-scoped auditors see it.
        var approvedEntry = Assert.Single(await AdminEntriesAsync(g), e => e.GetProperty("action").GetString() == "access.approved");
        Assert.Equal("acme", approvedEntry.GetProperty("tenant").GetString());

        // globex's request used the entitlement with ticket "ar-1": acme's access request of that id is not shown with it, nor who
        // made the version in force (a change of acme's).
        var call = await ChatAsync(g, g.KeyOf("globex-user"), "globex-only");
        Assert.Equal(HttpStatusCode.OK, call.Status);
        var approval = await JsonAsync(await AdminAsync(g, "globex-owner", HttpMethod.Get, $"/admin/v1/requests/{call.RequestId}/approval"));
        Assert.Equal("ar-1", approval.GetProperty("ticket").GetString());
        Assert.Equal(JsonValueKind.Null, approval.GetProperty("access_request").ValueKind);
        Assert.Equal(JsonValueKind.Null, approval.GetProperty("policy_author").ValueKind);
        Assert.True(approval.GetProperty("valid_at_request").GetBoolean());
        var web = await ChatAsync(g, g.KeyOf("web"), "gpt-4o");
        var own = await JsonAsync(await AdminAsync(g, "root", HttpMethod.Get, $"/admin/v1/requests/{web.RequestId}/approval"));
        Assert.Equal("support-lead", own.GetProperty("access_request").GetProperty("requested_by").GetString());
        Assert.Equal("support-owner", own.GetProperty("policy_author").GetString());

        // A request refused because its approval had expired says so.
        var expired = await ChatAsync(g, g.KeyOf("agent"), "gpt-4o-mini");
        Assert.Equal("deny.entitlement_expired", expired.Code);
        var lapsed = await JsonAsync(await AdminAsync(g, "root", HttpMethod.Get, $"/admin/v1/requests/{expired.RequestId}/approval"));
        Assert.Equal(("CHG-9", false), (lapsed.GetProperty("ticket").GetString(), lapsed.GetProperty("valid_at_request").GetBoolean()));
    }

    [Fact]
    public async Task CredentialLifecycle_EachActionTakesEffectOnTheNextRequest_IsAudited_AndNotifiesTheTechnicalOwner()
    {
        var hooks = new RecordingHandler();
        await using var g = await StartAsync(hooks);

        // Issue: shown once, works at once, listed by prefix only.
        var issued = await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/credentials", new { consumer = "web", reason = "new web release" }));
        var key = issued.GetProperty("key").GetString()!;
        var id = issued.GetProperty("credential").GetProperty("id").GetString()!;
        Assert.StartsWith("csk_", key, StringComparison.Ordinal);
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, key)).Status);
        await g.Gateway.Ledger.FlushAsync();
        var listed = (await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Get, "/admin/v1/credentials?consumer=web")))
            .EnumerateArray().Single(c => c.GetProperty("id").GetString() == id);
        Assert.Equal(key[..12], listed.GetProperty("prefix").GetString());
        Assert.Equal("active", listed.GetProperty("status").GetString());
        Assert.Equal(JsonValueKind.String, listed.GetProperty("last_used").ValueKind);
        Assert.Equal(JsonValueKind.String, listed.GetProperty("created_at").ValueKind);
        Assert.DoesNotContain(key, listed.GetRawText(), StringComparison.Ordinal);

        async Task Act(string verb, string reason) => await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, $"/admin/v1/credentials/{id}/{verb}",
            new { reason }));

        await Act("suspend", "odd traffic from this key");
        Assert.Equal("deny.credential_suspended", (await ChatAsync(g, key)).Code);
        await Act("resume", "traffic explained");
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, key)).Status);

        // Rotate with an overlap: both keys work; without one, the old key ends now.
        var rotated = await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, $"/admin/v1/credentials/{id}/rotate",
            new { reason = "quarterly rotation", overlap_seconds = 3600 }));
        var newKey = rotated.GetProperty("key").GetString()!;
        var newId = rotated.GetProperty("credential").GetProperty("id").GetString()!;
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, key)).Status);
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, newKey)).Status);
        Assert.Equal(JsonValueKind.Null, rotated.GetProperty("credential").GetProperty("expires_at").ValueKind);

        // The old key, in its overlap, is not rotated again: that made a second replacement, which took the overlap's
        // end as its own expiry and stopped working an hour later. The answer names the replacement to rotate instead.
        var versionBefore = g.Gateway.Policy.Current.Version;
        using (var twice = await AdminAsync(g, "support-owner", HttpMethod.Post, $"/admin/v1/credentials/{id}/rotate", new { reason = "lost the new key" }))
        {
            Assert.Equal(HttpStatusCode.Conflict, twice.StatusCode);
            Assert.Contains($"was rotated already: '{newId}' replaced it", await twice.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        Assert.Equal(versionBefore, g.Gateway.Policy.Current.Version);
        var old = (await JsonAsync(await AdminAsync(g, "auditor", HttpMethod.Get, "/admin/v1/credentials?consumer=web"))).EnumerateArray().Single(c => c.GetProperty("id").GetString() == id);
        Assert.Equal(newId, old.GetProperty("replaced_by").GetString());
        Assert.Contains($"replaced_by: {newId}", PolicyYamlWriter.Write(g.Gateway.Policy.Current.Document), StringComparison.Ordinal);
        await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, $"/admin/v1/credentials/{newId}/rotate", new { reason = "leaked in a log", overlap_seconds = 0 }));
        Assert.Equal("deny.credential_expired", (await ChatAsync(g, newKey)).Code);

        // Revoke is permanent.
        await Act("revoke", "device lost");
        Assert.Equal("deny.credential_revoked", (await ChatAsync(g, key)).Code);
        using (var resume = await AdminAsync(g, "support-owner", HttpMethod.Post, $"/admin/v1/credentials/{id}/resume", new { reason = "oops" }))
        {
            Assert.Equal(HttpStatusCode.Conflict, resume.StatusCode);
        }

        // A change without a reason is refused, and changes nothing.
        using (var noReason = await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/credentials/cred-web/suspend", new { reason = " " }))
        {
            Assert.Equal(HttpStatusCode.BadRequest, noReason.StatusCode);
            Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("web"))).Status);
        }

        // Every action is in the ledger with its actor, before and after, and reason.
        var admin = await AdminEntriesAsync(g);
        (string Action, string? Before, string After, string Reason)[] expected =
        [
            ("credential.issued", null, "active", "new web release"),
            ("credential.suspended", "active", "suspended", "odd traffic from this key"),
            ("credential.resumed", "suspended", "active", "traffic explained"),
            ("credential.revoked", "active", "revoked", "device lost"),
        ];
        foreach (var (action, before, after, reason) in expected)
        {
            var entry = Assert.Single(admin, e => e.GetProperty("action").GetString() == action && e.GetProperty("reason").GetString() == reason);
            Assert.Equal("support-owner", entry.GetProperty("actor").GetString());
            Assert.Equal("acme", entry.GetProperty("tenant").GetString());
            Assert.Equal(before, entry.GetProperty("before").ValueKind == JsonValueKind.Null ? null : entry.GetProperty("before").GetString());
            Assert.Equal(after, entry.GetProperty("after").GetString());
        }

        Assert.Equal(2, admin.Count(e => e.GetProperty("action").GetString() == "credential.rotated"));
        var versions = admin.Count(e => e.GetProperty("action").GetString() == "policy.version_created");
        Assert.True(versions >= 7, $"each change is a policy version ({versions})");

        // The technical control owner was told, at their webhook.
        var note = await hooks.WaitForAsync(b => b.GetProperty("event").GetString() == "credential.revoked");
        Assert.Equal("technical", note.GetProperty("owner_role").GetString());
        Assert.Equal("support on-call", note.GetProperty("owner").GetString());
        Assert.Equal("device lost", note.GetProperty("reason").GetString());
        Assert.All(hooks.Received, r => Assert.Equal(TechnicalWebhook, r.Uri.ToString()));
        Assert.DoesNotContain(key, string.Join("\n", hooks.Received.Select(r => r.Body.GetRawText())), StringComparison.Ordinal);
    }

    [Fact]
    public async Task AccessRequest_ForAccessHeldOrAskedForAlready_IsRefusedNamingWhatHoldsIt()
    {
        await using var g = await StartAsync();

        // web may use gpt-4o-mini (by its alias "fast" too) under the policy: nothing to approve.
        using (var held = await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/access-requests",
            new { consumer = "web", models = new[] { "fast" }, justification = "need it" }))
        {
            Assert.Equal(HttpStatusCode.Conflict, held.StatusCode);
            var problem = await JsonDocumentOf(held);
            Assert.Equal("admin.access_already_held", problem.GetProperty("code").GetString());
            Assert.Equal(g.Gateway.Policy.Current.Version, problem.GetProperty("policy_version").GetInt64());
            Assert.Contains($"consumer 'web' already holds gpt-4o-mini (policy (no approver named)) under policy version {g.Gateway.Policy.Current.Version}",
                problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        }

        // A second request for a model a pending one asks for names the pending one; nothing is created.
        var first = (await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/access-requests",
            new { consumer = "web", models = new[] { "gpt-4o" }, justification = "escalations", valid_until = DateTimeOffset.UtcNow.AddDays(7) })))
            .GetProperty("id").GetString()!;
        using (var duplicate = await AdminAsync(g, "root", HttpMethod.Post, "/admin/v1/access-requests",
            new { consumer = "web", models = new[] { "gpt-4o" }, justification = "escalations too" }))
        {
            Assert.Equal(HttpStatusCode.Conflict, duplicate.StatusCode);
            var problem = await JsonDocumentOf(duplicate);
            Assert.Equal("admin.access_request_pending", problem.GetProperty("code").GetString());
            Assert.Equal(first, problem.GetProperty("access_request").GetString());
            Assert.Contains($"access request '{first}' for consumer 'web' (gpt-4o), asked by support-owner", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        }

        Assert.Single((await JsonAsync(await AdminAsync(g, "root", HttpMethod.Get, "/admin/v1/access-requests"))).EnumerateArray());

        // Once approved, asking again names the approval; asking for longer than it runs extends it, and is accepted.
        await JsonAsync(await AdminAsync(g, "support-lead", HttpMethod.Post, $"/admin/v1/access-requests/{first}/approve", new { reason = "fine" }));
        using (var again = await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/access-requests",
            new { consumer = "web", models = new[] { "gpt-4o" }, justification = "again", valid_until = DateTimeOffset.UtcNow.AddDays(3) }))
        {
            Assert.Equal(HttpStatusCode.Conflict, again.StatusCode);
            Assert.Contains($"gpt-4o (approved by support-lead ({first}), until ", (await JsonDocumentOf(again)).GetProperty("detail").GetString(), StringComparison.Ordinal);
        }

        var extension = await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/access-requests",
            new { consumer = "web", models = new[] { "gpt-4o" }, justification = "for good" }));
        Assert.Equal("pending", extension.GetProperty("status").GetString());

        static async Task<JsonElement> JsonDocumentOf(HttpResponseMessage response)
            => JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone();
    }

    [Fact]
    public async Task AccessRequest_ThatNoApprovalCouldGrant_IsRefusedWhenAsked_NotLeftPending()
    {
        // External consumers may be entitled to gpt-4o-mini only: a consumer narrows its category's defaults, never widens them.
        await using var g = await StartAsync(more: p => p with
        {
            Defaults = p.Defaults with { External = new CategoryDefaults { Models = ["gpt-4o-mini"] } },
            Consumers = [.. p.Consumers.Select(c => c.Id == "web" ? c with { Models = ["gpt-4o-mini"] } : c)],
        });
        var version = g.Gateway.Policy.Current.Version;

        using (var refused = await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/access-requests",
            new { consumer = "web", models = new[] { "gpt-4o" }, justification = "escalations need the larger model" }))
        {
            Assert.Equal(HttpStatusCode.UnprocessableEntity, refused.StatusCode);
            var problem = JsonDocument.Parse(await refused.Content.ReadAsStringAsync()).RootElement;
            Assert.Equal("admin.invalid_policy", problem.GetProperty("code").GetString());
            Assert.Equal("models", problem.GetProperty("param").GetString());
            Assert.Contains("model 'gpt-4o' is outside the defaults of category 'external'", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
            Assert.False(string.IsNullOrEmpty(problem.GetProperty("request_id").GetString()));
        }

        // Nothing was created, nor changed; the refusal is on record.
        Assert.Empty((await JsonAsync(await AdminAsync(g, "root", HttpMethod.Get, "/admin/v1/access-requests"))).EnumerateArray());
        Assert.Equal(version, g.Gateway.Policy.Current.Version);
        Assert.Contains(await AdminEntriesAsync(g), e => e.GetProperty("action").GetString() == "admin.request_refused"
            && e.GetProperty("after").GetString() == "admin.invalid_policy");

        // Access the category allows is still asked for and approved as before.
        var allowed = await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/access-requests",
            new { consumer = "revoked-user", models = new[] { "gpt-4o" }, justification = "internal users may" }));
        Assert.Equal("pending", allowed.GetProperty("status").GetString());
    }

    [Fact]
    public async Task AccessRequest_DecidedByRacingAdmins_IsDecidedOnce_AndTheEntitlementMatchesTheDecision()
    {
        await using var g = await StartAsync();
        for (var round = 0; round < 3; round++)
        {
            // Each round asks for longer than the last could have granted: a request for access held already is refused.
            var id = (await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/access-requests",
                new { consumer = "web", models = new[] { "gpt-4o" }, justification = "escalations", valid_until = DateTimeOffset.UtcNow.AddDays(round + 1) })))
                .GetProperty("id").GetString()!;

            // Three approvals and a rejection at once: one of them decides, the others are conflicts.
            var decisions = await Task.WhenAll(new[] { "approve", "approve", "reject", "approve" }.Select(async verb =>
            {
                using var response = await AdminAsync(g, "support-lead", HttpMethod.Post, $"/admin/v1/access-requests/{id}/{verb}", new { reason = "decided" });
                return (verb, response.StatusCode);
            }));

            var winner = Assert.Single(decisions, d => d.StatusCode == HttpStatusCode.OK);
            Assert.All(decisions.Where(d => d != winner), d => Assert.Equal(HttpStatusCode.Conflict, d.StatusCode));
            var stored = (await JsonAsync(await AdminAsync(g, "root", HttpMethod.Get, "/admin/v1/access-requests")))
                .EnumerateArray().Single(r => r.GetProperty("id").GetString() == id);
            Assert.Equal(winner.verb == "approve" ? "approved" : "rejected", stored.GetProperty("status").GetString());
            var entitlements = g.Gateway.Policy.Current.Document.Consumers.Single(c => c.Id == "web").Entitlements.Count(e => e.Ticket == id);
            Assert.Equal(winner.verb == "approve" ? 1 : 0, entitlements);
            var decided = (await AdminEntriesAsync(g)).Count(e => e.GetProperty("target").GetString() == "access_request:" + id
                && e.GetProperty("action").GetString() is "access.approved" or "access.rejected");
            Assert.Equal(1, decided);
        }
    }

    [Fact]
    public async Task OwnerRoles_NamedAtOnceByTwoAdmins_AreBothKept()
    {
        // custos owners set names one role: it once read the whole owners object and sent it back, and the later of two
        // admins naming different roles at once undid the earlier.
        await using var g = await StartAsync();
        var named = await Task.WhenAll(
            AdminAsync(g, "support-owner", HttpMethod.Put, "/admin/v1/services/support/owners/billing",
                new { owner = new { name = "New finance", email = "finance@example.test" }, reason = "finance reorg" }),
            AdminAsync(g, "support-lead", HttpMethod.Put, "/admin/v1/services/support/owners/technical",
                new { owner = new { name = "New on-call", email = "oncall@example.test" }, reason = "on-call rota" }));
        foreach (var response in named)
        {
            await JsonAsync(response);
        }

        var owners = g.Gateway.Policy.Current.Document.Services.Single(s => s.Id == "support").Owners;
        Assert.Equal(("New finance", "New on-call", "support lead"), (owners.Billing!.Name, owners.Technical!.Name, owners.Policy!.Name));
        using var unknown = await AdminAsync(g, "support-owner", HttpMethod.Put, "/admin/v1/services/support/owners/boss", new { owner = (object?)null, reason = "x" });
        Assert.Equal(HttpStatusCode.BadRequest, unknown.StatusCode);
    }

    [Fact]
    public async Task AFileEditedSinceItWasLoaded_DoesNotLiftASuspensionOrAKillSwitchMadeSince()
    {
        // A rolling restart with a file edited for something else ended an incident's containment on every node, with a
        // warning in one log. Now the start is refused, naming what the file would lift; nothing is stored.
        CustosGatewayOptions? loaded = null;
        var g = await TestGateway.StartAsync((test, policy) => Customize(test, policy), options: o => loaded = o);
        try
        {
            var file = loaded!.Policy;
            await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/credentials/cred-web/suspend", new { reason = "odd traffic" }));
            await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/kill-switches", new { scope = "service", id = "support", engaged = true, reason = "incident" }));
            var version = g.Gateway.Policy.Current.Version;
            await g.Gateway.DisposeAsync();

            var edited = file with { Consumers = [.. file.Consumers.Select(c => c.Id == "web" ? c with { Limits = c.Limits with { RequestsPerMinute = 5 } } : c)] };
            var refused = await Assert.ThrowsAsync<ContainmentLiftedException>(() => CustosGateway.StartAsync(loaded with { Policy = edited }));
            Assert.Equal(["credential 'cred-web' suspended", "service 'support' suspended (kill switch)"], refused.Lifted);
            Assert.Contains("custos policy show", refused.Message, StringComparison.Ordinal);
            Assert.Contains("copy FILE's `server:` section", refused.Message, StringComparison.Ordinal); // what policy show leaves out: listeners, the store's folder

            // The file unchanged keeps the versions made since; one brought up to date with them starts, as its next version.
            await using (var unchanged = await CustosGateway.StartAsync(loaded))
            {
                Assert.Equal(version, unchanged.Policy.Current.Version);
                var current = unchanged.Policy.Current.Document;
                await unchanged.DisposeAsync();
                await using var upToDate = await CustosGateway.StartAsync(loaded with
                {
                    Policy = current with { Consumers = [.. current.Consumers.Select(c => c.Id == "web" ? c with { Limits = c.Limits with { RequestsPerMinute = 5 } } : c)] },
                });
                Assert.Equal(version + 1, upToDate.Policy.Current.Version);
                Assert.Equal(CredentialStatus.Suspended, upToDate.Policy.Current.Document.Credentials.Single(c => c.Id == "cred-web").Status);
            }
        }
        finally
        {
            await g.DisposeAsync(); // its gateway stopped above: a second stop does nothing
        }
    }

    [Fact]
    public async Task Revocation_StaysPermanent_ThroughAWholePolicyApplied_AndRotationNeedsALiveKey()
    {
        await using var g = await StartAsync(more: p => p with
        {
            Admins = [.. p.Admins, new AdminConfig { Id = "acme-platform", Role = AdminRole.PlatformAdmin, KeySha256 = ScopedPlatformAdmin.Hash, Tenants = ["acme"] }],
        });
        var beforeRevocation = PolicyYamlWriter.Write(g.Gateway.Policy.Current.Document);
        await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/credentials/cred-web/revoke", new { reason = "leaked" }));
        var revokedAt = g.Gateway.Policy.Current.Version;

        // The whole policy as it was before the revocation: it would bring the leaked key back.
        using (var revived = await AdminAsync(g, "root", HttpMethod.Post, "/admin/v1/policy/versions", new { yaml = beforeRevocation, reason = "tweak limits" }))
        {
            var problem = JsonDocument.Parse(await revived.Content.ReadAsStringAsync()).RootElement;
            Assert.Equal(HttpStatusCode.Conflict, revived.StatusCode);
            Assert.Equal("admin.revocation_permanent", problem.GetProperty("code").GetString());
            Assert.Contains("names credential 'cred-web' (revoked in version ", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        }

        Assert.Equal(revokedAt, g.Gateway.Policy.Current.Version);
        Assert.Equal("deny.credential_revoked", (await ChatAsync(g, g.KeyOf("web"))).Code);

        // Changes that change nothing are conflicts, not versions with "revoked -> revoked" or "engaged -> engaged" entries.
        using (var expire = await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/credentials/cred-web/expire", new { reason = "tidy" }))
        {
            Assert.Equal(HttpStatusCode.Conflict, expire.StatusCode);
        }

        await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/kill-switches", new { scope = "consumer", id = "web", engaged = true, reason = "drill" }));
        using (var again = await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/kill-switches", new { scope = "consumer", id = "web", engaged = true, reason = "drill" }))
        {
            Assert.Equal(HttpStatusCode.Conflict, again.StatusCode);
            Assert.Contains("is already engaged", await again.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/kill-switches", new { scope = "consumer", id = "web", engaged = false, reason = "drill over" }));
        Assert.Single(await AdminEntriesAsync(g), e => e.GetProperty("action").GetString() == "kill_switch.engaged");
        revokedAt = g.Gateway.Policy.Current.Version;

        // A platform admin scoped to one tenant may not replace the whole gateway's policy (nor its own scope with it).
        using (var client = new HttpClient { BaseAddress = g.Gateway.AdminUri })
        {
            client.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", ScopedPlatformAdmin.Key);
            using var scoped = await client.PostAsJsonAsync("/admin/v1/policy/versions",
                new { yaml = PolicyYamlWriter.Write(g.Gateway.Policy.Current.Document), reason = "widen my scope" });
            Assert.Equal(HttpStatusCode.Forbidden, scoped.StatusCode);
            Assert.Contains("is the whole gateway's, and 'acme-platform' is scoped to tenant acme", await scoped.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        Assert.Equal(revokedAt, g.Gateway.Policy.Current.Version);

        // Rotation makes a working key only from a live one.
        var issued = await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/credentials", new { consumer = "web", reason = "new key" }));
        var id = issued.GetProperty("credential").GetProperty("id").GetString()!;
        await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, $"/admin/v1/credentials/{id}/suspend", new { reason = "odd traffic" }));
        using (var suspended = await AdminAsync(g, "support-owner", HttpMethod.Post, $"/admin/v1/credentials/{id}/rotate", new { reason = "rotate" }))
        {
            Assert.Equal(HttpStatusCode.Conflict, suspended.StatusCode);
            Assert.Contains("is suspended; resume it first", await suspended.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, $"/admin/v1/credentials/{id}/resume", new { reason = "explained" }));
        await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, $"/admin/v1/credentials/{id}/rotate", new { reason = "leaked", overlap_seconds = 0 }));
        using (var again = await AdminAsync(g, "support-owner", HttpMethod.Post, $"/admin/v1/credentials/{id}/rotate", new { reason = "again", overlap_seconds = 0 }))
        {
            Assert.Equal(HttpStatusCode.Conflict, again.StatusCode);
            Assert.Contains("has expired; issue a new one", await again.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        }

        var rotated = Assert.Single(await AdminEntriesAsync(g), e => e.GetProperty("action").GetString() == "credential.rotated");
        Assert.Equal("active", rotated.GetProperty("before").GetString());
    }

    private static readonly (string Key, string Hash) ScopedPlatformAdmin = NewAdminKey();

    private static (string Key, string Hash) NewAdminKey()
    {
        var key = Custos.Identity.ApiKey.Generate(Custos.Identity.ApiKeyKind.Admin);
        return (key, Custos.Identity.KeyHash.Of(key).ToHex());
    }

    [Fact]
    public async Task KillSwitches_PerConsumerServiceAndTenant_RefuseFromTheNextRequest_AndRelease()
    {
        await using var g = await StartAsync();
        async Task Switch(string admin, string scope, string id, bool engaged)
            => await JsonAsync(await AdminAsync(g, admin, HttpMethod.Post, "/admin/v1/kill-switches", new { scope, id, engaged, reason = $"drill {scope}" }));

        await Switch("support-owner", "consumer", "web", true);
        Assert.Equal("deny.consumer_suspended", (await ChatAsync(g, g.KeyOf("web"))).Code);
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("agent"), "gpt-4o")).Status);
        await Switch("support-owner", "consumer", "web", false);
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("web"))).Status);

        await Switch("agents-owner", "service", "agents", true);
        var refused = await ChatAsync(g, g.KeyOf("agent"), "gpt-4o");
        Assert.Equal(HttpStatusCode.Forbidden, refused.Status);
        Assert.Equal("deny.service_suspended", refused.Code);
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("web"))).Status);
        var engagedIn = g.Gateway.Policy.Current.Version;

        // A later change of something else leaves the switch named with the version that engaged it: who, when and why.
        await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/credentials/cred-web/suspend", new { reason = "odd traffic" }));
        Assert.True(g.Gateway.Policy.Current.Version > engagedIn);
        var listed = await JsonAsync(await AdminAsync(g, "auditor", HttpMethod.Get, "/admin/v1/kill-switches"));
        var agents = Assert.Single(listed.EnumerateArray());
        Assert.Equal(("service", "agents"), (agents.GetProperty("scope").GetString(), agents.GetProperty("id").GetString()));
        Assert.Equal(engagedIn, agents.GetProperty("policy_version").GetInt64());
        Assert.Equal("agents-owner", agents.GetProperty("engaged_by").GetString());
        Assert.Equal("drill service", agents.GetProperty("reason").GetString());
        Assert.Equal((await g.Gateway.Store.GetHistoryAsync()).Single(v => v.Number == engagedIn).CreatedAt, agents.GetProperty("since").GetDateTimeOffset());
        await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/credentials/cred-web/resume", new { reason = "cleared" }));
        await Switch("agents-owner", "service", "agents", false);
        Assert.Empty((await JsonAsync(await AdminAsync(g, "auditor", HttpMethod.Get, "/admin/v1/kill-switches"))).EnumerateArray());

        await Switch("root", "tenant", "acme", true);
        Assert.Equal("deny.tenant_suspended", (await ChatAsync(g, g.KeyOf("web"))).Code);
        Assert.Equal("deny.tenant_suspended", (await ChatAsync(g, g.KeyOf("agent"), "gpt-4o")).Code);
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("globex-user"), "globex-only")).Status);
        await Switch("root", "tenant", "acme", false);
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("web"))).Status);

        // The refusals name the policy version that switched them off.
        var denied = (await g.LedgerAsync()).Where(e => e.GetProperty("reasons").EnumerateArray().Any(r => r.GetString() == "deny.tenant_suspended")).ToList();
        Assert.Equal(2, denied.Count);
        var admin = await AdminEntriesAsync(g);
        var engaged = Assert.Single(admin, e => e.GetProperty("action").GetString() == "kill_switch.engaged" && e.GetProperty("target").GetString() == "tenant:acme");
        Assert.All(denied, d => Assert.Equal(engaged.GetProperty("policy_version").GetInt64(), d.GetProperty("policy_version").GetInt64()));
        Assert.Equal("released", engaged.GetProperty("before").GetString());
        Assert.Equal("engaged", engaged.GetProperty("after").GetString());
    }

    [Fact]
    public async Task RequireOwnersBlock_RefusesUngovernedServices_UntilTheirOwnersAreNamed()
    {
        await using var g = await StartAsync(more: p => p with
        {
            Gateway = p.Gateway with { RequireOwners = RequireOwners.Block },
            Services = [.. p.Services.Select(s => s.Id == "agents" ? s with { Owners = new ServiceOwners() } : s)],
        });
        var refused = await ChatAsync(g, g.KeyOf("agent"), "gpt-4o");
        Assert.Equal(HttpStatusCode.Forbidden, refused.Status);
        Assert.Equal("deny.service_ungoverned", refused.Code);
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("web"))).Status);

        var agents = await JsonAsync(await AdminAsync(g, "agents-owner", HttpMethod.Get, "/admin/v1/services/agents"));
        Assert.Contains(agents.GetProperty("governance_gaps").EnumerateArray(), gap => gap.GetString()!.Contains("no policy owner", StringComparison.Ordinal));

        // One alias for every role is still missing governance.
        var shared = new { name = "everyone", email = "ai@acme.example" };
        await JsonAsync(await AdminAsync(g, "agents-owner", HttpMethod.Put, "/admin/v1/services/agents/owners",
            new { owners = new { policy = shared, billing = shared, technical = shared, agent_operator = shared, business_sponsor = shared }, reason = "shared" }));
        Assert.Equal("deny.service_ungoverned", (await ChatAsync(g, g.KeyOf("agent"), "gpt-4o")).Code);

        await JsonAsync(await AdminAsync(g, "agents-owner", HttpMethod.Put, "/admin/v1/services/agents/owners", new
        {
            owners = new
            {
                policy = new { name = "Research lead", email = "lead@acme.example" },
                billing = new { name = "Research finance", email = "finance@acme.example" },
                technical = new { name = "Research on-call", email = "oncall@acme.example" },
                agent_operator = new { name = "Agent ops", email = "agentops@acme.example" },
                business_sponsor = new { name = "VP Research", email = "vp@acme.example" },
            },
            reason = "owners named",
        }));
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("agent"), "gpt-4o")).Status);
        var entry = Assert.Single(await AdminEntriesAsync(g), e => e.GetProperty("action").GetString() == "service.owners_set"
            && e.GetProperty("reason").GetString() == "owners named");
        Assert.Contains("policy=everyone", entry.GetProperty("before").GetString(), StringComparison.Ordinal);
        Assert.Contains("policy=Research lead", entry.GetProperty("after").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task DelegatedAdministration_PromptAdminAndFinance_ChangeOnlyTheirPart()
    {
        await using var g = await StartAsync();

        // The prompt admin narrows the service's model choice: a consumer entitled to a model outside it loses it.
        await JsonAsync(await AdminAsync(g, "prompts", HttpMethod.Put, "/admin/v1/services/support/models",
            new { models = new[] { "gpt-4o-mini", "claude-sonnet" }, reason = "cheaper default" }));
        Assert.Equal("deny.model_not_entitled", (await ChatAsync(g, g.KeyOf("web"), "mock-slow")).Code);
        Assert.Equal(HttpStatusCode.OK, (await ChatAsync(g, g.KeyOf("web"))).Status);

        await JsonAsync(await AdminAsync(g, "prompts", HttpMethod.Put, "/admin/v1/services/support/prompt-rules", new
        {
            prompt_rules = new[] { new { id = "no-hi", pattern = "\\bhi\\b", action = "deny" } },
            reason = "block greetings",
        }));
        Assert.Equal("deny.prompt_restricted", (await ChatAsync(g, g.KeyOf("web"))).Code);

        // Finance sets a budget; a widening the category defaults forbid would be a 422, and changes nothing.
        var version = g.Gateway.Policy.Current.Version;
        var change = await JsonAsync(await AdminAsync(g, "finance", HttpMethod.Put, "/admin/v1/budgets",
            new { scope = "service", id = "support", budget = new { amount = 0.5, period = "day", mode = "hard" }, reason = "pilot cap" }));
        Assert.Equal(version + 1, change.GetProperty("policy_version").GetInt64());
        Assert.Equal("0.5 per day (hard)", change.GetProperty("after").GetString());
        Assert.Equal(0.5m, g.Gateway.Policy.Current.Document.Services.Single(s => s.Id == "support").Limits.Budget!.Amount);

        using var invalid = await AdminAsync(g, "prompts", HttpMethod.Put, "/admin/v1/services/support/models",
            new { models = new[] { "no-such-model" }, reason = "typo" });
        Assert.Equal(HttpStatusCode.UnprocessableEntity, invalid.StatusCode);
        Assert.Contains("no-such-model", await invalid.Content.ReadAsStringAsync(), StringComparison.Ordinal);
        Assert.Equal(version + 1, g.Gateway.Policy.Current.Version);

        var spend = await JsonAsync(await AdminAsync(g, "finance", HttpMethod.Get, "/admin/v1/spend"));
        var support = spend.EnumerateArray().Single(s => s.GetProperty("service").GetString() == "support");
        Assert.True(support.GetProperty("spend").GetDecimal() > 0);
        Assert.Equal(0.5m, support.GetProperty("budget").GetProperty("amount").GetDecimal());
    }

    [Fact]
    public async Task Notifications_SurviveAReceiverOutage_AndAreDeliveredWhenItReturns()
    {
        var hooks = new RecordingHandler { Failing = true };
        await using var g = await StartAsync(hooks);
        await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/credentials/cred-web/suspend", new { reason = "outage drill" }));
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (Volatile.Read(ref hooks.Attempts) < 2 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        Assert.True(hooks.Attempts >= 2, "the outbox retries a failed delivery");
        var pending = await JsonAsync(await AdminAsync(g, "auditor", HttpMethod.Get, "/admin/v1/notifications"));
        Assert.Contains(pending.EnumerateArray(), n => n.GetProperty("channel").GetString() == "webhook" && n.GetProperty("status").GetString() == "pending"
            && n.GetProperty("last_error").GetString() == "HTTP 503");
        Assert.Contains(pending.EnumerateArray(), n => n.GetProperty("channel").GetString() == "email" && n.GetProperty("status").GetString() == "unsent");

        hooks.Failing = false;
        var note = await hooks.WaitForAsync(b => b.GetProperty("event").GetString() == "credential.suspended", TimeSpan.FromSeconds(20));
        Assert.Equal("credential:cred-web", note.GetProperty("target").GetString());
    }

    [Fact]
    public async Task ANotificationNotDelivered_IsLoggedWithoutTheWebhooksQuery()
    {
        // Receivers often take a token in the query (Slack in the path): a retry's log line names scheme and host only.
        var hooks = new RecordingHandler { Failing = true };
        await using var g = await StartAsync(hooks);
        await JsonAsync(await AdminAsync(g, "root", HttpMethod.Put, "/admin/v1/services/support/owners/technical",
            new { owner = new { name = "Support on-call", email = "oncall@example.test", webhook = "https://user:pw@h.example/custos/hook?token=s3cr3t-value" }, reason = "new hook" }));
        await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/credentials/cred-web/suspend", new { reason = "outage drill" }));
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!g.Logs.Lines.Any(l => l.Contains("not delivered", StringComparison.Ordinal)) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        var failed = g.Logs.Lines.Where(l => l.Contains("not delivered", StringComparison.Ordinal)).ToList();
        Assert.NotEmpty(failed);
        Assert.Contains(failed, l => l.Contains("to https://h.example/… not delivered", StringComparison.Ordinal));
        Assert.DoesNotContain(failed, l => l.Contains("s3cr3t", StringComparison.Ordinal) || l.Contains("pw@", StringComparison.Ordinal));
    }

    [Fact]
    public async Task AnOwnersSlackMessage_EscapesTheReasonItQuotes()
    {
        // The reason is the admin's (or an access request's requester's) words: <!channel> in it pinged the owners' channel.
        var hooks = new RecordingHandler();
        await using var g = await StartAsync(hooks);
        await JsonAsync(await AdminAsync(g, "root", HttpMethod.Put, "/admin/v1/services/support/owners/technical",
            new { owner = new { name = "x", webhook = "https://hooks.slack.com/services/T0/B0/x", webhook_format = "slack" }, reason = "x" }));
        await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/credentials/cred-web/suspend",
            new { reason = "<!channel> see <https://evil.example/|the runbook> & act" }));

        var message = await hooks.WaitForAsync(b => b.TryGetProperty("text", out var t) && t.GetString()!.Contains("credential.suspended", StringComparison.Ordinal));
        var text = message.GetProperty("text").GetString()!;
        Assert.Contains("&lt;!channel&gt; see &lt;https://evil.example/|the runbook&gt; &amp; act", text, StringComparison.Ordinal);
        Assert.DoesNotContain("<!", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task ASlackWebhook_IsMaskedToRolesThatMayNotNameOwners_AndInTheLog()
    {
        // A Slack incoming webhook's secret is its path: finance, auditors and prompt admins saw it whole, and so did the log.
        const string slack = "https://hooks.slack.com/services/T0A1B2C3D/B0E4F5G6H/aZ3kSECRET";
        var hooks = new RecordingHandler { Failing = true };
        await using var g = await StartAsync(hooks);
        await JsonAsync(await AdminAsync(g, "root", HttpMethod.Put, "/admin/v1/services/support/owners/technical",
            new { owner = new { name = "x", webhook = slack, webhook_format = "slack" }, reason = "x" }));
        await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Post, "/admin/v1/credentials/cred-web/suspend", new { reason = "drill" }));
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (!g.Logs.Lines.Any(l => l.Contains("not delivered", StringComparison.Ordinal)) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        await g.Gateway.Ledger.FlushAsync();
        static bool Secret(string text) => text.Contains("aZ3kSECRET", StringComparison.Ordinal) || text.Contains("T0A1B2C3D", StringComparison.Ordinal);
        var version = g.Gateway.Policy.Current.Version;
        foreach (var (admin, path) in new[]
                 {
                     ("finance", "/admin/v1/services"), ("finance", "/admin/v1/owners"), ("finance", "/admin/v1/policy"), ("prompts", "/admin/v1/services/support"),
                     ("auditor", "/admin/v1/policy"), ("auditor", $"/admin/v1/policy/versions/{version}"), ("auditor", $"/admin/v1/policy/diff?from=1&to={version}"),
                     ("auditor", "/admin/v1/notifications"), ("auditor", "/admin/v1/ledger?kind=admin"), ("auditor", "/admin/v1/reports/incident?subject=service&id=support"),
                 })
        {
            var text = (await JsonAsync(await AdminAsync(g, admin, HttpMethod.Get, path))).GetRawText();
            Assert.False(Secret(text), $"{admin} {path}: {text}");
        }

        var services = await JsonAsync(await AdminAsync(g, "finance", HttpMethod.Get, "/admin/v1/services"));
        Assert.Equal("https://hooks.slack.com/…", services.EnumerateArray().Single(s => s.GetProperty("id").GetString() == "support")
            .GetProperty("owners").GetProperty("technical").GetProperty("webhook").GetString());
        Assert.Contains("https://hooks.slack.com/…", (await JsonAsync(await AdminAsync(g, "finance", HttpMethod.Get, "/admin/v1/policy"))).GetProperty("yaml").GetString()!,
            StringComparison.Ordinal);

        // Those who may name owners (and so set the webhook) see it whole.
        Assert.Contains(slack, (await JsonAsync(await AdminAsync(g, "root", HttpMethod.Get, "/admin/v1/services/support"))).GetRawText(), StringComparison.Ordinal);
        Assert.Contains(slack, (await JsonAsync(await AdminAsync(g, "support-owner", HttpMethod.Get, "/admin/v1/policy"))).GetProperty("yaml").GetString()!,
            StringComparison.Ordinal);

        var failed = g.Logs.Lines.Where(l => l.Contains("not delivered", StringComparison.Ordinal)).ToList();
        Assert.Contains(failed, l => l.Contains("to https://hooks.slack.com/… not delivered", StringComparison.Ordinal));
        Assert.DoesNotContain(g.Logs.Lines, Secret);
    }
}
