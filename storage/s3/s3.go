// Package s3 keeps the committed blobs of regcache's store in an
// S3-compatible bucket (AWS S3, MinIO, Ceph RGW, SeaweedFS): it is the
// storage.ObjectStore behind `serve --store s3`.
//
// Every blob is one object under <prefix>/blobs/sha256/<first two
// hex>/<hex>. storage.Blobs writes and verifies a blob in a local
// temporary file before it calls Put, and an object becomes visible in one
// step (a PUT, or the completion of a multipart upload, which is aborted
// on failure): nothing partial is ever stored under a digest. Reads are
// ranged GETs; a body can answer a presigned URL instead, when redirects
// are on. The secret key is used to sign requests and goes nowhere else:
// no error, log line or URL carries it.
package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"

	"github.com/regcache/regcache/storage"
)

// Defaults of Config.
const (
	// DefaultRegion is the signing region when none is given; most
	// S3-compatible servers accept any.
	DefaultRegion = "us-east-1"
	// DefaultPartSize is the part size of multipart uploads; blobs up to
	// this size are stored with one PUT.
	DefaultPartSize = 64 << 20
	// DefaultRedirectExpiry is how long a presigned URL stays valid.
	DefaultRedirectExpiry = 5 * time.Minute
	// minPartSize is S3's smallest part (but the last).
	minPartSize = 5 << 20
	// maxParts is S3's largest number of parts in one upload.
	maxParts = 10000
	// responseHeaderTimeout bounds the wait for the answer to a request
	// once it was sent (a part's bytes included).
	responseHeaderTimeout = 2 * time.Minute
)

// Config locates the bucket and says how to reach it.
type Config struct {
	// Endpoint is the server's URL (http:// or https://); empty: AWS S3.
	Endpoint string
	// Region is the signing region (default DefaultRegion).
	Region string
	// Bucket holds the blobs; it must exist.
	Bucket string
	// Prefix is prepended to every key ("" or a path such as "regcache").
	Prefix string
	// PathStyle addresses the bucket in the path (http://host/bucket/key)
	// rather than in the host name, as most self-hosted servers need.
	PathStyle bool
	// AccessKeyID and SecretAccessKey sign every request; SessionToken
	// goes with temporary credentials.
	AccessKeyID, SecretAccessKey, SessionToken string
	// PartSize is the part size of multipart uploads (default
	// DefaultPartSize, at least 5 MiB).
	PartSize int64
	// Redirect makes the bodies Open returns offer a presigned URL
	// (Redirect method), valid for RedirectExpiry (default
	// DefaultRedirectExpiry).
	Redirect       bool
	RedirectExpiry time.Duration
	// HTTPClient sends the requests (default: the SDK's, with a bound on
	// the wait for each answer's headers).
	HTTPClient *http.Client
}

// Store is a bucket holding blobs.
type Store struct {
	client   *awss3.Client
	presign  *awss3.PresignClient
	bucket   string
	prefix   string // "" or ending in "/"
	partSize int64
	redirect bool
	expiry   time.Duration
}

