package credentials

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// maxSecretSize caps what a file reference may hold.
const maxSecretSize = 64 << 10

// fileResolver reads file:// references: a mounted Kubernetes Secret or a
// Docker secret. The file is read on every resolution (the resolution cache
// bounds the rate), so a rotated secret (Kubernetes swaps the mount's
// symlink, Docker replaces the file) is picked up without a restart.
type fileResolver struct {
	locs SecretLocations // with defaults
}

// Resolve returns the content of the file, without one trailing newline
// (editors and `echo` add one; Kubernetes Secrets made with --from-file keep it).
// The file must be in an allowed directory also after its symlinks are
// resolved (a Kubernetes Secret mount's ..data links stay inside it).
func (fr fileResolver) Resolve(_ context.Context, r Ref) (string, error) {
	if err := fr.confined(r.File); err != nil {
		return "", err
	}
	f, err := os.Open(r.File)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", fail(ErrSecretNotFound, "file not found: %s", r.File)
	case errors.Is(err, fs.ErrPermission):
		return "", fail(ErrPermissionDenied, "cannot read %s: permission denied for the regcache process (uid %d)", r.File, os.Getuid())
	case err != nil:
		return "", fail(ErrBackendUnavailable, "open %s: %s", r.File, pathErrText(err))
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return "", fail(ErrInvalidSecret, "%s is a directory: reference the file holding the secret inside it", r.File)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretSize+1))
	if err != nil {
		return "", fail(ErrBackendUnavailable, "read %s: %s", r.File, pathErrText(err))
	}
	if len(b) > maxSecretSize {
		return "", fail(ErrInvalidSecret, "%s is larger than %d bytes: not a credential", r.File, maxSecretSize)
	}
	v := string(b)
	if !strings.HasSuffix(v, "\r\n") {
		v = strings.TrimSuffix(v, "\n")
	} else {
		v = strings.TrimSuffix(v, "\r\n")
	}
	if v == "" {
		return "", fail(ErrInvalidSecret, "file %s is empty", r.File)
	}
	return v, nil
}

// confined checks that path, with its symlinks resolved, is inside the
// allowed directory it names (with that directory's symlinks resolved).
func (fr fileResolver) confined(path string) error {
	dir := fr.locs.under(path)
	if dir == "" {
		return fail(ErrPermissionDenied, "%s is not under %s (secrets.fileDirs)", path, strings.Join(fr.locs.FileDirs, " or "))
	}
	realDir, err := filepath.EvalSymlinks(dir)
	var real string
	if err == nil {
		real, err = filepath.EvalSymlinks(path)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return fail(ErrSecretNotFound, "file not found: %s", path)
	}
	if err != nil {
		return fail(ErrBackendUnavailable, "resolve %s: %s", path, pathErrText(err))
	}
	if !strings.HasPrefix(real, realDir+string(filepath.Separator)) {
		return fail(ErrPermissionDenied, "%s leads outside %s (through a symlink): regcache reads secrets only inside secrets.fileDirs", path, dir)
	}
	return nil
}

// pathErrText is the reason of a *fs.PathError without repeating the path.
func pathErrText(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}
