package archive

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/regcache/regcache/storage"
)

// Inventory is what a registry holds, for an incremental export to it:
// the digests of the blobs and manifests that are linked to a repository
// and stored, one per line.

// Contents lists links (storage.Meta).
type Contents interface {
	Contents(ctx context.Context) ([]storage.RepoLink, []storage.RepoTag, error)
}

// Statter tells whether a blob is stored (storage.Blobs).
type Statter interface {
	Stat(ctx context.Context, digest string) (int64, error)
}

// WriteInventory writes the inventory to w and returns how many digests
// it lists.
func WriteInventory(ctx context.Context, meta Contents, blobs Statter, w io.Writer) (int, error) {
	links, _, err := meta.Contents(ctx)
	if err != nil {
		return 0, err
	}
	set := map[string]bool{}
	for _, l := range links {
		set[l.Digest] = true
	}
	digests := make([]string, 0, len(set))
	for d := range set {
		digests = append(digests, d)
	}
	sort.Strings(digests)
	bw := bufio.NewWriter(w)
	n := 0
	for _, d := range digests {
		if _, err := blobs.Stat(ctx, d); err != nil {
			continue
		}
		if _, err := fmt.Fprintln(bw, d); err != nil {
			return n, err
		}
		n++
	}
	return n, bw.Flush()
}

// ReadInventory reads an inventory (blank lines and # comments allowed).
func ReadInventory(r io.Reader) (map[string]bool, error) {
	out := map[string]bool{}
	sc := bufio.NewScanner(r)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		if _, err := storage.ParseDigest(s); err != nil {
			return nil, fmt.Errorf("%w: inventory line %d: %v (want one digest per line, as regcache export --inventory writes)", ErrInvalid, line, err)
		}
		out[s] = true
	}
	return out, sc.Err()
}