// New checks cfg and returns a Store; it sends no request (Check does).
func New(cfg Config) (*Store, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("s3: no bucket given")
	}
	if cfg.Endpoint != "" {
		u, err := url.Parse(cfg.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("s3: endpoint %q is not an http:// or https:// URL", cfg.Endpoint)
		}
	}
	if cfg.AccessKeyID == "" || cfg.SecretAccessKey == "" {
		return nil, errors.New("s3: no credentials (an access key ID and a secret access key are needed)")
	}
	if cfg.Region == "" {
		cfg.Region = DefaultRegion
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.PartSize < minPartSize {
		return nil, fmt.Errorf("s3: part size %d is below S3's minimum of %d bytes", cfg.PartSize, minPartSize)
	}
	if cfg.RedirectExpiry <= 0 {
		cfg.RedirectExpiry = DefaultRedirectExpiry
	}
	creds := aws.Credentials{AccessKeyID: cfg.AccessKeyID, SecretAccessKey: cfg.SecretAccessKey, SessionToken: cfg.SessionToken, Source: "regcache"}
	opts := awss3.Options{
		Region:       cfg.Region,
		UsePathStyle: cfg.PathStyle,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return creds, nil
		}),
		// Checksums only where S3 requires them: many S3-compatible
		// servers reject the SDK's default trailing checksums, and the
		// bytes are verified against their digest before upload anyway.
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}
	if cfg.Endpoint != "" {
		opts.BaseEndpoint = aws.String(cfg.Endpoint)
	}
	if cfg.HTTPClient != nil {
		opts.HTTPClient = cfg.HTTPClient
	} else {
		// A server that stops answering must not hold a commit (or a
		// reader) forever; transfers themselves have no deadline.
		opts.HTTPClient = awshttp.NewBuildableClient().WithTransportOptions(func(tr *http.Transport) {
			tr.ResponseHeaderTimeout = responseHeaderTimeout
		})
	}
	client := awss3.New(opts)
	prefix := strings.Trim(cfg.Prefix, "/")
	if prefix != "" {
		prefix += "/"
	}
	return &Store{
		client:   client,
		presign:  awss3.NewPresignClient(client, awss3.WithPresignExpires(cfg.RedirectExpiry)),
		bucket:   cfg.Bucket,
		prefix:   prefix,
		partSize: cfg.PartSize,
		redirect: cfg.Redirect,
		expiry:   cfg.RedirectExpiry,
	}, nil
}

// Check asks the server whether the bucket exists and the credentials
// may use it.
func (s *Store) Check(ctx context.Context) error {
	if _, err := s.client.HeadBucket(ctx, &awss3.HeadBucketInput{Bucket: &s.bucket}); err != nil {
		return fmt.Errorf("s3 bucket %s: %w", s.bucket, explain(err))
	}
	return nil
}

// blobsDir is where blobs live under the prefix.
const blobsDir = "blobs/sha256/"

// key is the object key of digest ("sha256:<hex>", checked by the
// caller).
func (s *Store) key(digest string) string {
	h := strings.TrimPrefix(digest, "sha256:")
	return s.prefix + blobsDir + h[:2] + "/" + h
}

// Key is the object key of digest ("sha256:<64 hex>").
func (s *Store) Key(digest string) (string, error) {
	if _, err := storage.ParseDigest(digest); err != nil {
		return "", err
	}
	return s.key(digest), nil
}

// Stat returns the size of the blob (a HEAD).
func (s *Store) Stat(ctx context.Context, digest string) (int64, error) {
	out, err := s.client.HeadObject(ctx, &awss3.HeadObjectInput{Bucket: &s.bucket, Key: aws.String(s.key(digest))})
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", digest, explain(err))
	}
	return aws.ToInt64(out.ContentLength), nil
}

// Open returns the blob's bytes, read by GET requests from where the
// reader is (after a Seek, a ranged GET). Without redirects it starts
// the GET of the whole blob at once; with them it only asks for the size
// (a HEAD), as the body will most likely not be read.
func (s *Store) Open(ctx context.Context, digest string) (io.ReadSeekCloser, int64, error) {
	o := &object{s: s, ctx: ctx, key: s.key(digest), digest: digest}
	if s.redirect {
		size, err := s.Stat(ctx, digest)
		if err != nil {
			return nil, 0, err
		}
		o.size = size
		return o, size, nil
	}
	out, err := s.client.GetObject(ctx, &awss3.GetObjectInput{Bucket: &s.bucket, Key: &o.key})
	if err != nil {
		return nil, 0, fmt.Errorf("blob %s: %w", digest, explain(err))
	}
	o.body, o.size = out.Body, aws.ToInt64(out.ContentLength)
	return o, o.size, nil
}

// Put stores the size bytes of f under digest: one PUT up to the part
// size, a multipart upload beyond (aborted on failure, so that no part
// stays behind). The object appears only once complete.
func (s *Store) Put(ctx context.Context, digest string, f *os.File, size int64) error {
	key := s.key(digest)
	if size <= s.partSize {
		_, err := s.client.PutObject(ctx, &awss3.PutObjectInput{
			Bucket: &s.bucket, Key: &key, Body: io.NewSectionReader(f, 0, size), ContentLength: aws.Int64(size),
			ContentType: aws.String("application/octet-stream"),
		}, payloadHash(digest))
		if err != nil {
			return fmt.Errorf("upload blob %s: %w", digest, explain(err))
		}
		return nil
	}
	return s.putMultipart(ctx, digest, key, f, size)
}

