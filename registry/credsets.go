package registry

import (
	"context"
	"fmt"
	"net/http"

	"github.com/regcache/regcache/credentials"
)

// CredentialSets manages credential sets (credentials.Manager).
type CredentialSets interface {
	List(ctx context.Context) []credentials.Set
	Get(ctx context.Context, name string) (credentials.Set, error)
	Create(ctx context.Context, s credentials.Set) (credentials.Set, error)
	Update(ctx context.Context, name, usernameRef, passwordRef string) (credentials.Set, error)
	Delete(ctx context.Context, name string) error
	Policy(ctx context.Context, name string) (string, error)
}

// Credential sets admin API, JSON over HTTP, guarded by the admin token.
// Bodies carry secret references, never secret values:
//
//	GET    /admin/v1/credential-sets                list (with health)
//	POST   /admin/v1/credential-sets                create (body: name, loginServer, usernameSecretIdentifier, passwordSecretIdentifier)
//	GET    /admin/v1/credential-sets/{name}         show
//	PATCH  /admin/v1/credential-sets/{name}         update (body: usernameSecretIdentifier and/or passwordSecretIdentifier)
//	DELETE /admin/v1/credential-sets/{name}         delete (409 naming the rules while rules use it)
//	GET    /admin/v1/credential-sets/{name}/policy  least-privilege Vault policy, text/plain HCL
//	GET    /admin/v1/credential-sets-policy         the same for every set
func (s *server) credentialSetRoutes(mux *http.ServeMux) {
	if s.CredentialSets == nil {
		return // the /admin/ catch-all answers 404
	}
	mux.Handle("GET /admin/v1/credential-sets", s.admin(s.listCredentialSets))
	mux.Handle("POST /admin/v1/credential-sets", s.admin(s.createCredentialSet))
	mux.Handle("GET /admin/v1/credential-sets/{name}", s.admin(s.showCredentialSet))
	mux.Handle("PATCH /admin/v1/credential-sets/{name}", s.admin(s.updateCredentialSet))
	mux.Handle("DELETE /admin/v1/credential-sets/{name}", s.admin(s.deleteCredentialSet))
	mux.Handle("GET /admin/v1/credential-sets/{name}/policy", s.admin(s.credentialSetPolicy))
	mux.Handle("GET /admin/v1/credential-sets-policy", s.admin(s.credentialSetPolicy))
}

func (s *server) listCredentialSets(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, s.CredentialSets.List(r.Context()))
	return nil
}

func (s *server) showCredentialSet(w http.ResponseWriter, r *http.Request) error {
	set, err := s.CredentialSets.Get(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, set)
	return nil
}

func (s *server) createCredentialSet(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Name        string `json:"name"`
		LoginServer string `json:"loginServer"`
		Username    string `json:"usernameSecretIdentifier"`
		Password    string `json:"passwordSecretIdentifier"`
	}
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	set, err := s.CredentialSets.Create(r.Context(), credentials.Set{Name: in.Name, LoginServer: in.LoginServer, UsernameSecretRef: in.Username, PasswordSecretRef: in.Password})
	if err != nil {
		return err
	}
	s.audit(r, "credential-set.create", set.Name, "loginServer", set.LoginServer,
		"usernameSecretIdentifier", set.UsernameSecretRef, "passwordSecretIdentifier", set.PasswordSecretRef)
	writeJSON(w, http.StatusCreated, set)
	return nil
}

func (s *server) updateCredentialSet(w http.ResponseWriter, r *http.Request) error {
	var in struct {
		Username string `json:"usernameSecretIdentifier"`
		Password string `json:"passwordSecretIdentifier"`
	}
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	if in.Username == "" && in.Password == "" {
		return fmt.Errorf(`%w: nothing to update: send {"usernameSecretIdentifier": "<ref>"} and/or {"passwordSecretIdentifier": "<ref>"}`, errBadRequest)
	}
	set, err := s.CredentialSets.Update(r.Context(), r.PathValue("name"), in.Username, in.Password)
	if err != nil {
		return err
	}
	s.audit(r, "credential-set.update", set.Name, changedFields("usernameSecretIdentifier", nonEmpty(set.UsernameSecretRef, in.Username),
		"passwordSecretIdentifier", nonEmpty(set.PasswordSecretRef, in.Password))...)
	writeJSON(w, http.StatusOK, set)
	return nil
}

func (s *server) deleteCredentialSet(w http.ResponseWriter, r *http.Request) error {
	if err := s.CredentialSets.Delete(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	s.audit(r, "credential-set.delete", r.PathValue("name"))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// credentialSetPolicy answers the Vault policy (HCL) granting read on
// exactly the KV v2 secrets the set (or every set) references.
func (s *server) credentialSetPolicy(w http.ResponseWriter, r *http.Request) error {
	p, err := s.CredentialSets.Policy(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte(p))
	return nil
}
