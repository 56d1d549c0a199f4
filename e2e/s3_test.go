package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/regcache/regcache/e2e/peers"
)

// s3PartSize is the part size the tests give regcache: S3's smallest, so
// that a blob of a few MiB takes a multipart upload.
const s3PartSize = 5 << 20

// startS3Regcache starts regcache with its blobs in a new bucket of s3,
// under prefix, pulling docker.io from upstream, with the hub/* rule.
func startS3Regcache(t *testing.T, bin string, s3 *peers.S3, upstream, prefix string, args ...string) (*peers.Regcache, string) {
	t.Helper()
	bucket := s3.Bucket(t)
	args = append(append(s3.StoreArgs(bucket, prefix), "--s3-part-size", "5MiB", "--upstream", "docker.io="+upstream), args...)
	rc := peers.StartRegcacheWith(t, bin, peers.ServeOptions{Env: s3.Env()}, args...)
	createHubRule(t, bin, rc)
	return rc, bucket
}

// checkObjects waits until the bucket holds every digest under prefix with
// its size (a fill commits just after its clients got the verified bytes).
func checkObjects(t *testing.T, s3 *peers.S3, bucket, prefix string, want map[string]int64) {
	t.Helper()
	waitUntil(t, "every blob is an object of its size", func() string {
		got := s3.Objects(t, bucket, "")
		for d, size := range want {
			if n, ok := got[peers.BlobKey(prefix, d)]; !ok || n != size {
				return fmt.Sprintf("%s: present %t, %d bytes, want %d; objects: %v", d, ok, n, size, got)
			}
		}
		return ""
	})
}

// localBlobFiles lists the regular files of the local blob store, but for
// the note saying the blobs are in an object store.
func localBlobFiles(t *testing.T, dataDir string) []string {
	t.Helper()
	var files []string
	filepath.WalkDir(filepath.Join(dataDir, "blobs"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() && d.Name() != "object-store" {
			files = append(files, p)
		}
		return nil
	})
	return files
}

// upstreamBlob reads a blob of repo straight from the upstream.
func upstreamBlob(t *testing.T, up *peers.Upstream, repo, digest string) []byte {
	t.Helper()
	resp, err := http.Get(up.URL() + "/v2/" + repo + "/blobs/" + digest)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK || sha(b) != digest {
		t.Fatalf("upstream blob %s: status %d, %v", digest, resp.StatusCode, err)
	}
	return b
}