// putMultipart uploads f in parts and completes the upload, or aborts it.
func (s *Store) putMultipart(ctx context.Context, digest, key string, f *os.File, size int64) (err error) {
	partSize := max(s.partSize, (size+maxParts-1)/maxParts)
	created, err := s.client.CreateMultipartUpload(ctx, &awss3.CreateMultipartUploadInput{
		Bucket: &s.bucket, Key: &key, ContentType: aws.String("application/octet-stream"),
	})
	if err != nil {
		return fmt.Errorf("upload blob %s: start multipart upload: %w", digest, explain(err))
	}
	defer func() {
		if err == nil {
			return
		}
		// The request's context may be what failed: abort on one of its own.
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if _, aerr := s.client.AbortMultipartUpload(actx, &awss3.AbortMultipartUploadInput{
			Bucket: &s.bucket, Key: &key, UploadId: created.UploadId,
		}); aerr != nil {
			err = fmt.Errorf("%w (and aborting the multipart upload failed: %v)", err, explain(aerr))
		}
	}()
	var parts []types.CompletedPart
	for off, n := int64(0), int32(1); off < size; off, n = off+partSize, n+1 {
		length := min(partSize, size-off)
		out, err := s.client.UploadPart(ctx, &awss3.UploadPartInput{
			Bucket: &s.bucket, Key: &key, UploadId: created.UploadId, PartNumber: aws.Int32(n),
			Body: io.NewSectionReader(f, off, length), ContentLength: aws.Int64(length),
		})
		if err != nil {
			return fmt.Errorf("upload blob %s: part %d: %w", digest, n, explain(err))
		}
		parts = append(parts, types.CompletedPart{ETag: out.ETag, PartNumber: aws.Int32(n)})
	}
	_, err = s.client.CompleteMultipartUpload(ctx, &awss3.CompleteMultipartUploadInput{
		Bucket: &s.bucket, Key: &key, UploadId: created.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
	})
	if err != nil {
		return fmt.Errorf("upload blob %s: complete multipart upload: %w", digest, explain(err))
	}
	return nil
}

// payloadHash signs a PUT with the blob's digest as its payload hash (the
// SHA-256 of the body, which SigV4 sends in x-amz-content-sha256): the
// SDK need not read the file once more to compute it, and the server
// refuses a body that does not hash to it.
func payloadHash(digest string) func(*awss3.Options) {
	h := strings.TrimPrefix(digest, "sha256:")
	return func(o *awss3.Options) {
		o.APIOptions = append(o.APIOptions, func(stack *middleware.Stack) error {
			return stack.Finalize.Add(middleware.FinalizeMiddlewareFunc("regcachePayloadHash",
				func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
					return next.HandleFinalize(v4.SetPayloadHash(ctx, h), in)
				}), middleware.Before)
		})
	}
}

// Remove deletes the blob.
func (s *Store) Remove(ctx context.Context, digest string) error {
	_, err := s.client.DeleteObject(ctx, &awss3.DeleteObjectInput{Bucket: &s.bucket, Key: aws.String(s.key(digest))})
	if err != nil {
		return fmt.Errorf("delete blob %s: %w", digest, explain(err))
	}
	return nil
}

