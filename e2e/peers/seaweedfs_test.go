package peers

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// TestStartS3 starts two SeaweedFS servers side by side (their ports must
// not collide), stores and lists an object in a new bucket of one, and
// checks that the other and a wrong secret key are refused.
func TestStartS3(t *testing.T) {
	t.Parallel()
	s := StartS3(t)
	other := StartS3(t)
	bucket := s.Bucket(t)
	body := []byte("hello, bucket")
	key := BlobKey("p", "sha256:"+randomHex(t, 32))
	if _, err := s.Client.PutObject(t.Context(), &awss3.PutObjectInput{Bucket: &bucket, Key: &key, Body: bytes.NewReader(body)}); err != nil {
		t.Fatal(err)
	}
	if got := s.Objects(t, bucket, "p/blobs/"); len(got) != 1 || got[key] != int64(len(body)) {
		t.Errorf("objects: %v, want %s of %d bytes", got, key, len(body))
	}
	out, err := s.Client.GetObject(t.Context(), &awss3.GetObjectInput{Bucket: &bucket, Key: &key, Range: aws.String("bytes=7-")})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(out.Body)
	out.Body.Close()
	if string(got) != "bucket" {
		t.Errorf("ranged GET: %q", got)
	}
	if _, err := other.Client.HeadBucket(t.Context(), &awss3.HeadBucketInput{Bucket: &bucket}); err == nil {
		t.Errorf("the second server has the first one's bucket")
	}
	wrong := awss3.New(awss3.Options{Region: "us-east-1", UsePathStyle: true, BaseEndpoint: aws.String(s.Endpoint),
		Credentials: staticCreds{s.AccessKeyID, "wrong"}})
	_, err = wrong.ListObjectsV2(t.Context(), &awss3.ListObjectsV2Input{Bucket: &bucket})
	var api smithy.APIError
	if !errors.As(err, &api) || api.ErrorCode() != "SignatureDoesNotMatch" {
		t.Errorf("a wrong secret key: %v, want SignatureDoesNotMatch", err)
	}
}

// TestStartS3AfterALostPort: when a port of the first try is taken after
// weed mini checked it (the filer's gRPC port, taken once the volume server
// answers, about three seconds before the filer binds it), the start is
// retried and the server it returns takes objects.
func TestStartS3AfterALostPort(t *testing.T) {
	t.Parallel()
	Require(t, "weed-"+SeaweedFSVersion)
	// weed mini's ports are chosen in a fixed order: the third is the
	// volume server's, the sixth the filer's gRPC port.
	var volume, filerGRPC int
	calls := 0
	port := func() (int, error) {
		p, err := freePort()
		switch calls++; calls {
		case 3:
			volume = p
		case 6:
			filerGRPC = p
			go takeWhenListening(t, volume, filerGRPC)
		}
		return p, err
	}
	s, err := startS3(t, t.TempDir(), port)
	if err != nil {
		t.Fatalf("start SeaweedFS: %v", err)
	}
	t.Cleanup(s.proc.kill)
	if !bindFailed(s.Logs()) {
		t.Fatalf("the first try did not lose port %d; output:\n%s", filerGRPC, s.Logs())
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	bucket := "lost-port"
	if _, err := s.Client.CreateBucket(ctx, &awss3.CreateBucketInput{Bucket: &bucket}); err != nil {
		t.Fatal(err)
	}
	if err := s.writable(ctx, bucket); err != nil {
		t.Errorf("after the retry: %v\noutput:\n%s", err, s.Logs())
	}
}

// takeWhenListening listens on loopback port take, until the test ends,
// as soon as something listens on port wait.
func takeWhenListening(t *testing.T, wait, take int) {
	for range 3000 {
		if c, err := net.Dial("tcp", loopback(wait)); err == nil {
			c.Close()
			l, err := net.Listen("tcp", loopback(take))
			if err == nil {
				t.Cleanup(func() { l.Close() })
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}
