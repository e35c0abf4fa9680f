// Package deploy holds the container and Kubernetes deployment files of
// throng (docs/kubernetes.md); its tests render the Helm chart with the
// Helm SDK, decode every manifest strictly into the Kubernetes API types
// and check that the StatefulSet gives `throng serve` the settings the
// cluster code expects, parsed by the real config loader.
package deploy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/throngmq/throng/internal/config"
)

// objects are the decoded manifests of one rendering, by kind.
type objects struct {
	statefulSets []*appsv1.StatefulSet
	services     []*corev1.Service
	secrets      []*corev1.Secret
	pdbs         []*policyv1.PodDisruptionBudget
	jobs         []*batchv1.Job
}

// decode decodes every YAML document of src strictly: a field the API
// type does not have fails, as does a kind the deployment does not use.
func (o *objects) decode(t *testing.T, name, src string) {
	t.Helper()
	for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(src, -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("%s doc %d: %v", name, i, err)
		}
		var meta struct{ APIVersion, Kind string }
		if err := json.Unmarshal(js, &meta); err != nil {
			t.Fatalf("%s doc %d: %v", name, i, err)
		}
		var into any
		switch meta.APIVersion + " " + meta.Kind {
		case "apps/v1 StatefulSet":
			v := &appsv1.StatefulSet{}
			o.statefulSets, into = append(o.statefulSets, v), v
		case "v1 Service":
			v := &corev1.Service{}
			o.services, into = append(o.services, v), v
		case "v1 Secret":
			v := &corev1.Secret{}
			o.secrets, into = append(o.secrets, v), v
		case "policy/v1 PodDisruptionBudget":
			v := &policyv1.PodDisruptionBudget{}
			o.pdbs, into = append(o.pdbs, v), v
		case "batch/v1 Job":
			v := &batchv1.Job{}
			o.jobs, into = append(o.jobs, v), v
		default:
			t.Fatalf("%s doc %d: unexpected %s %s", name, i, meta.APIVersion, meta.Kind)
		}
		dec := json.NewDecoder(bytes.NewReader(js))
		dec.DisallowUnknownFields()
		if err := dec.Decode(into); err != nil {
			t.Fatalf("%s doc %d (%s): %v", name, i, meta.Kind, err)
		}
	}
}

func stripComments(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// render renders the chart with the values files (none: the defaults) as
// release "throng" in namespace "iot".
func render(t *testing.T, valueFiles ...string) *objects {
	t.Helper()
	ch, err := loader.Load(filepath.Join("helm", "throng"))
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]any{}
	for _, f := range valueFiles {
		v, err := common.ReadValuesFile(f)
		if err != nil {
			t.Fatal(err)
		}
		vals = v.AsMap()
	}
	rv, err := util.ToRenderValues(ch, vals, common.ReleaseOptions{Name: "throng", Namespace: "iot", Revision: 1, IsInstall: true}, common.DefaultCapabilities)
	if err != nil {
		t.Fatal(err)
	}
	out, err := engine.Render(ch, rv)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(out))
	for n := range out {
		names = append(names, n)
	}
	sort.Strings(names)
	o := &objects{}
	for _, n := range names {
		if strings.HasSuffix(n, "NOTES.txt") {
			if !strings.Contains(out[n], "kubectl port-forward") {
				t.Errorf("NOTES.txt: %q", out[n])
			}
			continue
		}
		o.decode(t, n, out[n])
	}
	return o
}

// node is what one pod of the StatefulSet runs: its arguments and
// environment, as the kubelet would give them.
type node struct {
	args []string
	env  []string
	cfg  *config.Config
}

