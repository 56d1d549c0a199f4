package peers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
)

// SeaweedFSVersion is the version of github.com/seaweedfs/seaweedfs that
// .ci/install-peers builds as weed-<version>; the two change together.
const SeaweedFSVersion = "v0.0.0-20261109003541-7506e5f91cd6"

// s3ReadyTimeout bounds SeaweedFS's start: master, volume server, filer
// and S3 gateway come up one after the other (about 5 seconds).
const s3ReadyTimeout = 90 * time.Second

// S3 is a running SeaweedFS (`weed mini`: master, volume server, filer and
// S3 gateway in one process) serving the S3 API on a 127.0.0.1 port, with
// its data in a temporary directory and one identity allowed to do
// everything.
type S3 struct {
	// Endpoint is the S3 API's URL, http://127.0.0.1:<port>.
	Endpoint string
	// AccessKeyID and SecretAccessKey are the identity's credentials.
	AccessKeyID, SecretAccessKey string
	// Client is an S3 client with those credentials (path-style).
	Client *awss3.Client
	out    *syncBuffer
	proc   *process
	dir    string
	port   int
	// buckets counts the buckets made, for unique names.
	buckets atomic.Int64
}

// StartS3 starts SeaweedFS in a temporary directory on free loopback
// ports and waits until its S3 API answers a signed request. The test is
// skipped (failed in CI) when weed-<SeaweedFSVersion> is not installed;
// the server is stopped by t.Cleanup and its output logged when the test
// failed.
func StartS3(t testing.TB) *S3 {
	t.Helper()
	s, err := startS3(t, t.TempDir(), freePort)
	if err != nil {
		t.Fatalf("start SeaweedFS: %v", err)
	}
	t.Cleanup(func() {
		s.proc.kill()
		if t.Failed() {
			t.Logf("SeaweedFS %s output:\n%s", s.Endpoint, s.out.String())
		}
	})
	return s
}

// shared is the one SeaweedFS of a test binary that runs its regcache
// servers on the S3 store (REGCACHE_E2E_STORE=s3); it lives as long as
// the test binary (the kernel ends it with its parent).
var shared struct {
	once sync.Once
	s3   *S3
	err  error
}

// SharedS3 returns the test binary's shared SeaweedFS, started on first
// use in a directory under $TMPDIR; StopSharedS3 stops it and removes
// the directory.
func SharedS3(t testing.TB) *S3 {
	t.Helper()
	Require(t, "weed-"+SeaweedFSVersion)
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "regcache-e2e-s3-")
		if err != nil {
			shared.err = err
			return
		}
		shared.s3, shared.err = startS3(t, dir, freePort)
	})
	if shared.err != nil {
		t.Fatalf("start the shared SeaweedFS: %v", shared.err)
	}
	return shared.s3
}

// StopSharedS3 stops the shared SeaweedFS, if one was started, and
// removes its directory (a TestMain calls it after the tests ran). When
// the tests failed, it writes the server's output to w.
func StopSharedS3(failed bool, w io.Writer) {
	if shared.s3 == nil {
		return
	}
	shared.s3.proc.kill()
	os.RemoveAll(shared.s3.dir)
	if failed {
		fmt.Fprintf(w, "shared SeaweedFS %s output:\n%s\n", shared.s3.Endpoint, shared.s3.out.String())
	}
}

// startS3 starts SeaweedFS in dir on ports chosen by port. A start that
// lost a port to another process is retried on new ports and a new data
// directory: the first try's master and volume server may have written
// state there that a new master refuses (volume growth frozen, no bucket
// writable).
func startS3(t testing.TB, dir string, port func() (int, error)) (*S3, error) {
	bin := Require(t, "weed-"+SeaweedFSVersion)
	s := &S3{AccessKeyID: "AKIDREGCACHE" + strings.ToUpper(randomHex(t, 4)), SecretAccessKey: randomHex(t, 20), out: &syncBuffer{}, dir: dir}
	cfg := fmt.Sprintf(`{"identities":[{"name":"regcache","credentials":[{"accessKey":%q,"secretKey":%q}],"actions":["Admin","Read","Write","List","Tagging"]}]}`,
		s.AccessKeyID, s.SecretAccessKey)
	cfgPath := filepath.Join(dir, "s3.json")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	var lastErr error
	for attempt := 0; attempt < bindAttempts; attempt++ {
		data := filepath.Join(dir, "data-"+strconv.Itoa(attempt))
		if err := os.MkdirAll(data, 0o755); err != nil {
			return nil, err
		}
		// weed mini listens on ten ports: each is given, none left to a
		// default that two servers would share.
		names := []string{"master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
			"s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc"}
		args := []string{"mini", "-dir=" + data, "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3.config=" + cfgPath,
			"-admin.ui=false", "-admin.port.legacy=0", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
			"-master.volumeSizeLimitMB=64"}
		ports := map[string]int{}
		for _, n := range names {
			p, err := port()
			if err != nil {
				return nil, err
			}
			ports[n] = p
			args = append(args, "-"+n+"="+strconv.Itoa(p))
		}
		s.port = ports["s3.port"]
		s.Endpoint = "http://" + loopback(s.port)
		s.Client = awss3.New(awss3.Options{
			Region: "us-east-1", UsePathStyle: true, BaseEndpoint: aws.String(s.Endpoint),
			Credentials:                aws.NewCredentialsCache(staticCreds{s.AccessKeyID, s.SecretAccessKey}),
			RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
			ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
		})
		off := s.out.Len()
		p, err := startProcess(bin, args, childEnv(nil), s.out)
		if err != nil {
			return nil, err
		}
		s.proc = p
		if lastErr = s.waitReady(t.Context()); lastErr == nil {
			return s, nil
		}
		p.kill()
		if !bindFailed(s.out.since(off)) && !strings.Contains(s.out.since(off), "address already in use") {
			return nil, fmt.Errorf("%w\noutput:\n%s", lastErr, s.out.since(off))
		}
	}
	return nil, fmt.Errorf("no free ports after %d attempts: %w", bindAttempts, lastErr)
}

