package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// versionInfo is what `regcache version` reports: the module version and
// the VCS stamp the Go toolchain put in the binary (go build in a git
// checkout records the commit, its time and whether the tree was modified).
type versionInfo struct {
	Version    string `json:"version"`
	Commit     string `json:"commit,omitempty"`
	CommitTime string `json:"commitTime,omitempty"`
	Modified   bool   `json:"modified,omitempty"`
	Go         string `json:"go"`
	Platform   string `json:"platform"`
}

// readBuildInfo returns the running binary's build info, nil when it has
// none.
func readBuildInfo() *debug.BuildInfo {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return nil
	}
	return bi
}

// newVersionInfo extracts the version from bi (nil: unknown).
func newVersionInfo(bi *debug.BuildInfo) versionInfo {
	v := versionInfo{Version: "unknown", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi == nil {
		return v
	}
	if bi.Main.Version != "" {
		v.Version = bi.Main.Version
	}
	if bi.GoVersion != "" {
		v.Go = bi.GoVersion
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Commit = s.Value
		case "vcs.time":
			v.CommitTime = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// line is the one-line form, without a newline.
func (v versionInfo) line() string {
	parts := []string{"commit unknown"}
	if v.Commit != "" {
		parts[0] = "commit " + v.Commit
	}
	if v.Modified {
		parts = append(parts, "modified")
	}
	if v.CommitTime != "" {
		parts = append(parts, v.CommitTime)
	}
	parts = append(parts, v.Go, v.Platform)
	return fmt.Sprintf("regcache %s (%s)", v.Version, strings.Join(parts, ", "))
}

// String is the text `regcache version` prints.
func (v versionInfo) String() string { return v.line() + "\n" }

// versionCmd is `regcache version`; `regcache --version` prints the same.
func versionCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print regcache's version, the commit it was built from, and the Go version",
		Long: `Print the module version, the VCS commit (with "modified" when the checkout
had uncommitted changes) and the Go version of this binary, as the Go
toolchain recorded them at build time. A binary built outside a git
checkout, or with -buildvcs=false, has no commit.`,
		Example: `  regcache version
  regcache version -o json
  regcache --version`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := newVersionInfo(readBuildInfo())
			if format, _ := cmd.Flags().GetString("output"); format != "text" {
				return printValue(cmd.OutOrStdout(), format, info)
			}
			_, err := io.WriteString(cmd.OutOrStdout(), info.String())
			return err
		},
	}
	outputFlag(cmd, false, "text", "text", "json", "yaml")
	return cmd
}
