package cache

import "errors"

// Sentinel errors of the cache package; the registry package maps each to
// an OCI error code. Test with errors.Is.
var (
	// ErrNameInvalid: a repository name, or the registry host of
	// containerd's ns parameter, does not follow its grammar.
	ErrNameInvalid = errors.New("invalid repository name")
	// ErrNameUnknown: no rule covers the repository and nothing is stored for it.
	ErrNameUnknown = errors.New("repository name not known to registry")
	// ErrManifestUnknown: the manifest is neither stored nor on the upstream.
	ErrManifestUnknown = errors.New("manifest unknown")
	// ErrBlobUnknown: the blob is not linked to the repository and the
	// upstream does not have it (or could not confirm it).
	ErrBlobUnknown = errors.New("blob unknown to registry")
	// ErrUnauthorized: the upstream refused the rule's credentials (401).
	ErrUnauthorized = errors.New("upstream authentication required")
	// ErrDenied: the upstream denied access (403).
	ErrDenied = errors.New("upstream denied access")
	// ErrTooManyRequests: the upstream rate-limited the request (429).
	ErrTooManyRequests = errors.New("upstream rate limit")
	// ErrUnavailable: the upstream could not be reached or failed, and
	// nothing usable is cached.
	ErrUnavailable = errors.New("upstream unavailable")
	// ErrOffline: the registry runs offline (contacting no upstream) and
	// the content is not stored.
	ErrOffline = errors.New("the registry is offline")

	// ErrRuleNotFound: no cache rule has that name.
	ErrRuleNotFound = errors.New("cache rule not found")
	// ErrReadOnly: the rule is declared in the config file.
	ErrReadOnly = errors.New("cache rule is declared in the config file and read-only through the API")
	// ErrTooManyRules: creating the rule would exceed MaxRules.
	ErrTooManyRules = errors.New("too many cache rules")
)
