package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// manifestAccept lists every manifest media type regcache stores and serves.
var manifestAccept = strings.Join([]string{
	"application/vnd.oci.image.index.v1+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.docker.distribution.manifest.v2+json",
}, ", ")

// errorBodyLimit caps how much of an upstream error body is read.
const errorBodyLimit = 64 << 10

// upstreamRepo is one repository on one upstream, reached with one
// credential set: the unit of authentication (bearer tokens are scoped to
// a repository).
type upstreamRepo struct {
	endpoint *url.URL
	path     string // repository path on the upstream, e.g. library/ubuntu
	credSet  string
	host     string // login server, e.g. docker.io
	tagTTL   time.Duration
	rule     string // the cache rule that maps it
	// The rule's other freshness settings (freshness.go).
	pinned        bool          // tagTTL never: no revalidation
	maxStale      time.Duration // 0: serve stale without limit
	forgetDeleted bool          // a tag deleted upstream is removed here
}

func (u upstreamRepo) key() string { return u.endpoint.String() + "/" + u.path + "#" + u.credSet }

func (u upstreamRepo) url(kind, ref string) string {
	return u.endpoint.String() + "/v2/" + u.path + "/" + kind + "/" + ref
}

// registryFor returns the go-containerregistry registry of an endpoint and
// the transport to reach it with. go-containerregistry talks plain HTTP to
// any loopback or private address (it pings http:// when https fails, then
// sends every request and the token exchange, credentials included, over
// http); regcache speaks http only to an endpoint the operator configured
// as http://, so the transport refuses plain HTTP otherwise.
func registryFor(endpoint *url.URL, loginServer string, base http.RoundTripper) (name.Registry, http.RoundTripper, error) {
	var opts []name.Option
	if endpoint.Scheme == "http" {
		opts = append(opts, name.Insecure)
	} else {
		base = httpsOnly{next: base, loginServer: loginServer}
	}
	reg, err := name.NewRegistry(endpoint.Host, opts...)
	if err != nil {
		return name.Registry{}, nil, fmt.Errorf("upstream %s: %w", endpoint, err)
	}
	return reg, base, nil
}

// httpsOnly refuses plain-HTTP requests (a ping fallback, a token realm, a
// redirect) to an upstream whose endpoint is https.
type httpsOnly struct {
	next        http.RoundTripper
	loginServer string
}

func (h httpsOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "https" {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("refused plain %s to %s: upstream %s is reached over https unless its endpoint is configured as http:// (--upstream %s=http://%s)",
			req.URL.Scheme, req.URL.Host, h.loginServer, h.loginServer, req.URL.Host)
	}
	return h.next.RoundTrip(req)
}

// maxRedirects bounds the redirects of one upstream request.
const maxRedirects = 5

// checkRedirect is the redirect policy of upstream requests. A redirect on
// the upstream's own host is followed only to a manifest or blob of the
// same repository: the client authenticates to that host with the rule's
// credentials, which must never reach another repository. A redirect to
// another host (a blob download host such as a CDN or an object store) is
// followed; the authenticating transport sends credentials only to the
// upstream's host. A redirect from https to plain http is refused.
func (u upstreamRepo) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= maxRedirects {
		return fmt.Errorf("upstream %s: stopped after %d redirects", u.host, len(via))
	}
	if req.URL.Scheme != "https" && (via[0].URL.Scheme == "https" || req.URL.Scheme != "http") {
		return fmt.Errorf("upstream %s: refused a redirect from %s to %s", u.host, via[0].URL.Scheme, redact(req.URL.String()))
	}
	if !strings.EqualFold(req.URL.Host, u.endpoint.Host) {
		return nil
	}
	rest, ok := strings.CutPrefix(req.URL.EscapedPath(), "/v2/"+u.path+"/")
	kind, ref, _ := strings.Cut(rest, "/")
	if !ok || (kind != "blobs" && kind != "manifests") || ref == "" || strings.ContainsAny(ref, "/%") || ref == "." || ref == ".." {
		return fmt.Errorf("upstream %s: refused a redirect from repository %s to %s", u.host, u.path, redact(req.URL.Path))
	}
	return nil
}

// clients caches one authenticated http.Client per upstream repository,
// so the bearer-token handshake happens once, not per request.
type clients struct {
	base  http.RoundTripper // wrapped by ups's Transport
	creds Credentials
	ttl   time.Duration
	obs   Observer
	log   *slog.Logger
	ups   *Upstreams

	mu sync.Mutex
	m  map[string]cachedClient
}

type cachedClient struct {
	c       *http.Client
	created time.Time
	auth    authn.Authenticator // what c authenticates with
}