// TestS3Store runs regcache with --store s3 against a real S3 server
// (SeaweedFS) and real upstreams.
func TestS3Store(t *testing.T) {
	t.Parallel()
	bin := peers.BuildRegcache(t)
	crane := peers.Require(t, "crane")
	s3 := peers.StartS3(t)

	// A multi-layer image pulled by crane becomes objects under the
	// prefix (a multipart upload for the blob over the part size),
	// nothing under the data directory; Range requests are served from
	// the objects; after a restart with the upstream stopped, everything
	// is served from the bucket.
	t.Run("pull through, restart, upstream stopped", func(t *testing.T) {
		t.Parallel()
		up := peers.StartDockerRegistry(t, peers.DockerRegistryOptions{})
		img := peers.SeedImage(t, up.Host+"/library/app:v1", true)
		big, bigDigest := pushRandomBlob(t, up, "library/big", 2*s3PartSize+12345)
		const prefix = "regcache/test"
		rc, bucket := startS3Regcache(t, bin, s3, up.URL(), prefix)

		pull := func(t *testing.T) {
			t.Helper()
			out := filepath.Join(t.TempDir(), "app.tar")
			if b, err := exec.Command(crane, "pull", "--insecure", rc.Addr+"/hub/app:v1", out).CombinedOutput(); err != nil {
				t.Fatalf("crane pull: %v\n%s", err, b)
			}
			checkImage(t, rc.Addr+"/hub/app:v1", img)
			url := rc.URL() + "/v2/hub/big/blobs/" + bigDigest
			pulls := []blobPull{{}, {fmt.Sprintf("bytes=%d-%d", s3PartSize-100, s3PartSize+99), s3PartSize - 100, s3PartSize + 99}, {"bytes=-1000", len(big) - 1000, len(big) - 1}}
			for i, r := range startBlobPulls(newTestClient(t), url, pulls).wait() {
				if err := verifyPull(pulls[i], r, big, bigDigest); err != nil {
					t.Errorf("%s: %v", pulls[i], err)
				}
			}
		}
		pull(t)
		want := map[string]int64{img.Digest: int64(len(img.RawManifest)), bigDigest: int64(len(big))}
		for _, d := range img.Blobs() {
			want[d] = int64(len(upstreamBlob(t, up, "library/app", d)))
		}
		checkObjects(t, s3, bucket, prefix, want)
		// A fill removes its temporary file just after its object is
		// complete, so the last one may still be going; none stays.
		waitUntil(t, "no blob files in the data directory with store s3", func() string {
			if files := localBlobFiles(t, rc.DataDir); len(files) != 0 {
				return fmt.Sprint(files)
			}
			return ""
		})

		// Ranges of a stored layer, read from its object.
		layer := img.Layers[len(img.Layers)-1]
		body := upstreamBlob(t, up, "library/app", layer)
		ranges := []blobPull{{"bytes=0-99", 0, 99}, {"bytes=1000-", 1000, len(body) - 1}, {"bytes=-10", len(body) - 10, len(body) - 1}, {}}
		for i, r := range startBlobPulls(newTestClient(t), rc.URL()+"/v2/hub/app/blobs/"+layer, ranges).wait() {
			if err := verifyPull(ranges[i], r, body, layer); err != nil {
				t.Errorf("stored layer, %s: %v", ranges[i], err)
			}
		}

		up.Stop()
		rc.Restart()
		pull(t)
		resp, err := http.Get(rc.URL() + "/v2/hub/app/blobs/" + layer)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("X-Cache"); resp.StatusCode != http.StatusOK || got != "HIT" {
			t.Errorf("layer after the restart: %d, X-Cache %q; want 200 HIT", resp.StatusCode, got)
		}
		if strings.Contains(rc.Logs(), s3.SecretAccessKey) {
			t.Errorf("the log holds the S3 secret key")
		}
	})

	// With --s3-redirect a stored blob's GET answers 307 to a presigned
	// URL of its object: the client fetches verified bytes from the
	// bucket, the URL carries a signature but no secret, and the log
	// keeps no signature.
	t.Run("redirect", func(t *testing.T) {
		t.Parallel()
		up := peers.StartDockerRegistry(t, peers.DockerRegistryOptions{})
		img := peers.SeedImage(t, up.Host+"/library/app:v1", false)
		rc, bucket := startS3Regcache(t, bin, s3, up.URL(), "", "--s3-redirect")
		checkImage(t, rc.Addr+"/hub/app:v1", img) // cold: streamed from the fills
		want := map[string]int64{}
		for _, d := range img.Blobs() {
			want[d] = int64(len(upstreamBlob(t, up, "library/app", d)))
		}
		checkObjects(t, s3, bucket, "", want)

		noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		for _, d := range img.Blobs() {
			resp, err := noFollow.Get(rc.URL() + "/v2/hub/app/blobs/" + d)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			loc := resp.Header.Get("Location")
			if resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, s3.Endpoint+"/"+bucket+"/blobs/sha256/") {
				t.Fatalf("GET blob %s: %d, Location %q; want 307 to the object in %s", d, resp.StatusCode, loc, bucket)
			}
			if strings.Contains(loc, s3.SecretAccessKey) || !strings.Contains(loc, "X-Amz-Signature=") {
				t.Errorf("Location %q: want a presigned URL, without the secret key", loc)
			}
			resp, err = http.Get(loc)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != http.StatusOK || sha(b) != d {
				t.Errorf("GET of the presigned URL: %d, %d bytes, %v; want the blob %s", resp.StatusCode, len(b), err, d)
			}
		}
		// A client following redirects pulls and verifies the image.
		up.Stop()
		checkImage(t, rc.Addr+"/hub/app:v1", img)
		if logs := rc.Logs(); strings.Contains(logs, "X-Amz-Signature") || strings.Contains(logs, s3.SecretAccessKey) {
			t.Errorf("the log holds a presigned URL's signature or the secret key")
		}
	})

	// A blob whose upstream bytes fail verification never becomes an
	// object; the same blob, served right, does.
	t.Run("corrupt upstream blob", func(t *testing.T) {
		t.Parallel()
		up := peers.StartDockerRegistry(t, peers.DockerRegistryOptions{})
		proxy := newFaultProxy(t, up.URL())
		rc, bucket := startS3Regcache(t, bin, s3, proxy.URL, "")
		for i, size := range []int{faultBlobSize, 2*s3PartSize + 1} {
			blob, digest := pushRandomBlob(t, up, "library/faulty", size)
			f := proxy.set(digest, &blobFault{kind: faultFlip, body: blob, hold: faultHoldBytes})
			url := rc.URL() + "/v2/hub/faulty/blobs/" + digest
			run := startBlobPulls(newTestClient(t), url, []blobPull{{}})
			f.waitHeld(t, 1)
			close(f.gate)
			if r := run.wait()[0]; verifyPull(blobPull{}, r, blob, digest) == nil {
				t.Fatalf("%d bytes: a flipped byte was served as the blob", size)
			}
			checkStoreSound(t, bin, rc, i) // the blobs of the earlier rounds
			if _, ok := s3.Objects(t, bucket, "")[peers.BlobKey("", digest)]; ok {
				t.Errorf("%d bytes: the corrupt blob is an object", size)
			}
			proxy.clear(digest)
			if err := verifyPull(blobPull{}, startBlobPulls(newTestClient(t), url, []blobPull{{}}).wait()[0], blob, digest); err != nil {
				t.Fatalf("%d bytes, fault cleared: %v", size, err)
			}
			checkObjects(t, s3, bucket, "", map[string]int64{digest: int64(size)})
		}
	})

	// kill -9 in the middle of a fill leaves no object under its digest
	// and no multipart upload; after a restart the blob is fetched again.
	t.Run("kill -9 mid-fill", func(t *testing.T) {
		t.Parallel()
		const size, hold = 3 * s3PartSize, s3PartSize + 1
		up := peers.StartDockerRegistry(t, peers.DockerRegistryOptions{})
		proxy := newFaultProxy(t, up.URL())
		rc, bucket := startS3Regcache(t, bin, s3, proxy.URL, "")
		blob, digest := pushRandomBlob(t, up, "library/big", size)
		f := proxy.set(digest, &blobFault{kind: faultHold, body: blob, hold: hold})
		url := rc.URL() + "/v2/hub/big/blobs/" + digest
		run := startBlobPulls(newTestClient(t), url, []blobPull{{}})
		f.waitHeld(t, 1)
		waitUntil(t, "the fill wrote what it received", func() string {
			for _, p := range localBlobFiles(t, rc.DataDir) {
				if fi, err := os.Stat(p); err == nil && fi.Size() >= hold {
					return ""
				}
			}
			return "no temporary file holds the bytes sent"
		})
		rc.Kill()
		if r := run.wait()[0]; r.err == nil {
			t.Errorf("status %d, %d bytes: want the body cut by the crash", r.status, len(r.body))
		}
		if objects := s3.Objects(t, bucket, ""); len(objects) != 0 {
			t.Errorf("objects after a crash mid-fill: %v", objects)
		}
		uploads, err := s3.Client.ListMultipartUploads(context.Background(), &awss3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
		if err != nil || len(uploads.Uploads) != 0 {
			t.Errorf("multipart uploads after a crash mid-fill: %v, %v", uploads, err)
		}
		proxy.clear(digest)
		rc.Restart()
		if files := localBlobFiles(t, rc.DataDir); len(files) != 0 {
			t.Errorf("after the restart: files left in the data directory: %v", files)
		}
		if err := verifyPull(blobPull{}, startBlobPulls(newTestClient(t), rc.URL()+"/v2/hub/big/blobs/"+digest, []blobPull{{}}).wait()[0], blob, digest); err != nil {
			t.Fatalf("after the restart: %v", err)
		}
		checkObjects(t, s3, bucket, "", map[string]int64{digest: size})
	})

	// Bad store settings stop the start with the field, the value and
	// what is accepted; the secret key is never printed.
	t.Run("bad settings", func(t *testing.T) {
		t.Parallel()
		for _, c := range []struct {
			args []string
			env  []string
			want string
		}{
			{[]string{"--store", "s4"}, nil, `store "s4": want fs`},
			{[]string{"--store", "s3"}, nil, "s3.bucket"},
			{[]string{"--store", "s3", "--s3-bucket", "b", "--s3-endpoint", "ftp://x"}, nil, `s3.endpoint "ftp://x"`},
			{[]string{"--store", "s3", "--s3-bucket", "b", "--s3-part-size", "1MiB"}, nil, `s3.partSize "1MiB"`},
			{[]string{"--store", "s3", "--s3-bucket", "b", "--s3-endpoint", s3.Endpoint}, nil, "AWS_ACCESS_KEY_ID"},
			{append(s3.StoreArgs("no-such-bucket", ""), "--s3-endpoint", s3.Endpoint), s3.Env(), "no-such-bucket"},
			{s3.StoreArgs(s3.Bucket(t), ""), []string{"AWS_ACCESS_KEY_ID=" + s3.AccessKeyID, "AWS_SECRET_ACCESS_KEY=wrong-" + s3.SecretAccessKey}, "store s3"},
		} {
			cmd := exec.Command(bin, append([]string{"serve", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir()}, c.args...)...)
			cmd.Env = append(os.Environ(), c.env...)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || !strings.Contains(string(out), c.want) {
				t.Errorf("serve %v: %v; want a failed start saying %q:\n%s", c.args, err, c.want, out)
			}
			if strings.Contains(string(out), s3.SecretAccessKey) {
				t.Errorf("serve %v printed the secret key:\n%s", c.args, out)
			}
		}
	})
}