// podNode resolves the StatefulSet's container env for pod ordinal i in
// namespace ns: downward API fields, secret keys (as "secret:<name>/<key>")
// and $(VAR) references to variables defined before, as the kubelet
// does; then it loads the configuration with the real loader.
//
// Files under /etc/throng/ (the mounted TLS Secrets) are read from
// root+path when root is set: the loader opens them.
func podNode(t *testing.T, sts *appsv1.StatefulSet, ns string, i int, root ...string) node {
	t.Helper()
	c := sts.Spec.Template.Spec.Containers[0]
	vars := map[string]string{}
	var env []string
	ref := regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)
	for _, e := range c.Env {
		v := e.Value
		switch {
		case e.ValueFrom == nil:
			v = ref.ReplaceAllStringFunc(v, func(m string) string {
				if x, ok := vars[m[2:len(m)-1]]; ok {
					return x
				}
				return m
			})
		case e.ValueFrom.FieldRef != nil:
			switch e.ValueFrom.FieldRef.FieldPath {
			case "metadata.name":
				v = fmt.Sprintf("%s-%d", sts.Name, i)
			case "metadata.namespace":
				v = ns
			default:
				t.Fatalf("env %s: field %s", e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
		case e.ValueFrom.SecretKeyRef != nil:
			v = "secret:" + e.ValueFrom.SecretKeyRef.Name + "/" + e.ValueFrom.SecretKeyRef.Key
		default:
			t.Fatalf("env %s: unexpected valueFrom", e.Name)
		}
		vars[e.Name] = v
		if len(root) > 0 && strings.HasPrefix(v, "/etc/throng/") {
			v = root[0] + v
		}
		env = append(env, e.Name+"="+v)
	}
	args := append(slices.Clone(c.Command), c.Args...)
	if len(args) == 0 || args[0] != "serve" {
		t.Fatalf("container args %q: want serve first", args)
	}
	cfg, err := config.Load("", env, args[1:])
	if err != nil {
		t.Fatalf("pod %d: the config loader refuses the StatefulSet's settings: %v\nenv: %q", i, err, env)
	}
	return node{args: args, env: env, cfg: cfg}
}

// checkStatefulSet checks what the cluster code and the probes need.
func checkStatefulSet(t *testing.T, o *objects, ns, secret string, replicas int, root ...string) {
	t.Helper()
	if len(o.statefulSets) != 1 {
		t.Fatalf("%d StatefulSets", len(o.statefulSets))
	}
	sts := o.statefulSets[0]
	if sts.Spec.Replicas == nil || int(*sts.Spec.Replicas) != replicas {
		t.Errorf("replicas %v, want %d", sts.Spec.Replicas, replicas)
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Errorf("podManagementPolicy %q", sts.Spec.PodManagementPolicy)
	}
	var headless *corev1.Service
	for _, s := range o.services {
		if s.Name == sts.Spec.ServiceName {
			headless = s
		}
	}
	if headless == nil || headless.Spec.ClusterIP != corev1.ClusterIPNone || !headless.Spec.PublishNotReadyAddresses {
		t.Fatalf("serviceName %q: no headless service publishing not-ready addresses", sts.Spec.ServiceName)
	}
	c := sts.Spec.Template.Spec.Containers[0]
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	var wantPeers []string
	for i := range replicas {
		wantPeers = append(wantPeers, fmt.Sprintf("%s-%d.%s.%s.svc:%d", sts.Name, i, headless.Name, ns, ports["cluster"]))
	}
	names := map[string]bool{}
	for i := range replicas {
		n := podNode(t, sts, ns, i, root...)
		cl := n.cfg.Cluster
		if want := fmt.Sprintf("%s-%d", sts.Name, i); cl.NodeName != want {
			t.Errorf("pod %d: node name %q, want %q", i, cl.NodeName, want)
		}
		names[cl.NodeName] = true
		if !slices.Equal([]string(cl.Peers), wantPeers) {
			t.Errorf("pod %d: peers %q, want %q", i, cl.Peers, wantPeers)
		}
		if cl.Listen != fmt.Sprintf(":%d", ports["cluster"]) {
			t.Errorf("pod %d: cluster listen %q, cluster port %d", i, cl.Listen, ports["cluster"])
		}
		if cl.Secret != "secret:"+secret+"/cluster-secret" || n.cfg.AdminPassword != "secret:"+secret+"/admin-password" {
			t.Errorf("pod %d: cluster secret %q, admin password %q: want them from Secret %s", i, cl.Secret, n.cfg.AdminPassword, secret)
		}
		if cl.Replicas != 3 {
			t.Errorf("pod %d: replicas %d", i, cl.Replicas)
		}
		// The data dir is the PVC's mount.
		var mounted bool
		for _, m := range c.VolumeMounts {
			if m.MountPath == n.cfg.DataDir && m.Name == "data" {
				mounted = true
			}
		}
		if !mounted {
			t.Errorf("data dir %q is not the mount of volume data", n.cfg.DataDir)
		}
		// Probes on the admin port, which is the admin listener.
		if want := fmt.Sprintf(":%d", ports["admin"]); n.cfg.Listeners.Admin != want {
			t.Errorf("admin listener %q, admin port %d", n.cfg.Listeners.Admin, ports["admin"])
		}
	}
	if len(names) != replicas {
		t.Errorf("node names %v not unique", names)
	}
	for _, p := range []struct {
		what string
		pr   *corev1.Probe
		path string
	}{{"readiness", c.ReadinessProbe, "/readyz"}, {"liveness", c.LivenessProbe, "/healthz"}, {"startup", c.StartupProbe, "/healthz"}} {
		if p.pr == nil || p.pr.HTTPGet == nil || p.pr.HTTPGet.Path != p.path || p.pr.HTTPGet.Port.String() != "admin" {
			t.Errorf("%s probe %+v: want GET %s on port admin", p.what, p.pr, p.path)
		}
	}
	if len(sts.Spec.VolumeClaimTemplates) != 1 || sts.Spec.VolumeClaimTemplates[0].Name != "data" {
		t.Fatalf("volumeClaimTemplates %+v: want one named data", sts.Spec.VolumeClaimTemplates)
	}
	if _, ok := c.Resources.Requests[corev1.ResourceCPU]; !ok {
		t.Errorf("no CPU request")
	}
	if _, ok := c.Resources.Requests[corev1.ResourceMemory]; !ok {
		t.Errorf("no memory request")
	}
	if sc := sts.Spec.Template.Spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Errorf("pods may run as root")
	}
	if len(o.pdbs) != 1 || o.pdbs[0].Spec.MaxUnavailable == nil || o.pdbs[0].Spec.MaxUnavailable.IntValue() != 1 {
		t.Errorf("PodDisruptionBudgets %+v: want one with maxUnavailable 1", o.pdbs)
	}
	// The client service exposes AMQP, MQTT, HTTP and admin by name.
	var client *corev1.Service
	for _, s := range o.services {
		if s.Spec.ClusterIP != corev1.ClusterIPNone {
			client = s
		}
	}
	if client == nil {
		t.Fatal("no client service")
	}
	got := map[string]int32{}
	for _, p := range client.Spec.Ports {
		got[p.Name] = p.Port
		if p.TargetPort.String() != p.Name || ports[p.Name] == 0 {
			t.Errorf("client service port %s targets %s, container port %d", p.Name, p.TargetPort.String(), ports[p.Name])
		}
	}
	for name, port := range map[string]int32{"amqp": 5672, "mqtt": 1883, "http": 8080, "admin": 8161} {
		if got[name] != port {
			t.Errorf("client service %s port %d, want %d", name, got[name], port)
		}
	}
}

