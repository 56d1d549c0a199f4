package e2e

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/regcache/regcache/e2e/peers"
)

// haObject is the subset of Kubernetes objects the deploy/kubernetes-ha
// test reads (more of a pod template than k8sObject: env sources, spread
// constraints, rollout strategy, headless Services, budgets).
type haObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name      string `yaml:"name"`
		Namespace string `yaml:"namespace"`
	} `yaml:"metadata"`
	Data map[string]string `yaml:"data"`
	Spec struct {
		Replicas            *int        `yaml:"replicas"`
		ServiceName         string      `yaml:"serviceName"`
		PodManagementPolicy string      `yaml:"podManagementPolicy"`
		Selector            haSelector  `yaml:"selector"` // workloads and budgets
		MaxUnavailable      any         `yaml:"maxUnavailable"`
		MinAvailable        any         `yaml:"minAvailable"`
		PodSelector         haSelector  `yaml:"podSelector"` // NetworkPolicy
		Ingress             []haIngress `yaml:"ingress"`
		Strategy            struct {
			Type          string `yaml:"type"`
			RollingUpdate struct {
				MaxUnavailable any `yaml:"maxUnavailable"`
				MaxSurge       any `yaml:"maxSurge"`
			} `yaml:"rollingUpdate"`
		} `yaml:"strategy"`
		// Service (its selector is a plain map: see ServiceSelector).
		ClusterIP                string `yaml:"clusterIP"`
		PublishNotReadyAddresses *bool  `yaml:"publishNotReadyAddresses"`
		Ports                    []struct {
			Name       string `yaml:"name"`
			Port       int    `yaml:"port"`
			TargetPort string `yaml:"targetPort"`
		} `yaml:"ports"`
		Template struct {
			Metadata struct {
				Labels map[string]string `yaml:"labels"`
			} `yaml:"metadata"`
			Spec haPodSpec `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
	// ServiceSelector is spec.selector of a Service, decoded separately.
	ServiceSelector map[string]string `yaml:"-"`
}

// haSelector is a label selector; a Service's selector is matchLabels
// itself (see ServiceSelector).
type haSelector struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

type haIngress struct {
	From []struct {
		PodSelector *haSelector `yaml:"podSelector"`
	} `yaml:"from"`
	Ports []struct {
		Port any `yaml:"port"`
	} `yaml:"ports"`
}

type haPodSpec struct {
	EnableServiceLinks            *bool `yaml:"enableServiceLinks"`
	AutomountServiceAccountToken  *bool `yaml:"automountServiceAccountToken"`
	TerminationGracePeriodSeconds *int  `yaml:"terminationGracePeriodSeconds"`
	SecurityContext               struct {
		RunAsNonRoot   *bool `yaml:"runAsNonRoot"`
		RunAsUser      *int  `yaml:"runAsUser"`
		FSGroup        *int  `yaml:"fsGroup"`
		SeccompProfile struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	TopologySpreadConstraints []struct {
		TopologyKey       string     `yaml:"topologyKey"`
		MaxSkew           int        `yaml:"maxSkew"`
		WhenUnsatisfiable string     `yaml:"whenUnsatisfiable"`
		LabelSelector     haSelector `yaml:"labelSelector"`
	} `yaml:"topologySpreadConstraints"`
	Containers []haContainer `yaml:"containers"`
	Volumes    []struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		Secret *struct {
			SecretName string    `yaml:"secretName"`
			Optional   *bool     `yaml:"optional"`
			Items      []keyPath `yaml:"items"`
		} `yaml:"secret"`
		EmptyDir *struct {
			SizeLimit string `yaml:"sizeLimit"`
		} `yaml:"emptyDir"`
	} `yaml:"volumes"`
}

// haContainer is container with the sources of env values.
type haContainer struct {
	Name  string   `yaml:"name"`
	Image string   `yaml:"image"`
	Args  []string `yaml:"args"`
	Env   []haEnv  `yaml:"env"`
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
		AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   *bool `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
		} `yaml:"capabilities"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
}

// mount returns the mount path of volume name.
func (c haContainer) mount(name string) (string, bool) {
	for _, m := range c.VolumeMounts {
		if m.Name == name {
			return m.MountPath, true
		}
	}
	return "", false
}

type haEnv struct {
	Name      string `yaml:"name"`
	Value     string `yaml:"value"`
	ValueFrom *struct {
		FieldRef *struct {
			FieldPath string `yaml:"fieldPath"`
		} `yaml:"fieldRef"`
		SecretKeyRef *struct {
			Name string `yaml:"name"`
			Key  string `yaml:"key"`
		} `yaml:"secretKeyRef"`
	} `yaml:"valueFrom"`
}

// haConfig is the part of the replicas' config.yaml the manifests wire up.
type haConfig struct {
	AdminTokenFile string `yaml:"adminTokenFile"`
	Store          string `yaml:"store"`
	S3             struct {
		Endpoint  string `yaml:"endpoint"`
		Bucket    string `yaml:"bucket"`
		PathStyle *bool  `yaml:"pathStyle"`
	} `yaml:"s3"`
	Meta string `yaml:"meta"`
	Etcd struct {
		Endpoints []string `yaml:"endpoints"`
		Prefix    string   `yaml:"prefix"`
	} `yaml:"etcd"`
	Cluster struct {
		Listen     string `yaml:"listen"`
		PeersDNS   string `yaml:"peersDNS"`
		SecretFile string `yaml:"secretFile"`
	} `yaml:"cluster"`
}

// kustomizeHA renders dir with `kubectl kustomize` into haObjects.
func kustomizeHA(t *testing.T, dir string) []haObject {
	t.Helper()
	kubectl := peers.Require(t, "kubectl")
	out := runOK(t, peers.RunOptions{}, kubectl, "kustomize", dir)
	var objs []haObject
	dec := yaml.NewDecoder(strings.NewReader(out))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return objs
		}
		var o haObject
		if err == nil {
			err = n.Decode(&o)
		}
		if err == nil && o.Kind == "Service" {
			var svc struct {
				Spec struct {
					Selector map[string]string `yaml:"selector"`
				} `yaml:"spec"`
			}
			err = n.Decode(&svc)
			o.ServiceSelector = svc.Spec.Selector
		}
		if err != nil {
			t.Fatalf("kubectl kustomize %s: decode: %v\n%s", dir, err, out)
		}
		objs = append(objs, o)
	}
}

// haFind returns the object of kind and name, failing the test if there is
// none.
func haFind(t *testing.T, objs []haObject, kind, name string) haObject {
	t.Helper()
	for _, o := range objs {
		if o.Kind == kind && o.Metadata.Name == name {
			return o
		}
	}
	t.Fatalf("rendered manifests hold no %s %s", kind, name)
	return haObject{}
}

// selects reports whether every label of sel is on labels (and sel is not
// empty: an empty selector selecting everything is never what is meant).
func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// envOf returns the env entry name of c and its index.
func envOf(c haContainer, name string) (haEnv, int) {
	for i, e := range c.Env {
		if e.Name == name {
			return e, i
		}
	}
	return haEnv{}, -1
}

// haSecretFile returns the file the Secret named secret (a volume of one
// item) is mounted as in c.
func haSecretFile(pod haPodSpec, c haContainer, secret string) string {
	for _, v := range pod.Volumes {
		if v.Secret == nil || v.Secret.SecretName != secret || len(v.Secret.Items) != 1 {
			continue
		}
		if dir, ok := c.mount(v.Name); ok {
			return dir + "/" + v.Secret.Items[0].Path
		}
	}
	return ""
}

// checkHardened checks the pod and container security settings shared by
// the regcache and etcd pods.
func checkHardened(t *testing.T, what string, pod haPodSpec, c haContainer) {
	t.Helper()
	sc := c.SecurityContext
	if !isTrue(pod.SecurityContext.RunAsNonRoot) && !isTrue(sc.RunAsNonRoot) {
		t.Errorf("%s: runAsNonRoot is not set", what)
	}
	if pod.SecurityContext.RunAsUser == nil || *pod.SecurityContext.RunAsUser == 0 {
		t.Errorf("%s: pod runAsUser %s, want a non-root uid", what, intOrUnset(pod.SecurityContext.RunAsUser))
	}
	if pod.SecurityContext.SeccompProfile.Type != "RuntimeDefault" {
		t.Errorf("%s: seccompProfile %q, want RuntimeDefault", what, pod.SecurityContext.SeccompProfile.Type)
	}
	if !isTrue(sc.ReadOnlyRootFilesystem) {
		t.Errorf("%s: readOnlyRootFilesystem is not true", what)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation is not false", what)
	}
	if !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("%s: capabilities drop %v, want [ALL]", what, sc.Capabilities.Drop)
	}
	if pod.EnableServiceLinks == nil || *pod.EnableServiceLinks {
		t.Errorf("%s: enableServiceLinks is not false: service link variables would reach the program's own environment configuration", what)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken is not false: it talks to no Kubernetes API", what)
	}
	if pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds < 30 {
		t.Errorf("%s: terminationGracePeriodSeconds %s, want at least 30", what, intOrUnset(pod.TerminationGracePeriodSeconds))
	}
	for _, r := range []string{"cpu", "memory"} {
		if c.Resources.Requests[r] == "" {
			t.Errorf("%s: no %s request", what, r)
		}
	}
	if c.Resources.Limits["memory"] == "" {
		t.Errorf("%s: no memory limit", what)
	}
}

// checkSpread checks that pods labelled labels are spread over nodes (hard)
// and zones (soft).
func checkSpread(t *testing.T, what string, pod haPodSpec, labels map[string]string) {
	t.Helper()
	want := map[string]string{"kubernetes.io/hostname": "DoNotSchedule", "topology.kubernetes.io/zone": "ScheduleAnyway"}
	for _, c := range pod.TopologySpreadConstraints {
		if w, ok := want[c.TopologyKey]; ok && c.WhenUnsatisfiable == w && c.MaxSkew == 1 && selects(c.LabelSelector.MatchLabels, labels) {
			delete(want, c.TopologyKey)
		}
	}
	for key, when := range want {
		t.Errorf("%s: no topologySpreadConstraint over %s (maxSkew 1, %s) selecting its pods %v", what, key, when, labels)
	}
}

// checkBudget checks that a PodDisruptionBudget selects the pods and lets
// at most one of replicas go at a time, with at least two serving.
func checkBudget(t *testing.T, pdb haObject, labels map[string]string, replicas int) {
	t.Helper()
	if !selects(pdb.Spec.Selector.MatchLabels, labels) {
		t.Errorf("PodDisruptionBudget %s selects %v, not the pods %v", pdb.Metadata.Name, pdb.Spec.Selector.MatchLabels, labels)
	}
	down := -1
	switch {
	case pdb.Spec.MaxUnavailable != nil && pdb.Spec.MinAvailable == nil:
		down, _ = strconv.Atoi(fmt.Sprint(pdb.Spec.MaxUnavailable))
	case pdb.Spec.MinAvailable != nil && pdb.Spec.MaxUnavailable == nil:
		if n, err := strconv.Atoi(fmt.Sprint(pdb.Spec.MinAvailable)); err == nil {
			down = replicas - n
		}
	}
	if down != 1 || replicas-down < 2 {
		t.Errorf("PodDisruptionBudget %s: maxUnavailable %v, minAvailable %v: want one of %d pods down at most (an absolute number)",
			pdb.Metadata.Name, pdb.Spec.MaxUnavailable, pdb.Spec.MinAvailable, replicas)
	}
}

// secretLike matches config keys that would hold a credential.
var secretLike = regexp.MustCompile(`(?i)secret|password|token|accesskey|credential`)

// checkNoSecretValues fails for every mapping key of v that names a
// credential without being a reference to a file (…File).
func checkNoSecretValues(t *testing.T, path string, v any) {
	t.Helper()
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if secretLike.MatchString(k) && !strings.HasSuffix(k, "File") {
				t.Errorf("config.yaml %s%s holds a value, not a file: secrets come from Secrets, never from the ConfigMap", path, k)
			}
			checkNoSecretValues(t, path+k+".", x)
		}
	case []any:
		for i, x := range v {
			checkNoSecretValues(t, fmt.Sprintf("%s%d.", path, i), x)
		}
	}
}

// TestKustomizeRegcacheHA renders deploy/kubernetes-ha with `kubectl
// kustomize` and checks what running regcache as replicas on shared storage
// depends on: a Deployment of 3 with an emptyDir data directory, rolled one
// extra replica at a time, spread over nodes and zones, under a
// PodDisruptionBudget; the client Service and the headless peer Service on
// the peer port; the pod's IP as the peer advertise address; S3 credentials,
// admin token and peer secret from Secrets, where config.yaml expects them;
// the hardening of deploy/kubernetes; a config.yaml on the S3 store, etcd
// and the peer channel, naming the Services rendered next to it and holding
// no secret; and the included three-member etcd, wired consistently.
func TestKustomizeRegcacheHA(t *testing.T) {
	t.Parallel()
	const ns = "regcache"
	objs := kustomizeHA(t, filepath.Join(repoRoot(t), "deploy", "kubernetes-ha"))
	for _, o := range objs {
		if o.Kind != "Namespace" && o.Metadata.Namespace != ns {
			t.Errorf("%s %s is in namespace %q, want %s", o.Kind, o.Metadata.Name, o.Metadata.Namespace, ns)
		}
		if o.Kind == "Secret" {
			t.Errorf("Secret %s is rendered: secrets are created with kubectl create secret, never kept in the repository", o.Metadata.Name)
		}
	}

	dep := haFind(t, objs, "Deployment", "regcache")
	pod := dep.Spec.Template.Spec
	labels := dep.Spec.Template.Metadata.Labels
	if !selects(dep.Spec.Selector.MatchLabels, labels) {
		t.Fatalf("Deployment selector %v does not select its pods %v", dep.Spec.Selector.MatchLabels, labels)
	}
	if n := dep.Spec.Replicas; n == nil || *n != 3 {
		t.Errorf("Deployment replicas %s, want 3", intOrUnset(n))
	}
	ru := dep.Spec.Strategy.RollingUpdate
	if dep.Spec.Strategy.Type != "RollingUpdate" || fmt.Sprint(ru.MaxUnavailable) != "0" || fmt.Sprint(ru.MaxSurge) != "1" {
		t.Errorf("Deployment strategy %+v, want RollingUpdate with maxUnavailable 0, maxSurge 1 (all replicas serve through a rollout)", dep.Spec.Strategy)
	}
	checkSpread(t, "Deployment regcache", pod, labels)
	checkBudget(t, haFind(t, objs, "PodDisruptionBudget", "regcache"), labels, 3)
	if len(pod.Containers) != 1 {
		t.Fatalf("Deployment has %d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	checkHardened(t, "Deployment regcache", pod, c)

	// Ports, probes, Services.
	ports := map[string]int{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["http"] != 5000 || ports["peer"] != 5001 || len(ports) != 2 {
		t.Fatalf("container ports %v, want http 5000 and peer 5001", ports)
	}
	for _, p := range []struct {
		kind  string
		probe *probe
		path  string
	}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil || p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port != "http" {
			t.Errorf("%s probe %+v, want httpGet %s on port http", p.kind, p.probe, p.path)
		}
	}
	svc := haFind(t, objs, "Service", "regcache")
	if !selects(svc.ServiceSelector, labels) || svc.Spec.ClusterIP == "None" ||
		len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 5000 || svc.Spec.Ports[0].TargetPort != "http" {
		t.Errorf("Service regcache: selector %v, clusterIP %q, ports %+v; want the pods %v, a ClusterIP, 5000 -> http",
			svc.ServiceSelector, svc.Spec.ClusterIP, svc.Spec.Ports, labels)
	}
	peersSvc := haFind(t, objs, "Service", "regcache-peers")
	if !selects(peersSvc.ServiceSelector, labels) {
		t.Errorf("Service regcache-peers selects %v, not the pods %v", peersSvc.ServiceSelector, labels)
	}
	if peersSvc.Spec.ClusterIP != "None" {
		t.Errorf("Service regcache-peers clusterIP %q, want None (headless: its name resolves to every replica)", peersSvc.Spec.ClusterIP)
	}
	if peersSvc.Spec.PublishNotReadyAddresses == nil || *peersSvc.Spec.PublishNotReadyAddresses {
		t.Error("Service regcache-peers: publishNotReadyAddresses is not false: replicas that are not ready would be asked as peers")
	}
	if len(peersSvc.Spec.Ports) != 1 || peersSvc.Spec.Ports[0].Name != "peer" || peersSvc.Spec.Ports[0].Port != 5001 || peersSvc.Spec.Ports[0].TargetPort != "peer" {
		t.Errorf("Service regcache-peers ports %+v, want peer 5001 -> peer", peersSvc.Spec.Ports)
	}

	// The advertise address and the S3 credentials.
	podIP, ipAt := envOf(c, "POD_IP")
	if podIP.ValueFrom == nil || podIP.ValueFrom.FieldRef == nil || podIP.ValueFrom.FieldRef.FieldPath != "status.podIP" {
		t.Errorf("env POD_IP %+v, want the downward API's status.podIP", podIP)
	}
	adv, advAt := envOf(c, "REGCACHE_PEER_ADVERTISE")
	if adv.Value != "$(POD_IP):5001" || advAt < ipAt || ipAt < 0 {
		t.Errorf("env REGCACHE_PEER_ADVERTISE %q (entry %d, POD_IP entry %d), want $(POD_IP):5001 after POD_IP (Kubernetes expands only variables defined before)",
			adv.Value, advAt, ipAt)
	}
	for _, name := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} {
		e, _ := envOf(c, name)
		if e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || e.ValueFrom.SecretKeyRef.Name == "" || e.ValueFrom.SecretKeyRef.Key == "" {
			t.Errorf("env %s is not taken from a Secret (secretKeyRef)", name)
		}
	}

	// Volumes: scratch data dir, config, the Secrets config.yaml names.
	var cm haObject
	for _, o := range objs {
		if o.Kind == "ConfigMap" && strings.HasPrefix(o.Metadata.Name, "regcache-config") {
			cm = o
		}
	}
	var dataEmpty, configMounted bool
	for _, v := range pod.Volumes {
		mp, _ := c.mount(v.Name)
		switch {
		case v.EmptyDir != nil && mp == "/var/lib/regcache":
			dataEmpty = true
		case v.ConfigMap != nil && v.ConfigMap.Name == cm.Metadata.Name && cm.Metadata.Name != "":
			configMounted = mp == "/etc/regcache" && slices.Contains(c.Args, "/etc/regcache/config.yaml")
		}
	}
	if !dataEmpty {
		t.Error("no emptyDir mounted at /var/lib/regcache: replicas keep nothing of their own")
	}
	if !configMounted {
		t.Errorf("the generated ConfigMap %q is not mounted at /etc/regcache with args --config /etc/regcache/config.yaml (args %q)", cm.Metadata.Name, c.Args)
	}

	// config.yaml.
	raw := cm.Data["config.yaml"]
	var cfg haConfig
	var tree any
	if err := yaml.Unmarshal([]byte(raw), &cfg); err != nil || raw == "" {
		t.Fatalf("ConfigMap %s: config.yaml: %v\n%s", cm.Metadata.Name, err, raw)
	}
	if err := yaml.Unmarshal([]byte(raw), &tree); err != nil {
		t.Fatal(err)
	}
	checkNoSecretValues(t, "", tree)
	if len(cm.Data) != 1 {
		t.Errorf("ConfigMap %s has keys %v, want config.yaml only", cm.Metadata.Name, slices.Collect(maps.Keys(cm.Data)))
	}
	if cfg.Store != "s3" || cfg.S3.Endpoint == "" || cfg.S3.Bucket == "" || cfg.S3.PathStyle == nil {
		t.Errorf("config.yaml store %q, s3 %+v: want store: s3 with s3.endpoint, s3.bucket and s3.pathStyle", cfg.Store, cfg.S3)
	} else if u, err := url.Parse(cfg.S3.Endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		t.Errorf("config.yaml s3.endpoint %q is not an http(s) URL", cfg.S3.Endpoint)
	}
	if cfg.Meta != "etcd" || !slices.Equal(cfg.Etcd.Endpoints, []string{"http://etcd:2379"}) || cfg.Etcd.Prefix != "/regcache/" {
		t.Errorf("config.yaml meta %q, etcd %+v: want meta: etcd, endpoints [http://etcd:2379], prefix /regcache/", cfg.Meta, cfg.Etcd)
	}
	if _, port, err := net.SplitHostPort(cfg.Cluster.Listen); err != nil || port != strconv.Itoa(ports["peer"]) {
		t.Errorf("config.yaml cluster.listen %q, want the container's peer port %d", cfg.Cluster.Listen, ports["peer"])
	}
	if want := fmt.Sprintf("%s.%s.svc.cluster.local:%d", peersSvc.Metadata.Name, ns, peersSvc.Spec.Ports[0].Port); cfg.Cluster.PeersDNS != want {
		t.Errorf("config.yaml cluster.peersDNS %q, want the headless Service %q", cfg.Cluster.PeersDNS, want)
	}
	if f := haSecretFile(pod, c, "regcache-admin-token"); f == "" || f != cfg.AdminTokenFile {
		t.Errorf("admin token Secret mounted as %q, config.yaml adminTokenFile %q: want the same file", f, cfg.AdminTokenFile)
	}
	if f := haSecretFile(pod, c, "regcache-peer"); f == "" || f != cfg.Cluster.SecretFile {
		t.Errorf("peer Secret mounted as %q, config.yaml cluster.secretFile %q: want the same file", f, cfg.Cluster.SecretFile)
	}

	// The etcd config.yaml names: a Service etcd on 2379 in front of three
	// members.
	etcdSvc := haFind(t, objs, "Service", "etcd")
	if len(etcdSvc.Spec.Ports) != 1 || etcdSvc.Spec.Ports[0].Port != 2379 {
		t.Errorf("Service etcd ports %+v, want 2379", etcdSvc.Spec.Ports)
	}
	checkEtcd(t, objs, etcdSvc.ServiceSelector, labels)
}

// TestKustomizeEtcdAlone renders deploy/kubernetes-ha/etcd on its own, as
// those who apply it apart from regcache do.
func TestKustomizeEtcdAlone(t *testing.T) {
	t.Parallel()
	objs := kustomizeHA(t, filepath.Join(repoRoot(t), "deploy", "kubernetes-ha", "etcd"))
	for _, o := range objs {
		if o.Metadata.Namespace != "regcache" {
			t.Errorf("%s %s is in namespace %q, want regcache", o.Kind, o.Metadata.Name, o.Metadata.Namespace)
		}
		if o.Kind == "Namespace" {
			t.Error("deploy/kubernetes-ha/etcd renders a Namespace: including it in deploy/kubernetes-ha would render that twice")
		}
	}
	svc := haFind(t, objs, "Service", "etcd")
	checkEtcd(t, objs, svc.ServiceSelector, map[string]string{"app.kubernetes.io/name": "regcache"})
}

// checkEtcd checks the etcd StatefulSet of objs: three members the client
// Service (selector svcSelector) selects, bootstrapping from each other's
// stable names, under a budget that keeps the quorum, hardened, and reachable
// on the client port by pods labelled clientLabels.
func checkEtcd(t *testing.T, objs []haObject, svcSelector, clientLabels map[string]string) {
	t.Helper()
	sts := haFind(t, objs, "StatefulSet", "etcd")
	pod := sts.Spec.Template.Spec
	labels := sts.Spec.Template.Metadata.Labels
	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
		t.Fatalf("etcd StatefulSet replicas %s, want 3", intOrUnset(sts.Spec.Replicas))
	}
	if !selects(svcSelector, labels) {
		t.Errorf("Service etcd selects %v, not the etcd pods %v", svcSelector, labels)
	}
	if sts.Spec.PodManagementPolicy != "Parallel" {
		t.Errorf("etcd podManagementPolicy %q, want Parallel (a member is ready only once a quorum runs)", sts.Spec.PodManagementPolicy)
	}
	headless := haFind(t, objs, "Service", sts.Spec.ServiceName)
	if headless.Spec.ClusterIP != "None" || !isTrue(headless.Spec.PublishNotReadyAddresses) || !selects(headless.ServiceSelector, labels) {
		t.Errorf("etcd serviceName %s: clusterIP %q, publishNotReadyAddresses %v, selector %v; want a headless Service publishing the not-ready members %v",
			sts.Spec.ServiceName, headless.Spec.ClusterIP, headless.Spec.PublishNotReadyAddresses, headless.ServiceSelector, labels)
	}
	checkBudget(t, haFind(t, objs, "PodDisruptionBudget", "etcd"), labels, 3)
	checkSpread(t, "etcd StatefulSet", pod, labels)
	if len(pod.Containers) != 1 {
		t.Fatalf("etcd StatefulSet has %d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	checkHardened(t, "etcd StatefulSet", pod, c)
	if _, tag, ok := strings.Cut(c.Image, ":"); !ok || tag == "" || tag == "latest" {
		t.Errorf("etcd image %q is not pinned to a version", c.Image)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil {
		t.Error("etcd has no HTTP readiness and liveness probes")
	}

	// The initial cluster names every member by the name it will have:
	// <statefulset>-<ordinal>, under the headless Service.
	var members []string
	for i := range *sts.Spec.Replicas {
		m := fmt.Sprintf("%s-%d", sts.Metadata.Name, i)
		members = append(members, fmt.Sprintf("%s=http://%s.%s.$(POD_NAMESPACE).svc:2380", m, m, sts.Spec.ServiceName))
	}
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if got := env["ETCD_INITIAL_CLUSTER"]; got != strings.Join(members, ",") {
		t.Errorf("ETCD_INITIAL_CLUSTER %q, want %q", got, strings.Join(members, ","))
	}
	if env["ETCD_NAME"] != "$(POD_NAME)" || env["ETCD_INITIAL_ADVERTISE_PEER_URLS"] != "http://$(POD_NAME)."+sts.Spec.ServiceName+".$(POD_NAMESPACE).svc:2380" {
		t.Errorf("ETCD_NAME %q, ETCD_INITIAL_ADVERTISE_PEER_URLS %q: want the pod's name and its stable DNS name", env["ETCD_NAME"], env["ETCD_INITIAL_ADVERTISE_PEER_URLS"])
	}
	if !strings.HasPrefix(env["ETCD_DATA_DIR"], "/var/lib/etcd/") {
		t.Errorf("ETCD_DATA_DIR %q, want a directory in the volume mounted at /var/lib/etcd", env["ETCD_DATA_DIR"])
	}

	// The NetworkPolicy admits regcache to the client port.
	np := haFind(t, objs, "NetworkPolicy", "etcd")
	if !selects(np.Spec.PodSelector.MatchLabels, labels) {
		t.Errorf("NetworkPolicy etcd selects %v, not the etcd pods %v", np.Spec.PodSelector.MatchLabels, labels)
	}
	admitted := false
	for _, in := range np.Spec.Ingress {
		for _, f := range in.From {
			for _, p := range in.Ports {
				if f.PodSelector != nil && selects(f.PodSelector.MatchLabels, clientLabels) && fmt.Sprint(p.Port) == "2379" {
					admitted = true
				}
			}
		}
	}
	if !admitted {
		t.Errorf("NetworkPolicy etcd does not admit the regcache pods %v to port 2379", clientLabels)
	}
}

// intOrUnset formats an optional number of a manifest.
func intOrUnset(n *int) string {
	if n == nil {
		return "unset"
	}
	return strconv.Itoa(*n)
}

// TestKustomizeRegcacheHAServes starts regcache with the config.yaml that
// deploy/kubernetes-ha renders, only the addresses of the cluster's
// services replaced by loopback peers (a SeaweedFS bucket, an etcd, the
// peer channel on a loopback port and localhost as the headless Service's
// name), as a pod would: regcache accepts it, is ready, and serves the
// rules it declares.
func TestKustomizeRegcacheHAServes(t *testing.T) {
	t.Parallel()
	objs := kustomizeHA(t, filepath.Join(repoRoot(t), "deploy", "kubernetes-ha"))
	var config string
	for _, o := range objs {
		if o.Kind == "ConfigMap" && strings.HasPrefix(o.Metadata.Name, "regcache-config") {
			config = o.Data["config.yaml"]
		}
	}
	if config == "" {
		t.Fatal("no regcache-config ConfigMap with a config.yaml")
	}
	s3 := peers.StartS3(t)
	etcd := peers.StartEtcd(t)
	dir := t.TempDir()
	cfgPath, tokenFile, secretFile := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "token"), filepath.Join(dir, "peer.secret")
	writeFile(t, cfgPath, config)
	writeFile(t, tokenFile, "e2e-admin-token-0123456789abcdef\n")
	writeFile(t, secretFile, "e2e-peer-secret-0123456789abcdef0123456789\n")
	_, port, err := net.SplitHostPort(freeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	peer := "127.0.0.1:" + port
	bin := peers.BuildRegcache(t)
	// --store s3 repeats the config's store: with REGCACHE_E2E_STORE=s3
	// the harness then leaves the store to this test.
	rc := peers.StartRegcacheWith(t, bin, peers.ServeOptions{Env: s3.Env()}, "--config", cfgPath,
		"--store", "s3", "--s3-endpoint", s3.Endpoint, "--s3-bucket", s3.Bucket(t), "--etcd-endpoints", etcd.Endpoint,
		"--peer-listen", peer, "--peer-advertise", peer, "--peers-dns", "localhost:"+port,
		"--peer-secret-file", secretFile, "--admin-token-file", tokenFile)
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
			t.Errorf("regcache serving the replicas' config has no rule for %s:\n%s", src, out)
		}
	}
}
