package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"github.com/regcache/regcache/auth"
)

// Gate decides what a request to the distribution API may do
// (auth.Authority).
type Gate interface {
	// Service is the audience of tokens, the challenge's service.
	Service() string
	// Authorize checks a request's bearer token ("" for none) for need:
	// auth.ErrUnauthenticated, auth.ErrInsufficientScope or
	// auth.ErrDenied when it falls short.
	Authorize(token string, need []auth.Access) (auth.Identity, error)
}

// Tokens logs clients in and issues their tokens (auth.Authority).
type Tokens interface {
	// Login checks a password; from is rate-limited on failures.
	Login(from netip.Addr, user, password string) (auth.Identity, error)
	// Refresh checks a refresh token.
	Refresh(from netip.Addr, refreshToken string) (auth.Identity, error)
	// Issue signs a token granting what the rules allow of want.
	Issue(id auth.Identity, want []auth.Access, offline bool) (auth.Grant, error)
}

// ClientAuth authenticates and authorises the clients of the distribution
// API: the gate in front of /v2/ and the token endpoint /v2/token.
type ClientAuth interface {
	Gate
	Tokens
}

// ociRoutes serves the distribution API: to anyone when no ClientAuth is
// configured; otherwise behind the gate, with the token endpoint.
func (s *server) ociRoutes(mux *http.ServeMux) {
	var oci http.Handler = http.HandlerFunc(s.oci)
	if s.ClientAuth != nil {
		// The gate routes each request once and authorises the routed
		// name; the handler's Route answers the same from the context,
		// so that what is served is what was authorised even if a rule
		// changes in between.
		s.Backend = pinnedRoutes{s.Backend}
		oci = s.gate(oci)
		mux.HandleFunc("GET /v2/token", s.token)
		mux.HandleFunc("POST /v2/token", s.token)
	}
	mux.Handle("/v2/", oci)
	mux.Handle("/v2", oci)
	s.ociHandler = oci
}

// gate authorises every request of the distribution API before the
// handler sees it. What a request needs follows from its parsed path and
// method: GET and HEAD pull, any other method pushes; a cross-repository
// mount (POST .../blobs/uploads/?mount=<digest>&from=<repo>) also pulls
// from; /v2/ needs a valid token of anyone; /v2/_catalog needs
// registry:catalog:*. Repositories are authorised by their routed local
// name: what is actually served after containerd's ns parameter or a
// path-prefixed mirror name were resolved, the name access rules speak
// of. A path that does not parse, or a name that does not route, goes to
// the handler, which refuses it, once the client is logged in.
func (s *server) gate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		need, pins, err := s.needs(r)
		if err != nil {
			// The path does not parse or the name does not route (an
			// unknown ns): the handler answers that, to a logged-in
			// client only.
			need, pins = nil, nil
		}
		token := bearerToken(r)
		id, aerr := s.ClientAuth.Authorize(token, need)
		if aerr != nil {
			w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
			writeOCIError(w, r, s.Log, s.challenge(r, token, need, aerr))
			return
		}
		if sw, ok := w.(*statusWriter); ok {
			sw.user = id.Name
		}
		if len(pins) > 0 {
			r = r.WithContext(context.WithValue(r.Context(), pinnedKey{}, pins))
		}
		next.ServeHTTP(w, r)
	})
}

// catalogPath is the catalog endpoint, which parsePath does not know.
const catalogPath = "/v2/_catalog"

// needs returns what a request needs and the routes it was decided on.
func (s *server) needs(r *http.Request) ([]auth.Access, []pinnedRoute, error) {
	if r.URL.Path == catalogPath {
		return []auth.Access{{Type: auth.TypeRegistry, Name: auth.Catalog, Actions: []string{auth.ActionAll}}}, nil, nil
	}
	p, err := parsePath(r.URL.Path)
	if err != nil || p.kind == kindBase {
		return nil, nil, err
	}
	action := auth.ActionPush
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		action = auth.ActionPull
	}
	q := r.URL.Query()
	ns := q.Get("ns")
	local, err := s.Backend.Route(r.Context(), p.name, ns)
	if err != nil {
		return nil, nil, err
	}
	need := []auth.Access{auth.Repository(local, action)}
	if action == auth.ActionPush {
		need[0].Actions = []string{auth.ActionPull, auth.ActionPush} // as docker asks: push implies pull
	}
	pins := []pinnedRoute{{name: p.name, ns: ns, local: local}}
	if from := q.Get("from"); p.kind == kindUpload && r.Method == http.MethodPost && q.Get("mount") != "" && from != "" {
		fromLocal, err := s.Backend.Route(r.Context(), from, ns)
		if err != nil {
			return nil, nil, err
		}
		need = append(need, auth.Repository(fromLocal, auth.ActionPull))
		pins = append(pins, pinnedRoute{name: from, ns: ns, local: fromLocal})
	}
	return need, pins, nil
}

// bearerToken returns the request's bearer token, or "".
func bearerToken(r *http.Request) string {
	scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return strings.TrimSpace(tok)
}

// challengeError is a refusal that tells the client how to authenticate:
// a 401 carries its challenge instead of the Basic one of an upstream's
// refusal (see writeOCIError).
type challengeError struct {
	err       error
	challenge string
}

func (e *challengeError) Error() string { return e.err.Error() }
func (e *challengeError) Unwrap() error { return e.err }

// challenge wraps a refusal of the gate with the Bearer challenge of the
// token specification
// (https://distribution.github.io/distribution/spec/auth/token/#how-to-authenticate):
// the realm, the service, the scope the request needs and, for a token
// that was presented, why it was not enough (RFC 6750's error).
func (s *server) challenge(r *http.Request, token string, need []auth.Access, err error) error {
	if errors.Is(err, auth.ErrDenied) {
		return err // 403: another token would not help
	}
	c := fmt.Sprintf("Bearer realm=%q,service=%q", s.realm(r), s.ClientAuth.Service())
	if len(need) > 0 {
		c += fmt.Sprintf(",scope=%q", scopeString(need))
	}
	switch {
	case errors.Is(err, auth.ErrInsufficientScope):
		c += `,error="insufficient_scope"`
	case errors.Is(err, auth.ErrInvalidToken):
		c += `,error="invalid_token"`
	}
	if token == "" {
		err = fmt.Errorf("%w; log in first (docker login %s)", err, r.Host)
	}
	return &challengeError{err: err, challenge: c}
}

// realm is the token endpoint's URL: the configured one (for a server
// behind a proxy that changes scheme or host), else this server's as the
// client reached it.
func (s *server) realm(r *http.Request) string {
	if s.AuthRealm != "" {
		return s.AuthRealm
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host + "/v2/token"
}

// pinnedRoute is a route the gate authorised.
type pinnedRoute struct{ name, ns, local string }

type pinnedKey struct{}

// pinnedRoutes answers Route with the routes the gate authorised for the
// request, and asks the Backend for any other.
type pinnedRoutes struct{ Backend }

// Route returns the pinned route of (name, ns), if any.
func (b pinnedRoutes) Route(ctx context.Context, name, ns string) (string, error) {
	pins, _ := ctx.Value(pinnedKey{}).([]pinnedRoute)
	for _, p := range pins {
		if p.name == name && p.ns == ns {
			return p.local, nil
		}
	}
	return b.Backend.Route(ctx, name, ns)
}
