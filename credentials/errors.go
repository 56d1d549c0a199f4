package credentials

import (
	"errors"
	"fmt"
	"strings"
)

// Sentinel errors of the credentials package; test with errors.Is. Error
// messages name references, paths and variable names, never secret values.
var (
	// ErrSecretNotFound: the referenced secret, file, variable or field
	// does not exist.
	ErrSecretNotFound = errors.New("secret not found")
	// ErrPermissionDenied: the backend refused to hand out the secret.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrInvalidSecret: the secret exists but is not usable (empty, not a
	// string, too large).
	ErrInvalidSecret = errors.New("secret unusable")
	// ErrBackendUnavailable: the secrets backend is not configured or
	// could not be reached.
	ErrBackendUnavailable = errors.New("secrets backend unavailable")

	// ErrSetNotFound: no credential set has that name.
	ErrSetNotFound = errors.New("credential set not found")
	// ErrExists: a credential set with that name exists already.
	ErrExists = errors.New("credential set exists")
	// ErrReadOnly: the set is declared in the config file.
	ErrReadOnly = errors.New("credential set is declared in the config file and read-only through the API")
	// ErrNoVaultSecrets: a Vault policy was asked for sets that reference
	// no vault:// secret.
	ErrNoVaultSecrets = errors.New("no vault:// reference")
	// ErrInUse: cache rules use the set.
	ErrInUse = errors.New("credential set in use")
	// ErrTooManySets: creating the set would exceed MaxSets.
	ErrTooManySets = errors.New("too many credential sets")
)

// InUseError refuses the deletion of a set that cache rules use.
type InUseError struct {
	Set   string
	Rules []string
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("credential set %q is used by cache rule(s) %s: detach it first (regcache cache update -n RULE --remove-cred-set) or delete those rules",
		e.Set, strings.Join(e.Rules, ", "))
}

// Unwrap makes errors.Is(err, ErrInUse) true.
func (e *InUseError) Unwrap() error { return ErrInUse }

// resolveError is a resolution failure or a refusal whose message is the
// operator-facing reason alone ("env: DOCKERHUB_TOKEN is not set"), without
// the sentinel's text in front; it matches its sentinel with errors.Is.
type resolveError struct {
	kind error
	msg  string
}

func (e *resolveError) Error() string { return e.msg }
func (e *resolveError) Unwrap() error { return e.kind }

// fail returns a resolveError of kind with a formatted message.
func fail(kind error, format string, args ...any) error {
	return &resolveError{kind: kind, msg: fmt.Sprintf(format, args...)}
}
