package s3

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeS3 is a small in-memory S3 (path-style, one bucket) for the unit
// tests of this package: objects, ranged GETs, listing, multipart uploads
// that become visible only when completed, and the payload hash check of
// SigV4 (x-amz-content-sha256). It checks no signature. The e2e tests run
// against a real S3 server.
type fakeS3 struct {
	*httptest.Server
	bucket string

	mu      sync.Mutex
	objects map[string][]byte
	uploads map[string]map[int][]byte // upload ID -> part number -> bytes
	ops     []string                  // "METHOD op key", in order
	// failPart, when not 0, makes that part number of every upload fail.
	failPart int
	nextID   int
}

func newFakeS3(t *testing.T, bucket string) *fakeS3 {
	f := &fakeS3{bucket: bucket, objects: map[string][]byte{}, uploads: map[string]map[int][]byte{}}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

// object returns the object at key, and whether it exists.
func (f *fakeS3) object(key string) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.objects[key]
	return b, ok
}

// keys returns the keys of every object, sorted.
func (f *fakeS3) keys() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ks []string
	for k := range f.objects {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// opsLog returns the operations seen so far.
func (f *fakeS3) opsLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ops...)
}

func s3Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message></Error>`, code, msg)
}

func (f *fakeS3) serve(w http.ResponseWriter, r *http.Request) {
	path := strings.TrimPrefix(r.URL.Path, "/")
	bucket, key, _ := strings.Cut(path, "/")
	if bucket != f.bucket {
		s3Error(w, http.StatusNotFound, "NoSuchBucket", "no such bucket")
		return
	}
	q := r.URL.Query()
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	op := r.Method
	switch {
	case key == "" && r.Method == http.MethodHead:
		op += " bucket"
	case key == "" && q.Get("list-type") == "2":
		op += " list"
	case q.Has("uploads"):
		op += " create-multipart"
	case q.Has("partNumber"):
		op += " part " + q.Get("partNumber")
	case q.Has("uploadId"):
		op += " multipart"
	}
	f.ops = append(f.ops, op+" "+key)
	switch {
	case key == "" && r.Method == http.MethodHead:
		w.WriteHeader(http.StatusOK)
	case key == "" && r.Method == http.MethodGet:
		f.list(w, q.Get("prefix"))
	case r.Method == http.MethodPost && q.Has("uploads"):
		f.nextID++
		id := "upload-" + strconv.Itoa(f.nextID)
		f.uploads[id] = map[int][]byte{}
		fmt.Fprintf(w, `<InitiateMultipartUploadResult><Bucket>%s</Bucket><Key>%s</Key><UploadId>%s</UploadId></InitiateMultipartUploadResult>`, bucket, key, id)
	case r.Method == http.MethodPut && q.Has("partNumber"):
		parts, ok := f.uploads[q.Get("uploadId")]
		n, _ := strconv.Atoi(q.Get("partNumber"))
		switch {
		case !ok:
			s3Error(w, http.StatusNotFound, "NoSuchUpload", "no such upload")
		case n == f.failPart:
			s3Error(w, http.StatusForbidden, "AccessDenied", "part refused")
		case !f.payloadOK(r, body):
			s3Error(w, http.StatusBadRequest, "XAmzContentSHA256Mismatch", "payload hash mismatch")
		default:
			parts[n] = body
			w.Header().Set("ETag", fmt.Sprintf(`"etag-%d"`, n))
		}
	case r.Method == http.MethodPost && q.Has("uploadId"):
		parts, ok := f.uploads[q.Get("uploadId")]
		if !ok {
			s3Error(w, http.StatusNotFound, "NoSuchUpload", "no such upload")
			return
		}
		var done struct {
			Parts []struct{ PartNumber int } `xml:"Part"`
		}
		if err := xml.Unmarshal(body, &done); err != nil {
			s3Error(w, http.StatusBadRequest, "MalformedXML", err.Error())
			return
		}
		var all []byte
		for i, p := range done.Parts {
			if p.PartNumber != i+1 || parts[p.PartNumber] == nil {
				s3Error(w, http.StatusBadRequest, "InvalidPart", "bad part list")
				return
			}
			all = append(all, parts[p.PartNumber]...)
		}
		f.objects[key] = all
		delete(f.uploads, q.Get("uploadId"))
		fmt.Fprintf(w, `<CompleteMultipartUploadResult><Bucket>%s</Bucket><Key>%s</Key><ETag>"x"</ETag></CompleteMultipartUploadResult>`, bucket, key)
	case r.Method == http.MethodDelete && q.Has("uploadId"):
		delete(f.uploads, q.Get("uploadId"))
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodPut:
		if !f.payloadOK(r, body) {
			s3Error(w, http.StatusBadRequest, "XAmzContentSHA256Mismatch", "payload hash mismatch")
			return
		}
		f.objects[key] = body
		w.Header().Set("ETag", `"x"`)
	case r.Method == http.MethodDelete:
		delete(f.objects, key)
		w.WriteHeader(http.StatusNoContent)
	case r.Method == http.MethodHead || r.Method == http.MethodGet:
		b, ok := f.objects[key]
		if !ok {
			if r.Method == http.MethodHead {
				w.WriteHeader(http.StatusNotFound)
				return
			}
			s3Error(w, http.StatusNotFound, "NoSuchKey", "no such key")
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
	default:
		s3Error(w, http.StatusNotImplemented, "NotImplemented", r.Method)
	}
}

// payloadOK checks the body against the SigV4 payload hash it was sent
// with (when it was not sent unsigned).
func (f *fakeS3) payloadOK(r *http.Request, body []byte) bool {
	h := r.Header.Get("X-Amz-Content-Sha256")
	if h == "" || h == "UNSIGNED-PAYLOAD" || strings.HasPrefix(h, "STREAMING-") {
		return true
	}
	sum := sha256.Sum256(body)
	return h == hex.EncodeToString(sum[:])
}

func (f *fakeS3) list(w http.ResponseWriter, prefix string) {
	type content struct {
		Key          string
		Size         int64
		LastModified string
	}
	var res struct {
		XMLName     xml.Name `xml:"ListBucketResult"`
		Name        string
		Prefix      string
		KeyCount    int
		IsTruncated bool
		Contents    []content
	}
	res.Name, res.Prefix = f.bucket, prefix
	var ks []string
	for k := range f.objects {
		if strings.HasPrefix(k, prefix) {
			ks = append(ks, k)
		}
	}
	sort.Strings(ks)
	for _, k := range ks {
		res.Contents = append(res.Contents, content{Key: k, Size: int64(len(f.objects[k])), LastModified: "2026-01-02T03:04:05.000Z"})
	}
	res.KeyCount = len(ks)
	w.Header().Set("Content-Type", "application/xml")
	xml.NewEncoder(w).Encode(res)
}
