package main

import (
	"strings"
	"testing"
	"time"
)

func TestStoreConfig(t *testing.T) {
	t.Parallel()
	file := writeFile(t, "config.yaml", `store: s3
s3:
  endpoint: http://file:8333
  bucket: from-file
  prefix: p
  pathStyle: true
  redirectExpiry: 2m
  partSize: 16MiB
`)
	cfg, err := parseServe(t, []string{"--config", file, "--s3-bucket", "from-flag", "--s3-redirect"},
		map[string]string{"REGCACHE_S3_ENDPOINT": "http://env:8333", "REGCACHE_S3_BUCKET": "from-env"})
	if err != nil {
		t.Fatal(err)
	}
	want := S3Config{Endpoint: "http://env:8333", Bucket: "from-flag", Prefix: "p", PathStyle: true, Redirect: true,
		RedirectExpiry: 2 * time.Minute, PartSize: "16MiB"}
	if cfg.Store != "s3" || cfg.S3 != want {
		t.Errorf("loaded store %q %+v, want s3 %+v", cfg.Store, cfg.S3, want)
	}
	if cfg, err := parseServe(t, nil, nil); err != nil || cfg.Store != "" {
		t.Errorf("default: store %q, %v; want the filesystem", cfg.Store, err)
	}
}

// Bad store settings name the field, the value and what is accepted.
func TestStoreConfigErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--store", "disk"}, nil, `store "disk": want fs (files in the data directory) or s3`},
		{[]string{"--store", "s3"}, nil, "s3.bucket: store s3 needs a bucket"},
		{[]string{"--store", "s3", "--s3-bucket", "b", "--s3-endpoint", "127.0.0.1:8333"}, nil, `s3.endpoint "127.0.0.1:8333": want the server's http:// or https:// URL`},
		{[]string{"--store", "s3", "--s3-bucket", "b", "--s3-endpoint", "http://h/path"}, nil, `s3.endpoint "http://h/path"`},
		{[]string{"--store", "s3", "--s3-bucket", "b", "--s3-part-size", "1MiB"}, nil, `s3.partSize "1MiB": S3 parts are at least 5MiB`},
		{[]string{"--store", "s3", "--s3-bucket", "b", "--s3-part-size", "lots"}, nil, "s3.partSize"},
		{[]string{"--store", "s3", "--s3-bucket", "b", "--s3-redirect-expiry", "200h"}, nil, "s3.redirectExpiry 200h0m0s: want a duration above 0 and at most 168h"},
		{[]string{"--store", "s3", "--s3-bucket", "b", "--max-size", "80%"}, nil, `maxSize "80%": a percentage of the data directory's filesystem says nothing of a bucket's room`},
		{nil, map[string]string{"REGCACHE_S3_REDIRECT": "yes please"}, `REGCACHE_S3_REDIRECT="yes please": want true or false`},
	} {
		_, err := parseServe(t, c.args, c.env)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v %v: %v, want an error saying %q", c.args, c.env, err, c.want)
		}
	}
}

func TestS3Credentials(t *testing.T) {
	t.Parallel()
	const secret = "wJalrXUtnFEMI-never-printed"
	env := mapEnv(map[string]string{"AWS_ACCESS_KEY_ID": "AKIDENV", "AWS_SECRET_ACCESS_KEY": secret})
	if id, s, _, err := s3Credentials("", env); err != nil || id != "AKIDENV" || s != secret {
		t.Errorf("from the environment: %q, %v", id, err)
	}
	file := writeFile(t, "credentials", "# comment\n[other]\naws_access_key_id = AKIDOTHER\naws_secret_access_key = nope\n\n[default]\naws_access_key_id = AKIDFILE\naws_secret_access_key = "+secret+"\naws_session_token = tok\n")
	if id, s, tok, err := s3Credentials(file, env); err != nil || id != "AKIDFILE" || s != secret || tok != "tok" {
		t.Errorf("from the file: %q %q, %v", id, tok, err)
	}
	for _, c := range []struct {
		file string
		env  map[string]string
		want string
	}{
		{"", map[string]string{"AWS_ACCESS_KEY_ID": "AKID"}, "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or s3.credentialsFile"},
		{writeFile(t, "partial", "[default]\naws_secret_access_key = "+secret+"\n"), nil, "the [default] profile needs aws_access_key_id and aws_secret_access_key"},
		{"/nonexistent/credentials", nil, "s3.credentialsFile"},
	} {
		_, _, _, err := s3Credentials(c.file, mapEnv(c.env))
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), secret) {
			t.Errorf("%q: %v, want an error saying %q (without the secret)", c.file, err, c.want)
		}
	}
}
