package e2e

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/regcache/regcache/e2e/peers"
)

// k8sObject is the subset of Kubernetes objects the deploy tests read.
type k8sObject struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Replicas    *int   `yaml:"replicas"`
		ServiceName string `yaml:"serviceName"`
		Selector    struct {
			MatchLabels map[string]string `yaml:"matchLabels"`
		} `yaml:"selector"`
		// Service
		Ports []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec podSpec `yaml:"spec"`
		} `yaml:"template"`
		VolumeClaimTemplates []struct {
			Metadata struct {
				Name string `yaml:"name"`
			} `yaml:"metadata"`
			Spec struct {
				AccessModes []string `yaml:"accessModes"`
				Resources   struct {
					Requests map[string]string `yaml:"requests"`
				} `yaml:"resources"`
			} `yaml:"spec"`
		} `yaml:"volumeClaimTemplates"`
	} `yaml:"spec"`
}

type podSpec struct {
	EnableServiceLinks           *bool `yaml:"enableServiceLinks"`
	AutomountServiceAccountToken *bool `yaml:"automountServiceAccountToken"`
	SecurityContext              struct {
		RunAsNonRoot *bool `yaml:"runAsNonRoot"`
		RunAsUser    *int  `yaml:"runAsUser"`
		FSGroup      *int  `yaml:"fsGroup"`
	} `yaml:"securityContext"`
	Containers []container `yaml:"containers"`
	Volumes    []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name  string    `yaml:"name"`
			Items []keyPath `yaml:"items"`
		} `yaml:"configMap"`
		Secret *struct {
			SecretName string    `yaml:"secretName"`
			Optional   *bool     `yaml:"optional"`
			Items      []keyPath `yaml:"items"`
		} `yaml:"secret"`
		HostPath *struct {
			Path string `yaml:"path"`
		} `yaml:"hostPath"`
	} `yaml:"volumes"`
}

type keyPath struct {
	Key  string `yaml:"key"`
	Path string `yaml:"path"`
}

