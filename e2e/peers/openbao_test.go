package peers

import (
	"slices"
	"testing"

	"github.com/hashicorp/vault/api"
)

// TestStartVault: the server answers with the test's token; what the
// helpers create works, is removed when the test that created it ends, and
// the tokens handed out are listed.
func TestStartVault(t *testing.T) {
	t.Parallel()
	v := StartVault(t)
	ctx := t.Context()
	var path, policy, token, loginToken string
	t.Run("create", func(t *testing.T) {
		path = v.PutSecret(t, "app", map[string]any{"password": "p-" + v.Prefix})
		policy = v.PutPolicy(t, "app", `path "secret/data/`+path+`" { capabilities = ["read"] }`)
		token = v.NewToken(t, &api.TokenCreateRequest{Policies: []string{policy}, TTL: "10m"})
		s, err := v.Client(t, token).KVv2("secret").Get(ctx, path)
		if err != nil || s.Data["password"] != "p-"+v.Prefix {
			t.Fatalf("read %s with a token of policy %s: %v", path, policy, err)
		}
		mount, roleID, secretID := v.AppRole(t, "app", map[string]any{"token_policies": policy, "token_ttl": "10m"})
		// As a client logs in: without a token.
		login, err := v.Client(t, "").Logical().WriteWithContext(ctx, "auth/"+mount+"/login", map[string]any{"role_id": roleID, "secret_id": secretID})
		if err != nil || login.Auth == nil {
			t.Fatalf("AppRole login at %s: %v", mount, err)
		}
		loginToken = login.Auth.ClientToken
		if v.auditLog != "" {
			issued := v.IssuedTokens(t)
			if !slices.Contains(issued, token) || !slices.Contains(issued, loginToken) || slices.Contains(issued, v.Token) {
				t.Errorf("IssuedTokens lists %d tokens: want the created and the login token, not the root token", len(issued))
			}
		}
	})
	// The subtest's secret, policy and token are gone.
	if s, err := v.Admin.KVv2("secret").GetMetadata(ctx, path); err == nil {
		t.Errorf("secret %s still exists after the test that wrote it: %+v", path, s)
	}
	if p, err := v.Admin.Sys().GetPolicyWithContext(ctx, policy); err != nil || p != "" {
		t.Errorf("policy %s still exists after the test that wrote it (%v)", policy, err)
	}
	if _, err := v.Admin.Auth().Token().LookupWithContext(ctx, token); err == nil {
		t.Errorf("the token created in the subtest was not revoked")
	}
	// The AppRole mount lasts as long as the Vault's test.
	if _, err := v.Admin.Auth().Token().LookupWithContext(ctx, loginToken); err != nil {
		t.Errorf("the AppRole login token was revoked before the end of the test: %v", err)
	}
}
