package registry

import (
	"log/slog"
	"net/http"
)

// audit logs one change made through the admin API as an audit event, a
// line of its own to filter on (msg="audit"): what changed (event such as
// "cache-rule.create", the object's name, and the changed fields, which
// hold secret references and never secret values), when (the record's
// time) and from where (the connection's remote address, and the
// X-Forwarded-For chain only when that address is a trusted proxy: anyone
// else could write any address there).
func (s *server) audit(r *http.Request, event, name string, changed ...any) {
	attrs := []any{"event", event, "name", name}
	if len(changed) > 0 {
		attrs = append(attrs, slog.Group("changed", changed...))
	}
	attrs = append(attrs, "remote", r.RemoteAddr)
	if fwd := forwardedFor(r, s.TrustedProxies); fwd != "" {
		attrs = append(attrs, "forwardedFor", fwd)
	}
	s.Log.Info("audit", attrs...)
}

// changedFields returns the key-value pairs of kv (key, *string, ...)
// whose value was sent (not nil), for audit.
func changedFields(kv ...any) []any {
	var out []any
	for i := 0; i+1 < len(kv); i += 2 {
		if v, ok := kv[i+1].(*string); ok && v != nil {
			out = append(out, kv[i], *v)
		}
	}
	return out
}

// nonEmpty returns &stored when sent is not empty: a field of a PATCH
// that was sent (an empty one keeps the stored value), as changedFields
// takes it.
func nonEmpty(stored, sent string) *string {
	if sent == "" {
		return nil
	}
	return &stored
}