// waitReady polls ListBuckets until it succeeds, the process exits or
// s3ReadyTimeout passes.
func (s *S3) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s3ReadyTimeout)
	defer cancel()
	for {
		rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := s.Client.ListBuckets(rctx, &awss3.ListBucketsInput{})
		rcancel()
		if err == nil {
			return nil
		}
		if s.proc.exited() {
			return fmt.Errorf("%w: %v", errExited, s.proc.err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("S3 API at %s not ready: %w", s.Endpoint, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// staticCreds are the identity's credentials.
type staticCreds struct{ id, secret string }

func (c staticCreds) Retrieve(context.Context) (aws.Credentials, error) {
	return aws.Credentials{AccessKeyID: c.id, SecretAccessKey: c.secret, Source: "e2e"}, nil
}

// Logs returns SeaweedFS's output so far.
func (s *S3) Logs() string { return s.out.String() }

// Bucket creates a new empty bucket for the test and returns its name.
func (s *S3) Bucket(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d-%s", s.buckets.Add(1), randomHex(t, 6))
	s.CreateBucket(t, name)
	return name
}

// CreateBucket creates the bucket name unless it exists.
func (s *S3) CreateBucket(t testing.TB, name string) {
	t.Helper()
	_, err := s.Client.CreateBucket(t.Context(), &awss3.CreateBucketInput{Bucket: aws.String(name)})
	var owned interface{ ErrorCode() string }
	if err != nil && !(errors.As(err, &owned) && (owned.ErrorCode() == "BucketAlreadyOwnedByYou" || owned.ErrorCode() == "BucketAlreadyExists")) {
		t.Fatalf("create bucket %s: %v", name, err)
	}
	if err := s.writable(t.Context(), name); err != nil {
		t.Fatalf("bucket %s: %v", name, err)
	}
}

// writable waits until bucket takes an object: SeaweedFS allocates a new
// bucket's volumes at its first write, and on a busy machine that first
// write can fail (500 InternalError) until they are there. A probe object
// outside every prefix the tests use is written and removed.
func (s *S3) writable(ctx context.Context, bucket string) error {
	ctx, cancel := context.WithTimeout(ctx, s3ReadyTimeout)
	defer cancel()
	key := ".e2e-writable-probe"
	for {
		_, err := s.Client.PutObject(ctx, &awss3.PutObjectInput{Bucket: &bucket, Key: &key, Body: strings.NewReader("probe")})
		if err == nil {
			_, err = s.Client.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: &bucket, Key: &key})
			return err
		}
		if s.proc.exited() {
			return fmt.Errorf("%w: %v", errExited, s.proc.err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no object could be written: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Objects lists the keys under prefix in bucket, with their sizes.
func (s *S3) Objects(t testing.TB, bucket, prefix string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	pages := awss3.NewListObjectsV2Paginator(s.Client, &awss3.ListObjectsV2Input{Bucket: &bucket, Prefix: &prefix})
	for pages.HasMorePages() {
		page, err := pages.NextPage(t.Context())
		if err != nil {
			t.Fatalf("list bucket %s: %v", bucket, err)
		}
		for _, o := range page.Contents {
			out[aws.ToString(o.Key)] = aws.ToInt64(o.Size)
		}
	}
	return out
}

// BlobKey is the key regcache stores digest under, with prefix.
func BlobKey(prefix, digest string) string {
	h := strings.TrimPrefix(digest, "sha256:")
	if prefix = strings.Trim(prefix, "/"); prefix != "" {
		prefix += "/"
	}
	return prefix + "blobs/sha256/" + h[:2] + "/" + h
}

// StoreArgs are the serve flags that put a regcache's blobs in bucket
// (with prefix, when not empty).
func (s *S3) StoreArgs(bucket, prefix string) []string {
	args := []string{"--store", "s3", "--s3-endpoint", s.Endpoint, "--s3-bucket", bucket, "--s3-path-style"}
	if prefix != "" {
		args = append(args, "--s3-prefix", prefix)
	}
	return args
}

// Env is the environment that gives regcache the credentials.
func (s *S3) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + s.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + s.SecretAccessKey}
}

// storeFromEnv is the value of REGCACHE_E2E_STORE: "s3" runs every
// regcache a test starts on the S3 store of the shared SeaweedFS.
func storeFromEnv() string { return os.Getenv("REGCACHE_E2E_STORE") }

// sharedBucket is the bucket of the shared SeaweedFS that every server
// started with REGCACHE_E2E_STORE=s3 keeps its blobs in, each under a
// prefix of its own (a bucket per server would make SeaweedFS allocate
// volumes for each).
const sharedBucket = "regcache-e2e"

// sharedStore puts r's blobs in the S3 store when REGCACHE_E2E_STORE=s3
// and the test did not choose a store: in the shared SeaweedFS's bucket,
// under a prefix named after the data directory, so that a server started
// again on the same directory finds its blobs.
func (r *Regcache) sharedStore(t testing.TB) {
	if storeFromEnv() != "s3" || hasFlag(r.args, "--store") {
		return
	}
	s := SharedS3(t)
	abs, err := filepath.Abs(r.DataDir)
	if err != nil {
		abs = r.DataDir
	}
	sum := sha256.Sum256([]byte(abs))
	s.CreateBucket(t, sharedBucket)
	r.s3, r.bucket, r.prefix = s, sharedBucket, "rc-"+hex.EncodeToString(sum[:12])
	r.args = append(s.StoreArgs(r.bucket, r.prefix), r.args...)
	r.env = append(r.env, s.Env()...)
}

// InObjectStore reports whether the server keeps its blobs in a bucket
// (REGCACHE_E2E_STORE=s3).
func (r *Regcache) InObjectStore() bool { return r.s3 != nil }

// StoredBlob returns the size of the committed blob digest in the
// server's store (a file under its data directory or, with
// REGCACHE_E2E_STORE=s3, an object in its bucket), and whether it is
// there.
func (r *Regcache) StoredBlob(t testing.TB, digest string) (int64, bool) {
	t.Helper()
	if r.s3 != nil {
		key := BlobKey(r.prefix, digest)
		n, ok := r.s3.Objects(t, r.bucket, key)[key]
		return n, ok
	}
	h := strings.TrimPrefix(digest, "sha256:")
	fi, err := os.Stat(filepath.Join(r.DataDir, "blobs", "sha256", h[:2], h))
	if err != nil {
		return 0, false
	}
	return fi.Size(), true
}

// ReadStoredBlob returns the bytes of the committed blob digest as the
// server's store holds them.
func (r *Regcache) ReadStoredBlob(t testing.TB, digest string) []byte {
	t.Helper()
	if r.s3 != nil {
		out, err := r.s3.Client.GetObject(t.Context(), &awss3.GetObjectInput{Bucket: &r.bucket, Key: aws.String(BlobKey(r.prefix, digest))})
		if err != nil {
			t.Fatalf("read blob %s: %v", digest, err)
		}
		defer out.Body.Close()
		b, err := io.ReadAll(out.Body)
		if err != nil {
			t.Fatalf("read blob %s: %v", digest, err)
		}
		return b
	}
	h := strings.TrimPrefix(digest, "sha256:")
	b, err := os.ReadFile(filepath.Join(r.DataDir, "blobs", "sha256", h[:2], h))
	if err != nil {
		t.Fatalf("read blob %s: %v", digest, err)
	}
	return b
}

// WriteStoredBlob replaces the bytes of the committed blob digest behind
// the server's back (tests of damage).
func (r *Regcache) WriteStoredBlob(t testing.TB, digest string, b []byte) {
	t.Helper()
	if r.s3 != nil {
		_, err := r.s3.Client.PutObject(t.Context(), &awss3.PutObjectInput{Bucket: &r.bucket, Key: aws.String(BlobKey(r.prefix, digest)), Body: bytes.NewReader(b)})
		if err != nil {
			t.Fatalf("write blob %s: %v", digest, err)
		}
		return
	}
	h := strings.TrimPrefix(digest, "sha256:")
	if err := os.WriteFile(filepath.Join(r.DataDir, "blobs", "sha256", h[:2], h), b, 0o644); err != nil {
		t.Fatalf("write blob %s: %v", digest, err)
	}
}

// StoredBlobs counts the committed blobs of the server's store.
func (r *Regcache) StoredBlobs(t testing.TB) int {
	t.Helper()
	if r.s3 != nil {
		return len(r.s3.Objects(t, r.bucket, r.prefix+"/blobs/sha256/"))
	}
	n := 0
	filepath.WalkDir(filepath.Join(r.DataDir, "blobs", "sha256"), func(_ string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			n++
		}
		return nil
	})
	return n
}

// hasFlag reports whether args set flag (as "flag value" or "flag=value").
func hasFlag(args []string, flag string) bool {
	for _, a := range args {
		if a == flag || strings.HasPrefix(a, flag+"=") {
			return true
		}
	}
	return false
}
