package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/regcache/regcache/auth"
)

// errTokenRequest: a token request regcache cannot answer as asked (an
// unknown grant type, another service, a missing field).
var errTokenRequest = errors.New("invalid token request")

// maxTokenForm bounds the body of an OAuth2 token request.
const maxTokenForm = 64 << 10

// loginChallenge is the challenge of a refused login at the token
// endpoint: the client sends Basic credentials there.
const loginChallenge = `Basic realm="regcache token endpoint"`

// tokenResponse is the body of an issued token, with the fields of both
// flows: docker reads token, OAuth2 clients access_token.
type tokenResponse struct {
	Token        string `json:"token"`
	AccessToken  string `json:"access_token"`
	ExpiresIn    int    `json:"expires_in"`
	IssuedAt     string `json:"issued_at"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
}

// token serves the token endpoint, /v2/token.
//
// GET, with Basic credentials or none (an anonymous token):
// https://distribution.github.io/distribution/spec/auth/token/#requesting-a-token
// (offline_token=true also returns a refresh token, which docker login
// keeps instead of the password).
//
// POST, the OAuth2 form containerd and docker (with a refresh token) use,
// grant_type password or refresh_token:
// https://distribution.github.io/distribution/spec/auth/oauth/
//
// The token grants what was asked in scope parameters and is allowed,
// possibly less or nothing. Repository names are routed as a request
// without ns would be (a path-prefixed mirror name becomes the local
// repository), since the gate authorises routed names. Failed logins are
// rate-limited per client address: 429 with Retry-After.
func (s *server) token(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	err := s.serveToken(w, r)
	if err == nil {
		return
	}
	var re *auth.RetryError
	if errors.As(err, &re) {
		h.Set("Retry-After", strconv.Itoa(int(math.Ceil(re.RetryAfter.Seconds()))))
	}
	if errors.Is(err, auth.ErrUnauthenticated) {
		err = &challengeError{err: err, challenge: loginChallenge}
	}
	writeOCIError(w, r, s.Log, err)
}

func (s *server) serveToken(w http.ResponseWriter, r *http.Request) error {
	from := clientAddr(r, s.TrustedProxies)
	params := r.URL.Query()
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, maxTokenForm)
		if err := r.ParseForm(); err != nil {
			return fmt.Errorf("%w: the form: %v", errTokenRequest, err)
		}
		params = r.PostForm
	}
	if svc := params.Get("service"); svc != "" && svc != s.ClientAuth.Service() {
		return fmt.Errorf("%w: service %q: this registry issues tokens for %q", errTokenRequest, svc, s.ClientAuth.Service())
	}
	var id auth.Identity
	var err error
	offline := params.Get("offline_token") == "true"
	if r.Method == http.MethodPost {
		offline = params.Get("access_type") == "offline"
		switch grant := params.Get("grant_type"); grant {
		case "password":
			if params.Get("username") == "" {
				return fmt.Errorf("%w: grant_type password needs username and password", errTokenRequest)
			}
			id, err = s.ClientAuth.Login(from, params.Get("username"), params.Get("password"))
		case "refresh_token":
			if params.Get("refresh_token") == "" {
				return fmt.Errorf("%w: grant_type refresh_token needs refresh_token", errTokenRequest)
			}
			id, err = s.ClientAuth.Refresh(from, params.Get("refresh_token"))
			offline = false // the client keeps the refresh token it has
		default:
			return fmt.Errorf("%w: grant_type %q: want password or refresh_token", errTokenRequest, grant)
		}
	} else if user, pass, ok := r.BasicAuth(); ok {
		id, err = s.ClientAuth.Login(from, user, pass)
	}
	if err != nil {
		return err
	}
	g, err := s.ClientAuth.Issue(id, s.routeScopes(r.Context(), auth.ParseScopes(params["scope"]...)), offline)
	if err != nil {
		return err
	}
	s.Log.Debug("token issued", "user", id.Name, "from", from.String(), "access", scopeString(g.Access))
	resp := tokenResponse{Token: g.Token, AccessToken: g.Token, ExpiresIn: int(g.TTL / time.Second),
		IssuedAt: g.IssuedAt.UTC().Format(time.RFC3339), RefreshToken: g.RefreshToken}
	if r.Method == http.MethodPost {
		resp.Scope = scopeString(g.Access)
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(resp)
}

// routeScopes replaces the repository names of scopes with the local
// repositories they route to; a name that does not route is dropped.
func (s *server) routeScopes(ctx context.Context, scopes []auth.Access) []auth.Access {
	out := scopes[:0]
	for _, a := range scopes {
		if a.Type == auth.TypeRepository {
			local, err := s.Backend.Route(ctx, a.Name, "")
			if err != nil {
				continue
			}
			a.Name = local
		}
		out = append(out, a)
	}
	return out
}

// scopeString joins access as scope parameters do: space-separated.
func scopeString(access []auth.Access) string {
	scopes := make([]string, len(access))
	for i, a := range access {
		scopes[i] = a.String()
	}
	return strings.Join(scopes, " ")
}