// get returns the client of u. The credential set is asked for its
// authenticator on every request (it caches resolved secrets itself): a
// set that turned unhealthy stops requests at once, and a client built
// with other credentials than the set hands out now (rotated, updated) is
// replaced. Credentials implementations return the same comparable
// authenticator while their values are unchanged.
func (cs *clients) get(ctx context.Context, u upstreamRepo) (*http.Client, error) {
	auth, err := cs.creds.Authenticator(ctx, u.credSet)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errCredentials, &credentialsError{set: u.credSet, err: err})
	}
	k := u.key()
	cs.mu.Lock()
	cc, ok := cs.m[k]
	cs.mu.Unlock()
	if ok && cc.auth == auth && time.Since(cc.created) < cs.ttl {
		return cc.c, nil
	}
	reg, base, err := registryFor(u.endpoint, u.host, cs.base)
	if err != nil {
		return nil, err
	}
	rt, err := transport.NewWithContext(ctx, reg, auth, base, []string{"repository:" + u.path + ":pull"})
	if err != nil {
		return nil, upstreamFailure(u.host, 0, "", fmt.Errorf("authenticate to %s for %s: %w", u.endpoint, u.path, err), err)
	}
	c := &http.Client{Transport: rt, CheckRedirect: u.checkRedirect}
	cs.mu.Lock()
	cs.m[k] = cachedClient{c: c, created: time.Now(), auth: auth}
	cs.mu.Unlock()
	return c, nil
}

// forget drops the cached client of u (after the upstream refused it).
func (cs *clients) forget(u upstreamRepo) {
	cs.mu.Lock()
	delete(cs.m, u.key())
	cs.mu.Unlock()
}

// do sends one request to the upstream repository; a non-2xx answer is
// returned as an error classified by status (the body is closed). When the
// upstream refuses a credential set's values, the set is told, its secrets
// are resolved again and the request is retried once, so a rotated secret
// is picked up without a failed pull.
func (cs *clients) do(ctx context.Context, u upstreamRepo, method, target string, header http.Header) (*http.Response, error) {
	// Offline, or waiting out a 429: nothing is sent, not even the
	// authentication handshake.
	if err := cs.ups.gate(u.endpoint.Host, u.host); err != nil {
		return nil, err
	}
	ctx = withCredentialSet(ctx, u.credSet)
	resp, err := cs.doOnce(ctx, u, method, target, header)
	if u.credSet == "" || !refused(err) {
		return resp, err
	}
	cs.refused(ctx, u, false)
	resp, err = cs.doOnce(ctx, u, method, target, header)
	if refused(err) {
		cs.refused(ctx, u, true)
		return nil, fmt.Errorf("credential set %q: upstream %s rejected the credentials: %w", u.credSet, u.host, err)
	}
	return resp, err
}

// ContextRefuser is a Credentials whose Refused takes the context of the
// request the upstream refused (its logs then carry the request's ID).
type ContextRefuser interface {
	RefusedContext(ctx context.Context, set, host string, final bool)
}

// refused tells the credential set of u that the upstream refused it.
func (cs *clients) refused(ctx context.Context, u upstreamRepo, final bool) {
	if r, ok := cs.creds.(ContextRefuser); ok {
		r.RefusedContext(ctx, u.credSet, u.host, final)
		return
	}
	cs.creds.Refused(u.credSet, u.host, final)
}

// refused reports an upstream 401 or 403 (not a set whose secrets could
// not be resolved, which the upstream never saw).
func refused(err error) bool {
	return (errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrDenied)) && !errors.Is(err, errCredentials)
}

func (cs *clients) doOnce(ctx context.Context, u upstreamRepo, method, target string, header http.Header) (*http.Response, error) {
	c, err := cs.get(ctx, u)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	start := time.Now()
	resp, err := c.Do(req)
	status := 0
	if err == nil {
		status = resp.StatusCode
	}
	d := time.Since(start)
	cs.obs.UpstreamRequest(u.host, method, status, d)
	cs.log.DebugContext(ctx, "upstream request", "upstream", u.host, "method", method, "url", redact(target),
		"status", status, "duration", d.Round(time.Microsecond))
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			uerr.URL = redact(uerr.URL)
		}
		return nil, upstreamFailure(u.host, 0, "", fmt.Errorf("%s %s: %w", method, redact(target), err), err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit))
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		cs.forget(u)
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 300 {
		msg = msg[:300] + "..."
	}
	return nil, upstreamFailure(u.host, resp.StatusCode, ociReason(body), fmt.Errorf("%s %s: upstream answered %s %s", method, redact(target), resp.Status, msg), nil)
}

// upstreamError is a failed upstream request. Its message, for the log,
// names the endpoint URL regcache used and the transport's detail; its
// public form, for clients, names the login server and the status only:
// endpoints are often internal mirrors or addresses.
type upstreamError struct {
	host   string // login server, e.g. docker.io
	status int    // 0: no answer
	reason string // the upstream's own error code and message, if it sent one
	err    error
}

func (e *upstreamError) Error() string { return e.err.Error() }
func (e *upstreamError) Unwrap() error { return e.err }

