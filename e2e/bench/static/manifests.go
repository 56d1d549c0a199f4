package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// manifest is one manifest answer, its header values built once.
type manifest struct {
	body                                  []byte
	contentType, digest, etag, length, cc []string
}

var apiVersion = []string{"registry/2.0"}

// handler answers manifests from memory and everything else from files.
type handler struct {
	files     http.Handler
	manifests map[string]*manifest // by URL path
}

// newHandler reads every file under a manifests directory of root.
func newHandler(root string) (*handler, error) {
	h := &handler{files: http.FileServer(http.Dir(root)), manifests: map[string]*manifest{}}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || filepath.Base(filepath.Dir(p)) != "manifests" {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var m struct {
			MediaType string `json:"mediaType"`
		}
		if json.Unmarshal(b, &m) != nil || m.MediaType == "" {
			m.MediaType = "application/vnd.oci.image.manifest.v1+json"
		}
		sum := sha256.Sum256(b)
		digest := "sha256:" + hex.EncodeToString(sum[:])
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		e := &manifest{body: b, contentType: []string{m.MediaType}, digest: []string{digest},
			etag: []string{`"` + digest + `"`}, length: []string{strconv.Itoa(len(b))}}
		if strings.HasPrefix(filepath.Base(p), "sha256:") {
			e.cc = []string{"max-age=31536000"}
		}
		h.manifests["/"+filepath.ToSlash(rel)] = e
		return nil
	})
	return h, err
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m := h.manifests[r.URL.Path]
	if m == nil || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		h.files.ServeHTTP(w, r)
		return
	}
	hd := w.Header()
	hd["Docker-Distribution-Api-Version"] = apiVersion
	hd["Content-Type"] = m.contentType
	hd["Docker-Content-Digest"] = m.digest
	hd["Etag"] = m.etag
	if m.cc != nil {
		hd["Cache-Control"] = m.cc
	}
	hd["Content-Length"] = m.length
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		w.Write(m.body)
	}
}
