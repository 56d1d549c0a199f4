package main

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/regcache/regcache/storage"
	"github.com/regcache/regcache/storage/s3"
)

// StoreConfig says where committed blobs live. Metadata (links, tags,
// rules, credential sets, upload sessions, access times) stays in the
// bbolt database of the data directory either way, and fills and uploads
// are written and verified in the data directory before they are stored.
type StoreConfig struct {
	// Store is fs (blobs are files under <dataDir>/blobs, the default) or
	// s3 (objects in an S3-compatible bucket, see S3) (--store,
	// REGCACHE_STORE).
	Store string `yaml:"store"`
	// S3 locates the bucket of store s3.
	S3 S3Config `yaml:"s3"`
}

// S3Config is the s3: section. Credentials come from the standard
// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN)
// variables, or from CredentialsFile; never from the config file itself.
type S3Config struct {
	// Endpoint is the server's URL, e.g. http://127.0.0.1:8333
	// (--s3-endpoint, REGCACHE_S3_ENDPOINT; default: AWS S3).
	Endpoint string `yaml:"endpoint"`
	// Bucket holds the blobs; it must exist (--s3-bucket,
	// REGCACHE_S3_BUCKET).
	Bucket string `yaml:"bucket"`
	// Region is the signing region (--s3-region, REGCACHE_S3_REGION;
	// default us-east-1).
	Region string `yaml:"region"`
	// Prefix is prepended to every key, e.g. regcache (--s3-prefix,
	// REGCACHE_S3_PREFIX; default none). Blobs are under
	// <prefix>/blobs/sha256/<first two hex>/<hex>.
	Prefix string `yaml:"prefix"`
	// PathStyle puts the bucket in the URL's path instead of its host name,
	// as MinIO, Ceph RGW and SeaweedFS usually need (--s3-path-style,
	// REGCACHE_S3_PATH_STYLE).
	PathStyle bool `yaml:"pathStyle"`
	// Redirect answers blob GETs with a 307 to a presigned URL of the
	// object, so that the bytes flow from the bucket to the client
	// (--s3-redirect, REGCACHE_S3_REDIRECT). The object store must be
	// reachable by the clients.
	Redirect bool `yaml:"redirect"`
	// RedirectExpiry is how long a presigned URL is valid
	// (--s3-redirect-expiry, REGCACHE_S3_REDIRECT_EXPIRY; default 5m).
	RedirectExpiry time.Duration `yaml:"redirectExpiry"`
	// PartSize is the part size of multipart uploads, at least 5MiB
	// (--s3-part-size, REGCACHE_S3_PART_SIZE; default 64MiB). Blobs up to
	// this size are stored with one PUT.
	PartSize string `yaml:"partSize"`
	// CredentialsFile is an AWS shared credentials file whose [default]
	// profile holds aws_access_key_id and aws_secret_access_key
	// (--s3-credentials-file, REGCACHE_S3_CREDENTIALS_FILE). Default: the
	// AWS_* environment variables.
	CredentialsFile string `yaml:"credentialsFile"`
}

// storeFlags registers the flags of StoreConfig.
func storeFlags(fs *pflag.FlagSet) {
	fs.String("store", "", "where blobs live: fs (files under <data-dir>/blobs) or s3 (an S3-compatible bucket, --s3-*; metadata stays in <data-dir>) (env REGCACHE_STORE; default fs)")
	fs.String("s3-endpoint", "", "S3 server URL, e.g. http://127.0.0.1:8333 (env REGCACHE_S3_ENDPOINT; default AWS S3)")
	fs.String("s3-bucket", "", "bucket holding the blobs of --store s3; it must exist (env REGCACHE_S3_BUCKET)")
	fs.String("s3-region", "", "S3 signing region (env REGCACHE_S3_REGION; default "+s3.DefaultRegion+")")
	fs.String("s3-prefix", "", "prefix of every object key, e.g. regcache (env REGCACHE_S3_PREFIX; default none)")
	fs.Bool("s3-path-style", false, "address the bucket in the URL path, as MinIO, Ceph RGW and SeaweedFS need (env REGCACHE_S3_PATH_STYLE)")
	fs.Bool("s3-redirect", false, "answer blob GETs with a 307 to a short-lived presigned URL of the object (env REGCACHE_S3_REDIRECT)")
	fs.Duration("s3-redirect-expiry", 0, "how long a presigned URL is valid (env REGCACHE_S3_REDIRECT_EXPIRY; default 5m)")
	fs.String("s3-part-size", "", "part size of multipart uploads, at least 5MiB (env REGCACHE_S3_PART_SIZE; default 64MiB)")
	fs.String("s3-credentials-file", "", "AWS shared credentials file ([default] aws_access_key_id, aws_secret_access_key) (env REGCACHE_S3_CREDENTIALS_FILE; default: the AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY variables)")
}

