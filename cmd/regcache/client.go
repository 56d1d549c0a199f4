package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// adminClient talks to the admin API of a running regcache.
type adminClient struct {
	server string
	token  string
	http   *http.Client
}

// clientFlags registers the flags every admin command shares.
func clientFlags(cmd *cobra.Command) {
	connFlags(cmd)
	outputFlag(cmd, true, "json", "json", "table", "yaml")
}

// connFlags registers the flags that reach the server.
func connFlags(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.String("server", "", "regcache URL (env REGCACHE_SERVER; default http://localhost:5000)")
	f.String("ca-cert", "", "PEM file of the CA that signed the server's certificate, for an https --server with a private CA (env REGCACHE_CA_CERT; the system's CAs are trusted too)")
	f.String("token", "", "admin token (env REGCACHE_TOKEN; default: read from --token-file)")
	f.String("token-file", "", "file holding the admin token (default <REGCACHE_DATA_DIR or ./regcache-data>/admin.token)")
}

// outputFormatsKey is the annotation of an --output flag that lists the
// formats its command prints.
const outputFormatsKey = "regcache_output_formats"

// outputFlag registers -o/--output (persistent: for every subcommand too)
// with its default and the formats the command prints; checkCommandLine
// refuses any other value before the command runs, and shell completion
// offers these.
func outputFlag(cmd *cobra.Command, persistent bool, def string, formats ...string) {
	f := cmd.Flags()
	if persistent {
		f = cmd.PersistentFlags()
	}
	f.StringP("output", "o", def, "output format: "+orList(formats))
	f.SetAnnotation("output", outputFormatsKey, formats)
	cmd.RegisterFlagCompletionFunc("output", cobra.FixedCompletions(formats, cobra.ShellCompDirectiveNoFileComp))
}

// checkOutputFormat refuses an --output value the command does not print.
func checkOutputFormat(cmd *cobra.Command) error {
	f := cmd.Flags().Lookup("output")
	if f == nil {
		return nil
	}
	formats := f.Annotations[outputFormatsKey]
	if len(formats) == 0 || slices.Contains(formats, f.Value.String()) {
		return nil
	}
	return fmt.Errorf("--output %q: want %s", f.Value.String(), orList(formats))
}

// orList joins words as "a, b or c".
func orList(words []string) string {
	if len(words) < 2 {
		return strings.Join(words, "")
	}
	return strings.Join(words[:len(words)-1], ", ") + " or " + words[len(words)-1]
}

func newAdminClient(cmd *cobra.Command, getenv func(string) string) (*adminClient, error) {
	pick := func(flag, env, def string) string {
		if v, _ := cmd.Flags().GetString(flag); v != "" {
			return v
		}
		if v := getenv(env); v != "" {
			return v
		}
		return def
	}
	server := strings.TrimRight(pick("server", "REGCACHE_SERVER", "http://localhost:5000"), "/")
	if u, err := url.Parse(server); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		if cmd.Flags().Changed("server") {
			return nil, usageErrorf(cmd, "--server %q: want a URL such as http://localhost:5000", server)
		}
		return nil, fmt.Errorf("REGCACHE_SERVER=%q: want a URL such as http://localhost:5000", server)
	}
	token := pick("token", "REGCACHE_TOKEN", "")
	if token == "" {
		dataDir := getenv("REGCACHE_DATA_DIR")
		if dataDir == "" {
			dataDir = "./regcache-data"
		}
		path := pick("token-file", "", filepath.Join(dataDir, "admin.token"))
		raw, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("no admin token: %s does not exist; pass --token, set REGCACHE_TOKEN, or point --token-file at the server's <data-dir>/admin.token", path)
		}
		if err != nil {
			return nil, fmt.Errorf("admin token: %w", err)
		}
		token = strings.TrimSpace(string(raw))
		if token == "" {
			return nil, fmt.Errorf("admin token file %s is empty", path)
		}
	}
	c := &http.Client{Timeout: 30 * time.Second}
	if caFile := pick("ca-cert", "REGCACHE_CA_CERT", ""); caFile != "" {
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-cert: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-cert %s: no PEM certificate in it", caFile)
		}
		c.Transport = &http.Transport{Proxy: http.ProxyFromEnvironment, TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	return &adminClient{server: server, token: token, http: c}, nil
}

// do sends a JSON request and decodes a JSON answer into out (when not nil).
func (c *adminClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.server+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach regcache at %s: %w", c.server, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read answer from %s: %w", c.server, err)
	}
	if resp.StatusCode/100 != 2 {
		return answerError(method, path, resp.Status, raw)
	}
	if out != nil && len(raw) > 0 {
		return json.Unmarshal(raw, out)
	}
	return nil
}

// doText sends a GET and returns a text answer (a Vault policy).
func (c *adminClient) doText(ctx context.Context, path string, out *string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.server+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach regcache at %s: %w", c.server, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("read answer from %s: %w", c.server, err)
	}
	if resp.StatusCode/100 != 2 {
		return answerError(http.MethodGet, path, resp.Status, raw)
	}
	*out = string(raw)
	return nil
}

// answerError is the error of a failed admin request: the server's message
// and code when the body is an admin error.
func answerError(method, path, status string, raw []byte) error {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(raw, &e) == nil && e.Error.Message != "" {
		return fmt.Errorf("%s (%s)", e.Error.Message, e.Error.Code)
	}
	return fmt.Errorf("%s %s: %s", method, path, status)
}

// printItems writes the answer of an admin command in the --output format:
// JSON or YAML (a list when list is true, else the one item) or a table.
func printItems[T any](cmd *cobra.Command, list bool, items []T, table func(io.Writer, []T) error) error {
	format, _ := cmd.Flags().GetString("output")
	w := cmd.OutOrStdout()
	if format == "table" {
		return table(w, items)
	}
	if list {
		if items == nil {
			items = []T{}
		}
		return printValue(w, format, items)
	}
	return printValue(w, format, items[0])
}

// printValue writes v as indented JSON or as YAML. The YAML is made from
// the JSON, so both have the admin API's keys, in the same order.
func printValue(w io.Writer, format string, v any) error {
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	switch format {
	case "json":
		_, err = fmt.Fprintf(w, "%s\n", raw)
		return err
	case "yaml":
		var doc yaml.Node
		if err := yaml.Unmarshal(raw, &doc); err != nil {
			return err
		}
		blockStyle(&doc)
		enc := yaml.NewEncoder(w)
		enc.SetIndent(2)
		if err := enc.Encode(&doc); err != nil {
			return err
		}
		return enc.Close()
	}
	return fmt.Errorf("--output %q: want json or yaml", format)
}

// blockStyle drops the flow style and quoting that parsing JSON gives
// every node, so that the encoder writes block YAML and quotes only where
// YAML needs it.
func blockStyle(n *yaml.Node) {
	n.Style = 0
	for _, c := range n.Content {
		blockStyle(c)
	}
}