func (e *upstreamError) public() string {
	if e.status == 0 {
		return "upstream " + e.host + " could not be reached"
	}
	s := fmt.Sprintf("upstream %s answered %d %s", e.host, e.status, http.StatusText(e.status))
	if e.reason != "" {
		s += ": " + e.reason
	}
	return s
}

// upstreamFailure classifies a failed request to login server host: by
// status, or by the status a go-containerregistry transport error carries.
func upstreamFailure(host string, status int, reason string, detail, cause error) error {
	var terr *transport.Error
	if status == 0 && errors.As(cause, &terr) {
		status = terr.StatusCode
		if len(terr.Errors) > 0 {
			reason = string(terr.Errors[0].Code) + ": " + terr.Errors[0].Message
		}
	}
	return classify(&upstreamError{host: host, status: status, reason: reason, err: detail}, status)
}

// ociReason is "CODE: message" of the first error of a distribution-spec
// error body, or "" when the body is not one.
func ociReason(body []byte) string {
	var e struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if json.Unmarshal(body, &e) != nil || len(e.Errors) == 0 || e.Errors[0].Code == "" {
		return ""
	}
	r := e.Errors[0].Code
	if m := e.Errors[0].Message; m != "" {
		r += ": " + m
	}
	if len(r) > 200 {
		r = r[:200] + "..."
	}
	return r
}

// credentialsError is a credential set that could not be used. Its
// message, for the log, has the reason (a Vault path and address, a file);
// clients see that the set is unusable and where the operator looks.
type credentialsError struct {
	set string
	err error
}

func (e *credentialsError) Error() string { return e.err.Error() }
func (e *credentialsError) Unwrap() error { return e.err }

func (e *credentialsError) public() string {
	return fmt.Sprintf("credential set %q cannot be used: an operator sees why with regcache credential-set show -n %s", e.set, e.set)
}

// PublicMessage is err's message for a client: failed upstream requests
// appear as the login server and the status, and unusable credential sets
// as their name, without the endpoint URLs, addresses, secret locations
// and transport details the log keeps.
func PublicMessage(err error) string {
	msg := err.Error()
	var walk func(error)
	walk = func(e error) {
		switch x := e.(type) {
		case nil:
			return
		case interface{ public() string }:
			msg = strings.ReplaceAll(msg, e.Error(), x.public())
			return
		case interface{ Unwrap() []error }:
			for _, c := range x.Unwrap() {
				walk(c)
			}
		case interface{ Unwrap() error }:
			walk(x.Unwrap())
		}
	}
	walk(err)
	return msg
}

// errCredentials marks a credential set whose secrets could not be
// resolved; it is reported as UNAUTHORIZED without asking the upstream.
var errCredentials = fmt.Errorf("%w: credentials unavailable", ErrUnauthorized)

// errNotFound marks an upstream 404; callers turn it into the specific
// MANIFEST_UNKNOWN or BLOB_UNKNOWN.
var errNotFound = errors.New("not found upstream")

// classify wraps err with the sentinel matching an upstream status (or
// with ErrUnavailable for transport failures).
func classify(err error, status int) error {
	switch status {
	case http.StatusNotFound:
		return fmt.Errorf("%w: %w", errNotFound, err)
	case http.StatusUnauthorized:
		return fmt.Errorf("%w: %w", ErrUnauthorized, err)
	case http.StatusForbidden:
		return fmt.Errorf("%w: %w", ErrDenied, err)
	case http.StatusTooManyRequests:
		return fmt.Errorf("%w: %w", ErrTooManyRequests, err)
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// redact drops any query string (pre-signed CDN URLs carry tokens there).
func redact(target string) string {
	if i := strings.IndexByte(target, '?'); i >= 0 {
		return target[:i] + "?..."
	}
	return target
}

// VerifyCredentials checks auth against the login server's endpoint: the
// authentication handshake plus a GET /v2/, which a registry answers 401
// when it does not accept the credentials. Credential sets use it for their
// health.
func VerifyCredentials(ctx context.Context, endpoints *Endpoints, base http.RoundTripper, loginServer string, auth authn.Authenticator) error {
	ep := endpoints.Resolve(loginServer)
	reg, base, err := registryFor(ep, loginServer, base)
	if err != nil {
		return err
	}
	rt, err := transport.NewWithContext(ctx, reg, auth, base, nil)
	if err != nil {
		return upstreamFailure(loginServer, 0, "", fmt.Errorf("upstream %s (%s): %w", loginServer, ep, err), err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.String()+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := (&http.Client{Transport: rt}).Do(req)
	if err != nil {
		return upstreamFailure(loginServer, 0, "", fmt.Errorf("upstream %s (%s): %w", loginServer, ep, err), err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return upstreamFailure(loginServer, resp.StatusCode, "", fmt.Errorf("upstream %s answered %s to GET /v2/", loginServer, resp.Status), nil)
	}
	return nil
}