// TestPlainManifests decodes deploy/kubernetes/ (every file the
// kustomization lists) and checks the StatefulSet.
func TestPlainManifests(t *testing.T) {
	dir := "kubernetes"
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		APIVersion string   `json:"apiVersion"`
		Kind       string   `json:"kind"`
		Resources  []string `json:"resources"`
	}
	if err := yaml.UnmarshalStrict(b, &k); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	var listed []string
	for _, f := range files {
		if filepath.Base(f) != "kustomization.yaml" {
			listed = append(listed, filepath.Base(f))
		}
	}
	sort.Strings(k.Resources)
	if !slices.Equal(k.Resources, listed) {
		t.Errorf("kustomization resources %q, files %q", k.Resources, listed)
	}
	o := &objects{}
	for _, f := range k.Resources {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		o.decode(t, f, string(b))
	}
	if len(o.secrets) != 1 {
		t.Fatalf("%d secrets", len(o.secrets))
	}
	for _, key := range []string{"admin-password", "cluster-secret"} {
		if o.secrets[0].StringData[key] == "" {
			t.Errorf("secret has no %s", key)
		}
	}
	checkStatefulSet(t, o, "iot", o.secrets[0].Name, 3)
}

// TestChartDefault renders the chart with its defaults.
func TestChartDefault(t *testing.T) {
	o := render(t)
	if len(o.secrets) != 1 || len(o.secrets[0].Data["admin-password"]) < 16 || len(o.secrets[0].Data["cluster-secret"]) < 32 {
		t.Fatalf("secrets %+v: want one with generated admin-password and cluster-secret", o.secrets)
	}
	if len(o.jobs) != 0 {
		t.Errorf("%d jobs without plans", len(o.jobs))
	}
	checkStatefulSet(t, o, "iot", o.secrets[0].Name, 3)
	sts := o.statefulSets[0]
	n := podNode(t, sts, "iot", 0)
	if n.cfg.Listeners.AMQPS != "" || n.cfg.Listeners.MQTTS != "" || n.cfg.Listeners.HTTPS != "" {
		t.Errorf("TLS listeners on without TLS: %+v", n.cfg.Listeners)
	}
	if n.cfg.Cluster.TLS.Enabled() {
		t.Errorf("route TLS on without cluster.tls.secretName: %+v", n.cfg.Cluster.TLS)
	}
	if q := sts.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests[corev1.ResourceStorage]; q.String() != "10Gi" {
		t.Errorf("storage %s", q.String())
	}
}