// List calls fn for every blob whose hex digest starts with prefix ("" or
// at least two hex digits); keys that are not blobs are skipped.
func (s *Store) List(ctx context.Context, prefix string, fn func(storage.BlobInfo) error) error {
	keyPrefix := s.prefix + blobsDir
	if len(prefix) >= 2 {
		keyPrefix += prefix[:2] + "/" + prefix
	}
	pages := awss3.NewListObjectsV2Paginator(s.client, &awss3.ListObjectsV2Input{Bucket: &s.bucket, Prefix: &keyPrefix})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("list blobs: %w", explain(err))
		}
		for _, obj := range page.Contents {
			rest := strings.TrimPrefix(aws.ToString(obj.Key), s.prefix+blobsDir)
			dir, h, ok := strings.Cut(rest, "/")
			digest := "sha256:" + h
			if _, err := storage.ParseDigest(digest); !ok || err != nil || dir != h[:2] {
				continue
			}
			if err := fn(storage.BlobInfo{Digest: digest, Size: aws.ToInt64(obj.Size), Modified: aws.ToTime(obj.LastModified)}); err != nil {
				return err
			}
		}
	}
	return nil
}

// explain maps a missing object to storage.ErrNotFound and shortens the
// SDK's errors to the server's code and message (neither of which holds
// credentials).
func explain(err error) error {
	var nf *types.NotFound
	var nsk *types.NoSuchKey
	if errors.As(err, &nf) || errors.As(err, &nsk) {
		return storage.ErrNotFound
	}
	var api smithy.APIError
	if errors.As(err, &api) {
		switch api.ErrorCode() {
		case "NotFound", "NoSuchKey":
			return storage.ErrNotFound
		}
		return fmt.Errorf("%s: %s", api.ErrorCode(), api.ErrorMessage())
	}
	return err
}

// object reads one blob by GET requests: the body of the last one while
// the reader moves on from where it started, a new ranged GET after a
// Seek elsewhere.
type object struct {
	s *Store
	// ctx is the request's that opened the blob: the GETs a read starts
	// belong to it (io.Reader methods take none).
	ctx     context.Context
	key     string
	digest  string
	size    int64
	pos     int64
	body    io.ReadCloser // nil: none open
	bodyPos int64         // where body is
}

// Read reads from the current position, starting a GET there when none
// is open at it.
func (o *object) Read(p []byte) (int, error) {
	if o.pos >= o.size {
		return 0, io.EOF
	}
	if o.body != nil && o.bodyPos != o.pos {
		o.body.Close()
		o.body = nil
	}
	if o.body == nil {
		out, err := o.s.client.GetObject(o.ctx, &awss3.GetObjectInput{
			Bucket: &o.s.bucket, Key: &o.key, Range: aws.String(fmt.Sprintf("bytes=%d-", o.pos)),
		})
		if err != nil {
			return 0, fmt.Errorf("read blob %s at %d: %w", o.digest, o.pos, explain(err))
		}
		o.body, o.bodyPos = out.Body, o.pos
	}
	n, err := o.body.Read(p)
	o.pos += int64(n)
	o.bodyPos += int64(n)
	if errors.Is(err, io.EOF) && o.pos < o.size {
		err = fmt.Errorf("read blob %s: %w at %d of %d bytes", o.digest, io.ErrUnexpectedEOF, o.pos, o.size)
	}
	return n, err
}

// Seek moves the position; the next Read fetches from there.
func (o *object) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		offset += o.pos
	case io.SeekEnd:
		offset += o.size
	case io.SeekStart:
	default:
		return o.pos, fmt.Errorf("seek blob %s: whence %d", o.digest, whence)
	}
	if offset < 0 {
		return o.pos, fmt.Errorf("seek blob %s: negative position %d", o.digest, offset)
	}
	o.pos = offset
	return offset, nil
}

// Close ends the GET in progress.
func (o *object) Close() error {
	if o.body != nil {
		err := o.body.Close()
		o.body = nil
		return err
	}
	return nil
}

// Redirect returns a presigned URL of the blob, valid for the configured
// expiry, when redirects are on (ok false otherwise). The URL's query
// holds a signature, not the secret key; it must not be logged.
func (o *object) Redirect(ctx context.Context) (u string, ok bool, err error) {
	if !o.s.redirect {
		return "", false, nil
	}
	req, err := o.s.presign.PresignGetObject(ctx, &awss3.GetObjectInput{Bucket: &o.s.bucket, Key: &o.key})
	if err != nil {
		return "", false, fmt.Errorf("presign blob %s: %w", o.digest, explain(err))
	}
	return req.URL, true, nil
}
