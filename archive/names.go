package archive

import (
	"fmt"
	"strings"

	"github.com/regcache/regcache/cache"
)

// entryName returns the repository and tag an index.json entry records:
// containerd's image name (a full reference), else the OCI ref.name (a
// full reference, repository:tag, or only a tag as skopeo writes for
// oci-archive:lab.tar:v1), else the repository annotation (no tag).
func entryName(ann map[string]string) (repo, tag string) {
	if n := ann[AnnotationImageName]; n != "" {
		return splitName(n)
	}
	if n := ann[AnnotationRefName]; n != "" {
		if strings.ContainsAny(n, "/:@") {
			return splitName(n)
		}
		return ann[AnnotationRepository], n
	}
	return ann[AnnotationRepository], ""
}

// splitName splits a reference into a repository of this registry and a
// tag: a registry host is dropped (127.0.0.1:5000/hub/app is hub/app
// here), and Docker Hub's short names get library/ as Docker gives them
// (app:1 is docker.io/library/app). A digest is no tag.
func splitName(ref string) (repo, tag string) {
	name := ref
	if i := strings.Index(name, "@"); i >= 0 {
		name = name[:i]
	} else if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		name, tag = name[:i], name[i+1:]
	}
	host := ""
	if first, rest, ok := strings.Cut(name, "/"); ok && (first == "localhost" || strings.ContainsAny(first, ".:[")) {
		host, name = first, rest
	}
	if (host == "" || cache.CanonicalHost(host) == cache.DockerHub) && !strings.Contains(name, "/") && name != "" {
		name = "library/" + name
	}
	return name, tag
}

// dockerName splits a docker save RepoTag.
func dockerName(rt string) (repo, tag string) {
	repo, tag = splitName(rt)
	if tag == "" {
		tag = "latest"
	}
	return repo, tag
}

// withPrefix applies an import's --to to a recorded repository (""
// when the archive records none), and checks the result.
func withPrefix(repo, to string) (string, error) {
	to = strings.Trim(to, "/")
	switch {
	case to != "" && repo != "":
		repo = to + "/" + repo
	case to != "":
		repo = to
	}
	if repo != "" && !cache.ValidRepository(repo) {
		return "", fmt.Errorf("repository %q is not a valid repository name", repo)
	}
	return repo, nil
}