// load reads the flags and environment variables of StoreConfig over what
// the file set.
func (c *StoreConfig) load(fs *pflag.FlagSet, getenv func(string) string) error {
	for _, s := range []struct {
		dst       *string
		flag, env string
	}{
		{&c.Store, "store", "REGCACHE_STORE"},
		{&c.S3.Endpoint, "s3-endpoint", "REGCACHE_S3_ENDPOINT"},
		{&c.S3.Bucket, "s3-bucket", "REGCACHE_S3_BUCKET"},
		{&c.S3.Region, "s3-region", "REGCACHE_S3_REGION"},
		{&c.S3.Prefix, "s3-prefix", "REGCACHE_S3_PREFIX"},
		{&c.S3.PartSize, "s3-part-size", "REGCACHE_S3_PART_SIZE"},
		{&c.S3.CredentialsFile, "s3-credentials-file", "REGCACHE_S3_CREDENTIALS_FILE"},
	} {
		if v := getenv(s.env); v != "" {
			*s.dst = v
		}
		if fs.Changed(s.flag) {
			*s.dst, _ = fs.GetString(s.flag)
		}
	}
	for _, b := range []struct {
		dst       *bool
		flag, env string
	}{{&c.S3.PathStyle, "s3-path-style", "REGCACHE_S3_PATH_STYLE"}, {&c.S3.Redirect, "s3-redirect", "REGCACHE_S3_REDIRECT"}} {
		if v := getenv(b.env); v != "" {
			x, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%s=%q: want true or false", b.env, v)
			}
			*b.dst = x
		}
		if fs.Changed(b.flag) {
			*b.dst, _ = fs.GetBool(b.flag)
		}
	}
	if v := getenv("REGCACHE_S3_REDIRECT_EXPIRY"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("REGCACHE_S3_REDIRECT_EXPIRY=%q: want a duration such as 5m", v)
		}
		c.S3.RedirectExpiry = d
	}
	if fs.Changed("s3-redirect-expiry") {
		c.S3.RedirectExpiry, _ = fs.GetDuration("s3-redirect-expiry")
	}
	return nil
}

// validate checks the settings; credentials are read only at start.
func (c StoreConfig) validate() error {
	switch c.Store {
	case "", "fs":
		return nil
	case "s3":
	default:
		return fmt.Errorf("store %q: want fs (files in the data directory) or s3 (an S3-compatible bucket)", c.Store)
	}
	if c.S3.Bucket == "" {
		return fmt.Errorf("s3.bucket: store s3 needs a bucket (--s3-bucket)")
	}
	if c.S3.Endpoint != "" {
		u, err := url.Parse(c.S3.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("s3.endpoint %q: want the server's http:// or https:// URL without a path, e.g. http://127.0.0.1:8333", c.S3.Endpoint)
		}
	}
	if c.S3.RedirectExpiry < 0 || c.S3.RedirectExpiry > 7*24*time.Hour {
		return fmt.Errorf("s3.redirectExpiry %v: want a duration above 0 and at most 168h (S3's limit), e.g. 5m (0: the default, 5m)", c.S3.RedirectExpiry)
	}
	if n, err := parseSize("s3.partSize", c.S3.PartSize); err != nil {
		return err
	} else if n != 0 && n < 5<<20 {
		return fmt.Errorf("s3.partSize %q: S3 parts are at least 5MiB", c.S3.PartSize)
	}
	return nil
}

// openBlobs opens the blob store the config names.
func openBlobs(ctx context.Context, cfg Config, getenv func(string) string, log *slog.Logger) (*storage.Blobs, error) {
	dir := filepath.Join(cfg.DataDir, "blobs")
	if cfg.Store != "s3" {
		return storage.OpenBlobs(dir)
	}
	id, secret, token, err := s3Credentials(cfg.S3.CredentialsFile, getenv)
	if err != nil {
		return nil, err
	}
	partSize, _ := parseSize("s3.partSize", cfg.S3.PartSize) // validated
	objects, err := s3.New(s3.Config{Endpoint: cfg.S3.Endpoint, Region: cfg.S3.Region, Bucket: cfg.S3.Bucket, Prefix: cfg.S3.Prefix,
		PathStyle: cfg.S3.PathStyle, AccessKeyID: id, SecretAccessKey: secret, SessionToken: token, PartSize: partSize,
		Redirect: cfg.S3.Redirect, RedirectExpiry: cfg.S3.RedirectExpiry})
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := objects.Check(cctx); err != nil {
		return nil, fmt.Errorf("store s3: %w (endpoint %q, path style %t)", err, cfg.S3.Endpoint, cfg.S3.PathStyle)
	}
	log.Info("blobs are stored in S3", "endpoint", cfg.S3.Endpoint, "bucket", cfg.S3.Bucket, "prefix", cfg.S3.Prefix, "redirect", cfg.S3.Redirect, "accessKeyID", id)
	return storage.OpenObjectBlobs(dir, objects, fmt.Sprintf("s3 endpoint=%s bucket=%s prefix=%s", cfg.S3.Endpoint, cfg.S3.Bucket, cfg.S3.Prefix))
}

// s3Credentials reads the access key from file (an AWS shared credentials
// file, profile default), or else from the AWS_* variables.
func s3Credentials(file string, getenv func(string) string) (id, secret, token string, err error) {
	if file == "" {
		id, secret, token = getenv("AWS_ACCESS_KEY_ID"), getenv("AWS_SECRET_ACCESS_KEY"), getenv("AWS_SESSION_TOKEN")
		if id == "" || secret == "" {
			return "", "", "", fmt.Errorf("store s3: no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or s3.credentialsFile (--s3-credentials-file)")
		}
		return id, secret, token, nil
	}
	f, err := os.Open(file)
	if err != nil {
		return "", "", "", fmt.Errorf("s3.credentialsFile: %w", err)
	}
	defer f.Close()
	profile := "default"
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]") {
			profile = strings.TrimSpace(line[1 : len(line)-1])
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || profile != "default" {
			continue
		}
		switch strings.TrimSpace(k) {
		case "aws_access_key_id":
			id = strings.TrimSpace(v)
		case "aws_secret_access_key":
			secret = strings.TrimSpace(v)
		case "aws_session_token":
			token = strings.TrimSpace(v)
		}
	}
	if err := sc.Err(); err != nil {
		return "", "", "", fmt.Errorf("s3.credentialsFile %s: %w", file, err)
	}
	if id == "" || secret == "" {
		return "", "", "", fmt.Errorf("s3.credentialsFile %s: the [default] profile needs aws_access_key_id and aws_secret_access_key", file)
	}
	return id, secret, token, nil
}
