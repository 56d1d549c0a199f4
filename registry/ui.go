package registry

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"html/template"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The status page: read-only HTML from html/template with inline SVG
// charts, one stylesheet and no JavaScript. It refreshes itself every 30
// seconds (meta refresh).
//
// Access takes the admin token: sent as Authorization: Bearer (curl), or
// typed once into the login form, or through a one-time link from POST
// /admin/v1/ui-tickets (`regcache status --ui-link`); the last two set a
// session cookie (HttpOnly, SameSite=Strict, Secure over TLS) signed with
// a key made at start, valid for sessionLifetime or until regcache
// restarts. A link is valid once, for ticketLifetime.
//
//go:embed ui
var uiFiles embed.FS

const (
	sessionCookie   = "regcache_session"
	sessionLifetime = 12 * time.Hour
	ticketLifetime  = time.Minute
	// refreshSeconds is how often the page reloads itself.
	refreshSeconds = 30
	// maxLoginBody bounds the login form.
	maxLoginBody = 4 << 10
	// maxTickets bounds the unused one-time links kept.
	maxTickets = 1000
)

// statusPage serves /ui/.
type statusPage struct {
	s     *server
	key   []byte // signs session cookies
	pages *template.Template
	css   []byte
	now   func() time.Time

	mu      sync.Mutex
	tickets map[string]time.Time // one-time login tickets and their expiry
}

func newStatusPage(s *server) *statusPage {
	key := make([]byte, 32)
	rand.Read(key) // never fails (crypto/rand panics rather)
	css, _ := uiFiles.ReadFile("ui/style.css")
	pages := template.Must(template.New("").Funcs(uiFuncs).ParseFS(uiFiles, "ui/*.html"))
	return &statusPage{s: s, key: key, pages: pages, css: css, now: time.Now, tickets: map[string]time.Time{}}
}

func (p *statusPage) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET /ui/", p.page)
	mux.HandleFunc("GET /ui/style.css", p.style)
	mux.HandleFunc("POST /ui/login", p.login)
	mux.HandleFunc("GET /ui/login", p.ticketLogin)
	mux.HandleFunc("POST /ui/logout", p.logout)
	mux.Handle("POST /admin/v1/ui-tickets", p.s.admin(p.newTicket))
}

// headers are those of every HTML answer: nothing but this origin's
// stylesheet may load, no framing, no caching of the figures.
func headers(w http.ResponseWriter) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
}

func (p *statusPage) style(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/css; charset=utf-8")
	w.Header().Set("Cache-Control", "max-age=300")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Write(p.css)
}

// page renders the status page, or the login form to a visitor without
// the token or a session.
func (p *statusPage) page(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/ui/" {
		headers(w)
		w.WriteHeader(http.StatusNotFound)
		p.render(w, "login.html", loginView{Message: "No such page: the status page is at /ui/."})
		return
	}
	if !p.authorized(r) {
		p.loginForm(w, http.StatusUnauthorized, "")
		return
	}
	v := newStatusView(p.s.Status.Status(r.Context()))
	headers(w)
	p.render(w, "status.html", v)
}

// render executes a template into a buffer first, so that a failure does
// not leave half a page.
func (p *statusPage) render(w http.ResponseWriter, name string, data any) {
	var buf bytes.Buffer
	if err := p.pages.ExecuteTemplate(&buf, name, data); err != nil {
		p.s.Log.Error("status page", "template", name, "err", err)
		http.Error(w, "the status page could not be rendered: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Write(buf.Bytes())
}

type loginView struct {
	Message string
	Refresh int
}

func (p *statusPage) loginForm(w http.ResponseWriter, code int, msg string) {
	headers(w)
	w.WriteHeader(code)
	p.render(w, "login.html", loginView{Message: msg})
}

// authorized reports whether r carries the admin token or a valid session.
func (p *statusPage) authorized(r *http.Request) bool {
	if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return p.tokenOK(tok)
	}
	c, err := r.Cookie(sessionCookie)
	return err == nil && p.sessionOK(c.Value)
}

func (p *statusPage) tokenOK(tok string) bool {
	return subtle.ConstantTimeCompare([]byte(tok), []byte(p.s.AdminToken)) == 1
}

// sign returns the signature of a session expiring at exp.
func (p *statusPage) sign(exp string) string {
	mac := hmac.New(sha256.New, p.key)
	mac.Write([]byte("regcache status page session " + exp))
	return hex.EncodeToString(mac.Sum(nil))
}

// sessionOK checks a cookie value "<expiry unix>.<signature>".
func (p *statusPage) sessionOK(v string) bool {
	exp, sig, ok := strings.Cut(v, ".")
	if !ok || !hmac.Equal([]byte(sig), []byte(p.sign(exp))) {
		return false
	}
	unix, err := strconv.ParseInt(exp, 10, 64)
	return err == nil && p.now().Before(time.Unix(unix, 0))
}

// startSession sets the session cookie and sends the browser to the page.
func (p *statusPage) startSession(w http.ResponseWriter, r *http.Request) {
	exp := strconv.FormatInt(p.now().Add(sessionLifetime).Unix(), 10)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: exp + "." + p.sign(exp), Path: "/ui/",
		MaxAge: int(sessionLifetime.Seconds()), HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	p.s.Log.InfoContext(r.Context(), "status page session started", "remote", r.RemoteAddr)
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
}

// login takes the token typed into the form.
func (p *statusPage) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginBody)
	if err := r.ParseForm(); err != nil {
		p.loginForm(w, http.StatusBadRequest, "The form could not be read: "+err.Error())
		return
	}
	if !p.tokenOK(strings.TrimSpace(r.PostForm.Get("token"))) {
		p.s.Log.WarnContext(r.Context(), "status page login refused: wrong admin token", "remote", r.RemoteAddr)
		p.loginForm(w, http.StatusUnauthorized, "That is not the admin token. It is in <data-dir>/admin.token, or the file --admin-token-file names.")
		return
	}
	p.startSession(w, r)
}

// ticketLogin takes a one-time link.
func (p *statusPage) ticketLogin(w http.ResponseWriter, r *http.Request) {
	t := r.URL.Query().Get("ticket")
	p.mu.Lock()
	exp, ok := p.tickets[t]
	delete(p.tickets, t)
	p.mu.Unlock()
	if !ok || !p.now().Before(exp) {
		p.loginForm(w, http.StatusUnauthorized, "This link has expired or was used already: links open the page once, within a minute. Ask for another (regcache status --ui-link) or log in with the admin token.")
		return
	}
	p.startSession(w, r)
}

func (p *statusPage) logout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/ui/", MaxAge: -1, HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/ui/", http.StatusSeeOther)
}

// UITicket is the answer of POST /admin/v1/ui-tickets.
type UITicket struct {
	// Path opens the status page once, on this server, within a minute.
	Path      string    `json:"path"`
	ExpiresAt time.Time `json:"expiresAt"`
}

func (p *statusPage) newTicket(w http.ResponseWriter, r *http.Request) error {
	b := make([]byte, 24)
	rand.Read(b)
	t := hex.EncodeToString(b)
	now := p.now()
	exp := now.Add(ticketLifetime)
	p.mu.Lock()
	for k, e := range p.tickets {
		// Expired ones go, and some unused one when too many are left.
		if !now.Before(e) || len(p.tickets) >= maxTickets {
			delete(p.tickets, k)
		}
	}
	p.tickets[t] = exp
	p.mu.Unlock()
	writeJSON(w, http.StatusCreated, UITicket{Path: "/ui/login?ticket=" + t, ExpiresAt: exp.UTC()})
	return nil
}
