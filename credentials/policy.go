package credentials

import (
	"fmt"
	"sort"
	"strings"
)

// Policy returns the least-privilege HashiCorp Vault policy (HCL) for the
// given sets: read on exactly the KV v2 data paths their vault:// references
// point to, deduplicated and sorted. ok is false when no reference is a
// vault:// one (there is nothing to grant).
func Policy(sets ...Set) (policy string, ok bool) {
	paths := map[string][]string{} // KV data path -> set names
	for _, s := range sets {
		for _, raw := range []string{s.UsernameSecretRef, s.PasswordSecretRef} {
			r, err := ParseRef("", raw)
			if err != nil || r.Scheme != SchemeVault {
				continue
			}
			p := r.KVDataPath()
			if n := paths[p]; len(n) == 0 || n[len(n)-1] != s.Name {
				paths[p] = append(n, s.Name)
			}
		}
	}
	if len(paths) == 0 {
		return "", false
	}
	keys := make([]string, 0, len(paths))
	for p := range paths {
		keys = append(keys, p)
	}
	sort.Strings(keys)
	var b strings.Builder
	names := make([]string, 0, len(sets))
	for _, s := range sets {
		names = append(names, s.Name)
	}
	fmt.Fprintf(&b, "# Vault policy for regcache credential set(s) %s:\n", strings.Join(names, ", "))
	b.WriteString("# read on exactly the KV v2 secrets they reference, nothing else.\n")
	for _, p := range keys {
		sort.Strings(paths[p])
		fmt.Fprintf(&b, "\n# %s\npath %q {\n  capabilities = [\"read\"]\n}\n", strings.Join(dedupe(paths[p]), ", "), p)
	}
	return b.String(), true
}

func dedupe(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}