// TestChartTLS renders ci/tls-values.yaml: TLS listeners and route mTLS
// with files from the mounted Secrets, an existing credentials Secret,
// plans, a storage class.
func TestChartTLS(t *testing.T) {
	o := render(t, filepath.Join("helm", "throng", "ci", "tls-values.yaml"))
	if len(o.secrets) != 0 {
		t.Errorf("%d secrets rendered beside existingSecret", len(o.secrets))
	}
	root := t.TempDir()
	writeTLS(t, filepath.Join(root, "/etc/throng/tls"), filepath.Join(root, "/etc/throng/client-ca"))
	writeTLS(t, filepath.Join(root, "/etc/throng/cluster-tls"), filepath.Join(root, "/etc/throng/cluster-tls"))
	checkStatefulSet(t, o, "iot", "throng-credentials", 3, root)
	sts := o.statefulSets[0]
	n := podNode(t, sts, "iot", 1, root)
	l := n.cfg.Listeners
	if l.AMQPS != ":5671" || l.MQTTS != ":8883" || l.HTTPS != ":8443" {
		t.Errorf("TLS listeners %+v", l)
	}
	mounts := map[string]string{}
	for _, m := range sts.Spec.Template.Spec.Containers[0].VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	secrets := map[string]string{}
	for _, v := range sts.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			secrets[v.Name] = v.Secret.SecretName
		}
	}
	for _, f := range []struct{ path, volume, secret string }{
		{n.cfg.TLS.Cert, "tls", "throng-tls"},
		{n.cfg.TLS.Key, "tls", "throng-tls"},
		{n.cfg.TLS.ClientCA, "client-ca", "throng-client-ca"},
		{n.cfg.Cluster.TLS.Cert, "cluster-tls", "throng-cluster-tls"},
		{n.cfg.Cluster.TLS.Key, "cluster-tls", "throng-cluster-tls"},
		{n.cfg.Cluster.TLS.CA, "cluster-tls", "throng-cluster-tls"},
	} {
		if filepath.Dir(strings.TrimPrefix(f.path, root)) != mounts[f.volume] || secrets[f.volume] != f.secret {
			t.Errorf("%s: mount of %s is %q (secret %q), want secret %s", f.path, f.volume, mounts[f.volume], secrets[f.volume], f.secret)
		}
	}
	if n.cfg.TLS.MinVersion != "1.2" || n.cfg.Log.Level != "debug" {
		t.Errorf("tls.minVersion %q, log level %q", n.cfg.TLS.MinVersion, n.cfg.Log.Level)
	}
	pvc := sts.Spec.VolumeClaimTemplates[0].Spec
	if pvc.StorageClassName == nil || *pvc.StorageClassName != "fast-ssd" || pvc.Resources.Requests.Storage().String() != "50Gi" {
		t.Errorf("PVC spec %+v", pvc)
	}
	if len(o.jobs) != 1 {
		t.Fatalf("%d jobs, want the plans job", len(o.jobs))
	}
	var got []string
	for _, c := range o.jobs[0].Spec.Template.Spec.Containers {
		got = append(got, strings.Join(c.Args, " "))
	}
	want := []string{"plan create small --max-connections 100 --max-messages-in-per-second 50", "plan create large --max-connections 10000"}
	if !slices.Equal(got, want) {
		t.Errorf("plan job containers %q, want %q", got, want)
	}
}

// writeTLS writes what the TLS Secrets would mount: a self-signed server
// certificate and key (tls.crt, tls.key) in dir and it as client CA
// (ca.crt) in caDir.
func writeTLS(t *testing.T, dir, caDir string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "throng"},
		DNSNames:              []string{"throng"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	for _, f := range []struct {
		path string
		b    []byte
	}{
		{filepath.Join(dir, "tls.crt"), cert},
		{filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})},
		{filepath.Join(caDir, "ca.crt"), cert},
	} {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.path, f.b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