type container struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []struct {
		Name  string `yaml:"name"`
		Value string `yaml:"value"`
	} `yaml:"env"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	ReadinessProbe *probe `yaml:"readinessProbe"`
	LivenessProbe  *probe `yaml:"livenessProbe"`
	Resources      struct {
		Requests map[string]string `yaml:"requests"`
		Limits   map[string]string `yaml:"limits"`
	} `yaml:"resources"`
	SecurityContext struct {
		RunAsNonRoot             *bool `yaml:"runAsNonRoot"`
		RunAsUser                *int  `yaml:"runAsUser"`
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

// kustomize renders a kustomization directory with `kubectl kustomize` and
// decodes every object.
func kustomize(t *testing.T, dir string) []k8sObject {
	t.Helper()
	kubectl := peers.Require(t, "kubectl")
	out := runOK(t, peers.RunOptions{}, kubectl, "kustomize", dir)
	var objs []k8sObject
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("kubectl kustomize %s: decode: %v\n%s", dir, err, out)
		}
		objs = append(objs, o)
	}
	return objs
}

// only returns the one object of kind, failing the test if there is not
// exactly one.
func only(t *testing.T, objs []k8sObject, kind string) k8sObject {
	t.Helper()
	var found []k8sObject
	for _, o := range objs {
		if o.Kind == kind {
			found = append(found, o)
		}
	}
	if len(found) != 1 {
		t.Fatalf("rendered manifests hold %d objects of kind %s, want 1", len(found), kind)
	}
	return found[0]
}

func isTrue(b *bool) bool { return b != nil && *b }

// mountOf returns the mount path of volume name in c.
func mountOf(c container, name string) (string, bool) {
	for _, m := range c.VolumeMounts {
		if m.Name == name {
			return m.MountPath, true
		}
	}
	return "", false
}

// TestKustomizeRegcache renders deploy/kubernetes with `kubectl kustomize`,
// parses the output and checks what running regcache in a cluster depends
// on: a StatefulSet whose data volume is a PVC from volumeClaimTemplates
// mounted at /var/lib/regcache, readiness and liveness probes on /readyz and
// /healthz of the container's port 5000, a non-root, read-only,
// no-privilege-escalation, no-capability securityContext, resource requests
// and limits, the generated ConfigMap mounted as /etc/regcache, the admin
// token Secret mounted where config.yaml's adminTokenFile says, and a
// Service onto the port. Then it serves the rendered config.yaml with the
// real regcache binary and probes the two paths the probes use.
func TestKustomizeRegcache(t *testing.T) {
	t.Parallel()
	objs := kustomize(t, filepath.Join(repoRoot(t), "deploy", "kubernetes"))
	for _, o := range objs {
		if o.Kind != "Namespace" && o.Metadata.Namespace != "regcache" {
			t.Errorf("%s %s is in namespace %q, want regcache", o.Kind, o.Metadata.Name, o.Metadata.Namespace)
		}
	}
	sts := only(t, objs, "StatefulSet")
	cm := only(t, objs, "ConfigMap")
	svc := only(t, objs, "Service")
	pod := sts.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("StatefulSet has %d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 1 {
		t.Errorf("StatefulSet replicas %v, want 1 (rules made through the API live in one replica's volume)", sts.Spec.Replicas)
	}
	if sts.Spec.ServiceName != svc.Metadata.Name {
		t.Errorf("StatefulSet serviceName %q, want the Service %q", sts.Spec.ServiceName, svc.Metadata.Name)
	}

	// Port and probes.
	if len(c.Ports) != 1 || c.Ports[0].ContainerPort != 5000 {
		t.Fatalf("container ports %+v, want one, 5000", c.Ports)
	}
	portName := c.Ports[0].Name
	for _, p := range []struct {
		kind  string
		probe *probe
		path  string
	}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port != portName {
			t.Errorf("%s probe %+v, want httpGet %s on port %q", p.kind, p.probe, p.path, portName)
		}
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 5000 || svc.Spec.Ports[0].TargetPort != portName {
		t.Errorf("Service ports %+v, want 5000 -> %q", svc.Spec.Ports, portName)
	}

	// securityContext.
	sc := c.SecurityContext
	if !isTrue(pod.SecurityContext.RunAsNonRoot) && !isTrue(sc.RunAsNonRoot) {
		t.Error("runAsNonRoot is not set")
	}
	if pod.SecurityContext.RunAsUser == nil || *pod.SecurityContext.RunAsUser == 0 {
		t.Errorf("pod runAsUser %v, want a non-root uid (the image's 65532)", pod.SecurityContext.RunAsUser)
	}
	if pod.SecurityContext.FSGroup == nil {
		t.Error("pod fsGroup is not set: the PVC would not be writable by the non-root user")
	}
	if !isTrue(sc.ReadOnlyRootFilesystem) {
		t.Error("readOnlyRootFilesystem is not true")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("allowPrivilegeEscalation is not false")
	}
	if !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("capabilities drop %v, want [ALL]", sc.Capabilities.Drop)
	}
	if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		t.Error("enableServiceLinks is not false: the regcache Service's REGCACHE_* link variables would reach regcache's environment")
	}
	for _, r := range []string{"cpu", "memory"} {
		if c.Resources.Requests[r] == "" {
			t.Errorf("no %s request", r)
		}
	}
	if c.Resources.Limits["memory"] == "" {
		t.Error("no memory limit")
	}

	// Data volume: a PVC from volumeClaimTemplates, mounted at the data dir.
	if len(sts.Spec.VolumeClaimTemplates) != 1 {
		t.Fatalf("volumeClaimTemplates %+v, want one", sts.Spec.VolumeClaimTemplates)
	}
	pvc := sts.Spec.VolumeClaimTemplates[0]
	if mp, ok := mountOf(c, pvc.Metadata.Name); !ok || mp != "/var/lib/regcache" {
		t.Errorf("the PVC %q is mounted at %q, want /var/lib/regcache", pvc.Metadata.Name, mp)
	}
	if !slices.Equal(pvc.Spec.AccessModes, []string{"ReadWriteOnce"}) || pvc.Spec.Resources.Requests["storage"] == "" {
		t.Errorf("PVC spec %+v, want ReadWriteOnce with a storage request", pvc.Spec)
	}

	// Config and admin token volumes.
	config := cm.Data["config.yaml"]
	var cfg struct {
		AdminTokenFile  string `yaml:"adminTokenFile"`
		DefaultRegistry string `yaml:"defaultRegistry"`
	}
	if err := yaml.Unmarshal([]byte(config), &cfg); err != nil || config == "" {
		t.Fatalf("ConfigMap %s: config.yaml: %v\n%s", cm.Metadata.Name, err, config)
	}
	var tokenMount, configMount string
	for _, v := range pod.Volumes {
		switch {
		case v.ConfigMap != nil && v.ConfigMap.Name == cm.Metadata.Name:
			configMount, _ = mountOf(c, v.Name)
		case v.Secret != nil && !isTrue(v.Secret.Optional):
			dir, _ := mountOf(c, v.Name)
			for _, it := range v.Secret.Items {
				tokenMount = dir + "/" + it.Path
			}
		}
	}
	if configMount != "/etc/regcache" || !slices.Contains(c.Args, "/etc/regcache/config.yaml") {
		t.Errorf("the generated ConfigMap %s is mounted at %q and args are %q; want /etc/regcache and --config /etc/regcache/config.yaml", cm.Metadata.Name, configMount, c.Args)
	}
	if tokenMount == "" || tokenMount != cfg.AdminTokenFile {
		t.Errorf("admin token Secret mounted as %q, config.yaml adminTokenFile %q: want the same file", tokenMount, cfg.AdminTokenFile)
	}
	if cfg.DefaultRegistry != "docker.io" {
		t.Errorf("config.yaml defaultRegistry %q, want docker.io (Docker's registry-mirrors)", cfg.DefaultRegistry)
	}

	// regcache accepts the rendered config and answers the probes' paths.
	bin := peers.BuildRegcache(t)
	dir := t.TempDir()
	cfgPath, tokenFile := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "token")
	writeFile(t, cfgPath, config)
	writeFile(t, tokenFile, "e2e-admin-token-0123456789abcdef\n")
	rc := peers.StartRegcache(t, bin, "--config", cfgPath, "--admin-token-file", tokenFile)
	for _, path := range []string{"/readyz", "/healthz"} {
		resp, err := http.Get(rc.URL() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s, want 200", path, resp.Status)
		}
	}
	out := runOK(t, peers.RunOptions{}, bin, "cache", "list", "--server", rc.URL(), "--token", "e2e-admin-token-0123456789abcdef", "-o", "table")
	for _, src := range []string{"docker.io/*", "ghcr.io/*", "quay.io/*", "registry.k8s.io/*"} {
		if !strings.Contains(out, src) {
			t.Errorf("regcache serving the cluster config has no rule for %s:\n%s", src, out)
		}
	}
}

// TestKustomizeNodeMirror renders deploy/containerd (the node mirror
// DaemonSet) and checks that the generated ConfigMap holds exactly the files
// of deploy/containerd (install-hosts.sh and each certs.d/<registry>/
// hosts.toml, byte for byte), that the DaemonSet mounts each of them at the
// path install-hosts.sh reads, and that it writes to the node's
// /etc/containerd/certs.d.
func TestKustomizeNodeMirror(t *testing.T) {
	t.Parallel()
	root := filepath.Join(repoRoot(t), "deploy", "containerd")
	objs := kustomize(t, root)
	ds := only(t, objs, "DaemonSet")
	cm := only(t, objs, "ConfigMap")

	want := map[string]string{} // path under the mounted directory -> content
	script, err := os.ReadFile(filepath.Join(root, "install-hosts.sh"))
	if err != nil {
		t.Fatal(err)
	}
	want["install-hosts.sh"] = string(script)
	hosts, err := filepath.Glob(filepath.Join(root, "certs.d", "*", "hosts.toml"))
	if err != nil || len(hosts) == 0 {
		t.Fatalf("no certs.d/*/hosts.toml under %s: %v", root, err)
	}
	for _, h := range hosts {
		b, err := os.ReadFile(h)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, h)
		want[filepath.ToSlash(rel)] = string(b)
	}
	for _, ns := range []string{"docker.io", "ghcr.io", "quay.io", "registry.k8s.io", "_default"} {
		if _, ok := want["certs.d/"+ns+"/hosts.toml"]; !ok {
			t.Errorf("deploy/containerd/certs.d/%s/hosts.toml is missing", ns)
		}
	}

	pod := ds.Spec.Template.Spec
	got := map[string]string{}
	hostPath := ""
	for _, v := range pod.Volumes {
		if v.ConfigMap != nil {
			if v.ConfigMap.Name != cm.Metadata.Name {
				t.Errorf("DaemonSet volume %s names ConfigMap %s, want the generated %s", v.Name, v.ConfigMap.Name, cm.Metadata.Name)
			}
			for _, it := range v.ConfigMap.Items {
				got[it.Path] = cm.Data[it.Key]
			}
		}
		if v.HostPath != nil {
			hostPath = v.HostPath.Path
		}
	}
	for path, content := range want {
		if got[path] != content {
			t.Errorf("the DaemonSet's %s is not deploy/containerd/%s byte for byte (a file not wired into kustomization.yaml and the volume items?)", path, path)
		}
	}
	if len(got) != len(want) || len(cm.Data) != len(want) {
		t.Errorf("the DaemonSet mounts %d files from a ConfigMap of %d keys; deploy/containerd has %d", len(got), len(cm.Data), len(want))
	}
	if hostPath != "/etc/containerd/certs.d" {
		t.Errorf("the DaemonSet writes to the node's %q, want /etc/containerd/certs.d", hostPath)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("DaemonSet has %d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if sc := c.SecurityContext; !isTrue(sc.ReadOnlyRootFilesystem) || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		!slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("DaemonSet securityContext %+v: want a read-only root, no privilege escalation, capabilities dropped", sc)
	}
}

// TestSystemdUnit verifies deploy/systemd/regcache.service with
// `systemd-analyze verify` (ExecStart pointed at the built binary) and runs
// regcache with deploy/systemd/config.yaml, the file the unit reads.
func TestSystemdUnit(t *testing.T) {
	t.Parallel()
	analyze := peers.Require(t, "systemd-analyze")
	bin := peers.BuildRegcache(t)
	unit, err := os.ReadFile(deployFile(t, "systemd/regcache.service"))
	if err != nil {
		t.Fatal(err)
	}
	s := replaceAll(t, "deploy/systemd/regcache.service", string(unit), "ExecStart=/usr/local/bin/regcache ", "ExecStart="+bin+" ")
	if !strings.Contains(s, "--config /etc/regcache/config.yaml") {
		t.Fatalf("the unit does not read /etc/regcache/config.yaml:\n%s", s)
	}
	unitPath := filepath.Join(t.TempDir(), "regcache.service")
	writeFile(t, unitPath, s)
	stdout, stderr, code := peers.Run(t, analyze, "verify", unitPath)
	// verify prints nothing for a clean unit; any line is a finding.
	if out := strings.TrimSpace(stdout + stderr); code != 0 || out != "" {
		t.Errorf("systemd-analyze verify: exit %d\n%s", code, out)
	}
	for _, want := range []string{"DynamicUser=yes", "StateDirectory=regcache", "NoNewPrivileges=yes", "ProtectSystem=strict", "CapabilityBoundingSet=\n"} {
		if !strings.Contains(s, want) {
			t.Errorf("the unit lacks %q", strings.TrimSpace(want))
		}
	}

	rc := peers.StartRegcache(t, bin, "--config", deployFile(t, "systemd/config.yaml"))
	out := runOK(t, peers.RunOptions{}, bin, "cache", "list", "--server", rc.URL(), "--token", rc.Token(), "-o", "json")
	if !bytes.Contains([]byte(out), []byte(`"docker.io/*"`)) {
		t.Errorf("regcache with deploy/systemd/config.yaml has no docker.io/* rule:\n%s", out)
	}
}
