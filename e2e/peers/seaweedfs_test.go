package peers

import (
	"bytes"
	"errors"
	"io"
	"testing"

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
